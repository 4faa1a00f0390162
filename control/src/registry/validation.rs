//! The validators every kind shares (names, labels, annotations), worded
//! as Kubernetes words them: kubectl users and tools match on these
//! messages.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use crate::errors::{BadValue, ErrorKind, FieldError};

const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MESSAGE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_label_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
}

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Problems with `value` as an RFC 1123 label (e.g. a namespace name).
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 63 {
        problems.push("must be no more than 63 characters".to_owned());
    }
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.iter().all(|&c| is_label_char(c))
        && is_alnum_lower(bytes[0])
        && is_alnum_lower(bytes[bytes.len() - 1]);
    if !valid {
        problems.push(DNS1123_LABEL_MESSAGE.to_owned());
    }
    problems
}

/// Problems with `value` as an RFC 1123 subdomain (most object names).
pub fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 253 {
        problems.push("must be no more than 253 characters".to_owned());
    }
    let valid = !value.is_empty()
        && value.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter().all(|&c| is_label_char(c))
                && is_alnum_lower(b[0])
                && is_alnum_lower(b[b.len() - 1])
        });
    if !valid {
        problems.push(DNS1123_SUBDOMAIN_MESSAGE.to_owned());
    }
    problems
}

/// Problems with `value` as an RFC 1035 label (Service names).
pub fn dns1035_label(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 63 {
        problems.push("must be no more than 63 characters".to_owned());
    }
    let b = value.as_bytes();
    let valid = !b.is_empty()
        && b.iter().all(|&c| is_label_char(c))
        && b[0].is_ascii_lowercase()
        && is_alnum_lower(b[b.len() - 1]);
    if !valid {
        problems.push(DNS1035_LABEL_MESSAGE.to_owned());
    }
    problems
}

fn qualified_name_part(part: &str) -> bool {
    let b = part.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Problems with `key` as a label or annotation key: `[prefix/]name`.
pub fn qualified_name(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            problems.push("prefix part must be non-empty".to_owned());
        } else {
            problems.extend(
                dns1123_subdomain(prefix)
                    .into_iter()
                    .map(|p| format!("prefix part {p}")),
            );
        }
    }
    if name.len() > 63 {
        problems.push("name part must be no more than 63 characters".to_owned());
    }
    if !qualified_name_part(name) && name.len() <= 63 {
        problems.push(QUALIFIED_NAME_MESSAGE.to_owned());
    }
    problems
}

/// Problems with `value` as a label value.
pub fn label_value(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 63 {
        problems.push("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !qualified_name_part(value) && value.len() <= 63 {
        problems.push(LABEL_VALUE_MESSAGE.to_owned());
    }
    problems
}

/// Which names a kind accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Subdomain,
    Label,
    Dns1035,
}

impl NameRule {
    pub fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => dns1123_subdomain(name),
            NameRule::Label => dns1123_label(name),
            NameRule::Dns1035 => dns1035_label(name),
        }
    }
}

/// Total size of annotations Kubernetes allows.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// What every object's metadata must satisfy.
pub fn object_meta(meta: &ObjectMeta, names: NameRule, namespaced: bool) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match meta.name.as_deref() {
        None | Some("") => errors.push(
            FieldError::required("metadata.name").with_message("name or generateName is required"),
        ),
        Some(name) => errors.extend(
            names
                .check(name)
                .into_iter()
                .map(|m| FieldError::invalid("metadata.name", name, m)),
        ),
    }
    if namespaced {
        match meta.namespace.as_deref() {
            None | Some("") => errors.push(FieldError::required("metadata.namespace")),
            Some(ns) => errors.extend(
                dns1123_label(ns)
                    .into_iter()
                    .map(|m| FieldError::invalid("metadata.namespace", ns, m)),
            ),
        }
    } else if meta.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
        errors.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    errors.extend(labels(meta.labels.as_ref(), "metadata.labels"));
    if let Some(annotations) = &meta.annotations {
        let mut total = 0;
        for (key, value) in annotations {
            total += key.len() + value.len();
            errors.extend(
                qualified_name(key)
                    .into_iter()
                    .map(|m| FieldError::invalid("metadata.annotations", key, m)),
            );
        }
        if total > MAX_ANNOTATIONS_BYTES {
            errors.push(FieldError::too_long(
                "metadata.annotations",
                MAX_ANNOTATIONS_BYTES,
            ));
        }
    }
    errors
}

/// Label keys and values under `field`.
pub fn labels(labels: Option<&BTreeMap<String, String>>, field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (key, value) in labels.into_iter().flatten() {
        errors.extend(
            qualified_name(key)
                .into_iter()
                .map(|m| FieldError::invalid(field, key, m)),
        );
        errors.extend(
            label_value(value)
                .into_iter()
                .map(|m| FieldError::invalid(field, value, m)),
        );
    }
    errors
}

impl FieldError {
    fn with_message(mut self, message: &str) -> Self {
        self.message = message.to_owned();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123_and_1035() {
        assert!(dns1123_subdomain("web-1.example").is_empty());
        assert!(!dns1123_subdomain("Web").is_empty());
        assert!(!dns1123_subdomain("-web").is_empty());
        assert!(!dns1123_subdomain("web..x").is_empty());
        assert!(!dns1123_subdomain(&"a".repeat(254)).is_empty());
        assert!(dns1123_label("kube-system").is_empty());
        assert!(!dns1123_label("a.b").is_empty());
        assert_eq!(
            dns1123_label(&"a".repeat(64))[0],
            "must be no more than 63 characters"
        );
        assert!(dns1035_label("web").is_empty());
        assert!(!dns1035_label("1web").is_empty());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(qualified_name("app").is_empty());
        assert!(!qualified_name("/app").is_empty());
        assert!(!qualified_name("app!").is_empty());
        assert!(label_value("").is_empty());
        assert!(label_value("My_Value.1").is_empty());
        assert!(!label_value("-x").is_empty());
    }

    #[test]
    fn messages_read_as_kubernetes_prints_them() {
        assert_eq!(
            FieldError::required("spec.containers").to_string(),
            "spec.containers: Required value"
        );
        assert_eq!(
            FieldError::not_supported(
                "spec.restartPolicy",
                "Sometimes",
                &["Always", "OnFailure", "Never"]
            )
            .to_string(),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
        );
        assert_eq!(
            FieldError::immutable("spec.selector", "{}").to_string(),
            "spec.selector: Invalid value: \"{}\": field is immutable"
        );
        assert_eq!(
            FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0")
                .to_string(),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn metadata_needs_a_valid_name_and_a_namespace_when_namespaced() {
        let meta = ObjectMeta {
            name: Some("Bad_Name".into()),
            ..Default::default()
        };
        let errors = object_meta(&meta, NameRule::Subdomain, true);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "metadata.namespace"]);
        let cluster = ObjectMeta {
            name: Some("n1".into()),
            namespace: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            object_meta(&cluster, NameRule::Subdomain, false)[0].kind,
            ErrorKind::Forbidden
        );
    }
}
