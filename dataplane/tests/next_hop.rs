//! WAN next hops given by address, resolved by ARP / neighbor discovery, end
//! to end on net_ring ports. A's WAN port names its next hop by address
//! (192.0.2.254, 2001:db8:a::fe, or the link-local fe80::1); the lab's WAN
//! middle plays that router
//! with B's WAN MAC, answering A's first request, a late one, or none.
//! Until the next hop answers, A's ESP packets are dropped and counted
//! (`next_hop_unresolved`), nothing is queued, and the other direction
//! (B -> A, delivered to A's LAN) keeps flowing. Every frame is counted once
//! (`lab::assert_conserved`).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use braid_dataplane::config::{Config, Tables};
use braid_dataplane::control::SaRegistry;
use braid_dataplane::counters::DpDrop;
use braid_dataplane::gateway::{worker_setup, PortPlan};
use braid_dataplane::worker::{prebuild_bundle, Applied};
use braid_dataplane::lab::traffic::{ip_packet, tag, Family, Flow, L4};
use braid_dataplane::lab::{self, Checker, Lab, LabOptions};
use braid_dpdk::Mbuf;

const SECOND: u64 = 1_000_000_000;
const SIZE: usize = 200;

/// A's WAN port names its next hop by address.
fn by_address(doc: &mut serde_json::Value, next_hop: &str) {
    let wan = doc["ports"][1].as_object_mut().unwrap();
    wan.remove("next_hop_mac");
    wan.insert("next_hop".into(), next_hop.into());
    wan.insert("ipv6".into(), "2001:db8:a::1/64".into());
}

/// Applies A's tables again with another balancing policy, which rebuilds
/// the (plain mode) bundle, as a snapshot from the control plane would.
fn rebuild_a(lab: &mut Lab, next_hop: &str) -> Applied {
    rebuild_a_with(lab, next_hop, "round_robin", false)
}

/// [`rebuild_a`] with `policy`; `prebuilt`: the engines are built ahead,
/// off the worker, as the control thread does.
fn rebuild_a_with(lab: &mut Lab, next_hop: &str, policy: &str, prebuilt: bool) -> Applied {
    let (lan, wan) = (&lab.tables_a.ports[0].device, &lab.tables_a.ports[1].device);
    let mut doc: serde_json::Value = serde_json::from_str(&lab::config_json(true, (lan, wan), "plain", &[1, 1], 16, 1500)).unwrap();
    by_address(&mut doc, next_hop);
    doc["bundles"][0]["policy"] = policy.into();
    let tables = Tables::from_config(&Config::from_json_str(&doc.to_string()).unwrap()).unwrap();
    let mut registry = SaRegistry::default();
    registry.adopt(&lab.tables_a, &lab.sas_a);
    let sas = registry.for_tables(&tables).unwrap();
    let setup = worker_setup(&tables, &PortPlan::new(&tables).unwrap(), &sas, 0, true, |_| Default::default()).unwrap();
    let now = lab.now;
    if prebuilt {
        let engines = setup.bundles.iter().map(|bs| Some(prebuild_bundle(&setup, bs, now).unwrap())).collect();
        return lab.a.apply_with(setup, None, engines, now).unwrap();
    }
    lab.a.apply(setup, now).unwrap()
}

/// The lab with A's WAN next hop given by `next_hop` (an IPv6 one gets the
/// port an IPv6 address in its subnet).
fn start(case: &str, mode: &str, next_hop: &'static str) -> (Lab, std::sync::MutexGuard<'static, ()>) {
    let (_eal, guard) = braid_dpdk::testing::eal(&[], 1536);
    let opts = LabOptions {
        edit: Some(Box::new(move |side_a, doc| {
            if side_a {
                by_address(doc, next_hop);
            }
        })),
        ..Default::default()
    };
    let mut lab = Lab::with(case, mode, &[1, 1], 16, 1500, opts);
    lab.read_a_lan = true;
    lab.capture = Some(Vec::new());
    lab.capture_limit = 100_000;
    (lab, guard)
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

/// One burst per sequence number in `seqs`, from A's LAN; `b` also sends
/// one burst of B's flows per step.
fn send(lab: &mut Lab, flows: &[Flow], seqs: std::ops::Range<u32>, b: Option<&[Flow]>) {
    for seq in seqs {
        let mut burst: Vec<Mbuf> = flows.iter().map(|f| lab.frame_to_a(&ip_packet(f, seq, SIZE))).collect();
        lab.gen.tx.tx_all(&mut burst, 1000);
        assert!(burst.is_empty(), "A's LAN ring full");
        if let Some(bf) = b {
            let mut burst: Vec<Mbuf> = bf.iter().map(|f| lab.frame_to_b(&ip_packet(f, seq, SIZE))).collect();
            lab.check.tx.tx_all(&mut burst, 1000);
            assert!(burst.is_empty(), "B's LAN ring full");
        }
        lab.step();
    }
}

/// Jumps the lab's clock to `t` and runs a few polls.
fn at(lab: &mut Lab, t: u64) {
    lab.now = lab.now.max(t);
    for _ in 0..5 {
        lab.step();
    }
}

/// (flow, seq) of each frame delivered, taken from `frames`.
fn tags(frames: &mut Vec<Vec<u8>>) -> Vec<(u32, u32)> {
    std::mem::take(frames).iter().map(|f| tag(&f[14..]).expect("a test packet")).collect()
}

/// ESP frames A sent, captured by the middle: all to B's WAN MAC.
fn esp_to(lab: &mut Lab, mac: [u8; 6]) -> usize {
    let frames = std::mem::take(lab.capture.as_mut().unwrap());
    for f in &frames {
        assert_eq!(f[12..14], [0x08, 0x00], "only ESP-in-UDP passes the middle");
        assert_eq!(f[0..6], mac, "addressed to the resolved next hop");
    }
    frames.len()
}

/// The next hop answers A's first ARP request: the tunnels get B's WAN MAC
/// and every packet arrives in order (bundle mode, probes on).
#[test]
fn a_next_hop_by_address_is_resolved_by_arp() {
    let (mut lab, _g) = start("nhfirst", "bundle", "192.0.2.254");
    lab.nh_answer = Some(1);
    at(&mut lab, 0);
    let flows = a_flows();
    send(&mut lab, &flows, 0..200, None);
    lab.settle(50);
    let mut checker = Checker::default();
    for frame in std::mem::take(&mut lab.delivered) {
        checker.check(&frame, &flows, |_, _| SIZE);
    }
    assert!(checker.bad.is_empty(), "{:?}", &checker.bad[..checker.bad.len().min(5)]);
    assert_eq!(checker.received, 200 * flows.len() as u64);
    assert_eq!(lab.nh_requests.len(), 1, "one request, answered");
    let req = &lab.nh_requests[0];
    assert_eq!((&req[0..6], &req[12..14], &req[38..42]), (&[0xff; 6][..], &[0x08, 0x06][..], &[192, 0, 2, 254][..]), "broadcast ARP for the next hop");
    assert!(esp_to(&mut lab, lab::mac(lab::B_WAN_MAC)) > 0);
    let (a, b) = lab.counters();
    assert_eq!((a.local.requests, a.local.learned, a.local.unresolved, a.local.neighbors), (1, 1, 0, 1));
    // Only what left before the answer (the first probes) was dropped.
    assert!(a.drops.get(DpDrop::NextHopUnresolved) <= 4, "{:?}", a.drops.named());
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// The next hop answers only the third request (after the second retry,
/// 2 s in): what A sent before is dropped as `next_hop_unresolved`, never
/// queued; everything sent after the answer arrives, also after new tables
/// rebuild the bundle.
#[test]
fn a_late_next_hop_drops_before_and_delivers_after() {
    let (mut lab, _g) = start("nhlate", "plain", "192.0.2.254");
    lab.nh_answer = Some(3);
    let flows = a_flows();
    at(&mut lab, 0);
    send(&mut lab, &flows, 0..50, None);
    at(&mut lab, SECOND + SECOND / 10);
    assert_eq!(lab.nh_requests.len(), 2, "first retry");
    send(&mut lab, &flows, 50..100, None);
    assert!(lab.delivered.is_empty(), "nothing got through unresolved");
    assert_eq!(lab.a.counters().drops.get(DpDrop::NextHopUnresolved), 100 * flows.len() as u64);
    at(&mut lab, 2 * SECOND + SECOND / 10);
    assert_eq!(lab.nh_requests.len(), 3, "second retry, answered");
    send(&mut lab, &flows, 100..200, None);
    lab.settle(5);
    lab::assert_conserved(&lab.a.counters(), "A", true);
    // New tables rebuild the bundle: its tunnels keep the resolved MAC.
    assert_eq!(rebuild_a(&mut lab, "192.0.2.254"), Applied { kept: 0, rebuilt: 1, dropped: 1 });
    send(&mut lab, &flows, 200..300, None);
    lab.settle(20);
    let got: BTreeSet<(u32, u32)> = tags(&mut lab.delivered).into_iter().collect();
    let want: BTreeSet<(u32, u32)> = (100..300).flat_map(|s| flows.iter().map(move |f| (f.id, s))).collect();
    assert_eq!(got, want, "exactly what was sent after the answer");
    assert_eq!(esp_to(&mut lab, lab::mac(lab::B_WAN_MAC)), want.len());
    // Again with an engine built ahead (off the worker, knowing only the
    // configuration): it too sends to the MAC resolved since.
    assert_eq!(rebuild_a_with(&mut lab, "192.0.2.254", "weighted", true), Applied { kept: 0, rebuilt: 1, dropped: 1 });
    send(&mut lab, &flows, 300..400, None);
    lab.settle(20);
    let got: BTreeSet<(u32, u32)> = tags(&mut lab.delivered).into_iter().collect();
    let want: BTreeSet<(u32, u32)> = (300..400).flat_map(|s| flows.iter().map(move |f| (f.id, s))).collect();
    assert_eq!(got, want, "delivered through the prebuilt engine");
    assert_eq!(esp_to(&mut lab, lab::mac(lab::B_WAN_MAC)), want.len());
    let (a, b) = lab.counters();
    assert_eq!(a.drops.get(DpDrop::NextHopUnresolved), 100 * flows.len() as u64, "{:?}", a.drops.named());
    assert_eq!((a.local.requests, a.local.learned, a.local.unresolved), (3, 1, 0));
    assert_eq!(b.drops.named(), vec![]);
    // (A's per-tunnel counters restarted with the rebuilt bundle.)
    lab::assert_conserved(&b, "B", true);
    lab.close();
}

/// The next hop never answers: three requests 1 s apart, then it is
/// unreachable (`unresolved`) and not asked again for 20 s. A's ESP packets
/// are all dropped and counted, while B -> A traffic is delivered to A's
/// LAN throughout: the worker never waits for the next hop.
#[test]
fn a_silent_next_hop_is_unresolved_and_the_other_direction_flows() {
    let (mut lab, _g) = start("nhnever", "plain", "192.0.2.254");
    let (flows, back) = (a_flows(), b_flows());
    let mut seq = 0;
    for (t, requests) in [(0, 1), (SECOND + 1, 2), (2 * SECOND + 1, 3), (3 * SECOND + 1, 3), (10 * SECOND, 3), (23 * SECOND + 2, 4)] {
        at(&mut lab, t);
        assert_eq!(lab.nh_requests.len(), requests, "at {t} ns");
        send(&mut lab, &flows, seq..seq + 20, Some(&back));
        seq += 20;
        // Meanwhile, not at the end: B -> A delivered up to the last round
        // (two polls for it to cross).
        lab.step();
        lab.step();
        assert_eq!(lab.delivered_a.len(), seq as usize * back.len(), "B -> A held back at {t} ns");
        if t == 3 * SECOND + 1 {
            assert_eq!(lab.a.counters().local.unresolved, 1, "given up after 3 requests");
        }
    }
    lab.settle(20);
    assert!(lab.delivered.is_empty(), "nothing reached B");
    let got: BTreeSet<(u32, u32)> = tags(&mut lab.delivered_a).into_iter().collect();
    let want: BTreeSet<(u32, u32)> = (0..seq).flat_map(|s| back.iter().map(move |f| (f.id, s))).collect();
    assert_eq!(got, want, "B -> A delivered throughout");
    assert_eq!(esp_to(&mut lab, [0; 6]), 0, "no ESP left A");
    let (a, b) = lab.counters();
    assert_eq!(a.drops.get(DpDrop::NextHopUnresolved), seq as u64 * flows.len() as u64);
    assert_eq!((a.local.requests, a.local.learned, a.local.unresolved), (4, 0, 1));
    assert_eq!(a.delivered, want.len() as u64);
    assert_eq!(b.wan_rx.packets, 0);
    lab::assert_conserved(&a, "A", true);
    lab::assert_conserved(&b, "B", true);
    lab.close();
}

/// An IPv6 next hop is resolved by neighbor solicitation / advertisement.
#[test]
fn an_ipv6_next_hop_is_resolved_by_neighbor_discovery() {
    let (lab, _g, _) = resolved_v6("nhsix", "2001:db8:a::fe");
    let (a, b) = lab.counters();
    lab::assert_conserved(&a, "A", true);
    lab::assert_conserved(&b, "B", true);
    lab.close();
}

/// A's IPv6 next hop `next_hop` answers A's first solicitation, which
/// leaves from A's address of the target's scope (for a link-local one,
/// A's link-local address: the modified EUI-64 of its WAN MAC) to the
/// target's solicited-node group: every packet arrives, all ESP to
/// the MAC learned. Returns the lab and the solicitation.
fn resolved_v6(case: &str, next_hop: &'static str) -> (Lab, std::sync::MutexGuard<'static, ()>, Vec<u8>) {
    let (mut lab, g) = start(case, "plain", next_hop);
    lab.nh_answer = Some(1);
    at(&mut lab, 0);
    let flows = a_flows();
    send(&mut lab, &flows, 0..100, None);
    lab.settle(20);
    assert_eq!(tags(&mut lab.delivered).len(), 100 * flows.len());
    assert_eq!(lab.nh_requests.len(), 1);
    let ns = lab.nh_requests[0].clone();
    let target = next_hop.parse::<Ipv6Addr>().unwrap().octets();
    assert_eq!((&ns[12..14], ns[54]), (&[0x86, 0xdd][..], 135), "a neighbor solicitation");
    // From the address of the target's scope (RFC 4861 7.2.2).
    let from = if target[0] == 0xfe { A_LINK_LOCAL } else { "2001:db8:a::1" };
    assert_eq!(ns[22..38], from.parse::<Ipv6Addr>().unwrap().octets(), "from A's {from}");
    assert_eq!(ns[62..78], target);
    assert_eq!(ns[0..6], [0x33, 0x33, 0xff, target[13], target[14], target[15]], "to the solicited-node group");
    assert_eq!(esp_to(&mut lab, lab::mac(lab::B_WAN_MAC)), 100 * flows.len());
    let (a, _) = lab.counters();
    assert_eq!((a.local.requests, a.local.learned), (1, 1));
    assert_eq!(a.drops.get(DpDrop::NextHopUnresolved), 0);
    (lab, g, ns)
}

/// A's WAN link-local address: 02:aa:00:00:01:01 in modified EUI-64.
const A_LINK_LOCAL: &str = "fe80::aa:ff:fe00:101";

/// An IPv6 router on the link by its link-local address (how routers
/// advertise themselves): A solicits it from its own link-local address
/// (modified EUI-64 of its WAN MAC), learns it from the advertisement sent
/// back there, and answers the router's own checks: a neighbor
/// solicitation and an echo request to A's link-local address.
#[test]
fn a_link_local_ipv6_next_hop_is_resolved_from_the_link_local_address() {
    use braid_tunnel::wire::ethernet::{self, Address, EtherType};
    use braid_tunnel::wire::{icmpv6, ipv6, AddrPair, IpProtocol};
    let (mut lab, _g, _) = resolved_v6("nhll", "fe80::1");
    let a_ll: Ipv6Addr = A_LINK_LOCAL.parse().unwrap();
    assert_eq!(braid_dataplane::local::link_local(lab::mac(lab::A_WAN_MAC)), a_ll);

    // The router checks A (unicast neighbor solicitation, then a ping), at
    // A's link-local address.
    let router: Ipv6Addr = "fe80::1".parse().unwrap();
    let frame = |dst: Ipv6Addr, msg: &[u8], hop_limit: u8| {
        let mut f = vec![0u8; 14 + 40 + msg.len()];
        ethernet::Repr { src_addr: Address(lab::mac(lab::B_WAN_MAC)), dst_addr: Address(lab::mac(lab::A_WAN_MAC)), vlan: None, ethertype: EtherType::IPV6 }
            .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
        ipv6::Repr { src_addr: router, dst_addr: dst, next_header: IpProtocol::ICMPV6, payload_len: msg.len(), hop_limit, traffic_class: 0, flow_label: 0 }
            .emit(&mut ipv6::Packet::new_unchecked(&mut f[14..]));
        f[54..].copy_from_slice(msg);
        icmpv6::Packet::new_unchecked(&mut f[54..]).fill_checksum(&AddrPair::V6 { src: router, dst });
        f
    };
    let nd = icmpv6::Repr::NeighborSolicit { target: a_ll, source_lladdr: Some(Address(lab::mac(lab::B_WAN_MAC))) };
    let mut msg = vec![0u8; nd.buffer_len()];
    nd.emit(&mut icmpv6::Packet::new_unchecked(&mut msg[..]), &AddrPair::V6 { src: router, dst: a_ll });
    let echo = [128, 0, 0, 0, 0x12, 0x34, 0, 1, b'l', b'l'];
    let mut v = vec![lab.raw(&frame(a_ll, &msg, 255)), lab.raw(&frame(a_ll, &echo, 64))];
    lab.capture = Some(Vec::new());
    lab.mid_a.tx.tx_all(&mut v, 100);
    lab.settle(5);
    let (a, b) = lab.counters();
    assert_eq!((a.local.na_replies, a.local.echo_v6_replies), (1, 1), "{:?}", a.local);
    let out = lab.capture.take().unwrap();
    let na = out.iter().find(|f| f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[54] == 136).expect("a neighbor advertisement");
    assert_eq!((&na[22..38], &na[38..54]), (&a_ll.octets()[..], &router.octets()[..]), "from A's link-local to the router");
    assert_eq!(na[62..78], a_ll.octets(), "about A's link-local address");
    let reply = out.iter().find(|f| f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[54] == 129).expect("an echo reply");
    assert_eq!((&reply[22..38], &reply[reply.len() - 2..]), (&a_ll.octets()[..], &b"ll"[..]));
    lab::assert_conserved(&a, "A", true);
    lab::assert_conserved(&b, "B", true);
    lab.close();
}
