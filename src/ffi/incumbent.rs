//! The incumbent through the C ABI: bind the control socket, then serve it
//! on a thread of the library's, handing the work to the service's own loop
//! (`handoff_incumbent_start_loop`: a descriptor to poll and requests to
//! take) or to its callbacks (`handoff_incumbent_start`: a thread of the
//! library's that takes the same requests and calls them).

use std::cell::Cell;
use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_void};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::args::{arg_bytes, arg_mut, arg_path, arg_ref, Out};
use super::log::SendPtr;
use super::request::{handoff_hook_context, kind_code, HANDOFF_REQUEST_NONE};
use super::{boundary, handoff_error, handoff_lock, handoff_status, Failure};
use crate::incumbent::{
    ControlSocket, Finisher, Incumbent, IncumbentConfig, RequestKind, Requests, ServeOutcome,
};
use crate::Error;

pub const HANDOFF_SERVE_COMMITTED: u32 = 1;
pub const HANDOFF_SERVE_SUPERSEDED: u32 = 2;
pub const HANDOFF_SERVE_STOPPED: u32 = 3;

/// A service callback: return `HANDOFF_OK` on success, anything else for a
/// failure (give the reason with `handoff_hook_fail`). `ctx` is the request
/// (a resume's has no report to fill in). It must return (not unwind: a C++
/// exception or longjmp out of it is undefined behaviour).
pub type handoff_hook_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, ctx: *mut handoff_hook_context) -> i32>;

/// The service's side of a handoff. `drain`, `seal` and
/// `resume_after_abort` are required and are called one at a time on a
/// thread of the library's; `destroy` (optional) is called once with
/// `userdata` when the library no longer needs it. From inside a callback,
/// `handoff_incumbent_stop` and `handoff_incumbent_wait` answer
/// `HANDOFF_ERR_WRONG_STATE` (they would wait for the callback itself).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct handoff_service_callbacks {
    pub drain: handoff_hook_fn,
    pub seal: handoff_hook_fn,
    pub resume_after_abort: handoff_hook_fn,
    pub destroy: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
}

thread_local! {
    /// Set on the thread that calls the callbacks.
    static ON_HOOK_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn on_hook_thread() -> bool {
    ON_HOOK_THREAD.with(Cell::get)
}

fn refuse_on_hook_thread(what: &str) -> Result<(), Failure> {
    if on_hook_thread() {
        return Err(Failure::new(
            handoff_status::HANDOFF_ERR_WRONG_STATE,
            format!(
                "{what} cannot be called from a callback: it would wait for the callback itself"
            ),
        ));
    }
    Ok(())
}

struct Callbacks {
    callbacks: handoff_service_callbacks,
    userdata: SendPtr,
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        if let Some(destroy) = self.callbacks.destroy {
            // SAFETY: the caller's destructor for its own userdata, called once.
            unsafe { destroy(self.userdata.get()) };
        }
    }
}

impl Callbacks {
    /// Take requests and call the callbacks until serving ends: the loop a
    /// service without one of its own gets from the library.
    fn run(&self, requests: &Requests) {
        ON_HOOK_THREAD.with(|on| on.set(true));
        let mut ctx = handoff_hook_context::empty();
        while let Some(request) = requests.wait() {
            let (name, hook) = match request.kind() {
                RequestKind::Drain => ("drain", self.callbacks.drain),
                RequestKind::Seal => ("seal", self.callbacks.seal),
                RequestKind::Resume => ("resume_after_abort", self.callbacks.resume_after_abort),
                RequestKind::Ended(_) => return,
            };
            ctx.load(request, true);
            let hook = hook.expect("checked in handoff_incumbent_start");
            // SAFETY: the caller's callback, with its userdata and a context
            // that outlives the call.
            let status = unsafe { hook(self.userdata.get(), &mut ctx) };
            let _ = ctx.complete(status, &format!("the {name} callback"));
        }
    }
}

/// The contexts a service's loop takes requests into, one per kind (one of
/// each is outstanding at most): their addresses stay valid until the
/// incumbent is freed, so a request completed twice is refused, not a
/// use after free.
struct Slots([*mut handoff_hook_context; 3]);

impl Slots {
    fn new() -> Slots {
        Slots([(); 3].map(|()| Box::into_raw(Box::new(handoff_hook_context::empty()))))
    }

    fn for_kind(&self, kind: RequestKind) -> *mut handoff_hook_context {
        match kind {
            RequestKind::Drain => self.0[0],
            RequestKind::Seal => self.0[1],
            _ => self.0[2],
        }
    }

    /// Whether the service holds a request it has not completed.
    fn holding(&self) -> bool {
        // SAFETY: our own live boxes; the caller is not inside a setter (one
        // thread at a time, header contract).
        self.0.iter().any(|&c| unsafe { &*c }.pending())
    }

    /// Fail every request the service still holds.
    fn fail_all(&self) {
        for &c in &self.0 {
            // SAFETY: as in `holding`.
            let ctx = unsafe { &mut *c };
            if ctx.pending() {
                ctx.failure = Some("the incumbent is stopping".into());
                let _ = ctx.complete(1, "stop");
            }
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        for &c in &self.0 {
            // SAFETY: from Box::into_raw in `new`, freed once here.
            drop(unsafe { Box::from_raw(c) });
        }
    }
}

enum Mode {
    /// The service's loop takes the requests.
    Loop { requests: Requests, ended: bool },
    /// A thread of the library's takes them and calls the callbacks.
    Callbacks { thread: Option<JoinHandle<()>> },
}

enum State {
    Bound(Box<Incumbent>),
    Serving { finisher: Finisher, mode: Mode },
    Finished(u32),
}

/// A process serving its control socket as the incumbent. Created by
/// `handoff_incumbent_bind` or `handoff_successor_announce_ready`, freed by
/// `handoff_incumbent_free`. The functions may be called from any thread,
/// one at a time.
pub struct handoff_incumbent {
    /// Read by `handoff_incumbent_generation` from any thread, while
    /// another may be inside one of the other functions: those reach only
    /// `handle`, so the generation is never under their exclusive borrow.
    generation: Arc<AtomicU64>,
    /// The request descriptor's number (-1 until `start_loop`), kept while
    /// serving ends; readable from any thread too.
    request_fd: AtomicI32,
    handle: UnsafeCell<Handle>,
}

/// What the functions other than `handoff_incumbent_generation` use, one
/// thread at a time (header contract).
struct Handle {
    state: Option<State>,
    /// The loop's request contexts, from `start_loop` until freed.
    slots: Option<Slots>,
}

impl handoff_incumbent {
    pub(crate) fn boxed(incumbent: Incumbent) -> *mut handoff_incumbent {
        Box::into_raw(Box::new(handoff_incumbent {
            generation: incumbent.generation_handle(),
            request_fd: AtomicI32::new(-1),
            handle: UnsafeCell::new(Handle {
                state: Some(State::Bound(Box::new(incumbent))),
                slots: None,
            }),
        }))
    }
}

/// The handle of a live incumbent, for the functions called one at a time.
///
/// # Safety
/// A non-NULL `ptr` must come from this library and not be freed, and no
/// other thread may be inside a function using this at the same time.
unsafe fn handle_mut<'a>(ptr: *mut handoff_incumbent) -> Result<&'a mut Handle, Failure> {
    // SAFETY: the caller's contract; only a shared reference to the whole.
    let outer = unsafe { arg_ref(ptr.cast_const(), "incumbent") }?;
    // SAFETY: one thread at a time reaches `handle` (the caller's contract),
    // and nothing else borrows it.
    Ok(unsafe { &mut *outer.handle.get() })
}

impl Handle {
    fn bound(&mut self) -> Result<&mut Incumbent, Failure> {
        match &mut self.state {
            Some(State::Bound(incumbent)) => Ok(incumbent),
            _ => Err(Failure::new(
                handoff_status::HANDOFF_ERR_WRONG_STATE,
                "the incumbent is already serving",
            )),
        }
    }

    /// Start the serve thread; the incumbent stays bound when it cannot.
    fn start(&mut self) -> Result<(Requests, Finisher), Failure> {
        self.bound()?;
        let Some(State::Bound(incumbent)) = self.state.take() else {
            unreachable!("checked by bound()")
        };
        match incumbent.start() {
            Ok(serving) => Ok(serving.into_parts()),
            Err(not_started) => {
                let crate::incumbent::NotStarted { error, incumbent } = *not_started;
                self.state = Some(State::Bound(Box::new(incumbent)));
                Err(Failure::new(
                    handoff_status::HANDOFF_ERR_IO,
                    format!("cannot start the serve thread: {error}"),
                ))
            }
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
                handle_mut(incumbent)?,
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
        let bound = unsafe { handle_mut(incumbent) }?.bound()?;
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

/// Whether the service hands its connections (and other descriptors) to
/// its successor when the handoff allows it (protocol v2): the incumbent
/// then offers v2, and a drain request says whether it moves
/// (`handoff_hook_moves`). Default false. Before
/// `handoff_incumbent_start` or `_start_loop`.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_set_moves_descriptors(
    incumbent: *mut handoff_incumbent,
    moves: bool,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live incumbent.
        let bound = unsafe { handle_mut(incumbent) }?.bound()?;
        let config = IncumbentConfig {
            moves_descriptors: moves,
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
/// callbacks struct is copied. On failure `destroy` is not called. Built on
/// the same requests as `handoff_incumbent_start_loop`: a thread of the
/// library's takes each one and calls its callback.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_start(
    incumbent: *mut handoff_incumbent,
    callbacks: *const handoff_service_callbacks,
    userdata: *mut c_void,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live incumbent and a readable callbacks struct.
        let (inc, callbacks) =
            unsafe { (handle_mut(incumbent)?, *arg_ref(callbacks, "callbacks")?) };
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
        // The hook thread first, waiting for its requests: when it cannot be
        // spawned, nothing serves yet and the caller keeps its userdata.
        let (hand_over, handed) = std::sync::mpsc::sync_channel::<Requests>(1);
        let userdata = SendPtr(userdata);
        let thread = std::thread::Builder::new()
            .name("handoff-hooks".into())
            .spawn(move || {
                let Ok(requests) = handed.recv() else {
                    return;
                };
                let service = Callbacks {
                    callbacks,
                    userdata,
                };
                service.run(&requests);
            })
            .map_err(|e| {
                Failure::new(
                    handoff_status::HANDOFF_ERR_IO,
                    format!("cannot start the callback thread: {e}"),
                )
            })?;
        let (requests, finisher) = match inc.start() {
            Ok(parts) => parts,
            Err(failure) => {
                drop(hand_over);
                let _ = thread.join();
                return Err(failure);
            }
        };
        hand_over
            .send(requests)
            .expect("the callback thread waits for the requests");
        inc.state = Some(State::Serving {
            finisher,
            mode: Mode::Callbacks {
                thread: Some(thread),
            },
        });
        Ok(())
    })
}

/// Start serving the control socket on a thread of the library's, handing
/// the work to the caller's own event loop: poll
/// `handoff_incumbent_request_fd` for reading, take each request with
/// `handoff_incumbent_take_request`, do it across as many loop iterations
/// as it needs and complete it with `handoff_hook_complete`. Heartbeats go
/// on meanwhile. No mutex, condition variable or wake pipe is needed.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_start_loop(
    incumbent: *mut handoff_incumbent,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live incumbent.
        let (inc, request_fd) = unsafe {
            (
                handle_mut(incumbent)?,
                &arg_ref(incumbent.cast_const(), "incumbent")?.request_fd,
            )
        };
        let (requests, finisher) = inc.start()?;
        request_fd.store(requests.fd().as_raw_fd(), Ordering::Relaxed);
        inc.slots = Some(Slots::new());
        inc.state = Some(State::Serving {
            finisher,
            mode: Mode::Loop {
                requests,
                ended: false,
            },
        });
        Ok(())
    })
}

/// The descriptor to poll for reading: readable while a request waits
/// (do not read it: each request adds a byte that taking it removes, so it
/// stays readable while one waits and every request is a new edge for an
/// edge-triggered watcher such as epoll's EPOLLET or Go's netpoller).
/// Owned by the incumbent, valid until
/// `handoff_incumbent_free`; may be asked from any thread. -1 for NULL and
/// unless started with `handoff_incumbent_start_loop`.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_request_fd(
    incumbent: *const handoff_incumbent,
) -> c_int {
    // SAFETY: NULL or a live incumbent.
    unsafe { incumbent.as_ref() }.map_or(-1, |i| i.request_fd.load(Ordering::Relaxed))
}

/// Take the next request without waiting. `*kind` receives
/// `HANDOFF_REQUEST_NONE` (nothing waits; `*out` NULL),
/// `HANDOFF_REQUEST_DRAIN`, `_SEAL` or `_RESUME` (`*out`: the request, to
/// fill in and complete once with `handoff_hook_complete`; it stays owned
/// by the incumbent) or `HANDOFF_REQUEST_ENDED` (serving is over, `*out`
/// NULL: `handoff_incumbent_wait` says how without waiting). Only after
/// `handoff_incumbent_start_loop`, else `HANDOFF_ERR_WRONG_STATE`.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_take_request(
    incumbent: *mut handoff_incumbent,
    out: *mut *mut handoff_hook_context,
    kind: *mut u32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live incumbent.
        let inc = unsafe { handle_mut(incumbent) }?;
        let out = Out::new(out, "out")?;
        let kind = Out::new(kind, "kind")?;
        let (requests, ended) = match &mut inc.state {
            Some(State::Serving {
                mode: Mode::Loop { requests, ended },
                ..
            }) => (requests, ended),
            Some(State::Finished(_)) if inc.slots.is_some() => {
                out.write(std::ptr::null_mut());
                kind.write(HANDOFF_REQUEST_NONE);
                return Ok(());
            }
            _ => {
                return Err(Failure::new(
                    handoff_status::HANDOFF_ERR_WRONG_STATE,
                    "requests are taken after handoff_incumbent_start_loop",
                ))
            }
        };
        let Some(request) = requests.take() else {
            out.write(std::ptr::null_mut());
            kind.write(HANDOFF_REQUEST_NONE);
            return Ok(());
        };
        let code = kind_code(request.kind());
        if let RequestKind::Ended(_) = request.kind() {
            *ended = true;
            out.write(std::ptr::null_mut());
        } else {
            let slot = inc
                .slots
                .as_ref()
                .expect("set by start_loop")
                .for_kind(request.kind());
            // SAFETY: our own live box; the service holds no reference into
            // it while calling us (one thread at a time, header contract).
            unsafe { &mut *slot }.load(request, false);
            out.write(slot);
        }
        kind.write(code);
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
/// the timeout: `HANDOFF_ERR_TIMEOUT`. From a callback, or with a timeout
/// while the service's loop holds an uncompleted request (serving could
/// not end): `HANDOFF_ERR_WRONG_STATE`.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_wait(
    incumbent: *mut handoff_incumbent,
    timeout_ms: i32,
    outcome: *mut u32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        refuse_on_hook_thread("handoff_incumbent_wait")?;
        // SAFETY: a live incumbent.
        let inc = unsafe { handle_mut(incumbent) }?;
        let outcome = Out::new(outcome, "outcome")?;
        if timeout_ms != 0 && inc.slots.as_ref().is_some_and(Slots::holding) {
            return Err(Failure::new(
                handoff_status::HANDOFF_ERR_WRONG_STATE,
                "complete the request in hand first: serving cannot end before it is",
            ));
        }
        let code = match &mut inc.state {
            Some(State::Finished(code)) => *code,
            Some(State::Serving { finisher, .. }) => {
                let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
                let Some(result) = finisher.wait(timeout) else {
                    return Err(Error::Timeout.into());
                };
                finish(inc);
                let code = result.map(outcome_code).map_err(Failure::from)?;
                inc.state = Some(State::Finished(code));
                code
            }
            _ => {
                return Err(Failure::new(
                    handoff_status::HANDOFF_ERR_WRONG_STATE,
                    "the incumbent is not serving",
                ))
            }
        };
        outcome.write(code);
        Ok(())
    })
}

/// Serving is over: end the callback thread (it takes `Ended` and returns).
fn finish(inc: &mut Handle) {
    if let Some(State::Serving {
        mode: Mode::Callbacks { thread },
        ..
    }) = &mut inc.state
    {
        if let Some(thread) = thread.take() {
            let _ = thread.join();
        }
    }
    inc.state = Some(State::Finished(HANDOFF_SERVE_STOPPED));
}

/// Stop serving (rolling back a handoff in progress) and wait for the serve
/// thread to end. After `handoff_incumbent_start_loop`, requests the loop
/// holds or has not taken fail (the process is on its way out: no resume
/// is asked of it) and later `take_request` calls find nothing. From a
/// callback: `HANDOFF_ERR_WRONG_STATE`.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_stop(
    incumbent: *mut handoff_incumbent,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        refuse_on_hook_thread("handoff_incumbent_stop")?;
        // SAFETY: a live incumbent.
        let inc = unsafe { handle_mut(incumbent) }?;
        stop(inc);
        Ok(())
    })
}

fn stop(inc: &mut Handle) {
    let Some(State::Serving { finisher, mode }) = &mut inc.state else {
        return;
    };
    finisher.stop();
    if let Mode::Loop { requests, ended } = mode {
        // Answer for the loop until the end: whatever it held or was yet to
        // take fails, so the serve thread never waits for it.
        if let Some(slots) = &inc.slots {
            slots.fail_all();
        }
        while !*ended {
            match requests.wait() {
                Some(r) if matches!(r.kind(), RequestKind::Ended(_)) => *ended = true,
                Some(r) => r.fail("the incumbent is stopping"),
                None => break,
            }
        }
    }
    let code = finisher
        .join()
        .and_then(|r| r.ok())
        .map_or(HANDOFF_SERVE_STOPPED, outcome_code);
    finish(inc);
    inc.state = Some(State::Finished(code));
}

/// Stop serving if needed, close the control socket and free (every request
/// context taken from it too). NULL is a no-op. From a callback it cannot
/// free (it would wait for the callback itself): it logs an error and does
/// nothing.
#[no_mangle]
pub unsafe extern "C" fn handoff_incumbent_free(incumbent: *mut handoff_incumbent) {
    if incumbent.is_null() {
        return;
    }
    if on_hook_thread() {
        crate::log::event!(
            Error,
            "handoff_incumbent_free called from a callback: not freed"
        );
        return;
    }
    // SAFETY: from Box::into_raw in this library; the caller gives it up.
    let mut inc = unsafe { Box::from_raw(incumbent) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stop(inc.handle.get_mut())));
}
