use super::*;
use crate::lb::maps::RecordingMaps;

fn frontend() -> Frontend {
    Frontend::new(Ipv4Addr::new(10, 96, 0, 10), 53, Protocol::Udp)
}

fn other() -> Frontend {
    Frontend::new(Ipv4Addr::new(10, 96, 0, 11), 80, Protocol::Tcp)
}

fn backend(last: u8) -> BackendAddr {
    BackendAddr(SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, last), 8080))
}

fn spec(backends: &[u8]) -> FrontendSpec {
    FrontendSpec {
        backends: backends.iter().map(|&b| backend(b)).collect(),
        affinity_timeout_secs: 0,
    }
}

fn table() -> ServiceTable<RecordingMaps> {
    ServiceTable::adopt(RecordingMaps::default(), 100).unwrap()
}

/// What a connect would resolve `frontend` to, read from the maps alone.
fn resolved(maps: &RecordingMaps, frontend: Frontend) -> Option<BTreeSet<BackendAddr>> {
    let c = &maps.contents;
    let value = c.frontends.get(&frontend.key())?;
    Some(
        (1..=value.count)
            .map(|slot| {
                let id = c.slots[&SlotKey::new(value.id, value.revision, slot)];
                BackendAddr::from_value(&c.backends[&id])
            })
            .collect(),
    )
}

#[test]
fn keys_are_in_network_byte_order() {
    let key = frontend().key();
    assert_eq!(key.address.to_ne_bytes(), [10, 96, 0, 10]);
    assert_eq!(key.port.to_ne_bytes(), [0, 53]);
    assert_eq!((key.protocol, key.scope), (PROTO_UDP, SCOPE_CLUSTER));
}

#[test]
fn a_new_set_is_written_whole_before_the_frontend_switches_to_it() {
    let mut table = table();
    table.set(frontend(), &spec(&[1, 2])).unwrap();
    table.maps.log.clear();

    table.set(frontend(), &spec(&[2, 3])).unwrap();

    assert_eq!(
        table.maps.log,
        [
            "set backend 3",
            "set slot 1/1/1 = 2",
            "set slot 1/1/2 = 3",
            "set frontend 1 count 2 revision 1",
            "remove slot 1/0/1",
            "remove slot 1/0/2",
            "remove backend 1",
        ]
    );
    assert_eq!(
        resolved(&table.maps, frontend()),
        Some(spec(&[2, 3]).backends)
    );
    assert_eq!(table.maps.contents.slots.len(), 2, "no old revision left");
}

#[test]
fn an_unchanged_set_writes_nothing() {
    let mut table = table();
    table.set(frontend(), &spec(&[1, 2])).unwrap();
    table.maps.log.clear();

    table.set(frontend(), &spec(&[2, 1])).unwrap();

    assert!(table.maps.log.is_empty(), "{:?}", table.maps.log);
}

#[test]
fn no_backends_keeps_the_frontend_to_refuse_connects() {
    let mut table = table();
    table.set(frontend(), &spec(&[1])).unwrap();
    table.set(frontend(), &spec(&[])).unwrap();

    let value = table.maps.contents.frontends[&frontend().key()];
    assert_eq!(value.count, 0);
    assert!(table.maps.contents.slots.is_empty());
    assert!(table.maps.contents.backends.is_empty());
}

#[test]
fn backends_shared_by_frontends_live_until_the_last_user_goes() {
    let mut table = table();
    table.set(frontend(), &spec(&[1])).unwrap();
    table.set(other(), &spec(&[1])).unwrap();
    assert_eq!(table.maps.contents.backends.len(), 1);

    table.remove(frontend()).unwrap();
    assert_eq!(resolved(&table.maps, other()), Some(spec(&[1]).backends));
    assert_eq!(resolved(&table.maps, frontend()), None);

    table.remove(other()).unwrap();
    assert!(table.maps.contents.backends.is_empty());
    assert!(table.maps.contents.slots.is_empty());
    assert!(table.maps.contents.frontends.is_empty());
}

#[test]
fn affinity_matches_follow_the_backend_set() {
    let mut table = table();
    let mut sticky = spec(&[1, 2]);
    sticky.affinity_timeout_secs = 10_800;
    table.set(frontend(), &sticky).unwrap();
    assert_eq!(table.maps.contents.affinity_matches.len(), 2);

    sticky.backends = spec(&[2]).backends;
    table.set(frontend(), &sticky).unwrap();
    let backend_2 = table.programmed(&frontend()).unwrap().0.backends[0];
    assert_eq!(
        table.maps.contents.affinity_matches,
        BTreeSet::from([FrontendBackendKey {
            frontend: 1,
            backend: backend_2
        }])
    );

    sticky.affinity_timeout_secs = 0;
    table.maps.log.clear();
    table.set(frontend(), &sticky).unwrap();
    assert!(table.maps.contents.affinity_matches.is_empty());
    assert!(
        !table.maps.log.iter().any(|l| l.starts_with("set slot")),
        "turning affinity off keeps the slots: {:?}",
        table.maps.log
    );
}

#[test]
fn backend_counts_go_with_their_backend_and_their_frontend() {
    let mut table = table();
    table.set(frontend(), &spec(&[1, 2])).unwrap();
    let ids = table.programmed(&frontend()).unwrap().0.backends.clone();
    let pair = |backend| FrontendBackendKey {
        frontend: 1,
        backend,
    };
    // The programs counted connects to both; a stray count is left by an
    // agent killed before it removed it.
    table.maps.backend_stats.insert(pair(ids[0]), 7);
    table.maps.backend_stats.insert(pair(ids[1]), 5);
    table.maps.backend_stats.insert(pair(99), 1);
    let mut table = ServiceTable::adopt(table.maps, 100).unwrap();
    assert_eq!(
        table.maps.backend_stats,
        BTreeMap::from([(pair(ids[0]), 7), (pair(ids[1]), 5)]),
        "adoption keeps the counts of programmed backends only"
    );

    table.set(frontend(), &spec(&[2, 3])).unwrap();
    assert_eq!(
        table.maps.backend_stats,
        BTreeMap::from([(pair(ids[1]), 5)]),
        "backend 2 kept its id and its count; backend 1's went with it"
    );
    table.remove(frontend()).unwrap();
    assert!(table.maps.backend_stats.is_empty());
}

#[test]
fn frontend_ids_are_reused_and_bounded() {
    let mut table = ServiceTable::adopt(RecordingMaps::default(), 2).unwrap();
    table.set(frontend(), &spec(&[1])).unwrap();
    table.set(other(), &spec(&[1])).unwrap();
    let third = Frontend::new(Ipv4Addr::new(10, 96, 0, 12), 80, Protocol::Tcp);
    assert!(matches!(
        table.set(third, &spec(&[1])),
        Err(ServiceTableError::TooManyFrontends(2))
    ));
    table.remove(frontend()).unwrap();
    table.set(third, &spec(&[1])).unwrap();
    assert_eq!(table.maps.contents.frontends[&third.key()].id, 1);
}

#[test]
fn adoption_keeps_whole_frontends_and_sweeps_leftovers() {
    let mut before = table();
    before.set(frontend(), &spec(&[1, 2])).unwrap();
    before.set(other(), &spec(&[3])).unwrap();
    let mut maps = before.maps.clone();
    // An agent killed mid-update: the next revision's slots and a backend
    // written, the frontend not yet switched.
    maps.contents.slots.insert(SlotKey::new(1, 1, 1), 99);
    maps.contents.backends.insert(99, backend(99).value());
    maps.log.clear();

    let mut table = ServiceTable::adopt(maps, 100).unwrap();

    assert_eq!(
        table.maps.log,
        ["remove slot 1/1/1", "remove backend 99"],
        "only the leftovers are deleted"
    );
    assert_eq!(
        resolved(&table.maps, frontend()),
        Some(spec(&[1, 2]).backends)
    );
    table.maps.log.clear();
    table.set(frontend(), &spec(&[1, 2])).unwrap();
    table.set(other(), &spec(&[3])).unwrap();
    assert!(
        table.maps.log.is_empty(),
        "an adopted table knows what is programmed: {:?}",
        table.maps.log
    );
    let fourth = Frontend::new(Ipv4Addr::new(10, 96, 0, 13), 80, Protocol::Tcp);
    table.set(fourth, &spec(&[4])).unwrap();
    assert_eq!(
        table.maps.contents.frontends[&fourth.key()].id,
        3,
        "new ids do not collide with adopted ones"
    );
    assert_eq!(resolved(&table.maps, fourth), Some(spec(&[4]).backends));
}

#[test]
fn a_refused_write_leaves_the_old_set_whole() {
    let maps = RecordingMaps {
        slot_capacity: Some(3),
        ..RecordingMaps::default()
    };
    let mut table = ServiceTable::adopt(maps, 100).unwrap();
    table.set(frontend(), &spec(&[1, 2])).unwrap();
    let before = table.maps.contents.clone();

    let refused = table.set(frontend(), &spec(&[3, 4]));

    assert!(
        matches!(refused, Err(ServiceTableError::Map(_))),
        "{refused:?}"
    );
    assert_eq!(table.maps.contents.slots, before.slots);
    assert_eq!(table.maps.contents.backends, before.backends);
    assert_eq!(
        resolved(&table.maps, frontend()),
        Some(spec(&[1, 2]).backends)
    );
    table.maps.slot_capacity = None;
    table.set(frontend(), &spec(&[3, 4])).unwrap();
    assert_eq!(
        resolved(&table.maps, frontend()),
        Some(spec(&[3, 4]).backends),
        "the table knows what the maps hold and can try again"
    );
}

#[test]
fn backends_that_leave_every_frontend_are_reported_once() {
    let mut table = table();
    table.set(frontend(), &spec(&[1, 2])).unwrap();
    table.set(other(), &spec(&[2])).unwrap();
    assert!(table.take_released().is_empty());

    table.set(frontend(), &spec(&[3])).unwrap();
    assert_eq!(
        table.take_released(),
        [backend(1)],
        "backend 2 still serves the other frontend"
    );
    table.remove(other()).unwrap();
    assert_eq!(table.take_released(), [backend(2)]);
    assert!(table.take_released().is_empty());
}

/// A storm of updates over many frontends sharing backends, thousands of
/// endpoints among them: after every step, each frontend resolves to
/// exactly what it was last given, and nothing is left that no frontend
/// uses.
#[test]
fn an_update_storm_leaves_the_maps_exact() {
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let frontends: Vec<Frontend> = (0..20)
        .map(|i| Frontend::new(Ipv4Addr::new(10, 96, 1, i), 80, Protocol::Tcp))
        .collect();
    let mut table = ServiceTable::adopt(RecordingMaps::default(), 100).unwrap();
    let mut expected: BTreeMap<Frontend, BTreeSet<BackendAddr>> = BTreeMap::new();
    for step in 0..2_000 {
        let frontend = frontends[next(20) as usize];
        if next(10) == 0 {
            table.remove(frontend).unwrap();
            expected.remove(&frontend);
        } else {
            let size = if next(50) == 0 { 3_000 } else { next(12) };
            let backends: BTreeSet<BackendAddr> = (0..size)
                .map(|_| {
                    let n = next(4_000) as u32;
                    BackendAddr(SocketAddrV4::new(
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + n),
                        8080,
                    ))
                })
                .collect();
            let spec = FrontendSpec {
                backends: backends.clone(),
                affinity_timeout_secs: 0,
            };
            table.set(frontend, &spec).unwrap();
            expected.insert(frontend, backends);
        }
        for frontend in &frontends {
            assert_eq!(
                resolved(&table.maps, *frontend),
                expected.get(frontend).cloned(),
                "step {step}: {frontend}"
            );
        }
        let slots: usize = expected.values().map(BTreeSet::len).sum();
        assert_eq!(table.maps.contents.slots.len(), slots, "step {step}");
        let used: BTreeSet<BackendAddr> = expected.values().flatten().copied().collect();
        assert_eq!(
            table.maps.contents.backends.len(),
            used.len(),
            "step {step}"
        );
    }
}
