//! Which IPv4 fragments the dataplane must make whole before the NAT:
//! those of traffic it translates, in each direction; nothing else.

mod common;


use braid_nat::{NatShard, Verdict};
use common::*;


/// `p` as a fragment: offset `off` (8-byte units), MF as given.
fn as_fragment(mut p: Vec<u8>, off: u16, mf: bool) -> Vec<u8> {
    let f = off | if mf { 0x2000 } else { 0 };
    p[6..8].copy_from_slice(&f.to_be_bytes());
    p
}

#[test]
fn fragments_of_translated_traffic_are_wanted_whole() {
    let mut n = nat_with_forward([192, 168, 9, 53]);
    let host = sa([10, 0, 3, 4], 40000);
    let server = sa([198, 51, 100, 1], 53);
    let first = as_fragment(udp_pkt(host, server), 0, true);
    let later = as_fragment(udp_pkt(host, server), 185, false);
    // From a host an SNAT rule covers, first or later fragment alike.
    assert!(n.translates_fragment(&first, Some(0)));
    assert!(n.translates_fragment(&later, Some(3)));
    // Not the same packets seen as inbound: their destination is no NAT address.
    assert!(!n.translates_fragment(&first, None));
    // A whole packet is no fragment.
    assert!(!n.translates_fragment(&udp_pkt(host, server), Some(0)));
    // From a host no rule covers.
    let other = as_fragment(udp_pkt(sa([10, 9, 0, 1], 40000), server), 0, true);
    assert!(!n.translates_fragment(&other, Some(0)));
    // A port forward's internal host (outside the SNAT prefix).
    let fwd = as_fragment(udp_pkt(sa([192, 168, 9, 53], 53), server), 0, true);
    assert!(n.translates_fragment(&fwd, Some(0)));
    // Inbound: to the pool address or the forward's address.
    let to_pool = as_fragment(udp_pkt(server, sa([203, 0, 113, 1], 1200)), 3, false);
    let to_fwd = as_fragment(udp_pkt(server, sa([203, 0, 113, 200], 5353)), 0, true);
    let elsewhere = as_fragment(udp_pkt(server, sa([203, 0, 113, 77], 5353)), 0, true);
    assert!(n.translates_fragment(&to_pool, None));
    assert!(n.translates_fragment(&to_fwd, None));
    assert!(!n.translates_fragment(&elsewhere, None));
    // Garbage: short, IPv6, empty.
    assert!(!n.translates_fragment(&first[..19], Some(0)));
    assert!(!n.translates_fragment(&[0x60; 40], Some(0)));
    assert!(!n.translates_fragment(&[], None));
    // The NAT itself still refuses a fragment it is given.
    let mut f = first.clone();
    assert!(matches!(n.outbound(&mut f, 0, 0), Verdict::Drop(_)));
}

#[test]
fn an_snat_rule_for_one_egress_wants_only_its_fragments() {
    let mut cfg = lan_config(1, 64);
    cfg.snat[0].egress = Some(2);
    let n = NatShard::new(&cfg, 0, 1).unwrap();
    let first = as_fragment(udp_pkt(sa([10, 0, 3, 4], 40000), sa([198, 51, 100, 1], 53)), 0, true);
    assert!(n.translates_fragment(&first, Some(2)));
    assert!(!n.translates_fragment(&first, Some(1)), "leaving by another peer: untouched");
}
