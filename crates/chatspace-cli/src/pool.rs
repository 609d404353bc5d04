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

/// A private folder for the sockets, removed on drop.
struct SocketDir(PathBuf);

impl SocketDir {
    fn create() -> Result<Self> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).map_err(|e| anyhow!("no randomness: {e}"))?;
        let dir = base.join(format!(
            "chatspace-{}-{}",
            std::process::id(),
            crate::shard::hex(&nonce)
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .with_context(|| format!("cannot create socket folder {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Tail = Arc<StdMutex<VecDeque<String>>>;

/// One running encoder.
struct Encoder {
    id: u32,
    child: Child,
    tx: Arc<Stream>,
    rx: mpsc::UnboundedReceiver<Result<FromEncoder, ProtoError>>,
    tail: Tail,
}

impl Encoder {
    /// Describes how the encoder ended, for an error message; waits briefly for it to exit.
    async fn death(&mut self) -> EncoderExit {
        death(self.id, &mut self.child, &self.tail).await
    }

    /// SIGKILLs the encoder's process group (it leads its own), or the process elsewhere.
    fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.child.id() {
            // SAFETY: killpg takes a process group id and a signal number; no memory is shared.
            // The child is not reaped yet (we hold it), so its id cannot have been reused.
            unsafe {
                libc::killpg(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = self.child.start_kill();
    }
}

/// How an encoder process ended.
struct Ended {
    /// `exited (<status>)`, or what went wrong while waiting.
    how: String,
    /// Its exit status (`exit status: 1`, `signal: 9 (SIGKILL)`), when it exited.
    status: Option<String>,
    /// Its exit code, when it exited with one.
    code: Option<i32>,
    /// Its last non-blank stderr line, without log prefixes.
    last: Option<String>,
}

impl Ended {
    /// The exit code the supervisor should end with because of this encoder.
    fn exit_code(&self) -> i32 {
        match self.code {
            Some(c)
                if [
                    chatspace_proto::exit::BAD_INPUT,
                    chatspace_proto::exit::NO_RUNTIME,
                ]
                .contains(&c) =>
            {
                c
            }
            _ => chatspace_proto::exit::FAILURE,
        }
    }

    /// `": <last stderr line>"`, or nothing.
    fn last_words(&self) -> String {
        self.last
            .as_deref()
            .map(|l| format!(": {l}"))
            .unwrap_or_default()
    }
}

/// Waits briefly for encoder `id` to exit (killing it if it does not) and says how it ended.
async fn ended(child: &mut Child, tail: &Tail) -> Ended {
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let last = tail
        .lock()
        .expect("tail lock")
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| match split_log_line(l) {
            Some((_, msg)) => msg.to_string(),
            None => strip_log_prefix(l).to_string(),
        });
    match status {
        Ok(Ok(s)) => Ended {
            how: format!("exited ({s})"),
            status: Some(s.to_string()),
            code: s.code(),
            last,
        },
        Ok(Err(e)) => Ended {
            how: format!("could not be waited for ({e})"),
            status: None,
            code: None,
            last,
        },
        Err(_) => {
            let _ = child.start_kill();
            Ended {
                how: "stopped answering and was killed".into(),
                status: None,
                code: None,
                last,
            }
        }
    }
}

/// Describes how encoder `id` ended, for an error message; waits briefly for it to exit.
async fn death(id: u32, child: &mut Child, tail: &Tail) -> EncoderExit {
    let ended = ended(child, tail).await;
    EncoderExit {
        message: format!("encoder {id} {}{}", ended.how, ended.last_words()),
        code: ended.exit_code(),
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

async fn start_one(
    cfg: &PoolConfig,
    id: u32,
    sock: &Path,
    secret: &str,
) -> Result<(Encoder, ModelInfo)> {
    let name = chatspace_proto::socket_name(sock)?;
    let listener = ListenerOptions::new()
        .name(name)
        .create_tokio()
        .with_context(|| format!("cannot listen on {}", sock.display()))?;

    let mut cmd = Command::new(&cfg.encoder_bin);
    cmd.arg("serve")
        .arg("--socket")
        .arg(sock)
        .arg("--encoder-id")
        .arg(id.to_string())
        .arg("--model")
        .arg(&cfg.model_dir)
        .arg("--onnx-file")
        .arg(&cfg.onnx_file)
        .arg("--device")
        .arg(cfg.devices[id as usize % cfg.devices.len()].to_string())
        .arg("--threads")
        .arg(cfg.threads.to_string())
        .arg("--batch-size")
        .arg(cfg.batch_size.to_string())
        .arg("--tokens-per-batch")
        .arg(cfg.tokens_per_batch.to_string())
        .args(&cfg.model_flags);
    if let Some(lib) = &cfg.ort_lib {
        cmd.arg("--ort-lib").arg(lib);
    }
    cmd.env("CHATSPACE_SECRET", secret)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Own process group: a Ctrl-C at the terminal reaches the supervisor only, which decides.
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start encoder {}", cfg.encoder_bin.display()))?;

    let tail: Tail = Arc::new(StdMutex::new(VecDeque::with_capacity(STDERR_TAIL)));
    if let Some(stderr) = child.stderr.take() {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match split_log_line(&line) {
                    Some(("ERROR", msg)) => tracing::error!(encoder = id, "{msg}"),
                    Some(("WARN", msg)) => tracing::warn!(encoder = id, "{msg}"),
                    Some(("INFO", msg)) => tracing::info!(encoder = id, "{msg}"),
                    Some((_, msg)) => tracing::debug!(encoder = id, "{msg}"),
                    // Not a log line: the encoder's last words (its error line).
                    None => tracing::debug!(encoder = id, "{line}"),
                }
                let mut t = tail.lock().expect("tail lock");
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
    }

    let accepted = tokio::select! {
        // An encoder that connected and then exited still gets its say: its frames come first.
        biased;
        conn = listener.accept() => Some(conn.with_context(|| format!("encoder {id}: accept failed"))?),
        _ = child.wait() => None,
        _ = tokio::time::sleep(cfg.startup_timeout) => None,
    };
    drop(listener);
    let (msg_tx, rx) = mpsc::unbounded_channel();
    let Some(stream) = accepted else {
        return Err(death(id, &mut child, &tail).await.into());
    };
    let tx = Arc::new(stream);
    tokio::spawn(read_loop(tx.clone(), msg_tx));
    let mut enc = Encoder {
        id,
        child,
        tx,
        rx,
        tail,
    };

    // Handshake: Hello in, Welcome or Reject out.
    let hello = tokio::time::timeout(cfg.startup_timeout, enc.rx.recv()).await;
    let hello: Hello = match hello {
        Ok(Some(Ok(FromEncoder::Hello(h)))) => h,
        Ok(Some(Ok(other))) => {
            bail!("encoder {id} broke the protocol: expected Hello, got {other:?}")
        }
        Ok(Some(Err(e))) => {
            return Err(anyhow!(e).context(format!("encoder {id} sent a bad handshake")));
        }
        Ok(None) | Err(_) => return Err(enc.death().await.into()),
    };
    let reject = if hello.proto_version != PROTO_VERSION {
        Some(format!(
            "protocol version mismatch: encoder speaks {}, supervisor speaks {PROTO_VERSION}",
            hello.proto_version
        ))
    } else if hello.secret != secret {
        Some("handshake failed: wrong run secret".to_string())
    } else {
        None
    };
    if let Some(reason) = reject {
        let _ = write_frame_async(
            &mut &*enc.tx,
            &ToEncoder::Reject {
                reason: reason.clone(),
            },
        )
        .await;
        return Err(EncoderExit {
            message: format!("encoder {id}: {reason}"),
            code: chatspace_proto::exit::PROTOCOL,
        }
        .into());
    }
    write_frame_async(
        &mut &*enc.tx,
        &ToEncoder::Welcome {
            proto_version: PROTO_VERSION,
        },
    )
    .await?;

    match tokio::time::timeout(cfg.startup_timeout, enc.rx.recv()).await {
        Ok(Some(Ok(FromEncoder::Ready(info)))) => {
            tracing::debug!(encoder = id, pid = hello.pid, ?info, "encoder ready");
            Ok((enc, info))
        }
        Ok(Some(Ok(FromEncoder::Fatal { reason }))) => {
            let mut death = enc.death().await;
            death.message = format!("encoder {id} could not start: {reason}");
            Err(death.into())
        }
        Ok(Some(Ok(other))) => {
            bail!("encoder {id} broke the protocol: expected Ready, got {other:?}")
        }
        Ok(Some(Err(e))) => Err(anyhow!(e).context(format!("encoder {id} sent a bad frame"))),
        Ok(None) => Err(enc.death().await.into()),
        Err(_) => {
            let _ = enc.child.start_kill();
            bail!(
                "encoder {id} did not load the model within {} s",
                cfg.startup_timeout.as_secs()
            )
        }
    }
}

/// Turns an encoder's frames into channel messages until it closes the connection.
async fn read_loop(
    stream: Arc<Stream>,
    tx: mpsc::UnboundedSender<Result<FromEncoder, ProtoError>>,
) {
    let mut recv = &*stream;
    loop {
        match read_frame_async::<_, FromEncoder>(&mut recv).await {
            Ok(Some(msg)) => {
                if tx.send(Ok(msg)).is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// Splits an encoder log line (`<timestamp> <LEVEL> <target>: <message>`) into level and the
/// rest; `None` for other lines.
fn split_log_line(line: &str) -> Option<(&str, &str)> {
    let (stamp, rest) = line.trim_start().split_once(char::is_whitespace)?;
    if !stamp.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (level, msg) = rest.trim_start().split_once(char::is_whitespace)?;
    matches!(level, "ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE")
        .then_some((level, msg.trim_start()))
}

/// Drops a `chatspace-encoder: ` prefix that the encoder puts on its error lines.
fn strip_log_prefix(line: &str) -> &str {
    line.trim().trim_start_matches("chatspace-encoder: ")
}

/// What every slot's driver shares.
struct Shared<P> {
    cfg: PoolConfig,
    secret: String,
    sock_dir: PathBuf,
    /// Embedding width, to check the parts of isolated jobs.
    dim: usize,
    /// How far ahead of the oldest unfinished job a slot may take a new one.
    window: u64,
    /// The normal queue.
    jobs: Mutex<mpsc::Receiver<Job<P>>>,
    state: StdMutex<State<P>>,
    /// Wakes waiting slots when `state` changes.
    notify: Notify,
    /// Wire ids: unique within the run, whatever unit (job or part of one) they name.
    next_unit: AtomicU64,
    restarts: Restarts,
    done: mpsc::Sender<Done<P>>,
}

impl<P> Shared<P> {
    fn state(&self) -> std::sync::MutexGuard<'_, State<P>> {
        self.state.lock().expect("pool state lock")
    }

    /// Queues jobs to send again, oldest first (the writer waits for the oldest), and wakes
    /// the slots.
    fn retry(&self, units: Vec<Retry<P>>) {
        if units.is_empty() {
            return;
        }
        let mut st = self.state();
        for unit in units {
            st.push_retry(unit);
        }
        drop(st);
        self.notify.notify_waiters();
    }
}

/// The pool's bookkeeping, under one lock.
struct State<P> {
    /// Jobs to send again, by job id; served before the normal queue.
    retry: VecDeque<Retry<P>>,
    /// Ids of the jobs taken from the normal queue and not yet done.
    live: BTreeSet<u64>,
    /// The last job id taken from the normal queue.
    last_taken: Option<u64>,
    /// The normal queue has ended.
    closed: bool,
    /// The receiver of results is gone: stop.
    stopped: bool,
    /// Rows lost to encoders dying or hanging on them.
    rows_lost: u64,
}

impl<P> State<P> {
    fn new() -> Self {
        Self {
            retry: VecDeque::new(),
            live: BTreeSet::new(),
            last_taken: None,
            closed: false,
            stopped: false,
            rows_lost: 0,
        }
    }

    fn push_retry(&mut self, unit: Retry<P>) {
        let at = self.retry.partition_point(|r| r.job_id() < unit.job_id());
        self.retry.insert(at, unit);
    }

    /// Whether the next job would be less than `window` jobs ahead of the oldest unfinished one.
    fn has_room(&self, window: u64) -> bool {
        match (self.live.first(), self.last_taken) {
            (Some(&oldest), Some(last)) => last + 1 - oldest < window,
            _ => true,
        }
    }
}

/// A job waiting to be sent again.
enum Retry<P> {
    /// Send it as usual.
    Again {
        /// The job.
        job: Job<P>,
        /// Deaths it was in flight through.
        attempts: u32,
    },
    /// Send it alone, part by part.
    Isolate {
        /// The job.
        job: Job<P>,
        /// Which parts are left.
        iso: Isolation,
    },
}

impl<P> Retry<P> {
    fn job_id(&self) -> u64 {
        match self {
            Retry::Again { job, .. } | Retry::Isolate { job, .. } => job.id,
        }
    }
}

/// A unit sent to a slot's encoder and not answered yet.
struct Sent<P> {
    /// Its wire id.
    unit_id: u64,
    what: Flight<P>,
}

enum Flight<P> {
    /// A whole job, among up to [`JOBS_IN_FLIGHT`].
    Whole { job: Job<P>, attempts: u32 },
    /// Rows of the job the slot is isolating, alone in flight.
    Part(Range<usize>),
}

/// Why a slot's encoder has to be replaced.
enum Cause {
    /// The connection ended (or a write to it failed).
    Gone,
    /// The encoder sent a frame that does not decode.
    BadFrame(String),
    /// The encoder said it cannot go on.
    Fatal(String),
    /// The unit at the head of the line was not answered in time.
    Timeout,
}

/// What a slot does next.
enum Step<P> {
    /// The results' receiver is gone.
    Stop,
    /// Every job is done.
    ShutDown,
    /// Send this job from the retry queue.
    Send(Retry<P>),
    /// Send these rows of the job being isolated.
    SendPart(Range<usize>),
    /// Every row of the job being isolated is accounted for: pass it on.
    Finish,
    /// Wait for an event (and for a job from the normal queue, if `take_normal`).
    Wait { take_normal: bool },
}

/// What woke a slot up.
enum Event<P> {
    Woken,
    Job(Option<Job<P>>),
    Message(Option<Result<FromEncoder, ProtoError>>),
    TimedOut,
}

/// One encoder slot: its encoder (replaced when it fails), the units it has in flight, and the
/// job it is isolating, if any.
struct Slot<P> {
    id: u32,
    enc: Encoder,
    shared: Arc<Shared<P>>,
    in_flight: VecDeque<Sent<P>>,
    /// The job being split down to its failing rows; while it is, nothing else is in flight.
    isolating: Option<(Job<P>, Isolation)>,
    /// Deaths since the encoder last answered a unit.
    strikes: u32,
    /// When the unit at the head of the line must have been answered.
    deadline: Option<Instant>,
}

/// The next job of the normal queue; `None` once it is closed, or once the run is stopping
/// (jobs still queued then are dropped: they were never sent, and `--resume` redoes them).
async fn next_job<P>(shared: &Shared<P>) -> Option<Job<P>> {
    let job = shared.jobs.lock().await.recv().await;
    job.filter(|_| !shared.cfg.stop.load(std::sync::atomic::Ordering::SeqCst))
}

/// An error and its causes on one line.
fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Encodes a `Work` frame of `texts` without copying them.
fn encode_work(unit_id: u64, texts: &mut Vec<String>) -> Result<Vec<u8>, ProtoError> {
    let msg = ToEncoder::Work(Work {
        unit_id,
        texts: std::mem::take(texts),
    });
    let bytes = chatspace_proto::frame::encode(&msg);
    let ToEncoder::Work(work) = msg else {
        unreachable!()
    };
    *texts = work.texts;
    bytes
}

impl<P: Send + 'static> Slot<P> {
    fn new(enc: Encoder, shared: Arc<Shared<P>>) -> Self {
        Self {
            id: enc.id,
            enc,
            shared,
            in_flight: VecDeque::with_capacity(JOBS_IN_FLIGHT),
            isolating: None,
            strikes: 0,
            deadline: None,
        }
    }

    /// The slot's loop: keep the encoder busy (retries first, then the normal queue; an
    /// isolated job alone), pass results on, replace the encoder when it fails, and shut it down
    /// when every job is done.
    async fn drive(mut self) -> Result<()> {
        loop {
            let shared = self.shared.clone();
            let notified = shared.notify.notified();
            tokio::pin!(notified);
            // Registered before the state is read, so no wake-up in between is lost.
            notified.as_mut().enable();

            let take_normal = match self.next_step() {
                Step::Stop => return Ok(()),
                Step::ShutDown => return self.shut_down().await,
                Step::SendPart(rows) => {
                    self.send_part(rows).await?;
                    continue;
                }
                Step::Finish => {
                    let (job, iso) = self.isolating.take().expect("a job being isolated");
                    self.emit(iso.finish(job)).await;
                    continue;
                }
                Step::Send(Retry::Again { job, attempts }) => {
                    self.send_whole(job, attempts).await?;
                    continue;
                }
                Step::Send(Retry::Isolate { job, iso }) => {
                    tracing::info!(
                        encoder = self.id,
                        job = job.id,
                        "sending the job's rows alone to find the ones at fault"
                    );
                    self.isolating = Some((job, iso));
                    continue;
                }
                Step::Wait { take_normal } => take_normal,
            };

            let deadline = self.deadline;
            let event = tokio::select! {
                () = &mut notified => Event::Woken,
                job = next_job(&shared), if take_normal => Event::Job(job),
                msg = self.enc.rx.recv() => Event::Message(msg),
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)),
                    if deadline.is_some() => Event::TimedOut,
            };
            match event {
                Event::Woken => {}
                Event::Job(Some(job)) => {
                    {
                        let mut st = shared.state();
                        st.live.insert(job.id);
                        st.last_taken = Some(job.id);
                    }
                    self.send_whole(job, 0).await?;
                }
                Event::Job(None) => {
                    shared.state().closed = true;
                    shared.notify.notify_waiters();
                }
                Event::Message(msg) => self.on_message(msg).await?,
                Event::TimedOut => self.restart(Cause::Timeout).await?,
            }
        }
    }

    /// What to do next, short of waiting for an event.
    fn next_step(&mut self) -> Step<P> {
        let mut st = self.shared.state();
        if st.stopped {
            return Step::Stop;
        }
        if let Some((_, iso)) = &self.isolating {
            return match iso.next() {
                // One part at a time, alone.
                _ if !self.in_flight.is_empty() => Step::Wait { take_normal: false },
                Some(rows) => Step::SendPart(rows),
                None => Step::Finish,
            };
        }
        if st.closed && st.live.is_empty() {
            return Step::ShutDown;
        }
        let room = self.in_flight.len() < JOBS_IN_FLIGHT;
        match st.retry.front() {
            // A job that goes alone waits until nothing else is in flight.
            Some(Retry::Isolate { .. }) if self.in_flight.is_empty() => {
                Step::Send(st.retry.pop_front().expect("checked"))
            }
            Some(Retry::Again { .. }) if room => Step::Send(st.retry.pop_front().expect("checked")),
            Some(_) => Step::Wait { take_normal: false },
            None => Step::Wait {
                take_normal: !st.closed && room && st.has_room(self.shared.window),
            },
        }
    }

    /// Tells the encoder to finish and waits for it to exit. Every result is in by now, so an
    /// encoder that ends badly here only earns a warning.
    async fn shut_down(mut self) -> Result<()> {
        let _ = write_frame_async(&mut &*self.enc.tx, &ToEncoder::Shutdown).await;
        match tokio::time::timeout(Duration::from_secs(30), self.enc.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            _ => {
                self.enc.kill();
                let exit = self.enc.death().await;
                tracing::warn!("{} at shutdown, after its last unit", exit.message);
            }
        }
        Ok(())
    }

    /// Sends a whole job, or isolates it if it cannot be sent (too large for a frame).
    async fn send_whole(&mut self, mut job: Job<P>, attempts: u32) -> Result<()> {
        let unit_id = self.shared.next_unit.fetch_add(1, Ordering::Relaxed);
        let bytes = match encode_work(unit_id, &mut job.texts) {
            Ok(bytes) => bytes,
            Err(e) => {
                let reason = format!("cannot be sent: {}", one_line(&e));
                self.isolate(job, reason).await;
                return Ok(());
            }
        };
        self.push(Sent {
            unit_id,
            what: Flight::Whole { job, attempts },
        });
        self.write(&bytes).await
    }

    /// Sends rows of the job being isolated, alone.
    async fn send_part(&mut self, rows: Range<usize>) -> Result<()> {
        let unit_id = self.shared.next_unit.fetch_add(1, Ordering::Relaxed);
        let (job, iso) = self.isolating.as_mut().expect("a part of the isolated job");
        let mut texts = job.texts[rows.clone()].to_vec();
        match encode_work(unit_id, &mut texts) {
            Ok(bytes) => {
                self.push(Sent {
                    unit_id,
                    what: Flight::Part(rows),
                });
                self.write(&bytes).await
            }
            Err(e) => {
                iso.fail(format!("cannot be sent: {}", one_line(&e)));
                Ok(())
            }
        }
    }

    fn push(&mut self, sent: Sent<P>) {
        if self.in_flight.is_empty() {
            self.deadline = Some(Instant::now() + self.shared.cfg.recovery.unit_timeout);
        }
        self.in_flight.push_back(sent);
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match tokio::io::AsyncWriteExt::write_all(&mut &*self.enc.tx, bytes).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(encoder = self.id, "send failed: {e}");
                self.restart(Cause::Gone).await
            }
        }
    }

    /// Passes a finished job on, once.
    async fn emit(&mut self, done: Done<P>) {
        let id = done.job.id;
        let gone = self.shared.done.send(done).await.is_err();
        {
            let mut st = self.shared.state();
            st.live.remove(&id);
            // The writer is gone (it failed and will report why): stop.
            st.stopped |= gone;
        }
        self.shared.notify.notify_waiters();
    }

    /// A job an encoder could not embed: its rows go alone, down to the ones at fault.
    async fn isolate(&mut self, job: Job<P>, reason: String) {
        tracing::warn!(
            encoder = self.id,
            job = job.id,
            "a unit of {} rows failed ({reason}); isolating the rows at fault",
            job.texts.len()
        );
        let iso = Isolation::after_failure(job.texts.len(), reason);
        if iso.next().is_none() {
            self.emit(iso.finish(job)).await;
        } else {
            self.shared.retry(vec![Retry::Isolate { job, iso }]);
        }
    }

    /// Takes the answered unit off the line; the next one's clock starts now.
    fn answered(&mut self, unit_id: u64) -> Result<Sent<P>> {
        let Some(sent) = self.in_flight.pop_front() else {
            bail!(
                "encoder {} answered unit {unit_id} that it was never sent",
                self.id
            );
        };
        if sent.unit_id != unit_id {
            bail!(
                "encoder {} answered unit {unit_id} out of order (expected {})",
                self.id,
                sent.unit_id
            );
        }
        self.deadline = (!self.in_flight.is_empty())
            .then(|| Instant::now() + self.shared.cfg.recovery.unit_timeout);
        Ok(sent)
    }

    async fn on_message(&mut self, msg: Option<Result<FromEncoder, ProtoError>>) -> Result<()> {
        match msg {
            Some(Ok(FromEncoder::Embedded {
                unit_id,
                vectors,
                tokens,
                padded_tokens,
                truncated,
            })) => {
                let sent = self.answered(unit_id)?;
                self.strikes = 0;
                match sent.what {
                    Flight::Whole { job, .. } => {
                        self.emit(Done {
                            job,
                            vectors,
                            tokens,
                            padded_tokens,
                            truncated,
                            failed: Vec::new(),
                        })
                        .await;
                    }
                    Flight::Part(rows) => {
                        if vectors.len() != rows.len() * self.shared.dim {
                            bail!(
                                "encoder {} returned {} values for {} texts of dimension {}",
                                self.id,
                                vectors.len(),
                                rows.len(),
                                self.shared.dim
                            );
                        }
                        let (_, iso) = self.isolating.as_mut().expect("a part of the isolated job");
                        iso.succeed(vectors, tokens, padded_tokens, truncated);
                    }
                }
                Ok(())
            }
            Some(Ok(FromEncoder::Failed { unit_id, reason })) => {
                let sent = self.answered(unit_id)?;
                // Alive and answering: not a death.
                self.strikes = 0;
                match sent.what {
                    Flight::Whole { job, .. } => self.isolate(job, reason).await,
                    Flight::Part(rows) => {
                        let (job, iso) =
                            self.isolating.as_mut().expect("a part of the isolated job");
                        tracing::debug!(encoder = self.id, job = job.id, ?rows, %reason, "part failed");
                        iso.fail(reason);
                    }
                }
                Ok(())
            }
            Some(Ok(FromEncoder::Fatal { reason })) => self.restart(Cause::Fatal(reason)).await,
            Some(Ok(other)) => bail!(
                "encoder {} broke the protocol: unexpected {other:?}",
                self.id
            ),
            Some(Err(e)) => self.restart(Cause::BadFrame(one_line(&e))).await,
            None => self.restart(Cause::Gone).await,
        }
    }

    /// Replaces a failed encoder: its units in flight go back to the retry queue (or, for the
    /// part of an isolated job, are split further), and a new encoder starts after a backoff.
    /// Fails after more than `max_restarts` deaths in a row not explained by isolation.
    async fn restart(&mut self, cause: Cause) -> Result<()> {
        let recovery = self.shared.cfg.recovery.clone();
        let id = self.id;
        if matches!(cause, Cause::Timeout | Cause::BadFrame(_)) {
            self.enc.kill();
        }
        let ended = ended(&mut self.enc.child, &self.enc.tail).await;
        let status = ended.status.clone().unwrap_or_else(|| ended.how.clone());
        let timeout_s = recovery.unit_timeout.as_secs();
        let (what, how) = match &cause {
            Cause::Gone => ("died", status.clone()),
            Cause::BadFrame(e) => ("sent a bad frame", format!("{e}; killed")),
            Cause::Fatal(reason) => ("stopped", format!("{reason}; {status}")),
            Cause::Timeout => ("hung", format!("no answer within {timeout_s} s; killed")),
        };
        let row_reason = match &cause {
            Cause::Timeout => {
                format!(
                    "encoder did not answer within {timeout_s} s while embedding this row (killed)"
                )
            }
            _ => format!("encoder process {what} ({how}) while embedding this row"),
        };

        self.deadline = None;
        let mut isolating = false;
        let mut lost = 0;
        let mut retry = Vec::new();
        for sent in std::mem::take(&mut self.in_flight) {
            match sent.what {
                Flight::Part(rows) => {
                    isolating = true;
                    let (job, iso) = self.isolating.as_mut().expect("a part of the isolated job");
                    tracing::warn!(
                        "encoder {id} {what} ({how}) on rows {}..{} of job {}, sent alone; restarting",
                        rows.start,
                        rows.end,
                        job.id
                    );
                    if iso.fail(row_reason.clone()).is_some() {
                        lost += 1;
                    }
                }
                Flight::Whole { job, attempts } => {
                    let attempts = attempts + 1;
                    retry.push(if attempts >= SUSPECT_AFTER {
                        Retry::Isolate {
                            iso: Isolation::new(job.texts.len()),
                            job,
                        }
                    } else {
                        Retry::Again { job, attempts }
                    });
                }
            }
        }
        self.shared.retry(retry);
        if lost > 0 {
            let mut st = self.shared.state();
            st.rows_lost += lost;
            if st.rows_lost > recovery.max_failed_rows {
                bail!(
                    "encoders died or hung on {} rows, more than --max-failed-rows {}; last: {row_reason}{}",
                    st.rows_lost,
                    recovery.max_failed_rows,
                    ended.last_words()
                );
            }
        }
        {
            let st = self.shared.state();
            // Nobody needs a new encoder: the writer is gone, or every job is done.
            if st.stopped || (st.closed && st.live.is_empty()) {
                return Ok(());
            }
        }

        if !isolating {
            self.strikes += 1;
            if self.strikes > recovery.max_restarts {
                return Err(EncoderExit {
                    message: format!(
                        "encoder {id} {what} ({how}){}; that is {} failures without a unit answered in between, more than --max-restarts {}",
                        ended.last_words(),
                        self.strikes,
                        recovery.max_restarts,
                    ),
                    code: ended.exit_code(),
                }
                .into());
            }
            tracing::warn!(
                "encoder {id} {what} ({how}); restarting ({}/{})",
                self.strikes,
                recovery.max_restarts
            );
        }
        // Deaths while isolating narrow the search: no need to back off further.
        let mut backoff = if isolating {
            BACKOFF_FIRST
        } else {
            Recovery::backoff(self.strikes)
        };
        loop {
            tokio::time::sleep(backoff).await;
            let n = self.shared.restarts.bump(id);
            let sock = self.shared.sock_dir.join(format!("enc-{id}-{n}.sock"));
            match start_one(&self.shared.cfg, id, &sock, &self.shared.secret).await {
                Ok((enc, info)) => {
                    if info.dim as usize != self.shared.dim {
                        bail!(
                            "restarted encoder {id} reports dimension {}, not {}",
                            info.dim,
                            self.shared.dim
                        );
                    }
                    self.enc = enc;
                    return Ok(());
                }
                Err(e) => {
                    self.strikes += 1;
                    if self.strikes > recovery.max_restarts {
                        return Err(e.context(format!(
                            "encoder {id} could not be restarted (more than --max-restarts {})",
                            recovery.max_restarts
                        )));
                    }
                    tracing::warn!(
                        "encoder {id} could not be restarted ({e:#}); trying again ({}/{})",
                        self.strikes,
                        recovery.max_restarts
                    );
                    backoff = Recovery::backoff(self.strikes);
                }
            }
        }
    }
}

/// One job being split down to its failing rows: the row ranges still to send alone (each
/// failing range is split in halves, the first half next), and what came back. Pure
/// bookkeeping, so it is tested without processes.
#[derive(Debug)]
struct Isolation {
    /// Ranges still to try; the next one last.
    todo: Vec<Range<usize>>,
    /// The vectors of ranges that succeeded, by first row.
    good: Vec<(usize, Vec<f32>)>,
    /// Rows that failed alone, with the reason.
    failed: Vec<(usize, String)>,
    tokens: u64,
    padded_tokens: u64,
    truncated: u32,
}

impl Isolation {
    /// A job of `rows` rows, to be sent whole but alone first.
    fn new(rows: usize) -> Self {
        let mut todo = Vec::new();
        if rows > 0 {
            todo.push(0..rows);
        }
        Self {
            todo,
            good: Vec::new(),
            failed: Vec::new(),
            tokens: 0,
            padded_tokens: 0,
            truncated: 0,
        }
    }

    /// A job of `rows` rows that just failed as a whole for `reason`.
    fn after_failure(rows: usize, reason: String) -> Self {
        let mut iso = Self::new(rows);
        iso.fail(reason);
        iso
    }

    /// The rows to send next (alone); `None` when every row is accounted for.
    fn next(&self) -> Option<Range<usize>> {
        self.todo.last().cloned()
    }

    /// The rows of [`Isolation::next`] were embedded.
    fn succeed(&mut self, vectors: Vec<f32>, tokens: u64, padded_tokens: u64, truncated: u32) {
        let rows = self.todo.pop().expect("a range was sent");
        self.good.push((rows.start, vectors));
        self.tokens += tokens;
        self.padded_tokens += padded_tokens;
        self.truncated += truncated;
    }

    /// The rows of [`Isolation::next`] failed: a single row is recorded as failed (and returned),
    /// more are split in halves.
    fn fail(&mut self, reason: String) -> Option<usize> {
        let rows = self.todo.pop()?;
        if rows.len() == 1 {
            self.failed.push((rows.start, reason));
            return Some(rows.start);
        }
        let mid = rows.start + rows.len() / 2;
        self.todo.push(mid..rows.end);
        self.todo.push(rows.start..mid);
        None
    }

    /// The job's result: the good rows' vectors in order, and the failed rows.
    fn finish<P>(mut self, job: Job<P>) -> Done<P> {
        debug_assert!(self.todo.is_empty());
        self.good.sort_by_key(|(start, _)| *start);
        self.failed.sort_by_key(|(row, _)| *row);
        Done {
            job,
            vectors: self.good.into_iter().flat_map(|(_, v)| v).collect(),
            tokens: self.tokens,
            padded_tokens: self.padded_tokens,
            truncated: self.truncated,
            failed: self.failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_log_lines_are_split_into_level_and_message() {
        assert_eq!(
            split_log_line("2026-11-27T14:20:37.671990Z  WARN chatspace_encoder::model: old IR"),
            Some(("WARN", "chatspace_encoder::model: old IR"))
        );
        assert_eq!(
            split_log_line("chatspace-encoder: model folder x has no tokenizer.json"),
            None
        );
        assert_eq!(
            strip_log_prefix("chatspace-encoder: no runtime"),
            "no runtime"
        );
    }

    /// Runs an isolation against an encoder that fails every unit holding a row of `bad`; each
    /// row's "vector" is its index. Returns the result and how many units were sent.
    fn isolate(rows: usize, bad: &[usize], first_failed: bool) -> (Done<()>, usize) {
        let mut iso = if first_failed {
            Isolation::after_failure(rows, "whole".into())
        } else {
            Isolation::new(rows)
        };
        let mut sent = 0;
        while let Some(r) = iso.next() {
            sent += 1;
            if r.clone().any(|i| bad.contains(&i)) {
                iso.fail(format!("bad {r:?}"));
            } else {
                let vectors = r.clone().map(|i| i as f32).collect();
                iso.succeed(vectors, r.len() as u64, 2 * r.len() as u64, 0);
            }
        }
        let job = Job {
            id: 3,
            texts: vec![String::new(); rows],
            payload: (),
        };
        (iso.finish(job), sent)
    }

    #[test]
    fn a_good_job_sent_alone_comes_back_whole() {
        let (done, sent) = isolate(5, &[], false);
        assert_eq!(sent, 1);
        assert_eq!(done.vectors, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert!(done.failed.is_empty());
        assert_eq!((done.tokens, done.padded_tokens), (5, 10));
    }

    #[test]
    fn one_bad_row_is_found_in_few_sends_and_the_rest_is_kept_in_order() {
        for bad in [0, 7, 127, 128, 255] {
            let (done, sent) = isolate(256, &[bad], false);
            assert_eq!(done.failed, vec![(bad, format!("bad {bad}..{}", bad + 1))]);
            let want: Vec<f32> = (0..256).filter(|&i| i != bad).map(|i| i as f32).collect();
            assert_eq!(done.vectors, want);
            // One failing range per level (9 levels), one good sibling per level below the top.
            assert_eq!(sent, 1 + 2 * 8, "bad row {bad}");
            assert_eq!(done.tokens, 255);
        }
    }

    #[test]
    fn several_bad_rows_are_all_found() {
        let (done, _) = isolate(20, &[3, 4, 19], true);
        let rows: Vec<usize> = done.failed.iter().map(|(r, _)| *r).collect();
        assert_eq!(rows, vec![3, 4, 19]);
        assert_eq!(done.vectors.len(), 17);
        assert!(done.vectors.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_single_row_that_failed_needs_no_resend() {
        let iso = Isolation::after_failure(1, "test fault".into());
        assert_eq!(iso.next(), None);
        let done = iso.finish(Job {
            id: 0,
            texts: vec!["x".into()],
            payload: (),
        });
        assert_eq!(done.failed, vec![(0, "test fault".to_string())]);
        assert!(done.vectors.is_empty());
    }

    #[test]
    fn an_empty_job_has_nothing_to_isolate() {
        assert_eq!(Isolation::new(0).next(), None);
        assert_eq!(Isolation::after_failure(0, "x".into()).next(), None);
    }

    #[test]
    fn retries_are_served_oldest_job_first() {
        let job = |id| Job {
            id,
            texts: vec![],
            payload: (),
        };
        let mut st = State::new();
        st.push_retry(Retry::Again {
            job: job(5),
            attempts: 1,
        });
        st.push_retry(Retry::Isolate {
            job: job(2),
            iso: Isolation::new(0),
        });
        st.push_retry(Retry::Again {
            job: job(9),
            attempts: 1,
        });
        let order: Vec<u64> = st.retry.iter().map(Retry::job_id).collect();
        assert_eq!(order, vec![2, 5, 9]);
    }

    #[test]
    fn slots_stay_within_a_window_of_the_oldest_unfinished_job() {
        let mut st = State::<()>::new();
        assert!(st.has_room(4));
        st.live.extend([10, 12]);
        st.last_taken = Some(12);
        assert!(st.has_room(4));
        st.last_taken = Some(13);
        assert!(!st.has_room(4));
        st.live.remove(&10);
        assert!(st.has_room(4));
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(Recovery::backoff(0), Duration::from_millis(500));
        assert_eq!(Recovery::backoff(1), Duration::from_millis(500));
        assert_eq!(Recovery::backoff(2), Duration::from_secs(1));
        assert_eq!(Recovery::backoff(4), Duration::from_secs(4));
        assert_eq!(Recovery::backoff(40), BACKOFF_MAX);
    }
}
