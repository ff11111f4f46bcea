//! Shared by tests/interop_beyond.rs and benches/handoff.rs: finding (and
//! building) the peer programs, owning the processes they become, and
//! watching a service change hands from the outside.
// Each includer uses its own part of this file.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use handoff::lock::{DataDirLock, LockState};
use handoff::spawn::ChildProcess;

/// The peer services (examples declared in Cargo.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// tests/peers/our_service.rs, on libhandoff.
    Ours,
    /// tests/peers/beyond_service.rs, on the reference crate.
    Beyond,
    /// tests/peers/mover_service.rs: connections and table move (v2).
    Mover,
}

impl Impl {
    /// The example's name.
    pub fn program(self) -> &'static str {
        match self {
            Impl::Ours => "peer-ours",
            Impl::Beyond => "peer-beyond",
            Impl::Mover => "peer-mover",
        }
    }

    /// What the service says after `PONG <pid>`.
    pub fn tag(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::Beyond => "beyond",
            Impl::Mover => "mover",
        }
    }
}

/// The profile directory this test or bench binary was built into
/// (`target[/<triple>]/<profile>`; the binary itself is in its `deps/`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("the binary lives in <profile>/deps")
        .to_path_buf()
}

/// The directory holding the profile directories (`target`, or
/// `target/<triple>`): scratch space on the build's own filesystem.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("a profile directory has a parent")
        .to_path_buf()
}

/// Build both peers with the profile (and target directory) of the running
/// binary: `cargo test --test X` and `cargo bench --bench X` build only the
/// selected target, not the examples.
fn build_peers() -> Result<(), String> {
    let profile_dir = profile_dir();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("unnamed profile directory")?
        .to_string();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("build")
        .args(["--example", Impl::Ours.program()])
        .args(["--example", Impl::Beyond.program()])
        .args(["--example", Impl::Mover.program()]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    // The target directory holds CACHEDIR.TAG; one level further up means
    // the binary was built for an explicit --target.
    let parent = profile_dir.parent().ok_or("no target directory")?;
    if parent.join("CACHEDIR.TAG").exists() {
        command.arg("--target-dir").arg(parent);
    } else if let Some(root) = parent.parent().filter(|r| r.join("CACHEDIR.TAG").exists()) {
        command.arg("--target-dir").arg(root);
        command
            .arg("--target")
            .arg(parent.file_name().ok_or("no target triple")?);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the peers failed: {status}"));
    }
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether both peers were built after this binary (so after the library
/// it was built with) and after every file in tests/peers/: then there is
/// no need to ask cargo, whose lock another build may hold for a while.
fn peers_fresh() -> bool {
    let Some(mut newest) = std::env::current_exe().ok().and_then(|e| modified(&e)) else {
        return false;
    };
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    let Ok(entries) = std::fs::read_dir(sources) else {
        return false;
    };
    for entry in entries.flatten() {
        match modified(&entry.path()) {
            Some(time) => newest = newest.max(time),
            None => return false,
        }
    }
    [Impl::Ours, Impl::Beyond, Impl::Mover]
        .into_iter()
        .all(|which| {
            modified(&profile_dir().join("examples").join(which.program()))
                .is_some_and(|built| built > newest)
        })
}

/// The path of a peer program, built on first use.
pub fn peer_binary(which: Impl) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| if peers_fresh() { Ok(()) } else { build_peers() });
    if let Err(e) = built {
        panic!("{e}");
    }
    let path = profile_dir().join("examples").join(which.program());
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// The peer's command line.
pub fn peer_args(data_dir: &Path, control: &Path) -> Vec<String> {
    vec![
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--control-socket".into(),
        control.display().to_string(),
    ]
}

/// Cold-start a peer the way the reference crate arranges descriptors (no
/// LISTEN_PID), for handoffs driven by the reference supervisor.
pub fn cold_start_std(which: Impl, args: &[String], name: &str, listener: RawFd) -> Child {
    let mut command = Command::new(peer_binary(which));
    command.args(args).stdin(Stdio::null());
    beyond::pass_listener_fds_on_spawn(&mut command, &[(name.to_string(), listener)], None);
    command.spawn().expect("cold start")
}

/// One process the test started, of either kind.
enum Proc {
    Ours(ChildProcess),
    Std(Child),
}

impl Proc {
    fn pid(&self) -> u32 {
        match self {
            Proc::Ours(child) => child.pid(),
            Proc::Std(child) => child.id(),
        }
    }

    /// Reap it if it exited by `deadline`: Ok(exit code) or Err(how it ended).
    fn wait_until(&mut self, deadline: Instant) -> Option<Result<i32, String>> {
        match self {
            Proc::Ours(child) => {
                let status =
                    child.wait_timeout(deadline.saturating_duration_since(Instant::now()))?;
                Some(if libc::WIFEXITED(status) {
                    Ok(libc::WEXITSTATUS(status))
                } else {
                    Err(handoff::spawn::describe_status(status))
                })
            }
            Proc::Std(child) => loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        return Some(match status.code() {
                            Some(code) => Ok(code),
                            None => Err(format!("killed by signal {:?}", status.signal())),
                        })
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Ok(None) => return None,
                    Err(e) => return Some(Err(format!("wait: {e}"))),
                }
            },
        }
    }

    fn kill(&mut self) {
        match self {
            Proc::Ours(child) => {
                child.terminate(Duration::from_millis(200));
            }
            Proc::Std(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Every process a test started; those still running when it is dropped
/// (a failed test included) are killed and reaped.
#[derive(Default)]
pub struct Procs {
    list: Vec<Proc>,
}

impl Procs {
    pub fn add_ours(&mut self, child: ChildProcess) -> u32 {
        let pid = child.pid();
        self.list.push(Proc::Ours(child));
        pid
    }

    pub fn add_std(&mut self, child: Child) -> u32 {
        let pid = child.id();
        self.list.push(Proc::Std(child));
        pid
    }

    /// Wait for `pid` to exit and reap it: its exit code, or how it ended.
    pub fn wait_exit(&mut self, pid: u32, timeout: Duration) -> Result<i32, String> {
        let index = self
            .list
            .iter()
            .position(|p| p.pid() == pid)
            .ok_or_else(|| format!("pid {pid} is not ours"))?;
        match self.list[index].wait_until(Instant::now() + timeout) {
            Some(result) => {
                self.list.remove(index);
                result
            }
            None => Err(format!("pid {pid} still running after {timeout:?}")),
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for proc in &mut self.list {
            proc.kill();
        }
    }
}

/// One `PING` on a fresh connection: the answering pid and implementation.
pub fn ping(addr: SocketAddr) -> std::io::Result<(u32, String)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    ping_on(&stream)
}

/// One `PING` on an open connection.
pub fn ping_on(stream: &TcpStream) -> std::io::Result<(u32, String)> {
    (&*stream).write_all(b"PING\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let bad = || std::io::Error::new(ErrorKind::InvalidData, format!("bad answer {line:?}"));
    let mut words = line.split_whitespace();
    if words.next() != Some("PONG") {
        return Err(bad());
    }
    let pid = words.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let tag = words.next().ok_or_else(bad)?.to_string();
    Ok((pid, tag))
}

/// Whether the server closed `stream` (EOF or reset), waiting up to `timeout`.
pub fn closed_by_server(stream: &TcpStream, timeout: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(timeout));
    let mut byte = [0u8; 1];
    match (&*stream).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

/// Poll `check` until it answers Ok, or panic with its last error.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(e) if Instant::now() >= deadline => panic!("{what}: {e} (after {timeout:?})"),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// The inode of the socket at `path` (changes when an incumbent rebinds it).
pub fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Who holds the data-dir lock, as DataDirLock::probe sees it.
pub fn lock_holder(data_dir: &Path) -> Result<Option<u32>, String> {
    match DataDirLock::probe(data_dir).map_err(|e| e.to_string())? {
        LockState::Held { pid } => Ok(pid),
        LockState::Free => Ok(None),
    }
}

/// Wait until `pid` is the whole incumbent: it holds the lock, serves the
/// control socket (bound anew when `old_inode` is given), and answers PING
/// as `which`.
pub fn wait_serving(
    addr: SocketAddr,
    data_dir: &Path,
    control: &Path,
    old_inode: Option<u64>,
    pid: u32,
    which: Impl,
) {
    let timeout = Duration::from_secs(10);
    wait_for("control socket bound", timeout, || match inode(control) {
        Some(ino) if Some(ino) != old_inode => Ok(()),
        other => Err(format!("inode {other:?}")),
    });
    wait_for("PING answered by the incumbent", timeout, || {
        match ping(addr) {
            Ok((answered, tag)) if answered == pid && tag == which.tag() => Ok(()),
            Ok(other) => Err(format!(
                "answered by {other:?}, expected {pid} {}",
                which.tag()
            )),
            Err(e) => Err(e.to_string()),
        }
    });
    wait_for(
        "lock held by the incumbent",
        timeout,
        || match lock_holder(data_dir)? {
            Some(holder) if holder == pid => Ok(()),
            other => Err(format!("held by {other:?}, expected {pid}")),
        },
    );
}
