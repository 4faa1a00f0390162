//! A client of the API router in-process, for the scheduler and the
//! controllers: requests go through the same routes, authorisation,
//! defaulting and validation as a remote client's, without a socket.
//! Callers use the typed requests of [`typed`]; [`LocalApi::send`] is for
//! the garbage collector, which addresses objects of every served kind by
//! path and reads only their metadata.

mod typed;

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, Bytes},
    http::{Method, Request},
};
use serde_json::Value;
use tower::ServiceExt;

pub use self::typed::{Addressable, ObjectRef, PatchType, collection, served_path};

/// An API answer other than success.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {code}: {message}")]
pub struct LocalApiError {
    pub code: u16,
    pub message: String,
}

/// The router and the token requests carry.
#[derive(Debug, Clone)]
pub struct LocalApi {
    app: Router,
    token: Arc<str>,
}

impl LocalApi {
    pub fn new(app: Router, token: &str) -> Self {
        Self {
            app,
            token: Arc::from(token),
        }
    }

    /// Sends `body` (none for GET and DELETE without options) and returns
    /// the decoded answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Value, LocalApiError> {
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let answer = self.exchange(method, path, content_type, body).await?;
        Ok(serde_json::from_slice::<Value>(&answer).unwrap_or(Value::Null))
    }

    /// The request and a successful answer's bytes, not decoded: typed
    /// requests decode them straight into their type, or not at all when
    /// nothing is kept of them (a binding, an event).
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Body,
    ) -> Result<Bytes, LocalApiError> {
        let failed = |err: &dyn std::fmt::Display| LocalApiError {
            code: 0,
            message: err.to_string(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", content_type)
            .body(body)
            .map_err(|err| failed(&err))?;
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .map_err(|err| failed(&err))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .map_err(|err| failed(&err))?;
        if status.is_success() {
            return Ok(bytes);
        }
        let value = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
        let message = value["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(LocalApiError {
            code: status.as_u16(),
            message,
        })
    }

    /// As [`Self::send`], with a target that is gone (404) as None: for
    /// writers that act on what they saw, and find it deleted since.
    pub async fn send_if_exists(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Option<Value>, LocalApiError> {
        if_exists(self.send(method, path, content_type, body).await)
    }
}

/// A target that is gone (404) as None: for writers that act on what they
/// saw, and find it deleted since.
pub fn if_exists<T>(result: Result<T, LocalApiError>) -> Result<Option<T>, LocalApiError> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(err) if err.code == 404 => Ok(None),
        Err(err) => Err(err),
    }
}
