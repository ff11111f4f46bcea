//! The crash matrix with the example services: the supervisor (S), the
//! incumbent (O) and the successor (N) each killed with SIGKILL at every
//! named crash point, at every protocol boundary and inside the service's
//! drain, seal and resume_after_abort hooks, with the C, Python and Go
//! key-value services (examples/) as incumbent and successor, under client
//! load.
//!
//! Like tests/crash_recovery.rs (which runs the same boundaries with the
//! trivial C noop-service), the supervisor is `examples/test-supervisor` in
//! a process of its own, and every service generation loads the
//! crash-enabled libhandoff.so (C and Go through LD_LIBRARY_PATH, which
//! overrides their RUNPATH, Python through HANDOFF_LIBRARY; checked in
//! /proc/<pid>/maps). The successor's language rotates from case to case,
//! so the nine ordered pairs of languages all occur.
//!
//! ```text
//! make test-crash                          # both crash matrices
//! CARGO_TARGET_DIR=target/crash cargo test --release --features crash-points \
//!     --test crash_matrix_services
//! ```
//!
//! Knobs: `CRASH_MATRIX=quick` (every point once, the incumbent's language
//! rotating too: 19 cases instead of the 57 of every point with each of the
//! three services as the incumbent), `CRASH_MATRIX_ONLY=<substring>` (the
//! points whose name contains it), `CRASH_MATRIX_LOGS=1` (every case's
//! processes' stderr).
//!
//! Each case names the journal it expects the killed run to leave: for a
//! supervisor killed at the point, the phase of the last step it journalled
//! (none before the successor's Hello), which the restarted supervisor must
//! report with the outcome the case expects (`none`, rolled back to the old
//! incumbent, or committed to the successor); for any other process killed,
//! no journal (the surviving supervisor cleared it).
//!
//! After every case: exactly one live process holds the data-dir lock and
//! it is the one answering PING; the journal is gone once the supervisor
//! recovered; every other process the case started is dead (no orphan);
//! this process has as many descriptors as before the case; with the load
//! paused, the cold-started incumbent, the process serving after recovery
//! (the rolled-back incumbent, the successor or a cold restart) and the one
//! the fresh handoff starts each hold exactly the descriptors of a
//! cold-started service of their language (measured once at the start;
//! compared from fd 3 up, by target, sockets and pipes by kind); a fresh
//! handoff (to yet another language) commits; and the client load lost no
//! acknowledged write: the last acknowledged value of every key reads back
//! after recovery, and no GET ever answered something else.
//!
//! Failed requests: none may fail when no process that serves clients is
//! killed (S killed anywhere, N killed before Ready): the listener stays
//! open, the clients' connections wait in its queue. When O is killed, or N
//! after Ready, the requests in flight on the connections that process had
//! accepted die with it (requests queued meanwhile wait for the cold
//! restart): those are counted as `interrupted`, and must be resets (reset
//! or closed before a whole answer), at most two per load worker.
#![cfg(feature = "crash-points")]

mod common;
#[path = "common/crash.rs"]
#[macro_use]
mod crash;
#[path = "common/kv.rs"]
mod kv;
#[path = "common/load.rs"]
mod load;

use std::fs::{self, File, OpenOptions};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::open_fds;
use crash::{
    become_subreaper, check_recovery, committed_pid, crash_build, describe_exit,
    old_incumbent_exit, phase_name, ping, run_with_listener, show, stable_fd_profile,
    wait_fd_profile, After, Case, CrashBuild, FdProfile, Run, Who, World, BOUNDARY_CASES,
    HOOK_CASES, MOVE_CASES,
};
use handoff::journal::Journal;
use handoff::lock::{DataDirLock, LockState};
use handoff::spawn::describe_status;
use kv::{Lang, LaunchOptions, LANGS};
use load::{Load, LoadConfig, Tally};

/// How long anything that should happen may take before the case fails.
const SETTLE: Duration = Duration::from_secs(10);

impl Case {
    /// Whether the kill takes down a process that holds client connections
    /// (so requests in flight on them fail).
    fn kills_a_server(&self) -> bool {
        self.who == Who::O || self.point == "N_AFTER_READY"
    }
}

/// One case's world (the shared part: crash::World) and the listener's address.
struct Trial<'b> {
    world: World<'b>,
    addr: SocketAddr,
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
        let trial = Trial {
            world,
            addr: addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        };
        for lang in LANGS {
            kv::write_launcher(
                &trial.launcher(lang),
                lang,
                &LaunchOptions {
                    report: Some(trial.report()),
                    lib_dir: Some(build.lib_dir.clone()),
                    log: Some(trial.log()),
                    ..LaunchOptions::default()
                },
            );
        }
        Ok(trial)
    }

    fn launcher(&self, lang: Lang) -> PathBuf {
        self.path(&format!("kv-{}.sh", lang.short()))
    }

    /// Start `lang`'s service with no supervisor handshake (as the
    /// supervisor does at start-up or after the incumbent died).
    fn cold_start(&mut self, lang: Lang, crash_at: Option<&str>) -> Result<u32, String> {
        let mut command =
            common::service_command(&self.launcher(lang), &self.data(), &self.control(), &[]);
        if let Some(point) = crash_at {
            command.env.push(("HANDOFF_CRASH_AT".into(), point.into()));
        }
        let child = self.cold.spawn_cold(&command).map_err(|e| e.to_string())?;
        let pid = child.pid();
        self.cold_started.push(child);
        self.wait_for_pong(pid, lang)?;
        self.check_library(pid)?;
        Ok(pid)
    }

    fn wait_for_pong(&self, pid: u32, lang: Lang) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE;
        let mut last = None;
        while Instant::now() < deadline {
            last = ping(self.addr, Duration::from_secs(2));
            if last == Some((pid, lang.tag().to_string())) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!(
            "PING answered by {last:?}, expected pid {pid} ({})",
            lang.tag()
        ))
    }

    /// Run test-supervisor in `mode` with `successor` as the service to
    /// spawn; its exit status and stdout.
    fn supervise(
        &mut self,
        mode: &str,
        successor: Lang,
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
            .arg(self.launcher(successor))
            .arg(mode)
            .env_remove("HANDOFF_CRASH_AT")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if let Some(point) = crash_at {
            // Inherited by the successor it spawns.
            command.env("HANDOFF_CRASH_AT", point);
        }
        let status = run_with_listener(
            &mut command,
            self.listener.as_raw_fd(),
            Duration::from_secs(60),
            mode,
        )?;
        let stdout = fs::read_to_string(&out_path).map_err(|e| e.to_string())?;
        Ok((status, stdout.trim().to_string()))
    }

    /// `incumbent` (of `lang`) serves: it answers PING, it alone holds the
    /// lock, the journal is gone, nothing else the case started is alive.
    fn check_settled(&mut self, incumbent: u32, lang: Lang) -> Result<(), String> {
        self.wait_for_pong(incumbent, lang)?;
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

    /// Nobody serves: no process of the case is alive, the lock is free and
    /// the journal gone (the clients' connections wait in the queue).
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
        Ok(())
    }
}

/// One row of the matrix: a crash point with an incumbent and a successor
/// language.
struct Row {
    case: &'static Case,
    incumbent: Lang,
    successor: Lang,
}

/// What a row produced, for the report.
struct RowResult {
    notes: String,
    load: Tally,
    /// Keys read back after recovery.
    verified: usize,
}

fn run_row(build: &CrashBuild, row: &Row, baselines: &Baselines) -> Result<RowResult, String> {
    let mut trial = Trial::new(build)?;
    let mut load = None;
    let result = drive_row(&mut trial, row, baselines, &mut load);
    // On failure, stop the clients too.
    if let Some(load) = load.take() {
        load.stop();
    }
    if std::env::var_os("CRASH_MATRIX_LOGS").is_some() {
        show(&format!(
            "--- {} {}->{} log ---\n{}",
            row.case.point,
            row.incumbent.short(),
            row.successor.short(),
            trial.log_tail()
        ));
    }
    result.map_err(|e| format!("{e}\n--- log ---\n{}", trial.log_tail()))
}

/// The client load of every case: four workers, each writing its own 16
/// keys over and over, so that a generation that serves an older value of
/// a key, or reverts one, is caught: the load and `load::verify` check the
/// last acknowledged value of each key. (With 64 keys a worker, no key is
/// written twice in the shorter cases: ~150 writes, ~40 a worker.)
fn load_config() -> LoadConfig {
    LoadConfig {
        pace: Duration::from_millis(4),
        key_space: Some(16),
        ..LoadConfig::default()
    }
}

/// Requests a case may lose when the kill takes down a process that holds
/// client connections: each worker has at most one request in flight on
/// such a connection when the process dies, and one more may meet the
/// connection already dead; allow twice the number of workers.
fn interrupted_allowed(config: &LoadConfig) -> u64 {
    2 * (config.fresh + config.persistent) as u64
}

/// The only failure a killed server produces: its connections reset, or
/// closed before a whole answer (both counted as `reset` by the load).
/// Nothing is ever refused (the listener stays open), and the requests
/// queued while nobody serves are answered by the cold restart well within
/// the load's 10 s timeout.
const INTERRUPTED_KINDS: &[&str] = &["reset"];

/// Each language's cold-started service's descriptors, with the load
/// paused after it served: the baseline of every process that serves after
/// a case (invariant 6, no leaked descriptor).
type Baselines = std::collections::HashMap<Lang, FdProfile>;

fn baselines(build: &CrashBuild) -> Result<Baselines, String> {
    let mut baselines = Baselines::new();
    for lang in LANGS {
        let mut t = Trial::new(build)?;
        let pid = t.cold_start(lang, None)?;
        t.check_settled(pid, lang)?;
        let load = Load::start(t.addr, load_config());
        let profile = (|| {
            ensure!(
                load.wait_answers(40, SETTLE),
                "{} does not answer the load",
                lang.tag()
            );
            quiet_fd_profile(&load, pid, t.dir.path())
        })();
        load.stop();
        baselines.insert(lang, profile.map_err(|e| format!("{}: {e}", lang.tag()))?);
    }
    Ok(baselines)
}

/// The descriptors of `pid` with no client connected (the load paused).
fn quiet_fd_profile(load: &Load, pid: u32, dir: &std::path::Path) -> Result<FdProfile, String> {
    ensure!(
        load.pause(Duration::from_secs(15)),
        "the load did not pause"
    );
    let profile = stable_fd_profile(pid, dir);
    load.resume();
    profile
}

/// With the load paused, `pid` (of `lang`) holds what a cold-started
/// service of its language holds, once the connections of the clients
/// have closed. Equality: a serving generation's descriptors do not depend
/// on how it started or what it went through (the listener, the control
/// socket, the lock file, the log, the library's spare /dev/null and
/// pipes, the service's wake-up pipes or socket pairs, Go's epoll and
/// eventfd), and those of the connections the paused clients closed are
/// waited out (up to SETTLE).
fn check_fds(
    t: &Trial<'_>,
    load: &Load,
    pid: u32,
    lang: Lang,
    baselines: &Baselines,
) -> Result<(), String> {
    let baseline = baselines
        .get(&lang)
        .ok_or(format!("no baseline for {}", lang.tag()))?;
    ensure!(
        load.pause(Duration::from_secs(15)),
        "the load did not pause"
    );
    let checked = wait_fd_profile(pid, t.dir.path(), baseline, SETTLE);
    load.resume();
    checked.map(|_| ())
}

fn drive_row(
    t: &mut Trial<'_>,
    row: &Row,
    baselines: &Baselines,
    load_slot: &mut Option<Load>,
) -> Result<RowResult, String> {
    let case = row.case;
    let mut notes = Vec::new();
    let old = t.cold_start(row.incumbent, (case.who == Who::O).then_some(case.point))?;
    t.check_settled(old, row.incumbent)?;

    // Client load from here to the end of the case.
    let config = load_config();
    let load = load_slot.insert(Load::start(t.addr, config.clone()));
    ensure!(
        load.wait_answers(40, SETTLE),
        "the service does not answer the load"
    );
    check_fds(t, load, old, row.incumbent, baselines).map_err(|e| format!("cold O: {e}"))?;
    ensure!(
        load.wait_answers(40, SETTLE),
        "the service does not answer the load"
    );

    // The handoff that dies.
    let crash_at = match case.who {
        Who::O => case.successor_point,
        Who::S | Who::N => Some(case.point),
    };
    let (status, out) = t.supervise("handoff", row.successor, crash_at)?;
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
        let (status, line) = t.supervise("recover", row.incumbent, None)?;
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
    let (incumbent, lang) = match after {
        After::OldResumes => {
            t.check_settled(old, row.incumbent)?;
            // Every point comes after the successor's start (it overlaps
            // the incumbent's Hello).
            let [successor] = successors[..] else {
                return Err(format!("expected one successor, saw {successors:?}"));
            };
            notes.push(format!("N {}", t.successor_status(successor)));
            notes.push("O resumed".into());
            (old, row.incumbent)
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
            t.check_settled(successor, row.successor)?;
            t.check_library(successor)?;
            notes.push(format!("N serves, old O {}", describe_status(status)));
            (successor, row.successor)
        }
        After::ReadyDecides => return Err("unresolved outcome".into()),
        After::NobodyServes => {
            let status = old_incumbent_exit(t, old, case)?;
            t.check_down()?;
            let ended: Vec<String> = successors
                .iter()
                .map(|&pid| format!("N {}", t.successor_status(pid)))
                .collect();
            // (A successor the supervisor reaped itself shows as "exited";
            // its death at the crash point is in the rollback's reason.)
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
            // The supervisor's cold restart (of the configured service).
            let restarted = t.cold_start(row.incumbent, None)?;
            t.check_settled(restarted, row.incumbent)?;
            notes.push("cold restart serves".into());
            (restarted, row.incumbent)
        }
    };
    // Invariant 6: whoever serves now (O rolled back, N, a cold restart)
    // holds what a cold start of its language holds.
    ensure!(
        load.wait_answers(40, SETTLE),
        "the service does not answer the load after recovery"
    );
    check_fds(t, load, incumbent, lang, baselines).map_err(|e| format!("after recovery: {e}"))?;
    notes.push(format!("fds as a cold {} start", lang.short()));

    // The system is usable: a fresh handoff, to yet another language, commits.
    ensure!(
        load.wait_answers(40, SETTLE),
        "the service does not answer the load after recovery"
    );
    let next_lang = LANGS
        .into_iter()
        .find(|&l| l != lang && l != row.successor)
        .unwrap_or(lang.after(1));
    let (status, out) = t.supervise("handoff", next_lang, None)?;
    let next = committed_pid(&out);
    ensure!(
        status.success() && next.is_some(),
        "fresh handoff {}: {out:?}",
        describe_exit(status)
    );
    let next = next.unwrap_or_default();
    ensure!(next != incumbent, "fresh handoff kept {incumbent}");
    t.check_settled(next, next_lang)?;
    notes.push(format!(
        "fresh handoff {}->{} commits",
        lang.short(),
        next_lang.short()
    ));
    ensure!(
        load.wait_answers(40, SETTLE),
        "the service does not answer the load after the fresh handoff"
    );
    check_fds(t, load, next, next_lang, baselines)
        .map_err(|e| format!("after the fresh handoff: {e}"))?;

    // No acknowledged write lost.
    let tally = load_slot.take().expect("started above").stop();
    let lost = load::verify(t.addr, &tally.keys).map_err(|e| format!("verify: {e}"))?;
    ensure!(
        lost.is_empty() && tally.lost() == 0,
        "{} acknowledged write(s) lost: {:?}; {}; {:?}",
        lost.len() as u64 + tally.lost(),
        &lost[..lost.len().min(5)],
        tally.summary(),
        tally.examples
    );
    // Interrupted requests: none unless a serving process was killed, and
    // then few, and only of the kind a killed server produces.
    if case.kills_a_server() {
        let allowed = interrupted_allowed(&config);
        ensure!(
            tally
                .failures
                .keys()
                .all(|kind| INTERRUPTED_KINDS.contains(kind))
                && tally.failed() <= allowed,
            "more than {allowed} interrupted requests, or not only {INTERRUPTED_KINDS:?}: {}; {:?}",
            tally.summary(),
            tally.examples
        );
    } else {
        ensure!(
            tally.failed() == 0,
            "requests failed with no serving process killed: {}; {:?}",
            tally.summary(),
            tally.examples
        );
    }
    Ok(RowResult {
        notes: notes.join("; "),
        verified: tally.keys.len(),
        load: tally,
    })
}

/// The rows to run. Every point with each language as the incumbent and
/// the successor's language rotating (`CRASH_MATRIX=standard`, the
/// default), or every point once (`quick`); the steps only a moving
/// handoff has with every ordered pair of services (`full`, `make
/// test-full`: 25 pairs) or, otherwise, each service once as the incumbent
/// of each step with the successor rotating.
fn rows() -> Vec<Row> {
    let mode = std::env::var("CRASH_MATRIX").unwrap_or_default();
    let full = mode != "quick";
    let every_pair = mode == "full";
    let only = std::env::var("CRASH_MATRIX_ONLY").unwrap_or_default();
    let mut rows = Vec::new();
    let incumbents: &[Lang] = if full { &LANGS } else { &[Lang::C] };
    for &first in incumbents {
        for (i, case) in BOUNDARY_CASES.iter().chain(HOOK_CASES).enumerate() {
            if !case.point.contains(only.as_str()) {
                continue;
            }
            // full: each incumbent with the three successors in turn;
            // quick: the incumbent rotates with the point too, and the
            // successor's offset every three points.
            let (incumbent, successor) = if full {
                (first, first.after(i))
            } else {
                let incumbent = first.after(i);
                (incumbent, incumbent.after(i / 3))
            };
            rows.push(Row {
                case,
                incumbent,
                successor,
            });
        }
    }
    // The steps only a handoff that moves connections has, between services
    // that both move them.
    let movers: Vec<Lang> = LANGS
        .into_iter()
        .filter(|l| l.moves_connections())
        .collect();
    for &incumbent in &movers {
        for (i, case) in MOVE_CASES.iter().enumerate() {
            if !case.point.contains(only.as_str()) {
                continue;
            }
            let successors = if every_pair {
                movers.clone()
            } else {
                vec![incumbent.after(i + 1)]
            };
            for successor in successors {
                rows.push(Row {
                    case,
                    incumbent,
                    successor,
                });
            }
        }
    }
    rows
}

/// The tests watch this process's children: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_crash_point_with_every_service_under_load() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    become_subreaper();
    let build = crash_build();
    for lang in LANGS {
        kv::service_argv(lang);
    }
    let rows = rows();
    let baselines = baselines(build).expect("the cold-start baselines");
    for lang in LANGS {
        show(&format!(
            "descriptors of a cold-started {} (from 3 up): {:?}",
            lang.short(),
            baselines[&lang]
        ));
    }
    let started = Instant::now();
    show(&format!(
        "\ncrash matrix, example services under load ({} cases; killed process at the point; \
         recovery, checks, a fresh handoff, every acknowledged write read back)",
        rows.len()
    ));
    show(&format!(
        "  {:<22} {:<3} {:<7} {:<4} {:>5}  {}",
        "point",
        "who",
        "O->N",
        "",
        "secs",
        "load (interrupted requests allowed only where a serving process dies)"
    ));
    let mut failed = Vec::new();
    let mut total = Tally::default();
    let mut verified = 0;
    let mut interrupted = 0;
    for row in &rows {
        let fds_before = open_fds();
        let case_started = Instant::now();
        let mut result = run_row(build, row, &baselines);
        let fds_after = open_fds();
        if result.is_ok() && fds_after != fds_before {
            result = Err(format!(
                "the test process has {fds_after} descriptors, {fds_before} before the case"
            ));
        }
        let secs = case_started.elapsed().as_secs_f64();
        let pair = format!("{}->{}", row.incumbent.short(), row.successor.short());
        let who = format!("{:?}", row.case.who);
        match result {
            Ok(r) => {
                show(&format!(
                    "  {:<22} {:<3} {:<7} ok   {secs:>5.1}  {}; {} keys read back | {}",
                    row.case.point,
                    who,
                    pair,
                    r.load.summary(),
                    r.verified,
                    r.notes
                ));
                verified += r.verified;
                interrupted += r.load.failed();
                total.ok += r.load.ok;
                total.writes += r.load.writes;
                total.resent += r.load.resent;
            }
            Err(why) => {
                show(&format!(
                    "  {:<22} {:<3} {:<7} FAIL {secs:>5.1}  {why}",
                    row.case.point, who, pair
                ));
                failed.push(format!("{} {pair}", row.case.point));
            }
        }
    }
    show(&format!(
        "crash matrix (services): {} cases, {} passed, {} failed, {:.1}s; requests ok {}, \
         acknowledged writes {}, resent {}, interrupted {}, {} keys read back, 0 lost\n",
        rows.len(),
        rows.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64(),
        total.ok,
        total.writes,
        total.resent,
        interrupted,
        verified
    ));
    assert!(failed.is_empty(), "failed: {failed:?}");
}
