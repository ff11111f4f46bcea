//! Production faults through the real `handoff-supervisor run`: each ends
//! with a serving incumbent (or a clear refusal), not with a broken build
//! restarted forever, a stray process, or a silently dropped trigger.
#![allow(unsafe_code)]

#[path = "common/cli.rs"]
mod cli;
mod common;
mod tmpfs;

use cli::{text, wait_for, Fixture, Layout};
use common::pong_pid;

/// A build that commits and then dies within its probation is replaced by
/// the build that served before it, cold, and is not started again.
#[test]
fn a_build_that_dies_right_after_its_commit_gives_way_to_the_previous_one() {
    let f = Fixture::new();
    let old = f.wrapper("old-build", "--identity old");
    f.write_config_for(&old, "", "[restart]\ninitial_backoff_ms = 50\n");
    let supervisor = f.run();
    let first = f.wait_serving();
    assert_eq!(f.identity().as_deref(), Some("old"));

    let bad = f.wrapper("bad-build", "--identity bad --crash-after-ready-ms 100");
    let out = f.cli(&["trigger", "--binary", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let restored = wait_for("the previous build to serve again", || {
        let status = f.try_status()?;
        let pid = status["incumbent"]["pid"].as_u64()? as u32;
        (pid != first && f.identity()?.as_str() == "old" && pong_pid(&f.addr) == Some(pid))
            .then_some((pid, status))
    });
    let (pid, status) = restored;
    assert_eq!(status["state"], "serving");
    assert_eq!(status["incumbent"]["binary"], old.to_str().unwrap());
    let failure = &status["probation_failure"];
    assert_eq!(failure["binary"], bad.to_str().unwrap(), "{status:#}");
    assert_eq!(failure["restored"], old.to_str().unwrap(), "{status:#}");
    assert!(
        failure["how"].as_str().unwrap().contains("status 70"),
        "{status:#}"
    );
    // The broken build is refused from now on, unless forced.
    assert_eq!(status["refused_binary"]["binary"], bad.to_str().unwrap());
    let out = f.cli(&["trigger", "--binary", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );
    // The restored build serves on: it was started once, and it still runs.
    assert_eq!(f.status()["counters"]["restarts"], 1);
    assert_eq!(pong_pid(&f.addr), Some(pid));
    let log = supervisor.log_text();
    assert!(log.contains("probation"), "{log}");
    assert!(log.contains("bringing back"), "{log}");
}

/// While the incumbent waits out its restart backoff, a trigger starts the
/// requested binary at once.
#[test]
fn a_trigger_while_the_service_is_restarting_starts_the_requested_binary() {
    let f = Fixture::new();
    f.write_config("[restart]\ninitial_backoff_ms = 600000\nmax_backoff_secs = 600\n");
    let _supervisor = f.run();
    let first = f.wait_serving();
    handoff::spawn::signal_pid(first, libc::SIGKILL);
    wait_for("the supervisor to wait out its backoff", || {
        (f.try_status()?["state"] == "restarting").then_some(())
    });

    let good = f.wrapper("good-build", "--identity good");
    let out = f.cli(&["trigger", "--binary", good.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("started"), "{stdout}");
    let pid = f.wait_serving();
    assert_ne!(pid, first);
    assert_eq!(f.identity().as_deref(), Some("good"));
    let status = f.status();
    assert_eq!(status["state"], "serving");
    assert_eq!(status["incumbent"]["binary"], good.to_str().unwrap());
    assert!(status["restart_in_secs"].is_null(), "{status:#}");
}

/// Every process, with the fields of its /proc/PID/stat after the command
/// name: state, ppid, pgrp, ...
fn processes() -> Vec<(u32, Vec<String>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        found.push((pid, rest.split(' ').map(String::from).collect()));
    }
    found
}

/// Processes whose parent is `pid`, and their process groups.
fn children_of(pid: u32) -> Vec<(u32, u32)> {
    processes()
        .into_iter()
        .filter(|(_, fields)| fields[1].parse() == Ok(pid))
        .map(|(child, fields)| (child, fields[2].parse().unwrap()))
        .collect()
}

/// Processes of the group `pgid` still running (zombies are gone).
fn group_members(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, fields)| {
            fields[2].parse() == Ok(pgid) && !matches!(fields[0].as_str(), "Z" | "X")
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Kills `pid` when the test ends, pass or fail.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        handoff::spawn::signal_pid(self.0, libc::SIGKILL);
    }
}

/// A successor that forks a helper and hangs before Ready: when the handoff
/// rolls back at its deadline, the helper goes with it.
#[test]
fn a_successor_that_forks_and_hangs_leaves_no_process_behind() {
    let f = Fixture::new();
    f.write_config("[timeouts]\ndeadline_secs = 3\ndrain_grace_secs = 1\n");
    let supervisor = f.run();
    let incumbent = f.wait_serving();
    let forking = f.wrapper("forking-successor", "--fork-and-hang-before-ready");

    let trigger = f.spawn_trigger(&forking, std::process::Stdio::null());
    let successor = wait_for("the successor to wait for Ready", || {
        let status = f.try_status()?;
        (status["handoff"]["phase"] == "ready").then_some(())?;
        status["handoff"]["successor_pid"]
            .as_u64()
            .map(|p| p as u32)
    });
    let (helper, _) = wait_for("the successor's helper", || {
        children_of(successor).into_iter().next()
    });
    let _guard = KillOnDrop(helper);
    let out = trigger.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("deadline"),
        "{}",
        text(&out.stderr)
    );

    // By the time the rollback is reported, the successor's whole group
    // has been stopped.
    assert!(!handoff::spawn::pid_alive(successor));
    assert!(
        !handoff::spawn::pid_alive(helper),
        "the helper {helper} outlived the rollback\n{}",
        supervisor.log_text()
    );
    assert_eq!(group_members(successor), Vec::<u32>::new());
    assert_eq!(pong_pid(&f.addr), Some(incumbent));
}

/// Run the supervisor with RLIMIT_NOFILE set to `limit` (soft and hard).
fn with_descriptor_limit(limit: u64) -> impl FnOnce(&mut std::process::Command) {
    move |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only setrlimit, async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// At any descriptor limit, a cold start with eight listeners either
/// starts or fails naming the limit, never with a misleading errno.
#[test]
fn a_cold_start_at_a_low_descriptor_limit_starts_or_names_the_limit() {
    let f = Fixture::new();
    let mut listeners = String::new();
    for i in 1..8 {
        listeners.push_str(&format!(
            "[[listener]]\nname = \"extra{i}\"\naddress = \"tcp://127.0.0.1:0\"\n"
        ));
    }
    f.write_config(&listeners);
    let (mut started, mut named) = (Vec::new(), Vec::new());
    for limit in 12..=24 {
        let mut supervisor = f.run_with(with_descriptor_limit(limit));
        let exited = wait_for("a cold start or an exit", || {
            if supervisor.log_text().contains("cold start:") {
                return Some(false);
            }
            supervisor.child.try_wait().unwrap().map(|_| true)
        });
        let log = supervisor.log_text();
        assert!(!log.contains("Invalid argument"), "limit {limit}:\n{log}");
        if !exited {
            started.push(limit);
        } else if log.contains("cannot start") {
            assert!(
                log.contains(&format!("descriptor limit {limit} too low for 8 listeners")),
                "limit {limit}:\n{log}"
            );
            named.push(limit);
        } else {
            assert!(log.contains("Too many open files"), "limit {limit}:\n{log}");
        }
    }
    assert!(
        !started.is_empty(),
        "no limit up to 24 let the service start"
    );
    assert!(!named.is_empty(), "no limit failed at the cold start");
    // Where the supervisor itself has room, the service gets its listeners:
    // the lowest limit that started is at most the next after a failure.
    assert_eq!(started.first(), named.last().map(|l| l + 1).as_ref());
}

/// Idle connections to the trigger socket, as many as fit, at a low
/// descriptor limit: an operator's trigger still gets through, the idle
/// ones are told why they are closed, and the log says so.
#[test]
fn idle_trigger_connections_cannot_lock_the_operator_out() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    let f = Fixture::new();
    f.write_config("");
    let supervisor = f.run_with(with_descriptor_limit(64));
    let incumbent = f.wait_serving();
    // More than the supervisor has descriptors for; each sends nothing.
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(f.path("trigger.sock")).unwrap())
        .collect();

    let out = f.cli(&["trigger"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        supervisor.log_text()
    );
    assert_ne!(f.wait_serving(), incumbent);
    let log = supervisor.log_text();
    assert!(log.contains("idle connection"), "{log}");
    // The oldest idle connection was closed with an answer, not reset.
    let mut oldest = &idle[0];
    oldest
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    oldest.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("error "), "{answer:?}");
}

/// A supervisor started with SIGCHLD ignored (a disposition that survives
/// exec, as some init scripts and containers leave it): a successor that
/// exits before Ready is still seen to exit, and the rollback says how.
#[test]
fn a_successor_exit_is_seen_when_the_host_ignores_sigchld() {
    use std::os::unix::process::CommandExt;

    let f = Fixture::new();
    f.write_config("[timeouts]\ndeadline_secs = 30\n");
    let _supervisor = f.run_with(|command| {
        // SAFETY: between fork and exec only signal(2), async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                Ok(())
            });
        }
    });
    let incumbent = f.wait_serving();
    let failing = f.wrapper("failing-successor", "--exit-before-ready");
    let out = f.cli(&["trigger", "--binary", failing.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("in phase ready"), "{stderr}");
    assert!(
        stderr.contains("successor exited with status 3"),
        "{stderr}"
    );
    assert_eq!(pong_pid(&f.addr), Some(incumbent));
}

/// The library on its own, in a process that ignores SIGCHLD (run as a
/// child of this test, so the disposition touches no other test): a child
/// the kernel reaped is seen gone, not alive forever.
#[test]
fn a_child_reaped_by_the_kernel_is_seen_gone() {
    const NAME: &str = "a_child_reaped_by_the_kernel_is_seen_gone";
    if std::env::var_os("HANDOFF_TEST_SIGCHLD_IGNORED").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--test-threads", "1"])
            .env("HANDOFF_TEST_SIGCHLD_IGNORED", "1")
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(stdout.contains("1 passed"), "{stdout}");
        return;
    }
    // SAFETY: signal(2) in this single-test process, before any child.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let command = handoff::spawn::Command {
        binary: "/bin/sh".into(),
        args: vec!["-c".into(), "exit 3".into()],
        env: Vec::new(),
    };
    let mut child = handoff::spawn::spawn(&command, &[], None).unwrap();
    let status = child
        .wait_timeout(std::time::Duration::from_secs(30))
        .expect("the exited child is still seen alive");
    assert_eq!(status, handoff::spawn::STATUS_LOST);
    assert!(handoff::spawn::describe_status(status).starts_with("exited"));
    assert_eq!(child.terminate(std::time::Duration::from_secs(1)), status);
}

/// A restart after a crash runs what the config file says now: a changed
/// environment applies, as it would to a handoff.
#[test]
fn a_restart_after_a_crash_applies_the_config_file_as_it_is_now() {
    let f = Fixture::new();
    f.write_config("[restart]\ninitial_backoff_ms = 50\n");
    let _supervisor = f.run();
    let first = f.wait_serving();
    let environ = |pid: u32| text(&std::fs::read(format!("/proc/{pid}/environ")).unwrap());
    assert!(environ(first).contains("NOOP_TEST=1"));

    f.write_config_for(
        &common::noop_service(),
        "NOOP_TEST = \"2\"",
        "[restart]\ninitial_backoff_ms = 50\n",
    );
    handoff::spawn::signal_pid(first, libc::SIGKILL);
    let second = wait_for("the restarted incumbent", || {
        let pid = f.wait_serving();
        (pid != first).then_some(pid)
    });
    let env = environ(second);
    assert!(env.contains("NOOP_TEST=2"), "{env}");
    assert!(!env.contains("NOOP_TEST=1"), "{env}");
}

/// `deadline_secs` bounds the whole handoff: a successor that never gets
/// Ready is rolled back, and the trigger says why. (How long it took is
/// printed, not asserted: the library's waits end at the deadline itself,
/// `src/supervisor/run.rs`; a timed assertion would only measure the
/// machine.)
#[test]
fn a_handoff_past_its_deadline_rolls_back_and_says_so() {
    let f = Fixture::new();
    f.write_config("[timeouts]\ndeadline_secs = 5\ndrain_grace_secs = 1\n");
    let _supervisor = f.run();
    let incumbent = f.wait_serving();
    let hanging = f.wrapper("hanging-successor", "--hang-before-ready");
    let out = f.cli(&["trigger", "--binary", hanging.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("before the deadline"), "{stderr}");
    eprintln!("{stderr}");
    assert_eq!(pong_pid(&f.addr), Some(incumbent));
}

/// A short deadline alone is a valid config: the drain budget defaults to
/// a share of it, rather than 25 s that would not fit.
#[test]
fn a_short_deadline_alone_is_valid() {
    let f = Fixture::new();
    f.write_config("[timeouts]\ndeadline_secs = 5\n");
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let _supervisor = f.run();
    let first = f.wait_serving();
    let out = f.cli(&["trigger"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(f.wait_serving(), first);
    // An explicit drain longer than the deadline is still refused.
    f.write_config("[timeouts]\ndeadline_secs = 5\ndrain_grace_secs = 10\n");
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("drain_grace_secs"));
}

/// The data directory's filesystem fills up (a real tmpfs of 2 MiB, filled
/// until the kernel answers ENOSPC) under the C example service, which
/// writes a log there: a handoff may fail on a full disk, but the service
/// never goes down, the trigger says what happened, and every write
/// acknowledged before is still there; once space is back, writes and
/// handoffs go on.
#[test]
fn a_full_data_disk_never_takes_the_service_down() {
    let Some(fs) = tmpfs::Tmpfs::mount("a_full_data_disk_never_takes_the_service_down") else {
        return;
    };
    let f = Fixture::new();
    let kv_c = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c/build/kv-c");
    let data = fs.path().join("data");
    let on_tmpfs = Layout {
        data_dir: data.clone(),
        ..Layout::relative()
    };
    f.write_config_laid_out(&kv_c, "", &on_tmpfs, "");
    let _supervisor = f.run();
    let first = f.wait_serving();
    let acknowledged: Vec<String> = (0..20)
        .map(|i| {
            let answer = common::request(&f.addr, &format!("SET before{i} v{i}")).unwrap();
            assert!(answer.starts_with("OK "), "{answer}");
            format!("before{i}")
        })
        .collect();

    fs.fill();
    let out = f.cli(&["trigger"]);
    let stderr = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("on a full disk: exit {:?}: {stderr}", out.status.code());
    match out.status.code() {
        Some(0) => assert!(stderr.contains("committed"), "{stderr}"),
        Some(1) => assert!(
            stderr.contains("rolled back") && stderr.contains("No space left on device"),
            "a rollback that does not say the disk is full: {stderr}"
        ),
        other => panic!("trigger exit {other:?}: {stderr}"),
    }
    let serving = f.wait_serving();
    if out.status.code() == Some(1) {
        assert_eq!(serving, first, "a rollback keeps the incumbent");
    }
    assert_eq!(
        handoff::lock::DataDirLock::probe(&data).unwrap(),
        handoff::lock::LockState::Held { pid: Some(serving) },
        "one lock holder, the one serving"
    );
    for (i, key) in acknowledged.iter().enumerate() {
        assert_eq!(
            common::request(&f.addr, &format!("GET {key}")).unwrap(),
            format!("VALUE v{i}"),
            "{key}"
        );
    }

    fs.free();
    let answer = common::request(&f.addr, "SET after v").unwrap();
    assert!(answer.starts_with("OK "), "{answer}");
    let out = f.cli(&["trigger"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    f.wait_serving();
    assert_eq!(common::request(&f.addr, "GET after").unwrap(), "VALUE v");
}
