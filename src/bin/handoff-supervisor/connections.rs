//! How many trigger (and metrics) connections are served at once, and who
//! makes room: a connection that has not sent its request yet is idle, and
//! the oldest idle one is closed for a newcomer, so that clients that
//! connect and say nothing cannot lock an operator out. The bound also
//! keeps descriptors for the handoffs themselves.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Connections served at once, whatever the descriptor limit.
const MAX_CONNECTIONS: usize = 64;

#[derive(Clone)]
pub struct Connections(Arc<Mutex<Inner>>);

struct Inner {
    max: usize,
    active: usize,
    /// Connections waiting for their request, oldest first.
    idle: VecDeque<Idle>,
    next_id: u64,
}

struct Idle {
    id: u64,
    fd: RawFd,
    evicted: Arc<AtomicBool>,
}

/// One admitted connection; it leaves the count when dropped.
pub struct Ticket {
    connections: Connections,
    id: u64,
    evicted: Arc<AtomicBool>,
}

/// What `admit` did.
pub enum Admission {
    Admitted(Ticket),
    /// Room was made by closing the oldest idle connection.
    AdmittedByEviction(Ticket),
    /// Every slot serves a request: try again later.
    Busy,
}

impl Connections {
    /// At most half the descriptors still free (`free`) go to connections.
    pub fn new(free: usize) -> Connections {
        Connections(Arc::new(Mutex::new(Inner {
            max: (free / 2).clamp(1, MAX_CONNECTIONS),
            active: 0,
            idle: VecDeque::new(),
            next_id: 0,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn max(&self) -> usize {
        self.lock().max
    }

    /// Admit the connection on `fd` (open until its ticket is dropped).
    pub fn admit(&self, fd: RawFd) -> Admission {
        let mut inner = self.lock();
        let mut evicted_one = false;
        if inner.active >= inner.max {
            let Some(oldest) = inner.idle.pop_front() else {
                return Admission::Busy;
            };
            oldest.evicted.store(true, Ordering::Release);
            // Its reader sees end of file and answers; we write nothing.
            // SAFETY: shutdown(2) on a descriptor that stays open while it
            // is listed as idle (its ticket unlists it, under this lock,
            // before the stream is closed); no memory effects.
            unsafe { libc::shutdown(oldest.fd, libc::SHUT_RD) };
            inner.active -= 1;
            evicted_one = true;
        }
        inner.active += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let evicted = Arc::new(AtomicBool::new(false));
        inner.idle.push_back(Idle {
            id,
            fd,
            evicted: Arc::clone(&evicted),
        });
        let ticket = Ticket {
            connections: self.clone(),
            id,
            evicted,
        };
        if evicted_one {
            Admission::AdmittedByEviction(ticket)
        } else {
            Admission::Admitted(ticket)
        }
    }
}

impl Ticket {
    /// The request arrived (or reading it ended): no longer idle. Whether
    /// the connection was closed to make room for another.
    pub fn done_waiting(&self) -> bool {
        self.connections.lock().idle.retain(|i| i.id != self.id);
        self.evicted.load(Ordering::Acquire)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.connections.lock();
        inner.idle.retain(|i| i.id != self.id);
        // An evicted connection left the count when it was evicted.
        if !self.evicted.load(Ordering::Acquire) {
            inner.active -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_idle_connection_makes_room() {
        let (a, _a) = std::os::unix::net::UnixStream::pair().unwrap();
        let (b, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (c, _c) = std::os::unix::net::UnixStream::pair().unwrap();
        use std::os::fd::AsRawFd;
        let connections = Connections::new(4);
        assert_eq!(connections.max(), 2);
        let Admission::Admitted(first) = connections.admit(a.as_raw_fd()) else {
            panic!("first refused")
        };
        let Admission::Admitted(second) = connections.admit(b.as_raw_fd()) else {
            panic!("second refused")
        };
        assert!(!second.done_waiting());
        let Admission::AdmittedByEviction(third) = connections.admit(c.as_raw_fd()) else {
            panic!("no room made")
        };
        assert!(first.done_waiting());
        // Two serve requests: nobody idle to close.
        assert!(!third.done_waiting());
        assert!(matches!(connections.admit(c.as_raw_fd()), Admission::Busy));
        drop(first);
        drop(second);
        assert!(matches!(
            connections.admit(c.as_raw_fd()),
            Admission::Admitted(_)
        ));
    }
}
