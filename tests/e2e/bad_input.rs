//! Bad input gets one clear line naming the thing at fault and a non-zero exit, never a panic;
//! and nothing already written is lost. Fixtures are made in temporary folders at test time.

use std::path::{Path, PathBuf};
use std::process::Command;

use chatspace_tests::{Ran, bin, bin_path, check_output, model, python, read_json, run, shared};

fn embed(args: &[&str], out: &Path) -> Ran {
    run(bin("chatspace")
        .arg("embed-hf")
        .args(args)
        .arg("--output-root")
        .arg(out)
        .arg("--no-progress"))
}

/// Like [`embed`], with log output limited to errors: null-384 declares an ONNX IR version newer
/// than the runtime's, which is worth a warning line on every load, but not in these tests.
fn embed_quiet(args: &[&str], out: &Path) -> Ran {
    run(bin("chatspace")
        .env("CHATSPACE_LOG", "error")
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

fn null384() -> String {
    model("null-384").display().to_string()
}

/// Writes `body` to `name` in `dir`; returns the path as a string.
fn write(dir: &Path, name: &str, body: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

/// Bytes that look like nothing in particular (a fixed xorshift sequence).
fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The output folders of a run of `model` on `dataset` (split `train`): shards, indexes.
fn output_dirs(out: &Path, model: &str, dataset: &str) -> (PathBuf, PathBuf) {
    (
        out.join("embeddings")
            .join(model)
            .join(dataset)
            .join("train"),
        out.join("indexes").join(model).join(dataset),
    )
}

/// Every file name in `dir`, sorted (none when it does not exist).
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
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

// 1. Parquet files that are not Parquet, truncated, or corrupt inside.

#[test]
fn garbage_with_a_parquet_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "chats.parquet", &noise(5000));
    let ran = embed(
        &[
            "--dataset",
            &file,
            "--text-field",
            "messages",
            "--model",
            &minilm(),
        ],
        &dir.path().join("out"),
    );
    assert_one_line(&ran, 3, &format!("cannot read Parquet file {file}: "));
    assert!(ran.stderr.contains("Corrupt footer"), "{}", ran.stderr);
}

#[test]
fn parquet_file_truncated_mid_file() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(debian()).unwrap();
    let file = write(dir.path(), "half.parquet", &whole[..whole.len() / 2]);
    let ran = embed(
        &[
            "--dataset",
            &file,
            "--text-field",
            "messages",
            "--model",
            &minilm(),
        ],
        &dir.path().join("out"),
    );
    assert_one_line(&ran, 3, &format!("cannot read Parquet file {file}: "));
}

/// The footer is intact but data pages are not: found only while reading, after the encoders
/// started; the run stops with the file named and leaves only complete shards.
#[test]
fn parquet_file_with_corrupt_data_pages() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(debian()).unwrap();
    let middle = bytes.len() / 4;
    bytes[middle..middle + 200_000].copy_from_slice(&noise(200_000));
    let file = write(dir.path(), "debian-chat.parquet", &bytes);
    let out = dir.path().join("out");
    let ran = embed_quiet(
        &[
            "--dataset",
            &file,
            "--text-field",
            "messages",
            "--extract",
            "first-assistant",
            "--model",
            &null384(),
        ],
        &out,
    );
    assert_one_line(&ran, 3, &format!("cannot read Parquet file {file}: "));
    // Shards completed before the bad page stay, listed in the manifest; nothing else is left.
    let (shards, index) = output_dirs(&out, "null-384", "debian-chat");
    let manifest = read_json(&index.join("manifest-train.json"));
    assert_eq!(manifest["status"], "failed");
    let listed: Vec<String> = manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["path"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names_in(&shards), listed);
}

// 2. JSON Lines: the line at fault is named.

#[test]
fn jsonl_with_a_malformed_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "chats.jsonl",
        b"{\"text\": \"one\"}\n{\"text\": \"two\"}\n{\"text\": \"three\"\n{\"text\": \"four\"}\n",
    );
    let ran = embed(&["--dataset", &file, "--model", &minilm()], dir.path());
    assert_one_line(
        &ran,
        3,
        &format!(
            "dataset file {file} line 3 column 16: not valid JSON: EOF while parsing an object"
        ),
    );
}

#[test]
fn jsonl_with_bytes_that_are_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "chats.jsonl",
        b"{\"text\": \"one\"}\n\n{\"text\": \"caf\xe9\"}\n",
    );
    let ran = embed(&["--dataset", &file, "--model", &minilm()], dir.path());
    assert_one_line(
        &ran,
        3,
        &format!("dataset file {file} line 3: not valid UTF-8 (at byte 14 of the line)"),
    );
}

// 3. A text field of the wrong type: the type found is named.

#[test]
fn text_field_of_the_wrong_type() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "number.jsonl",
            b"{\"text\": 1}\n{\"text\": 2}\n",
            "text field `text` is of type Int64, not a string",
        ),
        (
            "nulls.jsonl",
            b"{\"text\": null}\n{\"text\": null}\n",
            "text field `text` holds only nulls (type Null), not strings",
        ),
        (
            "list.jsonl",
            b"{\"text\": [\"a\", \"b\"]}\n",
            "text field `text` is of type List(Utf8), not a string",
        ),
    ];
    for (name, body, want) in cases {
        let file = write(dir.path(), name, body);
        let ran = embed(&["--dataset", &file, "--model", &minilm()], dir.path());
        assert_one_line(&ran, 3, want);
    }
}

// 4. `messages` that are not lists of {role, content} turns.

#[test]
fn messages_that_are_not_conversations() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 2] = [
        (
            "strings.jsonl",
            b"{\"messages\": [\"hi\", \"hello\"]}\n",
            "text field `messages` is a list of Utf8, not of {role, content} turns, so --extract first-assistant cannot use it",
        ),
        (
            "speakers.jsonl",
            b"{\"messages\": [{\"speaker\": \"user\", \"content\": \"hi\"}]}\n",
            "(its turns have no `role` or `from`), so --extract first-assistant cannot use it",
        ),
    ];
    for (name, body, want) in cases {
        let file = write(dir.path(), name, body);
        let ran = embed(
            &[
                "--dataset",
                &file,
                "--text-field",
                "messages",
                "--extract",
                "first-assistant",
                "--model",
                &minilm(),
            ],
            dir.path(),
        );
        assert_one_line(&ran, 3, want);
    }
}

// 5. Null, empty and blank texts are skipped and counted, never sent to an encoder.

#[test]
fn null_empty_and_blank_texts_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "texts.jsonl",
        "{\"id\": 0, \"text\": \"hello\"}\n\
         {\"id\": 1, \"text\": \"\"}\n\
         {\"id\": 2, \"text\": \" \\t\\n \"}\n\
         {\"id\": 3, \"text\": null}\n\
         {\"id\": 4, \"text\": \"\u{3000}\\u001f\"}\n\
         {\"id\": 5}\n\
         {\"id\": 6, \"text\": \" world \"}\n"
            .as_bytes(),
    );
    let out = dir.path().join("out");
    let ran = embed_quiet(&["--dataset", &file, "--model", &null384()], &out);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("embedded 2 rows (5 skipped"),
        "{}",
        ran.stderr
    );
    let (shards, index) = output_dirs(&out, "null-384", "texts");
    let manifest = read_json(&index.join("manifest-train.json"));
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["rows_total"], 2);
    assert_eq!(manifest["rows_skipped"], 5);
    assert_eq!(
        manifest["skipped_reasons"],
        serde_json::json!({"empty text": 3, "null text": 2})
    );
    let got = check_output(&[
        "inspect",
        shards.to_str().unwrap(),
        index.join("manifest-train.json").to_str().unwrap(),
    ]);
    assert_eq!(got["rows"], 2, "{got}");
    assert_eq!(got["texts_sample"], serde_json::json!(["hello", " world "]));
    assert_eq!(got["row_index_first"], 0);
    assert_eq!(got["row_index_last"], 6);
}

// 6. A 1 MB text is embedded, cut to the model's token limit and counted as truncated.

#[test]
fn a_one_megabyte_text_is_embedded_and_counted_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let words = [
        "debian", "package", "kernel", "network", "the", "a", "install",
    ];
    let mut big = String::new();
    let mut i = 0usize;
    while big.len() < 1_000_000 {
        big.push_str(words[(i * 7 + i / 3) % words.len()]);
        big.push(' ');
        i += 1;
    }
    big.truncate(1_000_000);
    let rows = [
        serde_json::json!({"id": 0, "text": "a short one"}),
        serde_json::json!({"id": 1, "text": big}),
        serde_json::json!({"id": 2, "text": "another short one"}),
    ];
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let file = write(dir.path(), "big.jsonl", body.as_bytes());
    let out = dir.path().join("out");
    let ran = embed(&["--dataset", &file, "--model", &minilm()], &out);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("embedded 3 rows (0 skipped, 0 failed, 1 truncated)"),
        "{}",
        ran.stderr
    );
    let (shards, index) = output_dirs(&out, "all-MiniLM-L6-v2", "big");
    let manifest = read_json(&index.join("manifest-train.json"));
    assert_eq!(manifest["rows_total"], 3);
    assert_eq!(manifest["rows_truncated"], 1);
    let check = python()
        .arg("-c")
        .arg(
            "import sys, numpy as np, pyarrow.parquet as pq\n\
             t = pq.read_table(sys.argv[1])\n\
             e = np.stack(t.column('embedding').to_numpy(zero_copy_only=False))\n\
             print([len(x) for x in t.column('text').to_pylist()], \
                   bool(np.isfinite(e).all()), [round(float(n), 3) for n in np.linalg.norm(e, axis=1)])",
        )
        .arg(shards.join("shard-00000.parquet"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "[11, 1000000, 17] True [1.0, 1.0, 1.0]"
    );
}

// 7. A corrupt ONNX file.

/// A copy of model folder `src` in `dst`: small files copied, large ones and sub-folders
/// symlinked, and `onnx/model.onnx` replaced by `onnx`.
fn model_with_onnx(src: &Path, dst: &Path, onnx: &[u8]) {
    std::fs::create_dir_all(dst.join("onnx")).unwrap();
    for entry in std::fs::read_dir(src).unwrap().flatten() {
        let (from, name) = (entry.path(), entry.file_name());
        if name == "onnx" {
            continue;
        }
        let small = from.is_file() && entry.metadata().unwrap().len() < 64 * 1024;
        if small {
            std::fs::copy(&from, dst.join(&name)).unwrap();
        } else {
            std::os::unix::fs::symlink(&from, dst.join(&name)).unwrap();
        }
    }
    std::fs::write(dst.join("onnx/model.onnx"), onnx).unwrap();
}

#[test]
fn corrupt_onnx_file() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().canonicalize().unwrap().join("broken-model");
    model_with_onnx(&model("all-MiniLM-L6-v2"), &folder, &noise(100_000));
    let ran = embed(
        &[
            "--dataset",
            &debian(),
            "--text-field",
            "messages",
            "--extract",
            "first-assistant",
            "--model",
            folder.to_str().unwrap(),
            "--max-rows",
            "10",
        ],
        &dir.path().join("out"),
    );
    assert_one_line(
        &ran,
        3,
        &format!(
            "could not load ONNX model {}: ",
            folder.join("onnx/model.onnx").display()
        ),
    );
}

// 8. An ONNX Runtime library that is too old, or not ONNX Runtime, or not a library.

/// A shared object exporting `OrtGetApiBase` like ONNX Runtime's, reporting `version`, whose
/// `GetApi` returns NULL (built with the C compiler at test time).
fn fake_onnxruntime(dir: &Path, version: &str) -> PathBuf {
    let src = dir.join("fake_ort.c");
    std::fs::write(
        &src,
        r#"typedef struct {
    const void *(*GetApi)(unsigned version);
    const char *(*GetVersionString)(void);
} OrtApiBase;
static const void *get_api(unsigned version) { (void)version; return 0; }
static const char *get_version(void) { return FAKE_VERSION; }
static const OrtApiBase base = { get_api, get_version };
const OrtApiBase *OrtGetApiBase(void) { return &base; }
"#,
    )
    .unwrap();
    let lib = dir.join(format!("libonnxruntime-{version}.so"));
    let out = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(format!("-DFAKE_VERSION=\"{version}\""))
        .arg(&src)
        .output()
        .expect("a C compiler (`cc`) is needed to build the fake ONNX Runtime");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

fn embed_with_ort(lib: &Path, out: &Path) -> Ran {
    embed(
        &[
            "--dataset",
            &debian(),
            "--text-field",
            "messages",
            "--extract",
            "first-assistant",
            "--model",
            &null384(),
            "--max-rows",
            "10",
            "--ort-lib",
            lib.to_str().unwrap(),
        ],
        out,
    )
}

#[test]
fn onnx_runtime_of_the_wrong_version() {
    let dir = tempfile::tempdir().unwrap();
    let old = fake_onnxruntime(dir.path(), "1.16.0");
    let ran = embed_with_ort(&old, &dir.path().join("out"));
    assert_one_line(
        &ran,
        4,
        &format!(
            "ONNX Runtime at {} is version 1.16.0, but chatspace-encoder needs 1.17 or newer",
            old.display()
        ),
    );

    // New enough by its word, but without the C API the encoder asks for.
    let hollow = fake_onnxruntime(dir.path(), "1.31.0");
    let ran = embed_with_ort(&hollow, &dir.path().join("out"));
    assert_one_line(
        &ran,
        4,
        &format!(
            "could not load ONNX Runtime from {}: version 1.31.0 does not provide the C API version 17",
            hollow.display()
        ),
    );
}

#[test]
fn onnx_runtime_that_is_not_a_library() {
    let dir = tempfile::tempdir().unwrap();
    let lib = PathBuf::from(write(
        dir.path(),
        "libonnxruntime.so",
        b"not an ELF file at all\n",
    ));
    let ran = embed_with_ort(&lib, &dir.path().join("out"));
    assert_one_line(
        &ran,
        4,
        &format!("could not load ONNX Runtime from {}: ", lib.display()),
    );

    // A real shared library that is not ONNX Runtime.
    let src = dir.path().join("other.c");
    std::fs::write(&src, "int not_onnxruntime(void) { return 1; }\n").unwrap();
    let other = dir.path().join("libother.so");
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&other)
        .arg(&src)
        .status()
        .expect("cc runs");
    assert!(cc.success());
    let ran = embed_with_ort(&other, &dir.path().join("out"));
    assert_one_line(
        &ran,
        4,
        &format!(
            "could not load ONNX Runtime from {}: it does not export OrtGetApiBase, so it is not ONNX Runtime",
            other.display()
        ),
    );
}

// 9. The disk fills up (here: the file size limit) while a shard is written.

/// A dataset whose rows from 400 on hold long texts, so that with 200 rows per shard the third
/// shard is much larger than the first two.
fn growing_dataset(dir: &Path) -> String {
    let letters = noise(600 * 1500);
    let body: String = (0..600)
        .map(|i| {
            let text = if i < 400 {
                format!("row {i}")
            } else {
                letters[i * 1500..(i + 1) * 1500]
                    .iter()
                    .map(|b| (b'a' + b % 26) as char)
                    .collect()
            };
            format!("{}\n", serde_json::json!({"id": i, "text": text}))
        })
        .collect();
    write(dir, "growing.jsonl", body.as_bytes())
}

#[test]
fn file_size_limit_while_writing_a_shard() {
    let dir = tempfile::tempdir().unwrap();
    let file = growing_dataset(dir.path());
    let args = |out: &Path| -> Vec<String> {
        [
            "embed-hf",
            "--dataset",
            &file,
            "--model",
            &null384(),
            "--rows-per-shard",
            "200",
            "--max-rows",
            "600",
            "--run-id",
            "efbig",
            "--no-progress",
            "--output-root",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };

    // Without a limit, to learn the shard sizes.
    let reference = dir.path().join("reference");
    let ran = run(bin("chatspace")
        .env("CHATSPACE_LOG", "error")
        .args(args(&reference)));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let (_, ref_index) = output_dirs(&reference, "null-384", "growing");
    let sizes: Vec<u64> = read_json(&ref_index.join("manifest-train.json"))["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), 3);
    let fits = sizes[0].max(sizes[1]);
    assert!(sizes[2] > fits + 100_000, "{sizes:?}");
    // bash's `ulimit -f` counts 1024-byte blocks: halfway between the second and third sizes.
    let blocks = (fits + sizes[2]) / 2 / 1024;

    let out = dir.path().join("out");
    let ran = run(Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -f {blocks} && exec \"$0\" \"$@\""))
        .arg(bin_path("chatspace"))
        .args(args(&out))
        .env("CHATSPACE_LOG", "error")
        .env_remove("RUST_LOG"));
    let (shards, index) = output_dirs(&out, "null-384", "growing");
    // An exit code, not death by SIGXFSZ.
    assert_one_line(
        &ran,
        1,
        &format!(
            "cannot write shard file {}: File too large",
            shards.join("shard-00002.parquet.tmp").display()
        ),
    );
    // The two complete shards stay, and nothing else: no partial shard under any name.
    assert_eq!(
        names_in(&shards),
        ["shard-00000.parquet", "shard-00001.parquet"]
    );
    let manifest_path = index.join("manifest-train.json");
    let manifest = read_json(&manifest_path);
    assert_eq!(manifest["status"], "failed");
    assert_eq!(manifest["rows_total"], 400);
    let listed: Vec<&str> = manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [
            "embeddings/null-384/growing/train/shard-00000.parquet",
            "embeddings/null-384/growing/train/shard-00001.parquet"
        ]
    );
    let got = check_output(&[
        "inspect",
        shards.to_str().unwrap(),
        manifest_path.to_str().unwrap(),
    ]);
    assert_eq!(got["files"], 2, "{got}");
    assert_eq!(got["rows"], 400);
    for shard in got["shards"].as_array().unwrap() {
        assert_eq!(shard["sha256_ok"], true, "{got}");
        assert_eq!(shard["bytes_ok"], true, "{got}");
        assert_eq!(shard["rows_ok"], true, "{got}");
    }
}

/// `--device cuda` never becomes a silent CPU run: with no GPU visible the supervisor says so;
/// with one visible but the CPU build of ONNX Runtime, the encoder says the CUDA provider is
/// missing and how to get it (exit 4); either way no shard is written.
#[test]
fn cuda_without_a_gpu_or_its_runtime_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cpu_runtime = chatspace_tests::repo_root().join(".onnxruntime/libonnxruntime.so");
    let run_cuda = |visible: &str, device: &str| {
        run(bin("chatspace")
            .env("CUDA_VISIBLE_DEVICES", visible)
            .arg("embed-hf")
            .args(["--dataset", &debian(), "--text-field", "messages"])
            .args(["--extract", "first-assistant", "--model", &minilm()])
            .args(["--device", device, "--max-rows", "10", "--no-progress"])
            .arg("--ort-lib")
            .arg(&cpu_runtime)
            .arg("--output-root")
            .arg(dir.path()))
    };
    assert_one_line(
        &run_cuda("", "cuda"),
        3,
        "no NVIDIA GPU is visible (CUDA_VISIBLE_DEVICES=)",
    );
    assert_one_line(
        &run_cuda("0,1", "cuda:2"),
        3,
        "there is no GPU 2; 2 visible",
    );
    let ran = run_cuda("0", "cuda");
    assert_one_line(&ran, 4, "has no CUDA execution provider");
    assert!(
        ran.stderr.contains("scripts/setup.sh --gpu"),
        "{}",
        ran.stderr
    );
    let shards: Vec<_> = chatspace_tests::files_under(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(shards.is_empty(), "{shards:?}");
}
