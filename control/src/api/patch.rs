//! PATCH: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic
//! merge patch, applied to the stored object and then stored through the
//! same checks as an update. A patch that does not name a resourceVersion
//! is retried on conflict, as Kubernetes does, since it did not depend on
//! one version.

use std::time::{Duration, Instant};

use axum::{http::StatusCode, response::Response};
use k8s_openapi::Metadata;
use serde_json::Value;

use super::{
    ApiError, Context,
    request::{accept, body_json, content_type},
    resource::{ApiRequest, Change, Typed, parse_revision},
    strategic::Schemas,
};
use crate::registry::{Kind, to_value};

/// How long a write that names no resourceVersion keeps trying after
/// losing races. Kubernetes retries such writes until the request times
/// out; a count would fail under steady contention (two writers of one
/// object lose alternately, so one of them loses five times in a row
/// within a few hundred writes).
const RETRY_FOR: Duration = Duration::from_secs(10);

/// Whether a write that lost a race with another is made again.
pub(super) struct ConflictRetry {
    deadline: Instant,
}

impl ConflictRetry {
    pub(super) fn new() -> Self {
        Self {
            deadline: Instant::now() + RETRY_FOR,
        }
    }

    /// True for a conflict while the budget lasts; the caller then reads
    /// the object again and rebuilds its write on it.
    pub(super) fn again(&self, err: &ApiError) -> bool {
        err.code == 409 && Instant::now() < self.deadline
    }
}

/// The media types PATCH accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatchType {
    Json,
    Merge,
    Strategic,
}

pub(super) fn patch_type(request: &ApiRequest) -> Result<PatchType, ApiError> {
    match content_type(&request.headers).as_str() {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// `original` (of schema type `type_name`) with `patch` applied.
pub(super) fn apply_patch(
    schemas: &Schemas,
    type_name: &str,
    kind_of: PatchType,
    original: &Value,
    patch: &Value,
) -> Result<Value, ApiError> {
    match kind_of {
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|err| ApiError::bad_request(format!("invalid JSON patch: {err}")))?;
            let mut document = original.clone();
            json_patch::patch(&mut document, &operations).map_err(|err| {
                ApiError::unprocessable(format!(
                    "the server rejected our request due to an error in our request: {err}"
                ))
            })?;
            Ok(document)
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a JSON merge patch must be a JSON object",
                ));
            }
            let mut document = original.clone();
            json_patch::merge(&mut document, patch);
            Ok(document)
        }
        PatchType::Strategic => schemas
            .apply(type_name, original, patch)
            .map_err(|err| ApiError::bad_request(err.to_string())),
    }
}

impl<K: Kind> Typed<K> {
    pub(super) async fn patch(
        &self,
        ctx: &Context,
        request: &ApiRequest,
        name: &str,
    ) -> Result<Response, ApiError> {
        let kind_of = patch_type(request)?;
        let patch = body_json(&request.headers, &request.body)?;
        let validation = request.query.field_validation()?;
        let retry = ConflictRetry::new();
        loop {
            let (old, current) = self.load(ctx, request.namespace.as_deref(), name).await?;
            let original = to_value(&old);
            let type_name = <K::Object as schemars::JsonSchema>::schema_name();
            let patched = apply_patch(&ctx.schemas, &type_name, kind_of, &original, &patch)?;
            let pinned = patched["metadata"].get("resourceVersion")
                != original["metadata"].get("resourceVersion");
            let expected = match patched["metadata"]
                .get("resourceVersion")
                .and_then(Value::as_str)
            {
                Some(rv) => parse_revision(rv)?,
                None => current,
            };
            let (object, warnings) = self.decode_body(patched, validation)?;
            if object.metadata().name.as_deref() != Some(name) {
                return Err(ApiError::bad_request(
                    "a patch may not change the name of an object",
                ));
            }
            let object = match request.subresource.as_deref() {
                Some("status") => super::resource::with_status_of(&old, &object)?,
                _ => super::resource::with_status_of(&object, &old)?,
            };
            if request.query.dry_run() {
                return Ok(self.respond(
                    StatusCode::OK,
                    &object,
                    accept(&request.headers),
                    &request.query,
                    &warnings,
                ));
            }
            match self
                .store_update(ctx, object, &old, expected, Change::Update)
                .await
            {
                Ok(updated) => {
                    return Ok(self.respond(
                        StatusCode::OK,
                        &updated,
                        accept(&request.headers),
                        &request.query,
                        &warnings,
                    ));
                }
                Err(err) if !pinned && retry.again(&err) => continue,
                Err(err) => return Err(err),
            }
        }
    }
}
