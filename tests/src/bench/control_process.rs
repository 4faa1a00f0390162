//! The release control binary as a process of its own, on loopback, over
//! a data directory the benchmark owns (so it can be stopped and started
//! again on the same state), with a kube-rs client for it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

/// The control process; stopped (by its PID) on drop.
pub struct ControlProcess {
    child: Child,
    pub client: Client,
    /// When the process was started.
    pub spawned_at: Instant,
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn control_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/capstan-control")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl ControlProcess {
    /// Starts control on `data_dir` with `extra` flags and waits until it
    /// answers.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let binary = control_binary();
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: cargo xtask bench builds it",
            binary.display()
        );
        let port = free_port()?;
        let spawned_at = Instant::now();
        let child = Command::new(&binary)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting capstan-control")?;
        let mut child = Some(child);
        let kubeconfig = data_dir.join("admin.kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(config) = Kubeconfig::read_from(&kubeconfig)
                && let Ok(config) =
                    Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await
                && config.cluster_url.port_u16() == Some(port)
                && let Ok(client) = Client::try_from(config)
                && client.apiserver_version().await.is_ok()
                && let Some(child) = child.take()
            {
                return Ok(Self {
                    child,
                    client,
                    spawned_at,
                });
            }
            if Instant::now() > deadline {
                if let Some(mut child) = child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                bail!("control did not come up");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and waits for the process to exit (its store closed).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        self.child.wait()?;
        Ok(())
    }
}

/// Resident memory of `pid` in MiB.
pub fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    Ok(kb / 1024.0)
}

/// CPU time `pid` has used so far, user and system, all threads, in
/// seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its
    // closing parenthesis start at field 3, state, so utime (14) and
    // stime (15) are the 12th and 13th.
    let rest = stat.rsplit_once(')').context("no command name")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short stat")?.parse::<u64>()? as f64)
    };
    // SAFETY: sysconf reads a configuration value and touches no memory.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    anyhow::ensure!(per_second > 0, "no clock tick rate");
    Ok((ticks(11)? + ticks(12)?) / per_second as f64)
}
