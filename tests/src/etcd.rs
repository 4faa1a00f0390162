//! etcd clusters for tests and benchmarks: Debian's etcd 3.4, one or more
//! members on loopback, data under the harness instance, processes in its
//! cgroup so teardown stops them even after a panic.

use std::{
    fs::File,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use capstan_control::store::{Store, etcd::EtcdStore};

use crate::{Instance, process::place};

/// A running etcd cluster. Dropping it stops every member.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    instance: Instance,
}

#[derive(Debug)]
struct Member {
    child: Option<Child>,
    client_url: String,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port on 127.0.0.1 free at the time of asking.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader.
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        crate::require_root();
        let instance = Instance::new();
        let ports: Vec<(u16, u16)> = (0..size)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut cluster = Self {
            members: Vec::new(),
            instance,
        };
        for (i, (client, peer)) in ports.iter().enumerate() {
            let data = cluster.instance.data_dir(&format!("etcd-m{i}"));
            std::fs::create_dir_all(&data)?;
            let log = File::create(data.join("etcd.log"))?;
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut command = Command::new("etcd");
            command
                .arg(format!("--name=m{i}"))
                .arg(format!("--data-dir={}", data.join("data").display()))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={}", peers.join(",")))
                .arg(format!("--initial-cluster-token={}", cluster.instance.id()))
                .arg("--initial-cluster-state=new")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            place(&mut command, None, Some(&cluster.instance.cgroup("etcd")))?;
            let child = command
                .spawn()
                .context("starting etcd (Debian package etcd-server)")?;
            cluster.members.push(Member {
                child: Some(child),
                client_url,
            });
        }
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ready = match EtcdStore::connect(&self.endpoints()).await {
                Ok(store) => store
                    .current_revision()
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from),
                Err(err) => Err(err.into()),
            };
            match ready {
                Ok(()) => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    bail!(
                        "etcd did not become ready: {err}; logs in {}",
                        self.log_dir().display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn log_dir(&self) -> PathBuf {
        self.instance.data_dir("")
    }

    /// Client URLs of the members still running.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.clone())
            .collect()
    }

    /// A store client of this cluster.
    pub async fn store(&self) -> anyhow::Result<EtcdStore> {
        Ok(EtcdStore::connect(&self.endpoints()).await?)
    }

    /// The index of the member that currently leads the cluster.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        for (i, member) in self.members.iter().enumerate() {
            if member.child.is_none() {
                continue;
            }
            let mut client =
                etcd_client::Client::connect([member.client_url.as_str()], None).await?;
            let status = client.status().await?;
            let me = status
                .header()
                .map(|h| h.member_id())
                .context("status without header")?;
            if status.leader() == me {
                return Ok(i);
            }
        }
        bail!("no running member leads the cluster")
    }

    /// SIGKILLs member `i`, as a crash would.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let mut child = self.members[i]
            .child
            .take()
            .context("member already killed")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}
