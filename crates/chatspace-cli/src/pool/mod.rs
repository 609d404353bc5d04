//! The encoder pool: spawns `chatspace-encoder serve` processes, checks their handshake, feeds
//! them numbered jobs, hands back their embeddings, and outlives encoders that fail.
//!
//! Each encoder gets its own socket in a private (0700) folder that is removed when the pool is
//! dropped, and a per-run secret through its environment. Each encoder has up to
//! [`JOBS_IN_FLIGHT`] jobs outstanding so it can tokenize one while it runs another; jobs come from
//! one shared queue, so faster encoders take more. An encoder's stderr is re-emitted through
//! `tracing`, and its last lines explain its death if it dies.
//!
//! **Failures.** Each encoder slot's driver owns the jobs it has in flight. When its encoder dies
//! (end of stream, a broken frame, the process exiting) or leaves the unit it is working on
//! unanswered for [`Recovery::unit_timeout`] (its process group is then killed), those jobs go
//! back to a shared retry queue, served before the normal one, each with one more attempt, and
//! the slot starts a new encoder after a backoff (0.5 s, doubling, at most 8 s). A slot whose
//! encoder dies more than [`Recovery::max_restarts`] times in a row, without answering a unit in
//! between, fails the run.
//!
//! **Isolation.** A job that was in flight through [`SUSPECT_AFTER`] deaths is suspect: it is sent
//! alone, and if it kills its encoder again, hangs it, or an encoder answers `Failed` for it
//! (an error with the encoder still alive is deterministic, so that needs no second try), it is
//! split into halves, each sent alone, recursively, down to single rows ([`Isolation`]). Deaths
//! while isolating do not count as restarts in a row: each one narrows the search. A row that
//! fails alone is reported in [`Done::failed`] with its reason, the job's other rows are returned
//! as usual, and the job's [`Done`] is sent once. More than [`Recovery::max_failed_rows`] rows
//! lost to dying or hung encoders fails the run (an encoder that dies on every row would
//! otherwise be bisected through the whole dataset).
//!
//! Memory stays bounded while a job is isolated: slots take a new job only while it is less than
//! a window of jobs ahead of the oldest unfinished one, so the writer's reorder buffer stays small.

use std::collections::{BTreeSet, VecDeque};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chatspace_proto::conn::{read_frame_async, write_frame_async};
use chatspace_proto::{FromEncoder, Hello, ModelInfo, PROTO_VERSION, ProtoError, ToEncoder, Work};
use interprocess::local_socket::ListenerOptions;
use interprocess::local_socket::tokio::{Stream, prelude::*};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::time::Instant;

use crate::args::EmbedArgs;
use crate::error::EncoderExit;

mod encoder;
mod isolation;
mod slot;

use encoder::*;
use isolation::*;
use slot::*;

/// Jobs outstanding per encoder.
pub const JOBS_IN_FLIGHT: usize = 2;
/// Lines of an encoder's stderr kept to explain a failure.
const STDERR_TAIL: usize = 20;
/// Deaths a job may be in flight through before it is sent alone.
pub const SUSPECT_AFTER: u32 = 2;
/// The first wait before restarting an encoder; it doubles with each restart in a row.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// The longest wait before restarting an encoder.
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// How the pool deals with encoders that fail.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The longest an encoder may take over the unit it is working on before it is killed.
    pub unit_timeout: Duration,
    /// Restarts in a row per slot (without an answered unit in between) before the run fails.
    pub max_restarts: u32,
    /// Rows that may be lost to encoders dying or hanging on them before the run fails (the
    /// writer holds all failed rows to the same limit).
    pub max_failed_rows: u64,
}

impl Recovery {
    /// The policy the command line asks for.
    pub fn from_args(args: &EmbedArgs) -> Self {
        Self {
            unit_timeout: Duration::from_secs(args.unit_timeout),
            max_restarts: args.max_restarts,
            max_failed_rows: args.max_failed_rows,
        }
    }

    /// The wait before a restart, after `strikes` restarts in a row.
    fn backoff(strikes: u32) -> Duration {
        let doublings = strikes.saturating_sub(1).min(16);
        (BACKOFF_FIRST * (1u32 << doublings)).min(BACKOFF_MAX)
    }
}

/// How to start the encoders.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The `chatspace-encoder` executable.
    pub encoder_bin: PathBuf,
    /// The `--device` of each encoder to start (`cpu`, `cuda:K`), one entry per encoder.
    pub devices: Vec<chatspace_proto::Device>,
    /// The model folder.
    pub model_dir: PathBuf,
    /// The ONNX file inside it.
    pub onnx_file: String,
    /// The ONNX Runtime library, when given on the command line.
    pub ort_lib: Option<PathBuf>,
    /// Intra-op threads per encoder.
    pub threads: u32,
    /// Rows per inference batch.
    pub batch_size: u32,
    /// Padded tokens per inference batch (0: no limit).
    pub tokens_per_batch: u32,
    /// Model options passed on to every encoder as they are (`--pooling mean`, `--prompt X`...).
    pub model_flags: Vec<String>,
    /// Set when the run is stopping: no new job is taken from the queue.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// How long an encoder may take to connect and load its model.
    pub startup_timeout: Duration,
    /// Timeouts, restarts and failed rows.
    pub recovery: Recovery,
}

/// Texts to embed plus whatever the caller needs back with the result.
#[derive(Debug)]
pub struct Job<P> {
    /// Unique, increasing id.
    pub id: u64,
    /// The texts.
    pub texts: Vec<String>,
    /// The caller's data, returned untouched.
    pub payload: P,
}

/// A finished job.
#[derive(Debug)]
pub struct Done<P> {
    /// The job, texts included.
    pub job: Job<P>,
    /// `(job.texts.len() - failed.len()) * dim` values, row-major: the rows that did not fail,
    /// in order.
    pub vectors: Vec<f32>,
    /// Real tokens.
    pub tokens: u64,
    /// Tokens including padding.
    pub padded_tokens: u64,
    /// Texts cut to the token limit.
    pub truncated: u32,
    /// Rows that failed alone, as (offset in `job.texts`, reason), in order; usually empty.
    pub failed: Vec<(usize, String)>,
}

/// Encoder restarts per slot, readable while the pool runs and after.
#[derive(Debug, Clone)]
pub struct Restarts(Arc<[AtomicU32]>);

impl Restarts {
    fn new(slots: u32) -> Self {
        Self((0..slots).map(|_| AtomicU32::new(0)).collect())
    }

    /// Counts one restart of `slot`; returns its new count.
    fn bump(&self, slot: u32) -> u32 {
        self.0[slot as usize].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Restarts so far, by slot.
    pub fn counts(&self) -> Vec<u32> {
        self.0.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }
}

/// The started encoders and what they said about the model.
pub struct Pool {
    encoders: Vec<Encoder>,
    /// The model as encoder 0 reported it (all encoders agree).
    pub info: ModelInfo,
    cfg: PoolConfig,
    secret: String,
    restarts: Restarts,
    dir: SocketDir,
}

fn secret() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(crate::shard::hex(&bytes))
}

impl Pool {
    /// Starts every encoder and waits until all have loaded the model.
    pub async fn start(cfg: &PoolConfig) -> Result<Pool> {
        let dir = SocketDir::create()?;
        let secret = secret()?;
        let mut set = tokio::task::JoinSet::new();
        for id in 0..cfg.devices.len() as u32 {
            let cfg = cfg.clone();
            let sock = dir.0.join(format!("enc-{id}.sock"));
            let secret = secret.clone();
            set.spawn(async move { start_one(&cfg, id, &sock, &secret).await });
        }
        let mut encoders = Vec::new();
        let mut first_err = None;
        while let Some(res) = set.join_next().await {
            match res.expect("encoder start task panicked") {
                Ok(pair) => encoders.push(pair),
                Err(e) if first_err.is_none() => first_err = Some(e),
                Err(_) => {}
            }
        }
        if let Some(e) = first_err {
            for (mut enc, _) in encoders {
                let _ = enc.child.start_kill();
            }
            return Err(e);
        }
        encoders.sort_by_key(|(e, _)| e.id);
        let info = encoders[0].1.clone();
        for (enc, other) in &encoders[1..] {
            if other.dim != info.dim || other.model != info.model {
                bail!(
                    "encoders disagree about the model: encoder 0 has {} (dim {}), encoder {} has {} (dim {})",
                    info.model,
                    info.dim,
                    enc.id,
                    other.model,
                    other.dim
                );
            }
        }
        Ok(Pool {
            encoders: encoders.into_iter().map(|(e, _)| e).collect(),
            info,
            cfg: cfg.clone(),
            secret,
            restarts: Restarts::new(cfg.devices.len() as u32),
            dir,
        })
    }

    /// A handle on the restart counts, which stay readable after [`Pool::run`] consumed the pool.
    pub fn restarts(&self) -> Restarts {
        self.restarts.clone()
    }

    /// Feeds `jobs` to the encoders until the queue closes and every job is done, sending each
    /// result to `done` (in completion order), restarting encoders that fail. Shuts the
    /// encoders down at the end.
    pub async fn run<P: Send + 'static>(
        self,
        jobs: mpsc::Receiver<Job<P>>,
        done: mpsc::Sender<Done<P>>,
    ) -> Result<()> {
        let Pool {
            encoders,
            info,
            cfg,
            secret,
            restarts,
            dir,
        } = self;
        let shared = Arc::new(Shared {
            window: (4 * JOBS_IN_FLIGHT * encoders.len()).max(16) as u64,
            cfg,
            secret,
            sock_dir: dir.0.clone(),
            dim: info.dim as usize,
            jobs: Mutex::new(jobs),
            state: StdMutex::new(State::new()),
            notify: Notify::new(),
            next_unit: AtomicU64::new(0),
            restarts,
            done,
        });
        let mut set = tokio::task::JoinSet::new();
        for enc in encoders {
            set.spawn(Slot::new(enc, shared.clone()).drive());
        }
        drop(shared);
        let mut result = Ok(());
        while let Some(res) = set.join_next().await {
            let res = res
                .map_err(|e| anyhow!("encoder task failed: {e}"))
                .and_then(|r| r);
            if let Err(e) = res
                && result.is_ok()
            {
                result = Err(e);
                // Stop the others: nothing more can be written in order.
                set.abort_all();
            }
        }
        drop(dir);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(Recovery::backoff(0), Duration::from_millis(500));
        assert_eq!(Recovery::backoff(1), Duration::from_millis(500));
        assert_eq!(Recovery::backoff(2), Duration::from_secs(1));
        assert_eq!(Recovery::backoff(4), Duration::from_secs(4));
        assert_eq!(Recovery::backoff(40), BACKOFF_MAX);
    }
}
