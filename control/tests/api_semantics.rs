//! API semantics that kubectl does not exercise directly, through the
//! router in-process: authentication, limits, namespaces, graceful
//! deletion, finalizers and propagation, status versus spec, binding,
//! deletecollection, node IPAM, and watch bookmarks and 410 Gone.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

mod common;

use axum::{body::Body, http::Request};
use capstan_control::store::Revision;
use common::Api;
use serde_json::{Value, json};
use tower::ServiceExt;

fn pod(name: &str, node: Option<&str>) -> Value {
    let mut spec =
        json!({ "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1" }] });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "labels": { "app": "x" } }, "spec": spec })
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn anonymous_requests_get_401_and_health_checks_need_no_token() {
    let api = Api::new().await;
    let anonymous = api
        .app
        .clone()
        .oneshot(
            Request::get("/api/v1/namespaces")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(anonymous.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let wrong = Request::get("/api/v1/namespaces")
        .header("Authorization", "Bearer wrong")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.app.clone().oneshot(wrong).await.unwrap().status(), 401);
    let health = api
        .app
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused() {
    let api = Api::new().await;
    let huge = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "big" }, "data": { "k": "x".repeat(3 * 1024 * 1024) } });
    let (code, status) = api
        .post("/api/v1/namespaces/default/configmaps", huge)
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );
    let request = Request::post("/api/v1/namespaces/default/configmaps")
        .header("Authorization", format!("Bearer {}", api.token))
        .header("Content-Type", "application/yaml")
        .body(Body::from("metadata: {name: [unclosed"))
        .unwrap();
    assert_eq!(
        api.app.clone().oneshot(request).await.unwrap().status(),
        400
    );
    let (code, _) = api.get("/api/v1/namespaces/default/configmaps/big").await;
    assert_eq!(code, 404, "nothing of a refused create was stored");
}

#[tokio::test]
async fn namespaces_must_exist_and_terminating_ones_take_nothing_new() {
    let api = Api::new().await;
    let (code, status) = api
        .post("/api/v1/namespaces/nowhere/pods", pod("p", None))
        .await;
    assert_eq!(code, 404);
    assert_eq!(status["message"], "namespaces \"nowhere\" not found");
    api.post(
        "/api/v1/namespaces",
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "going" } }),
    )
    .await;
    let (code, namespace) = api.delete("/api/v1/namespaces/going", None).await;
    assert_eq!(code, 200);
    assert_eq!(namespace["status"]["phase"], "Terminating");
    let (code, status) = api
        .post("/api/v1/namespaces/going/pods", pod("p", None))
        .await;
    assert_eq!(code, 403, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("because it is being terminated")
    );
}

#[tokio::test]
async fn bound_pods_are_deleted_gracefully_unbound_ones_at_once() {
    let api = Api::new().await;
    api.post(PODS, pod("loose", None)).await;
    let (code, _) = api.delete(&format!("{PODS}/loose"), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        api.get(&format!("{PODS}/loose")).await.0,
        404,
        "an unbound pod goes at once"
    );

    api.post(PODS, pod("bound", Some("n1"))).await;
    let (code, marked) = api.delete(&format!("{PODS}/bound"), None).await;
    assert_eq!(code, 200);
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    let (code, still) = api.get(&format!("{PODS}/bound")).await;
    assert_eq!(
        code, 200,
        "the agent removes a bound pod once it has stopped"
    );
    assert!(still["metadata"]["deletionTimestamp"].is_string());
    let (code, _) = api
        .delete(
            &format!("{PODS}/bound"),
            Some(json!({ "gracePeriodSeconds": 0 })),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(api.get(&format!("{PODS}/bound")).await.0, 404);
}

#[tokio::test]
async fn finalizers_hold_an_object_and_propagation_is_recorded() {
    let api = Api::new().await;
    let maps = "/api/v1/namespaces/default/configmaps";
    api.post(maps, json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "held", "finalizers": ["example.com/keep"] } })).await;
    let (code, marked) = api.delete(&format!("{maps}/held"), None).await;
    assert_eq!(code, 200);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        api.get(&format!("{maps}/held")).await.0,
        200,
        "held by its finalizer"
    );
    let (code, _) = api
        .merge(
            &format!("{maps}/held"),
            json!({ "metadata": { "finalizers": null } }),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        api.get(&format!("{maps}/held")).await.0,
        404,
        "gone with its last finalizer"
    );

    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let deployment = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "d" }, "spec": {
        "selector": { "matchLabels": { "app": "x" } },
        "template": { "metadata": { "labels": { "app": "x" } }, "spec": { "containers": [{ "name": "c", "image": "i:1" }] } } } });
    api.post(deployments, deployment).await;
    let (_, foreground) = api
        .delete(
            &format!("{deployments}/d"),
            Some(json!({ "propagationPolicy": "Foreground" })),
        )
        .await;
    assert_eq!(
        foreground["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    let (code, status) = api
        .delete(
            &format!("{deployments}/d"),
            Some(json!({ "propagationPolicy": "Sideways" })),
        )
        .await;
    assert_eq!(code, 400, "{status}");
}

#[tokio::test]
async fn status_and_spec_change_through_their_own_endpoints() {
    let api = Api::new().await;
    let (_, created) = api.post(PODS, pod("web", None)).await;
    assert_eq!(
        created["status"]["phase"], "Pending",
        "clients cannot set the initial status"
    );
    let mut update = created.clone();
    update["status"]["phase"] = json!("Running");
    update["metadata"]["labels"]["app"] = json!("y");
    let (code, updated) = api.put(&format!("{PODS}/web"), update.clone()).await;
    assert_eq!(code, 200);
    assert_eq!(
        updated["status"]["phase"], "Pending",
        "an update of the pod keeps its status"
    );
    assert_eq!(updated["metadata"]["labels"]["app"], "y");
    let mut status = updated.clone();
    status["status"]["phase"] = json!("Running");
    status["metadata"]["labels"]["app"] = json!("z");
    let (code, after) = api.put(&format!("{PODS}/web/status"), status).await;
    assert_eq!(code, 200);
    assert_eq!(after["status"]["phase"], "Running");
    assert_eq!(
        after["metadata"]["labels"]["app"], "y",
        "a status update keeps everything else"
    );
    let (code, stale) = api.put(&format!("{PODS}/web"), update).await;
    assert_eq!(code, 409, "{stale}");
    assert_eq!(stale["reason"], "Conflict");
}

#[tokio::test]
async fn binding_places_a_pod_once() {
    let api = Api::new().await;
    api.post(PODS, pod("web", None)).await;
    let binding = json!({ "apiVersion": "v1", "kind": "Binding", "metadata": { "name": "web" }, "target": { "kind": "Node", "name": "n1" } });
    let (code, _) = api
        .post(&format!("{PODS}/web/binding"), binding.clone())
        .await;
    assert_eq!(code, 201);
    assert_eq!(
        api.get(&format!("{PODS}/web")).await.1["spec"]["nodeName"],
        "n1"
    );
    let (code, status) = api.post(&format!("{PODS}/web/binding"), binding).await;
    assert_eq!(code, 409);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("is already assigned to node \"n1\"")
    );
}

#[tokio::test]
async fn deletecollection_takes_what_the_selector_selects() {
    let api = Api::new().await;
    let maps = "/api/v1/namespaces/default/configmaps";
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        api.post(maps, json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name, "labels": { "tier": tier } } })).await;
    }
    let (code, deleted) = api
        .delete(&format!("{maps}?labelSelector=tier%3Dweb"), None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(deleted["items"].as_array().unwrap().len(), 2);
    let (_, left) = api.get(maps).await;
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c"]);
}

#[tokio::test]
async fn watches_send_bookmarks_on_request_and_410_for_compacted_versions() {
    let api = Api::new().await;
    let maps = "/api/v1/namespaces/default/configmaps";
    let (_, first) = api
        .post(
            maps,
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "a" } }),
        )
        .await;
    let first_rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post(
        maps,
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "b" } }),
    )
    .await;

    let initial = api.watch_lines(&format!("{maps}?watch=1&timeoutSeconds=0&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan")).await;
    let kinds: Vec<&str> = initial
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ADDED", "ADDED", "BOOKMARK"]);
    assert_eq!(
        initial[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // History is replayed by the store's watch task; a second lets it
    // arrive on a loaded machine before the watch times out.
    let replay = api
        .watch_lines(&format!(
            "{maps}?watch=1&timeoutSeconds=1&resourceVersion={first_rv}"
        ))
        .await;
    assert_eq!(replay.len(), 1);
    assert_eq!(replay[0]["object"]["metadata"]["name"], "b");

    let head = api.store.current_revision().await.unwrap();
    api.store.compact(head).await.unwrap();
    let gone = api
        .watch_lines(&format!(
            "{maps}?watch=1&timeoutSeconds=0&resourceVersion={first_rv}"
        ))
        .await;
    assert_eq!(gone[0]["type"], "ERROR");
    assert_eq!(gone[0]["object"]["code"], 410);
    let (code, status) = api
        .get(&format!(
            "{maps}?resourceVersion={first_rv}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(code, 410, "{status}");
    assert!(Revision(first_rv.parse().unwrap()) < head);
}

#[tokio::test]
async fn nodes_get_distinct_pod_cidrs_kept_until_they_are_deleted() {
    let api = Api::new().await;
    let node =
        |name: &str| json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name } });
    let (code, n1) = api.post("/api/v1/nodes", node("n1")).await;
    assert_eq!(code, 201, "{n1}");
    assert_eq!(n1["spec"]["podCIDR"], "10.244.0.0/24");
    assert_eq!(n1["spec"]["podCIDRs"], json!(["10.244.0.0/24"]));
    let (_, n2) = api.post("/api/v1/nodes", node("n2")).await;
    assert_eq!(n2["spec"]["podCIDR"], "10.244.1.0/24");

    let mut changed = n1.clone();
    changed["spec"]["podCIDR"] = json!("10.244.9.0/24");
    changed["spec"]["podCIDRs"] = json!(["10.244.9.0/24"]);
    let (code, status) = api.put("/api/v1/nodes/n1", changed).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.podCIDRs");

    let taken = json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "n3" },
        "spec": { "podCIDR": "10.244.1.0/24" } });
    let (code, status) = api.post("/api/v1/nodes", taken).await;
    assert_eq!(code, 422, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("already allocated")
    );
    let outside = json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "n3" },
        "spec": { "podCIDR": "192.168.0.0/24" } });
    let (code, status) = api.post("/api/v1/nodes", outside).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.podCIDR");

    let (code, _) = api.delete("/api/v1/nodes/n1", None).await;
    assert_eq!(code, 200);
    let (_, n3) = api.post("/api/v1/nodes", node("n3")).await;
    assert_eq!(
        n3["spec"]["podCIDR"], "10.244.0.0/24",
        "n1's subnet is free again"
    );
}

#[tokio::test]
async fn nodes_past_the_cluster_network_are_created_without_a_pod_cidr() {
    let api = Api::new().await;
    for n in 0..256 {
        let node =
            json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": format!("n{n}") } });
        let (code, created) = api.post("/api/v1/nodes", node).await;
        assert_eq!(code, 201, "{created}");
        assert!(created["spec"]["podCIDR"].is_string());
    }
    let (code, extra) = api
        .post(
            "/api/v1/nodes",
            json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "extra" } }),
        )
        .await;
    assert_eq!(code, 201, "{extra}");
    assert!(extra["spec"]["podCIDR"].is_null(), "{extra}");
}

/// A write that names no resourceVersion is applied to whatever the
/// object is when it lands, as Kubernetes does: a controller writing
/// status between the server's read and its write must not turn a
/// `kubectl scale` or a foreground delete into a 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_and_delete_win_races_with_status_writers() {
    let api = std::sync::Arc::new(Api::new().await);
    let rs = "/apis/apps/v1/namespaces/default/replicasets";
    let replicaset = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": { "name": "busy" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "busy" } },
            "template": {
                "metadata": { "labels": { "app": "busy" } },
                "spec": { "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1" }] }
            }
        }
    });
    let (code, created) = api.post(rs, replicaset).await;
    assert_eq!(code, 201, "{created}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (api, stop) = (api.clone(), stop.clone());
        async move {
            let mut writes = 0_i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writes += 1;
                let status = json!({ "status": { "observedGeneration": writes } });
                let (code, body) = api.merge(&format!("{rs}/busy/status"), status).await;
                if code == 404 {
                    break;
                }
                assert!(code == 200, "status write {writes}: {code} {body}");
            }
            writes
        }
    });

    for replicas in 2..102 {
        let (code, scale) = api
            .merge(
                &format!("{rs}/busy/scale"),
                json!({ "spec": { "replicas": replicas } }),
            )
            .await;
        assert_eq!(code, 200, "scale to {replicas}: {scale}");
        assert_eq!(scale["spec"]["replicas"], replicas);
    }
    let (code, deleted) = api
        .delete(
            &format!("{rs}/busy"),
            Some(json!({ "propagationPolicy": "Foreground" })),
        )
        .await;
    assert_eq!(code, 200, "foreground delete: {deleted}");
    assert!(deleted["metadata"]["deletionTimestamp"].is_string());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap();
    assert!(
        writes > 1,
        "the status writer raced the scales ({writes} writes)"
    );
    let (_, last) = api.get(&format!("{rs}/busy")).await;
    assert_eq!(last["spec"]["replicas"], 101, "{last}");
}
