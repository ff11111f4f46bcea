//! The crash matrix: every row of DESIGN §2 "Aborts and recovery" that a
//! crash produces, driven through the named crash points (feature
//! `crash-points`, `HANDOFF_CRASH_AT=<name>`). The supervisor is
//! `examples/test-supervisor` (tests/peers/test_supervisor.rs), in its own
//! process so that killing it does not kill the test; the service is the C
//! `noop-service`, run against the crash-enabled libhandoff.so through
//! LD_LIBRARY_PATH.
//!
//! Run it in its own target directory, so the normal build never contains
//! crash points (`make test-crash`):
//!
//! ```text
//! CARGO_TARGET_DIR=target/crash cargo test --release --features crash-points --test crash_recovery
//! ```
//!
//! Each case names the journal it expects the killed run to leave: for a
//! supervisor killed at the point, the phase of the last step it journalled
//! (none before the successor's Hello), which the restarted supervisor must
//! report with the outcome the case expects (`none`, rolled back to the old
//! incumbent, or committed to the successor); for any other process killed,
//! no journal (the surviving supervisor cleared it).
//!
//! After every case: exactly one live process holds the data-dir lock and it
//! is the one answering PING (invariant 1), the journal is gone, every other
//! process the case started is dead (no orphan), this process has as many
//! descriptors as before, and the process serving after recovery (the
//! rolled-back incumbent, the successor or a cold restart), and the one the
//! fresh handoff starts, hold exactly the descriptors of the cold-started
//! incumbent (invariant 6; compared from fd 3 up, by target, sockets and
//! pipes by kind). Then a fresh handoff commits, which shows the system is
//! usable again.
//!
//! N killed after Ready (N_AFTER_READY): "from Ready on, N is authoritative
//! whatever happens to O", and N may already have accepted work, so the
//! supervisor commits and O steps down; what the library guarantees is a
//! committed outcome, O gone, the lock free (the kernel dropped N's flock),
//! nothing left running and no journal. The service is then down like after
//! any incumbent's death, until the supervisor restarts it cold (DESIGN §2,
//! last row), which the case does before its fresh handoff.
#![cfg(feature = "crash-points")]

mod common;
#[path = "common/crash.rs"]
#[macro_use]
mod crash;

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{noop_service, open_fds};
use crash::{
    become_subreaper, check_recovery, committed_pid, crash_build, describe_exit,
    old_incumbent_exit, parse_recovery, phase_name, ping, run_with_listener, show,
    stable_fd_profile, wait_fd_profile, After, Case, CrashBuild, Run, Who, World, BOUNDARY_CASES,
};
use handoff::journal::Journal;
use handoff::lock::{DataDirLock, LockState};
use handoff::spawn::{describe_status, Command};

/// How long anything that should happen may take before the case fails.
const SETTLE: Duration = Duration::from_secs(8);

/// One case's world (the shared part: crash::World) and the listener's address.
struct Trial<'b> {
    world: World<'b>,
    addr: String,
}

impl<'b> std::ops::Deref for Trial<'b> {
    type Target = World<'b>;
    fn deref(&self) -> &World<'b> {
        &self.world
    }
}

impl std::ops::DerefMut for Trial<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.world
    }
}

impl<'b> Trial<'b> {
    fn new(build: &'b CrashBuild) -> Result<Trial<'b>, String> {
        let (world, addr) = World::new(build, SETTLE)?;
        Ok(Trial { world, addr })
    }

    /// Start a generation with no supervisor handshake (as the supervisor
    /// does at start-up or after the incumbent died), stderr to the log.
    fn cold_start(&mut self, crash_at: Option<&str>) -> Result<u32, String> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "-c".into(),
            // The shell dedupes LD_LIBRARY_PATH (cargo may set one already).
            r#"export LD_LIBRARY_PATH="$CRASH_TEST_LIB"; exec "$0" "$@" 2>>"$CRASH_TEST_LOG""#
                .into(),
            noop_service().into(),
        ];
        for arg in [
            "--data-dir".into(),
            self.data(),
            "--control-socket".into(),
            self.control(),
            "--report".into(),
            self.report(),
        ] {
            args.push(arg.into());
        }
        let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = vec![
            ("CRASH_TEST_LIB".into(), self.build.lib_dir.clone().into()),
            ("CRASH_TEST_LOG".into(), self.log().into()),
        ];
        if let Some(point) = crash_at {
            env.push(("HANDOFF_CRASH_AT".into(), point.into()));
        }
        let command = Command {
            binary: "/bin/sh".into(),
            args,
            env,
        };
        let child = self.cold.spawn_cold(&command).map_err(|e| e.to_string())?;
        let pid = child.pid();
        self.cold_started.push(child);
        self.wait_for_pong(pid)?;
        self.check_library(pid)?;
        Ok(pid)
    }

    fn wait_for_pong(&self, pid: u32) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE;
        let mut last = None;
        while Instant::now() < deadline {
            last = ping_pid(&self.addr, Duration::from_secs(1));
            if last == Some(pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("PING answered by {last:?}, expected pid {pid}"))
    }

    /// Run test-supervisor in `mode`; its exit status and stdout.
    fn supervise(
        &mut self,
        mode: &str,
        crash_at: Option<&str>,
    ) -> Result<(ExitStatus, String), String> {
        self.runs += 1;
        let out_path = self.path(&format!("supervisor-{}.out", self.runs));
        let stdout = File::create(&out_path).map_err(|e| e.to_string())?;
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(|e| e.to_string())?;
        let mut command = Process::new(&self.build.supervisor);
        command
            .arg("--control")
            .arg(self.control())
            .arg("--journal")
            .arg(self.journal())
            .arg("--data-dir")
            .arg(self.data())
            .arg("--service")
            .arg(noop_service())
            .arg("--service-arg")
            .arg("--report")
            .arg("--service-arg")
            .arg(self.report())
            .arg(mode)
            // Inherited by the successors it spawns.
            .env("LD_LIBRARY_PATH", &self.build.lib_dir)
            .env_remove("HANDOFF_CRASH_AT")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if let Some(point) = crash_at {
            command.env("HANDOFF_CRASH_AT", point);
        }
        let status = run_with_listener(
            &mut command,
            self.listener.as_raw_fd(),
            Duration::from_secs(30),
            mode,
        )?;
        let stdout = fs::read_to_string(&out_path).map_err(|e| e.to_string())?;
        Ok((status, stdout.trim().to_string()))
    }

    /// The service settled with `incumbent` in charge: it answers PING,
    /// holds the lock (and nobody else does), the journal is gone, nothing
    /// else the case started is alive.
    fn check_settled(&mut self, incumbent: u32) -> Result<(), String> {
        self.wait_for_pong(incumbent)?;
        let lock = DataDirLock::probe(&self.data()).map_err(|e| e.to_string())?;
        ensure!(
            lock == LockState::Held {
                pid: Some(incumbent)
            },
            "lock {lock:?}, expected held by {incumbent}"
        );
        ensure!(
            !self.journal().exists(),
            "journal {} left behind",
            self.journal().display()
        );
        self.check_no_temp_files()?;
        self.check_no_orphan(Some(incumbent))
    }

    /// Nobody serves: no process of the case is alive, the lock is free,
    /// the journal is gone, and a PING waits in the accept queue unanswered.
    fn check_down(&mut self) -> Result<(), String> {
        self.check_no_orphan(None)?;
        let lock = DataDirLock::probe(&self.data()).map_err(|e| e.to_string())?;
        ensure!(lock == LockState::Free, "lock {lock:?} with nobody serving");
        self.check_no_temp_files()?;
        ensure!(
            !self.journal().exists(),
            "journal {} left behind",
            self.journal().display()
        );
        let answer = ping_pid(&self.addr, Duration::from_millis(200));
        ensure!(
            answer.is_none(),
            "PING answered by {answer:?} with nobody serving"
        );
        Ok(())
    }
}

/// PING on a fresh connection; the answering pid.
fn ping_pid(addr: &str, timeout: Duration) -> Option<u32> {
    ping(addr.parse().ok()?, timeout).map(|(pid, _)| pid)
}

fn run_case(build: &CrashBuild, case: &Case) -> Result<String, String> {
    let mut trial = Trial::new(build)?;
    let result = drive_case(&mut trial, case);
    // CRASH_MATRIX_LOGS=1 shows every case's processes' stderr.
    if std::env::var_os("CRASH_MATRIX_LOGS").is_some() {
        show(&format!("--- {} log ---\n{}", case.point, trial.log_tail()));
    }
    result.map_err(|e| format!("{e}\n--- log ---\n{}", trial.log_tail()))
}

fn drive_case(t: &mut Trial<'_>, case: &Case) -> Result<String, String> {
    let mut notes = Vec::new();
    let old = t.cold_start((case.who == Who::O).then_some(case.point))?;
    t.check_settled(old)?;
    // Invariant 6 (no leaked descriptor): every process that serves after
    // the case (O resumed, N, a cold restart, the fresh handoff's N) must
    // hold exactly what a cold-started noop-service holds.
    let baseline = stable_fd_profile(old, t.dir.path())?;

    // The handoff that dies.
    let crash_at = (case.who != Who::O).then_some(case.point);
    let (status, out) = t.supervise("handoff", crash_at)?;
    match case.run {
        Run::Killed => ensure!(
            status.signal() == Some(libc::SIGKILL),
            "test-supervisor {} (said {out:?}), expected killed at {}",
            describe_exit(status),
            case.point
        ),
        Run::Committed => ensure!(
            status.success() && committed_pid(&out).is_some(),
            "handoff {}: {out:?}, expected committed",
            describe_exit(status)
        ),
        Run::RolledBack(why) => ensure!(
            status.code() == Some(1)
                && out.starts_with("rolled-back:")
                && why.iter().any(|w| out.contains(w)),
            "handoff {}: {out:?}, expected rolled back ({why:?})",
            describe_exit(status)
        ),
    }
    notes.push(match case.run {
        Run::Killed => format!("S {}", describe_exit(status)),
        _ => out.clone(),
    });

    // The journal the run left, against the case.
    let journal = Journal::read(&t.journal())
        .map_err(|e| e.to_string())?
        .map(|j| j.phase);
    ensure!(
        journal == case.journal,
        "journal at {} after the run, expected {}",
        phase_name(journal),
        phase_name(case.journal)
    );

    // A restarted supervisor recovers from the journal.
    let successors = t.successor_pids();
    let mut after = case.after;
    if case.who == Who::S {
        let (status, line) = t.supervise("recover", None)?;
        ensure!(
            status.success(),
            "recover {}: {line:?}",
            describe_exit(status)
        );
        notes.push(format!(
            "journal={} recover=\"{line}\"",
            phase_name(journal)
        ));
        after = check_recovery(case, &line, old, &successors)?;
    }
    if case.after == After::ReadyDecides {
        notes.push(
            if after == After::SuccessorServes {
                "N's Ready got out: N serves"
            } else {
                "N's Ready did not get out: O resumes"
            }
            .to_string(),
        );
    }
    let incumbent = match after {
        After::OldResumes => {
            t.check_settled(old)?;
            // Every point comes after the successor's start (it overlaps
            // the incumbent's Hello).
            let [successor] = successors[..] else {
                return Err(format!("expected one successor, saw {successors:?}"));
            };
            notes.push(format!("N {}", t.successor_status(successor)));
            notes.push(format!("O {old} resumed"));
            old
        }
        After::SuccessorServes => {
            let [successor] = successors[..] else {
                return Err(format!("expected one successor, saw {successors:?}"));
            };
            if case.run == Run::Committed {
                ensure!(
                    committed_pid(&out) == Some(successor),
                    "handoff said {out:?}, successor is {successor}"
                );
            }
            let status = old_incumbent_exit(t, old, case)?;
            t.check_settled(successor)?;
            t.check_library(successor)?;
            notes.push(format!(
                "N {successor} serves, old O {}",
                describe_status(status)
            ));
            successor
        }
        After::ReadyDecides => return Err("unresolved outcome".into()),
        After::NobodyServes => {
            let status = old_incumbent_exit(t, old, case)?;
            t.check_down()?;
            let ended: Vec<String> = successors
                .iter()
                .map(|&pid| format!("N {pid} {}", t.successor_status(pid)))
                .collect();
            if case.who == Who::N {
                // The crash point fired in N: it used the crash library too.
                // (Its status is ours to see unless the supervisor, having
                // seen it dead before reading its Ready, reaped it itself:
                // then it shows as "exited".)
                ensure!(
                    ended.len() == 1
                        && (ended[0].ends_with("killed by signal 9")
                            || ended[0].ends_with(" exited")),
                    "successor: {ended:?}, expected killed at {}",
                    case.point
                );
            }
            notes.push(format!(
                "down: old O {}, {}, lock free",
                describe_status(status),
                ended.join(", ")
            ));
            let restarted = t.cold_start(None)?;
            t.check_settled(restarted)?;
            notes.push(format!("cold restart {restarted} serves"));
            restarted
        }
    };
    // Nothing leaked: the same descriptors as a cold start (a rolled-back
    // O: the same as before the handoff). Deterministic for the C
    // noop-service, hence equality.
    wait_fd_profile(incumbent, t.dir.path(), &baseline, SETTLE)?;
    notes.push(format!(
        "fds as a cold start ({})",
        baseline.values().sum::<usize>()
    ));

    // The system is usable: a fresh handoff commits.
    let (status, out) = t.supervise("handoff", None)?;
    let next = committed_pid(&out);
    ensure!(
        status.success() && next.is_some(),
        "fresh handoff {}: {out:?}",
        describe_exit(status)
    );
    let next = next.unwrap_or_default();
    ensure!(next != incumbent, "fresh handoff kept {incumbent}");
    t.check_settled(next)?;
    wait_fd_profile(next, t.dir.path(), &baseline, SETTLE)?;
    notes.push("fresh handoff commits".into());
    Ok(notes.join("; "))
}

/// The tests watch this process's children: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_crash_point_recovers_to_one_serving_incumbent() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    become_subreaper();
    let build = crash_build();
    let started = Instant::now();
    show("\ncrash matrix (killed process at the named point; then recovery, checks, a fresh handoff)");
    let mut failed = Vec::new();
    for case in BOUNDARY_CASES {
        let fds_before = open_fds();
        let case_started = Instant::now();
        let mut result = run_case(build, case);
        let fds_after = open_fds();
        if result.is_ok() && fds_after != fds_before {
            result = Err(format!(
                "the test process has {fds_after} descriptors, {fds_before} before the case"
            ));
        }
        let secs = case_started.elapsed().as_secs_f64();
        match &result {
            Ok(notes) => show(&format!(
                "  {:<22} {:?}  ok   {secs:>4.1}s  {notes}",
                case.point, case.who
            )),
            Err(why) => {
                show(&format!(
                    "  {:<22} {:?}  FAIL {secs:>4.1}s  {why}",
                    case.point, case.who
                ));
                failed.push(case.point);
            }
        }
    }
    show(&format!(
        "crash matrix: {} cases, {} ok, {} failed, {:.1}s\n",
        BOUNDARY_CASES.len(),
        BOUNDARY_CASES.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    ));
    assert!(failed.is_empty(), "failed: {failed:?}");
}

/// "S restarts: it reads the journal": the journal outlives the processes
/// it names (it survives a reboot, a container restart, a long outage), so
/// a pid in it may name an unrelated process by the time a supervisor
/// recovers. Recovery must not signal a process that started after the
/// journal was written.
#[test]
fn recovery_leaves_alone_a_process_that_reused_a_journalled_pid() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    become_subreaper();
    let build = crash_build();
    let mut t = Trial::new(build).unwrap();
    let incumbent = t.cold_start(None).unwrap();
    t.check_settled(incumbent).unwrap();

    // A stranger holding the pid the journal gives the successor.
    let mut stranger = Process::new("sleep").arg("30").spawn().unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let journal = Journal {
        handoff_id: handoff::HandoffId::random(),
        phase: handoff::Phase::Sealing,
        incumbent_pid: incumbent,
        successor_pid: Some(stranger.id()),
        started_at_unix_ms: an_hour_ago
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    };
    journal.write(&t.journal()).unwrap();
    File::options()
        .write(true)
        .open(t.journal())
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();

    let (status, line) = t.supervise("recover", None).unwrap();
    let survived = stranger.try_wait().unwrap().is_none();
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(status.success(), "recover: {line}\n{}", t.log_tail());
    assert_eq!(
        parse_recovery(&line),
        ("rolled-back".to_string(), Some(incumbent))
    );
    assert!(
        survived,
        "recovery killed pid {}, which started after the journal was written\n{}",
        journal.successor_pid.unwrap_or_default(),
        t.log_tail()
    );
    t.check_settled(incumbent).unwrap();
}
