//! The capstan agent binary: flags, logging, and the node's long-lived
//! parts wired together. Run by containerd's shim as
//! `capstan-agent --log-to <file>`, it is instead the log driver of one
//! container.

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use capstan_agent::{
    cgroup::Hierarchies,
    lb, logs,
    network::{AddressPool, Iproute2, NodeNetwork, PodSubnet, Sandboxes},
    node::{self, NodeConfig},
    pod::{self, DnsSettings, Images, PodDirs, PodRuntime},
    runtime::{self, ContainerdDaemon, DaemonConfig, RegistryClient},
};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "capstan-agent", version, about = "capstan node agent")]
struct Args {
    /// control's API, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "CAPSTAN_SERVER")]
    server: String,
    /// The node's token (`capstan-control node-token <node>` prints it).
    #[arg(long, env = "CAPSTAN_TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the node's token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The cluster CA (control's data dir, pki/ca.crt).
    #[arg(long)]
    ca_file: PathBuf,
    /// The node's name; the host name when not given.
    #[arg(long)]
    node_name: Option<String>,
    /// The node's address; the address of the default route's interface
    /// when not given.
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// An existing containerd's socket. Without it the agent runs its own
    /// containerd under --data-dir and --run-dir.
    #[arg(long, env = "CAPSTAN_CONTAINERD_SOCKET")]
    containerd_socket: Option<PathBuf>,
    /// Persistent state (images, snapshots, allocations, volumes).
    #[arg(long, default_value = "/var/lib/capstan/agent")]
    data_dir: PathBuf,
    /// Runtime state (sockets, pod namespaces and files).
    #[arg(long, default_value = "/run/capstan/agent")]
    run_dir: PathBuf,
    /// Container logs, as the kubelet keeps them.
    #[arg(long, default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,
    /// cgroup under which the agent places pods; Service translation applies to it.
    #[arg(long, default_value = "capstan")]
    cgroup_root: String,
    /// A bpf filesystem mount; the datapath pins its maps in a directory below it.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// Pod network namespaces are named <prefix><pod uid>.
    #[arg(long, default_value = "capstan-pod-")]
    netns_prefix: String,
    /// The port of the agent's HTTPS server (logs).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    #[arg(long, default_value = "10.96.0.10")]
    cluster_dns: std::net::Ipv4Addr,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Registries (host[:port]) reached over plain HTTP; loopback ones
    /// always are.
    #[arg(long, value_delimiter = ',')]
    insecure_registry: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() == 3 && argv[1] == "--log-to" {
        return logs::driver::run(std::path::Path::new(&argv[2]))
            .with_context(|| format!("writing logs to {}", argv[2].to_string_lossy()));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))?
            .trim()
            .to_owned(),
        (None, None) => anyhow::bail!("give the node's token with --token or --token-file"),
    };
    let ca_pem = std::fs::read_to_string(&args.ca_file)
        .with_context(|| format!("reading {}", args.ca_file.display()))?;
    let node_name = match &args.node_name {
        Some(name) => name.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
    };
    let host_ip = match args.node_ip {
        Some(ip) => ip.to_string(),
        None => capstan_agent::node::facts::default_address()
            .context("finding the node's address: give it with --node-ip")?
            .to_string(),
    };

    let (socket, _own_containerd) = match &args.containerd_socket {
        Some(socket) => (socket.clone(), None),
        None => {
            let config = DaemonConfig::new(
                args.data_dir.join("containerd"),
                args.run_dir.join("containerd"),
            );
            let command = config.command()?;
            let daemon = ContainerdDaemon::spawn(config, command, Duration::from_secs(30))?;
            tracing::info!(pid = daemon.pid(), "started containerd");
            (daemon.config().socket(), Some(daemon))
        }
    };
    let containerd = runtime::Containerd::connect(&socket, runtime::NAMESPACE).await?;
    let containerd_version = containerd.version().await?;
    tracing::info!(version = %containerd_version, socket = %socket.display(), "containerd connected");

    let client = cluster_client(&args.server, &token, &ca_pem)?;
    let identity = logs::tls::serving_identity(
        &args.data_dir.join("pki"),
        &[node_name.clone(), host_ip.clone()],
    )?;
    let node_config = NodeConfig {
        name: node_name.clone(),
        host_ip: host_ip.clone(),
        port: args.port,
        serving_cert_sha256: identity.sha256.clone(),
        max_pods: args.max_pods,
        data_dir: args.data_dir.clone(),
        containerd_version,
    };
    let registered = node::register(&client, &node_config).await?;
    let pod_cidr = registered
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .unwrap_or_default();
    tracing::info!(node = %node_name, %pod_cidr, "node registered");

    let subnet = PodSubnet::parse(&pod_cidr)?;
    let network = NodeNetwork::new(subnet, Arc::new(Iproute2));
    network.ensure().await?;
    let pool = AddressPool::open(args.data_dir.join("ipam"), subnet)?;
    let pods_run_dir = args.run_dir.join("pods");
    let sandboxes = Sandboxes::new(
        network,
        pool,
        args.netns_prefix.clone(),
        pods_run_dir.clone(),
    );

    lb::mount_bpffs(&args.bpffs)?;
    let mut datapath = lb::Datapath::load(&args.bpffs.join("capstan"))?;
    let hierarchies = Hierarchies::detect()?;
    let pods_cgroup = hierarchies.unified.join(&args.cgroup_root);
    std::fs::create_dir_all(&pods_cgroup)
        .with_context(|| format!("creating {}", pods_cgroup.display()))?;
    datapath.attach(&pods_cgroup)?;
    tracing::info!(cgroup = %pods_cgroup.display(), "service datapath attached");

    let listener = tokio::net::TcpListener::bind((host_ip.parse::<IpAddr>()?, args.port))
        .await
        .with_context(|| format!("listening on {host_ip}:{}", args.port))?;
    let tls = logs::tls::server_config(&identity, &ca_pem)?;
    let server = tokio::spawn(logs::server::serve(
        listener,
        logs::server::app(args.pod_log_dir.clone(), containerd.clone()),
        tls,
    ));

    let host_resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let runtime = Arc::new(PodRuntime {
        node_name,
        host_ip,
        images: Images::new(
            containerd.clone(),
            RegistryClient::new(args.insecure_registry.clone())?,
        ),
        containerd,
        sandboxes,
        client: client.clone(),
        dirs: PodDirs {
            run: pods_run_dir,
            data: args.data_dir.join("pods"),
            logs: args.pod_log_dir.clone(),
        },
        cgroup_root: args.cgroup_root.clone(),
        cgroups: hierarchies.clone(),
        log_driver: std::env::current_exe().context("finding the agent's own binary")?,
        dns: DnsSettings {
            nameserver: args.cluster_dns,
            cluster_domain: args.cluster_domain.clone(),
            host_resolv_conf,
        },
    });
    let heartbeat = tokio::spawn(node::heartbeat(client, node_config, registered));
    let pods = tokio::spawn(pod::run_pods(runtime));

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        result = pods => match result {
            Ok(Ok(())) => tracing::warn!("the pod watch ended"),
            Ok(Err(err)) => tracing::error!(%err, "running pods"),
            Err(err) => tracing::error!(%err, "the pod manager failed"),
        },
    }
    heartbeat.abort();
    server.abort();
    datapath.detach()?;
    tracing::info!("stopped; pods keep running for the next agent to adopt");
    Ok(())
}

/// A client of control's API with the node's token, trusting the cluster
/// CA.
fn cluster_client(server: &str, token: &str, ca_pem: &str) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::new(server.parse().context("--server is not a URL")?);
    let roots = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .map(|cert| cert.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .context("--ca-file is not a PEM certificate")?;
    config.root_cert = Some(roots);
    config.auth_info.token = Some(token.to_owned().into());
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = None;
    Ok(kube::Client::try_from(config)?)
}
