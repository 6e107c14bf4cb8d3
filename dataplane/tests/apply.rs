//! New tables applied to a running gateway (what the control thread does
//! for each snapshot the control plane pushes): weights and routes change
//! while traffic flows and not one packet is lost, duplicated or
//! reordered; the tunnels follow the new weights at once. A tunnel whose
//! key changes is rebuilt; tables with other ports are refused and change
//! nothing. A bundle rebuilt mid-stream (another policy, a tunnel added or
//! removed, on one side or both) continues its streams: traffic both ways
//! loses nothing but, for a removed tunnel, the frames in flight on it.

use braid_dataplane::config::{Config, Tables};
use braid_dataplane::control::SaRegistry;
use braid_dataplane::gateway::{worker_setup, PortPlan};
use braid_dataplane::lab::traffic::{ip_packet, Family, Flow, L4};
use braid_dataplane::lab::{self, Checker, Lab};
use braid_dataplane::worker::Applied;
use braid_dpdk::{Mbuf, BURST};
use braid_dataplane::lab::traffic::tag;
use std::collections::{BTreeSet, HashMap};

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
    let setup = worker_setup(tables, &plan, &sas, 0, true, |_| Default::default())?;
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

/// Flows from the LAN behind B to the LAN behind A (ids from 100).
fn b_flows(n: u32) -> Vec<Flow> {
    flows(n)
        .into_iter()
        .map(|f| Flow { id: 100 + f.id, src4: f.dst4, dst4: f.src4, src6: f.dst6, dst6: f.src6, sport: f.dport, dport: f.sport, ..f })
        .collect()
}

/// Per flow: each packet once, in order, with its bytes; what is missing
/// is what never arrived (`missing`).
#[derive(Default)]
struct Order {
    next: HashMap<u32, u32>,
    got: BTreeSet<(u32, u32)>,
    bad: Vec<String>,
}

impl Order {
    fn take(&mut self, frames: Vec<Vec<u8>>, flows: &[Flow]) {
        for f in frames {
            let ip = &f[14..];
            let Some((id, seq)) = tag(ip) else {
                self.bad.push("not a test packet".into());
                continue;
            };
            let exp = self.next.entry(id).or_insert(0);
            if seq < *exp {
                self.bad.push(format!("flow {id}: seq {seq} after {}", *exp - 1));
            }
            *exp = seq + 1;
            if !self.got.insert((id, seq)) {
                self.bad.push(format!("flow {id}: seq {seq} twice"));
            }
            let flow = flows.iter().find(|f| f.id == id).expect("a test flow");
            if ip != ip_packet(flow, seq, size_of(id, seq)).as_slice() {
                self.bad.push(format!("flow {id} seq {seq}: bytes differ"));
            }
        }
    }

    fn missing(&self, flows: &[Flow], rounds: u32) -> Vec<(u32, u32)> {
        flows.iter().flat_map(|f| (0..rounds).map(move |s| (f.id, s))).filter(|p| !self.got.contains(p)).collect()
    }
}

/// Tables for one side of the lab in bundle mode: one tunnel per weight,
/// then `edit`.
fn side_tables(lab: &Lab, side_a: bool, weights: &[u32], edit: impl Fn(&mut serde_json::Value)) -> Tables {
    let t = if side_a { &lab.tables_a } else { &lab.tables_b };
    let (lan, wan) = (&t.ports[0].device, &t.ports[1].device);
    let mut doc: serde_json::Value = serde_json::from_str(&lab::config_json(side_a, (lan, wan), "bundle", weights, 32, 1500)).unwrap();
    edit(&mut doc);
    Tables::from_config(&Config::from_json_str(&doc.to_string()).unwrap()).unwrap()
}

/// Both gateways' outbound SAs for the life of the lab, as each
/// dataplane's registry keeps them (a tunnel that stays keeps its SA and
/// its sequence counter).
struct Registries {
    a: SaRegistry,
    b: SaRegistry,
}

impl Registries {
    fn new(lab: &Lab) -> Registries {
        let (mut a, mut b) = (SaRegistry::default(), SaRegistry::default());
        a.adopt(&lab.tables_a, &lab.sas_a);
        b.adopt(&lab.tables_b, &lab.sas_b);
        Registries { a, b }
    }

    fn apply(&mut self, lab: &mut Lab, side_a: bool, tables: &Tables) -> Applied {
        let reg = if side_a { &mut self.a } else { &mut self.b };
        let sas = reg.for_tables(tables).unwrap();
        let setup = worker_setup(tables, &PortPlan::new(tables).unwrap(), &sas, 0, true, |_| Default::default()).unwrap();
        let now = lab.now;
        let w = if side_a { &mut lab.a } else { &mut lab.b };
        w.apply(setup, now).unwrap()
    }
}

/// `rounds` rounds of one packet per flow each way (A's flows from A's
/// LAN, B's from B's); `change(lab, round)` runs before each round. Then
/// everything held or in flight arrives. Returns (A -> B, B -> A).
fn both_ways(lab: &mut Lab, fa: &[Flow], fb: &[Flow], rounds: u32, mut change: impl FnMut(&mut Lab, u32)) -> (Order, Order) {
    lab.read_a_lan = true;
    let (mut ab, mut ba) = (Order::default(), Order::default());
    let mut collect = |lab: &mut Lab| {
        ab.take(std::mem::take(&mut lab.delivered), fa);
        ba.take(std::mem::take(&mut lab.delivered_a), fb);
    };
    for seq in 0..rounds {
        change(lab, seq);
        let mut burst: Vec<Mbuf> = fa.iter().map(|f| lab.frame_to_a(&ip_packet(f, seq, size_of(f.id, seq)))).collect();
        lab.gen.tx.tx_all(&mut burst, 1000);
        assert!(burst.is_empty(), "A's LAN ring full");
        let mut burst: Vec<Mbuf> = fb.iter().map(|f| lab.frame_to_b(&ip_packet(f, seq, size_of(f.id, seq)))).collect();
        lab.check.tx.tx_all(&mut burst, 1000);
        assert!(burst.is_empty(), "B's LAN ring full");
        lab.step();
        collect(lab);
    }
    // Re-orderers give up on a gap after at most 100 ms.
    for _ in 0..30 {
        lab.now += 10_000_000;
        lab.step();
    }
    lab.settle(20);
    collect(lab);
    (ab, ba)
}

fn reorder_drops(c: &braid_dataplane::counters::WorkerCounters) -> u64 {
    use braid_tunnel::DropReason;
    c.engine.get(DropReason::ReorderDuplicate) + c.engine.get(DropReason::ReorderTooLate)
}

/// Bundle mode, traffic both ways, tunnel 1's A -> B frames 3 polls late
/// (so frames are in flight and packets held in B's re-orderer at every
/// change): A's bundle gets another policy at round 200 (A rebuilds it),
/// B's at 400 (B rebuilds it). Every packet arrives once and in order,
/// both ways; no re-orderer drops anything.
#[test]
fn bundle_mode_new_policy_rebuilds_without_loss() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut lab = Lab::new("aprp", "bundle", &[1, 1, 1, 1], 32, 1500);
    lab.delay_polls.insert(4501, 3);
    let mut regs = Registries::new(&lab);
    let (fa, fb) = (flows(8), b_flows(8));
    let rounds = 600;
    let mut applied = Vec::new();
    let (ab, ba) = both_ways(&mut lab, &fa, &fb, rounds, |lab, round| {
        let side_a = match round {
            200 => true,
            400 => false,
            _ => return,
        };
        let t = side_tables(lab, side_a, &[1, 1, 1, 1], |doc| doc["bundles"][0]["policy"] = "round_robin".into());
        applied.push(regs.apply(lab, side_a, &t));
    });
    let (a, b) = lab.counters();
    eprintln!("policy: A engine {:?}, B engine {:?}; B {}", a.engine.named(), b.engine.named(), lab.b.rx_debug()[0]);
    assert_eq!(applied, vec![Applied { kept: 0, rebuilt: 1, dropped: 1 }; 2], "each side rebuilt its bundle");
    for (who, o, f) in [("A -> B", &ab, &fa), ("B -> A", &ba, &fb)] {
        assert!(o.bad.is_empty(), "{who}: {:?}", &o.bad[..o.bad.len().min(5)]);
        assert_eq!(o.missing(f, rounds), vec![], "{who}: lost");
    }
    assert_eq!((reorder_drops(&a), reorder_drops(&b)), (0, 0));
    assert_eq!(a.engine.named(), vec![], "A's engines dropped");
    assert_eq!(b.engine.named(), vec![], "B's engines dropped");
    assert_eq!(a.drops.named(), vec![], "A dropped");
    assert_eq!(b.drops.named(), vec![], "B dropped");
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// Bundle mode, traffic both ways, tunnel 1's A -> B frames 3 polls late:
/// at round 200 both gateways add a fifth tunnel (both rebuild the bundle
/// in the same instant); nothing is lost, duplicated or reordered, and the
/// new tunnel carries traffic both ways. At round 400 both remove tunnel 0
/// (the others move down one index): only what was in flight on tunnel 0
/// can be lost, and that is B's last burst before the change (the middle
/// hands every A -> B frame to B within the round, while B's frames wait
/// in A's WAN ring for A's next poll, where no tunnel has their port any
/// more: counted as `not_tunnel`); everything else arrives once and in order.
#[test]
fn bundle_mode_tunnels_added_and_removed_without_loss() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut lab = Lab::new("aprt", "bundle", &[1, 1, 1, 1], 32, 1500);
    lab.delay_polls.insert(4501, 3);
    let mut regs = Registries::new(&lab);
    let (fa, fb) = (flows(8), b_flows(8));
    let rounds = 600;
    let mut applied = Vec::new();
    let mut tx_at_remove = (Vec::new(), Vec::new());
    let (ab, ba) = both_ways(&mut lab, &fa, &fb, rounds, |lab, round| {
        let remove = match round {
            200 => false,
            400 => true,
            _ => return,
        };
        if remove {
            tx_at_remove = (lab.a.counters().tunnels[0].iter().map(|t| t.tx.packets).collect(), lab.b.counters().tunnels[0].iter().map(|t| t.tx.packets).collect());
        }
        for side_a in [true, false] {
            let t = side_tables(lab, side_a, &[1, 1, 1, 1, 1], |doc| {
                if remove {
                    doc["bundles"][0]["tunnels"].as_array_mut().unwrap().remove(0);
                }
            });
            applied.push(regs.apply(lab, side_a, &t));
        }
    });
    let (a, b) = lab.counters();
    eprintln!("tunnels: A engine {:?}, B engine {:?}", a.engine.named(), b.engine.named());
    assert_eq!(applied, vec![Applied { kept: 0, rebuilt: 1, dropped: 1 }; 4]);
    for (who, o) in [("A -> B", &ab), ("B -> A", &ba)] {
        assert!(o.bad.is_empty(), "{who}: {:?}", &o.bad[..o.bad.len().min(5)]);
    }
    assert_eq!(ab.missing(&fa, rounds), vec![], "A -> B: lost");
    let lost = ba.missing(&fb, rounds);
    eprintln!("tunnels: B -> A lost {} packets in flight on the removed tunnel: {lost:?}", lost.len());
    assert!(lost.iter().all(|&(_, seq)| seq == 399), "B -> A lost outside its last burst before the removal: {lost:?}");
    assert_eq!((reorder_drops(&a), reorder_drops(&b)), (0, 0));
    // What A refused is what was in flight on the removed tunnel: frames
    // to its UDP port, no tunnel's any more (`not_tunnel`), and fragments
    // whose other part was in one.
    let refused: u64 = a.drops.named().iter().filter(|(n, _)| *n == "not_tunnel").map(|(_, c)| c).sum();
    assert!(a.drops.named().iter().all(|(n, _)| *n == "not_tunnel"), "A dropped {:?}", a.drops.named());
    assert!(a.engine.named().iter().all(|(n, _)| *n == "fragment_missing"), "A's engines dropped {:?}", a.engine.named());
    assert!(lost.is_empty() || refused > 0);
    eprintln!("tunnels: A refused {refused} frames to the removed tunnel's port");
    assert_eq!(b.engine.named(), vec![], "B's engines dropped");
    assert_eq!(b.drops.named(), vec![], "B dropped");
    // The fifth tunnel carried traffic both ways until the end; tunnel 0
    // (gone) kept its counters in `retired_tunnels`.
    let tx = |c: &braid_dataplane::counters::WorkerCounters| c.tunnels[0].iter().map(|t| t.tx.packets).collect::<Vec<_>>();
    assert_eq!(a.tunnels[0].len(), 4);
    assert!(tx_at_remove.0[4] > 0 && tx_at_remove.1[4] > 0, "the new tunnel carried traffic: {tx_at_remove:?}");
    assert!(tx(&a)[3] > tx_at_remove.0[4] && tx(&b)[3] > tx_at_remove.1[4], "tunnel 4 is now tunnel 3, counters kept");
    assert_eq!(a.retired_tunnels.tx.packets, tx_at_remove.0[0]);
    assert_eq!(b.retired_tunnels.tx.packets, tx_at_remove.1[0]);
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}
