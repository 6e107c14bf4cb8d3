//! NAT traversal of the WAN side (issue #6), end to end on net_ring ports,
//! in bundle and in plain mode. B sits behind a NAT box (played by the
//! lab's WAN middle): B's outer source (198.51.100.1:4500 + t) becomes a
//! public mapping, and A's frames to the mapping are translated back. A
//! learns where B is from authenticated packets only:
//!
//! - the NAT rebinds one tunnel's mapping mid-stream and forgets the old
//!   one: A sends to the new mapping from the first authenticated packet
//!   that comes from it, and traffic flows both ways again at once;
//! - a forged packet, a replayed capture and a late (authentic, but not
//!   the newest) packet from a new address change nothing;
//! - idle tunnels send RFC 3948 NAT-keepalives at the bundle's interval,
//!   busy ones none, and the peer counts them without calling them a drop;
//! - new tables keep the learned remote, unless the configured one changed.
//!
//! Every frame is counted once on both gateways (`lab::assert_conserved`).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;

use braid_dataplane::config::{Config, Tables};
use braid_dataplane::control::SaRegistry;
use braid_dataplane::gateway::{worker_setup, PortPlan};
use braid_dataplane::lab::traffic::{ip_packet, tag, Family, Flow, L4};
use braid_dataplane::lab::{self, Lab, LabOptions, WanDir, TICK};
use braid_dataplane::worker::Applied;
use braid_dpdk::Mbuf;
use braid_tunnel::DropReason;

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;
const SIZE: usize = 200;
/// B's own WAN address (behind the NAT).
const B_PRIVATE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// B's first tunnel port; tunnel t uses `B_PORT + t` on both sides.
const B_PORT: u16 = 4500;
/// Frame offsets (Ethernet, IPv4 without options, UDP, ESP).
const IP: usize = 14;
const UDP: usize = 34;
const ESP: usize = 42;

/// A worker's tunnel remotes, all IPv4 here.
fn remotes_v4(w: &braid_dataplane::worker::Worker) -> Vec<Vec<SocketAddrV4>> {
    let v4 = |r: &std::net::SocketAddr| match r {
        std::net::SocketAddr::V4(a) => *a,
        std::net::SocketAddr::V6(a) => panic!("an IPv6 remote {a}"),
    };
    w.remotes().iter().map(|b| b.iter().map(v4).collect()).collect()
}

/// Tunnel t's first public mapping.
fn mapping(t: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 40_000 + t as u16)
}

/// Where the NAT moves tunnel 1: another address and another port.
fn rebound() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 2), 50_001)
}

/// An address nobody in the test uses: the attacker's.
fn attacker() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 66), 6666)
}

fn src_of(f: &[u8]) -> SocketAddrV4 {
    SocketAddrV4::new([f[IP + 12], f[IP + 13], f[IP + 14], f[IP + 15]].into(), u16::from_be_bytes([f[UDP], f[UDP + 1]]))
}

fn dst_of(f: &[u8]) -> SocketAddrV4 {
    SocketAddrV4::new([f[IP + 16], f[IP + 17], f[IP + 18], f[IP + 19]].into(), u16::from_be_bytes([f[UDP + 2], f[UDP + 3]]))
}

/// The IPv4 header checksum after an address changed (the UDP checksum
/// of ESP-in-UDP is zero, RFC 3948 section 2.1, and stays zero).
fn fix_ip_checksum(f: &mut [u8]) {
    assert_eq!(f[UDP + 6..UDP + 8], [0, 0], "ESP-in-UDP carries no UDP checksum");
    f[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
    let c = !braid_tunnel::wire::checksum::sum(&f[IP..IP + 20]);
    f[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
}

fn set_src(f: &mut [u8], a: SocketAddrV4) {
    f[IP + 12..IP + 16].copy_from_slice(&a.ip().octets());
    f[UDP..UDP + 2].copy_from_slice(&a.port().to_be_bytes());
    fix_ip_checksum(f);
}

fn set_dst(f: &mut [u8], a: SocketAddrV4) {
    f[IP + 16..IP + 20].copy_from_slice(&a.ip().octets());
    f[UDP + 2..UDP + 4].copy_from_slice(&a.port().to_be_bytes());
    fix_ip_checksum(f);
}

fn is_udp(f: &[u8]) -> bool {
    f.len() > ESP && f[12..14] == [0x08, 0x00] && f[IP + 9] == 17
}

fn is_keepalive(f: &[u8]) -> bool {
    is_udp(f) && u16::from_be_bytes([f[UDP + 4], f[UDP + 5]]) == 9 && f[ESP] == 0xff
}

/// The NAT box in front of B, and what it saw.
#[derive(Default)]
struct NatBox {
    /// Public mapping of each of B's tunnels (by B's port `B_PORT + t`).
    public: Vec<SocketAddrV4>,
    /// Mappings the NAT forgot: A's frames to them are lost.
    stale: Vec<SocketAddrV4>,
    /// A's frames lost that way.
    to_stale: u64,
    /// B -> A frames as A gets them (after translation), when capturing.
    capture: Option<Vec<Vec<u8>>>,
    /// Lose the next B -> A ESP frame of this tunnel and keep it here.
    hold: Option<usize>,
    held: Option<Vec<u8>>,
    /// Keepalives crossing, by direction: (source, destination) as sent.
    keepalives_ab: Vec<(SocketAddrV4, SocketAddrV4)>,
    keepalives_ba: Vec<(SocketAddrV4, SocketAddrV4)>,
    /// A mapping with no B -> A frame for this long is forgotten (B's next
    /// frame gets a new one), as real NATs do with idle UDP; never if None.
    /// `now` is set by the test.
    timeout: Option<u64>,
    now: u64,
    last_out: Vec<u64>,
    expired: u64,
}

impl NatBox {
    /// Tunnel t's mapping moves to `to`; the old one is forgotten.
    fn rebind(&mut self, t: usize, to: SocketAddrV4) {
        let old = std::mem::replace(&mut self.public[t], to);
        self.stale.push(old);
    }

    /// Forgets the mappings idle past the timeout.
    fn expire(&mut self) {
        let Some(timeout) = self.timeout else { return };
        self.last_out.resize(self.public.len(), self.now);
        for t in 0..self.public.len() {
            if self.now.saturating_sub(self.last_out[t]) > timeout {
                let next = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 3), 30_000 + self.expired as u16);
                self.rebind(t, next);
                self.last_out[t] = self.now;
                self.expired += 1;
            }
        }
    }

    fn pass(&mut self, dir: WanDir, f: &mut [u8]) -> bool {
        if !is_udp(f) {
            return true;
        }
        self.expire();
        match dir {
            WanDir::BToA => {
                if is_keepalive(f) {
                    self.keepalives_ba.push((src_of(f), dst_of(f)));
                }
                let src = src_of(f);
                if *src.ip() == B_PRIVATE {
                    let t = (src.port() - B_PORT) as usize;
                    if let Some(last) = self.last_out.get_mut(t) {
                        *last = self.now;
                    }
                    set_src(f, self.public[t]);
                    if self.hold == Some(t) && !is_keepalive(f) {
                        self.hold = None;
                        self.held = Some(f.to_vec());
                        return false;
                    }
                }
                if let Some(c) = self.capture.as_mut() {
                    c.push(f.to_vec());
                }
                true
            }
            WanDir::AToB => {
                if is_keepalive(f) {
                    self.keepalives_ab.push((src_of(f), dst_of(f)));
                }
                let dst = dst_of(f);
                if let Some(t) = self.public.iter().position(|p| *p == dst) {
                    set_dst(f, SocketAddrV4::new(B_PRIVATE, B_PORT + t as u16));
                    true
                } else if self.stale.contains(&dst) {
                    self.to_stale += 1;
                    false
                } else {
                    panic!("A sent to {dst}, which is no mapping of this NAT");
                }
            }
        }
    }
}

/// The lab with 2 tunnels, B behind the NAT box, A configured with the
/// box's first mappings; `edit` changes both documents further.
fn start(case: &str, mode: &str, edit: impl Fn(bool, &mut serde_json::Value) + 'static) -> (Lab, Rc<RefCell<NatBox>>, std::sync::MutexGuard<'static, ()>) {
    let (_eal, guard) = braid_dpdk::testing::eal(&[], 1536);
    let opts = LabOptions {
        edit: Some(Box::new(move |side_a, doc| {
            if side_a {
                behind_nat(doc);
            }
            edit(side_a, doc);
        })),
        ..Default::default()
    };
    let mut lab = Lab::with(case, mode, &[1, 1], 16, 1500, opts);
    lab.read_a_lan = true;
    let nat = Rc::new(RefCell::new(NatBox { public: vec![mapping(0), mapping(1)], ..Default::default() }));
    let hook = nat.clone();
    lab.wan_hook = Some(Box::new(move |dir, f| hook.borrow_mut().pass(dir, f)));
    (lab, nat, guard)
}

/// A reaches B's tunnels at the NAT's first mappings.
fn behind_nat(doc: &mut serde_json::Value) {
    for (t, tunnel) in doc["bundles"][0]["tunnels"].as_array_mut().unwrap().iter_mut().enumerate() {
        tunnel["remote"] = mapping(t).to_string().into();
    }
}

fn a_flows() -> Vec<Flow> {
    (0..8).map(|i| Flow::a_to_b(i, if i % 2 == 0 { Family::V4 } else { Family::V6 }, L4::Udp)).collect()
}

/// Flows from the LAN behind B to the LAN behind A.
fn b_flows() -> Vec<Flow> {
    (0..4u32)
        .map(|i| {
            let f = Flow::a_to_b(100 + i, Family::V4, L4::Udp);
            Flow { src4: Ipv4Addr::new(10, 2, 0, 50 + i as u8), dst4: Ipv4Addr::new(10, 1, 0, 20 + i as u8), ..f }
        })
        .collect()
}

/// One step with one burst of `a` from A's LAN and one of `b` from B's.
fn send_one(lab: &mut Lab, a: &[Flow], b: &[Flow], seq: u32) {
    let mut burst: Vec<Mbuf> = a.iter().map(|f| lab.frame_to_a(&ip_packet(f, seq, SIZE))).collect();
    lab.gen.tx.tx_all(&mut burst, 1000);
    assert!(burst.is_empty(), "A's LAN ring full");
    let mut burst: Vec<Mbuf> = b.iter().map(|f| lab.frame_to_b(&ip_packet(f, seq, SIZE))).collect();
    lab.check.tx.tx_all(&mut burst, 1000);
    assert!(burst.is_empty(), "B's LAN ring full");
    lab.step();
}

fn send(lab: &mut Lab, a: &[Flow], b: &[Flow], seqs: std::ops::Range<u32>) {
    for seq in seqs {
        send_one(lab, a, b, seq);
    }
}

/// Lets re-orderers give up on what was lost (their hold is at most
/// 100 ms) and everything in flight arrive.
fn drain(lab: &mut Lab) {
    for _ in 0..30 {
        lab.now += 10 * MS;
        lab.step();
    }
    lab.settle(20);
}

/// (flow, seq) of each frame delivered, taken from `frames`.
fn tags(frames: &mut Vec<Vec<u8>>) -> BTreeSet<(u32, u32)> {
    std::mem::take(frames).iter().map(|f| tag(&f[14..]).expect("a test packet")).collect()
}

fn want(flows: &[Flow], seqs: impl Iterator<Item = u32> + Clone) -> BTreeSet<(u32, u32)> {
    flows.iter().flat_map(|f| seqs.clone().map(move |s| (f.id, s))).collect()
}

fn remote_changes(c: &braid_dataplane::counters::WorkerCounters) -> Vec<u64> {
    c.tunnels[0].iter().map(|t| t.remote_changes).collect()
}

fn conserved(lab: &Lab, mode: &str) {
    let (a, b) = lab.counters();
    lab::assert_conserved(&a, "A", mode == "plain");
    lab::assert_conserved(&b, "B", mode == "plain");
}

/// Traffic both ways through the NAT; the NAT moves tunnel 1 to a new
/// address and port and forgets the old mapping. A follows from the first
/// authenticated packet from the new mapping: A -> B packets are lost only
/// between the rebinding and that packet (those A sent to the old
/// mapping), B -> A none, and nothing after.
fn rebinding(case: &str, mode: &str) {
    let (mut lab, nat, _g) = start(case, mode, |_, _| {});
    let (fa, fb) = (a_flows(), b_flows());
    send(&mut lab, &fa, &fb, 0..100);
    drain(&mut lab);
    assert_eq!(tags(&mut lab.delivered), want(&fa, 0..100));
    assert_eq!(tags(&mut lab.delivered_a), want(&fb, 0..100));
    assert_eq!(remotes_v4(&lab.a), vec![vec![mapping(0), mapping(1)]], "A starts at the configured mappings");
    assert_eq!(remote_changes(&lab.a.counters()), [0, 0]);

    nat.borrow_mut().rebind(1, rebound());
    let mut learned = None;
    for seq in 100..300 {
        send_one(&mut lab, &fa, &fb, seq);
        if learned.is_none() && remotes_v4(&lab.a)[0][1] == rebound() {
            learned = Some(seq);
        }
    }
    drain(&mut lab);
    let learned = learned.expect("A followed the new mapping");
    eprintln!("{mode}: A learned the new mapping in the step of seq {learned}; {} A -> B frames went to the old one", nat.borrow().to_stale);
    // B sends on each tunnel at least every other burst (weights 1:1), and
    // A reads its WAN after sending its own burst.
    assert!(learned <= 103, "learned only at seq {learned}");
    assert!(nat.borrow().to_stale >= 1, "the old mapping was in use and lost frames");

    let got = tags(&mut lab.delivered);
    let must: BTreeSet<(u32, u32)> = want(&fa, learned + 1..300);
    let missing: Vec<_> = must.difference(&got).collect();
    assert!(missing.is_empty(), "A -> B lost outside the switch: {missing:?}");
    let lost: Vec<_> = want(&fa, 100..=learned).difference(&got).copied().collect();
    eprintln!("{mode}: {} A -> B packets lost at the switch", lost.len());
    assert_eq!(tags(&mut lab.delivered_a), want(&fb, 100..300), "B -> A: nothing lost");

    assert_eq!(remotes_v4(&lab.a), vec![vec![mapping(0), rebound()]]);
    let (a, b) = lab.counters();
    assert_eq!(remote_changes(&a), [0, 1], "one change, on the tunnel the NAT moved");
    assert_eq!(remote_changes(&b), [0, 0], "A did not move");
    assert_eq!(lab.b.remotes(), vec![vec!["192.0.2.1:4500".parse().unwrap(), "192.0.2.1:4501".parse().unwrap()]]);
    assert_eq!(a.drops.named(), vec![]);
    assert_eq!(b.drops.named(), vec![]);
    assert_eq!(a.engine.named(), vec![], "A refused nothing");
    conserved(&lab, mode);
    lab.close();
}

#[test]
fn bundle_mode_follows_a_nat_rebinding() {
    rebinding("ntrebb", "bundle");
}

#[test]
fn plain_mode_follows_a_nat_rebinding() {
    rebinding("ntrebp", "plain");
}

/// Injects frames into A's WAN port as if they came from the WAN, and
/// polls.
fn inject(lab: &mut Lab, frames: &[Vec<u8>]) {
    let mut v: Vec<Mbuf> = frames.iter().map(|f| lab.raw(f)).collect();
    lab.mid_a.tx.tx_all(&mut v, 1000);
    assert!(v.is_empty());
    lab.step();
    lab.step();
}

/// From an address A never heard of, three packets for tunnel 1: one with a
/// valid SPI, a sequence number ahead of everything and a bad tag (auth
/// fails), a replay of a captured authentic packet (refused by anti-replay),
/// and an authentic packet held back by the network until a newer one
/// arrived (accepted, but not the newest). None moves A's remote; traffic
/// goes on to the real mapping.
fn forged(case: &str, mode: &str) {
    let (mut lab, nat, _g) = start(case, mode, |_, _| {});
    let (fa, fb) = (a_flows(), b_flows());
    nat.borrow_mut().capture = Some(Vec::new());
    send(&mut lab, &fa, &fb, 0..50);
    drain(&mut lab);
    let captured = nat.borrow_mut().capture.take().unwrap();
    let old = captured.iter().find(|f| src_of(f) == mapping(1) && !is_keepalive(f)).expect("a B -> A frame on tunnel 1").clone();
    assert_eq!(u32::from_be_bytes(old[ESP..ESP + 4].try_into().unwrap()), lab::spi(1, false), "tunnel 1's SPI");
    let (a0, _) = lab.counters();

    let mut forgery = old.clone();
    set_src(&mut forgery, attacker());
    let seq_low = u32::from_be_bytes(forgery[ESP + 4..ESP + 8].try_into().unwrap());
    forgery[ESP + 4..ESP + 8].copy_from_slice(&(seq_low + 100_000).to_be_bytes());
    *forgery.last_mut().unwrap() ^= 1;
    let mut replay = old.clone();
    set_src(&mut replay, attacker());
    // A NAT-keepalive (RFC 3948: one 0xff byte, nothing to authenticate)
    // from there too, to tunnel 1's port.
    let mut keepalive = old[..ESP + 1].to_vec();
    keepalive[ESP] = 0xff;
    keepalive[IP + 2..IP + 4].copy_from_slice(&((ESP + 1 - IP) as u16).to_be_bytes());
    keepalive[UDP + 4..UDP + 8].copy_from_slice(&[0, 9, 0, 0]);
    set_src(&mut keepalive, attacker());
    assert!(is_keepalive(&keepalive));
    let ka0 = lab.a.counters().keepalives_rx;
    inject(&mut lab, &[forgery, replay, keepalive]);
    assert_eq!(lab.a.counters().keepalives_rx, ka0 + 1, "the keepalive was taken as one");

    let (a1, _) = lab.counters();
    assert_eq!(a1.engine.get(DropReason::AuthFailed) - a0.engine.get(DropReason::AuthFailed), 1, "forged tag");
    let replays = |c: &braid_dataplane::counters::WorkerCounters| c.engine.get(DropReason::Replayed) + c.engine.get(DropReason::ReplayTooOld);
    assert_eq!(replays(&a1) - replays(&a0), 1, "replayed capture");
    assert_eq!(a1.tunnels[0][1].rejected - a0.tunnels[0][1].rejected, 2);
    assert_eq!(remotes_v4(&lab.a), vec![vec![mapping(0), mapping(1)]], "nothing moved");

    // The network holds one of B's packets back; B's next ones on the
    // same tunnel arrive first; then the held one comes from elsewhere.
    nat.borrow_mut().hold = Some(1);
    let rx_before = lab.a.counters().tunnels[0][1].rx.packets;
    let mut seq = 50;
    while nat.borrow().held.is_none() || lab.a.counters().tunnels[0][1].rx.packets < rx_before + 2 {
        send_one(&mut lab, &fa, &fb, seq);
        seq += 1;
        assert!(seq < 100, "tunnel 1 carried nothing");
    }
    let mut late = nat.borrow_mut().held.take().unwrap();
    set_src(&mut late, attacker());
    lab.settle(3);
    let (a2, _) = lab.counters();
    inject(&mut lab, &[late]);
    let (a3, _) = lab.counters();
    assert_eq!(a3.tunnels[0][1].rx.packets, a2.tunnels[0][1].rx.packets + 1, "the late packet is authentic and accepted");
    assert_eq!(a3.tunnels[0][1].rejected, a2.tunnels[0][1].rejected);
    assert_eq!(remotes_v4(&lab.a), vec![vec![mapping(0), mapping(1)]], "an older packet moves nothing");

    // Traffic goes on, to the real mapping.
    lab.delivered.clear();
    lab.delivered_a.clear();
    let from = seq;
    send(&mut lab, &fa, &fb, from..from + 50);
    drain(&mut lab);
    assert_eq!(tags(&mut lab.delivered), want(&fa, from..from + 50));
    assert_eq!(tags(&mut lab.delivered_a), want(&fb, from..from + 50));
    assert_eq!(nat.borrow().to_stale, 0);
    let (a, b) = lab.counters();
    assert_eq!(remote_changes(&a), [0, 0]);
    assert_eq!(remote_changes(&b), [0, 0]);
    assert_eq!(a.engine.get(DropReason::AuthFailed), 1);
    assert_eq!(replays(&a), 1);
    assert_eq!(a.drops.named(), vec![]);
    conserved(&lab, mode);
    lab.close();
}

#[test]
fn bundle_mode_forged_and_replayed_packets_move_nothing() {
    forged("ntforb", "bundle");
}

#[test]
fn plain_mode_forged_and_replayed_packets_move_nothing() {
    forged("ntforp", "plain");
}

/// Keepalives every second; liveness probes only every minute, so that
/// bundle mode's tunnels are idle too.
fn keepalive_1s(_side_a: bool, doc: &mut serde_json::Value) {
    doc["bundles"][0]["keepalive_secs"] = 1.into();
    doc["tunnel"] = serde_json::json!({"probe_interval_ms": 60_000});
}

/// Advances the lab's clock by `step` per poll for `span`; returns, per
/// tunnel of A and of B, when its `keepalives_tx` went up.
fn idle_for(lab: &mut Lab, span: u64, step: u64, mut each: impl FnMut(&mut Lab)) -> [Vec<Vec<u64>>; 2] {
    let mut times = [vec![Vec::new(); 2], vec![Vec::new(); 2]];
    let (a, b) = lab.counters();
    let mut last = [a.tunnels[0].iter().map(|t| t.keepalives_tx).collect::<Vec<_>>(), b.tunnels[0].iter().map(|t| t.keepalives_tx).collect()];
    let end = lab.now + span;
    while lab.now < end {
        lab.now += step - TICK;
        each(lab);
        lab.step();
        let (a, b) = lab.counters();
        for (side, c) in [a, b].iter().enumerate() {
            for (t, tc) in c.tunnels[0].iter().enumerate() {
                if tc.keepalives_tx != last[side][t] {
                    assert_eq!(tc.keepalives_tx, last[side][t] + 1, "one at a time");
                    times[side][t].push(lab.now);
                    last[side][t] = tc.keepalives_tx;
                }
            }
        }
    }
    times
}

/// Idle tunnels send a keepalive each interval (never sooner; bundle mode
/// may skip one around a liveness probe, which counts as sending);
/// tunnels with traffic send none; the peer counts each one received and
/// drops nothing.
fn keepalives(case: &str, mode: &str) {
    let (mut lab, nat, _g) = start(case, mode, keepalive_1s);
    let step = 10 * MS;
    let idle = idle_for(&mut lab, 5 * SECOND + SECOND / 2, step, |_| {});
    for (side, who) in [(0, "A"), (1, "B")] {
        for (t, at) in idle[side].iter().enumerate() {
            eprintln!("{mode}: {who} tunnel {t} keepalives at {:?} ms", at.iter().map(|n| n / MS).collect::<Vec<_>>());
            if mode == "plain" {
                assert_eq!(at.len(), 5, "{who} tunnel {t}: one a second");
            } else {
                assert!(at.len() >= 4, "{who} tunnel {t}: {at:?}");
            }
            let mut prev = 0;
            for &k in at {
                let gap = k - prev;
                assert!(gap >= SECOND, "{who} tunnel {t}: keepalive after {gap} ns");
                let most = if mode == "plain" { SECOND } else { 2 * SECOND };
                assert!(gap <= most + 2 * step, "{who} tunnel {t}: {gap} ns without one");
                prev = k;
            }
        }
    }
    {
        // They cross the NAT like the tunnel's ESP, to and from its ports.
        let n = nat.borrow();
        let a_sent: usize = idle[0].iter().map(Vec::len).sum();
        assert_eq!(n.keepalives_ab.len(), a_sent);
        for (src, dst) in &n.keepalives_ab {
            let t = (src.port() - B_PORT) as usize;
            assert_eq!((*src, *dst), (format!("192.0.2.1:{}", B_PORT + t as u16).parse().unwrap(), mapping(t)));
        }
        for (src, dst) in &n.keepalives_ba {
            let t = (src.port() - B_PORT) as usize;
            assert_eq!((*src, *dst), (SocketAddrV4::new(B_PRIVATE, B_PORT + t as u16), format!("192.0.2.1:{}", B_PORT + t as u16).parse().unwrap()));
        }
    }

    // A sends on both tunnels all the time: no keepalive from A; B, which
    // sends no data, goes on sending them.
    let fa = a_flows();
    let mut seq = 0;
    let busy = idle_for(&mut lab, 3 * SECOND, step, |lab| {
        let mut burst: Vec<Mbuf> = fa.iter().map(|f| lab.frame_to_a(&ip_packet(f, seq, SIZE))).collect();
        lab.gen.tx.tx_all(&mut burst, 1000);
        seq += 1;
    });
    assert_eq!(busy[0], vec![Vec::<u64>::new(); 2], "A's tunnels carried traffic");
    for (t, at) in busy[1].iter().enumerate() {
        assert!(at.len() >= 2, "B tunnel {t}: {at:?}");
    }
    drain(&mut lab);
    assert_eq!(tags(&mut lab.delivered), want(&fa, 0..seq));

    let (a, b) = lab.counters();
    let sent = |c: &braid_dataplane::counters::WorkerCounters| c.tunnels[0].iter().map(|t| t.keepalives_tx).sum::<u64>();
    assert_eq!(b.keepalives_rx, sent(&a), "B counted each of A's");
    assert_eq!(a.keepalives_rx, sent(&b), "A counted each of B's");
    assert_eq!((a.keepalives, b.keepalives), (sent(&a), sent(&b)), "every keepalive queued was sent");
    for (c, who) in [(&a, "A"), (&b, "B")] {
        assert_eq!(c.drops.named(), vec![], "{who}");
        assert_eq!(c.engine.named(), vec![], "{who}");
        assert_eq!(remote_changes(c), [0, 0], "{who}: a keepalive moves nothing");
    }
    conserved(&lab, mode);
    lab.close();
}

#[test]
fn bundle_mode_idle_tunnels_send_nat_keepalives() {
    keepalives("ntkab", "bundle");
}

#[test]
fn plain_mode_idle_tunnels_send_nat_keepalives() {
    keepalives("ntkap", "plain");
}

/// The NAT forgets a mapping idle (nothing from B) for 2.5 s. With
/// keepalives every second (in bundle mode at most 2 s apart) B's mappings
/// stay open through 10 s without data, and A's packets then reach B at the
/// first mappings; without them (`keepalive_secs: 0`) the NAT forgets both
/// and A's packets are lost to the old mappings (until B sends again).
fn mappings_kept_open(case: &str, mode: &str, keepalive: bool) {
    let edit = move |side_a: bool, doc: &mut serde_json::Value| {
        keepalive_1s(side_a, doc);
        if !keepalive {
            doc["bundles"][0]["keepalive_secs"] = 0.into();
        }
    };
    let (mut lab, nat, _g) = start(case, mode, edit);
    {
        let mut n = nat.borrow_mut();
        (n.timeout, n.now, n.last_out) = (Some(2500 * MS), lab.now, vec![lab.now; 2]);
    }
    let clock = nat.clone();
    idle_for(&mut lab, 10 * SECOND, 10 * MS, move |lab| clock.borrow_mut().now = lab.now);
    let fa = a_flows();
    for seq in 0..20 {
        nat.borrow_mut().now = lab.now;
        send_one(&mut lab, &fa, &[], seq);
    }
    drain(&mut lab);
    let (expired, to_stale) = (nat.borrow().expired, nat.borrow().to_stale);
    let got = tags(&mut lab.delivered);
    eprintln!("{mode}, keepalives {keepalive}: {expired} mappings expired, {to_stale} A -> B frames lost, {} packets delivered", got.len());
    if keepalive {
        assert_eq!((expired, to_stale), (0, 0));
        assert_eq!(got, want(&fa, 0..20));
        assert_eq!(remotes_v4(&lab.a), vec![vec![mapping(0), mapping(1)]]);
    } else {
        assert_eq!(expired, 2, "both mappings forgotten");
        assert!(to_stale > 0 && got.is_empty(), "{to_stale} lost, {} delivered", got.len());
    }
    lab.close();
}

#[test]
fn bundle_mode_keepalives_keep_nat_mappings_open() {
    mappings_kept_open("ntkob", "bundle", true);
}

#[test]
fn plain_mode_keepalives_keep_nat_mappings_open() {
    mappings_kept_open("ntkop", "plain", true);
}

#[test]
fn without_keepalives_an_idle_nat_mapping_is_lost() {
    mappings_kept_open("ntkon", "plain", false);
}

/// `keepalive_secs: 0` sends none.
#[test]
fn keepalives_can_be_turned_off() {
    let (mut lab, nat, _g) = start("ntkaoff", "plain", |_, doc| doc["bundles"][0]["keepalive_secs"] = 0.into());
    idle_for(&mut lab, 30 * SECOND, 100 * MS, |_| {});
    let (a, b) = lab.counters();
    assert_eq!((a.keepalives, b.keepalives, a.keepalives_rx, b.keepalives_rx), (0, 0, 0, 0));
    assert!(nat.borrow().keepalives_ab.is_empty() && nat.borrow().keepalives_ba.is_empty());
    lab.close();
}

/// Applies A's tables (the lab's, behind the NAT) changed by `edit`, as a
/// snapshot from the control plane would.
fn apply_a(lab: &mut Lab, mode: &str, edit: impl Fn(&mut serde_json::Value)) -> Applied {
    let (lan, wan) = (&lab.tables_a.ports[0].device, &lab.tables_a.ports[1].device);
    let mut doc: serde_json::Value = serde_json::from_str(&lab::config_json(true, (lan, wan), mode, &[1, 1], 16, 1500)).unwrap();
    behind_nat(&mut doc);
    edit(&mut doc);
    let tables = Tables::from_config(&Config::from_json_str(&doc.to_string()).unwrap()).unwrap();
    let mut registry = SaRegistry::default();
    registry.adopt(&lab.tables_a, &lab.sas_a);
    let sas = registry.for_tables(&tables).unwrap();
    let setup = worker_setup(&tables, &PortPlan::new(&tables).unwrap(), &sas, 0, true, |_| Default::default()).unwrap();
    let now = lab.now;
    lab.a.apply(setup, now).unwrap()
}

/// After a rebinding: new weights (the engine is kept) and another policy
/// (the bundle is rebuilt) keep the learned remote: A's packets still go
/// to the new mapping; a new configured remote for the tunnel wins over it.
fn tables_keep_the_learned_remote(case: &str, mode: &str) {
    let (mut lab, nat, _g) = start(case, mode, |_, _| {});
    let (fa, fb) = (a_flows(), b_flows());
    send(&mut lab, &fa, &fb, 0..20);
    nat.borrow_mut().rebind(1, rebound());
    send(&mut lab, &fa, &fb, 20..40);
    drain(&mut lab);
    assert_eq!(remotes_v4(&lab.a), vec![vec![mapping(0), rebound()]]);
    let lost = nat.borrow().to_stale;

    let kept = apply_a(&mut lab, mode, |doc| doc["bundles"][0]["tunnels"][0]["weight"] = 3.into());
    assert_eq!((kept.kept, kept.rebuilt), (1, 0));
    assert_eq!(remotes_v4(&lab.a), vec![vec![mapping(0), rebound()]], "kept engine, kept remote");
    lab.delivered.clear();
    lab.delivered_a.clear();
    send(&mut lab, &fa, &fb, 40..80);
    drain(&mut lab);
    assert_eq!(tags(&mut lab.delivered), want(&fa, 40..80));
    assert_eq!(tags(&mut lab.delivered_a), want(&fb, 40..80));

    let rebuilt = apply_a(&mut lab, mode, |doc| doc["bundles"][0]["policy"] = "round_robin".into());
    assert_eq!((rebuilt.kept, rebuilt.rebuilt), (0, 1));
    assert_eq!(remotes_v4(&lab.a), vec![vec![mapping(0), rebound()]], "rebuilt bundle, same tunnel: kept remote");
    let b_rx = |lab: &Lab| lab.b.counters().tunnels[0][1].rx.packets;
    let before = b_rx(&lab);
    send(&mut lab, &fa, &[], 80..120);
    drain(&mut lab);
    assert_eq!(nat.borrow().to_stale, lost, "nothing went to the old mapping");
    assert!(b_rx(&lab) >= before + 20, "B got tunnel 1's packets at its new mapping");
    // The rebuilt sender continues its stream: B's re-orderer drops nothing.
    assert_eq!(tags(&mut lab.delivered), want(&fa, 80..120));
    let (a, b) = lab.counters();
    assert_eq!(b.engine.named(), vec![], "{mode}: B's engine dropped");
    assert_eq!(remote_changes(&a), [0, 1], "a tunnel on the same path keeps its counters in a rebuilt bundle");

    // The operator points tunnel 1 somewhere else: the configuration wins.
    let elsewhere: SocketAddrV4 = "203.0.113.9:4600".parse().unwrap();
    let changed = apply_a(&mut lab, mode, |doc| doc["bundles"][0]["tunnels"][1]["remote"] = elsewhere.to_string().into());
    assert_eq!(changed.rebuilt, 1);
    assert_eq!(remotes_v4(&lab.a), vec![vec![mapping(0), elsewhere]]);
    lab.close();
}

#[test]
fn bundle_mode_new_tables_keep_the_learned_remote() {
    tables_keep_the_learned_remote("ntappb", "bundle");
}

#[test]
fn plain_mode_new_tables_keep_the_learned_remote() {
    tables_keep_the_learned_remote("ntappp", "plain");
}

/// A replay window that new tables rebuild (here: another window size, so
/// no window is carried over) starts above what the window it replaces
/// accepted, when the SA's high is kept (the process with `--seq-state`):
/// B -> A packets captured before the change and replayed after it are all
/// refused, none delivered; traffic goes on.
fn rebuilt_windows_refuse_old_packets(case: &str, mode: &str) {
    let (mut lab, nat, _g) = start(case, mode, |_, _| {});
    let mut registry = SaRegistry::default();
    registry.adopt(&lab.tables_a, &lab.sas_a);
    let apply = |lab: &mut Lab, registry: &mut SaRegistry, window: u64| {
        let (lan, wan) = (&lab.tables_a.ports[0].device, &lab.tables_a.ports[1].device);
        let mut doc: serde_json::Value = serde_json::from_str(&lab::config_json(true, (lan, wan), mode, &[1, 1], 16, 1500)).unwrap();
        behind_nat(&mut doc);
        doc["tunnel"] = serde_json::json!({"replay_window": window});
        let tables = Tables::from_config(&Config::from_json_str(&doc.to_string()).unwrap()).unwrap();
        let sas = registry.for_tables(&tables).unwrap();
        let highs = registry.inbound_highs(&tables);
        let setup = worker_setup(&tables, &PortPlan::new(&tables).unwrap(), &sas, 0, true, |_| Default::default()).unwrap().with_rx_highs(&highs);
        let now = lab.now;
        lab.a.apply(setup, now).unwrap()
    };
    apply(&mut lab, &mut registry, 4096);
    let (fa, fb) = (a_flows(), b_flows());
    nat.borrow_mut().capture = Some(Vec::new());
    send(&mut lab, &fa, &fb, 0..40);
    drain(&mut lab);
    let captured: Vec<Vec<u8>> = nat.borrow_mut().capture.take().unwrap().into_iter().filter(|f| !is_keepalive(f) && src_of(f).port() >= 4500).collect();
    assert!(captured.len() >= 20, "{} B -> A ESP packets captured", captured.len());
    let rebuilt = apply(&mut lab, &mut registry, 8192);
    assert_eq!(rebuilt.rebuilt, 1, "a new window size rebuilds the bundle");
    let (a0, _) = lab.counters();
    inject(&mut lab, &captured);
    drain(&mut lab);
    let (a1, _) = lab.counters();
    let replays = |c: &braid_dataplane::counters::WorkerCounters| c.engine.get(DropReason::Replayed) + c.engine.get(DropReason::ReplayTooOld);
    assert_eq!(replays(&a1) - replays(&a0), captured.len() as u64, "every captured packet refused");
    assert_eq!(a1.delivered, a0.delivered, "nothing delivered again");
    send(&mut lab, &fa, &fb, 40..60);
    drain(&mut lab);
    assert!(lab.counters().0.delivered > a1.delivered, "traffic goes on");
    lab.close();
}

#[test]
fn bundle_mode_rebuilt_windows_refuse_old_packets() {
    rebuilt_windows_refuse_old_packets("ntrwb", "bundle");
}

#[test]
fn plain_mode_rebuilt_windows_refuse_old_packets() {
    rebuilt_windows_refuse_old_packets("ntrwp", "plain");
}
