//! A StatefulSet on a real three-node cluster, driven with the real
//! kubectl: web-0, web-1 and web-2 are created in order, each only once
//! the one before is Ready (checked on every watch event, in the store's
//! order), with stable hostnames under the governing Service; scaling down
//! removes web-2 first; `kubectl set image`, `rollout history` and
//! `rollout undo` go through its ControllerRevisions.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{collections::BTreeMap, time::Duration};

use capstan_tests::{
    TestNet,
    artifacts::{TESTAPP_IMAGE, TESTAPP_V2_IMAGE},
    cluster::{TestCluster, serving},
};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, WatchEvent, WatchParams};

const WAIT: Duration = Duration::from_secs(90);

fn ordinal(pod: &Pod) -> usize {
    pod.metadata
        .name
        .as_deref()
        .and_then(|n| n.strip_prefix("web-"))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// The revision numbers `kubectl rollout history` lists.
async fn revisions(cluster: &TestCluster) -> anyhow::Result<Vec<String>> {
    let history = cluster
        .kubectl(&["rollout", "history", "statefulset/web"])
        .await?;
    Ok(history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Waits until `kubectl rollout status` says done and web-0 runs `image`.
async fn rolled_out_with(cluster: &TestCluster, image: &str) -> anyhow::Result<()> {
    let status = cluster
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=60s"])
        .await?;
    anyhow::ensure!(status.contains("roll out complete"), "{status}");
    let pods = cluster.pods("default");
    cluster
        .eventually(WAIT, &format!("web-0 serving with {image}"), || async {
            let pod = pods.get("web-0").await.ok()?;
            let running = pod.spec.as_ref()?.containers[0].image.as_deref() == Some(image);
            (running && serving(&pod)).then_some(())
        })
        .await
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn stateful_set_pods_start_in_order_and_scale_down_from_the_top() {
    TestCluster::run(TestNet::new(3).unwrap(), async |cluster| {
        let pods = cluster.pods("default");
        let from = pods.list(&ListParams::default()).await?.metadata;
        let from = from.resource_version.unwrap_or_default();
        let mut events = pods
            .watch(
                &WatchParams::default().labels("app=web").timeout(120),
                &from,
            )
            .await?
            .boxed();
        cluster
            .apply(&format!(
                r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector: {{app: web}}
  ports:
  - port: 8080
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: {TESTAPP_IMAGE}
"#
            ))
            .await?;

        // Every event, in the store's order: a pod appears only when all
        // below it are Ready.
        let mut seen: BTreeMap<usize, Pod> = BTreeMap::new();
        let mut created = Vec::new();
        let watched = tokio::time::timeout(WAIT, async {
            while let Some(event) = events.try_next().await? {
                match event {
                    WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                        let n = ordinal(&pod);
                        if !seen.contains_key(&n) {
                            for below in 0..n {
                                let ready_below = seen.get(&below).is_some_and(serving);
                                anyhow::ensure!(
                                    ready_below,
                                    "web-{n} was created while web-{below} was not Ready"
                                );
                            }
                            created.push(n);
                        }
                        seen.insert(n, pod);
                    }
                    WatchEvent::Deleted(pod) => {
                        seen.remove(&ordinal(&pod));
                    }
                    WatchEvent::Bookmark(_) | WatchEvent::Error(_) => {}
                }
                if seen.len() == 3 && seen.values().all(serving) {
                    return Ok(());
                }
            }
            anyhow::bail!("the watch ended before 3 pods were Ready")
        })
        .await;
        watched.map_err(|_| anyhow::anyhow!("3 ready pods within {WAIT:?}"))??;
        assert_eq!(created, [0, 1, 2], "created in order");
        for (n, pod) in &seen {
            let spec = pod.spec.as_ref().unwrap();
            assert_eq!(spec.hostname.as_deref(), Some(format!("web-{n}").as_str()));
            assert_eq!(spec.subdomain.as_deref(), Some("web"));
        }
        let status = cluster
            .kubectl(&["rollout", "status", "statefulset/web", "--timeout=60s"])
            .await?;
        assert!(status.contains("roll out complete"), "{status}");

        // Scaling down to one: web-2 goes first, then web-1.
        cluster
            .kubectl(&["scale", "statefulset/web", "--replicas=1"])
            .await?;
        let mut deleting_order = Vec::new();
        let scaled = tokio::time::timeout(WAIT, async {
            while let Some(event) = events.try_next().await? {
                if let WatchEvent::Modified(pod) | WatchEvent::Deleted(pod) = &event {
                    let n = ordinal(pod);
                    if pod.metadata.deletion_timestamp.is_some() && !deleting_order.contains(&n) {
                        deleting_order.push(n);
                    }
                }
                if let WatchEvent::Deleted(pod) = event {
                    seen.remove(&ordinal(&pod));
                    if seen.len() == 1 {
                        return Ok(());
                    }
                }
            }
            anyhow::bail!("the watch ended before the scale-down finished")
        })
        .await;
        scaled.map_err(|_| anyhow::anyhow!("a scale-down to 1 within {WAIT:?}"))??;
        assert_eq!(deleting_order, [2, 1], "removed from the top");
        assert!(seen.contains_key(&0));

        // A new image is revision 2; an undo brings revision 1's template
        // back as revision 3.
        cluster
            .kubectl(&[
                "set",
                "image",
                "statefulset/web",
                &format!("app={TESTAPP_V2_IMAGE}"),
            ])
            .await?;
        rolled_out_with(cluster, TESTAPP_V2_IMAGE).await?;
        assert_eq!(revisions(cluster).await?, ["1", "2"]);
        let listed = cluster
            .kubectl(&["get", "controllerrevisions", "--no-headers"])
            .await?;
        assert_eq!(
            listed.matches("statefulset.apps/web").count(),
            2,
            "{listed}"
        );
        let undone = cluster
            .kubectl(&["rollout", "undo", "statefulset/web"])
            .await?;
        assert!(
            undone.contains("statefulset.apps/web rolled back"),
            "{undone}"
        );
        rolled_out_with(cluster, TESTAPP_IMAGE).await?;
        assert_eq!(revisions(cluster).await?, ["2", "3"]);
        Ok(())
    });
}
