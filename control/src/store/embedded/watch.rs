//! Watches: each one replays the log from its revision, then follows the
//! events the writer publishes. A watcher too slow to keep up is cut loose
//! from the live feed instead of buffering without bound or stalling the
//! writer; it catches up from the log and rejoins. Every event is delivered
//! once, in revision order, unless compaction overtakes a catch-up, which
//! ends the watch with [`StoreError::Compacted`].

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::{Reader, StoreFile};
use crate::store::{Event, Revision, StoreError, WatchStream};

/// Events buffered per watcher on the live feed before it is cut loose.
const LIVE_BUFFER: usize = 4096;
/// Events a watcher's consumer may have unread.
const OUT_BUFFER: usize = 1024;
/// Log entries read per catch-up step.
const CATCH_UP_CHUNK: usize = 1024;

/// The live feed: subscribers and the last revision published to them.
#[derive(Debug, Default)]
pub(super) struct Hub {
    state: Mutex<HubState>,
}

#[derive(Debug, Default)]
struct HubState {
    head: Revision,
    subscribers: Vec<Subscriber>,
}

#[derive(Debug)]
struct Subscriber {
    prefix: String,
    events: mpsc::Sender<Arc<Event>>,
}

impl Hub {
    pub fn new(head: Revision) -> Self {
        Self {
            state: Mutex::new(HubState {
                head,
                subscribers: Vec::new(),
            }),
        }
    }

    /// Hands committed events to every subscriber whose prefix matches;
    /// drops subscribers that are full (they catch up from the log) or gone.
    pub fn publish(&self, events: Vec<Event>, head: Revision) {
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.head = head;
        state.subscribers.retain(|subscriber| {
            !subscriber.events.is_closed()
                && events
                    .iter()
                    .filter(|event| event.key().starts_with(&subscriber.prefix))
                    .all(|event| subscriber.events.try_send(Arc::clone(event)).is_ok())
        });
    }

    /// Joins the live feed: events published after the returned revision.
    fn subscribe(&self, prefix: &str) -> (mpsc::Receiver<Arc<Event>>, Revision) {
        let (tx, rx) = mpsc::channel(LIVE_BUFFER);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.subscribers.push(Subscriber {
            prefix: prefix.to_owned(),
            events: tx,
        });
        (rx, state.head)
    }

    #[cfg(test)]
    fn subscribers(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .subscribers
            .len()
    }
}

/// Starts a watch of `prefix` after `after`.
pub(super) fn start(
    hub: Arc<Hub>,
    reader: Reader,
    file: StoreFile,
    prefix: String,
    after: Revision,
) -> WatchStream {
    let (out, events) = mpsc::channel(OUT_BUFFER);
    tokio::spawn(async move {
        if let Err(err) = follow(&hub, &reader, &prefix, after, &out).await {
            let err = match err {
                FollowEnd::Store(err) => err,
                FollowEnd::Storage(err) => file.error(err),
                FollowEnd::Closed => return,
            };
            let _ = out.send(Err(err)).await;
        }
    });
    WatchStream::new(events)
}

enum FollowEnd {
    /// The consumer dropped the stream.
    Closed,
    Store(StoreError),
    Storage(redb::Error),
}

async fn follow(
    hub: &Hub,
    reader: &Reader,
    prefix: &str,
    mut after: Revision,
    out: &mpsc::Sender<Result<Event, StoreError>>,
) -> Result<(), FollowEnd> {
    loop {
        let (mut live, head) = hub.subscribe(prefix);
        while after < head {
            let reader = reader.clone();
            let prefix = prefix.to_owned();
            let (events, scanned) = tokio::task::spawn_blocking(move || {
                reader.log_after(&prefix, after, head, CATCH_UP_CHUNK)
            })
            .await
            .map_err(|err| FollowEnd::Store(StoreError::Unavailable(err.to_string())))?
            .map_err(|err| match err {
                super::ReadError::Store(err) => FollowEnd::Store(err),
                super::ReadError::Storage(err) => FollowEnd::Storage(err),
            })?;
            for event in events {
                out.send(Ok(event)).await.map_err(|_| FollowEnd::Closed)?;
            }
            after = scanned;
        }
        // Live until the hub cuts us loose (we were too slow): then the
        // buffered events drain here and the loop catches up from the log.
        loop {
            let event = tokio::select! {
                event = live.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
                () = out.closed() => return Err(FollowEnd::Closed),
            };
            if event.revision() <= after {
                continue;
            }
            after = event.revision();
            out.send(Ok(Event::clone(&event)))
                .await
                .map_err(|_| FollowEnd::Closed)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyValue;

    fn put(key: &str, revision: u64) -> Event {
        Event::Put {
            kv: KeyValue {
                key: key.to_owned(),
                value: bytes::Bytes::new(),
                create_revision: Revision(revision),
                mod_revision: Revision(revision),
            },
            prev: None,
        }
    }

    #[test]
    fn subscribers_get_only_their_prefix() {
        let hub = Hub::new(Revision(0));
        let (mut pods, _) = hub.subscribe("/pods/");
        let (mut all, _) = hub.subscribe("/");
        hub.publish(vec![put("/pods/a", 1), put("/nodes/n", 2)], Revision(2));
        assert_eq!(pods.try_recv().unwrap().key(), "/pods/a");
        assert!(pods.try_recv().is_err());
        assert_eq!(all.try_recv().unwrap().revision(), Revision(1));
        assert_eq!(all.try_recv().unwrap().revision(), Revision(2));
    }

    #[test]
    fn a_full_or_gone_subscriber_is_dropped_and_its_feed_ends() {
        let hub = Hub::new(Revision(0));
        let (mut slow, _) = hub.subscribe("/");
        let (gone, _) = hub.subscribe("/");
        drop(gone);
        let burst: Vec<Event> = (1..=LIVE_BUFFER as u64 + 1).map(|r| put("/k", r)).collect();
        hub.publish(burst, Revision(LIVE_BUFFER as u64 + 1));
        assert_eq!(hub.subscribers(), 0);
        let mut received = 0;
        while slow.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, LIVE_BUFFER);
        assert!(matches!(
            slow.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn subscribing_reports_the_published_head() {
        let hub = Hub::new(Revision(7));
        hub.publish(vec![put("/k", 8)], Revision(8));
        assert_eq!(hub.subscribe("/").1, Revision(8));
    }
}
