//! Containers and their tasks: create from an imported image and a spec we
//! build, start, signal, wait for the exit, and remove every trace.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use containerd_client::{
    services::v1::{
        Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
        DeleteTaskRequest, KillRequest, StartRequest, WaitRequest, container::Runtime,
        snapshots::PrepareSnapshotRequest,
    },
    tonic::{Code, Status},
    types::Mount,
};
use prost_types::Any;

use super::{
    Containerd, ImportedImage, RuntimeError, SNAPSHOTTER, containerd::Lease, runtime_spec,
};

/// containerd's type URL for an OCI runtime spec.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The shim containerd starts for each container.
const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

/// What a container runs and where.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// containerd container id; also the snapshot key of its rootfs.
    pub id: String,
    /// Replaces the image's entrypoint when not empty.
    pub command: Vec<String>,
    /// Replaces the image's cmd when not empty.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub hostname: String,
    /// A network namespace (e.g. /run/netns/x) to join; None gives the
    /// container a namespace of its own with only loopback.
    pub network_namespace: Option<PathBuf>,
    /// cgroup path, relative to each hierarchy's root.
    pub cgroups_path: String,
    /// stdout and stderr are appended to this file.
    pub log_path: PathBuf,
}

/// A container whose task has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedContainer {
    /// The pid of the container's first process, in the host pid namespace.
    pub pid: u32,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, or 128 + signal number when killed by a signal.
    pub code: u32,
    pub exited_at: SystemTime,
}

impl Containerd {
    /// Creates the container and starts its task. On failure nothing of it
    /// is left behind.
    pub async fn start_container(
        &self,
        config: &ContainerConfig,
        image: &ImportedImage,
    ) -> Result<StartedContainer, RuntimeError> {
        let spec = runtime_spec(config, &image.config)?;
        if let Some(dir) = config.log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
                action: "creating log directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        let started = self.create_and_start(config, image, &spec).await;
        if started.is_err() {
            // Best effort: the error that stopped us is the one to report.
            let _ = self.remove_container(&config.id).await;
        }
        started
    }

    async fn create_and_start(
        &self,
        config: &ContainerConfig,
        image: &ImportedImage,
        spec: &serde_json::Value,
    ) -> Result<StartedContainer, RuntimeError> {
        let lease = self.lease("container").await?;
        let created = self.create_record(config, image, spec, &lease).await;
        // The container record now holds its snapshot; the lease is done.
        self.end_lease(lease).await?;
        let rootfs = created?;

        let log = format!("file://{}", config.log_path.display());
        let tasks = self.client().tasks();
        tasks
            .clone()
            .create(self.request(
                CreateTaskRequest {
                    container_id: config.id.clone(),
                    rootfs,
                    stdout: log.clone(),
                    stderr: log,
                    ..Default::default()
                },
                None,
            ))
            .await
            .map_err(RuntimeError::call("tasks.create"))?;
        let started = tasks
            .clone()
            .start(self.request(
                StartRequest {
                    container_id: config.id.clone(),
                    exec_id: String::new(),
                },
                None,
            ))
            .await
            .map_err(RuntimeError::call("tasks.start"))?;
        Ok(StartedContainer {
            pid: started.into_inner().pid,
        })
    }

    /// Prepares the rootfs snapshot and creates the container record; returns
    /// the mounts of the rootfs.
    async fn create_record(
        &self,
        config: &ContainerConfig,
        image: &ImportedImage,
        spec: &serde_json::Value,
        lease: &Lease,
    ) -> Result<Vec<Mount>, RuntimeError> {
        let prepare = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_owned(),
            key: config.id.clone(),
            parent: image.chain_id.clone(),
            labels: Default::default(),
        };
        let rootfs = self
            .client()
            .snapshots()
            .prepare(self.request(prepare, Some(lease)))
            .await
            .map_err(RuntimeError::call("snapshots.prepare"))?
            .into_inner()
            .mounts;
        let container = Container {
            id: config.id.clone(),
            image: image.name.clone(),
            runtime: Some(Runtime {
                name: RUNC_RUNTIME.to_owned(),
                options: None,
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.to_owned(),
                value: spec.to_string().into_bytes(),
            }),
            snapshotter: SNAPSHOTTER.to_owned(),
            snapshot_key: config.id.clone(),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            container: Some(container),
        };
        self.client()
            .containers()
            .create(self.request(request, Some(lease)))
            .await
            .map_err(RuntimeError::call("containers.create"))?;
        Ok(rootfs)
    }

    /// Sends `signal` to the container's first process.
    pub async fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let request = KillRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
            signal: signal as u32,
            all: false,
        };
        self.client()
            .tasks()
            .kill(self.request(request, None))
            .await
            .map_err(RuntimeError::call("tasks.kill"))?;
        Ok(())
    }

    /// Waits for the task to exit (returns at once if it has).
    pub async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        let request = WaitRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        };
        let reply = self
            .client()
            .tasks()
            .wait(self.request(request, None))
            .await
            .map_err(RuntimeError::call("tasks.wait"))?
            .into_inner();
        Ok(ExitStatus {
            code: reply.exit_status,
            exited_at: reply
                .exited_at
                .and_then(|t| SystemTime::try_from(t).ok())
                .unwrap_or_else(SystemTime::now),
        })
    }

    /// SIGTERM, then SIGKILL if the task has not exited within `grace`.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<ExitStatus, RuntimeError> {
        match self.signal(id, libc::SIGTERM).await {
            Err(err) if err.is_not_found() => return self.wait(id).await,
            other => other?,
        }
        match tokio::time::timeout(grace, self.wait(id)).await {
            Ok(exit) => exit,
            Err(_) => {
                self.signal(id, libc::SIGKILL).await?;
                self.wait(id).await
            }
        }
    }

    /// Deletes the task (which must have exited), the container and its
    /// rootfs snapshot. Parts already gone are skipped.
    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let task = self
            .client()
            .tasks()
            .delete(self.request(
                DeleteTaskRequest {
                    container_id: id.to_owned(),
                },
                None,
            ))
            .await;
        ignore_not_found(task, "tasks.delete")?;
        let container = self
            .client()
            .containers()
            .delete(self.request(DeleteContainerRequest { id: id.to_owned() }, None))
            .await;
        ignore_not_found(container, "containers.delete")?;
        self.remove_snapshot(id).await
    }
}

fn ignore_not_found<T>(result: Result<T, Status>, call: &'static str) -> Result<(), RuntimeError> {
    match result {
        Err(status) if status.code() != Code::NotFound => Err(RuntimeError::call(call)(status)),
        _ => Ok(()),
    }
}
