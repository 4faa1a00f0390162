//! Nodes: their table, and node IPAM: each node gets a /24 of the cluster
//! network 10.244.0.0/16 in spec.podCIDR when it is created, kept until the
//! node is deleted.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use k8s_openapi::{api::core::v1::Node, jiff};
use serde_json::{Value, json};

use crate::{
    errors::ApiError,
    registry::subject,
    registry::{
        FieldError, Kind, ResourceInfo,
        allocations::{release, take},
        status,
        table::{AGE, Column, NAME, age, joined_or_none, or_none},
    },
    store::Store,
};

/// The cluster network pods take their addresses from, 10.244.0.0/16.
const CLUSTER_NETWORK: [u8; 2] = [10, 244];
/// Node subnets are /24s: 256 nodes of up to 254 pods each.
const NODE_SUBNETS: u16 = 256;

fn subnet(index: u8) -> String {
    format!(
        "{}/24",
        Ipv4Addr::new(CLUSTER_NETWORK[0], CLUSTER_NETWORK[1], index, 0)
    )
}

/// The index of `cidr` if it is one of the cluster network's node subnets.
fn subnet_index(cidr: &str) -> Option<u8> {
    let (address, prefix) = cidr.split_once('/')?;
    let address: Ipv4Addr = address.parse().ok()?;
    let [a, b, index, host] = address.octets();
    ([a, b] == CLUSTER_NETWORK && host == 0 && prefix == "24").then_some(index)
}

fn subnet_key(index: u8) -> String {
    format!("/registry/allocations/podcidrs/{index}")
}

fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .filter(|c| !c.is_empty())
}

fn set_pod_cidr(node: &mut Node, cidr: String) {
    let spec = node.spec.get_or_insert_default();
    spec.pod_cidrs = Some(vec![cidr.clone()]);
    spec.pod_cidr = Some(cidr);
}

/// The lowest free node subnet, taken for `owner`; None when all are
/// taken.
async fn allocate(store: &dyn Store, owner: &str) -> Result<Option<String>, ApiError> {
    for index in 0..NODE_SUBNETS {
        let index = index as u8;
        if take(store, &subnet_key(index), owner).await? {
            return Ok(Some(subnet(index)));
        }
    }
    Ok(None)
}

#[derive(Debug, Clone)]
pub struct Nodes;

#[async_trait]
impl Kind for Nodes {
    type Object = Node;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        categories: &[],
        namespaced: false,
        subresources: &[status("", "v1", "Node")],
    };

    fn field(&self, node: &Node, field: &str) -> Option<String> {
        (field == "spec.unschedulable").then(|| {
            node.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
                .to_string()
        })
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new("Status", "string", "The status of the node"),
            Column::new("Roles", "string", "The roles of the node"),
            AGE,
            Column::new("Version", "string", "Kubelet Version reported by the node."),
            Column::new("Internal-IP", "string", "List of addresses reachable to the node.").wide(),
            Column::new("External-IP", "string", "List of addresses reachable to the node.").wide(),
            Column::new("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).").wide(),
            Column::new("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).").wide(),
            Column::new("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).").wide(),
        ]
    }

    fn cells(&self, node: &Node, now: jiff::Timestamp) -> Vec<Value> {
        let status = node.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready");
        let mut state = match ready.map(|c| c.status.as_str()) {
            Some("True") => "Ready".to_owned(),
            Some(_) => "NotReady".to_owned(),
            None => "Unknown".to_owned(),
        };
        if node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
        {
            state.push_str(",SchedulingDisabled");
        }
        let roles: Vec<String> = node
            .metadata
            .labels
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                k.strip_prefix("node-role.kubernetes.io/")
                    .map(str::to_owned)
                    .or_else(|| (k == "kubernetes.io/role").then(|| v.clone()))
            })
            .filter(|r| !r.is_empty())
            .collect();
        let address = |kind: &str| {
            status
                .addresses
                .iter()
                .flatten()
                .find(|a| a.type_ == kind)
                .map(|a| a.address.clone())
        };
        let info = status.node_info.clone().unwrap_or_default();
        vec![
            json!(node.metadata.name),
            json!(state),
            joined_or_none(roles),
            age(node.metadata.creation_timestamp.as_ref(), now),
            json!(info.kubelet_version),
            or_none(address("InternalIP").as_deref()),
            or_none(address("ExternalIP").as_deref()),
            json!(info.os_image),
            json!(info.kernel_version),
            json!(info.container_runtime_version),
        ]
    }

    fn validate(&self, node: &Node) -> Vec<FieldError> {
        let Some(spec) = &node.spec else {
            return Vec::new();
        };
        let mut errors = Vec::new();
        if let Some(cidr) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty())
            && subnet_index(cidr).is_none()
        {
            errors.push(FieldError::invalid(
                "spec.podCIDR",
                cidr,
                "must be a /24 of the cluster network 10.244.0.0/16",
            ));
        }
        if let Some(cidrs) = &spec.pod_cidrs
            && !cidrs.is_empty()
            && cidrs.first().map(String::as_str) != spec.pod_cidr.as_deref()
        {
            errors.push(FieldError::invalid(
                "spec.podCIDRs",
                cidrs.join(","),
                "the first entry must match spec.podCIDR",
            ));
        }
        errors
    }

    fn validate_update(&self, new: &Node, old: &Node) -> Vec<FieldError> {
        match (pod_cidr(old), pod_cidr(new)) {
            (Some(old), new) if new != Some(old) => vec![FieldError::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            )],
            _ => Vec::new(),
        }
    }

    async fn before_create(&self, store: &dyn Store, node: &mut Node) -> Result<(), ApiError> {
        let owner = node.metadata.name.clone().unwrap_or_default();
        match pod_cidr(node).and_then(subnet_index) {
            Some(index) => {
                if !take(store, &subnet_key(index), &owner).await? {
                    let cidr = subnet(index);
                    return Err(ApiError::invalid(
                        subject::<Self>(&owner),
                        &[FieldError::invalid(
                            "spec.podCIDR",
                            cidr,
                            "is already allocated to another node",
                        )],
                    ));
                }
            }
            None => match allocate(store, &owner).await? {
                Some(cidr) => set_pod_cidr(node, cidr),
                // As Kubernetes' node IPAM does, the node is still
                // created, without a podCIDR: it can hold no pods of its
                // own network, but it exists and its agent says why.
                None => tracing::warn!(
                    node = owner,
                    "CIDRNotAvailable: the cluster network 10.244.0.0/16 has no free /24 for another node"
                ),
            },
        }
        Ok(())
    }

    async fn after_delete(&self, store: &dyn Store, node: &Node) {
        if let Some(index) = pod_cidr(node).and_then(subnet_index) {
            release(store, &subnet_key(index)).await;
        }
    }
}
