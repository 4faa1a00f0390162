//! Services: defaults, validation, and the allocation of cluster IPs from
//! 10.96.0.0/12 (the first address is the `kubernetes` Service's) and of
//! node ports from 30000-32767.
//!
//! Each allocation is a key of its own in the store, created only if
//! absent, so two concurrent creates can never take the same address.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec, ServiceStatus},
    apimachinery::pkg::util::intstr::IntOrString,
    jiff,
};
use serde_json::{Value, json};

use super::pod_spec::validate_int_or_name;
use crate::{
    errors::ApiError,
    registry::{
        FieldError, Kind, NameRule, ResourceInfo,
        allocations::{release, take},
        status,
        table::{AGE, Column, NAME, age, joined_or_none, or_none},
        validation::labels,
    },
    store::Store,
};

/// The service CIDR, 10.96.0.0/12.
const SERVICE_NETWORK: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const SERVICE_PREFIX: u32 = 12;
/// The cluster IP of `kubernetes.default`, never handed out otherwise.
pub const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The cluster IP of `kube-dns.kube-system` (the agents' `--cluster-dns`),
/// never handed out otherwise either.
pub const KUBE_DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const NODE_PORTS: std::ops::RangeInclusive<i32> = 30000..=32767;

const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const AFFINITIES: &[&str] = &["None", "ClientIP"];

#[derive(Debug, Clone)]
pub struct Services;

fn in_service_network(ip: Ipv4Addr) -> bool {
    u32::from(ip) >> (32 - SERVICE_PREFIX) == SERVICE_NETWORK >> (32 - SERVICE_PREFIX)
}

fn ip_key(ip: Ipv4Addr) -> String {
    format!("/registry/allocations/clusterips/{ip}")
}

fn port_key(port: i32) -> String {
    format!("/registry/allocations/nodeports/{port}")
}

fn service_type(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("ClusterIP")
}

fn wants_cluster_ip(spec: &ServiceSpec) -> bool {
    service_type(spec) != "ExternalName" && spec.cluster_ip.as_deref() != Some("None")
}

fn wants_node_ports(spec: &ServiceSpec) -> bool {
    matches!(service_type(spec), "NodePort" | "LoadBalancer")
}

fn owner(service: &Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default()
    )
}

/// A free address of the service network, starting the search at a random
/// offset so allocations spread out.
async fn allocate_ip(store: &dyn Store, owner: &str) -> Result<Ipv4Addr, ApiError> {
    let size = 1_u32 << (32 - SERVICE_PREFIX);
    let start = rand::random::<u32>() % size;
    for step in 0..size {
        let offset = (start + step) % size;
        let ip = Ipv4Addr::from(SERVICE_NETWORK + offset);
        // Skip the network address, the kubernetes and kube-dns Services
        // and broadcast.
        if offset <= 1 || offset == size - 1 || ip == KUBE_DNS_SERVICE_IP {
            continue;
        }
        if take(store, &ip_key(ip), owner).await? {
            return Ok(ip);
        }
    }
    Err(ApiError::unavailable(
        "the service network 10.96.0.0/12 is full",
    ))
}

async fn allocate_port(store: &dyn Store, owner: &str) -> Result<i32, ApiError> {
    let size = NODE_PORTS.end() - NODE_PORTS.start() + 1;
    let start = rand::random::<u32>() as i32 % size;
    for step in 0..size {
        let port = NODE_PORTS.start() + (start + step).rem_euclid(size);
        if take(store, &port_key(port), owner).await? {
            return Ok(port);
        }
    }
    Err(ApiError::unavailable("no node port is free in 30000-32767"))
}

impl Services {
    /// Allocates what `service` asks for and is not already `held` (the
    /// previous version's allocations, on update).
    async fn allocate(
        &self,
        store: &dyn Store,
        service: &mut Service,
        held: Option<&Service>,
    ) -> Result<(), ApiError> {
        let owner = owner(service);
        let name = service.metadata.name.clone().unwrap_or_default();
        let spec = service.spec.get_or_insert_with(Default::default);
        let held_spec = held.and_then(|h| h.spec.as_ref());
        if wants_cluster_ip(spec)
            && held_spec.is_none_or(|h| h.cluster_ip.as_deref().is_none_or(str::is_empty))
        {
            let ip = match spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty()) {
                Some(requested) => {
                    let ip: Ipv4Addr = requested
                        .parse()
                        .map_err(|_| invalid_ip(&name, requested, "must be a valid IP address"))?;
                    if !in_service_network(ip) {
                        return Err(invalid_ip(
                            &name,
                            requested,
                            "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12",
                        ));
                    }
                    if !take(store, &ip_key(ip), &owner).await? {
                        return Err(invalid_ip(
                            &name,
                            requested,
                            &format!(
                                "failed to allocate IP {requested}: provided IP is already allocated"
                            ),
                        ));
                    }
                    ip
                }
                None => allocate_ip(store, &owner).await?,
            };
            spec.cluster_ip = Some(ip.to_string());
            spec.cluster_ips = Some(vec![ip.to_string()]);
        }
        if wants_node_ports(spec) {
            let held_ports: Vec<i32> = held_spec
                .into_iter()
                .flat_map(|h| h.ports.iter().flatten())
                .filter_map(|p| p.node_port)
                .collect();
            for (i, port) in spec.ports.iter_mut().flatten().enumerate() {
                match port.node_port {
                    Some(requested) if held_ports.contains(&requested) => {}
                    Some(requested) => {
                        if !take(store, &port_key(requested), &owner).await? {
                            return Err(ApiError::invalid(
                                crate::registry::subject::<Self>(&name),
                                &[FieldError::invalid(
                                    format!("spec.ports[{i}].nodePort"),
                                    requested,
                                    "provided port is already allocated",
                                )],
                            ));
                        }
                    }
                    None => port.node_port = Some(allocate_port(store, &owner).await?),
                }
            }
        }
        Ok(())
    }
}

fn invalid_ip(name: &str, ip: &str, why: &str) -> ApiError {
    ApiError::invalid(
        crate::registry::subject::<Services>(name),
        &[FieldError::invalid(
            "spec.clusterIPs",
            format!("[\"{ip}\"]"),
            why,
        )],
    )
}

#[async_trait]
impl Kind for Services {
    type Object = Service;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        categories: &["all"],
        namespaced: true,
        subresources: &[status("", "v1", "Service")],
    };
    const NAMES: NameRule = NameRule::Dns1035;

    fn default(&self, service: &mut Service) {
        let spec = service.spec.get_or_insert_with(Default::default);
        spec.type_.get_or_insert_with(|| "ClusterIP".to_owned());
        if service_type(spec) == "ExternalName" {
            return;
        }
        spec.session_affinity
            .get_or_insert_with(|| "None".to_owned());
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
        spec.ip_families
            .get_or_insert_with(|| vec!["IPv4".to_owned()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".to_owned());
        if wants_node_ports(spec) {
            spec.external_traffic_policy
                .get_or_insert_with(|| "Cluster".to_owned());
        }
        for port in spec.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".to_owned());
            port.target_port.get_or_insert(IntOrString::Int(port.port));
        }
    }

    fn validate(&self, service: &Service) -> Vec<FieldError> {
        let Some(spec) = &service.spec else {
            return vec![FieldError::required("spec")];
        };
        let mut errors = Vec::new();
        let kind = service_type(spec);
        if !TYPES.contains(&kind) {
            errors.push(FieldError::not_supported("spec.type", kind, TYPES));
        }
        if kind == "ExternalName" {
            if spec.external_name.as_deref().is_none_or(str::is_empty) {
                errors.push(FieldError::required("spec.externalName"));
            }
            return errors;
        }
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ports.is_empty() && spec.cluster_ip.as_deref() != Some("None") {
            errors.push(FieldError::required("spec.ports"));
        }
        errors.extend(validate_ports(ports, kind));
        if let Some(affinity) = spec.session_affinity.as_deref()
            && !AFFINITIES.contains(&affinity)
        {
            errors.push(FieldError::not_supported(
                "spec.sessionAffinity",
                affinity,
                AFFINITIES,
            ));
        }
        errors.extend(labels(spec.selector.as_ref(), "spec.selector"));
        errors
    }

    fn validate_update(&self, new: &Service, old: &Service) -> Vec<FieldError> {
        let (Some(new_spec), Some(old_spec)) = (&new.spec, &old.spec) else {
            return Vec::new();
        };
        let old_ip = old_spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty());
        let new_ip = new_spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty());
        // An update that leaves clusterIP out keeps it (it was allocated).
        if old_ip.is_some()
            && new_ip.is_some()
            && old_ip != new_ip
            && service_type(new_spec) != "ExternalName"
        {
            return vec![FieldError::immutable(
                "spec.clusterIPs[0]",
                new_ip.unwrap_or_default(),
            )];
        }
        Vec::new()
    }

    fn initial_status(&self, service: &mut Service) {
        service.status = Some(ServiceStatus {
            load_balancer: Some(Default::default()),
            conditions: None,
        });
    }

    fn field(&self, service: &Service, field: &str) -> Option<String> {
        let spec = service.spec.as_ref();
        match field {
            "spec.clusterIP" => Some(spec.and_then(|s| s.cluster_ip.clone()).unwrap_or_default()),
            "spec.type" => Some(spec.and_then(|s| s.type_.clone()).unwrap_or_default()),
            _ => None,
        }
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new(
                "Type",
                "string",
                "type determines how the Service is exposed.",
            ),
            Column::new(
                "Cluster-IP",
                "string",
                "clusterIP is the IP address of the service and is usually assigned randomly.",
            ),
            Column::new(
                "External-IP",
                "string",
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            Column::new(
                "Port(s)",
                "string",
                "The list of ports that are exposed by this service.",
            ),
            AGE,
            Column::new(
                "Selector",
                "string",
                "Route service traffic to pods with label keys and values matching this selector.",
            )
            .wide(),
        ]
    }

    fn cells(&self, service: &Service, now: jiff::Timestamp) -> Vec<Value> {
        let spec = service.spec.clone().unwrap_or_default();
        let kind = service_type(&spec).to_owned();
        let external = match kind.as_str() {
            "ExternalName" => spec.external_name.clone().unwrap_or_default(),
            "LoadBalancer" => {
                let ingress: Vec<String> = service
                    .status
                    .iter()
                    .flat_map(|s| s.load_balancer.iter())
                    .flat_map(|lb| lb.ingress.iter().flatten())
                    .filter_map(|i| i.ip.clone().or(i.hostname.clone()))
                    .chain(spec.external_ips.clone().unwrap_or_default())
                    .collect();
                if ingress.is_empty() {
                    "<pending>".to_owned()
                } else {
                    ingress.join(",")
                }
            }
            _ => spec
                .external_ips
                .clone()
                .filter(|e| !e.is_empty())
                .map(|e| e.join(","))
                .unwrap_or_else(|| "<none>".to_owned()),
        };
        let ports: Vec<String> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
                match p.node_port {
                    Some(node_port) => format!("{}:{}/{protocol}", p.port, node_port),
                    None => format!("{}/{protocol}", p.port),
                }
            })
            .collect();
        let selector = spec
            .selector
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>();
        vec![
            json!(service.metadata.name),
            json!(kind),
            or_none(spec.cluster_ip.as_deref()),
            json!(external),
            joined_or_none(ports),
            age(service.metadata.creation_timestamp.as_ref(), now),
            joined_or_none(selector),
        ]
    }

    async fn before_create(
        &self,
        store: &dyn Store,
        service: &mut Service,
    ) -> Result<(), ApiError> {
        self.allocate(store, service, None).await
    }

    async fn before_update(
        &self,
        store: &dyn Store,
        new: &mut Service,
        old: &Service,
    ) -> Result<(), ApiError> {
        // Keep what was allocated when an update leaves it out.
        if let (Some(new_spec), Some(old_spec)) = (new.spec.as_mut(), old.spec.as_ref())
            && new_spec.cluster_ip.as_deref().is_none_or(str::is_empty)
            && wants_cluster_ip(new_spec)
        {
            new_spec.cluster_ip = old_spec.cluster_ip.clone();
            new_spec.cluster_ips = old_spec.cluster_ips.clone();
        }
        self.allocate(store, new, Some(old)).await
    }

    async fn after_delete(&self, store: &dyn Store, service: &Service) {
        let Some(spec) = &service.spec else { return };
        if let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
            release(store, &ip_key(ip)).await;
        }
        for port in spec.ports.iter().flatten().filter_map(|p| p.node_port) {
            release(store, &port_key(port)).await;
        }
    }
}

fn validate_ports(ports: &[ServicePort], kind: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) if !names.insert(name.to_owned()) => {
                errors.push(FieldError::duplicate(format!("{path}.name"), name));
            }
            Some(_) => {}
            None if ports.len() > 1 => errors.push(FieldError::required(format!("{path}.name"))),
            None => {}
        }
        if !(1..=65535).contains(&port.port) {
            errors.push(FieldError::invalid(
                format!("{path}.port"),
                port.port,
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
        if let Some(target) = &port.target_port {
            errors.extend(validate_int_or_name(target, &format!("{path}.targetPort")));
        }
        if let Some(node_port) = port.node_port {
            if kind == "ClusterIP" {
                errors.push(FieldError::forbidden(
                    format!("{path}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !NODE_PORTS.contains(&node_port) {
                errors.push(FieldError::invalid(
                    format!("{path}.nodePort"),
                    node_port,
                    "provided port is not in the valid range. The range of valid ports is 30000-32767",
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_network_is_10_96_0_0_12() {
        assert!(in_service_network(Ipv4Addr::new(10, 96, 0, 10)));
        assert!(in_service_network(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!in_service_network(Ipv4Addr::new(10, 112, 0, 1)));
        assert!(in_service_network(KUBERNETES_SERVICE_IP));
    }

    #[test]
    fn ports_are_defaulted_and_checked() {
        let mut service = Service {
            spec: Some(ServiceSpec {
                ports: Some(vec![
                    ServicePort {
                        port: 80,
                        ..Default::default()
                    },
                    ServicePort {
                        port: 70000,
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        Services.default(&mut service);
        let spec = service.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            spec.ports.as_ref().unwrap()[0].target_port,
            Some(IntOrString::Int(80))
        );
        let fields: Vec<String> = Services
            .validate(&service)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.ports[0].name",
                "spec.ports[1].name",
                "spec.ports[1].port",
                "spec.ports[1].targetPort"
            ]
        );
    }
}
