//! The service table: which backends serve each frontend, written into the
//! datapath's maps so that every connect sees one whole backend set.
//!
//! A change of backends is written as a new revision of the frontend's
//! slots: the new slots first, then the frontend entry pointing at them
//! (one map update, atomic for the programs), then the old revision's
//! slots are deleted. Only the changed frontend's entries are touched. A
//! table can adopt what an earlier agent left pinned and continue from it
//! without a flush.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{Ipv4Addr, SocketAddrV4},
};

use capstan_ebpf_common::{
    FrontendBackendKey, FrontendKey, FrontendValue, Ipv4Endpoint, PROTO_TCP, PROTO_UDP,
    SCOPE_CLUSTER, SlotKey,
};

use super::maps::{LbMapError, LbMaps, MapContents};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }

    fn from_number(number: u8) -> Option<Self> {
        match number {
            PROTO_TCP => Some(Protocol::Tcp),
            PROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// A service address clients connect to (a ClusterIP and port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub address: SocketAddrV4,
    pub protocol: Protocol,
}

impl Frontend {
    pub fn new(ip: Ipv4Addr, port: u16, protocol: Protocol) -> Self {
        Self {
            address: SocketAddrV4::new(ip, port),
            protocol,
        }
    }

    pub(super) fn key(&self) -> FrontendKey {
        FrontendKey::new(
            u32::from(*self.address.ip()).to_be(),
            self.address.port().to_be(),
            self.protocol.number(),
            SCOPE_CLUSTER,
        )
    }

    pub(super) fn from_key(key: &FrontendKey) -> Option<Self> {
        (key.scope == SCOPE_CLUSTER).then_some(())?;
        Some(Self::new(
            Ipv4Addr::from(u32::from_be(key.address)),
            u16::from_be(key.port),
            Protocol::from_number(key.protocol)?,
        ))
    }
}

impl std::fmt::Display for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.protocol)
    }
}

/// A pod address a frontend forwards to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr(pub SocketAddrV4);

impl BackendAddr {
    fn value(self) -> Ipv4Endpoint {
        Ipv4Endpoint::new(u32::from(*self.0.ip()).to_be(), self.0.port().to_be())
    }

    pub(super) fn from_value(backend: &Ipv4Endpoint) -> Self {
        Self(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(backend.address)),
            u16::from_be(backend.port),
        ))
    }
}

/// What one frontend should forward to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontendSpec {
    /// None refuses connects (a Service with no ready endpoint).
    pub backends: BTreeSet<BackendAddr>,
    /// ClientIP session affinity's timeout; 0 for none.
    pub affinity_timeout_secs: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceTableError {
    #[error("frontend {0} has {1} backends, more than the datapath's {max}", max = u16::MAX)]
    TooManyBackends(Frontend, usize),
    #[error("the datapath is full: it holds {0} frontends at most (--max-service-frontends)")]
    TooManyFrontends(u32),
    #[error(transparent)]
    Map(#[from] LbMapError),
}

/// One frontend as the maps hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programmed {
    pub id: u32,
    pub revision: u16,
    /// Ipv4Endpoint ids in slot order.
    backends: Vec<u32>,
    pub affinity_timeout_secs: u32,
}

/// Frontends and backends as the datapath's maps hold them.
#[derive(Debug)]
pub struct ServiceTable<M> {
    maps: M,
    frontends: HashMap<Frontend, Programmed>,
    backends: BackendIds,
    ids: IdPool,
    max_frontends: u32,
    /// Backends removed from the maps since [`Self::take_released`].
    released: Vec<BackendAddr>,
}

impl<M: LbMaps> ServiceTable<M> {
    /// A table over `maps`, taking over what they hold: frontends whose
    /// slots are whole are kept as they are, leftovers of an interrupted
    /// update (slots of another revision, unused backends, stale affinity
    /// matches) are deleted, and nothing a connect relies on is touched.
    pub fn adopt(maps: M, max_frontends: u32) -> Result<Self, ServiceTableError> {
        let MapContents {
            frontends,
            slots,
            backends,
            affinity_matches,
            backend_stats,
        } = maps.contents()?;
        let mut table = Self {
            maps,
            frontends: HashMap::new(),
            backends: BackendIds::default(),
            ids: IdPool::default(),
            max_frontends,
            released: Vec::new(),
        };
        let mut kept_slots = BTreeSet::new();
        let mut kept_matches = BTreeSet::new();
        let mut kept_counts = BTreeSet::new();
        let mut foreign = Vec::new();
        for (key, value) in &frontends {
            let Some(frontend) = Frontend::from_key(key) else {
                foreign.push(*key);
                continue;
            };
            let mut ids = Vec::with_capacity(usize::from(value.count));
            for slot in 1..=value.count {
                let slot_key = SlotKey::new(value.id, value.revision, slot);
                let Some(&id) = slots.get(&slot_key) else {
                    break;
                };
                let Some(backend) = backends.get(&id) else {
                    break;
                };
                table.backends.adopt(id, BackendAddr::from_value(backend));
                kept_slots.insert(slot_key);
                ids.push(id);
            }
            kept_counts.extend(pairs(value.id, &ids));
            if value.affinity_timeout_secs > 0 {
                kept_matches.extend(pairs(value.id, &ids));
            }
            table.ids.adopt(value.id);
            table.frontends.insert(
                frontend,
                Programmed {
                    id: value.id,
                    revision: value.revision,
                    backends: ids,
                    affinity_timeout_secs: value.affinity_timeout_secs,
                },
            );
        }
        for key in foreign {
            table.maps.remove_frontend(&key)?;
        }
        for key in slots.keys().filter(|k| !kept_slots.contains(k)) {
            table.maps.remove_slot(key)?;
        }
        for &id in backends.keys().filter(|id| !table.backends.holds(**id)) {
            table.maps.remove_backend(id)?;
        }
        for key in affinity_matches
            .iter()
            .filter(|k| !kept_matches.contains(k))
        {
            table.maps.remove_affinity_match(key)?;
        }
        for key in backend_stats.difference(&kept_counts) {
            table.maps.remove_backend_stats(key)?;
        }
        // A frontend whose slots were cut short is rewritten whole by the
        // next `set`, which finds its backends differ.
        Ok(table)
    }

    /// Makes `frontend` forward to exactly `spec`'s backends.
    pub fn set(
        &mut self,
        frontend: Frontend,
        spec: &FrontendSpec,
    ) -> Result<(), ServiceTableError> {
        let count = u16::try_from(spec.backends.len())
            .map_err(|_| ServiceTableError::TooManyBackends(frontend, spec.backends.len()))?;
        let old = self.frontends.get(&frontend).cloned();
        let unchanged_backends = old.as_ref().is_some_and(|old| {
            old.backends.len() == spec.backends.len()
                && old.backends.iter().all(|id| {
                    self.backends
                        .addr(*id)
                        .is_some_and(|a| spec.backends.contains(&a))
                })
        });
        if unchanged_backends
            && old.as_ref().map(|o| o.affinity_timeout_secs) == Some(spec.affinity_timeout_secs)
        {
            return Ok(());
        }
        let id = match &old {
            Some(old) => old.id,
            None => self
                .ids
                .allocate(self.max_frontends)
                .ok_or(ServiceTableError::TooManyFrontends(self.max_frontends))?,
        };
        let (revision, ids) = match (&old, unchanged_backends) {
            (Some(old), true) => (old.revision, old.backends.clone()),
            (old, _) => {
                let revision = old.as_ref().map_or(0, |o| o.revision.wrapping_add(1));
                match self.write_revision(id, revision, &spec.backends) {
                    Ok(ids) => (revision, ids),
                    Err(err) => {
                        if old.is_none() {
                            self.ids.free(id);
                        }
                        return Err(err);
                    }
                }
            }
        };
        let old_matches = old
            .as_ref()
            .filter(|o| o.affinity_timeout_secs > 0)
            .map(|o| pairs(id, &o.backends))
            .unwrap_or_default();
        let new_matches = if spec.affinity_timeout_secs > 0 {
            pairs(id, &ids)
        } else {
            BTreeSet::new()
        };
        for key in new_matches.difference(&old_matches) {
            self.maps.set_affinity_match(*key)?;
        }

        let switched = self.maps.set_frontend(
            frontend.key(),
            FrontendValue::new(id, count, revision, spec.affinity_timeout_secs),
        );
        if let Err(err) = switched {
            // The frontend still points at its old revision: take back
            // what was written for the new one.
            if old.as_ref().is_none_or(|o| o.revision != revision) {
                self.undo_revision(id, revision, &ids);
            }
            if old.is_none() {
                self.ids.free(id);
            }
            return Err(err.into());
        }

        for key in old_matches.difference(&new_matches) {
            self.maps.remove_affinity_match(key)?;
        }
        if let Some(old) = old.as_ref().filter(|o| o.revision != revision) {
            // A backend that stays keeps its id, and so its count.
            for key in pairs(id, &old.backends).difference(&pairs(id, &ids)) {
                self.maps.remove_backend_stats(key)?;
            }
            for slot in 1..=old.backends.len() as u16 {
                self.maps
                    .remove_slot(&SlotKey::new(id, old.revision, slot))?;
            }
            self.release(&old.backends)?;
        }
        self.frontends.insert(
            frontend,
            Programmed {
                id,
                revision,
                backends: ids,
                affinity_timeout_secs: spec.affinity_timeout_secs,
            },
        );
        Ok(())
    }

    /// Stops translating `frontend`: connects to it go where they are
    /// addressed again.
    pub fn remove(&mut self, frontend: Frontend) -> Result<(), ServiceTableError> {
        let Some(old) = self.frontends.remove(&frontend) else {
            return Ok(());
        };
        self.maps.remove_frontend(&frontend.key())?;
        for slot in 1..=old.backends.len() as u16 {
            self.maps
                .remove_slot(&SlotKey::new(old.id, old.revision, slot))?;
        }
        for key in pairs(old.id, &old.backends) {
            if old.affinity_timeout_secs > 0 {
                self.maps.remove_affinity_match(&key)?;
            }
            self.maps.remove_backend_stats(&key)?;
        }
        self.maps.remove_stats(old.id)?;
        self.release(&old.backends)?;
        self.ids.free(old.id);
        Ok(())
    }

    /// Every frontend programmed.
    pub fn frontends(&self) -> impl Iterator<Item = &Frontend> {
        self.frontends.keys()
    }

    /// What `frontend` is programmed as, and its backends in slot order.
    pub fn programmed(&self, frontend: &Frontend) -> Option<(&Programmed, Vec<BackendAddr>)> {
        let programmed = self.frontends.get(frontend)?;
        let backends = programmed
            .backends
            .iter()
            .filter_map(|id| self.backends.addr(*id))
            .collect();
        Some((programmed, backends))
    }

    /// The maps, for reading what the programs counted.
    pub fn maps(&self) -> &M {
        &self.maps
    }

    #[cfg(test)]
    pub(super) fn maps_mut(&mut self) -> &mut M {
        &mut self.maps
    }

    /// Writes revision `revision` of frontend `id`: its backends, then its
    /// slots. On a refused write, what was written is taken back, so the
    /// maps hold no part of a set.
    fn write_revision(
        &mut self,
        id: u32,
        revision: u16,
        backends: &BTreeSet<BackendAddr>,
    ) -> Result<Vec<u32>, ServiceTableError> {
        let mut ids = Vec::with_capacity(backends.len());
        for &backend in backends {
            let (backend_id, is_new) = self.backends.acquire(backend);
            ids.push(backend_id);
            if is_new && let Err(err) = self.maps.set_backend(backend_id, backend.value()) {
                self.undo_revision(id, revision, &ids);
                return Err(err.into());
            }
        }
        for (slot, &backend_id) in (1..).zip(&ids) {
            if let Err(err) = self
                .maps
                .set_slot(SlotKey::new(id, revision, slot), backend_id)
            {
                self.undo_revision(id, revision, &ids);
                return Err(err.into());
            }
        }
        Ok(ids)
    }

    /// Best effort: the maps refused a write already, and a refused
    /// removal leaves only an entry nothing points at.
    fn undo_revision(&mut self, id: u32, revision: u16, ids: &[u32]) {
        for slot in 1..=ids.len() as u16 {
            let _ = self.maps.remove_slot(&SlotKey::new(id, revision, slot));
        }
        let _ = self.release(ids);
    }

    /// Backends no frontend forwards to any more, since the last call:
    /// sockets still connected to them are stale.
    pub fn take_released(&mut self) -> Vec<BackendAddr> {
        std::mem::take(&mut self.released)
    }

    fn release(&mut self, ids: &[u32]) -> Result<(), ServiceTableError> {
        for &id in ids {
            if let Some(addr) = self.backends.release(id) {
                self.released.push(addr);
                self.maps.remove_backend(id)?;
            }
        }
        Ok(())
    }
}

/// `frontend` paired with each of `backends`.
fn pairs(frontend: u32, backends: &[u32]) -> BTreeSet<FrontendBackendKey> {
    backends
        .iter()
        .map(|&backend| FrontendBackendKey { frontend, backend })
        .collect()
}

/// Frontend ids: the lowest free one first, so ids stay dense.
#[derive(Debug, Default)]
struct IdPool {
    used: BTreeSet<u32>,
    free: BTreeSet<u32>,
    next: u32,
}

impl IdPool {
    fn allocate(&mut self, max: u32) -> Option<u32> {
        let id = match self.free.pop_first() {
            Some(id) => id,
            None if self.next < max => {
                self.next += 1;
                self.next
            }
            None => return None,
        };
        self.used.insert(id);
        Some(id)
    }

    fn adopt(&mut self, id: u32) {
        self.used.insert(id);
        self.free.remove(&id);
        while self.next < id {
            self.next += 1;
            if !self.used.contains(&self.next) {
                self.free.insert(self.next);
            }
        }
    }

    fn free(&mut self, id: u32) {
        if self.used.remove(&id) {
            self.free.insert(id);
        }
    }
}

/// Ipv4Endpoint ids, shared by every frontend that forwards to the same address.
#[derive(Debug, Default)]
struct BackendIds {
    by_addr: BTreeMap<BackendAddr, (u32, usize)>,
    addr_of: HashMap<u32, BackendAddr>,
    free: Vec<u32>,
    next: u32,
}

impl BackendIds {
    /// The id of `backend`, and whether it was just allocated.
    fn acquire(&mut self, backend: BackendAddr) -> (u32, bool) {
        if let Some((id, users)) = self.by_addr.get_mut(&backend) {
            *users += 1;
            return (*id, false);
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.by_addr.insert(backend, (id, 1));
        self.addr_of.insert(id, backend);
        (id, true)
    }

    /// Counts one more use of `id`, found in the maps at `backend`.
    fn adopt(&mut self, id: u32, backend: BackendAddr) {
        self.by_addr.entry(backend).or_insert((id, 0)).1 += 1;
        self.addr_of.insert(id, backend);
        self.next = self.next.max(id);
    }

    fn holds(&self, id: u32) -> bool {
        self.addr_of.contains_key(&id)
    }

    fn addr(&self, id: u32) -> Option<BackendAddr> {
        self.addr_of.get(&id).copied()
    }

    /// Drops one use of `id`; its address when nothing uses it any more.
    fn release(&mut self, id: u32) -> Option<BackendAddr> {
        let addr = self.addr_of.get(&id).copied()?;
        let (_, users) = self.by_addr.get_mut(&addr)?;
        *users -= 1;
        if *users > 0 {
            return None;
        }
        self.by_addr.remove(&addr);
        self.addr_of.remove(&id);
        self.free.push(id);
        Some(addr)
    }
}

#[cfg(test)]
#[path = "service_table_tests.rs"]
mod tests;
