//! The node bridge: every pod's veth is a port of it, its address is the
//! pods' gateway. Blackhole routes for the cluster and Service networks
//! keep traffic for addresses no pod here holds from leaving the node by
//! the default route.

use std::sync::Arc;

use super::{CLUSTER_CIDR, IpCommand, IpRunner, NetworkError, PodSubnet, SERVICE_CIDR};

/// The bridge's name.
pub const BRIDGE: &str = "capstan0";

#[derive(Debug, Clone)]
pub struct NodeNetwork {
    pub subnet: PodSubnet,
    /// The MTU of every pod's interface.
    pub pod_mtu: u32,
    ip: Arc<dyn IpRunner>,
}

impl NodeNetwork {
    pub fn new(subnet: PodSubnet, pod_mtu: u32, ip: Arc<dyn IpRunner>) -> Self {
        Self {
            subnet,
            pod_mtu,
            ip,
        }
    }

    /// Makes (or finds) the bridge with the gateway address, up, and the
    /// blackhole routes. Idempotent.
    pub async fn ensure(&self) -> Result<(), NetworkError> {
        let created = self
            .ip
            .run(IpCommand::host(vec![format!(
                "link add name {BRIDGE} type bridge"
            )]))
            .await;
        match created {
            Err(NetworkError::Ip { message, .. }) if message.contains("File exists") => {}
            other => other?,
        }
        self.ip
            .run(IpCommand::host(bridge_script(&self.subnet)))
            .await
    }

    pub fn runner(&self) -> &Arc<dyn IpRunner> {
        &self.ip
    }
}

fn bridge_script(subnet: &PodSubnet) -> Vec<String> {
    vec![
        format!("addr replace {}/24 dev {BRIDGE}", subnet.gateway()),
        format!("link set {BRIDGE} up"),
        format!("route replace blackhole {CLUSTER_CIDR}"),
        format!("route replace blackhole {SERVICE_CIDR}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ip::RecordingIp;

    #[tokio::test]
    async fn the_bridge_gets_the_gateway_and_the_networks_a_blackhole() {
        let ip = Arc::new(RecordingIp::default());
        let subnet = PodSubnet::parse("10.244.2.0/24").unwrap();
        NodeNetwork::new(subnet, 1500, ip.clone())
            .ensure()
            .await
            .unwrap();
        let commands = ip.commands.lock().unwrap().clone();
        assert_eq!(
            commands[0].script,
            vec!["link add name capstan0 type bridge"]
        );
        assert_eq!(
            commands[1].script,
            vec![
                "addr replace 10.244.2.1/24 dev capstan0",
                "link set capstan0 up",
                "route replace blackhole 10.244.0.0/16",
                "route replace blackhole 10.96.0.0/12",
            ]
        );
    }
}
