//! The store: a revisioned key-value store with etcd's semantics, on which
//! the Kubernetes API's resourceVersion, optimistic concurrency, watch and
//! 410 Gone are built.
//!
//! One global revision counts every change; each key remembers the revision
//! that created it and the one that last modified it. Updates and deletes
//! can be guarded by the expected modification revision (compare-and-swap).
//! A watch delivers every change after a revision, in order, exactly once,
//! then follows live. History older than the compaction point is gone, and
//! asking for it is [`StoreError::Compacted`] (the API's 410 Gone).
//!
//! Two backends: [`embedded::EmbeddedStore`] (the default, one data
//! directory) and [`etcd::EtcdStore`] (an etcd cluster, for HA and scale).

mod continue_token;
pub mod embedded;
pub mod etcd;

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

pub use continue_token::ContinueToken;

/// A point in the store's history; every change gets the next one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A key's value and when it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision that created the key (unchanged by updates).
    pub create_revision: Revision,
    /// The revision of the last change to it.
    pub mod_revision: Revision,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A key was created (`prev` is None) or updated.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A key was deleted at `revision`; `prev` is its last value.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// What a list reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read as of this revision; None reads the latest.
    pub revision: Option<Revision>,
    /// At most this many items; 0 means all.
    pub limit: usize,
    /// Continue a paginated list where the previous page stopped (the
    /// token carries the revision, which then overrides `revision`).
    pub continue_token: Option<ContinueToken>,
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// In key order.
    pub items: Vec<KeyValue>,
    /// The revision the page was read at; every page of a list has the same.
    pub revision: Revision,
    /// Present when more items follow.
    pub continue_token: Option<ContinueToken>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {key} was modified at revision {actual}, not {expected}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("revision {requested} has been compacted")]
    Compacted { requested: Revision },
    #[error("revision {requested} is newer than the store's {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("invalid continue token: {0}")]
    InvalidContinue(String),
    #[error("store data in {path}: {message}")]
    Corrupt { path: String, message: String },
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A watch's events in revision order. Ends with an error if the watch
/// cannot go on (its history was compacted while it caught up, or the
/// backend failed); dropping it ends the watch.
#[derive(Debug)]
pub struct WatchStream {
    events: mpsc::Receiver<Result<Event, StoreError>>,
}

impl WatchStream {
    pub(crate) fn new(events: mpsc::Receiver<Result<Event, StoreError>>) -> Self {
        Self { events }
    }

    /// The next event; None once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        self.events.recv().await
    }
}

/// The store every part of control reads and writes through.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The latest revision: the one the next read without a revision sees.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Keys starting with `prefix`, in key order, paginated.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage, StoreError>;

    /// Writes `key` if it does not exist.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError>;

    /// Replaces `key`'s value if it was last modified at `expected`.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<KeyValue, StoreError>;

    /// Deletes `key` (if last modified at `expected`, when given); returns
    /// its last value and the revision of the deletion.
    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError>;

    /// Every change to keys starting with `prefix` after revision `after`,
    /// then live changes.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// Forgets history up to and including `revision`.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}

/// The end of the key range starting with `prefix`: the smallest key
/// greater than every key with that prefix; None when no key is (the empty
/// prefix covers everything).
pub(crate) fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_range() {
        assert_eq!(prefix_end("/registry/pods/").unwrap(), b"/registry/pods0");
        assert_eq!(prefix_end("a\u{7f}").unwrap(), b"a\x80");
        assert_eq!(prefix_end(""), None);
    }
}
