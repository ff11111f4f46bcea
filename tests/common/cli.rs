//! `handoff-supervisor run` as a test drives it: a service directory with a
//! config file, the supervisor in a process group of its own (stopped with
//! SIGTERM, then killed whole, when the test ends), and the `trigger` and
//! `status` commands.
#![allow(dead_code, unsafe_code)]

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{noop_service, pong_pid, request, tcp_listener};

pub const BIN: &str = env!("CARGO_BIN_EXE_handoff-supervisor");

/// How long `wait_for` and `wait_serving` wait: a generous bound, not a
/// timing.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A service directory: config file, sockets, data, journal.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub addr: String,
}

/// Where a config puts the control and trigger sockets, the journal and the
/// data directory, each as the config file spells it: relative to the
/// config file's directory, or absolute.
pub struct Layout {
    pub control: PathBuf,
    pub trigger: PathBuf,
    pub journal: PathBuf,
    pub data_dir: PathBuf,
}

impl Layout {
    /// The usual names, relative to the config file's directory.
    pub fn relative() -> Layout {
        Layout {
            control: "control.sock".into(),
            trigger: "trigger.sock".into(),
            journal: "journal/state.bin".into(),
            data_dir: "data".into(),
        }
    }
}

impl Fixture {
    /// A fixture whose listener address is a free loopback port.
    pub fn new() -> Fixture {
        let (listener, addr) = tcp_listener();
        drop(listener);
        Fixture::with_addr(addr)
    }

    /// A fixture whose listener is at `addr` (one the test holds bound, to
    /// pass to a socket-activated supervisor).
    pub fn with_addr(addr: String) -> Fixture {
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

    /// The usual names as absolute paths in the fixture's directory.
    pub fn absolute_layout(&self) -> Layout {
        Layout {
            control: self.path("control.sock"),
            trigger: self.path("trigger.sock"),
            journal: self.path("journal/state.bin"),
            data_dir: self.path("data"),
        }
    }

    /// The config for `binary` with `layout`'s paths, `env` as the
    /// service's environment table (no `env` key when it is empty) and
    /// `extra` appended (TOML tables). The service's arguments name its data
    /// directory and control socket as absolute paths.
    pub fn write_config_laid_out(
        &self,
        binary: &Path,
        env: &str,
        layout: &Layout,
        extra: &str,
    ) -> PathBuf {
        let env = if env.is_empty() {
            String::new()
        } else {
            format!("env = {{ {env} }}\n")
        };
        let text = format!(
            r#"
[service]
binary = "{binary}"
args = ["--data-dir", "{data}", "--control-socket", "{control}"]
control_socket = "{control_socket}"
trigger_socket = "{trigger_socket}"
journal = "{journal}"
data_dir = "{data_dir}"
{env}
[[listener]]
name = "kv"
address = "tcp://{addr}"
{extra}
"#,
            binary = binary.display(),
            data = self.dir.path().join(&layout.data_dir).display(),
            control = self.dir.path().join(&layout.control).display(),
            control_socket = layout.control.display(),
            trigger_socket = layout.trigger.display(),
            journal = layout.journal.display(),
            data_dir = layout.data_dir.display(),
            addr = self.addr,
        );
        std::fs::write(self.config(), text).unwrap();
        self.config()
    }

    /// The usual config (`Layout::relative`) for `binary`, with `env` and
    /// `extra` as for `write_config_laid_out`.
    pub fn write_config_for(&self, binary: &Path, env: &str, extra: &str) -> PathBuf {
        self.write_config_laid_out(binary, env, &Layout::relative(), extra)
    }

    /// The usual config for noop-service, with `extra` appended.
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
        self.launch(Command::new(BIN), tweak)
    }

    /// `command` (the supervisor, or something that execs it) with `run`
    /// and the config, in a process group of its own, its output in a log
    /// file of its own; `tweak` applied last.
    pub fn launch(&self, mut command: Command, tweak: impl FnOnce(&mut Command)) -> Running {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let log = self.path(&format!(
            "supervisor-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
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

    /// `trigger --binary <binary>` started in the background, its stderr
    /// piped, its stdout to `stdout`.
    pub fn spawn_trigger(&self, binary: &Path, stdout: Stdio) -> Child {
        Command::new(BIN)
            .args(["trigger", "--config"])
            .arg(self.config())
            .arg("--binary")
            .arg(binary)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The incumbent's pid, if the supervisor names one and it answers on
    /// the listener.
    pub fn serving_pid(&self) -> Option<u32> {
        let status = self.try_status()?;
        let pid = status["incumbent"]["pid"].as_u64()? as u32;
        (pong_pid(&self.addr) == Some(pid)).then_some(pid)
    }

    /// Wait until the incumbent the supervisor names answers on the
    /// listener; its pid.
    pub fn wait_serving(&self) -> u32 {
        self.wait_serving_within(PATIENCE)
    }

    /// `wait_serving`, waiting up to `timeout`.
    pub fn wait_serving_within(&self, timeout: Duration) -> u32 {
        wait_for_within(timeout, "the service to answer", || self.serving_pid())
    }

    /// `wait_serving`, failing at once, with its log, if the supervisor
    /// `running` exits first.
    pub fn wait_serving_by(&self, running: &mut Running) -> u32 {
        wait_for("the service to answer", || {
            if let Some(status) = running.child.try_wait().unwrap() {
                panic!("supervisor exited ({status}): {}", running.log_text());
            }
            self.serving_pid()
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

    /// The supervisor's exit code, once it exits; it must within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "supervisor did not exit: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM first, unless it has exited already: the supervisor stops
        // the service, whose processes are in process groups of their own;
        // then the group, whatever is left.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
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

/// handoff-supervisor, to be given its arguments, with `listener` at fd 3
/// as systemd's socket activation passes it (LISTEN_FDS, LISTEN_FDNAMES =
/// the config's listener name `kv`, LISTEN_PID): a shell that execs the
/// supervisor knows the pid it will have, its own.
pub fn activated_supervisor(listener: &TcpListener) -> Command {
    let fd = listener.as_raw_fd();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"")
        .arg(BIN)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "kv");
    // SAFETY: between fork and exec only dup2 and fcntl, async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Poll `probe` until it gives a value, for up to `PATIENCE`.
pub fn wait_for<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    wait_for_within(PATIENCE, what, probe)
}

/// Poll `probe` until it gives a value; it must within `timeout`.
pub fn wait_for_within<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
