//! What the crash suites share: the crash-enabled build (its own target
//! directory, so the normal build never carries crash points), and the
//! process bookkeeping that proves no orphan and no leaked descriptor.
#![allow(unsafe_code, dead_code)]

/// `return Err(format!(...))` unless the condition holds (the suites'
/// checks return their failures rather than panic, to clean up first).
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitStatus};
use std::time::{Duration, Instant};

use handoff::spawn::{describe_status, pid_alive, ChildProcess};
use handoff::supervisor::Supervisor;

use crate::common::{root, tcp_listener};
use handoff::Phase;

/// The descriptor on which the test-supervisor finds the listener.
pub const LISTENER_FD: RawFd = 3;

/// Spawn `command` (a test-supervisor) with `listener` as its descriptor
/// LISTENER_FD and wait up to `timeout` for it to exit.
pub fn run_with_listener(
    command: &mut Process,
    listener: RawFd,
    timeout: Duration,
    mode: &str,
) -> Result<ExitStatus, String> {
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (dup2, fcntl) and builds an io::Error
    // from errno, which does not allocate. The caller keeps `listener` open
    // for the whole call.
    unsafe {
        command.pre_exec(move || {
            let ret = if listener == LISTENER_FD {
                // dup2 onto itself would leave close-on-exec set.
                libc::fcntl(listener, libc::F_SETFD, 0)
            } else {
                // dup2 clears close-on-exec on the new descriptor.
                libc::dup2(listener, LISTENER_FD)
            };
            if ret < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = command
        .spawn()
        .map_err(|e| format!("test-supervisor: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("test-supervisor {mode} hung"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait up to `settle` until every process of `started()` (the ones a case
/// started) and every child of ours, except `keep`, is dead.
pub fn wait_no_orphan(
    started: impl Fn() -> Vec<u32>,
    keep: Option<u32>,
    settle: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + settle;
    loop {
        let mut candidates = started();
        candidates.extend(live_children());
        candidates.sort_unstable();
        candidates.dedup();
        let alive: Vec<u32> = candidates
            .into_iter()
            .filter(|pid| Some(*pid) != keep && pid_alive(*pid))
            .collect();
        if alive.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("orphan processes alive: {alive:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The crash-enabled build: its library and the test-supervisor.
pub struct CrashBuild {
    pub lib_dir: PathBuf,
    pub supervisor: PathBuf,
}

pub fn has_crash_points(lib: &Path) -> bool {
    let bytes = fs::read(lib).unwrap_or_default();
    bytes.windows(16).any(|w| w == b"HANDOFF_CRASH_AT")
}

pub fn crash_build() -> &'static CrashBuild {
    static BUILD: std::sync::OnceLock<CrashBuild> = std::sync::OnceLock::new();
    BUILD.get_or_init(build_crash_enabled)
}

fn build_crash_enabled() -> CrashBuild {
    // <target>/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().unwrap();
    let lib_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let target_dir = lib_dir.parent().unwrap();
    assert_ne!(
        fs::canonicalize(&lib_dir).ok(),
        fs::canonicalize(root().join("target/release")).ok(),
        "the crash suite must build in its own target directory \
         (CARGO_TARGET_DIR=target/crash), or the normal build gets crash points"
    );
    let release = lib_dir.file_name().is_some_and(|name| name == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Process::new(cargo);
    build
        .current_dir(root())
        .env("CARGO_TARGET_DIR", target_dir)
        // --lib as well: building only the example leaves an old
        // libhandoff.so in <profile>/ (cargo uplifts only what is asked for).
        .args(["build", "--features", "crash-points", "--lib"])
        // kv-rust links the crate in: it needs a crash-enabled build of its own.
        .args(["--example", "test-supervisor", "--example", "kv-rust"]);
    if release {
        build.arg("--release");
    }
    assert!(
        build.status().expect("cargo").success(),
        "building test-supervisor and kv-rust"
    );
    let lib = lib_dir.join("libhandoff.so");
    assert!(
        has_crash_points(&lib),
        "{} has no crash points",
        lib.display()
    );
    // The C and Go services' NEEDED entry is the soname.
    match std::os::unix::fs::symlink("libhandoff.so", lib_dir.join("libhandoff.so.0")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("libhandoff.so.0: {e}"),
    }
    let normal = root().join("target/release/libhandoff.so");
    assert!(
        !normal.exists() || !has_crash_points(&normal),
        "{} was built with crash points",
        normal.display()
    );
    CrashBuild {
        supervisor: lib_dir.join("examples/test-supervisor"),
        lib_dir,
    }
}

/// Orphans are reparented to this process rather than to init, so the
/// test sees them, kills them by pid without any risk of pid reuse, and
/// reaps them.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integers only.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(ret, 0, "PR_SET_CHILD_SUBREAPER");
}

/// (state, ppid) of a process.
pub fn stat_of(pid: u32) -> Option<(String, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_string();
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The live (non-zombie) children of this process, reparented ones included.
pub fn live_children() -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat_of(pid).is_some_and(|(state, ppid)| ppid == me && state != "Z" && state != "X")
        })
        .collect()
}

pub fn parent_of(pid: u32) -> Option<u32> {
    stat_of(pid).map(|(_, ppid)| ppid)
}

/// Reap `pid` if it is a dead child of ours (a reparented orphan).
pub fn reap(pid: u32) -> Option<i32> {
    if parent_of(pid) != Some(std::process::id()) || pid_alive(pid) {
        return None;
    }
    let mut status = 0;
    // SAFETY: waitpid on a child of ours with a valid status pointer.
    let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    (reaped == pid as libc::pid_t).then_some(status)
}

pub fn wait_dead(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

pub fn fd_count(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A process's descriptor count once it is the same for 100 ms.
pub fn stable_fd_count(pid: u32) -> Result<usize, String> {
    let mut last = fd_count(pid).ok_or(format!("pid {pid} is gone"))?;
    let mut same = 0;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(20));
        let now = fd_count(pid).ok_or(format!("pid {pid} is gone"))?;
        same = if now == last { same + 1 } else { 0 };
        if same >= 5 {
            return Ok(now);
        }
        last = now;
    }
    Err(format!("pid {pid}'s descriptor count never settled"))
}

pub fn mapped_libhandoff(pid: u32) -> Option<PathBuf> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.contains("libhandoff.so"))
        .map(PathBuf::from)
}

/// PING on a fresh connection: the answering pid and tag.
pub fn ping(addr: SocketAddr, timeout: Duration) -> Option<(u32, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"PING\n").ok()?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).ok()?;
    let mut words = answer.split_whitespace();
    (words.next() == Some("PONG")).then_some(())?;
    let pid = words.next()?.parse().ok()?;
    // The no-op service answers "PONG pid"; the example services add a tag.
    Some((pid, words.next().unwrap_or_default().to_string()))
}

pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => format!("{status:?}"),
    }
}

pub fn parse_recovery(line: &str) -> (String, Option<u32>) {
    let mut words = line.split_whitespace();
    let status = words.next().unwrap_or("").to_string();
    let pid = words.next().and_then(|p| p.parse().ok());
    (status, pid)
}

pub fn committed_pid(out: &str) -> Option<u32> {
    out.strip_prefix("committed ")?.trim().parse().ok()
}

/// What a process's descriptors from 3 up refer to, as a multiset (target
/// -> how many). Descriptors 0 to 2 are left out: the standard streams are
/// whatever the process's starter gave it (a cold start the test's, a
/// successor test-supervisor's stdout file). Each `/proc/PID/fd` target is
/// normalised so that two processes of one service compare equal: `dir`
/// (the case's directory) is written `<dir>`, and sockets and pipes, whose
/// inode numbers differ from process to process, are counted by kind
/// (`socket tcp LISTEN`, `socket unix stream connected`, `pipe`, ...).
pub type FdProfile = std::collections::BTreeMap<String, usize>;

pub fn fd_profile(pid: u32, dir: &Path) -> Result<FdProfile, String> {
    let sockets = socket_kinds(pid);
    let fd_dir = format!("/proc/{pid}/fd");
    let entries = fs::read_dir(&fd_dir).map_err(|e| format!("{fd_dir}: {e}"))?;
    let dirs: Vec<String> = [Some(dir.to_owned()), fs::canonicalize(dir).ok()]
        .into_iter()
        .flatten()
        .filter_map(|d| d.to_str().map(str::to_owned))
        .collect();
    let mut profile = FdProfile::new();
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if fd < 3 {
            continue;
        }
        // A descriptor closed since the listing is simply not counted.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let kind = if let Some(inode) = bracketed(&target, "socket:") {
            let kind = inode
                .parse::<u64>()
                .ok()
                .and_then(|inode| sockets.get(&inode).cloned());
            format!("socket {}", kind.as_deref().unwrap_or("?"))
        } else if bracketed(&target, "pipe:").is_some() {
            "pipe".to_string()
        } else {
            dirs.iter()
                .find_map(|d| target.strip_prefix(d.as_str()))
                .map_or(target.clone(), |rest| format!("<dir>{rest}"))
        };
        *profile.entry(kind).or_default() += 1;
    }
    Ok(profile)
}

/// `123` in `socket:[123]`.
fn bracketed<'a>(target: &'a str, prefix: &str) -> Option<&'a str> {
    target
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')
}

/// Socket inode -> kind, from the process's /proc/PID/net tables.
fn socket_kinds(pid: u32) -> std::collections::HashMap<u64, String> {
    let mut kinds = std::collections::HashMap::new();
    for (table, name) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp"),
        ("udp", "udp"),
        ("udp6", "udp"),
    ] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(state), Some(inode)) = (fields.get(3), fields.get(9)) else {
                continue;
            };
            let state = match (name, *state) {
                ("udp", _) => "",
                (_, "01") => " ESTABLISHED",
                (_, "06") => " TIME_WAIT",
                (_, "07") => " CLOSE",
                (_, "08") => " CLOSE_WAIT",
                (_, "0A") => " LISTEN",
                _ => " other",
            };
            if let Ok(inode) = inode.parse() {
                kinds.insert(inode, format!("{name}{state}"));
            }
        }
    }
    let text = fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    for line in text.lines().skip(1) {
        // Num RefCount Protocol Flags Type St Inode [Path]
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(kind), Some(state), Some(inode)) =
            (fields.get(3), fields.get(4), fields.get(5), fields.get(6))
        else {
            continue;
        };
        let kind = match *kind {
            "0001" => "stream",
            "0002" => "dgram",
            "0005" => "seqpacket",
            _ => "other",
        };
        // __SO_ACCEPTCON: listening.
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|f| f & 0x0001_0000 != 0);
        let state = match (listening, *state) {
            (true, _) => "listening",
            (false, "03") => "connected",
            (false, "01") => "unconnected",
            _ => "other",
        };
        if let Ok(inode) = inode.parse() {
            kinds.insert(inode, format!("unix {kind} {state}"));
        }
    }
    kinds
}

/// What differs between two profiles: `+target xN` in `got` only,
/// `-target xN` in `expected` only.
pub fn profile_diff(got: &FdProfile, expected: &FdProfile) -> String {
    let mut diff = Vec::new();
    for key in got.keys().chain(expected.keys()) {
        let (g, e) = (
            got.get(key).copied().unwrap_or(0),
            expected.get(key).copied().unwrap_or(0),
        );
        if g > e {
            diff.push(format!("+{key} x{}", g - e));
        } else if e > g {
            diff.push(format!("-{key} x{}", e - g));
        }
    }
    diff.sort();
    diff.dedup();
    diff.join(", ")
}

/// Wait (up to `timeout`) until `pid`'s profile is `expected`: a process
/// that just served clients may still be closing their connections. The
/// last profile seen, or why not.
pub fn wait_fd_profile(
    pid: u32,
    dir: &Path,
    expected: &FdProfile,
    timeout: Duration,
) -> Result<FdProfile, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = fd_profile(pid, dir)?;
        if &got == expected {
            return Ok(got);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "pid {pid}'s descriptors differ from the baseline: {} (baseline {expected:?})",
                profile_diff(&got, expected)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A profile once it is the same for 100 ms (see [`stable_fd_count`]).
pub fn stable_fd_profile(pid: u32, dir: &Path) -> Result<FdProfile, String> {
    let mut last = fd_profile(pid, dir)?;
    let mut same = 0;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(20));
        let now = fd_profile(pid, dir)?;
        same = if now == last { same + 1 } else { 0 };
        if same >= 5 {
            return Ok(now);
        }
        last = now;
    }
    Err(format!("pid {pid}'s descriptors never settled"))
}

/// The phase named in a `recover` line (`... phase=<phase>`).
pub fn recovery_phase(line: &str) -> Option<&str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("phase="))
}

// ---- the cases -----------------------------------------------------------

/// The process killed at the crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The supervisor (test-supervisor, `HANDOFF_CRASH_AT` in its environment).
    S,
    /// The cold-started incumbent (in its environment only).
    O,
    /// The successor (inherits the test-supervisor's environment).
    N,
}

/// What the killed handoff run reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// The supervisor itself died (SIGKILL) at the crash point.
    Killed,
    Committed,
    /// Rolled back, the reason containing one of these.
    RolledBack(&'static [&'static str]),
}

/// Who serves once everything settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// The old incumbent resumed; the successor is gone.
    OldResumes,
    /// The successor is the incumbent; the old one exited.
    SuccessorServes,
    /// Nobody serves (the incumbent died): a cold restart brings the
    /// service back, as the supervisor does after an incumbent's death.
    NobodyServes,
    /// The supervisor died right after sending Begin: the successor's Ready
    /// may or may not have reached its socket before the kernel closed it.
    /// If it did, the successor is authoritative (and the old incumbent, unable
    /// to take the lock back, steps down); if not, the old incumbent resumes.
    /// The recovery reports which.
    ReadyDecides,
}

pub struct Case {
    pub point: &'static str,
    pub who: Who,
    /// A second crash point, for the successor (to make a rollback happen).
    pub successor_point: Option<&'static str>,
    /// The journal once the killed run is over: for S, the phase of the
    /// last step it journalled before the point (what the restarted
    /// supervisor recovers from); None when S wrote none yet, or when S
    /// survived (it deletes the journal once it committed or rolled back).
    pub journal: Option<Phase>,
    pub run: Run,
    pub after: After,
}

pub const fn case(
    point: &'static str,
    who: Who,
    journal: Option<Phase>,
    run: Run,
    after: After,
) -> Case {
    Case {
        point,
        who,
        successor_point: None,
        journal,
        run,
        after,
    }
}

/// N's death as the rollback's reason: how the supervisor saw it end (it
/// waits for the exit status after an EOF).
pub const N_KILLED: Run = Run::RolledBack(&["successor killed by signal 9"]);

/// A crash at each protocol boundary, for every suite.
pub const BOUNDARY_CASES: &[Case] = &[
    // S restarts: it reads the journal: Negotiating once N runs (durable
    // before PrepareHandoff), AwaitingReady once SealComplete is answered
    // with Begin (the drain and the seal are not journalled: recovery does
    // not read the phase), Committed once Commit is sent. The successor's
    // Ready decides.
    case(
        "S_AFTER_SPAWN",
        Who::S,
        None,
        Run::Killed,
        After::OldResumes,
    ),
    case(
        "S_AFTER_O_HELLO",
        Who::S,
        None,
        Run::Killed,
        After::OldResumes,
    ),
    case(
        "S_AFTER_N_HELLO",
        Who::S,
        Some(Phase::Negotiating),
        Run::Killed,
        After::OldResumes,
    ),
    // PrepareHandoff and SealRequest sent (one write): O drains, seals,
    // releases the lock, fails to send SealComplete (or sees EOF after it),
    // takes the lock back and resumes.
    case(
        "S_AFTER_PREPARE",
        Who::S,
        Some(Phase::Negotiating),
        Run::Killed,
        After::OldResumes,
    ),
    // O drained (and, asked already, usually sealed); the journal says
    // negotiating until Begin is on its way.
    case(
        "S_AFTER_DRAINED",
        Who::S,
        Some(Phase::Negotiating),
        Run::Killed,
        After::OldResumes,
    ),
    // The seal is journalled (as AwaitingReady) once Begin is on its way.
    case(
        "S_AFTER_SEAL_COMPLETE",
        Who::S,
        Some(Phase::Negotiating),
        Run::Killed,
        After::OldResumes,
    ),
    // Begin sent and N's Ready arrived, but the journal still says
    // Negotiating (it is written after Begin goes out): recovery must see
    // that N serves the control socket, whatever the phase.
    case(
        "S_READY_UNJOURNALLED",
        Who::S,
        Some(Phase::Negotiating),
        Run::Killed,
        After::SuccessorServes,
    ),
    case(
        "S_AFTER_BEGIN",
        Who::S,
        Some(Phase::AwaitingReady),
        Run::Killed,
        After::ReadyDecides,
    ),
    case(
        "S_AFTER_READY",
        Who::S,
        Some(Phase::AwaitingReady),
        Run::Killed,
        After::SuccessorServes,
    ),
    case(
        "S_AFTER_COMMIT",
        Who::S,
        Some(Phase::Committed),
        Run::Killed,
        After::SuccessorServes,
    ),
    // O crashes after SealComplete: N still becomes the incumbent.
    case(
        "O_AFTER_SEAL_COMPLETE",
        Who::O,
        None,
        Run::Committed,
        After::SuccessorServes,
    ),
    // O dies mid-handoff before sealing: rolled back, N reaped; nobody is
    // left to serve, so the service comes back with a cold restart.
    case(
        "O_AFTER_DRAINED",
        Who::O,
        None,
        Run::RolledBack(&["Seal"]),
        After::NobodyServes,
    ),
    // N dies after its handshake, while O drains or seals: rollback. Most
    // often S sees it dead while it waits for O; if N dies only after S
    // last looked, sending it the next frame fails instead (Begin; in a
    // handoff that moves, the forwarded Moving or Items).
    case(
        "N_AFTER_HELLO",
        Who::N,
        None,
        Run::RolledBack(&[
            "successor killed by signal 9",
            "Begin: ",
            "Moving: ",
            "Item: ",
        ]),
        After::OldResumes,
    ),
    // N exits before Ready: rollback, O re-takes the lock and resumes.
    case("N_AFTER_BEGIN", Who::N, None, N_KILLED, After::OldResumes),
    // N dies holding the data-dir lock, before Ready: rollback; O takes
    // the lock back (the kernel dropped N's flock; its pidfile is stale).
    case("N_AFTER_LOCK", Who::N, None, N_KILLED, After::OldResumes),
    // N dies after Ready: from Ready on N is authoritative, so the handoff
    // is committed and O steps down; the service is down until a cold
    // restart (N died holding the lock: the kernel freed it).
    case(
        "N_AFTER_READY",
        Who::N,
        None,
        Run::Committed,
        After::NobodyServes,
    ),
];

/// The steps of a handoff that moves connections (protocol v2), for the
/// pairs of services that both move them (kv::Lang::moves_connections).
pub const MOVE_CASES: &[Case] = &[
    // S dies with the first batch of Items forwarded: N sees its
    // socketpair close and exits; O, its connections not yet given up,
    // resumes with them.
    case(
        "S_MID_ITEMS",
        Who::S,
        Some(Phase::Negotiating),
        Run::Killed,
        After::OldResumes,
    ),
    // O dies with its Items sent, before Drained: rolled back; its
    // connections die with it (N never read them); nobody serves until
    // the cold restart.
    case(
        "O_AFTER_ITEMS",
        Who::O,
        None,
        Run::RolledBack(&["Drained", "Item"]),
        After::NobodyServes,
    ),
    // N dies having adopted the connections, before Ready: rolled back; O
    // takes its copies back and serves them.
    case("N_AFTER_ADOPT", Who::N, None, N_KILLED, After::OldResumes),
];

/// A crash inside each of the incumbent's hooks (the example services
/// have real ones; the no-op service's do nothing).
pub const HOOK_CASES: &[Case] = &[
    // O dies inside its drain hook: rolled back, N reaped; nobody is left
    // to serve until the cold restart.
    case(
        "O_IN_DRAIN",
        Who::O,
        None,
        Run::RolledBack(&["Drained", "Moving"]),
        After::NobodyServes,
    ),
    // O dies inside its seal hook, holding the lock (the kernel frees it).
    // The seal runs on the drain's heels, while Drained (and the moved
    // items) go out and the SealRequest comes: S finds O gone at any of them.
    case(
        "O_IN_SEAL",
        Who::O,
        None,
        Run::RolledBack(&["Drained", "Moving", "Item", "SealRequest", "SealComplete"]),
        After::NobodyServes,
    ),
    // O dies inside resume_after_abort (after taking the lock back), in a
    // rollback caused by N's death after Begin.
    Case {
        point: "O_IN_RESUME",
        who: Who::O,
        successor_point: Some("N_AFTER_BEGIN"),
        journal: None,
        run: N_KILLED,
        after: After::NobodyServes,
    },
];

/// What a crash case's world holds in both suites: a directory, the
/// listener, a supervisor holding a copy of it for cold starts, and the
/// processes the case started. Each suite's `Trial` derefs to it.
pub struct World<'b> {
    pub build: &'b CrashBuild,
    pub dir: tempfile::TempDir,
    pub listener: TcpListener,
    /// Holds a copy of the listener, for cold starts.
    pub cold: Supervisor,
    /// Cold-started generations: children of this process.
    pub cold_started: Vec<ChildProcess>,
    /// Wait statuses of reaped successors.
    pub statuses: HashMap<u32, i32>,
    /// test-supervisor runs so far (each gets its own stdout file).
    pub runs: usize,
    /// How long processes get to settle (exit, be reaped) after a step.
    pub settle: Duration,
}

impl<'b> World<'b> {
    /// A fresh world, and the listener's address.
    pub fn new(build: &'b CrashBuild, settle: Duration) -> Result<(World<'b>, String), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (listener, addr) = tcp_listener();
        let copy = listener.try_clone().map_err(|e| e.to_string())?;
        let cold = Supervisor::new(dir.path().join("control.sock"))
            .with_listener("kv", OwnedFd::from(copy))
            .map_err(|e| e.to_string())?;
        let world = World {
            build,
            dir,
            listener,
            cold,
            cold_started: Vec::new(),
            statuses: HashMap::new(),
            runs: 0,
            settle,
        };
        Ok((world, addr))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn control(&self) -> PathBuf {
        self.path("control.sock")
    }

    pub fn journal(&self) -> PathBuf {
        self.path("journal/state.bin")
    }

    pub fn data(&self) -> PathBuf {
        self.path("data")
    }

    /// Every service generation appends `pid=<pid> ...` here at start-up.
    pub fn report(&self) -> PathBuf {
        self.path("report.txt")
    }

    /// The stderr of every process of the case.
    pub fn log(&self) -> PathBuf {
        self.path("log.txt")
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn service_pids(&self) -> Vec<u32> {
        fs::read_to_string(self.report())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.strip_prefix("pid=")?.split(' ').next()?.parse().ok())
            .collect()
    }

    pub fn cold_pids(&self) -> Vec<u32> {
        self.cold_started.iter().map(ChildProcess::pid).collect()
    }

    /// Service pids started by a supervisor (successors).
    pub fn successor_pids(&self) -> Vec<u32> {
        let cold = self.cold_pids();
        self.service_pids()
            .into_iter()
            .filter(|pid| !cold.contains(pid))
            .collect()
    }

    /// The service uses the crash-enabled library: it maps the build's
    /// libhandoff.so, or (kv-rust, which links the crate in) it is the
    /// build's own executable.
    pub fn check_library(&self, pid: u32) -> Result<(), String> {
        let canonical_dir = |path: &Path| path.parent().and_then(|d| fs::canonicalize(d).ok());
        let lib_dir = fs::canonicalize(&self.build.lib_dir).ok();
        if let Some(mapped) = mapped_libhandoff(pid) {
            ensure!(
                canonical_dir(&mapped) == lib_dir,
                "pid {pid} runs {} instead of the crash-enabled library in {}",
                mapped.display(),
                self.build.lib_dir.display()
            );
            return Ok(());
        }
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|e| format!("pid {pid} maps no libhandoff.so, and its exe: {e}"))?;
        ensure!(
            canonical_dir(&exe) == fs::canonicalize(self.build.lib_dir.join("examples")).ok(),
            "pid {pid} maps no libhandoff.so and runs {}, not a crash-enabled build's example",
            exe.display()
        );
        Ok(())
    }

    /// Every process the case started except `keep` is dead (waiting for
    /// those on their way out), and reaped.
    pub fn check_no_orphan(&mut self, keep: Option<u32>) -> Result<(), String> {
        wait_no_orphan(
            || {
                let mut started = self.service_pids();
                started.extend(self.cold_pids());
                started
            },
            keep,
            self.settle,
        )?;
        self.reap_dead();
        Ok(())
    }

    pub fn reap_dead(&mut self) {
        for child in &mut self.cold_started {
            child.try_wait();
        }
        for pid in self.successor_pids() {
            if let Some(status) = reap(pid) {
                self.statuses.insert(pid, status);
            }
        }
    }

    pub fn successor_status(&self, pid: u32) -> String {
        self.statuses
            .get(&pid)
            .map_or_else(|| "exited".to_string(), |&status| describe_status(status))
    }

    /// No half-written file (journal, pidfile, generation, control socket)
    /// is left behind.
    pub fn check_no_temp_files(&self) -> Result<(), String> {
        let mut dirs = vec![self.dir.path().to_owned()];
        let mut leftovers = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|ext| ext == "tmp") {
                    leftovers.push(path);
                }
            }
        }
        ensure!(leftovers.is_empty(), "files left behind: {leftovers:?}");
        Ok(())
    }

    pub fn cold_status(&mut self, pid: u32) -> Option<i32> {
        let child = self.cold_started.iter_mut().find(|c| c.pid() == pid)?;
        child.wait_timeout(self.settle)
    }
}

impl Drop for World<'_> {
    fn drop(&mut self) {
        // Leftovers, killed by pid: they are children of this process (cold
        // starts, or reparented to this subreaper), so no pid is reused
        // before we reap it.
        let cold = self.cold_pids();
        let mut others: Vec<u32> = self
            .service_pids()
            .into_iter()
            .filter(|pid| !cold.contains(pid))
            .collect();
        others.extend(
            live_children()
                .into_iter()
                .filter(|pid| !cold.contains(pid)),
        );
        for &pid in &others {
            if pid_alive(pid) && parent_of(pid) == Some(std::process::id()) {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                wait_dead(pid, Duration::from_secs(2));
            }
            reap(pid);
        }
        for child in &mut self.cold_started {
            child.terminate(Duration::from_millis(500));
        }
    }
}

/// Check the restarted supervisor's report (`recover`) against what the
/// case expects: `none` when nothing was journalled, otherwise the journal's
/// phase and the outcome of the case (rolled back to `old`, or committed to
/// the successor). Resolves `ReadyDecides`, the one outcome a case leaves
/// open, with the report.
pub fn check_recovery(
    case: &Case,
    line: &str,
    old: u32,
    successors: &[u32],
) -> Result<After, String> {
    let Some(phase) = case.journal else {
        ensure!(
            line == "none",
            "recover said {line:?}, expected none (nothing journalled)"
        );
        return Ok(case.after);
    };
    ensure!(
        recovery_phase(line) == Some(phase.name()),
        "recover said {line:?}, expected phase={}",
        phase.name()
    );
    let (status, pid) = parse_recovery(line);
    let rolled_back = status == "rolled-back" && pid == Some(old);
    let committed = status == "committed" && pid.is_some() && successors == [pid.unwrap_or(0)];
    match case.after {
        After::OldResumes => {
            ensure!(
                rolled_back,
                "recover said {line:?}, expected rolled-back {old}"
            );
            Ok(After::OldResumes)
        }
        After::SuccessorServes => {
            ensure!(
                committed,
                "recover said {line:?}, expected committed (successors {successors:?})"
            );
            Ok(After::SuccessorServes)
        }
        After::ReadyDecides => {
            ensure!(
                rolled_back || committed,
                "recover said {line:?}, expected rolled-back {old} or committed \
                 (successors {successors:?})"
            );
            Ok(if committed {
                After::SuccessorServes
            } else {
                After::OldResumes
            })
        }
        After::NobodyServes => Err("a supervisor crash leaves an incumbent serving".into()),
    }
}

pub fn phase_name(phase: Option<Phase>) -> &'static str {
    phase.map_or("none", Phase::name)
}

/// Straight to stderr, past the test harness's capture: the matrix is the
/// point of this suite.
pub fn show(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The old incumbent's wait status: killed at the crash point when it was
/// the one killed (which proves LD_LIBRARY_PATH took effect), otherwise a
/// clean exit once committed or superseded, or the recovery's SIGTERM.
pub fn old_incumbent_exit(t: &mut World<'_>, old: u32, case: &Case) -> Result<i32, String> {
    let status = t
        .cold_status(old)
        .ok_or(format!("old incumbent {old} did not exit"))?;
    let killed = libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL;
    if case.who == Who::O {
        ensure!(
            killed,
            "old incumbent {}, expected killed at {}",
            describe_status(status),
            case.point
        );
    } else {
        ensure!(
            !killed,
            "old incumbent {} (SIGKILL: it did not step down)",
            describe_status(status)
        );
    }
    Ok(status)
}
