//! Expectations counted: how many pods an owner has created or deleted
//! that the pod informer has not shown yet, for controllers whose pods
//! are interchangeable (ReplicaSet, DaemonSet).

use std::{collections::HashMap, time::Instant};

use super::TIMEOUT;
use crate::controllers::pod_view::Pod;

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    creates: usize,
    deletes: usize,
    since: Instant,
}

/// Outstanding writes by owner key.
#[derive(Debug, Default)]
pub struct Expectations {
    owners: HashMap<String, Outstanding>,
}

impl Expectations {
    /// `owner` is about to create and delete this many pods.
    pub fn expect(&mut self, owner: &str, creates: usize, deletes: usize) {
        let since = Instant::now();
        self.owners.insert(
            owner.to_owned(),
            Outstanding {
                creates,
                deletes,
                since,
            },
        );
    }

    /// Writes of `owner` that are seen, or will never be (they failed).
    pub fn settle(&mut self, owner: &str, creates: usize, deletes: usize) {
        if let Some(outstanding) = self.owners.get_mut(owner) {
            outstanding.creates = outstanding.creates.saturating_sub(creates);
            outstanding.deletes = outstanding.deletes.saturating_sub(deletes);
        }
    }

    /// Whether every write `owner` made has been seen (or given up on).
    pub fn met(&self, owner: &str) -> bool {
        self.owners
            .get(owner)
            .is_none_or(|o| (o.creates == 0 && o.deletes == 0) || o.since.elapsed() > TIMEOUT)
    }

    /// The owner is gone.
    pub fn forget(&mut self, owner: &str) {
        self.owners.remove(owner);
    }

    /// The pods are listed afresh: what was outstanding is in the list.
    pub fn clear(&mut self) {
        self.owners.clear();
    }

    /// Settles what a pod's change shows of `owner`'s writes: a pod seen
    /// for the first time is a creation, one newly marked for deletion a
    /// deletion.
    pub fn observe_applied(&mut self, owner: Option<&str>, old: Option<&Pod>, pod: &Pod) {
        let Some(owner) = owner else { return };
        match old {
            None => self.settle(owner, 1, 0),
            Some(old)
                if pod.metadata.deletion_timestamp.is_some()
                    && old.metadata.deletion_timestamp.is_none() =>
            {
                self.settle(owner, 0, 1)
            }
            Some(_) => {}
        }
    }

    /// Settles a pod's removal, unless its deletion was counted already
    /// (when it was marked).
    pub fn observe_deleted(&mut self, owner: Option<&str>, old: Option<&Pod>) {
        let counted = old.is_some_and(|o| o.metadata.deletion_timestamp.is_some());
        if let Some(owner) = owner
            && !counted
        {
            self.settle(owner, 0, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(deleting: bool) -> Pod {
        let stamp = deleting.then_some("2026-01-01T00:00:00Z");
        serde_json::from_value(json!({ "metadata": {
            "name": "p", "namespace": "ns", "deletionTimestamp": stamp,
        } }))
        .unwrap()
    }

    #[test]
    fn an_owner_waits_until_each_write_is_seen_or_failed() {
        let mut expectations = Expectations::default();
        expectations.expect("ns/rs", 2, 1);
        assert!(!expectations.met("ns/rs"));
        assert!(expectations.met("ns/other"), "another owner is not held up");

        expectations.observe_applied(Some("ns/rs"), None, &pod(false));
        expectations.settle("ns/rs", 1, 0);
        assert!(!expectations.met("ns/rs"), "the deletion is outstanding");

        let (running, deleting) = (pod(false), pod(true));
        expectations.observe_applied(Some("ns/rs"), Some(&running), &running);
        assert!(!expectations.met("ns/rs"), "an update is no deletion");
        expectations.observe_applied(Some("ns/rs"), Some(&running), &deleting);
        assert!(expectations.met("ns/rs"));

        expectations.expect("ns/rs", 0, 1);
        expectations.observe_deleted(Some("ns/rs"), Some(&deleting));
        assert!(!expectations.met("ns/rs"), "counted when it was marked");
        expectations.observe_deleted(Some("ns/rs"), Some(&running));
        assert!(expectations.met("ns/rs"));

        expectations.expect("ns/rs", 5, 0);
        expectations.forget("ns/rs");
        assert!(expectations.met("ns/rs"));
    }
}
