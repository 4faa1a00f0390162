//! `capstan-agent lb dump`: the programmed datapath as a table, read from
//! the pinned maps alone, so it works while the agent is down too. One row
//! per frontend with what the programs counted and its backends, each with
//! the count it got (`address=count`), then how full each map is.

use std::{fmt::Write as _, net::SocketAddrV4, path::Path};

use aya::maps::{HashMap, Map, MapData, PerCpuHashMap};
use capstan_ebpf_common::{
    AFFINITY_MATCH_MAP, BACKEND_STATS_MAP, BACKENDS_MAP, FRONTENDS_MAP, FrontendBackendKey,
    MAX_BACKEND_STATS, MAX_BACKENDS, MAX_FRONTENDS, MAX_SLOTS, SLOTS_MAP, STATS_MAP, SlotKey,
};

use super::{
    datapath::DatapathError,
    maps::{BpfLbMaps, LbMaps},
    service_table::{BackendAddr, Frontend},
};

/// The table for the maps pinned in `pin_dir`.
pub fn dump(pin_dir: &Path) -> Result<String, DatapathError> {
    let open = |name: &str| {
        MapData::from_pin(pin_dir.join(name)).map_err(|err| DatapathError::Pinned {
            path: pin_dir.join(name),
            message: err.to_string(),
        })
    };
    let maps = BpfLbMaps {
        frontends: HashMap::try_from(Map::HashMap(open(FRONTENDS_MAP)?))?,
        slots: HashMap::try_from(Map::HashMap(open(SLOTS_MAP)?))?,
        backends: HashMap::try_from(Map::HashMap(open(BACKENDS_MAP)?))?,
        affinity_matches: HashMap::try_from(Map::HashMap(open(AFFINITY_MATCH_MAP)?))?,
        stats: PerCpuHashMap::try_from(Map::PerCpuHashMap(open(STATS_MAP)?))?,
        backend_stats: PerCpuHashMap::try_from(Map::PerCpuHashMap(open(BACKEND_STATS_MAP)?))?,
    };
    let contents = maps.contents().map_err(|err| DatapathError::Pinned {
        path: pin_dir.to_owned(),
        message: err.to_string(),
    })?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<5} {:>5} {:>5} {:>10} {:>8} {:>9}  BACKENDS",
        "FRONTEND", "PROTO", "ID", "REV", "TRANSLATED", "REFUSED", "AFFINITY"
    );
    for (key, value) in &contents.frontends {
        let Some(frontend) = Frontend::from_key(key) else {
            continue;
        };
        let backends: Vec<String> = (1..=value.count)
            .filter_map(|slot| {
                let id = contents
                    .slots
                    .get(&SlotKey::new(value.id, value.revision, slot))?;
                let backend = contents.backends.get(id)?;
                let got = maps.backend_stats(&FrontendBackendKey {
                    frontend: value.id,
                    backend: *id,
                });
                Some(format!("{}={got}", BackendAddr::from_value(backend).0))
            })
            .collect();
        let stats = maps.stats(value.id);
        let affinity = match value.affinity_timeout_secs {
            0 => "-".to_owned(),
            secs => format!("{secs}s"),
        };
        let _ = writeln!(
            out,
            "{:<22} {:<5} {:>5} {:>5} {:>10} {:>8} {:>9}  {}",
            SocketAddrV4::to_string(&frontend.address),
            frontend.protocol,
            value.id,
            value.revision,
            stats.translated,
            stats.refused,
            affinity,
            if backends.is_empty() {
                "(none: refused)".to_owned()
            } else {
                backends.join(",")
            }
        );
    }
    let _ = writeln!(
        out,
        "\nmaps: frontends {}/{MAX_FRONTENDS}, slots {}/{MAX_SLOTS}, backends {}/{MAX_BACKENDS}, \
         backend counts {}/{MAX_BACKEND_STATS}",
        contents.frontends.len(),
        contents.slots.len(),
        contents.backends.len(),
        contents.backend_stats.len()
    );
    Ok(out)
}
