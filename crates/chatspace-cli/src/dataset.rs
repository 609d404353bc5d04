//! Local datasets: which files make up a split, their common schema, and reading them as Arrow
//! record batches in a fixed order.
//!
//! `--dataset` may name one file, a folder or a glob. In a folder, `--subset` picks a sub-folder
//! and `--split` picks the files whose path has a folder named after the split or whose name
//! starts with `<split>-`, `<split>_` or `<split>.` (so `data/train-00000-of-00002.parquet` and
//! `train/part-0.parquet` both belong to `train`); a folder with no split names at all is
//! all `train`. Formats: Parquet, JSON Lines (`.jsonl`, and `.json` holding one object per
//! line), and `.json` holding one array of objects.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::json::ReaderBuilder;
use arrow::json::reader::infer_json_schema_from_seekable;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::bad_input;

/// Rows per record batch read from a file.
pub const READ_BATCH_ROWS: usize = 1024;

/// A data file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// One JSON object per line.
    JsonLines,
    /// One JSON array of objects.
    JsonArray,
}

/// One file of the dataset.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Where it is.
    pub path: PathBuf,
    /// How to read it.
    pub format: Format,
    /// Row count when known without reading the data (Parquet metadata).
    pub rows: Option<u64>,
}

/// The files of one split, in reading order, and the schema they share.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The files, sorted by path.
    pub files: Vec<DataFile>,
    /// Their common Arrow schema.
    pub schema: SchemaRef,
    /// The name used in output folders: the file or folder stem.
    pub name: String,
}

impl Dataset {
    /// Total rows when every file's count is known.
    pub fn rows(&self) -> Option<u64> {
        self.files.iter().map(|f| f.rows).sum()
    }
}

fn format_of(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    if name.ends_with(".parquet") {
        Some(Format::Parquet)
    } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Some(Format::JsonLines)
    } else if name.ends_with(".json") {
        Some(Format::JsonArray) // refined by sniffing the first byte
    } else {
        None
    }
}

fn data_files_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            data_files_under(&path, out)?;
        } else if format_of(&path).is_some() {
            out.push(path);
        }
    }
    Ok(())
}

/// The split a file belongs to by its path, if its path names one.
fn split_of(rel: &Path) -> Option<String> {
    let name = rel.file_name()?.to_str()?;
    for sep in ['-', '_', '.'] {
        if let Some((head, _)) = name.split_once(sep)
            && !head.is_empty()
            && rel.components().count() >= 1
            && matches!(
                head,
                "train" | "test" | "validation" | "valid" | "dev" | "eval"
            )
        {
            return Some(head.to_string());
        }
    }
    let parent = rel.parent()?.file_name()?.to_str()?;
    matches!(
        parent,
        "train" | "test" | "validation" | "valid" | "dev" | "eval"
    )
    .then(|| parent.to_string())
}

fn belongs_to_split(rel: &Path, split: &str) -> bool {
    let in_folder = rel
        .parent()
        .is_some_and(|p| p.components().any(|c| c.as_os_str() == split));
    let by_name = rel.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.strip_prefix(split)
            .is_some_and(|rest| rest.starts_with(['-', '_', '.']))
    });
    in_folder || by_name
}

fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    for ext in [".parquet", ".jsonl", ".ndjson", ".json"] {
        if let Some(s) = name.strip_suffix(ext) {
            return s.to_string();
        }
    }
    name
}

fn files_in_folder(dir: &Path, subset: Option<&str>, split: &str) -> Result<Vec<PathBuf>> {
    let base = match subset {
        None => dir.to_path_buf(),
        Some(sub) => {
            let candidates = [dir.join(sub), dir.join("data").join(sub)];
            match candidates.iter().find(|p| p.is_dir()) {
                Some(p) => p.clone(),
                None => {
                    let mut subsets: Vec<String> = std::fs::read_dir(dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|e| e.path().is_dir())
                        .filter_map(|e| e.file_name().to_str().map(str::to_string))
                        .filter(|n| !n.starts_with('.'))
                        .collect();
                    subsets.sort();
                    return Err(bad_input!(
                        "dataset {} has no subset `{sub}`; folders there: {}",
                        dir.display(),
                        list_or_none(&subsets)
                    ));
                }
            }
        }
    };
    let mut all = Vec::new();
    data_files_under(&base, &mut all)?;
    all.sort();
    if all.is_empty() {
        return Err(bad_input!(
            "dataset folder {} holds no .parquet, .jsonl or .json files",
            base.display()
        ));
    }
    let rel = |p: &PathBuf| p.strip_prefix(&base).unwrap_or(p).to_path_buf();
    let chosen: Vec<PathBuf> = all
        .iter()
        .filter(|p| belongs_to_split(&rel(p), split))
        .cloned()
        .collect();
    if !chosen.is_empty() {
        return Ok(chosen);
    }
    let mut splits: Vec<String> = all.iter().filter_map(|p| split_of(&rel(p))).collect();
    splits.sort();
    splits.dedup();
    if splits.is_empty() && split == "train" {
        return Ok(all);
    }
    if splits.is_empty() {
        splits.push("train".into());
    }
    Err(bad_input!(
        "dataset {} has no split `{split}`; splits there: {}",
        base.display(),
        splits.join(", ")
    ))
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| bad_input!("cannot open dataset file {}: {e}", path.display()))
}

/// Sniffs whether a `.json` file is JSON Lines (first non-blank byte `{`) or an array.
fn sniff_json(path: &Path) -> Result<Format> {
    let mut reader = BufReader::new(open(path)?);
    loop {
        let buf = reader
            .fill_buf()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if buf.is_empty() {
            return Ok(Format::JsonLines);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                return Ok(if buf[i] == b'[' {
                    Format::JsonArray
                } else {
                    Format::JsonLines
                });
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

fn read_json_array(path: &Path) -> Result<Vec<serde_json::Value>> {
    let mut text = String::new();
    open(path)?
        .read_to_string(&mut text)
        .map_err(|e| bad_input!("cannot read dataset file {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| bad_input!("dataset file {} is not valid JSON: {e}", path.display()))
}

fn file_schema(file: &DataFile) -> Result<(Schema, Option<u64>)> {
    let path = &file.path;
    match file.format {
        Format::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(open(path)?)
                .map_err(|e| bad_input!("cannot read Parquet file {}: {e}", path.display()))?;
            let rows = builder.metadata().file_metadata().num_rows() as u64;
            Ok((builder.schema().as_ref().clone(), Some(rows)))
        }
        Format::JsonLines => {
            let mut reader = BufReader::new(open(path)?);
            let (schema, _) = infer_json_schema_from_seekable(&mut reader, None).map_err(|e| {
                bad_input!(
                    "dataset file {} is not valid JSON Lines: {e}",
                    path.display()
                )
            })?;
            Ok((schema, None))
        }
        Format::JsonArray => {
            let values = read_json_array(path)?;
            let schema = arrow::json::reader::infer_json_schema_from_iterator(
                values.iter().map(Ok::<_, arrow::error::ArrowError>),
            )
            .map_err(|e| bad_input!("cannot infer columns of {}: {e}", path.display()))?;
            Ok((schema, Some(values.len() as u64)))
        }
    }
}

/// Finds the files of `split` (and `subset`) named by `spec` and their common schema.
pub fn resolve(spec: &str, subset: Option<&str>, split: &str) -> Result<Dataset> {
    let path = Path::new(spec);
    let (paths, name) = if path.is_dir() {
        (
            files_in_folder(path, subset, split)?,
            stem(&path.canonicalize()?),
        )
    } else if path.is_file() {
        if format_of(path).is_none() {
            return Err(bad_input!(
                "dataset file {spec} is not .parquet, .jsonl or .json"
            ));
        }
        (vec![path.to_path_buf()], stem(path))
    } else if spec.contains(['*', '?', '[']) {
        let mut found: Vec<PathBuf> = glob::glob(spec)
            .map_err(|e| bad_input!("bad dataset glob {spec}: {e}"))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file() && format_of(p).is_some())
            .collect();
        found.sort();
        if found.is_empty() {
            return Err(bad_input!("dataset glob {spec} matches no data files"));
        }
        let name = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(stem)
            .unwrap_or_else(|| "dataset".into());
        (found, name)
    } else {
        return Err(bad_input!("dataset {spec} does not exist"));
    };
    let name = match subset {
        Some(sub) => format!("{name}__{}", sub.replace('/', "__")),
        None => name,
    };

    let mut files = Vec::with_capacity(paths.len());
    let mut schema: Option<(Schema, PathBuf)> = None;
    for path in paths {
        let format = match format_of(&path) {
            Some(Format::JsonArray) => sniff_json(&path)?,
            Some(f) => f,
            None => unreachable!("only data files are listed"),
        };
        let mut file = DataFile {
            path,
            format,
            rows: None,
        };
        let (file_schema, rows) = file_schema(&file)?;
        file.rows = rows;
        schema = Some(match schema {
            None => (file_schema, file.path.clone()),
            Some((first, first_path)) => {
                let merged = if format == Format::Parquet {
                    same_columns(&first, &file_schema).then(|| first.clone())
                } else {
                    Schema::try_merge([first.clone(), file_schema.clone()]).ok()
                };
                match merged {
                    Some(m) => (m, first_path),
                    None => {
                        return Err(bad_input!(
                            "dataset files disagree on columns: {} has [{}] but {} has [{}]",
                            first_path.display(),
                            describe(&first),
                            file.path.display(),
                            describe(&file_schema)
                        ));
                    }
                }
            }
        });
        files.push(file);
    }
    let (schema, _) = schema.expect("at least one file");
    Ok(Dataset {
        files,
        schema: Arc::new(schema),
        name,
    })
}

fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// `name: type` of every column, for error messages.
pub fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads every file of `dataset` in order, calling `each` with batches of at most
/// [`READ_BATCH_ROWS`] rows in the dataset's schema; `each` returns `false` to stop early.
pub fn read_batches(
    dataset: &Dataset,
    mut each: impl FnMut(RecordBatch) -> Result<bool>,
) -> Result<()> {
    for file in &dataset.files {
        let path = &file.path;
        let read_err = |e: &dyn std::fmt::Display| {
            bad_input!("cannot read dataset file {}: {e}", path.display())
        };
        let go_on = match file.format {
            Format::Parquet => {
                let reader = ParquetRecordBatchReaderBuilder::try_new(open(path)?)
                    .and_then(|b| b.with_batch_size(READ_BATCH_ROWS).build())
                    .map_err(|e| read_err(&e))?;
                let mut go_on = true;
                for batch in reader {
                    let batch = batch.map_err(|e| read_err(&e))?;
                    if !each(batch)? {
                        go_on = false;
                        break;
                    }
                }
                go_on
            }
            Format::JsonLines => {
                let mut file_reader = BufReader::new(open(path)?);
                file_reader.rewind()?;
                let reader = ReaderBuilder::new(dataset.schema.clone())
                    .with_batch_size(READ_BATCH_ROWS)
                    .build(file_reader)
                    .map_err(|e| read_err(&e))?;
                let mut go_on = true;
                for batch in reader {
                    let batch = batch.map_err(|e| read_err(&e))?;
                    if !each(batch)? {
                        go_on = false;
                        break;
                    }
                }
                go_on
            }
            Format::JsonArray => {
                let values = read_json_array(path)?;
                let mut go_on = true;
                for chunk in values.chunks(READ_BATCH_ROWS) {
                    let mut decoder = ReaderBuilder::new(dataset.schema.clone())
                        .build_decoder()
                        .map_err(|e| read_err(&e))?;
                    decoder.serialize(chunk).map_err(|e| read_err(&e))?;
                    if let Some(batch) = decoder.flush().map_err(|e| read_err(&e))?
                        && !each(batch)?
                    {
                        go_on = false;
                        break;
                    }
                }
                go_on
            }
        };
        if !go_on {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, rel: &str, body: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    #[test]
    fn split_files_by_name_and_folder() {
        let dir = tempfile::tempdir().unwrap();
        touch(
            dir.path(),
            "data/train-00000-of-00002.jsonl",
            "{\"text\":\"a\"}\n",
        );
        touch(
            dir.path(),
            "data/train-00001-of-00002.jsonl",
            "{\"text\":\"b\"}\n",
        );
        touch(
            dir.path(),
            "data/test-00000-of-00001.jsonl",
            "{\"text\":\"c\"}\n",
        );
        let ds = resolve(dir.path().to_str().unwrap(), None, "train").unwrap();
        assert_eq!(ds.files.len(), 2);
        let ds = resolve(dir.path().to_str().unwrap(), None, "test").unwrap();
        assert_eq!(ds.files.len(), 1);
        let err = resolve(dir.path().to_str().unwrap(), None, "validation").unwrap_err();
        assert!(
            err.to_string().contains("splits there: test, train"),
            "{err}"
        );
    }

    #[test]
    fn unknown_subset_lists_folders() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "all/train.jsonl", "{\"text\":\"a\"}\n");
        touch(dir.path(), "small/train.jsonl", "{\"text\":\"a\"}\n");
        let ok = resolve(dir.path().to_str().unwrap(), Some("small"), "train").unwrap();
        assert_eq!(ok.files.len(), 1);
        assert!(ok.name.ends_with("__small"));
        let err = resolve(dir.path().to_str().unwrap(), Some("nope"), "train").unwrap_err();
        assert!(
            err.to_string().contains("folders there: all, small"),
            "{err}"
        );
    }

    #[test]
    fn json_array_and_lines_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "a.json", "[{\"text\":\"x\"},{\"text\":\"y\"}]");
        touch(dir.path(), "b.json", "{\"text\":\"x\"}\n{\"text\":\"y\"}\n");
        for name in ["a.json", "b.json"] {
            let ds = resolve(dir.path().join(name).to_str().unwrap(), None, "train").unwrap();
            let mut rows = 0;
            read_batches(&ds, |b| {
                rows += b.num_rows();
                Ok(true)
            })
            .unwrap();
            assert_eq!(rows, 2, "{name}");
        }
    }

    #[test]
    fn missing_dataset_names_it() {
        let err = resolve("/no/such/file.parquet", None, "train").unwrap_err();
        assert_eq!(
            err.to_string(),
            "dataset /no/such/file.parquet does not exist"
        );
    }
}
