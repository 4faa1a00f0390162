//! The scheduler's writes, sent through the API router in-process so they
//! pass the same authorisation, defaulting and validation as any client's:
//! bindings, the PodScheduled=False condition of an unschedulable pod, and
//! events (FailedScheduling, Scheduled) through the event recorder.

use axum::{Router, http::Method};
use serde_json::json;
use tokio::task::JoinSet;

use super::pod_info::PodInfo;
pub use crate::local_api::LocalApiError as WriteError;
use crate::{
    clock::now,
    events::{EventRecorder, Involved},
    local_api::LocalApi,
};

/// Who the scheduler's events say they come from.
const COMPONENT: &str = "default-scheduler";

#[derive(Debug, Clone)]
pub struct ApiWriter {
    client: LocalApi,
    events: EventRecorder,
}

impl ApiWriter {
    /// A writer acting with `token`; events are written by a task in
    /// `tasks` until the writer and its clones are dropped.
    pub fn new(tasks: &mut JoinSet<()>, app: Router, token: &str) -> Self {
        let client = LocalApi::new(app, token);
        let events = EventRecorder::new(tasks, client.clone(), COMPONENT);
        Self { client, events }
    }

    /// POST pods/<name>/binding, guarded by the pod's uid.
    pub async fn bind(&self, pod: &PodInfo, node: &str) -> Result<(), WriteError> {
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": { "name": pod.name, "namespace": pod.namespace, "uid": pod.uid },
            "target": { "apiVersion": "v1", "kind": "Node", "name": node },
        });
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/binding",
            pod.namespace, pod.name
        );
        self.client
            .send(Method::POST, &path, "application/json", &binding)
            .await
            .map(drop)
    }

    /// Sets PodScheduled=False (reason Unschedulable) with `message`.
    pub async fn mark_unschedulable(&self, pod: &PodInfo, message: &str) -> Result<(), WriteError> {
        let patch = json!({
            "status": { "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": now(),
            }] },
        });
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/status",
            pod.namespace, pod.name
        );
        self.client
            .send(
                Method::PATCH,
                &path,
                "application/strategic-merge-patch+json",
                &patch,
            )
            .await
            .map(drop)
    }

    /// Queues an event about `pod`; dropped if the queue is full.
    pub fn event(&self, pod: &PodInfo, kind: &str, reason: &str, message: &str) {
        let about = Involved {
            api_version: "v1",
            kind: "Pod",
            namespace: &pod.namespace,
            name: &pod.name,
            uid: &pod.uid,
        };
        self.events.record(about, kind, reason, message);
    }
}
