//! What the controllers keep of a pod: the fields ownership, counting,
//! the order of deletion and endpoints need, decoded once for all of them
//! (a cluster's pods are many, and every binding and status write is an
//! event).

use k8s_openapi::{
    api::core::v1::{Pod as PodObject, PodCondition},
    apimachinery::pkg::{
        apis::meta::v1::{ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
    jiff::Timestamp,
};
use serde::Deserialize;

use crate::{informer::Informed, local_api::ObjectRef};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub subdomain: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: i32,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default)]
    pub conditions: Vec<PodCondition>,
    #[serde(default)]
    pub container_statuses: Vec<ContainerRestarts>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRestarts {
    #[serde(default)]
    pub restart_count: i32,
}

impl Informed for Pod {
    fn set_resource_version(&mut self, version: String) {
        self.metadata.resource_version = Some(version);
    }
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        super::object_key(
            self.metadata.namespace.as_deref(),
            self.metadata.name.as_deref(),
        )
    }

    /// The pod as the API addresses it: this view is not an object the
    /// typed requests know, the pod it describes is.
    pub fn object_ref(&self) -> ObjectRef<PodObject> {
        ObjectRef::of(&self.metadata)
    }

    pub fn controller_ref(&self) -> Option<&OwnerReference> {
        self.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
    }

    pub fn phase(&self) -> &str {
        self.status.phase.as_deref().unwrap_or("Pending")
    }

    pub fn is_bound(&self) -> bool {
        self.spec.node_name.as_ref().is_some_and(|n| !n.is_empty())
    }

    /// Succeeded or Failed pods, and pods being deleted, are not replicas.
    pub fn is_active(&self) -> bool {
        self.metadata.deletion_timestamp.is_none()
            && !matches!(self.phase(), "Succeeded" | "Failed")
    }

    /// When the pod became Ready, if it is.
    pub fn ready_since(&self) -> Option<Timestamp> {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "True")
            .map(|c| {
                c.last_transition_time
                    .as_ref()
                    .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
            })
    }

    pub fn is_ready(&self) -> bool {
        self.ready_since().is_some()
    }

    pub fn restarts(&self) -> i32 {
        self.status
            .container_statuses
            .iter()
            .map(|c| c.restart_count)
            .sum()
    }

    /// The container port a Service's target port names on this pod.
    pub fn resolve(&self, target: &IntOrString, protocol: &str) -> Option<i32> {
        match target {
            IntOrString::Int(port) => Some(*port),
            IntOrString::String(name) => self
                .spec
                .containers
                .iter()
                .flat_map(|c| &c.ports)
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port),
        }
    }
}
