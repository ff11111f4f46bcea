//! SIGTERM and SIGINT, once serving, as a readable pipe in the poll set.
//! Before they are installed the default action applies: a successor
//! killed before Ready leaves nothing behind.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, IntoRawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end, for the handler.
static WRITE_END: AtomicI32 = AtomicI32::new(-1);
/// The read end, for the loop.
static READ_END: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe; one byte from a local, to a
    // non-blocking pipe (a full one means a signal is already pending).
    // errno is saved and restored around it for the interrupted code.
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        libc::write(
            WRITE_END.load(Ordering::Relaxed),
            (&byte as *const u8).cast(),
            1,
        );
        *errno = saved;
    }
}

/// Install the handlers; the read end becomes readable on a signal. The
/// pipe lives as long as the process.
pub fn install() -> std::io::Result<BorrowedFd<'static>> {
    let (read, write) = handoff::poll::pipe()?;
    handoff::poll::set_nonblocking(read.as_fd())?;
    handoff::poll::set_nonblocking(write.as_fd())?;
    // Never closed: the handler may run at any time until the process ends.
    READ_END.store(read.into_raw_fd(), Ordering::Relaxed);
    WRITE_END.store(write.into_raw_fd(), Ordering::Relaxed);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"; the
        // handler only does async-signal-safe work.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: the read end is never closed (see above).
    Ok(unsafe { BorrowedFd::borrow_raw(READ_END.load(Ordering::Relaxed)) })
}

/// The signal that woke the loop (0 if none is there).
pub fn take() -> u8 {
    let mut byte = 0u8;
    // SAFETY: reading one byte into a local from the non-blocking pipe.
    unsafe {
        libc::read(
            READ_END.load(Ordering::Relaxed),
            (&mut byte as *mut u8).cast(),
            1,
        );
    }
    byte
}
