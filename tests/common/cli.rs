//! `handoff-supervisor run` as a test drives it: a service directory with a
//! config file, the supervisor in a process group of its own (stopped with
//! SIGTERM, then killed whole, when the test ends), and the `trigger` and
//! `status` commands.
#![allow(dead_code, unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{noop_service, pong_pid, request, tcp_listener};

pub const BIN: &str = env!("CARGO_BIN_EXE_handoff-supervisor");

/// A service directory: config file, sockets, data, journal.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub addr: String,
}

impl Fixture {
    pub fn new() -> Fixture {
        let (listener, addr) = tcp_listener();
        drop(listener);
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            addr,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> PathBuf {
        self.path("supervisor.toml")
    }

    /// The usual config for `binary`, with `env` as the service's
    /// environment table and `extra` appended (TOML tables).
    pub fn write_config_for(&self, binary: &std::path::Path, env: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"
[service]
binary = "{binary}"
args = ["--data-dir", "{dir}/data", "--control-socket", "{dir}/control.sock"]
control_socket = "control.sock"
trigger_socket = "trigger.sock"
journal = "journal/state.bin"
data_dir = "data"
env = {{ {env} }}

[[listener]]
name = "kv"
address = "tcp://{addr}"
{extra}
"#,
            binary = binary.display(),
            dir = self.dir.path().display(),
            addr = self.addr,
        );
        std::fs::write(self.config(), text).unwrap();
        self.config()
    }

    pub fn write_config(&self, extra: &str) -> PathBuf {
        self.write_config_for(&noop_service(), "NOOP_TEST = \"1\"", extra)
    }

    /// An executable that runs noop-service with `flags` added.
    pub fn wrapper(&self, name: &str, flags: &str) -> PathBuf {
        let path = self.path(name);
        let script = format!(
            "#!/bin/sh\nexec '{}' \"$@\" {flags}\n",
            noop_service().display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    pub fn run(&self) -> Running {
        self.run_with(|_| {})
    }

    /// `handoff-supervisor run`, with `tweak` applied to its command.
    pub fn run_with(&self, tweak: impl FnOnce(&mut Command)) -> Running {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let log = self.path(&format!(
            "supervisor-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut command = Command::new(BIN);
        command
            .args(["run", "--config"])
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0);
        tweak(&mut command);
        Running {
            child: command.spawn().unwrap(),
            log,
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap()
    }

    /// The JSON status, if the supervisor answers.
    pub fn try_status(&self) -> Option<Value> {
        let out = self.cli(&["status", "--json"]);
        (out.status.code() == Some(0)).then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert_eq!(out.status.code(), Some(0), "status: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Wait until the incumbent the supervisor names answers on the
    /// listener; its pid.
    pub fn wait_serving(&self) -> u32 {
        wait_for("the service to answer", || {
            let status = self.try_status()?;
            let pid = status["incumbent"]["pid"].as_u64()? as u32;
            (pong_pid(&self.addr) == Some(pid)).then_some(pid)
        })
    }

    /// The PING answer's words after the pid (noop-service --identity).
    pub fn identity(&self) -> Option<String> {
        let answer = request(&self.addr, "PING").ok()?;
        Some(
            answer
                .split_whitespace()
                .skip(2)
                .collect::<Vec<_>>()
                .join(" "),
        )
    }
}

/// A running supervisor.
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
}

impl Running {
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on a child we have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM first: the supervisor stops the service, whose processes
        // are in process groups of their own; then the group, whatever is left.
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on the process group the supervisor leads.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- supervisor log {} ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Poll `probe` until it gives a value; a generous bound, not a timing.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
