//! SIGHUP, SIGTERM and SIGINT as events: the handler only writes the
//! signal's number to a non-blocking self-pipe; a thread turns each byte
//! into a call of the given function, outside signal context.
#![allow(unsafe_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end, for the handler (-1 until installed).
static PIPE: AtomicI32 = AtomicI32::new(-1);

pub const HANDLED: [libc::c_int; 3] = [libc::SIGHUP, libc::SIGTERM, libc::SIGINT];

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; errno is saved and
        // restored around it, as the interrupted code may be reading it.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Install the handlers and deliver each signal to `deliver` on a thread
/// of its own. Call once.
pub fn install(deliver: impl Fn(libc::c_int) + Send + 'static) -> std::io::Result<()> {
    let (read, write) = handoff::poll::pipe()?;
    set_nonblocking(&write)?;
    PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
    // The write end lives as long as the process: the handler may run anytime.
    std::mem::forget(write);
    for signal in HANDLED {
        // SAFETY: a zeroed sigaction is valid; the handler only does
        // async-signal-safe work; SA_RESTART keeps other threads' blocking
        // calls from failing with EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    let mut read = std::fs::File::from(read);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            while let Ok(1) = read.read(&mut byte) {
                deliver(libc::c_int::from(byte[0]));
            }
        })?;
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}
