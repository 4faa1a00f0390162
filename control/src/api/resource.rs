//! The request pipeline every kind shares: decode, default, validate,
//! store with resourceVersion rules, and answer with the object, a list or
//! a Table. `Typed<K>` runs it for one kind, asking `K` (registry) at each
//! step; the router reaches it through the object-safe [`ResourceApi`].

use std::sync::Arc;

use async_trait::async_trait;
use axum::{
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use k8s_openapi::{Metadata, apimachinery::pkg::apis::meta::v1::DeleteOptions, jiff};
use serde_json::{Value, json};

use super::{
    ApiError, Context, Subject,
    request::{Accept, FieldValidation, Query, accept, body_json, decode_typed},
};
use crate::{
    labels::{FieldTerm, Selector, parse_field_selector},
    registry::{Deletion, Kind, ResourceInfo, to_value, validation::object_meta},
    store::{KeyValue, Revision},
};

/// What kind of change a write is, for the rules it must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Through update, patch or a subresource: the kind's update rules
    /// (immutable fields) apply.
    Update,
    /// The binding subresource setting a pod's node, which no update may.
    Binding,
}

/// One API request, as the router hands it to a resource.
#[derive(Debug)]
pub struct ApiRequest {
    pub method: Method,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A served resource, whatever its kind.
#[async_trait]
pub trait ResourceApi: Send + Sync {
    fn info(&self) -> &'static ResourceInfo;
    /// Adds the kind's JSON schema (and those it refers to) to `generator`;
    /// returns its name.
    fn add_schema(&self, generator: &mut schemars::SchemaGenerator) -> String;
    async fn handle(&self, ctx: &Context, request: ApiRequest) -> Result<Response, ApiError>;
}

/// The pipeline for kind `K`.
#[derive(Debug)]
pub struct Typed<K> {
    pub(super) kind: K,
}

impl<K: Kind> Typed<K> {
    /// The pipeline for `kind`, behind the router's interface.
    pub fn resource(kind: K) -> Arc<dyn ResourceApi> {
        Arc::new(Self { kind })
    }
}

/// A random (version 4) UUID.
fn uid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Five characters from Kubernetes' generateName alphabet (no vowels, no
/// look-alikes), so generated names never spell words.
fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random::<u32>() as usize % ALPHABET.len()] as char)
        .collect()
}

pub(super) fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

impl<K: Kind> Typed<K> {
    pub(super) fn subject<'a>(&self, name: &'a str) -> Subject<'a> {
        Subject {
            group: K::INFO.group,
            kind: K::INFO.kind,
            plural: K::INFO.plural,
            name,
        }
    }

    /// Where objects live in the store: /registry/<plural>/[<namespace>/]<name>.
    pub(super) fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }

    pub(super) fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| K::INFO.namespaced) {
            Some(namespace) => format!("/registry/{}/{namespace}/", K::INFO.plural),
            None => format!("/registry/{}/", K::INFO.plural),
        }
    }

    /// A stored object, with its resourceVersion (the key's mod revision).
    pub(super) fn decode(&self, kv: &KeyValue) -> Result<K::Object, ApiError> {
        let mut object: K::Object = serde_json::from_slice(&kv.value)
            .map_err(|err| ApiError::internal("decoding a stored object", &err))?;
        object.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
        Ok(object)
    }

    /// What is stored: the object without its resourceVersion, its
    /// metadata written first so a list can put the version back in without
    /// decoding it ([`with_resource_version`]).
    pub(super) fn encode(&self, object: &K::Object) -> Result<Bytes, ApiError> {
        let mut object = object.clone();
        object.metadata_mut().resource_version = None;
        let Value::Object(mut fields) = to_value(&object) else {
            return Err(ApiError::internal(
                "encoding an object",
                &"not a JSON object",
            ));
        };
        let metadata = fields.remove("metadata").unwrap_or_else(|| json!({}));
        let mut bytes = b"{\"metadata\":".to_vec();
        serde_json::to_writer(&mut bytes, &metadata)
            .map_err(|err| ApiError::internal("encoding an object", &err))?;
        for (key, value) in &fields {
            bytes.push(b',');
            serde_json::to_writer(&mut bytes, key)
                .map_err(|err| ApiError::internal("encoding an object", &err))?;
            bytes.push(b':');
            serde_json::to_writer(&mut bytes, value)
                .map_err(|err| ApiError::internal("encoding an object", &err))?;
        }
        bytes.push(b'}');
        Ok(Bytes::from(bytes))
    }

    pub(super) async fn load(
        &self,
        ctx: &Context,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(K::Object, Revision), ApiError> {
        match ctx.store.get(&self.key(namespace, name)).await {
            Ok(Some(kv)) => Ok((self.decode(&kv)?, kv.mod_revision)),
            Ok(None) => Err(ApiError::not_found(self.subject(name))),
            Err(err) => Err(ApiError::from_store(err, self.subject(name))),
        }
    }

    /// Decodes a request body into the kind, applying `fieldValidation` to
    /// fields the schema does not know; returns warnings for Warn.
    pub(super) fn decode_body(
        &self,
        value: Value,
        validation: FieldValidation,
    ) -> Result<(K::Object, Vec<String>), ApiError> {
        let kind = K::INFO.kind;
        let version = K::INFO.version;
        let cannot = |why: String| {
            ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {why}"
            ))
        };
        if let Some(body_kind) = value.get("kind").and_then(Value::as_str)
            && body_kind != kind
        {
            return Err(cannot(format!(
                "the kind of the object ({body_kind}) does not match the kind of the request ({kind})"
            )));
        }
        if let Some(api_version) = value.get("apiVersion").and_then(Value::as_str)
            && api_version != K::INFO.api_version()
        {
            return Err(cannot(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                K::INFO.api_version()
            )));
        }
        let (object, unknown) =
            decode_typed::<K::Object>(value).map_err(|err| cannot(err.to_string()))?;
        let messages: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match validation {
            FieldValidation::Strict if !messages.is_empty() => Err(cannot(format!(
                "strict decoding error: {}",
                messages.join(", ")
            ))),
            FieldValidation::Warn => Ok((object, messages)),
            _ => Ok((object, Vec::new())),
        }
    }

    /// Checks an object about to be stored, answering 422 with every problem.
    pub(super) fn validate(
        &self,
        object: &K::Object,
        old: Option<&K::Object>,
    ) -> Result<(), ApiError> {
        let mut errors = object_meta(object.metadata(), K::NAMES, K::INFO.namespaced);
        errors.extend(self.kind.validate(object));
        if let Some(old) = old {
            errors.extend(self.kind.validate_update(object, old));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            let name = object.metadata().name.clone().unwrap_or_default();
            Err(ApiError::invalid(self.subject(&name), &errors))
        }
    }

    /// Renders one object as the client asked: itself or a one-row Table.
    pub(super) fn respond(
        &self,
        code: StatusCode,
        object: &K::Object,
        accept: Accept,
        query: &Query,
        warnings: &[String],
    ) -> Response {
        let value = match accept {
            Accept::Object => to_value(object),
            Accept::Table => self.table(std::slice::from_ref(object), None, query),
        };
        with_warnings(json_response(code, &value), warnings)
    }

    /// A Table of `objects`.
    pub(super) fn table(
        &self,
        objects: &[K::Object],
        list_meta: Option<Value>,
        query: &Query,
    ) -> Value {
        let now = jiff::Timestamp::now();
        let include = query.get("includeObject").unwrap_or("Metadata");
        let rows: Vec<Value> = objects
            .iter()
            .map(|object| {
                let mut row = json!({ "cells": self.kind.cells(object, now) });
                match include {
                    "Object" => row["object"] = to_value(object),
                    "None" => {}
                    _ => {
                        row["object"] = json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": to_value(object.metadata()),
                        })
                    }
                }
                row
            })
            .collect();
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": list_meta.unwrap_or_else(|| json!({})),
            "columnDefinitions": self.kind.columns().iter().map(|c| c.definition()).collect::<Vec<_>>(),
            "rows": rows,
        })
    }

    /// Whether `object` passes the request's label and field selectors.
    pub(super) fn selected(
        &self,
        object: &K::Object,
        labels: &Selector,
        fields: &[FieldTerm],
    ) -> Result<bool, ApiError> {
        if !labels.matches_opt(object.metadata().labels.as_ref()) {
            return Ok(false);
        }
        for term in fields {
            let meta = object.metadata();
            let value = match term.field.as_str() {
                "metadata.name" => meta.name.clone().unwrap_or_default(),
                "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
                field => self.kind.field(object, field).ok_or_else(|| {
                    ApiError::bad_request(format!("field label not supported: {field}"))
                })?,
            };
            if (value == term.value) != term.equals {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(super) fn selectors(&self, query: &Query) -> Result<(Selector, Vec<FieldTerm>), ApiError> {
        let labels = Selector::parse(query.get("labelSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        let fields = parse_field_selector(query.get("fieldSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        // Refuse an unknown field up front, even where nothing would match.
        let empty = K::Object::default();
        for term in &fields {
            if !matches!(term.field.as_str(), "metadata.name" | "metadata.namespace")
                && self.kind.field(&empty, &term.field).is_none()
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    term.field
                )));
            }
        }
        Ok((labels, fields))
    }

    /// 404 for a namespaced request into a namespace that does not exist;
    /// 403 for a create into one being deleted.
    async fn check_namespace(
        &self,
        ctx: &Context,
        namespace: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let namespaces = Subject {
            group: "",
            kind: "Namespace",
            plural: "namespaces",
            name: namespace,
        };
        match ctx
            .store
            .get(&format!("/registry/namespaces/{namespace}"))
            .await
        {
            Ok(Some(kv)) => {
                let terminating = serde_json::from_slice::<Value>(&kv.value)
                    .ok()
                    .is_some_and(|ns| ns["metadata"].get("deletionTimestamp").is_some());
                if terminating {
                    Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                        K::INFO.plural,
                        name,
                    )))
                } else {
                    Ok(())
                }
            }
            Ok(None) => Err(ApiError::not_found(namespaces)),
            Err(err) => Err(ApiError::from_store(err, namespaces)),
        }
    }

    async fn create(&self, ctx: &Context, request: &ApiRequest) -> Result<Response, ApiError> {
        let value = body_json(&request.headers, &request.body)?;
        let (mut object, warnings) = self.decode_body(value, request.query.field_validation()?)?;
        let namespace = request.namespace.as_deref();
        let meta = object.metadata_mut();
        if let (Some(url), Some(body)) = (namespace, meta.namespace.as_deref())
            && !body.is_empty()
            && body != url
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta.namespace = namespace.filter(|_| K::INFO.namespaced).map(str::to_owned);
        let generated = meta.name.as_deref().is_none_or(str::is_empty)
            && meta.generate_name.as_deref().is_some_and(|g| !g.is_empty());
        if generated {
            meta.name = Some(format!(
                "{}{}",
                meta.generate_name.clone().unwrap_or_default(),
                name_suffix()
            ));
        }
        self.prepare_new(&mut object);
        self.validate(&object, None)?;
        if let Some(namespace) = namespace.filter(|_| K::INFO.namespaced) {
            let name = object.metadata().name.clone().unwrap_or_default();
            self.check_namespace(ctx, namespace, &name).await?;
        }
        let accept = accept(&request.headers);
        if request.query.dry_run() {
            return Ok(self.respond(
                StatusCode::CREATED,
                &object,
                accept,
                &request.query,
                &warnings,
            ));
        }
        let name = object.metadata().name.clone().unwrap_or_default();
        let key = self.key(namespace, &name);
        // An existing object is the answer, before anything is allocated
        // for a new one (the store's create below still decides races).
        match ctx.store.get(&key).await {
            Ok(Some(_)) => return Err(ApiError::already_exists(self.subject(&name))),
            Ok(None) => {}
            Err(err) => return Err(ApiError::from_store(err, self.subject(&name))),
        }
        self.kind
            .before_create(ctx.store.as_ref(), &mut object)
            .await?;
        match ctx.store.create(&key, self.encode(&object)?).await {
            Ok(kv) => {
                object.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
                Ok(self.respond(
                    StatusCode::CREATED,
                    &object,
                    accept,
                    &request.query,
                    &warnings,
                ))
            }
            Err(err) => {
                // Give back what before_create took.
                self.kind.after_delete(ctx.store.as_ref(), &object).await;
                Err(ApiError::from_store(err, self.subject(&name)))
            }
        }
    }

    /// The server-set parts of a new object.
    fn prepare_new(&self, object: &mut K::Object) {
        self.kind.initial_status(object);
        self.kind.default(object);
        let meta = object.metadata_mut();
        meta.uid = Some(uid());
        meta.creation_timestamp = Some(crate::clock::now());
        meta.resource_version = None;
        meta.deletion_timestamp = None;
        meta.deletion_grace_period_seconds = None;
        meta.managed_fields = None;
        meta.generation = K::GENERATION.then_some(1);
    }

    async fn get(
        &self,
        ctx: &Context,
        request: &ApiRequest,
        name: &str,
    ) -> Result<Response, ApiError> {
        let (object, _) = self.load(ctx, request.namespace.as_deref(), name).await?;
        Ok(self.respond(
            StatusCode::OK,
            &object,
            accept(&request.headers),
            &request.query,
            &[],
        ))
    }

    /// Stores `object` over the version at `expected`, keeping what clients
    /// may not change; deletes it instead if it was being deleted and its
    /// last finalizer is gone.
    pub(super) async fn store_update(
        &self,
        ctx: &Context,
        mut object: K::Object,
        old: &K::Object,
        expected: Revision,
        change: Change,
    ) -> Result<K::Object, ApiError> {
        let name = old.metadata().name.clone().unwrap_or_default();
        let namespace = old.metadata().namespace.clone();
        {
            let (new_meta, old_meta) = (object.metadata_mut(), old.metadata());
            new_meta.name = old_meta.name.clone();
            new_meta.namespace = old_meta.namespace.clone();
            new_meta.uid = old_meta.uid.clone();
            new_meta.creation_timestamp = old_meta.creation_timestamp.clone();
            new_meta.deletion_timestamp = old_meta.deletion_timestamp.clone();
            new_meta.deletion_grace_period_seconds = old_meta.deletion_grace_period_seconds;
            new_meta.generation = old_meta.generation;
            new_meta.managed_fields = None;
        }
        if K::GENERATION && to_value(&object).get("spec") != to_value(old).get("spec") {
            object.metadata_mut().generation = Some(old.metadata().generation.unwrap_or(0) + 1);
        }
        self.kind.default(&mut object);
        let rules_old = match change {
            Change::Update => Some(old),
            Change::Binding => None,
        };
        self.validate(&object, rules_old)?;
        self.kind
            .before_update(ctx.store.as_ref(), &mut object, old)
            .await?;
        let key = self.key(namespace.as_deref(), &name);
        let finalized = object.metadata().deletion_timestamp.is_some()
            && object
                .metadata()
                .finalizers
                .as_ref()
                .is_none_or(Vec::is_empty)
            && self.kind.deletion(&object, &DeleteOptions::default()) == Deletion::Now;
        if finalized {
            return match ctx.store.delete(&key, Some(expected)).await {
                Ok(_) => {
                    self.kind.after_delete(ctx.store.as_ref(), &object).await;
                    Ok(object)
                }
                Err(err) => Err(ApiError::from_store(err, self.subject(&name))),
            };
        }
        let kv = ctx
            .store
            .update(&key, self.encode(&object)?, expected)
            .await
            .map_err(|err| ApiError::from_store(err, self.subject(&name)))?;
        object.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
        Ok(object)
    }

    async fn update(
        &self,
        ctx: &Context,
        request: &ApiRequest,
        name: &str,
    ) -> Result<Response, ApiError> {
        let value = body_json(&request.headers, &request.body)?;
        let (mut object, warnings) = self.decode_body(value, request.query.field_validation()?)?;
        if let Some(body_name) = object.metadata().name.as_deref()
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let (old, current) = self.load(ctx, request.namespace.as_deref(), name).await?;
        let expected = match object.metadata().resource_version.as_deref() {
            Some(rv) if !rv.is_empty() => parse_revision(rv)?,
            _ => current,
        };
        let subresource = request.subresource.as_deref();
        object = match subresource {
            Some("status") => with_status_of(&old, &object)?,
            None => with_status_of(&object, &old)?,
            Some("finalize") => with_field_of(&old, &object, "spec")?,
            Some(other) => {
                return Err(ApiError::method_not_allowed(
                    &format!("update of {other}"),
                    K::INFO.plural,
                ));
            }
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
        let updated = self
            .store_update(ctx, object, &old, expected, Change::Update)
            .await?;
        Ok(self.respond(
            StatusCode::OK,
            &updated,
            accept(&request.headers),
            &request.query,
            &warnings,
        ))
    }
}

/// `target` with `source`'s status: a spec update keeps the stored
/// status; a status update keeps everything but the status.
pub(super) fn with_status_of<T: serde::Serialize + serde::de::DeserializeOwned>(
    target: &T,
    source: &T,
) -> Result<T, ApiError> {
    with_field_of(target, source, "status")
}

fn with_field_of<T: serde::Serialize + serde::de::DeserializeOwned>(
    target: &T,
    source: &T,
    field: &str,
) -> Result<T, ApiError> {
    let mut value = to_value(target);
    let source = to_value(source);
    let resource_version = source["metadata"].get("resourceVersion").cloned();
    match source.get(field) {
        Some(part) => value[field] = part.clone(),
        None => {
            if let Some(object) = value.as_object_mut() {
                object.remove(field);
            }
        }
    }
    // The version the client read travels with its request.
    if let Some(rv) = resource_version {
        value["metadata"]["resourceVersion"] = rv;
    }
    serde_json::from_value(value)
        .map_err(|err| ApiError::internal("copying an object's parts", &err))
}

pub(super) fn parse_revision(text: &str) -> Result<Revision, ApiError> {
    text.parse()
        .map(Revision)
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {text:?}")))
}

pub(super) fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let escaped = warning.replace('"', "\\\"");
        if let Ok(value) = format!("299 - \"{escaped}\"").parse() {
            response.headers_mut().append("Warning", value);
        }
    }
    response
}

#[async_trait]
impl<K: Kind> ResourceApi for Typed<K> {
    fn info(&self) -> &'static ResourceInfo {
        &K::INFO
    }

    fn add_schema(&self, generator: &mut schemars::SchemaGenerator) -> String {
        generator.subschema_for::<K::Object>();
        <K::Object as schemars::JsonSchema>::schema_name().into_owned()
    }

    async fn handle(&self, ctx: &Context, request: ApiRequest) -> Result<Response, ApiError> {
        if K::INFO.namespaced && request.namespace.is_none() && request.method != Method::GET {
            return Err(ApiError::no_route(
                "a namespaced resource needs a namespace",
            ));
        }
        let name = request.name.clone();
        let subresource = request.subresource.clone();
        if let Some(sub) = subresource.as_deref()
            && !K::INFO.has_subresource(sub)
        {
            return Err(ApiError::no_route(&format!("{}/{sub}", K::INFO.plural)));
        }
        let watch = request.query.flag("watch");
        match (&request.method, name.as_deref(), subresource.as_deref()) {
            (&Method::GET, None, None) if watch => self.watch(ctx, &request).await,
            (&Method::GET, None, None) => self.list(ctx, &request).await,
            (&Method::POST, None, None) => self.create(ctx, &request).await,
            (&Method::DELETE, None, None) => self.delete_collection(ctx, &request).await,
            (&Method::GET, Some(name), None | Some("status")) => {
                self.get(ctx, &request, name).await
            }
            (&Method::PUT, Some(name), None | Some("status") | Some("finalize")) => {
                self.update(ctx, &request, name).await
            }
            (&Method::PATCH, Some(name), None | Some("status")) => {
                self.patch(ctx, &request, name).await
            }
            (&Method::DELETE, Some(name), None) => self.delete(ctx, &request, name).await,
            (_, Some(name), Some("scale")) => self.scale(ctx, &request, name).await,
            (&Method::POST, Some(name), Some("binding")) => self.bind(ctx, &request, name).await,
            (&Method::GET, Some(name), Some("log")) => {
                let (object, _) = self.load(ctx, request.namespace.as_deref(), name).await?;
                let pod = serde_json::from_value(to_value(&object))
                    .map_err(|err| ApiError::internal("reading the pod", &err))?;
                super::pod_logs::pod_log(ctx, pod, &request.query).await
            }
            (method, _, _) => Err(ApiError::method_not_allowed(
                method.as_str(),
                K::INFO.plural,
            )),
        }
    }
}
