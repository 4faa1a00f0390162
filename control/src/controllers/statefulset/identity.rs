//! A StatefulSet pod's identity: its stable name `<set>-<ordinal>`, the
//! labels that carry the name, the ordinal and the revision it was made
//! from, and the pod made from a template for one ordinal (hostname the
//! pod's name, subdomain the set's governing Service, owned by the set).

use k8s_openapi::{
    api::{
        apps::v1::StatefulSet,
        core::v1::{Pod as PodObject, PodTemplateSpec},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::controllers::{ownership::controller_reference, pod_view::Pod};

pub const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";
pub const REVISION: &str = "controller-revision-hash";

/// The set a pod's name says it belongs to: the name without its
/// `-<digits>` suffix.
pub fn parent(pod_name: &str) -> Option<&str> {
    let (parent, digits) = pod_name.rsplit_once('-')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(parent)
}

/// The ordinal of the pod `pod_name` in the set `set_name`, if the name is
/// exactly `<set>-<ordinal>` (no sign, no leading zero: a name the
/// controller could have given).
pub fn ordinal(set_name: &str, pod_name: &str) -> Option<i32> {
    let (parent, digits) = pod_name.rsplit_once('-')?;
    if parent != set_name {
        return None;
    }
    let ordinal: i32 = digits.parse().ok()?;
    (ordinal >= 0 && ordinal.to_string() == digits).then_some(ordinal)
}

pub fn pod_name(set_name: &str, ordinal: i32) -> String {
    format!("{set_name}-{ordinal}")
}

/// The revision a pod was made from ("" when it carries none).
pub fn revision_of(pod: &Pod) -> &str {
    label(pod, REVISION).unwrap_or_default()
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// Whether an (adopted) pod carries the labels that name it.
pub fn labels_match(pod: &Pod, ordinal: i32) -> bool {
    label(pod, POD_NAME) == pod.metadata.name.as_deref()
        && label(pod, POD_INDEX) == Some(ordinal.to_string().as_str())
}

/// The labels a member pod must carry, as a merge patch.
pub fn label_patch(pod_name: &str, ordinal: i32) -> Value {
    json!({ "metadata": { "labels": { POD_NAME: pod_name, POD_INDEX: ordinal.to_string() } } })
}

/// The pod of `set` at `ordinal`, made from `template` (the JSON of a pod
/// template, as a revision keeps it) at `revision`; an error if the
/// template is no pod template. Volume claim templates are not turned
/// into volumes: there is no storage to claim yet.
pub fn new_pod(
    set: &StatefulSet,
    template: &Value,
    revision: &str,
    ordinal: i32,
) -> Result<PodObject, serde_json::Error> {
    let template = PodTemplateSpec::deserialize(template)?;
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let name = pod_name(set_name, ordinal);
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME.to_owned(), name.clone());
    labels.insert(POD_INDEX.to_owned(), ordinal.to_string());
    labels.insert(REVISION.to_owned(), revision.to_owned());
    let mut spec = template.spec.unwrap_or_default();
    spec.hostname = Some(name.clone());
    if let Some(service) = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.as_deref())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(service.to_owned());
    }
    Ok(PodObject {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_reference(set)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_the_controller_could_give_are_members() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web-0", "web-0-3"), Some(3));
        for other in [
            "web", "web-", "web-01", "web-+1", "web-a", "webs-1", "web-0-3",
        ] {
            assert_eq!(ordinal("web", other), None, "{other}");
        }
        assert_eq!(parent("web-0-3"), Some("web-0"));
        assert_eq!(parent("web-x"), None);
    }

    #[test]
    fn a_new_pod_carries_its_identity_revision_and_owner() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": { "name": "web", "namespace": "ns", "uid": "u-1" },
            "spec": {
                "serviceName": "nginx",
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" }, "annotations": { "a": "b" } },
                    "spec": { "containers": [{ "name": "c", "image": "i" }] },
                },
                "volumeClaimTemplates": [{ "metadata": { "name": "www" } }],
            },
        }))
        .unwrap();
        let template = serde_json::to_value(&set.spec.as_ref().unwrap().template).unwrap();
        let revision = "web-5d8fb6c7".to_owned();
        let pod = serde_json::to_value(new_pod(&set, &template, &revision, 2).unwrap()).unwrap();
        let labels = &pod["metadata"]["labels"];
        assert_eq!(pod["metadata"]["name"], "web-2");
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[POD_NAME], "web-2");
        assert_eq!(labels[POD_INDEX], "2");
        assert_eq!(labels[REVISION], revision.as_str());
        assert_eq!(pod["metadata"]["annotations"]["a"], "b");
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "StatefulSet");
        assert_eq!(owner["uid"], "u-1");
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
        assert_eq!(pod["spec"]["hostname"], "web-2");
        assert_eq!(pod["spec"]["subdomain"], "nginx");
        assert!(pod["spec"]["volumes"].is_null(), "no claims yet");
        let pod: Pod = serde_json::from_value(pod).unwrap();
        assert!(labels_match(&pod, 2));
        assert!(!labels_match(&pod, 3));
        assert_eq!(revision_of(&pod), revision);
    }
}
