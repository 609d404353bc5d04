//! The run's manifest (`manifest-<split>.json`: what was embedded and where every shard is) and
//! run summary (`run-<split>.json`: timings and counts), written atomically.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::shard::{ShardRecord, sync_dir};

/// The current time as RFC 3339 in UTC with microseconds, e.g. `2026-01-02T03:04:05.123456+00:00`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

/// The default run id: the start time without `-` and `:` (as the original tool makes it).
pub fn run_id_from(created_at: &str) -> String {
    created_at.replace(['-', ':'], "")
}

/// Which software wrote the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `chatspace`.
    pub package: String,
    /// The chatspace version.
    pub version: String,
}

impl Tool {
    /// This build of chatspace.
    pub fn current() -> Self {
        Self {
            package: "chatspace".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// State of a run as the manifest records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Shards are still being written.
    Running,
    /// Every input row was handled.
    Complete,
    /// The run stopped on an error; the listed shards are complete and valid.
    Failed,
    /// The run was stopped by a signal; the listed shards are complete and valid.
    Interrupted,
}

/// A row that could not be embedded and was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRow {
    /// The row's position in the input.
    pub row_index: i64,
    /// Per-turn modes: the turn's position in the row's conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_index: Option<i32>,
    /// Why, on one line.
    pub reason: String,
}

/// What a task of a split run (`--num-shards`) covers, and how it was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task's index, from 0.
    pub index: u32,
    /// The number of tasks.
    pub count: u32,
    /// Where the index came from: `flags`, `slurm` or `kubernetes`.
    pub engine: String,
    /// The first input row of the task's range.
    pub first_row_index: u64,
    /// One past the last input row of the task's range.
    pub end_row_index: u64,
    /// The rows of the whole input (capped by `--max-rows`) that the tasks share.
    pub input_rows_total: u64,
    /// The command line, without `--num-shards`, `--shard-index`, `--resume` and `--overwrite`.
    pub command: Vec<String>,
}

/// `manifest-<split>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The dataset as given.
    pub dataset: String,
    /// The subset, if any.
    pub subset: Option<String>,
    /// The split.
    pub split: String,
    /// The model as given.
    pub model: String,
    /// Where the data came from: `{"kind": "local"}`, or the Hub repo, revision and commit.
    pub source: serde_json::Value,
    /// Whether the run is still going, complete or failed.
    pub status: Status,
    /// Rows embedded and written (output rows: in per-turn modes, one per turn).
    pub rows_total: u64,
    /// Input rows read (with `--max-rows`, at most that many), when the run ended.
    #[serde(default)]
    pub input_rows: u64,
    /// Input rows that had no text to embed.
    pub rows_skipped: u64,
    /// `rows_skipped` by reason.
    pub skipped_reasons: BTreeMap<String, u64>,
    /// Per-turn modes: turns that were selected but had no text (null or blank), by reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub turns_skipped: BTreeMap<String, u64>,
    /// Rows whose text was cut to the model's token limit.
    pub rows_truncated: u64,
    /// Rows skipped because they failed even when sent alone (they crashed or hung an encoder,
    /// or it answered an error); not in any shard.
    #[serde(default)]
    pub rows_failed_count: u64,
    /// The failed rows, in input order.
    #[serde(default)]
    pub rows_failed: Vec<FailedRow>,
    /// Embedding dimension.
    pub embedding_dim: u32,
    /// Rows per shard.
    pub rows_per_shard: u64,
    /// The shards, in order.
    pub shards: Vec<ShardRecord>,
    /// When the run started.
    pub created_at: String,
    /// The run's id.
    pub run_id: String,
    /// Smallest embedding norm over all shards.
    pub min_norm: Option<f32>,
    /// Largest embedding norm over all shards.
    pub max_norm: Option<f32>,
    /// What was done to rows before embedding.
    pub preprocessing: Option<String>,
    /// Where the model came from: a local folder, or the Hub repo, revision and commit.
    pub model_source: serde_json::Value,
    /// What the encoders reported about the model.
    pub model_info: serde_json::Value,
    /// The settings of the run.
    pub run_config: serde_json::Value,
    /// The software that wrote this.
    pub tool: Tool,
    /// With `--num-shards`: the task this manifest is of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRecord>,
}

/// `run-<split>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The dataset as given.
    pub dataset: String,
    /// The subset, if any.
    pub subset: Option<String>,
    /// The split.
    pub split: String,
    /// The model as given.
    pub model: String,
    /// When the run started.
    pub created_at: String,
    /// When it ended.
    pub finished_at: String,
    /// The run's id.
    pub run_id: String,
    /// Final status.
    pub status: Status,
    /// Wall time in seconds.
    pub duration_seconds: f64,
    /// Rows embedded per second of wall time.
    pub rows_per_second: f64,
    /// Input rows read.
    pub rows_read: u64,
    /// Rows embedded.
    pub rows_total: u64,
    /// Rows without text.
    pub rows_skipped: u64,
    /// Rows cut to the token limit.
    pub rows_truncated: u64,
    /// Rows that failed and were skipped (listed in the manifest).
    #[serde(default)]
    pub rows_failed: u64,
    /// Real tokens embedded.
    pub tokens: u64,
    /// Tokens processed including padding.
    pub padded_tokens: u64,
    /// Seconds from the start of the run (encoders starting) to the first row written.
    pub seconds_to_first_row: Option<f64>,
    /// Share of processed tokens that were padding.
    pub padding_ratio: f64,
    /// Shards written.
    pub num_shards: u64,
    /// Embedding dimension.
    pub embedding_dim: u32,
    /// Encoder processes used.
    pub encoders: u32,
    /// Times each encoder slot's process was restarted after a failure.
    #[serde(default)]
    pub encoder_restarts: Vec<u32>,
    /// Path of the manifest.
    pub manifest_path: String,
    /// Smallest embedding norm.
    pub min_norm: Option<f32>,
    /// Largest embedding norm.
    pub max_norm: Option<f32>,
    /// chatspace version.
    pub tool_version: String,
}

/// Writes `value` as pretty JSON to `path` through a synced temporary file and a rename, so
/// readers never see a partial file.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut body = serde_json::to_vec_pretty(value)?;
    body.push(b'\n');
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_id_drops_separators() {
        assert_eq!(
            run_id_from("2025-01-02T03:04:05.123456+00:00"),
            "20250102T030405.123456+0000"
        );
    }

    #[test]
    fn atomic_write_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        write_json_atomic(&path, &serde_json::json!({"a": 1})).unwrap();
        write_json_atomic(&path, &serde_json::json!({"a": 2})).unwrap();
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back["a"], 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
