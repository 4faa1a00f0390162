//! API errors as Kubernetes reports them: a `metav1.Status` with the HTTP
//! code, a machine-readable reason, a message kubectl prints as is, and
//! details naming the object and, for invalid ones, each offending field.
//! Internal failures never leak their text beyond a generic message.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

use super::FieldError;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<StatusDetails>>,
}

/// What an error is about: the resource (plural, with group for non-core)
/// and the object's name.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub plural: &'a str,
    pub name: &'a str,
}

impl Subject<'_> {
    /// "pods" or "deployments.apps", as Kubernetes names a resource in messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn details(&self) -> StatusDetails {
        StatusDetails {
            name: Some(self.name.to_owned()).filter(|n| !n.is_empty()),
            group: Some(self.group.to_owned()).filter(|g| !g.is_empty()),
            kind: Some(self.plural.to_owned()),
            ..Default::default()
        }
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn not_found(subject: Subject<'_>) -> Self {
        let message = format!("{} \"{}\" not found", subject.qualified(), subject.name);
        Self {
            details: Some(Box::new(subject.details())),
            ..Self::new(404, "NotFound", message)
        }
    }

    /// A path that names no resource we serve.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn method_not_allowed(verb: &str, plural: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{plural}\""),
        )
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn already_exists(subject: Subject<'_>) -> Self {
        let message = format!(
            "{} \"{}\" already exists",
            subject.qualified(),
            subject.name
        );
        Self {
            details: Some(Box::new(subject.details())),
            ..Self::new(409, "AlreadyExists", message)
        }
    }

    pub fn conflict(subject: Subject<'_>, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{}\": {why}",
            subject.qualified(),
            subject.name
        );
        Self {
            details: Some(Box::new(subject.details())),
            ..Self::new(409, "Conflict", message)
        }
    }

    /// The object changed since the client read it (optimistic concurrency).
    pub fn stale(subject: Subject<'_>) -> Self {
        Self::conflict(
            subject,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 for a request that is well-formed but cannot be applied (a JSON
    /// patch whose test fails).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "the request is too large (the limit is 3145728 bytes)",
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    /// 415 with a reason of our own.
    pub fn unsupported_media_type_with(content_type: &str, why: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("{why} (got {content_type:?})"),
        )
    }

    /// 422: the object is invalid; each cause names a field.
    pub fn invalid(subject: Subject<'_>, errors: &[FieldError]) -> Self {
        let summary: Vec<String> = errors.iter().map(FieldError::to_string).collect();
        let message = format!(
            "{} \"{}\" is invalid: {}",
            subject.kind,
            subject.name,
            if summary.len() == 1 {
                summary[0].clone()
            } else {
                format!("[{}]", summary.join(", "))
            }
        );
        let mut details = subject.details();
        details.kind = Some(subject.kind.to_owned());
        details.causes = Some(
            errors
                .iter()
                .map(|e| StatusCause {
                    field: Some(e.field.clone()),
                    message: Some(e.detail()),
                    reason: Some(e.kind.reason().to_owned()),
                })
                .collect(),
        );
        Self {
            details: Some(Box::new(details)),
            ..Self::new(422, "Invalid", message)
        }
    }

    /// A failure of ours, not the request's: logged in full, reported
    /// without internals.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {context}"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// A store failure about `subject`, in the API's terms.
    pub fn from_store(err: StoreError, subject: Subject<'_>) -> Self {
        match err {
            StoreError::NotFound(_) => Self::not_found(subject),
            StoreError::AlreadyExists(_) => Self::already_exists(subject),
            StoreError::Conflict { .. } => Self::stale(subject),
            StoreError::Compacted { requested } => {
                Self::gone(format!("too old resource version: {requested}"))
            }
            StoreError::FutureRevision { requested, current } => Self::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            StoreError::InvalidContinue(why) => {
                Self::bad_request(format!("invalid continue token: {why}"))
            }
            StoreError::Unavailable(why) | StoreError::Corrupt { message: why, .. } => {
                Self::internal("the store failed", &why)
            }
        }
    }

    pub fn to_status(&self) -> Status {
        Status {
            code: Some(i32::from(self.code)),
            details: self.details.as_deref().cloned(),
            message: Some(self.message.clone()),
            metadata: Default::default(),
            reason: Some(self.reason.to_owned()),
            status: Some("Failure".to_owned()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut response = (code, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Subject<'_> {
        Subject {
            group: "",
            kind: "Pod",
            plural: "pods",
            name,
        }
    }

    #[test]
    fn messages_match_kubernetes() {
        assert_eq!(
            ApiError::not_found(pod("web")).message,
            "pods \"web\" not found"
        );
        let deployment = Subject {
            group: "apps",
            kind: "Deployment",
            plural: "deployments",
            name: "d",
        };
        assert_eq!(
            ApiError::already_exists(deployment).message,
            "deployments.apps \"d\" already exists"
        );
        assert_eq!(
            ApiError::stale(pod("web")).message,
            "Operation cannot be fulfilled on pods \"web\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }

    #[test]
    fn invalid_objects_name_every_field() {
        let errors = [
            FieldError::required("spec.containers"),
            FieldError::invalid(
                "metadata.name",
                "Web",
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            ),
        ];
        let status = ApiError::invalid(pod("Web"), &errors).to_status();
        assert_eq!(status.code, Some(422));
        let causes = status.details.unwrap().causes.unwrap();
        assert_eq!(causes[0].field.as_deref(), Some("spec.containers"));
        assert_eq!(causes[0].reason.as_deref(), Some("FieldValueRequired"));
        assert_eq!(causes[1].field.as_deref(), Some("metadata.name"));
        assert!(status.message.unwrap().starts_with("Pod \"Web\" is invalid: [spec.containers: Required value, metadata.name: Invalid value: \"Web\": "));
    }
}
