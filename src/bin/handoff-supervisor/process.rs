//! A generation of the service as the main loop tracks it: our child, or a
//! process adopted after a supervisor restart (watched by pid).

use std::time::{Duration, Instant};

use handoff::spawn::{describe_status, pid_alive, signal_pid, ChildProcess};

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

    pub fn signal(&self, signal: libc::c_int) {
        match self {
            Process::Child(child) => child.signal(signal),
            Process::Adopted(pid) => signal_pid(*pid, signal),
        }
    }

    /// SIGTERM, SIGKILL after `grace`; reaped if ours.
    pub fn terminate(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
