//! Interruptible waits: poll(2) on one descriptor plus a wake channel.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Ready,
    TimedOut,
    /// The wake descriptor became readable.
    Woken,
}

/// Wait until `fd` is ready for `events`, `wake` becomes readable, or
/// `deadline` (None: forever) passes.
pub fn wait_fd(
    fd: RawFd,
    events: libc::c_short,
    wake: Option<BorrowedFd<'_>>,
    deadline: Option<Instant>,
) -> io::Result<Wait> {
    loop {
        let mut fds = [
            libc::pollfd {
                fd,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.map_or(-1, |w| w.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let millis = timeout_millis(deadline);
        // SAFETY: `fds` is a valid array of two pollfd for the call; poll(2)
        // ignores a negative fd.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, millis) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if fds[1].revents != 0 {
            return Ok(Wait::Woken);
        }
        if fds[0].revents != 0 {
            return Ok(Wait::Ready);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Wait::TimedOut);
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec wake channel: (read end, write end). A connected Unix
/// socket pair, not a pipe: [`wake`] sends with MSG_NOSIGNAL|MSG_DONTWAIT,
/// so a read end already closed is never a SIGPIPE in the host process and
/// a full one never blocks the waker.
pub fn wake_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both are fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Make the read end of a wake channel readable (for good unless drained).
pub fn wake(write_end: BorrowedFd<'_>) {
    // SAFETY: sending one byte from a valid buffer on a descriptor we borrow.
    let _ = unsafe {
        libc::send(
            write_end.as_raw_fd(),
            [1u8].as_ptr().cast(),
            1,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
}

/// Make `fd` non-blocking (for the read end of a wake channel that is drained).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we borrow, with no pointers.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Empty a non-blocking wake channel's read end.
pub fn drain(read_end: BorrowedFd<'_>) {
    let mut sink = [0u8; 64];
    // SAFETY: reading into a local buffer of the length passed.
    while unsafe { libc::read(read_end.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
}

/// poll(2) over `fds` until `deadline` (None: forever), retrying EINTR.
/// Negative descriptors are ignored, as poll(2) does.
pub fn poll(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let millis = timeout_millis(deadline);
        // SAFETY: `fds` is a valid, exclusively borrowed array of its length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if ready >= 0 {
            return Ok(ready as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Milliseconds until `deadline`, rounded up so a wait never ends a hair
/// before it; -1 (forever) for None.
fn timeout_millis(deadline: Option<Instant>) -> libc::c_int {
    deadline.map_or(-1, |d| {
        let left = d.saturating_duration_since(Instant::now());
        left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int
    })
}

/// Read one byte from a non-blocking descriptor; false when none is there
/// (or at EOF).
pub fn read_one(fd: BorrowedFd<'_>) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: reading one byte into a local buffer from a descriptor we borrow.
    unsafe { libc::read(fd.as_raw_fd(), byte.as_mut_ptr().cast(), 1) == 1 }
}
