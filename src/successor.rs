//! The successor: handshake, wait for Begin, take the listeners, announce
//! Ready and become the incumbent.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::channel::{Channel, Filled};
use crate::control::PreboundSocket;
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::incumbent::{ControlSocket, Incumbent};
use crate::listeners::{Inherited, Listeners};
use crate::lock::DataDirLock;
use crate::log::event;
use crate::poll::{wait_fd, Wait};
use crate::protocol::{
    describe, negotiate_version, Capabilities, HandoffId, ItemKind, Message, Side, PROTO_MIN,
    PROTO_MOVES,
};

/// How long the supervisor has to answer our Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// Descriptors kept free for the service's own use (its files, accepted
/// clients) when it says how many moved ones it can take.
const DESCRIPTOR_RESERVE: usize = 64;

/// A descriptor the incumbent moved to us (protocol v2), ours from
/// [`Successor::adopt_items`] on: a connection goes on with `unwritten`
/// written first, then `unread` processed, then the socket read.
#[derive(Debug)]
pub struct AdoptedItem {
    pub kind: ItemKind,
    pub name: String,
    pub fd: OwnedFd,
    pub unread: Vec<u8>,
    pub unwritten: Vec<u8>,
    pub state: Vec<u8>,
}

/// What moves in this handoff, as far as it has come.
#[derive(Debug, Default)]
struct Moves {
    /// Moving's count, once it came.
    announced: Option<u32>,
    received: Vec<AdoptedItem>,
    /// The service has taken them (after its lock).
    adopted: bool,
}

/// What the successor announces in Ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    pub listening_on: Vec<String>,
    pub healthz_ok: bool,
    pub advertised_revision_per_shard: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    New,
    Handshook(HandoffId),
    Begun(HandoffId),
}

/// A process spawned by the supervisor for one handoff.
pub struct Successor {
    channel: Channel,
    listeners: Listeners,
    stage: Stage,
    /// The service takes moved descriptors: offer protocol v2.
    adopts: bool,
    /// Some once the handshake chose v2.
    moves: Option<Moves>,
    /// Begin has come: the heartbeats' thread beats from then on.
    begun: Arc<AtomicBool>,
    /// Where the supervisor will reach us as the incumbent, if it said.
    expected_control: Option<PathBuf>,
    /// That control socket, bound during the handshake.
    prebound: Option<PreboundSocket>,
}

impl Successor {
    /// Wrap the inherited control descriptor (HANDOFF_SOCK_FD) and listeners.
    pub fn new(control: OwnedFd, listeners: Listeners) -> Result<Successor> {
        Ok(Successor {
            channel: Channel::new(UnixStream::from(control))?,
            listeners,
            stage: Stage::New,
            adopts: false,
            moves: None,
            begun: Arc::new(AtomicBool::new(false)),
            expected_control: None,
            prebound: None,
        })
    }

    /// [`Successor::new`] with what [`detect`](crate::listeners::detect)
    /// found: `control`, taken from `inherited` already, its listeners, and
    /// the control socket path the supervisor named
    /// ([`expect_control_socket`](Successor::expect_control_socket)).
    pub fn from_inherited(control: OwnedFd, inherited: Inherited) -> Result<Successor> {
        let expected = inherited.control_socket_path().map(Path::to_owned);
        let mut successor = Successor::new(control, inherited.into_listeners())?;
        successor.expect_control_socket(expected)?;
        Ok(successor)
    }

    /// The control socket path the supervisor will reach this process at
    /// once it is the incumbent (`Inherited::control_socket_path`, which our
    /// supervisor sets): the handshake binds it ahead, and Ready, given the
    /// same path, only renames it into place; the bind (0.05-0.08 ms here)
    /// leaves the blackout. Ready given another path binds that one as
    /// before. Before the handshake.
    pub fn expect_control_socket(&mut self, path: Option<PathBuf>) -> Result<()> {
        if self.stage != Stage::New {
            return Err(Error::WrongState(
                "the control socket is expected before the handshake".into(),
            ));
        }
        self.expected_control = path;
        Ok(())
    }

    /// The service adopts the descriptors an incumbent moves (its
    /// connections, named descriptors): the handshake offers protocol v2.
    /// Before the handshake.
    pub fn set_adopts_descriptors(&mut self, adopts: bool) -> Result<()> {
        if self.stage != Stage::New {
            return Err(Error::WrongState(
                "adopting descriptors is decided before the handshake".into(),
            ));
        }
        self.adopts = adopts;
        Ok(())
    }

    /// The handoff id, once the supervisor has answered our Hello.
    pub fn handoff_id(&self) -> Option<HandoffId> {
        match self.stage {
            Stage::New => None,
            Stage::Handshook(id) | Stage::Begun(id) => Some(id),
        }
    }

    /// Send Hello and wait for HelloAck.
    pub fn handshake(&mut self, build_id: &[u8]) -> Result<HandoffId> {
        if self.stage != Stage::New {
            return Err(Error::WrongState("handshake already done".into()));
        }
        let shaken = self.exchange_hello(build_id);
        // A successor whose handshake failed never gets to Ready: its
        // prebound control socket goes at once, not at its drop, which a
        // service that exits on the error never reaches. The supervisor
        // journals the successor only once its Hello is answered: before,
        // nobody else removes the socket (a supervisor killed then,
        // S_AFTER_SPAWN). Later failures leave it to the drop, the
        // supervisor's discard or recovery.
        if shaken.is_err() {
            self.prebound = None;
        }
        shaken
    }

    fn exchange_hello(&mut self, build_id: &[u8]) -> Result<HandoffId> {
        self.channel.set_version(self.offered_version());
        self.channel.send(&Message::Hello {
            role: Side::Successor,
            pid: std::process::id(),
            build_id: build_id.to_vec(),
            proto_min: PROTO_MIN,
            proto_max: self.offered_version(),
            capabilities: Capabilities::default(),
        })?;
        // While the supervisor answers. Failing, Ready binds as before.
        if let Some(path) = &self.expected_control {
            self.prebound = PreboundSocket::bind(path)
                .map_err(|e| event!(Info, "{e}; bound when Ready is announced instead"))
                .ok();
        }
        crate::lock::read_boot_id_ahead();
        let deadline = Instant::now() + HELLO_TIMEOUT;
        let (version, handoff_id) = loop {
            match self.channel.recv_until(deadline)? {
                Message::HelloAck {
                    proto_version_chosen,
                    handoff_id,
                } => break (proto_version_chosen, handoff_id),
                Message::Heartbeat { .. } => continue,
                Message::Abort { reason, .. } => return Err(Error::Aborted(reason)),
                other => {
                    return Err(Error::Protocol(format!(
                        "expected HelloAck, got {}",
                        other.kind().name()
                    )))
                }
            }
        };
        negotiate_version((PROTO_MIN, self.offered_version()), (version, version))?;
        self.channel.set_version(version);
        if version >= PROTO_MOVES {
            self.channel.send(&Message::Capacity {
                descriptors: descriptor_capacity(),
            })?;
            self.moves = Some(Moves::default());
        }
        self.stage = Stage::Handshook(handoff_id);
        crash_point!("N_AFTER_HELLO");
        Ok(handoff_id)
    }

    fn offered_version(&self) -> u16 {
        if self.adopts {
            PROTO_MOVES
        } else {
            PROTO_MIN
        }
    }

    /// Wait for Begin: the incumbent has sealed and released the lock. An
    /// Abort answers [`Error::Aborted`], a vanished supervisor
    /// [`Error::PeerClosed`]: in both cases the successor should exit.
    pub fn wait_for_begin(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.poll_begin()? {
            if wait_fd(
                self.control_fd().as_raw_fd(),
                libc::POLLIN,
                None,
                Some(deadline),
            )
            .map_err(Error::Stream)?
                == Wait::TimedOut
            {
                return Err(Error::Timeout);
            }
        }
        Ok(())
    }

    /// The control connection: readable when the supervisor has said
    /// something, for a service's own loop to wait on (with its own
    /// deadline and cancellation) before calling [`poll_begin`].
    ///
    /// [`poll_begin`]: Successor::poll_begin
    pub fn control_fd(&self) -> BorrowedFd<'_> {
        self.channel.stream().as_fd()
    }

    /// Whether Begin has arrived, reading what the control connection holds
    /// without waiting. True once Begin came (and from then on); errors as
    /// [`wait_for_begin`](Successor::wait_for_begin).
    pub fn poll_begin(&mut self) -> Result<bool> {
        let expected = match self.stage {
            Stage::Begun(_) => return Ok(true),
            Stage::Handshook(id) => id,
            Stage::New => {
                return Err(Error::WrongState(
                    "waiting for Begin needs a handshake first".into(),
                ))
            }
        };
        loop {
            let incoming = match self.channel.next_incoming()? {
                Some(incoming) => incoming,
                None => match self.channel.fill()? {
                    Filled::Some => continue,
                    Filled::Nothing => return Ok(false),
                },
            };
            match (incoming.message, incoming.descriptor, self.moves.as_mut()) {
                (Message::Begin { handoff_id }, None, moves) if handoff_id == expected => {
                    if let Some(moves) = moves {
                        let announced = moves.announced.unwrap_or(0) as usize;
                        if moves.received.len() != announced {
                            return Err(Error::Protocol(format!(
                                "Begin with {} of the {announced} moved item(s) received",
                                moves.received.len()
                            )));
                        }
                    }
                    break;
                }
                (Message::Heartbeat { .. }, None, _) => {}
                (Message::Abort { reason, .. }, None, _) => return Err(Error::Aborted(reason)),
                (Message::Moving { handoff_id, items }, None, Some(moves))
                    if handoff_id == expected && moves.announced.is_none() =>
                {
                    moves.announced = Some(items);
                }
                (
                    Message::Item {
                        seq,
                        kind,
                        name,
                        unread,
                        unwritten,
                        state,
                    },
                    Some(fd),
                    Some(moves),
                ) if seq as usize == moves.received.len()
                    && moves.announced.is_some_and(|n| seq < n) =>
                {
                    // Held, neither read nor written, until the lock is ours;
                    // looked at (fstat) now, while the incumbent seals, not
                    // in the blackout after Begin.
                    let item = AdoptedItem {
                        kind,
                        name,
                        fd,
                        unread,
                        unwritten,
                        state,
                    };
                    if let Some(bad) = not_a_connection(&item) {
                        // Nothing of this handoff is kept: all closed now.
                        moves.received.clear();
                        return Err(Error::Protocol(bad));
                    }
                    moves.received.push(item);
                }
                (other, _, _) => {
                    return Err(Error::Protocol(format!(
                        "expected Begin for {expected}, got {}",
                        describe(&other)
                    )))
                }
            }
        }
        crash_point!("N_AFTER_BEGIN");
        self.stage = Stage::Begun(expected);
        self.begun.store(true, Ordering::Release);
        Ok(true)
    }

    /// The descriptors the incumbent moved, with their state, for the
    /// service to adopt: only after Begin, and only with the data-dir lock
    /// in hand (invariant 5: nothing is read or written before). Empty when
    /// nothing moved; once only. (An item said to be a connection that is
    /// not a socket fails the wait for Begin: [`Error::Protocol`].)
    pub fn adopt_items(&mut self, lock: &DataDirLock) -> Result<Vec<AdoptedItem>> {
        let _ = lock; // the proof that the lock is ours
        if !matches!(self.stage, Stage::Begun(_)) {
            return Err(Error::WrongState(
                "moved items are adopted after Begin".into(),
            ));
        }
        match self.moves.as_mut() {
            None => Ok(Vec::new()),
            Some(moves) if moves.adopted => Err(Error::WrongState(
                "the moved items were adopted already".into(),
            )),
            Some(moves) => {
                moves.adopted = true;
                crash_point!("N_AFTER_ADOPT");
                Ok(std::mem::take(&mut moves.received))
            }
        }
    }

    /// The inherited listeners; only after Begin, since before it they are
    /// the incumbent's (their shared O_NONBLOCK flag included, DESIGN §3).
    pub fn listeners(&mut self) -> Result<&mut Listeners> {
        match self.stage {
            Stage::Begun(_) => Ok(&mut self.listeners),
            _ => Err(Error::WrongState("listeners are taken after Begin".into())),
        }
    }

    /// Keep the supervisor from timing us out during a slow start-up
    /// between Begin and Ready: a heartbeat every `period` from Begin on
    /// (none before: a supervisor holding a prepared successor does not read
    /// it). Best called before Begin, so that starting the thread is not in
    /// the blackout. Stops when the guard is dropped.
    pub fn start_heartbeats(&self, period: Duration) -> HeartbeatGuard {
        let sender = self.channel.sender();
        let begun = Arc::clone(&self.begun);
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                if begun.load(Ordering::Acquire) && sender.send(&Message::heartbeat_now()).is_err()
                {
                    return;
                }
            }
        });
        HeartbeatGuard { _stop: stop }
    }

    /// Take the control socket's path, then announce Ready: from Ready on
    /// this process is authoritative, so nothing that can fail comes after
    /// it (a bind failure is a clean abort: the lock is dropped before
    /// anyone relies on us). If Ready cannot be sent the supervisor is gone
    /// or rolling back: we step back (the lock dropped), and the incumbent
    /// that takes its lock back rebinds the path we had taken.
    pub fn announce_ready(
        mut self,
        readiness: Readiness,
        control_path: &Path,
        lock: DataDirLock,
    ) -> Result<Incumbent> {
        let Stage::Begun(handoff_id) = self.stage else {
            return Err(Error::WrongState("Ready is announced after Begin".into()));
        };
        if let Some(moves) = &self.moves {
            let announced = moves.announced.unwrap_or(0);
            if announced > 0 && !moves.adopted {
                return Err(Error::WrongState(format!(
                    "{announced} moved item(s) not adopted: adopt_items before Ready"
                )));
            }
        }
        let control = match self.prebound.take() {
            Some(prebound) if prebound.path() == control_path => ControlSocket::place(prebound)?,
            _ => ControlSocket::bind(control_path)?,
        };
        // Adopted only in a handoff that moved (Moving came): the supervisor
        // then waits for it before Ready. One write: a supervisor that dies
        // as the first arrives cannot leave Ready unsent.
        let mut frames = Vec::with_capacity(2);
        if let Some(items) = self.moves.as_ref().and_then(|m| m.announced) {
            frames.push(Message::Adopted { handoff_id, items });
        }
        frames.push(Message::Ready {
            handoff_id,
            listening_on: readiness.listening_on,
            healthz_ok: readiness.healthz_ok,
            advertised_revision_per_shard: readiness.advertised_revision_per_shard,
        });
        self.channel.send_together(&frames)?;
        crash_point!("N_AFTER_READY");
        event!(
            Info,
            "handoff {handoff_id}: ready; took over {}",
            control_path.display()
        );
        Ok(Incumbent::with_control_socket(control, lock))
    }
}

/// Why a connection item's descriptor is not a socket, if it is not (an
/// incumbent that mislabelled a memfd or a file). One fstat: this runs for
/// every connection inside the blackout.
fn not_a_connection(item: &AdoptedItem) -> Option<String> {
    if item.kind != ItemKind::Connection {
        return None;
    }
    let what = match crate::sys::is_socket(item.fd.as_raw_fd()) {
        Ok(true) => return None,
        Ok(false) => "not a socket".to_string(),
        Err(e) => format!("unusable ({e})"),
    };
    Some(format!(
        "moved item {:?} is a connection, but its descriptor is {what}",
        item.name
    ))
}

/// Stops the successor's heartbeats when dropped, without waiting for the
/// thread (a join just before Ready was in the blackout): it sees the stop
/// at once and ends; a beat it was sending goes out whole (one writer at a
/// time), and a supervisor skips a heartbeat wherever it comes.
pub struct HeartbeatGuard {
    _stop: mpsc::Sender<()>,
}

/// How many moved descriptors this process can take in: its soft limit
/// raised to the hard one, less what is open and a reserve.
fn descriptor_capacity() -> u32 {
    let limit = match crate::sys::raise_descriptor_limit() {
        Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        Err(_) => 0,
    };
    let free = limit.saturating_sub(crate::sys::open_descriptors() + DESCRIPTOR_RESERVE);
    u32::try_from(free).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::prebound_path;
    use crate::protocol::HandoffId;

    fn readiness() -> Readiness {
        Readiness {
            listening_on: Vec::new(),
            healthz_ok: true,
            advertised_revision_per_shard: Vec::new(),
        }
    }

    /// A successor whose handshake `supervisor` answers.
    fn handshaken(control: Option<PathBuf>) -> (Successor, Channel, HandoffId) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut successor = Successor::new(OwnedFd::from(ours), Listeners::default()).unwrap();
        successor.expect_control_socket(control).unwrap();
        let mut supervisor = Channel::new(theirs).unwrap();
        let id = HandoffId::random();
        let answering = std::thread::spawn(move || {
            let hello = supervisor.recv_until(Instant::now() + Duration::from_secs(5));
            assert!(matches!(hello, Ok(Message::Hello { .. })), "{hello:?}");
            supervisor
                .send(&Message::HelloAck {
                    proto_version_chosen: PROTO_MIN,
                    handoff_id: id,
                })
                .unwrap();
            supervisor
        });
        assert_eq!(successor.handshake(b"test").unwrap(), id);
        (successor, answering.join().unwrap(), id)
    }

    #[test]
    fn the_expected_control_socket_is_bound_during_the_handshake_and_placed_at_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let ahead = prebound_path(&path, std::process::id());

        let (mut successor, supervisor, id) = handshaken(Some(path.clone()));
        assert!(ahead.exists(), "bound before Begin");
        assert!(!path.exists());
        supervisor.send(&Message::Begin { handoff_id: id }).unwrap();
        successor.wait_for_begin(Duration::from_secs(5)).unwrap();
        let lock = DataDirLock::acquire(&dir.path().join("data")).unwrap();
        let incumbent = successor.announce_ready(readiness(), &path, lock).unwrap();
        assert!(!ahead.exists());
        UnixStream::connect(&path).unwrap();
        drop(incumbent);

        // A successor that never gets to Ready leaves nothing behind.
        let other = dir.path().join("other.sock");
        let (successor, _supervisor, _) = handshaken(Some(other.clone()));
        assert!(prebound_path(&other, std::process::id()).exists());
        drop(successor);
        assert!(!prebound_path(&other, std::process::id()).exists());
        assert!(!other.exists());
    }

    /// The service may exit on the error without dropping its successor
    /// (kv-c's and noop-service's fatal paths do): the socket bound ahead
    /// is gone once the handshake has failed.
    #[test]
    fn a_failed_handshake_removes_the_socket_bound_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let ahead = prebound_path(&path, std::process::id());
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut successor = Successor::new(OwnedFd::from(ours), Listeners::default()).unwrap();
        successor.expect_control_socket(Some(path.clone())).unwrap();
        let vanishing = std::thread::spawn(move || {
            let mut supervisor = Channel::new(theirs).unwrap();
            let hello = supervisor.recv_until(Instant::now() + Duration::from_secs(5));
            assert!(matches!(hello, Ok(Message::Hello { .. })), "{hello:?}");
        });
        assert!(successor.handshake(b"test").is_err());
        vanishing.join().unwrap();
        assert!(!ahead.exists(), "left after a failed handshake");
        std::mem::forget(successor); // as if the service exited here
    }

    #[test]
    fn ready_for_another_path_binds_that_one_and_drops_the_one_bound_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let expected = dir.path().join("expected.sock");
        let given = dir.path().join("given.sock");
        let (mut successor, supervisor, id) = handshaken(Some(expected.clone()));
        supervisor.send(&Message::Begin { handoff_id: id }).unwrap();
        successor.wait_for_begin(Duration::from_secs(5)).unwrap();
        let lock = DataDirLock::acquire(&dir.path().join("data")).unwrap();
        let _incumbent = successor.announce_ready(readiness(), &given, lock).unwrap();
        UnixStream::connect(&given).unwrap();
        assert!(!expected.exists());
        assert!(!prebound_path(&expected, std::process::id()).exists());
    }

    #[test]
    fn heartbeats_beat_only_from_begin_on_and_stop_with_their_guard() {
        let (ours, supervisor) = UnixStream::pair().unwrap();
        let successor = Successor::new(OwnedFd::from(ours), Listeners::default()).unwrap();
        let mut supervisor = Channel::new(supervisor).unwrap();
        let period = Duration::from_millis(10);
        let guard = successor.start_heartbeats(period);
        let silent = |supervisor: &mut Channel, for_: Duration| {
            matches!(
                supervisor.recv_until(Instant::now() + for_),
                Err(Error::Timeout)
            )
        };
        // Before Begin (a supervisor holding a prepared successor reads
        // nothing): silence, over many periods.
        assert!(silent(&mut supervisor, 20 * period));
        successor.begun.store(true, Ordering::Release);
        for _ in 0..3 {
            assert!(matches!(
                supervisor.recv_until(Instant::now() + Duration::from_secs(5)),
                Ok(Message::Heartbeat { .. })
            ));
        }
        drop(guard);
        // At most the one in flight when the guard went, then silence.
        let _ = supervisor.recv_until(Instant::now() + 2 * period);
        assert!(silent(&mut supervisor, 20 * period));
    }
}
