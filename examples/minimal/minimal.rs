//! minimal-rust: the smallest real service on the handoff crate, to copy as a start.
//!
//! `minimal-rust DATA_DIR CONTROL_SOCKET` (run by a supervisor that passes the TCP listener
//! "counter"). A durable counter: "INCR" appends the new value as a line to
//! DATA_DIR/counter.log and fdatasyncs before answering it; "GET" answers the value (the
//! log's whole lines); "PING" answers "PONG <pid> rust". examples/minimal/ has it in every
//! language.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use handoff::incumbent::{Incumbent, RequestKind, ServeOutcome, Serving};
use handoff::listeners::detect;
use handoff::lock::DataDirLock;
use handoff::service::{DrainReport, SealReport};
use handoff::successor::{Readiness, Successor};

const MAX_CONNS: usize = 64;
const MAX_LINE: usize = 64;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

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
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)?;
        File::open(&self.dir)?.sync_all()?; // a new file's name is durable too
        self.value = data.iter().filter(|&&b| b == b'\n').count() as u64;
        self.file = Some(file);
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
            // What reached the disk is unknown: never answer.
            eprintln!("minimal-rust[{}]: fdatasync: {e}", std::process::id());
            std::process::exit(1);
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

struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// Answer every whole line the connection has sent; false: close it.
fn serve_conn(log: &mut CounterLog, conn: &mut Conn) -> bool {
    let mut buf = [0u8; MAX_LINE];
    let n = match conn.stream.read(&mut buf[..MAX_LINE - conn.pending.len()]) {
        Ok(0) => return false,
        Ok(n) => n,
        Err(e) => return matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    };
    conn.pending.extend_from_slice(&buf[..n]);
    while let Some(nl) = conn.pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = conn.pending.drain(..=nl).collect();
        let line = line[..nl].strip_suffix(b"\r").unwrap_or(&line[..nl]);
        // Non-blocking: a client that lets its answers pile up unread is dropped.
        if conn.stream.write_all(answer(log, line).as_bytes()).is_err() {
            return false;
        }
    }
    if conn.pending.len() == MAX_LINE {
        let _ = conn.stream.write_all(b"ERR line too long\n");
    }
    conn.pending.len() < MAX_LINE
}

/// The service's own loop: the handoff's requests, the listener, the connections.
fn serve(serving: &Serving, listener: &TcpListener, log: &mut CounterLog) -> Result<()> {
    let mut conns: Vec<Conn> = Vec::new();
    let mut accepting = true;
    loop {
        let watch = |fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let open = accepting && conns.len() < MAX_CONNS;
        let mut fds = vec![watch(serving.requests().fd().as_raw_fd())];
        fds.push(watch(if open { listener.as_raw_fd() } else { -1 }));
        fds.extend(conns.iter().map(|c| watch(c.stream.as_raw_fd())));
        handoff::poll::poll(&mut fds, None)?;
        for i in (0..conns.len()).rev() {
            if fds[2 + i].revents != 0 && !serve_conn(log, &mut conns[i]) {
                conns.swap_remove(i); // backwards: the last one, moved to i, was served already
            }
        }
        if fds[1].revents != 0 {
            // Poll, then accept: the listener's O_NONBLOCK is shared and either way works.
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(true)?;
                    conns.push(Conn { stream, pending: Vec::new() });
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                // Out of descriptors: let one free up rather than spin.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let Some(request) = (fds[0].revents != 0).then(|| serving.requests().take()).flatten()
        else {
            continue;
        };
        match request.kind() {
            RequestKind::Drain => {
                // Stop accepting (clients wait in the queue); answer, close.
                accepting = false;
                for mut conn in conns.drain(..) {
                    serve_conn(log, &mut conn);
                }
                let report = DrainReport { accept_closed: true, ..DrainReport::default() };
                request.complete_drain(Ok(report));
            }
            RequestKind::Seal => {
                log.file = None; // every record is synced already: close the log
                let report =
                    SealReport { last_revision_per_shard: vec![log.value], ..SealReport::default() };
                request.complete_seal(Ok(report));
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
    let mut inherited = detect()?; // early: before other threads read the environment
    let mut log = CounterLog { dir: data_dir.to_owned(), file: None, value: 0 };
    let (mut incumbent, listener) = match inherited.take_control() {
        Some(control_fd) => {
            // HANDOFF_ROLE=successor
            let mut successor = Successor::new(control_fd, inherited.into_listeners())?;
            successor.handshake(b"minimal-rust")?;
            // The incumbent drains and seals meanwhile; until Begin, touch nothing.
            successor.wait_for_begin(Duration::from_secs(60))?;
            // Until Ready (the guard's end): a slow start is not a dead one.
            let _heartbeats = successor.start_heartbeats(Duration::from_secs(2));
            let listener = successor.listeners()?.take_tcp("counter")?.ok_or("no listener counter")?;
            let lock = DataDirLock::acquire_with_retry(data_dir, Duration::from_secs(5))?;
            log.open()?;
            let ready = Readiness { healthz_ok: true, ..Readiness::default() };
            (successor.announce_ready(ready, control, lock)?, listener)
        }
        None => {
            let listener = inherited.listeners_mut().take_tcp("counter")?;
            let listener = listener.ok_or("no listener counter (run me under a supervisor)")?;
            let lock = DataDirLock::acquire_with_retry(data_dir, Duration::from_secs(2))?;
            log.open()?;
            (Incumbent::bind(control, lock)?, listener)
        }
    };
    incumbent.set_build_id(b"minimal-rust".to_vec());
    let serving = incumbent.start().map_err(|not_started| not_started.error)?;
    serve(&serving, &listener, &mut log)?;
    Ok(serving.join()?) // the log was closed by the seal
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [data_dir, control] = args.as_slice() else {
        eprintln!("usage: minimal-rust DATA_DIR CONTROL_SOCKET");
        std::process::exit(2);
    };
    match run(data_dir, control) {
        Ok(ServeOutcome::Committed | ServeOutcome::Superseded) => {}
        Ok(ServeOutcome::Stopped) => std::process::exit(1),
        Err(e) => {
            // Before Ready the supervisor rolls back.
            eprintln!("minimal-rust[{}]: {e}", std::process::id());
            std::process::exit(1);
        }
    }
}
