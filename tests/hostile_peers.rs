//! Hostile peers on the control and trigger sockets (issue 9): a real
//! cold-started incumbent (tests/services/noop-service, on the C ABI) and a
//! raw client that misbehaves in one way per test. After each offence the
//! incumbent still answers on its listener with the same pid, still holds
//! the data-dir lock at the same generation, has logged a clear error about
//! the offence (a warning naming the offending client's pid), and a normal
//! handoff still commits.
//!
//!     cargo test --release --test hostile_peers -- --nocapture
//!
//! The other-uid tests run their client as uid:gid 65533:65533 (no such user
//! is needed: std's `CommandExt::uid`/`gid`), which takes root. Without root
//! they fail and say so, unless `HANDOFF_SKIP_ROOT_TESTS=1`: then they print
//! that they were skipped and pass.
#![allow(unsafe_code)]

#[path = "common/cli.rs"]
mod cli;
mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use cli::{activated_supervisor, Fixture};
use common::*;
use handoff::frame::{encode_frame, FrameReader, MAX_FRAME_BYTES};
use handoff::lock::{DataDirLock, LockState, GENERATION_FILE};
use handoff::supervisor::{SpawnSpec, Supervisor, Timeouts};
use handoff::{Capabilities, HandoffId, Message, Side};

/// How long any expected event may take on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// A cold-started noop-service under an in-process supervisor; its library
/// log goes to `log`.
struct Incumbent {
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    control: PathBuf,
    log: PathBuf,
    addr: String,
    flags: Vec<String>,
    supervisor: Supervisor,
    reaper: Reaper,
    pid: u32,
    generation: u64,
}

impl Incumbent {
    /// `liveness`: the incumbent's supervisor-liveness timeout (the default
    /// 10 s when None).
    fn start(liveness: Option<Duration>) -> Incumbent {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let control = dir.path().join("control.sock");
        let log = dir.path().join("library.log");
        let (tcp, addr) = tcp_listener();
        let mut flags = vec!["--log-file".to_string(), log.display().to_string()];
        if let Some(liveness) = liveness {
            flags.extend(["--liveness-ms".into(), liveness.as_millis().to_string()]);
        }
        let supervisor = Supervisor::new(&control)
            .with_listener("kv", OwnedFd::from(tcp))
            .unwrap()
            .with_journal(dir.path().join("journal/state.bin"))
            .with_timeouts(Timeouts {
                // Frequent enough for an incumbent with a short liveness timeout.
                heartbeat: Duration::from_millis(200),
                kill_grace: Duration::from_millis(500),
                ..Timeouts::default()
            });
        let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let command = service_command(&noop_service(), &data_dir, &control, &flag_refs);
        let mut reaper = Reaper::default();
        let pid = reaper.keep(supervisor.spawn_cold(&command).unwrap());
        wait_for_pong(&addr, pid, PATIENCE);
        wait_for_path(&control, PATIENCE);
        let generation = read_generation(&data_dir);
        Incumbent {
            dir,
            data_dir,
            control,
            log,
            addr,
            flags,
            supervisor,
            reaper,
            pid,
            generation,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the library's log has a line with every one of `needles`
    /// that was not there before (`seen` lines are skipped); return it.
    fn wait_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.log_text();
            if let Some(line) = text
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needles:?}; the log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like `wait_log`, and the line must be a warning or an error.
    fn wait_warning(&self, needles: &[&str]) -> String {
        let line = self.wait_log(needles);
        assert!(
            is_warning(&line),
            "logged, but not as a warning or an error: {line}"
        );
        line
    }

    /// The clear error every offence must leave: a warning or an error that
    /// names this process as the offending client (its pid) and has every
    /// one of `needles`.
    fn wait_offence(&self, needles: &[&str]) -> String {
        let offender = offender();
        let mut all = vec![offender.as_str()];
        all.extend_from_slice(needles);
        self.wait_warning(&all)
    }

    /// Wait until the incumbent is done with every earlier control
    /// connection, its log lines about them written: it serves one
    /// connection at a time and greets the next only then. The probe answers
    /// the Hello and closes while idle, which ends its own session quietly.
    fn wait_sessions_done(&self) {
        drop(Peer::acked(&self.control, self.pid));
    }

    /// Forget the log so far (the next `wait_log` sees only new lines).
    fn clear_log(&self) {
        std::fs::write(&self.log, "").unwrap();
    }

    /// The incumbent serves on, with its lock, at `generation`. The lock is
    /// waited for: a rollback that takes it back runs after the offending
    /// connection is closed.
    fn assert_unharmed_at(&self, generation: u64) {
        wait_for_pong(&self.addr, self.pid, PATIENCE);
        let held = LockState::Held {
            pid: Some(self.pid),
        };
        let deadline = Instant::now() + PATIENCE;
        while DataDirLock::probe(&self.data_dir).unwrap() != held
            || read_generation(&self.data_dir) != generation
        {
            assert!(
                Instant::now() < deadline,
                "the incumbent does not hold the lock at generation {generation}: {:?} at {}; the log:\n{}",
                DataDirLock::probe(&self.data_dir),
                read_generation(&self.data_dir),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(pong_pid(&self.addr), Some(self.pid), "same process serves");
    }

    fn assert_unharmed(&self) {
        self.assert_unharmed_at(self.generation);
    }

    /// A normal handoff commits after everything the test did.
    fn hand_off(mut self) {
        let flag_refs: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let spec = SpawnSpec {
            command: service_command(&noop_service(), &self.data_dir, &self.control, &flag_refs),
            ..SpawnSpec::new(noop_service())
        };
        let outcome = self.supervisor.perform_handoff(&spec).unwrap();
        assert!(outcome.committed, "{:?}", outcome.abort_reason);
        let successor = self.reaper.keep(outcome.successor.unwrap());
        assert_eq!(self.reaper.wait_exit(self.pid, PATIENCE), Some(0));
        wait_for_pong(&self.addr, successor, PATIENCE);
        assert_eq!(
            DataDirLock::probe(&self.data_dir).unwrap(),
            LockState::Held {
                pid: Some(successor)
            }
        );
        assert!(read_generation(&self.data_dir) > self.generation);
    }
}

/// How the incumbent's log names a session this test process misbehaved in.
fn offender() -> String {
    format!("handoff session with pid {} ended", std::process::id())
}

/// A line of the noop service's log (`noop-service[PID] level=N message`)
/// at the library's level error (1) or warn (2).
fn is_warning(line: &str) -> bool {
    matches!(line.split_whitespace().nth(1), Some("level=1" | "level=2"))
}

fn read_generation(data_dir: &Path) -> u64 {
    let text = std::fs::read_to_string(data_dir.join(GENERATION_FILE)).unwrap();
    text.trim().parse().unwrap()
}

/// A raw client of the control socket that says what the test tells it to.
struct Peer {
    stream: UnixStream,
    reader: FrameReader,
}

impl Peer {
    fn connect(path: &Path) -> Peer {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Peer {
            stream,
            reader: FrameReader::new(),
        }
    }

    /// Connect and read the incumbent's Hello.
    fn greeted(path: &Path, pid: u32) -> Peer {
        let mut peer = Peer::connect(path);
        match peer.recv() {
            Message::Hello {
                role: Side::Incumbent,
                pid: announced,
                ..
            } => assert_eq!(announced, pid),
            other => panic!("expected the incumbent's Hello, got {other:?}"),
        }
        peer
    }

    /// Connect, read Hello and answer a valid HelloAck.
    fn acked(path: &Path, pid: u32) -> Peer {
        let mut peer = Peer::greeted(path, pid);
        peer.send(&hello_ack());
        peer
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn send(&mut self, message: &Message) {
        self.send_raw(&frame(message));
    }

    /// The next frame the incumbent sends, heartbeats included.
    fn recv(&mut self) -> Message {
        self.reader
            .read_frame(&mut self.stream)
            .unwrap_or_else(|e| panic!("no frame from the incumbent: {e}"))
            .message
    }

    /// The next frame other than a heartbeat.
    fn recv_answer(&mut self) -> Message {
        loop {
            match self.recv() {
                Message::Heartbeat { .. } => {}
                other => return other,
            }
        }
    }

    /// Wait for the incumbent to close the connection (skipping frames it
    /// still sends); how long it took.
    fn expect_closed(&mut self) -> Duration {
        let started = Instant::now();
        let mut chunk = [0u8; 4096];
        loop {
            // Bounded even when the incumbent keeps sending (echoed heartbeats).
            assert!(
                started.elapsed() < 3 * PATIENCE,
                "the incumbent did not close the connection in {:?}",
                3 * PATIENCE
            );
            match self.stream.read(&mut chunk) {
                Ok(0) => return started.elapsed(),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return started.elapsed(),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("the incumbent did not close the connection: {e}"),
            }
        }
    }
}

fn frame(message: &Message) -> Vec<u8> {
    encode_frame(1, message).unwrap()
}

fn hello_ack() -> Message {
    Message::HelloAck {
        proto_version_chosen: 1,
        handoff_id: HandoffId::random(),
    }
}

fn prepare(handoff_id: HandoffId) -> Message {
    Message::PrepareHandoff {
        handoff_id,
        successor_pid: 1,
        deadline_ms: 30_000,
        drain_grace_ms: 10_000,
    }
}

/// Drive the incumbent to Drained under `id`.
fn drain(peer: &mut Peer, id: HandoffId) {
    peer.send(&prepare(id));
    match peer.recv_answer() {
        Message::Drained { .. } => {}
        other => panic!("expected Drained, got {other:?}"),
    }
}

#[test]
fn garbage_bytes_are_refused_and_the_incumbent_serves_on() {
    let incumbent = Incumbent::start(None);
    let cases: [(&str, bool, &[u8], &str); 4] = [
        // An HTTP request on the control socket: "GET " is a length of 541 MB.
        (
            "http",
            false,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "frame too large",
        ),
        (
            "zero length",
            false,
            &[0, 0, 0, 0, 0xde, 0xad],
            "malformed frame",
        ),
        // A well-framed body that is no message (index 99).
        (
            "unknown message",
            true,
            &[3, 0, 0, 0, 1, 0, 99],
            "unknown message index 99",
        ),
        // A HelloAck whose id is cut short inside a well-formed frame.
        (
            "bad body",
            true,
            &[7, 0, 0, 0, 1, 0, 1, 1, 16, 0xaa, 0xbb],
            "cannot decode message",
        ),
    ];
    for (name, after_ack, bytes, logged) in cases {
        incumbent.clear_log();
        let mut peer = if after_ack {
            Peer::acked(&incumbent.control, incumbent.pid)
        } else {
            Peer::greeted(&incumbent.control, incumbent.pid)
        };
        peer.send_raw(bytes);
        peer.expect_closed();
        let line = incumbent.wait_offence(&[logged]);
        eprintln!("{name}: {line}");
        incumbent.assert_unharmed();
    }
    incumbent.hand_off();
}

#[test]
fn an_oversize_length_is_refused_without_waiting_for_the_body() {
    let incumbent = Incumbent::start(None);
    for (after_ack, len) in [
        (false, MAX_FRAME_BYTES + 1),
        (true, MAX_FRAME_BYTES + 1),
        (true, u32::MAX),
    ] {
        incumbent.clear_log();
        let mut peer = if after_ack {
            Peer::acked(&incumbent.control, incumbent.pid)
        } else {
            Peer::greeted(&incumbent.control, incumbent.pid)
        };
        // Only the length and a few bytes: the refusal must not wait for
        // (or buffer) the announced megabytes.
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend([1, 0, 13]);
        peer.send_raw(&bytes);
        // Closed for the length (had it waited for the body, the offence
        // would be a silent supervisor, after the liveness timeout).
        let took = peer.expect_closed();
        let line = incumbent.wait_offence(&["frame too large", &len.to_string()]);
        eprintln!("length {len}, closed after {took:?}: {line}");
        incumbent.assert_unharmed();
    }
    incumbent.hand_off();
}

/// Not an attack: a slow peer that writes a byte at a time must be read
/// correctly, a frame kept whole across any number of short reads.
#[test]
fn frames_split_byte_by_byte_with_pauses_are_read_whole() {
    let incumbent = Incumbent::start(None);
    let mut peer = Peer::greeted(&incumbent.control, incumbent.pid);
    let trickle = |peer: &mut Peer, message: &Message| {
        for byte in frame(message) {
            peer.send_raw(&[byte]);
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    trickle(&mut peer, &hello_ack());
    trickle(&mut peer, &Message::Heartbeat { ts_ms: 42 });
    assert!(
        matches!(peer.recv(), Message::Heartbeat { .. }),
        "heartbeat echoed"
    );
    let id = HandoffId::random();
    trickle(&mut peer, &prepare(id));
    assert!(matches!(peer.recv_answer(), Message::Drained { .. }));
    trickle(
        &mut peer,
        &Message::Abort {
            handoff_id: id,
            reason: "split byte by byte".into(),
        },
    );
    incumbent.wait_log(&[&id.to_string(), "aborted by the supervisor; resuming"]);
    drop(peer);
    // The close is handled (quietly, if all went well) before the next
    // connection is greeted.
    incumbent.wait_sessions_done();
    incumbent.assert_unharmed();
    let log = incumbent.log_text();
    assert!(
        !log.contains("handoff session") && !log.lines().any(is_warning),
        "a slow peer was refused:\n{log}"
    );
    incumbent.hand_off();
}

#[test]
fn a_wrong_handoff_id_on_seal_request_or_commit_is_refused() {
    let incumbent = Incumbent::start(None);
    let (id, other) = (HandoffId::random(), HandoffId::random());

    // SealRequest for another handoff while drained: refused, the drain is
    // rolled back, the lock was never released.
    let mut peer = Peer::acked(&incumbent.control, incumbent.pid);
    drain(&mut peer, id);
    peer.send(&Message::SealRequest { handoff_id: other });
    peer.expect_closed();
    let line = incumbent.wait_offence(&[
        "unexpected SealRequest",
        &other.to_string(),
        "while drained",
        "rolling back",
    ]);
    eprintln!("{line}");
    incumbent.assert_unharmed();

    // Abort for another handoff while drained: not this handoff's abort,
    // so refused as well (the drain is rolled back all the same).
    incumbent.clear_log();
    let mut peer = Peer::acked(&incumbent.control, incumbent.pid);
    drain(&mut peer, id);
    peer.send(&Message::Abort {
        handoff_id: other,
        reason: "not yours".into(),
    });
    peer.expect_closed();
    let line = incumbent.wait_offence(&[
        "unexpected Abort",
        &other.to_string(),
        "while drained",
        "rolling back",
    ]);
    eprintln!("{line}");
    incumbent.assert_unharmed();

    // Commit for another handoff after a real seal (the lock released): the
    // incumbent refuses to step down, takes its lock back under a new
    // generation and serves on.
    incumbent.clear_log();
    let mut peer = Peer::acked(&incumbent.control, incumbent.pid);
    drain(&mut peer, id);
    peer.send(&Message::SealRequest { handoff_id: id });
    assert!(matches!(peer.recv_answer(), Message::SealComplete { .. }));
    assert_eq!(
        DataDirLock::probe(&incumbent.data_dir).unwrap(),
        LockState::Free
    );
    peer.send(&Message::Commit { handoff_id: other });
    peer.expect_closed();
    let line = incumbent.wait_offence(&[
        "unexpected Commit",
        &other.to_string(),
        "while sealed",
        "rolling back",
    ]);
    eprintln!("{line}");
    let mut incumbent = incumbent;
    incumbent.generation += 1;
    incumbent.assert_unharmed();
    incumbent.hand_off();
}

#[test]
fn commit_before_seal_is_refused() {
    let incumbent = Incumbent::start(None);
    // Idle: Commit out of nowhere.
    let mut peer = Peer::acked(&incumbent.control, incumbent.pid);
    let id = HandoffId::random();
    peer.send(&Message::Commit { handoff_id: id });
    peer.expect_closed();
    eprintln!(
        "{}",
        incumbent.wait_offence(&[
            "unexpected Commit",
            &id.to_string(),
            "while idle",
            "nothing to roll back",
        ])
    );
    incumbent.assert_unharmed();

    // Drained, not sealed: Commit of the very handoff in progress.
    incumbent.clear_log();
    let mut peer = Peer::acked(&incumbent.control, incumbent.pid);
    drain(&mut peer, id);
    peer.send(&Message::Commit { handoff_id: id });
    peer.expect_closed();
    eprintln!(
        "{}",
        incumbent.wait_offence(&[
            "unexpected Commit",
            &id.to_string(),
            "while drained",
            "rolling back",
        ])
    );
    incumbent.assert_unharmed();
    incumbent.hand_off();
}

#[test]
fn messages_in_the_wrong_direction_are_refused() {
    let incumbent = Incumbent::start(None);
    let id = HandoffId::random();
    let hello = Message::Hello {
        role: Side::Successor,
        pid: 1,
        build_id: b"hostile".to_vec(),
        proto_min: 1,
        proto_max: 1,
        capabilities: Capabilities::default(),
    };

    // A Hello where the HelloAck belongs.
    let mut peer = Peer::greeted(&incumbent.control, incumbent.pid);
    peer.send(&hello);
    peer.expect_closed();
    eprintln!(
        "{}",
        incumbent.wait_offence(&["expected HelloAck, got Hello", "nothing to roll back"])
    );
    incumbent.assert_unharmed();

    // Messages only an incumbent or a successor sends, to the incumbent.
    let wrong_way = [
        hello,
        hello_ack(),
        Message::Drained {
            open_conns_remaining: 0,
            accept_closed: true,
        },
        Message::SealProgress {
            shards_sealed: 1,
            shards_total: 2,
            last_revision: 3,
        },
        Message::SealComplete {
            handoff_id: id,
            last_revision_per_shard: vec![1],
            data_dir_fingerprint: [7; 32],
        },
        Message::SealFailed {
            handoff_id: id,
            error: "no".into(),
            partial_state: String::new(),
        },
        Message::Begin { handoff_id: id },
        Message::Ready {
            handoff_id: id,
            listening_on: vec!["tcp://127.0.0.1:1".into()],
            healthz_ok: true,
            advertised_revision_per_shard: vec![],
        },
    ];
    for message in wrong_way {
        let name = message.kind().name();
        incumbent.clear_log();
        let mut peer = Peer::acked(&incumbent.control, incumbent.pid);
        peer.send(&message);
        peer.expect_closed();
        eprintln!(
            "{}",
            incumbent.wait_offence(&[&format!("unexpected {name}"), "while idle"])
        );
        incumbent.assert_unharmed();
    }

    // Begin while drained (a supervisor that mixed up its peers).
    incumbent.clear_log();
    let mut peer = Peer::acked(&incumbent.control, incumbent.pid);
    drain(&mut peer, id);
    peer.send(&Message::Begin { handoff_id: id });
    peer.expect_closed();
    eprintln!(
        "{}",
        incumbent.wait_offence(&[
            "unexpected Begin",
            &id.to_string(),
            "while drained",
            "rolling back",
        ])
    );
    incumbent.assert_unharmed();
    incumbent.hand_off();
}

/// Half a frame, then silence: the partial frame does not hold the control
/// socket (nor a drained service) hostage beyond the liveness timeout.
#[test]
fn a_peer_that_stalls_mid_frame_is_timed_out() {
    let liveness = Duration::from_millis(1000);
    let incumbent = Incumbent::start(Some(liveness));
    let heartbeat = frame(&Message::Heartbeat { ts_ms: 1 });
    let id = HandoffId::random();
    let seal = frame(&Message::SealRequest { handoff_id: id });

    for drained in [false, true] {
        incumbent.clear_log();
        // The incumbent's liveness timeout runs from when it has handled the
        // last whole frame (the HelloAck, or the PrepareHandoff once drained);
        // this clock starts before that frame is sent, so a timeout that is
        // kept is never measured short, however loaded the machine.
        let mut peer = if drained {
            Peer::acked(&incumbent.control, incumbent.pid)
        } else {
            Peer::greeted(&incumbent.control, incumbent.pid)
        };
        let started = Instant::now();
        let half = if drained {
            drain(&mut peer, id);
            &seal[..seal.len() / 2]
        } else {
            peer.send(&hello_ack());
            &heartbeat[..heartbeat.len() / 2]
        };
        peer.send_raw(half);
        peer.expect_closed();
        let took = started.elapsed();
        // A lower bound only: the timeout is not cut short (the offence
        // line below says which timeout closed it).
        assert!(
            took >= liveness,
            "closed after {took:?} (liveness {liveness:?})"
        );
        let line = incumbent.wait_offence(&["supervisor silent for 1s"]);
        eprintln!("drained={drained}, closed after {took:?}: {line}");
        incumbent.assert_unharmed();
    }

    // Silence before the HelloAck: the Hello timeout ends it. It runs from
    // the Hello, sent after the connect this clock precedes.
    let hello_timeout = Duration::from_secs(5);
    incumbent.clear_log();
    let started = Instant::now();
    let mut peer = Peer::greeted(&incumbent.control, incumbent.pid);
    peer.send_raw(&frame(&hello_ack())[..3]);
    peer.expect_closed();
    let took = started.elapsed();
    eprintln!("no HelloAck, closed after {took:?}");
    assert!(
        took >= hello_timeout,
        "closed after {took:?} (Hello timeout {hello_timeout:?})"
    );
    eprintln!(
        "{}",
        incumbent.wait_offence(&["timed out", "nothing to roll back"])
    );
    incumbent.assert_unharmed();
    incumbent.hand_off();
}

// ---- clients of the control socket that do not run the handoff ----------

/// Heartbeats on a connection of its own every 200 ms (its pacing, not a
/// synchronisation), until dropped: a client that keeps its session alive.
struct KeepAlive {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeepAlive {
    fn on(peer: &Peer) -> KeepAlive {
        let mut stream = peer.stream.try_clone().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if stream
                    .write_all(&frame(&Message::Heartbeat { ts_ms: 1 }))
                    .is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        KeepAlive {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn idle_clients_that_keep_their_sessions_alive_do_not_delay_a_handoff() {
    // Invariant 8: a client of the control socket that is not running a
    // handoff cannot block or delay one (a monitoring probe, a stray tool).
    let incumbent = Incumbent::start(None);
    let idle: Vec<Peer> = (0..3)
        .map(|_| Peer::acked(&incumbent.control, incumbent.pid))
        .collect();
    let _alive: Vec<KeepAlive> = idle.iter().map(KeepAlive::on).collect();
    incumbent.hand_off();
}

#[test]
fn a_client_that_prepares_a_handoff_and_only_heartbeats_cannot_keep_the_incumbent_drained() {
    // Invariant 8: the incumbent resumes on its own once PrepareHandoff's
    // deadline passes without a Commit, whoever keeps the session alive.
    let deadline_ms = 1_000;
    let prepare_short = |id| Message::PrepareHandoff {
        handoff_id: id,
        successor_pid: 1,
        deadline_ms,
        drain_grace_ms: deadline_ms,
    };
    let mut incumbent = Incumbent::start(None);
    for sealed in [false, true] {
        incumbent.clear_log();
        let mut peer = Peer::acked(&incumbent.control, incumbent.pid);
        let id = HandoffId::random();
        peer.send(&prepare_short(id));
        assert!(matches!(peer.recv_answer(), Message::Drained { .. }));
        if sealed {
            peer.send(&Message::SealRequest { handoff_id: id });
            assert!(matches!(peer.recv_answer(), Message::SealComplete { .. }));
            assert_eq!(
                DataDirLock::probe(&incumbent.data_dir).unwrap(),
                LockState::Free
            );
        }
        let alive = KeepAlive::on(&peer);
        peer.expect_closed();
        drop(alive);
        let line = incumbent.wait_offence(&["deadline passed without a Commit", "rolling back"]);
        eprintln!("sealed={sealed}: {line}");
        if sealed {
            // It took its lock back, under a new generation.
            incumbent.generation += 1;
        }
        incumbent.assert_unharmed();
    }
    incumbent.hand_off();
}

/// A successor that announced Ready has placed its control socket at the
/// path before the supervisor stopped it (a Ready that lost the race with
/// the deadline): when the incumbent takes its lock back it rebinds the
/// path, or nobody could reach it again.
#[test]
fn an_incumbent_that_takes_its_lock_back_rebinds_its_control_socket() {
    let mut incumbent = Incumbent::start(None);
    let mut peer = Peer::acked(&incumbent.control, incumbent.pid);
    let id = HandoffId::random();
    drain(&mut peer, id);
    peer.send(&Message::SealRequest { handoff_id: id });
    assert!(matches!(peer.recv_answer(), Message::SealComplete { .. }));
    // The stopped successor's socket: bound, renamed over the path, dead.
    let planted = incumbent.dir.path().join("successor.sock");
    let dead = std::os::unix::net::UnixListener::bind(&planted).unwrap();
    std::fs::rename(&planted, &incumbent.control).unwrap();
    drop(dead);
    assert_eq!(
        UnixStream::connect(&incumbent.control).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    peer.send(&Message::Abort {
        handoff_id: id,
        reason: "successor stopped after its Ready".into(),
    });
    incumbent.generation += 1;
    incumbent.assert_unharmed();
    // The control path leads to the incumbent again.
    drop(Peer::acked(&incumbent.control, incumbent.pid));
    drop(peer);
    incumbent.hand_off();
}

// ---- another uid ---------------------------------------------------------

/// The uid and gid the other-uid tests' client runs as: numbers no user
/// needs to have (std's `CommandExt::uid`/`gid` call setgid and setuid with
/// them), neither root nor the incumbent's.
const OTHER_UID: u32 = 65533;
const OTHER_GID: u32 = 65533;

/// `OTHER_UID` and `OTHER_GID`, or None when not root and the environment
/// asks to skip (`HANDOFF_SKIP_ROOT_TESTS=1`); without root otherwise, the
/// test fails and says why.
fn other_uid(test: &str) -> Option<(u32, u32)> {
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return Some((OTHER_UID, OTHER_GID));
    }
    if std::env::var_os("HANDOFF_SKIP_ROOT_TESTS").is_some_and(|v| v == "1") {
        // Past the harness's capture: a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: SKIPPED (HANDOFF_SKIP_ROOT_TESTS=1): it needs root (euid is {euid})"
        );
        return None;
    }
    panic!(
        "{test} needs root: it runs a client as uid {OTHER_UID}, which takes \
         CAP_SETUID and CAP_SETGID (euid is {euid}). Run the tests as root, or set \
         HANDOFF_SKIP_ROOT_TESTS=1 to skip the other-uid tests."
    );
}

/// Connect to the Unix socket at `path` as `uid`:`gid`, send `request`, and
/// give back everything the server answered before closing; Err is the
/// connect(2) failure. The connect runs in the child between fork and
/// exec (after std has dropped to the uid), then `cat` copies the socket to
/// our pipe.
fn talk_as(uid: u32, gid: u32, path: &Path, request: &[u8]) -> std::io::Result<Vec<u8>> {
    // Everything the child touches is prepared here: no allocation after fork.
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    assert!(bytes.len() < addr.sun_path.len());
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let request = request.to_vec();
    let mut command = Process::new("cat");
    command
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only makes system calls on memory prepared above.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, std::ptr::addr_of!(addr).cast(), len) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A server that refuses at once may close before the request
            // arrives: no SIGPIPE, no failure; what it said is still read.
            if !request.is_empty() {
                libc::send(
                    fd,
                    request.as_ptr().cast(),
                    request.len(),
                    libc::MSG_NOSIGNAL,
                );
            }
            if libc::dup2(fd, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let mut answer = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut answer)
        .unwrap();
    // cat may end on ECONNRESET: a server that refuses without reading the
    // request resets the connection. What it copied before is the answer.
    let status = child.wait().unwrap();
    let mut errors = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut errors)
        .unwrap();
    eprintln!(
        "cat as uid {uid}: {status}, stderr {errors:?}, {} bytes",
        answer.len()
    );
    Ok(answer)
}

/// Let other users reach sockets in `dir` (they still need the socket's
/// own permission).
fn open_dir(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
}

#[test]
fn another_uid_cannot_use_the_control_socket() {
    let Some((uid, gid)) = other_uid("another_uid_cannot_use_the_control_socket") else {
        return;
    };
    let incumbent = Incumbent::start(None);
    open_dir(incumbent.dir.path());
    let mode = std::fs::metadata(&incumbent.control)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode");

    // The socket's mode refuses the connection in the kernel.
    let hello_ack = frame(&hello_ack());
    match talk_as(uid, gid, &incumbent.control, &hello_ack) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}"),
        Ok(answer) => panic!("uid {uid} connected to a 0600 socket: {answer:?}"),
    }
    incumbent.assert_unharmed();

    // With the mode opened by mistake, the library's SO_PEERCRED check
    // (invariant 9) still refuses: no Hello, the connection closed at once.
    std::fs::set_permissions(&incumbent.control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let answer = talk_as(uid, gid, &incumbent.control, &hello_ack).expect("connect");
    assert!(answer.is_empty(), "the other uid was answered: {answer:?}");
    // Refused before any session: the line names the uid (the library does
    // not log the pid there).
    let line = incumbent.wait_warning(&["refused control connection", &format!("peer uid {uid} ")]);
    eprintln!("{line}");
    incumbent.assert_unharmed();
    incumbent.hand_off();
}

#[test]
fn another_uid_cannot_use_the_trigger_socket() {
    let Some((uid, gid)) = other_uid("another_uid_cannot_use_the_trigger_socket") else {
        return;
    };
    // Passed to the supervisor bound (socket activation): no other process
    // can take the port between this bind and the supervisor's start.
    let (listener, addr) = tcp_listener();
    let f = Fixture::with_addr(addr.clone());
    f.write_config_for(&noop_service(), "", "");
    // Dropping `supervisor` stops it as an operator would (SIGTERM: it stops
    // its service, which runs in a process group of its own), then makes
    // sure of the supervisor's group.
    let supervisor = f.launch(activated_supervisor(&listener), |_| {});
    drop(listener);

    let trigger = f.path("trigger.sock");
    let data_dir = f.path("data");
    wait_for_path(&trigger, PATIENCE);
    let deadline = Instant::now() + PATIENCE;
    let pid = loop {
        if let Some(pid) = pong_pid(&addr) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the service never answered");
        std::thread::sleep(Duration::from_millis(20));
    };
    let generation = read_generation(&data_dir);
    let text = supervisor.log_text();
    assert!(
        text.contains("listener kv (tcp://") && text.contains("adopted from systemd"),
        "the supervisor did not adopt the listener passed to it:\n{text}"
    );
    let unharmed = || {
        assert_eq!(pong_pid(&addr), Some(pid));
        assert_eq!(
            DataDirLock::probe(&data_dir).unwrap(),
            LockState::Held { pid: Some(pid) }
        );
        assert_eq!(read_generation(&data_dir), generation);
        assert!(
            supervisor_alive(supervisor.child.id()),
            "the supervisor is running"
        );
    };
    open_dir(f.dir.path());
    let mode = std::fs::metadata(&trigger).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "trigger socket mode");

    match talk_as(uid, gid, &trigger, b"handoff\n") {
        Err(e) => assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}"),
        Ok(answer) => panic!("uid {uid} connected to a 0600 socket: {answer:?}"),
    }
    unharmed();

    std::fs::set_permissions(&trigger, std::fs::Permissions::from_mode(0o666)).unwrap();
    for request in [&b"handoff\n"[..], b"status json\n"] {
        let answer = talk_as(uid, gid, &trigger, request).expect("connect");
        let answer = String::from_utf8_lossy(&answer);
        eprintln!(
            "uid {uid} sent {:?}, answered {answer:?}",
            String::from_utf8_lossy(request)
        );
        assert!(
            answer.starts_with("error ") && answer.contains(&format!("peer uid {uid} ")),
            "uid {uid} was answered {answer:?}"
        );
    }
    let refused = format!("trigger socket: refused a connection: peer uid {uid} ");
    let deadline = Instant::now() + PATIENCE;
    let line = loop {
        let text = supervisor.log_text();
        if let Some(line) = text.lines().find(|line| line.contains(&refused)) {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no refusal in the supervisor's log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // handoff-supervisor's human log format: `TIME handoff-supervisor[PID]
    // LEVEL: message`, or `<PRIORITY>message` for journald.
    assert!(
        ["] warn: ", "] error: "].iter().any(|l| line.contains(l))
            || ["<3>", "<4>"].iter().any(|p| line.starts_with(p)),
        "the refusal is not a warning: {line}"
    );
    unharmed();

    // The supervisor's own user still hands off.
    let out = f.cli(&["trigger"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "trigger: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + PATIENCE;
    while pong_pid(&addr).is_none_or(|p| p == pid) {
        assert!(
            Instant::now() < deadline,
            "no new incumbent after the trigger"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(read_generation(&data_dir) > generation);
    // Dropping `supervisor` stops it, and with it the service.
}

fn supervisor_alive(pid: u32) -> bool {
    handoff::spawn::pid_alive(pid)
}
