//! The thread that runs the service's hooks, so that the serve loop goes on
//! answering heartbeats, other connections and the clock while a hook works.
//! One job at a time; each result wakes the serve loop through a pipe.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread::Scope;
use std::time::{Duration, Instant};

use crate::channel::Sender;
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::poll;
use crate::service::{DrainReport, HookContext, HookError, SealReport, Service};

use super::session::Hook;

pub enum Job {
    /// Drain or seal within `budget`; `sender` reaches the supervisor (seal
    /// progress).
    Run {
        hook: Hook,
        budget: Duration,
        sender: Sender,
    },
    Resume,
}

#[derive(Debug)]
pub enum Done {
    Drained(std::result::Result<DrainReport, HookError>),
    Sealed(std::result::Result<SealReport, HookError>),
    Resumed(std::result::Result<(), HookError>),
}

pub struct HookRunner {
    jobs: mpsc::Sender<Job>,
    results: mpsc::Receiver<Done>,
    ready: OwnedFd,
}

impl HookRunner {
    /// Start the hook thread in `scope`; it ends when the runner is dropped.
    pub fn start<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        service: &'env dyn Service,
    ) -> Result<HookRunner> {
        let (ready, wake) = poll::pipe().map_err(Error::Stream)?;
        poll::set_nonblocking(ready.as_fd()).map_err(Error::Stream)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (report, results) = mpsc::channel();
        std::thread::Builder::new()
            .name("handoff-hooks".into())
            .spawn_scoped(scope, move || {
                for job in queue {
                    if report.send(run(service, job)).is_err() {
                        return;
                    }
                    poll::wake(wake.as_fd());
                }
            })
            .map_err(Error::Stream)?;
        Ok(HookRunner {
            jobs,
            results,
            ready,
        })
    }

    pub fn submit(&self, job: Job) {
        // The thread only ends when `self.jobs` is dropped.
        let _ = self.jobs.send(job);
    }

    /// Readable when a result is waiting.
    pub fn ready_fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    /// A finished job's result, without waiting.
    pub fn try_result(&self) -> Option<Done> {
        poll::drain(self.ready.as_fd());
        self.results.try_recv().ok()
    }

    /// The running job's result, waiting for it.
    pub fn wait_result(&self) -> Option<Done> {
        let done = self.results.recv().ok();
        poll::drain(self.ready.as_fd());
        done
    }
}

fn run(service: &dyn Service, job: Job) -> Done {
    // A panicking hook fails its step instead of taking the serve loop down.
    let guarded = |name: &str, f: &mut dyn FnMut() -> Done| {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
            let failure = Err(HookError(format!("the {name} hook panicked")));
            match name {
                "drain" => Done::Drained(failure.map(|()| DrainReport::default())),
                "seal" => Done::Sealed(failure.map(|()| SealReport::default())),
                _ => Done::Resumed(failure),
            }
        })
    };
    match job {
        Job::Run {
            hook,
            budget,
            sender,
        } => {
            let ctx = HookContext {
                deadline: Instant::now() + budget,
                sender: &sender,
            };
            match hook {
                Hook::Drain => guarded("drain", &mut || {
                    crash_point!("O_IN_DRAIN");
                    Done::Drained(service.drain(&ctx))
                }),
                Hook::Seal => guarded("seal", &mut || {
                    crash_point!("O_IN_SEAL");
                    Done::Sealed(service.seal(&ctx))
                }),
            }
        }
        Job::Resume => guarded("resume_after_abort", &mut || {
            Done::Resumed(service.resume_after_abort())
        }),
    }
}
