//! Pod networking on one node: the node bridge every pod is plugged into,
//! an address per pod from the node's pod CIDR, each pod's namespaces
//! (network, IPC, UTS) that its containers join, and the routes (direct or
//! through the VXLAN overlay) to the other nodes' pods.

mod bridge;
mod ip;
mod ipam;
mod masquerade;
mod namespaces;
mod routes;
mod sandbox;
mod script;
mod uplink;
mod vxlan;

use std::{io, net::Ipv4Addr, path::PathBuf};

pub use bridge::{BRIDGE, NodeNetwork};
pub use ip::{IpCommand, IpRunner, Iproute2, RecordingIp, Tool};
pub use ipam::AddressPool;
pub use masquerade::{Nft, Nftables, RecordingNft, masquerade};
pub use namespaces::{PodNamespaces, pinned_network_namespaces};
pub use routes::{PodNetworkMode, PodRoutes};
pub use sandbox::{PodSandboxes, Sandbox, Sandboxes};
pub use uplink::Uplink;

/// The cluster's pod network; every node's pod CIDR is a /24 of it.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The Service network, where cluster IPs come from.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{action}: {source}")]
    Sys {
        action: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("`{args}` failed: {message}")]
    Ip { args: String, message: String },
    #[error("nft refused the agent's rules: {0}")]
    Nft(String),
    #[error("pod CIDR {0} is not an IPv4 /24")]
    PodCidr(String),
    #[error("no interface of this host holds the node's address {0}: give --node-ip one it has")]
    NoUplink(Ipv4Addr),
    #[error("no address is free in {0}")]
    Exhausted(String),
}

impl NetworkError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// Lets this network namespace forward packets between pods, and between
/// pods and other nodes, as every Kubernetes node must.
pub fn enable_forwarding() -> Result<(), NetworkError> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(path, "1").map_err(NetworkError::io("writing", path))
}

/// A node's pod subnet: a /24, its first address the bridge's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodSubnet {
    network: Ipv4Addr,
}

impl PodSubnet {
    pub fn parse(cidr: &str) -> Result<Self, NetworkError> {
        let invalid = || NetworkError::PodCidr(cidr.to_owned());
        let (address, prefix) = cidr.split_once('/').ok_or_else(invalid)?;
        let network: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        if prefix != "24" || network.octets()[3] != 0 {
            return Err(invalid());
        }
        Ok(Self { network })
    }

    /// The bridge's address, every pod's default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
    }

    /// Host number `n` of the subnet.
    pub fn host(&self, n: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.network.octets();
        Ipv4Addr::new(a, b, c, n)
    }

    /// The addresses pods may take: all but the network, gateway and
    /// broadcast addresses.
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (2..=254).map(|n| self.host(n))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        ip.octets()[..3] == self.network.octets()[..3]
    }
}

impl std::fmt::Display for PodSubnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/24", self.network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_subnet_is_a_24_with_the_gateway_first() {
        let subnet = PodSubnet::parse("10.244.3.0/24").unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        assert_eq!(subnet.pod_addresses().count(), 253);
        assert!(subnet.contains(Ipv4Addr::new(10, 244, 3, 77)));
        assert!(!subnet.contains(Ipv4Addr::new(10, 244, 4, 77)));
        assert_eq!(subnet.to_string(), "10.244.3.0/24");
        for bad in ["10.244.3.0/16", "10.244.3.1/24", "nope", "10.244.3.0"] {
            assert!(PodSubnet::parse(bad).is_err(), "{bad}");
        }
    }
}
