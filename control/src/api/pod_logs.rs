//! `pods/<name>/log`: the container is chosen and checked here, as
//! kube-apiserver does, then the request goes to the agent of the pod's
//! node and its answer streams back to the client.

use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Node, Pod};

use super::{ApiError, Context, request::Query};

/// Annotation of a Node: its agent's serving certificate's SHA-256.
const SERVING_CERT_ANNOTATION: &str = "capstan.dev/serving-cert-sha256";
/// The log options passed through to the agent, with whether each is a
/// number.
const PASSED: [(&str, bool); 7] = [
    ("follow", false),
    ("previous", false),
    ("timestamps", false),
    ("tailLines", true),
    ("sinceSeconds", true),
    ("sinceTime", false),
    ("limitBytes", true),
];

/// The log of a container of `pod`, from its node's agent.
pub(super) async fn pod_log(ctx: &Context, pod: Pod, query: &Query) -> Result<Response, ApiError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let app: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    let init: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(container) => {
            if !app.contains(&container) && !init.contains(&container) {
                return Err(ApiError::bad_request(format!(
                    "container {container} is not valid for pod {name}"
                )));
            }
            container.to_owned()
        }
        None if app.len() == 1 => app[0].to_owned(),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                app.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            return Err(ApiError::bad_request(message));
        }
    };
    for (key, numeric) in PASSED {
        if numeric
            && let Some(value) = query.get(key)
            && value.parse::<i64>().is_err()
        {
            return Err(ApiError::bad_request(format!(
                "{key}: Invalid value: {value:?}: must be an integer"
            )));
        }
    }
    let node_name = spec
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    check_started(&pod, &container, &name, query.flag("previous"))?;

    let (address, pin) = agent_of(ctx, &node_name).await?;
    let client = ctx.agents.as_ref().ok_or_else(|| {
        ApiError::unavailable("this control has no client identity for reaching agents")
    })?;
    let mut path = format!("/containerLogs/{namespace}/{name}/{container}");
    let params: Vec<String> = PASSED
        .iter()
        .filter_map(|(key, _)| Some(format!("{key}={}", encode(query.get(key)?))))
        .collect();
    if !params.is_empty() {
        path.push('?');
        path.push_str(&params.join("&"));
    }
    let request = Request::get(path)
        .header(header::HOST, address.to_string())
        .body(Body::empty())
        .map_err(|err| ApiError::internal("building the agent request", &err))?;
    let response = client.send(address, &pin, request).await.map_err(|err| {
        ApiError::unavailable(format!("reaching node {node_name}'s agent: {err}"))
    })?;
    let status = response.status();
    if status == StatusCode::OK {
        let body = Body::new(response.into_body());
        return Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response());
    }
    let text = response
        .into_body()
        .collect()
        .await
        .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
        .unwrap_or_default();
    Err(match status {
        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => ApiError::bad_request(text),
        _ => ApiError::unavailable(format!(
            "node {node_name}'s agent answered {status}: {text}"
        )),
    })
}

/// A container that never ran has no log; one that never ran before has
/// no previous log: refused with the kubelet's words.
fn check_started(pod: &Pod, container: &str, name: &str, previous: bool) -> Result<(), ApiError> {
    let status = pod.status.as_ref();
    let statuses: Vec<&ContainerStatus> = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .collect();
    let found = statuses.iter().find(|s| s.name == container);
    let ran_before = found
        .and_then(|s| s.last_state.as_ref())
        .is_some_and(|s| s.terminated.is_some());
    if previous {
        if !ran_before {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        return Ok(());
    }
    let waiting = found
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.waiting.as_ref());
    match (found, waiting) {
        (None, _) => Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        ))),
        (Some(_), Some(waiting)) if !ran_before => Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {}",
            waiting.reason.as_deref().unwrap_or("ContainerCreating")
        ))),
        _ => Ok(()),
    }
}

/// The address and pinned certificate of `node`'s agent.
async fn agent_of(ctx: &Context, node: &str) -> Result<(SocketAddr, String), ApiError> {
    let stored = ctx
        .store
        .get(&format!("/registry/nodes/{node}"))
        .await
        .map_err(|err| ApiError::internal("reading the pod's node", &err))?
        .ok_or_else(|| ApiError::unavailable(format!("node {node} is not registered")))?;
    let node_object: Node = serde_json::from_slice(&stored.value)
        .map_err(|err| ApiError::internal("decoding the pod's node", &err))?;
    let status = node_object.status.unwrap_or_default();
    let ip: IpAddr = status
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
        .ok_or_else(|| ApiError::unavailable(format!("node {node} has no InternalIP")))?;
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map_or(10250, |e| e.port);
    let pin = node_object
        .metadata
        .annotations
        .and_then(|a| a.get(SERVING_CERT_ANNOTATION).cloned())
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "node {node} did not publish its agent's certificate ({SERVING_CERT_ANNOTATION})"
            ))
        })?;
    let port = u16::try_from(port)
        .map_err(|_| ApiError::unavailable(format!("node {node} reports port {port}")))?;
    Ok((SocketAddr::new(ip, port), pin))
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
