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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::channel::Sender;
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::poll;
use crate::service::{DrainReport, HookContext, HookError, SealReport, Service};

use super::session::seal_follows;
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
    /// `seal_queued`: the drain succeeded and queued the seal that follows
    /// it (`Mailbox::submit_drain`), that seal numbered so.
    Drained {
        report: std::result::Result<DrainReport, HookError>,
        seal_queued: Option<u64>,
    },
    /// `following`: the number of the drain's queued seal this was, or
    /// None for one the serve loop submitted.
    Sealed {
        report: std::result::Result<SealReport, HookError>,
        following: Option<u64>,
    },
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
    /// A drain's: the seal its success queues.
    then_seal: Option<FollowingSeal>,
    /// A queued seal's number.
    following: Option<u64>,
}

/// Where a completion goes.
#[derive(Clone)]
struct Reply {
    results: mpsc::Sender<Done>,
    wake: Arc<OwnedFd>,
}

/// The seal a drain's success queues from the service's own thread: the
/// service finds it at its next look instead of after a round trip through
/// the serve loop's thread (two thread wake-ups in the blackout). Queued
/// only when the session will seal (`seal_follows`, and not abandoned);
/// one the serve loop does not take up after all (an abort came just then)
/// still runs, as a seal an abort overtakes does, and its completion is
/// ignored: the rollback's resume is queued after it.
struct FollowingSeal {
    number: u64,
    deadline: Instant,
    /// The successor's capacity for moved descriptors, as the drain's.
    moves: Option<u32>,
    /// Set by the serve loop once the drain is abandoned (an abort, a
    /// failure): no seal follows it then.
    abandoned: Arc<AtomicBool>,
    queue: mpsc::Sender<Request>,
    announce: Arc<OwnedFd>,
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

    pub fn complete_drain(mut self, report: std::result::Result<DrainReport, HookError>) {
        let follow = self.then_seal.take().filter(|follow| {
            !follow.abandoned.load(Ordering::Acquire)
                && report
                    .as_ref()
                    .is_ok_and(|report| seal_follows(report, follow.moves))
        });
        let seal_queued = match (follow, &self.reply) {
            (Some(follow), Some(reply)) if self.kind == RequestKind::Drain => {
                // Queued before the drain's completion is sent: the serve
                // loop, once it has that, finds the seal waiting already.
                let number = follow.number;
                let seal = Request {
                    kind: RequestKind::Seal,
                    deadline: Some(follow.deadline),
                    moves: None,
                    sender: self.sender.clone(),
                    reply: Some(reply.clone()),
                    then_seal: None,
                    following: Some(number),
                };
                if follow.queue.send(seal).is_ok() {
                    poll::wake(follow.announce.as_fd());
                    Some(number)
                } else {
                    None
                }
            }
            _ => None,
        };
        self.finish(
            RequestKind::Drain,
            Done::Drained {
                report,
                seal_queued,
            },
        );
    }

    pub fn complete_seal(self, report: std::result::Result<SealReport, HookError>) {
        let following = self.following;
        self.finish(RequestKind::Seal, Done::Sealed { report, following });
    }

    pub fn complete_resume(self, result: std::result::Result<(), HookError>) {
        self.finish(RequestKind::Resume, Done::Resumed(result));
    }

    /// Fail whatever this request is.
    pub fn fail(mut self, reason: impl Into<String>) {
        if let Some(done) = failure(self.kind, self.following, reason.into()) {
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
            self.following,
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
            if let Some(done) = failure(
                self.kind,
                self.following,
                "the service dropped the request".into(),
            ) {
                self.send(done);
            }
        }
    }
}

fn failure(kind: RequestKind, following: Option<u64>, reason: String) -> Option<Done> {
    let e = Err(HookError(reason));
    match kind {
        RequestKind::Drain => Some(Done::Drained {
            report: e.map(|()| DrainReport::default()),
            seal_queued: None,
        }),
        RequestKind::Seal => Some(Done::Sealed {
            report: e.map(|()| SealReport::default()),
            following,
        }),
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
    announce: Arc<OwnedFd>,
    /// The last queued seal's number.
    seals: AtomicU64,
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
            announce: Arc::new(announce),
            seals: AtomicU64::new(0),
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
        self.queue_request(kind, deadline, moves, sender, None);
    }

    /// Hand the service a drain whose success queues the seal, due by
    /// `seal_by`, right away (`FollowingSeal`), unless `abandoned` is set
    /// by then.
    pub fn submit_drain(
        &self,
        deadline: Instant,
        moves: Option<u32>,
        sender: Sender,
        seal_by: Instant,
        abandoned: Arc<AtomicBool>,
    ) {
        let number = self.seals.fetch_add(1, Ordering::Relaxed) + 1;
        let then_seal = FollowingSeal {
            number,
            deadline: seal_by,
            moves,
            abandoned,
            queue: self.queue.clone(),
            announce: Arc::clone(&self.announce),
        };
        self.queue_request(
            RequestKind::Drain,
            Some(deadline),
            moves,
            Some(sender),
            Some(then_seal),
        );
    }

    fn queue_request(
        &self,
        kind: RequestKind,
        deadline: Option<Instant>,
        moves: Option<u32>,
        sender: Option<Sender>,
        then_seal: Option<FollowingSeal>,
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
            then_seal,
            following: None,
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
    enum Outcome {
        Drained(std::result::Result<DrainReport, HookError>),
        Sealed(std::result::Result<SealReport, HookError>),
        Resumed(std::result::Result<(), HookError>),
    }
    while let Some(request) = requests.wait() {
        let outcome = catch_unwind(AssertUnwindSafe(|| match request.kind() {
            RequestKind::Drain => Some(Outcome::Drained(
                service.drain(&request.context().expect("drain has a context")),
            )),
            RequestKind::Seal => Some(Outcome::Sealed(
                service.seal(&request.context().expect("seal has a context")),
            )),
            RequestKind::Resume => Some(Outcome::Resumed(service.resume_after_abort())),
            RequestKind::Ended(_) => None,
        }));
        match outcome {
            Ok(Some(Outcome::Drained(report))) => request.complete_drain(report),
            Ok(Some(Outcome::Sealed(report))) => request.complete_seal(report),
            Ok(Some(Outcome::Resumed(result))) => request.complete_resume(result),
            Ok(None) => return,
            Err(_) => {
                let kind = request.kind();
                request.fail(format!("the {kind:?} hook panicked"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn sender() -> Sender {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        Channel::new(ours).unwrap().sender()
    }

    fn drain_submitted(mailbox: &Mailbox, requests: &Requests) -> Request {
        submitted(mailbox, requests, None, Arc::default())
    }

    fn submitted(
        mailbox: &Mailbox,
        requests: &Requests,
        moves: Option<u32>,
        abandoned: Arc<AtomicBool>,
    ) -> Request {
        let now = Instant::now();
        mailbox.submit_drain(
            now,
            moves,
            sender(),
            now + Duration::from_secs(9),
            abandoned,
        );
        let drain = requests.take().expect("the drain is queued");
        assert_eq!(drain.kind(), RequestKind::Drain);
        assert!(requests.take().is_none(), "the seal waits for the drain");
        drain
    }

    #[test]
    fn a_drain_that_succeeds_queues_its_seal_from_the_completing_thread() {
        let (mailbox, requests) = mailbox().unwrap();
        let drain = drain_submitted(&mailbox, &requests);
        drain.complete_drain(Ok(DrainReport::default()));
        // There before the serve loop has even looked at the completion.
        let seal = requests.take().expect("the seal is queued");
        assert_eq!(seal.kind(), RequestKind::Seal);
        assert!(seal.deadline().is_some());
        let Some(Done::Drained {
            report: Ok(_),
            seal_queued: Some(number),
        }) = mailbox.try_result()
        else {
            panic!("the drain's completion names its queued seal")
        };
        seal.complete_seal(Ok(SealReport::default()));
        assert!(matches!(
            mailbox.try_result(),
            Some(Done::Sealed { report: Ok(_), following: Some(n) }) if n == number
        ));

        // The next drain's seal has a number of its own.
        let drain = drain_submitted(&mailbox, &requests);
        drain.complete_drain(Ok(DrainReport::default()));
        let seal = requests.take().unwrap();
        assert!(matches!(
            mailbox.try_result(),
            Some(Done::Drained { seal_queued: Some(next), .. }) if next != number
        ));
        // Dropped by the service: failed, still numbered.
        drop(seal);
        assert!(matches!(
            mailbox.try_result(),
            Some(Done::Sealed {
                report: Err(_),
                following: Some(_)
            })
        ));
    }

    /// The drain completed (`succeeded` or not) and no seal was queued.
    fn assert_no_seal_followed(mailbox: &Mailbox, requests: &Requests, succeeded: bool) {
        assert!(requests.take().is_none(), "no seal is queued");
        match mailbox.try_result() {
            Some(Done::Drained {
                report,
                seal_queued: None,
            }) => assert_eq!(report.is_ok(), succeeded),
            _ => panic!("the drain's completion, without a seal"),
        }
    }

    #[test]
    fn a_drain_that_fails_or_is_dropped_queues_no_seal() {
        let (mailbox, requests) = mailbox().unwrap();
        let drain = drain_submitted(&mailbox, &requests);
        drain.complete_drain(Err(HookError("disk full".into())));
        assert_no_seal_followed(&mailbox, &requests, false);

        drop(drain_submitted(&mailbox, &requests));
        assert_no_seal_followed(&mailbox, &requests, false);

        // Abandoned meanwhile (an abort): no seal follows.
        let abandoned = Arc::new(AtomicBool::new(false));
        let drain = submitted(&mailbox, &requests, None, Arc::clone(&abandoned));
        abandoned.store(true, Ordering::Release);
        drain.complete_drain(Ok(DrainReport::default()));
        assert_no_seal_followed(&mailbox, &requests, true);

        // More moved than the successor holds: the session waits for the
        // abort instead of sealing, so no seal follows.
        let drain = submitted(&mailbox, &requests, Some(0), Arc::default());
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let moved = crate::service::MovedItem {
            kind: crate::protocol::ItemKind::Connection,
            name: "kv".into(),
            fd: std::os::fd::AsRawFd::as_raw_fd(&ours),
            unread: Vec::new(),
            unwritten: Vec::new(),
            state: Vec::new(),
        };
        drain.complete_drain(Ok(DrainReport {
            moved: vec![moved],
            ..DrainReport::default()
        }));
        assert_no_seal_followed(&mailbox, &requests, true);

        // A plain seal (a drain the serve loop did not chain) is unnumbered.
        mailbox.submit(
            RequestKind::Seal,
            Some(Instant::now()),
            None,
            Some(sender()),
        );
        requests
            .take()
            .unwrap()
            .complete_seal(Ok(SealReport::default()));
        assert!(matches!(
            mailbox.try_result(),
            Some(Done::Sealed {
                following: None,
                ..
            })
        ));
    }
}
