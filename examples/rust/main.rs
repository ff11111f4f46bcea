//! kv-rust: the example key-value server (examples/README.md) on the
//! crate's own Rust API, driven by its own poll loop.
//!
//!   kv-rust --data-dir DIR --control-socket PATH [--listen tcp://HOST:PORT]
//!           [--max-conns N] [--no-moves] [--exit-after-adopt] [--verbose]
//!
//! Same line protocol, log format and handoff behaviour as kv-c, kv.py and
//! kv-go, so any of them can take over from any other. Its client
//! connections move to a successor that adopts them (protocol v2) unless
//! `--no-moves`. `--exit-after-adopt` (for tests): as a successor, exit 1
//! after adopting what moved and before Ready, so the handoff rolls back
//! after the descriptors moved.

#![deny(unsafe_code)]

mod conn;
mod hashing;
mod log;
mod protocol;
mod server;
mod signals;
mod store;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use handoff::incumbent::{Incumbent, IncumbentConfig};
use handoff::listeners::{detect, Inherited};
use handoff::lock::DataDirLock;
use handoff::protocol::ItemKind;
use handoff::successor::{Readiness, Successor};
use handoff::Error;

use conn::{Conn, IN_CAP};
use server::Server;
use store::Store;

const BUILD_ID: &[u8] = b"kv-rust";
const DEFAULT_MAX_CONNS: usize = 1000;
const BEGIN_TIMEOUT: Duration = Duration::from_secs(60);
const SUCCESSOR_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
const COLD_LOCK_TIMEOUT: Duration = Duration::from_secs(2);
/// Until Ready, so a slow start-up is not taken for a dead one.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(2);
const USAGE: &str = "usage: kv-rust --data-dir DIR --control-socket PATH \
    [--listen tcp://HOST:PORT] [--max-conns N] [--no-moves] [--exit-after-adopt] [--verbose]";

/// One line on stderr, prefixed with the program and pid. A stderr that
/// cannot be written is no reason to stop serving (eprintln would panic).
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "kv-rust[{}] {line}", std::process::id());
}

/// No answer may leave after a failed fsync: exit at once.
pub fn fatal(line: &str) -> ! {
    say(&format!("fatal: {line}"));
    std::process::exit(1)
}

struct Options {
    data_dir: PathBuf,
    control_socket: PathBuf,
    listen: Option<String>,
    max_conns: usize,
    moves: bool,
    exit_after_adopt: bool,
    verbose: bool,
}

/// The options, or the exit status: 0 for `--help`, 2 for a usage error.
fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, i32> {
    let usage = |problem: String| {
        eprintln!("kv-rust: {problem}\n{USAGE}");
        2
    };
    let (mut data_dir, mut control_socket, mut listen, mut max_conns) = (None, None, None, None);
    let (mut moves, mut exit_after_adopt, mut verbose) = (true, false, false);
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-moves" => moves = false,
            "--exit-after-adopt" => exit_after_adopt = true,
            "--verbose" => verbose = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Err(0);
            }
            _ => {
                let (name, inline) = match arg.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_string())),
                    None => (arg.as_str(), None),
                };
                let slot = match name {
                    "--data-dir" => &mut data_dir,
                    "--control-socket" => &mut control_socket,
                    "--listen" => &mut listen,
                    "--max-conns" => &mut max_conns,
                    _ => return Err(usage(format!("unknown argument {arg}"))),
                };
                match inline.or_else(|| args.next()) {
                    Some(value) => *slot = Some(value),
                    None => return Err(usage(format!("{name} needs a value"))),
                }
            }
        }
    }
    let (Some(data_dir), Some(control_socket)) = (data_dir, control_socket) else {
        return Err(usage("--data-dir and --control-socket are required".into()));
    };
    let max_conns = match max_conns {
        None => DEFAULT_MAX_CONNS,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=1_000_000).contains(&n) => n,
            _ => return Err(usage(format!("--max-conns {text}: expected 1 to 1000000"))),
        },
    };
    Ok(Options {
        data_dir: PathBuf::from(data_dir),
        control_socket: PathBuf::from(control_socket),
        listen,
        max_conns,
        moves,
        exit_after_adopt,
        verbose,
    })
}

/// `tcp://HOST:PORT`, HOST possibly `[v6addr]`.
fn bind_listener(url: &str) -> Result<TcpListener, String> {
    let bad = |why: &str| format!("--listen {url}: {why}");
    let rest = url
        .strip_prefix("tcp://")
        .ok_or_else(|| bad("expected tcp://HOST:PORT"))?;
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, port) = v6.split_once("]:").ok_or_else(|| bad("bad IPv6 address"))?;
            (host, port)
        }
        None => rest
            .rsplit_once(':')
            .ok_or_else(|| bad("expected tcp://HOST:PORT"))?,
    };
    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    TcpListener::bind((host, port)).map_err(|e| bad(&e.to_string()))
}

fn listen_url(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "tcp://?".into(), |addr| format!("tcp://{addr}"))
}

/// Cold start: listener (inherited `kv`, else `--listen`), lock, log,
/// control socket.
fn start_cold(
    mut inherited: Inherited,
    o: &Options,
    store: &mut Store,
) -> Result<(TcpListener, Incumbent), String> {
    let listener = match inherited.listeners_mut().take_tcp("kv") {
        Ok(Some(listener)) => listener,
        Ok(None) => match &o.listen {
            Some(url) => bind_listener(url)?,
            None => {
                return Err("no listener named kv was inherited and --listen was not given".into())
            }
        },
        Err(e) => return Err(format!("taking the inherited listener kv: {e}")),
    };
    drop(inherited); // closes the listeners not taken
    let lock = match DataDirLock::acquire(&o.data_dir) {
        Err(held @ Error::LockHeld { .. }) => {
            say(&format!(
                "data dir {} is locked ({held}); retrying for {} ms",
                o.data_dir.display(),
                COLD_LOCK_TIMEOUT.as_millis()
            ));
            DataDirLock::acquire_with_retry(&o.data_dir, COLD_LOCK_TIMEOUT)
        }
        other => other,
    }
    .map_err(|e| format!("cannot lock the data dir: {e}"))?;
    store.open(lock.generation())?;
    let incumbent = Incumbent::bind(&o.control_socket, lock)
        .map_err(|e| format!("cannot bind the control socket: {e}"))?;
    say(&format!(
        "cold start on {}: generation {}, {} record(s)",
        listen_url(&listener),
        incumbent.generation(),
        store.records()
    ));
    Ok((listener, incumbent))
}

/// Replay the incumbent's log read-only while it still serves, so that
/// after the seal only what was appended since is left to replay: nobody
/// is accepted between the drain and Ready. Before the handshake, because
/// the supervisor drains the incumbent as soon as our Hello arrives.
fn preload_state(store: &mut Store) -> Result<(), String> {
    let started = Instant::now();
    match log::preload(&store.data_dir, &mut store.table) {
        Ok(preload) => {
            say(&format!(
                "preloaded {} record(s) in {} ms",
                preload.map_or(0, |p| p.records),
                started.elapsed().as_millis()
            ));
            store.preload = preload;
            Ok(())
        }
        Err(log::PreloadError::Unreadable(reason)) => {
            say(&format!(
                "no preload (the whole log is replayed after the lock): {reason}"
            ));
            Ok(())
        }
        Err(log::PreloadError::OtherFormat(reason)) => Err(format!("preloading the log: {reason}")),
    }
}

/// Wait for Begin the way an event loop would: poll the control connection
/// and read what it holds.
fn wait_for_begin(successor: &mut Successor) -> Result<(), Error> {
    let deadline = Instant::now() + BEGIN_TIMEOUT;
    while !successor.poll_begin()? {
        let fd = successor.control_fd().as_raw_fd();
        let waited = handoff::poll::wait_fd(fd, libc::POLLIN, None, Some(deadline));
        if waited.map_err(Error::Stream)? == handoff::poll::Wait::TimedOut {
            return Err(Error::Timeout);
        }
    }
    Ok(())
}

/// What the incumbent moved, taken with the lock held; served from Ready on.
fn adopt_conns(successor: &mut Successor, lock: &DataDirLock) -> Result<Vec<Conn>, String> {
    let items = successor
        .adopt_items(lock)
        .map_err(|e| format!("adopting what moved: {e}"))?;
    let mut conns = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if item.kind != ItemKind::Connection || item.unread.len() > IN_CAP {
            return Err(format!(
                "moved item {i} is not a connection this service can take"
            ));
        }
        let discarding = item.state.first().is_some_and(|&b| b != 0);
        let conn = Conn::adopted(
            TcpStream::from(item.fd),
            item.unread,
            item.unwritten,
            discarding,
        )
        .map_err(|e| format!("moved connection {i}: {e}"))?;
        conns.push(conn);
    }
    if !conns.is_empty() {
        say(&format!("adopted {} connection(s)", conns.len()));
    }
    Ok(conns)
}

/// Successor: preload, handshake, Begin, then (and only then) listener,
/// lock, the rest of the log, what moved, Ready. Before Begin nothing in
/// the data dir is written.
fn start_successor(
    mut inherited: Inherited,
    o: &Options,
    store: &mut Store,
) -> Result<(TcpListener, Incumbent, Vec<Conn>), String> {
    let control = inherited
        .take_control()
        .ok_or("no control connection was inherited")?;
    preload_state(store)?;
    let mut successor = Successor::from_inherited(control, inherited)
        .map_err(|e| format!("cannot start as a successor: {e}"))?;
    successor
        .set_adopts_descriptors(o.moves)
        .and_then(|()| successor.handshake(BUILD_ID))
        .map_err(|e| format!("handshake with the supervisor: {e}"))?;
    // Before Begin, so that its thread is not started in the blackout; it
    // beats from Begin to Ready.
    let heartbeats = successor.start_heartbeats(HEARTBEAT_PERIOD);
    // Aborted, the supervisor gone, or out of time: the handoff is over;
    // leave the data dir alone.
    wait_for_begin(&mut successor).map_err(|e| format!("the handoff did not begin: {e}"))?;
    let listener = successor
        .listeners()
        .and_then(|l| l.take_tcp("kv"))
        .map_err(|e| format!("taking the listener kv: {e}"))?
        .ok_or("no listener named kv was inherited")?;
    // Invariant 5: nothing is written before the lock is held.
    let lock = DataDirLock::acquire_with_retry(&o.data_dir, SUCCESSOR_LOCK_TIMEOUT)
        .map_err(|e| format!("cannot lock the data dir: {e}"))?;
    store.open(lock.generation())?;
    let conns = adopt_conns(&mut successor, &lock)?;
    if o.exit_after_adopt {
        say("exiting after adopting, as asked (--exit-after-adopt)");
        std::process::exit(1);
    }
    let url = listen_url(&listener);
    let readiness = Readiness {
        listening_on: vec![url.clone()],
        healthz_ok: true,
        advertised_revision_per_shard: vec![store.records()],
    };
    // Heartbeats end with Ready.
    drop(heartbeats);
    let incumbent = successor
        .announce_ready(readiness, &o.control_socket, lock)
        .map_err(|e| format!("announcing Ready: {e}"))?;
    say(&format!(
        "took over on {url}: generation {}, {} record(s)",
        incumbent.generation(),
        store.records()
    ));
    Ok((listener, incumbent, conns))
}

fn run(o: &Options) -> i32 {
    let verbose = o.verbose;
    handoff::log::set_logger(Some(Box::new(move |level, message| {
        if level <= handoff::log::Level::Info || verbose {
            say(&format!("handoff {}: {message}", level.name()));
        }
    })));
    let inherited = match detect() {
        Ok(inherited) => inherited,
        Err(e) => {
            say(&format!("error: {e}"));
            return 1;
        }
    };
    let mut store = Store::new(o.data_dir.clone());
    let started = if inherited.is_successor() {
        start_successor(inherited, o, &mut store)
    } else {
        start_cold(inherited, o, &mut store).map(|(l, i)| (l, i, Vec::new()))
    };
    let (listener, mut incumbent, conns) = match started {
        Ok(started) => started,
        Err(reason) => {
            say(&format!("error: {reason}"));
            return 1;
        }
    };
    // From here on SIGTERM/SIGINT stop the service cleanly.
    let signals = match signals::install() {
        Ok(fd) => fd,
        Err(e) => {
            say(&format!("error: cannot install signal handlers: {e}"));
            return 1;
        }
    };
    incumbent.set_build_id(BUILD_ID.to_vec());
    incumbent.set_config(IncumbentConfig {
        moves_descriptors: o.moves,
        ..incumbent.config()
    });
    let mut serving = match incumbent.start() {
        Ok(serving) => serving,
        Err(not_started) => {
            say(&format!("error: cannot serve: {}", not_started.error));
            return 1;
        }
    };
    store.generation = serving.finisher().generation();
    let mut server = Server::new(store, listener, conns, o.max_conns);
    let stopped = server.serve(&mut serving, signals);
    // The log is closed (fsynced) before the lock goes with the incumbent.
    let mut exit_code = server.exit_code;
    server.shut_down();
    if stopped {
        // Rolls back a handoff in progress (the drain we held has failed).
        serving.finisher().stop();
        exit_code = 0;
    }
    if let Err(e) = serving.join() {
        say(&format!("error: serving ended: {e}"));
    }
    exit_code
}

fn main() {
    let code = match parse_args(std::env::args().skip(1)) {
        Ok(options) => {
            let code = run(&options);
            say(&format!("exiting with status {code}"));
            code
        }
        Err(code) => code,
    };
    std::process::exit(code)
}
