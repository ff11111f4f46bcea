//! What a service implements to take part in handoffs as the incumbent.

use std::time::Instant;

use std::os::fd::RawFd;

use crate::channel::Sender;
use crate::protocol::{ItemKind, Message};

/// A hook's failure, with the reason the supervisor and the log will see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookError(pub String);

impl<E: std::fmt::Display> From<E> for HookError {
    fn from(e: E) -> Self {
        HookError(e.to_string())
    }
}

/// What `drain` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub open_conns_remaining: u32,
    pub accept_closed: bool,
    /// What moves to the successor (only when [`HookContext::moves`] says
    /// this handoff moves descriptors), in the order the successor gets it.
    pub moved: Vec<MovedItem>,
}

/// A descriptor the incumbent hands to its successor (protocol v2), with
/// what the successor must know to carry on.
///
/// The service keeps its own descriptor open, and neither reads nor writes
/// it, until the outcome: on commit it closes it (never `shutdown`); on a
/// rollback it takes it back (the library has restored its file status
/// flags by the time the resume request comes) and carries on from the
/// state it kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedItem {
    pub kind: ItemKind,
    pub name: String,
    pub fd: RawFd,
    /// Bytes read and not yet processed (a connection).
    pub unread: Vec<u8>,
    /// Bytes produced and not yet written (a connection).
    pub unwritten: Vec<u8>,
    /// The service's own state for it.
    pub state: Vec<u8>,
}

/// What `seal` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    pub last_revision_per_shard: Vec<u64>,
    pub data_dir_fingerprint: [u8; 32],
}

/// Passed to the hooks: the deadline to respect and a way to report
/// progress of a long seal.
pub struct HookContext<'a> {
    pub deadline: Instant,
    /// In a drain: `Some(max)` when this handoff moves descriptors (at most
    /// `max` of them, what the successor can hold), `None` when it does
    /// not (a v1 party: close the connections as in v1).
    pub moves: Option<u32>,
    pub(crate) sender: &'a Sender,
}

impl HookContext<'_> {
    /// Send a SealProgress frame (optional; heartbeats already keep the
    /// supervisor from timing the incumbent out).
    pub fn seal_progress(
        &self,
        shards_sealed: u32,
        shards_total: u32,
        last_revision: u64,
    ) -> crate::Result<()> {
        self.sender.send(&Message::SealProgress {
            shards_sealed,
            shards_total,
            last_revision,
        })
    }
}

/// The service side of a handoff. Called from the incumbent's serve thread.
pub trait Service: Send + Sync {
    /// Stop accepting, finish or hand back in-flight work, fsync: no
    /// acknowledged write may be lost. Keep serving reads on open
    /// connections.
    fn drain(&self, ctx: &HookContext<'_>) -> Result<DrainReport, HookError>;

    /// Flush and close the writers and fsync. The library releases the
    /// data-dir lock right after this returns Ok. On Err the incumbent keeps
    /// the lock and `resume_after_abort` is called.
    fn seal(&self, ctx: &HookContext<'_>) -> Result<SealReport, HookError>;

    /// The handoff was rolled back: reopen the writers and accept again.
    fn resume_after_abort(&self) -> Result<(), HookError>;
}
