//! The scheduler: places pods that have no node. It reads pods and nodes
//! from in-process informers into its [`cache::Cache`], takes pods from
//! its [`queue::Queue`] one at a time, filters the nodes (a sample of them
//! on large clusters, as kube-scheduler's percentageOfNodesToScore does),
//! scores the feasible ones, assumes the pod on the best and writes the
//! binding in the background, many at once, so the store commits them in
//! batches. A pod that fits nowhere gets PodScheduled=False and a
//! FailedScheduling event, and waits for the cluster to change.

mod cache;
pub mod config;
pub(crate) mod filters;
pub(crate) mod node_info;
mod pod_info;
mod queue;
mod scores;
mod writer;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::Router;
use k8s_openapi::api::core::v1::{Node, Pod};
use rand::Rng;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};

pub use self::config::SchedulerConfig;
use self::{
    cache::{Cache, NodeChange},
    node_info::NodeSpec,
    pod_info::PodInfo,
    queue::Queue,
    scores::Candidate,
    writer::{ApiWriter, WriteError},
};
use crate::{
    informer::{self, InformerEvent},
    store::Store,
};

/// Bindings written at once; more wait, which slows taking new pods.
const BINDINGS_IN_FLIGHT: usize = 2048;
/// Below this many nodes every node is considered.
const MIN_FEASIBLE_NODES: usize = 100;
/// Pods scheduled between yields to the runtime.
const PODS_PER_YIELD: usize = 32;

/// How many feasible nodes to find before scoring, as kube-scheduler
/// decides it: all of a small cluster; else the configured percentage, or
/// adaptively 50% less 1% per 125 nodes (at least 5%), but never fewer
/// than 100.
pub fn feasible_nodes_to_find(total: usize, percentage: u32) -> usize {
    if total < MIN_FEASIBLE_NODES || percentage >= 100 {
        return total;
    }
    let percentage = if percentage == 0 {
        (50 - (total / 125) as i64).max(5) as usize
    } else {
        percentage as usize
    };
    (total * percentage / 100).max(MIN_FEASIBLE_NODES)
}

/// A binding that finished, well or not.
struct BindOutcome {
    pod: PodInfo,
    node: String,
    result: Result<(), WriteError>,
}

/// Starts the scheduler, writing as `token` through `app`. It runs until
/// the returned tasks are shut down (which must happen before the store
/// can close: they hold it).
pub fn spawn(
    store: Arc<dyn Store>,
    app: Router,
    token: &str,
    config: SchedulerConfig,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let pods = informer::spawn::<Pod>(&mut tasks, Arc::clone(&store), "/registry/pods/");
    let nodes = informer::spawn::<Node>(&mut tasks, store, "/registry/nodes/");
    let writer = ApiWriter::new(&mut tasks, app, token);
    tasks.spawn(Scheduler::new(writer, config).run(pods, nodes));
    tasks
}

struct Scheduler {
    config: SchedulerConfig,
    cache: Cache,
    queue: Queue,
    writer: ApiWriter,
    bindings: Arc<Semaphore>,
    /// Bindings and status writes under way; dropped with the scheduler.
    writes: JoinSet<()>,
    outcomes: mpsc::UnboundedSender<BindOutcome>,
    outcomes_rx: Option<mpsc::UnboundedReceiver<BindOutcome>>,
    /// Where the next search through the nodes starts, so a sampled
    /// search does not always favour the same nodes.
    next_start: usize,
    pods_listed: bool,
    nodes_listed: bool,
}

impl Scheduler {
    fn new(writer: ApiWriter, config: SchedulerConfig) -> Self {
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        Self {
            config,
            cache: Cache::default(),
            queue: Queue::default(),
            writer,
            bindings: Arc::new(Semaphore::new(BINDINGS_IN_FLIGHT)),
            writes: JoinSet::new(),
            outcomes,
            outcomes_rx: Some(outcomes_rx),
            next_start: 0,
            pods_listed: false,
            nodes_listed: false,
        }
    }

    async fn run(
        mut self,
        mut pods: mpsc::Receiver<InformerEvent<Pod>>,
        mut nodes: mpsc::Receiver<InformerEvent<Node>>,
    ) {
        let Some(mut outcomes) = self.outcomes_rx.take() else {
            return;
        };
        let mut since_yield = 0;
        loop {
            // Take in everything known before deciding anything, so each
            // decision sees the freshest cache.
            loop {
                let mut took = false;
                while let Ok(event) = nodes.try_recv() {
                    self.on_node(event);
                    took = true;
                }
                while let Ok(event) = pods.try_recv() {
                    self.on_pod(event);
                    took = true;
                }
                while let Ok(outcome) = outcomes.try_recv() {
                    self.on_outcome(outcome);
                    took = true;
                }
                if !took {
                    break;
                }
            }
            let now = Instant::now();
            self.queue.tick(now);
            if self.pods_listed
                && self.nodes_listed
                && let Some(pod) = self.queue.pop()
            {
                self.schedule(pod).await;
                since_yield += 1;
                if since_yield == PODS_PER_YIELD {
                    since_yield = 0;
                    tokio::task::yield_now().await;
                }
                continue;
            }
            let wake = self
                .queue
                .next_wakeup()
                .unwrap_or(now + Duration::from_secs(60));
            tokio::select! {
                event = nodes.recv() => match event {
                    Some(event) => self.on_node(event),
                    None => return,
                },
                event = pods.recv() => match event {
                    Some(event) => self.on_pod(event),
                    None => return,
                },
                Some(outcome) = outcomes.recv() => self.on_outcome(outcome),
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    fn on_node(&mut self, event: InformerEvent<Node>) {
        let now = Instant::now();
        match event {
            InformerEvent::Listed(nodes) => {
                self.nodes_listed = true;
                self.cache
                    .reset_nodes(nodes.iter().map(NodeSpec::from_node).collect());
                self.queue.move_all(now);
            }
            InformerEvent::Applied(node) => {
                if self.cache.set_node(NodeSpec::from_node(&node)) == NodeChange::MayFitMore {
                    self.queue.move_all(now);
                }
            }
            InformerEvent::Deleted(node) => {
                self.cache
                    .remove_node(node.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }

    fn on_pod(&mut self, event: InformerEvent<Pod>) {
        let now = Instant::now();
        match event {
            InformerEvent::Listed(pods) => {
                self.pods_listed = true;
                let infos: Vec<PodInfo> = pods.iter().map(PodInfo::from_pod).collect();
                self.cache.reset_pods(infos.iter().filter(|p| p.is_bound()));
                let listed: std::collections::HashSet<&str> =
                    infos.iter().map(|p| p.key.as_str()).collect();
                let gone: Vec<String> = self
                    .queue
                    .keys()
                    .filter(|k| !listed.contains(k.as_str()))
                    .cloned()
                    .collect();
                for key in gone {
                    self.queue.remove(&key);
                }
                for info in infos {
                    self.consider(info, now);
                }
                self.queue.move_all(now);
            }
            InformerEvent::Applied(pod) => {
                let info = PodInfo::from_pod(&pod);
                if info.is_bound() {
                    self.queue.remove(&info.key);
                    if self.cache.set_bound_pod(&info) {
                        self.queue.move_all(now);
                    }
                } else {
                    self.consider(info, now);
                }
            }
            InformerEvent::Deleted(pod) => {
                let info = PodInfo::from_pod(&pod);
                self.queue.remove(&info.key);
                if self.cache.remove_pod(&info.key) {
                    self.queue.move_all(now);
                }
            }
        }
    }

    /// Queues an unbound pod this scheduler is responsible for.
    fn consider(&mut self, info: PodInfo, now: Instant) {
        if info.is_bound() {
            return;
        }
        // A pod assumed on a node is being bound: its entry stays in
        // flight until the binding's outcome, and an older event of it
        // must not queue it again.
        if self.cache.is_placed(&info.key) {
            return;
        }
        if info.finished || self.config.profile(&info.scheduler_name).is_none() {
            self.queue.remove(&info.key);
            return;
        }
        self.queue.upsert(info, now);
    }

    fn on_outcome(&mut self, outcome: BindOutcome) {
        let key = &outcome.pod.key;
        match outcome.result {
            Ok(()) => {
                self.queue.done(key);
                let message = format!(
                    "Successfully assigned {} to {}",
                    outcome.pod.key, outcome.node
                );
                self.writer
                    .event(&outcome.pod, "Normal", "Scheduled", &message);
            }
            Err(err) => {
                self.cache.forget(key);
                if err.code == 404 {
                    self.queue.remove(key);
                } else {
                    tracing::info!(pod = %key, node = outcome.node, error = %err, "binding failed; trying again");
                    self.queue.retry_later(key, Instant::now());
                }
            }
        }
    }

    async fn schedule(&mut self, pod: PodInfo) {
        while self.writes.try_join_next().is_some() {}
        let Some(profile) = self.config.profile(&pod.scheduler_name) else {
            self.queue.remove(&pod.key);
            return;
        };
        let scoring = profile.scoring.clone();
        match self.choose_node(&pod, &scoring) {
            Ok(node) => {
                self.cache.assume(&pod, &node);
                let Ok(permit) = Arc::clone(&self.bindings).acquire_owned().await else {
                    return;
                };
                let writer = self.writer.clone();
                let outcomes = self.outcomes.clone();
                self.writes.spawn(async move {
                    let result = writer.bind(&pod, &node).await;
                    drop(permit);
                    let _ = outcomes.send(BindOutcome { pod, node, result });
                });
            }
            Err(message) => {
                tracing::debug!(pod = %pod.key, message, "unschedulable");
                self.queue.unschedulable(&pod.key, Instant::now());
                self.writer
                    .event(&pod, "Warning", "FailedScheduling", &message);
                let writer = self.writer.clone();
                self.writes.spawn(async move {
                    if let Err(err) = writer.mark_unschedulable(&pod, &message).await {
                        tracing::debug!(pod = %pod.key, error = %err, "PodScheduled not written");
                    }
                });
            }
        }
    }

    /// The best node for `pod`, or the reason none fits.
    fn choose_node(
        &mut self,
        pod: &PodInfo,
        scoring: &config::ScoringStrategy,
    ) -> Result<String, String> {
        let slots = self.cache.slots();
        let total = self.cache.node_count();
        let wanted = feasible_nodes_to_find(total, self.config.percentage_of_nodes_to_score);
        let mut candidates: Vec<Candidate<'_>> = Vec::with_capacity(wanted.min(total));
        let mut reasons: HashMap<String, usize> = HashMap::new();
        let mut visited = 0;
        for i in 0..slots {
            if candidates.len() >= wanted {
                break;
            }
            visited += 1;
            let Some((spec, info)) = self.cache.node_at((self.next_start + i) % slots) else {
                continue;
            };
            match filters::check(pod, spec, info) {
                Ok(()) => candidates.push(Candidate { spec, info }),
                Err(found) => {
                    for reason in found {
                        *reasons.entry(reason).or_default() += 1;
                    }
                }
            }
        }
        if slots > 0 {
            self.next_start = (self.next_start + visited) % slots;
        }
        match candidates.len() {
            0 => Err(filters::unschedulable_message(total, &reasons)),
            1 => Ok(candidates[0].spec.name.clone()),
            _ => {
                let totals = scores::score(pod, &candidates, &self.cache, scoring);
                Ok(candidates[pick_best(&totals, &mut rand::rng())]
                    .spec
                    .name
                    .clone())
            }
        }
    }
}

/// The index of the highest score; ties are broken at random, each tied
/// node equally likely.
fn pick_best(scores: &[i64], rng: &mut impl Rng) -> usize {
    let mut best = 0;
    let mut ties = 0;
    for (i, &score) in scores.iter().enumerate() {
        if i == 0 || score > scores[best] {
            best = i;
            ties = 1;
        } else if score == scores[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_clusters_are_sampled_as_kubernetes_samples_them() {
        assert_eq!(feasible_nodes_to_find(50, 0), 50);
        assert_eq!(feasible_nodes_to_find(200, 0), 100);
        assert_eq!(feasible_nodes_to_find(5000, 0), 500);
        assert_eq!(feasible_nodes_to_find(10_000, 0), 500);
        assert_eq!(feasible_nodes_to_find(5000, 30), 1500);
        assert_eq!(feasible_nodes_to_find(5000, 100), 5000);
    }

    #[test]
    fn ties_are_broken_at_random_and_the_best_always_wins() {
        let mut rng = rand::rng();
        assert_eq!(pick_best(&[1, 9, 3], &mut rng), 1);
        let mut seen = [0; 3];
        for _ in 0..300 {
            seen[pick_best(&[5, 5, 5], &mut rng)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
