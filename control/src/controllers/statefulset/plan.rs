//! What one pass over a StatefulSet does, decided from its member pods
//! alone as Kubernetes' StatefulSet controller decides it, and the status
//! that follows from them. Pure, so the ordering rules are tested without
//! an API:
//! - every ordinal in [start, start + replicas) gets a pod. OrderedReady
//!   creates one only when every lower one is Running, Ready and
//!   available, and waits while one is being deleted; Parallel creates
//!   them all at once;
//! - a Failed or Succeeded pod is deleted, and made again under its name
//!   once it is gone;
//! - pods beyond the range go highest ordinal first, one at a time, each
//!   once the previous one is gone and every pod below it is healthy
//!   (OrderedReady), or all at once (Parallel);
//! - RollingUpdate deletes the highest pod at or above the partition whose
//!   revision is not the update revision, one at a time, each once the
//!   pods above it are available again; OnDelete leaves that to the user.

use std::{cmp::Reverse, sync::Arc, time::Duration};

use k8s_openapi::{api::apps::v1::StatefulSetSpec, jiff::Timestamp};

use super::identity;
use crate::controllers::pod_view::Pod;

/// How a set's spec says its pods are managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub replicas: i32,
    /// The first ordinal (`spec.ordinals.start`).
    pub start: i32,
    /// OrderedReady, rather than Parallel.
    pub ordered: bool,
    /// RollingUpdate's partition; None for OnDelete.
    pub partition: Option<i32>,
    pub min_ready: Duration,
}

impl Rules {
    pub fn of(spec: &StatefulSetSpec) -> Self {
        let strategy = spec.update_strategy.as_ref();
        let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
        let partition = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0)
            .max(0);
        let start = spec
            .ordinals
            .as_ref()
            .and_then(|o| o.start)
            .unwrap_or(0)
            .max(0);
        Self {
            // Ordinals stay within i32, whatever the spec asks.
            replicas: spec.replicas.unwrap_or(1).clamp(0, i32::MAX - start),
            start,
            ordered: spec.pod_management_policy.as_deref() != Some("Parallel"),
            partition: (!on_delete).then_some(partition),
            min_ready: Duration::from_secs(
                u64::try_from(spec.min_ready_seconds.unwrap_or(0)).unwrap_or(0),
            ),
        }
    }
}

/// A pod the set owns, and its ordinal.
#[derive(Debug, Clone)]
pub struct Member {
    pub ordinal: i32,
    pub pod: Arc<Pod>,
}

/// Whose template a new pod is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// The current revision: ordinals below the partition keep it.
    Current,
    Update,
}

#[derive(Debug)]
pub enum Action<'a> {
    Create {
        ordinal: i32,
        revision: Revision,
    },
    Delete(&'a Member),
    /// Give an adopted pod the labels that name it.
    Relabel(&'a Member),
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// How long the pod has been Running and Ready, if it is.
fn ready_for(pod: &Pod, now: Timestamp) -> Option<Duration> {
    if pod.phase() != "Running" {
        return None;
    }
    let since = pod.ready_since()?;
    Some(Duration::try_from(now.duration_since(since)).unwrap_or_default())
}

fn available(pod: &Pod, min_ready: Duration, now: Timestamp) -> bool {
    ready_for(pod, now).is_some_and(|ready| ready >= min_ready)
}

/// The writes one pass makes, in order, given the set's members (at most
/// one per ordinal: their names are their ordinals).
pub fn plan<'a>(
    rules: &Rules,
    members: &'a [Member],
    update_revision: &str,
    now: Timestamp,
) -> Vec<Action<'a>> {
    let healthy = |m: &Member| !terminating(&m.pod) && available(&m.pod, rules.min_ready, now);
    let replicas = usize::try_from(rules.replicas).unwrap_or(0);
    let mut slots: Vec<Option<&Member>> = vec![None; replicas];
    let mut condemned: Vec<&Member> = Vec::new();
    for member in members {
        match usize::try_from(member.ordinal - rules.start) {
            Ok(index) if index < replicas => slots[index] = Some(member),
            _ => condemned.push(member),
        }
    }
    condemned.sort_by_key(|m| Reverse(m.ordinal));
    let mut actions = Vec::new();

    for (index, (slot, ordinal)) in slots.iter().zip(rules.start..).enumerate() {
        let Some(member) = slot else {
            let below_partition = rules
                .partition
                .is_some_and(|p| usize::try_from(p).is_ok_and(|p| index < p));
            let revision = if below_partition {
                Revision::Current
            } else {
                Revision::Update
            };
            actions.push(Action::Create { ordinal, revision });
            if rules.ordered {
                return actions;
            }
            continue;
        };
        let pod = &member.pod;
        if matches!(pod.phase(), "Failed" | "Succeeded") {
            if !terminating(pod) {
                actions.push(Action::Delete(member));
            }
            if rules.ordered {
                return actions;
            }
            continue;
        }
        if rules.ordered && !healthy(member) {
            return actions;
        }
        if !terminating(pod) && !identity::labels_match(pod, member.ordinal) {
            actions.push(Action::Relabel(member));
        }
    }

    for (position, member) in condemned.iter().enumerate() {
        if terminating(&member.pod) {
            if rules.ordered {
                return actions;
            }
            continue;
        }
        // OrderedReady gets here only with every replica healthy; the pod
        // itself may be unhealthy, but not one below it.
        if rules.ordered && !condemned[position + 1..].iter().all(|m| healthy(m)) {
            return actions;
        }
        actions.push(Action::Delete(member));
        if rules.ordered {
            return actions;
        }
    }

    let Some(partition) = rules.partition else {
        return actions;
    };
    let lowest = usize::try_from(partition).unwrap_or(0);
    for slot in slots.iter().skip(lowest).rev() {
        // A pod about to be made is not available yet.
        let Some(member) = slot else {
            return actions;
        };
        let deleting = terminating(&member.pod)
            || actions
                .iter()
                .any(|a| matches!(a, Action::Delete(d) if d.ordinal == member.ordinal));
        if identity::revision_of(&member.pod) != update_revision && !deleting {
            actions.push(Action::Delete(member));
            return actions;
        }
        if !healthy(member) {
            return actions;
        }
    }
    actions
}

/// The counters of a set's status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
    pub current: i32,
    pub updated: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub counts: Counts,
    pub current_revision: String,
    /// When a ready pod will have been ready for minReadySeconds.
    pub recheck: Option<Duration>,
}

/// The status `members` make: every pod counts as a replica, pods being
/// deleted count for no revision, and a rolling update whose pods are
/// all updated and ready makes the update revision the current one.
pub fn status(
    rules: &Rules,
    members: &[Member],
    current_revision: &str,
    update_revision: &str,
    now: Timestamp,
) -> Status {
    let mut counts = Counts::default();
    let mut recheck: Option<Duration> = None;
    for Member { pod, .. } in members {
        counts.replicas += 1;
        if let Some(ready) = ready_for(pod, now) {
            counts.ready += 1;
            if ready >= rules.min_ready {
                counts.available += 1;
            } else {
                let left = rules.min_ready - ready;
                recheck = Some(recheck.map_or(left, |r| r.min(left)));
            }
        }
        if !terminating(pod) {
            let revision = identity::revision_of(pod);
            counts.current += i32::from(revision == current_revision);
            counts.updated += i32::from(revision == update_revision);
        }
    }
    let mut current_revision = current_revision.to_owned();
    if rules.partition.is_some()
        && counts.updated == counts.replicas
        && counts.ready == counts.replicas
    {
        counts.current = counts.updated;
        update_revision.clone_into(&mut current_revision);
    }
    Status {
        counts,
        current_revision,
        recheck,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const OLD: &str = "web-old";
    const NEW: &str = "web-new";

    fn rules(replicas: i32) -> Rules {
        Rules {
            replicas,
            start: 0,
            ordered: true,
            partition: Some(0),
            min_ready: Duration::ZERO,
        }
    }

    /// A member at `ordinal` and `revision`: "pending", "ready",
    /// "failed" or "deleting" (ready, with a deletionTimestamp).
    fn member(ordinal: i32, revision: &str, state: &str) -> Member {
        let name = format!("web-{ordinal}");
        let mut pod = json!({
            "metadata": { "name": name, "labels": {
                identity::POD_NAME: name, identity::POD_INDEX: ordinal.to_string(),
                identity::REVISION: revision,
            } },
            "status": { "phase": "Pending" },
        });
        match state {
            "pending" => {}
            "failed" => pod["status"]["phase"] = json!("Failed"),
            "ready" | "deleting" => {
                pod["status"] = json!({ "phase": "Running", "conditions": [
                    { "type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z" },
                ] });
                if state == "deleting" {
                    pod["metadata"]["deletionTimestamp"] = json!("2026-01-02T00:00:00Z");
                }
            }
            other => panic!("no state {other}"),
        }
        Member {
            ordinal,
            pod: Arc::new(serde_json::from_value(pod).unwrap()),
        }
    }

    fn now() -> Timestamp {
        "2026-01-01T00:01:00Z".parse().unwrap()
    }

    /// The plan as words: "create 1 update", "delete 2", "relabel 0".
    fn planned(rules: &Rules, members: &[Member]) -> Vec<String> {
        plan(rules, members, NEW, now())
            .iter()
            .map(|action| match action {
                Action::Create { ordinal, revision } => {
                    format!("create {ordinal} {revision:?}").to_lowercase()
                }
                Action::Delete(m) => format!("delete {}", m.ordinal),
                Action::Relabel(m) => format!("relabel {}", m.ordinal),
            })
            .collect()
    }

    #[test]
    fn ordered_ready_creates_the_next_ordinal_once_the_lower_ones_are_ready() {
        let rules = rules(3);
        assert_eq!(planned(&rules, &[]), ["create 0 update"]);
        let pending = [member(0, NEW, "pending")];
        assert!(planned(&rules, &pending).is_empty(), "web-0 is not ready");
        let ready = [member(0, NEW, "ready")];
        assert_eq!(planned(&rules, &ready), ["create 1 update"]);
        let gap = [member(0, NEW, "ready"), member(2, NEW, "ready")];
        assert_eq!(planned(&rules, &gap), ["create 1 update"], "the gap first");
        let deleting = [member(0, NEW, "deleting")];
        assert!(planned(&rules, &deleting).is_empty(), "waits for it to go");
    }

    #[test]
    fn parallel_creates_and_deletes_everything_at_once() {
        let rules = Rules {
            ordered: false,
            ..rules(3)
        };
        assert_eq!(
            planned(&rules, &[member(1, NEW, "pending")]),
            ["create 0 update", "create 2 update"]
        );
        let surplus = [
            member(0, NEW, "pending"),
            member(3, NEW, "pending"),
            member(4, NEW, "pending"),
        ];
        assert_eq!(
            planned(&rules, &surplus),
            ["create 1 update", "create 2 update", "delete 4", "delete 3"]
        );
    }

    #[test]
    fn ordered_scale_down_goes_from_the_top_one_at_a_time_when_all_are_healthy() {
        let rules = rules(1);
        let all_ready = [
            member(0, NEW, "ready"),
            member(1, NEW, "ready"),
            member(2, NEW, "ready"),
        ];
        assert_eq!(planned(&rules, &all_ready), ["delete 2"]);
        let top_going = [
            member(0, NEW, "ready"),
            member(1, NEW, "ready"),
            member(2, NEW, "deleting"),
        ];
        assert!(planned(&rules, &top_going).is_empty(), "web-1 waits");
        let unready_below = [
            member(0, NEW, "ready"),
            member(1, NEW, "pending"),
            member(2, NEW, "ready"),
        ];
        assert!(
            planned(&rules, &unready_below).is_empty(),
            "blocked by web-1"
        );
        let unready_top = [
            member(0, NEW, "ready"),
            member(1, NEW, "ready"),
            member(2, NEW, "pending"),
        ];
        assert_eq!(
            planned(&rules, &unready_top),
            ["delete 2"],
            "an unhealthy pod may go if the ones below are healthy"
        );
        let replica_unready = [member(0, NEW, "pending"), member(1, NEW, "ready")];
        assert!(planned(&rules, &replica_unready).is_empty());
    }

    #[test]
    fn a_failed_pod_is_deleted_and_made_again_once_gone() {
        let rules = rules(2);
        let failed = [member(0, NEW, "failed"), member(1, NEW, "ready")];
        assert_eq!(planned(&rules, &failed), ["delete 0"]);
        assert_eq!(planned(&rules, &failed[1..]), ["create 0 update"]);
    }

    #[test]
    fn a_rolling_update_goes_from_the_top_down_to_the_partition() {
        let partitioned = Rules {
            partition: Some(1),
            ..rules(3)
        };
        let old = [
            member(0, OLD, "ready"),
            member(1, OLD, "ready"),
            member(2, OLD, "ready"),
        ];
        assert_eq!(planned(&partitioned, &old), ["delete 2"]);
        assert_eq!(
            planned(&partitioned, &old[..2]),
            ["create 2 update"],
            "made again at the update revision"
        );
        let top_unready = [
            member(0, OLD, "ready"),
            member(1, OLD, "ready"),
            member(2, NEW, "pending"),
        ];
        assert!(planned(&partitioned, &top_unready).is_empty());
        let top_done = [
            member(0, OLD, "ready"),
            member(1, OLD, "ready"),
            member(2, NEW, "ready"),
        ];
        assert_eq!(planned(&partitioned, &top_done), ["delete 1"]);
        let down_to_partition = [
            member(0, OLD, "ready"),
            member(1, NEW, "ready"),
            member(2, NEW, "ready"),
        ];
        assert!(planned(&partitioned, &down_to_partition).is_empty());
        assert_eq!(
            planned(&partitioned, &down_to_partition[1..]),
            ["create 0 current"],
            "below the partition, the current revision"
        );
        let on_delete = Rules {
            partition: None,
            ..rules(3)
        };
        assert!(planned(&on_delete, &old).is_empty());
        assert_eq!(planned(&on_delete, &old[1..]), ["create 0 update"]);
    }

    #[test]
    fn an_adopted_pod_without_its_labels_is_relabelled() {
        let mut bare = member(0, NEW, "ready");
        let labels = Arc::make_mut(&mut bare.pod)
            .metadata
            .labels
            .as_mut()
            .unwrap();
        labels.remove(identity::POD_NAME);
        labels.remove(identity::POD_INDEX);
        assert_eq!(planned(&rules(1), &[bare]), ["relabel 0"]);
        let unrevisioned = member(0, "", "ready");
        assert_eq!(
            planned(&rules(1), &[unrevisioned]),
            ["delete 0"],
            "a pod of no known revision is rolled"
        );
    }

    #[test]
    fn rules_follow_the_spec_and_keep_ordinals_within_range() {
        let spec: StatefulSetSpec = serde_json::from_value(json!({
            "replicas": 5, "podManagementPolicy": "Parallel", "minReadySeconds": 3,
            "ordinals": { "start": i32::MAX - 2 },
            "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "partition": 2 } },
            "selector": {}, "template": {},
        }))
        .unwrap();
        let rules = Rules::of(&spec);
        assert_eq!(
            rules,
            Rules {
                replicas: 2,
                start: i32::MAX - 2,
                ordered: false,
                partition: Some(2),
                min_ready: Duration::from_secs(3),
            }
        );
        assert_eq!(planned(&rules, &[]).len(), 2);
        let on_delete: StatefulSetSpec = serde_json::from_value(json!({
            "updateStrategy": { "type": "OnDelete" }, "selector": {}, "template": {},
        }))
        .unwrap();
        let rules = Rules::of(&on_delete);
        assert!(rules.ordered);
        assert_eq!((rules.replicas, rules.partition), (1, None));
    }

    #[test]
    fn ordinals_start_where_the_spec_says() {
        let rules = Rules {
            start: 5,
            ..rules(2)
        };
        assert_eq!(planned(&rules, &[]), ["create 5 update"]);
        let below = [
            member(2, NEW, "ready"),
            member(5, NEW, "ready"),
            member(6, NEW, "ready"),
        ];
        assert_eq!(planned(&rules, &below), ["delete 2"]);
    }

    #[test]
    fn status_counts_revisions_and_completes_a_rollout() {
        let rules = rules(3);
        let mid = [
            member(0, OLD, "ready"),
            member(1, NEW, "pending"),
            member(2, NEW, "deleting"),
        ];
        let status = status(&rules, &mid, OLD, NEW, now());
        assert_eq!(
            status.counts,
            Counts {
                replicas: 3,
                ready: 2,
                available: 2,
                current: 1,
                updated: 1
            }
        );
        assert_eq!(status.current_revision, OLD);
        let done = [
            member(0, NEW, "ready"),
            member(1, NEW, "ready"),
            member(2, NEW, "ready"),
        ];
        let finished = super::status(&rules, &done, OLD, NEW, now());
        assert_eq!(finished.current_revision, NEW);
        assert_eq!(finished.counts.current, 3);
        assert_eq!(finished.counts.updated, 3);
    }

    #[test]
    fn a_pod_ready_for_less_than_min_ready_seconds_is_not_available_yet() {
        let rules = Rules {
            min_ready: Duration::from_secs(90),
            ..rules(2)
        };
        let ready = [member(0, NEW, "ready")];
        assert!(planned(&rules, &ready).is_empty(), "web-0 is not available");
        let status = status(&rules, &ready, NEW, NEW, now());
        assert_eq!(status.counts.ready, 1);
        assert_eq!(status.counts.available, 0);
        assert_eq!(status.recheck, Some(Duration::from_secs(30)));
    }
}
