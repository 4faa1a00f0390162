//! Random and mutated requests against the API router (no socket): the
//! server never panics, every error is a well-formed metav1.Status whose
//! code is the HTTP status, every success is JSON, and the store stays
//! readable. A fixed seed makes any failure reproducible; CAPSTAN_FUZZ_SEED
//! and CAPSTAN_FUZZ_ROUNDS explore further.

#![allow(clippy::unwrap_used)] // a failed step is a failed test

use std::sync::Arc;

use axum::{Router, body::Body, http::Request};
use capstan_control::{
    api::{self, ApiState, Credentials},
    bootstrap,
    store::{
        Store,
        embedded::{EmbeddedConfig, EmbeddedStore},
    },
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::{Value, json};
use tower::ServiceExt;

const RESOURCES: &[&str] = &[
    "/api/v1/namespaces",
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/services",
    "/api/v1/namespaces/default/configmaps",
    "/api/v1/namespaces/default/secrets",
    "/api/v1/namespaces/default/events",
    "/api/v1/nodes",
    "/apis/apps/v1/namespaces/default/deployments",
    "/apis/apps/v1/namespaces/default/statefulsets",
    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
    "/apis/coordination.k8s.io/v1/namespaces/default/leases",
];

fn seeds() -> Vec<Value> {
    let container = json!({ "name": "c", "image": "capstan.invalid/testapp:v1", "ports": [{ "containerPort": 80 }] });
    vec![
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "fz" } }),
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p", "labels": { "a": "b" } }, "spec": { "containers": [container] } }),
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "s" }, "spec": { "ports": [{ "port": 80 }], "type": "NodePort" } }),
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "m" }, "data": { "k": "v" } }),
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s" }, "stringData": { "k": "v" } }),
        json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "d" }, "spec": {
            "selector": { "matchLabels": { "a": "b" } },
            "template": { "metadata": { "labels": { "a": "b" } }, "spec": { "containers": [container] } } } }),
        json!([{ "op": "replace", "path": "/metadata/labels", "value": { "x": "y" } }]),
        json!({ "metadata": { "labels": { "x": null } }, "spec": { "containers": [{ "name": "c", "$patch": "delete" }] } }),
    ]
}

/// A random JSON value, at most `depth` deep.
fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>()),
        4 => json!(random_string(rng)),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..4))
                .map(|_| (random_key(rng), random_value(rng, depth - 1)))
                .collect(),
        ),
    }
}

fn random_string(rng: &mut StdRng) -> String {
    let pool = [
        "",
        "a",
        "Web_1",
        "-x-",
        "ünïcödé",
        "a/b",
        "$patch",
        "replace",
        "delete",
        "../..",
        "%zz",
        "\u{0}",
        "9999999999999999999999",
    ];
    let mut text = pool.choose(rng).unwrap().to_string();
    if rng.random_ratio(1, 20) {
        text = "x".repeat(rng.random_range(64..5000));
    }
    text
}

fn random_key(rng: &mut StdRng) -> String {
    let keys = [
        "metadata",
        "spec",
        "status",
        "name",
        "namespace",
        "labels",
        "containers",
        "replicas",
        "selector",
        "ports",
        "data",
        "kind",
        "apiVersion",
        "resourceVersion",
        "$patch",
        "$retainKeys",
        "$setElementOrder/containers",
    ];
    if rng.random_ratio(1, 4) {
        random_string(rng)
    } else {
        keys.choose(rng).unwrap().to_string()
    }
}

/// `value` with one random change somewhere inside.
fn mutate(rng: &mut StdRng, value: &mut Value) {
    match value {
        Value::Object(map) if !map.is_empty() && rng.random_ratio(3, 4) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = keys.choose(rng).unwrap().clone();
            match rng.random_range(0..4) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, random_value(rng, 2));
                }
                2 => {
                    map.insert(random_key(rng), random_value(rng, 2));
                }
                _ => mutate(rng, map.get_mut(&key).unwrap()),
            }
        }
        Value::Array(items) if !items.is_empty() && rng.random_ratio(3, 4) => {
            let index = rng.random_range(0..items.len());
            mutate(rng, &mut items[index]);
        }
        other => *other = random_value(rng, 3),
    }
}

fn random_path(rng: &mut StdRng) -> String {
    let mut path = RESOURCES.choose(rng).unwrap().to_string();
    match rng.random_range(0..6) {
        0 => {}
        1 => path.push_str(&format!(
            "/{}",
            ["p", "s", "m", "d", "fz", "missing"].choose(rng).unwrap()
        )),
        2 => path.push_str(&format!(
            "/d/{}",
            ["status", "scale", "binding", "log", "bogus"]
                .choose(rng)
                .unwrap()
        )),
        3 => path.push_str(&format!(
            "/{}",
            random_string(rng).replace(['\u{0}', ' '], "_")
        )),
        4 => {
            path = [
                "/api",
                "/apis",
                "/api/v1",
                "/apis/apps/v1",
                "/openapi/v3",
                "/openapi/v2",
                "/version",
                "/apis/nope/v9/x",
                "/",
            ]
            .choose(rng)
            .unwrap()
            .to_string()
        }
        _ => path.push_str("/a/b/c/d/e"),
    }
    let queries = [
        "",
        "?watch=1&timeoutSeconds=0",
        "?limit=1",
        "?limit=-5",
        "?continue=garbage",
        "?labelSelector=a%3Db",
        "?labelSelector=a+in+(",
        "?fieldSelector=spec.nodeName%3Dn1",
        "?fieldSelector=bogus",
        "?resourceVersion=1&resourceVersionMatch=Exact",
        "?resourceVersion=99999999&resourceVersionMatch=Exact",
        "?fieldValidation=Strict",
        "?fieldValidation=Nope",
        "?dryRun=All",
        "?gracePeriodSeconds=x",
        "?propagationPolicy=Foreground",
    ];
    path.push_str(queries.choose(rng).unwrap());
    path
}

async fn app() -> (Router, String, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&dir.path().join("store"), EmbeddedConfig::default()).unwrap(),
    );
    let (credentials, token) = Credentials::load_or_create(dir.path()).unwrap();
    let app = api::app(ApiState::new(Arc::clone(&store), credentials));
    bootstrap::ensure_defaults(&app, &token, 6443)
        .await
        .unwrap();
    (app, token, store, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn random_requests_get_statuses_or_objects_never_panics() {
    let seed: u64 = std::env::var("CAPSTAN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261128);
    let rounds: usize = std::env::var("CAPSTAN_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut rng = StdRng::seed_from_u64(seed);
    let (app, token, store, _dir) = app().await;
    let seeds = seeds();
    let content_types = [
        "application/json",
        "application/yaml",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/vnd.kubernetes.protobuf",
        "text/plain",
    ];
    let mut codes = std::collections::BTreeMap::new();
    for round in 0..rounds {
        let method = ["GET", "POST", "PUT", "PATCH", "DELETE"]
            .choose(&mut rng)
            .unwrap()
            .to_string();
        let path = random_path(&mut rng);
        let body: Vec<u8> = match rng.random_range(0..8) {
            0 => Vec::new(),
            1 => (0..rng.random_range(1..200))
                .map(|_| rng.random::<u8>())
                .collect(),
            2 => b"kind: Pod\nmetadata: {name: [unclosed".to_vec(),
            3 => vec![b'{'; 5000],
            _ => {
                let mut value = seeds.choose(&mut rng).unwrap().clone();
                for _ in 0..rng.random_range(0..4) {
                    mutate(&mut rng, &mut value);
                }
                serde_json::to_vec(&value).unwrap()
            }
        };
        let request = Request::builder()
            .method(method.as_str())
            .uri(&path)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", *content_types.choose(&mut rng).unwrap())
            .header(
                "Accept",
                if rng.random_ratio(1, 3) {
                    "application/json;as=Table;v=v1;g=meta.k8s.io"
                } else {
                    "application/json"
                },
            )
            .body(Body::from(body.clone()))
            .unwrap();
        let context = format!(
            "round {round} (seed {seed}): {method} {path} body {:?}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            app.clone().oneshot(request),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer: {context}"))
        .unwrap();
        let code = response.status().as_u16();
        *codes.entry(code).or_insert(0) += 1;
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        // A watch (of a resource, timing out at once) streams JSON lines.
        let parsed = serde_json::from_slice::<Value>(&bytes);
        if parsed.is_err() && method == "GET" && path.contains("watch=1") && code == 200 {
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let event: Value =
                    serde_json::from_slice(line).unwrap_or_else(|err| panic!("{err}: {context}"));
                assert!(
                    event["type"].is_string() && event["object"].is_object(),
                    "{context}"
                );
            }
            continue;
        }
        let value: Value = parsed.unwrap_or_else(|err| panic!("not JSON ({err}): {context}"));
        if code >= 400 {
            assert_eq!(value["kind"], "Status", "{context}: {value}");
            assert_eq!(value["status"], "Failure", "{context}");
            assert_eq!(value["code"], code, "{context}");
            assert!(
                value["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{context}"
            );
            assert!(code != 500, "an internal error: {context}: {value}");
        } else {
            assert!(value.is_object(), "{context}");
        }
    }
    // Every stored object still decodes: nothing half-written got in.
    for prefix in [
        "/registry/pods/",
        "/registry/services/",
        "/registry/deployments/",
        "/registry/configmaps/",
    ] {
        for kv in store.list(prefix, Default::default()).await.unwrap().items {
            serde_json::from_slice::<Value>(&kv.value).unwrap();
        }
    }
    assert!(
        codes.keys().any(|c| *c < 300) && codes.keys().any(|c| *c >= 400),
        "{codes:?}"
    );
}
