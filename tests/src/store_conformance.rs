//! The store conformance suite: etcd's semantics as capstan relies on
//! them, run against every backend (tests/tests/store.rs). Each case takes a
//! fresh store and works under its own key prefix.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use capstan_control::store::{Event, ListOptions, Revision, Store, StoreError};

type SharedStore = Arc<dyn Store>;

fn value(text: impl Into<String>) -> Bytes {
    Bytes::from(text.into())
}

/// Reads the next event of a watch, failing after `within`.
async fn next_event(
    watch: &mut capstan_control::store::WatchStream,
    within: Duration,
) -> anyhow::Result<Event> {
    match tokio::time::timeout(within, watch.next()).await {
        Ok(Some(Ok(event))) => Ok(event),
        Ok(Some(Err(err))) => bail!("watch failed: {err}"),
        Ok(None) => bail!("watch ended"),
        Err(_) => bail!("no event within {within:?}"),
    }
}

/// Create, read, update, delete; revisions move as etcd's do.
pub async fn crud_and_revisions(store: SharedStore) -> anyhow::Result<()> {
    let before = store.current_revision().await?;
    let created = store.create("/crud/a", value("1")).await?;
    ensure!(
        created.create_revision > before,
        "{created:?} after {before}"
    );
    ensure!(created.create_revision == created.mod_revision);
    ensure!(store.current_revision().await? == created.mod_revision);
    ensure!(store.get("/crud/a").await?.as_ref() == Some(&created));
    ensure!(store.get("/crud/missing").await?.is_none());

    let updated = store
        .update("/crud/a", value("2"), created.mod_revision)
        .await?;
    ensure!(updated.create_revision == created.create_revision);
    ensure!(updated.mod_revision > created.mod_revision);
    ensure!(updated.value == "2");

    let (prev, deleted_at) = store.delete("/crud/a", Some(updated.mod_revision)).await?;
    ensure!(prev == updated, "{prev:?}");
    ensure!(deleted_at > updated.mod_revision);
    ensure!(store.get("/crud/a").await?.is_none());
    ensure!(store.current_revision().await? == deleted_at);
    Ok(())
}

/// Compare-and-swap refuses stale revisions, naming the current one.
pub async fn cas_conflicts(store: SharedStore) -> anyhow::Result<()> {
    let first = store.create("/cas/k", value("a")).await?;
    let second = store
        .update("/cas/k", value("b"), first.mod_revision)
        .await?;
    let at = store.current_revision().await?;

    match store.update("/cas/k", value("c"), first.mod_revision).await {
        Err(StoreError::Conflict {
            actual, expected, ..
        }) => {
            ensure!(actual == second.mod_revision && expected == first.mod_revision);
        }
        other => bail!("stale update: {other:?}"),
    }
    match store.delete("/cas/k", Some(first.mod_revision)).await {
        Err(StoreError::Conflict { actual, .. }) => ensure!(actual == second.mod_revision),
        other => bail!("stale delete: {other:?}"),
    }
    match store.create("/cas/k", value("d")).await {
        Err(StoreError::AlreadyExists(key)) => ensure!(key == "/cas/k"),
        other => bail!("second create: {other:?}"),
    }
    match store.update("/cas/none", value("x"), Revision(1)).await {
        Err(StoreError::NotFound(_)) => {}
        other => bail!("update of a missing key: {other:?}"),
    }
    match store.delete("/cas/none", None).await {
        Err(StoreError::NotFound(_)) => {}
        other => bail!("delete of a missing key: {other:?}"),
    }
    // Refused writes change nothing, not even the revision.
    ensure!(store.current_revision().await? == at);
    ensure!(store.get("/cas/k").await?.map(|kv| kv.value) == Some(value("b")));
    Ok(())
}

/// 16 writers each add 1 to a counter 500 times with CAS retry: 8000.
pub async fn concurrent_increments_lose_nothing(store: SharedStore) -> anyhow::Result<()> {
    const WRITERS: u64 = 16;
    const INCREMENTS: u64 = 500;
    store.create("/counter", value("0")).await?;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut conflicts = 0_u64;
                for _ in 0..INCREMENTS {
                    loop {
                        let kv = store.get("/counter").await?.context("counter vanished")?;
                        let n: u64 = std::str::from_utf8(&kv.value)?.parse()?;
                        match store
                            .update("/counter", value((n + 1).to_string()), kv.mod_revision)
                            .await
                        {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(err) => return Err(anyhow::Error::from(err)),
                        }
                    }
                }
                anyhow::Ok(conflicts)
            })
        })
        .collect();
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await??;
    }
    let total = store.get("/counter").await?.context("counter vanished")?;
    ensure!(
        total.value == (WRITERS * INCREMENTS).to_string(),
        "counter is {:?}",
        total.value
    );
    ensure!(
        conflicts > 0,
        "16 concurrent writers never conflicted: CAS was not exercised"
    );
    Ok(())
}

/// A watch from a past revision replays what followed it, then goes live;
/// deletes carry the last value.
pub async fn watch_replays_then_follows(store: SharedStore) -> anyhow::Result<()> {
    let a = store.create("/w/a", value("a1")).await?;
    let b = store.create("/w/b", value("b1")).await?;
    let a2 = store.update("/w/a", value("a2"), a.mod_revision).await?;
    store.create("/other/x", value("not watched")).await?;
    let (_, deleted_at) = store.delete("/w/b", None).await?;

    let mut watch = store.watch("/w/", a.mod_revision).await?;
    let wait = Duration::from_secs(10);
    match next_event(&mut watch, wait).await? {
        Event::Put { kv, prev: None } => ensure!(kv == b),
        other => bail!("expected b's creation: {other:?}"),
    }
    match next_event(&mut watch, wait).await? {
        Event::Put {
            kv,
            prev: Some(prev),
        } => ensure!(kv == a2 && prev == a),
        other => bail!("expected a's update: {other:?}"),
    }
    match next_event(&mut watch, wait).await? {
        Event::Delete { prev, revision } => ensure!(prev == b && revision == deleted_at),
        other => bail!("expected b's deletion: {other:?}"),
    }
    let c = store.create("/w/c", value("live")).await?;
    match next_event(&mut watch, wait).await? {
        Event::Put { kv, .. } => ensure!(kv == c),
        other => bail!("expected c's creation: {other:?}"),
    }
    ensure!(
        tokio::time::timeout(Duration::from_millis(300), watch.next())
            .await
            .is_err(),
        "an event for another prefix or a duplicate arrived"
    );
    Ok(())
}

/// 50,000 events from 16 writers reach a watcher that starts slow: none
/// lost, none repeated, in revision order.
pub async fn watch_burst_arrives_whole_and_in_order(store: SharedStore) -> anyhow::Result<()> {
    const WRITERS: usize = 16;
    const EACH: usize = 3125;
    let start = store.current_revision().await?;
    let mut watch = store.watch("/burst/", start).await?;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut acked = Vec::with_capacity(EACH);
                for i in 0..EACH {
                    let kv = store.create(&format!("/burst/{w}/{i}"), value("x")).await?;
                    acked.push(kv.mod_revision);
                }
                anyhow::Ok(acked)
            })
        })
        .collect();
    // Fall behind on purpose: a slow consumer must not lose events.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut acked = BTreeSet::new();
    let mut received = Vec::with_capacity(WRITERS * EACH);
    let mut writers = writers.into_iter();
    while received.len() < WRITERS * EACH {
        let event = next_event(&mut watch, Duration::from_secs(60)).await?;
        received.push(event.revision());
        if received.len() % 5000 == 0
            && let Some(writer) = writers.next()
        {
            acked.extend(writer.await??);
        }
    }
    for writer in writers {
        acked.extend(writer.await??);
    }
    ensure!(
        received.windows(2).all(|pair| pair[0] < pair[1]),
        "events out of order or repeated"
    );
    let received: BTreeSet<Revision> = received.into_iter().collect();
    ensure!(
        received == acked,
        "{} acknowledged, {} received",
        acked.len(),
        received.len()
    );
    Ok(())
}

/// Pages of a list read at one revision are consistent while writes go on.
pub async fn paginated_list_is_consistent_under_writes(store: SharedStore) -> anyhow::Result<()> {
    const KEYS: usize = 1000;
    let mut initial = BTreeMap::new();
    for i in 0..KEYS {
        let kv = store
            .create(&format!("/page/{i:04}"), value(format!("v{i}")))
            .await?;
        initial.insert(kv.key.clone(), kv);
    }
    let at = store.current_revision().await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("/page/{:04}", (i * 7) % KEYS);
                if let Some(kv) = store.get(&key).await? {
                    if i % 3 == 0 {
                        store.delete(&key, Some(kv.mod_revision)).await?;
                    } else {
                        store
                            .update(&key, value(format!("w{i}")), kv.mod_revision)
                            .await?;
                    }
                }
                store.create(&format!("/page/new/{i}"), value("n")).await?;
                i += 1;
            }
            anyhow::Ok(i)
        })
    };

    // At the revision taken before any concurrent write: exactly the initial keys.
    let paged = list_in_pages(
        &store,
        ListOptions {
            revision: Some(at),
            limit: 97,
            continue_token: None,
        },
    )
    .await?;
    ensure!(paged.0 == at, "pages read at {} not {at}", paged.0);
    ensure!(
        paged.1 == initial.values().cloned().collect::<Vec<_>>(),
        "paged list at {at} differs from the data written before it"
    );

    // At the latest revision: every page at the first page's revision.
    let (latest, pages) = list_in_pages(
        &store,
        ListOptions {
            limit: 50,
            ..Default::default()
        },
    )
    .await?;
    let after_paging = store.current_revision().await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ensure!(
        after_paging > latest,
        "no write landed while the pages were read"
    );
    let writes = writer.await??;
    ensure!(writes > 10, "only {writes} writes ran alongside the list");
    let whole = store
        .list(
            "/page/",
            ListOptions {
                revision: Some(latest),
                ..Default::default()
            },
        )
        .await?;
    ensure!(whole.continue_token.is_none());
    ensure!(
        pages == whole.items,
        "paginated list differs from the whole list at {latest}"
    );
    ensure!(latest > at);
    Ok(())
}

async fn list_in_pages(
    store: &SharedStore,
    mut options: ListOptions,
) -> anyhow::Result<(Revision, Vec<capstan_control::store::KeyValue>)> {
    let mut items = Vec::new();
    let mut revision = None;
    loop {
        let page = store.list("/page/", options.clone()).await?;
        ensure!(
            page.items.len() <= options.limit,
            "page of {} over limit {}",
            page.items.len(),
            options.limit
        );
        ensure!(
            revision.is_none_or(|r| r == page.revision),
            "pages at different revisions"
        );
        revision = Some(page.revision);
        items.extend(page.items);
        match page.continue_token {
            Some(token) => options.continue_token = Some(token),
            None => break,
        }
        // Let the concurrent writer land changes between pages.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(
        items.windows(2).all(|w| w[0].key < w[1].key),
        "pages overlap or are out of order"
    );
    Ok((revision.unwrap_or_default(), items))
}

/// Compacted history is gone, and asking for it is a distinct error.
pub async fn compaction_errors(store: SharedStore) -> anyhow::Result<()> {
    let first = store.create("/compact/k", value("1")).await?;
    store
        .create("/compact/j", value("so a page of one continues"))
        .await?;
    let page = store
        .list(
            "/compact/",
            ListOptions {
                limit: 1,
                ..Default::default()
            },
        )
        .await?;
    let second = store
        .update("/compact/k", value("2"), first.mod_revision)
        .await?;
    store.create("/compact/l", value("3")).await?;
    let head = store.current_revision().await?;
    store.compact(second.mod_revision).await?;

    let old = ListOptions {
        revision: Some(first.mod_revision),
        ..Default::default()
    };
    match store.list("/compact/", old).await {
        Err(StoreError::Compacted { requested }) => ensure!(requested == first.mod_revision),
        other => bail!("list at a compacted revision: {other:?}"),
    }
    match store.watch("/compact/", first.mod_revision).await {
        Err(StoreError::Compacted { .. }) => {}
        Ok(mut watch) => match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Some(Err(StoreError::Compacted { .. }))) => {}
            other => bail!("watch from a compacted revision: {other:?}"),
        },
        Err(other) => bail!("watch from a compacted revision: {other}"),
    }
    let token = page
        .continue_token
        .context("a page of one of two keys has a continuation")?;
    let stale = ListOptions {
        continue_token: Some(token),
        limit: 1,
        ..Default::default()
    };
    ensure!(
        matches!(
            store.list("/compact/", stale).await,
            Err(StoreError::Compacted { .. })
        ),
        "a continue token from before the compaction still worked"
    );
    match store.compact(first.mod_revision).await {
        Err(StoreError::Compacted { .. }) => {}
        other => bail!("compacting an already compacted revision: {other:?}"),
    }
    let future = Revision(head.0 + 1000);
    match store.compact(future).await {
        Err(StoreError::FutureRevision { .. }) => {}
        other => bail!("compacting a future revision: {other:?}"),
    }
    let ahead = ListOptions {
        revision: Some(future),
        ..Default::default()
    };
    ensure!(
        matches!(
            store.list("/compact/", ahead).await,
            Err(StoreError::FutureRevision { .. })
        ),
        "listing at a future revision"
    );
    // What is current survives, and history from the compaction point on.
    ensure!(store.get("/compact/k").await?.map(|kv| kv.value) == Some(value("2")));
    let at = ListOptions {
        revision: Some(second.mod_revision),
        ..Default::default()
    };
    ensure!(store.list("/compact/", at).await?.items.len() == 2);
    let mut watch = store.watch("/compact/", second.mod_revision).await?;
    match next_event(&mut watch, Duration::from_secs(10)).await? {
        Event::Put { kv, .. } => ensure!(kv.key == "/compact/l"),
        other => bail!("{other:?}"),
    }
    Ok(())
}
