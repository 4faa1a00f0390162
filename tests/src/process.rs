//! Placing a process before it starts: into a network namespace, and into a
//! cgroup v2 leaf of the harness instance, where teardown finds and kills it
//! along with everything it spawns (containerd's shims, for instance); and
//! a child killed when a test ends, however it ends.

use std::{
    fs::{self, File, OpenOptions},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::Command,
};

use anyhow::Context;
use capstan_agent::cgroup::Hierarchies;

use crate::Netns;

/// Makes `command` start inside `netns` and in the v2 cgroup `cgroup`
/// (relative to the hierarchy root; created if missing).
pub fn place(
    command: &mut Command,
    netns: Option<&Netns>,
    cgroup: Option<&str>,
) -> anyhow::Result<()> {
    place_in(command, netns.map(Netns::file).transpose()?, cgroup)
}

/// As [`place`], in the network namespace `netns` is open on (one the
/// harness did not make, such as a pod's).
pub fn place_in(
    command: &mut Command,
    netns: Option<File>,
    cgroup: Option<&str>,
) -> anyhow::Result<()> {
    let procs = cgroup.map(open_procs).transpose()?;
    let netns_fd = netns.as_ref().map(AsRawFd::as_raw_fd);
    let procs_fd = procs.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe syscalls on descriptors opened before the fork. The
    // descriptors live in the closure, which the Command keeps until spawn.
    unsafe {
        command.pre_exec(move || {
            let _keep = (&netns, &procs);
            if let Some(fd) = netns_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // Writing "0" moves the writing process itself.
            if let Some(fd) = procs_fd
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

fn open_procs(cgroup: &str) -> anyhow::Result<File> {
    let dir = Hierarchies::detect()?.unified.join(cgroup);
    fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
    let procs = dir.join("cgroup.procs");
    OpenOptions::new()
        .write(true)
        .open(&procs)
        .with_context(|| format!("opening {}", procs.display()))
}

/// A child process killed (and reaped) when dropped, however the test
/// ends.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
