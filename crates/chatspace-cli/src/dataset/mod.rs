//! Datasets: which files make up the requested split (see [`crate::datafiles`]), their common
//! schema, and reading them as Arrow record batches in a fixed order while the next files are
//! fetched (downloaded, for a Hub dataset) in the background.
//!
//! `--dataset` may name one local file, a local folder (laid out like a Hub dataset repo), a
//! glob, or (see [`crate::hub`]) a Hub dataset id. Formats: Parquet, JSON Lines (`.jsonl`,
//! `.ndjson`, and `.json` holding one object per line), and `.json` holding one array of objects.
//! Columns come from the first file; a later Parquet file with other columns is an error naming
//! it.
//!
//! A file that cannot be read is bad input, named in the error: a Parquet file that is corrupt
//! or truncated, a JSON Lines file with a line that is not UTF-8, not JSON, not one object, or
//! holds a value of another type than its column (the error gives the line number), a JSON array
//! file that is not valid JSON (line and column). JSON Lines files are read line by line, so a
//! bad line is found as it is read, at no extra cost.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::json::ReaderBuilder;
use arrow::json::reader::Decoder;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReaderBuilder, RowSelection, RowSelector};

use crate::bad_input;
use crate::datafiles;
use crate::error::catch_panic;

mod json;

use json::*;

/// Rows per record batch read from a file: the most one unit of work holds (a GPU's
/// `--unit-rows` default).
pub const READ_BATCH_ROWS: usize = 2048;

/// Files fetched ahead of the one being read.
pub const PREFETCH_FILES: usize = 2;

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

/// Makes a dataset file available as a local path (a no-op for local files, a cached download
/// for Hub files).
pub trait Fetch: Send + Sync {
    /// The local path of file `name`.
    fn fetch(&self, name: &str) -> Result<PathBuf>;
}

/// Files that are already local: names are paths.
pub struct LocalFiles;

impl Fetch for LocalFiles {
    fn fetch(&self, name: &str) -> Result<PathBuf> {
        Ok(PathBuf::from(name))
    }
}

/// A local folder laid out like a dataset repo: names are relative to it.
pub struct FolderFiles(pub PathBuf);

impl Fetch for FolderFiles {
    fn fetch(&self, name: &str) -> Result<PathBuf> {
        Ok(self.0.join(name))
    }
}

/// The files of one split, in reading order, and the schema they share.
#[derive(Clone)]
pub struct Dataset {
    /// File names, in reading order (paths, or paths relative to a folder or repo).
    pub files: Vec<String>,
    /// How to get them.
    pub fetch: Arc<dyn Fetch>,
    /// The Arrow schema (of the first file).
    pub schema: SchemaRef,
    /// The name used in output folders.
    pub name: String,
    /// Total rows, when known before reading.
    pub rows: Option<u64>,
    /// Each file's rows, when known before reading (Parquet footers, JSON arrays).
    pub file_rows: Vec<Option<u64>>,
    /// Rows at the start of the first file that are not read (a task of a split run whose
    /// range begins inside a Parquet file); 0 for other formats.
    pub skip_first_rows: u64,
    /// Where the files came from, for the manifest (`local`, or the Hub repo and commit).
    pub source: serde_json::Value,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("files", &self.files)
            .field("name", &self.name)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

fn format_of(name: &str) -> Option<Format> {
    let name = name.to_ascii_lowercase();
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

/// The stem of a file or folder name, without a data extension.
pub fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    for ext in datafiles::DATA_EXTENSIONS {
        if let Some(s) = name.strip_suffix(ext) {
            return s.to_string();
        }
    }
    name
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| bad_input!("cannot open dataset file {}: {e}", path.display()))
}

/// The format of a local file: by extension, and for `.json` by its first non-blank byte.
fn detect_format(path: &Path) -> Result<Format> {
    match format_of(&path.to_string_lossy()) {
        Some(Format::JsonArray) => sniff_json(path),
        Some(f) => Ok(f),
        None => Err(bad_input!(
            "dataset file {} is not .parquet, .jsonl or .json",
            path.display()
        )),
    }
}

fn parquet_err(path: &Path, e: &dyn std::fmt::Display) -> anyhow::Error {
    bad_input!("cannot read Parquet file {}: {e}", path.display())
}

/// Opens a Parquet file and reads its footer (a corrupt or truncated file fails here).
fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = open(path)?;
    catch_panic(|| ParquetRecordBatchReaderBuilder::try_new(file))
        .map_err(|m| parquet_err(path, &m))?
        .map_err(|e| parquet_err(path, &e))
}

/// The schema of a local file and its row count when the file says so cheaply.
pub fn file_schema(path: &Path) -> Result<(Schema, Option<u64>)> {
    match detect_format(path)? {
        Format::Parquet => {
            let builder = open_parquet(path)?;
            let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
            Ok((builder.schema().as_ref().clone(), Some(rows)))
        }
        Format::JsonLines => Ok((infer_json_lines(path)?, None)),
        Format::JsonArray => {
            let values = read_json_array(path)?;
            let mut last = 0;
            let schema = arrow::json::reader::infer_json_schema_from_iterator(
                values
                    .iter()
                    .inspect(|_| last += 1)
                    .map(Ok::<_, ArrowError>),
            )
            .map_err(|e| {
                bad_input!(
                    "dataset file {} element {last}: {}",
                    path.display(),
                    arrow_text(&e)
                )
            })?;
            Ok((schema, Some(values.len() as u64)))
        }
    }
}

/// A local `--dataset`: one file, a folder laid out like a dataset repo, or a glob.
pub fn resolve_local(spec: &str, subset: Option<&str>, split: &str) -> Result<Option<Dataset>> {
    let path = Path::new(spec);
    let (files, fetch, name): (Vec<String>, Arc<dyn Fetch>, String) = if path.is_dir() {
        let mut all = Vec::new();
        list_folder(path, path, &mut all)?;
        let configs = match std::fs::read_to_string(path.join("README.md")) {
            Ok(text) => datafiles::parse_card_configs(&text)
                .map_err(|e| bad_input!("dataset {spec}: {e}"))?,
            Err(_) => Vec::new(),
        };
        let chosen = datafiles::select(&all, &configs, subset, split)
            .map_err(|e| bad_input!("dataset {spec} {e}"))?;
        let name = stem(&path.canonicalize()?);
        (chosen, Arc::new(FolderFiles(path.to_path_buf())), name)
    } else if path.is_file() {
        detect_format(path)?;
        (vec![spec.to_string()], Arc::new(LocalFiles), stem(path))
    } else if spec.contains(['*', '?', '[']) {
        let mut found: Vec<String> = glob::glob(spec)
            .map_err(|e| bad_input!("bad dataset glob {spec}: {e}"))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file() && datafiles::is_data_file(&p.to_string_lossy()))
            .map(|p| p.to_string_lossy().into_owned())
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
        (found, Arc::new(LocalFiles), name)
    } else {
        return Ok(None);
    };
    let name = match subset {
        Some(sub) => format!("{name}__{}", sub.replace('/', "__")),
        None => name,
    };
    // Local files are cheap to look at: check every file's columns now, and count rows.
    let mut schema: Option<(Schema, PathBuf)> = None;
    let mut rows = Some(0u64);
    let mut file_rows = Vec::with_capacity(files.len());
    for f in &files {
        let p = fetch.fetch(f)?;
        let (s, n) = file_schema(&p)?;
        file_rows.push(n);
        rows = rows.zip(n).map(|(a, b)| a.saturating_add(b));
        schema = Some(match schema {
            None => (s, p),
            Some((first, first_path)) => {
                let merged = if same_columns(&first, &s) {
                    Some(first.clone())
                } else if detect_format(&p)? != Format::Parquet {
                    Schema::try_merge([first.clone(), s.clone()]).ok()
                } else {
                    None
                };
                match merged {
                    Some(m) => (m, first_path),
                    None => return Err(columns_differ(&first_path, &first, &p, &s)),
                }
            }
        });
    }
    let (schema, _) = schema.expect("at least one file");
    Ok(Some(Dataset {
        files,
        fetch,
        schema: Arc::new(schema),
        name,
        rows,
        file_rows,
        skip_first_rows: 0,
        source: serde_json::json!({"kind": "local"}),
    }))
}

fn list_folder(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
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
            list_folder(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(rel.join("/"));
        }
    }
    Ok(())
}

fn columns_differ(a: &Path, sa: &Schema, b: &Path, sb: &Schema) -> anyhow::Error {
    bad_input!(
        "dataset files disagree on columns: {} has [{}] but {} has [{}]",
        a.display(),
        describe(sa),
        b.display(),
        describe(sb)
    )
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
/// Up to [`PREFETCH_FILES`] files are fetched ahead on a background thread.
pub fn read_batches(
    dataset: &Dataset,
    mut each: impl FnMut(RecordBatch) -> Result<bool>,
) -> Result<()> {
    let (tx, rx) = sync_channel::<Result<PathBuf>>(PREFETCH_FILES.saturating_sub(1));
    let fetch = dataset.fetch.clone();
    let names = dataset.files.clone();
    let fetcher = std::thread::Builder::new()
        .name("fetch".into())
        .spawn(move || {
            for name in names {
                let res = fetch.fetch(&name);
                let failed = res.is_err();
                if tx.send(res).is_err() || failed {
                    return;
                }
            }
        })?;
    let result = (|| {
        for (i, path) in rx.iter().enumerate() {
            let skip = if i == 0 { dataset.skip_first_rows } else { 0 };
            if !read_file(dataset, &path?, skip, &mut each)? {
                break;
            }
        }
        Ok(())
    })();
    // Dropping the receiver (on return) lets the fetcher finish its current file and stop.
    drop(fetcher);
    result
}

/// Whether a data file name is a Parquet file's (by its extension, as the reader decides).
pub fn is_parquet_name(name: &str) -> bool {
    format_of(name) == Some(Format::Parquet)
}

/// Reads one local file, without its first `skip` rows (Parquet only, else 0); `Ok(false)` when
/// `each` asked to stop.
fn read_file(
    dataset: &Dataset,
    path: &Path,
    skip: u64,
    each: &mut impl FnMut(RecordBatch) -> Result<bool>,
) -> Result<bool> {
    let read_err =
        |e: &dyn std::fmt::Display| bad_input!("cannot read dataset file {}: {e}", path.display());
    match detect_format(path)? {
        Format::Parquet => {
            let mut builder = open_parquet(path)?;
            if skip > 0 {
                let rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
                let skip = (skip as usize).min(rows);
                builder = builder.with_row_selection(RowSelection::from(vec![
                    RowSelector::skip(skip),
                    RowSelector::select(rows - skip),
                ]));
            }
            if !same_columns(builder.schema(), &dataset.schema) {
                return Err(bad_input!(
                    "dataset file {} has columns [{}], unlike the first file's [{}]",
                    path.display(),
                    describe(builder.schema()),
                    describe(&dataset.schema)
                ));
            }
            // The reader may panic on a corrupt file rather than return an error.
            let mut reader = catch_panic(|| builder.with_batch_size(READ_BATCH_ROWS).build())
                .map_err(|m| parquet_err(path, &m))?
                .map_err(|e| parquet_err(path, &e))?;
            loop {
                let next = catch_panic(|| reader.next()).map_err(|m| parquet_err(path, &m))?;
                let Some(batch) = next else { break };
                let batch = batch.map_err(|e| parquet_err(path, &e))?;
                // Same columns, so this only renews the schema's metadata.
                let batch = batch
                    .with_schema(dataset.schema.clone())
                    .map_err(|e| read_err(&e))?;
                if !each(batch)? {
                    return Ok(false);
                }
            }
        }
        Format::JsonLines => return read_json_lines(&dataset.schema, path, each),
        Format::JsonArray => {
            let values = read_json_array(path)?;
            for (c, chunk) in values.chunks(READ_BATCH_ROWS).enumerate() {
                let decode = |rows: &[serde_json::Value]| {
                    let mut decoder = json_decoder(&dataset.schema)?;
                    decoder.serialize(rows)?;
                    decoder.flush()
                };
                let batch = match decode(chunk) {
                    Ok(batch) => batch,
                    Err(e) => {
                        // Find the element at fault.
                        let (i, e) = chunk
                            .iter()
                            .enumerate()
                            .find_map(|(i, v)| {
                                decode(std::slice::from_ref(v)).err().map(|e| (i, e))
                            })
                            .unwrap_or((0, e));
                        return Err(bad_input!(
                            "dataset file {} element {}: {}",
                            path.display(),
                            c * READ_BATCH_ROWS + i + 1,
                            arrow_text(&e)
                        ));
                    }
                };
                if let Some(batch) = batch
                    && !each(batch)?
                {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, rel: &str, body: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    fn local(spec: &Path, subset: Option<&str>, split: &str) -> Result<Dataset> {
        resolve_local(spec.to_str().unwrap(), subset, split).map(|d| d.expect("local"))
    }

    #[test]
    fn split_files_by_name() {
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
        assert_eq!(local(dir.path(), None, "train").unwrap().files.len(), 2);
        assert_eq!(local(dir.path(), None, "test").unwrap().files.len(), 1);
        let err = local(dir.path(), None, "validation").unwrap_err();
        assert!(err.to_string().contains("splits: test, train"), "{err}");
    }

    #[test]
    fn folder_with_a_card_uses_its_configs() {
        let dir = tempfile::tempdir().unwrap();
        touch(
            dir.path(),
            "README.md",
            "---\nconfigs:\n- config_name: small\n  data_files:\n  - split: train\n    path: s/*.jsonl\n---\n",
        );
        touch(dir.path(), "s/a.jsonl", "{\"text\":\"a\"}\n");
        touch(dir.path(), "big/a.jsonl", "{\"text\":\"a\"}\n");
        let ds = local(dir.path(), Some("small"), "train").unwrap();
        assert_eq!(ds.files, vec!["s/a.jsonl"]);
        assert!(ds.name.ends_with("__small"));
        let err = local(dir.path(), Some("big"), "train").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("has no subset `big`; subsets: small"),
            "{err}"
        );
    }

    #[test]
    fn json_array_and_lines_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "a.json", "[{\"text\":\"x\"},{\"text\":\"y\"}]");
        touch(dir.path(), "b.json", "{\"text\":\"x\"}\n{\"text\":\"y\"}\n");
        for name in ["a.json", "b.json"] {
            let ds = local(&dir.path().join(name), None, "train").unwrap();
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
    fn corrupt_parquet_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        std::fs::write(&path, b"PAR1 this is not parquet at all PAR1").unwrap();
        let err = file_schema(&path).unwrap_err();
        assert_eq!(
            crate::error::exit_code(&err),
            chatspace_proto::exit::BAD_INPUT
        );
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read Parquet file {}: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn a_path_that_does_not_exist_is_not_local() {
        assert!(
            resolve_local("/no/such/file.parquet", None, "train")
                .unwrap()
                .is_none()
        );
    }
}
