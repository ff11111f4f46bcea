//! What the two peer services share: the command line, and a trivial TCP
//! service on the inherited listener `kv` that answers a line `PING` with
//! `PONG <pid> <impl>`. Only the handoff plumbing differs between the peers
//! (one on libhandoff, one on the reference crate), so that a handoff from
//! one to the other exercises nothing but the protocol.
//!
//! The listener's open file description is shared with the supervisor and
//! the other generation, and either generation may have changed O_NONBLOCK
//! on it (the reference successor clears it at start-up), so the accept loop
//! never relies on the flag: it polls first, and accepts only while holding
//! the gate that `drain` takes, so that once `drain` returns no accept can
//! happen in this process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one poll of the listener lasts before the loop looks at the
/// gate again (only bounds how soon a stopped loop ends).
const POLL_SLICE_MS: libc::c_int = 20;

/// `--data-dir DIR --control-socket PATH`.
pub struct Args {
    pub data_dir: PathBuf,
    pub control_socket: PathBuf,
}

impl Args {
    /// Parse the command line, or exit 2 with a usage line.
    pub fn from_env(program: &str) -> Args {
        let usage = |why: &str| -> ! {
            eprintln!("{program}: {why}\nusage: {program} --data-dir DIR --control-socket PATH");
            std::process::exit(2)
        };
        let mut data_dir = None;
        let mut control_socket = None;
        let mut args = std::env::args_os().skip(1);
        while let Some(arg) = args.next() {
            let slot = match arg.to_str() {
                Some("--data-dir") => &mut data_dir,
                Some("--control-socket") => &mut control_socket,
                _ => usage(&format!("unexpected argument {arg:?}")),
            };
            match args.next() {
                Some(value) => *slot = Some(PathBuf::from(value)),
                None => usage(&format!("{arg:?} needs a value")),
            }
        }
        Args {
            data_dir: data_dir.unwrap_or_else(|| usage("--data-dir is required")),
            control_socket: control_socket.unwrap_or_else(|| usage("--control-socket is required")),
        }
    }
}

struct Gate {
    accepting: bool,
    quit: bool,
    next_id: u64,
    /// A second handle on every open connection, to shut it down on drain.
    conns: HashMap<u64, TcpStream>,
}

/// The service's state, shared by the accept loop, the connection threads
/// and the handoff hooks.
pub struct Peer {
    impl_name: &'static str,
    gate: Mutex<Gate>,
    changed: Condvar,
}

impl Peer {
    pub fn new(impl_name: &'static str) -> Arc<Peer> {
        Arc::new(Peer {
            impl_name,
            gate: Mutex::new(Gate {
                accepting: true,
                quit: false,
                next_id: 0,
                conns: HashMap::new(),
            }),
            changed: Condvar::new(),
        })
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The drain hook: stop accepting (no accept can start after this
    /// returns) and close every connection. Answers the connections left.
    pub fn drain(&self) -> u32 {
        let mut gate = self.gate();
        gate.accepting = false;
        close_all(&mut gate.conns);
        self.changed.notify_all();
        0
    }

    /// The resume hook: accept again.
    pub fn resume(&self) {
        self.gate().accepting = true;
        self.changed.notify_all();
    }

    /// Stop for good (after a commit): close everything, end the accept loop.
    pub fn quit(&self) {
        let mut gate = self.gate();
        gate.quit = true;
        gate.accepting = false;
        close_all(&mut gate.conns);
        self.changed.notify_all();
    }

    /// Open connections (only the reference crate's hooks ask).
    #[allow(dead_code)]
    pub fn open_conns(&self) -> u32 {
        self.gate().conns.len() as u32
    }

    /// Run the accept loop on its own thread until `quit`.
    pub fn spawn_accept_loop(self: &Arc<Self>, listener: TcpListener) -> JoinHandle<()> {
        let peer = Arc::clone(self);
        std::thread::spawn(move || peer.accept_loop(&listener))
    }

    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        let fd = listener.as_raw_fd();
        loop {
            {
                let mut gate = self.gate();
                while !gate.accepting && !gate.quit {
                    gate = self.changed.wait(gate).unwrap_or_else(|p| p.into_inner());
                }
                if gate.quit {
                    return;
                }
            }
            if !readable(fd, POLL_SLICE_MS) {
                continue;
            }
            let mut gate = self.gate();
            if gate.quit {
                return;
            }
            // Drained meanwhile, or another process took the connection:
            // a blocking accept must never be entered without one waiting.
            if !gate.accepting || !readable(fd, 0) {
                continue;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let id = gate.next_id;
                    gate.next_id += 1;
                    match stream.try_clone() {
                        Ok(second) => {
                            gate.conns.insert(id, second);
                        }
                        Err(e) => {
                            eprintln!("{}: cannot track a connection: {e}", self.impl_name);
                            continue;
                        }
                    }
                    drop(gate);
                    let peer = Arc::clone(self);
                    std::thread::spawn(move || peer.serve_connection(id, stream));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock
                            | ErrorKind::Interrupted
                            | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    drop(gate);
                    eprintln!("{}: accept: {e}", self.impl_name);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn serve_connection(&self, id: u64, stream: TcpStream) {
        // Accepted sockets do not inherit the listener's O_NONBLOCK on
        // Linux, but say what this thread relies on.
        let _ = stream.set_nonblocking(false);
        if let Ok(reader) = stream.try_clone() {
            let mut writer = stream;
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let reply = match line.trim() {
                    "PING" => format!("PONG {} {}\n", std::process::id(), self.impl_name),
                    _ => "ERR unknown command\n".to_string(),
                };
                if writer.write_all(reply.as_bytes()).is_err() {
                    break;
                }
            }
        }
        self.gate().conns.remove(&id);
    }
}

fn close_all(conns: &mut HashMap<u64, TcpStream>) {
    for (_, conn) in conns.drain() {
        let _ = conn.shutdown(Shutdown::Both);
    }
}

/// Whether `fd` has a connection to accept, waiting up to `timeout_ms`.
fn readable(fd: RawFd, timeout_ms: libc::c_int) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the count passed.
    let ready = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
    ready > 0 && pollfd.revents & libc::POLLIN != 0
}

/// Report a fatal error and exit 1.
pub fn fail(program: &str, what: &str, error: impl std::fmt::Display) -> ! {
    eprintln!("{program}[{}]: {what}: {error}", std::process::id());
    std::process::exit(1)
}
