//! Serving the API: TLS (HTTP/2 and HTTP/1.1) on its port, and plain HTTP
//! on a loopback port only when asked for.

use std::{future::Future, io, sync::Arc};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The sockets the API answers on.
#[derive(Debug)]
pub struct Listeners {
    pub tls: TcpListener,
    /// Plain HTTP; control binds it to loopback only.
    pub plain: Option<TcpListener>,
}

/// Serves `app` until `shutdown` resolves.
pub async fn serve(
    app: Router,
    listeners: Listeners,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let secure = accept_loop(listeners.tls, app.clone(), Some(acceptor));
    let plain = async {
        match listeners.plain {
            Some(listener) => accept_loop(listener, app.clone(), None).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = secure => result,
        result = plain => result,
        () = shutdown => Ok(()),
    }
}

/// Accepts until dropped; dropping it aborts every connection it serves
/// (watches included), so nothing keeps serving after a stop.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
) -> io::Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap finished connections as we go.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors or a connection reset before accept:
            // transient, and no reason to stop serving everyone else.
            Err(err) => {
                tracing::warn!(%err, "accepting a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let service = TowerToHyperService::new(app);
            let builder = Builder::new(TokioExecutor::new());
            let served = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                    Err(err) => {
                        tracing::debug!(%err, %peer, "TLS handshake failed");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(err) = served {
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
        });
    }
}
