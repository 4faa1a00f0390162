//! Nodes, EndpointSlices (discovery.k8s.io/v1) and Leases
//! (coordination.k8s.io/v1): the kinds agents and controllers keep up to
//! date about the cluster itself.

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Node, discovery::v1::EndpointSlice},
    jiff,
};
use serde_json::{Value, json};

use crate::registry::{
    FieldError, Kind, ResourceInfo, status,
    table::{AGE, Column, NAME, age, joined_or_none, or_none},
};

#[derive(Debug, Clone)]
pub struct Nodes;

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
}

#[derive(Debug, Clone)]
pub struct EndpointSlices;

const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];

impl Kind for EndpointSlices {
    type Object = EndpointSlice;

    const INFO: ResourceInfo = ResourceInfo {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        short_names: &[],
        categories: &[],
        namespaced: true,
        subresources: &[],
    };

    fn validate(&self, slice: &EndpointSlice) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !ADDRESS_TYPES.contains(&slice.address_type.as_str()) {
            errors.push(FieldError::not_supported(
                "addressType",
                &slice.address_type,
                ADDRESS_TYPES,
            ));
        }
        for (i, endpoint) in slice.endpoints.iter().enumerate() {
            if endpoint.addresses.is_empty() {
                errors.push(FieldError::required(format!("endpoints[{i}].addresses")));
            }
        }
        errors
    }

    fn validate_update(&self, new: &EndpointSlice, old: &EndpointSlice) -> Vec<FieldError> {
        if new.address_type != old.address_type {
            vec![FieldError::immutable("addressType", &new.address_type)]
        } else {
            Vec::new()
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new(
                "AddressType",
                "string",
                "The type of addresses this slice holds.",
            ),
            Column::new("Ports", "string", "The ports of the endpoints."),
            Column::new("Endpoints", "string", "The addresses of the endpoints."),
            AGE,
        ]
    }

    fn cells(&self, slice: &EndpointSlice, now: jiff::Timestamp) -> Vec<Value> {
        let ports: Vec<String> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port.map(|n| n.to_string()))
            .collect();
        let mut addresses: Vec<String> = slice
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.clone())
            .collect();
        let more = addresses.len().saturating_sub(3);
        addresses.truncate(3);
        let mut endpoints = joined_or_none(addresses);
        if more > 0
            && let Value::String(text) = &mut endpoints
        {
            text.push_str(&format!(" + {more} more..."));
        }
        vec![
            json!(slice.metadata.name),
            json!(slice.address_type),
            joined_or_none(ports),
            endpoints,
            age(slice.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct Leases;

impl Kind for Leases {
    type Object = Lease;

    const INFO: ResourceInfo = ResourceInfo {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        categories: &[],
        namespaced: true,
        subresources: &[],
    };

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new("Holder", "string", "The holder of the lease."),
            AGE,
        ]
    }

    fn cells(&self, lease: &Lease, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            json!(lease.metadata.name),
            or_none(
                lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref()),
            ),
            age(lease.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}
