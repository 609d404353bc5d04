//! One embedding run: a reader thread turns dataset rows into jobs, the encoder pool embeds
//! them, and a writer thread puts results back in input order and writes shards and manifest.
//!
//! Memory stays bounded: the job queue holds at most two jobs per encoder, each encoder has at
//! most [`pool::JOBS_IN_FLIGHT`] outstanding, and the writer's reorder buffer only holds jobs that
//! finished ahead of an older one still in flight.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use arrow::array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float16Array, Float32Array, Int32Array, Int64Array,
    RecordBatch, StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use crate::args::{EmbedArgs, EmbeddingDtype};
use crate::dataset;
use crate::extract::{self, SkipReasons};
use crate::manifest::{self, FailedRow, Manifest, RunSummary, Status, Tool};
use crate::plan::{self, RunPlan};
use crate::pool::{self, Done, Job, Pool, PoolConfig, Recovery, Restarts};
use crate::resume::Position;
use crate::shard::ShardWriter;

/// Columns chatspace adds to every shard row (input columns of the same name are renamed).
pub const ADDED_COLUMNS: [&str; 6] = [
    "text",
    "embedding",
    "model",
    "run_id",
    "created_at",
    "row_index",
];

/// Columns chatspace adds after [`ADDED_COLUMNS`] in per-turn modes.
pub const TURN_COLUMNS: [&str; 2] = ["turn_index", "role"];

/// Input rows that travel with a job, to be written next to their embeddings.
#[derive(Debug)]
pub struct Rows {
    /// The input row of each text (all input columns; repeated for each of a row's turns in
    /// per-turn modes).
    batch: RecordBatch,
    /// Their positions in the input stream.
    row_index: Vec<i64>,
    /// Per-turn modes: each text's turn index; else empty.
    turn_index: Vec<i32>,
    /// Per-turn modes: each text's role (`Utf8`).
    role: Option<ArrayRef>,
}

/// What the reader counted.
#[derive(Debug, Default)]
struct ReadStats {
    rows_read: u64,
    skipped: SkipReasons,
    turns_skipped: SkipReasons,
}

/// The field an input column gets in the output: renamed `_original_<name>` when it would
/// collide with a column chatspace adds.
fn output_field(field: &Field, added: &[&str]) -> Field {
    if added.contains(&field.name().as_str()) {
        field
            .clone()
            .with_name(format!("_original_{}", field.name()))
    } else {
        field.clone()
    }
}

/// The result of a run, for the summary line.
#[derive(Debug)]
pub struct Outcome {
    /// The run summary as written.
    pub summary: RunSummary,
    /// Where the manifest is.
    pub manifest_path: std::path::PathBuf,
}

/// The Arrow type of the embedding values in the shards.
fn item_type(dtype: EmbeddingDtype) -> DataType {
    match dtype {
        EmbeddingDtype::Float32 => DataType::Float32,
        EmbeddingDtype::Float16 => DataType::Float16,
    }
}

/// The embedding values as the shards store them (norms are computed from the f32 values).
fn embedding_values(vectors: Vec<f32>, dtype: EmbeddingDtype) -> ArrayRef {
    match dtype {
        EmbeddingDtype::Float32 => Arc::new(Float32Array::from(vectors)),
        EmbeddingDtype::Float16 => Arc::new(Float16Array::from_iter_values(
            vectors.into_iter().map(half::f16::from_f32),
        )),
    }
}

fn output_schema(input: &Schema, dim: u32, per_turn: bool, dtype: EmbeddingDtype) -> SchemaRef {
    let mut added = ADDED_COLUMNS.to_vec();
    if per_turn {
        added.extend(TURN_COLUMNS);
    }
    let mut fields: Vec<Field> = input
        .fields()
        .iter()
        .map(|f| output_field(f, &added))
        .collect();
    fields.push(Field::new("text", DataType::Utf8, false));
    fields.push(Field::new(
        "embedding",
        DataType::FixedSizeList(
            Arc::new(Field::new("item", item_type(dtype), false)),
            dim as i32,
        ),
        false,
    ));
    fields.push(Field::new("model", DataType::Utf8, false));
    fields.push(Field::new("run_id", DataType::Utf8, false));
    fields.push(Field::new("created_at", DataType::Utf8, false));
    fields.push(Field::new("row_index", DataType::Int64, false));
    if per_turn {
        fields.push(Field::new("turn_index", DataType::Int32, false));
        fields.push(Field::new("role", DataType::Utf8, false));
    }
    Arc::new(Schema::new(fields))
}

fn progress_bar(plan: &RunPlan) -> ProgressBar {
    if plan.args.no_progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let total = (plan.rows.end != u64::MAX).then(|| plan.rows.end - plan.rows.start);
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {human_pos}/{human_len} rows  {per_sec}  ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {human_pos} rows  {per_sec}")
                .expect("valid template"),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// How many rows the jobs sent to encoders hold.
#[derive(Debug, Clone, Copy)]
struct JobSizing {
    /// Rows of one inference batch: the first job's size, and the smallest job.
    batch_rows: usize,
    /// The largest job (`--unit-rows`).
    job_rows: usize,
    /// Encoders sharing the work.
    encoders: usize,
}

/// Jobs ahead of a new one per encoder, at most: [`pool::JOBS_IN_FLIGHT`] sent plus as many
/// queued; only the ones sent are bound to an encoder, so half that is enough of a share.
const JOBS_AHEAD: usize = pool::JOBS_IN_FLIGHT;

/// The most rows job `id` may hold when `left` input rows (if known) remain from its first one.
///
/// The first job is one batch, so the first rows are written within a second. Later ones are
/// large (`--unit-rows`), so encoders can sort many texts by length before cutting batches
/// (small units cost padding). Near the end of a dataset of known size they shrink again, to a
/// share of what is left that all encoders' queues together hold, so encoders finish at about
/// the same time instead of one working through a large last job while the others idle.
fn job_cap(s: &JobSizing, id: u64, left: Option<u64>) -> usize {
    let ramp = if id == 0 { s.batch_rows } else { s.job_rows };
    let tail = left.map_or(usize::MAX, |left| {
        let share = left / (JOBS_AHEAD * s.encoders.max(1)) as u64;
        usize::try_from(share)
            .unwrap_or(usize::MAX)
            .max(s.batch_rows)
    });
    ramp.min(tail).max(1)
}

/// Reads the dataset into jobs sized by [`job_cap`].
fn read_jobs(
    plan: &RunPlan,
    sizing: JobSizing,
    jobs: mpsc::Sender<Job<Rows>>,
    progress: ProgressBar,
    stop: &AtomicBool,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut next_id = 0u64;
    // Input positions: `plan.rows` is what this run embeds (a task's range, or everything up to
    // --max-rows); the files read start at `plan.first_file_row`.
    let want = plan.rows.clone();
    let total = (want.end != u64::MAX).then_some(want.end);
    let mut at = plan.first_file_row;
    dataset::read_batches(&plan.dataset, |batch| {
        if stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let batch_start = at;
        at += batch.num_rows() as u64;
        let (lo, hi) = (batch_start.max(want.start), at.min(want.end));
        if lo >= hi {
            // Rows before this task's range (or none left).
            return Ok(at < want.end);
        }
        let batch = batch.slice((lo - batch_start) as usize, (hi - lo) as usize);
        let base = lo as i64;
        stats.rows_read += batch.num_rows() as u64;
        let mut ex = plan.extractor.extract(&batch)?;
        // With --resume, texts in kept shards are read (to count skips) but not sent. In
        // per-turn modes a kept shard may end inside a row's turns: the rest are sent.
        if let Some(r) = &plan.resume {
            let done = (0..ex.keep.len())
                .take_while(|&j| {
                    r.is_kept(Position {
                        row: base + ex.keep[j] as i64,
                        turn: ex.turn(j),
                    })
                })
                .count();
            progress.inc(distinct_rows(&ex.keep[..done]));
            ex.drop_front(done);
        }
        let skipped: u64 = ex.skipped.values().sum();
        for (why, n) in std::mem::take(&mut ex.skipped) {
            *stats.skipped.entry(why).or_default() += n;
        }
        for (why, n) in std::mem::take(&mut ex.turns_skipped) {
            *stats.turns_skipped.entry(why).or_default() += n;
        }
        progress.inc(skipped);
        let mut start = 0;
        while start < ex.texts.len() {
            let position = base as u64 + ex.keep[start] as u64;
            let cap = job_cap(&sizing, next_id, total.map(|t| t.saturating_sub(position)));
            let first =
                extract::job_ranges(&ex.texts[start..], cap, extract::MAX_JOB_BYTES).remove(0);
            let range = start + first.start..start + first.end;
            start = range.end;
            let keep = &ex.keep[range.clone()];
            let idx = UInt32Array::from(keep.to_vec());
            let rows = arrow::compute::take_record_batch(&batch, &idx)?;
            let job = Job {
                id: next_id,
                texts: ex.texts[range.clone()]
                    .iter_mut()
                    .map(std::mem::take)
                    .collect(),
                payload: Rows {
                    batch: rows,
                    row_index: keep.iter().map(|&k| base + k as i64).collect(),
                    turn_index: ex.turns.get(range.clone()).unwrap_or_default().to_vec(),
                    role: ex.roles.as_ref().map(|r| r.slice(range.start, range.len())),
                },
            };
            next_id += 1;
            if stop.load(Ordering::SeqCst) || jobs.blocking_send(job).is_err() {
                // The pool stopped (it reports why); stop reading.
                return Ok(false);
            }
        }
        Ok(at < want.end)
    })?;
    Ok(stats)
}

/// The number of distinct input rows among ascending row positions (for the progress bar,
/// which counts input rows).
fn distinct_rows(keep: &[u32]) -> u64 {
    keep.chunk_by(|a, b| a == b).count() as u64
}

/// The model options every encoder gets, as `chatspace-encoder` flags.
fn model_flags(args: &EmbedArgs) -> Vec<String> {
    let mut flags = Vec::new();
    if !args.pooling.is_empty() {
        let modes: Vec<&str> = args.pooling.iter().map(|m| m.name()).collect();
        flags.extend(["--pooling".into(), modes.join(",")]);
    }
    if args.normalize {
        flags.push("--normalize".into());
    }
    if args.no_normalize {
        flags.push("--no-normalize".into());
    }
    if let Some(name) = &args.prompt_name {
        flags.push(format!("--prompt-name={name}"));
    }
    if let Some(text) = &args.prompt {
        // `=`: a prompt may begin with `-`.
        flags.push(format!("--prompt={text}"));
    }
    if let Some(n) = args.truncate_dim {
        flags.extend(["--truncate-dim".into(), n.to_string()]);
    }
    if let Some(n) = args.max_seq_length {
        flags.extend(["--max-seq-length".into(), n.to_string()]);
    }
    flags
}

/// The writer's state: reorders results and writes shards and manifest.
struct Writer {
    shards: ShardWriter,
    manifest: Manifest,
    manifest_path: std::path::PathBuf,
    schema: SchemaRef,
    model: String,
    run_id: String,
    created_at: String,
    dim: usize,
    /// How embedding values are stored.
    dtype: EmbeddingDtype,
    tokens: u64,
    padded_tokens: u64,
    progress: ProgressBar,
    first_row_at: Option<Instant>,
    /// The last input row counted on the progress bar (which counts input rows).
    progress_row: i64,
    rows_read: u64,
    /// --max-failed-rows.
    max_failed_rows: u64,
    /// Encoder restarts, for the summary.
    restarts: Restarts,
}

impl Writer {
    fn write(&mut self, done: Done<Rows>) -> Result<()> {
        let Done {
            mut job,
            vectors,
            tokens,
            padded_tokens,
            truncated,
            failed,
        } = done;
        // Failed rows count as done on the progress bar too.
        self.count_progress(&job.payload.row_index);
        if !failed.is_empty() {
            self.drop_failed(&mut job, failed)?;
        }
        let n = job.texts.len();
        if n == 0 {
            return Ok(());
        }
        if vectors.len() != n * self.dim {
            return Err(anyhow!(
                "encoder returned {} values for {n} texts of dimension {}",
                vectors.len(),
                self.dim
            ));
        }
        self.first_row_at.get_or_insert_with(Instant::now);
        let norms: Vec<f32> = vectors
            .chunks_exact(self.dim)
            .map(|v| v.iter().map(|x| x * x).sum::<f32>().sqrt())
            .collect();
        let Rows {
            batch,
            row_index,
            turn_index,
            role,
        } = job.payload;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let item = Arc::new(Field::new("item", item_type(self.dtype), false));
        columns.push(Arc::new(StringArray::from(job.texts)));
        columns.push(Arc::new(FixedSizeListArray::try_new(
            item,
            self.dim as i32,
            embedding_values(vectors, self.dtype),
            None,
        )?));
        columns.push(Arc::new(StringArray::from(vec![self.model.as_str(); n])));
        columns.push(Arc::new(StringArray::from(vec![self.run_id.as_str(); n])));
        columns.push(Arc::new(StringArray::from(vec![
            self.created_at.as_str();
            n
        ])));
        columns.push(Arc::new(Int64Array::from(row_index.clone())));
        if let Some(role) = role {
            columns.push(Arc::new(Int32Array::from(turn_index.clone())));
            columns.push(role);
        }
        let out = RecordBatch::try_new(self.schema.clone(), columns)?;

        let closed = match self.shards.write(&out, &row_index, &turn_index, &norms) {
            Ok(closed) => closed,
            Err(e) => {
                // Shards completed before the failure are on disk: list them.
                let closed = self.shards.take_closed();
                if !closed.is_empty() {
                    self.record(closed)?;
                }
                return Err(e);
            }
        };
        let m = &mut self.manifest;
        m.rows_total += n as u64;
        m.rows_truncated += truncated as u64;
        self.tokens += tokens;
        self.padded_tokens += padded_tokens;

        if !closed.is_empty() {
            self.record(closed)?;
        }
        Ok(())
    }

    /// Counts the input rows of `row_index` (ascending) not counted yet on the progress bar.
    fn count_progress(&mut self, row_index: &[i64]) {
        let mut new = 0;
        for &r in row_index {
            if r > self.progress_row {
                self.progress_row = r;
                new += 1;
            }
        }
        self.progress.inc(new);
    }

    /// Takes the rows that failed out of `job` (its texts, input rows, row and turn indexes,
    /// roles), records them in the manifest, and fails the run once there are more than
    /// --max-failed-rows.
    fn drop_failed(&mut self, job: &mut Job<Rows>, failed: Vec<(usize, String)>) -> Result<()> {
        let rows = &mut job.payload;
        let mut keep = vec![true; job.texts.len()];
        for (offset, reason) in failed {
            let row_index = rows.row_index[offset];
            let turn_index = rows.turn_index.get(offset).copied();
            tracing::warn!(row_index, ?turn_index, %reason, "row failed and is skipped");
            keep[offset] = false;
            self.manifest.rows_failed.push(FailedRow {
                row_index,
                turn_index,
                reason,
            });
        }
        let mut flags = keep.iter();
        job.texts
            .retain(|_| *flags.next().expect("one flag per text"));
        let mut flags = keep.iter();
        rows.row_index
            .retain(|_| *flags.next().expect("one flag per row"));
        if !rows.turn_index.is_empty() {
            let mut flags = keep.iter();
            rows.turn_index
                .retain(|_| *flags.next().expect("one flag per turn"));
        }
        let keep = BooleanArray::from(keep);
        if let Some(role) = &mut rows.role {
            *role = arrow::compute::filter(role, &keep)?;
        }
        rows.batch = arrow::compute::filter_record_batch(&rows.batch, &keep)?;
        let m = &mut self.manifest;
        m.rows_failed_count = m.rows_failed.len() as u64;
        if m.rows_failed_count > self.max_failed_rows {
            let first = &m.rows_failed[0];
            return Err(anyhow!(
                "{} rows failed, more than --max-failed-rows {}; first: row {}: {}",
                m.rows_failed_count,
                self.max_failed_rows,
                first.row_index,
                first.reason
            ));
        }
        Ok(())
    }

    fn record(&mut self, closed: Vec<crate::shard::ShardRecord>) -> Result<()> {
        let m = &mut self.manifest;
        for s in closed {
            m.min_norm = Some(m.min_norm.map_or(s.min_norm, |x| x.min(s.min_norm)));
            m.max_norm = Some(m.max_norm.map_or(s.max_norm, |x| x.max(s.max_norm)));
            m.shards.push(s);
        }
        manifest::write_json_atomic(&self.manifest_path, m)
    }

    /// Writes results as they arrive, in job order, until the pool is done.
    fn run(&mut self, mut done: mpsc::Receiver<Done<Rows>>) -> Result<()> {
        let mut pending: BTreeMap<u64, Done<Rows>> = BTreeMap::new();
        let mut next = 0u64;
        while let Some(d) = done.blocking_recv() {
            pending.insert(d.job.id, d);
            while let Some(d) = pending.remove(&next) {
                self.write(d)?;
                next += 1;
            }
        }
        if !pending.is_empty() {
            // Jobs after a missing one cannot be written in order; the pool reports why.
            tracing::debug!(held = pending.len(), "results left unwritten");
        }
        Ok(())
    }
}

/// The run was stopped by a signal.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted by {0}; the shards written are listed in the manifest, and --resume continues the run"
)]
pub struct Interrupted(&'static str);

/// SIGINT and SIGTERM, listened to from the start of a run.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Runs `plan` to the end.
pub async fn execute(plan: RunPlan) -> Result<Outcome> {
    let started = Instant::now();
    let args = plan.args.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (batch_size, tokens_per_batch) = args.batch_limits();
    let cfg = PoolConfig {
        encoder_bin: plan.encoder_bin.clone(),
        devices: plan.devices.clone(),
        model_dir: plan.model_dir.clone(),
        onnx_file: plan.onnx_file.clone(),
        ort_lib: args.ort_lib.clone(),
        threads: args.threads,
        batch_size,
        tokens_per_batch,
        model_flags: model_flags(&args),
        stop: stop.clone(),
        startup_timeout: Duration::from_secs(300),
        recovery: Recovery::from_args(&args),
    };
    let mut signals = Signals::new()?;
    let pool = tokio::select! {
        pool = Pool::start(&cfg) => pool?,
        sig = signals.recv() => return Err(Interrupted(sig).into()),
    };
    let info = pool.info.clone();
    tracing::info!(?info, "encoders ready");

    let plan = Arc::new(plan);
    let schema = output_schema(
        &plan.dataset.schema,
        info.dim,
        plan.extractor.per_turn(),
        args.embedding_dtype,
    );
    let manifest = Manifest {
        dataset: plan.args.dataset.clone(),
        subset: plan.args.subset.clone(),
        split: plan.args.split.clone(),
        model: plan.args.model.clone(),
        source: plan.dataset.source.clone(),
        status: Status::Running,
        rows_total: 0,
        input_rows: 0,
        rows_skipped: 0,
        skipped_reasons: BTreeMap::new(),
        turns_skipped: BTreeMap::new(),
        rows_truncated: 0,
        rows_failed_count: 0,
        rows_failed: Vec::new(),
        embedding_dim: info.dim,
        rows_per_shard: plan.args.rows_per_shard,
        shards: Vec::new(),
        created_at: plan.created_at.clone(),
        run_id: plan.run_id.clone(),
        min_norm: None,
        max_norm: None,
        preprocessing: plan.extractor.describe(),
        model_source: plan.model_source.clone(),
        model_info: serde_json::to_value(&info)?,
        run_config: run_config(&plan)?,
        tool: Tool::current(),
        task: plan.task.clone(),
    };
    let mut manifest = manifest;
    if let Some(r) = &plan.resume {
        manifest.shards = r.kept.clone();
        manifest.rows_total = r.kept.iter().map(|s| s.rows).sum();
        manifest.rows_truncated = r.previous.rows_truncated;
        // Rows that failed before the resume point stay failed; later ones are tried again.
        manifest.rows_failed = (r.previous.rows_failed.iter())
            .filter(|f| {
                r.is_kept(Position {
                    row: f.row_index,
                    turn: f.turn_index.unwrap_or(0),
                })
            })
            .cloned()
            .collect();
        manifest.rows_failed_count = manifest.rows_failed.len() as u64;
        manifest.min_norm = r.kept.iter().map(|s| s.min_norm).reduce(f32::min);
        manifest.max_norm = r.kept.iter().map(|s| s.max_norm).reduce(f32::max);
        tracing::info!(
            shards = r.kept.len(),
            last_kept = ?r.last_kept,
            "resuming after the verified shards"
        );
    }
    manifest::write_json_atomic(&plan.manifest_path, &manifest)?;

    let progress = progress_bar(&plan);
    let sizing = JobSizing {
        batch_rows: batch_size as usize,
        job_rows: args.unit_rows() as usize,
        encoders: plan.devices.len(),
    };
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job<Rows>>(pool::JOBS_IN_FLIGHT * plan.devices.len());
    let (done_tx, done_rx) = mpsc::channel::<Done<Rows>>(pool::JOBS_IN_FLIGHT * plan.devices.len());

    let reader = {
        let plan = plan.clone();
        let progress = progress.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || read_jobs(&plan, sizing, jobs_tx, progress, &stop))?
    };
    let mut writer = Writer {
        shards: ShardWriter::new(
            &plan.root,
            &plan.shard_dir,
            schema.clone(),
            plan.args.rows_per_shard,
            info.dim,
        )
        .starting_at(plan.resume.as_ref().map_or(0, |r| r.kept.len() as u64)),
        manifest,
        manifest_path: plan.manifest_path.clone(),
        schema,
        model: plan.args.model.clone(),
        run_id: plan.run_id.clone(),
        created_at: plan.created_at.clone(),
        dim: info.dim as usize,
        dtype: args.embedding_dtype,
        tokens: 0,
        padded_tokens: 0,
        progress: progress.clone(),
        first_row_at: None,
        progress_row: -1,
        rows_read: 0,
        max_failed_rows: args.max_failed_rows,
        restarts: pool.restarts(),
    };
    let writer_thread = std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || {
            let res = writer.run(done_rx);
            (writer, res)
        })?;

    // A first signal stops reading; the rows in flight are finished and written, and the open
    // shard is flushed (marked partial). A second one stops at once: the pool (and with it
    // every encoder) is dropped, and the open shard is removed. Either way the manifest says
    // `interrupted` and lists every shard on disk.
    let pool_run = pool.run(jobs_rx, done_tx);
    tokio::pin!(pool_run);
    let mut first_signal: Option<&'static str> = None;
    let pool_res = loop {
        tokio::select! {
            res = &mut pool_run => break res,
            sig = signals.recv() => {
                if first_signal.is_some() {
                    break Err(Interrupted(sig).into());
                }
                first_signal = Some(sig);
                stop.store(true, Ordering::SeqCst);
                progress.suspend(|| eprintln!(
                    "chatspace: {sig}: finishing the rows in flight; send it again to stop at once"
                ));
            }
        }
    };
    let graceful = first_signal.filter(|_| pool_res.is_ok());
    let read_res = reader
        .join()
        .map_err(|_| anyhow!("reader thread panicked"))?;
    let (mut writer, write_res) = writer_thread
        .join()
        .map_err(|_| anyhow!("writer thread panicked"))?;
    progress.finish_and_clear();

    let failure = match (read_res, pool_res, write_res) {
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Some(e),
        (Ok(stats), Ok(()), Ok(())) => {
            let m = &mut writer.manifest;
            m.input_rows = stats.rows_read;
            m.rows_skipped = stats.skipped.values().sum();
            let named = |reasons: &SkipReasons| -> BTreeMap<String, u64> {
                reasons.iter().map(|(k, v)| (k.to_string(), *v)).collect()
            };
            m.skipped_reasons = named(&stats.skipped);
            m.turns_skipped = named(&stats.turns_skipped);
            match graceful {
                Some(sig) => Some(
                    writer
                        .flush_partial()
                        .err()
                        .unwrap_or_else(|| Interrupted(sig).into()),
                ),
                None => writer.shards_done(stats.rows_read).err(),
            }
        }
    };
    if let Some(err) = failure {
        writer.shards.abandon();
        // Only rows in complete shards count: the open shard was removed.
        writer.manifest.rows_total = writer.manifest.shards.iter().map(|s| s.rows).sum();
        writer.manifest.status = if err.downcast_ref::<Interrupted>().is_some() {
            Status::Interrupted
        } else {
            Status::Failed
        };
        // Keep the manifest true to the shards that are complete. If even that fails (a full
        // disk), the earlier manifest still lists only complete shards; report the first error.
        if let Err(e) = manifest::write_json_atomic(&plan.manifest_path, &writer.manifest) {
            tracing::error!("could not record the failed run in the manifest: {e:#}");
        }
        return Err(err);
    }
    let summary = writer.summary(&plan, started, plan.devices.len() as u32);
    manifest::write_json_atomic(&plan.run_path, &summary)?;
    Ok(Outcome {
        summary,
        manifest_path: plan.manifest_path.clone(),
    })
}

impl Writer {
    /// Closes the open shard early, marked partial, and records it.
    fn flush_partial(&mut self) -> Result<()> {
        let last: Vec<_> = self.shards.close_partial()?.into_iter().collect();
        self.record(last)
    }

    /// Closes the last shard and marks the manifest complete.
    fn shards_done(&mut self, rows_read: u64) -> Result<()> {
        let last: Vec<_> = self.shards.close()?.into_iter().collect();
        self.manifest.status = Status::Complete;
        self.record(last)?;
        self.rows_read = rows_read;
        Ok(())
    }

    fn summary(&self, plan: &RunPlan, started: Instant, encoders: u32) -> RunSummary {
        let m = &self.manifest;
        let secs = started.elapsed().as_secs_f64();
        RunSummary {
            dataset: m.dataset.clone(),
            subset: m.subset.clone(),
            split: m.split.clone(),
            model: m.model.clone(),
            created_at: m.created_at.clone(),
            finished_at: manifest::now_rfc3339(),
            run_id: m.run_id.clone(),
            status: m.status,
            duration_seconds: secs,
            rows_per_second: m.rows_total as f64 / secs.max(1e-9),
            rows_read: self.rows_read,
            rows_total: m.rows_total,
            rows_skipped: m.rows_skipped,
            rows_truncated: m.rows_truncated,
            rows_failed: m.rows_failed_count,
            tokens: self.tokens,
            padded_tokens: self.padded_tokens,
            seconds_to_first_row: self
                .first_row_at
                .map(|t| t.saturating_duration_since(started).as_secs_f64()),
            padding_ratio: if self.padded_tokens == 0 {
                0.0
            } else {
                1.0 - self.tokens as f64 / self.padded_tokens as f64
            },
            num_shards: m.shards.len() as u64,
            embedding_dim: m.embedding_dim,
            encoders,
            encoder_restarts: self.restarts.counts(),
            manifest_path: plan.manifest_path.display().to_string(),
            min_norm: m.min_norm,
            max_norm: m.max_norm,
            tool_version: Tool::current().version,
        }
    }
}

fn run_config(plan: &RunPlan) -> Result<serde_json::Value> {
    let mut cfg = plan::comparable_config(&plan.args, &plan.extractor, plan.devices.len())?;
    let extra: HashMap<&str, serde_json::Value> = HashMap::from([
        ("model_dir", serde_json::json!(plan.model_dir)),
        ("dataset_files", serde_json::json!(plan.dataset.files)),
        (
            "encoder_devices",
            serde_json::json!(
                plan.devices
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
        ),
    ]);
    if let Some(obj) = cfg.as_object_mut() {
        for (k, v) in extra {
            obj.insert(k.to_string(), v);
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(s: &JobSizing, total: Option<u64>, rows: u64) -> Vec<usize> {
        let (mut out, mut at) = (Vec::new(), 0u64);
        while at < rows {
            let n = job_cap(s, out.len() as u64, total.map(|t| t - at)).min((rows - at) as usize);
            out.push(n);
            at += n as u64;
        }
        out
    }

    #[test]
    fn jobs_ramp_up_then_shrink_towards_the_end() {
        let s = JobSizing {
            batch_rows: 32,
            job_rows: 1024,
            encoders: 2,
        };
        let known = sizes(&s, Some(20_000), 20_000);
        assert_eq!(known[..3], [32, 1024, 1024]);
        // The last jobs are no larger than a share of what is left, down to one batch.
        let last: Vec<usize> = known.iter().rev().take(4).copied().collect();
        assert!(last.iter().all(|&n| n <= 64), "{known:?}");
        assert!(
            known
                .iter()
                .all(|&n| n >= 32 || n == *known.last().unwrap())
        );
        assert_eq!(known.iter().sum::<usize>(), 20_000);
        // Of unknown size: full jobs to the end.
        let unknown = sizes(&s, None, 20_000);
        assert!(unknown[1..unknown.len() - 1].iter().all(|&n| n == 1024));
        // A share of the rest never goes under one batch, nor over --unit-rows.
        assert_eq!(job_cap(&s, 40, Some(10)), 32);
        assert_eq!(job_cap(&s, 40, Some(u64::MAX)), 1024);
    }
}
