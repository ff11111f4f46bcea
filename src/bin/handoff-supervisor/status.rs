//! `status`: what the supervisor knows, rendered for people (text), for
//! programs (JSON) and for Prometheus (text exposition format 0.0.4).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use handoff::lock::{DataDirLock, LockState, GENERATION_FILE};
use handoff::supervisor::HandoffPhase;
use serde::Serialize;

use crate::config::Config;
use crate::state::State;

/// How `status` is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    Text,
    Json,
    Prometheus,
}

impl StatusFormat {
    pub fn name(self) -> &'static str {
        match self {
            StatusFormat::Text => "text",
            StatusFormat::Json => "json",
            StatusFormat::Prometheus => "prometheus",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub running: bool,
    pub supervisor_pid: Option<u32>,
    pub state: &'static str,
    pub uptime_secs: Option<f64>,
    pub incumbent: Option<IncumbentView>,
    /// The data-dir lock generation (`<data_dir>/.handoff.generation`).
    pub generation: Option<u64>,
    pub handoff: Option<HandoffView>,
    /// The successor `prepare` started, held for `trigger --prepared`.
    pub prepared: Option<PreparedView>,
    pub last_handoff: Option<LastView>,
    pub counters: CountersView,
    pub refused_binary: Option<RefusedView>,
    pub restart_in_secs: Option<f64>,
    /// The last generation that died within its probation.
    pub probation_failure: Option<ProbationView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct IncumbentView {
    pub pid: u32,
    pub adopted: bool,
    pub binary: Option<String>,
    pub uptime_secs: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct HandoffView {
    pub id: Option<String>,
    pub phase: &'static str,
    pub successor_pid: Option<u32>,
    pub elapsed_ms: f64,
    pub binary: String,
    pub source: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PreparedView {
    /// The id its handoff will have.
    pub id: String,
    pub pid: u32,
    pub binary: String,
    pub since_unix_ms: u64,
    pub held_secs: f64,
    /// How long its spawn and Hello took.
    pub spawn_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct LastView {
    pub id: Option<String>,
    pub result: &'static str,
    pub reason: Option<String>,
    pub failed_phase: Option<&'static str>,
    /// The phases that completed, in order.
    pub phases: Vec<PhaseView>,
    pub total_ms: f64,
    pub finished_at_unix_ms: u64,
    pub binary: String,
}

#[derive(Debug, Serialize)]
pub struct PhaseView {
    pub phase: &'static str,
    pub ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct CountersView {
    pub handoffs: u64,
    pub committed: u64,
    pub rollbacks: u64,
    pub failures: u64,
    pub refused: u64,
    pub restarts: u64,
    pub probation_failures: u64,
}

#[derive(Debug, Serialize)]
pub struct ProbationView {
    pub binary: String,
    pub pid: u32,
    pub how: String,
    /// The build brought back in its place.
    pub restored: String,
    pub at_unix_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct RefusedView {
    pub binary: String,
    pub consecutive_failures: u32,
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn since(time: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(time)
        .unwrap_or_default()
        .as_secs_f64()
}

fn read_generation(data_dir: Option<&Path>) -> Option<u64> {
    let text = std::fs::read_to_string(data_dir?.join(GENERATION_FILE)).ok()?;
    text.trim().parse().ok()
}

impl Snapshot {
    /// The running supervisor's view.
    pub fn of(state: &State, config: &Config) -> Snapshot {
        let c = state.counters;
        Snapshot {
            running: true,
            supervisor_pid: Some(std::process::id()),
            state: state.lifecycle(),
            uptime_secs: Some(since(state.started_at)),
            incumbent: state.incumbent.as_ref().map(|i| IncumbentView {
                pid: i.pid,
                adopted: i.adopted,
                binary: Some(i.binary.display().to_string()),
                uptime_secs: Some(since(i.since)),
            }),
            generation: read_generation(config.service.data_dir.as_deref()),
            handoff: state.handoff.as_ref().map(|h| HandoffView {
                id: h.id.clone(),
                phase: h.phase.name(),
                successor_pid: h.successor_pid,
                elapsed_ms: h.started.elapsed().as_secs_f64() * 1000.0,
                binary: h.binary.display().to_string(),
                source: h.source,
            }),
            prepared: state.prepared.as_ref().map(|p| PreparedView {
                id: p.id.clone(),
                pid: p.pid,
                binary: p.binary.display().to_string(),
                since_unix_ms: unix_ms(p.since),
                held_secs: since(p.since),
                spawn_ms: round3(p.spawn_ms),
            }),
            last_handoff: state.last.as_ref().map(|l| LastView {
                id: l.id.clone(),
                result: l.result.name(),
                reason: l.reason.clone(),
                failed_phase: l.failed_phase.map(HandoffPhase::name),
                phases: l
                    .phases
                    .iter()
                    .map(|(phase, ms)| PhaseView {
                        phase: phase.name(),
                        ms: round3(*ms),
                    })
                    .collect(),
                total_ms: round3(l.total_ms),
                finished_at_unix_ms: unix_ms(l.finished_at),
                binary: l.binary.display().to_string(),
            }),
            counters: CountersView {
                handoffs: c.handoffs,
                committed: c.committed,
                rollbacks: c.rollbacks,
                failures: c.failures,
                refused: c.refused,
                restarts: c.restarts,
                probation_failures: c.probation_failures,
            },
            refused_binary: state.failing_binary.as_ref().and_then(|(binary, count)| {
                state.refuses(binary).map(|_| RefusedView {
                    binary: binary.display().to_string(),
                    consecutive_failures: *count,
                })
            }),
            restart_in_secs: state.restart_at.map(|at| {
                at.duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .as_secs_f64()
            }),
            probation_failure: state.probation_failure.as_ref().map(|p| ProbationView {
                binary: p.binary.display().to_string(),
                pid: p.pid,
                how: p.how.clone(),
                restored: p.restored.display().to_string(),
                at_unix_ms: unix_ms(p.at),
            }),
            error: None,
        }
    }

    /// What can be seen without the supervisor: the data-dir lock.
    pub fn offline(config: &Config, error: &str) -> Snapshot {
        let data_dir = config.service.data_dir.as_deref();
        let holder = data_dir.and_then(|dir| match DataDirLock::probe(dir) {
            Ok(LockState::Held { pid }) => pid,
            _ => None,
        });
        Snapshot {
            running: false,
            supervisor_pid: None,
            state: "not-running",
            uptime_secs: None,
            incumbent: holder.map(|pid| IncumbentView {
                pid,
                adopted: false,
                binary: None,
                uptime_secs: None,
            }),
            generation: read_generation(data_dir),
            handoff: None,
            prepared: None,
            last_handoff: None,
            counters: CountersView::default(),
            refused_binary: None,
            restart_in_secs: None,
            probation_failure: None,
            error: Some(error.to_string()),
        }
    }

    pub fn render(&self, format: StatusFormat) -> String {
        match format {
            StatusFormat::Json => {
                let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
                text.push('\n');
                text
            }
            StatusFormat::Text => self.text(),
            StatusFormat::Prometheus => self.prometheus(),
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let Some(pid) = self.supervisor_pid else {
            let _ = writeln!(
                out,
                "handoff-supervisor: {}",
                self.error.as_deref().unwrap_or("not running")
            );
            if let Some(i) = &self.incumbent {
                let _ = writeln!(out, "  data-dir lock held by pid {}", i.pid);
            }
            if let Some(g) = self.generation {
                let _ = writeln!(out, "  generation    {g}");
            }
            return out;
        };
        let _ = writeln!(
            out,
            "handoff-supervisor pid {pid}: {} (up {})",
            self.state,
            human_duration(self.uptime_secs.unwrap_or_default())
        );
        match &self.incumbent {
            Some(i) => {
                let _ = write!(out, "  incumbent     pid {}", i.pid);
                if let Some(g) = self.generation {
                    let _ = write!(out, ", generation {g}");
                }
                if let Some(up) = i.uptime_secs {
                    let _ = write!(out, ", up {}", human_duration(up));
                }
                if i.adopted {
                    let _ = write!(out, " (adopted after a supervisor restart)");
                }
                let _ = writeln!(out);
                if let Some(binary) = &i.binary {
                    let _ = writeln!(out, "  binary        {binary}");
                }
            }
            None => {
                let _ = writeln!(out, "  incumbent     none");
            }
        }
        if let Some(secs) = self.restart_in_secs {
            let _ = writeln!(out, "  restart in    {:.1} s", secs);
        }
        if let Some(h) = &self.handoff {
            let _ = writeln!(
                out,
                "  handoff       {} in phase {} for {:.1} ms ({}, to {})",
                h.id.as_deref().unwrap_or("-"),
                h.phase,
                h.elapsed_ms,
                h.source,
                h.binary
            );
        }
        if let Some(p) = &self.prepared {
            let _ = writeln!(
                out,
                "  prepared      pid {} for {} (spawned in {:.3} ms; handoff {}): {}",
                p.pid,
                human_duration(p.held_secs),
                p.spawn_ms,
                p.id,
                p.binary
            );
        }
        if let Some(l) = &self.last_handoff {
            let _ = write!(
                out,
                "  last handoff  {} {} in {:.3} ms",
                l.id.as_deref().unwrap_or("-"),
                l.result,
                l.total_ms
            );
            if let Some(phase) = l.failed_phase {
                let _ = write!(out, " (in phase {phase})");
            }
            let _ = writeln!(out);
            if let Some(reason) = &l.reason {
                let _ = writeln!(out, "                {reason}");
            }
            let phases: Vec<String> = l
                .phases
                .iter()
                .map(|p| format!("{} {} ms", p.phase, p.ms))
                .collect();
            if !phases.is_empty() {
                let _ = writeln!(out, "                {}", phases.join(", "));
            }
        }
        if let Some(p) = &self.probation_failure {
            let _ = writeln!(
                out,
                "  probation     pid {} ({}) {} within its probation; brought back {}",
                p.pid, p.binary, p.how, p.restored
            );
        }
        if let Some(r) = &self.refused_binary {
            let _ = writeln!(
                out,
                "  refused       {} (failed {} times in a row; trigger --force or --binary)",
                r.binary, r.consecutive_failures
            );
        }
        let c = &self.counters;
        let _ = writeln!(
            out,
            "  counters      {} handoffs: {} committed, {} rolled back, {} failed; {} refused; {} restarts",
            c.handoffs, c.committed, c.rollbacks, c.failures, c.refused, c.restarts
        );
        out
    }

    // By hand, not prometheus-client: a dozen samples printed once from a
    // snapshot, where that crate wants a registry of live metric objects.
    fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP handoff_supervisor_{name} {help}");
            let _ = writeln!(out, "# TYPE handoff_supervisor_{name} {kind}");
            for (labels, value) in samples {
                // Microseconds are plenty, and spare readers 0.1+0.2 noise.
                let value = (value * 1e6).round() / 1e6;
                let _ = writeln!(out, "handoff_supervisor_{name}{labels} {value}");
            }
        };
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        metric(
            "up",
            "gauge",
            "Whether the supervisor answers.",
            &[("", flag(self.running))],
        );
        if let Some(i) = &self.incumbent {
            metric(
                "incumbent_pid",
                "gauge",
                "The pid of the process serving the service.",
                &[("", f64::from(i.pid))],
            );
        }
        if let Some(g) = self.generation {
            metric(
                "generation",
                "gauge",
                "The data-dir lock generation.",
                &[("", g as f64)],
            );
        }
        if !self.running {
            return out;
        }
        metric(
            "handoff_in_progress",
            "gauge",
            "Whether a handoff is running.",
            &[("", flag(self.handoff.is_some()))],
        );
        metric(
            "prepared_successor",
            "gauge",
            "Whether a prepared successor is held (for trigger --prepared).",
            &[("", flag(self.prepared.is_some()))],
        );
        let c = &self.counters;
        metric(
            "handoffs_total",
            "counter",
            "Handoffs by result.",
            &[
                ("{result=\"committed\"}", c.committed as f64),
                ("{result=\"rolled_back\"}", c.rollbacks as f64),
                ("{result=\"failed\"}", c.failures as f64),
            ],
        );
        metric(
            "triggers_refused_total",
            "counter",
            "Triggers refused (a handoff in progress, a failing binary).",
            &[("", c.refused as f64)],
        );
        metric(
            "restarts_total",
            "counter",
            "Cold restarts after the incumbent died outside a handoff.",
            &[("", c.restarts as f64)],
        );
        metric(
            "probation_failures_total",
            "counter",
            "Generations that died within their probation (the previous build was brought back).",
            &[("", c.probation_failures as f64)],
        );
        if let Some(l) = &self.last_handoff {
            let phases: Vec<(String, f64)> = l
                .phases
                .iter()
                .map(|p| (format!("{{phase=\"{}\"}}", p.phase), p.ms / 1000.0))
                .chain([("{phase=\"total\"}".to_string(), l.total_ms / 1000.0)])
                .collect();
            let samples: Vec<(&str, f64)> = phases.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            metric(
                "last_handoff_phase_seconds",
                "gauge",
                "How long each phase of the last handoff took.",
                &samples,
            );
            metric(
                "last_handoff_committed",
                "gauge",
                "Whether the last handoff committed.",
                &[("", flag(l.result == "committed"))],
            );
            metric(
                "last_handoff_timestamp_seconds",
                "gauge",
                "When the last handoff ended (Unix time).",
                &[("", l.finished_at_unix_ms as f64 / 1000.0)],
            );
        }
        out
    }
}

pub fn render_offline(config: &Config, error: &str, format: StatusFormat) -> String {
    Snapshot::offline(config, error).render(format)
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

fn human_duration(secs: f64) -> String {
    let d = Duration::from_secs_f64(secs.max(0.0));
    let s = d.as_secs();
    if s >= 86_400 {
        format!("{}d{}h", s / 86_400, s % 86_400 / 3600)
    } else if s >= 3600 {
        format!("{}h{}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
