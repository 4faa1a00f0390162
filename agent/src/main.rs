//! The capstan agent binary: flags, logging, and the node's long-lived parts.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use capstan_agent::{
    cgroup::Hierarchies,
    lb,
    runtime::{self, ContainerdDaemon, DaemonConfig},
};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "capstan-agent", version, about = "capstan node agent")]
struct Args {
    /// An existing containerd's socket. Without it the agent runs its own
    /// containerd under --data-dir and --run-dir.
    #[arg(long, env = "CAPSTAN_CONTAINERD_SOCKET")]
    containerd_socket: Option<PathBuf>,
    /// Persistent state (images, snapshots, allocations).
    #[arg(long, default_value = "/var/lib/capstan/agent")]
    data_dir: PathBuf,
    /// Runtime state (sockets, task bundles).
    #[arg(long, default_value = "/run/capstan/agent")]
    run_dir: PathBuf,
    /// cgroup under which the agent places pods; Service translation applies to it.
    #[arg(long, default_value = "capstan")]
    cgroup_root: String,
    /// A bpf filesystem mount; the datapath pins its maps in a directory below it.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();

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
    let version = containerd.version().await?;
    tracing::info!(%version, socket = %socket.display(), "containerd connected");

    lb::mount_bpffs(&args.bpffs)?;
    let mut datapath = lb::Datapath::load(&args.bpffs.join("capstan"))?;
    let pods_cgroup = Hierarchies::detect()?.unified.join(&args.cgroup_root);
    std::fs::create_dir_all(&pods_cgroup)
        .with_context(|| format!("creating {}", pods_cgroup.display()))?;
    datapath.attach(&pods_cgroup)?;
    tracing::info!(cgroup = %pods_cgroup.display(), "service datapath attached");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    datapath.detach()?;
    tracing::info!("stopped");
    Ok(())
}
