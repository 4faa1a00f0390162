//! list: a page (or all) of a resource at one revision, filtered by the
//! request's selectors, filling a filtered page as Kubernetes does. A plain
//! list is answered from the stored JSON without decoding each object.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    ApiError, Context,
    request::{Accept, accept},
    resource::{ApiRequest, Typed, json_response, parse_revision},
};
use crate::{
    labels::{FieldTerm, Selector},
    registry::{Kind, to_value},
    store::{ContinueToken, KeyValue, ListOptions, Revision, StoreError},
};

impl<K: Kind> Typed<K> {
    /// Lists at one revision, reading store pages until `limit` objects
    /// pass the selectors (as Kubernetes fills a filtered page).
    pub(super) async fn list_objects(
        &self,
        ctx: &Context,
        request: &ApiRequest,
    ) -> Result<(Vec<K::Object>, Revision, Option<ContinueToken>), ApiError> {
        let (labels, fields) = self.selectors(&request.query)?;
        self.scan(ctx, request, |kv| {
            let object = self.decode(kv)?;
            Ok(self.selected(&object, &labels, &fields)?.then_some(object))
        })
        .await
    }

    /// The pages of a list, each stored object offered to `take`, which
    /// returns what to keep of it (None skips it).
    async fn scan<T>(
        &self,
        ctx: &Context,
        request: &ApiRequest,
        mut take: impl FnMut(&KeyValue) -> Result<Option<T>, ApiError>,
    ) -> Result<(Vec<T>, Revision, Option<ContinueToken>), ApiError> {
        let query = &request.query;
        let limit: usize = query.number("limit")?.unwrap_or(0);
        let continue_token = query
            .get("continue")
            .map(ContinueToken::decode)
            .transpose()
            .map_err(|err| ApiError::from_store(err, self.subject("")))?;
        let revision = match (
            query.get("resourceVersion"),
            query.get("resourceVersionMatch"),
        ) {
            (Some(rv), Some("Exact")) => Some(parse_revision(rv)?),
            _ => None,
        };
        let prefix = self.prefix(request.namespace.as_deref());
        let mut options = ListOptions {
            revision,
            limit: if limit == 0 { 0 } else { limit.max(64) },
            continue_token,
        };
        let mut kept = Vec::new();
        loop {
            let page = ctx.store.list(&prefix, options.clone()).await.map_err(|err| match err {
                StoreError::Compacted { .. } if query.get("continue").is_some() => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                err => ApiError::from_store(err, self.subject("")),
            })?;
            let read_at = page.revision;
            for kv in &page.items {
                let Some(item) = take(kv)? else {
                    continue;
                };
                kept.push(item);
                if limit > 0 && kept.len() == limit {
                    // Continue after this key, unless it was the last one.
                    let last =
                        kv.key == page.items.last().map(|l| l.key.clone()).unwrap_or_default();
                    let next = (!last || page.continue_token.is_some()).then(|| ContinueToken {
                        revision: read_at,
                        after_key: kv.key.clone(),
                    });
                    return Ok((kept, read_at, next));
                }
            }
            match page.continue_token {
                Some(token) => {
                    options.revision = None;
                    options.continue_token = Some(token);
                }
                None => return Ok((kept, read_at, None)),
            }
        }
    }

    /// A list answered from the stored JSON itself, without decoding each
    /// object: possible when no selector needs the kind's rules.
    async fn list_raw(
        &self,
        ctx: &Context,
        request: &ApiRequest,
        labels: &Selector,
        fields: &[FieldTerm],
    ) -> Result<Response, ApiError> {
        let prefix = format!("/registry/{}/", K::INFO.plural);
        let (items, revision, next) = self
            .scan(ctx, request, |kv| {
                let mut parts = kv
                    .key
                    .strip_prefix(&prefix)
                    .unwrap_or_default()
                    .rsplitn(2, '/');
                let name = parts.next().unwrap_or_default();
                let namespace = parts.next().unwrap_or_default();
                for term in fields {
                    let value = if term.field == "metadata.name" {
                        name
                    } else {
                        namespace
                    };
                    if (value == term.value) != term.equals {
                        return Ok(None);
                    }
                }
                if !labels.is_empty() {
                    let stored: StoredLabels = serde_json::from_slice(&kv.value)
                        .map_err(|err| ApiError::internal("decoding a stored object", &err))?;
                    if !labels.matches(&stored.metadata.labels) {
                        return Ok(None);
                    }
                }
                match with_resource_version(&kv.value, kv.mod_revision) {
                    Some(item) => Ok(Some(item)),
                    None => Ok(Some(
                        serde_json::to_vec(&self.decode(kv)?).unwrap_or_default(),
                    )),
                }
            })
            .await?;
        let mut meta = json!({ "resourceVersion": revision.to_string() });
        if let Some(next) = next {
            meta["continue"] = json!(next.encode());
        }
        let size = items.iter().map(Vec::len).sum::<usize>() + items.len() + 256;
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(
            format!(
                "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{},\"items\":[",
                json!(<K::Object as k8s_openapi::ListableResource>::LIST_KIND),
                json!(K::INFO.api_version()),
                meta
            )
            .as_bytes(),
        );
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(item);
        }
        body.extend_from_slice(b"]}");
        Ok((
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response())
    }

    pub(super) async fn list(
        &self,
        ctx: &Context,
        request: &ApiRequest,
    ) -> Result<Response, ApiError> {
        let (labels, fields) = self.selectors(&request.query)?;
        let metadata_only = fields
            .iter()
            .all(|t| matches!(t.field.as_str(), "metadata.name" | "metadata.namespace"));
        if accept(&request.headers) == Accept::Object && metadata_only {
            return self.list_raw(ctx, request, &labels, &fields).await;
        }
        let (objects, revision, next) = self.list_objects(ctx, request).await?;
        let mut meta = json!({ "resourceVersion": revision.to_string() });
        if let Some(next) = next {
            meta["continue"] = json!(next.encode());
        }
        let value = match accept(&request.headers) {
            Accept::Table => self.table(&objects, Some(meta), &request.query),
            Accept::Object => json!({
                "kind": <K::Object as k8s_openapi::ListableResource>::LIST_KIND,
                "apiVersion": K::INFO.api_version(),
                "metadata": meta,
                "items": objects.iter().map(to_value).collect::<Vec<_>>(),
            }),
        };
        Ok(json_response(StatusCode::OK, &value))
    }
}

/// Just the labels of a stored object.
#[derive(serde::Deserialize)]
struct StoredLabels {
    metadata: StoredLabelsMeta,
}

#[derive(serde::Deserialize)]
struct StoredLabelsMeta {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// A stored object's JSON with its resourceVersion put into its metadata,
/// for objects `encode` wrote (metadata first); None for anything else.
fn with_resource_version(stored: &[u8], revision: Revision) -> Option<Vec<u8>> {
    const MARK: &[u8] = b"{\"metadata\":{";
    if !stored.starts_with(MARK) {
        return None;
    }
    let at = MARK.len();
    let mut out = Vec::with_capacity(stored.len() + 32);
    out.extend_from_slice(&stored[..at]);
    out.extend_from_slice(format!("\"resourceVersion\":\"{revision}\"").as_bytes());
    if stored.get(at) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&stored[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn resource_versions_are_spliced_into_stored_metadata() {
        let typed = Typed {
            kind: crate::registry::kinds::core::ConfigMaps,
        };
        let mut map = k8s_openapi::api::core::v1::ConfigMap::default();
        map.metadata.name = Some("a".into());
        map.metadata.resource_version = Some("3".into());
        map.data = Some([("k".to_owned(), "\"metadata\":{".to_owned())].into());
        let stored = typed.encode(&map).unwrap();
        let spliced = with_resource_version(&stored, Revision(42)).unwrap();
        let value: Value = serde_json::from_slice(&spliced).unwrap();
        assert_eq!(value["metadata"]["resourceVersion"], "42");
        assert_eq!(value["metadata"]["name"], "a");
        assert_eq!(value["kind"], "ConfigMap");
        assert_eq!(value["data"]["k"], "\"metadata\":{");
        let empty = with_resource_version(br#"{"metadata":{},"kind":"X"}"#, Revision(7)).unwrap();
        assert_eq!(empty, br#"{"metadata":{"resourceVersion":"7"},"kind":"X"}"#);
        assert!(with_resource_version(br#"{"kind":"X","metadata":{}}"#, Revision(7)).is_none());
    }
}
