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

    /// Waits for an event about a `kind` with `reason` and `message`.
    async fn event_says(&self, kind: &str, reason: &str, message: &str) {
        self.eventually(&format!("a {reason} event: {message}"), async || {
            let (_, events) = self.api.get("/api/v1/namespaces/default/events").await;
            events["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| {
                    e["involvedObject"]["kind"] == kind
                        && e["reason"] == reason
                        && e["message"] == message
                })
                .then_some(())
        })
        .await;
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
    let first = pods[0]["metadata"]["name"].as_str().unwrap();
    cluster
        .event_says(
            "ReplicaSet",
            "SuccessfulCreate",
            &format!("Created pod: {first}"),
        )
        .await;

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

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const MISSING_IMAGE: &str = "capstan.invalid/missing:v1";

/// Stands in for the agents: marks every pod Running and Ready unless it
/// runs the missing image.
fn fake_kubelet(api: &Api, tasks: &mut JoinSet<()>) {
    let (app, token) = (api.app.clone(), api.token.clone());
    tasks.spawn(async move {
        let api = capstan_control::local_api::LocalApi::new(app, &token);
        loop {
            if let Ok(list) = api
                .send(axum::http::Method::GET, PODS, "application/json", &Value::Null)
                .await
            {
                for pod in list["items"].as_array().into_iter().flatten() {
                    let ready = pod["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready"));
                    if ready || pod["spec"]["containers"][0]["image"] == MISSING_IMAGE {
                        continue;
                    }
                    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
                    let status = json!({ "status": { "phase": "Running", "conditions": [
                        { "type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z" },
                    ] } });
                    let _ = api
                        .send(
                            axum::http::Method::PATCH,
                            &format!("{PODS}/{name}/status"),
                            "application/merge-patch+json",
                            &status,
                        )
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
}

fn deployment(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "annotations": { "kubernetes.io/change-cause": "first" } },
        "spec": {
            "replicas": 6,
            "progressDeadlineSeconds": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxSurge": 1, "maxUnavailable": 1 } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "c", "image": image }] },
            },
        },
    })
}

fn condition<'a>(deployment: &'a Value, kind: &str) -> Option<&'a Value> {
    deployment["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

impl Cluster {
    async fn deployment_when(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.eventually(what, async || {
            let (_, d) = self.api.get(&format!("{DEPLOYMENTS}/web")).await;
            check(&d).then_some(d)
        })
        .await
    }

    /// The Deployment's sets by revision.
    async fn sets_by_revision(&self) -> Vec<(i64, Value)> {
        let (_, list) = self.api.get(SETS).await;
        let mut sets: Vec<(i64, Value)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let revision = s["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap_or("0")
                    .parse()
                    .unwrap();
                (revision, s.clone())
            })
            .collect();
        sets.sort_by_key(|(r, _)| *r);
        sets
    }

    async fn set_image(&self, image: &str) {
        let patch = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "c", "image": image }] } } } });
        let (code, body) = self.api.merge(&format!("{DEPLOYMENTS}/web"), patch).await;
        assert_eq!(code, 200, "{body}");
    }
}

fn rolled_out(d: &Value) -> bool {
    d["status"]["observedGeneration"] == d["metadata"]["generation"]
        && d["status"]["updatedReplicas"] == 6
        && d["status"]["availableReplicas"] == 6
        && d["status"]["replicas"] == 6
}

#[tokio::test]
async fn a_deployment_rolls_within_its_bounds_rolls_back_and_reports_a_stalled_rollout() {
    let mut cluster = Cluster::new().await;
    fake_kubelet(&cluster.api, &mut cluster._controllers);
    let (code, body) = cluster
        .api
        .post(DEPLOYMENTS, deployment("capstan.invalid/testapp:v1"))
        .await;
    assert_eq!(code, 201, "{body}");
    let d = cluster.deployment_when("6 available", rolled_out).await;
    assert_eq!(condition(&d, "Available").unwrap()["status"], "True");
    assert_eq!(
        condition(&d, "Progressing").unwrap()["reason"],
        "NewReplicaSetAvailable"
    );
    let sets = cluster.sets_by_revision().await;
    assert_eq!(sets.len(), 1);
    let first = &sets[0].1;
    let hash = first["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(first["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        first["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "first"
    );
    assert_eq!(sets[0].0, 1);
    cluster
        .event_says(
            "Deployment",
            "ScalingReplicaSet",
            &format!("Scaled up replica set web-{hash} from 0 to 6"),
        )
        .await;

    // Roll to v2, sampling that at least 5 pods stay ready and never more
    // than 7 exist.
    cluster.set_image("capstan.invalid/testapp:v2").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pods = cluster.web_pods().await;
        let ready = pods
            .iter()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready"))
            })
            .count();
        assert!(
            pods.len() <= 7,
            "{} pods exist during the rollout",
            pods.len()
        );
        assert!(ready >= 5, "only {ready} pods ready during the rollout");
        let (_, d) = cluster.api.get(&format!("{DEPLOYMENTS}/web")).await;
        let all_v2 = pods.len() == 6
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "capstan.invalid/testapp:v2");
        if rolled_out(&d) && all_v2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout to v2 did not finish: {}",
            d["status"]
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sets = cluster.sets_by_revision().await;
    assert_eq!(sets.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        sets[0].1["spec"]["replicas"], 0,
        "the old set is scaled to zero"
    );

    // Back to v1: the first set comes back as revision 3.
    cluster.set_image("capstan.invalid/testapp:v1").await;
    cluster
        .eventually("the old set back as revision 3", async || {
            let sets = cluster.sets_by_revision().await;
            let (revision, set) = sets.last()?;
            (*revision == 3
                && set["metadata"]["labels"]["pod-template-hash"] == hash
                && set["status"]["availableReplicas"] == 6)
                .then_some(())
        })
        .await;
    cluster
        .deployment_when("v1 rolled out again", rolled_out)
        .await;

    // An image that never becomes ready stalls the rollout; the old pods
    // keep serving.
    cluster.set_image(MISSING_IMAGE).await;
    let d = cluster
        .deployment_when("ProgressDeadlineExceeded", |d| {
            condition(d, "Progressing").is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded")
        })
        .await;
    assert_eq!(condition(&d, "Progressing").unwrap()["status"], "False");
    assert!(
        d["status"]["availableReplicas"].as_i64().unwrap() >= 5,
        "{}",
        d["status"]
    );
}

#[tokio::test]
async fn deleting_an_owner_cascades_in_the_background_in_the_foreground_or_orphans() {
    let cluster = Cluster::new().await;
    let gone = async |path: &str| {
        cluster
            .eventually(&format!("{path} gone"), async || {
                (cluster.api.get(path).await.0 == 404).then_some(())
            })
            .await;
    };

    // Background (kubectl's default): the Deployment goes at once, then
    // its ReplicaSet and their pods.
    cluster
        .api
        .post(DEPLOYMENTS, deployment("capstan.invalid/testapp:v1"))
        .await;
    cluster.pods_are(6).await;
    let (code, _) = cluster
        .api
        .delete(&format!("{DEPLOYMENTS}/web"), None)
        .await;
    assert_eq!(code, 200);
    cluster.pods_are(0).await;
    cluster
        .eventually("no ReplicaSets left", async || {
            cluster.sets_by_revision().await.is_empty().then_some(())
        })
        .await;

    // Orphan: the ReplicaSet goes, its pods stay, owned by nobody.
    cluster.api.post(SETS, replica_set(2)).await;
    cluster.pods_are(2).await;
    let orphan =
        json!({ "apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Orphan" });
    cluster
        .api
        .delete(&format!("{SETS}/web"), Some(orphan))
        .await;
    gone(&format!("{SETS}/web")).await;
    let pods = cluster.pods_are(2).await;
    for pod in &pods {
        assert!(
            pod["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "{pod}"
        );
    }
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        cluster.api.delete(&format!("{PODS}/{name}"), None).await;
    }
    cluster.pods_are(0).await;

    // Foreground: the ReplicaSet waits, deleting, until its pods are gone.
    cluster.api.post(SETS, replica_set(2)).await;
    cluster.pods_are(2).await;
    let foreground =
        json!({ "apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground" });
    let (code, deleting) = cluster
        .api
        .delete(&format!("{SETS}/web"), Some(foreground))
        .await;
    assert_eq!(code, 200, "{deleting}");
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    gone(&format!("{SETS}/web")).await;
    cluster.pods_are(0).await;

    // Foreground on a Deployment: it waits for its ReplicaSet, which waits
    // for its pods. One pod held by a finalizer holds both owners.
    cluster
        .api
        .post(DEPLOYMENTS, deployment("capstan.invalid/testapp:v1"))
        .await;
    let pods = cluster.pods_are(6).await;
    let held = pods[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let hold = json!({ "metadata": { "finalizers": ["capstan.test/hold"] } });
    let (code, body) = cluster.api.merge(&format!("{PODS}/{held}"), hold).await;
    assert_eq!(code, 200, "{body}");
    let foreground =
        json!({ "apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground" });
    let (code, deleting) = cluster
        .api
        .delete(&format!("{DEPLOYMENTS}/web"), Some(foreground))
        .await;
    assert_eq!(code, 200, "{deleting}");
    assert_eq!(
        deleting["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    cluster.pods_are(0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, deployment) = cluster.api.get(&format!("{DEPLOYMENTS}/web")).await;
    assert_eq!(code, 200, "the Deployment waits for the held pod");
    assert!(deployment["metadata"]["deletionTimestamp"].is_string());
    let sets = cluster.sets_by_revision().await;
    assert_eq!(sets.len(), 1, "the ReplicaSet waits too");
    assert!(sets[0].1["metadata"]["deletionTimestamp"].is_string());
    let release = json!({ "metadata": { "finalizers": null } });
    let (code, body) = cluster.api.merge(&format!("{PODS}/{held}"), release).await;
    assert_eq!(code, 200, "{body}");
    gone(&format!("{DEPLOYMENTS}/web")).await;
    assert!(cluster.sets_by_revision().await.is_empty());
}

const SERVICES: &str = "/api/v1/namespaces/default/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

/// A pod of the web Service at `ip`, ready or not, declaring its port by
/// name.
async fn web_pod(api: &Api, name: &str, ip: &str, ready: bool) {
    let pod = json!({ "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": "web" } },
        "spec": { "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1",
            "ports": [{ "name": "http", "containerPort": 8080 }] }] } });
    api.post(PODS, pod).await;
    set_ready(api, name, ip, ready).await;
}

async fn set_ready(api: &Api, name: &str, ip: &str, ready: bool) {
    let status = json!({ "status": { "phase": "Running", "podIP": ip, "conditions": [
        { "type": "Ready", "status": if ready { "True" } else { "False" } },
    ] } });
    let (code, body) = api.merge(&format!("{PODS}/{name}/status"), status).await;
    assert_eq!(code, 200, "{body}");
}

impl Cluster {
    /// (ready, not ready) addresses of the web Endpoints and of its slices.
    async fn endpoints_are(&self, ready: &[&str], not_ready: &[&str]) {
        let want = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        self.eventually(
            &format!("endpoints {ready:?} / {not_ready:?}"),
            async || {
                let (_, e) = self
                    .api
                    .get("/api/v1/namespaces/default/endpoints/web")
                    .await;
                let ips = |field: &str| {
                    let mut ips: Vec<String> = e["subsets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
                        .map(|a| a["ip"].as_str().unwrap_or_default().to_owned())
                        .collect();
                    ips.sort();
                    ips
                };
                let (_, slices) = self
                    .api
                    .get(&format!(
                        "{SLICES}?labelSelector=kubernetes.io%2Fservice-name%3Dweb"
                    ))
                    .await;
                let mut slice_ready = Vec::new();
                let mut slice_not_ready = Vec::new();
                for slice in slices["items"].as_array().into_iter().flatten() {
                    if !slice["ports"]
                        .as_array()
                        .is_none_or(|p| p.iter().all(|p| p["port"] == 8080))
                    {
                        return None;
                    }
                    for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
                        let ip = endpoint["addresses"][0]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        if endpoint["conditions"]["ready"] == true {
                            slice_ready.push(ip);
                        } else {
                            slice_not_ready.push(ip);
                        }
                    }
                }
                slice_ready.sort();
                slice_not_ready.sort();
                (ips("addresses") == want(ready)
                    && ips("notReadyAddresses") == want(not_ready)
                    && slice_ready == want(ready)
                    && slice_not_ready == want(not_ready))
                .then_some(())
            },
        )
        .await;
    }
}

#[tokio::test]
async fn endpoints_and_slices_follow_pod_readiness_and_churn() {
    let cluster = Cluster::new().await;
    let service = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "web" },
        "spec": { "selector": { "app": "web" }, "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] } });
    assert_eq!(cluster.api.post(SERVICES, service).await.0, 201);
    cluster.endpoints_are(&[], &[]).await;
    web_pod(&cluster.api, "a", "10.244.1.2", true).await;
    web_pod(&cluster.api, "b", "10.244.2.2", false).await;
    cluster
        .endpoints_are(&["10.244.1.2"], &["10.244.2.2"])
        .await;
    let (_, e) = cluster
        .api
        .get("/api/v1/namespaces/default/endpoints/web")
        .await;
    assert_eq!(
        e["subsets"][0]["ports"][0]["port"], 8080,
        "the named port resolved: {e}"
    );

    set_ready(&cluster.api, "b", "10.244.2.2", true).await;
    cluster
        .endpoints_are(&["10.244.1.2", "10.244.2.2"], &[])
        .await;
    cluster.api.delete(&format!("{PODS}/a"), None).await;
    cluster.endpoints_are(&["10.244.2.2"], &[]).await;
    cluster
        .api
        .merge(
            &format!("{PODS}/b"),
            json!({ "metadata": { "labels": { "app": "other" } } }),
        )
        .await;
    cluster.endpoints_are(&[], &[]).await;

    // A Service without a selector keeps the endpoints its user writes.
    let manual = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "manual" },
        "spec": { "ports": [{ "port": 80 }] } });
    cluster.api.post(SERVICES, manual).await;
    let endpoints = json!({ "apiVersion": "v1", "kind": "Endpoints", "metadata": { "name": "manual" },
        "subsets": [{ "addresses": [{ "ip": "192.0.2.10" }], "ports": [{ "port": 80 }] }] });
    assert_eq!(
        cluster
            .api
            .post("/api/v1/namespaces/default/endpoints", endpoints)
            .await
            .0,
        201
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, kept) = cluster
        .api
        .get("/api/v1/namespaces/default/endpoints/manual")
        .await;
    assert_eq!(kept["subsets"][0]["addresses"][0]["ip"], "192.0.2.10");

    // Deleting the Service takes its Endpoints and slices along.
    cluster.api.delete(&format!("{SERVICES}/web"), None).await;
    cluster
        .eventually("web's endpoints and slices gone", async || {
            let gone = cluster
                .api
                .get("/api/v1/namespaces/default/endpoints/web")
                .await
                .0
                == 404;
            let (_, slices) = cluster
                .api
                .get(&format!(
                    "{SLICES}?labelSelector=kubernetes.io%2Fservice-name%3Dweb"
                ))
                .await;
            (gone && slices["items"].as_array().is_some_and(Vec::is_empty)).then_some(())
        })
        .await;
}
