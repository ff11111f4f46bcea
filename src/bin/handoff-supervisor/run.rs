//! `handoff-supervisor run`: start (listeners, journal recovery, cold
//! start), then the main loop, which alone owns the service's processes:
//! it starts handoffs one at a time, swaps generations when one commits,
//! restarts an incumbent that died outside a handoff, reaps retired ones,
//! and stops everything on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use handoff::supervisor::{HandoffPhase, Party, Supervisor, Timeouts};

use crate::bind;
use crate::config::{Config, RestartPolicy};
use crate::events::{Event, Finished, PrepareDone, Progress, Silent};
use crate::generation::{
    incumbent_of, service_command, spawn_spec, start_generation, Build, Comeback, Generation,
};
use crate::log::{log, Field};
use crate::notify::Notifier;
use crate::preparing;
use crate::probe;
use crate::process::Process;
use crate::restart::{Backoff, Decision};
use crate::server::{self, Context};
use crate::signals;
use crate::startup::{bind_listeners, claim_trigger_socket, recover, warn_restart_only_changes};
use crate::state::{self, Incumbent, Last, ProbationFailure, Running, Shared};
use crate::trigger::Reply;
use crate::worker::{self, Successor};

/// An incumbent that handed off.
enum Retiring {
    /// Finishing its last reads; stopped if it still runs at `stop_at`.
    Draining { process: Process, stop_at: Instant },
    /// Being stopped (`Process::terminate`) on a thread of its own, so the
    /// main loop does not wait out the kill grace.
    Stopping(std::thread::JoinHandle<()>),
}

pub struct Options {
    pub log_format: crate::log::Format,
    pub log_level: crate::log::Level,
}

/// The whole `run` command; the exit status.
pub fn run(config: Config, options: Options) -> u8 {
    crate::log::init(options.log_format, options.log_level);
    match Main::start(config) {
        Ok(mut main) => main.serve(),
        Err(e) => {
            log!(Error, &[], "{e}");
            1
        }
    }
}

struct Main {
    config: Arc<Config>,
    supervisor: Arc<Supervisor>,
    shared: Shared,
    notifier: Notifier,
    events: Receiver<Event>,
    sender: Sender<Event>,
    current: Option<Generation>,
    retiring: Vec<Retiring>,
    backoff: Backoff,
    /// The cold start due (the incumbent died) and when.
    restart: Option<(Instant, Comeback)>,
    /// READY=1 not yet sent for the first generation.
    ready_pending: bool,
    /// SIGTERM/SIGINT arrived during a handoff: stop once it ends.
    stop_after_handoff: bool,
    /// The `--binary` of the handoff in progress, if one was named.
    handoff_binary: Option<PathBuf>,
    /// The successor `prepare` started, held for `trigger --prepared`.
    prepared: Option<preparing::Held>,
    /// A prepare runs on its thread.
    preparing: bool,
    next_watchdog: Option<Instant>,
}

impl Main {
    fn start(config: Config) -> Result<Main, String> {
        if handoff::spawn::keep_child_statuses() {
            log!(
                Warn,
                &[],
                "SIGCHLD was ignored (inherited): reset to the default, so that the service's \
                 exits are seen and described"
            );
        }
        // Before any thread: both read and clear environment variables.
        let mut inherited = bind::inherited()?;
        let notifier = Notifier::from_env();

        let trigger = claim_trigger_socket(&config)?;
        let adopted_fds = bind::adopt(&config, &mut inherited)?;
        drop(inherited);

        let mut supervisor = Supervisor::new(&config.service.control_socket);
        supervisor.set_journal(&config.service.journal);
        supervisor.set_timeouts(Timeouts {
            liveness: config.timeouts.liveness,
            hello: config.timeouts.hello,
            kill_grace: config.timeouts.kill_grace,
            ..Timeouts::default()
        });

        let mut existing = recover(&supervisor, &config)?;
        let fds = bind_listeners(&config, adopted_fds, &mut existing)?;
        for (listener, fd) in config.listeners.iter().zip(fds) {
            supervisor
                .add_listener(listener.name.clone(), fd)
                .map_err(|e| e.to_string())?;
        }

        let shared = Shared::new();
        let (sender, events) = mpsc::channel();
        // Before the service starts: a SIGTERM from now on stops it too.
        let signal_sender = sender.clone();
        signals::install(move |signal| {
            let _ = signal_sender.send(Event::Signal(signal));
        })
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        // An adopted incumbent runs what the config says, as far as we know.
        let build = Build::of(&config, None);
        let current = match existing {
            Some(pid) => {
                log!(
                    Info,
                    &[("pid", Field::U64(pid.into()))],
                    "adopted the running incumbent, pid {pid}"
                );
                Generation {
                    process: Process::Adopted(pid),
                    started: Instant::now(),
                    build,
                    fallback: None,
                }
            }
            None => {
                let generation = start_generation(&supervisor, build, None)?;
                log!(
                    Info,
                    &[("pid", Field::U64(generation.process.pid().into()))],
                    "cold start: {} is pid {}",
                    generation.build.command.binary.display(),
                    generation.process.pid()
                );
                generation
            }
        };
        shared.lock().incumbent = Some(incumbent_of(&current));

        let config = Arc::new(config);
        let context = Context::new(shared.clone(), Arc::clone(&config), sender.clone());
        server::serve_triggers(trigger, context.clone())
            .map_err(|e| format!("cannot start the trigger socket thread: {e}"))?;
        if let Some(address) = &config.metrics {
            let crate::config::Address::Tcp(addr) = address else {
                unreachable!("checked by the config")
            };
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("cannot bind the metrics endpoint {addr}: {e}"))?;
            server::serve_metrics(listener, context)
                .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
            log!(Info, &[], "metrics on http://{addr}/metrics");
        }
        let next_watchdog = notifier.watchdog_interval().map(|_| Instant::now());
        Ok(Main {
            backoff: Backoff::new(config.restart),
            config,
            supervisor: Arc::new(supervisor),
            shared,
            notifier,
            events,
            sender,
            current: Some(current),
            retiring: Vec::new(),
            restart: None,
            ready_pending: true,
            stop_after_handoff: false,
            handoff_binary: None,
            prepared: None,
            preparing: false,
            next_watchdog,
        })
    }

    /// The main loop; returns the exit status.
    fn serve(&mut self) -> u8 {
        loop {
            let timeout = self.next_wakeup();
            let event = match self.events.recv_timeout(timeout) {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
            };
            if let Some(status) = event.and_then(|event| self.handle(event)) {
                return status;
            }
            if let Some(status) = self.tick() {
                return status;
            }
        }
    }

    fn next_wakeup(&self) -> Duration {
        let mut wake = Instant::now() + Duration::from_millis(100);
        let restart_at = self.restart.as_ref().map(|(at, _)| *at);
        for at in [restart_at, self.next_watchdog].into_iter().flatten() {
            wake = wake.min(at);
        }
        wake.saturating_duration_since(Instant::now())
    }

    fn handoff_running(&self) -> bool {
        self.shared.lock().handoff.is_some()
    }

    fn handle(&mut self, event: Event) -> Option<u8> {
        match event {
            Event::Signal(libc::SIGHUP) => {
                log!(Info, &[], "SIGHUP: handoff requested");
                if let Some(status) = self.notice_a_dead_incumbent() {
                    return Some(status);
                }
                self.begin_handoff(false, None, "SIGHUP", Box::new(Silent));
                None
            }
            Event::Signal(signal) => {
                let name = signals::name(signal);
                if self.handoff_running() && !self.stop_after_handoff {
                    log!(
                        Warn,
                        &[],
                        "{name}: stopping once the handoff in progress ends (send it again to stop now)"
                    );
                    self.stop_after_handoff = true;
                    self.shared.lock().stopping = true;
                    self.notifier
                        .stopping("stopping after the handoff in progress");
                    return None;
                }
                if self.handoff_running() {
                    // The second: the handoff rolls back at once, stopping its
                    // successor, and its end stops the rest (Finished below).
                    log!(Info, &[], "{name}: cancelling the handoff, then stopping");
                    self.supervisor.cancel();
                    return None;
                }
                log!(Info, &[], "{name}: stopping");
                Some(self.stop())
            }
            Event::Handoff {
                force,
                prepared,
                binary,
                source,
                progress,
            } => {
                if let Some(status) = self.notice_a_dead_incumbent() {
                    return Some(status);
                }
                if prepared {
                    self.begin_prepared_handoff(source, progress);
                } else {
                    self.begin_handoff(force, binary, source, progress);
                }
                None
            }
            Event::Finished(finished) => {
                self.finish_handoff(*finished);
                self.stop_after_handoff.then(|| self.stop())
            }
            Event::Prepare {
                force,
                binary,
                progress,
            } => {
                if let Some(status) = self.notice_a_dead_incumbent() {
                    return Some(status);
                }
                self.begin_prepare(force, binary, progress);
                None
            }
            Event::Prepared(done) => {
                self.finish_prepare(*done);
                None
            }
            Event::Discard { progress } => {
                self.discard(progress);
                None
            }
        }
    }

    /// An incumbent that died since the last tick is handled (a restart
    /// scheduled) before a trigger, which then starts a binary instead of
    /// handing off from a dead process.
    fn notice_a_dead_incumbent(&mut self) -> Option<u8> {
        if self.handoff_running() {
            return None;
        }
        self.check_incumbent()
    }

    /// Answer `progress` with `reply`, refusing what `source` asked for.
    fn refuse(&self, source: &str, what: &str, progress: &mut Box<dyn Progress>, reply: Reply) {
        self.shared.lock().counters.refused += 1;
        match &reply {
            Reply::InProgress { .. } => {
                log!(Warn, &[], "{source}: a handoff is already in progress");
            }
            Reply::Refused(reason) | Reply::Error(reason) => {
                log!(Warn, &[], "{source}: {what} refused: {reason}");
            }
            _ => {}
        }
        progress.send(&reply);
    }

    /// Why a handoff cannot start now (one runs, or the supervisor stops).
    fn handoff_blocked(&self) -> Option<Reply> {
        let state = self.shared.lock();
        if let Some(running) = &state.handoff {
            return Some(Reply::InProgress {
                id: running.id.clone().unwrap_or_else(|| "-".into()),
                phase: running.phase.name().into(),
            });
        }
        state.stopping.then(|| Reply::Error("stopping".into()))
    }

    /// The config file as it is now and the successor binary it (or
    /// `named_binary`) gives, if that may run; the refusal otherwise. A
    /// reload reads the file again, as nginx and haproxy do: a new binary
    /// path, arguments, environment or budgets apply now.
    fn successor_config(
        &self,
        force: bool,
        named_binary: Option<&PathBuf>,
    ) -> Result<(Config, PathBuf), Box<Reply>> {
        let config = Config::load(&self.config.path)
            .map_err(|e| Reply::Error(format!("config not reloaded: {e}")))?;
        warn_restart_only_changes(&self.config, &config);
        let binary = named_binary
            .cloned()
            .unwrap_or_else(|| config.service.binary.clone());
        crate::config::check_binary(&binary).map_err(|e| Reply::Error(format!("--binary: {e}")))?;
        match self.shared.lock().refuses(&binary) {
            Some(count) if !force => Err(Box::new(Reply::Refused(format!(
                "{} failed {count} times in a row (or died within its probation); name \
                 another with --binary, or retry it with --force",
                binary.display()
            )))),
            _ => Ok((config, binary)),
        }
    }

    fn begin_handoff(
        &mut self,
        force: bool,
        named_binary: Option<PathBuf>,
        source: &'static str,
        mut progress: Box<dyn Progress>,
    ) {
        if let Some(reply) = self.handoff_blocked() {
            return self.refuse(source, "handoff", &mut progress, reply);
        }
        let (config, binary) = match self.successor_config(force, named_binary.as_ref()) {
            Ok(found) => found,
            Err(reply) => return self.refuse(source, "handoff", &mut progress, *reply),
        };
        if self.current.is_none() {
            return self.start_instead_of_restart(
                Build::of(&config, named_binary),
                source,
                progress,
            );
        }
        let spec = spawn_spec(&config, service_command(&config, binary.clone()));
        self.launch_handoff(
            Successor::Spawn(spec),
            binary,
            named_binary,
            source,
            progress,
        );
    }

    /// `trigger --prepared`: the handoff to the successor `prepare` holds.
    fn begin_prepared_handoff(&mut self, source: &'static str, mut progress: Box<dyn Progress>) {
        if let Some(reply) = self.handoff_blocked() {
            return self.refuse(source, "handoff", &mut progress, reply);
        }
        if self.current.is_none() {
            // It waits for an incumbent to take over from: the restart's.
            let reply =
                Reply::Error("no incumbent is running (it is being restarted); try again".into());
            return self.refuse(source, "handoff", &mut progress, reply);
        }
        let Some(held) = self.prepared.take() else {
            let reply = Reply::Error("nothing is prepared".into());
            return self.refuse(source, "handoff", &mut progress, reply);
        };
        self.shared.lock().prepared = None;
        let binary = held.build.command.binary.clone();
        self.launch_handoff(
            Successor::Prepared(Box::new(held.successor)),
            binary,
            held.build.named_binary,
            source,
            progress,
        );
    }

    /// Run the handoff to `successor` on the worker thread.
    fn launch_handoff(
        &mut self,
        successor: Successor,
        binary: PathBuf,
        named_binary: Option<PathBuf>,
        source: &'static str,
        progress: Box<dyn Progress>,
    ) {
        {
            let mut state = self.shared.lock();
            state.handoff = Some(Running {
                id: None,
                phase: HandoffPhase::Hello,
                successor_pid: None,
                started: Instant::now(),
                binary: binary.clone(),
                source,
            });
            state.counters.handoffs += 1;
        }
        self.handoff_binary = named_binary;
        let prepared = if matches!(successor, Successor::Prepared(_)) {
            " (prepared)"
        } else {
            ""
        };
        log!(
            Info,
            &[("binary", Field::Str(&binary.to_string_lossy()))],
            "{source}: handoff to {}{prepared}",
            binary.display()
        );
        self.notifier
            .reloading(&format!("handing off to {}", binary.display()));
        let started = worker::start(
            Arc::clone(&self.supervisor),
            successor,
            self.shared.clone(),
            progress,
            self.sender.clone(),
        );
        if let Err(e) = started {
            log!(Error, &[], "cannot start the handoff thread: {e}");
            let mut state = self.shared.lock();
            state.handoff = None;
            state.counters.failures += 1;
            self.notifier.ready("serving (handoff could not start)");
        }
    }

    /// `prepare`: start a successor on the prepare thread, to hold.
    fn begin_prepare(
        &mut self,
        force: bool,
        named_binary: Option<PathBuf>,
        mut progress: Box<dyn Progress>,
    ) {
        let blocked = if self.shared.lock().stopping {
            Some(Reply::Error("stopping".into()))
        } else if self.preparing {
            Some(Reply::Refused(
                "a successor is being prepared already".into(),
            ))
        } else if let Some(held) = &self.prepared {
            Some(Reply::Refused(format!(
                "pid {} is prepared already (handoff {}): hand off to it with \
                 `trigger --prepared`, or `discard` it first",
                held.successor.pid().unwrap_or(0),
                held.successor.handoff_id()
            )))
        } else if self.current.is_none() {
            Some(Reply::Error(
                "no incumbent is running (it is being restarted): nothing to prepare for".into(),
            ))
        } else {
            None
        };
        if let Some(reply) = blocked {
            return self.refuse("trigger", "prepare", &mut progress, reply);
        }
        let (config, binary) = match self.successor_config(force, named_binary.as_ref()) {
            Ok(found) => found,
            Err(reply) => return self.refuse("trigger", "prepare", &mut progress, *reply),
        };
        let build = Build {
            command: service_command(&config, binary.clone()),
            named_binary,
        };
        let spec = spawn_spec(&config, build.command.clone());
        log!(
            Info,
            &[("binary", Field::Str(&binary.to_string_lossy()))],
            "trigger: preparing a successor: {}",
            binary.display()
        );
        let started = preparing::start(
            Arc::clone(&self.supervisor),
            spec,
            build,
            progress,
            self.sender.clone(),
        );
        match started {
            Ok(()) => self.preparing = true,
            Err((e, mut progress)) => {
                log!(Error, &[], "cannot start the prepare thread: {e}");
                progress.send(&Reply::Error(format!(
                    "cannot start the prepare thread: {e}"
                )));
            }
        }
    }

    /// A prepare ended: hold what it started, or say why nothing is.
    fn finish_prepare(&mut self, done: PrepareDone) {
        let PrepareDone {
            result,
            build,
            mut progress,
        } = done;
        self.preparing = false;
        let binary = build.command.binary.clone();
        let mut state = self.shared.lock();
        match result {
            Ok(successor) if state.stopping => {
                drop(state);
                log!(
                    Info,
                    &[],
                    "stopping: the successor just prepared is stopped"
                );
                drop(successor);
                progress.send(&Reply::Error("stopping".into()));
            }
            Ok(successor) => {
                let pid = successor.pid().unwrap_or(0);
                let id = successor.handoff_id().to_string();
                let spawn_ms = successor.spawn_time().as_secs_f64() * 1000.0;
                log!(
                    Info,
                    &[
                        ("handoff_id", Field::Str(&id)),
                        ("successor_pid", Field::U64(pid.into())),
                        ("ms", Field::Ms(spawn_ms)),
                    ],
                    "prepared: pid {pid} ({}) in {spawn_ms:.3} ms, held for handoff {id}",
                    binary.display()
                );
                state.prepared = Some(state::Prepared {
                    id: id.clone(),
                    pid,
                    binary,
                    since: SystemTime::now(),
                    spawn_ms,
                });
                drop(state);
                self.prepared = Some(preparing::Held { successor, build });
                progress.send(&Reply::Prepared { id, pid, spawn_ms });
            }
            Err(abort) => {
                if abort.party == Party::Successor {
                    state.successor_failed(&binary);
                }
                drop(state);
                log!(
                    Warn,
                    &[],
                    "prepare: {} did not come up: {abort}",
                    binary.display()
                );
                progress.send(&Reply::NotPrepared {
                    party: abort.party.name().into(),
                    cause: abort.cause.name().into(),
                    reason: abort.to_string(),
                });
            }
        }
    }

    /// `discard`: stop the prepared successor and reap it, now.
    fn discard(&mut self, mut progress: Box<dyn Progress>) {
        let Some(held) = self.prepared.take() else {
            return progress.send(&Reply::Error("nothing is prepared".into()));
        };
        self.shared.lock().prepared = None;
        let pid = held.successor.pid().unwrap_or(0);
        let id = held.successor.handoff_id().to_string();
        drop(held);
        log!(
            Info,
            &[("successor_pid", Field::U64(pid.into()))],
            "discard: prepared successor pid {pid} stopped"
        );
        progress.send(&Reply::Discarded { id, pid });
    }

    /// A held successor that exited is of no use: dropped (and reaped).
    fn check_prepared(&mut self) {
        let Some(held) = &mut self.prepared else {
            return;
        };
        if !held.successor.has_exited() {
            return;
        }
        let pid = held.successor.pid().unwrap_or(0);
        log!(
            Warn,
            &[("successor_pid", Field::U64(pid.into()))],
            "prepared successor pid {pid} exited while held: dropped"
        );
        self.prepared = None;
        self.shared.lock().prepared = None;
    }

    fn finish_handoff(&mut self, finished: Finished) {
        let Finished {
            result,
            spec,
            last_done,
            mut progress,
        } = finished;
        let binary = worker::binary(&spec);
        let named_binary = self.handoff_binary.take();
        let shared = self.shared.clone();
        let mut state = shared.lock();
        let running = state.handoff.take();
        let elapsed_ms = running
            .as_ref()
            .map_or(0.0, |r| r.started.elapsed().as_secs_f64() * 1000.0);
        let (reply, status) = match result {
            Ok(outcome) => {
                let id = outcome.handoff_id.to_string();
                let total_ms = outcome.timings.total.as_secs_f64() * 1000.0;
                let done: Vec<HandoffPhase> = match last_done {
                    None => Vec::new(),
                    Some(last) => HandoffPhase::ALL
                        .into_iter()
                        .take_while(|p| *p != last)
                        .chain([last])
                        .collect(),
                };
                let failed_phase = outcome.abort.as_ref().map(|abort| abort.phase);
                state.last = Some(Last {
                    id: Some(id.clone()),
                    result: if outcome.committed {
                        state::Result::Committed
                    } else {
                        state::Result::RolledBack
                    },
                    reason: outcome.abort_reason.clone(),
                    failed_phase,
                    phases: done
                        .iter()
                        .map(|p| (*p, outcome.timings.of(*p).as_secs_f64() * 1000.0))
                        .collect(),
                    total_ms,
                    finished_at: SystemTime::now(),
                    binary: binary.clone(),
                });
                let fields = [("handoff_id", Field::Str(&id)), ("ms", Field::Ms(total_ms))];
                match outcome.successor {
                    Some(successor) if outcome.committed => {
                        state.counters.committed += 1;
                        state.failing_binary = None;
                        let pid = successor.pid();
                        log!(
                            Info,
                            &fields,
                            "handoff {id}: committed in {total_ms:.3} ms; pid {pid} is the incumbent"
                        );
                        state.incumbent = Some(Incumbent {
                            pid,
                            adopted: false,
                            since: SystemTime::now(),
                            binary: binary.clone(),
                        });
                        let probation = self.config.restart.probation;
                        let fallback = self.current.take().map(|old| {
                            let fallback = old.fallback_for_successor(probation);
                            self.retire(old.process);
                            fallback
                        });
                        self.current = Some(Generation {
                            process: Process::Child(successor),
                            started: Instant::now(),
                            build: Build {
                                command: spec.command.clone(),
                                named_binary,
                            },
                            fallback,
                        });
                        self.backoff.reset();
                        (
                            Reply::Committed { id, total_ms, pid },
                            format!("serving: pid {pid} (handoff committed in {total_ms:.1} ms)"),
                        )
                    }
                    _ => {
                        state.counters.rollbacks += 1;
                        let reason = outcome.abort_reason.unwrap_or_default();
                        let phase = failed_phase.unwrap_or(HandoffPhase::Hello);
                        // The successor's doing (it died, hung, never started),
                        // not the incumbent's (a failed drain or seal).
                        if outcome
                            .abort
                            .as_ref()
                            .is_some_and(|a| a.party == Party::Successor)
                        {
                            state.successor_failed(&binary);
                        }
                        log!(
                            Warn,
                            &fields,
                            "handoff {id}: rolled back in phase {}: {reason}",
                            phase.name()
                        );
                        (
                            Reply::RolledBack {
                                id,
                                total_ms,
                                phase: phase.name().into(),
                                party: outcome
                                    .abort
                                    .as_ref()
                                    .map_or("supervisor", |a| a.party.name())
                                    .into(),
                                cause: outcome
                                    .abort
                                    .as_ref()
                                    .map_or("unknown", |a| a.cause.name())
                                    .into(),
                                reason: reason.clone(),
                            },
                            format!(
                                "serving: pid {} (handoff rolled back: {reason})",
                                outcome.incumbent_pid
                            ),
                        )
                    }
                }
            }
            Err(e) => {
                state.counters.failures += 1;
                state.last = Some(Last {
                    id: None,
                    result: state::Result::Failed,
                    reason: Some(e.to_string()),
                    failed_phase: Some(HandoffPhase::Hello),
                    phases: Vec::new(),
                    total_ms: elapsed_ms,
                    finished_at: SystemTime::now(),
                    binary,
                });
                log!(Error, &[], "handoff could not start: {e}");
                (
                    Reply::Error(format!("handoff could not start: {e}")),
                    format!("handoff could not start: {e}"),
                )
            }
        };
        drop(state);
        // Whatever the outcome, the reload is over for systemd.
        self.notifier.ready(&status);
        progress.send(&reply);
    }

    fn retire(&mut self, process: Process) {
        let grace = self.config.timeouts.drain_grace + self.config.timeouts.liveness;
        self.retiring.push(Retiring::Draining {
            process,
            stop_at: Instant::now() + grace,
        });
    }

    /// Periodic work between events.
    fn tick(&mut self) -> Option<u8> {
        self.reap_retiring();
        self.check_prepared();
        if let Some(status) = self.notice_a_dead_incumbent() {
            return Some(status);
        }
        self.maybe_restart();
        self.maybe_ready();
        if let (Some(at), Some(interval)) = (self.next_watchdog, self.notifier.watchdog_interval())
        {
            if Instant::now() >= at {
                self.notifier.watchdog();
                self.next_watchdog = Some(Instant::now() + interval);
            }
        }
        None
    }

    fn reap_retiring(&mut self) {
        let kill_grace = self.config.timeouts.kill_grace;
        let retiring = std::mem::take(&mut self.retiring);
        self.retiring = retiring
            .into_iter()
            .filter_map(|retiring| match retiring {
                Retiring::Draining {
                    mut process,
                    stop_at,
                } => {
                    let pid = process.pid();
                    if let Some((how, _)) = process.exited() {
                        log!(
                            Info,
                            &[("pid", Field::U64(pid.into()))],
                            "previous incumbent pid {pid} {how}"
                        );
                        return None;
                    }
                    if Instant::now() < stop_at {
                        return Some(Retiring::Draining { process, stop_at });
                    }
                    log!(
                        Warn,
                        &[("pid", Field::U64(pid.into()))],
                        "previous incumbent pid {pid} still runs: stopping it (SIGTERM, \
                         SIGKILL after {} ms)",
                        kill_grace.as_millis()
                    );
                    // The process goes to the thread once it runs, so a
                    // thread that cannot start leaves it to us.
                    let (hand_over, take) = mpsc::channel::<Process>();
                    let stopper =
                        std::thread::Builder::new()
                            .name("retire".into())
                            .spawn(move || {
                                if let Ok(mut process) = take.recv() {
                                    process.terminate(kill_grace);
                                }
                            });
                    match stopper {
                        Ok(handle) => {
                            let _ = hand_over.send(process);
                            Some(Retiring::Stopping(handle))
                        }
                        Err(e) => {
                            log!(Warn, &[], "cannot start a thread to stop pid {pid}: {e}");
                            process.terminate(kill_grace);
                            None
                        }
                    }
                }
                Retiring::Stopping(handle) if handle.is_finished() => {
                    let _ = handle.join();
                    None
                }
                stopping @ Retiring::Stopping(_) => Some(stopping),
            })
            .collect();
    }

    fn check_incumbent(&mut self) -> Option<u8> {
        let generation = self.current.as_mut()?;
        let (how, success) = generation.process.exited()?;
        let generation = self.current.take().expect("checked above");
        let pid = generation.process.pid();
        log!(
            Warn,
            &[("pid", Field::U64(pid.into()))],
            "incumbent pid {pid} {how} outside a handoff"
        );
        let probation = self.config.restart.probation;
        let on_probation = generation.on_probation(probation);
        let mut state = self.shared.lock();
        state.incumbent = None;
        match generation.fallback.clone() {
            Some(previous) if on_probation && !previous.same_as(&generation.build) => {
                // A build that dies this soon would die again: bring back the
                // one that served before it, now, whatever the policy.
                let bad = generation.build.command.binary.clone();
                log!(
                    Error,
                    &[("pid", Field::U64(pid.into()))],
                    "{} (pid {pid}) {how} {} ms after it began serving, within its probation \
                     ({} s): bringing back the last build that served well, {}, cold; {} is \
                     refused from now on (trigger --force to retry it)",
                    bad.display(),
                    generation.started.elapsed().as_millis(),
                    probation.as_secs_f64(),
                    previous.command.binary.display(),
                    bad.display()
                );
                state.counters.probation_failures += 1;
                state.probation_failure = Some(ProbationFailure {
                    binary: bad.clone(),
                    pid,
                    how: how.clone(),
                    restored: previous.command.binary.clone(),
                    at: SystemTime::now(),
                });
                state.refuse(bad);
                drop(state);
                self.schedule(Duration::ZERO, Comeback::Previous(previous));
                None
            }
            fallback => match self.backoff.on_exit(generation.started, success) {
                Decision::RestartIn(delay) => {
                    drop(state);
                    // Past its probation, the generation that died served well.
                    let fallback = if on_probation {
                        fallback
                    } else {
                        Some(generation.build.clone())
                    };
                    let comeback = Comeback::Again {
                        named_binary: generation.build.named_binary,
                        fallback,
                    };
                    self.schedule(delay, comeback);
                    log!(Info, &[], "restarting it in {} ms", delay.as_millis());
                    self.notifier.status(&format!(
                        "incumbent pid {pid} {how}; restarting in {} ms",
                        delay.as_millis()
                    ));
                    None
                }
                Decision::GiveUp => {
                    drop(state);
                    let policy = match self.config.restart.policy {
                        RestartPolicy::Never => "never",
                        _ => "on-failure",
                    };
                    log!(
                        Error,
                        &[],
                        "restart policy \"{policy}\": the supervisor stops"
                    );
                    Some(self.stop_with(if success { 0 } else { 1 }))
                }
            },
        }
    }

    fn schedule(&mut self, delay: Duration, comeback: Comeback) {
        self.restart = Some((Instant::now() + delay, comeback));
        self.shared.lock().restart_at = Some(SystemTime::now() + delay);
    }

    fn maybe_restart(&mut self) {
        match &self.restart {
            Some((at, _)) if Instant::now() >= *at && self.current.is_none() => {}
            _ => return,
        }
        let (_, comeback) = self.restart.take().expect("checked above");
        self.shared.lock().restart_at = None;
        let (build, fallback) = match comeback.clone() {
            Comeback::Again {
                named_binary,
                fallback,
            } => (Build::of(&self.current_config(), named_binary), fallback),
            Comeback::Previous(build) => (build, None),
        };
        if let Err(e) = self.start_cold(build, fallback.clone(), "restarted") {
            log!(Error, &[], "cannot restart the service: {e}");
            // A build that cannot even start is not retried when a good one
            // is known.
            let comeback = match fallback {
                Some(previous) => Comeback::Previous(previous),
                None => comeback,
            };
            if let Decision::RestartIn(delay) = self.backoff.on_exit(Instant::now(), false) {
                self.schedule(delay, comeback);
            }
        }
    }

    /// Start `build` cold as the incumbent; its pid.
    fn start_cold(
        &mut self,
        build: Build,
        fallback: Option<Build>,
        what: &str,
    ) -> Result<u32, String> {
        let generation = start_generation(&self.supervisor, build, fallback)?;
        let pid = generation.process.pid();
        log!(
            Info,
            &[("pid", Field::U64(pid.into()))],
            "{what} {} cold: pid {pid}",
            generation.build.command.binary.display()
        );
        {
            let mut state = self.shared.lock();
            state.counters.restarts += 1;
            state.incumbent = Some(incumbent_of(&generation));
        }
        self.notifier
            .status(&format!("serving: pid {pid} ({what})"));
        self.current = Some(generation);
        Ok(pid)
    }

    /// A trigger while the incumbent is being restarted: start what it
    /// names now rather than wait out the backoff (the service is down).
    fn start_instead_of_restart(
        &mut self,
        build: Build,
        source: &'static str,
        mut progress: Box<dyn Progress>,
    ) {
        let pending = self.restart.take();
        self.shared.lock().restart_at = None;
        let fallback = pending
            .clone()
            .and_then(|(_, comeback)| comeback.fallback());
        log!(
            Info,
            &[],
            "{source}: no incumbent is running (it is being restarted): starting {} now",
            build.command.binary.display()
        );
        match self.start_cold(build, fallback, "started") {
            Ok(pid) => progress.send(&Reply::Started { pid }),
            Err(e) => {
                log!(Error, &[], "{source}: {e}");
                if let Some((at, comeback)) = pending {
                    self.schedule(at.saturating_duration_since(Instant::now()), comeback);
                }
                self.shared.lock().counters.failures += 1;
                progress.send(&Reply::Error(e));
            }
        }
    }

    /// The config file as it is now, for a cold start: like a handoff, a
    /// restart applies what changed; the file read at start if it no
    /// longer parses.
    fn current_config(&self) -> Config {
        Config::load(&self.config.path).unwrap_or_else(|e| {
            log!(Warn, &[], "config not reloaded for the restart: {e}");
            (*self.config).clone()
        })
    }

    /// READY=1 once the first generation answers on its control socket.
    fn maybe_ready(&mut self) {
        if !self.ready_pending || self.handoff_running() {
            return;
        }
        let Some(generation) = &self.current else {
            return;
        };
        let pid = generation.process.pid();
        let adopted = matches!(generation.process, Process::Adopted(_));
        let control = &self.config.service.control_socket;
        if adopted || probe::incumbent_pid(control, Duration::from_secs(1)) == Some(pid) {
            self.ready_pending = false;
            log!(
                Info,
                &[("pid", Field::U64(pid.into()))],
                "ready: pid {pid} serves {}",
                control.display()
            );
            self.notifier.ready(&format!("serving: pid {pid}"));
        }
    }

    /// Wait for the prepare in progress, if any, to end (it takes at most
    /// the hello timeout, and the kill grace to stop a successor that
    /// failed), and stop what it started; whatever else arrives meanwhile
    /// is answered "stopping".
    fn await_prepare(&mut self) {
        let timeouts = &self.config.timeouts;
        let until = Instant::now() + timeouts.hello + timeouts.kill_grace + Duration::from_secs(1);
        while self.preparing {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Prepared(done)) => {
                    self.preparing = false;
                    let PrepareDone {
                        result,
                        mut progress,
                        ..
                    } = *done;
                    if let Ok(successor) = result {
                        log!(
                            Info,
                            &[],
                            "stopping: the successor just prepared is stopped"
                        );
                        drop(successor);
                    }
                    progress.send(&Reply::Error("stopping".into()));
                }
                Ok(
                    Event::Handoff { mut progress, .. }
                    | Event::Prepare { mut progress, .. }
                    | Event::Discard { mut progress },
                ) => progress.send(&Reply::Error("stopping".into())),
                Ok(Event::Signal(_) | Event::Finished(_)) => {}
                Err(_) => {
                    log!(
                        Warn,
                        &[],
                        "the prepare in progress did not end: stopping regardless"
                    );
                    break;
                }
            }
        }
    }

    fn stop(&mut self) -> u8 {
        self.stop_with(0)
    }

    /// Stop the service and exit with `status`.
    fn stop_with(&mut self, status: u8) -> u8 {
        self.shared.lock().stopping = true;
        self.notifier.stopping("stopping");
        self.await_prepare();
        if let Some(held) = self.prepared.take() {
            let pid = held.successor.pid().unwrap_or(0);
            log!(Info, &[], "stopping the prepared successor pid {pid}");
            drop(held);
            self.shared.lock().prepared = None;
        }
        let grace = self.config.timeouts.stop_grace;
        if let Some(mut generation) = self.current.take() {
            let pid = generation.process.pid();
            log!(Info, &[], "stopping incumbent pid {pid}");
            generation.process.terminate(grace);
        }
        for retiring in self.retiring.drain(..) {
            match retiring {
                Retiring::Draining { mut process, .. } => {
                    process.terminate(self.config.timeouts.kill_grace)
                }
                Retiring::Stopping(handle) => {
                    let _ = handle.join();
                }
            }
        }
        let _ = std::fs::remove_file(&self.config.service.trigger_socket);
        log!(Info, &[], "stopped");
        status
    }
}
