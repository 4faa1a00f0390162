//! The ReplicaSet controller: keeps `replicas` active pods matching each
//! ReplicaSet's selector. It adopts matching orphans, releases pods that
//! stop matching, creates missing pods from the template (in batches of 1,
//! 2, 4, ... as Kubernetes' slow start does), deletes the surplus the way
//! Kubernetes ranks it (unscheduled, then pending, not ready, ready the
//! shortest, most restarted, newest first), and reports the counts in
//! status. Writes it has made but not yet seen through its informers are
//! *expected*, so a second pass never creates or deletes twice.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::{apps::v1::ReplicaSet, core::v1::Pod as PodObject},
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta},
    jiff::Timestamp,
};
use serde_json::json;
use tokio::task::JoinSet;

use super::{
    cache::{Cache, Change},
    expectations::Expectations,
    ownership,
    pod_cache::PodCache,
    pod_view::Pod,
    runtime::Controller,
    work_queue::WorkQueue,
};
use crate::{
    events::{EventRecorder, Involved},
    informer::InformerEvent,
    labels::Selector,
    local_api::{LocalApi, LocalApiError, ObjectRef, PatchType},
};

/// At most this many pods are created or deleted in one pass.
const BURST: usize = 500;

pub struct ReplicaSetController {
    api: LocalApi,
    events: EventRecorder,
    sets: Cache<ReplicaSet>,
    pods: PodCache,
    queue: WorkQueue,
    expectations: Expectations,
}

/// Kubernetes' order for deleting surplus replicas: the first goes first.
fn deletion_rank(pod: &Pod) -> impl Ord {
    let assigned = pod.is_bound();
    let phase = match pod.phase() {
        "Pending" => 0,
        "Running" => 2,
        _ => 1,
    };
    let ready = pod.ready_since();
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        assigned,
        phase,
        ready.is_some(),
        std::cmp::Reverse(ready),
        std::cmp::Reverse(pod.restarts()),
        std::cmp::Reverse(created),
    )
}

fn selects_pod(rs: &ReplicaSet, pod: &Pod) -> bool {
    rs.spec
        .as_ref()
        .and_then(|s| Selector::from_label_selector(&s.selector).ok())
        .is_some_and(|s| !s.is_empty() && s.matches_opt(pod.metadata.labels.as_ref()))
}

impl Controller for ReplicaSetController {
    type Error = LocalApiError;

    fn queue(&mut self) -> &mut WorkQueue {
        &mut self.queue
    }

    /// One pass over one ReplicaSet; Some(delay) asks to look again then.
    async fn reconcile(&mut self, key: &str) -> Result<Option<Duration>, LocalApiError> {
        let Some(rs) = self.sets.get(key).cloned() else {
            self.expectations.forget(key);
            return Ok(None);
        };
        if rs.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let namespace = rs.metadata.namespace.clone().unwrap_or_default();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let spec = rs.spec.clone().unwrap_or_default();
        let Ok(selector) = Selector::from_label_selector(&spec.selector) else {
            return Ok(None);
        };
        let matches =
            |pod: &Pod| !selector.is_empty() && selector.matches_opt(pod.metadata.labels.as_ref());
        let candidates = self.pods.claimable(&namespace, &uid);
        let owned =
            ownership::claim_pods(&self.api, rs.as_ref(), candidates, matches, Pod::is_active)
                .await?;
        let active: Vec<Arc<Pod>> = owned.into_iter().filter(|p| p.is_active()).collect();
        if self.expectations.met(key) {
            let want = i64::from(spec.replicas.unwrap_or(1));
            let diff = active.len() as i64 - want;
            if diff < 0 {
                self.create_pods(key, &rs, (-diff) as usize).await?;
            } else if diff > 0 {
                self.delete_pods(key, &rs, &active, diff as usize).await?;
            }
        }
        self.write_status(&rs, &active).await
    }
}

impl ReplicaSetController {
    pub fn new(api: LocalApi, events: EventRecorder) -> Self {
        Self {
            api,
            events,
            sets: Cache::default(),
            pods: PodCache::default(),
            queue: WorkQueue::default(),
            expectations: Expectations::default(),
        }
    }

    pub(super) fn on_set(&mut self, event: InformerEvent<Arc<ReplicaSet>>) {
        match self.sets.apply(event) {
            Change::Listed => self.queue.extend(self.sets.keys()),
            Change::Applied { key, .. } => self.queue.add(key),
            Change::Deleted { key, .. } => self.expectations.forget(&key),
        }
    }

    pub(super) fn on_pod(&mut self, event: InformerEvent<Arc<Pod>>) {
        let keys = ownership::on_counted_pod(
            event,
            &mut self.pods,
            &mut self.expectations,
            &self.sets,
            selects_pod,
        );
        self.queue.extend(&keys);
    }

    async fn create_pods(
        &mut self,
        key: &str,
        rs: &ReplicaSet,
        count: usize,
    ) -> Result<(), LocalApiError> {
        let count = count.min(BURST);
        let pod = Arc::new(pod_from_template(rs));
        self.expectations.expect(key, count, 0);
        let mut created = 0;
        let mut batch = 1;
        while created < count {
            let size = batch.min(count - created);
            let mut calls = JoinSet::new();
            for _ in 0..size {
                let (api, pod) = (self.api.clone(), Arc::clone(&pod));
                calls.spawn(async move { api.create(pod.as_ref()).await });
            }
            let mut failure = None;
            while let Some(result) = calls.join_next().await {
                match result {
                    Ok(Ok(pod)) => {
                        created += 1;
                        let name = pod.metadata.name.unwrap_or_default();
                        self.event(
                            rs,
                            "Normal",
                            "SuccessfulCreate",
                            &format!("Created pod: {name}"),
                        );
                    }
                    Ok(Err(err)) => {
                        self.event(
                            rs,
                            "Warning",
                            "FailedCreate",
                            &format!("Error creating: {}", err.message),
                        );
                        failure = Some(err);
                    }
                    Err(err) => {
                        failure = Some(LocalApiError {
                            code: 0,
                            message: err.to_string(),
                        })
                    }
                }
            }
            if let Some(err) = failure {
                // Creations that did not happen will not be observed.
                self.expectations.settle(key, count - created, 0);
                return Err(err);
            }
            batch *= 2;
        }
        Ok(())
    }

    fn event(&self, rs: &ReplicaSet, kind: &str, reason: &str, message: &str) {
        let about = Involved::of("apps/v1", "ReplicaSet", &rs.metadata);
        self.events.record(about, kind, reason, message);
    }

    async fn delete_pods(
        &mut self,
        key: &str,
        rs: &ReplicaSet,
        active: &[Arc<Pod>],
        count: usize,
    ) -> Result<(), LocalApiError> {
        let count = count.min(BURST);
        let mut ranked: Vec<&Arc<Pod>> = active.iter().collect();
        ranked.sort_by_key(|p| deletion_rank(p));
        self.expectations.expect(key, 0, count);
        let mut calls = JoinSet::new();
        for pod in ranked.into_iter().take(count) {
            let api = self.api.clone();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let at = ObjectRef::<PodObject>::of(&pod.metadata);
            calls.spawn(async move {
                let deleted = api.delete(&at, &DeleteOptions::default()).await;
                deleted.map(|found| found.map(|()| name))
            });
        }
        let mut failure = None;
        while let Some(result) = calls.join_next().await {
            match result {
                Ok(Ok(Some(name))) => {
                    self.event(
                        rs,
                        "Normal",
                        "SuccessfulDelete",
                        &format!("Deleted pod: {name}"),
                    );
                }
                // Gone already: its deletion may have been seen before.
                Ok(Ok(None)) => self.expectations.settle(key, 0, 1),
                Ok(Err(err)) => {
                    self.expectations.settle(key, 0, 1);
                    failure = Some(err);
                }
                Err(err) => {
                    failure = Some(LocalApiError {
                        code: 0,
                        message: err.to_string(),
                    })
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Writes the counts when they changed; asks to come back when a
    /// ready pod will have been ready for minReadySeconds.
    async fn write_status(
        &self,
        rs: &ReplicaSet,
        active: &[Arc<Pod>],
    ) -> Result<Option<Duration>, LocalApiError> {
        let spec = rs.spec.clone().unwrap_or_default();
        let min_ready =
            Duration::from_secs(u64::try_from(spec.min_ready_seconds.unwrap_or(0)).unwrap_or(0));
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let now = Timestamp::now();
        let mut ready = 0;
        let mut available = 0;
        let mut recheck: Option<Duration> = None;
        for pod in active {
            if let Some(since) = pod.ready_since() {
                ready += 1;
                let ready_for = now.duration_since(since).unsigned_abs();
                if ready_for >= min_ready {
                    available += 1;
                } else {
                    let left = min_ready - ready_for;
                    recheck = Some(recheck.map_or(left, |r| r.min(left)));
                }
            }
        }
        let fully_labeled = active
            .iter()
            .filter(|p| {
                let labels = p.metadata.labels.clone().unwrap_or_default();
                template_labels
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .count();
        let status = rs.status.clone().unwrap_or_default();
        let wanted = (
            active.len() as i32,
            fully_labeled as i32,
            ready,
            available,
            rs.metadata.generation.unwrap_or(0),
        );
        let current = (
            status.replicas,
            status.fully_labeled_replicas.unwrap_or(0),
            status.ready_replicas.unwrap_or(0),
            status.available_replicas.unwrap_or(0),
            status.observed_generation.unwrap_or(0),
        );
        if wanted != current {
            let patch = json!({ "status": {
                "replicas": wanted.0,
                "fullyLabeledReplicas": wanted.1,
                "readyReplicas": wanted.2,
                "availableReplicas": wanted.3,
                "observedGeneration": wanted.4,
            } });
            let at = ObjectRef::<ReplicaSet>::of(&rs.metadata);
            let written = self
                .api
                .patch(&at, Some("status"), PatchType::Merge, &patch)
                .await?;
            if written.is_none() {
                return Ok(None);
            }
        }
        Ok(recheck.map(|left| left + Duration::from_millis(100)))
    }
}

/// A new pod of `rs`: its template, named `<rs>-<random>`, owned by it.
fn pod_from_template(rs: &ReplicaSet) -> PodObject {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    PodObject {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                rs.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![ownership::controller_reference(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn pod(json: Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn surplus_goes_unscheduled_then_pending_then_not_ready_then_newest() {
        let unscheduled = pod(json!({ "metadata": { "name": "unscheduled" } }));
        let pending = pod(
            json!({ "metadata": { "name": "pending" }, "spec": { "nodeName": "n", "containers": [] }, "status": { "phase": "Pending" } }),
        );
        let running_not_ready = pod(
            json!({ "metadata": { "name": "not-ready" }, "spec": { "nodeName": "n", "containers": [] }, "status": { "phase": "Running" } }),
        );
        let ready = |name: &str, since: &str, created: &str| {
            pod(json!({
                "metadata": { "name": name, "creationTimestamp": created },
                "spec": { "nodeName": "n", "containers": [] },
                "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": since }] },
            }))
        };
        let ready_long = ready("ready-long", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        let ready_short = ready(
            "ready-short",
            "2026-02-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
        );
        let mut all = [
            &ready_long,
            &running_not_ready,
            &ready_short,
            &unscheduled,
            &pending,
        ];
        all.sort_by_key(|p| deletion_rank(p));
        let order: Vec<&str> = all
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "ready-short",
                "ready-long"
            ]
        );
    }

    #[test]
    fn new_pods_carry_the_template_and_a_controller_reference() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "ns", "uid": "u-1" },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": { "app": "web" } },
                "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "c", "image": "i" }] } },
            },
        }))
        .unwrap();
        let pod = serde_json::to_value(pod_from_template(&rs)).unwrap();
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["generateName"], "web-");
        assert_eq!(pod["metadata"]["namespace"], "ns");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(pod["spec"]["containers"][0]["image"], "i");
    }
}
