//! The agent assembled from an [`AgentConfig`], in the order its parts
//! need each other: containerd, the node's registration, the pod network,
//! the Service datapath, the HTTPS server with every module's routes, the
//! cluster cache (the agent's one watch of each kind), the heartbeat and
//! the pod workers (with the node's log collector, started on demand).
//! main.rs parses flags into the config and calls [`run_until`]; tests can
//! do the same without a command line.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use crate::{
    cache::{ClusterCache, ObjectKey},
    cgroup::{CgroupError, Hierarchies},
    dns,
    events::ApiEvents,
    lb::{self, DatapathError, ServiceTableError},
    logs,
    network::{
        self, AddressPool, Iproute2, NetworkError, NodeNetwork, PodNetworkMode, PodRoutes,
        PodSubnet, Sandboxes, Uplink,
    },
    node::{self, NodeConfig, NodeError},
    pod::{self, DnsSettings, Images, PodDirs, PodRuntime, SystemClock},
    runtime::{self, ContainerdDaemon, DaemonConfig, RegistryClient, RegistryError, RuntimeError},
    server::{self, tls::TlsError},
};

/// Everything the agent is told at start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// control's API, e.g. https://10.0.0.1:6443.
    pub server: String,
    /// The node's token.
    pub token: String,
    /// The cluster CA, PEM.
    pub ca_pem: String,
    pub node_name: String,
    /// The address the node is reached at (and the server listens on).
    pub host_ip: IpAddr,
    /// An existing containerd's socket; None runs a private one.
    pub containerd_socket: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub pod_log_dir: PathBuf,
    /// The cgroup pods are placed under.
    pub cgroup_root: String,
    /// The cgroup whose processes (pods' and the host's) get Services
    /// balanced; "/" is the whole host.
    pub service_cgroup: String,
    /// How pods reach other nodes' pods.
    pub pod_network: PodNetworkMode,
    /// The most Service frontends (address, port, protocol) the datapath
    /// programs; capped by its maps' size.
    pub max_service_frontends: u32,
    /// Whether TCP connections translated to a backend that left are
    /// destroyed too (connected UDP sockets always are).
    pub destroy_stale_tcp: bool,
    /// A bpf filesystem mount for the datapath's pins.
    pub bpffs: PathBuf,
    pub netns_prefix: String,
    /// The HTTPS server's port (10250).
    pub port: u16,
    pub max_pods: u32,
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: String,
    /// The TTL of the cluster zone's answers, seconds.
    pub dns_ttl: u32,
    /// Where names outside the zone go; empty: the host's resolv.conf.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// Registries reached over plain HTTP.
    pub insecure_registry: Vec<String>,
    /// The agent's own binary, which runs the node's log collector.
    pub agent_program: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("adopting the pinned service datapath: {0}")]
    ServiceTable(#[from] ServiceTableError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "the node's address {0} is IPv6; the pod network is IPv4 only: give --node-ip an IPv4 address"
    )]
    Ipv6NodeAddress(std::net::Ipv6Addr),
    #[error("control's API client: {0}")]
    Client(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until `until` completes or the pod watch ends. Pods keep
/// running after it returns, for the next agent to adopt.
pub async fn run_until(
    config: AgentConfig,
    until: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let (socket, _own_containerd) = match &config.containerd_socket {
        Some(socket) => (socket.clone(), None),
        None => {
            let daemon_config = DaemonConfig::new(
                config.data_dir.join("containerd"),
                config.run_dir.join("containerd"),
            );
            let command = daemon_config.command()?;
            let daemon = ContainerdDaemon::spawn(daemon_config, command, Duration::from_secs(30))?;
            tracing::info!(pid = daemon.pid(), "started containerd");
            (daemon.config().socket(), Some(daemon))
        }
    };
    let containerd = runtime::Containerd::connect(&socket, runtime::NAMESPACE).await?;
    let containerd_version = containerd.version().await?;
    tracing::info!(version = %containerd_version, socket = %socket.display(), "containerd connected");

    let host_ip = config.host_ip.to_string();
    let client = cluster_client(&config.server, &config.token, &config.ca_pem)?;
    let identity = server::tls::serving_identity(
        &config.data_dir.join("pki"),
        &[config.node_name.clone(), host_ip.clone()],
    )?;
    let node_config = NodeConfig {
        name: config.node_name.clone(),
        host_ip: host_ip.clone(),
        port: config.port,
        serving_cert_sha256: identity.sha256.clone(),
        max_pods: config.max_pods,
        data_dir: config.data_dir.clone(),
        containerd_version,
    };
    let registered = node::register(&client, &node_config).await?;
    let pod_cidr = registered
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .unwrap_or_default();
    tracing::info!(node = %config.node_name, %pod_cidr, "node registered");

    let subnet = PodSubnet::parse(&pod_cidr)?;
    let uplink = match config.host_ip {
        IpAddr::V4(address) => Uplink::find(address)?,
        IpAddr::V6(address) => return Err(ServiceError::Ipv6NodeAddress(address)),
    };
    let pod_mtu = config.pod_network.pod_mtu(&uplink);
    tracing::info!(uplink = %uplink.name, pod_mtu, mode = ?config.pod_network, "pod network");
    let network = NodeNetwork::new(subnet, pod_mtu, Arc::new(Iproute2));
    network.ensure().await?;
    network::enable_forwarding()?;
    network::masquerade(&network::Nft, &subnet).await?;
    // The node's DNS server listens on the pods' gateway, which every pod
    // and the host reach; the kube-dns address is sent there, node-local.
    let dns_address = std::net::SocketAddr::from((subnet.gateway(), 53));
    let dns_udp = tokio::net::UdpSocket::bind(dns_address)
        .await
        .map_err(|source| ServiceError::Io {
            what: format!("listening for DNS on {dns_address}/udp"),
            source,
        })?;
    let dns_tcp = tokio::net::TcpListener::bind(dns_address)
        .await
        .map_err(|source| ServiceError::Io {
            what: format!("listening for DNS on {dns_address}/tcp"),
            source,
        })?;
    let pool = AddressPool::open(config.data_dir.join("ipam"), subnet)?;
    let pods_run_dir = config.run_dir.join("pods");
    let sandboxes = Sandboxes::new(
        network,
        pool,
        config.netns_prefix.clone(),
        pods_run_dir.clone(),
    );

    lb::mount_bpffs(&config.bpffs)?;
    let mut datapath = lb::Datapath::load(&config.bpffs.join(lb::PIN_DIR))?;
    let hierarchies = Hierarchies::detect()?;
    let pods_cgroup = hierarchies.unified.join(&config.cgroup_root);
    std::fs::create_dir_all(&pods_cgroup).map_err(|source| ServiceError::Io {
        what: format!("creating {}", pods_cgroup.display()),
        source,
    })?;
    let service_cgroup = hierarchies
        .unified
        .join(config.service_cgroup.trim_start_matches('/'));
    datapath.attach(&service_cgroup)?;
    tracing::info!(cgroup = %service_cgroup.display(), "service datapath attached");

    let listener = tokio::net::TcpListener::bind((config.host_ip, config.port))
        .await
        .map_err(|source| ServiceError::Io {
            what: format!("listening on {host_ip}:{}", config.port),
            source,
        })?;
    let tls = server::tls::server_config(&identity, &config.ca_pem)?;
    let routes = [logs::routes::routes(
        config.pod_log_dir.clone(),
        containerd.clone(),
    )];
    let server = tokio::spawn(server::serve(listener, server::app(routes), tls));

    let host_resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let runtime = Arc::new(PodRuntime {
        node_name: config.node_name.clone(),
        host_ip,
        images: Images::new(
            Arc::new(containerd.clone()),
            RegistryClient::new(config.insecure_registry.clone())?,
        ),
        containerd: Arc::new(containerd),
        sandboxes,
        client: client.clone(),
        dirs: PodDirs {
            run: pods_run_dir,
            data: config.data_dir.join("pods"),
            logs: config.pod_log_dir.clone(),
        },
        cgroup_root: config.cgroup_root.clone(),
        cgroups: Arc::new(hierarchies.clone()),
        logs: Arc::new(logs::Collector::new(
            config.run_dir.join("log-collector"),
            config.agent_program.clone(),
            Some(pods_cgroup.join("log-collector")),
        )),
        dns: DnsSettings {
            nameserver: config.cluster_dns,
            cluster_domain: config.cluster_domain.clone(),
            host_resolv_conf: host_resolv_conf.clone(),
        },
        clock: Arc::new(SystemClock),
    });
    let mut watches = tokio::task::JoinSet::new();
    let cache = ClusterCache::start(&client, &config.node_name, &mut watches);
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), node_config, registered));
    let pods = tokio::spawn(pod::run_pods(runtime, Arc::clone(&cache.pods)));
    let (stop_routes, routes_stopped) = tokio::sync::oneshot::channel();
    let routes = tokio::spawn(
        PodRoutes::new(
            config.node_name.clone(),
            Arc::clone(&cache.nodes),
            Arc::new(Iproute2),
            config.pod_network,
            uplink,
            subnet,
        )
        .run(routes_stopped),
    );
    let max_frontends = config
        .max_service_frontends
        .min(capstan_ebpf_common::MAX_FRONTENDS);
    let zone = Arc::new(dns::ZoneHandle::default());
    let forwarder = match config.dns_upstreams.is_empty() {
        true => dns::Forwarder::from_resolv_conf(&host_resolv_conf, config.cluster_dns.into()),
        false => dns::Forwarder::new(config.dns_upstreams.clone()),
    };
    tracing::info!(upstreams = ?forwarder.upstreams(), "names outside the cluster zone");
    let answerer = Arc::new(dns::Answerer {
        domain: config.cluster_domain.clone(),
        ttl: config.dns_ttl,
        zone: Arc::clone(&zone),
        forwarder,
    });
    let dns_servers = [
        tokio::spawn(dns::serve_udp(dns_udp, Arc::clone(&answerer))),
        tokio::spawn(dns::serve_tcp(dns_tcp, answerer)),
        tokio::spawn({
            let keep = dns::builder::keep_zone(
                config.cluster_domain.clone(),
                Arc::clone(&cache.services),
                Arc::clone(&cache.endpoint_slices),
                zone,
            );
            async move {
                keep.await;
                Ok(())
            }
        }),
    ];
    tracing::info!(address = %dns_address, "cluster DNS served");
    let table = lb::ServiceTable::adopt(datapath.take_maps()?, max_frontends)?;
    let events = ApiEvents::start(client.clone(), config.node_name.clone());
    let reaper = lb::NetlinkReaper::new(
        datapath.take_reverse_map()?,
        config.netns_prefix.clone(),
        config.destroy_stale_tcp,
    );
    let balancer = tokio::spawn(
        lb::Balancer::new(
            config.node_name.clone(),
            Arc::clone(&cache.services),
            Arc::clone(&cache.endpoint_slices),
            table,
        )
        .with_reaper(Box::new(lb::in_background(reaper)))
        .with_events(events)
        .with_node_local(
            ObjectKey {
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
            },
            subnet.gateway(),
        )
        .run(),
    );

    tokio::select! {
        () = until => {}
        result = pods => match result {
            Ok(Ok(())) => tracing::warn!("the pod watch ended"),
            Ok(Err(err)) => tracing::error!(%err, "running pods"),
            Err(err) => tracing::error!(%err, "the pod manager failed"),
        },
    }
    heartbeat.abort();
    server.abort();
    balancer.abort();
    for server in dns_servers {
        server.abort();
    }
    let _ = stop_routes.send(());
    if tokio::time::timeout(Duration::from_secs(10), routes)
        .await
        .is_err()
    {
        tracing::warn!("removing the routes to other nodes' pods took too long");
    }
    watches.abort_all();
    // The datapath stays attached, as the pods stay running: Services keep
    // working until the next agent adopts both.
    tracing::info!("stopped; pods and the service datapath stay for the next agent to adopt");
    Ok(())
}

/// A client of control's API with the node's token, trusting the cluster
/// CA.
fn cluster_client(server: &str, token: &str, ca_pem: &str) -> Result<kube::Client, ServiceError> {
    let url = server.parse().map_err(|err| {
        ServiceError::Client(format!("the server {server:?} is not a URL: {err}"))
    })?;
    let mut config = kube::Config::new(url);
    let roots = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .map(|cert| cert.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ServiceError::Io {
            what: "reading the cluster CA (not a PEM certificate)".into(),
            source,
        })?;
    config.root_cert = Some(roots);
    config.auth_info.token = Some(token.to_owned().into());
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = None;
    kube::Client::try_from(config).map_err(|err| ServiceError::Client(err.to_string()))
}
