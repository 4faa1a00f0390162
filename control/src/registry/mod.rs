//! Per-resource rules: what each served kind is (names, scope,
//! subresources), how it is defaulted and validated, what is spec and what
//! is status, which fields selectors can use, and the columns `kubectl get`
//! shows. The API's request pipeline (api/resource.rs) is the same for every
//! kind and asks the kind's [`Kind`] implementation at each step.

pub mod allocations;
pub mod kinds;
pub mod served;
pub mod table;
pub mod validation;

use async_trait::async_trait;
use k8s_openapi::{
    ListableResource, Metadata, Resource,
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

pub use self::{
    table::Column,
    validation::{FieldError, NameRule},
};
use crate::{
    errors::{ApiError, Subject},
    store::Store,
};

/// Static facts about a served resource, as discovery reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    /// "all" puts a kind in `kubectl get all`.
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub subresources: &'static [Subresource],
}

impl ResourceInfo {
    /// Where the kind's group and version are served: `/api/v1` or
    /// `/apis/<group>/<version>`.
    pub fn api_root(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s.name == name)
    }
}

/// A subresource and what it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    /// The kind its requests and responses carry (e.g. Scale for "scale").
    pub kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub verbs: &'static [&'static str],
}

/// The status subresource of a kind in `group`/`version` of kind `kind`.
pub const fn status(group: &'static str, version: &'static str, kind: &'static str) -> Subresource {
    Subresource {
        name: "status",
        kind,
        group,
        version,
        verbs: &["get", "patch", "update"],
    }
}

/// The scale subresource (autoscaling/v1 Scale).
pub const SCALE: Subresource = Subresource {
    name: "scale",
    kind: "Scale",
    group: "autoscaling",
    version: "v1",
    verbs: &["get", "patch", "update"],
};

/// Verbs every served resource supports.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// What every served kind's object is: a typed k8s-openapi resource.
pub trait Object:
    Resource
    + ListableResource
    + Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + schemars::JsonSchema
    + Clone
    + Default
    + Send
    + Sync
    + 'static
{
}

impl<T> Object for T where
    T: Resource
        + ListableResource
        + Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + schemars::JsonSchema
        + Clone
        + Default
        + Send
        + Sync
        + 'static
{
}

/// How a delete proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Remove the object now (finalizers permitting).
    Now,
    /// Mark it with a deletionTimestamp and this grace period; whoever runs
    /// it (the agent, for pods) removes it when it has stopped.
    Graceful(i64),
}

/// The rules of one kind.
#[async_trait]
pub trait Kind: Send + Sync + Clone + 'static {
    type Object: Object;

    const INFO: ResourceInfo;
    /// What names this kind accepts.
    const NAMES: NameRule = NameRule::Subdomain;
    /// Whether `metadata.generation` counts changes to `spec`.
    const GENERATION: bool = false;

    /// Fills in defaults, on create and on every update.
    fn default(&self, _object: &mut Self::Object) {}

    /// Kind-specific checks; metadata is checked for every kind.
    fn validate(&self, _object: &Self::Object) -> Vec<FieldError> {
        Vec::new()
    }

    /// Checks on a change: immutable fields and the like.
    fn validate_update(&self, _new: &Self::Object, _old: &Self::Object) -> Vec<FieldError> {
        Vec::new()
    }

    /// The status a new object starts with (clients cannot set it).
    fn initial_status(&self, _object: &mut Self::Object) {}

    /// The value of field selector `field` (beyond metadata.name and
    /// metadata.namespace, which every kind has); None if the field is not
    /// selectable, whatever the object (an empty object answers "" for
    /// every selectable field).
    fn field(&self, _object: &Self::Object, _field: &str) -> Option<String> {
        None
    }

    /// The columns of `kubectl get`, NAME included (priority > 0: only
    /// with -o wide).
    fn columns(&self) -> Vec<Column>;

    /// One row of the table: a cell per column.
    fn cells(&self, object: &Self::Object, now: k8s_openapi::jiff::Timestamp) -> Vec<Value>;

    /// How a delete of `object` proceeds.
    fn deletion(&self, _object: &Self::Object, _options: &DeleteOptions) -> Deletion {
        Deletion::Now
    }

    /// Marks an object whose deletion has begun (e.g. a namespace goes
    /// Terminating).
    fn on_deleting(&self, _object: &mut Self::Object) {}

    /// Runs before a new object is stored (allocations such as a Service's
    /// cluster IP); an error refuses the create.
    async fn before_create(
        &self,
        _store: &dyn Store,
        _object: &mut Self::Object,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Runs before an update is stored.
    async fn before_update(
        &self,
        _store: &dyn Store,
        _new: &mut Self::Object,
        _old: &Self::Object,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Runs after an object is removed for good (releases allocations).
    async fn after_delete(&self, _store: &dyn Store, _object: &Self::Object) {}
}

/// A `Subject` for an object of kind `K` called `name`.
pub fn subject<K: Kind>(name: &str) -> Subject<'_> {
    Subject {
        group: K::INFO.group,
        kind: K::INFO.kind,
        plural: K::INFO.plural,
        name,
    }
}

/// `object` as JSON, or Null if it cannot be (it always can for our types).
pub fn to_value<T: Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}
