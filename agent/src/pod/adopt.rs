//! Picking up after a previous agent: the containers containerd holds for
//! this node, grouped by pod; a worker's slots rebuilt from them (running
//! ones keep running); and the removal of everything belonging to pods
//! that no longer exist.

use std::{collections::HashMap, time::SystemTime};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::{
    PodRuntime,
    labels::{self, ContainerIdentity},
    state::{Slot, State, Terminated, should_restart},
    translate::pod_log_dir,
    volumes,
};
use crate::runtime::{ContainerRecord, RuntimeError, TaskState};

/// A container a previous agent made.
#[derive(Debug, Clone)]
pub(crate) struct Adopted {
    pub record: ContainerRecord,
    pub identity: ContainerIdentity,
    pub state: TaskState,
}

/// Every container of this node in containerd, by pod uid.
pub(super) async fn collect(
    rt: &PodRuntime,
) -> Result<HashMap<String, Vec<Adopted>>, RuntimeError> {
    let records = rt
        .containerd
        .containers_labelled(labels::NODE, &rt.node_name)
        .await?;
    let mut by_pod: HashMap<String, Vec<Adopted>> = HashMap::new();
    for record in records {
        let Some(identity) = ContainerIdentity::from_labels(&record.labels) else {
            continue;
        };
        let state = rt.containerd.task_state(&record.id).await?;
        by_pod
            .entry(identity.pod_uid.clone())
            .or_default()
            .push(Adopted {
                record,
                identity,
                state,
            });
    }
    Ok(by_pod)
}

/// What rebuilding a slot asks of the worker.
#[derive(Debug, Default)]
pub(super) struct Restored {
    /// A running container to wait on.
    pub watch: Option<String>,
    /// Containers to remove: never started, or older than the previous.
    pub remove: Vec<String>,
}

/// Rebuilds `slot` from its containers. `previous` is the slot's status as
/// last written, for times containerd does not keep; `oom` tells whether a
/// container's cgroup saw the OOM killer.
pub(super) fn restore(
    slot: &mut Slot,
    mut containers: Vec<Adopted>,
    previous: Option<&ContainerStatus>,
    restart_policy: &str,
    oom: impl Fn(&str) -> bool,
) -> Restored {
    let mut restored = Restored::default();
    containers.sort_by_key(|c| c.identity.attempt);
    // A container created but never started is started again from scratch.
    containers.retain(|c| {
        let unstarted = matches!(c.state, TaskState::Created | TaskState::Absent);
        if unstarted {
            restored.remove.push(c.record.id.clone());
        }
        !unstarted
    });
    let Some(current) = containers.pop() else {
        return restored;
    };
    let previous_started = |id: &str| {
        previous
            .filter(|p| p.container_id.as_deref() == Some(&format!("containerd://{id}")))
            .and_then(|p| p.state.as_ref())
            .and_then(|s| {
                s.running
                    .as_ref()
                    .and_then(|r| r.started_at.clone())
                    .or_else(|| s.terminated.as_ref().and_then(|t| t.started_at.clone()))
            })
            .map(|t| SystemTime::from(t.0))
    };
    let ended = |adopted: &Adopted, code: u32, exited_at: SystemTime| Terminated {
        container_id: adopted.record.id.clone(),
        exit_code: code as i32,
        reason: match (oom(&adopted.record.id), code) {
            (true, _) => "OOMKilled",
            (false, 0) => "Completed",
            _ => "Error",
        }
        .to_owned(),
        message: None,
        started_at: previous_started(&adopted.record.id).unwrap_or(adopted.record.created_at),
        finished_at: exited_at,
    };
    slot.attempts = current.identity.attempt + 1;
    slot.restart_count = current.identity.attempt;
    if let Some(p) = previous.filter(|p| !p.image_id.is_empty()) {
        slot.image_id = p.image_id.clone();
    }
    match current.state {
        TaskState::Running { .. } => {
            slot.state = State::Running {
                container_id: current.record.id.clone(),
                started_at: previous_started(&current.record.id)
                    .unwrap_or(current.record.created_at),
            };
            restored.watch = Some(current.record.id.clone());
        }
        TaskState::Stopped { code, exited_at } => {
            let t = ended(&current, code, exited_at);
            if should_restart(restart_policy, &t, slot.init) {
                slot.backoff.record_exit(t.finished_at, t.ran_for());
            }
            slot.state = State::Terminated(t);
        }
        TaskState::Created | TaskState::Absent => {}
    }
    if let Some(before) = containers.pop()
        && let TaskState::Stopped { code, exited_at } = before.state
    {
        slot.last = Some(ended(&before, code, exited_at));
    }
    restored
        .remove
        .extend(containers.into_iter().map(|c| c.record.id));
    restored
}

/// Removes what the node holds for pod `uid` beyond its containers:
/// sandbox and address, volumes, files, cgroup and logs.
pub(super) async fn remove_pod_leftovers(rt: &PodRuntime, uid: &str, pod: Option<&Pod>) {
    if let Err(err) = rt.sandboxes.teardown(uid).await {
        tracing::warn!(uid, %err, "removing a pod sandbox");
    }
    if let Err(err) = volumes::remove(&rt.dirs.data.join(uid)) {
        tracing::warn!(uid, %err, "removing pod volumes");
    }
    // The containers are gone: what is left of the pod's cgroup is empty.
    for dir in rt.cgroups.dirs(&rt.pod_cgroup(uid)) {
        if let Err(err) = std::fs::remove_dir(&dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(uid, %err, dir = %dir.display(), "removing the pod cgroup");
        }
    }
    let log_dirs: Vec<std::path::PathBuf> = match pod {
        Some(pod) => vec![pod_log_dir(&rt.dirs.logs, pod)],
        None => std::fs::read_dir(&rt.dirs.logs)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .ends_with(&format!("_{uid}"))
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default(),
    };
    for dir in log_dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes pods this node holds that the API no longer has: their
/// containers (killed at once) and everything else.
pub(super) async fn remove_orphans(
    rt: &PodRuntime,
    orphans: HashMap<String, Vec<Adopted>>,
    known: &std::collections::HashSet<String>,
) {
    for (uid, containers) in orphans {
        tracing::info!(uid, "removing a pod that no longer exists");
        for adopted in containers {
            if matches!(adopted.state, TaskState::Running { .. }) {
                let _ = rt
                    .containerd
                    .stop(&adopted.record.id, std::time::Duration::from_secs(2))
                    .await;
            }
            if let Err(err) = rt.containerd.remove_container(&adopted.record.id).await {
                tracing::warn!(uid, %err, "removing an orphaned container");
            }
        }
        remove_pod_leftovers(rt, &uid, None).await;
    }
    match rt.sandboxes.known_pods() {
        Ok(uids) => {
            for uid in uids.into_iter().filter(|uid| !known.contains(uid)) {
                tracing::info!(uid, "removing an orphaned pod sandbox");
                remove_pod_leftovers(rt, &uid, None).await;
            }
        }
        Err(err) => tracing::warn!(%err, "listing pod sandboxes"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn adopted(attempt: u32, state: TaskState) -> Adopted {
        let identity = ContainerIdentity {
            pod_uid: "u".to_owned(),
            name: "app".to_owned(),
            attempt,
        };
        Adopted {
            record: ContainerRecord {
                id: identity.container_id(),
                labels: HashMap::new(),
                image: "img".to_owned(),
                created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(100 + u64::from(attempt)),
            },
            identity,
            state,
        }
    }

    #[test]
    fn a_running_container_is_kept_with_its_history() {
        let mut slot = Slot::new("app", "img", false, "ContainerCreating");
        let stopped = TaskState::Stopped {
            code: 1,
            exited_at: SystemTime::UNIX_EPOCH + Duration::from_secs(150),
        };
        let containers = vec![
            adopted(0, stopped),
            adopted(1, stopped),
            adopted(2, TaskState::Running { pid: 42 }),
        ];
        let ids: Vec<String> = containers.iter().map(|c| c.record.id.clone()).collect();
        let restored = restore(&mut slot, containers, None, "Always", |_| false);
        assert_eq!(restored.watch.as_deref(), Some(ids[2].as_str()));
        assert_eq!(restored.remove, vec![ids[0].clone()]);
        assert_eq!((slot.restart_count, slot.attempts), (2, 3));
        assert!(
            matches!(&slot.state, State::Running { container_id, .. } if *container_id == ids[2])
        );
        assert_eq!(slot.last.as_ref().map(|t| t.exit_code), Some(1));
    }

    #[test]
    fn an_unstarted_container_is_dropped_and_an_exited_one_reported() {
        let mut slot = Slot::new("app", "img", false, "ContainerCreating");
        let exited = TaskState::Stopped {
            code: 137,
            exited_at: SystemTime::UNIX_EPOCH + Duration::from_secs(200),
        };
        let containers = vec![adopted(0, exited), adopted(1, TaskState::Created)];
        let restored = restore(&mut slot, containers, None, "Never", |_| true);
        assert_eq!(restored.remove.len(), 1);
        assert_eq!(restored.watch, None);
        let State::Terminated(t) = &slot.state else {
            panic!("{:?}", slot.state)
        };
        assert_eq!((t.exit_code, t.reason.as_str()), (137, "OOMKilled"));
        assert_eq!(slot.attempts, 1);
    }
}
