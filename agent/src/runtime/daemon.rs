//! A containerd of the agent's own: its configuration, start and stop.
//!
//! Like k3s, the agent runs a private containerd unless pointed at one, so
//! a host needs no runtime configured beforehand, and several agents (or
//! test hosts) can share a machine: each instance has its own root, state
//! directory and socket, and no CRI plugin.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::RuntimeError;

/// Where one containerd instance keeps everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Persistent data: content store, snapshots, metadata.
    pub root: PathBuf,
    /// Runtime state: sockets, task bundles, the daemon's log.
    pub state: PathBuf,
}

impl DaemonConfig {
    pub fn new(root: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            state: state.into(),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.state.join("containerd.sock")
    }

    pub fn config_file(&self) -> PathBuf {
        self.state.join("config.toml")
    }

    pub fn log_file(&self) -> PathBuf {
        self.state.join("containerd.log")
    }

    /// containerd's config.toml (version 2, as containerd 1.6 reads it).
    pub fn render(&self) -> String {
        let root = self.root.display();
        let state = self.state.display();
        let socket = self.socket();
        let socket = socket.display();
        format!(
            r#"# Written by capstan-agent; a private containerd for capstan's pods.
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"#
        )
    }

    /// Writes the config and returns the command that runs the daemon with
    /// it; the caller may adjust it (e.g. enter a network namespace) before
    /// handing it to [`ContainerdDaemon::spawn`].
    pub fn command(&self) -> Result<Command, RuntimeError> {
        for dir in [&self.root, &self.state] {
            fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        }
        let config = self.config_file();
        fs::write(&config, self.render()).map_err(io_error("writing", &config))?;
        let mut command = Command::new("containerd");
        command.arg("--config").arg(&config);
        Ok(command)
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_owned();
    move |source| RuntimeError::Io {
        action,
        path,
        source,
    }
}

/// A running containerd this process started. Dropping it stops it.
#[derive(Debug)]
pub struct ContainerdDaemon {
    child: Child,
    config: DaemonConfig,
}

impl ContainerdDaemon {
    /// Starts `command` (from [`DaemonConfig::command`]) with its output in
    /// the log file, and waits until the socket answers.
    pub fn spawn(
        config: DaemonConfig,
        mut command: Command,
        ready_within: Duration,
    ) -> Result<Self, RuntimeError> {
        let log_path = config.log_file();
        let log = fs::File::create(&log_path).map_err(io_error("creating", &log_path))?;
        let log_err = log.try_clone().map_err(io_error("opening", &log_path))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io_error("starting containerd with", &config.config_file()))?;
        let mut daemon = Self { child, config };
        daemon.wait_ready(ready_within)?;
        Ok(daemon)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), RuntimeError> {
        let socket = self.config.socket();
        let deadline = Instant::now() + within;
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .try_wait()
                .map_err(io_error("waiting for", &socket))?;
            if exited.is_some() || Instant::now() > deadline {
                let log = fs::read_to_string(self.config.log_file()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let why = match exited {
                    Some(status) => format!("containerd exited ({status})"),
                    None => format!("containerd did not answer within {within:?}"),
                };
                return Err(RuntimeError::Io {
                    action: "starting containerd",
                    path: socket,
                    source: std::io::Error::other(format!(
                        "{why}; its log ends: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once it has exited.
    pub fn stop(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, which we have not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ContainerdDaemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_has_its_own_paths_and_no_cri() {
        let config = DaemonConfig::new("/var/lib/x/containerd", "/run/x/containerd");
        let rendered = config.render();
        assert!(rendered.contains(r#"root = "/var/lib/x/containerd""#));
        assert!(rendered.contains(r#"state = "/run/x/containerd""#));
        assert!(rendered.contains(r#"address = "/run/x/containerd/containerd.sock""#));
        assert!(rendered.contains(r#""io.containerd.grpc.v1.cri","#));
        assert_eq!(
            config.socket(),
            PathBuf::from("/run/x/containerd/containerd.sock")
        );
    }
}
