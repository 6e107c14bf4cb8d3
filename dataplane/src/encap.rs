//! Outer headers of a tunnel: Ethernet, IPv4, UDP (RFC 3948), prebuilt once
//! per tunnel and stamped on each ESP packet with its lengths.

use std::net::SocketAddrV4;

use braid_tunnel::wire::checksum;
use braid_tunnel::wire::udp_encap::emit_keepalive;

/// Ethernet + IPv4 (no options) + UDP.
pub const OUTER_LEN: usize = 14 + 20 + 8;
/// Where the IPv4 header starts.
pub const IP_AT: usize = 14;
/// Where the UDP header starts.
pub const UDP_AT: usize = 34;
/// A whole NAT-keepalive frame: the outer headers and one octet.
pub const KEEPALIVE_LEN: usize = OUTER_LEN + 1;

/// Payload bytes per fragment for an IPv4 MTU (header without options):
/// the most a fragment carries, a multiple of 8 (RFC 791).
pub fn fragment_chunk(mtu: usize) -> usize {
    mtu.saturating_sub(20) & !7
}

/// Cuts the Ethernet + IPv4 `frame` into IPv4 fragments (RFC 791) of at
/// most `chunk` payload bytes (a multiple of 8, at least 8): calls
/// `emit(header, part)` for each, in order, with the fragment's Ethernet
/// and IPv4 header (DF cleared, MF and offset set, checksum computed) and
/// its part of the payload. Returns how many; 0 (nothing emitted) when
/// the frame is not IPv4, has IP options, is already a fragment, is
/// shorter than its header says, or its payload fits in `chunk`.
pub fn fragment_ipv4(frame: &[u8], chunk: usize, mut emit: impl FnMut(&[u8], &[u8])) -> usize {
    let Some((ihl, total)) = cuttable_ipv4(frame, chunk) else { return 0 };
    let ip = &frame[IP_AT..];
    let payload = &ip[ihl..total];
    let mut header = [0u8; IP_AT + 20];
    let header = &mut header[..IP_AT + ihl];
    header.copy_from_slice(&frame[..IP_AT + ihl]);
    let n = payload.len().div_ceil(chunk);
    for (i, part) in payload.chunks(chunk).enumerate() {
        let h = &mut header[IP_AT..];
        h[2..4].copy_from_slice(&((ihl + part.len()) as u16).to_be_bytes());
        let mf = if i + 1 < n { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&(mf | (i * chunk / 8) as u16).to_be_bytes());
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
    // carry none; an inner packet with options is not cut).
    if ip[0] >> 4 != 4 || ihl != 20 || total < ihl || ip.len() < total || flags & 0x3fff != 0 || total - ihl <= chunk {
        return None;
    }
    Some((ihl, total))
}

/// Outer headers of one tunnel, filled except for lengths and checksum.
#[derive(Debug, Clone)]
pub struct OuterTemplate {
    bytes: [u8; OUTER_LEN],
    /// Ones' complement sum of the IPv4 header's fixed fields (total
    /// length, identification and checksum zero): per packet only those
    /// two words are added (RFC 1071 section 2).
    ip_sum: u16,
}

impl OuterTemplate {
    /// Headers from `local` to `remote` out of a port with MAC `src_mac`
    /// towards next hop `dst_mac`. DF is set: braid never relies on outer
    /// fragmentation; TTL 64.
    pub fn new(src_mac: [u8; 6], dst_mac: [u8; 6], local: SocketAddrV4, remote: SocketAddrV4) -> Self {
        let mut b = [0u8; OUTER_LEN];
        b[0..6].copy_from_slice(&dst_mac);
        b[6..12].copy_from_slice(&src_mac);
        b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut b[IP_AT..UDP_AT];
        ip[0] = 0x45;
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&local.ip().octets());
        ip[16..20].copy_from_slice(&remote.ip().octets());
        let udp = &mut b[UDP_AT..];
        udp[0..2].copy_from_slice(&local.port().to_be_bytes());
        udp[2..4].copy_from_slice(&remote.port().to_be_bytes());
        let ip_sum = checksum::sum(&b[IP_AT..UDP_AT]);
        OuterTemplate { bytes: b, ip_sum }
    }

    /// Points the template at another next hop (a WAN next hop resolved by
    /// ARP/ND, or its MAC changed). The checksum sum does not cover it.
    pub fn set_dst_mac(&mut self, mac: [u8; 6]) {
        self.bytes[0..6].copy_from_slice(&mac);
    }

    /// The peer's address and port the headers go to.
    pub fn remote(&self) -> SocketAddrV4 {
        let ip = &self.bytes[IP_AT + 16..IP_AT + 20];
        let port = u16::from_be_bytes([self.bytes[UDP_AT + 2], self.bytes[UDP_AT + 3]]);
        SocketAddrV4::new([ip[0], ip[1], ip[2], ip[3]].into(), port)
    }

    /// Points the template at another peer address and port (the peer's
    /// NAT mapping changed). The checksum sum is recomputed: it covers the
    /// destination address.
    pub fn set_remote(&mut self, remote: SocketAddrV4) {
        self.bytes[IP_AT + 16..IP_AT + 20].copy_from_slice(&remote.ip().octets());
        self.bytes[UDP_AT + 2..UDP_AT + 4].copy_from_slice(&remote.port().to_be_bytes());
        self.ip_sum = checksum::sum(&self.bytes[IP_AT..UDP_AT]);
    }

    /// Writes the headers for an ESP packet of `esp_len` bytes into
    /// `out[..OUTER_LEN]`. The IPv4 checksum is computed unless the NIC does
    /// it (`ip_csum_offload`: left zero). The UDP checksum is zero, as RFC
    /// 3948 section 2.1 says ESP-in-UDP senders should send it.
    #[inline]
    pub fn write(&self, out: &mut [u8], esp_len: usize, ident: u16, ip_csum_offload: bool) {
        let out = &mut out[..OUTER_LEN];
        out.copy_from_slice(&self.bytes);
        let udp_len = (8 + esp_len) as u16;
        let ip_len = 20 + udp_len;
        out[IP_AT + 2..IP_AT + 4].copy_from_slice(&ip_len.to_be_bytes());
        out[IP_AT + 4..IP_AT + 6].copy_from_slice(&ident.to_be_bytes());
        if !ip_csum_offload {
            let mut s = self.ip_sum as u32 + ip_len as u32 + ident as u32;
            s = (s & 0xffff) + (s >> 16);
            s = (s & 0xffff) + (s >> 16);
            out[IP_AT + 10..IP_AT + 12].copy_from_slice(&(!(s as u16)).to_be_bytes());
        }
        out[UDP_AT + 4..UDP_AT + 6].copy_from_slice(&udp_len.to_be_bytes());
    }

    /// Writes a whole NAT-keepalive frame (RFC 3948 section 2.3: the UDP
    /// payload is the one octet 0xff) into `out[..KEEPALIVE_LEN]`.
    pub fn write_keepalive(&self, out: &mut [u8], ident: u16, ip_csum_offload: bool) {
        // The same headers as an ESP packet, one octet of payload less than
        // any ESP packet: write as if the "ESP" were one octet long.
        self.write(out, 1, ident, ip_csum_offload);
        let _ = emit_keepalive(&mut out[OUTER_LEN..KEEPALIVE_LEN]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tunnel::wire::{ipv4, udp, ChecksumCaps};

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
        // Fits, not IPv4, already a fragment, truncated: nothing is cut.
        let none = |f: &[u8], c| fragment_ipv4(f, c, |_, _| panic!("emitted"));
        assert_eq!(none(&frame, 3008), 0);
        assert_eq!(none(&frames_fragment(&frame), chunk), 0);
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
            let remote: SocketAddrV4 = remote.parse().unwrap();
            t.set_remote(remote);
            assert_eq!(t.remote(), remote);
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
        let mut buf = vec![0u8; KEEPALIVE_LEN];
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
}
