//! The controllers in-process against the real router and store (no
//! scheduler, no agents): a ReplicaSet keeps its replicas, scales, replaces
//! deleted pods, adopts matching orphans, releases pods that stop matching,
//! and counts ready and available pods.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use capstan_control::controllers;
use common::Api;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const PODS: &str = "/api/v1/namespaces/default/pods";
const SETS: &str = "/apis/apps/v1/namespaces/default/replicasets";

struct Cluster {
    api: Api,
    _controllers: JoinSet<()>,
}

impl Cluster {
    async fn new() -> Self {
        let api = Api::new().await;
        let controllers = controllers::spawn(Arc::clone(&api.store), api.app.clone(), &api.token);
        Self {
            api,
            _controllers: controllers,
        }
    }

    /// Active pods (not being deleted) with label app=web.
    async fn web_pods(&self) -> Vec<Value> {
        let (_, list) = self
            .api
            .get(&format!("{PODS}?labelSelector=app%3Dweb"))
            .await;
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .cloned()
            .collect()
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

    async fn pods_are(&self, count: usize) -> Vec<Value> {
        self.eventually(&format!("{count} web pods"), async || {
            let pods = self.web_pods().await;
            (pods.len() == count).then_some(pods)
        })
        .await
    }

    async fn status_is(&self, field: &str, value: i64) {
        self.eventually(&format!("status.{field} = {value}"), async || {
            let (_, rs) = self.api.get(&format!("{SETS}/web")).await;
            (rs["status"][field].as_i64().unwrap_or(0) == value).then_some(())
        })
        .await;
    }
}

fn replica_set(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web", "tier": "front" } },
                "spec": { "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1" }] },
            },
        },
    })
}

#[tokio::test]
async fn a_replica_set_keeps_scales_and_replaces_its_pods() {
    let cluster = Cluster::new().await;
    let (code, rs) = cluster.api.post(SETS, replica_set(3)).await;
    assert_eq!(code, 201, "{rs}");
    let pods = cluster.pods_are(3).await;
    for pod in &pods {
        assert!(
            pod["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("web-")
        );
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], rs["metadata"]["uid"]);
        assert_eq!(owner["controller"], true);
        assert_eq!(pod["metadata"]["labels"]["tier"], "front");
    }
    cluster.status_is("replicas", 3).await;
    cluster.status_is("fullyLabeledReplicas", 3).await;
    cluster.status_is("observedGeneration", 1).await;

    let (code, _) = cluster
        .api
        .merge(
            &format!("{SETS}/web/scale"),
            json!({ "spec": { "replicas": 5 } }),
        )
        .await;
    assert_eq!(code, 200);
    cluster.pods_are(5).await;
    cluster
        .api
        .merge(&format!("{SETS}/web"), json!({ "spec": { "replicas": 2 } }))
        .await;
    let pods = cluster.pods_are(2).await;
    cluster.status_is("replicas", 2).await;

    let victim = pods[0]["metadata"]["name"].as_str().unwrap().to_owned();
    cluster.api.delete(&format!("{PODS}/{victim}"), None).await;
    let pods = cluster
        .eventually("a replacement", async || {
            let pods = cluster.web_pods().await;
            (pods.len() == 2
                && pods
                    .iter()
                    .all(|p| p["metadata"]["name"] != victim.as_str()))
            .then_some(pods)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cluster.web_pods().await.len(),
        2,
        "replaced once, not twice"
    );

    // A pod turning Ready counts as ready and available.
    let name = pods[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let ready = json!({ "status": { "phase": "Running", "conditions": [
        { "type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z" },
    ] } });
    let (code, body) = cluster
        .api
        .merge(&format!("{PODS}/{name}/status"), ready)
        .await;
    assert_eq!(code, 200, "{body}");
    cluster.status_is("readyReplicas", 1).await;
    cluster.status_is("availableReplicas", 1).await;
}

#[tokio::test]
async fn matching_orphans_are_adopted_and_pods_that_stop_matching_are_released() {
    let cluster = Cluster::new().await;
    let orphan = json!({ "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "orphan", "labels": { "app": "web" } },
        "spec": { "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1" }] } });
    assert_eq!(cluster.api.post(PODS, orphan).await.0, 201);
    let (_, rs) = cluster.api.post(SETS, replica_set(2)).await;
    let pods = cluster.pods_are(2).await;
    let (_, adopted) = cluster.api.get(&format!("{PODS}/orphan")).await;
    assert_eq!(
        adopted["metadata"]["ownerReferences"][0]["uid"], rs["metadata"]["uid"],
        "the orphan counts as one of the two"
    );
    assert!(pods.iter().any(|p| p["metadata"]["name"] == "orphan"));

    // Relabelled out of the selector: released, and replaced.
    cluster
        .api
        .merge(
            &format!("{PODS}/orphan"),
            json!({ "metadata": { "labels": { "app": "other" } } }),
        )
        .await;
    let pods = cluster
        .eventually("a replacement for the released pod", async || {
            let pods = cluster.web_pods().await;
            (pods.len() == 2 && pods.iter().all(|p| p["metadata"]["name"] != "orphan"))
                .then_some(pods)
        })
        .await;
    assert_eq!(pods.len(), 2);
    cluster
        .eventually("the released pod without an owner", async || {
            let (_, released) = cluster.api.get(&format!("{PODS}/orphan")).await;
            released["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty)
                .then_some(())
        })
        .await;
}
