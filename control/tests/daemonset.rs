//! The DaemonSet controller in-process against the real router and store
//! (no scheduler, no agents; the tests write node and pod status, and
//! finish graceful deletions themselves where an agent would): one pod
//! bound to each eligible node as nodes join, change and leave; taints
//! and tolerations; deleted, failed and surplus pods; the status
//! counters; a rolling update within maxUnavailable, and OnDelete; the
//! ControllerRevisions of its templates, an undo and their pruning.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

mod common;

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, Instant},
};

use capstan_control::{controllers, local_api::LocalApi};
use common::Api;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const PODS: &str = "/api/v1/namespaces/default/pods";
const SETS: &str = "/apis/apps/v1/namespaces/default/daemonsets";
const REVISION: &str = "controller-revision-hash";

struct Cluster {
    api: Api,
    tasks: JoinSet<()>,
}

fn daemon_set(name: &str, spec: Value) -> Value {
    let mut ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": { "name": name },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "c", "image": "capstan.invalid/agent:v1" }] },
            },
        },
    });
    json_patch::merge(&mut ds, &json!({ "spec": spec }));
    ds
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap().to_owned()
}

fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

impl Cluster {
    async fn new() -> Self {
        let api = Api::new().await;
        let tasks = controllers::spawn(Arc::clone(&api.store), api.app.clone(), &api.token);
        Self { api, tasks }
    }

    /// A node with `metadata` and `spec`, whose status says Ready=`ready`.
    async fn node(&self, name: &str, metadata: Value, spec: Value, ready: bool) {
        let mut node = json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name }, "spec": spec });
        json_patch::merge(&mut node, &json!({ "metadata": metadata }));
        let (code, body) = self.api.post("/api/v1/nodes", node).await;
        assert_eq!(code, 201, "{body}");
        let status = json!({ "status": {
            "allocatable": { "cpu": "4", "memory": "8Gi", "pods": "110" },
            "capacity": { "cpu": "4", "memory": "8Gi", "pods": "110" },
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }],
        } });
        let (code, body) = self
            .api
            .merge(&format!("/api/v1/nodes/{name}/status"), status)
            .await;
        assert_eq!(code, 200, "{body}");
    }

    async fn patch_node(&self, name: &str, patch: Value) {
        let (code, body) = self
            .api
            .merge(&format!("/api/v1/nodes/{name}"), patch)
            .await;
        assert_eq!(code, 200, "{body}");
    }

    async fn create(&self, ds: Value) -> Value {
        let (code, body) = self.api.post(SETS, ds).await;
        assert_eq!(code, 201, "{body}");
        body
    }

    /// Every pod of the set `app`, being deleted or not.
    async fn all_pods(&self, app: &str) -> Vec<Value> {
        let (_, list) = self
            .api
            .get(&format!("{PODS}?labelSelector=app%3D{app}"))
            .await;
        list["items"].as_array().unwrap().clone()
    }

    /// The pods of `app` not being deleted.
    async fn pods(&self, app: &str) -> Vec<Value> {
        let mut pods = self.all_pods(app).await;
        pods.retain(|p| p["metadata"]["deletionTimestamp"].is_null());
        pods
    }

    async fn eventually<T>(&self, what: &str, check: impl AsyncFn() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the live pods of `app` are one on each of `nodes`.
    async fn on_nodes(&self, app: &str, nodes: &[&str]) -> Vec<Value> {
        self.eventually(&format!("{app} pods on {nodes:?}"), async || {
            let pods = self.pods(app).await;
            let mut on: Vec<String> = pods.iter().map(node_of).collect();
            on.sort();
            (on == nodes).then_some(pods)
        })
        .await
    }

    async fn status_is(&self, app: &str, want: Value) {
        self.eventually(&format!("{app} status {want}"), async || {
            let (_, ds) = self.api.get(&format!("{SETS}/{app}")).await;
            let status = &ds["status"];
            want.as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| status[k] == *v)
                .then_some(())
        })
        .await;
    }

    async fn set_phase(&self, pod: &str, phase: &str, ready: bool) {
        let status = json!({ "status": { "phase": phase, "conditions": [
            { "type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2026-01-01T00:00:00Z" },
        ] } });
        let (code, body) = self
            .api
            .merge(&format!("{PODS}/{pod}/status"), status)
            .await;
        assert_eq!(code, 200, "{body}");
    }

    /// What the agent does once a deleted pod's containers have stopped.
    async fn finish_deletion(&self, pod: &str) {
        let (code, body) = self
            .api
            .delete(&format!("{PODS}/{pod}?gracePeriodSeconds=0"), None)
            .await;
        assert!(code == 200 || code == 404, "{body}");
    }

    /// The messages of the set's events with `reason`.
    async fn events(&self, app: &str, reason: &str) -> Vec<String> {
        let (_, list) = self.api.get("/api/v1/namespaces/default/events").await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["involvedObject"]["kind"] == "DaemonSet"
                    && e["involvedObject"]["name"] == app
                    && e["reason"] == reason
                    && e["source"]["component"] == "daemonset-controller"
            })
            .map(|e| e["message"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Stands in for the agents: pods come up Running and Ready, and
    /// deleted pods go once seen deleting.
    fn fake_agents(&mut self) {
        let api = LocalApi::new(self.api.app.clone(), &self.api.token);
        self.tasks.spawn(async move {
            loop {
                let list = api
                    .send(axum::http::Method::GET, PODS, "application/json", &Value::Null)
                    .await
                    .unwrap_or_default();
                for pod in list["items"].as_array().into_iter().flatten() {
                    let name = name_of(pod);
                    let (method, path, body) = if !pod["metadata"]["deletionTimestamp"].is_null() {
                        let path = format!("{PODS}/{name}?gracePeriodSeconds=0");
                        (axum::http::Method::DELETE, path, Value::Null)
                    } else if !is_ready(pod) {
                        let status = json!({ "status": { "phase": "Running", "conditions": [
                            { "type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z" },
                        ] } });
                        (axum::http::Method::PATCH, format!("{PODS}/{name}/status"), status)
                    } else {
                        continue;
                    };
                    let _ = api
                        .send(method, &path, "application/merge-patch+json", &body)
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        });
    }
}

#[tokio::test]
async fn one_pod_bound_to_each_eligible_node_as_nodes_join_change_and_leave() {
    let cluster = Cluster::new().await;
    let edge = json!({ "labels": { "role": "edge" } });
    for name in ["n1", "n2", "n3"] {
        cluster.node(name, edge.clone(), json!({}), true).await;
    }
    cluster
        .node(
            "core",
            json!({ "labels": { "role": "core" } }),
            json!({}),
            true,
        )
        .await;
    let ds = cluster
        .create(daemon_set(
            "agent",
            json!({ "template": { "spec": { "nodeSelector": { "role": "edge" } } } }),
        ))
        .await;

    let pods = cluster.on_nodes("agent", &["n1", "n2", "n3"]).await;
    let hashes: BTreeSet<&str> = pods
        .iter()
        .map(|p| p["metadata"]["labels"][REVISION].as_str().unwrap())
        .collect();
    assert_eq!(hashes.len(), 1, "one revision: {hashes:?}");
    for pod in &pods {
        assert!(name_of(pod).starts_with("agent-"));
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], ds["metadata"]["uid"]);
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
        let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
        let not_ready = tolerations
            .iter()
            .find(|t| t["key"] == "node.kubernetes.io/not-ready")
            .unwrap();
        assert_eq!(not_ready["effect"], "NoExecute");
        assert!(
            not_ready["tolerationSeconds"].is_null(),
            "a daemon is never evicted from a node that is not ready"
        );
        assert!(
            tolerations
                .iter()
                .any(|t| t["key"] == "node.kubernetes.io/unschedulable")
        );
    }
    cluster
        .status_is(
            "agent",
            json!({ "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 0,
                    "numberAvailable": 0, "numberUnavailable": 3, "updatedNumberScheduled": 3,
                    "numberMisscheduled": 0, "observedGeneration": 1 }),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster.all_pods("agent").await.len(), 3, "created once");
    let created = cluster.events("agent", "SuccessfulCreate").await;
    for pod in &pods {
        assert!(created.contains(&format!("Created pod: {}", name_of(pod))));
    }

    for pod in &pods {
        cluster.set_phase(&name_of(pod), "Running", true).await;
    }
    cluster
        .status_is(
            "agent",
            json!({ "numberReady": 3, "numberAvailable": 3, "numberUnavailable": 0 }),
        )
        .await;

    cluster.node("n4", edge.clone(), json!({}), true).await;
    cluster.on_nodes("agent", &["n1", "n2", "n3", "n4"]).await;
    cluster
        .status_is(
            "agent",
            json!({ "desiredNumberScheduled": 4, "currentNumberScheduled": 4, "numberReady": 3, "numberUnavailable": 1 }),
        )
        .await;

    // Labelled away: its pod is deleted (and waits for its agent).
    cluster
        .patch_node(
            "n2",
            json!({ "metadata": { "labels": { "role": "core" } } }),
        )
        .await;
    cluster.on_nodes("agent", &["n1", "n3", "n4"]).await;
    let leaving = cluster
        .all_pods("agent")
        .await
        .into_iter()
        .find(|p| node_of(p) == "n2")
        .unwrap();
    assert!(!leaving["metadata"]["deletionTimestamp"].is_null());
    cluster
        .status_is(
            "agent",
            json!({ "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberMisscheduled": 0 }),
        )
        .await;
    let deleted = cluster.events("agent", "SuccessfulDelete").await;
    assert!(deleted.contains(&format!("Deleted pod: {}", name_of(&leaving))));

    // A node that is gone takes its pod along at once: no agent is left
    // to confirm a graceful deletion.
    let (code, _) = cluster.api.delete("/api/v1/nodes/n3", None).await;
    assert_eq!(code, 200);
    cluster
        .eventually("no pod left on n3", async || {
            let pods = cluster.all_pods("agent").await;
            pods.iter().all(|p| node_of(p) != "n3").then_some(())
        })
        .await;
    cluster.on_nodes("agent", &["n1", "n4"]).await;
}

#[tokio::test]
async fn taints_keep_daemons_off_unless_tolerated_while_cordoned_nodes_still_get_them() {
    let cluster = Cluster::new().await;
    cluster.node("n1", json!({}), json!({}), true).await;
    let dedicated =
        json!({ "taints": [{ "key": "dedicated", "value": "db", "effect": "NoSchedule" }] });
    cluster.node("n2", json!({}), dedicated, true).await;
    cluster
        .node("n3", json!({}), json!({ "unschedulable": true }), true)
        .await;
    cluster.node("n4", json!({}), json!({}), false).await;

    cluster.create(daemon_set("plain", json!({}))).await;
    let tolerant = json!({ "template": { "spec": { "tolerations": [{ "key": "dedicated", "operator": "Exists" }] } } });
    cluster.create(daemon_set("tolerant", tolerant)).await;
    cluster.on_nodes("plain", &["n1", "n3"]).await;
    cluster.on_nodes("tolerant", &["n1", "n2", "n3"]).await;
    cluster
        .status_is(
            "plain",
            json!({ "desiredNumberScheduled": 2, "currentNumberScheduled": 2 }),
        )
        .await;

    // NoExecute evicts daemons that do not tolerate it; a NoSchedule
    // taint added later keeps new pods off but lets the old one stay.
    cluster
        .patch_node(
            "n1",
            json!({ "spec": { "taints": [{ "key": "evict", "effect": "NoExecute" }] } }),
        )
        .await;
    cluster
        .patch_node(
            "n3",
            json!({ "spec": { "taints": [{ "key": "late", "effect": "NoSchedule" }] } }),
        )
        .await;
    cluster.on_nodes("plain", &["n3"]).await;
    cluster.on_nodes("tolerant", &["n2", "n3"]).await;
    cluster
        .status_is(
            "plain",
            json!({ "desiredNumberScheduled": 0, "currentNumberScheduled": 0, "numberMisscheduled": 1 }),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.on_nodes("plain", &["n3"]).await;

    // A node turning Ready gets its daemons.
    cluster
        .api
        .merge(
            "/api/v1/nodes/n4/status",
            json!({ "status": { "conditions": [{ "type": "Ready", "status": "True" }] } }),
        )
        .await;
    cluster.on_nodes("plain", &["n3", "n4"]).await;
}

#[tokio::test]
async fn deleted_failed_and_surplus_pods_are_replaced_or_removed() {
    let cluster = Cluster::new().await;
    cluster.node("n1", json!({}), json!({}), true).await;
    cluster.node("n2", json!({}), json!({}), true).await;
    let ds = cluster.create(daemon_set("agent", json!({}))).await;
    let pods = cluster.on_nodes("agent", &["n1", "n2"]).await;
    let first = |node: &str| name_of(pods.iter().find(|p| node_of(p) == node).unwrap());
    let (on_n1, on_n2) = (first("n1"), first("n2"));

    // A deleted pod holds its node until it is gone, then is replaced.
    cluster.api.delete(&format!("{PODS}/{on_n1}"), None).await;
    cluster.on_nodes("agent", &["n2"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cluster.pods("agent").await.len(),
        1,
        "no second pod beside one that is stopping"
    );
    cluster.finish_deletion(&on_n1).await;
    let pods = cluster.on_nodes("agent", &["n1", "n2"]).await;
    let replacement = name_of(pods.iter().find(|p| node_of(p) == "n1").unwrap());
    assert_ne!(replacement, on_n1);

    // A failed pod is deleted and replaced without waiting for its agent.
    cluster.set_phase(&on_n2, "Failed", false).await;
    cluster
        .eventually("a replacement of the failed pod", async || {
            let pods = cluster.pods("agent").await;
            (pods.len() == 2 && pods.iter().all(|p| name_of(p) != on_n2)).then_some(())
        })
        .await;
    let failed = cluster.events("agent", "FailedDaemonPod").await;
    assert_eq!(
        failed,
        [format!(
            "Found failed daemon pod default/{on_n2} on node n2, will try to kill it"
        )]
    );

    // A matching orphan on n1 is adopted, and as the younger pod there,
    // deleted.
    let orphan = json!({ "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "zz-extra", "labels": { "app": "agent" } },
        "spec": { "nodeName": "n1", "containers": [{ "name": "c", "image": "capstan.invalid/agent:v1" }] } });
    assert_eq!(cluster.api.post(PODS, orphan).await.0, 201);
    cluster
        .eventually("the surplus orphan adopted and deleted", async || {
            let (_, pod) = cluster.api.get(&format!("{PODS}/zz-extra")).await;
            (pod["metadata"]["ownerReferences"][0]["uid"] == ds["metadata"]["uid"]
                && !pod["metadata"]["deletionTimestamp"].is_null())
            .then_some(())
        })
        .await;
    let pods = cluster.on_nodes("agent", &["n1", "n2"]).await;
    assert!(
        pods.iter().any(|p| name_of(p) == replacement),
        "the oldest stays"
    );
}

#[tokio::test]
async fn a_template_change_rolls_within_max_unavailable_and_on_delete_waits() {
    let mut cluster = Cluster::new().await;
    let nodes = ["n1", "n2", "n3", "n4"];
    for name in nodes {
        cluster.node(name, json!({}), json!({}), true).await;
    }
    cluster.fake_agents();
    cluster.create(daemon_set("agent", json!({}))).await;
    cluster
        .status_is(
            "agent",
            json!({ "desiredNumberScheduled": 4, "numberAvailable": 4, "updatedNumberScheduled": 4 }),
        )
        .await;
    let old_hash = cluster.pods("agent").await[0]["metadata"]["labels"][REVISION].clone();

    let image = |image: &str| json!({ "spec": { "template": { "spec": { "containers": [{ "name": "c", "image": image }] } } } });
    let (code, body) = cluster
        .api
        .merge(&format!("{SETS}/agent"), image("capstan.invalid/agent:v2"))
        .await;
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut most_unavailable = 0;
    loop {
        let pods = cluster.pods("agent").await;
        let serving: BTreeSet<String> = pods.iter().filter(|p| is_ready(p)).map(node_of).collect();
        most_unavailable = most_unavailable.max(nodes.len() - serving.len());
        let (_, ds) = cluster.api.get(&format!("{SETS}/agent")).await;
        let status = &ds["status"];
        if status["observedGeneration"] == 2
            && status["updatedNumberScheduled"] == 4
            && status["numberAvailable"] == 4
            && pods.len() == 4
            && pods
                .iter()
                .all(|p| p["metadata"]["labels"][REVISION] != old_hash && is_ready(p))
        {
            break;
        }
        assert!(Instant::now() < deadline, "rollout stuck: {status}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        most_unavailable <= 1,
        "{most_unavailable} nodes were without a ready pod at once"
    );
    assert_eq!(cluster.events("agent", "SuccessfulDelete").await.len(), 4);

    // OnDelete: a new template waits for pods to be deleted.
    let mut on_delete = image("capstan.invalid/agent:v3");
    on_delete["spec"]["updateStrategy"] = json!({ "type": "OnDelete", "rollingUpdate": null });
    let (code, body) = cluster.api.merge(&format!("{SETS}/agent"), on_delete).await;
    assert_eq!(code, 200, "{body}");
    cluster
        .status_is(
            "agent",
            json!({ "observedGeneration": 3, "updatedNumberScheduled": 0 }),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pods = cluster.pods("agent").await;
    assert_eq!(pods.len(), 4);
    let v2_hash = pods[0]["metadata"]["labels"][REVISION].clone();
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["labels"][REVISION] == v2_hash),
        "nothing replaced on its own"
    );
    let victim = pods.iter().find(|p| node_of(p) == "n2").unwrap();
    cluster
        .api
        .delete(&format!("{PODS}/{}", name_of(victim)), None)
        .await;
    cluster
        .status_is(
            "agent",
            json!({ "updatedNumberScheduled": 1, "numberAvailable": 4 }),
        )
        .await;
    let pods = cluster.pods("agent").await;
    let updated: Vec<String> = pods
        .iter()
        .filter(|p| p["metadata"]["labels"][REVISION] != v2_hash)
        .map(node_of)
        .collect();
    assert_eq!(updated, ["n2"]);

    // Each template is a ControllerRevision named and labelled with the
    // hash its pods carry.
    let v3_hash =
        pods.iter().find(|p| node_of(p) == "n2").unwrap()["metadata"]["labels"][REVISION].clone();
    let revisions = cluster.api.revisions().await;
    let hashes: Vec<(&Value, i64)> = revisions
        .iter()
        .map(|r| {
            (
                &r["metadata"]["labels"][REVISION],
                r["revision"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(hashes, [(&old_hash, 1), (&v2_hash, 2), (&v3_hash, 3)]);
    for revision in &revisions {
        let hash = revision["metadata"]["labels"][REVISION].as_str().unwrap();
        assert_eq!(name_of(revision), format!("agent-{hash}"));
        assert_eq!(revision["metadata"]["labels"]["app"], "agent");
        assert_eq!(
            revision["metadata"]["ownerReferences"][0]["kind"],
            "DaemonSet"
        );
    }

    // An undo (the old revision's data as a strategic merge patch, as
    // kubectl sends it) makes that revision the newest again: the three
    // pods still at v2 count as updated.
    let (code, body) = cluster
        .api
        .call(
            "PATCH",
            &format!("{SETS}/agent"),
            Some(revisions[1]["data"].clone()),
            "application/strategic-merge-patch+json",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    cluster
        .status_is("agent", json!({ "updatedNumberScheduled": 3 }))
        .await;
    let revisions = cluster.api.revisions().await;
    assert_eq!(
        revisions.last().unwrap()["metadata"]["labels"][REVISION],
        v2_hash
    );
    assert_eq!(revisions.last().unwrap()["revision"], 4);

    // Beyond the history limit, revisions no pod uses go: v1's; v3's
    // stays while n2's pod is at it.
    let (code, body) = cluster
        .api
        .merge(
            &format!("{SETS}/agent"),
            json!({ "spec": { "revisionHistoryLimit": 0 } }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    cluster
        .eventually("v1's revision pruned", async || {
            let left: Vec<Value> = cluster
                .api
                .revisions()
                .await
                .iter()
                .map(|r| r["metadata"]["labels"][REVISION].clone())
                .collect();
            (left == [v3_hash.clone(), v2_hash.clone()]).then_some(())
        })
        .await;
}

#[tokio::test]
async fn a_surging_update_starts_each_new_pod_before_the_old_one_goes() {
    let mut cluster = Cluster::new().await;
    let nodes = ["n1", "n2", "n3", "n4"];
    for name in nodes {
        cluster.node(name, json!({}), json!({}), true).await;
    }
    cluster.fake_agents();
    let surge = json!({ "updateStrategy": { "type": "RollingUpdate",
        "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 0 } } });
    cluster.create(daemon_set("proxy", surge)).await;
    cluster
        .status_is(
            "proxy",
            json!({ "numberAvailable": 4, "updatedNumberScheduled": 4 }),
        )
        .await;
    let old_hash = cluster.pods("proxy").await[0]["metadata"]["labels"][REVISION].clone();

    let v2 = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "c", "image": "capstan.invalid/agent:v2" }] } } } });
    let (code, body) = cluster.api.merge(&format!("{SETS}/proxy"), v2).await;
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut fewest_serving, mut most_pods) = (nodes.len(), 0);
    loop {
        let pods = cluster.pods("proxy").await;
        let serving: BTreeSet<String> = pods.iter().filter(|p| is_ready(p)).map(node_of).collect();
        fewest_serving = fewest_serving.min(serving.len());
        most_pods = most_pods.max(pods.len());
        let (_, ds) = cluster.api.get(&format!("{SETS}/proxy")).await;
        if ds["status"]["updatedNumberScheduled"] == 4
            && pods.len() == 4
            && pods
                .iter()
                .all(|p| p["metadata"]["labels"][REVISION] != old_hash && is_ready(p))
        {
            break;
        }
        assert!(Instant::now() < deadline, "rollout stuck: {}", ds["status"]);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(fewest_serving, 4, "a node was left without a ready pod");
    assert!(most_pods <= 5, "{most_pods} pods at once with maxSurge 1");

    // Surging and taking nodes down are exclusive, as in Kubernetes.
    let both =
        json!({ "spec": { "updateStrategy": { "rollingUpdate": { "maxUnavailable": 1 } } } });
    let (code, body) = cluster.api.merge(&format!("{SETS}/proxy"), both).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("may not be set when maxUnavailable is non-zero"),
        "{body}"
    );
}
