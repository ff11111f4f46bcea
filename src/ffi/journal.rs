//! The journal through the C ABI (DESIGN §5, §6).

use std::ffi::c_char;

use super::args::{arg_path, arg_ref, Out};
use super::{boundary, handoff_error, handoff_status, Failure};
use crate::journal::{Journal, Phase};
use crate::protocol::HandoffId;

pub const HANDOFF_PHASE_NEGOTIATING: u32 = 0;
pub const HANDOFF_PHASE_DRAINING: u32 = 1;
pub const HANDOFF_PHASE_SEALING: u32 = 2;
pub const HANDOFF_PHASE_AWAITING_READY: u32 = 3;
pub const HANDOFF_PHASE_COMMITTED: u32 = 4;
pub const HANDOFF_PHASE_RESUMING_AFTER_ABORT: u32 = 5;

/// The supervisor's crash-recovery record. A plain value the caller owns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct handoff_journal {
    pub handoff_id: [u8; 16],
    /// `HANDOFF_PHASE_NEGOTIATING` (0) .. `HANDOFF_PHASE_RESUMING_AFTER_ABORT` (5).
    pub phase: u32,
    /// The incumbent's real pid.
    pub incumbent_pid: u32,
    pub has_successor_pid: bool,
    /// Meaningful only when `has_successor_pid` is true.
    pub successor_pid: u32,
    pub started_at_unix_ms: u64,
}

impl handoff_journal {
    fn to_journal(self) -> Result<Journal, Failure> {
        let c = self;
        let phase = Phase::from_index(c.phase).ok_or_else(|| {
            Failure::invalid(format!("unknown journal phase {} (0..=5)", c.phase))
        })?;
        Ok(Journal {
            handoff_id: HandoffId::from_bytes(c.handoff_id),
            phase,
            incumbent_pid: c.incumbent_pid,
            successor_pid: c.has_successor_pid.then_some(c.successor_pid),
            started_at_unix_ms: c.started_at_unix_ms,
        })
    }
}

impl From<&Journal> for handoff_journal {
    fn from(j: &Journal) -> handoff_journal {
        handoff_journal {
            handoff_id: *j.handoff_id.as_bytes(),
            phase: j.phase.index(),
            incumbent_pid: j.incumbent_pid,
            has_successor_pid: j.successor_pid.is_some(),
            successor_pid: j.successor_pid.unwrap_or(0),
            started_at_unix_ms: j.started_at_unix_ms,
        }
    }
}

/// Replace the journal at `path` durably (write `<path>.tmp`, fsync, rename,
/// fsync the directory, which is created if missing). On failure the
/// previous journal is intact. A phase out of range answers
/// `HANDOFF_ERR_INVALID_ARGUMENT` and writes nothing.
#[no_mangle]
pub unsafe extern "C" fn handoff_journal_write(
    path: *const c_char,
    journal: *const handoff_journal,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: NUL-terminated path and a readable record (header contract).
        let (path, journal) = unsafe { (arg_path(path, "path")?, arg_ref(journal, "journal")?) };
        (*journal).to_journal()?.write(path)?;
        Ok(())
    })
}

/// Read the journal at `path`. With no journal there, `*found` is false and
/// `*out` is left alone; otherwise `*found` is true and `*out` is filled. A
/// corrupt file answers `HANDOFF_ERR_JOURNAL_CORRUPT` naming it.
#[no_mangle]
pub unsafe extern "C" fn handoff_journal_read(
    path: *const c_char,
    out: *mut handoff_journal,
    found: *mut bool,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: NUL-terminated path (header contract).
        let path = unsafe { arg_path(path, "path") }?;
        let (out, found) = (Out::new(out, "out")?, Out::new(found, "found")?);
        match Journal::read(path)? {
            Some(journal) => {
                out.write((&journal).into());
                found.write(true);
            }
            None => found.write(false),
        }
        Ok(())
    })
}

/// Remove the journal at `path`; a missing journal is not an error.
#[no_mangle]
pub unsafe extern "C" fn handoff_journal_delete(
    path: *const c_char,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: NUL-terminated path (header contract).
        Journal::delete(unsafe { arg_path(path, "path") }?)?;
        Ok(())
    })
}
