//! The gateway answers for its own addresses, end to end on net_ring ports:
//! ARP requests and IPv6 neighbor solicitations for A's LAN address, ICMP
//! and ICMPv6 echo to A's LAN and WAN addresses (replies checked byte by
//! byte, checksums verified), ARP for other addresses ignored, gratuitous
//! ARP/NA claiming A's address refused, a flood of 100,000 ARP
//! requests counted without growing anything while tunnel traffic still
//! gets through, and a flood of 30,000 requests for A's WAN address each
//! answered once, learned nowhere, with tunnel traffic alongside. Every
//! frame is counted once (`lab::assert_conserved`).

use std::net::{Ipv4Addr, Ipv6Addr};

use braid_dataplane::counters::LocalDrop;
use braid_dataplane::lab::traffic::{ip_packet, Family, Flow, L4};
use braid_dataplane::lab::{self, Checker, Lab, LabOptions};
use braid_dpdk::{Mbuf, BURST};
use braid_tunnel::wire::checksum;
use braid_tunnel::wire::ethernet::{self, Address, EtherType};
use braid_tunnel::wire::{arp, icmpv6, ipv6, AddrPair, IpProtocol};

const A_LAN4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const A_LAN6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
const A_WAN4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const A_WAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1);
const HOST4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const HOST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
/// A host on A's WAN side (not B).
const FAR4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const FAR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 9);
const FAR_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 9];

/// A's LAN port gets 10.1.0.1/24 and fd00:1::1/64, its WAN port an IPv6
/// address besides 192.0.2.1.
fn start(case: &str, mode: &str) -> (Lab, std::sync::MutexGuard<'static, ()>) {
    start_with(case, mode, false)
}

/// [`start`], the ports reporting their groups by MLD when `mld`.
fn start_with(case: &str, mode: &str, mld: bool) -> (Lab, std::sync::MutexGuard<'static, ()>) {
    let (_eal, guard) = braid_dpdk::testing::eal(&[], 1536);
    let opts = LabOptions {
        edit: Some(Box::new(|side_a, doc| {
            if side_a {
                doc["ports"][0]["ipv4"] = "10.1.0.1/24".into();
                doc["ports"][0]["ipv6"] = "fd00:1::1/64".into();
                doc["ports"][1]["ipv6"] = "2001:db8:a::1/64".into();
            }
        })),
        mld,
        ..Default::default()
    };
    let mut lab = Lab::with(case, mode, &[1, 1], 16, 1500, opts);
    lab.read_a_lan = true;
    (lab, guard)
}

fn host_mac() -> [u8; 6] {
    lab::mac(lab::A_HOST_MAC)
}
fn lan_mac() -> [u8; 6] {
    lab::mac(lab::A_LAN_MAC)
}
fn wan_mac() -> [u8; 6] {
    lab::mac(lab::A_WAN_MAC)
}

/// An ARP frame as a kernel sends it: 42 bytes, no padding.
fn arp_frame(op: arp::Operation, eth_dst: [u8; 6], sender: ([u8; 6], Ipv4Addr), target: ([u8; 6], Ipv4Addr)) -> Vec<u8> {
    let mut f = vec![0u8; 14 + arp::PACKET_LEN];
    ethernet::Repr { src_addr: Address(sender.0), dst_addr: Address(eth_dst), vlan: None, ethertype: EtherType::ARP }
        .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    arp::Repr { op, sender_hw: Address(sender.0), sender_ip: sender.1, target_hw: Address(target.0), target_ip: target.1 }
        .emit(&mut arp::Packet::new_unchecked(&mut f[14..]));
    f
}

/// An Ethernet + IPv6 frame around an ICMPv6 message, checksum filled.
fn icmpv6_frame(eth: ([u8; 6], [u8; 6]), src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, msg: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + msg.len()];
    ethernet::Repr { src_addr: Address(eth.0), dst_addr: Address(eth.1), vlan: None, ethertype: EtherType::IPV6 }
        .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: msg.len(),
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut f[14..]));
    f[54..].copy_from_slice(msg);
    icmpv6::Packet::new_unchecked(&mut f[54..]).fill_checksum(&AddrPair::V6 { src, dst });
    f
}

/// A neighbor solicitation for `target` from the host, to the target's
/// solicited-node group, with the host's link-layer address.
fn ns_frame(target: Ipv6Addr) -> Vec<u8> {
    let group = icmpv6::solicited_node(target);
    let nd = icmpv6::Repr::NeighborSolicit { target, source_lladdr: Some(Address(host_mac())) };
    let mut msg = vec![0u8; nd.buffer_len()];
    nd.emit(&mut icmpv6::Packet::new_unchecked(&mut msg[..]), &AddrPair::V6 { src: HOST6, dst: group });
    icmpv6_frame((host_mac(), icmpv6::multicast_mac(group).0), HOST6, group, 255, &msg)
}

/// An ICMP echo request frame with `data`.
fn echo4_frame(eth: ([u8; 6], [u8; 6]), src: Ipv4Addr, dst: Ipv4Addr, data: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + data.len();
    let mut f = vec![0u8; 14 + total];
    f[..6].copy_from_slice(&eth.1);
    f[6..12].copy_from_slice(&eth.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip.copy_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = !checksum::sum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut f[34..];
    icmp[..8].copy_from_slice(&[8, 0, 0, 0, 0xbe, 0xef, 0, 1]);
    icmp[8..].copy_from_slice(data);
    let c = !checksum::sum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f
}

/// An ICMPv6 echo request frame with `data`.
fn echo6_frame(eth: ([u8; 6], [u8; 6]), src: Ipv6Addr, dst: Ipv6Addr, data: &[u8]) -> Vec<u8> {
    let mut msg = vec![128, 0, 0, 0, 0xbe, 0xef, 0, 1];
    msg.extend_from_slice(data);
    icmpv6_frame(eth, src, dst, 64, &msg)
}

/// Sends raw frames into A's LAN and steps the lab a few times.
fn to_a_lan(lab: &mut Lab, frames: &[Vec<u8>]) {
    let mut v: Vec<Mbuf> = frames.iter().map(|f| lab.raw(f)).collect();
    lab.gen.tx.tx_all(&mut v, 1000);
    assert!(v.is_empty(), "A's LAN ring full");
    for _ in 0..3 {
        lab.step();
    }
}

/// Sends raw frames into A's WAN port and steps the lab a few times.
fn to_a_wan(lab: &mut Lab, frames: &[Vec<u8>]) {
    let mut v: Vec<Mbuf> = frames.iter().map(|f| lab.raw(f)).collect();
    lab.mid_a.tx.tx_all(&mut v, 1000);
    assert!(v.is_empty(), "A's WAN ring full");
    for _ in 0..3 {
        lab.step();
    }
}

/// What A sent to its LAN since the last call.
fn from_a_lan(lab: &mut Lab) -> Vec<Vec<u8>> {
    std::mem::take(&mut lab.delivered_a)
}

/// ICMP / ICMPv6 frames A sent out of its WAN port (captured).
fn icmp_from_a_wan(lab: &mut Lab) -> Vec<Vec<u8>> {
    let cap = lab.capture.replace(Vec::new()).unwrap_or_default();
    cap.into_iter()
        .filter(|f| (f[12..14] == [0x08, 0x00] && f[23] == 1) || (f[12..14] == [0x86, 0xdd] && f[20] == 58))
        .collect()
}

/// Checks an ICMP echo reply against its request, field by field.
fn check_echo4_reply(reply: &[u8], request: &[u8], mac: [u8; 6]) {
    assert_eq!(reply.len(), request.len());
    assert_eq!(reply[..6], request[6..12], "to the requester's MAC");
    assert_eq!(reply[6..12], mac, "from the port's MAC");
    assert_eq!(reply[12..14], [0x08, 0x00]);
    let (ip, req) = (&reply[14..34], &request[14..34]);
    assert_eq!(ip[12..16], req[16..20], "source: the address pinged");
    assert_eq!(ip[16..20], req[12..16], "destination: the requester");
    assert_eq!(ip[9], 1);
    assert_eq!(ip[8], 64, "TTL");
    assert_eq!(checksum::sum(ip), 0xffff, "IPv4 header checksum");
    let icmp = &reply[34..];
    assert_eq!(icmp[0..2], [0, 0], "echo reply");
    assert_eq!(icmp[4..], request[38..], "identifier, sequence and data echoed");
    assert_eq!(checksum::sum(icmp), 0xffff, "ICMP checksum");
}

/// Checks an ICMPv6 echo reply against its request, field by field.
fn check_echo6_reply(reply: &[u8], request: &[u8], mac: [u8; 6]) {
    assert_eq!(reply.len(), request.len());
    assert_eq!(reply[..6], request[6..12], "to the requester's MAC");
    assert_eq!(reply[6..12], mac, "from the port's MAC");
    let ip = ipv6::Packet::new_checked(&reply[14..]).unwrap();
    let req = ipv6::Packet::new_checked(&request[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (req.dst_addr(), req.src_addr()));
    assert_eq!(ip.next_header(), IpProtocol::ICMPV6);
    assert_eq!(ip.hop_limit(), 64);
    let icmp = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (129, 0));
    assert_eq!(reply[58..], request[58..], "identifier, sequence and data echoed");
    assert!(icmp.verify_checksum(&AddrPair::V6 { src: ip.src_addr(), dst: ip.dst_addr() }), "ICMPv6 checksum");
}

/// An ARP request for A's LAN address gets exactly the RFC 826 reply; one
/// for another address gets nothing and is counted.
#[test]
fn arp_for_the_lan_address_is_answered_and_others_ignored() {
    let (mut lab, _g) = start("arpq", "bundle");
    let host = (host_mac(), HOST4);
    let ask = |ip| arp_frame(arp::Operation::Request, [0xff; 6], host, ([0; 6], ip));
    to_a_lan(&mut lab, &[ask(A_LAN4), ask(Ipv4Addr::new(10, 1, 0, 77))]);
    let got = from_a_lan(&mut lab);
    assert_eq!(got.len(), 1, "one reply");
    let mut want = Vec::new();
    want.extend_from_slice(&host_mac()); // to the asker
    want.extend_from_slice(&lan_mac()); // from A's LAN port
    want.extend_from_slice(&[0x08, 0x06]); // ARP
    want.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]); // Ethernet, IPv4, reply
    want.extend_from_slice(&lan_mac()); // sender: A's MAC
    want.extend_from_slice(&A_LAN4.octets()); // ... for the address asked
    want.extend_from_slice(&host_mac()); // target: the asker
    want.extend_from_slice(&HOST4.octets());
    want.resize(60, 0); // padded to the Ethernet minimum
    assert_eq!(got[0], want, "ARP reply byte by byte");
    let (a, b) = lab.counters();
    assert_eq!(a.local.arp_replies, 1);
    assert_eq!(a.local.get(LocalDrop::NotForUs), 1);
    assert_eq!(a.local.received, 2);
    assert_eq!(a.local.neighbors, 0, "requests are never learned");
    assert_eq!(a.drops.named(), vec![], "nothing else dropped");
    assert_eq!(a.lan_tx.packets, 1);
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// A neighbor solicitation for A's LAN IPv6 address gets a solicited
/// neighbor advertisement with A's MAC and a valid checksum.
#[test]
fn neighbor_solicitation_for_the_lan_address_is_answered() {
    let (mut lab, _g) = start("ndq", "bundle");
    to_a_lan(&mut lab, &[ns_frame(A_LAN6), ns_frame("fd00:1::77".parse().unwrap())]);
    let got = from_a_lan(&mut lab);
    assert_eq!(got.len(), 1, "one advertisement");
    let na = &got[0];
    assert_eq!(na[..6], host_mac(), "to the solicitor's link-layer address");
    assert_eq!(na[6..12], lan_mac());
    assert_eq!(na[12..14], [0x86, 0xdd]);
    let ip = ipv6::Packet::new_checked(&na[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (A_LAN6, HOST6));
    assert_eq!(ip.hop_limit(), 255, "RFC 4861 7.1.2");
    let addrs = AddrPair::V6 { src: A_LAN6, dst: HOST6 };
    let msg = icmpv6::Packet::new_checked(ip.payload()).unwrap();
    assert!(msg.verify_checksum(&addrs), "ICMPv6 checksum");
    match icmpv6::Repr::parse(&msg, &addrs, true).unwrap() {
        Some(icmpv6::Repr::NeighborAdvert { flags, target, target_lladdr }) => {
            assert_eq!(target, A_LAN6);
            assert_eq!(target_lladdr, Some(Address(lan_mac())));
            assert!(flags.solicited() && flags.override_() && flags.router(), "{flags:?}");
        }
        other => panic!("not an NA: {other:?}"),
    }
    let (a, b) = lab.counters();
    assert_eq!(a.local.na_replies, 1);
    assert_eq!(a.local.get(LocalDrop::NotForUs), 1);
    assert_eq!(a.drops.named(), vec![]);
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// Ping, IPv4 and IPv6, to A's LAN address from the host and to A's WAN
/// address from the WAN side: each answered out of the port it came in
/// on, checksums valid; in both modes (plain mode counts WAN frames
/// one for one, so the replies must be accounted for there too).
#[test]
fn ping_to_the_lan_and_wan_addresses_is_answered() {
    for mode in ["bundle", "plain"] {
        let (mut lab, _g) = start(&format!("ping{}", &mode[..1]), mode);
        let data: Vec<u8> = (0..56u8).collect();
        let lan = (host_mac(), lan_mac());
        let req4 = echo4_frame(lan, HOST4, A_LAN4, &data);
        let req6 = echo6_frame(lan, HOST6, A_LAN6, &data);
        // An echo to another host on A's LAN is routed as before (no route).
        let other = echo4_frame(lan, HOST4, Ipv4Addr::new(10, 1, 0, 3), &data);
        to_a_lan(&mut lab, &[req4.clone(), req6.clone(), other]);
        let got = from_a_lan(&mut lab);
        assert_eq!(got.len(), 2, "{mode}: two replies on the LAN");
        check_echo4_reply(&got[0], &req4, lan_mac());
        check_echo6_reply(&got[1], &req6, lan_mac());

        lab.capture = Some(Vec::new());
        lab.capture_limit = 1000;
        let wan = (FAR_MAC, wan_mac());
        let req4 = echo4_frame(wan, FAR4, A_WAN4, &data);
        let req6 = echo6_frame(wan, FAR6, A_WAN6, &data);
        // An ARP request for the WAN address is answered on the WAN too.
        let ask = arp_frame(arp::Operation::Request, [0xff; 6], (FAR_MAC, FAR4), ([0; 6], A_WAN4));
        to_a_wan(&mut lab, &[req4.clone(), req6.clone(), ask]);
        let got = icmp_from_a_wan(&mut lab);
        assert_eq!(got.len(), 2, "{mode}: two replies on the WAN");
        check_echo4_reply(&got[0], &req4, wan_mac());
        check_echo6_reply(&got[1], &req6, wan_mac());

        // A request to A's LAN address it must not answer (a damaged
        // ICMP checksum): dropped and counted, not routed on.
        let mut bad = echo4_frame(lan, HOST4, A_LAN4, &data);
        bad[14 + 20 + 2] ^= 1;
        to_a_lan(&mut lab, &[bad]);
        assert!(from_a_lan(&mut lab).is_empty(), "{mode}: not answered");

        let (a, b) = lab.counters();
        let l = &a.local;
        assert_eq!((l.echo_v4_replies, l.echo_v6_replies, l.arp_replies), (2, 2, 1), "{mode}: {l:?}");
        assert_eq!((l.lan_replies, l.wan_replies, l.wan_replies_sent), (2, 3, 3), "{mode}");
        assert_eq!(l.get(LocalDrop::Malformed), 1, "{mode}: {l:?}");
        assert_eq!(a.drops.named(), vec![("no_route", 1)], "{mode}");
        lab::assert_conserved(&a, "A", mode == "plain");
        lab::assert_conserved(&b, "B", mode == "plain");
        lab.close();
    }
}

/// Gratuitous ARP (request and reply) and an unsolicited NA claiming A's
/// own addresses are refused and counted; A still answers for them after.
#[test]
fn gratuitous_claims_on_our_addresses_are_refused() {
    let (mut lab, _g) = start("garp", "bundle");
    let thief = [0x02, 0x66, 0, 0, 0, 6];
    let garp_req = arp_frame(arp::Operation::Request, [0xff; 6], (thief, A_LAN4), ([0; 6], A_LAN4));
    let garp_rep = arp_frame(arp::Operation::Reply, [0xff; 6], (thief, A_LAN4), ([0xff; 6], A_LAN4));
    let na = icmpv6::Repr::NeighborAdvert {
        flags: icmpv6::NaFlags(icmpv6::NaFlags::OVERRIDE),
        target: A_LAN6,
        target_lladdr: Some(Address(thief)),
    };
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let mut msg = vec![0u8; na.buffer_len()];
    na.emit(&mut icmpv6::Packet::new_unchecked(&mut msg[..]), &AddrPair::V6 { src: HOST6, dst: all_nodes });
    let gna = icmpv6_frame((thief, [0x33, 0x33, 0, 0, 0, 1]), HOST6, all_nodes, 255, &msg);
    // An unsolicited ARP reply about someone else: counted, not learned.
    let stray = arp_frame(arp::Operation::Reply, lan_mac(), (thief, Ipv4Addr::new(10, 1, 0, 66)), (lan_mac(), A_LAN4));
    to_a_lan(&mut lab, &[garp_req, garp_rep, gna, stray]);
    assert!(from_a_lan(&mut lab).is_empty(), "nothing answered");
    let (a, _) = lab.counters();
    assert_eq!(a.local.get(LocalDrop::OwnAddrConflict), 3, "{:?}", a.local);
    assert_eq!(a.local.get(LocalDrop::Unsolicited), 1, "{:?}", a.local);
    assert_eq!(a.local.neighbors, 0);
    // A still answers for its address, with its own MAC.
    to_a_lan(&mut lab, &[arp_frame(arp::Operation::Request, [0xff; 6], (host_mac(), HOST4), ([0; 6], A_LAN4))]);
    let got = from_a_lan(&mut lab);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0][22..28], lan_mac(), "sender hardware address is A's");
    // The same claims on the WAN port's address, from the WAN: refused,
    // learned nowhere, and tunnel traffic goes on.
    let wan_req = arp_frame(arp::Operation::Request, [0xff; 6], (thief, A_WAN4), ([0; 6], A_WAN4));
    let wan_rep = arp_frame(arp::Operation::Reply, [0xff; 6], (thief, A_WAN4), ([0xff; 6], A_WAN4));
    to_a_wan(&mut lab, &[wan_req, wan_rep]);
    let (a, _) = lab.counters();
    assert_eq!(a.local.get(LocalDrop::OwnAddrConflict), 5, "{:?}", a.local);
    assert_eq!(a.local.neighbors, 0);
    let flows: Vec<Flow> = (0..4).map(|i| Flow::a_to_b(i, Family::V4, L4::Udp)).collect();
    let mut burst: Vec<Mbuf> = flows.iter().map(|f| lab.frame_to_a(&ip_packet(f, 0, 200))).collect();
    lab.gen.tx.tx_all(&mut burst, 1000);
    lab.settle(5);
    assert_eq!(lab.delivered.len(), flows.len(), "tunnel traffic after the claims");
    let (a, b) = lab.counters();
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// Bytes of each tunnelled packet the flood tests send alongside.
const TUNNEL_BYTES: usize = 200;

/// A xorshift64 generator from `seed` (not 0).
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// Fills `burst` up to `upto` frames with tunnel traffic into A's LAN:
/// packet `seq` of each flow in turn (`at` = (seq, next flow)), until every
/// flow sent `per_flow`.
fn tunnel_traffic(lab: &Lab, burst: &mut Vec<Mbuf>, upto: usize, flows: &[Flow], at: (&mut u32, &mut usize), per_flow: u32) {
    let (seq, f) = at;
    while burst.len() < upto && *seq < per_flow {
        burst.push(lab.frame_to_a(&ip_packet(&flows[*f], *seq, TUNNEL_BYTES)));
        *f += 1;
        if *f == flows.len() {
            *f = 0;
            *seq += 1;
        }
    }
}

/// The tunnel traffic sent alongside a flood all arrived, in order and
/// intact (`want` packets); nothing was dropped; every frame is counted
/// once and no mbuf is lost. Closes the lab.
fn tunnel_traffic_arrived(lab: Lab, checker: &Checker, want: u64) {
    let (a, b) = lab.counters();
    assert!(checker.bad.is_empty(), "{:?}", &checker.bad[..checker.bad.len().min(5)]);
    assert_eq!(checker.received, want, "every tunnelled packet arrived");
    assert_eq!(a.drops.named(), vec![], "A dropped");
    assert_eq!(b.drops.named(), vec![], "B dropped");
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// 100,000 ARP requests for random addresses from random senders and
/// 20,000 neighbor solicitations for random targets, with tunnel traffic in
/// the same bursts: every request counted, the neighbor cache stays empty,
/// nothing is answered, and every tunnelled packet reaches B in order.
#[test]
fn an_arp_flood_is_counted_and_bounded_and_traffic_still_flows() {
    let (mut lab, _g) = start("aflood", "bundle");
    let flows: Vec<Flow> = (0..8).map(|i| Flow::a_to_b(i, if i % 2 == 0 { Family::V4 } else { Family::V6 }, L4::Udp)).collect();
    let size_of = |_: u32, _: u32| TUNNEL_BYTES;
    const FLOOD: u32 = 100_000;
    const NS_FLOOD: u32 = 20_000;
    const PER_FLOW: u32 = 500;
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let (mut sent_arp, mut sent_ns, mut seq, mut f) = (0u32, 0u32, 0u32, 0usize);
    let mut checker = Checker::default();
    let mut replies = 0usize;
    while sent_arp < FLOOD || sent_ns < NS_FLOOD || seq < PER_FLOW {
        let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
        for _ in 0..24 {
            if sent_arp == FLOOD {
                break;
            }
            let r = next();
            let mut target = Ipv4Addr::from((r >> 32) as u32);
            if target == A_LAN4 {
                target = Ipv4Addr::new(10, 1, 0, 99);
            }
            let sender = Ipv4Addr::from(r as u32 | 1);
            let mac = [0x02, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8, r as u8, 0x42];
            burst.push(lab.raw(&arp_frame(arp::Operation::Request, [0xff; 6], (mac, sender), ([0; 6], target))));
            sent_arp += 1;
        }
        for _ in 0..4 {
            if sent_ns == NS_FLOOD {
                break;
            }
            let r = next();
            let target = Ipv6Addr::new(0xfd00, 1, 0, 0, (r >> 48) as u16, (r >> 32) as u16, (r >> 16) as u16, r as u16 | 0x100);
            burst.push(lab.raw(&ns_frame(target)));
            sent_ns += 1;
        }
        tunnel_traffic(&lab, &mut burst, BURST, &flows, (&mut seq, &mut f), PER_FLOW);
        lab.gen.tx.tx_all(&mut burst, 1000);
        assert!(burst.is_empty(), "A's LAN ring full");
        lab.step();
        replies += from_a_lan(&mut lab).len();
        for frame in std::mem::take(&mut lab.delivered) {
            checker.check(&frame, &flows, size_of);
        }
    }
    lab.settle(20);
    for frame in std::mem::take(&mut lab.delivered) {
        checker.check(&frame, &flows, size_of);
    }
    replies += from_a_lan(&mut lab).len();
    let (a, _) = lab.counters();
    eprintln!("A local {:?}", a.local);
    assert_eq!(replies, 0, "no request was for A");
    assert_eq!(a.local.received, (FLOOD + NS_FLOOD) as u64);
    assert_eq!(a.local.get(LocalDrop::NotForUs), (FLOOD + NS_FLOOD) as u64);
    assert_eq!(a.local.neighbors, 0, "the cache did not grow");
    tunnel_traffic_arrived(lab, &checker, flows.len() as u64 * PER_FLOW as u64);
}

/// 30,000 ARP requests for A's WAN address, from as many senders, into A's
/// WAN port with tunnel traffic in the same polls: each is answered once,
/// to its sender, with A's WAN MAC and address; none is learned (the
/// neighbor cache stays empty); every tunnelled packet reaches B in order;
/// nothing is dropped and no mbuf is lost (`Lab::close`).
#[test]
fn an_arp_flood_for_the_wan_address_is_answered_and_bounded() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let (mut lab, _g) = start("wflood", "bundle");
    /// A requester: its MAC and address.
    type Asker = ([u8; 6], Ipv4Addr);
    let answered: Rc<RefCell<Vec<Asker>>> = Rc::default();
    let seen = answered.clone();
    let our_mac = wan_mac();
    // A's ARP replies on the WAN: recorded and kept from B.
    lab.wan_hook = Some(Box::new(move |dir, f: &mut [u8]| {
        if dir != lab::WanDir::AToB || f[12..14] != [0x08, 0x06] {
            return true;
        }
        let p = arp::Packet::new_checked(&f[14..]).expect("an ARP packet");
        let r = arp::Repr::parse(&p).expect("parses").expect("Ethernet/IPv4 ARP");
        assert_eq!(r.op, arp::Operation::Reply);
        assert_eq!((r.sender_hw.0, r.sender_ip), (our_mac, A_WAN4));
        assert_eq!(f[..6], r.target_hw.0, "sent to the requester");
        assert_eq!(f[6..12], our_mac);
        seen.borrow_mut().push((r.target_hw.0, r.target_ip));
        false
    }));
    let flows: Vec<Flow> = (0..8).map(|i| Flow::a_to_b(i, Family::V4, L4::Udp)).collect();
    let size_of = |_: u32, _: u32| TUNNEL_BYTES;
    const FLOOD: u32 = 30_000;
    // 16 a poll over the flood's 1,250 polls.
    const PER_FLOW: u32 = 2_500;
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut asked: Vec<Asker> = Vec::with_capacity(FLOOD as usize);
    let (mut sent, mut seq, mut f) = (0u32, 0u32, 0usize);
    let mut checker = Checker::default();
    while sent < FLOOD || seq < PER_FLOW {
        let mut flood: Vec<Vec<u8>> = Vec::with_capacity(BURST);
        while flood.len() < 24 && sent < FLOOD {
            let r = next();
            let mut sender = Ipv4Addr::from(r as u32 | 1);
            if sender == A_WAN4 {
                sender = FAR4;
            }
            let mac = [0x02, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8, (r >> 40) as u8, 0x43];
            flood.push(arp_frame(arp::Operation::Request, [0xff; 6], (mac, sender), ([0; 6], A_WAN4)));
            asked.push((mac, sender));
            sent += 1;
        }
        let mut v: Vec<Mbuf> = flood.iter().map(|fr| lab.raw(fr)).collect();
        lab.mid_a.tx.tx_all(&mut v, 1000);
        assert!(v.is_empty(), "A's WAN ring full");
        let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
        tunnel_traffic(&lab, &mut burst, 16, &flows, (&mut seq, &mut f), PER_FLOW);
        lab.gen.tx.tx_all(&mut burst, 1000);
        assert!(burst.is_empty(), "A's LAN ring full");
        lab.step();
        for frame in std::mem::take(&mut lab.delivered) {
            checker.check(&frame, &flows, size_of);
        }
    }
    lab.settle(20);
    for frame in std::mem::take(&mut lab.delivered) {
        checker.check(&frame, &flows, size_of);
    }
    let (a, _) = lab.counters();
    eprintln!("A local {:?}", a.local);
    assert_eq!(*answered.borrow(), asked, "each request answered once, in order, to its sender");
    assert_eq!(a.local.arp_replies, FLOOD as u64);
    assert_eq!(a.local.neighbors, 0, "the cache did not grow");
    tunnel_traffic_arrived(lab, &checker, flows.len() as u64 * PER_FLOW as u64);
}

/// An MLDv2 report (RFC 3810 section 5.2) as a snooping switch checks it:
/// to ff02::16 from the port's link-local address with hop limit 1 and a
/// router alert, checksum valid. Its address records (type, group).
fn mld_report(f: &[u8], mac: [u8; 6]) -> Vec<(u8, Ipv6Addr)> {
    let addr = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap());
    assert_eq!((&f[..6], &f[6..12], &f[12..14]), (&[0x33, 0x33, 0, 0, 0, 0x16][..], &mac[..], &[0x86, 0xdd][..]));
    let ip = &f[14..];
    assert_eq!((ip[0] >> 4, ip[6], ip[7]), (6, 0, 1), "IPv6, hop-by-hop, hop limit 1");
    let (src, dst) = (addr(&ip[8..24]), addr(&ip[24..40]));
    assert_eq!(src, lab_link_local(mac));
    assert_eq!(dst, "ff02::16".parse::<Ipv6Addr>().unwrap());
    assert_eq!(ip[40..48], [58, 0, 5, 2, 0, 0, 1, 0], "router alert");
    let icmp = &ip[48..40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))];
    assert_eq!(icmp[0], 143, "MLDv2 report");
    let mut sum = braid_tunnel::wire::checksum::pseudo_header_v6(src, dst, 58, icmp.len() as u32);
    sum = braid_tunnel::wire::checksum::add(sum, braid_tunnel::wire::checksum::sum(icmp));
    assert_eq!(sum, 0xffff, "checksum");
    let n = usize::from(u16::from_be_bytes([icmp[6], icmp[7]]));
    let recs: Vec<_> = icmp[8..].chunks(20).map(|r| (r[0], addr(&r[4..20]))).collect();
    assert_eq!(recs.len(), n);
    recs
}

fn lab_link_local(mac: [u8; 6]) -> Ipv6Addr {
    braid_dataplane::config::link_local(mac)
}

/// The solicited-node groups of `addrs`, once each (RFC 4291 2.7.1).
fn groups(addrs: &[Ipv6Addr]) -> Vec<Ipv6Addr> {
    let mut g: Vec<Ipv6Addr> = Vec::new();
    for a in addrs {
        let o = a.octets();
        let s = Ipv6Addr::from([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]]);
        if !g.contains(&s) {
            g.push(s);
        }
    }
    g
}

/// A general MLDv2 query from a router (fe80::1) to ff02::1, maximum
/// response delay 0; from `src`.
fn mld_query(src: Ipv6Addr) -> Vec<u8> {
    let dst: Ipv6Addr = "ff02::1".parse().unwrap();
    let mut icmp = vec![0u8; 28];
    icmp[0] = 130;
    icmp[24] = 2; // QRV
    icmp[25] = 125; // QQIC
    let sum = braid_tunnel::wire::checksum::add(
        braid_tunnel::wire::checksum::pseudo_header_v6(src, dst, 58, icmp.len() as u32),
        braid_tunnel::wire::checksum::sum(&icmp),
    );
    icmp[2..4].copy_from_slice(&(!sum).to_be_bytes());
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend_from_slice(&[0x02, 0xdd, 0, 0, 0, 1]);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&((8 + icmp.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&[58, 0, 5, 2, 0, 0, 1, 0]);
    f.extend_from_slice(&icmp);
    f
}

/// MLD (RFC 3810): ports with an IPv6 address and no kernel tap report
/// their solicited-node groups when the gateway starts (twice, the second
/// within a second), and again when a querier asks; a query not from a
/// link-local address is ignored, counted; every frame is accounted for.
#[test]
fn solicited_node_groups_are_reported_by_mld() {
    let (mut lab, _g) = start_with("mld", "bundle", true);
    lab.capture = Some(Vec::new());
    lab.capture_limit = 1000;
    to_a_lan(&mut lab, &[]);
    let lan_groups = groups(&[lab_link_local(lan_mac()), A_LAN6]);
    let wan_groups = groups(&[lab_link_local(wan_mac()), A_WAN6]);
    let change = |g: &[Ipv6Addr]| g.iter().map(|g| (4u8, *g)).collect::<Vec<_>>();
    let got = from_a_lan(&mut lab);
    assert_eq!(got.len(), 1, "one report on the LAN");
    assert_eq!(mld_report(&got[0], lan_mac()), change(&lan_groups));
    let mld_of = |cap: Vec<Vec<u8>>| cap.into_iter().filter(|f| f[12..14] == [0x86, 0xdd] && f[20] == 0).collect::<Vec<_>>();
    let wan = mld_of(lab.capture.replace(Vec::new()).unwrap());
    assert_eq!(wan.len(), 1, "one report on the WAN");
    assert_eq!(mld_report(&wan[0], wan_mac()), change(&wan_groups));
    // The second state-change report, within a second.
    lab.now += 1_000_000_000;
    to_a_lan(&mut lab, &[]);
    let got = from_a_lan(&mut lab);
    assert_eq!(got.len(), 1, "the second report");
    assert_eq!(mld_report(&got[0], lan_mac()), change(&lan_groups));
    lab.now += 10_000_000_000;
    to_a_lan(&mut lab, &[]);
    assert!(from_a_lan(&mut lab).is_empty(), "two only");

    // A router's general query: the current state, at once (delay 0).
    to_a_lan(&mut lab, &[mld_query("fe80::1".parse().unwrap()), mld_query("fd00:1::9".parse().unwrap())]);
    let got = from_a_lan(&mut lab);
    assert_eq!(got.len(), 1, "one answer");
    assert_eq!(mld_report(&got[0], lan_mac()), lan_groups.iter().map(|g| (2u8, *g)).collect::<Vec<_>>());
    let (a, b) = lab.counters();
    assert_eq!((a.local.lan_mld_reports, a.local.mld_reports, a.local.mld_queries), (3, 2, 1));
    assert_eq!(a.drops.named(), vec![("not_forwarded", 1)], "the query from a global address: not ours, not routed");
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}
