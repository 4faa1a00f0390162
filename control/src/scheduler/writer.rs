//! The scheduler's writes, sent through the API router in-process so they
//! pass the same authorisation, defaulting and validation as any client's:
//! bindings, the PodScheduled=False condition of an unschedulable pod, and
//! events (FailedScheduling, Scheduled). Events go through a bounded
//! queue and are dropped when it is full, as Kubernetes' event recorder
//! does, so a burst never slows placement.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{Router, http::Method};
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinSet};

use super::pod_info::PodInfo;
pub use crate::local_api::LocalApiError as WriteError;
use crate::{api::now, local_api::LocalApi};

/// Who the scheduler's events say they come from.
const COMPONENT: &str = "default-scheduler";
/// Events waiting to be written.
const EVENT_QUEUE: usize = 1000;

#[derive(Debug, Clone)]
pub struct ApiWriter {
    client: LocalApi,
    events: mpsc::Sender<Value>,
    dropped_events: Arc<AtomicU64>,
}

impl ApiWriter {
    /// A writer acting with `token`; events are written by a task in
    /// `tasks` until the writer and its clones are dropped.
    pub fn new(tasks: &mut JoinSet<()>, app: Router, token: &str) -> Self {
        let client = LocalApi::new(app, token);
        let (events, mut pending) = mpsc::channel::<Value>(EVENT_QUEUE);
        let sender = client.clone();
        tasks.spawn(async move {
            while let Some(event) = pending.recv().await {
                let namespace = event["metadata"]["namespace"].as_str().unwrap_or_default();
                let path = format!("/api/v1/namespaces/{namespace}/events");
                if let Err(err) = sender
                    .send(Method::POST, &path, "application/json", &event)
                    .await
                {
                    tracing::debug!(error = %err, "event not written");
                }
            }
        });
        Self {
            client,
            events,
            dropped_events: Arc::default(),
        }
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
        let at = now();
        let nanos = jiff::Timestamp::now().as_nanosecond();
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": { "name": format!("{}.{nanos:x}", pod.name), "namespace": pod.namespace },
            "involvedObject": {
                "apiVersion": "v1", "kind": "Pod",
                "name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": { "component": COMPONENT },
            "reportingComponent": COMPONENT,
            "reportingInstance": "capstan-control",
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
        });
        if self.events.try_send(event).is_err() {
            let dropped = self.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "scheduler events dropped: the event queue is full");
            }
        }
    }
}
