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
    patch::{ConflictRetry, PatchType, apply_patch, patch_type},
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

    /// GET, PUT or PATCH of a workload's Scale. A write that names no
    /// resourceVersion is retried on conflict, as Kubernetes does: a
    /// status write by a controller must not fail `kubectl scale`.
    pub(super) async fn scale(
        &self,
        ctx: &Context,
        request: &ApiRequest,
        name: &str,
    ) -> Result<Response, ApiError> {
        let namespace = request.namespace.as_deref();
        let retry = ConflictRetry::new();
        loop {
            let (old, current) = self.load(ctx, namespace, name).await?;
            let scale = self.scale_of(&old);
            let wanted = match request.method {
                Method::GET => return Ok(json_response(StatusCode::OK, &scale)),
                Method::PUT => body_json(&request.headers, &request.body)?,
                Method::PATCH => patch_scale(ctx, request, &scale)?,
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
            let named = wanted["metadata"]
                .get("resourceVersion")
                .and_then(Value::as_str)
                .filter(|rv| !rv.is_empty());
            let pinned = match request.method {
                Method::PATCH => named != scale["metadata"]["resourceVersion"].as_str(),
                _ => named.is_some(),
            };
            let expected = match named {
                Some(rv) => parse_revision(rv)?,
                None => current,
            };
            let mut value = to_value(&old);
            value["spec"]["replicas"] = json!(replicas);
            let object: K::Object =
                serde_json::from_value(value).map_err(|err| ApiError::internal("scaling", &err))?;
            match self
                .store_update(ctx, object, &old, expected, Change::Update)
                .await
            {
                Ok(updated) => return Ok(json_response(StatusCode::OK, &self.scale_of(&updated))),
                Err(err) if !pinned && retry.again(&err) => continue,
                Err(err) => return Err(err),
            }
        }
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

/// `scale` with the request's patch applied. Scale has no merge keys:
/// a strategic merge patch is a merge patch here.
fn patch_scale(ctx: &Context, request: &ApiRequest, scale: &Value) -> Result<Value, ApiError> {
    let kind = match patch_type(request)? {
        PatchType::Strategic => PatchType::Merge,
        kind => kind,
    };
    let patch = body_json(&request.headers, &request.body)?;
    apply_patch(
        &ctx.schemas,
        "io.k8s.api.autoscaling.v1.Scale",
        kind,
        scale,
        &patch,
    )
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
