//! Pods: defaults and validation of the pod spec, what may change after
//! creation, graceful deletion (an agent removes a bound pod once its
//! containers have stopped), and the READY/STATUS/RESTARTS columns.

use k8s_openapi::{
    api::core::v1::{Pod, PodSpec, PodStatus},
    apimachinery::pkg::apis::meta::v1::DeleteOptions,
    jiff,
};
use serde_json::{Value, json};

use super::pod_spec::{DefaultTolerations, admit_pod_spec, default_pod_spec, validate_pod_spec};
use crate::registry::{
    Deletion, FieldError, Kind, ResourceInfo, Subresource, status,
    table::{AGE, Column, NAME, age, or_none},
};

#[derive(Debug, Clone, Default)]
pub struct Pods {
    pub default_tolerations: DefaultTolerations,
}

const UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

impl Kind for Pods {
    type Object = Pod;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        categories: &["all"],
        namespaced: true,
        subresources: &[
            status("", "v1", "Pod"),
            Subresource {
                name: "binding",
                kind: "Binding",
                group: "",
                version: "v1",
                verbs: &["create"],
            },
            Subresource {
                name: "log",
                kind: "Pod",
                group: "",
                version: "v1",
                verbs: &["get"],
            },
        ],
    };

    fn default(&self, pod: &mut Pod) {
        if let Some(spec) = pod.spec.as_mut() {
            default_pod_spec(spec);
            admit_pod_spec(spec, self.default_tolerations);
        }
    }

    fn validate(&self, pod: &Pod) -> Vec<FieldError> {
        match &pod.spec {
            Some(spec) => validate_pod_spec(spec, "spec"),
            None => vec![FieldError::required("spec")],
        }
    }

    fn validate_update(&self, new: &Pod, old: &Pod) -> Vec<FieldError> {
        let (Some(new_spec), Some(old_spec)) = (&new.spec, &old.spec) else {
            return Vec::new();
        };
        if mutable_parts_cleared(new_spec) != mutable_parts_cleared(old_spec) {
            return vec![FieldError::forbidden("spec", UPDATE_FORBIDDEN)];
        }
        Vec::new()
    }

    fn initial_status(&self, pod: &mut Pod) {
        pod.status = Some(PodStatus {
            phase: Some("Pending".to_owned()),
            qos_class: pod.spec.as_ref().map(qos_class),
            ..Default::default()
        });
    }

    fn field(&self, pod: &Pod, field: &str) -> Option<String> {
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        Some(match field {
            "spec.nodeName" => spec.node_name.unwrap_or_default(),
            "spec.restartPolicy" => spec.restart_policy.unwrap_or_default(),
            "spec.schedulerName" => spec.scheduler_name.unwrap_or_default(),
            "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
            "spec.hostNetwork" => spec.host_network.unwrap_or(false).to_string(),
            "status.phase" => status.phase.unwrap_or_default(),
            "status.podIP" => status.pod_ip.unwrap_or_default(),
            "status.nominatedNodeName" => status.nominated_node_name.unwrap_or_default(),
            _ => return None,
        })
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            Column::new("Status", "string", "The aggregate status of the containers in this pod."),
            Column::new("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE,
            Column::new("IP", "string", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.").wide(),
            Column::new("Node", "string", "NodeName is a request to schedule this pod onto a specific node.").wide(),
            Column::new("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node.").wide(),
            Column::new("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness.").wide(),
        ]
    }

    fn cells(&self, pod: &Pod, now: jiff::Timestamp) -> Vec<Value> {
        let (ready, total, reason, restarts) = summary(pod, now);
        let status = pod.status.as_ref();
        let spec = pod.spec.as_ref();
        let gates = spec
            .and_then(|s| s.readiness_gates.as_ref())
            .filter(|g| !g.is_empty());
        vec![
            json!(pod.metadata.name),
            json!(format!("{ready}/{total}")),
            json!(reason),
            json!(restarts),
            age(pod.metadata.creation_timestamp.as_ref(), now),
            or_none(status.and_then(|s| s.pod_ip.as_deref())),
            or_none(spec.and_then(|s| s.node_name.as_deref())),
            or_none(status.and_then(|s| s.nominated_node_name.as_deref())),
            match gates {
                Some(gates) => json!(format!("0/{}", gates.len())),
                None => json!("<none>"),
            },
        ]
    }

    fn deletion(&self, pod: &Pod, options: &DeleteOptions) -> Deletion {
        let spec = pod.spec.as_ref();
        // Nothing runs a pod no node has taken: it can go at once.
        if spec
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty)
        {
            return Deletion::Now;
        }
        let grace = options
            .grace_period_seconds
            .or(spec.and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        if grace <= 0 {
            Deletion::Now
        } else {
            Deletion::Graceful(grace)
        }
    }
}

/// The spec with the fields an update may change taken out.
fn mutable_parts_cleared(spec: &PodSpec) -> PodSpec {
    let mut spec = spec.clone();
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container.image = None;
    }
    spec.active_deadline_seconds = None;
    spec.tolerations = None;
    spec.termination_grace_period_seconds = None;
    spec
}

/// Guaranteed when every container's requests equal its limits for cpu and
/// memory, BestEffort when none has any, Burstable otherwise.
fn qos_class(spec: &PodSpec) -> String {
    let mut any = false;
    let mut guaranteed = true;
    for container in &spec.containers {
        let resources = container.resources.clone().unwrap_or_default();
        let requests = resources.requests.unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        any |= !requests.is_empty() || !limits.is_empty();
        for name in ["cpu", "memory"] {
            let limit = limits.get(name);
            let request = requests.get(name).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
    .to_owned()
}

/// (ready, total, status, restarts) as `kubectl get pods` shows them.
fn summary(pod: &Pod, now: jiff::Timestamp) -> (usize, usize, String, String) {
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let total = spec.containers.len();
    let mut reason = status
        .reason
        .clone()
        .filter(|r| !r.is_empty())
        .or(status.phase.clone())
        .unwrap_or_default();
    let mut restarts = 0;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut note_restart = |state: &Option<k8s_openapi::api::core::v1::ContainerState>| {
        if let Some(finished) = state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())
            && last_restart.is_none_or(|last| finished.0 > last)
        {
            last_restart = Some(finished.0);
        }
    };

    let init_total = spec.init_containers.as_ref().map_or(0, Vec::len);
    let mut initializing = false;
    for (i, container) in status.init_container_statuses.iter().flatten().enumerate() {
        restarts += container.restart_count;
        if container.restart_count > 0 {
            note_restart(&container.last_state);
        }
        let state = container.state.clone().unwrap_or_default();
        if let Some(terminated) = &state.terminated {
            if terminated.exit_code == 0 {
                continue;
            }
            reason = match terminated.reason.as_deref().filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None if terminated.signal.unwrap_or(0) != 0 => {
                    format!("Init:Signal:{}", terminated.signal.unwrap_or(0))
                }
                None => format!("Init:ExitCode:{}", terminated.exit_code),
            };
        } else if let Some(r) = state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{init_total}");
        }
        initializing = true;
        break;
    }

    let mut ready = 0;
    if !initializing {
        restarts = 0;
        let mut running = false;
        for container in status.container_statuses.iter().flatten().rev() {
            restarts += container.restart_count;
            if container.restart_count > 0 {
                note_restart(&container.last_state);
            }
            let state = container.state.clone().unwrap_or_default();
            if let Some(r) = state
                .waiting
                .as_ref()
                .and_then(|w| w.reason.clone())
                .filter(|r| !r.is_empty())
            {
                reason = r;
            } else if let Some(terminated) = &state.terminated {
                reason = match terminated.reason.clone().filter(|r| !r.is_empty()) {
                    Some(r) => r,
                    None if terminated.signal.unwrap_or(0) != 0 => {
                        format!("Signal:{}", terminated.signal.unwrap_or(0))
                    }
                    None => format!("ExitCode:{}", terminated.exit_code),
                };
            } else if container.ready && state.running.is_some() {
                running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && running {
            let pod_ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        reason = if status.reason.as_deref() == Some("NodeLost") {
            "Unknown"
        } else {
            "Terminating"
        }
        .to_owned();
    }
    let restarts = match last_restart {
        Some(at) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            crate::registry::table::human_duration(now.duration_since(at))
        ),
        _ => restarts.to_string(),
    };
    (ready, total, reason, restarts)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateWaiting, ContainerStatus,
    };

    use super::*;

    fn pod(statuses: Vec<ContainerStatus>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "a".into(),
                        ..Default::default()
                    },
                    Container {
                        name: "b".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                container_statuses: Some(statuses),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn running(name: &str, restarts: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready: true,
            restart_count: restarts,
            state: Some(ContainerState {
                running: Some(Default::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn status_column_reports_waiting_reasons_and_readiness() {
        let now = jiff::Timestamp::now();
        assert_eq!(
            summary(&pod(vec![running("a", 0), running("b", 2)]), now),
            (2, 2, "Running".into(), "2".into())
        );
        let crashing = ContainerStatus {
            name: "b".into(),
            restart_count: 4,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            summary(&pod(vec![running("a", 0), crashing]), now),
            (1, 2, "CrashLoopBackOff".into(), "4".into())
        );
        let mut deleting = pod(vec![running("a", 0), running("b", 0)]);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert_eq!(summary(&deleting, now).2, "Terminating");
    }

    #[test]
    fn only_images_and_a_few_fields_may_change() {
        let old = pod(Vec::new());
        let mut new = old.clone();
        new.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        assert!(
            <Pods as Default>::default()
                .validate_update(&new, &old)
                .is_empty()
        );
        new.spec.as_mut().unwrap().containers[0].name = "renamed".into();
        assert_eq!(
            <Pods as Default>::default().validate_update(&new, &old)[0].field,
            "spec"
        );
    }
}
