//! The store conformance suite (tests/src/store_conformance.rs) against both
//! backends: the embedded store in a temporary directory (no root needed),
//! and Debian's etcd 3.4 started by the harness. Then etcd as a
//! three-member cluster losing its leader mid-test.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{sync::Arc, time::Duration};

use capstan_control::store::{
    Event, Store, StoreError,
    embedded::{EmbeddedConfig, EmbeddedStore},
};
use capstan_tests::{etcd::EtcdCluster, store_conformance as suite};

/// One test per conformance case and backend.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap();
                    suite::$case(Arc::new(store)).await.unwrap();
                }
            )*
        }
        mod etcd {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                #[ignore = "end-to-end: needs root; run by cargo xtask test"]
                async fn $case() {
                    let cluster = EtcdCluster::start(1).await.unwrap();
                    let store = cluster.store().await.unwrap();
                    suite::$case(Arc::new(store)).await.unwrap();
                }
            )*
        }
    };
}

conformance!(
    crud_and_revisions,
    cas_conflicts,
    concurrent_increments_lose_nothing,
    watch_replays_then_follows,
    watch_burst_arrives_whole_and_in_order,
    paginated_list_is_consistent_under_writes,
    compaction_errors,
);

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
async fn etcd_cluster_keeps_taking_writes_when_its_leader_dies() {
    let mut cluster = EtcdCluster::start(3).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(cluster.store().await.unwrap());
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/ha/", start).await.unwrap();

    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failures = 0;
            for i in 0..600 {
                let key = format!("/ha/{i:04}");
                // A write may fail while the cluster elects a new leader;
                // retrying a create is safe: AlreadyExists means ours landed.
                loop {
                    match store.create(&key, bytes::Bytes::from("v")).await {
                        Ok(kv) => break acked.push(kv.mod_revision),
                        Err(StoreError::AlreadyExists(_)) => {
                            let kv = store.get(&key).await.unwrap().unwrap();
                            break acked.push(kv.mod_revision);
                        }
                        Err(_) if failures < 200 => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(err) => panic!("writes did not resume: {err}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = cluster.leader().await.unwrap();
    cluster.kill(leader).unwrap();
    let acked = writer.await.unwrap();

    assert_eq!(acked.len(), 600);
    let listed = store.list("/ha/", Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 600);
    // The watch rode through the failover: every write, once, in order.
    let mut seen = Vec::new();
    while seen.len() < acked.len() {
        match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
            Ok(Some(Ok(Event::Put { kv, .. }))) => seen.push(kv.mod_revision),
            other => panic!("watch after failover: {other:?}"),
        }
    }
    assert_eq!(seen, acked);
}
