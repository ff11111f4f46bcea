//! The C example service (`examples/c`, `kv-c`) handed off C→C five times in
//! a row under client load, driven by the crate's Rust supervisor.
//!
//! Checks: no fresh connection is refused, reset or left unanswered; every
//! acknowledged SET is readable afterwards; the fencing generation in the
//! `OK <generation>` answers goes up with every handoff; every old incumbent
//! exits 0 once committed; the last successor answers PING. Every process
//! is stopped at the end, on failure too.
//!
//! The test builds `kv-c` itself (`make -C examples/c`, with PKG_CONFIG_PATH
//! pointing at the tree's handoff.pc); `make build` at the top builds it too.
//!
//!     cargo test --release --test handoff_c -- --nocapture

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use handoff::spawn::{describe_status, ChildProcess, Command};
use handoff::supervisor::{SpawnSpec, Supervisor, Timeouts};

const HANDOFFS: usize = 5;
const FRESH_WORKERS: usize = 4;
const PERSISTENT_WORKERS: usize = 2;
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Writes the load gets acknowledged before and after each handoff, so
/// that every generation is known to have served some (not a time).
const ACKS_PER_PHASE: usize = 60;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut std::process::Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// Build examples/c (incrementally) against the tree's library, as the
/// top-level `make examples` does, and return the binary. Once per test
/// process: the tests run in parallel and must not race one make on the
/// same objects.
fn build_kv_c() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_kv_c_once).clone()
}

fn build_kv_c_once() -> PathBuf {
    let root = root();
    let lib = root.join("target/release/libhandoff.so");
    assert!(
        lib.exists(),
        "{} is missing: run `make build` (or `cargo build --release --lib`) first",
        lib.display()
    );
    let pc_dir = root.join("target/pkgconfig");
    if !pc_dir.join("handoff.pc").exists() {
        // Only writes the .pc file (no cargo involved).
        run(std::process::Command::new("make")
            .arg("-C")
            .arg(&root)
            .arg(pc_dir.join("handoff.pc")));
    }
    let mut make = std::process::Command::new("make");
    make.arg("-C")
        .arg(root.join("examples/c"))
        .arg("--no-print-directory")
        .env("PKG_CONFIG_PATH", &pc_dir);
    if sanitized() {
        make.arg("asan");
    }
    run(&mut make);
    let build = if sanitized() { "build-asan" } else { "build" };
    let binary = root.join("examples/c").join(build).join("kv-c");
    assert!(binary.exists(), "{} was not built", binary.display());
    eprintln!("every generation runs {}", binary.display());
    binary
}

/// Every child process, stopped (SIGTERM, then SIGKILL) and reaped on drop.
#[derive(Default)]
struct Children(Vec<ChildProcess>);

impl Children {
    fn take(&mut self, pid: u32) -> ChildProcess {
        let at = self
            .0
            .iter()
            .position(|c| c.pid() == pid)
            .unwrap_or_else(|| panic!("no child with pid {pid}"));
        self.0.remove(at)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            child.terminate(Duration::from_secs(2));
        }
    }
}

fn assert_exited_zero(status: i32, who: &str) {
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{who} {}",
        describe_status(status)
    );
}

/// One request on a fresh connection; the answer line without its newline.
fn request(addr: SocketAddr, line: &str) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    (&stream).write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    match answer.strip_suffix('\n') {
        Some(answer) => Ok(answer.to_string()),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("connection closed without a whole answer (got {answer:?})"),
        )),
    }
}

fn ping(addr: SocketAddr) -> std::io::Result<u32> {
    let answer = request(addr, "PING")?;
    let mut words = answer.split(' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some("PONG"), Some(pid), Some("c"), None) => pid
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad PONG {answer:?}"))),
        _ => Err(std::io::Error::other(format!("bad PONG {answer:?}"))),
    }
}

/// Wait until `pid` is the process answering on the listener.
fn wait_for_ping(addr: SocketAddr, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < deadline {
        match ping(addr) {
            Ok(got) if got == pid => return,
            other => last = Some(other),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("pid {pid} never answered PING on {addr}; last answer: {last:?}");
}

fn parse_ok(answer: &str) -> Option<u64> {
    answer.strip_prefix("OK ")?.parse().ok()
}

/// An acknowledged write.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    value: String,
    generation: u64,
}

#[derive(Default)]
struct Tally {
    acks: Vec<Ack>,
    /// Fresh connections refused, reset, closed unanswered or answered wrong.
    fresh_failures: Vec<String>,
    fresh_requests: u64,
    /// Persistent connections: failures that are not a close between
    /// requests (a refused reconnect, a wrong answer, a lost write).
    persistent_failures: Vec<String>,
    persistent_requests: u64,
    /// Times a persistent connection was found closed and the request resent.
    resends: u64,
}

/// Client load: fresh-connection writers and persistent-connection
/// writer/readers. Stopped and joined on drop.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let mut threads = Vec::new();
        for worker in 0..FRESH_WORKERS {
            let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
            threads.push(std::thread::spawn(move || {
                fresh_worker(addr, worker, &stop, &tally)
            }));
        }
        for worker in 0..PERSISTENT_WORKERS {
            let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
            threads.push(std::thread::spawn(move || {
                persistent_worker(addr, worker, &stop, &tally)
            }));
        }
        Load {
            stop,
            tally,
            threads,
        }
    }

    /// Wait until `n` more writes were acknowledged.
    fn wait_acks(&self, n: usize) {
        let target = self.tally.lock().unwrap().acks.len() + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.tally.lock().unwrap().acks.len() < target {
            assert!(
                Instant::now() < deadline,
                "the load got fewer than {n} writes acknowledged in 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self) -> Tally {
        self.join();
        std::mem::take(&mut *self.tally.lock().unwrap())
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.join();
    }
}

/// SET k v on a fresh connection per request, as fast as a small pause
/// allows (the pause keeps TIME_WAIT ports in check).
fn fresh_worker(addr: SocketAddr, worker: usize, stop: &AtomicBool, tally: &Mutex<Tally>) {
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let (key, value) = (format!("f{worker}_{i}"), format!("v{worker}_{i}"));
        let result = request(addr, &format!("SET {key} {value}"));
        let mut tally = tally.lock().unwrap();
        tally.fresh_requests += 1;
        match result {
            Ok(answer) => match parse_ok(&answer) {
                Some(generation) => tally.acks.push(Ack {
                    key,
                    value,
                    generation,
                }),
                None => tally
                    .fresh_failures
                    .push(format!("SET {key}: unexpected answer {answer:?}")),
            },
            Err(e) => tally.fresh_failures.push(format!("SET {key}: {e}")),
        }
        drop(tally);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A connection kept across requests, reconnecting and resending when the
/// server closed it between requests (a drain closes it like HTTP's
/// Connection: close).
struct Persistent {
    addr: SocketAddr,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Persistent {
    /// The answer to `line`, resending on a new connection when the old one
    /// turns out to be closed. Err: a failure that is not such a close.
    fn call(&mut self, line: &str, resends: &mut u64) -> Result<String, String> {
        for _ in 0..50 {
            if self.conn.is_none() {
                let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)
                    .map_err(|e| format!("reconnect refused: {e}"))?;
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                let reader = BufReader::new(stream.try_clone().unwrap());
                self.conn = Some((stream, reader));
            }
            let (stream, reader) = self.conn.as_mut().unwrap();
            let mut answer = String::new();
            let outcome = stream
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|()| reader.read_line(&mut answer));
            match outcome {
                Ok(_) if answer.ends_with('\n') => {
                    answer.pop();
                    return Ok(answer);
                }
                // Closed (EOF, reset, broken pipe) before any answer: the
                // request was not answered; send it again elsewhere.
                Ok(_) if answer.is_empty() => {}
                Err(e)
                    if answer.is_empty()
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionReset
                                | std::io::ErrorKind::BrokenPipe
                                | std::io::ErrorKind::ConnectionAborted
                        ) => {}
                Ok(_) => return Err(format!("{line}: connection closed mid-answer {answer:?}")),
                Err(e) => return Err(format!("{line}: {e}")),
            }
            self.conn = None;
            *resends += 1;
        }
        Err(format!("{line}: closed 50 times in a row"))
    }
}

/// SET then GET of the same key on one connection: a write acknowledged by
/// one process must be read back, maybe from the next one.
fn persistent_worker(addr: SocketAddr, worker: usize, stop: &AtomicBool, tally: &Mutex<Tally>) {
    let mut conn = Persistent { addr, conn: None };
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let (key, value) = (format!("p{worker}_{i}"), format!("w{worker}_{i}"));
        let mut resends = 0;
        let set = conn.call(&format!("SET {key} {value}"), &mut resends);
        let get = match &set {
            Ok(answer) if parse_ok(answer).is_some() => {
                Some(conn.call(&format!("GET {key}"), &mut resends))
            }
            _ => None,
        };
        let mut tally = tally.lock().unwrap();
        tally.persistent_requests += 1 + u64::from(get.is_some());
        tally.resends += resends;
        match set {
            Ok(answer) => match parse_ok(&answer) {
                Some(generation) => tally.acks.push(Ack {
                    key: key.clone(),
                    value: value.clone(),
                    generation,
                }),
                None => tally
                    .persistent_failures
                    .push(format!("SET {key}: unexpected answer {answer:?}")),
            },
            Err(e) => tally.persistent_failures.push(e),
        }
        match get {
            Some(Ok(answer)) if answer == format!("VALUE {value}") => {}
            Some(Ok(answer)) => tally.persistent_failures.push(format!(
                "GET {key} right after its acknowledged SET answered {answer:?}"
            )),
            Some(Err(e)) => tally.persistent_failures.push(e),
            None => {}
        }
        drop(tally);
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v != "0")
}

/// With HANDOFF_C_ASAN=1, every generation is examples/c/build-asan/kv-c,
/// built with AddressSanitizer and UndefinedBehaviorSanitizer (`make -C
/// examples/c asan`; LeakSanitizer included).
fn sanitized() -> bool {
    env_flag("HANDOFF_C_ASAN")
}

/// Where the sanitizers (HANDOFF_C_ASAN) and valgrind (HANDOFF_C_VALGRIND)
/// write their reports: a file per process that found something (valgrind:
/// a file per process, empty when it found nothing).
fn sanitizer_log_dir(data: &Path) -> PathBuf {
    data.parent().unwrap().join("sanitizer")
}

/// Fail with the sanitizer reports found under `dir`, if any.
fn assert_no_sanitizer_reports(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    // valgrind --quiet leaves an empty file for a clean process.
    let reports: Vec<String> = entries
        .map(|e| e.unwrap().path())
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            (!text.trim().is_empty()).then(|| format!("== {}\n{text}", path.display()))
        })
        .collect();
    assert!(
        reports.is_empty(),
        "sanitizer reports:\n{}",
        reports.join("\n")
    );
}

/// How every generation is run. With HANDOFF_C_VALGRIND=1 each one runs
/// under valgrind, which turns a leak or a memory error into a non-zero exit
/// status (and so into a failure: every generation must exit 0). With
/// HANDOFF_C_ASAN=1 each one is the sanitizer build, and a memory error, an
/// undefined behaviour or a leak is likewise a non-zero exit status, plus a
/// report under `sanitizer_log_dir`.
fn kv_command(binary: &Path, data: &Path, control: &Path) -> Command {
    let args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        data.into(),
        "--control-socket".into(),
        control.into(),
    ];
    if sanitized() {
        let logs = sanitizer_log_dir(data);
        std::fs::create_dir_all(&logs).unwrap();
        let asan = format!(
            "detect_leaks=1:exitcode=23:abort_on_error=0:strict_string_checks=1:\
             detect_stack_use_after_return=1:check_initialization_order=1:log_path={}/asan",
            logs.display()
        );
        let ubsan = format!(
            "print_stacktrace=1:halt_on_error=1:exitcode=24:log_path={}/ubsan",
            logs.display()
        );
        return Command {
            binary: binary.to_owned(),
            args,
            env: vec![
                ("ASAN_OPTIONS".into(), asan.into()),
                ("UBSAN_OPTIONS".into(), ubsan.into()),
            ],
        };
    }
    if env_flag("HANDOFF_C_VALGRIND") {
        let mut wrapped: Vec<std::ffi::OsString> = [
            "--quiet",
            "--error-exitcode=99",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible",
        ]
        .iter()
        .map(Into::into)
        .collect();
        // Reports go to files, so those of a generation whose exit status
        // is not checked (a successor that fails on purpose) count too.
        let logs = sanitizer_log_dir(data);
        std::fs::create_dir_all(&logs).unwrap();
        wrapped.push(format!("--log-file={}/valgrind.%p", logs.display()).into());
        let suppressions = root().join("tests/valgrind.supp");
        wrapped.push(format!("--suppressions={}", suppressions.display()).into());
        wrapped.push(binary.into());
        wrapped.extend(args);
        return Command {
            binary: "valgrind".into(),
            args: wrapped,
            env: Vec::new(),
        };
    }
    Command {
        binary: binary.to_owned(),
        args,
        env: Vec::new(),
    }
}

/// A kv-c service under a supervisor, cold-started; its processes are
/// stopped when it is dropped.
struct Service {
    addr: SocketAddr,
    supervisor: Supervisor,
    command: Command,
    journal: PathBuf,
    incumbent: u32,
    children: Children,
    tmp: tempfile::TempDir,
}

impl Service {
    /// `nonblocking`: set O_NONBLOCK on the listener's shared open file
    /// description before the first generation starts (DESIGN §3: the
    /// service must work whichever way it is set).
    fn start(nonblocking: bool) -> Service {
        Service::start_with_log(nonblocking, None)
    }

    /// Start with `log` as the data directory's kv.log.
    fn start_with_log(nonblocking: bool, log: Option<&[u8]>) -> Service {
        let binary = build_kv_c();
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        if let Some(log) = log {
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("kv.log"), log).unwrap();
        }
        let control = tmp.path().join("kv.ctl");
        let journal = tmp.path().join("journal/state.bin");

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(nonblocking).unwrap();
        let addr = listener.local_addr().unwrap();
        let supervisor = Supervisor::new(&control)
            .with_listener("kv", OwnedFd::from(listener))
            .unwrap()
            .with_journal(&journal);
        // Under valgrind a generation starts several times slower: give
        // its Hello and its frames more than the defaults' 5 and 10 s.
        let supervisor = if env_flag("HANDOFF_C_VALGRIND") {
            supervisor.with_timeouts(Timeouts {
                hello: Duration::from_secs(60),
                liveness: Duration::from_secs(60),
                ..Timeouts::default()
            })
        } else {
            supervisor
        };
        let command = kv_command(&binary, &data, &control);

        let mut children = Children::default();
        let first = supervisor.spawn_cold(&command).unwrap();
        let incumbent = first.pid();
        children.0.push(first);
        wait_for_ping(addr, incumbent);
        Service {
            addr,
            supervisor,
            command,
            journal,
            incumbent,
            children,
            tmp,
        }
    }

    fn spec(&self, command: Command) -> SpawnSpec {
        SpawnSpec {
            command,
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(10),
        }
    }

    /// SET on a fresh connection; the generation it was acknowledged with.
    fn probe(&self, n: usize) -> u64 {
        let answer = request(self.addr, &format!("SET probe_{n} x")).unwrap();
        parse_ok(&answer).unwrap_or_else(|| panic!("probe SET answered {answer:?}"))
    }

    /// One committed handoff to a new kv-c: the old incumbent exits 0 and the
    /// successor answers PING.
    fn hand_off(&mut self, n: usize) {
        let outcome = self
            .supervisor
            .perform_handoff(&self.spec(self.command.clone()))
            .unwrap_or_else(|e| panic!("handoff {n} did not start: {e}"));
        assert!(
            outcome.committed,
            "handoff {n} rolled back: {:?}",
            outcome.abort_reason
        );
        assert_eq!(outcome.incumbent_pid, self.incumbent, "handoff {n}");
        let successor = outcome
            .successor
            .expect("a committed handoff has a successor");
        let successor_pid = successor.pid();
        self.children.0.push(successor);
        let t = outcome.timings;
        eprintln!(
            "handoff {n}: {} -> {successor_pid} in {:?} \
             (spawn {:?}, drain {:?}, seal {:?}, ready {:?})",
            self.incumbent, t.total, t.spawn, t.drain, t.seal, t.ready
        );
        assert!(
            !self.journal.exists(),
            "handoff {n}: the journal was not cleared"
        );

        // The old incumbent steps down by itself, with status 0.
        let old_pid = self.incumbent;
        let mut old = self.children.take(old_pid);
        let status = old
            .wait_timeout(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("handoff {n}: old incumbent {old_pid} did not exit"));
        assert_exited_zero(status, &format!("handoff {n}: old incumbent {old_pid}"));

        wait_for_ping(self.addr, successor_pid);
        self.incumbent = successor_pid;
    }

    /// Every acknowledged write reads back, from the current incumbent.
    fn check_reads(&self, acks: &[Ack]) {
        assert_eq!(
            ping(self.addr).unwrap(),
            self.incumbent,
            "PING answered by another pid"
        );
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = std::io::BufWriter::new(&stream);
        for batch in acks.chunks(200) {
            for ack in batch {
                writeln!(writer, "GET {}", ack.key).unwrap();
            }
            writer.flush().unwrap();
            for ack in batch {
                let mut answer = String::new();
                reader.read_line(&mut answer).unwrap();
                assert_eq!(
                    answer.trim_end_matches('\n'),
                    format!("VALUE {}", ack.value),
                    "acknowledged write lost: {ack:?}"
                );
            }
        }
        assert_eq!(
            ping(self.addr).unwrap(),
            self.incumbent,
            "PING answered by another pid"
        );
    }

    /// The current incumbent stops cleanly on SIGTERM; no generation left
    /// a sanitizer report.
    fn stop(mut self) {
        let pid = self.incumbent;
        let mut last = self.children.take(pid);
        let status = last.terminate(Duration::from_secs(5));
        assert_no_sanitizer_reports(&sanitizer_log_dir(&self.tmp.path().join("data")));
        assert_exited_zero(status, &format!("last incumbent {pid} on SIGTERM"));
    }
}

fn check_load(tally: &Tally, generations: &[u64]) {
    eprintln!(
        "load: {} fresh-connection SETs, {} persistent-connection requests \
         ({} resent after a close), {} acknowledged writes; generations {generations:?}",
        tally.fresh_requests,
        tally.persistent_requests,
        tally.resends,
        tally.acks.len()
    );
    assert!(
        tally.fresh_failures.is_empty(),
        "{} of {} fresh connections failed, first ones: {:#?}",
        tally.fresh_failures.len(),
        tally.fresh_requests,
        &tally.fresh_failures[..tally.fresh_failures.len().min(10)]
    );
    assert!(
        tally.persistent_failures.is_empty(),
        "persistent connections failed: {:#?}",
        &tally.persistent_failures[..tally.persistent_failures.len().min(10)]
    );
    assert!(
        tally.acks.len() > 100,
        "too little load to mean anything: {} acknowledged writes",
        tally.acks.len()
    );
    // Every acknowledgement names the generation of a process that held
    // the lock when it wrote.
    for ack in &tally.acks {
        assert!(
            generations.contains(&ack.generation),
            "{ack:?} names a generation outside {generations:?}"
        );
    }
}

fn five_handoffs_under_load(nonblocking: bool) {
    let mut service = Service::start(nonblocking);
    let mut generations = vec![service.probe(0)];
    let load = Load::start(service.addr);
    load.wait_acks(ACKS_PER_PHASE);

    for n in 1..=HANDOFFS {
        service.hand_off(n);
        // The successor writes under a newer fencing generation.
        let generation = service.probe(n);
        assert!(
            generation > *generations.last().unwrap(),
            "handoff {n}: generation {generation} after {generations:?}"
        );
        generations.push(generation);
        load.wait_acks(ACKS_PER_PHASE);
    }

    let tally = load.finish();
    check_load(&tally, &generations);
    service.check_reads(&tally.acks);
    service.stop();
}

#[test]
fn five_c_to_c_handoffs_under_load_refuse_nothing_and_lose_nothing() {
    five_handoffs_under_load(false);
}

/// The same with O_NONBLOCK set on the shared listener.
#[test]
fn five_c_to_c_handoffs_with_a_nonblocking_listener() {
    five_handoffs_under_load(true);
}

/// A successor that fails after Begin (it cannot lock its data dir) makes
/// the supervisor roll back: the C incumbent takes its lock back (a new
/// generation), reopens its log, accepts again and loses nothing; the next
/// handoff then commits.
/// CRC-32C (Castagnoli), bit by bit: the log's checksum (examples/README.md).
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One SET record of kv.log (examples/README.md, "Log format").
fn log_record(generation: u64, key: &str, value: &str) -> Vec<u8> {
    let mut body = vec![1u8];
    body.extend_from_slice(&generation.to_le_bytes());
    body.extend_from_slice(&(key.len() as u16).to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(value.as_bytes());
    let mut record = (body.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32c(&body).to_le_bytes());
    record.extend_from_slice(&body);
    record
}

/// The generation of kv.log's first record.
fn first_record_generation(log: &Path) -> u64 {
    let bytes = std::fs::read(log).unwrap();
    u64::from_le_bytes(bytes[9..17].try_into().unwrap())
}

/// A log of overwrites reaches the compaction threshold while the incumbent
/// serves; its successor preloads it, compacts it after taking the lock and
/// before Ready (examples/README.md, "Compaction"), under load, and every
/// value, old and new, reads back from the compacted log.
#[test]
fn a_successor_compacts_a_log_of_overwrites_under_load() {
    const KEYS: usize = 100;
    const RECORDS: usize = 65_000; // below the threshold (65,536): no compaction at the cold start
    let mut log = Vec::new();
    let mut last = std::collections::BTreeMap::new();
    for n in 0..RECORDS {
        let (key, value) = (format!("old_{}", n % KEYS), format!("v{n}"));
        log.extend(log_record(1, &key, &value));
        last.insert(key, value);
    }
    let mut service = Service::start_with_log(false, Some(&log));
    let path = service.tmp.path().join("data/kv.log");
    let before = std::fs::metadata(&path).unwrap().len();
    assert_eq!(before, log.len() as u64, "the cold start compacted the log");
    let generation = service.probe(0);
    // Over the threshold: 1,000 more overwrites of the same keys.
    for n in 0..1000 {
        let (key, value) = (format!("old_{}", n % KEYS), format!("w{n}"));
        let answer = request(service.addr, &format!("SET {key} {value}")).unwrap();
        assert!(parse_ok(&answer).is_some(), "SET answered {answer:?}");
        last.insert(key, value);
    }
    let load = Load::start(service.addr);
    load.wait_acks(ACKS_PER_PHASE);
    service.hand_off(1);
    let successor_generation = service.probe(1);
    load.wait_acks(ACKS_PER_PHASE);
    let mut tally = load.finish();
    check_load(&tally, &[generation, successor_generation]);

    let after = std::fs::metadata(&path).unwrap().len();
    assert!(
        after < before / 10,
        "kv.log is {after} bytes after the handoff, {before} before: not compacted"
    );
    assert_eq!(
        first_record_generation(&path),
        successor_generation,
        "the compacted records are not stamped with the successor's generation"
    );
    // The last value of every overwritten key, and the load's writes.
    let mut acks: Vec<Ack> = last
        .into_iter()
        .map(|(key, value)| Ack {
            key,
            value,
            generation,
        })
        .collect();
    acks.append(&mut tally.acks);
    service.check_reads(&acks);
    service.stop();
}

#[test]
fn an_aborted_handoff_leaves_the_c_incumbent_serving_everything() {
    let mut service = Service::start(false);
    let mut generations = vec![service.probe(0)];
    let load = Load::start(service.addr);
    load.wait_acks(ACKS_PER_PHASE);

    // A data dir the successor cannot create: a path under a regular file.
    let blocker = service.tmp.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let mut broken = service.command.clone();
    let at = broken
        .args
        .iter()
        .position(|a| a == "--data-dir")
        .expect("--data-dir")
        + 1;
    broken.args[at] = blocker.join("data").into();

    let outcome = service
        .supervisor
        .perform_handoff(&service.spec(broken))
        .expect("the handoff starts");
    assert!(
        !outcome.committed,
        "a successor without its data dir committed"
    );
    eprintln!(
        "rolled back in {:?}: {}",
        outcome.timings.total,
        outcome.abort_reason.as_deref().unwrap_or("?")
    );
    assert!(outcome.successor.is_none());
    assert!(!service.journal.exists(), "the journal was not cleared");

    // The same process serves, under a new tenure of the lock.
    assert_eq!(ping(service.addr).unwrap(), service.incumbent);
    let generation = service.probe(1);
    assert!(
        generation > generations[0],
        "generation {generation} after a rollback that re-took the lock, before {generations:?}"
    );
    generations.push(generation);
    load.wait_acks(ACKS_PER_PHASE);

    service.hand_off(2);
    let generation = service.probe(2);
    assert!(generation > generations[1]);
    generations.push(generation);
    load.wait_acks(ACKS_PER_PHASE);

    let tally = load.finish();
    check_load(&tally, &generations);
    service.check_reads(&tally.acks);
    service.stop();
}

/// A successor that cannot bind its control socket finds out before its
/// Ready, so the handoff rolls back and the incumbent serves on (it used to
/// send Ready first: the supervisor committed, the successor then failed to
/// bind and exited, and nobody served).
#[test]
fn a_successor_that_cannot_bind_its_control_socket_rolls_back_before_ready() {
    let mut service = Service::start(false);
    let before = service.probe(0);

    let blocker = service.tmp.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let mut broken = service.command.clone();
    let at = broken
        .args
        .iter()
        .position(|a| a == "--control-socket")
        .expect("--control-socket")
        + 1;
    broken.args[at] = blocker.join("control.sock").into();

    let outcome = service
        .supervisor
        .perform_handoff(&service.spec(broken))
        .expect("the handoff starts");
    assert!(
        !outcome.committed,
        "committed a successor that had no control socket"
    );
    let abort = outcome.abort.expect("a rollback has a reason");
    assert_eq!(
        abort.party,
        handoff::supervisor::Party::Successor,
        "{abort:?}"
    );
    eprintln!("rolled back: {}", abort.detail);
    assert_eq!(ping(service.addr).unwrap(), service.incumbent);
    assert!(service.probe(1) > before, "the lock was taken back");

    service.hand_off(2);
    service.stop();
}
