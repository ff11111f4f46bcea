//! The rows of DESIGN §2 "Aborts and recovery" that need no crash point,
//! with real processes: after each, exactly one lock holder (the incumbent
//! that answers), no orphan, no leaked descriptor, the journal cleared.

mod common;
#[path = "common/in_process.rs"]
mod in_process;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use handoff::supervisor::{Cause, HandoffPhase, Party, Timeouts};
use handoff::Error;
use in_process::{Service, Start};

/// A cold-started noop service under an in-process supervisor.
fn start(cold_flags: &[&str], nonblocking: bool) -> Service {
    Service::start(Start {
        cold_flags,
        nonblocking,
        ..Start::default()
    })
}

/// Why a handoff is expected to roll back: the typed reason and a part of
/// its sentence.
struct Expected {
    phase: &'static [HandoffPhase],
    party: Party,
    cause: Cause,
    says: &'static str,
}

fn assert_rolled_back(service: &Service, flags: &[&str], expected: Expected) {
    let fds = open_fds();
    let incumbent_fds = settled_fd_targets(service.incumbent);
    let outcome = service.hand_off(flags);
    assert!(!outcome.committed, "must roll back");
    let abort = outcome.abort.expect("a rollback has a reason");
    assert!(
        expected.phase.contains(&abort.phase)
            && abort.party == expected.party
            && abort.cause == expected.cause
            && abort.detail.contains(expected.says),
        "rolled back for {abort:?}; expected {:?} {:?} {:?} {:?}",
        expected.phase,
        expected.party,
        expected.cause,
        expected.says
    );
    assert_eq!(outcome.abort_reason.as_deref(), Some(&*abort.detail));
    assert!(
        outcome.successor.is_none(),
        "the successor is reaped, not handed back"
    );
    service.assert_settled(service.incumbent);
    assert_eq!(open_fds(), fds, "supervisor descriptors after the rollback");
    // The incumbent closes its end of the control connection when it reads
    // the supervisor's EOF, a moment after perform_handoff returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fd_targets(service.incumbent) != incumbent_fds && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        fd_targets(service.incumbent),
        incumbent_fds,
        "incumbent descriptors after the rollback"
    );
}

/// Descriptor counts are per process: the tests here run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The incumbent's descriptors once they stop changing: a PING connection
/// it accepted may still be open for a moment on a busy machine.
fn settled_fd_targets(pid: u32) -> Vec<String> {
    let mut last = fd_targets(pid);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = fd_targets(pid);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// The targets of a process's descriptors, sorted (a diff shows a leak).
fn fd_targets(pid: u32) -> Vec<String> {
    let mut targets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let target = std::fs::read_link(e.path()).map(|t| t.display().to_string());
            // Socket inode numbers differ between generations of an fd.
            target.map_or_else(
                |e| e.to_string(),
                |t| {
                    if t.starts_with("socket:") {
                        "socket".into()
                    } else {
                        t
                    }
                },
            )
        })
        .collect();
    targets.sort();
    targets
}

#[test]
fn successor_that_exits_before_ready_rolls_back() {
    let _alone = serial();
    let service = start(&[], false);
    assert_rolled_back(
        &service,
        &["--exit-before-ready"],
        Expected {
            // It exits after Begin; the supervisor may see it dead as soon
            // as the seal's answer or only while waiting for Ready.
            phase: &[HandoffPhase::Seal, HandoffPhase::Ready],
            party: Party::Successor,
            cause: Cause::Exited,
            says: "successor exited with status 3",
        },
    );
}

#[test]
fn successor_that_hangs_past_the_deadline_is_killed_and_rolled_back() {
    let _alone = serial();
    let service = start(&[], false);
    let mut spec = service.spec(&["--hang-before-ready"]);
    spec.deadline = Duration::from_secs(2);
    let outcome = service.supervisor.perform_handoff(&spec).unwrap();
    assert!(!outcome.committed);
    let abort = outcome.abort.unwrap();
    assert_eq!(
        (abort.phase, abort.party, abort.cause),
        (HandoffPhase::Ready, Party::Successor, Cause::Deadline),
        "{abort:?}"
    );
    assert!(abort.detail.contains("deadline"), "{abort:?}");
    service.assert_settled(service.incumbent);
}

/// A handoff in flight can be cancelled from another thread: it rolls back
/// at once, whatever it waits for, and says it was cancelled.
#[test]
fn a_handoff_cancelled_from_another_thread_rolls_back() {
    let _alone = serial();
    let service = Arc::new(start(&[], false));
    let spec = service.spec(&["--hang-before-ready"]);
    let handoff = {
        let service = Arc::clone(&service);
        std::thread::spawn(move || service.supervisor.perform_handoff(&spec).unwrap())
    };
    // The journal says AwaitingReady once Begin is out: the successor
    // hangs there, and the default deadline (60 s) is far.
    let awaiting = std::time::Instant::now() + Duration::from_secs(10);
    while !matches!(
        handoff::journal::Journal::read(&service.journal),
        Ok(Some(j)) if j.phase == handoff::journal::Phase::AwaitingReady
    ) {
        assert!(std::time::Instant::now() < awaiting, "never awaited Ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    service.supervisor.cancel();
    let outcome = handoff.join().unwrap();
    assert!(!outcome.committed);
    let abort = outcome.abort.unwrap();
    assert_eq!(
        (abort.phase, abort.party, abort.cause),
        (HandoffPhase::Ready, Party::Supervisor, Cause::Cancelled),
        "{abort:?}"
    );
    service.assert_settled(service.incumbent);
    // A cancel with no handoff in flight does nothing to the next one.
    let Ok(mut service) = Arc::try_unwrap(service) else {
        panic!("the handoff thread has ended")
    };
    service.supervisor.cancel();
    let outcome = service.hand_off(&[]);
    assert!(outcome.committed, "{:?}", outcome.abort);
    let successor = service.reaper.keep(outcome.successor.unwrap());
    service.assert_settled(successor);
}

/// A successor that takes longer to say Hello than the incumbent's
/// liveness timeout (as one loading its state first does) still takes
/// over: the supervisor heartbeats the incumbent while it waits.
#[test]
fn a_successor_slower_to_say_hello_than_the_incumbents_liveness_takes_over() {
    let _alone = serial();
    let mut service = start(&["--liveness-ms", "1000"], false);
    service.supervisor.set_timeouts(Timeouts {
        heartbeat: Duration::from_millis(200),
        kill_grace: Duration::from_millis(500),
        ..Timeouts::default()
    });
    let outcome = service.hand_off(&["--delay-hello-ms", "2500", "--liveness-ms", "1000"]);
    assert!(outcome.committed, "rolled back: {:?}", outcome.abort_reason);
    let successor = outcome
        .successor
        .expect("a committed handoff has a successor");
    let pid = service.reaper.keep(successor);
    service.assert_settled(pid);
}

#[test]
fn failed_seal_keeps_the_incumbent_serving_with_its_lock() {
    let _alone = serial();
    let service = start(&["--fail-seal"], true);
    assert_rolled_back(
        &service,
        &[],
        Expected {
            phase: &[HandoffPhase::Seal],
            party: Party::Incumbent,
            cause: Cause::SealFailed,
            says: "seal failed on purpose",
        },
    );
    // The successor detected its role and waited for Begin: the shared
    // listener's flags are as the supervisor set them (DESIGN §3).
    assert!(service.listener_nonblocking());
}

#[test]
fn a_second_handoff_while_one_runs_is_refused_at_once() {
    let _alone = serial();
    let service = Arc::new(start(&[], false));
    let mut spec = service.spec(&["--hang-before-ready"]);
    spec.deadline = Duration::from_secs(3);
    let first = {
        let service = Arc::clone(&service);
        std::thread::spawn(move || service.supervisor.perform_handoff(&spec).unwrap())
    };
    // The journal appears once the first handoff has both Hellos.
    wait_for_path(&service.journal, Duration::from_secs(5));
    match service.supervisor.perform_handoff(&service.spec(&[])) {
        Err(Error::HandoffInProgress) => {}
        other => panic!("a second handoff was not refused: {other:?}"),
    }
    let outcome = first.join().unwrap();
    assert!(!outcome.committed);
    service.assert_settled(service.incumbent);
}

/// DESIGN §3's trap: with a non-blocking listener and no client at all, an
/// idle incumbent drains and the handoff commits; the flag is untouched.
#[test]
fn idle_incumbent_with_a_nonblocking_listener_hands_off() {
    let _alone = serial();
    for nonblocking in [true, false] {
        let mut service = start(&[], nonblocking);
        let outcome = service.hand_off(&[]);
        assert!(outcome.committed, "{:?}", outcome.abort_reason);
        assert_eq!(service.listener_nonblocking(), nonblocking);
        let successor = service.reaper.keep(outcome.successor.unwrap());
        let old = service.incumbent;
        assert_eq!(
            service.reaper.wait_exit(old, Duration::from_secs(10)),
            Some(0)
        );
        service.assert_settled(successor);
    }
}

/// Invariant 9: the successor's Hello must come from the process the
/// supervisor spawned, as the kernel attests, whatever pid it announces.
#[test]
fn a_hello_from_another_process_claiming_the_successors_pid_is_refused() {
    let _alone = serial();
    let service = start(&[], false);
    assert_rolled_back(
        &service,
        &["--forge-hello"],
        Expected {
            phase: &[HandoffPhase::Spawn],
            party: Party::Successor,
            cause: Cause::Protocol,
            says: "not the spawned",
        },
    );
}

/// The successor starts while the incumbent answers our connection: when
/// what answers is no incumbent (here a process that says it is a
/// successor), the handoff never starts (`Err`), and the successor already
/// started is stopped and reaped, with nothing of ours left open.
#[test]
fn a_control_socket_whose_hello_is_refused_stops_the_started_successor() {
    use handoff::frame::encode_frame;
    use handoff::protocol::{Capabilities, Message, Side, PROTO_MAX, PROTO_MIN};
    use handoff::supervisor::{SpawnSpec, Supervisor};
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    let _alone = serial();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let supervisor = Supervisor::new(&control);
    // Counted before the impostor's listener, which its thread closes.
    let fds = open_fds();
    let listener = UnixListener::bind(&control).unwrap();
    let pid_file = dir.path().join("successor.pid");
    let started = pid_file.clone();
    let impostor = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        // Answer once the successor runs: it starts before our Hello is read.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !started.exists() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let hello = Message::Hello {
            role: Side::Successor,
            pid: std::process::id(),
            build_id: b"impostor".to_vec(),
            proto_min: PROTO_MIN,
            proto_max: PROTO_MAX,
            capabilities: Capabilities::default(),
        };
        stream.write_all(&encode_frame(1, &hello).unwrap()).unwrap();
        // Hold the connection until the supervisor closes it.
        let _ = std::io::Read::read(&mut stream, &mut [0u8; 64]);
    });
    let mut spec = SpawnSpec::new("/bin/sh");
    spec.command.args = vec![
        "-c".into(),
        format!(
            "echo $$ > {0}.tmp && mv {0}.tmp {0}; exec sleep 60",
            pid_file.display()
        )
        .into(),
    ];
    let refused = supervisor.perform_handoff(&spec);
    assert!(
        matches!(refused, Err(Error::Protocol(ref why)) if why.contains("Successor")),
        "{refused:?}"
    );
    impostor.join().unwrap();
    assert_eq!(open_fds(), fds, "supervisor descriptors after the refusal");
    let pid = std::fs::read_to_string(&pid_file).expect("the successor ran");
    let pid: u32 = pid.trim().parse().unwrap();
    assert!(
        !handoff::spawn::pid_alive(pid),
        "successor {pid} left running"
    );
}
