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

/// What a resumed run starts from.
#[derive(Debug)]
pub struct Resume {
    /// The original manifest.
    pub previous: Manifest,
    /// The shards kept, in order.
    pub kept: Vec<ShardRecord>,
    /// The first `row_index` not in a kept shard.
    pub next_row: i64,
}

/// The settings that must match for a run to be resumed, as `(name, value)`; read from a
/// manifest's `run_config`, `source` and `model_source` (or built the same way for a new run).
pub fn settings(run_config: &Value, source: &Value, model_source: &Value) -> Vec<(String, Value)> {
    const KEYS: [&str; 11] = [
        "dataset",
        "subset",
        "split",
        "revision",
        "text_field",
        "extract",
        "model",
        "model_revision",
        "onnx_file",
        "rows_per_shard",
        "max_rows",
    ];
    let mut out: Vec<(String, Value)> = KEYS
        .iter()
        .map(|k| {
            (
                k.to_string(),
                run_config.get(*k).cloned().unwrap_or(Value::Null),
            )
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
    let next_row = kept.last().map_or(0, |s| s.last_row_index + 1);
    Ok(Some(Resume {
        previous,
        kept,
        next_row,
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
}
