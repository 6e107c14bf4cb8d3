//! Packet builders and full-recompute checkers for the NAT tests.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};

use braid_nat::{DnatRule, NatConfig, NatShard, Prefix, Proto, SnatRule};
use braid_tunnel::wire::checksum;
use braid_tunnel::wire::{icmpv4, ipv4, tcp, udp, AddrPair, IpProtocol};

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const SEC: u64 = 1_000_000_000;

pub fn sa(a: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(a), port)
}

pub fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SNAT 10.0.0.0/16 to 203.0.113.1..=n, ports 1024..=65535, any egress.
/// [`lan_config`] (one pool address, 64 sessions) and a UDP port forward
/// from 203.0.113.200:5353 to `internal`:53.
pub fn nat_with_forward(internal: [u8; 4]) -> NatShard {
    let mut cfg = lan_config(1, 64);
    cfg.dnat.push(DnatRule {
        external: Ipv4Addr::new(203, 0, 113, 200).into(),
        proto: Proto::Udp,
        port: 5353,
        internal: Ipv4Addr::from(internal).into(),
        internal_port: 53,
    });
    NatShard::new(&cfg, 0, 1).unwrap()
}

pub fn lan_config(pool: u8, max_sessions: usize) -> NatConfig {
    NatConfig {
        snat: vec![SnatRule {
            match_prefix: Prefix::new("10.0.0.0".parse().unwrap(), 16),
            egress: None,
            pool: (1..=pool)
                .map(|i| Ipv4Addr::new(203, 0, 113, i).into())
                .collect(),
            ports: 1024..=65535,
        }],
        max_sessions,
        ..NatConfig::default()
    }
}

fn ip_header(buf: &mut [u8], proto: u8, src: Ipv4Addr, dst: Ipv4Addr) {
    let total = buf.len();
    let r = ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol(proto),
        payload_len: total - 20,
        ttl: 64,
        tos: 0,
        ident: 0x4242,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    r.emit(
        &mut ipv4::Packet::new_unchecked(&mut buf[..]),
        &Default::default(),
    );
}

/// A UDP packet with 12 bytes of payload and a real checksum.
pub fn udp_pkt(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut b = vec![0u8; 20 + 8 + 12];
    b[28..].copy_from_slice(b"hello, nat!!");
    ip_header(&mut b, UDP, *src.ip(), *dst.ip());
    let r = udp::Repr {
        src_port: src.port(),
        dst_port: dst.port(),
        payload_len: 12,
    };
    let addrs = AddrPair::V4 {
        src: *src.ip(),
        dst: *dst.ip(),
    };
    r.emit(
        &mut udp::Packet::new_unchecked(&mut b[20..]),
        &addrs,
        &Default::default(),
    );
    b
}

/// A TCP segment with `flags` and 5 bytes of payload.
pub fn tcp_pkt(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Vec<u8> {
    let mut b = vec![0u8; 20 + 20 + 5];
    b[40..].copy_from_slice(b"12345");
    ip_header(&mut b, TCP, *src.ip(), *dst.ip());
    let r = tcp::Repr {
        src_port: src.port(),
        dst_port: dst.port(),
        seq: 1000,
        ack: 2000,
        flags: tcp::Flags(flags),
        window: 65535,
        payload_len: 5,
    };
    let addrs = AddrPair::V4 {
        src: *src.ip(),
        dst: *dst.ip(),
    };
    r.emit(&mut tcp::Packet::new_unchecked(&mut b[20..]), &addrs);
    b
}

/// An ICMP echo request (or reply) with id and 8 bytes of data.
pub fn echo_pkt(src: Ipv4Addr, dst: Ipv4Addr, id: u16, request: bool) -> Vec<u8> {
    let mut b = vec![0u8; 20 + 8 + 8];
    b[28..].copy_from_slice(b"pingpong");
    ip_header(&mut b, ICMP, src, dst);
    icmpv4::Repr::Echo {
        request,
        ident: id,
        seq: 7,
        data_len: 8,
    }
    .emit(&mut icmpv4::Packet::new_unchecked(&mut b[20..]));
    b
}

/// An ICMP error of `ty`/`code` from `from` to `to` quoting `quoted`.
pub fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 20 + 8 + quoted.len()];
    b[28..].copy_from_slice(quoted);
    ip_header(&mut b, ICMP, from, to);
    icmpv4::Repr::Error {
        ty,
        code,
        rest: [0; 4],
        data_len: quoted.len(),
    }
    .emit(&mut icmpv4::Packet::new_unchecked(&mut b[20..]));
    b
}

/// The packet's (proto, src, dst) with ports (ICMP: the id at both ends).
pub fn endpoints(p: &[u8]) -> (u8, SocketAddrV4, SocketAddrV4) {
    let ip = ipv4::Packet::new_checked(p).unwrap();
    let l4 = ip.payload();
    let (sp, dp) = match ip.protocol().0 {
        ICMP => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
        _ => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
    };
    (
        ip.protocol().0,
        SocketAddrV4::new(ip.src_addr(), sp),
        SocketAddrV4::new(ip.dst_addr(), dp),
    )
}

/// Every checksum recomputed from scratch: IPv4 header, and TCP/UDP over
/// the pseudo-header or ICMP over the message (for an ICMP error, the
/// quoted IPv4 header too, and the quoted L4 checksum when whole).
pub fn assert_checksums(p: &[u8]) {
    let ip = ipv4::Packet::new_checked(p).unwrap();
    assert!(ip.verify_checksum(), "ipv4 header checksum");
    let addrs = ip.addrs();
    let l4 = ip.payload();
    match ip.protocol().0 {
        TCP => assert!(
            tcp::Packet::new_checked(l4)
                .unwrap()
                .verify_checksum(&addrs),
            "tcp checksum"
        ),
        UDP => {
            let u = udp::Packet::new_checked(l4).unwrap();
            assert!(
                u.checksum() == 0 || u.verify_checksum(&addrs),
                "udp checksum"
            );
        }
        ICMP => {
            assert!(checksum::verifies(l4), "icmp checksum");
            if icmpv4::is_error(l4[0]) {
                let q = &l4[8..];
                let ihl = (q[0] & 0x0f) as usize * 4;
                assert!(checksum::verifies(&q[..ihl]), "quoted ipv4 checksum");
                let qip = ipv4::Packet::new_unchecked(q);
                if qip.total_len() as usize == q.len() {
                    let qaddrs = qip.addrs();
                    match q[9] {
                        TCP => assert!(
                            tcp::Packet::new_checked(&q[ihl..])
                                .unwrap()
                                .verify_checksum(&qaddrs),
                            "quoted tcp"
                        ),
                        UDP => assert!(
                            udp::Packet::new_checked(&q[ihl..])
                                .unwrap()
                                .verify_checksum(&qaddrs),
                            "quoted udp"
                        ),
                        ICMP => assert!(checksum::verifies(&q[ihl..]), "quoted icmp"),
                        _ => {}
                    }
                }
            }
        }
        _ => {}
    }
}
