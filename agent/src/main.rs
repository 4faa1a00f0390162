//! The capstan agent binary: flags and logging; service.rs assembles the
//! node's long-lived parts. Run as `capstan-agent --log-collector <dir>`
//! (the agent starts it so), it is instead the node's log collector; as
//! `capstan-agent lb dump`, it prints the Service datapath.

use std::{net::IpAddr, path::PathBuf};

use anyhow::Context;
use capstan_agent::{
    lb, logs,
    service::{self, AgentConfig},
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
    /// cgroup (v2, relative to the hierarchy's root) under which the agent
    /// places pods.
    #[arg(long, default_value = "capstan")]
    cgroup_root: String,
    /// cgroup whose processes get Services balanced: the whole host by
    /// default; a node's own subtree when several nodes share a machine.
    #[arg(long, default_value = "/")]
    service_cgroup: String,
    /// How pods reach other nodes' pods: auto (directly to nodes on this
    /// host's subnet, VXLAN to the others), host-gw or vxlan.
    #[arg(long, default_value = "auto")]
    pod_network: capstan_agent::network::PodNetworkMode,
    /// The most Service frontends (ClusterIP, port, protocol) the datapath
    /// programs; Services beyond it get a Warning event. At most 65536,
    /// the size of its maps.
    #[arg(long, default_value_t = capstan_ebpf_common::MAX_FRONTENDS)]
    max_service_frontends: u32,
    /// Also destroy TCP connections translated to a Service backend that
    /// left (connected UDP sockets always are): their peers get a reset.
    #[arg(long)]
    destroy_stale_tcp: bool,
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
    /// The TTL of cluster DNS answers, in seconds (CoreDNS's default).
    #[arg(long, default_value_t = 5)]
    dns_ttl: u32,
    /// Resolvers (ip:port) for names outside the cluster zone; the host's
    /// /etc/resolv.conf nameservers when not given.
    #[arg(long, value_delimiter = ',')]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// Registries (host[:port]) reached over plain HTTP; loopback ones
    /// always are.
    #[arg(long, value_delimiter = ',')]
    insecure_registry: Vec<String>,
}

/// `capstan-agent lb dump`: the Service datapath as programmed.
#[derive(Debug, Parser)]
#[command(name = "capstan-agent lb")]
struct LbArgs {
    #[command(subcommand)]
    command: LbCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LbCommand {
    /// Print every frontend, its backends and counters, and map occupancy.
    Dump {
        /// The bpf filesystem the agent pins under (its --bpffs).
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() == 3 && argv[1] == "--log-collector" {
        return logs::collector::run(std::path::Path::new(&argv[2]))
            .with_context(|| format!("collecting logs in {}", argv[2].to_string_lossy()));
    }
    if argv.get(1).is_some_and(|a| a == "lb") {
        let LbArgs {
            command: LbCommand::Dump { bpffs },
        } = LbArgs::parse_from(&argv[1..]);
        print!("{}", lb::dump(&bpffs.join(lb::PIN_DIR))?);
        return Ok(());
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
        Some(ip) => ip,
        None => capstan_agent::node::facts::default_address()
            .context("finding the node's address: give it with --node-ip")?
            .into(),
    };
    let config = AgentConfig {
        server: args.server,
        token,
        ca_pem,
        node_name,
        host_ip,
        containerd_socket: args.containerd_socket,
        data_dir: args.data_dir,
        run_dir: args.run_dir,
        pod_log_dir: args.pod_log_dir,
        cgroup_root: args.cgroup_root,
        service_cgroup: args.service_cgroup,
        pod_network: args.pod_network,
        destroy_stale_tcp: args.destroy_stale_tcp,
        max_service_frontends: args.max_service_frontends,
        bpffs: args.bpffs,
        netns_prefix: args.netns_prefix,
        port: args.port,
        max_pods: args.max_pods,
        cluster_dns: args.cluster_dns,
        cluster_domain: args.cluster_domain,
        dns_ttl: args.dns_ttl,
        dns_upstreams: args.dns_upstream,
        insecure_registry: args.insecure_registry,
        agent_program: std::env::current_exe().context("finding the agent's own binary")?,
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    service::run_until(config, stop).await?;
    Ok(())
}
