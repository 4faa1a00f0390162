//! Pods on this node: one worker per pod converges its containers toward
//! the spec and reports their truth as the pod's status; the manager
//! watches the pods bound here, adopts what a previous agent left running
//! and removes what belongs to pods that no longer exist.

mod adopt;
mod backoff;
mod clock;
#[cfg(test)]
mod fake;
mod files;
mod images;
pub mod labels;
mod manager;
mod state;
mod translate;
mod volumes;
mod worker;
#[cfg(test)]
mod worker_tests;

use std::{path::PathBuf, sync::Arc};

pub use clock::{Clock, SystemClock};
pub use files::DnsSettings;
pub use images::Images;
pub use manager::run_pods;
pub use translate::{log_path, pod_log_dir};

use crate::{
    cgroup::Cgroups, logs::ContainerLogs, network::PodSandboxes, runtime::ContainerRuntime,
};

/// Where the agent keeps each pod's things.
#[derive(Debug, Clone)]
pub struct PodDirs {
    /// Per pod: namespace pins, hosts, resolv.conf (under /run: gone at
    /// boot, as the namespaces are).
    pub run: PathBuf,
    /// Per pod: volumes.
    pub data: PathBuf,
    /// Container logs, /var/log/pods.
    pub logs: PathBuf,
}

/// What every pod worker uses.
pub struct PodRuntime {
    pub node_name: String,
    pub host_ip: String,
    pub containerd: Arc<dyn ContainerRuntime>,
    pub images: Images,
    pub sandboxes: Arc<dyn PodSandboxes>,
    pub client: kube::Client,
    pub dirs: PodDirs,
    /// The cgroup (v2, relative to the root) pods are placed under.
    pub cgroup_root: String,
    /// The cgroup hierarchies (v2, and v1 ones on a hybrid host).
    pub cgroups: Arc<dyn Cgroups>,
    /// Where containers' stdout and stderr go.
    pub logs: Arc<dyn ContainerLogs>,
    pub dns: DnsSettings,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PodRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodRuntime")
            .field("node_name", &self.node_name)
            .field("host_ip", &self.host_ip)
            .field("cgroup_root", &self.cgroup_root)
            .finish_non_exhaustive()
    }
}

impl PodRuntime {
    /// The cgroup of pod `uid`, from the hierarchy root.
    pub fn pod_cgroup(&self, uid: &str) -> String {
        format!("/{}/pod{uid}", self.cgroup_root.trim_matches('/'))
    }
}
