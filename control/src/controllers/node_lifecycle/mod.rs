//! The node lifecycle controller. A node whose agent has neither renewed
//! its Lease nor posted status within the grace period goes Ready=Unknown
//! and its pods not ready; every node carries the not-ready or unreachable
//! taints its Ready condition calls for (lifted when the agent reports
//! Ready again); and pods on a NoExecute-tainted node are deleted once
//! their tolerations run out, so their controllers replace them elsewhere.
//! Heartbeats are timed by this process's clock as they are observed,
//! never by the node's.
//!
//! Left out, as yet: Kubernetes' zone-aware rate limiting of evictions
//! (a whole zone going dark evicts at full speed here).

mod taints;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Node, NodeCondition, Pod, Taint},
    },
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, Preconditions, Time},
    jiff::Timestamp,
};
use serde_json::{Value, json};

use self::taints::Eviction;
use super::{
    cache::{Cache, Change},
    runtime::Controller,
    work_queue::WorkQueue,
};
use crate::{
    events::{EventRecorder, Involved},
    informer::InformerEvent,
    local_api::{LocalApi, LocalApiError, ObjectRef, PatchType},
};

/// How often a node with NoExecute taints is looked at again for pods
/// that arrived since (pods are not watched here).
const EVICTION_RECHECK: Duration = Duration::from_secs(10);
/// The conditions an agent reports, set to Unknown when it goes silent.
const AGENT_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// When a node was last heard from, and the marks that tell a new
/// heartbeat from an old one.
#[derive(Debug, Clone)]
struct Heard {
    at: Instant,
    lease_renewed: Option<Timestamp>,
    status_heartbeat: Option<Timestamp>,
}

pub struct NodeLifecycleController {
    api: LocalApi,
    events: EventRecorder,
    grace: Duration,
    nodes: Cache<Node>,
    heard: HashMap<String, Heard>,
    queue: WorkQueue,
}

fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

fn status_heartbeat(node: &Node) -> Option<Timestamp> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_heartbeat_time
        .as_ref()
        .map(|t| t.0)
}

/// The agent's conditions as they stand once it has gone silent.
fn silent_conditions(node: &Node, now: Timestamp) -> Vec<NodeCondition> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for condition in conditions
        .iter_mut()
        .filter(|c| AGENT_CONDITIONS.contains(&c.type_.as_str()))
    {
        if condition.status != "Unknown" {
            condition.last_transition_time = Some(Time(now));
        }
        condition.status = "Unknown".to_owned();
        condition.reason = Some("NodeStatusUnknown".to_owned());
        condition.message = Some("Kubelet stopped posting node status.".to_owned());
    }
    if !conditions.iter().any(|c| c.type_ == "Ready") {
        conditions.push(NodeCondition {
            type_: "Ready".to_owned(),
            status: "Unknown".to_owned(),
            reason: Some("NodeStatusNeverUpdated".to_owned()),
            message: Some("Kubelet never posted node status.".to_owned()),
            last_transition_time: Some(Time(now)),
            last_heartbeat_time: None,
        });
    }
    conditions
}

impl Controller for NodeLifecycleController {
    type Error = LocalApiError;

    fn queue(&mut self) -> &mut WorkQueue {
        &mut self.queue
    }

    /// Silence is noticed by looking, a few times per grace period.
    fn tick_every(&self) -> Option<Duration> {
        Some((self.grace / 4).clamp(Duration::from_millis(200), Duration::from_secs(5)))
    }

    fn tick(&mut self) {
        self.queue_silent_nodes();
    }

    async fn reconcile(&mut self, name: &str) -> Result<Option<Duration>, LocalApiError> {
        let Some(node) = self.nodes.get(name).cloned() else {
            return Ok(None);
        };
        let silent = self
            .heard
            .get(name)
            .is_some_and(|h| h.at.elapsed() > self.grace);
        if silent && ready_status(&node) != Some("Unknown") {
            self.mark_unknown(&node).await?;
            // The node's own event brings it back for its taints.
            return Ok(None);
        }
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let wanted = taints::desired(&current, ready_status(&node), Timestamp::now());
        if wanted != current {
            let patch = json!({
                "metadata": { "resourceVersion": node.metadata.resource_version },
                "spec": { "taints": if wanted.is_empty() { Value::Null } else { json!(wanted) } },
            });
            let at = ObjectRef::<Node>::of(&node.metadata);
            self.api.patch(&at, None, PatchType::Merge, &patch).await?;
            return Ok(None);
        }
        if current.iter().any(|t| t.effect == "NoExecute") {
            return self.evict(name, &current).await.map(Some);
        }
        Ok(None)
    }
}

impl NodeLifecycleController {
    /// A controller calling a node unreachable after `grace` without a
    /// heartbeat (kube-controller-manager's --node-monitor-grace-period).
    pub fn new(api: LocalApi, events: EventRecorder, grace: Duration) -> Self {
        Self {
            api,
            events,
            grace,
            nodes: Cache::default(),
            heard: HashMap::new(),
            queue: WorkQueue::default(),
        }
    }

    fn heard_from(&mut self, name: &str, lease: Option<Timestamp>, status: Option<Timestamp>) {
        let heard = self.heard.entry(name.to_owned()).or_insert(Heard {
            at: Instant::now(),
            lease_renewed: lease,
            status_heartbeat: status,
        });
        let renewed = lease.is_some() && lease != heard.lease_renewed;
        let posted = status.is_some() && status != heard.status_heartbeat;
        if renewed || posted {
            heard.at = Instant::now();
        }
        if lease.is_some() {
            heard.lease_renewed = lease;
        }
        if status.is_some() {
            heard.status_heartbeat = status;
        }
    }

    pub(super) fn on_node(&mut self, event: InformerEvent<Arc<Node>>) {
        match self.nodes.apply(event) {
            Change::Listed => {
                let nodes: Vec<Arc<Node>> = self.nodes.values().cloned().collect();
                for node in nodes {
                    self.node_seen(&node);
                }
            }
            Change::Applied { new, .. } => self.node_seen(&new),
            Change::Deleted { key, .. } => {
                self.heard.remove(&key);
            }
        }
    }

    fn node_seen(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.heard_from(&name, None, status_heartbeat(node));
        self.queue.add(name);
    }

    pub(super) fn on_lease(&mut self, event: InformerEvent<Lease>) {
        let leases = match event {
            InformerEvent::Listed(all) => all,
            InformerEvent::Applied(lease) => vec![lease],
            InformerEvent::Deleted(_) => return,
        };
        for lease in leases {
            let renewed = lease.spec.and_then(|s| s.renew_time).map(|t| t.0);
            if let Some(name) = lease.metadata.name {
                self.heard_from(&name, renewed, None);
            }
        }
    }

    /// Queues the nodes that went silent and are not yet marked so.
    fn queue_silent_nodes(&mut self) {
        let silent: Vec<String> = self
            .nodes
            .iter()
            .filter(|(name, node)| {
                ready_status(node) != Some("Unknown")
                    && self
                        .heard
                        .get(*name)
                        .is_some_and(|h| h.at.elapsed() > self.grace)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in silent {
            self.queue.add(name);
        }
    }

    async fn mark_unknown(&self, node: &Node) -> Result<(), LocalApiError> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let now = Timestamp::now();
        let patch = json!({
            "metadata": { "resourceVersion": node.metadata.resource_version },
            "status": { "conditions": silent_conditions(node, now) },
        });
        let at = ObjectRef::<Node>::of(&node.metadata);
        if self
            .api
            .patch(&at, Some("status"), PatchType::Merge, &patch)
            .await?
            .is_none()
        {
            return Ok(());
        }
        tracing::info!(
            node = name,
            "no heartbeat within the grace period: node unreachable"
        );
        self.events.record(
            Involved::of("v1", "Node", &node.metadata),
            "Normal",
            "NodeNotReady",
            &format!("Node {name} status is now: NodeNotReady"),
        );
        for pod in self.pods_on(name).await? {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if !ready {
                continue;
            }
            let patch = json!({ "status": { "conditions": [{
                "type": "Ready", "status": "False", "lastTransitionTime": Time(now),
            }] } });
            let at = ObjectRef::<Pod>::of(&pod.metadata);
            self.api
                .patch(&at, Some("status"), PatchType::Strategic, &patch)
                .await?;
            self.events.record(
                Involved::of("v1", "Pod", &pod.metadata),
                "Warning",
                "NodeNotReady",
                "Node is not ready",
            );
        }
        Ok(())
    }

    /// Deletes the pods whose tolerations of the node's NoExecute taints
    /// have run out; returns when to look again.
    async fn evict(&self, name: &str, taints: &[Taint]) -> Result<Duration, LocalApiError> {
        let now = Timestamp::now();
        let mut recheck = EVICTION_RECHECK;
        for pod in self.pods_on(name).await? {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let tolerations = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default();
            match taints::eviction(&tolerations, taints) {
                Eviction::Never => continue,
                Eviction::At(at) if at > now => {
                    let wait = now.duration_until(at).unsigned_abs();
                    recheck = recheck.min(wait);
                    continue;
                }
                Eviction::At(_) | Eviction::Now => {}
            }
            let at = ObjectRef::<Pod>::of(&pod.metadata);
            let options = DeleteOptions {
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteOptions::default()
            };
            match self.api.delete(&at, &options).await {
                Ok(Some(())) => {}
                // Gone or replaced meanwhile: nothing of ours to evict.
                Ok(None) => continue,
                Err(err) if err.code == 409 => continue,
                Err(err) => return Err(err),
            }
            self.events.record(
                Involved::of("v1", "Pod", &pod.metadata),
                "Normal",
                "TaintManagerEviction",
                &format!(
                    "Marking for deletion Pod {}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default(),
                ),
            );
        }
        Ok(recheck)
    }

    async fn pods_on(&self, node: &str) -> Result<Vec<Pod>, LocalApiError> {
        let selector = format!("spec.nodeName={node}");
        let list = self.api.list_by_fields::<Pod>(None, &selector).await?;
        Ok(list.items)
    }
}
