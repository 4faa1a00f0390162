//! A Deployment's status as its sets make it: the counters, and the
//! Available and Progressing conditions with Kubernetes' reasons,
//! including ProgressDeadlineExceeded for a rollout stalled longer than
//! progressDeadlineSeconds. Pure: the time is given.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

use super::plan::{status_of, surge_and_unavailable};

/// The status `deployment` should show, and when to look again (for a
/// progress deadline that may pass with nothing else happening).
pub fn next(
    deployment: &Deployment,
    new_set: Option<&ReplicaSet>,
    sets: &[Arc<ReplicaSet>],
    now: Timestamp,
) -> (DeploymentStatus, Option<Duration>) {
    let spec = deployment.spec.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let (mut total, mut ready, mut available) = (0, 0, 0);
    for set in sets {
        let (r, rd, av) = status_of(set);
        total += r;
        ready += rd;
        available += av;
    }
    let updated = new_set.map_or(0, |s| status_of(s).0);
    let (_, unavailable) = surge_and_unavailable(deployment);
    let old = deployment.status.clone().unwrap_or_default();
    let complete = updated == desired && total == desired && available == desired;
    let new_name = new_set
        .and_then(|s| s.metadata.name.clone())
        .unwrap_or_default();
    let previous = old.conditions.unwrap_or_default();
    let find = |kind: &str| previous.iter().find(|c| c.type_ == kind).cloned();

    let is_available = desired == 0 || available >= desired - unavailable;
    let available_condition = if is_available {
        condition(
            find("Available"),
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_owned(),
            now,
            false,
        )
    } else {
        condition(
            find("Available"),
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_owned(),
            now,
            false,
        )
    };
    let counters_moved = (
        old.replicas.unwrap_or(0),
        old.updated_replicas.unwrap_or(0),
        old.ready_replicas.unwrap_or(0),
        old.available_replicas.unwrap_or(0),
    ) != (total, updated, ready, available);
    let deadline = Duration::from_secs(
        u64::try_from(spec.progress_deadline_seconds.unwrap_or(600)).unwrap_or(600),
    );
    let progressing_before = find("Progressing");
    let last_progress = progressing_before
        .as_ref()
        .and_then(|c| c.last_update_time.as_ref().map(|t| t.0));
    let mut recheck = None;
    let progressing = if spec.paused.unwrap_or(false) {
        condition(
            progressing_before,
            "Progressing",
            false,
            "DeploymentPaused",
            "Deployment is paused".to_owned(),
            now,
            false,
        )
    } else if complete {
        condition(
            progressing_before,
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            now,
            counters_moved,
        )
    } else {
        let stalled_for = last_progress.map(|t| now.duration_since(t).unsigned_abs());
        let already_exceeded = progressing_before
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
        if !counters_moved && (already_exceeded || stalled_for.is_some_and(|s| s >= deadline)) {
            condition(
                progressing_before,
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                now,
                false,
            )
        } else {
            recheck = Some(
                deadline.saturating_sub(stalled_for.unwrap_or_default())
                    + Duration::from_millis(100),
            );
            let (reason, message) = if progressing_before.is_none() {
                (
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{new_name}\""),
                )
            } else {
                (
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{new_name}\" is progressing."),
                )
            };
            condition(
                progressing_before,
                "Progressing",
                true,
                reason,
                message,
                now,
                counters_moved || last_progress.is_none(),
            )
        }
    };
    let status = DeploymentStatus {
        observed_generation: Some(deployment.metadata.generation.unwrap_or(0)),
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        conditions: Some(vec![available_condition, progressing]),
        ..DeploymentStatus::default()
    };
    (status, recheck)
}

/// Whether `after` says anything `before` does not: a counter, or a
/// condition's status, reason or update time (a message alone is not
/// worth a write).
pub fn differs(before: &DeploymentStatus, after: &DeploymentStatus) -> bool {
    let counters = |s: &DeploymentStatus| {
        [
            s.observed_generation.unwrap_or(0),
            s.replicas.unwrap_or(0).into(),
            s.updated_replicas.unwrap_or(0).into(),
            s.ready_replicas.unwrap_or(0).into(),
            s.available_replicas.unwrap_or(0).into(),
            s.unavailable_replicas.unwrap_or(0).into(),
        ]
    };
    let conditions = |s: &DeploymentStatus| -> Vec<(String, String, Option<String>, Option<Time>)> {
        s.conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.last_update_time.clone(),
                )
            })
            .collect()
    };
    counters(before) != counters(after) || conditions(before) != conditions(after)
}

/// A condition; its transition time moves only when its status does, its
/// update time when `touched` or the status or reason changes.
fn condition(
    previous: Option<DeploymentCondition>,
    kind: &str,
    status: bool,
    reason: &str,
    message: String,
    now: Timestamp,
    touched: bool,
) -> DeploymentCondition {
    let status = if status { "True" } else { "False" };
    let same_status = previous.as_ref().is_some_and(|p| p.status == status);
    let same_reason = previous
        .as_ref()
        .is_some_and(|p| p.reason.as_deref() == Some(reason));
    let transition = previous
        .as_ref()
        .filter(|_| same_status)
        .and_then(|p| p.last_transition_time.clone())
        .unwrap_or(Time(now));
    let update = previous
        .as_ref()
        .filter(|_| same_status && same_reason && !touched)
        .and_then(|p| p.last_update_time.clone())
        .unwrap_or(Time(now));
    DeploymentCondition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: Some(transition),
        last_update_time: Some(update),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "ns", "generation": 2 },
            "spec": {
                "replicas": 2,
                "progressDeadlineSeconds": 60,
                "selector": { "matchLabels": { "app": "web" } },
                "template": { "spec": { "containers": [] } },
            },
            "status": status,
        }))
        .unwrap()
    }

    fn set(replicas: i32, available: i32) -> Arc<ReplicaSet> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": "web-abc" },
                "spec": { "replicas": replicas, "selector": {} },
                "status": { "replicas": replicas, "readyReplicas": available, "availableReplicas": available },
            }))
            .unwrap(),
        )
    }

    fn reason<'a>(status: &'a DeploymentStatus, kind: &str) -> &'a str {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .and_then(|c| c.reason.as_deref())
            .unwrap_or_default()
    }

    #[test]
    fn a_complete_rollout_is_available_and_progressed() {
        let sets = [set(2, 2)];
        let (status, recheck) = next(
            &deployment(json!({})),
            Some(&sets[0]),
            &sets,
            Timestamp::now(),
        );
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(
            (status.updated_replicas, status.unavailable_replicas),
            (Some(2), Some(0))
        );
        assert_eq!(reason(&status, "Available"), "MinimumReplicasAvailable");
        assert_eq!(reason(&status, "Progressing"), "NewReplicaSetAvailable");
        assert_eq!(recheck, None);
        assert!(differs(&DeploymentStatus::default(), &status));
        assert!(!differs(&status, &status.clone()));
    }

    #[test]
    fn a_rollout_stalled_past_its_deadline_is_marked_and_stays_marked() {
        let start = Timestamp::now();
        let sets = [set(2, 0)];
        let stalled = deployment(json!({}));
        let (first, recheck) = next(&stalled, Some(&sets[0]), &sets, start);
        assert_eq!(reason(&first, "Progressing"), "NewReplicaSetCreated");
        assert!(recheck.is_some_and(|r| r > Duration::from_secs(59)));

        let later = start + Duration::from_secs(61);
        let (second, _) = next(
            &deployment(serde_json::to_value(&first).unwrap()),
            Some(&sets[0]),
            &sets,
            later,
        );
        assert_eq!(reason(&second, "Progressing"), "ProgressDeadlineExceeded");
        assert_eq!(reason(&second, "Available"), "MinimumReplicasUnavailable");
    }
}
