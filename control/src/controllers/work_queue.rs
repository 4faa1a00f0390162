//! A controller's work queue: object keys to reconcile, each at most once
//! in the queue however often it is added, retried after failures with a
//! per-key back-off (5 ms doubling to 1,000 s, client-go's default), or
//! after a delay the reconciler asks for.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    fmt::Display,
    time::{Duration, Instant},
};

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

#[derive(Debug, Default)]
pub struct WorkQueue {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    delayed: BinaryHeap<Reverse<(Instant, String)>>,
    failures: HashMap<String, u32>,
}

impl WorkQueue {
    pub fn add(&mut self, key: String) {
        if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    pub fn add_after(&mut self, key: String, delay: Duration) {
        self.delayed.push(Reverse((Instant::now() + delay, key)));
    }

    /// After a failed reconcile: again after the key's next back-off.
    pub fn retry(&mut self, key: String) {
        let failures = self.failures.entry(key.clone()).or_default();
        let delay = BASE_DELAY
            .saturating_mul(2u32.saturating_pow((*failures).min(20)))
            .min(MAX_DELAY);
        *failures += 1;
        self.add_after(key, delay);
    }

    /// After a successful reconcile: the key's back-off starts over.
    pub fn forget(&mut self, key: &str) {
        self.failures.remove(key);
    }

    /// The next key ready now, moving due delayed keys in first.
    pub fn pop(&mut self) -> Option<String> {
        let now = Instant::now();
        while self
            .delayed
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
        {
            if let Some(Reverse((_, key))) = self.delayed.pop() {
                self.add(key);
            }
        }
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    /// When the earliest delayed key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((at, _))| *at)
    }

    /// When a controller with nothing ready should look again.
    pub fn wake_at(&self) -> Instant {
        self.next_due()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60))
    }

    /// Records how a reconcile of `key` went: success resets its back-off
    /// (and comes back after the delay it asked for), failure retries it.
    pub fn finish<E: Display>(&mut self, key: String, outcome: Result<Option<Duration>, E>) {
        match outcome {
            Ok(requeue) => {
                self.forget(&key);
                if let Some(after) = requeue {
                    self.add_after(key, after);
                }
            }
            Err(err) => {
                tracing::info!(key, error = %err, "reconcile failed; retrying");
                self.retry(key);
            }
        }
    }
}

impl<'a> Extend<&'a String> for WorkQueue {
    fn extend<I: IntoIterator<Item = &'a String>>(&mut self, keys: I) {
        for key in keys {
            self.add(key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_queued_once_however_often_it_is_added() {
        let mut queue = WorkQueue::default();
        queue.add("a".into());
        queue.add("b".into());
        queue.add("a".into());
        assert_eq!(queue.pop().as_deref(), Some("a"));
        assert_eq!(queue.pop().as_deref(), Some("b"));
        assert_eq!(queue.pop(), None);
        queue.add("a".into());
        assert_eq!(queue.pop().as_deref(), Some("a"), "added again once taken");
    }

    #[test]
    fn failures_back_off_and_success_resets() {
        let mut queue = WorkQueue::default();
        queue.retry("a".into());
        assert_eq!(queue.pop(), None, "not before its back-off");
        std::thread::sleep(BASE_DELAY);
        assert_eq!(queue.pop().as_deref(), Some("a"));
        queue.retry("a".into());
        let second = queue.next_due().unwrap();
        assert!(
            second > Instant::now() + BASE_DELAY,
            "the second waits longer"
        );
        queue.forget("a");
        assert!(queue.failures.is_empty());
    }
}
