//! Resolving flags into a [`RunPlan`]: finds the dataset files, checks the text field and the
//! model folder, locates the encoder executable and prepares the output folders, all before
//! any encoder is started, so bad input fails fast with one clear line.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::args::EmbedArgs;
use crate::bad_input;
use crate::dataset::{self, Dataset};
use crate::devices;
use crate::extract::Extractor;
use crate::hub::{Hub, HubConfig, looks_like_repo_id};
use crate::manifest::{self, TaskRecord};
use crate::partition::{self, TaskSpec};
use crate::remote;
use crate::resume::{self, Resume};

/// Everything a run needs, checked.
#[derive(Debug)]
pub struct RunPlan {
    /// The flags as given.
    pub args: EmbedArgs,
    /// The `--device` each encoder gets (`cpu`, `cuda:K`): one entry per encoder.
    pub devices: Vec<chatspace_proto::Device>,
    /// The dataset's files and schema.
    pub dataset: Dataset,
    /// How texts are taken from the text field (checked against the dataset's schema).
    pub extractor: Extractor,
    /// The model folder (for a Hub model, its snapshot folder in the cache).
    pub model_dir: PathBuf,
    /// The ONNX file inside it.
    pub onnx_file: String,
    /// Where the model came from, for the manifest.
    pub model_source: serde_json::Value,
    /// The encoder executable.
    pub encoder_bin: PathBuf,
    /// The output root.
    pub root: PathBuf,
    /// Where shards go.
    pub shard_dir: PathBuf,
    /// Where the manifest goes.
    pub manifest_path: PathBuf,
    /// Where the run summary goes.
    pub run_path: PathBuf,
    /// When the run started (RFC 3339).
    pub created_at: String,
    /// The run id.
    pub run_id: String,
    /// With `--resume`: the shards kept and where to go on from.
    pub resume: Option<Resume>,
    /// With `--resume`: the run was already complete; nothing to do.
    pub complete: bool,
    /// The input rows this run embeds (positions in the whole input): all of them (up to
    /// `--max-rows`; the end is `u64::MAX` when unknown), or this task's range.
    pub rows: Range<u64>,
    /// The input position of the first row of `dataset.files` (not 0 when a task skips files).
    pub first_file_row: u64,
    /// With `--num-shards`: which task this is and what it covers.
    pub task: Option<TaskRecord>,
}

/// The command line that started this process, without the flags that pick a task or what to
/// do with earlier output (`--num-shards`, `--shard-index`, `--resume`, `--overwrite`), for
/// `chatspace merge` to show how to re-run a task.
pub fn base_command(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--num-shards" | "--shard-index" => {
                it.next();
            }
            "--resume" | "--overwrite" => {}
            _ if a.starts_with("--num-shards=") || a.starts_with("--shard-index=") => {}
            _ => out.push(a.clone()),
        }
    }
    out
}

/// The task this run is, from the flags (which `main` filled from the job engine's
/// environment).
fn task_spec(args: &EmbedArgs) -> Option<TaskSpec> {
    match (args.num_shards, args.shard_index) {
        (Some(count), Some(index)) => Some(TaskSpec {
            index,
            count,
            engine: args.task_engine.unwrap_or("flags"),
        }),
        _ => None,
    }
}

/// Cuts `dataset` down to the files task `task` reads; returns its rows, the position of the
/// first file's first row, and the task's record.
fn split_for_task(
    dataset: &mut Dataset,
    args: &EmbedArgs,
    task: TaskSpec,
) -> Result<(Range<u64>, u64, TaskRecord)> {
    let counts: Option<Vec<u64>> = dataset.file_rows.iter().copied().collect();
    let Some(counts) = counts else {
        let unknown = dataset
            .files
            .iter()
            .zip(&dataset.file_rows)
            .find(|(_, n)| n.is_none())
            .map(|(f, _)| f.as_str())
            .unwrap_or("?");
        return Err(bad_input!(
            "--num-shards needs every data file's row count before reading (Parquet footers, JSON arrays), but {unknown} does not say it; convert JSON Lines to Parquet, or run one task"
        ));
    };
    let all: u64 = counts.iter().sum();
    let total = args.max_rows.map_or(all, |m| all.min(m));
    let rows = partition::row_range(total, task.index, task.count);
    let (keep, mut first_file_row) = partition::files_for(&counts, &rows);
    dataset.files = keep.iter().map(|&i| dataset.files[i].clone()).collect();
    dataset.file_rows = keep.iter().map(|&i| Some(counts[i])).collect();
    // Inside a Parquet file, the rows before the range are skipped without being decoded.
    if dataset
        .files
        .first()
        .is_some_and(|f| dataset::is_parquet_name(f))
    {
        dataset.skip_first_rows = rows.start - first_file_row;
        first_file_row = rows.start;
    }
    let record = TaskRecord {
        index: task.index,
        count: task.count,
        engine: task.engine.to_string(),
        first_row_index: rows.start,
        end_row_index: rows.end,
        input_rows_total: total,
        command: base_command(&std::env::args().collect::<Vec<_>>()),
    };
    Ok((rows, first_file_row, record))
}

/// The run's settings as JSON, the way the manifest's `run_config` records them: the flags,
/// with the extraction settings as they apply (the mode, the text field chosen, the system
/// prompt choice) and the number of encoders used, defaulted or not.
pub fn comparable_config(
    args: &EmbedArgs,
    extractor: &Extractor,
    encoders: usize,
) -> Result<serde_json::Value> {
    let mut cfg = serde_json::to_value(args)?;
    if let Some(obj) = cfg.as_object_mut() {
        obj.insert("extract".into(), serde_json::to_value(args.extract_mode())?);
        obj.insert("text_field".into(), extractor.field().into());
        obj.insert(
            "system_prompt".into(),
            serde_json::to_value(args.system_prompt())?,
        );
        obj.insert("encoders".into(), encoders.into());
        // What the run used, defaults for the device included.
        let (rows, tokens) = args.batch_limits();
        obj.insert("batch_size".into(), rows.into());
        obj.insert("tokens_per_batch".into(), tokens.into());
        obj.insert("unit_rows".into(), args.unit_rows().into());
    }
    Ok(cfg)
}

impl EmbedArgs {
    /// Rows per unit of work: `--unit-rows`, else the default for `--device`.
    pub fn unit_rows(&self) -> u32 {
        self.unit_rows
            .unwrap_or(self.device.kind().unit_rows_default())
    }
}

/// A name made safe for one path component, as the original tool does: `/` becomes `__`.
pub fn component(name: &str) -> String {
    name.replace('/', "__")
}

/// Checks that `dir` is a usable model folder and returns the name used in output paths.
pub fn check_model(model: &str, onnx_file: &str) -> Result<(PathBuf, String)> {
    let dir = Path::new(model);
    if !dir.is_dir() {
        return Err(bad_input!("model folder {model} does not exist"));
    }
    let onnx = dir.join(onnx_file);
    let fallback = dir.join("model.onnx");
    let found = onnx.is_file() || (onnx_file == "onnx/model.onnx" && fallback.is_file());
    if !found {
        return Err(bad_input!(
            "model folder {model} has no {onnx_file}; export one with `optimum-cli export onnx --model <model> <folder>`"
        ));
    }
    if !dir.join("tokenizer.json").is_file() {
        return Err(bad_input!("model folder {model} has no tokenizer.json"));
    }
    let abs = dir.canonicalize()?;
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    Ok((abs, name))
}

fn encoder_bin(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(bad_input!(
                "encoder executable {} does not exist",
                p.display()
            ))
        };
    }
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name(format!("chatspace-encoder{}", std::env::consts::EXE_SUFFIX));
    if sibling.is_file() {
        Ok(sibling)
    } else {
        Err(bad_input!(
            "chatspace-encoder not found next to {} (build it with `cargo build --release`)",
            exe.display()
        ))
    }
}

/// Creates `dir` (and parents) or says which output folder cannot be written.
fn make_dir(dir: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| bad_input!("output root {} cannot be written: {e}", root.display()))
}

/// Removes what an earlier run left in the output folders (with `--overwrite`), or refuses.
fn clear_previous(shard_dir: &Path, manifest: &Path, overwrite: bool) -> Result<()> {
    let mut old: Vec<PathBuf> = std::fs::read_dir(shard_dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("shard-") && (n.ends_with(".parquet") || n.ends_with(".parquet.tmp"))
            })
        })
        .collect();
    if manifest.exists() {
        old.push(manifest.to_path_buf());
    }
    if old.is_empty() {
        return Ok(());
    }
    if !overwrite {
        return Err(bad_input!(
            "output folder {} already holds shards of an earlier run; pass --overwrite to replace them",
            shard_dir.display()
        ));
    }
    for p in old {
        std::fs::remove_file(&p).map_err(|e| bad_input!("cannot remove {}: {e}", p.display()))?;
    }
    Ok(())
}

impl RunPlan {
    /// Checks everything the flags name and prepares the output folders.
    pub fn resolve(args: EmbedArgs) -> Result<RunPlan> {
        let mut hub: Option<Hub> = None;
        let mut hub = || -> Result<Hub> {
            if hub.is_none() {
                hub = Some(Hub::new(
                    HubConfig::from_env().map_err(|e| e.into_anyhow())?,
                ));
            }
            Ok(hub.clone().expect("just set"))
        };
        let subset = args.subset.as_deref();
        let mut dataset = match dataset::resolve_local(&args.dataset, subset, &args.split)? {
            Some(ds) => ds,
            None if looks_like_repo_id(&args.dataset) => remote::resolve_dataset(
                &hub()?,
                &args.dataset,
                &args.revision,
                subset,
                &args.split,
            )?,
            None => return Err(bad_input!("dataset {} does not exist", args.dataset)),
        };
        let extractor = Extractor::new(&dataset.schema, &args)?;
        let task = task_spec(&args);
        let (rows, first_file_row, task_record) = match task {
            Some(t) => {
                let (rows, first, record) = split_for_task(&mut dataset, &args, t)?;
                (rows, first, Some(record))
            }
            None => {
                let end = args.max_rows.unwrap_or(u64::MAX);
                (0..dataset.rows.map_or(end, |n| n.min(end)), 0, None)
            }
        };
        let model_path = Path::new(&args.model);
        let (model_dir, model_name, onnx_file, model_source) = if model_path.exists()
            || !looks_like_repo_id(&args.model)
        {
            let (dir, name) = check_model(&args.model, &args.onnx_file)?;
            let source = serde_json::json!({"kind": "local", "path": dir});
            (dir, name, args.onnx_file.clone(), source)
        } else {
            let (dir, source) =
                remote::fetch_model(&hub()?, &args.model, &args.model_revision, &args.onnx_file)?;
            let onnx = source["onnx_file"]
                .as_str()
                .unwrap_or(&args.onnx_file)
                .to_string();
            (dir, args.model.clone(), onnx, source)
        };
        let encoder_bin = encoder_bin(args.encoder_bin.as_deref())?;
        let devices = devices::encoder_devices(&args.device, args.encoders, args.threads)?;

        let root = args.output_root.clone();
        if root.exists() && !root.is_dir() {
            return Err(bad_input!(
                "output root {} cannot be written: it is not a folder",
                root.display()
            ));
        }
        let model_c = component(&model_name);
        let split_c = component(&args.split);
        let mut shard_dir = root
            .join("embeddings")
            .join(&model_c)
            .join(&dataset.name)
            .join(&split_c);
        let mut index_dir = root.join("indexes").join(&model_c).join(&dataset.name);
        if let Some(t) = task {
            // Each task writes its own shards and manifest; `chatspace merge` combines them.
            shard_dir.push(t.folder());
            index_dir.push(format!("tasks-{split_c}"));
            index_dir.push(t.folder());
        }
        make_dir(&shard_dir, &root)?;
        make_dir(&index_dir, &root)?;
        let manifest_path = index_dir.join(format!("manifest-{split_c}.json"));
        let run_path = index_dir.join(format!("run-{split_c}.json"));
        let mut resume = None;
        let mut complete = false;
        if args.resume {
            let now = resume::settings(
                &comparable_config(&args, &extractor, devices.len())?,
                &dataset.source,
                &model_source,
            );
            match resume::prepare(&manifest_path, &root, &shard_dir, &now)? {
                Some(r) => resume = Some(r),
                None => complete = true,
            }
        } else {
            clear_previous(&shard_dir, &manifest_path, args.overwrite)?;
        }

        let (created_at, run_id) = match &resume {
            // Resumed rows carry the original run's id, as if the run had never stopped.
            Some(r) => (r.previous.created_at.clone(), r.previous.run_id.clone()),
            None => {
                let created_at = manifest::now_rfc3339();
                let run_id = args
                    .run_id
                    .clone()
                    .unwrap_or_else(|| manifest::run_id_from(&created_at));
                (created_at, run_id)
            }
        };
        Ok(RunPlan {
            args,
            devices,
            dataset,
            extractor,
            model_dir,
            onnx_file,
            model_source,
            encoder_bin,
            root,
            shard_dir,
            manifest_path,
            run_path,
            created_at,
            run_id,
            resume,
            complete,
            rows,
            first_file_row,
            task: task_record,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_without_onnx_or_tokenizer_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let err = check_model(d, "onnx/model.onnx").unwrap_err();
        assert!(err.to_string().contains("has no onnx/model.onnx"), "{err}");
        std::fs::create_dir(dir.path().join("onnx")).unwrap();
        std::fs::write(dir.path().join("onnx/model.onnx"), b"x").unwrap();
        let err = check_model(d, "onnx/model.onnx").unwrap_err();
        assert!(err.to_string().ends_with("has no tokenizer.json"), "{err}");
    }

    #[test]
    fn base_command_drops_the_task_and_output_flags() {
        let argv: Vec<String> = [
            "chatspace",
            "embed-hf",
            "--num-shards",
            "3",
            "--shard-index=1",
            "--resume",
            "--dataset",
            "d.parquet",
            "--overwrite",
            "--num-shards=3",
            "--shard-index",
            "2",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            base_command(&argv),
            ["chatspace", "embed-hf", "--dataset", "d.parquet"]
        );
    }

    #[test]
    fn names_become_one_component() {
        assert_eq!(component("org/name"), "org__name");
    }
}
