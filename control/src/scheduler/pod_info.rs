//! What the scheduler needs of a pod, computed once per pod version: its
//! effective requests (as Kubernetes sums them), host ports, placement
//! constraints and controlling owner.

use std::collections::BTreeMap;

use capstan_quantity as quantity;
use k8s_openapi::api::core::v1::{
    Affinity, Container, NodeSelector, Pod, PodSpec, PreferredSchedulingTerm, Toleration,
};

/// The resources the scheduler accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
}

impl Resources {
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
    }

    pub fn subtract(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.max(other.milli_cpu),
            memory: self.memory.max(other.memory),
            ephemeral_storage: self.ephemeral_storage.max(other.ephemeral_storage),
        }
    }

    /// Reads cpu, memory and ephemeral-storage from a resource list.
    pub fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resources {
        let Some(list) = list else {
            return Resources::default();
        };
        let read = |name: &str, parse: fn(&str) -> Option<i64>| {
            list.get(name).and_then(|q| parse(&q.0)).unwrap_or(0)
        };
        Resources {
            milli_cpu: read("cpu", quantity::millicores),
            memory: read("memory", quantity::bytes),
            ephemeral_storage: read("ephemeral-storage", quantity::bytes),
        }
    }
}

/// What a container without a cpu or memory request counts as when
/// scoring, as kube-scheduler does, so best-effort pods still spread.
const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
const DEFAULT_MEMORY_REQUEST: i64 = 200 << 20;

/// A host port a pod takes on its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// "0.0.0.0" when unset: every address.
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Two ports clash when protocol and port match and either takes
    /// every address or both take the same one.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// `namespace/name`.
pub type PodKey = String;

/// A pod as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    pub key: PodKey,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub scheduler_name: String,
    /// Empty when unbound.
    pub node_name: String,
    /// Being deleted, or Succeeded/Failed: takes no room and needs no node.
    pub finished: bool,
    pub constraints: Constraints,
}

/// The parts of a pod that decide where it may go; a change here (and
/// only here) is a reason to try an unschedulable pod again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Constraints {
    /// Requests as the fit check counts them: the larger of the sum of
    /// containers and the largest init container, plus the overhead.
    pub requests: Resources,
    /// The same with defaults for unset cpu and memory, for scoring.
    pub score_requests: Resources,
    pub host_ports: Vec<HostPort>,
    pub node_selector: BTreeMap<String, String>,
    pub required_affinity: Option<NodeSelector>,
    pub preferred_affinity: Vec<PreferredSchedulingTerm>,
    pub tolerations: Vec<Toleration>,
    pub labels: BTreeMap<String, String>,
    /// The uid of the owner with `controller: true`, whose replicas spread.
    pub controller: Option<String>,
}

/// The scheduler name a pod without one gets.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";

impl PodInfo {
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        let no_spec = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&no_spec);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let affinity = spec
            .affinity
            .as_ref()
            .and_then(|a: &Affinity| a.node_affinity.as_ref());
        let host_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.unwrap_or(0) > 0)
            .map(|p| HostPort {
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".to_owned()),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                port: p.host_port.unwrap_or(0),
            })
            .collect();
        let overhead = Resources::from_list(spec.overhead.as_ref());
        let init = spec.init_containers.as_deref().unwrap_or_default();
        PodInfo {
            key: format!("{namespace}/{name}"),
            uid: meta.uid.clone().unwrap_or_default(),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_SCHEDULER.to_owned()),
            node_name: spec.node_name.clone().unwrap_or_default(),
            finished: meta.deletion_timestamp.is_some()
                || matches!(phase, Some("Succeeded" | "Failed")),
            constraints: Constraints {
                requests: pod_requests(&spec.containers, init, overhead, false),
                score_requests: pod_requests(&spec.containers, init, overhead, true),
                host_ports,
                node_selector: spec.node_selector.clone().unwrap_or_default(),
                required_affinity: affinity.and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .clone()
                }),
                preferred_affinity: affinity
                    .and_then(|a| {
                        a.preferred_during_scheduling_ignored_during_execution
                            .clone()
                    })
                    .unwrap_or_default(),
                tolerations: spec.tolerations.clone().unwrap_or_default(),
                labels: meta.labels.clone().unwrap_or_default(),
                controller: meta
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|o| o.controller == Some(true))
                    .map(|o| o.uid.clone()),
            },
            namespace,
            name,
        }
    }

    pub fn is_bound(&self) -> bool {
        !self.node_name.is_empty()
    }
}

fn container_requests(container: &Container, with_defaults: bool) -> Resources {
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    let mut resources = Resources::from_list(requests);
    if with_defaults {
        let has = |name: &str| requests.is_some_and(|r| r.contains_key(name));
        if !has("cpu") {
            resources.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has("memory") {
            resources.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    resources
}

fn pod_requests(
    containers: &[Container],
    init_containers: &[Container],
    overhead: Resources,
    with_defaults: bool,
) -> Resources {
    let mut sum = Resources::default();
    for container in containers {
        sum.add(&container_requests(container, with_defaults));
    }
    let largest_init = init_containers
        .iter()
        .map(|c| container_requests(c, false))
        .fold(Resources::default(), Resources::max);
    let mut total = sum.max(largest_init);
    total.add(&overhead);
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "ns", "uid": "u1" },
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn requests_sum_containers_take_the_largest_init_container_and_add_overhead() {
        let info = PodInfo::from_pod(&pod(serde_json::json!({
            "containers": [
                { "name": "a", "resources": { "requests": { "cpu": "200m", "memory": "64Mi" } } },
                { "name": "b", "resources": { "requests": { "cpu": "300m", "ephemeral-storage": "1Gi" } } },
            ],
            "initContainers": [
                { "name": "i1", "resources": { "requests": { "cpu": "1", "memory": "32Mi" } } },
                { "name": "i2", "resources": { "requests": { "memory": "100Mi" } } },
            ],
            "overhead": { "cpu": "10m", "memory": "1Mi" },
        })));
        assert_eq!(
            info.constraints.requests,
            Resources {
                milli_cpu: 1010,
                memory: (100 << 20) + (1 << 20),
                ephemeral_storage: 1 << 30,
            }
        );
        assert_eq!(info.key, "ns/p");
        assert_eq!(info.scheduler_name, DEFAULT_SCHEDULER);
    }

    #[test]
    fn scoring_counts_unset_cpu_and_memory_as_defaults() {
        let info = PodInfo::from_pod(&pod(serde_json::json!({
            "containers": [
                { "name": "a" },
                { "name": "b", "resources": { "requests": { "cpu": "1" } } },
            ],
        })));
        assert_eq!(info.constraints.requests.milli_cpu, 1000);
        assert_eq!(info.constraints.requests.memory, 0);
        assert_eq!(info.constraints.score_requests.milli_cpu, 1100);
        assert_eq!(info.constraints.score_requests.memory, 2 * (200 << 20));
    }

    #[test]
    fn host_ports_default_to_every_address_and_tcp() {
        let info = PodInfo::from_pod(&pod(serde_json::json!({
            "containers": [{ "name": "a", "ports": [
                { "containerPort": 80, "hostPort": 8080 },
                { "containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1" },
                { "containerPort": 9000 },
            ] }],
        })));
        let ports = &info.constraints.host_ports;
        assert_eq!(ports.len(), 2);
        assert_eq!(
            ports[0],
            HostPort {
                ip: "0.0.0.0".into(),
                protocol: "TCP".into(),
                port: 8080
            }
        );
        let same_port_other_ip = HostPort {
            ip: "10.0.0.1".into(),
            protocol: "UDP".into(),
            port: 53,
        };
        assert!(!ports[1].conflicts(&same_port_other_ip));
        assert!(ports[0].conflicts(&HostPort {
            ip: "10.0.0.1".into(),
            protocol: "TCP".into(),
            port: 8080
        }));
        assert!(!ports[0].conflicts(&HostPort {
            ip: "0.0.0.0".into(),
            protocol: "UDP".into(),
            port: 8080
        }));
    }

    #[test]
    fn deleted_and_terminal_pods_are_finished() {
        let mut p = pod(serde_json::json!({ "containers": [{ "name": "a" }] }));
        assert!(!PodInfo::from_pod(&p).finished);
        p.status =
            Some(serde_json::from_value(serde_json::json!({ "phase": "Succeeded" })).unwrap());
        assert!(PodInfo::from_pod(&p).finished);
    }
}
