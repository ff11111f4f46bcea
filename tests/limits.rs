//! Load and limits, with real processes and the example key-value services
//! (examples/): a handoff while the service holds 10,000 idle client
//! connections, a handoff while the incumbent is at its descriptor limit,
//! and a soak run of handoffs back to back (C -> Python -> Go -> C++ -> Rust
//! -> C ...)
//! under client load.
//!
//! ```text
//! cargo test --release --test limits -- --nocapture        # as in `make test`
//! make soak SOAK_SECS=180                                  # the soak, 3 minutes
//! make soak SOAK_SECS=86400 SOAK_PACE_MS=1000 SOAK_READS=50  # 24 hours
//! ```
//!
//! The soak's knobs (environment): `SOAK_SECS` (run for this long; without
//! it, `SOAK_HANDOFFS` handoffs, default 20), `SOAK_PACE_MS` (each of the
//! four load clients' pause after each SET and its GETs, default 5),
//! `SOAK_READS` (GETs after each SET, default 1), `SOAK_PAUSE_MS` (between
//! two handoffs, default 100). The example services compact their log at
//! open once it holds 65,536 records (the soak writes 8,000 keys), so it
//! stays bounded however long the run: docs/reliability.md gives the
//! settings for 24 hours.
//!
//! Needs `make build venv` (the services and the Python venv).

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/kv.rs"]
mod kv;
#[path = "common/kv_bench.rs"]
mod kv_bench;
#[path = "common/load.rs"]
mod load;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cli::{activated_supervisor, Fixture};
use handoff::supervisor::{Cause, Party, SpawnSpec};
use kv::{Lang, LaunchOptions, LANGS};
use kv_bench::KvBench;
use load::{Load, LoadConfig};

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_handoff-supervisor");

/// Straight to stderr, past the harness's capture: the figures are the
/// point of these tests.
fn show(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The tests raise this process's descriptor limit and count descriptors:
/// one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn nofile() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    (limit.rlim_cur, limit.rlim_max)
}

/// Raise the soft descriptor limit to `want` (the hard limit at most);
/// the limit now in force. Children inherit it.
fn raise_nofile(want: u64) -> u64 {
    let (soft, hard) = nofile();
    if soft >= want {
        return soft;
    }
    let limit = libc::rlimit {
        rlim_cur: want.min(hard),
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    nofile().0
}

fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// One request on a fresh connection.
fn request(addr: SocketAddr, line: &str, timeout: Duration) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    (&stream).write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    if !answer.ends_with('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("no whole answer ({answer:?})"),
        ));
    }
    Ok(answer.trim_end().to_string())
}

/// The pid and tag answering PING.
fn pong(addr: SocketAddr) -> Option<(u32, String)> {
    let answer = request(addr, "PING", Duration::from_secs(5)).ok()?;
    let mut words = answer.split(' ');
    (words.next()? == "PONG").then_some(())?;
    Some((words.next()?.parse().ok()?, words.next()?.to_string()))
}

fn wait_for_pong(addr: SocketAddr, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = pong(addr);
        if got.as_ref().is_some_and(|(p, _)| *p == pid) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} never answered: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Fresh-connection PINGs until stopped: (answered, failures).
struct Prober {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Prober {
    fn start(addr: SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&answered));
        let thread = std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match request(addr, "PING", Duration::from_secs(20)) {
                    Ok(answer) if answer.starts_with("PONG ") => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            failures
        });
        Prober {
            stop,
            answered,
            thread,
        }
    }

    /// Wait until `n` more PINGs were answered.
    fn wait_answers(&self, n: u64) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} PINGs answered in 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.thread.join().expect("prober panicked");
        (self.answered.load(Ordering::Relaxed), failures)
    }
}

/// 10,000 idle keep-alive connections (each answered once, then silent)
/// held by the service, then a handoff to the same service under a prober
/// opening a fresh connection per request: it commits, every idle
/// connection moved to the successor (protocol v2: each answers its next
/// PING with the successor's pid, none was closed), no fresh connection
/// fails. With the services whose `--max-conns` lets them hold that many.
#[test]
fn a_handoff_with_ten_thousand_idle_connections() {
    let _serial = serial();
    for lang in [Lang::C, Lang::Rust] {
        ten_thousand_idle_connections(lang);
    }
}

fn ten_thousand_idle_connections(lang: Lang) {
    const IDLE: usize = 10_000;
    // The clients' descriptors here, the service's there, and some room.
    let limit = raise_nofile(IDLE as u64 + 1024);
    assert!(
        limit >= IDLE as u64 + 512,
        "RLIMIT_NOFILE hard limit {} is below the {} descriptors this test needs \
         (raise it: ulimit -Hn)",
        nofile().1,
        IDLE + 512
    );
    let mut bench = KvBench::new(true);
    let service = bench.launcher(
        lang,
        &format!("kv-{}.sh", lang.short()),
        LaunchOptions {
            extra_args: vec!["--max-conns".into(), (IDLE + 100).to_string()],
            ..LaunchOptions::default()
        },
    );
    let first = bench.cold_start(&service);
    let spec = SpawnSpec {
        command: bench.command(&service, &[]),
        ..SpawnSpec::new(&service)
    };

    // The same handoff with no idle connection, for comparison.
    let quiet = bench.supervisor.perform_handoff(&spec).unwrap();
    assert!(quiet.committed, "{:?}", quiet.abort_reason);
    let incumbent = bench.reaper.keep(quiet.successor.unwrap());
    assert_eq!(
        bench.reaper.wait_exit(first, Duration::from_secs(10)),
        Some(0)
    );
    wait_for_pong(bench.addr, incumbent);

    // Below the listener's backlog (128), so no SYN waits for a retransmit.
    const BATCH: usize = 100;
    let opened = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for batch in 0..IDLE.div_ceil(BATCH) {
        let mut streams = Vec::new();
        for _ in 0..BATCH.min(IDLE - batch * BATCH) {
            let stream = TcpStream::connect(bench.addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            (&stream).write_all(b"PING\n").unwrap();
            streams.push(stream);
        }
        for stream in &streams {
            let mut answer = [0u8; 64];
            let n = (&*stream)
                .read(&mut answer)
                .expect("PONG on an idle connection");
            assert!(answer[..n].starts_with(b"PONG "), "{:?}", &answer[..n]);
        }
        idle.extend(streams);
    }
    let open_secs = opened.elapsed().as_secs_f64();
    let held = fd_count(incumbent);
    assert!(held >= IDLE, "the service holds {held} descriptors");

    let prober = Prober::start(bench.addr);
    prober.wait_answers(20);
    let outcome = bench.supervisor.perform_handoff(&spec).unwrap();
    assert!(
        outcome.committed,
        "{:?}\n{}",
        outcome.abort_reason,
        bench.log_tail()
    );
    let successor = bench.reaper.keep(outcome.successor.unwrap());
    // Every idle connection moved: the successor answers it.
    let pong = format!("PONG {successor} {}\n", lang.tag());
    let asking = Instant::now();
    for stream in &idle {
        (&*stream)
            .write_all(b"PING\n")
            .expect("an idle connection must stay open");
    }
    for stream in &idle {
        let mut answer = [0u8; 64];
        let n = (&*stream)
            .read(&mut answer)
            .expect("an answer on a moved connection");
        assert_eq!(
            String::from_utf8_lossy(&answer[..n]),
            pong,
            "a moved connection must be answered by the successor"
        );
    }
    let answer_secs = asking.elapsed().as_secs_f64();
    drop(idle);
    assert_eq!(
        bench.reaper.wait_exit(incumbent, Duration::from_secs(20)),
        Some(0),
        "the old incumbent\n{}",
        bench.log_tail()
    );
    wait_for_pong(bench.addr, successor);
    prober.wait_answers(20);
    let (answered, failures) = prober.stop();
    assert!(
        failures.is_empty(),
        "fresh connections failed during the handoff: {failures:?}"
    );
    assert!(answered > 0);
    let t = outcome.timings;
    show(&format!(
        "\n{}: 10,000 idle connections: opened in {open_secs:.1}s, the incumbent held {held} descriptors; \
         handoff committed in {:.0} ms (drain {:.0} ms, seal {:.0} ms, ready {:.0} ms) vs {:.0} ms \
         with none idle; every idle connection moved and answered by the successor \
         ({answer_secs:.2}s for all); \
         {answered} fresh-connection PINGs during it, 0 failed\n",
        lang.tag(),
        t.total.as_secs_f64() * 1e3,
        t.drain.as_secs_f64() * 1e3,
        t.seal.as_secs_f64() * 1e3,
        t.ready.as_secs_f64() * 1e3,
        quiet.timings.total.as_secs_f64() * 1e3,
    ));
}

/// The incumbent at its descriptor limit (RLIMIT_NOFILE 64, for every
/// generation): clients hold every descriptor it can have and more wait in
/// the listener's queue. A handoff must commit or roll back with a clear
/// reason, never hang or crash; the service keeps serving, and every
/// client's request is answered (the queued ones by whoever serves next).
///
/// With each service, a handoff commits (the library accepts the
/// supervisor's control connection on a descriptor it holds in reserve,
/// and the drain frees the rest). With the C one, a handoff to a successor
/// that fails at start-up rolls back first, and the next one still commits
/// (the reserve descriptor is taken again after use).
#[test]
fn a_handoff_at_the_descriptor_limit() {
    const LIMIT: u64 = 64;
    const CLIENTS: usize = 100;
    let _serial = serial();
    for lang in LANGS {
        let mut bench = KvBench::new(false);
        let launcher = bench.launcher(
            lang,
            &format!("kv-{}.sh", lang.short()),
            LaunchOptions {
                nofile: Some(LIMIT),
                ..LaunchOptions::default()
            },
        );
        let first = bench.cold_start(&launcher);
        let spec = |binary: &Path| SpawnSpec {
            command: bench.command(binary, &[]),
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(5),
        };

        // Fill: every client sends a PING; those the incumbent could accept
        // are answered, the rest wait in the queue.
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let stream = TcpStream::connect(bench.addr).expect("connect");
            (&stream).write_all(b"PING\n").unwrap();
            stream.set_nonblocking(true).unwrap();
            clients.push(Client {
                reader: BufReader::new(stream),
                line: String::new(),
                answered: false,
            });
        }
        // Which clients were accepted: those answered once the incumbent
        // has settled, its answers and its descriptors unchanged for a
        // while. A slow incumbent may accept a client well before it
        // answers it: one classified too early would look queued.
        let (answered, at_limit) = settle(&mut clients, first, lang);
        assert!(
            answered < CLIENTS && at_limit as u64 >= LIMIT - 2,
            "{}: not at the limit: {answered} answered, {at_limit} descriptors",
            lang.tag()
        );
        for client in &clients {
            client.reader.get_ref().set_nonblocking(false).unwrap();
        }

        let mut verdicts = Vec::new();
        if lang == Lang::C {
            // A successor that cannot start (its data directory cannot be
            // made): rolled back, the incumbent unchanged, still at its limit
            // (the connections it had moved taken back). It has room for
            // them, so it fails for its own reason, not for its limit.
            let broken = bench.launcher(
                lang,
                "kv-c-broken.sh",
                LaunchOptions {
                    nofile: Some(4 * LIMIT),
                    extra_args: vec!["--data-dir".into(), "/proc/no-such-dir/kv".into()],
                    ..LaunchOptions::default()
                },
            );
            let started = Instant::now();
            let outcome = bench.supervisor.perform_handoff(&spec(&broken)).unwrap();
            let secs = started.elapsed().as_secs_f64();
            assert!(
                !outcome.committed,
                "{}: committed a successor that cannot start",
                lang.tag(),
            );
            let abort = outcome.abort.expect("a rollback has a reason");
            assert!(
                abort.party == Party::Successor && abort.cause == Cause::Exited,
                "unclear reason: {abort:?}"
            );
            let reason = abort.detail;
            // It takes its reserve descriptor back once the connection closed.
            let deadline = Instant::now() + Duration::from_secs(5);
            while fd_count(first) != at_limit && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(
                fd_count(first),
                at_limit,
                "the incumbent's descriptors\n{}",
                bench.log_tail()
            );
            verdicts.push(format!("rolled back in {secs:.2}s ({reason}), then "));
        }

        // A service that moves its connections: a successor at the same
        // limit cannot hold them (its capacity leaves room for its own
        // use); the handoff rolls back naming that limit before anything
        // moved, and the next successor, given room, takes them all.
        let moves = lang.moves_connections();
        let target = if moves {
            let outcome = bench.supervisor.perform_handoff(&spec(&launcher)).unwrap();
            assert!(
                !outcome.committed,
                "{}: moved connections to a successor that cannot hold them\n{}",
                lang.tag(),
                bench.log_tail()
            );
            let abort = outcome.abort.expect("a rollback has a reason");
            assert!(
                abort.party == Party::Successor && abort.cause == Cause::Limit,
                "{}: the rollback must name the successor's limit: {abort:?}",
                lang.tag()
            );
            verdicts.push(format!("rolled back ({}), then ", abort.detail));
            bench.launcher(
                lang,
                &format!("kv-{}-roomy.sh", lang.short()),
                LaunchOptions {
                    nofile: Some(4 * LIMIT),
                    ..LaunchOptions::default()
                },
            )
        } else {
            launcher.clone()
        };
        let started = Instant::now();
        let result = bench.supervisor.perform_handoff(&spec(&target));
        let secs = started.elapsed().as_secs_f64();
        let verdict = match &result {
            Ok(outcome) if outcome.committed => "committed".to_string(),
            Ok(outcome) => format!(
                "rolled back: {}",
                outcome.abort_reason.clone().unwrap_or_default()
            ),
            Err(e) => format!("not started: {e}"),
        };
        verdicts.push(format!("{verdict} in {secs:.2}s"));
        let committed = matches!(&result, Ok(outcome) if outcome.committed);
        assert!(
            committed,
            "{}: the handoff at the descriptor limit: {verdict}\n{}",
            lang.tag(),
            bench.log_tail()
        );
        let serving = match result {
            Ok(outcome) if outcome.committed => {
                let successor = bench.reaper.keep(outcome.successor.unwrap());
                assert_eq!(
                    bench.reaper.wait_exit(first, Duration::from_secs(20)),
                    Some(0),
                    "{}: the old incumbent\n{}",
                    lang.tag(),
                    bench.log_tail()
                );
                successor
            }
            _ => first,
        };

        // The clients accepted before: moved to the successor, or closed by
        // the drain (they read EOF).
        let (accepted, queued): (Vec<_>, Vec<_>) =
            clients.into_iter().partition(|client| client.answered);
        if moves {
            let pong = format!("PONG {serving} {}\n", lang.tag());
            for Client { mut reader, .. } in accepted {
                let stream = reader.get_ref();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                (&*stream).write_all(b"PING\n").unwrap_or_else(|e| {
                    panic!("{}: a moved connection was closed: {e}", lang.tag())
                });
                let mut answer = String::new();
                reader.read_line(&mut answer).unwrap();
                assert_eq!(answer, pong, "{}: a moved connection", lang.tag());
            }
        } else {
            for Client { mut reader, .. } in accepted {
                reader
                    .get_ref()
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut rest = String::new();
                let n = reader.read_line(&mut rest).unwrap_or_else(|e| {
                    panic!(
                        "{}: an accepted client was not closed cleanly: {e}",
                        lang.tag()
                    )
                });
                assert_eq!(n, 0, "{}: {rest:?} on a drained connection", lang.tag());
            }
        }
        // Every queued client is answered, by whoever serves now; each
        // closes its connection once answered, freeing a descriptor.
        let late = queued.len();
        for Client {
            mut reader,
            mut line,
            ..
        } in queued
        {
            reader
                .get_ref()
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            // `line` holds what came before, if anything.
            reader.read_line(&mut line).unwrap_or_else(|e| {
                panic!(
                    "{}: a queued client got no answer: {e}\n{}",
                    lang.tag(),
                    bench.log_tail()
                )
            });
            assert!(line.starts_with("PONG "), "{}: {line:?}", lang.tag());
        }
        wait_for_pong(bench.addr, serving);
        let log_lines = fs::read_to_string(bench.path("service.log"))
            .unwrap_or_default()
            .lines()
            .count();
        assert!(
            log_lines < 200,
            "{}: the service log is flooded ({log_lines} lines):\n{}",
            lang.tag(),
            bench.log_tail()
        );
        show(&format!(
            "descriptor limit {LIMIT}, {}: {answered} clients accepted, {late} queued, incumbent at \
             {at_limit} descriptors; handoff {}; all {CLIENTS} answered ({late} after the \
             handoff); pid {serving} serves",
            lang.tag(),
            verdicts.concat(),
        ));
    }
}

/// A client of the descriptor-limit test: its PING sent, its answer read
/// into `line` (a part of it, until `answered`).
struct Client {
    reader: BufReader<TcpStream>,
    line: String,
    answered: bool,
}

/// Read what the non-blocking `clients` were answered until the incumbent
/// `pid` has settled: the number of answered clients and its descriptor
/// count both unchanged for `QUIET`. Both counts, at the end.
fn settle(clients: &mut [Client], pid: u32, lang: Lang) -> (usize, usize) {
    const QUIET: Duration = Duration::from_millis(1000);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (usize::MAX, usize::MAX);
    let mut since = Instant::now();
    loop {
        for client in clients.iter_mut().filter(|c| !c.answered) {
            match client.reader.read_line(&mut client.line) {
                // read_line keeps what it read before WouldBlock in `line`.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Ok(_) if client.line.ends_with('\n') => client.answered = true,
                other => panic!(
                    "{}: a client was closed or failed before the handoff: {other:?}, \
                     read {:?}",
                    lang.tag(),
                    client.line
                ),
            }
        }
        let answered = clients.iter().filter(|c| c.answered).count();
        let now = (answered, fd_count(pid));
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the incumbent never settled: {answered} answered, {} descriptors",
            lang.tag(),
            now.1
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// handoff-supervisor run as users run it, in a process group of its own.
struct RunningSupervisor {
    child: Child,
    config: PathBuf,
}

impl RunningSupervisor {
    fn trigger(&self, binary: &Path) -> (bool, String) {
        let out = Process::new(SUPERVISOR)
            .args(["trigger", "--quiet", "--config"])
            .arg(&self.config)
            .arg("--binary")
            .arg(binary)
            .output()
            .expect("handoff-supervisor trigger");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text.trim().to_string())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The supervisor's live children.
    fn children(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for task in fs::read_dir(format!("/proc/{}/task", self.pid()))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        pids.retain(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| Some(s.rsplit_once(") ")?.1.split(' ').next()? != "Z"))
                .unwrap_or(false)
        });
        pids
    }
}

impl Drop for RunningSupervisor {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) has no memory effects; the group is the
        // supervisor's own (process_group(0)), the service in it.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above, the whole group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// Handoffs back to back, cycling through every service (kv::LANGS), under four
/// clients (two on fresh connections, two on kept ones): every handoff
/// commits, every old incumbent exits, no request fails, no acknowledged
/// write is lost, and the supervisor's descriptors and memory stay flat.
#[test]
fn soak_handoffs_under_load() {
    use std::os::unix::process::CommandExt;
    let _serial = serial();
    let secs = env_u64("SOAK_SECS");
    let handoffs = env_u64("SOAK_HANDOFFS").unwrap_or(if secs.is_some() { u64::MAX } else { 20 });
    let pace = Duration::from_millis(env_u64("SOAK_PACE_MS").unwrap_or(5));
    let reads = env_u64("SOAK_READS").unwrap_or(1) as u32;
    let pause = Duration::from_millis(env_u64("SOAK_PAUSE_MS").unwrap_or(100));

    // Passed to the supervisor bound (socket activation): no other process
    // can take the port between this bind and the supervisor's start.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let f = Fixture::with_addr(addr.to_string());
    let path = |name: &str| f.path(name);
    let launchers: Vec<(Lang, PathBuf)> = LANGS
        .into_iter()
        .map(|lang| {
            let options = LaunchOptions {
                log: Some(path("service.log")),
                ..LaunchOptions::default()
            };
            (
                lang,
                kv::write_launcher(&path(&format!("kv-{}.sh", lang.short())), lang, &options),
            )
        })
        .collect();
    let config = f.write_config_laid_out(
        &launchers[0].1,
        "",
        &f.absolute_layout(),
        "[timeouts]\ndeadline_secs = 60\ndrain_grace_secs = 5\n",
    );
    let log = fs::File::create(path("supervisor.log")).unwrap();
    let child = activated_supervisor(&listener)
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("handoff-supervisor run");
    drop(listener);
    let supervisor = RunningSupervisor { child, config };
    let deadline = Instant::now() + Duration::from_secs(20);
    while pong(addr).is_none() {
        assert!(Instant::now() < deadline, "the service did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = fs::read_to_string(path("supervisor.log")).unwrap_or_default();
    assert!(
        text.contains("adopted from systemd"),
        "the supervisor did not adopt the listener passed to it:\n{text}"
    );
    let tail = |name: &str| {
        let text = fs::read_to_string(path(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };

    let load = Load::start(
        addr,
        LoadConfig {
            pace,
            reads_per_write: reads,
            key_space: Some(2000),
            ..LoadConfig::default()
        },
    );
    let started = Instant::now();
    let mut done = 0u64;
    let mut slowest = Duration::ZERO;
    let mut total = Duration::ZERO;
    let mut baseline = None;
    let mut samples = Vec::new();
    while done < handoffs && secs.is_none_or(|s| started.elapsed() < Duration::from_secs(s)) {
        let (lang, binary) = &launchers[(done as usize + 1) % launchers.len()];
        let before = pong(addr).map(|(pid, _)| pid);
        let t0 = Instant::now();
        let (ok, text) = supervisor.trigger(binary);
        let took = t0.elapsed();
        assert!(
            ok,
            "handoff {} to {} failed: {text}\n{}\n{}",
            done + 1,
            lang.tag(),
            tail("supervisor.log"),
            tail("service.log")
        );
        done += 1;
        slowest = slowest.max(took);
        total += took;
        // The new incumbent answers, in its language, and the old one is gone.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = pong(addr);
            let children = supervisor.children();
            if now.as_ref().is_some_and(|(pid, tag)| {
                Some(*pid) != before && tag == lang.tag() && children == [*pid]
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after handoff {done}: PING {now:?}, supervisor's children {children:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let sample = (fd_count(supervisor.pid()), rss_kib(supervisor.pid()));
        // After a first full cycle, so everything lazily made exists.
        if done == launchers.len() as u64 {
            baseline = Some(sample);
        }
        samples.push(sample);
        if done.is_multiple_of(50) {
            show(&format!(
                "soak: {done} handoffs in {:.0}s, supervisor {} fds, {} KiB",
                started.elapsed().as_secs_f64(),
                sample.0,
                sample.1
            ));
        }
        std::thread::sleep(pause);
    }
    let elapsed = started.elapsed();
    assert!(
        load.wait_answers(20, Duration::from_secs(10)),
        "no answers after the last handoff"
    );
    let tally = load.stop();
    let lost = load::verify(addr, &tally.keys).expect("verify");
    let (fds_end, rss_end) = (fd_count(supervisor.pid()), rss_kib(supervisor.pid()));
    let (fds_base, rss_base) = baseline.unwrap_or(samples[0]);
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    show(&format!(
        "\nsoak: {done} handoffs ({}) in {:.1}s, {:.2}s each on average, \
         slowest {:.2}s; load: {}, max latency {:.0} ms; {} keys read back, {} lost; \
         supervisor descriptors {fds_base} -> {fds_end}, RSS {rss_base} -> {rss_end} KiB \
         (max {rss_max})\n",
        LANGS.map(Lang::tag).join(" -> "),
        elapsed.as_secs_f64(),
        total.as_secs_f64() / done.max(1) as f64,
        slowest.as_secs_f64(),
        tally.summary(),
        tally.max_latency.as_secs_f64() * 1e3,
        tally.keys.len(),
        lost.len(),
    ));
    assert!(done >= handoffs.min(3), "only {done} handoffs");
    assert!(
        lost.is_empty(),
        "acknowledged writes lost: {:?}",
        &lost[..lost.len().min(10)]
    );
    assert_eq!(
        tally.failed(),
        0,
        "requests failed: {}; {:?}",
        tally.summary(),
        tally.examples
    );
    assert_eq!(fds_end, fds_base, "the supervisor's descriptors grew");
    assert!(
        rss_end <= rss_base + 4096,
        "the supervisor's RSS grew from {rss_base} to {rss_end} KiB"
    );
    drop(supervisor);
}
