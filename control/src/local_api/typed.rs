//! Typed requests of the in-process client: the path is built from the
//! k8s-openapi type (group, version, plural, scope) and the object's
//! metadata, the body is the typed object, the answer decoded as that
//! type. A wrong kind or a misspelt path is a compile error, not a 404 at
//! run time. Patches stay JSON: a patch says what changes, not an object.

use std::marker::PhantomData;

use axum::http::Method;
use k8s_openapi::{
    ClusterResourceScope, Metadata, NamespaceResourceScope, Resource,
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{LocalApi, LocalApiError};

/// Whether a resource scope puts objects below a namespace.
pub trait Scope {
    const NAMESPACED: bool;
}

impl Scope for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl Scope for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// An object type the client can address.
pub trait Addressable: Resource<Scope: Scope> + Serialize + DeserializeOwned + Send {}

impl<K> Addressable for K where K: Resource<Scope: Scope> + Serialize + DeserializeOwned + Send {}

/// How a patch body is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
}

impl PatchType {
    fn content_type(self) -> &'static str {
        match self {
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Json => "application/json-patch+json",
        }
    }
}

/// One object of kind `K`, or its collection, by namespace and name.
#[derive(Debug, Clone)]
pub struct ObjectRef<K> {
    namespace: Option<String>,
    name: String,
    kind: PhantomData<fn() -> K>,
}

impl<K: Addressable> ObjectRef<K> {
    /// The object `name` in `namespace` (ignored for cluster-scoped kinds).
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        Self {
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
            kind: PhantomData,
        }
    }

    /// The object `meta` describes.
    pub fn of(meta: &ObjectMeta) -> Self {
        Self::new(
            meta.namespace.as_deref(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    fn path(&self) -> String {
        format!(
            "{}/{}",
            collection::<K>(self.namespace.as_deref()),
            self.name
        )
    }
}

/// `/api/v1/namespaces/<ns>/pods`, `/apis/apps/v1/deployments`, ...
pub fn collection<K: Addressable>(namespace: Option<&str>) -> String {
    let root = if K::GROUP.is_empty() {
        format!("/api/{}", K::VERSION)
    } else {
        format!("/apis/{}/{}", K::GROUP, K::VERSION)
    };
    match namespace {
        Some(namespace) if <K::Scope as Scope>::NAMESPACED => {
            format!("{root}/namespaces/{namespace}/{}", K::URL_PATH_SEGMENT)
        }
        _ => format!("{root}/{}", K::URL_PATH_SEGMENT),
    }
}

fn body<T: Serialize>(object: &T) -> Result<Value, LocalApiError> {
    serde_json::to_value(object).map_err(|err| LocalApiError {
        code: 0,
        message: format!("encoding the request: {err}"),
    })
}

fn decoded<K: DeserializeOwned>(value: Value) -> Result<K, LocalApiError> {
    serde_json::from_value(value).map_err(|err| LocalApiError {
        code: 0,
        message: format!("decoding the answer: {err}"),
    })
}

impl LocalApi {
    /// Creates `object` in its namespace; the answer is the stored object.
    pub async fn create<K>(&self, object: &K) -> Result<K, LocalApiError>
    where
        K: Addressable + Metadata<Ty = ObjectMeta>,
    {
        let path = collection::<K>(object.metadata().namespace.as_deref());
        let created = self
            .send(Method::POST, &path, "application/json", &body(object)?)
            .await?;
        decoded(created)
    }

    /// Replaces `object` (compare-and-swap on its resourceVersion, if it
    /// carries one); None if it is gone.
    pub async fn replace<K>(&self, object: &K) -> Result<Option<K>, LocalApiError>
    where
        K: Addressable + Metadata<Ty = ObjectMeta>,
    {
        let path = ObjectRef::<K>::of(object.metadata()).path();
        let replaced = self
            .send_if_exists(Method::PUT, &path, "application/json", &body(object)?)
            .await?;
        replaced.map(decoded).transpose()
    }

    /// Patches the object `at` (or, with `subresource`, e.g. "status",
    /// that part of it); None if it is gone.
    pub async fn patch<K: Addressable>(
        &self,
        at: &ObjectRef<K>,
        subresource: Option<&str>,
        kind: PatchType,
        patch: &Value,
    ) -> Result<Option<K>, LocalApiError> {
        let path = match subresource {
            Some(sub) => format!("{}/{sub}", at.path()),
            None => at.path(),
        };
        let patched = self
            .send_if_exists(Method::PATCH, &path, kind.content_type(), patch)
            .await?;
        patched.map(decoded).transpose()
    }

    /// Deletes the object `at` with `options` (preconditions, grace,
    /// propagation); None if it was gone already.
    pub async fn delete<K: Addressable>(
        &self,
        at: &ObjectRef<K>,
        options: &DeleteOptions,
    ) -> Result<Option<()>, LocalApiError> {
        let deleted = self
            .send_if_exists(
                Method::DELETE,
                &at.path(),
                "application/json",
                &body(options)?,
            )
            .await?;
        Ok(deleted.map(drop))
    }

    /// The object `at`; None if there is none.
    pub async fn get<K: Addressable>(&self, at: &ObjectRef<K>) -> Result<Option<K>, LocalApiError> {
        let found = self
            .send_if_exists(Method::GET, &at.path(), "application/json", &Value::Null)
            .await?;
        found.map(decoded).transpose()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Pod},
    };

    use super::*;

    #[test]
    fn paths_follow_the_group_version_plural_and_scope() {
        assert_eq!(collection::<Pod>(Some("ns")), "/api/v1/namespaces/ns/pods");
        assert_eq!(
            collection::<Deployment>(Some("ns")),
            "/apis/apps/v1/namespaces/ns/deployments"
        );
        assert_eq!(
            collection::<Namespace>(Some("ignored")),
            "/api/v1/namespaces"
        );
        assert_eq!(
            ObjectRef::<Pod>::new(Some("ns"), "web-0").path(),
            "/api/v1/namespaces/ns/pods/web-0"
        );
    }
}
