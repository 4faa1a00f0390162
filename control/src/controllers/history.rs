//! Workload history: the ControllerRevisions a StatefulSet or DaemonSet
//! keeps of its pod template, as Kubernetes keeps them, so that `kubectl
//! rollout history` lists them and `kubectl rollout undo` patches one back.
//!
//! A revision's `data` is the strategic merge patch that restores its
//! template (`{"spec":{"template":{..., "$patch":"replace"}}}`). The
//! template in force always has a revision, numbered above every other:
//! a template seen before gets its old revision renumbered (an undo is a
//! new revision), a new one gets a new revision. Revisions no pod uses,
//! beyond the owner's revisionHistoryLimit, are deleted oldest first.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use k8s_openapi::{
    api::apps::v1::ControllerRevision,
    apimachinery::pkg::{
        apis::meta::v1::{DeleteOptions, ObjectMeta, OwnerReference},
        runtime::RawExtension,
    },
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    cache::{Cache, Change},
    object_key,
    pod_template::template_hash,
};
use crate::{
    informer::InformerEvent,
    local_api::{LocalApi, LocalApiError, ObjectRef, PatchType},
};

/// The label a StatefulSet's revisions carry their hash in (its pods
/// carry the revision's name in `controller-revision-hash`).
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The revisions the informer has, by `namespace/name`.
#[derive(Debug, Default)]
pub struct HistoryCache {
    revisions: Cache<ControllerRevision>,
}

/// The `namespace/name` of the owner of `kind` controlling `revision`.
fn owner_key(revision: &ControllerRevision, kind: &str) -> Option<String> {
    let owner = revision
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == kind)?;
    Some(object_key(
        revision.metadata.namespace.as_deref(),
        Some(&owner.name),
    ))
}

impl HistoryCache {
    /// Takes in an informer event; returns the owners of `kind` whose
    /// history it changed.
    pub fn on_event(
        &mut self,
        event: InformerEvent<Arc<ControllerRevision>>,
        kind: &str,
    ) -> Vec<String> {
        match self.revisions.apply(event) {
            Change::Listed => Vec::new(),
            Change::Applied { new: revision, .. } | Change::Deleted { last: revision, .. } => {
                owner_key(&revision, kind).into_iter().collect()
            }
        }
    }

    /// The revisions the object `owner` describes controls, oldest (lowest
    /// revision) first.
    pub fn owned(&self, owner: &ObjectMeta) -> Vec<Arc<ControllerRevision>> {
        let namespace = owner.namespace.as_deref().unwrap_or_default();
        let uid = owner.uid.as_deref().unwrap_or_default();
        let mut owned: Vec<Arc<ControllerRevision>> = self
            .revisions
            .values()
            .filter(|r| r.metadata.namespace.as_deref() == Some(namespace))
            .filter(|r| {
                r.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
            })
            .cloned()
            .collect();
        owned.sort_by(|a, b| (a.revision, &a.metadata.name).cmp(&(b.revision, &b.metadata.name)));
        owned
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&ControllerRevision> {
        self.revisions
            .get(&object_key(Some(namespace), Some(name)))
            .map(Arc::as_ref)
    }
}

/// The revision data that restores `template`.
pub fn data_of(template: &Value) -> Value {
    let mut template = template.clone();
    if let Some(fields) = template.as_object_mut() {
        fields.insert("$patch".to_owned(), json!("replace"));
    }
    json!({ "spec": { "template": template } })
}

/// The pod template a revision restores.
pub fn template_in(revision: &ControllerRevision) -> Option<Value> {
    let mut template = revision.data.as_ref()?.0["spec"]["template"].clone();
    template.as_object_mut()?.remove("$patch");
    Some(template)
}

/// The hash naming `template`'s revision; a collision count above 0 (a
/// name taken by other data) moves it.
pub fn hash(template: &Value, collision_count: i32) -> String {
    if collision_count == 0 {
        template_hash(template)
    } else {
        template_hash(&json!([template, collision_count]))
    }
}

/// What an owner (an apps/v1 workload) needs of its history.
#[derive(Debug)]
pub struct Owner<'a> {
    pub kind: &'static str,
    pub meta: &'a ObjectMeta,
    pub template: &'a Value,
    /// The label a revision carries its hash in.
    pub hash_label: &'static str,
    pub collision_count: i32,
}

impl Owner<'_> {
    fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or_default()
    }

    pub fn hash(&self) -> String {
        hash(self.template, self.collision_count)
    }

    /// `<owner>-<hash>`, as Kubernetes names revisions.
    pub fn revision_name(&self) -> String {
        format!("{}-{}", self.name(), self.hash())
    }
}

/// How the template in force gets its revision.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    /// The newest revision already holds it.
    Newest(&'a ControllerRevision),
    /// An older one holds it: it becomes the newest.
    Renumber(&'a ControllerRevision, i64),
    Create {
        revision: i64,
    },
    /// Its name is taken by a revision holding something else.
    Collision,
}

fn step<'a>(
    owned: &'a [Arc<ControllerRevision>],
    data: &Value,
    taken: Option<&ControllerRevision>,
) -> Step<'a> {
    let newest = owned.last().map(|r| r.revision).unwrap_or(0);
    let holds = |r: &ControllerRevision| r.data.as_ref().is_some_and(|d| d.0 == *data);
    match owned.iter().rev().find(|r| holds(r)) {
        Some(same) if same.revision == newest => Step::Newest(same),
        Some(same) => Step::Renumber(same, newest + 1),
        None if taken.is_some() => Step::Collision,
        None => Step::Create {
            revision: newest + 1,
        },
    }
}

/// The revision of the owner's template, once written.
#[derive(Debug)]
pub enum Ensured {
    Revision(Kept),
    /// The name is taken: the owner's collision count must go up.
    Collided,
}

/// A revision's name and the hash in its label (which pods of a
/// DaemonSet carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub name: String,
    pub hash: String,
}

impl Kept {
    fn of(revision: &ControllerRevision, hash_label: &str, fallback: &str) -> Self {
        let hash = revision
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(hash_label))
            .cloned()
            .unwrap_or_else(|| fallback.to_owned());
        Self {
            name: name_of(revision),
            hash,
        }
    }
}

/// Makes sure the owner's template has the newest of its revisions
/// (`owned`, oldest first) and says which.
pub async fn ensure(
    api: &LocalApi,
    cache: &HistoryCache,
    owner: &Owner<'_>,
    owned: &[Arc<ControllerRevision>],
) -> Result<Ensured, LocalApiError> {
    let data = data_of(owner.template);
    let name = owner.revision_name();
    let namespace = owner.namespace();
    let taken = cache.get(namespace, &name);
    let revision = match step(owned, &data, taken) {
        Step::Newest(newest) => {
            return Ok(Ensured::Revision(Kept::of(
                newest,
                owner.hash_label,
                &owner.hash(),
            )));
        }
        Step::Collision => return Ok(Ensured::Collided),
        Step::Renumber(older, revision) => {
            let at = ObjectRef::<ControllerRevision>::of(&older.metadata);
            let patch = json!({ "revision": revision });
            if api
                .patch(&at, None, PatchType::Merge, &patch)
                .await?
                .is_none()
            {
                // Deleted since the informer showed it: this pass's plan
                // is stale, and the next makes the revision anew.
                return Err(LocalApiError {
                    code: 404,
                    message: format!("controllerrevision {} is gone", name_of(older)),
                });
            }
            return Ok(Ensured::Revision(Kept::of(
                older,
                owner.hash_label,
                &owner.hash(),
            )));
        }
        Step::Create { revision } => revision,
    };
    let mut labels = BTreeMap::<String, String>::deserialize(&owner.template["metadata"]["labels"])
        .unwrap_or_default();
    labels.insert(owner.hash_label.to_owned(), owner.hash());
    let body = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: owner.meta.annotations.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".to_owned(),
                kind: owner.kind.to_owned(),
                name: owner.name().to_owned(),
                uid: owner.meta.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision,
    };
    api.create(&body).await?;
    Ok(Ensured::Revision(Kept {
        name,
        hash: owner.hash(),
    }))
}

/// The oldest of `owned` that nothing in `live` uses, beyond `limit` of
/// them.
fn surplus<'a>(
    owned: &'a [Arc<ControllerRevision>],
    live: &HashSet<&str>,
    limit: i32,
) -> Vec<&'a ControllerRevision> {
    let idle: Vec<&ControllerRevision> = owned
        .iter()
        .map(Arc::as_ref)
        .filter(|r| !live.contains(name_of(r).as_str()))
        .collect();
    let extra = idle
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    idle.into_iter().take(extra).collect()
}

/// Deletes the oldest revisions nothing in `live` uses, beyond `limit`.
pub async fn prune(
    api: &LocalApi,
    owned: &[Arc<ControllerRevision>],
    live: &HashSet<&str>,
    limit: i32,
) -> Result<(), LocalApiError> {
    for revision in surplus(owned, live, limit) {
        let at = ObjectRef::<ControllerRevision>::of(&revision.metadata);
        api.delete(&at, &DeleteOptions::default()).await?;
    }
    Ok(())
}

fn name_of(revision: &ControllerRevision) -> String {
    revision.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(name: &str, number: i64, template: &Value) -> Arc<ControllerRevision> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": name, "namespace": "ns" },
                "data": data_of(template),
                "revision": number,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_data_restores_the_template_and_gives_it_back() {
        let template =
            json!({ "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [] } });
        let data = data_of(&template);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            template_in(&revision("web-1", 1, &template)),
            Some(template)
        );
    }

    #[test]
    fn the_template_in_force_is_always_the_newest_revision() {
        let (a, b, c) = (
            json!({ "v": "a" }),
            json!({ "v": "b" }),
            json!({ "v": "c" }),
        );
        let owned = vec![revision("web-a", 1, &a), revision("web-b", 2, &b)];
        assert_eq!(step(&owned, &data_of(&b), None), Step::Newest(&owned[1]));
        assert_eq!(
            step(&owned, &data_of(&a), None),
            Step::Renumber(&owned[0], 3),
            "an undo renumbers the old revision"
        );
        assert_eq!(
            step(&owned, &data_of(&c), None),
            Step::Create { revision: 3 }
        );
        assert_eq!(step(&[], &data_of(&c), None), Step::Create { revision: 1 });
        let other = revision("web-c", 7, &json!({ "v": "other" }));
        assert_eq!(step(&owned, &data_of(&c), Some(&other)), Step::Collision);
        assert_eq!(hash(&c, 0), hash(&c.clone(), 0));
        assert_ne!(hash(&c, 0), hash(&b, 0), "another template, another name");
        assert_ne!(hash(&c, 0), hash(&c, 1), "a collision count moves the name");
    }

    #[test]
    fn the_oldest_unused_revisions_beyond_the_limit_go() {
        let owned: Vec<_> = (1..=5)
            .map(|n| revision(&format!("web-{n}"), n, &json!({ "v": n })))
            .collect();
        let names = |found: Vec<&ControllerRevision>| -> Vec<String> {
            found.into_iter().map(name_of).collect()
        };
        let live: HashSet<&str> = ["web-5", "web-1"].into();
        assert_eq!(names(surplus(&owned, &live, 1)), ["web-2", "web-3"]);
        assert!(surplus(&owned, &live, 10).is_empty());
        assert_eq!(
            names(surplus(&owned, &live, 0)),
            ["web-2", "web-3", "web-4"]
        );
    }
}
