//! What to do when the incumbent dies outside a handoff: restart it cold
//! after an exponential backoff, reset once a generation has run for a while.

use std::time::{Duration, Instant};

use crate::config::{Restart, RestartPolicy};

#[derive(Debug)]
pub struct Backoff {
    config: Restart,
    /// The delay before the next restart.
    next: Duration,
}

/// The decision for one exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RestartIn(Duration),
    /// The policy says not to restart: the supervisor stops.
    GiveUp,
}

impl Backoff {
    pub fn new(config: Restart) -> Backoff {
        Backoff {
            config,
            next: config.initial_backoff,
        }
    }

    /// The incumbent started at `started` exited with `success` (status 0).
    pub fn on_exit(&mut self, started: Instant, success: bool) -> Decision {
        let restart = match self.config.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        };
        if !restart {
            return Decision::GiveUp;
        }
        if started.elapsed() >= self.config.reset_after {
            self.next = self.config.initial_backoff;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.config.max_backoff);
        Decision::RestartIn(delay)
    }

    /// A generation came up through a handoff: start over.
    pub fn reset(&mut self) {
        self.next = self.config.initial_backoff;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: RestartPolicy) -> Restart {
        Restart {
            policy,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            reset_after: Duration::from_secs(60),
            probation: Duration::from_secs(10),
        }
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(config(RestartPolicy::Always));
        let now = Instant::now();
        let delays: Vec<_> = (0..5).map(|_| backoff.on_exit(now, false)).collect();
        let ms = |n| Decision::RestartIn(Duration::from_millis(n));
        assert_eq!(delays, vec![ms(100), ms(200), ms(400), ms(500), ms(500)]);
        backoff.reset();
        assert_eq!(backoff.on_exit(now, true), ms(100));
    }

    #[test]
    fn resets_after_a_long_run() {
        let mut backoff = Backoff::new(Restart {
            reset_after: Duration::ZERO,
            ..config(RestartPolicy::Always)
        });
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                backoff.on_exit(now, false),
                Decision::RestartIn(Duration::from_millis(100))
            );
        }
    }

    #[test]
    fn policies() {
        let now = Instant::now();
        let mut on_failure = Backoff::new(config(RestartPolicy::OnFailure));
        assert_eq!(on_failure.on_exit(now, true), Decision::GiveUp);
        assert!(matches!(
            on_failure.on_exit(now, false),
            Decision::RestartIn(_)
        ));
        let mut never = Backoff::new(config(RestartPolicy::Never));
        assert_eq!(never.on_exit(now, false), Decision::GiveUp);
    }
}
