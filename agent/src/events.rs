//! Events the agent reports about API objects, as a kubelet does: core/v1
//! Events that `kubectl describe` lists under the object, from component
//! `capstan-agent` on this node. They go through a bounded queue and are
//! dropped when it is full, so a burst never slows the work they describe.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use tokio::sync::mpsc;

/// Events waiting to be written.
const EVENT_QUEUE: usize = 256;
const COMPONENT: &str = "capstan-agent";

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl About {
    /// The object of kind `K` with metadata `meta`.
    pub fn of<K: k8s_openapi::Resource>(meta: &ObjectMeta) -> Self {
        Self {
            api_version: K::API_VERSION.to_owned(),
            kind: K::KIND.to_owned(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// Where the agent's modules send events; a trait so unit tests record
/// them instead.
pub trait EventSink: Send + Sync + std::fmt::Debug {
    /// Queues an event; never blocks, never fails the caller.
    fn record(&self, about: &About, kind: EventType, reason: &str, message: &str);
}

/// Events written to control's API by a background task.
#[derive(Debug)]
pub struct ApiEvents {
    node: String,
    queue: mpsc::Sender<Event>,
    dropped: AtomicU64,
}

impl ApiEvents {
    /// A sink writing through `client` as node `node`'s agent, until it is
    /// dropped. Call inside the runtime.
    pub fn start(client: kube::Client, node: String) -> Arc<Self> {
        let (queue, mut pending) = mpsc::channel::<Event>(EVENT_QUEUE);
        tokio::spawn(async move {
            while let Some(event) = pending.recv().await {
                let namespace = event.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
                if let Err(err) = api.create(&PostParams::default(), &event).await {
                    tracing::debug!(%err, reason = ?event.reason, "event not written");
                }
            }
        });
        Arc::new(Self {
            node,
            queue,
            dropped: AtomicU64::new(0),
        })
    }
}

impl EventSink for ApiEvents {
    fn record(&self, about: &About, kind: EventType, reason: &str, message: &str) {
        let event = event(&self.node, about, kind, reason, message);
        if self.queue.try_send(event).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "events dropped: the event queue is full");
            }
        }
    }
}

/// The Event kubectl expects: involvedObject, the legacy source and
/// timestamps `describe` reads, and the newer reporting fields.
fn event(node: &str, about: &About, kind: EventType, reason: &str, message: &str) -> Event {
    let now = Timestamp::now();
    // Time fields carry whole seconds, as the API stores them.
    let second = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let namespace = match about.namespace.as_str() {
        "" => "default",
        namespace => namespace,
    };
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", about.name, now.as_nanosecond())),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(about.api_version.clone()),
            kind: Some(about.kind.clone()),
            name: Some(about.name.clone()),
            namespace: Some(about.namespace.clone()).filter(|n| !n.is_empty()),
            uid: Some(about.uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        type_: Some(kind.as_str().to_owned()),
        source: Some(EventSource {
            component: Some(COMPONENT.to_owned()),
            host: Some(node.to_owned()),
        }),
        reporting_component: Some(COMPONENT.to_owned()),
        reporting_instance: Some(node.to_owned()),
        first_timestamp: Some(second.clone()),
        last_timestamp: Some(second),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        ..Event::default()
    }
}

/// Records every event, for unit tests.
#[derive(Debug, Default)]
pub struct RecordingEvents {
    pub events: Mutex<Vec<(About, EventType, String, String)>>,
}

impl RecordingEvents {
    /// The events recorded since the last call.
    pub fn take(&self) -> Vec<(About, EventType, String, String)> {
        self.events
            .lock()
            .map(|mut events| std::mem::take(&mut *events))
            .unwrap_or_default()
    }
}

impl EventSink for RecordingEvents {
    fn record(&self, about: &About, kind: EventType, reason: &str, message: &str) {
        if let Ok(mut events) = self.events.lock() {
            events.push((about.clone(), kind, reason.to_owned(), message.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_and_the_node_that_saw_it() {
        let about = About {
            api_version: "v1".into(),
            kind: "Service".into(),
            namespace: "shop".into(),
            name: "web".into(),
            uid: "u-1".into(),
        };
        let event = event(
            "h2",
            &about,
            EventType::Warning,
            "ProgrammingFailed",
            "full",
        );
        assert_eq!(event.metadata.namespace.as_deref(), Some("shop"));
        assert!(event.metadata.name.unwrap().starts_with("web."));
        assert_eq!(event.involved_object.kind.as_deref(), Some("Service"));
        assert_eq!(event.involved_object.uid.as_deref(), Some("u-1"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        let source = event.source.unwrap();
        assert_eq!(
            (source.component.as_deref(), source.host.as_deref()),
            (Some("capstan-agent"), Some("h2"))
        );
        assert_eq!(event.reporting_instance.as_deref(), Some("h2"));
        assert!(event.first_timestamp.is_some() && event.event_time.is_some());
    }
}
