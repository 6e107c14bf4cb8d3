//! Two gateways of two workers each, on two-queue net_ring ports: the test
//! plays the NICs' RSS. A's LAN frames go to the queue of their inner flow;
//! WAN frames go to a queue chosen by a hash of the outer UDP ports (as a
//! NIC would), which is often not the queue of the worker that owns the
//! tunnel, so ESP packets are handed to their tunnel's owner and opened
//! frames to the owner of their sender stream (`worker::handoff`). Every
//! packet arrives once and in order per flow, byte for byte; a replay sent
//! to another worker is still refused by the tunnel's one replay window;
//! every packet is counted (`lab::assert_conserved` over each gateway's
//! workers) and no mbuf leaks.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use braid_dataplane::config::{Config, Tables};
use braid_dataplane::counters::{DpDrop, WorkerCounters};
use braid_dataplane::gateway::{nat_setup, outbound_sas, worker_setup_with_nat, PortPlan};
use braid_dataplane::lab::traffic::{ip_packet, tag, Family, Flow, L4};
use braid_dataplane::lab::{self, Checker, TICK};
use braid_dataplane::sas::SaRegistry;
use braid_dataplane::worker::handoff;
use braid_dataplane::worker::{Worker, WorkerSetup};
use braid_dpdk::ring_port::RingPair;
use braid_dpdk::rss::RssSteering;
use braid_dpdk::{Mbuf, Mempool, Port, PortConfig, RxQueue, TxQueue, BURST};
use braid_tunnel::DropReason;

const WORKERS: u16 = 2;

/// The test's side of a port: one queue pair per queue.
struct End {
    rx: Vec<RxQueue>,
    tx: Vec<TxQueue>,
}

struct Gateway {
    workers: Vec<Worker>,
}

impl Gateway {
    fn poll(&mut self, now: u64) {
        for w in &mut self.workers {
            w.poll(now);
        }
    }
    fn counters(&self) -> WorkerCounters {
        let mut c = WorkerCounters::default();
        for w in &self.workers {
            c.merge(&w.counters());
        }
        c
    }
}

/// The queue a NIC's RSS would pick for a WAN frame: a hash of the outer
/// UDP ports (IPv4 without options).
/// The RSS of the rig's NICs: Microsoft's key, a table of 128 entries
/// over the workers' queues.
fn steering() -> Arc<RssSteering> {
    let key = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae,
        0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];
    Arc::new(RssSteering::new(key.to_vec(), (0..128).map(|i| i % WORKERS).collect()).unwrap())
}

/// The queue a WAN frame reaches: by `rss` when given, else `wan_queue`.
fn queue_of(rss: &Option<Arc<RssSteering>>, f: &[u8]) -> usize {
    match rss {
        Some(r) if f.len() >= 58 && f[12..14] == [0x86, 0xdd] => {
            let ip = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&f[at..at + 16]).unwrap());
            let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
            usize::from(r.queue_v6(ip(22), port(54), ip(38), port(56)))
        }
        Some(r) if f.len() >= 38 => {
            let ip = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
            let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
            usize::from(r.queue_v4(ip(26), port(34), ip(30), port(36)))
        }
        _ => wan_queue(f),
    }
}

fn wan_queue(f: &[u8]) -> usize {
    if f.len() < 38 {
        return 0;
    }
    let (sp, dp) = (u16::from_be_bytes([f[34], f[35]]) as u32, u16::from_be_bytes([f[36], f[37]]) as u32);
    (((sp.wrapping_mul(31) ^ dp.wrapping_mul(7)).wrapping_mul(2_654_435_761)) >> 31) as usize % WORKERS as usize
}

struct Rig {
    a: Gateway,
    b: Gateway,
    gen: End,
    check: End,
    mid_a: End,
    mid_b: End,
    test_pool: Arc<Mempool>,
    pools: Vec<Arc<Mempool>>,
    now: u64,
    /// A->B WAN frames, copied.
    capture: Vec<Vec<u8>>,
    delivered: Vec<Vec<u8>>,
    /// What A delivered to its LAN (replies).
    delivered_a: Vec<Vec<u8>>,
    /// A NAT in front of A rebinds: A->B frames from this UDP port come
    /// from the second.
    rebind: Option<(u16, u16)>,
    /// The NICs' RSS, when the middle steers by it.
    rss: Option<Arc<RssSteering>>,
    ports: Vec<Port>,
    pairs: Vec<RingPair>,
    /// Each side's configuration, tables and outbound SAs (A, then B), for
    /// new tables applied later (`apply_b`).
    docs: Vec<(serde_json::Value, Tables, SideSas)>,
    /// B's SAs across new tables, and the cells its workers publish their
    /// replay windows' tops into (as the process keeps them).
    b_registry: SaRegistry,
}

/// A side's outbound SAs, per bundle and tunnel.
type SideSas = Vec<Vec<Arc<braid_tunnel::sa::OutboundSaPair>>>;

impl Rig {
    /// [`Rig::with_edit`]; `rss`: the middle steers WAN frames with the
    /// Toeplitz hash of a real RSS key and table, and the workers know it
    /// (`WorkerSetup::wan_rss`).
    fn build(case: &str, mode: &str, weights: &[u32], edit: fn(bool, &mut serde_json::Value), rss: bool) -> Rig {
        let mut rig = Rig::with_edit_rss(case, mode, weights, edit, rss.then(steering));
        rig.rss = rss.then(steering);
        rig
    }

    /// [`Rig::new`] with each gateway's configuration edited (`true`: A).
    fn with_edit(case: &str, mode: &str, weights: &[u32], edit: fn(bool, &mut serde_json::Value)) -> Rig {
        Rig::with_edit_rss(case, mode, weights, edit, None)
    }

    fn with_edit_rss(case: &str, mode: &str, weights: &[u32], edit: fn(bool, &mut serde_json::Value), rss: Option<Arc<RssSteering>>) -> Rig {
        let test_pool = Arc::new(Mempool::new(&format!("{case}_tp"), 8191, 9400).unwrap());
        let cfg = PortConfig { rx_queues: WORKERS, tx_queues: WORKERS, rx_desc: 512, tx_desc: 512, steered_queues: true, ..Default::default() };
        let mut pairs = Vec::new();
        let mut ends = Vec::new();
        let mut gw_ports = Vec::new();
        for (name, gw_side_is_b) in [("alan", true), ("awan", false), ("bwan", true), ("blan", false)] {
            let (pair, pa, pb) = RingPair::with_queues(&format!("{case}{name}"), 1024, WORKERS).unwrap();
            pairs.push(pair);
            let (gw, mut mine) = if gw_side_is_b { (pb, pa) } else { (pa, pb) };
            mine.configure(&cfg, &[&test_pool]).unwrap();
            mine.start().unwrap();
            gw_ports.push(gw);
            ends.push(mine);
        }
        let end = |p: &Port| End {
            rx: (0..WORKERS).map(|q| p.rx_queue(q).unwrap()).collect(),
            tx: (0..WORKERS).map(|q| p.tx_queue(q).unwrap()).collect(),
        };
        let (gen, mid_a, mid_b, check) = (end(&ends[0]), end(&ends[1]), end(&ends[2]), end(&ends[3]));
        let names: Vec<String> = gw_ports.iter().map(|p| p.info().name.clone()).collect();
        let mut pools = Vec::new();
        let mut ports = ends;
        let mut gws = Vec::new();
        let mut docs = Vec::new();
        let mut b_registry = SaRegistry::default();
        let mut gw_ports = gw_ports.into_iter();
        let (alan, awan, bwan, blan) = (gw_ports.next().unwrap(), gw_ports.next().unwrap(), gw_ports.next().unwrap(), gw_ports.next().unwrap());
        for (side_a, mut lan, mut wan) in [(true, alan, awan), (false, blan, bwan)] {
            let (ln, wn) = if side_a { (&names[0], &names[1]) } else { (&names[3], &names[2]) };
            let mut doc: serde_json::Value = serde_json::from_str(&lab::config_json(side_a, (ln, wn), mode, weights, 16, 1500)).unwrap();
            edit(side_a, &mut doc);
            let json = doc.to_string();
            let tables = Tables::from_config(&Config::from_json_str(&json).unwrap()).unwrap();
            let pool = Arc::new(Mempool::new(&format!("{case}_{}", if side_a { "pa" } else { "pb" }), 16383, 9400).unwrap());
            for p in [&mut lan, &mut wan] {
                p.configure(&cfg, &[&pool]).unwrap();
                p.start().unwrap();
            }
            let plan = PortPlan::new(&tables).unwrap();
            let sas = outbound_sas(&tables);
            if !side_a {
                b_registry.adopt(&tables, &sas);
            }
            let highs = if side_a { Vec::new() } else { b_registry.inbound_highs(&tables) };
            let rings = handoff::mesh(&format!("{case}{}", if side_a { "ha" } else { "hb" }), WORKERS, 1024).unwrap();
            let workers = rings
                .into_iter()
                .enumerate()
                .map(|(id, h)| {
                    let id = id as u16;
                    let nat = nat_setup(&tables, WORKERS).unwrap();
                    let setup = WorkerSetup {
                        workers: WORKERS,
                        wan_rss: vec![rss.clone()],
                        ..worker_setup_with_nat(&tables, &plan, &sas, nat, id, id == 0, |_| Default::default()).unwrap()
                    }
                    .with_rx_highs(&highs);
                    let lanq = (lan.rx_queue(id).unwrap(), lan.tx_queue(id).unwrap());
                    let wanq = vec![(wan.rx_queue(id).unwrap(), wan.tx_queue(id).unwrap())];
                    // No MLD reports: the frames the WAN carries are the test's (as in the lab).
                    Worker::new(setup, pool.clone(), lanq, wanq, 0).unwrap().without_mld().with_handoff(h).unwrap()
                })
                .collect();
            gws.push(Gateway { workers });
            docs.push((doc, tables, sas));
            pools.push(pool);
            ports.push(lan);
            ports.push(wan);
        }
        let b = gws.pop().unwrap();
        let a = gws.pop().unwrap();
        Rig { a, b, gen, check, mid_a, mid_b, test_pool, pools, now: 0, capture: Vec::new(), delivered: Vec::new(), delivered_a: Vec::new(), rebind: None, rss: None, ports, pairs, docs, b_registry }
    }

    /// B's configuration edited by `edit`, applied to B's worker `id` only
    /// (the others keep theirs, as between two workers' turns to take new
    /// tables); SAs that stay are kept.
    fn apply_b(&mut self, id: usize, edit: impl Fn(&mut serde_json::Value)) {
        let mut doc = self.docs[1].0.clone();
        edit(&mut doc);
        let new = Tables::from_config(&Config::from_json_str(&doc.to_string()).unwrap()).unwrap();
        let new_sas = self.b_registry.for_tables(&new).unwrap();
        let highs = self.b_registry.inbound_highs(&new);
        let plan = PortPlan::new(&new).unwrap();
        let nat = nat_setup(&new, WORKERS).unwrap();
        let setup = WorkerSetup {
            workers: WORKERS,
            wan_rss: vec![self.rss.clone()],
            ..worker_setup_with_nat(&new, &plan, &new_sas, nat, id as u16, id == 0, |_| Default::default()).unwrap()
        }
        .with_rx_highs(&highs);
        self.b.workers[id].apply(setup, self.now).unwrap();
    }

    /// A LAN frame from A's host holding `ip`.
    fn frame_to_a(&self, ip: &[u8]) -> Mbuf {
        let mut m = Mbuf::alloc(&self.test_pool).unwrap();
        let b = m.append(14 + ip.len()).unwrap();
        b[0..6].copy_from_slice(&lab::mac(lab::A_LAN_MAC));
        b[6..12].copy_from_slice(&lab::mac(lab::A_HOST_MAC));
        b[12..14].copy_from_slice(&(if ip[0] >> 4 == 6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes());
        b[14..].copy_from_slice(ip);
        m
    }

    /// A LAN frame from B's host holding `ip`.
    fn frame_to_b(&self, ip: &[u8]) -> Mbuf {
        let mut m = Mbuf::alloc(&self.test_pool).unwrap();
        let b = m.append(14 + ip.len()).unwrap();
        b[0..6].copy_from_slice(&lab::mac(lab::B_LAN_MAC));
        b[6..12].copy_from_slice(&lab::mac(lab::B_HOST_MAC));
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        b[14..].copy_from_slice(ip);
        m
    }

    /// Packet `round` of every flow from A's host, each flow to the queue
    /// of its inner RSS (`id mod WORKERS`).
    fn send_a(&mut self, flows: &[Flow], round: u32) {
        for f in flows {
            let mut v = vec![self.frame_to_a(&ip_packet(f, round, 0))];
            self.gen.tx[(f.id % WORKERS as u32) as usize].tx_all(&mut v, 1000);
            assert!(v.is_empty());
        }
    }

    /// `ip` from B's host into B's LAN queue `q`.
    fn send_b(&mut self, q: usize, ip: &[u8]) {
        let mut v = vec![self.frame_to_b(ip)];
        self.check.tx[q].tx_all(&mut v, 1000);
        assert!(v.is_empty());
    }

    /// Moves WAN frames across the middle, each to the queue RSS picks.
    fn middle(&mut self) {
        let mut v = Vec::with_capacity(BURST);
        for (from, to, capture) in [(0, 1, true), (1, 0, false)] {
            for q in 0..WORKERS as usize {
                loop {
                    let src = if from == 0 { &mut self.mid_a } else { &mut self.mid_b };
                    let n = src.rx[q].rx_burst(&mut v, BURST);
                    if n == 0 {
                        break;
                    }
                    for mut m in v.drain(..) {
                        if capture {
                            self.capture.push(m.data().to_vec());
                            if let Some((old, new)) = self.rebind {
                                let d = m.data_mut();
                                let v6 = d.get(12..14) == Some(&[0x86, 0xdd]);
                                let at = if v6 { 54 } else { 34 };
                                if d.len() >= at + 8 && d[at..at + 2] == old.to_be_bytes() {
                                    d[at..at + 2].copy_from_slice(&new.to_be_bytes());
                                    if v6 {
                                        lab::fix_udp6_checksum(d);
                                    }
                                }
                            }
                        }
                        let dst = if to == 0 { &mut self.mid_a } else { &mut self.mid_b };
                        let mut one = vec![m];
                        dst.tx[queue_of(&self.rss, one[0].data())].tx_all(&mut one, 1000);
                        assert!(one.is_empty());
                    }
                }
            }
        }
    }

    fn step(&mut self) {
        self.now += TICK;
        self.a.poll(self.now);
        self.middle();
        // B reads a burst per queue per poll: a few polls per step keep up
        // with A's jumbo frames cut into several WAN frames each.
        for _ in 0..4 {
            self.b.poll(self.now);
        }
        self.middle();
        let mut v = Vec::with_capacity(BURST);
        for q in 0..WORKERS as usize {
            while self.check.rx[q].rx_burst(&mut v, BURST) > 0 {
                self.delivered.extend(v.drain(..).map(|m| m.data().to_vec()));
            }
            while self.gen.rx[q].rx_burst(&mut v, BURST) > 0 {
                self.delivered_a.extend(v.drain(..).map(|m| m.data().to_vec()));
            }
        }
    }

    fn settle(&mut self, polls: usize) {
        for _ in 0..polls {
            self.step();
        }
    }

    fn close(self) {
        let Rig { a, b, gen, check, mid_a, mid_b, pools, ports, pairs, test_pool, .. } = self;
        drop((a, b, gen, check, mid_a, mid_b));
        for p in ports {
            p.close();
        }
        drop(pairs);
        for p in pools.iter().chain(std::iter::once(&test_pool)) {
            assert_eq!(p.avail(), p.size(), "pool {} leaked {} mbufs", p.name(), p.size() - p.avail());
        }
    }
}

/// The queue RSS gives tunnel frames from A's `port` to B's same port.
fn tunnel_queue_of(port: u16) -> usize {
    let mut f = vec![0u8; 38];
    f[34..36].copy_from_slice(&port.to_be_bytes());
    f[36..38].copy_from_slice(&port.to_be_bytes());
    wan_queue(&f)
}

fn flows() -> Vec<Flow> {
    let mut f = Vec::new();
    for (i, (fam, l4)) in [(Family::V4, L4::Udp), (Family::V4, L4::Tcp), (Family::V6, L4::Udp), (Family::V6, L4::Tcp)].into_iter().enumerate() {
        for k in 0..4u32 {
            f.push(Flow::a_to_b(i as u32 * 4 + k, fam, l4));
        }
    }
    f
}

fn run(case: &str, mode: &str, weights: &[u32], size_of: fn(u32, u32) -> usize, rounds: u32) {
    run_with(case, mode, weights, size_of, rounds, false);
}

fn run_with(case: &str, mode: &str, weights: &[u32], size_of: fn(u32, u32) -> usize, rounds: u32, rss: bool) {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut rig = Rig::build(case, mode, weights, |_, _| {}, rss);
    let flows = flows();
    let mut sent = 0u64;
    for round in 0..rounds {
        for f in &flows {
            // RSS on the inner flow: each flow always reaches one worker.
            let q = (f.id % WORKERS as u32) as usize;
            let mut v = vec![rig.frame_to_a(&ip_packet(f, round, size_of(f.id, round)))];
            rig.gen.tx[q].tx_all(&mut v, 1000);
            assert!(v.is_empty());
            sent += 1;
        }
        rig.step();
    }
    rig.settle(400);
    let mut checker = Checker::default();
    for f in std::mem::take(&mut rig.delivered) {
        checker.check(&f, &flows, size_of);
    }
    assert!(checker.bad.is_empty(), "{:?}", &checker.bad[..checker.bad.len().min(10)]);
    assert_eq!(checker.received, sent, "every packet once");
    for f in &flows {
        assert_eq!(checker.next.get(&f.id), Some(&rounds), "flow {} complete", f.id);
    }
    let (ca, cb) = (rig.a.counters(), rig.b.counters());
    lab::assert_conserved(&ca, "A", mode == "plain");
    lab::assert_conserved(&cb, "B", mode == "plain");
    let h = cb.handoff;
    if rss {
        assert_eq!(h.esp_out, 0, "RSS gives each tunnel's packets to its owner: {h:?}");
    } else {
        assert!(h.esp_out > 0, "some ESP reached a worker that does not own its tunnel: {h:?}");
    }
    assert_eq!(h.esp_out, h.esp_in, "{h:?}");
    if mode == "bundle" {
        assert!(h.frames_out > 0, "some frames crossed to their stream's owner: {h:?}");
        assert_eq!(h.frames_out, h.frames_in, "{h:?}");
    }
    assert!(cb.drops.named().is_empty() && cb.engine.total() == 0, "B dropped: {:?} {:?}", cb.drops.named(), cb.engine.named());
    // Both of B's workers delivered (each owns one of A's streams, or
    // some tunnels in plain mode).
    for (i, w) in rig.b.workers.iter().enumerate() {
        assert!(w.counters().delivered > 0, "B worker {i} delivered nothing");
    }
    // A few probe intervals: B's worker 0 measures every path's delay and
    // tells worker 1. Every re-orderer then holds for the measured skew,
    // none for the whole ceiling (100 ms) as one that never heard of a
    // path's delay would (found by review: worker 1's never did).
    for _ in 0..5 {
        rig.now += 100_000_000;
        rig.settle(5);
    }
    for (i, w) in rig.b.workers.iter().enumerate() {
        let holds = w.reorder_holds();
        assert_eq!(holds.is_empty(), mode == "plain", "B worker {i}");
        assert!(holds.iter().all(|&h| h < 100_000_000), "B worker {i}'s re-orderers hold {holds:?}");
    }

    // A captured ESP packet replayed from another source port (so RSS
    // picks another queue) is refused by the one replay window its tunnel
    // has, and moves nothing.
    let before = rig.b.counters();
    let mut replay = rig.capture.iter().find(|f| f.len() > 60 && f[23] == 17).unwrap().clone();
    let q0 = queue_of(&rig.rss, &replay);
    let sport = u16::from_be_bytes([replay[34], replay[35]]);
    let new_sport = (1..200u16).map(|d| sport.wrapping_add(d)).find(|&p| {
        replay[34..36].copy_from_slice(&p.to_be_bytes());
        queue_of(&rig.rss, &replay) != q0
    });
    let new_sport = new_sport.expect("a port RSS sends elsewhere");
    replay[34..36].copy_from_slice(&new_sport.to_be_bytes());
    let mut v = vec![{
        let mut m = Mbuf::alloc(&rig.test_pool).unwrap();
        m.append(replay.len()).unwrap().copy_from_slice(&replay);
        m
    }];
    rig.mid_b.tx[queue_of(&rig.rss, &replay)].tx_all(&mut v, 1000);
    rig.settle(10);
    let after = rig.b.counters();
    assert_eq!(after.engine.get(DropReason::Replayed), before.engine.get(DropReason::Replayed) + 1, "{:?}", after.engine.named());
    let moved: u64 = after.tunnels.iter().flatten().map(|t| t.remote_changes).sum();
    assert_eq!(moved, 0, "a replay moves no remote");
    assert!(rig.delivered.is_empty(), "nothing delivered twice");

    // A NAT in front of A rebinds tunnel 0's mapping: the worker that owns
    // the tunnel learns the new remote from the first authenticated packet
    // and tells the other, so every worker of B sends to it.
    let port = 4500;
    let new_port = (20000u16..).find(|&p| {
        let mut f = replay.clone();
        f[34..36].copy_from_slice(&p.to_be_bytes());
        wan_queue(&f) != tunnel_queue_of(port)
    });
    rig.rebind = Some((port, new_port.unwrap()));
    for round in rounds..rounds + 20 {
        for f in &flows {
            let mut v = vec![rig.frame_to_a(&ip_packet(f, round, size_of(f.id, round)))];
            rig.gen.tx[(f.id % WORKERS as u32) as usize].tx_all(&mut v, 1000);
        }
        rig.step();
    }
    rig.settle(400);
    for (i, w) in rig.b.workers.iter().enumerate() {
        assert_eq!(w.remotes()[0][0].port(), new_port.unwrap(), "B worker {i} sends tunnel 0 to the new mapping");
        assert_eq!(w.remotes()[0][1].port(), 4501, "B worker {i}: tunnel 1 unchanged");
    }
    let cb = rig.b.counters();
    assert_eq!(cb.tunnels[0][0].remote_changes, 1, "learned once, by the tunnel's owner");
    assert!(cb.handoff.messages_out > 0 && cb.handoff.messages_in == cb.handoff.messages_out, "{:?}", cb.handoff);
    let mut checker = Checker { next: (0..flows.len() as u32).map(|id| (id, rounds)).collect(), ..Default::default() };
    for f in std::mem::take(&mut rig.delivered) {
        checker.check(&f, &flows, size_of);
    }
    assert!(checker.bad.is_empty(), "{:?}", &checker.bad[..checker.bad.len().min(10)]);
    assert_eq!(checker.received, 20 * flows.len() as u64, "nothing lost across the rebinding");
    lab::assert_conserved(&rig.b.counters(), "B", mode == "plain");
    rig.close();
}

/// One packet of every flow into A per round (each flow to the worker
/// its id picks, as RSS on the inner flow would), then B settles.
fn send_rounds(rig: &mut Rig, flows: &[Flow], rounds: std::ops::Range<u32>, size_of: impl Fn(u32, u32) -> usize) {
    for round in rounds {
        for f in flows {
            let mut v = vec![rig.frame_to_a(&ip_packet(f, round, size_of(f.id, round)))];
            rig.gen.tx[(f.id % WORKERS as u32) as usize].tx_all(&mut v, 1000);
            assert!(v.is_empty());
        }
        rig.step();
    }
    rig.settle(400);
}

fn ipv6_tunnels(side_a: bool, doc: &mut serde_json::Value) {
    lab::outer_v6(vec![true, true])(side_a, doc)
}

/// Two workers each side over IPv6 tunnels: every packet once and in
/// order; a NAT66 in front of A rebinds tunnel 0's port: its owner learns
/// the new IPv6 remote and tells the other worker (the hand-off message
/// carries the address in its body), so every worker of B sends there.
#[test]
fn ipv6_tunnels_over_two_workers_and_a_rebinding_learned_by_both() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut rig = Rig::build("w6", "bundle", &[1, 1], ipv6_tunnels, false);
    let flows = flows();
    let size_of = |id: u32, seq: u32| [64, 700, 1400, 3000][((id + seq) % 4) as usize];
    send_rounds(&mut rig, &flows, 0..40, size_of);
    rig.rebind = Some((4500, 20_000));
    send_rounds(&mut rig, &flows, 40..80, size_of);
    let mut checker = Checker::default();
    for f in std::mem::take(&mut rig.delivered) {
        checker.check(&f, &flows, size_of);
    }
    assert!(checker.bad.is_empty(), "{:?}", &checker.bad[..checker.bad.len().min(10)]);
    assert_eq!(checker.received, 80 * flows.len() as u64, "every packet once");
    assert!(rig.capture.iter().all(|f| f[12..14] == [0x86, 0xdd]), "IPv6 WAN frames only");
    let moved: std::net::SocketAddr = "[2001:db8:a::1]:20000".parse().unwrap();
    for (i, w) in rig.b.workers.iter().enumerate() {
        assert_eq!(w.remotes()[0][0], moved, "B worker {i} sends tunnel 0 to the new mapping");
        assert_eq!(w.remotes()[0][1], "[2001:db8:a::1]:4501".parse().unwrap(), "B worker {i}: tunnel 1 unchanged");
    }
    let cb = rig.b.counters();
    assert_eq!(cb.tunnels[0][0].remote_changes, 1, "learned once, by the tunnel's owner");
    assert!(cb.handoff.messages_out > 0 && cb.handoff.messages_in == cb.handoff.messages_out, "{:?}", cb.handoff);
    assert!(cb.drops.named().is_empty() && cb.engine.total() == 0, "B dropped: {:?} {:?}", cb.drops.named(), cb.engine.named());
    rig.close();
}

#[test]
fn bundle_mode_over_two_workers_each_side() {
    run("wk_bundle", "bundle", &[1, 1, 1, 1], |id, seq| 64 + ((id * 131 + seq * 17) % 1400) as usize, 150);
}

#[test]
fn plain_mode_over_two_workers_each_side() {
    run("wk_plain", "plain", &[1, 1, 1, 1], |id, seq| 64 + ((id * 131 + seq * 17) % 1300) as usize, 100);
}

#[test]
fn bundle_mode_jumbo_frames_over_two_workers() {
    run("wk_jumbo", "bundle", &[1, 1], |id, seq| 1400 + ((id * 977 + seq * 331) % 7600) as usize, 40);
}

/// The answer to an IPv4 UDP packet without options: addresses and ports
/// swapped (its checksums still hold), the payload and its tag kept.
fn reply(ip: &[u8]) -> Vec<u8> {
    let mut r = ip.to_vec();
    r[12..16].copy_from_slice(&ip[16..20]);
    r[16..20].copy_from_slice(&ip[12..16]);
    r[20..22].copy_from_slice(&ip[22..24]);
    r[22..24].copy_from_slice(&ip[20..22]);
    r
}

/// (src, sport, dst, dport) of an IPv4 UDP packet without options.
fn endpoints(ip: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let a = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let p = |at: usize| u16::from_be_bytes([ip[at], ip[at + 1]]);
    ((a(12), p(20)), (a(16), p(22)))
}

/// NAT with two workers per gateway: A SNATs its LAN behind a pool, B's
/// host answers every packet. A's LAN frames reach whichever worker RSS
/// picks and are handed to the worker whose shard owns the flow (braid-nat
/// `outbound_owner`); the replies, re-ordered by the owner of B's stream,
/// are handed to the worker holding the session (`inbound_owner`). Every
/// packet and every reply arrives once, in order per flow, translated both
/// ways with one mapping per flow.
#[test]
fn snat_over_two_workers_each_side() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut rig = Rig::with_edit("wk_nat", "bundle", &[1, 1, 1, 1], snat_on_a);
    let server = (Ipv4Addr::new(10, 2, 0, 1), 5201);
    let flows = udp_flows_to(server);
    let rounds = 60u32;
    let mut mapping: HashMap<u32, (Ipv4Addr, u16)> = HashMap::new();
    // Per flow, the next sequence B's host expects, and how many it got.
    let mut at_b: HashMap<u32, u32> = HashMap::new();
    let mut received = 0u64;
    let mut replies: HashMap<u32, u32> = HashMap::new();
    let mut bad = Vec::new();
    let mut answer = |rig: &mut Rig, mapping: &mut HashMap<u32, (Ipv4Addr, u16)>| {
        // B's host answers what reached it.
        for f in std::mem::take(&mut rig.delivered) {
            let ip = &f[14..];
            let (id, seq) = tag(ip).unwrap();
            received += 1;
            let next = at_b.entry(id).or_insert(0);
            if seq != *next {
                bad.push(format!("flow {id}: B got {seq}, expected {next}"));
            }
            *next = seq + 1;
            let (src, dst) = endpoints(ip);
            if src.0 != Ipv4Addr::new(100, 64, 0, 1) && src.0 != Ipv4Addr::new(100, 64, 0, 2) || dst != server {
                bad.push(format!("flow {id}: B saw {src:?} -> {dst:?}"));
            }
            if *mapping.entry(id).or_insert(src) != src {
                bad.push(format!("flow {id}: a second mapping {src:?}"));
            }
            let r = reply(ip);
            let q = (id % WORKERS as u32) as usize;
            rig.send_b(q, &r);
        }
    };
    for round in 0..rounds {
        rig.send_a(&flows, round);
        rig.step();
        answer(&mut rig, &mut mapping);
    }
    for _ in 0..400 {
        rig.step();
        answer(&mut rig, &mut mapping);
    }
    assert!(bad.is_empty(), "{:?}", &bad[..bad.len().min(10)]);
    assert_eq!(received, u64::from(rounds) * flows.len() as u64, "every packet reached B once");
    // The replies, back at their hosts, in order.
    for f in std::mem::take(&mut rig.delivered_a) {
        let ip = &f[14..];
        let (id, seq) = tag(ip).unwrap();
        let (src, dst) = endpoints(ip);
        let fl = &flows[id as usize];
        assert_eq!((src, dst), (server, (fl.src4, fl.sport)), "reply {id}/{seq} translated back");
        let next = replies.entry(id).or_insert(0);
        assert_eq!(seq, *next, "flow {id}: replies in order");
        *next += 1;
    }
    assert_eq!(replies.values().map(|&n| u64::from(n)).sum::<u64>(), u64::from(rounds) * flows.len() as u64, "every reply once");
    assert_eq!(mapping.len(), flows.len());
    // No two flows share an external endpoint, across the two shards.
    let mut owner: HashMap<(Ipv4Addr, u16), u32> = HashMap::new();
    for (&id, &ext) in &mapping {
        if let Some(o) = owner.insert(ext, id) {
            panic!("{ext:?} is used by flows {o} and {id}");
        }
    }
    assert_nat_sharded(&rig, &rig.a, flows.len());
    rig.close();
}

/// SNAT of fragmented UDP datagrams with two workers per gateway: each
/// of 48 hosts behind A sends a 4000-byte datagram as three fragments
/// (into the LAN queue of its flow, as a NIC's RSS keeps a packet's
/// fragments together); the fragments go to the worker their addresses
/// hash to, are made whole there, and the whole datagram to the worker
/// owning its flow's NAT session. B's host answers each with a fragmented
/// 4000-byte datagram: A's worker that re-orders B's stream makes it whole
/// and hands it to the session's worker. Every datagram and every answer
/// arrives once, byte for byte, translated both ways.
#[test]
fn snat_of_fragmented_datagrams_over_two_workers() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut rig = Rig::with_edit("wk_natf", "bundle", &[1, 1, 1, 1], snat_on_a);
    let server = (Ipv4Addr::new(10, 2, 0, 1), 5201);
    let flows = udp_flows_to(server);
    let fragments = |ip: &[u8]| -> Vec<Vec<u8>> {
        let frame = [&[0u8; 12][..], &[0x08, 0x00], ip].concat();
        let mut out = Vec::new();
        braid_dataplane::encap::fragment_ipv4(&frame, 1480, |h, p| out.push([&h[14..], p].concat()));
        assert_eq!(out.len(), 3);
        out
    };
    let sent: Vec<Vec<u8>> = flows.iter().map(|f| ip_packet(f, 0, 14 + 4000)).collect();
    for (f, ip) in flows.iter().zip(&sent) {
        let mut v: Vec<Mbuf> = fragments(ip).iter().map(|p| rig.frame_to_a(p)).collect();
        rig.gen.tx[(f.id % WORKERS as u32) as usize].tx_all(&mut v, 1000);
        assert!(v.is_empty());
    }
    for _ in 0..100 {
        rig.step();
    }
    let at_b = std::mem::take(&mut rig.delivered);
    assert_eq!(at_b.len(), flows.len(), "each datagram reached B whole (B's LAN takes 9000 bytes)");
    let mut ext_seen = HashMap::new();
    for fr in &at_b {
        let ip = &fr[14..];
        let (id, _) = tag(ip).unwrap();
        let (src, dst) = endpoints(ip);
        assert!(src.0 == Ipv4Addr::new(100, 64, 0, 1) || src.0 == Ipv4Addr::new(100, 64, 0, 2), "flow {id}: {src:?}");
        assert_eq!(dst, server);
        assert_eq!(ip[28..], sent[id as usize][28..], "flow {id}: the payload");
        assert!(ext_seen.insert(src, id).is_none(), "two flows share {src:?}");
        // B's host answers with a fragmented datagram of the same size,
        // an IP identification of its own (it sends them all to one
        // address), into one LAN queue.
        let mut r = reply(ip);
        r[4..6].copy_from_slice(&(id as u16).to_be_bytes());
        r[10..12].fill(0);
        let c = !braid_tunnel::wire::checksum::sum(&r[..20]);
        r[10..12].copy_from_slice(&c.to_be_bytes());
        for p in fragments(&r) {
            rig.send_b((id % WORKERS as u32) as usize, &p);
        }
    }
    for _ in 0..100 {
        rig.step();
    }
    let at_a = std::mem::take(&mut rig.delivered_a);
    assert_eq!(at_a.len(), flows.len(), "each answer reached its host whole");
    for fr in &at_a {
        let ip = &fr[14..];
        let (id, _) = tag(ip).unwrap();
        let (src, dst) = endpoints(ip);
        let f = &flows[id as usize];
        assert_eq!((src, dst), (server, (f.src4, f.sport)), "flow {id}: translated back");
        assert_eq!(ip[28..], sent[id as usize][28..], "flow {id}: the payload");
        assert!(braid_tunnel::wire::checksum::verifies(&ip[..20]));
        let l4 = braid_tunnel::wire::checksum::pseudo_header_v4(src.0, dst.0, 17, (ip.len() - 20) as u16);
        assert_eq!(braid_tunnel::wire::checksum::combine(&[l4, braid_tunnel::wire::checksum::sum(&ip[20..])]), 0xffff, "flow {id}: UDP checksum");
    }
    let c = rig.a.counters();
    let (o, i) = (c.nat.out_frags, c.nat.in_frags);
    assert_eq!((o.taken, o.reassembled, o.discarded), (3 * 48, 48, 0), "{o:?}");
    assert_eq!((i.taken, i.reassembled, i.discarded), (3 * 48, 48, 0), "{i:?}");
    assert_nat_sharded(&rig, &rig.a, flows.len());
    rig.close();
}

/// A SNATs 10.1.0.0/16 to a pool of two addresses; B routes the pool back.
fn snat_on_a(side_a: bool, doc: &mut serde_json::Value) {
    if side_a {
        doc["nat"] = serde_json::json!({"snat": [{"name": "lan", "match": "10.1.0.0/16", "peer": "peer",
            "pool": ["100.64.0.1", "100.64.0.2"], "ports": "20000-40000"}]});
    } else {
        doc["routes"].as_array_mut().unwrap().push(serde_json::json!({"prefix": "100.64.0.0/24", "peer": "peer"}));
    }
}

/// 48 UDP flows to `server`, each from its own host behind A.
fn udp_flows_to(server: (Ipv4Addr, u16)) -> Vec<Flow> {
    (0..48u32)
        .map(|i| {
            let mut f = Flow::a_to_b(i, Family::V4, L4::Udp);
            (f.src4, f.sport, f.dst4, f.dport) = (Ipv4Addr::new(10, 1, (i / 8) as u8, 1 + (i % 8) as u8), 30000 + i as u16, server.0, server.1);
            f
        })
        .collect()
}

/// Both gateways' counters add up; on `nat` (the gateway that translates)
/// LAN frames and deliveries were handed to the worker holding their
/// session and as many arrived, nothing was dropped by the NAT, and each
/// flow has one session, on exactly one of the shards, both shards used.
fn assert_nat_sharded(rig: &Rig, nat: &Gateway, flows: usize) {
    lab::assert_conserved(&rig.a.counters(), "A", false);
    lab::assert_conserved(&rig.b.counters(), "B", false);
    let c = nat.counters();
    let h = c.handoff;
    assert!(h.lan_out > 0 && h.lan_out == h.lan_in, "LAN frames went to their session's worker: {h:?}");
    assert!(h.deliver_out > 0 && h.deliver_out == h.deliver_in, "deliveries went to their session's worker: {h:?}");
    assert_eq!(c.nat.out_dropped() + c.nat.in_dropped(), 0, "{:?}", c.nat);
    let sessions: Vec<u64> = nat.workers.iter().map(|w| w.counters().nat.sessions).collect();
    assert_eq!(sessions.iter().sum::<u64>(), flows as u64, "one session per flow, no duplicate: {sessions:?}");
    assert!(sessions.iter().all(|&s| s > 0), "both shards used: {sessions:?}");
}

/// With the NICs' RSS known (`WorkerSetup::wan_rss`), each tunnel is owned
/// by the worker whose queue RSS gives its packets: no ESP packet is handed
/// over (a replay from another port, and the NAT rebinding, still are).
#[test]
fn bundle_mode_with_rss_known_hands_no_esp() {
    // RSS does not put every tunnel where its local port alone would (the
    // owners without `wan_rss`): otherwise this test could not tell.
    let rss = steering();
    let a = Ipv4Addr::new(192, 0, 2, 1);
    let b = Ipv4Addr::new(198, 51, 100, 1);
    assert!((0..6u16).any(|t| rss.queue_v4(a, 4500 + t, b, 4500 + t) != (4500 + t) % WORKERS), "pick other tunnels");
    run_with("wk_rss", "bundle", &[1, 1, 1, 1, 1, 1], |id, seq| 64 + ((id * 131 + seq * 17) % 1400) as usize, 100, true);
}

fn six_ipv6_tunnels(side_a: bool, doc: &mut serde_json::Value) {
    lab::outer_v6(vec![true; 6])(side_a, doc)
}

/// IPv6 tunnels with the NICs' RSS known: RSS hashes the outer IPv6
/// addresses and ports as it does IPv4's, and each tunnel is owned by the
/// worker whose queue that gives its packets: no ESP packet is handed over.
#[test]
fn ipv6_tunnels_with_rss_known_hand_no_esp() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    // RSS does not put every tunnel where its local port alone would (the
    // owners without `wan_rss`): otherwise this test could not tell.
    let rss = steering();
    let (a, b): (Ipv6Addr, Ipv6Addr) = ("2001:db8:a::1".parse().unwrap(), "2001:db8:b::1".parse().unwrap());
    assert!((0..6u16).any(|t| rss.queue_v6(a, 4500 + t, b, 4500 + t) != handoff::tunnel_owner(4500 + t, WORKERS)), "pick other tunnels");
    let mut rig = Rig::build("w6_rss", "bundle", &[1; 6], six_ipv6_tunnels, true);
    let flows = flows();
    let size_of = |id: u32, seq: u32| 64 + ((id * 131 + seq * 17) % 1400) as usize;
    let rounds = 60;
    send_rounds(&mut rig, &flows, 0..rounds, size_of);
    let mut checker = Checker::default();
    for f in std::mem::take(&mut rig.delivered) {
        checker.check(&f, &flows, size_of);
    }
    assert!(checker.bad.is_empty(), "{:?}", &checker.bad[..checker.bad.len().min(10)]);
    assert_eq!(checker.received, u64::from(rounds) * flows.len() as u64, "every packet once");
    assert!(rig.capture.iter().all(|f| f[12..14] == [0x86, 0xdd]), "IPv6 WAN frames only");
    let cb = rig.b.counters();
    let h = cb.handoff;
    assert_eq!(h.esp_out, 0, "RSS gives each IPv6 tunnel's packets to its owner: {h:?}");
    assert!(h.frames_out > 0 && h.frames_out == h.frames_in, "frames still cross to their stream's owner: {h:?}");
    assert!(cb.drops.named().is_empty() && cb.engine.total() == 0, "B dropped: {:?} {:?}", cb.drops.named(), cb.engine.named());
    for (i, w) in rig.b.workers.iter().enumerate() {
        assert!(w.counters().delivered > 0, "B worker {i} delivered nothing");
    }
    rig.close();
}

/// A port forward with two workers per gateway: B forwards 10.2.0.1:5201
/// to a host behind it. Each flow's session lives on the worker its remote
/// endpoint hashes to (braid-nat `inbound_owner`); the forwarded packets
/// are handed there after B's re-orderers, and the host's replies, which
/// reach whichever worker RSS picks on B's LAN, are handed there before
/// they are routed (`outbound_owner` gives a forward's reply the same
/// worker). Every packet and reply arrives once, in order, translated.
#[test]
fn port_forward_over_two_workers_each_side() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut rig = Rig::with_edit("wk_dnat", "bundle", &[1, 1, 1, 1], |side_a, doc| {
        if !side_a {
            doc["nat"] = serde_json::json!({"dnat": [{"name": "srv", "external": "10.2.0.1", "protocol": "udp", "port": 5201, "internal": "10.2.0.2"}]});
        }
    });
    let (external, internal) = ((Ipv4Addr::new(10, 2, 0, 1), 5201), (Ipv4Addr::new(10, 2, 0, 2), 5201));
    let flows = udp_flows_to(external);
    let rounds = 40u32;
    let mut at_b: HashMap<u32, u32> = HashMap::new();
    let mut bad = Vec::new();
    let mut answer = |rig: &mut Rig| {
        for f in std::mem::take(&mut rig.delivered) {
            let ip = &f[14..];
            let (id, seq) = tag(ip).unwrap();
            let next = at_b.entry(id).or_insert(0);
            if seq != *next {
                bad.push(format!("flow {id}: B's host got {seq}, expected {next}"));
            }
            *next = seq + 1;
            let fl = &flows[id as usize];
            if endpoints(ip) != ((fl.src4, fl.sport), internal) {
                bad.push(format!("flow {id}: B's host saw {:?}", endpoints(ip)));
            }
            // The host answers from its own address.
            let r = reply(ip);
            // B's LAN RSS: by the reply's flow, not by its NAT owner.
            let q = ((id / 3) % WORKERS as u32) as usize;
            rig.send_b(q, &r);
        }
    };
    for round in 0..rounds {
        rig.send_a(&flows, round);
        rig.step();
        answer(&mut rig);
    }
    for _ in 0..400 {
        rig.step();
        answer(&mut rig);
    }
    assert!(bad.is_empty(), "{:?}", &bad[..bad.len().min(10)]);
    assert_eq!(at_b.values().map(|&n| u64::from(n)).sum::<u64>(), u64::from(rounds) * flows.len() as u64, "every packet reached B's host once");
    let mut replies: HashMap<u32, u32> = HashMap::new();
    for f in std::mem::take(&mut rig.delivered_a) {
        let ip = &f[14..];
        let (id, seq) = tag(ip).unwrap();
        let fl = &flows[id as usize];
        assert_eq!(endpoints(ip), (external, (fl.src4, fl.sport)), "reply {id}/{seq} comes from the forwarded address");
        let next = replies.entry(id).or_insert(0);
        assert_eq!(seq, *next, "flow {id}: replies in order");
        *next += 1;
    }
    assert_eq!(replies.values().map(|&n| u64::from(n)).sum::<u64>(), u64::from(rounds) * flows.len() as u64, "every reply once");
    assert_nat_sharded(&rig, &rig.b, flows.len());
    rig.close();
}

/// NAT-keepalives with two workers: a tunnel stays quiet while any worker
/// sends on it (its SA's sequence counter is shared), even when that is not
/// the worker that owns it, and an idle tunnel gets one a second from its
/// owner alone.
#[test]
fn keepalives_come_from_the_owner_and_only_when_no_worker_sends() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    // Liveness probes (which count as sending) only every minute.
    let mut rig = Rig::with_edit("wk_ka", "bundle", &[1, 1, 1, 1], |_, doc| {
        doc["bundles"][0]["keepalive_secs"] = 1.into();
        doc["tunnel"] = serde_json::json!({"probe_interval_ms": 60_000});
    });
    let flows = flows();
    let keepalives = |g: &Gateway| -> Vec<u64> {
        let c = g.counters();
        c.tunnels[0].iter().map(|t| t.keepalives_tx).collect()
    };
    // 3 s of traffic from A's worker 0 alone (its flows reach queue 0).
    for round in 0..300 {
        for f in flows.iter().filter(|f| f.id % WORKERS as u32 == 0) {
            let mut v = vec![rig.frame_to_a(&ip_packet(f, round, 200))];
            rig.gen.tx[0].tx_all(&mut v, 1000);
        }
        rig.now += 10_000_000;
        rig.step();
    }
    assert_eq!(keepalives(&rig.a), vec![0; 4], "every tunnel carried worker 0's traffic, also those worker 1 owns");
    let owned_by_1 = rig.a.workers[1].counters().keepalives;
    assert_eq!(owned_by_1, 0);
    // 3.5 s idle: one a second at most per tunnel, from its owner.
    for _ in 0..350 {
        rig.now += 10_000_000;
        rig.step();
    }
    let idle = keepalives(&rig.a);
    assert!(idle.iter().all(|&k| (1..=3).contains(&k)), "idle tunnels, one a second at most: {idle:?}");
    let by_worker: Vec<u64> = rig.a.workers.iter().map(|w| w.counters().keepalives).collect();
    assert_eq!(by_worker.iter().sum::<u64>(), idle.iter().sum::<u64>(), "{by_worker:?}");
    assert!(by_worker.iter().all(|&k| k > 0), "each worker keeps its own tunnels' mappings: {by_worker:?}");
    rig.delivered.clear();
    rig.close();
}

/// Forged ESP with a tunnel's SPI (sent in clear) lands on a worker that
/// does not own the tunnel: it is handed over unopened only while the
/// ring to the owner holds fewer than `handoff::ESP_BACKLOG` mbufs (found
/// by review: a flood could park a ring's 16,383 mbufs, more than the
/// pool). Here the owner is not polled while the flood lasts.
#[test]
fn forged_esp_for_another_workers_tunnel_is_handed_over_only_so_far() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut rig = Rig::build("espflood", "bundle", &[1, 1], |_, _| {}, false);
    let flows = flows();
    send_rounds(&mut rig, &flows, 0..4, |_, _| 200);
    rig.settle(50);
    // Tunnel 1 (UDP 4501) is worker 1's (port mod 2, no RSS); into
    // worker 0's queue.
    let esp = rig.capture.iter().find(|f| f.len() > 60 && f[36..38] == 4501u16.to_be_bytes()).expect("ESP of tunnel 1").clone();
    let before = rig.b.workers[0].counters();
    for _ in 0..30 {
        let mut v: Vec<Mbuf> = (0..100)
            .map(|_| {
                let mut m = Mbuf::alloc(&rig.test_pool).unwrap();
                m.append(esp.len()).unwrap().copy_from_slice(&esp);
                m
            })
            .collect();
        rig.mid_b.tx[0].tx_all(&mut v, 1000);
        assert!(v.is_empty());
        for _ in 0..4 {
            rig.b.workers[0].poll(rig.now);
        }
    }
    let w0 = rig.b.workers[0].counters();
    let handed = w0.handoff.esp_out - before.handoff.esp_out;
    let refused = w0.drops.get(DpDrop::HandoffFull) - before.drops.get(DpDrop::HandoffFull);
    assert_eq!(handed + refused, 3000, "{:?}", w0.handoff);
    assert!((handoff::ESP_BACKLOG as u64 - 64..=handoff::ESP_BACKLOG as u64).contains(&handed), "handed {handed}");
    // The owner then takes them (replays, refused) and all is counted.
    rig.settle(400);
    let cb = rig.b.counters();
    assert_eq!(cb.handoff.esp_in, cb.handoff.esp_out);
    lab::assert_conserved(&cb, "B", false);
    rig.close();
}

/// B's tunnel 1 (198.51.100.1:4501 <- 192.0.2.1:4501): the worker whose
/// queue RSS gives it, the other worker, and a configuration edit that
/// moves it there (a remote port RSS gives the other worker).
fn tunnel_1_move(rig: &Rig) -> (usize, usize, impl Fn(&mut serde_json::Value) + Copy) {
    let rss = rig.rss.clone().unwrap();
    let local: std::net::SocketAddr = "198.51.100.1:4501".parse().unwrap();
    let queue = |port: u16| rss.queue(std::net::SocketAddr::new([192, 0, 2, 1].into(), port), local).unwrap() as usize;
    let old = queue(4501);
    let other = 1 - old;
    let port = (4600..5600).find(|&p| queue(p) == other).expect("a port of the other queue");
    let move_tunnel = move |doc: &mut serde_json::Value| {
        doc["bundles"][0]["tunnels"][1]["remote"] = serde_json::json!(format!("192.0.2.1:{port}"));
    };
    (old, other, move_tunnel)
}

/// New tables that move a tunnel to the other worker (its remote port
/// changed, the NIC's RSS steering by it) reach the workers one at a time.
/// ESP handed to the old owner before the move is handed on to the new
/// one, never opened outside the new owner's replay window; handed on a
/// second time and still not at its owner (the other worker not yet
/// moved), it is dropped (`handoff_stale`).
#[test]
fn esp_handed_across_a_move_of_its_tunnel_is_opened_only_by_the_owner() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut rig = Rig::build("espmove", "bundle", &[1, 1], |_, _| {}, true);
    let flows = flows();
    send_rounds(&mut rig, &flows, 0..4, |_, _| 200);
    rig.settle(50);
    let (old, other, move_tunnel) = tunnel_1_move(&rig);
    // A frame of tunnel 1 B already took: opened anywhere, it is refused
    // as a replay (`rejected`), which tells where it was opened.
    let esp = rig.capture.iter().find(|f| f.len() > 60 && f[36..38] == 4501u16.to_be_bytes()).expect("ESP of tunnel 1").clone();
    let opened = |rig: &Rig, w: usize| {
        let c = rig.b.workers[w].counters();
        c.tunnels[0][1].rejected + c.tunnels[0][1].rx.packets
    };
    let inject = |rig: &mut Rig, w: usize| {
        let mut m = Mbuf::alloc(&rig.test_pool).unwrap();
        m.append(esp.len()).unwrap().copy_from_slice(&esp);
        let mut v = vec![m];
        rig.mid_b.tx[w].tx_all(&mut v, 1000);
        assert!(v.is_empty());
        for _ in 0..4 {
            rig.b.workers[w].poll(rig.now);
        }
    };
    let poll = |rig: &mut Rig, w: usize| {
        for _ in 0..4 {
            rig.b.workers[w].poll(rig.now);
        }
    };
    let stale0 = rig.b.workers[other].counters().drops.get(DpDrop::HandoffStale);

    // The other worker hands it to the owner; the owner takes the move
    // first and hands it back; the other worker, not moved yet, still
    // sees the first owner as the owner: dropped.
    let handed0 = rig.b.workers[other].counters().handoff.esp_out;
    inject(&mut rig, other);
    assert_eq!(rig.b.workers[other].counters().handoff.esp_out, handed0 + 1);
    rig.apply_b(old, move_tunnel);
    // (A rebuilt tunnel on another path counts from 0.)
    let before = (opened(&rig, old), opened(&rig, other));
    poll(&mut rig, old);
    poll(&mut rig, other);
    assert_eq!(rig.b.workers[other].counters().drops.get(DpDrop::HandoffStale), stale0 + 1);
    assert_eq!((opened(&rig, old), opened(&rig, other)), before, "opened by neither");

    // Again, and the other worker takes the move before the packet comes
    // back: it is the owner now, and opens it.
    inject(&mut rig, other);
    rig.apply_b(other, move_tunnel);
    let before = (opened(&rig, old), opened(&rig, other));
    poll(&mut rig, old);
    poll(&mut rig, other);
    assert_eq!((opened(&rig, old), opened(&rig, other)), (before.0, before.1 + 1), "opened by the new owner only");
    rig.close();
}

/// A tunnel moves to the other worker with new tables, which the workers
/// take one at a time: the new owner first, while the old one still takes
/// the tunnel's packets with its window. Once both run the tables, the new
/// owner's window refuses everything the old one took
/// (`settle_moved_windows`; the process does it when every worker has
/// acknowledged the tables): a replay of a packet the old owner took in
/// between, handed to the new owner, is refused, where it was accepted
/// once before.
#[test]
fn a_replay_of_what_the_old_owner_took_during_a_move_is_refused() {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut rig = Rig::build("rpmove", "bundle", &[1, 1], |_, _| {}, true);
    let flows = flows();
    send_rounds(&mut rig, &flows, 0..4, |_, _| 200);
    rig.settle(50);
    let (old, other, move_tunnel) = tunnel_1_move(&rig);
    // The new owner takes the tables first; the old one, not yet, takes
    // more of the tunnel's packets (A still sends from port 4501).
    rig.apply_b(other, move_tunnel);
    let from = rig.capture.len();
    send_rounds(&mut rig, &flows, 4..8, |_, _| 200);
    rig.settle(20);
    let taken = |rig: &Rig, w: usize| rig.b.workers[w].counters().tunnels[0][1].rx.packets;
    assert!(taken(&rig, old) > 0, "the old owner took the tunnel's packets meanwhile");
    let esp = rig.capture[from..].iter().rev().find(|f| f.len() > 60 && f[36..38] == 4501u16.to_be_bytes()).expect("ESP of tunnel 1").clone();
    rig.apply_b(old, move_tunnel);
    assert_eq!(rig.b.workers[old].settle_moved_windows(), 0, "nothing came to the old owner");
    assert_eq!(rig.b.workers[other].settle_moved_windows(), 1);
    // The replay reaches the old owner's queue and is handed to the new one.
    let before = rig.b.workers[other].counters().tunnels[0][1];
    let mut m = Mbuf::alloc(&rig.test_pool).unwrap();
    m.append(esp.len()).unwrap().copy_from_slice(&esp);
    let mut v = vec![m];
    rig.mid_b.tx[old].tx_all(&mut v, 1000);
    assert!(v.is_empty());
    for _ in 0..4 {
        rig.b.workers[old].poll(rig.now);
        rig.b.workers[other].poll(rig.now);
    }
    let after = rig.b.workers[other].counters().tunnels[0][1];
    assert_eq!((after.rx.packets, after.rejected), (before.rx.packets, before.rejected + 1), "refused as a replay by the new owner");
    let delivered = rig.delivered.len();
    rig.settle(5);
    assert_eq!(rig.delivered.len(), delivered, "nothing delivered twice");
    rig.close();
}
