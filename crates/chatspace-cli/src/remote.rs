//! Datasets and models named by Hugging Face Hub repo id: resolved through [`crate::hub`] into
//! the same [`Dataset`] a local folder gives, and into a local model folder (the snapshot
//! folder of the cache) that encoders read. Encoders never touch the network.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use crate::bad_input;
use crate::datafiles::{self, SelectError};
use crate::dataset::{self, Dataset, Fetch};
use crate::hub::{Hub, RepoKind, RepoRef, Snapshot};

/// The branch the Hub keeps its automatic Parquet conversion of a dataset on.
pub const CONVERTED_REVISION: &str = "refs/convert/parquet";

/// Files of a Hub snapshot, downloaded into the cache on first use.
struct HubFiles {
    hub: Hub,
    snapshot: Snapshot,
}

impl Fetch for HubFiles {
    fn fetch(&self, name: &str) -> Result<PathBuf> {
        self.hub
            .download(&self.snapshot, name)
            .map_err(|e| e.into_anyhow())
    }
}

fn snapshot(hub: &Hub, repo: &RepoRef) -> Result<Snapshot> {
    hub.snapshot(repo).map_err(|e| e.into_anyhow())
}

/// Resolves Hub dataset `id` at `revision` into the files of (`subset`, `split`). Only the
/// card and the first data file are fetched here; the rest stream in while the run goes.
pub fn resolve_dataset(
    hub: &Hub,
    id: &str,
    revision: &str,
    subset: Option<&str>,
    split: &str,
) -> Result<Dataset> {
    let repo = RepoRef::new(RepoKind::Dataset, id).at(revision);
    let snap = snapshot(hub, &repo)?;
    let configs = if snap.files.iter().any(|f| f == "README.md") {
        let readme = hub
            .download(&snap, "README.md")
            .map_err(|e| e.into_anyhow())?;
        let text = std::fs::read_to_string(&readme)?;
        datafiles::parse_card_configs(&text).map_err(|e| bad_input!("dataset {id}: {e}"))?
    } else {
        Vec::new()
    };
    let (files, snap) = match datafiles::select(&snap.files, &configs, subset, split) {
        Ok(files) => (files, snap),
        Err(SelectError::NoDataFiles) => {
            // No data files in the repo's own layout: the Hub's Parquet conversion, if any.
            let converted = RepoRef::new(RepoKind::Dataset, id).at(CONVERTED_REVISION);
            let conv = match hub.snapshot(&converted) {
                Ok(conv) => conv,
                Err(e) if e.is_bad_input() => {
                    return Err(bad_input!(
                        "dataset {id} {}, and it has no {CONVERTED_REVISION} branch",
                        SelectError::NoDataFiles
                    ));
                }
                Err(e) => return Err(e.into_anyhow()),
            };
            let files = datafiles::select_converted(&conv.files, subset, split)
                .map_err(|e| bad_input!("dataset {id} (its {CONVERTED_REVISION} branch) {e}"))?;
            tracing::info!("dataset {id} has no data files of its own; using {CONVERTED_REVISION}");
            (files, conv)
        }
        Err(e) => return Err(bad_input!("dataset {id} {e}")),
    };
    let fetch = Arc::new(HubFiles {
        hub: hub.clone(),
        snapshot: snap.clone(),
    });
    let first = fetch.fetch(&files[0])?;
    let (schema, _) = dataset::file_schema(&first)?;
    let mut name = id.replace('/', "__");
    if let Some(sub) = subset {
        name = format!("{name}__{}", sub.replace('/', "__"));
    }
    Ok(Dataset {
        file_rows: vec![None; files.len()],
        skip_first_rows: 0,
        files,
        fetch,
        schema: Arc::new(schema),
        name,
        rows: None,
        source: serde_json::json!({
            "kind": "hub",
            "endpoint": hub.config().endpoint,
            "repo": id,
            "revision": snap.repo.revision,
            "commit": snap.commit,
        }),
    })
}

/// Files a sentence-transformers model folder may hold that the encoder reads (besides the ONNX
/// file, its external weights, and the pooling configs that `modules.json` points to).
const MODEL_FILES: [&str; 8] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

/// Downloads what the encoder needs of Hub model `id` at `revision` and returns the local
/// snapshot folder and a description for the manifest.
pub fn fetch_model(
    hub: &Hub,
    id: &str,
    revision: &str,
    onnx_file: &str,
) -> Result<(PathBuf, serde_json::Value)> {
    let repo = RepoRef::new(RepoKind::Model, id).at(revision);
    let snap = snapshot(hub, &repo)?;
    let has = |f: &str| snap.files.iter().any(|x| x == f);
    let onnx = if has(onnx_file) {
        onnx_file.to_string()
    } else if onnx_file == "onnx/model.onnx" && has("model.onnx") {
        "model.onnx".to_string()
    } else {
        let others: Vec<&str> = snap
            .files
            .iter()
            .filter(|f| f.ends_with(".onnx"))
            .map(String::as_str)
            .collect();
        let hint = if others.is_empty() {
            format!(
                "it has no ONNX export; make one with `optimum-cli export onnx --model {id} --task feature-extraction <folder>` and pass --model <folder>"
            )
        } else {
            format!(
                "ONNX files there: {} (pick one with --onnx-file)",
                others.join(", ")
            )
        };
        return Err(bad_input!("model {id} has no {onnx_file}: {hint}"));
    };
    if !has("tokenizer.json") {
        return Err(bad_input!("model {id} has no tokenizer.json"));
    }
    let mut wanted: Vec<String> = MODEL_FILES
        .iter()
        .filter(|f| has(f))
        .map(|f| f.to_string())
        .collect();
    // Pooling configs of any module folder, and the ONNX file's external weights.
    let data_prefix = format!("{onnx}_data");
    let data_dot = format!("{onnx}.data");
    for f in &snap.files {
        let pooling = f.ends_with("_Pooling/config.json") && f.matches('/').count() == 1;
        if pooling || f.starts_with(&data_prefix) || f == &data_dot {
            wanted.push(f.clone());
        }
    }
    wanted.push(onnx.clone());
    wanted.sort();
    wanted.dedup();
    for f in &wanted {
        hub.download(&snap, f).map_err(|e| e.into_anyhow())?;
    }
    let source = serde_json::json!({
        "kind": "hub",
        "endpoint": hub.config().endpoint,
        "repo": id,
        "revision": snap.repo.revision,
        "commit": snap.commit,
        "onnx_file": onnx,
    });
    Ok((snap.dir(), source))
}
