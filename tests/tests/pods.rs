//! Pods on the real agent: control and an agent on a test host, the
//! host's own containerd, real kubectl. Pods name their node, as a
//! kubelet-only cluster would (tests/tests/scheduling.rs places them).

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
    F: AsyncFnOnce(&mut TestCluster) -> anyhow::Result<()> + Send + 'static,
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
            .wait_pod(
                "default",
                "web",
                Duration::from_secs(60),
                "running",
                running,
            )
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
        assert_eq!(
            (done.exit_code, done.reason.as_deref()),
            (0, Some("Completed"))
        );
        assert!(setup.ready);
        for name in ["server", "client"] {
            let container = status_of(&pod, name).unwrap();
            let state = container.state.as_ref().unwrap();
            assert!(
                state.running.as_ref().unwrap().started_at.is_some(),
                "{name}"
            );
            assert!(container.ready && container.started == Some(true), "{name}");
            assert_eq!(container.restart_count, 0);
            assert!(
                container
                    .container_id
                    .as_ref()
                    .unwrap()
                    .starts_with("containerd://"),
                "{name}"
            );
            assert!(
                container.image_id.contains("@sha256:"),
                "{}",
                container.image_id
            );
        }
        assert_eq!(status_of(&pod, "server").unwrap().image, TESTAPP);

        // The client reached the server on localhost: they share the pod's
        // network namespace, and its hostname is the pod's name.
        let logs = cluster
            .eventually(Duration::from_secs(20), "the client's output", || async {
                let out = cluster
                    .kubectl(&["logs", "web", "-c", "client"])
                    .await
                    .ok()?;
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

/// A pod on h1 with one container `c` running `script` in busybox.
fn shell_pod(name: &str, restart_policy: &str, script: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{ name: {name}, namespace: default }}
spec:
  nodeName: h1
  restartPolicy: {restart_policy}
  {extra}
  containers:
  - name: c
    image: {BUSYBOX}
    command: ["sh", "-c", {script:?}]
"#
    )
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn waiting_reason(pod: &Pod, name: &str) -> Option<String> {
    status_of(pod, name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn restart_policies_and_crash_loop_back_off_behave_as_documented() {
    with_cluster(async |cluster| {
        for (name, policy, script) in [
            ("crash", "Always", "echo attempt; exit 1"),
            ("retry", "OnFailure", "exit 2"),
            ("done", "OnFailure", "exit 0"),
            ("failed", "Never", "echo bye; exit 3"),
            ("finished", "Never", "exit 0"),
        ] {
            cluster.apply(&shell_pod(name, policy, script, "")).await?;
        }
        let limit = Duration::from_secs(30);
        let succeeded = |pod: &Pod| phase(pod) == Some("Succeeded");
        for name in ["done", "finished"] {
            let pod = cluster
                .wait_pod("default", name, limit, "Succeeded", succeeded)
                .await?;
            let c = status_of(&pod, "c").unwrap();
            assert_eq!(c.restart_count, 0, "{name}");
            let ended = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
            assert_eq!(
                (ended.exit_code, ended.reason.as_deref()),
                (0, Some("Completed"))
            );
        }
        let failed = cluster
            .wait_pod("default", "failed", limit, "Failed", |p| {
                phase(p) == Some("Failed")
            })
            .await?;
        let c = status_of(&failed, "c").unwrap();
        let ended = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (ended.exit_code, ended.reason.as_deref()),
            (3, Some("Error"))
        );
        assert_eq!(c.restart_count, 0);
        assert_eq!(cluster.kubectl(&["logs", "failed"]).await?, "bye\n");
        cluster
            .wait_pod("default", "retry", limit, "restarted on failure", |p| {
                status_of(p, "c").is_some_and(|c| c.restart_count >= 1)
                    && phase(p) == Some("Running")
            })
            .await?;

        // Always: each restart waits longer than the one before (0 s,
        // 10 s, 20 s), shown as CrashLoopBackOff in between. The waits are
        // read from the attempts' own start and finish times.
        let start = tokio::time::Instant::now();
        let mut attempts = std::collections::BTreeSet::new();
        let mut back_off_messages = Vec::new();
        let waits = |attempts: &std::collections::BTreeSet<(_, _)>| -> Vec<i64> {
            let attempts: Vec<&(k8s_openapi::jiff::Timestamp, k8s_openapi::jiff::Timestamp)> =
                attempts.iter().collect();
            attempts
                .windows(2)
                .map(|pair| pair[1].0.as_second() - pair[0].1.as_second())
                .collect()
        };
        // Some pair of consecutive restarts waited 10 s then 20 s.
        let grew = |waits: &[i64]| {
            waits
                .windows(2)
                .any(|w| (9..=12).contains(&w[0]) && (19..=22).contains(&w[1]))
        };
        while !grew(&waits(&attempts)) {
            let pod = cluster.pods("default").get("crash").await?;
            if let Some(c) = status_of(&pod, "c") {
                let ended = [
                    c.last_state.clone().and_then(|s| s.terminated),
                    c.state.clone().and_then(|s| s.terminated),
                ];
                for t in ended.into_iter().flatten() {
                    if let (Some(started), Some(finished)) = (t.started_at, t.finished_at) {
                        attempts.insert((started.0, finished.0));
                    }
                }
                if let Some(message) = c
                    .state
                    .clone()
                    .and_then(|s| s.waiting)
                    .and_then(|w| w.message)
                    && !back_off_messages.contains(&message)
                {
                    back_off_messages.push(message);
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "restarts stalled: {attempts:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            back_off_messages
                .iter()
                .any(|m| m
                    .starts_with("back-off 10s restarting failed container=c pod=crash_default(")),
            "{back_off_messages:?}"
        );
        assert!(
            back_off_messages
                .iter()
                .any(|m| m.starts_with("back-off 20s")),
            "{back_off_messages:?}"
        );
        let pod = cluster.pods("default").get("crash").await?;
        assert_eq!(
            phase(&pod),
            Some("Running"),
            "a crash-looping pod under Always is Running"
        );
        let last = status_of(&pod, "c").unwrap().last_state.clone().unwrap();
        assert_eq!(last.terminated.unwrap().exit_code, 1);
        let previous = cluster.kubectl(&["logs", "crash", "--previous"]).await?;
        assert_eq!(previous, "attempt\n");
        Ok(())
    });
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn limits_reach_the_cgroup_and_a_container_past_its_memory_is_oom_killed() {
    with_cluster(async |cluster| {
        let limits = "resources: { limits: { memory: 32Mi, cpu: 500m } }";
        let hog = format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{ name: hog, namespace: default }}
spec:
  nodeName: h1
  restartPolicy: Never
  containers:
  - name: c
    image: {BUSYBOX}
    command: ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\000' x); echo survived"]
    {limits}
"#
        );
        cluster.apply(&hog).await?;
        cluster
            .apply(&format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{ name: capped, namespace: default }}
spec:
  nodeName: h1
  containers:
  - name: c
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    {limits}
"#
            ))
            .await?;
        let limit = Duration::from_secs(60);
        let pod = cluster
            .wait_pod("default", "hog", limit, "Failed", |p| {
                phase(p) == Some("Failed")
            })
            .await?;
        let ended = status_of(&pod, "c")
            .unwrap()
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(ended.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(ended.exit_code, 137);

        let pod = cluster
            .wait_pod("default", "capped", limit, "running", running)
            .await?;
        let id = status_of(&pod, "c").unwrap().container_id.clone().unwrap();
        let id = id.trim_start_matches("containerd://");
        let uid = pod.metadata.uid.clone().unwrap();
        let cgroup = format!("{}/pod{uid}/{id}", cluster.net.host(1).cgroup("pods"));
        let hierarchies = capstan_agent::cgroup::Hierarchies::detect()?;
        let read = |file: &str| {
            hierarchies
                .dirs(&cgroup)
                .iter()
                .find_map(|dir| std::fs::read_to_string(dir.join(file)).ok())
        };
        match read("cpu.max") {
            Some(max) => assert_eq!(max.trim(), "50000 100000"),
            None => assert_eq!(read("cpu.cfs_quota_us").unwrap().trim(), "50000"),
        }
        match read("memory.max") {
            Some(max) => assert_eq!(max.trim(), (32 << 20).to_string()),
            None => assert_eq!(
                read("memory.limit_in_bytes").unwrap().trim(),
                (32 << 20).to_string()
            ),
        }
        Ok(())
    });
}

/// Deletes pod `name` and returns how long until it is gone, and the last
/// state of container `c` seen meanwhile.
async fn delete_and_time(
    cluster: &TestCluster,
    name: &str,
) -> anyhow::Result<(
    Duration,
    Option<k8s_openapi::api::core::v1::ContainerStateTerminated>,
)> {
    let pods = cluster.pods("default");
    let start = tokio::time::Instant::now();
    pods.delete(name, &Default::default()).await?;
    let mut last = None;
    loop {
        match pods.get_opt(name).await? {
            None => return Ok((start.elapsed(), last)),
            Some(pod) => {
                if let Some(ended) = status_of(&pod, "c")
                    .and_then(|c| c.state.clone())
                    .and_then(|s| s.terminated)
                {
                    last = Some(ended);
                }
            }
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "{name} never went"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn graceful_deletion_honours_the_grace_period() {
    with_cluster(async |cluster| {
        let polite = "trap 'echo stopping; exit 0' TERM; while true; do sleep 0.1; done";
        let stubborn = "trap '' TERM; while true; do sleep 0.1; done";
        cluster
            .apply(&shell_pod(
                "polite",
                "Always",
                polite,
                "terminationGracePeriodSeconds: 30",
            ))
            .await?;
        cluster
            .apply(&shell_pod(
                "stubborn",
                "Always",
                stubborn,
                "terminationGracePeriodSeconds: 3",
            ))
            .await?;
        for name in ["polite", "stubborn"] {
            cluster
                .wait_pod("default", name, Duration::from_secs(30), "running", running)
                .await?;
        }
        let (took, last) = delete_and_time(cluster, "polite").await?;
        assert!(
            took < Duration::from_secs(10),
            "SIGTERM was not delivered: {took:?}"
        );
        if let Some(ended) = last {
            assert_eq!(ended.exit_code, 0, "{ended:?}");
        }
        let (took, last) = delete_and_time(cluster, "stubborn").await?;
        assert!(
            took >= Duration::from_secs(3),
            "killed before the deadline: {took:?}"
        );
        assert!(
            took < Duration::from_secs(15),
            "not killed at the deadline: {took:?}"
        );
        if let Some(ended) = last {
            assert_eq!(ended.exit_code, 137, "{ended:?}");
        }
        Ok(())
    });
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn specs_that_cannot_run_say_why_and_the_agent_carries_on() {
    with_cluster(async |cluster| {
        cluster
            .apply(&format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{ name: nocmd, namespace: default }}
spec:
  nodeName: h1
  containers:
  - name: c
    image: {BUSYBOX}
    command: ["/no/such/binary"]
---
apiVersion: v1
kind: Pod
metadata: {{ name: ghost, namespace: default }}
spec:
  nodeName: h1
  containers:
  - name: c
    image: capstan.invalid/ghost-user:v1
---
apiVersion: v1
kind: Pod
metadata: {{ name: rootless, namespace: default }}
spec:
  nodeName: h1
  securityContext: {{ runAsNonRoot: true }}
  containers:
  - name: c
    image: {BUSYBOX}
---
apiVersion: v1
kind: Pod
metadata: {{ name: never-pull, namespace: default }}
spec:
  nodeName: h1
  containers:
  - name: c
    image: capstan.invalid/absent:v1
    imagePullPolicy: Never
"#
            ))
            .await?;
        let limit = Duration::from_secs(30);
        let pod = cluster
            .wait_pod("default", "nocmd", limit, "a start error", |p| {
                status_of(p, "c")
                    .and_then(|c| c.last_state.clone()?.terminated)
                    .is_some_and(|t| t.reason.as_deref() == Some("StartError"))
            })
            .await?;
        let c = status_of(&pod, "c").unwrap();
        let ended = c.last_state.clone().unwrap().terminated.unwrap();
        assert_eq!(ended.exit_code, 128);
        let message = ended.message.unwrap();
        assert!(message.contains("/no/such/binary"), "{message}");

        let waiting = |name: &'static str, reason: &'static str| {
            cluster.wait_pod("default", name, limit, reason, move |p| {
                waiting_reason(p, "c").as_deref() == Some(reason)
            })
        };
        let ghost = waiting("ghost", "CreateContainerError").await?;
        let message = status_of(&ghost, "c")
            .unwrap()
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap()
            .message;
        assert_eq!(
            message.as_deref(),
            Some("unable to find user ghost: no matching entries in passwd file")
        );
        let rootless = waiting("rootless", "CreateContainerConfigError").await?;
        let message = status_of(&rootless, "c")
            .unwrap()
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap()
            .message;
        assert_eq!(
            message.as_deref(),
            Some("container has runAsNonRoot and image will run as root")
        );
        let never = waiting("never-pull", "ErrImageNeverPull").await?;
        assert_eq!(phase(&never), Some("Pending"));

        // None of it stopped the agent: a good pod still runs.
        cluster
            .apply(&shell_pod("fine", "Always", "sleep 3600", ""))
            .await?;
        cluster
            .wait_pod("default", "fine", limit, "running", running)
            .await?;
        Ok(())
    });
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn a_restarted_agent_adopts_running_pods_and_removes_deleted_ones() {
    with_cluster(async |cluster| {
        for name in ["steady", "doomed", "vanished"] {
            cluster
                .apply(&shell_pod(
                    name,
                    "Always",
                    "echo up; sleep 3600",
                    "terminationGracePeriodSeconds: 2",
                ))
                .await?;
        }
        // Writes far more than a pipe holds, after the agent is gone: the
        // node's log collector, not the agent, must take it in.
        cluster
            .apply(&shell_pod(
                "chatty",
                "Always",
                "sleep 4; seq 1 100000; echo finished; sleep 3600",
                "terminationGracePeriodSeconds: 0",
            ))
            .await?;
        let mut before = std::collections::HashMap::new();
        for name in ["steady", "doomed", "vanished", "chatty"] {
            let pod = cluster
                .wait_pod("default", name, Duration::from_secs(30), "running", running)
                .await?;
            before.insert(name, pod);
        }
        let containerd = cluster.containerd(1).await?;
        let steady = status_of(&before["steady"], "c").unwrap().clone();
        let steady_id = steady.container_id.clone().unwrap();
        let steady_id = steady_id.trim_start_matches("containerd://").to_owned();
        let steady_pid = containerd.task_state(&steady_id).await?;

        cluster.kill_agent(1)?;
        cluster
            .kubectl(&["delete", "pod", "doomed", "--wait=false"])
            .await?;
        cluster
            .kubectl(&["delete", "pod", "vanished", "--grace-period=0", "--force"])
            .await?;
        let chatty_log = cluster.agents[0]
            .pod_log_dir()
            .join(format!(
                "default_chatty_{}",
                before["chatty"].metadata.uid.as_deref().unwrap()
            ))
            .join("c/0.log");
        cluster
            .eventually(
                Duration::from_secs(30),
                "chatty's output logged while the agent is down",
                || async {
                    let text = std::fs::read_to_string(&chatty_log).ok()?;
                    text.ends_with(" stdout F finished\n").then_some(())
                },
            )
            .await?;
        cluster.start_agent(1)?;

        cluster
            .eventually(Duration::from_secs(30), "doomed removed", || async {
                cluster
                    .pods("default")
                    .get_opt("doomed")
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            })
            .await?;
        let prefix = cluster.net.host(1).pod_netns_prefix();
        for name in ["doomed", "vanished"] {
            let uid = before[name].metadata.uid.clone().unwrap();
            cluster
                .eventually(
                    Duration::from_secs(30),
                    &format!("{name}'s containers removed"),
                    || async {
                        let left = containerd
                            .containers_labelled(capstan_agent::pod::labels::POD_UID, &uid)
                            .await
                            .ok()?;
                        let netns =
                            std::path::Path::new("/run/netns").join(format!("{prefix}{uid}"));
                        (left.is_empty() && !netns.exists()).then_some(())
                    },
                )
                .await?;
        }

        // steady ran on untouched: same container, same process, no restart.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pod = cluster.pods("default").get("steady").await?;
        assert!(running(&pod));
        let now = status_of(&pod, "c").unwrap();
        assert_eq!(now.container_id, steady.container_id);
        assert_eq!(now.restart_count, 0);
        assert_eq!(
            now.state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at,
            steady
                .state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at
        );
        assert_eq!(containerd.task_state(&steady_id).await?, steady_pid);
        let all = containerd
            .containers_labelled(
                capstan_agent::pod::labels::POD_UID,
                pod.metadata.uid.as_deref().unwrap(),
            )
            .await?;
        assert_eq!(all.len(), 1, "nothing duplicated: {all:?}");
        assert_eq!(cluster.kubectl(&["logs", "steady"]).await?, "up\n");
        let chatty = cluster.kubectl(&["logs", "chatty"]).await?;
        let mut expected: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
        expected.push_str("finished\n");
        assert!(
            chatty == expected,
            "chatty's log has {} bytes",
            chatty.len()
        );
        Ok(())
    });
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn kubectl_logs_follows_a_container_until_it_exits() {
    with_cluster(async |cluster| {
        cluster
            .apply(&shell_pod(
                "counter",
                "Never",
                "for i in 1 2 3; do echo line $i; sleep 1; done; echo oops >&2",
                "",
            ))
            .await?;
        cluster
            .wait_pod(
                "default",
                "counter",
                Duration::from_secs(30),
                "started",
                |p| phase(p) != Some("Pending"),
            )
            .await?;
        let followed = tokio::time::timeout(
            Duration::from_secs(20),
            cluster.kubectl(&["logs", "-f", "counter"]),
        )
        .await??;
        assert_eq!(followed, "line 1\nline 2\nline 3\noops\n");
        Ok(())
    });
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn images_are_pulled_from_a_registry_and_a_missing_one_backs_off() {
    with_cluster(async |cluster| {
        let registry = capstan_tests::registry::TestRegistry::start(cluster.net.host(1)).await?;
        let image = format!("{}/capstan/pulled:v1", capstan_tests::registry::ADDRESS);
        registry.push(cluster.net.host(1), "testapp", &image)?;
        let missing = format!("{}/capstan/missing:v1", capstan_tests::registry::ADDRESS);
        cluster
            .apply(&format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{ name: pulled, namespace: default }}
spec:
  nodeName: h1
  containers:
  - name: c
    image: {image}
---
apiVersion: v1
kind: Pod
metadata: {{ name: missing, namespace: default }}
spec:
  nodeName: h1
  containers:
  - name: c
    image: {missing}
"#
            ))
            .await?;
        let limit = Duration::from_secs(60);
        let pod = cluster
            .wait_pod("default", "pulled", limit, "running", running)
            .await?;
        let c = status_of(&pod, "c").unwrap();
        assert!(
            c.image_id
                .starts_with("127.0.0.1:5000/capstan/pulled@sha256:"),
            "{}",
            c.image_id
        );
        let pulled = cluster.containerd(1).await?.local_image(&image).await?;
        assert!(
            pulled.is_some(),
            "the pulled image is in containerd under its name"
        );

        let errored = cluster
            .wait_pod("default", "missing", limit, "ErrImagePull", |p| {
                waiting_reason(p, "c").as_deref() == Some("ErrImagePull")
            })
            .await?;
        let message = status_of(&errored, "c")
            .unwrap()
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap()
            .message
            .unwrap();
        assert!(message.contains(&missing), "{message}");
        assert!(
            message.contains("MANIFEST_UNKNOWN") || message.contains("NAME_UNKNOWN"),
            "the registry's words: {message}"
        );
        let backing_off = cluster
            .wait_pod("default", "missing", limit, "ImagePullBackOff", |p| {
                waiting_reason(p, "c").as_deref() == Some("ImagePullBackOff")
            })
            .await?;
        let message = status_of(&backing_off, "c")
            .unwrap()
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap()
            .message
            .unwrap();
        assert_eq!(message, format!("Back-off pulling image \"{missing}\""));
        Ok(())
    });
}
