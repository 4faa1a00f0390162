//! The Kubernetes API over HTTP: authentication, discovery, and the routes
//! of every served resource. [`app`] builds the router, so tests can call
//! it without a socket; server.rs serves it over TLS.

mod agent_client;
mod auth;
mod delete;
mod discovery;
mod list;
mod openapi;
mod openapi_v2;
mod patch;
mod pod_logs;
mod request;
mod resource;
mod server;
mod strategic;
mod subresources;
mod watch;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderMap, Method, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get},
};

pub use self::{
    agent_client::{AgentClient, AgentError},
    auth::{Credentials, User, admin_token_path},
    resource::{ApiRequest, ResourceApi, Typed},
    server::{Listeners, serve},
};
pub use crate::errors::{ApiError, Subject};
pub use crate::registry::kinds::pod_spec::DefaultTolerations;
use crate::{
    registry::{Kind, ResourceInfo, served},
    store::Store,
};

/// What handlers share: the store, and the served resources.
#[derive(Debug, Clone)]
pub struct Context {
    pub store: Arc<dyn Store>,
    /// The API's schemas, which strategic merge patches walk.
    pub schemas: Arc<strategic::Schemas>,
    /// control's identity toward agents (for logs); None in tests that
    /// serve no nodes.
    pub agents: Option<AgentClient>,
}

/// Every resource capstan serves, with Kubernetes' default admission.
pub fn resources() -> Vec<Arc<dyn ResourceApi>> {
    resources_admitting(DefaultTolerations::default())
}

/// Every resource capstan serves (the registry's list); new pods get
/// `tolerations`.
fn resources_admitting(tolerations: DefaultTolerations) -> Vec<Arc<dyn ResourceApi>> {
    struct Pipelines(Vec<Arc<dyn ResourceApi>>);
    impl served::KindVisitor for Pipelines {
        fn visit<K: Kind>(&mut self, kind: K) {
            self.0.push(Typed::resource(kind));
        }
    }
    let mut pipelines = Pipelines(Vec::new());
    served::visit(tolerations, &mut pipelines);
    pipelines.0
}

/// The API's shared state.
pub struct ApiState {
    ctx: Context,
    openapi: openapi::OpenApi,
    credentials: Credentials,
    by_route: HashMap<(String, String, String), Arc<dyn ResourceApi>>,
    infos: Vec<&'static ResourceInfo>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("resources", &self.infos.len())
            .finish_non_exhaustive()
    }
}

impl ApiState {
    pub fn new(store: Arc<dyn Store>, credentials: Credentials) -> Arc<Self> {
        Self::with_agents(store, credentials, None, DefaultTolerations::default())
    }

    /// State whose log requests reach agents as `agents`, and whose new
    /// pods get `tolerations`.
    pub fn with_agents(
        store: Arc<dyn Store>,
        credentials: Credentials,
        agents: Option<AgentClient>,
        tolerations: DefaultTolerations,
    ) -> Arc<Self> {
        let resources = resources_admitting(tolerations);
        let infos = resources.iter().map(|r| r.info()).collect();
        let (openapi, schemas) = openapi::build(&resources);
        let by_route = resources
            .into_iter()
            .map(|r| {
                let info = r.info();
                (
                    (
                        info.group.to_owned(),
                        info.version.to_owned(),
                        info.plural.to_owned(),
                    ),
                    r,
                )
            })
            .collect();
        Arc::new(Self {
            ctx: Context {
                store,
                schemas: Arc::new(schemas),
                agents,
            },
            openapi,
            credentials,
            by_route,
            infos,
        })
    }

    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<dyn ResourceApi>> {
        self.by_route
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
    }
}

/// The router of the whole API.
pub fn app(state: Arc<ApiState>) -> Router {
    let health = || async { "ok" };
    let authenticated = Router::new()
        .route("/version", get(|| async { discovery::version() }))
        .route("/api", get(core_versions))
        .route("/apis", get(group_list))
        .route("/api/v1", get(core_resources))
        .route("/apis/{group}", get(group_versions))
        .route("/apis/{group}/{version}", get(group_resources))
        .route(
            "/openapi/v3",
            get(|State(state): State<Arc<ApiState>>| async move { state.openapi.root() }),
        )
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route(
            "/openapi/v2",
            get(
                |State(state): State<Arc<ApiState>>, headers: HeaderMap| async move {
                    state.openapi.v2(&headers)
                },
            ),
        )
        .route("/api/v1/{*rest}", any(core_resource))
        .route("/apis/{group}/{version}/{*rest}", any(group_resource))
        .fallback(|request: Request| async move { ApiError::no_route(request.uri().path()) })
        .method_not_allowed_fallback(|request: Request| async move {
            ApiError::method_not_allowed(request.method().as_str(), request.uri().path())
        })
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .merge(authenticated)
        .with_state(state)
}

/// Rejects requests without a valid token (401, as Kubernetes answers
/// anonymous requests when anonymous access is off).
async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.credentials.authenticate(header) {
        Some(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None => ApiError::unauthorized().into_response(),
    }
}

async fn core_versions(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    discovery::core_versions(&state.infos, &headers)
}

async fn group_list(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    discovery::group_list(&state.infos, &headers)
}

async fn core_resources(State(state): State<Arc<ApiState>>) -> Response {
    discovery::resource_list(&state.infos, "", "v1")
        .unwrap_or_else(|| ApiError::no_route("/api/v1").into_response())
}

async fn group_versions(State(state): State<Arc<ApiState>>, Path(group): Path<String>) -> Response {
    discovery::group(&state.infos, &group)
        .unwrap_or_else(|| ApiError::no_route(&format!("/apis/{group}")).into_response())
}

async fn group_resources(
    State(state): State<Arc<ApiState>>,
    Path((group, version)): Path<(String, String)>,
) -> Response {
    discovery::resource_list(&state.infos, &group, &version)
        .unwrap_or_else(|| ApiError::no_route(&format!("/apis/{group}/{version}")).into_response())
}

async fn openapi_document(
    State(state): State<Arc<ApiState>>,
    Path(path): Path<String>,
) -> Response {
    state
        .openapi
        .document(&path)
        .unwrap_or_else(|| ApiError::no_route(&format!("/openapi/v3/{path}")).into_response())
}

async fn core_resource(
    State(state): State<Arc<ApiState>>,
    Path(rest): Path<String>,
    request: Request,
) -> Response {
    dispatch(&state, "", "v1", &rest, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn group_resource(
    State(state): State<Arc<ApiState>>,
    Path((group, version, rest)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    dispatch(&state, &group, &version, &rest, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Where a resource path points.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    namespace: Option<&'a str>,
    plural: &'a str,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

/// Splits `namespaces/<ns>/<plural>/<name>/<sub>` and `<plural>/<name>/<sub>`;
/// `is_namespaced(plural)` tells a namespaced resource from a subresource
/// of a namespace (`namespaces/<ns>/status`).
fn parse_target<'a>(rest: &'a str, is_namespaced: impl Fn(&str) -> bool) -> Option<Target<'a>> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, tail) = match segments.as_slice() {
        ["namespaces", namespace, plural, ..] if is_namespaced(plural) => {
            (Some(*namespace), &segments[2..])
        }
        _ => (None, &segments[..]),
    };
    match tail {
        [plural] => Some(Target {
            namespace,
            plural,
            name: None,
            subresource: None,
        }),
        [plural, name] => Some(Target {
            namespace,
            plural,
            name: Some(name),
            subresource: None,
        }),
        [plural, name, sub] => Some(Target {
            namespace,
            plural,
            name: Some(name),
            subresource: Some(sub),
        }),
        _ => None,
    }
}

/// Kubernetes' verb for a request.
fn verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match (method, named) {
        (&Method::GET, _) if watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

async fn dispatch(
    state: &ApiState,
    group: &str,
    version: &str,
    rest: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let path = request.uri().path().to_owned();
    let target = parse_target(rest, |plural| {
        state
            .resource(group, version, plural)
            .is_some_and(|r| r.info().namespaced)
    })
    .ok_or_else(|| ApiError::no_route(&path))?;
    let resource = state
        .resource(group, version, target.plural)
        .ok_or_else(|| ApiError::no_route(&path))?;
    let info = resource.info();
    if target.namespace.is_some() && !info.namespaced {
        return Err(ApiError::no_route(&path));
    }
    let query = request::Query::parse(request.uri().query())?;
    let user = request
        .extensions()
        .get::<User>()
        .cloned()
        .ok_or_else(ApiError::unauthorized)?;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), request::MAX_BODY + 1)
        .await
        .map_err(|_| ApiError::too_large())?;
    if body.len() > request::MAX_BODY {
        return Err(ApiError::too_large());
    }
    let verb = verb(&parts.method, target.name.is_some(), query.flag("watch"));
    // A create names its object in the body; the node authorizer needs
    // the name (as Kubernetes' NodeRestriction admission does).
    let created_name = (verb == "create" && target.name.is_none())
        .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .flatten()
        .and_then(|v| v["metadata"]["name"].as_str().map(str::to_owned));
    let attributes = auth::Attributes {
        verb,
        group,
        resource: info.plural,
        subresource: target.subresource,
        namespace: target.namespace,
        name: target.name.or(created_name.as_deref()),
        field_selector: query.get("fieldSelector"),
    };
    auth::authorize(&user, &attributes, state.ctx.store.as_ref()).await?;

    let api_request = ApiRequest {
        method: parts.method,
        namespace: target.namespace.map(str::to_owned),
        name: target.name.map(str::to_owned),
        subresource: target.subresource.map(str::to_owned),
        query,
        headers: parts.headers,
        body,
    };
    resource.handle(&state.ctx, api_request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaced(plural: &str) -> bool {
        plural == "pods"
    }

    #[test]
    fn paths_split_into_namespace_resource_name_and_subresource() {
        let t = |rest| parse_target(rest, namespaced);
        assert_eq!(
            t("pods"),
            Some(Target {
                namespace: None,
                plural: "pods",
                name: None,
                subresource: None
            })
        );
        assert_eq!(
            t("namespaces/default/pods/web/status"),
            Some(Target {
                namespace: Some("default"),
                plural: "pods",
                name: Some("web"),
                subresource: Some("status")
            })
        );
        assert_eq!(
            t("namespaces/default/status"),
            Some(Target {
                namespace: None,
                plural: "namespaces",
                name: Some("default"),
                subresource: Some("status")
            })
        );
        assert_eq!(
            t("namespaces/default"),
            Some(Target {
                namespace: None,
                plural: "namespaces",
                name: Some("default"),
                subresource: None
            })
        );
        assert_eq!(t("a/b/c/d"), None);
    }
}
