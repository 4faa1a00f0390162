//! An OCI registry for tests: Debian's docker-registry on loopback inside
//! a test host, its storage under the harness instance, and images pushed
//! to it by `xtask push`.

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};

use crate::{TestHost, artifacts};

/// Where the registry listens, inside its host.
pub const ADDRESS: &str = "127.0.0.1:5000";

#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
}

impl TestRegistry {
    /// Starts the registry in `host` and waits until it answers. Call from
    /// a thread inside `host` (it probes the port from there).
    pub async fn start(host: &TestHost) -> anyhow::Result<Self> {
        let dir = host.data_dir("registry")?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {ADDRESS}\n",
                dir.join("storage").display()
            ),
        )?;
        let child = host
            .command("docker-registry")?
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log"))?)
            .spawn()
            .context("starting docker-registry (Debian package docker-registry)")?;
        let registry = Self { child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(ADDRESS).await.is_ok() {
                return Ok(registry);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "docker-registry did not listen on {ADDRESS} in {}",
            host.name()
        )
    }

    /// Pushes test image `image` (e.g. "testapp") as `reference` with
    /// `xtask push`, run inside `host`.
    pub fn push(&self, host: &TestHost, image: &str, reference: &str) -> anyhow::Result<()> {
        let output = host
            .command(artifacts::xtask()?)?
            .arg("push")
            .arg(artifacts::image(image)?)
            .arg(reference)
            .output()?;
        crate::control::succeeded(&output, "xtask push").map(drop)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
