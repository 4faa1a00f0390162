//! The pod worker on a fake node, on tokio's paused clock: the order
//! containers start in, restarts and their back-off, start failures, OOM
//! kills, deletion within the grace period, and adoption.

use std::{net::Ipv4Addr, path::Path, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

use super::{
    DnsSettings, Images, PodDirs, PodRuntime,
    adopt::Adopted,
    fake::{Call, FakeNode},
    labels::ContainerIdentity,
    worker::Worker,
};
use crate::runtime::{RegistryClient, TaskState};

const UID: &str = "7c4d9a8e-0000-4000-8000-000000000001";

/// A worker running one pod on a fake node.
struct Run {
    updates: watch::Sender<Option<Arc<Pod>>>,
    worker: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Run {
    fn start(node: &Arc<FakeNode>, pod: Pod, adopted: Vec<Adopted>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(node, dir.path());
        let pod = Arc::new(pod);
        let (updates, receiver) = watch::channel(Some(Arc::clone(&pod)));
        let worker = tokio::spawn(Worker::new(rt, pod, receiver).run(adopted));
        Self {
            updates,
            worker,
            _dir: dir,
        }
    }

    /// Ends the worker as a stopping agent does, leaving the pod running.
    async fn leave(self) {
        drop(self.updates);
        self.worker.await.unwrap();
    }
}

fn runtime(node: &Arc<FakeNode>, dir: &Path) -> Arc<PodRuntime> {
    Arc::new(PodRuntime {
        node_name: "node-1".to_owned(),
        host_ip: "192.0.2.10".to_owned(),
        containerd: node.clone(),
        images: Images::new(node.clone(), RegistryClient::new(Vec::new()).unwrap()),
        sandboxes: node.clone(),
        client: node.client(),
        dirs: PodDirs {
            run: dir.join("run"),
            data: dir.join("data"),
            logs: dir.join("logs"),
        },
        cgroup_root: "capstan".to_owned(),
        cgroups: node.clone(),
        logs: node.clone(),
        dns: DnsSettings {
            nameserver: Ipv4Addr::new(10, 96, 0, 10),
            cluster_domain: "cluster.local".to_owned(),
            host_resolv_conf: String::new(),
        },
        clock: node.clone(),
    })
}

fn pod(spec: Value) -> Pod {
    pod_with(json!({}), spec)
}

fn pod_with(metadata: Value, spec: Value) -> Pod {
    let mut meta = json!({ "name": "web", "namespace": "default", "uid": UID });
    if let (Some(meta), Value::Object(extra)) = (meta.as_object_mut(), metadata) {
        meta.extend(extra);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
    }))
    .unwrap()
}

fn app(names: &[&str]) -> Value {
    names
        .iter()
        .map(|name| json!({ "name": name, "image": "busybox" }))
        .collect()
}

fn id(name: &str, attempt: u32) -> String {
    ContainerIdentity {
        pod_uid: UID.to_owned(),
        name: name.to_owned(),
        attempt,
    }
    .container_id()
}

type Calls = [(Duration, Call)];

/// The containers started, by name and attempt, in order.
fn starts(calls: &Calls) -> Vec<(String, u32)> {
    calls
        .iter()
        .filter_map(|(_, call)| match call {
            Call::Start { name, attempt, .. } => Some((name.clone(), *attempt)),
            _ => None,
        })
        .collect()
}

fn when(calls: &Calls, wanted: &Call) -> Option<Duration> {
    calls
        .iter()
        .find(|(_, call)| call == wanted)
        .map(|(at, _)| *at)
}

fn position(calls: &Calls, wanted: &Call) -> usize {
    calls
        .iter()
        .position(|(_, call)| call == wanted)
        .unwrap_or_else(|| panic!("no {wanted:?} in {calls:#?}"))
}

fn start_of(name: &str, attempt: u32) -> Call {
    Call::Start {
        id: id(name, attempt),
        name: name.to_owned(),
        attempt,
    }
}

fn exit_of(name: &str, attempt: u32, code: u32) -> Call {
    Call::Exited {
        id: id(name, attempt),
        code,
    }
}

/// The statuses written, in order.
fn statuses(calls: &Calls) -> Vec<Value> {
    calls
        .iter()
        .filter_map(|(_, call)| match call {
            Call::Api { method, path, body }
                if method == "PATCH" && path == "/api/v1/namespaces/default/pods/web/status" =>
            {
                Some(body["status"].clone())
            }
            _ => None,
        })
        .collect()
}

fn last_status(calls: &Calls) -> Value {
    statuses(calls).pop().unwrap_or(Value::Null)
}

/// The status of container `name` in `list` (containerStatuses or
/// initContainerStatuses).
fn container(status: &Value, list: &str, name: &str) -> Value {
    status[list]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

fn app_status(calls: &Calls) -> Value {
    container(&last_status(calls), "containerStatuses", "app")
}

/// `got` is `want`, give or take the timer wheel's millisecond.
fn assert_about(got: Duration, want: Duration, what: &str) {
    assert!(
        got >= want && got <= want + Duration::from_millis(10),
        "{what}: {got:?}, not {want:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_one_at_a_time_before_the_app_containers() {
    let node = FakeNode::new();
    let spec = |grace: u32| {
        json!({
            "initContainers": app(&["first", "second"]),
            "containers": app(&["app", "sidecar"]),
            "terminationGracePeriodSeconds": grace,
        })
    };
    let run = Run::start(&node, pod(spec(30)), Vec::new());
    node.wait_for("the first init container", |c| !starts(c).is_empty())
        .await;
    // However long it runs, and however often the worker syncs (a spec
    // change wakes it), nothing else starts meanwhile.
    run.updates.send_replace(Some(Arc::new(pod(spec(31)))));
    tokio::time::sleep(Duration::from_secs(600)).await;
    let calls = node.calls();
    assert_eq!(starts(&calls), [("first".to_owned(), 0)]);
    assert!(
        position(
            &calls,
            &Call::EnsureSandbox {
                uid: UID.to_owned()
            }
        ) < position(&calls, &start_of("first", 0)),
        "the sandbox comes first"
    );
    let status = last_status(&calls);
    assert_eq!(status["phase"], "Pending");
    assert!(container(&status, "initContainerStatuses", "first")["state"]["running"].is_object());
    assert_eq!(
        container(&status, "containerStatuses", "app")["state"]["waiting"]["reason"],
        "PodInitializing"
    );

    node.exit(&id("first", 0), 0);
    node.wait_for("the second init container", |c| starts(c).len() == 2)
        .await;
    run.updates.send_replace(Some(Arc::new(pod(spec(32)))));
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(starts(&node.calls()).len(), 2, "the app waits for init");

    node.exit(&id("second", 0), 0);
    let calls = node
        .wait_for("the pod running", |c| last_status(c)["phase"] == "Running")
        .await;
    let order = ["first", "second", "app", "sidecar"].map(|n| (n.to_owned(), 0));
    assert_eq!(starts(&calls), order);
    assert!(
        position(&calls, &exit_of("second", 0, 0)) < position(&calls, &start_of("app", 0)),
        "the app starts after the last init container ended"
    );
    run.leave().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashing_container_restarts_at_once_then_after_10_and_20_seconds() {
    let node = FakeNode::new();
    let run = Run::start(
        &node,
        pod(json!({ "containers": app(&["app"]) })),
        Vec::new(),
    );
    node.wait_for("the first start", |c| {
        when(c, &start_of("app", 0)).is_some()
    })
    .await;

    node.exit(&id("app", 0), 1);
    let calls = node
        .wait_for("the first restart", |c| {
            when(c, &start_of("app", 1)).is_some()
        })
        .await;
    assert_eq!(
        when(&calls, &start_of("app", 1)),
        when(&calls, &exit_of("app", 0, 1)),
        "the first restart is immediate"
    );

    for (attempt, backoff) in [(1, 10), (2, 20)] {
        node.exit(&id("app", attempt), 1);
        let message =
            format!("back-off {backoff}s restarting failed container=app pod=web_default({UID})");
        let calls = node
            .wait_for("CrashLoopBackOff", |c| {
                app_status(c)["state"]["waiting"]["message"] == message.as_str()
            })
            .await;
        let app = app_status(&calls);
        assert_eq!(app["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(app["restartCount"], attempt);
        assert_eq!(app["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(app["lastState"]["terminated"]["reason"], "Error");

        let next = start_of("app", attempt + 1);
        let calls = node
            .wait_for("the restart after the back-off", |c| {
                when(c, &next).is_some()
            })
            .await;
        let exited = when(&calls, &exit_of("app", attempt, 1)).unwrap();
        let started = when(&calls, &next).unwrap();
        assert_about(
            started - exited,
            Duration::from_secs(backoff),
            "restart delay",
        );
    }
    let calls = node.calls();
    // Only the current attempt and the one before it are kept.
    let removed_first = Call::Remove { id: id("app", 0) };
    assert!(position(&calls, &removed_first) > position(&calls, &start_of("app", 2)));
    assert_eq!(when(&calls, &Call::Remove { id: id("app", 2) }), None);
    run.leave().await;
}

#[tokio::test(start_paused = true)]
async fn a_start_runc_refuses_is_a_failed_attempt_and_is_tried_again() {
    let node = FakeNode::new();
    node.fail_next_start("app", "tasks.start");
    let run = Run::start(
        &node,
        pod(json!({ "containers": app(&["app"]) })),
        Vec::new(),
    );
    let calls = node
        .wait_for("the container running", |c| {
            app_status(c)["state"]["running"].is_object()
        })
        .await;
    assert_eq!(
        starts(&calls),
        [("app".to_owned(), 0), ("app".to_owned(), 1)]
    );
    let app = app_status(&calls);
    assert_eq!(app["restartCount"], 1);
    assert_eq!(app["lastState"]["terminated"]["reason"], "StartError");
    assert_eq!(app["lastState"]["terminated"]["exitCode"], 128);
    run.leave().await;
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_fails_a_pod_that_never_restarts_and_frees_its_sandbox() {
    let node = FakeNode::new();
    let run = Run::start(
        &node,
        pod(json!({ "containers": app(&["app"]), "restartPolicy": "Never" })),
        Vec::new(),
    );
    node.wait_for("the start", |c| !starts(c).is_empty()).await;
    node.oom_kill(&id("app", 0));
    node.exit(&id("app", 0), 137);
    let calls = node
        .wait_for("the pod failed", |c| last_status(c)["phase"] == "Failed")
        .await;
    let terminated = &app_status(&calls)["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled");
    assert_eq!(terminated["exitCode"], 137);
    assert!(
        when(
            &calls,
            &Call::TeardownSandbox {
                uid: UID.to_owned()
            }
        )
        .is_some()
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(starts(&node.calls()).len(), 1, "Never means never");
    run.leave().await;
}

#[tokio::test(start_paused = true)]
async fn deletion_sends_sigterm_then_sigkill_after_the_grace_period_then_deletes_the_pod() {
    let node = FakeNode::new();
    node.ignore_sigterm();
    let spec = json!({ "containers": app(&["app"]) });
    let run = Run::start(&node, pod(spec.clone()), Vec::new());
    node.wait_for("the start", |c| !starts(c).is_empty()).await;

    let deleting = pod_with(
        json!({
            "deletionTimestamp": "2023-11-14T22:13:20Z",
            "deletionGracePeriodSeconds": 30,
        }),
        spec,
    );
    run.updates.send_replace(Some(Arc::new(deleting)));
    tokio::time::timeout(Duration::from_secs(3600), run.worker)
        .await
        .expect("the worker ends once the pod is deleted")
        .unwrap();

    let calls = node.calls();
    let container = id("app", 0);
    let term = Call::Signal {
        id: container.clone(),
        signal: libc::SIGTERM,
    };
    let kill = Call::Signal {
        id: container.clone(),
        signal: libc::SIGKILL,
    };
    assert_about(
        when(&calls, &kill).unwrap() - when(&calls, &term).unwrap(),
        Duration::from_secs(30),
        "SIGKILL after the grace period",
    );
    let removed = position(&calls, &Call::Remove { id: container });
    let torn_down = position(
        &calls,
        &Call::TeardownSandbox {
            uid: UID.to_owned(),
        },
    );
    assert!(position(&calls, &kill) < removed && removed < torn_down);

    let terminated = &app_status(&calls)["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 137);
    let (at, delete) = calls
        .iter()
        .enumerate()
        .find_map(|(at, (_, call))| match call {
            Call::Api { method, path, body } if method == "DELETE" => Some((at, (path, body))),
            _ => None,
        })
        .expect("the pod is deleted from the API");
    assert!(at > torn_down, "deleted from the API once nothing is left");
    assert_eq!(delete.0, "/api/v1/namespaces/default/pods/web");
    assert_eq!(delete.1["preconditions"]["uid"], UID);
    assert_eq!(delete.1["gracePeriodSeconds"], 0);
}

#[tokio::test(start_paused = true)]
async fn adopted_running_containers_are_watched_not_restarted() {
    let node = FakeNode::new();
    let identity = ContainerIdentity {
        pod_uid: UID.to_owned(),
        name: "app".to_owned(),
        attempt: 3,
    };
    let running = TaskState::Running { pid: 42 };
    let record = node.leave_container(&identity, running);
    let adopted = vec![Adopted {
        record,
        identity,
        state: running,
    }];
    let run = Run::start(&node, pod(json!({ "containers": app(&["app"]) })), adopted);
    let calls = node
        .wait_for("the adopted container's status", |c| {
            app_status(c)["state"]["running"].is_object()
        })
        .await;
    let app = app_status(&calls);
    assert_eq!(app["containerID"], format!("containerd://{}", id("app", 3)));
    assert_eq!(app["restartCount"], 3);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let calls = node.calls();
    assert_eq!(starts(&calls), Vec::<(String, u32)>::new());
    assert!(when(&calls, &Call::Wait { id: id("app", 3) }).is_some());
    assert!(
        when(
            &calls,
            &Call::EnsureSandbox {
                uid: UID.to_owned()
            }
        )
        .is_some(),
        "the sandbox is found again"
    );

    // Watched: its exit is seen, and it restarts as the next attempt.
    node.exit(&id("app", 3), 2);
    let calls = node
        .wait_for("the restart", |c| !starts(c).is_empty())
        .await;
    assert_eq!(starts(&calls), [("app".to_owned(), 4)]);
    run.leave().await;
}
