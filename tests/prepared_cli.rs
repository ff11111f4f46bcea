//! A prepared handoff from the command line: `handoff-supervisor prepare`
//! starts and handshakes a successor that the running supervisor holds,
//! `trigger --prepared` switches to it, `discard` stops it. The real
//! command, a real config file and a real service on the C ABI
//! (tests/services/noop-service), over the real trigger socket.
#![allow(unsafe_code)]

#[path = "common/cli.rs"]
mod cli;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cli::{text, wait_for_within, Fixture, BIN};
use common::pong_pid;

fn alive(pid: u32) -> bool {
    handoff::spawn::pid_alive(pid)
}

/// Exited and reaped: no /proc entry at all (a zombie keeps one).
fn reaped(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; the pid is one the supervisor
    // reported and has not reaped.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// `prepare`, which must succeed; the pid it prints.
fn prepare(f: &Fixture, args: &[&str]) -> u32 {
    let out = f.cli(&[&["prepare"], args].concat());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // "prepared pid P in X ms (handoff ID): ..."
    stdout
        .strip_prefix("prepared pid ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stdout:?}"))
}

fn held_pid(f: &Fixture) -> Option<u32> {
    f.status()["prepared"]["pid"].as_u64().map(|pid| pid as u32)
}

#[test]
fn a_prepared_successor_waits_then_takes_over_on_trigger_prepared() {
    let f = Fixture::new();
    f.write_config("");
    let _supervisor = f.run();
    let incumbent = f.wait_serving_within(Duration::from_secs(10));

    let prepared = prepare(&f, &[]);
    assert_ne!(prepared, incumbent);
    // Held: the incumbent serves on, the successor waits.
    assert_eq!(pong_pid(&f.addr), Some(incumbent));
    assert!(alive(prepared));
    let status = f.status();
    assert_eq!(status["state"], "serving");
    assert_eq!(status["prepared"]["pid"], prepared);
    assert!(status["prepared"]["spawn_ms"].as_f64().unwrap() > 0.0);
    let human = text(&f.cli(&["status"]).stdout);
    assert!(
        human.contains(&format!("prepared      pid {prepared} for ")),
        "{human}"
    );
    let prometheus = text(&f.cli(&["status", "--prometheus"]).stdout);
    assert!(
        prometheus.contains("handoff_supervisor_prepared_successor 1"),
        "{prometheus}"
    );

    // A second prepare is refused, naming the one held.
    let out = f.cli(&["prepare"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains(&format!("pid {prepared}")),
        "{stderr}"
    );

    // A plain trigger meanwhile spawns its own successor and leaves the
    // prepared one held.
    let out = f.cli(&["trigger", "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let between = f.wait_serving_within(Duration::from_secs(10));
    assert!(between != incumbent && between != prepared);
    assert_eq!(held_pid(&f), Some(prepared));

    let out = f.cli(&["trigger", "--prepared"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for phase in ["hello", "spawn", "drain", "seal", "ready", "commit"] {
        assert!(stdout.contains(&format!("  {phase} ")), "{phase}: {stdout}");
    }
    assert!(
        stdout.contains(&format!("pid {prepared} is the incumbent")),
        "{stdout}"
    );
    assert_eq!(f.wait_serving_within(Duration::from_secs(10)), prepared);
    let status = f.status();
    assert!(status["prepared"].is_null(), "{status}");
    assert_eq!(status["counters"]["committed"], 2);
    assert_eq!(status["last_handoff"]["result"], "committed");
    wait_for_within(Duration::from_secs(10), "the old incumbent to exit", || {
        (!alive(between)).then_some(())
    });

    // It was used: nothing is prepared now.
    let out = f.cli(&["trigger", "--prepared"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing is prepared"));
    assert_eq!(pong_pid(&f.addr), Some(prepared));
}

#[test]
fn discard_stops_and_reaps_the_prepared_successor() {
    let f = Fixture::new();
    f.write_config("");
    let _supervisor = f.run();
    let incumbent = f.wait_serving_within(Duration::from_secs(10));

    let prepared = prepare(&f, &[]);
    let out = f.cli(&["discard"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("discarded pid {prepared}")),
        "{stdout}"
    );
    // Synchronous: stopped and reaped by the time `discard` answers.
    assert!(reaped(prepared), "pid {prepared} still has a /proc entry");
    assert!(f.status()["prepared"].is_null());
    assert_eq!(pong_pid(&f.addr), Some(incumbent));

    let out = f.cli(&["discard"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing is prepared"));

    let out = f.cli(&["trigger"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let next = f.wait_serving_within(Duration::from_secs(10));
    assert!(next != incumbent && next != prepared);
}

#[test]
fn a_prepared_successor_that_dies_is_dropped_and_the_incumbent_serves() {
    let f = Fixture::new();
    f.write_config("");
    let supervisor = f.run();
    let incumbent = f.wait_serving_within(Duration::from_secs(10));

    let prepared = prepare(&f, &[]);
    kill(prepared, libc::SIGKILL);
    wait_for_within(Duration::from_secs(10), "the supervisor to drop it", || {
        held_pid(&f).is_none().then_some(())
    });
    assert!(
        supervisor.log_text().contains(&format!(
            "prepared successor pid {prepared} exited while held"
        )),
        "{}",
        supervisor.log_text()
    );
    assert!(reaped(prepared), "pid {prepared} not reaped");

    let out = f.cli(&["trigger", "--prepared"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nothing is prepared"));
    assert_eq!(pong_pid(&f.addr), Some(incumbent));
    assert_eq!(f.status()["counters"]["handoffs"], 0);
}

#[test]
fn a_successor_that_does_not_come_up_is_not_prepared() {
    let f = Fixture::new();
    f.write_config("");
    let _supervisor = f.run();
    let incumbent = f.wait_serving_within(Duration::from_secs(10));

    // Its Hello comes from another process: refused, and it is stopped.
    let forging = f.wrapper("forging-successor", "--forge-hello");
    let out = f.cli(&["prepare", "--binary", forging.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not prepared, by the successor (protocol)"),
        "{stderr}"
    );
    assert!(f.status()["prepared"].is_null());
    assert_eq!(pong_pid(&f.addr), Some(incumbent));

    // A binary that is not there is an error, before anything starts.
    let out = f.cli(&["prepare", "--binary", "/nonexistent/successor"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/successor"));

    // Nothing was left held: the next prepare goes ahead.
    let prepared = prepare(&f, &[]);
    assert_eq!(held_pid(&f), Some(prepared));
}

#[test]
fn sigterm_stops_a_held_successor_and_one_being_prepared() {
    // Held.
    let f = Fixture::new();
    f.write_config("");
    let mut supervisor = f.run();
    let incumbent = f.wait_serving_within(Duration::from_secs(10));
    let prepared = prepare(&f, &[]);
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(
        supervisor
            .log_text()
            .contains(&format!("stopping the prepared successor pid {prepared}")),
        "{}",
        supervisor.log_text()
    );
    for pid in [incumbent, prepared] {
        assert!(!alive(pid), "pid {pid} left behind");
    }

    // Being prepared: a successor that takes a second over its Hello, its
    // pid written where the test can read it. The stop waits for the
    // prepare to end, then stops what it started.
    let f = Fixture::new();
    f.write_config("");
    let mut supervisor = f.run();
    let incumbent = f.wait_serving_within(Duration::from_secs(10));
    let pid_file = f.path("slow.pid");
    let slow = f.path("slow-successor");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nexec '{}' \"$@\" --delay-hello-ms 1000\n",
            pid_file.display(),
            common::noop_service().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let client = Command::new(BIN)
        .args(["prepare", "--config"])
        .arg(f.config())
        .arg("--binary")
        .arg(&slow)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let successor: u32 = wait_for_within(Duration::from_secs(10), "the successor to start", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.wait_exit(Duration::from_secs(20)), Some(0));
    let out = client.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("stopping"),
        "{}",
        text(&out.stderr)
    );
    for pid in [incumbent, successor] {
        assert!(!alive(pid), "pid {pid} left behind");
    }
}
