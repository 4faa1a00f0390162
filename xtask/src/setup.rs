//! `cargo xtask setup`: installs what building, testing and benchmarking
//! need on Debian 12. Each step checks first and changes nothing when its
//! part is in place, so a second run is fast and says so.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, bail};

use crate::{cmd, paths};

/// Debian packages: the runtime the agent drives, protoc for the gRPC
/// clients, and the peers tests and benchmarks run beside capstan.
const PACKAGES: &[&str] = &[
    "containerd",
    "runc",
    "iproute2",
    "protobuf-compiler",
    "libprotobuf-dev",
    "busybox-static",
    "etcd-server",
    "etcd-client",
    "prometheus",
    "dnsperf",
    "dnsmasq-base",
    "docker-registry",
    "iptables",
    "nftables",
    "wrk",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Whether a step found its part in place or had to change something.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Present(String),
    Changed(String),
}

/// A check that installs what it finds missing.
type Step = fn() -> anyhow::Result<Outcome>;

/// Runs every step; returns true if anything was installed.
pub fn run() -> anyhow::Result<bool> {
    let steps: [(&str, Step); 7] = [
        ("debian packages", debian_packages),
        ("nightly toolchain", nightly_toolchain),
        ("nightly rust-src", nightly_rust_src),
        ("musl target", musl_target),
        ("bpf-linker", bpf_linker),
        ("kernel", kernel),
        ("kubectl", kubectl),
    ];
    let mut changed = false;
    for (name, step) in steps {
        match step().with_context(|| format!("setup step `{name}` failed"))? {
            Outcome::Present(what) => println!("setup: {name:<18} ok: {what}"),
            Outcome::Changed(what) => {
                changed = true;
                println!("setup: {name:<18} installed: {what}");
            }
        }
    }
    if changed {
        println!("setup: done");
    } else {
        println!("setup: everything was in place; nothing changed");
    }
    Ok(changed)
}

fn debian_packages() -> anyhow::Result<Outcome> {
    let listed = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .args(PACKAGES)
        .output()
        .context("running dpkg-query: is this Debian?")?;
    let installed: Vec<&str> = std::str::from_utf8(&listed.stdout)?
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(package, _)| package)
        .collect();
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect();
    if missing.is_empty() {
        return Ok(Outcome::Present(format!("{} packages", PACKAGES.len())));
    }
    if !cmd::is_root() {
        bail!(
            "missing {}; run as root, or: sudo apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null());
        cmd::output(&mut command).context("apt-get failed; check the apt sources and network")
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    apt(&install)?;
    Ok(Outcome::Changed(missing.join(" ")))
}

fn has_nightly() -> anyhow::Result<bool> {
    let toolchains = cmd::stdout(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed: install it from https://rustup.rs")?;
    Ok(toolchains.lines().any(|t| t.starts_with("nightly")))
}

fn nightly_toolchain() -> anyhow::Result<Outcome> {
    if has_nightly()? {
        let version = cmd::stdout(Command::new("rustc").args(["+nightly", "--version"]))?;
        return Ok(Outcome::Present(version.trim().to_owned()));
    }
    cmd::output(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))
    .context("installing the nightly toolchain (the eBPF programs need it)")?;
    Ok(Outcome::Changed("nightly".to_owned()))
}

fn sysroot(toolchain: Option<&str>) -> anyhow::Result<String> {
    let mut rustc = Command::new("rustc");
    rustc.env_remove("RUSTUP_TOOLCHAIN");
    if let Some(toolchain) = toolchain {
        rustc.arg(format!("+{toolchain}"));
    }
    Ok(cmd::stdout(rustc.args(["--print", "sysroot"]))?
        .trim()
        .to_owned())
}

fn nightly_rust_src() -> anyhow::Result<Outcome> {
    let library = format!("{}/lib/rustlib/src/rust/library", sysroot(Some("nightly"))?);
    if Path::new(&library).is_dir() {
        return Ok(Outcome::Present(library));
    }
    cmd::output(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("adding rust-src to nightly (eBPF builds compile core from it)")?;
    Ok(Outcome::Changed("rust-src".to_owned()))
}

fn musl_target() -> anyhow::Result<Outcome> {
    let target = paths::TESTAPP_TARGET;
    let sysroot = sysroot(None)?;
    if Path::new(&format!("{sysroot}/lib/rustlib/{target}")).is_dir() {
        return Ok(Outcome::Present(target.to_owned()));
    }
    let mut rustup = Command::new("rustup");
    rustup.env_remove("RUSTUP_TOOLCHAIN");
    cmd::output(rustup.args(["target", "add", target]))
        .with_context(|| format!("adding the {target} target (the test app is static)"))?;
    Ok(Outcome::Changed(target.to_owned()))
}

/// bpf-linker links the eBPF object. It needs LLVM 22, which Debian 12
/// lacks: the nightly toolchain's own libLLVM is used instead.
fn bpf_linker() -> anyhow::Result<Outcome> {
    let root = paths::tools_dir();
    let binary = root.join("bin/bpf-linker");
    if let Ok(version) = cmd::stdout(Command::new(&binary).arg("--version"))
        && version.trim() == format!("bpf-linker {BPF_LINKER_VERSION}")
    {
        return Ok(Outcome::Present(binary.display().to_string()));
    }

    let nightly_lib = Path::new(&sysroot(Some("nightly"))?).join("lib");
    let libllvm = fs::read_dir(&nightly_lib)?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", nightly_lib.display()))?;
    let llvm_prefix = root.join("llvm");
    let llvm_lib = llvm_prefix.join("lib");
    fs::create_dir_all(&llvm_lib)?;
    for link in ["libLLVM.so", libllvm.as_str()] {
        let link = llvm_lib.join(link);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(nightly_lib.join(&libllvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let mut install = cmd::cargo(None);
    install
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args([
            "--no-default-features",
            "--features",
            "llvm-22",
            "--force",
            "--root",
        ])
        .arg(&root)
        .env("LLVM_PREFIX", &llvm_prefix);
    cmd::output(&mut install).context("building bpf-linker")?;
    Ok(Outcome::Changed(binary.display().to_string()))
}

/// Not a Debian package: the API tests drive the real kubectl, the one on
/// PATH and the versioned ones (kubectl.1.N) installed beside it.
fn kubectl() -> anyhow::Result<Outcome> {
    let version = cmd::stdout(Command::new("kubectl").args(["version", "--client"]))
        .context("kubectl is needed on PATH (https://kubernetes.io/docs/tasks/tools/)")?;
    let client = version.lines().next().unwrap_or_default().trim().to_owned();
    Ok(Outcome::Present(client))
}

/// Not installable: what the kernel must offer. Fails with what is missing.
fn kernel() -> anyhow::Result<Outcome> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "the kernel has no BTF (/sys/kernel/btf/vmlinux); capstan needs CONFIG_DEBUG_INFO_BTF"
        );
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    let Some(line) = mounts.lines().find(|l| l.contains(" - cgroup2 ")) else {
        bail!("no cgroup v2 hierarchy is mounted; capstan attaches its eBPF programs there");
    };
    let point = line.split(' ').nth(4).unwrap_or("?");
    Ok(Outcome::Present(format!("BTF, cgroup v2 at {point}")))
}
