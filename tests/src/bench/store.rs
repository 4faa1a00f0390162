//! `cargo xtask bench store`: the embedded store beside etcd 3.4 on the
//! same machine. Durable write throughput with 1 and 16 concurrent writers
//! (compare-and-swap updates, as the API server writes), and how long a
//! write takes to reach each of 1,000 watchers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use capstan_control::store::{
    Event, Revision, Store,
    embedded::{EmbeddedConfig, EmbeddedStore},
};

use super::{median, millis, percentile};
use crate::etcd::EtcdCluster;

const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(3);
const WATCHERS: usize = 1000;
const WATCHED_WRITES: usize = 500;
const VALUE: usize = 512;

pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in("/var/tmp")?;
    let embedded: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.path(), EmbeddedConfig::default())?);
    let cluster = EtcdCluster::start(1).await?;
    let etcd: Arc<dyn Store> = Arc::new(cluster.store().await?);

    let mut figures = Vec::new();
    for writers in [1, 16] {
        let e = writes_per_second(&embedded, writers, "embedded").await?;
        let d = writes_per_second(&etcd, writers, "etcd").await?;
        println!(
            "writers={writers:<3} embedded={e:>9.0}/s etcd={d:>9.0}/s ratio={:.2}",
            e / d
        );
        figures.push((e, d));
    }
    let (embedded_p50, embedded_p99) = watch_latency(&embedded, "embedded").await?;
    let (etcd_p50, etcd_p99) = watch_latency(&etcd, "etcd").await?;
    println!(
        "watch latency, {WATCHERS} watchers: embedded p50={:.2}ms p99={:.2}ms; etcd p50={:.2}ms p99={:.2}ms",
        millis(embedded_p50),
        millis(embedded_p99),
        millis(etcd_p50),
        millis(etcd_p99)
    );
    let [(e1, d1), (e16, d16)] = figures.as_slice() else {
        anyhow::bail!("missing figures");
    };
    println!(
        "bench store: embedded_w1={e1:.0} etcd_w1={d1:.0} embedded_w16={e16:.0} etcd_w16={d16:.0} ratio_w16={:.2} watch_p99_ms={:.2}",
        e16 / d16,
        millis(embedded_p99)
    );
    Ok(())
}

/// Median over rounds of acknowledged CAS updates per second, `writers`
/// concurrent writers each updating its own keys.
async fn writes_per_second(
    store: &Arc<dyn Store>,
    writers: usize,
    name: &str,
) -> anyhow::Result<f64> {
    let mut rates = Vec::new();
    for round in 0..ROUNDS {
        let mut keys = Vec::new();
        for w in 0..writers {
            let key = format!("/bench/{name}/w{writers}/r{round}/{w}");
            let kv = store.create(&key, Bytes::from(vec![b'0'; VALUE])).await?;
            keys.push((key, kv.mod_revision));
        }
        let started = Instant::now();
        let tasks: Vec<_> = keys
            .into_iter()
            .map(|(key, mut revision)| {
                let store = Arc::clone(store);
                tokio::spawn(async move {
                    let mut written = 0_u64;
                    while started.elapsed() < ROUND {
                        let value = Bytes::from(vec![b'a' + (written % 26) as u8; VALUE]);
                        revision = store.update(&key, value, revision).await?.mod_revision;
                        written += 1;
                    }
                    anyhow::Ok(written)
                })
            })
            .collect();
        let mut written = 0;
        for task in tasks {
            written += task.await??;
        }
        rates.push(written as f64 / started.elapsed().as_secs_f64());
    }
    Ok(median(&mut rates))
}

/// p50 and p99 of the time from a write's call to its event reaching a
/// watcher, over every (write, watcher) pair.
async fn watch_latency(store: &Arc<dyn Store>, name: &str) -> anyhow::Result<(Duration, Duration)> {
    let prefix = format!("/bench/{name}/watched/");
    let from = store.current_revision().await?;
    let mut watchers = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let mut watch = store.watch(&prefix, from).await?;
        watchers.push(tokio::spawn(async move {
            let mut arrivals: Vec<(Revision, Instant)> = Vec::with_capacity(WATCHED_WRITES);
            while arrivals.len() < WATCHED_WRITES {
                match tokio::time::timeout(Duration::from_secs(60), watch.next()).await {
                    Ok(Some(Ok(event @ Event::Put { .. }))) => {
                        arrivals.push((event.revision(), Instant::now()))
                    }
                    other => anyhow::bail!("watch: {other:?}"),
                }
            }
            anyhow::Ok(arrivals)
        }));
    }
    // Let every watch settle onto the live feed before timing.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut sent = std::collections::HashMap::with_capacity(WATCHED_WRITES);
    for i in 0..WATCHED_WRITES {
        let called = Instant::now();
        let kv = store
            .create(&format!("{prefix}{i}"), Bytes::from(vec![b'w'; VALUE]))
            .await?;
        sent.insert(kv.mod_revision, called);
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let mut latencies = Vec::with_capacity(WATCHERS * WATCHED_WRITES);
    for watcher in watchers {
        for (revision, arrived) in watcher.await?? {
            let called = sent.get(&revision).context("an event nobody wrote")?;
            latencies.push(arrived.saturating_duration_since(*called));
        }
    }
    Ok((
        percentile(&mut latencies, 50.0),
        percentile(&mut latencies, 99.0),
    ))
}
