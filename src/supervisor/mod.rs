//! The supervisor: owns the listeners for the life of the service, drives
//! one handoff at a time, journals every acknowledged step, and finishes or
//! rolls back a handoff a previous supervisor left half done.
//!
//! `run` is one handoff's phases, `hello` the Hello exchange, `abort` the
//! typed reasons of a rollback; recovery from the journal is
//! `crate::recovery`.

pub mod abort;
pub mod hello;
mod run;

pub use abort::{Abort, Cause, Party};

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::journal::{Durability, Journal};
use crate::log::event;
use crate::poll;
use crate::protocol::HandoffId;
use crate::recovery::recover;
pub use crate::recovery::Recovery;
use crate::spawn::{spawn, ChildProcess, Command};
use crate::sys;

/// The supervisor's timeouts (DESIGN §2 defaults).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// No frame from a peer for this long means it is dead.
    pub liveness: Duration,
    /// How long a peer has to send its Hello.
    pub hello: Duration,
    /// Slack on the drain budget for frames in flight (never past the
    /// whole handoff's deadline).
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
    /// Connect to the incumbent and exchange Hello (not counting the
    /// successor's start, which runs between the two).
    pub hello: Duration,
    /// Start the successor and exchange its Hello (and Capacity).
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
    /// Why it rolled back, for people (`abort`'s detail).
    pub abort_reason: Option<String>,
    /// Why it rolled back, for programs.
    pub abort: Option<Abort>,
    pub incumbent_pid: u32,
    /// The new incumbent, for the caller to wait on, when committed.
    pub successor: Option<ChildProcess>,
    pub timings: PhaseTimings,
}

/// A successor [`Supervisor::prepare`] started and handshook, waiting for
/// its handoff ([`Supervisor::perform_prepared`]). Dropping it aborts the
/// successor (Abort, then SIGTERM, SIGKILL after the kill grace) and reaps
/// it.
pub struct PreparedSuccessor {
    handoff_id: HandoffId,
    spec: SpawnSpec,
    kill_grace: Duration,
    /// The control socket the successor bound ahead for.
    control_path: PathBuf,
    /// Taken by the handoff.
    held: Option<run::Held>,
}

impl PreparedSuccessor {
    /// The id its handoff will have (its HelloAck said so).
    pub fn handoff_id(&self) -> HandoffId {
        self.handoff_id
    }

    pub fn pid(&self) -> Option<u32> {
        self.held.as_ref().map(|held| held.child.pid())
    }

    /// What it was started from (its handoff's deadline and drain budget
    /// come from it too).
    pub fn spec(&self) -> &SpawnSpec {
        &self.spec
    }

    /// How long spawning it and its Hello took.
    pub fn spawn_time(&self) -> Duration {
        self.held.as_ref().map_or(Duration::ZERO, |held| held.spawn)
    }

    /// Whether it has exited since (its handoff would roll back).
    pub fn has_exited(&mut self) -> bool {
        self.held.as_mut().is_none_or(run::Held::exited)
    }
}

impl Drop for PreparedSuccessor {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            event!(
                Info,
                "handoff {}: prepared successor pid {} dropped",
                self.handoff_id,
                held.child.pid()
            );
            held.discard(
                self.handoff_id,
                "prepared successor dropped",
                self.kill_grace,
                &self.control_path,
            );
        }
    }
}

pub struct Supervisor {
    control_path: PathBuf,
    listeners: Vec<(String, OwnedFd)>,
    journal: Option<PathBuf>,
    timeouts: Timeouts,
    in_flight: Mutex<()>,
    /// Readable end (0) and writable end (1) of the channel `cancel` writes
    /// to, to wake the handoff's waits; the errno when it could not be made
    /// (no descriptor left), which refuses handoffs rather than panicking.
    cancel: std::result::Result<(OwnedFd, OwnedFd), i32>,
    /// The number of the handoff in flight (0: none), and of the last one
    /// cancelled: a cancel can only ever end the handoff it was meant for.
    running: AtomicU64,
    cancelled: AtomicU64,
    handoffs: AtomicU64,
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
            cancel: cancel_channel(),
            running: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            handoffs: AtomicU64::new(0),
        }
    }

    /// Cancel the handoff in flight, from any thread: it rolls back as soon
    /// as its current wait notices (at once). A no-op when none runs.
    pub fn cancel(&self) {
        let running = self.running.load(Ordering::SeqCst);
        if running != 0 {
            self.cancelled.store(running, Ordering::SeqCst);
            if let Ok((_, wake)) = &self.cancel {
                poll::wake(wake.as_fd());
            }
        }
    }

    /// Whether handoff number `seq` was cancelled (draining the wake-ups).
    fn is_cancelled(&self, seq: u64) -> bool {
        if let Ok((read, _)) = &self.cancel {
            poll::drain(read.as_fd());
        }
        self.cancelled.load(Ordering::SeqCst) == seq
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
        self.start_handoff(spec, HandoffId::random(), None, on_phase)
    }

    /// Start `spec`'s successor and exchange its Hello now, ahead of the
    /// handoff, which [`perform_prepared`](Supervisor::perform_prepared)
    /// runs later without the spawn. The successor takes nothing of the
    /// service's meanwhile (no lock, no connection): it waits for Begin,
    /// for as long as it is written to wait. The incumbent is not involved
    /// and serves as before; a handoff may even run meanwhile (it does not
    /// affect this successor).
    pub fn prepare(&self, spec: &SpawnSpec) -> std::result::Result<PreparedSuccessor, Abort> {
        let handoff_id = HandoffId::random();
        let mut no_report = |_: PhaseEvent| {};
        let mut run = run::Run::new(self, handoff_id, Instant::now(), 0, &mut no_report);
        if let Err(abort) = run.prepare(spec) {
            run.discard_successor(&abort.to_string());
            return Err(abort);
        }
        let held = run.into_prepared().expect("prepared above");
        event!(
            Info,
            "handoff {handoff_id}: successor pid {} prepared in {:?}",
            held.child.pid(),
            held.spawn
        );
        Ok(PreparedSuccessor {
            handoff_id,
            spec: spec.clone(),
            kill_grace: self.timeouts.kill_grace,
            control_path: self.control_path.clone(),
            held: Some(held),
        })
    }

    /// The handoff to a successor [`prepare`](Supervisor::prepare)d: as
    /// [`perform_handoff`](Supervisor::perform_handoff), its deadline counted
    /// from now, with no spawn. A prepared successor that has exited rolls
    /// back (`Cause::Exited`); `Err` (no incumbent, a handoff in progress)
    /// discards it.
    pub fn perform_prepared(&self, prepared: PreparedSuccessor) -> Result<Outcome> {
        self.perform_prepared_with(prepared, &mut |_| {})
    }

    pub fn perform_prepared_with(
        &self,
        mut prepared: PreparedSuccessor,
        on_phase: &mut dyn FnMut(PhaseEvent),
    ) -> Result<Outcome> {
        let held = prepared.held.take();
        self.start_handoff(&prepared.spec, prepared.handoff_id, held, on_phase)
    }

    fn start_handoff(
        &self,
        spec: &SpawnSpec,
        handoff_id: HandoffId,
        held: Option<run::Held>,
        on_phase: &mut dyn FnMut(PhaseEvent),
    ) -> Result<Outcome> {
        let Ok(_one_at_a_time) = self.in_flight.try_lock() else {
            return self.refuse(held, handoff_id, Error::HandoffInProgress);
        };
        if let Err(errno) = self.cancel {
            let e = Error::Stream(std::io::Error::from_raw_os_error(errno));
            return self.refuse(held, handoff_id, e);
        }
        let seq = self.handoffs.fetch_add(1, Ordering::SeqCst) + 1;
        self.running.store(seq, Ordering::SeqCst);
        let result = self.greet_and_perform(spec, handoff_id, held, on_phase, seq);
        self.running.store(0, Ordering::SeqCst);
        result
    }

    /// A handoff that does not start: `held`, if any, is discarded.
    fn refuse(&self, held: Option<run::Held>, handoff_id: HandoffId, e: Error) -> Result<Outcome> {
        if let Some(held) = held {
            held.discard(
                handoff_id,
                &e.to_string(),
                self.timeouts.kill_grace,
                &self.control_path,
            );
        }
        Err(e)
    }

    /// Connect to the incumbent, start the successor (unless `held` is one
    /// started ahead), greet the incumbent, and run the handoff. The
    /// successor's exec overlaps the incumbent's loop answering our
    /// connection; an incumbent that then fails its Hello discards it (the
    /// handoff never started: `Err`).
    fn greet_and_perform(
        &self,
        spec: &SpawnSpec,
        handoff_id: HandoffId,
        held: Option<run::Held>,
        on_phase: &mut dyn FnMut(PhaseEvent),
        seq: u64,
    ) -> Result<Outcome> {
        let started = Instant::now();
        let deadline = started + spec.deadline;
        let connected = match hello::Connected::to(&self.control_path, self.timeouts.hello) {
            Ok(connected) => connected,
            Err(e) => return self.refuse(held, handoff_id, e),
        };
        let connecting = started.elapsed();
        let mut run = run::Run::new(self, handoff_id, started, seq, on_phase);
        let start = match held {
            Some(held) => {
                run.adopt_prepared(held);
                Ok(())
            }
            None => run.start_successor(spec),
        };
        let greeting = Instant::now();
        let hello::Greeted {
            channel: mut incumbent,
            pid: incumbent_pid,
            ..
        } = match connected.greet(handoff_id) {
            Ok(greeted) => greeted,
            Err(e) => {
                run.discard_successor(&e.to_string());
                return Err(e);
            }
        };
        run.greeted_incumbent(incumbent_pid, connecting + greeting.elapsed());
        crash_point!("S_AFTER_O_HELLO");
        run.phase_done(HandoffPhase::Hello);
        event!(Info, "handoff {handoff_id}: incumbent pid {incumbent_pid}");
        let result = start.and_then(|()| run.drive(&mut incumbent, spec, deadline));
        let mut timings = run.timings;
        timings.total = started.elapsed();
        Ok(match result {
            Ok(successor) => {
                event!(
                    Info,
                    "handoff {handoff_id}: committed in {:?}",
                    timings.total
                );
                Outcome {
                    handoff_id,
                    committed: true,
                    abort_reason: None,
                    abort: None,
                    incumbent_pid,
                    successor: Some(successor),
                    timings,
                }
            }
            Err(abort) => {
                run.roll_back(&mut incumbent, &abort);
                timings.total = started.elapsed();
                Outcome {
                    handoff_id,
                    committed: false,
                    abort_reason: Some(abort.to_string()),
                    abort: Some(abort),
                    incumbent_pid,
                    successor: None,
                    timings,
                }
            }
        })
    }

    fn write_journal(&self, journal: &Journal, durability: Durability) -> Result<()> {
        match &self.journal {
            Some(path) => journal.write_with(path, durability),
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
        let recovery = recover(
            journal,
            written,
            serving,
            self.timeouts.kill_grace,
            &self.control_path,
        );
        self.clear_journal();
        Ok(Some(recovery))
    }

    /// The pid of the process serving the control socket, if one answers
    /// (the kernel's, which must match the one its Hello announces).
    fn probe_incumbent(&self) -> Option<u32> {
        let deadline = Instant::now() + self.timeouts.hello + self.timeouts.liveness;
        loop {
            match hello::greet_incumbent(
                &self.control_path,
                self.timeouts.hello,
                HandoffId::random(),
            ) {
                Ok(greeted) => return Some(greeted.pid),
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

/// The cancel channel, or the errno that kept it from being made.
fn cancel_channel() -> std::result::Result<(OwnedFd, OwnedFd), i32> {
    let (read, write) = poll::wake_pair().map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    poll::set_nonblocking(read.as_fd()).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    Ok((read, write))
}
