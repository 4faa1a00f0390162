//! Typed requests of the in-process client: the path is built from the
//! k8s-openapi type (group, version, plural, scope) and the object's
//! metadata, the body is the typed object, the answer decoded as that
//! type. A wrong kind or a misspelt path is a compile error, not a 404 at
//! run time. Patches stay JSON: a patch says what changes, not an object.
//! Kinds known only at run time (served kinds, by their [`ResourceInfo`])
//! get their paths from the same builder.

use std::{fmt::Write, marker::PhantomData};

use axum::{body::Body, http::Method};
use k8s_openapi::{
    ClusterResourceScope, List, ListableResource, Metadata, NamespaceResourceScope, Resource,
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta},
};
use serde::{
    Deserialize, Serialize,
    de::{DeserializeOwned, IgnoredAny},
};
use serde_json::Value;

use super::{LocalApi, LocalApiError, if_exists};
use crate::registry::ResourceInfo;

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
        typed_path::<K>(self.namespace.as_deref(), &[&self.name])
    }

    fn subresource_path(&self, subresource: &str) -> String {
        typed_path::<K>(self.namespace.as_deref(), &[&self.name, subresource])
    }
}

/// `/api/v1/namespaces/<ns>/pods`, `/apis/apps/v1/deployments`, ...
pub fn collection<K: Addressable>(namespace: Option<&str>) -> String {
    typed_path::<K>(namespace, &[])
}

/// The path of the object `name` of a served kind known only at run time,
/// for the garbage collector, which acts on objects of every kind.
pub fn served_path(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    let namespace = namespace.filter(|_| info.namespaced);
    api_path(info.group, info.version, info.plural, namespace, &[name])
}

/// The collection of a namespaced served kind in `namespace` (a
/// cluster-scoped kind has none there: its requests get a 404).
fn served_collection(info: &ResourceInfo, namespace: &str) -> String {
    api_path(info.group, info.version, info.plural, Some(namespace), &[])
}

fn typed_path<K: Addressable>(namespace: Option<&str>, rest: &[&str]) -> String {
    let namespace = namespace.filter(|_| <K::Scope as Scope>::NAMESPACED);
    api_path(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT, namespace, rest)
}

/// Every path the client sends: the group's root, the namespace (for
/// namespaced kinds), the plural, then name and subresource, in one
/// allocation (the scheduler binds thousands of pods a second).
fn api_path(
    group: &str,
    version: &str,
    plural: &str,
    namespace: Option<&str>,
    rest: &[&str],
) -> String {
    let length = "/apis//".len()
        + group.len()
        + version.len()
        + namespace.map_or(0, |ns| "/namespaces/".len() + ns.len())
        + 1
        + plural.len()
        + rest.iter().map(|part| 1 + part.len()).sum::<usize>();
    let mut path = String::with_capacity(length);
    if group.is_empty() {
        path.push_str("/api/");
    } else {
        path.push_str("/apis/");
        path.push_str(group);
        path.push('/');
    }
    path.push_str(version);
    if let Some(namespace) = namespace {
        path.push_str("/namespaces/");
        path.push_str(namespace);
    }
    path.push('/');
    path.push_str(plural);
    for part in rest {
        path.push('/');
        path.push_str(part);
    }
    path
}

/// A query parameter's value, percent-encoded: a field selector's `=`
/// and `,` would otherwise split the query.
fn query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

fn encoded<T: Serialize>(object: &T) -> Result<Body, LocalApiError> {
    serde_json::to_vec(object)
        .map(Body::from)
        .map_err(|err| LocalApiError {
            code: 0,
            message: format!("encoding the request: {err}"),
        })
}

fn decoded<K: DeserializeOwned>(answer: &[u8]) -> Result<K, LocalApiError> {
    serde_json::from_slice(answer).map_err(|err| LocalApiError {
        code: 0,
        message: format!("decoding the answer: {err}"),
    })
}

/// What a list of any kind is read for when only its length counts.
#[derive(Deserialize)]
struct Items {
    items: Option<Vec<IgnoredAny>>,
}

const JSON: &str = "application/json";

impl LocalApi {
    /// Creates `object` in its namespace; the answer is the stored object.
    pub async fn create<K>(&self, object: &K) -> Result<K, LocalApiError>
    where
        K: Addressable + Metadata<Ty = ObjectMeta>,
    {
        let path = collection::<K>(object.metadata().namespace.as_deref());
        let created = self
            .exchange(Method::POST, &path, JSON, encoded(object)?)
            .await?;
        decoded(&created)
    }

    /// As [`Self::create`], the answer not read: for writers that keep
    /// nothing of it (events, one for every binding).
    pub async fn create_unread<K>(&self, object: &K) -> Result<(), LocalApiError>
    where
        K: Addressable + Metadata<Ty = ObjectMeta>,
    {
        let path = collection::<K>(object.metadata().namespace.as_deref());
        self.exchange(Method::POST, &path, JSON, encoded(object)?)
            .await
            .map(drop)
    }

    /// Creates `object` (a Binding) as the subresource `subresource` of
    /// the object of kind `K` its metadata names, as a pod's `binding` is
    /// made; the answer, a Status, is not read.
    pub async fn create_subresource<K, B>(
        &self,
        object: &B,
        subresource: &str,
    ) -> Result<(), LocalApiError>
    where
        K: Addressable,
        B: Serialize + Metadata<Ty = ObjectMeta>,
    {
        let meta = object.metadata();
        let name = meta.name.as_deref().unwrap_or_default();
        let path = typed_path::<K>(meta.namespace.as_deref(), &[name, subresource]);
        self.exchange(Method::POST, &path, JSON, encoded(object)?)
            .await
            .map(drop)
    }

    /// Replaces `object` (compare-and-swap on its resourceVersion, if it
    /// carries one); None if it is gone.
    pub async fn replace<K>(&self, object: &K) -> Result<Option<K>, LocalApiError>
    where
        K: Addressable + Metadata<Ty = ObjectMeta>,
    {
        let path = ObjectRef::<K>::of(object.metadata()).path();
        self.read_if_exists(Method::PUT, &path, JSON, encoded(object)?)
            .await
    }

    /// Replaces the part `subresource` of `object` with its own (a
    /// namespace's spec through `finalize`, which a replace of the
    /// namespace leaves alone); None if it is gone.
    pub async fn replace_subresource<K>(
        &self,
        object: &K,
        subresource: &str,
    ) -> Result<Option<K>, LocalApiError>
    where
        K: Addressable + Metadata<Ty = ObjectMeta>,
    {
        let path = ObjectRef::<K>::of(object.metadata()).subresource_path(subresource);
        self.read_if_exists(Method::PUT, &path, JSON, encoded(object)?)
            .await
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
            Some(sub) => at.subresource_path(sub),
            None => at.path(),
        };
        let body = Body::from(patch.to_string());
        self.read_if_exists(Method::PATCH, &path, kind.content_type(), body)
            .await
    }

    /// Deletes the object `at` with `options` (preconditions, grace,
    /// propagation); None if it was gone already.
    pub async fn delete<K: Addressable>(
        &self,
        at: &ObjectRef<K>,
        options: &DeleteOptions,
    ) -> Result<Option<()>, LocalApiError> {
        let deleted = self
            .exchange(Method::DELETE, &at.path(), JSON, encoded(options)?)
            .await;
        Ok(if_exists(deleted)?.map(drop))
    }

    /// As [`Self::delete`], with the answer: the object as it was deleted,
    /// or as marked deleting (a pod on a node, an object with finalizers).
    pub async fn delete_returning<K: Addressable>(
        &self,
        at: &ObjectRef<K>,
        options: &DeleteOptions,
    ) -> Result<Option<K>, LocalApiError> {
        self.read_if_exists(Method::DELETE, &at.path(), JSON, encoded(options)?)
            .await
    }

    /// The object `at`; None if there is none.
    pub async fn get<K: Addressable>(&self, at: &ObjectRef<K>) -> Result<Option<K>, LocalApiError> {
        self.read_if_exists(Method::GET, &at.path(), JSON, Body::empty())
            .await
    }

    /// The answer to a request on one object, decoded; None if the
    /// object is gone.
    async fn read_if_exists<K: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Body,
    ) -> Result<Option<K>, LocalApiError> {
        let answer = self.exchange(method, path, content_type, body).await;
        if_exists(answer)?
            .map(|answer| decoded(&answer))
            .transpose()
    }

    /// The objects in `namespace` (all namespaces if None) whose fields
    /// match `selector` (`spec.nodeName=n1`): the server filters, so a
    /// caller wanting one node's pods does not decode the cluster's.
    pub async fn list_by_fields<K>(
        &self,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<List<K>, LocalApiError>
    where
        K: Addressable + ListableResource,
    {
        let path = format!(
            "{}?fieldSelector={}",
            collection::<K>(namespace),
            query_value(selector)
        );
        let listed = self
            .exchange(Method::GET, &path, JSON, Body::empty())
            .await?;
        decoded(&listed)
    }

    /// Deletes every object of the served kind `info` in `namespace`: the
    /// namespace controller empties a namespace of kinds known only at
    /// run time.
    pub async fn delete_collection_of(
        &self,
        info: &ResourceInfo,
        namespace: &str,
        options: &DeleteOptions,
    ) -> Result<(), LocalApiError> {
        let path = served_collection(info, namespace);
        self.exchange(Method::DELETE, &path, JSON, encoded(options)?)
            .await
            .map(drop)
    }

    /// How many objects of the served kind `info` `namespace` holds.
    pub async fn count_of(
        &self,
        info: &ResourceInfo,
        namespace: &str,
    ) -> Result<usize, LocalApiError> {
        let path = served_collection(info, namespace);
        let listed = self
            .exchange(Method::GET, &path, JSON, Body::empty())
            .await?;
        let listed: Items = decoded(&listed)?;
        Ok(listed.items.map_or(0, |items| items.len()))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{
        apps::v1::Deployment,
        core::v1::{Namespace, Node, Pod},
    };

    use super::*;
    use crate::registry::served;

    #[test]
    fn paths_follow_the_group_version_plural_and_scope() {
        assert_eq!(collection::<Pod>(Some("ns")), "/api/v1/namespaces/ns/pods");
        assert_eq!(collection::<Pod>(None), "/api/v1/pods");
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
        assert_eq!(
            ObjectRef::<Pod>::new(Some("ns"), "web-0").subresource_path("binding"),
            "/api/v1/namespaces/ns/pods/web-0/binding"
        );
        assert_eq!(
            ObjectRef::<Namespace>::new(None, "ns").subresource_path("finalize"),
            "/api/v1/namespaces/ns/finalize"
        );
        assert_eq!(
            ObjectRef::<Node>::new(Some("ignored"), "n1").subresource_path("status"),
            "/api/v1/nodes/n1/status"
        );
    }

    #[test]
    fn served_kinds_known_at_run_time_have_the_same_paths() {
        let infos = served::infos();
        let info = |kind: &str| *infos.iter().find(|i| i.kind == kind).unwrap();
        assert_eq!(
            served_path(info("Deployment"), Some("ns"), "web"),
            ObjectRef::<Deployment>::new(Some("ns"), "web").path()
        );
        assert_eq!(
            served_path(info("Node"), Some("ignored"), "n1"),
            "/api/v1/nodes/n1"
        );
    }

    #[test]
    fn field_selectors_are_one_query_value() {
        assert_eq!(
            query_value("spec.nodeName=n-1.a_b~,status.phase!=Failed"),
            "spec.nodeName%3Dn-1.a_b~%2Cstatus.phase%21%3DFailed"
        );
    }
}
