//! The incumbent's I/O: one poll loop over the stop pipe, the service's
//! completions,
//! the control socket and every control connection, feeding what happens
//! to each connection's [`Session`] and carrying out the actions it returns.
//! Any number of connections may be open (a monitoring probe, a stray
//! client, the supervisor); one of them at a time runs a handoff.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel::Channel;
use crate::control::check_peer_uid;
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::lock::{DataDirLock, ReleasedLock};
use crate::log::event;
use crate::poll::{self, Wait};
use crate::protocol::{Capabilities, Message, MessageKind, Side, PROTO_MIN, PROTO_MOVES};
use crate::service::{HookError, MovedItem};

use super::requests::{Done, Mailbox, RequestKind};
use super::session::{Action, Hook, Input, Session, Timing};
use super::{spare_descriptor, ControlSocket, Incumbent, ServeOutcome};

/// At most this many control connections are kept; past it the oldest one
/// that runs no handoff is closed, so idle clients cannot use up the
/// incumbent's descriptors or keep the supervisor out.
const MAX_CONNECTIONS: usize = 16;
/// How long accepting pauses after a failed accept (EMFILE and friends).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How often a rolling-back incumbent retries the lock.
const RELOCK_RETRY: Duration = Duration::from_millis(20);

struct Connection {
    channel: Channel,
    session: Session,
    peer_pid: u32,
}

pub struct Driver<'a> {
    incumbent: &'a mut Incumbent,
    mailbox: &'a Mailbox,
    connections: Vec<Connection>,
    /// No accept before this (after a failed one).
    accept_after: Option<Instant>,
    /// Set by an action that ends serving.
    ended: Option<ServeOutcome>,
    /// A stop is rolling back: the service may refuse the resume (it is on
    /// its way out), which is then no error.
    stopping: bool,
    /// The descriptors this handoff moved, with their file status flags as
    /// they were: a rollback restores them (the open file descriptions are
    /// shared with the successor).
    moved: Vec<(RawFd, libc::c_int)>,
    /// The seal the last drain's success queued, until the session seals.
    queued_seal: Option<u64>,
    /// Set once the drain that runs is abandoned: its success queues no
    /// seal then.
    drain_abandoned: Arc<AtomicBool>,
    /// The queued seal the session took up: its completion is the
    /// session's; one it did not take up ran after an abort, for nobody.
    awaited_seal: Option<u64>,
}

/// What polling found.
struct Readiness {
    stopped: bool,
    hook_done: bool,
    listener: bool,
    /// Indexes into `connections`.
    readable: Vec<usize>,
}

impl<'a> Driver<'a> {
    pub fn new(incumbent: &'a mut Incumbent, mailbox: &'a Mailbox) -> Driver<'a> {
        Driver {
            incumbent,
            mailbox,
            connections: Vec::new(),
            accept_after: None,
            ended: None,
            stopping: false,
            moved: Vec::new(),
            queued_seal: None,
            drain_abandoned: Arc::new(AtomicBool::new(false)),
            awaited_seal: None,
        }
    }

    /// v2 only for a service that moves its descriptors (docs/protocol.md,
    /// "Negotiation").
    fn offered_version(&self) -> u16 {
        if self.incumbent.config.moves_descriptors {
            PROTO_MOVES
        } else {
            PROTO_MIN
        }
    }

    fn timing(&self) -> Timing {
        let config = self.incumbent.config;
        Timing {
            liveness: config.liveness,
            hello: config.hello,
            heartbeat: config.heartbeat,
            deadline_slack: config.deadline_slack,
            max_deadline: config.max_deadline,
        }
    }

    pub fn run(mut self) -> Result<ServeOutcome> {
        // A successor that claimed its generation (lock.rs) stored the count
        // without an fsync, in the blackout; it is made durable here, after.
        self.make_generation_durable();
        loop {
            if self.incumbent.spare.is_none() {
                self.incumbent.spare = spare_descriptor();
            }
            let now = Instant::now();
            for at in 0..self.connections.len() {
                if self.connections[at]
                    .session
                    .next_timer()
                    .is_some_and(|t| t <= now)
                {
                    if let Some(end) = self.feed(at, Input::Tick)? {
                        return Ok(end);
                    }
                }
            }
            self.drop_closed_connections();

            let ready = self.wait()?;
            if ready.stopped {
                return self.stop();
            }
            if ready.hook_done {
                while let Some(done) = self.mailbox.try_result() {
                    if let Some(end) = self.hook_returned(done)? {
                        return Ok(end);
                    }
                }
            }
            for at in ready.readable {
                if let Some(end) = self.read(at)? {
                    return Ok(end);
                }
            }
            if ready.listener {
                self.accept();
            }
        }
    }

    /// Poll everything that may need us, until the next timer.
    fn wait(&self) -> Result<Readiness> {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(self.connections.len() + 3);
        let watch = |fds: &mut Vec<libc::pollfd>, fd: RawFd| {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        };
        watch(
            &mut fds,
            self.incumbent.stop_fd().map_or(-1, |fd| fd.as_raw_fd()),
        );
        watch(&mut fds, self.mailbox.done_fd().as_raw_fd());
        // While the lock is released nobody new is greeted: whoever asks now
        // (a restarted supervisor above all) must meet the process that
        // ends up in charge, not one that may be superseded a moment later.
        let now = Instant::now();
        let accepting = !self.connections.iter().any(|c| c.session.lock_released())
            && self.accept_after.is_none_or(|t| t <= now);
        watch(
            &mut fds,
            if accepting {
                self.incumbent.control.listener.as_raw_fd()
            } else {
                -1
            },
        );
        let mut polled = Vec::new();
        for (at, connection) in self.connections.iter().enumerate() {
            if connection.session.wants_input() {
                watch(&mut fds, connection.channel.stream().as_raw_fd());
                polled.push(at);
            }
        }
        let next = self
            .connections
            .iter()
            .filter_map(|c| c.session.next_timer())
            .chain(self.accept_after)
            .min();
        poll::poll(&mut fds, next).map_err(Error::Stream)?;
        let fired = |i: usize| fds[i].revents != 0;
        Ok(Readiness {
            stopped: fired(0),
            hook_done: fired(1),
            listener: fired(2),
            readable: polled
                .into_iter()
                .enumerate()
                .filter(|&(i, _)| fired(3 + i))
                .map(|(_, at)| at)
                .collect(),
        })
    }

    /// The handoff another connection than `at` runs, if any.
    fn other_handoff(&self, at: usize) -> Option<crate::protocol::HandoffId> {
        self.connections
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != at)
            .find_map(|(_, c)| c.session.handoff())
    }

    /// Give `input` to connection `at`'s session and carry out what it
    /// says; a send that fails is fed back as the connection's end.
    fn feed(&mut self, at: usize, input: Input) -> Result<Option<ServeOutcome>> {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let other = self.other_handoff(at);
            let actions = self.connections[at]
                .session
                .handle(input, Instant::now(), other);
            if self.connections[at].session.hook_abandoned() {
                self.drain_abandoned.store(true, Ordering::Release);
            }
            for action in actions {
                if let Err(failure) = self.act(at, action)? {
                    inputs.push_back(failure);
                    break;
                }
                if let Some(end) = self.ended.take() {
                    return Ok(Some(end));
                }
            }
        }
        Ok(None)
    }

    /// Carry out one action; `Ok(Err(input))` when the connection failed.
    fn act(&mut self, at: usize, action: Action) -> Result<std::result::Result<(), Input>> {
        match action {
            Action::Send(message) => {
                if let Err(failed) = self.send(at, &message) {
                    return Ok(Err(failed));
                }
                match message.kind() {
                    MessageKind::Drained => {
                        crash_point!("O_AFTER_DRAINED");
                    }
                    MessageKind::SealComplete => {
                        crash_point!("O_AFTER_SEAL_COMPLETE");
                    }
                    _ => {}
                }
            }
            Action::Heartbeat => {
                if let Err(failed) = self.send(at, &Message::heartbeat_now()) {
                    return Ok(Err(failed));
                }
            }
            Action::SetVersion(version) => self.connections[at].channel.set_version(version),
            Action::ReserveGeneration => self.reserve_next_generation(),
            Action::RunHook {
                hook,
                handoff_id,
                budget,
                moves,
                seal_by,
            } => {
                match (hook, moves) {
                    (Hook::Drain, None) => {
                        event!(Info, "handoff {handoff_id}: draining (budget {budget:?})")
                    }
                    (Hook::Drain, Some(max)) => event!(
                        Info,
                        "handoff {handoff_id}: draining (budget {budget:?}), \
                         moving up to {max} descriptor(s)"
                    ),
                    (Hook::Seal, _) => event!(Info, "handoff {handoff_id}: sealing"),
                }
                let deadline = Instant::now() + budget;
                let sender = self.connections[at].channel.sender();
                match hook {
                    Hook::Drain => {
                        self.drain_abandoned = Arc::new(AtomicBool::new(false));
                        let abandoned = Arc::clone(&self.drain_abandoned);
                        self.mailbox
                            .submit_drain(deadline, moves, sender, seal_by, abandoned);
                    }
                    // Queued by the drain already.
                    Hook::Seal if self.queued_seal.is_some() => {
                        self.awaited_seal = self.queued_seal.take();
                    }
                    Hook::Seal => {
                        self.mailbox
                            .submit(RequestKind::Seal, Some(seal_by), moves, Some(sender));
                    }
                }
            }
            Action::SendItems(items) => {
                if let Err(failed) = self.send_items(at, items) {
                    return Ok(Err(failed));
                }
            }
            Action::ReleaseLock => {
                // Invariant 2: only after a successful seal, and before the
                // supervisor hears of it. The flock goes even when removing
                // the pidfile fails.
                if let Some(lock) = self.incumbent.lock.take() {
                    let (released, result) = lock.release_keeping_files();
                    if let Err(e) = result {
                        event!(Warn, "releasing the data-dir lock: {e}");
                    }
                    self.incumbent.released = Some(released);
                }
            }
            Action::RollBack { lock_released } => {
                if !self.roll_back(lock_released)? {
                    self.ended = Some(ServeOutcome::Superseded);
                }
            }
            Action::StepDown => {
                // The service closes its copies when it hears of the commit.
                self.moved.clear();
                self.ended = Some(ServeOutcome::Committed);
            }
            Action::Log(level, text) => crate::log::log(level, &text),
            Action::Close { reason } => {
                if let Some(reason) = reason {
                    // Name the offender: a misbehaving client is not always the supervisor.
                    event!(
                        Warn,
                        "handoff session with pid {} ended: {reason}",
                        self.connections[at].peer_pid
                    );
                }
            }
        }
        Ok(Ok(()))
    }

    /// Send the drain's items, each with its descriptor, noting the flags a
    /// rollback must restore.
    fn send_items(&mut self, at: usize, items: Vec<MovedItem>) -> std::result::Result<(), Input> {
        let count = items.len();
        let mut frames = Vec::with_capacity(count);
        for (seq, item) in items.into_iter().enumerate() {
            // A number the service closed answers EBADF: the move fails.
            let flags = crate::sys::file_status_flags(item.fd).map_err(|e| Input::PeerGone {
                reason: format!(
                    "moved item {seq} ({:?}): descriptor {}: {e}",
                    item.name, item.fd
                ),
                clean: false,
            })?;
            self.moved.push((item.fd, flags));
            frames.push((
                Message::Item {
                    seq: seq as u32,
                    kind: item.kind,
                    name: item.name,
                    unread: item.unread,
                    unwritten: item.unwritten,
                    state: item.state,
                },
                item.fd,
            ));
        }
        self.connections[at]
            .channel
            .sender()
            .send_items(&frames)
            .map_err(|e| Input::PeerGone {
                reason: format!("sending {count} item(s): {e}"),
                clean: false,
            })?;
        crash_point!("O_AFTER_ITEMS");
        Ok(())
    }

    /// Give the moved descriptors their flags back (the successor may have
    /// changed the shared open file descriptions).
    fn restore_moved(&mut self) {
        for (fd, flags) in self.moved.drain(..) {
            if let Err(e) = crate::sys::set_file_status_flags(fd, flags) {
                event!(Warn, "restoring the flags of moved descriptor {fd}: {e}");
            }
        }
    }

    fn send(&self, at: usize, message: &Message) -> std::result::Result<(), Input> {
        self.connections[at]
            .channel
            .send(message)
            .map_err(|e| Input::PeerGone {
                reason: format!("sending {}: {e}", message.kind().name()),
                clean: false,
            })
    }

    /// Read what connection `at` sent and feed each whole message.
    fn read(&mut self, at: usize) -> Result<Option<ServeOutcome>> {
        let filled = self.connections[at].channel.fill();
        loop {
            if !self.connections[at].session.wants_input() {
                return Ok(None);
            }
            let input = match self.connections[at].channel.next_message() {
                Ok(Some(message)) => Input::Message(message),
                Ok(None) => break,
                Err(e) => Input::PeerGone {
                    reason: e.to_string(),
                    clean: false,
                },
            };
            let failed = matches!(input, Input::PeerGone { .. });
            if let Some(end) = self.feed(at, input)? {
                return Ok(Some(end));
            }
            if failed {
                return Ok(None);
            }
        }
        let gone = match filled {
            Ok(_) => return Ok(None),
            Err(Error::PeerClosed { mid_frame }) => Input::PeerGone {
                reason: Error::PeerClosed { mid_frame }.to_string(),
                clean: !mid_frame,
            },
            Err(e) => Input::PeerGone {
                reason: e.to_string(),
                clean: false,
            },
        };
        self.feed(at, gone)
    }

    /// A hook returned: to the session that asked for it.
    fn hook_returned(&mut self, done: Done) -> Result<Option<ServeOutcome>> {
        let input = match done {
            Done::Drained {
                report,
                seal_queued,
            } => {
                self.queued_seal = seal_queued;
                Input::Drained(report)
            }
            Done::Sealed {
                report,
                following: None,
            } => Input::Sealed(report),
            Done::Sealed {
                report,
                following: Some(number),
            } => {
                if self.awaited_seal != Some(number) {
                    return Ok(None);
                }
                self.awaited_seal = None;
                Input::Sealed(report)
            }
            Done::Resumed(_) => return Ok(None),
        };
        let outcome = match self
            .connections
            .iter()
            .position(|c| c.session.hook_running().is_some())
        {
            Some(at) => self.feed(at, input),
            None => Ok(None),
        };
        // A queued seal the session did not take up (it rolled back).
        self.queued_seal = None;
        outcome
    }

    /// Close the connections whose session ended. Without a spare, the first
    /// one is shut down and kept as the spare, its slot never free: the
    /// service's own accept, at its descriptor limit, would take a slot freed
    /// by a close, and the next handoff could not be accepted.
    fn drop_closed_connections(&mut self) {
        let mut at = 0;
        while at < self.connections.len() {
            if !self.connections[at].session.is_closed() {
                at += 1;
                continue;
            }
            let closed = self.connections.remove(at);
            let incumbent = &mut *self.incumbent;
            if incumbent.spare.is_some() {
                continue;
            }
            if let Some(stream) = closed.channel.into_stream() {
                // The peer reads EOF as if it were closed.
                if stream.shutdown(std::net::Shutdown::Both).is_ok() {
                    incumbent.spare = Some(stream.into());
                }
            }
        }
    }

    /// Take one control connection: the peer must be our user or root, and
    /// is greeted with our Hello.
    fn accept(&mut self) {
        let incumbent = &mut *self.incumbent;
        let stream = match incumbent.control.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            Err(e) if out_of_descriptors(&e) && incumbent.spare.is_some() => {
                // Give the reserve up, and take the connection in its place.
                incumbent.spare = None;
                match incumbent.control.listener.accept() {
                    Ok((stream, _)) => {
                        event!(
                            Warn,
                            "control socket accept: {e}; used the spare descriptor"
                        );
                        stream
                    }
                    Err(e) => {
                        event!(Warn, "control socket accept failed: {e}");
                        self.accept_after = Some(Instant::now() + ACCEPT_BACKOFF);
                        return;
                    }
                }
            }
            Err(e) => {
                // EMFILE and friends: transient; back off, keep serving.
                event!(Warn, "control socket accept failed: {e}");
                self.accept_after = Some(Instant::now() + ACCEPT_BACKOFF);
                return;
            }
        };
        self.accept_after = None;
        let peer = match check_peer_uid(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                event!(Warn, "refused control connection: {e}");
                return;
            }
        };
        let channel = match Channel::new(stream) {
            Ok(channel) => channel,
            Err(e) => {
                event!(Warn, "control connection from pid {}: {e}", peer.pid);
                return;
            }
        };
        let hello = Message::Hello {
            role: Side::Incumbent,
            pid: std::process::id(),
            build_id: self.incumbent.build_id.clone(),
            proto_min: PROTO_MIN,
            proto_max: self.offered_version(),
            capabilities: Capabilities::default(),
        };
        // Before negotiation a frame carries the sender's highest version.
        channel.set_version(self.offered_version());
        if let Err(e) = channel.send(&hello) {
            event!(
                Debug,
                "control connection from pid {}: Hello: {e}",
                peer.pid
            );
            return;
        }
        if self.connections.len() >= MAX_CONNECTIONS {
            if let Some(oldest) = self
                .connections
                .iter()
                .position(|c| c.session.handoff().is_none())
            {
                let evicted = self.connections.remove(oldest);
                event!(
                    Warn,
                    "{MAX_CONNECTIONS} control connections open: closing the oldest idle one (pid {})",
                    evicted.peer_pid
                );
            }
        }
        self.connections.push(Connection {
            channel,
            session: Session::new(self.timing(), self.offered_version(), Instant::now()),
            peer_pid: peer.pid,
        });
    }

    /// A stop request: roll back the handoff in progress (once its hook has
    /// returned), then end.
    fn stop(mut self) -> Result<ServeOutcome> {
        let Some(at) = self
            .connections
            .iter()
            .position(|c| c.session.handoff().is_some())
        else {
            return Ok(ServeOutcome::Stopped);
        };
        let running = self.connections[at].session.hook_running().is_some();
        self.stopping = true;
        self.feed(
            at,
            Input::PeerGone {
                reason: "the incumbent is stopping".into(),
                clean: false,
            },
        )?;
        if running {
            if let Some(done) = self.mailbox.wait_result() {
                self.hook_returned(done)?;
            }
        }
        Ok(ServeOutcome::Stopped)
    }

    /// Undo what a handoff did: take the lock back if it was released, and
    /// resume the service. False when the lock is held by another live
    /// process, which means this incumbent was superseded.
    fn roll_back(&mut self, lock_released: bool) -> Result<bool> {
        self.restore_moved();
        if lock_released || self.incumbent.lock.is_none() {
            match self.retake_lock() {
                Ok(lock) => {
                    self.incumbent
                        .generation
                        .store(lock.generation(), std::sync::atomic::Ordering::Relaxed);
                    self.incumbent.lock = Some(lock);
                    self.rebind_control_socket();
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
        self.mailbox.submit(RequestKind::Resume, None, None, None);
        if let Some(Done::Resumed(Err(HookError(reason)))) = self.mailbox.wait_result() {
            if self.stopping {
                event!(Debug, "stopping: the service did not resume ({reason})");
            } else {
                event!(Error, "resume_after_abort failed: {reason}");
            }
        }
        Ok(true)
    }

    fn make_generation_durable(&mut self) {
        if let Some(lock) = self.incumbent.lock.as_mut() {
            if let Err(e) = lock.make_generation_durable() {
                event!(Warn, "{e}");
            }
        }
    }

    /// While the supervisor starts the successor, so that this fdatasync is
    /// not in the blackout: the successor then takes the lock without one
    /// (lock.rs, reservation). Once per tenure: a reservation still open is
    /// kept (a stray client answering our Hello costs one fsync at most). A
    /// failure costs only that; with the lock released (a second handoff
    /// refused mid-handoff) there is nothing to reserve.
    fn reserve_next_generation(&mut self) {
        let Some(lock) = self.incumbent.lock.as_mut() else {
            return;
        };
        match lock.reserve_next() {
            Ok(generation) => {
                event!(
                    Debug,
                    "generation {generation} reserved for the next tenure"
                )
            }
            Err(e) => event!(Info, "no generation reserved for the next tenure ({e})"),
        }
    }

    /// After the seal a successor may have announced Ready and placed its
    /// control socket at our path before it was stopped: we hold the lock
    /// again, so the path must lead to us. Rebinding is one atomic rename;
    /// if it fails we keep the socket we have and say so.
    fn rebind_control_socket(&mut self) {
        if self.incumbent.control.still_at_path() {
            return;
        }
        event!(
            Warn,
            "control socket {} no longer leads to this incumbent: rebinding it",
            self.incumbent.control.path.display()
        );
        match ControlSocket::bind(&self.incumbent.control.path) {
            Ok(socket) => self.incumbent.control = socket,
            Err(e) => event!(
                Warn,
                "cannot rebind the control socket after taking the lock back: {e}"
            ),
        }
    }

    /// Take the lock back after a seal, retrying for `config.relock` while a
    /// dying successor still holds it. A stop request ends the retries at
    /// once: the process is on its way out and needs no lock, and whoever
    /// asked it to stop (a recovering supervisor's SIGTERM) may not wait
    /// long before it kills it.
    fn retake_lock(&mut self) -> Result<DataDirLock> {
        let incumbent = &mut *self.incumbent;
        let deadline = Instant::now() + incumbent.config.relock;
        let mut released = incumbent
            .released
            .take()
            .unwrap_or_else(|| ReleasedLock::closed(&incumbent.data_dir));
        loop {
            match released.retake() {
                Err(held @ Error::LockHeld { .. }) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(held);
                    }
                    let pause = now + RELOCK_RETRY.min(deadline - now);
                    let stop = incumbent.stop_fd();
                    if wait_or_stop(stop, pause)? {
                        event!(Info, "stop requested while taking the lock back");
                        return Err(held);
                    }
                }
                other => return other,
            }
        }
    }
}

/// Sleep until `until`; true when `stop` became readable first.
fn wait_or_stop(stop: Option<BorrowedFd<'_>>, until: Instant) -> Result<bool> {
    match stop {
        Some(stop) => Ok(
            poll::wait_fd(stop.as_raw_fd(), libc::POLLIN, None, Some(until))
                .map_err(Error::Stream)?
                == Wait::Ready,
        ),
        None => {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            Ok(false)
        }
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
