//! The successor through the C ABI: handshake, wait for Begin, take the
//! listeners, announce Ready and become the incumbent.

use std::ffi::{c_char, c_int, CStr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use super::args::{arg_bytes, arg_mut, arg_path, arg_ref, Out};
use super::listeners::{inherited_mut, take_listener};
use super::{
    boundary, handoff_error, handoff_incumbent, handoff_inherited, handoff_items, handoff_lock,
    handoff_message, handoff_status, Failure,
};
use crate::incumbent::Incumbent;
use crate::protocol::Message;
use crate::successor::{HeartbeatGuard, Readiness, Successor};

/// A successor's side of one handoff. Created by `handoff_successor_new`,
/// freed by `handoff_successor_free`. Not synchronised: one thread at a
/// time.
pub struct handoff_successor {
    /// None once Ready was sent (the process is then the incumbent).
    inner: Option<Successor>,
    heartbeats: Option<HeartbeatGuard>,
}

impl handoff_successor {
    fn live(&mut self) -> Result<&mut Successor, Failure> {
        self.inner.as_mut().ok_or_else(|| {
            Failure::new(
                handoff_status::HANDOFF_ERR_WRONG_STATE,
                "Ready was already announced: this process is the incumbent now",
            )
        })
    }
}

/// Start the successor's side from what `handoff_inherited_detect` found:
/// the control socket and the listeners move into the successor (take them
/// with `handoff_successor_take_listener` after Begin); `inherited` keeps
/// only their names and must still be freed. When the supervisor named the
/// control socket it will reach this process at (HANDOFF_CONTROL_SOCKET),
/// the handshake binds it ahead, at `<path>.<pid in hex>.tmp`, and
/// `handoff_successor_announce_ready` given that path only renames it into
/// place. Not a successor: `HANDOFF_ERR_WRONG_STATE`.
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_new(
    inherited: *mut handoff_inherited,
    out: *mut *mut handoff_successor,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live object from this library (header contract).
        let inherited = unsafe { inherited_mut(inherited, "inherited") }?;
        let out = Out::new(out, "out")?;
        let control = inherited.take_control().ok_or_else(|| {
            Failure::new(
                handoff_status::HANDOFF_ERR_WRONG_STATE,
                "not a successor (no control socket inherited, or already taken)",
            )
        })?;
        let listeners = std::mem::take(inherited.listeners_mut());
        let expected = inherited.control_socket_path().map(Path::to_owned);
        let mut successor = Successor::new(control, listeners)?;
        successor.expect_control_socket(expected)?;
        out.write(Box::into_raw(Box::new(handoff_successor {
            inner: Some(successor),
            heartbeats: None,
        })));
        Ok(())
    })
}

/// Whether the service adopts the descriptors an incumbent moves (its
/// client connections and named descriptors: protocol v2,
/// docs/protocol.md); then the handshake offers v2. Before
/// `handoff_successor_handshake` (after it: `HANDOFF_ERR_WRONG_STATE`).
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_set_adopts_descriptors(
    successor: *mut handoff_successor,
    adopts: bool,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live successor.
        let succ = unsafe { arg_mut(successor, "successor") }?;
        succ.live()?.set_adopts_descriptors(adopts)?;
        Ok(())
    })
}

/// After Begin, holding the data-dir lock `lock` (nothing moved is read or
/// written before): what the incumbent moved, in its order, in `*items`
/// (owned by the caller, freed with `handoff_items_free`; empty when
/// nothing moved). Once per handoff; every item must be adopted before
/// `handoff_successor_announce_ready`. For each connection, write its
/// unwritten bytes first, then process its unread ones, then read it.
/// (An item said to be a connection whose descriptor is not a socket fails
/// the wait for Begin instead, `HANDOFF_ERR_PROTOCOL`: give up, the handoff
/// rolls back and every moved descriptor is closed.)
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_adopt(
    successor: *mut handoff_successor,
    lock: *const handoff_lock,
    items: *mut *mut handoff_items,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: live handles (header contract).
        let (succ, lock) = unsafe { (arg_mut(successor, "successor")?, arg_ref(lock, "lock")?) };
        let out = Out::new(items, "items")?;
        let lock = lock.check_held()?;
        let adopted = succ.live()?.adopt_items(lock)?;
        out.write(Box::into_raw(Box::new(handoff_items {
            items: adopted.into_iter().map(Into::into).collect(),
        })));
        Ok(())
    })
}

/// Send Hello (with `build_id`, copied) and wait up to 5 s for HelloAck.
/// `handoff_id` (NULL, or room for 16 bytes) receives the handoff's id.
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_handshake(
    successor: *mut handoff_successor,
    build_id: *const u8,
    len: usize,
    handoff_id: *mut u8,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live successor and `len` readable bytes.
        let (succ, build_id) = unsafe {
            (
                arg_mut(successor, "successor")?,
                arg_bytes(build_id, len, "build_id")?,
            )
        };
        let id = succ.live()?.handshake(build_id)?;
        if !handoff_id.is_null() {
            // SAFETY: room for 16 bytes by contract.
            unsafe { std::ptr::copy_nonoverlapping(id.as_bytes().as_ptr(), handoff_id, 16) };
        }
        Ok(())
    })
}

/// Wait up to `timeout_ms` for Begin (the incumbent has sealed and released
/// the lock). `HANDOFF_ERR_ABORTED` or `HANDOFF_ERR_PEER_CLOSED`: the
/// handoff is over, exit without touching the data directory.
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_wait_for_begin(
    successor: *mut handoff_successor,
    timeout_ms: u32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live successor.
        let succ = unsafe { arg_mut(successor, "successor") }?;
        succ.live()?
            .wait_for_begin(Duration::from_millis(timeout_ms.into()))?;
        Ok(())
    })
}

/// The control connection's descriptor, for the service's own loop: wait
/// for it to be readable (with the loop's own deadline and cancellation),
/// then call `handoff_successor_poll_begin`. Owned by the successor (never
/// read, write or close it). -1 for NULL or after Ready.
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_control_fd(
    successor: *const handoff_successor,
) -> c_int {
    // SAFETY: NULL or a live successor (header contract).
    let Some(succ) = (unsafe { successor.as_ref() }) else {
        return -1;
    };
    succ.inner
        .as_ref()
        .map_or(-1, |inner| inner.control_fd().as_raw_fd())
}

/// Read what the control connection holds without waiting: `*begun` is
/// true once Begin has arrived (and from then on), false when it has not
/// yet. `HANDOFF_ERR_ABORTED` or `HANDOFF_ERR_PEER_CLOSED`: the handoff is
/// over, exit without touching the data directory.
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_poll_begin(
    successor: *mut handoff_successor,
    begun: *mut bool,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live successor.
        let succ = unsafe { arg_mut(successor, "successor") }?;
        let begun = Out::new(begun, "begun")?;
        begun.write(succ.live()?.poll_begin()?);
        Ok(())
    })
}

/// After Begin: take listener `name` as `kind` (`HANDOFF_LISTENER_*`), as
/// `handoff_inherited_take_listener` does. Before Begin:
/// `HANDOFF_ERR_WRONG_STATE` (the listeners still serve the incumbent).
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_take_listener(
    successor: *mut handoff_successor,
    name: *const c_char,
    kind: u32,
    fd_out: *mut c_int,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live successor and a NUL-terminated name.
        let (succ, _) = unsafe { (arg_mut(successor, "successor")?, arg_ref(name, "name")?) };
        // SAFETY: non-NULL (checked above) and NUL-terminated by contract.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        take_listener(succ.live()?.listeners()?, &name, kind, fd_out)
    })
}

/// Send heartbeats every 2 s from Begin until Ready, so a slow start-up
/// between Begin and Ready is not taken for a dead successor. Call it after
/// the handshake and before the wait for Begin: the thread it starts is then
/// not started in the blackout (it sends nothing before Begin).
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_start_heartbeats(
    successor: *mut handoff_successor,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live successor.
        let succ = unsafe { arg_mut(successor, "successor") }?;
        if succ.heartbeats.is_none() {
            let guard = succ.live()?.start_heartbeats(Duration::from_secs(2));
            succ.heartbeats = Some(guard);
        }
        Ok(())
    })
}

/// Bind the control socket at `control_path` (replacing the old incumbent's
/// atomically; a failure here is a clean abort), then announce Ready and
/// become the new incumbent, holding `lock` (which
/// moves into the incumbent; the handle stays, empty). `ready` is NULL
/// (healthy, nothing else to say) or a `HANDOFF_MSG_READY` message whose
/// `listening_on`, `healthz_ok` and `advertised_revision_per_shard` are sent
/// (its handoff id is ignored). Once Ready is sent this process is
/// authoritative. A refused argument (a `ready` of another kind, a lock not
/// held, a spent successor) leaves the lock and the successor as they were;
/// past those checks the successor is spent and the lock handle empty either
/// way (on a failure the lock is released: step back and exit).
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_announce_ready(
    successor: *mut handoff_successor,
    ready: *const handoff_message,
    control_path: *const c_char,
    lock: *mut handoff_lock,
    out: *mut *mut handoff_incumbent,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: live handles and a NUL-terminated path (header contract).
        let (succ, path, lock) = unsafe {
            (
                arg_mut(successor, "successor")?,
                arg_path(control_path, "control_path")?,
                arg_mut(lock, "lock")?,
            )
        };
        let out = Out::new(out, "out")?;
        // SAFETY: NULL or a live message.
        let readiness = match unsafe { ready.as_ref() }.map(|m| &m.frame.message) {
            None => Readiness {
                healthz_ok: true,
                ..Readiness::default()
            },
            Some(Message::Ready {
                listening_on,
                healthz_ok,
                advertised_revision_per_shard,
                ..
            }) => Readiness {
                listening_on: listening_on.clone(),
                healthz_ok: *healthz_ok,
                advertised_revision_per_shard: advertised_revision_per_shard.clone(),
            },
            Some(other) => {
                return Err(Failure::invalid(format!(
                    "ready must be a Ready message, not {}",
                    other.kind().name()
                )))
            }
        };
        lock.check_held()?;
        succ.live()?;
        // They stop with Ready (a beat in flight still goes out whole).
        succ.heartbeats = None;
        let successor = succ.inner.take().expect("checked live");
        let incumbent: Incumbent = successor.announce_ready(readiness, path, lock.take()?)?;
        out.write(handoff_incumbent::boxed(incumbent));
        Ok(())
    })
}

/// Free the successor (closing its control socket and untaken listeners).
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_successor_free(successor: *mut handoff_successor) {
    if !successor.is_null() {
        // SAFETY: from Box::into_raw here; the caller gives it up.
        drop(unsafe { Box::from_raw(successor) });
    }
}
