//! Events about objects (SuccessfulCreate, ScalingReplicaSet,
//! FailedScheduling, ...), as the scheduler and the controllers report
//! them. They go through a bounded queue and are dropped when it is full,
//! as Kubernetes' event recorder does, so a burst never slows the work
//! they describe.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
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
    events: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventRecorder {
    /// A recorder whose events are written through `api` by a task in
    /// `tasks`, until the recorder and its clones are dropped.
    pub fn new(tasks: &mut JoinSet<()>, api: LocalApi, component: &'static str) -> Self {
        let (events, mut pending) = mpsc::channel::<Event>(EVENT_QUEUE);
        tasks.spawn(async move {
            while let Some(event) = pending.recv().await {
                if let Err(err) = api.create_unread(&event).await {
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
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{nanos:x}", about.name)),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(about.api_version.to_owned()),
                kind: Some(about.kind.to_owned()),
                name: Some(about.name.to_owned()),
                namespace: Some(about.namespace.to_owned()),
                uid: Some(about.uid.to_owned()),
                ..ObjectReference::default()
            },
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some(kind.to_owned()),
            source: Some(EventSource {
                component: Some(self.component.to_owned()),
                host: None,
            }),
            reporting_component: Some(self.component.to_owned()),
            reporting_instance: Some("capstan-control".to_owned()),
            first_timestamp: Some(at.clone()),
            last_timestamp: Some(at),
            count: Some(1),
            ..Event::default()
        };
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
