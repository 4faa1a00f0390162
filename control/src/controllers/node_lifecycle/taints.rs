//! The pure part of node lifecycle: which taints a node's Ready condition
//! calls for, and when a pod on NoExecute-tainted node must go, given its
//! tolerations (Kubernetes' taint-based eviction).

use k8s_openapi::{
    api::core::v1::{Taint, Toleration},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};

use crate::scheduler::filters::tolerates;

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const EFFECTS: [&str; 2] = ["NoSchedule", "NoExecute"];

fn is_managed(taint: &Taint) -> bool {
    (taint.key == NOT_READY || taint.key == UNREACHABLE) && EFFECTS.contains(&taint.effect.as_str())
}

/// The node's taints with the not-ready and unreachable ones made to
/// match `ready` (the Ready condition's status; none on a node that never
/// reported): False is not-ready, Unknown or none is unreachable, True is
/// neither. A taint already there keeps the time it was added.
pub fn desired(current: &[Taint], ready: Option<&str>, now: Timestamp) -> Vec<Taint> {
    let key = match ready {
        Some("True") => None,
        Some("False") => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !is_managed(t) || Some(t.key.as_str()) == key)
        .cloned()
        .collect();
    if let Some(key) = key {
        for effect in EFFECTS {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                taints.push(Taint {
                    key: key.to_owned(),
                    effect: effect.to_owned(),
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                });
            }
        }
    }
    taints
}

/// When a pod on a node with these taints is evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    Never,
    Now,
    At(Timestamp),
}

/// A pod stays while it tolerates every NoExecute taint; a bounded
/// toleration (tolerationSeconds) lets it stay that long after the taint
/// was added, the shortest bound of those in use deciding.
pub fn eviction(tolerations: &[Toleration], taints: &[Taint]) -> Eviction {
    let mut deadline: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Eviction::Now;
        }
        let Some(seconds) = used.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let since = taint
            .time_added
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
        let at = since
            .checked_add(SignedDuration::from_secs(seconds.max(0)))
            .unwrap_or(Timestamp::MAX);
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    deadline.map_or(Eviction::Never, Eviction::At)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str, added: Option<i64>) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: added.map(|s| Time(Timestamp::from_second(s).unwrap())),
            value: None,
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn the_ready_condition_picks_the_taints_and_keeps_the_time_added() {
        let now = Timestamp::from_second(1_000).unwrap();
        let user = taint("dedicated", "NoSchedule", None);
        let unknown = desired(std::slice::from_ref(&user), Some("Unknown"), now);
        let keys: Vec<(&str, &str)> = unknown
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated", "NoSchedule"),
                (UNREACHABLE, "NoSchedule"),
                (UNREACHABLE, "NoExecute")
            ]
        );
        assert_eq!(unknown[2].time_added, Some(Time(now)));
        assert_eq!(
            desired(&unknown, None, Timestamp::from_second(2_000).unwrap()),
            unknown,
            "a node that never reported is unreachable, since the first time"
        );
        let not_ready = desired(&unknown, Some("False"), now);
        assert!(not_ready.iter().all(|t| t.key != UNREACHABLE));
        assert_eq!(not_ready.iter().filter(|t| t.key == NOT_READY).count(), 2);
        assert_eq!(desired(&not_ready, Some("True"), now), vec![user]);
    }

    #[test]
    fn tolerations_decide_when_a_pod_is_evicted() {
        let taints = [
            taint(UNREACHABLE, "NoExecute", Some(100)),
            taint(UNREACHABLE, "NoSchedule", None),
        ];
        let at = |s| Eviction::At(Timestamp::from_second(s).unwrap());
        let cases = [
            (vec![], Eviction::Now),
            (vec![toleration(NOT_READY, Some(5))], Eviction::Now),
            (vec![toleration(UNREACHABLE, Some(300))], at(400)),
            (
                vec![
                    toleration(UNREACHABLE, Some(300)),
                    toleration(UNREACHABLE, Some(30)),
                ],
                at(130),
            ),
            (vec![toleration(UNREACHABLE, None)], Eviction::Never),
            (vec![toleration("", None)], Eviction::Never),
        ];
        for (tolerations, expected) in cases {
            assert_eq!(eviction(&tolerations, &taints), expected, "{tolerations:?}");
        }
        assert_eq!(
            eviction(&[], &taints[1..]),
            Eviction::Never,
            "NoSchedule evicts nothing"
        );
    }
}
