//! Bad input gets one clear line naming the thing at fault and a non-zero exit, never a panic.

use std::path::Path;

use chatspace_tests::{Ran, bin, model, run, shared};

fn embed(args: &[&str], out: &Path) -> Ran {
    run(bin("chatspace")
        .arg("embed-hf")
        .args(args)
        .arg("--output-root")
        .arg(out)
        .arg("--no-progress"))
}

/// Exactly one line on stderr, starting `chatspace:` and containing `needle`, exit `code`.
fn assert_one_line(ran: &Ran, code: i32, needle: &str) {
    assert_eq!(ran.code, Some(code), "stderr: {}", ran.stderr);
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line, got:\n{}", ran.stderr);
    assert!(lines[0].starts_with("chatspace: "), "{}", lines[0]);
    assert!(lines[0].contains(needle), "{:?} lacks {needle:?}", lines[0]);
    assert!(!ran.stderr.contains("panicked"));
}

fn debian() -> String {
    shared()
        .join("data/debian-chat.parquet")
        .display()
        .to_string()
}

fn minilm() -> String {
    model("all-MiniLM-L6-v2").display().to_string()
}

#[test]
fn missing_dataset_file() {
    let out = tempfile::tempdir().unwrap();
    let ran = embed(
        &[
            "--dataset",
            "/nonexistent/chats.parquet",
            "--model",
            &minilm(),
        ],
        out.path(),
    );
    assert_one_line(&ran, 3, "dataset /nonexistent/chats.parquet does not exist");
}

#[test]
fn missing_text_field_lists_the_columns() {
    let out = tempfile::tempdir().unwrap();
    let ran = embed(
        &[
            "--dataset",
            &debian(),
            "--text-field",
            "conversation",
            "--model",
            &minilm(),
        ],
        out.path(),
    );
    assert_one_line(
        &ran,
        3,
        "text field `conversation` is not a column of the dataset; columns: id, messages",
    );
}

#[test]
fn model_folder_without_onnx_or_tokenizer() {
    let out = tempfile::tempdir().unwrap();
    let m = tempfile::tempdir().unwrap();
    let folder = m.path().display().to_string();
    let args = |f: &str| {
        vec![
            "--dataset".to_string(),
            debian(),
            "--extract".into(),
            "first-assistant".into(),
            "--text-field".into(),
            "messages".into(),
            "--model".into(),
            f.to_string(),
        ]
    };
    let a = args(&folder);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let ran = embed(&a, out.path());
    assert_one_line(
        &ran,
        3,
        &format!("model folder {folder} has no onnx/model.onnx"),
    );

    std::fs::create_dir(m.path().join("onnx")).unwrap();
    std::fs::copy(
        model("null-384").join("onnx/model.onnx"),
        m.path().join("onnx/model.onnx"),
    )
    .unwrap();
    let ran = embed(&a, out.path());
    assert_one_line(
        &ran,
        3,
        &format!("model folder {folder} has no tokenizer.json"),
    );
}

#[test]
fn no_onnx_runtime_library() {
    let out = tempfile::tempdir().unwrap();
    let ran = embed(
        &[
            "--dataset",
            &debian(),
            "--text-field",
            "messages",
            "--extract-first-assistant",
            "--model",
            &model("null-384").display().to_string(),
            "--ort-lib",
            "/nonexistent/libonnxruntime.so",
            "--max-rows",
            "10",
        ],
        out.path(),
    );
    assert_one_line(&ran, 4, "ONNX Runtime");
    assert!(
        ran.stderr.contains("/nonexistent/libonnxruntime.so"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("scripts/setup.sh"), "{}", ran.stderr);
}

#[test]
fn zero_rows_per_shard() {
    let out = tempfile::tempdir().unwrap();
    let ran = embed(
        &[
            "--dataset",
            &debian(),
            "--rows-per-shard",
            "0",
            "--model",
            &minilm(),
        ],
        out.path(),
    );
    // A usage error: exit 2.
    assert_one_line(&ran, 2, "--rows-per-shard");
    assert!(ran.stderr.contains("at least 1"), "{}", ran.stderr);
}

#[test]
fn output_root_that_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a folder must go: fails even for root.
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let root = blocker.join("out");
    let ran = embed(
        &[
            "--dataset",
            &debian(),
            "--text-field",
            "messages",
            "--extract-first-assistant",
            "--model",
            &minilm(),
        ],
        &root,
    );
    assert_one_line(
        &ran,
        3,
        &format!("output root {} cannot be written", root.display()),
    );
}
