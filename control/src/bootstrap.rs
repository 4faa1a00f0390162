//! What a cluster has from its first start: the namespaces `default`,
//! `kube-system`, `kube-public` and `kube-node-lease`, and the `kubernetes`
//! Service at the first service address. Created through the API router,
//! so they are defaulted and validated like anything a user creates.

use axum::{Router, body::Body, http::Request};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::registry::kinds::services::KUBERNETES_SERVICE_IP;

#[derive(Debug, thiserror::Error)]
#[error("creating {what} at first start: HTTP {code}: {body}")]
pub struct BootstrapError {
    what: String,
    code: u16,
    body: String,
}

/// Creates what is missing; what exists is left as it is.
pub async fn ensure_defaults(
    app: &Router,
    token: &str,
    api_port: u16,
) -> Result<(), BootstrapError> {
    for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        create(
            app,
            token,
            "/api/v1/namespaces",
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": namespace } }),
        )
        .await?;
    }
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "labels": { "component": "apiserver", "provider": "kubernetes" },
        },
        "spec": {
            "clusterIP": KUBERNETES_SERVICE_IP.to_string(),
            "ports": [{ "name": "https", "port": 443, "targetPort": api_port, "protocol": "TCP" }],
        },
    });
    create(app, token, "/api/v1/namespaces/default/services", service).await
}

async fn create(
    app: &Router,
    token: &str,
    path: &str,
    object: Value,
) -> Result<(), BootstrapError> {
    let what = format!(
        "{path}/{}",
        object["metadata"]["name"].as_str().unwrap_or_default()
    );
    let request = Request::post(path)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(Body::from(object.to_string()))
        .map_err(|err| BootstrapError {
            what: what.clone(),
            code: 0,
            body: err.to_string(),
        })?;
    let response = app
        .clone()
        .oneshot(request)
        .await
        .map_err(|err| BootstrapError {
            what: what.clone(),
            code: 0,
            body: err.to_string(),
        })?;
    let code = response.status().as_u16();
    if code == 201 || code == 409 {
        return Ok(());
    }
    let body = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    Err(BootstrapError {
        what,
        code,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
