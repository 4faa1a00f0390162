//! What one pass over a Deployment should write, worked out from the
//! Deployment and the ReplicaSets it controls alone (no API, no clock):
//! the set for the current template (created, or renumbered on a
//! rollback), the scaling steps of RollingUpdate or Recreate, and the old
//! sets beyond revisionHistoryLimit to delete.

use std::{collections::BTreeMap, collections::HashMap, sync::Arc};

use k8s_openapi::{
    api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde_json::Value;

use crate::controllers::{
    ownership::controller_reference,
    pod_template::{scaled, template_hash},
};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotations of the Deployment that are not copied to its sets.
const NOT_COPIED: [&str; 4] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
];

/// One write of a pass, in the order they are to be made.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The set for the current template, at the replicas it starts with.
    Create(Box<ReplicaSet>),
    /// An old template is back (a rollback): its set becomes the newest
    /// revision.
    Renumber {
        set: Arc<ReplicaSet>,
        revision: i64,
    },
    Scale {
        set: Arc<ReplicaSet>,
        to: i32,
    },
    Delete(Arc<ReplicaSet>),
}

/// A pass's writes, and the set its status counts as updated.
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub new_set: Option<Arc<ReplicaSet>>,
}

pub fn replicas(set: &ReplicaSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn revision(set: &ReplicaSet) -> i64 {
    set.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// (replicas, ready, available) as the set's status counts them.
pub fn status_of(set: &ReplicaSet) -> (i32, i32, i32) {
    let status = set.status.clone().unwrap_or_default();
    (
        status.replicas,
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    )
}

/// A set's template as its Deployment's would be: without the hash label.
fn template_without_hash(set: &ReplicaSet) -> Value {
    let mut template = serde_json::to_value(
        set.spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        labels.remove(TEMPLATE_HASH);
    }
    template
}

/// (maxSurge, maxUnavailable) of a rolling Deployment; never both zero.
pub fn surge_and_unavailable(deployment: &Deployment) -> (i32, i32) {
    let spec = deployment.spec.clone().unwrap_or_default();
    let total = spec.replicas.unwrap_or(1);
    let rolling = spec.strategy.and_then(|s| s.rolling_update);
    let surge = scaled(
        rolling.as_ref().and_then(|r| r.max_surge.as_ref()),
        total,
        true,
    );
    let unavailable = scaled(
        rolling.as_ref().and_then(|r| r.max_unavailable.as_ref()),
        total,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable.min(total))
    }
}

/// The pass over `deployment`, whose sets (oldest first) are `sets`.
pub fn plan(deployment: &Deployment, sets: &[Arc<ReplicaSet>]) -> Plan {
    let spec = deployment.spec.clone().unwrap_or_default();
    let template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
    let max_revision = sets.iter().map(|s| revision(s)).max().unwrap_or(0);
    let paused = spec.paused.unwrap_or(false);
    let mut planner = Planner {
        deployment,
        steps: Vec::new(),
        planned: HashMap::new(),
    };
    let new_set = match sets.iter().find(|s| template_without_hash(s) == template) {
        Some(set) => {
            if revision(set) < max_revision && !paused {
                planner.steps.push(Step::Renumber {
                    set: Arc::clone(set),
                    revision: max_revision + 1,
                });
            }
            Some(Arc::clone(set))
        }
        None if paused => None,
        None => {
            let set = Arc::new(new_set(deployment, &template, max_revision + 1));
            planner
                .steps
                .push(Step::Create(Box::new(ReplicaSet::clone(&set))));
            Some(set)
        }
    };
    let new_name = new_set.as_ref().and_then(|s| s.metadata.name.clone());
    let old_sets: Vec<Arc<ReplicaSet>> = sets
        .iter()
        .filter(|s| s.metadata.name != new_name)
        .cloned()
        .collect();
    let desired = spec.replicas.unwrap_or(1);
    if !paused && let Some(new_set) = &new_set {
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        if recreate {
            planner.recreate(new_set, &old_sets, desired);
        } else {
            planner.roll(new_set, &old_sets, desired);
        }
    }
    planner.clean_up(&old_sets);
    Plan {
        steps: fold_into_create(planner.steps),
        new_set,
    }
}

/// A set about to be created starts at the replicas its first scaling
/// step gives it, as Kubernetes creates it: one write, not two.
fn fold_into_create(mut steps: Vec<Step>) -> Vec<Step> {
    let Some(Step::Create(created)) = steps.first() else {
        return steps;
    };
    let name = created.metadata.name.clone();
    let Some(at) = steps
        .iter()
        .position(|s| matches!(s, Step::Scale { set, .. } if set.metadata.name == name))
    else {
        return steps;
    };
    let Step::Scale { to, .. } = steps.remove(at) else {
        return steps;
    };
    if let Some(Step::Create(created)) = steps.first_mut()
        && let Some(spec) = created.spec.as_mut()
    {
        spec.replicas = Some(to);
    }
    steps
}

/// The set for the Deployment's current `template`, at zero replicas.
fn new_set(deployment: &Deployment, template: &Value, revision: i64) -> ReplicaSet {
    let hash = template_hash(template);
    let spec = deployment.spec.clone().unwrap_or_default();
    let mut pod_template = spec.template;
    let labels = pod_template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default();
    labels.insert(TEMPLATE_HASH.to_owned(), hash.clone());
    let labels = labels.clone();
    let mut selector = spec.selector;
    selector
        .match_labels
        .get_or_insert_default()
        .insert(TEMPLATE_HASH.to_owned(), hash.clone());
    let (surge, _) = surge_and_unavailable(deployment);
    let desired = spec.replicas.unwrap_or(1);
    let mut annotations: BTreeMap<String, String> = deployment
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .collect();
    annotations.insert(REVISION.to_owned(), revision.to_string());
    annotations.insert(DESIRED_REPLICAS.to_owned(), desired.to_string());
    annotations.insert(MAX_REPLICAS.to_owned(), (desired + surge).to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{hash}",
                deployment.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: deployment.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![controller_reference(deployment)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: Some(spec.min_ready_seconds.unwrap_or(0)),
            selector,
            template: Some(pod_template),
        }),
        status: None,
    }
}

/// The steps of one pass as they are decided, and the replicas each set
/// will have once they are written.
struct Planner<'a> {
    deployment: &'a Deployment,
    steps: Vec<Step>,
    planned: HashMap<String, i32>,
}

impl Planner<'_> {
    fn scale(&mut self, set: &Arc<ReplicaSet>, to: i32) {
        if replicas(set) == to {
            return;
        }
        self.planned
            .insert(set.metadata.name.clone().unwrap_or_default(), to);
        self.steps.push(Step::Scale {
            set: Arc::clone(set),
            to,
        });
    }

    /// A set's replicas once the steps so far are written.
    fn current_replicas(&self, set: &ReplicaSet) -> i32 {
        set.metadata
            .name
            .as_ref()
            .and_then(|name| self.planned.get(name).copied())
            .unwrap_or_else(|| replicas(set))
    }

    /// RollingUpdate, as Kubernetes' rolling.go does it: the new set grows
    /// while the total stays within desired + maxSurge; old sets shrink
    /// while available pods stay at or above desired - maxUnavailable.
    fn roll(&mut self, new_set: &Arc<ReplicaSet>, old_sets: &[Arc<ReplicaSet>], desired: i32) {
        let (surge, unavailable) = surge_and_unavailable(self.deployment);
        let old_total: i32 = old_sets.iter().map(|s| replicas(s)).sum();
        // A set scaled down may not have deleted its pods yet: the surge
        // counts the pods still there, so the total never goes over.
        let old_pods: i32 = old_sets
            .iter()
            .map(|s| replicas(s).max(s.status.as_ref().map_or(0, |st| st.replicas)))
            .sum();
        let new_replicas = replicas(new_set);
        if new_replicas > desired {
            self.scale(new_set, desired);
        } else if new_replicas < desired {
            let room = (desired + surge - new_replicas - old_pods).max(0);
            let grow = room.min(desired - new_replicas);
            if grow > 0 {
                // Old sets shrink on a later pass, against fresh counts.
                self.scale(new_set, new_replicas + grow);
                return;
            }
        }
        if old_total == 0 {
            return;
        }
        let new_replicas = self.current_replicas(new_set);
        let min_available = desired - unavailable;
        let (_, _, new_available) = status_of(new_set);
        let new_unavailable = (new_replicas - new_available).max(0);
        let mut can_remove = new_replicas + old_total - min_available - new_unavailable;
        if can_remove <= 0 {
            return;
        }
        // Unhealthy old replicas go first: removing them costs no
        // availability.
        for set in old_sets {
            let (_, _, available) = status_of(set);
            let unhealthy = (replicas(set) - available).max(0).min(can_remove);
            if unhealthy > 0 {
                self.scale(set, replicas(set) - unhealthy);
                can_remove -= unhealthy;
            }
        }
        let available: i32 = status_of(new_set).2
            + old_sets
                .iter()
                .map(|s| status_of(s).2.min(self.current_replicas(s)))
                .sum::<i32>();
        let mut remove = (available - min_available).min(can_remove);
        for set in old_sets {
            if remove <= 0 {
                break;
            }
            let current = self.current_replicas(set);
            let take = current.min(remove);
            if take > 0 {
                self.scale(set, current - take);
                remove -= take;
            }
        }
    }

    /// Recreate: every old pod gone before the new set grows.
    fn recreate(&mut self, new_set: &Arc<ReplicaSet>, old_sets: &[Arc<ReplicaSet>], desired: i32) {
        for set in old_sets {
            self.scale(set, 0);
        }
        let old_running: i32 = old_sets.iter().map(|s| status_of(s).0).sum();
        if old_running == 0 {
            self.scale(new_set, desired);
        }
    }

    /// Emptied old sets beyond revisionHistoryLimit go, oldest first.
    fn clean_up(&mut self, old_sets: &[Arc<ReplicaSet>]) {
        let limit = self
            .deployment
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        let mut empty: Vec<&Arc<ReplicaSet>> = old_sets
            .iter()
            .filter(|s| replicas(s) == 0 && status_of(s).0 == 0)
            .collect();
        empty.sort_by_key(|s| revision(s));
        let surplus = empty
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for set in empty.into_iter().take(surplus) {
            self.steps.push(Step::Delete(Arc::clone(set)));
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{apps::v1::ReplicaSetStatus, core::v1::Container};
    use serde_json::json;

    use super::*;

    fn deployment(strategy: Value, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "ns", "uid": "d-1" },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "web" } },
                "strategy": strategy,
                "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [] } },
            },
        }))
        .unwrap()
    }

    fn rolling(surge: Value, unavailable: Value) -> Value {
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": surge, "maxUnavailable": unavailable } })
    }

    /// A set of `deployment` at `replicas`, all of them available, for an
    /// older template when `old`.
    fn set_of(deployment: &Deployment, revision: i64, replicas: i32, old: bool) -> Arc<ReplicaSet> {
        let mut deployment = deployment.clone();
        let spec = deployment.spec.as_mut().unwrap();
        if old {
            spec.template.spec.as_mut().unwrap().containers = vec![Container {
                name: "c".into(),
                image: Some("old".into()),
                ..Container::default()
            }];
        }
        let template = serde_json::to_value(&spec.template).unwrap();
        let mut set = new_set(&deployment, &template, revision);
        set.spec.as_mut().unwrap().replicas = Some(replicas);
        set.status = Some(ReplicaSetStatus {
            replicas,
            ready_replicas: Some(replicas),
            available_replicas: Some(replicas),
            ..ReplicaSetStatus::default()
        });
        Arc::new(set)
    }

    fn scales(plan: &Plan) -> Vec<(String, i32)> {
        plan.steps
            .iter()
            .filter_map(|step| match step {
                Step::Scale { set, to } => Some((set.metadata.name.clone().unwrap(), *to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn surge_rounds_up_and_unavailability_down() {
        assert_eq!(
            surge_and_unavailable(&deployment(rolling(json!("25%"), json!("25%")), 3)),
            (1, 0)
        );
        assert_eq!(
            surge_and_unavailable(&deployment(rolling(json!("25%"), json!("25%")), 10)),
            (3, 2)
        );
        assert_eq!(
            surge_and_unavailable(&deployment(rolling(json!(1), json!(1)), 6)),
            (1, 1)
        );
        assert_eq!(
            surge_and_unavailable(&deployment(rolling(json!(0), json!(0)), 6)),
            (0, 1),
            "never both zero"
        );
    }

    #[test]
    fn a_new_deployment_creates_its_set_at_full_size_in_one_write() {
        let deployment = deployment(rolling(json!("25%"), json!("25%")), 3);
        let plan = plan(&deployment, &[]);
        let [Step::Create(set)] = plan.steps.as_slice() else {
            panic!("one create, got {:?}", plan.steps);
        };
        let spec = set.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let hash = &set.metadata.labels.as_ref().unwrap()[TEMPLATE_HASH];
        assert_eq!(
            set.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap()[TEMPLATE_HASH],
            *hash
        );
        let annotations = set.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[REVISION], "1");
        assert_eq!(annotations[MAX_REPLICAS], "4");
        assert_eq!(
            set.metadata.owner_references.as_ref().unwrap()[0].uid,
            "d-1"
        );
    }

    #[test]
    fn a_rollout_surges_the_new_set_then_shrinks_the_old_within_availability() {
        let deployment = deployment(rolling(json!(1), json!(1)), 4);
        let old = set_of(&deployment, 1, 4, true);
        let first = plan(&deployment, &[Arc::clone(&old)]);
        let Some(Step::Create(created)) = first.steps.first() else {
            panic!("the new template's set is created first");
        };
        assert_eq!(
            created.spec.as_ref().unwrap().replicas,
            Some(1),
            "within maxSurge 1"
        );
        assert_eq!(scales(&first), [], "old sets shrink on a later pass");

        let new = set_of(&deployment, 2, 1, false);
        let second = plan(&deployment, &[Arc::clone(&old), Arc::clone(&new)]);
        assert_eq!(
            scales(&second),
            [(old.metadata.name.clone().unwrap(), 2)],
            "5 available, 3 needed: two old replicas go"
        );
    }

    #[test]
    fn recreate_grows_the_new_set_only_once_old_pods_are_gone() {
        let deployment = deployment(json!({ "type": "Recreate" }), 2);
        let old = set_of(&deployment, 1, 2, true);
        let first = plan(&deployment, &[Arc::clone(&old)]);
        assert!(
            matches!(&first.steps[0], Step::Create(s) if s.spec.as_ref().unwrap().replicas == Some(0))
        );
        assert_eq!(scales(&first), [(old.metadata.name.clone().unwrap(), 0)]);
    }

    #[test]
    fn a_rollback_renumbers_the_old_set_and_history_beyond_the_limit_goes() {
        let mut deployment = deployment(rolling(json!(1), json!(0)), 1);
        deployment.spec.as_mut().unwrap().revision_history_limit = Some(1);
        let current = set_of(&deployment, 1, 1, false);
        let newer = set_of(&deployment, 3, 0, true);
        let mut oldest = ReplicaSet::clone(&set_of(&deployment, 2, 0, true));
        oldest.metadata.name = Some("web-oldest".into());
        let oldest = Arc::new(oldest);
        let plan = plan(&deployment, &[Arc::clone(&current), oldest, newer]);
        assert!(matches!(
            plan.steps.first(),
            Some(Step::Renumber { revision: 4, .. })
        ));
        let deleted: Vec<_> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Delete(set) => set.metadata.name.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(
            deleted,
            ["web-oldest"],
            "the lowest revision beyond the limit"
        );
        assert_eq!(plan.new_set.as_deref(), Some(current.as_ref()));
    }
}
