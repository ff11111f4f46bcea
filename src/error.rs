//! The crate's error type. Each variant maps to one stable C status
//! (see `ffi::status`), so a new failure mode gets a new variant.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("incomplete frame: {needed} bytes needed in all, {available} available")]
    Incomplete { needed: usize, available: usize },

    #[error("malformed frame: length {0} is below the 2-byte minimum")]
    FrameMalformed(u32),

    /// The limit travels with the error, so this module needs nothing of
    /// the frame's (no module cycle).
    #[error("frame too large: length {len} exceeds the {limit}-byte limit")]
    FrameTooLarge { len: u64, limit: u32 },

    #[error(
        "unknown message index {index} in a protocol v{version} frame (v1 knows 0..=13, v2 0..=18)"
    )]
    UnknownMessage { index: u64, version: u16 },

    #[error("cannot decode message: {0}")]
    Decode(String),

    #[error("cannot encode message: {0}")]
    Encode(String),

    #[error("buffer too small: {needed} bytes needed, {capacity} available")]
    BufferTooSmall { needed: usize, capacity: usize },

    #[error(
        "protocol version mismatch: ours {our_min}..={our_max}, theirs {their_min}..={their_max}"
    )]
    VersionMismatch {
        our_min: u16,
        our_max: u16,
        their_min: u16,
        their_max: u16,
    },

    #[error("journal {path} is corrupt: {reason}")]
    JournalCorrupt { path: PathBuf, reason: String },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("peer closed the connection{}", if *.mid_frame { " in the middle of a frame" } else { "" })]
    PeerClosed { mid_frame: bool },

    #[error("timed out waiting for a frame")]
    Timeout,

    #[error("i/o error: {0}")]
    Stream(#[source] io::Error),

    #[error("data-dir lock {} is held{}", .dir.display(), match .holder { Some(pid) => format!(" by pid {pid}"), None => String::new() })]
    LockHeld { dir: PathBuf, holder: Option<u32> },

    #[error("listener: {0}")]
    Listener(String),

    #[error("environment: {0}")]
    Environment(String),

    #[error("protocol violation: {0}")]
    Protocol(String),

    #[error("a handoff is already in progress")]
    HandoffInProgress,

    #[error("handoff aborted: {0}")]
    Aborted(String),

    #[error("peer uid {uid} is not permitted (only the supervisor's user and root may connect)")]
    PeerNotPermitted { uid: u32 },

    #[error("peer identity: {0}")]
    PeerIdentity(String),

    #[error("service hook {hook} failed: {reason}")]
    Hook { hook: &'static str, reason: String },

    #[error("wrong state: {0}")]
    WrongState(String),
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
