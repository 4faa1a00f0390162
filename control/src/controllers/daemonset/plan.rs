//! What one pass over a DaemonSet decides, from the caches alone: the
//! nodes missing a pod, the pods that must go (failed or succeeded,
//! surplus on their node, on a node they no longer belong on, on a node
//! that is gone), the old pods a rolling update replaces now (or, when
//! it surges, the nodes that get a new pod beside the old one), and the
//! status counters. Nothing here writes, so every rule is tested as is.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{apimachinery::pkg::util::intstr::IntOrString, jiff::Timestamp};

use super::{super::pod_view::Pod, placement::Verdict};

/// The label that tells a pod's template revision (the template's hash).
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The hash of the revision `pod` was made from ("" when it has none).
pub fn hash_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

/// A DaemonSet as one pass sees it.
#[derive(Debug)]
pub struct View {
    /// Every node, with where it stands for this set.
    pub verdicts: BTreeMap<String, Verdict>,
    /// The set's pods by node. Pods being deleted occupy their node (no
    /// second pod is made beside one that is still stopping) but count
    /// for nothing else; finished pods being deleted are already gone.
    pub pods: BTreeMap<String, Vec<Arc<Pod>>>,
    /// The current template's hash.
    pub hash: String,
    pub min_ready: Duration,
    pub now: Timestamp,
}

/// What the pods on the nodes call for.
#[derive(Debug, Default)]
pub struct Actions<'a> {
    pub create_on: Vec<&'a str>,
    pub delete: Vec<&'a Pod>,
    /// Failed pods, by node: deleted (and so replaced) unless their node
    /// is in back-off.
    pub failed: Vec<(&'a str, &'a Pod)>,
    /// Pods on nodes that are gone: no agent will ever confirm their
    /// deletion, so they are deleted at once.
    pub stranded: Vec<&'a Pod>,
}

/// The status counters, as Kubernetes defines them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub desired: i32,
    pub current: i32,
    pub ready: i32,
    pub available: i32,
    pub misscheduled: i32,
    pub updated: i32,
}

fn deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Oldest first: the pod a node keeps and the one its status reads.
fn age(pod: &Pod) -> impl Ord + '_ {
    (
        pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        pod.metadata.name.as_deref(),
    )
}

/// maxUnavailable as a count of the nodes that should run a pod
/// (percentages rounded up); at least one, so that a rollout moves.
pub fn max_unavailable(value: Option<&IntOrString>, desired: i32) -> usize {
    let count = super::super::pod_template::scaled(value, desired, true);
    usize::try_from(count).unwrap_or(0).max(1)
}

/// maxSurge as a count of the nodes that should run a pod (percentages
/// rounded up); 0 when the set takes nodes down instead.
pub fn max_surge(value: Option<&IntOrString>, desired: i32) -> usize {
    let count = super::super::pod_template::scaled(value, desired, true);
    usize::try_from(count).unwrap_or(0)
}

impl View {
    fn live<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Pod> {
        self.pods
            .get(node)
            .into_iter()
            .flatten()
            .map(|p| p.as_ref())
            .filter(|p| !deleting(p))
    }

    pub fn is_updated(&self, pod: &Pod) -> bool {
        hash_of(pod) == self.hash
    }

    /// None when `pod` is not ready; otherwise how long until it has been
    /// ready for minReadySeconds (zero: it is available).
    pub fn available_in(&self, pod: &Pod) -> Option<Duration> {
        let since = pod.ready_since()?;
        let ready_for = Duration::try_from(self.now.duration_since(since)).unwrap_or_default();
        Some(self.min_ready.saturating_sub(ready_for))
    }

    fn is_available(&self, pod: &Pod) -> bool {
        self.available_in(pod).is_some_and(|left| left.is_zero())
    }

    /// A pod for every node that should run one and has none; the failed,
    /// succeeded and surplus pods of nodes where pods may stay (all but
    /// the oldest; when `surging`, all but the oldest new and the oldest
    /// old one, and that old one too once the new one is available or if
    /// it is not ready); every pod of the others.
    pub fn manage(&self, surging: bool) -> Actions<'_> {
        let mut actions = Actions::default();
        for (node, verdict) in &self.verdicts {
            let occupied = self.pods.get(node).is_some_and(|p| !p.is_empty());
            if verdict.should_run && !occupied {
                actions.create_on.push(node);
            } else if verdict.may_stay {
                let mut running = Vec::new();
                for pod in self.live(node) {
                    match pod.phase() {
                        "Failed" => actions.failed.push((node, pod)),
                        "Succeeded" => actions.delete.push(pod),
                        _ => running.push(pod),
                    }
                }
                running.sort_by_key(|p| age(p));
                if surging {
                    actions.delete.extend(self.surplus_beside(running));
                } else {
                    actions.delete.extend(running.into_iter().skip(1));
                }
            } else {
                actions.delete.extend(self.live(node));
            }
        }
        for (node, pods) in &self.pods {
            if !self.verdicts.contains_key(node) {
                actions.stranded.extend(pods.iter().map(|p| p.as_ref()));
            }
        }
        actions
    }

    /// Of a node's running pods, oldest first, those that go when a new
    /// pod may run beside an old one.
    fn surplus_beside<'a>(&self, running: Vec<&'a Pod>) -> Vec<&'a Pod> {
        let (mut new, mut old): (Vec<&Pod>, Vec<&Pod>) =
            running.into_iter().partition(|p| self.is_updated(p));
        let mut surplus: Vec<&Pod> = new.split_off(new.len().min(1));
        surplus.extend(old.split_off(old.len().min(1)));
        if let ([new], [old]) = (new.as_slice(), old.as_slice())
            && (old.ready_since().is_none() || self.is_available(new))
        {
            surplus.push(old);
        }
        surplus
    }

    /// RollingUpdate with surge, as Kubernetes does it: the nodes that get
    /// a new pod beside their old one now (every node whose old pod is
    /// unavailable, and up to `max_surge` others less those still waiting
    /// for theirs), and the old pods whose new pod is available. An old
    /// pod on a node it no longer suits goes once enough pods elsewhere
    /// are available.
    pub fn to_surge(&self, max_surge: usize) -> (Vec<&str>, Vec<&Pod>) {
        let (mut waiting, mut available) = (0, 0);
        let mut create_on = Vec::new();
        let mut candidates = Vec::new();
        let mut delete = Vec::new();
        let mut misplaced = Vec::new();
        for (node, verdict) in &self.verdicts {
            let (new, old): (Vec<&Pod>, Vec<&Pod>) =
                self.live(node).partition(|p| self.is_updated(p));
            match (new.as_slice(), old.as_slice()) {
                (_, []) => {
                    available += usize::from(new.first().is_some_and(|p| self.is_available(p)));
                }
                ([], [old]) => {
                    let up = self.is_available(old);
                    available += usize::from(up);
                    match (verdict.should_run, up) {
                        (false, false) => delete.push(*old),
                        (false, true) => misplaced.push(*old),
                        (true, false) => create_on.push(node.as_str()),
                        (true, true) => candidates.push(node.as_str()),
                    }
                }
                ([new], [old]) => {
                    available += usize::from(self.is_available(old));
                    if self.is_available(new) {
                        delete.push(*old);
                    } else {
                        waiting += 1;
                    }
                }
                // More than one of a kind: the pass that manages pods
                // deals with it first.
                _ => waiting += 1,
            }
        }
        let room = max_surge.saturating_sub(waiting).min(candidates.len());
        create_on.extend(candidates.into_iter().take(room));
        let desired = self.verdicts.values().filter(|v| v.should_run).count();
        delete.extend(
            misplaced
                .into_iter()
                .take(available.saturating_sub(desired)),
        );
        (create_on, delete)
    }

    /// RollingUpdate without surge: the old pods to delete now so that at
    /// most `max_unavailable` nodes lack an available new pod. Old pods
    /// that are unavailable anyway always go; available ones go while the
    /// budget lasts. A node whose pod is stopping, or that has none, or
    /// more than one, counts as unavailable: the pass that manages pods
    /// deals with it first.
    pub fn to_replace(&self, max_unavailable: usize) -> Vec<&Pod> {
        let mut unavailable = 0;
        let mut replace = Vec::new();
        let mut candidates = Vec::new();
        for node in self.pods.keys() {
            let (new, old): (Vec<&Pod>, Vec<&Pod>) =
                self.live(node).partition(|p| self.is_updated(p));
            match (new.as_slice(), old.as_slice()) {
                ([new], []) => {
                    if !self.is_available(new) {
                        unavailable += 1;
                    }
                }
                ([], [old]) if !self.is_available(old) => {
                    replace.push(*old);
                    unavailable += 1;
                }
                ([], [old]) => candidates.push(*old),
                _ => unavailable += 1,
            }
        }
        let budget = max_unavailable.saturating_sub(unavailable);
        replace.extend(candidates.into_iter().take(budget));
        replace
    }

    /// The counters, and when a ready pod becomes available (so they are
    /// read again then). A node's oldest live pod stands for it.
    pub fn counts(&self) -> (Counts, Option<Duration>) {
        let mut counts = Counts::default();
        let mut recheck: Option<Duration> = None;
        for (node, verdict) in &self.verdicts {
            let oldest = self.live(node).min_by_key(|p| age(p));
            if !verdict.should_run {
                counts.misscheduled += i32::from(oldest.is_some());
                continue;
            }
            counts.desired += 1;
            let Some(pod) = oldest else { continue };
            counts.current += 1;
            counts.updated += i32::from(self.is_updated(pod));
            match self.available_in(pod) {
                None => {}
                Some(left) if left.is_zero() => {
                    counts.ready += 1;
                    counts.available += 1;
                }
                Some(left) => {
                    counts.ready += 1;
                    recheck = Some(recheck.map_or(left, |r| r.min(left)));
                }
            }
        }
        (counts, recheck)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const NOW: &str = "2026-01-01T00:10:00Z";

    fn pod(name: &str, node: &str, hash: &str, extra: Value) -> Arc<Pod> {
        let mut object = json!({
            "metadata": {
                "name": name,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": { REVISION_LABEL: hash },
            },
            "spec": { "nodeName": node },
            "status": { "phase": "Running" },
        });
        json_patch::merge(&mut object, &extra);
        Arc::new(serde_json::from_value(object).unwrap())
    }

    fn ready(name: &str, node: &str, hash: &str) -> Arc<Pod> {
        pod(
            name,
            node,
            hash,
            json!({ "status": { "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:09:00Z" }] } }),
        )
    }

    fn snapshot(nodes: &[(&str, Verdict)], pods: Vec<Arc<Pod>>) -> View {
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in pods {
            let node = pod.spec.node_name.clone().unwrap();
            by_node.entry(node).or_default().push(pod);
        }
        View {
            verdicts: nodes.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            pods: by_node,
            hash: "new".to_owned(),
            min_ready: Duration::ZERO,
            now: NOW.parse().unwrap(),
        }
    }

    const RUN: Verdict = Verdict {
        should_run: true,
        may_stay: true,
    };
    const STAY: Verdict = Verdict {
        should_run: false,
        may_stay: true,
    };
    const NOWHERE: Verdict = Verdict {
        should_run: false,
        may_stay: false,
    };

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn one_pod_per_node_that_should_run_one() {
        let stopping = pod(
            "stopping",
            "n3",
            "new",
            json!({ "metadata": { "deletionTimestamp": NOW } }),
        );
        let younger = pod(
            "b-younger",
            "n2",
            "new",
            json!({ "metadata": { "creationTimestamp": "2026-01-01T00:05:00Z" } }),
        );
        let view = snapshot(
            &[
                ("n1", RUN),
                ("n2", RUN),
                ("n3", RUN),
                ("n4", STAY),
                ("n5", NOWHERE),
                ("n6", RUN),
            ],
            vec![
                pod("a", "n2", "new", json!({})),
                younger,
                pod("same-age-later-name", "n2", "new", json!({})),
                stopping,
                pod("tainted-stays", "n4", "new", json!({})),
                pod("misplaced", "n5", "new", json!({})),
                pod(
                    "failed",
                    "n6",
                    "new",
                    json!({ "status": { "phase": "Failed" } }),
                ),
                pod("gone-node", "n9", "new", json!({})),
            ],
        );
        let actions = view.manage(false);
        assert_eq!(actions.create_on, ["n1"], "n3 is taken by a stopping pod");
        assert_eq!(
            names(&actions.delete),
            ["same-age-later-name", "b-younger", "misplaced"],
            "the oldest stays"
        );
        assert_eq!(actions.failed.len(), 1);
        assert_eq!(actions.failed[0].0, "n6");
        assert_eq!(names(&actions.stranded), ["gone-node"]);
    }

    #[test]
    fn a_rolling_update_keeps_unavailable_nodes_within_bounds() {
        let not_ready_old = pod("not-ready-old", "n3", "old", json!({}));
        let view = snapshot(
            &[("n1", RUN), ("n2", RUN), ("n3", RUN), ("n4", RUN)],
            vec![
                ready("old-1", "n1", "old"),
                ready("old-2", "n2", "old"),
                not_ready_old,
                ready("new-4", "n4", "new"),
            ],
        );
        assert_eq!(
            names(&view.to_replace(1)),
            ["not-ready-old"],
            "an unavailable old pod goes whatever the budget, and uses it"
        );
        assert_eq!(names(&view.to_replace(2)), ["not-ready-old", "old-1"]);
        let starting = pod("new-1", "n1", "new", json!({}));
        let stopping = pod(
            "old-2",
            "n2",
            "old",
            json!({ "metadata": { "deletionTimestamp": NOW } }),
        );
        let busy = snapshot(
            &[("n1", RUN), ("n2", RUN), ("n3", RUN)],
            vec![starting, stopping, ready("old-3", "n3", "old")],
        );
        assert!(
            busy.to_replace(2).is_empty(),
            "a new pod not yet ready and a stopping pod use the budget"
        );
        assert_eq!(names(&busy.to_replace(3)), ["old-3"]);
    }

    #[test]
    fn a_surging_update_starts_new_pods_beside_old_ones_and_then_retires_them() {
        let starting = pod("new-2", "n2", "new", json!({}));
        let view = snapshot(
            &[
                ("n1", RUN),
                ("n2", RUN),
                ("n3", RUN),
                ("n4", RUN),
                ("n5", RUN),
                ("n6", STAY),
            ],
            vec![
                ready("old-1", "n1", "old"),
                ready("old-2", "n2", "old"),
                starting,
                ready("old-3", "n3", "old"),
                ready("old-4", "n4", "old"),
                ready("new-4", "n4", "new"),
                pod("old-5", "n5", "old", json!({})),
                ready("old-6", "n6", "old"),
            ],
        );
        let (create_on, delete) = view.to_surge(2);
        assert_eq!(
            create_on,
            ["n5", "n1"],
            "n5's old pod is unavailable anyway; n2 still waits, so one more"
        );
        assert_eq!(
            names(&delete),
            ["old-4"],
            "n4's new pod is available; n6's misplaced pod waits while n5 is down"
        );
        assert_eq!(view.to_surge(1).0, ["n5"], "n2's wait uses the surge");
        let moved = snapshot(
            &[("n1", RUN), ("n2", STAY)],
            vec![ready("new-1", "n1", "new"), ready("old-2", "n2", "old")],
        );
        assert_eq!(
            names(&moved.to_surge(1).1),
            ["old-2"],
            "a misplaced pod goes once the nodes that should run one are served"
        );

        // Managing a surging node keeps one new and one old pod, and the
        // old one only until the new one is available.
        let node = |pods: Vec<Arc<Pod>>| snapshot(&[("n1", RUN)], pods);
        let later = json!({ "metadata": { "creationTimestamp": "2026-01-01T00:05:00Z" } });
        let both = node(vec![
            ready("old", "n1", "old"),
            pod("new", "n1", "new", later.clone()),
        ]);
        assert!(both.manage(true).delete.is_empty());
        assert_eq!(names(&both.manage(false).delete), ["new"]);
        let done = node(vec![ready("old", "n1", "old"), ready("new", "n1", "new")]);
        assert_eq!(names(&done.manage(true).delete), ["old"]);
        let spare = node(vec![
            ready("old", "n1", "old"),
            pod("old-twin", "n1", "old", later),
            pod("new", "n1", "new", json!({})),
        ]);
        assert_eq!(names(&spare.manage(true).delete), ["old-twin"]);
    }

    #[test]
    fn max_surge_counts_nodes_rounding_up() {
        assert_eq!(max_surge(Some(&IntOrString::String("10%".into())), 11), 2);
        assert_eq!(max_surge(Some(&IntOrString::Int(0)), 10), 0);
        assert_eq!(max_surge(None, 10), 0);
    }

    #[test]
    fn max_unavailable_counts_nodes_rounding_up_and_never_zero() {
        assert_eq!(max_unavailable(Some(&IntOrString::Int(2)), 10), 2);
        assert_eq!(
            max_unavailable(Some(&IntOrString::String("25%".into())), 10),
            3
        );
        assert_eq!(max_unavailable(Some(&IntOrString::Int(0)), 10), 1);
        assert_eq!(max_unavailable(None, 10), 1);
    }

    #[test]
    fn counts_read_each_nodes_oldest_live_pod() {
        let mut view = snapshot(
            &[
                ("n1", RUN),
                ("n2", RUN),
                ("n3", RUN),
                ("n4", NOWHERE),
                ("n5", RUN),
            ],
            vec![
                ready("ready-new", "n1", "new"),
                pod("pending-old", "n2", "old", json!({})),
                pod(
                    "stopping",
                    "n3",
                    "new",
                    json!({ "metadata": { "deletionTimestamp": NOW } }),
                ),
                pod("misplaced", "n4", "new", json!({})),
                ready("ready-old", "n5", "old"),
            ],
        );
        let (counts, recheck) = view.counts();
        assert_eq!(
            counts,
            Counts {
                desired: 4,
                current: 3,
                ready: 2,
                available: 2,
                misscheduled: 1,
                updated: 1,
            }
        );
        assert_eq!(recheck, None);
        view.min_ready = Duration::from_secs(90);
        let (counts, recheck) = view.counts();
        assert_eq!((counts.ready, counts.available), (2, 0));
        assert_eq!(recheck, Some(Duration::from_secs(30)), "ready 60 s of 90");
    }
}
