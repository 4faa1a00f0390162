//! Self-healing on a real three-node cluster: a killed container is
//! restarted in place, a deleted pod is replaced, and a node that stops
//! (agent killed, containerd stopped) goes Unknown within the grace period
//! while its pods are recreated on the other nodes; when it comes back,
//! its agent removes the replaced pods, so no duplicates remain. The
//! Service's EndpointSlices follow the ready pods throughout, and kubectl's
//! orphan and foreground cascades keep or remove the dependents.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::time::{Duration, Instant};

use capstan_agent::pod::labels::POD_UID;
use capstan_control::{api::DefaultTolerations, controllers::ControllersConfig};
use capstan_tests::{
    TestNet,
    artifacts::TESTAPP_IMAGE,
    cluster::{ClusterSettings, TestCluster, node_of, serving},
    control::ControlSettings,
};
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{Node, Pod},
    discovery::v1::EndpointSlice,
};
use kube::{Api, api::ListParams};

const WAIT: Duration = Duration::from_secs(90);
const GRACE: Duration = Duration::from_secs(20);
const TOLERATION_SECONDS: i64 = 5;

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |c| c.iter().map(|c| c.restart_count).sum())
}

fn node_ready(node: &Node) -> String {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

async fn web_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn failed_containers_pods_and_nodes_are_replaced_on_real_agents() {
    let settings = ClusterSettings {
        control: ControlSettings {
            controllers: ControllersConfig {
                node_monitor_grace: GRACE,
            },
            default_tolerations: DefaultTolerations {
                not_ready_seconds: TOLERATION_SECONDS,
                unreachable_seconds: TOLERATION_SECONDS,
            },
        },
        ..ClusterSettings::default()
    };
    TestCluster::run_with(TestNet::new(3).unwrap(), settings, async |cluster| {
        cluster
            .apply(&format!(
                r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 6
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: {TESTAPP_IMAGE}
"#
            ))
            .await?;
        let pods = cluster.pods("default");
        let all_ready = cluster
            .eventually(WAIT, "6 ready web pods", || async {
                let listed = web_pods(&pods).await;
                (listed.len() == 6 && listed.iter().all(serving)).then_some(listed)
            })
            .await?;
        let describe = cluster.kubectl(&["describe", "deployment", "web"]).await?;
        assert!(
            describe.contains("ScalingReplicaSet"),
            "the controller's events show in describe:\n{describe}"
        );

        // A killed container is restarted in the same pod.
        let victim = all_ready[0].clone();
        let name = victim.metadata.name.clone().unwrap();
        let host = (1..=3)
            .find(|n| cluster.net.host(*n).name() == node_of(&victim))
            .unwrap();
        let container = victim
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0]
            .container_id
            .clone()
            .unwrap();
        let containerd = cluster.containerd(host).await?;
        containerd
            .signal(container.trim_start_matches("containerd://"), libc::SIGKILL)
            .await?;
        cluster
            .wait_pod("default", &name, WAIT, "restarted and ready", |pod| {
                restarts(pod) >= 1 && serving(pod)
            })
            .await?;

        // A deleted pod is replaced.
        cluster
            .kubectl(&["delete", "pod", &name, "--wait=true"])
            .await?;
        cluster
            .eventually(WAIT, "a replacement for the deleted pod", || async {
                let listed = web_pods(&pods).await;
                (listed.len() == 6
                    && listed.iter().all(serving)
                    && listed
                        .iter()
                        .all(|p| p.metadata.name.as_deref() != Some(&name)))
                .then_some(())
            })
            .await?;

        // A stopped node goes Unknown and its pods come back elsewhere.
        let stopped = cluster.net.host(3).name().to_owned();
        let before = web_pods(&pods).await;
        let on_stopped: Vec<Pod> = before
            .iter()
            .filter(|p| node_of(p) == stopped)
            .cloned()
            .collect();
        assert!(!on_stopped.is_empty(), "the scheduler spreads replicas");
        cluster.stop_node(3)?;
        let stopped_at = Instant::now();
        let nodes: Api<Node> = Api::all(cluster.client());
        cluster
            .eventually(WAIT, "the stopped node Unknown", || async {
                let node = nodes.get(&stopped).await.ok()?;
                (node_ready(&node) == "Unknown").then_some(())
            })
            .await?;
        // The grace runs from the last Lease renewal, up to one renewal
        // period (10 s) before the stop.
        let noticed = stopped_at.elapsed();
        assert!(
            noticed >= GRACE - capstan_agent::node::LEASE_RENEW
                && noticed < GRACE + Duration::from_secs(15),
            "the node went Unknown {noticed:?} after it stopped; the grace is {GRACE:?}"
        );
        cluster
            .eventually(WAIT, "6 ready pods on the other nodes", || async {
                let listed = web_pods(&pods).await;
                let live: Vec<&Pod> = listed
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                (live.len() == 6 && live.iter().all(|p| serving(p) && node_of(p) != stopped))
                    .then_some(())
            })
            .await?;
        for pod in &on_stopped {
            let now = pods.get(pod.metadata.name.as_deref().unwrap()).await?;
            assert!(
                now.metadata.deletion_timestamp.is_some(),
                "evicted, waiting for its agent"
            );
        }

        // Back again: Ready, untainted, and the evicted pods removed there.
        cluster.start_node(3)?;
        cluster.wait_node_ready(&stopped).await?;
        cluster
            .eventually(
                WAIT,
                "no duplicates: 6 pods, none on the returned node",
                || async {
                    let listed = web_pods(&pods).await;
                    (listed.len() == 6
                        && listed.iter().all(|p| serving(p) && node_of(p) != stopped))
                    .then_some(())
                },
            )
            .await?;
        let node = nodes.get(&stopped).await?;
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        assert!(taints.is_empty(), "untainted once Ready: {taints:?}");
        let containerd = cluster.containerd(3).await?;
        for pod in &on_stopped {
            let uid = pod.metadata.uid.as_deref().unwrap();
            let left = containerd.containers_labelled(POD_UID, uid).await?;
            assert!(
                left.is_empty(),
                "the returned agent removed {uid}'s containers"
            );
        }

        // The Service's slices list exactly the ready pods' addresses.
        let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), "default");
        let by_service = ListParams::default().labels("kubernetes.io/service-name=web");
        cluster
            .eventually(WAIT, "the slices list the 6 ready pods", || async {
                let mut want: Vec<String> = web_pods(&pods)
                    .await
                    .iter()
                    .filter(|p| serving(p))
                    .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
                    .collect();
                let mut have: Vec<String> = slices
                    .list(&by_service)
                    .await
                    .ok()?
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .flat_map(|e| e.addresses.clone())
                    .collect();
                want.sort();
                have.sort();
                (want.len() == 6 && want == have).then_some(())
            })
            .await?;

        // Cascading deletes with kubectl: orphan keeps the ReplicaSet and
        // its pods; foreground removes the set only after its pods.
        let sets: Api<ReplicaSet> = Api::namespaced(cluster.client(), "default");
        cluster
            .kubectl(&["delete", "deployment", "web", "--cascade=orphan"])
            .await?;
        let orphaned = cluster
            .eventually(
                WAIT,
                "the ReplicaSet released by its deleted owner",
                || async {
                    let listed = sets
                        .list(&ListParams::default().labels("app=web"))
                        .await
                        .ok()?;
                    let set = listed.items.into_iter().next()?;
                    let owners = set.metadata.owner_references.as_ref();
                    owners.is_none_or(Vec::is_empty).then_some(set)
                },
            )
            .await?;
        assert_eq!(web_pods(&pods).await.len(), 6, "orphaned pods keep running");
        cluster
            .kubectl(&[
                "delete",
                "replicaset",
                orphaned.metadata.name.as_deref().unwrap(),
                "--cascade=foreground",
            ])
            .await?;
        let left = web_pods(&pods).await;
        assert!(
            left.is_empty(),
            "foreground: the set went after its pods, {} left",
            left.len()
        );
        Ok(())
    });
}
