//! Starting a service generation: a vfork-style clone and an exec, with a
//! clean descriptor table (listener i at fd 3+i, then the control socket)
//! and LISTEN_PID set to the child's own pid, which only the child can know
//! (DESIGN §3); each in a process group of its own, so that stopping it
//! stops what it forked too.
//! And the one way to stop a process: SIGTERM, a grace, SIGKILL.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::listeners::ENV_CONTROL_SOCKET;
use crate::poll;

/// The variables libhandoff sets for a child; any inherited copy is dropped.
const OWN_VARS: [&str; 6] = [
    "HANDOFF_ROLE",
    "HANDOFF_SOCK_FD",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
    ENV_CONTROL_SOCKET,
];
/// Room for any pid in the LISTEN_PID value, written by the child in place.
const PID_DIGITS: usize = 10;

/// What to run for a generation of the service.
#[derive(Debug, Clone, Default)]
pub struct Command {
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
}

/// How long `stop` waits after SIGKILL: the kernel needs a moment to tear
/// a process down, never this long unless it is stuck in the kernel.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Something `stop` can stop.
pub trait Stoppable {
    fn send(&mut self, signal: libc::c_int);
    /// Whether it is gone (reaped, if it is ours).
    fn gone(&mut self) -> bool;
}

/// SIGTERM, up to `grace` for it to go, then SIGKILL and a bounded wait:
/// the one way a successor, a retiring incumbent or a leftover process is
/// stopped. Whether it is gone.
pub fn stop(target: &mut impl Stoppable, grace: Duration) -> bool {
    if target.gone() {
        return true;
    }
    target.send(libc::SIGTERM);
    if wait_until(grace, || target.gone()) {
        return true;
    }
    target.send(libc::SIGKILL);
    wait_until(KILL_WAIT, || target.gone())
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A process that is not our child (found after a supervisor restart),
/// watched by pid. One that leads its own process group, as every
/// generation `spawn` starts does, is signalled with its group.
struct Foreign(u32);

impl Stoppable for Foreign {
    fn send(&mut self, signal: libc::c_int) {
        signal_group_of(self.0, signal);
        signal_pid(self.0, signal);
    }

    fn gone(&mut self) -> bool {
        !pid_alive(self.0)
    }
}

/// Stop a process that is not our child: SIGTERM, SIGKILL after `grace`.
pub fn terminate_pid(pid: u32, grace: Duration) -> bool {
    stop(&mut Foreign(pid), grace)
}

/// Signal the process group `pid` leads, if it leads one (every
/// generation `spawn` starts does): what it forked goes with it.
pub fn signal_group_of(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: getpgid(2) has no memory effects.
    if pid > 0 && unsafe { libc::getpgid(pid) } == pid {
        signal_group(pid, signal);
    }
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    if pgid > 0 {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(-pgid, signal) };
    }
}

/// Whether any process is left in the group `pgid`.
fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: kill(2) with signal 0 only checks; no memory effects.
    let found = unsafe { libc::kill(-pgid, 0) } == 0;
    found || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A child process we started, leading its own process group; reaped by
/// `wait`/`terminate`.
#[derive(Debug)]
pub struct ChildProcess {
    pid: libc::pid_t,
    status: Option<i32>,
}

impl Stoppable for ChildProcess {
    /// To the whole group: what the child forked must go with it.
    fn send(&mut self, signal: libc::c_int) {
        signal_group(self.pid, signal);
        self.signal(signal);
    }

    fn gone(&mut self) -> bool {
        self.try_wait().is_some() && !group_alive(self.pid)
    }
}

impl ChildProcess {
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// The raw wait status if the child has exited (reaping it);
    /// `STATUS_LOST` when it is gone but its status is not ours to read.
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = self.waitpid(libc::WNOHANG);
        }
        self.status
    }

    fn waitpid(&self, flags: libc::c_int) -> Option<i32> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let got = unsafe { libc::waitpid(self.pid, &mut status, flags) };
            if got == self.pid {
                return Some(status);
            }
            match (got, io::Error::last_os_error().raw_os_error()) {
                // Reaped already, by the kernel (SIGCHLD ignored) or by
                // someone else: gone, how is not known.
                (-1, Some(libc::ECHILD)) => return Some(STATUS_LOST),
                (-1, Some(libc::EINTR)) => continue,
                _ => return None,
            }
        }
    }

    /// Wait up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<i32> {
        wait_until(timeout, || self.try_wait().is_some());
        self.status
    }

    /// Stop the child and its process group (`stop`); always reaps the
    /// child.
    pub fn terminate(&mut self, grace: Duration) -> i32 {
        stop(self, grace);
        if self.status.is_none() {
            // SIGKILLed by `stop`: this wait ends.
            self.status = Some(self.waitpid(0).unwrap_or(STATUS_LOST));
        }
        self.status.unwrap_or(STATUS_LOST)
    }

    pub fn signal(&self, signal: libc::c_int) {
        if self.status.is_none() {
            // SAFETY: signalling our own unreaped child: its pid cannot have
            // been reused.
            unsafe { libc::kill(self.pid, signal) };
        }
    }
}

/// Whether `pid` names a live process (zombies count as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// When `pid` started (wall clock), from /proc: the start in clock ticks
/// after boot plus the boot time, which the kernel gives in whole seconds,
/// so the answer may be up to a second early.
pub fn process_started_at(pid: u32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, starttime; the fields after the command name start at 3.
    let (_, rest) = stat.rsplit_once(") ")?;
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf reads a system constant and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0)?;
    let after_boot = Duration::from_secs(ticks / hz)
        + Duration::from_nanos((ticks % hz).checked_mul(1_000_000_000)? / hz);
    Some(UNIX_EPOCH + Duration::from_secs(boot) + after_boot)
}

/// Signal a process that is not (or no longer) our child.
pub fn signal_pid(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

/// The "wait status" of a child that is gone when the kernel did not keep
/// its status for us (no real wait status is negative).
pub const STATUS_LOST: i32 = -1;

/// Have the kernel keep our children's exit statuses: a host may start us
/// with SIGCHLD ignored (the disposition survives exec), and then children
/// are reaped as they exit and nobody can say how they ended. Whether it
/// was ignored. Call before starting any child.
pub fn keep_child_statuses() -> bool {
    // SAFETY: sigaction with a null new action only reads the disposition
    // into the struct we pass; no handler is installed.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) != 0
            || old.sa_sigaction != libc::SIG_IGN
        {
            return false;
        }
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
    true
}

/// A human reading of a wait status.
pub fn describe_status(status: i32) -> String {
    if status == STATUS_LOST {
        "exited (how is unknown: it was reaped by the kernel or another process)".into()
    } else if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::Environment(format!("{what} contains a NUL byte")))
}

fn resolve(binary: &Path) -> Result<PathBuf> {
    if binary.as_os_str().as_bytes().contains(&b'/') {
        return Ok(binary.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::io("cannot find", binary, io::ErrorKind::NotFound.into()))
}

/// A successor's end of the supervisor's socketpair, and the control
/// socket path the supervisor will reach it at as the incumbent.
pub struct SuccessorControl<'a> {
    pub fd: BorrowedFd<'a>,
    pub path: &'a Path,
}

/// Start `command` with `fds` (listeners, then the control socket if any) at
/// descriptors 3.., the listener variables, and, when `control` is set, the
/// successor variables.
pub fn spawn(
    command: &Command,
    listeners: &[(String, BorrowedFd<'_>)],
    control: Option<SuccessorControl<'_>>,
) -> Result<ChildProcess> {
    let binary = resolve(&command.binary)?;
    let path = cstring(binary.as_os_str().as_bytes(), "binary path")?;
    let mut argv = vec![path.clone()];
    for arg in &command.args {
        argv.push(cstring(arg.as_bytes(), "an argument")?);
    }

    let n = listeners.len();
    let mut envp: Vec<CString> = Vec::new();
    for (key, value) in std::env::vars_os().chain(command.env.iter().cloned()) {
        if OWN_VARS.iter().any(|own| OsStr::new(own) == key) {
            continue;
        }
        let mut pair = key.into_vec();
        pair.push(b'=');
        pair.extend(value.as_bytes());
        envp.push(cstring(&pair, "an environment variable")?);
    }
    if n > 0 {
        let names: Vec<&str> = listeners.iter().map(|(name, _)| name.as_str()).collect();
        envp.push(cstring(format!("LISTEN_FDS={n}").as_bytes(), "LISTEN_FDS")?);
        envp.push(cstring(
            format!("LISTEN_FDNAMES={}", names.join(":")).as_bytes(),
            "a listener name",
        )?);
    }
    if let Some(control) = &control {
        envp.push(c"HANDOFF_ROLE=successor".to_owned());
        envp.push(cstring(
            format!("HANDOFF_SOCK_FD={}", 3 + n).as_bytes(),
            "HANDOFF_SOCK_FD",
        )?);
        let mut pair = format!("{ENV_CONTROL_SOCKET}=").into_bytes();
        pair.extend(control.path.as_os_str().as_bytes());
        envp.push(cstring(&pair, "the control socket path")?);
    }
    // Filled in by the child with its own pid; the padding NULs end it early.
    let mut listen_pid = b"LISTEN_PID=".to_vec();
    listen_pid.resize(listen_pid.len() + PID_DIGITS + 1, 0);
    let pid_at = listen_pid.len() - PID_DIGITS - 1;

    let mut sources: Vec<RawFd> = listeners.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    sources.extend(control.as_ref().map(|control| control.fd.as_raw_fd()));
    if sources.len() > MAX_SOURCES {
        return Err(Error::Environment(format!(
            "{n} listeners: at most {} can be passed",
            MAX_SOURCES - 1
        )));
    }
    let shortage = || descriptor_shortage(n, control.is_some());
    let (error_read, error_write) = poll::pipe().map_err(|e| match e.raw_os_error() {
        Some(libc::EMFILE) => shortage(),
        _ => Error::Stream(e),
    })?;
    // What the child keeps open while it places the sources, in order.
    let mut keep: Vec<RawFd> = sources.clone();
    keep.push(error_write.as_raw_fd());
    keep.sort_unstable();
    keep.dedup();

    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    if n > 0 {
        envp_ptrs.push(listen_pid.as_ptr().cast());
    }
    envp_ptrs.push(std::ptr::null());

    let child = ChildSetup {
        path: &path,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        listen_pid: &mut listen_pid,
        pid_at,
        fds: Descriptors {
            sources: &sources,
            keep: &keep,
            error_fd: error_write.as_raw_fd(),
        },
    };
    let pid = start_child(child)?;
    // The child does this too; whichever runs first, the group exists
    // before anyone signals it (EACCES once it has exec'd: done already).
    // SAFETY: setpgid(2) on our own child has no memory effects.
    unsafe { libc::setpgid(pid, pid) };
    drop(error_write);
    let mut child = ChildProcess { pid, status: None };
    let mut errno = [0u8; 4];
    // SAFETY: reading into a valid 4-byte buffer from our pipe end.
    let got = unsafe { libc::read(error_read.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
    if got == 4 {
        child.wait_timeout(Duration::from_secs(5));
        let errno = i32::from_ne_bytes(errno);
        if errno == PLACEMENT_FAILED {
            return Err(shortage());
        }
        let cause = io::Error::from_raw_os_error(errno);
        return Err(Error::io("cannot execute", binary, cause));
    }
    Ok(child)
}

/// Everything the child needs between its start and the exec, prepared
/// by the parent (the child allocates nothing).
struct ChildSetup<'a> {
    path: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    listen_pid: &'a mut [u8],
    pid_at: usize,
    fds: Descriptors<'a>,
}

/// The child's own stack while it shares our memory (a vfork): it places
/// descriptors and execs, no more. Below it, a guard page, so that an
/// overflow faults instead of writing over our memory.
const CHILD_STACK: usize = 64 * 1024;
const GUARD: usize = 4096;

/// Start the child that runs `setup` and execs: a vfork-style clone (the
/// child borrows our memory and we wait until it has exec'd or exited, as
/// glibc's posix_spawn does), so that no page table is copied and nothing
/// we write afterwards faults on copy-on-write: fork took 0.15 ms of every
/// spawn here. Where that clone is refused (valgrind, a seccomp filter), a
/// fork.
fn start_child(mut setup: ChildSetup<'_>) -> Result<libc::pid_t> {
    if let Some(mapping) = child_stack() {
        // Every signal blocked until the child has reset its handlers: one
        // of ours must not run in it, on our memory.
        // SAFETY: sigset_t is a plain bit array (all zeros: empty), filled
        // by sigfillset; this thread's mask only.
        let before = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut before: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
            before
        };
        // SAFETY: the child runs `vfork_child` on its own stack (the top of
        // the mapping, 16-byte aligned by mmap) with `setup`, which outlives
        // it: CLONE_VFORK suspends us until it has exec'd or exited.
        let pid = unsafe {
            libc::clone(
                vfork_child,
                mapping.cast::<u8>().add(GUARD + CHILD_STACK).cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&mut setup as *mut ChildSetup<'_>).cast(),
            )
        };
        // SAFETY: restoring the mask saved above; the mapping is ours and
        // the child no longer runs on it.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
            libc::munmap(mapping, GUARD + CHILD_STACK);
        }
        if pid > 0 {
            return Ok(pid);
        }
    }
    // SAFETY: fork in a possibly multi-threaded process: the child only
    // makes async-signal-safe calls (fcntl, dup2, close_range, setpgid,
    // sigprocmask, sigaction, execve, write, _exit) on memory prepared
    // above, and never allocates.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::Stream(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child, see above.
        unsafe { child_exec(setup) }
    }
    Ok(pid)
}

/// The clone's entry point: the child of `start_child`.
extern "C" fn vfork_child(setup: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `start_child` passes its `ChildSetup`, alive and not touched
    // by the suspended parent; the signal handlers are reset before any
    // signal is unblocked.
    unsafe {
        reset_signal_handlers();
        child_exec(std::ptr::read(setup.cast::<ChildSetup<'_>>()))
    }
}

/// A mapping for the child's stack, its lowest page a guard; None when
/// the system refuses one.
fn child_stack() -> Option<*mut libc::c_void> {
    // SAFETY: a private anonymous mapping, unmapped by `start_child`;
    // nothing else refers to it.
    let mapping = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            GUARD + CHILD_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if mapping == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: the first page of the mapping just made.
    if unsafe { libc::mprotect(mapping, GUARD, libc::PROT_NONE) } != 0 {
        // SAFETY: the mapping made above, unused.
        unsafe { libc::munmap(mapping, GUARD + CHILD_STACK) };
        return None;
    }
    Some(mapping)
}

/// In a child sharing our memory: every caught signal back to its default
/// (an ignored one stays ignored across exec, as with fork).
///
/// # Safety
/// Only in the child, before it unblocks signals.
unsafe fn reset_signal_handlers() {
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction on a valid struct; async-signal-safe.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            if current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
    }
}

/// Sources (listeners and the control socket) a child can be given.
const MAX_SOURCES: usize = 64;
/// What the child reports when it could not put the sources at 3..: no
/// errno says it (EINVAL, EBADF or EMFILE, depending on where it ran out).
const PLACEMENT_FAILED: i32 = -1;

/// The soft RLIMIT_NOFILE.
fn descriptor_limit() -> Option<u64> {
    crate::sys::descriptor_limits().ok().map(|(soft, _)| soft)
}

/// Out of descriptors while passing `listeners` (and a control socket).
fn descriptor_shortage(listeners: usize, control: bool) -> Error {
    let limit = descriptor_limit().map_or("unknown".into(), |l| l.to_string());
    Error::Environment(format!(
        "descriptor limit {limit} too low for {listeners} listeners{}: {} (raise \
         RLIMIT_NOFILE, LimitNOFILE= under systemd)",
        if control {
            " and the control socket"
        } else {
            ""
        },
        io::Error::from_raw_os_error(libc::EMFILE)
    ))
}

/// The descriptors the child places: `sources` at 3.., keeping `keep`
/// (sorted) open meanwhile, and reporting failures on `error_fd`.
struct Descriptors<'a> {
    sources: &'a [RawFd],
    keep: &'a [RawFd],
    error_fd: RawFd,
}

/// The child's half of `spawn`. Never returns.
///
/// # Safety
/// Only between the child's start and its exec; every pointer comes from
/// the parent's prepared, still-mapped buffers.
unsafe fn child_exec(setup: ChildSetup<'_>) -> ! {
    let ChildSetup {
        path,
        argv,
        envp,
        listen_pid,
        pid_at,
        fds,
    } = setup;
    let Descriptors {
        sources,
        keep,
        error_fd,
    } = fds;
    let report = |error_fd: RawFd, errno: i32| -> ! {
        let errno = errno.to_ne_bytes();
        // SAFETY: async-signal-safe write and _exit.
        unsafe {
            libc::write(error_fd, errno.as_ptr().cast(), 4);
            libc::_exit(127)
        }
    };
    let fail = |error_fd: RawFd| -> ! {
        report(
            error_fd,
            io::Error::last_os_error().raw_os_error().unwrap_or(0),
        )
    };
    let placement_failed = |error_fd: RawFd| -> ! { report(error_fd, PLACEMENT_FAILED) };
    let first_free = 3 + sources.len() as RawFd;
    // Close what is not kept above the targets (it would close on exec
    // anyway), so that the copies below find room even at a low limit.
    let mut low = first_free;
    for &fd in keep.iter().filter(|&&fd| fd >= first_free) {
        if fd > low {
            // SAFETY: close_range is a plain syscall (ENOSYS on old kernels:
            // then nothing is closed and the copies may not find room).
            unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    low as libc::c_uint,
                    (fd - 1) as libc::c_uint,
                    0,
                )
            };
        }
        low = fd + 1;
    }
    // SAFETY: as above.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            low as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    // The error pipe must survive the placement: out of the target range.
    let mut error_fd = error_fd;
    if error_fd < first_free {
        // SAFETY: fcntl is async-signal-safe.
        let high = unsafe { libc::fcntl(error_fd, libc::F_DUPFD_CLOEXEC, first_free) };
        if high < 0 {
            // SAFETY: _exit is async-signal-safe; the parent sees EOF.
            unsafe { libc::_exit(127) }
        }
        error_fd = high;
    }
    // Put source i at 3+i without clobbering one not yet placed: a source
    // goes once its target holds no other unplaced source (listeners sit in
    // order, often shifted by one, so that needs no copy); a cycle is
    // broken by copying one member above the range. No allocation here.
    let count = sources.len();
    let mut at = [0 as RawFd; MAX_SOURCES];
    at[..count].copy_from_slice(sources);
    let mut done = [false; MAX_SOURCES];
    let mut left = count;
    while left > 0 {
        let mut progress = false;
        for i in 0..count {
            let target = 3 + i as RawFd;
            let blocked = (0..count).any(|j| j != i && !done[j] && at[j] == target);
            if done[i] || blocked {
                continue;
            }
            // In place: only close-on-exec to clear; else dup2, which clears it.
            // SAFETY: fcntl/dup2 are async-signal-safe.
            let placed = if at[i] == target {
                unsafe { libc::fcntl(target, libc::F_SETFD, 0) }
            } else {
                unsafe { libc::dup2(at[i], target) }
            };
            if placed < 0 {
                placement_failed(error_fd);
            }
            done[i] = true;
            left -= 1;
            progress = true;
        }
        if !progress {
            let i = (0..count).find(|&i| !done[i]).unwrap_or(0);
            // SAFETY: fcntl is async-signal-safe.
            let high = unsafe { libc::fcntl(at[i], libc::F_DUPFD_CLOEXEC, first_free) };
            if high < 0 {
                placement_failed(error_fd);
            }
            at[i] = high;
        }
    }
    // Everything else closes on exec (the error pipe too, which tells the
    // parent the exec succeeded).
    // SAFETY: close_range is a plain syscall; on old kernels it fails with
    // ENOSYS and the descriptors we opened are already close-on-exec.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first_free as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };

    if !sources.is_empty() {
        // SAFETY: getpid is async-signal-safe.
        let mut pid = unsafe { libc::getpid() } as u32;
        let mut digits = [0u8; PID_DIGITS];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (pid % 10) as u8;
            len += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        for i in 0..len {
            listen_pid[pid_at + i] = digits[len - 1 - i];
        }
    }
    // A group of its own, so that stopping it stops what it forks.
    // SAFETY: setpgid is async-signal-safe.
    if unsafe { libc::setpgid(0, 0) } < 0 {
        fail(error_fd);
    }
    // SAFETY: resetting the signal state std would reset: Rust ignores
    // SIGPIPE, and an ignored disposition survives exec.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    fail(error_fd)
}
