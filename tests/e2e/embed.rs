//! `chatspace embed-hf` end to end on real chat data: shards, row order, manifest, readers.

use std::path::Path;

use chatspace_tests::{bin, check_output, model, read_json, repo_root, run_ok, shared};

#[test]
fn debian_chat_first_assistant_two_encoders() {
    let out = tempfile::tempdir().unwrap();
    let ran = run_ok(
        bin("chatspace")
            .arg("embed-hf")
            .arg("--dataset")
            .arg(shared().join("data/debian-chat.parquet"))
            .args(["--text-field", "messages", "--extract", "first-assistant"])
            .arg("--model")
            .arg(model("all-MiniLM-L6-v2"))
            .args([
                "--encoders",
                "2",
                "--max-rows",
                "5000",
                "--rows-per-shard",
                "1000",
            ])
            .args(["--no-progress", "--run-id", "e2e-run"])
            .arg("--output-root")
            .arg(out.path()),
    );
    assert!(ran.stderr.contains("embedded 5000 rows"), "{}", ran.stderr);

    let shard_dir = out
        .path()
        .join("embeddings/all-MiniLM-L6-v2/debian-chat/train");
    let index = out.path().join("indexes/all-MiniLM-L6-v2/debian-chat");
    let manifest = read_json(&index.join("manifest-train.json"));
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["rows_total"], 5000);
    assert_eq!(manifest["rows_skipped"], 0);
    assert_eq!(manifest["embedding_dim"], 384);
    assert_eq!(manifest["run_id"], "e2e-run");
    assert_eq!(manifest["shards"].as_array().unwrap().len(), 5);
    let min_norm = manifest["min_norm"].as_f64().unwrap();
    let max_norm = manifest["max_norm"].as_f64().unwrap();
    assert!((min_norm - 1.0).abs() < 1e-3 && (max_norm - 1.0).abs() < 1e-3);

    let summary = read_json(&index.join("run-train.json"));
    assert_eq!(summary["rows_total"], 5000);
    assert_eq!(summary["num_shards"], 5);

    let got = check_output(&[
        "inspect",
        shard_dir.to_str().unwrap(),
        index.join("manifest-train.json").to_str().unwrap(),
    ]);
    assert_eq!(got["files"], 5, "{got}");
    assert_eq!(got["tmp_files"], 0);
    assert_eq!(got["rows"], 5000);
    assert_eq!(got["row_index_sorted"], true);
    assert_eq!(got["row_index_unique"], true);
    assert_eq!(got["row_index_first"], 0);
    assert_eq!(got["row_index_last"], 4999);
    for shard in got["shards"].as_array().unwrap() {
        assert_eq!(shard["rows"], 1000, "{shard}");
        for check in [
            "sha256_ok",
            "bytes_ok",
            "rows_ok",
            "range_ok",
            "manifest_path_matches",
        ] {
            assert_eq!(shard[check], true, "{check} in {shard}");
        }
    }
    let dk = &got["duckdb"];
    assert_eq!(dk["rows"], 5000);
    assert_eq!(dk["distinct_row_index"], 5000);
    assert_eq!(dk["min_row_index"], 0);
    assert_eq!(dk["max_row_index"], 4999);
    assert_eq!(dk["min_dim"], 384);
    assert_eq!(dk["max_dim"], 384);
    let schema = &got["schema"];
    assert_eq!(schema["id"], "string");
    assert!(schema["messages"].as_str().unwrap().starts_with("list<"));
    assert_eq!(schema["text"], "string");
    assert_eq!(
        schema["embedding"],
        "fixed_size_list<item: float not null>[384]"
    );
    assert_eq!(schema["row_index"], "int64");
    for col in ["model", "run_id", "created_at"] {
        assert_eq!(schema[col], "string", "{col}");
    }
}

#[test]
fn example_dataset_skips_rows_without_an_assistant_turn() {
    let out = tempfile::tempdir().unwrap();
    let example = repo_root().join("examples/smoltalk-sample.jsonl");
    run_ok(
        bin("chatspace")
            .arg("embed-hf")
            .arg("--dataset")
            .arg(&example)
            .args(["--text-field", "messages", "--extract-first-assistant"])
            .arg("--model")
            .arg(model("null-384"))
            .args(["--rows-per-shard", "16", "--no-progress"])
            .arg("--output-root")
            .arg(out.path()),
    );
    let index = out.path().join("indexes/null-384/smoltalk-sample");
    let manifest = read_json(&index.join("manifest-train.json"));
    let lines = std::fs::read_to_string(&example).unwrap().lines().count() as u64;
    assert_eq!(manifest["rows_skipped"], 1);
    assert_eq!(manifest["skipped_reasons"]["no assistant turn"], 1);
    assert_eq!(manifest["rows_total"].as_u64().unwrap(), lines - 1);
    let got = check_output(&[
        "inspect",
        out.path()
            .join("embeddings/null-384/smoltalk-sample/train")
            .to_str()
            .unwrap(),
        index.join("manifest-train.json").to_str().unwrap(),
    ]);
    assert_eq!(got["rows"].as_u64().unwrap(), lines - 1);
    assert_eq!(got["row_index_sorted"], true);
    // The extracted texts are stripped assistant turns, not the conversation.
    for t in got["texts_sample"].as_array().unwrap() {
        let t = t.as_str().unwrap();
        assert_eq!(t, t.trim());
        assert!(!t.is_empty());
    }
}

#[test]
fn a_second_run_refuses_to_mix_shards_unless_overwrite() {
    let out = tempfile::tempdir().unwrap();
    let example = repo_root().join("examples/smoltalk-sample.jsonl");
    let go = |extra: &[&str]| {
        let mut cmd = bin("chatspace");
        cmd.arg("embed-hf")
            .arg("--dataset")
            .arg(&example)
            .args(["--text-field", "messages", "--extract-first-assistant"])
            .arg("--model")
            .arg(model("null-384"))
            .args(["--no-progress"])
            .args(extra)
            .arg("--output-root")
            .arg(out.path());
        chatspace_tests::run(&mut cmd)
    };
    assert_eq!(go(&[]).code, Some(0));
    let again = go(&[]);
    assert_eq!(again.code, Some(3), "{}", again.stderr);
    assert!(again.stderr.contains("--overwrite"), "{}", again.stderr);
    assert_eq!(go(&["--overwrite"]).code, Some(0));
    assert!(
        Path::new(
            &out.path()
                .join("embeddings/null-384/smoltalk-sample/train/shard-00000.parquet")
        )
        .is_file()
    );
}
