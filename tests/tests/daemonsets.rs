//! A DaemonSet and a namespace's deletion on a real cluster of four hosts,
//! three with agents at first: the DaemonSet puts one pod on each node,
//! and the fourth host's node, once its agent joins, gets its own; then
//! `kubectl delete namespace` empties the namespace (the agents stop its
//! pods) and removes it.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::{collections::BTreeSet, time::Duration};

use capstan_tests::{
    TestNet,
    artifacts::TESTAPP_IMAGE,
    cluster::{ClusterSettings, TestCluster, serving},
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api,
    api::{ListParams, ObjectList},
};

const WAIT: Duration = Duration::from_secs(90);

/// The nodes of the ready pods, if every pod is ready and on its own node.
fn one_ready_per_node(pods: &ObjectList<Pod>) -> Option<BTreeSet<String>> {
    let nodes: BTreeSet<String> = pods
        .items
        .iter()
        .filter(|p| serving(p))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    (nodes.len() == pods.items.len()).then_some(nodes)
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn a_daemon_set_covers_every_node_and_a_deleted_namespace_is_emptied() {
    let settings = ClusterSettings {
        agents_at_start: Some(3),
        ..Default::default()
    };
    TestCluster::run_with(TestNet::new(4).unwrap(), settings, async |cluster| {
        cluster
            .apply(&format!(
                r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: probe
  namespace: shop
spec:
  selector:
    matchLabels: {{app: probe}}
  template:
    metadata:
      labels: {{app: probe}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: {TESTAPP_IMAGE}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data: {{colour: blue}}
"#
            ))
            .await?;
        let pods = cluster.pods("shop");
        let hosts: Vec<String> = (1..=4)
            .map(|n| cluster.net.host(n).name().to_owned())
            .collect();
        let list = ListParams::default().labels("app=probe");
        let covered = cluster
            .eventually(WAIT, "a ready probe pod on each of 3 nodes", || async {
                let listed = pods.list(&list).await.ok()?;
                one_ready_per_node(&listed).filter(|nodes| nodes.len() == 3)
            })
            .await?;
        assert_eq!(covered, hosts[..3].iter().cloned().collect());
        let shown = cluster
            .kubectl(&[
                "get",
                "daemonset",
                "probe",
                "-n",
                "shop",
                "-o",
                "jsonpath={.status.desiredNumberScheduled} {.status.numberReady}",
            ])
            .await?;
        assert_eq!(shown, "3 3");

        cluster.join_node(4).await?;
        let covered = cluster
            .eventually(WAIT, "a ready probe pod on the joined node too", || async {
                let listed = pods.list(&list).await.ok()?;
                one_ready_per_node(&listed).filter(|nodes| nodes.len() == 4)
            })
            .await?;
        assert_eq!(covered, hosts.iter().cloned().collect());
        cluster
            .kubectl(&[
                "rollout",
                "status",
                "daemonset/probe",
                "-n",
                "shop",
                "--timeout=60s",
            ])
            .await?;
        let history = cluster
            .kubectl(&["rollout", "history", "daemonset/probe", "-n", "shop"])
            .await?;
        let revisions: Vec<&str> = history
            .lines()
            .skip_while(|l| !l.starts_with("REVISION"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(revisions, ["1"], "{history}");

        // kubectl waits until the namespace is gone (and with it the
        // DaemonSet's ControllerRevision).
        cluster
            .kubectl(&["delete", "namespace", "shop", "--timeout=90s"])
            .await?;
        let namespaces: Api<Namespace> = Api::all(cluster.client());
        assert!(namespaces.get_opt("shop").await?.is_none(), "removed");
        let everywhere: Api<Pod> = Api::all(cluster.client());
        let left = everywhere
            .list(&ListParams::default().labels("app=probe"))
            .await?;
        assert!(
            left.items.is_empty(),
            "its pods are gone: {:?}",
            left.items.len()
        );
        Ok(())
    });
}
