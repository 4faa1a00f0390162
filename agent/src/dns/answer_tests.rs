use std::sync::Arc;

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use serde_json::{Value, json};

use super::*;

const ZONE: &str = "cluster.local";

fn service(spec: Value) -> Arc<Service> {
    let name = spec["name"].as_str().unwrap().to_owned();
    let mut spec = spec;
    spec.as_object_mut().unwrap().remove("name");
    Arc::new(
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "default" },
            "spec": spec,
        }))
        .unwrap(),
    )
}

fn slice(service: &str, endpoints: Value, ports: Value) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": { "name": format!("{service}-x"), "namespace": "default",
                          "labels": { "kubernetes.io/service-name": service } },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }))
        .unwrap(),
    )
}

fn zone() -> Zone {
    let services = [
        service(json!({ "name": "web", "clusterIP": "10.96.0.20",
            "ports": [{ "name": "http", "port": 80 }, { "port": 81 }] })),
        service(json!({ "name": "db", "clusterIP": "None",
            "ports": [{ "name": "pg", "port": 5432 }] })),
        service(json!({ "name": "empty", "clusterIP": "None" })),
        service(json!({ "name": "ext", "type": "ExternalName", "externalName": "Example.COM." })),
        service(json!({ "name": "dual", "clusterIP": "10.96.0.30",
            "clusterIPs": ["10.96.0.30", "fd00::30"] })),
    ];
    let slices = [
        slice(
            "db",
            json!([
                { "addresses": ["10.244.1.5"], "hostname": "db-0", "conditions": { "ready": true } },
                { "addresses": ["10.244.2.6"], "conditions": { "ready": true } },
                { "addresses": ["10.244.3.7"], "hostname": "db-2", "conditions": { "ready": false } },
            ]),
            json!([{ "name": "pg", "port": 5432, "protocol": "TCP" }]),
        ),
        slice("empty", json!([]), json!([])),
    ];
    Zone::build(ZONE, &services, &slices, 7)
}

fn answer(zone: &Zone, name: &str, kind: RecordType) -> Outcome {
    Authority {
        domain: ZONE,
        ttl: 5,
        zone,
    }
    .answer(name, kind)
}

fn data(outcome: Outcome) -> Vec<RData> {
    match outcome {
        Outcome::Records(records) => records.into_iter().map(|r| r.data).collect(),
        other => panic!("not records: {other:?}"),
    }
}

fn a(ip: &str) -> RData {
    RData::A(ip.parse().unwrap())
}

#[test]
fn a_cluster_ip_service_answers_its_address_and_named_ports() {
    let zone = zone();
    let name = "web.default.svc.cluster.local";
    assert_eq!(data(answer(&zone, name, RecordType::A)), [a("10.96.0.20")]);
    assert_eq!(
        answer(&zone, name, RecordType::Aaaa),
        Outcome::NoData,
        "an IPv4-only Service has no AAAA, but exists"
    );
    assert_eq!(answer(&zone, name, RecordType::Txt), Outcome::NoData);
    let srv = RData::Srv {
        priority: 0,
        weight: 100,
        port: 80,
        target: name.into(),
    };
    assert_eq!(
        data(answer(
            &zone,
            "_http._tcp.web.default.svc.cluster.local",
            RecordType::Srv
        )),
        std::slice::from_ref(&srv)
    );
    assert_eq!(
        data(answer(&zone, name, RecordType::Srv)),
        [srv],
        "unnamed ports get none"
    );
    assert_eq!(
        answer(
            &zone,
            "_http._udp.web.default.svc.cluster.local",
            RecordType::Srv
        ),
        Outcome::NxDomain
    );
    assert_eq!(
        data(answer(&zone, "20.0.96.10.in-addr.arpa", RecordType::Ptr)),
        [RData::Ptr(name.into())]
    );
    let dual = data(answer(
        &zone,
        "dual.default.svc.cluster.local",
        RecordType::Aaaa,
    ));
    assert_eq!(dual, [RData::Aaaa("fd00::30".parse().unwrap())]);
}

#[test]
fn a_headless_service_answers_its_ready_endpoints() {
    let zone = zone();
    let name = "db.default.svc.cluster.local";
    assert_eq!(
        data(answer(&zone, name, RecordType::A)),
        [a("10.244.1.5"), a("10.244.2.6")],
        "ready endpoints only"
    );
    assert_eq!(
        data(answer(
            &zone,
            "db-0.db.default.svc.cluster.local",
            RecordType::A
        )),
        [a("10.244.1.5")]
    );
    assert_eq!(
        data(answer(
            &zone,
            "10-244-2-6.db.default.svc.cluster.local",
            RecordType::A
        )),
        [a("10.244.2.6")],
        "an endpoint without a hostname is named by its address"
    );
    assert_eq!(
        answer(&zone, "db-2.db.default.svc.cluster.local", RecordType::A),
        Outcome::NxDomain,
        "not ready"
    );
    assert_eq!(
        data(answer(
            &zone,
            "_pg._tcp.db.default.svc.cluster.local",
            RecordType::Srv
        )),
        [
            RData::Srv {
                priority: 0,
                weight: 50,
                port: 5432,
                target: "db-0.db.default.svc.cluster.local".into()
            },
            RData::Srv {
                priority: 0,
                weight: 50,
                port: 5432,
                target: "10-244-2-6.db.default.svc.cluster.local".into()
            },
        ]
    );
    assert_eq!(
        data(answer(&zone, "5.1.244.10.in-addr.arpa", RecordType::Ptr)),
        [RData::Ptr("db-0.db.default.svc.cluster.local".into())]
    );
    assert_eq!(
        answer(&zone, "empty.default.svc.cluster.local", RecordType::A),
        Outcome::NxDomain,
        "no ready endpoint, no name"
    );
}

#[test]
fn other_names_of_the_zone_and_outside_it() {
    let zone = zone();
    assert_eq!(
        data(answer(
            &zone,
            "ext.default.svc.cluster.local",
            RecordType::A
        )),
        [RData::Cname("example.com".into())]
    );
    assert_eq!(
        answer(&zone, "missing.default.svc.cluster.local", RecordType::A),
        Outcome::NxDomain
    );
    assert_eq!(
        answer(&zone, "default.svc.cluster.local", RecordType::A),
        Outcome::NoData,
        "a namespace exists, without records"
    );
    assert_eq!(
        answer(&zone, "nobody.svc.cluster.local", RecordType::A),
        Outcome::NxDomain
    );
    assert_eq!(
        data(answer(&zone, "dns-version.cluster.local", RecordType::Txt)),
        [RData::Txt("1.1.0".into())]
    );
    assert_eq!(
        data(answer(
            &zone,
            "10-244-1-9.default.pod.cluster.local",
            RecordType::A
        )),
        [a("10.244.1.9")]
    );
    assert!(matches!(
        data(answer(&zone, "cluster.local", RecordType::Soa))[..],
        [RData::Soa {
            serial: 7,
            minimum: 5,
            ..
        }]
    ));
    assert_eq!(
        data(answer(&zone, "cluster.local", RecordType::Ns)),
        [RData::Ns("ns.dns.cluster.local".into())]
    );
    assert_eq!(
        answer(&zone, "cluster.local", RecordType::Transfer),
        Outcome::Refused
    );
    assert_eq!(
        answer(&zone, "example.com", RecordType::A),
        Outcome::Forward
    );
    assert_eq!(
        answer(&zone, "1.0.0.127.in-addr.arpa", RecordType::Ptr),
        Outcome::Forward,
        "an address the zone does not know"
    );
    assert_eq!(
        answer(
            &zone,
            "web.default.svc.cluster.local",
            RecordType::Other(65)
        ),
        Outcome::NoData,
        "HTTPS of an existing name"
    );
}
