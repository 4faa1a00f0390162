//! What only the embedded store has to prove itself: acknowledged writes
//! survive a SIGKILL at any moment, a damaged file is refused by name, and
//! the file stays proportional to the live data under endless churn.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, mpsc},
    time::Duration,
};

use bytes::Bytes;
use capstan_control::store::{
    ListOptions, Store, StoreError,
    embedded::{EmbeddedConfig, EmbeddedStore},
};
use rand::Rng;

const WRITER: &str = env!("CARGO_BIN_EXE_store-crash-writer");

/// What the writer acknowledged before it was killed.
#[derive(Default)]
struct Acked {
    counters: BTreeMap<usize, u64>,
    keys: BTreeSet<String>,
}

/// Runs the writer for `run` then SIGKILLs it; returns its acknowledgements.
fn write_then_kill(dir: &Path, round: u32, run: Duration, checkpoint_ms: u64) -> Acked {
    let mut child = Command::new(WRITER)
        .arg(dir)
        .arg(round.to_string())
        .arg(checkpoint_ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(
        received.recv_timeout(Duration::from_secs(30)).unwrap(),
        "ready"
    );
    std::thread::sleep(run);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();

    let mut acked = Acked::default();
    for line in received.try_iter() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["counter", task, n] => {
                acked
                    .counters
                    .insert(task.parse().unwrap(), n.parse().unwrap());
            }
            ["key", key] => {
                acked.keys.insert((*key).to_owned());
            }
            _ => panic!("writer printed {line:?}"),
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut floor: BTreeMap<usize, u64> = BTreeMap::new();
    let mut total_acked = 0;
    for round in 0..24 {
        let run = Duration::from_millis(rng.random_range(20..400));
        let acked = write_then_kill(dir.path(), round, run, 30);
        total_acked += acked.keys.len();

        let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap();
        for (task, n) in &acked.counters {
            let kv = store
                .get(&format!("/crash/counter/{task}"))
                .await
                .unwrap()
                .unwrap();
            let stored: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
            // At most one write may have landed without its acknowledgement.
            assert!(
                stored == *n || stored == n + 1,
                "round {round}: counter {task} is {stored}, acked {n}"
            );
            floor.insert(*task, stored);
        }
        for (task, n) in &floor {
            let kv = store
                .get(&format!("/crash/counter/{task}"))
                .await
                .unwrap()
                .unwrap();
            let stored: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
            assert!(
                stored >= *n,
                "counter {task} went back from {n} to {stored}"
            );
        }
        let present: BTreeSet<String> = store
            .list(&format!("/crash/{round}/"), ListOptions::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        let lost: Vec<&String> = acked.keys.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged keys lost: {lost:?}"
        );
    }
    assert!(
        total_acked > 100,
        "the writer acknowledged only {total_acked} writes in all"
    );
}

/// Opens a store, writes some keys, closes it; returns the file.
async fn store_with_data(dir: &Path) -> std::path::PathBuf {
    let store = EmbeddedStore::open(dir, EmbeddedConfig::default()).unwrap();
    for i in 0..500 {
        store
            .create(&format!("/k/{i}"), Bytes::from(vec![b'v'; 300]))
            .await
            .unwrap();
    }
    drop(store);
    dir.join("store.redb")
}

fn assert_refused_by_name(dir: &Path, file: &Path) {
    match EmbeddedStore::open(dir, EmbeddedConfig::default()) {
        Err(err @ StoreError::Corrupt { .. }) => {
            assert!(
                err.to_string().contains(&file.display().to_string()),
                "{err}"
            )
        }
        Err(other) => panic!("expected a corruption error naming the file, got {other}"),
        Ok(_) => panic!("a damaged store file opened"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = store_with_data(dir.path()).await;
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_refused_by_name(dir.path(), &file);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = store_with_data(dir.path()).await;
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 4096] {
        *byte = !*byte;
    }
    std::fs::write(&file, bytes).unwrap();
    assert_refused_by_name(dir.path(), &file);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_a_store_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.redb");
    std::fs::write(&file, b"{\"this\": \"is not a store\"}".repeat(200)).unwrap();
    assert_refused_by_name(dir.path(), &file);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_write_ahead_log_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // No checkpoint for an hour: the log holds every acknowledged write.
    let acked = write_then_kill(dir.path(), 0, Duration::from_millis(300), 3_600_000);
    assert!(!acked.keys.is_empty());
    let wal = dir.path().join("store.wal");
    let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    // Inside the first frame's payload, which later frames follow.
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xa5; 8], 4096 + 40).unwrap();
    assert_refused_by_name(dir.path(), &wal);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_million_updates_to_a_thousand_keys_leave_a_file_the_size_of_the_live_data() {
    const KEYS: usize = 1000;
    const UPDATES: usize = 1_000_000;
    const WRITERS: usize = 64;
    const VALUE: usize = 256;
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig {
        max_history_revisions: 10_000,
        ..EmbeddedConfig::default()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path(), config).unwrap());
    for k in 0..KEYS {
        store
            .create(&format!("/churn/{k}"), Bytes::from(vec![b'0'; VALUE]))
            .await
            .unwrap();
    }
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                // Writer w owns keys w, w + WRITERS, ...: no conflicts.
                let keys: Vec<String> = (w..KEYS)
                    .step_by(WRITERS)
                    .map(|k| format!("/churn/{k}"))
                    .collect();
                let mut revisions = Vec::new();
                for key in &keys {
                    revisions.push(store.get(key).await.unwrap().unwrap().mod_revision);
                }
                for i in 0..UPDATES / WRITERS {
                    let slot = i % keys.len();
                    let value = Bytes::from(vec![b'a' + (i % 26) as u8; VALUE]);
                    revisions[slot] = store
                        .update(&keys[slot], value, revisions[slot])
                        .await
                        .unwrap()
                        .mod_revision;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let head = store.current_revision().await.unwrap();
    assert!(head.0 >= (KEYS + UPDATES) as u64);
    drop(store);

    let size = std::fs::metadata(dir.path().join("store.redb"))
        .unwrap()
        .len();
    let live = (KEYS * VALUE) as u64;
    let history = 1_000_000 * VALUE as u64;
    // The history written is ~1,000 times the live data; the file must be
    // bounded by the live data and the retained window, not the history.
    assert!(
        size < 64 << 20,
        "store file is {size} bytes for {live} bytes of live data"
    );
    assert!(
        size * 10 < history,
        "store file is {size} bytes: history was not reclaimed"
    );
}
