//! A process pinned by a pidfd: its pid cannot be reused while the
//! descriptor is open, so a check and the signals after it reach the same
//! process, and its exit is a readable descriptor to poll.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Instant;

use crate::poll::{self, Wait};

pub struct PidFd {
    fd: OwnedFd,
    pid: u32,
}

impl PidFd {
    /// None when the process is gone (or the kernel has no pidfds).
    pub fn open(pid: u32) -> Option<PidFd> {
        let raw = libc::pid_t::try_from(pid).ok().filter(|&p| p > 0)?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh descriptor the kernel just gave us (close-on-exec
        // by default for pidfds).
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Some(PidFd { fd, pid })
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: pidfd_send_signal on our pidfd, with no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }

    /// Whether the process has exited (without waiting).
    pub fn exited(&self) -> bool {
        self.wait_exit(Instant::now())
    }

    /// Wait until the process has exited (the pidfd becomes readable).
    pub fn wait_exit(&self, until: Instant) -> bool {
        matches!(
            poll::wait_fd(self.fd.as_raw_fd(), libc::POLLIN, None, Some(until)),
            Ok(Wait::Ready)
        )
    }
}

/// SIGTERM, grace, SIGKILL through `spawn::stop`, the one way a process is
/// stopped; what it leads (its process group) goes with it.
impl crate::spawn::Stoppable for PidFd {
    fn send(&mut self, signal: libc::c_int) {
        crate::spawn::signal_group_of(self.pid, signal);
        self.signal(signal);
    }

    fn gone(&mut self) -> bool {
        self.exited()
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
