//! The paths an operator gives `handoff-supervisor` (trigger and control
//! sockets, journal), through the real command: what is already there is
//! never followed or destroyed, `check` accepts only what `run` can bind,
//! and nothing at those paths makes start-up hang.
#![allow(unsafe_code)]

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{noop_service, pong_pid, tcp_listener};

const BIN: &str = env!("CARGO_BIN_EXE_handoff-supervisor");
/// Long enough for a loaded machine; a hang is what it catches.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

struct Fixture {
    dir: tempfile::TempDir,
    addr: String,
}

impl Fixture {
    fn new() -> Fixture {
        let (listener, addr) = tcp_listener();
        drop(listener);
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            addr,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("supervisor.toml")
    }

    /// A config with these (absolute) socket paths and journal.
    fn write_config(&self, control: &Path, trigger: &Path, journal: &Path) {
        let text = format!(
            r#"
[service]
binary = "{binary}"
args = ["--data-dir", "{dir}/data", "--control-socket", "{control}"]
control_socket = "{control}"
trigger_socket = "{trigger}"
journal = "{journal}"
data_dir = "{dir}/data"

[[listener]]
name = "kv"
address = "tcp://{addr}"
"#,
            binary = noop_service().display(),
            dir = self.dir.path().display(),
            control = control.display(),
            trigger = trigger.display(),
            journal = journal.display(),
            addr = self.addr,
        );
        std::fs::write(self.config(), text).unwrap();
    }

    /// The usual config: everything in the fixture's directory.
    fn write_default_config(&self) {
        self.write_config(
            &self.path("control.sock"),
            &self.path("trigger.sock"),
            &self.path("journal/state.bin"),
        );
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .unwrap()
    }

    /// `handoff-supervisor run` in a process group of its own.
    fn run(&self) -> Running {
        let log = self.path("supervisor.log");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        Running { child, log }
    }

    /// Wait until the supervisor's status names an incumbent that answers.
    fn wait_serving(&self, running: &mut Running) -> u32 {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = running.child.try_wait().unwrap() {
                panic!("supervisor exited ({status}): {}", running.log_text());
            }
            let out = self.cli(&["status", "--json"]);
            if out.status.code() == Some(0) {
                let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if let Some(pid) = status["incumbent"]["pid"].as_u64() {
                    if pong_pid(&self.addr) == Some(pid as u32) {
                        return pid as u32;
                    }
                }
            }
            assert!(Instant::now() < deadline, "never served");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit code; panics when it does not exit (start-up hung).
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + EXIT_TIMEOUT;
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
        // SAFETY: kill(2) on the process group the supervisor leads.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `<dir>/<prefix>xxx...` exactly `len` bytes long.
fn path_of_len(dir: &Path, prefix: &str, len: usize) -> PathBuf {
    let base = format!("{}/{prefix}", dir.display());
    assert!(base.len() < len, "{base} is too long already");
    PathBuf::from(format!("{base}{}", "x".repeat(len - base.len())))
}

/// `check` refuses a socket path too long for the temporary name `run`
/// binds first, and the longest it accepts `run` really binds, for the
/// control socket and the trigger socket alike.
#[test]
fn check_accepts_only_socket_paths_that_run_can_bind() {
    let f = Fixture::new();
    let dir = f.dir.path();
    let journal = f.path("journal/state.bin");
    // 107 bytes fit sun_path, but not with a temporary suffix added.
    for (control, trigger) in [
        (path_of_len(dir, "c", 107), f.path("t.sock")),
        (f.path("c.sock"), path_of_len(dir, "t", 107)),
    ] {
        f.write_config(&control, &trigger, &journal);
        let out = f.cli(&["check"]);
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "check accepted a 107-byte path");
        assert!(stderr.contains("socket"), "{stderr}");
        assert!(stderr.contains("bytes"), "{stderr}");
    }
    let longest = (60..=107)
        .rev()
        .find(|&len| {
            f.write_config(
                &path_of_len(dir, "c", len),
                &path_of_len(dir, "t", len),
                &journal,
            );
            f.cli(&["check"]).status.code() == Some(0)
        })
        .expect("check accepts some socket path length");
    let mut running = f.run();
    let pid = f.wait_serving(&mut running);
    assert!(pid > 0);
    assert!(path_of_len(dir, "c", longest).exists());
    assert!(path_of_len(dir, "t", longest).exists());
}

/// A symlink at the trigger socket path is not the supervisor's to follow
/// or replace: `run` refuses to start, saying so, and the link and its
/// target are left as they were. So is a regular file there.
#[test]
fn something_other_than_a_socket_at_the_trigger_path_is_refused_and_left_alone() {
    let f = Fixture::new();
    f.write_default_config();
    let trigger = f.path("trigger.sock");
    let target = f.path("precious");
    std::fs::write(&target, "keep me\n").unwrap();

    std::os::unix::fs::symlink(&target, &trigger).unwrap();
    let mut running = f.run();
    assert_eq!(running.wait_exit(), Some(1));
    let log = running.log_text();
    assert!(log.contains(&*trigger.to_string_lossy()), "{log}");
    assert!(log.contains("symbolic link"), "{log}");
    assert_eq!(std::fs::read_link(&trigger).unwrap(), target);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    drop(running);

    std::fs::remove_file(&trigger).unwrap();
    std::fs::write(&trigger, "an operator's file\n").unwrap();
    let mut running = f.run();
    assert_eq!(running.wait_exit(), Some(1));
    let log = running.log_text();
    assert!(log.contains("not a socket"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&trigger).unwrap(),
        "an operator's file\n"
    );
}

/// A socket left by a supervisor that is gone is replaced.
#[test]
fn a_stale_trigger_socket_is_replaced() {
    let f = Fixture::new();
    f.write_default_config();
    drop(std::os::unix::net::UnixListener::bind(f.path("trigger.sock")).unwrap());
    let mut running = f.run();
    f.wait_serving(&mut running);
}

/// A FIFO at the journal path (nobody writing to it) must not hang
/// start-up: `run` refuses it at once, naming it.
#[test]
fn a_fifo_at_the_journal_path_is_refused_without_hanging() {
    let f = Fixture::new();
    f.write_default_config();
    let journal = f.path("journal/state.bin");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    let status = Command::new("mkfifo").arg(&journal).status().unwrap();
    assert!(status.success());
    let mut running = f.run();
    assert_eq!(running.wait_exit(), Some(1));
    let log = running.log_text();
    assert!(log.contains(&*journal.to_string_lossy()), "{log}");
    assert!(log.contains("not a regular file"), "{log}");
}

/// The same for a Unix listener's path: a regular file there is not a stale
/// socket to delete.
#[test]
fn a_regular_file_at_a_unix_listener_path_is_refused_and_left_alone() {
    let f = Fixture::new();
    f.write_default_config();
    let listener = f.path("extra.sock");
    std::fs::write(&listener, "an operator's file\n").unwrap();
    let mut config = std::fs::read_to_string(f.config()).unwrap();
    config.push_str(&format!(
        "\n[[listener]]\nname = \"extra\"\naddress = \"unix:{}\"\n",
        listener.display()
    ));
    std::fs::write(f.config(), config).unwrap();
    let mut running = f.run();
    assert_eq!(running.wait_exit(), Some(1));
    let log = running.log_text();
    assert!(log.contains("not a socket"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&listener).unwrap(),
        "an operator's file\n"
    );
}
