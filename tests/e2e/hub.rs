//! Datasets and models by Hub repo id, against the fake Hub in `tests/support/fakehub.rs`:
//! streamed into the huggingface_hub cache, reused from it (offline too, and by Python), and
//! every failure a clear line.

use std::path::Path;
use std::process::Command;

use chatspace_tests::fakehub::{FakeHub, FakeRepo, FileSource, RepoKind};
use chatspace_tests::{Ran, bin, check_output, model, python, read_json, run, run_ok};

const DATASET: &str = "org/smoltalk-like";
const MODEL: &str = "org/minilm";

/// `chatspace embed-hf` against `endpoint`, with the Hub cache under `home` and no Hub
/// variables from the test's own environment.
fn chatspace(endpoint: &str, home: &Path) -> Command {
    let mut cmd = bin("chatspace");
    for var in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN_PATH",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .arg("embed-hf")
        .arg("--no-progress");
    cmd
}

fn hub_run(hub: &FakeHub, home: &Path, out: &Path, extra: &[&str]) -> Ran {
    run(chatspace(&hub.endpoint(), home)
        .args(["--dataset", DATASET, "--subset", "all"])
        .args(["--text-field", "messages", "--extract", "first-assistant"])
        .args([
            "--model",
            MODEL,
            "--encoders",
            "2",
            "--rows-per-shard",
            "256",
        ])
        .args(extra)
        .arg("--output-root")
        .arg(out))
}

fn one_line_error(ran: &Ran, code: i32, needles: &[&str]) {
    assert_eq!(ran.code, Some(code), "{}", ran.stderr);
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line:\n{}", ran.stderr);
    for n in needles {
        assert!(lines[0].contains(n), "{:?} lacks {n:?}", lines[0]);
    }
}

#[test]
fn smoltalk_shaped_repo_and_model_by_id_then_offline_from_the_cache() {
    let hub = FakeHub::start(vec![
        FakeRepo::smoltalk_like_dataset(DATASET),
        FakeRepo::minilm_model(MODEL),
    ]);
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ran = hub_run(&hub, home.path(), out.path(), &[]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);

    let index = out
        .path()
        .join("indexes/org__minilm/org__smoltalk-like__all");
    let shards = out
        .path()
        .join("embeddings/org__minilm/org__smoltalk-like__all/train");
    let manifest = read_json(&index.join("manifest-train.json"));
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["rows_total"], 600); // data/all/train-* holds 3 files of 200 rows
    assert_eq!(manifest["source"]["kind"], "hub");
    let commit = hub.commit(RepoKind::Dataset, DATASET, "main").unwrap();
    assert_eq!(manifest["source"]["commit"], commit.as_str());
    assert_eq!(
        manifest["model_source"]["commit"],
        hub.commit(RepoKind::Model, MODEL, "main").unwrap().as_str()
    );
    let got = check_output(&[
        "inspect",
        shards.to_str().unwrap(),
        index.join("manifest-train.json").to_str().unwrap(),
    ]);
    assert_eq!(got["rows"], 600);
    assert_eq!(got["row_index_sorted"], true);
    assert_eq!(got["row_index_last"], 599);
    assert_eq!(got["duckdb"]["distinct_row_index"], 600);
    // Only the chosen subset's split was fetched, and the token-free CDN never saw a token.
    let fetched: Vec<String> = hub
        .requests_matching("/resolve/")
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        fetched
            .iter()
            .any(|p| p.ends_with("data/all/train-00002-of-00003.parquet"))
    );
    assert!(
        !fetched
            .iter()
            .any(|p| p.contains("/test-") || p.contains("/small/")),
        "{fetched:?}"
    );
    assert_eq!(hub.cdn_auth_violations(), 0);

    // A second run takes every file from the cache: no file content is transferred again.
    hub.clear_requests();
    let again = hub_run(&hub, home.path(), out.path(), &["--overwrite"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(
        hub.requests_matching("/cdn/").is_empty(),
        "{:?}",
        hub.requests()
    );

    // With the Hub gone and HF_HUB_OFFLINE=1, everything comes from the cache.
    let endpoint = hub.endpoint();
    hub.stop();
    let offline_out = tempfile::tempdir().unwrap();
    let ran = run(chatspace(&endpoint, home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["--dataset", DATASET, "--subset", "all"])
        .args(["--text-field", "messages", "--extract", "first-assistant"])
        .args(["--model", MODEL])
        .arg("--output-root")
        .arg(offline_out.path()));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let offline = read_json(
        &offline_out
            .path()
            .join("indexes/org__minilm/org__smoltalk-like__all/manifest-train.json"),
    );
    assert_eq!(offline["rows_total"], 600);
    assert_eq!(offline["source"]["commit"], commit.as_str());

    // Python's huggingface_hub reads our cache offline, and finds the same bytes.
    let script = r#"
import hashlib, sys
from huggingface_hub import hf_hub_download
p = hf_hub_download(sys.argv[1], sys.argv[2], repo_type=sys.argv[3])
print(hashlib.sha256(open(p, "rb").read()).hexdigest())
"#;
    for (repo, file, kind) in [
        (DATASET, "data/all/train-00000-of-00003.parquet", "dataset"),
        (MODEL, "onnx/model.onnx", "model"),
        (MODEL, "tokenizer.json", "model"),
    ] {
        let ran = run_ok(
            python()
                .env("HF_HOME", home.path())
                .env("HF_HUB_OFFLINE", "1")
                .env_remove("HF_HUB_CACHE")
                .args(["-c", script, repo, file, kind]),
        );
        let ours = std::fs::read(
            home.path()
                .join("hub")
                .join(format!("{}s--{}", kind, repo.replace('/', "--")))
                .join("snapshots")
                .join(if kind == "dataset" {
                    commit.clone()
                } else {
                    hub_commit_of_model(&offline)
                })
                .join(file),
        )
        .unwrap();
        assert_eq!(
            ran.stdout.trim(),
            chatspace_tests::fakehub::sha256_hex(&ours),
            "{file}"
        );
    }
}

fn hub_commit_of_model(manifest: &serde_json::Value) -> String {
    manifest["model_source"]["commit"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn parquet_conversion_branch_when_the_repo_has_no_data_files() {
    let hub = FakeHub::start(vec![FakeRepo::parquet_converted_only("org/converted")]);
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ran = run(chatspace(&hub.endpoint(), home.path())
        .args(["--dataset", "org/converted", "--text-field", "messages"])
        .args(["--extract", "first-assistant"])
        .arg("--model")
        .arg(model("null-384"))
        .arg("--output-root")
        .arg(out.path()));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let m = read_json(
        &out.path()
            .join("indexes/null-384/org__converted/manifest-train.json"),
    );
    assert_eq!(m["rows_total"], 250);
    assert_eq!(m["source"]["revision"], "refs/convert/parquet");
}

#[test]
fn a_download_cut_off_midway_resumes() {
    let hub = FakeHub::start(vec![FakeRepo::smoltalk_like_dataset(DATASET)]);
    hub.cut_after("/cdn/", 3000);
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let ran = run(chatspace(&hub.endpoint(), home.path())
        .args(["--dataset", DATASET, "--subset", "small"])
        .args(["--text-field", "messages", "--extract", "first-assistant"])
        .arg("--model")
        .arg(model("null-384"))
        .arg("--output-root")
        .arg(out.path()));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let m = read_json(
        &out.path()
            .join("indexes/null-384/org__smoltalk-like__small/manifest-train.json"),
    );
    assert_eq!(m["rows_total"], 100);
    let cdn = hub.requests_matching("/cdn/");
    assert!(cdn.iter().any(|r| r.cut), "no download was cut: {cdn:?}");
    assert!(
        cdn.iter().any(|r| r.range.is_some()),
        "no resumed download: {cdn:?}"
    );
    let leftovers: Vec<_> = chatspace_tests::files_under(home.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".incomplete"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn hub_failures_are_one_clear_line() {
    let hub = FakeHub::start(vec![
        FakeRepo::smoltalk_like_dataset(DATASET),
        FakeRepo::dataset("org/gated")
            .with_file(
                "data/train-0.jsonl",
                FileSource::bytes("{\"text\": \"x\"}\n"),
            )
            .gated("good-token"),
        FakeRepo::model("org/no-onnx")
            .with_file(
                "tokenizer.json",
                FileSource::path(model("null-384").join("tokenizer.json")),
            )
            .with_file("config.json", FileSource::bytes("{}")),
    ]);
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let null = model("null-384");
    let go = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = chatspace(&hub.endpoint(), home.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd
            .args(args)
            .arg("--model")
            .arg(&null)
            .arg("--output-root")
            .arg(out.path()))
    };

    let ran = go(&["--dataset", "org/nope"], &[]);
    one_line_error(&ran, 3, &["dataset org/nope not found", "HF_TOKEN"]);

    let ran = go(&["--dataset", "org/gated"], &[]);
    one_line_error(&ran, 3, &["org/gated", "HF_TOKEN"]);
    let ran = go(
        &["--dataset", "org/gated"],
        &[("HF_TOKEN", "wrong-token-4242")],
    );
    one_line_error(&ran, 3, &["org/gated"]);
    assert!(
        !ran.stderr.contains("wrong-token-4242"),
        "token printed: {}",
        ran.stderr
    );
    // With the right token the gated files download.
    let ran = go(&["--dataset", "org/gated"], &[("HF_TOKEN", "good-token")]);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);

    let ran = go(&["--dataset", DATASET, "--revision", "v9"], &[]);
    one_line_error(&ran, 3, &["revision v9 not found"]);

    let ran = go(&["--dataset", DATASET, "--subset", "big"], &[]);
    one_line_error(&ran, 3, &["has no subset `big`; subsets: all, small"]);
    let ran = go(
        &[
            "--dataset",
            DATASET,
            "--subset",
            "small",
            "--split",
            "validation",
        ],
        &[],
    );
    one_line_error(
        &ran,
        3,
        &["has no split `validation` in subset small; splits: train, test"],
    );

    let empty_home = tempfile::tempdir().unwrap();
    let ran = run(chatspace(&hub.endpoint(), empty_home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["--dataset", DATASET, "--subset", "all"])
        .arg("--model")
        .arg(&null)
        .arg("--output-root")
        .arg(out.path()));
    one_line_error(
        &ran,
        3,
        &["HF_HUB_OFFLINE", "org/smoltalk-like", "not in the cache"],
    );

    let ran = run(chatspace(&hub.endpoint(), home.path())
        .args([
            "--dataset",
            DATASET,
            "--subset",
            "all",
            "--text-field",
            "messages",
        ])
        .args(["--extract", "first-assistant", "--model", "org/no-onnx"])
        .arg("--output-root")
        .arg(out.path()));
    one_line_error(
        &ran,
        3,
        &[
            "model org/no-onnx has no onnx/model.onnx",
            "optimum-cli export onnx",
        ],
    );

    // Nothing listens on a stopped hub's port: retried, then reported.
    let endpoint = hub.endpoint();
    hub.stop();
    let ran = run(chatspace(&endpoint, empty_home.path())
        .args(["--dataset", DATASET])
        .arg("--model")
        .arg(&null)
        .arg("--output-root")
        .arg(out.path()));
    one_line_error(&ran, 1, &["cannot reach", "127.0.0.1"]);
}
