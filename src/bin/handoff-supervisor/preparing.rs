//! Preparing a successor (`prepare`): spawned and handshaken on a thread of
//! its own, so the main loop keeps answering, then handed back to the main
//! loop, which holds it until `trigger --prepared` or `discard`.

use std::sync::mpsc::{self, Sender};
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

/// Prepare `spec` on a thread; the outcome comes back as
/// `Event::Prepared`. A thread that cannot start gives `progress` back, to
/// be answered.
pub fn start(
    supervisor: Arc<Supervisor>,
    spec: SpawnSpec,
    build: Build,
    progress: Box<dyn Progress>,
    events: Sender<Event>,
) -> Result<(), (std::io::Error, Box<dyn Progress>)> {
    // The work goes to the thread once it runs, so that a thread that
    // cannot start leaves it to us.
    let (hand_over, take) = mpsc::channel::<(SpawnSpec, Build, Box<dyn Progress>)>();
    let spawned = std::thread::Builder::new()
        .name("prepare".into())
        .spawn(move || {
            let Ok((spec, build, progress)) = take.recv() else {
                return;
            };
            let result = supervisor.prepare(&spec);
            // Nobody to hand it to means the process is exiting: dropping it
            // stops it.
            let _ = events.send(Event::Prepared(Box::new(PrepareDone {
                result,
                build,
                progress,
            })));
        });
    match spawned {
        Ok(_) => {
            let _ = hand_over.send((spec, build, progress));
            Ok(())
        }
        Err(e) => Err((e, progress)),
    }
}
