//! Reading a container's log file back as `kubectl logs` shows it: the
//! content of each line, optionally prefixed by its time, limited to the
//! last lines or to those since a time, and followed while the container
//! runs.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use tokio::{io::AsyncReadExt, sync::mpsc};

use super::format::decode;

/// How often a followed log is polled for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What `kubectl logs` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub tail_lines: Option<usize>,
    pub since: Option<SystemTime>,
    pub timestamps: bool,
    pub limit_bytes: Option<usize>,
    pub follow: bool,
}

/// The lines of `data` (complete records only) under `options`, and how
/// many bytes of `data` they came from.
pub fn render(data: &[u8], options: &LogOptions) -> (Vec<u8>, usize) {
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    // Logical lines: a run of partial records and the record ending them.
    let mut lines: Vec<(String, Vec<u8>)> = Vec::new();
    let mut pending: Option<(String, Vec<u8>)> = None;
    for raw in data[..complete].split(|b| *b == b'\n') {
        let Some(record) = decode(raw) else { continue };
        if options.since.is_some_and(|since| record.time < since) {
            continue;
        }
        let (_, content) = pending.get_or_insert_with(|| (record.time_text.to_owned(), Vec::new()));
        content.extend_from_slice(record.content);
        if !record.partial {
            lines.extend(pending.take());
        }
    }
    let skip = options
        .tail_lines
        .map_or(0, |tail| lines.len().saturating_sub(tail));
    let mut out = Vec::new();
    for (time, content) in lines.into_iter().skip(skip) {
        if options.timestamps {
            out.extend_from_slice(time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&content);
        out.push(b'\n');
    }
    if let Some(limit) = options.limit_bytes {
        out.truncate(limit);
    }
    (out, complete)
}

/// Streams the log at `path` as `kubectl logs` shows it: what is there,
/// then, when following, what is appended while `running` says the
/// container runs.
pub fn stream<F, Fut>(path: PathBuf, options: LogOptions, running: F) -> mpsc::Receiver<Bytes>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut data = tokio::fs::read(&path).await.unwrap_or_default();
        let (out, mut offset) = render(&data, &options);
        if !out.is_empty() && sender.send(Bytes::from(out)).await.is_err() {
            return;
        }
        if !options.follow {
            return;
        }
        // Later lines: no tail (it applied to what was there), no limit.
        let later = LogOptions {
            tail_lines: None,
            limit_bytes: None,
            ..options
        };
        loop {
            let grown = read_from(&path, offset).await;
            if grown.is_empty() {
                if !running().await {
                    // One last look: the final lines may have landed.
                    let last = read_from(&path, offset).await;
                    let (out, _) = render(&last, &later);
                    if !out.is_empty() {
                        let _ = sender.send(Bytes::from(out)).await;
                    }
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                    () = sender.closed() => return,
                }
                continue;
            }
            data = grown;
            let (out, used) = render(&data, &later);
            offset += used;
            if !out.is_empty() && sender.send(Bytes::from(out)).await.is_err() {
                return;
            }
        }
    });
    receiver
}

async fn read_from(path: &PathBuf, offset: usize) -> Vec<u8> {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return Vec::new();
    };
    use tokio::io::AsyncSeekExt;
    if file
        .seek(std::io::SeekFrom::Start(offset as u64))
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut data = Vec::new();
    let _ = file.read_to_end(&mut data).await;
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::format::encode;

    fn file() -> Vec<u8> {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        [
            encode(t(10), "stdout", false, b"one"),
            encode(t(20), "stderr", true, b"tw"),
            encode(t(20), "stderr", false, b"o"),
            encode(t(30), "stdout", false, b"three"),
            b"1970-01-01T00:00:40Z stdout F unfinish".to_vec(),
        ]
        .concat()
    }

    #[test]
    fn lines_join_partials_and_honour_tail_since_and_timestamps() {
        let data = file();
        let (all, used) = render(&data, &LogOptions::default());
        assert_eq!(all, b"one\ntwo\nthree\n");
        assert!(used < data.len(), "the unfinished record waits");
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(render(&data, &tail).0, b"two\nthree\n");
        let since = LogOptions {
            since: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(25)),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            render(&data, &since).0,
            b"1970-01-01T00:00:30.000000000Z three\n"
        );
        let limited = LogOptions {
            limit_bytes: Some(5),
            ..Default::default()
        };
        assert_eq!(render(&data, &limited).0, b"one\nt");
    }
}
