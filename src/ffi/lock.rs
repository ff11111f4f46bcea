//! The data-dir lock through the C ABI (DESIGN §4).

use std::ffi::c_char;
use std::time::Duration;

use super::args::{arg_path, Out};
use super::{boundary, handoff_error, handoff_status, Failure};
use crate::lock::{DataDirLock, LockState};

/// A held data-dir lock: `<data_dir>/.handoff.lock` under an exclusive
/// flock, the holder's pid in `<data_dir>/.handoff.pidfile`. Created by
/// `handoff_lock_acquire` or `handoff_lock_acquire_with_retry`, owned by the
/// caller, and given back with `handoff_lock_release` (which reports errors)
/// or `handoff_lock_free`. `handoff_lock_generation` may be called from any
/// thread; release or free it when no other thread uses it. A process that
/// exits or dies loses the lock (the kernel drops the flock).
pub struct handoff_lock {
    /// None once the lock has moved into an incumbent.
    inner: Option<DataDirLock>,
}

fn boxed(lock: DataDirLock) -> *mut handoff_lock {
    Box::into_raw(Box::new(handoff_lock { inner: Some(lock) }))
}

impl handoff_lock {
    /// Fails when the lock has already moved into an incumbent.
    pub(crate) fn check_held(&self) -> Result<&DataDirLock, Failure> {
        self.inner.as_ref().ok_or_else(|| {
            Failure::new(
                handoff_status::HANDOFF_ERR_WRONG_STATE,
                "this lock handle is empty: its lock moved into an incumbent",
            )
        })
    }

    /// Move the lock out (into an incumbent); the handle stays, empty.
    pub(crate) fn take(&mut self) -> Result<DataDirLock, Failure> {
        self.check_held()?;
        Ok(self.inner.take().expect("checked"))
    }
}

/// Take the lock on `data_dir` (created if missing) without waiting: on
/// success `*out` is a new lock owned by the caller, its generation above
/// every previous holder's (one more in the usual flows). When a live
/// process holds it (this process included) the answer is
/// `HANDOFF_ERR_LOCK_HELD`, with the holder's pid in the message. A pidfile
/// left by a dead process does not stand in the way.
#[no_mangle]
pub unsafe extern "C" fn handoff_lock_acquire(
    data_dir: *const c_char,
    out: *mut *mut handoff_lock,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: NUL-terminated path (header contract).
        let data_dir = unsafe { arg_path(data_dir, "data_dir") }?;
        let out = Out::new(out, "out")?;
        out.write(boxed(DataDirLock::acquire(data_dir)?));
        Ok(())
    })
}

/// As `handoff_lock_acquire`, but while the lock is held it tries again
/// every ~20 ms for up to `timeout_ms` (for a dying process that may still
/// hold it), then answers `HANDOFF_ERR_LOCK_HELD`. Blocks the calling thread.
#[no_mangle]
pub unsafe extern "C" fn handoff_lock_acquire_with_retry(
    data_dir: *const c_char,
    timeout_ms: u32,
    out: *mut *mut handoff_lock,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: NUL-terminated path (header contract).
        let data_dir = unsafe { arg_path(data_dir, "data_dir") }?;
        let out = Out::new(out, "out")?;
        let timeout = Duration::from_millis(timeout_ms.into());
        out.write(boxed(DataDirLock::acquire_with_retry(data_dir, timeout)?));
        Ok(())
    })
}

/// The lock's generation, a fencing token: 1 on the first acquire ever of
/// the data directory, above every earlier tenure's on every acquire since
/// (one more in the usual flows; kept in `<data_dir>/.handoff.generation`,
/// and ahead of a handoff in `.handoff.reserved`). 0 for NULL or an empty
/// handle (its lock moved into an incumbent: ask
/// `handoff_incumbent_generation`).
#[no_mangle]
pub unsafe extern "C" fn handoff_lock_generation(lock: *const handoff_lock) -> u64 {
    // SAFETY: NULL or a live lock from this library.
    unsafe { lock.as_ref() }
        .and_then(|lock| lock.inner.as_ref())
        .map_or(0, |lock| lock.generation())
}

/// Release the lock (clear the pidfile in place, drop the flock) and free
/// it. Consumes `lock` whatever the outcome: the lock is released and freed
/// even when an error (say, the pidfile could not be cleared) is reported.
/// NULL answers `HANDOFF_ERR_NULL_POINTER`; an empty handle (its lock moved
/// into an incumbent) `HANDOFF_ERR_WRONG_STATE`, and is freed too.
#[no_mangle]
pub unsafe extern "C" fn handoff_lock_release(
    lock: *mut handoff_lock,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        if lock.is_null() {
            return Err(Failure::new(
                handoff_status::HANDOFF_ERR_NULL_POINTER,
                "lock must not be NULL",
            ));
        }
        // SAFETY: non-NULL `lock` came from `Box::into_raw` in this library
        // and the caller gives up its only reference.
        let mut lock = unsafe { Box::from_raw(lock) };
        lock.take()?.release()?;
        Ok(())
    })
}

/// Free a lock, releasing it first if it is still held (best effort; use
/// `handoff_lock_release` to learn about errors). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_lock_free(lock: *mut handoff_lock) {
    if !lock.is_null() {
        // SAFETY: `lock` came from `Box::into_raw` in this library and the
        // caller gives up its only reference. Dropping releases the lock;
        // the guard keeps a panic in that from crossing into C.
        let _ = std::panic::catch_unwind(|| drop(unsafe { Box::from_raw(lock) }));
    }
}

/// Who holds the lock on `data_dir` right now, without taking it (beyond
/// an instant) and without creating anything. `*held` is false when it is
/// free (a missing directory is free). When held, `*pid` is the holder's pid
/// from the pidfile, or 0 when no live process is named there (a holder
/// that did not record itself, e.g. a forked child that outlived it).
/// `*pid` is 0 when not held.
#[no_mangle]
pub unsafe extern "C" fn handoff_lock_holder(
    data_dir: *const c_char,
    held: *mut bool,
    pid: *mut u32,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        // SAFETY: NUL-terminated path (header contract).
        let data_dir = unsafe { arg_path(data_dir, "data_dir") }?;
        let (held, pid) = (Out::new(held, "held")?, Out::new(pid, "pid")?);
        match DataDirLock::probe(data_dir)? {
            LockState::Free => {
                held.write(false);
                pid.write(0);
            }
            LockState::Held { pid: holder } => {
                held.write(true);
                pid.write(holder.unwrap_or(0));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::{handoff_error_free, handoff_error_message, handoff_error_status};
    use std::ffi::{CStr, CString};
    use std::ptr;

    fn c_path(path: &std::path::Path) -> CString {
        CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
    }

    #[test]
    fn acquire_holder_generation_release_through_the_c_abi() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = c_path(tmp.path());
        let me = std::process::id();
        unsafe {
            let (mut held, mut pid) = (true, 7);
            assert_eq!(
                handoff_lock_holder(dir.as_ptr(), &mut held, &mut pid, ptr::null_mut()),
                handoff_status::HANDOFF_OK
            );
            assert!(!held);
            assert_eq!(pid, 0);

            let mut lock = ptr::null_mut();
            assert_eq!(
                handoff_lock_acquire(dir.as_ptr(), &mut lock, ptr::null_mut()),
                handoff_status::HANDOFF_OK
            );
            assert_eq!(handoff_lock_generation(lock), 1);
            assert_eq!(handoff_lock_generation(ptr::null()), 0);

            handoff_lock_holder(dir.as_ptr(), &mut held, &mut pid, ptr::null_mut());
            assert!(held);
            assert_eq!(pid, me);

            // Held: the out-parameter is left alone and the error says why.
            let (mut second, mut err) = (ptr::null_mut(), ptr::null_mut());
            let status = handoff_lock_acquire_with_retry(dir.as_ptr(), 50, &mut second, &mut err);
            assert_eq!(status, handoff_status::HANDOFF_ERR_LOCK_HELD);
            assert!(second.is_null());
            assert_eq!(handoff_error_status(err), status);
            let message = CStr::from_ptr(handoff_error_message(err)).to_str().unwrap();
            assert!(message.contains(&format!("by pid {me}")), "{message}");
            handoff_error_free(err);

            assert_eq!(
                handoff_lock_release(lock, ptr::null_mut()),
                handoff_status::HANDOFF_OK
            );
            handoff_lock_acquire(dir.as_ptr(), &mut lock, ptr::null_mut());
            assert_eq!(handoff_lock_generation(lock), 2);
            // Free releases a held lock.
            handoff_lock_free(lock);
            handoff_lock_free(ptr::null_mut());
            handoff_lock_holder(dir.as_ptr(), &mut held, &mut pid, ptr::null_mut());
            assert!(!held);
        }
    }

    #[test]
    fn null_arguments_are_statuses() {
        unsafe {
            let mut lock = ptr::null_mut();
            assert_eq!(
                handoff_lock_acquire(ptr::null(), &mut lock, ptr::null_mut()),
                handoff_status::HANDOFF_ERR_NULL_POINTER
            );
            assert_eq!(
                handoff_lock_acquire(c"".as_ptr(), &mut lock, ptr::null_mut()),
                handoff_status::HANDOFF_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                handoff_lock_release(ptr::null_mut(), ptr::null_mut()),
                handoff_status::HANDOFF_ERR_NULL_POINTER
            );
            let tmp = tempfile::tempdir().unwrap();
            let dir = c_path(tmp.path());
            assert_eq!(
                handoff_lock_acquire(dir.as_ptr(), ptr::null_mut(), ptr::null_mut()),
                handoff_status::HANDOFF_ERR_NULL_POINTER
            );
            // Nothing was taken by the refused call.
            assert!(!tmp.path().join(crate::lock::PIDFILE).exists());
        }
    }
}
