//! A second real client, kube-rs, against control: list, watch (and resume
//! a watch from a resourceVersion), create, patch, delete; and a restart of
//! control that loses nothing while watches resume where they were.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{collections::BTreeMap, time::Duration};

use capstan_tests::{Instance, control::TestControl};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};

async fn client(control: &TestControl) -> Client {
    let kubeconfig = Kubeconfig::read_from(control.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("value".to_owned(), value.to_owned())])),
        ..Default::default()
    }
}

/// What a watch event says, for comparison: ("ADDED", name, value).
fn summary(event: WatchEvent<ConfigMap>) -> Option<(String, String, String)> {
    let (kind, object) = match event {
        WatchEvent::Added(o) => ("ADDED", o),
        WatchEvent::Modified(o) => ("MODIFIED", o),
        WatchEvent::Deleted(o) => ("DELETED", o),
        WatchEvent::Bookmark(_) => return None,
        WatchEvent::Error(err) => panic!("watch error: {err:?}"),
    };
    let value = object
        .data
        .and_then(|d| d.get("value").cloned())
        .unwrap_or_default();
    Some((
        kind.to_owned(),
        object.metadata.name.unwrap_or_default(),
        value,
    ))
}

fn event(kind: &str, name: &str, value: &str) -> (String, String, String) {
    (kind.to_owned(), name.to_owned(), value.to_owned())
}

/// The next `count` non-bookmark events of `stream`.
async fn next_events(
    stream: &mut (impl futures_util::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin),
    count: usize,
) -> Vec<(String, String, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend(summary(next));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
async fn kube_rs_lists_watches_creates_patches_and_deletes() {
    let instance = Instance::new();
    let control = TestControl::start(&instance).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client(&control).await, "default");

    let a = maps
        .create(&PostParams::default(), &config_map("a", "1"))
        .await
        .unwrap();
    assert!(a.metadata.uid.is_some() && a.metadata.resource_version.is_some());
    let listed = maps.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect::<Vec<_>>(),
        ["a"]
    );
    let from = listed.metadata.resource_version.clone().unwrap();

    let mut watch = maps
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    maps.create(&PostParams::default(), &config_map("b", "1"))
        .await
        .unwrap();
    let patch = serde_json::json!({ "data": { "value": "2" } });
    let patched = maps
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["value"], "2");
    maps.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        next_events(&mut watch, 3).await,
        [
            event("ADDED", "b", "1"),
            event("MODIFIED", "a", "2"),
            event("DELETED", "b", "1")
        ]
    );
    drop(watch);

    // Resume: a watch from an earlier version replays what followed it.
    let strategic =
        serde_json::json!({ "metadata": { "labels": { "step": "3" } }, "data": { "value": "3" } });
    let three = maps
        .patch("a", &PatchParams::default(), &Patch::Strategic(&strategic))
        .await
        .unwrap();
    let resume_from = three.metadata.resource_version.clone().unwrap();
    maps.create(&PostParams::default(), &config_map("c", "1"))
        .await
        .unwrap();
    let mut resumed = maps
        .watch(&WatchParams::default(), &resume_from)
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        next_events(&mut resumed, 1).await,
        [event("ADDED", "c", "1")]
    );

    let err = maps.get("nope").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref status) if status.code == 404),
        "{err:?}"
    );
    let err = maps
        .create(&PostParams::default(), &config_map("c", "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref status) if status.code == 409 && status.reason == "AlreadyExists"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
async fn restarting_control_loses_nothing_and_watches_resume() {
    let instance = Instance::new();
    let mut control = TestControl::start(&instance).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client(&control).await, "default");
    for i in 0..20 {
        maps.create(
            &PostParams::default(),
            &config_map(&format!("m{i}"), &i.to_string()),
        )
        .await
        .unwrap();
    }
    let before = maps.list(&ListParams::default()).await.unwrap();
    let mut watch = maps
        .watch(
            &WatchParams::default(),
            before.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    maps.create(&PostParams::default(), &config_map("seen", "1"))
        .await
        .unwrap();
    let seen = next_events(&mut watch, 1).await;
    assert_eq!(seen, [event("ADDED", "seen", "1")]);
    let last_seen = maps
        .get("seen")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    control.restart().await.unwrap();

    // The watch's connection went with the old process; it ends.
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap();
    assert!(
        !matches!(ended, Some(Ok(WatchEvent::Added(_)))),
        "{ended:?}"
    );
    let maps: Api<ConfigMap> = Api::namespaced(client(&control).await, "default");
    let after = maps.list(&ListParams::default()).await.unwrap();
    let names = |list: &kube::api::ObjectList<ConfigMap>| {
        list.items
            .iter()
            .map(|m| {
                (
                    m.metadata.name.clone(),
                    m.metadata.uid.clone(),
                    m.metadata.resource_version.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut expected = names(&before);
    expected.push((
        Some("seen".into()),
        maps.get("seen").await.unwrap().metadata.uid,
        Some(last_seen.clone()),
    ));
    expected.sort();
    let mut found = names(&after);
    found.sort();
    assert_eq!(found, expected, "objects changed across the restart");

    // Resuming from the last version seen gets what happened since, once.
    maps.create(&PostParams::default(), &config_map("after", "1"))
        .await
        .unwrap();
    let mut resumed = maps
        .watch(&WatchParams::default(), &last_seen)
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        next_events(&mut resumed, 1).await,
        [event("ADDED", "after", "1")]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), resumed.next())
            .await
            .is_err(),
        "a second event arrived"
    );
}
