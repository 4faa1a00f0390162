//! OpenAPI v2 (Swagger 2.0), for kubectl releases before 1.28: they
//! validate and explain with /openapi/v2, which they read only as protobuf
//! (the `openapi.v2.Document` message of google/gnostic). The document is
//! derived from the v3 ones, so both describe the same API; the protobuf is
//! written by the small encoder below, for the fields kubectl reads.

use serde_json::{Map, Value, json};

/// The Swagger 2.0 document of all the v3 `documents` (JSON).
pub fn from_v3(documents: &[Value], version: &str) -> Value {
    let mut definitions = Map::new();
    let mut paths = Map::new();
    for document in documents {
        for (name, schema) in document["components"]["schemas"]
            .as_object()
            .into_iter()
            .flatten()
        {
            definitions.insert(name.clone(), schema_v2(schema));
        }
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            let mut converted = Map::new();
            for (method, operation) in item.as_object().into_iter().flatten() {
                converted.insert(method.clone(), operation_v2(operation));
            }
            paths.insert(path.clone(), Value::Object(converted));
        }
    }
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": version },
        "paths": paths,
        "definitions": definitions,
    })
}

/// A v3 schema in v2 form: references into #/definitions, and a lone
/// `allOf` reference (v3's way to describe a reference) made direct.
fn schema_v2(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                match key.as_str() {
                    "$ref" => {
                        let name = value
                            .as_str()
                            .unwrap_or_default()
                            .rsplit('/')
                            .next()
                            .unwrap_or_default();
                        out.insert(key.clone(), json!(format!("#/definitions/{name}")));
                    }
                    "allOf"
                        if value
                            .as_array()
                            .is_some_and(|a| a.len() == 1 && a[0].get("$ref").is_some()) =>
                    {
                        if let Value::Object(reference) = schema_v2(&value[0]) {
                            out.extend(reference);
                        }
                    }
                    "properties" => {
                        let properties: Map<String, Value> = value
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(name, property)| (name.clone(), schema_v2(property)))
                            .collect();
                        out.insert(key.clone(), Value::Object(properties));
                    }
                    _ => {
                        out.insert(key.clone(), schema_v2(value));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(schema_v2).collect()),
        other => other.clone(),
    }
}

fn operation_v2(operation: &Value) -> Value {
    let mut parameters: Vec<Value> = operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            json!({
                "name": p["name"], "in": p["in"], "description": p["description"],
                "required": p["required"], "type": "string", "uniqueItems": true,
            })
        })
        .collect();
    if let Some(schema) = operation["requestBody"]["content"]
        .as_object()
        .and_then(|c| c.values().next())
    {
        parameters.push(json!({ "name": "body", "in": "body", "required": true, "schema": schema_v2(&schema["schema"]) }));
    }
    let response_schema =
        schema_v2(&operation["responses"]["200"]["content"]["application/json"]["schema"]);
    json!({
        "operationId": operation["operationId"],
        "parameters": parameters,
        "responses": { "200": { "description": "OK", "schema": response_schema }, "401": { "description": "Unauthorized" } },
        "x-kubernetes-action": operation["x-kubernetes-action"],
        "x-kubernetes-group-version-kind": operation["x-kubernetes-group-version-kind"],
    })
}

/// Protobuf wire format: what an `openapi.v2.Document` needs.
#[derive(Debug, Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.varint(u64::from(field) << 3 | 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, text: &str) {
        if !text.is_empty() {
            self.bytes(field, text.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, value: bool) {
        if value {
            self.varint(u64::from(field) << 3);
            self.varint(1);
        }
    }

    fn message(&mut self, field: u32, build: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        build(&mut inner);
        self.bytes(field, &inner.0);
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// `x-...` extensions as NamedAny messages, their values in YAML.
fn extensions(writer: &mut Writer, field: u32, object: &Map<String, Value>) {
    for (name, value) in object
        .iter()
        .filter(|(k, v)| k.starts_with("x-") && !v.is_null())
    {
        let yaml = serde_yaml::to_string(value).unwrap_or_default();
        writer.message(field, |named| {
            named.string(1, name);
            named.message(2, |any| any.string(2, &yaml));
        });
    }
}

fn encode_schema(writer: &mut Writer, schema: &Value) {
    let Some(object) = schema.as_object() else {
        return;
    };
    writer.string(1, text(&schema["$ref"]));
    writer.string(2, text(&schema["format"]));
    writer.string(4, text(&schema["description"]));
    for required in schema["required"].as_array().into_iter().flatten() {
        writer.string(19, text(required));
    }
    match &schema["additionalProperties"] {
        Value::Object(_) => writer.message(21, |item| {
            item.message(1, |s| encode_schema(s, &schema["additionalProperties"]))
        }),
        Value::Bool(allowed) => writer.message(21, |item| item.boolean(2, *allowed)),
        _ => {}
    }
    if let Some(kind) = schema["type"].as_str() {
        writer.message(22, |item| item.string(1, kind));
    }
    if schema["items"].is_object() {
        writer.message(23, |items| {
            items.message(1, |s| encode_schema(s, &schema["items"]))
        });
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        writer.message(24, |s| encode_schema(s, part));
    }
    if let Some(properties) = schema["properties"].as_object() {
        writer.message(25, |props| {
            for (name, property) in properties {
                props.message(1, |named| {
                    named.string(1, name);
                    named.message(2, |s| encode_schema(s, property));
                });
            }
        });
    }
    extensions(writer, 31, object);
}

fn encode_parameter(writer: &mut Writer, parameter: &Value) {
    writer.message(1, |parameter_message| {
        if parameter["in"] == "body" {
            parameter_message.message(1, |body| {
                body.string(2, text(&parameter["name"]));
                body.string(3, "body");
                body.boolean(4, parameter["required"].as_bool().unwrap_or(false));
                body.message(5, |s| encode_schema(s, &parameter["schema"]));
            });
            return;
        }
        parameter_message.message(2, |non_body| {
            let (which, type_field) = if parameter["in"] == "path" {
                (4, 5)
            } else {
                (3, 6)
            };
            non_body.message(which, |sub| {
                sub.boolean(1, parameter["required"].as_bool().unwrap_or(false));
                sub.string(2, text(&parameter["in"]));
                sub.string(3, text(&parameter["description"]));
                sub.string(4, text(&parameter["name"]));
                sub.string(type_field, "string");
            });
        });
    });
}

fn encode_operation(writer: &mut Writer, operation: &Value) {
    writer.string(5, text(&operation["operationId"]));
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        writer.message(8, |item| encode_parameter(item, parameter));
    }
    writer.message(9, |responses| {
        for (code, response) in operation["responses"].as_object().into_iter().flatten() {
            responses.message(1, |named| {
                named.string(1, code);
                named.message(2, |value| {
                    value.message(1, |r| {
                        r.string(1, text(&response["description"]));
                        if response["schema"].is_object() {
                            r.message(2, |item| {
                                item.message(1, |s| encode_schema(s, &response["schema"]))
                            });
                        }
                    });
                });
            });
        }
    });
    if let Some(object) = operation.as_object() {
        extensions(writer, 13, object);
    }
}

/// `document` (Swagger 2.0 JSON) as an `openapi.v2.Document` message.
pub fn to_protobuf(document: &Value) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.string(1, text(&document["swagger"]));
    writer.message(2, |info| {
        info.string(1, text(&document["info"]["title"]));
        info.string(2, text(&document["info"]["version"]));
    });
    writer.message(8, |paths| {
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            paths.message(2, |named| {
                named.string(1, path);
                named.message(2, |path_item| {
                    for (method, field) in [
                        ("get", 2),
                        ("put", 3),
                        ("post", 4),
                        ("delete", 5),
                        ("patch", 8),
                    ] {
                        if item[method].is_object() {
                            path_item.message(field, |op| encode_operation(op, &item[method]));
                        }
                    }
                });
            });
        }
    });
    writer.message(9, |definitions| {
        for (name, schema) in document["definitions"].as_object().into_iter().flatten() {
            definitions.message(1, |named| {
                named.string(1, name);
                named.message(2, |s| encode_schema(s, schema));
            });
        }
    });
    writer.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_nested_messages_follow_the_wire_format() {
        let mut writer = Writer::default();
        writer.varint(300);
        assert_eq!(writer.0, [0xac, 0x02]);
        let mut writer = Writer::default();
        writer.message(2, |info| info.string(1, "hi"));
        // field 2, length-delimited; inside, field 1 "hi".
        assert_eq!(writer.0, [0x12, 4, 0x0a, 2, b'h', b'i']);
    }

    #[test]
    fn v3_references_become_v2_definitions() {
        let v3 = json!({
            "components": { "schemas": { "io.k8s.api.core.v1.Pod": {
                "type": "object",
                "properties": { "spec": { "allOf": [{ "$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec" }], "description": "spec" } },
            }}},
            "paths": {},
        });
        let v2 = from_v3(&[v3], "v1.33.0");
        let spec = &v2["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"];
        assert_eq!(spec["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
        assert_eq!(spec["description"], "spec");
        assert!(spec.get("allOf").is_none());
        assert!(!to_protobuf(&v2).is_empty());
    }
}
