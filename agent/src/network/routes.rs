//! Routes to the other nodes' pods, learned from the Node objects in the
//! agent's cache: each node's pod CIDR is routed via that node's
//! InternalIP when it is on the uplink's subnet (host-gw), and through the
//! VXLAN overlay when a router stands between them; `--pod-network`
//! decides per peer (auto) or for all. Either way pods on different nodes
//! reach each other by pod IP with their source address kept. Routes
//! follow nodes joining, changing address and leaving, and are removed,
//! with the overlay device, when the agent stops.
//!
//! These /24 routes are more specific than the blackhole route of the
//! whole cluster network, which keeps catching addresses no node holds.

use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc};

use k8s_openapi::api::core::v1::Node;
use tokio::sync::oneshot;

use super::{IpCommand, IpRunner, NetworkError, PodSubnet, Uplink, vxlan};
use crate::cache::Watched;

/// How pods reach the pods of other nodes (`--pod-network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodNetworkMode {
    /// host-gw to nodes on the uplink's subnet, VXLAN to the others.
    Auto,
    HostGw,
    Vxlan,
}

impl std::str::FromStr for PodNetworkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "host-gw" => Ok(Self::HostGw),
            "vxlan" => Ok(Self::Vxlan),
            other => Err(format!(
                "{other:?} is not a pod network: auto, host-gw or vxlan"
            )),
        }
    }
}

impl PodNetworkMode {
    /// The MTU pods get: room for the overlay's headers whenever it may
    /// carry their packets.
    pub fn pod_mtu(self, uplink: &Uplink) -> u32 {
        match self {
            Self::HostGw => uplink.mtu,
            Self::Auto | Self::Vxlan => uplink.mtu.saturating_sub(vxlan::OVERHEAD),
        }
    }
}

/// How one other node's pods are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerRoute {
    node: Ipv4Addr,
    overlay: bool,
}

type RouteTable = BTreeMap<PodSubnet, PeerRoute>;

#[derive(Debug)]
pub struct PodRoutes {
    node: String,
    nodes: Arc<Watched<Node>>,
    ip: Arc<dyn IpRunner>,
    mode: PodNetworkMode,
    uplink: Uplink,
    subnet: PodSubnet,
    installed: RouteTable,
    /// Whether the overlay device is known to exist (None: not known, as
    /// at start after a previous agent).
    overlay_device: Option<bool>,
}

impl PodRoutes {
    /// Routes for node `node`, whose own pods are on `subnet` behind
    /// `uplink`.
    pub fn new(
        node: String,
        nodes: Arc<Watched<Node>>,
        ip: Arc<dyn IpRunner>,
        mode: PodNetworkMode,
        uplink: Uplink,
        subnet: PodSubnet,
    ) -> Self {
        Self {
            node,
            nodes,
            ip,
            mode,
            uplink,
            subnet,
            installed: RouteTable::new(),
            overlay_device: None,
        }
    }

    /// Keeps the routes equal to the cache's nodes until `stop` fires (or
    /// its sender goes), then removes them.
    pub async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut notices = self.nodes.subscribe();
        loop {
            tokio::select! {
                notice = notices.recv() => {
                    if notice.is_none() {
                        break;
                    }
                    while notices.try_recv().is_ok() {}
                    self.sync().await;
                }
                _ = &mut stop => break,
            }
        }
        self.set(RouteTable::new()).await;
    }

    /// One pass: the routes every other node's pod CIDR needs.
    async fn sync(&mut self) {
        let wanted = wanted_routes(&self.nodes.list(), &self.node)
            .into_iter()
            .map(|(subnet, node)| {
                let overlay = match self.mode {
                    PodNetworkMode::HostGw => false,
                    PodNetworkMode::Vxlan => true,
                    PodNetworkMode::Auto => !self.uplink.on_link(node),
                };
                (subnet, PeerRoute { node, overlay })
            })
            .collect();
        self.set(wanted).await;
    }

    async fn set(&mut self, wanted: RouteTable) {
        if wanted.values().any(|peer| peer.overlay) {
            // Without the device the overlay routes fail one by one below,
            // logged; the direct ones go in all the same.
            self.ensure_overlay_device().await;
        }
        let gone: Vec<(PodSubnet, PeerRoute)> = self
            .installed
            .iter()
            .filter(|(subnet, _)| !wanted.contains_key(*subnet))
            .map(|(subnet, peer)| (*subnet, *peer))
            .collect();
        for (subnet, peer) in gone {
            let removed = self.run_all(removal(&subnet, &peer, None)).await;
            match removed {
                Ok(()) => {
                    tracing::info!(%subnet, node = %peer.node, "pod route removed");
                    self.installed.remove(&subnet);
                }
                Err(err) => {
                    tracing::warn!(%subnet, node = %peer.node, %err, "removing a pod route")
                }
            }
        }
        for (subnet, peer) in wanted {
            let old = self.installed.get(&subnet).copied();
            if old == Some(peer) {
                continue;
            }
            // A CIDR whose node moved is replaced, not removed first; what
            // only the old way used goes after.
            let mut commands = addition(&subnet, &peer);
            if let Some(old) = old {
                commands.extend(removal(&subnet, &old, Some(&peer)));
            }
            match self.run_all(commands).await {
                Ok(()) => {
                    tracing::info!(%subnet, node = %peer.node, overlay = peer.overlay, "pod route installed");
                    self.installed.insert(subnet, peer);
                }
                Err(err) => tracing::warn!(
                    %subnet, node = %peer.node, %err,
                    "routing a node's pods: is the node on this host's subnet? \
                     --pod-network=auto or vxlan reaches nodes across routers"
                ),
            }
        }
        if !self.installed.values().any(|peer| peer.overlay) {
            self.remove_overlay_device().await;
        }
    }

    /// Makes the overlay device, or brings a previous agent's in line;
    /// a failure is logged.
    async fn ensure_overlay_device(&mut self) {
        if self.overlay_device == Some(true) {
            return;
        }
        let made = match self.ip.run(vxlan::create(&self.uplink)).await {
            Err(NetworkError::Ip { message, .. }) if message.contains("File exists") => Ok(()),
            other => other,
        };
        let configured = match made {
            Ok(()) => {
                self.ip
                    .run(vxlan::configure(&self.uplink, &self.subnet))
                    .await
            }
            Err(err) => Err(err),
        };
        match configured {
            Ok(()) => {
                tracing::info!(device = vxlan::DEVICE, uplink = %self.uplink.name, "pod overlay up");
                self.overlay_device = Some(true);
            }
            Err(err) => {
                tracing::warn!(%err, "making the VXLAN device for nodes on other subnets");
            }
        }
    }

    async fn remove_overlay_device(&mut self) {
        if self.overlay_device == Some(false) {
            return;
        }
        match self.ip.run(vxlan::delete()).await {
            Err(NetworkError::Ip { message, .. }) if !message.contains("Cannot find device") => {
                tracing::warn!(%message, "removing the VXLAN device");
            }
            _ => {
                if self.overlay_device == Some(true) {
                    tracing::info!(device = vxlan::DEVICE, "pod overlay removed");
                }
                self.overlay_device = Some(false);
            }
        }
    }

    async fn run_all(&self, commands: Vec<IpCommand>) -> Result<(), NetworkError> {
        for command in commands {
            self.ip.run(command).await?;
        }
        Ok(())
    }
}

/// What reaching `subnet` by `peer` takes.
fn addition(subnet: &PodSubnet, peer: &PeerRoute) -> Vec<IpCommand> {
    if peer.overlay {
        return vxlan::add_peer(subnet, peer.node).into();
    }
    vec![IpCommand::host(vec![format!(
        "route replace {subnet} via {}",
        peer.node
    )])]
}

/// What undoing `old` takes, once `new` (if any) has replaced its route.
fn removal(subnet: &PodSubnet, old: &PeerRoute, new: Option<&PeerRoute>) -> Vec<IpCommand> {
    let mut commands = Vec::new();
    if new.is_none() {
        commands.push(match old.overlay {
            true => vxlan::remove_route(subnet),
            false => IpCommand::host(vec![format!("route del {subnet} via {}", old.node)]),
        });
    }
    if old.overlay {
        if !new.is_some_and(|new| new.overlay) {
            commands.push(vxlan::remove_neighbour(subnet));
        }
        if new.is_none_or(|new| new.node != old.node || !new.overlay) {
            commands.push(vxlan::remove_forwarding(old.node));
        }
    }
    commands
}

/// Each other node's pod CIDR (IPv4 /24 as control allocates them) and the
/// InternalIP it is reached at; nodes missing either are left out.
fn wanted_routes(nodes: &[Arc<Node>], this_node: &str) -> BTreeMap<PodSubnet, Ipv4Addr> {
    nodes
        .iter()
        .filter(|node| node.metadata.name.as_deref() != Some(this_node))
        .filter_map(|node| {
            let cidr = node.spec.as_ref()?.pod_cidr.as_deref()?;
            let subnet = PodSubnet::parse(cidr).ok()?;
            let address = node
                .status
                .as_ref()?
                .addresses
                .iter()
                .flatten()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            Some((subnet, address))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;
    use crate::network::{RecordingIp, Tool};

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": name, "resourceVersion": ip },
            "spec": { "podCIDR": cidr },
            "status": { "addresses": [{ "type": "InternalIP", "address": ip }] },
        }))
        .unwrap()
    }

    /// The commands run since the last call, `bridge` ones marked so.
    fn scripts(ip: &RecordingIp) -> Vec<String> {
        std::mem::take(&mut *ip.commands.lock().unwrap())
            .into_iter()
            .flat_map(|c| {
                let tool = c.tool;
                c.script.into_iter().map(move |line| match tool {
                    Tool::Ip => line,
                    Tool::Bridge => format!("bridge {line}"),
                })
            })
            .collect()
    }

    fn routes(mode: PodNetworkMode) -> (PodRoutes, Arc<Watched<Node>>, Arc<RecordingIp>) {
        let nodes = Arc::new(Watched::default());
        let ip = Arc::new(RecordingIp::default());
        let uplink = routes_uplink();
        let subnet = PodSubnet::parse("10.244.1.0/24").unwrap();
        let routes = PodRoutes::new(
            "h1".into(),
            Arc::clone(&nodes),
            ip.clone(),
            mode,
            uplink,
            subnet,
        );
        nodes.apply(Event::Apply(node(
            "h1",
            Some("10.244.1.0/24"),
            "198.18.0.1",
        )));
        (routes, nodes, ip)
    }

    #[tokio::test]
    async fn host_gw_routes_follow_nodes_and_go_when_the_agent_stops() {
        let (mut routes, nodes, ip) = routes(PodNetworkMode::HostGw);
        nodes.apply(Event::Apply(node(
            "h2",
            Some("10.244.2.0/24"),
            "198.18.0.2",
        )));
        nodes.apply(Event::Apply(node("h3", None, "198.18.0.3")));
        routes.sync().await;
        assert_eq!(
            scripts(&ip),
            [
                "route replace 10.244.2.0/24 via 198.18.0.2",
                "link del capstan.vxlan",
            ],
            "not to itself, not to a node with no CIDR yet; no overlay left over"
        );

        nodes.apply(Event::Apply(node(
            "h3",
            Some("10.244.3.0/24"),
            "198.18.0.3",
        )));
        nodes.apply(Event::Apply(node(
            "h2",
            Some("10.244.2.0/24"),
            "198.18.0.12",
        )));
        routes.sync().await;
        assert_eq!(
            scripts(&ip),
            [
                "route replace 10.244.2.0/24 via 198.18.0.12",
                "route replace 10.244.3.0/24 via 198.18.0.3",
            ]
        );

        nodes.apply(Event::Delete(node(
            "h3",
            Some("10.244.3.0/24"),
            "198.18.0.3",
        )));
        routes.sync().await;
        assert_eq!(scripts(&ip), ["route del 10.244.3.0/24 via 198.18.0.3"]);

        let (stop, stopped) = oneshot::channel();
        stop.send(()).unwrap();
        routes.run(stopped).await;
        assert_eq!(scripts(&ip), ["route del 10.244.2.0/24 via 198.18.0.12"]);
    }

    #[tokio::test]
    async fn auto_takes_the_overlay_only_to_nodes_behind_a_router() {
        let (mut routes, nodes, ip) = routes(PodNetworkMode::Auto);
        nodes.apply(Event::Apply(node(
            "h2",
            Some("10.244.2.0/24"),
            "198.18.0.2",
        )));
        nodes.apply(Event::Apply(node(
            "h3",
            Some("10.244.3.0/24"),
            "198.18.1.3",
        )));
        routes.sync().await;
        assert_eq!(
            scripts(&ip),
            [
                "link add capstan.vxlan type vxlan id 1 local 198.18.0.1 dev eth0 dstport 8472 nolearning",
                "link set capstan.vxlan address 0a:58:c6:12:00:01 mtu 1450",
                "addr replace 10.244.1.0/32 dev capstan.vxlan",
                "link set capstan.vxlan up",
                "route replace 10.244.2.0/24 via 198.18.0.2",
                "bridge fdb replace 0a:58:c6:12:01:03 dev capstan.vxlan dst 198.18.1.3 self permanent",
                "neigh replace 10.244.3.0 lladdr 0a:58:c6:12:01:03 dev capstan.vxlan nud permanent",
                "route replace 10.244.3.0/24 via 10.244.3.0 dev capstan.vxlan onlink",
            ]
        );

        nodes.apply(Event::Apply(node(
            "h3",
            Some("10.244.3.0/24"),
            "198.18.2.3",
        )));
        routes.sync().await;
        assert_eq!(
            scripts(&ip),
            [
                "bridge fdb replace 0a:58:c6:12:02:03 dev capstan.vxlan dst 198.18.2.3 self permanent",
                "neigh replace 10.244.3.0 lladdr 0a:58:c6:12:02:03 dev capstan.vxlan nud permanent",
                "route replace 10.244.3.0/24 via 10.244.3.0 dev capstan.vxlan onlink",
                "bridge fdb del 0a:58:c6:12:01:03 dev capstan.vxlan dst 198.18.1.3 self",
            ],
            "a node that moved subnets keeps its route until the new one is in"
        );

        nodes.apply(Event::Apply(node(
            "h3",
            Some("10.244.3.0/24"),
            "198.18.0.3",
        )));
        routes.sync().await;
        assert_eq!(
            scripts(&ip),
            [
                "route replace 10.244.3.0/24 via 198.18.0.3",
                "neigh del 10.244.3.0 dev capstan.vxlan",
                "bridge fdb del 0a:58:c6:12:02:03 dev capstan.vxlan dst 198.18.2.3 self",
                "link del capstan.vxlan",
            ],
            "the overlay goes when no node needs it"
        );
    }

    #[tokio::test]
    async fn vxlan_mode_takes_the_overlay_to_every_node_and_removes_it_at_stop() {
        let (mut routes, nodes, ip) = routes(PodNetworkMode::Vxlan);
        nodes.apply(Event::Apply(node(
            "h2",
            Some("10.244.2.0/24"),
            "198.18.0.2",
        )));
        routes.sync().await;
        assert_eq!(
            scripts(&ip)[4..],
            [
                "bridge fdb replace 0a:58:c6:12:00:02 dev capstan.vxlan dst 198.18.0.2 self permanent",
                "neigh replace 10.244.2.0 lladdr 0a:58:c6:12:00:02 dev capstan.vxlan nud permanent",
                "route replace 10.244.2.0/24 via 10.244.2.0 dev capstan.vxlan onlink",
            ]
        );
        let (stop, stopped) = oneshot::channel();
        stop.send(()).unwrap();
        routes.run(stopped).await;
        assert_eq!(
            scripts(&ip),
            [
                "route del 10.244.2.0/24 via 10.244.2.0 dev capstan.vxlan",
                "neigh del 10.244.2.0 dev capstan.vxlan",
                "bridge fdb del 0a:58:c6:12:00:02 dev capstan.vxlan dst 198.18.0.2 self",
                "link del capstan.vxlan",
            ]
        );
        assert_eq!(
            PodNetworkMode::Vxlan.pod_mtu(&routes_uplink()),
            1450,
            "pods leave room for the overlay's headers"
        );
        assert_eq!(PodNetworkMode::HostGw.pod_mtu(&routes_uplink()), 1500);
        assert!("gre".parse::<PodNetworkMode>().is_err());
    }

    fn routes_uplink() -> Uplink {
        Uplink {
            name: "eth0".into(),
            address: Ipv4Addr::new(198, 18, 0, 1),
            prefix_len: 24,
            mtu: 1500,
        }
    }
}
