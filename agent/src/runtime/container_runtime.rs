//! What the pod layer asks of a container runtime, as a trait: containers
//! started from an image, signalled, waited on and removed, found again by
//! label, and images found or pulled. containerd is the real one; the pod
//! worker's unit tests run on a recording fake.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    ContainerConfig, ContainerRecord, Containerd, ExitStatus, ImportedImage, PullError, Reference,
    RegistryAuth, RegistryClient, RuntimeError, StartedContainer, TaskState,
};

#[async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// Creates the container and starts its task; on failure nothing of it
    /// is left behind.
    async fn start_container(
        &self,
        config: &ContainerConfig,
        image: &ImportedImage,
    ) -> Result<StartedContainer, RuntimeError>;

    /// Sends `signal` to the container's first process.
    async fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError>;

    /// Waits for the task to exit (returns at once if it has).
    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError>;

    /// Deletes the task (which must have exited), the container and its
    /// rootfs; parts already gone are skipped.
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError>;

    /// The containers whose label `key` is `value`.
    async fn containers_labelled(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<ContainerRecord>, RuntimeError>;

    /// The state of container `id`'s task.
    async fn task_state(&self, id: &str) -> Result<TaskState, RuntimeError>;

    /// The image `name` if the runtime holds it.
    async fn local_image(&self, name: &str) -> Result<Option<ImportedImage>, RuntimeError>;

    /// Pulls `image` from its registry and unpacks it.
    async fn pull(
        &self,
        registry: &RegistryClient,
        image: &Reference,
        auth: &RegistryAuth,
    ) -> Result<ImportedImage, PullError>;

    /// SIGTERM, then SIGKILL if the task has not exited within `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<ExitStatus, RuntimeError> {
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
}

// Inherent methods take precedence over trait methods, so each of these
// calls containerd's own.
#[async_trait]
impl ContainerRuntime for Containerd {
    async fn start_container(
        &self,
        config: &ContainerConfig,
        image: &ImportedImage,
    ) -> Result<StartedContainer, RuntimeError> {
        Containerd::start_container(self, config, image).await
    }

    async fn signal(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        Containerd::signal(self, id, signal).await
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        Containerd::wait(self, id).await
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        Containerd::remove_container(self, id).await
    }

    async fn containers_labelled(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<ContainerRecord>, RuntimeError> {
        Containerd::containers_labelled(self, key, value).await
    }

    async fn task_state(&self, id: &str) -> Result<TaskState, RuntimeError> {
        Containerd::task_state(self, id).await
    }

    async fn local_image(&self, name: &str) -> Result<Option<ImportedImage>, RuntimeError> {
        Containerd::local_image(self, name).await
    }

    async fn pull(
        &self,
        registry: &RegistryClient,
        image: &Reference,
        auth: &RegistryAuth,
    ) -> Result<ImportedImage, PullError> {
        Containerd::pull(self, registry, image, auth).await
    }
}
