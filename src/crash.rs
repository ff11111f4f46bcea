//! Named crash points at protocol boundaries, for tests that kill a role
//! exactly there. Compiled out unless the `crash-points` feature is on; then
//! `HANDOFF_CRASH_AT=<name>` makes the process SIGKILL itself at `<name>`.

macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "crash-points")]
        $crate::crash::maybe_crash($name);
    };
}
pub(crate) use crash_point;

#[cfg(feature = "crash-points")]
#[allow(unsafe_code)]
pub fn maybe_crash(name: &str) {
    if std::env::var("HANDOFF_CRASH_AT").is_ok_and(|at| at == name) {
        // SAFETY: raising a signal on our own pid has no memory effects.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
