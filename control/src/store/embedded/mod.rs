//! The embedded store: a redb file and a write-ahead log in the data
//! directory, the default backend. Writes are durable when acknowledged and
//! committed in groups; history is kept in a revision log and compacted
//! automatically once it is older than a window, so the file tracks the
//! live data, not the history. See docs/architecture.md for why redb.

mod records;
mod wal;
mod watch;
mod writer;

use std::{
    collections::BTreeMap,
    ops::Bound,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadTransaction, ReadableDatabase};
use tokio::sync::oneshot;

use self::{
    records::{CURRENT, LOG, LogEntry, META, Record, revisions},
    wal::{Wal, WalError},
    watch::Hub,
    writer::{Op, Outcome, Reply, Writer},
};
use super::{
    ContinueToken, Event, KeyValue, ListOptions, ListPage, Revision, Store, StoreError, WatchStream,
};

const FILE_NAME: &str = "store.redb";
const WAL_NAME: &str = "store.wal";

/// How much history the store keeps for watches and reads at old revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// Keep at least this much (the Kubernetes API server compacts etcd
    /// every 5 minutes) ...
    pub history: Duration,
    /// ... but never more than this many revisions, so a burst of writes
    /// cannot grow the file without bound.
    pub max_history_revisions: u64,
    /// How often writes are made durable in the store file, emptying the
    /// write-ahead log (sooner if the log grows large). Bounds the replay
    /// after a crash.
    pub checkpoint_interval: Duration,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            history: Duration::from_secs(300),
            max_history_revisions: 100_000,
            checkpoint_interval: Duration::from_secs(5),
        }
    }
}

/// The store file's path, for errors that name it.
#[derive(Clone, Debug)]
struct StoreFile(Arc<PathBuf>);

impl StoreFile {
    fn error(&self, err: impl Into<redb::Error>) -> StoreError {
        let path = self.0.display().to_string();
        match err.into() {
            redb::Error::Corrupted(message) => StoreError::Corrupt { path, message },
            // What redb says of a file it did not write ("magic number mismatch").
            redb::Error::Io(err) if err.kind() == std::io::ErrorKind::InvalidData => {
                StoreError::Corrupt {
                    path,
                    message: err.to_string(),
                }
            }
            redb::Error::DatabaseAlreadyOpen => {
                StoreError::Unavailable(format!("{path} is open in another process"))
            }
            other => StoreError::Unavailable(format!("{path}: {other}")),
        }
    }
}

#[derive(Debug)]
pub struct EmbeddedStore {
    reader: Reader,
    hub: Arc<Hub>,
    file: StoreFile,
    requests: Option<mpsc::Sender<(Op, Reply)>>,
    writer: Option<JoinHandle<()>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`. A damaged file is refused
    /// with an error naming it; nothing is repaired behind the user's back.
    pub fn open(dir: &Path, config: EmbeddedConfig) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|err| StoreError::Unavailable(format!("creating {}: {err}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let file = StoreFile(Arc::new(path.clone()));
        // redb checks every page's checksum on open; a file altered behind
        // its back can otherwise make it panic on first read.
        let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
            redb::Builder::new()
                .set_check_integrity_on_open(true)
                .create(&path)
        }));
        let db = match opened {
            Ok(db) => db.map_err(|err| file.error(err))?,
            Err(_) => {
                return Err(StoreError::Corrupt {
                    path: path.display().to_string(),
                    message: "the store engine failed reading it".to_owned(),
                });
            }
        };
        let db = Arc::new(db);

        let wal_path = dir.join(WAL_NAME);
        let wal_error = |err: WalError| match err {
            WalError::Corrupt(message) => StoreError::Corrupt {
                path: wal_path.display().to_string(),
                message,
            },
            WalError::Io(err) => StoreError::Unavailable(format!("{}: {err}", wal_path.display())),
        };
        let (mut wal, logged) = Wal::open(&wal_path).map_err(wal_error)?;
        let (head, compacted) = replay(&db, &logged).map_err(|err| match err {
            ReadError::Store(err) => err,
            ReadError::Storage(err) => file.error(err),
        })?;
        wal.reset().map_err(|err| wal_error(err.into()))?;

        let hub = Arc::new(Hub::new(Revision(head)));
        let (requests, queue) = mpsc::channel();
        let writer = Writer::new(
            Arc::clone(&db),
            file.clone(),
            wal,
            Arc::clone(&hub),
            config,
            head,
            compacted,
        );
        let writer = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(|err| StoreError::Unavailable(format!("starting the store writer: {err}")))?;
        Ok(Self {
            reader: Reader { db },
            hub,
            file,
            requests: Some(requests),
            writer: Some(writer),
        })
    }

    async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let closed = || StoreError::Unavailable("the store is closed".to_owned());
        self.requests
            .as_ref()
            .ok_or_else(closed)?
            .send((op, reply))
            .map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Reader) -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || f(&reader))
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))?
            .map_err(|err| match err {
                ReadError::Store(err) => err,
                ReadError::Storage(err) => file.error(err),
            })
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // The writer finishes the batch in hand and exits once its queue's
        // sender is gone; joining it makes the file free to reopen.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Creates the tables if new, and applies what the write-ahead log holds
/// beyond redb's last durable revision; returns (head, compacted).
fn replay(db: &Database, logged: &[wal::WalEntry]) -> Result<(u64, u64), ReadError> {
    let txn = db.begin_write()?;
    let (mut head, compacted) = {
        let mut current = txn.open_table(CURRENT)?;
        let mut log = txn.open_table(LOG)?;
        let (mut head, compacted) = revisions(&log, &txn.open_table(META)?)?;
        let durable = head;
        for (revision, bytes) in logged.iter().filter(|(revision, _)| *revision > durable) {
            if *revision != head + 1 {
                return Err(ReadError::Store(StoreError::Corrupt {
                    path: WAL_NAME.to_owned(),
                    message: format!(
                        "the log resumes at revision {revision}, the store ends at {head}"
                    ),
                }));
            }
            let entry = LogEntry::decode(bytes)?;
            match &entry.new {
                Some(record) => current.insert(entry.key.as_bytes(), record.encode().as_slice())?,
                None => current.remove(entry.key.as_bytes())?,
            };
            log.insert(*revision, bytes.as_slice())?;
            head = *revision;
        }
        (head, compacted)
    };
    txn.commit()?;
    head = head.max(compacted);
    Ok((head, compacted))
}

fn unexpected(outcome: Outcome) -> StoreError {
    StoreError::Unavailable(format!("store writer answered {outcome:?}"))
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.read(|reader| {
            let txn = reader.db.begin_read()?;
            Ok(Revision(Reader::meta(&txn)?.0))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        // A point read touches a few cached pages: handing it to a blocking
        // thread costs more than it does (two context switches per get,
        // and every write through the API starts with one).
        self.reader.get(key.to_owned()).map_err(|err| match err {
            ReadError::Store(err) => err,
            ReadError::Storage(err) => self.file.error(err),
        })
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |reader| reader.list(&prefix, options)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
        match self
            .write(Op::Create {
                key: key.to_owned(),
                value,
            })
            .await?
        {
            Outcome::Written(kv) => Ok(kv),
            other => Err(unexpected(other)),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        match self
            .write(Op::Update {
                key: key.to_owned(),
                value,
                expected,
            })
            .await?
        {
            Outcome::Written(kv) => Ok(kv),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        match self
            .write(Op::Delete {
                key: key.to_owned(),
                expected,
            })
            .await?
        {
            Outcome::Deleted(prev, revision) => Ok((prev, revision)),
            other => Err(unexpected(other)),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let compacted = self
            .read(|reader| Ok(Reader::meta(&reader.db.begin_read()?)?.1))
            .await?;
        if after.0 < compacted {
            return Err(StoreError::Compacted { requested: after });
        }
        Ok(watch::start(
            Arc::clone(&self.hub),
            self.reader.clone(),
            self.file.clone(),
            prefix.to_owned(),
            after,
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self.write(Op::Compact { revision }).await? {
            Outcome::Compacted => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// A refused read, or the engine failing underneath it.
#[derive(Debug)]
enum ReadError {
    Store(StoreError),
    Storage(redb::Error),
}

impl<E: Into<redb::Error>> From<E> for ReadError {
    fn from(err: E) -> Self {
        Self::Storage(err.into())
    }
}

impl From<records::Malformed> for ReadError {
    fn from(err: records::Malformed) -> Self {
        Self::Storage(redb::Error::Corrupted(err.to_string()))
    }
}

/// Reads at a revision, in read transactions (snapshots) of their own.
#[derive(Clone, Debug)]
struct Reader {
    db: Arc<Database>,
}

impl Reader {
    /// (head, compacted) as of `txn`.
    fn meta(txn: &ReadTransaction) -> Result<(u64, u64), ReadError> {
        Ok(revisions(&txn.open_table(LOG)?, &txn.open_table(META)?)?)
    }

    fn get(&self, key: String) -> Result<Option<KeyValue>, ReadError> {
        let txn = self.db.begin_read()?;
        let current = txn.open_table(CURRENT)?;
        let record = current.get(key.as_bytes())?;
        Ok(match record {
            Some(bytes) => Some(Record::decode(bytes.value())?.into_kv(key)),
            None => None,
        })
    }

    /// Keys with `prefix` as of the requested revision: the current table,
    /// with every key changed since that revision put back as it was then
    /// (the `prev` of its first later log entry).
    fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage, ReadError> {
        let txn = self.db.begin_read()?;
        let (head, compacted) = Self::meta(&txn)?;
        let (revision, after_key) = match options.continue_token {
            Some(token) => (token.revision.0, Some(token.after_key)),
            None => (options.revision.map_or(head, |r| r.0), None),
        };
        if revision > head {
            return Err(ReadError::Store(StoreError::FutureRevision {
                requested: Revision(revision),
                current: Revision(head),
            }));
        }
        if revision < compacted {
            return Err(ReadError::Store(StoreError::Compacted {
                requested: Revision(revision),
            }));
        }
        let in_range = |key: &str| {
            key.starts_with(prefix) && after_key.as_deref().is_none_or(|after| key > after)
        };

        let mut then: BTreeMap<String, Option<Record>> = BTreeMap::new();
        if revision < head {
            let log = txn.open_table(LOG)?;
            for entry in log.range(revision + 1..=head)? {
                let entry = LogEntry::decode(entry?.1.value())?;
                if in_range(&entry.key) && !then.contains_key(&entry.key) {
                    then.insert(entry.key, entry.prev);
                }
            }
        }

        let current = txn.open_table(CURRENT)?;
        let start = match &after_key {
            Some(after) if after.as_str() >= prefix => Bound::Excluded(after.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        let end_key = super::prefix_end(prefix);
        let end = match &end_key {
            Some(end) => Bound::Excluded(end.as_slice()),
            None => Bound::Unbounded,
        };
        let want = if options.limit == 0 {
            usize::MAX
        } else {
            options.limit.saturating_add(1)
        };
        let mut restored = then
            .iter()
            .filter_map(|(key, record)| record.as_ref().map(|r| (key, r)))
            .peekable();
        let mut items: Vec<KeyValue> = Vec::new();
        for entry in current.range::<&[u8]>((start, end))? {
            if items.len() >= want {
                break;
            }
            let (key, value) = entry?;
            let key = std::str::from_utf8(key.value())
                .map_err(|_| records::Malformed("key"))?
                .to_owned();
            while let Some((old_key, record)) = restored.next_if(|(k, _)| **k < key) {
                items.push(record.clone().into_kv(old_key.clone()));
            }
            if !then.contains_key(&key) {
                items.push(Record::decode(value.value())?.into_kv(key));
            }
        }
        items.extend(restored.map(|(key, record)| record.clone().into_kv(key.clone())));
        items.truncate(want);

        let continue_token = if options.limit > 0 && items.len() > options.limit {
            items.truncate(options.limit);
            items.last().map(|last| ContinueToken {
                revision: Revision(revision),
                after_key: last.key.clone(),
            })
        } else {
            None
        };
        Ok(ListPage {
            items,
            revision: Revision(revision),
            continue_token,
        })
    }

    /// Events for `prefix` after `after`, up to `until`, at most `limit`
    /// log entries read; returns them and the last revision read.
    fn log_after(
        &self,
        prefix: &str,
        after: Revision,
        until: Revision,
        limit: usize,
    ) -> Result<(Vec<Event>, Revision), ReadError> {
        let txn = self.db.begin_read()?;
        let (_, compacted) = Self::meta(&txn)?;
        if after.0 < compacted {
            return Err(ReadError::Store(StoreError::Compacted { requested: after }));
        }
        let log = txn.open_table(LOG)?;
        let mut events = Vec::new();
        let mut scanned = until;
        for (read, entry) in log.range(after.0 + 1..=until.0)?.enumerate() {
            let (revision, bytes) = entry?;
            if read == limit {
                break;
            }
            scanned = Revision(revision.value());
            let entry = LogEntry::decode(bytes.value())?;
            if entry.key.starts_with(prefix) {
                events.push(event(entry, scanned)?);
            }
        }
        Ok((events, scanned))
    }
}

fn event(entry: LogEntry, revision: Revision) -> Result<Event, ReadError> {
    let LogEntry { key, new, prev } = entry;
    Ok(match (new, prev) {
        (Some(new), prev) => Event::Put {
            kv: new.into_kv(key.clone()),
            prev: prev.map(|p| p.into_kv(key)),
        },
        (None, Some(prev)) => Event::Delete {
            prev: prev.into_kv(key),
            revision,
        },
        (None, None) => return Err(records::Malformed("log entry without a record").into()),
    })
}
