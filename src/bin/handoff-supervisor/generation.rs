//! A generation of the service as the main loop keeps it: its process,
//! the build it runs, and the build to bring back should it die within its
//! probation; and what a cold start after a death runs.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use handoff::spawn::Command;
use handoff::supervisor::{SpawnSpec, Supervisor};

use crate::config::Config;
use crate::process::Process;
use crate::state::Incumbent;

pub struct Generation {
    pub process: Process,
    /// When it began serving (its cold start, or its commit).
    pub started: Instant,
    pub build: Build,
    /// The last build that served well: brought back should this one die
    /// within its probation.
    pub fallback: Option<Build>,
}

impl Generation {
    pub fn on_probation(&self, probation: Duration) -> bool {
        self.started.elapsed() < probation
    }

    /// The build a successor of this generation falls back to: this one,
    /// unless it is on probation itself (then the one it would fall back to).
    pub fn fallback_for_successor(&self, probation: Duration) -> Build {
        match &self.fallback {
            Some(fallback) if self.on_probation(probation) => fallback.clone(),
            _ => self.build.clone(),
        }
    }
}

/// What a generation runs.
#[derive(Debug, Clone)]
pub struct Build {
    pub command: Command,
    /// Named by `trigger --binary` rather than taken from the config.
    pub named_binary: Option<PathBuf>,
}

impl Build {
    pub fn of(config: &Config, named_binary: Option<PathBuf>) -> Build {
        let binary = named_binary
            .clone()
            .unwrap_or_else(|| config.service.binary.clone());
        Build {
            command: service_command(config, binary),
            named_binary,
        }
    }

    pub fn same_as(&self, other: &Build) -> bool {
        let (a, b) = (&self.command, &other.command);
        a.binary == b.binary && a.args == b.args && a.env == b.env
    }
}

/// What the next cold start runs, once its delay is over.
#[derive(Debug, Clone)]
pub enum Comeback {
    /// The generation that died, with the config file as it is now.
    Again {
        named_binary: Option<PathBuf>,
        fallback: Option<Build>,
    },
    /// The last build that served well, exactly as it ran.
    Previous(Build),
}

impl Comeback {
    /// The build to fall back to from whatever starts instead of this.
    pub fn fallback(self) -> Option<Build> {
        match self {
            Comeback::Again { fallback, .. } => fallback,
            Comeback::Previous(build) => Some(build),
        }
    }
}

pub fn service_command(config: &Config, binary: PathBuf) -> Command {
    Command {
        binary,
        args: config.service.args.clone(),
        env: config.service.env.clone(),
    }
}

/// A handoff to `command` with the budgets `config` gives.
pub fn spawn_spec(config: &Config, command: Command) -> SpawnSpec {
    SpawnSpec {
        command,
        deadline: config.timeouts.deadline,
        drain_grace: config.timeouts.drain_grace,
    }
}

/// Spawn `build` as a cold start.
pub fn start_generation(
    supervisor: &Supervisor,
    build: Build,
    fallback: Option<Build>,
) -> Result<Generation, String> {
    let child = supervisor
        .spawn_cold(&build.command)
        .map_err(|e| format!("cannot start {}: {e}", build.command.binary.display()))?;
    Ok(Generation {
        process: Process::Child(child),
        started: Instant::now(),
        build,
        fallback,
    })
}

pub fn incumbent_of(generation: &Generation) -> Incumbent {
    Incumbent {
        pid: generation.process.pid(),
        adopted: matches!(generation.process, Process::Adopted(_)),
        since: SystemTime::now(),
        binary: generation.build.command.binary.clone(),
    }
}
