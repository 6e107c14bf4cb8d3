//! Timeouts per protocol and TCP state, the session bound, port exhaustion
//! and port forwards.

mod common;

use std::net::Ipv4Addr;

use braid_nat::{DnatRule, NatDrop, NatShard, Proto, Verdict};
use common::*;

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;
const FIN_ACK: u8 = 0x11;
const RST: u8 = 0x04;

#[test]
fn udp_expires_after_two_minutes() {
    let mut nat = NatShard::new(&lan_config(1, 1024), 0, 1).unwrap();
    let (int, rem) = (sa([10, 0, 0, 1], 5000), sa([198, 51, 100, 1], 53));
    let t0 = 10 * SEC;
    let mut p = udp_pkt(int, rem);
    nat.outbound(&mut p, 0, t0);
    let ext = endpoints(&p).1;
    // Idle for just under 2 min: the reply passes (and refreshes).
    let t1 = t0 + 120 * SEC - 1;
    assert_eq!(nat.inbound(&mut udp_pkt(rem, ext), t1), Verdict::Translated);
    // Idle for exactly 2 min after that: gone.
    assert_eq!(
        nat.inbound(&mut udp_pkt(rem, ext), t1 + 120 * SEC),
        Verdict::Drop(NatDrop::NoSession)
    );
    assert_eq!(nat.sessions(), 0);
    assert_eq!(nat.counters().sessions_expired, 1);
}

#[test]
fn traffic_in_one_direction_keeps_the_session_for_both() {
    // Each direction refreshes its own copy of a session (one cache line
    // per lookup); the session lives until the later of the two.
    let mut nat = NatShard::new(&lan_config(1, 1024), 0, 1).unwrap();
    let (int, rem) = (sa([10, 0, 0, 1], 5000), sa([198, 51, 100, 1], 53));
    let mut p = udp_pkt(int, rem);
    assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
    let ext = endpoints(&p).1;
    // Replies only, past the outbound copy's 2 minutes.
    for t in [60, 110, 170] {
        assert_eq!(nat.inbound(&mut udp_pkt(rem, ext), t * SEC), Verdict::Translated);
    }
    // The sweep and an outbound lookup at 200 s both see it alive, with
    // its mapping.
    assert_eq!(nat.expire(200 * SEC, 1 << 20), 0);
    let mut p = udp_pkt(int, rem);
    assert_eq!(nat.outbound(&mut p, 0, 200 * SEC), Verdict::Translated);
    assert_eq!(endpoints(&p).1, ext);
    // Outbound only now, past the inbound copy's 2 minutes (290 s).
    let mut p = udp_pkt(int, rem);
    assert_eq!(nat.outbound(&mut p, 0, 250 * SEC), Verdict::Translated);
    assert_eq!(nat.inbound(&mut udp_pkt(rem, ext), 300 * SEC), Verdict::Translated);
    assert_eq!((nat.counters().sessions_created, nat.counters().sessions_expired), (1, 0));
    // 2 minutes after the last packet, whichever copy the sweep reads.
    assert_eq!(nat.expire(420 * SEC - 1, 1 << 20), 0);
    assert_eq!(nat.expire(420 * SEC, 1 << 20), 1);
    assert_eq!(nat.sessions(), 0);

    // A TCP state change reaches both copies: established by the reply,
    // then outbound packets only. The outbound copy must know the session
    // is established (2 h 4 min), not opening (30 s).
    let int = sa([10, 0, 0, 2], 40000);
    let rem = sa([198, 51, 100, 1], 443);
    let mut p = tcp_pkt(int, rem, SYN);
    nat.outbound(&mut p, 0, SEC);
    let ext = endpoints(&p).1;
    assert_eq!(nat.inbound(&mut tcp_pkt(rem, ext, SYN_ACK), 2 * SEC), Verdict::Translated);
    let mut last = 0;
    for t in (3..600).step_by(20) {
        assert_eq!(nat.outbound(&mut tcp_pkt(int, rem, ACK), 0, t * SEC), Verdict::Translated);
        last = t;
    }
    let established = (2 * 3600 + 4 * 60) * SEC;
    let t = 2 * SEC + established + 60 * SEC;
    assert!(t < last * SEC + established);
    assert_eq!(nat.inbound(&mut tcp_pkt(rem, ext, ACK), t), Verdict::Translated);
    assert_eq!(nat.counters().sessions_created, 2);
}

#[test]
fn tcp_timeouts_follow_state() {
    let mut nat = NatShard::new(&lan_config(1, 1024), 0, 1).unwrap();
    let rem = sa([198, 51, 100, 1], 443);
    // Established: SYN, SYN-ACK, ACK. Alive after 2 h idle, gone after
    // 2 h 4 min (RFC 5382 REQ-5).
    let int = sa([10, 0, 0, 1], 40000);
    let mut p = tcp_pkt(int, rem, SYN);
    nat.outbound(&mut p, 0, SEC);
    let ext = endpoints(&p).1;
    assert_eq!(
        nat.inbound(&mut tcp_pkt(rem, ext, SYN_ACK), 2 * SEC),
        Verdict::Translated
    );
    assert_eq!(
        nat.outbound(&mut tcp_pkt(int, rem, ACK), 0, 3 * SEC),
        Verdict::Translated
    );
    let t = 3 * SEC + 2 * 3600 * SEC;
    assert_eq!(
        nat.inbound(&mut tcp_pkt(rem, ext, ACK), t),
        Verdict::Translated
    );
    assert_eq!(
        nat.inbound(&mut tcp_pkt(rem, ext, ACK), t + (2 * 3600 + 4 * 60) * SEC),
        Verdict::Drop(NatDrop::NoSession)
    );

    // Closed by FIN: 4 minutes.
    let int = sa([10, 0, 0, 2], 40000);
    let mut p = tcp_pkt(int, rem, SYN);
    nat.outbound(&mut p, 0, SEC);
    let ext = endpoints(&p).1;
    nat.inbound(&mut tcp_pkt(rem, ext, SYN_ACK), SEC);
    nat.outbound(&mut tcp_pkt(int, rem, ACK), 0, SEC);
    nat.outbound(&mut tcp_pkt(int, rem, FIN_ACK), 0, 2 * SEC);
    assert_eq!(
        nat.inbound(&mut tcp_pkt(rem, ext, FIN_ACK), 2 * SEC + 239 * SEC),
        Verdict::Translated
    );
    assert_eq!(
        nat.inbound(&mut tcp_pkt(rem, ext, ACK), 2 * SEC + 239 * SEC + 240 * SEC),
        Verdict::Drop(NatDrop::NoSession)
    );

    // Reset: 4 minutes too, never 2 hours.
    let int = sa([10, 0, 0, 3], 40000);
    let mut p = tcp_pkt(int, rem, SYN);
    nat.outbound(&mut p, 0, SEC);
    let ext = endpoints(&p).1;
    nat.inbound(&mut tcp_pkt(rem, ext, SYN_ACK), SEC);
    nat.outbound(&mut tcp_pkt(int, rem, ACK), 0, SEC);
    nat.inbound(&mut tcp_pkt(rem, ext, RST), 2 * SEC);
    assert_eq!(
        nat.external_of(TCP, int, rem, 2 * SEC + 239 * SEC),
        Some(ext)
    );
    assert_eq!(nat.external_of(TCP, int, rem, 2 * SEC + 240 * SEC), None);

    // Refused or abandoned before it was established (a RST answering the
    // SYN, the opener's FIN after it, a session picked up on a FIN): 30 s,
    // like an unanswered SYN, not 4 minutes. A FIN on the handshake's
    // last ACK closes an established connection: 4 minutes.
    for (k, first, then, secs) in [(15u8, SYN, Some(RST), 30), (16, SYN, Some(SYN_ACK), 240), (17, FIN_ACK, None, 30)] {
        let int = sa([10, 0, 0, k], 40000);
        let mut p = tcp_pkt(int, rem, first);
        assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
        let ext = endpoints(&p).1;
        if let Some(f) = then {
            nat.inbound(&mut tcp_pkt(rem, ext, f), SEC);
            nat.outbound(&mut tcp_pkt(int, rem, FIN_ACK), 0, SEC);
        }
        assert!(nat.external_of(TCP, int, rem, secs * SEC).is_some(), "case {k}");
        assert!(nat.external_of(TCP, int, rem, (secs + 1) * SEC).is_none(), "case {k}");
    }
    // A stray RST before the answer does not stop the handshake: the
    // answer and its ACK still establish the connection.
    let int = sa([10, 0, 0, 18], 40000);
    let mut p = tcp_pkt(int, rem, SYN);
    nat.outbound(&mut p, 0, SEC);
    let ext = endpoints(&p).1;
    nat.inbound(&mut tcp_pkt(rem, ext, RST), SEC);
    nat.inbound(&mut tcp_pkt(rem, ext, SYN_ACK), SEC);
    nat.outbound(&mut tcp_pkt(int, rem, ACK), 0, SEC);
    assert!(nat.external_of(TCP, int, rem, 3600 * SEC).is_some());

    // SYN never answered: 30 s.
    let int = sa([10, 0, 0, 4], 40000);
    nat.outbound(&mut tcp_pkt(int, rem, SYN), 0, SEC);
    assert!(nat.external_of(TCP, int, rem, 30 * SEC).is_some());
    assert!(nat.external_of(TCP, int, rem, 31 * SEC).is_none());

    // An RST or a stray ACK with no session opens nothing.
    let int = sa([10, 0, 0, 5], 40000);
    assert_eq!(
        nat.outbound(&mut tcp_pkt(int, rem, RST), 0, SEC),
        Verdict::Drop(NatDrop::NoSession)
    );
}

#[test]
fn icmp_query_expires_after_a_minute() {
    let mut nat = NatShard::new(&lan_config(1, 64), 0, 1).unwrap();
    let (h, r) = (Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(198, 51, 100, 9));
    let mut p = echo_pkt(h, r, 0x77, true);
    assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
    assert_checksums(&p);
    let ext = endpoints(&p).1;
    let mut reply = echo_pkt(r, *ext.ip(), ext.port(), false);
    assert_eq!(nat.inbound(&mut reply, 2 * SEC), Verdict::Translated);
    assert_checksums(&reply);
    assert_eq!(endpoints(&reply).2, sa(h.octets(), 0x77));
    let mut reply = echo_pkt(r, *ext.ip(), ext.port(), false);
    assert_eq!(
        nat.inbound(&mut reply, 62 * SEC),
        Verdict::Drop(NatDrop::NoSession)
    );
    // An outbound echo reply never opens a session.
    let mut p = echo_pkt(h, r, 0x78, false);
    assert_eq!(
        nat.outbound(&mut p, 0, SEC),
        Verdict::Drop(NatDrop::NoSession)
    );
}

#[test]
fn expired_sessions_are_swept_and_ports_reused() {
    let mut nat = NatShard::new(&lan_config(1, 2000), 0, 1).unwrap();
    for i in 0..1000u16 {
        let mut p = udp_pkt(sa([10, 0, 1, 1], 10000 + i), sa([198, 51, 100, 1], 53));
        assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
    }
    assert_eq!(nat.sessions(), 1000);
    // Bounded work per call: 100 slots, at most 100 sessions.
    let later = 200 * SEC;
    assert!(nat.expire(later, 100) <= 100);
    while nat.expire(later, 100) > 0 {}
    nat.expire(later, 2000);
    assert_eq!(nat.sessions(), 0);
    assert_eq!(nat.counters().sessions_expired, 1000);
}

#[test]
fn the_sweep_misses_no_due_session_whatever_its_budgets() {
    // 600 sessions opened at 1 s; the even ones are TCP SYNs (30 s) and
    // are due at 60 s, the odd ones UDP (120 s) and are not. Sessions sit
    // where their hashes put them in a table of 2048 slots (twice the
    // bound, rounded up), so due ones often follow each other in a
    // cluster: closing one may pull the next back into the slot the sweep
    // is at. Whatever the budgets, one turn of the table (2048 slots, plus
    // one look per session closed) closes every due session and no other.
    const SLOTS: usize = 2048;
    let is_due = |i: u16| i.is_multiple_of(2);
    for budgets in [&[1usize][..], &[7], &[16], &[33], &[5, 16, 27, 64], &[5000]] {
        let mut nat = NatShard::new(&lan_config(1, 1000), 0, 1).unwrap();
        for i in 0..600u16 {
            let (src, dst) = (sa([10, 0, 1, 1], 10000 + i), sa([198, 51, 100, 1], 53));
            let mut p = if is_due(i) { tcp_pkt(src, dst, SYN) } else { udp_pkt(src, dst) };
            assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
        }
        let (later, mut examined, mut closed) = (60 * SEC, 0usize, 0usize);
        for &b in budgets.iter().cycle() {
            if examined >= SLOTS + 300 {
                break;
            }
            let b = b.min(SLOTS + 300 - examined);
            let c = nat.expire(later, b);
            assert!(c <= b);
            closed += c;
            examined += b;
        }
        assert_eq!(closed, 300, "budgets {budgets:?}");
        assert_eq!(nat.sessions(), 300);
        assert_eq!(nat.counters().sessions_expired, 300);
        // The rest are alive, and one more turn closes nothing.
        for i in (1..600u16).step_by(2) {
            let mut p = udp_pkt(sa([10, 0, 1, 1], 10000 + i), sa([198, 51, 100, 1], 53));
            assert_eq!(nat.outbound(&mut p, 0, later), Verdict::Translated);
        }
        assert_eq!(nat.counters().sessions_created, 600);
        assert_eq!(nat.expire(later, SLOTS), 0);
        assert_eq!(nat.expire(later + 200 * SEC, SLOTS + 300), 300);
        assert_eq!(nat.sessions(), 0);
    }
}

#[test]
fn session_table_exhaustion_is_bounded_and_counted() {
    let mut nat = NatShard::new(&lan_config(1, 1000), 0, 1).unwrap();
    let mut ok = 0;
    for i in 0..1500u16 {
        let mut p = udp_pkt(sa([10, 0, 2, 1], 10000 + i), sa([198, 51, 100, 1], 53));
        match nat.outbound(&mut p, 0, SEC) {
            Verdict::Translated => ok += 1,
            v => assert_eq!(v, Verdict::Drop(NatDrop::SessionsFull)),
        }
    }
    assert_eq!(ok, 1000);
    assert_eq!(nat.sessions(), 1000);
    assert_eq!(nat.counters().drop_count(NatDrop::SessionsFull), 500);
    // Existing flows keep working while full.
    let mut p = udp_pkt(sa([10, 0, 2, 1], 10000), sa([198, 51, 100, 1], 53));
    assert_eq!(nat.outbound(&mut p, 0, 2 * SEC), Verdict::Translated);
    // Once the old ones time out, new flows get in again (the full-table
    // sweep finds expired slots without a separate call).
    let mut p = udp_pkt(sa([10, 0, 2, 2], 1), sa([198, 51, 100, 1], 53));
    assert_eq!(nat.outbound(&mut p, 0, 200 * SEC), Verdict::Translated);
}

#[test]
fn port_exhaustion_is_counted() {
    let mut cfg = lan_config(1, 1000);
    cfg.snat[0].ports = 2000..=2009;
    let mut nat = NatShard::new(&cfg, 0, 1).unwrap();
    let mut ports = std::collections::HashSet::new();
    for i in 0..20u16 {
        let mut p = udp_pkt(sa([10, 0, 0, 1], 10000 + i), sa([198, 51, 100, 1], 53));
        if nat.outbound(&mut p, 0, SEC) == Verdict::Translated {
            ports.insert(endpoints(&p).1.port());
        }
    }
    assert_eq!(ports.len(), 10);
    assert!(ports.iter().all(|p| (2000..=2009).contains(p)));
    assert_eq!(nat.counters().drop_count(NatDrop::PortsExhausted), 10);
    // TCP has its own ports.
    let mut p = tcp_pkt(sa([10, 0, 0, 1], 1), sa([198, 51, 100, 1], 80), SYN);
    assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
    // Once the UDP sessions expire their ports serve new flows.
    nat.expire(200 * SEC, usize::MAX);
    let mut again = std::collections::HashSet::new();
    for i in 0..10u16 {
        let mut p = udp_pkt(sa([10, 0, 0, 2], 20000 + i), sa([198, 51, 100, 1], 53));
        assert_eq!(nat.outbound(&mut p, 0, 200 * SEC), Verdict::Translated);
        again.insert(endpoints(&p).1.port());
    }
    assert_eq!(again, ports);
    // Four workers share the ten ports without overlap.
    let mut seen = std::collections::HashSet::new();
    for w in 0..4 {
        let mut nat = NatShard::new(&cfg, w, 4).unwrap();
        for i in 0..10u16 {
            let mut p = udp_pkt(sa([10, 0, 0, 1], 10000 + i), sa([198, 51, 100, 1], 53));
            if nat.outbound(&mut p, 0, SEC) == Verdict::Translated {
                let port = endpoints(&p).1.port();
                assert!(seen.insert(port));
                assert_eq!(
                    cfg.owner_of(Ipv4Addr::new(203, 0, 113, 1).into(), port, 4),
                    Some(w)
                );
            }
        }
    }
    assert_eq!(seen.len(), 10);
}

#[test]
fn port_forward() {
    let cfg = tcp_forward_config(64);
    let mut nat = NatShard::new(&cfg, 0, 1).unwrap();
    let (rem, ext, int) = (
        sa([198, 51, 100, 5], 33333),
        sa([203, 0, 113, 200], 8080),
        sa([10, 0, 0, 80], 80),
    );
    let mut p = tcp_pkt(rem, ext, SYN);
    assert_eq!(nat.inbound(&mut p, SEC), Verdict::Translated);
    assert_checksums(&p);
    assert_eq!(endpoints(&p), (TCP, rem, int));
    let mut p = tcp_pkt(int, rem, SYN_ACK);
    assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
    assert_checksums(&p);
    assert_eq!(endpoints(&p), (TCP, ext, rem));
    // Another port of the forwarded address: nothing there.
    let mut p = tcp_pkt(rem, sa([203, 0, 113, 200], 8081), SYN);
    assert_eq!(nat.inbound(&mut p, SEC), Verdict::Drop(NatDrop::NoSession));
    // A forward inside the pool's port range is refused at build time.
    let mut bad = cfg.clone();
    bad.dnat[0].external = Ipv4Addr::new(203, 0, 113, 1).into();
    assert!(NatShard::new(&bad, 0, 1).is_err());
    // Steering: the forward's reply and its request meet on one worker.
    let req = tcp_pkt(rem, ext, SYN);
    let rep = tcp_pkt(int, rem, SYN_ACK);
    for n in 1..8 {
        assert_eq!(cfg.inbound_owner(&req, n), cfg.outbound_owner(&rep, n));
    }
}

#[test]
fn a_fin_after_the_sweep_saw_the_session_established_is_swept_on_time() {
    // The sweep reads a slot when its hint (the deadline it last knew) is
    // due. A FIN shortens the deadline from 2 h 4 min to 4 min: the hint
    // must follow, or the closed session holds its slot and port for 2 h.
    let mut nat = NatShard::new(&lan_config(1, 256), 0, 1).unwrap();
    let (int, rem) = (sa([10, 0, 0, 2], 1000), sa([198, 51, 100, 1], 53));
    let mut p = tcp_pkt(int, rem, SYN);
    assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
    let ext = endpoints(&p).1;
    assert_eq!(nat.inbound(&mut tcp_pkt(rem, ext, SYN_ACK), SEC), Verdict::Translated);
    assert_eq!(nat.outbound(&mut tcp_pkt(int, rem, ACK), 0, SEC), Verdict::Translated);
    // The sweep passes the session at 31 s, established.
    assert_eq!(nat.expire(31 * SEC, 1 << 20), 0);
    assert_eq!(nat.outbound(&mut tcp_pkt(int, rem, FIN_ACK), 0, 31 * SEC), Verdict::Translated);
    assert_eq!(nat.expire(271 * SEC - 1, 1 << 20), 0);
    assert_eq!(nat.expire(271 * SEC, 1 << 20), 1);
    assert_eq!(nat.sessions(), 0);
}

/// A shard with a TCP port forward 203.0.113.200:8080 -> 10.0.0.80:80,
/// the forward's external and internal endpoints.
fn tcp_forward(max_sessions: usize) -> (NatShard, std::net::SocketAddrV4, std::net::SocketAddrV4) {
    let nat = NatShard::new(&tcp_forward_config(max_sessions), 0, 1).unwrap();
    (nat, sa([203, 0, 113, 200], 8080), sa([10, 0, 0, 80], 80))
}

fn tcp_forward_config(max_sessions: usize) -> braid_nat::NatConfig {
    let mut cfg = lan_config(1, max_sessions);
    cfg.dnat.push(DnatRule {
        external: Ipv4Addr::new(203, 0, 113, 200).into(),
        proto: Proto::Tcp,
        port: 8080,
        internal: Ipv4Addr::new(10, 0, 0, 80).into(),
        internal_port: 80,
    });
    cfg
}

/// `n` spoofed SYNs through the forward at `t`, each answered by the
/// server.
fn syn_flood(nat: &mut NatShard, n: u16, t: u64) {
    let (ext, int) = (sa([203, 0, 113, 200], 8080), sa([10, 0, 0, 80], 80));
    for i in 0..n {
        let spoofed = sa([198, 51, (i >> 8) as u8, i as u8], 1024 + i);
        assert_eq!(nat.inbound(&mut tcp_pkt(spoofed, ext, SYN), t), Verdict::Translated);
        assert_eq!(nat.outbound(&mut tcp_pkt(int, spoofed, SYN_ACK), 0, t), Verdict::Translated);
    }
}

/// Spoofed SYNs to a port forward, each answered by the server behind it:
/// the answers alone do not make the connections established, so the
/// sessions go after `tcp_opening` (30 s), not 2 h 4 min; a client that
/// completes the handshake keeps its session.
#[test]
fn a_syn_flood_through_a_port_forward_holds_sessions_briefly() {
    let (mut nat, ext, int) = tcp_forward(4096);
    syn_flood(&mut nat, 1000, SEC);
    // A real client: SYN, SYN-ACK, ACK.
    let client = sa([192, 0, 2, 77], 40000);
    nat.inbound(&mut tcp_pkt(client, ext, SYN), SEC);
    nat.outbound(&mut tcp_pkt(int, client, SYN_ACK), 0, SEC);
    assert_eq!(nat.inbound(&mut tcp_pkt(client, ext, ACK), 2 * SEC), Verdict::Translated);
    assert_eq!(nat.sessions(), 1001);
    // Their SYNs and the answers retransmitted: still not established.
    syn_flood(&mut nat, 1000, 3 * SEC);
    let t = 3 * SEC + 30 * SEC;
    nat.expire(t, usize::MAX);
    assert_eq!(nat.sessions(), 1, "only the client's session is left");
    assert_eq!(nat.outbound(&mut tcp_pkt(int, client, ACK), 0, t + 3600 * SEC), Verdict::Translated);
}

/// A table filled by a SYN flood makes room for new flows: a connection
/// not yet established gives its place (`sessions_evicted`); a table full
/// of established connections refuses new flows (`sessions_full`) and
/// evicts nothing.
#[test]
fn a_full_table_of_half_open_connections_makes_room_for_new_flows() {
    let (mut nat, _, _) = tcp_forward(1000);
    syn_flood(&mut nat, 1000, SEC);
    assert_eq!(nat.sessions(), 1000);
    for i in 0..200u16 {
        let mut p = udp_pkt(sa([10, 0, 3, 1], 20000 + i), sa([198, 51, 100, 1], 53));
        assert_eq!(nat.outbound(&mut p, 0, 2 * SEC), Verdict::Translated, "new flow {i}");
    }
    assert_eq!(nat.sessions(), 1000);
    assert_eq!(nat.counters().sessions_evicted, 200);
    assert_eq!(nat.counters().drop_count(NatDrop::SessionsFull), 0);

    // The same with spoofed FINs, which open sessions refused from the
    // start.
    let (mut nat, ext, _) = tcp_forward(1000);
    for i in 0..1000u16 {
        let spoofed = sa([198, 51, (i >> 8) as u8, i as u8], 1024 + i);
        assert_eq!(nat.inbound(&mut tcp_pkt(spoofed, ext, FIN_ACK), SEC), Verdict::Translated);
    }
    let mut p = udp_pkt(sa([10, 0, 3, 1], 20000), sa([198, 51, 100, 1], 53));
    assert_eq!(nat.outbound(&mut p, 0, 2 * SEC), Verdict::Translated);
    assert_eq!(nat.counters().sessions_evicted, 1);

    // Established connections are never evicted.
    let mut nat = NatShard::new(&lan_config(1, 1000), 0, 1).unwrap();
    let rem = sa([198, 51, 100, 1], 443);
    for i in 0..1000u16 {
        let int = sa([10, 0, 4, 1], 10000 + i);
        let mut p = tcp_pkt(int, rem, SYN);
        assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
        let ext = endpoints(&p).1;
        nat.inbound(&mut tcp_pkt(rem, ext, SYN_ACK), SEC);
        nat.outbound(&mut tcp_pkt(int, rem, ACK), 0, SEC);
    }
    let mut p = udp_pkt(sa([10, 0, 3, 1], 20000), sa([198, 51, 100, 1], 53));
    assert_eq!(nat.outbound(&mut p, 0, 2 * SEC), Verdict::Drop(NatDrop::SessionsFull));
    assert_eq!(nat.counters().sessions_evicted, 0);
}
