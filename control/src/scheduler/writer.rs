//! The scheduler's writes, sent through the API router in-process so they
//! pass the same authorisation, defaulting and validation as any client's:
//! bindings, the PodScheduled=False condition of an unschedulable pod, and
//! events (FailedScheduling, Scheduled) through the event recorder.

use axum::Router;
use k8s_openapi::{
    api::core::v1::{Binding, ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde_json::json;
use tokio::task::JoinSet;

use super::pod_info::PodInfo;
pub use crate::local_api::LocalApiError as WriteError;
use crate::{
    clock::now,
    events::{EventRecorder, Involved},
    local_api::{LocalApi, ObjectRef, PatchType},
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
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Node".to_owned()),
                name: Some(node.to_owned()),
                ..ObjectReference::default()
            },
        };
        self.client
            .create_subresource::<Pod, _>(&binding, "binding")
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
        let at = ObjectRef::<Pod>::new(Some(&pod.namespace), &pod.name);
        self.client
            .patch(&at, Some("status"), PatchType::Strategic, &patch)
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
