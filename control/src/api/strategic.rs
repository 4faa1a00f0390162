//! Strategic merge patch: JSON merge patch, except that lists whose items
//! have a merge key (containers by name, ports by containerPort, ...) are
//! merged item by item instead of replaced, and the directives kubectl
//! writes into its patches are honoured: `$patch: delete | replace`,
//! `$retainKeys`, `$setElementOrder/<list>` and
//! `$deleteFromPrimitiveList/<list>`.
//!
//! Which fields merge, and by which key, is Kubernetes' API definition
//! (`x-kubernetes-patch-strategy` and `x-kubernetes-patch-merge-key`),
//! written down once in [`STRATEGIES`] by schema type and field. The same
//! table annotates the OpenAPI documents, so kubectl computes its apply
//! patches with exactly the rules this server applies them with; the patch
//! walks those schemas to know each field's type.

use serde_json::{Map, Value};

/// How a field is patched, beyond JSON merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A list of primitives merged as a set.
    Merge,
    /// A list of objects merged by this key.
    MergeKey(&'static str),
    /// As MergeKey, and each item honours `$retainKeys`.
    MergeKeyRetainKeys(&'static str),
    /// An object honouring `$retainKeys` (a union such as a strategy).
    RetainKeys,
}

impl Strategy {
    fn extension(self) -> &'static str {
        match self {
            Strategy::Merge | Strategy::MergeKey(_) => "merge",
            Strategy::MergeKeyRetainKeys(_) => "merge,retainKeys",
            Strategy::RetainKeys => "retainKeys",
        }
    }

    fn key(self) -> Option<&'static str> {
        match self {
            Strategy::MergeKey(key) | Strategy::MergeKeyRetainKeys(key) => Some(key),
            _ => None,
        }
    }
}

/// (schema type, field, strategy) for the types we serve.
pub const STRATEGIES: &[(&str, &str, Strategy)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        Strategy::Merge,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        Strategy::MergeKey("uid"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        Strategy::MergeKey("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        Strategy::MergeKey("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        Strategy::MergeKey("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        Strategy::MergeKeyRetainKeys("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        Strategy::MergeKey("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        Strategy::MergeKey("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        Strategy::MergeKey("topologyKey"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        Strategy::MergeKeyRetainKeys("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        Strategy::MergeKey("name"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        Strategy::MergeKey("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "env",
        Strategy::MergeKey("name"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        Strategy::MergeKey("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        Strategy::MergeKey("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        Strategy::MergeKey("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        Strategy::MergeKey("name"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        Strategy::MergeKey("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        Strategy::MergeKey("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        Strategy::MergeKey("type"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        Strategy::MergeKey("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        Strategy::MergeKey("ip"),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        Strategy::MergeKey("port"),
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        Strategy::MergeKey("type"),
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", Strategy::Merge),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        Strategy::MergeKey("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        Strategy::MergeKey("type"),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        Strategy::MergeKey("type"),
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        Strategy::RetainKeys,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        Strategy::MergeKey("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        Strategy::MergeKey("type"),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        Strategy::MergeKey("type"),
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        Strategy::MergeKey("type"),
    ),
];

fn strategy_of(type_name: &str, field: &str) -> Option<Strategy> {
    STRATEGIES
        .iter()
        .find(|(t, f, _)| *t == type_name && *f == field)
        .map(|(_, _, s)| *s)
}

/// Adds the patch extensions to the schemas they describe.
pub fn annotate(schemas: &mut Map<String, Value>) {
    for (type_name, field, strategy) in STRATEGIES {
        if let Some(property) = schemas
            .get_mut(*type_name)
            .and_then(|schema| schema.get_mut("properties"))
            .and_then(|properties| properties.get_mut(*field))
            .and_then(Value::as_object_mut)
        {
            property.insert(
                "x-kubernetes-patch-strategy".into(),
                strategy.extension().into(),
            );
            if let Some(key) = strategy.key() {
                property.insert("x-kubernetes-patch-merge-key".into(), key.into());
            }
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct PatchError(String);

/// The schemas a patch walks to know each field's type.
#[derive(Debug, Default)]
pub struct Schemas(pub Map<String, Value>);

/// The type a schema names directly, through `allOf`, or as list items.
fn referenced(schema: &Value) -> Option<&str> {
    let reference = schema
        .get("$ref")
        .or_else(|| {
            schema
                .get("allOf")
                .and_then(|a| a.get(0))
                .and_then(|r| r.get("$ref"))
        })
        .or_else(|| schema.get("items").and_then(|i| i.get("$ref")))?;
    reference.as_str()?.rsplit('/').next()
}

impl Schemas {
    fn field_type(&self, type_name: Option<&str>, field: &str) -> Option<String> {
        let property = self.0.get(type_name?)?.get("properties")?.get(field)?;
        referenced(property).map(str::to_owned)
    }

    /// Applies `patch` to `original`, an object of schema type `type_name`.
    pub fn apply(
        &self,
        type_name: &str,
        original: &Value,
        patch: &Value,
    ) -> Result<Value, PatchError> {
        let (Value::Object(original), Value::Object(patch)) = (original, patch) else {
            return Err(PatchError(
                "a strategic merge patch must be a JSON object".to_owned(),
            ));
        };
        self.merge_map(Some(type_name), original.clone(), patch)
            .map(Value::Object)
    }

    fn merge_map(
        &self,
        type_name: Option<&str>,
        mut original: Map<String, Value>,
        patch: &Map<String, Value>,
    ) -> Result<Map<String, Value>, PatchError> {
        match patch.get("$patch").and_then(Value::as_str) {
            Some("replace") => return Ok(strip_directives(patch)),
            Some("delete") => return Ok(Map::new()),
            Some(other) => return Err(PatchError(format!("unknown patch type: {other:?}"))),
            None => {}
        }
        for (key, value) in patch {
            if key.starts_with('$') {
                continue;
            }
            if value.is_null() {
                original.remove(key);
                continue;
            }
            let child = self.field_type(type_name, key);
            let strategy = type_name.and_then(|t| strategy_of(t, key));
            let merged = match (original.remove(key), value) {
                (Some(Value::Object(existing)), Value::Object(patch)) => {
                    Value::Object(self.merge_map(child.as_deref(), existing, patch)?)
                }
                (None, Value::Object(patch)) => {
                    Value::Object(self.merge_map(child.as_deref(), Map::new(), patch)?)
                }
                (existing, Value::Array(items)) => {
                    let existing = match existing {
                        Some(Value::Array(existing)) => existing,
                        _ => Vec::new(),
                    };
                    Value::Array(self.merge_list(
                        child.as_deref(),
                        key,
                        strategy,
                        existing,
                        items,
                    )?)
                }
                (_, other) => other.clone(),
            };
            original.insert(key.clone(), merged);
        }
        for (key, value) in patch {
            if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/")
                && let (Some(Value::Array(current)), Value::Array(remove)) =
                    (original.get_mut(list), value)
            {
                current.retain(|item| !remove.contains(item));
            }
            if let Some(list) = key.strip_prefix("$setElementOrder/")
                && let (Some(Value::Array(current)), Value::Array(order)) =
                    (original.get_mut(list), value)
            {
                let key = type_name
                    .and_then(|t| strategy_of(t, list))
                    .and_then(Strategy::key);
                reorder(current, order, key);
            }
        }
        if let Some(Value::Array(retain)) = patch.get("$retainKeys") {
            let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
            original.retain(|key, _| keep.contains(&key.as_str()));
        }
        Ok(original)
    }

    fn merge_list(
        &self,
        item_type: Option<&str>,
        field: &str,
        strategy: Option<Strategy>,
        mut original: Vec<Value>,
        patch: &[Value],
    ) -> Result<Vec<Value>, PatchError> {
        let key = match strategy {
            None | Some(Strategy::RetainKeys) => {
                return Ok(patch.iter().map(strip_value).collect());
            }
            Some(Strategy::Merge) => {
                for item in patch {
                    if !original.contains(item) {
                        original.push(item.clone());
                    }
                }
                return Ok(original);
            }
            Some(Strategy::MergeKey(key) | Strategy::MergeKeyRetainKeys(key)) => key,
        };
        if patch
            .iter()
            .any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace"))
        {
            return Ok(patch
                .iter()
                .filter(|item| item.get("$patch").is_none())
                .map(strip_value)
                .collect());
        }
        for item in patch {
            let Value::Object(item) = item else {
                return Err(PatchError(format!(
                    "{field}: items of a list merged by {key:?} must be objects"
                )));
            };
            let id = item.get(key).cloned().unwrap_or(Value::Null);
            let position = original
                .iter()
                .position(|existing| existing.get(key) == Some(&id));
            if item.get("$patch").and_then(Value::as_str) == Some("delete") {
                if let Some(position) = position {
                    original.remove(position);
                }
                continue;
            }
            match position {
                Some(position) => {
                    let existing = match original.remove(position) {
                        Value::Object(existing) => existing,
                        _ => Map::new(),
                    };
                    original.insert(
                        position,
                        Value::Object(self.merge_map(item_type, existing, item)?),
                    );
                }
                None => original.push(Value::Object(self.merge_map(
                    item_type,
                    Map::new(),
                    item,
                )?)),
            }
        }
        Ok(original)
    }
}

/// Orders `list` as `order` names its items (by `key`, or whole values for
/// primitives); items it does not name keep their relative order after.
fn reorder(list: &mut [Value], order: &[Value], key: Option<&str>) {
    let rank = |item: &Value| -> usize {
        order
            .iter()
            .position(|o| match key {
                Some(key) => o.get(key) == item.get(key),
                None => o == item,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

/// A patch value with its directives removed, for where it is taken whole.
fn strip_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip_directives(map)),
        Value::Array(items) => Value::Array(items.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

fn strip_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(key, value)| !key.starts_with('$') && !value.is_null())
        .map(|(key, value)| (key.clone(), strip_value(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use schemars::generate::SchemaSettings;
    use serde_json::json;

    use super::*;

    fn schemas() -> Schemas {
        let mut generator = SchemaSettings::openapi3().into_generator();
        generator.subschema_for::<k8s_openapi::api::apps::v1::Deployment>();
        generator.subschema_for::<k8s_openapi::api::core::v1::Service>();
        generator.subschema_for::<k8s_openapi::api::core::v1::Pod>();
        Schemas(generator.take_definitions(true))
    }

    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a"]},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
                "template": {"spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]},
                        {"name": "sidecar", "image": "busybox"}
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}]
                }}
            }
        })
    }

    #[test]
    fn containers_merge_by_name_and_ports_by_container_port() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2", "ports": [{"containerPort": 443}]}
        ]}}}});
        let merged = schemas().apply(DEPLOYMENT, &deployment(), &patch).unwrap();
        let containers = &merged["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(
            containers[0]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 443}])
        );
        assert_eq!(containers[0]["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(containers[1]["name"], "sidecar");
    }

    #[test]
    fn null_removes_and_patch_delete_removes_list_items() {
        let patch = json!({
            "metadata": {"labels": {"tier": null}},
            "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}
        });
        let merged = schemas().apply(DEPLOYMENT, &deployment(), &patch).unwrap();
        assert_eq!(merged["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn retain_keys_drops_what_the_patch_does_not_keep() {
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let merged = schemas().apply(DEPLOYMENT, &deployment(), &patch).unwrap();
        assert_eq!(merged["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn set_element_order_and_primitive_lists() {
        let patch = json!({
            "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
                "containers": [{"name": "web", "image": "nginx:3"}]
            }}}
        });
        let merged = schemas().apply(DEPLOYMENT, &deployment(), &patch).unwrap();
        assert_eq!(merged["metadata"]["finalizers"], json!(["b"]));
        let names: Vec<&str> = merged["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["sidecar", "web"]);
    }

    #[test]
    fn lists_without_a_merge_key_are_replaced() {
        let pod = json!({"spec": {"containers": [{"name": "c", "args": ["a", "b"]}], "tolerations": [{"key": "x"}]}});
        let patch = json!({"spec": {"containers": [{"name": "c", "args": ["z"]}], "tolerations": [{"key": "y"}]}});
        let merged = schemas()
            .apply("io.k8s.api.core.v1.Pod", &pod, &patch)
            .unwrap();
        assert_eq!(merged["spec"]["containers"][0]["args"], json!(["z"]));
        assert_eq!(merged["spec"]["tolerations"], json!([{"key": "y"}]));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let service = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
        let patch = json!({"spec": {"ports": [{"port": 443, "name": "https"}]}});
        let merged = schemas()
            .apply("io.k8s.api.core.v1.Service", &service, &patch)
            .unwrap();
        assert_eq!(merged["spec"]["ports"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn every_strategy_names_a_real_field() {
        let mut generator = SchemaSettings::openapi3().into_generator();
        for resource in super::super::resources() {
            resource.add_schema(&mut generator);
        }
        let mut schemas = generator.take_definitions(true);
        annotate(&mut schemas);
        for (type_name, field, _) in STRATEGIES {
            let property = &schemas[*type_name]["properties"][*field];
            assert!(
                property["x-kubernetes-patch-strategy"].is_string(),
                "{type_name}.{field}"
            );
        }
    }
}
