//! The pods a workload controller has seen, indexed by who controls them,
//! so that a pass over one workload reads its own pods and the orphans of
//! its namespace (what it may claim) instead of every pod in the cluster.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use super::pod_view::Pod;

#[derive(Debug, Default)]
pub struct PodCache {
    pods: HashMap<String, Arc<Pod>>,
    /// Pod keys by the uid of their controller.
    by_controller: HashMap<String, HashSet<String>>,
    /// Keys of pods without a controller, by namespace.
    orphans: HashMap<String, HashSet<String>>,
}

impl PodCache {
    /// Replaces every pod.
    pub fn reset(&mut self, pods: Vec<Arc<Pod>>) {
        *self = Self::default();
        for pod in pods {
            self.insert(pod);
        }
    }

    /// Stores `pod`; returns the version it replaces.
    pub fn insert(&mut self, pod: Arc<Pod>) -> Option<Arc<Pod>> {
        let key = pod.key();
        let old = self.remove(&key);
        self.index(&pod).insert(key.clone());
        self.pods.insert(key, pod);
        old
    }

    pub fn remove(&mut self, key: &str) -> Option<Arc<Pod>> {
        let pod = self.pods.remove(key)?;
        let slot = self.slot(&pod);
        let index = match &slot {
            Slot::Controlled(uid) => self.by_controller.get_mut(*uid),
            Slot::Orphan(namespace) => self.orphans.get_mut(*namespace),
        };
        if let Some(keys) = index {
            keys.remove(key);
            if keys.is_empty() {
                match slot {
                    Slot::Controlled(uid) => self.by_controller.remove(uid),
                    Slot::Orphan(namespace) => self.orphans.remove(namespace),
                };
            }
        }
        Some(pod)
    }

    /// The pods the object with `uid` controls, and the orphans of
    /// `namespace`: every pod a workload there may claim.
    pub fn claimable(&self, namespace: &str, uid: &str) -> Vec<Arc<Pod>> {
        let keys = self
            .by_controller
            .get(uid)
            .into_iter()
            .chain(self.orphans.get(namespace))
            .flatten();
        keys.filter_map(|key| self.pods.get(key))
            .filter(|p| p.metadata.namespace.as_deref().unwrap_or_default() == namespace)
            .cloned()
            .collect()
    }

    fn index(&mut self, pod: &Pod) -> &mut HashSet<String> {
        match pod.controller_ref() {
            Some(owner) => self.by_controller.entry(owner.uid.clone()).or_default(),
            None => self
                .orphans
                .entry(pod.metadata.namespace.clone().unwrap_or_default())
                .or_default(),
        }
    }

    fn slot<'a>(&self, pod: &'a Pod) -> Slot<'a> {
        match pod.controller_ref() {
            Some(owner) => Slot::Controlled(&owner.uid),
            None => Slot::Orphan(pod.metadata.namespace.as_deref().unwrap_or_default()),
        }
    }
}

enum Slot<'a> {
    Controlled(&'a str),
    Orphan(&'a str),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(namespace: &str, name: &str, controller: Option<&str>) -> Arc<Pod> {
        let owners: Vec<_> = controller
            .map(|uid| json!({ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true }))
            .into_iter()
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "namespace": namespace, "name": name, "ownerReferences": owners },
            }))
            .unwrap(),
        )
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let mut names: Vec<String> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_workload_sees_its_own_pods_and_its_namespaces_orphans() {
        let mut cache = PodCache::default();
        cache.reset(vec![
            pod("a", "mine", Some("u1")),
            pod("a", "theirs", Some("u2")),
            pod("a", "orphan", None),
            pod("b", "far-orphan", None),
        ]);
        assert_eq!(names(cache.claimable("a", "u1")), ["mine", "orphan"]);

        // Adopted: the orphan moves to its controller's index.
        let old = cache.insert(pod("a", "orphan", Some("u1")));
        assert!(old.is_some_and(|o| o.controller_ref().is_none()));
        assert_eq!(names(cache.claimable("a", "u1")), ["mine", "orphan"]);
        assert_eq!(names(cache.claimable("a", "u2")), ["theirs"]);

        // Released, then deleted.
        cache.insert(pod("a", "mine", None));
        assert_eq!(names(cache.claimable("a", "u3")), ["mine"]);
        assert!(cache.remove("a/mine").is_some());
        assert!(cache.remove("a/mine").is_none());
        assert!(cache.claimable("a", "u3").is_empty());
        assert_eq!(names(cache.claimable("b", "u1")), ["far-orphan"]);
    }
}
