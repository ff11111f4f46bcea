//! A generation of the service as the main loop tracks it: our child, or a
//! process adopted after a supervisor restart (watched by pid).

use std::time::Duration;

use handoff::spawn::{describe_status, pid_alive, terminate_pid, ChildProcess};

/// A generation of the service.
pub enum Process {
    /// Started by this supervisor.
    Child(ChildProcess),
    /// Found running after a supervisor restart: not our child.
    Adopted(u32),
}

impl Process {
    pub fn pid(&self) -> u32 {
        match self {
            Process::Child(child) => child.pid(),
            Process::Adopted(pid) => *pid,
        }
    }

    /// How it ended (description, success), once it has.
    pub fn exited(&mut self) -> Option<(String, bool)> {
        match self {
            Process::Child(child) => child.try_wait().map(|status| {
                let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
                (describe_status(status), ok)
            }),
            Process::Adopted(pid) => (!pid_alive(*pid)).then(|| ("is gone".to_string(), false)),
        }
    }

    /// SIGTERM, SIGKILL after `grace` (`handoff::spawn::stop`, with its
    /// process group); reaped if ours.
    pub fn terminate(&mut self, grace: Duration) {
        match self {
            Process::Child(child) => {
                child.terminate(grace);
            }
            Process::Adopted(pid) => {
                terminate_pid(*pid, grace);
            }
        }
    }
}
