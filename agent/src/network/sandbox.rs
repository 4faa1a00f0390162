//! Pod sandboxes: a pod's namespaces, its address, and the veth that
//! plugs it into the node bridge. A sandbox a previous agent made is
//! adopted as it is; a half-made one is removed and made again.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;

use super::{
    AddressPool, BRIDGE, IpCommand, NetworkError, NodeNetwork, PodNamespaces, PodSubnet,
    namespaces::pinned_network_namespaces,
};

/// A pod's network as its containers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub namespaces: PodNamespaces,
    pub ip: Ipv4Addr,
}

/// What pod workers ask of the node's sandboxes; a trait because the real
/// ones need root, so unit tests use a fake.
#[async_trait]
pub trait PodSandboxes: Send + Sync {
    /// The sandbox of pod `uid`, made if it does not exist.
    async fn ensure(&self, uid: &str, hostname: &str) -> Result<Sandbox, NetworkError>;

    /// Removes pod `uid`'s sandbox. Run after its containers have stopped.
    async fn teardown(&self, uid: &str) -> Result<(), NetworkError>;

    /// The uids of every pod with a sandbox or an address on this node.
    fn known_pods(&self) -> Result<Vec<String>, NetworkError>;
}

/// The sandboxes of one node.
#[derive(Debug)]
pub struct Sandboxes {
    network: NodeNetwork,
    pool: AddressPool,
    /// Network namespaces are named `<prefix><pod uid>`.
    netns_prefix: String,
    /// Each pod's IPC and UTS pins live in `<dir>/<pod uid>/`.
    dir: PathBuf,
}

impl Sandboxes {
    pub fn new(
        network: NodeNetwork,
        pool: AddressPool,
        netns_prefix: String,
        dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new(Self {
            network,
            pool,
            netns_prefix,
            dir,
        })
    }

    pub fn subnet(&self) -> PodSubnet {
        self.network.subnet
    }

    fn namespaces(&self, uid: &str) -> PodNamespaces {
        PodNamespaces::at(
            format!("{}{uid}", self.netns_prefix),
            &self.dir.join(uid).join("ns"),
        )
    }

    async fn plug(
        &self,
        namespaces: &PodNamespaces,
        uid: &str,
        ip: Ipv4Addr,
    ) -> Result<(), NetworkError> {
        let ip_runner = self.network.runner();
        let mtu = self.network.pod_mtu;
        ip_runner
            .run(host_side(uid, &namespaces.netns, mtu))
            .await?;
        ip_runner
            .run(pod_side(
                &namespaces.netns,
                ip,
                self.network.subnet.gateway(),
            ))
            .await
    }
}

#[async_trait]
impl PodSandboxes for Sandboxes {
    async fn ensure(&self, uid: &str, hostname: &str) -> Result<Sandbox, NetworkError> {
        let namespaces = self.namespaces(uid);
        let held = self
            .pool
            .allocations()?
            .into_iter()
            .find(|(_, owner)| owner == uid)
            .map(|(ip, _)| ip);
        if let Some(ip) = held
            && namespaces.exist()
        {
            return Ok(Sandbox { namespaces, ip });
        }
        self.teardown(uid).await?;
        let ip = self.pool.allocate(uid)?;
        let made = async {
            namespaces.create(hostname)?;
            self.plug(&namespaces, uid, ip).await
        }
        .await;
        if let Err(err) = made {
            self.teardown(uid).await?;
            return Err(err);
        }
        Ok(Sandbox { namespaces, ip })
    }

    /// Removes pod `uid`'s sandbox: namespaces unpinned, veth deleted,
    /// address released. Run after its containers have stopped.
    async fn teardown(&self, uid: &str) -> Result<(), NetworkError> {
        let namespaces = self.namespaces(uid);
        // Deleting either end removes the pair; gone already is fine.
        let _ = self
            .network
            .runner()
            .run(IpCommand::host(vec![format!(
                "link del {}",
                veth_name(uid)
            )]))
            .await;
        namespaces.remove();
        remove_dir(&self.dir.join(uid))?;
        self.pool.release(uid)
    }

    fn known_pods(&self) -> Result<Vec<String>, NetworkError> {
        let mut uids: Vec<String> = pinned_network_namespaces()
            .iter()
            .filter_map(|name| name.strip_prefix(&self.netns_prefix))
            .map(str::to_owned)
            .collect();
        uids.extend(self.pool.allocations()?.into_iter().map(|(_, owner)| owner));
        uids.sort();
        uids.dedup();
        Ok(uids)
    }
}

fn remove_dir(dir: &Path) -> Result<(), NetworkError> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(NetworkError::io("removing", dir)(err))
        }
        _ => Ok(()),
    }
}

/// The host end of a pod's veth: "veth" and the start of its uid, within
/// the 15 characters a link name may have.
fn veth_name(uid: &str) -> String {
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(11)
        .collect();
    format!("veth{hex}")
}

/// Both ends get the pod MTU: a veth drops what is larger than its
/// peer's MTU, and the overlay needs room for its headers.
fn host_side(uid: &str, netns: &str, mtu: u32) -> IpCommand {
    let veth = veth_name(uid);
    IpCommand::host(vec![
        format!("link add name {veth} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {netns}"),
        format!("link set {veth} master {BRIDGE} up"),
    ])
}

fn pod_side(netns: &str, ip: Ipv4Addr, gateway: Ipv4Addr) -> IpCommand {
    IpCommand::in_netns(
        netns,
        vec![
            "link set lo up".to_owned(),
            format!("addr add {ip}/24 dev eth0"),
            "link set eth0 up".to_owned(),
            format!("route add default via {gateway} dev eth0"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_plugged_into_the_bridge_and_routed_through_it() {
        let uid = "0b5c1a2e-9f3d-4c1b-8e7a-1234567890ab";
        assert_eq!(veth_name(uid), "veth0b5c1a2e9f3");
        assert!(veth_name(uid).len() <= 15);
        let host = host_side(uid, "capstan-pod-x", 1450);
        assert_eq!(
            host.script,
            vec![
                "link add name veth0b5c1a2e9f3 mtu 1450 type veth peer name eth0 mtu 1450 netns capstan-pod-x",
                "link set veth0b5c1a2e9f3 master capstan0 up",
            ]
        );
        let pod = pod_side(
            "capstan-pod-x",
            Ipv4Addr::new(10, 244, 1, 5),
            Ipv4Addr::new(10, 244, 1, 1),
        );
        assert_eq!(pod.netns.as_deref(), Some("capstan-pod-x"));
        assert_eq!(
            pod.script,
            vec![
                "link set lo up",
                "addr add 10.244.1.5/24 dev eth0",
                "link set eth0 up",
                "route add default via 10.244.1.1 dev eth0",
            ]
        );
    }
}
