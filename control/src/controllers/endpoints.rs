//! The endpoints controller: for every Service with a selector, the
//! Endpoints object of the same name and the EndpointSlices labelled
//! `kubernetes.io/service-name` list the selected pods that have an
//! address: ready ones as addresses, others as not ready (or, in slices,
//! with their ready, serving and terminating conditions). Named target
//! ports are resolved per pod, so pods that disagree on a port land in
//! separate subsets and slices. Services without a selector keep the
//! endpoints their users manage.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        core::v1::{
            EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Service,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice},
    },
    apimachinery::pkg::{
        apis::meta::v1::{DeleteOptions, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{
    cache::{Cache, Change},
    ownership::controller_reference,
    pod_view::Pod,
    runtime::Controller,
    work_queue::WorkQueue,
};
use crate::{
    informer::InformerEvent,
    local_api::{LocalApi, LocalApiError, ObjectRef, if_exists},
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
        let Some(service) = service.filter(|_| selector.is_some()) else {
            // Gone, or user-managed: a Service deleted takes its Endpoints
            // along (its slices go with it through their owner reference).
            if !self.services.contains(key) && self.endpoints.contains(key) {
                let at = ObjectRef::<Endpoints>::new(Some(namespace), name);
                self.api.delete(&at, &DeleteOptions::default()).await?;
            }
            return Ok(());
        };
        let groups = self.desired(&service);

        let subsets: Vec<EndpointSubset> = groups
            .iter()
            .map(|(ports, addresses)| {
                let entry = |a: &Address| EndpointAddress {
                    ip: a.ip.clone(),
                    node_name: a.node.clone(),
                    hostname: a.hostname.clone(),
                    target_ref: Some(pod_reference(namespace, a)),
                };
                let ready: Vec<EndpointAddress> =
                    addresses.iter().filter(|a| a.ready).map(entry).collect();
                let not_ready: Vec<EndpointAddress> =
                    addresses.iter().filter(|a| !a.ready).map(entry).collect();
                EndpointSubset {
                    addresses: Some(ready).filter(|a| !a.is_empty()),
                    not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
                    ports: Some(
                        ports
                            .0
                            .iter()
                            .map(|(n, p, proto)| EndpointPort {
                                name: n.clone(),
                                port: *p,
                                protocol: Some(proto.clone()),
                                app_protocol: None,
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        let mut desired_endpoints = Endpoints {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: service.metadata.labels.clone(),
                ..ObjectMeta::default()
            },
            subsets: Some(subsets),
        };
        match self.endpoints.get(key) {
            None => {
                // A namespace gone is no failure: the Service goes with it.
                if_exists(self.api.create(&desired_endpoints).await)?;
            }
            Some(current) => {
                if current.subsets != desired_endpoints.subsets {
                    desired_endpoints.metadata.resource_version =
                        current.metadata.resource_version.clone();
                    self.api.replace(&desired_endpoints).await?;
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
        let slice = |endpoints: Vec<Endpoint>, ports: Vec<SlicePort>| EndpointSlice {
            address_type: "IPv4".to_owned(),
            endpoints,
            ports: Some(ports),
            metadata: ObjectMeta::default(),
        };
        let mut wanted: Vec<EndpointSlice> = Vec::new();
        for (ports, addresses) in groups {
            for chunk in addresses.chunks(SLICE_SIZE) {
                let endpoints = chunk
                    .iter()
                    .map(|a| Endpoint {
                        addresses: vec![a.ip.clone()],
                        conditions: Some(EndpointConditions {
                            ready: Some(a.ready),
                            serving: Some(a.serving),
                            terminating: Some(a.terminating),
                        }),
                        node_name: a.node.clone(),
                        hostname: a.hostname.clone(),
                        target_ref: Some(pod_reference(namespace, a)),
                        ..Endpoint::default()
                    })
                    .collect();
                let ports = ports
                    .0
                    .iter()
                    .map(|(n, p, proto)| SlicePort {
                        // Always set, "" for an unnamed port, as the
                        // endpointslice controller does: kubectl describe
                        // dereferences it.
                        name: Some(n.clone().unwrap_or_default()),
                        port: Some(*p),
                        protocol: Some(proto.clone()),
                        app_protocol: None,
                    })
                    .collect();
                wanted.push(slice(endpoints, ports));
            }
        }
        // An empty Service still has one (empty) slice, as in Kubernetes.
        if wanted.is_empty() {
            wanted.push(slice(Vec::new(), Vec::new()));
        }
        let labels = BTreeMap::from([
            (SERVICE_NAME_LABEL.to_owned(), name.to_owned()),
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        ]);
        let count = wanted.len();
        for (i, mut slice) in wanted.into_iter().enumerate() {
            match existing.get(i) {
                Some(current) => {
                    let same = slice.endpoints == current.endpoints && slice.ports == current.ports;
                    if !same {
                        slice.metadata = current.metadata.clone();
                        self.api.replace(&slice).await?;
                    }
                }
                None => {
                    slice.metadata = ObjectMeta {
                        generate_name: Some(format!("{name}-")),
                        namespace: Some(namespace.to_owned()),
                        labels: Some(labels.clone()),
                        owner_references: Some(vec![controller_reference(service)]),
                        ..ObjectMeta::default()
                    };
                    if_exists(self.api.create(&slice).await)?;
                }
            }
        }
        for surplus in existing.iter().skip(count) {
            let at = ObjectRef::<EndpointSlice>::of(&surplus.metadata);
            self.api.delete(&at, &DeleteOptions::default()).await?;
        }
        Ok(())
    }
}

/// The pod an address is, as Endpoints and EndpointSlices refer to it.
fn pod_reference(namespace: &str, address: &Address) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(address.pod.0.clone()),
        uid: Some(address.pod.1.clone()),
        ..ObjectReference::default()
    }
}

/// A port set as a map key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PortSetKey(PortSet);
