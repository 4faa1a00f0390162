//! The capstan control binary: flags, logging, and the service until a
//! signal.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use capstan_control::{
    api::DefaultTolerations,
    controllers::ControllersConfig,
    scheduler::SchedulerConfig,
    service::{self, ControlConfig},
};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "capstan-control", version, about = "capstan control service")]
struct Args {
    /// Persistent state: the embedded store, certificates, tokens.
    #[arg(long, default_value = "/var/lib/capstan/control", global = true)]
    data_dir: PathBuf,
    /// Where the API listens (HTTPS).
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: SocketAddr,
    /// Also serve plain HTTP on this loopback address (e.g. 127.0.0.1:8080).
    #[arg(long)]
    insecure_listen: Option<SocketAddr>,
    /// Extra names and addresses for the serving certificate.
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// The address pods reach the API at through the `kubernetes` Service
    /// (default: the --listen address, or this host's first IPv4 address).
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// Keep cluster state in this etcd cluster instead of the embedded store
    /// (comma-separated client URLs, e.g. http://10.0.0.1:2379).
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// kube-scheduler's KubeSchedulerConfiguration (profiles and their
    /// NodeResourcesFit scoring strategy, percentageOfNodesToScore).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// Run without the built-in scheduler (another one places pods).
    #[arg(long, conflicts_with = "scheduler_config")]
    disable_scheduler: bool,
    /// How long a node may go without a heartbeat before it is marked
    /// unreachable (seconds, or a duration such as 40s, 2m, 500ms).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// How long new pods tolerate a not-ready node before eviction.
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// How long new pods tolerate an unreachable node before eviction.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    #[command(subcommand)]
    command: Option<Command>,
}

/// A duration as Kubernetes' flags take it: `40s`, `2m`, `500ms`, `1h`,
/// or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 40s"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        _ => Err(format!("{text:?}: the unit must be ms, s, m or h")),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the token an agent on node NAME authenticates with.
    NodeToken { name: String },
}

async fn signalled() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Control allocates and frees small objects from many threads at once
/// (decoding, informers, the scheduler); glibc's malloc spent a quarter of
/// the scheduler benchmark in its own code and arena locks, and kept
/// freed memory in per-thread arenas. mimalloc's thread-local free lists
/// do neither.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` and `mi_option_purge_delay`
/// (their places in `mi_option_e` of the mimalloc 3 that libmimalloc-sys
/// bundles; the Rust bindings name neither).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Arenas are committed as used and freed memory goes back to the system
/// at once, so control's resident memory follows what it holds (the API
/// benchmark's 10,000 pods: 180 MiB with mimalloc's defaults, under
/// 120 MiB with these). An operator's MIMALLOC_ARENA_EAGER_COMMIT or
/// MIMALLOC_PURGE_DELAY wins.
fn return_freed_memory_promptly() {
    for (option, variable, value) in [
        (
            MI_OPTION_ARENA_EAGER_COMMIT,
            "MIMALLOC_ARENA_EAGER_COMMIT",
            0,
        ),
        (MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mi_option_set only changes an allocator tunable;
            // both are documented as settable while running.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
}

fn main() -> anyhow::Result<()> {
    return_freed_memory_promptly();
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
    if let Some(Command::NodeToken { name }) = &args.command {
        let (credentials, _) = capstan_control::api::Credentials::load_or_create(&args.data_dir)
            .with_context(|| format!("credentials under {}", args.data_dir.display()))?;
        println!("{}", credentials.node_token(name));
        return Ok(());
    }
    let scheduler = match (&args.scheduler_config, args.disable_scheduler) {
        (_, true) => None,
        (Some(path), false) => Some(SchedulerConfig::load(path)?),
        (None, false) => Some(SchedulerConfig::default()),
    };
    let running = service::start(ControlConfig {
        data_dir: args.data_dir,
        listen: args.listen,
        insecure_listen: args.insecure_listen,
        tls_san: args.tls_san,
        advertise_address: args.advertise_address,
        etcd_servers: args.etcd_servers,
        scheduler,
        controllers: ControllersConfig {
            node_monitor_grace: args.node_monitor_grace_period,
        },
        default_tolerations: DefaultTolerations {
            not_ready_seconds: args.default_not_ready_toleration_seconds,
            unreachable_seconds: args.default_unreachable_toleration_seconds,
        },
    })
    .await?;
    let kubeconfig = running.kubeconfig.display().to_string();
    tracing::info!(address = %running.address, %kubeconfig, "serving the Kubernetes API");
    println!(
        "capstan-control: serving https://{}; kubeconfig: {kubeconfig}",
        running.address
    );
    println!("  try: kubectl --kubeconfig {kubeconfig} get namespaces");
    running.run_until(signalled()).await?;
    tracing::info!("stopped");
    Ok(())
}
