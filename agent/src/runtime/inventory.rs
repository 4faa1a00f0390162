//! What containerd holds: the containers carrying a label, and the state of
//! a container's task. The agent rebuilds its view of running pods from
//! these after a restart.

use std::{collections::HashMap, time::SystemTime};

use containerd_client::{
    services::v1::{GetRequest, ListContainersRequest},
    types::v1::Status as ProcessStatus,
};

use super::{Containerd, RuntimeError};

/// A container record as containerd keeps it.
#[derive(Debug, Clone)]
pub struct ContainerRecord {
    pub id: String,
    pub labels: HashMap<String, String>,
    pub image: String,
    pub created_at: SystemTime,
}

/// Where a container's task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// No task: never started, or deleted.
    Absent,
    /// Created but not started (the agent died between the two).
    Created,
    Running {
        pid: u32,
    },
    Stopped {
        code: u32,
        exited_at: SystemTime,
    },
}

impl Containerd {
    /// The containers whose label `key` is `value`.
    pub async fn containers_labelled(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<ContainerRecord>, RuntimeError> {
        let filter = format!("labels.\"{key}\"=={value}");
        let reply = self
            .client()
            .containers()
            .list(self.request(
                ListContainersRequest {
                    filters: vec![filter],
                },
                None,
            ))
            .await
            .map_err(RuntimeError::call("containers.list"))?
            .into_inner();
        Ok(reply
            .containers
            .into_iter()
            .map(|c| ContainerRecord {
                id: c.id,
                labels: c.labels,
                image: c.image,
                created_at: c
                    .created_at
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            })
            .collect())
    }

    /// The state of container `id`'s task.
    pub async fn task_state(&self, id: &str) -> Result<TaskState, RuntimeError> {
        let reply = self
            .client()
            .tasks()
            .get(self.request(
                GetRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                },
                None,
            ))
            .await;
        let process = match reply {
            Ok(reply) => reply.into_inner().process,
            Err(status) if status.code() == containerd_client::tonic::Code::NotFound => None,
            Err(status) => return Err(RuntimeError::call("tasks.get")(status)),
        };
        let Some(process) = process else {
            return Ok(TaskState::Absent);
        };
        Ok(match ProcessStatus::try_from(process.status) {
            Ok(ProcessStatus::Created) => TaskState::Created,
            Ok(ProcessStatus::Stopped) => TaskState::Stopped {
                code: process.exit_status,
                exited_at: process
                    .exited_at
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .unwrap_or_else(SystemTime::now),
            },
            // Running, paused, or a state containerd could not tell: the
            // process is there.
            _ => TaskState::Running { pid: process.pid },
        })
    }
}
