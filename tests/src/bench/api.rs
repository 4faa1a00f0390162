//! `cargo xtask bench api`: the real control binary (release build, its own
//! process, embedded store) driven over HTTPS by kube-rs clients.
//!
//! - creates/s: 10,000 pods created by 16 concurrent clients;
//! - LIST latency: 20 full lists of those 10,000 pods (JSON), p50/p99;
//! - watch fan-out: 100 watchers of the pods, 200 more pods created, time
//!   from each create call to each watcher's event, p99;
//! - control's resident memory with the 10,000 pods, after the lists.
//!
//! No peer runs beside it: none of Kubernetes' API servers is installable
//! here. The targets come from issue 4 (k3s's server is reported at
//! 1.4-1.6 GB).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams},
};

use super::{
    control_process::{ControlProcess, rss_mb},
    millis, percentile,
};

const PODS: usize = 10_000;
const CLIENTS: usize = 16;
const LISTS: usize = 20;
const WATCHERS: usize = 100;
const WATCHED: usize = 200;

fn pod(name: String) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(
                [
                    ("app".to_owned(), "bench".to_owned()),
                    ("tier".to_owned(), "web".to_owned()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "web".to_owned(),
                image: Some("capstan.invalid/testapp:v1".to_owned()),
                args: Some(vec![
                    "serve".to_owned(),
                    "--http-port".to_owned(),
                    "8080".to_owned(),
                ]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub async fn run() -> anyhow::Result<()> {
    let data = tempfile::tempdir_in("/var/tmp")?;
    // The API alone: with no nodes, a scheduler would mark every pod
    // unschedulable, tripling the writes.
    let control = ControlProcess::start(data.path(), &["--disable-scheduler"]).await?;
    let client = control.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (pods, next) = (pods.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= PODS {
                        return anyhow::Ok(());
                    }
                    pods.create(&PostParams::default(), &pod(format!("bench-{i:05}")))
                        .await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    let creates_per_s = PODS as f64 / started.elapsed().as_secs_f64();
    println!("created {PODS} pods with {CLIENTS} clients: {creates_per_s:.0} creates/s");

    let mut lists = Vec::with_capacity(LISTS);
    for _ in 0..LISTS {
        let started = Instant::now();
        let listed = pods.list(&ListParams::default()).await?;
        lists.push(started.elapsed());
        anyhow::ensure!(
            listed.items.len() == PODS,
            "listed {} pods",
            listed.items.len()
        );
    }
    let (list_p50, list_p99) = (
        percentile(&mut lists.clone(), 50.0),
        percentile(&mut lists, 99.0),
    );
    println!(
        "LIST of {PODS} pods: p50={:.1}ms p99={:.1}ms",
        millis(list_p50),
        millis(list_p99)
    );
    let rss = rss_mb(control.pid())?;
    println!("control RSS with {PODS} pods: {rss:.1} MiB");

    let from = pods
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .context("no resourceVersion")?;
    let mut watchers = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let stream = pods.watch(&WatchParams::default(), &from).await?;
        watchers.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut arrivals = HashMap::with_capacity(WATCHED);
            while arrivals.len() < WATCHED {
                match tokio::time::timeout(Duration::from_secs(60), stream.try_next()).await {
                    Ok(Ok(Some(WatchEvent::Added(pod)))) => {
                        arrivals.insert(pod.metadata.name.unwrap_or_default(), Instant::now());
                    }
                    Ok(Ok(Some(WatchEvent::Bookmark(_)))) => {}
                    other => bail!("watch: {other:?}"),
                }
            }
            anyhow::Ok(arrivals)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut sent = HashMap::with_capacity(WATCHED);
    for i in 0..WATCHED {
        let name = format!("watched-{i:03}");
        sent.insert(name.clone(), Instant::now());
        pods.create(&PostParams::default(), &pod(name)).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut latencies = Vec::with_capacity(WATCHERS * WATCHED);
    for watcher in watchers {
        for (name, arrived) in watcher.await?? {
            let called = sent.get(&name).context("an event nobody sent")?;
            latencies.push(arrived.saturating_duration_since(*called));
        }
    }
    let watch_p99 = percentile(&mut latencies, 99.0);
    println!(
        "watch fan-out to {WATCHERS} watchers: p50={:.1}ms p99={:.1}ms",
        millis(percentile(&mut latencies, 50.0)),
        millis(watch_p99)
    );
    println!(
        "bench api: creates_per_s={creates_per_s:.0} list10k_p99_ms={:.1} watch100_p99_ms={:.1} rss10k_mb={rss:.1}",
        millis(list_p99),
        millis(watch_p99)
    );
    Ok(())
}
