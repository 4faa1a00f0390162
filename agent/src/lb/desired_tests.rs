use serde_json::{Value, json};

use super::*;

fn service(spec: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": { "name": "web", "namespace": "default" },
        "spec": spec,
    }))
    .unwrap()
}

fn slice(ports: Value, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": { "name": "web-abc", "namespace": "default",
                      "labels": { "kubernetes.io/service-name": "web" } },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn endpoint(ip: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({
        "addresses": [ip],
        "nodeName": node,
        "conditions": { "ready": ready, "serving": serving, "terminating": terminating },
    })
}

fn ready(ip: &str, node: &str) -> Value {
    endpoint(ip, node, true, true, false)
}

fn tcp(ip: [u8; 4], port: u16) -> Frontend {
    Frontend::new(Ipv4Addr::from(ip), port, Protocol::Tcp)
}

fn set(addresses: &[&str]) -> BTreeSet<BackendAddr> {
    addresses
        .iter()
        .map(|a| BackendAddr(a.parse().unwrap()))
        .collect()
}

#[test]
fn each_port_gets_the_ready_endpoints_at_its_named_target() {
    let service = service(json!({
        "clusterIP": "10.96.0.20",
        "ports": [
            { "name": "http", "port": 80, "targetPort": "web" },
            { "name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353 },
        ],
    }));
    // Two pods that name their port "web" differently: two slices.
    let a = slice(
        json!([{ "name": "http", "port": 8080 }, { "name": "dns", "port": 5353, "protocol": "UDP" }]),
        json!([
            ready("10.244.1.5", "h1"),
            endpoint("10.244.1.6", "h1", false, false, false)
        ]),
    );
    let b = slice(
        json!([{ "name": "http", "port": 9090 }, { "name": "dns", "port": 5353, "protocol": "UDP" }]),
        json!([ready("10.244.2.5", "h2")]),
    );

    let wanted = frontends(&service, &[&a, &b], "h1");

    assert_eq!(
        wanted[&tcp([10, 96, 0, 20], 80)].backends,
        set(&["10.244.1.5:8080", "10.244.2.5:9090"])
    );
    let dns = Frontend::new(Ipv4Addr::new(10, 96, 0, 20), 53, Protocol::Udp);
    assert_eq!(
        wanted[&dns].backends,
        set(&["10.244.1.5:5353", "10.244.2.5:5353"])
    );
    assert_eq!(wanted.len(), 2);
}

#[test]
fn terminating_endpoints_serve_only_when_nothing_is_ready() {
    let service = service(json!({ "clusterIP": "10.96.0.20", "ports": [{ "port": 80 }] }));
    let draining = slice(
        json!([{ "port": 8080 }]),
        json!([endpoint("10.244.1.5", "h1", false, true, true)]),
    );
    let with_ready = slice(
        json!([{ "port": 8080 }]),
        json!([
            endpoint("10.244.1.5", "h1", false, true, true),
            ready("10.244.1.7", "h1")
        ]),
    );
    let gone = slice(
        json!([{ "port": 8080 }]),
        json!([endpoint("10.244.1.5", "h1", false, false, true)]),
    );
    let frontend = tcp([10, 96, 0, 20], 80);

    assert_eq!(
        frontends(&service, &[&draining], "h1")[&frontend].backends,
        set(&["10.244.1.5:8080"])
    );
    assert_eq!(
        frontends(&service, &[&with_ready], "h1")[&frontend].backends,
        set(&["10.244.1.7:8080"])
    );
    assert!(
        frontends(&service, &[&gone], "h1")[&frontend]
            .backends
            .is_empty(),
        "a Service with no endpoint keeps its frontend, to refuse connects"
    );
}

#[test]
fn local_traffic_policy_keeps_this_nodes_endpoints() {
    let service = service(json!({
        "clusterIP": "10.96.0.20", "internalTrafficPolicy": "Local", "ports": [{ "port": 80 }],
    }));
    let slice = slice(
        json!([{ "port": 8080 }]),
        json!([ready("10.244.1.5", "h1"), ready("10.244.2.5", "h2")]),
    );
    assert_eq!(
        frontends(&service, &[&slice], "h2")[&tcp([10, 96, 0, 20], 80)].backends,
        set(&["10.244.2.5:8080"])
    );
}

#[test]
fn headless_and_external_name_services_program_nothing() {
    let headless = service(json!({ "clusterIP": "None", "ports": [{ "port": 80 }] }));
    let external = service(json!({ "type": "ExternalName", "externalName": "example.invalid" }));
    assert!(frontends(&headless, &[], "h1").is_empty());
    assert!(frontends(&external, &[], "h1").is_empty());
}

#[test]
fn affinity_carries_its_timeout() {
    let sticky = service(json!({
        "clusterIP": "10.96.0.20", "ports": [{ "port": 80 }], "sessionAffinity": "ClientIP",
    }));
    let short = service(json!({
        "clusterIP": "10.96.0.20", "ports": [{ "port": 80 }], "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 60 } },
    }));
    let frontend = tcp([10, 96, 0, 20], 80);
    assert_eq!(
        frontends(&sticky, &[], "h1")[&frontend].affinity_timeout_secs,
        10_800
    );
    assert_eq!(
        frontends(&short, &[], "h1")[&frontend].affinity_timeout_secs,
        60
    );
}

#[test]
fn input_the_datapath_cannot_honour_is_skipped() {
    let service = service(json!({
        "clusterIP": "10.96.0.20",
        "ports": [{ "name": "a", "port": 80 }, { "name": "s", "port": 81, "protocol": "SCTP" }],
    }));
    let bad = slice(
        json!([{ "name": "a", "port": 0 }]),
        json!([ready("10.244.1.5", "h1")]),
    );
    let odd = slice(
        json!([{ "name": "a", "port": 8080 }]),
        json!([
            ready("not-an-ip", "h1"),
            ready("10.244.1.9", "h1"),
            ready("10.244.1.9", "h1")
        ]),
    );
    let wanted = frontends(&service, &[&bad, &odd], "h1");
    assert_eq!(wanted.len(), 1, "SCTP is not programmed");
    assert_eq!(
        wanted[&tcp([10, 96, 0, 20], 80)].backends,
        set(&["10.244.1.9:8080"]),
        "port 0, a bad address and a duplicate are dropped"
    );
}
