//! Discovery, as kubectl uses it: /version, /api, /apis, the resource list
//! of each group version, and aggregated discovery (one document per root
//! listing every group, version and resource), all derived from the
//! registry.

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::resource::json_response;
use crate::registry::{ResourceInfo, VERBS};

/// The Kubernetes release whose API capstan serves.
pub const KUBERNETES_MINOR: &str = "33";

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": KUBERNETES_MINOR,
            "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-capstan.{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "none (capstan is written in Rust)",
            "compiler": "rustc",
            "platform": format!("linux/{}", if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
        }),
    )
}

/// Whether the client asks for aggregated discovery.
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.split(',').any(|range| {
                let params: Vec<&str> = range.split(';').map(str::trim).collect();
                params.contains(&"as=APIGroupDiscoveryList")
                    && params.contains(&"v=v2")
                    && params.contains(&"g=apidiscovery.k8s.io")
            })
        })
}

/// The groups served besides core, with their versions, in a stable order.
pub fn groups(resources: &[&'static ResourceInfo]) -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for info in resources.iter().filter(|i| !i.group.is_empty()) {
        if !groups.contains(&(info.group, info.version)) {
            groups.push((info.group, info.version));
        }
    }
    groups
}

fn in_group<'a>(
    resources: &'a [&'static ResourceInfo],
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    resources
        .iter()
        .copied()
        .filter(move |i| i.group == group && i.version == version)
}

/// GET /api
pub fn core_versions(resources: &[&'static ResourceInfo], headers: &HeaderMap) -> Response {
    if wants_aggregated(headers) {
        return aggregated(vec![group_discovery("", "v1", resources)]);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "" }],
        }),
    )
}

/// GET /apis
pub fn group_list(resources: &[&'static ResourceInfo], headers: &HeaderMap) -> Response {
    let groups = groups(resources);
    if wants_aggregated(headers) {
        let items = groups
            .iter()
            .map(|(g, v)| group_discovery(g, v, resources))
            .collect();
        return aggregated(items);
    }
    let items: Vec<Value> = groups
        .iter()
        .map(|(group, version)| {
            let gv = json!({ "groupVersion": format!("{group}/{version}"), "version": version });
            json!({ "name": group, "versions": [gv.clone()], "preferredVersion": gv })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": items }),
    )
}

/// GET /apis/<group> (the group alone)
pub fn group(resources: &[&'static ResourceInfo], group: &str) -> Option<Response> {
    let (name, version) = groups(resources).into_iter().find(|(g, _)| *g == group)?;
    let gv = json!({ "groupVersion": format!("{name}/{version}"), "version": version });
    Some(json_response(
        StatusCode::OK,
        &json!({ "kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": [gv.clone()], "preferredVersion": gv }),
    ))
}

/// GET /api/v1 or /apis/<group>/<version>; None if not served.
pub fn resource_list(
    resources: &[&'static ResourceInfo],
    group: &str,
    version: &str,
) -> Option<Response> {
    let mut listed = Vec::new();
    for info in in_group(resources, group, version) {
        listed.push(json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": VERBS,
            "shortNames": info.short_names,
            "categories": info.categories,
        }));
        for sub in info.subresources {
            let mut entry = json!({
                "name": format!("{}/{}", info.plural, sub.name),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": sub.kind,
                "verbs": sub.verbs,
            });
            if sub.group != info.group || sub.version != info.version {
                entry["group"] = json!(sub.group);
                entry["version"] = json!(sub.version);
            }
            listed.push(entry);
        }
    }
    if listed.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json_response(
        StatusCode::OK,
        &json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": listed }),
    ))
}

fn group_discovery(group: &str, version: &str, resources: &[&'static ResourceInfo]) -> Value {
    let listed: Vec<Value> = in_group(resources, group, version)
        .map(|info| {
            let subresources: Vec<Value> = info
                .subresources
                .iter()
                .map(|sub| {
                    json!({
                        "subresource": sub.name,
                        "responseKind": { "group": sub.group, "version": sub.version, "kind": sub.kind },
                        "verbs": sub.verbs,
                    })
                })
                .collect();
            json!({
                "resource": info.plural,
                "responseKind": { "group": info.group, "version": info.version, "kind": info.kind },
                "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": info.singular,
                "verbs": VERBS,
                "shortNames": info.short_names,
                "categories": info.categories,
                "subresources": subresources,
            })
        })
        .collect();
    let mut metadata = json!({ "creationTimestamp": null });
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({
        "metadata": metadata,
        "versions": [{ "version": version, "resources": listed, "freshness": "Current" }],
    })
}

fn aggregated(items: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, AGGREGATED_V2)],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}
