//! What a cluster has from its first start: the namespaces `default`,
//! `kube-system`, `kube-public` and `kube-node-lease`, the `kubernetes`
//! Service at the first service address, the `kube-dns` Service at
//! 10.96.0.10 (without a selector: every node's agent answers it itself),
//! and the `kubernetes` Service's endpoints
//! (the Endpoints and EndpointSlice naming control's advertised address,
//! written at every start as kube-apiserver's endpoint reconciler does).
//! Made through the API router, so they are defaulted and validated like
//! anything a user creates.

use std::net::SocketAddr;

use axum::{Router, body::Body, http::Request};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::registry::kinds::services::{KUBE_DNS_SERVICE_IP, KUBERNETES_SERVICE_IP};

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
    create(app, token, "/api/v1/namespaces/default/services", service).await?;
    let dns = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/cluster-service": "true",
                "kubernetes.io/name": "KubeDNS",
            },
        },
        "spec": {
            "clusterIP": KUBE_DNS_SERVICE_IP.to_string(),
            "ports": [
                { "name": "dns", "port": 53, "protocol": "UDP" },
                { "name": "dns-tcp", "port": 53, "protocol": "TCP" },
            ],
        },
    });
    match create(app, token, "/api/v1/namespaces/kube-system/services", dns).await {
        // A cluster older than kube-dns may have given its address away.
        Err(err) if err.code == 422 => {
            tracing::warn!(%err, "no kube-dns Service: cluster DNS is not reachable at its address");
            Ok(())
        }
        other => other,
    }
}

/// Points the `kubernetes` Service at `api`: an Endpoints object and an
/// EndpointSlice of the same name, replaced when they name another
/// address.
pub async fn ensure_api_endpoints(
    app: &Router,
    token: &str,
    api: SocketAddr,
) -> Result<(), BootstrapError> {
    let (ip, port) = (api.ip().to_string(), api.port());
    let address_type = if api.is_ipv4() { "IPv4" } else { "IPv6" };
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": { "name": "kubernetes", "namespace": "default",
                      "labels": { "endpointslice.kubernetes.io/skip-mirror": "true" } },
        "subsets": [{
            "addresses": [{ "ip": ip }],
            "ports": [{ "name": "https", "port": port, "protocol": "TCP" }],
        }],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": { "name": "kubernetes", "namespace": "default",
                      "labels": { "kubernetes.io/service-name": "kubernetes" } },
        "addressType": address_type,
        "endpoints": [{ "addresses": [ip], "conditions": { "ready": true } }],
        "ports": [{ "name": "https", "port": port, "protocol": "TCP" }],
    });
    replace(
        app,
        token,
        "/api/v1/namespaces/default/endpoints",
        endpoints,
    )
    .await?;
    replace(
        app,
        token,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        slice,
    )
    .await
}

/// Creates `object` in `collection`, or overwrites what is there when it
/// differs (a restart with the same address writes nothing).
async fn replace(
    app: &Router,
    token: &str,
    collection: &str,
    mut object: Value,
) -> Result<(), BootstrapError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let path = format!("{collection}/{name}");
    let (code, current) = call(app, token, "GET", &path, None).await?;
    if code == 404 {
        return create(app, token, collection, object).await;
    }
    let same = object
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| *key != "metadata")
        .all(|(key, value)| current.get(key) == Some(value));
    if same {
        return Ok(());
    }
    object["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    let (code, body) = call(app, token, "PUT", &path, Some(&object)).await?;
    if code == 200 {
        return Ok(());
    }
    Err(BootstrapError {
        what: path,
        code,
        body: body.to_string(),
    })
}

async fn call(
    app: &Router,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), BootstrapError> {
    let failed = |body: String| BootstrapError {
        what: path.to_owned(),
        code: 0,
        body,
    };
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .map_err(|err| failed(err.to_string()))?;
    let response = app
        .clone()
        .oneshot(request)
        .await
        .map_err(|err| failed(err.to_string()))?;
    let code = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    Ok((code, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

async fn create(
    app: &Router,
    token: &str,
    collection: &str,
    object: Value,
) -> Result<(), BootstrapError> {
    let (code, body) = call(app, token, "POST", collection, Some(&object)).await?;
    if code == 201 || code == 409 {
        return Ok(());
    }
    Err(BootstrapError {
        what: format!(
            "{collection}/{}",
            object["metadata"]["name"].as_str().unwrap_or_default()
        ),
        code,
        body: body.to_string(),
    })
}
