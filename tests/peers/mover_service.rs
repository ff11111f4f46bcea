//! peer-mover: an in-memory key-value service whose connections and table
//! survive the handoff (protocol v2, docs/protocol.md), driven by one poll
//! loop of its own through libhandoff's Rust API (the loop-driven way).
//!
//! Lines: `PING` -> `PONG <pid> mover`, `SET k v` -> `OK`, `GET k` ->
//! `VALUE v` or `NONE`. The table lives in memory only: a handoff moves it
//! to the successor in a memfd (a named descriptor, "table"), and every
//! client connection with what it had sent and not yet been answered.
//!
//! `peer-mover --data-dir DIR --control-socket PATH [--exit-after-adopt]
//! [--fail-first-seal] [--pause-before-adopt PATH]`; the listener `kv` is
//! inherited. `--pause-before-adopt PATH`: as a successor, with the lock
//! held and what moved received but not adopted, create `PATH.waiting` and
//! wait until PATH exists (a test acts on the connections in transit).
//! `--exit-after-adopt`: as a successor, exit after adopting what moved and
//! before Ready (a rollback after the descriptors moved).
//! `--fail-first-seal`: the first seal this process is asked for fails (a
//! rollback after the descriptors moved, seen by the incumbent). Exits 0
//! once a handoff away from it committed.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use handoff::incumbent::{Incumbent, IncumbentConfig, Request, RequestKind, ServeOutcome};
use handoff::listeners::detect;
use handoff::lock::DataDirLock;
use handoff::protocol::ItemKind;
use handoff::service::{DrainReport, MovedItem, SealReport};
use handoff::successor::{Readiness, Successor};

const PROGRAM: &str = "peer-mover";

fn fail(what: &str, error: impl std::fmt::Display) -> ! {
    eprintln!("{PROGRAM}[{}]: {what}: {error}", std::process::id());
    std::process::exit(1)
}

struct Args {
    data_dir: PathBuf,
    control_socket: PathBuf,
    exit_after_adopt: bool,
    fail_first_seal: bool,
    pause_before_adopt: Option<PathBuf>,
}

fn args() -> Args {
    let mut data_dir = None;
    let mut control_socket = None;
    let mut exit_after_adopt = false;
    let mut fail_first_seal = false;
    let mut pause_before_adopt = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data-dir" => data_dir = args.next().map(PathBuf::from),
            "--control-socket" => control_socket = args.next().map(PathBuf::from),
            "--exit-after-adopt" => exit_after_adopt = true,
            "--fail-first-seal" => fail_first_seal = true,
            "--pause-before-adopt" => pause_before_adopt = args.next().map(PathBuf::from),
            other => fail("usage", format!("unexpected argument {other:?}")),
        }
    }
    Args {
        data_dir: data_dir.unwrap_or_else(|| fail("usage", "--data-dir is required")),
        control_socket: control_socket
            .unwrap_or_else(|| fail("usage", "--control-socket is required")),
        exit_after_adopt,
        fail_first_seal,
        pause_before_adopt,
    }
}

/// One client connection and what is in flight on it.
struct Conn {
    stream: TcpStream,
    /// Read, not yet processed (at most a partial line between turns).
    inbuf: Vec<u8>,
    /// Answered, not yet written.
    outbuf: Vec<u8>,
    /// Handed to the successor: neither read nor written until the outcome.
    moved: bool,
    closed: bool,
}

impl Conn {
    fn new(stream: TcpStream, inbuf: Vec<u8>, outbuf: Vec<u8>) -> Conn {
        stream
            .set_nonblocking(true)
            .unwrap_or_else(|e| fail("O_NONBLOCK", e));
        Conn {
            stream,
            inbuf,
            outbuf,
            moved: false,
            closed: false,
        }
    }

    /// Write what is pending, then answer every whole line (the carried
    /// output first, then the carried input: docs/protocol.md).
    fn work(&mut self, table: &mut HashMap<String, String>) {
        self.flush();
        while let Some(end) = self.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.inbuf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).trim().to_string();
            let answer = answer(&line, table);
            self.outbuf.extend_from_slice(answer.as_bytes());
        }
        self.flush();
    }

    fn flush(&mut self) {
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    fn read(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }
}

fn answer(line: &str, table: &mut HashMap<String, String>) -> String {
    let mut words = line.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("PING"), None, None) => format!("PONG {} mover\n", std::process::id()),
        (Some("SET"), Some(key), Some(value)) => {
            table.insert(key.to_string(), value.to_string());
            "OK\n".into()
        }
        (Some("GET"), Some(key), None) => match table.get(key) {
            Some(value) => format!("VALUE {value}\n"),
            None => "NONE\n".into(),
        },
        _ => format!("ERR {line:?}\n"),
    }
}

/// `--pause-before-adopt`: say so in `go.waiting`, then wait for `go`.
fn pause_until(go: &std::path::Path) {
    let mut waiting = go.as_os_str().to_owned();
    waiting.push(".waiting");
    File::create(&waiting).unwrap_or_else(|e| fail("--pause-before-adopt", e));
    let give_up = Instant::now() + std::time::Duration::from_secs(60);
    while !go.exists() {
        if Instant::now() > give_up {
            fail("--pause-before-adopt", "nobody said go within 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The table in a memfd: `key value\n` lines.
fn table_to_memfd(table: &HashMap<String, String>) -> File {
    // SAFETY: a NUL-terminated name and no flags but close-on-exec.
    let fd = unsafe { libc::memfd_create(c"peer-mover-table".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        fail("memfd_create", std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, owned by nothing else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    for (key, value) in table {
        writeln!(file, "{key} {value}").unwrap_or_else(|e| fail("writing the table", e));
    }
    file
}

fn table_from_memfd(fd: OwnedFd) -> HashMap<String, String> {
    let mut file = File::from(fd);
    let mut text = String::new();
    file.rewind()
        .and_then(|_| file.read_to_string(&mut text))
        .unwrap_or_else(|e| fail("reading the moved table", e));
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Service {
    listener: TcpListener,
    conns: Vec<Conn>,
    table: HashMap<String, String>,
    accepting: bool,
    /// The memfd a drain moved, kept until the outcome.
    moved_table: Option<File>,
    /// `--fail-first-seal`, until that seal failed.
    fail_next_seal: bool,
}

impl Service {
    fn accept(&mut self) {
        while self.accepting {
            match self.listener.accept() {
                Ok((stream, _)) => self.conns.push(Conn::new(stream, Vec::new(), Vec::new())),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("{PROGRAM}: accept: {e}");
                    return;
                }
            }
        }
    }

    /// The drain: stop accepting, bring every connection to a request
    /// boundary and move it (or close it, when the handoff cannot move).
    fn drain(&mut self, moves: Option<u32>) -> DrainReport {
        self.accepting = false;
        let mut moved = Vec::new();
        self.conns.retain(|c| !c.closed);
        if moves.is_none() {
            // v1: answer what was asked before the drain, then close.
            for conn in &mut self.conns {
                conn.read();
                conn.work(&mut self.table);
            }
            self.conns.clear(); // v1: the successor gets no connections
            return DrainReport {
                accept_closed: true,
                ..DrainReport::default()
            };
        }
        let table = table_to_memfd(&self.table);
        moved.push(MovedItem {
            kind: ItemKind::Descriptor,
            name: "table".into(),
            fd: table.as_raw_fd(),
            unread: Vec::new(),
            unwritten: Vec::new(),
            state: Vec::new(),
        });
        self.moved_table = Some(table);
        for conn in &mut self.conns {
            conn.moved = true;
            moved.push(MovedItem {
                kind: ItemKind::Connection,
                name: "kv".into(),
                fd: conn.stream.as_raw_fd(),
                unread: conn.inbuf.clone(),
                unwritten: conn.outbuf.clone(),
                state: Vec::new(),
            });
        }
        DrainReport {
            accept_closed: true,
            moved,
            ..DrainReport::default()
        }
    }

    /// Rolled back: the moved connections are ours again, as they were.
    fn resume(&mut self) {
        for conn in &mut self.conns {
            conn.moved = false;
        }
        self.moved_table = None;
        self.accepting = true;
    }

    fn on_request(&mut self, request: Request) -> Option<ServeOutcome> {
        match request.kind() {
            RequestKind::Drain => {
                let report = self.drain(request.moves());
                request.complete_drain(Ok(report));
            }
            RequestKind::Seal if self.fail_next_seal => {
                self.fail_next_seal = false;
                request.complete_seal(Err("seal failed on purpose (--fail-first-seal)".into()));
            }
            RequestKind::Seal => request.complete_seal(Ok(SealReport::default())),
            RequestKind::Resume => {
                self.resume();
                request.complete_resume(Ok(()));
            }
            RequestKind::Ended(outcome) => {
                // Committed: the successor has our copies' twins; close
                // ours (close, never shutdown).
                self.conns.clear();
                return Some(outcome.unwrap_or(ServeOutcome::Stopped));
            }
        }
        None
    }

    /// Serve until serving ends.
    fn run(mut self, incumbent: Incumbent) -> ServeOutcome {
        self.listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| fail("listener O_NONBLOCK", e));
        let serving = incumbent
            .start()
            .unwrap_or_else(|e| fail("serve thread", e.error));
        // Adopted connections: their carried output, then their carried input.
        for conn in &mut self.conns {
            conn.work(&mut self.table);
        }
        loop {
            let mut fds = vec![libc::pollfd {
                fd: serving.requests().fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if self.accepting {
                fds.push(pollfd(self.listener.as_raw_fd()));
            }
            let live: Vec<usize> = (0..self.conns.len())
                .filter(|&i| !self.conns[i].moved && !self.conns[i].closed)
                .collect();
            for &i in &live {
                let mut entry = pollfd(self.conns[i].stream.as_raw_fd());
                if !self.conns[i].outbuf.is_empty() {
                    entry.events |= libc::POLLOUT;
                }
                fds.push(entry);
            }
            // SAFETY: `fds` is a live array of the length passed.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if ready < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                fail("poll", e);
            }
            if fds[0].revents != 0 {
                while let Some(request) = serving.requests().take() {
                    if let Some(outcome) = self.on_request(request) {
                        let _ = serving.join();
                        return outcome;
                    }
                }
            }
            let first_conn = if self.accepting && fds.len() > live.len() + 1 {
                if fds[1].revents != 0 {
                    self.accept();
                }
                2
            } else {
                1
            };
            for (slot, &i) in live.iter().enumerate() {
                if fds[first_conn + slot].revents != 0 {
                    let conn = &mut self.conns[i];
                    conn.read();
                    conn.work(&mut self.table);
                }
            }
            self.conns.retain(|c| c.moved || !c.closed);
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn main() {
    let args = args();
    let mut inherited = detect().unwrap_or_else(|e| fail("detect", e));
    let config = IncumbentConfig {
        moves_descriptors: true,
        ..IncumbentConfig::default()
    };

    let (service, mut incumbent) = match inherited.take_control() {
        None => {
            let listener = inherited
                .listeners_mut()
                .take_tcp("kv")
                .unwrap_or_else(|e| fail("listener kv", e))
                .unwrap_or_else(|| fail("listener kv", "not inherited"));
            let lock = DataDirLock::acquire(&args.data_dir).unwrap_or_else(|e| fail("lock", e));
            let incumbent = Incumbent::bind(&args.control_socket, lock)
                .unwrap_or_else(|e| fail("control socket", e));
            let service = Service {
                listener,
                conns: Vec::new(),
                table: HashMap::new(),
                accepting: true,
                moved_table: None,
                fail_next_seal: args.fail_first_seal,
            };
            (service, incumbent)
        }
        Some(control) => {
            let mut successor = Successor::from_inherited(control, inherited)
                .unwrap_or_else(|e| fail("successor", e));
            successor
                .set_adopts_descriptors(true)
                .unwrap_or_else(|e| fail("adopting", e));
            successor
                .handshake(PROGRAM.as_bytes())
                .unwrap_or_else(|e| fail("handshake", e));
            let deadline = Some(Instant::now() + std::time::Duration::from_secs(600));
            while !successor
                .poll_begin()
                .unwrap_or_else(|e| fail("waiting for Begin", e))
            {
                let fd = successor.control_fd().as_raw_fd();
                handoff::poll::wait_fd(fd, libc::POLLIN, None, deadline)
                    .unwrap_or_else(|e| fail("waiting for Begin", e));
            }
            let listener = successor
                .listeners()
                .and_then(|l| l.take_tcp("kv"))
                .unwrap_or_else(|e| fail("listener kv", e))
                .unwrap_or_else(|| fail("listener kv", "not inherited"));
            let lock = DataDirLock::acquire(&args.data_dir).unwrap_or_else(|e| fail("lock", e));
            let mut service = Service {
                listener,
                conns: Vec::new(),
                table: HashMap::new(),
                accepting: true,
                moved_table: None,
                fail_next_seal: args.fail_first_seal,
            };
            if let Some(go) = &args.pause_before_adopt {
                pause_until(go);
            }
            for item in successor
                .adopt_items(&lock)
                .unwrap_or_else(|e| fail("adopting", e))
            {
                match (item.kind, item.name.as_str()) {
                    (ItemKind::Descriptor, "table") => service.table = table_from_memfd(item.fd),
                    (ItemKind::Connection, _) => service.conns.push(Conn::new(
                        TcpStream::from(item.fd),
                        item.unread,
                        item.unwritten,
                    )),
                    (kind, name) => fail("adopting", format!("unknown item {kind:?} {name:?}")),
                }
            }
            if args.exit_after_adopt {
                eprintln!("{PROGRAM}: exiting after adopting, as asked");
                std::process::exit(7);
            }
            let incumbent = successor
                .announce_ready(Readiness::default(), &args.control_socket, lock)
                .unwrap_or_else(|e| fail("announcing Ready", e));
            (service, incumbent)
        }
    };
    incumbent.set_config(config);
    match service.run(incumbent) {
        ServeOutcome::Committed => std::process::exit(0),
        other => {
            eprintln!(
                "{PROGRAM}[{}]: serving ended: {other:?}",
                std::process::id()
            );
            std::process::exit(3)
        }
    }
}
