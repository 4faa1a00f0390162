//! The service table: which backends serve each frontend, written into the
//! datapath's maps as slots, touching only entries that change.
//!
//! Writes are ordered so that a connect racing with an update always finds a
//! complete frontend: new slots are written before the master entry announces
//! them, and surplus slots are removed only after the master stops counting
//! them.

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, SocketAddrV4},
};

use capstan_ebpf_common::{Backend, PROTO_TCP, PROTO_UDP, ServiceKey, ServiceValue};

/// A map operation the kernel refused.
#[derive(Debug, thiserror::Error)]
#[error("bpf map {map}: {message}")]
pub struct LbMapError {
    pub map: &'static str,
    pub message: String,
}

/// The two maps the datapath reads. The real implementation writes BPF maps;
/// unit tests use an in-memory one.
pub trait LbMaps {
    fn set_slot(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), LbMapError>;
    fn remove_slot(&mut self, key: &ServiceKey) -> Result<(), LbMapError>;
    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), LbMapError>;
    fn remove_backend(&mut self, id: u32) -> Result<(), LbMapError>;
}

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

    fn key(&self, slot: u16) -> ServiceKey {
        ServiceKey::new(
            u32::from(*self.address.ip()).to_be(),
            self.address.port().to_be(),
            self.protocol.number(),
            slot,
        )
    }
}

/// A pod address a frontend forwards to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr(pub SocketAddrV4);

impl BackendAddr {
    fn value(self) -> Backend {
        Backend::new(u32::from(*self.0.ip()).to_be(), self.0.port().to_be())
    }
}

/// Too many backends for one frontend: slots are numbered with a u16.
#[derive(Debug, thiserror::Error)]
pub enum ServiceTableError {
    #[error("frontend {0:?} has {1} backends, more than the datapath's {max}", max = u16::MAX)]
    TooManyBackends(Frontend, usize),
    #[error(transparent)]
    Map(#[from] LbMapError),
}

/// Frontends and backends as the datapath's maps hold them.
#[derive(Debug)]
pub struct ServiceTable<M> {
    maps: M,
    frontends: HashMap<Frontend, Vec<u32>>,
    backends: BackendIds,
}

impl<M: LbMaps> ServiceTable<M> {
    pub fn new(maps: M) -> Self {
        Self {
            maps,
            frontends: HashMap::new(),
            backends: BackendIds::default(),
        }
    }

    /// Makes `frontend` forward to exactly `backends` (none removes it).
    pub fn set_backends(
        &mut self,
        frontend: Frontend,
        backends: &[BackendAddr],
    ) -> Result<(), ServiceTableError> {
        if backends.is_empty() {
            return self.remove(frontend);
        }
        let count = u16::try_from(backends.len())
            .map_err(|_| ServiceTableError::TooManyBackends(frontend, backends.len()))?;

        let mut ids = Vec::with_capacity(backends.len());
        for &backend in backends {
            let (id, is_new) = self.backends.acquire(backend);
            if is_new {
                self.maps.set_backend(id, backend.value())?;
            }
            ids.push(id);
        }
        let old = self.frontends.remove(&frontend).unwrap_or_default();

        for (slot, &id) in (1..=count).zip(&ids) {
            if old.get(usize::from(slot) - 1) != Some(&id) {
                self.maps
                    .set_slot(frontend.key(slot), ServiceValue::slot(id))?;
            }
        }
        if old.len() != ids.len() {
            self.maps
                .set_slot(frontend.key(0), ServiceValue::master(count))?;
        }
        for slot in (ids.len() + 1)..=old.len() {
            self.maps.remove_slot(&frontend.key(slot as u16))?;
        }
        self.frontends.insert(frontend, ids);
        self.release(old)
    }

    /// Stops translating `frontend`.
    pub fn remove(&mut self, frontend: Frontend) -> Result<(), ServiceTableError> {
        let Some(old) = self.frontends.remove(&frontend) else {
            return Ok(());
        };
        self.maps.remove_slot(&frontend.key(0))?;
        for slot in 1..=old.len() {
            self.maps.remove_slot(&frontend.key(slot as u16))?;
        }
        self.release(old)
    }

    fn release(&mut self, ids: Vec<u32>) -> Result<(), ServiceTableError> {
        for id in ids {
            if self.backends.release(id) {
                self.maps.remove_backend(id)?;
            }
        }
        Ok(())
    }
}

/// Backend ids, shared by every frontend that forwards to the same address.
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

    /// Drops one use of `id`; true when nothing uses it any more.
    fn release(&mut self, id: u32) -> bool {
        let Some(addr) = self.addr_of.get(&id).copied() else {
            return false;
        };
        let Some((_, users)) = self.by_addr.get_mut(&addr) else {
            return false;
        };
        *users -= 1;
        if *users > 0 {
            return false;
        }
        self.by_addr.remove(&addr);
        self.addr_of.remove(&id);
        self.free.push(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In-memory maps that record every write in order.
    #[derive(Debug, Default)]
    struct RecordingMaps {
        slots: BTreeMap<(u32, u16, u8, u16), ServiceValue>,
        backends: BTreeMap<u32, Backend>,
        log: Vec<String>,
    }

    fn flat(key: &ServiceKey) -> (u32, u16, u8, u16) {
        (key.address, key.port, key.protocol, key.backend_slot)
    }

    impl LbMaps for RecordingMaps {
        fn set_slot(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), LbMapError> {
            self.log.push(format!("set slot {}", key.backend_slot));
            self.slots.insert(flat(&key), value);
            Ok(())
        }
        fn remove_slot(&mut self, key: &ServiceKey) -> Result<(), LbMapError> {
            self.log.push(format!("remove slot {}", key.backend_slot));
            self.slots.remove(&flat(key));
            Ok(())
        }
        fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), LbMapError> {
            self.log.push(format!("set backend {id}"));
            self.backends.insert(id, backend);
            Ok(())
        }
        fn remove_backend(&mut self, id: u32) -> Result<(), LbMapError> {
            self.log.push(format!("remove backend {id}"));
            self.backends.remove(&id);
            Ok(())
        }
    }

    fn frontend() -> Frontend {
        Frontend::new(Ipv4Addr::new(10, 96, 0, 10), 53, Protocol::Udp)
    }

    fn backend(last: u8) -> BackendAddr {
        BackendAddr(SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, last), 8080))
    }

    /// What the datapath would resolve each slot to.
    fn resolved(table: &ServiceTable<RecordingMaps>, frontend: Frontend) -> Vec<BackendAddr> {
        let maps = &table.maps;
        let Some(master) = maps.slots.get(&flat(&frontend.key(0))) else {
            return Vec::new();
        };
        (1..=master.count)
            .map(|slot| {
                let id = maps.slots[&flat(&frontend.key(slot))].backend_id;
                let b = maps.backends[&id];
                BackendAddr(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(b.address)),
                    u16::from_be(b.port),
                ))
            })
            .collect()
    }

    #[test]
    fn keys_are_in_network_byte_order() {
        let key = frontend().key(3);
        assert_eq!(key.address.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(key.port.to_ne_bytes(), [0, 53]);
        assert_eq!((key.protocol, key.backend_slot), (PROTO_UDP, 3));
    }

    #[test]
    fn growing_writes_slots_before_the_master() {
        let mut table = ServiceTable::new(RecordingMaps::default());
        table.set_backends(frontend(), &[backend(1)]).unwrap();
        table.maps.log.clear();

        table
            .set_backends(frontend(), &[backend(1), backend(2), backend(3)])
            .unwrap();

        assert_eq!(
            table.maps.log,
            [
                "set backend 2",
                "set backend 3",
                "set slot 2",
                "set slot 3",
                "set slot 0"
            ]
        );
        assert_eq!(
            resolved(&table, frontend()),
            [backend(1), backend(2), backend(3)]
        );
    }

    #[test]
    fn shrinking_updates_the_master_before_removing_slots() {
        let mut table = ServiceTable::new(RecordingMaps::default());
        table
            .set_backends(frontend(), &[backend(1), backend(2), backend(3)])
            .unwrap();
        table.maps.log.clear();

        table.set_backends(frontend(), &[backend(1)]).unwrap();

        assert_eq!(
            table.maps.log,
            [
                "set slot 0",
                "remove slot 2",
                "remove slot 3",
                "remove backend 2",
                "remove backend 3"
            ]
        );
        assert_eq!(resolved(&table, frontend()), [backend(1)]);
    }

    #[test]
    fn an_unchanged_set_writes_nothing() {
        let mut table = ServiceTable::new(RecordingMaps::default());
        table
            .set_backends(frontend(), &[backend(1), backend(2)])
            .unwrap();
        table.maps.log.clear();

        table
            .set_backends(frontend(), &[backend(1), backend(2)])
            .unwrap();

        assert!(table.maps.log.is_empty(), "{:?}", table.maps.log);
    }

    #[test]
    fn backends_shared_by_frontends_live_until_the_last_user_goes() {
        let other = Frontend::new(Ipv4Addr::new(10, 96, 0, 11), 80, Protocol::Tcp);
        let mut table = ServiceTable::new(RecordingMaps::default());
        table.set_backends(frontend(), &[backend(1)]).unwrap();
        table.set_backends(other, &[backend(1)]).unwrap();
        assert_eq!(table.maps.backends.len(), 1);

        table.remove(frontend()).unwrap();
        assert_eq!(resolved(&table, other), [backend(1)]);
        assert!(resolved(&table, frontend()).is_empty());

        table.set_backends(other, &[]).unwrap();
        assert!(table.maps.backends.is_empty());
        assert!(table.maps.slots.is_empty());
    }

    #[test]
    fn freed_backend_ids_are_reused() {
        let mut table = ServiceTable::new(RecordingMaps::default());
        table
            .set_backends(frontend(), &[backend(1), backend(2)])
            .unwrap();
        table.set_backends(frontend(), &[backend(1)]).unwrap();
        table
            .set_backends(frontend(), &[backend(1), backend(9)])
            .unwrap();

        assert_eq!(
            table.maps.backends.keys().copied().collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(resolved(&table, frontend()), [backend(1), backend(9)]);
    }
}
