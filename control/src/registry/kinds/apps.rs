//! apps/v1 workloads: Deployments, ReplicaSets, StatefulSets, DaemonSets.
//! They share a pod template, a selector that must match it and may not
//! change, a spec generation, and the CONTAINERS/IMAGES/SELECTOR columns.

use k8s_openapi::{
    api::apps::v1::{
        DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet,
        RollingUpdateDaemonSet, RollingUpdateDeployment, RollingUpdateStatefulSetStrategy,
        StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetUpdateStrategy,
    },
    api::core::v1::PodTemplateSpec,
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
    jiff,
};
use serde_json::{Value, json};

use super::pod_spec::{default_pod_spec, validate_pod_spec};
use crate::{
    labels::Selector,
    registry::{
        FieldError, Kind, ResourceInfo, SCALE, status,
        table::{AGE, Column, NAME, age, joined_or_none},
        validation::{BadValue, labels},
    },
};

fn default_template(template: &mut PodTemplateSpec) {
    if let Some(spec) = template.spec.as_mut() {
        default_pod_spec(spec);
    }
}

/// What every workload's selector, template and replica count must satisfy.
fn validate_workload(
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    replicas: Option<i32>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match selector {
        None => errors.push(FieldError::required("spec.selector")),
        Some(selector) => match Selector::from_label_selector(selector) {
            Err(why) => errors.push(FieldError::invalid(
                "spec.selector",
                format!("{selector:?}"),
                why,
            )),
            Ok(parsed) if parsed.is_empty() => errors.push(FieldError::invalid(
                "spec.selector",
                "{}",
                "empty selector is invalid for deployment",
            )),
            Ok(parsed) => {
                let template_labels = template
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref());
                if !parsed.matches_opt(template_labels) {
                    errors.push(FieldError::invalid(
                        "spec.template.metadata.labels",
                        BadValue::raw(go_map(template_labels)),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        },
    }
    if let Some(replicas) = replicas
        && replicas < 0
    {
        errors.push(FieldError::invalid(
            "spec.replicas",
            replicas,
            "must be greater than or equal to 0",
        ));
    }
    match template {
        None => errors.push(FieldError::required("spec.template")),
        Some(template) => {
            errors.extend(labels(
                template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
                "spec.template.metadata.labels",
            ));
            match &template.spec {
                None => errors.push(FieldError::required("spec.template.spec")),
                Some(spec) => {
                    errors.extend(validate_pod_spec(spec, "spec.template.spec"));
                    if let Some(policy) = spec.restart_policy.as_deref()
                        && policy != "Always"
                    {
                        errors.push(FieldError::not_supported(
                            "spec.template.spec.restartPolicy",
                            policy,
                            &["Always"],
                        ));
                    }
                }
            }
        }
    }
    errors
}

/// A label map as Go's %v prints it in Kubernetes' messages.
fn go_map(labels: Option<&std::collections::BTreeMap<String, String>>) -> String {
    let pairs: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k:?}:{v:?}"))
        .collect();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

fn selector_immutable(new: Option<&LabelSelector>, old: Option<&LabelSelector>) -> Vec<FieldError> {
    if new != old {
        vec![FieldError::immutable("spec.selector", format!("{new:?}"))]
    } else {
        Vec::new()
    }
}

fn template_columns() -> [Column; 3] {
    [
        Column::new(
            "Containers",
            "string",
            "Names of each container in the template.",
        )
        .wide(),
        Column::new(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        )
        .wide(),
        Column::new("Selector", "string", "Label selector for pods.").wide(),
    ]
}

fn template_cells(
    template: Option<&PodTemplateSpec>,
    selector: Option<&LabelSelector>,
    with_selector: bool,
) -> Vec<Value> {
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut cells = vec![
        joined_or_none(containers.iter().map(|c| c.name.clone())),
        joined_or_none(
            containers
                .iter()
                .map(|c| c.image.clone().unwrap_or_default()),
        ),
    ];
    if with_selector {
        cells.push(json!(
            selector
                .map(selector_string)
                .unwrap_or_else(|| "<none>".to_owned())
        ));
    }
    cells
}

/// A LabelSelector as kubectl prints it: `app=web,tier in (a,b)`.
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expression in selector.match_expressions.iter().flatten() {
        let values = expression.values.clone().unwrap_or_default().join(",");
        parts.push(match expression.operator.as_str() {
            "In" => format!("{} in ({values})", expression.key),
            "NotIn" => format!("{} notin ({values})", expression.key),
            "Exists" => expression.key.clone(),
            _ => format!("!{}", expression.key),
        });
    }
    if parts.is_empty() {
        "<none>".to_owned()
    } else {
        parts.join(",")
    }
}

fn percent(value: &str) -> IntOrString {
    IntOrString::String(value.to_owned())
}

#[derive(Debug, Clone)]
pub struct Deployments;

impl Kind for Deployments {
    type Object = Deployment;

    const INFO: ResourceInfo = ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        categories: &["all"],
        namespaced: true,
        subresources: &[status("apps", "v1", "Deployment"), SCALE],
    };
    const GENERATION: bool = true;

    fn default(&self, deployment: &mut Deployment) {
        let spec = deployment.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        let strategy = spec
            .strategy
            .get_or_insert_with(DeploymentStrategy::default);
        strategy
            .type_
            .get_or_insert_with(|| "RollingUpdate".to_owned());
        if strategy.type_.as_deref() == Some("RollingUpdate") {
            let rolling = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            rolling
                .max_unavailable
                .get_or_insert_with(|| percent("25%"));
            rolling.max_surge.get_or_insert_with(|| percent("25%"));
        }
        default_template(&mut spec.template);
    }

    fn validate(&self, deployment: &Deployment) -> Vec<FieldError> {
        let Some(spec) = &deployment.spec else {
            return vec![FieldError::required("spec")];
        };
        let mut errors =
            validate_workload(Some(&spec.selector), Some(&spec.template), spec.replicas);
        if let Some(strategy) = spec.strategy.as_ref().and_then(|s| s.type_.as_deref())
            && !["Recreate", "RollingUpdate"].contains(&strategy)
        {
            errors.push(FieldError::not_supported(
                "spec.strategy.type",
                strategy,
                &["Recreate", "RollingUpdate"],
            ));
        }
        if spec
            .strategy
            .as_ref()
            .is_some_and(|s| s.type_.as_deref() == Some("Recreate") && s.rolling_update.is_some())
        {
            errors.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        errors
    }

    fn validate_update(&self, new: &Deployment, old: &Deployment) -> Vec<FieldError> {
        selector_immutable(
            new.spec.as_ref().map(|s| &s.selector),
            old.spec.as_ref().map(|s| &s.selector),
        )
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = vec![
            NAME,
            Column::new("Ready", "string", "Number of the pod with ready state"),
            Column::new(
                "Up-to-date",
                "string",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            Column::new(
                "Available",
                "string",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
        ];
        columns.extend(template_columns());
        columns
    }

    fn cells(&self, deployment: &Deployment, now: jiff::Timestamp) -> Vec<Value> {
        let spec = deployment.spec.as_ref();
        let status = deployment.status.clone().unwrap_or_default();
        let mut cells = vec![
            json!(deployment.metadata.name),
            json!(format!(
                "{}/{}",
                status.ready_replicas.unwrap_or(0),
                spec.and_then(|s| s.replicas).unwrap_or(0)
            )),
            json!(status.updated_replicas.unwrap_or(0)),
            json!(status.available_replicas.unwrap_or(0)),
            age(deployment.metadata.creation_timestamp.as_ref(), now),
        ];
        cells.extend(template_cells(
            spec.map(|s| &s.template),
            spec.map(|s| &s.selector),
            true,
        ));
        cells
    }
}

#[derive(Debug, Clone)]
pub struct ReplicaSets;

impl Kind for ReplicaSets {
    type Object = ReplicaSet;

    const INFO: ResourceInfo = ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        categories: &["all"],
        namespaced: true,
        subresources: &[status("apps", "v1", "ReplicaSet"), SCALE],
    };
    const GENERATION: bool = true;

    fn default(&self, set: &mut ReplicaSet) {
        let spec = set.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        if let Some(template) = spec.template.as_mut() {
            default_template(template);
        }
    }

    fn validate(&self, set: &ReplicaSet) -> Vec<FieldError> {
        match &set.spec {
            Some(spec) => {
                validate_workload(Some(&spec.selector), spec.template.as_ref(), spec.replicas)
            }
            None => vec![FieldError::required("spec")],
        }
    }

    fn validate_update(&self, new: &ReplicaSet, old: &ReplicaSet) -> Vec<FieldError> {
        selector_immutable(
            new.spec.as_ref().map(|s| &s.selector),
            old.spec.as_ref().map(|s| &s.selector),
        )
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = vec![
            NAME,
            Column::new(
                "Desired",
                "integer",
                "Replicas is the number of desired replicas.",
            ),
            Column::new(
                "Current",
                "integer",
                "Replicas is the most recently observed number of replicas.",
            ),
            Column::new(
                "Ready",
                "integer",
                "The number of ready replicas for this replica set.",
            ),
            AGE,
        ];
        columns.extend(template_columns());
        columns
    }

    fn cells(&self, set: &ReplicaSet, now: jiff::Timestamp) -> Vec<Value> {
        let spec = set.spec.as_ref();
        let status = set.status.clone().unwrap_or_default();
        let mut cells = vec![
            json!(set.metadata.name),
            json!(spec.and_then(|s| s.replicas).unwrap_or(0)),
            json!(status.replicas),
            json!(status.ready_replicas.unwrap_or(0)),
            age(set.metadata.creation_timestamp.as_ref(), now),
        ];
        cells.extend(template_cells(
            spec.and_then(|s| s.template.as_ref()),
            spec.map(|s| &s.selector),
            true,
        ));
        cells
    }
}

#[derive(Debug, Clone)]
pub struct StatefulSets;

impl Kind for StatefulSets {
    type Object = StatefulSet;

    const INFO: ResourceInfo = ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        singular: "statefulset",
        short_names: &["sts"],
        categories: &["all"],
        namespaced: true,
        subresources: &[status("apps", "v1", "StatefulSet"), SCALE],
    };
    const GENERATION: bool = true;

    fn default(&self, set: &mut StatefulSet) {
        let spec = set.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.pod_management_policy
            .get_or_insert_with(|| "OrderedReady".to_owned());
        let strategy = spec
            .update_strategy
            .get_or_insert_with(StatefulSetUpdateStrategy::default);
        strategy
            .type_
            .get_or_insert_with(|| "RollingUpdate".to_owned());
        if strategy.type_.as_deref() == Some("RollingUpdate") {
            let rolling = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateStatefulSetStrategy::default);
            rolling.partition.get_or_insert(0);
        }
        spec.persistent_volume_claim_retention_policy
            .get_or_insert_with(|| StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".to_owned()),
                when_scaled: Some("Retain".to_owned()),
            });
        default_template(&mut spec.template);
    }

    fn validate(&self, set: &StatefulSet) -> Vec<FieldError> {
        let Some(spec) = &set.spec else {
            return vec![FieldError::required("spec")];
        };
        let mut errors =
            validate_workload(Some(&spec.selector), Some(&spec.template), spec.replicas);
        if let Some(policy) = spec.pod_management_policy.as_deref()
            && !["OrderedReady", "Parallel"].contains(&policy)
        {
            errors.push(FieldError::not_supported(
                "spec.podManagementPolicy",
                policy,
                &["OrderedReady", "Parallel"],
            ));
        }
        errors
    }

    fn validate_update(&self, new: &StatefulSet, old: &StatefulSet) -> Vec<FieldError> {
        let (Some(new_spec), Some(old_spec)) = (&new.spec, &old.spec) else {
            return Vec::new();
        };
        let mut errors = selector_immutable(Some(&new_spec.selector), Some(&old_spec.selector));
        if new_spec.service_name != old_spec.service_name
            || new_spec.pod_management_policy != old_spec.pod_management_policy
            || new_spec.volume_claim_templates != old_spec.volume_claim_templates
        {
            errors.push(FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
        errors
    }

    fn columns(&self) -> Vec<Column> {
        let [containers, images, _] = template_columns();
        vec![
            NAME,
            Column::new("Ready", "string", "Number of the pod with ready state"),
            AGE,
            containers,
            images,
        ]
    }

    fn cells(&self, set: &StatefulSet, now: jiff::Timestamp) -> Vec<Value> {
        let spec = set.spec.as_ref();
        let status = set.status.clone().unwrap_or_default();
        let mut cells = vec![
            json!(set.metadata.name),
            json!(format!(
                "{}/{}",
                status.ready_replicas.unwrap_or(0),
                spec.and_then(|s| s.replicas).unwrap_or(0)
            )),
            age(set.metadata.creation_timestamp.as_ref(), now),
        ];
        cells.extend(template_cells(spec.map(|s| &s.template), None, false));
        cells
    }
}

/// A DaemonSet either surges (a new pod starts beside the old one) or
/// takes nodes down, never both, as Kubernetes validates it.
fn validate_daemon_rolling_update(rolling: &RollingUpdateDaemonSet) -> Vec<FieldError> {
    const PATH: &str = "spec.updateStrategy.rollingUpdate";
    let mut errors = Vec::new();
    let mut nonzero = |value: Option<&IntOrString>, field: &str| -> bool {
        let number = match value {
            None => return false,
            Some(IntOrString::Int(n)) => Some(i64::from(*n)),
            Some(IntOrString::String(text)) => {
                text.strip_suffix('%').and_then(|n| n.parse::<i64>().ok())
            }
        };
        let shown = BadValue::raw(int_or_string(value));
        let path = format!("{PATH}.{field}");
        match number {
            None => errors.push(FieldError::invalid(
                path,
                shown,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%')",
            )),
            Some(n) if n < 0 => errors.push(FieldError::invalid(
                path,
                shown,
                "must be greater than or equal to 0",
            )),
            Some(n) if n > 100 && matches!(value, Some(IntOrString::String(_))) => errors.push(
                FieldError::invalid(path, shown, "must not be greater than 100%"),
            ),
            Some(n) => return n != 0,
        }
        false
    };
    let surge = nonzero(rolling.max_surge.as_ref(), "maxSurge");
    let unavailable = nonzero(rolling.max_unavailable.as_ref(), "maxUnavailable");
    match (surge, unavailable) {
        (true, true) => errors.push(FieldError::invalid(
            format!("{PATH}.maxSurge"),
            BadValue::raw(int_or_string(rolling.max_surge.as_ref())),
            "may not be set when maxUnavailable is non-zero",
        )),
        (false, false) if errors.is_empty() => errors.push(FieldError::required_because(
            format!("{PATH}.maxUnavailable"),
            "cannot be 0 when maxSurge is 0",
        )),
        _ => {}
    }
    errors
}

fn int_or_string(value: Option<&IntOrString>) -> String {
    match value {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(text)) => format!("{text:?}"),
        None => String::new(),
    }
}

#[derive(Debug, Clone)]
pub struct DaemonSets;

impl Kind for DaemonSets {
    type Object = DaemonSet;

    const INFO: ResourceInfo = ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        short_names: &["ds"],
        categories: &["all"],
        namespaced: true,
        subresources: &[status("apps", "v1", "DaemonSet")],
    };
    const GENERATION: bool = true;

    fn default(&self, set: &mut DaemonSet) {
        let spec = set.spec.get_or_insert_with(Default::default);
        spec.revision_history_limit.get_or_insert(10);
        let strategy = spec
            .update_strategy
            .get_or_insert_with(DaemonSetUpdateStrategy::default);
        strategy
            .type_
            .get_or_insert_with(|| "RollingUpdate".to_owned());
        if strategy.type_.as_deref() == Some("RollingUpdate") {
            let rolling = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDaemonSet::default);
            rolling.max_unavailable.get_or_insert(IntOrString::Int(1));
            rolling.max_surge.get_or_insert(IntOrString::Int(0));
        }
        default_template(&mut spec.template);
    }

    fn validate(&self, set: &DaemonSet) -> Vec<FieldError> {
        let Some(spec) = &set.spec else {
            return vec![FieldError::required("spec")];
        };
        let mut errors = validate_workload(Some(&spec.selector), Some(&spec.template), None);
        if let Some(rolling) = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
        {
            errors.extend(validate_daemon_rolling_update(rolling));
        }
        errors
    }

    fn validate_update(&self, new: &DaemonSet, old: &DaemonSet) -> Vec<FieldError> {
        selector_immutable(
            new.spec.as_ref().map(|s| &s.selector),
            old.spec.as_ref().map(|s| &s.selector),
        )
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = vec![
            NAME,
            Column::new(
                "Desired",
                "integer",
                "The total number of nodes that should be running the daemon pod.",
            ),
            Column::new(
                "Current",
                "integer",
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            Column::new(
                "Ready",
                "integer",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            ),
            Column::new(
                "Up-to-date",
                "integer",
                "The total number of nodes that are running updated daemon pod",
            ),
            Column::new(
                "Available",
                "integer",
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            ),
            Column::new(
                "Node Selector",
                "string",
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            AGE,
        ];
        columns.extend(template_columns());
        columns
    }

    fn cells(&self, set: &DaemonSet, now: jiff::Timestamp) -> Vec<Value> {
        let spec = set.spec.as_ref();
        let status = set.status.clone().unwrap_or_default();
        let node_selector = spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.node_selector.as_ref())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut cells = vec![
            json!(set.metadata.name),
            json!(status.desired_number_scheduled),
            json!(status.current_number_scheduled),
            json!(status.number_ready),
            json!(status.updated_number_scheduled.unwrap_or(0)),
            json!(status.number_available.unwrap_or(0)),
            joined_or_none(node_selector),
            age(set.metadata.creation_timestamp.as_ref(), now),
        ];
        cells.extend(template_cells(
            spec.map(|s| &s.template),
            spec.map(|s| &s.selector),
            true,
        ));
        cells
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::{
            apps::v1::DeploymentSpec,
            core::v1::{Container, PodSpec},
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    use super::*;

    fn deployment(selector: &str, template: &str) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                selector: LabelSelector {
                    match_labels: Some([("app".to_owned(), selector.to_owned())].into()),
                    match_expressions: None,
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_owned(), template.to_owned())].into()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some("img:1".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn deployments_get_kubernetes_defaults() {
        let mut d = deployment("web", "web");
        Deployments.default(&mut d);
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.revision_history_limit, Some(10));
        let rolling = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(rolling.max_surge, Some(percent("25%")));
        assert!(Deployments.validate(&d).is_empty());
    }

    #[test]
    fn the_selector_must_match_the_template_and_may_not_change() {
        let mut d = deployment("web", "api");
        Deployments.default(&mut d);
        let errors = Deployments.validate(&d);
        assert_eq!(errors[0].field, "spec.template.metadata.labels");
        assert_eq!(
            errors[0].message,
            "`selector` does not match template `labels`"
        );
        let old = deployment("web", "web");
        let new = deployment("other", "other");
        assert_eq!(
            Deployments.validate_update(&new, &old)[0].field,
            "spec.selector"
        );
    }

    #[test]
    fn a_daemon_set_surges_or_takes_nodes_down_but_not_both() {
        let rolling = |surge: IntOrString, unavailable: IntOrString| RollingUpdateDaemonSet {
            max_surge: Some(surge),
            max_unavailable: Some(unavailable),
        };
        let errors = |r: RollingUpdateDaemonSet| -> Vec<String> {
            validate_daemon_rolling_update(&r)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert!(errors(rolling(IntOrString::Int(1), IntOrString::Int(0))).is_empty());
        assert!(errors(rolling(IntOrString::Int(0), percent("10%"))).is_empty());
        assert_eq!(
            errors(rolling(IntOrString::Int(1), IntOrString::Int(1))),
            [
                "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"
            ]
        );
        assert_eq!(
            errors(rolling(percent("0%"), IntOrString::Int(0))),
            [
                "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"
            ]
        );
        assert_eq!(
            errors(rolling(IntOrString::Int(-1), percent("150%"))),
            [
                "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: -1: must be greater than or equal to 0",
                "spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%",
            ]
        );
    }
}
