//! Defaults and validation of a pod spec, shared by Pods and by the pod
//! templates of Deployments, ReplicaSets, StatefulSets and DaemonSets.

use std::collections::BTreeSet;

use k8s_openapi::{
    api::core::v1::{Container, ContainerPort, PodSpec, Toleration},
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::registry::{
    FieldError,
    validation::{dns1123_label, dns1123_subdomain, labels},
};

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// Defaults Kubernetes gives every pod spec, pods' and templates' alike.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_owned());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".to_owned());
    spec.security_context.get_or_insert_with(Default::default);
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(container);
    }
}

/// How long a pod waits on a not-ready or an unreachable node before it
/// is evicted, unless it says otherwise (kube-apiserver's
/// --default-not-ready-toleration-seconds and
/// --default-unreachable-toleration-seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerations {
    pub not_ready_seconds: i64,
    pub unreachable_seconds: i64,
}

impl Default for DefaultTolerations {
    fn default() -> Self {
        Self {
            not_ready_seconds: 300,
            unreachable_seconds: 300,
        }
    }
}

/// What Kubernetes' admission adds to a Pod (not to templates): its
/// service account, priority, service links, and the tolerations that let
/// it wait on a not-ready or unreachable node before eviction.
pub fn admit_pod_spec(spec: &mut PodSpec, defaults: DefaultTolerations) {
    spec.enable_service_links.get_or_insert(true);
    spec.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".to_owned());
    spec.priority.get_or_insert(0);
    if spec
        .service_account_name
        .as_deref()
        .is_none_or(str::is_empty)
    {
        spec.service_account_name = Some(
            spec.service_account
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".to_owned()),
        );
    }
    spec.service_account = spec.service_account_name.clone();
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, seconds) in [
        ("node.kubernetes.io/not-ready", defaults.not_ready_seconds),
        (
            "node.kubernetes.io/unreachable",
            defaults.unreachable_seconds,
        ),
    ] {
        if !tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some("NoExecute"))
        {
            tolerations.push(Toleration {
                key: Some(key.to_owned()),
                operator: Some("Exists".to_owned()),
                effect: Some("NoExecute".to_owned()),
                toleration_seconds: Some(seconds),
                value: None,
            });
        }
    }
}

fn default_container(container: &mut Container) {
    if container.image_pull_policy.is_none() {
        container.image_pull_policy =
            Some(pull_policy_for(container.image.as_deref().unwrap_or_default()).to_owned());
    }
    container
        .termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".to_owned());
    container
        .termination_message_policy
        .get_or_insert_with(|| "File".to_owned());
    container.resources.get_or_insert_with(Default::default);
    for port in container.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
    }
}

/// Always for `:latest` or no tag (no digest), IfNotPresent otherwise.
fn pull_policy_for(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// Problems with `spec`; `field` is its path ("spec" or "spec.template.spec").
pub fn validate_pod_spec(spec: &PodSpec, field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if spec.containers.is_empty() {
        errors.push(FieldError::required(format!("{field}.containers")));
    }
    let mut names = BTreeSet::new();
    for (list, containers) in [
        ("containers", Some(&spec.containers)),
        ("initContainers", spec.init_containers.as_ref()),
    ] {
        for (i, container) in containers.into_iter().flatten().enumerate() {
            let path = format!("{field}.{list}[{i}]");
            errors.extend(validate_container(container, &path, &mut names));
        }
    }
    if let Some(policy) = spec.restart_policy.as_deref()
        && !RESTART_POLICIES.contains(&policy)
    {
        errors.push(FieldError::not_supported(
            format!("{field}.restartPolicy"),
            policy,
            RESTART_POLICIES,
        ));
    }
    if let Some(policy) = spec.dns_policy.as_deref()
        && !DNS_POLICIES.contains(&policy)
    {
        errors.push(FieldError::not_supported(
            format!("{field}.dnsPolicy"),
            policy,
            DNS_POLICIES,
        ));
    }
    if let Some(grace) = spec.termination_grace_period_seconds
        && grace < 0
    {
        errors.push(FieldError::invalid(
            format!("{field}.terminationGracePeriodSeconds"),
            grace,
            "must be greater than or equal to 0",
        ));
    }
    let mut volumes = BTreeSet::new();
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        let path = format!("{field}.volumes[{i}].name");
        errors.extend(
            dns1123_label(&volume.name)
                .into_iter()
                .map(|m| FieldError::invalid(&path, &volume.name, m)),
        );
        if !volumes.insert(volume.name.as_str()) {
            errors.push(FieldError::duplicate(path, &volume.name));
        }
    }
    for (i, container) in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .enumerate()
    {
        for (j, mount) in container.volume_mounts.iter().flatten().enumerate() {
            if !volumes.contains(mount.name.as_str()) {
                errors.push(FieldError::not_found_volume(
                    format!("{field}.containers[{i}].volumeMounts[{j}].name"),
                    &mount.name,
                ));
            }
        }
    }
    errors.extend(labels(
        spec.node_selector.as_ref(),
        &format!("{field}.nodeSelector"),
    ));
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        errors.extend(
            dns1123_subdomain(node)
                .into_iter()
                .map(|m| FieldError::invalid(format!("{field}.nodeName"), node, m)),
        );
    }
    errors
}

fn validate_container(
    container: &Container,
    path: &str,
    names: &mut BTreeSet<String>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = &container.name;
    if name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name")));
    } else {
        errors.extend(
            dns1123_label(name)
                .into_iter()
                .map(|m| FieldError::invalid(format!("{path}.name"), name, m)),
        );
        if !names.insert(name.clone()) {
            errors.push(FieldError::duplicate(format!("{path}.name"), name));
        }
    }
    if container
        .image
        .as_deref()
        .is_none_or(|i| i.trim().is_empty())
    {
        errors.push(FieldError::required(format!("{path}.image")));
    }
    if let Some(policy) = container.image_pull_policy.as_deref()
        && !PULL_POLICIES.contains(&policy)
    {
        errors.push(FieldError::not_supported(
            format!("{path}.imagePullPolicy"),
            policy,
            PULL_POLICIES,
        ));
    }
    for (i, port) in container.ports.iter().flatten().enumerate() {
        errors.extend(validate_container_port(port, &format!("{path}.ports[{i}]")));
    }
    let mut env = BTreeSet::new();
    for (i, var) in container.env.iter().flatten().enumerate() {
        if var.name.is_empty() {
            errors.push(FieldError::required(format!("{path}.env[{i}].name")));
        }
        env.insert(var.name.as_str());
    }
    errors
}

fn validate_container_port(port: &ContainerPort, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !(1..=65535).contains(&port.container_port) {
        errors.push(FieldError::invalid(
            format!("{path}.containerPort"),
            port.container_port,
            "must be between 1 and 65535, inclusive",
        ));
    }
    if let Some(host) = port.host_port
        && !(0..=65535).contains(&host)
    {
        errors.push(FieldError::invalid(
            format!("{path}.hostPort"),
            host,
            "must be between 1 and 65535, inclusive",
        ));
    }
    if let Some(protocol) = port.protocol.as_deref()
        && !PROTOCOLS.contains(&protocol)
    {
        errors.push(FieldError::not_supported(
            format!("{path}.protocol"),
            protocol,
            PROTOCOLS,
        ));
    }
    if let Some(name) = port.name.as_deref()
        && (name.is_empty() || name.len() > 15 || !name.bytes().any(|b| b.is_ascii_lowercase()))
    {
        errors.push(FieldError::invalid(
            format!("{path}.name"),
            name,
            "must be no more than 15 characters and contain at least one letter (a-z)",
        ));
    }
    errors
}

/// A port value given as a number or a name (targetPort): in range if a number.
pub fn validate_int_or_name(value: &IntOrString, path: &str) -> Vec<FieldError> {
    match value {
        IntOrString::Int(port) if !(1..=65535).contains(port) => {
            vec![FieldError::invalid(
                path,
                *port,
                "must be between 1 and 65535, inclusive",
            )]
        }
        IntOrString::String(name) if name.is_empty() || name.len() > 15 => {
            vec![FieldError::invalid(
                path,
                name,
                "must be no more than 15 characters",
            )]
        }
        _ => Vec::new(),
    }
}

impl FieldError {
    fn not_found_volume(field: String, name: &str) -> Self {
        FieldError::invalid(field, name, "must match the name of a volume")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(pull_policy_for("busybox"), "Always");
        assert_eq!(pull_policy_for("busybox:latest"), "Always");
        assert_eq!(pull_policy_for("busybox:1.36"), "IfNotPresent");
        assert_eq!(pull_policy_for("localhost:5000/app"), "Always");
        assert_eq!(pull_policy_for("localhost:5000/app:v1"), "IfNotPresent");
        assert_eq!(pull_policy_for("app@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn defaults_and_validation() {
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "web".into(),
                image: Some("nginx".into()),
                ports: Some(vec![ContainerPort {
                    container_port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        };
        default_pod_spec(&mut spec);
        assert!(
            spec.tolerations.is_none(),
            "templates get no admission defaults"
        );
        admit_pod_spec(&mut spec, DefaultTolerations::default());
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
        assert_eq!(
            spec.containers[0].ports.as_ref().unwrap()[0]
                .protocol
                .as_deref(),
            Some("TCP")
        );
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 2);
        assert!(validate_pod_spec(&spec, "spec").is_empty());

        spec.containers.push(Container {
            name: "web".into(),
            ..Default::default()
        });
        spec.restart_policy = Some("Sometimes".into());
        let fields: Vec<String> = validate_pod_spec(&spec, "spec")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.containers[1].name",
                "spec.containers[1].image",
                "spec.restartPolicy"
            ]
        );
    }
}
