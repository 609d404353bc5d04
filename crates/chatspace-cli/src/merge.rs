//! `chatspace merge`: combines the manifests of the tasks of a split run (`--num-shards`) into
//! one manifest, after checking that every task completed and that their row ranges cover the
//! input exactly once. Missing or unfinished tasks are listed with the command that re-runs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::bad_input;
use crate::manifest::{self, Manifest, Status, Tool};
use crate::partition;

/// Flags of `chatspace merge`.
#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// The tasks' folder of a split run: `<output-root>/indexes/<model>/<dataset>/tasks-<split>`
    /// (the combined manifest is written beside it, as `manifest-<split>.json`).
    pub tasks_dir: PathBuf,
}

/// One task in the combined manifest.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    /// The task's index.
    pub index: u32,
    /// Its manifest, relative to the output root.
    pub manifest: String,
    /// The first input row of its range.
    pub first_row_index: u64,
    /// One past its last input row.
    pub end_row_index: u64,
    /// Output rows it wrote.
    pub rows_total: u64,
    /// Its run id.
    pub run_id: String,
    /// Where its index came from (`flags`, `slurm`, `kubernetes`).
    pub engine: String,
}

/// The combined manifest: the fields of a single run's manifest, plus the tasks.
#[derive(Debug, Clone, Serialize)]
pub struct MergedManifest {
    /// The fields every manifest has, summed or combined over the tasks.
    #[serde(flatten)]
    pub manifest: Manifest,
    /// The number of tasks.
    pub num_tasks: u32,
    /// Each task, in order.
    pub tasks: Vec<TaskSummary>,
}

/// A task that is not complete, and why.
#[derive(Debug)]
struct Missing {
    index: u32,
    why: String,
    rerun: Option<String>,
}

/// Quotes `s` for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command that runs task `index` again: with `--resume` when it left a manifest, else with
/// `--overwrite` (it may have left shards without one).
fn rerun_command(base: &[String], index: u32, count: u32, resume: bool) -> String {
    let mut words: Vec<String> = base.iter().map(|w| shell_quote(w)).collect();
    words.extend([
        "--num-shards".into(),
        count.to_string(),
        "--shard-index".into(),
        index.to_string(),
        if resume { "--resume" } else { "--overwrite" }.into(),
    ]);
    words.join(" ")
}

/// Reads the one `manifest-*.json` in a task folder, if there is one.
fn read_task_manifest(dir: &Path) -> Result<Option<(PathBuf, Manifest)>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("manifest-") && name.ends_with(".json") {
            let path = e.path();
            let bytes = std::fs::read(&path)
                .map_err(|err| bad_input!("cannot read {}: {err}", path.display()))?;
            let m: Manifest = serde_json::from_slice(&bytes)
                .map_err(|err| bad_input!("manifest {} is not readable: {err}", path.display()))?;
            return Ok(Some((path, m)));
        }
    }
    Ok(None)
}

/// The output root of a tasks folder (`<root>/indexes/<model>/<dataset>/tasks-<split>`).
fn output_root(tasks_dir: &Path) -> PathBuf {
    tasks_dir
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs `chatspace merge`: checks the tasks and writes the combined manifest; returns its path.
/// When tasks are missing or incomplete, prints them with their re-run commands and fails.
pub fn merge(args: &MergeArgs) -> Result<PathBuf> {
    let dir = &args.tasks_dir;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| bad_input!("tasks folder {} cannot be read: {e}", dir.display()))?;
    let mut found: BTreeMap<u32, PathBuf> = BTreeMap::new();
    let mut count: Option<u32> = None;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((index, n)) = partition::parse_folder_name(&name) else {
            continue;
        };
        if count.is_some_and(|c| c != n) {
            return Err(bad_input!(
                "tasks folder {} mixes runs split {} and {n} ways",
                dir.display(),
                count.unwrap_or(n)
            ));
        }
        count = Some(n);
        found.insert(index, e.path());
    }
    let Some(count) = count.filter(|&n| n > 0) else {
        return Err(bad_input!(
            "tasks folder {} holds no task-*-of-* folders",
            dir.display()
        ));
    };
    let root = output_root(dir);

    let mut done: Vec<(PathBuf, Manifest)> = Vec::new();
    let mut missing: Vec<Missing> = Vec::new();
    let mut base: Option<Vec<String>> = None;
    for index in 0..count {
        let task = match found.get(&index) {
            Some(path) => read_task_manifest(path)?,
            None => None,
        };
        match task {
            None => missing.push(Missing {
                index,
                why: "no manifest (never started, or stopped before its first write)".into(),
                rerun: None,
            }),
            Some((path, m)) => {
                let record = m.task.clone().ok_or_else(|| {
                    bad_input!("manifest {} is not a task's (no `task`)", path.display())
                })?;
                if record.index != index || record.count != count {
                    return Err(bad_input!(
                        "manifest {} is task {} of {}, not {index} of {count}",
                        path.display(),
                        record.index,
                        record.count
                    ));
                }
                base.get_or_insert_with(|| record.command.clone());
                if m.status == Status::Complete {
                    done.push((path, m));
                } else {
                    missing.push(Missing {
                        index,
                        why: format!("{:?}", m.status).to_lowercase(),
                        rerun: Some(rerun_command(&record.command, index, count, true)),
                    });
                }
            }
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "chatspace: {} of {count} tasks in {} are not complete:",
            missing.len(),
            dir.display()
        );
        for t in &missing {
            let rerun = t.rerun.clone().or_else(|| {
                base.as_ref()
                    .map(|b| rerun_command(b, t.index, count, false))
            });
            match rerun {
                Some(cmd) => eprintln!("  task {} ({}): re-run with: {cmd}", t.index, t.why),
                None => eprintln!(
                    "  task {} ({}): re-run its command with --num-shards {count} --shard-index {}",
                    t.index, t.why, t.index
                ),
            }
        }
        return Err(anyhow!(
            "merge: {} of {count} tasks are not complete (listed above)",
            missing.len()
        ));
    }
    let merged = combine(&root, count, done)?;
    let split = crate::plan::component(&merged.manifest.split);
    let parent = dir
        .parent()
        .ok_or_else(|| bad_input!("tasks folder {} has no parent", dir.display()))?;
    let path = parent.join(format!("manifest-{split}.json"));
    manifest::write_json_atomic(&path, &merged)?;
    eprintln!(
        "chatspace: merged {count} tasks: input rows 0..{} each covered once, {} rows in {} shards; manifest: {}",
        merged.manifest.input_rows,
        merged.manifest.rows_total,
        merged.manifest.shards.len(),
        path.display()
    );
    Ok(path)
}

/// Checks that complete tasks cover the input once and their shards are there, and combines
/// their manifests.
fn combine(root: &Path, count: u32, done: Vec<(PathBuf, Manifest)>) -> Result<MergedManifest> {
    let first = done[0].1.clone();
    let total = first.task.as_ref().map_or(0, |t| t.input_rows_total);
    let mut merged = first.clone();
    merged.rows_total = 0;
    merged.input_rows = 0;
    merged.rows_skipped = 0;
    merged.skipped_reasons = BTreeMap::new();
    merged.turns_skipped = BTreeMap::new();
    merged.rows_truncated = 0;
    merged.rows_failed = Vec::new();
    merged.shards = Vec::new();
    merged.min_norm = None;
    merged.max_norm = None;
    merged.task = None;
    merged.tool = Tool::current();
    if let Some(cfg) = merged.run_config.as_object_mut() {
        cfg.remove("shard_index");
        cfg.remove("dataset_files");
    }
    let mut tasks = Vec::new();
    let mut next_row = 0u64;
    for (path, m) in done {
        let t = m.task.clone().expect("checked above");
        let expected = partition::row_range(total, t.index, count);
        if t.input_rows_total != total
            || t.first_row_index != next_row
            || expected.start != next_row
        {
            return Err(bad_input!(
                "task {} covers rows {}..{} of {}, but rows {}..{} of {total} are its share: the tasks were not run over the same input",
                t.index,
                t.first_row_index,
                t.end_row_index,
                t.input_rows_total,
                expected.start,
                expected.end
            ));
        }
        if t.end_row_index != expected.end || m.input_rows != expected.end - expected.start {
            return Err(bad_input!(
                "task {} read {} rows, not the {} of rows {}..{}",
                t.index,
                m.input_rows,
                expected.end - expected.start,
                expected.start,
                expected.end
            ));
        }
        next_row = expected.end;
        for s in &m.shards {
            let inside = (s.first_row_index as u64) >= expected.start
                && (s.last_row_index as u64) < expected.end;
            if !inside {
                return Err(bad_input!(
                    "task {} shard {} holds rows {}..={}, outside its rows {}..{}",
                    t.index,
                    s.path,
                    s.first_row_index,
                    s.last_row_index,
                    expected.start,
                    expected.end
                ));
            }
            let file = root.join(&s.path);
            let bytes = std::fs::metadata(&file).map(|md| md.len()).ok();
            if bytes != Some(s.bytes) {
                return Err(bad_input!(
                    "task {} shard {} is missing or not {} bytes",
                    t.index,
                    file.display(),
                    s.bytes
                ));
            }
            let mut s = s.clone();
            s.shard_index = merged.shards.len() as u64;
            merged.min_norm = Some(merged.min_norm.map_or(s.min_norm, |x| x.min(s.min_norm)));
            merged.max_norm = Some(merged.max_norm.map_or(s.max_norm, |x| x.max(s.max_norm)));
            merged.shards.push(s);
        }
        merged.rows_total += m.rows_total;
        merged.input_rows += m.input_rows;
        merged.rows_skipped += m.rows_skipped;
        merged.rows_truncated += m.rows_truncated;
        for (k, v) in &m.skipped_reasons {
            *merged.skipped_reasons.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &m.turns_skipped {
            *merged.turns_skipped.entry(k.clone()).or_default() += v;
        }
        merged.rows_failed.extend(m.rows_failed.iter().cloned());
        if m.created_at < merged.created_at {
            merged.created_at = m.created_at.clone();
        }
        tasks.push(TaskSummary {
            index: t.index,
            manifest: path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string(),
            first_row_index: t.first_row_index,
            end_row_index: t.end_row_index,
            rows_total: m.rows_total,
            run_id: m.run_id.clone(),
            engine: t.engine.clone(),
        });
    }
    if next_row != total {
        return Err(bad_input!(
            "the tasks cover rows 0..{next_row}, not all {total} input rows"
        ));
    }
    merged.rows_failed_count = merged.rows_failed.len() as u64;
    merged.status = Status::Complete;
    Ok(MergedManifest {
        manifest: merged,
        num_tasks: count,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerun_commands_quote_what_the_shell_would_split() {
        let base = ["chatspace", "embed-hf", "--dataset", "my data.parquet"].map(String::from);
        assert_eq!(
            rerun_command(&base, 1, 3, true),
            "chatspace embed-hf --dataset 'my data.parquet' --num-shards 3 --shard-index 1 --resume"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    /// A complete task manifest with no shards, as JSON.
    fn task(index: u32, count: u32, total: u64, input_rows: Option<u64>) -> serde_json::Value {
        let r = partition::row_range(total, index, count);
        serde_json::json!({
            "dataset": "d", "subset": null, "split": "train", "model": "m",
            "source": {"kind": "local"}, "status": "complete", "rows_total": 0,
            "input_rows": input_rows.unwrap_or(r.end - r.start), "rows_skipped": 0,
            "skipped_reasons": {}, "rows_truncated": 0, "embedding_dim": 4,
            "rows_per_shard": 10, "shards": [], "created_at": format!("2026-01-0{}", 3 - index),
            "run_id": "r", "min_norm": null, "max_norm": null, "preprocessing": null,
            "model_source": {}, "model_info": {}, "run_config": {"shard_index": index},
            "tool": {"package": "chatspace", "version": "0"},
            "task": {"index": index, "count": count, "engine": "flags",
                     "first_row_index": r.start, "end_row_index": r.end,
                     "input_rows_total": total, "command": ["chatspace", "embed-hf"]},
        })
    }

    fn write_tasks(manifests: &[serde_json::Value]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let tasks = dir.path().join("indexes/m/d/tasks-train");
        for m in manifests {
            let t = &m["task"];
            let name = partition::folder_name(
                t["index"].as_u64().unwrap() as u32,
                t["count"].as_u64().unwrap() as u32,
            );
            std::fs::create_dir_all(tasks.join(&name)).unwrap();
            manifest::write_json_atomic(&tasks.join(name).join("manifest-train.json"), m).unwrap();
        }
        (dir, tasks)
    }

    #[test]
    fn complete_tasks_merge_and_mismatched_ones_are_named() {
        let (_dir, tasks) = write_tasks(&[
            task(0, 3, 10, None),
            task(1, 3, 10, None),
            task(2, 3, 10, None),
        ]);
        let path = merge(&MergeArgs {
            tasks_dir: tasks.clone(),
        })
        .unwrap();
        assert_eq!(path, tasks.parent().unwrap().join("manifest-train.json"));
        let merged: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(merged["input_rows"], 10);
        assert_eq!(merged["num_tasks"], 3);
        assert_eq!(merged["created_at"], "2026-01-01");
        assert!(merged.get("task").is_none() && merged["run_config"].get("shard_index").is_none());

        // A task run over another input (12 rows) than the others.
        let (_dir, tasks) = write_tasks(&[
            task(0, 3, 10, None),
            task(1, 3, 12, None),
            task(2, 3, 10, None),
        ]);
        let err = merge(&MergeArgs { tasks_dir: tasks })
            .unwrap_err()
            .to_string();
        assert!(err.contains("not run over the same input"), "{err}");

        // A task that read fewer rows than its range holds.
        let (_dir, tasks) = write_tasks(&[task(0, 2, 10, None), task(1, 2, 10, Some(4))]);
        let err = merge(&MergeArgs { tasks_dir: tasks })
            .unwrap_err()
            .to_string();
        assert_eq!(err, "task 1 read 4 rows, not the 5 of rows 5..10");
    }

    #[test]
    fn incomplete_tasks_fail_the_merge() {
        let mut failed = task(1, 3, 10, None);
        failed["status"] = "failed".into();
        let (_dir, tasks) = write_tasks(&[task(0, 3, 10, None), failed]);
        let err = merge(&MergeArgs {
            tasks_dir: tasks.clone(),
        })
        .unwrap_err()
        .to_string();
        assert_eq!(err, "merge: 2 of 3 tasks are not complete (listed above)");
        assert!(!tasks.parent().unwrap().join("manifest-train.json").exists());
    }

    #[test]
    fn the_output_root_is_four_levels_up() {
        assert_eq!(
            output_root(Path::new("out/indexes/m/d/tasks-train")),
            Path::new("out")
        );
    }
}
