//! A pod's namespaces: network, IPC and UTS, made once per pod and kept
//! alive by bind mounts so containers can join them and outlive the agent.
//! The network namespace is pinned under /run/netns, as `ip netns` does,
//! so `ip netns exec` reaches a pod; the others beside the pod's files.

use std::{
    fs,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};

use super::NetworkError;

/// Where `ip netns` pins named network namespaces.
const NETNS_DIR: &str = "/run/netns";

/// The pinned namespaces of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNamespaces {
    /// The network namespace's name, as `ip netns` shows it.
    pub netns: String,
    pub net: PathBuf,
    pub ipc: PathBuf,
    pub uts: PathBuf,
}

/// The names of the network namespaces pinned under /run/netns.
pub fn pinned_network_namespaces() -> Vec<String> {
    fs::read_dir(NETNS_DIR)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl PodNamespaces {
    /// The namespaces of a pod: network namespace `netns`, the others in
    /// `dir`. Nothing is made until [`Self::create`].
    pub fn at(netns: String, dir: &Path) -> Self {
        Self {
            net: Path::new(NETNS_DIR).join(&netns),
            ipc: dir.join("ipc"),
            uts: dir.join("uts"),
            netns,
        }
    }

    /// Whether the namespaces are pinned (a previous agent made them).
    pub fn exist(&self) -> bool {
        [&self.net, &self.ipc, &self.uts]
            .iter()
            .all(|path| is_namespace(path))
    }

    /// Makes fresh namespaces with `hostname` set in the UTS one.
    pub fn create(&self, hostname: &str) -> Result<(), NetworkError> {
        prepare_netns_dir()?;
        if let Some(dir) = self.ipc.parent() {
            fs::create_dir_all(dir).map_err(NetworkError::io("creating", dir))?;
        }
        let namespaces = self.clone();
        let hostname = hostname.to_owned();
        // unshare changes only the calling thread, so a thread of its own
        // makes the namespaces and ends; the mounts keep them alive.
        let made = std::thread::spawn(move || namespaces.unshare_and_pin(&hostname))
            .join()
            .unwrap_or(Err(NetworkError::Sys {
                action: "making pod namespaces",
                source: nix::Error::EINTR,
            }));
        if made.is_err() {
            self.remove();
        }
        made
    }

    fn unshare_and_pin(&self, hostname: &str) -> Result<(), NetworkError> {
        unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
            .map_err(|source| NetworkError::Sys {
                action: "unshare",
                source,
            })?;
        nix::unistd::sethostname(hostname).map_err(|source| NetworkError::Sys {
            action: "sethostname",
            source,
        })?;
        for (kind, target) in [("net", &self.net), ("ipc", &self.ipc), ("uts", &self.uts)] {
            fs::File::create(target).map_err(NetworkError::io("creating", target))?;
            let source = format!("/proc/thread-self/ns/{kind}");
            mount(
                Some(source.as_str()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|source| NetworkError::Sys {
                action: "pinning a pod namespace",
                source,
            })?;
        }
        Ok(())
    }

    /// Unpins the namespaces; the kernel frees each when its last process
    /// is gone. Parts already removed are skipped.
    pub fn remove(&self) {
        for path in [&self.net, &self.ipc, &self.uts] {
            let _ = umount2(path, MntFlags::MNT_DETACH);
            let _ = fs::remove_file(path);
        }
    }
}

/// A pinned namespace is an nsfs mount: its inode lives in nsfs, not in the
/// directory's filesystem.
fn is_namespace(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == NSFS_MAGIC)
}

/// Makes /run/netns a shared mount, as `ip netns add` does, so pins made
/// in it reach every mount namespace that sees it.
fn prepare_netns_dir() -> Result<(), NetworkError> {
    fs::create_dir_all(NETNS_DIR).map_err(NetworkError::io("creating", NETNS_DIR))?;
    let shared = || {
        mount(
            None::<&str>,
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if shared().is_ok() {
        return Ok(());
    }
    mount(
        Some(NETNS_DIR),
        NETNS_DIR,
        Some("none"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .and_then(|()| shared())
    .map_err(|source| NetworkError::Sys {
        action: "making /run/netns a shared mount",
        source,
    })
}
