//! ARP/ND resolution, answers for our addresses, floods, and the ping
//! responder.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use braid_nat::resolver::{Lookup, Resolver, ResolverConfig, DEFENCE_INTERVAL, FRAME_MAX};
use braid_tunnel::wire::ethernet::{self, Address, EtherType};
use braid_tunnel::wire::{arp, checksum, icmpv4, icmpv6, ipv4, ipv6};
use common::*;

const OUR_MAC: Address = Address([0x02, 0, 0, 0, 0, 0x01]);
const OUR_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HOP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const HOP_MAC: Address = Address([0x02, 0, 0, 0, 0, 0xfe]);

fn our_v6() -> Ipv6Addr {
    "fe80::1".parse().unwrap()
}

fn resolver() -> Resolver {
    Resolver::new(ResolverConfig {
        mac: OUR_MAC,
        ipv4: vec![OUR_V4],
        ipv6: vec![our_v6()],
        capacity: 16,
        ..ResolverConfig::default()
    })
}

fn arp_frame(
    op: arp::Operation,
    sender_hw: Address,
    sender_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let dst = if op == arp::Operation::Request {
        Address::BROADCAST
    } else {
        OUR_MAC
    };
    ethernet::Repr {
        src_addr: sender_hw,
        dst_addr: dst,
        vlan: None,
        ethertype: EtherType::ARP,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    arp::Repr {
        op,
        sender_hw,
        sender_ip,
        target_hw: Address::default(),
        target_ip,
    }
    .emit(&mut arp::Packet::new_unchecked(&mut f[14..]));
    f
}

fn parse_arp(f: &[u8]) -> (ethernet::Repr, arp::Repr) {
    let eth = ethernet::Frame::new_checked(f).unwrap();
    let e = ethernet::Repr::parse(&eth).unwrap();
    let a = arp::Repr::parse(&arp::Packet::new_checked(eth.payload()).unwrap())
        .unwrap()
        .unwrap();
    (e, a)
}

fn nd_frame(src_mac: Address, src: Ipv6Addr, dst: Ipv6Addr, nd: icmpv6::Repr) -> Vec<u8> {
    let body = nd.buffer_len();
    let mut f = vec![0u8; 14 + 40 + body];
    ethernet::Repr {
        src_addr: src_mac,
        dst_addr: OUR_MAC,
        vlan: None,
        ethertype: EtherType::IPV6,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: braid_tunnel::wire::IpProtocol::ICMPV6,
        payload_len: body,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut f[14..]));
    nd.emit(
        &mut icmpv6::Packet::new_unchecked(&mut f[54..]),
        &braid_tunnel::wire::AddrPair::V6 { src, dst },
    );
    f
}

fn parse_nd(f: &[u8]) -> (Ipv6Addr, Ipv6Addr, icmpv6::Repr) {
    let eth = ethernet::Frame::new_checked(f).unwrap();
    let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.hop_limit(), 255);
    let m = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    let r = icmpv6::Repr::parse(&m, &ip.addrs(), true)
        .unwrap()
        .expect("checksum verifies");
    (ip.src_addr(), ip.dst_addr(), r)
}

#[test]
fn answers_arp_for_our_address_only() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    let asker = Address([2, 0, 0, 0, 0, 0x33]);
    let req = arp_frame(
        arp::Operation::Request,
        asker,
        Ipv4Addr::new(192, 0, 2, 33),
        OUR_V4,
    );
    let n = r.on_frame(&req, SEC, &mut out).expect("reply");
    let (e, a) = parse_arp(&out[..n]);
    assert_eq!(
        (e.dst_addr, e.src_addr, e.ethertype),
        (asker, OUR_MAC, EtherType::ARP)
    );
    assert_eq!(a.op, arp::Operation::Reply);
    assert_eq!((a.sender_hw, a.sender_ip), (OUR_MAC, OUR_V4));
    assert_eq!(
        (a.target_hw, a.target_ip),
        (asker, Ipv4Addr::new(192, 0, 2, 33))
    );
    // Not ours: no answer.
    let req = arp_frame(
        arp::Operation::Request,
        asker,
        Ipv4Addr::new(192, 0, 2, 33),
        Ipv4Addr::new(192, 0, 2, 2),
    );
    assert_eq!(r.on_frame(&req, SEC, &mut out), None);
    // The asker was not learned.
    assert!(r.is_empty());
}

#[test]
fn resolves_a_next_hop() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    let Lookup::Pending { request: Some(n) } = r.lookup(HOP_V4.into(), SEC, &mut out) else {
        panic!()
    };
    let (e, a) = parse_arp(&out[..n]);
    assert_eq!(e.dst_addr, Address::BROADCAST);
    assert_eq!(
        (a.op, a.sender_ip, a.target_ip),
        (arp::Operation::Request, OUR_V4, HOP_V4)
    );
    // A second packet before the retry time sends nothing.
    assert_eq!(
        r.lookup(HOP_V4.into(), SEC + 1000, &mut out),
        Lookup::Pending { request: None }
    );
    let reply = arp_frame(arp::Operation::Reply, HOP_MAC, HOP_V4, OUR_V4);
    assert_eq!(r.on_frame(&reply, SEC + 2000, &mut out), None);
    assert_eq!(
        r.lookup(HOP_V4.into(), 2 * SEC, &mut out),
        Lookup::Resolved {
            mac: HOP_MAC,
            request: None
        }
    );
    // After 30 s the entry is stale: still used, probed by unicast.
    match r.lookup(HOP_V4.into(), 32 * SEC, &mut out) {
        Lookup::Resolved {
            mac,
            request: Some(n),
        } => {
            assert_eq!(mac, HOP_MAC);
            assert_eq!(parse_arp(&out[..n]).0.dst_addr, HOP_MAC);
        }
        other => panic!("{other:?}"),
    }
    // Probes unanswered: 3 in all, then the MAC is forgotten and the
    // address resolved anew by broadcast (RFC 4861 7.3.3, RFC 1122
    // 2.3.2.1), not held failed for `failed_hold`.
    assert!(matches!(
        r.lookup(HOP_V4.into(), 33 * SEC, &mut out),
        Lookup::Resolved {
            request: Some(_),
            ..
        }
    ));
    assert!(matches!(
        r.lookup(HOP_V4.into(), 34 * SEC, &mut out),
        Lookup::Resolved {
            request: Some(_),
            ..
        }
    ));
    match r.lookup(HOP_V4.into(), 35 * SEC, &mut out) {
        Lookup::Pending { request: Some(n) } => assert_eq!(parse_arp(&out[..n]).0.dst_addr, Address::BROADCAST),
        other => panic!("{other:?}"),
    }
    assert_eq!(r.counters().unresolved, 0);
    // Its new MAC (it moved, say) answers the broadcast: resolved again.
    let moved = Address([0x02, 0, 0, 0, 0x77, 0x77]);
    let reply = arp_frame(arp::Operation::Reply, moved, HOP_V4, OUR_V4);
    assert_eq!(r.on_frame(&reply, 35 * SEC + 1000, &mut out), None);
    assert_eq!(r.lookup(HOP_V4.into(), 35 * SEC + 2000, &mut out), Lookup::Resolved { mac: moved, request: None });
    // Silent from then on: probes, broadcasts, then unresolved.
    let mut t = 66 * SEC;
    let mut failed = false;
    for _ in 0..8 {
        if r.lookup(HOP_V4.into(), t, &mut out) == Lookup::Failed {
            failed = true;
            break;
        }
        t += SEC;
    }
    assert!(failed && t == 72 * SEC, "failed {failed} at {t}");
    assert_eq!(r.counters().unresolved, 1);
}

#[test]
fn silent_next_hop_retries_then_fails_without_stalling_others() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    let dead: IpAddr = Ipv4Addr::new(192, 0, 2, 99).into();
    let mut requests = 0;
    let mut t = 0;
    let mut failed_at = None;
    // One packet to the dead hop every 100 ms, and to the live one too.
    while t < 30 * SEC {
        match r.lookup(dead, t, &mut out) {
            Lookup::Pending { request } => requests += request.is_some() as u32,
            Lookup::Failed => {
                failed_at.get_or_insert(t);
            }
            Lookup::Resolved { .. } => panic!("nobody answered"),
        }
        match r.lookup(HOP_V4.into(), t, &mut out) {
            Lookup::Pending { request: Some(_) } => {
                let reply = arp_frame(arp::Operation::Reply, HOP_MAC, HOP_V4, OUR_V4);
                r.on_frame(&reply, t, &mut out);
            }
            Lookup::Resolved { mac, .. } => assert_eq!(mac, HOP_MAC),
            other => panic!("live hop: {other:?}"),
        }
        t += SEC / 10;
    }
    // Requests at 0, 1 s, 2 s; failed at 3 s; held down 20 s; asked again
    // at 23 s (3 more), failed again at 26 s.
    assert_eq!(failed_at, Some(3 * SEC));
    assert_eq!(requests, 6);
    assert_eq!(r.counters().unresolved, 2);
    assert!(r.counters().lookups_failed > 100);
}

/// A sweep of new addresses (a host behind a peer sending to every
/// address of this LAN's subnet) through a full cache: the requests
/// nobody looked up again make room for the next ones, a known neighbour
/// whose answer went stale is not pushed out; while nothing can be freed,
/// new addresses are refused (`cache_full`) without a scan of the cache
/// for each.
#[test]
fn an_address_sweep_does_not_push_out_known_neighbours() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    assert!(matches!(r.lookup(HOP_V4.into(), SEC, &mut out), Lookup::Pending { .. }));
    let reply = arp_frame(arp::Operation::Reply, HOP_MAC, HOP_V4, OUR_V4);
    r.on_frame(&reply, SEC, &mut out);
    // 40 s: the router's answer is stale (30 s), as it would be between
    // two uses; the sweep fills the cache.
    let sweep = |i: u32| IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i));
    let t = 40 * SEC;
    for i in 0..15 {
        assert!(matches!(r.lookup(sweep(i), t, &mut out), Lookup::Pending { .. }));
    }
    assert_eq!(r.len(), r.capacity());
    // Nothing to free yet (every request is under a second old): refused.
    for i in 15..1000 {
        assert_eq!(r.lookup(sweep(i), t + u64::from(i), &mut out), Lookup::Failed);
    }
    assert_eq!(r.counters().cache_full, 985);
    // Once the sweep's requests are due again, a new address takes the
    // place of one of them (15 now, 15 more two seconds later), never the
    // router's.
    for (t, from) in [(42 * SEC, 1000), (44 * SEC, 2000)] {
        let taken = (from..from + 100).filter(|&i| matches!(r.lookup(sweep(i), t + u64::from(i), &mut out), Lookup::Pending { .. })).count();
        assert_eq!(taken, 15);
    }
    assert_eq!(r.counters().cache_full, 985 + 2 * 85);
    match r.lookup(HOP_V4.into(), 45 * SEC, &mut out) {
        Lookup::Resolved { mac, request: Some(_) } => assert_eq!(mac, HOP_MAC),
        other => panic!("the router was pushed out: {other:?}"),
    }
}

#[test]
fn gratuitous_arp_for_our_address_is_refused() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    let thief = Address([2, 0, 0, 0, 0, 0x66]);
    let garp = arp_frame(arp::Operation::Request, thief, OUR_V4, OUR_V4);
    assert_eq!(r.on_frame(&garp, SEC, &mut out), None);
    let garp = arp_frame(arp::Operation::Reply, thief, OUR_V4, OUR_V4);
    assert_eq!(r.on_frame(&garp, SEC, &mut out), None);
    assert_eq!(r.counters().own_addr_conflict, 2);
    assert!(r.is_empty());
    // The same for ND: an NA claiming our address.
    let na = nd_frame(
        thief,
        "fe80::66".parse().unwrap(),
        our_v6(),
        icmpv6::Repr::NeighborAdvert {
            flags: icmpv6::NaFlags(icmpv6::NaFlags::OVERRIDE),
            target: our_v6(),
            target_lladdr: Some(thief),
        },
    );
    assert_eq!(r.on_frame(&na, SEC, &mut out), None);
    assert_eq!(r.counters().own_addr_conflict, 3);
}

#[test]
fn arp_flood_is_bounded() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    for i in 0..100_000u32 {
        let ip = Ipv4Addr::from(0x0a00_0000 + i);
        let mac = Address([2, 1, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0]);
        let req = arp_frame(arp::Operation::Request, mac, ip, OUR_V4);
        assert!(r.on_frame(&req, SEC, &mut out).is_some());
        let rep = arp_frame(arp::Operation::Reply, mac, ip, OUR_V4);
        assert!(r.on_frame(&rep, SEC, &mut out).is_none());
    }
    assert!(r.is_empty());
    assert_eq!(r.counters().unsolicited, 100_000);
    assert_eq!(r.counters().replies_sent, 100_000);
    // Lookups of more next hops than the cache holds: bounded, counted.
    for i in 0..100u32 {
        r.lookup(Ipv4Addr::from(0xc000_0200 + i).into(), SEC, &mut out);
    }
    assert_eq!(r.len(), r.capacity());
    assert_eq!(r.counters().cache_full, 100 - 16);
}

#[test]
fn neighbor_discovery() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    let peer: Ipv6Addr = "fe80::fe".parse().unwrap();
    // NS for our address: a solicited NA with our MAC.
    let ns_frame = nd_frame(
        HOP_MAC,
        peer,
        icmpv6::solicited_node(our_v6()),
        icmpv6::Repr::NeighborSolicit {
            target: our_v6(),
            source_lladdr: Some(HOP_MAC),
        },
    );
    let n = r.on_frame(&ns_frame, SEC, &mut out).expect("NA");
    assert_eq!(&out[0..6], &HOP_MAC.0);
    let (src, dst, na) = parse_nd(&out[..n]);
    assert_eq!((src, dst), (our_v6(), peer));
    let icmpv6::Repr::NeighborAdvert {
        flags,
        target,
        target_lladdr,
    } = na
    else {
        panic!()
    };
    assert!(flags.solicited() && flags.override_() && flags.router());
    assert_eq!((target, target_lladdr), (our_v6(), Some(OUR_MAC)));
    // Resolving the peer: NS to its solicited-node group.
    let Lookup::Pending { request: Some(n) } = r.lookup(peer.into(), SEC, &mut out) else {
        panic!()
    };
    assert_eq!(&out[0..6], &[0x33, 0x33, 0xff, 0, 0, 0xfe]);
    let (src, dst, ns) = parse_nd(&out[..n]);
    assert_eq!((src, dst), (our_v6(), icmpv6::solicited_node(peer)));
    assert_eq!(
        ns,
        icmpv6::Repr::NeighborSolicit {
            target: peer,
            source_lladdr: Some(OUR_MAC)
        }
    );
    let na = nd_frame(
        HOP_MAC,
        peer,
        our_v6(),
        icmpv6::Repr::NeighborAdvert {
            flags: icmpv6::NaFlags(icmpv6::NaFlags::SOLICITED),
            target: peer,
            target_lladdr: Some(HOP_MAC),
        },
    );
    assert_eq!(r.on_frame(&na, SEC, &mut out), None);
    assert_eq!(
        r.lookup(peer.into(), SEC, &mut out),
        Lookup::Resolved {
            mac: HOP_MAC,
            request: None
        }
    );
    // Hop limit not 255: ignored (RFC 4861 section 7.1.1).
    let mut bad = ns_frame.clone();
    bad[14 + 7] = 64;
    assert_eq!(r.on_frame(&bad, SEC, &mut out), None);
}

/// Neighbour discovery messages RFC 4861 (sections 7.1.1, 7.1.2, 7.2.3)
/// says to discard are discarded: code not 0, a multicast source or
/// target, a solicited advertisement to a group, duplicate address
/// detection not to a solicited-node group or with a source option; a
/// solicitation for another's address teaches nothing; none is answered
/// to a broadcast MAC (found by review).
#[test]
fn invalid_neighbor_discovery_is_discarded() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    let peer: Ipv6Addr = "fe80::fe".parse().unwrap();
    let ns = |target, lladdr| icmpv6::Repr::NeighborSolicit { target, source_lladdr: lladdr };
    let good = nd_frame(HOP_MAC, peer, icmpv6::solicited_node(our_v6()), ns(our_v6(), Some(HOP_MAC)));
    assert!(r.on_frame(&good, SEC, &mut out).is_some(), "the valid one is answered");
    let ignored = r.counters().ignored;
    let mut code = good.clone();
    code[14 + 40 + 1] = 1;
    // (Its checksum is off too: fixed, so only the code is wrong.)
    let c = u16::from_be_bytes([code[56], code[57]]);
    code[56..58].copy_from_slice(&checksum::update_u16(c, 0x8700, 0x8701).to_be_bytes());
    let group: Ipv6Addr = "ff02::1".parse().unwrap();
    let bad = [
        code,
        nd_frame(HOP_MAC, group, icmpv6::solicited_node(our_v6()), ns(our_v6(), Some(HOP_MAC))),
        nd_frame(HOP_MAC, peer, icmpv6::solicited_node(our_v6()), ns("ff02::1:ff00:1".parse().unwrap(), Some(HOP_MAC))),
        nd_frame(HOP_MAC, Ipv6Addr::UNSPECIFIED, our_v6(), ns(our_v6(), None)),
        nd_frame(HOP_MAC, Ipv6Addr::UNSPECIFIED, icmpv6::solicited_node(our_v6()), ns(our_v6(), Some(HOP_MAC))),
        nd_frame(
            HOP_MAC,
            peer,
            group,
            icmpv6::Repr::NeighborAdvert { flags: icmpv6::NaFlags(icmpv6::NaFlags::SOLICITED), target: peer, target_lladdr: Some(HOP_MAC) },
        ),
    ];
    for (i, f) in bad.iter().enumerate() {
        assert_eq!(r.on_frame(f, SEC, &mut out), None, "{i}");
    }
    assert_eq!(r.counters().ignored, ignored + bad.len() as u64);
    // A broadcast source option: not answered to the broadcast.
    let bcast = nd_frame(HOP_MAC, peer, icmpv6::solicited_node(our_v6()), ns(our_v6(), Some(Address::BROADCAST)));
    assert_eq!(r.on_frame(&bcast, SEC, &mut out), None);
    // A solicitation for another host's address teaches nothing, even
    // about a neighbour we are resolving.
    let other: Ipv6Addr = "fe80::77".parse().unwrap();
    let mut fresh = resolver();
    assert!(matches!(fresh.lookup(other.into(), SEC, &mut out), Lookup::Pending { .. }));
    let not_ours = nd_frame(Address([2, 0, 0, 0, 0, 0x77]), other, icmpv6::solicited_node(peer), ns(peer, Some(Address([2, 0, 0, 0, 0, 0x77]))));
    assert_eq!(fresh.on_frame(&not_ours, SEC, &mut out), None);
    assert_eq!(fresh.lookup(other.into(), SEC + 1, &mut out), Lookup::Pending { request: None }, "not learned");
    // The advertisement of the test above, with no solicited flag to a
    // group, is fine.
    let unsolicited = nd_frame(HOP_MAC, peer, group, icmpv6::Repr::NeighborAdvert { flags: icmpv6::NaFlags(icmpv6::NaFlags::OVERRIDE), target: peer, target_lladdr: Some(HOP_MAC) });
    let before = r.counters().ignored;
    r.on_frame(&unsolicited, SEC, &mut out);
    assert_eq!(r.counters().ignored, before, "a valid unsolicited advertisement is not 'ignored'");
}

/// Echo requests a host must not answer are not answered: a damaged IPv4
/// header or ICMP checksum, a source no host has (0/8, loopback,
/// broadcast, multicast, our own), a request sent to the Ethernet
/// broadcast or from a group MAC (RFC 1122 sections 3.2.1.2, 3.2.1.3,
/// 3.3.6; found by review).
#[test]
fn invalid_echo_requests_are_not_answered() {
    let mut r = resolver();
    let asker = Address([2, 0, 0, 0, 0, 0x44]);
    let frame = |src: Ipv4Addr, eth_src: Address, eth_dst: Address| {
        let mut f = vec![0u8; 14];
        ethernet::Repr { src_addr: eth_src, dst_addr: eth_dst, vlan: None, ethertype: EtherType::IPV4 }
            .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
        f.extend_from_slice(&echo_pkt(src, OUR_V4, 0x99, true));
        f
    };
    let ok = frame(Ipv4Addr::new(192, 0, 2, 44), asker, OUR_MAC);
    assert!(r.answer_echo(&mut ok.clone()));
    // 240.0.0.0/4 is answered: some networks use it inside (pod ranges).
    assert!(r.answer_echo(&mut frame(Ipv4Addr::new(240, 0, 0, 1), asker, OUR_MAC)));
    let mut bad_ip = ok.clone();
    bad_ip[14 + 10] ^= 1;
    let mut bad_icmp = ok.clone();
    bad_icmp[14 + 20 + 2] ^= 1;
    let mut cases = vec![bad_ip, bad_icmp];
    for src in [[0, 1, 2, 3], [127, 0, 0, 1], [255, 255, 255, 255], [224, 0, 0, 1], [239, 9, 9, 9], OUR_V4.octets()] {
        cases.push(frame(Ipv4Addr::from(src), asker, OUR_MAC));
    }
    cases.push(frame(Ipv4Addr::new(192, 0, 2, 44), asker, Address::BROADCAST));
    cases.push(frame(Ipv4Addr::new(192, 0, 2, 44), Address([1, 0, 0x5e, 0, 0, 1]), OUR_MAC));
    for (i, mut f) in cases.into_iter().enumerate() {
        let before = f.clone();
        assert!(!r.answer_echo(&mut f), "case {i} answered");
        assert_eq!(f, before, "case {i} changed");
    }
    assert_eq!(r.counters().echo_replies, 2);
}

/// A port with a link-local and a global address solicits a link-local
/// neighbor from its link-local address and any other from its global
/// one, whatever their order; with one address only, from that one.
#[test]
fn solicitations_leave_from_the_targets_scope() {
    let global: Ipv6Addr = "2001:db8:2::1".parse().unwrap();
    let source = |ipv6: Vec<Ipv6Addr>, target: &str| {
        let mut r = Resolver::new(ResolverConfig { mac: OUR_MAC, ipv6, capacity: 16, ..ResolverConfig::default() });
        let mut out = [0u8; FRAME_MAX];
        let Lookup::Pending { request: Some(n) } = r.lookup(target.parse::<Ipv6Addr>().unwrap().into(), SEC, &mut out) else {
            panic!("a solicitation for {target}")
        };
        parse_nd(&out[..n]).0
    };
    for both in [vec![our_v6(), global], vec![global, our_v6()]] {
        assert_eq!(source(both.clone(), "fe80::fe"), our_v6());
        assert_eq!(source(both.clone(), "2001:db8:2::fe"), global);
    }
    assert_eq!(source(vec![global], "fe80::fe"), global);
    assert_eq!(source(vec![our_v6()], "2001:db8:2::fe"), our_v6());
}

#[test]
fn answers_ping_in_place() {
    let mut r = resolver();
    let asker = Address([2, 0, 0, 0, 0, 0x44]);
    let from = Ipv4Addr::new(192, 0, 2, 44);
    let mut f = vec![0u8; 14];
    ethernet::Repr {
        src_addr: asker,
        dst_addr: OUR_MAC,
        vlan: None,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    f.extend_from_slice(&echo_pkt(from, OUR_V4, 0x99, true));
    let mut reply = f.clone();
    assert!(r.answer_echo(&mut reply));
    assert_eq!(&reply[0..6], &asker.0);
    assert_eq!(&reply[6..12], &OUR_MAC.0);
    assert_checksums(&reply[14..]);
    let ip = ipv4::Packet::new_checked(&reply[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl()), (OUR_V4, from, 64));
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (icmp.msg_type(), icmp.echo_ident(), icmp.echo_seq()),
        (0, 0x99, 7)
    );
    // Not to us: left alone.
    let mut other = f.clone();
    other[14 + 19] = 2;
    let before = other.clone();
    assert!(!r.answer_echo(&mut other));
    assert_eq!(other, before);

    // ICMPv6 echo to our address.
    let peer: Ipv6Addr = "fe80::44".parse().unwrap();
    let echo = icmpv6::Repr::Echo {
        request: true,
        ident: 5,
        seq: 6,
        data_len: 4,
    };
    let mut f = vec![0u8; 14 + 40 + 12];
    ethernet::Repr {
        src_addr: asker,
        dst_addr: OUR_MAC,
        vlan: None,
        ethertype: EtherType::IPV6,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    ipv6::Repr {
        src_addr: peer,
        dst_addr: our_v6(),
        next_header: braid_tunnel::wire::IpProtocol::ICMPV6,
        payload_len: 12,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut f[14..]));
    f[62..66].copy_from_slice(b"abcd");
    echo.emit(
        &mut icmpv6::Packet::new_unchecked(&mut f[54..]),
        &braid_tunnel::wire::AddrPair::V6 {
            src: peer,
            dst: our_v6(),
        },
    );
    assert!(r.answer_echo(&mut f));
    let ip = ipv6::Packet::new_checked(&f[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (our_v6(), peer));
    let m = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert!(m.verify_checksum(&ip.addrs()));
    assert_eq!((m.msg_type(), m.echo_ident()), (129, 5));
    assert!(checksum::sum(&[]) == 0);
    assert_eq!(r.counters().echo_replies, 2);
}

fn advert(peer: Ipv6Addr, flags: u8, mac: Option<Address>) -> Vec<u8> {
    nd_frame(
        mac.unwrap_or(HOP_MAC),
        peer,
        our_v6(),
        icmpv6::Repr::NeighborAdvert { flags: icmpv6::NaFlags(flags), target: peer, target_lladdr: mac },
    )
}

/// A resolver with neighbour fe80::fe resolved (HOP_MAC), reachable
/// from 1 s.
fn resolved_v6() -> (Resolver, Ipv6Addr) {
    let (mut r, mut out) = (resolver(), [0u8; FRAME_MAX]);
    let peer: Ipv6Addr = "fe80::fe".parse().unwrap();
    assert!(matches!(r.lookup(peer.into(), SEC, &mut out), Lookup::Pending { request: Some(_) }));
    r.on_frame(&advert(peer, icmpv6::NaFlags::SOLICITED, Some(HOP_MAC)), SEC, &mut out);
    assert_eq!(r.lookup(peer.into(), SEC, &mut out), Lookup::Resolved { mac: HOP_MAC, request: None });
    (r, peer)
}

/// Found by review: Linux answers a unicast solicitation without the
/// target link-layer address option (RFC 4861 section 4.4 allows it);
/// that answer confirms the entry. Before, it was ignored and the entry
/// failed after 3 probes: 20 s without the next hop every ~53 s.
#[test]
fn an_advertisement_without_its_option_confirms_a_probed_entry() {
    let (mut r, peer) = resolved_v6();
    let mut out = [0u8; FRAME_MAX];
    let mut t = 32 * SEC;
    for _ in 0..5 {
        let Lookup::Resolved { mac: HOP_MAC, request: Some(_) } = r.lookup(peer.into(), t, &mut out) else { panic!("probe due at {t}") };
        assert_eq!(&out[0..6], &HOP_MAC.0, "a unicast probe");
        r.on_frame(&advert(peer, icmpv6::NaFlags::SOLICITED, None), t, &mut out);
        assert_eq!(r.lookup(peer.into(), t + SEC, &mut out), Lookup::Resolved { mac: HOP_MAC, request: None });
        t += 31 * SEC;
    }
    assert_eq!(r.counters().unresolved, 0);
    // Unsolicited and without the option: nothing to learn.
    let ignored = r.counters().ignored;
    r.on_frame(&advert(peer, icmpv6::NaFlags::OVERRIDE, None), t, &mut out);
    assert_eq!(r.counters().ignored, ignored + 1);
}

/// Found by review: advertisements' flags were ignored and any MAC taken.
#[test]
fn advertisements_follow_their_flags_and_only_unicast_macs_are_taken() {
    let (mut r, peer) = resolved_v6();
    let mut out = [0u8; FRAME_MAX];
    let other = Address([0x02, 0, 0, 0, 0, 0x77]);
    // Without Override another MAC does not replace the known one.
    r.on_frame(&advert(peer, icmpv6::NaFlags::SOLICITED, Some(other)), 2 * SEC, &mut out);
    assert!(matches!(r.lookup(peer.into(), 2 * SEC, &mut out), Lookup::Resolved { mac: HOP_MAC, .. }));
    // With Override, unsolicited: the new MAC, to be confirmed (a probe).
    r.on_frame(&advert(peer, icmpv6::NaFlags::OVERRIDE, Some(other)), 3 * SEC, &mut out);
    assert!(matches!(r.lookup(peer.into(), 3 * SEC, &mut out), Lookup::Resolved { mac, request: Some(_) } if mac == other));
    // Broadcast, multicast or zero MACs are never taken (ARP or ND).
    for bad in [Address::BROADCAST, Address([0x01, 0, 0x5e, 0, 0, 1]), Address([0x33, 0x33, 0, 0, 0, 1]), Address([0; 6])] {
        r.on_frame(&advert(peer, icmpv6::NaFlags::SOLICITED | icmpv6::NaFlags::OVERRIDE, Some(bad)), 4 * SEC, &mut out);
        assert!(matches!(r.lookup(peer.into(), 4 * SEC, &mut out), Lookup::Resolved { mac, .. } if mac == other), "{bad:?}");
    }
    let Lookup::Pending { .. } = r.lookup(HOP_V4.into(), SEC, &mut out) else { panic!() };
    r.on_frame(&arp_frame(arp::Operation::Reply, HOP_MAC, HOP_V4, OUR_V4), SEC, &mut out);
    for bad in [Address::BROADCAST, Address([0x01, 0, 0x5e, 0, 0, 1])] {
        for op in [arp::Operation::Reply, arp::Operation::Request] {
            r.on_frame(&arp_frame(op, bad, HOP_V4, OUR_V4), 2 * SEC, &mut out);
        }
        assert!(matches!(r.lookup(HOP_V4.into(), 2 * SEC, &mut out), Lookup::Resolved { mac: HOP_MAC, .. }), "{bad:?}");
    }
}

/// Found by review: requests nobody looked up again (a sweep of on-link
/// addresses) stayed in the cache for good, and a full cache refused every
/// new neighbour. Their time up, they make room.
#[test]
fn a_sweep_of_addresses_does_not_fill_the_cache_for_good() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    for i in 0..r.capacity() {
        let ip = IpAddr::from(Ipv4Addr::new(192, 0, 2, 10 + i as u8));
        assert!(matches!(r.lookup(ip, SEC, &mut out), Lookup::Pending { .. }));
    }
    let new = IpAddr::from(Ipv4Addr::new(192, 0, 2, 200));
    assert!(matches!(r.lookup(new, SEC, &mut out), Lookup::Failed), "full now");
    assert!(matches!(r.lookup(new, 3 * SEC, &mut out), Lookup::Pending { request: Some(_) }), "room made");
    assert_eq!(r.len(), r.capacity());
}

/// Found by review: a host that wants our IPv6 address checks it with
/// duplicate address detection (a solicitation from `::`); unanswered, it
/// takes the address. It is answered to all nodes (RFC 4861 7.2.4).
#[test]
fn our_ipv6_address_is_defended_against_duplicate_address_detection() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    let dad = nd_frame(
        Address([0x02, 0, 0, 0, 0, 0x66]),
        Ipv6Addr::UNSPECIFIED,
        icmpv6::solicited_node(our_v6()),
        icmpv6::Repr::NeighborSolicit { target: our_v6(), source_lladdr: None },
    );
    let n = r.on_frame(&dad, SEC, &mut out).expect("defended");
    assert_eq!(&out[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    let (src, dst, na) = parse_nd(&out[..n]);
    assert_eq!((src, dst), (our_v6(), "ff02::1".parse().unwrap()));
    let icmpv6::Repr::NeighborAdvert { flags, target, target_lladdr } = na else { panic!("{na:?}") };
    assert!(!flags.solicited() && flags.override_());
    assert_eq!((target, target_lladdr), (our_v6(), Some(OUR_MAC)));
    assert_eq!(r.counters().own_addr_conflict, 1);
    // A flood of them is answered at most once per DEFENCE_INTERVAL (each
    // answer goes to every node of the link).
    let answers = (0..100).filter(|k| r.on_frame(&dad, SEC + k * DEFENCE_INTERVAL / 10, &mut out).is_some()).count();
    assert_eq!(answers, 9, "1 s in steps of 10 ms, the first already answered just before");
    assert_eq!(r.counters().own_addr_conflict, 101);
    // Someone else's address: not ours to defend.
    let other = nd_frame(
        Address([0x02, 0, 0, 0, 0, 0x66]),
        Ipv6Addr::UNSPECIFIED,
        icmpv6::solicited_node("fe80::66".parse().unwrap()),
        icmpv6::Repr::NeighborSolicit { target: "fe80::66".parse().unwrap(), source_lladdr: None },
    );
    assert_eq!(r.on_frame(&other, SEC, &mut out), None);
}

/// Found by review of the rules above: a failed entry has no MAC worth
/// keeping. An advertisement without the option does not confirm it (it
/// would have confirmed the broadcast MAC it was made with), and a
/// neighbour that speaks up with its MAC revives it at once.
#[test]
fn a_failed_entry_is_revived_by_its_neighbour_not_by_nothing() {
    let mut r = resolver();
    let mut out = [0u8; FRAME_MAX];
    let peer: Ipv6Addr = "fe80::fe".parse().unwrap();
    for t in 0..4 {
        r.lookup(peer.into(), t * SEC, &mut out);
    }
    assert_eq!(r.lookup(peer.into(), 4 * SEC, &mut out), Lookup::Failed);
    r.on_frame(&advert(peer, icmpv6::NaFlags::SOLICITED, None), 4 * SEC, &mut out);
    assert_eq!(r.lookup(peer.into(), 4 * SEC, &mut out), Lookup::Failed, "nothing learned");
    let ns = nd_frame(HOP_MAC, peer, icmpv6::solicited_node(our_v6()), icmpv6::Repr::NeighborSolicit { target: our_v6(), source_lladdr: Some(HOP_MAC) });
    assert!(r.on_frame(&ns, 5 * SEC, &mut out).is_some(), "answered");
    assert_eq!(r.lookup(peer.into(), 5 * SEC, &mut out), Lookup::Resolved { mac: HOP_MAC, request: None }, "revived");
    // The same for ARP.
    for t in 0..4 {
        r.lookup(HOP_V4.into(), t * SEC, &mut out);
    }
    assert_eq!(r.lookup(HOP_V4.into(), 4 * SEC, &mut out), Lookup::Failed);
    r.on_frame(&arp_frame(arp::Operation::Request, HOP_MAC, HOP_V4, OUR_V4), 5 * SEC, &mut out);
    assert_eq!(r.lookup(HOP_V4.into(), 5 * SEC, &mut out), Lookup::Resolved { mac: HOP_MAC, request: None });
}
