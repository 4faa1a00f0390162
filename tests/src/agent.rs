//! A capstan agent for tests: the real binary, started inside a test host
//! against the host's containerd and a test control, its state under the
//! harness instance; killable (SIGKILL, as a crash) and restartable on the
//! same state.

use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use anyhow::Context;

use crate::{TestHost, artifacts, control::TestControl};

/// A running (or killed, between restarts) agent.
#[derive(Debug)]
pub struct TestAgent {
    args: Vec<String>,
    host: HostPlacement,
    log: PathBuf,
    pod_log_dir: PathBuf,
    child: Option<Child>,
}

/// What it takes to start a process in the host again.
#[derive(Debug, Clone)]
struct HostPlacement {
    netns: PathBuf,
    cgroup: String,
}

impl TestAgent {
    /// Starts the agent of `host` (whose containerd must be running), node
    /// name = the host's name, talking to `control` on `control_host`, with
    /// `extra_args` after the harness's flags.
    pub fn start(
        host: &TestHost,
        control: &TestControl,
        control_host: &TestHost,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let name = host.name().to_owned();
        let run = host.run_dir("agent")?;
        let data = host.data_dir("agent")?;
        let pod_log_dir = host.data_dir("pod-logs")?;
        let server = format!(
            "https://{}:{}",
            control_host.address(),
            control.address().port()
        );
        let mut args = vec![
            format!("--server={server}"),
            format!("--token={}", control.node_token(&name)?),
            format!("--ca-file={}", control.ca_file().display()),
            format!("--node-name={name}"),
            format!("--node-ip={}", host.address()),
            format!(
                "--containerd-socket={}",
                host.containerd_socket()?.display()
            ),
            format!("--data-dir={}", data.display()),
            format!("--run-dir={}", run.display()),
            format!("--pod-log-dir={}", pod_log_dir.display()),
            format!("--cgroup-root={}", host.cgroup("pods")),
            format!("--service-cgroup={}", host.cgroup_subtree()),
            format!("--bpffs={}", host.run_dir("bpf")?.display()),
            format!("--netns-prefix={}", host.pod_netns_prefix()),
        ];
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let mut agent = Self {
            args,
            host: HostPlacement {
                netns: host.netns().path(),
                cgroup: host.cgroup("agent"),
            },
            log: run.join("agent.log"),
            pod_log_dir,
            child: None,
        };
        agent.spawn(host)?;
        Ok(agent)
    }

    fn spawn(&mut self, host: &TestHost) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command: Command =
            host.command_in_cgroup(artifacts::agent()?, &self.host.cgroup)?;
        command
            .args(&self.args)
            .env("RUST_LOG", "info,capstan_agent=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(command.spawn().context("starting capstan-agent")?);
        Ok(())
    }

    /// SIGKILLs the agent, as a crash would; its pods keep running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops the agent as its service manager would (SIGTERM), waiting
    /// for it to finish its shutdown; SIGKILL after `grace`.
    pub fn stop(&mut self, grace: std::time::Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child.kill()?;
        child.wait()?;
        anyhow::bail!("the agent did not stop within {grace:?} of SIGTERM")
    }

    /// Starts the agent again with the same state.
    pub fn restart(&mut self, host: &TestHost) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn(host)
    }

    /// The agent's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the agent printed, for failure messages.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where the agent writes container logs.
    pub fn pod_log_dir(&self) -> &PathBuf {
        &self.pod_log_dir
    }

    /// The netns path the agent runs in.
    pub fn netns(&self) -> &PathBuf {
        &self.host.netns
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Err(err) = self.kill() {
            eprintln!("capstan-tests: stopping the agent: {err:#}");
        }
    }
}
