//! Containers and their tasks: create from an imported image and a spec we
//! build, start, signal, wait for the exit, and remove every trace.

use std::{path::PathBuf, time::SystemTime};

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
    ContainerConfig, Containerd, ImportedImage, RuntimeError, SNAPSHOTTER,
    containerd::Lease,
    spec::{RootfsFiles, process_user, runtime_spec},
};

/// containerd's type URL for an OCI runtime spec.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The shim containerd starts for each container.
const RUNC_RUNTIME: &str = "io.containerd.runc.v2";

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
        if let super::LogDestination::File(path) = &config.log
            && let Some(dir) = path.parent()
        {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
                action: "creating log directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        let started = self.create_and_start(config, image).await;
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
    ) -> Result<StartedContainer, RuntimeError> {
        let lease = self.lease("container").await?;
        let created = self.create_record(config, image, &lease).await;
        // The container record now holds its snapshot; the lease is done.
        self.end_lease(lease).await?;
        let rootfs = created?;

        let (stdout, stderr) = config.log.stdio();
        let tasks = self.client().tasks();
        tasks
            .clone()
            .create(self.request(
                CreateTaskRequest {
                    container_id: config.id.clone(),
                    rootfs,
                    stdout,
                    stderr,
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

    /// Prepares the rootfs snapshot, builds the spec (the user may need the
    /// image's /etc/passwd) and creates the container record; returns the
    /// mounts of the rootfs.
    async fn create_record(
        &self,
        config: &ContainerConfig,
        image: &ImportedImage,
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
        let image_user = image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .unwrap_or_default();
        let user = process_user(&image_user, &config.security, &LayerFiles::new(&rootfs))?;
        let spec = runtime_spec(config, &image.config, &user)?;
        let container = Container {
            id: config.id.clone(),
            labels: config.labels.clone(),
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

/// The files of a prepared (not yet mounted) rootfs, read from the
/// directories of its overlay: the writable layer, then the image's layers
/// from the top down.
struct LayerFiles {
    dirs: Vec<PathBuf>,
}

impl LayerFiles {
    fn new(mounts: &[Mount]) -> Self {
        let mut dirs = Vec::new();
        for mount in mounts {
            if mount.r#type == "bind" {
                dirs.push(PathBuf::from(&mount.source));
                continue;
            }
            for option in &mount.options {
                if let Some(upper) = option.strip_prefix("upperdir=") {
                    dirs.insert(0, PathBuf::from(upper));
                } else if let Some(lower) = option.strip_prefix("lowerdir=") {
                    dirs.extend(lower.split(':').map(PathBuf::from));
                }
            }
        }
        Self { dirs }
    }
}

impl RootfsFiles for LayerFiles {
    fn read(&self, path: &str) -> Option<String> {
        let relative = path.trim_start_matches('/');
        self.dirs
            .iter()
            .find_map(|dir| std::fs::read_to_string(dir.join(relative)).ok())
    }
}
