//! libsystemd's sd_listen_fds_with_names() accepts the listeners libhandoff
//! hands a C service, on a cold start and in a successor: LISTEN_PID names
//! the child itself and the names follow LISTEN_FDNAMES.

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;
use handoff::supervisor::{SpawnSpec, Supervisor};

#[test]
fn libsystemd_sees_the_listeners_in_a_cold_start_and_in_a_successor() {
    let binary = noop_service();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let report = dir.path().join("sd-report.txt");
    let (tcp, addr) = tcp_listener();
    let admin = UnixListener::bind(dir.path().join("admin.sock")).unwrap();
    let supervisor = Supervisor::new(&control)
        .with_listener("kv", OwnedFd::from(tcp))
        .unwrap()
        .with_listener("admin", OwnedFd::from(admin))
        .unwrap();
    let command = service_command(
        &binary,
        &dir.path().join("data"),
        &control,
        &["--report", report.to_str().unwrap()],
    );

    let mut reaper = Reaper::default();
    let first = reaper.keep(supervisor.spawn_cold(&command).unwrap());
    wait_for_pong(&addr, first, Duration::from_secs(10));

    let spec = SpawnSpec {
        command,
        ..SpawnSpec::new(&binary)
    };
    let outcome = supervisor.perform_handoff(&spec).unwrap();
    assert!(outcome.committed, "{:?}", outcome.abort_reason);
    let second = reaper.keep(outcome.successor.unwrap());
    wait_for_pong(&addr, second, Duration::from_secs(10));
    let status = reaper
        .wait_exit(first, Duration::from_secs(10))
        .expect("old incumbent exits");
    assert_eq!(status, 0, "old incumbent's wait status");

    let lines = std::fs::read_to_string(&report).unwrap();
    let expected: Vec<String> = [first, second]
        .iter()
        .map(|pid| format!("pid={pid} n=2 names=kv(listening):admin(listening)"))
        .collect();
    assert_eq!(lines.lines().collect::<Vec<_>>(), expected);
}
