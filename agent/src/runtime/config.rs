//! What a container is asked to be, in runtime terms: the process, the
//! namespaces it joins, its mounts, its cgroup limits and its privileges.
//! The pod layer translates a Kubernetes container into this; the spec
//! module turns it into an OCI runtime spec.

use std::{collections::HashMap, path::PathBuf};

/// What a container runs and where.
#[derive(Debug, Clone, Default)]
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
    /// Namespaces to join; a kind left out is the container's own.
    pub namespaces: SharedNamespaces,
    /// cgroup path, relative to each hierarchy's root.
    pub cgroups_path: String,
    pub log: LogDestination,
    /// containerd labels of the container record.
    pub labels: HashMap<String, String>,
    /// Mounts beyond the defaults (/proc, /dev, /sys, ...).
    pub mounts: Vec<Mount>,
    pub resources: Resources,
    pub security: Security,
}

/// Paths (e.g. /run/netns/x) of namespaces shared with other containers.
#[derive(Debug, Clone, Default)]
pub struct SharedNamespaces {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

/// Where stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDestination {
    /// Both streams appended to this file as they are.
    File(PathBuf),
    /// Named pipes, opened for reading by someone before the task is
    /// created (the node's log collector).
    Pipes { stdout: PathBuf, stderr: PathBuf },
}

impl Default for LogDestination {
    fn default() -> Self {
        Self::File(PathBuf::from("/dev/null"))
    }
}

impl LogDestination {
    /// The stdout and stderr containerd's shim takes: a `file://` URI, or
    /// a bare path (a named pipe).
    pub fn stdio(&self) -> (String, String) {
        match self {
            Self::File(path) => {
                let uri = format!("file://{}", path.display());
                (uri.clone(), uri)
            }
            Self::Pipes { stdout, stderr } => {
                (stdout.display().to_string(), stderr.display().to_string())
            }
        }
    }
}

/// A mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub destination: String,
    pub source: MountSource,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host file or directory, bound recursively.
    Bind(PathBuf),
}

/// cgroup limits, in the units of the OCI spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// cgroup v1 cpu.shares (runc maps it to v2's cpu.weight).
    pub cpu_shares: Option<u64>,
    /// CFS quota and period in microseconds: the cpu limit.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
}

/// Who the process runs as and what it may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// Overrides the image's user.
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    /// Refuse to start when the process would run as uid 0.
    pub run_as_non_root: bool,
    pub read_only_root: bool,
    /// Every capability, every device, no masked paths.
    pub privileged: bool,
    /// Capabilities beyond containerd's default set ("NET_ADMIN", "ALL").
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    /// False only when the pod allows privilege escalation.
    pub allow_privilege_escalation: bool,
    pub supplemental_groups: Vec<u32>,
}
