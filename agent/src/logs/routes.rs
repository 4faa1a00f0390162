//! The logs routes of the agent's HTTPS server: container logs at the
//! kubelet's path, for control to proxy `kubectl logs` to.

use std::{path::PathBuf, sync::Arc, time::SystemTime};

use axum::{
    Router,
    body::Body,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::StreamExt;
use serde::Deserialize;

use super::reader::{LogOptions, stream};
use crate::{
    pod::labels::ContainerIdentity,
    runtime::{Containerd, TaskState},
};

#[derive(Debug, Clone)]
struct LogState {
    logs: PathBuf,
    containerd: Containerd,
}

/// `/containerLogs/<namespace>/<pod>/<container>`, read from the pod log
/// directory `logs`.
pub fn routes(logs: PathBuf, containerd: Containerd) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(Arc::new(LogState { logs, containerd }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    follow: Option<String>,
    previous: Option<String>,
    timestamps: Option<String>,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    limit_bytes: Option<i64>,
}

fn flag(value: &Option<String>) -> bool {
    matches!(value.as_deref(), Some("true" | "1" | ""))
}

fn plain(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], message).into_response()
}

async fn container_logs(
    State(state): State<Arc<LogState>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let Some((pod_dir, uid)) = find_pod(&state.logs, &namespace, &pod) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" in namespace \"{namespace}\" has no logs on this node"),
        );
    };
    let attempts = attempts(&pod_dir.join(&container));
    let previous = flag(&query.previous);
    let attempt = if previous {
        attempts.iter().rev().nth(1).copied()
    } else {
        attempts.last().copied()
    };
    let Some(attempt) = attempt else {
        let message = if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" has no logs yet")
        };
        return plain(StatusCode::BAD_REQUEST, message);
    };
    let since = match (query.since_seconds, query.since_time.as_deref()) {
        (Some(seconds), _) => {
            Some(SystemTime::now() - std::time::Duration::from_secs(seconds.max(0) as u64))
        }
        (None, Some(time)) => match humantime::parse_rfc3339_weak(time) {
            Ok(time) => Some(time),
            Err(_) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("sinceTime {time:?} is not an RFC 3339 time"),
                );
            }
        },
        _ => None,
    };
    let options = LogOptions {
        tail_lines: query.tail_lines.map(|n| n.max(0) as usize),
        since,
        timestamps: flag(&query.timestamps),
        limit_bytes: query.limit_bytes.map(|n| n.max(0) as usize),
        follow: flag(&query.follow) && !previous,
    };
    let id = ContainerIdentity {
        pod_uid: uid,
        name: container.clone(),
        attempt,
    }
    .container_id();
    let containerd = state.containerd.clone();
    let running = move || {
        let containerd = containerd.clone();
        let id = id.clone();
        async move {
            matches!(
                containerd.task_state(&id).await,
                Ok(TaskState::Running { .. })
            )
        }
    };
    let path = crate::pod::log_path(&pod_dir, &container, attempt);
    let chunks = tokio_stream::wrappers::ReceiverStream::new(stream(path, options, running))
        .map(Ok::<_, std::convert::Infallible>);
    (
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(chunks),
    )
        .into_response()
}

/// The newest log directory of pod `namespace/name`, and its uid.
fn find_pod(logs: &std::path::Path, namespace: &str, name: &str) -> Option<(PathBuf, String)> {
    let prefix = format!("{namespace}_{name}_");
    std::fs::read_dir(logs)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let uid = file_name.strip_prefix(&prefix)?.to_owned();
            let modified = entry.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, entry.path(), uid))
        })
        .max_by_key(|(modified, _, _)| *modified)
        .map(|(_, path, uid)| (path, uid))
}

/// The attempts with a log file in a container's directory, in order.
fn attempts(dir: &std::path::Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".log")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_unstable();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_pod_directory_and_its_attempts_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let pod = dir.path().join("shop_web_uid-1");
        std::fs::create_dir_all(pod.join("app")).unwrap();
        for attempt in ["0.log", "1.log", "10.log"] {
            std::fs::write(pod.join("app").join(attempt), "").unwrap();
        }
        let (found, uid) = find_pod(dir.path(), "shop", "web").unwrap();
        assert_eq!((found, uid.as_str()), (pod.clone(), "uid-1"));
        assert_eq!(attempts(&pod.join("app")), vec![0, 1, 10]);
        assert!(find_pod(dir.path(), "shop", "we").is_none());
    }
}
