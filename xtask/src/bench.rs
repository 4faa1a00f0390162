//! `cargo xtask bench <name>`: builds the benchmark runner optimised and
//! runs one benchmark, capstan beside its peer in the same run. The last
//! line printed is `bench <name>: key=value ...`; docs/benchmarks.md keeps
//! the figures.

use std::process::Command;

use anyhow::{Context, bail};

use crate::{cmd, ebpf, image, paths, setup};

pub fn run(name: &str) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("benchmarks start their peers (etcd, ...) in cgroups and namespaces: run as root");
    }
    setup::run()?;
    // The agent embeds the eBPF object; pod-start runs the test images.
    ebpf::build()?;
    if name == "pod-start" || name == "service-lb" {
        image::build()?;
    }
    let mut build = cmd::cargo(None);
    build.current_dir(paths::workspace()).args([
        "build",
        "--release",
        "-p",
        "capstan-tests",
        "--bin",
        "capstan-bench",
        "-p",
        "capstan-control",
        "--bin",
        "capstan-control",
        "-p",
        "capstan-agent",
        "--bin",
        "capstan-agent",
    ]);
    cmd::run(&mut build).context("building the benchmarks")?;
    let release = paths::workspace().join("target/release");
    cmd::run(
        Command::new(release.join("capstan-bench"))
            .arg(name)
            .env("CAPSTAN_AGENT", release.join("capstan-agent")),
    )
    .with_context(|| format!("benchmark {name}"))
}
