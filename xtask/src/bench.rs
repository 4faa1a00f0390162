//! `cargo xtask bench <name>`: builds the benchmark runner optimised and
//! runs one benchmark, capstan beside its peer in the same run. The last
//! line printed is `bench <name>: key=value ...`; docs/benchmarks.md keeps
//! the figures.

use std::process::Command;

use anyhow::{Context, bail};

use crate::{cmd, paths, setup};

pub fn run(name: &str) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("benchmarks start their peers (etcd, ...) in cgroups and namespaces: run as root");
    }
    setup::run()?;
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
    ]);
    cmd::run(&mut build).context("building the benchmarks")?;
    let runner = paths::workspace().join("target/release/capstan-bench");
    cmd::run(Command::new(runner).arg(name)).with_context(|| format!("benchmark {name}"))
}
