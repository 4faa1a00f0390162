//! Watch: a stream of `{"type": ..., "object": ...}` lines, one per change.
//!
//! Without a resourceVersion (or with "0") the stream starts with the
//! current objects as ADDED; with one, it replays what changed after it.
//! Selectors turn changes into what a filtered view sees: an object that
//! starts matching is ADDED, one that stops matching is DELETED. Bookmarks
//! carry the latest revision when asked for; a compacted revision ends the
//! stream with a 410 ERROR event, as Kubernetes does.

use std::time::Duration;

use axum::{body::Body, http::StatusCode, response::Response};
use bytes::Bytes;
use k8s_openapi::Metadata;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    ApiError, Context,
    request::{Accept, Query, accept},
    resource::{ApiRequest, Typed, parse_revision},
};
use crate::{
    labels::{FieldTerm, Selector},
    registry::{Kind, to_value},
    store::{Event, Revision, StoreError, WatchStream},
};

/// How often a bookmark is sent to clients that allow them.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// A watch's filters and output form.
struct View<K: Kind> {
    typed: Typed<K>,
    labels: Selector,
    fields: Vec<FieldTerm>,
    accept: Accept,
    query: Query,
}

impl<K: Kind> View<K> {
    fn matches(&self, object: &K::Object) -> bool {
        self.typed
            .selected(object, &self.labels, &self.fields)
            .unwrap_or(false)
    }

    fn render(&self, object: &K::Object) -> Value {
        match self.accept {
            Accept::Object => to_value(object),
            Accept::Table => self
                .typed
                .table(std::slice::from_ref(object), None, &self.query),
        }
    }

    fn line(&self, kind: &str, object: &K::Object) -> Bytes {
        event_line(kind, &self.render(object))
    }

    fn bookmark(&self, revision: Revision, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({ "resourceVersion": revision.to_string() });
        if initial_events_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let object = match self.accept {
            Accept::Object => {
                json!({ "kind": K::INFO.kind, "apiVersion": K::INFO.api_version(), "metadata": metadata })
            }
            Accept::Table => json!({
                "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
                "columnDefinitions": [], "rows": [],
            }),
        };
        event_line("BOOKMARK", &object)
    }

    /// What a store event looks like through this view, if anything.
    fn translate(&self, event: &Event) -> Result<Option<Bytes>, ApiError> {
        match event {
            Event::Put { kv, prev } => {
                let object = self.typed.decode(kv)?;
                let now = self.matches(&object);
                let before = match prev {
                    Some(prev) => Some(self.matches(&self.typed.decode(prev)?)),
                    None => None,
                };
                Ok(match (before, now) {
                    (None | Some(false), true) => Some(self.line("ADDED", &object)),
                    (Some(true), true) => Some(self.line("MODIFIED", &object)),
                    (Some(true), false) => Some(self.line("DELETED", &object)),
                    (_, false) => None,
                })
            }
            Event::Delete { prev, revision } => {
                let mut object = self.typed.decode(prev)?;
                if !self.matches(&object) {
                    return Ok(None);
                }
                object.metadata_mut().resource_version = Some(revision.to_string());
                Ok(Some(self.line("DELETED", &object)))
            }
        }
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn error_line(error: &ApiError) -> Bytes {
    event_line("ERROR", &to_value(&error.to_status()))
}

impl<K: Kind> Typed<K> {
    pub(super) async fn watch(
        &self,
        ctx: &Context,
        request: &ApiRequest,
    ) -> Result<Response, ApiError> {
        let query = request.query.clone();
        let (labels, fields) = self.selectors(&query)?;
        let bookmarks = query.flag("allowWatchBookmarks");
        let timeout = match query.number::<u64>("timeoutSeconds")? {
            Some(seconds) => Duration::from_secs(seconds),
            // Kubernetes spreads long watches over 30 to 60 minutes.
            None => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
        };
        let from = match query.get("resourceVersion") {
            None | Some("0") => None,
            Some(rv) => Some(parse_revision(rv)?),
        };
        let send_initial = query.flag("sendInitialEvents");
        let prefix = self.prefix(request.namespace.as_deref());

        // The initial state, read at one revision, then changes after it.
        let mut initial = Vec::new();
        let start = match (from, send_initial) {
            (Some(revision), false) => revision,
            _ => {
                let (objects, revision, _) = self
                    .list_objects(
                        ctx,
                        &ApiRequest {
                            query: strip_paging(&query),
                            ..clone_request(request)
                        },
                    )
                    .await?;
                initial = objects;
                revision
            }
        };
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let response = streaming(rx);
        let store_watch = match ctx.store.watch(&prefix, start).await {
            Ok(watch) => watch,
            Err(StoreError::Compacted { requested }) => {
                let error = ApiError::gone(format!("too old resource version: {requested}"));
                let _ = tx.try_send(error_line(&error));
                return Ok(response);
            }
            Err(err) => return Err(ApiError::from_store(err, self.subject(""))),
        };
        let view = View {
            typed: Typed {
                kind: self.kind.clone(),
            },
            labels,
            fields,
            accept: accept(&request.headers),
            query,
        };
        let mut lines: Vec<Bytes> = initial
            .iter()
            .map(|object| view.line("ADDED", object))
            .collect();
        if send_initial {
            lines.push(view.bookmark(start, true));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        tokio::spawn(forward(
            view,
            lines,
            store_watch,
            tx,
            deadline,
            bookmarks,
            start,
        ));
        Ok(response)
    }
}

/// Sends the initial lines, then every change through `view`, until the
/// client goes away, the deadline passes or the store watch ends.
async fn forward<K: Kind>(
    view: View<K>,
    lines: Vec<Bytes>,
    mut store_watch: WatchStream,
    tx: mpsc::Sender<Bytes>,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    mut last: Revision,
) {
    for line in lines {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    let mut bookmark =
        tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    loop {
        let line = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            _ = bookmark.tick(), if bookmarks => Some(view.bookmark(last, false)),
            event = store_watch.next() => match event {
                None => return,
                Some(Err(StoreError::Compacted { requested })) => {
                    let _ = tx.send(error_line(&ApiError::gone(format!("too old resource version: {requested}")))).await;
                    return;
                }
                Some(Err(err)) => {
                    let _ = tx.send(error_line(&ApiError::from_store(err, view.typed.subject("")))).await;
                    return;
                }
                Some(Ok(event)) => {
                    last = event.revision();
                    view.translate(&event).unwrap_or_else(|err| Some(error_line(&err)))
                }
            },
        };
        if let Some(line) = line
            && tx.send(line).await.is_err()
        {
            return;
        }
    }
}

/// The query without paging, for reading the initial state whole.
fn strip_paging(query: &Query) -> Query {
    let mut query = query.clone();
    for key in [
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
    ] {
        query.params.remove(key);
    }
    query
}

fn clone_request(request: &ApiRequest) -> ApiRequest {
    ApiRequest {
        method: request.method.clone(),
        namespace: request.namespace.clone(),
        name: request.name.clone(),
        subresource: request.subresource.clone(),
        query: request.query.clone(),
        headers: request.headers.clone(),
        body: Bytes::new(),
    }
}

/// A streaming 200 whose body is whatever arrives on `lines`.
fn streaming(lines: mpsc::Receiver<Bytes>) -> Response {
    let stream = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(lines),
        Ok::<_, std::io::Error>,
    );
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}
