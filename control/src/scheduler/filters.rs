//! Filters: whether a pod may go on a node at all, in kube-scheduler's
//! order (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity,
//! NodePorts, NodeResourcesFit). The first filter that refuses gives the
//! node's reasons, worded as Kubernetes words them, so the
//! "0/3 nodes are available: ..." message reads the same.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, Taint, Toleration};

use super::{
    node_info::{NodeInfo, NodeSpec, UNSCHEDULABLE_TAINT},
    pod_info::PodInfo,
};

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const REASON_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";

/// Why a node cannot take a pod: one or more reasons (a node short of both
/// cpu and memory has two).
pub type Reasons = Vec<String>;

/// Runs every filter; Ok when the pod fits.
pub fn check(pod: &PodInfo, spec: &NodeSpec, info: &NodeInfo) -> Result<(), Reasons> {
    let c = &pod.constraints;
    if spec.unschedulable
        && !c.tolerations.iter().any(|t| {
            tolerates(
                t,
                &Taint {
                    key: UNSCHEDULABLE_TAINT.to_owned(),
                    effect: "NoSchedule".to_owned(),
                    ..Taint::default()
                },
            )
        })
    {
        return Err(vec![REASON_UNSCHEDULABLE.to_owned()]);
    }
    if pod.is_bound() && pod.node_name != spec.name {
        return Err(vec![REASON_NODE_NAME.to_owned()]);
    }
    if let Some(taint) = untolerated_taint(&spec.taints, &c.tolerations) {
        return Err(vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key,
            taint.value.as_deref().unwrap_or_default()
        )]);
    }
    if !affinity_matches(&c.node_selector, c.required_affinity.as_ref(), spec) {
        return Err(vec![REASON_AFFINITY.to_owned()]);
    }
    if c.host_ports.iter().any(|port| info.port_in_use(port)) {
        return Err(vec![REASON_PORTS.to_owned()]);
    }
    fits(pod, spec, info)
}

/// NodeResourcesFit: every shortfall is a reason.
fn fits(pod: &PodInfo, spec: &NodeSpec, info: &NodeInfo) -> Result<(), Reasons> {
    let mut reasons = Vec::new();
    if info.pod_count + 1 > spec.allowed_pods {
        reasons.push(REASON_TOO_MANY_PODS.to_owned());
    }
    let want = &pod.constraints.requests;
    let (have, used) = (&spec.allocatable, &info.requested);
    for (name, asked, free) in [
        ("cpu", want.milli_cpu, have.milli_cpu - used.milli_cpu),
        ("memory", want.memory, have.memory - used.memory),
        (
            "ephemeral-storage",
            want.ephemeral_storage,
            have.ephemeral_storage - used.ephemeral_storage,
        ),
    ] {
        if asked > 0 && asked > free {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// The first NoSchedule or NoExecute taint no toleration covers.
pub fn untolerated_taint<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

/// Whether `toleration` covers `taint`, by Kubernetes' rules: an empty
/// effect matches every effect, an empty key with Exists every key,
/// Equal (the default) needs the same value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// NodeAffinity: the pod's nodeSelector and its required node affinity
/// both match the node.
pub fn affinity_matches(
    node_selector: &BTreeMap<String, String>,
    required: Option<&NodeSelector>,
    spec: &NodeSpec,
) -> bool {
    node_selector
        .iter()
        .all(|(k, v)| spec.labels.get(k) == Some(v))
        && required.is_none_or(|required| node_selector_matches(required, spec))
}

/// Required node affinity: the terms are ORed; an empty list matches
/// nothing, as in Kubernetes.
pub fn node_selector_matches(selector: &NodeSelector, spec: &NodeSpec) -> bool {
    selector.node_selector_terms.iter().any(|term| {
        let expressions = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if expressions.is_empty() && fields.is_empty() {
            return false;
        }
        let name_fields = HashMap::from([("metadata.name", spec.name.as_str())]);
        expressions
            .iter()
            .all(|r| requirement_matches(r, spec.labels.get(&r.key).map(String::as_str)))
            && fields
                .iter()
                .all(|r| requirement_matches(r, name_fields.get(r.key.as_str()).copied()))
    })
}

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |text: &str| text.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) = (
                value.and_then(number),
                values.first().and_then(|v| number(v)),
            ) else {
                return false;
            };
            if requirement.operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

/// kube-scheduler's "0/N nodes are available: ..." from each node's
/// reasons: a count per reason, sorted as strings.
pub fn unschedulable_message(total_nodes: usize, reasons: &HashMap<String, usize>) -> String {
    let mut counts: Vec<String> = reasons
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    counts.sort();
    if counts.is_empty() {
        format!("0/{total_nodes} nodes are available.")
    } else {
        format!(
            "0/{total_nodes} nodes are available: {}.",
            counts.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};

    use super::*;

    fn node(extra: Value) -> (NodeSpec, NodeInfo) {
        let mut object = json!({
            "metadata": { "name": "n1", "labels": { "disk": "ssd", "gen": "5" } },
            "spec": {},
            "status": {
                "allocatable": { "cpu": "2", "memory": "4Gi", "pods": "3", "ephemeral-storage": "10Gi" },
                "conditions": [{ "type": "Ready", "status": "True" }],
            },
        });
        json_patch::merge(&mut object, &extra);
        let node: Node = serde_json::from_value(object).unwrap();
        (NodeSpec::from_node(&node), NodeInfo::default())
    }

    fn pod(spec: Value) -> PodInfo {
        let mut object = json!({
            "metadata": { "name": "p", "namespace": "ns", "uid": "u" },
            "spec": { "containers": [{ "name": "c" }] },
        });
        json_patch::merge(&mut object, &json!({ "spec": spec }));
        let pod: Pod = serde_json::from_value(object).unwrap();
        PodInfo::from_pod(&pod)
    }

    fn requests(cpu: &str, memory: &str) -> Value {
        json!({ "containers": [{ "name": "c", "resources": { "requests": { "cpu": cpu, "memory": memory } } }] })
    }

    #[test]
    fn each_filter_refuses_with_kubernetes_words() {
        let cases: Vec<(&str, Value, Value, Option<Vec<&str>>)> = vec![
            ("fits", json!({}), requests("1", "1Gi"), None),
            (
                "cordoned",
                json!({ "spec": { "unschedulable": true } }),
                json!({}),
                Some(vec![REASON_UNSCHEDULABLE]),
            ),
            (
                "cordoned but tolerated",
                json!({ "spec": { "unschedulable": true } }),
                json!({ "tolerations": [{ "key": UNSCHEDULABLE_TAINT, "operator": "Exists", "effect": "NoSchedule" }] }),
                None,
            ),
            (
                "bound elsewhere",
                json!({}),
                json!({ "nodeName": "n2" }),
                Some(vec![REASON_NODE_NAME]),
            ),
            (
                "tainted",
                json!({ "spec": { "taints": [{ "key": "dedicated", "value": "gpu", "effect": "NoSchedule" }] } }),
                json!({}),
                Some(vec!["node(s) had untolerated taint {dedicated: gpu}"]),
            ),
            (
                "tainted, tolerated by value",
                json!({ "spec": { "taints": [{ "key": "dedicated", "value": "gpu", "effect": "NoSchedule" }] } }),
                json!({ "tolerations": [{ "key": "dedicated", "value": "gpu" }] }),
                None,
            ),
            (
                "tainted, the wrong value",
                json!({ "spec": { "taints": [{ "key": "dedicated", "value": "gpu", "effect": "NoExecute" }] } }),
                json!({ "tolerations": [{ "key": "dedicated", "value": "cpu" }] }),
                Some(vec!["node(s) had untolerated taint {dedicated: gpu}"]),
            ),
            (
                "PreferNoSchedule does not filter",
                json!({ "spec": { "taints": [{ "key": "soft", "effect": "PreferNoSchedule" }] } }),
                json!({}),
                None,
            ),
            (
                "not ready",
                json!({ "status": { "conditions": [{ "type": "Ready", "status": "False" }] } }),
                json!({}),
                Some(vec![
                    "node(s) had untolerated taint {node.kubernetes.io/not-ready: }",
                ]),
            ),
            (
                "not ready, tolerated by an empty key with Exists",
                json!({ "status": { "conditions": [{ "type": "Ready", "status": "False" }] } }),
                json!({ "tolerations": [{ "operator": "Exists" }] }),
                None,
            ),
            (
                "nodeSelector matches",
                json!({}),
                json!({ "nodeSelector": { "disk": "ssd" } }),
                None,
            ),
            (
                "nodeSelector misses",
                json!({}),
                json!({ "nodeSelector": { "disk": "hdd" } }),
                Some(vec![REASON_AFFINITY]),
            ),
            (
                "too small everywhere",
                json!({}),
                requests("3", "5Gi"),
                Some(vec!["Insufficient cpu", "Insufficient memory"]),
            ),
            (
                "ephemeral storage",
                json!({}),
                json!({ "containers": [{ "name": "c", "resources": { "requests": { "ephemeral-storage": "11Gi" } } }] }),
                Some(vec!["Insufficient ephemeral-storage"]),
            ),
        ];
        for (name, node_extra, pod_spec, want) in cases {
            let (spec, info) = node(node_extra);
            let got = check(&pod(pod_spec), &spec, &info).err();
            let want = want.map(|w| w.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn required_affinity_operators() {
        let affinity = |expressions: Value| {
            json!({ "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{ "matchExpressions": expressions }],
            } } } })
        };
        let cases = [
            (
                json!([{ "key": "disk", "operator": "In", "values": ["hdd", "ssd"] }]),
                true,
            ),
            (
                json!([{ "key": "disk", "operator": "In", "values": ["hdd"] }]),
                false,
            ),
            (
                json!([{ "key": "disk", "operator": "NotIn", "values": ["hdd"] }]),
                true,
            ),
            (
                json!([{ "key": "zone", "operator": "NotIn", "values": ["a"] }]),
                true,
            ),
            (json!([{ "key": "disk", "operator": "Exists" }]), true),
            (json!([{ "key": "zone", "operator": "Exists" }]), false),
            (json!([{ "key": "zone", "operator": "DoesNotExist" }]), true),
            (
                json!([{ "key": "gen", "operator": "Gt", "values": ["4"] }]),
                true,
            ),
            (
                json!([{ "key": "gen", "operator": "Gt", "values": ["5"] }]),
                false,
            ),
            (
                json!([{ "key": "gen", "operator": "Lt", "values": ["6"] }]),
                true,
            ),
            (
                json!([{ "key": "disk", "operator": "Lt", "values": ["6"] }]),
                false,
            ),
            (
                json!([{ "key": "disk", "operator": "Exists" }, { "key": "gen", "operator": "In", "values": ["4"] }]),
                false,
            ),
            (json!([]), false),
        ];
        let (spec, info) = node(json!({}));
        for (expressions, fits) in cases {
            let result = check(&pod(affinity(expressions.clone())), &spec, &info);
            assert_eq!(result.is_ok(), fits, "{expressions}");
        }
        let by_name = json!({ "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                { "matchExpressions": [{ "key": "disk", "operator": "In", "values": ["hdd"] }] },
                { "matchFields": [{ "key": "metadata.name", "operator": "In", "values": ["n1"] }] },
            ],
        } } } });
        assert!(check(&pod(by_name), &spec, &info).is_ok(), "terms are ORed");
    }

    #[test]
    fn room_and_ports_already_taken_count() {
        let (spec, mut info) = node(json!({}));
        let mut taken = pod(json!({ "containers": [{
            "name": "c",
            "resources": { "requests": { "cpu": "1500m" } },
            "ports": [{ "containerPort": 80, "hostPort": 80 }],
        }] }));
        taken.key = "ns/taken".into();
        info.add_pod(&taken);
        assert_eq!(
            check(&pod(requests("600m", "1Mi")), &spec, &info).unwrap_err(),
            vec!["Insufficient cpu"]
        );
        assert!(check(&pod(requests("500m", "1Mi")), &spec, &info).is_ok());
        let wants_port = pod(
            json!({ "containers": [{ "name": "c", "ports": [{ "containerPort": 8080, "hostPort": 80 }] }] }),
        );
        assert_eq!(
            check(&wants_port, &spec, &info).unwrap_err(),
            vec![REASON_PORTS]
        );
        for n in 0..2 {
            let mut other = pod(json!({}));
            other.key = format!("ns/other{n}");
            info.add_pod(&other);
        }
        assert_eq!(
            check(&pod(json!({})), &spec, &info).unwrap_err(),
            vec![REASON_TOO_MANY_PODS]
        );
    }

    #[test]
    fn the_message_counts_reasons_in_sorted_order() {
        let reasons = HashMap::from([
            ("Insufficient cpu".to_owned(), 2),
            (
                "node(s) had untolerated taint {dedicated: gpu}".to_owned(),
                1,
            ),
        ]);
        assert_eq!(
            unschedulable_message(3, &reasons),
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu."
        );
        assert_eq!(
            unschedulable_message(0, &HashMap::new()),
            "0/0 nodes are available."
        );
    }
}
