//! A node as the scheduler sees it: what it offers (allocatable, labels,
//! effective taints) and what is already on it (requested resources, pod
//! count, host ports, replicas per controller), kept up to date pod by pod.

use std::collections::{BTreeMap, HashMap};

use capstan_quantity as quantity;
use k8s_openapi::api::core::v1::{Node, Taint};

use super::pod_info::{HostPort, PodInfo, PodKey, Resources};

/// Taints Kubernetes' node lifecycle puts on nodes that are not Ready; the
/// scheduler applies them itself to a node whose Ready condition says so,
/// so pods that tolerate them (DaemonSets) still land there.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// The label that names a node's zone, for spreading.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What a node object says, as far as placement goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The node's taints, plus not-ready or unreachable when its Ready
    /// condition is False or Unknown (or missing).
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub allowed_pods: i64,
}

impl NodeSpec {
    pub fn from_node(node: &Node) -> NodeSpec {
        let status = node.status.as_ref();
        let allocatable = status.and_then(|s| s.allocatable.as_ref());
        let spec = node.spec.as_ref();
        let mut taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let implied = match ready {
            Some("True") => None,
            Some("False") => Some(NOT_READY_TAINT),
            _ => Some(UNREACHABLE_TAINT),
        };
        if let Some(key) = implied
            && !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
        {
            taints.push(Taint {
                key: key.to_owned(),
                effect: "NoSchedule".to_owned(),
                ..Taint::default()
            });
        }
        NodeSpec {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resources::from_list(allocatable),
            allowed_pods: allocatable
                .and_then(|a| a.get("pods"))
                .and_then(|q| quantity::bytes(&q.0))
                .unwrap_or(0),
        }
    }

    pub fn zone(&self) -> Option<&str> {
        self.labels.get(ZONE_LABEL).map(String::as_str)
    }
}

/// What one pod takes on its node.
#[derive(Debug, Clone)]
struct Placed {
    requests: Resources,
    score_requests: Resources,
    host_ports: Vec<HostPort>,
    controller: Option<String>,
}

/// A node and the pods on it. `spec` is None for a node whose pods are
/// known before (or after) the node object: such a node is not offered.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub spec: Option<NodeSpec>,
    pub requested: Resources,
    /// Requested with scoring defaults for unset cpu and memory.
    pub score_requested: Resources,
    pub pod_count: i64,
    pods: HashMap<PodKey, Placed>,
    /// Replicas on this node per controller uid.
    controllers: HashMap<String, u32>,
}

impl NodeInfo {
    pub fn add_pod(&mut self, pod: &PodInfo) {
        self.remove_pod(&pod.key);
        let c = &pod.constraints;
        let placed = Placed {
            requests: c.requests,
            score_requests: c.score_requests,
            host_ports: c.host_ports.clone(),
            controller: c.controller.clone(),
        };
        self.requested.add(&placed.requests);
        self.score_requested.add(&placed.score_requests);
        self.pod_count += 1;
        if let Some(controller) = &placed.controller {
            *self.controllers.entry(controller.clone()).or_default() += 1;
        }
        self.pods.insert(pod.key.clone(), placed);
    }

    /// True when the pod was here.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(placed) = self.pods.remove(key) else {
            return false;
        };
        self.requested.subtract(&placed.requests);
        self.score_requested.subtract(&placed.score_requests);
        self.pod_count -= 1;
        if let Some(controller) = &placed.controller
            && let Some(count) = self.controllers.get_mut(controller)
        {
            *count -= 1;
            if *count == 0 {
                self.controllers.remove(controller);
            }
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Whether any pod here takes a port that clashes with `port`.
    pub fn port_in_use(&self, port: &HostPort) -> bool {
        self.pods
            .values()
            .flat_map(|p| &p.host_ports)
            .any(|used| used.conflicts(port))
    }

    /// The controller of a pod here, if it has one.
    pub fn controller_of(&self, key: &str) -> Option<String> {
        self.pods.get(key).and_then(|p| p.controller.clone())
    }

    /// Replicas on this node per controller uid.
    pub fn controllers(&self) -> impl Iterator<Item = (&String, u32)> {
        self.controllers.iter().map(|(c, n)| (c, *n))
    }

    /// Replicas of `controller` on this node.
    pub fn replicas_of(&self, controller: &str) -> u32 {
        self.controllers.get(controller).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::pod_info::Constraints;

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_node_that_is_not_ready_carries_the_implied_taint() {
        let ready = |status: &str| {
            NodeSpec::from_node(&node(serde_json::json!({
                "metadata": { "name": "n1" },
                "status": {
                    "allocatable": { "cpu": "2", "memory": "4Gi", "pods": "110" },
                    "conditions": [{ "type": "Ready", "status": status }],
                },
            })))
        };
        let spec = ready("True");
        assert!(spec.taints.is_empty());
        assert_eq!(spec.allocatable.milli_cpu, 2000);
        assert_eq!(spec.allocatable.memory, 4 << 30);
        assert_eq!(spec.allowed_pods, 110);
        assert_eq!(ready("False").taints[0].key, NOT_READY_TAINT);
        assert_eq!(ready("Unknown").taints[0].key, UNREACHABLE_TAINT);
    }

    #[test]
    fn pods_added_and_removed_keep_the_sums_right() {
        let pod = |name: &str, cpu: i64, controller: Option<&str>| PodInfo {
            key: format!("ns/{name}"),
            namespace: "ns".into(),
            name: name.into(),
            uid: name.into(),
            scheduler_name: "default-scheduler".into(),
            node_name: "n1".into(),
            finished: false,
            constraints: Constraints {
                requests: Resources {
                    milli_cpu: cpu,
                    ..Resources::default()
                },
                score_requests: Resources {
                    milli_cpu: cpu,
                    ..Resources::default()
                },
                controller: controller.map(str::to_owned),
                ..Constraints::default()
            },
        };
        let mut info = NodeInfo::default();
        info.add_pod(&pod("a", 100, Some("rs1")));
        info.add_pod(&pod("b", 200, Some("rs1")));
        info.add_pod(&pod("a", 300, Some("rs1")));
        assert_eq!(info.requested.milli_cpu, 500, "a re-added replaces itself");
        assert_eq!(info.pod_count, 2);
        assert_eq!(info.replicas_of("rs1"), 2);
        assert!(info.remove_pod("ns/a"));
        assert!(!info.remove_pod("ns/a"));
        assert_eq!(info.requested.milli_cpu, 200);
        assert_eq!(info.replicas_of("rs1"), 1);
    }
}
