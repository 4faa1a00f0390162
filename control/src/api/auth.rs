//! Who is asking, and whether they may.
//!
//! Authentication is by bearer token. The admin token is random, made on
//! first start. A node token is `capstan-node.<node>.<hmac>`: an HMAC of
//! the node's name under a secret only control knows, so control can check
//! any node's token without storing it, and one node's token says nothing
//! about another's.
//!
//! Nodes are authorized as Kubernetes' node authorizer does: their own Node
//! and Lease, the pods bound to them (and those pods' status), reading
//! Services and EndpointSlices, and the ConfigMaps and Secrets their pods
//! use.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::store::Store;

const NODE_PREFIX: &str = "capstan-node.";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    Admin,
    Node(String),
}

impl User {
    /// The name Kubernetes would give this user in messages.
    pub fn name(&self) -> String {
        match self {
            User::Admin => "capstan:admin".to_owned(),
            User::Node(node) => format!("system:node:{node}"),
        }
    }
}

/// The tokens control accepts.
#[derive(Clone)]
pub struct Credentials {
    admin_digest: [u8; 32],
    node_secret: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

/// Paths of the credential files under a data directory.
pub fn admin_token_path(dir: &Path) -> PathBuf {
    dir.join("tokens/admin")
}

fn node_secret_path(dir: &Path) -> PathBuf {
    dir.join("tokens/node-secret")
}

/// Reads `path`, or writes `make()` there (mode 0600) if it does not exist.
fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> io::Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            let value = make();
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(value.as_bytes())?;
            file.sync_all()?;
            Ok(value)
        }
        Err(err) => Err(err),
    }
}

fn random_hex(bytes: usize) -> String {
    hex::encode((0..bytes).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
}

/// Equality that takes the same time wherever the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Credentials {
    /// Loads the credentials under `dir`, making them on first start.
    /// Returns them and the admin token.
    pub fn load_or_create(dir: &Path) -> io::Result<(Self, String)> {
        let admin = read_or_create(&admin_token_path(dir), || random_hex(32))?;
        let secret = read_or_create(&node_secret_path(dir), || random_hex(32))?;
        let credentials = Self {
            admin_digest: Sha256::digest(admin.as_bytes()).into(),
            node_secret: secret.into_bytes(),
        };
        Ok((credentials, admin))
    }

    fn node_mac(&self, node: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.node_secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(node.as_bytes());
        mac
    }

    /// The token of node `node`.
    pub fn node_token(&self, node: &str) -> String {
        format!(
            "{NODE_PREFIX}{node}.{}",
            hex::encode(self.node_mac(node).finalize().into_bytes())
        )
    }

    /// The user an Authorization header names, if its token is valid.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<User> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        if let Some(rest) = token.strip_prefix(NODE_PREFIX) {
            let (node, mac) = rest.rsplit_once('.')?;
            let mac = hex::decode(mac).ok()?;
            return self
                .node_mac(node)
                .verify_slice(&mac)
                .ok()
                .map(|()| User::Node(node.to_owned()));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        same(&digest, &self.admin_digest).then_some(User::Admin)
    }
}

/// What a request does, for authorization.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// Kubernetes' verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    /// The request's fieldSelector, for list and watch.
    pub field_selector: Option<&'a str>,
}

/// Whether `user` may do what `attributes` describe; lookups read the store.
pub async fn authorize(
    user: &User,
    attributes: &Attributes<'_>,
    store: &dyn Store,
) -> Result<(), ApiError> {
    let User::Node(node) = user else {
        return Ok(());
    };
    if node_may(node, attributes, store).await? {
        return Ok(());
    }
    let resource = match attributes.subresource {
        Some(sub) => format!("{}/{sub}", attributes.resource),
        None => attributes.resource.to_owned(),
    };
    let scope = match attributes.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_owned(),
    };
    Err(ApiError::forbidden(format!(
        "{}{} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\"{scope}",
        attributes.resource,
        attributes
            .name
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default(),
        user.name(),
        attributes.verb,
        attributes.group,
    )))
}

const READ: &[&str] = &["get", "list", "watch"];

async fn node_may(node: &str, a: &Attributes<'_>, store: &dyn Store) -> Result<bool, ApiError> {
    let verb = a.verb;
    let own = a.name == Some(node);
    Ok(match (a.group, a.resource) {
        ("", "nodes") => {
            READ.contains(&verb) || (own && ["create", "update", "patch"].contains(&verb))
        }
        ("coordination.k8s.io", "leases") => {
            a.namespace == Some("kube-node-lease")
                && own
                && ["get", "create", "update", "patch"].contains(&verb)
        }
        ("", "pods") => match verb {
            "list" | "watch" => selects_node(a.field_selector, node),
            "get" | "delete" => pod_on_node(store, a, node).await?,
            "update" | "patch" => {
                a.subresource == Some("status") && pod_on_node(store, a, node).await?
            }
            _ => false,
        },
        ("", "events") => ["create", "update", "patch"].contains(&verb),
        ("", "services" | "endpoints") | ("discovery.k8s.io", "endpointslices") => {
            READ.contains(&verb)
        }
        ("", "namespaces") => verb == "get",
        ("", kind @ ("configmaps" | "secrets")) => {
            let name = match verb {
                "get" => a.name.map(str::to_owned),
                "list" | "watch" => single_name(a.field_selector),
                _ => None,
            };
            match (name, a.namespace) {
                (Some(name), Some(namespace)) => {
                    used_by_node(store, node, namespace, kind, &name).await?
                }
                _ => false,
            }
        }
        _ => false,
    })
}

/// Whether a field selector pins `spec.nodeName` to `node`.
fn selects_node(selector: Option<&str>, node: &str) -> bool {
    selector.is_some_and(|s| {
        s.split(',')
            .any(|term| term.trim() == format!("spec.nodeName={node}"))
    })
}

/// The name a `metadata.name=<x>` field selector pins, if any.
fn single_name(selector: Option<&str>) -> Option<String> {
    selector?.split(',').find_map(|term| {
        term.trim()
            .strip_prefix("metadata.name=")
            .map(str::to_owned)
    })
}

async fn stored_pods(store: &dyn Store, namespace: &str) -> Result<Vec<Value>, ApiError> {
    let page = store
        .list(&format!("/registry/pods/{namespace}/"), Default::default())
        .await
        .map_err(|err| ApiError::internal("authorizing a node", &err))?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect())
}

async fn pod_on_node(store: &dyn Store, a: &Attributes<'_>, node: &str) -> Result<bool, ApiError> {
    let (Some(namespace), Some(name)) = (a.namespace, a.name) else {
        return Ok(false);
    };
    let key = format!("/registry/pods/{namespace}/{name}");
    let pod: Option<Value> = match store.get(&key).await {
        Ok(kv) => kv.and_then(|kv| serde_json::from_slice(&kv.value).ok()),
        Err(err) => return Err(ApiError::internal("authorizing a node", &err)),
    };
    Ok(pod.is_some_and(|p| p["spec"]["nodeName"].as_str() == Some(node)))
}

/// Whether a pod bound to `node` in `namespace` refers to the ConfigMap or
/// Secret `name` (volumes, env, envFrom, image pull secrets).
async fn used_by_node(
    store: &dyn Store,
    node: &str,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<bool, ApiError> {
    let pods = stored_pods(store, namespace).await?;
    Ok(pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(node))
        .any(|pod| references(&pod["spec"], kind, name)))
}

fn references(spec: &Value, kind: &str, name: &str) -> bool {
    let named = |v: &Value| v.as_str() == Some(name);
    let (volume_key, volume_name, env_key, env_from_key) = match kind {
        "configmaps" => ("configMap", "name", "configMapKeyRef", "configMapRef"),
        _ => ("secret", "secretName", "secretKeyRef", "secretRef"),
    };
    let items = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let volumes = items(&spec["volumes"]).into_iter().any(|volume| {
        named(&volume[volume_key][volume_name])
            || items(&volume["projected"]["sources"])
                .iter()
                .any(|s| named(&s[volume_key]["name"]))
    });
    let containers = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| items(&spec[list]))
        .any(|c| {
            items(&c["env"])
                .iter()
                .any(|e| named(&e["valueFrom"][env_key]["name"]))
                || items(&c["envFrom"])
                    .iter()
                    .any(|e| named(&e[env_from_key]["name"]))
        });
    let pull = kind == "secrets"
        && items(&spec["imagePullSecrets"])
            .iter()
            .any(|s| named(&s["name"]));
    volumes || containers || pull
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::store::embedded::{EmbeddedConfig, EmbeddedStore};

    #[test]
    fn tokens_identify_admin_and_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let (credentials, admin) = Credentials::load_or_create(dir.path()).unwrap();
        assert_eq!(
            credentials.authenticate(Some(&format!("Bearer {admin}"))),
            Some(User::Admin)
        );
        let token = credentials.node_token("n1");
        assert_eq!(
            credentials.authenticate(Some(&format!("Bearer {token}"))),
            Some(User::Node("n1".into()))
        );
        let forged = token.replace("n1", "n2");
        assert_eq!(
            credentials.authenticate(Some(&format!("Bearer {forged}"))),
            None
        );
        assert_eq!(credentials.authenticate(Some("Bearer nope")), None);
        assert_eq!(credentials.authenticate(None), None);
        // A second start reads the same credentials.
        let (again, admin_again) = Credentials::load_or_create(dir.path()).unwrap();
        assert_eq!(admin_again, admin);
        assert_eq!(again.node_token("n1"), token);
    }

    fn attrs<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            group,
            resource,
            subresource: None,
            namespace,
            name,
            field_selector: None,
        }
    }

    #[tokio::test]
    async fn nodes_reach_only_what_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).unwrap());
        let pod = json!({"spec": {"nodeName": "n1", "volumes": [{"name": "c", "configMap": {"name": "app-config"}}],
            "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "app-secret"}}]}]}});
        store
            .create("/registry/pods/default/web", Bytes::from(pod.to_string()))
            .await
            .unwrap();
        let n1 = User::Node("n1".into());
        let n2 = User::Node("n2".into());
        let s = store.as_ref();

        assert!(
            authorize(&n1, &attrs("update", "", "nodes", None, Some("n1")), s)
                .await
                .is_ok()
        );
        assert!(
            authorize(&n1, &attrs("update", "", "nodes", None, Some("n2")), s)
                .await
                .is_err()
        );
        assert!(
            authorize(
                &n1,
                &attrs("get", "", "pods", Some("default"), Some("web")),
                s
            )
            .await
            .is_ok()
        );
        assert!(
            authorize(
                &n2,
                &attrs("get", "", "pods", Some("default"), Some("web")),
                s
            )
            .await
            .is_err()
        );
        let mut watch = attrs("watch", "", "pods", None, None);
        assert!(authorize(&n1, &watch, s).await.is_err());
        watch.field_selector = Some("spec.nodeName=n1");
        assert!(authorize(&n1, &watch, s).await.is_ok());
        assert!(
            authorize(
                &n1,
                &attrs("get", "", "configmaps", Some("default"), Some("app-config")),
                s
            )
            .await
            .is_ok()
        );
        assert!(
            authorize(
                &n1,
                &attrs("get", "", "secrets", Some("default"), Some("app-secret")),
                s
            )
            .await
            .is_ok()
        );
        assert!(
            authorize(
                &n1,
                &attrs("get", "", "secrets", Some("default"), Some("other")),
                s
            )
            .await
            .is_err()
        );
        assert!(
            authorize(
                &n2,
                &attrs("get", "", "configmaps", Some("default"), Some("app-config")),
                s
            )
            .await
            .is_err()
        );
        assert!(
            authorize(&n1, &attrs("list", "", "services", None, None), s)
                .await
                .is_ok()
        );
        assert!(
            authorize(
                &n1,
                &attrs(
                    "create",
                    "coordination.k8s.io",
                    "leases",
                    Some("kube-node-lease"),
                    Some("n1")
                ),
                s
            )
            .await
            .is_ok()
        );
        let denied = authorize(
            &n1,
            &attrs("list", "apps", "deployments", Some("default"), None),
            s,
        )
        .await
        .unwrap_err();
        assert_eq!(denied.code, 403);
        assert_eq!(
            denied.message,
            "deployments is forbidden: User \"system:node:n1\" cannot list resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        );
        assert!(
            authorize(
                &User::Admin,
                &attrs("delete", "apps", "deployments", Some("default"), Some("x")),
                s
            )
            .await
            .is_ok()
        );
    }
}
