//! The pods bound to this node, as the agent's cluster cache holds them:
//! a worker per pod, fed every change; after the first full list,
//! whatever the node holds for pods the API does not know is removed.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use k8s_openapi::api::core::v1::Pod;
use tokio::{sync::watch, task::JoinSet};

use super::{
    PodRuntime,
    adopt::{self, Adopted},
    worker::Worker,
};
use crate::{
    cache::{Notice, ObjectKey, Watched},
    runtime::RuntimeError,
};

struct Workers {
    rt: Arc<PodRuntime>,
    senders: HashMap<String, watch::Sender<Option<Arc<Pod>>>>,
    /// The uid of the pod each worker runs, by the pod's key: a pod made
    /// again under the same name is another pod.
    uids: HashMap<ObjectKey, String>,
    tasks: JoinSet<String>,
    /// Containers found at start, handed to their pod's worker.
    adopted: HashMap<String, Vec<Adopted>>,
}

impl Workers {
    /// The pod at `key` is now `pod` (None: gone).
    fn changed(&mut self, key: ObjectKey, pod: Option<Arc<Pod>>) {
        let uid = pod.as_ref().and_then(|p| p.metadata.uid.clone());
        if let Some(old) = self.uids.get(&key)
            && Some(old) != uid.as_ref()
        {
            let old = old.clone();
            self.gone(&old);
            self.uids.remove(&key);
        }
        if let (Some(pod), Some(uid)) = (pod, uid) {
            self.uids.insert(key, uid.clone());
            self.apply(uid, pod);
        }
    }

    fn apply(&mut self, uid: String, pod: Arc<Pod>) {
        if let Some(sender) = self.senders.get(&uid) {
            sender.send_replace(Some(pod));
            return;
        }
        let (sender, updates) = watch::channel(Some(Arc::clone(&pod)));
        self.senders.insert(uid.clone(), sender);
        let adopted = self.adopted.remove(&uid).unwrap_or_default();
        let worker = Worker::new(Arc::clone(&self.rt), pod, updates);
        self.tasks.spawn(async move {
            worker.run(adopted).await;
            uid
        });
    }

    fn gone(&mut self, uid: &str) {
        if let Some(sender) = self.senders.get(uid) {
            sender.send_replace(None);
        }
    }
}

/// Runs the node's pods as `pods` (the cache of the pods bound here)
/// changes, until the cache is dropped.
pub async fn run_pods(rt: Arc<PodRuntime>, pods: Arc<Watched<Pod>>) -> Result<(), RuntimeError> {
    let adopted = adopt::collect(&rt).await?;
    if !adopted.is_empty() {
        tracing::info!(pods = adopted.len(), "found containers of a previous agent");
    }
    let mut notices = pods.subscribe();
    let mut workers = Workers {
        rt: Arc::clone(&rt),
        senders: HashMap::new(),
        uids: HashMap::new(),
        tasks: JoinSet::new(),
        adopted,
    };
    let mut listed_once = false;
    loop {
        tokio::select! {
            notice = notices.recv() => match notice {
                None => return Ok(()),
                Some(Notice::Changed(key)) => {
                    let pod = pods.get(&key);
                    workers.changed(key, pod);
                }
                Some(Notice::Synced) if !listed_once => {
                    listed_once = true;
                    let known: HashSet<String> =
                        pods.list().iter().filter_map(|p| p.metadata.uid.clone()).collect();
                    let orphans = std::mem::take(&mut workers.adopted);
                    adopt::remove_orphans(&rt, orphans, &known).await;
                }
                Some(Notice::Synced) => {}
            },
            Some(done) = workers.tasks.join_next() => {
                if let Ok(uid) = done {
                    workers.senders.remove(&uid);
                }
            }
        }
    }
}
