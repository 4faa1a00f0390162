//! Points the agent at the eBPF object built by `cargo xtask build-ebpf`.
//!
//! The object is embedded into the agent binary. A missing object, or one
//! older than any eBPF source, stops the build with the command to run:
//! building a stale datapath into the agent would be worse than no build.
//!
//! `CAPSTAN_EBPF_SKIP=1` opts out, as aya's template does, for builds and
//! lints that do not need the datapath (no nightly, no bpf-linker): the
//! agent then embeds an empty object and refuses to load it at run time,
//! saying how it was built.

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("agent/ lives in the workspace");
    let ebpf = workspace.join("ebpf");
    let object = workspace.join("target/ebpf/bpfel-unknown-none/release/capstan-ebpf");

    let sources = [
        ebpf.join("src"),
        ebpf.join("common/src"),
        ebpf.join("Cargo.toml"),
        ebpf.join("common/Cargo.toml"),
    ];
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
    }
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rerun-if-env-changed={SKIP}");

    if std::env::var_os(SKIP).is_some_and(|v| v == "1") {
        let empty = PathBuf::from(env("OUT_DIR")).join("no-ebpf-object");
        if let Err(err) = fs::write(&empty, b"") {
            fail(&format!("writing {}: {err}", empty.display()));
        }
        println!("cargo:warning={SKIP}=1: this agent carries no eBPF datapath");
        println!("cargo:rustc-env=CAPSTAN_EBPF_OBJECT={}", empty.display());
        return;
    }

    let built = match fs::metadata(&object).and_then(|m| m.modified()) {
        Ok(built) => built,
        Err(_) => fail(&format!("the eBPF object {} is missing", object.display())),
    };
    if let Some(newer) = sources.iter().find_map(|s| newer_than(s, built)) {
        fail(&format!(
            "the eBPF object {} is older than {}",
            object.display(),
            newer.display()
        ));
    }
    println!("cargo:rustc-env=CAPSTAN_EBPF_OBJECT={}", object.display());
}

/// The opt-out: set to 1, the agent is built without the eBPF object.
const SKIP: &str = "CAPSTAN_EBPF_SKIP";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("{name} is not set")))
}

/// The first file under `path` modified after `time`.
fn newer_than(path: &Path, time: SystemTime) -> Option<PathBuf> {
    let meta = fs::metadata(path).ok()?;
    if meta.is_dir() {
        fs::read_dir(path)
            .ok()?
            .flatten()
            .find_map(|entry| newer_than(&entry.path(), time))
    } else {
        (meta.modified().ok()? > time).then(|| path.to_owned())
    }
}

fn fail(why: &str) -> ! {
    eprintln!(
        "error: {why}; run `cargo xtask build-ebpf` first \
         (or set {SKIP}=1 to build an agent without the eBPF datapath)"
    );
    std::process::exit(1)
}
