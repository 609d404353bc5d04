//! A slot's driver: one encoder's share of the jobs, its restarts after deaths and hangs, and
//! the shared queues and window the slots take jobs from.

use super::*;

/// What every slot's driver shares.
pub(super) struct Shared<P> {
    pub(super) cfg: PoolConfig,
    pub(super) secret: String,
    pub(super) sock_dir: PathBuf,
    /// Embedding width, to check the parts of isolated jobs.
    pub(super) dim: usize,
    /// How far ahead of the oldest unfinished job a slot may take a new one.
    pub(super) window: u64,
    /// The normal queue.
    pub(super) jobs: Mutex<mpsc::Receiver<Job<P>>>,
    pub(super) state: StdMutex<State<P>>,
    /// Wakes waiting slots when `state` changes.
    pub(super) notify: Notify,
    /// Wire ids: unique within the run, whatever unit (job or part of one) they name.
    pub(super) next_unit: AtomicU64,
    pub(super) restarts: Restarts,
    pub(super) done: mpsc::Sender<Done<P>>,
}

impl<P> Shared<P> {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State<P>> {
        self.state.lock().expect("pool state lock")
    }

    /// Queues jobs to send again, oldest first (the writer waits for the oldest), and wakes
    /// the slots.
    pub(super) fn retry(&self, units: Vec<Retry<P>>) {
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
pub(super) struct State<P> {
    /// Jobs to send again, by job id; served before the normal queue.
    pub(super) retry: VecDeque<Retry<P>>,
    /// Ids of the jobs taken from the normal queue and not yet done.
    pub(super) live: BTreeSet<u64>,
    /// The last job id taken from the normal queue.
    pub(super) last_taken: Option<u64>,
    /// The normal queue has ended.
    pub(super) closed: bool,
    /// The receiver of results is gone: stop.
    pub(super) stopped: bool,
    /// Rows lost to encoders dying or hanging on them.
    pub(super) rows_lost: u64,
}

impl<P> State<P> {
    pub(super) fn new() -> Self {
        Self {
            retry: VecDeque::new(),
            live: BTreeSet::new(),
            last_taken: None,
            closed: false,
            stopped: false,
            rows_lost: 0,
        }
    }

    pub(super) fn push_retry(&mut self, unit: Retry<P>) {
        let at = self.retry.partition_point(|r| r.job_id() < unit.job_id());
        self.retry.insert(at, unit);
    }

    /// Whether the next job would be less than `window` jobs ahead of the oldest unfinished one.
    pub(super) fn has_room(&self, window: u64) -> bool {
        match (self.live.first(), self.last_taken) {
            (Some(&oldest), Some(last)) => last + 1 - oldest < window,
            _ => true,
        }
    }
}

/// A job waiting to be sent again.
pub(super) enum Retry<P> {
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
    pub(super) fn job_id(&self) -> u64 {
        match self {
            Retry::Again { job, .. } | Retry::Isolate { job, .. } => job.id,
        }
    }
}

/// A unit sent to a slot's encoder and not answered yet.
pub(super) struct Sent<P> {
    /// Its wire id.
    pub(super) unit_id: u64,
    pub(super) what: Flight<P>,
}

pub(super) enum Flight<P> {
    /// A whole job, among up to [`JOBS_IN_FLIGHT`].
    Whole { job: Job<P>, attempts: u32 },
    /// Rows of the job the slot is isolating, alone in flight.
    Part(Range<usize>),
}

/// Why a slot's encoder has to be replaced.
pub(super) enum Cause {
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
pub(super) enum Step<P> {
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
pub(super) enum Event<P> {
    Woken,
    Job(Option<Job<P>>),
    Message(Option<Result<FromEncoder, ProtoError>>),
    TimedOut,
}

/// One encoder slot: its encoder (replaced when it fails), the units it has in flight, and the
/// job it is isolating, if any.
pub(super) struct Slot<P> {
    pub(super) id: u32,
    pub(super) enc: Encoder,
    pub(super) shared: Arc<Shared<P>>,
    pub(super) in_flight: VecDeque<Sent<P>>,
    /// The job being split down to its failing rows; while it is, nothing else is in flight.
    pub(super) isolating: Option<(Job<P>, Isolation)>,
    /// Deaths since the encoder last answered a unit.
    pub(super) strikes: u32,
    /// When the unit at the head of the line must have been answered.
    pub(super) deadline: Option<Instant>,
}

/// The next job of the normal queue; `None` once it is closed, or once the run is stopping
/// (jobs still queued then are dropped: they were never sent, and `--resume` redoes them).
pub(super) async fn next_job<P>(shared: &Shared<P>) -> Option<Job<P>> {
    let job = shared.jobs.lock().await.recv().await;
    job.filter(|_| !shared.cfg.stop.load(std::sync::atomic::Ordering::SeqCst))
}

/// An error and its causes on one line.
pub(super) fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
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
pub(super) fn encode_work(unit_id: u64, texts: &mut Vec<String>) -> Result<Vec<u8>, ProtoError> {
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
    pub(super) fn new(enc: Encoder, shared: Arc<Shared<P>>) -> Self {
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
    pub(super) async fn drive(mut self) -> Result<()> {
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
    pub(super) fn next_step(&mut self) -> Step<P> {
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
    pub(super) async fn shut_down(mut self) -> Result<()> {
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
    pub(super) async fn send_whole(&mut self, mut job: Job<P>, attempts: u32) -> Result<()> {
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
    pub(super) async fn send_part(&mut self, rows: Range<usize>) -> Result<()> {
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

    pub(super) fn push(&mut self, sent: Sent<P>) {
        if self.in_flight.is_empty() {
            self.deadline = Some(Instant::now() + self.shared.cfg.recovery.unit_timeout);
        }
        self.in_flight.push_back(sent);
    }

    pub(super) async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match tokio::io::AsyncWriteExt::write_all(&mut &*self.enc.tx, bytes).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(encoder = self.id, "send failed: {e}");
                self.restart(Cause::Gone).await
            }
        }
    }

    /// Passes a finished job on, once.
    pub(super) async fn emit(&mut self, done: Done<P>) {
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
    pub(super) async fn isolate(&mut self, job: Job<P>, reason: String) {
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
    pub(super) fn answered(&mut self, unit_id: u64) -> Result<Sent<P>> {
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

    pub(super) async fn on_message(
        &mut self,
        msg: Option<Result<FromEncoder, ProtoError>>,
    ) -> Result<()> {
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
    pub(super) async fn restart(&mut self, cause: Cause) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
