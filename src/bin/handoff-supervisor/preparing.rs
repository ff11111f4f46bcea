//! Preparing a successor (`prepare`): spawned and handshaken on a thread of
//! its own, so the main loop keeps answering, then handed back to the main
//! loop, which holds it until `trigger --prepared` or `discard`.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use handoff::supervisor::{PreparedSuccessor, SpawnSpec, Supervisor};

use crate::events::{Event, PrepareDone, Progress};
use crate::generation::Build;

/// A prepared successor, as the main loop holds it.
pub struct Held {
    pub successor: PreparedSuccessor,
    /// What it runs (the generation it becomes, once handed off to).
    pub build: Build,
}

pub fn start(
    supervisor: Arc<Supervisor>,
    spec: SpawnSpec,
    build: Build,
    progress: Box<dyn Progress>,
    events: Sender<Event>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("prepare".into())
        .spawn(move || {
            let result = supervisor.prepare(&spec);
            // Nobody to hand it to means the process is exiting: dropping it
            // stops it.
            let _ = events.send(Event::Prepared(Box::new(PrepareDone {
                result,
                build,
                progress,
            })));
        })?;
    Ok(())
}
