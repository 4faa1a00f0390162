//! The node's log collector: one process (the agent binary run as
//! `capstan-agent --log-collector <dir>`) that copies every container's
//! stdout and stderr from named pipes into its CRI log file. It lives
//! apart from the agent so logs keep flowing while the agent restarts, and
//! never lets a container block on a reader: the pipes are drained as
//! fast as the disk takes them.
//!
//! The agent asks over a unix socket for a container's pipes before it
//! creates the task; the registration (the pipes and a file naming the
//! log) lives in `<dir>/<container id>/`, so a collector that restarts
//! takes the running containers back. It exits once no container is left
//! and no agent is connected.

use std::{
    cell::RefCell,
    collections::HashMap,
    fs::OpenOptions,
    os::unix::{
        ffi::{OsStrExt, OsStringExt},
        fs::OpenOptionsExt,
    },
    path::{Path, PathBuf},
    rc::Rc,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    task::{AbortHandle, LocalSet},
};

use super::stream::{Stream, copy, open_pipe};

/// The collector's socket, in its directory.
pub const SOCKET: &str = "collector.sock";
/// The file of a registration naming the container's log.
const LOG_TARGET: &str = "log";
/// How long the collector stays with nothing to do before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(2);

/// The agent's request: pipes for container `id`, logging to `log`.
#[derive(Debug, Serialize, Deserialize)]
pub struct OpenRequest {
    pub id: String,
    pub log: PathBuf,
}

/// The answer: the pipes to hand containerd, or why there are none.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenReply {
    Pipes { stdout: PathBuf, stderr: PathBuf },
    Error(String),
}

/// The pipes of container `id` in the collector's directory.
pub fn pipe_paths(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    let registration = dir.join(id);
    (registration.join("stdout"), registration.join("stderr"))
}

/// What the collector is doing, shared by its tasks (one thread).
#[derive(Default)]
struct Registrations {
    /// The copy of each registered container, with its serial number (a
    /// registration of the same id replaces an older one).
    copying: HashMap<String, (u64, AbortHandle)>,
    serial: u64,
    agents: usize,
}

type Shared = Rc<RefCell<Registrations>>;

/// Runs the collector in `dir` until it has nothing left to do.
pub fn run(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    LocalSet::new().block_on(&runtime, serve(dir.to_owned()))
}

async fn serve(dir: PathBuf) -> std::io::Result<()> {
    let socket = dir.join(SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    let shared: Shared = Default::default();
    recover(&dir, &shared);
    let mut idle_ticks = 0u32;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (conn, _) = accepted?;
                shared.borrow_mut().agents += 1;
                let (dir, shared) = (dir.clone(), Rc::clone(&shared));
                tokio::task::spawn_local(async move {
                    if let Err(err) = answer(conn, &dir, &shared).await {
                        eprintln!("capstan log collector: an agent connection failed: {err}");
                    }
                    shared.borrow_mut().agents -= 1;
                });
            }
            () = tokio::time::sleep(IDLE_EXIT / 2) => {
                let state = shared.borrow();
                idle_ticks = if state.copying.is_empty() && state.agents == 0 {
                    idle_ticks + 1
                } else {
                    0
                };
                if idle_ticks >= 2 {
                    let _ = std::fs::remove_file(&socket);
                    return Ok(());
                }
            }
        }
    }
}

/// Answers one agent's requests, one JSON line each, until it hangs up.
async fn answer(conn: UnixStream, dir: &Path, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match serde_json::from_str::<OpenRequest>(&line) {
            Ok(request) => open(dir, shared, &request.id, &request.log),
            Err(err) => Err(std::io::Error::other(format!("not a request: {err}"))),
        };
        let reply = match reply {
            Ok((stdout, stderr)) => OpenReply::Pipes { stdout, stderr },
            Err(err) => OpenReply::Error(err.to_string()),
        };
        let mut text = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write.write_all(&text).await?;
    }
    Ok(())
}

/// Registers container `id` (replacing a registration of the same id)
/// and starts copying its pipes.
fn open(dir: &Path, shared: &Shared, id: &str, log: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return Err(std::io::Error::other(format!(
            "{id:?} is not a container id"
        )));
    }
    if !log.is_absolute() {
        return Err(std::io::Error::other(format!(
            "the log {} is not an absolute path",
            log.display()
        )));
    }
    if let Some((_, previous)) = shared.borrow_mut().copying.remove(id) {
        previous.abort();
    }
    let registration = dir.join(id);
    let _ = std::fs::remove_dir_all(&registration);
    std::fs::create_dir_all(&registration)?;
    let (stdout, stderr) = pipe_paths(dir, id);
    for pipe in [&stdout, &stderr] {
        nix::unistd::mkfifo(pipe, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(std::io::Error::from)?;
    }
    std::fs::write(registration.join(LOG_TARGET), log.as_os_str().as_bytes())?;
    start(dir, shared, id, log)?;
    Ok((stdout, stderr))
}

/// Starts copying the registered pipes of `id` into `log`; when both end,
/// the registration goes.
fn start(dir: &Path, shared: &Shared, id: &str, log: &Path) -> std::io::Result<()> {
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let sink = Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(log)?,
    ));
    let (stdout, stderr) = pipe_paths(dir, id);
    let out = open_pipe(&stdout)?;
    let err = open_pipe(&stderr)?;
    let serial = {
        let mut state = shared.borrow_mut();
        state.serial += 1;
        state.serial
    };
    let (id_owned, registration, mine) = (id.to_owned(), dir.join(id), Rc::clone(shared));
    let task = tokio::task::spawn_local(async move {
        let (a, b) = tokio::join!(
            copy(out, Stream::Stdout, Arc::clone(&sink)),
            copy(err, Stream::Stderr, sink)
        );
        if let Err(err) = a.and(b) {
            eprintln!("capstan log collector: copying {id_owned}: {err}");
        }
        let mut state = mine.borrow_mut();
        if state
            .copying
            .get(&id_owned)
            .is_some_and(|(s, _)| *s == serial)
        {
            state.copying.remove(&id_owned);
            let _ = std::fs::remove_dir_all(registration);
        }
    });
    shared
        .borrow_mut()
        .copying
        .insert(id.to_owned(), (serial, task.abort_handle()));
    Ok(())
}

/// Takes back the registrations a previous collector left.
fn recover(dir: &Path, shared: &Shared) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let registration = entry.path();
        let Ok(log) = std::fs::read(registration.join(LOG_TARGET)) else {
            continue;
        };
        let id = entry.file_name().to_string_lossy().into_owned();
        let log = PathBuf::from(std::ffi::OsString::from_vec(log));
        if let Err(err) = start(dir, shared, &id, &log) {
            eprintln!("capstan log collector: taking back {id}: {err}");
            let _ = std::fs::remove_dir_all(&registration);
        }
    }
}
