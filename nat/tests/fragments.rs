//! Which IPv4 fragments the dataplane must make whole before the NAT:
//! those of traffic it translates, in each direction; nothing else.

mod common;


use braid_nat::{NatDrop, NatShard, Verdict, SECOND};
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

/// An SNAT rule for one egress: its hosts' fragments leaving by another
/// egress pass untouched (made whole they would lose datagrams of more
/// than 8 fragments to a peer without NAT), unless the host has live
/// mappings: a session opened through the rule's egress keeps
/// translating its flow after the route moved it (the whole packets found
/// the session; its fragments, not taken, left with the internal source:
/// found by review). The mappings gone, untouched again.
#[test]
fn fragments_to_another_egress_are_taken_while_the_host_has_mappings() {
    let mut cfg = lan_config(1, 64);
    cfg.snat[0].egress = Some(2);
    let mut n = NatShard::new(&cfg, 0, 1).unwrap();
    let (host, server) = (sa([10, 0, 3, 4], 40000), sa([198, 51, 100, 1], 53));
    let first = as_fragment(udp_pkt(host, server), 0, true);
    assert!(n.translates_fragment(&first, Some(2)));
    assert!(!n.translates_fragment(&first, Some(1)), "no mapping yet: untouched");
    assert_eq!(n.outbound(&mut first.clone(), 1, 0), Verdict::Untouched);
    // A session through egress 2 ...
    assert_eq!(n.outbound(&mut udp_pkt(host, server), 2, 0), Verdict::Translated);
    // ... translates the flow through egress 1 too, fragments included.
    let mut p = udp_pkt(host, server);
    assert_eq!(n.outbound(&mut p, 1, 0), Verdict::Translated);
    assert!(n.translates_fragment(&first, Some(1)), "taken while the host has a mapping");
    // A fragment given to the NAT is never let out untranslated.
    assert_eq!(n.outbound(&mut first.clone(), 1, 0), Verdict::Drop(NatDrop::Fragment));
    // The session expires: untouched again.
    n.expire(1_000 * SECOND, usize::MAX);
    assert_eq!(n.sessions(), 0);
    assert!(!n.translates_fragment(&first, Some(1)));
}
