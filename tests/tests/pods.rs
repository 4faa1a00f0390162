//! Pods on the real agent: control and an agent on a test host, the
//! host's own containerd, real kubectl. Pods name their node (the
//! scheduler comes later).

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::time::Duration;

use capstan_tests::{TestNet, cluster::TestCluster};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

const BUSYBOX: &str = "capstan.invalid/busybox:v1";
const TESTAPP: &str = "capstan.invalid/testapp:v1";

fn status_of<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

fn running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|all| all.iter().all(|c| c.ready))
}

fn condition(pod: &Pod, kind: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
}

/// Runs `test` against a fresh one-node cluster.
fn with_cluster<F>(test: F)
where
    F: AsyncFnOnce(&TestCluster) -> anyhow::Result<()> + Send + 'static,
{
    TestCluster::run(TestNet::new(1).unwrap(), test);
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn a_pod_with_an_init_container_and_two_containers_runs_and_reports_its_status() {
    with_cluster(async |cluster| {
        cluster
            .apply(&format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{ name: web, namespace: default }}
spec:
  nodeName: h1
  initContainers:
  - name: setup
    image: {BUSYBOX}
    command: ["sh", "-c", "echo set up by $(hostname)"]
  containers:
  - name: server
    image: {TESTAPP}
  - name: client
    image: {BUSYBOX}
    command: ["sh", "-c", "while true; do wget -q -O - http://127.0.0.1:8080/hostname && echo; sleep 0.5; done"]
"#
            ))
            .await?;
        let pod = cluster
            .wait_pod("default", "web", Duration::from_secs(60), "running", running)
            .await?;
        let status = pod.status.clone().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        for kind in [
            "PodScheduled",
            "Initialized",
            "ContainersReady",
            "Ready",
            "PodReadyToStartContainers",
        ] {
            assert_eq!(condition(&pod, kind).as_deref(), Some("True"), "{kind}");
        }
        let ip = status.pod_ip.clone().unwrap();
        assert!(ip.starts_with("10.244.0."), "{ip}");
        assert_eq!(status.pod_ips.as_ref().unwrap()[0].ip, ip);
        assert_eq!(status.host_ip.as_deref(), Some("198.18.0.1"));
        assert!(status.start_time.is_some());

        let setup = status_of(&pod, "setup").unwrap();
        let done = setup.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((done.exit_code, done.reason.as_deref()), (0, Some("Completed")));
        assert!(setup.ready);
        for name in ["server", "client"] {
            let container = status_of(&pod, name).unwrap();
            let state = container.state.as_ref().unwrap();
            assert!(state.running.as_ref().unwrap().started_at.is_some(), "{name}");
            assert!(container.ready && container.started == Some(true), "{name}");
            assert_eq!(container.restart_count, 0);
            assert!(
                container.container_id.as_ref().unwrap().starts_with("containerd://"),
                "{name}"
            );
            assert!(container.image_id.contains("@sha256:"), "{}", container.image_id);
        }
        assert_eq!(status_of(&pod, "server").unwrap().image, TESTAPP);

        // The client reached the server on localhost: they share the pod's
        // network namespace, and its hostname is the pod's name.
        let logs = cluster
            .eventually(Duration::from_secs(20), "the client's output", || async {
                let out = cluster.kubectl(&["logs", "web", "-c", "client"]).await.ok()?;
                out.contains("web").then_some(out)
            })
            .await?;
        assert!(logs.lines().any(|l| l == "web"), "{logs}");
        let init_log = cluster.kubectl(&["logs", "web", "-c", "setup"]).await?;
        assert_eq!(init_log, "set up by web\n");
        let stamped = cluster
            .kubectl(&["logs", "web", "-c", "setup", "--timestamps"])
            .await?;
        assert!(stamped.ends_with("Z set up by web\n"), "{stamped}");
        let tail = cluster
            .kubectl(&["logs", "web", "-c", "client", "--tail=1"])
            .await?;
        assert_eq!(tail.lines().count(), 1, "{tail}");
        Ok(())
    });
}
