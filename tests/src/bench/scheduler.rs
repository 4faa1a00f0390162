//! `cargo xtask bench scheduler`: the scheduler inside the release control
//! binary, 5,000 simulated nodes (Node objects, Ready, 32 cpu, 128 GiB,
//! 110 pods; no agents), and backlogs of 10,000 then 50,000 pending pods.
//!
//! Each backlog is created while control runs without its scheduler;
//! control is then restarted with it, and a watch from the revision before
//! the restart sees every binding. Throughput is pods bound per second
//! from the first binding to the last, through the real store and the
//! pods/binding path (startup, the informers' initial lists included in
//! the time to the first, printed apart). Then, with the scheduler
//! running and synced (a first pod bound), 1,000 pods created at a steady
//! pace give the per-pod latency from the create call to the watch event
//! showing the pod bound.
//!
//! No peer runs beside it: kube-scheduler cannot be installed here.
//! Kubernetes' own scheduler_perf CI expects 680 to 810 pods/s at 5,000
//! nodes; issue 6's target is 5,000 pods/s on this 2-core machine.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ListParams, PostParams, WatchEvent, WatchParams},
};

use super::{
    control_process::{ControlProcess, rss_mb},
    in_parallel, millis, percentile,
    simulated_nodes::{self, NO_AGENTS},
};

const NODES: usize = 5_000;
const BACKLOGS: [usize; 2] = [10_000, 50_000];
const LATENCY_PODS: usize = 1_000;
const CLIENTS: usize = 16;
const NO_AGENTS_NO_SCHEDULER: [&str; 3] = [NO_AGENTS[0], NO_AGENTS[1], "--disable-scheduler"];

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "bench": "scheduler" } },
        "spec": { "containers": [{
            "name": "c", "image": "capstan.invalid/testapp:v1",
            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" } },
        }] },
    }))?)
}

async fn create_pods(client: &Client, prefix: &str, count: usize) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let prefix = prefix.to_owned();
    in_parallel(CLIENTS, count, move |i| {
        let (pods, prefix) = (pods.clone(), prefix.clone());
        async move {
            pods.create(&PostParams::default(), &pod(&format!("{prefix}-{i:05}"))?)
                .await?;
            Ok(())
        }
    })
    .await
}

async fn revision(client: &Client) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("no resourceVersion")
}

/// A watch of the pods from `from` that records when each named pod is
/// first seen bound, until `count` are.
async fn bound_times(
    client: &Client,
    from: &str,
    count: usize,
) -> anyhow::Result<HashMap<String, Instant>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut events = pods
        .watch(&WatchParams::default().timeout(290), from)
        .await?
        .boxed();
    let mut bound = HashMap::with_capacity(count);
    while bound.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(120), events.try_next())
            .await
            .context("no binding for 120 s")??
            .context("the watch ended")?;
        if let WatchEvent::Modified(pod) = event
            && pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some()
            && let Some(name) = pod.metadata.name
        {
            bound.entry(name).or_insert_with(Instant::now);
        }
    }
    Ok(bound)
}

/// Creates a backlog of `count` pods without a scheduler, restarts control
/// with it, and returns (pods/s from first to last binding, seconds from
/// the start to the first binding).
async fn backlog(
    data: &std::path::Path,
    control: ControlProcess,
    round: usize,
    count: usize,
) -> anyhow::Result<(f64, f64)> {
    create_pods(&control.client, &format!("backlog{round}"), count).await?;
    let from = revision(&control.client).await?;
    control.stop()?;
    let control = ControlProcess::start(data, &NO_AGENTS).await?;
    let bound = bound_times(&control.client, &from, count).await?;
    let first = bound.values().min().copied().context("nothing bound")?;
    let last = bound.values().max().copied().context("nothing bound")?;
    let rate = (count - 1) as f64 / last.duration_since(first).as_secs_f64().max(1e-6);
    let startup = first.duration_since(control.spawned_at).as_secs_f64();
    println!(
        "backlog of {count}: {rate:.0} pods/s from the first binding to the last; first binding {startup:.2} s after control started"
    );
    control.stop()?;
    Ok((rate, startup))
}

/// Pods created one after another by 4 clients while the scheduler runs:
/// create call to bound, per pod.
async fn latency(control: &ControlProcess) -> anyhow::Result<Vec<Duration>> {
    // Wait until the scheduler has its informers' lists in: one pod bound.
    let from = revision(&control.client).await?;
    create_pods(&control.client, "warm-up", 1).await?;
    bound_times(&control.client, &from, 1).await?;
    let from = revision(&control.client).await?;
    let watcher = {
        let client = control.client.clone();
        let from = from.clone();
        tokio::spawn(async move { bound_times(&client, &from, LATENCY_PODS).await })
    };
    let pods: Api<Pod> = Api::namespaced(control.client.clone(), "default");
    let sent = Arc::new(std::sync::Mutex::new(HashMap::with_capacity(LATENCY_PODS)));
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (pods, sent, next) = (pods.clone(), Arc::clone(&sent), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= LATENCY_PODS {
                        return anyhow::Ok(());
                    }
                    let name = format!("latency-{i:05}");
                    let at = Instant::now();
                    pods.create(&PostParams::default(), &pod(&name)?).await?;
                    sent.lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .insert(name, at);
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await??;
    }
    let bound = watcher.await??;
    let sent = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut latencies = Vec::with_capacity(LATENCY_PODS);
    for (name, at) in bound {
        let Some(created) = sent.get(&name) else {
            bail!("a binding for a pod nobody created: {name}");
        };
        latencies.push(at.saturating_duration_since(*created));
    }
    Ok(latencies)
}

pub async fn run() -> anyhow::Result<()> {
    let data = tempfile::tempdir_in("/var/tmp")?;
    let control = ControlProcess::start(data.path(), &NO_AGENTS_NO_SCHEDULER).await?;
    let started = Instant::now();
    simulated_nodes::create(&control.client, NODES, CLIENTS).await?;
    println!(
        "{NODES} nodes created and Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut control = control;
    let mut rates = Vec::new();
    for (round, count) in BACKLOGS.into_iter().enumerate() {
        let (rate, _) = backlog(data.path(), control, round, count).await?;
        rates.push(rate);
        control = ControlProcess::start(data.path(), &NO_AGENTS_NO_SCHEDULER).await?;
    }
    control.stop()?;

    let control = ControlProcess::start(data.path(), &NO_AGENTS).await?;
    let mut latencies = latency(&control).await?;
    let total: usize = BACKLOGS.iter().sum::<usize>() + LATENCY_PODS + 1;
    let rss = rss_mb(control.pid())?;
    let (p50, p99) = (
        millis(percentile(&mut latencies, 50.0)),
        millis(percentile(&mut latencies, 99.0)),
    );
    println!(
        "{LATENCY_PODS} pods created at a steady pace: create to bound p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    println!("control RSS with {NODES} nodes and {total} pods: {rss:.1} MiB");
    let nodes_used = {
        let pods: Api<Pod> = Api::namespaced(control.client.clone(), "default");
        let listed = pods
            .list(&ListParams::default().labels("bench=scheduler"))
            .await?;
        let unbound = listed
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
            .count();
        anyhow::ensure!(unbound == 0, "{unbound} pods left unbound");
        listed
            .items
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect::<HashSet<_>>()
            .len()
    };
    println!("pods spread over {nodes_used} of {NODES} nodes");
    control.stop()?;
    println!(
        "bench scheduler: pods_per_s_10k={:.0} pods_per_s_50k={:.0} p99_ms={p99:.1} rss_mb={rss:.1}",
        rates[0], rates[1]
    );
    Ok(())
}
