//! `--resume`: continue a run from its manifest. Finished shards are verified (size and sha256)
//! and kept; a shard that fails verification, a partial shard (flushed by an interrupted run),
//! and everything after them are removed and written again, so a resumed run ends with the same
//! rows and shard boundaries as an uninterrupted one. A resumed run refuses to start when its
//! settings differ from the original run's, listing the differences.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::bad_input;
use crate::manifest::{Manifest, Status};
use crate::shard::{ShardRecord, hex};

/// A place in the output order: an input row and, in per-turn modes, a turn of it (0 in other
/// modes, where a row gives at most one output row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The input row (`row_index`).
    pub row: i64,
    /// The turn (`turn_index`), or 0.
    pub turn: i32,
}

/// What a resumed run starts from.
#[derive(Debug)]
pub struct Resume {
    /// The original manifest.
    pub previous: Manifest,
    /// The shards kept, in order.
    pub kept: Vec<ShardRecord>,
    /// The last output row in the kept shards (`None` when none is kept): everything up to it
    /// is skipped. In per-turn modes a shard may end inside a row's turns, so this is a turn.
    pub last_kept: Option<Position>,
}

impl Resume {
    /// Whether the output row at `pos` is in a kept shard.
    pub fn is_kept(&self, pos: Position) -> bool {
        self.last_kept.is_some_and(|last| pos <= last)
    }
}

/// The settings that must match for a run to be resumed, as `(name, value)`; read from a
/// manifest's `run_config`, `source` and `model_source` (or built the same way for a new run).
pub fn settings(run_config: &Value, source: &Value, model_source: &Value) -> Vec<(String, Value)> {
    const KEYS: [&str; 23] = [
        "dataset",
        "subset",
        "split",
        "revision",
        "text_field",
        "extract",
        "filter_role",
        "system_prompt",
        "model",
        "model_revision",
        "onnx_file",
        "rows_per_shard",
        "max_rows",
        "pooling",
        "normalize",
        "no_normalize",
        "prompt_name",
        "prompt",
        "truncate_dim",
        "embedding_dtype",
        "max_seq_length",
        "num_shards",
        "shard_index",
    ];
    // Manifests written before a setting existed ran with its default.
    let default = |k: &str| match k {
        "filter_role" | "pooling" => Value::Array(Vec::new()),
        "normalize" | "no_normalize" => Value::Bool(false),
        "embedding_dtype" => Value::String("float32".into()),
        "system_prompt" => Value::String("keep".into()),
        _ => Value::Null,
    };
    let mut out: Vec<(String, Value)> = KEYS
        .iter()
        .map(|k| {
            let v = run_config.get(*k).cloned().unwrap_or_else(|| default(k));
            (k.to_string(), v)
        })
        .collect();
    out.push((
        "dataset commit".into(),
        source.get("commit").cloned().unwrap_or(Value::Null),
    ));
    out.push((
        "model commit".into(),
        model_source.get("commit").cloned().unwrap_or(Value::Null),
    ));
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sha256 and size of a file, or `None` if it cannot be read.
fn digest(path: &Path) -> Option<(u64, String)> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hash = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hash).ok()?;
    Some((bytes, hex(&hash.finalize())))
}

/// Reads the manifest at `manifest_path`, checks that `now` (this run's [`settings`]) matches
/// it, verifies its shards under `root`, and removes every shard file in `shard_dir` that is not
/// kept (including temporaries). `Ok(None)` when the run is already complete.
pub fn prepare(
    manifest_path: &Path,
    root: &Path,
    shard_dir: &Path,
    now: &[(String, Value)],
) -> Result<Option<Resume>> {
    let bytes = std::fs::read(manifest_path).map_err(|e| {
        bad_input!(
            "cannot resume: no manifest at {} ({e}); run without --resume to start",
            manifest_path.display()
        )
    })?;
    let previous: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        bad_input!(
            "cannot resume: manifest {} is not readable: {e}",
            manifest_path.display()
        )
    })?;
    let before = settings(
        &previous.run_config,
        &previous.source,
        &previous.model_source,
    );
    let differences: Vec<String> = before
        .iter()
        .zip(now)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((k, a), (_, b))| format!("{k} {} → {}", show(a), show(b)))
        .collect();
    if !differences.is_empty() {
        return Err(bad_input!(
            "cannot resume: settings differ from the run in {}: {}; pass the same settings, or --overwrite to start over",
            manifest_path.display(),
            differences.join(", ")
        ));
    }
    if previous.status == Status::Complete {
        return Ok(None);
    }
    let mut kept = Vec::new();
    for shard in &previous.shards {
        let ok = !shard.partial
            && shard.rows == previous.rows_per_shard
            && digest(&root.join(&shard.path)) == Some((shard.bytes, shard.sha256.clone()));
        if !ok {
            tracing::warn!(shard = %shard.path, "shard is partial or does not match the manifest; writing it again");
            break;
        }
        kept.push(shard.clone());
    }
    let keep: Vec<String> = kept
        .iter()
        .filter_map(|s| Path::new(&s.path).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    for entry in std::fs::read_dir(shard_dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("shard-") && !keep.contains(&name) {
            std::fs::remove_file(entry.path())
                .map_err(|e| bad_input!("cannot remove {}: {e}", entry.path().display()))?;
        }
    }
    let last_kept = kept.last().map(|s| Position {
        row: s.last_row_index,
        turn: s.last_turn_index.unwrap_or(0),
    });
    Ok(Some(Resume {
        previous,
        kept,
        last_kept,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_are_listed() {
        let a = settings(
            &json!({"rows_per_shard": 1000, "model": "m"}),
            &json!({}),
            &json!({}),
        );
        let b = settings(
            &json!({"rows_per_shard": 500, "model": "m"}),
            &json!({}),
            &json!({}),
        );
        let diff: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).collect();
        assert_eq!(diff.len(), 1);
        assert_eq!(diff[0].0.0, "rows_per_shard");
    }

    #[test]
    fn settings_added_later_default_for_old_manifests() {
        let old = settings(
            &json!({"extract": "first-assistant"}),
            &json!({}),
            &json!({}),
        );
        let new = settings(
            &json!({"extract": "first-assistant", "filter_role": [], "system_prompt": "keep",
                    "pooling": [], "normalize": false, "no_normalize": false,
                    "embedding_dtype": "float32", "truncate_dim": null}),
            &json!({}),
            &json!({}),
        );
        assert_eq!(old, new);
        let other = settings(
            &json!({"extract": "transcript", "filter_role": ["user"], "system_prompt": "drop",
                    "no_normalize": true, "truncate_dim": 64}),
            &json!({}),
            &json!({}),
        );
        let diff: Vec<&str> = new
            .iter()
            .zip(&other)
            .filter(|(x, y)| x != y)
            .map(|(x, _)| x.0.as_str())
            .collect();
        assert_eq!(
            diff,
            vec![
                "extract",
                "filter_role",
                "system_prompt",
                "no_normalize",
                "truncate_dim"
            ]
        );
    }

    #[test]
    fn positions_order_rows_then_turns() {
        let r = Resume {
            previous: serde_json::from_value(json!({
                "dataset": "d", "subset": null, "split": "train", "model": "m", "source": {},
                "status": "interrupted", "rows_total": 0, "rows_skipped": 0,
                "skipped_reasons": {}, "rows_truncated": 0, "embedding_dim": 1,
                "rows_per_shard": 1, "shards": [], "created_at": "", "run_id": "",
                "min_norm": null, "max_norm": null, "preprocessing": null, "model_source": {},
                "model_info": {}, "run_config": {}, "tool": {"package": "chatspace", "version": "0"}
            }))
            .unwrap(),
            kept: Vec::new(),
            last_kept: Some(Position { row: 5, turn: 2 }),
        };
        let at = |row, turn| r.is_kept(Position { row, turn });
        assert!(at(4, 9) && at(5, 0) && at(5, 2));
        assert!(!at(5, 3) && !at(6, 0));
        let none = Resume {
            last_kept: None,
            ..r
        };
        assert!(!none.is_kept(Position { row: 0, turn: 0 }));
    }
}
