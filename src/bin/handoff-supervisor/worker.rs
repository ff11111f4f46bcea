//! One handoff, on a thread of its own so the main loop keeps answering:
//! reports each phase as it completes (log line, shared state, the client
//! that asked), then hands the outcome back to the main loop.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use handoff::supervisor::{PhaseEvent, PreparedSuccessor, SpawnSpec, Supervisor};

use crate::events::{Event, Finished, Progress};
use crate::log::{log, Field};
use crate::state::Shared;
use crate::trigger::Reply;

/// Whom a handoff hands off to.
pub enum Successor {
    /// A process it spawns.
    Spawn(SpawnSpec),
    /// One `prepare` started and handshook.
    Prepared(Box<PreparedSuccessor>),
}

pub fn start(
    supervisor: Arc<Supervisor>,
    successor: Successor,
    shared: Shared,
    mut progress: Box<dyn Progress>,
    events: Sender<Event>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("handoff".into())
        .spawn(move || {
            let mut last_done = None;
            let mut on_phase = |event: PhaseEvent| {
                last_done = Some(event.phase);
                let id = event.handoff_id.to_string();
                let ms = event.duration.as_secs_f64() * 1000.0;
                if let Some(running) = &mut shared.lock().handoff {
                    running.id = Some(id.clone());
                    running.phase = event.phase.next().unwrap_or(event.phase);
                    running.successor_pid = event.successor_pid;
                }
                let mut fields = vec![
                    ("handoff_id", Field::Str(&id)),
                    ("phase", Field::Str(event.phase.name())),
                    ("ms", Field::Ms(ms)),
                ];
                if let Some(pid) = event.successor_pid {
                    fields.push(("successor_pid", Field::U64(pid.into())));
                }
                log!(
                    Info,
                    &fields,
                    "handoff {id}: {} done in {ms:.3} ms",
                    event.phase.name()
                );
                progress.send(&Reply::Phase {
                    name: event.phase.name().into(),
                    ms,
                    id,
                });
            };
            let (result, spec) = match successor {
                Successor::Spawn(spec) => {
                    (supervisor.perform_handoff_with(&spec, &mut on_phase), spec)
                }
                Successor::Prepared(prepared) => {
                    let spec = prepared.spec().clone();
                    (
                        supervisor.perform_prepared_with(*prepared, &mut on_phase),
                        spec,
                    )
                }
            };
            let _ = events.send(Event::Finished(Box::new(Finished {
                result,
                spec,
                last_done,
                progress,
            })));
        })?;
    Ok(())
}

/// The binary a handoff ran, for messages.
pub fn binary(spec: &SpawnSpec) -> PathBuf {
    spec.command.binary.clone()
}
