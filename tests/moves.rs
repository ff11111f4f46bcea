//! Protocol v2 end to end: client connections and a named descriptor (an
//! in-memory table in a memfd) move from the incumbent to its successor
//! (docs/protocol.md), with real processes (tests/peers/mover_service.rs,
//! example `peer-mover`), our supervisor, real TCP connections and real
//! descriptor passing.
//!
//! Checked: an idle connection, a pipelining one and one holding half a
//! request line stay open across handoffs (no EOF, no reset, no resend),
//! each answered by every generation in turn, every answer right and in
//! order; the table moves without a disk; a successor that exits after
//! adopting what moved, or an incumbent whose seal fails after they moved,
//! rolls back with every connection going on with the incumbent, nothing
//! lost, nothing answered twice; clients that half-close or reset while
//! their connection is in transit are answered and closed by whichever
//! process keeps it, the other's copy closed too; and a v1 peer still gets
//! v1 (the connections closed by the drain).

#[path = "peers/harness.rs"]
mod harness;
#[path = "common/line_client.rs"]
mod line_client;

use std::io::BufRead;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use handoff::spawn::Command;
use handoff::supervisor::{Cause, Party, SpawnSpec, Supervisor};
use harness::{peer_args, peer_binary, wait_serving, Impl, Procs};
use line_client::LineClient;

const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Service {
    procs: Procs,
    tmp: tempfile::TempDir,
    data_dir: PathBuf,
    control: PathBuf,
    addr: SocketAddr,
    supervisor: Supervisor,
}

impl Service {
    fn start() -> (Service, u32) {
        Service::start_as(Impl::Mover, &[])
    }

    /// The first generation is `which`, given `extra` arguments.
    fn start_as(which: Impl, extra: &[&str]) -> (Service, u32) {
        let tmp = tempfile::Builder::new()
            .prefix("moves-")
            .tempdir()
            .expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let control = tmp.path().join("control.sock");
        let supervisor = Supervisor::new(&control)
            .with_listener("kv", OwnedFd::from(listener))
            .expect("add listener")
            .with_journal(tmp.path().join("journal/state.bin"));
        let mut service = Service {
            procs: Procs::default(),
            data_dir: tmp.path().join("data"),
            control,
            addr,
            supervisor,
            tmp,
        };
        let child = service
            .supervisor
            .spawn_cold(&service.spec(which, extra).command)
            .expect("spawn_cold");
        let pid = service.procs.add_ours(child);
        service.wait_serving(pid, which);
        (service, pid)
    }

    fn spec(&self, which: Impl, extra: &[&str]) -> SpawnSpec {
        let mut args = peer_args(&self.data_dir, &self.control);
        args.extend(extra.iter().map(|s| s.to_string()));
        SpawnSpec {
            command: Command {
                binary: peer_binary(which),
                args: args.into_iter().map(Into::into).collect(),
                env: Vec::new(),
            },
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(10),
        }
    }

    fn wait_serving(&self, pid: u32, which: Impl) {
        wait_serving(self.addr, &self.data_dir, &self.control, None, pid, which);
    }

    /// A committed handoff to `which`: the new pid (the old one exited 0).
    fn hand_off(&mut self, old: u32, which: Impl) -> u32 {
        let outcome = self
            .supervisor
            .perform_handoff(&self.spec(which, &[]))
            .expect("perform_handoff");
        let new = outcome.successor.map(|child| self.procs.add_ours(child));
        assert!(outcome.committed, "rolled back: {:?}", outcome.abort_reason);
        assert_eq!(
            self.procs.wait_exit(old, EXIT_TIMEOUT),
            Ok(0),
            "the old incumbent"
        );
        let new = new.expect("a committed outcome has its successor");
        self.wait_serving(new, which);
        new
    }
}

/// Every kind of kept connection, and the table, across four handoffs.
#[test]
fn connections_and_an_in_memory_table_survive_handoffs() {
    let (mut service, mut pid) = Service::start();
    let mut idle = LineClient::connect(service.addr, IO_TIMEOUT);
    let mut pipelining = LineClient::connect(service.addr, IO_TIMEOUT);
    let mut half = LineClient::connect(service.addr, IO_TIMEOUT);
    assert_eq!(idle.ping().0, pid);
    assert_eq!(pipelining.ping().0, pid);
    assert_eq!(half.ping().0, pid);
    let mut written = 0;
    for generation in 0..4 {
        // Pipelined: requests sent, answers not yet read, when the handoff
        // comes; then read back in order.
        for i in 0..20 {
            pipelining.send(&format!("SET k{} v{}\n", written + i, written + i));
        }
        // Half a request line, completed after the handoff.
        half.send("GET k");
        let new = service.hand_off(pid, Impl::Mover);
        assert_ne!(new, pid);
        for _ in 0..20 {
            assert_eq!(pipelining.line(), "OK");
        }
        written += 20;
        half.send("0\n");
        assert_eq!(half.line(), "VALUE v0", "generation {generation}");
        // Every connection is served by the new process now.
        assert_eq!(idle.ping().0, new, "the idle connection");
        assert_eq!(pipelining.ping().0, new, "the pipelining connection");
        assert_eq!(half.ping().0, new, "the half-line connection");
        // The table came along in its memfd: every write reads back.
        for i in 0..written {
            assert_eq!(pipelining.ask(&format!("GET k{i}")), format!("VALUE v{i}"));
        }
        pid = new;
    }
}

/// The successor exits after it adopted the connections and the table,
/// before Ready: the handoff rolls back, and every connection goes on with
/// the incumbent with nothing lost or answered twice; the next handoff
/// moves them again.
#[test]
fn a_successor_that_exits_after_adopting_rolls_everything_back() {
    let (mut service, pid) = Service::start();
    let mut pipelining = LineClient::connect(service.addr, IO_TIMEOUT);
    let mut half = LineClient::connect(service.addr, IO_TIMEOUT);
    assert_eq!(pipelining.ask("SET before 1"), "OK");
    for i in 0..10 {
        pipelining.send(&format!("SET p{i} {i}\n"));
    }
    half.send("GET bef");
    let outcome = service
        .supervisor
        .perform_handoff(&service.spec(Impl::Mover, &["--exit-after-adopt"]))
        .expect("perform_handoff");
    assert!(
        !outcome.committed,
        "a successor that exited before Ready committed"
    );
    let abort = outcome.abort.expect("a reason");
    assert_eq!(abort.party, Party::Successor, "{abort:?}");
    assert_eq!(abort.cause, Cause::Exited, "{abort:?}");
    // The incumbent answers everything, once, in order.
    for _ in 0..10 {
        assert_eq!(pipelining.line(), "OK");
    }
    half.send("ore\n");
    assert_eq!(half.line(), "VALUE 1");
    assert_eq!(pipelining.ping().0, pid);
    assert_eq!(half.ping().0, pid);
    for i in 0..10 {
        assert_eq!(pipelining.ask(&format!("GET p{i}")), format!("VALUE {i}"));
    }
    let new = service.hand_off(pid, Impl::Mover);
    assert_eq!(pipelining.ping().0, new);
    assert_eq!(half.ask("GET p9"), "VALUE 9");
}

/// The incumbent's seal fails after its connections and its table moved
/// to the successor: the handoff rolls back, the successor's copies are
/// dropped, and every connection goes on with the incumbent (its pipelined
/// requests answered once, in order; its half line completed); the next
/// handoff moves them.
#[test]
fn a_seal_that_fails_after_the_descriptors_moved_rolls_everything_back() {
    let (mut service, pid) = Service::start_as(Impl::Mover, &["--fail-first-seal"]);
    let mut pipelining = LineClient::connect(service.addr, IO_TIMEOUT);
    let mut half = LineClient::connect(service.addr, IO_TIMEOUT);
    let mut idle = LineClient::connect(service.addr, IO_TIMEOUT);
    assert_eq!(pipelining.ask("SET before 1"), "OK");
    assert_eq!(idle.ping().0, pid);
    for i in 0..10 {
        pipelining.send(&format!("SET p{i} {i}\n"));
    }
    half.send("GET bef");
    let outcome = service
        .supervisor
        .perform_handoff(&service.spec(Impl::Mover, &[]))
        .expect("perform_handoff");
    assert!(!outcome.committed, "committed although the seal failed");
    let abort = outcome.abort.expect("a reason");
    assert_eq!(
        (abort.party, abort.cause),
        (Party::Incumbent, Cause::SealFailed),
        "{abort:?}"
    );
    assert!(abort.detail.contains("on purpose"), "{}", abort.detail);
    if let Some(child) = outcome.successor {
        let successor = service.procs.add_ours(child);
        assert!(
            service.procs.wait_exit(successor, EXIT_TIMEOUT).is_ok(),
            "the successor given up did not exit"
        );
    }
    for _ in 0..10 {
        assert_eq!(pipelining.line(), "OK");
    }
    half.send("ore\n");
    assert_eq!(half.line(), "VALUE 1");
    assert_eq!(
        idle.ping().0,
        pid,
        "the idle connection, after the rollback"
    );
    assert_eq!(pipelining.ping().0, pid);
    for i in 0..10 {
        assert_eq!(pipelining.ask(&format!("GET p{i}")), format!("VALUE {i}"));
    }
    let new = service.hand_off(pid, Impl::Mover);
    assert_eq!(idle.ping().0, new, "moved by the next handoff");
    assert_eq!(half.ask("GET p9"), "VALUE 9");
}

/// Clients that go away while their connections are in transit (moved by
/// the incumbent, received by the successor, not yet adopted): one sends a
/// request and half-closes, one half-closes idle, one resets. Whichever
/// process ends up with them (the successor on a commit, the incumbent on
/// a rollback) answers what was asked and closes them: the client reads
/// its answer then EOF, which proves that both processes closed their copy
/// (the socket sends FIN only when its last descriptor closes). The kept
/// connection goes on, and the next handoff still commits.
fn clients_leaving_mid_transfer(rollback: bool) {
    let (mut service, pid) = Service::start();
    let addr = service.addr;
    let mut kept = LineClient::connect(addr, IO_TIMEOUT);
    let mut asking = LineClient::connect(addr, IO_TIMEOUT);
    let mut idle = LineClient::connect(addr, IO_TIMEOUT);
    let mut resetting = LineClient::connect(addr, IO_TIMEOUT);
    assert_eq!(kept.ask("SET before 1"), "OK");
    for client in [&mut asking, &mut idle, &mut resetting] {
        assert_eq!(client.ping().0, pid);
    }
    let go = service.tmp.path().join("go");
    let waiting = service.tmp.path().join("go.waiting");
    let go_arg = go.to_string_lossy().into_owned();
    let mut extra = vec!["--pause-before-adopt", go_arg.as_str()];
    if rollback {
        extra.push("--exit-after-adopt");
    }
    let spec = service.spec(Impl::Mover, &extra);
    let supervisor = &mut service.supervisor;
    let outcome = std::thread::scope(|scope| {
        let handoff = scope.spawn(|| supervisor.perform_handoff(&spec));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !waiting.exists() {
            assert!(
                std::time::Instant::now() < deadline && !handoff.is_finished(),
                "the successor never paused before adopting"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        asking.send("GET before\n");
        let stream = asking.reader.get_ref();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        idle.reader
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        reset(resetting);
        std::fs::write(&go, b"").unwrap();
        handoff.join().expect("the handoff thread")
    })
    .expect("perform_handoff");
    let serving = if rollback {
        assert!(!outcome.committed, "the successor exited before Ready");
        if let Some(child) = outcome.successor {
            let successor = service.procs.add_ours(child);
            assert!(
                service.procs.wait_exit(successor, EXIT_TIMEOUT).is_ok(),
                "the successor given up did not exit"
            );
        }
        pid
    } else {
        assert!(outcome.committed, "rolled back: {:?}", outcome.abort_reason);
        let new = service.procs.add_ours(
            outcome
                .successor
                .expect("a committed outcome has its successor"),
        );
        assert_eq!(service.procs.wait_exit(pid, EXIT_TIMEOUT), Ok(0));
        new
    };
    assert_eq!(asking.line(), "VALUE 1", "the request sent before leaving");
    for (what, client) in [("asking", &mut asking), ("idle", &mut idle)] {
        let mut rest = String::new();
        assert_eq!(
            client
                .reader
                .read_line(&mut rest)
                .map_err(|e| e.to_string()),
            Ok(0),
            "{what}: EOF once both copies closed (got {rest:?})"
        );
    }
    assert_eq!(kept.ping().0, serving);
    assert_eq!(kept.ask("GET before"), "VALUE 1");
    let next = service.hand_off(serving, Impl::Mover);
    assert_eq!(kept.ping().0, next, "the kept connection moved again");
}

/// Close with SO_LINGER 0: the peer gets a reset, not a FIN.
fn reset(client: LineClient) {
    use std::os::fd::AsRawFd;
    let stream = client.reader.get_ref();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a `linger` of the size passed.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

#[test]
fn clients_leaving_mid_transfer_are_dropped_by_the_successor() {
    clients_leaving_mid_transfer(false);
}

#[test]
fn clients_leaving_mid_transfer_are_dropped_by_the_incumbent_on_a_rollback() {
    clients_leaving_mid_transfer(true);
}

/// A successor that speaks v1 (peer-ours): nothing moves, the mover's
/// drain closes its connections as in v1, and the handoff commits.
#[test]
fn a_v1_successor_gets_a_v1_handoff() {
    let (mut service, pid) = Service::start();
    let mut client = LineClient::connect(service.addr, IO_TIMEOUT);
    assert_eq!(client.ping().0, pid);
    let new = service.hand_off(pid, Impl::Ours);
    let mut rest = String::new();
    assert_eq!(
        client
            .reader
            .read_line(&mut rest)
            .expect("an EOF, not a reset"),
        0,
        "a v1 drain closes the connection"
    );
    assert_eq!(LineClient::connect(service.addr, IO_TIMEOUT).ping().0, new);
}

/// A v1 incumbent (peer-ours) and a v2 successor: nothing moves (the v2
/// successor's Capacity is taken and goes no further), the handoff commits,
/// and the next one, v2 on both sides, moves the connections.
#[test]
fn a_v1_incumbent_hands_off_to_a_v2_successor() {
    let (mut service, pid) = Service::start_as(Impl::Ours, &[]);
    let mover = service.hand_off(pid, Impl::Mover);
    let mut client = LineClient::connect(service.addr, IO_TIMEOUT);
    assert_eq!(client.ping().0, mover);
    let next = service.hand_off(mover, Impl::Mover);
    assert_eq!(client.ping().0, next, "the connection moved");
}

/// 10,000 idle connections move in one handoff (40 batches of at most 253
/// descriptors): every one stays open and is answered by the successor.
#[test]
fn ten_thousand_idle_connections_move_in_one_handoff() {
    const IDLE: usize = 10_000;
    let limit = handoff::sys::raise_descriptor_limit().expect("RLIMIT_NOFILE");
    assert!(
        limit >= IDLE as u64 + 1024,
        "RLIMIT_NOFILE hard limit {limit} is below what this test needs (ulimit -Hn)"
    );
    let (mut service, pid) = Service::start();
    let mut idle = Vec::with_capacity(IDLE);
    for batch in 0..IDLE / 100 {
        let mut clients: Vec<LineClient> = (0..100)
            .map(|_| LineClient::connect(service.addr, IO_TIMEOUT))
            .collect();
        for client in &mut clients {
            client.send("PING\n");
        }
        for client in &mut clients {
            assert!(client.line().starts_with("PONG "), "batch {batch}");
        }
        idle.extend(clients);
    }
    let new = service.hand_off(pid, Impl::Mover);
    for client in &mut idle {
        client.send("PING\n");
    }
    for (n, client) in idle.iter_mut().enumerate() {
        let answer = client.line();
        assert_eq!(answer, format!("PONG {new} mover"), "connection {n}");
    }
}

/// A successor whose descriptor limit (hard, so it cannot raise it) is too
/// low for what would move: the handoff aborts after the incumbent said how
/// many, before it gives anything up, naming the limit; every connection
/// goes on with the incumbent.
#[test]
fn a_successor_that_cannot_hold_the_connections_aborts_the_handoff() {
    const CLIENTS: usize = 300;
    let (mut service, pid) = Service::start();
    let mut clients: Vec<LineClient> = (0..CLIENTS)
        .map(|_| LineClient::connect(service.addr, IO_TIMEOUT))
        .collect();
    for client in &mut clients {
        assert_eq!(client.ping().0, pid);
    }
    let mut spec = service.spec(Impl::Mover, &[]);
    let binary = spec.command.binary.clone();
    let mut script = format!("ulimit -n 128 && exec '{}'", binary.display());
    for arg in &spec.command.args {
        script.push_str(&format!(" '{}'", arg.to_string_lossy()));
    }
    spec.command.binary = "/bin/sh".into();
    spec.command.args = vec!["-c".into(), script.into()];
    let outcome = service
        .supervisor
        .perform_handoff(&spec)
        .expect("perform_handoff");
    assert!(
        !outcome.committed,
        "committed a successor that cannot hold its connections"
    );
    let abort = outcome.abort.expect("a reason");
    assert_eq!(
        (abort.party, abort.cause),
        (Party::Successor, Cause::Limit),
        "{abort:?}"
    );
    assert!(
        abort
            .detail
            .contains(&format!("moves {} descriptor(s)", CLIENTS + 1))
            && abort.detail.contains("RLIMIT_NOFILE"),
        "{}",
        abort.detail
    );
    for client in &mut clients {
        assert_eq!(client.ping().0, pid, "after the rollback");
    }
    // With a limit that holds them, the next handoff moves them all.
    let new = service.hand_off(pid, Impl::Mover);
    for client in &mut clients {
        assert_eq!(client.ping().0, new);
    }
}
