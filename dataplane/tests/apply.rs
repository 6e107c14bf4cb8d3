//! New tables applied to a running gateway (what the control thread does
//! for each snapshot the control plane pushes): weights and routes change
//! while traffic flows and not one packet is lost, duplicated or
//! reordered; the tunnels follow the new weights at once. A tunnel whose
//! key changes is rebuilt; tables with other ports are refused and change
//! nothing.

use braid_dataplane::config::{Config, Tables};
use braid_dataplane::control::SaRegistry;
use braid_dataplane::gateway::{worker_setup, PortPlan};
use braid_dataplane::lab::traffic::{ip_packet, Family, Flow, L4};
use braid_dataplane::lab::{self, Checker, Lab};
use braid_dataplane::worker::Applied;
use braid_dpdk::{Mbuf, BURST};

const SIZES: [usize; 5] = [64, 200, 512, 1000, 1400];

fn size_of(id: u32, seq: u32) -> usize {
    SIZES[(id as usize + seq as usize) % SIZES.len()]
}

fn flows(n: u32) -> Vec<Flow> {
    (0..n)
        .map(|id| Flow::a_to_b(id, if id % 2 == 0 { Family::V4 } else { Family::V6 }, if id % 3 == 0 { L4::Tcp } else { L4::Udp }))
        .collect()
}

/// A's tables with other weights, extra IPv4 routes to the same peer, and
/// optionally another key on one tunnel.
fn tables_a(lab: &Lab, mode: &str, weights: &[u32], extra_routes: &[&str], rekey: Option<usize>) -> Tables {
    let (lan, wan) = (&lab.tables_a.ports[0].device, &lab.tables_a.ports[1].device);
    let mut doc: serde_json::Value = serde_json::from_str(&lab::config_json(true, (lan, wan), mode, weights, 32, 1500)).unwrap();
    for r in extra_routes {
        doc["routes"].as_array_mut().unwrap().push(serde_json::json!({"prefix": r, "peer": "peer"}));
    }
    if let Some(t) = rekey {
        doc["bundles"][0]["tunnels"][t]["key_out"] = serde_json::json!("ee".repeat(32));
    }
    Tables::from_config(&Config::from_json_str(&doc.to_string()).unwrap()).unwrap()
}

fn apply(lab: &mut Lab, tables: &Tables) -> Result<Applied, String> {
    let mut registry = SaRegistry::default();
    registry.adopt(&lab.tables_a, &lab.sas_a);
    let sas = registry.for_tables(tables)?;
    let plan = PortPlan::new(tables)?;
    let setup = worker_setup(tables, &plan, &sas, 0, true, |_| false)?;
    let now = lab.now;
    lab.a.apply(setup, now)
}

/// Sends `per_flow` packets per flow; `change(lab, round)` runs before each
/// round. Returns the checker.
fn run(lab: &mut Lab, flows: &[Flow], per_flow: u32, mut change: impl FnMut(&mut Lab, u64)) -> Checker {
    let total = flows.len() as u64 * per_flow as u64;
    let (mut sent, mut f, mut idle, mut round) = (0u64, 0usize, 0, 0u64);
    let mut next = vec![0u32; flows.len()];
    let mut checker = Checker::default();
    while checker.received < total && idle < 20_000 {
        change(lab, round);
        round += 1;
        let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
        while burst.len() < BURST && sent < total {
            if next[f] < per_flow {
                burst.push(lab.frame_to_a(&ip_packet(&flows[f], next[f], size_of(f as u32, next[f]))));
                next[f] += 1;
                sent += 1;
            }
            f = (f + 1) % flows.len();
        }
        lab.gen.tx.tx_all(&mut burst, 1000);
        assert!(burst.is_empty());
        lab.step();
        let before = checker.received;
        for frame in std::mem::take(&mut lab.delivered) {
            checker.check(&frame, flows, size_of);
        }
        idle = if checker.received == before && sent == total { idle + 1 } else { 0 };
    }
    checker
}

fn tunnel_tx(lab: &Lab) -> Vec<u64> {
    lab.a.counters().tunnels[0].iter().map(|t| t.tx.packets).collect()
}

fn weights_change_mid_stream(mode: &str) {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut lab = Lab::new(&format!("ap{}", &mode[..2]), mode, &[1, 1, 1, 1], 32, 1500);
    let flows = flows(16);
    let per_flow = 3000;
    let mut at_change = Vec::new();
    let mut applied = Vec::new();
    let checker = run(&mut lab, &flows, per_flow, |lab, round| {
        let r = match round {
            300 => Some(tables_a(lab, mode, &[4, 1, 1, 1], &["10.9.0.0/16"], None)),
            600 => Some(tables_a(lab, mode, &[1, 1, 1, 5], &[], None)),
            _ => None,
        };
        if let Some(t) = r {
            at_change.push(tunnel_tx(lab));
            applied.push(apply(lab, &t).expect("applied"));
        }
    });
    let end = tunnel_tx(&lab);
    let (a, b) = lab.counters();
    assert!(checker.bad.is_empty(), "{:?}", &checker.bad[..checker.bad.len().min(5)]);
    assert_eq!(checker.received, flows.len() as u64 * per_flow as u64, "A drops {:?}, B drops {:?} {:?}", a.drops.named(), b.drops.named(), b.engine.named());
    assert_eq!(a.drops.named(), vec![], "A dropped");
    assert_eq!(b.drops.named(), vec![], "B dropped");
    assert_eq!(b.engine.named(), vec![], "B's engine dropped");
    assert_eq!(applied, vec![Applied { kept: 1, rebuilt: 0, dropped: 0 }; 2], "the bundle kept its state");
    // Between the changes the tunnels carried the new weights' shares.
    let share = |from: &[u64], to: &[u64], t: usize| {
        let d: Vec<u64> = from.iter().zip(to).map(|(a, b)| b - a).collect();
        d[t] as f64 / d.iter().sum::<u64>() as f64
    };
    let s1 = share(&at_change[0], &at_change[1], 0);
    let s2 = share(&at_change[1], &end, 3);
    eprintln!("{mode}: tunnel 0 share {s1:.3} under 4:1:1:1, tunnel 3 share {s2:.3} under 1:1:1:5");
    assert!((s1 - 4.0 / 7.0).abs() < 0.05, "share {s1}");
    assert!((s2 - 5.0 / 8.0).abs() < 0.05, "share {s2}");
    lab.close();
}

#[test]
fn bundle_mode_weights_and_routes_change_without_loss() {
    weights_change_mid_stream("bundle");
}

#[test]
fn plain_mode_weights_and_routes_change_without_loss() {
    weights_change_mid_stream("plain");
}

#[test]
fn a_new_key_rebuilds_the_bundle_and_other_ports_are_refused() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut lab = Lab::new("aprk", "bundle", &[1, 1], 32, 1500);
    // Other ports: refused, the running tables stay.
    let mut bad = tables_a(&lab, "bundle", &[1, 1], &[], None);
    bad.ports.push(bad.ports[1].clone());
    bad.ports[2].name = "wan2".into();
    bad.ports[2].device = "nope".into();
    assert!(apply(&mut lab, &bad).is_err());
    // A new outbound key on tunnel 1: the bundle is rebuilt, traffic goes on
    // (B does not know the new key: tunnel 1's packets fail there, counted).
    let t = tables_a(&lab, "bundle", &[1, 1], &[], Some(1));
    assert_eq!(apply(&mut lab, &t).unwrap(), Applied { kept: 0, rebuilt: 1, dropped: 1 });
    let flows = flows(2);
    let checker = run(&mut lab, &flows, 50, |_, _| {});
    let (_, b) = lab.counters();
    assert!(b.engine.named().iter().any(|(n, c)| *n == "auth_failed" && *c > 0), "{:?}", b.engine.named());
    assert!(checker.bad.is_empty() || checker.received > 0);
    lab.close();
}
