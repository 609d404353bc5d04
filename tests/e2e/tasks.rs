//! Split runs (`--num-shards`/`--shard-index`, or a job engine's environment) and `chatspace
//! merge`: three tasks run as plain processes, one of them failing and one never started, are
//! listed by `merge` with the commands that re-run them; once those ran, the merged manifest
//! covers every input row exactly once, with the same rows as one unsplit run (read back with
//! pyarrow and DuckDB).

use std::path::Path;
use std::process::Command;

use chatspace_tests::{bin, model, python, read_json, run, run_ok, shared};

const ROWS: &str = "6000";

/// Variables of job engines that would pick a task on their own.
const ENGINE_VARS: [&str; 4] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
];

/// `cmd` without job engines' variables or test faults from the test's own environment.
pub fn clean(cmd: &mut Command) -> &mut Command {
    for v in ENGINE_VARS {
        cmd.env_remove(v);
    }
    cmd.env_remove("CHATSPACE_TEST_FAULTS")
}

fn embed(out: &Path) -> Command {
    let mut cmd = bin("chatspace");
    clean(&mut cmd);
    cmd.arg("embed-hf")
        .arg("--dataset")
        .arg(shared().join("data/debian-chat.parquet"))
        .args(["--extract", "first-assistant"])
        .arg("--model")
        .arg(model("null-384"))
        .args(["--encoders", "1", "--max-rows", ROWS, "--no-progress"])
        .args(["--rows-per-shard", "700"])
        .arg("--output-root")
        .arg(out);
    cmd
}

/// The shard files of a manifest, as absolute paths.
fn shard_paths(out: &Path, manifest: &serde_json::Value) -> Vec<String> {
    manifest["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| {
            out.join(s["path"].as_str().expect("path"))
                .display()
                .to_string()
        })
        .collect()
}

/// The merged run (`out`, its `merged` manifest) against one unsplit run (`whole`, its
/// `reference` manifest): every row once, read alike by pyarrow and DuckDB, and the same rows and
/// texts as the unsplit run.
pub fn assert_merge_matches_unsplit(
    out: &Path,
    merged: &serde_json::Value,
    whole: &Path,
    reference: &serde_json::Value,
) {
    let split = read_back(&shard_paths(out, merged));
    let unsplit = read_back(&shard_paths(whole, reference));
    assert_eq!(split["arrow"], split["duckdb"]);
    assert_eq!(split["arrow"]["rows"], split["arrow"]["distinct"]);
    assert_eq!(split["arrow"]["rows"], merged["rows_total"]);
    assert_eq!(split["arrow"], unsplit["arrow"]);
    assert_eq!(unsplit["arrow"], unsplit["duckdb"]);
}

/// `{rows, distinct, min, max, digest}` of the shards, once with pyarrow and once with DuckDB
/// (the digest hashes `row_index` and `text` in `row_index` order).
fn read_back(files: &[String]) -> serde_json::Value {
    let script = r#"
import hashlib, json, sys
import duckdb
import pyarrow.parquet as pq
files = sys.argv[1:]
rows = []
for f in files:
    t = pq.read_table(f, columns=["row_index", "text"])
    rows += zip(t.column("row_index").to_pylist(), t.column("text").to_pylist())
rows.sort()
ri = [r for r, _ in rows]
by_arrow = {"rows": len(ri), "distinct": len(set(ri)), "min": min(ri), "max": max(ri),
            "digest": hashlib.sha256(json.dumps(rows).encode()).hexdigest()}
con = duckdb.connect()
n, d, lo, hi = con.execute(
    "select count(*), count(distinct row_index), min(row_index), max(row_index) from read_parquet(?)",
    [files]).fetchone()
pairs = con.execute(
    "select row_index, text from read_parquet(?) order by row_index", [files]).fetchall()
by_duckdb = {"rows": n, "distinct": d, "min": lo, "max": hi,
             "digest": hashlib.sha256(json.dumps([list(p) for p in pairs]).encode()).hexdigest()}
print(json.dumps({"arrow": by_arrow, "duckdb": by_duckdb}))
"#;
    let ran = run_ok(python().args(["-c", script]).args(files));
    serde_json::from_str(&ran.stdout).expect("JSON")
}

/// The `re-run with:` command `merge` printed for task `index`.
pub fn rerun_line(stderr: &str, index: u32) -> String {
    let prefix = format!("  task {index} (");
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("task {index} not listed:\n{stderr}"));
    line.split_once("re-run with: ")
        .unwrap_or_else(|| panic!("no command in {line}"))
        .1
        .to_string()
}

#[test]
fn three_tasks_cover_every_row_once_and_merge_lists_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let out = dir.path().join("split");
    run_ok(&mut embed(&whole));
    let reference = read_json(&whole.join("indexes/null-384/debian-chat/manifest-train.json"));

    // Task 0 from the flags; task 1 from a Slurm array's variables (ids 10-12), failing on its
    // first row; task 2 never runs.
    run_ok(embed(&out).args(["--num-shards", "3", "--shard-index", "0"]));
    let failed = run(embed(&out)
        .env("SLURM_ARRAY_TASK_ID", "11")
        .env("SLURM_ARRAY_TASK_MIN", "10")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .env("CHATSPACE_TEST_FAULTS", "fail:e")
        .args(["--max-failed-rows", "0"]));
    assert_eq!(failed.code, Some(1), "{}", failed.stderr);
    let tasks = out.join("indexes/null-384/debian-chat/tasks-train");
    let t1 = read_json(&tasks.join("task-00001-of-00003/manifest-train.json"));
    assert_eq!(t1["status"], "failed");
    assert_eq!(t1["task"]["engine"], "slurm");
    assert_eq!(t1["task"]["first_row_index"], 2000);

    let merge = |cmd: &mut Command| run(clean(cmd).arg("merge").arg(&tasks));
    let ran = merge(&mut bin("chatspace"));
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.starts_with("chatspace: 2 of 3 tasks in ")
            && ran.stderr.contains("  task 1 (failed): re-run with: ")
            && ran.stderr.contains("  task 2 (no manifest"),
        "{}",
        ran.stderr
    );
    assert!(!tasks.parent().unwrap().join("manifest-train.json").exists());
    let again1 = rerun_line(&ran.stderr, 1);
    let again2 = rerun_line(&ran.stderr, 2);
    assert!(
        again1.ends_with("--num-shards 3 --shard-index 1 --resume"),
        "{again1}"
    );
    assert!(
        again2.ends_with("--num-shards 3 --shard-index 2 --overwrite"),
        "{again2}"
    );
    for cmd in [again1, again2] {
        run_ok(clean(&mut Command::new("sh")).args(["-c", &cmd]));
    }

    let ran = merge(&mut bin("chatspace"));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let merged = read_json(&tasks.parent().unwrap().join("manifest-train.json"));
    assert_eq!(merged["status"], "complete");
    assert_eq!(merged["num_tasks"], 3);
    assert_eq!(merged["input_rows"], 6000);
    assert_eq!(merged["rows_total"], reference["rows_total"]);
    assert_eq!(merged["rows_skipped"], reference["rows_skipped"]);
    assert_eq!(merged["skipped_reasons"], reference["skipped_reasons"]);
    assert_eq!(merged["rows_failed_count"], 0);
    let ranges: Vec<(u64, u64)> = merged["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["first_row_index"].as_u64().unwrap(),
                t["end_row_index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranges, [(0, 2000), (2000, 4000), (4000, 6000)]);
    let indexes: Vec<u64> = merged["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["shard_index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..indexes.len() as u64).collect::<Vec<_>>());

    // Every row_index once, and the same rows and texts as the unsplit run.
    assert_merge_matches_unsplit(&out, &merged, &whole, &reference);
}

#[test]
fn a_task_index_out_of_range_or_half_given_is_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run(embed(dir.path()).args(["--num-shards", "3", "--shard-index", "3"]));
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(
        ran.stderr
            .starts_with("chatspace: task index 3 is not below the number of tasks 3"),
        "{}",
        ran.stderr
    );
    let ran = run(embed(dir.path()).env("JOB_COMPLETION_INDEX", "1"));
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("--num-shards"), "{}", ran.stderr);
    // JSON Lines files do not say their row count before they are read.
    let ran = run(clean(&mut bin("chatspace"))
        .arg("embed-hf")
        .arg("--dataset")
        .arg(chatspace_tests::repo_root().join("examples/smoltalk-sample.jsonl"))
        .args([
            "--extract",
            "first-assistant",
            "--num-shards",
            "2",
            "--shard-index",
            "0",
        ])
        .arg("--model")
        .arg(model("null-384"))
        .arg("--output-root")
        .arg(dir.path()));
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("--num-shards needs every data file's row count before reading"),
        "{}",
        ran.stderr
    );
    let ran = run(clean(&mut bin("chatspace"))
        .arg("merge")
        .arg(dir.path().join("nowhere")));
    assert_eq!(ran.code, Some(3), "{}", ran.stderr);
    assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
}

#[test]
fn tasks_over_several_files_skip_whole_files_and_cut_inside_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // Three Parquet files of 1,000, 500 and 2,500 rows cut from the chat data.
    let script = r#"
import sys
import pyarrow.parquet as pq
t = pq.read_table(sys.argv[1]).slice(0, 4000)
for name, (a, b) in zip(["part-0", "part-1", "part-2"], [(0, 1000), (1000, 1500), (1500, 4000)]):
    pq.write_table(t.slice(a, b - a), f"{sys.argv[2]}/{name}.parquet", row_group_size=300)
"#;
    run_ok(
        python()
            .args(["-c", script])
            .arg(shared().join("data/debian-chat.parquet"))
            .arg(&data),
    );
    let embed_glob = |out: &Path| {
        let mut cmd = bin("chatspace");
        clean(&mut cmd)
            .arg("embed-hf")
            .arg("--dataset")
            .arg(data.join("*.parquet"))
            .args(["--extract", "first-assistant", "--encoders", "1"])
            .args(["--rows-per-shard", "600", "--no-progress"])
            .arg("--model")
            .arg(model("null-384"))
            .arg("--output-root")
            .arg(out);
        cmd
    };
    let whole = dir.path().join("whole");
    run_ok(&mut embed_glob(&whole));
    let out = dir.path().join("split");
    for i in 0..4 {
        run_ok(embed_glob(&out).args(["--num-shards", "4", "--shard-index", &i.to_string()]));
    }
    let tasks = out.join("indexes/null-384/data/tasks-train");
    // Task 1 (rows 1000..2000) reads part-1 and part-2 whole files from their start; task 2
    // (2000..3000) starts 500 rows into part-2.
    let t1 = read_json(&tasks.join("task-00001-of-00004/manifest-train.json"));
    let files = t1["run_config"]["dataset_files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    let t0 = read_json(&tasks.join("task-00000-of-00004/manifest-train.json"));
    assert_eq!(
        t0["run_config"]["dataset_files"].as_array().unwrap().len(),
        1
    );
    run_ok(clean(&mut bin("chatspace")).arg("merge").arg(&tasks));
    let merged = read_json(&tasks.parent().unwrap().join("manifest-train.json"));
    assert_eq!(merged["input_rows"], 4000);
    let reference = read_json(&whole.join("indexes/null-384/data/manifest-train.json"));
    assert_merge_matches_unsplit(&out, &merged, &whole, &reference);
    assert_eq!(merged["rows_total"], reference["rows_total"]);
}
