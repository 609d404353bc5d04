//! A real Slurm: a one-node cluster on localhost from Debian's packages
//! (`tests/support/slurm-local.sh`, daemons in the foreground, `auth/none`, stopped by PID) runs
//! `scripts/slurm/embed.sbatch` as a 3-task array (ids 10-12, so indexes count from
//! `SLURM_ARRAY_TASK_MIN`). The middle task is cancelled before it starts; `chatspace merge`
//! lists it with its re-run command, which, submitted alone, completes the merged manifest: every
//! input row exactly once, the same rows as an unsplit run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chatspace_tests::{bin, bin_path, model, read_json, repo_root, run, run_ok, shared};

use crate::tasks::{assert_merge_matches_unsplit, clean, rerun_line};

const ROWS: &str = "3000";

fn script() -> PathBuf {
    repo_root().join("tests/support/slurm-local.sh")
}

/// A running one-node Slurm; stopped (by its daemons' PIDs) when dropped.
struct Slurm {
    dir: PathBuf,
}

impl Slurm {
    fn start(dir: &Path) -> Slurm {
        run_ok(Command::new(script()).arg("install"));
        run_ok(Command::new(script()).arg("start").arg(dir));
        Slurm {
            dir: dir.to_path_buf(),
        }
    }

    /// A Slurm client command talking to this cluster.
    fn client(&self, name: &str) -> Command {
        let mut cmd = Command::new(name);
        clean(&mut cmd).env("SLURM_CONF", self.dir.join("slurm.conf"));
        cmd
    }

    /// Polls `squeue` until job `id` has left the queue, with a deadline.
    fn wait_gone(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let ran = run_ok(self.client("squeue").args(["-h", "-j", id]));
            if ran.stdout.trim().is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still queued:\n{}",
                ran.stdout
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }
}

#[test]
fn a_slurm_array_embeds_every_row_once_and_a_cancelled_task_is_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let extra =
        format!("--extract first-assistant --max-rows {ROWS} --encoders 1 --rows-per-shard 400");
    let slurm = Slurm::start(&dir.path().join("slurm"));

    // Held, so that task 11 can be cancelled before it starts; the template's GPU request is
    // lifted (this node has none) and the encoders run on the CPU.
    let mut submit = slurm.client("sbatch");
    submit
        .args(["--parsable", "--hold", "--gres=none", "--cpus-per-task=1"])
        .args(["--array=10-12"])
        .arg(format!("--output={}/job-%A_%a.out", dir.path().display()))
        .arg(repo_root().join("scripts/slurm/embed.sbatch"))
        .env("DATASET", shared().join("data/debian-chat.parquet"))
        .env("MODEL", model("null-384"))
        .env("OUTPUT_ROOT", &out)
        .env("CHATSPACE", bin_path("chatspace"))
        .env("DEVICE", "cpu")
        .env("CHATSPACE_ARGS", &extra)
        .current_dir(dir.path());
    let job = run_ok(&mut submit).stdout.trim().to_string();
    run_ok(slurm.client("scancel").arg(format!("{job}_11")));
    run_ok(slurm.client("scontrol").args(["release", &job]));
    slurm.wait_gone(&job);

    let tasks = out.join("indexes/null-384/debian-chat/tasks-train");
    let merge = || run(clean(&mut bin("chatspace")).arg("merge").arg(&tasks));
    let ran = merge();
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.starts_with("chatspace: 1 of 3 tasks in ")
            && ran.stderr.contains("  task 1 (no manifest"),
        "{}",
        ran.stderr
    );
    let t0 = read_json(&tasks.join("task-00000-of-00003/manifest-train.json"));
    assert_eq!(t0["task"]["engine"], "slurm");
    assert_eq!(t0["run_id"], job.as_str());

    // Re-run only that task, as merge says, through Slurm.
    let again = rerun_line(&ran.stderr, 1);
    assert!(
        again.ends_with("--num-shards 3 --shard-index 1 --overwrite"),
        "{again}"
    );
    let rerun = slurm
        .client("sbatch")
        .args(["--parsable", "--cpus-per-task=1"])
        .arg(format!("--output={}/rerun.out", dir.path().display()))
        .args(["--wrap", &again])
        .current_dir(dir.path())
        .output()
        .expect("sbatch runs");
    assert!(rerun.status.success(), "{rerun:?}");
    slurm.wait_gone(String::from_utf8_lossy(&rerun.stdout).trim());

    let ran = merge();
    assert_eq!(
        ran.code,
        Some(0),
        "{}\n{}",
        ran.stderr,
        std::fs::read_to_string(dir.path().join("rerun.out")).unwrap_or_default()
    );
    let merged = read_json(&tasks.parent().unwrap().join("manifest-train.json"));
    assert_eq!(merged["status"], "complete");
    assert_eq!(merged["input_rows"], 3000);
    let engines: Vec<&str> = merged["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["engine"].as_str().unwrap())
        .collect();
    assert_eq!(engines, ["slurm", "flags", "slurm"]);

    // The same rows as one unsplit run, each once (pyarrow and DuckDB).
    let whole = dir.path().join("whole");
    run_ok(
        clean(&mut bin("chatspace"))
            .arg("embed-hf")
            .arg("--dataset")
            .arg(shared().join("data/debian-chat.parquet"))
            .arg("--model")
            .arg(model("null-384"))
            .args(extra.split(' '))
            .args(["--no-progress", "--output-root"])
            .arg(&whole),
    );
    let reference = read_json(&whole.join("indexes/null-384/debian-chat/manifest-train.json"));
    assert_merge_matches_unsplit(&out, &merged, &whole, &reference);
    drop(slurm);
}
