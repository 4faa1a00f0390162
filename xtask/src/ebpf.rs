//! `cargo xtask build-ebpf`: builds ebpf/ with nightly for bpfel-unknown-none
//! into target/ebpf, where agent/build.rs picks the object up.

use std::path::Path;

use anyhow::Context;

use crate::{cmd, paths};

pub fn build() -> anyhow::Result<()> {
    let tools = paths::tools_dir().join("bin");
    if !tools.join("bpf-linker").exists() {
        anyhow::bail!(
            "bpf-linker is not in {}; run `cargo xtask setup` first",
            tools.display()
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(tools.clone()).chain(std::env::split_paths(&path)))?;

    let mut cargo = cmd::cargo(Some("nightly"));
    cargo
        .current_dir(paths::workspace().join("ebpf"))
        .args(["build", "--release", "--target-dir"])
        .arg(paths::ebpf_target_dir())
        .env("PATH", path);
    cmd::run(&mut cargo).context("building the eBPF programs")?;
    let object = paths::ebpf_target_dir().join("bpfel-unknown-none/release/capstan-ebpf");
    println!("build-ebpf: {}", relative(&object).display());
    Ok(())
}

fn relative(path: &Path) -> &Path {
    path.strip_prefix(paths::workspace()).unwrap_or(path)
}
