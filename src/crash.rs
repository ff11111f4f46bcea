//! Named crash points at protocol boundaries, for tests that kill a role
//! exactly there. Compiled out unless the `crash-points` feature is on; then
//! `HANDOFF_CRASH_AT=<name>` makes the process SIGKILL itself at `<name>`.
//!
//! Which process a point kills is decided by the environment alone: any
//! process that has `HANDOFF_CRASH_AT=<name>` and reaches the point dies.
//! The prefix names the role whose code reaches it (`S_` the supervisor,
//! `O_` the incumbent, `N_` the successor), except `N_AFTER_LOCK`, in
//! `DataDirLock::acquire`, which every role may call: the crash tests give
//! S and N points to the supervisor, whose successors inherit its
//! environment, and the supervisor never takes the lock.

macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "crash-points")]
        $crate::crash::maybe_crash($name);
    };
}
pub(crate) use crash_point;

/// Whether this process is to die at `name` (for a point that must first
/// wait for the window it stands for).
#[cfg(feature = "crash-points")]
pub fn armed(name: &str) -> bool {
    std::env::var("HANDOFF_CRASH_AT").is_ok_and(|at| at == name)
}

#[cfg(feature = "crash-points")]
#[allow(unsafe_code)]
pub fn maybe_crash(name: &str) {
    if armed(name) {
        // SAFETY: raising a signal on our own pid has no memory effects.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
