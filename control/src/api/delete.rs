//! delete and deletecollection: now, or marked deleting (graceful deletion
//! of pods, finalizers, orphan and foreground propagation recorded as
//! finalizers for the garbage collector).

use axum::{http::StatusCode, response::Response};
use k8s_openapi::{
    Metadata,
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, Time},
    jiff,
};
use serde_json::json;

use super::{
    ApiError, Context,
    patch::ConflictRetry,
    request::{accept, body_json},
    resource::{ApiRequest, Typed, json_response, parse_revision},
};
use crate::{
    registry::{Deletion, Kind, to_value},
    store::Revision,
};

impl<K: Kind> Typed<K> {
    pub(super) async fn delete(
        &self,
        ctx: &Context,
        request: &ApiRequest,
        name: &str,
    ) -> Result<Response, ApiError> {
        let options = delete_options(request)?;
        let namespace = request.namespace.as_deref();
        let accept = accept(&request.headers);
        if request.query.dry_run() {
            let (object, current) = self.load(ctx, namespace, name).await?;
            self.check_preconditions(&object, current, &options)?;
            return Ok(self.respond(StatusCode::OK, &object, accept, &request.query, &[]));
        }
        let deleted = self.delete_named(ctx, namespace, name, &options).await?;
        Ok(self.respond(StatusCode::OK, &deleted, accept, &request.query, &[]))
    }

    /// Deletes `name` as `options` say. A write that lost a race with
    /// another (a status update, a finalizer removed) is made again on the
    /// object as it is now, its preconditions checked again, as Kubernetes
    /// does: `kubectl delete` must not fail because a controller wrote.
    async fn delete_named(
        &self,
        ctx: &Context,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<K::Object, ApiError> {
        let retry = ConflictRetry::new();
        loop {
            let (object, current) = self.load(ctx, namespace, name).await?;
            self.check_preconditions(&object, current, options)?;
            match self.delete_object(ctx, object, current, options).await {
                Err(err) if retry.again(&err) => continue,
                result => return result,
            }
        }
    }

    fn check_preconditions(
        &self,
        object: &K::Object,
        current: Revision,
        options: &DeleteOptions,
    ) -> Result<(), ApiError> {
        let Some(preconditions) = &options.preconditions else {
            return Ok(());
        };
        let meta = object.metadata();
        let name = meta.name.as_deref().unwrap_or_default();
        if preconditions.uid.is_some() && preconditions.uid != meta.uid {
            return Err(ApiError::conflict(
                self.subject(name),
                &format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    preconditions.uid.as_deref().unwrap_or_default(),
                    meta.uid.as_deref().unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = preconditions.resource_version.as_deref()
            && parse_revision(rv)? != current
        {
            return Err(ApiError::conflict(
                self.subject(name),
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {current}"
                ),
            ));
        }
        Ok(())
    }

    /// Deletes now, or marks the object deleting (graceful deletion,
    /// finalizers, orphan or foreground propagation recorded as finalizers
    /// for the garbage collector).
    pub(super) async fn delete_object(
        &self,
        ctx: &Context,
        mut object: K::Object,
        current: Revision,
        options: &DeleteOptions,
    ) -> Result<K::Object, ApiError> {
        let name = object.metadata().name.clone().unwrap_or_default();
        let key = self.key(object.metadata().namespace.as_deref(), &name);
        let propagation =
            options
                .propagation_policy
                .as_deref()
                .or(match options.orphan_dependents {
                    Some(true) => Some("Orphan"),
                    _ => None,
                });
        let deletion = self.kind.deletion(&object, options);
        let mut finalizers = object.metadata().finalizers.clone().unwrap_or_default();
        let already_deleting = object.metadata().deletion_timestamp.is_some();
        if !already_deleting {
            for (policy, finalizer) in [("Orphan", "orphan"), ("Foreground", "foregroundDeletion")]
            {
                if propagation == Some(policy) && !finalizers.iter().any(|f| f == finalizer) {
                    finalizers.push(finalizer.to_owned());
                }
            }
        }
        if deletion == Deletion::Now && finalizers.is_empty() {
            ctx.store
                .delete(&key, Some(current))
                .await
                .map_err(|err| ApiError::from_store(err, self.subject(&name)))?;
            self.kind.after_delete(ctx.store.as_ref(), &object).await;
            return Ok(object);
        }
        let grace = match deletion {
            Deletion::Graceful(seconds) => seconds,
            Deletion::Now => 0,
        };
        let meta = object.metadata_mut();
        let shortened = meta
            .deletion_grace_period_seconds
            .is_some_and(|g| grace < g);
        if already_deleting && !shortened {
            return Ok(object);
        }
        let deadline = jiff::Timestamp::now().as_second() + grace;
        meta.deletion_timestamp = Some(Time(
            jiff::Timestamp::from_second(deadline).unwrap_or_else(|_| jiff::Timestamp::now()),
        ));
        meta.deletion_grace_period_seconds = Some(grace);
        meta.finalizers = Some(finalizers).filter(|f| !f.is_empty());
        self.kind.on_deleting(&mut object);
        let kv = ctx
            .store
            .update(&key, self.encode(&object)?, current)
            .await
            .map_err(|err| ApiError::from_store(err, self.subject(&name)))?;
        object.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
        Ok(object)
    }

    pub(super) async fn delete_collection(
        &self,
        ctx: &Context,
        request: &ApiRequest,
    ) -> Result<Response, ApiError> {
        let options = delete_options(request)?;
        let (objects, revision, _) = self.list_objects(ctx, request).await?;
        let mut deleted = Vec::new();
        for object in objects {
            if request.query.dry_run() {
                deleted.push(object);
                continue;
            }
            let meta = object.metadata();
            let name = meta.name.as_deref().unwrap_or_default();
            match self
                .delete_named(ctx, meta.namespace.as_deref(), name, &options)
                .await
            {
                Ok(object) => deleted.push(object),
                // Deleted meanwhile, or its preconditions no longer hold.
                Err(err) if err.code == 404 || err.code == 409 => {
                    tracing::debug!(%name, "skipped in deletecollection")
                }
                Err(err) => return Err(err),
            }
        }
        let value = json!({
            "kind": <K::Object as k8s_openapi::ListableResource>::LIST_KIND,
            "apiVersion": K::INFO.api_version(),
            "metadata": { "resourceVersion": revision.to_string() },
            "items": deleted.iter().map(to_value).collect::<Vec<_>>(),
        });
        Ok(json_response(StatusCode::OK, &value))
    }
}

/// DeleteOptions from the body (kubectl sends one) and the query.
fn delete_options(request: &ApiRequest) -> Result<DeleteOptions, ApiError> {
    let mut options: DeleteOptions = if request.body.is_empty() {
        DeleteOptions::default()
    } else {
        let value = body_json(&request.headers, &request.body)?;
        serde_json::from_value(value)
            .map_err(|err| ApiError::bad_request(format!("invalid DeleteOptions: {err}")))?
    };
    if let Some(grace) = request.query.number("gracePeriodSeconds")? {
        options.grace_period_seconds = Some(grace);
    }
    if let Some(policy) = request.query.get("propagationPolicy") {
        options.propagation_policy = Some(policy.to_owned());
    }
    if let Some(policy) = options.propagation_policy.as_deref()
        && !["Orphan", "Background", "Foreground"].contains(&policy)
    {
        return Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{policy}\": supported values: \"Orphan\", \"Background\", \"Foreground\""
        )));
    }
    Ok(options)
}
