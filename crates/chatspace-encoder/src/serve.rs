//! `serve`: one session with the supervisor over its local socket.
//!
//! 1. Connect, send [`Hello`] with the secret from `CHATSPACE_SECRET`, wait for `Welcome`
//!    (`Reject` ends the process with [`exit::PROTOCOL`]).
//! 2. Load the model; report [`FromEncoder::Ready`], or [`FromEncoder::Fatal`] and exit.
//! 3. A reader thread decodes frames and tokenizes each unit, handing it over a channel of
//!    [`QUEUE`] units to the main thread, which runs the model and writes the answers; so the next
//!    unit is tokenized while this one runs, and units are answered in the order received.
//!
//! `Shutdown` finishes the units already received, then exits 0. The supervisor going away
//! (end of stream, or a failed write) ends the process at once with exit 0: nobody is left to
//! read an answer. On Linux the process also asks the kernel to kill it when its parent dies.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use chatspace_proto::{
    FromEncoder, Hello, PROTO_VERSION, ProtoError, ToEncoder, exit, read_frame, socket_name,
    write_frame,
};
use interprocess::local_socket::{Stream, prelude::*};

use crate::engine::{self, Engine, EngineOptions};
use crate::error::{Error, Result, is_peer_gone, one_line};
use crate::tokenize::{TextTokenizer, Tokenized};

/// Units tokenized ahead of the one being embedded.
pub const QUEUE: usize = 2;

/// The environment variable holding the per-run secret (never passed on the command line).
pub const SECRET_ENV: &str = "CHATSPACE_SECRET";

/// What `serve` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The supervisor's socket.
    pub socket: PathBuf,
    /// This encoder's slot.
    pub encoder_id: u32,
    /// The model to load.
    pub engine: EngineOptions,
}

/// A unit on its way from the reader thread to the inference thread.
struct Job {
    unit_id: u64,
    /// The tokenized texts, or why tokenizing failed (one line).
    texts: Result<Vec<Tokenized>, String>,
    /// The test fault this unit triggers (debug builds only; see `faults.rs`).
    #[cfg(debug_assertions)]
    fault: Option<crate::faults::Action>,
}

/// Runs a whole session. Returns when the supervisor says `Shutdown` and every unit received is
/// answered, or when the supervisor is gone.
pub fn serve(opts: &ServeOptions) -> Result<()> {
    die_with_parent();
    #[cfg(debug_assertions)]
    crate::faults::init();
    let secret = std::env::var(SECRET_ENV).map_err(|_| Error::NoSecret)?;
    let connect_err = |source| Error::Connect {
        path: opts.socket.clone(),
        source,
    };
    let name = socket_name(&opts.socket).map_err(connect_err)?;
    let stream = Arc::new(Stream::connect(name).map_err(connect_err)?);

    send(
        &stream,
        &FromEncoder::Hello(Hello {
            proto_version: PROTO_VERSION,
            secret,
            encoder_id: opts.encoder_id,
            pid: std::process::id(),
        }),
    )?;
    match read_frame::<_, ToEncoder>(&mut &*stream).map_err(Error::Wire)? {
        Some(ToEncoder::Welcome { .. }) => {}
        Some(ToEncoder::Reject { reason }) => return Err(Error::Rejected(reason)),
        Some(other) => {
            return Err(Error::Protocol(format!(
                "expected Welcome or Reject, got {}",
                kind(&other)
            )));
        }
        None => {
            return Err(Error::Protocol(
                "the supervisor closed the connection before answering Hello".into(),
            ));
        }
    }

    let (tokenizer, mut engine, info) = match engine::load(&opts.engine) {
        Ok(loaded) => loaded,
        Err(e) => {
            // Best effort, and never instead of the error itself, which main prints and whose
            // exit code the process ends with.
            let fatal = FromEncoder::Fatal {
                reason: one_line(&e),
            };
            let _ = write_frame(&mut &*stream, &fatal);
            return Err(e);
        }
    };
    send(&stream, &FromEncoder::Ready(info))?;

    let (tx, rx) = sync_channel(QUEUE);
    let reader_stream = Arc::clone(&stream);
    thread::Builder::new()
        .name("reader".into())
        .spawn(move || read_units(&reader_stream, &tokenizer, &tx))
        .map_err(|source| Error::Io {
            what: "starting the reader thread",
            source,
        })?;
    answer_units(&stream, &mut engine, &rx)
}

/// Writes one frame. A supervisor that is gone is not an error worth reporting: exit 0.
fn send(stream: &Stream, msg: &FromEncoder) -> Result<()> {
    match write_frame(&mut &*stream, msg) {
        Ok(()) => Ok(()),
        Err(e) if is_peer_gone(&e) => exit_now(None),
        Err(e) => Err(Error::Wire(e)),
    }
}

/// Reader thread: decodes frames and tokenizes units until `Shutdown` (then returns, closing
/// the channel). End of stream or a broken frame ends the process here and now, even while the
/// main thread is inside a batch.
fn read_units(stream: &Stream, tokenizer: &TextTokenizer, tx: &SyncSender<Job>) {
    loop {
        let msg = match read_frame::<_, ToEncoder>(&mut &*stream) {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                tracing::debug!("supervisor closed the connection; exiting");
                exit_now(None)
            }
            Err(e) if is_peer_gone(&e) || matches!(e, ProtoError::Truncated { .. }) => {
                tracing::debug!(error = %one_line(&e), "supervisor went away; exiting");
                exit_now(None)
            }
            Err(e) => exit_now(Some(Error::Wire(e))),
        };
        match msg {
            ToEncoder::Work(work) => {
                let texts = tokenizer.encode_all(&work.texts).map_err(|e| one_line(&e));
                let job = Job {
                    unit_id: work.unit_id,
                    texts,
                    #[cfg(debug_assertions)]
                    fault: crate::faults::check(&work.texts),
                };
                if tx.send(job).is_err() {
                    return; // The main thread has stopped; it decides how the process ends.
                }
            }
            ToEncoder::Shutdown => {
                tracing::debug!("shutdown requested; finishing queued units");
                return;
            }
            other => {
                exit_now(Some(Error::Protocol(format!(
                    "unexpected {} after the handshake",
                    kind(&other)
                ))));
            }
        }
    }
}

/// Main thread: embeds each unit as it arrives and answers it, until the reader closes the
/// channel after `Shutdown`.
fn answer_units(stream: &Stream, engine: &mut Engine, rx: &Receiver<Job>) -> Result<()> {
    for job in rx {
        #[cfg(debug_assertions)]
        if let Some(action) = job.fault {
            let reason = crate::faults::trigger(action);
            tracing::warn!(unit_id = job.unit_id, %reason, "unit failed");
            send(
                stream,
                &FromEncoder::Failed {
                    unit_id: job.unit_id,
                    reason,
                },
            )?;
            continue;
        }
        let result = job
            .texts
            .and_then(|texts| engine.embed_unit(&texts).map_err(|e| one_line(&e)));
        let reply = match result {
            Ok(out) => FromEncoder::Embedded {
                unit_id: job.unit_id,
                vectors: out.vectors,
                tokens: out.tokens,
                padded_tokens: out.padded_tokens,
                truncated: out.truncated,
            },
            Err(reason) => {
                tracing::warn!(unit_id = job.unit_id, %reason, "unit failed");
                FromEncoder::Failed {
                    unit_id: job.unit_id,
                    reason,
                }
            }
        };
        match send(stream, &reply) {
            // A unit whose answer does not fit in a frame fails alone.
            Err(Error::Wire(e @ (ProtoError::TooLarge { .. } | ProtoError::Encode(_)))) => {
                let reason = format!(
                    "the unit's vectors do not fit in one frame: {}",
                    one_line(&e)
                );
                tracing::warn!(unit_id = job.unit_id, %reason, "unit failed");
                send(
                    stream,
                    &FromEncoder::Failed {
                        unit_id: job.unit_id,
                        reason,
                    },
                )?;
            }
            other => other?,
        }
    }
    Ok(())
}

/// Ends the process now: quietly with 0 when `err` is `None` (the supervisor is gone), else
/// printing the one-line error and exiting with its code.
///
/// Called from the reader thread while the main thread may be inside ONNX Runtime, so it skips
/// `atexit` handlers and C++ static destructors (`_exit`): running them under a live session
/// makes the inference in flight fail or crash. Nothing is buffered that would be lost: socket
/// writes are unbuffered, and so is stderr.
fn exit_now(err: Option<Error>) -> ! {
    let code = match err {
        None => exit::OK,
        Some(e) => {
            eprintln!("chatspace-encoder: {}", one_line(&e));
            e.exit_code()
        }
    };
    #[cfg(unix)]
    // SAFETY: `_exit` takes an exit status and never returns.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}

/// A message's variant name, for protocol errors.
fn kind(msg: &ToEncoder) -> &'static str {
    match msg {
        ToEncoder::Welcome { .. } => "Welcome",
        ToEncoder::Reject { .. } => "Reject",
        ToEncoder::Work(_) => "Work",
        ToEncoder::Shutdown => "Shutdown",
    }
}

/// Linux: have the kernel SIGKILL this process when its parent exits, so an encoder never
/// outlives its supervisor even if the socket stays open somewhere.
///
/// The signal follows the parent *thread* that spawned this process: the supervisor must spawn
/// encoders from a thread that lives as long as it does.
#[cfg(target_os = "linux")]
fn die_with_parent() {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "prctl(PR_SET_PDEATHSIG) failed");
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent() {}
