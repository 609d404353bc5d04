//! Model options (`--pooling`, `--normalize`/`--no-normalize`, `--prompt`, `--prompt-name`,
//! `--truncate-dim`, `--max-seq-length`, `--embedding-dtype`) against vectors from Python
//! sentence-transformers itself: `tests/fixtures/st/*.parquet`, made by
//! `tests/support/make_st_reference.py` from the cases in `tests/fixtures/st/cases.json` (see
//! the README there).

use std::path::{Path, PathBuf};

use chatspace_tests::{bin, check_output, model, read_json, repo_root, run, run_ok};
use serde_json::Value;

/// The fixtures folder.
fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/st")
}

/// The cases of `cases.json`.
fn cases() -> Vec<Value> {
    read_json(&fixtures().join("cases.json"))
        .as_array()
        .expect("cases.json is a list")
        .clone()
}

/// `model_name`'s folder, or, for a case with `include_prompt: false`, a copy in `dir` (files
/// linked) whose Pooling config excludes the prompt.
fn model_folder(case: &Value, dir: &Path) -> PathBuf {
    let name = case["model"].as_str().unwrap();
    let src = model(name);
    if case["include_prompt"] != false {
        return src;
    }
    let dst = dir.join(name);
    std::fs::create_dir_all(dst.join("1_Pooling")).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "1_Pooling" {
            std::os::unix::fs::symlink(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
    let mut pooling = read_json(&src.join("1_Pooling/config.json"));
    pooling["include_prompt"] = false.into();
    std::fs::write(
        dst.join("1_Pooling/config.json"),
        serde_json::to_vec(&pooling).unwrap(),
    )
    .unwrap();
    dst
}

/// Runs `chatspace embed-hf` on a case's fixture with the case's flags plus `extra`; returns
/// the shard folder and the manifest.
fn embed_case(case: &Value, dir: &Path, extra: &[&str]) -> (PathBuf, Value) {
    let name = case["name"].as_str().unwrap();
    let folder = model_folder(case, dir);
    let flags: Vec<&str> = case["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let out = dir.join("out");
    run_ok(
        bin("chatspace")
            .arg("embed-hf")
            .arg("--dataset")
            .arg(fixtures().join(format!("{name}.parquet")))
            .arg("--model")
            .arg(&folder)
            .args(["--encoders", "2", "--batch-size", "7", "--no-progress"])
            .args(&flags)
            .args(extra)
            .arg("--output-root")
            .arg(&out),
    );
    let model_name = case["model"].as_str().unwrap();
    let shards = out.join(format!("embeddings/{model_name}/{name}/train"));
    let manifest = read_json(&out.join(format!("indexes/{model_name}/{name}/manifest-train.json")));
    (shards, manifest)
}

/// Every case matches sentence-transformers' vectors (direction and norm), and the manifest
/// echoes the settings in effect.
#[test]
fn model_options_match_sentence_transformers() {
    let cases = cases();
    assert!(cases.len() >= 10);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (shards, manifest) = embed_case(case, dir.path(), &[]);
        let reference = fixtures().join(format!("{name}.parquet"));
        let got = check_output(&[
            "cosine",
            shards.to_str().unwrap(),
            reference.to_str().unwrap(),
        ]);
        assert_eq!(got["rows"], 64, "{name}: {got}");
        assert_eq!(got["distinct_ids"], 64, "{name}: {got}");
        let min = got["min_cosine"].as_f64().unwrap();
        assert!(
            min >= 0.99999,
            "{name}: min cosine {min} (row {})",
            got["worst_id"]
        );
        // Cosine ignores length: normalised or not must match too.
        let norm = got["max_norm_diff"].as_f64().unwrap();
        assert!(norm < 1e-4, "{name}: norms differ by {norm}");
        assert_eq!(got["duckdb_rows"], 64, "{name}: {got}");

        let info = &manifest["model_info"];
        let dim = got["dims"][0][1].as_u64().unwrap();
        assert_eq!(got["dims"], serde_json::json!([[dim, dim]]), "{name}");
        assert_eq!(info["dim"], dim, "{name}");
        assert_eq!(manifest["embedding_dim"], dim, "{name}");
        assert_eq!(info["truncate_dim"], case["truncate_dim"], "{name}");
        if let Some(modes) = case["pooling"].as_array() {
            let joined: Vec<&str> = modes.iter().map(|m| m.as_str().unwrap()).collect();
            assert_eq!(info["pooling"], joined.join("+"), "{name}");
        }
        let normalize = case["normalize"] != false;
        assert_eq!(info["normalize"], normalize, "{name}");
        if let Some(n) = case["max_seq_length"].as_u64() {
            assert_eq!(info["max_seq_length"], n, "{name}");
            assert!(manifest["rows_truncated"].as_u64().unwrap() > 30, "{name}");
        }
        if case["prompt"].is_string() {
            assert_eq!(info["prompt"], case["prompt"], "{name}");
        }
        if case["prompt_name"].is_string() {
            assert_eq!(info["prompt_name"], case["prompt_name"], "{name}");
        }
        assert_eq!(
            info["prompt_tokens_pooled"],
            case["include_prompt"] != false,
            "{name}"
        );
        let run_config = &manifest["run_config"];
        assert_eq!(run_config["truncate_dim"], case["truncate_dim"], "{name}");
        assert_eq!(run_config["embedding_dtype"], "float32", "{name}");
        if normalize {
            let (lo, hi) = (
                manifest["min_norm"].as_f64().unwrap(),
                manifest["max_norm"].as_f64().unwrap(),
            );
            assert!(lo > 0.9999 && hi < 1.0001, "{name}: norms {lo}..{hi}");
        }
    }
}

/// `--embedding-dtype float16`: the shard column is `FixedSizeList<Float16>`, pyarrow and DuckDB
/// both read it, and the values are sentence-transformers' to half precision. Half precision
/// rounds each value with a relative error of at most 2^-11, so a vector moves by at most 2^-11
/// of its length and its cosine to the exact one stays above 1 - 2^-23 (about 1 - 1.2e-7):
/// 0.99995 leaves room for that on top of the float32 bound of 0.99999. Norm statistics in the
/// manifest are computed in float32, before the rounding.
#[test]
fn float16_shards_read_with_pyarrow_and_duckdb() {
    let case = cases()
        .into_iter()
        .find(|c| c["name"] == "minilm-truncate-64")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (shards, manifest) = embed_case(&case, dir.path(), &["--embedding-dtype", "float16"]);
    let manifest_path = dir
        .path()
        .join("out/indexes/all-MiniLM-L6-v2/minilm-truncate-64/manifest-train.json");
    let got = check_output(&[
        "inspect",
        shards.to_str().unwrap(),
        manifest_path.to_str().unwrap(),
    ]);
    assert_eq!(
        got["schema"]["embedding"], "fixed_size_list<item: halffloat not null>[64]",
        "{got}"
    );
    assert_eq!(got["duckdb"]["rows"], 64, "{got}");
    assert_eq!(got["duckdb"]["min_dim"], 64, "{got}");
    assert_eq!(got["duckdb"]["max_dim"], 64, "{got}");
    assert!(
        got["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["sha256_ok"] == true)
    );
    let reference = fixtures().join("minilm-truncate-64.parquet");
    let cos = check_output(&[
        "cosine",
        shards.to_str().unwrap(),
        reference.to_str().unwrap(),
    ]);
    let min = cos["min_cosine"].as_f64().unwrap();
    assert!(min >= 0.99995, "float16: min cosine {min}");
    assert!(cos["duckdb_max_abs_diff"].as_f64().unwrap() == 0.0, "{cos}");
    assert_eq!(manifest["run_config"]["embedding_dtype"], "float16");
    let (lo, hi) = (
        manifest["min_norm"].as_f64().unwrap(),
        manifest["max_norm"].as_f64().unwrap(),
    );
    assert!(lo > 0.99999 && hi < 1.00001, "float32 norms: {lo}..{hi}");
}

/// Options that do not fit the model are one line naming the option, exit code 3.
#[test]
fn bad_model_options_are_one_clear_line() {
    let dataset = fixtures().join("minilm-cls.parquet");
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "all-MiniLM-L6-v2",
            &["--truncate-dim", "385"],
            "--truncate-dim 385 is more than the 384 dimensions",
        ),
        (
            "tiny-qwen3-lasttoken",
            &["--prompt-name", "passage"],
            "--prompt-name passage: no such prompt",
        ),
        (
            "all-MiniLM-L6-v2",
            &["--prompt-name", "query"],
            "(it has none)",
        ),
    ];
    for (model_name, flags, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let ran = run(bin("chatspace")
            .arg("embed-hf")
            .arg("--dataset")
            .arg(&dataset)
            .arg("--model")
            .arg(model(model_name))
            .args(flags)
            .args(["--encoders", "1", "--no-progress"])
            .arg("--output-root")
            .arg(dir.path()));
        assert_eq!(ran.code, Some(3), "{flags:?}: {}", ran.stderr);
        assert!(ran.stderr.contains(want), "{flags:?}: {}", ran.stderr);
        if model_name == "tiny-qwen3-lasttoken" {
            assert!(
                ran.stderr.contains("its prompts: document, query"),
                "{}",
                ran.stderr
            );
        }
        assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    }
    let ran = run(bin("chatspace").args([
        "embed-hf",
        "--dataset",
        "x.parquet",
        "--prompt",
        "a",
        "--prompt-name",
        "b",
    ]));
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("--prompt"), "{}", ran.stderr);
}

/// The model options are settings `--resume` compares.
#[test]
fn resume_refuses_changed_model_options() {
    let dataset = fixtures().join("minilm-cls.parquet");
    let dir = tempfile::tempdir().unwrap();
    let embed = |extra: &[&str]| {
        run(bin("chatspace")
            .arg("embed-hf")
            .arg("--dataset")
            .arg(&dataset)
            .arg("--model")
            .arg(model("all-MiniLM-L6-v2"))
            .args(["--encoders", "1", "--no-progress", "--max-rows", "8"])
            .args(extra)
            .arg("--output-root")
            .arg(dir.path()))
    };
    let first = embed(&["--truncate-dim", "32", "--embedding-dtype", "float16"]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    for (flags, key) in [
        (
            &["--resume", "--embedding-dtype", "float16"][..],
            "truncate_dim",
        ),
        (&["--resume", "--truncate-dim", "32"], "embedding_dtype"),
        (
            &[
                "--resume",
                "--truncate-dim",
                "32",
                "--embedding-dtype",
                "float16",
                "--pooling",
                "cls",
            ],
            "pooling",
        ),
    ] {
        let ran = embed(flags);
        assert_eq!(ran.code, Some(3), "{flags:?}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("cannot resume") && ran.stderr.contains(key),
            "{flags:?}: {}",
            ran.stderr
        );
    }
    let same = embed(&[
        "--resume",
        "--truncate-dim",
        "32",
        "--embedding-dtype",
        "float16",
    ]);
    assert_eq!(same.code, Some(0), "{}", same.stderr);
}
