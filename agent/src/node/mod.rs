//! The node as control sees it: registered with its resources, addresses
//! and versions, its Ready condition posted, and its Lease renewed every
//! 10 seconds as the kubelet's heartbeat.

pub mod facts;

use std::{path::PathBuf, time::Duration};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{
            DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
        },
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time},
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

/// How often the Lease is renewed, and how long it lasts.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;
/// Node status is posted at least this often, as the kubelet's
/// nodeStatusReportFrequency.
const STATUS_REPORT: Duration = Duration::from_secs(300);
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Annotation naming the SHA-256 of the agent's serving certificate, which
/// control pins when it connects to the agent.
pub const SERVING_CERT_ANNOTATION: &str = "capstan.dev/serving-cert-sha256";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("registering node {node}: {source}")]
    Api {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("node {0} has no spec.podCIDR: control's node IPAM did not give it one")]
    NoPodCidr(String),
}

/// What the agent says about its node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub host_ip: String,
    pub port: u16,
    pub serving_cert_sha256: String,
    pub max_pods: u32,
    pub data_dir: PathBuf,
    pub containerd_version: String,
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn condition(kind: &str, status: &str, reason: &str, message: &str) -> NodeCondition {
    NodeCondition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(Time(now())),
        last_transition_time: Some(Time(now())),
    }
}

fn status(config: &NodeConfig, previous: Option<&NodeStatus>) -> NodeStatus {
    let resources = facts::resources(config.max_pods, &config.data_dir);
    let mut conditions = vec![
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ];
    for condition in &mut conditions {
        if let Some(old) = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|all| all.iter().find(|c| c.type_ == condition.type_))
            .filter(|old| old.status == condition.status)
        {
            condition.last_transition_time = old.last_transition_time.clone();
        }
    }
    NodeStatus {
        capacity: Some(resources.capacity),
        allocatable: Some(resources.allocatable),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: config.host_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: config.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.port),
            }),
        }),
        node_info: Some(facts::system_info(&config.containerd_version)),
        ..Default::default()
    }
}

/// Creates the Node (or updates the one there) and posts its status;
/// returns it, with the pod CIDR control gave it.
pub async fn register(client: &kube::Client, config: &NodeConfig) -> Result<Node, NodeError> {
    let api_error = |source| NodeError::Api {
        node: config.name.clone(),
        source,
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = json!({
        "kubernetes.io/hostname": config.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": facts::architecture(),
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": facts::architecture(),
    });
    let annotations = json!({ SERVING_CERT_ANNOTATION: config.serving_cert_sha256 });
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": config.name, "labels": labels, "annotations": annotations },
    }))
    .unwrap_or_default();
    let node = match nodes.create(&PostParams::default(), &node).await {
        Ok(node) => node,
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let patch = json!({ "metadata": { "labels": labels, "annotations": annotations } });
            nodes
                .patch(&config.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_error)?
        }
        Err(err) => return Err(api_error(err)),
    };
    let node = post_status(&nodes, config, node.status.as_ref())
        .await
        .map_err(api_error)?;
    if node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_none_or(str::is_empty)
    {
        return Err(NodeError::NoPodCidr(config.name.clone()));
    }
    Ok(node)
}

async fn post_status(
    nodes: &Api<Node>,
    config: &NodeConfig,
    previous: Option<&NodeStatus>,
) -> Result<Node, kube::Error> {
    let patch = json!({ "status": status(config, previous) });
    nodes
        .patch_status(&config.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Whether control says the node is not Ready (its node lifecycle
/// controller marks a node it has not heard from Unknown): then the agent,
/// which is evidently back, says otherwise at once.
/// Returns control's status of the node in that case.
async fn marked_not_ready(nodes: &Api<Node>, name: &str) -> Option<NodeStatus> {
    let status = nodes.get_status(name).await.ok()?.status?;
    let marked = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status != "True");
    marked.then_some(status)
}

/// Renews the node's Lease every 10 s and posts its status every 5
/// minutes, or as soon as control has marked the node not Ready, until
/// the agent stops.
pub async fn heartbeat(client: kube::Client, config: NodeConfig, node: Node) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let mut last_status = tokio::time::Instant::now();
    let mut previous = node.status.clone();
    let owner = OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Node".to_owned(),
        name: config.name.clone(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    };
    loop {
        if let Err(err) = renew_lease(&leases, &config.name, &owner).await {
            tracing::warn!(%err, "renewing the node lease");
        }
        let marked = marked_not_ready(&nodes, &config.name).await;
        let due = marked.is_some() || last_status.elapsed() >= STATUS_REPORT;
        if let Some(marked) = marked {
            previous = Some(marked);
        }
        if due {
            match post_status(&nodes, &config, previous.as_ref()).await {
                Ok(node) => {
                    previous = node.status;
                    last_status = tokio::time::Instant::now();
                }
                Err(err) => tracing::warn!(%err, "posting node status"),
            }
        }
        tokio::time::sleep(LEASE_RENEW).await;
    }
}

async fn renew_lease(
    leases: &Api<Lease>,
    node: &str,
    owner: &OwnerReference,
) -> Result<(), kube::Error> {
    let renewed = json!({ "spec": { "holderIdentity": node, "renewTime": MicroTime(now()) } });
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&renewed))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_owned()),
                    namespace: Some(LEASE_NAMESPACE.to_owned()),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_owned()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(MicroTime(now())),
                    ..Default::default()
                }),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(drop)
        }
        Err(err) => Err(err),
    }
}
