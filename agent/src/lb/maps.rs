//! The datapath's maps behind a trait: the kernel's BPF maps in the agent,
//! an in-memory copy that records every write in unit tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap};
use capstan_ebpf_common::{
    AFFINITY_MATCH_MAP, BACKEND_STATS_MAP, BACKENDS_MAP, FRONTENDS_MAP, FrontendBackendKey,
    FrontendKey, FrontendStats, FrontendValue, Ipv4Endpoint, SLOTS_MAP, STATS_MAP, SlotKey,
};

/// A map operation the kernel refused.
#[derive(Debug, thiserror::Error)]
#[error("bpf map {map}: {message}")]
pub struct LbMapError {
    pub map: &'static str,
    pub message: String,
}

/// Everything the maps hold that the agent writes, for adoption.
#[derive(Debug, Default, Clone)]
pub struct MapContents {
    pub frontends: BTreeMap<FrontendKey, FrontendValue>,
    pub slots: BTreeMap<SlotKey, u32>,
    pub backends: BTreeMap<u32, Ipv4Endpoint>,
    pub affinity_matches: BTreeSet<FrontendBackendKey>,
    /// The backends of frontends that have a count.
    pub backend_stats: BTreeSet<FrontendBackendKey>,
}

/// The maps the service table writes.
pub trait LbMaps {
    fn set_frontend(&mut self, key: FrontendKey, value: FrontendValue) -> Result<(), LbMapError>;
    fn remove_frontend(&mut self, key: &FrontendKey) -> Result<(), LbMapError>;
    fn set_slot(&mut self, key: SlotKey, backend: u32) -> Result<(), LbMapError>;
    fn remove_slot(&mut self, key: &SlotKey) -> Result<(), LbMapError>;
    fn set_backend(&mut self, id: u32, backend: Ipv4Endpoint) -> Result<(), LbMapError>;
    fn remove_backend(&mut self, id: u32) -> Result<(), LbMapError>;
    fn set_affinity_match(&mut self, key: FrontendBackendKey) -> Result<(), LbMapError>;
    fn remove_affinity_match(&mut self, key: &FrontendBackendKey) -> Result<(), LbMapError>;
    fn remove_stats(&mut self, frontend: u32) -> Result<(), LbMapError>;
    /// What the programs counted for `frontend`.
    fn stats(&self, frontend: u32) -> FrontendStats;
    fn remove_backend_stats(&mut self, key: &FrontendBackendKey) -> Result<(), LbMapError>;
    /// The connects and datagrams a frontend sent to one of its backends.
    fn backend_stats(&self, key: &FrontendBackendKey) -> u64;
    fn contents(&self) -> Result<MapContents, LbMapError>;
}

/// The kernel's maps.
pub struct BpfLbMaps {
    pub(super) frontends: BpfHashMap<MapData, FrontendKey, FrontendValue>,
    pub(super) slots: BpfHashMap<MapData, SlotKey, u32>,
    pub(super) backends: BpfHashMap<MapData, u32, Ipv4Endpoint>,
    pub(super) affinity_matches: BpfHashMap<MapData, FrontendBackendKey, u32>,
    pub(super) stats: PerCpuHashMap<MapData, u32, FrontendStats>,
    pub(super) backend_stats: PerCpuHashMap<MapData, FrontendBackendKey, u64>,
}

impl std::fmt::Debug for BpfLbMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpfLbMaps").finish_non_exhaustive()
    }
}

fn map_error(map: &'static str) -> impl Fn(MapError) -> LbMapError {
    move |err| LbMapError {
        map,
        message: err.to_string(),
    }
}

/// Removing what is not there is not an error: the end state is the same.
/// aya reports a missing key as the syscall's ENOENT.
fn removed(result: Result<(), MapError>, map: &'static str) -> Result<(), LbMapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(err)) if err.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        other => other.map_err(map_error(map)),
    }
}

fn read_all<K: aya::Pod + Ord, V: aya::Pod>(
    map: &BpfHashMap<MapData, K, V>,
    name: &'static str,
) -> Result<BTreeMap<K, V>, LbMapError> {
    // An entry deleted while we iterate ends the walk early in the kernel;
    // the agent is the only writer, so nothing is deleted meanwhile.
    map.iter()
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(map_error(name))
}

impl LbMaps for BpfLbMaps {
    fn set_frontend(&mut self, key: FrontendKey, value: FrontendValue) -> Result<(), LbMapError> {
        self.frontends
            .insert(key, value, 0)
            .map_err(map_error(FRONTENDS_MAP))
    }

    fn remove_frontend(&mut self, key: &FrontendKey) -> Result<(), LbMapError> {
        removed(self.frontends.remove(key), FRONTENDS_MAP)
    }

    fn set_slot(&mut self, key: SlotKey, backend: u32) -> Result<(), LbMapError> {
        self.slots
            .insert(key, backend, 0)
            .map_err(map_error(SLOTS_MAP))
    }

    fn remove_slot(&mut self, key: &SlotKey) -> Result<(), LbMapError> {
        removed(self.slots.remove(key), SLOTS_MAP)
    }

    fn set_backend(&mut self, id: u32, backend: Ipv4Endpoint) -> Result<(), LbMapError> {
        self.backends
            .insert(id, backend, 0)
            .map_err(map_error(BACKENDS_MAP))
    }

    fn remove_backend(&mut self, id: u32) -> Result<(), LbMapError> {
        removed(self.backends.remove(&id), BACKENDS_MAP)
    }

    fn set_affinity_match(&mut self, key: FrontendBackendKey) -> Result<(), LbMapError> {
        self.affinity_matches
            .insert(key, 1, 0)
            .map_err(map_error(AFFINITY_MATCH_MAP))
    }

    fn remove_affinity_match(&mut self, key: &FrontendBackendKey) -> Result<(), LbMapError> {
        removed(self.affinity_matches.remove(key), AFFINITY_MATCH_MAP)
    }

    fn remove_stats(&mut self, frontend: u32) -> Result<(), LbMapError> {
        removed(self.stats.remove(&frontend), STATS_MAP)
    }

    fn stats(&self, frontend: u32) -> FrontendStats {
        let Ok(per_cpu) = self.stats.get(&frontend, 0) else {
            return FrontendStats::default();
        };
        per_cpu
            .iter()
            .fold(FrontendStats::default(), |sum, cpu| FrontendStats {
                translated: sum.translated + cpu.translated,
                refused: sum.refused + cpu.refused,
            })
    }

    fn remove_backend_stats(&mut self, key: &FrontendBackendKey) -> Result<(), LbMapError> {
        removed(self.backend_stats.remove(key), BACKEND_STATS_MAP)
    }

    fn backend_stats(&self, key: &FrontendBackendKey) -> u64 {
        self.backend_stats
            .get(key, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum())
    }

    fn contents(&self) -> Result<MapContents, LbMapError> {
        Ok(MapContents {
            frontends: read_all(&self.frontends, FRONTENDS_MAP)?,
            slots: read_all(&self.slots, SLOTS_MAP)?,
            backends: read_all(&self.backends, BACKENDS_MAP)?,
            affinity_matches: read_all(&self.affinity_matches, AFFINITY_MATCH_MAP)?
                .into_keys()
                .collect(),
            backend_stats: self
                .backend_stats
                .keys()
                .collect::<Result<_, _>>()
                .map_err(map_error(BACKEND_STATS_MAP))?,
        })
    }
}

/// In-memory maps that record every write in order, for unit tests.
#[derive(Debug, Default, Clone)]
pub struct RecordingMaps {
    pub contents: MapContents,
    /// Refuse slots beyond this many, as a full kernel map does.
    pub slot_capacity: Option<usize>,
    pub stats: HashMap<u32, FrontendStats>,
    pub backend_stats: BTreeMap<FrontendBackendKey, u64>,
    pub log: Vec<String>,
}

impl LbMaps for RecordingMaps {
    fn set_frontend(&mut self, key: FrontendKey, value: FrontendValue) -> Result<(), LbMapError> {
        self.log.push(format!(
            "set frontend {} count {} revision {}",
            value.id, value.count, value.revision
        ));
        self.contents.frontends.insert(key, value);
        Ok(())
    }

    fn remove_frontend(&mut self, key: &FrontendKey) -> Result<(), LbMapError> {
        if let Some(value) = self.contents.frontends.remove(key) {
            self.log.push(format!("remove frontend {}", value.id));
        }
        Ok(())
    }

    fn set_slot(&mut self, key: SlotKey, backend: u32) -> Result<(), LbMapError> {
        let full = self
            .slot_capacity
            .is_some_and(|capacity| self.contents.slots.len() >= capacity);
        if full && !self.contents.slots.contains_key(&key) {
            return Err(LbMapError {
                map: SLOTS_MAP,
                message: "map full (E2BIG)".into(),
            });
        }
        self.log.push(format!(
            "set slot {}/{}/{} = {backend}",
            key.frontend, key.revision, key.slot
        ));
        self.contents.slots.insert(key, backend);
        Ok(())
    }

    fn remove_slot(&mut self, key: &SlotKey) -> Result<(), LbMapError> {
        self.log.push(format!(
            "remove slot {}/{}/{}",
            key.frontend, key.revision, key.slot
        ));
        self.contents.slots.remove(key);
        Ok(())
    }

    fn set_backend(&mut self, id: u32, backend: Ipv4Endpoint) -> Result<(), LbMapError> {
        self.log.push(format!("set backend {id}"));
        self.contents.backends.insert(id, backend);
        Ok(())
    }

    fn remove_backend(&mut self, id: u32) -> Result<(), LbMapError> {
        self.log.push(format!("remove backend {id}"));
        self.contents.backends.remove(&id);
        Ok(())
    }

    fn set_affinity_match(&mut self, key: FrontendBackendKey) -> Result<(), LbMapError> {
        self.log
            .push(format!("set match {}/{}", key.frontend, key.backend));
        self.contents.affinity_matches.insert(key);
        Ok(())
    }

    fn remove_affinity_match(&mut self, key: &FrontendBackendKey) -> Result<(), LbMapError> {
        self.log
            .push(format!("remove match {}/{}", key.frontend, key.backend));
        self.contents.affinity_matches.remove(key);
        Ok(())
    }

    fn remove_stats(&mut self, frontend: u32) -> Result<(), LbMapError> {
        self.stats.remove(&frontend);
        Ok(())
    }

    fn stats(&self, frontend: u32) -> FrontendStats {
        self.stats.get(&frontend).copied().unwrap_or_default()
    }

    fn remove_backend_stats(&mut self, key: &FrontendBackendKey) -> Result<(), LbMapError> {
        self.backend_stats.remove(key);
        Ok(())
    }

    fn backend_stats(&self, key: &FrontendBackendKey) -> u64 {
        self.backend_stats.get(key).copied().unwrap_or_default()
    }

    fn contents(&self) -> Result<MapContents, LbMapError> {
        Ok(MapContents {
            backend_stats: self.backend_stats.keys().copied().collect(),
            ..self.contents.clone()
        })
    }
}
