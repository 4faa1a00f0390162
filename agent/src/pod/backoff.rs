//! Crash-loop back-off, as the kubelet does it: the first restart is
//! immediate, then 10 s, doubling to a cap of 5 minutes; a container that
//! ran for 10 minutes starts the count again.

use std::time::{Duration, SystemTime};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// A run this long proves the container healthy again.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// The delay the next restart waits; None: the next restart is
    /// immediate.
    next: Option<Duration>,
    /// No restart before this.
    until: Option<SystemTime>,
    /// The delay `until` was set with.
    serving: Duration,
}

impl Backoff {
    /// Records a container that must restart, finished at `finished` after
    /// running for `ran`; returns the earliest time it may start again.
    pub fn record_exit(&mut self, finished: SystemTime, ran: Duration) -> SystemTime {
        if ran >= RESET_AFTER {
            self.next = None;
        }
        let delay = self.next.unwrap_or(Duration::ZERO);
        self.next = Some(if delay.is_zero() {
            INITIAL
        } else {
            (delay * 2).min(MAX)
        });
        let until = finished + delay;
        self.until = Some(until);
        self.serving = delay;
        until
    }

    /// Records a failed attempt that made nothing (a pull, a create) at
    /// `at`; returns when to try again: 10 s, doubling to 5 minutes.
    pub fn record_failure(&mut self, at: SystemTime) -> SystemTime {
        let delay = self.next.unwrap_or(INITIAL).max(INITIAL);
        self.next = Some((delay * 2).min(MAX));
        let until = at + delay;
        self.until = Some(until);
        self.serving = delay;
        until
    }

    /// The pending delay, if a restart must still wait at `now`.
    pub fn waiting(&self, now: SystemTime) -> Option<(SystemTime, Duration)> {
        let until = self.until?;
        let left = until.duration_since(now).ok()?;
        (!left.is_zero()).then_some((until, self.serving))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_wait_0_10_20_40_then_cap_and_reset_after_a_long_run() {
        let mut backoff = Backoff::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let short = Duration::from_secs(1);
        let mut delays = Vec::new();
        let mut now = t0;
        for _ in 0..8 {
            let until = backoff.record_exit(now, short);
            delays.push(until.duration_since(now).unwrap().as_secs());
            now = until + short;
        }
        assert_eq!(delays, vec![0, 10, 20, 40, 80, 160, 300, 300]);

        let until = backoff.record_exit(now, Duration::from_secs(700));
        assert_eq!(until, now, "a long run resets the back-off");
        assert_eq!(backoff.record_exit(now, short), now + INITIAL);
    }

    #[test]
    fn failed_attempts_wait_10_s_then_double() {
        let mut backoff = Backoff::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(9_000);
        let delays: Vec<u64> = (0..7)
            .map(|_| {
                backoff
                    .record_failure(t0)
                    .duration_since(t0)
                    .unwrap()
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn waiting_reports_the_delay_being_served() {
        let mut backoff = Backoff::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(5_000);
        assert_eq!(backoff.waiting(t0), None);
        backoff.record_exit(t0, Duration::from_secs(1));
        assert_eq!(backoff.waiting(t0), None, "the first restart is immediate");
        let until = backoff.record_exit(t0, Duration::from_secs(1));
        assert_eq!(
            backoff.waiting(t0 + Duration::from_secs(3)),
            Some((until, INITIAL))
        );
        assert_eq!(backoff.waiting(until), None);
    }
}
