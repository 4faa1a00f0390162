//! Where things are: the workspace, build outputs, the tools setup builds.

use std::path::PathBuf;

/// The workspace root (xtask/ lives directly below it).
pub fn workspace() -> PathBuf {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().map(PathBuf::from).unwrap_or(xtask)
}

/// The eBPF object agent/build.rs embeds.
pub fn ebpf_target_dir() -> PathBuf {
    workspace().join("target/ebpf")
}

/// Statically linked test application, built for the test images.
pub const TESTAPP_TARGET: &str = "x86_64-unknown-linux-musl";

pub fn testapp_binary() -> PathBuf {
    workspace().join(format!("target/{TESTAPP_TARGET}/release/capstan-testapp"))
}

/// OCI image tarballs written by `cargo xtask image`.
pub fn images_dir() -> PathBuf {
    workspace().join("target/images")
}

/// Tools setup builds (bpf-linker), kept outside target/ so `cargo clean`
/// does not cost a rebuild, and versioned so an upgrade never reuses one.
pub fn tools_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    cache.join("capstan/tools")
}
