//! Which nodes a DaemonSet's pods belong on, as Kubernetes decides it: the
//! template's node name, nodeSelector and required node affinity must
//! match the node, and its tolerations, with those every daemon pod gets,
//! must cover the node's NoSchedule and NoExecute taints. A pod already on
//! a node may stay there while only NoSchedule taints are untolerated.
//! The matching is the scheduler's own (its NodeAffinity and
//! TaintToleration filters), on its view of a node, which includes the
//! not-ready and unreachable taints a node's Ready condition implies.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, Toleration};

use crate::scheduler::{
    filters::{affinity_matches, tolerates, untolerated_taint},
    node_info::{NOT_READY_TAINT, NodeSpec, UNREACHABLE_TAINT, UNSCHEDULABLE_TAINT},
};

/// What a node is to one DaemonSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// A daemon pod belongs here: one is created if there is none.
    pub should_run: bool,
    /// A daemon pod already here may stay.
    pub may_stay: bool,
}

/// Adds the tolerations Kubernetes gives every daemon pod, so daemons
/// keep running on nodes that are not ready, unreachable, under pressure
/// or cordoned (and, with the host's network, before the pod network is
/// up). A toleration of the template that matches one of them (same key,
/// operator, value and effect) is replaced, as Kubernetes does, so the
/// NoExecute ones never carry tolerationSeconds.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut defaults = vec![
        (NOT_READY_TAINT, "NoExecute"),
        (UNREACHABLE_TAINT, "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        (UNSCHEDULABLE_TAINT, "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        defaults.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in defaults {
        let toleration = Toleration {
            key: Some(key.to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some(effect.to_owned()),
            ..Toleration::default()
        };
        let same = |t: &&mut Toleration| {
            (&t.key, &t.operator, &t.value, &t.effect)
                == (
                    &toleration.key,
                    &toleration.operator,
                    &toleration.value,
                    &toleration.effect,
                )
        };
        match tolerations.iter_mut().find(same) {
            Some(existing) => *existing = toleration,
            None => tolerations.push(toleration),
        }
    }
}

/// Where a daemon pod with `spec` (its tolerations already added) stands
/// on `node`.
pub fn verdict(spec: &PodSpec, node: &NodeSpec) -> Verdict {
    static NO_SELECTOR: BTreeMap<String, String> = BTreeMap::new();
    let nowhere = Verdict {
        should_run: false,
        may_stay: false,
    };
    if spec
        .node_name
        .as_deref()
        .is_some_and(|name| !name.is_empty() && name != node.name)
    {
        return nowhere;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if !affinity_matches(
        spec.node_selector.as_ref().unwrap_or(&NO_SELECTOR),
        required,
        node,
    ) {
        return nowhere;
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    if untolerated_taint(&node.taints, tolerations).is_none() {
        return Verdict {
            should_run: true,
            may_stay: true,
        };
    }
    let evicted = node.taints.iter().any(|taint| {
        taint.effect == "NoExecute" && !tolerations.iter().any(|t| tolerates(t, taint))
    });
    Verdict {
        should_run: false,
        may_stay: !evicted,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Node;
    use serde_json::{Value, json};

    use super::*;

    fn node(extra: Value) -> NodeSpec {
        let mut object = json!({
            "metadata": { "name": "n1", "labels": { "role": "edge" } },
            "spec": {},
            "status": { "conditions": [{ "type": "Ready", "status": "True" }] },
        });
        json_patch::merge(&mut object, &extra);
        let node: Node = serde_json::from_value(object).unwrap();
        NodeSpec::from_node(&node)
    }

    fn daemon(spec: Value) -> PodSpec {
        let mut spec: PodSpec = serde_json::from_value(spec).unwrap();
        add_daemon_tolerations(&mut spec);
        spec
    }

    const RUN: Verdict = Verdict {
        should_run: true,
        may_stay: true,
    };
    const STAY: Verdict = Verdict {
        should_run: false,
        may_stay: true,
    };
    const NOWHERE: Verdict = Verdict {
        should_run: false,
        may_stay: false,
    };

    #[test]
    fn selectors_affinity_and_taints_decide() {
        let taint = |effect: &str| json!({ "spec": { "taints": [{ "key": "dedicated", "value": "db", "effect": effect }] } });
        let tolerate = json!({ "containers": [], "tolerations": [{ "key": "dedicated", "operator": "Exists" }] });
        let cases = [
            ("plain", json!({}), json!({ "containers": [] }), RUN),
            (
                "selector matches",
                json!({}),
                json!({ "containers": [], "nodeSelector": { "role": "edge" } }),
                RUN,
            ),
            (
                "selector misses",
                json!({}),
                json!({ "containers": [], "nodeSelector": { "role": "core" } }),
                NOWHERE,
            ),
            (
                "affinity misses",
                json!({}),
                json!({ "containers": [], "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{ "matchExpressions": [{ "key": "role", "operator": "NotIn", "values": ["edge"] }] }],
                } } } }),
                NOWHERE,
            ),
            (
                "another node named",
                json!({}),
                json!({ "containers": [], "nodeName": "n2" }),
                NOWHERE,
            ),
            (
                "NoSchedule: no new pod, the old stays",
                taint("NoSchedule"),
                json!({ "containers": [] }),
                STAY,
            ),
            (
                "NoExecute: evicted",
                taint("NoExecute"),
                json!({ "containers": [] }),
                NOWHERE,
            ),
            ("tolerated", taint("NoExecute"), tolerate, RUN),
            (
                "PreferNoSchedule is no bar",
                taint("PreferNoSchedule"),
                json!({ "containers": [] }),
                RUN,
            ),
            (
                "cordoned nodes still run daemons",
                json!({ "spec": { "unschedulable": true, "taints": [{ "key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule" }] } }),
                json!({ "containers": [] }),
                RUN,
            ),
            (
                "not ready: no new pod, the old stays",
                json!({ "status": { "conditions": [{ "type": "Ready", "status": "False" }] } }),
                json!({ "containers": [] }),
                STAY,
            ),
        ];
        for (name, node_extra, spec, want) in cases {
            assert_eq!(verdict(&daemon(spec), &node(node_extra)), want, "{name}");
        }
    }

    #[test]
    fn daemon_tolerations_are_added_once_and_replace_their_match() {
        let spec = daemon(json!({ "containers": [], "tolerations": [
            { "key": NOT_READY_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300 },
            { "key": "dedicated", "operator": "Exists" },
        ] }));
        let tolerations = spec.tolerations.unwrap();
        let keys: Vec<&str> = tolerations
            .iter()
            .map(|t| t.key.as_deref().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                NOT_READY_TAINT,
                "dedicated",
                UNREACHABLE_TAINT,
                "node.kubernetes.io/disk-pressure",
                "node.kubernetes.io/memory-pressure",
                "node.kubernetes.io/pid-pressure",
                UNSCHEDULABLE_TAINT,
            ]
        );
        assert_eq!(tolerations[0].toleration_seconds, None);
        let again = {
            let mut spec = PodSpec {
                tolerations: Some(tolerations.clone()),
                ..PodSpec::default()
            };
            add_daemon_tolerations(&mut spec);
            spec.tolerations.unwrap()
        };
        assert_eq!(again, tolerations, "idempotent");
        let host = daemon(json!({ "containers": [], "hostNetwork": true }));
        assert!(
            host.tolerations
                .unwrap()
                .iter()
                .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable"))
        );
    }
}
