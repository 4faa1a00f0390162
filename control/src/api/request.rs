//! What a request asks for beyond its path: query parameters, the body
//! (JSON or YAML, at most 3 MiB), how strictly unknown fields are treated,
//! and whether the client wants a Table.

use std::collections::HashMap;

use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;

/// Bodies larger than this are refused, as Kubernetes does.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The query parameters the API understands.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub params: HashMap<String, String>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut params = HashMap::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(decode(key)?, decode(value)?);
        }
        Ok(Self { params })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(
            self.params.get(key).map(String::as_str),
            Some("true" | "1" | "")
        ) && self.params.contains_key(key)
    }

    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}")))
            })
            .transpose()
    }

    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }

    pub fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        match self.get("fieldValidation") {
            None | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}; supported values: Ignore, Warn, Strict"
            ))),
        }
    }
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(text: &str) -> Result<String, ApiError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("invalid escape in query: {text:?}"))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not UTF-8"))
}

/// What to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// The body as JSON, whatever format it came in.
pub fn body_json(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large());
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let content_type = content_type(headers);
    if content_type == "application/vnd.kubernetes.protobuf" {
        return Err(super::ApiError::unsupported_media_type_with(
            &content_type,
            "capstan does not decode Kubernetes protobuf request bodies yet; send JSON or YAML (kubectl apply -f and kubectl create -f do)",
        ));
    }
    if content_type.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|err| ApiError::bad_request(format!("error converting YAML to JSON: {err}")))
    } else {
        serde_json::from_slice(body).map_err(|err| {
            ApiError::bad_request(format!(
                "couldn't get version/kind; json parse error: {err}"
            ))
        })
    }
}

pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `value` as `T`, collecting the paths of fields `T` does not have.
pub fn decode_typed<T: DeserializeOwned>(
    value: Value,
) -> Result<(T, Vec<String>), serde_json::Error> {
    let mut unknown = Vec::new();
    let typed = serde_ignored::deserialize(value, |path| unknown.push(path_string(&path)))?;
    Ok((typed, unknown))
}

/// A path as Kubernetes prints it: `spec.containers[0].foo`.
fn path_string(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_string(parent)),
        Path::Map { parent, key } => {
            let parent = path_string(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_string(parent),
    }
}

/// What the client accepts back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    Object,
    /// A meta.k8s.io/v1 Table (kubectl get).
    Table,
}

pub fn accept(headers: &HeaderMap) -> Accept {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let wants_table = accept.split(',').any(|range| {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        params.contains(&"as=Table")
            && params.contains(&"g=meta.k8s.io")
            && params.contains(&"v=v1")
    });
    if wants_table {
        Accept::Table
    } else {
        Accept::Object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded() {
        let query = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&limit=500&watch=1",
        ))
        .unwrap();
        assert_eq!(query.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(query.number::<usize>("limit").unwrap(), Some(500));
        assert!(query.flag("watch"));
        assert!(!query.flag("allowWatchBookmarks"));
        assert!(Query::parse(Some("x=%zz")).is_err());
    }

    #[test]
    fn unknown_fields_are_named_as_kubernetes_does() {
        let value = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "colour": "red"}]}
        });
        let (_, unknown): (k8s_openapi::api::core::v1::Pod, _) = decode_typed(value).unwrap();
        assert_eq!(unknown, ["metadata.bogus", "spec.containers[0].colour"]);
    }

    #[test]
    fn kubectl_get_asks_for_a_table() {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json".parse().unwrap(),
        );
        assert_eq!(accept(&headers), Accept::Table);
        headers.insert(
            axum::http::header::ACCEPT,
            "application/json".parse().unwrap(),
        );
        assert_eq!(accept(&headers), Accept::Object);
    }
}
