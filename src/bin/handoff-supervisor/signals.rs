//! SIGHUP, SIGTERM and SIGINT as events: signal-hook's handler writes to
//! its self-pipe (close-on-exec, so no service inherits it) and a thread of
//! ours turns each signal into a call of the given function, outside signal
//! context.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Install the handlers and deliver each signal to `deliver` on a thread
/// of its own. Call once.
pub fn install(deliver: impl Fn(libc::c_int) + Send + 'static) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                deliver(signal);
            }
        })?;
    Ok(())
}

pub fn name(signal: libc::c_int) -> &'static str {
    match signal {
        SIGHUP => "SIGHUP",
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "signal",
    }
}
