//! What a service implements to take part in handoffs as the incumbent.

use std::time::Instant;

use crate::channel::Sender;
use crate::protocol::Message;

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
