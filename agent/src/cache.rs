//! The agent's one view of the cluster: a watch per kind the node needs
//! (its pods, Services, EndpointSlices, Nodes), kept in a cache that the
//! agent's modules read and subscribe to instead of each watching control
//! on its own.
//!
//! Subscribers are told which object changed, not how (level-triggered, as
//! kube-rs's reflector and controllers are): they read the object's latest
//! state from the cache. A new subscriber is first told of every object
//! already held, so it never depends on when it subscribed.

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{Arc, Mutex, RwLock},
};

use futures_util::StreamExt;
use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Resource,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::{sync::mpsc, task::JoinSet};

/// An object's place: namespace (empty for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn of<K: Resource>(object: &K) -> Self {
        Self {
            namespace: object.meta().namespace.clone().unwrap_or_default(),
            name: object.meta().name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What a subscriber is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The object at this key was added, changed or removed.
    Changed(ObjectKey),
    /// The cache holds a complete list (after the first list, and after
    /// every relist the watch had to make).
    Synced,
}

/// The objects of one kind, as last seen, and who wants to hear of changes.
#[derive(Debug)]
pub struct Watched<K> {
    objects: RwLock<HashMap<ObjectKey, Arc<K>>>,
    state: Mutex<Upkeep<K>>,
}

#[derive(Debug)]
struct Upkeep<K> {
    /// A relist in progress: what it has seen so far.
    relisting: Option<HashMap<ObjectKey, Arc<K>>>,
    synced: bool,
    subscribers: Vec<mpsc::UnboundedSender<Notice>>,
}

impl<K: Resource> Default for Watched<K> {
    fn default() -> Self {
        Self {
            objects: RwLock::default(),
            state: Mutex::new(Upkeep {
                relisting: None,
                synced: false,
                subscribers: Vec::new(),
            }),
        }
    }
}

impl<K: Resource> Watched<K> {
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.read().get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    /// Notices from now on, after one for each object held (and Synced if
    /// the cache is).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Notice> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut state = self.upkeep();
        for key in self.read().keys() {
            let _ = sender.send(Notice::Changed(key.clone()));
        }
        if state.synced {
            let _ = sender.send(Notice::Synced);
        }
        state.subscribers.push(sender);
        receiver
    }

    /// Takes in one event of the kind's watch.
    pub fn apply(&self, event: watcher::Event<K>) {
        let mut state = self.upkeep();
        let mut notices = Vec::new();
        match event {
            watcher::Event::Init => state.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                let key = ObjectKey::of(&object);
                state
                    .relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(key, Arc::new(object));
            }
            watcher::Event::InitDone => {
                let listed = state.relisting.take().unwrap_or_default();
                let mut objects = self.write();
                for (key, old) in objects.iter() {
                    let same = listed.get(key).is_some_and(|new| {
                        new.meta().resource_version == old.meta().resource_version
                    });
                    if !same {
                        notices.push(Notice::Changed(key.clone()));
                    }
                }
                for key in listed.keys() {
                    if !objects.contains_key(key) {
                        notices.push(Notice::Changed(key.clone()));
                    }
                }
                *objects = listed;
                state.synced = true;
                notices.push(Notice::Synced);
            }
            watcher::Event::Apply(object) => {
                let key = ObjectKey::of(&object);
                self.write().insert(key.clone(), Arc::new(object));
                notices.push(Notice::Changed(key));
            }
            watcher::Event::Delete(object) => {
                let key = ObjectKey::of(&object);
                self.write().remove(&key);
                notices.push(Notice::Changed(key));
            }
        }
        // A subscriber that hung up is dropped.
        state
            .subscribers
            .retain(|subscriber| notices.iter().all(|n| subscriber.send(n.clone()).is_ok()));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectKey, Arc<K>>> {
        self.objects
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjectKey, Arc<K>>> {
        self.objects
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn upkeep(&self) -> std::sync::MutexGuard<'_, Upkeep<K>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps `cache` up to date from `api`'s watch until the task is aborted;
/// the watch retries on its own with back-off.
async fn keep<K>(api: Api<K>, config: watcher::Config, cache: Arc<Watched<K>>, what: &'static str)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => cache.apply(event),
            Err(err) => tracing::warn!(%err, "watching {what}"),
        }
    }
}

/// Every kind the agent watches.
#[derive(Debug, Default)]
pub struct ClusterCache {
    /// The pods bound to this node.
    pub pods: Arc<Watched<Pod>>,
    pub services: Arc<Watched<Service>>,
    pub endpoint_slices: Arc<Watched<EndpointSlice>>,
    pub nodes: Arc<Watched<Node>>,
}

impl ClusterCache {
    /// Starts the watches of node `node_name`'s view into `tasks`.
    pub fn start(client: &kube::Client, node_name: &str, tasks: &mut JoinSet<()>) -> Self {
        fn spawn<K>(
            tasks: &mut JoinSet<()>,
            client: &kube::Client,
            config: watcher::Config,
            cache: &Arc<Watched<K>>,
            what: &'static str,
        ) where
            K: Resource<DynamicType = ()>
                + Clone
                + DeserializeOwned
                + Debug
                + Send
                + Sync
                + 'static,
        {
            tasks.spawn(keep(
                Api::all(client.clone()),
                config,
                Arc::clone(cache),
                what,
            ));
        }
        let cache = Self::default();
        let on_node = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
        let all = watcher::Config::default;
        spawn(tasks, client, on_node, &cache.pods, "this node's pods");
        spawn(tasks, client, all(), &cache.services, "Services");
        spawn(
            tasks,
            client,
            all(),
            &cache.endpoint_slices,
            "EndpointSlices",
        );
        spawn(tasks, client, all(), &cache.nodes, "Nodes");
        cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, version: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "ns", "resourceVersion": version },
        }))
        .unwrap()
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    /// The notices received, in key order (Synced last).
    fn drain(notices: &mut mpsc::UnboundedReceiver<Notice>) -> Vec<Notice> {
        let mut received: Vec<Notice> = std::iter::from_fn(|| notices.try_recv().ok()).collect();
        received.sort_by_key(|n| format!("{n:?}"));
        received
    }

    #[test]
    fn a_relist_tells_only_what_changed_and_then_synced() {
        let cache = Watched::<Pod>::default();
        let mut notices = cache.subscribe();
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(pod("a", "1")));
        cache.apply(watcher::Event::InitApply(pod("b", "1")));
        assert!(cache.get(&key("a")).is_none(), "a relist shows when done");
        cache.apply(watcher::Event::InitDone);
        assert_eq!(
            drain(&mut notices),
            [
                Notice::Changed(key("a")),
                Notice::Changed(key("b")),
                Notice::Synced
            ]
        );

        cache.apply(watcher::Event::Apply(pod("a", "2")));
        cache.apply(watcher::Event::Delete(pod("b", "1")));
        assert_eq!(
            drain(&mut notices),
            [Notice::Changed(key("a")), Notice::Changed(key("b"))]
        );
        assert_eq!(cache.list().len(), 1);

        // The watch had to relist: a is unchanged, c is new, a vanished d
        // would be told as well.
        cache.apply(watcher::Event::Apply(pod("d", "3")));
        drain(&mut notices);
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(pod("a", "2")));
        cache.apply(watcher::Event::InitApply(pod("c", "4")));
        cache.apply(watcher::Event::InitDone);
        assert_eq!(
            drain(&mut notices),
            [
                Notice::Changed(key("c")),
                Notice::Changed(key("d")),
                Notice::Synced
            ]
        );
        assert!(cache.get(&key("d")).is_none());
    }

    #[test]
    fn a_late_subscriber_hears_of_everything_held() {
        let cache = Watched::<Pod>::default();
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(pod("a", "1")));
        cache.apply(watcher::Event::InitDone);
        let mut late = cache.subscribe();
        assert_eq!(
            drain(&mut late),
            [Notice::Changed(key("a")), Notice::Synced]
        );
        drop(late);
        cache.apply(watcher::Event::Apply(pod("b", "1")));
        assert!(
            cache.upkeep().subscribers.is_empty(),
            "a gone subscriber is dropped"
        );
    }
}
