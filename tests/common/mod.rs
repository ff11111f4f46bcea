//! Shared pieces of the process-level tests: building the test services,
//! listeners, waiting for a service to answer, and reaping what a test
//! started even when it fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Once;
use std::time::{Duration, Instant};

use handoff::spawn::{ChildProcess, Command};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Build tests/services once per test binary, against the built library.
pub fn noop_service() -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Process::new("make")
            .args(["-s", "-C"])
            .arg(root().join("tests/services"))
            .env("PKG_CONFIG_PATH", root().join("target/pkgconfig"))
            .status()
            .expect("make");
        assert!(
            status.success(),
            "building tests/services failed (run `make build` first)"
        );
    });
    root().join("tests/services/build/noop-service")
}

/// A loopback TCP listener on an ephemeral port.
pub fn tcp_listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

/// The command for a service with the usual arguments.
pub fn service_command(binary: &Path, data_dir: &Path, control: &Path, extra: &[&str]) -> Command {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        data_dir.into(),
        "--control-socket".into(),
        control.into(),
    ];
    args.extend(extra.iter().map(Into::into));
    Command {
        binary: binary.to_owned(),
        args,
        env: Vec::new(),
    }
}

/// Send one line on a fresh connection and read the one-line answer.
pub fn request(addr: &str, line: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}

/// The pid in a `PONG <pid> ...` answer.
pub fn pong_pid(addr: &str) -> Option<u32> {
    let answer = request(addr, "PING").ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// Wait until `path` exists (a control socket being bound).
pub fn wait_for_path(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until the service answers PING from `pid`.
pub fn wait_for_pong(addr: &str, pid: u32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if pong_pid(addr) == Some(pid) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} never answered on {addr}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Processes a test started; terminated and reaped on drop.
#[derive(Default)]
pub struct Reaper(pub Vec<ChildProcess>);

impl Reaper {
    pub fn keep(&mut self, child: ChildProcess) -> u32 {
        let pid = child.pid();
        self.0.push(child);
        pid
    }

    /// Wait for the child `pid` to exit by itself and give its wait status.
    pub fn wait_exit(&mut self, pid: u32, timeout: Duration) -> Option<i32> {
        let child = self.0.iter_mut().find(|c| c.pid() == pid)?;
        child.wait_timeout(timeout)
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for child in &mut self.0 {
            child.terminate(Duration::from_secs(2));
        }
    }
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}
