//! The DaemonSet controller's writes, through the API router: pods made
//! from the template and bound to their node, deleted (gracefully, or at
//! once), adopted or released; the status; and the events that tell of
//! them. Each write reports what will not come back through the
//! informers, so the controller can lower what it expects.

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Pod as PodObject, PodSpec},
    },
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta},
};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{
    super::{ownership::controller_reference, pod_view::Pod},
    plan::{Counts, REVISION_LABEL},
};
use crate::{
    events::{EventRecorder, Involved},
    local_api::{LocalApi, LocalApiError, ObjectRef, PatchType},
};

/// Who the controller's events say they come from.
const COMPONENT: &str = "daemonset-controller";

#[derive(Debug, Clone)]
pub struct Writer {
    api: LocalApi,
    events: EventRecorder,
}

/// How a batch of writes went: how many of them will never be observed
/// (they failed, were not tried, or found their pod gone), and the first
/// error.
#[derive(Debug, Default)]
pub struct Outcome {
    pub unobserved: usize,
    pub error: Option<LocalApiError>,
}

fn join_error(err: &tokio::task::JoinError) -> LocalApiError {
    LocalApiError {
        code: 0,
        message: err.to_string(),
    }
}

impl Writer {
    /// A writer through `api`; its events are written by a task in
    /// `tasks`.
    pub fn new(tasks: &mut JoinSet<()>, api: LocalApi) -> Self {
        Self {
            events: EventRecorder::new(tasks, api.clone(), COMPONENT),
            api,
        }
    }

    /// Creates `pod` on each of `nodes`, in batches of 1, 2, 4, ...
    /// (Kubernetes' slow start: a failing template costs one error, not
    /// hundreds); stops after a batch with a failure.
    pub async fn create_pods(&self, ds: &DaemonSet, pod: &PodObject, nodes: &[&str]) -> Outcome {
        let mut done = 0;
        let mut batch = 1;
        while done < nodes.len() {
            let chunk = &nodes[done..(done + batch).min(nodes.len())];
            let mut calls = JoinSet::new();
            for node in chunk {
                let (api, mut pod) = (self.api.clone(), pod.clone());
                pod.spec.get_or_insert_default().node_name = Some((*node).to_owned());
                calls.spawn(async move { api.create(&pod).await });
            }
            done += chunk.len();
            let mut failure = None;
            let mut failed = 0;
            while let Some(result) = calls.join_next().await {
                match result.map_err(|err| join_error(&err)) {
                    Ok(Ok(pod)) => {
                        let name = pod.metadata.name.unwrap_or_default();
                        self.record(
                            ds,
                            "Normal",
                            "SuccessfulCreate",
                            &format!("Created pod: {name}"),
                        );
                    }
                    Ok(Err(error)) | Err(error) => {
                        let message = format!("Error creating: {}", error.message);
                        self.record(ds, "Warning", "FailedCreate", &message);
                        failed += 1;
                        failure = Some(error);
                    }
                }
            }
            if failure.is_some() {
                return Outcome {
                    unobserved: failed + nodes.len() - done,
                    error: failure,
                };
            }
            batch *= 2;
        }
        Outcome::default()
    }

    /// Deletes each pod, gracefully or (true) at once. Pods already being
    /// deleted are not counted among the unobserved: their deletion was
    /// seen before.
    pub async fn delete_pods(&self, ds: &DaemonSet, pods: &[(&Pod, bool)]) -> Outcome {
        let mut calls = JoinSet::new();
        for (pod, now) in pods {
            let api = self.api.clone();
            let at = pod.object_ref();
            let options = DeleteOptions {
                grace_period_seconds: now.then_some(0),
                ..DeleteOptions::default()
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let counted = pod.metadata.deletion_timestamp.is_none();
            calls.spawn(async move {
                let result = api.delete(&at, &options).await;
                (name, counted, result)
            });
        }
        let mut outcome = Outcome::default();
        while let Some(joined) = calls.join_next().await {
            let (name, counted, result) = match joined {
                Ok(done) => done,
                Err(err) => {
                    outcome.error = Some(join_error(&err));
                    continue;
                }
            };
            match result {
                Ok(Some(())) => self.record(
                    ds,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                ),
                Ok(None) => outcome.unobserved += usize::from(counted),
                Err(error) => {
                    outcome.unobserved += usize::from(counted);
                    let message = format!("Error deleting: {}", error.message);
                    self.record(ds, "Warning", "FailedDelete", &message);
                    outcome.error = Some(error);
                }
            }
        }
        outcome
    }

    /// Writes the counters and `generation` as observed, when they changed.
    pub async fn write_status(
        &self,
        ds: &DaemonSet,
        counts: Counts,
        generation: Option<i64>,
    ) -> Result<(), LocalApiError> {
        let status = ds.status.clone().unwrap_or_default();
        let current = (
            Counts {
                desired: status.desired_number_scheduled,
                current: status.current_number_scheduled,
                ready: status.number_ready,
                available: status.number_available.unwrap_or(0),
                misscheduled: status.number_misscheduled,
                updated: status.updated_number_scheduled.unwrap_or(0),
            },
            status.number_unavailable.unwrap_or(0),
            status.observed_generation,
        );
        let unavailable = counts.desired - counts.available;
        if (counts, unavailable, generation) == current {
            return Ok(());
        }
        self.patch_status(
            ds,
            json!({
                "desiredNumberScheduled": counts.desired,
                "currentNumberScheduled": counts.current,
                "numberReady": counts.ready,
                "numberAvailable": counts.available,
                "numberUnavailable": unavailable,
                "numberMisscheduled": counts.misscheduled,
                "updatedNumberScheduled": counts.updated,
                "observedGeneration": generation,
            }),
        )
        .await
    }

    pub fn api(&self) -> &LocalApi {
        &self.api
    }

    /// Counts a revision name found taken, so the next differs.
    pub async fn write_collision(&self, ds: &DaemonSet, count: i32) -> Result<(), LocalApiError> {
        self.patch_status(ds, json!({ "collisionCount": count }))
            .await
    }

    async fn patch_status(&self, ds: &DaemonSet, status: Value) -> Result<(), LocalApiError> {
        let at = ObjectRef::<DaemonSet>::of(&ds.metadata);
        let patch = json!({ "status": status });
        self.api
            .patch(&at, Some("status"), PatchType::Merge, &patch)
            .await
            .map(drop)
    }

    /// Queues an event about `ds`.
    pub fn record(&self, ds: &DaemonSet, kind: &str, reason: &str, message: &str) {
        let about = Involved::of("apps/v1", "DaemonSet", &ds.metadata);
        self.events.record(about, kind, reason, message);
    }
}

/// A new pod of `ds` (its node still to be set): the template with the
/// daemon tolerations (`spec`), named `<ds>-<random>`, labelled with the
/// template's hash, owned by the set.
pub fn new_pod(ds: &DaemonSet, spec: &PodSpec, hash: &str) -> PodObject {
    let meta = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.clone())
        .unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.to_owned(), hash.to_owned());
    PodObject {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                ds.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![controller_reference(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec.clone()),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_pods_carry_the_template_its_hash_and_a_controller_reference() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": { "name": "agent", "namespace": "ns", "uid": "u-1" },
            "spec": {
                "selector": { "matchLabels": { "app": "agent" } },
                "template": {
                    "metadata": { "labels": { "app": "agent" } },
                    "spec": { "containers": [{ "name": "c", "image": "i" }] },
                },
            },
        }))
        .unwrap();
        let mut spec = ds.spec.clone().unwrap().template.spec.unwrap();
        super::super::placement::add_daemon_tolerations(&mut spec);
        let pod = serde_json::to_value(new_pod(&ds, &spec, "h1")).unwrap();
        assert_eq!(pod["metadata"]["generateName"], "agent-");
        assert_eq!(pod["metadata"]["labels"]["app"], "agent");
        assert_eq!(pod["metadata"]["labels"][REVISION_LABEL], "h1");
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                &owner["kind"],
                &owner["uid"],
                &owner["controller"],
                &owner["blockOwnerDeletion"]
            ),
            (
                &json!("DaemonSet"),
                &json!("u-1"),
                &json!(true),
                &json!(true)
            )
        );
        assert_eq!(pod["spec"]["containers"][0]["image"], "i");
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 6);
    }
}
