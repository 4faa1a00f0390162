//! The pods bound to this node, watched from control: a worker per pod,
//! fed every change; after the first full list, whatever the node holds
//! for pods the API does not know is removed.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio::{sync::watch, task::JoinSet};

use super::{
    PodRuntime,
    adopt::{self, Adopted},
    worker::Worker,
};
use crate::runtime::RuntimeError;

struct Workers {
    rt: Arc<PodRuntime>,
    senders: HashMap<String, watch::Sender<Option<Arc<Pod>>>>,
    tasks: JoinSet<String>,
    /// Containers found at start, handed to their pod's worker.
    adopted: HashMap<String, Vec<Adopted>>,
}

impl Workers {
    fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let pod = Arc::new(pod);
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

/// Runs the node's pods until the watch ends (it retries on its own, so in
/// practice until the agent stops).
pub async fn run_pods(rt: Arc<PodRuntime>) -> Result<(), RuntimeError> {
    let adopted = adopt::collect(&rt).await?;
    if !adopted.is_empty() {
        tracing::info!(pods = adopted.len(), "found containers of a previous agent");
    }
    let api: Api<Pod> = Api::all(rt.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", rt.node_name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut workers = Workers {
        rt: Arc::clone(&rt),
        senders: HashMap::new(),
        tasks: JoinSet::new(),
        adopted,
    };
    let mut listing: Option<HashSet<String>> = None;
    let mut listed_once = false;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                match event {
                    Ok(watcher::Event::Init) => listing = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(pod)) => {
                        if let (Some(seen), Some(uid)) = (listing.as_mut(), &pod.metadata.uid) {
                            seen.insert(uid.clone());
                        }
                        workers.apply(pod);
                    }
                    Ok(watcher::Event::InitDone) => {
                        let seen = listing.take().unwrap_or_default();
                        let vanished: Vec<String> = workers
                            .senders
                            .keys()
                            .filter(|uid| !seen.contains(*uid))
                            .cloned()
                            .collect();
                        for uid in vanished {
                            workers.gone(&uid);
                        }
                        if !listed_once {
                            listed_once = true;
                            let orphans = std::mem::take(&mut workers.adopted);
                            adopt::remove_orphans(&rt, orphans, &seen).await;
                        }
                    }
                    Ok(watcher::Event::Apply(pod)) => workers.apply(pod),
                    Ok(watcher::Event::Delete(pod)) => {
                        if let Some(uid) = &pod.metadata.uid {
                            workers.gone(uid);
                        }
                    }
                    Err(err) => tracing::warn!(%err, "watching this node's pods"),
                }
            }
            Some(done) = workers.tasks.join_next() => {
                if let Ok(uid) = done {
                    workers.senders.remove(&uid);
                }
            }
        }
    }
}
