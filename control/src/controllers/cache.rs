//! A controller's typed cache of one kind, kept by its informer's events:
//! the one place the Listed / Applied / Deleted upkeep is written. Each
//! event comes back as the [`Change`] it made, old object included, so a
//! controller's event handler only says which keys the change concerns.

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::{Metadata, apimachinery::pkg::apis::meta::v1::ObjectMeta};

use super::pod_view;
use crate::informer::InformerEvent;

/// An object a cache can hold: one with Kubernetes' metadata.
pub trait Object: Send + Sync + 'static {
    fn meta(&self) -> &ObjectMeta;
}

impl<K> Object for K
where
    K: Metadata<Ty = ObjectMeta> + Send + Sync + 'static,
{
    fn meta(&self) -> &ObjectMeta {
        self.metadata()
    }
}

impl Object for pod_view::Pod {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

/// The key an object is cached and queued by.
pub fn key_of(meta: &ObjectMeta) -> String {
    super::object_key(meta.namespace.as_deref(), meta.name.as_deref())
}

/// What one event did to a cache.
#[derive(Debug)]
pub enum Change<K> {
    /// A fresh list replaced everything.
    Listed,
    /// `new` is stored under `key`, in place of `old` if there was one.
    Applied {
        key: String,
        old: Option<Arc<K>>,
        new: Arc<K>,
    },
    /// The object under `key` is gone; `last` is its final state.
    Deleted { key: String, last: Arc<K> },
}

/// Every object of one kind an informer has shown, by key.
#[derive(Debug)]
pub struct Cache<K> {
    objects: HashMap<String, Arc<K>>,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Self {
            objects: HashMap::new(),
        }
    }
}

impl<K: Object> Cache<K> {
    /// Takes in one informer event (objects shared between controllers
    /// come as `Arc`s, a controller's own as values).
    pub fn apply<E: Into<Arc<K>>>(&mut self, event: InformerEvent<E>) -> Change<K> {
        match event {
            InformerEvent::Listed(all) => {
                self.objects = all
                    .into_iter()
                    .map(|object| {
                        let object = object.into();
                        (key_of(object.meta()), object)
                    })
                    .collect();
                Change::Listed
            }
            InformerEvent::Applied(object) => {
                let new = object.into();
                let key = key_of(new.meta());
                let old = self.objects.insert(key.clone(), Arc::clone(&new));
                Change::Applied { key, old, new }
            }
            InformerEvent::Deleted(object) => {
                let last = object.into();
                let key = key_of(last.meta());
                self.objects.remove(&key);
                Change::Deleted { key, last }
            }
        }
    }

    /// Stores what a write answered: fresher than the informer's copy,
    /// which will catch up.
    pub fn insert(&mut self, object: Arc<K>) {
        self.objects.insert(key_of(object.meta()), object);
    }

    pub fn get(&self, key: &str) -> Option<&Arc<K>> {
        self.objects.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.objects.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.objects.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<K>> {
        self.objects.values()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<K>)> {
        self.objects.iter()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, Service};

    use super::*;

    fn service(namespace: &str, name: &str, cluster_ip: &str) -> Service {
        let mut service = Service::default();
        service.metadata.namespace = Some(namespace.into());
        service.metadata.name = Some(name.into());
        service.spec = Some(k8s_openapi::api::core::v1::ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            ..Default::default()
        });
        service
    }

    fn ip(service: &Service) -> &str {
        service
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .unwrap_or_default()
    }

    #[test]
    fn each_event_reports_what_it_replaced() {
        let mut cache = Cache::<Service>::default();
        let listed = cache.apply(InformerEvent::Listed(vec![service("a", "web", "10.0.0.1")]));
        assert!(matches!(listed, Change::Listed));
        assert_eq!(cache.keys().collect::<Vec<_>>(), ["a/web"]);

        let Change::Applied { key, old, new } =
            cache.apply(InformerEvent::Applied(service("a", "web", "10.0.0.2")))
        else {
            panic!("an update is applied");
        };
        assert_eq!(key, "a/web");
        assert_eq!(old.as_deref().map(ip), Some("10.0.0.1"));
        assert_eq!(ip(&new), "10.0.0.2");
        assert_eq!(cache.get("a/web").map(|s| ip(s)), Some("10.0.0.2"));

        let Change::Deleted { key, last } =
            cache.apply(InformerEvent::Deleted(service("a", "web", "10.0.0.2")))
        else {
            panic!("a deletion is reported");
        };
        assert_eq!((key.as_str(), ip(&last)), ("a/web", "10.0.0.2"));
        assert!(!cache.contains("a/web"));

        cache.apply(InformerEvent::Listed(Vec::<Service>::new()));
        assert_eq!(cache.values().count(), 0, "a new list starts over");
    }

    #[test]
    fn cluster_scoped_objects_are_keyed_by_name() {
        let mut cache = Cache::<Node>::default();
        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        cache.apply(InformerEvent::Applied(Arc::new(node)));
        assert!(cache.contains("n1"));
    }
}
