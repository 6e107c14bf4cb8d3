//! SNAT at scale: 100,000 concurrent flows from many LAN hosts through one
//! shard and through four, replies, mapping stability and collisions.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use braid_nat::{NatConfig, NatDrop, NatShard, Verdict};
use common::*;

const FLOWS: usize = 100_000;

#[derive(Clone, Copy)]
struct Flow {
    proto: u8,
    internal: SocketAddrV4,
    remote: SocketAddrV4,
}

/// 100,000 flows: 2,000 hosts in 10.0.0.0/16, 50 flows each, TCP and UDP,
/// to 1,000 remote servers.
fn flows() -> Vec<Flow> {
    let mut s = 42u64;
    (0..FLOWS)
        .map(|i| {
            let host = (i / 50) as u32;
            let r = splitmix(&mut s);
            Flow {
                proto: if i % 3 == 0 { UDP } else { TCP },
                internal: SocketAddrV4::new(
                    Ipv4Addr::from(0x0a00_0000 | (host * 31 % 65534 + 1)),
                    20000 + (i % 50) as u16 * 7,
                ),
                remote: SocketAddrV4::new(
                    Ipv4Addr::new(198, 51, (r % 4) as u8, (r >> 8) as u8 % 250 + 1),
                    [53, 80, 443, 8443][(r >> 16) as usize % 4],
                ),
            }
        })
        .collect()
}

fn out_pkt(f: &Flow) -> Vec<u8> {
    match f.proto {
        TCP => tcp_pkt(f.internal, f.remote, 0x02),
        _ => udp_pkt(f.internal, f.remote),
    }
}

fn reply_pkt(f: &Flow, ext: SocketAddrV4) -> Vec<u8> {
    match f.proto {
        TCP => tcp_pkt(f.remote, ext, 0x12),
        _ => udp_pkt(f.remote, ext),
    }
}

/// Drives every flow out, back and out again through `n` shards steered by
/// the config's owner helpers; checks translations, checksums, collisions.
fn run(n: usize) {
    let cfg = lan_config(4, 131_072);
    let mut shards: Vec<NatShard> = (0..n).map(|w| NatShard::new(&cfg, w, n).unwrap()).collect();
    let flows = flows();
    let mut ext_of = Vec::with_capacity(FLOWS);
    let mut tuples = HashSet::with_capacity(FLOWS);
    let mut owner_of_mapping: HashMap<(u8, SocketAddrV4), SocketAddrV4> = HashMap::new();
    let now = SEC;
    for f in &flows {
        let mut p = out_pkt(f);
        let w = cfg.outbound_owner(&p, n).unwrap();
        assert_eq!(shards[w].outbound(&mut p, 1, now), Verdict::Translated);
        assert_checksums(&p);
        let (proto, src, dst) = endpoints(&p);
        assert_eq!((proto, dst), (f.proto, f.remote));
        assert_eq!(src.ip().octets()[..3], [203, 0, 113]);
        // No two live sessions share an external (proto, addr, port, remote).
        assert!(
            tuples.insert((proto, src, dst)),
            "collision on {src} -> {dst}"
        );
        // An external port belongs to one internal endpoint only.
        let prev = owner_of_mapping.insert((proto, src), f.internal);
        assert!(prev.is_none() || prev == Some(f.internal));
        // The reply's shard is the one that allocated the port.
        assert_eq!(
            cfg.owner_of(src.ip().to_owned().into(), src.port(), n),
            Some(w)
        );
        ext_of.push(src);
    }
    let total: usize = shards.iter().map(|s| s.sessions()).sum();
    assert_eq!(total, FLOWS);
    if n > 1 {
        assert!(
            shards.iter().all(|s| s.sessions() > FLOWS / n / 2),
            "steering spreads flows"
        );
    }
    // Replies in a shuffled order: every one finds its flow.
    let mut order: Vec<usize> = (0..FLOWS).collect();
    let mut s = 9u64;
    for i in (1..order.len()).rev() {
        order.swap(i, (splitmix(&mut s) % (i as u64 + 1)) as usize);
    }
    for &i in &order {
        let f = &flows[i];
        let mut p = reply_pkt(f, ext_of[i]);
        let w = cfg.inbound_owner(&p, n).unwrap();
        assert_eq!(shards[w].inbound(&mut p, now + SEC), Verdict::Translated);
        assert_checksums(&p);
        assert_eq!(endpoints(&p), (f.proto, f.remote, f.internal));
    }
    // Second outbound packet of every flow, other order: same mapping.
    for &i in order.iter().rev() {
        let f = &flows[i];
        let mut p = out_pkt(f);
        let w = cfg.outbound_owner(&p, n).unwrap();
        assert_eq!(
            shards[w].outbound(&mut p, 2, now + 2 * SEC),
            Verdict::Translated
        );
        assert_eq!(endpoints(&p).1, ext_of[i]);
    }
    for sh in &shards {
        let c = sh.counters();
        assert!(c.drops.iter().all(|&d| d == 0), "{c:?}");
    }
    let created: u64 = shards.iter().map(|s| s.counters().sessions_created).sum();
    assert_eq!(created, FLOWS as u64);
}

#[test]
fn snat_100k_flows_one_shard() {
    run(1);
}

#[test]
fn snat_100k_flows_four_shards() {
    run(4);
}

#[test]
fn endpoint_independent_mapping_and_paired_pool() {
    let cfg = lan_config(4, 1024);
    let mut nat = NatShard::new(&cfg, 0, 1).unwrap();
    let int = sa([10, 0, 3, 3], 5000);
    let mut exts = HashSet::new();
    for r in 1..=20u8 {
        let mut p = udp_pkt(int, sa([198, 51, 100, r], 3478));
        assert_eq!(nat.outbound(&mut p, 1, SEC), Verdict::Translated);
        exts.insert(endpoints(&p).1);
    }
    // RFC 4787 REQ-1: one external endpoint for every remote.
    assert_eq!(exts.len(), 1);
    // REQ-2: other ports of the same host get the same pool address.
    let ext_ip = *exts.iter().next().unwrap().ip();
    for port in 1..50u16 {
        let mut p = tcp_pkt(sa([10, 0, 3, 3], port), sa([198, 51, 100, 1], 80), 0x02);
        nat.outbound(&mut p, 1, SEC);
        assert_eq!(*endpoints(&p).1.ip(), ext_ip);
    }
    // Filtering is address-and-port dependent: a remote the host never
    // sent to is refused, even on the mapped port.
    let mut p = udp_pkt(sa([192, 0, 2, 99], 3478), *exts.iter().next().unwrap());
    assert_eq!(nat.inbound(&mut p, SEC), Verdict::Drop(NatDrop::NoSession));
    assert_eq!(nat.counters().drop_count(NatDrop::NoSession), 1);
}

#[test]
fn same_flow_one_mapping_whatever_the_order() {
    let cfg = lan_config(2, 4096);
    let mut nat = NatShard::new(&cfg, 0, 1).unwrap();
    let mut s = 5u64;
    let flows: Vec<(SocketAddrV4, SocketAddrV4)> = (0..500u32)
        .map(|i| {
            (
                sa(
                    [10, 0, (i / 200) as u8, (i % 200) as u8 + 1],
                    40000 + i as u16,
                ),
                sa([198, 51, 100, 7], 443),
            )
        })
        .collect();
    let mut mapping: HashMap<usize, SocketAddrV4> = HashMap::new();
    for step in 0..20_000u64 {
        let r = splitmix(&mut s);
        let i = (r % flows.len() as u64) as usize;
        let (int, rem) = flows[i];
        let now = SEC + step * 1_000_000;
        match (mapping.get(&i), (r >> 32) % 3) {
            (Some(&ext), 0) => {
                let mut p = tcp_pkt(rem, ext, 0x10);
                assert_eq!(nat.inbound(&mut p, now), Verdict::Translated);
                assert_eq!(endpoints(&p).2, int);
            }
            _ => {
                let flags = if mapping.contains_key(&i) { 0x10 } else { 0x02 };
                let mut p = tcp_pkt(int, rem, flags);
                assert_eq!(
                    nat.outbound(&mut p, (r >> 40) as u32 % 3, now),
                    Verdict::Translated
                );
                let ext = endpoints(&p).1;
                assert_eq!(
                    *mapping.entry(i).or_insert(ext),
                    ext,
                    "flow {i} changed mapping"
                );
            }
        }
    }
    assert_eq!(nat.sessions(), mapping.len());
}

#[test]
fn untouched_traffic() {
    let cfg = lan_config(1, 64);
    let mut nat = NatShard::new(&cfg, 0, 1).unwrap();
    // A source outside the rule's prefix passes unchanged.
    let mut p = udp_pkt(sa([192, 168, 1, 1], 1000), sa([198, 51, 100, 1], 53));
    let before = p.clone();
    assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Untouched);
    assert_eq!(p, before);
    // Inbound to an address that is not ours.
    let mut p = udp_pkt(sa([198, 51, 100, 1], 53), sa([192, 168, 1, 1], 1000));
    assert_eq!(nat.inbound(&mut p, SEC), Verdict::Untouched);
    // IPv6 is not translated.
    let mut v6 = vec![0u8; 48];
    v6[0] = 0x60;
    assert_eq!(nat.outbound(&mut v6, 0, SEC), Verdict::Untouched);
    // Unsolicited inbound to the pool address: filtered, counted.
    let mut p = udp_pkt(sa([198, 51, 100, 1], 53), sa([203, 0, 113, 1], 1000));
    assert_eq!(nat.inbound(&mut p, SEC), Verdict::Drop(NatDrop::NoSession));
    // A fragment of a NATed host cannot be translated.
    let mut p = udp_pkt(sa([10, 0, 0, 1], 1000), sa([198, 51, 100, 1], 53));
    p[6] = 0x20;
    assert_eq!(
        nat.outbound(&mut p, 0, SEC),
        Verdict::Drop(NatDrop::Fragment)
    );
    // GRE from a NATed host.
    let mut p = udp_pkt(sa([10, 0, 0, 1], 1000), sa([198, 51, 100, 1], 53));
    p[9] = 47;
    assert_eq!(
        nat.outbound(&mut p, 0, SEC),
        Verdict::Drop(NatDrop::UnsupportedProtocol)
    );
    // Garbage.
    assert_eq!(
        nat.outbound(&mut [0x45, 0, 0], 0, SEC),
        Verdict::Drop(NatDrop::Malformed)
    );
    assert_eq!(nat.inbound(&mut [], SEC), Verdict::Drop(NatDrop::Malformed));
    let c = nat.counters();
    let drops: u64 = c.drops.iter().sum();
    assert_eq!(drops, 5);
    assert_eq!(c.out_untouched + c.in_untouched, 3);
}

#[test]
fn egress_selects_the_rule_and_a_flow_keeps_its_mapping() {
    let mut cfg = lan_config(1, 64);
    cfg.snat[0].egress = Some(1);
    let mut second = cfg.snat[0].clone();
    second.egress = Some(2);
    second.pool = vec![Ipv4Addr::new(192, 0, 2, 1).into()];
    cfg.snat.push(second);
    let mut nat = NatShard::new(&cfg, 0, 1).unwrap();
    let mut p = udp_pkt(sa([10, 0, 0, 1], 1000), sa([198, 51, 100, 1], 53));
    nat.outbound(&mut p, 2, SEC);
    assert_eq!(*endpoints(&p).1.ip(), Ipv4Addr::new(192, 0, 2, 1));
    // The route moves the flow to egress 1: its session keeps its mapping
    // (MASQUERADE would drop it, seed 002).
    let mut p = udp_pkt(sa([10, 0, 0, 1], 1000), sa([198, 51, 100, 1], 53));
    nat.outbound(&mut p, 1, SEC);
    assert_eq!(*endpoints(&p).1.ip(), Ipv4Addr::new(192, 0, 2, 1));
    // A new flow by egress 1 takes rule 1's pool; egress 3 matches no rule.
    let mut p = udp_pkt(sa([10, 0, 0, 1], 1001), sa([198, 51, 100, 1], 53));
    nat.outbound(&mut p, 1, SEC);
    assert_eq!(*endpoints(&p).1.ip(), Ipv4Addr::new(203, 0, 113, 1));
    let mut p = udp_pkt(sa([10, 0, 0, 1], 1002), sa([198, 51, 100, 1], 53));
    assert_eq!(nat.outbound(&mut p, 3, SEC), Verdict::Untouched);
}

#[test]
fn config_errors() {
    use braid_nat::ConfigError;
    let mut cfg = lan_config(1, 64);
    assert!(matches!(
        NatShard::new(&cfg, 1, 1),
        Err(ConfigError::Worker(1, 1))
    ));
    cfg.snat[0].pool.clear();
    assert!(matches!(
        NatShard::new(&cfg, 0, 1),
        Err(ConfigError::EmptyPool(0))
    ));
    let mut cfg = lan_config(1, 64);
    cfg.snat[0].pool = vec!["2001:db8::1".parse().unwrap()];
    assert!(matches!(
        NatShard::new(&cfg, 0, 1),
        Err(ConfigError::Ipv6(0))
    ));
    let mut cfg = lan_config(1, 64);
    let mut r2 = cfg.snat[0].clone();
    r2.ports = 2000..=3000;
    cfg.snat.push(r2);
    assert!(matches!(
        NatShard::new(&cfg, 0, 1),
        Err(ConfigError::PoolPortsConflict(1, _))
    ));
    let cfg = NatConfig {
        max_sessions: 0,
        ..lan_config(1, 1)
    };
    assert!(matches!(
        NatShard::new(&cfg, 0, 1),
        Err(ConfigError::MaxSessions)
    ));
}

/// More than 65,536 SNAT rules and pool addresses (the dataplane's
/// validation allows 100,000): the rule and pool indexes were u16 and
/// wrapped, so rule 65,536's packets were checked against rule 0's egress
/// and left untranslated, with their internal source (found by review).
#[test]
fn rules_and_pools_beyond_65536_keep_their_own_index() {
    use braid_nat::{Prefix, SnatRule};
    use std::net::IpAddr;
    const N: u32 = 65_540;
    let snat: Vec<SnatRule> = (0..N)
        .map(|i| SnatRule {
            // 10.0.0.0/28, 10.0.0.16/28, ...: rule i at 10.0.0.0 + 16 i.
            match_prefix: Prefix::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 4))), 28),
            // Rule 65,536 (and its neighbours) for egress 1, the rest 0.
            egress: Some(u32::from(i >= 65_536)),
            // Each its own pool address.
            pool: vec![IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))],
            ports: 1024..=65535,
        })
        .collect();
    let cfg = NatConfig { snat, max_sessions: 64, ..Default::default() };
    let mut nat = NatShard::new(&cfg, 0, 1).unwrap();
    for i in [0u32, 1, 65_535, 65_536, 65_539] {
        let src = sa(Ipv4Addr::from(0x0a00_0000 + (i << 4) + 5).octets(), 4000);
        let mut p = udp_pkt(src, sa([198, 51, 100, 1], 53));
        assert_eq!(nat.outbound(&mut p, u32::from(i >= 65_536), 0), Verdict::Translated, "rule {i}");
        let (_, from, _) = endpoints(&p);
        assert_eq!(u32::from(*from.ip()), 0x6440_0000 + i, "rule {i} takes its own pool address");
        assert_checksums(&p);
    }
}
