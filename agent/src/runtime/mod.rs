//! The container runtime: containerd, reached over its gRPC API.
//!
//! containerd 1.6 (Debian 12's) has no Transfer service, so images are moved
//! into its content store and unpacked into snapshots from here, as `ctr`
//! does on the client side.

mod container;
mod containerd;
mod daemon;
mod image;
mod oci_layout;
mod spec;

pub use container::{ContainerConfig, ExitStatus, StartedContainer};
pub use containerd::{Containerd, RuntimeError};
pub use daemon::{ContainerdDaemon, DaemonConfig};
pub use image::ImportedImage;
pub use oci_layout::{LayoutError, OciArchive};
pub use spec::{SpecError, runtime_spec};

/// The containerd namespace the agent keeps its containers in, as the
/// kubelet does: `ctr -n k8s.io` shows them.
pub const NAMESPACE: &str = "k8s.io";

/// The only snapshotter used; image labels name it for containerd's GC.
pub const SNAPSHOTTER: &str = "overlayfs";
