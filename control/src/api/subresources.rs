//! Subresources with their own shapes: `scale` (autoscaling/v1 Scale over
//! a workload's replicas) and `binding` (the scheduler's pod placement).

use axum::{
    http::{Method, StatusCode},
    response::Response,
};
use k8s_openapi::Metadata;
use serde_json::{Value, json};

use super::{
    ApiError, Context,
    patch::{PatchType, apply_patch, patch_type},
    request::body_json,
    resource::{ApiRequest, Change, Typed, json_response, parse_revision},
};
use crate::registry::{Kind, kinds::apps::selector_string, to_value};

impl<K: Kind> Typed<K> {
    /// The Scale view of a workload.
    fn scale_of(&self, object: &K::Object) -> Value {
        let value = to_value(object);
        let selector = serde_json::from_value(value["spec"]["selector"].clone())
            .map(|s| selector_string(&s))
            .unwrap_or_default();
        let meta = object.metadata();
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta.name,
                "namespace": meta.namespace,
                "uid": meta.uid,
                "resourceVersion": meta.resource_version,
                "creationTimestamp": meta.creation_timestamp,
            },
            "spec": { "replicas": value["spec"]["replicas"].as_i64().unwrap_or(0) },
            "status": {
                "replicas": value["status"]["replicas"].as_i64().unwrap_or(0),
                "selector": selector,
            },
        })
    }

    pub(super) async fn scale(
        &self,
        ctx: &Context,
        request: &ApiRequest,
        name: &str,
    ) -> Result<Response, ApiError> {
        let namespace = request.namespace.as_deref();
        let (old, current) = self.load(ctx, namespace, name).await?;
        let scale = self.scale_of(&old);
        let wanted = match request.method {
            Method::GET => return Ok(json_response(StatusCode::OK, &scale)),
            Method::PUT => body_json(&request.headers, &request.body)?,
            Method::PATCH => {
                let kind = patch_type(request)?;
                let patch = body_json(&request.headers, &request.body)?;
                // Scale has no merge keys: strategic merge is a merge here.
                let kind = if kind == PatchType::Strategic {
                    PatchType::Merge
                } else {
                    kind
                };
                apply_patch(
                    &ctx.schemas,
                    "io.k8s.api.autoscaling.v1.Scale",
                    kind,
                    &scale,
                    &patch,
                )?
            }
            _ => {
                return Err(ApiError::method_not_allowed(
                    request.method.as_str(),
                    "scale",
                ));
            }
        };
        let replicas = wanted["spec"]["replicas"]
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("Scale.spec.replicas must be an integer"))?;
        let expected = match wanted["metadata"]
            .get("resourceVersion")
            .and_then(Value::as_str)
        {
            Some(rv) if !rv.is_empty() => parse_revision(rv)?,
            _ => current,
        };
        let mut value = to_value(&old);
        value["spec"]["replicas"] = json!(replicas);
        let object: K::Object =
            serde_json::from_value(value).map_err(|err| ApiError::internal("scaling", &err))?;
        let updated = self
            .store_update(ctx, object, &old, expected, Change::Update)
            .await?;
        Ok(json_response(StatusCode::OK, &self.scale_of(&updated)))
    }

    /// POST pods/<name>/binding: places an unbound pod on a node.
    pub(super) async fn bind(
        &self,
        ctx: &Context,
        request: &ApiRequest,
        name: &str,
    ) -> Result<Response, ApiError> {
        let binding = body_json(&request.headers, &request.body)?;
        let node = binding["target"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    self.subject(name),
                    &[crate::registry::FieldError::required("target.name")],
                )
            })?
            .to_owned();
        let (old, current) = self.load(ctx, request.namespace.as_deref(), name).await?;
        let mut value = to_value(&old);
        if let Some(bound) = value["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(
                self.subject(name),
                &format!("pod {name} is already assigned to node \"{bound}\""),
            ));
        }
        if old.metadata().deletion_timestamp.is_some() {
            return Err(ApiError::conflict(
                self.subject(name),
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(uid) = binding["metadata"]["uid"]
            .as_str()
            .filter(|u| !u.is_empty())
        {
            let actual = old.metadata().uid.as_deref().unwrap_or_default();
            if uid != actual {
                return Err(ApiError::conflict(
                    self.subject(name),
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        value["spec"]["nodeName"] = json!(node);
        mark_scheduled(&mut value);
        let object: K::Object =
            serde_json::from_value(value).map_err(|err| ApiError::internal("binding", &err))?;
        self.store_update(ctx, object, &old, current, Change::Binding)
            .await?;
        Ok(json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }
}

/// Sets the PodScheduled condition True, as a binding does in Kubernetes;
/// its transition time moves only when its status changes.
fn mark_scheduled(pod: &mut Value) {
    let scheduled = json!({
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": crate::clock::now(),
    });
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    let Some(conditions) = pod["status"]["conditions"].as_array_mut() else {
        return;
    };
    match conditions.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(existing) if existing["status"] == "True" => {}
        Some(existing) => *existing = scheduled,
        None => conditions.push(scheduled),
    }
}
