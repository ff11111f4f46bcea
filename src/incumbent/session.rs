//! One control connection's session as a pure transition function:
//! (stage, input) -> actions. No socket, thread or clock inside: the driver
//! (`serve`) reads frames, runs the hooks and keeps time, and every pair of
//! stage and input is a unit test below.

use std::time::{Duration, Instant};

use crate::log::Level;
use crate::protocol::{
    check_item, describe, negotiate_version, HandoffId, Message, PROTO_MIN, PROTO_MOVES,
};
use crate::service::{DrainReport, HookError, MovedItem, SealReport};

/// The clocks a session keeps.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// No frame from the peer for this long means it is dead (not counted
    /// while a hook runs: supervisors wait for the answer without beating).
    pub liveness: Duration,
    /// How long the peer has to answer our Hello.
    pub hello: Duration,
    /// Heartbeat period while a hook runs.
    pub heartbeat: Duration,
    /// Past PrepareHandoff's deadline, how long the incumbent waits for a
    /// Commit before resuming on its own (the supervisor's own deadline
    /// carries wire slack too: resuming first would race its Ready).
    pub deadline_slack: Duration,
    /// The longest deadline a PrepareHandoff may ask for.
    pub max_deadline: Duration,
}

/// A service hook the driver runs on the session's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Drain,
    Seal,
}

/// Why a handoff ends while its hook still runs: acted on when it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Abandon {
    /// The supervisor aborted: resume, keep the session.
    Aborted,
    /// The session failed: resume and close it, logging the reason.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Hello sent; HelloAck due by `until`.
    Greeting {
        until: Instant,
    },
    Idle,
    /// `hook` runs for handoff `id`; a drain that may move at most
    /// `moves` descriptors (protocol v2) has `Some`. The seal runs on the
    /// drain's heels, before the supervisor asks: `seal_asked` once its
    /// SealRequest came (during the drain already from a supervisor that
    /// sends it with PrepareHandoff).
    Hooking {
        id: HandoffId,
        hook: Hook,
        deadline: Instant,
        moves: Option<u32>,
        abandoned: Option<Abandon>,
        seal_asked: bool,
    },
    /// Drained, and `seal` says how far the seal is, awaiting the
    /// supervisor's SealRequest.
    Drained {
        id: HandoffId,
        deadline: Instant,
        seal: EarlySeal,
    },
    /// The lock is released and SealComplete sent: only Commit or a
    /// rollback follow.
    Sealed {
        id: HandoffId,
        deadline: Instant,
    },
    Closed,
}

/// The seal of a drained incumbent, run before the supervisor asks for it
/// (the seal is the drain's only follow-up but an abort, and a round trip
/// less in the blackout). Its outcome waits for the SealRequest: the lock is
/// released, or the failure told, only then (invariant 2 and the v1 wire
/// unchanged); an abort instead resumes the service, sealed or not.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EarlySeal {
    /// More would move than the successor holds: no seal, only the
    /// supervisor's abort (or the deadline) follows.
    Refused,
    Done(SealReport),
    Failed(String),
}

/// What happened to the session.
#[derive(Debug)]
pub enum Input {
    Message(Message),
    Drained(Result<DrainReport, HookError>),
    Sealed(Result<SealReport, HookError>),
    /// The connection ended or failed (`reason` for the log).
    PeerGone {
        reason: String,
        clean: bool,
    },
    /// Time passed (the driver feeds this when `next_timer` is due).
    Tick,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Message),
    /// Send a Heartbeat stamped with the current time.
    Heartbeat,
    /// The negotiated version: frames from now on carry it.
    SetVersion(u16),
    RunHook {
        hook: Hook,
        handoff_id: HandoffId,
        budget: Duration,
        moves: Option<u32>,
        /// When the seal is due: this one, or the one that follows this
        /// drain, which the driver may queue with it (the session seals
        /// after every drain it accepts).
        seal_by: Instant,
    },
    /// A supervisor answered our Hello: make the next tenure's generation
    /// durable now, while it starts the successor, so that the successor
    /// takes the lock without an fsync in the blackout (lock.rs).
    ReserveGeneration,
    /// Send these Item frames, each with its descriptor (after Moving,
    /// before Drained); remember each descriptor's file status flags so a
    /// rollback can restore them.
    SendItems(Vec<MovedItem>),
    /// The seal succeeded: release the data-dir lock (before the
    /// SealComplete that follows; invariant 2).
    ReleaseLock,
    /// Undo the handoff: take the lock back if it was released, then resume
    /// the service.
    RollBack {
        lock_released: bool,
    },
    /// Committed: the incumbent steps down.
    StepDown,
    /// Close the connection; `reason` (None for an ordinary close) is logged
    /// with the peer's pid.
    Close {
        reason: Option<String>,
    },
    /// An event for the log.
    Log(Level, String),
}

/// One control connection.
#[derive(Debug)]
pub struct Session {
    stage: Stage,
    timing: Timing,
    last_heard: Instant,
    last_sent: Instant,
    /// The highest version our Hello offered, and the one negotiated.
    offered: u16,
    version: u16,
    /// A Transfer for the next PrepareHandoff: (its handoff, items_max).
    transfer: Option<(HandoffId, u32)>,
}

impl Session {
    /// A session whose Hello, offering versions up to `offered`, was sent
    /// at `now`.
    pub fn new(timing: Timing, offered: u16, now: Instant) -> Session {
        Session {
            stage: Stage::Greeting {
                until: now + timing.hello,
            },
            timing,
            last_heard: now,
            last_sent: now,
            offered,
            version: PROTO_MIN,
            transfer: None,
        }
    }

    /// The handoff this session runs, if any.
    pub fn handoff(&self) -> Option<HandoffId> {
        match self.stage {
            Stage::Hooking { id, .. } | Stage::Drained { id, .. } | Stage::Sealed { id, .. } => {
                Some(id)
            }
            _ => None,
        }
    }

    /// The data-dir lock is released for this session's handoff.
    pub fn lock_released(&self) -> bool {
        matches!(self.stage, Stage::Sealed { .. })
    }

    /// A hook runs for this session: its result must be fed back.
    /// Whether the hook that runs has been abandoned (an abort, a failure):
    /// its outcome only ends it.
    pub fn hook_abandoned(&self) -> bool {
        matches!(
            self.stage,
            Stage::Hooking {
                abandoned: Some(_),
                ..
            }
        )
    }

    pub fn hook_running(&self) -> Option<Hook> {
        match self.stage {
            Stage::Hooking { hook, .. } => Some(hook),
            _ => None,
        }
    }

    /// Whether the driver should read from the connection (not once it is
    /// over, nor while a failed session waits for its hook).
    pub fn wants_input(&self) -> bool {
        !matches!(
            self.stage,
            Stage::Closed
                | Stage::Hooking {
                    abandoned: Some(Abandon::Failed(_)),
                    ..
                }
        )
    }

    pub fn is_closed(&self) -> bool {
        self.stage == Stage::Closed
    }

    /// When the session next needs a `Tick`.
    pub fn next_timer(&self) -> Option<Instant> {
        let silent = self.last_heard + self.timing.liveness;
        match self.stage {
            Stage::Greeting { until } => Some(until),
            Stage::Idle => Some(silent),
            Stage::Hooking {
                deadline,
                abandoned: None,
                ..
            } => Some(deadline.min(self.last_sent + self.timing.heartbeat)),
            Stage::Hooking { .. } | Stage::Closed => None,
            Stage::Drained { deadline, .. } | Stage::Sealed { deadline, .. } => {
                Some(deadline.min(silent))
            }
        }
    }

    /// Take `input` at `now`. `other_handoff` is the handoff another
    /// session runs, if any: there is one at a time.
    pub fn handle(
        &mut self,
        input: Input,
        now: Instant,
        other_handoff: Option<HandoffId>,
    ) -> Vec<Action> {
        let actions = match input {
            Input::Message(message) => {
                self.last_heard = now;
                self.on_message(message, now, other_handoff)
            }
            Input::Drained(result) => {
                self.last_heard = now;
                self.on_drained(result, now)
            }
            Input::Sealed(result) => {
                self.last_heard = now;
                self.on_sealed(result)
            }
            Input::PeerGone { reason, clean } => self.on_gone(reason, clean),
            Input::Tick => self.on_tick(now),
        };
        if actions
            .iter()
            .any(|a| matches!(a, Action::Send(_) | Action::Heartbeat))
        {
            self.last_sent = now;
        }
        actions
    }

    fn on_message(
        &mut self,
        message: Message,
        now: Instant,
        other_handoff: Option<HandoffId>,
    ) -> Vec<Action> {
        match (self.stage.clone(), message) {
            (Stage::Closed, _) => vec![],
            (
                Stage::Greeting { .. },
                Message::HelloAck {
                    proto_version_chosen,
                    ..
                },
            ) => match negotiate_version(
                (PROTO_MIN, self.offered),
                (proto_version_chosen, proto_version_chosen),
            ) {
                Ok(version) => {
                    self.stage = Stage::Idle;
                    self.version = version;
                    vec![Action::SetVersion(version), Action::ReserveGeneration]
                }
                Err(e) => self.fail(e.to_string()),
            },
            (Stage::Greeting { .. }, other) => {
                self.fail(format!("expected HelloAck, got {}", describe(&other)))
            }
            // Abandoned: nothing the peer says matters until the hook returns.
            (
                Stage::Hooking {
                    abandoned: Some(_), ..
                },
                _,
            ) => vec![],
            (_, Message::Heartbeat { .. }) => vec![Action::Heartbeat],
            (
                Stage::Idle,
                Message::Transfer {
                    handoff_id,
                    items_max,
                },
            ) if self.version >= PROTO_MOVES => {
                self.transfer = Some((handoff_id, items_max));
                vec![]
            }
            (
                Stage::Idle,
                Message::PrepareHandoff {
                    handoff_id,
                    deadline_ms,
                    drain_grace_ms,
                    ..
                },
            ) => {
                if let Some(running) = other_handoff {
                    return self.fail(format!(
                        "PrepareHandoff for handoff {handoff_id} while handoff {running} runs"
                    ));
                }
                let asked = Duration::from_millis(deadline_ms).min(self.timing.max_deadline);
                let moves = self
                    .transfer
                    .take()
                    .filter(|(id, _)| *id == handoff_id)
                    .map(|(_, items_max)| items_max);
                let deadline = now + asked + self.timing.deadline_slack;
                self.stage = Stage::Hooking {
                    id: handoff_id,
                    hook: Hook::Drain,
                    deadline,
                    moves,
                    abandoned: None,
                    seal_asked: false,
                };
                vec![Action::RunHook {
                    hook: Hook::Drain,
                    handoff_id,
                    budget: asked.min(Duration::from_millis(drain_grace_ms)),
                    moves,
                    seal_by: deadline,
                }]
            }
            (Stage::Idle, Message::Abort { .. } | Message::ResumeAfterAbort { .. }) => vec![],
            (
                Stage::Hooking { id, .. },
                Message::Abort { handoff_id, .. } | Message::ResumeAfterAbort { handoff_id },
            ) if handoff_id == id => {
                if let Stage::Hooking { abandoned, .. } = &mut self.stage {
                    *abandoned = Some(Abandon::Aborted);
                }
                vec![]
            }
            // Asked for while the drain runs (a supervisor that sends it
            // with PrepareHandoff) or while the seal runs already: the
            // seal's outcome answers.
            (
                Stage::Hooking {
                    id,
                    seal_asked: false,
                    ..
                },
                Message::SealRequest { handoff_id },
            ) if handoff_id == id => {
                if let Stage::Hooking { seal_asked, .. } = &mut self.stage {
                    *seal_asked = true;
                }
                vec![]
            }
            (
                Stage::Drained {
                    id,
                    seal: EarlySeal::Done(report),
                    deadline,
                },
                Message::SealRequest { handoff_id },
            ) if handoff_id == id => self.sealed(id, deadline, report),
            (
                Stage::Drained {
                    id,
                    seal: EarlySeal::Failed(reason),
                    ..
                },
                Message::SealRequest { handoff_id },
            ) if handoff_id == id => self.seal_failed(id, reason),
            (
                Stage::Drained { id, .. } | Stage::Sealed { id, .. },
                Message::Abort { handoff_id, .. } | Message::ResumeAfterAbort { handoff_id },
            ) if handoff_id == id => {
                let lock_released = self.lock_released();
                self.stage = Stage::Idle;
                vec![aborted(id), Action::RollBack { lock_released }]
            }
            (Stage::Sealed { id, .. }, Message::Commit { handoff_id }) if handoff_id == id => {
                self.stage = Stage::Closed;
                vec![
                    Action::Log(
                        Level::Info,
                        format!("handoff {id}: committed; incumbent steps down"),
                    ),
                    Action::StepDown,
                ]
            }
            (_, other) => {
                let reason = format!("unexpected {} while {}", describe(&other), self.name());
                self.fail(reason)
            }
        }
    }

    fn on_drained(&mut self, result: Result<DrainReport, HookError>, now: Instant) -> Vec<Action> {
        let Stage::Hooking {
            id,
            hook: Hook::Drain,
            deadline,
            moves,
            abandoned,
            seal_asked,
        } = self.stage.clone()
        else {
            debug_assert!(false, "a drain result without a drain");
            return vec![];
        };
        match (abandoned, result) {
            (None, Ok(report)) => match check_moved(&report.moved, moves) {
                Err(reason) => self.end_hook(id, Some(Abandon::Failed(reason))),
                Ok(()) => {
                    let drained = Action::Send(Message::Drained {
                        open_conns_remaining: report.open_conns_remaining,
                        accept_closed: report.accept_closed,
                    });
                    let moving = Action::Send(Message::Moving {
                        handoff_id: id,
                        items: report.moved.len() as u32,
                    });
                    if let Some(max) = over_capacity(&report.moved, moves) {
                        // Said, not sent: the supervisor aborts, naming the
                        // limit, before anything leaves (docs/protocol.md).
                        self.stage = Stage::Drained {
                            id,
                            deadline,
                            seal: EarlySeal::Refused,
                        };
                        return vec![
                            Action::Log(
                                Level::Warn,
                                format!(
                                    "handoff {id}: {} descriptor(s) to move, the successor \
                                     holds {max}: waiting for the abort",
                                    report.moved.len()
                                ),
                            ),
                            moving,
                        ];
                    }
                    // The seal first: when a send below fails, the session
                    // waits for it to return and rolls back.
                    self.stage = Stage::Hooking {
                        id,
                        hook: Hook::Seal,
                        deadline,
                        moves: None,
                        abandoned: None,
                        seal_asked,
                    };
                    let mut actions = vec![Action::RunHook {
                        hook: Hook::Seal,
                        handoff_id: id,
                        budget: deadline.saturating_duration_since(now),
                        moves: None,
                        seal_by: deadline,
                    }];
                    if moves.is_some() {
                        actions.extend([moving, Action::SendItems(report.moved)]);
                    }
                    actions.push(drained);
                    actions
                }
            },
            (None, Err(HookError(reason))) => self.end_hook(
                id,
                Some(Abandon::Failed(format!(
                    "service hook drain failed: {reason}"
                ))),
            ),
            (abandoned, _) => self.end_hook(id, abandoned),
        }
    }

    fn on_sealed(&mut self, result: Result<SealReport, HookError>) -> Vec<Action> {
        let Stage::Hooking {
            id,
            hook: Hook::Seal,
            deadline,
            abandoned,
            seal_asked,
            ..
        } = self.stage.clone()
        else {
            debug_assert!(false, "a seal result without a seal");
            return vec![];
        };
        match (abandoned, result) {
            (None, Ok(report)) if seal_asked => self.sealed(id, deadline, report),
            (None, Err(HookError(reason))) if seal_asked => self.seal_failed(id, reason),
            (None, result) => {
                self.stage = Stage::Drained {
                    id,
                    deadline,
                    seal: match result {
                        Ok(report) => EarlySeal::Done(report),
                        Err(HookError(reason)) => EarlySeal::Failed(reason),
                    },
                };
                vec![]
            }
            // The lock was never released, whatever the seal did.
            (abandoned, _) => self.end_hook(id, abandoned),
        }
    }

    /// Sealed and asked to: the lock goes, then the supervisor hears of it.
    fn sealed(&mut self, id: HandoffId, deadline: Instant, report: SealReport) -> Vec<Action> {
        self.stage = Stage::Sealed { id, deadline };
        vec![
            Action::ReleaseLock,
            Action::Send(Message::SealComplete {
                handoff_id: id,
                last_revision_per_shard: report.last_revision_per_shard,
                data_dir_fingerprint: report.data_dir_fingerprint,
            }),
        ]
    }

    /// The seal failed and the supervisor asked for it: the incumbent keeps
    /// its lock and resumes; the supervisor stops the successor.
    fn seal_failed(&mut self, id: HandoffId, reason: String) -> Vec<Action> {
        self.stage = Stage::Idle;
        vec![
            Action::Log(
                Level::Warn,
                format!("handoff {id}: seal failed: {reason}; resuming"),
            ),
            Action::RollBack {
                lock_released: false,
            },
            Action::Send(Message::SealFailed {
                handoff_id: id,
                error: reason,
                partial_state: String::new(),
            }),
        ]
    }

    /// A hook returned for a handoff that is over: resume, and close the
    /// session if it failed.
    fn end_hook(&mut self, id: HandoffId, abandoned: Option<Abandon>) -> Vec<Action> {
        let roll_back = Action::RollBack {
            lock_released: false,
        };
        match abandoned {
            Some(Abandon::Failed(reason)) => {
                self.stage = Stage::Closed;
                vec![
                    roll_back,
                    Action::Close {
                        reason: Some(format!("{reason}; rolling back")),
                    },
                ]
            }
            _ => {
                self.stage = Stage::Idle;
                vec![aborted(id), roll_back]
            }
        }
    }

    fn on_gone(&mut self, reason: String, clean: bool) -> Vec<Action> {
        match self.stage {
            Stage::Closed => vec![],
            Stage::Greeting { .. } | Stage::Idle if clean => {
                self.stage = Stage::Closed;
                vec![Action::Close { reason: None }]
            }
            _ => self.fail(reason),
        }
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let silent = now >= self.last_heard + self.timing.liveness;
        match self.stage {
            Stage::Greeting { until } if now >= until => self.fail(format!(
                "timed out waiting for HelloAck ({:?})",
                self.timing.hello
            )),
            Stage::Hooking {
                deadline,
                abandoned: None,
                ..
            } => {
                if now >= deadline {
                    self.fail(Self::deadline_passed())
                } else if now >= self.last_sent + self.timing.heartbeat {
                    vec![Action::Heartbeat]
                } else {
                    vec![]
                }
            }
            Stage::Drained { deadline, .. } | Stage::Sealed { deadline, .. } if now >= deadline => {
                self.fail(Self::deadline_passed())
            }
            Stage::Idle | Stage::Drained { .. } | Stage::Sealed { .. } if silent => {
                self.fail(format!("supervisor silent for {:?}", self.timing.liveness))
            }
            _ => vec![],
        }
    }

    fn deadline_passed() -> String {
        "the handoff's deadline passed without a Commit".into()
    }

    /// End the session for `reason`, rolling back what its handoff did (at
    /// once, or once the running hook returns).
    fn fail(&mut self, reason: String) -> Vec<Action> {
        let lock_released = self.lock_released();
        match &mut self.stage {
            Stage::Closed => vec![],
            Stage::Hooking { abandoned, .. } => {
                if !matches!(abandoned, Some(Abandon::Failed(_))) {
                    *abandoned = Some(Abandon::Failed(reason));
                }
                vec![]
            }
            Stage::Greeting { .. } | Stage::Idle => {
                self.stage = Stage::Closed;
                vec![Action::Close {
                    reason: Some(format!("{reason}; nothing to roll back")),
                }]
            }
            Stage::Drained { .. } | Stage::Sealed { .. } => {
                self.stage = Stage::Closed;
                vec![
                    Action::RollBack { lock_released },
                    Action::Close {
                        reason: Some(format!("{reason}; rolling back")),
                    },
                ]
            }
        }
    }

    fn name(&self) -> &'static str {
        match self.stage {
            Stage::Greeting { .. } => "greeting",
            Stage::Idle => "idle",
            Stage::Hooking {
                hook: Hook::Drain, ..
            } => "draining",
            // To the supervisor it is drained until it asks for the seal.
            Stage::Hooking {
                hook: Hook::Seal,
                seal_asked: false,
                ..
            } => "drained",
            Stage::Hooking {
                hook: Hook::Seal, ..
            } => "sealing",
            Stage::Drained { .. } => "drained",
            Stage::Sealed { .. } => "sealed",
            Stage::Closed => "closed",
        }
    }
}

/// Whether the drain's moved items are allowed at all and each fits the
/// limits (too many for the successor is the supervisor's to refuse).
/// Whether a drain that returned `report` is followed by the seal (the
/// drain's requests queue it when so): what `on_drained` decides, but for
/// an abort meanwhile.
pub(super) fn seal_follows(report: &DrainReport, moves: Option<u32>) -> bool {
    check_moved(&report.moved, moves).is_ok() && over_capacity(&report.moved, moves).is_none()
}

/// The successor's capacity, when `moved` exceeds it.
fn over_capacity(moved: &[MovedItem], moves: Option<u32>) -> Option<u32> {
    moves.filter(|&max| moved.len() as u64 > u64::from(max))
}

fn check_moved(moved: &[MovedItem], moves: Option<u32>) -> Result<(), String> {
    match moves {
        None if moved.is_empty() => Ok(()),
        None => Err(format!(
            "the service moved {} descriptor(s), but this handoff does not move descriptors",
            moved.len()
        )),
        Some(_) => moved.iter().try_for_each(|item| {
            check_item(&item.name, &item.unread, &item.unwritten, &item.state)
        }),
    }
}

fn aborted(id: HandoffId) -> Action {
    Action::Log(
        Level::Info,
        format!("handoff {id}: aborted by the supervisor; resuming"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn timing() -> Timing {
        Timing {
            liveness: 10 * SECOND,
            hello: 5 * SECOND,
            heartbeat: 2 * SECOND,
            deadline_slack: 2 * SECOND,
            max_deadline: 600 * SECOND,
        }
    }

    fn ack() -> Message {
        Message::HelloAck {
            proto_version_chosen: 1,
            handoff_id: HandoffId::random(),
        }
    }

    fn prepare(id: HandoffId, deadline_ms: u64) -> Message {
        Message::PrepareHandoff {
            handoff_id: id,
            successor_pid: 42,
            deadline_ms,
            drain_grace_ms: 25_000,
        }
    }

    /// A session in each stage, with the instant it got there.
    struct At {
        session: Session,
        now: Instant,
        id: HandoffId,
    }

    impl At {
        fn greeting() -> At {
            let now = Instant::now();
            At {
                session: Session::new(timing(), PROTO_MOVES, now),
                now,
                id: HandoffId::random(),
            }
        }

        fn idle() -> At {
            let mut at = At::greeting();
            assert_eq!(
                at.feed(Input::Message(ack())),
                [Action::SetVersion(1), Action::ReserveGeneration]
            );
            at
        }

        /// Idle on a connection that negotiated v2.
        fn idle_v2() -> At {
            let mut at = At::greeting();
            let ack = Message::HelloAck {
                proto_version_chosen: PROTO_MOVES,
                handoff_id: HandoffId::random(),
            };
            assert_eq!(
                at.feed(Input::Message(ack)),
                [Action::SetVersion(2), Action::ReserveGeneration]
            );
            at
        }

        /// Draining a handoff that may move up to 10 descriptors.
        fn draining_moves() -> At {
            let mut at = At::idle_v2();
            let id = at.id;
            assert!(at
                .message(Message::Transfer {
                    handoff_id: id,
                    items_max: 10,
                })
                .is_empty());
            assert!(matches!(
                at.message(prepare(id, 60_000))[..],
                [Action::RunHook {
                    hook: Hook::Drain,
                    moves: Some(10),
                    ..
                }]
            ));
            at
        }

        fn draining() -> At {
            let mut at = At::idle();
            let id = at.id;
            assert!(matches!(
                at.feed(Input::Message(prepare(id, 60_000)))[..],
                [Action::RunHook {
                    hook: Hook::Drain,
                    ..
                }]
            ));
            at
        }

        /// Drained: the seal runs at once, unasked.
        fn drained() -> At {
            let mut at = At::draining();
            assert!(matches!(
                at.feed(Input::Drained(Ok(DrainReport::default())))[..],
                [
                    Action::RunHook {
                        hook: Hook::Seal,
                        ..
                    },
                    Action::Send(Message::Drained { .. })
                ]
            ));
            assert_eq!(at.session.hook_running(), Some(Hook::Seal));
            at
        }

        /// Drained and sealed, the SealRequest not come yet.
        fn sealed_unasked() -> At {
            let mut at = At::drained();
            assert!(at.feed(Input::Sealed(Ok(SealReport::default()))).is_empty());
            assert!(!at.session.lock_released());
            at
        }

        /// The seal runs, and the supervisor has asked for it.
        fn sealing() -> At {
            let mut at = At::drained();
            let id = at.id;
            assert!(at
                .feed(Input::Message(Message::SealRequest { handoff_id: id }))
                .is_empty());
            at
        }

        fn sealed() -> At {
            let mut at = At::sealing();
            assert!(matches!(
                at.feed(Input::Sealed(Ok(SealReport::default())))[..],
                [
                    Action::ReleaseLock,
                    Action::Send(Message::SealComplete { .. })
                ]
            ));
            at
        }

        fn feed(&mut self, input: Input) -> Vec<Action> {
            self.session.handle(input, self.now, None)
        }

        /// Abort while the unasked seal runs: nothing until it returns,
        /// then the rollback, the lock never released.
        fn abort_during_the_seal(&mut self) {
            assert!(self.abort("successor died").is_empty());
            assert_eq!(
                self.feed(Input::Sealed(Ok(SealReport::default())))[1..],
                [ROLL_BACK_HELD]
            );
            assert_eq!(self.session.handoff(), None);
        }

        fn later(&mut self, by: Duration) -> Vec<Action> {
            self.now += by;
            self.feed(Input::Tick)
        }

        fn message(&mut self, message: Message) -> Vec<Action> {
            self.feed(Input::Message(message))
        }

        /// The supervisor's Abort of this handoff.
        fn abort(&mut self, reason: &str) -> Vec<Action> {
            let handoff_id = self.id;
            self.message(Message::Abort {
                handoff_id,
                reason: reason.into(),
            })
        }
    }

    fn closed_for(actions: &[Action], words: &[&str]) -> bool {
        actions.iter().any(|a| match a {
            Action::Close { reason: Some(r) } => words.iter().all(|w| r.contains(w)),
            _ => false,
        })
    }

    const ROLL_BACK_HELD: Action = Action::RollBack {
        lock_released: false,
    };
    const ROLL_BACK_RELEASED: Action = Action::RollBack {
        lock_released: true,
    };

    #[test]
    fn greeting_takes_only_a_hello_ack_in_time() {
        let mut at = At::greeting();
        let actions = at.message(Message::Heartbeat { ts_ms: 1 });
        assert!(closed_for(&actions, &["expected HelloAck, got Heartbeat"]));
        assert!(at.session.is_closed());

        let mut at = At::greeting();
        assert!(at.later(4 * SECOND).is_empty());
        assert!(closed_for(
            &at.later(SECOND),
            &["timed out waiting for HelloAck"]
        ));

        let mut at = At::greeting();
        let ack = Message::HelloAck {
            proto_version_chosen: 9,
            handoff_id: HandoffId::random(),
        };
        assert!(closed_for(&at.message(ack), &["version"]));
    }

    #[test]
    fn idle_echoes_heartbeats_ignores_stray_aborts_and_refuses_the_rest() {
        let mut at = At::idle();
        assert_eq!(
            at.message(Message::Heartbeat { ts_ms: 1 }),
            [Action::Heartbeat]
        );
        let id = at.id;
        assert!(at
            .message(Message::ResumeAfterAbort { handoff_id: id })
            .is_empty());
        assert!(at.abort("x").is_empty());
        for refused in [
            Message::SealRequest { handoff_id: id },
            Message::Commit { handoff_id: id },
            Message::Begin { handoff_id: id },
            ack(),
        ] {
            let mut at = At::idle();
            let name = refused.kind().name();
            let actions = at.message(refused);
            assert!(
                closed_for(&actions, &[name, "while idle", "nothing to roll back"]),
                "{actions:?}"
            );
            assert!(!actions.contains(&ROLL_BACK_HELD));
        }
    }

    #[test]
    fn idle_closes_when_silent_and_quietly_on_a_clean_close() {
        let mut at = At::idle();
        assert!(at.later(9 * SECOND).is_empty());
        assert!(closed_for(
            &at.later(SECOND),
            &["supervisor silent for 10s"]
        ));

        let mut at = At::idle();
        let actions = at.feed(Input::PeerGone {
            reason: "closed".into(),
            clean: true,
        });
        assert_eq!(actions, [Action::Close { reason: None }]);
    }

    #[test]
    fn one_handoff_at_a_time() {
        let mut at = At::idle();
        let running = HandoffId::random();
        let actions = at.session.handle(
            Input::Message(prepare(at.id, 60_000)),
            at.now,
            Some(running),
        );
        assert!(closed_for(
            &actions,
            &["while handoff", &running.to_string()]
        ));
        assert_eq!(at.session.handoff(), None);
    }

    #[test]
    fn the_drain_budget_is_the_smaller_of_deadline_and_grace() {
        let mut at = At::idle();
        let id = at.id;
        assert_eq!(
            at.message(prepare(id, 5_000)),
            [Action::RunHook {
                hook: Hook::Drain,
                handoff_id: id,
                budget: 5 * SECOND,
                moves: None,
                seal_by: at.now + 5 * SECOND + 2 * SECOND,
            }]
        );
        assert_eq!(at.session.handoff(), Some(id));
    }

    #[test]
    fn draining_beats_until_the_hook_returns_and_never_times_the_peer_out() {
        let mut at = At::draining();
        assert!(at.later(SECOND).is_empty());
        assert_eq!(at.later(SECOND), [Action::Heartbeat]);
        // A long drain: silence from the supervisor is not counted.
        for _ in 0..10 {
            assert_eq!(at.later(2 * SECOND), [Action::Heartbeat]);
        }
        assert_eq!(
            at.message(Message::Heartbeat { ts_ms: 1 }),
            [Action::Heartbeat]
        );
    }

    #[test]
    fn a_failed_drain_rolls_back_and_closes() {
        let mut at = At::draining();
        let actions = at.feed(Input::Drained(Err(HookError("disk".into()))));
        assert_eq!(actions[0], ROLL_BACK_HELD);
        assert!(closed_for(
            &actions,
            &["drain failed: disk", "rolling back"]
        ));
    }

    #[test]
    fn an_abort_while_draining_resumes_once_the_drain_returns() {
        let mut at = At::draining();
        assert!(at.abort("no").is_empty());
        assert!(at.session.wants_input());
        assert_eq!(
            at.feed(Input::Drained(Ok(DrainReport::default())))[1..],
            [ROLL_BACK_HELD]
        );
        assert_eq!(at.session.handoff(), None);
        assert!(!at.session.is_closed());
    }

    #[test]
    fn a_peer_gone_or_a_protocol_error_while_hooking_waits_for_the_hook() {
        for hooking in [At::draining as fn() -> At, At::sealing] {
            let mut at = hooking();
            let gone = at.feed(Input::PeerGone {
                reason: "peer closed the connection".into(),
                clean: true,
            });
            assert!(gone.is_empty());
            assert!(!at.session.wants_input());
            let result = match at.session.hook_running() {
                Some(Hook::Drain) => Input::Drained(Ok(DrainReport::default())),
                _ => Input::Sealed(Ok(SealReport::default())),
            };
            let actions = at.feed(result);
            // A seal that ended after its session did never released the lock.
            assert_eq!(actions[0], ROLL_BACK_HELD);
            assert!(closed_for(&actions, &["peer closed", "rolling back"]));
        }

        let mut at = At::draining();
        assert!(at.message(Message::Commit { handoff_id: at.id }).is_empty());
        let actions = at.feed(Input::Drained(Ok(DrainReport::default())));
        assert!(closed_for(
            &actions,
            &["unexpected Commit", "while draining"]
        ));
    }

    #[test]
    fn the_deadline_ends_a_hook_that_outlives_it() {
        let mut at = At::idle();
        let id = at.id;
        at.message(prepare(id, 3_000));
        // Deadline 3 s + 2 s slack; heartbeats meanwhile.
        assert_eq!(at.later(2 * SECOND), [Action::Heartbeat]);
        assert_eq!(at.later(2 * SECOND), [Action::Heartbeat]);
        assert!(at.later(SECOND).is_empty());
        assert!(!at.session.wants_input());
        let actions = at.feed(Input::Drained(Ok(DrainReport::default())));
        assert!(closed_for(&actions, &["deadline passed"]));
    }

    #[test]
    fn drained_seals_on_its_own_request_only() {
        let mut at = At::sealed_unasked();
        let other = HandoffId::random();
        let actions = at.message(Message::SealRequest { handoff_id: other });
        assert_eq!(actions[0], ROLL_BACK_HELD);
        assert!(closed_for(
            &actions,
            &[
                "unexpected SealRequest",
                &other.to_string(),
                "while drained",
                "rolling back"
            ]
        ));

        let mut at = At::sealed_unasked();
        let id = at.id;
        assert_eq!(
            at.message(Message::SealRequest { handoff_id: id }),
            [
                Action::ReleaseLock,
                Action::Send(Message::SealComplete {
                    handoff_id: id,
                    last_revision_per_shard: Vec::new(),
                    data_dir_fingerprint: [0; 32],
                })
            ]
        );
        assert!(at.session.lock_released());

        // The seal's budget is what is left of the handoff's deadline.
        let mut at = At::draining();
        at.now += SECOND;
        let actions = at.feed(Input::Drained(Ok(DrainReport::default())));
        let Action::RunHook { budget, .. } = actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(budget, 61 * SECOND);
    }

    #[test]
    fn a_seal_asked_for_while_the_drain_runs_is_answered_as_soon_as_it_returns() {
        let mut at = At::draining();
        let id = at.id;
        assert!(at
            .message(Message::SealRequest { handoff_id: id })
            .is_empty());
        assert!(!at.session.lock_released());
        assert!(matches!(
            at.feed(Input::Drained(Ok(DrainReport::default())))[..],
            [
                Action::RunHook {
                    hook: Hook::Seal,
                    ..
                },
                Action::Send(Message::Drained { .. })
            ]
        ));
        // No second SealRequest is waited for: the lock goes at once.
        assert!(matches!(
            at.feed(Input::Sealed(Ok(SealReport::default())))[..],
            [
                Action::ReleaseLock,
                Action::Send(Message::SealComplete { .. })
            ]
        ));
        assert!(at.session.lock_released());

        // Aborted during that drain: the service resumes, no seal is run.
        let mut at = At::draining();
        assert!(at
            .message(Message::SealRequest { handoff_id: at.id })
            .is_empty());
        assert!(at.abort("the successor died").is_empty());
        let actions = at.feed(Input::Drained(Ok(DrainReport::default())));
        assert!(actions.contains(&ROLL_BACK_HELD), "{actions:?}");
        assert!(!actions
            .iter()
            .any(|a| matches!(a, Action::RunHook { .. } | Action::ReleaseLock)));

        // A SealRequest for another handoff is still refused (once the
        // drain has returned).
        let mut at = At::draining();
        let other = HandoffId::from_bytes([9; 16]);
        assert!(at
            .message(Message::SealRequest { handoff_id: other })
            .is_empty());
        let actions = at.feed(Input::Drained(Ok(DrainReport::default())));
        assert!(
            closed_for(&actions, &["unexpected SealRequest"]),
            "{actions:?}"
        );
    }

    #[test]
    fn a_seal_asked_for_while_it_runs_is_answered_once_it_returns() {
        let mut at = At::sealing();
        let id = at.id;
        assert!(!at.session.lock_released());
        assert_eq!(
            at.feed(Input::Sealed(Ok(SealReport::default())))[0],
            Action::ReleaseLock
        );
        assert!(at.session.lock_released());

        // A second SealRequest is a protocol error: the session waits for the
        // seal, then rolls back with the lock it never released.
        let mut at = At::sealing();
        assert!(at
            .message(Message::SealRequest { handoff_id: id })
            .is_empty());
        let actions = at.feed(Input::Sealed(Ok(SealReport::default())));
        assert_eq!(actions[0], ROLL_BACK_HELD);
        assert!(closed_for(&actions, &["unexpected SealRequest"]));
    }

    #[test]
    fn drained_resumes_on_abort_silence_deadline_or_close() {
        // An abort while the unasked seal runs: once it returns.
        At::drained().abort_during_the_seal();

        // Once it has returned: at once, the lock never released.
        let mut at = At::sealed_unasked();
        let id = at.id;
        assert_eq!(
            at.message(Message::ResumeAfterAbort { handoff_id: id })[1..],
            [ROLL_BACK_HELD]
        );
        assert!(!at.session.is_closed());

        let mut at = At::sealed_unasked();
        assert!(at.later(9 * SECOND).is_empty());
        let actions = at.later(SECOND);
        assert_eq!(actions[0], ROLL_BACK_HELD);
        assert!(closed_for(&actions, &["silent"]));

        let mut at = At::sealed_unasked();
        let actions = at.feed(Input::PeerGone {
            reason: "peer closed the connection".into(),
            clean: true,
        });
        assert_eq!(actions[0], ROLL_BACK_HELD);
    }

    #[test]
    fn heartbeats_cannot_keep_an_incumbent_drained_past_its_deadline() {
        // Invariant 8: whoever keeps the session alive.
        for stage in [At::sealed_unasked as fn() -> At, At::sealed] {
            let mut at = stage();
            let released = at.session.lock_released();
            let mut actions = vec![];
            for _ in 0..70 {
                at.now += SECOND;
                at.message(Message::Heartbeat { ts_ms: 1 });
                actions = at.feed(Input::Tick);
                if !actions.is_empty() {
                    break;
                }
            }
            assert_eq!(
                actions[0],
                Action::RollBack {
                    lock_released: released
                }
            );
            assert!(closed_for(&actions, &["deadline passed"]));
        }
    }

    #[test]
    fn a_huge_deadline_is_capped() {
        let mut at = At::idle();
        let id = at.id;
        at.message(prepare(id, u64::MAX));
        at.feed(Input::Drained(Ok(DrainReport::default())));
        at.feed(Input::Sealed(Ok(SealReport::default())));
        assert_eq!(at.session.next_timer(), Some(at.now + 10 * SECOND));
        at.message(Message::Heartbeat { ts_ms: 1 });
        let mut ended = false;
        for _ in 0..700 {
            at.now += SECOND;
            at.message(Message::Heartbeat { ts_ms: 1 });
            if !at.feed(Input::Tick).is_empty() {
                ended = true;
                break;
            }
        }
        assert!(ended, "still drained after 700 s");
    }

    #[test]
    fn a_seal_failure_resumes_and_says_so() {
        let mut at = At::sealing();
        let id = at.id;
        assert_eq!(
            at.feed(Input::Sealed(Err(HookError("fsync: EIO".into()))))[1..],
            [
                ROLL_BACK_HELD,
                Action::Send(Message::SealFailed {
                    handoff_id: id,
                    error: "fsync: EIO".into(),
                    partial_state: String::new()
                })
            ]
        );
        assert_eq!(at.session.handoff(), None);

        // Failed before the supervisor asked: told when it does.
        let mut at = At::drained();
        assert!(at
            .feed(Input::Sealed(Err(HookError("fsync: EIO".into()))))
            .is_empty());
        assert_eq!(
            at.session.handoff(),
            Some(at.id),
            "drained, until the supervisor asks"
        );
        let actions = at.message(Message::SealRequest { handoff_id: at.id });
        assert_eq!(actions[1], ROLL_BACK_HELD);
        assert!(matches!(
            &actions[2],
            Action::Send(Message::SealFailed { error, .. }) if error == "fsync: EIO"
        ));
        assert_eq!(at.session.handoff(), None);
    }

    #[test]
    fn sealed_commits_on_its_own_commit_only() {
        let mut at = At::sealed();
        let id = at.id;
        assert!(at.session.lock_released());
        assert_eq!(
            at.message(Message::Commit { handoff_id: id })[1..],
            [Action::StepDown]
        );
        assert!(at.session.is_closed());

        let mut at = At::sealed();
        let actions = at.message(Message::Commit {
            handoff_id: HandoffId::random(),
        });
        assert_eq!(actions[0], ROLL_BACK_RELEASED);
        assert!(closed_for(&actions, &["unexpected Commit", "while sealed"]));

        let mut at = At::sealed();
        assert_eq!(at.abort("n died")[1..], [ROLL_BACK_RELEASED]);

        let mut at = At::sealed();
        let actions = at.feed(Input::PeerGone {
            reason: "reset".into(),
            clean: false,
        });
        assert_eq!(actions[0], ROLL_BACK_RELEASED);
    }

    #[test]
    fn a_closed_session_takes_nothing() {
        let mut at = At::sealed();
        let id = at.id;
        at.message(Message::Commit { handoff_id: id });
        assert!(at.message(Message::Heartbeat { ts_ms: 1 }).is_empty());
        assert!(at.later(100 * SECOND).is_empty());
        assert_eq!(at.session.next_timer(), None);
    }

    fn moved(n: usize) -> Vec<MovedItem> {
        (0..n)
            .map(|i| MovedItem {
                kind: crate::protocol::ItemKind::Connection,
                name: "kv".into(),
                fd: 100 + i as i32,
                unread: b"GET k".to_vec(),
                unwritten: Vec::new(),
                state: Vec::new(),
            })
            .collect()
    }

    fn drained_with(items: Vec<MovedItem>) -> Input {
        Input::Drained(Ok(DrainReport {
            moved: items,
            ..DrainReport::default()
        }))
    }

    #[test]
    fn a_transfer_makes_the_next_drain_move_descriptors() {
        let mut at = At::draining_moves();
        let id = at.id;
        let items = moved(3);
        assert_eq!(
            at.feed(drained_with(items.clone()))[1..],
            [
                Action::Send(Message::Moving {
                    handoff_id: id,
                    items: 3
                }),
                Action::SendItems(items),
                Action::Send(Message::Drained {
                    open_conns_remaining: 0,
                    accept_closed: false
                }),
            ]
        );
        // Moved, then aborted: the descriptors come back with the rollback
        // (once the seal that started returns).
        at.abort_during_the_seal();
    }

    #[test]
    fn a_moving_drain_with_nothing_to_move_still_says_so() {
        let mut at = At::draining_moves();
        let id = at.id;
        assert_eq!(
            at.feed(drained_with(Vec::new()))[1..3],
            [
                Action::Send(Message::Moving {
                    handoff_id: id,
                    items: 0
                }),
                Action::SendItems(Vec::new()),
            ]
        );
    }

    #[test]
    fn without_a_transfer_nothing_moves() {
        // A Transfer for another handoff does not count.
        let mut at = At::idle_v2();
        let id = at.id;
        at.message(Message::Transfer {
            handoff_id: HandoffId::random(),
            items_max: 10,
        });
        assert!(matches!(
            at.message(prepare(id, 60_000))[..],
            [Action::RunHook { moves: None, .. }]
        ));
        let actions = at.feed(drained_with(moved(1)));
        assert_eq!(actions[0], ROLL_BACK_HELD);
        assert!(closed_for(
            &actions,
            &["moved 1 descriptor(s)", "does not move descriptors"]
        ));
    }

    #[test]
    fn a_transfer_on_a_v1_connection_is_a_protocol_error() {
        let mut at = At::idle();
        let id = at.id;
        let actions = at.message(Message::Transfer {
            handoff_id: id,
            items_max: 10,
        });
        assert!(closed_for(&actions, &["unexpected Transfer"]));
    }

    #[test]
    fn a_drain_that_moves_more_than_the_successor_holds_waits_for_the_abort() {
        let mut at = At::draining_moves();
        let id = at.id;
        let actions = at.feed(drained_with(moved(11)));
        // Moving says how many; nothing is sent, no Drained, no seal.
        assert_eq!(
            actions[1..],
            [Action::Send(Message::Moving {
                handoff_id: id,
                items: 11
            })]
        );
        let refused = at.message(Message::SealRequest { handoff_id: id });
        assert!(closed_for(&refused, &["unexpected SealRequest"]));

        let mut at = At::draining_moves();
        let id = at.id;
        at.feed(drained_with(moved(11)));
        assert_eq!(
            at.message(Message::ResumeAfterAbort { handoff_id: id })[1..],
            [ROLL_BACK_HELD]
        );

        let mut at = At::draining_moves();
        let mut big = moved(1);
        big[0].state = vec![0; crate::protocol::MAX_ITEM_BYTES];
        let actions = at.feed(drained_with(big));
        assert!(closed_for(&actions, &["more than 1048000"]));
    }
}
