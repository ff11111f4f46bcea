//! Error objects: a failure's status and message, owned by the caller.
//! No thread-local "last error": Go moves goroutines between threads.

use std::ffi::{c_char, CString};

use super::{handoff_status, Failure};

/// A failure's details. Created by the library on failure when the caller
/// passed a non-NULL `handoff_error **err`; owned by the caller, who frees it
/// with `handoff_error_free()`. Immutable, so it may be read from any thread.
pub struct handoff_error {
    status: handoff_status,
    message: CString,
}

/// Hand `failure` to the caller through `err`, if the caller wants it.
pub(super) fn report(err: *mut *mut handoff_error, failure: Failure) {
    if err.is_null() {
        return;
    }
    // Interior NULs cannot cross as a C string; show them instead.
    let message = CString::new(failure.message.replace('\0', "\\0")).expect("NULs replaced");
    let boxed = Box::new(handoff_error {
        status: failure.status,
        message,
    });
    // SAFETY: `err` is non-NULL and, by the contract of every function that
    // takes it, points to writable storage for one pointer.
    unsafe { err.write(Box::into_raw(boxed)) };
}

/// The error's message, a NUL-terminated UTF-8 string owned by the error
/// (valid until `handoff_error_free`). NULL `err` gives `""`.
#[no_mangle]
pub unsafe extern "C" fn handoff_error_message(err: *const handoff_error) -> *const c_char {
    // SAFETY: non-NULL `err` came from this library and is not freed yet.
    match unsafe { err.as_ref() } {
        Some(err) => err.message.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// The error's status. NULL `err` gives `HANDOFF_ERR_NULL_POINTER`.
#[no_mangle]
pub unsafe extern "C" fn handoff_error_status(err: *const handoff_error) -> handoff_status {
    // SAFETY: as in `handoff_error_message`.
    match unsafe { err.as_ref() } {
        Some(err) => err.status,
        None => handoff_status::HANDOFF_ERR_NULL_POINTER,
    }
}

/// Free an error. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn handoff_error_free(err: *mut handoff_error) {
    if !err.is_null() {
        // SAFETY: non-NULL `err` came from `Box::into_raw` in `report` and
        // the caller gives up its only reference.
        drop(unsafe { Box::from_raw(err) });
    }
}
