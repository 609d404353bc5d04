//! One encoder process: its socket folder, starting it and checking its handshake, its
//! stderr re-emitted through `tracing`, and how its end is read.

use super::*;

/// A private folder for the sockets, removed on drop.
pub(super) struct SocketDir(pub(super) PathBuf);

impl SocketDir {
    pub(super) fn create() -> Result<Self> {
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
pub(super) struct Encoder {
    pub(super) id: u32,
    pub(super) child: Child,
    pub(super) tx: Arc<Stream>,
    pub(super) rx: mpsc::UnboundedReceiver<Result<FromEncoder, ProtoError>>,
    pub(super) tail: Tail,
}

impl Encoder {
    /// Describes how the encoder ended, for an error message; waits briefly for it to exit.
    pub(super) async fn death(&mut self) -> EncoderExit {
        death(self.id, &mut self.child, &self.tail).await
    }

    /// SIGKILLs the encoder's process group (it leads its own), or the process elsewhere.
    pub(super) fn kill(&mut self) {
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
pub(super) struct Ended {
    /// `exited (<status>)`, or what went wrong while waiting.
    pub(super) how: String,
    /// Its exit status (`exit status: 1`, `signal: 9 (SIGKILL)`), when it exited.
    pub(super) status: Option<String>,
    /// Its exit code, when it exited with one.
    pub(super) code: Option<i32>,
    /// Its last non-blank stderr line, without log prefixes.
    pub(super) last: Option<String>,
}

impl Ended {
    /// The exit code the supervisor should end with because of this encoder.
    pub(super) fn exit_code(&self) -> i32 {
        match self.code {
            Some(c)
                if [
                    chatspace_proto::exit::BAD_INPUT,
                    chatspace_proto::exit::NO_RUNTIME,
                    chatspace_proto::exit::GPU,
                ]
                .contains(&c) =>
            {
                c
            }
            _ => chatspace_proto::exit::FAILURE,
        }
    }

    /// `": <last stderr line>"`, or nothing.
    pub(super) fn last_words(&self) -> String {
        self.last
            .as_deref()
            .map(|l| format!(": {l}"))
            .unwrap_or_default()
    }
}

/// Waits briefly for encoder `id` to exit (killing it if it does not) and says how it ended.
pub(super) async fn ended(child: &mut Child, tail: &Tail) -> Ended {
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
pub(super) async fn death(id: u32, child: &mut Child, tail: &Tail) -> EncoderExit {
    let ended = ended(child, tail).await;
    EncoderExit {
        message: format!("encoder {id} {}{}", ended.how, ended.last_words()),
        code: ended.exit_code(),
    }
}

pub(super) async fn start_one(
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

    let device = cfg.devices[id as usize % cfg.devices.len()];
    // Encoders sharing a GPU each limit their CUDA arena to a share of it.
    let on_gpu = cfg.devices.iter().filter(|&&d| d == device).count();
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
        .arg(device.to_string())
        .arg("--threads")
        .arg(cfg.threads.to_string())
        .arg("--batch-size")
        .arg(cfg.batch_size.to_string())
        .arg("--tokens-per-batch")
        .arg(cfg.tokens_per_batch.to_string())
        .args(&cfg.model_flags);
    if matches!(device, chatspace_proto::Device::Cuda(_)) && on_gpu > 1 {
        cmd.arg("--encoders-on-gpu").arg(on_gpu.to_string());
    }
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
pub(super) async fn read_loop(
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
pub(super) fn split_log_line(line: &str) -> Option<(&str, &str)> {
    let (stamp, rest) = line.trim_start().split_once(char::is_whitespace)?;
    if !stamp.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (level, msg) = rest.trim_start().split_once(char::is_whitespace)?;
    matches!(level, "ERROR" | "WARN" | "INFO" | "DEBUG" | "TRACE")
        .then_some((level, msg.trim_start()))
}

/// Drops a `chatspace-encoder: ` prefix that the encoder puts on its error lines.
pub(super) fn strip_log_prefix(line: &str) -> &str {
    line.trim().trim_start_matches("chatspace-encoder: ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatspace_proto::exit;

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

    #[test]
    fn encoder_exit_codes_with_a_meaning_are_passed_on() {
        let ended = |code| Ended {
            how: String::new(),
            status: None,
            code,
            last: None,
        };
        for code in [exit::BAD_INPUT, exit::NO_RUNTIME, exit::GPU] {
            assert_eq!(ended(Some(code)).exit_code(), code);
        }
        for code in [Some(exit::PROTOCOL), Some(101), None] {
            assert_eq!(ended(code).exit_code(), exit::FAILURE);
        }
    }
}
