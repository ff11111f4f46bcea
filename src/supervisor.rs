//! The supervisor: owns the listeners for the life of the service, drives
//! one handoff at a time, journals every acknowledged step, and finishes or
//! rolls back a handoff a previous supervisor left half done.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::channel::{enable_passcred, Channel};
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::incumbent::now_unix_ms;
use crate::journal::{Journal, Phase};
use crate::log::event;
use crate::protocol::{negotiate_version, HandoffId, Message, Side, PROTO_MAX, PROTO_MIN};
use crate::recovery::recover;
pub use crate::recovery::Recovery;
use crate::spawn::{describe_status, spawn, ChildProcess, Command};
use crate::sys;

/// The supervisor's timeouts (DESIGN §2 defaults).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// No frame from a peer for this long means it is dead.
    pub liveness: Duration,
    /// How long a peer has to send its Hello.
    pub hello: Duration,
    /// Slack on each phase budget for frames in flight.
    pub wire_slack: Duration,
    /// Heartbeats to the incumbent while waiting on the successor.
    pub heartbeat: Duration,
    /// SIGTERM to SIGKILL for a successor that must go.
    pub kill_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            liveness: Duration::from_secs(10),
            hello: Duration::from_secs(5),
            wire_slack: Duration::from_secs(1),
            heartbeat: Duration::from_secs(2),
            kill_grace: Duration::from_secs(2),
        }
    }
}

/// One handoff's request: the successor to run and its budgets.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub command: Command,
    /// The whole handoff, trigger to commit.
    pub deadline: Duration,
    /// The incumbent's drain budget.
    pub drain_grace: Duration,
}

impl SpawnSpec {
    pub fn new(binary: impl Into<PathBuf>) -> SpawnSpec {
        SpawnSpec {
            command: Command {
                binary: binary.into(),
                ..Command::default()
            },
            deadline: Duration::from_secs(60),
            drain_grace: Duration::from_secs(25),
        }
    }
}

/// How long each phase took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTimings {
    /// Connect to the incumbent and exchange Hello.
    pub hello: Duration,
    /// Spawn the successor and exchange its Hello.
    pub spawn: Duration,
    /// PrepareHandoff to Drained.
    pub drain: Duration,
    /// SealRequest to SealComplete.
    pub seal: Duration,
    /// Begin to Ready.
    pub ready: Duration,
    /// Sending Commit and clearing the journal.
    pub commit: Duration,
    pub total: Duration,
}

/// A step of a handoff, in the order they happen (the fields of
/// [`PhaseTimings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffPhase {
    Hello,
    Spawn,
    Drain,
    Seal,
    Ready,
    Commit,
}

impl HandoffPhase {
    pub const ALL: [HandoffPhase; 6] = [
        HandoffPhase::Hello,
        HandoffPhase::Spawn,
        HandoffPhase::Drain,
        HandoffPhase::Seal,
        HandoffPhase::Ready,
        HandoffPhase::Commit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HandoffPhase::Hello => "hello",
            HandoffPhase::Spawn => "spawn",
            HandoffPhase::Drain => "drain",
            HandoffPhase::Seal => "seal",
            HandoffPhase::Ready => "ready",
            HandoffPhase::Commit => "commit",
        }
    }

    /// The phase that follows this one, None after Commit.
    pub fn next(self) -> Option<HandoffPhase> {
        let at = HandoffPhase::ALL.iter().position(|&p| p == self)?;
        HandoffPhase::ALL.get(at + 1).copied()
    }
}

impl PhaseTimings {
    /// How long `phase` took.
    pub fn of(&self, phase: HandoffPhase) -> Duration {
        match phase {
            HandoffPhase::Hello => self.hello,
            HandoffPhase::Spawn => self.spawn,
            HandoffPhase::Drain => self.drain,
            HandoffPhase::Seal => self.seal,
            HandoffPhase::Ready => self.ready,
            HandoffPhase::Commit => self.commit,
        }
    }
}

/// A phase of a handoff that has just completed, reported as it happens by
/// [`Supervisor::perform_handoff_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhaseEvent {
    pub handoff_id: HandoffId,
    pub phase: HandoffPhase,
    pub duration: Duration,
    /// The successor's pid, once it is spawned.
    pub successor_pid: Option<u32>,
}

/// The result of a handoff that got as far as the incumbent.
#[derive(Debug)]
pub struct Outcome {
    pub handoff_id: HandoffId,
    pub committed: bool,
    pub abort_reason: Option<String>,
    pub incumbent_pid: u32,
    /// The new incumbent, for the caller to wait on, when committed.
    pub successor: Option<ChildProcess>,
    pub timings: PhaseTimings,
}

pub struct Supervisor {
    control_path: PathBuf,
    listeners: Vec<(String, OwnedFd)>,
    journal: Option<PathBuf>,
    timeouts: Timeouts,
    in_flight: Mutex<()>,
}

impl Supervisor {
    /// A supervisor for the service whose incumbent serves `control_path`.
    pub fn new(control_path: impl Into<PathBuf>) -> Supervisor {
        Supervisor {
            control_path: control_path.into(),
            listeners: Vec::new(),
            journal: None,
            timeouts: Timeouts::default(),
            in_flight: Mutex::new(()),
        }
    }

    /// Hand listener `fd` to every generation under `name`.
    pub fn add_listener(&mut self, name: impl Into<String>, fd: OwnedFd) -> Result<()> {
        let name = name.into();
        if name.is_empty() || name.contains(':') {
            return Err(Error::Listener(format!(
                "invalid listener name {name:?} (empty or with ':')"
            )));
        }
        sys::set_cloexec(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(Error::Stream)?;
        self.listeners.push((name, fd));
        Ok(())
    }

    pub fn with_listener(mut self, name: impl Into<String>, fd: OwnedFd) -> Result<Self> {
        self.add_listener(name, fd)?;
        Ok(self)
    }

    pub fn set_journal(&mut self, path: impl Into<PathBuf>) {
        self.journal = Some(path.into());
    }

    pub fn with_journal(mut self, path: impl Into<PathBuf>) -> Self {
        self.set_journal(path);
        self
    }

    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.set_timeouts(timeouts);
        self
    }

    pub fn control_path(&self) -> &Path {
        &self.control_path
    }

    pub fn listener_names(&self) -> Vec<&str> {
        self.listeners
            .iter()
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// Start the first generation (no HANDOFF_ROLE: a cold start).
    pub fn spawn_cold(&self, command: &Command) -> Result<ChildProcess> {
        spawn(command, &self.borrowed_listeners(), None)
    }

    fn borrowed_listeners(&self) -> Vec<(String, std::os::fd::BorrowedFd<'_>)> {
        self.listeners
            .iter()
            .map(|(name, fd)| (name.clone(), fd.as_fd()))
            .collect()
    }

    /// Hand the service off to a new process. `Ok` with `committed: false`
    /// is a rollback: the incumbent is serving as before. `Err` means the
    /// handoff never started (no incumbent, one already running).
    pub fn perform_handoff(&self, spec: &SpawnSpec) -> Result<Outcome> {
        self.perform_handoff_with(spec, &mut |_| {})
    }

    /// [`perform_handoff`](Supervisor::perform_handoff), calling `on_phase`
    /// on this thread as each phase completes (for progress reports; it
    /// should return quickly: the handoff waits for it).
    pub fn perform_handoff_with(
        &self,
        spec: &SpawnSpec,
        on_phase: &mut dyn FnMut(PhaseEvent),
    ) -> Result<Outcome> {
        let _one_at_a_time = self
            .in_flight
            .try_lock()
            .map_err(|_| Error::HandoffInProgress)?;
        let started = Instant::now();
        let deadline = started + spec.deadline;
        let handoff_id = HandoffId::random();

        let (mut incumbent, incumbent_pid) = self.connect_incumbent(handoff_id)?;
        crash_point!("S_AFTER_O_HELLO");
        let mut run = Run {
            supervisor: self,
            handoff_id,
            incumbent_pid,
            started_unix_ms: now_unix_ms(),
            successor: None,
            successor_channel: None,
            successor_pid: None,
            prepared: false,
            timings: PhaseTimings {
                hello: started.elapsed(),
                ..PhaseTimings::default()
            },
            on_phase,
        };
        run.phase_done(HandoffPhase::Hello);
        event!(Info, "handoff {handoff_id}: incumbent pid {incumbent_pid}");
        let result = run.drive(&mut incumbent, spec, deadline);
        let mut timings = run.timings;
        timings.total = started.elapsed();
        match result {
            Ok(successor) => {
                event!(
                    Info,
                    "handoff {handoff_id}: committed in {:?}",
                    timings.total
                );
                Ok(Outcome {
                    handoff_id,
                    committed: true,
                    abort_reason: None,
                    incumbent_pid,
                    successor: Some(successor),
                    timings,
                })
            }
            Err(reason) => {
                run.roll_back(&mut incumbent, &reason);
                timings.total = started.elapsed();
                Ok(Outcome {
                    handoff_id,
                    committed: false,
                    abort_reason: Some(reason),
                    incumbent_pid,
                    successor: None,
                    timings,
                })
            }
        }
    }

    /// Connect to the incumbent's control socket and exchange Hello; the
    /// incumbent's pid is the kernel's, and must match the one it announces.
    fn connect_incumbent(&self, handoff_id: HandoffId) -> Result<(Channel, u32)> {
        let deadline = Instant::now() + self.timeouts.hello;
        let stream = connect_control(
            &self.control_path,
            Instant::now() + CONNECT_RETRY.min(self.timeouts.hello),
        )?;
        let cred = crate::control::check_peer_uid(&stream)?;
        let mut channel = Channel::new(stream)?;
        let hello = channel.recv_until(deadline, None)?;
        let version = accept_hello(&hello, Side::Incumbent, cred.pid)?;
        channel.set_version(version);
        channel.send(&Message::HelloAck {
            proto_version_chosen: version,
            handoff_id,
        })?;
        Ok((channel, cred.pid))
    }

    fn write_journal(&self, journal: &Journal) -> Result<()> {
        match &self.journal {
            Some(path) => journal.write(path),
            None => Ok(()),
        }
    }

    fn clear_journal(&self) {
        if let Some(path) = &self.journal {
            if let Err(e) = Journal::delete(path) {
                event!(Error, "cannot clear the journal: {e}");
            }
        }
    }

    /// After a supervisor restart: finish the commit if the successor had
    /// become the incumbent, otherwise make sure the old incumbent resumed
    /// and no successor is left; then clear the journal. `Ok(None)` when no
    /// handoff was in flight.
    pub fn resume_from_journal(&self) -> Result<Option<Recovery>> {
        let Some(path) = &self.journal else {
            return Ok(None);
        };
        let Some(journal) = Journal::read(path)? else {
            return Ok(None);
        };
        // The pids in it name our processes only if these already ran when
        // it was last written.
        let written = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        event!(
            Warn,
            "handoff {} was left at phase {}: recovering",
            journal.handoff_id,
            journal.phase.name()
        );
        let serving = self.probe_incumbent();
        let recovery = recover(journal, written, serving, self.timeouts.kill_grace);
        self.clear_journal();
        Ok(Some(recovery))
    }

    /// The pid of the process serving the control socket, if one answers.
    fn probe_incumbent(&self) -> Option<u32> {
        let deadline = Instant::now() + self.timeouts.hello + self.timeouts.liveness;
        loop {
            match self.connect_incumbent(HandoffId::random()) {
                Ok((_, pid)) => return Some(pid),
                Err(e) if Instant::now() < deadline => {
                    event!(Debug, "incumbent not answering yet: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    event!(Warn, "no incumbent answers on the control socket: {e}");
                    return None;
                }
            }
        }
    }
}

/// How long a successor that closed its control connection has to be seen
/// dead, so that the rollback's reason says how it ended.
const SUCCESSOR_DEATH_GRACE: Duration = Duration::from_millis(200);

/// How long a refused or missing control socket is retried: right after a
/// commit the new incumbent binds the path a moment after announcing Ready,
/// while the old one's socket no longer listens.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// Connect to the control socket, retrying refused or missing until `deadline`.
fn connect_control(path: &Path, deadline: Instant) -> Result<UnixStream> {
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(Error::io("cannot connect to the incumbent at", path, e)),
        }
    }
}

/// Check a peer's Hello and negotiate the version.
fn accept_hello(hello: &Message, role: Side, kernel_pid: u32) -> Result<u16> {
    let Message::Hello {
        role: their_role,
        pid,
        proto_min,
        proto_max,
        ..
    } = hello
    else {
        return Err(Error::Protocol(format!(
            "expected Hello, got {}",
            hello.kind().name()
        )));
    };
    if *their_role != role {
        return Err(Error::Protocol(format!(
            "peer says it is {their_role:?}, expected {role:?}"
        )));
    }
    if *pid != kernel_pid {
        return Err(Error::PeerIdentity(format!(
            "peer announces pid {pid} but the kernel says {kernel_pid}"
        )));
    }
    negotiate_version((PROTO_MIN, PROTO_MAX), (*proto_min, *proto_max))
}

/// One handoff in progress.
struct Run<'a> {
    supervisor: &'a Supervisor,
    handoff_id: HandoffId,
    incumbent_pid: u32,
    started_unix_ms: u64,
    successor: Option<ChildProcess>,
    successor_channel: Option<Channel>,
    successor_pid: Option<u32>,
    /// PrepareHandoff was sent: the incumbent must be told to resume.
    prepared: bool,
    timings: PhaseTimings,
    on_phase: &'a mut dyn FnMut(PhaseEvent),
}

impl Run<'_> {
    fn phase_done(&mut self, phase: HandoffPhase) {
        (self.on_phase)(PhaseEvent {
            handoff_id: self.handoff_id,
            phase,
            duration: self.timings.of(phase),
            successor_pid: self.successor_pid,
        });
    }

    fn journal(&self, phase: Phase) -> std::result::Result<(), String> {
        self.supervisor
            .write_journal(&Journal {
                handoff_id: self.handoff_id,
                phase,
                incumbent_pid: self.incumbent_pid,
                successor_pid: self.successor_pid,
                started_at_unix_ms: self.started_unix_ms,
            })
            .map_err(|e| format!("journal: {e}"))
    }

    /// The happy path; an `Err` carries the reason to roll back.
    fn drive(
        &mut self,
        incumbent: &mut Channel,
        spec: &SpawnSpec,
        deadline: Instant,
    ) -> std::result::Result<ChildProcess, String> {
        let id = self.handoff_id;
        let timeouts = self.supervisor.timeouts;

        let phase = Instant::now();
        self.spawn_successor(spec, incumbent)?;
        self.journal(Phase::Negotiating)?;
        crash_point!("S_AFTER_N_HELLO");
        self.timings.spawn = phase.elapsed();
        self.phase_done(HandoffPhase::Spawn);

        let phase = Instant::now();
        let left = deadline.saturating_duration_since(phase);
        incumbent
            .send(&Message::PrepareHandoff {
                handoff_id: id,
                successor_pid: self.successor_pid.unwrap_or(0),
                deadline_ms: left.as_millis() as u64,
                drain_grace_ms: spec.drain_grace.as_millis() as u64,
            })
            .map_err(|e| format!("PrepareHandoff: {e}"))?;
        self.prepared = true;
        crash_point!("S_AFTER_PREPARE");
        let drain_deadline = (phase + spec.drain_grace).min(deadline) + timeouts.wire_slack;
        match self.await_incumbent(incumbent, drain_deadline, "Drained")? {
            Message::Drained { .. } => {}
            other => return Err(format!("expected Drained, got {}", other.kind().name())),
        }
        crash_point!("S_AFTER_DRAINED");
        self.timings.drain = phase.elapsed();

        // From the drain to Ready nobody accepts: the journal of each step
        // (and the observer) runs while the peer works on the next one, not
        // before asking for it. Recovery treats every phase before
        // AwaitingReady alike.
        let phase = Instant::now();
        incumbent
            .send(&Message::SealRequest { handoff_id: id })
            .map_err(|e| format!("SealRequest: {e}"))?;
        self.phase_done(HandoffPhase::Drain);
        self.journal(Phase::Draining)?;
        crash_point!("S_AFTER_SEAL_REQUEST");
        match self.await_incumbent(incumbent, deadline + timeouts.wire_slack, "SealComplete")? {
            Message::SealComplete { handoff_id, .. } if handoff_id == id => {}
            Message::SealFailed { error, .. } => {
                // The incumbent kept its lock and resumed on its own.
                self.prepared = false;
                return Err(format!("seal failed: {error}"));
            }
            other => return Err(format!("expected SealComplete, got {}", describe(&other))),
        }
        crash_point!("S_AFTER_SEAL_COMPLETE");
        self.timings.seal = phase.elapsed();

        let phase = Instant::now();
        let successor = self
            .successor_channel
            .as_mut()
            .expect("handshake done above");
        successor
            .send(&Message::Begin { handoff_id: id })
            .map_err(|e| format!("Begin: {e}"))?;
        // The window recovery must get right: the successor's Ready is on
        // its way while the journal still says Draining.
        #[cfg(feature = "crash-points")]
        if crate::crash::armed("S_READY_UNJOURNALLED") {
            let _ = crate::poll::wait_fd(
                std::os::fd::AsRawFd::as_raw_fd(successor.stream()),
                libc::POLLIN,
                None,
                Some(Instant::now() + Duration::from_secs(10)),
            );
            crate::crash::maybe_crash("S_READY_UNJOURNALLED");
        }
        self.phase_done(HandoffPhase::Seal);
        self.journal(Phase::Sealing)?;
        self.journal(Phase::AwaitingReady)?;
        crash_point!("S_AFTER_BEGIN");
        match self.await_ready(incumbent, deadline + timeouts.wire_slack)? {
            Message::Ready { handoff_id, .. } if handoff_id == id => {}
            other => return Err(format!("expected Ready, got {}", describe(&other))),
        }
        self.timings.ready = phase.elapsed();
        self.phase_done(HandoffPhase::Ready);

        // From Ready on the successor is authoritative, whatever happens to
        // the old incumbent: nothing below can roll back.
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

    fn spawn_successor(
        &mut self,
        spec: &SpawnSpec,
        incumbent: &mut Channel,
    ) -> std::result::Result<(), String> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        enable_passcred(&ours).map_err(|e| e.to_string())?;
        let child = spawn(
            &spec.command,
            &self.supervisor.borrowed_listeners(),
            Some(theirs.as_fd()),
        )
        .map_err(|e| format!("cannot start the successor: {e}"))?;
        drop(theirs);
        let pid = child.pid();
        self.successor_pid = Some(pid);
        self.successor = Some(child);
        let mut channel = Channel::new(ours).map_err(|e| e.to_string())?;
        crash_point!("S_AFTER_SPAWN");
        let timeouts = self.supervisor.timeouts;
        let deadline = Instant::now() + timeouts.hello;
        // A successor may load its state before its Hello (examples/README.md,
        // "Preload"): heartbeat the incumbent meanwhile, or it would take a
        // long wait for a dead supervisor and resume.
        let (hello, sender) = loop {
            let slice = (Instant::now() + timeouts.heartbeat).min(deadline);
            match channel.recv_attested(slice) {
                Err(Error::Timeout) if Instant::now() < deadline => {
                    self.check_successor_alive()?;
                    incumbent
                        .send(&Message::Heartbeat {
                            ts_ms: now_unix_ms(),
                        })
                        .map_err(|e| format!("heartbeat to the incumbent: {e}"))?;
                }
                answer => break answer.map_err(|e| format!("successor Hello: {e}"))?,
            }
        };
        // Invariant 9: the Hello must come from the child we spawned, as the
        // kernel attests, not merely claim its pid.
        if sender != Some(pid) {
            return Err(format!(
                "successor Hello came from pid {sender:?}, not the spawned {pid}"
            ));
        }
        let version = accept_hello(&hello, Side::Successor, pid).map_err(|e| e.to_string())?;
        channel.set_version(version);
        channel
            .send(&Message::HelloAck {
                proto_version_chosen: version,
                handoff_id: self.handoff_id,
            })
            .map_err(|e| format!("HelloAck: {e}"))?;
        self.successor_channel = Some(channel);
        Ok(())
    }

    /// The incumbent's next answer, skipping heartbeats and progress,
    /// watching the successor meanwhile.
    fn await_incumbent(
        &mut self,
        incumbent: &mut Channel,
        deadline: Instant,
        what: &str,
    ) -> std::result::Result<Message, String> {
        let liveness = self.supervisor.timeouts.liveness;
        let mut last_frame = Instant::now();
        loop {
            self.check_successor_alive()?;
            let slice = (Instant::now() + Duration::from_millis(100)).min(deadline);
            match incumbent.recv_until(slice, None) {
                Ok(Message::Heartbeat { .. } | Message::SealProgress { .. }) => {
                    last_frame = Instant::now()
                }
                Ok(message) => return Ok(message),
                Err(Error::Timeout) if Instant::now() >= deadline => {
                    return Err(format!("timed out waiting for {what}"))
                }
                Err(Error::Timeout) if last_frame.elapsed() >= liveness => {
                    return Err(format!(
                        "incumbent silent for {liveness:?} waiting for {what}"
                    ))
                }
                Err(Error::Timeout) => {}
                Err(e) => return Err(format!("waiting for {what}: {e}")),
            }
        }
    }

    /// The successor's Ready, heartbeating the incumbent meanwhile.
    fn await_ready(
        &mut self,
        incumbent: &mut Channel,
        deadline: Instant,
    ) -> std::result::Result<Message, String> {
        let timeouts = self.supervisor.timeouts;
        let mut last_frame = Instant::now();
        let mut last_beat = Instant::now();
        loop {
            if let Err(dead) = self.check_successor_alive() {
                // A successor that announced Ready and died right after
                // (before we read it) was authoritative from its Ready on:
                // a Ready already sent binds, whatever followed it.
                return self.buffered_answer().ok_or(dead);
            }
            if last_beat.elapsed() >= timeouts.heartbeat {
                last_beat = Instant::now();
                let _ = incumbent.send(&Message::Heartbeat {
                    ts_ms: now_unix_ms(),
                });
            }
            let slice = (Instant::now() + Duration::from_millis(100)).min(deadline);
            let successor = self.successor_channel.as_mut().expect("handshake done");
            match successor.recv_until(slice, None) {
                Ok(Message::Heartbeat { .. }) => last_frame = Instant::now(),
                Ok(message) => return Ok(message),
                Err(Error::Timeout) if Instant::now() >= deadline => {
                    return Err("successor not ready before the deadline".into())
                }
                Err(Error::Timeout) if last_frame.elapsed() >= timeouts.liveness => {
                    return Err(format!("successor silent for {:?}", timeouts.liveness))
                }
                Err(Error::Timeout) => {}
                Err(e @ Error::PeerClosed { .. }) => {
                    // It closed its end: most likely it died. Say how.
                    return Err(self
                        .successor_death(SUCCESSOR_DEATH_GRACE)
                        .unwrap_or_else(|| format!("waiting for Ready: {e}")));
                }
                Err(e) => return Err(format!("waiting for Ready: {e}")),
            }
        }
    }

    /// The first frame other than a heartbeat that the successor sent and
    /// we have not read yet, if any (without waiting).
    fn buffered_answer(&mut self) -> Option<Message> {
        let channel = self.successor_channel.as_mut()?;
        loop {
            match channel.recv_until(Instant::now(), None) {
                Ok(Message::Heartbeat { .. }) => {}
                Ok(message) => return Some(message),
                Err(_) => return None,
            }
        }
    }

    /// How the successor ended, if it does within `grace`.
    fn successor_death(&mut self, grace: Duration) -> Option<String> {
        let status = self.successor.as_mut()?.wait_timeout(grace)?;
        Some(format!("successor {}", describe_status(status)))
    }

    fn check_successor_alive(&mut self) -> std::result::Result<(), String> {
        if let Some(child) = self.successor.as_mut() {
            if let Some(status) = child.try_wait() {
                return Err(format!("successor {}", describe_status(status)));
            }
        }
        Ok(())
    }

    /// Abort the successor, stop and reap it, tell the incumbent to resume,
    /// and clear the journal.
    fn roll_back(&mut self, incumbent: &mut Channel, reason: &str) {
        let id = self.handoff_id;
        event!(Warn, "handoff {id}: rolling back: {reason}");
        if let Some(channel) = self.successor_channel.take() {
            let _ = channel.send(&Message::Abort {
                handoff_id: id,
                reason: reason.to_string(),
            });
        }
        if let Some(mut child) = self.successor.take() {
            child.terminate(self.supervisor.timeouts.kill_grace);
        }
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

fn describe(message: &Message) -> String {
    match message.handoff_id() {
        Some(id) => format!("{} for handoff {id}", message.kind().name()),
        None => message.kind().name().into(),
    }
}
