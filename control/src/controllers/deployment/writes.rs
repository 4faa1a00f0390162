//! The Deployment controller's writes: a plan's steps through the API,
//! each answer kept so the next pass plans on what was written, and the
//! ScalingReplicaSet events `kubectl describe deployment` shows.

use std::sync::Arc;

use k8s_openapi::{
    api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet},
    apimachinery::pkg::apis::meta::v1::DeleteOptions,
};
use serde_json::json;

use super::{
    controller_ref,
    plan::{DESIRED_REPLICAS, MAX_REPLICAS, REVISION, Step, replicas, surge_and_unavailable},
};
use crate::{
    controllers::cache::Cache,
    events::{EventRecorder, Involved},
    local_api::{LocalApi, LocalApiError, ObjectRef, PatchType},
};

/// How a plan's writes went.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    All,
    /// The set to create exists already, ours but not yet in the cache:
    /// the plan was made on stale sets and is to be made again.
    Stale,
}

pub struct Writer {
    api: LocalApi,
    events: EventRecorder,
}

impl Writer {
    pub fn new(api: LocalApi, events: EventRecorder) -> Self {
        Self { api, events }
    }

    /// Writes `steps` in order, keeping each set the API answers in
    /// `sets`.
    pub async fn apply(
        &self,
        deployment: &Deployment,
        steps: Vec<Step>,
        sets: &mut Cache<ReplicaSet>,
    ) -> Result<Written, LocalApiError> {
        for step in steps {
            match step {
                Step::Create(set) => match self.create(deployment, &set).await? {
                    Some(created) => sets.insert(created),
                    None => return Ok(Written::Stale),
                },
                Step::Renumber { set, revision } => {
                    let patch = json!({ "metadata": { "annotations": { REVISION: revision.to_string() } } });
                    self.patch(&set, &patch).await?;
                }
                Step::Scale { set, to } => {
                    if let Some(scaled) = self.scale(deployment, &set, to).await? {
                        sets.insert(scaled);
                    }
                }
                Step::Delete(set) => {
                    let at = ObjectRef::<ReplicaSet>::of(&set.metadata);
                    self.api.delete(&at, &DeleteOptions::default()).await?;
                }
            }
        }
        Ok(Written::All)
    }

    /// Creates `set`; None if a set of its name, controlled by this
    /// Deployment, exists already (then it is kept in the cache too).
    async fn create(
        &self,
        deployment: &Deployment,
        set: &ReplicaSet,
    ) -> Result<Option<Arc<ReplicaSet>>, LocalApiError> {
        let created = match self.api.create(set).await {
            Ok(created) => created,
            Err(err) if err.code == 409 => return self.existing(deployment, set, err).await,
            Err(err) => return Err(err),
        };
        let to = replicas(&created);
        if to > 0 {
            self.scaled_event(deployment, &created, 0, to);
        }
        Ok(Some(Arc::new(created)))
    }

    /// After a create found the name taken: None if the set there is this
    /// Deployment's, else the conflict (retried with back-off, logged).
    async fn existing(
        &self,
        deployment: &Deployment,
        set: &ReplicaSet,
        conflict: LocalApiError,
    ) -> Result<Option<Arc<ReplicaSet>>, LocalApiError> {
        let found = self
            .api
            .get(&ObjectRef::<ReplicaSet>::of(&set.metadata))
            .await?;
        let ours = found
            .as_ref()
            .and_then(controller_ref)
            .is_some_and(|o| Some(&o.uid) == deployment.metadata.uid.as_ref());
        if ours { Ok(None) } else { Err(conflict) }
    }

    /// Sets a set's replicas (and the annotations that go with them).
    async fn scale(
        &self,
        deployment: &Deployment,
        set: &ReplicaSet,
        to: i32,
    ) -> Result<Option<Arc<ReplicaSet>>, LocalApiError> {
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
        let scaled = self.patch(set, &patch).await?;
        self.scaled_event(deployment, set, replicas(set), to);
        Ok(scaled.map(Arc::new))
    }

    async fn patch(
        &self,
        set: &ReplicaSet,
        patch: &serde_json::Value,
    ) -> Result<Option<ReplicaSet>, LocalApiError> {
        let at = ObjectRef::<ReplicaSet>::of(&set.metadata);
        self.api.patch(&at, None, PatchType::Merge, patch).await
    }

    fn scaled_event(&self, deployment: &Deployment, set: &ReplicaSet, from: i32, to: i32) {
        let direction = if to > from { "up" } else { "down" };
        let name = set.metadata.name.as_deref().unwrap_or_default();
        self.events.record(
            Involved::of("apps/v1", "Deployment", &deployment.metadata),
            "Normal",
            "ScalingReplicaSet",
            &format!("Scaled {direction} replica set {name} from {from} to {to}"),
        );
    }

    /// Writes `status`; false if the Deployment is gone.
    pub async fn status(
        &self,
        deployment: &Deployment,
        status: &DeploymentStatus,
    ) -> Result<bool, LocalApiError> {
        let at = ObjectRef::<Deployment>::of(&deployment.metadata);
        let written = self
            .api
            .patch(
                &at,
                Some("status"),
                PatchType::Merge,
                &json!({ "status": status }),
            )
            .await?;
        Ok(written.is_some())
    }
}
