//! Finishing or rolling back a handoff that a previous supervisor left half
//! done, from its journal. The journal's phase may lag one step behind what
//! happened (the successor may have sent Ready after the last write), so it
//! is not what decides: whoever serves the control socket now is in charge
//! (the successor binds it just before its Ready but answers only after it;
//! an incumbent answers only while it holds the lock). A process the journal names is signalled only
//! once it is proven to be ours, through a pidfd, so that a pid reused by a
//! stranger (a journal restored from a backup, a reboot) is left alone.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::control::remove_prebound;
use crate::journal::Journal;
use crate::log::event;
use crate::pidfd::PidFd;
use crate::spawn::{pid_alive, process_started_at};

/// What `resume_from_journal` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub journal: Journal,
    /// True when the successor had become the incumbent.
    pub committed: bool,
    /// The incumbent's pid after recovery, if one answers.
    pub incumbent_pid: Option<u32>,
}

/// Decide and act on `journal` (written at `written`), given the pid that
/// answers the control socket now.
pub(crate) fn recover(
    journal: Journal,
    written: Option<SystemTime>,
    serving: Option<u32>,
    kill_grace: Duration,
    control: &Path,
) -> Recovery {
    // DESIGN §2: from Ready on, N is authoritative, whatever the journal's
    // phase says.
    let committed = serving.is_some() && serving == journal.successor_pid;
    let leftover = if committed {
        // The old incumbent may still wait for a Commit that never comes.
        Some(("the old incumbent", journal.incumbent_pid))
    } else {
        journal.successor_pid.map(|pid| ("the successor", pid))
    };
    if let Some((role, pid)) = leftover {
        if Some(pid) != serving {
            stop_journalled(role, pid, written, kill_grace);
        }
    }
    // A successor that died before Ready may leave its control socket
    // bound ahead; one still alive removes its own.
    if let Some(pid) = journal.successor_pid.filter(|_| !committed) {
        if !pid_alive(pid) {
            remove_prebound(control, pid);
        }
    }
    Recovery {
        journal,
        committed,
        incumbent_pid: serving,
    }
}

/// How much later than the journal's last write a process it names may
/// seem to have started (`process_started_at` may be a second early, and
/// the clock may be adjusted meanwhile).
const PID_REUSE_SLACK: Duration = Duration::from_secs(2);

/// Stop `pid`, named in the journal as `role`, if it is still the process
/// the journal meant: it started before the journal was last written. The
/// pidfd pins the process between that check and the signals. Leaving one
/// alone is the safe side: a successor exits by itself once its supervisor
/// is gone, and an old incumbent steps down when it cannot take the lock
/// back.
fn stop_journalled(role: &str, pid: u32, written: Option<SystemTime>, grace: Duration) {
    let Some(process) = PidFd::open(pid) else {
        return;
    };
    match (process_started_at(pid), written) {
        (Some(started), Some(written)) if started <= written + PID_REUSE_SLACK => {}
        (started, _) => {
            event!(
                Warn,
                "recovery: pid {pid}, named in the journal as {role}, is not proven ours \
                 (started {started:?}, journal written {written:?}): left alone"
            );
            return;
        }
    }
    event!(
        Warn,
        "recovery: stopping {role}, pid {pid} (SIGTERM, SIGKILL after {grace:?})"
    );
    let mut process = process;
    if !crate::spawn::stop(&mut process, grace) {
        event!(Error, "recovery: {role}, pid {pid}, survived SIGKILL");
    }
}
