//! Simulated nodes for the benchmarks: Node objects made Ready through the
//! status subresource (32 cpu, 128 GiB, 110 pods, three zones), with no
//! agent behind them, so pods bound to them stay Pending.

use k8s_openapi::api::core::v1::Node;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};

use super::in_parallel;

/// control's flags for a run on simulated nodes: with no agents to renew
/// their Leases, a grace longer than the run keeps the node lifecycle
/// controller from calling them unreachable midway.
pub const NO_AGENTS: [&str; 2] = ["--node-monitor-grace-period", "1h"];

fn node(name: &str) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", name.len() % 3),
        } },
    }))?)
}

fn node_status() -> serde_json::Value {
    let resources = serde_json::json!({ "cpu": "32", "memory": "128Gi", "pods": "110" });
    serde_json::json!({ "status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady" }],
    } })
}

/// Creates `count` Ready nodes, `node-00000` on, with `clients` concurrent
/// clients.
pub async fn create(client: &Client, count: usize, clients: usize) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    in_parallel(clients, count, move |i| {
        let nodes = nodes.clone();
        async move {
            let name = format!("node-{i:05}");
            nodes.create(&PostParams::default(), &node(&name)?).await?;
            nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(node_status()))
                .await?;
            Ok(())
        }
    })
    .await
}
