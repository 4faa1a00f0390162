//! The load balancer's reconciler: keeps the service table equal to what
//! the Services and EndpointSlices in the agent's cache ask for.
//!
//! Level-triggered, one Service at a time: a notice about a Service or one
//! of its slices marks the Service dirty, and reconciling it compares what
//! it wants with what is programmed for it, touching only the difference.
//! Nothing is written until both kinds have been listed once, so an agent
//! that adopted pinned state does not briefly see Services without their
//! endpoints (and refuse connects); then frontends no Service wants are
//! removed. A relist after a watch gap arrives as notices for exactly the
//! objects that changed, so it too costs only the difference.
//!
//! A Service the datapath cannot hold in full (maps full, too many
//! frontends) keeps what it had, gets a Warning event once per distinct
//! failure and a Normal one when it is whole again, and is retried: at
//! once when a removal frees room, else every few seconds.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use tokio::sync::mpsc;

use super::{
    desired,
    maps::LbMaps,
    service_table::{Frontend, ServiceTable},
    stale_sockets::SocketReaper,
};
use crate::{
    cache::{Notice, ObjectKey, Watched},
    events::{About, EventSink, EventType},
};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// How often Services that could not be programmed are tried again.
const RETRY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Balancer<M> {
    node: String,
    services: Arc<Watched<Service>>,
    slices: Arc<Watched<EndpointSlice>>,
    table: ServiceTable<M>,
    /// The frontends programmed for each Service.
    programmed: HashMap<ObjectKey, BTreeSet<Frontend>>,
    /// Each Service's slices, and each slice's Service, by the label.
    slices_of: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    service_of: HashMap<ObjectKey, ObjectKey>,
    /// Whether the first full list has been programmed and swept.
    swept: bool,
    reaper: Option<Box<dyn SocketReaper>>,
    events: Option<Arc<dyn EventSink>>,
    /// Services not programmed in full, with the failure last reported.
    failing: HashMap<ObjectKey, String>,
    /// Whether this pass removed a frontend, which may make room.
    freed: bool,
    /// A Service this node serves itself, and the local address it is
    /// served at.
    node_local: Option<(ObjectKey, std::net::Ipv4Addr)>,
}

/// What one pass of the loop collected.
#[derive(Default)]
struct Pending {
    dirty: BTreeSet<ObjectKey>,
    services_synced: bool,
    slices_synced: bool,
}

impl<M: LbMaps> Balancer<M> {
    pub fn new(
        node: String,
        services: Arc<Watched<Service>>,
        slices: Arc<Watched<EndpointSlice>>,
        table: ServiceTable<M>,
    ) -> Self {
        Self {
            node,
            services,
            slices,
            table,
            programmed: HashMap::new(),
            slices_of: HashMap::new(),
            service_of: HashMap::new(),
            swept: false,
            reaper: None,
            events: None,
            failing: HashMap::new(),
            freed: false,
            node_local: None,
        }
    }

    /// Sends Service `key` to this node's `address` (same ports) instead of
    /// its endpoints: the cluster DNS, which every agent serves.
    pub fn with_node_local(mut self, key: ObjectKey, address: std::net::Ipv4Addr) -> Self {
        self.node_local = Some((key, address));
        self
    }

    /// Reports Services the datapath cannot hold as events on them.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// Destroys sockets left connected to backends that leave.
    pub fn with_reaper(mut self, reaper: Box<dyn SocketReaper>) -> Self {
        self.reaper = Some(reaper);
        self
    }

    /// Reconciles until the cache's subscriptions end.
    pub async fn run(mut self) {
        let mut services = self.services.subscribe();
        let mut slices = self.slices.subscribe();
        let mut pending = Pending::default();
        let mut retry = tokio::time::interval(RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = retry.tick(), if !self.failing.is_empty() => {
                    pending.dirty.extend(self.failing.keys().cloned());
                },
                notice = services.recv() => match notice {
                    Some(notice) => self.on_service(notice, &mut pending),
                    None => return,
                },
                notice = slices.recv() => match notice {
                    Some(notice) => self.on_slice(notice, &mut pending),
                    None => return,
                },
            }
            // Take the whole burst before programming: a relist or a
            // rollout is one pass, not one per notice.
            self.drain(&mut services, &mut slices, &mut pending);
            self.program(&mut pending);
        }
    }

    /// Reconciles every dirty Service, once both kinds have been listed;
    /// after the first list, sweeps what no Service wants.
    fn program(&mut self, pending: &mut Pending) {
        if !(pending.services_synced && pending.slices_synced) {
            return;
        }
        let started_at = Instant::now();
        let count = pending.dirty.len();
        for key in std::mem::take(&mut pending.dirty) {
            self.reconcile(&key);
        }
        if std::mem::take(&mut self.freed) {
            let waiting: Vec<ObjectKey> = self.failing.keys().cloned().collect();
            for key in waiting {
                self.reconcile(&key);
            }
        }
        if !self.swept {
            self.swept = true;
            self.sweep();
            tracing::info!(
                services = count,
                frontends = self.table.frontends().count(),
                took_ms = started_at.elapsed().as_millis() as u64,
                "service datapath programmed from the first list"
            );
        }
        let gone = self.table.take_released();
        if let Some(reaper) = &mut self.reaper {
            reaper.reap(&gone);
        }
    }

    fn drain(
        &mut self,
        services: &mut mpsc::UnboundedReceiver<Notice>,
        slices: &mut mpsc::UnboundedReceiver<Notice>,
        pending: &mut Pending,
    ) {
        loop {
            let mut took = false;
            while let Ok(notice) = services.try_recv() {
                self.on_service(notice, pending);
                took = true;
            }
            while let Ok(notice) = slices.try_recv() {
                self.on_slice(notice, pending);
                took = true;
            }
            if !took {
                return;
            }
        }
    }

    fn on_service(&mut self, notice: Notice, pending: &mut Pending) {
        match notice {
            Notice::Changed(key) => {
                pending.dirty.insert(key);
            }
            Notice::Synced => pending.services_synced = true,
        }
    }

    fn on_slice(&mut self, notice: Notice, pending: &mut Pending) {
        let key = match notice {
            Notice::Changed(key) => key,
            Notice::Synced => {
                pending.slices_synced = true;
                return;
            }
        };
        let now = self.slices.get(&key).and_then(|slice| {
            let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
            Some(ObjectKey {
                namespace: key.namespace.clone(),
                name: name.clone(),
            })
        });
        let before = self.service_of.remove(&key);
        if let Some(before) = &before {
            if let Some(set) = self.slices_of.get_mut(before) {
                set.remove(&key);
                if set.is_empty() {
                    self.slices_of.remove(before);
                }
            }
            pending.dirty.insert(before.clone());
        }
        if let Some(now) = now {
            self.slices_of
                .entry(now.clone())
                .or_default()
                .insert(key.clone());
            self.service_of.insert(key, now.clone());
            pending.dirty.insert(now);
        }
    }

    /// Makes the datapath hold what Service `key` wants, and nothing else
    /// for it, and reports whether it could.
    fn reconcile(&mut self, key: &ObjectKey) {
        let service = self.services.get(key);
        let local = self
            .node_local
            .as_ref()
            .filter(|(local, _)| local == key)
            .map(|(_, address)| *address);
        let wanted = match (&service, local) {
            (Some(service), Some(address)) => desired::node_local(service, address),
            (Some(service), None) => {
                let slices: Vec<Arc<EndpointSlice>> = self
                    .slices_of
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter_map(|slice| self.slices.get(slice))
                    .collect();
                let slices: Vec<&EndpointSlice> = slices.iter().map(Arc::as_ref).collect();
                desired::frontends(service, &slices, &self.node)
            }
            (None, _) => BTreeMap::new(),
        };
        let before = self.programmed.remove(key).unwrap_or_default();
        let mut now = BTreeSet::new();
        let mut failures = Vec::new();
        for frontend in before.iter().filter(|f| !wanted.contains_key(f)) {
            match self.table.remove(*frontend) {
                Ok(()) => self.freed = true,
                Err(err) => {
                    failures.push(format!("{frontend}: {err}"));
                    now.insert(*frontend);
                }
            }
        }
        for (frontend, spec) in &wanted {
            match self.table.set(*frontend, spec) {
                Ok(()) => {
                    now.insert(*frontend);
                }
                Err(err) => {
                    failures.push(format!("{frontend}: {err}"));
                    if before.contains(frontend) {
                        now.insert(*frontend);
                    }
                }
            }
        }
        if !now.is_empty() {
            self.programmed.insert(key.clone(), now);
        }
        self.report(key, service.as_deref(), failures);
    }

    /// An event and a log line when Service `key` stops or starts being
    /// programmed in full, or fails differently; none while it stays as it
    /// was, so retries of a lasting failure are quiet.
    fn report(&mut self, key: &ObjectKey, service: Option<&Service>, failures: Vec<String>) {
        let Some(service) = service else {
            self.failing.remove(key);
            return;
        };
        if failures.is_empty() {
            if self.failing.remove(key).is_some() {
                tracing::info!(service = %key, "a Service programmed in full again");
                self.record(
                    service,
                    EventType::Normal,
                    "Programmed",
                    &format!("node {} programmed every port of the Service", self.node),
                );
            }
            return;
        }
        let message = format!(
            "node {} cannot program {}; those ports keep what they had (nothing if new)",
            self.node,
            failures.join("; ")
        );
        if self.failing.get(key) == Some(&message) {
            tracing::debug!(service = %key, %message, "still not programmed in full");
        } else {
            tracing::warn!(service = %key, %message, "a Service not programmed in full");
            self.record(service, EventType::Warning, "ProgrammingFailed", &message);
        }
        self.failing.insert(key.clone(), message);
    }

    fn record(&self, service: &Service, kind: EventType, reason: &str, message: &str) {
        if let Some(events) = &self.events {
            events.record(
                &About::of::<Service>(&service.metadata),
                kind,
                reason,
                message,
            );
        }
    }

    /// Removes frontends that no Service wants: left by an earlier agent
    /// for Services deleted while it was away.
    fn sweep(&mut self) {
        let wanted: BTreeSet<Frontend> = self.programmed.values().flatten().copied().collect();
        let stale: Vec<Frontend> = self
            .table
            .frontends()
            .filter(|f| !wanted.contains(f))
            .copied()
            .collect();
        for frontend in stale {
            if let Err(err) = self.table.remove(frontend) {
                tracing::warn!(%frontend, %err, "removing a stale frontend");
            }
        }
    }
}

#[cfg(test)]
#[path = "balancer_tests.rs"]
mod tests;
