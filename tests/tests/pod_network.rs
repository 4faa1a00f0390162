//! The pod network across subnets: three nodes, h1 and h2 on one subnet
//! and h3 on another, joined by a router namespace. With the default
//! `--pod-network=auto` each agent routes the pods of a node on its own
//! subnet directly (host-gw) and those of a node behind the router
//! through the VXLAN overlay. Pods reach each other by pod IP both ways,
//! the server seeing the client's pod IP; a ClusterIP balances over pods
//! on both subnets; pods get an MTU that leaves room for the overlay's
//! headers, and large requests cross it; an agent that stops removes its
//! routes and its overlay device.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{collections::BTreeSet, time::Duration};

use capstan_tests::{
    TestNet,
    artifacts::TESTAPP_IMAGE,
    cluster::{TestCluster, host_index, in_pod, node_of, pod_ip, serving},
};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::{Api, api::ListParams};

const OVERLAY: &str = "capstan.vxlan";

/// Each node's pod CIDR, by node name.
async fn pod_cidrs(cluster: &TestCluster) -> anyhow::Result<Vec<(String, String)>> {
    let nodes: Api<Node> = Api::all(cluster.client());
    Ok(nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|n| {
            let cidr = n.spec.and_then(|s| s.pod_cidr).unwrap_or_default();
            (n.metadata.name.unwrap_or_default(), cidr)
        })
        .collect())
}

/// The route host `n` has for `cidr`, as `ip route` prints it.
fn route_on(cluster: &TestCluster, n: u8, cidr: &str) -> anyhow::Result<String> {
    let route = cluster.net.host(n).netns().ip(&["route", "show", cidr])?;
    Ok(route.trim().to_owned())
}

/// The MTU of eth0 inside `pod`'s network namespace.
fn pod_mtu(cluster: &TestCluster, pod: &Pod) -> anyhow::Result<u32> {
    let host = cluster.net.host(host_index(&node_of(pod)));
    let netns = format!(
        "{}{}",
        host.pod_netns_prefix(),
        pod.metadata.uid.clone().unwrap_or_default()
    );
    let link = capstan_tests::netns::ip(&["-n", &netns, "-o", "link", "show", "eth0"])?;
    let mtu = link
        .split_whitespace()
        .skip_while(|word| *word != "mtu")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no mtu in {link}"))?;
    Ok(mtu.parse()?)
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn pods_on_two_subnets_reach_each_other_directly_and_through_the_overlay() {
    let net = TestNet::on_subnets(&[2, 1]).unwrap();
    TestCluster::run(net, async |cluster| {
        cluster
            .apply(&format!(
                r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {TESTAPP_IMAGE}
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
            ))
            .await?;
        let rolled = cluster
            .kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
            .await?;
        anyhow::ensure!(rolled.contains("successfully rolled out"), "{rolled}");
        let mut pods: Vec<Pod> = cluster
            .pods("default")
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items
            .into_iter()
            .filter(serving)
            .collect();
        pods.sort_by_key(node_of);
        let nodes: Vec<String> = pods.iter().map(node_of).collect();
        anyhow::ensure!(
            nodes == ["h1", "h2", "h3"],
            "one web pod per node: {nodes:?}"
        );

        // h1 reaches h2's pods directly and h3's, behind the router,
        // through the overlay; h3 reaches both through it.
        let cidrs = pod_cidrs(cluster).await?;
        let cidr = |node: &str| {
            cidrs
                .iter()
                .find(|(name, _)| name == node)
                .map(|(_, cidr)| cidr.clone())
                .unwrap_or_default()
        };
        let direct = route_on(cluster, 1, &cidr("h2"))?;
        anyhow::ensure!(
            direct.contains("via 198.18.0.2 dev eth0"),
            "h1 to h2's pods: {direct}"
        );
        for (from, to) in [(1, "h3"), (3, "h1"), (3, "h2")] {
            let route = route_on(cluster, from, &cidr(to))?;
            anyhow::ensure!(
                route.contains(&format!("dev {OVERLAY}")),
                "h{from} to {to}'s pods: {route}"
            );
        }

        // Pod to pod in every direction, the client's pod IP seen.
        for from in &pods {
            for to in pods.iter().filter(|p| p.metadata.uid != from.metadata.uid) {
                let target = format!("{}:8080", pod_ip(to));
                let (ok, out) = in_pod(cluster, from, &["get", &target, "/clientip"]).await?;
                let seen = out.trim().rsplit_once(':').map(|(ip, _)| ip.to_owned());
                anyhow::ensure!(
                    ok && seen.as_deref() == Some(pod_ip(from).as_str()),
                    "{} -> {}: {out}",
                    node_of(from),
                    node_of(to)
                );
            }
        }

        // Room for the overlay's headers (the test hosts' links are 1500),
        // and a request of several full segments crosses it both ways.
        for pod in &pods {
            anyhow::ensure!(
                pod_mtu(cluster, pod)? == 1450,
                "the MTU of {}'s pod",
                node_of(pod)
            );
        }
        let message = "x".repeat(6000);
        let path = format!("/echo?msg={message}");
        let target = format!("{}:8080", pod_ip(&pods[2]));
        let (ok, out) = in_pod(cluster, &pods[0], &["get", &target, &path]).await?;
        anyhow::ensure!(
            ok && out.trim() == message,
            "a 6 kB echo h1 -> h3: {}",
            &out[..out.len().min(200)]
        );

        // The Service's ClusterIP from behind the router reaches the
        // pods on both subnets.
        let services: Api<Service> = Api::namespaced(cluster.client(), "default");
        let ip = services
            .get("web")
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap_or_default();
        let names: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let address = format!("{ip}:80");
        let answered = cluster
            .eventually(
                Duration::from_secs(30),
                "h3's pod reaching every web pod",
                || async {
                    let (ok, out) = in_pod(
                        cluster,
                        &pods[2],
                        &["get", &address, "/hostname", "--count", "60"],
                    )
                    .await
                    .ok()?;
                    let answered: BTreeSet<String> = out.lines().map(str::to_owned).collect();
                    (ok && answered == names).then_some(answered)
                },
            )
            .await?;
        println!("h3's pod reached {answered:?} through {address}");

        // An agent that stops takes its routes and overlay device along.
        cluster.agents[2].stop(Duration::from_secs(20))?;
        let h3 = cluster.net.host(3).netns();
        let links = h3.ip(&["-o", "link", "show"])?;
        anyhow::ensure!(
            !links.contains(OVERLAY),
            "h3 after its agent stopped: {links}"
        );
        for node in ["h1", "h2"] {
            let route = route_on(cluster, 3, &cidr(node))?;
            anyhow::ensure!(route.is_empty(), "h3 to {node}'s pods after stop: {route}");
        }
        Ok(())
    });
}
