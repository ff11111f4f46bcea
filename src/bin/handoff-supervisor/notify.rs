//! sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET (a path,
//! or an abstract name written `@name`), and the watchdog keep-alive.
//! Not the sd-notify crate: it reads $NOTIFY_SOCKET on every call, and we
//! must take it out of the environment before the first service starts.
#![allow(unsafe_code)]

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::log::log;

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    failed_once: AtomicBool,
}

impl Notifier {
    /// Take $NOTIFY_SOCKET and the watchdog variables out of the
    /// environment (the service must not inherit them: its messages would
    /// come from a pid systemd does not expect).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(name);
        }
        let target = socket.and_then(|socket| match open(&socket) {
            Ok(target) => Some(target),
            Err(e) => {
                log!(Warn, &[], "NOTIFY_SOCKET={socket:?} is unusable: {e}");
                None
            }
        });
        let ours = watchdog_pid
            .as_deref()
            .is_none_or(|pid| pid == std::process::id().to_string());
        let watchdog = watchdog_usec
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|&usec| usec > 0 && ours && target.is_some())
            .map(Duration::from_micros);
        Notifier {
            target,
            watchdog,
            failed_once: AtomicBool::new(false),
        }
    }

    /// The service is up (after the cold start, and after each handoff).
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A handoff starts: systemd shows the unit as reloading until READY=1.
    pub fn reloading(&self, status: &str) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={status}",
            monotonic_usec()
        ));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// How often to call `watchdog` (half systemd's WatchdogSec), if enabled.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|period| period / 2)
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    fn send(&self, message: &str) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), address) {
            // systemd may be restarting; say so once, not on every status.
            if !self.failed_once.swap(true, Ordering::Relaxed) {
                log!(Warn, &[], "cannot notify systemd: {e}");
            }
        }
    }
}

fn open(socket: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None if bytes.starts_with(b"/") => SocketAddr::from_pathname(socket)?,
        None => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract name (@name)",
            ))
        }
    };
    // std creates its sockets close-on-exec: the service never inherits it.
    Ok((UnixDatagram::unbound()?, address))
}

/// CLOCK_MONOTONIC in microseconds, as systemd reads MONOTONIC_USEC.
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`, which is valid.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000
}
