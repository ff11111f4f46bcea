//! `minimal-rust DATA_DIR CONTROL_SOCKET`: the smallest real service on the handoff crate, to copy
//! as a start: a durable counter on the supervisor's TCP listener "counter" (see README.md).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use handoff::incumbent::{Incumbent, RequestKind, ServeOutcome, Serving};
use handoff::successor::{Readiness, Successor};

const MAX_LINE: usize = 64;

/// The log: one line per INCR, each fdatasynced before it is answered; `file` is None once sealed.
struct CounterLog {
    file: Option<File>,
    value: u64,
}

impl CounterLog {
    /// Cold start, successor, resume: open it and count its whole lines.
    fn open(dir: &Path) -> io::Result<CounterLog> {
        let path = dir.join("counter.log");
        let file = Some(File::options().append(true).create(true).open(&path)?);
        File::open(dir)?.sync_all()?; // a new file's name is durable too
        let value = std::fs::read_to_string(&path)?.matches('\n').count() as u64;
        Ok(CounterLog { file, value })
    }

    /// The answer to one line; Err: the log failed, which ends the service.
    fn answer(&mut self, line: &[u8]) -> io::Result<String> {
        if line == b"INCR" {
            let file = self.file.as_mut().ok_or(io::ErrorKind::NotConnected)?; // None: sealed
            self.value += 1;
            file.write_all(format!("{}\n", self.value).as_bytes())?; // the record is the answer
            file.sync_data()?; // failed: what reached the disk is unknown
        }
        Ok(match line {
            b"INCR" | b"GET" => format!("{}\n", self.value),
            b"PING" => format!("PONG {} rust\n", std::process::id()),
            _ => "ERR unknown command\n".into(),
        })
    }
}

/// Answer every whole line the readable connection has sent (begun in `line`); Ok(false): close it.
fn serve_conn(log: &mut CounterLog, (stream, line): &mut (TcpStream, Vec<u8>)) -> io::Result<bool> {
    let mut buf = [0u8; MAX_LINE];
    let Ok(n @ 1..) = stream.read(&mut buf[..MAX_LINE - line.len()]) else {
        return Ok(false); // closed by the client, or failed
    };
    line.extend_from_slice(&buf[..n]);
    let mut out = String::new();
    while let Some(nl) = line.iter().position(|&b| b == b'\n') {
        out += &log.answer(line.drain(..=nl).as_slice().trim_ascii_end())?;
    }
    // Non-blocking: a client that lets answers pile up unread is dropped; so is an overlong line.
    Ok(stream.write_all(out.as_bytes()).is_ok() && line.len() < MAX_LINE)
}

/// The service's own loop: the handoff's requests, the listener, the connections.
fn serve(serving: &Serving, ln: &TcpListener, mut log: CounterLog, dir: &Path) -> io::Result<()> {
    let requests = serving.requests();
    let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new(); // each with the start of a line
    let mut listening = ln.as_raw_fd(); // -1 while drained: not polled
    let pollin = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let mut fds = vec![pollin(requests.fd().as_raw_fd()), pollin(listening)];
        fds.extend(conns.iter().map(|(stream, _)| pollin(stream.as_raw_fd())));
        handoff::poll::poll(&mut fds, None)?;
        for i in (0..conns.len()).rev() {
            if fds[2 + i].revents != 0 && !serve_conn(&mut log, &mut conns[i])? {
                conns.swap_remove(i); // backwards: the last one, moved to i, was served
            }
        }
        // Poll, then accept: either works with the shared O_NONBLOCK (kv-rust backs off on EMFILE).
        if let Some(Ok((stream, _))) = (fds[1].revents != 0).then(|| ln.accept()) {
            if stream.set_nonblocking(true).is_ok() {
                conns.push((stream, Vec::new()));
            }
        }
        if let Some(request) = requests.take() {
            match request.kind() {
                RequestKind::Drain => {
                    listening = -1; // clients wait in the kernel's queue
                    conns.clear(); // closed: what they had sent by the poll is answered
                    request.complete_drain(Ok(handoff::service::DrainReport {
                        accept_closed: true,
                        ..Default::default()
                    }));
                }
                RequestKind::Seal => {
                    log.file = None; // every record is synced already: close the log
                    request.complete_seal(Ok(Default::default()));
                }
                RequestKind::Resume => {
                    log = CounterLog::open(dir)?; // rolled back: the library holds the lock again
                    listening = ln.as_raw_fd();
                    request.complete_resume(Ok(()));
                }
                RequestKind::Ended(_) => return Ok(()), // committed or superseded: step down
            }
        }
    }
}

fn run() -> Result<ServeOutcome, Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [data_dir, control] = args.as_slice() else {
        return Err("usage: minimal-rust DATA_DIR CONTROL_SOCKET".into());
    };
    let mut inherited = handoff::listeners::detect()?; // early: before any other thread starts
    let (mut successor, mut heartbeats) = (None, None);
    let listener = match inherited.take_control() {
        // Some: HANDOFF_ROLE=successor
        Some(fd) => {
            let successor = successor.insert(Successor::from_inherited(fd, inherited)?);
            successor.handshake(b"minimal-rust")?;
            heartbeats = Some(successor.start_heartbeats(Duration::from_secs(2))); // Begin to Ready
            successor.wait_for_begin(Duration::from_secs(60))?; // the incumbent drains, seals
            successor.listeners()?.take_tcp("counter")?
        }
        None => inherited.listeners_mut().take_tcp("counter")?,
    };
    let listener = listener.ok_or("no listener counter (run me under a supervisor)")?;
    let lock = handoff::lock::DataDirLock::acquire_with_retry(data_dir, Duration::from_secs(5))?;
    let log = CounterLog::open(data_dir)?;
    let ready = Readiness {
        healthz_ok: true,
        ..Readiness::default()
    };
    drop(heartbeats); // they end with Ready
    let incumbent = match successor {
        Some(successor) => successor.announce_ready(ready, control, lock)?,
        None => Incumbent::bind(control, lock)?,
    };
    let serving = incumbent.start().map_err(|not_started| not_started.error)?;
    serve(&serving, &listener, log, data_dir)?;
    Ok(serving.join()?) // the log was closed by the seal
}

fn main() -> std::process::ExitCode {
    // A failure ends the service: before Ready the supervisor rolls back, after it restarts it.
    let outcome = run().inspect_err(|e| eprintln!("minimal-rust[{}]: {e}", std::process::id()));
    u8::from(!outcome.is_ok_and(|o| o != ServeOutcome::Stopped)).into() // 1: stopped or failed
}
