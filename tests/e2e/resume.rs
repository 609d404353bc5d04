//! Interrupted runs: SIGINT (graceful, then at once), SIGKILL of the supervisor, and `--resume`
//! ending with the same rows and shard boundaries as an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use chatspace_tests::{bin, model, python, read_json, run, run_ok, shared, wait_for_file};

const ROWS: &str = "12000";
const PER_SHARD: u64 = 1500;

fn embed(out: &Path) -> Command {
    let mut cmd = bin("chatspace");
    cmd.arg("embed-hf")
        .arg("--dataset")
        .arg(shared().join("data/debian-chat.parquet"))
        .args(["--text-field", "messages", "--extract", "first-assistant"])
        .arg("--model")
        .arg(model("null-384"))
        // Units well below the shard size, so an interruption lands mid-run.
        .args([
            "--encoders",
            "2",
            "--unit-rows",
            "256",
            "--max-rows",
            ROWS,
            "--no-progress",
        ])
        .args(["--rows-per-shard", &PER_SHARD.to_string()])
        .arg("--output-root")
        .arg(out);
    cmd
}

fn shard_dir(out: &Path) -> PathBuf {
    out.join("embeddings/null-384/debian-chat/train")
}

fn manifest(out: &Path) -> serde_json::Value {
    read_json(&out.join("indexes/null-384/debian-chat/manifest-train.json"))
}

fn signal(child: &Child, sig: &str) {
    run_ok(Command::new("kill").args([sig, &child.id().to_string()]));
}

/// `{shard file: [row_index...]}` and `{row_index: embedding}` digests of a run, by pyarrow.
fn rows_by_shard(out: &Path) -> serde_json::Value {
    let script = r#"
import glob, hashlib, json, os, sys
import pyarrow.parquet as pq
out = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.parquet"))):
    t = pq.read_table(f, columns=["row_index", "embedding", "text"])
    ri = t.column("row_index").to_pylist()
    emb = t.column("embedding").to_pylist()
    txt = t.column("text").to_pylist()
    h = hashlib.sha256(json.dumps([ri, emb, txt]).encode()).hexdigest()
    out[os.path.basename(f)] = {"first": ri[0], "last": ri[-1], "rows": len(ri), "digest": h}
print(json.dumps(out))
"#;
    let ran = run_ok(python().args(["-c", script]).arg(shard_dir(out)));
    serde_json::from_str(&ran.stdout).unwrap()
}

fn clean_run() -> (tempfile::TempDir, serde_json::Value) {
    let out = tempfile::tempdir().unwrap();
    run_ok(&mut embed(out.path()));
    let rows = rows_by_shard(out.path());
    (out, rows)
}

#[test]
fn sigint_flushes_then_resume_matches_a_clean_run() {
    let (_clean_dir, clean) = clean_run();
    let out = tempfile::tempdir().unwrap();
    let mut child = embed(out.path()).spawn().unwrap();
    wait_for_file(
        &shard_dir(out.path()).join("shard-00000.parquet"),
        &mut child,
    );
    signal(&child, "-INT");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let m = manifest(out.path());
    assert_eq!(m["status"], "interrupted");
    let shards = m["shards"].as_array().unwrap();
    assert!(!shards.is_empty());
    let written: u64 = shards.iter().map(|s| s["rows"].as_u64().unwrap()).sum();
    assert!(
        written < ROWS.parse::<u64>().unwrap(),
        "the run was not interrupted"
    );
    // The open shard was flushed (partial) rather than lost, and nothing is half-written.
    assert_eq!(m["rows_total"].as_u64().unwrap(), written);
    let on_disk = std::fs::read_dir(shard_dir(out.path())).unwrap().count();
    assert_eq!(
        on_disk,
        shards.len(),
        "every file on disk is in the manifest"
    );

    let ran = run(embed(out.path()).arg("--resume"));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(manifest(out.path())["status"], "complete");
    assert_eq!(rows_by_shard(out.path()), clean);
}

#[test]
fn a_second_sigint_stops_at_once_and_resume_still_matches() {
    let (_clean_dir, clean) = clean_run();
    let out = tempfile::tempdir().unwrap();
    let mut child = embed(out.path()).spawn().unwrap();
    wait_for_file(
        &shard_dir(out.path()).join("shard-00000.parquet"),
        &mut child,
    );
    signal(&child, "-INT");
    signal(&child, "-INT");
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let m = manifest(out.path());
    assert_eq!(m["status"], "interrupted");
    let listed: Vec<&str> = m["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    for entry in std::fs::read_dir(shard_dir(out.path())).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temporary left: {name}");
        assert!(
            listed.iter().any(|p| p.ends_with(&name)),
            "{name} not in the manifest"
        );
    }
    let ran = run(embed(out.path()).arg("--resume"));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(rows_by_shard(out.path()), clean);
}

#[test]
fn supervisor_killed_then_resume_completes_exactly_once() {
    let (_clean_dir, clean) = clean_run();
    let out = tempfile::tempdir().unwrap();
    let mut child = embed(out.path()).spawn().unwrap();
    wait_for_file(
        &shard_dir(out.path()).join("shard-00001.parquet"),
        &mut child,
    );
    signal(&child, "-KILL");
    child.wait().unwrap();
    // Every file under a final shard name is a whole Parquet file of a full shard (pyarrow
    // reads it, and it equals the clean run's); only a `.tmp` file may be cut short.
    let on_disk = rows_by_shard(out.path());
    let complete = on_disk.as_object().unwrap();
    assert!(!complete.is_empty());
    for (name, shard) in complete {
        assert_eq!(shard["rows"].as_u64(), Some(PER_SHARD), "{name} is short");
        assert_eq!(
            shard["digest"],
            clean[name.as_str()]["digest"],
            "{name} differs"
        );
    }
    let ran = run(embed(out.path()).arg("--resume"));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(rows_by_shard(out.path()), clean);
}

#[test]
fn resume_refuses_other_settings_and_lists_them() {
    let out = tempfile::tempdir().unwrap();
    let mut child = embed(out.path()).spawn().unwrap();
    wait_for_file(
        &shard_dir(out.path()).join("shard-00000.parquet"),
        &mut child,
    );
    signal(&child, "-KILL");
    child.wait().unwrap();
    let mut cmd = bin("chatspace");
    cmd.arg("embed-hf")
        .arg("--dataset")
        .arg(shared().join("data/debian-chat.parquet"))
        .args(["--text-field", "messages", "--extract", "first-assistant"])
        .arg("--model")
        .arg(model("null-384"))
        .args([
            "--max-rows",
            "11000",
            "--rows-per-shard",
            "1000",
            "--no-progress",
        ])
        .arg("--output-root")
        .arg(out.path())
        .arg("--resume");
    let ran = run(&mut cmd);
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("cannot resume: settings differ"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("rows_per_shard 1500 → 1000"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr.contains("max_rows 12000 → 11000"),
        "{}",
        ran.stderr
    );
    // Without --resume or --overwrite the folder is not touched either.
    let ran = run(&mut embed(out.path()));
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert!(ran.stderr.contains("--overwrite"), "{}", ran.stderr);
}
