//! Packets bigger than the next link, cut in software. A peer's LAN with
//! jumbo frames, ours with 1500 bytes: what B delivers is cut to its LAN's
//! MTU. TCP (IPv4 and IPv6) leaves as TCP segments
//! whose payloads, in order, are the sender's byte stream, every checksum
//! right; IPv4 UDP without DF as IP fragments that reassemble to the
//! packet; what can be neither (IPv4 with DF, IPv6 UDP) is dropped and
//! counted, never handed to the port as a giant, and its sender gets an
//! ICMP error back through the tunnels. And plain mode over a
//! 1500-byte WAN: jumbo TCP is cut into segments before sealing (GSO).
//! Two gateways on net_ring vdevs (no PCI), bundle and plain mode.

use std::collections::{BTreeMap, HashMap};

use braid_dataplane::counters::DpDrop;
use braid_dataplane::lab::traffic::{ip_packet, Family, Flow, L4};
use braid_dataplane::lab::{self, ConfigEdit, Lab, LabOptions};
use braid_dpdk::{Mbuf, BURST};
use braid_tunnel::wire::{ipv4, tcp, AddrPair};

const ETH: usize = 14;
const B_LAN_MTU: usize = 1500;

/// Flows 0..4: TCP v4, TCP v6, UDP v4, UDP v4 with DF; flow 4: UDP v6.
fn flows() -> Vec<Flow> {
    [(Family::V4, L4::Tcp), (Family::V6, L4::Tcp), (Family::V4, L4::Udp), (Family::V4, L4::Udp), (Family::V6, L4::Udp)]
        .iter()
        .enumerate()
        .map(|(i, (f, l))| Flow::a_to_b(i as u32, *f, *l))
        .collect()
}

/// Packet `seq` of flow `f`: 1000, 4000 and 9000-byte frames in turn.
fn packet(flows: &[Flow], f: usize, seq: u32) -> Vec<u8> {
    let size = [1000, 4000, 9000][seq as usize % 3];
    let mut ip = ip_packet(&flows[f], seq, size);
    if f == 3 {
        // DF, and the header checksum again.
        ip[6] |= 0x40;
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = !braid_tunnel::wire::checksum::sum(&ip[..20]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    ip
}

/// What was sent: (flow, IP packet), in order.
type Sent = Vec<(usize, Vec<u8>)>;

/// Sends `per_flow` packets on each of flows `which` through A, a burst
/// per round, and returns what was sent and the frames B delivered.
fn send(lab: &mut Lab, fl: &[Flow], which: &[usize], per_flow: u32) -> (Sent, Vec<Vec<u8>>) {
    let mut sent = Vec::new();
    let mut frames = Vec::new();
    for seq in 0..per_flow {
        let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
        for &f in which {
            let ip = packet(fl, f, seq);
            burst.push(lab.frame_to_a(&ip));
            sent.push((f, ip));
        }
        lab.gen.tx.tx_all(&mut burst, 1000);
        assert!(burst.is_empty(), "A's LAN ring full");
        for _ in 0..4 {
            lab.step();
        }
        frames.append(&mut lab.delivered);
    }
    lab.settle(50);
    frames.append(&mut lab.delivered);
    (sent, frames)
}

fn case(mode: &str) {
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let edit: ConfigEdit = Box::new(|side_a, doc| {
        if !side_a {
            doc["ports"][0]["mtu"] = serde_json::json!(B_LAN_MTU);
            // The address B's ICMP errors come from.
            doc["ports"][0]["ipv4"] = serde_json::json!("10.2.0.254/16");
            doc["ports"][0]["ipv6"] = serde_json::json!("fd00:2::fe/64");
        }
    });
    // Plain mode carries 9000-byte packets whole over a jumbo WAN.
    let wan_mtu = if mode == "plain" { 9600 } else { 1500 };
    let mut lab = Lab::with(&format!("lanmtu{}", &mode[..2]), mode, &[1, 1], 16, wan_mtu, LabOptions { edit: Some(edit), ..Default::default() });
    lab.read_a_lan = true;
    let fl = flows();
    let per_flow = 30u32;
    let (sent, frames) = send(&mut lab, &fl, &[0, 1, 2, 3, 4], per_flow);
    let (a, b) = lab.counters();
    lab::assert_conserved(&a, "A", mode == "plain");
    lab::assert_conserved(&b, "B", mode == "plain");
    eprintln!("{mode}: B cut {:?}, drops {:?}", b.lan_cut, b.drops.named());
    assert!(frames.iter().all(|f| f.len() - ETH <= B_LAN_MTU), "a frame above B's LAN MTU");

    let big = |ip: &Vec<u8>| ip.len() > B_LAN_MTU;
    let count = |f: usize, big_only: bool| sent.iter().filter(|(g, ip)| *g == f && (!big_only || big(ip))).count() as u64;
    // What was too big and neither TCP nor IPv4 without DF.
    assert_eq!(b.drops.get(DpDrop::LanTooBig), count(3, true) + count(4, true));
    assert_eq!(b.drops.get(DpDrop::LanNoMbuf), 0);
    assert_eq!(b.lan_cut.segmented, count(0, true) + count(1, true));
    assert_eq!(b.lan_cut.fragmented, count(2, true));

    // Frames by flow (source port), in the order B delivered them.
    let sport = |f: &[u8]| -> u16 {
        let ip = &f[ETH..];
        let (l3, first) = if ip[0] >> 4 == 4 { ((ip[0] & 15) as usize * 4, u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0) } else { (40, true) };
        if first { u16::from_be_bytes([ip[l3], ip[l3 + 1]]) } else { 0 }
    };
    let of_flow = |f: usize| -> Vec<&Vec<u8>> { frames.iter().filter(|fr| sport(fr) == fl[f].sport).collect() };

    // TCP: each segment's checksums verify; the payloads, in order, are
    // the sender's stream.
    for f in [0, 1] {
        assert_tcp_stream(&of_flow(f), &sent, f);
    }

    // IPv4 UDP without DF: whole, or fragments that reassemble to it.
    assert_eq!(udp_reassembles(&frames, &sent, &fl, 2), per_flow as usize);

    // Too big with DF, or IPv6 UDP: only the small ones arrive, intact.
    for f in [3, 4] {
        let got = of_flow(f);
        let small: Vec<&Vec<u8>> = sent.iter().filter(|(g, ip)| *g == f && !big(ip)).map(|(_, ip)| ip).collect();
        assert_eq!(got.len(), small.len(), "flow {f}");
        for (g, s) in got.iter().zip(&small) {
            assert!(g[ETH..] == s[..], "flow {f}: a packet changed");
        }
    }
    // ... and their senders, behind A, learn B's LAN MTU: ICMP
    // "fragmentation needed" and ICMPv6 "packet too big" from B's LAN
    // address, through the tunnels (rate-limited to one a millisecond:
    // the IPv6 flow's came right after the IPv4 one's above, so one more
    // IPv6 packet, later).
    lab.now += 2_000_000;
    let big6 = packet(&fl, 4, 2);
    assert!(big(&big6));
    let mut burst = vec![lab.frame_to_a(&big6)];
    lab.gen.tx.tx_all(&mut burst, 1000);
    lab.settle(20);
    let (_, b) = lab.counters();
    let (mut v4, mut v6) = (0, 0);
    for f in &lab.delivered_a {
        let ip = &f[ETH..];
        if ip[0] >> 4 == 4 && ip[9] == 1 && ip[20..22] == [3, 4] {
            assert_eq!(ip[12..16], [10, 2, 0, 254]);
            assert_eq!(u16::from_be_bytes([ip[26], ip[27]]) as usize, B_LAN_MTU, "the next-hop MTU");
            assert!(sent.iter().any(|(g, s)| *g == 3 && big(s) && s[..28] == ip[28..56]), "quotes a too-big packet's header and 8 bytes");
            assert!(braid_tunnel::wire::checksum::verifies(&ip[20..]));
            v4 += 1;
        } else if ip[0] >> 4 == 6 && ip[6] == 58 && ip[40] == 2 {
            assert_eq!(ip[8..24], "fd00:2::fe".parse::<std::net::Ipv6Addr>().unwrap().octets());
            assert_eq!(u32::from_be_bytes([ip[44], ip[45], ip[46], ip[47]]) as usize, B_LAN_MTU);
            assert_eq!(ip.len(), 1280, "as much of the packet as fits 1280 bytes");
            v6 += 1;
        } else {
            panic!("A's LAN got something else: {:02x?}", &ip[..40.min(ip.len())]);
        }
    }
    assert!(v4 >= 1 && v6 >= 1, "errors back: {v4} IPv4, {v6} IPv6");
    assert_eq!(b.icmp_tunnelled, (v4 + v6) as u64, "every error B sent back reached A's LAN");
    lab.close();
}

/// The largest inner packet a LAN may send (`MAX_MTU`, 9600 bytes), in
/// bundle mode over a 1500-byte WAN: cut across frames by A, made whole by
/// B and delivered byte for byte to B's jumbo LAN. (B's reassembly took
/// inner packets of up to 9216 bytes until 2026-11-24: every one of
/// these was dropped as `fragment_oversize`.)
#[test]
fn bundle_mode_carries_packets_of_the_largest_lan_mtu() {
    const MAX_MTU: usize = 9600;
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let edit: ConfigEdit = Box::new(|_, doc| doc["ports"][0]["mtu"] = serde_json::json!(MAX_MTU));
    let mut lab = Lab::with("lanmax", "bundle", &[1, 1], 16, 1500, LabOptions { edit: Some(edit), ..Default::default() });
    let fl = flows();
    let mut sent = Vec::new();
    for seq in 0..6u32 {
        let mut burst: Vec<Mbuf> = Vec::new();
        for f in [2, 4] {
            let ip = ip_packet(&fl[f], seq, ETH + MAX_MTU);
            assert_eq!(ip.len(), MAX_MTU);
            burst.push(lab.frame_to_a(&ip));
            sent.push(ip);
        }
        lab.gen.tx.tx_all(&mut burst, 1000);
        assert!(burst.is_empty());
        lab.step();
    }
    lab.settle(50);
    let got: Vec<&[u8]> = lab.delivered.iter().map(|f| &f[ETH..]).collect();
    let (_, b) = lab.counters();
    assert_eq!(got.len(), sent.len(), "B's drops: {:?}, engine: {:?}", b.drops.named(), b.engine);
    for ip in &sent {
        assert!(got.contains(&ip.as_slice()), "a 9600-byte packet arrived changed or not at all");
    }
    lab.close();
}

/// How many of the IPv4 UDP packets sent on flow `f` the delivered
/// frames hold, whole or as fragments (header checksums right) that
/// reassemble to them; panics if one is missing or differs.
fn udp_reassembles(frames: &[Vec<u8>], sent: &Sent, fl: &[Flow], f: usize) -> usize {
    let mut by_id: HashMap<u16, BTreeMap<usize, (bool, Vec<u8>)>> = HashMap::new();
    for fr in frames.iter().filter(|fr| fr[ETH] >> 4 == 4 && fr[ETH + 9] == 17 && fr[ETH + 12..ETH + 16] == fl[f].src4.octets()) {
        let p = ipv4::Packet::new_checked(&fr[ETH..]).unwrap();
        assert!(p.verify_checksum());
        by_id.entry(p.ident()).or_default().insert(p.frag_offset() as usize, (p.more_frags(), fr[ETH + 20..].to_vec()));
    }
    let mut whole = 0;
    for (_, ip) in sent.iter().filter(|(g, _)| *g == f) {
        let id = u16::from_be_bytes([ip[4], ip[5]]);
        let parts = by_id.get(&id).unwrap_or_else(|| panic!("UDP packet {id} not delivered"));
        let mut payload = Vec::new();
        for (off, (_, part)) in parts {
            assert_eq!(*off, payload.len(), "a gap before offset {off}");
            payload.extend_from_slice(part);
        }
        assert!(!parts.values().last().unwrap().0, "the last fragment has MF");
        assert!(payload == ip[20..], "UDP packet {id} reassembles to something else");
        whole += 1;
    }
    whole
}

/// TCP frames of flow `f` as delivered: checksums right, and their
/// payloads, in order, the payloads of what was sent on `f`.
fn assert_tcp_stream(frames: &[&Vec<u8>], sent: &[(usize, Vec<u8>)], f: usize) {
    let mut stream = Vec::new();
    for fr in frames {
        let ip = &fr[ETH..];
        let (addrs, t) = if ip[0] >> 4 == 4 {
            let p = ipv4::Packet::new_checked(ip).unwrap();
            assert!(p.verify_checksum());
            (AddrPair::V4 { src: p.src_addr(), dst: p.dst_addr() }, &ip[20..])
        } else {
            let p = braid_tunnel::wire::ipv6::Packet::new_checked(ip).unwrap();
            (AddrPair::V6 { src: p.src_addr(), dst: p.dst_addr() }, &ip[40..])
        };
        assert!(tcp::Packet::new_checked(t).unwrap().verify_checksum(&addrs), "TCP checksum, flow {f}");
        stream.extend_from_slice(&t[20..]);
    }
    let want: Vec<u8> = sent
        .iter()
        .filter(|(g, _)| *g == f)
        .flat_map(|(_, ip)| ip[if ip[0] >> 4 == 4 { 20 } else { 40 } + 20..].to_vec())
        .collect();
    assert_eq!(stream.len(), want.len(), "flow {f}: stream length");
    assert!(stream == want, "flow {f}: the TCP stream differs");
}

/// Plain mode over a 1500-byte WAN, both LANs jumbo: TCP packets of 4000
/// and 9000 bytes are cut into segments before sealing, each its own ESP
/// packet within the WAN MTU; B delivers the streams byte for byte. IPv4
/// UDP that big without DF is cut into inner fragments that fit (RFC 4459
/// section 3.1), which B passes on and which reassemble to each packet;
/// with DF it is dropped as `too_big` (and its sender told).
#[test]
fn plain_mode_cuts_tcp_too_big_for_its_tunnels() {
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let mut lab = Lab::new("gsoplain", "plain", &[1, 1], 16, 1500);
    lab.capture = Some(Vec::new());
    lab.capture_limit = 100_000;
    let fl = flows();
    let (sent, frames) = send(&mut lab, &fl, &[0, 1, 2, 3], 30);
    let (a, b) = lab.counters();
    lab::assert_conserved(&a, "A", true);
    lab::assert_conserved(&b, "B", true);
    eprintln!("A tunnel cut {:?}, drops {:?}", a.tunnel_cut, a.drops.named());
    let big = |f: usize| sent.iter().filter(|(g, ip)| *g == f && ip.len() > 1400).count() as u64;
    assert_eq!(a.tunnel_cut.segmented, big(0) + big(1));
    assert_eq!(a.tunnel_cut.fragmented, big(2));
    assert_eq!(a.drops.get(DpDrop::TooBig), big(3), "UDP with DF too big for the tunnels");
    assert!((1..=big(3)).contains(&a.icmp_sent), "fragmentation-needed, within its rate limit: {}", a.icmp_sent);
    assert_eq!(udp_reassembles(&frames, &sent, &fl, 2), 30);
    assert_eq!(a.drops.total() - a.drops.get(DpDrop::TooBig), 0, "{:?}", a.drops.named());
    assert_eq!(b.drops.total(), 0, "{:?}", b.drops.named());
    let wan = lab.capture.take().unwrap();
    assert!(wan.iter().all(|f| f.len() - ETH <= 1500), "an ESP packet above the WAN MTU");
    for f in [0, 1] {
        let of: Vec<&Vec<u8>> = frames
            .iter()
            .filter(|fr| {
                let ip = &fr[ETH..];
                let l3 = if ip[0] >> 4 == 4 { 20 } else { 40 };
                u16::from_be_bytes([ip[l3], ip[l3 + 1]]) == fl[f].sport
            })
            .collect();
        assert!(of.iter().all(|fr| fr.len() - ETH <= 1500));
        assert_tcp_stream(&of, &sent, f);
    }
    lab.close();
}

#[test]
fn bundle_mode_delivers_to_a_smaller_lan_mtu() {
    case("bundle");
}

#[test]
fn plain_mode_delivers_to_a_smaller_lan_mtu() {
    case("plain");
}
