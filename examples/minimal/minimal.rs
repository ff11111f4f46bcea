//! `minimal-rust DATA_DIR CONTROL_SOCKET`: the smallest real service on the handoff crate, to
//! copy as a start; run by a supervisor that passes the TCP listener "counter". A durable
//! counter: "INCR" appends the new value as a line to DATA_DIR/counter.log and fdatasyncs
//! before answering it; "GET" answers the value (the log's whole lines); "PING" answers
//! "PONG <pid> rust".

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use handoff::incumbent::{Incumbent, RequestKind, ServeOutcome, Serving};
use handoff::lock::DataDirLock;
use handoff::service::{DrainReport, SealReport};
use handoff::successor::{Readiness, Successor};

const MAX_LINE: usize = 64;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The log: one line per INCR, each fdatasynced before it is answered.
struct CounterLog {
    file: File,
    value: u64,
}

impl CounterLog {
    /// Cold start, successor, resume: open it and count its whole lines.
    fn open(dir: &Path) -> io::Result<CounterLog> {
        let path = dir.join("counter.log");
        let file = File::options().append(true).create(true).open(&path)?;
        File::open(dir)?.sync_all()?; // a new file's name is durable too
        let data = std::fs::read(&path)?;
        let value = data.iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(CounterLog { file, value })
    }

    /// The answer to one line; Err: a failed fdatasync, after which the service cannot go on.
    fn answer(&mut self, line: &[u8]) -> io::Result<String> {
        Ok(match line {
            b"INCR" => {
                let record = format!("{}\n", self.value + 1); // the record is the answer
                if self.file.write_all(record.as_bytes()).is_err() {
                    return Ok("ERR write failed\n".into()); // a torn record has no newline
                }
                self.file.sync_data()?; // what reached the disk is unknown: never answer
                self.value += 1;
                record
            }
            b"GET" => format!("{}\n", self.value),
            b"PING" => format!("PONG {} rust\n", std::process::id()),
            _ => "ERR unknown command\n".into(),
        })
    }
}

/// Answer every whole line the (readable) connection has sent; Ok(false): close it.
fn serve_conn(log: &mut CounterLog, conn: &mut (TcpStream, Vec<u8>)) -> io::Result<bool> {
    let (stream, pending) = conn;
    let mut buf = [0u8; MAX_LINE];
    let Ok(n @ 1..) = stream.read(&mut buf[..MAX_LINE - pending.len()]) else {
        return Ok(false); // closed by the client, or failed
    };
    pending.extend_from_slice(&buf[..n]);
    let mut out = String::new();
    while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=nl).collect();
        out += &log.answer(line.trim_ascii_end())?;
    }
    if pending.len() >= MAX_LINE {
        out += "ERR line too long\n"; // then close (kv-rust skips the line)
    }
    // Non-blocking: a client that lets its answers pile up unread is dropped.
    Ok(stream.write_all(out.as_bytes()).is_ok() && pending.len() < MAX_LINE)
}

/// The service's own loop: the handoff's requests, the listener, the connections.
fn serve(serving: &Serving, listener: &TcpListener, log: CounterLog, dir: &Path) -> Result<()> {
    let mut log = Some(log); // None once sealed (and no connection is open then)
    let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new(); // each with the start of a line
    let mut listening = listener.as_raw_fd(); // -1 while drained: not polled
    loop {
        let watched = [serving.requests().fd().as_raw_fd(), listening];
        let streams = conns.iter().map(|(stream, _)| stream.as_raw_fd());
        let mut fds: Vec<libc::pollfd> = (watched.into_iter().chain(streams))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        handoff::poll::poll(&mut fds, None)?;
        if let Some(log) = log.as_mut() {
            for i in (0..conns.len()).rev() {
                if fds[2 + i].revents != 0 && !serve_conn(log, &mut conns[i])? {
                    conns.swap_remove(i); // backwards: the last one, moved to i, was served
                }
            }
        }
        // Poll, then accept: either works with the shared O_NONBLOCK (kv-rust backs off on EMFILE).
        if fds[1].revents != 0 {
            if let Ok((stream, _)) = listener.accept() {
                if stream.set_nonblocking(true).is_ok() {
                    conns.push((stream, Vec::new()));
                }
            }
        }
        let Some(request) = serving.requests().take() else {
            continue;
        };
        match request.kind() {
            RequestKind::Drain => {
                listening = -1; // clients wait in the kernel's queue
                conns.clear(); // closed: what they had sent by the poll is answered
                request.complete_drain(Ok(DrainReport {
                    accept_closed: true,
                    ..Default::default()
                }));
            }
            RequestKind::Seal => {
                log = None; // every record is synced already: close the log
                request.complete_seal(Ok(SealReport::default()));
            }
            RequestKind::Resume => {
                log = Some(CounterLog::open(dir)?); // rolled back: the library holds the lock again
                listening = listener.as_raw_fd();
                request.complete_resume(Ok(()));
            }
            RequestKind::Ended(_) => return Ok(()), // committed (the successor serves) or superseded
        }
    }
}

fn run() -> Result<ServeOutcome> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [data_dir, control] = args.as_slice() else {
        return Err("usage: minimal-rust DATA_DIR CONTROL_SOCKET".into());
    };
    let mut inherited = handoff::listeners::detect()?; // early: before other threads start
    let (mut successor, mut heartbeats) = (None, None);
    let listener = match inherited.take_control() {
        Some(control_fd) => {
            // HANDOFF_ROLE=successor
            let new = Successor::new(control_fd, inherited.into_listeners())?;
            let successor = successor.insert(new);
            successor.handshake(b"minimal-rust")?;
            // Meanwhile the incumbent drains and seals: until Begin, touch nothing.
            successor.wait_for_begin(Duration::from_secs(60))?;
            // Until Ready: a slow start is not a dead one.
            heartbeats = Some(successor.start_heartbeats(Duration::from_secs(2)));
            successor.listeners()?.take_tcp("counter")?
        }
        None => inherited.listeners_mut().take_tcp("counter")?,
    };
    let listener = listener.ok_or("no listener counter (run me under a supervisor)")?;
    let lock = DataDirLock::acquire_with_retry(data_dir, Duration::from_secs(5))?;
    let log = CounterLog::open(data_dir)?;
    let ready = Readiness {
        healthz_ok: true,
        ..Readiness::default()
    };
    drop(heartbeats); // they stop before Ready: one writer on the control socket
    let incumbent = match successor {
        Some(successor) => successor.announce_ready(ready, control, lock)?,
        None => Incumbent::bind(control, lock)?,
    };
    let serving = incumbent.start().map_err(|not_started| not_started.error)?;
    serve(&serving, &listener, log, data_dir)?;
    Ok(serving.join()?) // the log was closed by the seal
}

fn main() -> ExitCode {
    match run() {
        Ok(outcome) => ExitCode::from(u8::from(outcome == ServeOutcome::Stopped)),
        Err(e) => {
            eprintln!("minimal-rust[{}]: {e}", std::process::id());
            ExitCode::FAILURE // before Ready the supervisor rolls back
        }
    }
}
