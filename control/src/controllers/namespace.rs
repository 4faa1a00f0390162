//! The namespace controller: a namespace being deleted (Terminating, its
//! `kubernetes` finalizer still there) is emptied, every namespaced kind
//! deleted by collection, and once nothing is left in it (pods wait for
//! their agents) the finalizer is removed through `finalize`, which lets
//! the API remove the namespace. While content remains, the namespace's
//! conditions say what is left, as Kubernetes' do.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::DeleteOptions};
use serde_json::{Value, json};

use super::{
    cache::{Cache, Change},
    runtime::Controller,
    work_queue::WorkQueue,
};
use crate::{
    clock::now,
    informer::InformerEvent,
    local_api::{LocalApi, LocalApiError, ObjectRef, PatchType},
    registry::ResourceInfo,
};

/// The finalizer this controller owns.
const FINALIZER: &str = "kubernetes";
/// How soon a namespace with content left is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

pub struct NamespaceController {
    api: LocalApi,
    kinds: Vec<&'static ResourceInfo>,
    namespaces: Cache<Namespace>,
    queue: WorkQueue,
}

fn is_deleting(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        && namespace
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

impl Controller for NamespaceController {
    type Error = LocalApiError;

    fn queue(&mut self) -> &mut WorkQueue {
        &mut self.queue
    }

    async fn reconcile(&mut self, name: &str) -> Result<Option<Duration>, LocalApiError> {
        let Some(namespace) = self.namespaces.get(name).cloned() else {
            return Ok(None);
        };
        if !is_deleting(&namespace) {
            return Ok(None);
        }
        let mut remaining: Vec<(&'static ResourceInfo, usize)> = Vec::new();
        let options = DeleteOptions {
            propagation_policy: Some("Background".to_owned()),
            ..DeleteOptions::default()
        };
        for &info in &self.kinds {
            self.api.delete_collection_of(info, name, &options).await?;
            let count = self.api.count_of(info, name).await?;
            if count > 0 {
                remaining.push((info, count));
            }
        }
        if !remaining.is_empty() {
            self.report_remaining(&namespace, &remaining).await?;
            return Ok(Some(RECHECK));
        }
        let mut finalized = Namespace::clone(&namespace);
        if let Some(finalizers) = finalized.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
            finalizers.retain(|f| f != FINALIZER);
        }
        self.api.replace_subresource(&finalized, "finalize").await?;
        tracing::info!(namespace = name, "namespace emptied and finalized");
        Ok(None)
    }
}

impl NamespaceController {
    /// A controller emptying namespaces of `kinds` (the namespaced ones
    /// are used).
    pub fn new(api: LocalApi, kinds: &[&'static ResourceInfo]) -> Self {
        Self {
            api,
            kinds: kinds.iter().copied().filter(|k| k.namespaced).collect(),
            namespaces: Cache::default(),
            queue: WorkQueue::default(),
        }
    }

    pub(super) fn on_namespace(&mut self, event: InformerEvent<Namespace>) {
        match self.namespaces.apply(event) {
            Change::Listed => {
                let deleting = self.namespaces.iter().filter(|(_, n)| is_deleting(n));
                self.queue.extend(deleting.map(|(name, _)| name));
            }
            Change::Applied { key, new, .. } if is_deleting(&new) => self.queue.add(key),
            Change::Applied { .. } | Change::Deleted { .. } => {}
        }
    }

    /// Sets the NamespaceContentRemaining condition to what is left.
    async fn report_remaining(
        &self,
        namespace: &Namespace,
        remaining: &[(&ResourceInfo, usize)],
    ) -> Result<(), LocalApiError> {
        let left = remaining
            .iter()
            .map(|(info, count)| {
                format!(
                    "{}.{} has {count} resource instances",
                    info.plural, info.group
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let message = format!("Some resources are remaining: {left}");
        let conditions = namespace
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref());
        let unchanged = conditions.is_some_and(|c| {
            c.iter().any(|c| {
                c.type_ == "NamespaceContentRemaining" && c.message.as_deref() == Some(&message)
            })
        });
        if unchanged {
            return Ok(());
        }
        let condition = json!({
            "type": "NamespaceContentRemaining",
            "status": "True",
            "reason": "SomeResourcesRemain",
            "message": message,
            "lastTransitionTime": now(),
        });
        let mut others: Vec<Value> = conditions
            .into_iter()
            .flatten()
            .filter(|c| c.type_ != "NamespaceContentRemaining")
            .map(|c| json!(c))
            .collect();
        others.push(condition);
        let patch = json!({ "status": { "conditions": others } });
        let at = ObjectRef::<Namespace>::of(&namespace.metadata);
        self.api
            .patch(&at, Some("status"), PatchType::Merge, &patch)
            .await
            .map(drop)
    }
}
