//! The agent's side of the log collector: asks it for a container's pipes
//! before the task is created, starting the collector when none answers
//! (the first container, or after the node's last container ended).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use async_trait::async_trait;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::Mutex,
};

use super::collector::{OpenReply, OpenRequest, SOCKET};
use crate::runtime::LogDestination;

/// How long a collector just started gets to listen.
const STARTUP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("starting the log collector {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("the log collector at {socket} did not answer: {source}")]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("the log collector refused the container's log: {0}")]
    Refused(String),
}

/// Where containers' streams go so they end up in their CRI log.
#[async_trait]
pub trait ContainerLogs: Send + Sync {
    /// The destination of container `id`'s stdout and stderr, to be
    /// written as CRI records to `log`.
    async fn open(&self, id: &str, log: &Path) -> Result<LogDestination, LogsError>;
}

/// The node's log collector, started on demand.
#[derive(Debug)]
pub struct Collector {
    dir: PathBuf,
    /// The agent's binary, which runs the collector with `--log-collector`.
    program: PathBuf,
    /// The cgroup (v2, absolute directory) the collector is moved into, so
    /// that stopping the agent's own cgroup leaves it running.
    cgroup: Option<PathBuf>,
    connection: Mutex<Option<Connection>>,
}

#[derive(Debug)]
struct Connection {
    replies: Lines<BufReader<OwnedReadHalf>>,
    requests: OwnedWriteHalf,
}

impl Collector {
    pub fn new(dir: PathBuf, program: PathBuf, cgroup: Option<PathBuf>) -> Self {
        Self {
            dir,
            program,
            cgroup,
            connection: Mutex::new(None),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET)
    }

    async fn connect(&self) -> Result<Connection, LogsError> {
        let socket = self.socket();
        let stream = match UnixStream::connect(&socket).await {
            Ok(stream) => stream,
            Err(_) => {
                self.spawn()?;
                self.wait_for_socket().await?
            }
        };
        let (read, requests) = stream.into_split();
        Ok(Connection {
            replies: BufReader::new(read).lines(),
            requests,
        })
    }

    fn spawn(&self) -> Result<(), LogsError> {
        let failed = |source| LogsError::Spawn {
            program: self.program.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(failed)?;
        let errors = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("collector.log"))
            .map_err(failed)?;
        // Its own process group: a signal to the agent's group (a Ctrl-C)
        // is not for it. Dropping the child does not kill it; tokio reaps
        // it if it exits first.
        let child = tokio::process::Command::new(&self.program)
            .arg("--log-collector")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors)
            .process_group(0)
            .spawn()
            .map_err(failed)?;
        if let (Some(cgroup), Some(pid)) = (&self.cgroup, child.id()) {
            let moved = std::fs::create_dir_all(cgroup)
                .and_then(|()| std::fs::write(cgroup.join("cgroup.procs"), pid.to_string()));
            if let Err(err) = moved {
                tracing::warn!(cgroup = %cgroup.display(), %err, "moving the log collector");
            }
        }
        tracing::info!(pid = child.id(), "started the log collector");
        Ok(())
    }

    async fn wait_for_socket(&self) -> Result<UnixStream, LogsError> {
        let socket = self.socket();
        let deadline = tokio::time::Instant::now() + STARTUP;
        loop {
            match UnixStream::connect(&socket).await {
                Ok(stream) => return Ok(stream),
                Err(source) if tokio::time::Instant::now() >= deadline => {
                    return Err(LogsError::Unreachable { socket, source });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    async fn ask(connection: &mut Connection, request: &[u8]) -> std::io::Result<OpenReply> {
        connection.requests.write_all(request).await?;
        let line = connection
            .replies
            .next_line()
            .await?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }
}

#[async_trait]
impl ContainerLogs for Collector {
    async fn open(&self, id: &str, log: &Path) -> Result<LogDestination, LogsError> {
        let request = OpenRequest {
            id: id.to_owned(),
            log: log.to_owned(),
        };
        let mut request =
            serde_json::to_vec(&request).map_err(|err| LogsError::Refused(err.to_string()))?;
        request.push(b'\n');
        let mut connection = self.connection.lock().await;
        // A collector that exited (idle, or killed) since the last request
        // shows as a failed exchange: start one and ask again, once.
        let mut retried = false;
        loop {
            let current = match connection.as_mut() {
                Some(current) => current,
                None => connection.insert(self.connect().await?),
            };
            match Self::ask(current, &request).await {
                Ok(OpenReply::Pipes { stdout, stderr }) => {
                    return Ok(LogDestination::Pipes { stdout, stderr });
                }
                Ok(OpenReply::Error(message)) => return Err(LogsError::Refused(message)),
                Err(source) => {
                    *connection = None;
                    if retried {
                        return Err(LogsError::Unreachable {
                            socket: self.socket(),
                            source,
                        });
                    }
                    retried = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write, time::Instant};

    use super::*;

    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_collector_writes_both_streams_and_exits_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let collector_dir = dir.path().join("collector");
        let collecting = {
            let dir = collector_dir.clone();
            std::thread::spawn(move || super::super::collector::run(&dir))
        };
        eventually("the collector listens", || {
            collector_dir.join(SOCKET).exists()
        });
        // No program: it must not need starting.
        let client = Collector::new(collector_dir.clone(), PathBuf::from("/nonexistent"), None);
        let log = dir.path().join("pods/ns_p_u/c/0.log");
        let LogDestination::Pipes { stdout, stderr } = client.open("c0", &log).await.unwrap()
        else {
            panic!("pipes expected");
        };
        let refused = client.open("../escape", &log).await;
        assert!(matches!(refused, Err(LogsError::Refused(_))), "{refused:?}");

        let mut out = std::fs::File::options().write(true).open(&stdout).unwrap();
        let mut err = std::fs::File::options().write(true).open(&stderr).unwrap();
        out.write_all(b"to stdout\nunfinished").unwrap();
        err.write_all(b"to stderr\n").unwrap();
        drop((out, err));
        eventually("the registration goes with its writers", || {
            !collector_dir.join("c0").exists()
        });
        let written = std::fs::read_to_string(&log).unwrap();
        let mut records: Vec<&str> = written
            .lines()
            .map(|l| l.split_once(' ').unwrap().1)
            .collect();
        records.sort_unstable();
        assert_eq!(
            records,
            [
                "stderr F to stderr",
                "stdout F to stdout",
                "stdout F unfinished"
            ]
        );

        drop(client);
        eventually("the collector exits, idle", || collecting.is_finished());
        collecting.join().unwrap().unwrap();
        assert!(!collector_dir.join(SOCKET).exists());
    }
}
