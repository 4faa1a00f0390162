//! OpenAPI v3: a document per group version, generated at start from the
//! same k8s-openapi types the API decodes (their JSON schemas, with the
//! descriptions `kubectl explain` prints), plus every path and operation
//! we serve. kubectl reads these to decide it may ask for server-side field
//! validation (the `fieldValidation` parameter of each PATCH operation),
//! and `kubectl explain` finds a kind's schema by its
//! `x-kubernetes-group-version-kind`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    openapi_v2,
    resource::ResourceApi,
    strategic::{Schemas, annotate},
};
use crate::registry::ResourceInfo;

/// The generated documents, by path (`api/v1`, `apis/apps/v1`).
#[derive(Debug)]
pub struct OpenApi {
    root: Vec<u8>,
    documents: BTreeMap<String, Vec<u8>>,
    v2_json: Vec<u8>,
    v2_protobuf: Vec<u8>,
}

/// The documents, and every schema in them for strategic merge patches.
pub fn build(resources: &[Arc<dyn ResourceApi>]) -> (OpenApi, Schemas) {
    OpenApi::build(resources)
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([{ "group": group, "version": version, "kind": kind }])
}

fn string_param(name: &str, location: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": location,
        "description": description,
        "required": location == "path",
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn write_params() -> Vec<Value> {
    vec![
        string_param(
            "dryRun",
            "query",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
        ),
        string_param(
            "fieldManager",
            "query",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
        ),
        string_param(
            "fieldValidation",
            "query",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    [
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
        "watch",
        "allowWatchBookmarks",
        "timeoutSeconds",
        "sendInitialEvents",
    ]
    .iter()
    .map(|name| {
        string_param(
            name,
            "query",
            "See the Kubernetes API conventions for list and watch.",
        )
    })
    .collect()
}

fn operation(
    action: &str,
    id: String,
    kind: Value,
    schema: &str,
    params: Vec<Value>,
    body: Option<&[&str]>,
) -> Value {
    let reference = json!({ "$ref": format!("#/components/schemas/{schema}") });
    let mut op = json!({
        "operationId": id,
        "parameters": params,
        "responses": {
            "200": { "description": "OK", "content": { "application/json": { "schema": reference.clone() } } },
            "401": { "description": "Unauthorized" },
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": kind[0],
    });
    if let Some(types) = body {
        let content: Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), json!({ "schema": reference.clone() })))
            .collect();
        op["requestBody"] = json!({ "content": content, "required": true });
    }
    op
}

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// The paths of one resource.
fn paths_of(info: &ResourceInfo, schema: &str, paths: &mut Map<String, Value>) {
    let root = info.api_root();
    let kind = gvk(info.group, info.version, info.kind);
    let scoped = if info.namespaced {
        format!("{root}/namespaces/{{namespace}}/{}", info.plural)
    } else {
        format!("{root}/{}", info.plural)
    };
    let scope_params = || {
        if info.namespaced {
            vec![string_param(
                "namespace",
                "path",
                "object name and auth scope, such as for teams and projects",
            )]
        } else {
            Vec::new()
        }
    };
    let id = |verb: &str, suffix: &str| {
        format!(
            "{verb}{}{}{suffix}",
            if info.namespaced { "Namespaced" } else { "" },
            info.kind
        )
    };
    let with = |mut base: Vec<Value>, more: Vec<Value>| {
        base.extend(more);
        base
    };

    paths.insert(
        scoped.clone(),
        json!({
            "get": operation("list", id("list", ""), kind.clone(), schema, with(scope_params(), list_params()), None),
            "post": operation("post", id("create", ""), kind.clone(), schema, with(scope_params(), write_params()), Some(&["application/json", "application/yaml"])),
            "delete": operation("deletecollection", id("deleteCollection", ""), kind.clone(), schema, with(scope_params(), list_params()), None),
        }),
    );
    if info.namespaced {
        paths.insert(
            format!("{root}/{}", info.plural),
            json!({ "get": operation("list", format!("list{}ForAllNamespaces", info.kind), kind.clone(), schema, list_params(), None) }),
        );
    }
    let item_params = || {
        with(
            scope_params(),
            vec![string_param("name", "path", "name of the object")],
        )
    };
    let mut patch_params = with(item_params(), write_params());
    patch_params.push(string_param(
        "force",
        "query",
        "Force is going to \"force\" Apply requests.",
    ));
    paths.insert(
        format!("{scoped}/{{name}}"),
        json!({
            "get": operation("get", id("read", ""), kind.clone(), schema, item_params(), None),
            "put": operation("put", id("replace", ""), kind.clone(), schema, with(item_params(), write_params()), Some(&["application/json", "application/yaml"])),
            "patch": operation("patch", id("patch", ""), kind.clone(), schema, patch_params.clone(), Some(PATCH_TYPES)),
            "delete": operation("delete", id("delete", ""), kind.clone(), schema, item_params(), None),
        }),
    );
    for sub in info
        .subresources
        .iter()
        .filter(|s| s.name == "status" || s.name == "scale")
    {
        let (sub_kind, sub_schema) = if sub.name == "scale" {
            (
                gvk("autoscaling", "v1", "Scale"),
                "io.k8s.api.autoscaling.v1.Scale",
            )
        } else {
            (kind.clone(), schema)
        };
        let suffix = if sub.name == "scale" {
            "Scale"
        } else {
            "Status"
        };
        paths.insert(
            format!("{scoped}/{{name}}/{}", sub.name),
            json!({
                "get": operation("get", id("read", suffix), sub_kind.clone(), sub_schema, item_params(), None),
                "put": operation("put", id("replace", suffix), sub_kind.clone(), sub_schema, with(item_params(), write_params()), Some(&["application/json"])),
                "patch": operation("patch", id("patch", suffix), sub_kind, sub_schema, patch_params.clone(), Some(PATCH_TYPES)),
            }),
        );
    }
}

impl OpenApi {
    fn build(resources: &[Arc<dyn ResourceApi>]) -> (Self, Schemas) {
        let mut groups: BTreeMap<String, Vec<&Arc<dyn ResourceApi>>> = BTreeMap::new();
        for resource in resources {
            let info = resource.info();
            let path = if info.group.is_empty() {
                "api/v1".to_owned()
            } else {
                format!("apis/{}/{}", info.group, info.version)
            };
            groups.entry(path).or_default().push(resource);
        }
        let mut documents = BTreeMap::new();
        let mut root = Map::new();
        let mut all = Map::new();
        let mut v3 = Vec::new();
        for (path, members) in groups {
            let mut generator = SchemaSettings::openapi3().into_generator();
            let mut paths = Map::new();
            let mut kinds = Vec::new();
            for resource in &members {
                let schema = resource.add_schema(&mut generator);
                let info = resource.info();
                if info.has_subresource("scale") {
                    generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
                }
                paths_of(info, &schema, &mut paths);
                kinds.push((schema, info));
            }
            let mut schemas = generator.take_definitions(true);
            for (schema, info) in kinds {
                if let Some(Value::Object(definition)) = schemas.get_mut(&schema) {
                    definition.insert(
                        "x-kubernetes-group-version-kind".into(),
                        gvk(info.group, info.version, info.kind),
                    );
                }
            }
            if let Some(Value::Object(scale)) = schemas
                .get_mut(&k8s_openapi::api::autoscaling::v1::Scale::schema_name().to_string())
            {
                scale.insert(
                    "x-kubernetes-group-version-kind".into(),
                    gvk("autoscaling", "v1", "Scale"),
                );
            }
            annotate(&mut schemas);
            all.extend(schemas.iter().map(|(k, v)| (k.clone(), v.clone())));
            let document = json!({
                "openapi": "3.0.0",
                "info": { "title": "Kubernetes", "version": format!("v1.{}.0", super::discovery::KUBERNETES_MINOR) },
                "paths": paths,
                "components": { "schemas": schemas },
            });
            let bytes = serde_json::to_vec(&document).unwrap_or_default();
            v3.push(document);
            let hash = hex::encode(Sha256::digest(&bytes)).to_uppercase();
            root.insert(
                path.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}") }),
            );
            documents.insert(path, bytes);
        }
        let root = serde_json::to_vec(&json!({ "paths": root })).unwrap_or_default();
        let v2 = openapi_v2::from_v3(&v3, &format!("v1.{}.0", super::discovery::KUBERNETES_MINOR));
        let v2_json = serde_json::to_vec(&v2).unwrap_or_default();
        let v2_protobuf = openapi_v2::to_protobuf(&v2);
        (
            Self {
                root,
                documents,
                v2_json,
                v2_protobuf,
            },
            Schemas(all),
        )
    }

    /// GET /openapi/v3
    pub fn root(&self) -> Response {
        json_bytes(self.root.clone())
    }

    /// GET /openapi/v2: protobuf when asked for (as kubectl does), JSON otherwise.
    pub fn v2(&self, headers: &axum::http::HeaderMap) -> Response {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if accept.contains("protobuf") {
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                )],
                self.v2_protobuf.clone(),
            )
                .into_response()
        } else {
            json_bytes(self.v2_json.clone())
        }
    }

    /// GET /openapi/v3/<path>
    pub fn document(&self, path: &str) -> Option<Response> {
        self.documents
            .get(path.trim_matches('/'))
            .map(|bytes| json_bytes(bytes.clone()))
    }
}

fn json_bytes(bytes: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_name_kinds_and_accept_field_validation() {
        let (api, _) = build(&super::super::resources());
        let root: Value = serde_json::from_slice(&api.root).unwrap();
        assert!(
            root["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/apps/v1?hash=")
        );
        let core: Value = serde_json::from_slice(&api.documents["api/v1"]).unwrap();
        let pod = &core["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(
            core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
                ["description"]
                .is_string()
        );
        let patch = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        let apps: Value = serde_json::from_slice(&api.documents["apis/apps/v1"]).unwrap();
        assert!(
            apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"]
                .is_object()
        );
        let containers = &core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]
            ["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    }
}
