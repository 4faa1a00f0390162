//! A harness instance: its id and the names and directories derived from
//! it, and the teardown that removes all of them. The same teardown sweeps
//! the leftovers of an instance whose process died.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use capstan_agent::cgroup::Hierarchies;

/// Prefix of every network namespace the harness makes.
pub(crate) const NETNS_PREFIX: &str = "cst-";
/// cgroup (in every hierarchy) under which instances put their processes.
pub(crate) const CGROUP_PARENT: &str = "capstan-test";
pub(crate) const RUN_BASE: &str = "/run/capstan-test";
pub(crate) const DATA_BASE: &str = "/var/lib/capstan-test";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One harness instance's names. Dropping it removes everything named after
/// it; owners (e.g. [`crate::TestNet`]) drop it last.
#[derive(Debug)]
pub struct Instance {
    id: String,
}

impl Instance {
    /// A fresh id for this process, after sweeping dead runs' leftovers.
    pub fn new() -> Self {
        crate::sweep::once();
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self { id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A network namespace name: `cst-<id>-<suffix>`.
    pub fn netns_name(&self, suffix: &str) -> String {
        format!("{NETNS_PREFIX}{}-{suffix}", self.id)
    }

    /// A cgroup path (relative to each hierarchy): `capstan-test/<id>/<suffix>`.
    pub fn cgroup(&self, suffix: &str) -> String {
        format!("{CGROUP_PARENT}/{}/{suffix}", self.id)
    }

    /// A directory for sockets and runtime state, created on demand.
    pub fn run_dir(&self, suffix: &str) -> PathBuf {
        Path::new(RUN_BASE).join(&self.id).join(suffix)
    }

    /// A directory for persistent data (container images), created on demand.
    pub fn data_dir(&self, suffix: &str) -> PathBuf {
        Path::new(DATA_BASE).join(&self.id).join(suffix)
    }
}

impl Default for Instance {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        teardown(&self.id);
    }
}

/// Removes everything named after instance `id`: processes in its cgroups
/// (containerds, shims, containers), mounts under its directories, its
/// network namespaces, cgroups and directories. Best effort: a failure is
/// reported and the rest still removed.
pub(crate) fn teardown(id: &str) {
    let report = |what: &str, err: &dyn std::fmt::Display| {
        eprintln!("capstan-tests: teardown of {id}: {what}: {err}");
    };
    match Hierarchies::detect() {
        Ok(hierarchies) => {
            if let Err(err) = hierarchies.remove_tree(&format!("{CGROUP_PARENT}/{id}")) {
                report("cgroups", &err);
            }
        }
        Err(err) => report("cgroups", &err),
    }
    let dirs = [Path::new(RUN_BASE).join(id), Path::new(DATA_BASE).join(id)];
    for dir in &dirs {
        unmount_below(dir);
    }
    for name in netns_names() {
        if name.starts_with(&format!("{NETNS_PREFIX}{id}-"))
            && let Err(err) = crate::netns::delete(&name)
        {
            report("network namespace", &err);
        }
    }
    for dir in &dirs {
        if let Err(err) = fs::remove_dir_all(dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            report(&dir.display().to_string(), &err);
        }
    }
}

/// Names of the network namespaces in /run/netns.
pub(crate) fn netns_names() -> Vec<String> {
    fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Detaches every mount at or below `dir`, deepest first (overlay rootfs of
/// killed containers, bpffs, ...).
fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}
