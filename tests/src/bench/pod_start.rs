//! `cargo xtask bench pod-start`: pod start latency on the release agent,
//! beside raw `ctr run -d` of the same image against the same containerd in
//! the same run (the floor: no API, no status, no pod network).
//!
//! - capstan: from the create call to Running as a watch sees it, for 1
//!   pod at a time (20 times), then 10, 50 and 100 pods created at once;
//! - floor: `ctr run -d` wall time, 20 times one at a time, then 50 at once;
//! - the agent's resident memory idle and with 50 pods running, and the
//!   node overhead with 100 containers running: the resident memory of
//!   everything capstan runs on the node besides containerd and its shims
//!   (the agent and its log collector).

use std::{
    collections::HashMap,
    os::unix::ffi::OsStrExt,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams},
};

use super::{control_process::rss_mb, millis, percentile};
use crate::{TestNet, artifacts::BUSYBOX_IMAGE, cluster::TestCluster};

const SINGLE_RUNS: usize = 20;
const BATCHES: [usize; 3] = [10, 50, 100];

/// Latencies of one round, in the order pods were created.
type Latencies = Vec<Duration>;

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "labels": { "bench": "pod-start" } },
        "spec": {
            "nodeName": "h1",
            "terminationGracePeriodSeconds": 0,
            "containers": [{ "name": "c", "image": BUSYBOX_IMAGE, "command": ["sleep", "3600"] }],
        },
    }))?)
}

fn is_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running"))
}

/// Creates `names` at once and returns each one's time from its create
/// call to the watch event showing it Running.
async fn start_pods(api: &Api<Pod>, names: &[String]) -> anyhow::Result<Latencies> {
    let list = api.list(&ListParams::default().limit(1)).await?;
    let version = list.metadata.resource_version.unwrap_or_default();
    let mut events = api
        .watch(&WatchParams::default().labels("bench=pod-start"), &version)
        .await?
        .boxed();
    let mut created_at = HashMap::new();
    let creates = futures_util::future::try_join_all(names.iter().map(|name| async move {
        let at = Instant::now();
        api.create(&PostParams::default(), &pod(name)?).await?;
        anyhow::Ok((name.clone(), at))
    }))
    .await?;
    created_at.extend(creates);
    let mut running = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while running.len() < names.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(remaining, events.try_next())
            .await
            .context("pods did not all run within 120 s")??
            .context("the watch ended")?;
        if let WatchEvent::Added(pod) | WatchEvent::Modified(pod) = event
            && is_running(&pod)
            && let Some(name) = pod.metadata.name
            && let Some(at) = created_at.get(&name)
        {
            running.entry(name).or_insert_with(|| at.elapsed());
        }
    }
    Ok(names.iter().map(|n| running[n]).collect())
}

async fn delete_pods(cluster: &TestCluster, api: &Api<Pod>) -> anyhow::Result<()> {
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=pod-start"),
    )
    .await?;
    cluster
        .eventually(
            Duration::from_secs(120),
            "benchmark pods removed",
            || async {
                let left = api
                    .list(&ListParams::default().labels("bench=pod-start"))
                    .await
                    .ok()?;
                left.items.is_empty().then_some(())
            },
        )
        .await
}

/// `ctr run -d` of the benchmark's image, timed; the container is left
/// running (in the host's cgroup, where teardown finds it).
fn ctr_run(socket: &std::path::Path, cgroup: &str, id: &str) -> anyhow::Result<Duration> {
    let at = Instant::now();
    let output = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["--namespace", "k8s.io", "run", "-d", "--cgroup"])
        .arg(format!("/{cgroup}/{id}"))
        .args([BUSYBOX_IMAGE, id, "sleep", "3600"])
        .output()
        .context("running ctr (Debian package containerd)")?;
    let took = at.elapsed();
    if !output.status.success() {
        bail!("ctr run: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(took)
}

fn ctr_remove(socket: &std::path::Path, ids: &[String]) {
    for id in ids {
        for args in [
            vec!["tasks", "kill", "-s", "SIGKILL", id.as_str()],
            vec!["tasks", "delete", "-f", id.as_str()],
            vec!["containers", "delete", id.as_str()],
        ] {
            let _ = Command::new("ctr")
                .arg("--address")
                .arg(socket)
                .args(["--namespace", "k8s.io"])
                .args(&args)
                .output();
            if args[0] == "tasks" && args[1] == "kill" {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Floor latencies: `count` ctr runs, one at a time or all at once.
fn floor(
    cluster: &TestCluster,
    round: &str,
    count: usize,
    together: bool,
) -> anyhow::Result<Latencies> {
    let socket = cluster.net.host(1).containerd_socket()?;
    let cgroup = cluster.net.host(1).cgroup("ctr");
    let ids: Vec<String> = (0..count).map(|i| format!("bench-{round}-{i}")).collect();
    let result = if together {
        std::thread::scope(|scope| {
            let runs: Vec<_> = ids
                .iter()
                .map(|id| scope.spawn(|| ctr_run(&socket, &cgroup, id)))
                .collect();
            runs.into_iter()
                .map(|run| run.join().unwrap_or_else(|_| bail!("ctr thread panicked")))
                .collect()
        })
    } else {
        ids.iter().map(|id| ctr_run(&socket, &cgroup, id)).collect()
    };
    ctr_remove(&socket, &ids);
    result
}

/// The node's log collector: the agent binary run with `--log-collector`
/// in the directory under `run_dir`.
fn collector_pid(run_dir: &std::path::Path) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_string_lossy().parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let dir = std::path::Path::new(std::ffi::OsStr::from_bytes(args.get(2)?));
            (args.get(1) == Some(&b"--log-collector".as_slice()) && dir.starts_with(run_dir))
                .then_some(pid)
        })
}

fn stats(samples: &mut [Duration]) -> (f64, f64) {
    (
        millis(percentile(samples, 50.0)),
        millis(percentile(samples, 99.0)),
    )
}

async fn measure(cluster: &mut TestCluster) -> anyhow::Result<String> {
    let api: Api<Pod> = cluster.pods("default");
    let agent_pid = cluster.agent_pids()[0].context("the agent is not running")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_mb(agent_pid)?;

    let mut floor_single = floor(cluster, "single", SINGLE_RUNS, false)?;
    let mut floor_50 = floor(cluster, "batch", 50, true)?;

    let mut single = Vec::new();
    for i in 0..SINGLE_RUNS {
        let names = vec![format!("single-{i}")];
        single.extend(start_pods(&api, &names).await?);
        delete_pods(cluster, &api).await?;
    }
    let mut batches = Vec::new();
    let mut rss_50 = 0.0;
    let (mut agent_100, mut collector_100) = (0.0, 0.0);
    let run_dir = cluster.net.host(1).run_dir("agent")?;
    for size in BATCHES {
        let names: Vec<String> = (0..size).map(|i| format!("batch{size}-{i}")).collect();
        let latencies = start_pods(&api, &names).await?;
        if size == 50 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            rss_50 = rss_mb(agent_pid)?;
        }
        if size == 100 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            agent_100 = rss_mb(agent_pid)?;
            let collector = collector_pid(&run_dir).context("no log collector is running")?;
            collector_100 = rss_mb(collector)?;
        }
        batches.push((size, latencies));
        delete_pods(cluster, &api).await?;
    }

    let (p50_1, p99_1) = stats(&mut single);
    let (floor_p50_1, floor_1) = stats(&mut floor_single);
    let (_, floor_p99_50) = stats(&mut floor_50);
    println!(
        "capstan, one pod at a time ({SINGLE_RUNS} runs): p50 {p50_1:.0} ms, p99 {p99_1:.0} ms"
    );
    println!(
        "ctr run -d, one at a time ({SINGLE_RUNS} runs):   p50 {floor_p50_1:.0} ms, p99 {floor_1:.0} ms"
    );
    let mut p99_50 = 0.0;
    for (size, latencies) in &mut batches {
        let (p50, p99) = stats(latencies);
        println!("capstan, {size} pods at once: p50 {p50:.0} ms, p99 {p99:.0} ms");
        if *size == 50 {
            p99_50 = p99;
        }
    }
    println!("ctr run -d, 50 at once: p99 {floor_p99_50:.0} ms");
    let overhead_100 = agent_100 + collector_100;
    println!("agent RSS: idle {rss_idle:.1} MB, with 50 pods {rss_50:.1} MB");
    println!(
        "with 100 containers: agent {agent_100:.1} MB + log collector {collector_100:.1} MB = node overhead {overhead_100:.1} MB"
    );
    Ok(format!(
        "bench pod-start: p50_ms_1={p50_1:.0} p99_ms_1={p99_1:.0} p99_ms_50={p99_50:.0} floor_ms={floor_1:.0} floor_ms_50={floor_p99_50:.0} ratio_1={:.2} ratio_50={:.2} agent_rss_idle_mb={rss_idle:.1} agent_rss_50_mb={rss_50:.1} node_overhead_100_mb={overhead_100:.1}",
        p99_1 / floor_1,
        p99_50 / floor_p99_50,
    ))
}

pub fn run() -> anyhow::Result<()> {
    let net = TestNet::new(1)?;
    let line = TestCluster::try_run(net, async |cluster: &mut TestCluster| {
        measure(cluster).await
    })?;
    println!("{line}");
    Ok(())
}
