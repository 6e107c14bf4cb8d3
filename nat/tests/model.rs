//! The shard against a model of what RFC 4787 / RFC 5382 ask of it:
//! random UDP and TCP packets of a few flows, in both directions, at random
//! times around the timeouts, with expiry sweeps of random budgets in
//! between. The model keeps one idle timer per session (restarted by
//! packets in both directions, with the timeout of the TCP state the
//! packet leaves), endpoint-independent mappings and address-and-port-
//! dependent filtering; the shard must agree on every verdict and every
//! address, however its session tables store the timers. Case count from
//! PROPTEST_CASES.

mod common;

use std::collections::HashMap;
use std::net::SocketAddrV4;

use braid_nat::{NatDrop, NatShard, Verdict};
use common::*;
use proptest::prelude::*;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const FLAGS: [u8; 6] = [SYN, SYN | ACK, ACK, FIN | ACK, RST, ACK];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Opening,
    Established,
    Closing,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    ext: SocketAddrV4,
    expires: u64,
    state: State,
}

/// (protocol, internal endpoint, remote endpoint).
type Key = (u8, SocketAddrV4, SocketAddrV4);

fn timeout(proto: u8, st: State) -> u64 {
    SEC * match (proto, st) {
        (TCP, State::Opening) => 30,
        (TCP, State::Established) => 2 * 3600 + 4 * 60,
        (TCP, State::Closing) => 4 * 60,
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
        State::Closing
    } else {
        match st {
            State::Opening if !from_opener => State::Established,
            State::Closing if flags & SYN != 0 && flags & ACK == 0 && from_opener => State::Opening,
            s => s,
        }
    }
}

/// Eight flows: two protocols, two internal endpoints, each talking to
/// two remotes (so mappings are shared and ports reused).
fn flow(i: u8) -> Key {
    let proto = if i.is_multiple_of(2) { UDP } else { TCP };
    let int = sa([10, 0, 0, 1 + (i / 2) % 2], 1000);
    let rem = sa([198, 51, 100, 1 + (i / 4) % 2], 53);
    (proto, int, rem)
}

fn packet(proto: u8, src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Vec<u8> {
    if proto == TCP {
        tcp_pkt(src, dst, flags)
    } else {
        udp_pkt(src, dst)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn the_shard_agrees_with_the_model(
        steps in proptest::collection::vec((0u8..4, 0u8..8, 0usize..6, 0usize..12, 1usize..3000), 1..120)
    ) {
        let mut nat = NatShard::new(&lan_config(1, 256), 0, 1).unwrap();
        let mut model: HashMap<Key, Session> = HashMap::new();
        let mut now = SEC;
        // Waits around the timeouts (seconds), so expiry is hit exactly.
        const WAITS: [u64; 12] = [0, 1, 29, 30, 31, 119, 120, 121, 239, 240, 241, 7440];
        for (action, f, fl, wait, budget) in steps {
            let (proto, int, rem) = flow(f);
            let flags = FLAGS[fl];
            let live = |m: &HashMap<Key, Session>, k: &Key, now: u64| m.get(k).filter(|s| s.expires > now).copied();
            match action {
                0 => {
                    let mut p = packet(proto, int, rem, flags);
                    let v = nat.outbound(&mut p, 0, now);
                    let key = (proto, int, rem);
                    if let Some(s) = live(&model, &key, now) {
                        prop_assert_eq!(v, Verdict::Translated);
                        prop_assert_eq!(endpoints(&p).1, s.ext);
                        let state = next(s.state, proto, flags, true);
                        model.insert(key, Session { ext: s.ext, state, expires: now + timeout(proto, state) });
                    } else if proto == TCP && flags & RST != 0 {
                        prop_assert_eq!(v, Verdict::Drop(NatDrop::NoSession));
                    } else {
                        prop_assert_eq!(v, Verdict::Translated);
                        let ext = endpoints(&p).1;
                        for (k, s) in model.iter().filter(|(_, s)| s.expires > now) {
                            if k.0 == proto && k.1 == int {
                                // Endpoint-independent mapping.
                                prop_assert_eq!(s.ext, ext);
                            } else if k.0 == proto {
                                // No two internal endpoints share one.
                                prop_assert_ne!(s.ext, ext);
                            }
                        }
                        let state = next(State::Opening, proto, flags, true);
                        model.insert(key, Session { ext, state, expires: now + timeout(proto, state) });
                    }
                    assert_checksums(&p);
                }
                1 => {
                    // A reply to the external endpoint this flow has or had.
                    let Some(ext) = model.get(&(proto, int, rem)).map(|s| s.ext) else { continue };
                    let mut p = packet(proto, rem, ext, flags);
                    let v = nat.inbound(&mut p, now);
                    let owner = model
                        .iter()
                        .find(|(k, s)| s.expires > now && k.0 == proto && k.2 == rem && s.ext == ext)
                        .map(|(k, s)| (*k, *s));
                    if let Some((k, s)) = owner {
                        prop_assert_eq!(v, Verdict::Translated);
                        prop_assert_eq!(endpoints(&p).2, k.1);
                        let state = next(s.state, proto, flags, false);
                        model.insert(k, Session { ext: s.ext, state, expires: now + timeout(proto, state) });
                        assert_checksums(&p);
                    } else {
                        prop_assert_eq!(v, Verdict::Drop(NatDrop::NoSession));
                    }
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
        prop_assert_eq!(c.sessions_created - c.sessions_expired, nat.sessions() as u64);
    }
}
