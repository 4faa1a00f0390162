//! Build outputs tests use: the test images and the static test
//! application, made by `cargo xtask image` (which `cargo xtask test` runs).

use std::path::{Path, PathBuf};

use anyhow::ensure;

/// Name under which the testapp image is imported.
pub const TESTAPP_IMAGE: &str = "capstan.invalid/testapp:v1";
/// The testapp image imported under a second name, so a rollout has a
/// version to go to.
pub const TESTAPP_V2_IMAGE: &str = "capstan.invalid/testapp:v2";
/// Name under which the busybox image is imported.
pub const BUSYBOX_IMAGE: &str = "capstan.invalid/busybox:v1";
/// busybox configured to run as user "ghost", whom its /etc/passwd lacks.
pub const GHOST_USER_IMAGE: &str = "capstan.invalid/ghost-user:v1";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
}

fn existing(path: PathBuf) -> anyhow::Result<PathBuf> {
    ensure!(
        path.exists(),
        "{} is missing: run `cargo xtask image`",
        path.display()
    );
    Ok(path)
}

/// The OCI tarball of image `name` ("busybox" or "testapp").
pub fn image(name: &str) -> anyhow::Result<PathBuf> {
    existing(workspace().join(format!("target/images/{name}.tar")))
}

/// capstan-testapp built static: runs in any namespace without libraries.
pub fn testapp() -> anyhow::Result<PathBuf> {
    existing(workspace().join("target/x86_64-unknown-linux-musl/release/capstan-testapp"))
}

/// The capstan-agent binary of this build (`cargo xtask test` builds it
/// before the tests run); $CAPSTAN_AGENT names another (benchmarks run the
/// release one).
pub fn agent() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("CAPSTAN_AGENT").map_or_else(
        || workspace().join("target/debug/capstan-agent"),
        PathBuf::from,
    );
    ensure!(
        path.exists(),
        "{} is missing: run `cargo build -p capstan-agent` (cargo xtask test does)",
        path.display()
    );
    Ok(path)
}

/// The xtask binary (`cargo xtask` builds it), for `xtask push`.
pub fn xtask() -> anyhow::Result<PathBuf> {
    existing(workspace().join("target/debug/xtask"))
}
