//! bench-beyond-kv: the key-value service of examples/README.md (line
//! protocol, fsync before `OK`, drain by closing connections after their
//! answers) taking part in handoffs through the reference crate
//! `beyond-handoff` 0.1.4 (renamed `beyond`), for benches/compare.
//!
//! `bench-beyond-kv --data-dir DIR --control-socket PATH`; the listener `kv`
//! is inherited from bench-beyond-supervisor (cold start or successor).
//! `PONG <pid> beyond`. Exits 0 once a handoff away from it has committed.
//!
//! As kv-c, a successor preloads the log before its handshake (before its
//! `Hello`, which makes the supervisor drain the incumbent) and replays
//! only what was appended since once it holds the lock (kv_common.rs).

#[path = "kv_common.rs"]
mod kv_common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beyond::{
    detect_role, DataDirLock, DrainReport, Drainable, Incumbent, ReadinessSnapshot, Role,
    SealReport, StateSnapshot,
};
use kv_common::{fail, preload, say, Kv};

const PROGRAM: &str = "beyond";

struct Hooks(Arc<Kv>);

impl Drainable for Hooks {
    fn drain(&self, deadline: Instant) -> beyond::Result<DrainReport> {
        let budget = deadline.saturating_duration_since(Instant::now());
        Ok(DrainReport {
            open_conns_remaining: self.0.drain(budget),
            accept_closed: true,
        })
    }

    fn seal(&self) -> beyond::Result<SealReport> {
        let records = self.0.seal()?;
        Ok(SealReport {
            last_revision_per_shard: vec![records],
            data_dir_fingerprint: [0; 32],
        })
    }

    fn resume_after_abort(&self) -> beyond::Result<()> {
        self.0.resume()?;
        Ok(())
    }

    fn snapshot_state(&self) -> StateSnapshot {
        StateSnapshot {
            shard_count: 1,
            open_conns: 0,
            last_revision_per_shard: vec![self.0.records()],
        }
    }
}

fn args() -> (PathBuf, PathBuf) {
    let mut data_dir = None;
    let mut control = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().map(PathBuf::from);
        match arg.to_str() {
            Some("--data-dir") => data_dir = value,
            Some("--control-socket") => control = value,
            _ => {
                eprintln!("usage: bench-beyond-kv --data-dir DIR --control-socket PATH");
                std::process::exit(2)
            }
        }
    }
    match (data_dir, control) {
        (Some(d), Some(c)) => (d, c),
        _ => {
            eprintln!("usage: bench-beyond-kv --data-dir DIR --control-socket PATH");
            std::process::exit(2)
        }
    }
}

/// The lock, retried for up to 2 s while the sealed incumbent lets go.
fn lock(data_dir: &std::path::Path) -> DataDirLock {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match DataDirLock::acquire(data_dir) {
            Ok(lock) => return lock,
            Err(e) if Instant::now() >= deadline => fail(PROGRAM, "data-dir lock", e),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn main() {
    let (data_dir, control) = args();
    let role = detect_role().unwrap_or_else(|e| fail(PROGRAM, "detect_role", e));

    let (kv, incumbent, accept_loop) = match role {
        Role::ColdStart { mut inherited } => {
            let listener = inherited
                .take("kv")
                .unwrap_or_else(|| fail(PROGRAM, "listener kv", "not inherited"));
            let lock = lock(&data_dir);
            let kv = Kv::open(PROGRAM, &data_dir, None).unwrap_or_else(|e| fail(PROGRAM, "log", e));
            let incumbent = Incumbent::bind_cold_start(&control, lock)
                .unwrap_or_else(|e| fail(PROGRAM, "control socket", e));
            let address = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let accept_loop = kv.spawn_accept_loop(listener);
            say(
                PROGRAM,
                format_args!("cold start on tcp://{address}: {} record(s)", kv.records()),
            );
            (kv, incumbent, accept_loop)
        }
        Role::Successor(successor) => {
            // While the incumbent still serves: the supervisor drains it as
            // soon as our Hello arrives (and waits 5 s at most for it).
            let preloaded = preload(PROGRAM, &data_dir);
            let handshook = successor
                .handshake(b"bench-beyond-kv".to_vec())
                .unwrap_or_else(|e| fail(PROGRAM, "handshake", e));
            let mut begun = handshook
                .wait_for_begin()
                .unwrap_or_else(|e| fail(PROGRAM, "waiting for Begin", e));
            let listener = begun
                .take_listener("kv")
                .unwrap_or_else(|| fail(PROGRAM, "listener kv", "not inherited"));
            let address = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let lock = lock(&data_dir);
            let kv =
                Kv::open(PROGRAM, &data_dir, preloaded).unwrap_or_else(|e| fail(PROGRAM, "log", e));
            let accept_loop = kv.spawn_accept_loop(listener);
            let readiness = ReadinessSnapshot {
                listening_on: vec![format!("tcp://{address}")],
                healthz_ok: true,
                advertised_revision_per_shard: vec![kv.records()],
            };
            let incumbent = begun
                .announce_and_bind(readiness, &control, lock)
                .unwrap_or_else(|e| fail(PROGRAM, "announcing Ready", e));
            say(
                PROGRAM,
                format_args!("took over on tcp://{address}: {} record(s)", kv.records()),
            );
            (kv, incumbent, accept_loop)
        }
    };

    let hooks = Hooks(Arc::clone(&kv));
    let serve = std::thread::spawn(move || incumbent.serve(hooks));
    let outcome = serve
        .join()
        .unwrap_or_else(|_| fail(PROGRAM, "serve", "the serve thread panicked"));
    kv.quit();
    let _ = accept_loop.join();
    match outcome {
        Ok(()) => {
            say(PROGRAM, format_args!("handoff committed: stepping down"));
            // Let the connections closed by the drain finish lingering.
            std::thread::sleep(Duration::from_millis(500));
            std::process::exit(0)
        }
        Err(e) => fail(PROGRAM, "serve", e),
    }
}
