//! The capstan control binary: flags, logging, and the store. The API,
//! scheduler and controllers arrive in their own modules.

use std::{path::PathBuf, sync::Arc};

use capstan_control::store::{
    Store,
    embedded::{EmbeddedConfig, EmbeddedStore},
    etcd::EtcdStore,
};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "capstan-control", version, about = "capstan control service")]
struct Args {
    /// Persistent state: the embedded store, certificates, tokens.
    #[arg(long, default_value = "/var/lib/capstan/control")]
    data_dir: PathBuf,
    /// Keep cluster state in this etcd cluster instead of the embedded store
    /// (comma-separated client URLs, e.g. http://10.0.0.1:2379).
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();

    let store: Arc<dyn Store> = if args.etcd_servers.is_empty() {
        let dir = args.data_dir.join("store");
        Arc::new(EmbeddedStore::open(&dir, EmbeddedConfig::default())?)
    } else {
        Arc::new(EtcdStore::connect(&args.etcd_servers).await?)
    };
    let revision = store.current_revision().await?;
    tracing::info!(%revision, ?store, "store ready (no API served yet)");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopped");
    Ok(())
}
