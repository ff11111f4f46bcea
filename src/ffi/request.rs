//! A request for the service through the C ABI: `handoff_hook_context` is
//! both what a callback receives and what a service's loop takes with
//! `handoff_incumbent_take_request` (one type, one way to fill in a report).

use std::ffi::{c_char, CStr};

use super::args::{arg_bytes, arg_mut};
use super::{boundary, handoff_error, handoff_status, Failure};
use crate::incumbent::{Request, RequestKind};
use crate::protocol::{check_item, ItemKind};
use crate::service::{DrainReport, MovedItem, SealReport};

/// Nothing is waiting.
pub const HANDOFF_REQUEST_NONE: u32 = 0;
/// Drain: stop accepting, finish in-flight requests, fsync.
pub const HANDOFF_REQUEST_DRAIN: u32 = 1;
/// Seal: flush and close the writers (the lock is released after).
pub const HANDOFF_REQUEST_SEAL: u32 = 2;
/// Resume after a rolled-back handoff: reopen, accept again.
pub const HANDOFF_REQUEST_RESUME: u32 = 3;
/// Serving is over: `handoff_incumbent_wait` says how, without waiting.
pub const HANDOFF_REQUEST_ENDED: u32 = 4;

/// A request of the handoff to the service: the drain, seal or resume to do
/// and the report being filled in. Given to a callback (valid during the
/// call; returning completes it) or taken by the service's loop with
/// `handoff_incumbent_take_request` (valid until the incumbent is freed;
/// complete it once with `handoff_hook_complete`).
pub struct handoff_hook_context {
    /// None once completed.
    pub(super) request: Option<Request>,
    /// Given to a callback, which completes it by returning.
    pub(super) callback: bool,
    pub(super) drained: DrainReport,
    pub(super) sealed: SealReport,
    pub(super) failure: Option<String>,
}

impl handoff_hook_context {
    pub(super) fn empty() -> handoff_hook_context {
        handoff_hook_context {
            request: None,
            callback: false,
            drained: DrainReport::default(),
            sealed: SealReport::default(),
            failure: None,
        }
    }

    /// Take `request` in, with fresh reports (a drain closes accepting by
    /// default). A request still held is dropped, which fails it.
    pub(super) fn load(&mut self, request: Request, callback: bool) {
        *self = handoff_hook_context {
            request: Some(request),
            callback,
            drained: DrainReport {
                accept_closed: true,
                ..DrainReport::default()
            },
            ..handoff_hook_context::empty()
        };
    }

    pub(super) fn pending(&self) -> bool {
        self.request.is_some()
    }

    fn request_of(&self, kind: RequestKind, what: &str) -> Result<&Request, Failure> {
        match &self.request {
            None => Err(wrong_state("the request was already completed")),
            Some(r) if r.kind() == kind => Ok(r),
            Some(r) => Err(wrong_state(format!(
                "{what} is for a {kind:?} request, not a {:?}",
                r.kind()
            ))),
        }
    }

    /// Complete the request with `status` (0: done; anything else: failed,
    /// with the reason given to `handoff_hook_fail` if any).
    pub(super) fn complete(&mut self, status: i32, name: &str) -> Result<(), Failure> {
        let request = self
            .request
            .take()
            .ok_or_else(|| wrong_state("the request was already completed"))?;
        let failure = match (status, self.failure.take()) {
            (0, None) => None,
            (_, Some(reason)) => Some(reason),
            (status, None) => Some(format!("{name} returned status {status}")),
        };
        if let Some(reason) = failure {
            request.fail(reason);
            return Ok(());
        }
        match request.kind() {
            RequestKind::Drain => request.complete_drain(Ok(self.drained.clone())),
            RequestKind::Seal => request.complete_seal(Ok(std::mem::take(&mut self.sealed))),
            RequestKind::Resume => request.complete_resume(Ok(())),
            RequestKind::Ended(_) => {}
        }
        Ok(())
    }
}

fn wrong_state(message: impl Into<String>) -> Failure {
    Failure::new(handoff_status::HANDOFF_ERR_WRONG_STATE, message)
}

pub(super) fn kind_code(kind: RequestKind) -> u32 {
    match kind {
        RequestKind::Drain => HANDOFF_REQUEST_DRAIN,
        RequestKind::Seal => HANDOFF_REQUEST_SEAL,
        RequestKind::Resume => HANDOFF_REQUEST_RESUME,
        RequestKind::Ended(_) => HANDOFF_REQUEST_ENDED,
    }
}

/// Milliseconds left before a drain's or seal's deadline (0 when past it,
/// for NULL, and for other requests).
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_time_left_ms(ctx: *const handoff_hook_context) -> u64 {
    // SAFETY: NULL or a live context (header contract).
    unsafe { ctx.as_ref() }
        .and_then(|c| c.request.as_ref())
        .and_then(|r| r.deadline())
        .map_or(0, |d| {
            d.saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64
        })
}

/// For a drain: what is left open and whether accepting stopped (defaults:
/// 0 and true). Another request: `HANDOFF_ERR_WRONG_STATE`.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_set_drained(
    ctx: *mut handoff_hook_context,
    open_conns_remaining: u32,
    accept_closed: bool,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live context (header contract).
        let ctx = unsafe { arg_mut(ctx, "ctx") }?;
        ctx.request_of(RequestKind::Drain, "handoff_hook_set_drained")?;
        ctx.drained.open_conns_remaining = open_conns_remaining;
        ctx.drained.accept_closed = accept_closed;
        Ok(())
    })
}

/// For a drain: whether it moves descriptors (protocol v2, both peers
/// speak it and the service asked with
/// `handoff_incumbent_set_moves_descriptors`). Then hand over every
/// connection the service keeps with `handoff_hook_move` instead of closing
/// it; otherwise close them, as without protocol v2. False for NULL and
/// other requests.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_moves(ctx: *const handoff_hook_context) -> bool {
    // SAFETY: NULL or a live context (header contract).
    drain_moves(unsafe { ctx.as_ref() }).is_some()
}

/// For a drain that moves: how many descriptors the successor can hold (it
/// may be 0). Moving more is not refused here: the supervisor then aborts
/// the handoff naming the successor's limit before anything moves, and the
/// service keeps every connection. 0 for NULL, other requests and a drain
/// that moves nothing.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_move_limit(ctx: *const handoff_hook_context) -> u32 {
    // SAFETY: NULL or a live context (header contract).
    drain_moves(unsafe { ctx.as_ref() }).unwrap_or(0)
}

/// A drain's move limit when it moves descriptors.
fn drain_moves(ctx: Option<&handoff_hook_context>) -> Option<u32> {
    ctx.and_then(|c| c.request.as_ref())
        .filter(|r| r.kind() == RequestKind::Drain)
        .and_then(Request::moves)
}

/// For a drain that moves (`handoff_hook_moves`): hand `fd` to the
/// successor as an item of `kind` (`HANDOFF_ITEM_*`) named `name` (UTF-8,
/// at most 255 bytes), with the bytes read and not processed (`unread`),
/// produced and not written (`unwritten`) and the service's own `state`
/// (together at most 1,048,000 bytes; each pointer may be NULL when its
/// length is 0). Copied; the descriptor is not. The service keeps `fd`
/// open and neither reads nor writes it until the outcome: on
/// `HANDOFF_REQUEST_ENDED` (committed) it closes it, never `shutdown`; on
/// `HANDOFF_REQUEST_RESUME` it is the service's again (its file status
/// flags restored) and the service carries on from the state it kept.
/// Refused (nothing recorded): `HANDOFF_ERR_WRONG_STATE` when this drain
/// moves nothing, `HANDOFF_ERR_INVALID_ARGUMENT` for a bad kind, name, size
/// or descriptor. More than the limit rolls the handoff back before
/// anything moves (the supervisor names the successor's limit).
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_move(
    ctx: *mut handoff_hook_context,
    kind: u32,
    name: *const c_char,
    fd: std::ffi::c_int,
    unread: *const u8,
    unread_len: usize,
    unwritten: *const u8,
    unwritten_len: usize,
    state: *const u8,
    state_len: usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live context, a NUL-terminated name and readable bytes
        // of the lengths given (header contract).
        let (ctx, unread, unwritten, state) = unsafe {
            (
                arg_mut(ctx, "ctx")?,
                arg_bytes(unread, unread_len, "unread")?,
                arg_bytes(unwritten, unwritten_len, "unwritten")?,
                arg_bytes(state, state_len, "state")?,
            )
        };
        if name.is_null() {
            return Err(Failure::invalid("name is NULL"));
        }
        // SAFETY: non-NULL and NUL-terminated by contract.
        let name = unsafe { CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| Failure::invalid("name is not UTF-8"))?;
        let kind = ItemKind::from_index(kind)
            .ok_or_else(|| Failure::invalid(format!("unknown item kind {kind} (0 or 1)")))?;
        if fd < 0 {
            return Err(Failure::invalid(format!("descriptor {fd}")));
        }
        check_item(name, unread, unwritten, state).map_err(Failure::invalid)?;
        // More than the limit is recorded: the supervisor then aborts the
        // handoff naming the successor's limit, before anything moves.
        if ctx
            .request_of(RequestKind::Drain, "handoff_hook_move")?
            .moves()
            .is_none()
        {
            return Err(wrong_state(
                "this handoff moves no descriptors (close the connection instead)",
            ));
        }
        ctx.drained.moved.push(MovedItem {
            kind,
            name: name.to_string(),
            fd,
            unread: unread.to_vec(),
            unwritten: unwritten.to_vec(),
            state: state.to_vec(),
        });
        Ok(())
    })
}

/// For a seal: append the last revision of the next shard.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_push_revision(
    ctx: *mut handoff_hook_context,
    revision: u64,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live context (header contract).
        let ctx = unsafe { arg_mut(ctx, "ctx") }?;
        ctx.request_of(RequestKind::Seal, "handoff_hook_push_revision")?;
        ctx.sealed.last_revision_per_shard.push(revision);
        Ok(())
    })
}

/// For a seal: the 32-byte fingerprint of the sealed data directory.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_set_fingerprint(
    ctx: *mut handoff_hook_context,
    fingerprint: *const u8,
    len: usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live context and `len` readable bytes.
        let (ctx, bytes) = unsafe {
            (
                arg_mut(ctx, "ctx")?,
                arg_bytes(fingerprint, len, "fingerprint")?,
            )
        };
        ctx.request_of(RequestKind::Seal, "handoff_hook_set_fingerprint")?;
        ctx.sealed.data_dir_fingerprint = bytes.try_into().map_err(|_| {
            Failure::invalid(format!("a fingerprint takes exactly 32 bytes, not {len}"))
        })?;
        Ok(())
    })
}

/// For a seal: report progress of a long seal to the supervisor (sent at
/// once, from any loop iteration before the seal completes).
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_seal_progress(
    ctx: *mut handoff_hook_context,
    shards_sealed: u32,
    shards_total: u32,
    last_revision: u64,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live context (header contract).
        let ctx = unsafe { arg_mut(ctx, "ctx") }?;
        ctx.request_of(RequestKind::Seal, "handoff_hook_seal_progress")?
            .seal_progress(shards_sealed, shards_total, last_revision)?;
        Ok(())
    })
}

/// Give the reason for the failure about to be reported (a NUL-terminated
/// string, copied; NULL: "unspecified failure"). The supervisor sees it in
/// SealFailed or Aborted.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_fail(
    ctx: *mut handoff_hook_context,
    reason: *const c_char,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live context (header contract).
        let ctx = unsafe { arg_mut(ctx, "ctx") }?;
        if !ctx.pending() {
            return Err(wrong_state("the request was already completed"));
        }
        let reason = if reason.is_null() {
            "unspecified failure".to_string()
        } else {
            // SAFETY: non-NULL and NUL-terminated by contract.
            unsafe { CStr::from_ptr(reason) }
                .to_string_lossy()
                .into_owned()
        };
        ctx.failure = Some(reason);
        Ok(())
    })
}

/// Complete a request taken with `handoff_incumbent_take_request`, once:
/// `status` `HANDOFF_OK` (0) reports the drain, seal or resume done with
/// what the setters filled in; anything else fails it (reason from
/// `handoff_hook_fail`). From any thread, but like the setters not while
/// another thread calls into the same incumbent (the contexts are its
/// own: `take_request` and `stop` use them). Completed already:
/// `HANDOFF_ERR_WRONG_STATE`; a callback's context: `HANDOFF_ERR_WRONG_STATE`
/// (a callback completes its request by returning). The context stays
/// valid, empty, until the incumbent is freed.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_complete(
    ctx: *mut handoff_hook_context,
    status: i32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live context (header contract).
        let ctx = unsafe { arg_mut(ctx, "ctx") }?;
        if ctx.callback {
            return Err(wrong_state(
                "a callback completes its request by returning, not with handoff_hook_complete",
            ));
        }
        ctx.complete(status, "the request")
    })
}
