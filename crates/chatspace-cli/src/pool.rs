//! The encoder pool: spawns `chatspace-encoder serve` processes, checks their handshake, feeds
//! them numbered jobs and hands back their embeddings.
//!
//! Each encoder gets its own socket in a private (0700) folder that is removed when the pool is
//! dropped, and a per-run secret through its environment. Each encoder has up to
//! [`JOBS_IN_FLIGHT`] jobs outstanding so it can tokenize one while it runs another; jobs come from
//! one shared queue, so faster encoders take more. An encoder's stderr is re-emitted through
//! `tracing`, and its last lines explain its death if it dies.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chatspace_proto::conn::{read_frame_async, write_frame_async};
use chatspace_proto::{FromEncoder, Hello, ModelInfo, PROTO_VERSION, ProtoError, ToEncoder, Work};
use interprocess::local_socket::ListenerOptions;
use interprocess::local_socket::tokio::{Stream, prelude::*};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc};

use crate::error::EncoderExit;

/// Jobs outstanding per encoder.
pub const JOBS_IN_FLIGHT: usize = 2;
/// Lines of an encoder's stderr kept to explain a failure.
const STDERR_TAIL: usize = 20;

/// How to start the encoders.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The `chatspace-encoder` executable.
    pub encoder_bin: PathBuf,
    /// How many to start.
    pub encoders: u32,
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
    /// How long an encoder may take to connect and load its model.
    pub startup_timeout: Duration,
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
    /// `job.texts.len() * dim` values, row-major.
    pub vectors: Vec<f32>,
    /// Real tokens.
    pub tokens: u64,
    /// Tokens including padding.
    pub padded_tokens: u64,
    /// Texts cut to the token limit.
    pub truncated: u32,
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
}

/// Describes how encoder `id` ended, for an error message; waits briefly for it to exit.
async fn death(id: u32, child: &mut Child, tail: &Tail) -> EncoderExit {
    {
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        let last = tail
            .lock()
            .expect("tail lock")
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .cloned();
        let code = match &status {
            Ok(Ok(s)) => s.code(),
            _ => None,
        };
        let how = match status {
            Ok(Ok(s)) => format!("exited ({s})"),
            Ok(Err(e)) => format!("could not be waited for ({e})"),
            Err(_) => {
                let _ = child.start_kill();
                "stopped answering and was killed".into()
            }
        };
        let message = match last {
            Some(line) => format!("encoder {id} {how}: {}", strip_log_prefix(&line)),
            None => format!("encoder {id} {how}"),
        };
        let code = match code {
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
        };
        EncoderExit { message, code }
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

/// The started encoders and what they said about the model.
pub struct Pool {
    encoders: Vec<Encoder>,
    /// The model as encoder 0 reported it (all encoders agree).
    pub info: ModelInfo,
    _dir: SocketDir,
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
        for id in 0..cfg.encoders {
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
            _dir: dir,
        })
    }

    /// Feeds `jobs` to the encoders until the queue closes and every job is done, sending each
    /// result to `done` (in completion order). Shuts the encoders down at the end.
    pub async fn run<P: Send + 'static>(
        self,
        jobs: mpsc::Receiver<Job<P>>,
        done: mpsc::Sender<Done<P>>,
    ) -> Result<()> {
        let jobs = Arc::new(Mutex::new(jobs));
        let mut set = tokio::task::JoinSet::new();
        for enc in self.encoders {
            set.spawn(drive(enc, jobs.clone(), done.clone()));
        }
        drop(done);
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
        .arg("--threads")
        .arg(cfg.threads.to_string())
        .arg("--batch-size")
        .arg(cfg.batch_size.to_string());
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

async fn next_job<P>(jobs: &Mutex<mpsc::Receiver<Job<P>>>) -> Option<Job<P>> {
    jobs.lock().await.recv().await
}

/// Sends `job` to the encoder without copying its texts.
async fn send_job<P>(tx: &Stream, job: &mut Job<P>) -> Result<(), ProtoError> {
    let msg = ToEncoder::Work(Work {
        unit_id: job.id,
        texts: std::mem::take(&mut job.texts),
    });
    let bytes = chatspace_proto::frame::encode(&msg);
    let ToEncoder::Work(work) = msg else {
        unreachable!()
    };
    job.texts = work.texts;
    tokio::io::AsyncWriteExt::write_all(&mut &*tx, &bytes?).await?;
    Ok(())
}

/// One encoder's loop: keep [`JOBS_IN_FLIGHT`] jobs outstanding, pass results on, and shut the
/// encoder down when the queue is empty.
async fn drive<P: Send + 'static>(
    mut enc: Encoder,
    jobs: Arc<Mutex<mpsc::Receiver<Job<P>>>>,
    done: mpsc::Sender<Done<P>>,
) -> Result<()> {
    let mut in_flight: VecDeque<Job<P>> = VecDeque::with_capacity(JOBS_IN_FLIGHT);
    let mut queue_open = true;
    loop {
        if !queue_open && in_flight.is_empty() {
            let _ = write_frame_async(&mut &*enc.tx, &ToEncoder::Shutdown).await;
            match tokio::time::timeout(Duration::from_secs(30), enc.child.wait()).await {
                Ok(Ok(status)) if status.success() => return Ok(()),
                _ => return Err(enc.death().await.into()),
            }
        }
        tokio::select! {
            job = next_job(&jobs), if queue_open && in_flight.len() < JOBS_IN_FLIGHT => {
                match job {
                    Some(mut job) => {
                        if let Err(e) = send_job(&enc.tx, &mut job).await {
                            tracing::debug!(encoder = enc.id, "send failed: {e}");
                            return Err(enc.death().await.into());
                        }
                        in_flight.push_back(job);
                    }
                    None => queue_open = false,
                }
            }
            msg = enc.rx.recv() => match msg {
                Some(Ok(FromEncoder::Embedded { unit_id, vectors, tokens, padded_tokens, truncated })) => {
                    let Some(job) = in_flight.pop_front() else {
                        bail!("encoder {} answered unit {unit_id} that it was never sent", enc.id);
                    };
                    if job.id != unit_id {
                        bail!("encoder {} answered unit {unit_id} out of order (expected {})", enc.id, job.id);
                    }
                    let done_msg = Done { job, vectors, tokens, padded_tokens, truncated };
                    if done.send(done_msg).await.is_err() {
                        // The writer is gone (it failed and will report why).
                        return Ok(());
                    }
                }
                Some(Ok(FromEncoder::Failed { unit_id, reason })) => {
                    bail!("encoder {} failed on unit {unit_id}: {reason}", enc.id);
                }
                Some(Ok(FromEncoder::Fatal { reason })) => {
                    bail!("encoder {} stopped: {reason}", enc.id);
                }
                Some(Ok(other)) => bail!("encoder {} broke the protocol: unexpected {other:?}", enc.id),
                Some(Err(e)) => return Err(anyhow!(e).context(format!("encoder {} sent a bad frame", enc.id))),
                None => return Err(enc.death().await.into()),
            },
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
}
