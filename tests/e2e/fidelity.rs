//! Our embeddings match Python sentence-transformers' (the shared reference files) for every
//! text, computed in padded batches through the real binaries: every reference file at batch
//! sizes 1, 7 and 64, with one encoder and with two.

use chatspace_tests::{bin, check_output, model, read_json, run_ok, shared};

/// Batch sizes: one row (no padding), a size that leaves ragged last batches, and a large one.
const BATCH_SIZES: [&str; 3] = ["1", "7", "64"];
/// Encoder counts.
const ENCODERS: [&str; 2] = ["1", "2"];

/// Embeds `reference/<file>.parquet` with `model_name` and `extra` flags at every batch size
/// and encoder count, and checks every row against the reference.
fn matches_reference(file: &str, model_name: &str, extra: &[&str]) {
    let reference = shared().join(format!("reference/{file}.parquet"));
    for batch_size in BATCH_SIZES {
        for encoders in ENCODERS {
            let out = tempfile::tempdir().unwrap();
            run_ok(
                bin("chatspace")
                    .arg("embed-hf")
                    .arg("--dataset")
                    .arg(&reference)
                    .arg("--model")
                    .arg(model(model_name))
                    .args(["--encoders", encoders, "--batch-size", batch_size])
                    .args(extra)
                    .arg("--no-progress")
                    .arg("--output-root")
                    .arg(out.path()),
            );
            let shard_dir = out
                .path()
                .join(format!("embeddings/{model_name}/{file}/train"));
            let manifest = read_json(
                &out.path()
                    .join(format!("indexes/{model_name}/{file}/manifest-train.json")),
            );
            assert_eq!(manifest["status"], "complete");
            let got = check_output(&[
                "cosine",
                shard_dir.to_str().unwrap(),
                reference.to_str().unwrap(),
            ]);
            let at = format!("{file}, batch size {batch_size}, {encoders} encoder(s)");
            assert_eq!(got["rows"], got["reference_rows"], "{at}: {got}");
            assert_eq!(got["distinct_ids"], got["reference_rows"], "{at}: {got}");
            let min = got["min_cosine"].as_f64().unwrap();
            assert!(
                min >= 0.99999,
                "{at}: min cosine {min} (row {})",
                got["worst_id"]
            );
            // Both references are normalised: so must our vectors be.
            let norm = got["max_norm_diff"].as_f64().unwrap();
            assert!(norm < 1e-5, "{at}: norms differ by {norm}");
            assert_eq!(got["duckdb_rows"], got["rows"], "{at}: {got}");
        }
    }
}

#[test]
fn minilm_matches_sentence_transformers() {
    matches_reference("all-MiniLM-L6-v2", "all-MiniLM-L6-v2", &[]);
}

#[test]
fn last_token_decoder_with_left_padding_matches_sentence_transformers() {
    matches_reference("tiny-qwen3-lasttoken", "tiny-qwen3-lasttoken", &[]);
}

/// The `query` prompt of the model's `config_sentence_transformers.json`, prepended as
/// sentence-transformers' `prompt_name="query"` does.
#[test]
fn query_prompt_matches_sentence_transformers() {
    matches_reference(
        "tiny-qwen3-lasttoken-query-prompt",
        "tiny-qwen3-lasttoken",
        &["--prompt-name", "query"],
    );
}

/// Every turn of the shared chat data, as `{"text": ...}` JSON lines, written by pyarrow.
fn debian_turns_jsonl(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("turns.jsonl");
    let script = r#"
import json, sys
import pyarrow.parquet as pq
with open(sys.argv[2], "w") as f:
    for messages in pq.read_table(sys.argv[1], columns=["messages"]).column(0).to_pylist():
        for turn in messages:
            f.write(json.dumps({"text": turn["content"]}) + "\n")
"#;
    run_ok(
        chatspace_tests::python()
            .args(["-c", script])
            .arg(shared().join("data/debian-chat.parquet"))
            .arg(&path),
    );
    path
}

/// The encoder's fast WordPiece path gives exactly the ids Hugging Face `tokenizers` gives, on
/// all 127,808 turns of the shared chat data (texts it does not handle go to `tokenizers`
/// either way), for MiniLM's tokenizer at its own limit and at a short one (most texts cut).
#[test]
fn fast_tokenizer_path_gives_the_ids_tokenizers_gives() {
    let dir = tempfile::tempdir().unwrap();
    let turns = debian_turns_jsonl(dir.path());
    for max_len in ["256", "16"] {
        let tokenize = |exact: bool| {
            let input = std::fs::File::open(&turns).unwrap();
            let mut cmd = bin("chatspace-encoder");
            cmd.arg("tokenize")
                .arg("--model")
                .arg(model("all-MiniLM-L6-v2"))
                .args(["--max-seq-length", max_len])
                .stdin(input);
            if exact {
                cmd.arg("--exact");
            }
            run_ok(&mut cmd).stdout
        };
        let (fast, exact) = (tokenize(false), tokenize(true));
        assert_eq!(fast.lines().count(), 127_808);
        let cut = exact
            .lines()
            .filter(|l| l.ends_with("\"truncated\":true}"))
            .count();
        assert!(cut > 1000, "{max_len}: only {cut} texts cut");
        for (i, (f, e)) in fast.lines().zip(exact.lines()).enumerate() {
            assert_eq!(f, e, "max_seq_length {max_len}, turn {i}");
        }
    }
}

/// An fp16 export (float16 token states, like `model_fp16.onnx` on the Hub) is pooled in f32:
/// null-384 with its output cast to float16 gives null-384's vectors to fp16 precision.
#[test]
fn float16_outputs_are_pooled_like_float32_ones() {
    let dir = tempfile::tempdir().unwrap();
    let fp16 = dir.path().join("null-384-fp16");
    let script = r#"
import shutil, sys
import onnx
from onnx import TensorProto, helper
src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst)
m = onnx.load(f"{src}/onnx/model.onnx")
g = m.graph
out = g.output[0]
for n in g.node:
    n.output[:] = ["f32_states" if o == out.name else o for o in n.output]
g.node.append(helper.make_node("Cast", ["f32_states"], [out.name], to=TensorProto.FLOAT16))
out.type.tensor_type.elem_type = TensorProto.FLOAT16
onnx.save(m, f"{dst}/onnx/model_fp16.onnx")
"#;
    run_ok(
        chatspace_tests::python()
            .args(["-c", script])
            .arg(model("null-384"))
            .arg(&fp16),
    );
    let embed = |model_dir: &std::path::Path, onnx: &str, out: &std::path::Path| {
        run_ok(
            bin("chatspace")
                .env("CHATSPACE_LOG", "error")
                .arg("embed-hf")
                .arg("--dataset")
                .arg(shared().join("data/debian-chat.parquet"))
                .args(["--text-field", "messages", "--extract", "first-assistant"])
                .arg("--model")
                .arg(model_dir)
                .args(["--onnx-file", onnx, "--max-rows", "500", "--no-progress"])
                .arg("--output-root")
                .arg(out),
        );
        let shards = out.join("embeddings").join(model_dir.file_name().unwrap());
        shards.join("debian-chat/train")
    };
    let f32_dir = embed(&model("null-384"), "onnx/model.onnx", &dir.path().join("a"));
    let f16_dir = embed(&fp16, "onnx/model_fp16.onnx", &dir.path().join("b"));
    let got = check_output(&[
        "cosine",
        f16_dir.to_str().unwrap(),
        f32_dir.join("shard-00000.parquet").to_str().unwrap(),
    ]);
    assert_eq!(got["rows"], 500, "{got}");
    assert_eq!(got["reference_rows"], 500, "{got}");
    let min = got["min_cosine"].as_f64().unwrap();
    assert!(min >= 0.999, "fp16 vs fp32: min cosine {min}");
    assert!(
        min < 1.0 - 1e-9,
        "fp16 vectors are expected to differ a little: {min}"
    );
}
