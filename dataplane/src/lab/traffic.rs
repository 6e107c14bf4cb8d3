//! Test traffic: real IPv4/IPv6 UDP/TCP packets with correct checksums, each
//! carrying (flow, seq) so a checker can tell exactly-once and per-flow
//! order, and regenerate the bytes it must see.

use std::net::{Ipv4Addr, Ipv6Addr};

use braid_tunnel::wire::checksum;

/// Magic at the start of every test payload.
pub const MAGIC: u32 = 0xb7a1_d000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Udp,
    Tcp,
}

/// One inner flow: a 5-tuple, with an id the payload carries.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub id: u32,
    pub family: Family,
    pub l4: L4,
    pub src4: Ipv4Addr,
    pub dst4: Ipv4Addr,
    pub src6: Ipv6Addr,
    pub dst6: Ipv6Addr,
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    /// Flow `id` from the LAN behind A (10.1.0.0/16, fd00:1::/64) to the LAN
    /// behind B (10.2.0.0/16, fd00:2::/64).
    pub fn a_to_b(id: u32, family: Family, l4: L4) -> Flow {
        Flow {
            id,
            family,
            l4,
            src4: Ipv4Addr::new(10, 1, (id >> 8) as u8, id as u8),
            dst4: Ipv4Addr::new(10, 2, 0, 1 + (id % 200) as u8),
            src6: Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, (id as u16).wrapping_add(1)),
            dst6: Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 1 + (id % 200) as u16),
            sport: 10000u16.wrapping_add(id as u16),
            dport: 5201,
        }
    }

    fn header_len(&self) -> usize {
        (match self.family {
            Family::V4 => 20,
            Family::V6 => 40,
        }) + match self.l4 {
            L4::Udp => 8,
            L4::Tcp => 20,
        }
    }

    /// Smallest Ethernet frame this flow can send (headers + 12-byte tag).
    pub fn min_frame(&self) -> usize {
        14 + self.header_len() + 12
    }
}

/// The inner IP packet of `flow`'s packet `seq` in an Ethernet frame of
/// `frame_len` bytes (at least `flow.min_frame()`).
pub fn ip_packet(flow: &Flow, seq: u32, frame_len: usize) -> Vec<u8> {
    let frame_len = frame_len.max(flow.min_frame());
    let ip_len = frame_len - 14;
    let hl = flow.header_len();
    let mut p = vec![0u8; ip_len];
    let l4_len = match flow.family {
        Family::V4 => ip_len - 20,
        Family::V6 => ip_len - 40,
    };
    let l4_at = ip_len - l4_len;
    // Payload: magic, flow, seq, then bytes derived from them.
    let pay = &mut p[hl..];
    pay[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    pay[4..8].copy_from_slice(&flow.id.to_be_bytes());
    pay[8..12].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in pay[12..].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(7).wrapping_add(seq).wrapping_add(flow.id) as u8;
    }
    let proto = match flow.l4 {
        L4::Udp => 17u8,
        L4::Tcp => 6,
    };
    // L4 header.
    {
        let l4 = &mut p[l4_at..];
        l4[0..2].copy_from_slice(&flow.sport.to_be_bytes());
        l4[2..4].copy_from_slice(&flow.dport.to_be_bytes());
        match flow.l4 {
            L4::Udp => l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes()),
            L4::Tcp => {
                l4[4..8].copy_from_slice(&seq.wrapping_mul(1460).to_be_bytes());
                l4[12] = 5 << 4;
                l4[13] = 0x18; // PSH, ACK
                l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
            }
        }
    }
    // IP header and pseudo-header checksum.
    let pseudo = match flow.family {
        Family::V4 => {
            let ip = &mut p[..20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&flow.src4.octets());
            ip[16..20].copy_from_slice(&flow.dst4.octets());
            let c = !checksum::sum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            checksum::pseudo_header_v4(flow.src4, flow.dst4, proto, l4_len as u16)
        }
        Family::V6 => {
            let ip = &mut p[..40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&flow.src6.octets());
            ip[24..40].copy_from_slice(&flow.dst6.octets());
            checksum::pseudo_header_v6(flow.src6, flow.dst6, proto, l4_len as u32)
        }
    };
    let c = !checksum::combine(&[pseudo, checksum::sum(&p[l4_at..])]);
    let c = if c == 0 && flow.l4 == L4::Udp { 0xffff } else { c };
    let at = l4_at + if flow.l4 == L4::Udp { 6 } else { 16 };
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

/// (flow id, seq) of a delivered inner packet, if it is a test packet.
pub fn tag(ip: &[u8]) -> Option<(u32, u32)> {
    let (hl, proto) = match ip.first()? >> 4 {
        4 => (((ip[0] & 0xf) as usize) * 4, *ip.get(9)?),
        6 => (40, *ip.get(6)?),
        _ => return None,
    };
    let l4 = match proto {
        17 => 8,
        6 => 20,
        _ => return None,
    };
    let pay = ip.get(hl + l4..)?;
    if pay.len() < 12 || pay[0..4] != MAGIC.to_be_bytes() {
        return None;
    }
    Some((u32::from_be_bytes(pay[4..8].try_into().ok()?), u32::from_be_bytes(pay[8..12].try_into().ok()?)))
}

/// A minimal pcap (libpcap 2.4, Ethernet) writer, so captures open in
/// Wireshark/tshark.
pub fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).expect("write pcap");
}

/// The IPv4 packets the frames carry, fragments put back together (by
/// source, destination, protocol and identification), with their
/// fragment fields cleared and the header checksum made again, as a
/// destination host would see them; in the order their first piece came.
/// Panics (for tests) on a bad header checksum, a gap, or a last piece
/// with MF set.
pub fn reassembled_v4(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    type Key = ([u8; 8], u8, [u8; 2]);
    let mut order: Vec<Key> = Vec::new();
    let mut parts: std::collections::HashMap<Key, Vec<(usize, bool, Vec<u8>)>> = std::collections::HashMap::new();
    for f in frames {
        let ip = &f[14..];
        assert!(checksum::verifies(&ip[..20]), "header checksum of a delivered piece");
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        let fo = u16::from_be_bytes([ip[6], ip[7]]);
        let key = (ip[12..20].try_into().unwrap(), ip[9], [ip[4], ip[5]]);
        if !parts.contains_key(&key) {
            order.push(key);
        }
        parts.entry(key).or_default().push((usize::from(fo & 0x1fff) * 8, fo & 0x2000 != 0, ip[20..total].to_vec()));
    }
    order
        .iter()
        .map(|k| {
            let mut p = parts.remove(k).unwrap();
            p.sort_by_key(|x| x.0);
            let mut payload = Vec::new();
            for (off, _, data) in &p {
                assert_eq!(*off, payload.len(), "pieces of one packet are contiguous");
                payload.extend_from_slice(data);
            }
            assert!(!p.last().unwrap().1, "the last piece has MF clear");
            let first = frames.iter().map(|f| &f[14..]).find(|ip| (ip[12..20] == k.0[..]) && ip[9] == k.1 && ip[4..6] == k.2).unwrap();
            let mut ip = first[..20].to_vec();
            ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            ip[6..8].fill(0);
            ip[10..12].fill(0);
            let c = !checksum::sum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            ip.extend_from_slice(&payload);
            ip
        })
        .collect()
}
