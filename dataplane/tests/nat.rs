//! NAT at the tunnel endpoint, end to end through two gateways on net_ring
//! ports (no PCI): A translates its LAN's inner packets before they are
//! sprayed over the bundle's tunnels and translates the replies after B's
//! packets were re-ordered. B's side sees only pool addresses; every reply
//! finds its original host and port; a flow keeps one mapping whatever
//! tunnels carried its packets; sessions expire, closed TCP ones within
//! their transitory timeout; port forwards, table exhaustion and ICMP
//! errors; new tables keep the sessions unless the rules changed. Every packet is counted once (`lab::assert_conserved`).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use braid_dataplane::config::{Config, Tables};
use braid_dataplane::gateway::{worker_setup, PortPlan};
use braid_dataplane::lab::traffic::{ip_packet, reassembled_v4, tag, Family, Flow, L4};
use braid_dataplane::counters::DpDrop;
use braid_dataplane::lab::{self, Lab, LabOptions};
use braid_dpdk::{Mbuf, BURST};
use braid_nat::{NatDrop, Timeouts, SECOND};
use braid_tunnel::wire::checksum;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
const SERVER_PORT: u16 = 5201;

fn pool(n: u8) -> Vec<Ipv4Addr> {
    (1..=n).map(|i| Ipv4Addr::new(100, 64, 0, i)).collect()
}

/// NAT rules on A (`nat`), and on B a route back to A for 100.64.0.0/24
/// (the pool and forward addresses).
fn options(nat: serde_json::Value, max_sessions: Option<usize>, timeouts: Option<Timeouts>) -> LabOptions {
    LabOptions {
        edit: Some(Box::new(move |side_a, doc| {
            if side_a {
                doc["nat"] = nat.clone();
            } else {
                doc["routes"].as_array_mut().unwrap().push(serde_json::json!({"prefix": "100.64.0.0/24", "peer": "peer"}));
            }
        })),
        nat_max_sessions: max_sessions,
        nat_timeouts: timeouts,
        ..Default::default()
    }
}

fn snat_rule(pool_n: u8, ports: &str) -> serde_json::Value {
    let pool: Vec<String> = pool(pool_n).iter().map(|a| a.to_string()).collect();
    serde_json::json!({"snat": [{"name": "lan", "match": "10.1.0.0/16", "peer": "peer", "pool": pool, "ports": ports}]})
}

fn start(case: &str, weights: &[u32], opts: LabOptions) -> (Lab, std::sync::MutexGuard<'static, ()>) {
    let (_eal, guard) = braid_dpdk::testing::eal(&[], 1536);
    let mut lab = Lab::with(case, "bundle", weights, 16, 1500, opts);
    lab.read_a_lan = true;
    (lab, guard)
}

/// A UDP (or TCP) packet `src` -> `dst` tagged (id, seq).
fn packet(l4: L4, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), id: u32, seq: u32) -> Vec<u8> {
    let mut f = Flow::a_to_b(id, Family::V4, l4);
    (f.src4, f.sport, f.dst4, f.dport) = (src.0, src.1, dst.0, dst.1);
    ip_packet(&f, seq, 0)
}

/// (src, sport, dst, dport) of an IPv4 UDP/TCP packet without options.
fn endpoints(ip: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let a = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let p = |at: usize| u16::from_be_bytes([ip[at], ip[at + 1]]);
    ((a(12), p(20)), (a(16), p(22)))
}

/// Whether the IPv4 header and UDP/TCP checksums of `ip` verify.
fn checksums_ok(ip: &[u8]) -> bool {
    let ((s, _), (d, _)) = endpoints(ip);
    let l4 = &ip[20..];
    checksum::verifies(&ip[..20])
        && checksum::combine(&[checksum::pseudo_header_v4(s, d, ip[9], l4.len() as u16), checksum::sum(l4)]) == 0xffff
}

/// Sends `frames` into A's LAN, 32 per step.
fn send_a(lab: &mut Lab, frames: impl IntoIterator<Item = Vec<u8>>) {
    send_a_by(lab, frames, BURST);
}

/// [`send_a`], `per_step` (at most [`BURST`]) packets a step.
fn send_a_by(lab: &mut Lab, frames: impl IntoIterator<Item = Vec<u8>>, per_step: usize) {
    let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
    for ip in frames {
        burst.push(lab.frame_to_a(&ip));
        if burst.len() == per_step {
            lab.gen.tx.tx_all(&mut burst, 1000);
            assert!(burst.is_empty(), "A's LAN ring full");
            lab.step();
        }
    }
    lab.gen.tx.tx_all(&mut burst, 1000);
    assert!(burst.is_empty());
    lab.step();
}

/// Sends `frames` into B's LAN (from B's host), 32 per step.
fn send_b(lab: &mut Lab, frames: impl IntoIterator<Item = Vec<u8>>) {
    let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
    for ip in frames {
        burst.push(lab.frame_to_b(&ip));
        if burst.len() == BURST {
            lab.check.tx.tx_all(&mut burst, 1000);
            assert!(burst.is_empty(), "B's LAN ring full");
            lab.step();
        }
    }
    lab.check.tx.tx_all(&mut burst, 1000);
    assert!(burst.is_empty());
    lab.step();
}

/// Flow `i`: host 10.1.(h / 250).(1 + h % 250), h = i / 100, port 20000 +
/// i % 100, to the server behind B.
fn flow_src(i: u32) -> (Ipv4Addr, u16) {
    let h = i / 100;
    (Ipv4Addr::new(10, 1, (h / 250) as u8, 1 + (h % 250) as u8), 20000 + (i % 100) as u16)
}

/// SNAT of many flows from many hosts through a bundle of 4 tunnels with
/// per-packet spraying: B sees only pool addresses; each flow keeps one
/// external endpoint for all its packets, whichever tunnels carried them
/// (every bundle frame A sends is captured and opened with B's SAs: most
/// flows' packets crossed several tunnels, each inside the flow's one
/// mapping); no two flows share one; every reply, in two rounds with
/// outbound traffic between them, comes back to its original host and
/// port with correct checksums; the tunnels all carried traffic.
#[test]
fn snat_many_flows_through_a_sprayed_bundle() {
    use braid_tunnel::bundle::frame::{Frame, Record};
    use braid_tunnel::sa::{InboundSa, InboundSaPair};
    let flows: u32 = std::env::var("BRAID_NAT_FLOWS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let per_flow = 3;
    let t0 = Instant::now();
    let (mut lab, _g) = start("snat", &[1, 1, 1, 1], options(snat_rule(4, "1024-65535"), None, None));
    lab.capture = Some(Vec::new());
    lab.capture_limit = usize::MAX;
    let pool: HashSet<Ipv4Addr> = pool(4).into_iter().collect();
    let mut mapping: HashMap<u32, (Ipv4Addr, u16)> = HashMap::with_capacity(flows as usize);
    let mut owner: HashMap<(Ipv4Addr, u16), u32> = HashMap::with_capacity(flows as usize);
    let mut seen = 0u64;
    let mut check_b = |lab: &mut Lab| {
        for fr in lab.delivered.drain(..) {
            let ip = &fr[14..];
            let (src, dst) = endpoints(ip);
            let (id, _) = tag(ip).expect("a test packet");
            assert!(pool.contains(&src.0), "flow {id}: B saw source {src:?}");
            assert_eq!(dst, (SERVER, SERVER_PORT));
            assert!(checksums_ok(ip), "flow {id}: checksums");
            let m = *mapping.entry(id).or_insert(src);
            assert_eq!(m, src, "flow {id} changed its mapping");
            let o = *owner.entry(src).or_insert(id);
            assert_eq!(o, id, "{src:?} is used by flows {o} and {id}");
            seen += 1;
        }
    };
    // Round r sends packet r of every flow: a flow's packets are far apart,
    // in different bursts, frames and tunnels. The bundle sprays frames
    // round robin over its 4 tunnels (weights 1:1:1:1; liveness probes do
    // not move the rotation). A round goes 16 packets a step, one frame
    // each (16 x 48 bytes), so it is ceil(flows / 16) frames; one or two
    // more packets of flow 0 (seq 100.., a frame each) after it make the
    // next round start where no flow's previous packet went.
    let round_frames = flows.div_ceil(16);
    let extra_per_round = if round_frames % 4 == 3 { 2 } else { 1 };
    let extra = per_flow * extra_per_round;
    for seq in 0..per_flow {
        let pkts = (0..flows).map(|i| packet(L4::Udp, flow_src(i), (SERVER, SERVER_PORT), i, seq));
        let mut chunk = Vec::with_capacity(4096);
        for p in pkts {
            chunk.push(p);
            if chunk.len() == 4096 {
                send_a_by(&mut lab, chunk.drain(..), 16);
                check_b(&mut lab);
            }
        }
        send_a_by(&mut lab, chunk.drain(..), 16);
        check_b(&mut lab);
        for k in 0..extra_per_round {
            send_a(&mut lab, [packet(L4::Udp, flow_src(0), (SERVER, SERVER_PORT), 0, 100 + 2 * seq + k)]);
            check_b(&mut lab);
        }
    }
    lab.settle(20);
    check_b(&mut lab);
    assert_eq!(seen, flows as u64 * per_flow as u64 + extra as u64, "B received every packet");
    assert_eq!(mapping.len(), flows as usize);
    let sent = Instant::now();

    // On the WAN: every bundle frame A sent, opened with B's inbound SAs;
    // each whole inner packet's flow, source and tunnel.
    let frames = lab.capture.take().expect("captured");
    let mut sas: Vec<InboundSaPair> =
        lab.tables_b.bundles[0].tunnels.iter().map(|t| InboundSaPair::new(InboundSa::new(&t.sa_in, 1 << 16).unwrap())).collect();
    let mut tunnels_of: HashMap<u32, HashSet<usize>> = HashMap::with_capacity(flows as usize);
    let mut on_wan = 0u64;
    for mut f in frames {
        let t = (u16::from_be_bytes([f[36], f[37]]) - 4500) as usize;
        let o = sas[t].open(&mut f[42..], 0).expect("B's SA opens every frame A sent");
        let frame = Frame::parse(&f[42 + o.payload.start..42 + o.payload.end]).expect("a bundle frame");
        for rec in frame.records() {
            let Record::Data(d) = rec.expect("well-formed records") else { continue };
            let Some((id, _)) = d.is_whole().then(|| tag(d.data)).flatten() else { continue };
            let (src, _) = endpoints(d.data);
            assert_eq!(src, mapping[&id], "flow {id}: another mapping on tunnel {t}");
            tunnels_of.entry(id).or_default().insert(t);
            on_wan += 1;
        }
    }
    assert_eq!(on_wan, flows as u64 * per_flow as u64 + extra as u64, "every packet seen whole on the WAN");
    let spread = tunnels_of.values().filter(|ts| ts.len() > 1).count();
    let three = tunnels_of.values().filter(|ts| ts.len() > 2).count();
    eprintln!("{spread} of {flows} flows crossed several tunnels, {three} three or more");
    assert_eq!(tunnels_of.len(), flows as usize);
    assert_eq!(spread, flows as usize, "every flow crossed several tunnels");

    // Replies from the server to each flow's external endpoint, in two
    // rounds with a packet of every flow out between them.
    let mut back = 0u64;
    for round in 0..2u32 {
        let want_seq = 1000 + round;
        let replies = (0..flows).map(|i| packet(L4::Udp, (SERVER, SERVER_PORT), mapping[&i], i, want_seq));
        let mut check_a = |lab: &mut Lab| {
            for fr in lab.delivered_a.drain(..) {
                let ip = &fr[14..];
                let (id, seq) = tag(ip).expect("a test packet");
                assert_eq!(seq, want_seq);
                let (src, dst) = endpoints(ip);
                assert_eq!(src, (SERVER, SERVER_PORT));
                assert_eq!(dst, flow_src(id), "reply {id} reached the wrong host or port");
                assert!(checksums_ok(ip), "reply {id}: checksums");
                back += 1;
            }
        };
        let mut chunk = Vec::with_capacity(4096);
        for r in replies {
            chunk.push(r);
            if chunk.len() == 4096 {
                send_b(&mut lab, chunk.drain(..));
                check_a(&mut lab);
            }
        }
        send_b(&mut lab, chunk.drain(..));
        lab.settle(20);
        check_a(&mut lab);
        assert_eq!(back, flows as u64 * (round as u64 + 1), "every reply of round {round} found its flow");
        if round == 0 {
            send_a(&mut lab, (0..flows).map(|i| packet(L4::Udp, flow_src(i), (SERVER, SERVER_PORT), i, per_flow)));
            lab.settle(20);
            let mut again = 0;
            for fr in lab.delivered.drain(..) {
                let (id, _) = tag(&fr[14..]).expect("a test packet");
                assert_eq!(endpoints(&fr[14..]).0, mapping[&id], "flow {id} changed its mapping");
                again += 1;
            }
            assert_eq!(again, flows, "B received every packet");
        }
    }

    let (a, b) = lab.counters();
    eprintln!(
        "{flows} flows x {per_flow} packets out in {:.1} s, then 2 x {flows} replies and {flows} packets out in {:.1} s; A nat {:?}; tunnels {:?}",
        (sent - t0).as_secs_f64(),
        sent.elapsed().as_secs_f64(),
        a.nat,
        a.tunnels[0].iter().map(|t| t.tx.packets).collect::<Vec<_>>()
    );
    let frames: u64 = a.tunnels[0].iter().map(|t| t.tx.packets).sum();
    assert!(a.tunnels[0].iter().all(|t| t.tx.packets > frames / 8), "all four tunnels carried the flows");
    assert_eq!(a.nat.out_translated, flows as u64 * (per_flow as u64 + 1) + extra as u64);
    assert_eq!(a.nat.in_translated, 2 * flows as u64);
    assert_eq!((a.nat.sessions, a.nat.sessions_created, a.nat.mappings_created), (flows as u64, flows as u64, flows as u64));
    assert_eq!(a.nat.out_dropped() + a.nat.in_dropped(), 0);
    assert_eq!(b.nat, Default::default(), "B has no NAT rule: no NAT at all");
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// The same, seen on the WAN: in plain mode (one ESP packet per inner
/// packet, a tunnel picked per packet) every ESP packet A sends is captured
/// and opened with B's inbound SAs. A flow's packets travel over several
/// tunnels, and all of them carry the flow's one external endpoint.
#[test]
fn one_mapping_per_flow_whatever_tunnel_carried_it() {
    use braid_tunnel::plain;
    use braid_tunnel::sa::{InboundSa, InboundSaPair};
    let (flows, per_flow) = (5001u32, 4u32);
    let (mut lab, _g) = {
        let (_eal, guard) = braid_dpdk::testing::eal(&[], 1536);
        (Lab::with("nwan", "plain", &[1, 1, 1, 1], 16, 1500, options(snat_rule(4, "1024-65535"), None, None)), guard)
    };
    lab.capture = Some(Vec::new());
    lab.capture_limit = usize::MAX;
    for seq in 0..per_flow {
        send_a(&mut lab, (0..flows).map(|i| packet(L4::Udp, flow_src(i), (SERVER, SERVER_PORT), i, seq)));
        lab.delivered.clear();
    }
    lab.settle(5);
    let frames = lab.capture.take().unwrap();
    let mut sas: Vec<InboundSaPair> =
        lab.tables_b.bundles[0].tunnels.iter().map(|t| InboundSaPair::new(InboundSa::new(&t.sa_in, 4096).unwrap())).collect();
    // Flow -> (external endpoint, tunnels that carried it).
    let mut seen: HashMap<u32, ((Ipv4Addr, u16), HashSet<usize>)> = HashMap::new();
    let mut opened = 0;
    for mut f in frames {
        let dport = u16::from_be_bytes([f[36], f[37]]);
        let t = (dport - 4500) as usize;
        let o = plain::decapsulate(&mut sas[t], &mut f[42..], 0).expect("B's SA opens it");
        let ip = &f[42 + o.payload.start..42 + o.payload.end];
        let Some((id, _)) = tag(ip) else { continue };
        let (src, _) = endpoints(ip);
        let e = seen.entry(id).or_insert((src, HashSet::new()));
        assert_eq!(e.0, src, "flow {id}: another mapping on tunnel {t}");
        e.1.insert(t);
        opened += 1;
    }
    assert_eq!(opened, flows * per_flow);
    assert_eq!(seen.len(), flows as usize);
    let spread = seen.values().filter(|(_, ts)| ts.len() > 1).count();
    eprintln!("{spread} of {flows} flows crossed several tunnels");
    assert!(spread * 10 >= flows as usize * 9, "most flows crossed several tunnels ({spread})");
    let ext: HashSet<(Ipv4Addr, u16)> = seen.values().map(|(e, _)| *e).collect();
    assert_eq!(ext.len(), flows as usize, "no two flows share an external endpoint");
    let (a, b) = lab.counters();
    lab::assert_conserved(&a, "A", true);
    lab::assert_conserved(&b, "B", true);
    lab.close();
}

/// A UDP session idle past its timeout is closed: its reply is dropped at
/// A and counted (`nat_in_drop/no_session`); the same flow sending again
/// gets a session anew; idle polls sweep the table empty.
#[test]
fn sessions_expire_and_late_replies_are_dropped() {
    let timeouts = Timeouts { udp: 2 * SECOND, ..Timeouts::default() };
    let (mut lab, _g) = start("nexp", &[1, 1], options(snat_rule(1, "1024-65535"), Some(1000), Some(timeouts)));
    let n = 50;
    send_a(&mut lab, (0..n).map(|i| packet(L4::Udp, flow_src(i), (SERVER, SERVER_PORT), i, 0)));
    lab.settle(5);
    let ext: Vec<(Ipv4Addr, u16)> = lab.delivered.drain(..).map(|f| endpoints(&f[14..]).0).collect();
    assert_eq!(ext.len(), n as usize);
    // In time: the replies come back (and restart the timers: each
    // session's deadline is 2 s after A took its reply, which was within
    // the 5 polls before `replied`).
    lab.now += SECOND;
    send_b(&mut lab, (0..n).map(|i| packet(L4::Udp, (SERVER, SERVER_PORT), ext[i as usize], i, 1)));
    lab.settle(5);
    assert_eq!(lab.delivered_a.drain(..).count(), n as usize);
    let replied = lab.now;
    // 20 ms before the deadline: the first half's replies still pass
    // (and restart those sessions' timers).
    let half = n / 2;
    lab.now = replied + 2 * SECOND - 20 * TICK_MS;
    send_b(&mut lab, (0..half).map(|i| packet(L4::Udp, (SERVER, SERVER_PORT), ext[i as usize], i, 2)));
    lab.settle(5);
    assert_eq!(lab.delivered_a.drain(..).count(), half as usize, "replies just before the timeout");
    // Past the deadline: the idle polls close the second half's sessions
    // (before any reply could close them on lookup)...
    lab.now = replied + 2 * SECOND + TICK_MS;
    lab.settle(50);
    let a = lab.counters().0;
    assert_eq!((a.nat.sessions_expired, a.nat.sessions), ((n - half) as u64, half as u64), "idle polls swept the table");
    // ...and their late replies are dropped.
    send_b(&mut lab, (half..n).map(|i| packet(L4::Udp, (SERVER, SERVER_PORT), ext[i as usize], i, 2)));
    lab.settle(5);
    assert_eq!(lab.delivered_a.len(), 0, "late replies are dropped");
    let (a, b) = lab.counters();
    assert_eq!(a.nat.drop_count(false, NatDrop::NoSession), (n - half) as u64);
    // The first half expires in its turn.
    lab.now += 2 * SECOND;
    lab.settle(50);
    let a = lab.counters().0;
    assert_eq!((a.nat.sessions_expired, a.nat.sessions), (n as u64, 0), "idle polls swept the table");
    // The flow starts again: a new session.
    send_a(&mut lab, (0..1).map(|i| packet(L4::Udp, flow_src(i), (SERVER, SERVER_PORT), i, 3)));
    lab.settle(5);
    assert_eq!(lab.delivered.len(), 1);
    assert_eq!(lab.counters().0.nat.sessions, 1);
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

const TICK_MS: u64 = 1_000_000;

/// Port forwards: a packet from B's side to A's forward address and port
/// reaches the internal host behind A (UDP and TCP), and the internal
/// host's reply leaves with the forward's address and port; a packet to an
/// address the NAT owns with no session or forward is dropped and counted.
#[test]
fn port_forward_reaches_the_internal_host_and_the_reply_goes_back() {
    let fwd = Ipv4Addr::new(100, 64, 0, 9);
    let web = Ipv4Addr::new(10, 1, 0, 50);
    let nat = serde_json::json!({
        "snat": [{"name": "lan", "match": "10.1.0.0/16", "pool": ["100.64.0.1"]}],
        "dnat": [
            {"name": "dns", "external": "100.64.0.9", "protocol": "udp", "port": 5353, "internal": "10.1.0.50", "internal_port": 53},
            {"name": "web", "external": "100.64.0.9", "protocol": "tcp", "port": 8080, "internal": "10.1.0.50", "internal_port": 80}
        ]
    });
    let (mut lab, _g) = start("ndnat", &[1, 1, 1], options(nat, None, None));
    let client = (Ipv4Addr::new(10, 2, 0, 7), 40000);
    for (id, l4, port, internal_port) in [(1, L4::Udp, 5353, 53), (2, L4::Tcp, 8080, 80)] {
        send_b(&mut lab, [packet(l4, client, (fwd, port), id, 0)]);
        lab.settle(5);
        let got: Vec<Vec<u8>> = lab.delivered_a.drain(..).collect();
        assert_eq!(got.len(), 1, "{l4:?}: the forward reached A's LAN");
        let ip = &got[0][14..];
        assert_eq!(endpoints(ip), (client, (web, internal_port)), "{l4:?}");
        assert!(checksums_ok(ip));
        assert_eq!(got[0][0..6], lab::mac(lab::A_HOST_MAC));
        // The internal host answers.
        send_a(&mut lab, [packet(l4, (web, internal_port), client, id, 1)]);
        lab.settle(5);
        let got: Vec<Vec<u8>> = lab.delivered.drain(..).collect();
        assert_eq!(got.len(), 1, "{l4:?}: the reply reached B's LAN");
        let ip = &got[0][14..];
        assert_eq!(endpoints(ip), ((fwd, port), client), "{l4:?}: the reply leaves as the forward");
        assert!(checksums_ok(ip));
        assert_eq!(tag(ip), Some((id, 1)));
    }
    // Nothing forwarded on this port, no session: filtered.
    send_b(&mut lab, [packet(L4::Udp, client, (fwd, 9999), 3, 0)]);
    lab.settle(5);
    assert!(lab.delivered_a.is_empty());
    let (a, b) = lab.counters();
    assert_eq!(a.nat.drop_count(false, NatDrop::NoSession), 1);
    assert_eq!((a.nat.in_translated, a.nat.out_translated), (2, 2));
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// NPTv6 on both gateways (RFC 6296): A's hosts (fd00:1::/48) appear on
/// the tunnel as 2001:db8:a::/48, B's (fd00:2::/48) as 2001:db8:b::/48.
/// A host reaches B's host at its external address and the reply comes
/// back to it: each address is swapped for its twin of the other prefix,
/// with every UDP and TCP checksum still right though none was touched,
/// and an address that cannot be mapped (subnet 0xffff) is dropped and
/// counted.
#[test]
fn nptv6_translates_prefixes_both_ways_without_touching_checksums() {
    use std::net::Ipv6Addr;
    let opts = LabOptions {
        edit: Some(Box::new(|side_a, doc| {
            let (int, ext, other) = if side_a {
                ("fd00:1::/48", "2001:db8:a::/48", "2001:db8:b::/48")
            } else {
                ("fd00:2::/48", "2001:db8:b::/48", "2001:db8:a::/48")
            };
            doc["nat"] = serde_json::json!({"nptv6": [{"name": "site", "internal": int, "external": ext, "peer": "peer"}]});
            doc["routes"].as_array_mut().unwrap().push(serde_json::json!({"prefix": other, "peer": "peer"}));
        })),
        ..Default::default()
    };
    let (mut lab, _g) = start("nnpt6", &[1, 1, 1], opts);
    let v6 = |ip: &[u8], at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).unwrap());
    // The ones'-complement sum of an address: what NPTv6 keeps.
    let addr_sum = |a: Ipv6Addr| checksum::sum(&a.octets());
    let l4_ok = |ip: &[u8]| {
        let (s, d) = (v6(ip, 8), v6(ip, 24));
        checksum::combine(&[checksum::pseudo_header_v6(s, d, ip[6], (ip.len() - 40) as u32), checksum::sum(&ip[40..])]) == 0xffff
    };
    let host_a: Ipv6Addr = "fd00:1:0:7::5".parse().unwrap();
    let host_b: Ipv6Addr = "fd00:2:0:3::1".parse().unwrap();
    // B's host as A's hosts reach it: 2001:db8:b:X::1, X chosen so that
    // the sum is unchanged (RFC 6296 section 3.2), worked out here from
    // the sums alone.
    let ext_b = {
        let mut w = "2001:db8:b:0::1".parse::<Ipv6Addr>().unwrap().segments();
        let want = addr_sum(host_b);
        w[3] = (0..=0xfffe).find(|&x| { w[3] = x; addr_sum(Ipv6Addr::from(w)) == want }).unwrap();
        Ipv6Addr::from(w)
    };
    for (id, l4) in [(1, L4::Udp), (2, L4::Tcp)] {
        let mut f = Flow::a_to_b(id, Family::V6, l4);
        (f.src6, f.dst6) = (host_a, ext_b);
        send_a(&mut lab, [ip_packet(&f, 0, 0)]);
        lab.settle(5);
        let got: Vec<Vec<u8>> = lab.delivered.drain(..).collect();
        assert_eq!(got.len(), 1, "{l4:?}: delivered to B's host");
        let ip = &got[0][14..];
        let seen_src = v6(ip, 8);
        assert_eq!(v6(ip, 24), host_b, "{l4:?}: B took its external address back to the host's");
        assert_eq!(seen_src.segments()[..3], [0x2001, 0xdb8, 0xa], "{l4:?}: A's host shows as 2001:db8:a::/48");
        assert_eq!(seen_src.segments()[4..], host_a.segments()[4..], "{l4:?}: the interface id stays");
        assert_eq!(addr_sum(seen_src), addr_sum(host_a), "{l4:?}: checksum-neutral");
        assert!(l4_ok(ip), "{l4:?}: the checksum verifies though NPTv6 never touched it");
        assert_eq!(tag(ip), Some((id, 0)));
        // B's host answers the address it saw.
        let mut r = Flow::a_to_b(id, Family::V6, l4);
        (r.src6, r.dst6, r.sport, r.dport) = (host_b, seen_src, f.dport, f.sport);
        send_b(&mut lab, [ip_packet(&r, 1, 0)]);
        lab.settle(5);
        let got: Vec<Vec<u8>> = lab.delivered_a.drain(..).collect();
        assert_eq!(got.len(), 1, "{l4:?}: the reply reached A's host");
        let ip = &got[0][14..];
        assert_eq!((v6(ip, 8), v6(ip, 24)), (ext_b, host_a), "{l4:?}");
        assert!(l4_ok(ip));
        assert_eq!(tag(ip), Some((id, 1)));
    }
    // Subnet 0xffff cannot be mapped: dropped, counted.
    let mut f = Flow::a_to_b(3, Family::V6, L4::Udp);
    (f.src6, f.dst6) = ("fd00:1:0:ffff::5".parse().unwrap(), ext_b);
    send_a(&mut lab, [ip_packet(&f, 0, 0)]);
    lab.settle(5);
    assert!(lab.delivered.is_empty());
    let (a, b) = lab.counters();
    assert_eq!(a.nat.drop_count(true, NatDrop::NptUnmappable), 1);
    assert_eq!((a.nat.out_translated, a.nat.in_translated), (2, 2));
    assert_eq!((b.nat.out_translated, b.nat.in_translated), (2, 2));
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// A full session table and an exhausted port range: new flows are
/// dropped and counted (`sessions_full`, `ports_exhausted`), the table
/// stays at its bound, flows that have a session keep working.
#[test]
fn nat_table_exhaustion_is_counted_and_bounded() {
    // 100 sessions per worker, 1000 ports.
    let (mut lab, _g) = start("nfull", &[1, 1], options(snat_rule(1, "2000-2999"), Some(100), None));
    send_a(&mut lab, (0..300).map(|i| packet(L4::Udp, flow_src(i), (SERVER, SERVER_PORT), i, 0)));
    lab.settle(5);
    assert_eq!(lab.delivered.drain(..).count(), 100);
    let (a, _) = lab.counters();
    assert_eq!(a.nat.drop_count(true, NatDrop::SessionsFull), 200);
    assert_eq!(a.nat.sessions, 100);
    // The first 100 flows still go through.
    send_a(&mut lab, (0..100).map(|i| packet(L4::Udp, flow_src(i), (SERVER, SERVER_PORT), i, 1)));
    lab.settle(5);
    assert_eq!(lab.delivered.drain(..).count(), 100);
    let (a, b) = lab.counters();
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();

    // 10 ports, room for 1000 sessions: the 11th internal endpoint finds
    // no port.
    let (mut lab, _g2) = {
        drop(_g);
        start("nport", &[1, 1], options(snat_rule(1, "2000-2009"), Some(1000), None))
    };
    send_a(&mut lab, (0..50).map(|i| packet(L4::Udp, flow_src(i), (SERVER, SERVER_PORT), i, 0)));
    lab.settle(5);
    let ports: HashSet<u16> = lab.delivered.drain(..).map(|f| endpoints(&f[14..]).0 .1).collect();
    assert_eq!(ports.len(), 10);
    assert!(ports.iter().all(|p| (2000..=2009).contains(p)));
    let (a, b) = lab.counters();
    assert_eq!(a.nat.drop_count(true, NatDrop::PortsExhausted), 40);
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// An ICMP error (port unreachable) from B's side about a translated
/// packet comes back to the internal host with the outer destination,
/// the quoted source address and port and every checksum translated; an
/// error quoting garbage is dropped and counted.
#[test]
fn icmp_errors_about_nated_packets_are_translated_back() {
    let (mut lab, _g) = start("nicmp", &[1, 1], options(snat_rule(1, "1024-65535"), None, None));
    let host = (Ipv4Addr::new(10, 1, 0, 5), 3333);
    let out = packet(L4::Udp, host, (SERVER, SERVER_PORT), 7, 0);
    send_a(&mut lab, [out.clone()]);
    lab.settle(5);
    let seen = lab.delivered.drain(..).next().expect("B got the packet")[14..].to_vec();
    let (ext, _) = endpoints(&seen);
    // The server's ICMP port unreachable, quoting what it received.
    let icmp = |quote: &[u8]| {
        let mut p = vec![0u8; 20 + 8 + quote.len()];
        p[..20].copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[12..16].copy_from_slice(&SERVER.octets());
        p[16..20].copy_from_slice(&ext.0.octets());
        let c = !checksum::sum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20] = 3;
        p[21] = 3;
        p[28..].copy_from_slice(quote);
        let c = !checksum::sum(&p[20..]);
        p[22..24].copy_from_slice(&c.to_be_bytes());
        p
    };
    send_b(&mut lab, [icmp(&seen[..28])]);
    lab.settle(5);
    let got: Vec<Vec<u8>> = lab.delivered_a.drain(..).collect();
    assert_eq!(got.len(), 1, "the error reached A's LAN");
    let ip = &got[0][14..];
    assert!(checksum::verifies(&ip[..20]) && checksum::verifies(&ip[20..]), "IPv4 and ICMP checksums");
    assert_eq!((&ip[12..16], &ip[16..20]), (&SERVER.octets()[..], &host.0.octets()[..]));
    let quoted = &ip[28..];
    assert_eq!(endpoints(quoted), (host, (SERVER, SERVER_PORT)), "the quote names the internal host");
    assert!(checksum::verifies(&quoted[..20]));
    assert_eq!(&quoted[..28], &out[..28], "the quote is what the host sent");
    // Errors quoting garbage: nothing, 4 bytes, no IPv4 header, a header
    // cut short, a header without the 8 bytes of UDP after it...
    let garbage: Vec<Vec<u8>> = vec![vec![], vec![0x45; 4], vec![0xff; 8], seen[..19].to_vec(), seen[..27].to_vec()];
    for g in &garbage {
        send_b(&mut lab, [icmp(g)]);
    }
    // ...and a well-formed quote of a flow the NAT never mapped (another
    // external port of the pool).
    let mut unknown = seen[..28].to_vec();
    unknown[20..22].copy_from_slice(&ext.1.wrapping_add(1).max(1024).to_be_bytes());
    send_b(&mut lab, [icmp(&unknown)]);
    lab.settle(5);
    assert!(lab.delivered_a.is_empty());
    let (a, b) = lab.counters();
    assert_eq!(a.nat.icmp_errors_translated, 1);
    assert_eq!(a.nat.drop_count(false, NatDrop::IcmpBadQuote), garbage.len() as u64, "{:?}", a.nat);
    assert_eq!(a.nat.drop_count(false, NatDrop::IcmpNoSession), 1, "{:?}", a.nat);
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// Plain mode's own ICMP "fragmentation needed" for a too-big packet with
/// DF set quotes the translated packet: it goes through the inbound NAT
/// like a reply and reaches the internal host, quote and all translated.
#[test]
fn the_gateways_own_icmp_too_big_reaches_the_internal_host() {
    let (mut lab, _g) = {
        let (_eal, guard) = braid_dpdk::testing::eal(&[], 1536);
        (Lab::with("ntoobig", "plain", &[1], 16, 1500, options(snat_rule(1, "1024-65535"), None, None)), guard)
    };
    lab.read_a_lan = true;
    let host = (Ipv4Addr::new(10, 1, 0, 5), 3333);
    let mut big = packet(L4::Udp, host, (SERVER, SERVER_PORT), 1, 0);
    // 3000 bytes with DF: too big for the 1500-byte WAN.
    let mut f = Flow::a_to_b(1, Family::V4, L4::Udp);
    (f.src4, f.sport, f.dst4, f.dport) = (host.0, host.1, SERVER, SERVER_PORT);
    big = {
        let _ = big;
        let mut p = ip_packet(&f, 0, 3000);
        p[6] |= 0x40;
        p[10..12].copy_from_slice(&[0, 0]);
        let c = !checksum::sum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    };
    send_a(&mut lab, [big.clone()]);
    lab.settle(3);
    let got: Vec<Vec<u8>> = lab.delivered_a.drain(..).collect();
    assert_eq!(got.len(), 1, "one ICMP error");
    let ip = &got[0][14..];
    assert_eq!((ip[9], ip[20], ip[21]), (1, 3, 4));
    assert_eq!(&ip[16..20], &host.0.octets()[..], "to the internal host");
    assert!(checksum::verifies(&ip[..20]) && checksum::verifies(&ip[20..]));
    assert_eq!(&ip[28..56], &big[..28], "the quote is what the host sent");
    let (a, b) = lab.counters();
    assert_eq!((a.icmp_sent, a.nat.icmp_errors_translated), (1, 1));
    lab::assert_conserved(&a, "A", true);
    lab::assert_conserved(&b, "B", true);
    lab.close();
}

/// New tables with the same NAT rules keep A's shard (a reply to a flow
/// translated before still comes back); changed rules build a new shard
/// and the old sessions are gone (the reply is dropped, counted).
#[test]
fn new_tables_keep_sessions_unless_the_rules_change() {
    let (mut lab, _g) = start("napply", &[1, 1], options(snat_rule(2, "1024-65535"), None, None));
    let tables = |lab: &Lab, nat: serde_json::Value, extra_route: bool| {
        let (ln, wn) = (&lab.tables_a.ports[0].device, &lab.tables_a.ports[1].device);
        let mut doc: serde_json::Value = serde_json::from_str(&lab::config_json(true, (ln, wn), "bundle", &[1, 1], 16, 1500)).unwrap();
        doc["nat"] = nat;
        if extra_route {
            doc["routes"].as_array_mut().unwrap().push(serde_json::json!({"prefix": "10.3.0.0/16", "peer": "peer"}));
        }
        Tables::from_config(&Config::from_json_str(&doc.to_string()).unwrap()).unwrap()
    };
    let apply = |lab: &mut Lab, t: &Tables| {
        let setup = worker_setup(t, &PortPlan::new(t).unwrap(), &lab.sas_a, 0, true, |_| Default::default()).unwrap();
        let now = lab.now;
        lab.a.apply(setup, now).unwrap()
    };
    let round = |lab: &mut Lab, seq: u32| {
        send_a(lab, [packet(L4::Udp, flow_src(1), (SERVER, SERVER_PORT), 1, seq)]);
        lab.settle(5);
        let ext = endpoints(&lab.delivered.drain(..).next().unwrap()[14..]).0;
        ext
    };
    let ext = round(&mut lab, 0);
    // Same rules, another route: the session survives.
    let same = tables(&lab, snat_rule(2, "1024-65535"), true);
    apply(&mut lab, &same);
    assert_eq!(lab.a.nat().unwrap().sessions(), 1, "the shard was kept");
    send_b(&mut lab, [packet(L4::Udp, (SERVER, SERVER_PORT), ext, 1, 1)]);
    lab.settle(5);
    assert_eq!(lab.delivered_a.drain(..).count(), 1, "the reply found its session");
    // An NPTv6 rule added: stateless, the shard and its session stay, and
    // IPv6 from A's LAN leaves translated.
    let mut with_npt = snat_rule(2, "1024-65535");
    with_npt["nptv6"] = serde_json::json!([{"name": "v6", "internal": "fd00:1::/48", "external": "2001:db8:a::/48"}]);
    let npt = tables(&lab, with_npt, true);
    apply(&mut lab, &npt);
    assert_eq!(lab.a.nat().unwrap().sessions(), 1, "the shard was kept");
    send_a(&mut lab, [ip_packet(&Flow::a_to_b(7, Family::V6, L4::Udp), 0, 0)]);
    lab.settle(5);
    let got: Vec<Vec<u8>> = lab.delivered.drain(..).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][14 + 8..14 + 14], [0x20, 0x01, 0x0d, 0xb8, 0, 0x0a], "the new NPTv6 rule applies");
    send_b(&mut lab, [packet(L4::Udp, (SERVER, SERVER_PORT), ext, 1, 2)]);
    lab.settle(5);
    assert_eq!(lab.delivered_a.drain(..).count(), 1, "the IPv4 session still answers");
    // Other rules: a new shard, the old session is lost.
    let other = tables(&lab, snat_rule(2, "1024-60000"), true);
    apply(&mut lab, &other);
    assert_eq!(lab.a.nat().unwrap().sessions(), 0, "a new shard");
    send_b(&mut lab, [packet(L4::Udp, (SERVER, SERVER_PORT), ext, 1, 3)]);
    lab.settle(5);
    assert_eq!(lab.delivered_a.len(), 0);
    let (a, b) = lab.counters();
    assert_eq!(a.nat.drop_count(false, NatDrop::NoSession), 1);
    assert_eq!(a.nat.sessions_created, 1, "counters survive the new shard");
    assert!(lab.a.take_retired_nat().is_some(), "the replaced shard waits to be dropped off the worker");
    // A shard built beforehand (by the control thread) is used as it is;
    // one built for another worker is not.
    let third = tables(&lab, snat_rule(2, "1024-50000"), true);
    let setup = worker_setup(&third, &PortPlan::new(&third).unwrap(), &lab.sas_a, 0, true, |_| Default::default()).unwrap();
    let n = setup.nat.clone().unwrap();
    let mut cfg = (*n.config).clone();
    cfg.max_sessions = 4321;
    let mine = Box::new(braid_nat::NatShard::new(&cfg, 0, usize::from(n.workers)).unwrap());
    let now = lab.now;
    lab.a.apply_with(setup.clone(), Some(mine), Vec::new(), now).unwrap();
    assert_eq!(lab.a.nat().unwrap().capacity(), 4321, "the prebuilt shard");
    let fourth = tables(&lab, snat_rule(2, "1024-40000"), true);
    let setup4 = worker_setup(&fourth, &PortPlan::new(&fourth).unwrap(), &lab.sas_a, 0, true, |_| Default::default()).unwrap();
    let theirs = Box::new(braid_nat::NatShard::new(&cfg, 1, 2).unwrap());
    lab.a.apply_with(setup4, Some(theirs), Vec::new(), now).unwrap();
    assert_ne!(lab.a.nat().unwrap().capacity(), 4321, "another worker's shard is not taken");
    // NAT off: no shard at all.
    let off = tables(&lab, serde_json::json!({}), true);
    apply(&mut lab, &off);
    assert!(lab.a.nat().is_none());
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// `packet` with TCP `flags` instead of PSH|ACK, its checksum recomputed.
fn tcp_with_flags(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), id: u32, seq: u32, flags: u8) -> Vec<u8> {
    let mut ip = packet(L4::Tcp, src, dst, id, seq);
    ip[20 + 13] = flags;
    ip[20 + 16..20 + 18].copy_from_slice(&[0, 0]);
    let l4_len = (ip.len() - 20) as u16;
    let c = !checksum::combine(&[checksum::pseudo_header_v4(src.0, dst.0, 6, l4_len), checksum::sum(&ip[20..])]);
    ip[20 + 16..20 + 18].copy_from_slice(&c.to_be_bytes());
    assert!(checksums_ok(&ip));
    ip
}

/// Short TCP connections, generation after generation, through a table
/// with room for one generation: each connection opens (SYN, SYN-ACK, ACK),
/// lives past the sweep's first look at it (so the sweep knows it as
/// established, 1 h), then closes (FIN both ways, 2 s). The workers' idle
/// sweeps must give the closed sessions back within their 2 s, so the next
/// generation never finds the table full.
#[test]
fn closed_tcp_sessions_are_swept_so_new_connections_find_room() {
    const SYN: u8 = 0x02;
    const SYN_ACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    const FIN_ACK: u8 = 0x11;
    let timeouts = Timeouts { tcp_transitory: 2 * SECOND, tcp_established: 3600 * SECOND, ..Timeouts::default() };
    let (mut lab, _g) = start("nchurn", &[1, 1], options(snat_rule(1, "1024-65535"), Some(100), Some(timeouts)));
    let server = (SERVER, SERVER_PORT);
    for generation in 0..4u32 {
        let flows: Vec<u32> = (0..100).map(|i| generation * 100 + i).collect();
        send_a(&mut lab, flows.iter().map(|&i| tcp_with_flags(flow_src(i), server, i, 0, SYN)));
        lab.settle(5);
        let ext: Vec<(Ipv4Addr, u16)> = lab.delivered.drain(..).map(|f| endpoints(&f[14..]).0).collect();
        assert_eq!(ext.len(), 100, "generation {generation}: every SYN got a session");
        send_b(&mut lab, flows.iter().zip(&ext).map(|(&i, &e)| tcp_with_flags(server, e, i, 0, SYN_ACK)));
        lab.settle(5);
        assert_eq!(lab.delivered_a.drain(..).count(), 100);
        // The handshake's last ACK: established.
        send_a(&mut lab, flows.iter().map(|&i| tcp_with_flags(flow_src(i), server, i, 1, ACK)));
        lab.settle(5);
        assert_eq!(lab.delivered.drain(..).count(), 100);
        // 40 s on, the idle sweeps have looked at every slot.
        lab.now += 40 * SECOND;
        lab.settle(20);
        send_a(&mut lab, flows.iter().map(|&i| tcp_with_flags(flow_src(i), server, i, 1, ACK)));
        send_a(&mut lab, flows.iter().map(|&i| tcp_with_flags(flow_src(i), server, i, 2, FIN_ACK)));
        lab.settle(5);
        send_b(&mut lab, flows.iter().zip(&ext).map(|(&i, &e)| tcp_with_flags(server, e, i, 1, FIN_ACK)));
        lab.settle(5);
        assert_eq!(lab.delivered.drain(..).count(), 200);
        assert_eq!(lab.delivered_a.drain(..).count(), 100);
        // 2 s after the last FIN, and the sweeps have run: all gone.
        lab.now += 2 * SECOND + TICK_MS;
        lab.settle(20);
        let (a, _) = lab.counters();
        assert_eq!(a.nat.sessions, 0, "generation {generation}: closed sessions swept");
    }
    let (a, b) = lab.counters();
    assert_eq!(a.nat.drop_count(true, NatDrop::SessionsFull), 0);
    assert_eq!((a.nat.sessions_created, a.nat.sessions_expired), (400, 400));
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// IPv4 fragments of `ip` (DF clear) carrying at most `chunk` bytes of
/// payload each, in order.
fn fragments(ip: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut frame = vec![0u8; 14];
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(ip);
    let mut out = Vec::new();
    let n = braid_dataplane::encap::fragment_ipv4(&frame, chunk, |h, p| out.push([&h[14..], p].concat()));
    assert_eq!(n, out.len());
    assert!(n > 1);
    out
}


/// `ip` with its IPv4 source or destination endpoint replaced and its
/// checksums made again (what a correct NAT turns it into).
fn translated(ip: &[u8], src: bool, to: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut p = ip.to_vec();
    let (a, port) = if src { (12, 20) } else { (16, 22) };
    p[a..a + 4].copy_from_slice(&to.0.octets());
    p[port..port + 2].copy_from_slice(&to.1.to_be_bytes());
    p[10..12].fill(0);
    let c = !checksum::sum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let ((s, _), (d, _)) = endpoints(&p);
    p[26..28].fill(0);
    let c = !checksum::combine(&[checksum::pseudo_header_v4(s, d, 17, (p.len() - 20) as u16), checksum::sum(&p[20..])]);
    p[26..28].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    p
}

/// A LAN host behind SNAT sends UDP datagrams bigger than its LAN's MTU,
/// which its stack cuts into IPv4 fragments; the far host answers with
/// fragments too. Before, the NAT dropped every fragment (`fragment`):
/// only the first carries the ports. Now A makes the NAT's fragments whole
/// first, in order or not, across bursts: each datagram leaves translated
/// in its flow's one mapping (the one a small packet of the flow got) and
/// arrives byte for byte (bundle mode carries it whole; plain mode cuts it
/// again into inner fragments that fit the tunnel); the fragmented replies
/// reach the internal host's address and port, with correct checksums,
/// cut again to A's LAN MTU. Fragments of hosts no rule covers pass
/// untouched. A datagram whose fragments never all arrive is discarded
/// after the timeout and counted; no mbuf is lost.
#[test]
fn fragmented_datagrams_are_made_whole_translated_and_answered() {
    for mode in ["bundle", "plain"] {
        let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
        // A's LAN has a 1500-byte MTU, as its hosts' stacks assume.
        let mut opts = options(snat_rule(1, "1024-65535"), None, None);
        let edit = opts.edit.take().unwrap();
        opts.edit = Some(Box::new(move |side_a, doc| {
            edit(side_a, doc);
            if side_a {
                doc["ports"][0]["mtu"] = serde_json::json!(1500);
            }
        }));
        let mut lab = Lab::with(&format!("nfrag{}", &mode[..1]), mode, &[1, 1, 1], 16, 1500, opts);
        lab.read_a_lan = true;
        let host = (Ipv4Addr::new(10, 1, 0, 5), 40000);
        let server = (SERVER, SERVER_PORT);
        // A small packet of the flow: its mapping.
        send_a(&mut lab, [packet(L4::Udp, host, server, 1, 0)]);
        lab.settle(5);
        let got: Vec<Vec<u8>> = lab.delivered.drain(..).collect();
        assert_eq!(got.len(), 1, "{mode}");
        let ext = endpoints(&got[0][14..]).0;
        assert_eq!(ext.0, pool(1)[0]);

        // Three datagrams of 4000 bytes as 1500-byte fragments: in order
        // in one burst; last fragment first; cut across two bursts.
        let big: Vec<Vec<u8>> = (1..=3).map(|seq| ip_packet(&flow_of(host, server, 1), seq, 14 + 4000)).collect();
        let pieces: Vec<Vec<Vec<u8>>> = big.iter().map(|ip| fragments(ip, 1480)).collect();
        assert_eq!(pieces[0].len(), 3);
        // A small packet of the flow right behind the first datagram's
        // last fragment, in the same burst, stays behind it.
        let small = packet(L4::Udp, host, server, 1, 10);
        send_a(&mut lab, pieces[0].iter().cloned().chain([small.clone()]));
        send_a(&mut lab, pieces[1].iter().rev().cloned());
        send_a(&mut lab, pieces[2][..1].to_vec());
        send_a(&mut lab, pieces[2][1..].to_vec());
        lab.settle(5);
        let got: Vec<Vec<u8>> = lab.delivered.drain(..).collect();
        if mode == "bundle" {
            assert_eq!(got.len(), 4, "bundle mode carries each datagram whole to B's 9000-byte LAN");
        } else {
            assert_eq!(got.len(), 10, "plain mode cuts each again to fit the tunnel");
        }
        let whole = reassembled_v4(&got);
        assert_eq!(whole.len(), 4, "{mode}");
        assert_eq!(whole[1], translated(&small, true, ext), "{mode}: the small packet after the first datagram");
        for (w, ip) in [&whole[0], &whole[2], &whole[3]].into_iter().zip(&big) {
            assert_eq!(w, &translated(ip, true, ext), "{mode}: translated in the flow's mapping, byte for byte");
        }

        // The server answers each with a fragmented 4000-byte datagram
        // (fragments of 1412 bytes: a plain-mode tunnel over a 1500-byte
        // WAN carries no bigger inner packet without outer fragments).
        let replies: Vec<Vec<u8>> = (1..=3).map(|seq| ip_packet(&flow_of(server, ext, 2), seq, 14 + 4000)).collect();
        for (k, r) in replies.iter().enumerate() {
            let mut f = fragments(r, 1392);
            if k == 1 {
                f.reverse();
            }
            send_b(&mut lab, f);
        }
        lab.settle(5);
        let got: Vec<Vec<u8>> = lab.delivered_a.drain(..).collect();
        assert_eq!(got.len(), 9, "{mode}: each reply cut again to A's LAN MTU (1500 here)");
        let mut whole = reassembled_v4(&got);
        whole.sort_by_key(|ip| tag(ip));
        for (w, r) in whole.iter().zip(&replies) {
            assert_eq!(w, &translated(r, false, host), "{mode}: the reply reached the host's address and port");
            assert!(checksums_ok(w));
        }

        // A host no rule covers: its fragments pass as they are.
        let other = (Ipv4Addr::new(10, 9, 0, 1), 40001);
        let ip = ip_packet(&flow_of(other, server, 3), 1, 14 + 2000);
        send_a(&mut lab, fragments(&ip, 1000));
        lab.settle(5);
        let got: Vec<Vec<u8>> = lab.delivered.drain(..).collect();
        assert_eq!(got.len(), 2, "{mode}: two fragments, untouched");
        assert_eq!(reassembled_v4(&got), vec![ip]);

        // Two of three fragments: held, then discarded after the timeout.
        let lost = ip_packet(&flow_of(host, server, 1), 4, 14 + 4000);
        let f = fragments(&lost, 1480);
        send_a(&mut lab, [f[0].clone(), f[2].clone()]);
        lab.settle(5);
        assert!(lab.delivered.is_empty());
        lab.now += 2 * SECOND;
        lab.settle(5);

        let (a, b) = lab.counters();
        let nf = a.nat.out_frags;
        assert_eq!((nf.taken, nf.reassembled, nf.discarded), (11, 3, 2), "{mode}: {nf:?}");
        let nf = a.nat.in_frags;
        assert_eq!((nf.taken, nf.reassembled, nf.discarded), (9, 3, 0), "{mode}: {nf:?}");
        assert_eq!(a.nat.out_dropped() + a.nat.in_dropped(), 0, "{mode}: {:?}", a.nat);
        assert_eq!(a.lan_cut.fragments, 9, "{mode}");
        if mode == "plain" {
            assert_eq!((a.tunnel_cut.fragmented, a.tunnel_cut.fragments), (3, 9), "{mode}");
        }
        lab::assert_conserved(&a, "A", mode == "plain");
        lab::assert_conserved(&b, "B", false);
        lab.close();
    }
}

/// A UDP flow `src` -> `dst` with id `id`.
fn flow_of(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), id: u32) -> Flow {
    let mut f = Flow::a_to_b(id, Family::V4, L4::Udp);
    (f.src4, f.sport, f.dst4, f.dport) = (src.0, src.1, dst.0, dst.1);
    f
}

/// Fragments held for the NAT when new tables remove it are still freed
/// after the timeout (counted `discarded`); no mbuf stays held.
#[test]
fn fragments_held_when_the_nat_goes_are_freed() {
    let (mut lab, _g) = start("nfragrm", &[1, 1], options(snat_rule(1, "1024-65535"), None, None));
    let ip = ip_packet(&flow_of((Ipv4Addr::new(10, 1, 0, 5), 40000), (SERVER, SERVER_PORT), 1), 1, 14 + 4000);
    let f = fragments(&ip, 1480);
    send_a(&mut lab, [f[0].clone(), f[1].clone()]);
    lab.settle(5);
    assert_eq!(lab.a.counters().nat.out_frags.taken, 2);
    let (ln, wn) = (&lab.tables_a.ports[0].device, &lab.tables_a.ports[1].device);
    let doc = lab::config_json(true, (ln, wn), "bundle", &[1, 1], 16, 1500);
    let t = Tables::from_config(&Config::from_json_str(&doc).unwrap()).unwrap();
    let setup = worker_setup(&t, &PortPlan::new(&t).unwrap(), &lab.sas_a, 0, true, |_| Default::default()).unwrap();
    let now = lab.now;
    lab.a.apply(setup, now).unwrap();
    assert!(lab.a.nat().is_none());
    lab.now += 2 * SECOND;
    lab.settle(5);
    assert_eq!(lab.a.counters().nat.out_frags.discarded, 2);
    lab.close();
}

/// A flood of IPv4 fragments that never complete (each its own
/// identification, random offsets and lengths, more fragments always to come), from SNATed hosts
/// on A's LAN and to A's pool address from B's side, with a flow of
/// ordinary packets through it: every fragment is taken and at most 128
/// packets (here one fragment each) are held per direction; those with a
/// bad header checksum are not taken and routing drops them
/// (`bad_inner_ip`); every ordinary packet arrives; after the timeout
/// everything held is discarded and counted, nothing crashed, no mbuf is
/// lost.
#[test]
fn a_flood_of_fragments_that_never_complete_is_bounded() {
    let (mut lab, _g) = start("nfragflood", &[1, 1], options(snat_rule(1, "1024-65535"), None, None));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut ident = 0u16;
    let mut junk = |src: Ipv4Addr, dst: Ipv4Addr, bad: bool| -> Vec<u8> {
        let r = rnd();
        let len = 28 + (r % 1400) as usize;
        let mut p: Vec<u8> = (0..len).map(|i| (r >> (i % 56)) as u8).collect();
        p[0] = 0x45;
        p[1] = 0;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        // An identification of its own: a packet of its own.
        ident = ident.wrapping_add(1);
        p[4..6].copy_from_slice(&ident.to_be_bytes());
        // MF set: the packet never ends; offset anywhere.
        p[6..8].copy_from_slice(&(0x2000 | ((r >> 32) as u16 & 0x1fff)).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[10..12].fill(0);
        let c = !checksum::sum(&p[..20]) ^ u16::from(bad);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    };
    let pool_addr = pool(1)[0];
    let client = (Ipv4Addr::new(10, 1, 0, 5), 40000);
    let (mut sent_out, mut sent_in, mut bad_out) = (0u64, 0u64, 0u64);
    for round in 0..100u32 {
        let out: Vec<Vec<u8>> = (0..30)
            .map(|k| {
                let bad = k % 10 == 9;
                bad_out += u64::from(bad);
                junk(Ipv4Addr::new(10, 1, (k % 4) as u8, 1 + (k % 200) as u8), SERVER, bad)
            })
            .chain(std::iter::once(packet(L4::Udp, client, (SERVER, SERVER_PORT), 1, round)))
            .collect();
        sent_out += 30;
        send_a(&mut lab, out);
        let inb: Vec<Vec<u8>> = (0..30).map(|_| junk(SERVER, pool_addr, false)).collect();
        sent_in += 30;
        send_b(&mut lab, inb);
    }
    lab.settle(5);
    let got: Vec<u32> = lab.delivered.drain(..).filter_map(|f| tag(&f[14..]).map(|t| t.1)).collect();
    assert_eq!(got, (0..100).collect::<Vec<u32>>(), "the ordinary flow, whole and in order");
    let (a, _) = lab.counters();
    let (o, i) = (a.nat.out_frags, a.nat.in_frags);
    assert_eq!(o.taken, sent_out - bad_out, "{o:?}");
    assert_eq!(a.drops.get(DpDrop::BadInnerIp), bad_out);
    assert_eq!(i.taken, sent_in, "{i:?}");
    assert_eq!((o.reassembled, i.reassembled), (0, 0));
    // Each junk fragment opens a packet of its own: the table's 128.
    assert!(o.taken - o.discarded <= 128 && i.taken - i.discarded <= 128, "held: {o:?} {i:?}");
    lab.now += 2 * SECOND;
    lab.settle(5);
    let (a, b) = lab.counters();
    let (o, i) = (a.nat.out_frags, a.nat.in_frags);
    assert_eq!((o.discarded, i.discarded), (o.taken, i.taken), "all held fragments discarded: {o:?} {i:?}");
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}
