//! One handoff in progress: its phases in order, each a send and a wait on
//! one waiter (`wait`) that keeps every clock at once: the phase's
//! deadline, the peer's liveness, heartbeats to the incumbent while the
//! successor works, the successor's death, and cancellation.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::channel::{enable_passcred, Channel, Incoming};
use crate::control::remove_prebound;
use crate::crash::crash_point;
use crate::error::Error;
use crate::journal::{Durability, Journal, Phase};
use crate::log::event;
use crate::pidfd::PidFd;
use crate::poll;
use crate::protocol::now_unix_ms;
use crate::protocol::{describe, HandoffId, Message, Side, MAX_ITEMS_PER_BATCH, PROTO_MOVES};
use crate::spawn::{describe_status, spawn, ChildProcess, SuccessorControl};

use super::abort::{Abort, Cause, Party};
use super::hello::accept_hello;
use super::{HandoffPhase, PhaseEvent, PhaseTimings, SpawnSpec, Supervisor};

type Step<T> = std::result::Result<T, Abort>;

/// Which journal writes are fsynced. The first record naming the successor
/// (Negotiating) is durable. The one step journalled inside the blackout
/// (AwaitingReady, once Begin is sent) is renamed into place, not fsynced:
/// an fsync of ours there waits behind the peer's (one filesystem journal).
/// A restarted supervisor reads it all the same; only a power cut may bring
/// back the previous step, and it leaves no process of the handoff to act
/// on. Recovery decides by who serves, not by the phase (crate::recovery).
/// The last ones, Committed and ResumingAfterAbort, are not fsynced either:
/// the journal is deleted right after them, without a directory fsync
/// (`Journal::delete`), so a power cut may bring back an earlier record
/// whatever they were; their fsyncs cost 0.7 ms of every handoff on disk.
/// Draining and Sealing are not written by this supervisor (a journal of
/// an older one may hold them).
fn journal_durability(phase: Phase) -> Durability {
    match phase {
        Phase::Negotiating => Durability::Durable,
        Phase::Draining
        | Phase::Sealing
        | Phase::AwaitingReady
        | Phase::Committed
        | Phase::ResumingAfterAbort => Durability::Visible,
    }
}

/// A message a wait returned: who the kernel says sent it (a successor's)
/// and, for an Item, its descriptor.
struct Answer {
    message: Message,
    pid: Option<u32>,
    descriptor: Option<OwnedFd>,
}

/// How long a successor that closed its control connection has to be seen
/// dead, so that the rollback's reason says how it ended.
const SUCCESSOR_DEATH_GRACE: Duration = Duration::from_millis(200);

/// Whom `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Incumbent,
    Successor,
}

impl Peer {
    fn party(self) -> Party {
        match self {
            Peer::Incumbent => Party::Incumbent,
            Peer::Successor => Party::Successor,
        }
    }
}

pub(super) struct Run<'a> {
    supervisor: &'a Supervisor,
    handoff_id: HandoffId,
    /// Known once the incumbent is greeted (journal records name it).
    incumbent_pid: u32,
    /// When the handoff started: each phase's timing is counted from it.
    started: Instant,
    started_unix_ms: u64,
    successor: Option<ChildProcess>,
    /// Readable once the successor exits: its death ends any wait at once.
    successor_exit: Option<PidFd>,
    successor_channel: Option<Channel>,
    successor_pid: Option<u32>,
    /// Its Hello was answered (here, or by `prepare` ahead of the handoff).
    successor_greeted: bool,
    /// PrepareHandoff was sent: the incumbent must be told to resume.
    prepared: bool,
    /// The phase running now (named by an abort).
    phase: HandoffPhase,
    /// This handoff's number, for `Supervisor::is_cancelled`.
    seq: u64,
    pub(super) timings: PhaseTimings,
    on_phase: &'a mut dyn FnMut(PhaseEvent),
}

impl<'a> Run<'a> {
    pub(super) fn new(
        supervisor: &'a Supervisor,
        handoff_id: HandoffId,
        started: Instant,
        seq: u64,
        on_phase: &'a mut dyn FnMut(PhaseEvent),
    ) -> Run<'a> {
        Run {
            supervisor,
            handoff_id,
            incumbent_pid: 0,
            started,
            started_unix_ms: now_unix_ms(),
            successor: None,
            successor_exit: None,
            successor_channel: None,
            successor_pid: None,
            successor_greeted: false,
            prepared: false,
            phase: HandoffPhase::Hello,
            seq,
            timings: PhaseTimings::default(),
            on_phase,
        }
    }

    /// The incumbent answered: its pid, and how long connecting to it and
    /// its Hello took (without the successor's start in between).
    pub(super) fn greeted_incumbent(&mut self, pid: u32, hello: Duration) {
        self.incumbent_pid = pid;
        self.timings.hello = hello;
    }

    fn abort(&self, party: Party, cause: Cause, detail: impl Into<String>) -> Abort {
        Abort::new(self.phase, party, cause, detail)
    }

    /// A failed send to `peer`.
    fn send_failed(&self, peer: Peer, what: &str, e: Error) -> Abort {
        let cause = match e {
            Error::PeerClosed { .. } => Cause::Closed,
            Error::Timeout => Cause::Silent,
            _ => Cause::Io,
        };
        self.abort(peer.party(), cause, format!("{what}: {e}"))
    }

    pub(super) fn phase_done(&mut self, phase: HandoffPhase) {
        (self.on_phase)(PhaseEvent {
            handoff_id: self.handoff_id,
            phase,
            duration: self.timings.of(phase),
            successor_pid: self.successor_pid,
        });
    }

    fn journal(&self, phase: Phase) -> Step<()> {
        let journal = Journal {
            handoff_id: self.handoff_id,
            phase,
            incumbent_pid: self.incumbent_pid,
            successor_pid: self.successor_pid,
            started_at_unix_ms: self.started_unix_ms,
        };
        self.supervisor
            .write_journal(&journal, journal_durability(phase))
            .map_err(|e| self.abort(Party::Supervisor, Cause::Journal, format!("journal: {e}")))
    }

    /// The happy path, once the successor is started and the incumbent
    /// greeted; an `Err` is the reason to roll back.
    pub(super) fn drive(
        &mut self,
        incumbent: &mut Channel,
        spec: &SpawnSpec,
        deadline: Instant,
    ) -> Step<ChildProcess> {
        let id = self.handoff_id;
        let timeouts = self.supervisor.timeouts;

        self.phase = HandoffPhase::Spawn;
        if self.successor_greeted && self.successor_exited() {
            // A prepared successor that died while it was held.
            return Err(self.successor_death(Duration::ZERO).unwrap_or_else(|| {
                self.abort(Party::Successor, Cause::Exited, "prepared successor exited")
            }));
        }
        // Made durable while a new successor starts up (an exec and a
        // runtime's start take a millisecond), not after its Hello.
        self.journal(Phase::Negotiating)?;
        if !self.successor_greeted {
            self.greet_successor(Some(&mut *incumbent), deadline)?;
        }
        crash_point!("S_AFTER_N_HELLO");
        let items_max = self.offer_transfer(incumbent, deadline)?;
        // From the start on, but for the incumbent's Hello, which overlaps.
        self.timings.spawn = self.started.elapsed().saturating_sub(self.timings.hello);
        self.phase_done(HandoffPhase::Spawn);

        self.phase = HandoffPhase::Drain;
        let phase = Instant::now();
        let left = deadline.saturating_duration_since(phase);
        // The seal is asked for with the drain, in the same write: the
        // incumbent seals, releases its lock and answers as soon as its
        // drain is done, without a round trip through us after Drained
        // (docs/protocol.md). An abort after that finds it sealed, which a
        // rollback handles anyway.
        incumbent
            .send_together(&[
                Message::PrepareHandoff {
                    handoff_id: id,
                    successor_pid: self.successor_pid.unwrap_or(0),
                    deadline_ms: left.as_millis() as u64,
                    drain_grace_ms: spec.drain_grace.as_millis() as u64,
                },
                Message::SealRequest { handoff_id: id },
            ])
            .map_err(|e| self.send_failed(Peer::Incumbent, "PrepareHandoff", e))?;
        self.prepared = true;
        crash_point!("S_AFTER_PREPARE");
        // The drain's budget gets slack for the frames in flight; the whole
        // handoff ends at its deadline, not a second later.
        let drain_deadline = (phase + spec.drain_grace + timeouts.wire_slack).min(deadline);
        let moved = match items_max {
            Some(max) => Some(self.forward_items(incumbent, max, drain_deadline)?),
            None => None,
        };
        match self.wait(incumbent, Peer::Incumbent, drain_deadline, "Drained")? {
            Message::Drained { .. } => {}
            other => return Err(self.unexpected(Peer::Incumbent, "Drained", &other)),
        }
        crash_point!("S_AFTER_DRAINED");
        self.timings.drain = phase.elapsed();

        // From the drain to Ready nobody accepts: the observer (and the
        // journal, after Begin) runs while the peer works on the next step,
        // not before asking for it. The drain is not journalled: recovery
        // does not read the phase, and the record's rename, on a disk, made
        // SealComplete wait 0.2 ms (docs/protocol.md).
        self.phase = HandoffPhase::Seal;
        let phase = Instant::now();
        self.phase_done(HandoffPhase::Drain);
        match self.wait(incumbent, Peer::Incumbent, deadline, "SealComplete")? {
            Message::SealComplete { handoff_id, .. } if handoff_id == id => {}
            Message::SealFailed { error, .. } => {
                // The incumbent kept its lock and resumed on its own.
                self.prepared = false;
                return Err(self.abort(
                    Party::Incumbent,
                    Cause::SealFailed,
                    format!("seal failed: {error}"),
                ));
            }
            other => return Err(self.unexpected(Peer::Incumbent, "SealComplete", &other)),
        }
        crash_point!("S_AFTER_SEAL_COMPLETE");
        self.timings.seal = phase.elapsed();

        self.phase = HandoffPhase::Ready;
        let phase = Instant::now();
        let begun = self
            .successor_channel
            .as_ref()
            .expect("handshake done above")
            .send(&Message::Begin { handoff_id: id });
        begun.map_err(|e| self.send_failed(Peer::Successor, "Begin", e))?;
        // The window recovery must get right: the successor's Ready is on
        // its way while the journal still says Negotiating.
        #[cfg(feature = "crash-points")]
        if crate::crash::armed("S_READY_UNJOURNALLED") {
            let successor = self.successor_channel.as_ref().expect("handshake done");
            let _ = crate::poll::wait_fd(
                successor.stream().as_raw_fd(),
                libc::POLLIN,
                None,
                Some(Instant::now() + Duration::from_secs(10)),
            );
            crate::crash::maybe_crash("S_READY_UNJOURNALLED");
        }
        self.phase_done(HandoffPhase::Seal);
        // Past Begin the successor may announce Ready at any moment, and
        // from then on it is in charge: a journal that cannot be written now
        // must not roll back (recovery asks who serves, not the phase). One
        // record for the seal and Begin, acknowledged together: each rename
        // here is in the blackout, beside the successor taking its lock.
        if let Err(e) = self.journal(Phase::AwaitingReady) {
            event!(Warn, "handoff {id}: {e}; going on (Begin is sent)");
        }
        crash_point!("S_AFTER_BEGIN");
        if let Some(moved) = moved {
            match self.wait(incumbent, Peer::Successor, deadline, "Adopted")? {
                Message::Adopted { handoff_id, items } if handoff_id == id && items == moved => {}
                Message::Adopted { items, .. } => {
                    return Err(self.abort(
                        Party::Successor,
                        Cause::Protocol,
                        format!("the successor adopted {items} of the {moved} moved item(s)"),
                    ))
                }
                other => return Err(self.unexpected(Peer::Successor, "Adopted", &other)),
            }
        }
        match self.wait(incumbent, Peer::Successor, deadline, "Ready")? {
            Message::Ready { handoff_id, .. } if handoff_id == id => {}
            other => return Err(self.unexpected(Peer::Successor, "Ready", &other)),
        }
        self.timings.ready = phase.elapsed();
        self.phase_done(HandoffPhase::Ready);

        // From Ready on the successor is authoritative, whatever happens to
        // the old incumbent: nothing below can roll back.
        self.phase = HandoffPhase::Commit;
        let phase = Instant::now();
        let child = self.successor.take().expect("spawned above");
        self.successor_channel = None;
        crash_point!("S_AFTER_READY");
        if let Err(e) = incumbent.send(&Message::Commit { handoff_id: id }) {
            event!(
                Warn,
                "handoff {id}: Commit not delivered ({e}); committed regardless"
            );
        }
        if let Err(e) = self.journal(Phase::Committed) {
            event!(Warn, "handoff {id}: {e}");
        }
        crash_point!("S_AFTER_COMMIT");
        self.supervisor.clear_journal();
        self.timings.commit = phase.elapsed();
        self.phase_done(HandoffPhase::Commit);
        Ok(child)
    }

    fn unexpected(&self, peer: Peer, expected: &str, got: &Message) -> Abort {
        self.abort(
            peer.party(),
            Cause::Protocol,
            format!("expected {expected}, got {}", describe(got)),
        )
    }

    /// When both peers speak v2: the successor's Capacity, then Transfer
    /// to the incumbent (docs/protocol.md). The most that may move, or None
    /// for a v1 handoff (the drain closes connections).
    fn offer_transfer(&mut self, incumbent: &mut Channel, deadline: Instant) -> Step<Option<u32>> {
        let successor_version = self.successor_channel.as_ref().map_or(0, Channel::version);
        if successor_version < PROTO_MOVES {
            return Ok(None);
        }
        // A v2 successor says its Capacity whatever the incumbent speaks.
        let by = (Instant::now() + self.supervisor.timeouts.hello).min(deadline);
        let items_max = match self.wait(incumbent, Peer::Successor, by, "Capacity")? {
            Message::Capacity { descriptors } => descriptors,
            other => return Err(self.unexpected(Peer::Successor, "Capacity", &other)),
        };
        if incumbent.version() < PROTO_MOVES {
            return Ok(None);
        }
        incumbent
            .send(&Message::Transfer {
                handoff_id: self.handoff_id,
                items_max,
            })
            .map_err(|e| self.send_failed(Peer::Incumbent, "Transfer", e))?;
        Ok(Some(items_max))
    }

    /// The incumbent's Moving and Items, passed on to the successor batch
    /// by batch as they arrive; our copies close once sent. How many moved.
    fn forward_items(
        &mut self,
        incumbent: &mut Channel,
        items_max: u32,
        deadline: Instant,
    ) -> Step<u32> {
        let id = self.handoff_id;
        let items = match self.wait(incumbent, Peer::Incumbent, deadline, "Moving")? {
            Message::Moving { handoff_id, items } if handoff_id == id => items,
            other => return Err(self.unexpected(Peer::Incumbent, "Moving", &other)),
        };
        if items > items_max {
            return Err(self.abort(
                Party::Successor,
                Cause::Limit,
                format!(
                    "the incumbent moves {items} descriptor(s); the successor can hold {items_max} \
                     (raise its RLIMIT_NOFILE)"
                ),
            ));
        }
        self.send_successor(&Message::Moving {
            handoff_id: id,
            items,
        })?;
        let mut forwarded = 0u32;
        while forwarded < items {
            let first =
                self.wait_answer(Some(&mut *incumbent), Peer::Incumbent, deadline, "Item")?;
            let mut batch = vec![self.item(first, forwarded)?];
            // Whatever else is already here goes in the same batch.
            while batch.len() < MAX_ITEMS_PER_BATCH && forwarded + (batch.len() as u32) < items {
                match incumbent.next_incoming() {
                    Ok(Some(Incoming {
                        message,
                        descriptor,
                    })) => {
                        let answer = Answer {
                            message,
                            pid: None,
                            descriptor,
                        };
                        batch.push(self.item(answer, forwarded + batch.len() as u32)?);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(self.abort(
                            Party::Incumbent,
                            Cause::Protocol,
                            format!("moving descriptors: {e}"),
                        ))
                    }
                }
            }
            let frames: Vec<_> = batch
                .iter()
                .map(|(message, fd)| (message, fd.as_raw_fd()))
                .collect();
            let sent = self
                .successor_channel
                .as_ref()
                .expect("handshake done")
                .sender()
                .send_items(&frames);
            sent.map_err(|e| self.send_failed(Peer::Successor, "Item", e))?;
            forwarded += batch.len() as u32;
            crash_point!("S_MID_ITEMS");
        }
        Ok(forwarded)
    }

    /// An Item frame with its descriptor, the `seq`-th one.
    fn item(&self, answer: Answer, seq: u32) -> Step<(Message, OwnedFd)> {
        match (answer.message, answer.descriptor) {
            (message @ Message::Item { seq: got, .. }, Some(fd)) if got == seq => Ok((message, fd)),
            (Message::Item { seq: got, .. }, Some(_)) => Err(self.abort(
                Party::Incumbent,
                Cause::Protocol,
                format!("Item {got} where Item {seq} was due"),
            )),
            (other, _) => Err(self.unexpected(Peer::Incumbent, "Item", &other)),
        }
    }

    fn send_successor(&self, message: &Message) -> Step<()> {
        let channel = self.successor_channel.as_ref().expect("handshake done");
        channel
            .send(message)
            .map_err(|e| self.send_failed(Peer::Successor, message.kind().name(), e))
    }

    /// Start the successor with its end of a new control connection.
    pub(super) fn start_successor(&mut self, spec: &SpawnSpec) -> Step<()> {
        self.phase = HandoffPhase::Spawn;
        let local = |e: std::io::Error| {
            self.abort(Party::Supervisor, Cause::Io, format!("socketpair: {e}"))
        };
        let (ours, theirs) = UnixStream::pair().map_err(local)?;
        enable_passcred(&ours)
            .map_err(|e| self.abort(Party::Supervisor, Cause::Io, e.to_string()))?;
        let control = SuccessorControl {
            fd: theirs.as_fd(),
            path: &self.supervisor.control_path,
        };
        let child = spawn(
            &spec.command,
            &self.supervisor.borrowed_listeners(),
            Some(control),
        )
        .map_err(|e| {
            self.abort(
                Party::Successor,
                Cause::Spawn,
                format!("cannot start the successor: {e}"),
            )
        })?;
        drop(theirs);
        let pid = child.pid();
        self.successor_pid = Some(pid);
        // Our child, not reaped yet: the pid cannot have been reused.
        self.successor_exit = PidFd::open(pid);
        self.successor = Some(child);
        let channel = Channel::new(ours)
            .map_err(|e| self.abort(Party::Supervisor, Cause::Io, e.to_string()))?;
        self.successor_channel = Some(channel);
        crash_point!("S_AFTER_SPAWN");
        Ok(())
    }

    /// The started successor's Hello, checked, and our HelloAck;
    /// `incumbent`, when there is one yet, gets heartbeats meanwhile.
    fn greet_successor(&mut self, incumbent: Option<&mut Channel>, deadline: Instant) -> Step<()> {
        let pid = self.successor_pid.expect("started");
        let hello_by = (Instant::now() + self.supervisor.timeouts.hello).min(deadline);
        let Answer {
            message: hello,
            pid: sender,
            ..
        } = self.wait_answer(incumbent, Peer::Successor, hello_by, "Hello")?;
        // Invariant 9: the Hello must come from the child we spawned, as the
        // kernel attests, not merely claim its pid.
        if sender != Some(pid) {
            return Err(self.abort(
                Party::Successor,
                Cause::Protocol,
                format!("successor Hello came from pid {sender:?}, not the spawned {pid}"),
            ));
        }
        let version = accept_hello(&hello, Side::Successor, pid)
            .map_err(|e| self.abort(Party::Successor, Cause::Protocol, e.to_string()))?;
        let channel = self.successor_channel.as_ref().expect("set above");
        channel.set_version(version);
        let acked = channel.send(&Message::HelloAck {
            proto_version_chosen: version,
            handoff_id: self.handoff_id,
        });
        acked.map_err(|e| self.send_failed(Peer::Successor, "HelloAck", e))?;
        self.successor_greeted = true;
        Ok(())
    }

    /// The next message from `from` (see [`Run::wait_answer`]); one that
    /// brings a descriptor has no place here.
    fn wait(
        &mut self,
        incumbent: &mut Channel,
        from: Peer,
        deadline: Instant,
        what: &str,
    ) -> Step<Message> {
        let answer = self.wait_answer(Some(incumbent), from, deadline, what)?;
        if answer.descriptor.is_some() {
            return Err(self.abort(
                from.party(),
                Cause::Protocol,
                format!(
                    "expected {what}, got {} with a descriptor",
                    describe(&answer.message)
                ),
            ));
        }
        Ok(answer.message)
    }

    /// The next message from `from` other than a heartbeat (or seal
    /// progress), with the pid the kernel attests for a successor's.
    /// Meanwhile the incumbent gets heartbeats while the successor works
    /// (a successor may preload its state before its Hello, and opens it
    /// after Begin), and the successor's death, the peer's silence, the
    /// deadline and a cancellation each end the wait at once.
    fn wait_answer(
        &mut self,
        mut incumbent: Option<&mut Channel>,
        from: Peer,
        deadline: Instant,
        what: &str,
    ) -> Step<Answer> {
        let timeouts = self.supervisor.timeouts;
        let mut last_frame = Instant::now();
        let mut next_beat = Instant::now() + timeouts.heartbeat;
        loop {
            match self.take_message(incumbent.as_deref_mut(), from) {
                Ok(Some(Answer {
                    message: Message::Heartbeat { .. } | Message::SealProgress { .. },
                    descriptor: None,
                    ..
                })) => {
                    last_frame = Instant::now();
                    continue;
                }
                Ok(Some(answer)) => return Ok(answer),
                Ok(None) => {}
                Err(e @ Error::PeerClosed { .. }) if from == Peer::Successor => {
                    // It closed its end: most likely it died. Say how.
                    return Err(self
                        .successor_death(SUCCESSOR_DEATH_GRACE)
                        .unwrap_or_else(|| {
                            self.abort(
                                Party::Successor,
                                Cause::Closed,
                                format!("waiting for {what}: {e}"),
                            )
                        }));
                }
                Err(e) => {
                    let cause = match e {
                        Error::PeerClosed { .. } => Cause::Closed,
                        Error::Stream(_) => Cause::Io,
                        _ => Cause::Protocol,
                    };
                    return Err(self.abort(
                        from.party(),
                        cause,
                        format!("waiting for {what}: {e}"),
                    ));
                }
            }
            if self.successor_exited() {
                // A successor that announced Ready and died right after
                // (before we read it) was authoritative from its Ready on:
                // a Ready already sent binds, whatever followed it.
                if from == Peer::Successor {
                    if let Some(message) = self.buffered_answer() {
                        return Ok(Answer {
                            message,
                            pid: None,
                            descriptor: None,
                        });
                    }
                }
                return Err(self.successor_death(Duration::ZERO).unwrap_or_else(|| {
                    self.abort(Party::Successor, Cause::Exited, "successor exited")
                }));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(match from {
                    Peer::Incumbent => self.abort(
                        Party::Incumbent,
                        Cause::Deadline,
                        format!("timed out waiting for {what}"),
                    ),
                    Peer::Successor if what == "Ready" => self.abort(
                        Party::Successor,
                        Cause::Deadline,
                        "successor not ready before the deadline",
                    ),
                    Peer::Successor => self.abort(
                        Party::Successor,
                        Cause::Deadline,
                        format!("successor {what}: timed out waiting for a frame"),
                    ),
                });
            }
            if now >= last_frame + timeouts.liveness {
                let name = from.party().name();
                return Err(self.abort(
                    from.party(),
                    Cause::Silent,
                    format!(
                        "{name} silent for {:?} waiting for {what}",
                        timeouts.liveness
                    ),
                ));
            }
            let beating = from == Peer::Successor && incumbent.is_some();
            if let Some(incumbent) = incumbent
                .as_deref_mut()
                .filter(|_| beating && now >= next_beat)
            {
                next_beat = now + timeouts.heartbeat;
                incumbent.send(&Message::heartbeat_now()).map_err(|e| {
                    self.send_failed(Peer::Incumbent, "heartbeat to the incumbent", e)
                })?;
            }
            let mut until = deadline.min(last_frame + timeouts.liveness);
            if beating {
                until = until.min(next_beat);
            }
            let watched = match (from, incumbent.as_deref()) {
                (Peer::Incumbent, Some(incumbent)) => incumbent.stream().as_raw_fd(),
                (Peer::Incumbent, None) => -1,
                (Peer::Successor, _) => self.successor_fd(),
            };
            if self.wait_readable(watched, until) {
                return Err(self.abort(Party::Supervisor, Cause::Cancelled, "cancelled"));
            }
        }
    }

    fn successor_fd(&self) -> RawFd {
        self.successor_channel
            .as_ref()
            .map_or(-1, |c| c.stream().as_raw_fd())
    }

    /// Poll `fd`, the successor's exit and the cancel pipe until `until`;
    /// true when cancelled.
    fn wait_readable(&self, fd: RawFd, until: Instant) -> bool {
        let entry = |fd: RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [
            entry(fd),
            entry(
                self.successor_exit
                    .as_ref()
                    .map_or(-1, |p| p.as_fd().as_raw_fd()),
            ),
            entry(
                self.supervisor
                    .cancel
                    .as_ref()
                    .map_or(-1, |(read, _)| read.as_raw_fd()),
            ),
        ];
        // An error here (EINTR is retried) shows up as a timeout; the loop's
        // checks then decide.
        let _ = poll::poll(&mut fds, Some(until));
        fds[2].revents != 0 && self.supervisor.is_cancelled(self.seq)
    }

    /// One whole message from `from`, if one can be read without waiting.
    fn take_message(
        &mut self,
        incumbent: Option<&mut Channel>,
        from: Peer,
    ) -> crate::Result<Option<Answer>> {
        let from_incumbent = |incoming: Incoming| Answer {
            message: incoming.message,
            pid: None,
            descriptor: incoming.descriptor,
        };
        match from {
            Peer::Incumbent => {
                let Some(incumbent) = incumbent else {
                    return Ok(None);
                };
                if let Some(incoming) = incumbent.next_incoming()? {
                    return Ok(Some(from_incumbent(incoming)));
                }
                incumbent.fill()?;
                Ok(incumbent.next_incoming()?.map(from_incumbent))
            }
            Peer::Successor => {
                let Some(channel) = self.successor_channel.as_mut() else {
                    return Ok(None);
                };
                match channel.recv_attested(Instant::now()) {
                    Ok((message, pid)) => Ok(Some(Answer {
                        message,
                        pid,
                        descriptor: None,
                    })),
                    Err(Error::Timeout) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// The first frame other than a heartbeat that the successor sent and
    /// we have not read yet, if any (without waiting).
    fn buffered_answer(&mut self) -> Option<Message> {
        let channel = self.successor_channel.as_mut()?;
        loop {
            match channel.recv_until(Instant::now()) {
                Ok(Message::Heartbeat { .. }) => {}
                Ok(message) => return Some(message),
                Err(_) => return None,
            }
        }
    }

    fn successor_exited(&mut self) -> bool {
        match &self.successor_exit {
            Some(exit) => exit.exited(),
            None => self
                .successor
                .as_mut()
                .is_some_and(|child| child.try_wait().is_some()),
        }
    }

    /// How the successor ended, if it does within `grace`.
    fn successor_death(&mut self, grace: Duration) -> Option<Abort> {
        let status = self.successor.as_mut()?.wait_timeout(grace)?;
        Some(self.abort(
            Party::Successor,
            Cause::Exited,
            format!("successor {}", describe_status(status)),
        ))
    }

    /// Abort the successor, stop and reap it, tell the incumbent to resume,
    /// and clear the journal.
    pub(super) fn roll_back(&mut self, incumbent: &mut Channel, reason: &Abort) {
        let id = self.handoff_id;
        event!(Warn, "handoff {id}: rolling back: {reason}");
        self.discard_successor(&reason.to_string());
        if self.prepared {
            let _ = self.journal(Phase::ResumingAfterAbort);
            if let Err(e) = incumbent.send(&Message::ResumeAfterAbort { handoff_id: id }) {
                // It resumes on its own when our connection closes.
                event!(Warn, "handoff {id}: ResumeAfterAbort not delivered: {e}");
            }
        }
        self.supervisor.clear_journal();
    }
}

impl Run<'_> {
    /// Tell the successor, if any, to abort, and stop and reap it.
    pub(super) fn discard_successor(&mut self, reason: &str) {
        discard(
            self.handoff_id,
            self.successor_channel.take(),
            self.successor.take(),
            reason,
            self.supervisor.timeouts.kill_grace,
            &self.supervisor.control_path,
        );
    }

    /// Spawn and handshake the successor of a prepared handoff, with no
    /// incumbent involved yet; `discard_successor` if it fails.
    pub(super) fn prepare(&mut self, spec: &SpawnSpec) -> Step<()> {
        let deadline = self.started + self.supervisor.timeouts.hello;
        self.start_successor(spec)?;
        self.greet_successor(None, deadline)?;
        self.timings.spawn = self.started.elapsed();
        Ok(())
    }

    /// What `prepare` started, to be held until its handoff.
    pub(super) fn into_prepared(mut self) -> Option<Held> {
        Some(Held {
            child: self.successor.take()?,
            exit: self.successor_exit.take(),
            channel: self.successor_channel.take()?,
            spawn: self.timings.spawn,
        })
    }

    /// Take over a successor `prepare` started: the handoff skips the spawn.
    pub(super) fn adopt_prepared(&mut self, held: Held) {
        self.successor_pid = Some(held.child.pid());
        self.successor = Some(held.child);
        self.successor_exit = held.exit;
        self.successor_channel = Some(held.channel);
        self.successor_greeted = true;
    }
}

/// A spawned, handshaken successor between `prepare` and its handoff.
pub(super) struct Held {
    pub(super) child: ChildProcess,
    pub(super) exit: Option<PidFd>,
    pub(super) channel: Channel,
    pub(super) spawn: Duration,
}

impl Held {
    pub(super) fn discard(
        self,
        handoff_id: HandoffId,
        reason: &str,
        grace: Duration,
        control: &Path,
    ) {
        discard(
            handoff_id,
            Some(self.channel),
            Some(self.child),
            reason,
            grace,
            control,
        );
    }

    /// Whether it has exited (reaping it then).
    pub(super) fn exited(&mut self) -> bool {
        match &self.exit {
            Some(exit) => exit.exited(),
            None => self.child.try_wait().is_some(),
        }
    }
}

/// Abort a successor: Abort on its channel (it exits on it), then SIGTERM,
/// SIGKILL after `grace`, and reap; then remove the control socket it bound
/// ahead for `control`, should it have died without removing it.
fn discard(
    handoff_id: HandoffId,
    channel: Option<Channel>,
    child: Option<ChildProcess>,
    reason: &str,
    grace: Duration,
    control: &Path,
) {
    if let Some(channel) = channel {
        let _ = channel.send(&Message::Abort {
            handoff_id,
            reason: reason.to_owned(),
        });
    }
    if let Some(mut child) = child {
        child.terminate(grace);
        remove_prebound(control, child.pid());
    }
}
