//! Cutting an inner packet to the LAN's MTU in software (generic
//! segmentation offload): a TCP packet (IPv4 or IPv6) into TCP segments
//! whose IP packets fit, each with its own lengths, sequence number, flags
//! and checksums, as a NIC's TSO would cut it.
//!
//! Inner packets bigger than the LAN come from a peer whose LAN has a
//! larger MTU (a jumbo LAN on the other side); TCP hosts that agreed on a
//! smaller MSS never send them, but a TCP stack behind a jumbo LAN that
//! talks to a jumbo host elsewhere does. The worker cuts them (or has the
//! LAN port's TSO cut them: [`tso_request`]) rather than hand the port
//! frames it would send as giants (see `Worker::fit_lan_mtu`).

use std::net::{Ipv4Addr, Ipv6Addr};

use braid_tunnel::wire::checksum;

/// Ethernet header.
const ETH: usize = 14;
/// Most bytes of Ethernet, IP (IPv4 with options, or IPv6) and TCP
/// header (with options) a segment repeats.
pub const MAX_HEADERS: usize = ETH + 60 + 60;

const TCP: u8 = 6;
const SYN: u8 = 0x02;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const CWR: u8 = 0x80;

/// Where the parts of a TCP packet are, and how it is cut.
#[derive(Debug, Clone, Copy)]
struct Layout {
    v6: bool,
    /// IP header length (IPv4 with options; 40 for IPv6).
    l3: usize,
    /// TCP header length (with options).
    l4: usize,
    /// Payload bytes.
    payload: usize,
    /// Payload bytes per segment.
    mss: usize,
}

impl Layout {
    fn segments(&self) -> usize {
        self.payload.div_ceil(self.mss)
    }
}

/// Why [`tcp_segments`] would not cut a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCut {
    /// Not a TCP packet bigger than the MTU that can be cut to it.
    NotTcp,
    /// A TCP packet whose checksum does not verify: cutting would give its
    /// pieces good ones and hide the damage from the receiver.
    BadChecksum,
}

/// The layout of the Ethernet frame `frame` when it holds a TCP packet
/// (IPv4 not fragmented, or IPv6 with TCP as its first next header) whose
/// IP packet exceeds `mtu`, can be cut into segments that fit it, and
/// whose checksum verifies.
fn layout(frame: &[u8], mtu: usize) -> Result<Layout, NoCut> {
    let l = shape(frame, mtu).ok_or(NoCut::NotTcp)?;
    let ip = &frame[ETH..];
    let tcp_len = l.l4 + l.payload;
    let pseudo = if l.v6 {
        let src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
        let dst: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
        checksum::pseudo_header_v6(Ipv6Addr::from(src), Ipv6Addr::from(dst), TCP, tcp_len as u32)
    } else {
        let src: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
        let dst: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
        checksum::pseudo_header_v4(Ipv4Addr::from(src), Ipv4Addr::from(dst), TCP, tcp_len as u16)
    };
    if checksum::combine(&[pseudo, checksum::sum(&ip[l.l3..l.l3 + tcp_len])]) != 0xffff {
        return Err(NoCut::BadChecksum);
    }
    Ok(l)
}

/// [`layout`] without the checksum.
fn shape(frame: &[u8], mtu: usize) -> Option<Layout> {
    let ip = frame.get(ETH..)?;
    let (v6, l3, ip_len) = match (frame.get(12..14)?, ip.first()? >> 4) {
        ([0x08, 0x00], 4) => {
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]) as usize;
            let flags = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            if ihl < 20 || *ip.get(9)? != TCP || flags & 0x3fff != 0 {
                return None;
            }
            (false, ihl, total)
        }
        ([0x86, 0xdd], 6) => {
            if *ip.get(6)? != TCP {
                return None;
            }
            (true, 40, 40 + u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]) as usize)
        }
        _ => return None,
    };
    if ip_len > ip.len() || ip_len <= mtu {
        return None;
    }
    let l4 = (*ip.get(l3 + 12)? >> 4) as usize * 4;
    if l4 < 20 || l3 + l4 > ip_len {
        return None;
    }
    let mss = mtu.checked_sub(l3 + l4).filter(|m| *m >= 8)?;
    Some(Layout { v6, l3, l4, payload: ip_len - l3 - l4, mss })
}

/// How many TCP segments [`segment_tcp`] cuts `frame` into for `mtu`, or
/// why it does not cut it.
pub fn tcp_segments(frame: &[u8], mtu: usize) -> Result<usize, NoCut> {
    layout(frame, mtu).map(|l| l.segments())
}

/// A TCP packet for a port that cuts it itself (TSO): where its headers
/// end and how much payload each segment carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsoRequest {
    pub v6: bool,
    /// IP header length.
    pub l3: usize,
    /// TCP header length.
    pub l4: usize,
    /// Payload bytes per segment.
    pub mss: usize,
    /// Segments the port will make.
    pub segments: usize,
    /// The IP packet's length (the frame may hold padding after it).
    pub ip_len: usize,
}

/// [`tcp_segments`] for a port that cuts `frame` itself into segments
/// whose IP packets are at most `mtu` bytes: the same checks (the
/// checksum verified, so a damaged packet is never given fresh ones).
/// A segment with SYN or CWR set is refused (`Ok(None)`: cut it here): a
/// port's TSO copies the flags other than FIN and PSH to every segment
/// (DPDK's GSO, which net_tap's TSO is, does), which would make each a
/// SYN one sequence number early (a SYN with data: TCP Fast Open) or
/// repeat CWR (RFC 3168 section 6.1.2: on the first segment only).
pub fn tso_request(frame: &[u8], mtu: usize) -> Result<Option<TsoRequest>, NoCut> {
    let l = layout(frame, mtu)?;
    if frame[ETH + l.l3 + 13] & (SYN | CWR) != 0 {
        return Ok(None);
    }
    Ok(Some(TsoRequest { v6: l.v6, l3: l.l3, l4: l.l4, mss: l.mss, segments: l.segments(), ip_len: l.l3 + l.l4 + l.payload }))
}

/// Readies the headers of `frame` (checked by [`tso_request`], `r`) for a
/// port's TSO, as DPDK asks (`RTE_MBUF_F_TX_TCP_SEG`): the TCP checksum
/// holds the pseudo-header's sum without the length, an IPv4 header
/// checksum is zero (the port fills both in for each segment).
pub fn prepare_tso(frame: &mut [u8], r: &TsoRequest) {
    let ip = &mut frame[ETH..];
    let pseudo = if r.v6 {
        let src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
        let dst: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
        checksum::pseudo_header_v6(Ipv6Addr::from(src), Ipv6Addr::from(dst), TCP, 0)
    } else {
        ip[10..12].copy_from_slice(&[0, 0]);
        let src: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
        let dst: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
        checksum::pseudo_header_v4(Ipv4Addr::from(src), Ipv4Addr::from(dst), TCP, 0)
    };
    ip[r.l3 + 16..r.l3 + 18].copy_from_slice(&pseudo.to_be_bytes());
}

/// Cuts the Ethernet frame `frame`, a TCP packet whose IP packet exceeds
/// `mtu`, into segments whose IP packets fit: calls `emit(headers, part)`
/// for each, in order, with its Ethernet, IP and TCP headers (options
/// repeated) and its part of the payload. Each segment's IP length (and
/// IPv4 identification, the original's plus its index, and header
/// checksum), TCP sequence number and checksum are its own; FIN and PSH
/// stay on the last segment only, CWR on the first (RFC 3168 section 6.1.2,
/// as TSO does). Returns how many; 0 (nothing emitted) when
/// [`tcp_segments`] is an error.
pub fn segment_tcp(frame: &[u8], mtu: usize, mut emit: impl FnMut(&[u8], &[u8])) -> usize {
    let Ok(l) = layout(frame, mtu) else { return 0 };
    let hdrs = ETH + l.l3 + l.l4;
    let mut buf = [0u8; MAX_HEADERS];
    let h = &mut buf[..hdrs];
    h.copy_from_slice(&frame[..hdrs]);
    let payload = &frame[hdrs..hdrs + l.payload];
    let seq = u32::from_be_bytes([h[ETH + l.l3 + 4], h[ETH + l.l3 + 5], h[ETH + l.l3 + 6], h[ETH + l.l3 + 7]]);
    let flags = h[ETH + l.l3 + 13];
    let ident = u16::from_be_bytes([h[ETH + 4], h[ETH + 5]]);
    let n = l.segments();
    for (i, part) in payload.chunks(l.mss).enumerate() {
        let (ip, tcp) = h[ETH..].split_at_mut(l.l3);
        let tcp_len = l.l4 + part.len();
        let pseudo = if l.v6 {
            ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            let src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
            let dst: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
            checksum::pseudo_header_v6(Ipv6Addr::from(src), Ipv6Addr::from(dst), TCP, tcp_len as u32)
        } else {
            ip[2..4].copy_from_slice(&((l.l3 + tcp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&ident.wrapping_add(i as u16).to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = !checksum::sum(&ip[..l.l3]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let src: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
            let dst: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
            checksum::pseudo_header_v4(Ipv4Addr::from(src), Ipv4Addr::from(dst), TCP, tcp_len as u16)
        };
        // A SYN carrying data (TCP Fast Open) takes one sequence number
        // before its data: the first segment is the SYN, the others follow
        // it (found by review: each was a SYN one byte early).
        let syn = u32::from(i > 0 && flags & SYN != 0);
        tcp[4..8].copy_from_slice(&seq.wrapping_add((i * l.mss) as u32).wrapping_add(syn).to_be_bytes());
        let mut f = flags;
        if i > 0 {
            f &= !SYN;
        }
        if i + 1 < n {
            f &= !(FIN | PSH);
        }
        if i > 0 {
            f &= !CWR;
        }
        tcp[13] = f;
        tcp[16..18].copy_from_slice(&[0, 0]);
        let c = !checksum::combine(&[pseudo, checksum::sum(tcp), checksum::sum(part)]);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        emit(h, part);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::traffic::{ip_packet, Family, Flow, L4};
    use braid_tunnel::wire::{ipv4, ipv6, tcp, AddrPair};

    fn frame(ip: &[u8]) -> Vec<u8> {
        let et: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    /// Every segment fits, its IP and TCP checksums verify, sequence
    /// numbers follow the payload, flags are where they belong, and the
    /// payloads put back together are the original's; also of a SYN with
    /// data (TCP Fast Open), whose SYN takes one sequence number.
    #[test]
    fn tcp_cut_to_the_mtu_v4_and_v6() {
        for (family, syn) in [(Family::V4, false), (Family::V6, false), (Family::V4, true), (Family::V6, true)] {
            let f = Flow::a_to_b(3, family, L4::Tcp);
            let mut ip = ip_packet(&f, 7, 9000 + 14);
            // FIN, PSH and CWR on the original (and its checksum again).
            let tcp_at = if family == Family::V4 { 20 } else { 40 };
            let old = u16::from_be_bytes([ip[tcp_at + 12], ip[tcp_at + 13]]);
            ip[tcp_at + 13] |= FIN | PSH | CWR | if syn { SYN } else { 0 };
            let new = u16::from_be_bytes([ip[tcp_at + 12], ip[tcp_at + 13]]);
            let c = u16::from_be_bytes([ip[tcp_at + 16], ip[tcp_at + 17]]);
            ip[tcp_at + 16..tcp_at + 18].copy_from_slice(&checksum::update_u16(c, old, new).to_be_bytes());
            let orig = frame(&ip);
            let orig_seq = u32::from_be_bytes(ip[tcp_at + 4..tcp_at + 8].try_into().unwrap());
            let l4 = (ip[tcp_at + 12] >> 4) as usize * 4;
            let payload = &ip[tcp_at + l4..];
            let n = tcp_segments(&orig, 1500).unwrap();
            let mut segs: Vec<Vec<u8>> = Vec::new();
            assert_eq!(segment_tcp(&orig, 1500, |h, p| segs.push([h, p].concat())), n);
            assert_eq!(n, payload.len().div_ceil(1500 - tcp_at - l4));
            let mut joined = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                assert!(s.len() - ETH <= 1500, "segment {i} is {} bytes", s.len() - ETH);
                assert_eq!(s[..ETH], orig[..ETH]);
                let (addrs, t) = if family == Family::V4 {
                    let p = ipv4::Packet::new_checked(&s[ETH..]).unwrap();
                    assert!(p.verify_checksum());
                    assert_eq!(p.total_len() as usize, s.len() - ETH);
                    assert_eq!(p.ident(), 7u16.wrapping_add(i as u16), "identification of segment {i}");
                    (AddrPair::V4 { src: p.src_addr(), dst: p.dst_addr() }, &s[ETH + 20..])
                } else {
                    let p = ipv6::Packet::new_checked(&s[ETH..]).unwrap();
                    assert_eq!(p.payload_len() as usize, s.len() - ETH - 40);
                    (AddrPair::V6 { src: p.src_addr(), dst: p.dst_addr() }, &s[ETH + 40..])
                };
                let seg = tcp::Packet::new_checked(t).unwrap();
                assert!(seg.verify_checksum(&addrs), "segment {i}: TCP checksum");
                let after_syn = u32::from(syn && i > 0);
                assert_eq!(seg.seq_number(), orig_seq.wrapping_add(joined.len() as u32 + after_syn), "segment {i}");
                let fl = t[13];
                assert_eq!(fl & (FIN | PSH) != 0, i + 1 == n, "FIN/PSH on the last only");
                assert_eq!(fl & CWR != 0, i == 0, "CWR on the first only");
                assert_eq!(fl & SYN != 0, syn && i == 0, "SYN on the first only");
                assert_eq!(t[20..l4], ip[tcp_at + 20..tcp_at + l4], "options repeated");
                joined.extend_from_slice(&t[l4..]);
            }
            assert_eq!(joined, payload);
        }
    }

    #[test]
    fn only_tcp_that_does_not_fit_is_cut() {
        let tcp4 = frame(&ip_packet(&Flow::a_to_b(1, Family::V4, L4::Tcp), 0, 4000));
        let udp4 = frame(&ip_packet(&Flow::a_to_b(1, Family::V4, L4::Udp), 0, 4000));
        let none = |f: &[u8], mtu| segment_tcp(f, mtu, |_, _| panic!("emitted"));
        assert_eq!(none(&tcp4, 4000), 0, "fits");
        assert_eq!(none(&udp4, 1500), 0, "not TCP");
        assert_eq!(tcp_segments(&udp4, 1500), Err(NoCut::NotTcp));
        assert_eq!(none(&tcp4[..tcp4.len() - 1], 1500), 0, "shorter than its IP header says");
        assert_eq!(none(&tcp4, 47), 0, "no room for 8 bytes of payload");
        assert_eq!(tcp_segments(&tcp4, 48), Ok(3946_usize.div_ceil(8)));
        let mut frag = tcp4.clone();
        frag[ETH + 6] |= 0x20;
        assert_eq!(none(&frag, 1500), 0, "an IPv4 fragment");
        assert_eq!(tcp_segments(&tcp4, 1500), Ok(3));
        // A damaged payload: not cut (the pieces would carry good checksums).
        let mut bad = tcp4.clone();
        bad[ETH + 100] ^= 1;
        assert_eq!(tcp_segments(&bad, 1500), Err(NoCut::BadChecksum));
        assert_eq!(none(&bad, 1500), 0);
    }

    /// What a port's TSO is given: the layout `segment_tcp` would cut by,
    /// the same refusals, and headers as DPDK asks (TCP checksum = the
    /// pseudo-header's sum without the length, IPv4 header checksum 0).
    #[test]
    fn tso_request_and_headers_for_the_port() {
        for (family, l3) in [(Family::V4, 20), (Family::V6, 40)] {
            let f = Flow::a_to_b(2, family, L4::Tcp);
            let ip = ip_packet(&f, 5, 9000 + 14);
            let mut fr = frame(&ip);
            fr.extend_from_slice(&[0; 6]); // padding after the IP packet
            let r = tso_request(&fr, 1500).unwrap().unwrap();
            let payload = ip.len() - l3 - 20;
            assert_eq!(r, TsoRequest { v6: l3 == 40, l3, l4: 20, mss: 1500 - l3 - 20, segments: payload.div_ceil(1500 - l3 - 20), ip_len: ip.len() });
            assert_eq!(r.segments, tcp_segments(&fr, 1500).unwrap());
            prepare_tso(&mut fr, &r);
            let addrs = &ip[if l3 == 20 { 12..20 } else { 8..40 }];
            let pseudo = checksum::combine(&[checksum::sum(addrs), TCP as u16]);
            assert_eq!(u16::from_be_bytes([fr[ETH + l3 + 16], fr[ETH + l3 + 17]]), pseudo);
            if l3 == 20 {
                assert_eq!(fr[ETH + 10..ETH + 12], [0, 0], "IPv4 header checksum left to the port");
            }
            assert_eq!(fr[ETH + l3 + 18..fr.len() - 6], ip[l3 + 18..], "nothing else changed");
        }
        let tcp4 = frame(&ip_packet(&Flow::a_to_b(1, Family::V4, L4::Tcp), 0, 4000));
        assert_eq!(tso_request(&tcp4, 4000), Err(NoCut::NotTcp), "fits");
        let mut bad = tcp4.clone();
        bad[ETH + 100] ^= 1;
        assert_eq!(tso_request(&bad, 1500), Err(NoCut::BadChecksum));
        // SYN (with data: TCP Fast Open) or CWR: left to `segment_tcp`,
        // which keeps them on the first segment only.
        for flag in [SYN, CWR] {
            let f = Flow::a_to_b(3, Family::V4, L4::Tcp);
            let mut ip = ip_packet(&f, 5, 4000);
            let old = u16::from_be_bytes([ip[32], ip[33]]);
            ip[33] |= flag;
            let c = u16::from_be_bytes([ip[36], ip[37]]);
            let new = u16::from_be_bytes([ip[32], ip[33]]);
            ip[36..38].copy_from_slice(&checksum::update_u16(c, old, new).to_be_bytes());
            assert_eq!(tso_request(&frame(&ip), 1500), Ok(None), "flag {flag:#x}");
            assert!(tcp_segments(&frame(&ip), 1500).is_ok());
        }
    }
}
