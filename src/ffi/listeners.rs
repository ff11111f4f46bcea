//! Role detection and the inherited listeners through the C ABI (DESIGN §3).

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::fd::IntoRawFd;

use super::args::{arg_mut, arg_ref, Out};
use super::{boundary, handoff_error, handoff_status, Failure};
use crate::listeners::{detect, Inherited, ListenerKind, Listeners};

/// `handoff_inherited_take_listener`: a listening TCP socket (IPv4 or IPv6).
pub const HANDOFF_LISTENER_TCP: u32 = 0;
/// `handoff_inherited_take_listener`: a UDP socket (IPv4 or IPv6).
pub const HANDOFF_LISTENER_UDP: u32 = 1;
/// `handoff_inherited_take_listener`: a listening Unix stream socket.
pub const HANDOFF_LISTENER_UNIX: u32 = 2;

/// What this process inherited: its role and its listeners (and, in a
/// successor, the supervisor's control socket, used by the library's
/// successor functions). Created by `handoff_inherited_detect`, owned by the
/// caller, freed with `handoff_inherited_free`, which closes every listener
/// not taken. Not synchronised: use it from one thread at a time.
pub struct handoff_inherited {
    inner: Inherited,
    /// The listeners' names as C strings, in descriptor order.
    names: Vec<CString>,
}

impl handoff_inherited {
    pub(crate) fn new(inner: Inherited) -> handoff_inherited {
        let names = inner
            .listeners()
            .names()
            .into_iter()
            // Names come from the environment, which cannot hold a NUL;
            // one built by hand shows it escaped instead.
            .map(|name| CString::new(name.replace('\0', "\\0")).expect("NULs replaced"))
            .collect();
        handoff_inherited { inner, names }
    }
}

/// The `Inherited` behind a C handle, for the library's successor functions
/// (which take the control socket out of it).
///
/// # Safety
/// A non-NULL `ptr` must be a live `handoff_inherited` from this library,
/// not used elsewhere for `'a`.
pub(crate) unsafe fn inherited_mut<'a>(
    ptr: *mut handoff_inherited,
    name: &str,
) -> Result<&'a mut Inherited, Failure> {
    // SAFETY: forwarded contract.
    Ok(&mut unsafe { arg_mut(ptr, name) }?.inner)
}

/// Detect this process's role and adopt what it inherited.
/// Reads HANDOFF_ROLE, HANDOFF_SOCK_FD, LISTEN_FDS, LISTEN_FDNAMES,
/// LISTEN_PID and HANDOFF_CONTROL_SOCKET (the path the supervisor will reach
/// a successor at, which `handoff_successor_new` passes on: the handshake
/// binds that control socket ahead), removes them from the process
/// environment (so children do not inherit them), and adopts listener i at fd 3+i (and, in a successor,
/// the control socket at fd 3+n), marking each close-on-exec. Nothing else
/// about the descriptors changes: their O_NONBLOCK flag is shared with the
/// incumbent. LISTEN_PID naming another process means nothing is adopted
/// (a cold start); a missing LISTEN_PID is accepted. Malformed variables
/// answer `HANDOFF_ERR_ENVIRONMENT`; a listener that is not an open socket
/// `HANDOFF_ERR_LISTENER`. A second call sees no variables: a cold start
/// with no listeners. Changes the environment: call it early, before other
/// threads read the environment. (Language runtimes that keep their own
/// copy of the environment, such as Python's `os.environ` or Go's, must
/// drop the variables from it too.)
#[no_mangle]
pub unsafe extern "C" fn handoff_inherited_detect(
    out: *mut *mut handoff_inherited,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        let out = Out::new(out, "out")?;
        let inherited = handoff_inherited::new(detect()?);
        out.write(Box::into_raw(Box::new(inherited)));
        Ok(())
    })
}

/// Whether this process was spawned as a successor (HANDOFF_ROLE=successor);
/// false on a cold start and for NULL.
#[no_mangle]
pub unsafe extern "C" fn handoff_inherited_is_successor(
    inherited: *const handoff_inherited,
) -> bool {
    // SAFETY: NULL or a live object from this library.
    unsafe { inherited.as_ref() }.is_some_and(|i| i.inner.is_successor())
}

/// How many listeners were inherited, taken ones included (listener i was
/// at fd 3+i); 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn handoff_inherited_listener_count(
    inherited: *const handoff_inherited,
) -> usize {
    // SAFETY: NULL or a live object from this library.
    unsafe { inherited.as_ref() }.map_or(0, |i| i.names.len())
}

/// The name of listener `index` (from LISTEN_FDNAMES; `"unknown"` when it
/// was not named), taken or not. `*name` is NUL-terminated and borrowed
/// from `inherited`: valid until it is freed. An index past the end answers
/// `HANDOFF_ERR_OUT_OF_RANGE`.
#[no_mangle]
pub unsafe extern "C" fn handoff_inherited_listener_name(
    inherited: *const handoff_inherited,
    index: usize,
    name: *mut *const c_char,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live object from this library (header contract).
        let inherited = unsafe { arg_ref(inherited, "inherited") }?;
        let name = Out::new(name, "name")?;
        let found = inherited.names.get(index).ok_or_else(|| {
            Failure::new(
                handoff_status::HANDOFF_ERR_OUT_OF_RANGE,
                format!(
                    "listener index {index} is past the end of {} listeners",
                    inherited.names.len()
                ),
            )
        })?;
        name.write(found.as_ptr());
        Ok(())
    })
}

/// Take the listener called `name` as a socket of `kind`
/// (`HANDOFF_LISTENER_TCP`, `_UDP` or `_UNIX`; anything else answers
/// `HANDOFF_ERR_INVALID_ARGUMENT`). On success `*fd_out` is a descriptor the
/// caller now owns (close-on-exec; close it with `close()`), and the
/// listener is no longer in `inherited`. Its O_NONBLOCK flag is left as it
/// is: it is shared with the incumbent, so set it only once this process
/// owns the service (a successor: after Begin), or poll before accept. No
/// listener of that name left, or one of another kind (which then stays
/// in `inherited`), answers `HANDOFF_ERR_LISTENER`. With repeated names,
/// the first one not yet taken is the one.
#[no_mangle]
pub unsafe extern "C" fn handoff_inherited_take_listener(
    inherited: *mut handoff_inherited,
    name: *const c_char,
    kind: u32,
    fd_out: *mut c_int,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: a live object from this library, not used elsewhere now
        // (header contract).
        let inherited = unsafe { arg_mut(inherited, "inherited") }?;
        // SAFETY: non-NULL (checked by `arg_ref`) and NUL-terminated (header
        // contract).
        let name = unsafe { arg_ref(name, "name").map(|_| CStr::from_ptr(name)) }?;
        take_listener(
            inherited.inner.listeners_mut(),
            &name.to_string_lossy(),
            kind,
            fd_out,
        )
    })
}

/// Take listener `name` as `kind` (a `HANDOFF_LISTENER_*` value from C) out
/// of `listeners` into `*fd_out`; shared by the inherited and successor
/// handles.
pub(crate) fn take_listener(
    listeners: &mut Listeners,
    name: &str,
    kind: u32,
    fd_out: *mut c_int,
) -> Result<(), Failure> {
    let kind = match kind {
        HANDOFF_LISTENER_TCP => ListenerKind::Tcp,
        HANDOFF_LISTENER_UDP => ListenerKind::Udp,
        HANDOFF_LISTENER_UNIX => ListenerKind::Unix,
        other => {
            return Err(Failure::invalid(format!(
                "unknown listener kind {other} (HANDOFF_LISTENER_TCP 0, _UDP 1, _UNIX 2)"
            )))
        }
    };
    let fd_out = Out::new(fd_out, "fd_out")?;
    let fd = listeners.take_as(name, kind)?.ok_or_else(|| {
        Failure::new(
            handoff_status::HANDOFF_ERR_LISTENER,
            format!(
                "no inherited listener \"{name}\" is left to take (inherited: {})",
                listeners.names().join(", ")
            ),
        )
    })?;
    fd_out.write(fd.into_raw_fd());
    Ok(())
}

/// Free the object, closing every listener not taken (and a successor's
/// control socket, if the library's successor functions did not take it).
/// NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_inherited_free(inherited: *mut handoff_inherited) {
    if !inherited.is_null() {
        // SAFETY: `inherited` came from `Box::into_raw` in this library and
        // the caller gives up its only reference.
        drop(unsafe { Box::from_raw(inherited) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::handoff_error_free;
    use crate::listeners::{Listeners, Role};
    use std::net::{TcpListener, UdpSocket};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::ptr;

    fn object() -> *mut handoff_inherited {
        let (control, _) = UnixStream::pair().unwrap();
        let listeners = Listeners::from_fds([
            (
                "web".to_owned(),
                TcpListener::bind("127.0.0.1:0").unwrap().into(),
            ),
            (
                "dns".to_owned(),
                UdpSocket::bind("127.0.0.1:0").unwrap().into(),
            ),
        ]);
        let inner =
            Inherited::from_parts(Role::Successor, Some(control.into()), listeners).unwrap();
        Box::into_raw(Box::new(handoff_inherited::new(inner)))
    }

    fn status_of_take(obj: *mut handoff_inherited, name: &CStr, kind: u32) -> handoff_status {
        let mut fd = -1;
        let mut err = ptr::null_mut();
        // SAFETY: a live object and a C string.
        let status =
            unsafe { handoff_inherited_take_listener(obj, name.as_ptr(), kind, &mut fd, &mut err) };
        if status == handoff_status::HANDOFF_OK {
            assert!(fd >= 0);
            // SAFETY: the caller owns the descriptor now.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        } else {
            assert_eq!(fd, -1, "out-parameters are written only on success");
            // SAFETY: an error this library created.
            unsafe { handoff_error_free(err) };
        }
        status
    }

    #[test]
    fn names_count_and_takes_through_the_c_abi() {
        let obj = object();
        unsafe {
            assert!(handoff_inherited_is_successor(obj));
            assert!(!handoff_inherited_is_successor(ptr::null()));
            assert_eq!(handoff_inherited_listener_count(obj), 2);
            assert_eq!(handoff_inherited_listener_count(ptr::null()), 0);
            let mut name = ptr::null();
            handoff_inherited_listener_name(obj, 1, &mut name, ptr::null_mut());
            assert_eq!(CStr::from_ptr(name), c"dns");
            assert_eq!(
                handoff_inherited_listener_name(obj, 2, &mut name, ptr::null_mut()),
                handoff_status::HANDOFF_ERR_OUT_OF_RANGE
            );
            use handoff_status::*;
            assert_eq!(status_of_take(obj, c"web", 3), HANDOFF_ERR_INVALID_ARGUMENT);
            assert_eq!(
                status_of_take(obj, c"web", HANDOFF_LISTENER_UDP),
                HANDOFF_ERR_LISTENER
            );
            assert_eq!(
                status_of_take(obj, c"web", HANDOFF_LISTENER_UNIX),
                HANDOFF_ERR_LISTENER
            );
            assert_eq!(
                status_of_take(obj, c"web", HANDOFF_LISTENER_TCP),
                HANDOFF_OK
            );
            assert_eq!(
                status_of_take(obj, c"web", HANDOFF_LISTENER_TCP),
                HANDOFF_ERR_LISTENER
            );
            assert_eq!(
                status_of_take(obj, c"nope", HANDOFF_LISTENER_TCP),
                HANDOFF_ERR_LISTENER
            );
            assert_eq!(
                status_of_take(obj, c"dns", HANDOFF_LISTENER_UDP),
                HANDOFF_OK
            );
            // Taken listeners keep their names.
            assert_eq!(handoff_inherited_listener_count(obj), 2);
            assert!(inherited_mut(obj, "inherited")
                .unwrap()
                .take_control()
                .is_some());
            handoff_inherited_free(obj);
            handoff_inherited_free(ptr::null_mut());
        }
    }
}
