//! The incumbent: serves the control socket, drains and seals on request,
//! releases the lock after a successful seal, and rolls back on abort, on a
//! vanished or silent supervisor, and when PrepareHandoff's deadline passes
//! without a Commit (invariant 8).
//!
//! `session` decides (a pure state machine per control connection),
//! `driver` does the I/O (one poll loop over the control socket, every
//! connection, the service's completions and the clock), `requests` hands
//! the work to the service: to its own event loop ([`Incumbent::start`]) or
//! to a thread that calls its hooks ([`Incumbent::serve`]), so that the
//! loop never stops answering.

mod driver;
mod requests;
pub mod session;

pub use requests::{dispatch, Request, RequestKind, Requests};

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::control::{bind_private, PreboundSocket};
use crate::error::{Error, Result};
use crate::lock::{DataDirLock, ReleasedLock};
use crate::log::event;
use crate::poll;
use crate::service::Service;

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
    /// Past PrepareHandoff's deadline, how long to wait for a Commit before
    /// resuming on our own (the supervisor's deadline has wire slack too).
    pub deadline_slack: Duration,
    /// The longest deadline a PrepareHandoff may set: a peer cannot keep
    /// the service drained for longer, whatever it asks.
    pub max_deadline: Duration,
    /// The service hands its connections (and other descriptors) to its
    /// successor when the handoff allows it: the incumbent offers protocol
    /// v2 (docs/protocol.md).
    pub moves_descriptors: bool,
}

impl Default for IncumbentConfig {
    fn default() -> Self {
        IncumbentConfig {
            liveness: Duration::from_secs(10),
            hello: Duration::from_secs(5),
            heartbeat: Duration::from_secs(2),
            relock: Duration::from_secs(2),
            deadline_slack: Duration::from_secs(2),
            max_deadline: Duration::from_secs(600),
            moves_descriptors: false,
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
    /// The socket file's (device, inode) at `path` once bound: whether the
    /// path still leads to this socket.
    identity: Option<(u64, u64)>,
}

impl ControlSocket {
    pub fn bind(path: &Path) -> Result<ControlSocket> {
        ControlSocket::listening(bind_private(path)?, path)
    }

    /// The socket bound ahead, renamed over its path.
    pub fn place(prebound: PreboundSocket) -> Result<ControlSocket> {
        let path = prebound.path().to_owned();
        ControlSocket::listening(prebound.place()?, &path)
    }

    fn listening(listener: UnixListener, path: &Path) -> Result<ControlSocket> {
        listener.set_nonblocking(true).map_err(Error::Stream)?;
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
            identity: file_identity(path),
        })
    }

    /// Whether `path` is still this socket's file (nobody replaced it).
    fn still_at_path(&self) -> bool {
        self.identity.is_some() && file_identity(&self.path) == self.identity
    }
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

pub struct Incumbent {
    control: ControlSocket,
    data_dir: PathBuf,
    lock: Option<DataDirLock>,
    /// The lock's files while a handoff has it released.
    released: Option<ReleasedLock>,
    generation: Arc<AtomicU64>,
    build_id: Vec<u8>,
    config: IncumbentConfig,
    stop: Option<OwnedFd>,
    /// A descriptor kept in reserve, given up to accept a control connection
    /// when the service has used up every other one (EMFILE): a service at
    /// its descriptor limit can still be handed off, which drains it.
    spare: Option<std::os::fd::OwnedFd>,
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
        let control_path = socket.path.clone();
        event!(
            Info,
            "incumbent {} serving control socket {}",
            std::process::id(),
            control_path.display()
        );
        Incumbent {
            control: socket,
            data_dir: lock.data_dir().to_owned(),
            generation: Arc::new(AtomicU64::new(lock.generation())),
            lock: Some(lock),
            released: None,
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
        &self.control.path
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

    /// A handle that makes `serve` return. Call before `serve`.
    pub fn stop_handle(&mut self) -> Result<StopHandle> {
        let (read, write) = poll::wake_pair().map_err(Error::Stream)?;
        self.stop = Some(read);
        Ok(StopHandle(write))
    }

    fn stop_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stop.as_ref().map(|fd| fd.as_fd())
    }

    /// Serve the control socket until a handoff commits or `stop` is called.
    /// Failed or abandoned handoffs are rolled back and serving goes on.
    /// The hooks run on a thread of the library's, one at a time, fed by
    /// the same requests a service's own loop takes from [`Incumbent::start`].
    pub fn serve(&mut self, service: &dyn Service) -> Result<ServeOutcome> {
        std::thread::scope(|scope| {
            // Made in here: a panicking driver drops the mailbox, which ends
            // the hook thread before the scope waits for it.
            let (mailbox, requests) = requests::mailbox()?;
            std::thread::Builder::new()
                .name("handoff-hooks".into())
                .spawn_scoped(scope, move || dispatch(&requests, service))
                .map_err(Error::Stream)?;
            let outcome = driver::Driver::new(self, &mailbox).run();
            mailbox.submit(
                RequestKind::Ended(outcome.as_ref().ok().copied()),
                None,
                None,
                None,
            );
            outcome
        })
    }

    /// Serve the control socket on a thread of the library's and hand the
    /// work to the caller's own event loop: poll [`Serving::requests`]'s
    /// descriptor, take each request, do it across as many loop iterations
    /// as it needs and complete it. Heartbeats go on meanwhile. The end of
    /// serving arrives as a [`RequestKind::Ended`] request. When the thread
    /// cannot be started the caller gets the incumbent back.
    pub fn start(mut self) -> std::result::Result<Serving, Box<NotStarted>> {
        let not_started = |error, incumbent| Box::new(NotStarted { error, incumbent });
        let stop = match self.stop_handle() {
            Ok(stop) => stop,
            Err(error) => return Err(not_started(error, self)),
        };
        let (mailbox, requests) = match requests::mailbox() {
            Ok(pair) => pair,
            Err(error) => return Err(not_started(error, self)),
        };
        // The incumbent reaches the thread only once it runs, so that a
        // failed spawn can give it back.
        let (hand_over, handed) = std::sync::mpsc::sync_channel::<Incumbent>(1);
        let (report, done) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("handoff-incumbent".into())
            .spawn(move || {
                let Ok(mut incumbent) = handed.recv() else {
                    return;
                };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    driver::Driver::new(&mut incumbent, &mailbox).run()
                }))
                .unwrap_or_else(|_| {
                    Err(Error::WrongState(
                        "internal error (panic) in the serve loop".into(),
                    ))
                });
                // Ended goes out after the outcome, so that a service that
                // sees it can read the outcome without waiting.
                let ended = RequestKind::Ended(outcome.as_ref().ok().copied());
                let _ = report.send(outcome);
                mailbox.submit(ended, None, None, None);
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => return Err(not_started(Error::Stream(e), self)),
        };
        let generation = self.generation_handle();
        hand_over
            .send(self)
            .expect("the serve thread waits for the incumbent");
        Ok(Serving {
            requests,
            finisher: Finisher {
                stop,
                generation,
                done,
                thread: Some(thread),
            },
        })
    }
}

/// Why [`Incumbent::start`] failed, with the incumbent given back.
pub struct NotStarted {
    pub error: Error,
    pub incumbent: Incumbent,
}

/// An incumbent serving on a thread of the library's (see
/// [`Incumbent::start`]).
pub struct Serving {
    requests: Requests,
    finisher: Finisher,
}

impl Serving {
    /// The requests to take and complete; readable descriptor in `fd()`.
    pub fn requests(&self) -> &Requests {
        &self.requests
    }

    pub fn finisher(&mut self) -> &mut Finisher {
        &mut self.finisher
    }

    /// Split into the requests and the serve thread's handle (for the
    /// callback API, which hands the requests to a thread of its own).
    pub fn into_parts(self) -> (Requests, Finisher) {
        (self.requests, self.finisher)
    }

    /// Wait for serving to end. Requests still waiting are dropped first,
    /// so they fail instead of holding it up.
    pub fn join(self) -> Result<ServeOutcome> {
        let (requests, mut finisher) = self.into_parts();
        drop(requests);
        finisher.wait(None).unwrap_or(Ok(ServeOutcome::Stopped))
    }
}

/// The serve thread's handle: stop it, wait for it, read the generation.
pub struct Finisher {
    stop: StopHandle,
    generation: Arc<AtomicU64>,
    done: std::sync::mpsc::Receiver<Result<ServeOutcome>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Finisher {
    /// Ask serving to end. It does not wait: a handoff in progress is rolled
    /// back first (which may send a Resume request), then `Ended` arrives.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// The lock generation of the current tenure.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Wait up to `timeout` (None: forever) for serving to end: None while
    /// it goes on, then its outcome once (later calls: None).
    pub fn wait(&mut self, timeout: Option<Duration>) -> Option<Result<ServeOutcome>> {
        let thread = self.thread.as_ref()?;
        let outcome = if thread.is_finished() {
            // Without blocking: a blocking std receive leaves per-thread
            // runtime state on a C caller's thread (valgrind: "possibly lost").
            self.done.try_recv().ok()
        } else {
            match timeout {
                None => self.done.recv().ok(),
                Some(t) => self.done.recv_timeout(t).ok(),
            }
        };
        if outcome.is_none() && !thread.is_finished() {
            return None;
        }
        let _ = self.thread.take().map(|t| t.join());
        Some(outcome.unwrap_or_else(|| {
            Err(Error::WrongState(
                "the serve thread ended without an outcome".into(),
            ))
        }))
    }

    /// Wait for the thread after `stop`, joining first (see `wait`).
    pub fn join(&mut self) -> Option<Result<ServeOutcome>> {
        let _ = self.thread.take()?.join();
        Some(self.done.try_recv().unwrap_or_else(|_| {
            Err(Error::WrongState(
                "the serve thread ended without an outcome".into(),
            ))
        }))
    }
}

/// A descriptor to hold in reserve (close-on-exec), if one can be had.
fn spare_descriptor() -> Option<std::os::fd::OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(Into::into)
}
