//! The systems compared: one key-value service on 127.0.0.1 and the way it
//! is upgraded. Each starts cold, answers PING, performs one handoff at a
//! time (trigger to commit, timed here), and says which process, if any,
//! is its supervisor.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::loadgen::now_ns;

/// One handoff as the harness saw it.
#[derive(Clone, Debug, Default)]
pub struct Handoff {
    /// `now_ns` when the trigger was sent, and when the system reported the
    /// new process in charge.
    pub trigger: u64,
    pub commit: u64,
    pub ok: bool,
    /// Triggers it took (a rolled-back handoff is triggered again).
    pub attempts: u32,
    pub detail: String,
    /// The system's own phase report (libhandoff's supervisor), in ms.
    pub phases: Vec<(String, f64)>,
}

/// Every line the system's processes wrote (stdout and stderr), with the
/// time it was read; also copied to a log file.
#[derive(Clone)]
pub struct Tap {
    lines: Arc<Mutex<Vec<(u64, String)>>>,
    log: Arc<Mutex<File>>,
}

impl Tap {
    pub fn new(log: &Path) -> Tap {
        Tap {
            lines: Arc::new(Mutex::new(Vec::new())),
            log: Arc::new(Mutex::new(File::create(log).expect("a log file"))),
        }
    }

    pub fn attach(&self, source: impl Read + Send + 'static) {
        let tap = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(source).lines() {
                let Ok(line) = line else { break };
                let at = now_ns();
                let _ = writeln!(tap.log.lock().unwrap(), "{:.6} {line}", at as f64 / 1e9);
                tap.lines.lock().unwrap().push((at, line));
            }
        });
    }

    /// The first line read at or after `since` that `matches`, waiting up
    /// to `timeout` for it.
    pub fn wait_for(
        &self,
        since: u64,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Option<(u64, String)> {
        let deadline = Instant::now() + timeout;
        // Lines are appended in the order they were read.
        let mut from = self
            .lines
            .lock()
            .unwrap()
            .partition_point(|(at, _)| *at < since);
        loop {
            {
                let lines = self.lines.lock().unwrap();
                for (at, line) in &lines[from..] {
                    if *at >= since && matches(line) {
                        return Some((*at, line.clone()));
                    }
                }
                from = lines.len();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Lines read in `[from, to)`.
    pub fn between(&self, from: u64, to: u64) -> Vec<(u64, String)> {
        let lines = self.lines.lock().unwrap();
        let first = lines.partition_point(|(at, _)| *at < from);
        lines[first..]
            .iter()
            .take_while(|(at, _)| *at < to)
            .cloned()
            .collect()
    }
}

/// `<prog>[<pid>] <message>`: the pid and the message.
pub fn parse_line(line: &str) -> Option<(u32, &str)> {
    let open = line.find('[')?;
    let close = line[open..].find("] ")? + open;
    let pid = line[open + 1..close].parse().ok()?;
    Some((pid, &line[close + 2..]))
}

/// One PING on a fresh connection: the answer.
pub fn ping(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(b"PING\n").ok()?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).ok()?;
    answer
        .starts_with("PONG")
        .then(|| answer.trim().to_string())
}

pub fn wait_serving(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(answer) = ping(addr) {
            return Ok(answer);
        }
        if Instant::now() >= deadline {
            return Err(format!("{addr} does not answer PING after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Descriptors and resident memory (KiB) of a process.
pub fn fd_and_rss(pid: u32) -> Option<(u64, u64)> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    Some((fds, rss))
}

/// Whether `pid` is gone or a zombie.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid of a process this harness started (or
    // that one of them started); no memory involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Where the programs are.
pub struct Programs {
    pub supervisor: PathBuf,
    pub kv_c: PathBuf,
    pub kv_go: PathBuf,
    pub kv_cpp: PathBuf,
    pub kv_rust: PathBuf,
    /// Another build (`--baseline DIR`): its handoff-supervisor and kv-c,
    /// run with its libhandoff.so.0.
    pub baseline: Option<Build>,
    pub beyond_kv: PathBuf,
    pub beyond_supervisor: PathBuf,
    pub tableflip_kv: PathBuf,
}

/// One build of handoff-supervisor and kv-c, with the directory holding
/// the libhandoff.so.0 they load (None: the one they were linked with).
pub struct Build {
    pub supervisor: PathBuf,
    pub kv_c: PathBuf,
    pub library_dir: Option<PathBuf>,
}

pub trait System {
    fn addr(&self) -> SocketAddr;
    /// Trigger one handoff and wait until it is committed (or failed).
    fn handoff(&mut self) -> Handoff;
    /// Wait until another handoff may be triggered (tableflip refuses one
    /// while the previous generation is alive).
    fn settle(&mut self) {}
    fn supervisor_pid(&self) -> Option<u32>;
    /// The service's phases of handoff `h`, from its processes' log lines
    /// up to `until` (the next trigger), in ms.
    fn phases(&self, h: &Handoff, until: u64) -> Vec<(String, f64)>;
    /// The record count of the new process's log in handoff `h` once open
    /// (after a compaction, the compacted count), from its `took over` or
    /// `cold start` line, read up to `until`.
    fn records(&self, h: &Handoff, until: u64) -> Option<u64> {
        records_in(&self.tap().between(h.trigger, until))
    }
    fn tap(&self) -> &Tap;
    fn stop(&mut self);
}

/// The record count of the first `took over` or `cold start` line.
fn records_in(lines: &[(u64, String)]) -> Option<u64> {
    lines.iter().find_map(|(_, line)| {
        let (_, message) = parse_line(line)?;
        if !(message.starts_with("took over") || message.starts_with("cold start")) {
            return None;
        }
        let before = message.strip_suffix(" record(s)")?;
        before.rsplit(' ').next()?.parse().ok()
    })
}

fn ms(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1e6
}

/// When the first line of `lines` whose message contains `what` was read.
fn when(lines: &[(u64, String)], what: &str) -> Option<u64> {
    lines
        .iter()
        .find(|(_, line)| parse_line(line).is_some_and(|(_, message)| message.contains(what)))
        .map(|(at, _)| *at)
}

/// Phases between consecutive marks that were all found.
fn phases_from(marks: &[(&str, Option<u64>)]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for pair in marks.windows(2) {
        if let (Some(a), Some(b)) = (pair[0].1, pair[1].1) {
            out.push((pair[1].0.to_string(), ms(a, b).max(0.0)));
        }
    }
    out
}

fn kill_child(child: &mut Child) {
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------- libhandoff

/// handoff-supervisor with one of the example services, triggered through
/// its trigger socket (what `handoff-supervisor trigger` does).
pub struct Libhandoff {
    addr: SocketAddr,
    supervisor: Child,
    trigger_socket: PathBuf,
    tap: Tap,
}

impl Libhandoff {
    pub fn start(
        supervisor_binary: &Path,
        service: &Path,
        library_dir: Option<&Path>,
        work: &Path,
        addr: SocketAddr,
    ) -> Result<Libhandoff, String> {
        let data = work.join("data");
        let control = work.join("control.sock");
        let trigger_socket = work.join("trigger.sock");
        let config = work.join("kv.toml");
        std::fs::write(
            &config,
            format!(
                r#"[service]
binary = "{binary}"
args = ["--data-dir", "{data}", "--control-socket", "{control}"]
control_socket = "{control}"
trigger_socket = "{trigger}"
journal = "{journal}"
data_dir = "{data}"

[[listener]]
name = "kv"
address = "tcp://{addr}"

[timeouts]
deadline_secs = 30
drain_grace_secs = 5
"#,
                binary = service.display(),
                data = data.display(),
                control = control.display(),
                trigger = trigger_socket.display(),
                journal = work.join("state.bin").display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        let tap = Tap::new(&work.join("processes.log"));
        let mut command = Command::new(supervisor_binary);
        if let Some(dir) = library_dir {
            // The supervisor's environment is the service's: both load it.
            command.env("LD_LIBRARY_PATH", dir);
        }
        let mut supervisor = command
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", supervisor_binary.display()))?;
        tap.attach(supervisor.stdout.take().expect("stdout"));
        tap.attach(supervisor.stderr.take().expect("stderr"));
        let mut system = Libhandoff {
            addr,
            supervisor,
            trigger_socket,
            tap,
        };
        if let Err(e) = wait_serving(addr, Duration::from_secs(15)) {
            system.stop();
            return Err(e);
        }
        Ok(system)
    }
}

impl System for Libhandoff {
    fn tap(&self) -> &Tap {
        &self.tap
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn handoff(&mut self) -> Handoff {
        let mut h = Handoff {
            trigger: now_ns(),
            ..Handoff::default()
        };
        let outcome = (|| -> Result<String, String> {
            let mut stream =
                UnixStream::connect(&self.trigger_socket).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .map_err(|e| e.to_string())?;
            stream.write_all(b"handoff\n").map_err(|e| e.to_string())?;
            for line in BufReader::new(stream).lines() {
                let line = line.map_err(|e| e.to_string())?;
                let words: Vec<&str> = line.split(' ').collect();
                match words.as_slice() {
                    ["phase", name, ms, ..] => {
                        h.phases
                            .push((name.to_string(), ms.parse().unwrap_or(f64::NAN)));
                    }
                    ["committed", ..] => {
                        h.ok = true;
                        return Ok(line);
                    }
                    _ => return Err(line),
                }
            }
            Err("the supervisor closed the trigger connection".into())
        })();
        h.commit = now_ns();
        match outcome {
            Ok(line) | Err(line) => h.detail = line,
        }
        h
    }

    fn supervisor_pid(&self) -> Option<u32> {
        Some(self.supervisor.id())
    }

    fn phases(&self, h: &Handoff, until: u64) -> Vec<(String, f64)> {
        // The supervisor's report is the authority; the service's lines
        // only say when its drain started.
        let _ = until;
        h.phases.clone()
    }

    fn stop(&mut self) {
        kill_child(&mut self.supervisor);
    }
}

// ------------------------------------------------------------ beyond-handoff

/// bench-beyond-supervisor (the reference crate's Supervisor) with
/// bench-beyond-kv, one handoff per line on its standard input.
pub struct Beyond {
    addr: SocketAddr,
    supervisor: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    tap: Tap,
}

impl Beyond {
    pub fn start(programs: &Programs, work: &Path, addr: SocketAddr) -> Result<Beyond, String> {
        let tap = Tap::new(&work.join("processes.log"));
        let mut supervisor = Command::new(&programs.beyond_supervisor)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--binary")
            .arg(&programs.beyond_kv)
            .arg("--data-dir")
            .arg(work.join("data"))
            .arg("--control-socket")
            .arg(work.join("control.sock"))
            .arg("--journal")
            .arg(work.join("state.bin"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", programs.beyond_supervisor.display()))?;
        tap.attach(supervisor.stderr.take().expect("stderr"));
        let stdin = supervisor.stdin.take();
        let stdout = BufReader::new(supervisor.stdout.take().expect("stdout"));
        let mut system = Beyond {
            addr,
            supervisor,
            stdin,
            stdout,
            tap,
        };
        if let Err(e) = wait_serving(addr, Duration::from_secs(15)) {
            system.stop();
            return Err(e);
        }
        Ok(system)
    }
}

impl System for Beyond {
    fn tap(&self) -> &Tap {
        &self.tap
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn handoff(&mut self) -> Handoff {
        let mut h = Handoff {
            trigger: now_ns(),
            ..Handoff::default()
        };
        let mut line = String::new();
        let Some(stdin) = self.stdin.as_mut() else {
            h.commit = now_ns();
            h.detail = "stopped".into();
            return h;
        };
        let outcome = stdin
            .write_all(b"handoff\n")
            .and_then(|()| stdin.flush())
            .and_then(|()| loop {
                line.clear();
                if self.stdout.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if !line.starts_with("started") {
                    return Ok(());
                }
            });
        h.commit = now_ns();
        h.ok = outcome.is_ok() && line.starts_with("committed");
        h.detail = match outcome {
            Ok(()) => line.trim().to_string(),
            Err(e) => e.to_string(),
        };
        h
    }

    fn supervisor_pid(&self) -> Option<u32> {
        Some(self.supervisor.id())
    }

    fn phases(&self, h: &Handoff, until: u64) -> Vec<(String, f64)> {
        let lines = self.tap.between(h.trigger, until);
        phases_from(&[
            ("", Some(h.trigger)),
            ("spawn+hello", when(&lines, "draining")),
            ("drain+seal", when(&lines, "sealed at revision")),
            ("ready", when(&lines, "took over")),
            ("commit", Some(h.commit)),
        ])
    }

    fn stop(&mut self) {
        // Closing standard input stops the supervisor, which stops the service.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.supervisor.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_child(&mut self.supervisor);
    }
}

// ----------------------------------------------------------------- tableflip

/// tableflip-kv (cloudflare/tableflip v1.2.3): SIGHUP to the process in
/// charge; the new generation says when it took over.
pub struct Tableflip {
    addr: SocketAddr,
    first: Child,
    current: u32,
    previous: Option<u32>,
    tap: Tap,
}

impl Tableflip {
    pub fn start(programs: &Programs, work: &Path, addr: SocketAddr) -> Result<Tableflip, String> {
        let tap = Tap::new(&work.join("processes.log"));
        let since = now_ns();
        let mut first = Command::new(&programs.tableflip_kv)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(work.join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", programs.tableflip_kv.display()))?;
        tap.attach(first.stderr.take().expect("stderr"));
        let current = first.id();
        let mut system = Tableflip {
            addr,
            first,
            current,
            previous: None,
            tap,
        };
        if system
            .tap
            .wait_for(since, Duration::from_secs(15), |l| {
                l.contains("cold start on")
            })
            .is_none()
        {
            system.stop();
            return Err("tableflip-kv did not start".into());
        }
        wait_serving(addr, Duration::from_secs(15))?;
        Ok(system)
    }

    fn reap_first(&mut self) {
        let _ = self.first.try_wait();
    }
}

impl System for Tableflip {
    fn tap(&self) -> &Tap {
        &self.tap
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn handoff(&mut self) -> Handoff {
        let mut h = Handoff {
            trigger: now_ns(),
            ..Handoff::default()
        };
        let old = self.current;
        let mut retries = 0;
        loop {
            let sent = now_ns();
            signal(old, libc::SIGHUP);
            let seen = self.tap.wait_for(sent, Duration::from_secs(60), |line| {
                match parse_line(line) {
                    Some((pid, message)) => {
                        (pid != old && message.starts_with("took over"))
                            || (pid == old && message.starts_with("upgrade failed"))
                    }
                    None => false,
                }
            });
            h.commit = now_ns();
            match seen {
                Some((at, line)) if !line.contains("upgrade failed") => {
                    h.commit = at;
                    h.ok = true;
                    self.current = parse_line(&line).map_or(old, |(pid, _)| pid);
                    self.previous = Some(old);
                    h.detail = if retries > 0 {
                        format!("{line} (after {retries} refused upgrade(s))")
                    } else {
                        line
                    };
                    return h;
                }
                // Its parent is not gone yet: tableflip's own rule.
                Some((_, line)) if line.contains("parent hasn't exited") && retries < 1000 => {
                    retries += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Some((_, line)) => {
                    h.detail = line;
                    return h;
                }
                None => {
                    h.detail = "no new generation within 60 s".into();
                    return h;
                }
            }
        }
    }

    fn settle(&mut self) {
        // tableflip refuses an upgrade while the previous generation is
        // alive: wait until it is gone.
        if let Some(previous) = self.previous.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                self.reap_first();
                if exited(previous) {
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }

    fn supervisor_pid(&self) -> Option<u32> {
        None
    }

    fn phases(&self, h: &Handoff, until: u64) -> Vec<(String, f64)> {
        let lines = self.tap.between(h.trigger, until);
        phases_from(&[
            ("", Some(h.trigger)),
            (
                "spawn+ready",
                when(&lines, "ready: waiting for the data dir"),
            ),
            ("drain+seal", when(&lines, "sealed at revision")),
            ("takeover", when(&lines, "took over")),
        ])
    }

    fn stop(&mut self) {
        signal(self.current, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !exited(self.current) {
            self.reap_first();
            std::thread::sleep(Duration::from_millis(10));
        }
        if !exited(self.current) {
            signal(self.current, libc::SIGKILL);
        }
        let _ = self.first.kill();
        let _ = self.first.wait();
    }
}

// ----------------------------------------------------------- plain restart

/// kv-c alone on the port: SIGTERM, wait for the exit, start it again.
pub struct Restart {
    addr: SocketAddr,
    binary: PathBuf,
    args: Vec<String>,
    child: Child,
    tap: Tap,
    exits: HashMap<u64, u64>,
}

impl Restart {
    fn spawn(binary: &Path, args: &[String], tap: &Tap) -> Result<Child, String> {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        tap.attach(child.stderr.take().expect("stderr"));
        Ok(child)
    }

    pub fn start(programs: &Programs, work: &Path, addr: SocketAddr) -> Result<Restart, String> {
        let tap = Tap::new(&work.join("processes.log"));
        let args = vec![
            "--data-dir".to_string(),
            work.join("data").display().to_string(),
            "--control-socket".to_string(),
            work.join("control.sock").display().to_string(),
            "--listen".to_string(),
            format!("tcp://{addr}"),
        ];
        let child = Restart::spawn(&programs.kv_c, &args, &tap)?;
        let mut system = Restart {
            addr,
            binary: programs.kv_c.clone(),
            args,
            child,
            tap,
            exits: HashMap::new(),
        };
        if let Err(e) = wait_serving(addr, Duration::from_secs(15)) {
            system.stop();
            return Err(e);
        }
        Ok(system)
    }
}

impl System for Restart {
    fn tap(&self) -> &Tap {
        &self.tap
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn handoff(&mut self) -> Handoff {
        let mut h = Handoff {
            trigger: now_ns(),
            ..Handoff::default()
        };
        kill_child(&mut self.child);
        let exited_at = now_ns();
        self.exits.insert(h.trigger, exited_at);
        match Restart::spawn(&self.binary, &self.args, &self.tap) {
            Ok(child) => {
                let pid = child.id();
                self.child = child;
                let seen = self
                    .tap
                    .wait_for(exited_at, Duration::from_secs(15), |line| {
                        parse_line(line)
                            .is_some_and(|(p, m)| p == pid && m.starts_with("cold start on"))
                    });
                h.commit = now_ns();
                match seen {
                    Some((at, line)) => {
                        h.commit = at;
                        h.ok = true;
                        h.detail = line;
                    }
                    None => h.detail = "the new process did not start".into(),
                }
            }
            Err(e) => {
                h.commit = now_ns();
                h.detail = e;
            }
        }
        h
    }

    fn supervisor_pid(&self) -> Option<u32> {
        None
    }

    fn phases(&self, h: &Handoff, _until: u64) -> Vec<(String, f64)> {
        phases_from(&[
            ("", Some(h.trigger)),
            ("stop", self.exits.get(&h.trigger).copied()),
            ("start", Some(h.commit)),
        ])
    }

    fn stop(&mut self) {
        kill_child(&mut self.child);
    }
}
