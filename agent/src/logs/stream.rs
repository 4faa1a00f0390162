//! One container stream (stdout or stderr) copied from the named pipe the
//! shim writes into CRI records of the container's log file.
//!
//! The pipe is opened before the shim opens its end, so "no writer" means
//! two things: not connected yet, or the container is done. A stream is
//! connected once a read sees data or would block (a writer exists); after
//! that, a read of zero bytes is the end. A pipe that never gets a writer
//! (the task was never created) is given up after a while.

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::io::unix::AsyncFd;

use super::format::{MAX_RECORD, encode};

/// How often a quiet pipe is asked whether it still has a writer.
const PROBE: Duration = Duration::from_secs(5);
/// How long a pipe may wait for its first writer.
const UNCLAIMED: Duration = Duration::from_secs(60);

/// Which of the container's streams; the name is the record's stream field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Cuts a stream of bytes into records: one per line, lines longer than a
/// record continued in the next (marked partial).
#[derive(Debug)]
pub struct Framer {
    stream: Stream,
    pending: Vec<u8>,
}

impl Framer {
    pub fn new(stream: Stream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// The records `bytes` completes, encoded; an unfinished line is kept.
    pub fn push(&mut self, bytes: &[u8], at: SystemTime) -> Vec<u8> {
        let mut out = Vec::new();
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let line = &self.pending[start..start + end];
            self.encode_line(&mut out, line, at);
            start += end + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_RECORD {
            let rest = self.pending.split_off(MAX_RECORD);
            out.extend(encode(at, self.stream.name(), true, &self.pending));
            self.pending = rest;
        }
        out
    }

    /// The unfinished line, whole as it is, at the end of the stream.
    pub fn finish(&mut self, at: SystemTime) -> Vec<u8> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let line = std::mem::take(&mut self.pending);
        encode(at, self.stream.name(), false, &line)
    }

    fn encode_line(&self, out: &mut Vec<u8>, line: &[u8], at: SystemTime) {
        let mut chunks = line.chunks(MAX_RECORD).peekable();
        if chunks.peek().is_none() {
            out.extend(encode(at, self.stream.name(), false, b""));
        }
        while let Some(chunk) = chunks.next() {
            let partial = chunks.peek().is_some();
            out.extend(encode(at, self.stream.name(), partial, chunk));
        }
    }
}

/// The log file both streams of a container append to.
pub type Sink = Arc<Mutex<File>>;

/// Opens the pipe for reading without waiting for a writer.
pub fn open_pipe(path: &Path) -> std::io::Result<AsyncFd<File>> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    // SAFETY: the File owns its descriptor, and the AsyncFd owns the File
    // until it is dropped: nothing closes or replaces the descriptor
    // while it is registered.
    unsafe { AsyncFd::register_with_interest(file, tokio::io::Interest::READABLE) }
        .map_err(|failed| failed.into_parts().1)
}

/// What one read of the pipe found.
enum Got {
    Data(usize),
    NoWriter,
    Empty,
}

fn read_once(mut file: &File, buf: &mut [u8]) -> std::io::Result<Got> {
    loop {
        return match file.read(buf) {
            Ok(0) => Ok(Got::NoWriter),
            Ok(n) => Ok(Got::Data(n)),
            Err(err) if err.kind() == ErrorKind::WouldBlock => Ok(Got::Empty),
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => Err(err),
        };
    }
}

/// Copies the pipe into `sink` until the container's end of it closes (or
/// it is never claimed).
pub async fn copy(pipe: AsyncFd<File>, stream: Stream, sink: Sink) -> std::io::Result<()> {
    let opened = Instant::now();
    let mut framer = Framer::new(stream);
    let mut connected = false;
    let mut buf = [0; 8 * 1024];
    loop {
        let woke = tokio::time::timeout(PROBE, pipe.readable()).await;
        let mut ready = match woke {
            Ok(guard) => Some(guard?),
            Err(_) => None,
        };
        // Drain what is there; on a probe, one read tells whether a
        // writer exists.
        loop {
            match read_once(pipe.get_ref(), &mut buf)? {
                Got::Data(n) => {
                    connected = true;
                    let records = framer.push(&buf[..n], SystemTime::now());
                    append(&sink, &records)?;
                }
                Got::Empty => {
                    connected = true;
                    if let Some(guard) = ready.as_mut() {
                        guard.clear_ready();
                    }
                    break;
                }
                Got::NoWriter => {
                    // Readiness without a writer is a hang-up: the writer
                    // came and went.
                    if connected || ready.is_some() {
                        return append(&sink, &framer.finish(SystemTime::now()));
                    }
                    if opened.elapsed() >= UNCLAIMED {
                        return Ok(());
                    }
                    break;
                }
            }
        }
    }
}

fn append(sink: &Sink, records: &[u8]) -> std::io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut file = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    file.write_all(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: Vec<u8>) -> Vec<String> {
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_owned())
            .collect()
    }

    #[test]
    fn lines_become_records_and_unfinished_ones_wait() {
        let mut framer = Framer::new(Stream::Stderr);
        let at = SystemTime::UNIX_EPOCH;
        assert_eq!(text(framer.push(b"one\ntw", at)), ["stderr F one"]);
        assert_eq!(
            text(framer.push(b"o\n\nthree", at)),
            ["stderr F two", "stderr F "]
        );
        assert_eq!(text(framer.finish(at)), ["stderr F three"]);
        assert!(framer.finish(at).is_empty());
    }

    #[test]
    fn long_lines_are_split_into_partial_records() {
        let mut framer = Framer::new(Stream::Stdout);
        let at = SystemTime::UNIX_EPOCH;
        let long = vec![b'x'; MAX_RECORD + 10];
        let records = text(framer.push(&long, at));
        assert_eq!(records.len(), 1);
        assert!(records[0].starts_with("stdout P xxx"));
        assert_eq!(records[0].len(), "stdout P ".len() + MAX_RECORD);
        assert_eq!(
            text(framer.push(b"\n", at)),
            [format!("stdout F {}", "x".repeat(10))]
        );
    }

    fn fifo(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("pipe");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    #[tokio::test]
    async fn a_pipe_waits_for_its_writer_and_ends_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo(dir.path());
        let log = dir.path().join("0.log");
        let sink = Arc::new(Mutex::new(File::create(&log).unwrap()));
        let copying = tokio::spawn(copy(open_pipe(&path).unwrap(), Stream::Stdout, sink));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!copying.is_finished(), "no writer yet is not the end");
        let mut writer = File::options().write(true).open(&path).unwrap();
        writer.write_all(b"hello\nworld").unwrap();
        drop(writer);
        tokio::time::timeout(Duration::from_secs(5), copying)
            .await
            .expect("the copy ends with its writer")
            .unwrap()
            .unwrap();
        let written = std::fs::read(&log).unwrap();
        assert_eq!(text(written), ["stdout F hello", "stdout F world"]);
    }
}
