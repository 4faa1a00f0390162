//! The endpoints controller: for every Service with a selector, the
//! Endpoints object of the same name and the EndpointSlices labelled
//! `kubernetes.io/service-name` list the selected pods that have an
//! address: ready ones as addresses, others as not ready (or, in slices,
//! with their ready, serving and terminating conditions). Named target
//! ports are resolved per pod, so pods that disagree on a port land in
//! separate subsets and slices. Services without a selector keep the
//! endpoints their users manage.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::http::Method;
use k8s_openapi::{
    api::{
        core::v1::{Endpoints, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde_json::{Value, json};

use super::{
    cache::{Cache, Change},
    pod_view::Pod,
    runtime::Controller,
    work_queue::WorkQueue,
};
use crate::{
    informer::InformerEvent,
    local_api::{LocalApi, LocalApiError},
};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice, Kubernetes' default.
const SLICE_SIZE: usize = 100;

/// One endpoint, as both Endpoints and EndpointSlices list it.
#[derive(Debug, Clone, PartialEq)]
struct Address {
    ip: String,
    /// Serving and not terminating.
    ready: bool,
    /// The pod's Ready condition, terminating or not.
    serving: bool,
    terminating: bool,
    node: Option<String>,
    hostname: Option<String>,
    pod: (String, String),
}

/// (name, port, protocol) per Service port, resolved for one pod.
type PortSet = Vec<(Option<String>, i32, String)>;

pub struct EndpointsController {
    api: LocalApi,
    services: Cache<Service>,
    pods: Cache<Pod>,
    endpoints: Cache<Endpoints>,
    slices: Cache<EndpointSlice>,
    queue: WorkQueue,
}

impl Controller for EndpointsController {
    type Error = LocalApiError;

    fn queue(&mut self) -> &mut WorkQueue {
        &mut self.queue
    }

    async fn reconcile(&mut self, key: &str) -> Result<Option<Duration>, LocalApiError> {
        self.sync_service(key).await.map(|()| None)
    }
}

impl EndpointsController {
    pub fn new(api: LocalApi) -> Self {
        Self {
            api,
            services: Cache::default(),
            pods: Cache::default(),
            endpoints: Cache::default(),
            slices: Cache::default(),
            queue: WorkQueue::default(),
        }
    }

    pub(super) fn on_service(&mut self, event: InformerEvent<Service>) {
        match self.services.apply(event) {
            Change::Listed => self.queue.extend(self.services.keys()),
            Change::Applied { key, .. } | Change::Deleted { key, .. } => self.queue.add(key),
        }
    }

    pub(super) fn on_pod(&mut self, event: InformerEvent<Arc<Pod>>) {
        match self.pods.apply(event) {
            Change::Listed => self.queue.extend(self.services.keys()),
            Change::Applied { old, new, .. } => {
                self.enqueue_selecting(&new);
                if let Some(old) = old
                    && old.metadata.labels != new.metadata.labels
                {
                    self.enqueue_selecting(&old);
                }
            }
            Change::Deleted { last, .. } => self.enqueue_selecting(&last),
        }
    }

    pub(super) fn on_endpoints(&mut self, event: InformerEvent<Endpoints>) {
        self.endpoints.apply(event);
    }

    pub(super) fn on_slice(&mut self, event: InformerEvent<EndpointSlice>) {
        self.slices.apply(event);
    }

    fn enqueue_selecting(&mut self, pod: &Pod) {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let keys: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.metadata.namespace == pod.metadata.namespace)
            .filter(|(_, s)| {
                s.spec
                    .as_ref()
                    .and_then(|spec| spec.selector.as_ref())
                    .is_some_and(|sel| {
                        !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter().for_each(|k| self.queue.add(k));
    }

    /// The selected pods' addresses, grouped by their resolved ports.
    fn desired(&self, service: &Service) -> BTreeMap<PortSetKey, Vec<Address>> {
        let spec = service.spec.clone().unwrap_or_default();
        let selector = spec.selector.unwrap_or_default();
        let ports = spec.ports.unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let mut groups: BTreeMap<PortSetKey, Vec<Address>> = BTreeMap::new();
        for pod in self.pods.values() {
            if pod.metadata.namespace != service.metadata.namespace
                || !selector
                    .iter()
                    .all(|(k, v)| pod.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
                || matches!(pod.status.phase.as_deref(), Some("Succeeded" | "Failed"))
            {
                continue;
            }
            let Some(ip) = pod.status.pod_ip.clone().filter(|ip| !ip.is_empty()) else {
                continue;
            };
            let mut set: PortSet = Vec::new();
            for port in &ports {
                let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
                let target = port
                    .target_port
                    .clone()
                    .unwrap_or(IntOrString::Int(port.port));
                if let Some(number) = pod.resolve(&target, &protocol) {
                    set.push((port.name.clone(), number, protocol));
                }
            }
            if set.is_empty() && !ports.is_empty() {
                continue;
            }
            let hostname = pod
                .spec
                .hostname
                .clone()
                .filter(|_| pod.spec.subdomain.as_deref() == Some(name.as_str()));
            groups.entry(PortSetKey(set)).or_default().push(Address {
                ip,
                ready: pod.is_ready() && pod.metadata.deletion_timestamp.is_none(),
                serving: pod.is_ready(),
                terminating: pod.metadata.deletion_timestamp.is_some(),
                node: pod.spec.node_name.clone(),
                hostname,
                pod: (
                    pod.metadata.name.clone().unwrap_or_default(),
                    pod.metadata.uid.clone().unwrap_or_default(),
                ),
            });
        }
        for addresses in groups.values_mut() {
            addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
        }
        groups
    }

    /// Writes the Endpoints and EndpointSlices of the Service `key`.
    async fn sync_service(&mut self, key: &str) -> Result<(), LocalApiError> {
        let (namespace, name) = key.split_once('/').unwrap_or_default();
        let service = self.services.get(key).cloned();
        let selector = service
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.selector.clone())
            .filter(|s| !s.is_empty());
        let endpoints_path = format!("/api/v1/namespaces/{namespace}/endpoints");
        let Some(service) = service.filter(|_| selector.is_some()) else {
            // Gone, or user-managed: a Service deleted takes its Endpoints
            // along (its slices go with it through their owner reference).
            if !self.services.contains(key) && self.endpoints.contains(key) {
                self.send_ok(
                    Method::DELETE,
                    &format!("{endpoints_path}/{name}"),
                    &Value::Null,
                )
                .await?;
            }
            return Ok(());
        };
        let groups = self.desired(&service);

        let subsets: Vec<Value> = groups
            .iter()
            .map(|(ports, addresses)| {
                let entry = |a: &Address| {
                    json!({
                        "ip": a.ip, "nodeName": a.node, "hostname": a.hostname,
                        "targetRef": { "kind": "Pod", "namespace": namespace, "name": a.pod.0, "uid": a.pod.1 },
                    })
                };
                let ready: Vec<Value> = addresses.iter().filter(|a| a.ready).map(entry).collect();
                let not_ready: Vec<Value> = addresses.iter().filter(|a| !a.ready).map(entry).collect();
                json!({
                    "addresses": if ready.is_empty() { Value::Null } else { json!(ready) },
                    "notReadyAddresses": if not_ready.is_empty() { Value::Null } else { json!(not_ready) },
                    "ports": ports.0.iter().map(|(n, p, proto)| json!({ "name": n, "port": p, "protocol": proto })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let desired_endpoints = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": { "name": name, "namespace": namespace, "labels": service.metadata.labels },
            "subsets": subsets,
        });
        match self.endpoints.get(key) {
            None => {
                self.send_ok(Method::POST, &endpoints_path, &desired_endpoints)
                    .await?;
            }
            Some(current) => {
                let now = serde_json::to_value(&current.subsets).unwrap_or(Value::Null);
                let want = serde_json::from_value::<Endpoints>(desired_endpoints.clone())
                    .ok()
                    .and_then(|e| serde_json::to_value(e.subsets).ok())
                    .unwrap_or(Value::Null);
                if now != want {
                    let mut replacement = desired_endpoints.clone();
                    replacement["metadata"]["resourceVersion"] =
                        json!(current.metadata.resource_version);
                    self.send_ok(
                        Method::PUT,
                        &format!("{endpoints_path}/{name}"),
                        &replacement,
                    )
                    .await?;
                }
            }
        }
        self.reconcile_slices(&service, namespace, name, &groups)
            .await
    }

    async fn reconcile_slices(
        &self,
        service: &Service,
        namespace: &str,
        name: &str,
        groups: &BTreeMap<PortSetKey, Vec<Address>>,
    ) -> Result<(), LocalApiError> {
        let path = format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices");
        let mut existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .values()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .filter(|s| {
                s.metadata.labels.as_ref().is_some_and(|l| {
                    l.get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name)
                        && l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
                })
            })
            .cloned()
            .collect();
        existing.sort_by_key(|s| s.metadata.name.clone());
        let mut wanted: Vec<Value> = Vec::new();
        for (ports, addresses) in groups {
            for chunk in addresses.chunks(SLICE_SIZE) {
                wanted.push(json!({
                    "endpoints": chunk.iter().map(|a| json!({
                        "addresses": [a.ip],
                        "conditions": { "ready": a.ready, "serving": a.serving, "terminating": a.terminating },
                        "nodeName": a.node,
                        "hostname": a.hostname,
                        "targetRef": { "kind": "Pod", "namespace": namespace, "name": a.pod.0, "uid": a.pod.1 },
                    })).collect::<Vec<_>>(),
                    "ports": ports.0.iter().map(|(n, p, proto)| json!({ "name": n, "port": p, "protocol": proto })).collect::<Vec<_>>(),
                }));
            }
        }
        // An empty Service still has one (empty) slice, as in Kubernetes.
        if wanted.is_empty() {
            wanted.push(json!({ "endpoints": [], "ports": [] }));
        }
        let owner = json!([{
            "apiVersion": "v1", "kind": "Service",
            "name": name, "uid": service.metadata.uid,
            "controller": true, "blockOwnerDeletion": true,
        }]);
        let labels = json!({ SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY });
        for (i, body) in wanted.iter().enumerate() {
            let mut slice = body.clone();
            slice["apiVersion"] = json!("discovery.k8s.io/v1");
            slice["kind"] = json!("EndpointSlice");
            slice["addressType"] = json!("IPv4");
            match existing.get(i) {
                Some(current) => {
                    let same = serde_json::from_value::<EndpointSlice>(slice.clone())
                        .ok()
                        .is_some_and(|want| {
                            want.endpoints == current.endpoints && want.ports == current.ports
                        });
                    if !same {
                        slice["metadata"] =
                            serde_json::to_value(&current.metadata).unwrap_or(Value::Null);
                        let slice_name = current.metadata.name.clone().unwrap_or_default();
                        self.send_ok(Method::PUT, &format!("{path}/{slice_name}"), &slice)
                            .await?;
                    }
                }
                None => {
                    slice["metadata"] = json!({
                        "generateName": format!("{name}-"),
                        "namespace": namespace,
                        "labels": labels,
                        "ownerReferences": owner,
                    });
                    self.send_ok(Method::POST, &path, &slice).await?;
                }
            }
        }
        for surplus in existing.iter().skip(wanted.len()) {
            let slice_name = surplus.metadata.name.clone().unwrap_or_default();
            self.send_ok(
                Method::DELETE,
                &format!("{path}/{slice_name}"),
                &Value::Null,
            )
            .await?;
        }
        Ok(())
    }

    /// A write; its target being gone already is no failure. A conflict
    /// (a stale copy) is: the retry works from what the informer brings.
    async fn send_ok(&self, method: Method, path: &str, body: &Value) -> Result<(), LocalApiError> {
        self.api
            .send_if_exists(method, path, "application/json", body)
            .await
            .map(drop)
    }
}

/// A port set as a map key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortSetKey(PortSet);
