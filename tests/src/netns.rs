//! Named network namespaces (as `ip netns` makes them, under /run/netns):
//! create, run code or commands inside, delete.

use std::{
    fs::File,
    os::fd::AsFd,
    path::{Path, PathBuf},
    process::Command,
    thread,
};

use anyhow::{Context, bail};
use nix::sched::{CloneFlags, setns};

/// A network namespace this harness created; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` with its loopback up.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        ip(&["netns", "add", name])?;
        let netns = Self {
            name: name.to_owned(),
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that keeps the namespace alive; what an OCI spec's
    /// network namespace path names.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    pub fn file(&self) -> anyhow::Result<File> {
        File::open(self.path()).with_context(|| format!("opening {}", self.path().display()))
    }

    /// Runs `ip <args>` inside this namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend(args);
        ip(&full)
    }

    /// Sets a sysctl of this namespace (e.g. net.ipv4.ip_forward).
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let value = value.to_owned();
        self.run(move || std::fs::write(&path, value).with_context(|| format!("writing {path}")))?
    }

    /// Runs `f` on a thread inside this namespace. Sockets it opens belong
    /// to the namespace for their whole life, wherever they are used later.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let file = self.file()?;
        thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))?
    }
}

impl Netns {
    /// A tokio runtime whose every thread lives in this namespace: what
    /// runs on it (servers, clients, child processes such as kubectl) is
    /// on this network and no other.
    pub fn runtime(&self) -> anyhow::Result<tokio::runtime::Runtime> {
        let path = self.path();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                let entered = File::open(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|file| Ok(setns(file.as_fd(), CloneFlags::CLONE_NEWNET)?));
                if let Err(err) = entered {
                    // A thread outside the namespace must not run test
                    // traffic: stop here rather than send it elsewhere.
                    panic!("entering {}: {err:#}", path.display());
                }
            })
            .build()
            .context("building a runtime")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = delete(&self.name) {
            eprintln!("capstan-tests: {err:#}");
        }
    }
}

/// Deletes namespace `name`; one that does not exist is already deleted.
pub(crate) fn delete(name: &str) -> anyhow::Result<()> {
    if !Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    ip(&["netns", "delete", name]).map(drop)
}

/// Runs iproute2's `ip`; an error carries its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (Debian package iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
