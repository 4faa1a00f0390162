//! The capstan control binary. The API, store, scheduler and controllers
//! arrive in their own modules; until then it only runs and stops cleanly.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "capstan-control", version, about = "capstan control service")]
struct Args {
    /// Persistent state: the store, certificates, tokens.
    #[arg(long, default_value = "/var/lib/capstan/control")]
    data_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    tracing::info!(data_dir = %args.data_dir.display(), "control running (no API served yet)");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopped");
    Ok(())
}
