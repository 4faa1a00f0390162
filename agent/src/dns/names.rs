//! Where a question's name falls, read as the Kubernetes DNS specification
//! lays out the cluster zone: `<svc>.<ns>.svc.<zone>`, a headless
//! endpoint's `<hostname>.<svc>.<ns>.svc.<zone>`, a named port's
//! `_<port>._<proto>.<svc>.<ns>.svc.<zone>`, `dns-version.<zone>`, a pod's
//! `<a-b-c-d>.<ns>.pod.<zone>`, the zone's own levels, and reverse names
//! under in-addr.arpa. Anything else is outside the zone and forwarded.
//!
//! Names are compared lower-cased and without the final dot; the caller
//! folds them.

use std::net::Ipv4Addr;

/// A name's place in the cluster zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place<'a> {
    /// The zone itself (`cluster.local`).
    Apex,
    /// `dns-version.<zone>`.
    DnsVersion,
    /// `svc.<zone>` or `pod.<zone>`: levels that exist, without records.
    Level,
    /// `<ns>.svc.<zone>` or `<ns>.pod.<zone>`.
    Namespace { namespace: &'a str },
    /// `<svc>.<ns>.svc.<zone>`.
    Service {
        service: &'a str,
        namespace: &'a str,
    },
    /// `<hostname>.<svc>.<ns>.svc.<zone>`.
    Endpoint {
        hostname: &'a str,
        service: &'a str,
        namespace: &'a str,
    },
    /// `_<port>._<proto>.<svc>.<ns>.svc.<zone>`.
    Port {
        port: &'a str,
        protocol: &'a str,
        service: &'a str,
        namespace: &'a str,
    },
    /// `<a-b-c-d>.<ns>.pod.<zone>`, the address spelled in the name.
    Pod { address: Ipv4Addr },
    /// `d.c.b.a.in-addr.arpa`.
    Reverse(Ipv4Addr),
    /// In the zone, but no name of this shape exists.
    Nowhere,
    /// Not the cluster's: for the upstream resolvers.
    Outside,
}

/// Where `name` (lower case, no final dot) falls for zone `zone`.
pub fn place<'a>(name: &'a str, zone: &str) -> Place<'a> {
    if let Some(reverse) = name.strip_suffix(".in-addr.arpa") {
        return reverse_v4(reverse).map_or(Place::Outside, Place::Reverse);
    }
    if name == zone {
        return Place::Apex;
    }
    let Some(inside) = name
        .strip_suffix(zone)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return Place::Outside;
    };
    // Labels from the zone outwards: [kind, ns, svc, ...].
    let mut labels = inside.rsplit('.');
    match (labels.next(), labels.next()) {
        (Some("dns-version"), None) => Place::DnsVersion,
        (Some("svc"), None) | (Some("pod"), None) => Place::Level,
        (Some("svc"), Some(namespace)) => service_place(namespace, labels),
        (Some("pod"), Some(namespace)) => match (labels.next(), labels.next()) {
            (None, _) => Place::Namespace { namespace },
            (Some(dashed), None) => {
                dashed_v4(dashed).map_or(Place::Nowhere, |address| Place::Pod { address })
            }
            _ => Place::Nowhere,
        },
        _ => Place::Nowhere,
    }
}

fn service_place<'a>(namespace: &'a str, mut labels: std::str::RSplit<'a, char>) -> Place<'a> {
    let Some(service) = labels.next() else {
        return Place::Namespace { namespace };
    };
    match (labels.next(), labels.next(), labels.next()) {
        (None, _, _) => Place::Service { service, namespace },
        (Some(protocol), Some(port), None)
            if protocol.starts_with('_') && port.starts_with('_') =>
        {
            Place::Port {
                port: &port[1..],
                protocol: &protocol[1..],
                service,
                namespace,
            }
        }
        (Some(hostname), None, _) if !hostname.starts_with('_') => Place::Endpoint {
            hostname,
            service,
            namespace,
        },
        _ => Place::Nowhere,
    }
}

/// `d.c.b.a` (an in-addr.arpa name without its suffix) as a.b.c.d; None
/// for a partial or malformed one.
fn reverse_v4(reverse: &str) -> Option<Ipv4Addr> {
    let mut octets = [0_u8; 4];
    let mut labels = reverse.split('.');
    for octet in octets.iter_mut().rev() {
        *octet = decimal_octet(labels.next()?)?;
    }
    labels.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// `a-b-c-d` as a.b.c.d.
fn dashed_v4(dashed: &str) -> Option<Ipv4Addr> {
    let mut octets = [0_u8; 4];
    let mut parts = dashed.split('-');
    for octet in &mut octets {
        *octet = decimal_octet(parts.next()?)?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// A decimal octet as an address spells it: no sign, no leading zeros.
fn decimal_octet(text: &str) -> Option<u8> {
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    plain.then(|| text.parse().ok()).flatten()
}

/// The in-addr.arpa name of `address`.
pub fn reverse_name(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "cluster.local";

    #[test]
    fn cluster_names_fall_where_the_specification_puts_them() {
        let cases = [
            ("cluster.local", Place::Apex),
            ("dns-version.cluster.local", Place::DnsVersion),
            ("svc.cluster.local", Place::Level),
            (
                "default.svc.cluster.local",
                Place::Namespace {
                    namespace: "default",
                },
            ),
            (
                "web.default.svc.cluster.local",
                Place::Service {
                    service: "web",
                    namespace: "default",
                },
            ),
            (
                "web-0.web.default.svc.cluster.local",
                Place::Endpoint {
                    hostname: "web-0",
                    service: "web",
                    namespace: "default",
                },
            ),
            (
                "_http._tcp.web.default.svc.cluster.local",
                Place::Port {
                    port: "http",
                    protocol: "tcp",
                    service: "web",
                    namespace: "default",
                },
            ),
            (
                "10-244-1-5.default.pod.cluster.local",
                Place::Pod {
                    address: Ipv4Addr::new(10, 244, 1, 5),
                },
            ),
            (
                "10.0.96.10.in-addr.arpa",
                Place::Reverse(Ipv4Addr::new(10, 96, 0, 10)),
            ),
            ("a.b.web.default.svc.cluster.local", Place::Nowhere),
            ("_http.web.default.svc.cluster.local", Place::Nowhere),
            ("10-244-1-500.default.pod.cluster.local", Place::Nowhere),
            ("10-244-01-5.default.pod.cluster.local", Place::Nowhere),
            ("nope.cluster.local", Place::Nowhere),
            ("example.com", Place::Outside),
            ("notcluster.local", Place::Outside),
            ("96.10.in-addr.arpa", Place::Outside),
            ("1.2.3.4.5.in-addr.arpa", Place::Outside),
        ];
        for (name, want) in cases {
            assert_eq!(place(name, ZONE), want, "{name}");
        }
        assert_eq!(
            reverse_name(Ipv4Addr::new(10, 96, 0, 10)),
            "10.0.96.10.in-addr.arpa"
        );
    }
}
