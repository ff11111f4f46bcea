//! Status codes. Values are stable: a code is never renumbered or reused.

use std::ffi::c_char;

use crate::Error;

/// The result of every fallible function. `HANDOFF_OK` is 0; each failure
/// has its own stable value.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum handoff_status {
    HANDOFF_OK = 0,
    /// An argument is out of its documented domain (an unknown enum value,
    /// a wrong length, a number out of range).
    HANDOFF_ERR_INVALID_ARGUMENT = 1,
    /// A pointer that must not be NULL was NULL.
    HANDOFF_ERR_NULL_POINTER = 2,
    /// The library hit an internal bug; nothing was changed.
    HANDOFF_ERR_PANIC = 3,
    /// A string argument is not valid UTF-8.
    HANDOFF_ERR_INVALID_UTF8 = 4,
    /// The buffer holds only part of a frame; `*consumed` says how many
    /// bytes are needed in all.
    HANDOFF_ERR_INCOMPLETE = 5,
    /// The output buffer is too small; `*needed` says how big it must be.
    HANDOFF_ERR_BUFFER_TOO_SMALL = 6,
    /// A frame length below 2.
    HANDOFF_ERR_FRAME_MALFORMED = 7,
    /// A frame length above 1 MiB.
    HANDOFF_ERR_FRAME_TOO_LARGE = 8,
    /// A message index protocol v1 does not have.
    HANDOFF_ERR_UNKNOWN_MESSAGE = 9,
    /// A message body that does not decode (bad field, trailing bytes).
    HANDOFF_ERR_DECODE = 10,
    /// A message that cannot be encoded.
    HANDOFF_ERR_ENCODE = 11,
    /// The peers' protocol version ranges do not overlap.
    HANDOFF_ERR_VERSION_MISMATCH = 12,
    /// The message kind has no such field.
    HANDOFF_ERR_NO_SUCH_FIELD = 13,
    /// The field exists but has another type than the accessor's.
    HANDOFF_ERR_WRONG_FIELD_TYPE = 14,
    /// A list index past the end of the list.
    HANDOFF_ERR_OUT_OF_RANGE = 15,
    /// An operating-system error; the message names the file and the cause.
    HANDOFF_ERR_IO = 16,
    /// A journal file that does not decode (truncated, garbage).
    HANDOFF_ERR_JOURNAL_CORRUPT = 17,
    /// The peer closed the connection.
    HANDOFF_ERR_PEER_CLOSED = 18,
    /// A wait ran past its deadline.
    HANDOFF_ERR_TIMEOUT = 19,
    /// The data-dir lock is held by another live process.
    HANDOFF_ERR_LOCK_HELD = 20,
    /// An inherited listener is missing, of another family, or not listening.
    HANDOFF_ERR_LISTENER = 21,
    /// A successor variable (HANDOFF_SOCK_FD, LISTEN_FDS, ...) is malformed.
    HANDOFF_ERR_ENVIRONMENT = 22,
    /// The peer broke the protocol (wrong message, wrong id, wrong direction).
    HANDOFF_ERR_PROTOCOL = 23,
    /// A handoff is already running; this one was refused.
    HANDOFF_ERR_HANDOFF_IN_PROGRESS = 24,
    /// The handoff was aborted and rolled back.
    HANDOFF_ERR_ABORTED = 25,
    /// A peer of another uid tried to use a control socket.
    HANDOFF_ERR_PERMISSION_DENIED = 26,
    /// The peer is not the process it claims to be (SO_PEERCRED).
    HANDOFF_ERR_PEER_IDENTITY = 27,
    /// A service callback (drain, seal, resume) reported failure.
    HANDOFF_ERR_HOOK_FAILED = 28,
    /// The object is closed or used out of order.
    HANDOFF_ERR_WRONG_STATE = 29,
}

use handoff_status::*;

/// Every status, for tables and tests.
pub(crate) const ALL_STATUSES: [handoff_status; 30] = [
    HANDOFF_OK,
    HANDOFF_ERR_INVALID_ARGUMENT,
    HANDOFF_ERR_NULL_POINTER,
    HANDOFF_ERR_PANIC,
    HANDOFF_ERR_INVALID_UTF8,
    HANDOFF_ERR_INCOMPLETE,
    HANDOFF_ERR_BUFFER_TOO_SMALL,
    HANDOFF_ERR_FRAME_MALFORMED,
    HANDOFF_ERR_FRAME_TOO_LARGE,
    HANDOFF_ERR_UNKNOWN_MESSAGE,
    HANDOFF_ERR_DECODE,
    HANDOFF_ERR_ENCODE,
    HANDOFF_ERR_VERSION_MISMATCH,
    HANDOFF_ERR_NO_SUCH_FIELD,
    HANDOFF_ERR_WRONG_FIELD_TYPE,
    HANDOFF_ERR_OUT_OF_RANGE,
    HANDOFF_ERR_IO,
    HANDOFF_ERR_JOURNAL_CORRUPT,
    HANDOFF_ERR_PEER_CLOSED,
    HANDOFF_ERR_TIMEOUT,
    HANDOFF_ERR_LOCK_HELD,
    HANDOFF_ERR_LISTENER,
    HANDOFF_ERR_ENVIRONMENT,
    HANDOFF_ERR_PROTOCOL,
    HANDOFF_ERR_HANDOFF_IN_PROGRESS,
    HANDOFF_ERR_ABORTED,
    HANDOFF_ERR_PERMISSION_DENIED,
    HANDOFF_ERR_PEER_IDENTITY,
    HANDOFF_ERR_HOOK_FAILED,
    HANDOFF_ERR_WRONG_STATE,
];

pub(crate) fn status_of(error: &Error) -> handoff_status {
    match error {
        Error::Incomplete { .. } => HANDOFF_ERR_INCOMPLETE,
        Error::FrameMalformed(_) => HANDOFF_ERR_FRAME_MALFORMED,
        Error::FrameTooLarge { .. } => HANDOFF_ERR_FRAME_TOO_LARGE,
        Error::UnknownMessage { .. } => HANDOFF_ERR_UNKNOWN_MESSAGE,
        Error::Decode(_) => HANDOFF_ERR_DECODE,
        Error::Encode(_) => HANDOFF_ERR_ENCODE,
        Error::BufferTooSmall { .. } => HANDOFF_ERR_BUFFER_TOO_SMALL,
        Error::VersionMismatch { .. } => HANDOFF_ERR_VERSION_MISMATCH,
        Error::JournalCorrupt { .. } => HANDOFF_ERR_JOURNAL_CORRUPT,
        Error::Io { .. } | Error::Stream(_) => HANDOFF_ERR_IO,
        Error::PeerClosed { .. } => HANDOFF_ERR_PEER_CLOSED,
        Error::Timeout => HANDOFF_ERR_TIMEOUT,
        Error::LockHeld { .. } => HANDOFF_ERR_LOCK_HELD,
        Error::Listener(_) => HANDOFF_ERR_LISTENER,
        Error::Environment(_) => HANDOFF_ERR_ENVIRONMENT,
        Error::Protocol(_) => HANDOFF_ERR_PROTOCOL,
        Error::HandoffInProgress => HANDOFF_ERR_HANDOFF_IN_PROGRESS,
        Error::Aborted(_) => HANDOFF_ERR_ABORTED,
        Error::PeerNotPermitted { .. } => HANDOFF_ERR_PERMISSION_DENIED,
        Error::PeerIdentity(_) => HANDOFF_ERR_PEER_IDENTITY,
        Error::Hook { .. } => HANDOFF_ERR_HOOK_FAILED,
        Error::WrongState(_) => HANDOFF_ERR_WRONG_STATE,
    }
}

fn name(status: handoff_status) -> &'static str {
    match status {
        HANDOFF_OK => "HANDOFF_OK\0",
        HANDOFF_ERR_INVALID_ARGUMENT => "HANDOFF_ERR_INVALID_ARGUMENT\0",
        HANDOFF_ERR_NULL_POINTER => "HANDOFF_ERR_NULL_POINTER\0",
        HANDOFF_ERR_PANIC => "HANDOFF_ERR_PANIC\0",
        HANDOFF_ERR_INVALID_UTF8 => "HANDOFF_ERR_INVALID_UTF8\0",
        HANDOFF_ERR_INCOMPLETE => "HANDOFF_ERR_INCOMPLETE\0",
        HANDOFF_ERR_BUFFER_TOO_SMALL => "HANDOFF_ERR_BUFFER_TOO_SMALL\0",
        HANDOFF_ERR_FRAME_MALFORMED => "HANDOFF_ERR_FRAME_MALFORMED\0",
        HANDOFF_ERR_FRAME_TOO_LARGE => "HANDOFF_ERR_FRAME_TOO_LARGE\0",
        HANDOFF_ERR_UNKNOWN_MESSAGE => "HANDOFF_ERR_UNKNOWN_MESSAGE\0",
        HANDOFF_ERR_DECODE => "HANDOFF_ERR_DECODE\0",
        HANDOFF_ERR_ENCODE => "HANDOFF_ERR_ENCODE\0",
        HANDOFF_ERR_VERSION_MISMATCH => "HANDOFF_ERR_VERSION_MISMATCH\0",
        HANDOFF_ERR_NO_SUCH_FIELD => "HANDOFF_ERR_NO_SUCH_FIELD\0",
        HANDOFF_ERR_WRONG_FIELD_TYPE => "HANDOFF_ERR_WRONG_FIELD_TYPE\0",
        HANDOFF_ERR_OUT_OF_RANGE => "HANDOFF_ERR_OUT_OF_RANGE\0",
        HANDOFF_ERR_IO => "HANDOFF_ERR_IO\0",
        HANDOFF_ERR_JOURNAL_CORRUPT => "HANDOFF_ERR_JOURNAL_CORRUPT\0",
        HANDOFF_ERR_PEER_CLOSED => "HANDOFF_ERR_PEER_CLOSED\0",
        HANDOFF_ERR_TIMEOUT => "HANDOFF_ERR_TIMEOUT\0",
        HANDOFF_ERR_LOCK_HELD => "HANDOFF_ERR_LOCK_HELD\0",
        HANDOFF_ERR_LISTENER => "HANDOFF_ERR_LISTENER\0",
        HANDOFF_ERR_ENVIRONMENT => "HANDOFF_ERR_ENVIRONMENT\0",
        HANDOFF_ERR_PROTOCOL => "HANDOFF_ERR_PROTOCOL\0",
        HANDOFF_ERR_HANDOFF_IN_PROGRESS => "HANDOFF_ERR_HANDOFF_IN_PROGRESS\0",
        HANDOFF_ERR_ABORTED => "HANDOFF_ERR_ABORTED\0",
        HANDOFF_ERR_PERMISSION_DENIED => "HANDOFF_ERR_PERMISSION_DENIED\0",
        HANDOFF_ERR_PEER_IDENTITY => "HANDOFF_ERR_PEER_IDENTITY\0",
        HANDOFF_ERR_HOOK_FAILED => "HANDOFF_ERR_HOOK_FAILED\0",
        HANDOFF_ERR_WRONG_STATE => "HANDOFF_ERR_WRONG_STATE\0",
    }
}

/// The constant's name of a status value (`"HANDOFF_ERR_IO"`), or NULL for
/// a value this library does not define. Static; never free it.
#[no_mangle]
pub extern "C" fn handoff_status_name(status: i32) -> *const c_char {
    ALL_STATUSES
        .iter()
        .find(|s| **s as i32 == status)
        .map_or(std::ptr::null(), |s| name(*s).as_ptr().cast())
}
