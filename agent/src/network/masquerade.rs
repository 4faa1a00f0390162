//! Pod traffic to addresses outside the cluster leaves with the node's
//! address: an nftables masquerade rule for this node's pod CIDR, skipped
//! for the cluster network (pods keep their address to each other, across
//! nodes too) and for the pod bridge. Written as one atomic ruleset, so
//! applying it again replaces it, and kept when the agent stops, as the
//! pods keep running.

use std::sync::Mutex;

use async_trait::async_trait;

use super::{BRIDGE, CLUSTER_CIDR, NetworkError, PodSubnet};

const TABLE: &str = "capstan";

/// nftables behind a trait: the real `nft`, or a recorder for unit tests.
#[async_trait]
pub trait Nftables: Send + Sync + std::fmt::Debug {
    /// Applies `ruleset` as `nft -f` does, all of it or none.
    async fn apply(&self, ruleset: &str) -> Result<(), NetworkError>;
}

/// The real `nft`.
#[derive(Debug, Default)]
pub struct Nft;

#[async_trait]
impl Nftables for Nft {
    async fn apply(&self, ruleset: &str) -> Result<(), NetworkError> {
        super::script::run("nft", &["-f", "-"], ruleset)
            .await?
            .map_err(NetworkError::Nft)
    }
}

/// Records every ruleset and succeeds.
#[derive(Debug, Default)]
pub struct RecordingNft {
    pub rulesets: Mutex<Vec<String>>,
}

#[async_trait]
impl Nftables for RecordingNft {
    async fn apply(&self, ruleset: &str) -> Result<(), NetworkError> {
        if let Ok(mut rulesets) = self.rulesets.lock() {
            rulesets.push(ruleset.to_owned());
        }
        Ok(())
    }
}

/// Masquerades traffic from `subnet` (this node's pods) that leaves the
/// cluster network.
pub async fn masquerade(nft: &dyn Nftables, subnet: &PodSubnet) -> Result<(), NetworkError> {
    nft.apply(&ruleset(subnet)).await
}

fn ruleset(subnet: &PodSubnet) -> String {
    // Declaring the table first makes the flush valid on the first run.
    format!(
        "table ip {TABLE}\n\
         flush table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         chain postrouting {{\n\
         type nat hook postrouting priority srcnat; policy accept;\n\
         ip saddr {subnet} ip daddr != {CLUSTER_CIDR} oifname != \"{BRIDGE}\" masquerade\n\
         }}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_ruleset_replaces_itself_and_spares_the_cluster_network() {
        let nft = RecordingNft::default();
        let subnet = PodSubnet::parse("10.244.3.0/24").unwrap();
        masquerade(&nft, &subnet).await.unwrap();
        let rulesets = nft.rulesets.lock().unwrap();
        let lines: Vec<&str> = rulesets[0].lines().collect();
        assert_eq!(lines[..2], ["table ip capstan", "flush table ip capstan"]);
        assert!(lines.contains(
            &"ip saddr 10.244.3.0/24 ip daddr != 10.244.0.0/16 oifname != \"capstan0\" masquerade"
        ));
    }
}
