//! peer-beyond: the trivial PING service, taking part in handoffs through
//! the reference crate (`beyond-handoff` 0.1.4, renamed `beyond`). Same
//! behaviour as peer-ours, which uses libhandoff.
//!
//! `peer-beyond --data-dir DIR --control-socket PATH`; the listener `kv` is
//! inherited (cold start or successor). Exits 0 once a handoff away from it
//! has committed.

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use beyond::{
    detect_role, DataDirLock, DrainReport, Drainable, Incumbent, ReadinessSnapshot, Role,
    SealReport, StateSnapshot,
};
use common::{fail, Args, Peer};

const PROGRAM: &str = "peer-beyond";

struct Hooks(Arc<Peer>);

impl Drainable for Hooks {
    fn drain(&self, _deadline: Instant) -> beyond::Result<DrainReport> {
        Ok(DrainReport {
            open_conns_remaining: self.0.drain(),
            accept_closed: true,
        })
    }

    fn seal(&self) -> beyond::Result<SealReport> {
        Ok(SealReport::default())
    }

    fn resume_after_abort(&self) -> beyond::Result<()> {
        self.0.resume();
        Ok(())
    }

    fn snapshot_state(&self) -> StateSnapshot {
        StateSnapshot {
            shard_count: 0,
            open_conns: self.0.open_conns(),
            last_revision_per_shard: Vec::new(),
        }
    }
}

fn main() {
    let args = Args::from_env(PROGRAM);
    let role = detect_role().unwrap_or_else(|e| fail(PROGRAM, "detect_role", e));
    let peer = Peer::new("beyond");

    let (incumbent, accept_loop) = match role {
        Role::ColdStart { mut inherited } => {
            let listener = inherited
                .take("kv")
                .unwrap_or_else(|| fail(PROGRAM, "listener kv", "not inherited"));
            let lock = DataDirLock::acquire_or_break_stale(&args.data_dir)
                .unwrap_or_else(|e| fail(PROGRAM, "data-dir lock", e));
            let incumbent = Incumbent::bind_cold_start(&args.control_socket, lock)
                .unwrap_or_else(|e| fail(PROGRAM, "control socket", e));
            (incumbent, peer.spawn_accept_loop(listener))
        }
        Role::Successor(successor) => {
            let handshook = successor
                .handshake(PROGRAM.as_bytes().to_vec())
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
            let lock = DataDirLock::acquire(&args.data_dir)
                .unwrap_or_else(|e| fail(PROGRAM, "data-dir lock", e));
            let accept_loop = peer.spawn_accept_loop(listener);
            let readiness = ReadinessSnapshot {
                listening_on: vec![address],
                healthz_ok: true,
                advertised_revision_per_shard: Vec::new(),
            };
            let incumbent = begun
                .announce_and_bind(readiness, &args.control_socket, lock)
                .unwrap_or_else(|e| fail(PROGRAM, "announcing Ready", e));
            (incumbent, accept_loop)
        }
    };

    let hooks = Hooks(Arc::clone(&peer));
    let serve = std::thread::spawn(move || incumbent.serve(hooks));
    let outcome = serve
        .join()
        .unwrap_or_else(|_| fail(PROGRAM, "serve", "the serve thread panicked"));
    peer.quit();
    let _ = accept_loop.join();
    match outcome {
        Ok(()) => std::process::exit(0),
        Err(e) => fail(PROGRAM, "serve", e),
    }
}
