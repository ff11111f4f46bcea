//! bench-beyond-supervisor: the reference crate's supervisor
//! (`beyond::supervisor::Supervisor`, beyond-handoff 0.1.4) around one
//! service, as a process of its own so that benches/compare can watch its
//! descriptors and memory across handoffs.
//!
//! ```text
//! bench-beyond-supervisor --listen HOST:PORT --binary PATH --data-dir DIR
//!     --control-socket PATH --journal PATH
//! ```
//!
//! Binds the listener `kv`, cold-starts `PATH --data-dir DIR
//! --control-socket PATH` with it, prints `started <pid>`, then performs one
//! handoff per `handoff` line on standard input and prints
//! `committed <ms> <pid>` or `rolled-back <ms> <reason>` (ms: the time
//! `perform_handoff` took). Standard input closed: the service is killed
//! and the program exits.

use std::io::{BufRead, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: bench-beyond-supervisor --listen HOST:PORT --binary PATH --data-dir DIR \
         --control-socket PATH --journal PATH"
    );
    std::process::exit(2)
}

/// Reap the children that have exited (old incumbents after a commit).
fn reap(children: &mut Vec<Child>) {
    children.retain_mut(|child| !matches!(child.try_wait(), Ok(Some(_))));
}

fn main() {
    let mut listen = None;
    let mut binary = None;
    let mut data_dir = None;
    let mut control = None;
    let mut journal = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--listen" => listen = Some(value),
            "--binary" => binary = Some(PathBuf::from(value)),
            "--data-dir" => data_dir = Some(value),
            "--control-socket" => control = Some(PathBuf::from(value)),
            "--journal" => journal = Some(PathBuf::from(value)),
            _ => usage(),
        }
    }
    let (Some(listen), Some(binary), Some(data_dir), Some(control), Some(journal)) =
        (listen, binary, data_dir, control, journal)
    else {
        usage()
    };

    let listener = TcpListener::bind(&listen).unwrap_or_else(|e| {
        eprintln!("bench-beyond-supervisor: bind {listen}: {e}");
        std::process::exit(1)
    });
    let fd = listener.as_raw_fd();
    let supervisor = beyond::supervisor::Supervisor::new(&control)
        .unwrap_or_else(|e| {
            eprintln!("bench-beyond-supervisor: {e}");
            std::process::exit(1)
        })
        .with_listener("kv", fd)
        .with_journal(journal);
    let service_args = vec![
        "--data-dir".to_string(),
        data_dir,
        "--control-socket".to_string(),
        control.display().to_string(),
    ];

    let mut cold = Command::new(&binary);
    cold.args(&service_args).stdin(Stdio::null());
    beyond::pass_listener_fds_on_spawn(&mut cold, &[("kv".to_string(), fd)], None);
    let child = cold.spawn().unwrap_or_else(|e| {
        eprintln!("bench-beyond-supervisor: spawn {}: {e}", binary.display());
        std::process::exit(1)
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "started {}", child.id());
    let _ = out.flush();
    let mut children = vec![child];

    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() != "handoff" {
            let _ = writeln!(out, "error unknown request {line:?}");
            let _ = out.flush();
            continue;
        }
        reap(&mut children);
        let spec = beyond::SpawnSpec {
            binary: binary.clone(),
            args: service_args.clone(),
            env: Vec::new(),
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(5),
        };
        let started = Instant::now();
        let outcome = supervisor.perform_handoff(spec);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let answer = match outcome {
            Ok(outcome) if outcome.committed => match outcome.child {
                Some(child) => {
                    let pid = child.id();
                    children.push(child);
                    format!("committed {ms:.3} {pid}")
                }
                None => format!("rolled-back {ms:.3} committed without a child"),
            },
            Ok(outcome) => format!(
                "rolled-back {ms:.3} {}",
                outcome.abort_reason.unwrap_or_default().replace('\n', " ")
            ),
            Err(e) => format!("rolled-back {ms:.3} {}", e.to_string().replace('\n', " ")),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }

    for child in &mut children {
        // SAFETY: kill(2) on a child we have not reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !children.is_empty() && Instant::now() < deadline {
        reap(&mut children);
        std::thread::sleep(Duration::from_millis(10));
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
}
