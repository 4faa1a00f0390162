//! The labels the agent puts on containerd containers: enough to tell,
//! after a restart, which pod and which container of it each one is.
//! Container ids are derived from the same facts, so making a container
//! twice finds the first instead of duplicating it.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

pub const NODE: &str = "io.capstan.node";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const ATTEMPT: &str = "io.capstan.container.attempt";
pub const INIT: &str = "io.capstan.container.init";

/// Which container a containerd record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdentity {
    pub pod_uid: String,
    pub name: String,
    pub attempt: u32,
}

impl ContainerIdentity {
    /// The containerd id of this container: stable for a pod, name and
    /// attempt.
    pub fn container_id(&self) -> String {
        let digest = Sha256::digest(format!("{}/{}/{}", self.pod_uid, self.name, self.attempt));
        hex::encode(digest)
    }

    pub fn from_labels(labels: &HashMap<String, String>) -> Option<Self> {
        Some(Self {
            pod_uid: labels.get(POD_UID)?.clone(),
            name: labels.get(CONTAINER_NAME)?.clone(),
            attempt: labels.get(ATTEMPT)?.parse().ok()?,
        })
    }
}

/// Labels of a container of pod `namespace/name` on `node`.
pub fn container_labels(
    node: &str,
    namespace: &str,
    pod_name: &str,
    identity: &ContainerIdentity,
    init: bool,
) -> HashMap<String, String> {
    HashMap::from([
        (NODE.to_owned(), node.to_owned()),
        (POD_UID.to_owned(), identity.pod_uid.clone()),
        (POD_NAME.to_owned(), pod_name.to_owned()),
        (POD_NAMESPACE.to_owned(), namespace.to_owned()),
        (CONTAINER_NAME.to_owned(), identity.name.clone()),
        (ATTEMPT.to_owned(), identity.attempt.to_string()),
        (INIT.to_owned(), init.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_survive_the_labels_and_ids_are_stable_and_distinct() {
        let identity = ContainerIdentity {
            pod_uid: "uid-1".to_owned(),
            name: "web".to_owned(),
            attempt: 2,
        };
        let labels = container_labels("n1", "default", "web-0", &identity, false);
        assert_eq!(
            ContainerIdentity::from_labels(&labels),
            Some(identity.clone())
        );
        assert_eq!(identity.container_id(), identity.clone().container_id());
        assert_eq!(identity.container_id().len(), 64);
        let next = ContainerIdentity {
            attempt: 3,
            ..identity.clone()
        };
        assert_ne!(identity.container_id(), next.container_id());
    }
}
