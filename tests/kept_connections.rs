//! Client connections survive handoffs across the example services
//! (protocol v2, docs/protocol.md): every service that moves its
//! connections (kv::Lang::moves_connections) in turn, C -> Python -> Go ->
//! C++ -> Rust -> C, under load, with real processes and the crate's supervisor.
//!
//! Kept across every handoff, on their own connections: an idle one (its
//! PING answered by each generation in turn: the pid changes), a pipelining
//! one (batches of SET/GET written before any answer is read, every answer
//! right and in order) and one holding half a request line (completed after
//! the handoff, answered by the successor). None sees an EOF or a reset,
//! none resends; the load's persistent clients resend nothing either, and
//! every acknowledged write reads back at the end.

mod common;
#[path = "common/kv.rs"]
mod kv;
#[path = "common/line_client.rs"]
mod line_client;
#[path = "common/load.rs"]
mod load;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{service_command, Reaper};
use handoff::supervisor::{SpawnSpec, Supervisor};
use kv::{Lang, LaunchOptions, LANGS};
use line_client::LineClient;
use load::{Load, LoadConfig};

const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests per pipelined batch, all written before the first answer.
const PIPELINE: u64 = 16;
/// Batches the pipelining client completes before and after each handoff.
const BATCHES_PER_PHASE: u64 = 20;

/// A client pipelining SET/GET batches on one connection until stopped;
/// any wrong, missing or out-of-order answer fails it.
struct Pipeliner {
    batches: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Pipeliner {
    fn start(addr: SocketAddr) -> Pipeliner {
        let batches = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut kept = LineClient::connect(addr, IO_TIMEOUT);
        let thread = {
            let (batches, stop) = (batches.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let mut batch = String::new();
                    for i in n..n + PIPELINE {
                        batch.push_str(&format!("SET pipe{} v{i}\nGET pipe{}\n", i % 64, i % 64));
                    }
                    kept.send(&batch);
                    for i in n..n + PIPELINE {
                        let set = kept.line();
                        assert!(set.starts_with("OK "), "SET pipe{} v{i}: {set:?}", i % 64);
                        assert_eq!(kept.line(), format!("VALUE v{i}"), "GET pipe{}", i % 64);
                    }
                    n += PIPELINE;
                    batches.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        Pipeliner {
            batches,
            stop,
            thread,
        }
    }

    /// Wait until `more` batches past now were answered in full.
    fn wait_batches(&self, more: u64) {
        let target = self.batches.load(Ordering::SeqCst) + more;
        while self.batches.load(Ordering::SeqCst) < target {
            assert!(!self.thread.is_finished(), "the pipelining client failed");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Err(panic) = self.thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

fn launcher(dir: &Path, lang: Lang) -> PathBuf {
    let options = LaunchOptions {
        log: Some(dir.join("service.log")),
        ..LaunchOptions::default()
    };
    kv::write_launcher(&dir.join(format!("kv-{}.sh", lang.short())), lang, &options)
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn kept_connections_survive_handoffs_across_the_services_under_load() {
    let movers: Vec<Lang> = LANGS
        .into_iter()
        .filter(|l| l.moves_connections())
        .collect();
    assert!(
        movers.len() >= 2,
        "fewer than two services move connections"
    );
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let supervisor = Supervisor::new(dir.path().join("control.sock"))
        .with_listener("kv", OwnedFd::from(listener))
        .unwrap()
        .with_journal(dir.path().join("journal/state.bin"));
    let spec = |lang: Lang| SpawnSpec {
        command: service_command(
            &launcher(dir.path(), lang),
            &dir.path().join("data"),
            &dir.path().join("control.sock"),
            &[],
        ),
        deadline: Duration::from_secs(30),
        drain_grace: Duration::from_secs(5),
    };
    let mut reaper = Reaper::default();
    let first = movers[0];
    let mut serving = reaper.keep(supervisor.spawn_cold(&spec(first).command).unwrap());
    let mut idle = LineClient::connect(addr, IO_TIMEOUT);
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while idle.ping().0 != serving {
        assert!(std::time::Instant::now() < deadline, "never served");
    }

    let load = Load::start(
        addr,
        LoadConfig {
            pace: Duration::from_millis(2),
            ..LoadConfig::default()
        },
    );
    let pipeliner = Pipeliner::start(addr);
    let mut half = LineClient::connect(addr, IO_TIMEOUT);
    // C -> Python -> Go -> C++ -> Rust -> C: each mover in turn, back to the first.
    let targets: Vec<Lang> = movers[1..].iter().copied().chain([first]).collect();
    let mut served_by = vec![(serving, first.tag().to_string())];
    for (n, &lang) in targets.iter().enumerate() {
        pipeliner.wait_batches(BATCHES_PER_PHASE);
        assert!(load.wait_answers(40, IO_TIMEOUT), "the load stalled");
        // Half a request line, the rest after the handoff.
        half.send(&format!("SET half{n} "));
        let outcome = supervisor.perform_handoff(&spec(lang)).unwrap();
        assert!(
            outcome.committed,
            "handoff {} to {}: {:?}\n{}",
            n + 1,
            lang.tag(),
            outcome.abort_reason,
            log_tail(dir.path())
        );
        let successor = reaper.keep(outcome.successor.unwrap());
        assert_eq!(
            reaper.wait_exit(serving, IO_TIMEOUT),
            Some(0),
            "the old incumbent\n{}",
            log_tail(dir.path())
        );
        serving = successor;
        half.send(&format!("v{n}\nGET half{n}\n"));
        assert!(half.line().starts_with("OK "), "the half line's SET");
        assert_eq!(half.line(), format!("VALUE v{n}"));
        let answered = idle.ping();
        assert_eq!(
            answered,
            (serving, lang.tag().to_string()),
            "the idle connection after handoff {}",
            n + 1
        );
        served_by.push(answered);
        pipeliner.wait_batches(BATCHES_PER_PHASE);
    }
    assert!(load.wait_answers(40, IO_TIMEOUT), "the load stalled");
    pipeliner.stop();
    let tally = load.stop();
    assert_eq!(
        (tally.failed(), tally.resent),
        (0, 0),
        "the load: {}",
        tally.summary()
    );
    let lost = load::verify(addr, &tally.keys).expect("reading the writes back");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    eprintln!(
        "kept connections served in turn by {served_by:?}; load {}",
        tally.summary()
    );
}
