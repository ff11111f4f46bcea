//! A noop-service cold-started under an in-process `Supervisor`, as the
//! library's own tests drive a handoff: a listener, a journal, the service's
//! processes reaped when the test ends, and what must hold once a handoff
//! has settled.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use handoff::lock::{DataDirLock, LockState};
use handoff::supervisor::{Outcome, SpawnSpec, Supervisor, Timeouts};

use crate::common::{noop_service, service_command, tcp_listener, wait_for_pong, Reaper};

/// Where the service keeps its data and the supervisor its journal, and how
/// the service is started; `Start::default()` is the usual.
#[derive(Default)]
pub struct Start<'a> {
    /// The data directory; `data` in the service's own temporary directory
    /// when None.
    pub data_dir: Option<PathBuf>,
    /// The journal; `journal/state.bin` in the service's own temporary
    /// directory when None.
    pub journal: Option<PathBuf>,
    /// Flags added to the cold-started incumbent's command.
    pub cold_flags: &'a [&'a str],
    /// Whether the shared listener is non-blocking.
    pub nonblocking: bool,
}

pub struct Service {
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub journal: PathBuf,
    pub addr: String,
    pub supervisor: Supervisor,
    pub reaper: Reaper,
    pub incumbent: u32,
    pub listener_fd: i32,
}

impl Service {
    /// The service cold-started as `start` says, once it answers.
    pub fn start(start: Start) -> Service {
        let binary = noop_service();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = start.data_dir.unwrap_or_else(|| dir.path().join("data"));
        let control = dir.path().join("control.sock");
        let journal = start
            .journal
            .unwrap_or_else(|| dir.path().join("journal/state.bin"));
        let (tcp, addr) = tcp_listener();
        tcp.set_nonblocking(start.nonblocking).unwrap();
        let listener_fd = tcp.as_raw_fd();
        let supervisor = Supervisor::new(&control)
            .with_listener("kv", OwnedFd::from(tcp))
            .unwrap()
            .with_journal(&journal)
            .with_timeouts(Timeouts {
                kill_grace: Duration::from_millis(500),
                ..Timeouts::default()
            });
        let mut reaper = Reaper::default();
        let command = service_command(&binary, &data_dir, &control, start.cold_flags);
        let incumbent = reaper.keep(supervisor.spawn_cold(&command).unwrap());
        wait_for_pong(&addr, incumbent, Duration::from_secs(10));
        Service {
            dir,
            data_dir,
            journal,
            addr,
            supervisor,
            reaper,
            incumbent,
            listener_fd,
        }
    }

    /// A successor: noop-service with `flags` added.
    pub fn spec(&self, flags: &[&str]) -> SpawnSpec {
        let control = self.supervisor.control_path().to_owned();
        SpawnSpec {
            command: service_command(&noop_service(), &self.data_dir, &control, flags),
            ..SpawnSpec::new(noop_service())
        }
    }

    /// A handoff to a successor with `flags`; it may roll back, but not
    /// fail to run.
    pub fn hand_off(&self, flags: &[&str]) -> Outcome {
        self.supervisor.perform_handoff(&self.spec(flags)).unwrap()
    }

    /// Invariants 1 and 6 and a cleared journal: `pid` answers and is the
    /// one lock holder.
    pub fn assert_settled(&self, pid: u32) {
        wait_for_pong(&self.addr, pid, Duration::from_secs(10));
        assert_eq!(
            DataDirLock::probe(&self.data_dir).unwrap(),
            LockState::Held { pid: Some(pid) },
            "pid {pid} holds the lock"
        );
        assert!(!self.journal.exists(), "journal cleared");
        // No control socket a successor bound ahead (`<path>.<pid in
        // hex>.tmp`) outlives it, however it ended (a prepared one, held
        // alive, keeps its own).
        let control = self.supervisor.control_path();
        let prefix = format!("{}.", control.file_name().unwrap().to_string_lossy());
        let left: Vec<String> = std::fs::read_dir(control.parent().unwrap())
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| {
                let pid = name
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix(".tmp"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok());
                pid.is_some_and(|pid| !handoff::spawn::pid_alive(pid))
            })
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    pub fn listener_nonblocking(&self) -> bool {
        handoff::sys::is_nonblocking(self.listener_fd).unwrap()
    }
}
