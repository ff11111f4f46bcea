//! The supervisor through the C ABI.

use std::ffi::{c_char, CStr, CString, OsStr};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use super::args::{arg_mut, arg_path, arg_ref, Out};
use super::{boundary, handoff_error, handoff_status, Failure};
use crate::supervisor::{
    Abort, Cause, HandoffPhase, Outcome, Party, SpawnSpec, Supervisor, Timeouts,
};

/// What to run for a generation and its budgets. Owned by the caller
/// (`handoff_spawn_spec_free`); not synchronised.
pub struct handoff_spawn_spec {
    inner: SpawnSpec,
}

/// A supervisor. Created by `handoff_supervisor_new`, freed by
/// `handoff_supervisor_free`. Configure it from one thread; once
/// configured, `handoff_supervisor_perform_handoff` may be called from any
/// thread, and a second call while one runs answers
/// `HANDOFF_ERR_HANDOFF_IN_PROGRESS` at once.
pub struct handoff_supervisor {
    inner: Supervisor,
}

/// Per-phase durations of a handoff, in microseconds.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct handoff_phase_timings {
    /// Connect to the incumbent and exchange Hello.
    pub hello_us: u64,
    /// Spawn the successor and exchange its Hello.
    pub spawn_us: u64,
    /// PrepareHandoff to Drained.
    pub drain_us: u64,
    /// SealRequest to SealComplete.
    pub seal_us: u64,
    /// Begin to Ready.
    pub ready_us: u64,
    /// Commit and journal clear.
    pub commit_us: u64,
    pub total_us: u64,
}

/// The result of a handoff. Owned by the caller (`handoff_outcome_free`);
/// immutable, so readable from any thread.
pub struct handoff_outcome {
    inner: Outcome,
    abort_reason: Option<CString>,
}

unsafe fn arg_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a OsStr, Failure> {
    // SAFETY: forwarded contract: NUL-terminated.
    Ok(unsafe { arg_path(ptr, name) }?.as_os_str())
}

/// A spec that runs `binary` (a path, or a name looked up in PATH) with no
/// arguments, a 60 s deadline and a 25 s drain budget.
#[no_mangle]
pub unsafe extern "C" fn handoff_spawn_spec_new(
    binary: *const c_char,
    out: *mut *mut handoff_spawn_spec,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: NUL-terminated.
        let binary = unsafe { arg_str(binary, "binary") }?;
        let out = Out::new(out, "out")?;
        out.write(Box::into_raw(Box::new(handoff_spawn_spec {
            inner: SpawnSpec::new(binary),
        })));
        Ok(())
    })
}

/// Append an argument (copied).
#[no_mangle]
pub unsafe extern "C" fn handoff_spawn_spec_add_arg(
    spec: *mut handoff_spawn_spec,
    arg: *const c_char,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live spec.
        let spec = unsafe { arg_mut(spec, "spec") }?;
        if arg.is_null() {
            return Err(Failure::new(
                handoff_status::HANDOFF_ERR_NULL_POINTER,
                "arg must not be NULL",
            ));
        }
        // SAFETY: non-NULL, NUL-terminated by contract.
        let arg = OsStr::from_bytes(unsafe { CStr::from_ptr(arg) }.to_bytes());
        spec.inner.command.args.push(arg.to_owned());
        Ok(())
    })
}

/// Set an environment variable for the child (copied), on top of the
/// supervisor's own environment.
#[no_mangle]
pub unsafe extern "C" fn handoff_spawn_spec_set_env(
    spec: *mut handoff_spawn_spec,
    key: *const c_char,
    value: *const c_char,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live spec and NUL-terminated strings.
        let (spec, key) = unsafe { (arg_mut(spec, "spec")?, arg_str(key, "key")?) };
        if key.as_bytes().contains(&b'=') {
            return Err(Failure::invalid(
                "an environment variable name cannot contain '='",
            ));
        }
        if value.is_null() {
            return Err(Failure::new(
                handoff_status::HANDOFF_ERR_NULL_POINTER,
                "value must not be NULL",
            ));
        }
        // SAFETY: non-NULL, NUL-terminated by contract.
        let value = OsStr::from_bytes(unsafe { CStr::from_ptr(value) }.to_bytes());
        spec.inner
            .command
            .env
            .push((key.to_owned(), value.to_owned()));
        Ok(())
    })
}

/// The whole-handoff deadline and the incumbent's drain budget, in
/// milliseconds (both at least 1).
#[no_mangle]
pub unsafe extern "C" fn handoff_spawn_spec_set_budgets(
    spec: *mut handoff_spawn_spec,
    deadline_ms: u64,
    drain_grace_ms: u64,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live spec.
        let spec = unsafe { arg_mut(spec, "spec") }?;
        if deadline_ms == 0 || drain_grace_ms == 0 {
            return Err(Failure::invalid("budgets must be at least 1 ms"));
        }
        spec.inner.deadline = Duration::from_millis(deadline_ms);
        spec.inner.drain_grace = Duration::from_millis(drain_grace_ms);
        Ok(())
    })
}

/// Free a spec. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_spawn_spec_free(spec: *mut handoff_spawn_spec) {
    if !spec.is_null() {
        // SAFETY: from Box::into_raw here; the caller gives it up.
        drop(unsafe { Box::from_raw(spec) });
    }
}

/// A supervisor for the service whose incumbent serves `control_path`.
#[no_mangle]
pub unsafe extern "C" fn handoff_supervisor_new(
    control_path: *const c_char,
    out: *mut *mut handoff_supervisor,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: NUL-terminated.
        let path = unsafe { arg_path(control_path, "control_path") }?;
        let out = Out::new(out, "out")?;
        out.write(Box::into_raw(Box::new(handoff_supervisor {
            inner: Supervisor::new(path),
        })));
        Ok(())
    })
}

/// Hand the listening socket `fd` to every generation as `name`. The
/// supervisor keeps its own duplicate; the caller still owns `fd`.
#[no_mangle]
pub unsafe extern "C" fn handoff_supervisor_add_listener(
    supervisor: *mut handoff_supervisor,
    name: *const c_char,
    fd: i32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live supervisor and a NUL-terminated name.
        let (sup, name) = unsafe { (arg_mut(supervisor, "supervisor")?, arg_str(name, "name")?) };
        let name = name
            .to_str()
            .ok_or_else(|| Failure::invalid("a listener name must be UTF-8"))?;
        if fd < 0 {
            return Err(Failure::invalid(format!("{fd} is not a descriptor")));
        }
        // SAFETY: the caller promises `fd` is open for the call; we only dup it.
        let owned: OwnedFd = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| {
                Failure::new(
                    handoff_status::HANDOFF_ERR_IO,
                    format!("cannot duplicate fd {fd}: {e}"),
                )
            })?;
        sup.inner.add_listener(name, owned)?;
        Ok(())
    })
}

/// Record each step of a handoff in the journal at `path` (conventionally
/// `/var/lib/handoff/<service>/state.bin`).
#[no_mangle]
pub unsafe extern "C" fn handoff_supervisor_set_journal(
    supervisor: *mut handoff_supervisor,
    path: *const c_char,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live supervisor and a NUL-terminated path.
        let (sup, path) = unsafe { (arg_mut(supervisor, "supervisor")?, arg_path(path, "path")?) };
        sup.inner.set_journal(path);
        Ok(())
    })
}

/// Timeouts in milliseconds; 0 keeps the default (liveness 10000, hello
/// 5000, kill grace 2000).
#[no_mangle]
pub unsafe extern "C" fn handoff_supervisor_set_timeouts(
    supervisor: *mut handoff_supervisor,
    liveness_ms: u32,
    hello_ms: u32,
    kill_grace_ms: u32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live supervisor.
        let sup = unsafe { arg_mut(supervisor, "supervisor") }?;
        let defaults = Timeouts::default();
        let pick = |ms: u32, default: Duration| {
            if ms == 0 {
                default
            } else {
                Duration::from_millis(ms.into())
            }
        };
        let timeouts = Timeouts {
            liveness: pick(liveness_ms, defaults.liveness),
            hello: pick(hello_ms, defaults.hello),
            kill_grace: pick(kill_grace_ms, defaults.kill_grace),
            ..defaults
        };
        sup.inner.set_timeouts(timeouts);
        Ok(())
    })
}

/// Start the first generation of the service (a cold start, with the
/// listeners) and give its pid. The child is the caller's to wait for.
#[no_mangle]
pub unsafe extern "C" fn handoff_supervisor_spawn_cold(
    supervisor: *const handoff_supervisor,
    spec: *const handoff_spawn_spec,
    pid: *mut u32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live supervisor and spec.
        let (sup, spec) = unsafe { (arg_ref(supervisor, "supervisor")?, arg_ref(spec, "spec")?) };
        let pid = Out::new(pid, "pid")?;
        let child = sup.inner.spawn_cold(&spec.inner.command)?;
        pid.write(child.pid());
        Ok(())
    })
}

/// Hand the service off to a new process run from `spec`. A rollback is a
/// success with `handoff_outcome_committed()` false; a failure status means
/// the handoff never started (no incumbent answering: a control socket
/// that refuses or is missing is retried for up to 1 s; one already
/// running: `HANDOFF_ERR_HANDOFF_IN_PROGRESS` at once). On commit the
/// successor is the caller's child to wait for.
#[no_mangle]
pub unsafe extern "C" fn handoff_supervisor_perform_handoff(
    supervisor: *const handoff_supervisor,
    spec: *const handoff_spawn_spec,
    out: *mut *mut handoff_outcome,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live supervisor and spec.
        let (sup, spec) = unsafe { (arg_ref(supervisor, "supervisor")?, arg_ref(spec, "spec")?) };
        let out = Out::new(out, "out")?;
        let outcome = sup.inner.perform_handoff(&spec.inner)?;
        let abort_reason = outcome
            .abort_reason
            .as_deref()
            .map(|r| CString::new(r.replace('\0', "\\0")).expect("NULs replaced"));
        out.write(Box::into_raw(Box::new(handoff_outcome {
            inner: outcome,
            abort_reason,
        })));
        Ok(())
    })
}

/// Cancel the handoff that `handoff_supervisor_perform_handoff` runs on
/// another thread: it rolls back at once (the incumbent resumes, the
/// successor is stopped) and its outcome says `HANDOFF_CAUSE_CANCELLED`.
/// Any thread; a no-op when no handoff runs, or for NULL.
#[no_mangle]
pub unsafe extern "C" fn handoff_supervisor_cancel(supervisor: *const handoff_supervisor) {
    // SAFETY: NULL or a live supervisor; cancel takes `&self` and is Sync.
    if let Some(sup) = unsafe { supervisor.as_ref() } {
        let _ = std::panic::catch_unwind(|| sup.inner.cancel());
    }
}

/// After a supervisor restart: finish or roll back a handoff the journal
/// shows in flight, then clear the journal. `*recovered` says whether there
/// was one; `*committed` whether its successor had become the incumbent.
#[no_mangle]
pub unsafe extern "C" fn handoff_supervisor_resume_from_journal(
    supervisor: *const handoff_supervisor,
    recovered: *mut bool,
    committed: *mut bool,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live supervisor.
        let sup = unsafe { arg_ref(supervisor, "supervisor") }?;
        let (recovered, committed) = (
            Out::new(recovered, "recovered")?,
            Out::new(committed, "committed")?,
        );
        let recovery = sup.inner.resume_from_journal()?;
        committed.write(recovery.as_ref().is_some_and(|r| r.committed));
        recovered.write(recovery.is_some());
        Ok(())
    })
}

/// Free a supervisor (closing its listener duplicates). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_supervisor_free(supervisor: *mut handoff_supervisor) {
    if !supervisor.is_null() {
        // SAFETY: from Box::into_raw here; the caller gives it up.
        drop(unsafe { Box::from_raw(supervisor) });
    }
}

/// Whether the handoff committed; false for NULL.
#[no_mangle]
pub unsafe extern "C" fn handoff_outcome_committed(outcome: *const handoff_outcome) -> bool {
    // SAFETY: NULL or a live outcome.
    unsafe { outcome.as_ref() }.is_some_and(|o| o.inner.committed)
}

/// Why it rolled back (owned by the outcome), or NULL if it committed.
#[no_mangle]
pub unsafe extern "C" fn handoff_outcome_abort_reason(
    outcome: *const handoff_outcome,
) -> *const c_char {
    // SAFETY: NULL or a live outcome.
    unsafe { outcome.as_ref() }
        .and_then(|o| o.abort_reason.as_ref())
        .map_or(std::ptr::null(), |r| r.as_ptr())
}

/// The step a rolled-back handoff was in: `HANDOFF_STEP_HELLO` ..
/// `HANDOFF_STEP_COMMIT`; `HANDOFF_STEP_NONE` (0) if it committed or for NULL.
#[no_mangle]
pub unsafe extern "C" fn handoff_outcome_abort_step(outcome: *const handoff_outcome) -> u32 {
    abort_of(outcome).map_or(HANDOFF_STEP_NONE, |a| step_code(a.phase))
}

/// Who caused a rollback: `HANDOFF_PARTY_INCUMBENT`, `_SUCCESSOR` or
/// `_SUPERVISOR`; `HANDOFF_PARTY_NONE` (0) if it committed or for NULL.
#[no_mangle]
pub unsafe extern "C" fn handoff_outcome_abort_party(outcome: *const handoff_outcome) -> u32 {
    abort_of(outcome).map_or(HANDOFF_PARTY_NONE, |a| match a.party {
        Party::Incumbent => HANDOFF_PARTY_INCUMBENT,
        Party::Successor => HANDOFF_PARTY_SUCCESSOR,
        Party::Supervisor => HANDOFF_PARTY_SUPERVISOR,
    })
}

/// What caused a rollback, one of `HANDOFF_CAUSE_*`; `HANDOFF_CAUSE_NONE`
/// (0) if it committed or for NULL. New causes may be added: treat an
/// unknown value like `HANDOFF_CAUSE_NONE` plus the reason's text.
#[no_mangle]
pub unsafe extern "C" fn handoff_outcome_abort_cause(outcome: *const handoff_outcome) -> u32 {
    abort_of(outcome).map_or(HANDOFF_CAUSE_NONE, |a| cause_code(a.cause))
}

fn abort_of<'a>(outcome: *const handoff_outcome) -> Option<&'a Abort> {
    // SAFETY: NULL or a live outcome (the caller's contract).
    unsafe { outcome.as_ref() }.and_then(|o| o.inner.abort.as_ref())
}

pub const HANDOFF_STEP_NONE: u32 = 0;
pub const HANDOFF_STEP_HELLO: u32 = 1;
pub const HANDOFF_STEP_SPAWN: u32 = 2;
pub const HANDOFF_STEP_DRAIN: u32 = 3;
pub const HANDOFF_STEP_SEAL: u32 = 4;
pub const HANDOFF_STEP_READY: u32 = 5;
pub const HANDOFF_STEP_COMMIT: u32 = 6;

pub const HANDOFF_PARTY_NONE: u32 = 0;
pub const HANDOFF_PARTY_INCUMBENT: u32 = 1;
pub const HANDOFF_PARTY_SUCCESSOR: u32 = 2;
pub const HANDOFF_PARTY_SUPERVISOR: u32 = 3;

pub const HANDOFF_CAUSE_NONE: u32 = 0;
/// The successor could not be started.
pub const HANDOFF_CAUSE_SPAWN: u32 = 1;
/// The party's process exited or was killed.
pub const HANDOFF_CAUSE_EXITED: u32 = 2;
/// It closed its control connection.
pub const HANDOFF_CAUSE_CLOSED: u32 = 3;
/// No frame from it for the liveness timeout.
pub const HANDOFF_CAUSE_SILENT: u32 = 4;
/// A phase's budget or the handoff's deadline passed.
pub const HANDOFF_CAUSE_DEADLINE: u32 = 5;
/// The incumbent's seal failed; it kept its lock and serves on.
pub const HANDOFF_CAUSE_SEAL_FAILED: u32 = 6;
/// A message that breaks the protocol, or a peer that is not who it says.
pub const HANDOFF_CAUSE_PROTOCOL: u32 = 7;
/// Reading or writing a control connection failed.
pub const HANDOFF_CAUSE_IO: u32 = 8;
/// The supervisor could not write its journal.
pub const HANDOFF_CAUSE_JOURNAL: u32 = 9;
/// `handoff_supervisor_cancel`.
pub const HANDOFF_CAUSE_CANCELLED: u32 = 10;
/// More descriptors would move than the successor can hold (protocol v2).
pub const HANDOFF_CAUSE_LIMIT: u32 = 11;

fn step_code(phase: HandoffPhase) -> u32 {
    match phase {
        HandoffPhase::Hello => HANDOFF_STEP_HELLO,
        HandoffPhase::Spawn => HANDOFF_STEP_SPAWN,
        HandoffPhase::Drain => HANDOFF_STEP_DRAIN,
        HandoffPhase::Seal => HANDOFF_STEP_SEAL,
        HandoffPhase::Ready => HANDOFF_STEP_READY,
        HandoffPhase::Commit => HANDOFF_STEP_COMMIT,
    }
}

fn cause_code(cause: Cause) -> u32 {
    match cause {
        Cause::Spawn => HANDOFF_CAUSE_SPAWN,
        Cause::Exited => HANDOFF_CAUSE_EXITED,
        Cause::Closed => HANDOFF_CAUSE_CLOSED,
        Cause::Silent => HANDOFF_CAUSE_SILENT,
        Cause::Deadline => HANDOFF_CAUSE_DEADLINE,
        Cause::SealFailed => HANDOFF_CAUSE_SEAL_FAILED,
        Cause::Protocol => HANDOFF_CAUSE_PROTOCOL,
        Cause::Io => HANDOFF_CAUSE_IO,
        Cause::Journal => HANDOFF_CAUSE_JOURNAL,
        Cause::Cancelled => HANDOFF_CAUSE_CANCELLED,
        Cause::Limit => HANDOFF_CAUSE_LIMIT,
    }
}

/// The new incumbent's pid when committed, else 0.
#[no_mangle]
pub unsafe extern "C" fn handoff_outcome_successor_pid(outcome: *const handoff_outcome) -> u32 {
    // SAFETY: NULL or a live outcome.
    unsafe { outcome.as_ref() }
        .and_then(|o| o.inner.successor.as_ref())
        .map_or(0, |c| c.pid())
}

/// The pid of the incumbent the handoff started from (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn handoff_outcome_incumbent_pid(outcome: *const handoff_outcome) -> u32 {
    // SAFETY: NULL or a live outcome.
    unsafe { outcome.as_ref() }.map_or(0, |o| o.inner.incumbent_pid)
}

/// Copy the handoff id into `id` (16 bytes).
#[no_mangle]
pub unsafe extern "C" fn handoff_outcome_handoff_id(
    outcome: *const handoff_outcome,
    id: *mut u8,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live outcome.
        let outcome = unsafe { arg_ref(outcome, "outcome") }?;
        if id.is_null() {
            return Err(Failure::new(
                handoff_status::HANDOFF_ERR_NULL_POINTER,
                "id must not be NULL",
            ));
        }
        // SAFETY: `id` has room for 16 bytes by contract.
        unsafe {
            std::ptr::copy_nonoverlapping(outcome.inner.handoff_id.as_bytes().as_ptr(), id, 16)
        };
        Ok(())
    })
}

/// The per-phase timings.
#[no_mangle]
pub unsafe extern "C" fn handoff_outcome_timings(
    outcome: *const handoff_outcome,
    timings: *mut handoff_phase_timings,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live outcome.
        let outcome = unsafe { arg_ref(outcome, "outcome") }?;
        let t = outcome.inner.timings;
        let us = |d: Duration| d.as_micros() as u64;
        Out::new(timings, "timings")?.write(handoff_phase_timings {
            hello_us: us(t.hello),
            spawn_us: us(t.spawn),
            drain_us: us(t.drain),
            seal_us: us(t.seal),
            ready_us: us(t.ready),
            commit_us: us(t.commit),
            total_us: us(t.total),
        });
        Ok(())
    })
}

/// Free an outcome. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_outcome_free(outcome: *mut handoff_outcome) {
    if !outcome.is_null() {
        // SAFETY: from Box::into_raw here; the caller gives it up.
        drop(unsafe { Box::from_raw(outcome) });
    }
}
