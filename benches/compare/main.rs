//! Handoff libraries compared under load, in one run on one machine: does
//! anything get dropped, and how long does a handoff take.
//!
//! The same key-value service (examples/README.md's line protocol, fsync
//! before `OK`) and the same closed-loop load (loadgen.rs: fresh and
//! persistent clients, acknowledged writes read back at the end), upgraded
//! by:
//!
//! - `libhandoff-c`, `libhandoff-go`, `libhandoff-cpp`, `libhandoff-rust`:
//!   handoff-supervisor with kv-c / kv-go / kv-cpp / kv-rust;
//! - `baseline-c`: libhandoff-c from another build (`--baseline DIR`: its
//!   handoff-supervisor, kv-c and libhandoff.so.0), so that a change is
//!   measured before and after in the same run;
//! - `beyond`: bench-beyond-supervisor (beyond-handoff 0.1.4's Supervisor)
//!   with bench-beyond-kv (benches/services/);
//! - `tableflip`: tableflip-kv (benches/tableflip/, cloudflare/tableflip
//!   v1.2.3), SIGHUP;
//! - `restart`: kv-c alone, stopped (SIGTERM) and started again: the floor.
//!
//! For each system, in turn: calibration (flat out, no handoff: the load
//! the machine sustains), steady state (paced at `--load` of the first
//! system's calibration, no handoff), K handoffs under that load (one every
//! `--interval-ms`), then a ramp of handoff rates. Besides failed requests
//! and lost writes it counts, for the persistent clients, the kept
//! connections the server closed (a drain closes them, a handoff that moves
//! them does not) apart from the resends, and their p99 steady and during
//! the handoffs. Writes the results as
//! JSON and renders them as markdown and SVG (docs/benchmarks.md with
//! `--publish`). Run through `make bench` (which builds everything):
//!
//! ```text
//! cargo bench --bench compare -- [--handoffs K] [--interval-ms MS]
//!     [--systems a,b,..] [--fresh N] [--persistent N] [--load F]
//!     [--steady-secs S] [--calibrate-secs S] [--ramp 2,5,10,20]
//!     [--ramp-handoffs N] [--budget-secs S] [--work DIR] [--publish]
//!     [--render JSON]
//! ```

mod loadgen;
mod report;
mod systems;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use loadgen::{now_ns, Config, LoadGenerator, Outcome, Sample};
use systems::{Beyond, Build, Handoff, Libhandoff, Programs, Restart, System, Tableflip};

/// What a run without `--systems` compares.
pub const DEFAULT_SYSTEMS: [&str; 7] = [
    "libhandoff-c",
    "libhandoff-go",
    "libhandoff-cpp",
    "libhandoff-rust",
    "beyond",
    "tableflip",
    "restart",
];

/// Triggers of one handoff before it counts as failed.
const MAX_ATTEMPTS: u32 = 20;

pub const ALL_SYSTEMS: [&str; 8] = [
    "libhandoff-c",
    "libhandoff-go",
    "libhandoff-cpp",
    "libhandoff-rust",
    "baseline-c",
    "beyond",
    "tableflip",
    "restart",
];

struct Options {
    handoffs: usize,
    interval: Duration,
    steady: Duration,
    calibrate: Duration,
    fresh: usize,
    persistent: usize,
    load: f64,
    ramp: Vec<f64>,
    ramp_handoffs: usize,
    /// At most this long for a system's K handoffs.
    budget: Duration,
    systems: Vec<String>,
    work: Option<PathBuf>,
    publish: bool,
    render: Option<PathBuf>,
    /// A directory holding another build's handoff-supervisor, kv-c and
    /// libhandoff.so.0, run as `baseline-c`.
    baseline: Option<PathBuf>,
    command: String,
}

fn usage(why: &str) -> ! {
    eprintln!("compare: {why}\nsee benches/compare/main.rs for the options");
    std::process::exit(2)
}

fn parse_options() -> Options {
    let mut o = Options {
        handoffs: 20,
        interval: Duration::from_millis(100),
        steady: Duration::from_secs(5),
        calibrate: Duration::from_secs(5),
        fresh: 8,
        persistent: 8,
        load: 0.8,
        ramp: vec![2.0, 5.0, 10.0, 20.0, 50.0],
        ramp_handoffs: 20,
        budget: Duration::from_secs(1500),
        systems: DEFAULT_SYSTEMS.iter().map(|s| s.to_string()).collect(),
        work: None,
        publish: false,
        render: None,
        baseline: None,
        command: String::new(),
    };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    o.command = if args.is_empty() {
        "make bench".into()
    } else {
        format!("make bench BENCH_ARGS=\"{}\"", args.join(" "))
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        let number = |v: String| -> f64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{arg}: not a number: {v}")))
        };
        match arg.as_str() {
            "--handoffs" => o.handoffs = number(value()) as usize,
            "--interval-ms" => o.interval = Duration::from_secs_f64(number(value()) / 1e3),
            "--steady-secs" => o.steady = Duration::from_secs_f64(number(value())),
            "--calibrate-secs" => o.calibrate = Duration::from_secs_f64(number(value())),
            "--fresh" => o.fresh = number(value()) as usize,
            "--persistent" => o.persistent = number(value()) as usize,
            "--load" => o.load = number(value()),
            "--ramp" => {
                let v = value();
                o.ramp = if v == "none" {
                    Vec::new()
                } else {
                    v.split(',').map(|v| number(v.to_string())).collect()
                };
            }
            "--ramp-handoffs" => o.ramp_handoffs = number(value()) as usize,
            "--budget-secs" => o.budget = Duration::from_secs_f64(number(value())),
            "--systems" => {
                o.systems = value().split(',').map(str::to_string).collect();
                for s in &o.systems {
                    if !ALL_SYSTEMS.contains(&s.as_str()) {
                        usage(&format!(
                            "unknown system {s}; known: {}",
                            ALL_SYSTEMS.join(",")
                        ));
                    }
                }
            }
            "--work" => o.work = Some(PathBuf::from(value())),
            "--publish" => o.publish = true,
            "--render" => o.render = Some(PathBuf::from(value())),
            "--baseline" => o.baseline = Some(PathBuf::from(value())),
            other => usage(&format!("unknown option {other}")),
        }
    }
    if o.systems.iter().any(|s| s == "baseline-c") != o.baseline.is_some() {
        usage("the system baseline-c and --baseline DIR go together");
    }
    o
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the programs of `systems` are (usage error when one is missing).
fn programs(systems: &[String], baseline: Option<&Path>) -> Programs {
    let root = root();
    let p = Programs {
        supervisor: root.join("target/release/handoff-supervisor"),
        kv_c: root.join("examples/c/build/kv-c"),
        kv_go: root.join("examples/go/build/kv-go"),
        kv_cpp: root.join("examples/cpp/build/kv-cpp"),
        kv_rust: root.join("target/release/examples/kv-rust"),
        baseline: baseline.map(|dir| Build {
            supervisor: dir.join("handoff-supervisor"),
            kv_c: dir.join("kv-c"),
            library_dir: Some(dir.to_path_buf()),
        }),
        beyond_kv: root.join("target/release/examples/bench-beyond-kv"),
        beyond_supervisor: root.join("target/release/examples/bench-beyond-supervisor"),
        tableflip_kv: root.join("target/bench/tableflip-kv"),
    };
    let mut needed: Vec<PathBuf> = Vec::new();
    for system in systems {
        match system.as_str() {
            "libhandoff-c" => needed.extend([p.supervisor.clone(), p.kv_c.clone()]),
            "libhandoff-go" => needed.extend([p.supervisor.clone(), p.kv_go.clone()]),
            "libhandoff-cpp" => needed.extend([p.supervisor.clone(), p.kv_cpp.clone()]),
            "libhandoff-rust" => needed.extend([p.supervisor.clone(), p.kv_rust.clone()]),
            "baseline-c" => {
                let b = p.baseline.as_ref().expect("checked with the options");
                let library = b
                    .library_dir
                    .as_ref()
                    .expect("a directory")
                    .join("libhandoff.so.0");
                needed.extend([b.supervisor.clone(), b.kv_c.clone(), library]);
            }
            "beyond" => needed.extend([p.beyond_kv.clone(), p.beyond_supervisor.clone()]),
            "tableflip" => needed.push(p.tableflip_kv.clone()),
            "restart" => needed.push(p.kv_c.clone()),
            _ => {}
        }
    }
    for path in needed {
        if !path.is_file() {
            usage(&format!(
                "{} is missing: run `make bench`, which builds everything",
                path.display()
            ));
        }
    }
    p
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Mean fdatasync latency of a small append in `dir`, in µs.
fn fsync_latency_us(dir: &Path) -> f64 {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let Ok(mut file) = std::fs::File::create(&path) else {
        return f64::NAN;
    };
    let n = 100;
    let started = Instant::now();
    for _ in 0..n {
        let _ = file.write_all(&[b'x'; 40]);
        let _ = file.sync_data();
    }
    let us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    let _ = std::fs::remove_file(&path);
    us
}

fn machine(work: &Path) -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let filesystem = read("/proc/mounts")
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 2 && work.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {}", f[2], f[1])))
        })
        .max()
        .map(|(_, d)| d)
        .unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": model,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "filesystem": filesystem,
        "fsync_us": (fsync_latency_us(work) * 10.0).round() / 10.0,
        "rustc": command_output("rustc", &["--version"]),
        "go": command_output("go", &["version"]),
        "commit": command_output("git", &["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"]),
        "loadavg_start": loadavg(),
        "started_utc": command_output("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
    })
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ------------------------------------------------------------------ stats

/// Nearest-rank quantile of sorted values.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

fn latency(samples: &[&Sample]) -> Value {
    let mut values: Vec<u64> = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Ok)
        .map(|s| s.end - s.start)
        .collect();
    values.sort_unstable();
    json!({
        "count": values.len(),
        "p50_ms": ms(quantile(&values, 0.5)),
        "p99_ms": ms(quantile(&values, 0.99)),
        "max_ms": ms(values.last().copied().unwrap_or(0)),
    })
}

/// The persistent clients' kept connections that the server closed or
/// reset (loadgen.rs, `Results::closed`) in a part of the run, and how the
/// first were seen.
fn kept_closed(results: &loadgen::Results) -> Value {
    json!({
        "total": results.closed.len(),
        "examples": results.closed_examples,
    })
}

/// p99 during the handoffs ÷ steady p99, when both were measured.
fn ratio(during: &Value, steady: &Value) -> Value {
    match (during.as_f64(), steady.as_f64()) {
        (Some(d), Some(s)) if s > 0.0 => json!((d / s * 100.0).round() / 100.0),
        _ => Value::Null,
    }
}

/// The persistent clients' samples of `samples`.
fn persistent<'a>(samples: &[&'a Sample]) -> Vec<&'a Sample> {
    samples.iter().copied().filter(|s| !s.fresh).collect()
}

fn failures(samples: &[Sample]) -> Value {
    let mut by_kind = serde_json::Map::new();
    let mut total = 0;
    for s in samples.iter().filter(|s| s.outcome != Outcome::Ok) {
        total += 1;
        let entry = by_kind.entry(s.outcome.name()).or_insert(json!(0));
        *entry = json!(entry.as_u64().unwrap_or(0) + 1);
    }
    json!({ "total": total, "by_kind": by_kind })
}

/// The longest interval with no successful fresh-connection request
/// completing, around each handoff window: from the last completion before
/// the trigger to the first one after the commit.
fn gaps(samples: &[Sample], handoffs: &[Handoff]) -> Vec<u64> {
    let mut ends: Vec<u64> = samples
        .iter()
        .filter(|s| s.fresh && s.outcome == Outcome::Ok)
        .map(|s| s.end)
        .collect();
    ends.sort_unstable();
    handoffs
        .iter()
        .filter(|h| h.ok)
        .map(|h| {
            let first = ends.partition_point(|&e| e <= h.trigger).saturating_sub(1);
            let last = ends
                .partition_point(|&e| e <= h.commit)
                .min(ends.len().saturating_sub(1));
            let mut gap = 0;
            let mut previous = ends.get(first).copied().unwrap_or(h.trigger).min(h.trigger);
            for &e in ends.get(first..=last).unwrap_or(&[]) {
                gap = gap.max(e.saturating_sub(previous));
                previous = e;
            }
            gap
        })
        .collect()
}

struct Segment {
    results: loadgen::Results,
    handoffs: Vec<Handoff>,
    phases: Vec<Vec<(String, f64)>>,
    records: Vec<Option<u64>>,
    lost: Result<Vec<String>, String>,
    /// Why the handoffs that rolled back (and were triggered again) did.
    rollbacks: Vec<String>,
    from: u64,
    to: u64,
    drift: Vec<Value>,
}

fn drift_sample(system: &dyn System, label: &str, after: usize) -> Option<Value> {
    let pid = system.supervisor_pid()?;
    let (fds, rss) = systems::fd_and_rss(pid)?;
    Some(json!({ "at": label, "after_handoffs": after, "fds": fds, "rss_kib": rss }))
}

/// Load `system` for a while, with `handoffs` handoffs one `period` apart
/// (none: load only, for `idle`), then read every acknowledged write back.
/// One part of a system's run.
#[derive(Clone, Copy)]
struct Part<'a> {
    /// Total requests per second; None: flat out.
    rate: Option<f64>,
    /// Key prefix of the load.
    prefix: &'a str,
    handoffs: usize,
    /// Between two triggers.
    period: Duration,
    /// How long to load without handoffs (when `handoffs` is 0).
    idle: Duration,
    /// Sample the supervisor's descriptors and memory.
    watch_drift: bool,
}

fn run_segment(system: &mut dyn System, options: &Options, part: &Part<'_>) -> Segment {
    let Part {
        rate,
        prefix,
        handoffs,
        period,
        idle,
        watch_drift,
    } = *part;
    let load = LoadGenerator::start(&Config {
        addr: system.addr(),
        fresh: options.fresh,
        persistent: options.persistent,
        rate,
        prefix: prefix.to_string(),
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut drift = Vec::new();
    let warm = (handoffs / 10).clamp(1, 10);
    if watch_drift {
        drift.extend(drift_sample(system, "before", 0));
    }
    let from = now_ns();
    let started = Instant::now();
    let mut done = Vec::with_capacity(handoffs);
    if handoffs == 0 {
        std::thread::sleep(idle);
    }
    let mut failed_in_a_row = 0;
    let mut rollbacks: Vec<String> = Vec::new();
    for i in 0..handoffs {
        system.settle();
        let due = started + period.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // A handoff that rolls back (the service stays with its incumbent)
        // is triggered again, as an operator would: the handoff counts from
        // its first trigger, and the rollbacks are reported.
        let mut h = system.handoff();
        let first_trigger = h.trigger;
        let mut attempts = 1;
        while !h.ok && attempts < MAX_ATTEMPTS {
            rollbacks.push(h.detail.clone());
            std::thread::sleep(Duration::from_millis(1));
            system.settle();
            h = system.handoff();
            attempts += 1;
        }
        h.trigger = first_trigger;
        h.attempts = attempts;
        if !h.ok {
            eprintln!(
                "compare:   handoff {} failed {attempts} times: {}",
                i + 1,
                h.detail
            );
            failed_in_a_row += 1;
        } else {
            failed_in_a_row = 0;
        }
        done.push(h);
        if watch_drift && (i + 1 == warm || (i + 1) % 100 == 0 || i + 1 == handoffs) {
            // Past the instant of the commit, when the supervisor may still
            // hold a descriptor of the handoff it just finished.
            std::thread::sleep(Duration::from_millis(50));
            drift.extend(drift_sample(
                system,
                if i + 1 == warm { "warm" } else { "after" },
                i + 1,
            ));
        }
        if started.elapsed() > options.budget {
            eprintln!(
                "compare:   time budget ({:?}) spent after {} handoffs: stopping this part",
                options.budget,
                i + 1
            );
            break;
        }
        if failed_in_a_row >= 5 {
            eprintln!("compare:   5 handoffs failed in a row: giving up on this segment");
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let to = now_ns();
    let results = load.stop();
    // The generations that stepped down have exited by now (or linger a
    // little): read everything back from the one in charge.
    system.settle();
    let lost = loadgen::verify(system.addr(), &results.keys);
    let until = |i: usize| done.get(i + 1).map_or(u64::MAX, |n: &Handoff| n.trigger);
    let phases = done
        .iter()
        .enumerate()
        .map(|(i, h)| system.phases(h, until(i)))
        .collect();
    let records = done
        .iter()
        .enumerate()
        .map(|(i, h)| system.records(h, until(i)))
        .collect();
    Segment {
        results,
        handoffs: done,
        phases,
        records,
        rollbacks,
        lost,
        from,
        to,
        drift,
    }
}

fn throughput(segment: &Segment) -> f64 {
    let ok = segment
        .results
        .samples
        .iter()
        .filter(|s| s.outcome == Outcome::Ok && s.start >= segment.from && s.end <= segment.to)
        .count();
    ok as f64 / ((segment.to - segment.from) as f64 / 1e9)
}

fn lost_json(segment: &Segment) -> Value {
    match &segment.lost {
        Ok(lost) => json!({
            "acknowledged": segment.results.acknowledged,
            "keys": segment.results.keys.len(),
            "lost": lost.len(),
            "examples": lost.iter().take(5).collect::<Vec<_>>(),
        }),
        Err(e) => json!({
            "acknowledged": segment.results.acknowledged,
            "keys": segment.results.keys.len(),
            "lost": Value::Null,
            "error": e,
        }),
    }
}

fn handoff_stats(segment: &Segment) -> Value {
    let ok: Vec<&Handoff> = segment.handoffs.iter().filter(|h| h.ok).collect();
    let mut durations: Vec<u64> = ok.iter().map(|h| h.commit - h.trigger).collect();
    durations.sort_unstable();
    let mut gaps = gaps(&segment.results.samples, &segment.handoffs);
    gaps.sort_unstable();
    let windows: Vec<(u64, u64)> = ok.iter().map(|h| (h.trigger, h.commit)).collect();
    let in_window = |s: &Sample| {
        let i = windows.partition_point(|&(_, commit)| commit < s.start);
        windows.get(i).is_some_and(|&(trigger, _)| trigger <= s.end)
    };
    let inside: Vec<&Sample> = segment
        .results
        .samples
        .iter()
        .filter(|s| in_window(s))
        .collect();
    let outside: Vec<&Sample> = segment
        .results
        .samples
        .iter()
        .filter(|s| s.start >= segment.from && s.end <= segment.to && !in_window(s))
        .collect();
    // The median of each phase.
    let mut names: Vec<String> = Vec::new();
    for phases in &segment.phases {
        for (name, _) in phases {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    let phases: Vec<Value> = names
        .iter()
        .map(|name| {
            let mut values: Vec<u64> = segment
                .phases
                .iter()
                .filter_map(|p| p.iter().find(|(n, _)| n == name).map(|(_, ms)| (ms * 1e6) as u64))
                .collect();
            values.sort_unstable();
            json!({ "name": name, "p50_ms": ms(quantile(&values, 0.5)), "p99_ms": ms(quantile(&values, 0.99)) })
        })
        .collect();
    // Duration against the size of the log the new process replayed:
    // least squares, duration = intercept + slope × records.
    let points: Vec<(f64, f64)> = segment
        .handoffs
        .iter()
        .zip(&segment.records)
        .filter(|(h, _)| h.ok)
        .filter_map(|(h, r)| {
            Some((
                r.as_ref().copied()? as f64,
                (h.commit - h.trigger) as f64 / 1e6,
            ))
        })
        .collect();
    let fit = if points.len() >= 3 {
        let n = points.len() as f64;
        let (mx, my) = (
            points.iter().map(|p| p.0).sum::<f64>() / n,
            points.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        json!({
            "points": points.len(),
            "intercept_ms": ((my - slope * mx) * 100.0).round() / 100.0,
            "ms_per_100k_records": (slope * 1e5 * 100.0).round() / 100.0,
            "records_first": points.first().map(|p| p.0),
            "records_last": points.last().map(|p| p.0),
        })
    } else {
        Value::Null
    };
    let first_tenth: Vec<u64> = {
        let mut d: Vec<u64> = ok
            .iter()
            .take((ok.len() / 10).max(1))
            .map(|h| h.commit - h.trigger)
            .collect();
        d.sort_unstable();
        d
    };
    let span = match (segment.handoffs.first(), segment.handoffs.last()) {
        (Some(first), Some(last)) if segment.handoffs.len() > 1 => {
            (last.trigger - first.trigger) as f64 / 1e9
        }
        _ => 0.0,
    };
    json!({
        "attempted": segment.handoffs.len(),
        "rollbacks": segment.rollbacks.len(),
        "rollback_examples": segment.rollbacks.iter().take(5).collect::<Vec<_>>(),
        "committed": ok.len(),
        "failed_details": segment.handoffs.iter().filter(|h| !h.ok).take(5).map(|h| h.detail.clone()).collect::<Vec<_>>(),
        "rate_per_s": if span > 0.0 { (segment.handoffs.len() - 1) as f64 / span } else { 0.0 },
        "duration": {
            "p50_ms": ms(quantile(&durations, 0.5)),
            "p90_ms": ms(quantile(&durations, 0.9)),
            "p99_ms": ms(quantile(&durations, 0.99)),
            "max_ms": ms(durations.last().copied().unwrap_or(0)),
            "first_tenth_p50_ms": ms(quantile(&first_tenth, 0.5)),
        },
        "by_log_size": fit,
        "phases": phases,
        "gap": {
            "p50_ms": ms(quantile(&gaps, 0.5)),
            "p99_ms": ms(quantile(&gaps, 0.99)),
            "max_ms": ms(gaps.last().copied().unwrap_or(0)),
        },
        "latency_during": latency(&inside),
        "latency_between": latency(&outside),
        "latency_persistent_during": latency(&persistent(&inside)),
        "latency_persistent_between": latency(&persistent(&outside)),
        "requests": segment.results.samples.len(),
        "throughput": throughput(segment),
        "failures": failures(&segment.results.samples),
        "failure_examples": segment.results.examples,
        "resent": segment.results.resent,
        "kept_closed": kept_closed(&segment.results),
        "writes": lost_json(segment),
        "drift": segment.drift,
    })
}

fn start_system(name: &str, programs: &Programs, work: &Path) -> Result<Box<dyn System>, String> {
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let addr = free_addr();
    Ok(match name {
        "libhandoff-c" | "libhandoff-go" | "libhandoff-cpp" | "libhandoff-rust" => {
            let service = match name {
                "libhandoff-c" => &programs.kv_c,
                "libhandoff-go" => &programs.kv_go,
                "libhandoff-cpp" => &programs.kv_cpp,
                _ => &programs.kv_rust,
            };
            Box::new(Libhandoff::start(
                &programs.supervisor,
                service,
                None,
                work,
                addr,
            )?)
        }
        "baseline-c" => {
            let b = programs
                .baseline
                .as_ref()
                .ok_or("baseline-c needs --baseline DIR")?;
            Box::new(Libhandoff::start(
                &b.supervisor,
                &b.kv_c,
                b.library_dir.as_deref(),
                work,
                addr,
            )?)
        }
        "beyond" => Box::new(Beyond::start(programs, work, addr)?),
        "tableflip" => Box::new(Tableflip::start(programs, work, addr)?),
        "restart" => Box::new(Restart::start(programs, work, addr)?),
        other => return Err(format!("unknown system {other}")),
    })
}

/// Start `name` afresh (an empty data directory under `work`), run `f`
/// on it, stop it.
fn with_system<T>(
    name: &str,
    part: &str,
    programs: &Programs,
    work: &Path,
    f: impl FnOnce(&mut dyn System) -> T,
) -> Result<T, String> {
    let dir = work.join(name).join(part);
    let mut system = start_system(name, programs, &dir)?;
    let result = f(system.as_mut());
    system.stop();
    Ok(result)
}

/// One system: calibration and steady state, then K handoffs, then the
/// ramp, each part on a fresh start (an empty log: the example services
/// replay their whole log when they take over, so a part must not inherit
/// the previous one's).
fn run_system(
    name: &str,
    programs: &Programs,
    options: &Options,
    work: &Path,
    rate: &mut Option<f64>,
) -> Result<Value, String> {
    let (max, calibration_failures, target, steady_json) =
        with_system(name, "steady", programs, work, |system| {
            eprintln!(
                "compare: {name}: calibrating ({:?} flat out)",
                options.calibrate
            );
            let calibration = run_segment(
                system,
                options,
                &Part {
                    rate: None,
                    prefix: &format!("{name}-cal"),
                    handoffs: 0,
                    period: Duration::ZERO,
                    idle: options.calibrate,
                    watch_drift: false,
                },
            );
            let max = throughput(&calibration);
            let calibration_failures = failures(&calibration.results.samples);
            drop(calibration);
            let target = *rate.get_or_insert(max * options.load);
            eprintln!(
                "compare: {name}: {max:.0} req/s flat out; steady state at {target:.0} req/s"
            );
            let steady = run_segment(
                system,
                options,
                &Part {
                    rate: Some(target),
                    prefix: &format!("{name}-steady"),
                    handoffs: 0,
                    period: Duration::ZERO,
                    idle: options.steady,
                    watch_drift: false,
                },
            );
            let steady_samples: Vec<&Sample> = steady
                .results
                .samples
                .iter()
                .filter(|s| s.start >= steady.from && s.end <= steady.to)
                .collect();
            let steady_persistent = persistent(&steady_samples);
            let steady_json = json!({
                "throughput": throughput(&steady),
                "latency": latency(&steady_samples),
                "latency_persistent": latency(&steady_persistent),
                "failures": failures(&steady.results.samples),
                "resent": steady.results.resent,
                "kept_closed": kept_closed(&steady.results),
                "writes": lost_json(&steady),
            });
            (max, calibration_failures, target, steady_json)
        })?;
    let main_json = with_system(name, "handoffs", programs, work, |system| {
        eprintln!(
            "compare: {name}: {} handoffs, one every {:?}, load avg {}",
            options.handoffs,
            options.interval,
            loadavg()
        );
        let main = run_segment(
            system,
            options,
            &Part {
                rate: Some(target),
                prefix: &format!("{name}-main"),
                handoffs: options.handoffs,
                period: options.interval,
                idle: Duration::ZERO,
                watch_drift: true,
            },
        );
        let main_json = handoff_stats(&main);
        eprintln!(
            "compare: {name}: {} committed, {} failed requests, {} lost writes, {} kept connections \
             closed, {} resent, duration p50 {} ms",
            main_json["committed"],
            main_json["failures"]["total"],
            main_json["writes"]["lost"],
            main_json["kept_closed"]["total"],
            main_json["resent"],
            main_json["duration"]["p50_ms"]
        );
        for example in main_json["kept_closed"]["examples"]
            .as_array()
            .into_iter()
            .flatten()
            .take(3)
        {
            eprintln!(
                "compare:   kept connection closed: {}",
                example.as_str().unwrap_or("?")
            );
        }
        main_json
    })?;
    let mut ramp = Vec::new();
    for &r in &options.ramp {
        let step = with_system(name, &format!("ramp-{r}"), programs, work, |system| {
            let segment = run_segment(
                system,
                options,
                &Part {
                    rate: Some(target),
                    prefix: &format!("{name}-ramp{r}"),
                    handoffs: options.ramp_handoffs,
                    period: Duration::from_secs_f64(1.0 / r),
                    idle: Duration::ZERO,
                    watch_drift: false,
                },
            );
            let stats = handoff_stats(&segment);
            let zero = stats["failures"]["total"] == 0
                && stats["writes"]["lost"] == 0
                && stats["committed"] == stats["attempted"]
                && stats["attempted"] == options.ramp_handoffs;
            eprintln!(
                "compare: {name}: ramp {r}/s: achieved {:.1}/s, {} failed requests, {} lost",
                stats["rate_per_s"].as_f64().unwrap_or(0.0),
                stats["failures"]["total"],
                stats["writes"]["lost"]
            );
            json!({
                "target_per_s": r,
                "achieved_per_s": stats["rate_per_s"],
                "committed": stats["committed"],
                "rollbacks": stats["rollbacks"],
                "failures": stats["failures"]["total"],
                "lost": stats["writes"]["lost"],
                "kept_closed": stats["kept_closed"]["total"],
                "resent": stats["resent"],
                "duration_p50_ms": stats["duration"]["p50_ms"],
                "zero_errors": zero,
            })
        })?;
        ramp.push(step);
    }
    // The persistent clients in one place: what the handoffs did to their
    // connections, and their p99 steady and during the handoffs.
    let steady_p99 = &steady_json["latency_persistent"]["p99_ms"];
    let during_p99 = &main_json["latency_persistent_during"]["p99_ms"];
    let persistent = json!({
        "kept_closed": main_json["kept_closed"]["total"],
        "resent": main_json["resent"],
        "p99_steady_ms": steady_p99,
        "p99_during_ms": during_p99,
        "p99_during_over_steady": ratio(during_p99, steady_p99),
    });
    Ok(json!({
        "name": name,
        "calibration": { "throughput": max, "failures": calibration_failures },
        "rate": target,
        "steady": steady_json,
        "handoffs": main_json,
        "persistent": persistent,
        "ramp": ramp,
    }))
}

fn main() {
    let options = parse_options();
    let root = root();
    if let Some(json_path) = &options.render {
        let text = std::fs::read_to_string(json_path)
            .unwrap_or_else(|e| usage(&format!("{}: {e}", json_path.display())));
        let results: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| usage(&format!("{}: {e}", json_path.display())));
        publish(&root, &results, options.publish);
        return;
    }
    let programs = programs(&options.systems, options.baseline.as_deref());
    let out_dir = root.join("target/bench");
    let work = options
        .work
        .clone()
        .unwrap_or_else(|| out_dir.join(format!("compare-{}", std::process::id())));
    std::fs::create_dir_all(&work).expect("a work directory");
    let _ = now_ns();
    let mut machine = machine(&work);
    eprintln!(
        "compare: work directory {} ({})",
        work.display(),
        machine["filesystem"]
    );
    let started = Instant::now();
    let mut rate = None;
    let mut systems = Vec::new();
    for name in &options.systems {
        match run_system(name, &programs, &options, &work, &mut rate) {
            Ok(result) => systems.push(result),
            Err(e) => {
                eprintln!("compare: {name}: {e}");
                systems.push(json!({ "name": name, "error": e }));
            }
        }
    }
    machine["loadavg_end"] = json!(loadavg());
    machine["duration_s"] = json!(started.elapsed().as_secs());
    let results = json!({
        "command": options.command,
        "machine": machine,
        "options": {
            "handoffs": options.handoffs,
            "interval_ms": options.interval.as_secs_f64() * 1e3,
            "steady_secs": options.steady.as_secs_f64(),
            "calibrate_secs": options.calibrate.as_secs_f64(),
            "fresh": options.fresh,
            "persistent": options.persistent,
            "load": options.load,
            "ramp": options.ramp,
            "ramp_handoffs": options.ramp_handoffs,
            "budget_secs": options.budget.as_secs_f64(),
        },
        "systems": systems,
    });
    let json_path = out_dir.join("compare.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&results).expect("json"),
    )
    .expect("write the results");
    eprintln!("compare: results in {}", json_path.display());
    publish(&root, &results, options.publish);
    if options.work.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
}

/// Render the results: to target/bench/, and to docs/ with `--publish`.
fn publish(root: &Path, results: &Value, to_docs: bool) {
    let analysis = std::fs::read_to_string(root.join("benches/compare/analysis.md")).ok();
    let (markdown, svg) = report::render(results, analysis.as_deref());
    let dir = if to_docs {
        root.join("docs")
    } else {
        root.join("target/bench")
    };
    std::fs::create_dir_all(&dir).expect("an output directory");
    std::fs::write(dir.join("benchmarks.md"), markdown).expect("write benchmarks.md");
    std::fs::write(dir.join("benchmarks.svg"), svg).expect("write benchmarks.svg");
    eprintln!(
        "compare: wrote {}/benchmarks.md and benchmarks.svg",
        dir.display()
    );
    println!("{}", report::summary(results));
}
