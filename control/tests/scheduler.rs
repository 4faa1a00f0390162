//! The scheduler in-process against the real router and store: where pods
//! land (requests, selectors, taints, spreading, bin packing), what an
//! unschedulable pod shows and how it is placed once room appears, and
//! the binding subresource's guards.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use capstan_control::scheduler::{self, SchedulerConfig};
use common::Api;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const PODS: &str = "/api/v1/namespaces/default/pods";

struct Cluster {
    api: Api,
    _scheduler: JoinSet<()>,
}

impl Cluster {
    async fn new(config: SchedulerConfig) -> Self {
        let api = Api::new().await;
        let scheduler =
            scheduler::spawn(Arc::clone(&api.store), api.app.clone(), &api.token, config);
        Self {
            api,
            _scheduler: scheduler,
        }
    }

    /// A Ready node offering `cpu` and 8 GiB for 110 pods.
    async fn node(&self, name: &str, cpu: &str, extra: Value) {
        let mut node = json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } } });
        json_patch::merge(&mut node, &extra);
        let (code, body) = self.api.post("/api/v1/nodes", node).await;
        assert_eq!(code, 201, "{body}");
        let status = json!({ "status": {
            "allocatable": { "cpu": cpu, "memory": "8Gi", "pods": "110" },
            "capacity": { "cpu": cpu, "memory": "8Gi", "pods": "110" },
            "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady" }],
        } });
        let (code, body) = self
            .api
            .merge(&format!("/api/v1/nodes/{name}/status"), status)
            .await;
        assert_eq!(code, 200, "{body}");
    }

    async fn pod(&self, name: &str, cpu: &str, extra: Value) {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name },
            "spec": { "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1",
                "resources": { "requests": { "cpu": cpu, "memory": "64Mi" } } }] },
        });
        json_patch::merge(&mut pod, &extra);
        let (code, body) = self.api.post(PODS, pod).await;
        assert_eq!(code, 201, "{body}");
    }

    /// Waits until `check` holds for the pod, and returns it.
    async fn pod_when(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, pod) = self.api.get(&format!("{PODS}/{name}")).await;
            if check(&pod) {
                return pod;
            }
            assert!(Instant::now() < deadline, "{name}: {what}; last seen {pod}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The events about pod `name`, once there are at least `count`.
    async fn events_of(&self, name: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, events) = self
                .api
                .get(&format!(
                    "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{name}"
                ))
                .await;
            let items = events["items"].as_array().cloned().unwrap_or_default();
            if items.len() >= count {
                return items;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {count} events; have {items:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn node_of(&self, name: &str) -> String {
        let pod = self
            .pod_when(name, "bound", |p| p["spec"]["nodeName"].is_string())
            .await;
        pod["spec"]["nodeName"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn pods_land_where_they_fit_match_and_are_tolerated() {
    let cluster = Cluster::new(SchedulerConfig::default()).await;
    cluster.node("small", "1", json!({})).await;
    cluster
        .node(
            "big",
            "8",
            json!({ "metadata": { "labels": { "disk": "ssd" } } }),
        )
        .await;
    cluster
        .node("tainted", "16", json!({ "spec": { "taints": [{ "key": "dedicated", "value": "gpu", "effect": "NoSchedule" }] } }))
        .await;

    cluster.pod("needs-four", "4", json!({})).await;
    assert_eq!(cluster.node_of("needs-four").await, "big");

    cluster
        .pod(
            "wants-ssd",
            "100m",
            json!({ "spec": { "nodeSelector": { "disk": "ssd" } } }),
        )
        .await;
    assert_eq!(cluster.node_of("wants-ssd").await, "big");

    for i in 0..6 {
        cluster.pod(&format!("plain-{i}"), "100m", json!({})).await;
    }
    for i in 0..6 {
        assert_ne!(cluster.node_of(&format!("plain-{i}")).await, "tainted");
    }
    cluster
        .pod(
            "gpu-job",
            "100m",
            json!({ "spec": {
                "tolerations": [{ "key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule" }],
                "nodeSelector": { "kubernetes.io/hostname": "tainted" },
            } }),
        )
        .await;
    let bound = cluster
        .pod_when("gpu-job", "bound", |p| p["spec"]["nodeName"] == "tainted")
        .await;
    let scheduled = bound["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap();
    assert_eq!(
        scheduled["status"], "True",
        "binding marks the pod scheduled"
    );
}

#[tokio::test]
async fn replicas_of_one_owner_spread_and_a_bin_packing_profile_packs() {
    let config = SchedulerConfig::parse(
        "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packing
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
",
    )
    .unwrap();
    let cluster = Cluster::new(config).await;
    for n in ["n1", "n2", "n3"] {
        cluster.node(n, "4", json!({})).await;
    }
    let owner = json!({ "metadata": { "ownerReferences": [{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs-uid-1",
        "controller": true, "blockOwnerDeletion": true,
    }] } });
    for i in 0..3 {
        cluster
            .pod(&format!("web-{i}"), "100m", owner.clone())
            .await;
        cluster.node_of(&format!("web-{i}")).await;
    }
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(cluster.node_of(&format!("web-{i}")).await);
    }
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"], "one replica per node");

    // cpu and memory in the nodes' proportions, so balance does not pull
    // against packing.
    let packed = json!({ "spec": { "schedulerName": "bin-packing", "containers": [{
        "name": "c", "image": "capstan.invalid/testapp:v1",
        "resources": { "requests": { "cpu": "1", "memory": "2Gi" } },
    }] } });
    cluster.pod("pack-0", "1", packed.clone()).await;
    let first = cluster.node_of("pack-0").await;
    for i in 1..3 {
        cluster.pod(&format!("pack-{i}"), "1", packed.clone()).await;
        assert_eq!(
            cluster.node_of(&format!("pack-{i}")).await,
            first,
            "packed onto the fullest node"
        );
    }

    cluster
        .pod(
            "other-scheduler",
            "100m",
            json!({ "spec": { "schedulerName": "someone-else" } }),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, pod) = cluster.api.get(&format!("{PODS}/other-scheduler")).await;
    assert!(
        pod["spec"]["nodeName"].is_null(),
        "pods of another scheduler are left alone"
    );
}

#[tokio::test]
async fn an_unschedulable_pod_says_why_and_is_placed_when_room_appears() {
    let cluster = Cluster::new(SchedulerConfig::default()).await;
    cluster.node("a", "2", json!({})).await;
    cluster.node("b", "2", json!({})).await;
    cluster
        .node("c", "16", json!({ "spec": { "taints": [{ "key": "dedicated", "value": "db", "effect": "NoSchedule" }] } }))
        .await;
    cluster.pod("huge", "8", json!({})).await;
    let pending = cluster
        .pod_when("huge", "marked unschedulable", |p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "Unschedulable"))
        })
        .await;
    let condition = &pending["status"]["conditions"][0];
    assert_eq!(condition["type"], "PodScheduled");
    assert_eq!(condition["status"], "False");
    assert_eq!(
        condition["message"],
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 Insufficient cpu."
    );
    let events = cluster.events_of("huge", 1).await;
    let event = &events[0];
    assert_eq!(event["reason"], "FailedScheduling");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["message"], condition["message"]);
    assert_eq!(event["involvedObject"]["uid"], pending["metadata"]["uid"]);

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        cluster.events_of("huge", 1).await.len(),
        1,
        "no retry without a change"
    );

    cluster.node("d", "16", json!({})).await;
    assert_eq!(
        cluster.node_of("huge").await,
        "d",
        "placed once a node with room appears"
    );
}

#[tokio::test]
async fn a_binding_is_refused_for_a_recreated_pod_or_a_bound_one() {
    let api = Api::new().await;
    let (code, created) = api
        .post(
            PODS,
            json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" },
            "spec": { "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1" }] } }),
        )
        .await;
    assert_eq!(code, 201);
    let binding = |uid: &str| {
        json!({ "apiVersion": "v1", "kind": "Binding",
            "metadata": { "name": "p", "uid": uid }, "target": { "kind": "Node", "name": "n1" } })
    };
    let (code, status) = api
        .post(&format!("{PODS}/p/binding"), binding("not-its-uid"))
        .await;
    assert_eq!(code, 409, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("UID in precondition"),
        "{status}"
    );
    let uid = created["metadata"]["uid"].as_str().unwrap();
    let (code, _) = api.post(&format!("{PODS}/p/binding"), binding(uid)).await;
    assert_eq!(code, 201);
    let (code, status) = api.post(&format!("{PODS}/p/binding"), binding(uid)).await;
    assert_eq!(code, 409);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .ends_with("pod p is already assigned to node \"n1\""),
        "{status}"
    );
}
