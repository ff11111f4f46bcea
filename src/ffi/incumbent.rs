//! The incumbent through the C ABI: bind the control socket, then serve it
//! on a thread of the library's, calling the service's callbacks.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::args::{arg_bytes, arg_mut, arg_path, arg_ref, Out};
use super::log::SendPtr;
use super::{boundary, handoff_error, handoff_lock, handoff_status, Failure};
use crate::incumbent::{ControlSocket, Incumbent, IncumbentConfig, ServeOutcome, StopHandle};
use crate::service::{DrainReport, HookContext, HookError, SealReport, Service};
use crate::Error;

pub const HANDOFF_SERVE_COMMITTED: u32 = 1;
pub const HANDOFF_SERVE_SUPERSEDED: u32 = 2;
pub const HANDOFF_SERVE_STOPPED: u32 = 3;

/// A hook's view of the handoff, valid only during the callback that
/// received it; the callback fills in its report through it.
pub struct handoff_hook_context {
    deadline: std::time::Instant,
    sender: crate::channel::Sender,
    drained: DrainReport,
    sealed: SealReport,
    failure: Option<String>,
}

/// A service callback: return `HANDOFF_OK` on success, anything else for a
/// failure (give the reason with `handoff_hook_fail`). `ctx` is NULL for
/// `resume_after_abort`.
pub type handoff_hook_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, ctx: *mut handoff_hook_context) -> i32>;

/// The service's side of a handoff. `drain`, `seal` and
/// `resume_after_abort` are required and are called one at a time on the
/// incumbent's serve thread; `destroy` (optional) is called once with
/// `userdata` when the library no longer needs it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct handoff_service_callbacks {
    pub drain: handoff_hook_fn,
    pub seal: handoff_hook_fn,
    pub resume_after_abort: handoff_hook_fn,
    pub destroy: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
}

struct CallbackService {
    callbacks: handoff_service_callbacks,
    userdata: SendPtr,
}

impl Drop for CallbackService {
    fn drop(&mut self) {
        if let Some(destroy) = self.callbacks.destroy {
            // SAFETY: the caller's destructor for its own userdata, called once.
            unsafe { destroy(self.userdata.get()) };
        }
    }
}

impl CallbackService {
    fn call(
        &self,
        name: &str,
        hook: handoff_hook_fn,
        ctx: Option<&mut handoff_hook_context>,
    ) -> Result<(), HookError> {
        let hook = hook.expect("checked in handoff_incumbent_start");
        let ctx_ptr = ctx.map_or(std::ptr::null_mut(), |c| c as *mut handoff_hook_context);
        // SAFETY: the caller's callback, with its userdata and a context
        // that outlives the call.
        let status = unsafe { hook(self.userdata.get(), ctx_ptr) };
        // SAFETY: `ctx_ptr` is NULL or the live context passed above.
        let failure = unsafe { ctx_ptr.as_mut() }.and_then(|c| c.failure.take());
        match (status, failure) {
            (0, None) => Ok(()),
            (_, Some(reason)) => Err(HookError(reason)),
            (status, None) => Err(HookError(format!(
                "{name} callback returned status {status}"
            ))),
        }
    }

    fn context(ctx: &HookContext<'_>) -> handoff_hook_context {
        handoff_hook_context {
            deadline: ctx.deadline,
            sender: ctx.sender.clone(),
            drained: DrainReport::default(),
            sealed: SealReport::default(),
            failure: None,
        }
    }
}

impl Service for CallbackService {
    fn drain(&self, ctx: &HookContext<'_>) -> Result<DrainReport, HookError> {
        let mut c = Self::context(ctx);
        c.drained.accept_closed = true;
        self.call("drain", self.callbacks.drain, Some(&mut c))?;
        Ok(c.drained)
    }

    fn seal(&self, ctx: &HookContext<'_>) -> Result<SealReport, HookError> {
        let mut c = Self::context(ctx);
        self.call("seal", self.callbacks.seal, Some(&mut c))?;
        Ok(c.sealed)
    }

    fn resume_after_abort(&self) -> Result<(), HookError> {
        self.call(
            "resume_after_abort",
            self.callbacks.resume_after_abort,
            None,
        )
    }
}

/// Milliseconds left before the hook's deadline (0 when past it).
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_time_left_ms(ctx: *const handoff_hook_context) -> u64 {
    // SAFETY: NULL or the live context of the running callback.
    unsafe { ctx.as_ref() }.map_or(0, |c| {
        c.deadline
            .saturating_duration_since(std::time::Instant::now())
            .as_millis() as u64
    })
}

/// From `drain`: what is left open and whether accepting stopped (defaults:
/// 0 and true).
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_set_drained(
    ctx: *mut handoff_hook_context,
    open_conns_remaining: u32,
    accept_closed: bool,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: the live context of the running callback.
        let ctx = unsafe { arg_mut(ctx, "ctx") }?;
        ctx.drained = DrainReport {
            open_conns_remaining,
            accept_closed,
        };
        Ok(())
    })
}

/// From `seal`: append the last revision of the next shard.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_push_revision(
    ctx: *mut handoff_hook_context,
    revision: u64,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: the live context of the running callback.
        unsafe { arg_mut(ctx, "ctx") }?
            .sealed
            .last_revision_per_shard
            .push(revision);
        Ok(())
    })
}

/// From `seal`: the 32-byte fingerprint of the sealed data directory.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_set_fingerprint(
    ctx: *mut handoff_hook_context,
    fingerprint: *const u8,
    len: usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: the live context and `len` readable bytes.
        let (ctx, bytes) = unsafe {
            (
                arg_mut(ctx, "ctx")?,
                arg_bytes(fingerprint, len, "fingerprint")?,
            )
        };
        ctx.sealed.data_dir_fingerprint = bytes.try_into().map_err(|_| {
            Failure::invalid(format!("a fingerprint takes exactly 32 bytes, not {len}"))
        })?;
        Ok(())
    })
}

/// From `seal`: report progress of a long seal to the supervisor.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_seal_progress(
    ctx: *mut handoff_hook_context,
    shards_sealed: u32,
    shards_total: u32,
    last_revision: u64,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: the live context of the running callback.
        let ctx = unsafe { arg_mut(ctx, "ctx") }?;
        let hook = HookContext {
            deadline: ctx.deadline,
            sender: &ctx.sender,
        };
        hook.seal_progress(shards_sealed, shards_total, last_revision)?;
        Ok(())
    })
}

/// Give the reason for the failure the callback is about to return (a
/// NUL-terminated string, copied). The supervisor sees it in SealFailed.
#[no_mangle]
pub unsafe extern "C" fn handoff_hook_fail(
    ctx: *mut handoff_hook_context,
    reason: *const c_char,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: the live context of the running callback.
        let ctx = unsafe { arg_mut(ctx, "ctx") }?;
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

enum State {
    Bound(Box<Incumbent>),
    Serving {
        stop: StopHandle,
        done: mpsc::Receiver<Result<ServeOutcome, Failure>>,
        thread: JoinHandle<()>,
    },
    Finished(u32),
}

/// A process serving its control socket as the incumbent. Created by
/// `handoff_incumbent_bind` or `handoff_successor_announce_ready`, freed by
/// `handoff_incumbent_free`. The functions may be called from any thread,
/// one at a time.
pub struct handoff_incumbent {
    state: Option<State>,
    generation: Arc<AtomicU64>,
}

impl handoff_incumbent {
    pub(crate) fn boxed(incumbent: Incumbent) -> *mut handoff_incumbent {
        Box::into_raw(Box::new(handoff_incumbent {
            generation: incumbent.generation_handle(),
            state: Some(State::Bound(Box::new(incumbent))),
        }))
    }

    fn bound(&mut self) -> Result<&mut Incumbent, Failure> {
        match &mut self.state {
            Some(State::Bound(incumbent)) => Ok(incumbent),
            _ => Err(Failure::new(
                handoff_status::HANDOFF_ERR_WRONG_STATE,
                "the incumbent is already serving",
            )),
        }
    }
}

/// Cold start: bind the control socket at `control_path` (mode 0600,
/// replacing a stale one) for the holder of `lock`. On success the lock
/// moves into the incumbent (the `lock` handle is left empty; still free
/// it); on failure the caller keeps it.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_bind(
    control_path: *const c_char,
    lock: *mut handoff_lock,
    out: *mut *mut handoff_incumbent,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a NUL-terminated path and a live lock handle.
        let (path, lock) = unsafe {
            (
                arg_path(control_path, "control_path")?,
                arg_mut(lock, "lock")?,
            )
        };
        let out = Out::new(out, "out")?;
        lock.check_held()?;
        let socket = ControlSocket::bind(path)?;
        let lock = lock.take()?;
        out.write(handoff_incumbent::boxed(Incumbent::with_control_socket(
            socket, lock,
        )));
        Ok(())
    })
}

/// The build id announced in Hello (copied). Before `handoff_incumbent_start`.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_set_build_id(
    incumbent: *mut handoff_incumbent,
    build_id: *const u8,
    len: usize,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live incumbent and `len` readable bytes.
        let (inc, bytes) = unsafe {
            (
                arg_mut(incumbent, "incumbent")?,
                arg_bytes(build_id, len, "build_id")?,
            )
        };
        inc.bound()?.set_build_id(bytes.to_vec());
        Ok(())
    })
}

/// How long the supervisor may stay silent before the incumbent treats it
/// as dead and rolls back (default 10000 ms; at least 1). Before
/// `handoff_incumbent_start`.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_set_liveness_timeout(
    incumbent: *mut handoff_incumbent,
    timeout_ms: u32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live incumbent.
        let bound = unsafe { arg_mut(incumbent, "incumbent") }?.bound()?;
        if timeout_ms == 0 {
            return Err(Failure::invalid(
                "the liveness timeout must be at least 1 ms",
            ));
        }
        let config = IncumbentConfig {
            liveness: Duration::from_millis(timeout_ms.into()),
            ..bound.config()
        };
        bound.set_config(config);
        Ok(())
    })
}

/// The lock generation of the current tenure: a fencing token to stamp
/// writes with. Safe to call from any thread while serving; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_generation(incumbent: *const handoff_incumbent) -> u64 {
    // SAFETY: NULL or a live incumbent.
    unsafe { incumbent.as_ref() }.map_or(0, |i| i.generation.load(Ordering::Relaxed))
}

/// Start serving the control socket on a thread of the library's, calling
/// `callbacks` with `userdata` (see `handoff_service_callbacks`). The
/// callbacks struct is copied. On failure `destroy` is not called.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_start(
    incumbent: *mut handoff_incumbent,
    callbacks: *const handoff_service_callbacks,
    userdata: *mut c_void,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live incumbent and a readable callbacks struct.
        let (inc, callbacks) = unsafe {
            (
                arg_mut(incumbent, "incumbent")?,
                *arg_ref(callbacks, "callbacks")?,
            )
        };
        inc.bound()?;
        if callbacks.drain.is_none()
            || callbacks.seal.is_none()
            || callbacks.resume_after_abort.is_none()
        {
            return Err(Failure::new(
                handoff_status::HANDOFF_ERR_NULL_POINTER,
                "drain, seal and resume_after_abort callbacks are required",
            ));
        }
        let stop = inc.bound()?.stop_handle()?;
        // The incumbent and the service reach the thread only once it runs:
        // when it cannot be spawned, the caller keeps a bound incumbent and
        // its userdata (`destroy` is not called, as documented).
        let (hand_over, handed) = mpsc::sync_channel::<Box<Incumbent>>(1);
        let (report, done) = mpsc::channel();
        let userdata = SendPtr(userdata);
        let thread = std::thread::Builder::new()
            .name("handoff-incumbent".into())
            .spawn(move || {
                let Ok(mut serving) = handed.recv() else {
                    return;
                };
                let service = CallbackService {
                    callbacks,
                    userdata,
                };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    serving.serve(&service).map_err(Failure::from)
                }))
                .unwrap_or_else(|_| {
                    Err(Failure::new(
                        handoff_status::HANDOFF_ERR_PANIC,
                        "internal error (panic) in the serve thread",
                    ))
                });
                drop(service);
                let _ = report.send(outcome);
            })
            .map_err(|e| {
                Failure::new(
                    handoff_status::HANDOFF_ERR_IO,
                    format!("cannot start the serve thread: {e}"),
                )
            })?;
        let Some(State::Bound(serving)) = inc.state.take() else {
            unreachable!("checked by bound()")
        };
        hand_over
            .send(serving)
            .expect("the serve thread waits for the incumbent");
        inc.state = Some(State::Serving { stop, done, thread });
        Ok(())
    })
}

fn outcome_code(outcome: ServeOutcome) -> u32 {
    match outcome {
        ServeOutcome::Committed => HANDOFF_SERVE_COMMITTED,
        ServeOutcome::Superseded => HANDOFF_SERVE_SUPERSEDED,
        ServeOutcome::Stopped => HANDOFF_SERVE_STOPPED,
    }
}

/// Wait up to `timeout_ms` (-1: forever) for serving to end, and say how:
/// `HANDOFF_SERVE_COMMITTED` (a successor took over: finish the remaining
/// reads and exit 0), `HANDOFF_SERVE_SUPERSEDED` (another process holds the
/// lock: exit without writing) or `HANDOFF_SERVE_STOPPED`. Still serving at
/// the timeout: `HANDOFF_ERR_TIMEOUT`.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_wait(
    incumbent: *mut handoff_incumbent,
    timeout_ms: i32,
    outcome: *mut u32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live incumbent.
        let inc = unsafe { arg_mut(incumbent, "incumbent") }?;
        let outcome = Out::new(outcome, "outcome")?;
        let code = match inc.state.take() {
            Some(State::Finished(code)) => code,
            Some(State::Serving { stop, done, thread }) => {
                let received = if timeout_ms < 0 {
                    done.recv()
                        .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                } else {
                    done.recv_timeout(Duration::from_millis(timeout_ms as u64))
                };
                match received {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        inc.state = Some(State::Serving { stop, done, thread });
                        return Err(Error::Timeout.into());
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = thread.join();
                        inc.state = Some(State::Finished(HANDOFF_SERVE_STOPPED));
                        return Err(Error::WrongState(
                            "the serve thread ended without an outcome".into(),
                        )
                        .into());
                    }
                    Ok(result) => {
                        let _ = thread.join();
                        match result {
                            Ok(o) => outcome_code(o),
                            Err(failure) => {
                                inc.state = Some(State::Finished(HANDOFF_SERVE_STOPPED));
                                return Err(failure);
                            }
                        }
                    }
                }
            }
            other => {
                inc.state = other;
                return Err(Failure::new(
                    handoff_status::HANDOFF_ERR_WRONG_STATE,
                    "the incumbent is not serving",
                ));
            }
        };
        inc.state = Some(State::Finished(code));
        outcome.write(code);
        Ok(())
    })
}

/// Stop serving (rolling back a handoff in progress) and wait for the serve
/// thread to end.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_stop(
    incumbent: *mut handoff_incumbent,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live incumbent.
        let inc = unsafe { arg_mut(incumbent, "incumbent") }?;
        stop(inc);
        Ok(())
    })
}

fn stop(inc: &mut handoff_incumbent) {
    if let Some(State::Serving { stop, done, thread }) = inc.state.take() {
        stop.stop();
        // Join first: the serve thread sends its outcome just before it
        // ends, so `try_recv` then finds it without blocking. A blocking
        // std channel receive on the caller's (C) thread would leave
        // per-thread runtime state there that is never freed (valgrind:
        // "possibly lost").
        let _ = thread.join();
        let code = done
            .try_recv()
            .ok()
            .and_then(|r| r.ok())
            .map_or(HANDOFF_SERVE_STOPPED, outcome_code);
        inc.state = Some(State::Finished(code));
    }
}

/// Stop serving if needed, close the control socket and free. NULL is a
/// no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_free(incumbent: *mut handoff_incumbent) {
    if incumbent.is_null() {
        return;
    }
    // SAFETY: from Box::into_raw in this library; the caller gives it up.
    let mut inc = unsafe { Box::from_raw(incumbent) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stop(&mut inc)));
}
