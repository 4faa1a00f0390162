//! The agent's HTTPS server (the kubelet's port, 10250). Each agent module
//! that serves something brings its own routes (logs today; exec,
//! port-forward and metrics next); [`app`] puts them under one router
//! with a health check, and [`serve`] serves it over TLS, where only
//! clients with control's certificate get past the handshake (`tls`).

pub mod tls;

use std::sync::Arc;

use axum::{Router, routing::get};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Every module's routes, and `/healthz`.
pub fn app(routes: impl IntoIterator<Item = Router>) -> Router {
    routes
        .into_iter()
        .fold(Router::new(), Router::merge)
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves `app` over TLS on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router, tls: Arc<rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, "accepting a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::debug!(%err, %peer, "TLS handshake refused");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            if let Err(err) = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn each_modules_routes_and_the_health_check_are_served() {
        let logs = Router::new().route("/containerLogs/{ns}", get(|| async { "logs" }));
        let app = app([logs]);
        for (path, body) in [("/healthz", "ok"), ("/containerLogs/x", "logs")] {
            let response = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert!(response.status().is_success(), "{path}");
            let bytes = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            assert_eq!(bytes, body.as_bytes());
        }
    }
}
