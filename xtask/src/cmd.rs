//! Running commands: echo what runs, fail with the command line and how it
//! ended, and keep an outer `cargo xtask` from leaking into inner cargos.

use std::{
    ffi::OsStr,
    process::{Command, Output},
    time::Instant,
};

use anyhow::{Context, bail};

/// A command with the environment a nested cargo must not inherit from the
/// `cargo run` that started xtask (toolchain pins, target dirs, flags).
pub fn cargo(toolchain: Option<&str>) -> Command {
    let mut command = Command::new("cargo");
    if let Some(toolchain) = toolchain {
        command.arg(format!("+{toolchain}"));
    }
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        command.env_remove(var);
    }
    command
}

pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` with inherited output; an error names it.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let started = Instant::now();
    let status = command
        .status()
        .with_context(|| format!("starting `{}`", describe(command)))?;
    if !status.success() {
        bail!(
            "`{}` failed ({status}) after {:.0?}",
            describe(command),
            started.elapsed()
        );
    }
    Ok(())
}

/// Runs `command`, capturing its output; an error carries its stderr.
pub fn output(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("starting `{}`", describe(command)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// stdout of `command` as text.
pub fn stdout(command: &mut Command) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&output(command)?.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
