//! The incumbent: serves the control socket, drains and seals on request,
//! releases the lock after a successful seal, and rolls back on abort, on a
//! vanished supervisor and on a silent one (invariant 8).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::channel::{Channel, Sender};
use crate::control::{bind_private, check_peer_uid};
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::lock::DataDirLock;
use crate::log::event;
use crate::poll::{self, Wait};
use crate::protocol::{
    negotiate_version, Capabilities, HandoffId, Message, Side, PROTO_MAX, PROTO_MIN,
};
use crate::service::{HookContext, HookError, Service};

/// The incumbent's timeouts (DESIGN §2 defaults).
#[derive(Debug, Clone, Copy)]
pub struct IncumbentConfig {
    /// No frame from the supervisor for this long means it is dead.
    pub liveness: Duration,
    /// How long a new connection has to answer our Hello.
    pub hello: Duration,
    /// Heartbeat period while a hook runs.
    pub heartbeat: Duration,
    /// How long to retry the lock on rollback while a dying successor holds it.
    pub relock: Duration,
}

impl Default for IncumbentConfig {
    fn default() -> Self {
        IncumbentConfig {
            liveness: Duration::from_secs(10),
            hello: Duration::from_secs(5),
            heartbeat: Duration::from_secs(2),
            relock: Duration::from_secs(2),
        }
    }
}

/// How `serve` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeOutcome {
    /// The supervisor committed the handoff: finish the remaining reads and exit.
    Committed,
    /// Another process took the lock after our seal (the successor became
    /// authoritative while the supervisor was gone): exit without writing.
    Superseded,
    /// `StopHandle::stop` was called.
    Stopped,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Idle,
    Drained(HandoffId),
    Sealed(HandoffId),
}

/// How a session ended, when it did not fail.
enum SessionEnd {
    Closed,
    Committed,
}

/// Wakes a serving incumbent so `serve` returns `Stopped` (after rolling
/// back any handoff in progress).
pub struct StopHandle(OwnedFd);

impl StopHandle {
    pub fn stop(&self) {
        poll::wake(self.0.as_fd());
    }
}

/// A bound control socket (mode 0600), not yet serving.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    pub fn bind(path: &Path) -> Result<ControlSocket> {
        let listener = bind_private(path)?;
        listener.set_nonblocking(true).map_err(Error::Stream)?;
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
        })
    }
}

pub struct Incumbent {
    listener: UnixListener,
    path: PathBuf,
    data_dir: PathBuf,
    lock: Option<DataDirLock>,
    generation: Arc<AtomicU64>,
    build_id: Vec<u8>,
    config: IncumbentConfig,
    stop: Option<OwnedFd>,
    /// A descriptor kept in reserve, given up to accept a control connection
    /// when the service has used up every other one (EMFILE): a service at
    /// its descriptor limit can still be handed off, which drains it.
    spare: Option<std::fs::File>,
}

impl Incumbent {
    /// Bind the control socket at `control_path` (mode 0600, replacing any
    /// stale one) for a process that holds `lock`.
    pub fn bind(control_path: &Path, lock: DataDirLock) -> Result<Incumbent> {
        Ok(Incumbent::with_control_socket(
            ControlSocket::bind(control_path)?,
            lock,
        ))
    }

    /// An incumbent on a control socket bound beforehand (so a failed bind
    /// leaves the caller its lock).
    pub fn with_control_socket(socket: ControlSocket, lock: DataDirLock) -> Incumbent {
        let ControlSocket {
            listener,
            path: control_path,
        } = socket;
        event!(
            Info,
            "incumbent {} serving control socket {}",
            std::process::id(),
            control_path.display()
        );
        Incumbent {
            listener,
            path: control_path,
            data_dir: lock.data_dir().to_owned(),
            generation: Arc::new(AtomicU64::new(lock.generation())),
            lock: Some(lock),
            build_id: Vec::new(),
            config: IncumbentConfig::default(),
            stop: None,
            spare: spare_descriptor(),
        }
    }

    /// The build id announced in Hello.
    pub fn set_build_id(&mut self, build_id: Vec<u8>) {
        self.build_id = build_id;
    }

    pub fn set_config(&mut self, config: IncumbentConfig) {
        self.config = config;
    }

    pub fn config(&self) -> IncumbentConfig {
        self.config
    }

    pub fn control_path(&self) -> &Path {
        &self.path
    }

    /// The lock generation of this incumbent's current tenure (it changes
    /// when the lock is re-acquired after an aborted handoff).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The generation, readable from other threads while `serve` runs.
    pub fn generation_handle(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.generation)
    }

    /// Whether the incumbent holds the data-dir lock right now.
    pub fn holds_lock(&self) -> bool {
        self.lock.is_some()
    }

    /// A handle that makes `serve` return. Call before `serve`.
    pub fn stop_handle(&mut self) -> Result<StopHandle> {
        let (read, write) = poll::pipe().map_err(Error::Stream)?;
        self.stop = Some(read);
        Ok(StopHandle(write))
    }

    fn stop_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stop.as_ref().map(|fd| fd.as_fd())
    }

    /// Serve the control socket until a handoff commits or `stop` is called.
    /// Failed or abandoned handoffs are rolled back and serving goes on.
    pub fn serve(&mut self, service: &dyn Service) -> Result<ServeOutcome> {
        loop {
            if self.spare.is_none() {
                self.spare = spare_descriptor();
            }
            match poll::wait_fd(
                self.listener.as_raw_fd(),
                libc::POLLIN,
                self.stop_fd(),
                None,
            ) {
                Ok(Wait::Woken) => return Ok(ServeOutcome::Stopped),
                Ok(_) => {}
                Err(e) => return Err(Error::Stream(e)),
            }
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if out_of_descriptors(&e) && self.spare.is_some() => {
                    // Give the reserve up, and take the connection in its place.
                    self.spare = None;
                    match self.listener.accept() {
                        Ok((stream, _)) => {
                            event!(
                                Warn,
                                "control socket accept: {e}; used the spare descriptor"
                            );
                            stream
                        }
                        Err(e) => {
                            event!(Warn, "control socket accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    // EMFILE and friends: transient; back off, keep serving.
                    event!(Warn, "control socket accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let peer = match check_peer_uid(&stream) {
                Ok(peer) => peer,
                Err(e) => {
                    event!(Warn, "refused control connection: {e}");
                    continue;
                }
            };
            let mut stage = Stage::Idle;
            let ended = self.session(stream, service, &mut stage);
            match ended {
                Ok(SessionEnd::Committed) => return Ok(ServeOutcome::Committed),
                Ok(SessionEnd::Closed) => {}
                Err(Error::WrongState(_)) => {
                    self.roll_back(stage, service)?;
                    return Ok(ServeOutcome::Stopped);
                }
                // Name the offender: a misbehaving client is not always the supervisor.
                Err(e) => event!(
                    Warn,
                    "handoff session with pid {} ended: {e}; {}",
                    peer.pid,
                    match stage {
                        Stage::Idle => "nothing to roll back",
                        _ => "rolling back",
                    }
                ),
            }
            if !self.roll_back(stage, service)? {
                return Ok(ServeOutcome::Superseded);
            }
        }
    }

    fn session(
        &mut self,
        stream: UnixStream,
        service: &dyn Service,
        stage: &mut Stage,
    ) -> Result<SessionEnd> {
        let mut channel = Channel::new(stream)?;
        channel.send(&Message::Hello {
            role: Side::Incumbent,
            pid: std::process::id(),
            build_id: self.build_id.clone(),
            proto_min: PROTO_MIN,
            proto_max: PROTO_MAX,
            capabilities: Capabilities::default(),
        })?;
        let ack = channel.recv_until(Instant::now() + self.config.hello, self.stop_fd())?;
        let Message::HelloAck {
            proto_version_chosen,
            ..
        } = ack
        else {
            return Err(Error::Protocol(format!(
                "expected HelloAck, got {}",
                ack.kind().name()
            )));
        };
        let version = negotiate_version(
            (PROTO_MIN, PROTO_MAX),
            (proto_version_chosen, proto_version_chosen),
        )?;
        channel.set_version(version);

        loop {
            let deadline = Instant::now() + self.config.liveness;
            let message = match channel.recv_until(deadline, self.stop_fd()) {
                Ok(message) => message,
                Err(Error::PeerClosed { .. }) if *stage == Stage::Idle => {
                    return Ok(SessionEnd::Closed)
                }
                Err(Error::Timeout) => {
                    return Err(Error::Protocol(format!(
                        "supervisor silent for {:?}",
                        self.config.liveness
                    )))
                }
                Err(e) => return Err(e),
            };
            match (message, *stage) {
                (Message::Heartbeat { .. }, _) => channel.send(&Message::Heartbeat {
                    ts_ms: now_unix_ms(),
                })?,
                (
                    Message::PrepareHandoff {
                        handoff_id,
                        deadline_ms,
                        drain_grace_ms,
                        ..
                    },
                    Stage::Idle,
                ) => {
                    let budget = Duration::from_millis(deadline_ms.min(drain_grace_ms));
                    event!(Info, "handoff {handoff_id}: draining (budget {budget:?})");
                    let report = self.run_hook(&channel, budget, |ctx| {
                        crash_point!("O_IN_DRAIN");
                        service.drain(ctx)
                    });
                    *stage = Stage::Drained(handoff_id);
                    let report = report.map_err(|e| hook_failed("drain", e))?;
                    channel.send(&Message::Drained {
                        open_conns_remaining: report.open_conns_remaining,
                        accept_closed: report.accept_closed,
                    })?;
                    crash_point!("O_AFTER_DRAINED");
                }
                (Message::SealRequest { handoff_id }, Stage::Drained(active))
                    if handoff_id == active =>
                {
                    event!(Info, "handoff {handoff_id}: sealing");
                    let budget = self.config.liveness;
                    let sealed = self.run_hook(&channel, budget, |ctx| {
                        crash_point!("O_IN_SEAL");
                        service.seal(ctx)
                    });
                    match sealed {
                        Ok(report) => {
                            // Invariant 2: the lock goes only after a successful seal,
                            // and before the supervisor hears of it.
                            if let Some(lock) = self.lock.take() {
                                lock.release()?;
                            }
                            *stage = Stage::Sealed(handoff_id);
                            channel.send(&Message::SealComplete {
                                handoff_id,
                                last_revision_per_shard: report.last_revision_per_shard,
                                data_dir_fingerprint: report.data_dir_fingerprint,
                            })?;
                            crash_point!("O_AFTER_SEAL_COMPLETE");
                        }
                        Err(HookError(reason)) => {
                            event!(
                                Warn,
                                "handoff {handoff_id}: seal failed: {reason}; resuming"
                            );
                            self.roll_back(*stage, service)?;
                            *stage = Stage::Idle;
                            channel.send(&Message::SealFailed {
                                handoff_id,
                                error: reason,
                                partial_state: String::new(),
                            })?;
                        }
                    }
                }
                (Message::Commit { handoff_id }, Stage::Sealed(active)) if handoff_id == active => {
                    event!(
                        Info,
                        "handoff {handoff_id}: committed; incumbent steps down"
                    );
                    return Ok(SessionEnd::Committed);
                }
                (
                    Message::Abort { handoff_id, .. } | Message::ResumeAfterAbort { handoff_id },
                    Stage::Drained(active) | Stage::Sealed(active),
                ) if handoff_id == active => {
                    event!(
                        Info,
                        "handoff {handoff_id}: aborted by the supervisor; resuming"
                    );
                    if !self.roll_back(*stage, service)? {
                        return Err(Error::Protocol(
                            "lock taken by another process during rollback".into(),
                        ));
                    }
                    *stage = Stage::Idle;
                }
                (Message::Abort { .. } | Message::ResumeAfterAbort { .. }, Stage::Idle) => {}
                (other, _) => {
                    return Err(Error::Protocol(format!(
                        "unexpected {} while {}",
                        describe(&other),
                        match stage {
                            Stage::Idle => "idle",
                            Stage::Drained(_) => "drained",
                            Stage::Sealed(_) => "sealed",
                        }
                    )))
                }
            }
        }
    }

    /// Run a hook with heartbeats every `config.heartbeat` until it returns.
    fn run_hook<T>(
        &self,
        channel: &Channel,
        budget: Duration,
        hook: impl FnOnce(&HookContext<'_>) -> std::result::Result<T, HookError>,
    ) -> std::result::Result<T, HookError> {
        let sender = channel.sender();
        let ctx = HookContext {
            deadline: Instant::now() + budget,
            sender: &sender,
        };
        let (done, stopped) = mpsc::channel::<()>();
        let beats = sender.clone();
        let period = self.config.heartbeat;
        // Not joined: waiting for the thread to start and end would put a
        // thread's whole lifetime on every hook's critical path. It ends as
        // soon as it sees `done` dropped, and the sender's lock keeps a late
        // heartbeat from interleaving with the hook's answer (which a
        // heartbeat may follow: supervisors skip heartbeats).
        std::thread::spawn(move || heartbeats(&beats, period, &stopped));
        let result = hook(&ctx);
        drop(done);
        result
    }

    /// Undo what a handoff did: take the lock back if it was released, and
    /// resume the service if it was drained. False when the lock is held by
    /// another live process, which means this incumbent was superseded.
    fn roll_back(&mut self, stage: Stage, service: &dyn Service) -> Result<bool> {
        if stage == Stage::Idle {
            return Ok(true);
        }
        if self.lock.is_none() {
            match self.retake_lock() {
                Ok(lock) => {
                    self.generation.store(lock.generation(), Ordering::Relaxed);
                    self.lock = Some(lock);
                }
                Err(Error::LockHeld { holder, .. }) => {
                    event!(
                        Warn,
                        "cannot take the lock back (held by {holder:?}): superseded"
                    );
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        crash_point!("O_IN_RESUME");
        if let Err(HookError(reason)) = service.resume_after_abort() {
            event!(Error, "resume_after_abort failed: {reason}");
        }
        Ok(true)
    }

    /// Take the lock back after a seal, retrying for `config.relock` while a
    /// dying successor still holds it. A stop request ends the retries at
    /// once: the process is on its way out and needs no lock, and whoever
    /// asked it to stop (a recovering supervisor's SIGTERM) may not wait
    /// long before it kills it.
    fn retake_lock(&self) -> Result<DataDirLock> {
        let deadline = Instant::now() + self.config.relock;
        loop {
            match DataDirLock::acquire(&self.data_dir) {
                Err(held @ Error::LockHeld { .. }) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(held);
                    }
                    let pause = now + RELOCK_RETRY.min(deadline - now);
                    match self.stop_fd() {
                        Some(stop) => {
                            let woken =
                                poll::wait_fd(stop.as_raw_fd(), libc::POLLIN, None, Some(pause))
                                    .map_err(Error::Stream)?;
                            if woken == Wait::Ready {
                                event!(Info, "stop requested while taking the lock back");
                                return Err(held);
                            }
                        }
                        None => std::thread::sleep(pause - now),
                    }
                }
                other => return other,
            }
        }
    }
}

/// How often a rolling-back incumbent retries the lock.
const RELOCK_RETRY: Duration = Duration::from_millis(20);

/// A descriptor to hold in reserve (close-on-exec), if one can be had.
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn heartbeats(sender: &Sender, period: Duration, stopped: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
        if sender
            .send(&Message::Heartbeat {
                ts_ms: now_unix_ms(),
            })
            .is_err()
        {
            return;
        }
    }
}

fn hook_failed(hook: &'static str, HookError(reason): HookError) -> Error {
    Error::Hook { hook, reason }
}

fn describe(message: &Message) -> String {
    match message.handoff_id() {
        Some(id) => format!("{} for handoff {id}", message.kind().name()),
        None => message.kind().name().to_string(),
    }
}

pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
