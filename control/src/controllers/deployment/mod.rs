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

mod plan;
mod status;
mod writes;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::apps::v1::{Deployment, ReplicaSet},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
    jiff::Timestamp,
};

use self::writes::{Writer, Written};
use super::{
    cache::{Cache, Change},
    object_key,
    runtime::Controller,
    work_queue::WorkQueue,
};
use crate::{
    events::EventRecorder,
    informer::InformerEvent,
    labels::Selector,
    local_api::{LocalApi, LocalApiError},
};

pub struct DeploymentController {
    writer: Writer,
    deployments: Cache<Deployment>,
    sets: Cache<ReplicaSet>,
    queue: WorkQueue,
}

fn controller_ref(set: &ReplicaSet) -> Option<&OwnerReference> {
    set.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

impl Controller for DeploymentController {
    type Error = LocalApiError;

    fn queue(&mut self) -> &mut WorkQueue {
        &mut self.queue
    }

    /// Plans the pass on the cached sets, writes it, then the status.
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
        let sets = self.owned_sets(&deployment);
        let plan = plan::plan(&deployment, &sets);
        let written = self
            .writer
            .apply(&deployment, plan.steps, &mut self.sets)
            .await?;
        if written == Written::Stale {
            return Ok(Some(Duration::ZERO));
        }
        let (status, recheck) = status::next(
            &deployment,
            plan.new_set.as_deref(),
            &sets,
            Timestamp::now(),
        );
        let before = deployment.status.clone().unwrap_or_default();
        if status::differs(&before, &status) && !self.writer.status(&deployment, &status).await? {
            return Ok(None);
        }
        Ok(recheck)
    }
}

impl DeploymentController {
    pub fn new(api: LocalApi, events: EventRecorder) -> Self {
        Self {
            writer: Writer::new(api, events),
            deployments: Cache::default(),
            sets: Cache::default(),
            queue: WorkQueue::default(),
        }
    }

    pub(super) fn on_deployment(&mut self, event: InformerEvent<Deployment>) {
        match self.deployments.apply(event) {
            Change::Listed => self.queue.extend(self.deployments.keys()),
            Change::Applied { key, .. } => self.queue.add(key),
            Change::Deleted { .. } => {}
        }
    }

    pub(super) fn on_set(&mut self, event: InformerEvent<Arc<ReplicaSet>>) {
        match self.sets.apply(event) {
            Change::Listed => self.queue.extend(self.deployments.keys()),
            Change::Applied { new: set, .. } | Change::Deleted { last: set, .. } => {
                self.enqueue_owner(&set);
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

    /// The sets `deployment` controls, oldest first.
    fn owned_sets(&self, deployment: &Deployment) -> Vec<Arc<ReplicaSet>> {
        let uid = deployment.metadata.uid.as_deref().unwrap_or_default();
        let mut sets: Vec<Arc<ReplicaSet>> = self
            .sets
            .values()
            .filter(|s| s.metadata.namespace == deployment.metadata.namespace)
            .filter(|s| controller_ref(s).is_some_and(|o| o.uid == uid))
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        sets.sort_by(|a, b| {
            let at = |s: &ReplicaSet| {
                (
                    s.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    s.metadata.name.clone(),
                )
            };
            at(a).cmp(&at(b))
        });
        sets
    }
}
