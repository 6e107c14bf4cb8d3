//! The shard against a model of what RFC 4787, RFC 5382 and RFC 5508 ask
//! of it: random UDP, TCP and ICMP echo packets of a few flows, in both
//! directions, at random times around the timeouts, with expiry sweeps of
//! random budgets in between; connections from outside to a port forward
//! whose internal host also opens flows of its own (SNAT, and the conflict
//! between the two); and ICMP errors about the flows' packets. The model
//! keeps one idle timer per session (restarted by packets in both
//! directions, with the timeout of the TCP state the packet leaves),
//! endpoint-independent mappings and address-and-port-dependent filtering;
//! the shard must agree on every verdict and every address, however its
//! session tables store the timers. Case count from PROPTEST_CASES.

mod common;

use std::collections::HashMap;
use std::net::SocketAddrV4;

use std::net::Ipv4Addr;

use braid_nat::{DnatRule, NatDrop, NatShard, Proto, Verdict};
use common::*;
use proptest::prelude::*;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const FLAGS: [u8; 7] = [SYN, SYN | ACK, ACK, FIN | ACK, RST, RST | ACK, ACK];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Opening,
    Replied,
    Established,
    Closing,
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    ext: SocketAddrV4,
    expires: u64,
    state: State,
    /// SNAT (opened by an outbound packet) rather than a port forward.
    opened_out: bool,
}

/// The port forward (TCP and UDP): `FWD_EXT` to `FWD_INT`.
const FWD_EXT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 80);
const FWD_INT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 8080);

/// (protocol, internal endpoint, remote endpoint).
type Key = (u8, SocketAddrV4, SocketAddrV4);

fn timeout(proto: u8, st: State) -> u64 {
    SEC * match (proto, st) {
        (TCP, State::Opening | State::Replied | State::Refused) => 30,
        (TCP, State::Established) => 2 * 3600 + 4 * 60,
        (TCP, State::Closing) => 4 * 60,
        (ICMP, _) => 60,
        _ => 120,
    }
}

/// RFC 5382's states as the NAT tracks them, for a packet from the side
/// that opened the session or not.
fn next(st: State, proto: u8, flags: u8, from_opener: bool) -> State {
    if proto != TCP {
        return st;
    }
    if flags & (RST | FIN) != 0 {
        match st {
            State::Established | State::Closing => State::Closing,
            State::Replied if from_opener && flags & ACK != 0 && flags & (RST | SYN) == 0 => State::Closing,
            _ => State::Refused,
        }
    } else {
        match st {
            State::Opening | State::Refused if !from_opener => State::Replied,
            State::Replied if from_opener && flags & ACK != 0 && flags & SYN == 0 => State::Established,
            State::Closing | State::Refused if flags & SYN != 0 && flags & ACK == 0 && from_opener => State::Opening,
            s => s,
        }
    }
}

/// Twelve flows: three protocols (UDP, TCP, ICMP echo: the port is the
/// query id, the remote's is 0), two internal endpoints (one of them the
/// port forward's), each talking to two remotes (so mappings are shared
/// and ports reused).
fn flow(i: u8) -> Key {
    let proto = [UDP, TCP, ICMP][usize::from(i % 3)];
    let int = if (i / 3).is_multiple_of(2) { sa([10, 0, 0, 1], 1000) } else { FWD_INT };
    let rem = sa([198, 51, 100, 1 + (i / 6) % 2], if proto == ICMP { 0 } else { 53 });
    (proto, int, rem)
}

fn config() -> braid_nat::NatConfig {
    let mut cfg = lan_config(1, 256);
    for proto in [Proto::Tcp, Proto::Udp] {
        cfg.dnat.push(DnatRule {
            external: (*FWD_EXT.ip()).into(),
            proto,
            port: FWD_EXT.port(),
            internal: (*FWD_INT.ip()).into(),
            internal_port: FWD_INT.port(),
        });
    }
    cfg
}

/// A packet of the flow from `src` to `dst`. ICMP: an echo request when
/// `flags` has no ACK (else a reply), its id the port of our side (the
/// source going out, the destination coming in).
fn packet(proto: u8, src: SocketAddrV4, dst: SocketAddrV4, flags: u8, inbound: bool) -> Vec<u8> {
    match proto {
        TCP => tcp_pkt(src, dst, flags),
        ICMP => echo_pkt(*src.ip(), *dst.ip(), if inbound { dst.port() } else { src.port() }, is_request(flags)),
        _ => udp_pkt(src, dst),
    }
}

fn is_request(flags: u8) -> bool {
    flags & ACK == 0
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn the_shard_agrees_with_the_model(
        steps in proptest::collection::vec((0u8..6, 0u8..12, 0usize..6, 0usize..15, 1usize..3000), 1..120)
    ) {
        let mut nat = NatShard::new(&config(), 0, 1).unwrap();
        let mut model: HashMap<Key, Session> = HashMap::new();
        let mut now = SEC;
        // Waits around the timeouts (seconds), so expiry is hit exactly.
        const WAITS: [u64; 15] = [0, 1, 29, 30, 31, 59, 60, 61, 119, 120, 121, 239, 240, 241, 7440];
        for (action, f, fl, wait, budget) in steps {
            let (proto, int, rem) = flow(f);
            let flags = FLAGS[fl];
            let live = |m: &HashMap<Key, Session>, k: &Key, now: u64| m.get(k).filter(|s| s.expires > now).copied();
            match action {
                0 => {
                    let mut p = packet(proto, int, rem, flags, false);
                    let v = nat.outbound(&mut p, 0, now);
                    let key = (proto, int, rem);
                    if let Some(s) = live(&model, &key, now) {
                        prop_assert_eq!(v, Verdict::Translated);
                        prop_assert_eq!(endpoints(&p).1, s.ext);
                        let state = next(s.state, proto, flags, s.opened_out);
                        model.insert(key, Session { state, expires: now + timeout(proto, state), ..s });
                    } else if (proto == TCP && flags & RST != 0) || (proto == ICMP && !is_request(flags)) {
                        // Neither a RST nor an echo reply opens a session.
                        prop_assert_eq!(v, Verdict::Drop(NatDrop::NoSession));
                    } else {
                        // A new SNAT session, the forward's host included.
                        prop_assert_eq!(v, Verdict::Translated);
                        let ext = endpoints(&p).1;
                        prop_assert_ne!(ext, FWD_EXT);
                        for (k, s) in model.iter().filter(|(_, s)| s.expires > now && s.opened_out) {
                            if k.0 == proto && k.1 == int {
                                // Endpoint-independent mapping.
                                prop_assert_eq!(s.ext, ext);
                            } else if k.0 == proto {
                                // No two internal endpoints share one.
                                prop_assert_ne!(s.ext, ext);
                            }
                        }
                        let state = next(State::Opening, proto, flags, true);
                        model.insert(key, Session { ext, state, expires: now + timeout(proto, state), opened_out: true });
                    }
                    assert_checksums(&p);
                }
                1 => {
                    // A reply to the external endpoint this flow has or had.
                    let Some(ext) = model.get(&(proto, int, rem)).map(|s| s.ext) else { continue };
                    if ext == FWD_EXT {
                        // The forward's own action (4) covers these.
                        continue;
                    }
                    let mut p = packet(proto, rem, ext, flags, true);
                    let v = nat.inbound(&mut p, now);
                    let owner = model
                        .iter()
                        .find(|(k, s)| s.expires > now && k.0 == proto && k.2 == rem && s.ext == ext)
                        .map(|(k, s)| (*k, *s));
                    if let Some((k, s)) = owner {
                        prop_assert_eq!(v, Verdict::Translated);
                        prop_assert_eq!(endpoints(&p).2, k.1);
                        let state = next(s.state, proto, flags, !s.opened_out);
                        model.insert(k, Session { state, expires: now + timeout(proto, state), ..s });
                        assert_checksums(&p);
                    } else {
                        prop_assert_eq!(v, Verdict::Drop(NatDrop::NoSession));
                    }
                }
                5 => {
                    // A router's "port unreachable" about a packet this
                    // flow sent (or once sent) out: translated back to the
                    // internal host while the session lives, never
                    // refreshing it.
                    let Some(ext) = model.get(&(proto, int, rem)).map(|s| s.ext) else { continue };
                    let quoted = packet(proto, ext, rem, SYN, false);
                    let mut p = icmp_error(Ipv4Addr::new(192, 0, 2, 254), *ext.ip(), 3, 3, &quoted);
                    let v = nat.inbound(&mut p, now);
                    let owner = model.iter().find(|(k, s)| s.expires > now && k.0 == proto && k.2 == rem && s.ext == ext);
                    if let Some((k, _)) = owner {
                        prop_assert_eq!(v, Verdict::Translated);
                        prop_assert_eq!(*endpoints(&p).2.ip(), *k.1.ip());
                        assert_checksums(&p);
                    } else {
                        prop_assert_eq!(v, Verdict::Drop(NatDrop::IcmpNoSession));
                    }
                }
                4 => {
                    // From outside to the port forward (TCP and UDP).
                    if proto == ICMP {
                        continue;
                    }
                    let mut p = packet(proto, rem, FWD_EXT, flags, true);
                    let v = nat.inbound(&mut p, now);
                    let key = (proto, FWD_INT, rem);
                    match live(&model, &key, now) {
                        Some(s) if !s.opened_out => {
                            prop_assert_eq!(v, Verdict::Translated);
                            prop_assert_eq!(endpoints(&p).2, FWD_INT);
                            let state = next(s.state, proto, flags, true);
                            model.insert(key, Session { state, expires: now + timeout(proto, state), ..s });
                        }
                        // A RST opens nothing.
                        _ if proto == TCP && flags & RST != 0 => {
                            prop_assert_eq!(v, Verdict::Drop(NatDrop::NoSession));
                        }
                        // The internal host's own SNAT session holds the
                        // tuple the forward would need.
                        Some(_) => prop_assert_eq!(v, Verdict::Drop(NatDrop::Conflict)),
                        None => {
                            prop_assert_eq!(v, Verdict::Translated);
                            prop_assert_eq!(endpoints(&p).2, FWD_INT);
                            let state = next(State::Opening, proto, flags, true);
                            let s = Session { ext: FWD_EXT, state, expires: now + timeout(proto, state), opened_out: false };
                            model.insert(key, s);
                        }
                    }
                    assert_checksums(&p);
                }
                2 => {
                    nat.expire(now, budget);
                }
                _ => {
                    now += WAITS[wait] * SEC;
                }
            }
            let alive = model.values().filter(|s| s.expires > now).count();
            prop_assert!(nat.sessions() >= alive);
        }
        // A whole turn of the sweep leaves exactly the live sessions.
        nat.expire(now, 1 << 20);
        prop_assert_eq!(nat.sessions(), model.values().filter(|s| s.expires > now).count());
        let c = nat.counters();
        prop_assert_eq!(c.sessions_created - c.sessions_expired - c.sessions_evicted, nat.sessions() as u64);
    }
}
