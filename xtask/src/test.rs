//! `cargo xtask test`: the README's test command and all that CI runs.
//! Sets up the machine, builds the eBPF object and the test images, checks
//! formatting and lints, runs every test (the end-to-end ones included),
//! checks that the tests left nothing behind, and prints a summary.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{cmd, ebpf, guard, image, paths, setup};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Run only tests whose name contains this (passed to the test binaries).
    filter: Option<String>,
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,
}

/// One line of the summary.
#[derive(Debug)]
struct Step {
    name: &'static str,
    took: Duration,
    result: Result<String, String>,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!(
            "cargo xtask test runs end-to-end tests that need root (namespaces, cgroups, eBPF); \
             run it as root. Unit tests alone: cargo test"
        );
    }
    let mut steps = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> anyhow::Result<String>| {
        println!("==> {name}");
        let started = Instant::now();
        let result = f().map_err(|err| format!("{err:#}"));
        let ok = result.is_ok();
        steps.push(Step {
            name,
            took: started.elapsed(),
            result,
        });
        ok
    };

    let prepared = step("setup", &mut || setup::run().map(|_| String::new()))
        && step("setup again", &mut || match setup::run()? {
            false => Ok("nothing changed".to_owned()),
            true => bail!("a second setup installed something: setup is not idempotent"),
        })
        && step("build-ebpf", &mut || ebpf::build().map(|()| String::new()))
        && step("image", &mut || image::build().map(|_| String::new()))
        && step("binaries", &mut || {
            // End-to-end tests run the agent binary and `xtask push`; build
            // them from this tree so no test runs a stale one.
            let mut build = cmd::cargo(None);
            build.current_dir(paths::workspace()).args([
                "build",
                "-p",
                "capstan-agent",
                "-p",
                "xtask",
                "--bins",
            ]);
            cmd::run(&mut build).map(|()| String::new())
        });
    if prepared {
        if !args.no_lint {
            step("fmt", &mut || {
                let mut fmt = cmd::cargo(None);
                fmt.current_dir(paths::workspace())
                    .args(["fmt", "--all", "--", "--check"]);
                cmd::run(&mut fmt).map(|()| String::new())
            });
            step("clippy", &mut || {
                let mut clippy = cmd::cargo(None);
                clippy.current_dir(paths::workspace()).args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]);
                cmd::run(&mut clippy).map(|()| String::new())
            });
        }
        let mut guard = None;
        step("guard", &mut || {
            guard = guard::Guard::install()?;
            Ok(match &guard {
                Some(_) => "counting packets to cluster addresses on the real interface",
                None => "no default route: nothing can leave",
            }
            .to_owned())
        });
        step("tests", &mut || cargo_test(args.filter.as_deref()));
        step("leftovers", &mut leftovers);
        if let Some(guard) = &guard {
            step("escapes", &mut || guard.check());
        }
    }

    println!("\nsummary:");
    for Step { name, took, result } in &steps {
        let (status, detail) = match result {
            Ok(detail) => ("ok", detail.as_str()),
            Err(err) => ("FAILED", err.as_str()),
        };
        println!(
            "  {name:<11} {status:<7} {:>7.1}s  {detail}",
            took.as_secs_f64()
        );
    }
    let failed = steps.iter().filter(|s| s.result.is_err()).count();
    if failed > 0 || !prepared {
        bail!("{failed} step(s) failed");
    }
    Ok(())
}

/// Runs the workspace's tests with the end-to-end ones, passing output
/// through and counting results.
fn cargo_test(filter: Option<&str>) -> anyhow::Result<String> {
    let mut cargo = cmd::cargo(None);
    cargo
        .current_dir(paths::workspace())
        .args([
            "test",
            "--workspace",
            "--no-fail-fast",
            "--",
            "--include-ignored",
        ])
        .args(filter)
        .stdout(Stdio::piped());
    let mut child = cargo.spawn().context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;

    let (mut passed, mut failed, mut ignored) = (0_u64, 0_u64, 0_u64);
    let mut failures = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(counts) = line.strip_prefix("test result: ") {
            for part in counts.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            failures.push(name.to_owned());
        }
    }
    let status = child.wait()?;
    let counts = format!("{passed} passed, {failed} failed, {ignored} ignored");
    if !status.success() {
        let names = if failures.is_empty() {
            "a test binary did not build or crashed".to_owned()
        } else {
            failures.join(", ")
        };
        bail!("{counts}: {names}");
    }
    Ok(counts)
}

/// What tests leave behind that they must not: namespaces, cgroups and
/// directories carrying the harness's prefixes (see tests/src/lib.rs), and
/// processes (containerd, shims) started with the harness's paths.
fn leftovers() -> anyhow::Result<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("cst-") {
            found.push(format!("network namespace {name}"));
        }
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let cgroup_mounts = mountinfo
        .lines()
        .filter_map(|line| line.split_once(" - "))
        .filter(|(_, fs)| fs.starts_with("cgroup"))
        .filter_map(|(mount, _)| mount.split(' ').nth(4));
    let mut dirs: Vec<String> = cgroup_mounts.map(|m| format!("{m}/capstan-test")).collect();
    dirs.extend([
        "/run/capstan-test".to_owned(),
        "/var/lib/capstan-test".to_owned(),
    ]);
    for dir in &dirs {
        for entry in fs::read_dir(Path::new(dir)).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(entry.path().display().to_string());
            }
        }
    }
    for entry in fs::read_dir("/proc")?.flatten() {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("/run/capstan-test/") || cmdline.contains("/var/lib/capstan-test/") {
            let pid = entry.file_name().to_string_lossy().into_owned();
            found.push(format!("process {pid}: {}", cmdline.trim()));
        }
    }
    if !found.is_empty() {
        bail!("tests left behind: {}", found.join(", "));
    }
    // The shared parents stay while tests run (instances come and go in
    // parallel); with none running, empty ones go too.
    for dir in &dirs {
        let _ = fs::remove_dir(dir);
    }
    Ok("none".to_owned())
}
