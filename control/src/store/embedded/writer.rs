//! The writer: one thread owns every write. Requests that arrive while a
//! commit is in flight wait in the queue and go into the next transaction
//! together (group commit), so one fsync acknowledges many writes and
//! throughput grows with the number of concurrent writers.
//!
//! A write is acknowledged only once durable: its batch is applied to redb
//! (visible, not yet durable) and appended to the write-ahead log (durable);
//! a checkpoint makes redb durable and empties the log every few seconds.
//! Events are published to watchers before the acknowledgement, so a writer
//! that then watches from its revision misses nothing.

use std::{
    collections::VecDeque,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::{
    EmbeddedConfig, StoreFile,
    records::{CURRENT, LOG, LogEntry, META, META_COMPACTED, Record},
    wal::{CHECKPOINT_BYTES, Wal, WalEntry},
    watch::Hub,
};
use crate::store::{Event, KeyValue, Revision, StoreError};

/// Writes taken into one transaction at most.
const MAX_BATCH: usize = 2048;
/// How long a batch waits for the writers of the previous batch to come
/// back: they were answered a moment ago and are about to send their next
/// write. Waiting about as long as a commit takes fills the next commit
/// instead of spending one on the first writer back.
const LINGER: Duration = Duration::from_micros(300);
/// Log entries a compaction removes per transaction, so that compacting a
/// long history does not stall writes for long.
const COMPACT_CHUNK: usize = 20_000;

#[derive(Debug)]
pub(super) enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

#[derive(Debug)]
pub(super) enum Outcome {
    Written(KeyValue),
    Deleted(KeyValue, Revision),
    Compacted,
}

pub(super) type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

pub(super) struct Writer {
    db: Arc<Database>,
    file: StoreFile,
    wal: Wal,
    last_checkpoint: Instant,
    /// Set when the log could not be written: redb then holds writes that
    /// are not durable, so no more are taken until a restart replays.
    failed: Option<String>,
    hub: Arc<Hub>,
    config: EmbeddedConfig,
    head: u64,
    compacted: u64,
    /// (when, head then), one sample a second, for age-based compaction.
    samples: VecDeque<(Instant, u64)>,
}

impl Writer {
    pub fn new(
        db: Arc<Database>,
        file: StoreFile,
        wal: Wal,
        hub: Arc<Hub>,
        config: EmbeddedConfig,
        head: u64,
        compacted: u64,
    ) -> Self {
        Self {
            db,
            file,
            wal,
            last_checkpoint: Instant::now(),
            failed: None,
            hub,
            config,
            head,
            compacted,
            samples: VecDeque::new(),
        }
    }

    /// Serves requests until every sender is gone.
    pub fn run(mut self, requests: mpsc::Receiver<(Op, Reply)>) {
        let mut expected = 1;
        loop {
            let first = match requests
                .recv_timeout(self.config.checkpoint_interval.min(Duration::from_secs(1)))
            {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.compact_history();
                    self.checkpoint_if_due();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // A clean shutdown leaves nothing to replay.
                    if self.wal.len() > 0 {
                        self.checkpoint();
                    }
                    return;
                }
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + LINGER;
            while batch.len() < MAX_BATCH {
                let next = match requests.try_recv() {
                    Ok(next) => next,
                    Err(mpsc::TryRecvError::Empty) if batch.len() < expected => {
                        match requests
                            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                        {
                            Ok(next) => next,
                            Err(_) => break,
                        }
                    }
                    Err(_) => break,
                };
                batch.push(next);
            }
            expected = batch.len();
            self.commit(batch);
            self.compact_history();
            self.checkpoint_if_due();
        }
    }

    fn commit(&mut self, batch: Vec<(Op, Reply)>) {
        let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
        if let Some(failed) = &self.failed {
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unavailable(failed.clone())));
            }
            return;
        }
        let mut head = self.head;
        let mut events = Vec::new();
        let applied = self.transaction(Durability::None, |txn| {
            let mut tables = Tables::open(txn)?;
            let outcomes = ops
                .into_iter()
                .map(|op| tables.apply(op, &mut head, &mut events))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(compacted) = tables.compacted {
                tables.meta.insert(META_COMPACTED, compacted)?;
            }
            Ok((outcomes, tables.compacted, tables.wal))
        });
        let (outcomes, compacted, wal_entries) = match applied {
            Ok(applied) => applied,
            Err(err) => {
                let message = err.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unavailable(message.clone())));
                }
                return;
            }
        };
        if !wal_entries.is_empty()
            && let Err(err) = self.wal.append(&wal_entries)
        {
            let message = format!(
                "writing {}: {err}; restart to recover",
                self.wal.path().display()
            );
            tracing::error!(%message, "store write-ahead log failed");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Unavailable(message.clone())));
            }
            self.failed = Some(message);
            return;
        }
        self.head = head;
        if let Some(compacted) = compacted {
            // Acknowledged compactions are durable, like writes. They are
            // rare: a checkpoint is simpler than logging them.
            self.checkpoint();
            self.compacted = compacted;
        }
        self.hub.publish(events, Revision(head));
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }

    fn checkpoint_if_due(&mut self) {
        let len = self.wal.len();
        let due = self.last_checkpoint.elapsed() >= self.config.checkpoint_interval;
        if len >= CHECKPOINT_BYTES || (len > 0 && due) {
            self.checkpoint();
        }
    }

    /// Makes everything redb holds durable, then empties the log.
    fn checkpoint(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let durable = self.transaction(Durability::Immediate, |_| Ok(()));
        let emptied = durable.and_then(|()| {
            self.wal.reset().map_err(|err| {
                StoreError::Unavailable(format!("{}: {err}", self.wal.path().display()))
            })
        });
        match emptied {
            Ok(()) => self.last_checkpoint = Instant::now(),
            // The log still holds everything: nothing is lost, and the next
            // checkpoint tries again.
            Err(err) => tracing::warn!(%err, "store checkpoint failed"),
        }
    }

    /// Runs `f` in a write transaction committed with `durability`.
    fn transaction<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let run = || -> Result<T, redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(durability)
                .map_err(|err| redb::Error::Io(std::io::Error::other(err.to_string())))?;
            let result = f(&txn)?;
            txn.commit()?;
            Ok(result)
        };
        run().map_err(|err| self.file.error(err))
    }

    /// Drops history older than the configured window, a chunk at a time.
    fn compact_history(&mut self) {
        let now = Instant::now();
        if self
            .samples
            .back()
            .is_none_or(|(at, _)| now - *at >= Duration::from_secs(1))
        {
            self.samples.push_back((now, self.head));
        }
        let mut by_age = 0;
        while let Some(&(at, head)) = self.samples.front() {
            if now - at < self.config.history {
                break;
            }
            by_age = head;
            self.samples.pop_front();
        }
        let by_count = self.head.saturating_sub(self.config.max_history_revisions);
        let target = by_age.max(by_count);
        if target <= self.compacted {
            return;
        }
        let from = self.compacted;
        // Not logged: a compaction lost in a crash only keeps more history,
        // and is redone.
        let done = self.transaction(Durability::None, |txn| {
            let mut log = txn.open_table(LOG)?;
            let stale: Vec<u64> = log
                .range(from + 1..=target)?
                .take(COMPACT_CHUNK)
                .map(|entry| entry.map(|(rev, _)| rev.value()))
                .collect::<Result<_, _>>()?;
            let reached = if stale.len() < COMPACT_CHUNK {
                target
            } else {
                stale.last().copied().unwrap_or(target)
            };
            for rev in stale {
                log.remove(rev)?;
            }
            txn.open_table(META)?.insert(META_COMPACTED, reached)?;
            Ok(reached)
        });
        match done {
            Ok(reached) => self.compacted = reached,
            Err(err) => tracing::warn!(%err, "compacting store history"),
        }
    }
}

/// The tables of one write transaction and what it changed.
struct Tables<'txn> {
    current: Table<'txn, &'static [u8], &'static [u8]>,
    log: Table<'txn, u64, &'static [u8]>,
    meta: Table<'txn, &'static str, u64>,
    /// Set by a compaction request in this transaction.
    compacted: Option<u64>,
    /// The log entries written, for the write-ahead log.
    wal: Vec<WalEntry>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            current: txn.open_table(CURRENT)?,
            log: txn.open_table(LOG)?,
            meta: txn.open_table(META)?,
            compacted: None,
            wal: Vec::new(),
        })
    }

    fn current(&self, key: &str) -> Result<Option<Record>, redb::Error> {
        match self.current.get(key.as_bytes())? {
            Some(bytes) => Ok(Some(Record::decode(bytes.value()).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    /// Applies one request. A refused request (conflict, missing key)
    /// changes nothing and is answered with its error; only storage
    /// failures abort the transaction.
    fn apply(
        &mut self,
        op: Op,
        head: &mut u64,
        events: &mut Vec<Event>,
    ) -> Result<Result<Outcome, StoreError>, redb::Error> {
        Ok(match op {
            Op::Create { key, value } => {
                if self.current(&key)?.is_some() {
                    return Ok(Err(StoreError::AlreadyExists(key)));
                }
                *head += 1;
                let new = Record {
                    create: *head,
                    modified: *head,
                    value,
                };
                let kv = self.put(&key, new, None, *head, events)?;
                Ok(Outcome::Written(kv))
            }
            Op::Update {
                key,
                value,
                expected,
            } => {
                let prev = match self.current(&key)? {
                    None => return Ok(Err(StoreError::NotFound(key))),
                    Some(prev) if prev.modified != expected.0 => {
                        let actual = Revision(prev.modified);
                        return Ok(Err(StoreError::Conflict {
                            key,
                            expected,
                            actual,
                        }));
                    }
                    Some(prev) => prev,
                };
                *head += 1;
                let new = Record {
                    create: prev.create,
                    modified: *head,
                    value,
                };
                let kv = self.put(&key, new, Some(prev), *head, events)?;
                Ok(Outcome::Written(kv))
            }
            Op::Delete { key, expected } => {
                let prev = match self.current(&key)? {
                    None => return Ok(Err(StoreError::NotFound(key))),
                    Some(prev) if expected.is_some_and(|e| e.0 != prev.modified) => {
                        let (expected, actual) =
                            (expected.unwrap_or_default(), Revision(prev.modified));
                        return Ok(Err(StoreError::Conflict {
                            key,
                            expected,
                            actual,
                        }));
                    }
                    Some(prev) => prev,
                };
                *head += 1;
                self.current.remove(key.as_bytes())?;
                let entry = LogEntry {
                    key: key.clone(),
                    new: None,
                    prev: Some(prev.clone()),
                };
                self.log(*head, &entry)?;
                let prev = prev.into_kv(key);
                events.push(Event::Delete {
                    prev: prev.clone(),
                    revision: Revision(*head),
                });
                Ok(Outcome::Deleted(prev, Revision(*head)))
            }
            Op::Compact { revision } => {
                let compacted = self
                    .compacted
                    .unwrap_or(self.meta.get(META_COMPACTED)?.map_or(0, |v| v.value()));
                if revision.0 > *head {
                    return Ok(Err(StoreError::FutureRevision {
                        requested: revision,
                        current: Revision(*head),
                    }));
                }
                if revision.0 <= compacted {
                    return Ok(Err(StoreError::Compacted {
                        requested: revision,
                    }));
                }
                let stale: Vec<u64> = self
                    .log
                    .range(compacted + 1..=revision.0)?
                    .map(|entry| entry.map(|(rev, _)| rev.value()))
                    .collect::<Result<_, _>>()?;
                for rev in stale {
                    self.log.remove(rev)?;
                }
                self.compacted = Some(revision.0);
                Ok(Outcome::Compacted)
            }
        })
    }

    fn log(&mut self, revision: u64, entry: &LogEntry) -> Result<(), redb::Error> {
        let bytes = entry.encode();
        self.log.insert(revision, bytes.as_slice())?;
        self.wal.push((revision, bytes));
        Ok(())
    }

    fn put(
        &mut self,
        key: &str,
        new: Record,
        prev: Option<Record>,
        revision: u64,
        events: &mut Vec<Event>,
    ) -> Result<KeyValue, redb::Error> {
        self.current
            .insert(key.as_bytes(), new.encode().as_slice())?;
        let entry = LogEntry {
            key: key.to_owned(),
            new: Some(new.clone()),
            prev: prev.clone(),
        };
        self.log(revision, &entry)?;
        let kv = new.into_kv(key.to_owned());
        let prev = prev.map(|p| p.into_kv(key.to_owned()));
        events.push(Event::Put {
            kv: kv.clone(),
            prev,
        });
        Ok(kv)
    }
}

fn corrupt(err: super::records::Malformed) -> redb::Error {
    redb::Error::Corrupted(err.to_string())
}
