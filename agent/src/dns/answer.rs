//! Answers for names in the cluster zone, as the Kubernetes DNS
//! specification and CoreDNS's `kubernetes` plugin give them: records for
//! names that have the type asked, NODATA (NOERROR, nothing) for names that
//! exist without it, NXDOMAIN for names that do not exist, and names the
//! zone does not hold (outside it, or reverse names of addresses it does
//! not know) handed on to the upstream resolvers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    names::{Place, place},
    zone::{NamedPort, ServiceKind, Zone},
};

/// The version of the specification served, at `dns-version.<zone>`.
const SCHEMA_VERSION: &str = "1.1.0";
/// CoreDNS's TTL for the schema version.
const SCHEMA_TTL: u32 = 28_800;

/// The record types the zone answers; any other is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    A,
    Aaaa,
    Cname,
    Srv,
    Ptr,
    Txt,
    Soa,
    Ns,
    /// AXFR and IXFR: zone transfers are refused.
    Transfer,
    Other(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Ptr(String),
    Txt(String),
    Soa {
        primary: String,
        mailbox: String,
        serial: u32,
        minimum: u32,
    },
    Ns(String),
}

/// One record of an answer, its name fully qualified without the dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: RData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Records(Vec<Record>),
    /// The name exists, without records of the type asked.
    NoData,
    NxDomain,
    Refused,
    /// Not the zone's to answer: ask the upstream resolvers.
    Forward,
}

/// The zone's name and TTL, and its snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Authority<'a> {
    pub domain: &'a str,
    pub ttl: u32,
    pub zone: &'a Zone,
}

impl Authority<'_> {
    /// The answer to `name` (lower case, no final dot) of type `kind`.
    pub fn answer(&self, name: &str, kind: RecordType) -> Outcome {
        if kind == RecordType::Transfer {
            return Outcome::Refused;
        }
        match place(name, self.domain) {
            Place::Outside => Outcome::Forward,
            Place::Nowhere => Outcome::NxDomain,
            Place::Apex => match kind {
                RecordType::Soa => self.one(name, self.soa()),
                RecordType::Ns => self.one(name, RData::Ns(self.name_server())),
                _ => Outcome::NoData,
            },
            Place::DnsVersion => match kind {
                RecordType::Txt => Outcome::Records(vec![Record {
                    name: name.to_owned(),
                    ttl: SCHEMA_TTL,
                    data: RData::Txt(SCHEMA_VERSION.to_owned()),
                }]),
                _ => Outcome::NoData,
            },
            Place::Level => Outcome::NoData,
            Place::Namespace { namespace } if self.zone.has_namespace(namespace) => Outcome::NoData,
            Place::Namespace { .. } => Outcome::NxDomain,
            Place::Service { service, namespace } => match self.zone.service(namespace, service) {
                None => Outcome::NxDomain,
                Some(found) => self.service(name, found, kind),
            },
            Place::Endpoint {
                hostname,
                service,
                namespace,
            } => match self.zone.service(namespace, service) {
                Some(ServiceKind::Headless { endpoints, .. }) => {
                    let addresses: Vec<IpAddr> = endpoints
                        .iter()
                        .filter(|e| e.hostname == hostname)
                        .map(|e| e.address)
                        .collect();
                    match addresses.is_empty() {
                        true => Outcome::NxDomain,
                        false => self.addresses(name, &addresses, kind),
                    }
                }
                _ => Outcome::NxDomain,
            },
            Place::Port {
                port,
                protocol,
                service,
                namespace,
            } => {
                let Some(found) = self.zone.service(namespace, service) else {
                    return Outcome::NxDomain;
                };
                let service_name = format!("{service}.{namespace}.svc.{}", self.domain);
                self.port(name, &service_name, found, port, protocol, kind)
            }
            Place::Pod { address } => match kind {
                RecordType::A => self.one(name, RData::A(address)),
                _ => Outcome::NoData,
            },
            Place::Reverse(address) => match self.zone.reverse(address) {
                None => Outcome::Forward,
                Some(target) => match kind {
                    RecordType::Ptr => self.one(name, RData::Ptr(target.to_owned())),
                    _ => Outcome::NoData,
                },
            },
        }
    }

    fn service(&self, name: &str, service: &ServiceKind, kind: RecordType) -> Outcome {
        match service {
            ServiceKind::ExternalName(target) => self.one(name, RData::Cname(target.clone())),
            ServiceKind::ClusterIp { addresses, ports } => match kind {
                RecordType::Srv => self.srv(
                    name,
                    ports.iter().map(|p| (p.port, name.to_owned())).collect(),
                ),
                _ => self.addresses(name, addresses, kind),
            },
            // The specification: no ready endpoint, no name.
            ServiceKind::Headless { endpoints, .. } if endpoints.is_empty() => Outcome::NxDomain,
            ServiceKind::Headless { endpoints, ports } => match kind {
                RecordType::Srv => self.srv(
                    name,
                    ports
                        .iter()
                        .flat_map(|p| {
                            endpoints
                                .iter()
                                .map(move |e| (p.port, format!("{}.{name}", e.hostname)))
                        })
                        .collect(),
                ),
                _ => {
                    let addresses: Vec<IpAddr> = endpoints.iter().map(|e| e.address).collect();
                    self.addresses(name, &addresses, kind)
                }
            },
        }
    }

    /// `_<port>._<protocol>.<service>`: SRV records of the named port.
    fn port(
        &self,
        name: &str,
        service_name: &str,
        service: &ServiceKind,
        port: &str,
        protocol: &str,
        kind: RecordType,
    ) -> Outcome {
        let matches = |ports: &[NamedPort]| -> Option<u16> {
            ports
                .iter()
                .find(|p| p.name == port && p.protocol == protocol)
                .map(|p| p.port)
        };
        let targets = match service {
            ServiceKind::ExternalName(_) => return Outcome::NxDomain,
            ServiceKind::ClusterIp { ports, .. } => match matches(ports) {
                None => return Outcome::NxDomain,
                Some(number) => vec![(number, service_name.to_owned())],
            },
            ServiceKind::Headless { endpoints, ports } => match matches(ports) {
                Some(number) if !endpoints.is_empty() => endpoints
                    .iter()
                    .map(|e| (number, format!("{}.{service_name}", e.hostname)))
                    .collect(),
                _ => return Outcome::NxDomain,
            },
        };
        match kind {
            RecordType::Srv => self.srv(name, targets),
            _ => Outcome::NoData,
        }
    }

    /// SRV records of equal priority whose weights share 100, as CoreDNS
    /// spreads them.
    fn srv(&self, name: &str, targets: Vec<(u16, String)>) -> Outcome {
        if targets.is_empty() {
            return Outcome::NoData;
        }
        let weight = (100 / targets.len()).max(1) as u16;
        Outcome::Records(
            targets
                .into_iter()
                .map(|(port, target)| Record {
                    name: name.to_owned(),
                    ttl: self.ttl,
                    data: RData::Srv {
                        priority: 0,
                        weight,
                        port,
                        target,
                    },
                })
                .collect(),
        )
    }

    /// A or AAAA records of the addresses of that family; NODATA when the
    /// name has none of it, or the type is another.
    fn addresses(&self, name: &str, addresses: &[IpAddr], kind: RecordType) -> Outcome {
        let records: Vec<Record> = addresses
            .iter()
            .filter_map(|address| match (kind, address) {
                (RecordType::A, IpAddr::V4(v4)) => Some(RData::A(*v4)),
                (RecordType::Aaaa, IpAddr::V6(v6)) => Some(RData::Aaaa(*v6)),
                _ => None,
            })
            .map(|data| Record {
                name: name.to_owned(),
                ttl: self.ttl,
                data,
            })
            .collect();
        match records.is_empty() {
            true => Outcome::NoData,
            false => Outcome::Records(records),
        }
    }

    fn one(&self, name: &str, data: RData) -> Outcome {
        Outcome::Records(vec![Record {
            name: name.to_owned(),
            ttl: self.ttl,
            data,
        }])
    }

    /// The zone's SOA, which also goes with every NODATA and NXDOMAIN
    /// (its minimum is the negative TTL).
    pub fn soa(&self) -> RData {
        RData::Soa {
            primary: self.name_server(),
            mailbox: format!("hostmaster.{}", self.domain),
            serial: self.zone.serial,
            minimum: self.ttl,
        }
    }

    fn name_server(&self) -> String {
        format!("ns.dns.{}", self.domain)
    }
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
