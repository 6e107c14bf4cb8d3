//! Outer headers of a tunnel: Ethernet, IPv4 or IPv6, UDP (RFC 3948),
//! prebuilt once per tunnel and stamped on each ESP packet with its lengths
//! (and, over IPv6, the UDP checksum RFC 8200 requires).

use std::net::SocketAddr;

use braid_tunnel::wire::checksum;
use braid_tunnel::wire::udp_encap::emit_keepalive;

/// Ethernet + IPv4 (no options) + UDP.
pub const OUTER_LEN: usize = 14 + 20 + 8;
/// Ethernet + IPv6 (no extension headers) + UDP.
pub const OUTER_LEN_V6: usize = 14 + 40 + 8;
/// The longer of the two.
pub const MAX_OUTER_LEN: usize = OUTER_LEN_V6;
/// Where the UDP header starts over IPv6.
pub const UDP_AT_V6: usize = 54;
/// Where the IPv4 header starts.
pub const IP_AT: usize = 14;
/// Where the UDP header starts.
pub const UDP_AT: usize = 34;

/// Payload bytes per fragment for an IPv4 MTU (header without options):
/// the most a fragment carries, a multiple of 8 (RFC 791).
pub fn fragment_chunk(mtu: usize) -> usize {
    mtu.saturating_sub(20) & !7
}

/// Cuts the Ethernet + IPv4 `frame` into IPv4 fragments (RFC 791) of at
/// most `chunk` payload bytes (a multiple of 8, at least 8): calls
/// `emit(header, part)` for each, in order, with the fragment's Ethernet
/// and IPv4 header (DF cleared, MF and offset set, checksum computed) and
/// its part of the payload. A frame that is itself a fragment is cut into
/// smaller ones (RFC 791 section 3.2: offsets from its own, the last piece
/// keeping its MF). Returns how many; 0 (nothing emitted) when the frame
/// is not IPv4, has IP options, is shorter than its header says, or its
/// payload fits in `chunk`.
pub fn fragment_ipv4(frame: &[u8], chunk: usize, mut emit: impl FnMut(&[u8], &[u8])) -> usize {
    let Some((ihl, total)) = cuttable_ipv4(frame, chunk) else { return 0 };
    let ip = &frame[IP_AT..];
    let payload = &ip[ihl..total];
    let mut header = [0u8; IP_AT + 20];
    let header = &mut header[..IP_AT + ihl];
    header.copy_from_slice(&frame[..IP_AT + ihl]);
    let n = payload.len().div_ceil(chunk);
    let flags = u16::from_be_bytes([frame[IP_AT + 6], frame[IP_AT + 7]]);
    let (base, last_mf) = (usize::from(flags & 0x1fff), flags & 0x2000);
    for (i, part) in payload.chunks(chunk).enumerate() {
        let h = &mut header[IP_AT..];
        h[2..4].copy_from_slice(&((ihl + part.len()) as u16).to_be_bytes());
        let mf = if i + 1 < n { 0x2000 } else { last_mf };
        h[6..8].copy_from_slice(&(mf | (base + i * chunk / 8) as u16).to_be_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        let c = !checksum::sum(h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        emit(header, part);
    }
    n
}

/// How many fragments [`fragment_ipv4`] cuts `frame` into, or `None`
/// when it cuts nothing.
pub fn fragment_ipv4_count(frame: &[u8], chunk: usize) -> Option<usize> {
    cuttable_ipv4(frame, chunk).map(|(ihl, total)| (total - ihl).div_ceil(chunk))
}

/// An IPv6 Fragment header's length (RFC 8200 section 4.5).
pub const FRAG_HEADER_V6: usize = 8;

/// Payload bytes per IPv6 fragment for an MTU (no extension headers but
/// the Fragment header): the most a fragment carries, a multiple of 8.
pub fn fragment_chunk_v6(mtu: usize) -> usize {
    mtu.saturating_sub(40 + FRAG_HEADER_V6) & !7
}

/// Cuts the Ethernet + IPv6 `frame` (no extension headers) into IPv6
/// fragments (RFC 8200 section 4.5) of at most `chunk` payload bytes (a
/// multiple of 8, at least 8): calls `emit(header, part)` for each, in
/// order, with the fragment's Ethernet and IPv6 header (payload length
/// set, next header 44) and Fragment header (the original next header,
/// offset, M flag, `ident`), and its part of the payload. Returns how
/// many; 0 (nothing emitted) when the frame is not IPv6, starts with an
/// extension header that stays unfragmented (hop-by-hop, routing,
/// destination options) or is already a fragment, is shorter than its
/// header says, or its payload fits in `chunk`.
pub fn fragment_ipv6(frame: &[u8], chunk: usize, ident: u32, mut emit: impl FnMut(&[u8], &[u8])) -> usize {
    let Some(plen) = cuttable_ipv6(frame, chunk) else { return 0 };
    const FH: usize = IP_AT + 40;
    let mut header = [0u8; FH + FRAG_HEADER_V6];
    header[..FH].copy_from_slice(&frame[..FH]);
    header[IP_AT + 6] = 44;
    header[FH] = frame[IP_AT + 6];
    header[FH + 4..FH + 8].copy_from_slice(&ident.to_be_bytes());
    let n = plen.div_ceil(chunk);
    for (i, part) in frame[FH..FH + plen].chunks(chunk).enumerate() {
        header[IP_AT + 4..IP_AT + 6].copy_from_slice(&((FRAG_HEADER_V6 + part.len()) as u16).to_be_bytes());
        // The offset in 8-byte units sits above 3 bits whose lowest is M:
        // the byte offset itself (a multiple of 8), or'ed with M.
        let m = u16::from(i + 1 < n);
        header[FH + 2..FH + 4].copy_from_slice(&((i * chunk) as u16 | m).to_be_bytes());
        emit(&header, part);
    }
    n
}

/// How many fragments [`fragment_ipv6`] cuts `frame` into, or `None`
/// when it cuts nothing.
pub fn fragment_ipv6_count(frame: &[u8], chunk: usize) -> Option<usize> {
    cuttable_ipv6(frame, chunk).map(|plen| plen.div_ceil(chunk))
}

/// The payload length of the IPv6 packet in `frame` when [`fragment_ipv6`]
/// cuts it into pieces of `chunk` bytes.
fn cuttable_ipv6(frame: &[u8], chunk: usize) -> Option<usize> {
    if chunk < 8 || !chunk.is_multiple_of(8) || frame.len() < IP_AT + 40 || frame[12..14] != [0x86, 0xdd] {
        return None;
    }
    let ip = &frame[IP_AT..];
    let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    // Hop-by-hop, routing and destination options headers belong to the
    // unfragmentable part (RFC 8200 section 4.5), which braid's outer
    // headers never have; a fragment is not cut again.
    if ip[0] >> 4 != 6 || matches!(ip[6], 0 | 43 | 44 | 60) || ip.len() < 40 + plen || plen <= chunk {
        return None;
    }
    Some(plen)
}

/// Header and total length of the IPv4 packet in `frame` when
/// [`fragment_ipv4`] cuts it into pieces of `chunk` bytes.
fn cuttable_ipv4(frame: &[u8], chunk: usize) -> Option<(usize, usize)> {
    if chunk < 8 || !chunk.is_multiple_of(8) || frame.len() < IP_AT + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[IP_AT..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let flags = u16::from_be_bytes([ip[6], ip[7]]);
    // Without options only: RFC 791 copies some options into every
    // fragment and others into the first only (braid's outer headers
    // carry none; an inner packet with options is not cut). A fragment
    // is cut again only where its pieces' offsets stay within 16 bits.
    let end = usize::from(flags & 0x1fff) * 8 + total.saturating_sub(ihl);
    if ip[0] >> 4 != 4 || ihl != 20 || total < ihl || ip.len() < total || end > usize::from(u16::MAX) || total - ihl <= chunk {
        return None;
    }
    Some((ihl, total))
}

/// Outer headers of one tunnel, filled except for lengths and checksums.
/// One cache line holds what an IPv4 packet reads (the fields, then the
/// headers).
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub struct OuterTemplate {
    /// IPv4: ones' complement sum of the IPv4 header's fixed fields (total
    /// length, identification and checksum zero): per packet only those
    /// two words are added (RFC 1071 section 2). IPv6: of the UDP
    /// checksum's fixed part (the pseudo-header's addresses and next
    /// header, the ports): per packet the lengths and the payload.
    sum: u16,
    v6: bool,
    bytes: [u8; MAX_OUTER_LEN],
    /// IPv6: the pseudo-header's addresses and next header alone, the
    /// seed a NIC computing the UDP checksum wants (`write_v6_offload`).
    pseudo: u16,
}

impl OuterTemplate {
    /// Headers from `local` to `remote` (the same IP version) out of a
    /// port with MAC `src_mac` towards next hop `dst_mac`. IPv4: DF set
    /// (braid never relies on outer fragmentation), TTL 64; IPv6: hop
    /// limit 64, no flow label.
    pub fn new(src_mac: [u8; 6], dst_mac: [u8; 6], local: SocketAddr, remote: SocketAddr) -> Self {
        let mut b = [0u8; MAX_OUTER_LEN];
        b[0..6].copy_from_slice(&dst_mac);
        b[6..12].copy_from_slice(&src_mac);
        let v6 = local.is_ipv6();
        let udp_at = if v6 { UDP_AT_V6 } else { UDP_AT };
        let ip = &mut b[IP_AT..udp_at];
        match local.ip() {
            std::net::IpAddr::V4(a) => {
                ip[0] = 0x45;
                ip[6] = 0x40; // DF
                ip[8] = 64;
                ip[9] = 17;
                ip[12..16].copy_from_slice(&a.octets());
            }
            std::net::IpAddr::V6(a) => {
                ip[0] = 0x60;
                ip[6] = 17;
                ip[7] = 64;
                ip[8..24].copy_from_slice(&a.octets());
            }
        }
        let udp = &mut b[udp_at..];
        udp[0..2].copy_from_slice(&local.port().to_be_bytes());
        let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
        b[12..14].copy_from_slice(&ethertype.to_be_bytes());
        let mut t = OuterTemplate { sum: 0, v6, bytes: b, pseudo: 0 };
        t.set_remote(remote);
        t
    }

    /// Length of the headers: [`OUTER_LEN`] or [`OUTER_LEN_V6`].
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        if self.v6 {
            OUTER_LEN_V6
        } else {
            OUTER_LEN
        }
    }

    /// IPv6 outer headers.
    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        self.v6
    }

    /// A whole NAT-keepalive frame's length.
    pub fn keepalive_len(&self) -> usize {
        self.header_len() + 1
    }

    fn udp_at(&self) -> usize {
        if self.v6 {
            UDP_AT_V6
        } else {
            UDP_AT
        }
    }

    /// Points the template at another next hop (a WAN next hop resolved by
    /// ARP/ND, or its MAC changed). The checksum sum does not cover it.
    pub fn set_dst_mac(&mut self, mac: [u8; 6]) {
        self.bytes[0..6].copy_from_slice(&mac);
    }

    /// The peer's address and port the headers go to.
    pub fn remote(&self) -> SocketAddr {
        let u = self.udp_at();
        let port = u16::from_be_bytes([self.bytes[u + 2], self.bytes[u + 3]]);
        if self.v6 {
            let ip: [u8; 16] = self.bytes[IP_AT + 24..IP_AT + 40].try_into().expect("16 bytes");
            SocketAddr::new(ip.into(), port)
        } else {
            let ip: [u8; 4] = self.bytes[IP_AT + 16..IP_AT + 20].try_into().expect("4 bytes");
            SocketAddr::new(ip.into(), port)
        }
    }

    /// Whether the headers go where received frame `d` (of this IP
    /// version, its UDP header at `udp_at`) came from: its source address
    /// and port are this template's destination. Bytes compared in place:
    /// asked for every authenticated packet.
    #[inline]
    pub fn is_source_of(&self, d: &[u8], udp_at: usize) -> bool {
        fn at<const N: usize>(b: &[u8], i: usize) -> Option<[u8; N]> {
            b.get(i..i + N).and_then(|s| s.try_into().ok())
        }
        let port = at::<2>(d, udp_at) == at::<2>(&self.bytes, self.udp_at() + 2);
        port && if self.v6 {
            at::<16>(d, IP_AT + 8) == at::<16>(&self.bytes, IP_AT + 24)
        } else {
            at::<4>(d, IP_AT + 12) == at::<4>(&self.bytes, IP_AT + 16)
        }
    }

    /// Points the template at another peer address and port (the peer's
    /// NAT mapping changed) of its IP version (another is ignored). The
    /// checksum sum is recomputed: it covers the destination address.
    pub fn set_remote(&mut self, remote: SocketAddr) {
        let u = self.udp_at();
        match remote.ip() {
            std::net::IpAddr::V4(a) if !self.v6 => {
                self.bytes[IP_AT + 16..IP_AT + 20].copy_from_slice(&a.octets());
                self.bytes[u + 2..u + 4].copy_from_slice(&remote.port().to_be_bytes());
                self.sum = checksum::sum(&self.bytes[IP_AT..UDP_AT]);
            }
            std::net::IpAddr::V6(a) if self.v6 => {
                self.bytes[IP_AT + 24..IP_AT + 40].copy_from_slice(&a.octets());
                self.bytes[u + 2..u + 4].copy_from_slice(&remote.port().to_be_bytes());
                // Addresses, next header (UDP), ports.
                self.pseudo = checksum::combine(&[checksum::sum(&self.bytes[IP_AT + 8..IP_AT + 40]), 17]);
                self.sum = checksum::combine(&[self.pseudo, checksum::sum(&self.bytes[u..u + 4])]);
            }
            _ => {}
        }
    }

    /// Writes the headers for an ESP packet of `esp_len` bytes into
    /// `out[..self.header_len()]`; the ESP packet follows them in `out`. IPv4:
    /// the IPv4 checksum is computed unless the NIC does it
    /// (`ip_csum_offload`: left zero); the UDP checksum is zero, as RFC
    /// 3948 section 2.1 says ESP-in-UDP senders should send it. IPv6:
    /// the UDP checksum is computed over the ESP packet (RFC 8200 section
    /// 8.1 forbids a zero one); `ident` and `ip_csum_offload` do not apply.
    #[inline]
    pub fn write(&self, out: &mut [u8], esp_len: usize, ident: u16, ip_csum_offload: bool) {
        if self.v6 {
            return self.write_v6(out, esp_len);
        }
        let out = &mut out[..OUTER_LEN];
        out.copy_from_slice(&self.bytes[..OUTER_LEN]);
        let udp_len = (8 + esp_len) as u16;
        let ip_len = 20 + udp_len;
        out[IP_AT + 2..IP_AT + 4].copy_from_slice(&ip_len.to_be_bytes());
        out[IP_AT + 4..IP_AT + 6].copy_from_slice(&ident.to_be_bytes());
        if !ip_csum_offload {
            let mut s = self.sum as u32 + ip_len as u32 + ident as u32;
            s = (s & 0xffff) + (s >> 16);
            s = (s & 0xffff) + (s >> 16);
            out[IP_AT + 10..IP_AT + 12].copy_from_slice(&(!(s as u16)).to_be_bytes());
        }
        out[UDP_AT + 4..UDP_AT + 6].copy_from_slice(&udp_len.to_be_bytes());
    }

    #[cold]
    fn write_v6(&self, out: &mut [u8], esp_len: usize) {
        let udp_len = (8 + esp_len) as u16;
        let (hdr, esp) = out[..OUTER_LEN_V6 + esp_len].split_at_mut(OUTER_LEN_V6);
        hdr.copy_from_slice(&self.bytes);
        hdr[IP_AT + 4..IP_AT + 6].copy_from_slice(&udp_len.to_be_bytes());
        hdr[UDP_AT_V6 + 4..UDP_AT_V6 + 6].copy_from_slice(&udp_len.to_be_bytes());
        // Pseudo-header length and UDP length field: the same number.
        let c = !checksum::combine(&[self.sum, udp_len, udp_len, checksum::sum(esp)]);
        // A computed zero is sent as all ones (RFC 768).
        let c = if c == 0 { 0xffff } else { c };
        hdr[UDP_AT_V6 + 6..UDP_AT_V6 + 8].copy_from_slice(&c.to_be_bytes());
    }

    /// [`write`](Self::write) over IPv6 for a port that computes the UDP
    /// checksum (`RTE_MBUF_F_TX_UDP_CKSUM`): the checksum field holds the
    /// pseudo-header sum (addresses, UDP length, next header; folded, not
    /// inverted), as `rte_ipv6_phdr_cksum` makes it, and the NIC adds the
    /// datagram. Nothing of the ESP packet is read. IPv4 templates: as
    /// [`write`](Self::write) (their UDP checksum is zero).
    #[inline]
    pub fn write_v6_offload(&self, out: &mut [u8], esp_len: usize) {
        if !self.v6 {
            return self.write(out, esp_len, 0, false);
        }
        let udp_len = (8 + esp_len) as u16;
        let hdr = &mut out[..OUTER_LEN_V6];
        hdr.copy_from_slice(&self.bytes);
        hdr[IP_AT + 4..IP_AT + 6].copy_from_slice(&udp_len.to_be_bytes());
        hdr[UDP_AT_V6 + 4..UDP_AT_V6 + 6].copy_from_slice(&udp_len.to_be_bytes());
        let seed = checksum::combine(&[self.pseudo, udp_len]);
        hdr[UDP_AT_V6 + 6..UDP_AT_V6 + 8].copy_from_slice(&seed.to_be_bytes());
    }

    /// Writes a whole NAT-keepalive frame (RFC 3948 section 2.3: the UDP
    /// payload is the one octet 0xff) into `out[..self.keepalive_len()]`.
    pub fn write_keepalive(&self, out: &mut [u8], ident: u16, ip_csum_offload: bool) {
        // The same headers as an ESP packet, one octet of payload less than
        // any ESP packet: written as if the "ESP" were one octet long, after
        // it (the IPv6 UDP checksum covers it).
        let _ = emit_keepalive(&mut out[self.header_len()..self.keepalive_len()]);
        self.write(out, 1, ident, ip_csum_offload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tunnel::wire::{ipv4, udp, ChecksumCaps};

    #[test]
    fn ipv6_fragments_carry_the_packet_and_nothing_else_is_cut() {
        let t = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], "[2001:db8:a::1]:4500".parse().unwrap(), "[2001:db8:b::1]:4501".parse().unwrap());
        let esp_len = 3000;
        let mut frame = vec![0u8; OUTER_LEN_V6 + esp_len];
        for (i, b) in frame[OUTER_LEN_V6..].iter_mut().enumerate() {
            *b = i as u8;
        }
        t.write(&mut frame, esp_len, 0, false);
        let chunk = fragment_chunk_v6(1500);
        assert_eq!(chunk, 1448);
        let mut frags: Vec<Vec<u8>> = Vec::new();
        let n = fragment_ipv6(&frame, chunk, 0xdead_beef, |h, p| frags.push([h, p].concat()));
        assert_eq!((n, frags.len()), (3, 3), "3008 bytes of UDP in 1448-byte pieces");
        let mut whole = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert_eq!(f[..IP_AT + 4], frame[..IP_AT + 4], "Ethernet header and IPv6 first word repeated");
            assert_eq!(f[IP_AT + 6], 44, "next header: Fragment");
            assert_eq!(f[IP_AT + 7..IP_AT + 40], frame[IP_AT + 7..IP_AT + 40], "hop limit and addresses");
            let plen = u16::from_be_bytes([f[IP_AT + 4], f[IP_AT + 5]]) as usize;
            assert_eq!(plen, f.len() - IP_AT - 40);
            assert!(f.len() - IP_AT <= 1500);
            let fh = &f[IP_AT + 40..IP_AT + 48];
            assert_eq!((fh[0], fh[1]), (17, 0), "UDP follows, reserved zero");
            let off = u16::from_be_bytes([fh[2], fh[3]]);
            assert_eq!(usize::from(off >> 3) * 8, i * chunk, "offset in 8-byte units");
            assert_eq!(off & 1 == 1, i < 2, "M on all but the last");
            assert_eq!(off & 6, 0, "reserved bits");
            assert_eq!(fh[4..8], 0xdead_beef_u32.to_be_bytes());
            if i < 2 {
                assert_eq!((plen - 8) % 8, 0, "a fragment but the last carries a multiple of 8");
            }
            whole.extend_from_slice(&f[IP_AT + 48..]);
        }
        assert_eq!(whole, frame[UDP_AT_V6..], "the payload, in order, once");
        assert_eq!(fragment_ipv6_count(&frame, chunk), Some(3));
        // Fits, not IPv6, already a fragment, an extension header first,
        // truncated, a bad chunk: nothing is cut.
        let none = |f: &[u8], c| fragment_ipv6(f, c, 1, |_, _| panic!("emitted"));
        assert_eq!(none(&frame, 3008), 0);
        assert_eq!(none(&frags[0], 8), 0);
        for nh in [0u8, 43, 60] {
            let mut x = frame.clone();
            x[IP_AT + 6] = nh;
            assert_eq!(none(&x, chunk), 0, "next header {nh}");
        }
        assert_eq!(none(&frame[..frame.len() - 1], chunk), 0);
        let mut v4 = frame.clone();
        v4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(none(&v4, chunk), 0);
        assert_eq!(none(&frame, 1449), 0, "a chunk not a multiple of 8");
        assert_eq!(fragment_ipv6_count(&frame, 3008), None);
    }

    #[test]
    fn fragments_carry_the_packet_and_nothing_else_is_cut() {
        let t = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], "192.0.2.1:4500".parse().unwrap(), "198.51.100.7:4501".parse().unwrap());
        let esp_len = 3000;
        let mut frame = vec![0u8; OUTER_LEN + esp_len];
        for (i, b) in frame[OUTER_LEN..].iter_mut().enumerate() {
            *b = i as u8;
        }
        t.write(&mut frame, esp_len, 0x1234, false);
        let chunk = fragment_chunk(1500);
        assert_eq!(chunk, 1480);
        let mut frags: Vec<Vec<u8>> = Vec::new();
        let n = fragment_ipv4(&frame, chunk, |h, p| frags.push([h, p].concat()));
        assert_eq!((n, frags.len()), (3, 3), "3008 bytes of UDP in 1480-byte pieces");
        let mut whole = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert_eq!(f[..IP_AT], frame[..IP_AT], "Ethernet header repeated");
            let ip = ipv4::Packet::new_checked(&f[IP_AT..]).unwrap();
            assert!(ip.verify_checksum());
            assert!(!ip.dont_frag());
            assert_eq!(ip.more_frags(), i < 2);
            assert_eq!(ip.frag_offset() as usize, i * chunk);
            assert_eq!(ip.ident(), 0x1234);
            assert_eq!(ip.total_len() as usize, f.len() - IP_AT);
            assert!(f.len() - IP_AT <= 1500);
            whole.extend_from_slice(&f[IP_AT + 20..]);
        }
        assert_eq!(whole, frame[UDP_AT..], "the payload, in order, once");
        // A fragment is cut again: the pieces' offsets follow its own, and
        // only a last fragment's last piece has MF clear.
        for (off, mf) in [(0u16, true), (185, true), (370, false)] {
            let mut f = frame.clone();
            f[IP_AT + 6..IP_AT + 8].copy_from_slice(&((u16::from(mf) << 13) | off).to_be_bytes());
            let mut pieces: Vec<Vec<u8>> = Vec::new();
            assert_eq!(fragment_ipv4(&f, chunk, |h, p| pieces.push([h, p].concat())), 3);
            for (i, p) in pieces.iter().enumerate() {
                let ip = ipv4::Packet::new_checked(&p[IP_AT..]).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!(ip.frag_offset() as usize, usize::from(off) * 8 + i * chunk, "offset {off}");
                assert_eq!(ip.more_frags(), i < 2 || mf, "offset {off} piece {i}");
            }
        }
        // Fits, not IPv4, truncated, offsets past 16 bits: nothing is cut.
        let none = |f: &[u8], c| fragment_ipv4(f, c, |_, _| panic!("emitted"));
        assert_eq!(none(&frame, 3008), 0);
        let mut far = frames_fragment(&frame);
        far[IP_AT + 6..IP_AT + 8].copy_from_slice(&(0x2000u16 | 8000).to_be_bytes());
        assert_eq!(none(&far, chunk), 0);
        assert_eq!(none(&frame[..frame.len() - 1], chunk), 0);
        let mut v6 = frame.clone();
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(none(&v6, chunk), 0);
        assert_eq!(none(&frame, 1481), 0, "a chunk not a multiple of 8");
    }

    /// `frame` with MF set, as if it were a first fragment.
    fn frames_fragment(frame: &[u8]) -> Vec<u8> {
        let mut f = frame.to_vec();
        f[IP_AT + 6] |= 0x20;
        f
    }

    #[test]
    fn headers_parse_back() {
        let t = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], "192.0.2.1:4500".parse().unwrap(), "198.51.100.7:4501".parse().unwrap());
        let mut buf = vec![0u8; OUTER_LEN + 100];
        t.write(&mut buf, 100, 7, false);
        let ip = ipv4::Packet::new_checked(&buf[IP_AT..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), 128);
        assert!(ip.dont_frag());
        let repr = ipv4::Repr::parse(&ip, &ChecksumCaps::default()).unwrap();
        assert_eq!(repr.dst_addr, "198.51.100.7".parse::<std::net::Ipv4Addr>().unwrap());
        let u = udp::Packet::new_checked(&buf[UDP_AT..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (4500, 4501, 108));
        assert_eq!(u.checksum(), 0);
    }

    /// A template pointed at a new remote writes exactly what a template
    /// built for it writes, checksum included, and keeps its next hop.
    #[test]
    fn set_remote_keeps_the_checksum_right() {
        let local = "192.0.2.1:4500".parse().unwrap();
        let mut t = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], local, "198.51.100.7:4501".parse().unwrap());
        t.set_dst_mac([2, 0, 0, 0, 0, 3]);
        assert_eq!(t.remote(), "198.51.100.7:4501".parse().unwrap());
        for remote in ["203.0.113.9:61000", "255.255.255.255:65535", "0.0.0.0:0", "198.51.100.7:4501"] {
            let remote: SocketAddr = remote.parse().unwrap();
            t.set_remote(remote);
            assert_eq!(t.remote(), remote);
            let from = |r: SocketAddr| {
                let mut f = vec![0u8; OUTER_LEN];
                OuterTemplate::new([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 1], r, local).write(&mut f, 0, 0, false);
                f
            };
            assert!(t.is_source_of(&from(remote), UDP_AT));
            assert!(!t.is_source_of(&from(SocketAddr::new(remote.ip(), remote.port().wrapping_add(1))), UDP_AT));
            let mut fresh = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 3], local, remote);
            fresh.set_dst_mac([2, 0, 0, 0, 0, 3]);
            let (mut a, mut b) = (vec![0u8; OUTER_LEN], vec![0u8; OUTER_LEN]);
            for (esp_len, ident) in [(0, 0), (100, 7), (1400, 0xffff), (65_507, 0x8000)] {
                t.write(&mut a, esp_len, ident, false);
                fresh.write(&mut b, esp_len, ident, false);
                assert_eq!(a, b, "{remote}");
                assert_eq!(checksum::sum(&a[IP_AT..UDP_AT]), 0xffff, "{remote} {esp_len} {ident}");
            }
            assert_eq!(a[0..6], [2, 0, 0, 0, 0, 3], "next hop kept");
        }
    }

    #[test]
    fn keepalive_frame() {
        let t = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], "192.0.2.1:4500".parse().unwrap(), "198.51.100.7:4501".parse().unwrap());
        let mut buf = vec![0u8; t.keepalive_len()];
        t.write_keepalive(&mut buf, 9, false);
        let ip = ipv4::Packet::new_checked(&buf[IP_AT..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), 29);
        let u = udp::Packet::new_checked(&buf[UDP_AT..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (4500, 4501, 9));
        assert_eq!(
            braid_tunnel::wire::udp_encap::classify(&buf[OUTER_LEN..]),
            Ok(braid_tunnel::wire::udp_encap::EncapKind::Keepalive)
        );
    }

    /// The checksum from the template's partial sum is the one computed
    /// over the whole header, for every length and identification.
    #[test]
    fn precomputed_checksum_matches_full_computation() {
        for (local, remote) in [("192.0.2.1:4500", "198.51.100.7:4501"), ("255.255.255.255:65535", "255.255.255.254:1"), ("0.0.0.0:0", "0.0.0.0:0")] {
            let t = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], local.parse().unwrap(), remote.parse().unwrap());
            let mut buf = vec![0u8; OUTER_LEN];
            for esp_len in (0..65_000).step_by(997).chain([0, 1, 65_507]) {
                for ident in [0u16, 1, 0x7fff, 0xfffe, 0xffff] {
                    t.write(&mut buf, esp_len, ident, false);
                    let mut h = buf[IP_AT..UDP_AT].to_vec();
                    let got = u16::from_be_bytes([h[10], h[11]]);
                    h[10] = 0;
                    h[11] = 0;
                    assert_eq!(got, !checksum::sum(&h), "{local} -> {remote}, esp_len {esp_len}, ident {ident}");
                }
            }
        }
    }

    /// The UDP checksum of an IPv6 frame, computed independently: zero
    /// when it verifies.
    fn udp6_verifies(f: &[u8]) -> bool {
        let ip = &f[IP_AT..];
        let src: [u8; 16] = ip[8..24].try_into().unwrap();
        let dst: [u8; 16] = ip[24..40].try_into().unwrap();
        let udp = &f[UDP_AT_V6..];
        let len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
        let pseudo = checksum::pseudo_header_v6(src.into(), dst.into(), 17, len as u32);
        udp[6..8] != [0, 0] && checksum::combine(&[pseudo, checksum::sum(&udp[..len])]) == 0xffff
    }

    /// A port computing the UDP checksum (`RTE_MBUF_F_TX_UDP_CKSUM`) finds
    /// in the checksum field the seed DPDK's own `rte_ipv6_phdr_cksum`
    /// makes of the header, and completing it over the datagram as a NIC
    /// does gives the checksum braid computes in software.
    #[test]
    fn ipv6_udp_checksum_offload_seed() {
        let (local, remote): (SocketAddr, SocketAddr) = ("[2001:db8::1]:4500".parse().unwrap(), "[2001:db8:1::7]:4501".parse().unwrap());
        let mut t = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], local, remote);
        for moved in [false, true] {
            if moved {
                t.set_remote("[2001:db8:ffff::9]:61000".parse().unwrap());
            }
            for esp_len in [1usize, 2, 99, 1400, 9000] {
                let mut f = vec![0u8; OUTER_LEN_V6 + esp_len];
                for (i, b) in f[OUTER_LEN_V6..].iter_mut().enumerate() {
                    *b = (i * 13 + esp_len) as u8;
                }
                let mut soft = f.clone();
                t.write(&mut soft, esp_len, 0, false);
                t.write_v6_offload(&mut f, esp_len);
                assert_eq!(f[..UDP_AT_V6 + 6], soft[..UDP_AT_V6 + 6], "the same headers");
                let hdr: &[u8; 40] = f[IP_AT..IP_AT + 40].try_into().unwrap();
                assert_eq!(f[UDP_AT_V6 + 6..UDP_AT_V6 + 8], braid_dpdk::ipv6_phdr_cksum(hdr), "DPDK's seed, esp_len {esp_len}");
                // The NIC: the datagram summed with the seed in place.
                let c = !checksum::sum(&f[UDP_AT_V6..]);
                let c = if c == 0 { 0xffff } else { c };
                assert_eq!(c.to_be_bytes(), soft[UDP_AT_V6 + 6..UDP_AT_V6 + 8], "esp_len {esp_len}");
            }
        }
        // IPv4: no UDP checksum to leave to the port.
        let v4 = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], "192.0.2.1:4500".parse().unwrap(), remote_v4());
        let (mut a, mut b) = (vec![0u8; OUTER_LEN + 50], vec![0u8; OUTER_LEN + 50]);
        v4.write_v6_offload(&mut a, 50);
        v4.write(&mut b, 50, 0, false);
        assert_eq!(a, b);
    }

    fn remote_v4() -> SocketAddr {
        "198.51.100.7:4501".parse().unwrap()
    }

    /// IPv6 headers: version, lengths, next header, hop limit, addresses,
    /// ports, and a UDP checksum over the ESP packet that verifies; after
    /// a new remote too, as a template built for it; a remote of the
    /// other IP version is ignored.
    #[test]
    fn ipv6_headers_and_udp_checksum() {
        let (local, remote): (SocketAddr, SocketAddr) = ("[2001:db8::1]:4500".parse().unwrap(), "[2001:db8:1::7]:4501".parse().unwrap());
        let mut t = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], local, remote);
        assert!(t.is_v6() && t.header_len() == OUTER_LEN_V6);
        assert_eq!(t.remote(), remote);
        for esp_len in [1usize, 2, 99, 100, 1400, 9000] {
            let mut f = vec![0u8; OUTER_LEN_V6 + esp_len];
            for (i, b) in f[OUTER_LEN_V6..].iter_mut().enumerate() {
                *b = (i * 7 + esp_len) as u8;
            }
            t.write(&mut f, esp_len, 0, false);
            assert_eq!(f[12..14], [0x86, 0xdd]);
            assert_eq!(f[IP_AT] >> 4, 6);
            assert_eq!(u16::from_be_bytes([f[IP_AT + 4], f[IP_AT + 5]]) as usize, 8 + esp_len);
            assert_eq!((f[IP_AT + 6], f[IP_AT + 7]), (17, 64));
            assert_eq!(f[IP_AT + 8..IP_AT + 24], "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
            assert_eq!(u16::from_be_bytes([f[UDP_AT_V6], f[UDP_AT_V6 + 1]]), 4500);
            assert_eq!(u16::from_be_bytes([f[UDP_AT_V6 + 2], f[UDP_AT_V6 + 3]]), 4501);
            assert!(udp6_verifies(&f), "esp_len {esp_len}");
            f[OUTER_LEN_V6] ^= 1;
            assert!(!udp6_verifies(&f), "a flipped bit");
        }
        let moved: SocketAddr = "[2001:db8:ffff::9]:61000".parse().unwrap();
        // A frame from `remote` (a template the other way round).
        let back = |from: SocketAddr| {
            let mut f = vec![0u8; OUTER_LEN_V6 + 8];
            OuterTemplate::new([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], from, local).write(&mut f, 8, 0, false);
            f
        };
        assert!(t.is_source_of(&back(remote), UDP_AT_V6) && !t.is_source_of(&back(moved), UDP_AT_V6));
        t.set_remote(moved);
        assert!(t.is_source_of(&back(moved), UDP_AT_V6) && !t.is_source_of(&back(remote), UDP_AT_V6));
        t.set_remote("198.51.100.7:4501".parse().unwrap());
        assert_eq!(t.remote(), moved, "another IP version is ignored");
        let fresh = OuterTemplate::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], local, moved);
        let (mut a, mut b) = (vec![5u8; OUTER_LEN_V6 + 300], vec![5u8; OUTER_LEN_V6 + 300]);
        t.write(&mut a, 300, 0, false);
        fresh.write(&mut b, 300, 0, false);
        assert_eq!(a, b);
        assert!(udp6_verifies(&a));
        // A keepalive: one octet, checksummed.
        let mut k = vec![0u8; t.keepalive_len()];
        t.write_keepalive(&mut k, 0, false);
        assert!(udp6_verifies(&k));
        assert_eq!(
            braid_tunnel::wire::udp_encap::classify(&k[OUTER_LEN_V6..]),
            Ok(braid_tunnel::wire::udp_encap::EncapKind::Keepalive)
        );
    }
}
