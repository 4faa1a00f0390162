//! Deployments on a real three-node cluster, driven with the real kubectl:
//! `kubectl set image` rolls within maxSurge and maxUnavailable while the
//! test samples the pods, `kubectl rollout history | undo [--to-revision]
//! | status | pause | resume | restart` work,
//! and a rollout to an image that does not exist stalls with
//! ProgressDeadlineExceeded while the old pods keep serving; deleting the
//! Deployment cascades in the background to its ReplicaSets and pods.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::time::{Duration, Instant};

use capstan_tests::{
    TestNet,
    artifacts::{TESTAPP_IMAGE, TESTAPP_V2_IMAGE},
    cluster::{TestCluster, serving},
};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Pod,
};
use kube::{Api, api::ListParams};

const WAIT: Duration = Duration::from_secs(120);

fn image(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// (pods not being deleted, of which ready, of which on `image`).
async fn census(pods: &Api<Pod>, on: &str) -> anyhow::Result<(usize, usize, usize)> {
    let listed = pods.list(&ListParams::default().labels("app=web")).await?;
    let live: Vec<&Pod> = listed
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let ready_on = live.iter().filter(|p| serving(p) && image(p) == on).count();
    Ok((
        live.len(),
        live.iter().filter(|p| serving(p)).count(),
        ready_on,
    ))
}

fn progressing_reason(deployment: &Deployment) -> Option<String> {
    deployment
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Progressing")
        .and_then(|c| c.reason.clone())
}

#[test]
#[ignore = "end-to-end: needs root; run by cargo xtask test"]
fn deployments_roll_forward_and_back_within_their_bounds_on_real_agents() {
    TestCluster::run(TestNet::new(3).unwrap(), async |cluster| {
        cluster
            .apply(&format!(
                r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 6
  progressDeadlineSeconds: 20
  selector:
    matchLabels: {{app: web}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: {TESTAPP_IMAGE}
"#
            ))
            .await?;
        let rolled = cluster
            .kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
            .await?;
        anyhow::ensure!(rolled.contains("successfully rolled out"), "{rolled}");
        let pods = cluster.pods("default");
        anyhow::ensure!(
            census(&pods, TESTAPP_IMAGE).await?.2 == 6,
            "six v1 pods ready"
        );

        // Roll to v2; sample all along that at least 5 pods are ready and
        // no more than 7 exist.
        cluster
            .kubectl(&[
                "set",
                "image",
                "deployment/web",
                &format!("app={TESTAPP_V2_IMAGE}"),
            ])
            .await?;
        let deadline = Instant::now() + WAIT;
        let (mut fewest_ready, mut most_pods) = (usize::MAX, 0);
        loop {
            let (live, ready, on_v2) = census(&pods, TESTAPP_V2_IMAGE).await?;
            fewest_ready = fewest_ready.min(ready);
            most_pods = most_pods.max(live);
            anyhow::ensure!(ready >= 5, "only {ready} pods ready during the rollout");
            anyhow::ensure!(live <= 7, "{live} pods during the rollout");
            if on_v2 == 6 && live == 6 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the rollout to v2 did not finish"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("during the rollout: at least {fewest_ready} ready, at most {most_pods} pods");

        let history = cluster
            .kubectl(&["rollout", "history", "deployment/web"])
            .await?;
        anyhow::ensure!(
            history
                .lines()
                .filter(|l| l.trim_start().starts_with(['1', '2']))
                .count()
                == 2,
            "two revisions in the history:\n{history}"
        );
        cluster
            .kubectl(&["rollout", "undo", "deployment/web"])
            .await?;
        cluster
            .kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
            .await?;
        cluster
            .eventually(WAIT, "six v1 pods after the undo", || async {
                let (live, _, on_v1) = census(&pods, TESTAPP_IMAGE).await.ok()?;
                (live == 6 && on_v1 == 6).then_some(())
            })
            .await?;
        let history = cluster
            .kubectl(&["rollout", "history", "deployment/web"])
            .await?;
        anyhow::ensure!(history.contains('3'), "the undo is revision 3:\n{history}");

        // Paused, a template change waits; resumed, it rolls out.
        cluster
            .kubectl(&["rollout", "pause", "deployment/web"])
            .await?;
        let to_v2 = format!("app={TESTAPP_V2_IMAGE}");
        cluster
            .kubectl(&["set", "image", "deployment/web", &to_v2])
            .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (_, _, on_v2) = census(&pods, TESTAPP_V2_IMAGE).await?;
        anyhow::ensure!(on_v2 == 0, "a paused Deployment rolled: {on_v2} v2 pods");
        cluster
            .kubectl(&["rollout", "resume", "deployment/web"])
            .await?;
        cluster
            .kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
            .await?;
        let before: Vec<String> = pods
            .list(&ListParams::default().labels("app=web"))
            .await?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();

        // restart replaces every pod on the same image; undo --to-revision
        // goes back to a chosen revision (3: v1).
        cluster
            .kubectl(&["rollout", "restart", "deployment/web"])
            .await?;
        cluster
            .eventually(WAIT, "six new v2 pods after the restart", || async {
                let listed = pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .ok()?;
                let fresh = listed
                    .items
                    .iter()
                    .all(|p| p.metadata.name.as_ref().is_none_or(|n| !before.contains(n)));
                let (live, _, on_v2) = census(&pods, TESTAPP_V2_IMAGE).await.ok()?;
                (fresh && live == 6 && on_v2 == 6).then_some(())
            })
            .await?;
        cluster
            .kubectl(&["rollout", "undo", "deployment/web", "--to-revision=3"])
            .await?;
        cluster
            .eventually(WAIT, "six v1 pods after undo --to-revision=3", || async {
                let (live, _, on_v1) = census(&pods, TESTAPP_IMAGE).await.ok()?;
                (live == 6 && on_v1 == 6).then_some(())
            })
            .await?;

        // An image nobody has: the rollout stalls, the old pods serve on.
        cluster
            .kubectl(&[
                "set",
                "image",
                "deployment/web",
                "app=capstan.invalid/missing:v1",
            ])
            .await?;
        let deployments: Api<Deployment> = Api::namespaced(cluster.client(), "default");
        cluster
            .eventually(WAIT, "ProgressDeadlineExceeded", || async {
                let d = deployments.get("web").await.ok()?;
                (progressing_reason(&d).as_deref() == Some("ProgressDeadlineExceeded"))
                    .then_some(())
            })
            .await?;
        let status = cluster
            .control
            .kubectl(&which_kubectl()?)
            .args(["rollout", "status", "deployment/web", "--timeout=20s"])
            .output()
            .await?;
        let said = String::from_utf8_lossy(&status.stderr);
        anyhow::ensure!(
            !status.status.success() && said.contains("exceeded its progress deadline"),
            "rollout status: {said}"
        );
        let (_, ready, on_v1) = census(&pods, TESTAPP_IMAGE).await?;
        anyhow::ensure!(
            ready >= 5 && on_v1 >= 5,
            "old pods keep serving: {on_v1} v1 ready"
        );

        // A background cascade: the Deployment goes at once, then the
        // garbage collector takes its ReplicaSets and their pods.
        cluster
            .kubectl(&["delete", "deployment", "web", "--cascade=background"])
            .await?;
        let sets: Api<ReplicaSet> = Api::namespaced(cluster.client(), "default");
        cluster
            .eventually(WAIT, "the ReplicaSets and pods collected", || async {
                let by_app = ListParams::default().labels("app=web");
                let sets_left = sets.list(&by_app).await.ok()?.items.len();
                let pods_left = pods.list(&by_app).await.ok()?.items.len();
                (sets_left == 0 && pods_left == 0).then_some(())
            })
            .await?;
        Ok(())
    });
}

fn which_kubectl() -> anyhow::Result<std::path::PathBuf> {
    capstan_tests::control::kubectl_binaries()?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no kubectl"))
}
