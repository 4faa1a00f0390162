//! Services end to end on three real nodes: a ClusterIP in front of a
//! Deployment spread over the nodes is balanced by each node's eBPF
//! datapath over TCP and UDP (unconnected and connected), with the Service
//! address as peer and reply source; pods reach each other across nodes
//! by pod IP with their own address as source, and reach a host outside
//! the cluster with their node's address; the `kubernetes` Service
//! reaches control's API; ClientIP affinity holds a client on one backend;
//! a SIGKILLed agent leaves connects working while it is down and across
//! its restart, whose successor applies what changed meanwhile
//! (internalTrafficPolicy Local, which keeps each node on its own pod);
//! scaling 3 -> 1 -> 5, or a pod turning not ready, changes where new
//! connections go within a second, and a Service with no endpoint refuses
//! at once.
//!
//! The clients run in the pods' own network namespaces (the web pods', one
//! per node), in a cgroup beside the pods, as a process of the pod would.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use capstan_tests::{
    TestNet,
    artifacts::{self, TESTAPP_IMAGE},
    cluster::{
        ClusterSettings, TestCluster, host_index, in_pod, node_of, outcome, pod_ip, pod_testapp,
        serving,
    },
    process::KillOnDrop,
};
use k8s_openapi::api::{
    core::v1::{Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};

const WAIT: Duration = Duration::from_secs(90);

/// The backends `pod` reaches through `service` in `count` connects.
async fn answers(
    cluster: &TestCluster,
    pod: &Pod,
    service: &str,
    count: u32,
) -> anyhow::Result<BTreeSet<String>> {
    let count = count.to_string();
    let (ok, out) = in_pod(
        cluster,
        pod,
        &["get", service, "/hostname", "--count", &count],
    )
    .await?;
    anyhow::ensure!(ok, "from {}: {out}", node_of(pod));
    Ok(tally(&out).into_keys().collect())
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

async fn patch_service(cluster: &TestCluster, spec: &str) -> anyhow::Result<()> {
    cluster
        .kubectl(&[
            "patch",
            "service",
            "web",
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{spec}}}"#),
        ])
        .await?;
    Ok(())
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error")).collect();
    format!("{} failed: {:?}", lines.len(), &lines[..lines.len().min(5)])
}

/// How many answers each line got.
fn tally(output: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in output.lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

async fn web_pods(cluster: &TestCluster) -> anyhow::Result<Vec<Pod>> {
    let pods = cluster
        .pods("default")
        .list(&ListParams::default().labels("app=web"))
        .await?;
    Ok(pods.items.into_iter().filter(serving).collect())
}

/// Waits until the Service's slices list exactly `n` ready endpoints.
async fn wait_ready_endpoints(cluster: &TestCluster, n: usize) -> anyhow::Result<()> {
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), "default");
    cluster
        .eventually(WAIT, &format!("{n} ready endpoints of web"), || async {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                .await
                .ok()?;
            let ready = list
                .items
                .iter()
                .flat_map(|s| &s.endpoints)
                .filter(|e| {
                    let c = e.conditions.as_ref();
                    c.and_then(|c| c.ready).unwrap_or(true)
                })
                .count();
            (ready == n).then_some(())
        })
        .await
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn cluster_ips_are_balanced_by_every_nodes_datapath() {
    // Host 4 joins no cluster: it stands for an address outside it.
    let settings = ClusterSettings {
        agents_at_start: Some(3),
        ..ClusterSettings::default()
    };
    TestCluster::run_with(TestNet::new(4).unwrap(), settings, async |cluster| {
        cluster
            .apply(&format!(
                r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {TESTAPP_IMAGE}
        ports:
        - {{name: http, containerPort: 8080}}
        - {{name: echo-udp, containerPort: 8082, protocol: UDP}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: http}}
  - {{name: dns, port: 53, targetPort: echo-udp, protocol: UDP}}
"#
            ))
            .await?;
        let rolled = cluster
            .kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"])
            .await?;
        anyhow::ensure!(rolled.contains("successfully rolled out"), "{rolled}");
        wait_ready_endpoints(cluster, 3).await?;
        let pods = web_pods(cluster).await?;
        let nodes: BTreeSet<String> = pods.iter().map(node_of).collect();
        anyhow::ensure!(nodes.len() == 3, "one web pod per node: {nodes:?}");
        let names: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();

        let services: Api<Service> = Api::namespaced(cluster.client(), "default");
        let ip = services
            .get("web")
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap_or_default();
        let http = format!("{ip}:80");
        let dns = format!("{ip}:53");

        // TCP: from a pod on each node, 300 requests reach all three
        // backends, none fails (hairpin included: a pod lands on itself).
        for pod in &pods {
            let (ok, out) =
                in_pod(cluster, pod, &["get", &http, "/hostname", "--count", "300"]).await?;
            anyhow::ensure!(ok, "from {}: {out}", node_of(pod));
            let answered: BTreeSet<String> = tally(&out).into_keys().collect();
            anyhow::ensure!(answered == names, "from {}: {answered:?}", node_of(pod));
        }

        // kubectl describe, old and new, shows a Service's endpoints; one
        // with an unnamed port too (kubectl dereferences the slice port's
        // name, which must then be "", not absent).
        cluster
            .apply("apiVersion: v1\nkind: Service\nmetadata: {name: plain}\nspec:\n  selector: {app: web}\n  ports: [{port: 8080}]\n")
            .await?;
        let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), "default");
        cluster
            .eventually(WAIT, "the plain Service's slice", || async {
                let list = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=plain"))
                    .await
                    .ok()?;
                (list.items.iter().map(|s| s.endpoints.len()).sum::<usize>() == 3).then_some(())
            })
            .await?;
        for binary in capstan_tests::control::kubectl_binaries()? {
            let output = cluster
                .control
                .kubectl(&binary)
                .args(["describe", "service", "plain"])
                .output()
                .await?;
            let (ok, text) = outcome(&output);
            let endpoints = text
                .lines()
                .find(|l| l.starts_with("Endpoints:"))
                .map(|l| l.matches(":8080").count());
            anyhow::ensure!(
                ok && endpoints == Some(3),
                "{} describe service plain: {text}",
                binary.display()
            );
        }

        // `capstan-agent lb dump` shows node 1's programmed datapath and
        // what it counted (its pod's 300 connects at least).
        let table = lb_dump(cluster, 1)?;
        println!("capstan-agent lb dump on node 1:\n{table}");
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with(&format!("{http} ")))
            .ok_or_else(|| anyhow::anyhow!("no row for {http}:\n{table}"))?
            .split_whitespace()
            .collect();
        let translated: u64 = row[4].parse()?;
        let per_backend: Vec<u64> = row[7]
            .split(',')
            .filter_map(|b| b.rsplit_once('=')?.1.parse().ok())
            .collect();
        anyhow::ensure!(
            row[1] == "TCP"
                && translated >= 300
                && per_backend.len() == 3
                && per_backend.iter().all(|&n| n > 0)
                && per_backend.iter().sum::<u64>() == translated,
            "every backend counted, the counts adding up to the frontend's: {table}"
        );

        // A host process of node 3 (not in a pod) is balanced too.
        let mut from_host = cluster.net.host(3).command(artifacts::testapp()?)?;
        from_host.args(["get", &http, "/hostname", "--count", "60"]);
        let (ok, out) = outcome(&tokio::task::spawn_blocking(move || from_host.output()).await??);
        anyhow::ensure!(ok, "from node 3's host: {out}");
        let answered: BTreeSet<String> = tally(&out).into_keys().collect();
        anyhow::ensure!(answered == names, "from node 3's host: {answered:?}");

        // UDP, unconnected: every reply from the Service address, spread.
        let client = &pods[0];
        let (ok, out) = in_pod(cluster, client, &["udp", &dns, "--count", "60"]).await?;
        anyhow::ensure!(ok, "{out}");
        let prefix = format!("from={dns} reply=");
        let answered: BTreeSet<&str> = out
            .lines()
            .map(|l| {
                l.strip_prefix(&prefix)
                    .ok_or_else(|| anyhow::anyhow!("{l}"))
            })
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(answered.len() == 3, "{answered:?}");

        // UDP, connected: getpeername and the replies show the Service.
        let (ok, out) = in_pod(
            cluster,
            client,
            &["udp", &dns, "--connected", "--count", "5"],
        )
        .await?;
        anyhow::ensure!(ok, "{out}");
        anyhow::ensure!(out.starts_with(&format!("peer={dns}\n")), "{out}");
        anyhow::ensure!(out.lines().skip(1).all(|l| l.starts_with(&prefix)), "{out}");

        // Pod to pod across nodes, the client's own address as source.
        for (from, to) in [(0, 1), (1, 2), (2, 0)] {
            let target = format!("{}:8080", pod_ip(&pods[to]));
            let (ok, out) = in_pod(cluster, &pods[from], &["get", &target, "/clientip"]).await?;
            anyhow::ensure!(ok, "{out}");
            let seen = out.trim().rsplit_once(':').map(|(ip, _)| ip.to_owned());
            anyhow::ensure!(
                seen.as_deref() == Some(pod_ip(&pods[from]).as_str()),
                "{} -> {}: the server saw {out}",
                node_of(&pods[from]),
                node_of(&pods[to])
            );
        }

        // Outside the cluster, pods' traffic comes from their node.
        let outside = cluster.net.host(4);
        let mut server = outside.command(artifacts::testapp()?)?;
        server.args(["serve"]).stdout(Stdio::null());
        let _server = KillOnDrop(server.spawn()?);
        for pod in &pods {
            let node = cluster
                .net
                .host(host_index(&node_of(pod)))
                .address()
                .to_string();
            let seen = cluster
                .eventually(
                    Duration::from_secs(10),
                    "the outside host answering",
                    || async {
                        let (ok, out) =
                            in_pod(cluster, pod, &["get", "198.18.0.4:8080", "/clientip"])
                                .await
                                .ok()?;
                        ok.then(|| out.trim().rsplit_once(':').map(|(ip, _)| ip.to_owned()))?
                    },
                )
                .await?;
            anyhow::ensure!(
                seen == node,
                "from {}: the outside host saw {seen}",
                node_of(pod)
            );
        }

        // The kubernetes Service reaches control's API.
        let (ok, out) = in_pod(
            cluster,
            client,
            &["connect", "10.96.0.1:443", "--timeout-secs", "2"],
        )
        .await?;
        anyhow::ensure!(
            out.contains("peer=10.96.0.1:443"),
            "connecting to the kubernetes Service (ok={ok}): {out}"
        );

        // ClientIP affinity: once programmed, one client stays on one
        // backend for 100 connects.
        patch_service(cluster, r#"{"sessionAffinity":"ClientIP"}"#).await?;
        let sticky = cluster
            .eventually(Duration::from_secs(5), "affinity programmed", || async {
                let seen = answers(cluster, client, &http, 10).await.ok()?;
                (seen.len() == 1).then_some(seen)
            })
            .await?;
        let held = answers(cluster, client, &http, 100).await?;
        anyhow::ensure!(held == sticky, "affinity held {sticky:?}, then {held:?}");
        patch_service(cluster, r#"{"sessionAffinity":"None"}"#).await?;

        // SIGKILL node 2's agent while a pod there keeps connecting: no
        // connect fails while it is down or as its successor adopts the
        // pinned datapath; a change made meanwhile (traffic kept on each
        // node) is applied soon after the restart.
        let on_2 = pods.iter().find(|p| node_of(p) == "h2").unwrap();
        let mut traffic = pod_testapp(
            cluster,
            on_2,
            &["get", &http, "/hostname", "--count", "3000"],
        )?;
        let traffic = traffic
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill_agent(2)?;
        patch_service(cluster, r#"{"internalTrafficPolicy":"Local"}"#).await?;
        let while_down = answers(cluster, on_2, &http, 30).await?;
        anyhow::ensure!(
            while_down == names,
            "with the agent down, the last known backends serve: {while_down:?}"
        );
        cluster.start_agent(2)?;
        let restarted = Instant::now();
        let local = BTreeSet::from([name(on_2)]);
        cluster
            .eventually(
                Duration::from_secs(10),
                "node 2 keeps traffic local",
                || async { (answers(cluster, on_2, &http, 10).await.ok()? == local).then_some(()) },
            )
            .await?;
        let applied = restarted.elapsed();
        let (ok, out) =
            outcome(&tokio::task::spawn_blocking(move || traffic.wait_with_output()).await??);
        anyhow::ensure!(
            ok,
            "connects failed across the agent's restart: {}",
            tail(&out)
        );
        println!(
            "a change made while the agent was down was applied {applied:?} after its restart"
        );
        for pod in &pods {
            let seen = answers(cluster, pod, &http, 20).await?;
            anyhow::ensure!(
                seen == BTreeSet::from([name(pod)]),
                "Local on {}: {seen:?}",
                node_of(pod)
            );
        }
        patch_service(cluster, r#"{"internalTrafficPolicy":"Cluster"}"#).await?;

        // A connected UDP socket whose only backend is replaced: the
        // datapath destroys it when the old backend leaves, the client
        // connects the same socket again and the new pod answers within a
        // second of being ready.
        stale_udp_sockets_recover(cluster, client).await?;

        // Scale to one: within a second of the slice's change, new
        // connections go only to the pod left.
        cluster
            .kubectl(&["scale", "deployment/web", "--replicas=1"])
            .await?;
        wait_ready_endpoints(cluster, 1).await?;
        let changed = Instant::now();
        let left = web_pods(cluster).await?;
        let left: BTreeSet<String> = left
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let survivor = pods
            .iter()
            .find(|p| p.metadata.name.as_ref().is_some_and(|n| left.contains(n)))
            .ok_or_else(|| anyhow::anyhow!("no pod of the three is left: {left:?}"))?;
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(changed.elapsed())).await;
        let (ok, out) = in_pod(
            cluster,
            survivor,
            &["get", &http, "/hostname", "--count", "30"],
        )
        .await?;
        anyhow::ensure!(ok, "{out}");
        let answered: BTreeSet<String> = tally(&out).into_keys().collect();
        anyhow::ensure!(answered == left, "after scaling to one: {answered:?}");

        // And to five: a second after the slices list them, new
        // connections spread over all five.
        cluster
            .kubectl(&["scale", "deployment/web", "--replicas=5"])
            .await?;
        wait_ready_endpoints(cluster, 5).await?;
        let changed = Instant::now();
        let five_pods = web_pods(cluster).await?;
        let five: BTreeSet<String> = five_pods.iter().map(name).collect();
        anyhow::ensure!(five.len() == 5, "{five:?}");
        // On a loaded machine a new pod has been seen unreachable by its
        // own address for a few seconds after turning ready (not a
        // Service matter; tracked in the issue): the balancing is
        // measured once each new pod answers directly.
        for pod in &five_pods {
            let target = format!("{}:8080", pod_ip(pod));
            cluster
                .eventually(
                    Duration::from_secs(30),
                    &format!("{} answering by pod IP", name(pod)),
                    || async {
                        let (ok, _) = in_pod(
                            cluster,
                            survivor,
                            &["get", &target, "/hostname", "--timeout-secs", "1"],
                        )
                        .await
                        .ok()?;
                        ok.then_some(())
                    },
                )
                .await?;
        }
        let waited = changed.elapsed();
        if waited > Duration::from_secs(1) {
            println!("new pods answered by pod IP only {waited:?} after the slices listed them");
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(changed.elapsed())).await;
        let answered = answers(cluster, survivor, &http, 100).await?;
        anyhow::ensure!(answered == five, "after scaling to five: {answered:?}");

        // A pod that stops being ready (its status says so, as a failed
        // readiness probe would) gets no new connections a second after
        // its endpoint turns not ready.
        let tired = web_pods(cluster)
            .await?
            .into_iter()
            .find(|p| name(p) != name(survivor))
            .ok_or_else(|| anyhow::anyhow!("no pod besides the survivor"))?;
        let mut conditions = tired
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        for condition in &mut conditions {
            if condition.type_ == "Ready" || condition.type_ == "ContainersReady" {
                condition.status = "False".to_owned();
            }
        }
        cluster
            .pods("default")
            .patch_status(
                &name(&tired),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": { "conditions": conditions } })),
            )
            .await?;
        wait_ready_endpoints(cluster, 4).await?;
        let changed = Instant::now();
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(changed.elapsed())).await;
        let answered = answers(cluster, survivor, &http, 100).await?;
        let mut four = five.clone();
        four.remove(&name(&tired));
        anyhow::ensure!(
            answered == four,
            "with {} not ready: {answered:?}",
            name(&tired)
        );

        // No endpoint: refused at once, not left to time out.
        cluster
            .kubectl(&[
                "patch",
                "service",
                "web",
                "--type=merge",
                "-p",
                r#"{"spec":{"selector":{"app":"nobody"}}}"#,
            ])
            .await?;
        wait_ready_endpoints(cluster, 0).await?;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let started = Instant::now();
            let (ok, out) = in_pod(
                cluster,
                survivor,
                &["connect", &http, "--timeout-secs", "2"],
            )
            .await?;
            if !ok && out.contains("Connection refused") {
                anyhow::ensure!(
                    started.elapsed() < Duration::from_millis(500),
                    "refused only after {:?}",
                    started.elapsed()
                );
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "not refused a second after the last endpoint went: {out}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    });
}

async fn stale_udp_sockets_recover(cluster: &TestCluster, client: &Pod) -> anyhow::Result<()> {
    cluster
        .apply(&format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: solo
spec:
  replicas: 1
  selector:
    matchLabels: {{app: solo}}
  template:
    metadata:
      labels: {{app: solo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {TESTAPP_IMAGE}
---
apiVersion: v1
kind: Service
metadata:
  name: solo
spec:
  selector: {{app: solo}}
  ports:
  - {{name: dns, port: 53, targetPort: 8082, protocol: UDP}}
"#
        ))
        .await?;
    let pods = cluster.pods("default");
    let solo = ListParams::default().labels("app=solo");
    let old = cluster
        .eventually(WAIT, "the solo pod serving", || async {
            let list = pods.list(&solo).await.ok()?;
            list.items.into_iter().find(serving)
        })
        .await?;
    let services: Api<Service> = Api::namespaced(cluster.client(), "default");
    let ip = services
        .get("solo")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_default();
    let address = format!("{ip}:53");
    let old_reply = format!("from={address} reply={}", name(&old));
    cluster
        .eventually(
            Duration::from_secs(10),
            "solo answering through its Service",
            || async {
                let (_, out) = in_pod(cluster, client, &["udp", &address]).await.ok()?;
                out.contains(&old_reply).then_some(())
            },
        )
        .await?;

    let mut udp = pod_testapp(
        cluster,
        client,
        &[
            "udp",
            &address,
            "--connected",
            "--count",
            "200",
            "--interval-ms",
            "100",
            "--timeout-secs",
            "1",
        ],
    )?;
    let mut child = udp.stdout(Stdio::piped()).spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (lines, arrived) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let first = arrived.recv_timeout(Duration::from_secs(5))?;
    seen.push(first.1.clone());
    anyhow::ensure!(first.1.starts_with(&format!("peer={address}")), "{first:?}");

    pods.delete(&name(&old), &Default::default()).await?;
    let new = cluster
        .eventually(WAIT, "a new solo pod serving", || async {
            let list = pods.list(&solo).await.ok()?;
            list.items
                .into_iter()
                .find(|p| serving(p) && name(p) != name(&old))
        })
        .await?;
    let ready = Instant::now();
    let new_reply = format!("from={address} reply={}", name(&new));
    let answered = loop {
        let (at, line) = arrived.recv_timeout(Duration::from_secs(10)).map_err(|_| {
            anyhow::anyhow!("the client's socket never reached the new pod: {seen:?}")
        })?;
        seen.push(line.clone());
        if line == new_reply {
            break at;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let took = answered.saturating_duration_since(ready);
    println!("a connected UDP socket reached the new backend {took:?} after it was ready");
    anyhow::ensure!(
        took < Duration::from_secs(1),
        "the new backend answered only {took:?} after it was ready: {seen:?}"
    );
    anyhow::ensure!(
        seen.iter().any(|l| l == "reconnected"),
        "the same socket was connected again: {seen:?}"
    );
    Ok(())
}

/// `capstan-agent lb dump` of host `n`'s datapath.
fn lb_dump(cluster: &TestCluster, n: u8) -> anyhow::Result<String> {
    let bpffs = cluster.net.host(n).run_dir("bpf")?;
    let dump = std::process::Command::new(artifacts::agent()?)
        .args(["lb", "dump", "--bpffs"])
        .arg(&bpffs)
        .output()?;
    let (ok, table) = outcome(&dump);
    anyhow::ensure!(ok, "lb dump: {table}");
    Ok(table)
}

/// `kubectl describe service <name>` with every kubectl, until each shows
/// `wanted` (events are written in the background).
async fn describe_shows(cluster: &TestCluster, name: &str, wanted: &[&str]) -> anyhow::Result<()> {
    for binary in capstan_tests::control::kubectl_binaries()? {
        cluster
            .eventually(
                Duration::from_secs(30),
                &format!(
                    "{} describe service {name} showing {wanted:?}",
                    binary.display()
                ),
                || async {
                    let output = cluster
                        .control
                        .kubectl(&binary)
                        .args(["describe", "service", name])
                        .output()
                        .await
                        .ok()?;
                    let (ok, text) = outcome(&output);
                    (ok && wanted.iter().all(|w| text.contains(w))).then_some(())
                },
            )
            .await?;
    }
    Ok(())
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn a_service_the_datapath_cannot_hold_is_told_so_by_an_event() {
    // Room for four frontends: the kubernetes Service's, kube-dns's two
    // (UDP and TCP) and one more.
    let settings = ClusterSettings {
        agent_args: &["--max-service-frontends=4"],
        ..ClusterSettings::default()
    };
    TestCluster::run_with(TestNet::new(1).unwrap(), settings, async |cluster| {
        let service = |name: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n"
            )
        };
        cluster.apply(&service("first")).await?;
        cluster.apply(&service("second")).await?;
        describe_shows(
            cluster,
            "second",
            &[
                "Warning  ProgrammingFailed",
                "node h1 cannot program",
                "the datapath is full",
            ],
        )
        .await?;

        // Room made: the waiting Service is programmed at once, and says so.
        cluster.kubectl(&["delete", "service", "first"]).await?;
        describe_shows(cluster, "second", &["Normal   Programmed"]).await?;
        let services: Api<Service> = Api::namespaced(cluster.client(), "default");
        let ip = services
            .get("second")
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap_or_default();
        let table = lb_dump(cluster, 1)?;
        anyhow::ensure!(
            table.lines().any(|l| l.starts_with(&format!("{ip}:80 "))),
            "second's frontend programmed: {table}"
        );
        Ok(())
    });
}
