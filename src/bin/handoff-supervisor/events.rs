//! What the main loop, the trigger server and the handoff worker tell one
//! another: the main loop's events, and where a handoff's (or a
//! prepare's) answers go.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use handoff::supervisor::{Abort, HandoffPhase, Outcome, PreparedSuccessor, SpawnSpec};

use crate::generation::Build;
use crate::trigger::Reply;

/// What reaches the main loop.
pub enum Event {
    Signal(libc::c_int),
    Handoff {
        force: bool,
        /// To the prepared successor (no binary then).
        prepared: bool,
        binary: Option<PathBuf>,
        source: &'static str,
        progress: Box<dyn Progress>,
    },
    Finished(Box<Finished>),
    Prepare {
        force: bool,
        binary: Option<PathBuf>,
        progress: Box<dyn Progress>,
    },
    /// A prepare's end (`preparing`).
    Prepared(Box<PrepareDone>),
    Discard {
        progress: Box<dyn Progress>,
    },
}

/// Where a handoff's progress goes: the `trigger` client, or nowhere (SIGHUP).
pub trait Progress: Send {
    fn send(&mut self, reply: &Reply);
}

/// A `trigger` client's connection. A client that went away stops nothing.
pub struct SocketProgress(Option<UnixStream>);

impl SocketProgress {
    pub fn new(stream: UnixStream) -> SocketProgress {
        SocketProgress(Some(stream))
    }
}

impl Progress for SocketProgress {
    fn send(&mut self, reply: &Reply) {
        if let Some(stream) = &mut self.0 {
            if stream.write_all(reply.to_line().as_bytes()).is_err() {
                self.0 = None;
            }
        }
    }
}

pub struct Silent;

impl Progress for Silent {
    fn send(&mut self, _: &Reply) {}
}

/// A handoff's end, for the main loop.
pub struct Finished {
    pub result: handoff::Result<Outcome>,
    pub spec: SpawnSpec,
    /// The last phase that completed, if any.
    pub last_done: Option<HandoffPhase>,
    pub progress: Box<dyn Progress>,
}

/// A prepare's end, for the main loop, which holds what it prepared.
pub struct PrepareDone {
    pub result: Result<PreparedSuccessor, Abort>,
    pub build: Build,
    pub progress: Box<dyn Progress>,
}
