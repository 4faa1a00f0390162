//! The agent's DNS server on real sockets, asked by real clients: busybox
//! `nslookup` from another test host gets a ClusterIP Service's A record,
//! a named port's SRV, a ClusterIP's PTR, the schema version's TXT and
//! NXDOMAIN for a missing Service; an answer too large for UDP comes back
//! truncated, and whole over TCP.
//!
//! In a cluster: pods on each node reach their own node's DNS at the
//! kube-dns address 10.96.0.10; a pod resolves a Service's short name
//! through its resolv.conf search path; a new Service answers within a
//! second and a deleted one stops; a name outside the cluster is answered
//! by the upstream (dnsmasq on a host outside the cluster), and SERVFAIL
//! comes within the upstream timeout once it is dead.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{process::Output, sync::Arc};

use std::time::{Duration, Instant};

use capstan_agent::dns::{Answerer, Forwarder, Zone, ZoneHandle, serve_tcp, serve_udp};
use capstan_tests::{
    TestNet,
    artifacts::TESTAPP_IMAGE,
    cluster::{ClusterSettings, TestCluster, host_index, node_of, outcome, serving},
    process::KillOnDrop,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::api::ListParams;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn zone() -> Zone {
    let web: Service = serde_json::from_value(json!({
        "metadata": { "name": "web", "namespace": "default" },
        "spec": { "clusterIP": "10.96.0.20", "ports": [{ "name": "http", "port": 80 }] },
    }))
    .unwrap();
    let many: Service = serde_json::from_value(json!({
        "metadata": { "name": "many", "namespace": "default" },
        "spec": { "clusterIP": "None" },
    }))
    .unwrap();
    let endpoints: Vec<_> = (1..=60)
        .map(|i| json!({ "addresses": [format!("10.244.1.{i}")], "conditions": { "ready": true } }))
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": { "name": "many-1", "namespace": "default",
                      "labels": { "kubernetes.io/service-name": "many" } },
        "addressType": "IPv4",
        "endpoints": endpoints,
    }))
    .unwrap();
    Zone::build(
        "cluster.local",
        &[Arc::new(web), Arc::new(many)],
        &[Arc::new(slice)],
        1,
    )
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A query for `name`'s A records, as a stub resolver writes it.
fn a_query(name: &str) -> Vec<u8> {
    let mut out = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.extend_from_slice(&[0, 0, 1, 0, 1]);
    out
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn real_clients_get_the_zone_over_udp_and_tcp() {
    let net = TestNet::new(2).unwrap();
    let (server, client) = (net.host(1), net.host(2));
    let address = std::net::SocketAddr::from((server.address(), 53));
    let (udp, tcp) = server
        .netns()
        .run(move || {
            let udp = std::net::UdpSocket::bind(address).unwrap();
            let tcp = std::net::TcpListener::bind(address).unwrap();
            udp.set_nonblocking(true).unwrap();
            tcp.set_nonblocking(true).unwrap();
            (udp, tcp)
        })
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let handle = Arc::new(ZoneHandle::default());
    handle.publish(zone());
    let answerer = Arc::new(Answerer {
        domain: "cluster.local".into(),
        ttl: 5,
        zone: handle,
        forwarder: Forwarder::new(Vec::new()),
    });
    runtime.block_on(async {
        let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
        let tcp = tokio::net::TcpListener::from_std(tcp).unwrap();
        tokio::spawn(serve_udp(udp, Arc::clone(&answerer)));
        tokio::spawn(serve_tcp(tcp, answerer));
    });

    let nslookup = |args: &[&str]| {
        let output = client
            .command("busybox")
            .unwrap()
            .arg("nslookup")
            .args(args)
            .arg(server.address().to_string())
            .output()
            .unwrap();
        text(&output)
    };
    let a = nslookup(&["-type=a", "web.default.svc.cluster.local"]);
    assert!(a.contains("Address: 10.96.0.20"), "{a}");
    let srv = nslookup(&["-type=srv", "_http._tcp.web.default.svc.cluster.local"]);
    assert!(
        srv.contains("0 100 80 web.default.svc.cluster.local"),
        "{srv}"
    );
    let ptr = nslookup(&["-type=ptr", "20.0.96.10.in-addr.arpa"]);
    assert!(
        ptr.contains("name = web.default.svc.cluster.local"),
        "{ptr}"
    );
    let txt = nslookup(&["-type=txt", "dns-version.cluster.local"]);
    assert!(txt.contains("1.1.0"), "{txt}");
    let missing = nslookup(&["-type=a", "missing.default.svc.cluster.local"]);
    assert!(missing.contains("NXDOMAIN"), "{missing}");

    // 60 A records do not fit in 512 bytes: UDP says so, TCP has them all.
    let query = a_query("many.default.svc.cluster.local");
    let (truncated, whole) = runtime.block_on(async {
        let socket = client
            .netns()
            .run(|| std::net::UdpSocket::bind("0.0.0.0:0").unwrap())
            .unwrap();
        socket.connect(address).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        socket.send(&query).unwrap();
        let mut reply = [0_u8; 1500];
        let got = socket.recv(&mut reply).unwrap();
        let truncated = reply[..got].to_vec();
        let stream = client
            .netns()
            .run(move || std::net::TcpStream::connect(address).unwrap())
            .unwrap();
        stream.set_nonblocking(true).unwrap();
        let mut stream = tokio::net::TcpStream::from_std(stream).unwrap();
        stream
            .write_all(&(query.len() as u16).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&query).await.unwrap();
        let mut prefix = [0_u8; 2];
        stream.read_exact(&mut prefix).await.unwrap();
        let mut whole = vec![0_u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut whole).await.unwrap();
        (truncated, whole)
    });
    assert_eq!(truncated[2] & 0x02, 0x02, "TC over UDP");
    assert_eq!(u16::from_be_bytes([truncated[6], truncated[7]]), 0);
    assert_eq!(whole[2] & 0x02, 0, "no TC over TCP");
    assert_eq!(u16::from_be_bytes([whole[6], whole[7]]), 60);
    runtime.shutdown_background();
}

/// `busybox nslookup <args> 10.96.0.10` inside `pod`'s network namespace,
/// where the Service datapath sends it to the node's own DNS server.
async fn nslookup(cluster: &TestCluster, pod: &Pod, args: &[&str]) -> anyhow::Result<String> {
    let host = cluster.net.host(host_index(&node_of(pod)));
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut command = host.pod_command(&uid, "busybox")?;
    command.arg("nslookup").args(args).arg("10.96.0.10");
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    Ok(outcome(&output).1)
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn pods_resolve_services_through_their_own_nodes_dns() {
    // Host 3 joins no cluster: it runs the upstream resolver.
    let settings = ClusterSettings {
        agents_at_start: Some(2),
        agent_args: &["--dns-upstream=198.18.0.3:53"],
        ..ClusterSettings::default()
    };
    TestCluster::run_with(TestNet::new(3).unwrap(), settings, async |cluster| {
        cluster
            .apply(&format!(
                r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
spec:
  replicas: 2
  selector:
    matchLabels: {{app: client}}
  template:
    metadata:
      labels: {{app: client}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {TESTAPP_IMAGE}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80}}]
"#
            ))
            .await?;
        cluster
            .kubectl(&["rollout", "status", "deployment/client", "--timeout=90s"])
            .await?;
        let pods: Vec<Pod> = cluster
            .pods("default")
            .list(&ListParams::default().labels("app=client"))
            .await?
            .items
            .into_iter()
            .filter(serving)
            .collect();
        let nodes: std::collections::BTreeSet<String> = pods.iter().map(node_of).collect();
        anyhow::ensure!(nodes.len() == 2, "a client on each node: {nodes:?}");
        let services: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(cluster.client(), "default");
        let ip = services
            .get("web")
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .unwrap_or_default();

        for pod in &pods {
            let a = nslookup(cluster, pod, &["-type=a", "web.default.svc.cluster.local"]).await?;
            anyhow::ensure!(
                a.contains(&format!("Address: {ip}")),
                "from {}: {a}",
                node_of(pod)
            );
            let missing =
                nslookup(cluster, pod, &["-type=a", "nope.default.svc.cluster.local"]).await?;
            anyhow::ensure!(missing.contains("NXDOMAIN"), "{missing}");
        }

        // A pod's own resolver: the short name through the search path.
        cluster
            .apply(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: lookup}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    image: {TESTAPP_IMAGE}\n    args: [dns-lookup, web]\n"
            ))
            .await?;
        let logs = cluster
            .eventually(
                Duration::from_secs(60),
                "the lookup pod's answer",
                || async {
                    let pod = cluster.pods("default").get("lookup").await.ok()?;
                    let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
                    if phase != "Succeeded" && phase != "Failed" {
                        return None;
                    }
                    cluster.kubectl(&["logs", "lookup"]).await.ok()
                },
            )
            .await?;
        anyhow::ensure!(logs.trim() == ip, "dns-lookup web printed {logs:?}");

        // A new Service answers within a second of its creation, and a
        // deleted one stops.
        let pod = &pods[0];
        cluster
            .apply("apiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec:\n  ports: [{port: 80}]\n")
            .await?;
        let created = Instant::now();
        let name = "late.default.svc.cluster.local";
        let answered = cluster
            .eventually(
                Duration::from_secs(5),
                "the new Service answering",
                || async {
                    let a = nslookup(cluster, pod, &["-type=a", name]).await.ok()?;
                    (!a.contains("NXDOMAIN") && a.contains("Address: 10."))
                        .then(|| created.elapsed())
                },
            )
            .await?;
        anyhow::ensure!(
            answered < Duration::from_secs(1),
            "answered after {answered:?}"
        );
        cluster.kubectl(&["delete", "service", "late"]).await?;
        let deleted = Instant::now();
        let gone = cluster
            .eventually(
                Duration::from_secs(5),
                "the deleted Service gone",
                || async {
                    let a = nslookup(cluster, pod, &["-type=a", name]).await.ok()?;
                    a.contains("NXDOMAIN").then(|| deleted.elapsed())
                },
            )
            .await?;
        anyhow::ensure!(
            gone < Duration::from_secs(1),
            "still answered after {gone:?}"
        );
        println!(
            "a new Service answered {answered:?} after its creation; a deleted one stopped {gone:?} after"
        );

        // Outside the zone: the upstream's answer, then SERVFAIL once it
        // is gone, within its 2 s timeout.
        let upstream = cluster
            .net
            .host(3)
            .command("dnsmasq")?
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--bind-interfaces",
                "--listen-address=198.18.0.3",
                "--host-record=outside.test,192.0.2.7",
            ])
            .spawn()?;
        let mut upstream = KillOnDrop(upstream);
        let outside = cluster
            .eventually(
                Duration::from_secs(10),
                "the upstream answering",
                || async {
                    let a = nslookup(cluster, pod, &["-type=a", "outside.test"])
                        .await
                        .ok()?;
                    a.contains("Address: 192.0.2.7").then_some(a)
                },
            )
            .await?;
        println!("forwarded: {outside}");
        upstream.0.kill()?;
        upstream.0.wait()?;
        let asked = Instant::now();
        let failed = nslookup(cluster, pod, &["-type=a", "outside.test"]).await?;
        let took = asked.elapsed();
        anyhow::ensure!(
            failed.contains("SERVFAIL") && took < Duration::from_secs(4),
            "a dead upstream after {took:?}: {failed}"
        );
        Ok(())
    });
}
