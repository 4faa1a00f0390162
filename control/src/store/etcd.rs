//! The etcd backend: the same trait over an etcd cluster (v3 API), for
//! users who outgrow one machine or want control to be highly available.
//!
//! Compare-and-swap is an etcd transaction comparing the key's create or
//! mod revision. A watch that loses its member reconnects (to another
//! member, if the cluster has one) from the revision after the last event
//! it delivered, so its consumer sees neither a gap nor a repeat.

use std::{collections::VecDeque, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use tokio::sync::mpsc;
use tonic::Code;

use super::{
    ContinueToken, Event, KeyValue, ListOptions, ListPage, Revision, Store, StoreError, WatchStream,
};

/// Events a watch's consumer may have unread.
const OUT_BUFFER: usize = 1024;
/// Events read from etcd and not yet taken by the consumer before the etcd
/// watch is dropped until the consumer catches up.
const MAX_PENDING: usize = 4096;

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (e.g. "http://10.0.0.1:2379").
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        Ok(Self {
            client: Self::dial(endpoints, Some(Duration::from_secs(10))).await?,
            endpoints: endpoints.to_vec(),
        })
    }

    /// A connection to the cluster; `timeout` bounds each request (a watch
    /// is one long request, so its connection has none).
    async fn dial(endpoints: &[String], timeout: Option<Duration>) -> Result<Client, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(timeout) = timeout {
            options = options.with_timeout(timeout);
        }
        Client::connect(endpoints, Some(options))
            .await
            .map_err(|err| StoreError::Unavailable(format!("etcd at {endpoints:?}: {err}")))
    }

    /// Runs a transaction (a write: repeated only if it never reached etcd).
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.call(Retry::Write, |mut client| {
            let txn = txn.clone();
            async move { client.txn(txn).await }
        })
        .await
        .map_err(unavailable)
    }

    /// Runs `request`, repeating it a few times with back-off when it
    /// failed in a way `retry` allows: a client of a cluster must ride
    /// through a member going away.
    async fn call<T, F>(
        &self,
        retry: Retry,
        request: impl Fn(Client) -> F,
    ) -> Result<T, etcd_client::Error>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut backoff = Duration::from_millis(50);
        let mut attempts = 0;
        loop {
            match request(self.client.clone()).await {
                Err(err)
                    if attempts < 6
                        && match retry {
                            Retry::Read => transient(&err),
                            Retry::Write => never_sent(&err),
                        } =>
                {
                    attempts += 1;
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                result => return result,
            }
        }
    }
}

/// etcd's answer as a [`StoreError`]; `requested` names the revision a
/// compaction or future-revision refusal is about.
fn error(err: etcd_client::Error, requested: Revision, current: Revision) -> StoreError {
    let message = err.to_string();
    if message.contains("required revision has been compacted") {
        StoreError::Compacted { requested }
    } else if message.contains("required revision is a future revision") {
        StoreError::FutureRevision { requested, current }
    } else {
        StoreError::Unavailable(format!("etcd: {message}"))
    }
}

/// etcd (or the path to it) may be back in a moment: a member restarting,
/// an election, a connection being re-established.
fn transient(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(status) => status.code() == Code::Unavailable,
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// The request certainly never reached a member (its connection was
/// refused), so even a write may be sent again without risk of applying
/// it twice.
fn never_sent(err: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = err else {
        return false;
    };
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotConnected
            );
        }
        source = err.source();
    }
    false
}

/// Which failed requests [`EtcdStore::call`] sends again.
#[derive(Clone, Copy)]
enum Retry {
    /// Reads: any transient failure.
    Read,
    /// Writes: only requests that never reached etcd.
    Write,
}

fn unavailable(err: etcd_client::Error) -> StoreError {
    error(err, Revision(0), Revision(0))
}

fn revision(value: i64) -> Revision {
    Revision(u64::try_from(value).unwrap_or(0))
}

fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|_| StoreError::Unavailable("etcd holds a key that is not UTF-8".to_owned()))?
            .to_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: revision(kv.create_revision()),
        mod_revision: revision(kv.mod_revision()),
    })
}

/// etcd's range end for `prefix` ("\0" means every key from the start).
fn range_end(prefix: &str) -> Vec<u8> {
    super::prefix_end(prefix).unwrap_or_else(|| vec![0])
}

fn as_i64(revision: Revision) -> i64 {
    i64::try_from(revision.0).unwrap_or(i64::MAX)
}

impl EtcdStore {
    /// The key's current state when a transaction's comparison failed.
    fn refused(key: &str, expected: Revision, responses: Vec<TxnOpResponse>) -> StoreError {
        let current = responses.into_iter().find_map(|response| match response {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        match current {
            None => StoreError::NotFound(key.to_owned()),
            Some(actual) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual: revision(actual),
            },
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let response = self
            .call(Retry::Read, |mut client| async move {
                client
                    .get(vec![0], Some(GetOptions::new().with_count_only()))
                    .await
            })
            .await
            .map_err(unavailable)?;
        Ok(revision(response.header().map_or(0, |h| h.revision())))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let response = self
            .call(Retry::Read, |mut client| async move {
                client.get(key, None).await
            })
            .await
            .map_err(unavailable)?;
        response.kvs().first().map(key_value).transpose()
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListPage, StoreError> {
        let (at, start) = match &options.continue_token {
            Some(token) => {
                let mut next = token.after_key.clone().into_bytes();
                next.push(0);
                (Some(token.revision), next)
            }
            None => (options.revision, prefix.as_bytes().to_vec()),
        };
        let mut get = GetOptions::new()
            .with_range(range_end(prefix))
            .with_limit(i64::try_from(options.limit).unwrap_or(i64::MAX));
        if let Some(at) = at {
            get = get.with_revision(as_i64(at));
        }
        let response = self
            .call(Retry::Read, |mut client| {
                let (start, get) = (start.clone(), get.clone());
                async move { client.get(start, Some(get)).await }
            })
            .await
            .map_err(|err| error(err, at.unwrap_or_default(), Revision(0)))?;
        let read_at = at.unwrap_or_else(|| revision(response.header().map_or(0, |h| h.revision())));
        let items = response
            .kvs()
            .iter()
            .map(key_value)
            .collect::<Result<Vec<_>, _>>()?;
        let continue_token = (options.limit > 0 && response.more())
            .then(|| items.last())
            .flatten()
            .map(|last| ContinueToken {
                revision: read_at,
                after_key: last.key.clone(),
            });
        Ok(ListPage {
            items,
            revision: read_at,
            continue_token,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let response = self.txn(txn).await?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_owned()));
        }
        let at = revision(response.header().map_or(0, |h| h.revision()));
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: at,
            mod_revision: at,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key,
                CompareOp::Equal,
                as_i64(expected),
            )])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn(txn).await?;
        if !response.succeeded() {
            return Err(Self::refused(key, expected, response.op_responses()));
        }
        let at = revision(response.header().map_or(0, |h| h.revision()));
        let created = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Put(put) => put.prev_key().map(|prev| prev.create_revision()),
            _ => None,
        });
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: created.map_or(at, revision),
            mod_revision: at,
        })
    }

    async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        let guard = match expected {
            Some(expected) => Compare::mod_revision(key, CompareOp::Equal, as_i64(expected)),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn(txn).await?;
        if !response.succeeded() {
            return Err(Self::refused(
                key,
                expected.unwrap_or_default(),
                response.op_responses(),
            ));
        }
        let at = revision(response.header().map_or(0, |h| h.revision()));
        let prev = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Delete(delete) => delete.prev_kvs().first().map(key_value),
            _ => None,
        });
        let prev = prev.ok_or_else(|| StoreError::NotFound(key.to_owned()))??;
        Ok((prev, at))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // etcd reports a compacted start only on the stream; a read at that
        // revision answers now, so the caller gets its 410 from this call.
        let current = self.current_revision().await?;
        if after.0 > 0 && after <= current {
            let probe = GetOptions::new()
                .with_count_only()
                .with_revision(as_i64(after));
            self.call(Retry::Read, |mut client| {
                let probe = probe.clone();
                async move { client.get(prefix, Some(probe)).await }
            })
            .await
            .map_err(|err| error(err, after, current))?;
        }
        let (out, events) = mpsc::channel(OUT_BUFFER);
        // Its own connection: whatever happens to a watch stream never
        // disturbs the requests of other callers.
        let client = Self::dial(&self.endpoints, None).await?;
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            if let Err(err) = follow(client, &prefix, after, &out).await {
                let _ = out.send(Err(err)).await;
            }
        });
        Ok(WatchStream::new(events))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let current = self.current_revision().await?;
        self.call(Retry::Write, |mut client| async move {
            let options = CompactionOptions::new().with_physical();
            client.compact(as_i64(revision), Some(options)).await
        })
        .await
        .map_err(|err| error(err, revision, current))?;
        Ok(())
    }
}

/// Streams etcd's events after `after` to `out`. The gRPC stream is always
/// drained into a bounded queue, never left unread (HTTP/2 libraries treat
/// piles of unread small frames as an attack and drop the connection);
/// when the consumer falls a queue behind, the etcd watch is dropped and
/// re-created from the last delivered revision once it has caught up, as
/// it is when the connection to a member is lost. Returns Ok when the
/// consumer is gone.
async fn follow(
    mut client: Client,
    prefix: &str,
    mut after: Revision,
    out: &mpsc::Sender<Result<Event, StoreError>>,
) -> Result<(), StoreError> {
    let mut backoff = Duration::from_millis(100);
    let mut pending: VecDeque<Event> = VecDeque::new();
    loop {
        while let Some(event) = pending.pop_front() {
            let at = event.revision();
            if out.send(Ok(event)).await.is_err() {
                return Ok(());
            }
            after = at;
        }
        let options = WatchOptions::new()
            .with_range(range_end(prefix))
            .with_start_revision(as_i64(Revision(after.0 + 1)))
            .with_prev_key();
        let mut stream = match client.watch(prefix, Some(options)).await {
            Ok(stream) => stream,
            Err(_) if out.is_closed() => return Ok(()),
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let mut queued = after;
        while pending.len() < MAX_PENDING {
            tokio::select! {
                message = stream.message() => {
                    let response = match message {
                        Ok(Some(response)) => response,
                        // The member went away: watch again from where we are.
                        Ok(None) | Err(_) => break,
                    };
                    backoff = Duration::from_millis(100);
                    if response.canceled() {
                        if response.compact_revision() > 0 {
                            return Err(StoreError::Compacted { requested: after });
                        }
                        return Err(StoreError::Unavailable(format!(
                            "etcd cancelled the watch: {}",
                            response.cancel_reason()
                        )));
                    }
                    for event in response.events() {
                        if let Some(event) = convert(event)?
                            && event.revision() > queued
                        {
                            queued = event.revision();
                            pending.push_back(event);
                        }
                    }
                }
                () = out.closed(), if pending.is_empty() => return Ok(()),
                permit = out.reserve(), if !pending.is_empty() => {
                    let Ok(permit) = permit else { return Ok(()) };
                    if let Some(event) = pending.pop_front() {
                        after = event.revision();
                        permit.send(Ok(event));
                    }
                }
            }
        }
        if out.is_closed() {
            return Ok(());
        }
    }
}

fn convert(event: &etcd_client::Event) -> Result<Option<Event>, StoreError> {
    let Some(kv) = event.kv() else {
        return Ok(None);
    };
    Ok(Some(match event.event_type() {
        EventType::Put => Event::Put {
            kv: key_value(kv)?,
            prev: event.prev_kv().map(key_value).transpose()?,
        },
        EventType::Delete => Event::Delete {
            prev: match event.prev_kv() {
                Some(prev) => key_value(prev)?,
                // Only when the previous value was compacted away.
                None => KeyValue {
                    key: key_value(kv)?.key,
                    value: Bytes::new(),
                    create_revision: Revision(0),
                    mod_revision: Revision(0),
                },
            },
            revision: revision(kv.mod_revision()),
        },
    }))
}
