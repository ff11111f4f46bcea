//! `minimal-rust DATA_DIR CONTROL_SOCKET`: the smallest real service on the handoff crate, to
//! copy as a start; run by a supervisor that passes the TCP listener "counter". A durable
//! counter: "INCR" appends the new value as a line to DATA_DIR/counter.log and fdatasyncs
//! before answering it; "GET" answers the value (the log's whole lines); "PING" answers
//! "PONG <pid> rust".

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use handoff::incumbent::{Incumbent, RequestKind, ServeOutcome, Serving};
use handoff::lock::DataDirLock;
use handoff::service::{DrainReport, SealReport};
use handoff::successor::{Readiness, Successor};

const MAX_LINE: usize = 64;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn die(why: impl std::fmt::Display) -> ! {
    eprintln!("minimal-rust[{}]: {why}", std::process::id());
    std::process::exit(1) // before Ready the supervisor rolls back
}

/// The log: one line per INCR, each fdatasynced before it is answered.
struct CounterLog {
    dir: PathBuf,
    file: Option<File>,
    value: u64,
}

impl CounterLog {
    /// Cold start, successor, resume: open it and count its whole lines.
    fn open(&mut self) -> std::io::Result<()> {
        let path = self.dir.join("counter.log");
        self.file = Some(File::options().append(true).create(true).open(&path)?);
        File::open(&self.dir)?.sync_all()?; // a new file's name is durable too
        let data = std::fs::read(&path)?;
        self.value = data.iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(())
    }

    fn incr(&mut self) -> String {
        let record = format!("{}\n", self.value + 1); // the record is the answer
        let Some(file) = self.file.as_mut() else {
            return "ERR the log is sealed\n".into();
        };
        if file.write_all(record.as_bytes()).is_err() {
            return "ERR write failed\n".into(); // a torn record has no newline: it never counts
        }
        if let Err(e) = file.sync_data() {
            die(format!("fdatasync: {e}")); // what reached the disk is unknown: never answer
        }
        self.value += 1;
        record
    }
}

fn answer(log: &mut CounterLog, line: &[u8]) -> String {
    match line {
        b"INCR" => log.incr(),
        b"GET" => format!("{}\n", log.value),
        b"PING" => format!("PONG {} rust\n", std::process::id()),
        _ => "ERR unknown command\n".into(),
    }
}

/// A connection: its stream, the start of a line, and whether it skips an overlong one.
type Conn = (TcpStream, Vec<u8>, bool);

/// Answer every whole line the connection has sent; false: close it.
fn serve_conn(log: &mut CounterLog, (stream, pending, skipping): &mut Conn) -> bool {
    let mut buf = [0u8; MAX_LINE];
    match stream.read(&mut buf[..MAX_LINE - pending.len()]) {
        Ok(0) => return false,
        Ok(n) => pending.extend_from_slice(&buf[..n]),
        Err(e) => return matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    }
    while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=nl).collect();
        let line = line[..nl].strip_suffix(b"\r").unwrap_or(&line[..nl]);
        let out = if std::mem::take(skipping) {
            "ERR line too long\n".into()
        } else {
            answer(log, line)
        };
        // Non-blocking: a client that lets its answers pile up unread is dropped.
        if stream.write_all(out.as_bytes()).is_err() {
            return false;
        }
    }
    if pending.len() == MAX_LINE {
        (*skipping, *pending) = (true, Vec::new()); // too long: skip to its newline, answered then
    }
    true
}

/// The service's own loop: the handoff's requests, the listener, the connections.
fn serve(serving: &Serving, listener: &TcpListener, log: &mut CounterLog) -> Result<()> {
    let mut conns: Vec<Conn> = Vec::new();
    let mut accepting = true;
    loop {
        let listening = if accepting { listener.as_raw_fd() } else { -1 };
        let watched = [serving.requests().fd().as_raw_fd(), listening];
        let streams = conns.iter().map(|(stream, _, _)| stream.as_raw_fd());
        let mut fds: Vec<libc::pollfd> = (watched.into_iter().chain(streams))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        handoff::poll::poll(&mut fds, None)?;
        for i in (0..conns.len()).rev() {
            if fds[2 + i].revents != 0 && !serve_conn(log, &mut conns[i]) {
                conns.swap_remove(i); // backwards: the last one, moved to i, was served already
            }
        }
        // Poll, then accept: the listener's O_NONBLOCK is shared and either way works.
        if fds[1].revents != 0 {
            match listener.accept() {
                Ok((stream, _)) if stream.set_nonblocking(true).is_ok() => {
                    conns.push((stream, Vec::new(), false));
                }
                Ok(_) => {} // closed: it could not be served without stalling the loop
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                // Out of descriptors: let one free up rather than spin.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let Some(request) = serving.requests().take() else {
            continue;
        };
        match request.kind() {
            RequestKind::Drain => {
                accepting = false; // clients wait in the kernel's queue
                for mut conn in conns.drain(..) {
                    serve_conn(log, &mut conn); // answer what it sent, then close it
                }
                let drained = DrainReport {
                    accept_closed: true,
                    ..Default::default()
                };
                request.complete_drain(Ok(drained));
            }
            RequestKind::Seal => {
                log.file = None; // every record is synced already: close the log
                let revision = vec![log.value];
                let sealed = SealReport {
                    last_revision_per_shard: revision,
                    ..Default::default()
                };
                request.complete_seal(Ok(sealed));
            }
            RequestKind::Resume => {
                if log.file.is_none() {
                    log.open()?; // rolled back: the library holds the lock again
                }
                accepting = true;
                request.complete_resume(Ok(()));
            }
            RequestKind::Ended(_) => return Ok(()), // committed (the successor serves) or superseded
        }
    }
}

fn run(data_dir: &Path, control: &Path) -> Result<ServeOutcome> {
    let mut inherited = handoff::listeners::detect()?; // early: before other threads start
    let mut log = CounterLog {
        dir: data_dir.to_owned(),
        file: None,
        value: 0,
    };
    let (listener, incumbent) = if let Some(control_fd) = inherited.take_control() {
        // HANDOFF_ROLE=successor
        let mut successor = Successor::new(control_fd, inherited.into_listeners())?;
        successor.handshake(b"minimal-rust")?;
        // The incumbent drains and seals meanwhile; until Begin, touch nothing.
        successor.wait_for_begin(Duration::from_secs(60))?;
        // Until Ready (the guard's end): a slow start is not a dead one.
        let _heartbeats = successor.start_heartbeats(Duration::from_secs(2));
        let listener = successor
            .listeners()?
            .take_tcp("counter")?
            .ok_or("no listener counter")?;
        let lock = DataDirLock::acquire_with_retry(data_dir, Duration::from_secs(5))?;
        log.open()?;
        let ready = Readiness {
            healthz_ok: true,
            ..Readiness::default()
        };
        (listener, successor.announce_ready(ready, control, lock)?)
    } else {
        let listener = inherited.listeners_mut().take_tcp("counter")?;
        let listener = listener.ok_or("no listener counter (run me under a supervisor)")?;
        let lock = DataDirLock::acquire_with_retry(data_dir, Duration::from_secs(5))?;
        log.open()?;
        (listener, Incumbent::bind(control, lock)?)
    };
    let serving = incumbent.start().map_err(|not_started| not_started.error)?;
    serve(&serving, &listener, &mut log)?;
    Ok(serving.join()?) // the log was closed by the seal
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [data_dir, control] = args.as_slice() else {
        die("usage: minimal-rust DATA_DIR CONTROL_SOCKET");
    };
    match run(data_dir, control) {
        Ok(outcome) => std::process::exit(i32::from(outcome == ServeOutcome::Stopped)),
        Err(e) => die(e),
    }
}
