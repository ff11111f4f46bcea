//! peer-ours: the trivial PING service, taking part in handoffs through
//! libhandoff's Rust API. Same behaviour as peer-beyond, which uses the
//! reference crate; the interoperability tests and the handoff benchmark
//! hand one off to the other.
//!
//! `peer-ours --data-dir DIR --control-socket PATH`; the listener `kv` is
//! inherited (cold start or successor). Exits 0 once a handoff away from it
//! has committed.

#[path = "common.rs"]
mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fail, Args, Peer};
use handoff::incumbent::{Incumbent, ServeOutcome};
use handoff::listeners::detect;
use handoff::lock::DataDirLock;
use handoff::poll::{wait_fd, Wait};
use handoff::service::{DrainReport, HookContext, HookError, SealReport, Service};
use handoff::successor::{Readiness, Successor};

const PROGRAM: &str = "peer-ours";

struct Hooks(Arc<Peer>);

impl Service for Hooks {
    fn drain(&self, _ctx: &HookContext<'_>) -> Result<DrainReport, HookError> {
        Ok(DrainReport {
            open_conns_remaining: self.0.drain(),
            accept_closed: true,
            ..DrainReport::default()
        })
    }

    fn seal(&self, _ctx: &HookContext<'_>) -> Result<SealReport, HookError> {
        Ok(SealReport::default())
    }

    fn resume_after_abort(&self) -> Result<(), HookError> {
        self.0.resume();
        Ok(())
    }
}

fn main() {
    let args = Args::from_env(PROGRAM);
    let mut inherited = detect().unwrap_or_else(|e| fail(PROGRAM, "detect", e));
    let peer = Peer::new("ours");

    let (incumbent, accept_loop) = match inherited.take_control() {
        None => {
            let listener = inherited
                .listeners_mut()
                .take_tcp("kv")
                .unwrap_or_else(|e| fail(PROGRAM, "listener kv", e))
                .unwrap_or_else(|| fail(PROGRAM, "listener kv", "not inherited"));
            let lock = DataDirLock::acquire(&args.data_dir)
                .unwrap_or_else(|e| fail(PROGRAM, "data-dir lock", e));
            let incumbent = Incumbent::bind(&args.control_socket, lock)
                .unwrap_or_else(|e| fail(PROGRAM, "control socket", e));
            (incumbent, peer.spawn_accept_loop(listener))
        }
        Some(control) => {
            let mut successor = Successor::from_inherited(control, inherited)
                .unwrap_or_else(|e| fail(PROGRAM, "successor", e));
            successor
                .handshake(PROGRAM.as_bytes())
                .unwrap_or_else(|e| fail(PROGRAM, "handshake", e));
            // As a service's own loop would: wait on the control
            // descriptor (here beside nothing else), then look for Begin.
            let deadline = Some(Instant::now() + Duration::from_secs(600));
            while !successor
                .poll_begin()
                .unwrap_or_else(|e| fail(PROGRAM, "waiting for Begin", e))
            {
                let control = successor.control_fd().as_raw_fd();
                if wait_fd(control, libc::POLLIN, None, deadline)
                    .unwrap_or_else(|e| fail(PROGRAM, "waiting for Begin", e))
                    == Wait::TimedOut
                {
                    fail(PROGRAM, "waiting for Begin", "timed out");
                }
            }
            let listener = successor
                .listeners()
                .and_then(|listeners| listeners.take_tcp("kv"))
                .unwrap_or_else(|e| fail(PROGRAM, "listener kv", e))
                .unwrap_or_else(|| fail(PROGRAM, "listener kv", "not inherited"));
            let address = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let lock = DataDirLock::acquire(&args.data_dir)
                .unwrap_or_else(|e| fail(PROGRAM, "data-dir lock", e));
            let accept_loop = peer.spawn_accept_loop(listener);
            let readiness = Readiness {
                listening_on: vec![address],
                healthz_ok: true,
                advertised_revision_per_shard: Vec::new(),
            };
            let incumbent = successor
                .announce_ready(readiness, &args.control_socket, lock)
                .unwrap_or_else(|e| fail(PROGRAM, "announcing Ready", e));
            (incumbent, accept_loop)
        }
    };

    let hooks = Hooks(Arc::clone(&peer));
    let serve = std::thread::spawn(move || {
        let mut incumbent = incumbent;
        incumbent.serve(&hooks)
    });
    let outcome = serve
        .join()
        .unwrap_or_else(|_| fail(PROGRAM, "serve", "the serve thread panicked"));
    peer.quit();
    let _ = accept_loop.join();
    match outcome {
        Ok(ServeOutcome::Committed) => std::process::exit(0),
        Ok(other) => {
            eprintln!("{PROGRAM}[{}]: serve ended: {other:?}", std::process::id());
            std::process::exit(3)
        }
        Err(e) => fail(PROGRAM, "serve", e),
    }
}
