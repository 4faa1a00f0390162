//! The container runtime: containerd, reached over its gRPC API, and the
//! `ContainerRuntime` trait the pod layer sees it through.
//!
//! containerd 1.6 (Debian 12's) has no Transfer service, so images are moved
//! into its content store and unpacked into snapshots from here, as `ctr`
//! does on the client side.

mod config;
mod container;
mod container_runtime;
mod containerd;
mod daemon;
mod image;
mod inventory;
mod local_image;
mod oci_layout;
mod pull;
mod reference;
mod registry;
mod spec;

pub use config::{
    ContainerConfig, LogDestination, Mount, MountSource, Resources, Security, SharedNamespaces,
};
pub use container::{ExitStatus, StartedContainer};
pub use container_runtime::ContainerRuntime;
pub use containerd::{Containerd, RuntimeError};
pub use daemon::{ContainerdDaemon, DaemonConfig};
pub use image::ImportedImage;
pub use inventory::{ContainerRecord, TaskState};
pub use oci_layout::{LayoutError, OciArchive};
pub use pull::PullError;
pub use reference::{InvalidReference, Reference};
pub use registry::{Credentials, RegistryAuth, RegistryClient, RegistryError};
pub use spec::{ProcessUser, RootfsFiles, SpecError, process_user, runtime_spec};

/// The containerd namespace the agent keeps its containers in, as the
/// kubelet does: `ctr -n k8s.io` shows them.
pub const NAMESPACE: &str = "k8s.io";

/// The only snapshotter used; image labels name it for containerd's GC.
pub const SNAPSHOTTER: &str = "overlayfs";
