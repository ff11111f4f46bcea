//! The event loop: one thread owns the listener, every connection and the
//! store, and carries out the handoff's requests (drain, seal, resume, the
//! end of serving) that libhandoff's serve thread hands it through one
//! descriptor, across as many iterations as each needs.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use handoff::incumbent::{Request, RequestKind, ServeOutcome, Serving};
use handoff::protocol::ItemKind;
use handoff::service::{DrainReport, MovedItem, SealReport};

use crate::conn::Conn;
use crate::say;
use crate::store::Store;

/// How long a v1 drain waits for the first request of a connection it has
/// heard nothing from yet (capped by half the drain's budget).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Out of descriptors: how long the listener is left unpolled.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

pub struct Server {
    store: Store,
    listener: TcpListener,
    conns: Vec<Conn>,
    /// Connections served at once; more wait in the listener's queue.
    max_conns: usize,
    accepting: bool,
    /// Out of descriptors (EMFILE and the like): the listener is not polled
    /// until then, so a full descriptor table is not a busy loop.
    accept_resume_at: Option<Instant>,
    /// Logged once per episode.
    accept_starved: bool,
    /// The drain in progress, and when its grace ends.
    drain: Option<(Request, Instant)>,
    /// The log is fsynced by a seal and kept open for a resume.
    sealed: bool,
    /// Serving ended: step down once the lingering connections ran out.
    finished: bool,
    pub exit_code: i32,
}

impl Server {
    pub fn new(store: Store, listener: TcpListener, conns: Vec<Conn>, max_conns: usize) -> Server {
        Server {
            store,
            listener,
            conns,
            max_conns,
            accepting: true,
            accept_resume_at: None,
            accept_starved: false,
            drain: None,
            sealed: false,
            finished: false,
            exit_code: 0,
        }
    }

    fn draining(&self) -> bool {
        self.drain.is_some()
    }

    /// Serve until serving ends and the lingering connections ran out, or
    /// `signals` becomes readable (true: stopped by a signal).
    pub fn serve(&mut self, serving: &mut Serving, signals: BorrowedFd<'_>) -> bool {
        // Adopted connections: their carried output goes first (the loop
        // flushes it), then their carried input is answered.
        for conn in &mut self.conns {
            conn.process_input(false, &mut |line| self.store.answer(line));
        }
        let mut fds = Vec::new();
        let mut polled = Vec::new();
        loop {
            if self.finished && self.conns.is_empty() {
                return false;
            }
            let now = Instant::now();
            fds.clear();
            polled.clear();
            fds.push(pollfd(signals.as_raw_fd(), libc::POLLIN));
            fds.push(pollfd(serving.requests().fd().as_raw_fd(), libc::POLLIN));
            let starved_until = self.accept_resume_at.filter(|&at| now < at);
            let listening = self.accepting
                && !self.finished
                && self.conns.len() < self.max_conns
                && starved_until.is_none();
            if listening {
                fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
            }
            let first_conn = fds.len();
            // Nothing timed to do: sleep until a descriptor wakes the loop.
            let mut wake_at = starved_until.filter(|_| self.accepting && !self.finished);
            for (i, conn) in self.conns.iter().enumerate() {
                if conn.moved {
                    continue;
                }
                let mut events = 0;
                if conn.wants_input() {
                    events |= libc::POLLIN;
                }
                if conn.out_pending() > 0 {
                    events |= libc::POLLOUT;
                }
                wake_at = earliest(wake_at, conn.linger_deadline());
                fds.push(pollfd(conn.stream.as_raw_fd(), events));
                polled.push(i);
            }
            wake_at = earliest(wake_at, self.drain.as_ref().map(|(_, grace)| *grace));
            if let Err(e) = handoff::poll::poll(&mut fds, wake_at) {
                crate::fatal(&format!("poll: {e}"));
            }
            if fds[0].revents != 0 {
                let signal = crate::signals::take();
                say(&format!("signal {signal}: shutting down"));
                return true;
            }
            // Requests that have arrived are read before a drain is taken
            // up, so that they are answered rather than cut off.
            let draining = self.draining();
            for (slot, &i) in polled.iter().enumerate() {
                if fds[first_conn + slot].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR)
                    != 0
                {
                    self.conns[i].read(draining, &mut |line| self.store.answer(line));
                }
            }
            if listening && fds[2].revents & libc::POLLIN != 0 && self.accepting {
                self.accept_some();
            }
            if fds[1].revents != 0 {
                self.take_requests(serving);
            }
            // Group commit: every write of this iteration is made durable
            // before any answer leaves, so no client sees a value that
            // could be lost.
            self.store.sync();
            let now = Instant::now();
            for conn in self.conns.iter_mut().filter(|c| !c.moved) {
                conn.flush();
                let linger_over = conn
                    .linger_deadline()
                    .is_some_and(|at| conn.eof || now >= at);
                if linger_over || (!conn.lingering && conn.eof && conn.out_pending() == 0) {
                    conn.dead = true;
                }
            }
            self.reap();
            self.drain_step();
            if self.finished {
                // Stepping down: everything was drained; let the lingering
                // connections run out.
                self.conns.iter_mut().for_each(Conn::linger);
                self.reap();
            }
        }
    }

    /// Stopped: drop the drain in progress (it fails), close every
    /// connection, fsync and close the log.
    pub fn shut_down(&mut self) {
        self.drain = None;
        self.conns.clear();
        self.store.close();
    }

    fn reap(&mut self) {
        self.conns.retain(|c| !c.dead);
    }

    /// Connections still served here (not lingering, not moved).
    fn live_conns(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| !c.lingering && !c.moved)
            .count()
    }

    /// Accept what is waiting. The listener's O_NONBLOCK flag is shared
    /// with every generation and never changed here: poll said it is
    /// readable; a non-blocking listener is accepted from until EAGAIN, a
    /// blocking one once per poll.
    fn accept_some(&mut self) {
        let nonblocking = handoff::sys::is_nonblocking(self.listener.as_raw_fd()).unwrap_or(false);
        let mut tries = if nonblocking { 64 } else { 1 };
        while tries > 0 && self.conns.len() < self.max_conns {
            tries -= 1;
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    let starved = matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    );
                    if !starved {
                        say(&format!("accept: {e}"));
                    } else {
                        // The connection stays queued; try again in a tick.
                        if !self.accept_starved {
                            say(&format!(
                                "accept: {e}; retrying every {} ms",
                                ACCEPT_RETRY.as_millis()
                            ));
                        }
                        self.accept_starved = true;
                        self.accept_resume_at = Some(Instant::now() + ACCEPT_RETRY);
                    }
                    return;
                }
            };
            if self.accept_starved {
                say("accepting again");
                self.accept_starved = false;
            }
            let _ = stream.set_nodelay(true);
            match Conn::new(stream) {
                Ok(conn) => self.conns.push(conn),
                Err(e) => say(&format!(
                    "accept: cannot make the connection non-blocking: {e}"
                )),
            }
        }
    }

    /// Take every request waiting. A drain is only begun here: drain_step
    /// completes it in this or a later iteration.
    fn take_requests(&mut self, serving: &mut Serving) {
        while let Some(request) = serving.requests().take() {
            match request.kind() {
                RequestKind::Drain => {
                    let budget = request.deadline().map_or(Duration::ZERO, |d| {
                        d.saturating_duration_since(Instant::now())
                    });
                    say(&format!("draining {} connection(s)", self.live_conns()));
                    self.accepting = false;
                    self.drain = Some((request, Instant::now() + DRAIN_GRACE.min(budget / 2)));
                    self.drain_step();
                }
                RequestKind::Seal => self.seal(request),
                RequestKind::Resume => self.resume(request, serving.finisher().generation()),
                RequestKind::Ended(outcome) => {
                    self.ended(outcome);
                    return;
                }
            }
        }
    }

    fn drain_step(&mut self) {
        let Some((request, grace)) = self.drain.as_ref() else {
            return;
        };
        if request.moves().is_some() {
            self.move_conns();
            return;
        }
        let late = Instant::now() >= *grace;
        for conn in self.conns.iter_mut().filter(|c| !c.dead && !c.lingering) {
            if conn.out_pending() > 0 {
                conn.dead |= late;
                continue;
            }
            // A connection that has not sent its first request yet (or
            // sent part of a line) gets until the grace ends.
            if conn.drainable() || late {
                conn.linger();
            }
        }
        self.reap();
        if self.live_conns() > 0 {
            return;
        }
        let (request, _) = self.drain.take().expect("a drain in progress");
        self.store.sync();
        request.complete_drain(Ok(DrainReport {
            accept_closed: true,
            ..DrainReport::default()
        }));
    }

    /// A drain that moves (protocol v2): every connection goes to the
    /// successor at once with its partial line and all its unsent answers,
    /// instead of being drained. One whose peer closed its side moves too:
    /// the successor writes what is owed, reads the end of file and closes
    /// it. Nothing is fsynced or sent here: the seal, which the library
    /// queues right behind this drain, makes this iteration's writes
    /// durable, and no answer to them leaves before that (the successor
    /// writes carried answers only once it holds the lock; after an abort
    /// the loop's group commit comes before any send). The connections are
    /// passed on while that fsync runs.
    fn move_conns(&mut self) {
        let (request, _) = self.drain.take().expect("a drain in progress");
        let mut moved = Vec::new();
        for conn in self.conns.iter_mut().filter(|c| !c.dead && !c.lingering) {
            conn.moved = true;
            moved.push(MovedItem {
                kind: ItemKind::Connection,
                name: "kv".into(),
                fd: conn.stream.as_raw_fd(),
                unread: conn.unread().to_vec(),
                unwritten: conn.unwritten().to_vec(),
                state: vec![u8::from(conn.discarding)],
            });
        }
        self.reap();
        say(&format!(
            "moving {} connection(s) to the successor",
            moved.len()
        ));
        request.complete_drain(Ok(DrainReport {
            accept_closed: true,
            moved,
            ..DrainReport::default()
        }));
    }

    fn seal(&mut self, request: Request) {
        let records = self.store.records();
        // fsynced, not closed: a resume at the descriptor limit closes this
        // one to reopen the log by its path (a successor may have replaced it).
        // Fatal, as in the group commit: the answers a moving drain carried
        // wait for this fsync, and none may leave after it failed (a later
        // fsync may report success for pages the kernel dropped).
        let Some(log) = self.store.log.as_mut() else {
            say("seal failed: the log is closed");
            request.complete_seal(Err(handoff::service::HookError(
                "the log is closed".to_string(),
            )));
            return;
        };
        if let Err(e) = log.sync() {
            crate::fatal(&format!("seal: fsync {}: {e}", log.path().display()));
        }
        self.sealed = true;
        say(&format!("sealed at revision {records}"));
        request.complete_seal(Ok(SealReport {
            last_revision_per_shard: vec![records],
            ..SealReport::default()
        }));
    }

    fn resume(&mut self, request: Request, generation: u64) {
        // Moved connections are ours again, their flags restored by the
        // library (and closed by the step-down if the log cannot be reopened).
        for conn in &mut self.conns {
            conn.moved = false;
        }
        if std::mem::take(&mut self.sealed) {
            self.store.close(); // already fsynced by the seal
            if let Err(reason) = self.store.open(generation) {
                say(&format!("cannot reopen the log to resume: {reason}"));
                request.complete_resume(Err(handoff::service::HookError(reason)));
                self.finished = true;
                self.exit_code = 1;
                return;
            }
        }
        self.store.generation = generation;
        self.accepting = true;
        say(&format!(
            "resumed after an aborted handoff (generation {generation})"
        ));
        request.complete_resume(Ok(()));
    }

    /// Serving has ended: say how, and step down.
    fn ended(&mut self, outcome: Option<ServeOutcome>) {
        self.finished = true;
        self.accepting = false;
        self.drain = None;
        // The successor has the moved connections: close our copies (never
        // shutdown, which would end them for the successor too).
        self.conns.retain(|c| !c.moved);
        self.reap();
        self.exit_code = match outcome {
            Some(ServeOutcome::Committed) => {
                say("handoff committed: stepping down");
                0
            }
            Some(ServeOutcome::Superseded) => {
                say("superseded by another holder of the data dir: stepping down without writing");
                0
            }
            Some(ServeOutcome::Stopped) => {
                say("serving stopped");
                1
            }
            None => {
                say("error: the serve loop failed");
                1
            }
        };
    }
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
