//! A library supervisor holding the listener `kv` for the example services
//! (kv::Lang): their launchers, their shared log, and the processes it
//! started, reaped when the test ends.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use handoff::supervisor::Supervisor;

use crate::common::{service_command, wait_for_pong, Reaper};
use crate::kv::{self, Lang, LaunchOptions};

pub struct KvBench {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub supervisor: Supervisor,
    pub reaper: Reaper,
}

impl KvBench {
    /// Either listener mode is allowed (DESIGN §3); non-blocking lets the
    /// C service accept up to 64 connections per wake-up.
    pub fn new(nonblocking: bool) -> KvBench {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(nonblocking).unwrap();
        let addr = listener.local_addr().unwrap();
        let supervisor = Supervisor::new(dir.path().join("control.sock"))
            .with_listener("kv", OwnedFd::from(listener))
            .unwrap()
            .with_journal(dir.path().join("journal/state.bin"));
        KvBench {
            dir,
            addr,
            supervisor,
            reaper: Reaper::default(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A launcher for `lang` named `name`, its stderr in the shared log.
    pub fn launcher(&self, lang: Lang, name: &str, options: LaunchOptions) -> PathBuf {
        let options = LaunchOptions {
            log: Some(self.path("service.log")),
            ..options
        };
        kv::write_launcher(&self.path(name), lang, &options)
    }

    /// `launcher` with the data dir, the control socket and `extra`.
    pub fn command(&self, launcher: &Path, extra: &[&str]) -> handoff::spawn::Command {
        service_command(
            launcher,
            &self.path("data"),
            &self.path("control.sock"),
            extra,
        )
    }

    /// `launcher` cold-started, once it answers.
    pub fn cold_start(&mut self, launcher: &Path) -> u32 {
        let child = self
            .supervisor
            .spawn_cold(&self.command(launcher, &[]))
            .unwrap();
        let pid = self.reaper.keep(child);
        wait_for_pong(&self.addr.to_string(), pid, Duration::from_secs(20));
        pid
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path("service.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}
