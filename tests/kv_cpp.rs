//! kv-cpp (examples/cpp) held to kv-c, the contract's first implementation
//! (examples/README.md): the same answers to the same requests, byte for
//! byte the same kv.log, and protocol v1 handoffs (`--no-moves`) from kv-c
//! to kv-cpp and back under load, with a rolled-back one between, losing
//! nothing. Protocol v2 between every pair of services is in
//! tests/kept_connections.rs and tests/limits.rs.
//!
//! Needs `make build` (kv-c and kv-cpp). With HANDOFF_CPP_ASAN=1 every
//! kv-cpp is examples/cpp/build-asan/kv-cpp (`make -C examples/cpp asan`),
//! and a sanitizer report from any of them fails the test (`make test-asan`).

mod common;
#[path = "common/kv.rs"]
mod kv;
#[path = "common/load.rs"]
mod load;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use common::{service_command, wait_for_pong, Reaper};
use handoff::spawn::{describe_status, Command};
use handoff::supervisor::{SpawnSpec, Supervisor};
use kv::Lang;
use load::{Load, LoadConfig};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The worked example of examples/README.md: `SET foo bar` by generation 1.
const SET_FOO_BAR: [u8; 27] = [
    0x13, 0x00, 0x00, 0x00, 0x13, 0x7c, 0xe6, 0xda, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x03, 0x00, 0x03, 0x00, 0x66, 0x6f, 0x6f, 0x62, 0x61, 0x72,
];

/// Every kind of request line the contract names, sent at once (pipelined).
fn requests() -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = [
        "SET foo bar",
        "SET foo baz",
        "GET foo",
        "GET nope",
        "PING",
        "",
        "\r",
        "FOO",
        "get foo",
        "SET  foo bar",
        "SET foo bar ",
        " PING",
        "SET foo",
        "GET foo extra",
        "PING x",
        "SET a 1\r",
        "PING\r",
    ]
    .iter()
    .map(|l| l.as_bytes().to_vec())
    .collect();
    lines.push(b"SET k\x7f v".to_vec());
    lines.push(format!("SET k {}", "v".repeat(257)).into_bytes());
    lines.push(format!("SET {} v", "k".repeat(256)).into_bytes());
    lines.push(vec![b'x'; 2000]); // longer than 1024: skipped to its newline
    lines.push(format!("GET {}", "k".repeat(256)).into_bytes());
    lines
}

/// A supervisor with a loopback listener named kv and its first generation.
struct Running {
    addr: SocketAddr,
    supervisor: Supervisor,
    reaper: Reaper,
    incumbent: u32,
    tmp: tempfile::TempDir,
}

impl Running {
    fn start(lang: Lang, extra: &[&str]) -> Running {
        let tmp = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let supervisor = Supervisor::new(tmp.path().join("control.sock"))
            .with_listener("kv", OwnedFd::from(listener))
            .unwrap()
            .with_journal(tmp.path().join("journal/state.bin"));
        let mut running = Running {
            addr,
            supervisor,
            reaper: Reaper::default(),
            incumbent: 0,
            tmp,
        };
        let command = running.command(lang, &running.data_dir(), extra);
        let child = running.supervisor.spawn_cold(&command).unwrap();
        running.incumbent = running.reaper.keep(child);
        wait_for_pong(&addr.to_string(), running.incumbent, TIMEOUT);
        running
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.tmp.path().join("data")
    }

    fn command(&self, lang: Lang, data_dir: &Path, extra: &[&str]) -> Command {
        let control = self.tmp.path().join("control.sock");
        if lang != Lang::Cpp
            || std::env::var_os("HANDOFF_CPP_ASAN").as_deref() != Some("1".as_ref())
        {
            let binary = kv::service_argv(lang).remove(0);
            return service_command(&binary, data_dir, &control, extra);
        }
        let binary = common::root().join("examples/cpp/build-asan/kv-cpp");
        assert!(
            binary.exists(),
            "{} is missing: run `make -C examples/cpp asan`",
            binary.display()
        );
        let reports = self.sanitizer_reports();
        std::fs::create_dir_all(&reports).unwrap();
        let mut command = service_command(&binary, data_dir, &control, extra);
        command.env = vec![
            (
                "ASAN_OPTIONS".into(),
                format!(
                    "detect_leaks=1:exitcode=23:detect_stack_use_after_return=1:log_path={}/asan",
                    reports.display()
                )
                .into(),
            ),
            (
                "UBSAN_OPTIONS".into(),
                format!(
                    "print_stacktrace=1:halt_on_error=1:exitcode=24:log_path={}/ubsan",
                    reports.display()
                )
                .into(),
            ),
        ];
        command
    }

    fn sanitizer_reports(&self) -> std::path::PathBuf {
        self.tmp.path().join("sanitizer")
    }

    /// The incumbent stops on SIGTERM with status 0, and no kv-cpp left a
    /// sanitizer report (a leak shows at exit: hence the stop first).
    fn stop(mut self) {
        let pid = self.incumbent;
        let child = self.reaper.0.iter_mut().find(|c| c.pid() == pid).unwrap();
        let status = child.terminate(TIMEOUT);
        assert_eq!(
            status,
            0,
            "incumbent {pid} on SIGTERM: {}",
            describe_status(status)
        );
        let reports: Vec<String> = std::fs::read_dir(self.sanitizer_reports())
            .map(|dir| {
                dir.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            reports.is_empty(),
            "sanitizer reports:\n{}",
            reports.join("\n")
        );
    }

    fn spec(command: Command) -> SpawnSpec {
        SpawnSpec {
            command,
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(5),
        }
    }

    /// A committed handoff to `lang`: the old incumbent exits 0, the new one
    /// answers PING with its tag.
    fn hand_off(&mut self, lang: Lang, extra: &[&str]) {
        let command = self.command(lang, &self.data_dir(), extra);
        let outcome = self
            .supervisor
            .perform_handoff(&Running::spec(command))
            .unwrap();
        assert!(
            outcome.committed,
            "handoff to {} rolled back: {:?}",
            lang.tag(),
            outcome.abort_reason
        );
        let old = self.incumbent;
        self.incumbent = self.reaper.keep(outcome.successor.unwrap());
        assert_eq!(
            self.reaper.wait_exit(old, TIMEOUT),
            Some(0),
            "old incumbent {old}"
        );
        wait_for_pong(&self.addr.to_string(), self.incumbent, TIMEOUT);
        assert_eq!(self.pong_tag(), lang.tag());
    }

    fn pong_tag(&self) -> String {
        let answer = common::request(&self.addr.to_string(), "PING").unwrap();
        answer.split(' ').nth(2).unwrap_or("").to_string()
    }

    /// The generation an `OK` names now.
    fn generation(&self) -> u64 {
        let answer = common::request(&self.addr.to_string(), "SET probe x").unwrap();
        let number = answer.strip_prefix("OK ");
        number
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("SET answered {answer:?}"))
    }
}

/// The answers to `requests()` on one connection, each `PONG <pid> <tag>`
/// of `lang`'s process `pid` written so; the connection then closes with a partial line, which is not a
/// request and gets no answer.
fn answers(addr: SocketAddr, pid: u32, lang: Lang) -> Vec<String> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let lines = requests();
    let mut batch = Vec::new();
    for line in &lines {
        batch.extend_from_slice(line);
        batch.push(b'\n');
    }
    batch.extend_from_slice(b"SET never");
    (&stream).write_all(&batch).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reader = BufReader::new(stream);
    let mut out = Vec::new();
    let mut answer = String::new();
    while reader.read_line(&mut answer).unwrap() > 0 {
        assert!(
            answer.ends_with('\n'),
            "an answer without its newline: {answer:?}"
        );
        out.push(
            answer
                .trim_end_matches('\n')
                .replace(&format!("PONG {pid} {}", lang.tag()), "PONG <pid> <tag>"),
        );
        answer.clear();
    }
    assert_eq!(
        out.len(),
        lines.len(),
        "one answer per request line: {out:#?}"
    );
    out
}

#[test]
fn kv_cpp_answers_and_logs_as_kv_c_does() {
    let mut seen = Vec::new();
    for lang in [Lang::C, Lang::Cpp] {
        let running = Running::start(lang, &[]);
        let got = answers(running.addr, running.incumbent, lang);
        let log = std::fs::read(running.data_dir().join("kv.log")).unwrap();
        running.stop();
        seen.push((lang, got, log));
    }
    let (_, c_answers, c_log) = &seen[0];
    let (_, cpp_answers, cpp_log) = &seen[1];
    assert_eq!(cpp_answers, c_answers);
    assert!(
        c_answers.contains(&"PONG <pid> <tag>".to_string()),
        "{c_answers:#?}"
    );
    assert!(c_answers.iter().filter(|a| a.starts_with("ERR ")).count() >= 12);
    assert_eq!(cpp_log, c_log, "kv.log differs from kv-c's");
    assert_eq!(&cpp_log[..SET_FOO_BAR.len()], &SET_FOO_BAR[..]);
    // Four records of 8 + 13 + key + value bytes: foo bar, foo baz, a 1, k*256 v.
    assert_eq!(cpp_log.len(), 27 + 27 + 23 + (21 + 256 + 1));
}

#[test]
fn v1_handoffs_between_kv_c_and_kv_cpp_lose_nothing() {
    let mut running = Running::start(Lang::C, &["--no-moves"]);
    let load = Load::start(running.addr, LoadConfig::default());
    assert!(load.wait_answers(100, TIMEOUT));
    running.hand_off(Lang::Cpp, &["--no-moves"]);
    assert!(load.wait_answers(100, TIMEOUT));

    // A successor that cannot take its data dir (a path under a regular
    // file): rolled back after the seal; kv-cpp reopens its log and serves on
    // under a new tenure of the lock.
    let before = running.generation();
    let blocker = running.tmp.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let broken = running.command(Lang::Cpp, &blocker.join("data"), &["--no-moves"]);
    let outcome = running
        .supervisor
        .perform_handoff(&Running::spec(broken))
        .unwrap();
    assert!(
        !outcome.committed,
        "a successor without its data dir committed"
    );
    assert_eq!(
        common::pong_pid(&running.addr.to_string()),
        Some(running.incumbent)
    );
    assert!(running.generation() > before, "the lock was not taken back");
    assert!(load.wait_answers(100, TIMEOUT));

    running.hand_off(Lang::C, &["--no-moves"]);
    assert!(load.wait_answers(100, TIMEOUT));
    let tally = load.stop();
    eprintln!(
        "load across kv-c -> kv-cpp -> (rolled back) -> kv-c: {}",
        tally.summary()
    );
    assert_eq!(tally.failed(), 0, "{:#?}", tally.examples);
    assert!(tally.writes > 0);
    let lost = load::verify(running.addr, &tally.keys).unwrap();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:#?}");
    running.stop();
}
