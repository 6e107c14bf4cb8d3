//! IPv4 and IPv6 reassembly through librte_ip_frag: fragments in any order
//! give back the original packet byte for byte; a duplicated fragment makes DPDK
//! discard that packet (never deliver it twice); duplicates, overlaps, too many
//! fragments and lone fragments never leak an mbuf (the pool is full again
//! afterwards), and a frame that is no fragment is handed back.

mod common;

use std::time::Duration;

use braid_dpdk::ip_frag::{Reassembly, MAX_FRAGMENTS};
use braid_dpdk::{rdtsc, tsc_hz, Mbuf, Mempool};

const ETH: usize = 14;

fn csum(h: &[u8]) -> u16 {
    let mut s: u32 = h.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// An Ethernet + IPv4 (UDP protocol) frame with `payload` bytes.
fn packet(id: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; ETH + 20 + payload];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[ETH..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[192, 0, 2, 1]);
    ip[16..20].copy_from_slice(&[192, 0, 2, 2]);
    for (i, b) in ip[20..].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).rotate_right(13) as u8 ^ id as u8;
    }
    f
}

/// `pkt` cut into fragments of at most `chunk` payload bytes (a multiple
/// of 8), each a full frame with a correct header.
fn fragments(pkt: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let payload = &pkt[ETH + 20..];
    let n = payload.len().div_ceil(chunk);
    (0..n)
        .map(|i| {
            let part = &payload[i * chunk..((i + 1) * chunk).min(payload.len())];
            let mut f = pkt[..ETH + 20].to_vec();
            f.extend_from_slice(part);
            let ip = &mut f[ETH..ETH + 20];
            ip[2..4].copy_from_slice(&((20 + part.len()) as u16).to_be_bytes());
            let mf = if i + 1 < n { 0x2000 } else { 0 };
            ip[6..8].copy_from_slice(&(mf | (i * chunk / 8) as u16).to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = csum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f
        })
        .collect()
}

fn mbuf(pool: &Mempool, frame: &[u8]) -> Mbuf {
    let mut m = Mbuf::alloc(pool).expect("mbuf");
    m.append(frame.len()).expect("room").copy_from_slice(frame);
    m
}

/// Checks the reassembled frame against the original: same Ethernet
/// header, addresses, protocol and payload, total length restored, no
/// fragment bits.
fn assert_same(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len());
    assert_eq!(got[..ETH], want[..ETH]);
    let (g, w) = (&got[ETH..], &want[ETH..]);
    assert_eq!(g[2..4], w[2..4], "total length");
    assert_eq!(u16::from_be_bytes([g[6], g[7]]) & 0x3fff, 0, "fragment bits");
    assert_eq!(g[9], w[9]);
    assert_eq!(g[12..20], w[12..20]);
    assert!(g[20..] == w[20..], "payload differs");
}

fn setup() -> (std::sync::MutexGuard<'static, ()>, Mempool) {
    let (_, guard) = common::eal(&[]);
    let pool = Mempool::new(&format!("frag{}", rdtsc() % 100000), 1023, 10240).expect("pool");
    (guard, pool)
}

#[test]
fn fragments_in_any_order_give_back_the_packet() {
    let (_g, pool) = setup();
    let mut r = Reassembly::new(64, Duration::from_secs(1)).unwrap();
    let orders: [&[usize]; 4] = [&[0, 1, 2, 3], &[3, 2, 1, 0], &[2, 0, 3, 1], &[1, 3, 0, 2]];
    for (k, order) in orders.iter().enumerate() {
        let pkt = packet(100 + k as u16, 5000);
        let frags = fragments(&pkt, 1480);
        assert_eq!(frags.len(), 4);
        let mut out = None;
        for (j, &i) in order.iter().enumerate() {
            let m = mbuf(&pool, &frags[i]);
            assert!(Reassembly::is_fragment(m.data(), ETH));
            let got = r.push(m, ETH, rdtsc()).unwrap_or_else(|_| panic!("a fragment"));
            assert_eq!(got.is_some(), j == order.len() - 1, "order {order:?} step {j}");
            out = got.or(out);
        }
        let whole = out.unwrap();
        assert!(!whole.is_contiguous(), "DPDK chains the fragments");
        assert_same(&whole.to_vec(), &pkt);
        let flat = whole.linearized(&pool).unwrap_or_else(|_| panic!("fits"));
        assert!(flat.is_contiguous());
        assert_same(flat.data(), &pkt);
    }
    assert_eq!(r.stats().reassembled, 4);
    assert_eq!(r.stats().fragments, 16);
    drop(r);
    assert_eq!(pool.in_use(), 0, "no mbuf kept");
}

#[test]
fn interleaved_packets_and_duplicates() {
    let (_g, pool) = setup();
    let mut r = Reassembly::new(64, Duration::from_secs(1)).unwrap();
    let pkts: Vec<Vec<u8>> = (0..8).map(|i| packet(500 + i, 2000 + 333 * i as usize)).collect();
    let frags: Vec<Vec<Vec<u8>>> = pkts.iter().map(|p| fragments(p, 1024)).collect();
    let mut done = vec![false; pkts.len()];
    let most = frags.iter().map(Vec::len).max().unwrap();
    for j in 0..most {
        for (p, fs) in frags.iter().enumerate() {
            let Some(f) = fs.get(j) else { continue };
            // Odd packets see their first fragment twice: DPDK then
            // discards the whole packet (counted), never delivers it twice.
            let copies = if j == 0 && p % 2 == 1 { 2 } else { 1 };
            for _ in 0..copies {
                if let Some(whole) = r.push(mbuf(&pool, f), ETH, rdtsc()).unwrap_or_else(|_| panic!()) {
                    assert!(!done[p]);
                    done[p] = true;
                    assert_same(&whole.to_vec(), &pkts[p]);
                }
            }
        }
    }
    let want: Vec<bool> = (0..pkts.len()).map(|p| p % 2 == 0).collect();
    assert_eq!(done, want);
    assert!(r.stats().discarded > 0);
    r.expire(rdtsc() + 2 * tsc_hz());
    drop(r);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn lone_fragments_expire_and_bad_ones_never_leak() {
    let (_g, pool) = setup();
    let t0 = rdtsc();
    // Lone first fragments of 10 packets: kept until they expire.
    let mut r = Reassembly::new(1024, Duration::from_millis(50)).unwrap();
    for i in 0..10 {
        let f = fragments(&packet(900 + i, 3000), 1480);
        assert!(r.push(mbuf(&pool, &f[0]), ETH, t0).unwrap_or_else(|_| panic!()).is_none());
    }
    assert_eq!(pool.in_use(), 10);
    r.expire(t0 + tsc_hz() / 100); // 10 ms: not yet
    assert_eq!(pool.in_use(), 10);
    r.expire(t0 + tsc_hz()); // 1 s
    assert_eq!(pool.in_use(), 0, "expired fragments freed");
    assert_eq!(r.stats().discarded, 10);
    // More expired entries than DPDK's death row holds (288) at once.
    for i in 0..700 {
        let f = fragments(&packet(i, 3000), 1480);
        assert!(r.push(mbuf(&pool, &f[0]), ETH, t0).unwrap_or_else(|_| panic!()).is_none());
    }
    assert_eq!(pool.in_use(), 700);
    r.expire(t0 + tsc_hz());
    assert_eq!(pool.in_use(), 0, "every expired entry freed");
    assert_eq!(r.stats().discarded, 710);

    // Overlapping fragments, then more than DPDK's maximum of fragments:
    // refused, freed, counted.
    let pkt = packet(7, 4000);
    let mut a = fragments(&pkt, 1480);
    let b = fragments(&pkt, 1024);
    a.insert(1, b[1].clone());
    for f in &a {
        let _ = r.push(mbuf(&pool, f), ETH, t0 + tsc_hz()).unwrap_or_else(|_| panic!());
    }
    let many = fragments(&packet(8, 8 * (MAX_FRAGMENTS + 2)), 8);
    assert!(many.len() > MAX_FRAGMENTS);
    for f in &many {
        assert!(r.push(mbuf(&pool, f), ETH, t0 + tsc_hz()).unwrap_or_else(|_| panic!()).is_none());
    }
    r.expire(t0 + 3 * tsc_hz());
    assert_eq!(pool.in_use(), 0, "nothing leaked");

    // Not a fragment, or not IPv4 at all: handed back untouched.
    let whole = packet(9, 100);
    let Err(m) = r.push(mbuf(&pool, &whole), ETH, t0) else { panic!("not a fragment") };
    assert_eq!(m.data(), &whole[..]);
    drop(m);
    let Err(m) = r.push(mbuf(&pool, &whole[..20]), ETH, t0) else { panic!("runt") };
    drop(m);
    assert_eq!(r.stats().not_fragment, 2);
    drop(r);
    assert_eq!(pool.in_use(), 0);
}

/// An Ethernet + IPv6 (UDP next header) frame with `payload` bytes.
fn packet_v6(id: u32, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; ETH + 40 + payload];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let ip = &mut f[ETH..];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&"2001:db8:a::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    ip[24..40].copy_from_slice(&"2001:db8:b::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    for (i, b) in ip[40..].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).rotate_right(7) as u8 ^ id as u8;
    }
    f
}

/// `pkt` cut into IPv6 fragments (RFC 8200 section 4.5) of at most
/// `chunk` payload bytes (a multiple of 8), identification `id`.
fn fragments_v6(pkt: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    let payload = &pkt[ETH + 40..];
    let n = payload.len().div_ceil(chunk);
    (0..n)
        .map(|i| {
            let part = &payload[i * chunk..((i + 1) * chunk).min(payload.len())];
            let mut f = pkt[..ETH + 40].to_vec();
            f[ETH + 4..ETH + 6].copy_from_slice(&((8 + part.len()) as u16).to_be_bytes());
            f[ETH + 6] = 44;
            let off = (i * chunk) as u16 | u16::from(i + 1 < n);
            f.extend_from_slice(&[17, 0]);
            f.extend_from_slice(&off.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(part);
            f
        })
        .collect()
}

#[test]
fn ipv6_fragments_in_any_order_give_back_the_packet() {
    let (_g, pool) = setup();
    let mut r = Reassembly::new(64, Duration::from_secs(1)).unwrap();
    let orders: [&[usize]; 4] = [&[0, 1, 2, 3], &[3, 2, 1, 0], &[2, 0, 3, 1], &[1, 3, 0, 2]];
    for (k, order) in orders.iter().enumerate() {
        let pkt = packet_v6(0x1000 + k as u32, 5000);
        let frags = fragments_v6(&pkt, 1448, 0x1000 + k as u32);
        assert_eq!(frags.len(), 4);
        let mut out = None;
        for (j, &i) in order.iter().enumerate() {
            let m = mbuf(&pool, &frags[i]);
            assert!(Reassembly::is_fragment_v6(m.data(), ETH));
            let got = r.push_v6(m, ETH, rdtsc()).unwrap_or_else(|_| panic!("a fragment"));
            assert_eq!(got.is_some(), j == order.len() - 1, "order {order:?} step {j}");
            out = got.or(out);
        }
        let flat = out.unwrap().linearized(&pool).unwrap_or_else(|_| panic!("fits"));
        assert!(flat.data() == &pkt[..], "packet {k}: the original, Fragment header gone");
    }
    // The same identification between other addresses, or over IPv4, is
    // another packet: three packets of one id interleaved all complete.
    let (p1, mut p2, p4) = (packet_v6(1, 3000), packet_v6(2, 3000), packet(7, 3000));
    p2[ETH + 8] ^= 0x40;
    let (f1, f2, f4) = (fragments_v6(&p1, 1448, 7), fragments_v6(&p2, 1448, 7), fragments(&p4, 1480));
    assert_eq!((f1.len(), f4.len()), (3, 3));
    let mut got = Vec::new();
    for ((a, b), c) in f1.iter().zip(&f2).zip(&f4) {
        for (f, v6) in [(a, true), (b, true), (c, false)] {
            let m = mbuf(&pool, f);
            let whole = if v6 { r.push_v6(m, ETH, rdtsc()) } else { r.push(m, ETH, rdtsc()) };
            if let Some(m) = whole.unwrap_or_else(|_| panic!()) {
                got.push(m.linearized(&pool).unwrap_or_else(|_| panic!()).to_vec());
            }
        }
    }
    assert_eq!(got.len(), 3);
    assert!(got[0] == p1 && got[1] == p2, "the IPv6 packets, each whole");
    assert_same(&got[2], &p4);
    assert_eq!(r.stats().reassembled, 7);
    // Not an IPv6 fragment: an IPv4 one, a whole IPv6 packet, a runt.
    let v4 = fragments(&packet(3, 3000), 1480);
    let Err(m) = r.push_v6(mbuf(&pool, &v4[0]), ETH, rdtsc()) else { panic!("IPv4") };
    drop(m);
    let Err(m) = r.push_v6(mbuf(&pool, &packet_v6(4, 100)), ETH, rdtsc()) else { panic!("whole") };
    drop(m);
    let f = fragments_v6(&packet_v6(5, 3000), 1448, 5);
    let Err(m) = r.push_v6(mbuf(&pool, &f[0][..ETH + 44]), ETH, rdtsc()) else { panic!("runt") };
    drop(m);
    assert_eq!(r.stats().not_fragment, 3);
    // Lone, overlapping and duplicated fragments: freed, never leaked.
    let t0 = rdtsc();
    for i in 0..300 {
        let f = fragments_v6(&packet_v6(i, 3000), 1448, 100 + i);
        assert!(r.push_v6(mbuf(&pool, &f[0]), ETH, t0).unwrap_or_else(|_| panic!()).is_none());
    }
    let pkt = packet_v6(9, 4000);
    let mut a = fragments_v6(&pkt, 1448, 9);
    a.insert(1, fragments_v6(&pkt, 1024, 9)[1].clone());
    a.insert(0, a[0].clone());
    for f in &a {
        let _ = r.push_v6(mbuf(&pool, f), ETH, t0).unwrap_or_else(|_| panic!());
    }
    r.expire(t0 + 3 * tsc_hz());
    assert!(r.stats().discarded >= 300, "{:?}", r.stats());
    drop(r);
    assert_eq!(pool.in_use(), 0, "nothing leaked");
}
