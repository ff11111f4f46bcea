//! libhandoff: zero-downtime handoff of stateful services.
//!
//! The Rust core speaks protocol v1 (byte-compatible with `beyond-handoff`
//! 0.1.x) and keeps the supervisor's crash-recovery journal. The C ABI lives
//! in [`ffi`] and is the only module that knows about C.

// `unsafe` is denied crate-wide; the modules that must touch raw pointers or
// descriptors opt back in and justify each block with a `// SAFETY:` note.
#![deny(unsafe_code)]
#![deny(unused_must_use)]

pub mod channel;
pub mod control;
mod crash;
pub mod error;
pub mod fdpass;
pub mod ffi;
pub mod frame;
mod fsutil;
pub mod incumbent;
pub mod journal;
pub mod listeners;
pub mod lock;
pub mod log;
mod pidfd;
pub mod poll;
pub mod protocol;
mod recovery;
pub mod service;
pub mod spawn;
pub mod successor;
pub mod supervisor;
pub mod sys;

pub use error::{Error, Result};
pub use frame::{
    decode_frame, encode_frame, encode_frame_into, Frame, FrameReader, MAX_FRAME_BYTES,
};
pub use journal::{Journal, Phase};
pub use protocol::{
    negotiate_version, Capabilities, HandoffId, ItemKind, Message, MessageKind, Side,
};
