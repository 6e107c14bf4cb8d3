//! Arbitrary bytes through the NAT and the resolver: no panic, and what
//! comes out translated still parses. Case count from PROPTEST_CASES.

mod common;

use std::net::Ipv4Addr;

use braid_nat::resolver::{Resolver, ResolverConfig};
use braid_nat::{NatShard, Verdict};
use braid_tunnel::wire::ethernet::Address;
use braid_tunnel::wire::ipv4;
use common::*;
use proptest::prelude::*;

fn shard() -> NatShard {
    NatShard::new(&lan_config(2, 256), 0, 1).unwrap()
}

/// Bytes shaped like IPv4: a valid header of `proto` around random L4
/// bytes, with NAT-relevant addresses, so the deep paths are reached.
fn ipv4_like(proto: u8, l4: &[u8], outbound: bool, seed: u8) -> Vec<u8> {
    let mut p = udp_pkt(sa([10, 0, 0, seed], 1), sa([203, 0, 113, 1 + seed % 2], 2));
    p.truncate(20);
    p.extend_from_slice(l4);
    if !outbound {
        p[12..16].copy_from_slice(&[198, 51, 100, 1]);
    }
    p[9] = proto;
    let n = p.len() as u16;
    p[2..4].copy_from_slice(&n.to_be_bytes());
    ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
    p
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn nat_never_panics(
        packets in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..120), any::<bool>(), 0u8..5, any::<u8>()),
            1..40)
    ) {
        let mut nat = shard();
        let mut now = SEC;
        for (bytes, outbound, shape, seed) in packets {
            now += SEC;
            let mut p = match shape {
                0 => bytes,
                1 => ipv4_like(TCP, &bytes, outbound, seed),
                2 => ipv4_like(UDP, &bytes, outbound, seed),
                _ => {
                    // ICMP: random type among queries and errors.
                    let mut b = bytes;
                    if let Some(t) = b.first_mut() {
                        *t = [0, 3, 8, 11, 12, 5][seed as usize % 6];
                    }
                    ipv4_like(ICMP, &b, outbound, seed)
                }
            };
            let v = if outbound { nat.outbound(&mut p, 0, now) } else { nat.inbound(&mut p, now) };
            if v == Verdict::Translated {
                prop_assert!(ipv4::Packet::new_checked(&p[..]).is_ok());
            }
        }
        let c = nat.counters();
        prop_assert!(nat.sessions() <= nat.capacity());
        prop_assert!(c.sessions_created >= c.sessions_expired);
    }

    #[test]
    fn resolver_never_panics(
        frames in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..120), 0u8..4), 1..40)
    ) {
        let mut r = Resolver::new(ResolverConfig {
            mac: Address([2, 0, 0, 0, 0, 1]),
            ipv4: vec![Ipv4Addr::new(192, 0, 2, 1)],
            ipv6: vec!["fe80::1".parse().unwrap()],
            ..ResolverConfig::default()
        });
        let mut out = [0u8; 128];
        let mut now = SEC;
        for (mut f, shape) in frames {
            now += SEC / 2;
            if f.len() >= 14 {
                // Sometimes an ARP or IPv6 EtherType, to reach the parsers.
                let et: [u8; 2] = match shape { 0 => [0x08, 0x06], 1 => [0x86, 0xdd], 2 => [0x08, 0x00], _ => [f[12], f[13]] };
                f[12..14].copy_from_slice(&et);
            }
            let _ = r.on_frame(&f, now, &mut out);
            let _ = r.answer_echo(&mut f);
            let _ = r.lookup(Ipv4Addr::new(192, 0, 2, 9).into(), now, &mut out);
        }
        prop_assert!(r.len() <= r.capacity());
    }

    #[test]
    fn round_trip_restores_the_original(
        flows in proptest::collection::vec((any::<u16>(), any::<u16>(), any::<u32>(), any::<u16>(), 0u8..3), 1..64)
    ) {
        let mut nat = shard();
        for (host, sport, remote, rport, kind) in flows {
            let int = sa([10, 0, (host >> 8) as u8, host as u8], sport);
            let rem = std::net::SocketAddrV4::new(Ipv4Addr::from(remote | 0x0100_0000), rport);
            let (mut p, orig) = match kind {
                0 => (udp_pkt(int, rem), udp_pkt(rem, int)),
                1 => (tcp_pkt(int, rem, 0x02), tcp_pkt(rem, int, 0x12)),
                _ => (echo_pkt(*int.ip(), *rem.ip(), sport, true), echo_pkt(*rem.ip(), *int.ip(), sport, false)),
            };
            prop_assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
            assert_checksums(&p);
            let (proto, ext, _) = endpoints(&p);
            let mut reply = match proto {
                UDP => udp_pkt(rem, ext),
                TCP => tcp_pkt(rem, ext, 0x12),
                _ => echo_pkt(*rem.ip(), *ext.ip(), ext.port(), false),
            };
            prop_assert_eq!(nat.inbound(&mut reply, SEC), Verdict::Translated);
            // Byte for byte what the internal host would get without NAT.
            prop_assert_eq!(reply, orig);
        }
    }
}
