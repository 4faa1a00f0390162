//! The simpler core/v1 kinds: Namespaces, ConfigMaps, Secrets,
//! ServiceAccounts, Events and Endpoints.

use k8s_openapi::{
    ByteString,
    api::core::v1::{
        ConfigMap, Endpoints, Event, Namespace, NamespaceSpec, NamespaceStatus, Secret,
        ServiceAccount,
    },
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, Time},
    jiff,
};
use serde_json::{Value, json};

use crate::registry::{
    Deletion, FieldError, Kind, NameRule, ResourceInfo, Subresource, status,
    table::{AGE, Column, NAME, age, joined_or_none},
};

#[derive(Debug, Clone)]
pub struct Namespaces;

impl Kind for Namespaces {
    type Object = Namespace;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        categories: &[],
        namespaced: false,
        subresources: &[
            status("", "v1", "Namespace"),
            Subresource {
                name: "finalize",
                kind: "Namespace",
                group: "",
                version: "v1",
                verbs: &["update"],
            },
        ],
    };
    const NAMES: NameRule = NameRule::Label;

    fn default(&self, namespace: &mut Namespace) {
        let spec = namespace.spec.get_or_insert_with(NamespaceSpec::default);
        spec.finalizers
            .get_or_insert_with(|| vec!["kubernetes".to_owned()]);
    }

    fn initial_status(&self, namespace: &mut Namespace) {
        namespace.status = Some(NamespaceStatus {
            phase: Some("Active".to_owned()),
            conditions: None,
        });
    }

    fn field(&self, namespace: &Namespace, field: &str) -> Option<String> {
        (field == "status.phase").then(|| {
            namespace
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default()
        })
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new("Status", "string", "The status of the namespace"),
            AGE,
        ]
    }

    fn cells(&self, namespace: &Namespace, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            json!(namespace.metadata.name),
            json!(
                namespace
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default()
            ),
            age(namespace.metadata.creation_timestamp.as_ref(), now),
        ]
    }

    /// A namespace goes Terminating until the namespace controller has
    /// emptied it and removed its `kubernetes` finalizer.
    fn deletion(&self, namespace: &Namespace, _options: &DeleteOptions) -> Deletion {
        let finalizers = namespace.spec.as_ref().and_then(|s| s.finalizers.as_ref());
        if finalizers.is_some_and(|f| !f.is_empty()) {
            Deletion::Graceful(0)
        } else {
            Deletion::Now
        }
    }

    fn on_deleting(&self, namespace: &mut Namespace) {
        namespace.status.get_or_insert_with(Default::default).phase =
            Some("Terminating".to_owned());
    }
}

#[derive(Debug, Clone)]
pub struct ConfigMaps;

/// Keys of a ConfigMap's or Secret's data.
fn data_keys<'a>(keys: impl Iterator<Item = &'a String>, field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for key in keys {
        let valid = !key.is_empty()
            && key.len() <= 253
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            errors.push(FieldError::invalid(
                field,
                key,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ));
        }
    }
    errors
}

impl Kind for ConfigMaps {
    type Object = ConfigMap;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        categories: &[],
        namespaced: true,
        subresources: &[],
    };

    fn validate(&self, map: &ConfigMap) -> Vec<FieldError> {
        let mut errors = data_keys(map.data.iter().flatten().map(|(k, _)| k), "data");
        errors.extend(data_keys(
            map.binary_data.iter().flatten().map(|(k, _)| k),
            "binaryData",
        ));
        for key in map.data.iter().flatten().map(|(k, _)| k) {
            if map
                .binary_data
                .as_ref()
                .is_some_and(|b| b.contains_key(key))
            {
                errors.push(FieldError::invalid(
                    "data",
                    key,
                    "duplicate of key present in binaryData",
                ));
            }
        }
        errors
    }

    fn validate_update(&self, new: &ConfigMap, old: &ConfigMap) -> Vec<FieldError> {
        immutable_data(
            old.immutable,
            new.data != old.data || new.binary_data != old.binary_data,
        )
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new("Data", "string", "Data contains the configuration data."),
            AGE,
        ]
    }

    fn cells(&self, map: &ConfigMap, now: jiff::Timestamp) -> Vec<Value> {
        let count = map.data.as_ref().map_or(0, |d| d.len())
            + map.binary_data.as_ref().map_or(0, |d| d.len());
        vec![
            json!(map.metadata.name),
            json!(count),
            age(map.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

fn immutable_data(immutable: Option<bool>, data_changed: bool) -> Vec<FieldError> {
    if immutable == Some(true) && data_changed {
        vec![FieldError::forbidden(
            "data",
            "field is immutable when `immutable` is set",
        )]
    } else {
        Vec::new()
    }
}

#[derive(Debug, Clone)]
pub struct Secrets;

impl Kind for Secrets {
    type Object = Secret;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        categories: &[],
        namespaced: true,
        subresources: &[],
    };

    /// stringData is a write-only convenience: merged into data, then gone.
    fn default(&self, secret: &mut Secret) {
        secret.type_.get_or_insert_with(|| "Opaque".to_owned());
        if let Some(strings) = secret.string_data.take() {
            let data = secret.data.get_or_insert_with(Default::default);
            for (key, value) in strings {
                data.insert(key, ByteString(value.into_bytes()));
            }
        }
    }

    fn validate(&self, secret: &Secret) -> Vec<FieldError> {
        data_keys(secret.data.iter().flatten().map(|(k, _)| k), "data")
    }

    fn validate_update(&self, new: &Secret, old: &Secret) -> Vec<FieldError> {
        let mut errors = immutable_data(old.immutable, new.data != old.data);
        if new.type_ != old.type_ {
            errors.push(FieldError::immutable(
                "type",
                new.type_.clone().unwrap_or_default(),
            ));
        }
        errors
    }

    fn field(&self, secret: &Secret, field: &str) -> Option<String> {
        (field == "type").then(|| secret.type_.clone().unwrap_or_default())
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new("Type", "string", "The type of the secret"),
            Column::new("Data", "string", "The number of entries in the secret data"),
            AGE,
        ]
    }

    fn cells(&self, secret: &Secret, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            json!(secret.metadata.name),
            json!(secret.type_.clone().unwrap_or_default()),
            json!(secret.data.as_ref().map_or(0, |d| d.len())),
            age(secret.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct ServiceAccounts;

impl Kind for ServiceAccounts {
    type Object = ServiceAccount;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        categories: &[],
        namespaced: true,
        subresources: &[],
    };

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new(
                "Secrets",
                "string",
                "Secrets is the list of secrets allowed to be used by pods running using this ServiceAccount.",
            ),
            AGE,
        ]
    }

    fn cells(&self, account: &ServiceAccount, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            json!(account.metadata.name),
            json!(account.secrets.as_ref().map_or(0, Vec::len)),
            age(account.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct Events;

impl Kind for Events {
    type Object = Event;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        subresources: &[],
    };

    fn validate(&self, event: &Event) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let involved = &event.involved_object;
        if involved.kind.as_deref().is_none_or(str::is_empty) {
            errors.push(FieldError::required("involvedObject.kind"));
        }
        if let (Some(object_ns), Some(ns)) = (
            involved.namespace.as_deref(),
            event.metadata.namespace.as_deref(),
        ) && !object_ns.is_empty()
            && object_ns != ns
        {
            errors.push(FieldError::invalid(
                "involvedObject.namespace",
                object_ns,
                "does not match event.namespace",
            ));
        }
        errors
    }

    fn field(&self, event: &Event, field: &str) -> Option<String> {
        let object = &event.involved_object;
        let value = match field {
            "involvedObject.kind" => object.kind.clone(),
            "involvedObject.namespace" => object.namespace.clone(),
            "involvedObject.name" => object.name.clone(),
            "involvedObject.uid" => object.uid.clone(),
            "involvedObject.apiVersion" => object.api_version.clone(),
            "involvedObject.resourceVersion" => object.resource_version.clone(),
            "involvedObject.fieldPath" => object.field_path.clone(),
            "reason" => event.reason.clone(),
            "reportingComponent" => event.reporting_component.clone(),
            "source" => event.source.as_ref().and_then(|s| s.component.clone()),
            "type" => event.type_.clone(),
            _ => return None,
        };
        Some(value.unwrap_or_default())
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            Column::new("Last Seen", "string", "Time when last this event was seen"),
            Column::new(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future.",
            ),
            Column::new(
                "Reason",
                "string",
                "Reason is why the action was taken. It is human-readable.",
            ),
            Column::new("Object", "string", "The object this Event is about."),
            Column::new("Subobject", "string", "The subobject this Event is about.").wide(),
            Column::new("Source", "string", "The component reporting this event.").wide(),
            Column::new(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
            ),
            Column::new(
                "First Seen",
                "string",
                "Time when this Event was first observed.",
            )
            .wide(),
            Column::new(
                "Count",
                "string",
                "The number of times this event has occurred.",
            )
            .wide(),
            Column {
                format: "name",
                ..Column::new("Name", "string", "Name must be unique within a namespace.")
            }
            .wide(),
        ]
    }

    fn cells(&self, event: &Event, now: jiff::Timestamp) -> Vec<Value> {
        let first = event
            .first_timestamp
            .clone()
            .or_else(|| event.event_time.as_ref().map(|t| Time(t.0)));
        let last = event.last_timestamp.clone().or_else(|| first.clone());
        let object = &event.involved_object;
        let source = event.source.as_ref();
        let source = [
            source.and_then(|s| s.component.clone()),
            source.and_then(|s| s.host.clone()),
        ]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
        vec![
            age(last.as_ref(), now),
            json!(event.type_.clone().unwrap_or_default()),
            json!(event.reason.clone().unwrap_or_default()),
            json!(format!(
                "{}/{}",
                object.kind.clone().unwrap_or_default().to_lowercase(),
                object.name.clone().unwrap_or_default()
            )),
            json!(object.field_path.clone().unwrap_or_default()),
            json!(source),
            json!(event.message.clone().unwrap_or_default()),
            age(first.as_ref(), now),
            json!(event.count.unwrap_or(1)),
            json!(event.metadata.name),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct EndpointsKind;

impl Kind for EndpointsKind {
    type Object = Endpoints;

    const INFO: ResourceInfo = ResourceInfo {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        categories: &[],
        namespaced: true,
        subresources: &[],
    };

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME,
            Column::new(
                "Endpoints",
                "string",
                "Endpoints is the list of endpoints in the cluster.",
            ),
            AGE,
        ]
    }

    fn cells(&self, endpoints: &Endpoints, now: jiff::Timestamp) -> Vec<Value> {
        let mut shown = Vec::new();
        for subset in endpoints.subsets.iter().flatten() {
            for address in subset.addresses.iter().flatten() {
                match subset.ports.as_deref() {
                    Some(ports) if !ports.is_empty() => {
                        shown.extend(ports.iter().map(|p| format!("{}:{}", address.ip, p.port)))
                    }
                    _ => shown.push(address.ip.clone()),
                }
            }
        }
        let more = shown.len().saturating_sub(3);
        shown.truncate(3);
        let mut cell = joined_or_none(shown);
        if more > 0
            && let Value::String(text) = &mut cell
        {
            text.push_str(&format!(" + {more} more..."));
        }
        vec![
            json!(endpoints.metadata.name),
            cell,
            age(endpoints.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}
