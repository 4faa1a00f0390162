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

use axum::{
    Router,
    body::Body,
    http::{Method, Request},
};
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinSet};
use tower::ServiceExt;

use super::pod_info::PodInfo;
use crate::api::now;

/// Who the scheduler's events say they come from.
const COMPONENT: &str = "default-scheduler";
/// Events waiting to be written.
const EVENT_QUEUE: usize = 1000;

/// An API answer other than success.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {code}: {message}")]
pub struct WriteError {
    pub code: u16,
    pub message: String,
}

/// The router and the token requests carry.
#[derive(Debug, Clone)]
struct RouterClient {
    app: Router,
    token: Arc<str>,
}

impl RouterClient {
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<(), WriteError> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", content_type)
            .body(Body::from(body.to_string()))
            .map_err(|err| WriteError {
                code: 0,
                message: err.to_string(),
            })?;
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .map_err(|err| WriteError {
                code: 0,
                message: err.to_string(),
            })?;
        let code = response.status().as_u16();
        if response.status().is_success() {
            return Ok(());
        }
        let body = axum::body::to_bytes(response.into_body(), 64 << 10)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|status| status["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        Err(WriteError { code, message })
    }
}

#[derive(Debug, Clone)]
pub struct ApiWriter {
    client: RouterClient,
    events: mpsc::Sender<Value>,
    dropped_events: Arc<AtomicU64>,
}

impl ApiWriter {
    /// A writer acting with `token`; events are written by a task in
    /// `tasks` until the writer and its clones are dropped.
    pub fn new(tasks: &mut JoinSet<()>, app: Router, token: &str) -> Self {
        let client = RouterClient {
            app,
            token: Arc::from(token),
        };
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
