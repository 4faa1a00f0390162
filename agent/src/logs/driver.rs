//! The log driver containerd's shim runs for each container
//! (`binary://<agent>?--log-to=<file>`): it reads the container's stdout
//! and stderr from descriptors 3 and 4 and appends them to the file in the
//! CRI format. Running beside the shim rather than in the agent, it keeps
//! logging while the agent restarts.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Read, Write},
    os::{fd::FromRawFd, unix::fs::OpenOptionsExt},
    path::Path,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use super::format::{MAX_RECORD, encode};

/// The descriptors the shim hands a logging binary.
const STDOUT_FD: i32 = 3;
const STDERR_FD: i32 = 4;
/// Closed to tell the shim the driver is ready.
const READY_FD: i32 = 5;

/// Copies the container's streams into `path` until both end.
pub fn run(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    let file = Arc::new(Mutex::new(file));
    // SAFETY: the shim starts us with these descriptors open and owned by
    // no one else in this process; each is wrapped exactly once.
    let (stdout, stderr, ready) = unsafe {
        (
            File::from_raw_fd(STDOUT_FD),
            File::from_raw_fd(STDERR_FD),
            File::from_raw_fd(READY_FD),
        )
    };
    drop(ready);
    let out = {
        let file = Arc::clone(&file);
        std::thread::spawn(move || copy(stdout, "stdout", &file))
    };
    let err = copy(stderr, "stderr", &file);
    let out = out.join().unwrap_or(Ok(()));
    err.and(out)
}

fn copy(stream: File, name: &str, file: &Mutex<File>) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_RECORD as u64)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(());
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        }
        // A line cut at the record limit continues in the next record; one
        // ended by EOF is whole as it is.
        let partial = !complete && read == MAX_RECORD;
        let record = encode(SystemTime::now(), name, partial, &line);
        let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(&record)?;
    }
}
