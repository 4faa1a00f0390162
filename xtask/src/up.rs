//! `cargo xtask up`: a single-node cluster on this host. Builds, then runs
//! control, and an agent registered with it as this host's node (using the
//! host's containerd if one is running, else starting its own), until
//! Ctrl-C or until one of them exits, and stops both by their PIDs.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{cmd, ebpf, paths, setup};

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Build optimised binaries.
    #[arg(long)]
    release: bool,
    /// Where control and the agent keep their state (control/ and agent/
    /// below it); control writes its admin kubeconfig there.
    #[arg(long, default_value = "/var/lib/capstan")]
    data_dir: std::path::PathBuf,
}

pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("cargo xtask up runs the agent, which needs root (containers, cgroups, eBPF)");
    }
    setup::run()?;
    ebpf::build()?;
    let mut build = cmd::cargo(None);
    build.current_dir(paths::workspace()).args([
        "build",
        "-p",
        "capstan-control",
        "-p",
        "capstan-agent",
    ]);
    if args.release {
        build.arg("--release");
    }
    cmd::run(&mut build)?;

    let profile = if args.release { "release" } else { "debug" };
    let bin = paths::workspace().join("target").join(profile);
    let interrupted = ctrl_c()?;

    let mut children: Vec<(&'static str, Child)> = Vec::new();
    let started = start_cluster(&bin, &args.data_dir, &mut children);
    if let Err(err) = started {
        stop_all(&mut children);
        return Err(err);
    }
    println!("up: running; Ctrl-C stops the cluster");

    let exited = loop {
        // Ctrl-C reaches the children too; the ones that exit on it are
        // stopping, not failing, so the interrupt is checked first.
        if interrupted() {
            break None;
        }
        if let Some(exited) = children.iter_mut().find_map(|(name, child)| {
            let status = child.try_wait().ok().flatten()?;
            Some(format!("{name} exited ({status})"))
        }) {
            thread::sleep(Duration::from_millis(200));
            if interrupted() {
                break None;
            }
            break Some(exited);
        }
        thread::sleep(Duration::from_millis(200));
    };
    stop_all(&mut children);
    match exited {
        Some(why) => bail!("{why}; stopped the cluster"),
        None => Ok(()),
    }
}

/// The API port control listens on, as its default --listen says.
const API_PORT: u16 = 6443;
/// The socket of a containerd the host already runs.
const HOST_CONTAINERD: &str = "/run/containerd/containerd.sock";

/// Starts control, waits for it to serve, then starts the agent with this
/// host's node token.
fn start_cluster(
    bin: &std::path::Path,
    data_dir: &std::path::Path,
    children: &mut Vec<(&'static str, Child)>,
) -> anyhow::Result<()> {
    let control_dir = data_dir.join("control");
    let control = Command::new(bin.join("capstan-control"))
        .arg("--data-dir")
        .arg(&control_dir)
        .spawn()
        .context("starting capstan-control")?;
    println!("up: started capstan-control (pid {})", control.id());
    children.push(("capstan-control", control));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", API_PORT)).is_err() {
        if Instant::now() > deadline {
            bail!("capstan-control did not listen on port {API_PORT} within 30 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
    let node = cmd::stdout(&mut Command::new("hostname"))?
        .trim()
        .to_lowercase();
    let token = cmd::stdout(
        Command::new(bin.join("capstan-control"))
            .arg("--data-dir")
            .arg(&control_dir)
            .args(["node-token", &node]),
    )?;
    // In a file readable by root only: on the command line it would show
    // in every process listing.
    let agent_dir = data_dir.join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let token_file = agent_dir.join("node-token");
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&token_file)
        .and_then(|mut file| file.write_all(token.trim().as_bytes()))
        .with_context(|| format!("writing {}", token_file.display()))?;
    let mut agent = Command::new(bin.join("capstan-agent"));
    agent
        .arg("--data-dir")
        .arg(&agent_dir)
        .arg(format!("--server=https://127.0.0.1:{API_PORT}"))
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca-file")
        .arg(control_dir.join("pki/ca.crt"))
        .arg(format!("--node-name={node}"));
    if std::os::unix::net::UnixStream::connect(HOST_CONTAINERD).is_ok() {
        agent.arg(format!("--containerd-socket={HOST_CONTAINERD}"));
    }
    let agent = agent.spawn().context("starting capstan-agent")?;
    println!(
        "up: started capstan-agent (pid {}) as node {node}",
        agent.id()
    );
    children.push(("capstan-agent", agent));
    Ok(())
}

/// SIGTERM to each, SIGKILL to any still running after 10 s.
fn stop_all(children: &mut [(&str, Child)]) {
    for (_, child) in children.iter() {
        // SAFETY: kill(2) on our own children, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, child) in children.iter_mut() {
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(50));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
        println!("up: stopped {name}");
    }
}

/// Ctrl-C reaches the whole foreground process group: the children get it
/// too. xtask notes it and stops them in order instead of dying first.
fn ctrl_c() -> anyhow::Result<fn() -> bool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static INTERRUPTED: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        let previous =
            unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            bail!("installing a signal handler");
        }
    }
    Ok(|| INTERRUPTED.load(Ordering::SeqCst))
}
