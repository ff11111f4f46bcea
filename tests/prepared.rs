//! A prepared handoff (`Supervisor::prepare`, then `perform_prepared`): the
//! successor is started and handshaken ahead of time while the incumbent
//! serves on, and the switch happens later without a spawn; a prepared
//! successor that is dropped or dies while held leaves the incumbent
//! serving and nothing behind.

mod common;
#[path = "common/in_process.rs"]
mod in_process;

use std::time::Duration;

use common::*;
use handoff::supervisor::{Cause, HandoffPhase, Party};
use in_process::{Service, Start};

/// Descriptor counts are per process: the tests here run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `pid` is gone (exited and reaped: no /proc entry, not a zombie).
fn gone(pid: u32) -> bool {
    !handoff::spawn::pid_alive(pid)
}

#[test]
fn a_prepared_successor_takes_over_later_without_a_spawn() {
    let _serial = serial();
    let mut service = Service::start(Start::default());
    let fds = open_fds();
    let prepared = service
        .supervisor
        .prepare(&service.spec(&[]))
        .expect("prepared");
    let successor = prepared.pid().expect("a prepared successor has a pid");
    // Held: the incumbent still serves and holds the lock; the journal
    // says nothing (no handoff is in flight yet).
    std::thread::sleep(Duration::from_millis(300));
    service.assert_settled(service.incumbent);
    assert!(!gone(successor), "the prepared successor waits");

    let outcome = service.supervisor.perform_prepared(prepared).unwrap();
    assert!(outcome.committed, "{:?}", outcome.abort_reason);
    let child = outcome.successor.expect("the new incumbent");
    assert_eq!(child.pid(), successor, "the prepared process took over");
    let spawn = outcome.timings.spawn;
    println!(
        "prepared switch: total {:?} (spawn phase {spawn:?}, drain {:?}, seal {:?}, ready {:?}, commit {:?})",
        outcome.timings.total,
        outcome.timings.drain,
        outcome.timings.seal,
        outcome.timings.ready,
        outcome.timings.commit
    );
    let old = service.incumbent;
    service.incumbent = service.reaper.keep(child);
    service.assert_settled(successor);
    assert_eq!(
        service.reaper.wait_exit(old, Duration::from_secs(10)),
        Some(0)
    );
    assert_eq!(open_fds(), fds, "supervisor descriptors after the switch");
}

#[test]
fn a_dropped_prepared_successor_exits_and_the_next_handoff_commits() {
    let _serial = serial();
    let mut service = Service::start(Start::default());
    let fds = open_fds();
    let prepared = service.supervisor.prepare(&service.spec(&[])).unwrap();
    let pid = prepared.pid().unwrap();
    drop(prepared);
    assert!(gone(pid), "dropping it stops and reaps it");
    service.assert_settled(service.incumbent);
    assert_eq!(open_fds(), fds, "supervisor descriptors after the drop");
    let outcome = service.hand_off(&[]);
    assert!(outcome.committed, "{:?}", outcome.abort_reason);
    // The new incumbent goes with the test, as every process it started.
    service
        .reaper
        .keep(outcome.successor.expect("the new incumbent"));
}

#[test]
fn a_prepared_successor_that_died_while_held_rolls_back() {
    let _serial = serial();
    let service = Service::start(Start::default());
    let mut prepared = service.supervisor.prepare(&service.spec(&[])).unwrap();
    let pid = prepared.pid().unwrap();
    handoff::spawn::signal_group_of(pid, libc::SIGKILL);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !prepared.has_exited() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(prepared.has_exited());
    let outcome = service.supervisor.perform_prepared(prepared).unwrap();
    assert!(!outcome.committed);
    let abort = outcome.abort.expect("a reason");
    assert_eq!(
        (abort.phase, abort.party, abort.cause),
        (HandoffPhase::Spawn, Party::Successor, Cause::Exited),
        "{abort:?}"
    );
    service.assert_settled(service.incumbent);
}

#[test]
fn a_successor_whose_hello_is_forged_is_not_prepared() {
    let _serial = serial();
    let service = Service::start(Start::default());
    let fds = open_fds();
    let abort = service
        .supervisor
        .prepare(&service.spec(&["--forge-hello"]))
        .err()
        .expect("a forged Hello, nothing prepared");
    assert_eq!(
        (abort.party, abort.cause),
        (Party::Successor, Cause::Protocol),
        "{abort:?}"
    );
    service.assert_settled(service.incumbent);
    assert_eq!(open_fds(), fds);
}

#[test]
fn a_handoff_meanwhile_leaves_the_prepared_successor_ready_to_take_over() {
    let _serial = serial();
    let mut service = Service::start(Start::default());
    let prepared = service.supervisor.prepare(&service.spec(&[])).unwrap();
    let meanwhile = service.hand_off(&[]);
    assert!(meanwhile.committed, "{:?}", meanwhile.abort_reason);
    let between = service
        .reaper
        .keep(meanwhile.successor.expect("the incumbent in between"));
    let pid = prepared.pid().unwrap();
    let outcome = service.supervisor.perform_prepared(prepared).unwrap();
    assert!(outcome.committed, "{:?}", outcome.abort_reason);
    assert_eq!(outcome.incumbent_pid, between);
    assert_eq!(outcome.successor.as_ref().map(|c| c.pid()), Some(pid));
    service
        .reaper
        .keep(outcome.successor.expect("the prepared one"));
    service.assert_settled(pid);
}
