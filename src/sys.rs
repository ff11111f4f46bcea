//! Thin checked wrappers over the few syscalls std does not offer.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Mark a descriptor close-on-exec (a per-descriptor flag: it does not touch
/// the shared open file description, unlike O_NONBLOCK).
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer descriptor has no memory-safety effect;
    // an invalid descriptor answers EBADF.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    Ok(())
}

/// Whether `fd` is a socket (one fstat).
pub fn is_socket(fd: RawFd) -> io::Result<bool> {
    // SAFETY: `st` is a valid out-parameter of the size fstat writes; an
    // invalid descriptor answers EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
}

/// Whether the open file description behind `fd` is non-blocking.
pub fn is_nonblocking(fd: RawFd) -> io::Result<bool> {
    Ok(file_status_flags(fd)? & libc::O_NONBLOCK != 0)
}

/// The file status flags (F_GETFL) of the open file description behind `fd`.
pub fn file_status_flags(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: as in `set_cloexec`.
    check(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// Set them back (F_SETFL).
pub fn set_file_status_flags(fd: RawFd, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: as in `set_cloexec`.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) })?;
    Ok(())
}

/// An integer socket option (SO_TYPE, SO_DOMAIN, SO_ACCEPTCONN, ...).
pub fn socket_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes passed.
    check(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// The kernel's record of the process at the other end of a Unix socket,
/// latched at connect(2)/socketpair(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

pub fn peer_cred(socket: &impl AsRawFd) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed.
    check(unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(PeerCred {
        pid: cred.pid as u32,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Try to take a `flock(2)` on `fd` without blocking: exclusive or shared.
/// `Ok(false)` means another open file description holds a conflicting one.
/// flock belongs to the open file description, not the process: two opens
/// of the same file in one process conflict.
pub fn try_flock(fd: RawFd, exclusive: bool) -> io::Result<bool> {
    let operation = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    loop {
        // SAFETY: flock on an integer descriptor has no memory-safety effect;
        // an invalid descriptor answers EBADF.
        match check(unsafe { libc::flock(fd, operation) }) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Drop the `flock(2)` held through `fd`'s open file description, even if
/// other descriptors (a forked child's copy) still share it.
pub fn unlock_flock(fd: RawFd) -> io::Result<()> {
    // SAFETY: as in `try_flock`.
    check(unsafe { libc::flock(fd, libc::LOCK_UN) })?;
    Ok(())
}

/// Whether a process with this pid exists (`kill(pid, 0)`; a process of
/// another user counts). Pid 0 and pids beyond `pid_t` never exist: they
/// would address process groups.
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let ret = unsafe { libc::kill(pid, 0) };
    ret == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether `fd` is marked close-on-exec.
pub fn is_cloexec(fd: RawFd) -> io::Result<bool> {
    // SAFETY: as in `set_cloexec`.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    Ok(flags & libc::FD_CLOEXEC != 0)
}

/// The soft and hard RLIMIT_NOFILE (RLIM_INFINITY as u64::MAX).
pub fn descriptor_limits() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raise the soft RLIMIT_NOFILE to the hard one (as far as the kernel's
/// nr_open lets it), and answer the soft limit now in force.
pub fn raise_descriptor_limit() -> io::Result<u64> {
    let (soft, hard) = descriptor_limits()?;
    if soft >= hard {
        return Ok(soft);
    }
    let wanted = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) }).is_err() {
        // An infinite hard limit may be above nr_open: leave it as it was.
        return Ok(soft);
    }
    Ok(hard)
}

/// Descriptors this process has open (from /proc/self/fd, less the one
/// reading it).
pub fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}

/// Descriptors this process may still open (usize::MAX when unlimited or
/// unknown).
pub fn free_descriptors() -> usize {
    match descriptor_limits() {
        Ok((soft, _)) if soft != libc::RLIM_INFINITY => usize::try_from(soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(open_descriptors()),
        _ => usize::MAX,
    }
}
