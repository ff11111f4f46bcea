//! What moving idle client connections adds to a handoff (protocol v2,
//! docs/protocol.md): the same handoff of `peer-mover` (tests/peers/
//! mover_service.rs, the loop-driven Rust service whose connections move)
//! with 0, 1,000 and 10,000 idle connections, each answered once before and
//! once after (by the successor: checked, untimed). Rows interleaved, one
//! handoff of each in turn, so that load from elsewhere hits all alike.
//!
//! Prints, per row, the median of each of our `PhaseTimings` and the max
//! total, and what 1,000 and 10,000 add to the median total with none.
//! Goal (issue 15): 10,000 idle connections add at most 50 ms.
//!
//! Environment: HANDOFF_BENCH_MOVES_N (handoffs per row, default 7).

#[path = "../tests/peers/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use handoff::spawn::Command;
use handoff::supervisor::{PhaseTimings, SpawnSpec, Supervisor};
use harness::{peer_args, peer_binary, wait_serving, Impl, Procs};

const ROWS: [usize; 3] = [0, 1_000, 10_000];
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// One peer-mover service with `idle` kept connections.
struct Service {
    procs: Procs,
    _tmp: tempfile::TempDir,
    data_dir: PathBuf,
    control: PathBuf,
    addr: SocketAddr,
    supervisor: Supervisor,
    pid: u32,
    idle: Vec<BufReader<TcpStream>>,
}

impl Service {
    fn start(idle: usize) -> Service {
        let tmp = tempfile::Builder::new()
            .prefix("bench-moves-")
            .tempdir()
            .expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let control = tmp.path().join("control.sock");
        let supervisor = Supervisor::new(&control)
            .with_listener("kv", OwnedFd::from(listener))
            .expect("add listener")
            .with_journal(tmp.path().join("journal/state.bin"));
        let mut service = Service {
            procs: Procs::default(),
            data_dir: tmp.path().join("data"),
            control,
            addr,
            supervisor,
            pid: 0,
            idle: Vec::new(),
            _tmp: tmp,
        };
        let child = service
            .supervisor
            .spawn_cold(&service.spec().command)
            .expect("spawn_cold");
        service.pid = service.procs.add_ours(child);
        service.wait_serving();
        // In batches below the listener's backlog, so no SYN is retried.
        while service.idle.len() < idle {
            let batch = (idle - service.idle.len()).min(100);
            let mut streams: Vec<_> = (0..batch).map(|_| connect(addr)).collect();
            ping_all(&mut streams, service.pid);
            service.idle.extend(streams);
        }
        service
    }

    fn spec(&self) -> SpawnSpec {
        SpawnSpec {
            command: Command {
                binary: peer_binary(Impl::Mover),
                args: peer_args(&self.data_dir, &self.control)
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                env: Vec::new(),
            },
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(10),
        }
    }

    fn wait_serving(&self) {
        wait_serving(
            self.addr,
            &self.data_dir,
            &self.control,
            None,
            self.pid,
            Impl::Mover,
        );
    }

    /// One committed handoff, its timings; every idle connection is then
    /// answered by the successor (untimed).
    fn hand_off(&mut self) -> PhaseTimings {
        let outcome = self
            .supervisor
            .perform_handoff(&self.spec())
            .expect("perform_handoff");
        assert!(outcome.committed, "rolled back: {:?}", outcome.abort_reason);
        let new = self.procs.add_ours(outcome.successor.expect("a successor"));
        assert_eq!(self.procs.wait_exit(self.pid, EXIT_TIMEOUT), Ok(0));
        self.pid = new;
        self.wait_serving();
        ping_all(&mut self.idle, new);
        outcome.timings
    }
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    BufReader::new(stream)
}

/// PING on every kept connection (all sent, then all read: one by one
/// would cost the service a poll over every connection per answer), each
/// answered by `pid` (the moved ones too).
fn ping_all(streams: &mut [BufReader<TcpStream>], pid: u32) {
    for stream in streams.iter() {
        stream
            .get_ref()
            .write_all(b"PING\n")
            .expect("a kept connection stays open");
    }
    let pong = format!("PONG {pid} mover\n");
    for stream in streams {
        let mut line = String::new();
        stream.read_line(&mut line).expect("an answer");
        assert_eq!(line, pong, "a kept connection");
    }
}

/// One phase of a handoff's timings.
type Phase = fn(&PhaseTimings) -> Duration;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("HANDOFF_BENCH_MOVES_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7usize)
        .max(1);
    let needed = *ROWS.iter().max().unwrap() as u64 + 1024;
    let limit = handoff::sys::raise_descriptor_limit().expect("RLIMIT_NOFILE");
    assert!(
        limit >= needed,
        "RLIMIT_NOFILE hard limit {limit} < {needed} (raise it: ulimit -Hn)"
    );
    peer_binary(Impl::Mover);
    println!("moving idle connections: peer-mover, {n} handoffs per row, rows interleaved");
    let mut services: Vec<Service> = ROWS.iter().map(|&idle| Service::start(idle)).collect();
    let mut timings: Vec<Vec<PhaseTimings>> = vec![Vec::new(); ROWS.len()];
    for _ in 0..n {
        for (service, row) in services.iter_mut().zip(&mut timings) {
            row.push(service.hand_off());
        }
    }
    let phases: [(&str, Phase); 7] = [
        ("hello", |t| t.hello),
        ("spawn", |t| t.spawn),
        ("drain", |t| t.drain),
        ("seal", |t| t.seal),
        ("ready", |t| t.ready),
        ("commit", |t| t.commit),
        ("total", |t| t.total),
    ];
    let header: Vec<String> = phases
        .iter()
        .map(|(name, _)| format!("{name:>7}"))
        .collect();
    println!(
        "  median ms, by phase\n  {:>7} | {} | max total",
        "idle",
        header.join(" | ")
    );
    let mut totals = Vec::new();
    for (idle, row) in ROWS.iter().zip(&timings) {
        let cells: Vec<String> = phases
            .iter()
            .map(|(_, phase)| {
                format!(
                    "{:>7.1}",
                    median(row.iter().map(|t| ms(phase(t))).collect())
                )
            })
            .collect();
        let max = row.iter().map(|t| ms(t.total)).fold(0.0, f64::max);
        totals.push(median(row.iter().map(|t| ms(t.total)).collect()));
        println!("  {idle:>7} | {} | {max:>7.1}", cells.join(" | "));
    }
    println!(
        "  10,000 idle connections add {:.1} ms to the median handoff (goal: <= 50 ms); \
         1,000 add {:.1} ms",
        totals[2] - totals[0],
        totals[1] - totals[0]
    );
}
