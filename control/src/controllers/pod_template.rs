//! What the workload controllers share about pod templates and rollout
//! arithmetic: the template hash that names ReplicaSets and
//! ControllerRevisions and labels their pods, and maxSurge /
//! maxUnavailable resolved against a replica count.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// The template's hash, as a label value: FNV-1a over its JSON (object
/// keys sorted), in Kubernetes' alphabet for generated names.
pub fn template_hash(template: &Value) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in template.to_string().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut value = u64::from(hash);
    while value > 0 || out.is_empty() {
        out.push(ALPHABET[(value % ALPHABET.len() as u64) as usize] as char);
        value /= ALPHABET.len() as u64;
    }
    out
}

/// maxSurge or maxUnavailable as a count of `total` (Kubernetes'
/// GetScaledValueFromIntOrPercent): percentages round up for surge and
/// down for unavailability, as Kubernetes rounds them.
pub fn scaled(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(text)) => {
            let percent: f64 = text.trim_end_matches('%').parse().unwrap_or(0.0);
            let exact = percent * f64::from(total) / 100.0;
            (if round_up {
                exact.ceil()
            } else {
                exact.floor()
            }) as i32
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_template_hash_is_stable_and_tells_templates_apart() {
        let a = json!({ "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "image": "a" }] } });
        let b = json!({ "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "image": "b" }] } });
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert!(
            template_hash(&a)
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }

    #[test]
    fn percentages_round_up_for_surge_and_down_for_unavailability() {
        let quarter = IntOrString::String("25%".into());
        assert_eq!(scaled(Some(&quarter), 10, true), 3);
        assert_eq!(scaled(Some(&quarter), 10, false), 2);
        assert_eq!(scaled(Some(&IntOrString::Int(4)), 10, false), 4);
        assert_eq!(scaled(None, 10, true), 0);
    }
}
