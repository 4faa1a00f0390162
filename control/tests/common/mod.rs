//! The API router in-process over an embedded store in a temporary
//! directory, with the admin token: what the in-process suites call.

#![allow(dead_code, clippy::unwrap_used)] // each suite uses part of it

use std::sync::Arc;

use axum::{Router, body::Body, http::Request};
use capstan_control::{
    api::{self, ApiState, Credentials},
    bootstrap,
    store::{
        Store,
        embedded::{EmbeddedConfig, EmbeddedStore},
    },
};
use serde_json::Value;
use tower::ServiceExt;

pub struct Api {
    pub app: Router,
    pub token: String,
    pub store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl Api {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(&dir.path().join("store"), EmbeddedConfig::default()).unwrap(),
        );
        let (credentials, token) = Credentials::load_or_create(dir.path()).unwrap();
        let app = api::app(ApiState::new(Arc::clone(&store), credentials));
        bootstrap::ensure_defaults(&app, &token, 6443)
            .await
            .unwrap();
        Self {
            app,
            token,
            store,
            _dir: dir,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        content_type: &str,
    ) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", content_type)
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let code = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, "application/json").await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body), "application/json")
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PUT", path, Some(body), "application/json").await
    }

    pub async fn merge(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("PATCH", path, Some(body), "application/merge-patch+json")
            .await
    }

    /// The ControllerRevisions of namespace `default`, lowest revision
    /// first.
    pub async fn revisions(&self) -> Vec<Value> {
        let (code, list) = self
            .get("/apis/apps/v1/namespaces/default/controllerrevisions")
            .await;
        assert_eq!(code, 200, "{list}");
        let mut items = list["items"].as_array().cloned().unwrap_or_default();
        items.sort_by_key(|r| r["revision"].as_i64());
        items
    }

    pub async fn delete(&self, path: &str, options: Option<Value>) -> (u16, Value) {
        self.call("DELETE", path, options, "application/json").await
    }

    /// The raw lines of a watch that times out at once.
    pub async fn watch_lines(&self, path: &str) -> Vec<Value> {
        let request = Request::get(path)
            .header("Authorization", format!("Bearer {}", self.token))
            .body(Body::empty())
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }
}
