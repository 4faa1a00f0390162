//! The StatefulSet controller in-process against the real router and
//! store (no scheduler, no agents: the tests mark pods Running and Ready
//! themselves, and finish the graceful deletion of pods on a node):
//! ordered and parallel creation and scale-down, stable names, replacement
//! under the same name, rolling updates within a partition, OnDelete,
//! adoption and release, status and events, ControllerRevisions.

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
const SETS: &str = "/apis/apps/v1/namespaces/default/statefulsets";
const EVENTS: &str = "/api/v1/namespaces/default/events";
const REVISION: &str = "controller-revision-hash";
const V1: &str = "capstan.invalid/testapp:v1";
const V2: &str = "capstan.invalid/testapp:v2";

struct Cluster {
    api: Api,
    controllers: JoinSet<()>,
}

impl Cluster {
    async fn new() -> Self {
        let api = Api::new().await;
        let controllers = controllers::spawn(Arc::clone(&api.store), api.app.clone(), &api.token);
        Self { api, controllers }
    }

    /// Stops the controllers and starts them afresh: whatever they knew
    /// only in memory is gone.
    async fn restart_controllers(&mut self) {
        self.controllers.shutdown().await;
        self.controllers = controllers::spawn(
            Arc::clone(&self.api.store),
            self.api.app.clone(),
            &self.api.token,
        );
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

    async fn pod(&self, name: &str) -> Option<Value> {
        let (code, pod) = self.api.get(&format!("{PODS}/{name}")).await;
        (code == 200).then_some(pod)
    }

    /// The names of the pods labelled app=web, sorted.
    async fn names(&self) -> Vec<String> {
        let (_, list) = self
            .api
            .get(&format!("{PODS}?labelSelector=app%3Dweb"))
            .await;
        let mut names: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    async fn names_are(&self, want: &[&str]) {
        self.eventually(&format!("pods {want:?}"), async || {
            (self.names().await == want).then_some(())
        })
        .await;
    }

    /// The pod `name` once `check` holds for it.
    async fn pod_when(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.eventually(&format!("{name}: {what}"), async || {
            self.pod(name).await.filter(|p| check(p))
        })
        .await
    }

    async fn set_status(&self, name: &str, status: Value) {
        let (code, body) = self
            .api
            .merge(
                &format!("{PODS}/{name}/status"),
                json!({ "status": status }),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }

    async fn mark_ready(&self, name: &str) {
        self.set_status(
            name,
            json!({ "phase": "Running", "conditions": [
            { "type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z" },
        ] }),
        )
        .await;
    }

    /// Waits for `name`, marks it ready, and returns it.
    async fn ready(&self, name: &str) -> Value {
        let pod = self.pod_when(name, "created", |_| true).await;
        self.mark_ready(name).await;
        pod
    }

    /// Finishes a graceful deletion, as the pod's agent would.
    async fn remove(&self, name: &str) {
        let (code, body) = self
            .api
            .delete(
                &format!("{PODS}/{name}"),
                Some(json!({ "gracePeriodSeconds": 0 })),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }

    async fn edit(&self, patch: Value) {
        let (code, body) = self.api.merge(&format!("{SETS}/web"), patch).await;
        assert_eq!(code, 200, "{body}");
    }

    async fn scale(&self, replicas: i64) {
        let (code, body) = self
            .api
            .merge(
                &format!("{SETS}/web/scale"),
                json!({ "spec": { "replicas": replicas } }),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }

    /// Waits until the set's status has every field of `want` and has
    /// observed its generation.
    async fn status_is(&self, want: Value) -> Value {
        self.eventually(&format!("status {want}"), async || {
            let (_, set) = self.api.get(&format!("{SETS}/web")).await;
            let status = &set["status"];
            let all = want
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| &status[k] == v);
            (all && status["observedGeneration"] == set["metadata"]["generation"])
                .then(|| status.clone())
        })
        .await
    }

    async fn event(&self, reason: &str, message: &str) {
        self.eventually(&format!("event {reason} {message:?}"), async || {
            let (_, events) = self.api.get(EVENTS).await;
            events["items"]
                .as_array()?
                .iter()
                .any(|e| {
                    e["reason"] == reason
                        && e["message"] == message
                        && e["source"]["component"] == "statefulset-controller"
                        && e["involvedObject"]["kind"] == "StatefulSet"
                        && e["involvedObject"]["name"] == "web"
                })
                .then_some(())
        })
        .await;
    }
}

/// The web StatefulSet; `node` puts its pods on a node (so deleting them
/// is graceful, finished by the test).
fn stateful_set(replicas: i64, policy: &str, node: Option<&str>) -> Value {
    let mut spec = json!({ "containers": [{ "name": "c", "image": V1 }] });
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": replicas,
            "serviceName": "nginx",
            "podManagementPolicy": policy,
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } }, "spec": spec },
        },
    })
}

fn deleting(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_string()
}

fn revision(pod: &Value) -> String {
    pod["metadata"]["labels"][REVISION]
        .as_str()
        .unwrap()
        .to_owned()
}

fn image(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"].as_str().unwrap()
}

#[tokio::test]
async fn ordered_ready_creates_in_order_and_scales_down_from_the_top() {
    let cluster = Cluster::new().await;
    let (code, set) = cluster
        .api
        .post(SETS, stateful_set(3, "OrderedReady", Some("node-a")))
        .await;
    assert_eq!(code, 201, "{set}");

    let web0 = cluster.pod_when("web-0", "created", |_| true).await;
    let labels = &web0["metadata"]["labels"];
    assert_eq!(labels["app"], "web");
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    assert!(revision(&web0).starts_with("web-"));
    assert_eq!(web0["spec"]["hostname"], "web-0");
    assert_eq!(web0["spec"]["subdomain"], "nginx");
    let owner = &web0["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "StatefulSet");
    assert_eq!(owner["uid"], set["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster.names().await, ["web-0"], "web-1 waits for web-0");

    cluster.mark_ready("web-0").await;
    cluster.names_are(&["web-0", "web-1"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        cluster.names().await,
        ["web-0", "web-1"],
        "web-2 waits for web-1"
    );
    cluster.mark_ready("web-1").await;
    let web2 = cluster.ready("web-2").await;
    assert_eq!(web2["spec"]["hostname"], "web-2");
    let revision = revision(&web0);
    cluster
        .status_is(json!({
            "replicas": 3, "readyReplicas": 3, "availableReplicas": 3,
            "currentReplicas": 3, "updatedReplicas": 3,
            "currentRevision": revision, "updateRevision": revision,
            "observedGeneration": 1, "collisionCount": 0,
        }))
        .await;
    cluster
        .event(
            "SuccessfulCreate",
            "create Pod web-0 in StatefulSet web successful",
        )
        .await;

    // 3 -> 1: web-2 goes first, and web-1 only once web-2 is gone.
    cluster.scale(1).await;
    cluster.pod_when("web-2", "deleting", deleting).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !deleting(&cluster.pod("web-1").await.unwrap()),
        "web-1 waits for web-2 to be gone"
    );
    cluster.remove("web-2").await;
    cluster.pod_when("web-1", "deleting", deleting).await;
    cluster.remove("web-1").await;
    cluster.names_are(&["web-0"]).await;
    cluster
        .status_is(json!({ "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1 }))
        .await;
    cluster
        .event(
            "SuccessfulDelete",
            "delete Pod web-2 in StatefulSet web successful",
        )
        .await;
}

#[tokio::test]
async fn parallel_creates_and_removes_all_at_once() {
    let cluster = Cluster::new().await;
    let mut set = stateful_set(3, "Parallel", Some("node-a"));
    set["spec"]["volumeClaimTemplates"] = json!([{
        "metadata": { "name": "www" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } },
    }]);
    let (code, body) = cluster.api.post(SETS, set).await;
    assert_eq!(code, 201, "{body}");
    cluster.names_are(&["web-0", "web-1", "web-2"]).await;
    let web1 = cluster.pod("web-1").await.unwrap();
    assert!(web1["spec"]["volumes"].is_null(), "no claims yet: {web1}");

    // None of them is ready, and both surplus pods go at once.
    cluster.scale(1).await;
    cluster.pod_when("web-2", "deleting", deleting).await;
    cluster.pod_when("web-1", "deleting", deleting).await;
    assert!(!deleting(&cluster.pod("web-0").await.unwrap()));
}

#[tokio::test]
async fn a_deleted_or_failed_pod_comes_back_under_its_name() {
    let cluster = Cluster::new().await;
    cluster
        .api
        .post(SETS, stateful_set(2, "OrderedReady", None))
        .await;
    cluster.ready("web-0").await;
    let first = cluster.ready("web-1").await;
    cluster
        .status_is(json!({ "replicas": 2, "readyReplicas": 2 }))
        .await;

    cluster.api.delete(&format!("{PODS}/web-1"), None).await;
    cluster
        .pod_when("web-1", "made again", |p| {
            p["metadata"]["uid"] != first["metadata"]["uid"]
        })
        .await;

    let failed = cluster.pod("web-0").await.unwrap();
    cluster
        .set_status("web-0", json!({ "phase": "Failed" }))
        .await;
    let again = cluster
        .pod_when("web-0", "made again", |p| {
            p["metadata"]["uid"] != failed["metadata"]["uid"]
        })
        .await;
    assert_eq!(again["status"]["phase"], "Pending");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cluster.names().await, ["web-0", "web-1"]);

    // Deleting the set takes its pods along (the garbage collector).
    cluster.api.delete(&format!("{SETS}/web"), None).await;
    cluster.names_are(&[]).await;
}

#[tokio::test]
async fn a_rolling_update_goes_from_the_top_down_to_the_partition() {
    let cluster = Cluster::new().await;
    let mut set = stateful_set(3, "OrderedReady", None);
    set["spec"]["updateStrategy"] =
        json!({ "type": "RollingUpdate", "rollingUpdate": { "partition": 1 } });
    cluster.api.post(SETS, set).await;
    let old = revision(&cluster.ready("web-0").await);
    cluster.ready("web-1").await;
    cluster.ready("web-2").await;
    cluster
        .status_is(json!({ "readyReplicas": 3, "currentRevision": old }))
        .await;

    let v2 = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "c", "image": V2 }] } } } });
    cluster.edit(v2).await;
    let web2 = cluster
        .pod_when("web-2", "at the new revision", |p| revision(p) != old)
        .await;
    assert_eq!(image(&web2), V2);
    let new = revision(&web2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        revision(&cluster.pod("web-1").await.unwrap()),
        old,
        "web-1 waits for web-2 to be ready"
    );
    cluster
        .status_is(json!({ "updatedReplicas": 1, "currentRevision": old, "updateRevision": new }))
        .await;

    cluster.mark_ready("web-2").await;
    cluster
        .pod_when("web-1", "at the new revision", |p| revision(p) == new)
        .await;
    cluster.mark_ready("web-1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let web0 = cluster.pod("web-0").await.unwrap();
    assert_eq!(revision(&web0), old, "web-0 is below the partition");
    assert_eq!(image(&web0), V1);
    cluster
        .status_is(json!({
            "readyReplicas": 3, "updatedReplicas": 2, "currentReplicas": 1,
            "currentRevision": old, "updateRevision": new,
        }))
        .await;

    // Below the partition, a deleted pod comes back at the current
    // revision.
    cluster.api.delete(&format!("{PODS}/web-0"), None).await;
    let web0 = cluster
        .pod_when("web-0", "made again", |p| {
            p["metadata"]["uid"] != web0["metadata"]["uid"]
        })
        .await;
    assert_eq!(revision(&web0), old);
    assert_eq!(image(&web0), V1);
    cluster.mark_ready("web-0").await;

    cluster
        .edit(json!({ "spec": { "updateStrategy": { "rollingUpdate": { "partition": 0 } } } }))
        .await;
    let web0 = cluster
        .pod_when("web-0", "at the new revision", |p| revision(p) == new)
        .await;
    assert_eq!(image(&web0), V2);
    cluster.mark_ready("web-0").await;
    cluster
        .status_is(json!({
            "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3, "currentReplicas": 3,
            "currentRevision": new, "updateRevision": new,
        }))
        .await;
}

#[tokio::test]
async fn on_delete_updates_only_the_pods_the_user_deletes() {
    let cluster = Cluster::new().await;
    let mut set = stateful_set(2, "Parallel", None);
    set["spec"]["updateStrategy"] = json!({ "type": "OnDelete" });
    let (code, body) = cluster.api.post(SETS, set).await;
    assert_eq!(code, 201, "{body}");
    cluster.ready("web-0").await;
    let web1 = cluster.ready("web-1").await;
    let old = revision(&web1);

    let v2 = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "c", "image": V2 }] } } } });
    cluster.edit(v2).await;
    let status = cluster
        .status_is(json!({ "currentRevision": old, "updatedReplicas": 0 }))
        .await;
    assert_ne!(status["updateRevision"], old.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["web-0", "web-1"] {
        assert_eq!(image(&cluster.pod(name).await.unwrap()), V1, "{name}");
    }

    cluster.api.delete(&format!("{PODS}/web-1"), None).await;
    let web1 = cluster
        .pod_when("web-1", "made again", |p| {
            p["metadata"]["uid"] != web1["metadata"]["uid"]
        })
        .await;
    assert_eq!(image(&web1), V2);
    assert_eq!(image(&cluster.pod("web-0").await.unwrap()), V1);
}

#[tokio::test]
async fn orphans_named_as_members_are_adopted_and_pods_that_stop_matching_are_released() {
    let cluster = Cluster::new().await;
    for name in ["web-1", "web-x", "other-0"] {
        let orphan = json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "labels": { "app": "web" } },
            "spec": { "containers": [{ "name": "c", "image": V1 }] } });
        assert_eq!(cluster.api.post(PODS, orphan).await.0, 201);
    }
    // An adopted orphan has no revision label, so a rolling update would
    // replace it (as Kubernetes does); OnDelete keeps it for the checks.
    let mut set = stateful_set(2, "Parallel", None);
    set["spec"]["updateStrategy"] = json!({ "type": "OnDelete" });
    let (_, set) = cluster.api.post(SETS, set).await;
    let uid = set["metadata"]["uid"].clone();
    let owned = |p: &Value| p["metadata"]["ownerReferences"][0]["uid"] == uid;
    let adopted = cluster
        .pod_when("web-1", "adopted and labelled", |p| {
            owned(p) && p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "web-1"
        })
        .await;
    assert_eq!(
        adopted["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
        "1"
    );
    cluster.pod_when("web-0", "created", owned).await;
    for name in ["web-x", "other-0"] {
        let pod = cluster.pod(name).await.unwrap();
        assert!(
            pod["metadata"]["ownerReferences"].is_null(),
            "{name}: {pod}"
        );
    }

    // Relabelled out of the selector: released (and, its name taken, not
    // replaced until it is gone).
    let (code, body) = cluster
        .api
        .merge(
            &format!("{PODS}/web-1"),
            json!({ "metadata": { "labels": { "app": "other" } } }),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let released = cluster
        .pod_when("web-1", "released", |p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty)
        })
        .await;
    assert_eq!(released["metadata"]["uid"], adopted["metadata"]["uid"]);
    cluster.api.delete(&format!("{PODS}/web-1"), None).await;
    let replacement = cluster.pod_when("web-1", "made by the set", owned).await;
    assert_eq!(replacement["metadata"]["labels"]["app"], "web");
}

#[tokio::test]
async fn each_template_is_a_controller_revision_and_an_undo_renumbers_its_own() {
    let mut cluster = Cluster::new().await;
    let mut set = stateful_set(2, "Parallel", None);
    set["spec"]["updateStrategy"] =
        json!({ "type": "RollingUpdate", "rollingUpdate": { "partition": 1 } });
    let (_, created) = cluster.api.post(SETS, set).await;
    let old = revision(&cluster.ready("web-0").await);
    cluster.ready("web-1").await;
    cluster
        .status_is(json!({ "readyReplicas": 2, "currentRevision": old }))
        .await;
    let revisions = cluster.api.revisions().await;
    assert_eq!(revisions.len(), 1, "{revisions:?}");
    let first = &revisions[0];
    assert_eq!(first["metadata"]["name"], old.as_str());
    assert_eq!(first["revision"], 1);
    assert_eq!(first["metadata"]["labels"]["app"], "web");
    let hash = first["metadata"]["labels"]["controller.kubernetes.io/hash"]
        .as_str()
        .unwrap();
    assert_eq!(old, format!("web-{hash}"));
    let owner = &first["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], created["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    let template = &first["data"]["spec"]["template"];
    assert_eq!(template["$patch"], "replace");
    assert_eq!(template["spec"]["containers"][0]["image"], V1);

    let v2 = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "c", "image": V2 }] } } } });
    cluster.edit(v2).await;
    let new = revision(
        &cluster
            .pod_when("web-1", "at the new revision", |p| revision(p) != old)
            .await,
    );
    cluster.mark_ready("web-1").await;
    let revisions = cluster.api.revisions().await;
    let numbered: Vec<(&str, i64)> = revisions
        .iter()
        .map(|r| {
            (
                r["metadata"]["name"].as_str().unwrap(),
                r["revision"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(numbered, [(old.as_str(), 1), (new.as_str(), 2)]);

    // Below the partition a pod is made again from the current revision,
    // which the controllers read from its ControllerRevision, not memory.
    cluster.restart_controllers().await;
    let (_, web0) = cluster.api.get(&format!("{PODS}/web-0")).await;
    cluster.api.delete(&format!("{PODS}/web-0"), None).await;
    let web0 = cluster
        .pod_when("web-0", "made again", |p| {
            p["metadata"]["uid"] != web0["metadata"]["uid"]
        })
        .await;
    assert_eq!(revision(&web0), old);
    assert_eq!(image(&web0), V1);
    cluster.mark_ready("web-0").await;

    // `kubectl rollout undo` patches the set with the old revision's data.
    let (code, body) = cluster
        .api
        .call(
            "PATCH",
            &format!("{SETS}/web"),
            Some(revisions[0]["data"].clone()),
            "application/strategic-merge-patch+json",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let web1 = cluster
        .pod_when("web-1", "back at the old revision", |p| revision(p) == old)
        .await;
    assert_eq!(image(&web1), V1);
    cluster.mark_ready("web-1").await;
    cluster
        .status_is(json!({ "updateRevision": old, "currentRevision": old, "updatedReplicas": 2 }))
        .await;
    let revisions = cluster.api.revisions().await;
    assert_eq!(revisions.len(), 2);
    assert_eq!(revisions[1]["metadata"]["name"], old.as_str());
    assert_eq!(revisions[1]["revision"], 3, "the undo is revision 3");

    // History beyond the limit that no pod uses goes.
    cluster
        .edit(json!({ "spec": { "revisionHistoryLimit": 0 } }))
        .await;
    cluster
        .eventually("the unused revision deleted", async || {
            let revisions = cluster.api.revisions().await;
            (revisions.len() == 1 && revisions[0]["metadata"]["name"] == old.as_str()).then_some(())
        })
        .await;
}
