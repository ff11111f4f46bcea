//! Every example service (kv::LANGS) in the handoffs that do not move its
//! connections to a successor that serves them: a protocol v1 handoff (the
//! successor started with `--no-moves`), whose drain closes the kept
//! connections and keeps every write; and a rollback after the connections
//! moved (a kv-rust successor started with `--exit-after-adopt`), after
//! which the incumbent serves them on, its half-received line included,
//! hands them off for real next, and the last incumbent stops cleanly on
//! SIGTERM. Real processes, the crate's supervisor, TCP on 127.0.0.1.
//!
//! Needs `make build venv` (the services and the Python venv).

mod common;
#[path = "common/kv.rs"]
mod kv;
#[path = "common/kv_bench.rs"]
mod kv_bench;
#[path = "common/line_client.rs"]
mod line_client;

use handoff::spawn::Command;
use std::time::Duration;

use handoff::supervisor::{Cause, Party, SpawnSpec};
use kv::{Lang, LaunchOptions, LANGS};
use kv_bench::KvBench;
use line_client::LineClient;

const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// The example services under the crate's supervisor (tests/common/kv_bench.rs).
struct Bench(KvBench);

impl Bench {
    fn new() -> Bench {
        Bench(KvBench::new(false))
    }

    fn command(&self, lang: Lang, extra: &[&str]) -> Command {
        let name = format!("kv-{}.sh", lang.short());
        let launcher = self.0.launcher(lang, &name, LaunchOptions::default());
        self.0.command(&launcher, extra)
    }

    fn spec(&self, lang: Lang, extra: &[&str]) -> SpawnSpec {
        SpawnSpec {
            command: self.command(lang, extra),
            deadline: Duration::from_secs(30),
            drain_grace: Duration::from_secs(5),
        }
    }

    fn cold_start(&mut self, lang: Lang) -> u32 {
        let name = format!("kv-{}.sh", lang.short());
        let launcher = self.0.launcher(lang, &name, LaunchOptions::default());
        self.0.cold_start(&launcher)
    }

    /// Hand off to `lang` with `extra` arguments: the successor's pid, or
    /// None when it rolled back (with the abort's party and cause).
    fn hand_off(&mut self, lang: Lang, extra: &[&str]) -> Result<u32, (Party, Cause)> {
        let outcome = self
            .0
            .supervisor
            .perform_handoff(&self.spec(lang, extra))
            .unwrap();
        if outcome.committed {
            return Ok(self.0.reaper.keep(outcome.successor.unwrap()));
        }
        let abort = outcome.abort.expect("a rollback has a reason");
        Err((abort.party, abort.cause))
    }

    fn log_tail(&self) -> String {
        self.0.log_tail()
    }
}

fn assert_exits_zero(bench: &mut Bench, pid: u32, who: &str) {
    assert_eq!(
        bench.0.reaper.wait_exit(pid, IO_TIMEOUT),
        Some(0),
        "{who}\n{}",
        bench.log_tail()
    );
}

#[test]
fn a_v1_handoff_closes_kept_connections_and_keeps_every_write() {
    for lang in LANGS {
        let mut bench = Bench::new();
        let first = bench.cold_start(lang);
        let mut kept = LineClient::connect(bench.0.addr, IO_TIMEOUT);
        assert!(kept.ask("SET before v1").starts_with("OK "));
        let successor = bench
            .hand_off(lang, &["--no-moves"])
            .unwrap_or_else(|abort| panic!("{}: {abort:?}\n{}", lang.tag(), bench.log_tail()));
        assert_exits_zero(&mut bench, first, lang.tag());
        // Answered and idle when the drain came: closed at once, not moved.
        assert_eq!(
            kept.next_line(),
            None,
            "{}: the kept connection",
            lang.tag()
        );
        let mut fresh = LineClient::connect(bench.0.addr, IO_TIMEOUT);
        assert_eq!(fresh.ping().0, successor, "{}", lang.tag());
        assert_eq!(fresh.ask("GET before"), "VALUE v1", "{}", lang.tag());
    }
}

#[test]
fn a_rollback_after_the_connections_moved_gives_them_back() {
    for lang in LANGS {
        let mut bench = Bench::new();
        let first = bench.cold_start(lang);
        let mut idle = LineClient::connect(bench.0.addr, IO_TIMEOUT);
        assert_eq!(idle.ping().0, first);
        let mut half = LineClient::connect(bench.0.addr, IO_TIMEOUT);
        half.send("SET half ");
        let rolled_back = bench.hand_off(Lang::Rust, &["--exit-after-adopt"]);
        assert_eq!(
            rolled_back,
            Err((Party::Successor, Cause::Exited)),
            "{}\n{}",
            lang.tag(),
            bench.log_tail()
        );
        // The incumbent took its connections back as they were.
        half.send("one\n");
        assert!(
            half.next_line().is_some_and(|l| l.starts_with("OK ")),
            "{}",
            lang.tag()
        );
        assert_eq!(half.ask("GET half"), "VALUE one", "{}", lang.tag());
        assert_eq!(idle.ping().0, first, "{}", lang.tag());
        // And hands them off for real next.
        half.send("SET half ");
        let successor = bench
            .hand_off(Lang::Rust, &[])
            .unwrap_or_else(|abort| panic!("{}: {abort:?}\n{}", lang.tag(), bench.log_tail()));
        assert_exits_zero(&mut bench, first, lang.tag());
        half.send("two\n");
        assert!(
            half.next_line().is_some_and(|l| l.starts_with("OK ")),
            "{}",
            lang.tag()
        );
        assert_eq!(half.ask("GET half"), "VALUE two");
        assert_eq!(idle.ping().0, successor);
        // SIGTERM: a clean stop, status 0.
        // SAFETY: a signal to a child this test started and still reaps.
        assert_eq!(unsafe { libc::kill(successor as i32, libc::SIGTERM) }, 0);
        assert_exits_zero(&mut bench, successor, "kv-rust after SIGTERM");
    }
}
