//! A Kubernetes container, in its pod, as the runtime's container
//! configuration: command and environment, the pod's namespaces and files,
//! volumes, cgroup limits from requests and limits, and the security
//! context.

use std::path::{Path, PathBuf};

use capstan_quantity as quantity;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, ResourceRequirements};

use super::{
    labels::{ContainerIdentity, container_labels},
    volumes::{VolumePaths, container_mounts},
};
use crate::{
    network::Sandbox,
    runtime::{
        ContainerConfig, LogDestination, Mount, MountSource, Resources, Security, SharedNamespaces,
    },
};

/// The CFS period the kubelet uses, in microseconds.
const CPU_PERIOD: u64 = 100_000;
/// The kubelet's floor for cpu.shares and the quota.
const MIN_SHARES: u64 = 2;
const MIN_QUOTA: i64 = 1000;
/// The `kubernetes` Service, announced to every container as the kubelet
/// does.
const KUBERNETES_SERVICE: &str = "10.96.0.1";

/// What every container of a pod shares.
#[derive(Debug)]
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub node: &'a str,
    pub host_ip: &'a str,
    pub sandbox: &'a Sandbox,
    /// cgroup (from the hierarchy root) the pod's containers go under.
    pub cgroup_parent: &'a str,
    /// Where hosts, resolv.conf and hostname are.
    pub files_dir: &'a Path,
    pub volumes: &'a VolumePaths,
    /// Where the container's stdout and stderr go.
    pub log: &'a LogDestination,
}

impl PodContext<'_> {
    fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }
}

/// Attempt `attempt` of `container`'s log under a pod's log directory.
pub fn log_path(pod_log_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_log_dir.join(container).join(format!("{attempt}.log"))
}

/// The pod's log directory under `root`: <namespace>_<name>_<uid>, as the
/// kubelet names it.
pub fn pod_log_dir(root: &Path, pod: &Pod) -> PathBuf {
    root.join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    ))
}

/// The configuration of attempt `attempt` of `container`. The error is a
/// sentence for the container's waiting state
/// (CreateContainerConfigError).
pub fn container_config(
    ctx: &PodContext<'_>,
    container: &Container,
    init: bool,
    attempt: u32,
) -> Result<ContainerConfig, String> {
    let identity = ContainerIdentity {
        pod_uid: ctx.uid().to_owned(),
        name: container.name.clone(),
        attempt,
    };
    let id = identity.container_id();
    let env = environment(ctx, container)?;
    let expand_all =
        |items: &Option<Vec<String>>| items.iter().flatten().map(|i| expand(i, &env)).collect();
    let mut mounts = vec![
        file_mount(ctx.files_dir, "hosts", "/etc/hosts"),
        file_mount(ctx.files_dir, "resolv.conf", "/etc/resolv.conf"),
        file_mount(ctx.files_dir, "hostname", "/etc/hostname"),
    ];
    mounts.extend(container_mounts(container, ctx.volumes)?);
    Ok(ContainerConfig {
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        env,
        working_dir: container.working_dir.clone().filter(|d| !d.is_empty()),
        hostname: super::files::hostname(ctx.pod),
        namespaces: SharedNamespaces {
            network: Some(ctx.sandbox.namespaces.net.clone()),
            ipc: Some(ctx.sandbox.namespaces.ipc.clone()),
            uts: Some(ctx.sandbox.namespaces.uts.clone()),
        },
        cgroups_path: format!("{}/{id}", ctx.cgroup_parent),
        log: ctx.log.clone(),
        labels: container_labels(
            ctx.node,
            ctx.pod.metadata.namespace.as_deref().unwrap_or("default"),
            ctx.pod.metadata.name.as_deref().unwrap_or_default(),
            &identity,
            init,
        ),
        mounts,
        resources: resources(container.resources.as_ref()),
        security: security(ctx.pod, container),
        id,
    })
}

fn file_mount(dir: &Path, file: &str, destination: &str) -> Mount {
    Mount {
        destination: destination.to_owned(),
        source: MountSource::Bind(dir.join(file)),
        read_only: false,
    }
}

/// cpu.shares from the cpu request, a CFS quota from the cpu limit, a
/// memory limit from the memory limit (requests default to limits).
pub fn resources(requirements: Option<&ResourceRequirements>) -> Resources {
    let get = |map: Option<&std::collections::BTreeMap<String, _>>, key: &str| {
        map.and_then(|m| m.get(key))
            .map(|q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| q.0.clone())
    };
    let limits = requirements.and_then(|r| r.limits.as_ref());
    let requests = requirements.and_then(|r| r.requests.as_ref());
    let cpu_limit = get(limits, "cpu").and_then(|q| quantity::millicores(&q));
    let cpu_request = get(requests, "cpu")
        .and_then(|q| quantity::millicores(&q))
        .or(cpu_limit);
    let shares = cpu_request.map_or(MIN_SHARES, |milli| {
        ((milli as u64) * 1024 / 1000).max(MIN_SHARES)
    });
    Resources {
        cpu_shares: Some(shares),
        cpu_quota: cpu_limit.map(|milli| (milli * CPU_PERIOD as i64 / 1000).max(MIN_QUOTA)),
        cpu_period: cpu_limit.map(|_| CPU_PERIOD),
        memory_limit: get(limits, "memory").and_then(|q| quantity::bytes(&q)),
    }
}

/// The container's security context over the pod's.
pub fn security(pod: &Pod, container: &Container) -> Security {
    let pod_context = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let own = container.security_context.clone().unwrap_or_default();
    let capabilities = own.capabilities.clone().unwrap_or_default();
    let as_u32 = |id: Option<i64>| id.and_then(|id| u32::try_from(id).ok());
    Security {
        run_as_user: as_u32(own.run_as_user.or(pod_context.run_as_user)),
        run_as_group: as_u32(own.run_as_group.or(pod_context.run_as_group)),
        run_as_non_root: own
            .run_as_non_root
            .or(pod_context.run_as_non_root)
            .unwrap_or(false),
        read_only_root: own.read_only_root_filesystem.unwrap_or(false),
        privileged: own.privileged.unwrap_or(false),
        add_capabilities: capabilities.add.unwrap_or_default(),
        drop_capabilities: capabilities.drop.unwrap_or_default(),
        allow_privilege_escalation: own.allow_privilege_escalation.unwrap_or(false),
        supplemental_groups: pod_context
            .supplemental_groups
            .iter()
            .flatten()
            .filter_map(|g| u32::try_from(*g).ok())
            .collect(),
    }
}

/// The container's environment: the `kubernetes` Service's variables, then
/// env in order, each value expanded against those before it.
fn environment(
    ctx: &PodContext<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = [
        ("KUBERNETES_SERVICE_HOST", KUBERNETES_SERVICE.to_owned()),
        ("KUBERNETES_SERVICE_PORT", "443".to_owned()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443".to_owned()),
        ("KUBERNETES_PORT", format!("tcp://{KUBERNETES_SERVICE}:443")),
        (
            "KUBERNETES_PORT_443_TCP",
            format!("tcp://{KUBERNETES_SERVICE}:443"),
        ),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".to_owned()),
        ("KUBERNETES_PORT_443_TCP_PORT", "443".to_owned()),
        (
            "KUBERNETES_PORT_443_TCP_ADDR",
            KUBERNETES_SERVICE.to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err("envFrom is not supported by this agent yet".to_owned());
    }
    for var in container.env.iter().flatten() {
        let value = env_value(ctx, container, var)?;
        let value = expand(&value, &env);
        env.retain(|(name, _)| name != &var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

fn env_value(ctx: &PodContext<'_>, container: &Container, var: &EnvVar) -> Result<String, String> {
    let Some(source) = &var.value_from else {
        return Ok(var.value.clone().unwrap_or_default());
    };
    let pod = ctx.pod;
    if let Some(field) = &source.field_ref {
        let path = field.field_path.as_str();
        let meta = &pod.metadata;
        let keyed = |prefix: &str, map: &Option<std::collections::BTreeMap<String, String>>| {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(map.as_ref()?.get(key).cloned().unwrap_or_default())
        };
        let spec = pod.spec.as_ref();
        return match path {
            "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
            "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
            "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
            "spec.nodeName" => Ok(ctx.node.to_owned()),
            "spec.serviceAccountName" => Ok(spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".to_owned())),
            "status.hostIP" | "status.hostIPs" => Ok(ctx.host_ip.to_owned()),
            "status.podIP" | "status.podIPs" => Ok(ctx.sandbox.ip.to_string()),
            _ => keyed("metadata.labels['", &meta.labels)
                .or_else(|| keyed("metadata.annotations['", &meta.annotations))
                .ok_or_else(|| format!("env {}: unsupported fieldRef {path}", var.name)),
        };
    }
    if let Some(field) = &source.resource_field_ref {
        let resources = container.resources.as_ref();
        let (kind, name) = field.resource.split_once('.').unwrap_or(("", ""));
        let map = match kind {
            "limits" => resources.and_then(|r| r.limits.as_ref()),
            "requests" => resources.and_then(|r| r.requests.as_ref()),
            _ => None,
        };
        let divisor = field.divisor.as_ref().map_or("1", |d| d.0.as_str());
        let value = map.and_then(|m| m.get(name)).map(|q| q.0.clone());
        return match (name, value) {
            ("cpu", Some(q)) => Ok(ceil_div(
                quantity::millicores(&q).unwrap_or(0),
                quantity::millicores(divisor).unwrap_or(1000).max(1),
            )),
            ("memory" | "ephemeral-storage", Some(q)) => Ok(ceil_div(
                quantity::bytes(&q).unwrap_or(0),
                quantity::bytes(divisor).unwrap_or(1).max(1),
            )),
            (_, None) => Err(format!(
                "env {}: {} is not set on the container",
                var.name, field.resource
            )),
            _ => Err(format!(
                "env {}: unsupported resource {}",
                var.name, field.resource
            )),
        };
    }
    Err(format!(
        "env {}: configMapKeyRef and secretKeyRef are not supported by this agent yet",
        var.name
    ))
}

fn ceil_div(value: i64, divisor: i64) -> String {
    ((value + divisor - 1) / divisor).to_string()
}

/// Kubernetes' $(VAR) expansion: a reference to a defined variable is
/// replaced, $$ is a literal $, anything else is left as it is.
fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, net::Ipv4Addr};

    use serde_json::json;

    use super::*;
    use crate::network::PodNamespaces;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_expand_like_kubernetes() {
        let vars = env(&[("A", "1"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$(MISSING) $$(A) $", &vars), "$(MISSING) $(A) $");
        assert_eq!(expand("cost: $5", &vars), "cost: $5");
    }

    #[test]
    fn requests_and_limits_become_cgroup_settings() {
        let requirements: ResourceRequirements = serde_json::from_value(json!({
            "requests": { "cpu": "250m", "memory": "32Mi" },
            "limits": { "cpu": "500m", "memory": "64Mi" },
        }))
        .unwrap();
        let resources = resources(Some(&requirements));
        assert_eq!(resources.cpu_shares, Some(256));
        assert_eq!(resources.cpu_quota, Some(50_000));
        assert_eq!(resources.cpu_period, Some(100_000));
        assert_eq!(resources.memory_limit, Some(64 << 20));
        let none = super::resources(None);
        assert_eq!(
            (none.cpu_shares, none.cpu_quota, none.memory_limit),
            (Some(2), None, None)
        );
    }

    #[test]
    fn a_container_gets_the_pods_namespaces_files_labels_and_environment() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "shop", "uid": "u-1", "labels": { "tier": "front" } },
            "spec": {
                "securityContext": { "runAsUser": 1000, "runAsNonRoot": true },
                "containers": [{
                    "name": "app", "image": "x", "command": ["/app", "--name=$(POD)"],
                    "env": [
                        { "name": "POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                        { "name": "TIER", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['tier']" } } },
                        { "name": "IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
                        { "name": "MEM", "valueFrom": { "resourceFieldRef": { "resource": "limits.memory", "divisor": "1Mi" } } },
                    ],
                    "resources": { "limits": { "memory": "64Mi" } },
                    "securityContext": { "runAsUser": 2000, "capabilities": { "add": ["NET_ADMIN"] } },
                }],
            },
        }))
        .unwrap();
        let sandbox = Sandbox {
            namespaces: PodNamespaces::at("cst-pod-u-1".to_owned(), Path::new("/run/pods/u-1/ns")),
            ip: Ipv4Addr::new(10, 244, 0, 9),
        };
        let volumes = HashMap::new();
        let ctx = PodContext {
            pod: &pod,
            node: "n1",
            host_ip: "198.18.0.1",
            sandbox: &sandbox,
            cgroup_parent: "/capstan/podu-1",
            files_dir: Path::new("/run/pods/u-1"),
            volumes: &volumes,
            log: &LogDestination::Pipes {
                stdout: "/run/logs/c/stdout".into(),
                stderr: "/run/logs/c/stderr".into(),
            },
        };
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let config = container_config(&ctx, container, false, 3).unwrap();
        assert_eq!(config.command, vec!["/app", "--name=web"]);
        let get = |name: &str| {
            config
                .env
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("TIER"), Some("front"));
        assert_eq!(get("IP"), Some("10.244.0.9"));
        assert_eq!(get("MEM"), Some("64"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(
            config.cgroups_path,
            format!("/capstan/podu-1/{}", config.id)
        );
        assert_eq!(&config.log, ctx.log);
        assert_eq!(
            log_path(Path::new("/var/log/pods/shop_web_u-1"), "app", 3),
            Path::new("/var/log/pods/shop_web_u-1/app/3.log")
        );
        assert_eq!(config.labels[super::super::labels::ATTEMPT], "3");
        assert_eq!(config.security.run_as_user, Some(2000));
        assert!(config.security.run_as_non_root);
        assert_eq!(config.security.add_capabilities, vec!["NET_ADMIN"]);
        assert_eq!(config.mounts[0].destination, "/etc/hosts");
        assert_eq!(
            config.namespaces.network.as_deref(),
            Some(Path::new("/run/netns/cst-pod-u-1"))
        );
    }
}
