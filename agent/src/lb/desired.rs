//! What one Service asks of this node's datapath: for each of its ClusterIP
//! ports, the backends a connect may be sent to, read from its
//! EndpointSlices as kube-proxy reads them.
//!
//! - Headless and ExternalName Services program nothing.
//! - A port's backends are the ready endpoints of the slices that carry a
//!   port of the same name (so named targetPorts, resolved per pod by the
//!   endpoints controller, land on each pod's own number); terminating
//!   endpoints that still serve are used only when nothing is ready.
//! - `internalTrafficPolicy: Local` keeps this node's endpoints only.
//! - ClientIP session affinity carries its timeout (default 3 hours).
//! - Input the datapath cannot honour (port 0, an address that is not
//!   IPv4, SCTP) is skipped, never programmed half.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use k8s_openapi::api::{
    core::v1::{Service, ServicePort, ServiceSpec},
    discovery::v1::{Endpoint, EndpointSlice},
};

use super::service_table::{BackendAddr, Frontend, FrontendSpec, Protocol};

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_SECS: i32 = 10_800;

/// The frontends `service` needs on node `node`, given its slices.
pub fn frontends(
    service: &Service,
    slices: &[&EndpointSlice],
    node: &str,
) -> BTreeMap<Frontend, FrontendSpec> {
    let mut wanted = BTreeMap::new();
    let Some(spec) = &service.spec else {
        return wanted;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return wanted;
    }
    let addresses = cluster_ipv4s(spec);
    let local_only = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity_timeout_secs = match spec.session_affinity.as_deref() {
        Some("ClientIP") => spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(DEFAULT_AFFINITY_SECS)
            .max(1) as u32,
        _ => 0,
    };
    for port in spec.ports.iter().flatten() {
        let Some((number, protocol)) = frontend_port(port) else {
            continue;
        };
        let backends = backends(port, protocol, slices, local_only.then_some(node));
        for &address in &addresses {
            wanted.insert(
                Frontend::new(address, number, protocol),
                FrontendSpec {
                    backends: backends.clone(),
                    affinity_timeout_secs,
                },
            );
        }
    }
    wanted
}

/// The frontends of a Service this node serves itself (the cluster DNS):
/// each ClusterIP port sent to the same port of `address`, whatever its
/// slices say, so the traffic never leaves the node.
pub fn node_local(service: &Service, address: Ipv4Addr) -> BTreeMap<Frontend, FrontendSpec> {
    let mut wanted = BTreeMap::new();
    let Some(spec) = &service.spec else {
        return wanted;
    };
    let addresses = cluster_ipv4s(spec);
    for (number, protocol) in spec.ports.iter().flatten().filter_map(frontend_port) {
        for &ip in &addresses {
            wanted.insert(
                Frontend::new(ip, number, protocol),
                FrontendSpec {
                    backends: BTreeSet::from([BackendAddr(SocketAddrV4::new(address, number))]),
                    affinity_timeout_secs: 0,
                },
            );
        }
    }
    wanted
}

/// A Service's IPv4 cluster IPs (`clusterIPs`, and `clusterIP` for
/// objects written before it).
fn cluster_ipv4s(spec: &ServiceSpec) -> BTreeSet<Ipv4Addr> {
    spec.cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

fn frontend_port(port: &ServicePort) -> Option<(u16, Protocol)> {
    let number = u16::try_from(port.port).ok().filter(|p| *p != 0)?;
    Some((number, protocol(port.protocol.as_deref())?))
}

fn protocol(name: Option<&str>) -> Option<Protocol> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

/// The backends of one Service port: ready ones, else serving terminating
/// ones.
fn backends(
    port: &ServicePort,
    protocol: Protocol,
    slices: &[&EndpointSlice],
    node: Option<&str>,
) -> BTreeSet<BackendAddr> {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(target) = slice_port(slice, port, protocol) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            if node.is_some_and(|node| endpoint.node_name.as_deref() != Some(node)) {
                continue;
            }
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let backend = BackendAddr(SocketAddrV4::new(ip, target));
            match state(endpoint) {
                State::Ready => {
                    ready.insert(backend);
                }
                State::ServingTerminating => {
                    terminating.insert(backend);
                }
                State::Out => {}
            }
        }
    }
    if ready.is_empty() { terminating } else { ready }
}

/// The port number a slice gives the Service port named as `port` is.
fn slice_port(slice: &EndpointSlice, port: &ServicePort, protocol: Protocol) -> Option<u16> {
    let wanted = port.name.as_deref().unwrap_or_default();
    slice
        .ports
        .iter()
        .flatten()
        .find(|p| {
            p.name.as_deref().unwrap_or_default() == wanted
                && self::protocol(p.protocol.as_deref()) == Some(protocol)
        })
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

enum State {
    Ready,
    ServingTerminating,
    Out,
}

/// An endpoint's conditions as the API defines their absence: ready and
/// serving unknown mean true, terminating unknown means false.
fn state(endpoint: &Endpoint) -> State {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    match (ready, serving, terminating) {
        (true, _, false) => State::Ready,
        (_, true, true) => State::ServingTerminating,
        _ => State::Out,
    }
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
