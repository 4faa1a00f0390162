//! cgroup hierarchies as this host mounts them: pure v2 at /sys/fs/cgroup,
//! or hybrid (v1 controllers plus v2 at /sys/fs/cgroup/unified). A cgroup
//! path such as `/capstan/pod1` exists once per hierarchy. Also what the
//! agent reads of a cgroup: its processes, and whether the OOM killer
//! struck in it.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no cgroup v2 hierarchy is mounted: capstan needs one (eBPF programs attach there)")]
    NoUnified,
    #[error("{action} {path}: {source}")]
    Write {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The mounted cgroup hierarchies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    /// The v2 hierarchy's mount point.
    pub unified: PathBuf,
    /// Mount points of v1 hierarchies (empty on a pure v2 host).
    pub v1: Vec<PathBuf>,
}

impl Hierarchies {
    pub fn detect() -> Result<Self, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(|source| CgroupError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_mountinfo(&text)
    }

    /// Parses /proc/self/mountinfo (proc(5)): field 5 is the mount point;
    /// after the " - " separator come the filesystem type and source.
    pub fn from_mountinfo(text: &str) -> Result<Self, CgroupError> {
        let mut unified = None;
        let mut v1 = Vec::new();
        for line in text.lines() {
            let Some((mount, fs)) = line.split_once(" - ") else {
                continue;
            };
            let Some(point) = mount.split(' ').nth(4) else {
                continue;
            };
            match fs.split(' ').next() {
                Some("cgroup2") => unified = Some(PathBuf::from(point)),
                Some("cgroup") => v1.push(PathBuf::from(point)),
                _ => {}
            }
        }
        Ok(Self {
            unified: unified.ok_or(CgroupError::NoUnified)?,
            v1,
        })
    }

    /// Every directory of `cgroup` (e.g. "capstan/pod1"), v2 first.
    pub fn dirs(&self, cgroup: &str) -> Vec<PathBuf> {
        let relative = cgroup.trim_start_matches('/');
        std::iter::once(&self.unified)
            .chain(&self.v1)
            .map(|root| root.join(relative))
            .collect()
    }

    /// Kills every process left in `cgroup` and its descendants, in every
    /// hierarchy, then removes the directories. Missing ones are skipped.
    pub fn remove_tree(&self, cgroup: &str) -> Result<(), CgroupError> {
        for dir in self.dirs(cgroup) {
            remove_dir_tree(&dir)?;
        }
        Ok(())
    }
}

/// What pod workers read of cgroups: a trait so that their unit tests run
/// on a fake instead of the host's hierarchies.
pub trait Cgroups: Send + Sync {
    /// Every directory of `cgroup` (e.g. "capstan/pod1"), v2 first.
    fn dirs(&self, cgroup: &str) -> Vec<PathBuf>;

    /// Whether the kernel's OOM killer struck in `cgroup`.
    fn oom_killed(&self, cgroup: &str) -> bool;
}

impl Cgroups for Hierarchies {
    fn dirs(&self, cgroup: &str) -> Vec<PathBuf> {
        Hierarchies::dirs(self, cgroup)
    }

    /// Whether `cgroup` counted an OOM kill in any hierarchy (its
    /// directories last until the task is deleted): `oom_kill` in v2's
    /// memory.events, or in v1's memory.oom_control.
    fn oom_killed(&self, cgroup: &str) -> bool {
        self.dirs(cgroup).iter().any(|dir| {
            ["memory.events", "memory.oom_control"].iter().any(|file| {
                fs::read_to_string(dir.join(file)).is_ok_and(|text| {
                    text.lines().any(|line| {
                        line.strip_prefix("oom_kill ")
                            .and_then(|n| n.trim().parse::<u64>().ok())
                            .is_some_and(|n| n > 0)
                    })
                })
            })
        })
    }
}

fn remove_dir_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_dir_tree(&entry.path())?;
        }
    }
    // A cgroup with live members cannot be removed: kill them and wait for
    // the kernel to reap them out of the cgroup.
    for _ in 0..100 {
        let pids = procs(dir)?;
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    match fs::remove_dir(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(CgroupError::Write {
            action: "removing cgroup",
            path: dir.to_owned(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// Processes directly in the cgroup at `dir`.
pub fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 25 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:28 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
34 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
35 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
";

    const PURE_V2: &str = "\
30 25 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn finds_hybrid_hierarchies() {
        let found = Hierarchies::from_mountinfo(HYBRID).unwrap();
        assert_eq!(found.unified, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(
            found.dirs("/capstan/p1"),
            [
                "/sys/fs/cgroup/unified/capstan/p1",
                "/sys/fs/cgroup/memory/capstan/p1",
                "/sys/fs/cgroup/cpu,cpuacct/capstan/p1"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn finds_a_pure_v2_hierarchy() {
        let found = Hierarchies::from_mountinfo(PURE_V2).unwrap();
        assert_eq!(found.unified, PathBuf::from("/sys/fs/cgroup"));
        assert!(found.v1.is_empty());
    }

    #[test]
    fn an_oom_kill_is_read_from_v2_or_v1_counters() {
        let root = tempfile::tempdir().unwrap();
        let hierarchies = Hierarchies {
            unified: root.path().join("unified"),
            v1: vec![root.path().join("memory")],
        };
        let write = |dir: &str, file: &str, text: &str| {
            let dir = root.path().join(dir);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(file), text).unwrap();
        };
        write(
            "unified/pod/a",
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        );
        assert!(
            !hierarchies.oom_killed("/pod/a"),
            "an OOM event that killed nothing"
        );
        write("unified/pod/b", "memory.events", "oom 1\noom_kill 1\n");
        assert!(hierarchies.oom_killed("/pod/b"));
        write(
            "memory/pod/c",
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        assert!(hierarchies.oom_killed("/pod/c"), "v1's counter");
        assert!(!hierarchies.oom_killed("/pod/missing"));
    }

    #[test]
    fn refuses_a_host_without_v2() {
        let v1_only = HYBRID.replace("cgroup2 cgroup2", "tmpfs tmpfs");
        assert!(matches!(
            Hierarchies::from_mountinfo(&v1_only),
            Err(CgroupError::NoUnified)
        ));
    }
}
