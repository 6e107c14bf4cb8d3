//! ICMP errors about NATed flows: translated with every checksum right;
//! errors quoting garbage or unknown flows: dropped and counted.

mod common;

use std::net::Ipv4Addr;

use braid_nat::{NatDrop, Verdict};
use braid_tunnel::wire::checksum;
use common::*;

const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);


/// Checks the translated error: checksums recomputed from scratch, outer
/// destination and the quote's source restored to the internal endpoint.
fn check_inbound_error(
    p: &[u8],
    int: std::net::SocketAddrV4,
    rem: std::net::SocketAddrV4,
    proto: u8,
) {
    assert_checksums(p);
    let (_, _, dst) = endpoints(p);
    assert_eq!(dst.ip(), int.ip());
    let quote = &p[28..];
    let (qp, qsrc, qdst) = endpoints(quote_whole(quote).as_slice());
    assert_eq!((qp, qsrc, qdst), (proto, int, rem));
}

/// The quote with its total length fixed up so `endpoints` can read it.
fn quote_whole(q: &[u8]) -> Vec<u8> {
    let mut v = q.to_vec();
    let n = v.len() as u16;
    v[2..4].copy_from_slice(&n.to_be_bytes());
    v
}

#[test]
fn inbound_errors_quoting_nated_packets() {
    let mut nat = nat_with_forward([10, 0, 0, 53]);
    // UDP: port unreachable quoting header + 8 bytes (RFC 792 minimum).
    let (int, rem) = (sa([10, 0, 0, 1], 5000), sa([198, 51, 100, 1], 9999));
    let mut out = udp_pkt(int, rem);
    nat.outbound(&mut out, 0, SEC);
    let ext = endpoints(&out).1;
    let mut err = icmp_error(*rem.ip(), *ext.ip(), 3, 3, &out[..28]);
    assert_eq!(nat.inbound(&mut err, SEC), Verdict::Translated);
    check_inbound_error(&err, int, rem, UDP);
    // The quoted UDP checksum, quoted in full, is right too.
    let mut err = icmp_error(ROUTER, *ext.ip(), 11, 0, &out);
    assert_eq!(nat.inbound(&mut err, SEC), Verdict::Translated);
    check_inbound_error(&err, int, rem, UDP);
    let whole = &err[28..];
    assert_eq!(whole, udp_pkt(int, rem).as_slice());

    // TCP: time exceeded from a router quoting the whole segment.
    let (int, rem) = (sa([10, 0, 0, 2], 40000), sa([198, 51, 100, 2], 443));
    let mut out = tcp_pkt(int, rem, 0x02);
    nat.outbound(&mut out, 0, SEC);
    let ext = endpoints(&out).1;
    let mut err = icmp_error(ROUTER, *ext.ip(), 11, 0, &out);
    assert_eq!(nat.inbound(&mut err, SEC), Verdict::Translated);
    check_inbound_error(&err, int, rem, TCP);
    assert_eq!(&err[28..], tcp_pkt(int, rem, 0x02).as_slice());
    // Quoting 28 bytes only: the TCP checksum is not in the quote.
    let mut err = icmp_error(ROUTER, *ext.ip(), 3, 4, &out[..28]);
    assert_eq!(nat.inbound(&mut err, SEC), Verdict::Translated);
    check_inbound_error(&err, int, rem, TCP);

    // Echo: time exceeded about a ping.
    let (h, r) = (Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(198, 51, 100, 3));
    let mut out = echo_pkt(h, r, 0x1234, true);
    nat.outbound(&mut out, 0, SEC);
    let mut err = icmp_error(ROUTER, Ipv4Addr::new(203, 0, 113, 1), 11, 0, &out);
    assert_eq!(nat.inbound(&mut err, SEC), Verdict::Translated);
    assert_checksums(&err);
    assert_eq!(&err[28..], echo_pkt(h, r, 0x1234, true).as_slice());
    assert_eq!(nat.counters().icmp_errors_translated, 5);
}

#[test]
fn outbound_error_about_a_forwarded_flow() {
    let mut nat = nat_with_forward([10, 0, 0, 53]);
    let (rem, ext, int) = (
        sa([198, 51, 100, 9], 7000),
        sa([203, 0, 113, 200], 5353),
        sa([10, 0, 0, 53], 53),
    );
    let mut req = udp_pkt(rem, ext);
    assert_eq!(nat.inbound(&mut req, SEC), Verdict::Translated);
    // The internal host answers port unreachable quoting what it got.
    let mut err = icmp_error(*int.ip(), *rem.ip(), 3, 3, &req);
    assert_eq!(nat.outbound(&mut err, 0, SEC), Verdict::Translated);
    assert_checksums(&err);
    assert_eq!(*endpoints(&err).1.ip(), *ext.ip());
    assert_eq!(&err[28..], udp_pkt(rem, ext).as_slice());
}

#[test]
fn errors_quoting_garbage_or_unknown_flows_are_dropped() {
    let mut nat = nat_with_forward([10, 0, 0, 53]);
    let pool = Ipv4Addr::new(203, 0, 113, 1);
    let mut s = 3u64;
    for len in 0..64usize {
        let junk: Vec<u8> = (0..len).map(|_| splitmix(&mut s) as u8).collect();
        let mut err = icmp_error(ROUTER, pool, 3, 1, &junk);
        assert_eq!(
            nat.inbound(&mut err, SEC),
            Verdict::Drop(NatDrop::IcmpBadQuote)
        );
    }
    // A well-formed quote of a flow the NAT never saw.
    let ghost = udp_pkt(sa([203, 0, 113, 1], 4444), sa([198, 51, 100, 1], 53));
    let mut err = icmp_error(ROUTER, pool, 3, 3, &ghost[..28]);
    assert_eq!(
        nat.inbound(&mut err, SEC),
        Verdict::Drop(NatDrop::IcmpNoSession)
    );
    // A quoted ICMP error (an error about an error) is not translated.
    let inner = icmp_error(pool, ROUTER, 3, 3, &ghost[..28]);
    let mut err = icmp_error(ROUTER, pool, 3, 3, &inner[..28]);
    assert_eq!(
        nat.inbound(&mut err, SEC),
        Verdict::Drop(NatDrop::IcmpBadQuote)
    );
    // Not addressed to us at all: none of our business.
    let mut err = icmp_error(ROUTER, Ipv4Addr::new(192, 0, 2, 1), 3, 1, &[1, 2, 3]);
    assert_eq!(nat.inbound(&mut err, SEC), Verdict::Untouched);
    assert_eq!(nat.counters().drop_count(NatDrop::IcmpBadQuote), 65);
    assert_eq!(nat.counters().drop_count(NatDrop::IcmpNoSession), 1);
    // The untouched packet's checksum is still right (nothing was written).
    assert!(checksum::verifies(&err[20..]));
}

/// An outbound ICMP error concerns the NAT when the flow it quotes was
/// NATed (then whoever sent it, it is translated or dropped) or when an
/// SNAT rule covers its sender, except for the gateway's own errors
/// (`outbound_own_error`: "fragmentation needed" from its LAN address),
/// which go out as they are about a flow the NAT never handled.
#[test]
fn outbound_errors_are_judged_by_the_flow_they_quote_and_their_sender() {
    let mut nat = nat_with_forward([10, 0, 0, 53]);
    // Inside the SNAT rule's 10.0.0.0/16, like a gateway's LAN address.
    let gw = Ipv4Addr::new(10, 0, 0, 254);
    let rem = sa([198, 51, 100, 7], 443);

    // A flow the NAT never handled (to a routed, un-NATed host): the
    // gateway's error leaves as it is, checksums untouched; a covered LAN
    // host's is dropped (its internal address would leave).
    let routed = udp_pkt(rem, sa([192, 168, 7, 7], 8080));
    let mut err = icmp_error(gw, *rem.ip(), 3, 4, &routed);
    let before = err.clone();
    assert_eq!(nat.outbound_own_error(&mut err, 0, SEC), Verdict::Untouched);
    assert_eq!(err, before);
    let mut err = icmp_error(gw, *rem.ip(), 3, 4, &routed);
    assert_eq!(nat.outbound(&mut err, 0, SEC), Verdict::Drop(NatDrop::IcmpNoSession));
    // A host outside the rules reporting on its own routed flow: none of
    // the NAT's business.
    let mut err = icmp_error(Ipv4Addr::new(192, 168, 7, 7), *rem.ip(), 3, 3, &routed);
    assert_eq!(nat.outbound(&mut err, 0, SEC), Verdict::Untouched);
    // Nor a port forward's host outside the SNAT rules reporting on its
    // other, routed traffic (it leaves as it is, and so do errors about
    // it), from itself or from the gateway; about the forward's own port
    // it is the NAT's.
    let mut fwd = nat_with_forward([192, 168, 9, 53]);
    let ssh = tcp_pkt(rem, sa([192, 168, 9, 53], 22), 0x02);
    let mut err = icmp_error(Ipv4Addr::new(192, 168, 9, 53), *rem.ip(), 3, 3, &ssh);
    assert_eq!(fwd.outbound(&mut err, 0, SEC), Verdict::Untouched);
    let mut err = icmp_error(gw, *rem.ip(), 3, 4, &ssh);
    assert_eq!(fwd.outbound_own_error(&mut err, 0, SEC), Verdict::Untouched);
    let dns = udp_pkt(rem, sa([192, 168, 9, 53], 53));
    let mut err = icmp_error(gw, *rem.ip(), 3, 4, &dns);
    assert_eq!(fwd.outbound_own_error(&mut err, 0, SEC), Verdict::Drop(NatDrop::IcmpNoSession));

    // A NATed flow: the quote goes back to the external endpoint and the
    // error leaves from the external address, whoever reported it.
    let int = sa([10, 0, 0, 1], 5000);
    let mut out = udp_pkt(int, rem);
    assert_eq!(nat.outbound(&mut out, 0, SEC), Verdict::Translated);
    let ext = endpoints(&out).1;
    let mut reply = udp_pkt(rem, ext);
    assert_eq!(nat.inbound(&mut reply, SEC), Verdict::Translated);
    assert_eq!(endpoints(&reply).2, int);
    for (from, own) in [(gw, true), (gw, false), (Ipv4Addr::new(192, 168, 1, 1), false)] {
        let mut err = icmp_error(from, *rem.ip(), 3, 4, &reply);
        let v = match own {
            true => nat.outbound_own_error(&mut err, 0, SEC),
            false => nat.outbound(&mut err, 0, SEC),
        };
        assert_eq!(v, Verdict::Translated, "error from {from}");
        assert_checksums(&err);
        assert_eq!(*endpoints(&err).1.ip(), *ext.ip(), "outer source");
        assert_eq!(&err[28..], udp_pkt(rem, ext).as_slice(), "the quote as the remote sent it");
    }

    // A quote the NAT cannot translate (a later fragment) naming a covered
    // host: dropped, whoever sends it; naming a routed host: left alone.
    for (to, want) in [([10, 0, 0, 77], Verdict::Drop(NatDrop::IcmpBadQuote)), ([192, 168, 7, 7], Verdict::Untouched)] {
        let mut frag = udp_pkt(rem, sa(to, 80));
        frag[6..8].copy_from_slice(&100u16.to_be_bytes());
        let mut err = icmp_error(Ipv4Addr::new(192, 168, 1, 1), *rem.ip(), 11, 1, &frag[..28]);
        assert_eq!(nat.outbound(&mut err, 0, SEC), want, "quoting a fragment to {to:?}");
    }

    // A covered internal host the NAT holds no session for: dropped, so
    // its address never leaves in a quote, whoever sends the error.
    let ghost = udp_pkt(rem, sa([10, 0, 0, 77], 80));
    let mut err = icmp_error(gw, *rem.ip(), 3, 4, &ghost);
    assert_eq!(nat.outbound_own_error(&mut err, 0, SEC), Verdict::Drop(NatDrop::IcmpNoSession));
    let mut err = icmp_error(Ipv4Addr::new(192, 168, 1, 1), *rem.ip(), 3, 4, &ghost);
    assert_eq!(nat.outbound(&mut err, 0, SEC), Verdict::Drop(NatDrop::IcmpNoSession));
    assert_eq!(nat.counters().icmp_errors_translated, 3);
}
