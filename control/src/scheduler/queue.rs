//! The scheduling queue: pods waiting for a node. Active pods are tried in
//! arrival order. A pod that fits nowhere waits as unschedulable until the
//! cluster changes in a way that may make room (a node added or changed, a
//! bound pod gone), or its spec's constraints change, or five minutes
//! pass; a pod whose binding failed backs off, 1 s doubling to 10 s, as
//! kube-scheduler's queue does. Nothing is retried in a busy loop.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use super::pod_info::{PodInfo, PodKey};

const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An unschedulable pod is tried again after this even if nothing moved.
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);
/// How often unschedulable pods are checked against that limit (a scan
/// of every waiting pod, so not on every tick).
const FLUSH_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    /// Being scheduled or bound.
    InFlight,
    Unschedulable {
        since: Instant,
    },
    BackingOff {
        until: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    pod: PodInfo,
    state: State,
    attempts: u32,
    /// No earlier retry than this, whatever moves it.
    not_before: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Queue {
    entries: HashMap<PodKey, Entry>,
    active: VecDeque<PodKey>,
    backoff: BinaryHeap<Reverse<(Instant, PodKey)>>,
    /// When unschedulable pods are next checked for having waited too long.
    next_flush: Option<Instant>,
}

fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(8);
    (INITIAL_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

impl Queue {
    /// A new or changed pod without a node. A changed spec sends an
    /// unschedulable pod back to be tried (status-only changes do not).
    pub fn upsert(&mut self, pod: PodInfo, now: Instant) {
        let key = pod.key.clone();
        match self.entries.get_mut(&key) {
            None => {
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        state: State::Active,
                        attempts: 0,
                        not_before: None,
                    },
                );
                self.active.push_back(key);
            }
            Some(entry) => {
                let changed = entry.pod.constraints != pod.constraints || entry.pod.uid != pod.uid;
                entry.pod = pod;
                if changed && matches!(entry.state, State::Unschedulable { .. }) {
                    self.wake(&key, now);
                }
            }
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The next pod to try; it stays in flight until [`Self::done`],
    /// [`Self::unschedulable`] or [`Self::retry_later`].
    pub fn pop(&mut self) -> Option<PodInfo> {
        while let Some(key) = self.active.pop_front() {
            if let Some(entry) = self.entries.get_mut(&key)
                && entry.state == State::Active
            {
                entry.state = State::InFlight;
                return Some(entry.pod.clone());
            }
        }
        None
    }

    /// The pod is bound.
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// The pod fits nowhere now.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.attempts += 1;
            entry.not_before = Some(now + backoff(entry.attempts));
            entry.state = State::Unschedulable { since: now };
        }
    }

    /// The attempt failed for a reason that may pass (its binding).
    pub fn retry_later(&mut self, key: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.attempts += 1;
            let until = now + backoff(entry.attempts);
            entry.state = State::BackingOff { until };
            self.backoff.push(Reverse((until, key.to_owned())));
        }
    }

    /// The cluster changed so that unschedulable pods may fit: all are
    /// tried again, each after its back-off.
    pub fn move_all(&mut self, now: Instant) {
        let waiting: Vec<PodKey> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Unschedulable { .. }))
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            self.wake(&key, now);
        }
    }

    fn wake(&mut self, key: &str, now: Instant) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        match entry.not_before {
            Some(until) if until > now => {
                entry.state = State::BackingOff { until };
                self.backoff.push(Reverse((until, key.to_owned())));
            }
            _ => {
                entry.state = State::Active;
                self.active.push_back(key.to_owned());
            }
        }
    }

    /// Moves pods whose back-off is over, and unschedulable ones that have
    /// waited the longest allowed, to the active queue.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((until, _))) = self.backoff.peek() {
            if *until > now {
                break;
            }
            let Some(Reverse((until, key))) = self.backoff.pop() else {
                break;
            };
            if let Some(entry) = self.entries.get_mut(&key)
                && entry.state == (State::BackingOff { until })
            {
                entry.state = State::Active;
                self.active.push_back(key);
            }
        }
        if self.next_flush.is_some_and(|at| now < at) {
            return;
        }
        self.next_flush = Some(now + FLUSH_INTERVAL);
        let stale: Vec<PodKey> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                matches!(e.state, State::Unschedulable { since } if now.duration_since(since) >= MAX_UNSCHEDULABLE)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.wake(&key, now);
        }
    }

    /// When [`Self::tick`] has work next, if it will.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let backoff = self.backoff.peek().map(|Reverse((until, _))| *until);
        let waiting = self
            .entries
            .values()
            .any(|e| matches!(e.state, State::Unschedulable { .. }));
        let flush = self.next_flush.filter(|_| waiting);
        backoff.into_iter().chain(flush).min()
    }

    /// Keys of every queued pod.
    pub fn keys(&self) -> impl Iterator<Item = &PodKey> {
        self.entries.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::pod_info::Constraints;

    fn pod(name: &str) -> PodInfo {
        PodInfo {
            key: format!("ns/{name}"),
            namespace: "ns".into(),
            name: name.into(),
            uid: name.into(),
            scheduler_name: "default-scheduler".into(),
            node_name: String::new(),
            finished: false,
            constraints: Constraints::default(),
        }
    }

    #[test]
    fn pods_come_out_in_arrival_order_once() {
        let mut queue = Queue::default();
        let now = Instant::now();
        queue.upsert(pod("a"), now);
        queue.upsert(pod("b"), now);
        queue.upsert(pod("a"), now);
        assert_eq!(queue.pop().unwrap().name, "a");
        assert_eq!(queue.pop().unwrap().name, "b");
        assert!(queue.pop().is_none());
    }

    #[test]
    fn an_unschedulable_pod_waits_for_a_change_and_its_backoff() {
        let mut queue = Queue::default();
        let t0 = Instant::now();
        queue.upsert(pod("a"), t0);
        queue.pop().unwrap();
        queue.unschedulable("ns/a", t0);
        queue.tick(t0 + Duration::from_secs(2));
        assert!(queue.pop().is_none(), "nothing moved: it waits");

        let mut status_only = pod("a");
        status_only.node_name = String::new();
        queue.upsert(status_only, t0 + Duration::from_secs(2));
        assert!(queue.pop().is_none(), "a status update is not a reason");

        queue.move_all(t0 + Duration::from_millis(500));
        assert!(queue.pop().is_none(), "still backing off");
        queue.tick(t0 + Duration::from_secs(1));
        assert_eq!(queue.pop().unwrap().name, "a", "tried after its back-off");
    }

    #[test]
    fn a_changed_spec_or_five_minutes_wake_an_unschedulable_pod() {
        let mut queue = Queue::default();
        let t0 = Instant::now();
        queue.upsert(pod("a"), t0);
        queue.pop().unwrap();
        queue.unschedulable("ns/a", t0);
        let mut changed = pod("a");
        changed
            .constraints
            .node_selector
            .insert("disk".into(), "ssd".into());
        queue.upsert(changed, t0 + Duration::from_secs(5));
        assert!(queue.pop().is_some());

        queue.unschedulable("ns/a", t0 + Duration::from_secs(5));
        queue.tick(t0 + Duration::from_secs(6));
        assert!(
            queue.next_wakeup().is_some(),
            "a flush is due while a pod waits"
        );
        queue.tick(t0 + Duration::from_secs(6) + MAX_UNSCHEDULABLE - FLUSH_INTERVAL);
        assert!(queue.pop().is_none(), "not yet five minutes");
        queue.tick(t0 + Duration::from_secs(6) + MAX_UNSCHEDULABLE);
        assert!(queue.pop().is_some(), "tried again after five minutes");
    }

    #[test]
    fn failed_bindings_back_off_doubling_to_ten_seconds() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(9), MAX_BACKOFF);
        let mut queue = Queue::default();
        let t0 = Instant::now();
        queue.upsert(pod("a"), t0);
        queue.pop().unwrap();
        queue.retry_later("ns/a", t0);
        queue.tick(t0 + Duration::from_millis(999));
        assert!(queue.pop().is_none());
        queue.tick(t0 + Duration::from_secs(1));
        assert!(queue.pop().is_some());
    }

    #[test]
    fn removed_pods_are_never_returned() {
        let mut queue = Queue::default();
        let now = Instant::now();
        queue.upsert(pod("a"), now);
        queue.remove("ns/a");
        assert!(queue.pop().is_none());
        assert_eq!(queue.keys().count(), 0);
    }
}
