//! `handoff-supervisor` as users run it: the real command, a real config
//! file, and a real service on the C ABI (tests/services/noop-service).
//! Every supervisor runs in a process group of its own, killed whole when
//! the test ends, pass or fail.
#![allow(unsafe_code)]

#[path = "common/cli.rs"]
mod cli;
mod common;
/// The command's clap definition, and what the cli-docs example renders
/// from it (`make cli-docs`): the man pages and completions are tested
/// here, written from the very definition the command parses with.
#[path = "../src/bin/handoff-supervisor/cli.rs"]
mod definition;
#[path = "../src/bin/handoff-supervisor/cli_docs/pages.rs"]
mod pages;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli::{activated_supervisor, text, wait_for_within, Fixture, Running, BIN};
use common::{noop_service, pong_pid, tcp_listener};
use serde_json::Value;

fn alive(pid: u32) -> bool {
    handoff::spawn::pid_alive(pid)
}

const PHASES: [&str; 6] = ["hello", "spawn", "drain", "seal", "ready", "commit"];

#[test]
fn cold_start_trigger_commit_status_and_stop() {
    let f = Fixture::new();
    f.write_config("");
    let mut supervisor = f.run_with(|c| {
        c.args(["--log-format", "json"]);
    });
    let first = f.wait_serving_within(Duration::from_secs(10));

    // The trigger socket is private.
    let mode = std::fs::metadata(f.path("trigger.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The service got the config's environment.
    assert!(environ(first).contains("NOOP_TEST=1"));

    let out = f.cli(&["trigger"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let mut at = 0;
    for phase in PHASES {
        let found = stdout[at..]
            .find(&format!("  {phase} "))
            .unwrap_or_else(|| panic!("phase {phase} missing or out of order in:\n{stdout}"));
        at += found;
    }
    assert!(stdout.contains("committed in"), "{stdout}");

    let second = f.wait_serving_within(Duration::from_secs(10));
    assert_ne!(second, first);
    wait_for_within(Duration::from_secs(10), "the old incumbent to exit", || {
        (!alive(first)).then_some(())
    });

    let status = f.status();
    assert_eq!(status["state"], "serving");
    assert_eq!(status["generation"], 2);
    assert_eq!(status["counters"]["committed"], 1);
    assert_eq!(status["last_handoff"]["result"], "committed");
    let phases: Vec<&str> = status["last_handoff"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, PHASES);

    let prometheus = text(&f.cli(&["status", "--prometheus"]).stdout);
    assert!(prometheus.contains("handoff_supervisor_handoffs_total{result=\"committed\"} 1"));
    assert!(prometheus.contains(&format!("handoff_supervisor_incumbent_pid {second}")));
    assert!(prometheus.contains("handoff_supervisor_last_handoff_phase_seconds{phase=\"drain\"}"));
    let human = text(&f.cli(&["status"]).stdout);
    assert!(
        human.contains(&format!("incumbent     pid {second}, generation 2")),
        "{human}"
    );

    // JSON logs: one line per phase, each with the handoff id.
    let log = supervisor.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("phase").is_some())
        .collect();
    let id = status["last_handoff"]["id"].as_str().unwrap();
    let logged: Vec<&str> = lines
        .iter()
        .filter(|v| v["handoff_id"] == id)
        .map(|v| v["phase"].as_str().unwrap())
        .collect();
    assert_eq!(logged, PHASES, "{log}");

    // SIGTERM stops the service, then the supervisor, with status 0.
    supervisor.signal(libc::SIGTERM);
    assert_eq!(supervisor.wait_exit(Duration::from_secs(15)), Some(0));
    assert!(!alive(second));
    let out = f.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
}

/// The variables of `pid` as its exec gave them (`/proc/PID/environ`: each
/// ends with a NUL).
fn environ(pid: u32) -> String {
    text(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
}

/// The supervisor restarts itself once with glibc's tcache off and one
/// malloc arena (both made its resident set grow,
/// src/bin/handoff-supervisor/tunables.rs); the
/// services it starts get GLIBC_TUNABLES as the supervisor was given it.
#[test]
fn malloc_is_tuned_for_the_supervisor_only() {
    for given in [None, Some("glibc.malloc.arena_max=2")] {
        let f = Fixture::new();
        f.write_config("");
        let supervisor = f.run_with(|c| {
            match given {
                Some(value) => c.env("GLIBC_TUNABLES", value),
                None => c.env_remove("GLIBC_TUNABLES"),
            };
        });
        let service = f.wait_serving_within(Duration::from_secs(10));
        // glibc parses the variable in place (a NUL where a ':' was), so
        // the raw bytes are searched.
        let ours = environ(supervisor.child.id());
        let given_first = format!(
            "GLIBC_TUNABLES={}",
            given.unwrap_or("glibc.malloc.tcache_count=0")
        );
        assert!(ours.contains(&given_first), "{ours:?}");
        assert!(ours.contains("glibc.malloc.tcache_count=0"), "{ours:?}");
        // One arena, unless the user set theirs (arena_max=2 here).
        assert_eq!(
            ours.contains("glibc.malloc.arena_max=1"),
            given.is_none(),
            "{ours:?}"
        );
        let theirs = environ(service);
        let tunables: Vec<&str> = theirs
            .split('\0')
            .filter(|v| v.contains("TUNABLES"))
            .collect();
        match given {
            Some(value) => assert_eq!(tunables, [format!("GLIBC_TUNABLES={value}")]),
            None => assert!(tunables.is_empty(), "{tunables:?}"),
        }
    }
}

#[test]
fn rollback_and_a_failing_binary_is_refused_after_three_times() {
    let f = Fixture::new();
    f.write_config("");
    let _supervisor = f.run();
    let incumbent = f.wait_serving_within(Duration::from_secs(10));
    let failing = f.wrapper("failing-successor", "--exit-before-ready");
    let failing_arg = failing.to_str().unwrap();

    for attempt in 1..=3 {
        let out = f.cli(&["trigger", "--binary", failing_arg]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "attempt {attempt}: {stderr}");
        assert!(stderr.contains("rolled back"), "{stderr}");
        assert!(stderr.contains("in phase ready"), "{stderr}");
        // The incumbent serves on as before.
        assert_eq!(pong_pid(&f.addr), Some(incumbent));
    }
    let out = f.cli(&["trigger", "--binary", failing_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refused") && stderr.contains("3 times"),
        "{stderr}"
    );
    let status = f.status();
    assert_eq!(status["refused_binary"]["binary"], failing_arg);
    assert_eq!(status["counters"]["rollbacks"], 3);

    // --force tries it anyway; it still fails.
    let out = f.cli(&["trigger", "--force", "--binary", failing_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(pong_pid(&f.addr), Some(incumbent));

    // Another binary is not refused, and a commit clears the refusal.
    let out = f.cli(&["trigger"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(f.wait_serving_within(Duration::from_secs(10)), incumbent);
    assert!(f.status()["refused_binary"].is_null());

    // A --binary that does not exist is an error, not a rollback.
    let out = f.cli(&["trigger", "--binary", "/nonexistent/successor"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/successor"));
}

#[test]
fn a_second_trigger_during_a_handoff_is_refused_at_once() {
    let f = Fixture::new();
    f.write_config("[timeouts]\ndeadline_secs = 3\ndrain_grace_secs = 1\n");
    let supervisor = f.run();
    let incumbent = f.wait_serving_within(Duration::from_secs(10));
    let hanging = f.wrapper("hanging-successor", "--hang-before-ready");

    let first = f.spawn_trigger(&hanging, Stdio::piped());
    wait_for_within(
        Duration::from_secs(5),
        "the handoff to wait for Ready",
        || (f.status()["handoff"]["phase"] == "ready").then_some(()),
    );

    // Refused at once: the first handoff is still waiting for Ready after it.
    let out = f.cli(&["trigger"]);
    assert_eq!(f.status()["handoff"]["phase"], "ready");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("handoff in progress"),
        "{}",
        text(&out.stderr)
    );
    // SIGHUP meanwhile is refused the same way (logged), not queued.
    supervisor.signal(libc::SIGHUP);
    wait_for_within(Duration::from_secs(5), "SIGHUP to be refused", || {
        (f.status()["counters"]["refused"] == 2).then_some(())
    });
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("successor not ready before the deadline"));
    assert_eq!(pong_pid(&f.addr), Some(incumbent));
    let status = f.status();
    assert_eq!(status["counters"]["refused"], 2);
    assert_eq!(status["counters"]["handoffs"], 1);
    assert!(supervisor
        .log_text()
        .contains("SIGHUP: a handoff is already in progress"));
}

#[test]
fn a_stop_signal_during_a_handoff_waits_for_it_and_a_second_stops_at_once() {
    let f = Fixture::new();
    // A deadline well past the test's patience: only the second signal ends it.
    f.write_config("[timeouts]\ndeadline_secs = 60\ndrain_grace_secs = 1\n");
    let mut supervisor = f.run();
    let incumbent = f.wait_serving_within(Duration::from_secs(10));
    let hanging = f.wrapper("hanging-successor", "--hang-before-ready");
    let trigger = f.spawn_trigger(&hanging, Stdio::piped());
    let successor = wait_for_within(
        Duration::from_secs(5),
        "the handoff to wait for Ready",
        || {
            let status = f.status();
            (status["handoff"]["phase"] == "ready")
                .then(|| status["handoff"]["successor_pid"].as_u64())
                .flatten()
        },
    ) as u32;

    supervisor.signal(libc::SIGTERM);
    wait_for_within(Duration::from_secs(5), "SIGTERM to be deferred", || {
        supervisor
            .log_text()
            .contains("SIGTERM: stopping once the handoff in progress ends")
            .then_some(())
    });
    // Deferred: the handoff goes on, and the supervisor with it.
    assert_eq!(f.status()["handoff"]["phase"], "ready");

    supervisor.signal(libc::SIGINT);
    let exit = supervisor.wait_exit(Duration::from_secs(15));
    let log = supervisor.log_text();
    assert_eq!(exit, Some(0), "after the second signal:\n{log}");
    assert!(
        log.contains("SIGINT: cancelling the handoff, then stopping"),
        "{log}"
    );
    wait_for_within(Duration::from_secs(10), "both services to be gone", || {
        (!alive(incumbent) && !alive(successor)).then_some(())
    });
    // The trigger hears of the rollback.
    let out = trigger.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("rolled back"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sighup_hands_off_and_logs_each_phase() {
    let f = Fixture::new();
    f.write_config("");
    let supervisor = f.run();
    let first = f.wait_serving_within(Duration::from_secs(10));
    supervisor.signal(libc::SIGHUP);
    let id = wait_for_within(Duration::from_secs(10), "the SIGHUP handoff", || {
        let status = f.status();
        (status["last_handoff"]["result"] == "committed")
            .then(|| status["last_handoff"]["id"].as_str().unwrap().to_owned())
    });
    assert_ne!(f.wait_serving_within(Duration::from_secs(10)), first);
    let log = supervisor.log_text();
    assert!(log.contains("SIGHUP: handoff requested"), "{log}");
    for phase in PHASES {
        let line = format!("handoff {id}: {phase} done in");
        assert_eq!(log.matches(&line).count(), 1, "{line} in:\n{log}");
    }
}

#[test]
fn an_incumbent_killed_outside_a_handoff_is_restarted() {
    let f = Fixture::new();
    f.write_config("[restart]\ninitial_backoff_ms = 50\n");
    let _supervisor = f.run();
    let first = f.wait_serving_within(Duration::from_secs(10));
    handoff::spawn::signal_pid(first, libc::SIGKILL);
    let second = f.wait_serving_within(Duration::from_secs(10));
    assert_ne!(second, first);
    assert_eq!(f.status()["counters"]["restarts"], 1);
    // And the restarted generation hands off like any other.
    assert_eq!(f.cli(&["trigger", "--quiet"]).status.code(), Some(0));
}

#[test]
fn restart_policy_never_stops_the_supervisor() {
    let f = Fixture::new();
    f.write_config("[restart]\npolicy = \"never\"\n");
    let mut supervisor = f.run();
    let pid = f.wait_serving_within(Duration::from_secs(10));
    handoff::spawn::signal_pid(pid, libc::SIGKILL);
    assert_eq!(supervisor.wait_exit(Duration::from_secs(10)), Some(1));
}

/// Start the supervisor with the listener at fd 3, as systemd's socket
/// activation does (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID).
fn run_activated(f: &Fixture, listener: &std::net::TcpListener) -> Running {
    f.launch(activated_supervisor(listener), |_| {})
}

#[test]
fn supervisor_killed_mid_handoff_is_restarted_and_resumes_the_journal() {
    let (listener, addr) = tcp_listener();
    let f = Fixture::with_addr(addr);
    f.write_config("[timeouts]\ndeadline_secs = 30\n");
    let first = run_activated(&f, &listener);
    let incumbent = f.wait_serving_within(Duration::from_secs(10));
    assert!(
        first.log_text().contains("adopted from systemd"),
        "{}",
        first.log_text()
    );

    let hanging = f.wrapper("hanging-successor", "--hang-before-ready");
    let trigger = f.spawn_trigger(&hanging, Stdio::null());
    let successor = wait_for_within(
        Duration::from_secs(10),
        "the handoff to wait for Ready",
        || {
            let status = f.status();
            (status["handoff"]["phase"] == "ready").then_some(())?;
            status["handoff"]["successor_pid"]
                .as_u64()
                .map(|p| p as u32)
        },
    );
    assert!(alive(successor));
    assert!(f.path("journal/state.bin").exists());

    first.signal(libc::SIGKILL);
    let out = trigger.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // A new supervisor on the same (socket-activated) listener recovers:
    // the old incumbent resumed, the half-started successor is stopped,
    // the journal cleared, and the incumbent adopted.
    let second = run_activated(&f, &listener);
    let adopted = f.wait_serving_within(Duration::from_secs(20));
    assert_eq!(adopted, incumbent);
    let status = f.status();
    assert_eq!(status["incumbent"]["adopted"], true);
    assert!(
        second.log_text().contains("recovered handoff"),
        "{}",
        second.log_text()
    );
    assert!(!f.path("journal/state.bin").exists());
    wait_for_within(
        Duration::from_secs(10),
        "the orphan successor to be stopped",
        || (!alive(successor)).then_some(()),
    );

    // The adopted incumbent hands off to a child of the new supervisor.
    let out = f.cli(&["trigger"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(f.wait_serving_within(Duration::from_secs(10)), incumbent);
    wait_for_within(
        Duration::from_secs(10),
        "the adopted incumbent to exit",
        || (!alive(incumbent)).then_some(()),
    );
    drop(first);
}

/// Receive sd_notify datagrams until one contains `wanted`.
fn expect_notify(socket: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {wanted:?} among {seen:#?}");
        socket.set_read_timeout(Some(left)).unwrap();
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            // A signal for this test process (a child's exit) is no answer.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("no {wanted:?} among {seen:#?}: {e}"),
        };
        let message = text(&buf[..n]);
        seen.push(message.clone());
        if message.lines().any(|l| l == wanted) {
            return message;
        }
    }
}

fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000
}

#[test]
fn systemd_notify_messages() {
    let f = Fixture::new();
    f.write_config("");
    let notify_path = f.path("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).unwrap();
    let mut supervisor = f.run_with(|c| {
        c.env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "200000");
    });
    let mut seen = Vec::new();
    let ready = expect_notify(&socket, "READY=1", &mut seen);
    assert!(ready.contains("STATUS=serving: pid"), "{ready}");
    expect_notify(&socket, "WATCHDOG=1", &mut seen);
    let incumbent = f.wait_serving_within(Duration::from_secs(10));
    // The service does not inherit the supervisor's notify socket.
    let environ = environ(incumbent);
    assert!(!environ.contains("NOTIFY_SOCKET"), "{environ}");

    let before = monotonic_usec();
    assert_eq!(f.cli(&["trigger"]).status.code(), Some(0));
    let reloading = expect_notify(&socket, "RELOADING=1", &mut seen);
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .unwrap();
    assert!(
        usec >= before && usec <= monotonic_usec(),
        "{usec} vs {before}"
    );
    assert!(reloading.contains("STATUS="), "{reloading}");
    let ready = expect_notify(&socket, "READY=1", &mut seen);
    assert!(ready.contains("committed"), "{ready}");

    supervisor.signal(libc::SIGTERM);
    expect_notify(&socket, "STOPPING=1", &mut seen);
    assert_eq!(supervisor.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn systemd_notify_on_an_abstract_socket() {
    let f = Fixture::new();
    f.write_config("");
    let name = format!("handoff-supervisor-test-{}", std::process::id());
    let address =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .unwrap();
    let socket = UnixDatagram::bind_addr(&address).unwrap();
    let _supervisor = f.run_with(|c| {
        c.env("NOTIFY_SOCKET", format!("@{name}"));
    });
    expect_notify(&socket, "READY=1", &mut Vec::new());
}

#[test]
fn a_silent_client_is_timed_out_and_blocks_nobody() {
    let f = Fixture::new();
    f.write_config("");
    let _supervisor = f.run();
    f.wait_serving_within(Duration::from_secs(10));
    let mut silent = UnixStream::connect(f.path("trigger.sock")).unwrap();
    let status = f.cli(&["status"]);
    assert_eq!(status.status.code(), Some(0));
    // Served while the silent client still held its connection.
    silent.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(silent.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the silent client was timed out before status was served"
    );
    silent.set_nonblocking(false).unwrap();
    assert_eq!(f.cli(&["trigger", "--quiet"]).status.code(), Some(0));

    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    silent.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("error no request"), "{answer:?}");

    // Garbage gets an error, not a crash.
    let mut client = UnixStream::connect(f.path("trigger.sock")).unwrap();
    client.write_all(b"reboot now\n").unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("error unknown request"), "{answer:?}");
}

#[test]
fn a_second_supervisor_on_the_same_trigger_socket_is_refused() {
    let f = Fixture::new();
    f.write_config("");
    let _supervisor = f.run();
    f.wait_serving_within(Duration::from_secs(10));
    let mut second = f.run();
    assert_eq!(second.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(second.log_text().contains("another supervisor is running"));
}

#[test]
fn status_when_not_running() {
    let f = Fixture::new();
    f.write_config("");
    let out = f.cli(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["running"], false);
    let out = f.cli(&["trigger"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not running"));
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn usage_errors() {
    let usage = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        text(&out.stderr)
    };
    // Each names what is wrong, and where the help is.
    for (args, says) in [
        (&["run"][..], "--config <FILE>"),
        (&["bogus"], "unrecognized subcommand 'bogus'"),
        (&["status", "-c", "x", "--binary", "y"], "'--binary'"),
        (
            &["status", "-c", "x", "--json", "--prometheus"],
            "cannot be used with",
        ),
        (&["trigger", "-c", "x", "--force=yes"], "--force"),
        (
            &["trigger", "-c", "x", "--prepared", "--binary", "y"],
            "cannot be used with",
        ),
        (&["discard", "-c", "x", "--binary", "y"], "'--binary'"),
        (
            &["run", "-c", "x", "--log-level", "loud"],
            "[possible values: error, warn, info, debug]",
        ),
        (
            &["run", "-c", "x", "--log-formt", "json"],
            "tip: a similar argument exists: '--log-format'",
        ),
    ] {
        let stderr = usage(args);
        assert!(
            stderr.contains(says),
            "{args:?}: {says:?} not in:\n{stderr}"
        );
        assert!(stderr.contains("try '--help'"), "{args:?}: {stderr}");
    }
    // No command at all: the help, on stderr.
    assert!(usage(&[]).contains("Commands:"));

    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        text(&out.stdout)
    };
    let top = help(&["--help"]);
    for word in [
        "run", "trigger", "prepare", "discard", "status", "check", "SIGHUP",
    ] {
        assert!(top.contains(word), "--help lacks {word}:\n{top}");
    }
    for (command, options) in [
        ("run", &["--config", "--log-format", "--log-level"][..]),
        (
            "trigger",
            &["--config", "--binary", "--prepared", "--force", "--quiet"],
        ),
        ("prepare", &["--config", "--binary", "--force", "--quiet"]),
        ("discard", &["--config", "--quiet"]),
        ("status", &["--config", "--json", "--prometheus"]),
        ("check", &["--config"]),
    ] {
        let page = help(&[command, "--help"]);
        for option in options {
            assert!(
                page.contains(option),
                "{command} --help lacks {option}:\n{page}"
            );
        }
        assert!(page.contains("Exit status"), "{command} --help:\n{page}");
    }
    assert_eq!(
        help(&["--version"]),
        format!("handoff-supervisor {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_command_line_parses_as_documented() {
    use clap::{CommandFactory, Parser};
    use definition::{Cli, Command as Sub, LogFormat, LogLevel};
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("handoff-supervisor").chain(args.iter().copied()))
    };
    Cli::command().debug_assert();
    let Sub::Trigger {
        config,
        binary,
        prepared,
        force,
        quiet,
    } = parse(&["trigger", "--config=/x.toml", "--binary", "/b", "--force"])
        .unwrap()
        .command
    else {
        panic!("not trigger");
    };
    assert_eq!(config.path, PathBuf::from("/x.toml"));
    assert_eq!(binary, Some(PathBuf::from("/b")));
    assert!(force && !quiet && !prepared);
    let Sub::Trigger {
        binary, prepared, ..
    } = parse(&["trigger", "-c", "x", "--prepared"])
        .unwrap()
        .command
    else {
        panic!("not trigger");
    };
    assert!(prepared && binary.is_none());
    let Sub::Prepare {
        binary,
        force,
        quiet,
        ..
    } = parse(&["prepare", "-c", "x", "--binary", "/b", "-q"])
        .unwrap()
        .command
    else {
        panic!("not prepare");
    };
    assert_eq!(binary, Some(PathBuf::from("/b")));
    assert!(quiet && !force);
    // The defaults, and the spellings the hand-written parser took.
    let Sub::Run {
        log_format,
        log_level,
        ..
    } = parse(&["run", "-c", "x"]).unwrap().command
    else {
        panic!("not run");
    };
    assert_eq!((log_format, log_level), (LogFormat::Human, LogLevel::Info));
    let Sub::Run {
        log_format,
        log_level,
        ..
    } = parse(&[
        "run",
        "-c",
        "x",
        "--log-format=text",
        "--log-level",
        "warning",
    ])
    .unwrap()
    .command
    else {
        panic!("not run");
    };
    assert_eq!((log_format, log_level), (LogFormat::Human, LogLevel::Warn));
    assert!(parse(&["run", "-c", "x", "status"]).is_err());
}

#[test]
fn man_pages_and_completions_render() {
    use clap::CommandFactory;
    let dir = tempfile::tempdir().unwrap();
    pages::write_all(definition::Cli::command(), dir.path()).unwrap();
    let man = dir.path().join("man");
    let read = |name: &str| {
        std::fs::read_to_string(man.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };

    // The commands the real binary lists, each in the top page and with a
    // page of its own naming each of its options (roff writes - as \-).
    let help = text(&Command::new(BIN).arg("--help").output().unwrap().stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert_eq!(
        commands,
        ["run", "trigger", "prepare", "discard", "status", "check"],
        "{help}"
    );
    let top = read("handoff-supervisor.1");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH NOTES"] {
        assert!(top.contains(section), "{section} missing:\n{top}");
    }
    let mut pages = vec!["handoff-supervisor.1".to_string()];
    for command in &commands {
        assert!(
            top.contains(&format!("handoff\\-supervisor\\-{command}(1)")),
            "{command}:\n{top}"
        );
        let name = format!("handoff-supervisor-{command}.1");
        let page = read(&name);
        let out = Command::new(BIN)
            .args([command, "--help"])
            .output()
            .unwrap();
        for option in text(&out.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with("--"))
        {
            let option = option.trim_end_matches(',').replace('-', "\\-");
            assert!(page.contains(&option), "{name} lacks {option}:\n{page}");
        }
        pages.push(name);
    }
    let mut written: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    pages.sort();
    assert_eq!(written, pages, "no page more, none less");

    // man renders each page, when the machine has man.
    if Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        for name in &pages {
            let out = Command::new("man")
                .args(["-l", "-P", "cat"])
                .arg(man.join(name))
                .env("LC_ALL", "C")
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            let shown = text(&out.stdout);
            assert!(out.status.success(), "man -l {name}: {}", text(&out.stderr));
            assert!(
                shown.contains("NAME")
                    && shown.contains("SYNOPSIS")
                    && (name == "handoff-supervisor.1" || shown.contains("--config <FILE>")),
                "{name} as man shows it:\n{shown}"
            );
        }
    }

    // The bash completion loads, and completes commands and options.
    let completions = dir.path().join("completions");
    let bash = completions.join("handoff-supervisor.bash");
    // The function `complete -p` names is called as bash would call it.
    let complete = |words: &str| {
        let script = format!(
            "source \"$0\" && complete -p handoff-supervisor && \
             function=$(complete -p handoff-supervisor | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p') && \
             COMP_WORDS=({words}) && COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) && \
             \"$function\" handoff-supervisor \"${{COMP_WORDS[COMP_CWORD]}}\" \
                 \"${{COMP_WORDS[COMP_CWORD-1]}}\" && printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(&bash)
            .output()
            .unwrap();
        assert!(out.status.success(), "{words}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let out = complete("handoff-supervisor tr");
    let (registered, offered) = out.split_once('\n').unwrap_or_default();
    assert!(
        registered.starts_with("complete ") && registered.ends_with(" handoff-supervisor"),
        "{out}"
    );
    assert_eq!(offered.lines().collect::<Vec<_>>(), ["trigger"], "{out}");
    let out = complete("handoff-supervisor status --");
    for option in ["--config", "--json", "--prometheus"] {
        assert!(
            out.lines().any(|l| l == option),
            "{option} not completed:\n{out}"
        );
    }
    // zsh and fish: the files, and their syntax where the shell is installed.
    for (shell, file) in [
        ("zsh", "_handoff-supervisor"),
        ("fish", "handoff-supervisor.fish"),
    ] {
        let path = completions.join(file);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("handoff-supervisor"));
        if let Ok(out) = Command::new(shell).arg("-n").arg(&path).output() {
            assert!(
                out.status.success(),
                "{shell} -n {file}: {}",
                text(&out.stderr)
            );
        }
    }
}

#[test]
fn bad_configs_are_refused_before_anything_starts() {
    let f = Fixture::new();
    let good = std::fs::read_to_string(f.write_config("")).unwrap();
    let not_executable = f.path("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let binary = noop_service().display().to_string();
    let replace = |from: &str, to: &str| {
        assert!(good.contains(from), "{from}");
        good.replacen(from, to, 1)
    };
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key in [service]",
            replace("data_dir = ", "bianry = \"x\"\ndata_dir = "),
            vec!["bianry", "unknown field"],
        ),
        (
            "unknown table",
            format!("{good}\n[servce]\n"),
            vec!["servce"],
        ),
        (
            "unknown key in [[listener]]",
            replace("address = ", "adress = \"x\"\naddress = "),
            vec!["adress"],
        ),
        (
            "unknown key in [timeouts]",
            format!("{good}\n[timeouts]\ndeadline = 5\n"),
            vec!["deadline", "deadline_secs"],
        ),
        (
            "unknown key in [restart]",
            format!("{good}\n[restart]\npolcy = \"never\"\n"),
            vec!["polcy"],
        ),
        (
            "missing binary",
            replace(&binary, "/nonexistent/service"),
            vec!["[service] binary", "/nonexistent/service"],
        ),
        (
            "binary not executable",
            replace(&binary, not_executable.to_str().unwrap()),
            vec!["[service] binary", "not executable"],
        ),
        (
            "binary not in PATH",
            replace(&binary, "no-such-service-anywhere"),
            vec!["[service] binary", "PATH"],
        ),
        (
            "missing control_socket",
            replace("control_socket = \"control.sock\"", ""),
            vec!["control_socket"],
        ),
        (
            "missing [service]",
            "[[listener]]\nname = \"kv\"\naddress = \"tcp://127.0.0.1:1\"\n".into(),
            vec!["service"],
        ),
        (
            "args not a list",
            replace("args = [", "args = \"--x\"\nargz = ["),
            vec!["args"],
        ),
        (
            "bad address: no scheme",
            replace("tcp://", ""),
            vec!["address", "kv"],
        ),
        (
            "bad address: typo",
            replace("tcp://", "tcp//"),
            vec!["address", "tcp//"],
        ),
        (
            "bad address: no port",
            replace(&format!("tcp://{}", f.addr), "tcp://127.0.0.1"),
            vec!["address", "PORT"],
        ),
        (
            "bad address: port out of range",
            replace(&format!("tcp://{}", f.addr), "udp://127.0.0.1:99999"),
            vec!["address", "99999"],
        ),
        (
            "bad address: empty unix path",
            replace(&format!("tcp://{}", f.addr), "unix:"),
            vec!["address", "unix:"],
        ),
        (
            "bad address: unix directory missing",
            replace(
                &format!("tcp://{}", f.addr),
                "unix:/nonexistent/dir/kv.sock",
            ),
            vec!["address", "/nonexistent/dir"],
        ),
        (
            "duplicate listener",
            format!("{good}\n[[listener]]\nname = \"kv\"\naddress = \"tcp://127.0.0.1:1\"\n"),
            vec!["kv", "already defined"],
        ),
        (
            "listener name with a colon",
            replace("name = \"kv\"", "name = \"k:v\""),
            vec!["k:v", "':'"],
        ),
        (
            "trigger socket directory missing",
            replace("\"trigger.sock\"", "\"/nonexistent/dir/trigger.sock\""),
            vec!["trigger_socket", "/nonexistent/dir"],
        ),
        (
            "drain longer than the deadline",
            format!("{good}\n[timeouts]\ndeadline_secs = 5\ndrain_grace_secs = 10\n"),
            vec!["drain_grace_secs", "deadline_secs"],
        ),
        (
            "negative timeout",
            format!("{good}\n[timeouts]\ndeadline_secs = -1\n"),
            vec!["deadline_secs"],
        ),
        (
            "bad restart policy",
            format!("{good}\n[restart]\npolicy = \"sometimes\"\n"),
            vec!["policy", "sometimes"],
        ),
        (
            "metrics on a unix socket",
            format!("{good}\n[metrics]\naddress = \"unix:/tmp/m.sock\"\n"),
            vec!["[metrics] address"],
        ),
        (
            "TOML syntax error",
            format!("{good}\n[timeouts\n"),
            vec!["line"],
        ),
    ];
    for (name, config, expected) in cases {
        std::fs::write(f.config(), &config).unwrap();
        for command in ["run", "check"] {
            let out = f.cli(&[command]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} ({command}): {stderr}");
            assert!(
                stderr.contains(&f.config().display().to_string()),
                "{name}: the message does not name the file: {stderr}"
            );
            for word in &expected {
                assert!(stderr.contains(word), "{name}: {word:?} not in: {stderr}");
            }
        }
        // Nothing started: no trigger socket, no data directory.
        assert!(!f.path("trigger.sock").exists(), "{name}");
        assert!(!f.path("data").exists(), "{name}");
    }

    // Unreadable files name their path.
    for path in [f.path("missing.toml"), f.dir.path().to_owned()] {
        let out = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("cannot read config file"), "{stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    }
}

/// The C example service (examples/c), built as `make build` does.
fn kv_c() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let root = common::root();
    BUILD.call_once(|| {
        let status = Command::new("make")
            .args(["-s", "-C"])
            .arg(root.join("examples/c"))
            .env("PKG_CONFIG_PATH", root.join("target/pkgconfig"))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "building examples/c failed (run `make build` first)"
        );
    });
    root.join("examples/c/build/kv-c")
}

/// One request on a fresh connection; any failure is an error.
fn kv_request(addr: &str, line: &str) -> Result<String, String> {
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut answer)
        .map_err(|e| format!("read: {e}"))?;
    Ok(answer.trim_end().to_string())
}

#[test]
fn the_c_example_service_keeps_every_write_across_triggers() {
    let f = Fixture::new();
    f.write_config_for(&kv_c(), "NOOP_TEST = \"1\"", "");
    let _supervisor = f.run();
    let first = wait_for_within(Duration::from_secs(10), "kv-c to answer", || {
        let pid = f.try_status()?["incumbent"]["pid"].as_u64()?;
        let answer = kv_request(&f.addr, "PING").ok()?;
        (answer == format!("PONG {pid} c")).then_some(pid)
    });

    // Writes on fresh connections, all through the handoffs: none may be
    // refused, reset or lost.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let written = std::sync::Arc::new(AtomicUsize::new(0));
    let writer = {
        let (addr, stop, written) = (f.addr.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let key = format!("k{}", acknowledged.len());
                let answer = kv_request(&addr, &format!("SET {key} v"))
                    .unwrap_or_else(|e| panic!("SET {key}: {e}"));
                assert!(answer.starts_with("OK "), "SET {key}: {answer}");
                acknowledged.push(key);
                written.store(acknowledged.len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
            acknowledged
        })
    };
    for _ in 0..3 {
        // Each generation acknowledges writes before the next trigger.
        let target = written.load(Ordering::Relaxed) + 10;
        wait_for_within(Duration::from_secs(30), "ten more writes", || {
            (written.load(Ordering::Relaxed) >= target).then_some(())
        });
        let out = f.cli(&["trigger", "--quiet"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.join().unwrap();
    assert!(
        acknowledged.len() > 10,
        "only {} writes",
        acknowledged.len()
    );
    for key in &acknowledged {
        assert_eq!(
            kv_request(&f.addr, &format!("GET {key}")).unwrap(),
            "VALUE v"
        );
    }
    let status = f.status();
    assert_ne!(status["incumbent"]["pid"].as_u64(), Some(first));
    assert_eq!(status["generation"], 4);
    assert_eq!(status["counters"]["committed"], 3);
}

#[test]
fn the_example_config_is_valid() {
    let f = Fixture::new();
    let example = common::root().join("examples/systemd/kv.toml");
    let dir = f.dir.path().display().to_string();
    std::fs::create_dir_all(f.path("run")).unwrap();
    let text_ = std::fs::read_to_string(example)
        .unwrap()
        .replace("/usr/local/bin/kv-c", noop_service().to_str().unwrap())
        .replace("/run/kv", &format!("{dir}/run"))
        .replace("/var/lib/kv", &format!("{dir}/lib"));
    std::fs::write(f.config(), text_).unwrap();
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// The library's progress observer, which `trigger` prints from: every
/// phase once, in order, with the handoff's id; a rollback reports only the
/// phases that completed.
#[test]
fn perform_handoff_with_reports_each_phase_as_it_completes() {
    use handoff::supervisor::{HandoffPhase, SpawnSpec, Supervisor};
    use std::os::fd::OwnedFd;

    let dir = tempfile::tempdir().unwrap();
    let (data, control) = (dir.path().join("data"), dir.path().join("control.sock"));
    let (listener, addr) = tcp_listener();
    let supervisor = Supervisor::new(&control)
        .with_listener("kv", OwnedFd::from(listener))
        .unwrap();
    let mut reaper = common::Reaper::default();
    let command = common::service_command(&noop_service(), &data, &control, &[]);
    let incumbent = reaper.keep(supervisor.spawn_cold(&command).unwrap());
    common::wait_for_pong(&addr, incumbent, Duration::from_secs(10));

    let mut failing = SpawnSpec::new(noop_service());
    failing.command =
        common::service_command(&noop_service(), &data, &control, &["--exit-before-ready"]);
    let mut seen = Vec::new();
    let outcome = supervisor
        .perform_handoff_with(&failing, &mut |e| seen.push((e.handoff_id, e.phase)))
        .unwrap();
    assert!(!outcome.committed);
    let phases: Vec<HandoffPhase> = seen.iter().map(|(_, p)| *p).collect();
    assert_eq!(phases, &HandoffPhase::ALL[..4]);
    assert!(seen.iter().all(|(id, _)| *id == outcome.handoff_id));

    let mut seen = Vec::new();
    let mut spec = SpawnSpec::new(noop_service());
    spec.command = command;
    let outcome = supervisor
        .perform_handoff_with(&spec, &mut |e| {
            seen.push((e.phase, e.duration, e.successor_pid))
        })
        .unwrap();
    assert!(outcome.committed);
    let successor = outcome.successor.unwrap();
    let phases: Vec<HandoffPhase> = seen.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(phases, HandoffPhase::ALL);
    let successor = reaper.keep(successor);
    for (phase, duration, successor_pid) in &seen {
        assert_eq!(*duration, outcome.timings.of(*phase), "{phase:?}");
        // Started before the incumbent's Hello is read: known from the first.
        assert_eq!(*successor_pid, Some(successor), "{phase:?}");
    }
}
