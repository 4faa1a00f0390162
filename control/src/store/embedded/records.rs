//! The embedded store's tables and the byte layout of their values.
//!
//! - `current`: key -> [`Record`], the latest value of every live key.
//! - `log`: revision -> [`LogEntry`], every change with the value it
//!   replaced, so watches replay history and lists read past revisions by
//!   undoing later changes. Compaction deletes its old entries.
//! - `meta`: the compaction point. The head revision is the last log entry's
//!   (or the compaction point, if compaction emptied the log): deriving it
//!   spares every commit a write to a third table.
//!
//! Integers are little-endian; a record is `create | mod | value`, a log
//! entry `flags | key length | key | new record? | previous record?`.

use bytes::Bytes;
use redb::{ReadableTable, TableDefinition};

use crate::store::{KeyValue, Revision};

pub(super) const CURRENT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("current");
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) const META_COMPACTED: &str = "compacted";

/// (head, compacted) as the tables of one transaction hold them.
pub(super) fn revisions(
    log: &impl ReadableTable<u64, &'static [u8]>,
    meta: &impl ReadableTable<&'static str, u64>,
) -> Result<(u64, u64), redb::Error> {
    let compacted = meta.get(META_COMPACTED)?.map_or(0, |v| v.value());
    let last = log.last()?.map_or(0, |(revision, _)| revision.value());
    Ok((last.max(compacted), compacted))
}

const HAS_NEW: u8 = 1;
const HAS_PREV: u8 = 2;

/// A malformed value: the file was written by something else or damaged.
#[derive(Debug, thiserror::Error)]
#[error("malformed {0}")]
pub(super) struct Malformed(pub &'static str);

/// A key's value and revisions, without the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub create: u64,
    pub modified: u64,
    pub value: Bytes,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.value.len());
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.create.to_le_bytes());
        out.extend_from_slice(&self.modified.to_le_bytes());
        out.extend_from_slice(&(self.value.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.value);
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut reader = Reader(bytes);
        let record = reader.record()?;
        reader.end("record")?;
        Ok(record)
    }

    pub fn into_kv(self, key: String) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            create_revision: Revision(self.create),
            mod_revision: Revision(self.modified),
        }
    }
}

/// One change: the record written (None for a delete) and the one replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LogEntry {
    pub key: String,
    pub new: Option<Record>,
    pub prev: Option<Record>,
}

impl LogEntry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.key.len());
        let flags = if self.new.is_some() { HAS_NEW } else { 0 }
            | if self.prev.is_some() { HAS_PREV } else { 0 };
        out.push(flags);
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        for record in [&self.new, &self.prev].into_iter().flatten() {
            record.encode_into(&mut out);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let mut reader = Reader(bytes);
        let flags = reader.take(1, "log flags")?[0];
        let key_len = reader.u32()? as usize;
        let key = std::str::from_utf8(reader.take(key_len, "log key")?)
            .map_err(|_| Malformed("log key"))?
            .to_owned();
        let new = (flags & HAS_NEW != 0)
            .then(|| reader.record())
            .transpose()?;
        let prev = (flags & HAS_PREV != 0)
            .then(|| reader.record())
            .transpose()?;
        reader.end("log entry")?;
        Ok(Self { key, new, prev })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        let bytes = self.take(8, "revision")?;
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| Malformed("revision"))?,
        ))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let bytes = self.take(4, "length")?;
        Ok(u32::from_le_bytes(
            bytes.try_into().map_err(|_| Malformed("length"))?,
        ))
    }

    fn record(&mut self) -> Result<Record, Malformed> {
        let create = self.u64()?;
        let modified = self.u64()?;
        let len = self.u32()? as usize;
        let value = Bytes::copy_from_slice(self.take(len, "value")?);
        Ok(Record {
            create,
            modified,
            value,
        })
    }

    fn end(&self, what: &'static str) -> Result<(), Malformed> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Malformed(what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(create: u64, modified: u64, value: &'static str) -> Record {
        Record {
            create,
            modified,
            value: Bytes::from_static(value.as_bytes()),
        }
    }

    #[test]
    fn records_and_log_entries_round_trip() {
        let r = record(3, 9, "{\"kind\":\"Pod\"}");
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        for entry in [
            LogEntry {
                key: "/a".into(),
                new: Some(r.clone()),
                prev: None,
            },
            LogEntry {
                key: "/b".into(),
                new: Some(r.clone()),
                prev: Some(record(3, 4, "")),
            },
            LogEntry {
                key: "/c".into(),
                new: None,
                prev: Some(r.clone()),
            },
        ] {
            assert_eq!(LogEntry::decode(&entry.encode()).unwrap(), entry);
        }
    }

    #[test]
    fn truncated_or_padded_bytes_are_malformed_not_a_panic() {
        let bytes = LogEntry {
            key: "/a".into(),
            new: Some(record(1, 1, "v")),
            prev: None,
        }
        .encode();
        for cut in 0..bytes.len() {
            assert!(LogEntry::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = record(1, 1, "v").encode();
        padded.push(0);
        assert!(Record::decode(&padded).is_err());
    }
}
