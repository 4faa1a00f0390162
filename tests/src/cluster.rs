//! A whole cluster on test hosts: control on host 1, an agent on each host
//! with its own containerd holding the test images, a Kubernetes client
//! and the real kubectl, all of it run from inside host 1's network
//! namespace (see [`TestCluster::runtime`]).

use std::{future::Future, time::Duration};

use anyhow::{Context, bail};
use capstan_agent::runtime::{Containerd, NAMESPACE, OciArchive};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{
    TestNet,
    agent::TestAgent,
    artifacts::{self, BUSYBOX_IMAGE, GHOST_USER_IMAGE, TESTAPP_IMAGE, TESTAPP_V2_IMAGE},
    control::{ControlSettings, TestControl, succeeded},
};

/// How a test cluster starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterSettings {
    pub control: ControlSettings,
    /// Only hosts 1 to this one get an agent at start; the others join
    /// later ([`TestCluster::join_node`]). None: every host.
    pub agents_at_start: Option<u8>,
    /// Flags every agent gets besides the harness's own.
    pub agent_args: &'static [&'static str],
}

/// Control and agents; dropped agents first, the network last.
pub struct TestCluster {
    pub agents: Vec<TestAgent>,
    agent_args: &'static [&'static str],
    pub control: TestControl,
    client: Client,
    pub net: TestNet,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("agents", &self.agents)
            .field("control", &self.control)
            .field("net", &self.net)
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// Starts a cluster on `net` and runs `test` on it, every thread of it
    /// (the one driving `test` included) inside host 1, where control
    /// runs. A failed test panics with the agents' output.
    pub fn run<F>(net: TestNet, test: F)
    where
        F: AsyncFnOnce(&mut TestCluster) -> anyhow::Result<()> + Send + 'static,
    {
        Self::run_with(net, ClusterSettings::default(), test);
    }

    /// As [`Self::run`], started with `settings`.
    pub fn run_with<F>(net: TestNet, settings: ClusterSettings, test: F)
    where
        F: AsyncFnOnce(&mut TestCluster) -> anyhow::Result<()> + Send + 'static,
    {
        if let Err(err) = Self::try_run_with(net, settings, async |cluster: &mut TestCluster| {
            test(cluster).await.map_err(|err| {
                anyhow::anyhow!(
                    "{err:#}\n---- agent output ----\n{}",
                    cluster.agent_output()
                )
            })
        }) {
            panic!("{err:#}");
        }
    }

    /// As [`Self::run`], returning what `work` returns.
    pub fn try_run<F, T>(net: TestNet, work: F) -> anyhow::Result<T>
    where
        F: AsyncFnOnce(&mut TestCluster) -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        Self::try_run_with(net, ClusterSettings::default(), work)
    }

    fn try_run_with<F, T>(net: TestNet, settings: ClusterSettings, work: F) -> anyhow::Result<T>
    where
        F: AsyncFnOnce(&mut TestCluster) -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let netns = net.host(1).netns().path();
        let runtime = net.host(1).netns().runtime()?;
        let driver = std::thread::spawn(move || -> anyhow::Result<T> {
            let file = std::fs::File::open(&netns)?;
            nix::sched::setns(
                std::os::fd::AsFd::as_fd(&file),
                nix::sched::CloneFlags::CLONE_NEWNET,
            )
            .context("entering host 1")?;
            runtime.block_on(async {
                let mut cluster = Self::start(net, settings)
                    .await
                    .context("starting the cluster")?;
                work(&mut cluster).await
            })
        });
        match driver.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Control on host 1 and an agent on every host of `net` (or the
    /// first `settings.agents_at_start`). Call on [`Self::runtime`].
    pub async fn start(mut net: TestNet, settings: ClusterSettings) -> anyhow::Result<Self> {
        let hosts = settings.agents_at_start.unwrap_or(net.hosts());
        for n in 1..=net.hosts() {
            net.host_mut(n).start_containerd()?;
            import_test_images(&net, n).await?;
        }
        let control = TestControl::start_on_host(
            net.instance(),
            net.host(1).address().into(),
            settings.control,
        )
        .await?;
        let mut agents = Vec::new();
        for n in 1..=hosts {
            agents.push(TestAgent::start(
                net.host(n),
                &control,
                net.host(1),
                settings.agent_args,
            )?);
        }
        let kubeconfig = Kubeconfig::read_from(control.kubeconfig())?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let cluster = Self {
            agents,
            agent_args: settings.agent_args,
            control,
            client: Client::try_from(config)?,
            net,
        };
        for n in 1..=hosts {
            cluster.wait_node_ready(cluster.net.host(n).name()).await?;
        }
        Ok(cluster)
    }

    /// Containerd of host `n`, as the agent there uses it.
    pub async fn containerd(&self, n: u8) -> anyhow::Result<Containerd> {
        Ok(Containerd::connect(&self.net.host(n).containerd_socket()?, NAMESPACE).await?)
    }

    /// SIGKILLs the agent of host `n`, as a crash would.
    pub fn kill_agent(&mut self, n: u8) -> anyhow::Result<()> {
        self.agents[usize::from(n) - 1].kill()
    }

    /// Starts the agent of host `n` again on its state.
    pub fn start_agent(&mut self, n: u8) -> anyhow::Result<()> {
        self.agents[usize::from(n) - 1].restart(self.net.host(n))
    }

    /// Starts the agent of host `n`, the next without one, and waits
    /// until its node is Ready.
    pub async fn join_node(&mut self, n: u8) -> anyhow::Result<()> {
        if usize::from(n) != self.agents.len() + 1 {
            bail!("host {n} is not the next to join");
        }
        let agent = TestAgent::start(
            self.net.host(n),
            &self.control,
            self.net.host(1),
            self.agent_args,
        )?;
        self.agents.push(agent);
        self.wait_node_ready(self.net.host(n).name()).await
    }

    /// Stops host `n` as far as the cluster can tell: its agent killed and
    /// its containerd stopped.
    pub fn stop_node(&mut self, n: u8) -> anyhow::Result<()> {
        self.kill_agent(n)?;
        self.net.host_mut(n).stop_containerd();
        Ok(())
    }

    /// Brings host `n` back: containerd, then its agent, on their state.
    pub fn start_node(&mut self, n: u8) -> anyhow::Result<()> {
        self.net.host_mut(n).start_containerd()?;
        self.start_agent(n)
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn pods(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The agents' output, for failure messages.
    /// The agents' process ids.
    pub fn agent_pids(&self) -> Vec<Option<u32>> {
        self.agents.iter().map(TestAgent::pid).collect()
    }

    pub fn agent_output(&self) -> String {
        self.agents
            .iter()
            .map(TestAgent::output)
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    pub async fn wait_node_ready(&self, name: &str) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        self.eventually(
            Duration::from_secs(30),
            &format!("node {name} Ready"),
            || async {
                let node = nodes.get_opt(name).await.ok().flatten()?;
                let ready = node
                    .status?
                    .conditions?
                    .into_iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(())
            },
        )
        .await
    }

    /// Polls `check` until it returns Some, for at most `limit`.
    pub async fn eventually<T, F, Fut>(
        &self,
        limit: Duration,
        what: &str,
        mut check: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(value) = check().await {
                return Ok(value);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "timed out after {limit:?} waiting for {what}\nagent output:\n{}",
                    tail(&self.agent_output(), 60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until pod `namespace/name` satisfies `check`; returns it.
    pub async fn wait_pod(
        &self,
        namespace: &str,
        name: &str,
        limit: Duration,
        what: &str,
        check: impl Fn(&Pod) -> bool,
    ) -> anyhow::Result<Pod> {
        let pods = self.pods(namespace);
        let last = std::sync::Mutex::new(None::<Pod>);
        let found = self
            .eventually(limit, &format!("pod {name}: {what}"), || async {
                let pod = pods.get_opt(name).await.ok().flatten()?;
                let matched = check(&pod);
                *last.lock().ok()? = Some(pod.clone());
                matched.then_some(pod)
            })
            .await;
        found.with_context(|| {
            let last = last.lock().ok().and_then(|l| l.clone());
            format!(
                "last seen status: {}",
                last.map(|p| serde_json::to_string_pretty(&p.status).unwrap_or_default())
                    .unwrap_or_default()
            )
        })
    }

    /// kubectl (the one on PATH) with `args`; its stdout.
    pub async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let binary = which_kubectl()?;
        let output = self.control.kubectl(&binary).args(args).output().await?;
        succeeded(&output, &format!("kubectl {}", args.join(" ")))
    }

    /// kubectl apply -f - of `manifest`.
    pub async fn apply(&self, manifest: &str) -> anyhow::Result<String> {
        use tokio::io::AsyncWriteExt;
        let binary = which_kubectl()?;
        let mut child = self
            .control
            .kubectl(&binary)
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(manifest.as_bytes())
            .await?;
        let output = child.wait_with_output().await?;
        succeeded(&output, "kubectl apply")
    }
}

/// The node a pod is bound to ("" while unbound).
pub fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// The test host number of node `node` (h<n>).
pub fn host_index(node: &str) -> u8 {
    node.trim_start_matches('h').parse().unwrap_or(0)
}

/// The pod's IP ("" before it has one).
pub fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
}

/// `testapp <args>` set to run inside `pod`'s network namespace on its
/// node, in a cgroup beside that node's pods.
pub fn pod_testapp(
    cluster: &TestCluster,
    pod: &Pod,
    args: &[&str],
) -> anyhow::Result<std::process::Command> {
    let host = cluster.net.host(host_index(&node_of(pod)));
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut command = host.pod_command(&uid, artifacts::testapp()?)?;
    command.args(args);
    Ok(command)
}

/// Runs `testapp <args>` in `pod`: whether it succeeded, and its output.
pub async fn in_pod(
    cluster: &TestCluster,
    pod: &Pod,
    args: &[&str],
) -> anyhow::Result<(bool, String)> {
    let mut command = pod_testapp(cluster, pod, args)?;
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    Ok(outcome(&output))
}

/// Whether a process succeeded, and its stdout and stderr.
pub fn outcome(output: &std::process::Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A pod that is Ready and not being deleted: one that serves.
pub fn serving(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn which_kubectl() -> anyhow::Result<std::path::PathBuf> {
    crate::control::kubectl_binaries()?
        .into_iter()
        .next()
        .context("no kubectl")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Imports the testapp and busybox images into host `n`'s containerd, as
/// an operator would with `ctr images import`.
async fn import_test_images(net: &TestNet, n: u8) -> anyhow::Result<()> {
    let containerd = Containerd::connect(&net.host(n).containerd_socket()?, NAMESPACE).await?;
    let images = [
        ("testapp", TESTAPP_IMAGE),
        ("testapp", TESTAPP_V2_IMAGE),
        ("busybox", BUSYBOX_IMAGE),
        ("ghost-user", GHOST_USER_IMAGE),
    ];
    for (file, name) in images {
        let archive = OciArchive::open(&artifacts::image(file)?)?;
        containerd
            .import_image(&archive, name)
            .await
            .with_context(|| format!("importing {name}"))?;
    }
    Ok(())
}
