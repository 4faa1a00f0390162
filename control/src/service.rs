//! The control service put together: the store, the credentials and
//! certificates under the data directory, the API with its first-start
//! objects, and the listeners. The binary runs it until a signal; tests
//! start it in-process and stop and restart it at will.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use base64::Engine as _;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::{
    api::{self, ApiState, Credentials, DefaultTolerations, Listeners},
    bootstrap,
    controllers::{self, ControllersConfig},
    pki,
    scheduler::{self, SchedulerConfig},
    store::{
        Store, StoreError,
        embedded::{EmbeddedConfig, EmbeddedStore},
        etcd::EtcdStore,
    },
};

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Persistent state: the embedded store, certificates, tokens.
    pub data_dir: PathBuf,
    /// Where the API listens (HTTPS); port 0 picks a free one.
    pub listen: SocketAddr,
    /// Plain HTTP, loopback only.
    pub insecure_listen: Option<SocketAddr>,
    /// Extra names and addresses for the serving certificate.
    pub tls_san: Vec<String>,
    /// The address the `kubernetes` Service's endpoints name, where pods
    /// reach the API; None: the listen address if it is one, else the
    /// host's first non-loopback IPv4 address.
    pub advertise_address: Option<IpAddr>,
    /// Keep state in etcd at these client URLs instead of the embedded store.
    pub etcd_servers: Vec<String>,
    /// Run the built-in scheduler with this configuration; None leaves
    /// unbound pods to another scheduler.
    pub scheduler: Option<SchedulerConfig>,
    /// The controllers' timings (node heartbeat grace).
    pub controllers: ControllersConfig,
    /// How long new pods tolerate a not-ready or unreachable node.
    pub default_tolerations: DefaultTolerations,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("credentials under {path}: {source}")]
    Credentials {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error(transparent)]
    Agents(#[from] api::AgentError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("--insecure-listen must be a loopback address, not {0}")]
    InsecureNotLoopback(SocketAddr),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
    let what = what.into();
    move |source| ServiceError::Io { what, source }
}

/// A running control service.
#[derive(Debug)]
pub struct RunningControl {
    /// The HTTPS address it answers on.
    pub address: SocketAddr,
    /// The URL its kubeconfig names (loopback when listening everywhere).
    pub server: String,
    /// An admin kubeconfig for it.
    pub kubeconfig: PathBuf,
    pub admin_token: String,
    pub credentials: Credentials,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServiceError>>>,
}

impl RunningControl {
    /// Stops serving and waits until the store is closed.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        self.shut_down().await
    }

    async fn shut_down(&mut self) -> Result<(), ServiceError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|err| ServiceError::Io {
                what: "the control service task".to_owned(),
                source: std::io::Error::other(err.to_string()),
            })?,
            None => Ok(()),
        }
    }

    /// Runs until `until` resolves, then stops.
    pub async fn run_until(mut self, until: impl Future<Output = ()>) -> Result<(), ServiceError> {
        let task = self.task.take();
        let stop = self.stop.take();
        tokio::pin!(until);
        let Some(mut task) = task else { return Ok(()) };
        tokio::select! {
            finished = &mut task => finished.map_err(|err| ServiceError::Io { what: "control".into(), source: std::io::Error::other(err.to_string()) })?,
            () = &mut until => {
                if let Some(stop) = stop {
                    let _ = stop.send(());
                }
                task.await.map_err(|err| ServiceError::Io { what: "control".into(), source: std::io::Error::other(err.to_string()) })?
            }
        }
    }
}

/// This host's non-loopback IPv4 addresses, in interface order.
fn host_ipv4_addresses() -> Vec<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .map(|interfaces| {
            interfaces
                .filter_map(|interface| Some(interface.address?.as_sockaddr_in()?.ip()))
                .filter(|ip| !ip.is_loopback())
                .collect()
        })
        .unwrap_or_default()
}

/// Names the serving certificate must carry: this host's names and
/// addresses, and the `kubernetes` Service's.
fn serving_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.96.0.1",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().to_owned());
    }
    names.extend(host_ipv4_addresses().iter().map(Ipv4Addr::to_string));
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

fn kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "capstan", "cluster": {
            "server": server,
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        }}],
        "users": [{ "name": "admin", "user": { "token": token } }],
        "contexts": [{ "name": "capstan", "context": { "cluster": "capstan", "user": "admin", "namespace": "default" } }],
        "current-context": "capstan",
    });
    serde_yaml::to_string(&config).unwrap_or_default()
}

/// Where the admin kubeconfig of a data directory is written.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.kubeconfig")
}

/// Opens the store, prepares certificates and credentials, creates the
/// first-start objects, writes the admin kubeconfig and starts serving.
pub async fn start(config: ControlConfig) -> Result<RunningControl, ServiceError> {
    let (credentials, admin_token) =
        Credentials::load_or_create(&config.data_dir).map_err(|source| {
            ServiceError::Credentials {
                path: config.data_dir.clone(),
                source,
            }
        })?;
    let store: Arc<dyn Store> = if config.etcd_servers.is_empty() {
        Arc::new(EmbeddedStore::open(
            &config.data_dir.join("store"),
            EmbeddedConfig::default(),
        )?)
    } else {
        Arc::new(EtcdStore::connect(&config.etcd_servers).await?)
    };
    let pki = pki::load_or_create(
        &config.data_dir.join("pki"),
        &serving_names(&config.tls_san),
    )?;
    let tls = pki::server_config(&pki)?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(io(format!("listening on {}", config.listen)))?;
    let address = listener.local_addr().map_err(io("the API listener"))?;
    let plain = match config.insecure_listen {
        Some(address) if address.ip().is_loopback() => Some(
            TcpListener::bind(address)
                .await
                .map_err(io(format!("listening on {address}")))?,
        ),
        Some(address) => return Err(ServiceError::InsecureNotLoopback(address)),
        None => None,
    };

    let agents = api::AgentClient::new(&pki.client_cert_pem, &pki.client_key_pem)?;
    let app = api::app(ApiState::with_agents(
        Arc::clone(&store),
        credentials.clone(),
        Some(agents),
        config.default_tolerations,
    ));
    bootstrap::ensure_defaults(&app, &admin_token, address.port()).await?;
    let advertised = config
        .advertise_address
        .or_else(|| (!address.ip().is_unspecified()).then(|| address.ip()))
        .or_else(|| host_ipv4_addresses().into_iter().map(IpAddr::V4).next());
    match advertised {
        Some(ip) => {
            bootstrap::ensure_api_endpoints(
                &app,
                &admin_token,
                SocketAddr::new(ip, address.port()),
            )
            .await?;
        }
        None => tracing::warn!(
            "no address to advertise: pods cannot reach the API through the kubernetes Service \
             (set --advertise-address)"
        ),
    }
    let scheduler = config
        .scheduler
        .map(|c| scheduler::spawn(Arc::clone(&store), app.clone(), &admin_token, c));
    let mut controllers = controllers::spawn_with(
        Arc::clone(&store),
        app.clone(),
        &admin_token,
        config.controllers,
    );

    let host = if address.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        address.ip().to_string()
    };
    let server = format!("https://{host}:{}", address.port());
    let kubeconfig_path = kubeconfig_path(&config.data_dir);
    std::fs::write(
        &kubeconfig_path,
        kubeconfig(&server, &pki.ca_pem, &admin_token),
    )
    .map_err(io(format!("writing {}", kubeconfig_path.display())))?;

    let (stop, stopped) = oneshot::channel::<()>();
    let listeners = Listeners {
        tls: listener,
        plain,
    };
    let task = tokio::spawn(async move {
        let served = api::serve(app, listeners, tls, async {
            let _ = stopped.await;
        })
        .await;
        // The store closes when its last handle goes: serving is over,
        // and the scheduler's and controllers' tasks, which hold it too,
        // are stopped.
        if let Some(mut scheduler) = scheduler {
            scheduler.shutdown().await;
        }
        controllers.shutdown().await;
        drop(store);
        served.map_err(io("serving the API"))
    });
    Ok(RunningControl {
        address,
        server,
        kubeconfig: kubeconfig_path,
        admin_token,
        credentials,
        stop: Some(stop),
        task: Some(task),
    })
}
