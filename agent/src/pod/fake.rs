//! A node made of fakes for the pod worker's unit tests: containerd,
//! sandboxes, cgroups, the log collector, the clock and control's API. Every
//! call lands in one ordered log with the (tokio, paused) time it was made;
//! the test scripts what containerd would do: a task exits with a code, a
//! start fails, a container is found from a previous agent.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;
use containerd_client::tonic::Status;
use http_body_util::{BodyExt, Full};
use tokio::{sync::watch, time::Instant};

use super::{
    Clock,
    labels::{self, ContainerIdentity},
};
use crate::{
    cgroup::Cgroups,
    logs::{ContainerLogs, LogsError},
    network::{NetworkError, PodNamespaces, PodSandboxes, Sandbox},
    runtime::{
        ContainerConfig, ContainerRecord, ContainerRuntime, ExitStatus, ImportedImage,
        LogDestination, PullError, Reference, RegistryAuth, RegistryClient, RuntimeError,
        StartedContainer, TaskState,
    },
};

/// What the node was asked, and what the test made happen.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Start {
        id: String,
        name: String,
        attempt: u32,
    },
    Signal {
        id: String,
        signal: i32,
    },
    Wait {
        id: String,
    },
    Remove {
        id: String,
    },
    List {
        key: String,
        value: String,
    },
    TaskState {
        id: String,
    },
    EnsureSandbox {
        uid: String,
    },
    TeardownSandbox {
        uid: String,
    },
    Api {
        method: String,
        path: String,
        body: serde_json::Value,
    },
    /// Not a call: the test ended a task.
    Exited {
        id: String,
        code: u32,
    },
}

#[derive(Debug)]
struct Container {
    record: ContainerRecord,
    task: TaskState,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<(Duration, Call)>,
    containers: HashMap<String, Container>,
    /// Container names whose next start fails, and the containerd call
    /// that fails.
    start_failures: VecDeque<(String, &'static str)>,
    sandboxes: Vec<String>,
    oom_killed: HashSet<String>,
    ignores_sigterm: bool,
}

#[derive(Debug)]
pub struct FakeNode {
    state: Mutex<State>,
    /// Bumped on every call and every scripted change.
    changed: watch::Sender<()>,
    epoch: Instant,
}

/// The wall-clock time the fake clock starts at.
const WALL_EPOCH: Duration = Duration::from_secs(1_700_000_000);

impl FakeNode {
    /// A node whose clock starts now (on tokio's clock, best paused).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            changed: watch::Sender::new(()),
            epoch: Instant::now(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, call: Call) {
        let at = self.epoch.elapsed();
        self.state().calls.push((at, call));
        self.changed.send_replace(());
    }

    /// Every call so far, with its time since the node was made.
    pub fn calls(&self) -> Vec<(Duration, Call)> {
        self.state().calls.clone()
    }

    /// Waits (on tokio's clock, at most an hour) until `done` holds for the
    /// calls so far; returns them.
    pub async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[(Duration, Call)]) -> bool,
    ) -> Vec<(Duration, Call)> {
        let mut changes = self.changed.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(3600), async {
            loop {
                let calls = self.calls();
                if done(&calls) {
                    return calls;
                }
                let _ = changes.changed().await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("never saw {what}; calls: {:#?}", self.calls()))
    }

    /// Ends container `id`'s task with `code`.
    pub fn exit(&self, id: &str, code: u32) {
        let exited_at = self.now();
        {
            let mut state = self.state();
            let container = state
                .containers
                .get_mut(id)
                .unwrap_or_else(|| panic!("no container {id}"));
            assert!(
                matches!(container.task, TaskState::Running { .. }),
                "container {id} is not running"
            );
            container.task = TaskState::Stopped { code, exited_at };
        }
        self.record(Call::Exited {
            id: id.to_owned(),
            code,
        });
    }

    /// The next start of container `name` fails in containerd call `call`.
    pub fn fail_next_start(&self, name: &str, call: &'static str) {
        self.state()
            .start_failures
            .push_back((name.to_owned(), call));
    }

    /// Tasks go on running after SIGTERM (SIGKILL still ends them).
    pub fn ignore_sigterm(&self) {
        self.state().ignores_sigterm = true;
    }

    /// Records that the OOM killer struck in container `id`'s cgroup.
    pub fn oom_kill(&self, id: &str) {
        self.state().oom_killed.insert(id.to_owned());
    }

    /// A container a previous agent left, as containerd lists it (of pod
    /// default/web on node-1, the names the tests use).
    pub fn leave_container(
        &self,
        identity: &ContainerIdentity,
        task: TaskState,
    ) -> ContainerRecord {
        let labels = labels::container_labels("node-1", "default", "web", identity, false);
        let record = ContainerRecord {
            id: identity.container_id(),
            labels,
            image: "docker.io/library/busybox:latest".to_owned(),
            created_at: self.now(),
        };
        self.state().containers.insert(
            record.id.clone(),
            Container {
                record: record.clone(),
                task,
            },
        );
        record
    }

    /// A `kube::Client` whose requests are recorded here and answered at
    /// once: a write returns its body as the object, anything else is 404.
    pub fn client(self: &Arc<Self>) -> kube::Client {
        let node = Arc::clone(self);
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let node = Arc::clone(&node);
            async move {
                let method = request.method().to_string();
                let path = request.uri().path().to_owned();
                let bytes = request.into_body().collect().await?.to_bytes();
                let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                node.record(Call::Api {
                    method: method.clone(),
                    path,
                    body: body.clone(),
                });
                let (status, answer) = match method.as_str() {
                    "PATCH" | "DELETE" => {
                        let mut object = match body {
                            serde_json::Value::Object(object) => object,
                            _ => serde_json::Map::new(),
                        };
                        object.insert("apiVersion".to_owned(), "v1".into());
                        object.insert("kind".to_owned(), "Pod".into());
                        object
                            .entry("metadata")
                            .or_insert_with(|| serde_json::json!({}));
                        (200, serde_json::Value::Object(object))
                    }
                    _ => (
                        404,
                        serde_json::json!({
                            "apiVersion": "v1", "kind": "Status", "status": "Failure",
                            "reason": "NotFound", "code": 404, "message": "not found",
                        }),
                    ),
                };
                let response = http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(answer.to_string())))?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response)
            }
        });
        kube::Client::new(service, "default")
    }

    fn image(name: &str) -> ImportedImage {
        ImportedImage {
            name: name.to_owned(),
            digest: "sha256:feed".to_owned(),
            config: Default::default(),
            chain_id: "sha256:cafe".to_owned(),
        }
    }

    fn not_found(call: &'static str, id: &str) -> RuntimeError {
        RuntimeError::call(call)(Status::not_found(format!("container {id}")))
    }
}

impl Clock for FakeNode {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + WALL_EPOCH + self.epoch.elapsed()
    }
}

#[async_trait]
impl ContainerRuntime for FakeNode {
    async fn start_container(
        &self,
        config: &ContainerConfig,
        image: &ImportedImage,
    ) -> Result<StartedContainer, RuntimeError> {
        let identity = ContainerIdentity::from_labels(&config.labels)
            .unwrap_or_else(|| panic!("container {} has no identity labels", config.id));
        self.record(Call::Start {
            id: config.id.clone(),
            name: identity.name.clone(),
            attempt: identity.attempt,
        });
        let mut state = self.state();
        let failure = state
            .start_failures
            .iter()
            .position(|(name, _)| *name == identity.name)
            .and_then(|at| state.start_failures.remove(at));
        if let Some((_, call)) = failure {
            return Err(RuntimeError::call(call)(Status::unknown(
                "scripted failure",
            )));
        }
        let pid = 1000 + state.containers.len() as u32;
        let record = ContainerRecord {
            id: config.id.clone(),
            labels: config.labels.clone(),
            image: image.name.clone(),
            created_at: self.now(),
        };
        state.containers.insert(
            config.id.clone(),
            Container {
                record,
                task: TaskState::Running { pid },
            },
        );
        Ok(StartedContainer { pid })
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        self.record(Call::Signal {
            id: id.to_owned(),
            signal,
        });
        let exited_at = self.now();
        {
            let mut state = self.state();
            let ignores = state.ignores_sigterm && signal == libc::SIGTERM;
            let container = state
                .containers
                .get_mut(id)
                .ok_or_else(|| Self::not_found("tasks.kill", id))?;
            if matches!(container.task, TaskState::Running { .. }) && !ignores {
                container.task = TaskState::Stopped {
                    code: 128 + signal as u32,
                    exited_at,
                };
            }
        }
        self.changed.send_replace(());
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        let mut changes = self.changed.subscribe();
        self.record(Call::Wait { id: id.to_owned() });
        loop {
            match self.state().containers.get(id).map(|c| c.task) {
                None => return Err(Self::not_found("tasks.wait", id)),
                Some(TaskState::Stopped { code, exited_at }) => {
                    return Ok(ExitStatus { code, exited_at });
                }
                Some(_) => {}
            }
            let _ = changes.changed().await;
        }
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.record(Call::Remove { id: id.to_owned() });
        let mut state = self.state();
        if let Some(container) = state.containers.get(id)
            && matches!(container.task, TaskState::Running { .. })
        {
            // containerd refuses to delete a running task.
            return Err(RuntimeError::call("tasks.delete")(
                Status::failed_precondition(format!("task {id} is running")),
            ));
        }
        state.containers.remove(id);
        Ok(())
    }

    async fn containers_labelled(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<ContainerRecord>, RuntimeError> {
        self.record(Call::List {
            key: key.to_owned(),
            value: value.to_owned(),
        });
        Ok(self
            .state()
            .containers
            .values()
            .filter(|c| c.record.labels.get(key).map(String::as_str) == Some(value))
            .map(|c| c.record.clone())
            .collect())
    }

    async fn task_state(&self, id: &str) -> Result<TaskState, RuntimeError> {
        self.record(Call::TaskState { id: id.to_owned() });
        Ok(self
            .state()
            .containers
            .get(id)
            .map_or(TaskState::Absent, |c| c.task))
    }

    async fn local_image(&self, name: &str) -> Result<Option<ImportedImage>, RuntimeError> {
        Ok(Some(Self::image(name)))
    }

    async fn pull(
        &self,
        _registry: &RegistryClient,
        image: &Reference,
        _auth: &RegistryAuth,
    ) -> Result<ImportedImage, PullError> {
        Ok(Self::image(&image.to_string()))
    }
}

#[async_trait]
impl PodSandboxes for FakeNode {
    async fn ensure(&self, uid: &str, _hostname: &str) -> Result<Sandbox, NetworkError> {
        self.record(Call::EnsureSandbox {
            uid: uid.to_owned(),
        });
        let mut state = self.state();
        if !state.sandboxes.iter().any(|known| known == uid) {
            state.sandboxes.push(uid.to_owned());
        }
        let index = state.sandboxes.iter().position(|known| known == uid);
        let host = 2 + index.unwrap_or_default() as u8;
        Ok(Sandbox {
            namespaces: PodNamespaces::at(
                format!("fake-{uid}"),
                &PathBuf::from("/nonexistent").join(uid),
            ),
            ip: Ipv4Addr::new(10, 244, 1, host),
        })
    }

    async fn teardown(&self, uid: &str) -> Result<(), NetworkError> {
        self.record(Call::TeardownSandbox {
            uid: uid.to_owned(),
        });
        self.state().sandboxes.retain(|known| known != uid);
        Ok(())
    }

    fn known_pods(&self) -> Result<Vec<String>, NetworkError> {
        Ok(self.state().sandboxes.clone())
    }
}

impl Cgroups for FakeNode {
    fn dirs(&self, _cgroup: &str) -> Vec<PathBuf> {
        Vec::new()
    }

    fn oom_killed(&self, cgroup: &str) -> bool {
        self.state()
            .oom_killed
            .iter()
            .any(|id| cgroup.ends_with(&format!("/{id}")))
    }
}

#[async_trait]
impl ContainerLogs for FakeNode {
    async fn open(&self, _id: &str, log: &Path) -> Result<LogDestination, LogsError> {
        Ok(LogDestination::File(log.to_owned()))
    }
}
