//! Routing the library's events to the host's logging.

use std::ffi::{c_char, c_void, CString};

use super::{boundary, handoff_error, handoff_status};
use crate::log::{set_logger, Level};

pub const HANDOFF_LOG_ERROR: u32 = 1;
pub const HANDOFF_LOG_WARN: u32 = 2;
pub const HANDOFF_LOG_INFO: u32 = 3;
pub const HANDOFF_LOG_DEBUG: u32 = 4;

/// Receives one event: `level` is `HANDOFF_LOG_*`, `message` a
/// NUL-terminated UTF-8 line valid only during the call.
pub type handoff_log_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, level: u32, message: *const c_char)>;

/// Userdata the caller promises may be used from any thread.
pub(super) struct SendPtr(pub *mut c_void);

impl SendPtr {
    /// Through a method, so closures capture the wrapper, not the raw field.
    pub fn get(&self) -> *mut c_void {
        self.0
    }
}
// SAFETY: the header makes thread-safety of `userdata` the caller's promise.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// Send every library event to `callback` (NULL restores the default:
/// warnings and errors on stderr). The callback may run on any of the
/// library's threads, concurrently, and must not call back into the
/// library's logging setup; `userdata` must stay valid until the callback
/// is replaced.
#[no_mangle]
pub unsafe extern "C" fn handoff_set_log_callback(
    callback: handoff_log_fn,
    userdata: *mut c_void,
    err: *mut *mut handoff_error,
) -> handoff_status {
    boundary(err, || {
        let Some(callback) = callback else {
            set_logger(None);
            return Ok(());
        };
        let userdata = SendPtr(userdata);
        set_logger(Some(Box::new(move |level: Level, message: &str| {
            let line = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
            // SAFETY: the caller registered a valid function; `line` lives
            // for the call.
            unsafe { callback(userdata.get(), level as u32, line.as_ptr()) };
        })));
        Ok(())
    })
}
