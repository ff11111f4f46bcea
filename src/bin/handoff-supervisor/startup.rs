//! What `run` does once before the main loop: claim the trigger socket,
//! recover from the journal, take the listeners; and what a reload of the
//! config file cannot apply.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use handoff::supervisor::Supervisor;

use crate::bind;
use crate::config::Config;
use crate::log::{log, Field};
use crate::probe;
use crate::process::Process;

/// Bind the trigger socket, refusing to start when another supervisor
/// answers there, or when something other than a socket is there: a stale
/// socket is replaced, anything else is the operator's to remove.
pub fn claim_trigger_socket(config: &Config) -> Result<std::os::unix::net::UnixListener, String> {
    let path = &config.service.trigger_socket;
    match bind::existing_socket(path).map_err(|why| format!("trigger socket: {why}"))? {
        bind::Existing::Live => Err(format!(
            "another supervisor is running: {} answers",
            path.display()
        )),
        bind::Existing::Stale | bind::Existing::Nothing => {
            handoff::control::bind_private(path).map_err(|e| e.to_string())
        }
    }
}

/// Finish or roll back what a previous supervisor left in the journal, and
/// find an incumbent still running from before.
pub fn recover(supervisor: &Supervisor, config: &Config) -> Result<Option<u32>, String> {
    let control = &config.service.control_socket;
    match supervisor.resume_from_journal() {
        Err(e) => Err(format!(
            "cannot recover from the journal: {e} (move it aside once no process of the \
             service runs)"
        )),
        Ok(Some(recovery)) => {
            log!(
                Warn,
                &[(
                    "handoff_id",
                    Field::Str(&recovery.journal.handoff_id.to_string())
                )],
                "recovered handoff {} left at phase {}: {}",
                recovery.journal.handoff_id,
                recovery.journal.phase.name(),
                if recovery.committed {
                    "committed"
                } else {
                    "rolled back"
                }
            );
            Ok(recovery.incumbent_pid)
        }
        Ok(None) => Ok(probe::incumbent_pid(control, config.timeouts.hello)),
    }
}

/// Every configured listener: adopted from systemd, or bound now. When the
/// address is in use and an incumbent from a previous supervisor runs, that
/// incumbent holds the sockets this supervisor cannot get back: it is
/// stopped and the service starts cold (socket activation avoids this).
pub fn bind_listeners(
    config: &Config,
    adopted: Vec<Option<OwnedFd>>,
    existing: &mut Option<u32>,
) -> Result<Vec<OwnedFd>, String> {
    let mut fds = Vec::new();
    for (listener, fd) in config.listeners.iter().zip(adopted) {
        if let Some(fd) = fd {
            fds.push(fd);
            continue;
        }
        let fd = match bind::bind(listener) {
            Ok(fd) => fd,
            Err(e) if e.in_use && existing.is_some() => {
                let pid = existing.take().expect("checked");
                log!(
                    Warn,
                    &[],
                    "{}: held by the incumbent left by a previous supervisor (pid {pid}); \
                     stopping it to start afresh (socket activation keeps listeners across \
                     supervisor restarts)",
                    e.message
                );
                Process::Adopted(pid).terminate(config.timeouts.stop_grace);
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    match bind::bind(listener) {
                        Ok(fd) => break fd,
                        Err(e) if Instant::now() < deadline && e.in_use => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        Err(e) => return Err(e.message),
                    }
                }
            }
            Err(e) => return Err(e.message),
        };
        log!(
            Info,
            &[("listener", Field::Str(&listener.name))],
            "listener {} bound on {}",
            listener.name,
            listener.text
        );
        fds.push(fd);
    }
    Ok(fds)
}

/// The parts of the file a handoff cannot apply.
pub fn warn_restart_only_changes(old: &Config, new: &Config) {
    let listeners = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| (l.name.clone(), l.address.clone()))
            .collect::<Vec<_>>()
    };
    let mut changed = Vec::new();
    if listeners(old) != listeners(new) {
        changed.push("[[listener]]");
    }
    if old.service.control_socket != new.service.control_socket {
        changed.push("control_socket");
    }
    if old.service.trigger_socket != new.service.trigger_socket {
        changed.push("trigger_socket");
    }
    if old.service.journal != new.service.journal {
        changed.push("journal");
    }
    if old.metrics != new.metrics {
        changed.push("[metrics]");
    }
    if !changed.is_empty() {
        log!(
            Warn,
            &[],
            "config: changes to {} take effect only when the supervisor restarts",
            changed.join(", ")
        );
    }
}
