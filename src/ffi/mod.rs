//! The C ABI (DESIGN §6). The only module that knows about C: raw pointers
//! are checked here and turned into the Rust core's types.
//!
//! Every exported function runs inside [`boundary`], which turns a panic into
//! `HANDOFF_ERR_PANIC`, and takes `handoff_error **err` last.
#![allow(unsafe_code)]
#![allow(non_camel_case_types)]
// The safety contract of every exported function is the ownership and
// validity rules documented on it in include/handoff.h.
#![allow(clippy::missing_safety_doc)]

mod args;
mod error;
mod fields;
mod incumbent;
mod items;
mod journal;
mod listeners;
mod lock;
mod log;
mod message;
mod reader;
mod request;
mod status;
mod successor;
mod supervisor;

pub use error::*;
pub use fields::*;
pub use incumbent::*;
pub use items::*;
pub use journal::*;
pub use listeners::*;
pub use lock::*;
pub use log::*;
pub use message::*;
pub use reader::*;
pub use request::*;
pub use status::*;
pub use successor::*;
pub use supervisor::*;

use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A failure on its way to C: the status and the message the caller sees.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: handoff_status,
    pub message: String,
}

impl Failure {
    pub fn new(status: handoff_status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::new(handoff_status::HANDOFF_ERR_INVALID_ARGUMENT, message)
    }
}

impl From<crate::Error> for Failure {
    fn from(error: crate::Error) -> Self {
        Failure::new(status_of(&error), error.to_string())
    }
}

/// Run `body` as an exported function: a panic becomes `HANDOFF_ERR_PANIC`,
/// and a failure is reported through `err` when the caller asked for it.
pub(crate) fn boundary(
    err: *mut *mut handoff_error,
    body: impl FnOnce() -> Result<(), Failure>,
) -> handoff_status {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return handoff_status::HANDOFF_OK,
        Ok(Err(failure)) => failure,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Failure::new(
                handoff_status::HANDOFF_ERR_PANIC,
                format!("internal error (panic): {what}"),
            )
        }
    };
    let status = failure.status;
    error::report(err, failure);
    status
}

/// The library's version, e.g. `"0.1.0"`. Static; never free it.
#[no_mangle]
pub extern "C" fn handoff_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
