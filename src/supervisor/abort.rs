//! Why a handoff rolled back, as values a program can switch on: the phase
//! it was in, the party that caused it, and the kind of cause. The detail
//! is the sentence for people (the trigger prints it, the log has it).

use std::fmt;

use super::HandoffPhase;

/// Who caused a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Incumbent,
    Successor,
    Supervisor,
}

impl Party {
    pub fn name(self) -> &'static str {
        match self {
            Party::Incumbent => "incumbent",
            Party::Successor => "successor",
            Party::Supervisor => "supervisor",
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The successor could not be started.
    Spawn,
    /// The process exited (or was killed).
    Exited,
    /// It closed its control connection.
    Closed,
    /// No frame for the liveness timeout.
    Silent,
    /// The phase's budget or the handoff's deadline passed.
    Deadline,
    /// The incumbent's seal failed (SealFailed).
    SealFailed,
    /// A message that breaks the protocol, or a peer that is not who it says.
    Protocol,
    /// Reading or writing a control connection failed.
    Io,
    /// The supervisor could not write its journal.
    Journal,
    /// The supervisor's owner cancelled the handoff.
    Cancelled,
    /// More would move than the successor can hold (its descriptor limit).
    Limit,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Spawn => "spawn",
            Cause::Exited => "exited",
            Cause::Closed => "closed",
            Cause::Silent => "silent",
            Cause::Deadline => "deadline",
            Cause::SealFailed => "seal-failed",
            Cause::Protocol => "protocol",
            Cause::Io => "io",
            Cause::Journal => "journal",
            Cause::Cancelled => "cancelled",
            Cause::Limit => "limit",
        }
    }
}

/// A rollback's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    /// The phase that was running.
    pub phase: HandoffPhase,
    pub party: Party,
    pub cause: Cause,
    pub detail: String,
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl Abort {
    pub fn new(
        phase: HandoffPhase,
        party: Party,
        cause: Cause,
        detail: impl Into<String>,
    ) -> Abort {
        Abort {
            phase,
            party,
            cause,
            detail: detail.into(),
        }
    }
}
