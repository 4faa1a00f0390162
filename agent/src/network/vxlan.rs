//! The VXLAN overlay to nodes on other subnets, laid out as flannel's
//! vxlan backend does: one device per node, whose MAC is derived from the
//! node's address so every peer knows it without asking, and whose
//! address is the network address of the node's pod CIDR. Per peer, a
//! forwarding entry (the peer's MAC lives at its node address), a
//! permanent neighbour (the peer's device address has that MAC) and the
//! route of the peer's pod CIDR through its device address.

use std::net::Ipv4Addr;

use super::{IpCommand, PodSubnet, Uplink};

/// The overlay device's name.
pub const DEVICE: &str = "capstan.vxlan";
/// VXLAN network identifier: one overlay per cluster.
const VNI: u32 = 1;
/// The Linux kernel's VXLAN port, which flannel uses too.
const PORT: u16 = 8472;
/// What the outer IPv4, UDP and VXLAN headers and the inner Ethernet
/// header take from the uplink's MTU.
pub const OVERHEAD: u32 = 50;

/// The MAC of a node's overlay device: locally administered, unicast,
/// the node's IPv4 address in its last four bytes.
pub fn device_mac(node: Ipv4Addr) -> String {
    let [a, b, c, d] = node.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The address a node's overlay device holds: its pod CIDR's network
/// address, the next hop other nodes route that CIDR through.
pub fn device_address(subnet: &PodSubnet) -> Ipv4Addr {
    subnet.host(0)
}

/// Creating this node's device; "File exists" when a previous agent
/// made it, which [`configure`] then brings in line.
pub fn create(uplink: &Uplink) -> IpCommand {
    IpCommand::host(vec![format!(
        "link add {DEVICE} type vxlan id {VNI} local {} dev {} dstport {PORT} nolearning",
        uplink.address, uplink.name
    )])
}

/// The device's MAC, MTU, address, and up.
pub fn configure(uplink: &Uplink, subnet: &PodSubnet) -> IpCommand {
    IpCommand::host(vec![
        format!(
            "link set {DEVICE} address {} mtu {}",
            device_mac(uplink.address),
            uplink.mtu.saturating_sub(OVERHEAD)
        ),
        format!("addr replace {}/32 dev {DEVICE}", device_address(subnet)),
        format!("link set {DEVICE} up"),
    ])
}

pub fn delete() -> IpCommand {
    IpCommand::host(vec![format!("link del {DEVICE}")])
}

/// Reaching the pods of the node at `node` (pod CIDR `subnet`) through
/// the overlay: the forwarding entry first, so the route is never taken
/// before the peer's device can be found.
pub fn add_peer(subnet: &PodSubnet, node: Ipv4Addr) -> [IpCommand; 2] {
    let mac = device_mac(node);
    let next_hop = device_address(subnet);
    [
        IpCommand::bridge(vec![format!(
            "fdb replace {mac} dev {DEVICE} dst {node} self permanent"
        )]),
        IpCommand::host(vec![
            format!("neigh replace {next_hop} lladdr {mac} dev {DEVICE} nud permanent"),
            format!("route replace {subnet} via {next_hop} dev {DEVICE} onlink"),
        ]),
    ]
}

/// The route of a peer's pod CIDR through the overlay.
pub fn remove_route(subnet: &PodSubnet) -> IpCommand {
    IpCommand::host(vec![format!(
        "route del {subnet} via {} dev {DEVICE}",
        device_address(subnet)
    )])
}

/// The neighbour entry of a peer's device.
pub fn remove_neighbour(subnet: &PodSubnet) -> IpCommand {
    IpCommand::host(vec![format!(
        "neigh del {} dev {DEVICE}",
        device_address(subnet)
    )])
}

/// The forwarding entry of the peer at `node`.
pub fn remove_forwarding(node: Ipv4Addr) -> IpCommand {
    IpCommand::bridge(vec![format!(
        "fdb del {} dev {DEVICE} dst {node} self",
        device_mac(node)
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_s_device_is_named_by_its_address_and_pod_cidr() {
        let node = Ipv4Addr::new(198, 18, 1, 2);
        assert_eq!(device_mac(node), "0a:58:c6:12:01:02");
        let subnet = PodSubnet::parse("10.244.3.0/24").unwrap();
        assert_eq!(device_address(&subnet), Ipv4Addr::new(10, 244, 3, 0));
        let uplink = Uplink {
            name: "eth0".into(),
            address: node,
            prefix_len: 24,
            mtu: 1500,
        };
        assert_eq!(
            create(&uplink).script,
            [
                "link add capstan.vxlan type vxlan id 1 local 198.18.1.2 dev eth0 dstport 8472 nolearning"
            ]
        );
        assert_eq!(
            configure(&uplink, &subnet).script,
            [
                "link set capstan.vxlan address 0a:58:c6:12:01:02 mtu 1450",
                "addr replace 10.244.3.0/32 dev capstan.vxlan",
                "link set capstan.vxlan up",
            ]
        );
    }
}
