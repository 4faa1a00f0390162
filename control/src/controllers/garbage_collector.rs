//! The garbage collector: follows ownerReferences across every served
//! kind. A dependent whose owners are all gone is deleted (background
//! propagation); one with some owners gone loses the dangling references.
//! An owner being deleted with the `orphan` finalizer first has its
//! dependents' references to it removed; one with `foregroundDeletion`
//! first has its dependents deleted, and goes once none that blocks it
//! (blockOwnerDeletion) is left. An owner missing from the caches is
//! looked up before anything is deleted for it, since an informer may
//! simply not have seen it yet.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use axum::http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{runtime::Controller, work_queue::WorkQueue};
use crate::{
    informer::{Informed, InformerEvent},
    local_api::{LocalApi, LocalApiError, served_path},
    registry::ResourceInfo,
};

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// Any object, as far as ownership goes: the few fields of its metadata
/// the graph needs (decoding no more keeps the collector cheap beside
/// busy writers).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectHead {
    #[serde(default)]
    metadata: Ownership,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ownership {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    owner_references: Vec<OwnerReference>,
    #[serde(default)]
    finalizers: Vec<String>,
    #[serde(default)]
    deletion_timestamp: Option<String>,
}

impl Informed for ObjectHead {
    /// The graph never needs it.
    fn set_resource_version(&mut self, _: String) {}
}

/// An object in the graph: what ownership needs of it (kept small: the
/// graph holds every object of the cluster).
#[derive(Debug, Clone)]
struct Item {
    info: &'static ResourceInfo,
    namespace: Option<String>,
    name: String,
    uid: String,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

impl Item {
    fn new(info: &'static ResourceInfo, meta: Ownership) -> Self {
        Self {
            info,
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            owners: meta.owner_references,
            finalizers: meta.finalizers,
            deleting: meta.deletion_timestamp.is_some(),
        }
    }

    fn uid(&self) -> &str {
        &self.uid
    }

    fn owners(&self) -> &[OwnerReference] {
        &self.owners
    }

    fn has_finalizer(&self, name: &str) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == name)
    }

    fn path(&self) -> String {
        served_path(self.info, self.namespace.as_deref(), &self.name)
    }
}

/// What became of an owner reference.
enum Owner {
    Present,
    Gone,
}

pub struct GarbageCollector {
    api: LocalApi,
    kinds: Vec<&'static ResourceInfo>,
    items: HashMap<String, Item>,
    /// Owner uid to its dependents' uids.
    dependents: HashMap<String, HashSet<String>>,
    queue: WorkQueue,
}

impl Controller for GarbageCollector {
    type Error = LocalApiError;

    fn queue(&mut self) -> &mut WorkQueue {
        &mut self.queue
    }

    async fn reconcile(&mut self, uid: &str) -> Result<Option<Duration>, LocalApiError> {
        self.process(uid).await.map(|()| None)
    }
}

impl GarbageCollector {
    pub fn new(api: LocalApi, kinds: Vec<&'static ResourceInfo>) -> Self {
        Self {
            api,
            kinds,
            items: HashMap::new(),
            dependents: HashMap::new(),
            queue: WorkQueue::default(),
        }
    }

    pub(super) fn on_event(
        &mut self,
        info: &'static ResourceInfo,
        event: InformerEvent<ObjectHead>,
    ) {
        match event {
            InformerEvent::Listed(all) => {
                let stale: Vec<String> = self
                    .items
                    .iter()
                    .filter(|(_, item)| std::ptr::eq(item.info, info))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in stale {
                    self.forget(&uid);
                }
                for object in all {
                    self.upsert(info, object.metadata);
                }
            }
            InformerEvent::Applied(object) => self.upsert(info, object.metadata),
            InformerEvent::Deleted(object) => {
                let uid = object.metadata.uid.clone();
                if let Some(item) = self.forget(&uid) {
                    for owner in item.owners() {
                        self.queue.add(owner.uid.clone());
                    }
                }
                for dependent in self.dependents.get(&uid).into_iter().flatten() {
                    self.queue.add(dependent.clone());
                }
            }
        }
    }

    fn upsert(&mut self, info: &'static ResourceInfo, meta: Ownership) {
        let item = Item::new(info, meta);
        let uid = item.uid().to_owned();
        self.forget(&uid);
        for owner in item.owners() {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        if !item.owners().is_empty() || item.has_finalizer(ORPHAN) || item.has_finalizer(FOREGROUND)
        {
            self.queue.add(uid.clone());
        }
        self.items.insert(uid, item);
    }

    fn forget(&mut self, uid: &str) -> Option<Item> {
        let item = self.items.remove(uid)?;
        for owner in item.owners() {
            if let Some(set) = self.dependents.get_mut(&owner.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&owner.uid);
                }
            }
        }
        Some(item)
    }

    fn dependents_of(&self, uid: &str) -> Vec<Item> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.items.get(d).cloned())
            .collect()
    }

    async fn process(&mut self, uid: &str) -> Result<(), LocalApiError> {
        let Some(item) = self.items.get(uid).cloned() else {
            return Ok(());
        };
        if item.has_finalizer(ORPHAN) {
            for dependent in self.dependents_of(uid) {
                let keep: Vec<&OwnerReference> =
                    dependent.owners().iter().filter(|o| o.uid != uid).collect();
                self.patch_owners(&dependent, &keep).await?;
            }
            return self.remove_finalizer(&item, ORPHAN).await;
        }
        if item.has_finalizer(FOREGROUND) {
            let dependents = self.dependents_of(uid);
            for dependent in dependents.iter().filter(|d| !d.deleting) {
                let policy = if self.dependents.contains_key(dependent.uid()) {
                    "Foreground"
                } else {
                    "Background"
                };
                self.delete(dependent, policy).await?;
            }
            let blocked = dependents.iter().any(|d| {
                d.owners()
                    .iter()
                    .any(|o| o.uid == uid && o.block_owner_deletion == Some(true))
            });
            if !blocked {
                self.remove_finalizer(&item, FOREGROUND).await?;
            }
            return Ok(());
        }
        if item.owners().is_empty() || item.deleting {
            return Ok(());
        }
        let mut gone = Vec::new();
        for owner in item.owners() {
            if let Owner::Gone = self.owner_state(&item, owner).await? {
                gone.push(owner.uid.clone());
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        if gone.len() == item.owners().len() {
            self.delete(&item, "Background").await
        } else {
            let keep: Vec<&OwnerReference> = item
                .owners()
                .iter()
                .filter(|o| !gone.contains(&o.uid))
                .collect();
            self.patch_owners(&item, &keep).await
        }
    }

    /// Whether `owner` of `item` still exists: from the caches, or, when
    /// they do not know it, from the API.
    async fn owner_state(
        &self,
        item: &Item,
        owner: &OwnerReference,
    ) -> Result<Owner, LocalApiError> {
        if self.items.contains_key(&owner.uid) {
            return Ok(Owner::Present);
        }
        let Some(info) = self
            .kinds
            .iter()
            .find(|k| k.kind == owner.kind && k.api_version() == owner.api_version)
        else {
            // A kind capstan does not serve: nothing can say it is gone.
            return Ok(Owner::Present);
        };
        let path = served_path(info, item.namespace.as_deref(), &owner.name);
        let found = self
            .api
            .send_if_exists(Method::GET, &path, "application/json", &Value::Null)
            .await?;
        Ok(match found {
            Some(found) if found["metadata"]["uid"] == owner.uid.as_str() => Owner::Present,
            _ => Owner::Gone,
        })
    }

    async fn delete(&self, item: &Item, policy: &str) -> Result<(), LocalApiError> {
        let options = json!({
            "apiVersion": "v1", "kind": "DeleteOptions",
            "propagationPolicy": policy,
            "preconditions": { "uid": item.uid() },
        });
        match self
            .api
            .send(Method::DELETE, &item.path(), "application/json", &options)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if matches!(err.code, 404 | 409) => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn patch_owners(
        &self,
        item: &Item,
        keep: &[&OwnerReference],
    ) -> Result<(), LocalApiError> {
        self.patch(item, json!({ "metadata": { "ownerReferences": keep } }))
            .await
    }

    async fn remove_finalizer(&self, item: &Item, finalizer: &str) -> Result<(), LocalApiError> {
        let remaining: Vec<&String> = item.finalizers.iter().filter(|f| *f != finalizer).collect();
        self.patch(item, json!({ "metadata": { "finalizers": remaining } }))
            .await
    }

    /// A merge patch of `item`; it being gone already is no failure.
    async fn patch(&self, item: &Item, patch: Value) -> Result<(), LocalApiError> {
        self.api
            .send_if_exists(
                Method::PATCH,
                &item.path(),
                "application/merge-patch+json",
                &patch,
            )
            .await
            .map(drop)
    }
}
