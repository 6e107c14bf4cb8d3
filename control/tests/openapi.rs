//! `control/openapi.json` is kept true: its paths and methods are exactly
//! the router's, every documented operation run with its example answers
//! a documented 2xx, methods it does not list answer 405, each schema's
//! fields are exactly those the server's types read and write, and the
//! examples validate.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use braid_config::{BundleConfig, Config, DnatConfig, NatConfig, NatTimeoutsConfig, PeerConfig, PortConfig, RouteConfig, SnatConfig, Tables, TunnelConfig, TunnelOptionsConfig};
use braid_control::api::{Weight, ROUTES};
use braid_shm::stats::{StatsLayout, StatsSegment};
use common::{Server, TempDir};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];

fn openapi() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

fn documented(api: &Value) -> BTreeMap<String, BTreeSet<String>> {
    api["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, ops)| {
            let methods = ops.as_object().unwrap().keys().map(|m| m.to_uppercase()).filter(|m| METHODS.contains(&m.as_str())).collect();
            (p.clone(), methods)
        })
        .collect()
}

#[test]
fn paths_and_methods_are_the_routers() {
    let served: BTreeMap<String, BTreeSet<String>> =
        ROUTES.iter().map(|(p, ms)| (p.to_string(), ms.iter().map(|m| m.to_string()).collect())).collect();
    assert_eq!(documented(&openapi()), served);
}

/// The path with its parameters replaced by the documented examples.
fn concrete(api: &Value, path: &str) -> String {
    let mut out = path.to_string();
    for p in api["paths"][path]["parameters"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap();
        let ex = p["example"].as_str().unwrap_or_else(|| panic!("{path}: parameter {name} has no example"));
        out = out.replace(&format!("{{{name}}}"), ex);
    }
    assert!(!out.contains('{'), "{path}: undocumented parameter");
    out
}

#[test]
fn every_operation_runs_with_its_example_and_nothing_else_is_served() {
    let api = openapi();
    let dir = TempDir::new("openapi");
    let stats = dir.path().join("stats");
    let layout = StatsLayout { workers: 1, counters: vec!["lan/rx_packets".into(), "drop/no_route".into()], gauges: vec!["path/to-site-b/0/alive".into()] };
    let _seg = StatsSegment::create(&stats, &layout, 1).unwrap();
    let shm = dir.path().join("shm");
    let mut s = Server::start(dir.path(), &["--stats", stats.to_str().unwrap(), "--shm", shm.to_str().unwrap()]);

    // PUT /v1/config first, then creations, reads, replacements, and
    // removals last in reverse order (what was added last goes first).
    let paths: Vec<String> = ROUTES.iter().map(|(p, _)| p.to_string()).collect();
    let mut ops: Vec<(usize, usize, String, String)> = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        for m in &documented(&api)[p] {
            let rank = match (p.as_str(), m.as_str()) {
                ("/v1/config", "PUT") => 0,
                (_, "POST") => 1,
                (_, "GET") => 2,
                (_, "PUT") => 3,
                _ => 4,
            };
            let order = if rank == 4 { paths.len() - i } else { i };
            ops.push((rank, order, p.clone(), m.clone()));
        }
    }
    ops.sort();
    let mut changes = 0;
    for (_, _, path, method) in &ops {
        let op = &api["paths"][path][method.to_lowercase()];
        let body = op["requestBody"]["content"]["application/json"]["example"].clone();
        let bytes = (!body.is_null()).then(|| serde_json::to_vec(&body).unwrap());
        let url = concrete(&api, path);
        let r = s.client().request(method, &url, bytes.as_deref()).unwrap();
        assert!(r.is_success(), "{method} {url}: {} {}", r.status, r.text());
        assert!(op["responses"][r.status.to_string()].is_object(), "{method} {path}: {} is not documented", r.status);
        if method != "GET" && r.json().unwrap()["changed"] == true {
            changes += 1;
        }
        // Live answers have the documented fields.
        let schema = &op["responses"][r.status.to_string()]["content"]["application/json"]["schema"];
        if let Some(name) = schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
            let props: BTreeSet<String> = api["components"]["schemas"][name]["properties"].as_object().unwrap().keys().cloned().collect();
            let got: BTreeSet<String> = r.json().unwrap().as_object().unwrap().keys().cloned().collect();
            assert!(got.is_subset(&props), "{method} {path}: {got:?} vs {name} {props:?}");
            let required: BTreeSet<String> = api["components"]["schemas"][name]["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
            assert!(required.is_subset(&got), "{method} {path}: {got:?} lacks some of {required:?}");
        }
        if name_of(schema) == Some("Status") {
            let dp: BTreeSet<String> = r.json().unwrap()["dataplane"].as_object().unwrap().keys().cloned().collect();
            let props: BTreeSet<String> = api["components"]["schemas"]["DataplaneStatus"]["properties"].as_object().unwrap().keys().cloned().collect();
            assert_eq!(dp, props);
        }
    }
    assert!(s.running());
    // One generation per change; the additions are all removed again.
    assert!(changes >= 10, "{changes}");
    assert_eq!(s.generation(), changes);
    let doc = s.req("GET", "/v1/config", None).1;
    assert_eq!(doc, common::shown(&api["paths"]["/v1/config"]["put"]["requestBody"]["content"]["application/json"]["example"]));

    // Nothing else is served.
    for (path, methods) in documented(&api) {
        let url = concrete(&api, &path);
        for m in METHODS.iter().filter(|m| !methods.contains(**m)) {
            assert_eq!(s.client().request(m, &url, None).unwrap().status, 405, "{m} {path}");
        }
    }
    assert_eq!(s.req("GET", "/v1/undocumented", None).0, 404);
}

fn name_of(schema: &Value) -> Option<&str> {
    schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/"))
}

/// The schema's example is read by `T` (which refuses unknown fields) and
/// written back with exactly the schema's properties; leaving out a
/// required property is refused, an optional one is not.
fn fields_match<T: Serialize + DeserializeOwned>(api: &Value, name: &str) {
    let schema = &api["components"]["schemas"][name];
    let example = schema["example"].clone();
    let props: BTreeSet<String> = schema["properties"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(example.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>(), props, "{name}: the example shows every property");
    let t: T = serde_json::from_value(example.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(back.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>(), props, "{name}");
    let required: BTreeSet<String> = schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    for p in &props {
        let mut less = example.clone();
        less.as_object_mut().unwrap().remove(p);
        let parsed = serde_json::from_value::<T>(less);
        assert_eq!(parsed.is_err(), required.contains(p), "{name}.{p}: required is {}", required.contains(p));
    }
    let mut more = example;
    more.as_object_mut().unwrap().insert("undocumented".into(), Value::Null);
    assert!(serde_json::from_value::<T>(more).is_err(), "{name} refuses unknown fields");
}

#[test]
fn schemas_are_the_servers_types_and_examples_validate() {
    let api = openapi();
    fields_match::<Config>(&api, "Config");
    fields_match::<PortConfig>(&api, "Port");
    fields_match::<PeerConfig>(&api, "Peer");
    fields_match::<BundleConfig>(&api, "Bundle");
    fields_match::<TunnelConfig>(&api, "Tunnel");
    fields_match::<RouteConfig>(&api, "Route");
    fields_match::<TunnelOptionsConfig>(&api, "TunnelOptions");
    fields_match::<NatConfig>(&api, "Nat");
    fields_match::<NatTimeoutsConfig>(&api, "NatTimeouts");
    fields_match::<SnatConfig>(&api, "Snat");
    fields_match::<DnatConfig>(&api, "Dnat");
    fields_match::<Weight>(&api, "Weight");
    let config: Config = serde_json::from_value(api["components"]["schemas"]["Config"]["example"].clone()).unwrap();
    Tables::from_config(&config).expect("the Config example validates");
    let put = api["paths"]["/v1/config"]["put"]["requestBody"]["content"]["application/json"]["example"].clone();
    Tables::from_config(&serde_json::from_value(put).unwrap()).expect("the PUT example validates");
    // Every schema a $ref names exists.
    let text = api.to_string();
    for r in text.split("\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(api["components"]["schemas"][name].is_object(), "{name}");
    }
}
