//! Events about objects (SuccessfulCreate, ScalingReplicaSet,
//! FailedScheduling, ...), as the scheduler and the controllers report
//! them. They go through a bounded queue and are dropped when it is full,
//! as Kubernetes' event recorder does, so a burst never slows the work
//! they describe.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinSet};

use crate::{clock::now, local_api::LocalApi};

/// Events waiting to be written.
const EVENT_QUEUE: usize = 1000;

/// The object an event is about.
#[derive(Debug, Clone, Copy)]
pub struct Involved<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl<'a> Involved<'a> {
    /// The object of kind `kind` with metadata `meta`.
    pub fn of(api_version: &'a str, kind: &'a str, meta: &'a ObjectMeta) -> Self {
        Self {
            api_version,
            kind,
            namespace: meta.namespace.as_deref().unwrap_or_default(),
            name: meta.name.as_deref().unwrap_or_default(),
            uid: meta.uid.as_deref().unwrap_or_default(),
        }
    }
}

/// Writes events as one component (the `source` kubectl shows).
#[derive(Debug, Clone)]
pub struct EventRecorder {
    component: &'static str,
    events: mpsc::Sender<Value>,
    dropped: Arc<AtomicU64>,
}

impl EventRecorder {
    /// A recorder whose events are written through `api` by a task in
    /// `tasks`, until the recorder and its clones are dropped.
    pub fn new(tasks: &mut JoinSet<()>, api: LocalApi, component: &'static str) -> Self {
        let (events, mut pending) = mpsc::channel::<Value>(EVENT_QUEUE);
        tasks.spawn(async move {
            while let Some(event) = pending.recv().await {
                let namespace = event["metadata"]["namespace"].as_str().unwrap_or_default();
                let path = format!("/api/v1/namespaces/{namespace}/events");
                if let Err(err) = api
                    .send(Method::POST, &path, "application/json", &event)
                    .await
                {
                    tracing::debug!(error = %err, "event not written");
                }
            }
        });
        Self {
            component,
            events,
            dropped: Arc::default(),
        }
    }

    /// Queues an event (`kind` Normal or Warning); dropped if the queue is
    /// full.
    pub fn record(&self, about: Involved<'_>, kind: &str, reason: &str, message: &str) {
        let at = now();
        let nanos = k8s_openapi::jiff::Timestamp::now().as_nanosecond();
        let namespace = if about.namespace.is_empty() {
            "default"
        } else {
            about.namespace
        };
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": { "name": format!("{}.{nanos:x}", about.name), "namespace": namespace },
            "involvedObject": {
                "apiVersion": about.api_version, "kind": about.kind,
                "name": about.name, "namespace": about.namespace, "uid": about.uid,
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": { "component": self.component },
            "reportingComponent": self.component,
            "reportingInstance": "capstan-control",
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
        });
        if self.events.try_send(event).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    component = self.component,
                    dropped,
                    "events dropped: the event queue is full"
                );
            }
        }
    }
}
