//! The supervisor survives its encoders: killed, crashing, erroring or hanging encoders are
//! restarted, their units re-sent, rows at fault isolated and skipped (and recorded), and no
//! encoder outlives the supervisor. Faults come from debug encoders' `CHATSPACE_TEST_FAULTS`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chatspace_tests::{Ran, bin, check_output, model, read_json, run, run_ok, shared};

/// `comm` of encoder processes: the kernel keeps 15 bytes of `chatspace-encoder`.
const ENCODER_COMM: &str = "chatspace-encod";

/// Polls `ready` every 20 ms until it returns `Some`, failing the test after `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(ppid, comm, state)` of a live process, from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(u32, String, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm, state))
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, _, state)| state != 'Z')
}

/// The live encoder processes whose parent is `parent`.
fn encoders_of(parent: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| {
            proc_stat(pid).is_some_and(|(ppid, comm, state)| {
                ppid == parent && comm == ENCODER_COMM && state != 'Z'
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn sigkill(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -KILL {pid} failed");
}

/// Shards listed in the manifest at `path` so far (0 while it does not exist yet).
fn shards_listed(path: &Path) -> usize {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|m| m["shards"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Waits for a spawned supervisor, failing the test after `limit`; returns its output.
fn finish(mut child: Child, stderr: &Path, limit: Duration) -> Ran {
    let status = wait_for(limit, "the supervisor to exit", || {
        child.try_wait().expect("try_wait")
    });
    Ran {
        code: status.code(),
        stdout: String::new(),
        stderr: std::fs::read_to_string(stderr).unwrap_or_default(),
    }
}

/// `chatspace embed-hf` on debian-chat's first assistant turns with MiniLM and 2 encoders.
fn debian_chat(out: &Path, max_rows: &str) -> Command {
    let mut cmd = bin("chatspace");
    cmd.arg("embed-hf")
        .arg("--dataset")
        .arg(shared().join("data/debian-chat.parquet"))
        .args(["--text-field", "messages", "--extract", "first-assistant"])
        .arg("--model")
        .arg(model("all-MiniLM-L6-v2"))
        // Small units: many of them, so both kills land while work remains.
        .args(["--encoders", "2", "--batch-size", "16", "--unit-rows", "64"])
        .args(["--max-rows", max_rows, "--rows-per-shard", "250"])
        .args(["--no-progress", "--run-id", "reliability"])
        .arg("--output-root")
        .arg(out);
    cmd
}

/// A JSONL file of `rows` texts, `BOOM` in the rows listed in `marked`.
fn marked_jsonl(dir: &Path, rows: usize, marked: &[usize]) -> PathBuf {
    let path = dir.join("rows.jsonl");
    let body: String = (0..rows)
        .map(|i| {
            let word = if marked.contains(&i) { "BOOM" } else { "fine" };
            format!("{{\"text\": \"row {i} is {word}\"}}\n")
        })
        .collect();
    std::fs::write(&path, body).unwrap();
    path
}

/// `chatspace embed-hf` on `data` with null-384, writing under `out`.
fn null_run(data: &Path, out: &Path, faults: Option<&str>) -> Command {
    let mut cmd = bin("chatspace");
    cmd.arg("embed-hf")
        .arg("--dataset")
        .arg(data)
        .arg("--model")
        .arg(model("null-384"))
        .arg("--no-progress")
        .arg("--output-root")
        .arg(out);
    match faults {
        Some(f) => cmd.env("CHATSPACE_TEST_FAULTS", f),
        None => cmd.env_remove("CHATSPACE_TEST_FAULTS"),
    };
    cmd
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Lines of the supervisor's own messages (not re-emitted logs).
fn our_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("chatspace: "))
        .collect()
}

#[test]
fn encoders_killed_twice_mid_run_are_restarted_and_every_row_is_written_once() {
    let clean = tempfile::tempdir().unwrap();
    run_ok(&mut debian_chat(clean.path(), "2000"));

    let out = tempfile::tempdir().unwrap();
    let index = out.path().join("indexes/all-MiniLM-L6-v2/debian-chat");
    let manifest = index.join("manifest-train.json");
    let stderr_path = out.path().join("stderr.txt");
    let child = debian_chat(out.path(), "2000")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let sup = child.id();

    // First kill: once the run has written a shard.
    wait_for(Duration::from_secs(120), "the first shard", || {
        (shards_listed(&manifest) >= 1).then_some(())
    });
    let before = encoders_of(sup);
    assert_eq!(before.len(), 2, "encoders of {sup}: {before:?}");
    sigkill(before[0]);
    let shards_then = shards_listed(&manifest);

    // Second kill: the restarted encoder, once it exists and the run has moved on.
    let restarted = wait_for(
        Duration::from_secs(60),
        "a restarted encoder and another shard",
        || {
            let now = encoders_of(sup);
            let new = now.into_iter().find(|p| !before.contains(p))?;
            (shards_listed(&manifest) > shards_then).then_some(new)
        },
    );
    assert!(
        alive(restarted),
        "the run ended before the second kill; make it longer"
    );
    sigkill(restarted);

    let ran = finish(child, &stderr_path, Duration::from_secs(300));
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(ran.stderr.contains("restarting"), "{}", ran.stderr);

    let shard_dir = out
        .path()
        .join("embeddings/all-MiniLM-L6-v2/debian-chat/train");
    let got = check_output(&["inspect", path_str(&shard_dir), path_str(&manifest)]);
    assert_eq!(got["rows"], 2000, "{got}");
    assert_eq!(got["row_index_sorted"], true);
    assert_eq!(got["row_index_unique"], true);
    assert_eq!(got["row_index_first"], 0);
    assert_eq!(got["row_index_last"], 1999);
    assert_eq!(got["tmp_files"], 0);
    for shard in got["shards"].as_array().unwrap() {
        for check in ["sha256_ok", "bytes_ok", "rows_ok", "range_ok"] {
            assert_eq!(shard[check], true, "{check} in {shard}");
        }
    }

    let clean_dir = clean
        .path()
        .join("embeddings/all-MiniLM-L6-v2/debian-chat/train");
    let cmp = check_output(&["compare", path_str(&clean_dir), path_str(&shard_dir)]);
    assert_eq!(cmp["common"], 2000, "{cmp}");
    assert!(cmp["min_cosine"].as_f64().unwrap() >= 0.99999, "{cmp}");

    let m = read_json(&manifest);
    assert_eq!(m["status"], "complete");
    assert_eq!(m["rows_total"], 2000);
    assert_eq!(m["rows_failed_count"], 0);
    let summary = read_json(&index.join("run-train.json"));
    let restarts: u64 = summary["encoder_restarts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(restarts >= 2, "{summary}");
}

#[test]
fn a_row_that_crashes_the_encoder_is_skipped_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = marked_jsonl(dir.path(), 20, &[7]);
    let clean = dir.path().join("clean");
    run_ok(&mut null_run(&data, &clean, None));
    let out = dir.path().join("out");
    // One encoder (the default is one per core): its restarts are the ones counted below.
    let ran = run_ok(null_run(&data, &out, Some("abort:BOOM")).args(["--encoders", "1"]));
    assert!(ran.stderr.contains("embedded 19 rows"), "{}", ran.stderr);

    let index = out.join("indexes/null-384/rows");
    let m = read_json(&index.join("manifest-train.json"));
    assert_eq!(m["status"], "complete");
    assert_eq!(m["rows_total"], 19);
    assert_eq!(m["rows_failed_count"], 1);
    let failed = m["rows_failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{m}");
    assert_eq!(failed[0]["row_index"], 7);
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("died") && reason.contains("while embedding this row"),
        "{reason}"
    );

    let shard_dir = out.join("embeddings/null-384/rows/train");
    let got = check_output(&[
        "inspect",
        path_str(&shard_dir),
        path_str(&index.join("manifest-train.json")),
    ]);
    assert_eq!(got["rows"], 19);
    assert_eq!(got["row_index_sorted"], true);
    assert_eq!(got["row_index_unique"], true);
    let cmp = check_output(&[
        "compare",
        path_str(&clean.join("embeddings/null-384/rows/train")),
        path_str(&shard_dir),
    ]);
    assert_eq!(cmp["only_a"], serde_json::json!([7]), "{cmp}");
    assert_eq!(cmp["only_b"], serde_json::json!([]), "{cmp}");
    assert!(cmp["min_cosine"].as_f64().unwrap() >= 0.99999, "{cmp}");

    let summary = read_json(&index.join("run-train.json"));
    assert_eq!(summary["rows_failed"], 1);
    assert!(
        summary["encoder_restarts"][0].as_u64().unwrap() >= 3,
        "{summary}"
    );
}

#[test]
fn more_failed_rows_than_allowed_fail_the_run_keeping_complete_shards() {
    let dir = tempfile::tempdir().unwrap();
    let data = marked_jsonl(dir.path(), 40, &[25, 33]);
    let out = dir.path().join("out");
    // Jobs of 16 rows, shards of 10: the second failure comes after three shards are closed.
    let ran = run(null_run(&data, &out, Some("fail:BOOM")).args([
        "--batch-size",
        "2",
        "--unit-rows",
        "16",
        "--rows-per-shard",
        "10",
        "--max-failed-rows",
        "1",
    ]));
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let ours = our_lines(&ran.stderr);
    assert_eq!(
        ours,
        vec!["chatspace: 2 rows failed, more than --max-failed-rows 1; first: row 25: test fault"],
        "{}",
        ran.stderr
    );

    let manifest = out.join("indexes/null-384/rows/manifest-train.json");
    let m = read_json(&manifest);
    assert_eq!(m["status"], "failed");
    let failed: Vec<i64> = m["rows_failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row_index"].as_i64().unwrap())
        .collect();
    assert_eq!(failed, vec![25, 33]);
    let shards = m["shards"].as_array().unwrap();
    assert!(!shards.is_empty(), "{m}");
    let got = check_output(&[
        "inspect",
        path_str(&out.join("embeddings/null-384/rows/train")),
        path_str(&manifest),
    ]);
    assert_eq!(got["files"].as_u64().unwrap(), shards.len() as u64, "{got}");
    assert_eq!(got["tmp_files"], 0);
    assert_eq!(got["rows"], m["rows_total"]);
    assert_eq!(got["row_index_sorted"], true);
    for shard in got["shards"].as_array().unwrap() {
        for check in ["sha256_ok", "bytes_ok", "rows_ok", "range_ok"] {
            assert_eq!(shard[check], true, "{check} in {shard}");
        }
    }
}

#[test]
fn a_row_that_hangs_the_encoder_is_killed_skipped_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let data = marked_jsonl(dir.path(), 4, &[2]);
    let out = dir.path().join("out");
    let ran = run_ok(null_run(&data, &out, Some("hang:BOOM")).args(["--unit-timeout", "3"]));
    assert!(ran.stderr.contains("hung"), "{}", ran.stderr);

    let index = out.join("indexes/null-384/rows");
    let m = read_json(&index.join("manifest-train.json"));
    assert_eq!(m["status"], "complete");
    assert_eq!(m["rows_total"], 3);
    let failed = m["rows_failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{m}");
    assert_eq!(failed[0]["row_index"], 2);
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("did not answer within 3 s"),
        "{m}"
    );
    let got = check_output(&[
        "inspect",
        path_str(&out.join("embeddings/null-384/rows/train")),
        path_str(&index.join("manifest-train.json")),
    ]);
    assert_eq!(got["rows"], 3);
    assert_eq!(got["row_index_sorted"], true);
    assert_eq!(got["row_index_unique"], true);
}

#[test]
fn encoders_do_not_outlive_a_killed_supervisor() {
    let out = tempfile::tempdir().unwrap();
    let manifest = out
        .path()
        .join("indexes/all-MiniLM-L6-v2/debian-chat/manifest-train.json");
    let mut child = debian_chat(out.path(), "60000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sup = child.id();
    // The manifest is written once every encoder has loaded the model.
    let encoders = wait_for(Duration::from_secs(120), "both encoders running", || {
        let pids = encoders_of(sup);
        (manifest.is_file() && pids.len() == 2).then_some(pids)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(Duration::from_secs(10), "the encoders to exit", || {
        encoders.iter().all(|&p| !alive(p)).then_some(())
    });
}
