//! A control service for tests: in-process on a free loopback port, its
//! data under the harness instance, restartable on the same port and data,
//! and the real kubectl (each installed version) pointed at it.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use anyhow::{Context, bail};
use capstan_control::{
    api::DefaultTolerations,
    controllers::ControllersConfig,
    scheduler::SchedulerConfig,
    service::{self, ControlConfig, RunningControl},
};

use crate::Instance;

/// What a test may change of control's behaviour: the controllers'
/// timings and the tolerations new pods get.
#[derive(Debug, Clone, Copy, Default)]
pub struct ControlSettings {
    pub controllers: ControllersConfig,
    pub default_tolerations: DefaultTolerations,
}

/// A running (or stopped, between restarts) control.
#[derive(Debug)]
pub struct TestControl {
    data_dir: PathBuf,
    cache_dir: PathBuf,
    address: SocketAddr,
    tls_san: Vec<String>,
    settings: ControlSettings,
    running: Option<RunningControl>,
}

impl TestControl {
    /// Control on a loopback port of the caller's network namespace.
    pub async fn start(instance: &Instance) -> anyhow::Result<Self> {
        Self::start_with(
            instance,
            "127.0.0.1:0".parse()?,
            Vec::new(),
            ControlSettings::default(),
        )
        .await
    }

    /// Control on every address of the test host the caller runs in (see
    /// `Netns::runtime`), reachable by agents at `host_address`.
    pub async fn start_on_host(
        instance: &Instance,
        host_address: IpAddr,
        settings: ControlSettings,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            instance,
            "0.0.0.0:0".parse()?,
            vec![host_address.to_string()],
            settings,
        )
        .await
    }

    async fn start_with(
        instance: &Instance,
        listen: SocketAddr,
        tls_san: Vec<String>,
        settings: ControlSettings,
    ) -> anyhow::Result<Self> {
        crate::require_root();
        let data_dir = instance.data_dir("control");
        let cache_dir = instance.data_dir("kube-cache");
        let running = start_at(&data_dir, listen, &tls_san, settings).await?;
        Ok(Self {
            address: running.address,
            data_dir,
            cache_dir,
            tls_san,
            settings,
            running: Some(running),
        })
    }

    /// The token of the agent of node `node`.
    pub fn node_token(&self, node: &str) -> anyhow::Result<String> {
        Ok(self
            .running
            .as_ref()
            .context("control is stopped")?
            .credentials
            .node_token(node))
    }

    /// The cluster CA, which agents trust.
    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("pki/ca.crt")
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn kubeconfig(&self) -> PathBuf {
        service::kubeconfig_path(&self.data_dir)
    }

    pub fn admin_token(&self) -> anyhow::Result<String> {
        Ok(self
            .running
            .as_ref()
            .context("control is stopped")?
            .admin_token
            .clone())
    }

    /// Stops control, closing its store.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(running) = self.running.take() {
            running.stop().await?;
        }
        Ok(())
    }

    /// Stops control and starts it again on the same port and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        // Tasks still finishing may hold the store file for a moment.
        let mut last = None;
        for _ in 0..100 {
            match start_at(&self.data_dir, self.address, &self.tls_san, self.settings).await {
                Ok(running) => {
                    self.running = Some(running);
                    return Ok(());
                }
                Err(err) => last = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("control did not restart")))
    }

    /// `kubectl` (a path from [`kubectl_binaries`]) set to talk to this
    /// control, with a discovery cache of its own.
    pub fn kubectl(&self, binary: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(binary);
        command
            .env("KUBECONFIG", self.kubeconfig())
            .env(
                "KUBECACHEDIR",
                self.cache_dir.join(binary.file_name().unwrap_or_default()),
            )
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .kill_on_drop(true);
        command
    }
}

async fn start_at(
    data_dir: &Path,
    listen: SocketAddr,
    tls_san: &[String],
    settings: ControlSettings,
) -> anyhow::Result<RunningControl> {
    Ok(service::start(ControlConfig {
        data_dir: data_dir.to_owned(),
        listen,
        insecure_listen: None,
        tls_san: tls_san.to_vec(),
        // The host address agents reach control at, when it is a test host.
        advertise_address: tls_san.first().and_then(|san| san.parse().ok()),
        etcd_servers: Vec::new(),
        scheduler: Some(SchedulerConfig::default()),
        controllers: settings.controllers,
        default_tolerations: settings.default_tolerations,
    })
    .await?)
}

/// The kubectl on PATH, and the oldest and newest of the versioned
/// binaries (kubectl.1.N) installed beside the real one.
pub fn kubectl_binaries() -> anyhow::Result<Vec<PathBuf>> {
    let on_path = which("kubectl").context("kubectl is not on PATH")?;
    let real = std::fs::canonicalize(&on_path)?;
    let dir = real.parent().context("kubectl has no directory")?;
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let minor = name.strip_prefix("kubectl.1.")?.parse().ok()?;
            Some((minor, entry.path()))
        })
        .collect();
    versioned.sort();
    let mut binaries = vec![on_path];
    if let (Some(oldest), Some(newest)) = (versioned.first(), versioned.last()) {
        binaries.push(oldest.1.clone());
        if newest.0 != oldest.0 {
            binaries.push(newest.1.clone());
        }
    }
    Ok(binaries)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// stdout of a successful command; an error with its output otherwise.
pub fn succeeded(output: &Output, what: &str) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
