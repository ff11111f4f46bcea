//! What the running supervisor knows about its service, shared between the
//! main loop (which owns the processes), the handoff thread and the trigger
//! socket (which reads it for `status`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use handoff::supervisor::HandoffPhase;

/// After this many successor failures in a row a binary is refused.
pub const REFUSE_AFTER: u32 = 3;

#[derive(Debug, Clone)]
pub struct Incumbent {
    pub pid: u32,
    /// Found running after a supervisor restart (not our child).
    pub adopted: bool,
    pub since: SystemTime,
    pub binary: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Running {
    /// Known once the incumbent has answered (the first phase).
    pub id: Option<String>,
    /// The phase under way.
    pub phase: HandoffPhase,
    pub successor_pid: Option<u32>,
    pub started: Instant,
    pub binary: PathBuf,
    /// `trigger`, `SIGHUP`.
    pub source: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Result {
    Committed,
    RolledBack,
    /// The handoff could not start (no incumbent answering, ...).
    Failed,
}

impl Result {
    pub fn name(self) -> &'static str {
        match self {
            Result::Committed => "committed",
            Result::RolledBack => "rolled-back",
            Result::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Last {
    pub id: Option<String>,
    pub result: Result,
    pub reason: Option<String>,
    /// The phase that failed, for a rollback.
    pub failed_phase: Option<HandoffPhase>,
    /// The phases that completed, in order, with their durations in ms.
    pub phases: Vec<(HandoffPhase, f64)>,
    pub total_ms: f64,
    pub finished_at: SystemTime,
    pub binary: PathBuf,
}

/// The successor `prepare` started, held for `trigger --prepared`.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The id its handoff will have.
    pub id: String,
    pub pid: u32,
    pub binary: PathBuf,
    pub since: SystemTime,
    /// How long its spawn and Hello took.
    pub spawn_ms: f64,
}

/// A generation that died within its probation, and the build brought back.
#[derive(Debug, Clone)]
pub struct ProbationFailure {
    pub binary: PathBuf,
    pub pid: u32,
    /// How it ended ("exited with status 70").
    pub how: String,
    pub restored: PathBuf,
    pub at: SystemTime,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// Handoffs started (whatever their outcome).
    pub handoffs: u64,
    pub committed: u64,
    pub rollbacks: u64,
    /// Handoffs that could not start.
    pub failures: u64,
    /// Triggers refused (one in progress, a failing binary).
    pub refused: u64,
    /// Cold restarts after the incumbent died outside a handoff.
    pub restarts: u64,
    /// Generations that died within their probation.
    pub probation_failures: u64,
}

#[derive(Debug, Clone)]
pub struct State {
    pub started_at: SystemTime,
    pub incumbent: Option<Incumbent>,
    pub handoff: Option<Running>,
    pub prepared: Option<Prepared>,
    pub last: Option<Last>,
    pub counters: Counters,
    /// A successor binary and how many handoffs to it failed in a row.
    pub failing_binary: Option<(PathBuf, u32)>,
    /// When the incumbent is to be restarted (it died).
    pub restart_at: Option<SystemTime>,
    /// The last generation that died within its probation.
    pub probation_failure: Option<ProbationFailure>,
    pub stopping: bool,
}

impl State {
    pub fn lifecycle(&self) -> &'static str {
        if self.stopping {
            "stopping"
        } else if self.handoff.is_some() {
            "handing-off"
        } else if self.restart_at.is_some() {
            "restarting"
        } else if self.incumbent.is_some() {
            "serving"
        } else {
            "starting"
        }
    }

    /// Refuse `binary` from now on (unless forced), as after REFUSE_AFTER
    /// failures.
    pub fn refuse(&mut self, binary: PathBuf) {
        self.failing_binary = Some((binary, REFUSE_AFTER));
    }

    /// A successor running `binary` failed (its own doing: it died, hung,
    /// never came up): one more towards its refusal.
    pub fn successor_failed(&mut self, binary: &std::path::Path) {
        let count = match &self.failing_binary {
            Some((failing, count)) if failing == binary => count + 1,
            _ => 1,
        };
        self.failing_binary = Some((binary.to_path_buf(), count));
    }

    /// Whether `binary` is refused for a handoff (unless forced).
    pub fn refuses(&self, binary: &std::path::Path) -> Option<u32> {
        match &self.failing_binary {
            Some((failing, count)) if failing == binary && *count >= REFUSE_AFTER => Some(*count),
            _ => None,
        }
    }
}

/// The state behind a mutex; a poisoned lock is still read (the state is
/// plain data, always consistent between statements).
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<State>>);

impl Shared {
    pub fn new() -> Shared {
        Shared(Arc::new(Mutex::new(State {
            started_at: SystemTime::now(),
            incumbent: None,
            handoff: None,
            prepared: None,
            last: None,
            counters: Counters::default(),
            failing_binary: None,
            restart_at: None,
            probation_failure: None,
            stopping: false,
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
