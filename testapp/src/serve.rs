//! The server: HTTP endpoints tests poke at, plus TCP and UDP echo.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{ConnectInfo, Query, State},
    http::StatusCode,
    routing::{any, get},
};
use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
    signal::unix::{SignalKind, signal},
};

#[derive(Debug, clap::Args)]
pub struct Ports {
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    #[arg(long, default_value_t = 8081)]
    tcp_port: u16,
    #[arg(long, default_value_t = 8082)]
    udp_port: u16,
}

#[derive(Debug, Default)]
struct AppState {
    unhealthy: AtomicBool,
    /// Memory handed out by /alloc, held until the process exits.
    held: Mutex<Vec<Vec<u8>>>,
}

type Shared = State<Arc<AppState>>;

pub fn run(ports: Ports) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(ports))
}

async fn serve(ports: Ports) -> anyhow::Result<()> {
    let any_address = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let http = TcpListener::bind(any_address(ports.http_port)).await?;
    let tcp = TcpListener::bind(any_address(ports.tcp_port)).await?;
    let udp = UdpSocket::bind(any_address(ports.udp_port)).await?;
    println!(
        "serving http on {}, tcp echo on {}, udp echo on {}",
        ports.http_port, ports.tcp_port, ports.udp_port
    );

    let app = app(Arc::default()).into_make_service_with_connect_info::<SocketAddr>();
    // As PID 1 of a container, the process gets no default SIGTERM action:
    // without a handler, a graceful stop would wait out the grace period.
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        served = async {
            tokio::try_join!(
                async { axum::serve(http, app).await.map_err(anyhow::Error::from) },
                tcp_echo(tcp),
                udp_echo(udp),
            )
        } => served.map(drop),
        _ = terminate.recv() => {
            println!("SIGTERM: exiting");
            Ok(())
        }
    }
}

fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/hostname", get(hostname))
        .route("/healthz", get(healthz))
        .route("/healthz/fail", any(set_unhealthy))
        .route("/healthz/pass", any(set_healthy))
        .route("/echo", get(echo))
        .route("/clientip", get(client_ip))
        .route("/cpu", get(burn_cpu))
        .route("/alloc", get(allocate))
        .route("/exit", any(exit))
        .with_state(state)
}

async fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

async fn healthz(State(state): Shared) -> (StatusCode, &'static str) {
    if state.unhealthy.load(Ordering::Relaxed) {
        (StatusCode::INTERNAL_SERVER_ERROR, "unhealthy")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn set_unhealthy(State(state): Shared) -> &'static str {
    state.unhealthy.store(true, Ordering::Relaxed);
    "healthz now fails"
}

async fn set_healthy(State(state): Shared) -> &'static str {
    state.unhealthy.store(false, Ordering::Relaxed);
    "healthz now passes"
}

#[derive(Debug, Deserialize)]
struct EchoQuery {
    msg: String,
}

async fn echo(Query(query): Query<EchoQuery>) -> String {
    query.msg
}

async fn client_ip(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    peer.to_string()
}

#[derive(Debug, Deserialize)]
struct CpuQuery {
    millis: u64,
}

/// Keeps one core busy for `millis`.
async fn burn_cpu(Query(query): Query<CpuQuery>) -> String {
    let millis = query.millis;
    let spun = tokio::task::spawn_blocking(move || {
        let end = Instant::now() + Duration::from_millis(millis);
        let mut spins = 0_u64;
        while Instant::now() < end {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        spins
    })
    .await
    .unwrap_or_default();
    format!("burned {millis} ms ({spun} spins)")
}

#[derive(Debug, Deserialize)]
struct AllocQuery {
    mb: usize,
}

/// Allocates and touches `mb` MiB and keeps it; answers the total held.
async fn allocate(State(state): Shared, Query(query): Query<AllocQuery>) -> String {
    // Non-zero bytes: a zeroed allocation could stay unbacked by memory.
    let block = vec![0xa5_u8; query.mb << 20];
    let mut held = state
        .held
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    held.push(block);
    let total: usize = held.iter().map(Vec::len).sum();
    format!("holding {} MiB", total >> 20)
}

#[derive(Debug, Deserialize)]
struct ExitQuery {
    #[serde(default)]
    code: i32,
}

async fn exit(Query(query): Query<ExitQuery>) -> String {
    // Answer first, then exit, so the caller learns the request arrived.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::process::exit(query.code);
    });
    format!("exiting with {}", query.code)
}

async fn tcp_echo(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = vec![0; 64 << 10];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Echoes datagrams, except two commands as agnhost's netexec answers
/// them: `hostname` and `clientip`, so a client can tell which backend
/// answered and what source address it saw.
async fn udp_echo(socket: UdpSocket) -> anyhow::Result<()> {
    let mut buf = vec![0; 64 << 10];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        let reply = match buf[..n].trim_ascii() {
            b"hostname" => hostname().await.into_bytes(),
            b"clientip" => peer.ip().to_string().into_bytes(),
            _ => buf[..n].to_vec(),
        };
        socket.send_to(&reply, peer).await?;
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    use super::*;

    async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn healthz_can_be_switched_at_run_time() {
        let app = app(Arc::default());
        assert_eq!(get(&app, "/healthz").await, (StatusCode::OK, "ok".into()));
        get(&app, "/healthz/fail").await;
        assert_eq!(
            get(&app, "/healthz").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        get(&app, "/healthz/pass").await;
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn echo_returns_the_message_and_alloc_holds_memory() {
        let app = app(Arc::default());
        assert_eq!(get(&app, "/echo?msg=hi").await.1, "hi");
        assert_eq!(get(&app, "/alloc?mb=2").await.1, "holding 2 MiB");
        assert_eq!(get(&app, "/alloc?mb=1").await.1, "holding 3 MiB");
        assert_eq!(get(&app, "/echo").await.0, StatusCode::BAD_REQUEST);
    }
}
