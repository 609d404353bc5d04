//! Our embeddings match Python sentence-transformers' (the shared reference files) for every
//! text, computed in padded batches through the real binaries with two encoders.

use chatspace_tests::{bin, check_output, model, read_json, run_ok, shared};

fn matches_reference(model_name: &str, batch_size: &str) {
    let out = tempfile::tempdir().unwrap();
    let reference = shared().join(format!("reference/{model_name}.parquet"));
    run_ok(
        bin("chatspace")
            .arg("embed-hf")
            .arg("--dataset")
            .arg(&reference)
            .arg("--model")
            .arg(model(model_name))
            .args([
                "--encoders",
                "2",
                "--batch-size",
                batch_size,
                "--no-progress",
            ])
            .arg("--output-root")
            .arg(out.path()),
    );
    let shard_dir = out
        .path()
        .join(format!("embeddings/{model_name}/{model_name}/train"));
    let manifest = read_json(&out.path().join(format!(
        "indexes/{model_name}/{model_name}/manifest-train.json"
    )));
    assert_eq!(manifest["status"], "complete");
    let got = check_output(&[
        "cosine",
        shard_dir.to_str().unwrap(),
        reference.to_str().unwrap(),
    ]);
    assert_eq!(got["rows"], got["reference_rows"], "{got}");
    assert_eq!(got["distinct_ids"], got["reference_rows"], "{got}");
    let min = got["min_cosine"].as_f64().unwrap();
    assert!(
        min >= 0.99999,
        "{model_name}: min cosine {min} (row {})",
        got["worst_id"]
    );
}

#[test]
fn minilm_matches_sentence_transformers() {
    matches_reference("all-MiniLM-L6-v2", "7");
}

#[test]
fn last_token_decoder_with_left_padding_matches_sentence_transformers() {
    matches_reference("tiny-qwen3-lasttoken", "7");
}
