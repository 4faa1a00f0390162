//! The sweep: leftovers of harness instances whose process is gone (a run
//! that was killed, or crashed past its destructors) are torn down before
//! the first instance of this process starts.

use std::{collections::BTreeSet, fs, sync::Once};

use capstan_agent::cgroup::Hierarchies;

use crate::instance::{CGROUP_PARENT, DATA_BASE, NETNS_PREFIX, RUN_BASE, netns_names, teardown};

static SWEEP: Once = Once::new();

pub(crate) fn once() {
    SWEEP.call_once(sweep_leftovers);
}

/// Tears down every instance whose owning process has exited.
pub fn sweep_leftovers() {
    for id in dead_instances() {
        eprintln!("capstan-tests: sweeping leftovers of instance {id}");
        teardown(&id);
    }
}

/// Ids (`<pid>-<n>`) found in any harness name whose pid is not running.
fn dead_instances() -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for base in [RUN_BASE, DATA_BASE] {
        ids.extend(dir_names(base));
    }
    if let Ok(hierarchies) = Hierarchies::detect() {
        for dir in hierarchies.dirs(CGROUP_PARENT) {
            ids.extend(dir_names(&dir.to_string_lossy()));
        }
    }
    for name in netns_names() {
        if let Some(rest) = name.strip_prefix(NETNS_PREFIX) {
            let mut parts = rest.splitn(3, '-');
            if let (Some(pid), Some(n)) = (parts.next(), parts.next()) {
                ids.insert(format!("{pid}-{n}"));
            }
        }
    }
    ids.retain(|id| owner(id).is_some_and(|pid| !alive(pid)));
    ids
}

fn dir_names(dir: &str) -> Vec<String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

fn owner(id: &str) -> Option<i32> {
    let (pid, n) = id.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_harness_ids_have_owners() {
        assert_eq!(owner("1234-0"), Some(1234));
        assert_eq!(owner("1234"), None);
        assert_eq!(owner("lost+found"), None);
        assert_eq!(owner("12-x"), None);
    }
}
