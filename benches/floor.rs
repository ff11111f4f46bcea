//! The physical floor of a handoff's blackout on this machine, measured in
//! one run beside the blackout of real handoffs (issue 17).
//!
//! With our guarantees, nobody accepts from the incumbent's drain until the
//! successor's Ready, and in between there must be at least: the seal's
//! flush of what the incumbent wrote (an fdatasync), the lock changing
//! hands (flock released, taken by another open file), the successor's
//! fencing generation made durable before it writes (invariant 5: pwrite +
//! fdatasync), and the frames that ask for and report each step, each a
//! hop over a Unix socket to a process waiting in poll: PrepareHandoff,
//! Drained, SealRequest, SealComplete, Begin, Ready (six).
//!
//! Part 1 times each of those alone, in the data directory's filesystem.
//! Part 2 hands kv-c off to kv-c (the library's supervisor, the example
//! service with its log, one write before each handoff) and prints each
//! phase the supervisor measures beside the floor of that phase:
//!   drain  PrepareHandoff -> Drained        2 hops
//!   seal   SealRequest -> SealComplete      2 hops + fdatasync (nothing pending) + flock release
//!   ready  Begin -> Ready                   2 hops + flock + generation fdatasync
//!
//! Environment: HANDOFF_BENCH_DIR (default: a temporary directory under
//! target/), HANDOFF_BENCH_FLOOR_N (samples of each primitive, default 300),
//! HANDOFF_BENCH_FLOOR_HANDOFFS (default 40). Needs `make build`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/kv.rs"]
mod kv;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use handoff::supervisor::{PhaseTimings, SpawnSpec, Supervisor};
use kv::{Lang, LaunchOptions};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and p99 of `samples`, in microseconds.
fn spread(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    (at(0.5), at(0.99))
}

fn time_each(n: usize, mut step: impl FnMut()) -> (f64, f64) {
    let samples = (0..n)
        .map(|_| {
            let started = Instant::now();
            step();
            started.elapsed()
        })
        .collect();
    spread(samples)
}

fn flock(file: &File, operation: libc::c_int) {
    // SAFETY: flock on a descriptor this File owns; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
}

/// One hop: a byte to a thread waiting in poll on the other end, which
/// answers at once; half the round trip.
fn hop_us(n: usize) -> (f64, f64) {
    let (mut ours, mut theirs) = UnixStream::pair().expect("socketpair");
    let echo = std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        while theirs.read_exact(&mut byte).is_ok() {
            if theirs.write_all(&byte).is_err() {
                break;
            }
        }
    });
    let mut byte = [0u8; 1];
    let (median, p99) = time_each(n, || {
        ours.write_all(b"x").expect("send");
        ours.read_exact(&mut byte).expect("receive");
    });
    drop(ours);
    echo.join().expect("echo thread");
    (median / 2.0, p99 / 2.0)
}

struct Floor {
    seal: (f64, f64),
    seal_idle: (f64, f64),
    lock: (f64, f64),
    generation: (f64, f64),
    hop: (f64, f64),
}

fn measure_floor(dir: &Path, n: usize) -> Floor {
    let log_path = dir.join("floor.log");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("log");
    let record = [b'r'; 64];
    let seal = time_each(n, || {
        log.write_all(&record).expect("append");
        log.sync_data().expect("fdatasync");
    });
    let seal_idle = time_each(n, || log.sync_data().expect("fdatasync"));

    let lock_path = dir.join("floor.lock");
    let holder = File::create(&lock_path).expect("lock file");
    let taker = File::open(&lock_path).expect("lock file");
    flock(&holder, libc::LOCK_EX);
    let lock = time_each(n, || {
        flock(&holder, libc::LOCK_UN);
        flock(&taker, libc::LOCK_EX | libc::LOCK_NB);
        flock(&taker, libc::LOCK_UN);
        flock(&holder, libc::LOCK_EX | libc::LOCK_NB);
    });

    let generation_file = File::create(dir.join("floor.generation")).expect("generation");
    let mut count = 0u64;
    let generation = time_each(n, || {
        count += 1;
        let record = format!("{count:020}\n");
        generation_file
            .write_all_at(record.as_bytes(), 0)
            .expect("pwrite");
        generation_file.sync_data().expect("fdatasync");
    });
    Floor {
        seal,
        seal_idle,
        lock,
        generation,
        hop: hop_us(n),
    }
}

/// kv-c under the library's supervisor, in `dir`.
struct Service {
    dir: PathBuf,
    addr: String,
    supervisor: Supervisor,
    reaper: common::Reaper,
    pid: u32,
}

impl Service {
    /// With the supervisor's journal (as handoff-supervisor runs), or
    /// without it, to see what its writes cost the phases they overlap.
    fn start(dir: &Path, journal: bool) -> Service {
        std::fs::create_dir_all(dir).expect("the service's directory");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let mut supervisor = Supervisor::new(dir.join("control.sock"))
            .with_listener("kv", OwnedFd::from(listener))
            .expect("listener");
        if journal {
            supervisor.set_journal(dir.join("journal/state.bin"));
        }
        let mut service = Service {
            dir: dir.to_owned(),
            addr,
            supervisor,
            reaper: common::Reaper::default(),
            pid: 0,
        };
        let child = service
            .supervisor
            .spawn_cold(&service.spec().command)
            .expect("cold start");
        service.pid = service.reaper.keep(child);
        common::wait_for_pong(&service.addr, service.pid, Duration::from_secs(20));
        service
    }

    fn spec(&self) -> SpawnSpec {
        let options = LaunchOptions {
            log: Some(self.dir.join("service.log")),
            ..LaunchOptions::default()
        };
        let launcher = kv::write_launcher(&self.dir.join("kv-c.sh"), Lang::C, &options);
        SpawnSpec {
            command: common::service_command(
                &launcher,
                &self.dir.join("data"),
                &self.dir.join("control.sock"),
                &[],
            ),
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(5),
        }
    }

    /// One acknowledged write, then a handoff; its phases.
    fn hand_off(&mut self, n: usize) -> PhaseTimings {
        let mut client = BufReader::new(TcpStream::connect(&self.addr).expect("connect"));
        client
            .get_ref()
            .write_all(format!("SET floor{n} {n}\n").as_bytes())
            .expect("SET");
        let mut answer = String::new();
        client.read_line(&mut answer).expect("OK");
        assert!(answer.starts_with("OK "), "{answer:?}");
        drop(client);
        let outcome = self
            .supervisor
            .perform_handoff(&self.spec())
            .expect("handoff");
        assert!(outcome.committed, "{:?}", outcome.abort_reason);
        let old = self.pid;
        self.pid = self.reaper.keep(outcome.successor.expect("successor"));
        assert_eq!(
            self.reaper.wait_exit(old, Duration::from_secs(20)),
            Some(0),
            "the old incumbent"
        );
        outcome.timings
    }
}

fn bench_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    if let Ok(dir) = std::env::var("HANDOFF_BENCH_DIR") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("HANDOFF_BENCH_DIR");
        let tmp = tempfile::tempdir_in(&dir).expect("tempdir");
        let path = tmp.path().to_owned();
        return (Some(tmp), path);
    }
    let parent = common::root().join("target");
    let tmp = tempfile::Builder::new()
        .prefix("bench-floor-")
        .tempdir_in(parent)
        .expect("tempdir");
    let path = tmp.path().to_owned();
    (Some(tmp), path)
}

fn fs_of(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (mount_point, fstype) = (fields.get(1)?, fields.get(2)?);
            dir.starts_with(mount_point)
                .then(|| (mount_point.len(), format!("{fstype} on {mount_point}")))
        })
        .max()
        .map_or_else(|| "unknown filesystem".into(), |(_, what)| what)
}

fn main() {
    // `cargo bench` passes --bench; this bench takes no arguments.
    let n = env_or("HANDOFF_BENCH_FLOOR_N", 300);
    let handoffs = env_or("HANDOFF_BENCH_FLOOR_HANDOFFS", 40);
    let (_keep, dir) = bench_dir();
    println!(
        "floor of the blackout, {} ({}), {n} samples each: median [p99] us",
        dir.display(),
        fs_of(&dir)
    );
    let floor = measure_floor(&dir, n);
    let row = |what: &str, (median, p99): (f64, f64)| {
        println!("  {what:<58} {median:>8.1} [{p99:>8.1}]");
    };
    row("seal: fdatasync after a 64-byte append", floor.seal);
    row("seal: fdatasync with nothing pending", floor.seal_idle);
    row(
        "lock changing hands: flock released, taken elsewhere",
        (floor.lock.0 / 2.0, floor.lock.1 / 2.0),
    );
    row(
        "generation made durable: pwrite + fdatasync",
        floor.generation,
    );
    row("one hop: a frame to a process waiting in poll", floor.hop);
    let hop = floor.hop.0;
    let lock = floor.lock.0 / 2.0;
    let floor_drain = 2.0 * hop;
    // The service's log is already flushed when the seal comes (a write is
    // acknowledged only once durable), so its fdatasync has nothing to do.
    let floor_seal = 2.0 * hop + floor.seal_idle.0 + lock;
    let floor_ready = 2.0 * hop + lock + floor.generation.0;
    let floor_total = floor_drain + floor_seal + floor_ready;
    println!(
        "  floor = 6 hops + the seal's fdatasync (nothing pending) + the generation's + the lock twice: {:.2} ms",
        floor_total / 1000.0
    );

    println!(
        "\n{handoffs} handoffs of kv-c to kv-c (one write before each; with the supervisor's \
         journal, and without it, interleaved): median [p99] ms beside the floor"
    );
    let mut journalled = Service::start(&dir.join("journalled"), true);
    let mut bare = Service::start(&dir.join("bare"), false);
    journalled.hand_off(0);
    bare.hand_off(0);
    let mut with = Vec::new();
    let mut without = Vec::new();
    for n in 1..=handoffs {
        with.push(journalled.hand_off(n));
        without.push(bare.hand_off(n));
    }
    println!(
        "  {:<10} {:>18} {:>18} {:>7} {:>6}",
        "phase", "journal", "no journal", "floor", "x"
    );
    let phase = |what: &str, pick: fn(&PhaseTimings) -> Duration, floor_us: f64| {
        let (median, p99) = spread(with.iter().map(pick).collect());
        let (bare_median, bare_p99) = spread(without.iter().map(pick).collect());
        println!(
            "  {what:<10} {:>7.2} [{:>7.2}] {:>7.2} [{:>7.2}] {:>7.2} {:>5.1}x",
            median / 1000.0,
            p99 / 1000.0,
            bare_median / 1000.0,
            bare_p99 / 1000.0,
            floor_us / 1000.0,
            median / floor_us
        );
    };
    phase("drain", |t| t.drain, floor_drain);
    phase("seal", |t| t.seal, floor_seal);
    phase("ready", |t| t.ready, floor_ready);
    phase("blackout", |t| t.drain + t.seal + t.ready, floor_total);
    phase("total", |t| t.total, floor_total);
}
