//! Checked conversions of C arguments: NULL becomes a status, never a crash.

use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{handoff_status, Failure};

fn null(name: &str) -> Failure {
    Failure::new(
        handoff_status::HANDOFF_ERR_NULL_POINTER,
        format!("{name} must not be NULL"),
    )
}

/// A shared reference to a C argument.
///
/// # Safety
/// A non-NULL `ptr` must point to a valid `T` for `'a`.
pub unsafe fn arg_ref<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: guaranteed by the caller for non-NULL pointers.
    unsafe { ptr.as_ref() }.ok_or_else(|| null(name))
}

/// An exclusive reference to a C argument.
///
/// # Safety
/// A non-NULL `ptr` must point to a valid `T`, not aliased, for `'a`.
pub unsafe fn arg_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: guaranteed by the caller for non-NULL pointers.
    unsafe { ptr.as_mut() }.ok_or_else(|| null(name))
}

/// A pointer + length byte argument; NULL is allowed only with length 0.
///
/// # Safety
/// A non-NULL `ptr` must point to `len` readable bytes for `'a`.
pub unsafe fn arg_bytes<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return if len == 0 { Ok(&[]) } else { Err(null(name)) };
    }
    // SAFETY: non-NULL and `len` readable bytes, by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A NUL-terminated path. Paths are bytes on Unix, so no UTF-8 is required.
///
/// # Safety
/// A non-NULL `ptr` must point to a NUL-terminated string valid for `'a`.
pub unsafe fn arg_path<'a>(ptr: *const c_char, name: &str) -> Result<&'a Path, Failure> {
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL and NUL-terminated, by the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    if bytes.is_empty() {
        return Err(Failure::invalid(format!("{name} must not be empty")));
    }
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// An out-parameter that must not be NULL, checked before any work is done
/// so that outputs are written only on success.
pub struct Out<T>(*mut T);

impl<T> Out<T> {
    pub fn new(ptr: *mut T, name: &str) -> Result<Self, Failure> {
        if ptr.is_null() {
            return Err(null(name));
        }
        Ok(Out(ptr))
    }

    pub fn write(self, value: T) {
        // SAFETY: non-NULL (checked in `new`) and, by the caller's contract,
        // writable storage for one `T`. `write` does not drop the old bytes,
        // which may be uninitialised.
        unsafe { self.0.write(value) }
    }
}
