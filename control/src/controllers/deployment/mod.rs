//! The Deployment controller: one ReplicaSet per pod template, named and
//! labelled with the template's hash (`pod-template-hash`) and numbered
//! by the `deployment.kubernetes.io/revision` annotation, so that
//! `kubectl rollout history | undo | status` work as they do against
//! Kubernetes. A template change rolls from the old sets to the new one,
//! RollingUpdate within maxSurge and maxUnavailable (Kubernetes'
//! arithmetic), or Recreate (old pods gone first); the status counters and
//! the Progressing and Available conditions follow, and a rollout that
//! makes no progress for progressDeadlineSeconds is marked
//! ProgressDeadlineExceeded. Old sets beyond revisionHistoryLimit go.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use axum::http::Method;
use k8s_openapi::{
    api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
    jiff::Timestamp,
};
use serde_json::{Value, json};

use super::{
    object_key,
    pod_template::{scaled, template_hash},
    runtime::Controller,
    work_queue::WorkQueue,
};
use crate::{
    events::{EventRecorder, Involved},
    informer::InformerEvent,
    labels::Selector,
    local_api::{LocalApi, LocalApiError},
};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotations of the Deployment that are not copied to its sets.
const NOT_COPIED: [&str; 4] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
];

pub struct DeploymentController {
    api: LocalApi,
    events: EventRecorder,
    deployments: HashMap<String, Arc<Deployment>>,
    sets: HashMap<String, Arc<ReplicaSet>>,
    queue: WorkQueue,
}

fn controller_ref(set: &ReplicaSet) -> Option<&OwnerReference> {
    set.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

fn replicas(set: &ReplicaSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn revision(set: &ReplicaSet) -> i64 {
    set.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn status_of(set: &ReplicaSet) -> (i32, i32, i32) {
    let status = set.status.clone().unwrap_or_default();
    (
        status.replicas,
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    )
}

/// A set's template as its Deployment's would be: without the hash label.
fn template_without_hash(set: &ReplicaSet) -> Value {
    let mut template = serde_json::to_value(
        set.spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove(TEMPLATE_HASH);
    }
    template
}

/// (maxSurge, maxUnavailable) of a rolling Deployment; never both zero.
fn surge_and_unavailable(deployment: &Deployment) -> (i32, i32) {
    let spec = deployment.spec.clone().unwrap_or_default();
    let total = spec.replicas.unwrap_or(1);
    let rolling = spec.strategy.and_then(|s| s.rolling_update);
    let surge = scaled(
        rolling.as_ref().and_then(|r| r.max_surge.as_ref()),
        total,
        true,
    );
    let unavailable = scaled(
        rolling.as_ref().and_then(|r| r.max_unavailable.as_ref()),
        total,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable.min(total))
    }
}

impl Controller for DeploymentController {
    type Error = LocalApiError;

    fn queue(&mut self) -> &mut WorkQueue {
        &mut self.queue
    }

    async fn reconcile(&mut self, key: &str) -> Result<Option<Duration>, LocalApiError> {
        let Some(deployment) = self.deployments.get(key).cloned() else {
            return Ok(None);
        };
        if deployment.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = deployment.spec.clone().unwrap_or_default();
        if Selector::from_label_selector(&spec.selector).is_err() {
            return Ok(None);
        }
        let template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
        let mut sets = self.owned_sets(&deployment);
        sets.sort_by_key(|s| s.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let max_revision = sets.iter().map(|s| revision(s)).max().unwrap_or(0);
        let new_set = sets
            .iter()
            .find(|s| template_without_hash(s) == template)
            .cloned();
        let paused = spec.paused.unwrap_or(false);
        let new_set = match new_set {
            Some(set) => {
                if revision(&set) < max_revision && !paused {
                    // A rollback: the old template is the newest revision.
                    self.annotate(&set, max_revision + 1).await?;
                }
                Some(set)
            }
            None if paused => None,
            None => Some(
                self.create_set(&deployment, &template, max_revision + 1)
                    .await?,
            ),
        };
        let new_name = new_set.as_ref().and_then(|s| s.metadata.name.clone());
        let old_sets: Vec<Arc<ReplicaSet>> = sets
            .iter()
            .filter(|s| s.metadata.name != new_name)
            .cloned()
            .collect();
        let desired = spec.replicas.unwrap_or(1);
        if !paused && let Some(new_set) = &new_set {
            let recreate =
                spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
            if recreate {
                self.recreate(&deployment, new_set, &old_sets, desired)
                    .await?;
            } else {
                self.roll(&deployment, new_set, &old_sets, desired).await?;
            }
        }
        self.clean_up(&deployment, &old_sets).await?;
        self.write_status(&deployment, new_set.as_deref(), &sets)
            .await
    }
}

impl DeploymentController {
    pub fn new(api: LocalApi, events: EventRecorder) -> Self {
        Self {
            api,
            events,
            deployments: HashMap::new(),
            sets: HashMap::new(),
            queue: WorkQueue::default(),
        }
    }

    pub(super) fn on_deployment(&mut self, event: InformerEvent<Deployment>) {
        let key = |d: &Deployment| {
            object_key(d.metadata.namespace.as_deref(), d.metadata.name.as_deref())
        };
        match event {
            InformerEvent::Listed(all) => {
                self.deployments = all.into_iter().map(|d| (key(&d), Arc::new(d))).collect();
                let keys: Vec<String> = self.deployments.keys().cloned().collect();
                for k in keys {
                    self.queue.add(k);
                }
            }
            InformerEvent::Applied(d) => {
                let k = key(&d);
                self.deployments.insert(k.clone(), Arc::new(d));
                self.queue.add(k);
            }
            InformerEvent::Deleted(d) => {
                self.deployments.remove(&key(&d));
            }
        }
    }

    pub(super) fn on_set(&mut self, event: InformerEvent<Arc<ReplicaSet>>) {
        let key = |s: &ReplicaSet| {
            object_key(s.metadata.namespace.as_deref(), s.metadata.name.as_deref())
        };
        match event {
            InformerEvent::Listed(all) => {
                self.sets = all.into_iter().map(|s| (key(&s), s)).collect();
                let keys: Vec<String> = self.deployments.keys().cloned().collect();
                for k in keys {
                    self.queue.add(k);
                }
            }
            InformerEvent::Applied(set) => {
                self.enqueue_owner(&set);
                self.sets.insert(key(&set), set);
            }
            InformerEvent::Deleted(set) => {
                self.enqueue_owner(&set);
                self.sets.remove(&key(&set));
            }
        }
    }

    fn enqueue_owner(&mut self, set: &ReplicaSet) {
        if let Some(owner) = controller_ref(set).filter(|o| o.kind == "Deployment") {
            self.queue.add(object_key(
                set.metadata.namespace.as_deref(),
                Some(&owner.name),
            ));
        }
    }

    /// The sets `deployment` controls.
    fn owned_sets(&self, deployment: &Deployment) -> Vec<Arc<ReplicaSet>> {
        let uid = deployment.metadata.uid.as_deref().unwrap_or_default();
        self.sets
            .values()
            .filter(|s| s.metadata.namespace == deployment.metadata.namespace)
            .filter(|s| controller_ref(s).is_some_and(|o| o.uid == uid))
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect()
    }

    async fn create_set(
        &mut self,
        deployment: &Deployment,
        template: &Value,
        revision: i64,
    ) -> Result<Arc<ReplicaSet>, LocalApiError> {
        let hash = template_hash(template);
        let name = format!(
            "{}-{hash}",
            deployment.metadata.name.as_deref().unwrap_or_default()
        );
        let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
        let mut template = template.clone();
        template["metadata"]["labels"][TEMPLATE_HASH] = json!(hash);
        let spec = deployment.spec.clone().unwrap_or_default();
        let mut selector = serde_json::to_value(&spec.selector).unwrap_or(Value::Null);
        selector["matchLabels"][TEMPLATE_HASH] = json!(hash);
        let mut labels = template["metadata"]["labels"].clone();
        labels[TEMPLATE_HASH] = json!(hash);
        let (surge, _) = surge_and_unavailable(deployment);
        let desired = spec.replicas.unwrap_or(1);
        let mut annotations: BTreeMap<String, String> = deployment
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .collect();
        annotations.insert(REVISION.to_owned(), revision.to_string());
        annotations.insert(DESIRED_REPLICAS.to_owned(), desired.to_string());
        annotations.insert(MAX_REPLICAS.to_owned(), (desired + surge).to_string());
        let body = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "name": deployment.metadata.name, "uid": deployment.metadata.uid,
                    "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": spec.min_ready_seconds.unwrap_or(0),
                "selector": selector,
                "template": template,
            },
        });
        let path = format!("/apis/apps/v1/namespaces/{namespace}/replicasets");
        let created = match self
            .api
            .send(Method::POST, &path, "application/json", &body)
            .await
        {
            Ok(created) => created,
            Err(err) if err.code == 409 => {
                self.api
                    .send(
                        Method::GET,
                        &format!("{path}/{name}"),
                        "application/json",
                        &Value::Null,
                    )
                    .await?
            }
            Err(err) => return Err(err),
        };
        let set: ReplicaSet = serde_json::from_value(created).map_err(|err| LocalApiError {
            code: 0,
            message: err.to_string(),
        })?;
        let set = Arc::new(set);
        self.sets
            .insert(object_key(Some(&namespace), Some(&name)), Arc::clone(&set));
        Ok(set)
    }

    /// Sets a set's replicas (and the annotations that go with them).
    async fn scale(
        &mut self,
        deployment: &Deployment,
        set: &ReplicaSet,
        to: i32,
    ) -> Result<(), LocalApiError> {
        if replicas(set) == to {
            return Ok(());
        }
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let (surge, _) = surge_and_unavailable(deployment);
        let patch = json!({
            "metadata": { "annotations": {
                DESIRED_REPLICAS: desired.to_string(),
                MAX_REPLICAS: (desired + surge).to_string(),
            } },
            "spec": { "replicas": to },
        });
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let name = set.metadata.name.as_deref().unwrap_or_default();
        let path = format!("/apis/apps/v1/namespaces/{namespace}/replicasets/{name}");
        let updated = self
            .api
            .send(Method::PATCH, &path, "application/merge-patch+json", &patch)
            .await?;
        let from = replicas(set);
        let direction = if to > from { "up" } else { "down" };
        self.events.record(
            Involved::of("apps/v1", "Deployment", &deployment.metadata),
            "Normal",
            "ScalingReplicaSet",
            &format!("Scaled {direction} replica set {name} from {from} to {to}"),
        );
        if let Ok(set) = serde_json::from_value::<ReplicaSet>(updated) {
            self.sets
                .insert(object_key(Some(namespace), Some(name)), Arc::new(set));
        }
        Ok(())
    }

    async fn annotate(&mut self, set: &ReplicaSet, revision: i64) -> Result<(), LocalApiError> {
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let name = set.metadata.name.as_deref().unwrap_or_default();
        let patch = json!({ "metadata": { "annotations": { REVISION: revision.to_string() } } });
        let path = format!("/apis/apps/v1/namespaces/{namespace}/replicasets/{name}");
        self.api
            .send(Method::PATCH, &path, "application/merge-patch+json", &patch)
            .await
            .map(drop)
    }

    /// RollingUpdate, as Kubernetes' rolling.go does it: the new set grows
    /// while the total stays within desired + maxSurge; old sets shrink
    /// while available pods stay at or above desired - maxUnavailable.
    async fn roll(
        &mut self,
        deployment: &Deployment,
        new_set: &ReplicaSet,
        old_sets: &[Arc<ReplicaSet>],
        desired: i32,
    ) -> Result<(), LocalApiError> {
        let (surge, unavailable) = surge_and_unavailable(deployment);
        let old_total: i32 = old_sets.iter().map(|s| replicas(s)).sum();
        // A set scaled down may not have deleted its pods yet: the surge
        // counts the pods still there, so the total never goes over.
        let old_pods: i32 = old_sets
            .iter()
            .map(|s| replicas(s).max(s.status.as_ref().map_or(0, |st| st.replicas)))
            .sum();
        let new_replicas = replicas(new_set);
        if new_replicas > desired {
            self.scale(deployment, new_set, desired).await?;
        } else if new_replicas < desired {
            let room = (desired + surge - new_replicas - old_pods).max(0);
            let grow = room.min(desired - new_replicas);
            if grow > 0 {
                // Old sets shrink on a later pass, against fresh counts.
                return self.scale(deployment, new_set, new_replicas + grow).await;
            }
        }
        if old_total == 0 {
            return Ok(());
        }
        let new_replicas = self.current_replicas(new_set);
        let min_available = desired - unavailable;
        let (_, _, new_available) = status_of(new_set);
        let new_unavailable = (new_replicas - new_available).max(0);
        let mut can_remove = new_replicas + old_total - min_available - new_unavailable;
        if can_remove <= 0 {
            return Ok(());
        }
        // Unhealthy old replicas go first: removing them costs no
        // availability.
        for set in old_sets {
            let (_, _, available) = status_of(set);
            let unhealthy = (replicas(set) - available).max(0).min(can_remove);
            if unhealthy > 0 {
                self.scale(deployment, set, replicas(set) - unhealthy)
                    .await?;
                can_remove -= unhealthy;
            }
        }
        let available: i32 = status_of(new_set).2
            + old_sets
                .iter()
                .map(|s| status_of(s).2.min(self.current_replicas(s)))
                .sum::<i32>();
        let mut remove = (available - min_available).min(can_remove);
        for set in old_sets {
            if remove <= 0 {
                break;
            }
            let current = self.current_replicas(set);
            let take = current.min(remove);
            if take > 0 {
                self.scale(deployment, set, current - take).await?;
                remove -= take;
            }
        }
        Ok(())
    }

    /// A set's replicas as last written (the cache may be newer than the
    /// copy in hand).
    fn current_replicas(&self, set: &ReplicaSet) -> i32 {
        let key = object_key(
            set.metadata.namespace.as_deref(),
            set.metadata.name.as_deref(),
        );
        self.sets
            .get(&key)
            .map_or_else(|| replicas(set), |s| replicas(s))
    }

    /// Recreate: every old pod gone before the new set grows.
    async fn recreate(
        &mut self,
        deployment: &Deployment,
        new_set: &ReplicaSet,
        old_sets: &[Arc<ReplicaSet>],
        desired: i32,
    ) -> Result<(), LocalApiError> {
        for set in old_sets {
            self.scale(deployment, set, 0).await?;
        }
        let old_running: i32 = old_sets.iter().map(|s| status_of(s).0).sum();
        if old_running == 0 {
            self.scale(deployment, new_set, desired).await?;
        }
        Ok(())
    }

    /// Deletes emptied old sets beyond revisionHistoryLimit, oldest first.
    async fn clean_up(
        &mut self,
        deployment: &Deployment,
        old_sets: &[Arc<ReplicaSet>],
    ) -> Result<(), LocalApiError> {
        let limit = deployment
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        let mut empty: Vec<&Arc<ReplicaSet>> = old_sets
            .iter()
            .filter(|s| replicas(s) == 0 && status_of(s).0 == 0)
            .collect();
        empty.sort_by_key(|s| revision(s));
        let surplus = empty
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for set in empty.into_iter().take(surplus) {
            let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
            let name = set.metadata.name.as_deref().unwrap_or_default();
            let path = format!("/apis/apps/v1/namespaces/{namespace}/replicasets/{name}");
            self.api
                .send_if_exists(Method::DELETE, &path, "application/json", &Value::Null)
                .await?;
        }
        Ok(())
    }

    async fn write_status(
        &self,
        deployment: &Deployment,
        new_set: Option<&ReplicaSet>,
        sets: &[Arc<ReplicaSet>],
    ) -> Result<Option<Duration>, LocalApiError> {
        let spec = deployment.spec.clone().unwrap_or_default();
        let desired = spec.replicas.unwrap_or(1);
        let current = |s: &ReplicaSet| {
            let key = object_key(s.metadata.namespace.as_deref(), s.metadata.name.as_deref());
            self.sets
                .get(&key)
                .map_or_else(|| status_of(s), |c| status_of(c))
        };
        let (mut total, mut ready, mut available) = (0, 0, 0);
        for set in sets {
            let (r, rd, av) = current(set);
            total += r;
            ready += rd;
            available += av;
        }
        let updated = new_set.map_or(0, |s| current(s).0);
        let (_, unavailable) = surge_and_unavailable(deployment);
        let generation = deployment.metadata.generation.unwrap_or(0);
        let old = deployment.status.clone().unwrap_or_default();
        let now = Timestamp::now();
        let complete = updated == desired && total == desired && available == desired;
        let new_name = new_set
            .and_then(|s| s.metadata.name.clone())
            .unwrap_or_default();
        let previous: Vec<DeploymentCondition> = old.conditions.clone().unwrap_or_default();
        let find = |kind: &str| previous.iter().find(|c| c.type_ == kind).cloned();

        let is_available = desired == 0 || available >= desired - unavailable;
        let available_condition = condition(
            find("Available"),
            "Available",
            is_available,
            if is_available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            if is_available {
                "Deployment has minimum availability.".to_owned()
            } else {
                "Deployment does not have minimum availability.".to_owned()
            },
            now,
            false,
        );
        let counters_moved = (
            old.replicas.unwrap_or(0),
            old.updated_replicas.unwrap_or(0),
            old.ready_replicas.unwrap_or(0),
            old.available_replicas.unwrap_or(0),
        ) != (total, updated, ready, available);
        let deadline = Duration::from_secs(
            u64::try_from(spec.progress_deadline_seconds.unwrap_or(600)).unwrap_or(600),
        );
        let last_progress = find("Progressing").and_then(|c| c.last_update_time.map(|t| t.0));
        let mut recheck = None;
        let progressing = if spec.paused.unwrap_or(false) {
            condition(
                find("Progressing"),
                "Progressing",
                false,
                "DeploymentPaused",
                "Deployment is paused".to_owned(),
                now,
                false,
            )
        } else if complete {
            condition(
                find("Progressing"),
                "Progressing",
                true,
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                now,
                counters_moved,
            )
        } else {
            let stalled_for = last_progress.map(|t| now.duration_since(t).unsigned_abs());
            let already_exceeded = find("Progressing")
                .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
            if !counters_moved && (already_exceeded || stalled_for.is_some_and(|s| s >= deadline)) {
                condition(
                    find("Progressing"),
                    "Progressing",
                    false,
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    now,
                    false,
                )
            } else {
                recheck = Some(
                    deadline.saturating_sub(stalled_for.unwrap_or_default())
                        + Duration::from_millis(100),
                );
                let reason = if find("Progressing").is_none() {
                    "NewReplicaSetCreated"
                } else {
                    "ReplicaSetUpdated"
                };
                let message = if reason == "NewReplicaSetCreated" {
                    format!("Created new replica set \"{new_name}\"")
                } else {
                    format!("ReplicaSet \"{new_name}\" is progressing.")
                };
                condition(
                    find("Progressing"),
                    "Progressing",
                    true,
                    reason,
                    message,
                    now,
                    counters_moved || last_progress.is_none(),
                )
            }
        };
        let status = json!({
            "observedGeneration": generation,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": (desired - available).max(0),
            "conditions": [available_condition, progressing],
        });
        let before = serde_json::to_value(&old).unwrap_or(Value::Null);
        let changed = [
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ]
        .iter()
        .any(|f| before[*f].as_i64().unwrap_or(0) != status[*f].as_i64().unwrap_or(0))
            || conditions_differ(&before["conditions"], &status["conditions"]);
        if changed {
            let namespace = deployment.metadata.namespace.as_deref().unwrap_or_default();
            let name = deployment.metadata.name.as_deref().unwrap_or_default();
            let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status");
            let written = self
                .api
                .send_if_exists(
                    Method::PATCH,
                    &path,
                    "application/merge-patch+json",
                    &json!({ "status": status }),
                )
                .await?;
            if written.is_none() {
                return Ok(None);
            }
        }
        Ok(recheck)
    }
}

/// A condition; its transition time moves only when its status does, its
/// update time when `touched` or the status or reason changes.
fn condition(
    previous: Option<DeploymentCondition>,
    kind: &str,
    status: bool,
    reason: &str,
    message: String,
    now: Timestamp,
    touched: bool,
) -> Value {
    let status = if status { "True" } else { "False" };
    let stamp = |t: Timestamp| json!(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t));
    let same_status = previous.as_ref().is_some_and(|p| p.status == status);
    let same_reason = previous
        .as_ref()
        .is_some_and(|p| p.reason.as_deref() == Some(reason));
    let transition = previous
        .as_ref()
        .filter(|_| same_status)
        .and_then(|p| p.last_transition_time.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let update = previous
        .as_ref()
        .filter(|_| same_status && same_reason && !touched)
        .and_then(|p| p.last_update_time.as_ref().map(|t| t.0))
        .unwrap_or(now);
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": stamp(transition),
        "lastUpdateTime": stamp(update),
    })
}

fn conditions_differ(before: &Value, after: &Value) -> bool {
    let strip = |v: &Value| -> Vec<(Value, Value, Value, Value)> {
        v.as_array()
            .map(|all| {
                all.iter()
                    .map(|c| {
                        (
                            c["type"].clone(),
                            c["status"].clone(),
                            c["reason"].clone(),
                            c["lastUpdateTime"].clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    strip(before) != strip(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(strategy: Value, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "web" },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "web" } },
                "strategy": strategy,
                "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [] } },
            },
        }))
        .unwrap()
    }

    #[test]
    fn surge_rounds_up_and_unavailability_down() {
        let rolling = |surge: Value, unavailable: Value| json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": surge, "maxUnavailable": unavailable } });
        assert_eq!(
            surge_and_unavailable(&deployment(rolling(json!("25%"), json!("25%")), 3)),
            (1, 0)
        );
        assert_eq!(
            surge_and_unavailable(&deployment(rolling(json!("25%"), json!("25%")), 10)),
            (3, 2)
        );
        assert_eq!(
            surge_and_unavailable(&deployment(rolling(json!(1), json!(1)), 6)),
            (1, 1)
        );
        assert_eq!(
            surge_and_unavailable(&deployment(rolling(json!(0), json!(0)), 6)),
            (0, 1),
            "never both zero"
        );
    }
}
