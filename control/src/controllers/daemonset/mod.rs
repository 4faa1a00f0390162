//! The DaemonSet controller: one pod of each DaemonSet on every node it
//! belongs on ([`placement`]), bound directly (`spec.nodeName` is set at
//! creation, so the scheduler never sees it) and labelled with its
//! template's hash as `controller-revision-hash`. What a pass does is
//! decided by [`plan`] from the caches: nodes that join get their pod;
//! pods on nodes they no longer fit, or on nodes that are gone, are
//! deleted; a node keeps the oldest of several pods; a failed pod is
//! deleted and so replaced, with a per-node back-off (1 s doubling to
//! 15 min, Kubernetes' guard against an agent that keeps failing it).
//! RollingUpdate then deletes old pods while at most maxUnavailable nodes
//! lack an available new one, or, with maxSurge, starts new pods beside
//! old ones on up to maxSurge nodes and deletes each old pod once the new
//! one beside it is available; OnDelete leaves old pods until someone
//! else deletes them. Matching orphans are adopted and pods that stop matching are
//! released, as for ReplicaSets. Pods on nodes that are gone are deleted
//! at once (Kubernetes leaves them to its pod garbage collector, which
//! capstan does not have). Each template is kept as a ControllerRevision
//! (see `history`), for `kubectl rollout history` and `undo`.
//!
//! Writes made but not yet seen through the informers are *expected*, as
//! in the ReplicaSet controller, so a second pass never makes a node's pod
//! twice.

mod placement;
mod plan;
mod writes;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::{ControllerRevision, DaemonSet},
        core::v1::{Node, Pod as PodObject, PodSpec},
    },
    jiff::Timestamp,
};
use serde_json::Value;
use tokio::task::JoinSet;

use self::{
    plan::{REVISION_LABEL, View},
    writes::{Writer, new_pod},
};
use super::{
    cache::{Cache, Change},
    expectations::Expectations,
    history::{self, Ensured, HistoryCache},
    ownership,
    pod_cache::PodCache,
    pod_view::Pod,
    runtime::Controller,
    work_queue::WorkQueue,
};
use crate::{
    informer::InformerEvent,
    labels::Selector,
    local_api::{LocalApi, LocalApiError},
    scheduler::node_info::NodeSpec,
};

/// At most this many pods are created, and as many deleted, in one pass
/// (Kubernetes' burstReplicas).
const BURST: usize = 250;
const FAILED_BACKOFF_START: Duration = Duration::from_secs(1);
const FAILED_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// When a node's failed pod was last deleted, and how long the next one
/// waits after that.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    last: Instant,
    delay: Duration,
}

pub struct DaemonSetController {
    writer: Writer,
    sets: Cache<DaemonSet>,
    nodes: BTreeMap<String, NodeSpec>,
    pods: PodCache,
    history: HistoryCache,
    queue: WorkQueue,
    expectations: Expectations,
    /// Per set, per node.
    failed_backoff: HashMap<String, HashMap<String, Backoff>>,
}

impl Controller for DaemonSetController {
    type Error = LocalApiError;

    fn queue(&mut self) -> &mut WorkQueue {
        &mut self.queue
    }

    /// One pass over one DaemonSet; Some(delay) asks to look again then.
    async fn reconcile(&mut self, key: &str) -> Result<Option<Duration>, LocalApiError> {
        let Some(ds) = self.sets.get(key).cloned() else {
            self.expectations.forget(key);
            return Ok(None);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let owned = self.claim(&ds).await?;
        let spec = ds.spec.clone().unwrap_or_default();
        let template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
        let owner = history::Owner {
            kind: "DaemonSet",
            meta: &ds.metadata,
            template: &template,
            hash_label: REVISION_LABEL,
            collision_count: ds
                .status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0),
        };
        let revisions = self.history.owned(&ds.metadata);
        let hash =
            match history::ensure(self.writer.api(), &self.history, &owner, &revisions).await? {
                Ensured::Revision(kept) => kept.hash,
                Ensured::Collided => {
                    self.writer
                        .write_collision(&ds, owner.collision_count + 1)
                        .await?;
                    return Ok(None);
                }
            };
        let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
        placement::add_daemon_tolerations(&mut pod_spec);
        let view = self.view(&ds, &pod_spec, owned, hash);
        let synced = self.expectations.met(key);
        let mut backoff = None;
        let mut outcome = Ok(());
        let rolling = spec
            .update_strategy
            .as_ref()
            .filter(|s| s.type_.as_deref().is_none_or(|t| t == "RollingUpdate"))
            .map(|s| s.rolling_update.clone().unwrap_or_default());
        let desired = view.counts().0.desired;
        let surge = rolling
            .as_ref()
            .map_or(0, |r| plan::max_surge(r.max_surge.as_ref(), desired));
        if synced {
            let actions = view.manage(surge > 0);
            let (failed, wait) = self.failed_to_delete(&ds, key, &actions.failed);
            backoff = wait;
            let mut delete = actions.delete;
            delete.extend(failed);
            let body = new_pod(&ds, &pod_spec, &view.hash);
            outcome = self
                .sync(
                    key,
                    &ds,
                    &body,
                    &actions.create_on,
                    &delete,
                    &actions.stranded,
                )
                .await;
            if outcome.is_ok()
                && let Some(rolling) = &rolling
                && self.expectations.met(key)
            {
                outcome = if surge > 0 {
                    let (create_on, old) = view.to_surge(surge);
                    self.sync(key, &ds, &body, &create_on, &old, &[]).await
                } else {
                    let max = plan::max_unavailable(rolling.max_unavailable.as_ref(), desired);
                    let old = view.to_replace(max);
                    self.sync(key, &ds, &body, &[], &old, &[]).await
                };
            }
        }
        let (counts, until_available) = view.counts();
        // observedGeneration moves only after a pass that acted on the
        // spec.
        let generation = if synced {
            ds.metadata.generation
        } else {
            ds.status.as_ref().and_then(|s| s.observed_generation)
        };
        self.writer.write_status(&ds, counts, generation).await?;
        outcome?;
        let ds_name = ds.metadata.name.as_deref().unwrap_or_default();
        let live: HashSet<String> = view
            .pods
            .values()
            .flatten()
            .map(|p| format!("{ds_name}-{}", plan::hash_of(p)))
            .chain([format!("{ds_name}-{}", view.hash)])
            .collect();
        let live = live.iter().map(String::as_str).collect();
        let limit = spec.revision_history_limit.unwrap_or(10);
        history::prune(self.writer.api(), &revisions, &live, limit).await?;
        let until_available = until_available.map(|left| left + Duration::from_millis(100));
        Ok([backoff, until_available].into_iter().flatten().min())
    }
}

impl DaemonSetController {
    /// A controller writing through `api`; its events are written by a
    /// task in `tasks`.
    pub fn new(tasks: &mut JoinSet<()>, api: LocalApi) -> Self {
        Self {
            writer: Writer::new(tasks, api),
            sets: Cache::default(),
            nodes: BTreeMap::new(),
            pods: PodCache::default(),
            history: HistoryCache::default(),
            queue: WorkQueue::default(),
            expectations: Expectations::default(),
            failed_backoff: HashMap::new(),
        }
    }

    fn enqueue_all(&mut self) {
        self.queue.extend(self.sets.keys());
    }

    pub(super) fn on_set(&mut self, event: InformerEvent<DaemonSet>) {
        match self.sets.apply(event) {
            Change::Listed => self.enqueue_all(),
            Change::Applied { key, .. } => self.queue.add(key),
            Change::Deleted { key, .. } => {
                self.expectations.forget(&key);
                self.failed_backoff.remove(&key);
            }
        }
    }

    pub(super) fn on_revision(&mut self, event: InformerEvent<Arc<ControllerRevision>>) {
        for owner in self.history.on_event(event, "DaemonSet") {
            if self.sets.contains(&owner) {
                self.queue.add(owner);
            }
        }
    }

    /// Every set is looked at again when a node comes, goes, or changes
    /// in what placement reads (not on every status write).
    pub(super) fn on_node(&mut self, event: InformerEvent<Arc<Node>>) {
        let changed = match event {
            InformerEvent::Listed(all) => {
                self.nodes = all
                    .iter()
                    .map(|node| NodeSpec::from_node(node))
                    .map(|spec| (spec.name.clone(), spec))
                    .collect();
                true
            }
            InformerEvent::Applied(node) => {
                let spec = NodeSpec::from_node(&node);
                let changed = self.nodes.get(&spec.name) != Some(&spec);
                self.nodes.insert(spec.name.clone(), spec);
                changed
            }
            InformerEvent::Deleted(node) => self
                .nodes
                .remove(node.metadata.name.as_deref().unwrap_or_default())
                .is_some(),
        };
        if changed {
            self.enqueue_all();
        }
    }

    pub(super) fn on_pod(&mut self, event: InformerEvent<Arc<Pod>>) {
        let keys = ownership::on_counted_pod(
            event,
            &mut self.pods,
            &mut self.expectations,
            &self.sets,
            selects,
        );
        self.queue.extend(&keys);
    }

    /// The pods `ds` controls, adopting matching orphans and releasing
    /// owned pods that stop matching.
    async fn claim(&self, ds: &DaemonSet) -> Result<Vec<Arc<Pod>>, LocalApiError> {
        let uid = ds.metadata.uid.as_deref().unwrap_or_default();
        let namespace = ds.metadata.namespace.as_deref().unwrap_or_default();
        let candidates = self.pods.claimable(namespace, uid);
        ownership::claim_pods(
            self.writer.api(),
            ds,
            candidates,
            |pod| selects(ds, pod),
            |pod| pod.metadata.deletion_timestamp.is_none(),
        )
        .await
    }

    fn view(&self, ds: &DaemonSet, pod_spec: &PodSpec, owned: Vec<Arc<Pod>>, hash: String) -> View {
        let spec = ds.spec.as_ref();
        let verdicts = self
            .nodes
            .iter()
            .map(|(name, node)| (name.clone(), placement::verdict(pod_spec, node)))
            .collect();
        let mut pods: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for pod in owned {
            // A finished pod being deleted no longer holds its node, and
            // an adopted pod not yet bound has no node to hold.
            let finished = matches!(pod.phase(), "Succeeded" | "Failed");
            if (finished && pod.metadata.deletion_timestamp.is_some()) || !pod.is_bound() {
                continue;
            }
            let node = pod.spec.node_name.clone().unwrap_or_default();
            pods.entry(node).or_default().push(pod);
        }
        let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
        View {
            verdicts,
            pods,
            hash,
            min_ready: Duration::from_secs(u64::try_from(min_ready).unwrap_or(0)),
            now: Timestamp::now(),
        }
    }

    /// The failed pods whose node is out of back-off (deleting them starts
    /// its next, longer back-off), and when the first of the others may go.
    fn failed_to_delete<'a>(
        &mut self,
        ds: &DaemonSet,
        key: &str,
        failed: &[(&str, &'a Pod)],
    ) -> (Vec<&'a Pod>, Option<Duration>) {
        let now = Instant::now();
        let backoffs = self.failed_backoff.entry(key.to_owned()).or_default();
        let mut go = Vec::new();
        let mut wait: Option<Duration> = None;
        for (node, pod) in failed {
            let backoff = backoffs.entry((*node).to_owned()).or_insert(Backoff {
                last: now,
                delay: Duration::ZERO,
            });
            let since = now.duration_since(backoff.last);
            if since < backoff.delay {
                let left = backoff.delay - since;
                wait = Some(wait.map_or(left, |w| w.min(left)));
                continue;
            }
            backoff.delay = if backoff.delay.is_zero() || since > 2 * FAILED_BACKOFF_MAX {
                FAILED_BACKOFF_START
            } else {
                (backoff.delay * 2).min(FAILED_BACKOFF_MAX)
            };
            backoff.last = now;
            go.push((*node, *pod));
        }
        for (node, pod) in &go {
            let message = format!(
                "Found failed daemon pod {}/{} on node {node}, will try to kill it",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default(),
            );
            self.writer
                .record(ds, "Warning", "FailedDaemonPod", &message);
        }
        let go = go.into_iter().map(|(_, pod)| pod).collect();
        (go, wait)
    }

    /// Creates the pod `body` on each of `nodes` (in batches of 1, 2, 4,
    /// ... as Kubernetes' slow start does) and deletes `pods`, the
    /// `stranded` ones at once, expecting to see each write come back.
    async fn sync(
        &mut self,
        key: &str,
        ds: &DaemonSet,
        body: &PodObject,
        nodes: &[&str],
        pods: &[&Pod],
        stranded: &[&Pod],
    ) -> Result<(), LocalApiError> {
        let nodes = &nodes[..nodes.len().min(BURST)];
        let deletions: Vec<(&Pod, bool)> = pods
            .iter()
            .map(|p| (*p, false))
            .chain(stranded.iter().map(|p| (*p, true)))
            .take(BURST)
            .collect();
        let deletes = deletions
            .iter()
            .filter(|(p, _)| p.metadata.deletion_timestamp.is_none())
            .count();
        if nodes.is_empty() && deletions.is_empty() {
            return Ok(());
        }
        self.expectations.expect(key, nodes.len(), deletes);
        let created = self.writer.create_pods(ds, body, nodes).await;
        let deleted = self.writer.delete_pods(ds, &deletions).await;
        self.expectations
            .settle(key, created.unobserved, deleted.unobserved);
        created.error.or(deleted.error).map_or(Ok(()), Err)
    }
}

/// Whether `ds`'s selector picks `pod` (an empty or invalid one picks
/// nothing; validation allows neither).
fn selects(ds: &DaemonSet, pod: &Pod) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| Selector::from_label_selector(&s.selector).ok())
        .is_some_and(|s| !s.is_empty() && s.matches_opt(pod.metadata.labels.as_ref()))
}
