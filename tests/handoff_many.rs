//! 100 consecutive handoffs of a C service in one supervisor: all commit,
//! every old incumbent exits 0, a client pinging throughout is never
//! refused, and the supervisor ends with the descriptors and threads it
//! started with.

mod common;

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use handoff::supervisor::{SpawnSpec, Supervisor};

const HANDOFFS: usize = 100;

#[test]
fn a_hundred_handoffs_in_a_row_leak_nothing() {
    let binary = noop_service();
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let data_dir = dir.path().join("data");
    let (tcp, addr) = tcp_listener();
    let supervisor = Supervisor::new(&control)
        .with_listener("kv", OwnedFd::from(tcp))
        .unwrap()
        .with_journal(dir.path().join("state.bin"));
    let command = service_command(&binary, &data_dir, &control, &[]);
    let mut reaper = Reaper::default();
    let mut incumbent = reaper.keep(supervisor.spawn_cold(&command).unwrap());
    wait_for_pong(&addr, incumbent, Duration::from_secs(10));

    // Warm up once so lazily created state (the log sink, thread-locals)
    // is not counted as growth.
    let spec = SpawnSpec {
        command,
        ..SpawnSpec::new(&binary)
    };
    let warmup = supervisor.perform_handoff(&spec).unwrap();
    assert!(warmup.committed);
    let previous = incumbent;
    incumbent = reaper.keep(warmup.successor.unwrap());
    assert_eq!(reaper.wait_exit(previous, Duration::from_secs(10)), Some(0));
    let fds_before = open_fds();
    let threads_before = thread_count();

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, answered, addr) = (Arc::clone(&stop), Arc::clone(&answered), addr.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match request(&addr, "PING") {
                    Ok(answer) if answer.starts_with("PONG ") => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
            }
            failures
        })
    };

    for n in 0..HANDOFFS {
        let outcome = supervisor.perform_handoff(&spec).unwrap();
        assert!(outcome.committed, "handoff {n}: {:?}", outcome.abort_reason);
        let previous = incumbent;
        incumbent = reaper.keep(outcome.successor.unwrap());
        assert_eq!(
            reaper.wait_exit(previous, Duration::from_secs(10)),
            Some(0),
            "handoff {n}: old incumbent"
        );
        reaper.0.retain(|child| child.pid() != previous);
    }
    stop.store(true, Ordering::Relaxed);
    let failures = client.join().unwrap();
    assert!(failures.is_empty(), "client requests failed: {failures:?}");
    assert!(answered.load(Ordering::Relaxed) > 0);
    wait_for_pong(&addr, incumbent, Duration::from_secs(10));

    assert_eq!(open_fds(), fds_before, "supervisor descriptors");
    assert_eq!(thread_count(), threads_before, "supervisor threads");
}
