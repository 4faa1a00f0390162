//! The cluster zone as one immutable snapshot, built from the agent's
//! cache of Services and EndpointSlices: per Service its kind (ClusterIP
//! addresses, headless endpoints, or an ExternalName), its named ports,
//! and the reverse names of its addresses. Answering reads a snapshot and
//! never the cache, so a query shares no lock with the watches.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A port with a name, as SRV records name it (`_<name>._<protocol>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    /// Lower case: tcp, udp or sctp.
    pub protocol: String,
    pub port: u16,
}

/// A ready endpoint of a headless Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: IpAddr,
    /// Its `hostname`, or its address with dashes (as CoreDNS names it).
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// The Service's cluster IPs and its named ports.
    ClusterIp {
        addresses: Vec<IpAddr>,
        ports: Vec<NamedPort>,
    },
    /// Ready endpoints, and the named ports of its slices.
    Headless {
        endpoints: Vec<Endpoint>,
        ports: Vec<NamedPort>,
    },
    /// A CNAME to this name.
    ExternalName(String),
}

/// What one build of the zone holds.
#[derive(Debug, Default)]
pub struct Zone {
    services: HashMap<(String, String), ServiceKind>,
    namespaces: HashSet<String>,
    /// What each address's PTR points to, fully qualified.
    reverse: HashMap<IpAddr, String>,
    /// Changes with every build, for the SOA.
    pub serial: u32,
}

impl Zone {
    /// The zone `domain` as `services` and `slices` describe it.
    pub fn build(
        domain: &str,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        serial: u32,
    ) -> Self {
        let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let labels = slice.metadata.labels.as_ref();
            let (Some(namespace), Some(service)) = (
                slice.metadata.namespace.as_deref(),
                labels.and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            slices_of
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
        let mut zone = Zone {
            serial,
            ..Zone::default()
        };
        for service in services {
            let (Some(namespace), Some(name), Some(spec)) = (
                service.metadata.namespace.as_deref(),
                service.metadata.name.as_deref(),
                service.spec.as_ref(),
            ) else {
                continue;
            };
            let fqdn = format!("{name}.{namespace}.svc.{domain}");
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                let target = spec.external_name.clone().unwrap_or_default();
                ServiceKind::ExternalName(target.trim_end_matches('.').to_ascii_lowercase())
            } else if spec.cluster_ip.as_deref() == Some("None") {
                let slices = slices_of
                    .get(&(namespace, name))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let endpoints = ready_endpoints(slices);
                for endpoint in &endpoints {
                    zone.reverse
                        .entry(endpoint.address)
                        .or_insert_with(|| format!("{}.{fqdn}", endpoint.hostname));
                }
                ServiceKind::Headless {
                    endpoints,
                    ports: slice_ports(slices),
                }
            } else {
                let addresses: Vec<IpAddr> = spec
                    .cluster_ips
                    .iter()
                    .flatten()
                    .chain(spec.cluster_ip.iter())
                    .filter_map(|ip| ip.parse().ok())
                    .fold(Vec::new(), |mut all, ip| {
                        if !all.contains(&ip) {
                            all.push(ip);
                        }
                        all
                    });
                for address in &addresses {
                    zone.reverse.insert(*address, fqdn.clone());
                }
                let ports = spec
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| named_port(p.name.as_deref(), p.protocol.as_deref(), p.port))
                    .collect();
                ServiceKind::ClusterIp { addresses, ports }
            };
            zone.namespaces.insert(namespace.to_ascii_lowercase());
            zone.services.insert(
                (namespace.to_ascii_lowercase(), name.to_ascii_lowercase()),
                kind,
            );
        }
        zone
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceKind> {
        self.services.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Whether some Service lives in `namespace`: the agent knows
    /// namespaces by their Services.
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains(namespace)
    }

    /// The name an address's PTR record points to.
    pub fn reverse(&self, address: Ipv4Addr) -> Option<&str> {
        self.reverse.get(&IpAddr::V4(address)).map(String::as_str)
    }
}

fn named_port(name: Option<&str>, protocol: Option<&str>, port: i32) -> Option<NamedPort> {
    let name = name.filter(|n| !n.is_empty())?;
    Some(NamedPort {
        name: name.to_ascii_lowercase(),
        protocol: protocol.unwrap_or("TCP").to_ascii_lowercase(),
        port: u16::try_from(port).ok().filter(|&p| p > 0)?,
    })
}

/// Endpoints the slices call ready (which `publishNotReadyAddresses`
/// makes every endpoint), one per address.
fn ready_endpoints(slices: &[&EndpointSlice]) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for endpoint in slices.iter().flat_map(|s| &s.endpoints) {
        let ready = endpoint
            .conditions
            .as_ref()
            .and_then(|c| c.ready)
            .unwrap_or(true);
        if !ready {
            continue;
        }
        for address in endpoint
            .addresses
            .iter()
            .filter_map(|a| a.parse::<IpAddr>().ok())
        {
            if endpoints.iter().any(|e| e.address == address) {
                continue;
            }
            let hostname = match &endpoint.hostname {
                Some(hostname) if !hostname.is_empty() => hostname.to_ascii_lowercase(),
                _ => address.to_string().replace(['.', ':'], "-"),
            };
            endpoints.push(Endpoint { address, hostname });
        }
    }
    endpoints
}

fn slice_ports(slices: &[&EndpointSlice]) -> Vec<NamedPort> {
    let mut ports: Vec<NamedPort> = Vec::new();
    for port in slices.iter().flat_map(|s| s.ports.iter().flatten()) {
        if let Some(named) = named_port(
            port.name.as_deref(),
            port.protocol.as_deref(),
            port.port.unwrap_or(0),
        ) && !ports.contains(&named)
        {
            ports.push(named);
        }
    }
    ports
}
