//! The StatefulSet controller: pods with stable names `<set>-<ordinal>`,
//! made, replaced, scaled and rolled in the order Kubernetes keeps (the
//! rules are in `plan`), each from the set's template at a revision named
//! after the template's hash (`controller-revision-hash`). It adopts
//! matching orphans that bear the set's name, releases pods that stop
//! matching, reports SuccessfulCreate and SuccessfulDelete events, and
//! writes the status `kubectl rollout status` reads. Each template is
//! kept as a ControllerRevision (see `history`); pods below a partition
//! are made again from the current revision's.

mod identity;
mod plan;

use std::{collections::HashSet, sync::Arc, time::Duration};

use k8s_openapi::{
    api::apps::v1::{ControllerRevision, StatefulSet},
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, Preconditions},
    jiff::Timestamp,
};
use serde_json::{Value, json};

use self::plan::{Action, Member, Revision, Rules};
use super::{
    cache::{Cache, Change},
    expectations::{Expected, PodExpectations},
    history::{self, Ensured, HistoryCache},
    object_key, ownership,
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

/// The component its events come from, as Kubernetes names it.
pub const COMPONENT: &str = "statefulset-controller";

pub struct StatefulSetController {
    api: LocalApi,
    events: EventRecorder,
    sets: Cache<StatefulSet>,
    pods: PodCache,
    history: HistoryCache,
    expectations: PodExpectations,
    queue: WorkQueue,
}

/// The set's pod template as JSON, what its revision is the hash of.
fn template_of(set: &StatefulSet) -> Value {
    set.spec
        .as_ref()
        .and_then(|s| serde_json::to_value(&s.template).ok())
        .unwrap_or(Value::Null)
}

impl Controller for StatefulSetController {
    type Error = LocalApiError;

    fn queue(&mut self) -> &mut WorkQueue {
        &mut self.queue
    }

    /// One pass over one set; Some(delay) asks to look again then.
    async fn reconcile(&mut self, key: &str) -> Result<Option<Duration>, LocalApiError> {
        let Some(set) = self.sets.get(key).cloned() else {
            return Ok(None);
        };
        let Some(spec) = set.spec.as_ref() else {
            return Ok(None);
        };
        let Ok(selector) = Selector::from_label_selector(&spec.selector) else {
            return Ok(None);
        };
        let members = self.claim(&set, &selector).await?;
        let template = Arc::new(template_of(&set));
        let owner = history::Owner {
            kind: "StatefulSet",
            meta: &set.metadata,
            template: &template,
            hash_label: history::HASH_LABEL,
            collision_count: set
                .status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0),
        };
        let owned = self.history.owned(&set.metadata);
        let deleting = set.metadata.deletion_timestamp.is_some();
        let update = if deleting {
            owner.revision_name()
        } else {
            match history::ensure(&self.api, &self.history, &owner, &owned).await? {
                Ensured::Revision(kept) => kept.name,
                Ensured::Collided => {
                    self.write_collision(&set, owner.collision_count + 1)
                        .await?;
                    return Ok(None);
                }
            }
        };
        let current = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .filter(|r| {
                !r.is_empty()
                    && (*r == update || owned.iter().any(|o| o.metadata.name.as_ref() == Some(r)))
            })
            .unwrap_or_else(|| update.clone());
        let current_template = owned
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(current.as_str()))
            .and_then(|r| history::template_in(r))
            .map(Arc::new);
        let rules = Rules::of(spec);
        let now = Timestamp::now();
        let mut outcome = Ok(());
        if !deleting && self.expectations.met(key) {
            let actions = plan::plan(&rules, &members, &update, now);
            let revisions = (current.as_str(), update.as_str());
            let templates = (current_template.as_ref(), &template);
            outcome = self.apply(key, &set, actions, revisions, templates).await;
        }
        let status = plan::status(&rules, &members, &current, &update, now);
        let written = self.write_status(&set, &status, &update).await;
        outcome?;
        written?;
        if !deleting {
            let mut live: HashSet<&str> = members
                .iter()
                .map(|m| identity::revision_of(&m.pod))
                .collect();
            live.extend([status.current_revision.as_str(), update.as_str()]);
            let limit = spec.revision_history_limit.unwrap_or(10);
            history::prune(&self.api, &owned, &live, limit).await?;
        }
        Ok(status.recheck.map(|left| left + Duration::from_millis(100)))
    }
}

impl StatefulSetController {
    pub fn new(api: LocalApi, events: EventRecorder) -> Self {
        Self {
            api,
            events,
            sets: Cache::default(),
            pods: PodCache::default(),
            history: HistoryCache::default(),
            expectations: PodExpectations::default(),
            queue: WorkQueue::default(),
        }
    }

    pub(super) fn on_set(&mut self, event: InformerEvent<StatefulSet>) {
        match self.sets.apply(event) {
            Change::Listed => {
                self.queue.extend(self.sets.keys());
                let sets = &self.sets;
                self.expectations.retain_sets(|set| sets.contains(set));
            }
            Change::Applied { key, .. } => self.queue.add(key),
            Change::Deleted { key, .. } => self.expectations.retain_sets(|set| set != key),
        }
    }

    pub(super) fn on_revision(&mut self, event: InformerEvent<Arc<ControllerRevision>>) {
        for owner in self.history.on_event(event, "StatefulSet") {
            if self.sets.contains(&owner) {
                self.queue.add(owner);
            }
        }
    }

    pub(super) fn on_pod(&mut self, event: InformerEvent<Arc<Pod>>) {
        match event {
            InformerEvent::Listed(all) => {
                self.pods.reset(all);
                self.expectations.clear();
                self.queue.extend(self.sets.keys());
            }
            InformerEvent::Applied(pod) => {
                self.expectations.observe(&pod, false);
                let old = self.pods.insert(Arc::clone(&pod));
                self.enqueue_for(&pod);
                if let Some(old) = old
                    && ownership::may_change_owner(&old, &pod)
                {
                    self.enqueue_for(&old);
                }
            }
            InformerEvent::Deleted(pod) => {
                self.expectations.observe(&pod, true);
                self.pods.remove(&pod.key());
                self.enqueue_for(&pod);
            }
        }
    }

    /// Queues the set a change to `pod` concerns: its controller, or, for
    /// an orphan, the set its name belongs to.
    fn enqueue_for(&mut self, pod: &Pod) {
        let namespace = pod.metadata.namespace.as_deref();
        match pod.controller_ref() {
            Some(owner) if owner.kind == "StatefulSet" => {
                self.queue.add(object_key(namespace, Some(&owner.name)));
            }
            Some(_) => {}
            None => {
                if let Some(parent) = pod.metadata.name.as_deref().and_then(identity::parent) {
                    let key = object_key(namespace, Some(parent));
                    if self.sets.contains(&key) {
                        self.queue.add(key);
                    }
                }
            }
        }
    }

    /// The set's members: the pods it controls that still match it, and
    /// matching orphans named as its pods, adopted. Controlled pods that
    /// no longer match are released.
    async fn claim(
        &self,
        set: &StatefulSet,
        selector: &Selector,
    ) -> Result<Vec<Member>, LocalApiError> {
        let name = set.metadata.name.as_deref().unwrap_or_default();
        let uid = set.metadata.uid.as_deref().unwrap_or_default();
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let ordinal = |pod: &Pod| {
            pod.metadata
                .name
                .as_deref()
                .and_then(|n| identity::ordinal(name, n))
                .filter(|_| {
                    !selector.is_empty() && selector.matches_opt(pod.metadata.labels.as_ref())
                })
        };
        let candidates = self.pods.claimable(namespace, uid);
        let owned = ownership::claim_pods(
            &self.api,
            set,
            candidates,
            |pod| ordinal(pod).is_some(),
            |pod| pod.metadata.deletion_timestamp.is_none(),
        )
        .await?;
        Ok(owned
            .into_iter()
            .filter_map(|pod| {
                Some(Member {
                    ordinal: ordinal(&pod)?,
                    pod,
                })
            })
            .collect())
    }

    /// Makes the planned writes in order, stopping at the first failure.
    async fn apply(
        &mut self,
        key: &str,
        set: &StatefulSet,
        actions: Vec<Action<'_>>,
        (current, update): (&str, &str),
        (current_template, update_template): (Option<&Arc<Value>>, &Arc<Value>),
    ) -> Result<(), LocalApiError> {
        for action in actions {
            match action {
                Action::Create { ordinal, revision } => {
                    let (revision, template) = match current_template {
                        Some(old) if revision == Revision::Current => (current, old),
                        _ => (update, update_template),
                    };
                    self.create(key, set, template, revision, ordinal).await?;
                }
                Action::Delete(member) => self.delete(key, set, &member.pod).await?,
                Action::Relabel(member) => self.relabel(key, &member.pod, member.ordinal).await?,
            }
        }
        Ok(())
    }

    async fn create(
        &mut self,
        key: &str,
        set: &StatefulSet,
        template: &Value,
        revision: &str,
        ordinal: i32,
    ) -> Result<(), LocalApiError> {
        let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let name = identity::pod_name(set_name, ordinal);
        let verb = format!("create Pod {name} in StatefulSet {set_name}");
        let created = match identity::new_pod(set, template, revision, ordinal) {
            Ok(pod) => self.api.create(&pod).await,
            // A revision whose data is no pod template (edited by hand):
            // reported as the API's refusal of such a pod would be.
            Err(err) => Err(LocalApiError {
                code: 0,
                message: format!("the revision's pod template: {err}"),
            }),
        };
        match created {
            Ok(created) => {
                let pod = object_key(Some(namespace), Some(&name));
                self.expectations
                    .expect(key, pod, Expected::seen(&created.metadata));
                self.record(
                    set,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("{verb} successful"),
                );
                Ok(())
            }
            Err(err) => {
                let message = format!("{verb} failed error: {}", err.message);
                self.record(set, "Warning", "FailedCreate", &message);
                Err(err)
            }
        }
    }

    /// Deletes `pod`, by uid so that a pod made since under its name is
    /// never the one deleted.
    async fn delete(
        &mut self,
        key: &str,
        set: &StatefulSet,
        pod: &Pod,
    ) -> Result<(), LocalApiError> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let options = DeleteOptions {
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteOptions::default()
        };
        let verb = format!(
            "delete Pod {name} in StatefulSet {}",
            set.metadata.name.as_deref().unwrap_or_default()
        );
        match self.api.delete_returning(&pod.object_ref(), &options).await {
            Ok(Some(deleted)) => {
                // A pod on a node is only marked deleting; its agent
                // removes it.
                let expected = if deleted.metadata.deletion_timestamp.is_some() {
                    Expected::seen(&deleted.metadata)
                } else {
                    Expected::Gone(uid)
                };
                self.expectations.expect(key, pod.key(), expected);
                self.record(
                    set,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("{verb} successful"),
                );
                Ok(())
            }
            // Gone already, or made again since: what this pass saw was
            // stale, and the informer will tell.
            Ok(None) => Ok(()),
            Err(err) if err.code == 409 => Ok(()),
            Err(err) => {
                let message = format!("{verb} failed error: {}", err.message);
                self.record(set, "Warning", "FailedDelete", &message);
                Err(err)
            }
        }
    }

    async fn relabel(&mut self, key: &str, pod: &Pod, ordinal: i32) -> Result<(), LocalApiError> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = identity::label_patch(name, ordinal);
        if let Some(patched) = self
            .api
            .patch(&pod.object_ref(), None, PatchType::Merge, &patch)
            .await?
        {
            self.expectations
                .expect(key, pod.key(), Expected::seen(&patched.metadata));
        }
        Ok(())
    }

    fn record(&self, set: &StatefulSet, kind: &str, reason: &str, message: &str) {
        let about = Involved::of("apps/v1", "StatefulSet", &set.metadata);
        self.events.record(about, kind, reason, message);
    }

    /// Writes the status when it changed.
    async fn write_status(
        &self,
        set: &StatefulSet,
        status: &plan::Status,
        update: &str,
    ) -> Result<(), LocalApiError> {
        let counts = status.counts;
        let wanted = json!({
            "replicas": counts.replicas,
            "readyReplicas": counts.ready,
            "currentReplicas": counts.current,
            "updatedReplicas": counts.updated,
            "availableReplicas": counts.available,
            "currentRevision": status.current_revision,
            "updateRevision": update,
            "observedGeneration": set.metadata.generation.unwrap_or(0),
            "collisionCount": set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0),
        });
        let old = set.status.clone().unwrap_or_default();
        let written = json!({
            "replicas": old.replicas,
            "readyReplicas": old.ready_replicas.unwrap_or(0),
            "currentReplicas": old.current_replicas.unwrap_or(0),
            "updatedReplicas": old.updated_replicas.unwrap_or(0),
            "availableReplicas": old.available_replicas.unwrap_or(0),
            "currentRevision": old.current_revision.unwrap_or_default(),
            "updateRevision": old.update_revision.unwrap_or_default(),
            "observedGeneration": old.observed_generation.unwrap_or(0),
            "collisionCount": old.collision_count,
        });
        if wanted == written {
            return Ok(());
        }
        self.patch_status(set, wanted).await
    }

    /// Counts a revision name found taken, so the next differs.
    async fn write_collision(&self, set: &StatefulSet, count: i32) -> Result<(), LocalApiError> {
        self.patch_status(set, json!({ "collisionCount": count }))
            .await
    }

    async fn patch_status(&self, set: &StatefulSet, status: Value) -> Result<(), LocalApiError> {
        let at = ObjectRef::<StatefulSet>::of(&set.metadata);
        let patch = json!({ "status": status });
        self.api
            .patch(&at, Some("status"), PatchType::Merge, &patch)
            .await
            .map(drop)
    }
}
