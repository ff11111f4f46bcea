//! The minimal services of examples/minimal (the same durable counter in C,
//! C++, Python, Go and Rust, one file each) handed off to one another by the
//! crate's supervisor, real processes on a real TCP listener: one run whose
//! generations walk C -> C++ -> Python -> Go -> Rust -> C while a client
//! sends INCRs on a fresh connection each. Before each committed handoff,
//! one that rolls back (the successor fails before Ready): the incumbent
//! resumes and serves on. No connection is refused, every answered INCR is
//! one more than the last (nothing acknowledged is lost, nothing invented
//! but for INCRs whose connection a drain closed unanswered), and PING's
//! pid and language change at each committed handoff only.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{root, Reaper};
use handoff::spawn::Command;
use handoff::supervisor::{Cause, HandoffPhase, Party, SpawnSpec, Supervisor};

const PATIENCE: Duration = Duration::from_secs(20);
/// Answered INCRs the client must see between two steps of the run.
const PROGRESS: u64 = 20;

#[derive(Debug, Clone, Copy)]
enum Lang {
    C,
    Cpp,
    Python,
    Go,
    Rust,
}

impl Lang {
    /// The tag in `PONG <pid> <tag>`.
    fn tag(self) -> &'static str {
        match self {
            Lang::C => "c",
            Lang::Cpp => "cpp",
            Lang::Python => "python",
            Lang::Go => "go",
            Lang::Rust => "rust",
        }
    }

    /// The service's command; panics with what to build when it is missing.
    fn command(self, data_dir: &Path, control: &Path) -> Command {
        let root = root();
        let built = |name: &str| built_by_make().join(name);
        let mut argv: Vec<PathBuf> = match self {
            Lang::C => vec![built("minimal-c")],
            Lang::Cpp => vec![built("minimal-cpp")],
            Lang::Go => vec![built("minimal-go")],
            Lang::Rust => vec![rust_example()],
            Lang::Python => vec![
                root.join("target/venv/bin/python"),
                root.join("examples/minimal/minimal.py"),
            ],
        };
        for path in &argv {
            assert!(
                path.exists(),
                "{} is missing: run `make venv` first",
                path.display()
            );
        }
        let binary = argv.remove(0);
        argv.extend([data_dir.to_owned(), control.to_owned()]);
        Command {
            binary,
            args: argv.into_iter().map(Into::into).collect(),
            env: vec![(
                "HANDOFF_LIBRARY".into(),
                root.join("target/release/libhandoff.so").into(),
            )],
        }
    }
}

/// examples/minimal/build, made (C, C++, Go) once per run of this test.
fn built_by_make() -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = std::process::Command::new("make")
            .args(["-s", "-C"])
            .arg(root().join("examples/minimal"))
            .env("PKG_CONFIG_PATH", root().join("target/pkgconfig"))
            .status()
            .expect("make");
        assert!(
            status.success(),
            "building examples/minimal failed (run `make build` first)"
        );
    });
    root().join("examples/minimal/build")
}

/// The crate's example minimal-rust, which `cargo test` builds with the tests.
fn rust_example() -> PathBuf {
    let built = root().join("target/release/examples/minimal-rust");
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let source = modified(&root().join("examples/minimal/minimal.rs"));
    assert!(
        modified(&built).is_some_and(|built| Some(built) >= source),
        "{} is missing or older than minimal.rs: run `cargo build --release --example \
         minimal-rust` (or the whole `cargo test --release`)",
        built.display()
    );
    built
}

/// One line on a fresh connection, its answer line.
fn ask(addr: SocketAddr, line: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    answer.trim_end().to_string()
}

/// `PONG <pid> <tag>`: who serves.
fn pong(addr: SocketAddr) -> (u32, String) {
    let answer = ask(addr, "PING");
    let words: Vec<&str> = answer.split(' ').collect();
    assert!(words.len() == 3 && words[0] == "PONG", "{answer:?}");
    (words[1].parse().expect("a pid"), words[2].to_string())
}

/// Bad input on one connection: clear errors, and it stays usable until an
/// overlong line, which closes it unanswered.
fn assert_refuses_bad_input(addr: SocketAddr, serving: (u32, &str)) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"BOGUS\nPING\r\n").unwrap();
    let mut answers = BufReader::new(stream.try_clone().unwrap()).lines();
    let mut next = || answers.next().expect("an answer").expect("an answer");
    assert_eq!(next(), "ERR unknown command", "{}", serving.1);
    assert_eq!(next(), format!("PONG {} {}", serving.0, serving.1));
    let long = "x".repeat(200);
    stream
        .write_all(format!("{long}\nPING\n").as_bytes())
        .unwrap();
    assert!(
        !matches!(answers.next(), Some(Ok(_))),
        "{}: an overlong line is answered, or the connection goes on after it",
        serving.1
    );
}

fn get(addr: SocketAddr) -> u64 {
    let answer = ask(addr, "GET");
    answer.parse().unwrap_or_else(|_| panic!("GET: {answer:?}"))
}

/// What the INCR client saw.
#[derive(Debug, Default)]
struct Tally {
    answered: u64,
    /// The connection closed before an answer (a drain): applied or not.
    unanswered: u64,
    /// The last value answered.
    last: u64,
}

/// Sends INCR after INCR, each on a fresh connection, until stopped; a
/// refused connection or an answer that is not one more than the last
/// answered (allowing for the unanswered ones) fails it.
struct Client {
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Tally>,
}

impl Client {
    fn start(addr: SocketAddr, from: u64) -> Client {
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (answered.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut tally = Tally {
                last: from,
                ..Tally::default()
            };
            let mut unanswered_since = 0;
            while !stopped.load(Ordering::SeqCst) {
                let mut stream = TcpStream::connect(addr).expect("a refused connection");
                stream.set_read_timeout(Some(PATIENCE)).unwrap();
                let mut answer = String::new();
                let sent = stream.write_all(b"INCR\n");
                if sent.is_err() || BufReader::new(stream).read_line(&mut answer).unwrap_or(0) == 0
                {
                    tally.unanswered += 1;
                    unanswered_since += 1;
                    continue;
                }
                let value: u64 = answer.trim_end().parse().expect("INCR answers a number");
                assert!(
                    value > tally.last && value <= tally.last + 1 + unanswered_since,
                    "INCR answered {value} after {} ({unanswered_since} unanswered since)",
                    tally.last
                );
                (tally.last, unanswered_since) = (value, 0);
                tally.answered += 1;
                count.fetch_add(1, Ordering::SeqCst);
            }
            tally
        });
        Client {
            answered,
            stop,
            thread,
        }
    }

    /// Wait until `more` INCRs past now were answered.
    fn wait_progress(&self, more: u64) {
        let target = self.answered.load(Ordering::SeqCst) + more;
        let deadline = Instant::now() + PATIENCE;
        while self.answered.load(Ordering::SeqCst) < target {
            assert!(!self.thread.is_finished(), "the INCR client failed");
            assert!(Instant::now() < deadline, "the INCR client stalled");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

#[test]
fn the_minimal_services_hand_off_to_one_another_and_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let control = dir.path().join("control.sock");
    // A successor whose control socket cannot be bound fails after taking
    // the lock and opening the log, before Ready.
    let unbindable = dir.path().join("missing/control.sock");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let supervisor = Supervisor::new(&control)
        .with_listener("counter", OwnedFd::from(listener))
        .unwrap()
        .with_journal(dir.path().join("journal/state.bin"));
    let spec = |lang: Lang, control: &Path| SpawnSpec {
        command: lang.command(&data_dir, control),
        deadline: Duration::from_secs(30),
        drain_grace: Duration::from_secs(5),
    };
    let mut reaper = Reaper::default();
    let mut serving = reaper.keep(
        supervisor
            .spawn_cold(&Lang::C.command(&data_dir, &control))
            .unwrap(),
    );
    let mut lang = Lang::C;
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).is_err() || pong(addr).0 != serving {
        assert!(Instant::now() < deadline, "the cold start never served");
        std::thread::sleep(Duration::from_millis(10));
    }
    let client = Client::start(addr, get(addr));

    for next in [Lang::Cpp, Lang::Python, Lang::Go, Lang::Rust, Lang::C] {
        client.wait_progress(PROGRESS);
        let outcome = supervisor
            .perform_handoff(&spec(next, &unbindable))
            .unwrap();
        let abort = outcome
            .abort
            .expect("the handoff to a successor that fails rolls back");
        assert_eq!(
            (abort.party, abort.cause, abort.phase),
            (Party::Successor, Cause::Exited, HandoffPhase::Ready),
            "{} -> {}: {abort:?}",
            lang.tag(),
            next.tag()
        );
        assert_eq!(
            pong(addr),
            (serving, lang.tag().to_string()),
            "resumed after the rollback"
        );
        client.wait_progress(PROGRESS);

        let before = get(addr);
        let outcome = supervisor.perform_handoff(&spec(next, &control)).unwrap();
        assert!(
            outcome.committed,
            "{} -> {}: {:?}",
            lang.tag(),
            next.tag(),
            outcome.abort_reason
        );
        let successor = reaper.keep(outcome.successor.unwrap());
        assert_eq!(
            reaper.wait_exit(serving, PATIENCE),
            Some(0),
            "the {} incumbent's exit",
            lang.tag()
        );
        assert_eq!(pong(addr), (successor, next.tag().to_string()));
        assert_refuses_bad_input(addr, (successor, next.tag()));
        assert!(
            get(addr) >= before,
            "{} counts what {} answered",
            next.tag(),
            lang.tag()
        );
        (serving, lang) = (successor, next);
    }
    client.wait_progress(PROGRESS);
    let tally = client.stop();
    let last = get(addr);
    assert!(
        last >= tally.last && last <= tally.last + tally.unanswered,
        "the counter ended at {last}: {tally:?}"
    );
    eprintln!("minimal services: {tally:?}, counter at {last}");
}

/// The README's table of the minimal services gives each file's length.
#[test]
fn the_readme_gives_each_minimal_service_its_length() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for file in [
        "minimal.c",
        "minimal.cpp",
        "minimal.py",
        "go/main.go",
        "minimal.rs",
    ] {
        let source = std::fs::read_to_string(root().join("examples/minimal").join(file)).unwrap();
        let row = readme
            .lines()
            .find(|line| line.contains(&format!("(examples/minimal/{file})")))
            .unwrap_or_else(|| panic!("README.md has no row for {file}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(
            cells[3],
            source.lines().count().to_string(),
            "README.md's line count of examples/minimal/{file}"
        );
    }
}
