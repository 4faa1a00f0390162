//! Expectations by pod: each write to a pod by name that the pod
//! informer has not shown yet, for controllers whose pods each have an
//! identity (StatefulSet), which also relabel pods in place.

use std::{collections::HashMap, time::Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::TIMEOUT;
use crate::controllers::pod_view::Pod;

/// What a written pod looks like once the informer has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// At this resourceVersion or later.
    Seen(u64),
    /// The pod of this uid gone.
    Gone(String),
}

impl Expected {
    /// The object the API answered a write with (its metadata), or a
    /// later version.
    pub fn seen(meta: &ObjectMeta) -> Self {
        Self::Seen(
            meta.resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        )
    }
}

#[derive(Debug)]
struct Pending {
    set: String,
    expected: Expected,
    at: Instant,
}

/// Unseen writes by pod key, each for the set key that made it.
#[derive(Debug, Default)]
pub struct PodExpectations {
    pending: HashMap<String, Pending>,
}

impl PodExpectations {
    pub fn expect(&mut self, set: &str, pod: String, expected: Expected) {
        let at = Instant::now();
        let set = set.to_owned();
        self.pending.insert(pod, Pending { set, expected, at });
    }

    /// Settles the write to `pod` if this event (a change, or its
    /// deletion) shows it.
    pub fn observe(&mut self, pod: &Pod, deleted: bool) {
        let key = pod.key();
        let seen = self.pending.get(&key).is_some_and(|p| match &p.expected {
            Expected::Seen(version) => {
                let at: u64 = pod
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                at >= *version
            }
            Expected::Gone(uid) => deleted || pod.metadata.uid.as_deref() != Some(uid.as_str()),
        });
        if seen {
            self.pending.remove(&key);
        }
    }

    /// Whether every write `set` made has been seen (or given up on).
    pub fn met(&mut self, set: &str) -> bool {
        self.pending.retain(|_, p| p.at.elapsed() < TIMEOUT);
        !self.pending.values().any(|p| p.set == set)
    }

    /// Drops the writes of the sets `keep` says no to.
    pub fn retain_sets(&mut self, keep: impl Fn(&str) -> bool) {
        self.pending.retain(|_, p| keep(&p.set));
    }

    /// Drops everything: the pods are listed afresh.
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(uid: &str, version: &str) -> Pod {
        serde_json::from_value(json!({ "metadata": {
            "name": "web-0", "namespace": "ns", "uid": uid, "resourceVersion": version,
        } }))
        .unwrap()
    }

    #[test]
    fn a_write_is_met_by_its_version_or_a_later_one_not_an_earlier_one() {
        let mut expectations = PodExpectations::default();
        let created = ObjectMeta {
            resource_version: Some("10".into()),
            ..ObjectMeta::default()
        };
        expectations.expect("ns/web", "ns/web-0".into(), Expected::seen(&created));
        assert!(!expectations.met("ns/web"));
        assert!(expectations.met("ns/other"), "another set is not held up");
        expectations.observe(&pod("u", "9"), false);
        assert!(
            !expectations.met("ns/web"),
            "a stale event is not the write"
        );
        expectations.observe(&pod("u", "11"), false);
        assert!(expectations.met("ns/web"));
    }

    #[test]
    fn a_deletion_is_met_once_that_pod_is_gone_or_replaced() {
        let mut expectations = PodExpectations::default();
        let gone = || Expected::Gone("u-1".into());
        expectations.expect("ns/web", "ns/web-0".into(), gone());
        expectations.observe(&pod("u-1", "12"), false);
        assert!(!expectations.met("ns/web"), "still there");
        expectations.observe(&pod("u-1", "13"), true);
        assert!(expectations.met("ns/web"));
        expectations.expect("ns/web", "ns/web-0".into(), gone());
        expectations.observe(&pod("u-2", "14"), false);
        assert!(expectations.met("ns/web"), "made again since");
        expectations.expect("ns/web", "ns/web-0".into(), gone());
        expectations.retain_sets(|set| set != "ns/web");
        assert!(expectations.met("ns/web"), "the set's writes dropped");
    }
}
