//! Typed zero-copy views over packet bytes, smoltcp style.
//!
//! Each header has a `Packet<T: AsRef<[u8]>>` (or `Frame`) view whose
//! `new_checked` makes every accessor on it panic-free, and a `Repr` whose
//! `parse` validates and whose `emit` writes into a buffer of at least
//! `buffer_len()` bytes. Nothing here allocates. Malformed input is a
//! [`DropReason`], never a panic.

pub mod arp;
pub mod checksum;
pub mod esp;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod udp_encap;

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

pub use checksum::{Checksum, ChecksumCaps};

use crate::DropReason;

/// A byte range naming one header field.
pub(crate) type Field = core::ops::Range<usize>;
/// The bytes from an offset to the end.
pub(crate) type Rest = core::ops::RangeFrom<usize>;

/// Copies `src` into `dst` (the same length; panics otherwise, as
/// `copy_from_slice`). From 16 to 256 bytes inline, in 16- or 32-byte
/// pieces from both ends that overlap in the middle (no loop, which the
/// compiler would turn back into a `memcpy` call): a call cost more than
/// copying a small packet. Shorter and longer copies go to `memcpy`.
#[inline(always)]
pub fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    #[inline(always)]
    fn piece<const N: usize>(dst: &mut [u8], src: &[u8], at: usize) {
        let d: &mut [u8; N] = (&mut dst[at..at + N]).try_into().expect("N bytes");
        let s: &[u8; N] = src[at..at + N].try_into().expect("N bytes");
        *d = *s;
    }
    let n = src.len();
    if dst.len() != n {
        dst.copy_from_slice(src);
        return;
    }
    match n {
        16..=32 => {
            piece::<16>(dst, src, 0);
            piece::<16>(dst, src, n - 16);
        }
        33..=64 => {
            piece::<32>(dst, src, 0);
            piece::<32>(dst, src, n - 32);
        }
        65..=128 => {
            piece::<32>(dst, src, 0);
            piece::<32>(dst, src, 32);
            piece::<32>(dst, src, n - 64);
            piece::<32>(dst, src, n - 32);
        }
        129..=256 => {
            for at in [0, 32, 64, 96, n - 128, n - 96, n - 64, n - 32] {
                piece::<32>(dst, src, at);
            }
        }
        _ => dst.copy_from_slice(src),
    }
}

#[inline(always)]
pub(crate) fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

#[inline(always)]
pub(crate) fn write_u16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// An IP protocol / IPv6 next header number (IANA "Assigned Internet
/// Protocol Numbers").
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 hop-by-hop options (RFC 8200 section 4.3).
    pub const HOP_BY_HOP: IpProtocol = IpProtocol(0);
    /// ICMP (RFC 792).
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// IPv4 in IP (RFC 2003), ESP tunnel mode inner IPv4.
    pub const IPV4: IpProtocol = IpProtocol(4);
    /// TCP (RFC 9293).
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP (RFC 768).
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 in IP (RFC 2473), ESP tunnel mode inner IPv6.
    pub const IPV6: IpProtocol = IpProtocol(41);
    /// IPv6 routing header (RFC 8200 section 4.4).
    pub const IPV6_ROUTE: IpProtocol = IpProtocol(43);
    /// IPv6 fragment header (RFC 8200 section 4.5).
    pub const IPV6_FRAG: IpProtocol = IpProtocol(44);
    /// ESP (RFC 4303).
    pub const ESP: IpProtocol = IpProtocol(50);
    /// Authentication header (RFC 4302).
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// IPv6 no next header (RFC 8200 section 4.7).
    pub const IPV6_NO_NXT: IpProtocol = IpProtocol(59);
    /// IPv6 destination options (RFC 8200 section 4.6).
    pub const IPV6_OPTS: IpProtocol = IpProtocol(60);
    /// Mobility header (RFC 6275), an extension header per RFC 7045.
    pub const MOBILITY: IpProtocol = IpProtocol(135);
    /// Host identity protocol (RFC 7401), an extension header per RFC 7045.
    pub const HIP: IpProtocol = IpProtocol(139);
    /// Shim6 (RFC 5533), an extension header per RFC 7045.
    pub const SHIM6: IpProtocol = IpProtocol(140);
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            IpProtocol::ICMP => "ICMP",
            IpProtocol::TCP => "TCP",
            IpProtocol::UDP => "UDP",
            IpProtocol::ESP => "ESP",
            IpProtocol::ICMPV6 => "ICMPv6",
            IpProtocol(p) => return write!(f, "IpProtocol({p})"),
        };
        f.write_str(name)
    }
}

/// IP version of a packet, from its first nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4 (RFC 791).
    V4,
    /// IPv6 (RFC 8200).
    V6,
}

/// The IP version of a packet from its first byte, e.g. a decrypted inner
/// packet whose version the ESP next header did not say.
#[inline]
pub const fn inner_version(first_byte: u8) -> Result<IpVersion, DropReason> {
    match first_byte >> 4 {
        4 => Ok(IpVersion::V4),
        6 => Ok(IpVersion::V6),
        _ => Err(DropReason::BadIpVersion),
    }
}

/// The source and destination of an IP packet, of one version, as the UDP
/// and TCP pseudo-header needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrPair {
    /// IPv4 source and destination.
    V4 {
        /// Source.
        src: Ipv4Addr,
        /// Destination.
        dst: Ipv4Addr,
    },
    /// IPv6 source and destination.
    V6 {
        /// Source.
        src: Ipv6Addr,
        /// Destination.
        dst: Ipv6Addr,
    },
}

impl AddrPair {
    /// The IP version of the pair.
    pub const fn version(&self) -> IpVersion {
        match self {
            AddrPair::V4 { .. } => IpVersion::V4,
            AddrPair::V6 { .. } => IpVersion::V6,
        }
    }

    /// Folded pseudo-header sum for `protocol` carrying `len` bytes. IPv4
    /// lengths above 65535 cannot occur; they are truncated to 16 bits.
    pub fn pseudo_header_sum(&self, protocol: IpProtocol, len: u32) -> u16 {
        match *self {
            AddrPair::V4 { src, dst } => {
                checksum::pseudo_header_v4(src, dst, protocol.0, len as u16)
            }
            AddrPair::V6 { src, dst } => checksum::pseudo_header_v6(src, dst, protocol.0, len),
        }
    }
}

/// ICMP and ICMPv6 message types that carry a query identifier (RFC 792
/// echo, timestamp, information, RFC 950 address mask; RFC 4443 echo).
const fn icmp_query(protocol: IpProtocol, ty: u8) -> bool {
    match protocol {
        IpProtocol::ICMP => matches!(ty, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18),
        IpProtocol::ICMPV6 => matches!(ty, 128 | 129),
        _ => false,
    }
}

/// The 5-tuple of an IP packet, for the re-orderer and RSS-style spreading.
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 section
/// 2.5.5.2). Ports are those of TCP and UDP; an ICMP query's identifier
/// stands in for both ports; other protocols get zero ports, and so does
/// every fragment, so all pieces of one datagram share a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address, IPv4-mapped for IPv4.
    pub src: [u8; 16],
    /// Destination address, IPv4-mapped for IPv4.
    pub dst: [u8; 16],
    /// IP version.
    pub version: IpVersion,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub proto: IpProtocol,
    /// Source port, ICMP query id, or 0.
    pub src_port: u16,
    /// Destination port, ICMP query id, or 0.
    pub dst_port: u16,
}

/// `2^64 / golden ratio`, odd: the Fibonacci hashing multiplier.
const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

impl FlowKey {
    /// Reads the flow key of an L3 packet (starting at the IP header). The
    /// IP header is length-checked but its checksum is not verified.
    pub fn extract(l3: &[u8]) -> Result<FlowKey, DropReason> {
        let first = *l3.first().ok_or(DropReason::Truncated)?;
        match inner_version(first)? {
            IpVersion::V4 => {
                let p = ipv4::Packet::new_checked(l3)?;
                let proto = p.protocol();
                let (src_port, dst_port) = if p.is_fragment() {
                    (0, 0)
                } else {
                    ports(proto, p.payload())?
                };
                Ok(FlowKey {
                    src: p.src_addr().to_ipv6_mapped().octets(),
                    dst: p.dst_addr().to_ipv6_mapped().octets(),
                    version: IpVersion::V4,
                    proto,
                    src_port,
                    dst_port,
                })
            }
            IpVersion::V6 => {
                let p = ipv6::Packet::new_checked(l3)?;
                let ul = p.upper_layer()?;
                let (src_port, dst_port) = if ul.is_fragment() {
                    (0, 0)
                } else {
                    let end = ipv6::HEADER_LEN + p.payload_len() as usize;
                    ports(ul.protocol, l3.get(ul.offset..end).unwrap_or_default())?
                };
                Ok(FlowKey {
                    src: p.src_addr().octets(),
                    dst: p.dst_addr().octets(),
                    version: IpVersion::V6,
                    proto: ul.protocol,
                    src_port,
                    dst_port,
                })
            }
        }
    }

    /// A deterministic 64-bit hash (multiply-xorshift over the key's words,
    /// then the MurmurHash3 finaliser), the same on every host and run.
    pub fn hash(&self) -> u64 {
        let s = u128::from_le_bytes(self.src);
        let d = u128::from_le_bytes(self.dst);
        let tail = ((self.src_port as u64) << 48)
            | ((self.dst_port as u64) << 32)
            | ((self.proto.0 as u64) << 8)
            | (self.version as u64);
        let mut h = 0u64;
        for w in [s as u64, (s >> 64) as u64, d as u64, (d >> 64) as u64, tail] {
            h = (h ^ w).wrapping_mul(HASH_MUL);
            h ^= h >> 29;
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A flow's hash straight from its packet, for the bundle's per-flow
/// buckets: IPv4 and IPv6 TCP/UDP (not fragments, no IPv6 extension
/// headers) read their addresses and ports as whole words, two to five
/// multiplies; anything else takes [`FlowKey::extract`] and
/// [`FlowKey::hash`] (0 when it cannot be read). One flow always takes the
/// same way, so it always gets the same hash.
#[inline]
pub fn flow_hash(l3: &[u8]) -> u64 {
    #[inline(always)]
    fn word(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }
    #[inline(always)]
    fn mix(h: u64, w: u64) -> u64 {
        let h = (h ^ w).wrapping_mul(HASH_MUL);
        h ^ (h >> 29)
    }
    let fin = |h: u64| {
        let h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    };
    match l3.first().map(|b| b >> 4) {
        Some(4) if l3.len() >= 20 => {
            let ihl = (l3[0] & 0x0f) as usize * 4;
            let proto = l3[9];
            let frag = u16::from_be_bytes([l3[6], l3[7]]) & 0x3fff != 0;
            if (proto == 6 || proto == 17) && !frag && ihl >= 20 && l3.len() >= ihl + 4 {
                let ports = u32::from_le_bytes(l3[ihl..ihl + 4].try_into().unwrap());
                return fin(mix(mix(0, word(l3, 12)), (u64::from(ports) << 8) | u64::from(proto)));
            }
        }
        Some(6) if l3.len() >= 44 && (l3[6] == 6 || l3[6] == 17) => {
            let ports = u32::from_le_bytes(l3[40..44].try_into().unwrap());
            let mut h = 0;
            for at in [8, 16, 24, 32] {
                h = mix(h, word(l3, at));
            }
            return fin(mix(h, (u64::from(ports) << 8) | u64::from(l3[6])));
        }
        _ => {}
    }
    FlowKey::extract(l3).map(|k| k.hash()).unwrap_or(0)
}

/// Ports (or ICMP query id) at the start of an upper-layer header.
fn ports(proto: IpProtocol, l4: &[u8]) -> Result<(u16, u16), DropReason> {
    match proto {
        IpProtocol::TCP | IpProtocol::UDP => match l4 {
            [a, b, c, d, ..] => Ok((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
            _ => Err(DropReason::Truncated),
        },
        IpProtocol::ICMP | IpProtocol::ICMPV6 => match l4 {
            [ty, _code, _c0, _c1, i0, i1, ..] if icmp_query(proto, *ty) => {
                let id = u16::from_be_bytes([*i0, *i1]);
                Ok((id, id))
            }
            [ty, ..] if icmp_query(proto, *ty) => Err(DropReason::Truncated),
            _ => Ok((0, 0)),
        },
        _ => Ok((0, 0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4_udp() -> [u8; 28] {
        let mut b = [0u8; 28];
        b[..20].copy_from_slice(&[
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        b[20..].copy_from_slice(&[0x30, 0x39, 0x11, 0x94, 0, 8, 0, 0]);
        b
    }

    fn v6_with(next: u8, payload: &[u8]) -> [u8; 96] {
        let mut b = [0u8; 96];
        b[0] = 0x60;
        b[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        b[6] = next;
        b[7] = 64;
        b[8..24].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b[24..40].copy_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        b[40..40 + payload.len()].copy_from_slice(payload);
        b
    }

    #[test]
    fn versions() {
        assert_eq!(inner_version(0x45), Ok(IpVersion::V4));
        assert_eq!(inner_version(0x60), Ok(IpVersion::V6));
        assert_eq!(inner_version(0x00), Err(DropReason::BadIpVersion));
        assert_eq!(inner_version(0xff), Err(DropReason::BadIpVersion));
    }

    #[test]
    fn flow_key_v4_udp() {
        let k = FlowKey::extract(&v4_udp()).unwrap();
        assert_eq!(k.version, IpVersion::V4);
        assert_eq!(k.proto, IpProtocol::UDP);
        assert_eq!((k.src_port, k.dst_port), (12345, 4500));
        assert_eq!(k.src, Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().octets());
        assert_eq!(k.hash(), FlowKey::extract(&v4_udp()).unwrap().hash());
    }

    #[test]
    fn flow_key_v4_fragment_has_no_ports() {
        let mut b = v4_udp();
        b[6] = 0x20; // MF
        let k = FlowKey::extract(&b).unwrap();
        assert_eq!((k.src_port, k.dst_port), (0, 0));
        b[6] = 0x00;
        b[7] = 0x01; // offset 8, and the "ports" are data
        let k2 = FlowKey::extract(&b).unwrap();
        assert_eq!(k, k2);
    }

    #[test]
    fn flow_key_v4_icmp() {
        let mut b = v4_udp();
        b[9] = 1;
        b[20..28].copy_from_slice(&[8, 0, 0, 0, 0xbe, 0xef, 0, 1]);
        let k = FlowKey::extract(&b).unwrap();
        assert_eq!((k.src_port, k.dst_port), (0xbeef, 0xbeef));
        // Destination unreachable: no id.
        b[20] = 3;
        let k = FlowKey::extract(&b).unwrap();
        assert_eq!((k.src_port, k.dst_port), (0, 0));
    }

    #[test]
    fn flow_key_v4_truncated_l4() {
        let mut b = v4_udp();
        b[2..4].copy_from_slice(&23u16.to_be_bytes());
        assert_eq!(FlowKey::extract(&b[..23]), Err(DropReason::Truncated));
        // Other protocols need no L4 bytes.
        b[9] = 47;
        assert_eq!(FlowKey::extract(&b[..23]).unwrap().src_port, 0);
    }

    #[test]
    fn flow_key_v6_through_ext_headers() {
        // Dest opts (8 bytes) -> TCP ports 443 -> 51000.
        let mut pl = [0u8; 28];
        pl[0] = 6;
        pl[8..12].copy_from_slice(&[0x01, 0xbb, 0xc7, 0x38]);
        let b = v6_with(60, &pl);
        let k = FlowKey::extract(&b).unwrap();
        assert_eq!(k.version, IpVersion::V6);
        assert_eq!(k.proto, IpProtocol::TCP);
        assert_eq!((k.src_port, k.dst_port), (443, 51000));
        assert_ne!(k.hash(), FlowKey::extract(&v4_udp()).unwrap().hash());
    }

    #[test]
    fn flow_key_v6_icmp_and_fragment() {
        let b = v6_with(58, &[128, 0, 0, 0, 0x12, 0x34, 0, 1]);
        let k = FlowKey::extract(&b).unwrap();
        assert_eq!((k.src_port, k.dst_port), (0x1234, 0x1234));
        // First fragment of a UDP datagram: no ports.
        let b = v6_with(44, &[17, 0, 0, 1, 0, 0, 0, 9, 0x30, 0x39, 0x11, 0x94]);
        let k = FlowKey::extract(&b).unwrap();
        assert_eq!(k.proto, IpProtocol::UDP);
        assert_eq!((k.src_port, k.dst_port), (0, 0));
        // ICMPv6 echo truncated before the id.
        let b = v6_with(58, &[128, 0, 0, 0, 0x12]);
        assert_eq!(FlowKey::extract(&b[..45]), Err(DropReason::Truncated));
    }

    #[test]
    fn flow_key_errors() {
        assert_eq!(FlowKey::extract(&[]), Err(DropReason::Truncated));
        assert_eq!(FlowKey::extract(&[0x50; 40]), Err(DropReason::BadIpVersion));
        assert_eq!(
            FlowKey::extract(&v4_udp()[..19]),
            Err(DropReason::Truncated)
        );
        let b = v6_with(60, &[17, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            FlowKey::extract(&b[..48]),
            Err(DropReason::BadIpv6ExtHeader)
        );
    }

    #[test]
    fn hash_is_pinned() {
        // The hash must not change between builds or hosts: RSS peers and
        // the re-orderer rely on it.
        let k = FlowKey::extract(&v4_udp()).unwrap();
        assert_eq!(k.hash(), PINNED_V4_UDP_HASH);
    }

    const PINNED_V4_UDP_HASH: u64 = 0xaaecd4ddb8887f91;

    fn checked_everything(data: &[u8]) {
        let caps = ChecksumCaps::default();
        let lenient = ChecksumCaps {
            udp6_zero_rx: true,
            ..ChecksumCaps::offloaded()
        };
        if let Ok(f) = ethernet::Frame::new_checked(data) {
            let _ = ethernet::Repr::parse(&f);
            let _ = f.payload();
        }
        let _ = ethernet::Repr::parse(&ethernet::Frame::new_unchecked(data));
        if let Ok(p) = ipv4::Packet::new_checked(data) {
            let _ = (
                p.payload(),
                p.options(),
                p.verify_checksum(),
                p.is_fragment(),
            );
            let _ = ipv4::Repr::parse(&p, &caps);
            let _ = ipv4::Repr::parse(&p, &lenient);
            if let Ok(u) = udp::Packet::new_checked(p.payload()) {
                let _ = udp::Repr::parse(&u, &p.addrs(), &caps);
            }
        }
        let _ = ipv4::Repr::parse(&ipv4::Packet::new_unchecked(data), &caps);
        if let Ok(p) = ipv6::Packet::new_checked(data) {
            let _ = ipv6::Repr::parse(&p);
            if let Ok(ul) = p.upper_layer() {
                assert!(ul.offset <= data.len());
                if let Some(l4) = data.get(ul.offset..) {
                    if let Ok(u) = udp::Packet::new_checked(l4) {
                        let _ = udp::Repr::parse(&u, &p.addrs(), &caps);
                        let _ = udp::Repr::parse(&u, &p.addrs(), &lenient);
                    }
                }
            }
        }
        let _ = ipv6::Repr::parse(&ipv6::Packet::new_unchecked(data));
        if let Some(&first) = data.first() {
            let _ = ipv6::walk_ext_headers(IpProtocol(first), data.get(1..).unwrap_or_default());
        }
        let _ = udp::Repr::parse(
            &udp::Packet::new_unchecked(data),
            &AddrPair::V4 {
                src: Ipv4Addr::LOCALHOST,
                dst: Ipv4Addr::LOCALHOST,
            },
            &caps,
        );
        let _ = udp_encap::classify(data);
        let _ = FlowKey::extract(data).map(|k| k.hash());
        let _ = checksum::sum(data);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..160)) {
            checked_everything(&data);
        }

        #[test]
        fn ip_looking_bytes_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 1..200),
            v6 in any::<bool>(),
            nh in prop::sample::select(vec![0u8, 1, 6, 17, 43, 44, 50, 51, 58, 59, 60, 135]),
            ihl in 0u8..16,
        ) {
            if v6 {
                data[0] = 0x60 | (data[0] & 0x0f);
                if data.len() >= 40 {
                    data[6] = nh;
                    let pl = (data.len() - 40) as u16;
                    // Sometimes exact, sometimes the random value.
                    if data[1] & 1 == 0 {
                        data[4..6].copy_from_slice(&pl.to_be_bytes());
                    }
                }
            } else {
                data[0] = 0x40 | ihl;
                if data.len() >= 20 {
                    data[9] = nh;
                    if data[1] & 1 == 0 {
                        let total = data.len() as u16;
                        data[2..4].copy_from_slice(&total.to_be_bytes());
                    }
                }
            }
            checked_everything(&data);
        }
    }

    #[test]
    fn flow_hash_follows_the_five_tuple() {
        let a = v4_udp();
        assert_eq!(flow_hash(&a), flow_hash(&v4_udp()), "deterministic");
        let mut b = a;
        b[20] ^= 1; // source port
        assert_ne!(flow_hash(&a), flow_hash(&b));
        let mut c = a;
        c[26] ^= 0xff; // UDP checksum: same flow
        assert_eq!(flow_hash(&a), flow_hash(&c));
        let mut d = a;
        d[15] ^= 1; // source address
        assert_ne!(flow_hash(&a), flow_hash(&d));
        // A fragment and an ICMP packet take the general way, and still
        // hash by their flow.
        let mut f = a;
        f[6] = 0x20;
        assert_eq!(flow_hash(&f), FlowKey::extract(&f).unwrap().hash());
        assert_eq!(flow_hash(&[]), 0);
        assert_eq!(flow_hash(&a[..22]), FlowKey::extract(&a[..22]).map(|k| k.hash()).unwrap_or(0));
    }

    /// Every length around the inline path's bounds and its 16-byte
    /// pieces: the bytes copied exactly, nothing around the destination
    /// touched; different lengths panic as `copy_from_slice` does.
    #[test]
    fn copy_bytes_copies_exactly() {
        for n in 0..=300usize {
            let src: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            let mut dst = vec![0xeeu8; n + 32];
            copy_bytes(&mut dst[16..16 + n], &src);
            assert_eq!(&dst[16..16 + n], src.as_slice(), "{n} bytes");
            assert!(dst[..16].iter().chain(&dst[16 + n..]).all(|b| *b == 0xee), "{n} bytes: outside touched");
        }
        assert!(std::panic::catch_unwind(|| copy_bytes(&mut [0u8; 40], &[1u8; 41])).is_err());
        assert!(std::panic::catch_unwind(|| copy_bytes(&mut [0u8; 8], &[1u8; 7])).is_err());
    }
}
