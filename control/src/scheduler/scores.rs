//! Scores: how good each feasible node is for a pod, 0 to 100 per plugin
//! after normalisation, weighted as kube-scheduler's defaults weigh them:
//! TaintToleration 3, NodeAffinity 2, PodTopologySpread 2,
//! NodeResourcesFit 1, NodeResourcesBalancedAllocation 1.

use k8s_openapi::api::core::v1::NodeSelector;

use super::{
    cache::Cache,
    config::{ScoringStrategy, StrategyKind},
    filters::{node_selector_matches, tolerates},
    node_info::{NodeInfo, NodeSpec},
    pod_info::{PodInfo, Resources},
};

pub const MAX_SCORE: i64 = 100;

const WEIGHT_TAINT_TOLERATION: i64 = 3;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_TOPOLOGY_SPREAD: i64 = 2;
const WEIGHT_RESOURCES_FIT: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;

/// The system-default spreading of a controller's replicas, as
/// PodTopologySpread applies it: per node with maxSkew 3, per zone with
/// maxSkew 5, both ScheduleAnyway.
const HOSTNAME_MAX_SKEW: i64 = 3;
const ZONE_MAX_SKEW: i64 = 5;

/// A feasible node, as the scorers see it.
pub struct Candidate<'a> {
    pub spec: &'a NodeSpec,
    pub info: &'a NodeInfo,
}

/// The weighted total of each candidate, in order.
pub fn score(
    pod: &PodInfo,
    candidates: &[Candidate<'_>],
    cache: &Cache,
    strategy: &ScoringStrategy,
) -> Vec<i64> {
    let mut totals = vec![0; candidates.len()];
    let mut add = |weight: i64, scores: Vec<i64>| {
        for (total, score) in totals.iter_mut().zip(scores) {
            *total += weight * score;
        }
    };
    add(
        WEIGHT_RESOURCES_FIT,
        candidates
            .iter()
            .map(|c| resources_fit(pod, c, strategy))
            .collect(),
    );
    add(
        WEIGHT_BALANCED,
        candidates.iter().map(|c| balanced(pod, c)).collect(),
    );
    add(
        WEIGHT_TAINT_TOLERATION,
        normalize(
            candidates
                .iter()
                .map(|c| prefer_no_schedule(pod, c))
                .collect(),
            true,
        ),
    );
    add(
        WEIGHT_NODE_AFFINITY,
        normalize(
            candidates
                .iter()
                .map(|c| preferred_affinity(pod, c))
                .collect(),
            false,
        ),
    );
    if let Some(controller) = &pod.constraints.controller {
        add(
            WEIGHT_TOPOLOGY_SPREAD,
            topology_spread(controller, candidates, cache),
        );
    }
    totals
}

/// requested / allocatable for one resource after placing the pod, in
/// 0..=1; a node offering none counts as full.
fn fraction(requested: i64, allocatable: i64) -> f64 {
    if allocatable <= 0 {
        return 1.0;
    }
    (requested as f64 / allocatable as f64).min(1.0)
}

fn after_placing(pod: &PodInfo, candidate: &Candidate<'_>) -> Resources {
    let mut requested = candidate.info.score_requested;
    requested.add(&pod.constraints.score_requests);
    requested
}

/// NodeResourcesFit: LeastAllocated favours free room, MostAllocated
/// packs; a weighted mean over the configured resources.
fn resources_fit(pod: &PodInfo, candidate: &Candidate<'_>, strategy: &ScoringStrategy) -> i64 {
    let requested = after_placing(pod, candidate);
    let allocatable = &candidate.spec.allocatable;
    let (mut sum, mut weights) = (0, 0);
    for (resource, weight) in &strategy.resources {
        let (used, have) = match resource.as_str() {
            "cpu" => (requested.milli_cpu, allocatable.milli_cpu),
            "memory" => (requested.memory, allocatable.memory),
            "ephemeral-storage" => (requested.ephemeral_storage, allocatable.ephemeral_storage),
            _ => continue,
        };
        let score = if have <= 0 {
            0
        } else {
            match strategy.kind {
                StrategyKind::LeastAllocated if used > have => 0,
                StrategyKind::LeastAllocated => (have - used) * MAX_SCORE / have,
                StrategyKind::MostAllocated => used.min(have) * MAX_SCORE / have,
            }
        };
        sum += score * weight;
        weights += weight;
    }
    if weights == 0 { 0 } else { sum / weights }
}

/// NodeResourcesBalancedAllocation: nodes whose cpu and memory would be
/// used in equal shares score highest (1 - standard deviation).
fn balanced(pod: &PodInfo, candidate: &Candidate<'_>) -> i64 {
    let requested = after_placing(pod, candidate);
    let allocatable = &candidate.spec.allocatable;
    let cpu = fraction(requested.milli_cpu, allocatable.milli_cpu);
    let memory = fraction(requested.memory, allocatable.memory);
    let deviation = (cpu - memory).abs() / 2.0;
    ((1.0 - deviation) * MAX_SCORE as f64) as i64
}

/// TaintToleration: PreferNoSchedule taints the pod does not tolerate.
fn prefer_no_schedule(pod: &PodInfo, candidate: &Candidate<'_>) -> i64 {
    let tolerations: Vec<_> = pod
        .constraints
        .tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .collect();
    candidate
        .spec
        .taints
        .iter()
        .filter(|taint| taint.effect == "PreferNoSchedule")
        .filter(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
        .count() as i64
}

/// NodeAffinity: the summed weights of the preferred terms a node matches.
fn preferred_affinity(pod: &PodInfo, candidate: &Candidate<'_>) -> i64 {
    pod.constraints
        .preferred_affinity
        .iter()
        .filter(|term| {
            node_selector_matches(
                &NodeSelector {
                    node_selector_terms: vec![term.preference.clone()],
                },
                candidate.spec,
            )
        })
        .map(|term| i64::from(term.weight))
        .sum()
}

/// Scales raw scores to 0..=100 by the largest (reversed: fewest best).
fn normalize(raw: Vec<i64>, reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    if max == 0 {
        let all = if reverse { MAX_SCORE } else { 0 };
        return vec![all; raw.len()];
    }
    raw.into_iter()
        .map(|score| {
            let scaled = score * MAX_SCORE / max;
            if reverse { MAX_SCORE - scaled } else { scaled }
        })
        .collect()
}

/// PodTopologySpread with the system defaults: fewer replicas of the same
/// controller on the node (and in its zone) score higher. Each domain's
/// count is weighted by log(domains + 2), as Kubernetes does, so the
/// constraint over more domains counts more.
fn topology_spread(controller: &str, candidates: &[Candidate<'_>], cache: &Cache) -> Vec<i64> {
    // Each zone's count is looked up once: candidates are many, zones few.
    let mut in_zones: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    for zone in candidates.iter().filter_map(|c| c.spec.zone()) {
        in_zones
            .entry(zone)
            .or_insert_with(|| f64::from(cache.zone_replicas(zone, controller)));
    }
    let host_weight = ((candidates.len() + 2) as f64).ln();
    let zone_weight = ((in_zones.len() + 2) as f64).ln();
    let raw: Vec<i64> = candidates
        .iter()
        .map(|c| {
            let on_node = f64::from(c.info.replicas_of(controller));
            let mut score = on_node * host_weight + (HOSTNAME_MAX_SKEW - 1) as f64;
            if let Some(in_zone) = c.spec.zone().and_then(|z| in_zones.get(z)) {
                score += in_zone * zone_weight + (ZONE_MAX_SKEW - 1) as f64;
            }
            score.round() as i64
        })
        .collect();
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    raw.into_iter()
        .map(|score| {
            if max == 0 {
                MAX_SCORE
            } else {
                MAX_SCORE * (max + min - score) / max
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};

    use super::*;
    use crate::scheduler::config::ScoringStrategy;

    fn spec(name: &str, cpu: &str, memory: &str, extra: Value) -> NodeSpec {
        let mut object = json!({
            "metadata": { "name": name },
            "status": {
                "allocatable": { "cpu": cpu, "memory": memory, "pods": "110" },
                "conditions": [{ "type": "Ready", "status": "True" }],
            },
        });
        json_patch::merge(&mut object, &extra);
        NodeSpec::from_node(&serde_json::from_value::<Node>(object).unwrap())
    }

    fn pod(name: &str, spec: Value) -> PodInfo {
        let mut object = json!({
            "metadata": { "name": name, "namespace": "ns", "uid": name },
            "spec": { "containers": [{ "name": "c", "resources": { "requests": { "cpu": "1", "memory": "1Gi" } } }] },
        });
        json_patch::merge(&mut object, &json!({ "spec": spec }));
        PodInfo::from_pod(&serde_json::from_value::<Pod>(object).unwrap())
    }

    /// The index of the best candidate for `pod` among `nodes`, with the
    /// pods already on each.
    fn best(
        pod: &PodInfo,
        nodes: &[(NodeSpec, Vec<PodInfo>)],
        strategy: &ScoringStrategy,
    ) -> Vec<i64> {
        let mut cache = Cache::default();
        for (spec, pods) in nodes {
            cache.set_node(spec.clone());
            for p in pods {
                cache.assume(p, &spec.name);
            }
        }
        let candidates: Vec<Candidate<'_>> = nodes
            .iter()
            .map(|(spec, _)| Candidate {
                spec,
                info: cache.node(&spec.name).unwrap(),
            })
            .collect();
        score(pod, &candidates, &cache, strategy)
    }

    fn argmax(scores: &[i64]) -> usize {
        (0..scores.len()).max_by_key(|&i| scores[i]).unwrap()
    }

    #[test]
    fn least_allocated_prefers_room_and_most_allocated_packs() {
        let busy = pod(
            "busy",
            json!({ "containers": [{ "name": "c", "resources": { "requests": { "cpu": "2", "memory": "2Gi" } } }] }),
        );
        let nodes = vec![
            (spec("empty", "4", "8Gi", json!({})), vec![]),
            (spec("half", "4", "8Gi", json!({})), vec![busy]),
        ];
        let newcomer = pod("new", json!({}));
        let least = best(&newcomer, &nodes, &ScoringStrategy::least_allocated());
        assert_eq!(argmax(&least), 0, "{least:?}");
        let most = best(&newcomer, &nodes, &ScoringStrategy::most_allocated());
        assert_eq!(argmax(&most), 1, "{most:?}");
    }

    #[test]
    fn resources_fit_matches_kubernetes_arithmetic() {
        let candidate_spec = spec("n", "4", "8Gi", json!({}));
        let info = NodeInfo::default();
        let candidate = Candidate {
            spec: &candidate_spec,
            info: &info,
        };
        let p = pod("p", json!({}));
        // cpu (4-1)/4 = 75, memory (8-1)/8 = 87: mean 81.
        assert_eq!(
            resources_fit(&p, &candidate, &ScoringStrategy::least_allocated()),
            81
        );
        // cpu 25, memory 12: mean 18.
        assert_eq!(
            resources_fit(&p, &candidate, &ScoringStrategy::most_allocated()),
            18
        );
        // |0.25 - 0.125| / 2 = 0.0625 -> 93.
        assert_eq!(balanced(&p, &candidate), 93);
    }

    #[test]
    fn prefer_no_schedule_taints_and_preferred_affinity_steer() {
        let nodes = vec![
            (
                spec(
                    "soft-tainted",
                    "4",
                    "8Gi",
                    json!({ "spec": { "taints": [{ "key": "k", "effect": "PreferNoSchedule" }] } }),
                ),
                vec![],
            ),
            (spec("plain", "4", "8Gi", json!({})), vec![]),
        ];
        let scores = best(
            &pod("p", json!({})),
            &nodes,
            &ScoringStrategy::least_allocated(),
        );
        assert_eq!(argmax(&scores), 1, "{scores:?}");
        let tolerant = pod(
            "p",
            json!({ "tolerations": [{ "key": "k", "operator": "Exists" }] }),
        );
        let scores = best(&tolerant, &nodes, &ScoringStrategy::least_allocated());
        assert_eq!(scores[0], scores[1], "a tolerated taint costs nothing");

        let nodes = vec![
            (spec("a", "4", "8Gi", json!({})), vec![]),
            (
                spec(
                    "b",
                    "4",
                    "8Gi",
                    json!({ "metadata": { "labels": { "disk": "ssd" } } }),
                ),
                vec![],
            ),
        ];
        let prefers = pod(
            "p",
            json!({ "affinity": { "nodeAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [
            { "weight": 50, "preference": { "matchExpressions": [{ "key": "disk", "operator": "In", "values": ["ssd"] }] } },
        ] } } }),
        );
        let scores = best(&prefers, &nodes, &ScoringStrategy::least_allocated());
        assert_eq!(scores[1] - scores[0], WEIGHT_NODE_AFFINITY * MAX_SCORE);
    }

    #[test]
    fn replicas_of_one_controller_spread_across_nodes_and_zones() {
        let owned = |name: &str| {
            let mut p = pod(name, json!({ "containers": [{ "name": "c" }] }));
            p.constraints.controller = Some("rs-1".into());
            p
        };
        let zone =
            |z: &str| json!({ "metadata": { "labels": { "topology.kubernetes.io/zone": z } } });
        // a1 and a2 in zone a, b1 in zone b; a1 already runs two replicas.
        let nodes = vec![
            (
                spec("a1", "4", "8Gi", zone("a")),
                vec![owned("r1"), owned("r2")],
            ),
            (spec("a2", "4", "8Gi", zone("a")), vec![]),
            (spec("b1", "4", "8Gi", zone("b")), vec![]),
        ];
        let scores = best(&owned("r3"), &nodes, &ScoringStrategy::least_allocated());
        assert_eq!(argmax(&scores), 2, "the empty zone wins: {scores:?}");
        assert!(scores[1] > scores[0], "then the empty node: {scores:?}");
    }

    #[test]
    fn normalisation_scales_by_the_largest() {
        assert_eq!(normalize(vec![0, 5, 10], false), vec![0, 50, 100]);
        assert_eq!(normalize(vec![0, 5, 10], true), vec![100, 50, 0]);
        assert_eq!(normalize(vec![0, 0], true), vec![100, 100]);
    }
}
