//! Owner references as the workload controllers write them: the
//! controller reference a workload puts on what it makes, and adoption
//! and release of pods (the controller reference set or removed, the
//! pod's other owners kept), shared by the ReplicaSet, StatefulSet and
//! DaemonSet controllers.

use std::sync::Arc;

use k8s_openapi::{
    Metadata, Resource,
    api::core::v1::Pod as PodObject,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use serde_json::json;

use super::{
    cache::{Cache, Object},
    expectations::Expectations,
    object_key,
    pod_cache::PodCache,
    pod_view::Pod,
};
use crate::{
    informer::InformerEvent,
    local_api::{LocalApi, LocalApiError, ObjectRef, PatchType},
};

/// The reference that makes `owner` the controller of an object: it
/// blocks the owner's foreground deletion until the object is gone.
pub fn controller_reference<K>(owner: &K) -> OwnerReference
where
    K: Resource + Metadata<Ty = ObjectMeta>,
{
    let meta = owner.metadata();
    OwnerReference {
        api_version: K::API_VERSION.to_owned(),
        kind: K::KIND.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// What a workload does with a pod it may claim (one it controls, or an
/// orphan of its namespace), as Kubernetes' ControllerRefManager decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Controlled by the workload and matching it.
    Owned,
    /// An orphan that matches: take it.
    Adopt,
    /// Controlled by the workload but no longer matching: let it go.
    Release,
    /// Someone else's, or an orphan that does not match or is going.
    Ignore,
}

/// The claim a workload with `owner_uid` has on `pod`, given whether the
/// pod `matches` it and, if an orphan, is `adoptable`. A workload being
/// deleted adopts and releases nothing.
pub fn claim(owner: &ObjectMeta, pod: &Pod, matches: bool, adoptable: bool) -> Claim {
    let owner_uid = owner.uid.as_deref().unwrap_or_default();
    let settled = owner.deletion_timestamp.is_some();
    match pod.controller_ref() {
        Some(reference) if reference.uid == owner_uid => match (matches, settled) {
            (true, _) => Claim::Owned,
            (false, false) => Claim::Release,
            (false, true) => Claim::Ignore,
        },
        None if matches && adoptable && !settled => Claim::Adopt,
        _ => Claim::Ignore,
    }
}

/// Adopts and releases `candidates` as [`claim`] decides for `owner`;
/// returns the pods it then controls, in the order given.
pub async fn claim_pods<K>(
    api: &LocalApi,
    owner: &K,
    candidates: Vec<Arc<Pod>>,
    matches: impl Fn(&Pod) -> bool,
    adoptable: impl Fn(&Pod) -> bool,
) -> Result<Vec<Arc<Pod>>, LocalApiError>
where
    K: Resource + Metadata<Ty = ObjectMeta>,
{
    let mut owned = Vec::with_capacity(candidates.len());
    for pod in candidates {
        match claim(owner.metadata(), &pod, matches(&pod), adoptable(&pod)) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => {
                set_controller(api, &pod, Some(controller_reference(owner))).await?;
                owned.push(pod);
            }
            Claim::Release => set_controller(api, &pod, None).await?,
            Claim::Ignore => {}
        }
    }
    Ok(owned)
}

/// Adopts `pod` for the controller `owner` references, or releases it
/// (None). A pod that is gone meanwhile is no error.
pub async fn set_controller(
    api: &LocalApi,
    pod: &Pod,
    owner: Option<OwnerReference>,
) -> Result<(), LocalApiError> {
    let mut references: Vec<OwnerReference> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller != Some(true))
        .cloned()
        .collect();
    references.extend(owner);
    let patch = json!({ "metadata": { "ownerReferences": references } });
    let at = ObjectRef::<PodObject>::of(&pod.metadata);
    api.patch(&at, None, PatchType::Merge, &patch)
        .await
        .map(drop)
}

/// The owners of kind `K` a change to `pod` concerns: its controller, if
/// of that kind; for an orphan, each owner of its namespace that
/// `selects` it (and may adopt it).
pub fn owners_to_sync<K>(
    pod: &Pod,
    owners: &Cache<K>,
    selects: impl Fn(&K, &Pod) -> bool,
) -> Vec<String>
where
    K: Resource + Object,
{
    if let Some(owner) = pod.controller_ref() {
        return (owner.kind == K::KIND)
            .then(|| object_key(pod.metadata.namespace.as_deref(), Some(&owner.name)))
            .into_iter()
            .collect();
    }
    owners
        .iter()
        .filter(|(_, owner)| owner.meta().namespace == pod.metadata.namespace)
        .filter(|(_, owner)| selects(owner, pod))
        .map(|(key, _)| key.clone())
        .collect()
}

/// The key of the cached owner that controls `pod`, if it is a `K`.
pub fn controlling_owner<K>(pod: &Pod, owners: &Cache<K>) -> Option<String>
where
    K: Resource + Object,
{
    let owner = pod.controller_ref().filter(|o| o.kind == K::KIND)?;
    let key = object_key(pod.metadata.namespace.as_deref(), Some(&owner.name));
    let cached = owners.get(&key)?;
    (cached.meta().uid.as_deref() == Some(owner.uid.as_str())).then_some(key)
}

/// Takes a pod event into the cache and the counted expectations of a
/// controller of `K`s (ReplicaSet, DaemonSet); returns the keys of the
/// owners it concerns.
pub fn on_counted_pod<K>(
    event: InformerEvent<Arc<Pod>>,
    pods: &mut PodCache,
    expectations: &mut Expectations,
    owners: &Cache<K>,
    selects: impl Fn(&K, &Pod) -> bool + Copy,
) -> Vec<String>
where
    K: Resource + Object,
{
    match event {
        InformerEvent::Listed(all) => {
            pods.reset(all);
            expectations.clear();
            owners.keys().cloned().collect()
        }
        InformerEvent::Applied(pod) => {
            let old = pods.insert(Arc::clone(&pod));
            let owner = controlling_owner(&pod, owners);
            expectations.observe_applied(owner.as_deref(), old.as_deref(), &pod);
            let mut keys = owners_to_sync(&pod, owners, selects);
            if let Some(old) = old
                && may_change_owner(&old, &pod)
            {
                keys.extend(owners_to_sync(&old, owners, selects));
            }
            keys
        }
        InformerEvent::Deleted(pod) => {
            let old = pods.remove(&pod.key());
            let owner = controlling_owner(&pod, owners);
            expectations.observe_deleted(owner.as_deref(), old.as_deref());
            owners_to_sync(&pod, owners, selects)
        }
    }
}

/// Whether a pod changing from `old` to `new` may have moved between
/// owners: its labels or its controller changed.
pub fn may_change_owner(old: &Pod, new: &Pod) -> bool {
    old.metadata.labels != new.metadata.labels
        || old.controller_ref().map(|o| &o.uid) != new.controller_ref().map(|o| &o.uid)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use serde_json::json;

    use super::*;

    fn owner(uid: &str, deleting: bool) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            deletion_timestamp: deleting.then(crate::clock::now),
            ..ObjectMeta::default()
        }
    }

    fn pod(controller: Option<&str>) -> Pod {
        let owners: Vec<_> = controller
            .map(|uid| json!({ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true }))
            .into_iter()
            .collect();
        serde_json::from_value(json!({ "metadata": { "name": "p", "ownerReferences": owners } }))
            .unwrap()
    }

    #[test]
    fn a_workload_keeps_adopts_releases_or_leaves_alone() {
        let (live, deleting) = (owner("u-1", false), owner("u-1", true));
        let (mine, theirs, orphan) = (pod(Some("u-1")), pod(Some("u-2")), pod(None));
        let cases = [
            (&live, &mine, true, true, Claim::Owned),
            (&live, &mine, false, true, Claim::Release),
            (&deleting, &mine, false, true, Claim::Ignore),
            (&deleting, &mine, true, true, Claim::Owned),
            (&live, &theirs, true, true, Claim::Ignore),
            (&live, &orphan, true, true, Claim::Adopt),
            (&live, &orphan, true, false, Claim::Ignore),
            (&live, &orphan, false, true, Claim::Ignore),
            (&deleting, &orphan, true, true, Claim::Ignore),
        ];
        for (i, (owner, pod, matches, adoptable, want)) in cases.into_iter().enumerate() {
            assert_eq!(claim(owner, pod, matches, adoptable), want, "case {i}");
        }
    }

    #[test]
    fn a_controller_reference_names_the_owner_by_kind_and_uid() {
        let owner = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                uid: Some("u-1".into()),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        };
        let reference = controller_reference(&owner);
        assert_eq!(
            (reference.api_version.as_str(), reference.kind.as_str()),
            ("apps/v1", "ReplicaSet")
        );
        assert_eq!(
            (reference.name.as_str(), reference.uid.as_str()),
            ("web", "u-1")
        );
        assert_eq!(reference.controller, Some(true));
        assert_eq!(reference.block_owner_deletion, Some(true));
    }
}
