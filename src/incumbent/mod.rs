//! The incumbent: serves the control socket, drains and seals on request,
//! releases the lock after a successful seal, and rolls back on abort, on a
//! vanished or silent supervisor, and when PrepareHandoff's deadline passes
//! without a Commit (invariant 8).
//!
//! `session` decides (a pure state machine per control connection),
//! `driver` does the I/O (one poll loop over the control socket, every
//! connection, the hook thread and the clock), `hooks` runs the service's
//! hooks on a thread of their own so that the loop never stops answering.

mod driver;
mod hooks;
pub mod session;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::control::bind_private;
use crate::error::{Error, Result};
use crate::lock::DataDirLock;
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
        let listener = bind_private(path)?;
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
        let (read, write) = poll::pipe().map_err(Error::Stream)?;
        self.stop = Some(read);
        Ok(StopHandle(write))
    }

    fn stop_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stop.as_ref().map(|fd| fd.as_fd())
    }

    /// Serve the control socket until a handoff commits or `stop` is called.
    /// Failed or abandoned handoffs are rolled back and serving goes on.
    /// The hooks run on a thread of the library's, one at a time.
    pub fn serve(&mut self, service: &dyn Service) -> Result<ServeOutcome> {
        std::thread::scope(|scope| {
            let hooks = hooks::HookRunner::start(scope, service)?;
            driver::Driver::new(self, &hooks).run()
        })
    }
}

/// A descriptor to hold in reserve (close-on-exec), if one can be had.
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
