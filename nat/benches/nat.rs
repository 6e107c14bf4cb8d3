//! Per-packet NAT cost: translating a packet of a live session with 1,
//! 10^4 and 10^6 sessions in the shard, both directions, against a plain
//! pass-through (NAT off: the same packet copy, no NAT call) and an
//! untouched packet (NAT on, no rule matches).
//!
//! Every iteration copies a 40-byte UDP packet from a template (so the
//! same bytes are translated each time) and translates it; the templates
//! cycle over up to 65,536 random sessions so the larger tables really
//! miss in cache.
//!
//! `CARGO_TARGET_DIR=target-nat cargo bench -p braid-nat -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::Ipv4Addr;

use braid_nat::{NatConfig, NatShard, Prefix, SnatRule, Verdict};
use braid_tunnel::wire::{ipv4, udp, AddrPair, IpProtocol};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SEC: u64 = 1_000_000_000;
const TEMPLATES: usize = 65_536;
const PKT: usize = 40;

fn udp_pkt(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> [u8; PKT] {
    let mut b = [0u8; PKT];
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::UDP,
        payload_len: PKT - 20,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(
        &mut ipv4::Packet::new_unchecked(&mut b[..]),
        &Default::default(),
    );
    udp::Repr {
        src_port: sport,
        dst_port: dport,
        payload_len: PKT - 28,
    }
    .emit(
        &mut udp::Packet::new_unchecked(&mut b[20..]),
        &AddrPair::V4 { src, dst },
        &Default::default(),
    );
    b
}

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Flow `i`: its own internal endpoint in 10.0.0.0/8, to one of 256 servers.
fn flow(i: u32) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    (
        Ipv4Addr::from(0x0a00_0000 | (i / 16 + 1)),
        10_000 + (i % 16) as u16,
        Ipv4Addr::new(198, 51, 100, (i % 256) as u8),
        443,
    )
}

/// A shard holding `n` live UDP sessions, with outbound and inbound
/// templates of random ones among them.
fn populated(n: u32) -> (NatShard, Vec<[u8; PKT]>, Vec<[u8; PKT]>) {
    let cfg = NatConfig {
        snat: vec![SnatRule {
            match_prefix: Prefix::new(Ipv4Addr::new(10, 0, 0, 0).into(), 8),
            egress: None,
            pool: (1..=32)
                .map(|i| Ipv4Addr::new(203, 0, 113, i).into())
                .collect(),
            ports: 1024..=65535,
        }],
        max_sessions: (n as usize).max(1024) + 1024,
        ..NatConfig::default()
    };
    let mut nat = NatShard::new(&cfg, 0, 1).unwrap();
    let mut ext = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (s, sp, d, dp) = flow(i);
        let mut p = udp_pkt(s, sp, d, dp);
        assert_eq!(nat.outbound(&mut p, 0, SEC), Verdict::Translated);
        ext.push((
            Ipv4Addr::new(p[12], p[13], p[14], p[15]),
            u16::from_be_bytes([p[20], p[21]]),
        ));
    }
    let mut seed = 1u64;
    let (mut out, mut inb) = (Vec::new(), Vec::new());
    for _ in 0..TEMPLATES.min(n as usize * 4) {
        let i = (splitmix(&mut seed) % n as u64) as u32;
        let (s, sp, d, dp) = flow(i);
        out.push(udp_pkt(s, sp, d, dp));
        let (ea, ep) = ext[i as usize];
        inb.push(udp_pkt(d, dp, ea, ep));
    }
    (nat, out, inb)
}

fn translate(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(1));

    // Baselines over the same template cycling.
    let (mut nat, out, _) = populated(1);
    let mut buf = [0u8; PKT];
    let mut k = 0usize;
    g.bench_function("passthrough_copy_only", |b| {
        b.iter(|| {
            k = (k + 1) % out.len();
            buf.copy_from_slice(&out[k]);
            black_box(&mut buf);
        })
    });
    let other = udp_pkt(
        Ipv4Addr::new(192, 168, 1, 1),
        1000,
        Ipv4Addr::new(198, 51, 100, 1),
        53,
    );
    g.bench_function("untouched_no_rule", |b| {
        b.iter(|| {
            buf.copy_from_slice(&other);
            black_box(nat.outbound(black_box(&mut buf), 0, 2 * SEC))
        })
    });

    for n in [1u32, 10_000, 1_000_000] {
        let (mut nat, out, inb) = populated(n);
        let mut now = 2 * SEC;
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::new("outbound", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % out.len();
                now += 10;
                buf.copy_from_slice(&out[k]);
                let v = nat.outbound(black_box(&mut buf), 0, now);
                debug_assert_eq!(v, Verdict::Translated);
                black_box(v)
            })
        });
        g.bench_with_input(BenchmarkId::new("inbound", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % inb.len();
                now += 10;
                buf.copy_from_slice(&inb[k]);
                black_box(nat.inbound(black_box(&mut buf), now))
            })
        });
        // Bursts of 32 as the dataplane runs them, with and without a
        // pass that warms the whole burst's lookups first.
        let mut bufs = [[0u8; PKT]; 32];
        g.throughput(Throughput::Elements(32));
        for (name, inbound, prefetch) in [
            ("outbound_burst32", false, false),
            ("outbound_burst32_prefetch", false, true),
            ("inbound_burst32", true, false),
            ("inbound_burst32_prefetch", true, true),
        ] {
            let templates = if inbound { &inb } else { &out };
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    now += 10;
                    for buf in bufs.iter_mut() {
                        k = (k + 1) % templates.len();
                        buf.copy_from_slice(&templates[k]);
                    }
                    if prefetch {
                        let refs: [&[u8]; 32] = core::array::from_fn(|i| &bufs[i][..]);
                        if inbound {
                            nat.prefetch_inbound(&refs);
                        } else {
                            nat.prefetch_outbound(&refs);
                        }
                    }
                    for buf in bufs.iter_mut() {
                        let v = if inbound {
                            nat.inbound(black_box(buf), now)
                        } else {
                            nat.outbound(black_box(buf), 0, now)
                        };
                        black_box(v);
                    }
                })
            });
        }
        g.throughput(Throughput::Elements(1));
        let c = nat.counters();
        assert_eq!(c.drops.iter().sum::<u64>(), 0, "{c:?}");
        assert_eq!(nat.sessions(), n as usize);
        eprintln!("{n} sessions: tables {} MB", nat.memory() >> 20);
    }
    g.finish();
}

/// NPTv6: one IPv6 UDP packet (48 bytes) copied and translated, out and
/// back, with 1 and 64 rules (a linear scan; the match is the last rule).
fn npt6(c: &mut Criterion) {
    use braid_nat::{Npt6Rule, NatDrop};
    use std::net::{IpAddr, Ipv6Addr};
    let mut g = c.benchmark_group("npt6");
    g.throughput(Throughput::Elements(1));
    let mut pkt = [0u8; 48];
    pkt[0] = 0x60;
    pkt[4..6].copy_from_slice(&8u16.to_be_bytes());
    pkt[6] = 17;
    pkt[8..24].copy_from_slice(&"fd00:3f::1:2:3:4".parse::<Ipv6Addr>().unwrap().octets());
    pkt[24..40].copy_from_slice(&"2001:db8:ffff::1".parse::<Ipv6Addr>().unwrap().octets());
    for n in [1u16, 64] {
        let rules: Vec<Npt6Rule> = (0..n)
            .map(|i| Npt6Rule {
                internal: Prefix::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0x40 - n + i, 0, 0, 0, 0, 0, 0)), 32),
                external: Prefix::new(IpAddr::V6(Ipv6Addr::new(0x2001, 0x100 + i, 0, 0, 0, 0, 0, 0)), 32),
                egress: None,
            })
            .collect();
        let cfg = NatConfig { npt6: rules, max_sessions: 1, ..Default::default() };
        let mut nat = NatShard::new(&cfg, 0, 1).unwrap();
        let mut buf = [0u8; 48];
        buf.copy_from_slice(&pkt);
        assert_eq!(nat.outbound(&mut buf, 0, 0), Verdict::Translated);
        let mut back = buf;
        back[8..24].copy_from_slice(&pkt[24..40]);
        back[24..40].copy_from_slice(&buf[8..24]);
        assert_eq!(nat.inbound(&mut back.clone(), 0), Verdict::Translated);
        g.bench_with_input(BenchmarkId::new("outbound", n), &n, |b, _| {
            b.iter(|| {
                buf.copy_from_slice(&pkt);
                black_box(nat.outbound(black_box(&mut buf), 0, 0))
            })
        });
        g.bench_with_input(BenchmarkId::new("inbound", n), &n, |b, _| {
            b.iter(|| {
                buf.copy_from_slice(&back);
                black_box(nat.inbound(black_box(&mut buf), 0))
            })
        });
        assert_eq!(nat.counters().drops[NatDrop::NptUnmappable as usize], 0);
    }
    g.finish();
}

criterion_group!(benches, translate, npt6);
criterion_main!(benches);
