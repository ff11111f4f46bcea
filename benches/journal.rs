//! `Journal::write` against the least a durable replace can do: a
//! hand-written baseline that writes the same bytes to `<path>.tmp`, fsyncs
//! it, renames it over `<path>` and fsyncs the directory. Both run in the
//! same directory, interleaved call by call (which goes first alternates),
//! so the disk's mood hits both alike. Goal: median ratio <= 1.1.
//!
//! Environment: HANDOFF_BENCH_DIR (default: a temporary directory under
//! ./target, so on disk rather than tmpfs), HANDOFF_BENCH_ROUNDS (default 5),
//! HANDOFF_BENCH_ITERS (per round and variant, default 200).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use handoff::{HandoffId, Journal, Phase};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The baseline: write tmp, fsync, rename, fsync the directory.
fn baseline(dir: &Path, tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    File::open(dir)?.sync_all()
}

/// The mount `dir` lives on, from /proc/mounts (longest matching mount
/// point): "fstype on mountpoint (device, options)".
fn filesystem_of(dir: &Path) -> String {
    let Ok(mounts) = fs::read_to_string("/proc/mounts") else {
        return "unknown (no /proc/mounts)".into();
    };
    let best = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount_point, fstype, options) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            // /proc/mounts escapes spaces and the like as octal.
            let mount_point = mount_point.replace("\\040", " ");
            dir.starts_with(&mount_point).then(|| {
                (
                    mount_point,
                    fstype.to_owned(),
                    device.to_owned(),
                    options.to_owned(),
                )
            })
        })
        .max_by_key(|(mount_point, ..)| mount_point.len());
    match best {
        Some((mount_point, fstype, device, options)) => {
            format!("{fstype} on {mount_point} ({device}, {options})")
        }
        None => "unknown (no mount matches)".into(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Stats {
    median: f64,
    p90: f64,
    mean: f64,
    min: f64,
}

fn stats(samples: &[f64]) -> Stats {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    Stats {
        median: percentile(&v, 0.5),
        p90: percentile(&v, 0.9),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        min: v[0],
    }
}

fn main() {
    let rounds: usize = env_or("HANDOFF_BENCH_ROUNDS", 5);
    let iters: usize = env_or("HANDOFF_BENCH_ITERS", 200);

    // Keep the temporary directory alive for the whole run.
    let (_guard, dir) = match std::env::var_os("HANDOFF_BENCH_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            fs::create_dir_all(&dir).expect("create HANDOFF_BENCH_DIR");
            (None, dir)
        }
        None => {
            let target = std::env::current_dir().expect("cwd").join("target");
            fs::create_dir_all(&target).expect("create ./target");
            let tmp = tempfile::Builder::new()
                .prefix("journal-bench-")
                .tempdir_in(&target)
                .expect("tempdir under ./target");
            let dir = tmp.path().to_owned();
            (Some(tmp), dir)
        }
    };
    let dir = dir.canonicalize().expect("canonical bench directory");

    let journal = Journal {
        handoff_id: HandoffId::from_bytes(*b"0123456789abcdef"),
        phase: Phase::AwaitingReady,
        incumbent_pid: 4242,
        successor_pid: Some(4243),
        started_at_unix_ms: 1_764_000_000_123,
    };
    let bytes = journal.to_bytes();
    let lib_path = dir.join("state-lib.bin");
    let base_path = dir.join("state-base.bin");
    let base_tmp = dir.join("state-base.bin.tmp");

    let mut lib = || journal.write(&lib_path).expect("Journal::write");
    let mut base = || baseline(&dir, &base_tmp, &base_path, &bytes).expect("baseline write");

    // Warm up (directory entries, page cache, journal of the filesystem).
    for _ in 0..20 {
        lib();
        base();
    }
    assert_eq!(fs::read(&lib_path).unwrap(), bytes);
    assert_eq!(fs::read(&base_path).unwrap(), bytes);

    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed().as_nanos() as f64 / 1_000.0
    };
    let (mut lib_all, mut base_all) = (Vec::new(), Vec::new());
    // Adjacent (lib, baseline) pairs: their ratio and difference cancel the
    // drift that pooled medians cannot (fsync latency moves in regimes when
    // other processes write to the same disk).
    let (mut pair_ratios, mut pair_diffs) = (Vec::new(), Vec::new());
    let mut round_ratios = Vec::new();
    println!(
        "journal: Journal::write vs baseline (write tmp + fsync + rename + fsync dir), {} bytes",
        bytes.len()
    );
    println!("directory: {}", dir.display());
    println!("filesystem: {}", filesystem_of(&dir));
    println!("{rounds} rounds x {iters} iterations of each, interleaved (µs):");
    for round in 0..rounds {
        let (mut lib_round, mut base_round) =
            (Vec::with_capacity(iters), Vec::with_capacity(iters));
        for i in 0..iters {
            if (i + round) % 2 == 0 {
                lib_round.push(time(&mut lib));
                base_round.push(time(&mut base));
            } else {
                base_round.push(time(&mut base));
                lib_round.push(time(&mut lib));
            }
        }
        for (l, b) in lib_round.iter().zip(&base_round) {
            pair_ratios.push(l / b);
            pair_diffs.push(l - b);
        }
        let (l, b) = (stats(&lib_round), stats(&base_round));
        println!(
            "  round {round}: lib median {:>8.1} p90 {:>8.1} | baseline median {:>8.1} p90 {:>8.1} | ratio {:.3}",
            l.median,
            l.p90,
            b.median,
            b.p90,
            l.median / b.median
        );
        round_ratios.push(l.median / b.median);
        lib_all.extend(lib_round);
        base_all.extend(base_round);
    }
    let (l, b) = (stats(&lib_all), stats(&base_all));
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}",
        "variant", "median", "p90", "mean", "min"
    );
    for (name, s) in [("lib", &l), ("baseline", &b)] {
        println!(
            "{name:<10} {:>7.1} µs {:>7.1} µs {:>7.1} µs {:>7.1} µs",
            s.median, s.p90, s.mean, s.min
        );
    }
    round_ratios.sort_by(f64::total_cmp);
    let (pr, pd) = (stats(&pair_ratios), stats(&pair_diffs));
    println!(
        "ratio lib/baseline: pooled median {:.3}, pooled p90 {:.3}, per-round medians {:.3}..{:.3}",
        l.median / b.median,
        l.p90 / b.p90,
        round_ratios[0],
        round_ratios[round_ratios.len() - 1],
    );
    println!(
        "paired (adjacent calls): median ratio {:.3}, p90 ratio {:.3}; median extra cost {:+.1} µs",
        pr.median, pr.p90, pd.median
    );
    println!(
        "goal (paired median ratio) <= 1.1: {}",
        if pr.median <= 1.1 { "met" } else { "NOT met" }
    );
}
