//! Namespace and node lifecycle in-process against the real router and
//! store (no agents: the test plays them): a deleted namespace refuses new
//! content, is emptied and then removed; a node whose heartbeats stop goes
//! Ready=Unknown and is tainted unreachable, its pods not ready and evicted
//! once their tolerations run out, and it is untainted when its agent
//! reports again.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use capstan_control::controllers::{self, ControllersConfig};
use common::Api;
use serde_json::{Value, json};
use tokio::task::JoinSet;

struct Cluster {
    api: Api,
    _controllers: JoinSet<()>,
}

impl Cluster {
    async fn new(node_monitor_grace: Duration) -> Self {
        let api = Api::new().await;
        let controllers = controllers::spawn_with(
            Arc::clone(&api.store),
            api.app.clone(),
            &api.token,
            ControllersConfig { node_monitor_grace },
        );
        Self {
            api,
            _controllers: controllers,
        }
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

    async fn create(&self, path: &str, object: Value) -> Value {
        let (code, body) = self.api.post(path, object).await;
        assert_eq!(code, 201, "{body}");
        body
    }

    /// A Ready node whose status heartbeat is now.
    async fn report_ready(&self, name: &str) {
        let status = json!({ "status": {
            "allocatable": { "cpu": "4", "memory": "8Gi", "pods": "110" },
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": k8s_openapi::jiff::Timestamp::now().to_string(),
            }],
        } });
        let (code, body) = self
            .api
            .merge(&format!("/api/v1/nodes/{name}/status"), status)
            .await;
        assert_eq!(code, 200, "{body}");
    }

    /// A pod bound to `node`, running and Ready, with `tolerations`.
    async fn running_pod(&self, name: &str, node: &str, tolerations: Value) {
        let pods = "/api/v1/namespaces/default/pods";
        self.create(
            pods,
            json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
                "spec": {
                    "nodeName": node, "tolerations": tolerations,
                    "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1" }],
                },
            }),
        )
        .await;
        let status = json!({ "status": { "phase": "Running", "conditions": [
            { "type": "Ready", "status": "True" },
        ] } });
        let (code, body) = self
            .api
            .merge(&format!("{pods}/{name}/status"), status)
            .await;
        assert_eq!(code, 200, "{body}");
    }

    async fn pod(&self, name: &str) -> Value {
        self.api
            .get(&format!("/api/v1/namespaces/default/pods/{name}"))
            .await
            .1
    }
}

fn ready_condition(object: &Value) -> Value {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or(Value::Null)
}

fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap(),
                t["effect"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_deleted_namespace_refuses_content_is_emptied_and_removed() {
    let cluster = Cluster::new(Duration::from_secs(40)).await;
    cluster
        .create(
            "/api/v1/namespaces",
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop" } }),
        )
        .await;
    let configmaps = "/api/v1/namespaces/shop/configmaps";
    cluster
        .create(
            configmaps,
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings" } }),
        )
        .await;
    cluster
        .create(
            "/apis/apps/v1/namespaces/shop/replicasets",
            json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": { "name": "web" },
                "spec": {
                    "replicas": 2, "selector": { "matchLabels": { "app": "web" } },
                    "template": {
                        "metadata": { "labels": { "app": "web" } },
                        "spec": { "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1" }] },
                    },
                },
            }),
        )
        .await;
    let pods = "/api/v1/namespaces/shop/pods";
    cluster
        .create(
            pods,
            json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "bound" },
                "spec": { "nodeName": "n1", "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1" }] },
            }),
        )
        .await;
    cluster
        .eventually("the replica set's pods", async || {
            let (_, list) = cluster.api.get(pods).await;
            (list["items"].as_array().unwrap().len() == 3).then_some(())
        })
        .await;

    let (code, body) = cluster.api.delete("/api/v1/namespaces/shop", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["phase"], "Terminating");
    let (code, refused) = cluster
        .api
        .post(
            configmaps,
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "late" } }),
        )
        .await;
    assert_eq!(code, 403, "{refused}");
    assert_eq!(
        refused["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace shop because it is being terminated"
    );

    // The pod bound to a node waits for its agent; everything else goes.
    let waiting = cluster
        .eventually("content remaining reported", async || {
            let (_, namespace) = cluster.api.get("/api/v1/namespaces/shop").await;
            let condition = namespace["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "NamespaceContentRemaining")
                .cloned()?;
            let (_, left) = cluster.api.get(configmaps).await;
            left["items"]
                .as_array()
                .unwrap()
                .is_empty()
                .then_some(condition)
        })
        .await;
    assert_eq!(
        waiting["message"],
        "Some resources are remaining: pods. has 1 resource instances"
    );
    let (_, left) = cluster.api.get(pods).await;
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bound"]);
    let (_, rs) = cluster
        .api
        .get("/apis/apps/v1/namespaces/shop/replicasets")
        .await;
    assert!(rs["items"].as_array().unwrap().is_empty());
    let (code, _) = cluster.api.get("/api/v1/namespaces/shop").await;
    assert_eq!(code, 200, "still there while content remains");

    // The agent confirms the pod has stopped.
    let (code, body) = cluster
        .api
        .delete(
            &format!("{pods}/bound"),
            Some(json!({ "gracePeriodSeconds": 0 })),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    cluster
        .eventually("the namespace removed", async || {
            let (code, _) = cluster.api.get("/api/v1/namespaces/shop").await;
            (code == 404).then_some(())
        })
        .await;
}

#[tokio::test]
async fn a_silent_node_goes_unknown_is_tainted_its_pods_evicted_and_it_recovers() {
    let cluster = Cluster::new(Duration::from_secs(1)).await;
    for name in ["alive", "silent"] {
        cluster
            .create(
                "/api/v1/nodes",
                json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name } }),
            )
            .await;
        cluster.report_ready(name).await;
    }
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    cluster
        .create(
            leases,
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": { "name": "alive" },
                "spec": { "holderIdentity": "alive", "leaseDurationSeconds": 40 },
            }),
        )
        .await;
    let renewing = {
        let (app, token) = (cluster.api.app.clone(), cluster.api.token.clone());
        tokio::spawn(async move {
            let api = capstan_control::local_api::LocalApi::new(app, &token);
            loop {
                let renewed = json!({ "spec": {
                    "renewTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                } });
                api.send(
                    axum::http::Method::PATCH,
                    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/alive",
                    "application/merge-patch+json",
                    &renewed,
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let unreachable = |seconds: Value| {
        json!([{ "key": "node.kubernetes.io/unreachable", "operator": "Exists",
                  "effect": "NoExecute", "tolerationSeconds": seconds }])
    };
    cluster
        .running_pod("brief", "silent", unreachable(json!(3)))
        .await;
    cluster
        .running_pod("patient", "silent", unreachable(Value::Null))
        .await;
    cluster.running_pod("elsewhere", "alive", json!([])).await;

    let node = cluster
        .eventually("the silent node Unknown and tainted", async || {
            let (_, node) = cluster.api.get("/api/v1/nodes/silent").await;
            (ready_condition(&node)["status"] == "Unknown" && taint_keys(&node).len() == 2)
                .then_some(node)
        })
        .await;
    assert_eq!(ready_condition(&node)["reason"], "NodeStatusUnknown");
    assert_eq!(
        taint_keys(&node),
        [
            "node.kubernetes.io/unreachable:NoSchedule",
            "node.kubernetes.io/unreachable:NoExecute"
        ]
    );
    for name in ["brief", "patient"] {
        assert_eq!(
            ready_condition(&cluster.pod(name).await)["status"],
            "False",
            "{name} is not ready on an unreachable node"
        );
    }
    let tainted_at = Instant::now();
    cluster
        .eventually("the pod with a 3 s toleration evicted", async || {
            let pod = cluster.pod("brief").await;
            pod["metadata"]["deletionTimestamp"]
                .is_string()
                .then_some(())
        })
        .await;
    // The taint's timeAdded is kept to the second, so up to a second of
    // the toleration may have passed when the test saw the taint.
    assert!(
        tainted_at.elapsed() > Duration::from_millis(1500),
        "evicted after its toleration, not at once"
    );
    assert!(
        cluster.pod("patient").await["metadata"]["deletionTimestamp"].is_null(),
        "a pod tolerating the taint for ever stays"
    );
    let (_, alive) = cluster.api.get("/api/v1/nodes/alive").await;
    assert_eq!(
        ready_condition(&alive)["status"],
        "True",
        "renewed leases keep a node"
    );
    assert!(taint_keys(&alive).is_empty());
    assert_eq!(
        ready_condition(&cluster.pod("elsewhere").await)["status"],
        "True"
    );

    cluster.report_ready("silent").await;
    cluster
        .eventually("the returning node untainted", async || {
            let (_, node) = cluster.api.get("/api/v1/nodes/silent").await;
            taint_keys(&node).is_empty().then_some(())
        })
        .await;
    renewing.abort();
}
