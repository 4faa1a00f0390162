//! In-process informers: the objects under one store prefix, decoded once,
//! for the scheduler and the controllers. An informer lists the prefix at
//! one revision, then watches from that revision, so it sees every change
//! exactly once. When its watch falls behind compaction, or the store
//! fails, it lists again and says so: its consumer rebuilds from the list.
//!
//! Reads go straight to the store (no HTTP, no re-encoding); writes go
//! through the API router, so defaulting and validation are the same as
//! for any client.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{Metadata, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::de::DeserializeOwned;
use tokio::{sync::mpsc, task::JoinSet};

use crate::store::{Event, KeyValue, ListOptions, Revision, Store, StoreError};

/// What an informer tells its consumer, in store order.
#[derive(Debug, Clone)]
pub enum InformerEvent<T> {
    /// Everything under the prefix at one revision; replaces all before.
    Listed(Vec<T>),
    /// An object was created or changed.
    Applied(T),
    /// An object was deleted; this was its last state.
    Deleted(T),
}

/// Items per page of the initial list.
const PAGE: usize = 1000;
/// Pause before listing again after the store failed.
const RETRY: Duration = Duration::from_secs(1);
/// Events buffered between an informer and its consumer.
const BUFFER: usize = 4096;

/// What an informer can hold: an object decoded from its stored JSON,
/// whose resourceVersion can be put back (the store keeps it as the key's
/// modification revision, not in the JSON).
pub trait Informed: DeserializeOwned + Send + 'static {
    fn set_resource_version(&mut self, version: String);
}

impl<T> Informed for T
where
    T: Metadata<Ty = ObjectMeta> + DeserializeOwned + Send + 'static,
{
    fn set_resource_version(&mut self, version: String) {
        self.metadata_mut().resource_version = Some(version);
    }
}

/// Decodes a stored object with its resourceVersion.
pub fn decode<T: Informed>(kv: &KeyValue) -> Result<T, serde_json::Error> {
    let mut object: T = serde_json::from_slice(&kv.value)?;
    object.set_resource_version(kv.mod_revision.to_string());
    Ok(object)
}

/// Starts an informer of `prefix` (e.g. "/registry/pods/") in `tasks`; it
/// runs until the receiver is dropped or `tasks` shut down.
pub fn spawn<T>(
    tasks: &mut JoinSet<()>,
    store: Arc<dyn Store>,
    prefix: impl Into<String>,
) -> mpsc::Receiver<InformerEvent<T>>
where
    T: Informed,
{
    let (events, receiver) = mpsc::channel(BUFFER);
    let prefix = prefix.into();
    tasks.spawn(async move {
        loop {
            match inform(store.as_ref(), &prefix, &events).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(prefix, error = %err, "informer lists again");
                    if !matches!(err, StoreError::Compacted { .. }) {
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
        }
    });
    receiver
}

/// One list and the watch after it. Ok when the consumer has gone.
async fn inform<T>(
    store: &dyn Store,
    prefix: &str,
    events: &mpsc::Sender<InformerEvent<T>>,
) -> Result<(), StoreError>
where
    T: Informed,
{
    let (objects, revision) = list(store, prefix).await?;
    if events.send(InformerEvent::Listed(objects)).await.is_err() {
        return Ok(());
    }
    let mut watch = store.watch(prefix, revision).await?;
    while let Some(event) = watch.next().await {
        let event = match event? {
            Event::Put { kv, .. } => decoded(&kv).map(InformerEvent::Applied),
            Event::Delete { prev, revision } => decoded(&prev).map(|mut object: T| {
                object.set_resource_version(revision.to_string());
                InformerEvent::Deleted(object)
            }),
        };
        if let Some(event) = event
            && events.send(event).await.is_err()
        {
            return Ok(());
        }
    }
    Err(StoreError::Unavailable(format!(
        "the watch of {prefix} ended"
    )))
}

async fn list<T: Informed>(
    store: &dyn Store,
    prefix: &str,
) -> Result<(Vec<T>, Revision), StoreError> {
    let mut objects = Vec::new();
    let mut options = ListOptions {
        limit: PAGE,
        ..ListOptions::default()
    };
    loop {
        let page = store.list(prefix, options.clone()).await?;
        objects.extend(page.items.iter().filter_map(decoded));
        match page.continue_token {
            Some(token) => options.continue_token = Some(token),
            None => return Ok((objects, page.revision)),
        }
    }
}

/// An object the API wrote always decodes; one that does not is skipped
/// with a warning rather than stopping every consumer.
fn decoded<T: Informed>(kv: &KeyValue) -> Option<T> {
    decode(kv)
        .inspect_err(|err| tracing::warn!(key = kv.key, error = %err, "undecodable object skipped"))
        .ok()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;
    use crate::store::embedded::{EmbeddedConfig, EmbeddedStore};

    fn config_map(name: &str, value: &str) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": name, "namespace": "default" },
                "data": { "v": value },
            }))
            .unwrap(),
        )
    }

    fn name(object: &ConfigMap) -> &str {
        object.metadata.name.as_deref().unwrap()
    }

    #[tokio::test]
    async fn lists_then_follows_every_change_with_its_resource_version() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap());
        for i in 0..(PAGE + 5) {
            let key = format!("/registry/configmaps/default/cm{i:05}");
            store
                .create(&key, config_map(&format!("cm{i:05}"), "a"))
                .await
                .unwrap();
        }
        let mut tasks = JoinSet::new();
        let mut events =
            spawn::<ConfigMap>(&mut tasks, Arc::clone(&store), "/registry/configmaps/");
        let Some(InformerEvent::Listed(listed)) = events.recv().await else {
            panic!("an informer starts with a list");
        };
        assert_eq!(listed.len(), PAGE + 5, "every page is listed");
        assert!(listed.iter().all(|o| o.metadata.resource_version.is_some()));

        let key = "/registry/configmaps/default/cm00000";
        let current = store.get(key).await.unwrap().unwrap();
        let updated = store
            .update(key, config_map("cm00000", "b"), current.mod_revision)
            .await
            .unwrap();
        let (_, deleted_at) = store.delete(key, None).await.unwrap();
        match events.recv().await {
            Some(InformerEvent::Applied(object)) => {
                assert_eq!(name(&object), "cm00000");
                assert_eq!(object.data.unwrap()["v"], "b");
                assert_eq!(
                    object.metadata.resource_version,
                    Some(updated.mod_revision.to_string())
                );
            }
            other => panic!("expected the update, got {other:?}"),
        }
        match events.recv().await {
            Some(InformerEvent::Deleted(object)) => {
                assert_eq!(name(&object), "cm00000");
                assert_eq!(
                    object.metadata.resource_version,
                    Some(deleted_at.to_string())
                );
            }
            other => panic!("expected the deletion, got {other:?}"),
        }
    }
}
