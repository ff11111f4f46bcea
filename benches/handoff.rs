//! Handoff overhead: from the trigger (`perform_handoff` called) to Commit
//! (it returned committed), for a service whose hooks do nothing and whose
//! successor is ready at once: the peers in tests/peers/ (`peer-ours` on
//! libhandoff, `peer-beyond` on the reference crate `beyond-handoff` 0.1.4).
//!
//! Rows:
//! - our supervisor with peer-ours, journal on tmpfs and on disk, broken
//!   down by phase with our `PhaseTimings`;
//! - the same, prepared (`ours-prepared`): each successor is started and
//!   handshaken ahead (`Supervisor::prepare`, untimed), then the timed
//!   `perform_prepared` switches to it without the spawn;
//! - our supervisor with peer-beyond, the same;
//! - the reference supervisor with peer-beyond, journal on tmpfs and on
//!   disk (`with_journal`); it reports no phases, so only the wall time.
//!
//! `wall` is the time `perform_handoff` took as seen by the caller, the one
//! figure measured the same way for both supervisors; `total` is our own
//! `PhaseTimings::total`. The rows run interleaved, one handoff of each in
//! turn, so that load from elsewhere on the machine hits all of them alike.
//! The data directory and the control socket are on tmpfs when there is one
//! (they are the same for every row); only the journal moves. Between two
//! handoffs (untimed) the old incumbent is reaped, the new one is checked to
//! serve, and the filesystems involved are synced, so every handoff starts
//! from the same quiet state.
//!
//! Goal: our median at most 0.75x the reference's on tmpfs and on disk,
//! and < 5 ms; prepared, trigger to commit at most 2 ms beyond the
//! blackout (drain + seal + ready, while nobody accepts), median (issue 17).
//!
//! Environment: HANDOFF_BENCH_N (handoffs per row, default 100),
//! HANDOFF_BENCH_WARMUP (untimed handoffs per row first, default 3),
//! HANDOFF_BENCH_ROWS (only the rows whose "supervisor/service/journal"
//! label contains one of these comma-separated words; for profiling;
//! `peer-ours/tmpfs` is the unprepared and the prepared row on tmpfs).

#[path = "../tests/peers/harness.rs"]
mod harness;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use handoff::spawn::Command;
use handoff::supervisor::{PhaseTimings, SpawnSpec, Supervisor};
use harness::{
    cold_start_std, inode, peer_args, peer_binary, target_dir, wait_serving, Impl, Procs,
};

const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The mount `dir` lives on (longest matching mount point in /proc/mounts):
/// (filesystem type, mount point).
fn mount_of(dir: &Path) -> Option<(String, String)> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let mount_point = fields.next()?.replace("\\040", " ");
            let fstype = fields.next()?.to_string();
            dir.starts_with(&mount_point)
                .then_some((fstype, mount_point))
        })
        .max_by_key(|(_, mount_point)| mount_point.len())
}

fn describe_fs(dir: &Path) -> String {
    match mount_of(dir) {
        Some((fstype, mount_point)) => format!("{fstype} (mounted on {mount_point})"),
        None => "unknown filesystem".into(),
    }
}

/// A writable directory on tmpfs: /dev/shm or /run, whichever is tmpfs.
fn find_tmpfs() -> Option<PathBuf> {
    ["/dev/shm", "/run"]
        .into_iter()
        .map(PathBuf::from)
        .find(|dir| {
            mount_of(dir).is_some_and(|(fstype, _)| fstype == "tmpfs")
                && tempfile::tempdir_in(dir).is_ok()
        })
}

/// Whether HANDOFF_BENCH_ROWS selects the row `label` (all rows when unset).
fn selected(label: &str) -> bool {
    match std::env::var("HANDOFF_BENCH_ROWS") {
        Ok(words) if !words.trim().is_empty() => words
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .any(|word| label.contains(word)),
        _ => true,
    }
}

/// Where a row's files go.
struct Places<'a> {
    /// Data directory and control socket (the same medium for every row).
    work: &'a Path,
    /// The supervisor's journal.
    journal: &'a Path,
}

/// One service and its directories.
struct Service {
    /// First, so that the processes are gone before their directories.
    procs: Procs,
    _work: tempfile::TempDir,
    _journal_dir: tempfile::TempDir,
    data_dir: PathBuf,
    control: PathBuf,
    journal: PathBuf,
    addr: SocketAddr,
    listener: Option<TcpListener>,
    which: Impl,
    pid: u32,
}

impl Service {
    fn new(places: &Places<'_>, which: Impl) -> Service {
        let work = tempfile::Builder::new()
            .prefix("handoff-bench-")
            .tempdir_in(places.work)
            .expect("work directory");
        let journal_dir = tempfile::Builder::new()
            .prefix("handoff-bench-journal-")
            .tempdir_in(places.journal)
            .expect("journal directory");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Service {
            data_dir: work.path().join("data"),
            control: work.path().join("control.sock"),
            journal: journal_dir.path().join("state.bin"),
            addr: listener.local_addr().expect("local_addr"),
            listener: Some(listener),
            procs: Procs::default(),
            which,
            pid: 0,
            _work: work,
            _journal_dir: journal_dir,
        }
    }

    fn args(&self) -> Vec<String> {
        peer_args(&self.data_dir, &self.control)
    }

    /// After a committed handoff to `new`: reap the old incumbent and wait
    /// until `new` serves everything (untimed).
    fn settle(&mut self, new: u32, old_inode: Option<u64>) {
        let old = self.pid;
        match self.procs.wait_exit(old, EXIT_TIMEOUT) {
            Ok(0) => {}
            other => panic!("old incumbent {old} ended with {other:?}"),
        }
        wait_serving(
            self.addr,
            &self.data_dir,
            &self.control,
            old_inode,
            new,
            self.which,
        );
        self.pid = new;
        // Flush what this handoff left unsynced (the reference supervisor
        // deletes its journal without an fsync) now, untimed, so that it is
        // not charged to whichever row next forces a journal commit.
        for dir in [&self.journal_dir(), &self.data_dir] {
            if let Ok(dir) = std::fs::File::open(dir) {
                // SAFETY: syncfs on a descriptor we own, no memory passed.
                unsafe { libc::syncfs(dir.as_raw_fd()) };
            }
        }
    }

    fn journal_dir(&self) -> PathBuf {
        self.journal
            .parent()
            .expect("journal in a directory")
            .to_path_buf()
    }
}

/// One measured handoff.
struct Sample {
    phases: Option<PhaseTimings>,
    wall: Duration,
}

/// A row of the table: a supervisor handing one service off, over and over.
trait Row {
    fn handoff(&mut self) -> Sample;
}

struct OurRow {
    supervisor: Supervisor,
    spec: SpawnSpec,
    service: Service,
    /// Each successor prepared ahead, untimed.
    prepared: bool,
}

/// How long a prepared successor is left before its handoff (untimed): a
/// deploy tool prepares well ahead, so whatever the successor does after
/// its Hello (a v2 one announces its Capacity) is done by then.
const PREPARED_AHEAD: Duration = Duration::from_millis(20);

impl OurRow {
    fn new(places: &Places<'_>, which: Impl, prepared: bool) -> OurRow {
        let mut service = Service::new(places, which);
        let listener = service.listener.take().expect("listener");
        let supervisor = Supervisor::new(&service.control)
            .with_listener("kv", OwnedFd::from(listener))
            .expect("listener")
            .with_journal(&service.journal);
        let spec = SpawnSpec {
            command: Command {
                binary: peer_binary(which),
                args: service.args().into_iter().map(Into::into).collect(),
                env: Vec::new(),
            },
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(10),
        };
        let child = supervisor.spawn_cold(&spec.command).expect("cold start");
        service.pid = service.procs.add_ours(child);
        wait_serving(
            service.addr,
            &service.data_dir,
            &service.control,
            None,
            service.pid,
            which,
        );
        OurRow {
            supervisor,
            spec,
            service,
            prepared,
        }
    }
}

impl Row for OurRow {
    fn handoff(&mut self) -> Sample {
        let old_inode = inode(&self.service.control);
        let prepared = self.prepared.then(|| {
            let prepared = self.supervisor.prepare(&self.spec).expect("prepare");
            std::thread::sleep(PREPARED_AHEAD);
            prepared
        });
        let started = Instant::now();
        let outcome = match prepared {
            Some(prepared) => self.supervisor.perform_prepared(prepared),
            None => self.supervisor.perform_handoff(&self.spec),
        }
        .expect("perform_handoff");
        let wall = started.elapsed();
        assert!(
            outcome.committed,
            "handoff not committed: {:?}",
            outcome.abort_reason
        );
        let child = outcome.successor.expect("successor");
        let new = self.service.procs.add_ours(child);
        self.service.settle(new, old_inode);
        Sample {
            phases: Some(outcome.timings),
            wall,
        }
    }
}

struct BeyondRow {
    supervisor: beyond::supervisor::Supervisor,
    service: Service,
}

impl BeyondRow {
    fn new(places: &Places<'_>, which: Impl) -> BeyondRow {
        let mut service = Service::new(places, which);
        let fd = service.listener.as_ref().expect("listener").as_raw_fd();
        let supervisor = beyond::supervisor::Supervisor::new(&service.control)
            .expect("reference supervisor")
            .with_listener("kv", fd)
            .with_journal(service.journal.clone());
        let child = cold_start_std(which, &service.args(), "kv", fd);
        service.pid = service.procs.add_std(child);
        wait_serving(
            service.addr,
            &service.data_dir,
            &service.control,
            None,
            service.pid,
            which,
        );
        BeyondRow {
            supervisor,
            service,
        }
    }
}

impl Row for BeyondRow {
    fn handoff(&mut self) -> Sample {
        let spec = beyond::SpawnSpec {
            binary: peer_binary(self.service.which),
            args: self.service.args(),
            env: Vec::new(),
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(10),
        };
        let old_inode = inode(&self.service.control);
        let started = Instant::now();
        let outcome = self
            .supervisor
            .perform_handoff(spec)
            .expect("reference perform_handoff");
        let wall = started.elapsed();
        assert!(
            outcome.committed,
            "handoff not committed: {:?}",
            outcome.abort_reason
        );
        let child = outcome.child.expect("successor");
        let new = self.service.procs.add_std(child);
        self.service.settle(new, old_inode);
        Sample { phases: None, wall }
    }
}

/// The value at quantile `q` (nearest rank) of `values`, sorted here.
fn quantile(values: &mut [Duration], q: f64) -> Duration {
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// "median/p90" in milliseconds.
fn cell(values: Vec<Duration>) -> String {
    cell_to(values, 0.9)
}

/// "median/<quantile `high`>" in milliseconds.
fn cell_to(mut values: Vec<Duration>, high: f64) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let median = quantile(&mut values, 0.5);
    let high = quantile(&mut values, high);
    format!("{:.3}/{:.3}", ms(median), ms(high))
}

/// While nobody accepts: the drain, the seal and the wait for Ready.
fn blackout(t: &PhaseTimings) -> Duration {
    t.drain + t.seal + t.ready
}

/// The rest of a handoff's phases: Hello, the spawn phase (with a prepared
/// successor no spawn: the journal and the Capacity), the commit.
fn remainder(t: &PhaseTimings) -> Duration {
    t.hello + t.spawn + t.commit
}

/// A prepared row beside the unprepared one of the same run: trigger to
/// commit, its blackout and the rest, median/p99; and the prepared goal.
fn compare_prepared(journal: &str, unprepared: &RowResult, prepared: &RowResult) {
    let column = |row: &RowResult, f: &dyn Fn(&PhaseTimings) -> Duration| {
        cell_to(
            row.samples
                .iter()
                .filter_map(|s| s.phases.as_ref().map(f))
                .collect(),
            0.99,
        )
    };
    println!(
        "{journal}: prepared vs unprepared (peer-ours), median/p99 in ms over {} handoffs each",
        prepared.samples.len()
    );
    let header = [
        "",
        "trigger to commit",
        "blackout (drain+seal+ready)",
        "remainder (hello+spawn+commit)",
        "beyond the blackout",
    ];
    println!(
        "  {:<11} {:<19} {:<28} {:<31} {}",
        header[0], header[1], header[2], header[3], header[4]
    );
    for (name, row) in [("unprepared", unprepared), ("prepared", prepared)] {
        println!(
            "  {name:<11} {:<19} {:<28} {:<31} {}",
            column(row, &|t| t.total),
            column(row, &blackout),
            column(row, &remainder),
            column(row, &|t| t.total.saturating_sub(blackout(t))),
        );
    }
    let mut beyond: Vec<Duration> = prepared
        .samples
        .iter()
        .filter_map(|s| s.phases.as_ref())
        .map(|t| t.total.saturating_sub(blackout(t)))
        .collect();
    if beyond.is_empty() {
        return;
    }
    let median = quantile(&mut beyond, 0.5);
    println!(
        "  goal ({journal}): prepared, trigger to commit at most 2 ms beyond the blackout \
         (median {:.3} ms): {}",
        ms(median),
        if median <= Duration::from_millis(2) {
            "met"
        } else {
            "NOT met"
        }
    );
}

fn median(samples: &[Sample]) -> Duration {
    let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    quantile(&mut walls, 0.5)
}

struct RowResult {
    supervisor: &'static str,
    service: Impl,
    journal: &'static str,
    samples: Vec<Sample>,
}

/// Our median over the reference's, on tmpfs and on disk (issue 17).
const OVERHEAD_RATIO_GOAL: f64 = 0.75;

fn main() {
    // `cargo bench` passes --bench; a filter argument is not supported.
    let n: usize = env_or("HANDOFF_BENCH_N", 100).max(1);
    let warmup: usize = env_or("HANDOFF_BENCH_WARMUP", 3);

    let disk_root = target_dir();
    let disk = tempfile::Builder::new()
        .prefix("handoff-bench-")
        .tempdir_in(&disk_root)
        .expect("a directory under target/");
    let tmpfs = find_tmpfs();
    let work = tmpfs.clone().unwrap_or_else(|| disk.path().to_path_buf());

    println!("handoff overhead: trigger to Commit, hooks that do nothing, successor ready at once");
    println!(
        "  {n} handoffs per row after {warmup} untimed, rows interleaved; {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  data dir + control socket: {} [{}]",
        work.display(),
        describe_fs(&work)
    );
    match &tmpfs {
        Some(dir) => println!(
            "  journal on tmpfs: {} [{}]",
            dir.display(),
            describe_fs(dir)
        ),
        None => println!("  journal on tmpfs: no tmpfs found at /dev/shm or /run; rows skipped"),
    }
    println!(
        "  journal on disk:  {} [{}]",
        disk.path().display(),
        describe_fs(disk.path())
    );

    // Build the peers before anything is timed.
    peer_binary(Impl::Ours);

    let mut journals: Vec<(&'static str, &Path)> = Vec::new();
    if let Some(dir) = &tmpfs {
        journals.push(("tmpfs", dir));
    }
    journals.push(("disk", disk.path()));

    let mut rows: Vec<(RowResult, Box<dyn Row>)> = Vec::new();
    for (label, journal) in &journals {
        let places = Places {
            work: &work,
            journal,
        };
        for (supervisor, service) in [
            ("ours", Impl::Ours),
            ("ours-prepared", Impl::Ours),
            ("ours", Impl::Beyond),
            ("beyond", Impl::Beyond),
        ] {
            if !selected(&format!("{supervisor}/{}/{label}", service.program())) {
                continue;
            }
            let row: Box<dyn Row> = match supervisor {
                "ours" => Box::new(OurRow::new(&places, service, false)),
                "ours-prepared" => Box::new(OurRow::new(&places, service, true)),
                _ => Box::new(BeyondRow::new(&places, service)),
            };
            rows.push((
                RowResult {
                    supervisor,
                    service,
                    journal: label,
                    samples: Vec::with_capacity(n),
                },
                row,
            ));
        }
    }

    let started = Instant::now();
    let count = rows.len();
    for round in 0..warmup + n {
        // Each round starts at another row, so no row always follows the same one.
        for i in 0..count {
            let (result, row) = &mut rows[(round + i) % count];
            let sample = row.handoff();
            if round >= warmup {
                result.samples.push(sample);
            }
        }
    }
    let elapsed = started.elapsed();
    // Stop every service before printing.
    let results: Vec<RowResult> = rows.into_iter().map(|(result, _row)| result).collect();

    println!();
    println!("median/p90 in ms over {n} handoffs (our phases: PhaseTimings; wall: perform_handoff as the caller sees it)");
    let header = [
        "supervisor",
        "service",
        "journal",
        "hello",
        "spawn",
        "drain",
        "seal",
        "ready",
        "commit",
        "total",
        "wall",
    ];
    let widths = [13, 11, 7, 11, 11, 11, 11, 11, 11, 13, 13];
    let line = |cells: &[String]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join(" ").trim_end());
    };
    line(&header.map(String::from));
    for result in &results {
        let phase = |f: fn(&PhaseTimings) -> Duration| {
            cell(
                result
                    .samples
                    .iter()
                    .filter_map(|s| s.phases.as_ref().map(f))
                    .collect(),
            )
        };
        line(&[
            result.supervisor.to_string(),
            result.service.program().to_string(),
            result.journal.to_string(),
            phase(|t| t.hello),
            phase(|t| t.spawn),
            phase(|t| t.drain),
            phase(|t| t.seal),
            phase(|t| t.ready),
            phase(|t| t.commit),
            phase(|t| t.total),
            cell(result.samples.iter().map(|s| s.wall).collect()),
        ]);
    }
    println!(
        "({} handoffs in {:.1} s)",
        results.len() * (warmup + n),
        elapsed.as_secs_f64()
    );

    println!();
    let find = |supervisor: &str, service: Impl, journal: &str| {
        results
            .iter()
            .find(|r| r.supervisor == supervisor && r.service == service && r.journal == journal)
    };
    for journal in journals.iter().map(|(label, _)| *label) {
        let (Some(ours), Some(theirs)) = (
            find("ours", Impl::Ours, journal),
            find("beyond", Impl::Beyond, journal),
        ) else {
            continue;
        };
        let (ours, theirs) = (median(&ours.samples), median(&theirs.samples));
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        println!(
            "{journal:>5}: ours (peer-ours) median {:.3} ms vs reference (peer-beyond) {:.3} ms: ratio {ratio:.2} \
             (goal <= {OVERHEAD_RATIO_GOAL}: {})",
            ms(ours),
            ms(theirs),
            if ratio <= OVERHEAD_RATIO_GOAL { "met" } else { "NOT met" }
        );
    }
    for journal in journals.iter().map(|(label, _)| *label) {
        if let (Some(unprepared), Some(prepared)) = (
            find("ours", Impl::Ours, journal),
            find("ours-prepared", Impl::Ours, journal),
        ) {
            println!();
            compare_prepared(journal, unprepared, prepared);
        }
    }
    println!();
    match (
        find("ours", Impl::Ours, "tmpfs"),
        find("beyond", Impl::Beyond, "tmpfs"),
    ) {
        (Some(ours), Some(theirs)) => {
            let (ours, theirs) = (median(&ours.samples), median(&theirs.samples));
            let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
            println!(
                "goal (tmpfs): ours {:.3} ms <= reference {:.3} ms: {}; ours < 5 ms: {}",
                ms(ours),
                ms(theirs),
                verdict(ours <= theirs),
                verdict(ours < Duration::from_millis(5))
            );
        }
        _ if tmpfs.is_none() => println!("goal (tmpfs): not measured (no tmpfs)"),
        _ => println!("goal (tmpfs): not measured (its rows not selected)"),
    }
}
