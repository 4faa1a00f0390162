//! Routes to the other nodes' pods (host-gw): each node's pod CIDR is
//! routed via that node's InternalIP, learned from the Node objects in the
//! agent's cache, so pods on different nodes reach each other by pod IP
//! with their source address kept. Routes follow nodes joining, changing
//! address and leaving, and are removed when the agent stops.
//!
//! These /24 routes are more specific than the blackhole route of the
//! whole cluster network, which keeps catching addresses no node holds.

use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc};

use k8s_openapi::api::core::v1::Node;
use tokio::sync::oneshot;

use super::{IpCommand, IpRunner};
use crate::cache::Watched;

/// Where one pod CIDR is routed.
type RouteTable = BTreeMap<String, Ipv4Addr>;

#[derive(Debug)]
pub struct PodRoutes {
    node: String,
    nodes: Arc<Watched<Node>>,
    ip: Arc<dyn IpRunner>,
    installed: RouteTable,
}

impl PodRoutes {
    pub fn new(node: String, nodes: Arc<Watched<Node>>, ip: Arc<dyn IpRunner>) -> Self {
        Self {
            node,
            nodes,
            ip,
            installed: RouteTable::new(),
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
        let wanted = wanted_routes(&self.nodes.list(), &self.node);
        self.set(wanted).await;
    }

    async fn set(&mut self, wanted: RouteTable) {
        // A CIDR whose node moved is replaced below, not removed first.
        let gone: Vec<(String, Ipv4Addr)> = self
            .installed
            .iter()
            .filter(|(cidr, _)| !wanted.contains_key(*cidr))
            .map(|(cidr, via)| (cidr.clone(), *via))
            .collect();
        for (cidr, via) in gone {
            match self.ip_route(format!("route del {cidr} via {via}")).await {
                Ok(()) => {
                    tracing::info!(%cidr, %via, "pod route removed");
                    self.installed.remove(&cidr);
                }
                Err(err) => tracing::warn!(%cidr, %via, %err, "removing a pod route"),
            }
        }
        for (cidr, via) in wanted {
            if self.installed.get(&cidr) == Some(&via) {
                continue;
            }
            match self
                .ip_route(format!("route replace {cidr} via {via}"))
                .await
            {
                Ok(()) => {
                    tracing::info!(%cidr, %via, "pod route installed");
                    self.installed.insert(cidr, via);
                }
                Err(err) => tracing::warn!(
                    %cidr, %via, %err,
                    "routing a node's pods: is the node on this host's subnet?"
                ),
            }
        }
    }

    async fn ip_route(&self, command: String) -> Result<(), super::NetworkError> {
        self.ip
            .run(IpCommand {
                netns: None,
                script: vec![command],
            })
            .await
    }
}

/// Each other node's pod CIDR (IPv4 /24 as control allocates them) and the
/// InternalIP it is reached at; nodes missing either are left out.
fn wanted_routes(nodes: &[Arc<Node>], this_node: &str) -> RouteTable {
    nodes
        .iter()
        .filter(|node| node.metadata.name.as_deref() != Some(this_node))
        .filter_map(|node| {
            let cidr = node.spec.as_ref()?.pod_cidr.clone()?;
            super::PodSubnet::parse(&cidr).ok()?;
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
            Some((cidr, address))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;
    use crate::network::RecordingIp;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": name, "resourceVersion": ip },
            "spec": { "podCIDR": cidr },
            "status": { "addresses": [{ "type": "InternalIP", "address": ip }] },
        }))
        .unwrap()
    }

    fn scripts(ip: &RecordingIp) -> Vec<String> {
        std::mem::take(&mut *ip.commands.lock().unwrap())
            .into_iter()
            .flat_map(|c| c.script)
            .collect()
    }

    #[tokio::test]
    async fn routes_follow_nodes_and_go_when_the_agent_stops() {
        let nodes = Arc::new(Watched::default());
        let ip = Arc::new(RecordingIp::default());
        let mut routes = PodRoutes::new("h1".into(), Arc::clone(&nodes), ip.clone());
        nodes.apply(Event::Apply(node(
            "h1",
            Some("10.244.1.0/24"),
            "198.18.0.1",
        )));
        nodes.apply(Event::Apply(node(
            "h2",
            Some("10.244.2.0/24"),
            "198.18.0.2",
        )));
        nodes.apply(Event::Apply(node("h3", None, "198.18.0.3")));
        routes.sync().await;
        assert_eq!(
            scripts(&ip),
            ["route replace 10.244.2.0/24 via 198.18.0.2"],
            "not to itself, not to a node with no CIDR yet"
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
}
