//! Writes to an embedded store in a directory and prints each write once it
//! is acknowledged, until killed. tests/tests/store_embedded.rs kills it at
//! random moments and checks that every acknowledged write survived.
//!
//! Usage: store-crash-writer <dir> <round> [checkpoint interval in ms, default 30]
//! Prints `ready`, then lines `counter <task> <n>` (the task's counter
//! reached n) and `key <key>` (the key was created).

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use capstan_control::store::{
    Store, StoreError,
    embedded::{EmbeddedConfig, EmbeddedStore},
};

const TASKS: usize = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: store-crash-writer <dir> <round>")?,
    );
    let round: u32 = args.next().context("round")?.parse()?;
    // By default checkpoint often, so kills land before, during and after
    // checkpoints.
    let checkpoint_ms = args.next().map_or(Ok(30), |ms| ms.parse())?;
    let config = EmbeddedConfig {
        checkpoint_interval: std::time::Duration::from_millis(checkpoint_ms),
        ..EmbeddedConfig::default()
    };
    let store = Arc::new(EmbeddedStore::open(&dir, config)?);
    println!("ready");
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { write(&store, task, round).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn write(store: &EmbeddedStore, task: usize, round: u32) -> anyhow::Result<()> {
    let counter = format!("/crash/counter/{task}");
    let mut current = match store.get(&counter).await? {
        Some(kv) => kv,
        None => store.create(&counter, Bytes::from("0")).await?,
    };
    for n in 0_u64.. {
        let next: u64 = std::str::from_utf8(&current.value)?.parse::<u64>()? + 1;
        match store
            .update(
                &counter,
                Bytes::from(next.to_string()),
                current.mod_revision,
            )
            .await
        {
            Ok(kv) => {
                println!("counter {task} {next}");
                current = kv;
            }
            Err(StoreError::Conflict { .. }) => {
                anyhow::bail!("{counter} changed under its only writer")
            }
            Err(err) => return Err(err.into()),
        }
        let key = format!("/crash/{round}/{task}/{n}");
        store.create(&key, Bytes::from(vec![b'x'; 200])).await?;
        println!("key {key}");
    }
    Ok(())
}
