//! The scheduler on a real three-node cluster: control on host 1, an agent
//! on each of three test hosts, pods placed by the scheduler and run by
//! the agents, driven with the real kubectl.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::time::Duration;

use capstan_tests::{TestNet, cluster::TestCluster};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;

const BUSYBOX: &str = "capstan.invalid/busybox:v1";
const WAIT: Duration = Duration::from_secs(60);

/// A busybox pod asking for `cpu_milli` of cpu; `extra` is YAML spliced
/// into its spec (indented by two spaces).
fn pod(name: &str, cpu_milli: i64, extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    resources:
      requests:
        cpu: {cpu_milli}m
{extra}"#
    )
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

fn running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

async fn placed(cluster: &TestCluster, name: &str) -> anyhow::Result<String> {
    let pod = cluster
        .wait_pod("default", name, WAIT, "bound and running", |p| {
            node_of(p).is_some() && running(p)
        })
        .await?;
    Ok(node_of(&pod).unwrap())
}

async fn allocatable_cpu_milli(cluster: &TestCluster, node: &str) -> anyhow::Result<i64> {
    let nodes: Api<Node> = Api::all(cluster.client());
    let node = nodes.get(node).await?;
    let cpu = node.status.unwrap().allocatable.unwrap()["cpu"].0.clone();
    Ok(capstan_quantity::millicores(&cpu).unwrap())
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn the_scheduler_places_pods_by_room_selector_taint_and_owner_on_real_agents() {
    TestCluster::run(TestNet::new(3).unwrap(), async |cluster| {
        let hosts: Vec<String> = (1..=3)
            .map(|n| cluster.net.host(n).name().to_owned())
            .collect();
        let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);

        // A ReplicaSet's three replicas go to three different nodes.
        cluster
            .apply(&format!(
                r#"
apiVersion: apps/v1
kind: ReplicaSet
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
      terminationGracePeriodSeconds: 0
      containers:
      - name: main
        image: {BUSYBOX}
        command: ["sleep", "3600"]
        resources:
          requests:
            cpu: 100m
"#
            ))
            .await?;
        let pods = cluster.pods("default");
        let mut spread = cluster
            .eventually(WAIT, "three web replicas running", || async {
                let listed = pods
                    .list(&kube::api::ListParams::default().labels("app=web"))
                    .await
                    .ok()?;
                let nodes: Vec<String> = listed
                    .items
                    .iter()
                    .filter(|p| running(p))
                    .filter_map(node_of)
                    .collect();
                (nodes.len() == 3).then_some(nodes)
            })
            .await?;
        spread.sort();
        anyhow::ensure!(
            spread == hosts,
            "replicas of one owner spread over every node: {spread:?}"
        );
        cluster
            .kubectl(&["scale", "replicaset", "web", "--replicas=0"])
            .await?;
        cluster
            .eventually(WAIT, "web replicas gone", || async {
                let listed = pods
                    .list(&kube::api::ListParams::default().labels("app=web"))
                    .await
                    .ok()?;
                listed.items.is_empty().then_some(())
            })
            .await?;

        // Fill h1 and h2 so that a pod asking for 1 cpu fits only on h3.
        let cpu = allocatable_cpu_milli(cluster, h3).await?;
        for host in [h1, h2] {
            let name = format!("filler-{host}");
            let fill = allocatable_cpu_milli(cluster, host).await? - 500;
            cluster
                .apply(&pod(&name, fill, &format!("  nodeName: {host}\n")))
                .await?;
            placed(cluster, &name).await?;
        }
        cluster.apply(&pod("fits-one", 1000, "")).await?;
        anyhow::ensure!(
            &placed(cluster, "fits-one").await? == h3,
            "fits-one must go to {h3}"
        );

        // With h3 cordoned, a pod asking for what h3 has left fits nowhere:
        // describe says why; uncordoning h3 places it.
        cluster.kubectl(&["cordon", h3]).await?;
        cluster.apply(&pod("waits", cpu - 1000, "")).await?;
        let expected = "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu.";
        cluster
            .eventually(WAIT, "FailedScheduling in kubectl describe", || async {
                let described = cluster.kubectl(&["describe", "pod", "waits"]).await.ok()?;
                (described.contains("FailedScheduling") && described.contains(expected))
                    .then_some(())
            })
            .await?;
        let pending = cluster.pods("default").get("waits").await?;
        anyhow::ensure!(node_of(&pending).is_none(), "waits must wait");
        cluster.kubectl(&["uncordon", h3]).await?;
        anyhow::ensure!(
            &placed(cluster, "waits").await? == h3,
            "waits must go to {h3} once it is uncordoned"
        );

        // nodeSelector picks the labelled node.
        cluster.kubectl(&["label", "node", h2, "disk=ssd"]).await?;
        cluster
            .apply(&pod("wants-ssd", 100, "  nodeSelector:\n    disk: ssd\n"))
            .await?;
        anyhow::ensure!(
            &placed(cluster, "wants-ssd").await? == h2,
            "wants-ssd must go to {h2}"
        );

        // A tainted node takes only pods that tolerate the taint.
        cluster
            .kubectl(&["delete", "pod", &format!("filler-{h1}")])
            .await?;
        cluster
            .kubectl(&["taint", "node", h1, "dedicated=db:NoSchedule"])
            .await?;
        for i in 0..4 {
            cluster.apply(&pod(&format!("plain-{i}"), 50, "")).await?;
        }
        for i in 0..4 {
            let node = placed(cluster, &format!("plain-{i}")).await?;
            anyhow::ensure!(&node != h1, "plain-{i} went to the tainted {h1}");
        }
        let tolerant = format!(
            "  nodeSelector:\n    kubernetes.io/hostname: {h1}\n  tolerations:\n  - {{key: dedicated, operator: Equal, value: db, effect: NoSchedule}}\n"
        );
        cluster.apply(&pod("db", 100, &tolerant)).await?;
        anyhow::ensure!(&placed(cluster, "db").await? == h1, "db must go to {h1}");
        Ok(())
    });
}
