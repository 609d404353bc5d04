//! Parquet shards: rows go in, in order; every `rows_per_shard` rows a shard is closed, synced
//! and renamed from `shard-NNNNN.parquet.tmp` to its final name, so a file under a final name is
//! always complete. Each closed shard is described by a [`ShardRecord`] for the manifest.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the manifest records of one finished shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// Position of the shard in the run, from 0.
    pub shard_index: u64,
    /// Path relative to the output root.
    pub path: String,
    /// Rows in the shard.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// `row_index` of the first row.
    pub first_row_index: i64,
    /// `row_index` of the last row.
    pub last_row_index: i64,
    /// Per-turn modes: `turn_index` of the first row (a shard may begin inside a row's turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_turn_index: Option<i32>,
    /// Per-turn modes: `turn_index` of the last row (a shard may end inside a row's turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_turn_index: Option<i32>,
    /// Embedding dimension.
    pub embedding_dim: u32,
    /// Smallest L2 norm of an embedding in the shard.
    pub min_norm: f32,
    /// Largest L2 norm of an embedding in the shard.
    pub max_norm: f32,
    /// When the shard was closed (RFC 3339, UTC).
    pub created_at: String,
    /// Closed early, with fewer than `rows_per_shard` rows, by an interrupted run; `--resume`
    /// writes it again whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// A file writer that hashes and counts what passes through it.
struct HashingFile {
    inner: BufWriter<File>,
    hash: Sha256,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct OpenShard {
    index: u64,
    tmp: PathBuf,
    writer: ArrowWriter<HashingFile>,
    rows: u64,
    first_row: i64,
    last_row: i64,
    first_turn: Option<i32>,
    last_turn: Option<i32>,
    min_norm: f32,
    max_norm: f32,
}

/// Writes a run's rows into consecutive shards of one folder.
pub struct ShardWriter {
    root: PathBuf,
    dir: PathBuf,
    schema: SchemaRef,
    rows_per_shard: u64,
    dim: u32,
    next_index: u64,
    open: Option<OpenShard>,
    /// Shards closed by the current (or a failed) write, not yet handed over.
    closed: Vec<ShardRecord>,
}

/// The file name of shard `index`.
pub fn shard_file_name(index: u64) -> String {
    format!("shard-{index:05}.parquet")
}

impl ShardWriter {
    /// A writer of shards into `dir` (under the output `root`) with the given row schema.
    pub fn new(root: &Path, dir: &Path, schema: SchemaRef, rows_per_shard: u64, dim: u32) -> Self {
        Self {
            root: root.to_path_buf(),
            dir: dir.to_path_buf(),
            schema,
            rows_per_shard,
            dim,
            next_index: 0,
            open: None,
            closed: Vec::new(),
        }
    }

    fn properties(&self) -> WriterProperties {
        let mut props = WriterProperties::builder().set_compression(Compression::SNAPPY);
        // Embeddings, texts and row indexes do not repeat: a dictionary only costs time (and
        // is abandoned after a page anyway). Float vectors do not compress either.
        if let Ok(field) = self.schema.field_with_name("embedding") {
            let mut path = vec!["embedding".to_string()];
            if let DataType::FixedSizeList(item, _) = field.data_type() {
                path.extend(["list".to_string(), item.name().clone()]);
            }
            props = props
                .set_column_dictionary_enabled(ColumnPath::new(path.clone()), false)
                .set_column_compression(ColumnPath::new(path), Compression::UNCOMPRESSED);
        }
        for name in ["text", "row_index"] {
            props = props.set_column_dictionary_enabled(ColumnPath::new(vec![name.into()]), false);
        }
        props.build()
    }

    fn open_shard(&mut self, first_row: i64, first_turn: Option<i32>) -> Result<&mut OpenShard> {
        let index = self.next_index;
        let tmp = self.dir.join(format!("{}.tmp", shard_file_name(index)));
        let file = File::create(&tmp)
            .with_context(|| format!("cannot create shard file {}", tmp.display()))?;
        let sink = HashingFile {
            inner: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            bytes: 0,
        };
        let writer = ArrowWriter::try_new(sink, self.schema.clone(), Some(self.properties()))?;
        self.next_index += 1;
        Ok(self.open.insert(OpenShard {
            index,
            tmp,
            writer,
            rows: 0,
            first_row,
            last_row: first_row,
            first_turn,
            last_turn: first_turn,
            min_norm: f32::INFINITY,
            max_norm: f32::NEG_INFINITY,
        }))
    }

    /// Continues the numbering after `kept` shards (for `--resume`).
    pub fn starting_at(mut self, kept: u64) -> Self {
        self.next_index = kept;
        self
    }

    /// Appends `batch` (whose rows have the given `row_index` values, `turn_index` values in
    /// per-turn modes, else none, and embedding `norms`), closing shards as they fill up.
    /// Returns the shards closed by this call. On an error, the shards this call closed before
    /// it are complete on disk all the same: [`ShardWriter::take_closed`] hands them over.
    pub fn write(
        &mut self,
        batch: &RecordBatch,
        row_index: &[i64],
        turn_index: &[i32],
        norms: &[f32],
    ) -> Result<Vec<ShardRecord>> {
        self.write_inner(batch, row_index, turn_index, norms)?;
        Ok(self.take_closed())
    }

    /// Shards closed by a [`ShardWriter::write`] that then failed (emptied by the call).
    pub fn take_closed(&mut self) -> Vec<ShardRecord> {
        std::mem::take(&mut self.closed)
    }

    fn write_inner(
        &mut self,
        batch: &RecordBatch,
        row_index: &[i64],
        turn_index: &[i32],
        norms: &[f32],
    ) -> Result<()> {
        let turn = |i: usize| turn_index.get(i).copied();
        let mut start = 0usize;
        while start < batch.num_rows() {
            let rows_per_shard = self.rows_per_shard;
            let shard = match self.open.as_mut() {
                Some(s) => s,
                None => self.open_shard(row_index[start], turn(start))?,
            };
            let room = (rows_per_shard - shard.rows) as usize;
            let take = room.min(batch.num_rows() - start);
            let tmp = &shard.tmp;
            shard
                .writer
                .write(&batch.slice(start, take))
                .map_err(parquet_error)
                .with_context(|| format!("cannot write shard file {}", tmp.display()))?;
            for &n in &norms[start..start + take] {
                shard.min_norm = shard.min_norm.min(n);
                shard.max_norm = shard.max_norm.max(n);
            }
            shard.rows += take as u64;
            shard.last_row = row_index[start + take - 1];
            shard.last_turn = turn(start + take - 1);
            start += take;
            if shard.rows == rows_per_shard {
                let record = self.close()?.expect("a shard is open");
                self.closed.push(record);
            }
        }
        Ok(())
    }

    /// Closes the open shard, if any: footer, fsync, rename to the final name.
    pub fn close(&mut self) -> Result<Option<ShardRecord>> {
        let Some(shard) = self.open.take() else {
            return Ok(None);
        };
        // A shard that cannot be finished (disk full, file size limit) leaves no file behind.
        let (bytes, sha256) = finish(shard.writer).map_err(|e| {
            let _ = std::fs::remove_file(&shard.tmp);
            e.context(format!("cannot write shard file {}", shard.tmp.display()))
        })?;
        let name = shard_file_name(shard.index);
        let final_path = self.dir.join(&name);
        std::fs::rename(&shard.tmp, &final_path)
            .with_context(|| format!("cannot rename {}", shard.tmp.display()))?;
        sync_dir(&self.dir);
        let rel = final_path
            .strip_prefix(&self.root)
            .unwrap_or(&final_path)
            .to_string_lossy()
            .into_owned();
        Ok(Some(ShardRecord {
            shard_index: shard.index,
            path: rel,
            rows: shard.rows,
            bytes,
            sha256,
            first_row_index: shard.first_row,
            last_row_index: shard.last_row,
            first_turn_index: shard.first_turn,
            last_turn_index: shard.last_turn,
            embedding_dim: self.dim,
            min_norm: shard.min_norm,
            max_norm: shard.max_norm,
            created_at: crate::manifest::now_rfc3339(),
            partial: false,
        }))
    }

    /// Closes the open shard early (an interrupted run keeps its rows), marked partial.
    pub fn close_partial(&mut self) -> Result<Option<ShardRecord>> {
        Ok(self.close()?.map(|s| ShardRecord { partial: true, ..s }))
    }

    /// Removes the open shard's temporary file without finishing it.
    pub fn abandon(&mut self) {
        if let Some(shard) = self.open.take() {
            drop(shard.writer);
            let _ = std::fs::remove_file(&shard.tmp);
        }
    }
}

/// Writes the footer and everything buffered, and syncs the file: its size and hex SHA-256.
fn finish(writer: ArrowWriter<HashingFile>) -> Result<(u64, String)> {
    let mut sink = writer.into_inner().map_err(parquet_error)?;
    sink.flush()?;
    let file = sink.inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((sink.bytes, hex(&sink.hash.finalize())))
}

/// A Parquet error, with an I/O error inside it brought out as the cause (so the message reads
/// `File too large (os error 27)`, not `External: ...`).
fn parquet_error(e: ParquetError) -> anyhow::Error {
    match e {
        ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io) => anyhow::Error::new(*io),
            Err(other) => anyhow::anyhow!(other),
        },
        other => other.into(),
    }
}

/// Syncs a folder so that a rename in it is durable (best effort).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn rows_split_at_shard_boundaries_and_hashes_match() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "row_index",
            DataType::Int64,
            false,
        )]));
        let mut w = ShardWriter::new(dir.path(), dir.path(), schema.clone(), 4, 1);
        let mut closed = Vec::new();
        for chunk in [0..3i64, 3..9, 9..10] {
            let idx: Vec<i64> = chunk.collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(idx.clone()))],
            )
            .unwrap();
            let norms = vec![1.0; idx.len()];
            closed.extend(w.write(&batch, &idx, &[], &norms).unwrap());
        }
        closed.extend(w.close().unwrap());
        let ranges: Vec<(i64, i64, u64)> = closed
            .iter()
            .map(|s| (s.first_row_index, s.last_row_index, s.rows))
            .collect();
        assert_eq!(ranges, vec![(0, 3, 4), (4, 7, 4), (8, 9, 2)]);
        assert!(closed.iter().all(|s| s.first_turn_index.is_none()));
        for s in &closed {
            let bytes = std::fs::read(dir.path().join(&s.path)).unwrap();
            assert_eq!(bytes.len() as u64, s.bytes);
            assert_eq!(hex(&Sha256::digest(&bytes)), s.sha256);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn embeddings_are_written_plain_and_uncompressed() {
        use arrow::array::{FixedSizeListArray, Float32Array, StringArray};
        use parquet::basic::Encoding;
        use parquet::file::reader::{FileReader, SerializedFileReader};

        let dir = tempfile::tempdir().unwrap();
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let schema = Arc::new(Schema::new(vec![
            Field::new("text", DataType::Utf8, false),
            Field::new("embedding", DataType::FixedSizeList(item.clone(), 2), false),
            Field::new("model", DataType::Utf8, false),
        ]));
        let n = 100;
        let values: Vec<f32> = (0..2 * n).map(|i| (i as f32).sin()).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("t{i}")),
                )),
                Arc::new(
                    FixedSizeListArray::try_new(
                        item,
                        2,
                        Arc::new(Float32Array::from(values)),
                        None,
                    )
                    .unwrap(),
                ),
                Arc::new(StringArray::from(vec!["m"; n])),
            ],
        )
        .unwrap();
        let mut w = ShardWriter::new(dir.path(), dir.path(), schema, 1000, 2);
        let idx: Vec<i64> = (0..n as i64).collect();
        w.write(&batch, &idx, &[], &vec![1.0; n]).unwrap();
        let shard = w.close().unwrap().unwrap();
        let file = File::open(dir.path().join(&shard.path)).unwrap();
        let meta = SerializedFileReader::new(file).unwrap().metadata().clone();
        let cols = meta.row_group(0).columns();
        let by_path = |p: &str| {
            cols.iter()
                .find(|c| c.column_path().string() == p)
                .unwrap_or_else(|| panic!("no column {p}"))
        };
        let emb = by_path("embedding.list.item");
        assert!(!emb.encodings().any(|e| e == Encoding::RLE_DICTIONARY));
        assert_eq!(emb.compression(), Compression::UNCOMPRESSED);
        assert!(
            !by_path("text")
                .encodings()
                .any(|e| e == Encoding::RLE_DICTIONARY)
        );
        // Constant columns keep their dictionary.
        assert!(
            by_path("model")
                .encodings()
                .any(|e| e == Encoding::RLE_DICTIONARY)
        );
    }

    #[test]
    fn a_shard_may_begin_and_end_inside_a_rows_turns() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "row_index",
            DataType::Int64,
            false,
        )]));
        let mut w = ShardWriter::new(dir.path(), dir.path(), schema.clone(), 3, 1);
        let rows = vec![0i64, 0, 1, 1, 1, 2];
        let turns = vec![0i32, 1, 0, 1, 2, 5];
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(rows.clone()))]).unwrap();
        let mut closed = w.write(&batch, &rows, &turns, &[1.0; 6]).unwrap();
        closed.extend(w.close().unwrap());
        let ranges: Vec<_> = closed
            .iter()
            .map(|s| {
                (
                    s.first_row_index,
                    s.first_turn_index,
                    s.last_row_index,
                    s.last_turn_index,
                )
            })
            .collect();
        assert_eq!(
            ranges,
            vec![(0, Some(0), 1, Some(0)), (1, Some(1), 2, Some(5))]
        );
    }
}
