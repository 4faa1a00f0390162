//! `cargo xtask bench controllers`: the release control binary with its
//! scheduler and controllers, 1,000 simulated nodes (Ready, 110 pods each,
//! no agents) and 1,000 Deployments of 10 replicas created at once by 16
//! clients.
//!
//! Two watches opened from the revision before the first create see the
//! work done: the Deployment controller makes a ReplicaSet per Deployment,
//! the ReplicaSet controller its 10 pods, the scheduler binds them. The
//! headline is the time from the first create until all 10,000 pods exist
//! and are bound (`spec.nodeName` set); the time until every Deployment
//! reports `status.replicas` 10 is printed beside it. Control's CPU time
//! (user and system, all threads, the API server serving this benchmark's
//! own requests and watches included) is sampled before the first create
//! and when the last pod is seen bound; its resident memory at the end.
//!
//! No peer runs beside it: kube-controller-manager cannot be installed
//! here.

use std::{
    collections::HashSet,
    fmt::Debug,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Pod,
};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, PostParams, WatchEvent, WatchParams},
};
use tokio::sync::oneshot;

use super::{
    control_process::{ControlProcess, cpu_seconds, rss_mb},
    in_parallel, simulated_nodes,
};

const NODES: usize = 1_000;
const DEPLOYMENTS: usize = 1_000;
const REPLICAS: usize = 10;
const PODS: usize = DEPLOYMENTS * REPLICAS;
const CLIENTS: usize = 16;
const LABEL: &str = "bench";
const LABEL_VALUE: &str = "controllers";
/// A watch that sees nothing new for this long means the work stalled.
const STALL: Duration = Duration::from_secs(120);

fn deployment(name: &str) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": REPLICAS,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name, LABEL: LABEL_VALUE } },
                "spec": { "containers": [{
                    "name": "c", "image": "capstan.invalid/testapp:v1",
                    "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } },
                }] },
            },
        },
    }))?)
}

fn ours(pod: &Pod) -> bool {
    pod.labels().get(LABEL).map(String::as_str) == Some(LABEL_VALUE)
}

fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
}

/// Follows `api`'s watch from revision `from`, handing every added or
/// modified object to `seen` until it returns true; the watch is reopened
/// from the last revision seen when the server ends it. `opened` is told
/// once the first watch answers, so the caller can start its work.
async fn follow<K>(
    api: Api<K>,
    mut from: String,
    opened: oneshot::Sender<()>,
    mut seen: impl FnMut(K) -> anyhow::Result<bool>,
) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut opened = Some(opened);
    loop {
        let mut events = api
            .watch(&WatchParams::default().timeout(290), &from)
            .await?
            .boxed();
        if let Some(opened) = opened.take() {
            let _ = opened.send(());
        }
        loop {
            let Some(event) = tokio::time::timeout(STALL, events.try_next())
                .await
                .with_context(|| format!("nothing new for {} s", STALL.as_secs()))??
            else {
                break;
            };
            let object = match event {
                WatchEvent::Added(object) | WatchEvent::Modified(object) => object,
                WatchEvent::Deleted(_) => continue,
                WatchEvent::Bookmark(bookmark) => {
                    from = bookmark.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(error) => bail!("watch failed: {error}"),
            };
            if let Some(revision) = object.resource_version() {
                from = revision;
            }
            if seen(object)? {
                return Ok(());
            }
        }
    }
}

/// When the pods were all created, when all bound, and control's CPU time
/// at that last moment.
struct PodsDone {
    created: Instant,
    bound: Instant,
    cpu_s: f64,
}

fn watch_pods(
    client: &Client,
    from: &str,
    control_pid: u32,
) -> (
    oneshot::Receiver<()>,
    tokio::task::JoinHandle<anyhow::Result<PodsDone>>,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (opened, opened_rx) = oneshot::channel();
    let from = from.to_owned();
    let task = tokio::spawn(async move {
        let (mut created, mut bound) = (HashSet::new(), HashSet::new());
        let (mut all_created, mut all_bound) = (None, None);
        follow(pods, from, opened, |pod| {
            if !ours(&pod) {
                return Ok(false);
            }
            let name = pod.name_any();
            if is_bound(&pod) {
                bound.insert(name.clone());
            }
            created.insert(name);
            if all_created.is_none() && created.len() >= PODS {
                all_created = Some(Instant::now());
            }
            if bound.len() >= PODS {
                all_bound = Some((Instant::now(), cpu_seconds(control_pid)?));
                return Ok(true);
            }
            Ok(false)
        })
        .await
        .with_context(|| {
            format!(
                "{} pods seen created and {} bound of {PODS}",
                created.len(),
                bound.len()
            )
        })?;
        let created = all_created.context("the pods were bound before all were seen")?;
        let (bound, cpu_s) = all_bound.context("the watch ended early")?;
        Ok(PodsDone {
            created,
            bound,
            cpu_s,
        })
    });
    (opened_rx, task)
}

/// When every Deployment first reported `status.replicas` 10.
fn watch_deployments(
    client: &Client,
    from: &str,
) -> (
    oneshot::Receiver<()>,
    tokio::task::JoinHandle<anyhow::Result<Instant>>,
) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let (opened, opened_rx) = oneshot::channel();
    let from = from.to_owned();
    let task = tokio::spawn(async move {
        let mut full = HashSet::new();
        follow(deployments, from, opened, |deployment| {
            let replicas = deployment.status.as_ref().and_then(|s| s.replicas);
            if replicas == Some(REPLICAS as i32) {
                full.insert(deployment.name_any());
            }
            Ok(full.len() >= DEPLOYMENTS)
        })
        .await
        .with_context(|| {
            format!(
                "{} of {DEPLOYMENTS} Deployments seen with {REPLICAS} replicas",
                full.len()
            )
        })?;
        Ok(Instant::now())
    });
    (opened_rx, task)
}

async fn revision(client: &Client) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("no resourceVersion")
}

/// One pod bound: the scheduler has listed the nodes and watches.
async fn warm_up(client: &Client) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "warm-up" },
        "spec": { "containers": [{ "name": "c", "image": "capstan.invalid/testapp:v1" }] },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_bound(&pods.get("warm-up").await?) {
        anyhow::ensure!(Instant::now() < deadline, "the warm-up pod was not bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The end state, read back: exactly one ReplicaSet per Deployment and
/// `REPLICAS` pods each, every one bound.
async fn check(client: &Client) -> anyhow::Result<usize> {
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let sets = sets.list(&ListParams::default()).await?.items.len();
    anyhow::ensure!(
        sets == DEPLOYMENTS,
        "{sets} ReplicaSets for {DEPLOYMENTS} Deployments"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pods = pods
        .list(&ListParams::default().labels(&format!("{LABEL}={LABEL_VALUE}")))
        .await?
        .items;
    anyhow::ensure!(pods.len() == PODS, "{} pods, {PODS} expected", pods.len());
    let unbound = pods.iter().filter(|p| !is_bound(p)).count();
    anyhow::ensure!(unbound == 0, "{unbound} pods left unbound");
    Ok(pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect::<HashSet<_>>()
        .len())
}

pub async fn run() -> anyhow::Result<()> {
    let data = tempfile::tempdir_in("/var/tmp")?;
    let control = ControlProcess::start(data.path(), &simulated_nodes::NO_AGENTS).await?;
    let client = control.client.clone();
    let started = Instant::now();
    simulated_nodes::create(&client, NODES, CLIENTS).await?;
    warm_up(&client).await?;
    println!(
        "{NODES} nodes created and Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let from = revision(&client).await?;
    let (pods_opened, pods_done) = watch_pods(&client, &from, control.pid());
    let (deployments_opened, deployments_done) = watch_deployments(&client, &from);
    pods_opened.await?;
    deployments_opened.await?;

    let cpu_before = cpu_seconds(control.pid())?;
    let first_create = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    in_parallel(CLIENTS, DEPLOYMENTS, move |i| {
        let deployments = deployments.clone();
        async move {
            deployments
                .create(&PostParams::default(), &deployment(&format!("web-{i:04}"))?)
                .await?;
            Ok(())
        }
    })
    .await?;
    let creates_s = first_create.elapsed().as_secs_f64();
    println!(
        "{DEPLOYMENTS} Deployments of {REPLICAS} replicas created by {CLIENTS} clients in {creates_s:.1} s"
    );

    let pods = pods_done.await??;
    let deployments_full = deployments_done.await??;
    let cpu_after_status = cpu_seconds(control.pid())?;
    let rss = rss_mb(control.pid())?;
    let nodes_used = check(&client).await?;
    control.stop()?;

    let since_first = |at: Instant| at.duration_since(first_create).as_secs_f64();
    let seconds = since_first(pods.bound);
    let cpu_s = pods.cpu_s - cpu_before;
    println!(
        "all {PODS} pods created {:.1} s after the first create, all bound {seconds:.1} s after it ({:.0} pods/s), over {nodes_used} nodes",
        since_first(pods.created),
        PODS as f64 / seconds
    );
    println!(
        "every Deployment reported {REPLICAS} replicas {:.1} s after the first create",
        since_first(deployments_full)
    );
    println!(
        "control CPU time: {cpu_s:.1} s until every pod was bound ({:.0}% of one core), {:.1} s until every Deployment reported",
        100.0 * cpu_s / seconds,
        cpu_after_status - cpu_before
    );
    println!("control RSS at the end: {rss:.1} MiB");
    println!("bench controllers: seconds={seconds:.1} cpu_s={cpu_s:.1} rss_mb={rss:.1}");
    Ok(())
}
