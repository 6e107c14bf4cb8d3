//! The scale: 10,000 tunnels and 100,000 NAT rules, PUT through the
//! API and pushed to a (test) dataplane over a real segment. Reports times
//! as JSON; ignored by default (`cargo test -p braid-control --release
//! --test bench -- --ignored --nocapture`).

mod common;

use std::time::{Duration, Instant};

use braid_config::{Config, Tables};
use braid_shm::proto::{self, MAX_CONFIG_MSGS};
use braid_shm::{Ring, Segment, TxnReader};
use common::{Server, TempDir};
use serde_json::{json, Value};

/// 100 peers, each with a bundle of 100 tunnels, a route, and 500 SNAT and
/// 500 DNAT rules.
fn big_document() -> Value {
    let key = |k: u32, salt: u32| format!("{:08x}{:08x}{:08x}{:08x}", k, salt, !k, k ^ 0x5a5a_5a5a);
    let mut bundles = Vec::new();
    let mut peers = Vec::new();
    let mut routes = Vec::new();
    let mut snat = Vec::new();
    let mut dnat = Vec::new();
    for b in 0..100u32 {
        let tunnels: Vec<Value> = (0..100u32)
            .map(|t| {
                let k = b * 100 + t;
                json!({
                    "wan_port": "wan0",
                    "local": format!("192.0.2.1:{}", 10_000 + k),
                    "remote": format!("198.51.{}.{}:4500", 100 + b / 100, 1 + b % 100),
                    "spi_out": 0x10000 + k, "spi_in": 0x20000 + k,
                    "key_out": key(k, 1), "key_in": key(k, 2),
                    "salt_out": format!("{k:08x}"), "salt_in": format!("{:08x}", !k),
                    "weight": 1 + t % 4
                })
            })
            .collect();
        bundles.push(json!({ "name": format!("b{b}"), "tunnels": tunnels }));
        peers.push(json!({ "name": format!("p{b}"), "bundle": format!("b{b}") }));
        routes.push(json!({ "prefix": format!("10.{}.0.0/16", 100 + b), "peer": format!("p{b}") }));
        for r in 0..500u32 {
            let i = b * 500 + r;
            let public = std::net::Ipv4Addr::from(0x6440_0000 + i).to_string();
            let inner = std::net::Ipv4Addr::from(0x0b00_0000 + i);
            snat.push(json!({ "name": format!("s{i}"), "match": format!("{inner}/32"), "peer": format!("p{b}"), "pool": [public], "ports": "10000-65535" }));
            dnat.push(json!({ "name": format!("d{i}"), "external": public, "protocol": "tcp", "port": 22, "internal": format!("{inner}") }));
        }
    }
    json!({
        "ports": [
            { "name": "lan0", "device": "net_ring0", "role": "lan", "mac": "02:00:00:00:00:01", "ipv4": "10.1.0.1/16", "next_hop_mac": "02:00:00:00:01:01" },
            { "name": "wan0", "device": "net_ring1", "role": "wan", "mac": "02:00:00:00:00:02", "ipv4": "192.0.2.1/24", "next_hop_mac": "02:00:00:00:02:01" }
        ],
        "peers": peers, "bundles": bundles, "routes": routes,
        "nat": { "snat": snat, "dnat": dnat }
    })
}

#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn ten_thousand_tunnels_and_100k_nat_rules() {
    let doc = big_document();
    let body = serde_json::to_vec(&doc).unwrap();
    let t0 = Instant::now();
    let config: Config = serde_json::from_slice(&body).unwrap();
    let tables = Tables::from_config(&config).expect("the document validates");
    let validate = t0.elapsed();
    assert_eq!((tables.bundles.len(), tables.nat.snat.len() + tables.nat.dnat.len()), (100, 100_000));

    let dir = TempDir::new("bench");
    let shm = dir.path().join("shm");
    let seg = Segment::create(&shm, 4096).unwrap();
    let mut reader = TxnReader::new(seg.consumer(Ring::Commands).unwrap(), MAX_CONFIG_MSGS);
    let s = Server::start(dir.path(), &["--shm", shm.to_str().unwrap()]);

    let mut times = Vec::new();
    for (what, body) in [
        ("put_whole", body.clone()),
        ("weight_change", serde_json::to_vec(&json!({ "weight": 7 })).unwrap()),
    ] {
        let (method, path) = if what == "put_whole" { ("PUT", "/v1/config") } else { ("PUT", "/v1/bundles/b42/tunnels/7/weight") };
        let t0 = Instant::now();
        let r = s.client().request(method, path, Some(&body)).unwrap();
        let answered = t0.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        let generation = r.json().unwrap()["generation"].as_u64().unwrap();
        let txn = loop {
            if let Some(t) = reader.poll() {
                break t;
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "no snapshot");
            std::thread::sleep(Duration::from_micros(200));
        };
        let (g, doc) = proto::config_from_txn(&txn).unwrap();
        let received = t0.elapsed();
        assert_eq!(g, generation);
        let got: Config = serde_json::from_slice(&doc).unwrap();
        Tables::from_config(&got).unwrap();
        let parsed = t0.elapsed();
        times.push(json!({
            "change": what, "generation": g, "document_bytes": doc.len(), "ring_messages": txn.msgs.len(),
            "api_answered_ms": answered.as_secs_f64() * 1e3,
            "snapshot_received_ms": received.as_secs_f64() * 1e3,
            "validated_on_the_dataplane_side_ms": parsed.as_secs_f64() * 1e3,
        }));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "tunnels": 10_000, "nat_rules": 100_000, "request_bytes": body.len(),
            "validate_in_process_ms": validate.as_secs_f64() * 1e3, "changes": times,
        }))
        .unwrap()
    );
}
