//! EndpointSlices (discovery.k8s.io/v1) and Leases (coordination.k8s.io/v1):
//! kinds agents and controllers keep up to date about the cluster itself.

use k8s_openapi::{
    api::{coordination::v1::Lease, discovery::v1::EndpointSlice},
    jiff,
};
use serde_json::{Value, json};

use crate::registry::{
    FieldError, Kind, ResourceInfo,
    table::{AGE, Column, NAME, age, joined_or_none, or_none},
};

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
