//! How the serve loop hands work to the service: a queue of [`Request`]s
//! with a pollable descriptor, readable while one is waiting, so a service's
//! own event loop takes part without a mutex, condition variable or wake
//! pipe of its own (convention 11). Each request is completed by the
//! service, from its own thread and loop iterations, and the completion
//! wakes the serve loop through a second wake channel. The callback API
//! ([`dispatch`]) is a thread that takes requests and calls the hooks: one
//! code path for both.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::channel::Sender;
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::poll;
use crate::service::{DrainReport, HookContext, HookError, SealReport, Service};

use super::ServeOutcome;

/// What a request asks of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Stop accepting, finish in-flight work, fsync; complete with a
    /// [`DrainReport`] by the deadline.
    Drain,
    /// Flush and close the writers; complete with a [`SealReport`].
    Seal,
    /// The handoff was rolled back: reopen and accept again.
    Resume,
    /// Serving is over (`Committed`, `Superseded` or `Stopped`); nothing to
    /// complete. `None`: the serve loop failed (its error is the join's).
    Ended(Option<ServeOutcome>),
}

/// A completed request, back to the serve loop.
#[derive(Debug)]
pub enum Done {
    Drained(std::result::Result<DrainReport, HookError>),
    Sealed(std::result::Result<SealReport, HookError>),
    Resumed(std::result::Result<(), HookError>),
}

/// One piece of work for the service. Dropping it uncompleted fails it, so
/// a service that forgets one (or panics, or goes away) cannot hang the
/// serve loop.
pub struct Request {
    kind: RequestKind,
    deadline: Option<Instant>,
    moves: Option<u32>,
    sender: Option<Sender>,
    reply: Option<Reply>,
}

/// Where a completion goes.
struct Reply {
    results: mpsc::Sender<Done>,
    wake: Arc<OwnedFd>,
}

impl Request {
    pub fn kind(&self) -> RequestKind {
        self.kind
    }

    /// The drain's or seal's deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A drain that may move descriptors: at most how many.
    pub fn moves(&self) -> Option<u32> {
        self.moves
    }

    /// The context the [`Service`] hooks take (drain and seal only).
    pub fn context(&self) -> Option<HookContext<'_>> {
        Some(HookContext {
            deadline: self.deadline?,
            moves: self.moves,
            sender: self.sender.as_ref()?,
        })
    }

    /// Report a long seal's progress to the supervisor.
    pub fn seal_progress(&self, sealed: u32, total: u32, last_revision: u64) -> Result<()> {
        match self.context() {
            Some(ctx) if self.kind == RequestKind::Seal => {
                ctx.seal_progress(sealed, total, last_revision)
            }
            _ => Err(Error::WrongState(
                "seal progress is reported from a seal request".into(),
            )),
        }
    }

    pub fn complete_drain(self, report: std::result::Result<DrainReport, HookError>) {
        self.finish(RequestKind::Drain, Done::Drained(report));
    }

    pub fn complete_seal(self, report: std::result::Result<SealReport, HookError>) {
        self.finish(RequestKind::Seal, Done::Sealed(report));
    }

    pub fn complete_resume(self, result: std::result::Result<(), HookError>) {
        self.finish(RequestKind::Resume, Done::Resumed(result));
    }

    /// Fail whatever this request is.
    pub fn fail(mut self, reason: impl Into<String>) {
        if let Some(done) = failure(self.kind, reason.into()) {
            self.send(done);
        }
    }

    /// Complete with `done` if it answers this kind; otherwise fail it
    /// (a drain's report given to a seal is the service's bug).
    fn finish(mut self, expected: RequestKind, done: Done) {
        if self.kind == expected {
            self.send(done);
        } else if let Some(done) = failure(
            self.kind,
            format!("a {:?} request was completed as a {expected:?}", self.kind),
        ) {
            self.send(done);
        }
    }

    fn send(&mut self, done: Done) {
        if let Some(reply) = self.reply.take() {
            if reply.results.send(done).is_ok() {
                poll::wake(reply.wake.as_fd());
            }
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.reply.is_some() {
            if let Some(done) = failure(self.kind, "the service dropped the request".into()) {
                self.send(done);
            }
        }
    }
}

fn failure(kind: RequestKind, reason: String) -> Option<Done> {
    let e = Err(HookError(reason));
    match kind {
        RequestKind::Drain => Some(Done::Drained(e.map(|()| DrainReport::default()))),
        RequestKind::Seal => Some(Done::Sealed(e.map(|()| SealReport::default()))),
        RequestKind::Resume => Some(Done::Resumed(e)),
        RequestKind::Ended(_) => None,
    }
}

/// The service's end: a descriptor to poll and requests to take.
pub struct Requests {
    queue: mpsc::Receiver<Request>,
    /// One byte per queued request: readable exactly while one waits.
    ready: OwnedFd,
}

impl Requests {
    /// Readable while a request is waiting (level-triggered).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    /// The next request, without waiting.
    pub fn take(&self) -> Option<Request> {
        if !self.consume_byte() {
            return None;
        }
        // The byte is written after the request is queued.
        self.queue.try_recv().ok().map(handed)
    }

    /// The next request, waiting for it; None once the serve loop is gone.
    /// It polls the descriptor rather than blocking in the channel: a
    /// blocking std receive leaves per-thread state behind on a C caller's
    /// thread (valgrind: "possibly lost").
    pub fn wait(&self) -> Option<Request> {
        loop {
            match self.queue.try_recv() {
                Ok(request) => {
                    // Its byte follows the request: keep one per request.
                    while !self.consume_byte() {
                        self.poll_ready();
                    }
                    return Some(handed(request));
                }
                Err(mpsc::TryRecvError::Disconnected) => return None,
                Err(mpsc::TryRecvError::Empty) => self.poll_ready(),
            }
        }
    }

    /// Until the descriptor is readable (or its writer is gone: the queue,
    /// dropped before it, then says Disconnected).
    fn poll_ready(&self) {
        let _ = poll::wait_fd(self.ready.as_raw_fd(), libc::POLLIN, None, None);
    }

    /// Read one announcement byte; false when there is none (or EOF).
    fn consume_byte(&self) -> bool {
        poll::read_one(self.ready.as_fd())
    }
}

/// The service now holds `request`: a crash here is a crash inside the hook.
fn handed(request: Request) -> Request {
    match request.kind {
        RequestKind::Drain => {
            crash_point!("O_IN_DRAIN");
        }
        RequestKind::Seal => {
            crash_point!("O_IN_SEAL");
        }
        _ => {}
    }
    request
}

/// The serve loop's end.
pub struct Mailbox {
    queue: mpsc::Sender<Request>,
    announce: OwnedFd,
    results: mpsc::Receiver<Done>,
    results_tx: mpsc::Sender<Done>,
    done: OwnedFd,
    done_wake: Arc<OwnedFd>,
}

/// A connected pair.
pub fn mailbox() -> Result<(Mailbox, Requests)> {
    let (ready, announce) = poll::wake_pair().map_err(Error::Stream)?;
    poll::set_nonblocking(ready.as_fd()).map_err(Error::Stream)?;
    let (done, done_wake) = poll::wake_pair().map_err(Error::Stream)?;
    poll::set_nonblocking(done.as_fd()).map_err(Error::Stream)?;
    let (queue, receiver) = mpsc::channel();
    let (results_tx, results) = mpsc::channel();
    Ok((
        Mailbox {
            queue,
            announce,
            results,
            results_tx,
            done,
            done_wake: Arc::new(done_wake),
        },
        Requests {
            queue: receiver,
            ready,
        },
    ))
}

impl Mailbox {
    /// Hand the service a request; when it has gone, the request fails at
    /// once (its drop).
    pub fn submit(
        &self,
        kind: RequestKind,
        deadline: Option<Instant>,
        moves: Option<u32>,
        sender: Option<Sender>,
    ) {
        let reply = match kind {
            RequestKind::Ended(_) => None,
            _ => Some(Reply {
                results: self.results_tx.clone(),
                wake: Arc::clone(&self.done_wake),
            }),
        };
        let request = Request {
            kind,
            deadline,
            moves,
            sender,
            reply,
        };
        if self.queue.send(request).is_ok() {
            poll::wake(self.announce.as_fd());
        }
    }

    /// Readable when a completion is waiting.
    pub fn done_fd(&self) -> BorrowedFd<'_> {
        self.done.as_fd()
    }

    /// A completion, without waiting.
    pub fn try_result(&self) -> Option<Done> {
        poll::drain(self.done.as_fd());
        self.results.try_recv().ok()
    }

    /// The outstanding request's completion, waiting for it (a request
    /// always completes: by the service, or by its drop).
    pub fn wait_result(&self) -> Option<Done> {
        let done = self.results.recv().ok();
        poll::drain(self.done.as_fd());
        done
    }
}

/// Take requests and call `service`'s hooks until serving ends: the callback
/// API on top of the requests. A panicking hook fails its step instead of
/// taking the serve loop down.
pub fn dispatch(requests: &Requests, service: &dyn Service) {
    while let Some(request) = requests.wait() {
        let outcome = catch_unwind(AssertUnwindSafe(|| match request.kind() {
            RequestKind::Drain => Some(Done::Drained(
                service.drain(&request.context().expect("drain has a context")),
            )),
            RequestKind::Seal => Some(Done::Sealed(
                service.seal(&request.context().expect("seal has a context")),
            )),
            RequestKind::Resume => Some(Done::Resumed(service.resume_after_abort())),
            RequestKind::Ended(_) => None,
        }));
        match outcome {
            Ok(Some(Done::Drained(report))) => request.complete_drain(report),
            Ok(Some(Done::Sealed(report))) => request.complete_seal(report),
            Ok(Some(Done::Resumed(result))) => request.complete_resume(result),
            Ok(None) => return,
            Err(_) => {
                let kind = request.kind();
                request.fail(format!("the {kind:?} hook panicked"));
            }
        }
    }
}
