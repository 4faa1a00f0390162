use std::net::{Ipv4Addr, SocketAddrV4};

use kube::runtime::watcher::Event;
use serde_json::json;

use super::*;
use crate::{
    events::RecordingEvents,
    lb::{
        maps::RecordingMaps,
        service_table::{BackendAddr, Protocol},
    },
};

fn service(name: &str, ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default", "resourceVersion": "1" },
        "spec": { "clusterIP": ip, "ports": [{ "port": 80 }] },
    }))
    .unwrap()
}

fn slice(name: &str, service: &str, ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({ "addresses": [ip] })).collect();
    serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default", "resourceVersion": "1",
                      "labels": { SERVICE_NAME_LABEL: service } },
        "addressType": "IPv4",
        "ports": [{ "port": 8080 }],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn frontend(ip: [u8; 4]) -> Frontend {
    Frontend::new(Ipv4Addr::from(ip), 80, Protocol::Tcp)
}

struct Fixture {
    balancer: Balancer<RecordingMaps>,
    services: Arc<Watched<Service>>,
    slices: Arc<Watched<EndpointSlice>>,
    pending: Pending,
}

impl Fixture {
    fn new(maps: RecordingMaps) -> Self {
        Self::holding(maps, 100, Arc::new(RecordingEvents::default()))
    }

    /// A balancer whose table holds `max_frontends`, reporting to `events`.
    fn holding(maps: RecordingMaps, max_frontends: u32, events: Arc<RecordingEvents>) -> Self {
        let services = Arc::new(Watched::default());
        let slices = Arc::new(Watched::default());
        let table = ServiceTable::adopt(maps, max_frontends).unwrap();
        Self {
            balancer: Balancer::new(
                "h1".into(),
                Arc::clone(&services),
                Arc::clone(&slices),
                table,
            )
            .with_events(events),
            services,
            slices,
            pending: Pending::default(),
        }
    }

    fn list(&mut self, services: Vec<Service>, slices: Vec<EndpointSlice>) {
        self.services.apply(Event::Init);
        for s in services {
            self.services.apply(Event::InitApply(s));
        }
        self.services.apply(Event::InitDone);
        self.slices.apply(Event::Init);
        for s in slices {
            self.slices.apply(Event::InitApply(s));
        }
        self.slices.apply(Event::InitDone);
    }

    /// Feeds the notices a subscriber would get, then programs.
    fn step(&mut self, services: &[Notice], slices: &[Notice]) {
        for n in services {
            self.balancer.on_service(n.clone(), &mut self.pending);
        }
        for n in slices {
            self.balancer.on_slice(n.clone(), &mut self.pending);
        }
        self.balancer.program(&mut self.pending);
    }

    fn backends(&self, frontend: Frontend) -> Option<Vec<BackendAddr>> {
        self.balancer
            .table
            .programmed(&frontend)
            .map(|(_, backends)| backends)
    }

    fn log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.balancer.table.maps_mut().log)
    }
}

fn at(ip: &str) -> BackendAddr {
    BackendAddr(SocketAddrV4::new(ip.parse().unwrap(), 8080))
}

#[test]
fn nothing_is_written_until_both_kinds_are_listed() {
    let mut f = Fixture::new(RecordingMaps::default());
    f.services.apply(Event::Apply(service("web", "10.96.0.20")));
    f.step(&[Notice::Changed(key("web")), Notice::Synced], &[]);
    assert!(f.log().is_empty(), "a Service without its slices yet");

    f.slices
        .apply(Event::Apply(slice("web-1", "web", &["10.244.1.5"])));
    f.step(&[], &[Notice::Changed(key("web-1")), Notice::Synced]);
    assert_eq!(
        f.backends(frontend([10, 96, 0, 20])),
        Some(vec![at("10.244.1.5")])
    );
}

#[test]
fn a_slice_change_reprograms_only_its_service() {
    let mut f = Fixture::new(RecordingMaps::default());
    f.list(
        vec![service("web", "10.96.0.20"), service("api", "10.96.0.21")],
        vec![
            slice("web-1", "web", &["10.244.1.5"]),
            slice("api-1", "api", &["10.244.1.6"]),
        ],
    );
    f.step(
        &[
            Notice::Changed(key("web")),
            Notice::Changed(key("api")),
            Notice::Synced,
        ],
        &[
            Notice::Changed(key("web-1")),
            Notice::Changed(key("api-1")),
            Notice::Synced,
        ],
    );
    f.log();

    f.slices.apply(Event::Apply(slice(
        "web-1",
        "web",
        &["10.244.1.5", "10.244.2.5"],
    )));
    f.step(&[], &[Notice::Changed(key("web-1"))]);

    let web_id = f
        .balancer
        .table
        .programmed(&frontend([10, 96, 0, 20]))
        .unwrap()
        .0
        .id;
    let log = f.log();
    assert!(!log.is_empty());
    assert!(
        log.iter()
            .all(|l| !l.contains("frontend") || l.contains(&format!("frontend {web_id} "))),
        "only web's entries: {log:?}"
    );
    assert_eq!(
        f.backends(frontend([10, 96, 0, 20])),
        Some(vec![at("10.244.1.5"), at("10.244.2.5")])
    );
}

#[test]
fn a_deleted_service_and_a_relabelled_slice_are_followed() {
    let mut f = Fixture::new(RecordingMaps::default());
    f.list(
        vec![service("web", "10.96.0.20"), service("api", "10.96.0.21")],
        vec![slice("s", "web", &["10.244.1.5"])],
    );
    f.step(
        &[
            Notice::Changed(key("web")),
            Notice::Changed(key("api")),
            Notice::Synced,
        ],
        &[Notice::Changed(key("s")), Notice::Synced],
    );

    f.slices
        .apply(Event::Apply(slice("s", "api", &["10.244.1.5"])));
    f.step(&[], &[Notice::Changed(key("s"))]);
    assert_eq!(f.backends(frontend([10, 96, 0, 20])), Some(vec![]));
    assert_eq!(
        f.backends(frontend([10, 96, 0, 21])),
        Some(vec![at("10.244.1.5")])
    );

    f.services
        .apply(Event::Delete(service("api", "10.96.0.21")));
    f.step(&[Notice::Changed(key("api"))], &[]);
    assert_eq!(f.backends(frontend([10, 96, 0, 21])), None);
}

#[test]
fn an_adopted_datapath_is_reconciled_by_difference() {
    // What an earlier agent programmed: web with one backend, and a
    // Service deleted while no agent ran.
    let mut earlier = Fixture::new(RecordingMaps::default());
    earlier.list(
        vec![service("web", "10.96.0.20"), service("gone", "10.96.0.30")],
        vec![
            slice("web-1", "web", &["10.244.1.5"]),
            slice("gone-1", "gone", &["10.244.1.9"]),
        ],
    );
    earlier.step(
        &[
            Notice::Changed(key("web")),
            Notice::Changed(key("gone")),
            Notice::Synced,
        ],
        &[
            Notice::Changed(key("web-1")),
            Notice::Changed(key("gone-1")),
            Notice::Synced,
        ],
    );
    let gone_id = earlier
        .balancer
        .table
        .programmed(&frontend([10, 96, 0, 30]))
        .unwrap()
        .0
        .id;
    let mut maps = earlier.balancer.table.maps().clone();
    maps.log.clear();

    let mut f = Fixture::new(maps);
    f.list(
        vec![service("web", "10.96.0.20")],
        vec![slice("web-1", "web", &["10.244.1.5"])],
    );
    f.step(
        &[Notice::Changed(key("web")), Notice::Synced],
        &[Notice::Changed(key("web-1")), Notice::Synced],
    );

    let log = f.log();
    assert!(
        log.iter().all(|l| l.starts_with("remove")),
        "web is not rewritten, only the gone Service removed: {log:?}"
    );
    assert!(
        log.contains(&format!("remove frontend {gone_id}")),
        "{log:?}"
    );
    assert_eq!(
        f.backends(frontend([10, 96, 0, 20])),
        Some(vec![at("10.244.1.5")])
    );
    assert_eq!(f.backends(frontend([10, 96, 0, 30])), None);
}

#[test]
fn a_service_that_does_not_fit_is_reported_once_and_retried_when_room_is_freed() {
    let events = Arc::new(RecordingEvents::default());
    let mut f = Fixture::holding(RecordingMaps::default(), 1, Arc::clone(&events));
    f.list(
        vec![service("api", "10.96.0.21"), service("web", "10.96.0.20")],
        vec![
            slice("api-1", "api", &["10.244.1.6"]),
            slice("web-1", "web", &["10.244.1.5"]),
        ],
    );
    f.step(
        &[
            Notice::Changed(key("api")),
            Notice::Changed(key("web")),
            Notice::Synced,
        ],
        &[
            Notice::Changed(key("api-1")),
            Notice::Changed(key("web-1")),
            Notice::Synced,
        ],
    );
    assert!(f.backends(frontend([10, 96, 0, 21])).is_some());
    assert_eq!(
        f.backends(frontend([10, 96, 0, 20])),
        None,
        "no room for web"
    );
    let reported: Vec<_> = events
        .take()
        .into_iter()
        .map(|(about, kind, reason, message)| (about.name, kind, reason, message))
        .collect();
    assert_eq!(
        reported,
        [(
            "web".to_owned(),
            EventType::Warning,
            "ProgrammingFailed".to_owned(),
            "node h1 cannot program 10.96.0.20:80/TCP: the datapath is full: it holds 1 \
             frontends at most (--max-service-frontends); those ports keep what they had \
             (nothing if new)"
                .to_owned()
        )]
    );

    f.slices.apply(Event::Apply(slice(
        "web-1",
        "web",
        &["10.244.1.5", "10.244.2.5"],
    )));
    f.step(&[], &[Notice::Changed(key("web-1"))]);
    assert!(
        events.take().is_empty(),
        "the same failure is reported once"
    );

    f.services
        .apply(Event::Delete(service("api", "10.96.0.21")));
    f.step(&[Notice::Changed(key("api"))], &[]);
    assert_eq!(
        f.backends(frontend([10, 96, 0, 20])),
        Some(vec![at("10.244.1.5"), at("10.244.2.5")]),
        "retried as soon as api's removal made room"
    );
    let reported: Vec<_> = events
        .take()
        .into_iter()
        .map(|(about, kind, reason, _)| (about.name, kind, reason))
        .collect();
    assert_eq!(
        reported,
        [("web".to_owned(), EventType::Normal, "Programmed".to_owned())]
    );
}
