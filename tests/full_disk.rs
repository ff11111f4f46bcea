//! Issue 14, full disk: real handoffs of the C noop service with its data
//! directory (and, in one test, the supervisor's journal) on a small tmpfs
//! filled up for real. The handoff may fail; the service never goes down:
//! afterwards exactly one process holds the lock, and it answers.

mod common;
#[path = "common/in_process.rs"]
mod in_process;
mod tmpfs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use handoff::lock::{DataDirLock, LockState, GENERATION_FILE};
use handoff::supervisor::{Cause, HandoffPhase};
use in_process::{Service, Start};
use tmpfs::Tmpfs;

/// A cold-started noop service under an in-process supervisor, its data
/// directory and journal where the test says.
fn start(data_dir: PathBuf, journal: Option<PathBuf>) -> Service {
    Service::start(Start {
        data_dir: Some(data_dir),
        journal,
        ..Start::default()
    })
}

/// The tmpfs for `test` and the service with only its journal there
/// (`state.bin`), its data directory on an ordinary disk; None when the
/// test is skipped.
fn journal_on_tmpfs(test: &str) -> Option<(Tmpfs, Service)> {
    let fs = Tmpfs::mount(test)?;
    let service = Service::start(Start {
        journal: Some(fs.join("state.bin")),
        ..Start::default()
    });
    Some((fs, service))
}

fn generation(data_dir: &Path) -> u64 {
    let text = std::fs::read_to_string(data_dir.join(GENERATION_FILE)).unwrap();
    text.trim().parse().unwrap()
}

/// Taking the lock needs no new disk space once its files exist: the
/// successor takes it on a full filesystem and the handoff commits.
#[test]
fn a_handoff_with_the_data_dir_on_a_full_filesystem_commits() {
    let Some(fs) = Tmpfs::mount("a_handoff_with_the_data_dir_on_a_full_filesystem_commits") else {
        return;
    };
    let mut service = start(fs.join("data"), None);
    assert_eq!(generation(&service.data_dir), 1);
    fs.fill();

    let outcome = service.hand_off(&[]);
    assert!(outcome.committed, "rolled back: {:?}", outcome.abort_reason);
    let successor = service.reaper.keep(outcome.successor.unwrap());
    let old = service.incumbent;
    assert_eq!(
        service.reaper.wait_exit(old, Duration::from_secs(10)),
        Some(0),
        "the old incumbent exits once committed"
    );
    service.assert_settled(successor);
    assert_eq!(generation(&service.data_dir), 2);
    assert!(fs.is_full(), "the handoff ran on a full filesystem");
}

/// The journal and the data directory on one filesystem, which fills up
/// mid-handoff (once the incumbent has sealed and released its lock), and
/// the successor fails after Begin: the supervisor rolls back (the journal
/// it cannot write past Begin does not stop it), and the incumbent takes its
/// lock back with no space left and serves on.
#[test]
fn a_filesystem_filling_up_mid_handoff_rolls_back_to_a_serving_incumbent() {
    let Some(fs) =
        Tmpfs::mount("a_filesystem_filling_up_mid_handoff_rolls_back_to_a_serving_incumbent")
    else {
        return;
    };
    let service = start(fs.join("data"), Some(fs.join("journal/state.bin")));
    assert_eq!(generation(&service.data_dir), 1);

    let outcome = service
        .supervisor
        .perform_handoff_with(&service.spec(&["--exit-before-ready"]), &mut |event| {
            // Reported once the Negotiating step is journalled.
            if event.phase == HandoffPhase::Spawn {
                // A second name keeps the journal's block allocated when
                // the rollback clears it: the incumbent takes its lock
                // back on a filesystem still full, whichever comes first.
                std::fs::hard_link(&service.journal, fs.join("journal-kept")).unwrap();
            }
            // Reported once SealRequest is sent: the fill waits for the
            // seal's release.
            if event.phase == HandoffPhase::Drain {
                wait_until_released(&service.data_dir);
                fs.fill();
            }
        })
        .unwrap();
    assert!(!outcome.committed, "the successor exited before Ready");
    let abort = outcome.abort.unwrap();
    assert_eq!(abort.cause, Cause::Exited, "{abort:?}");
    assert!(outcome.successor.is_none(), "the successor is reaped");
    service.assert_settled(service.incumbent);
    // It sealed (released) and took the lock back: one more acquire.
    assert_eq!(generation(&service.data_dir), 2);
    assert!(fs.is_full(), "the rollback ran on a full filesystem");

    // Space back, the next handoff goes through.
    fs.free();
    let outcome = service.hand_off(&[]);
    assert!(outcome.committed, "{:?}", outcome.abort_reason);
    let mut reaper = Reaper::default();
    let successor = reaper.keep(outcome.successor.unwrap());
    service.assert_settled(successor);
    assert_eq!(generation(&service.data_dir), 3);
}

/// Only the journal's filesystem is full from the start: the first journal
/// write fails, nothing was asked of the incumbent, it serves on.
#[test]
fn a_full_journal_filesystem_rolls_back_before_the_incumbent_is_asked() {
    let Some((fs, service)) =
        journal_on_tmpfs("a_full_journal_filesystem_rolls_back_before_the_incumbent_is_asked")
    else {
        return;
    };
    fs.fill();
    let outcome = service.hand_off(&[]);
    assert!(!outcome.committed);
    let reason = outcome.abort_reason.unwrap();
    assert!(reason.contains("No space left on device"), "{reason}");
    assert!(outcome.successor.is_none());
    service.assert_settled(service.incumbent);
    assert_eq!(
        generation(&service.data_dir),
        1,
        "the lock was never let go"
    );
}

/// Only the journal's filesystem, filling up after Begin: the successor is
/// taking the lock and may already have announced Ready, so a journal that
/// cannot be written no longer stops the handoff (recovery does not rely on
/// the journal's phase): it commits, and the successor serves.
#[test]
fn a_journal_filesystem_filling_up_after_begin_does_not_stop_the_handoff() {
    let Some((fs, service)) =
        journal_on_tmpfs("a_journal_filesystem_filling_up_after_begin_does_not_stop_the_handoff")
    else {
        return;
    };
    let outcome = service
        .supervisor
        .perform_handoff_with(&service.spec(&[]), &mut |event| {
            // Reported once Begin is sent, before the AwaitingReady step is journalled.
            if event.phase == HandoffPhase::Seal {
                fs.fill();
            }
        })
        .unwrap();
    assert!(outcome.committed, "{:?}", outcome.abort_reason);
    let mut reaper = Reaper::default();
    let successor = reaper.keep(outcome.successor.unwrap());
    service.assert_settled(successor);
    assert!(!fs.join("state.bin").exists(), "the journal is cleared");
}

/// Until nobody holds the data-dir lock (the incumbent's seal released it).
fn wait_until_released(data_dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while DataDirLock::probe(data_dir).unwrap() != LockState::Free {
        assert!(
            std::time::Instant::now() < deadline,
            "the incumbent never released its lock"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
