//! IPv6 headers (RFC 8200) and the walk over extension headers to the
//! upper-layer protocol. Jumbograms (RFC 2675, payload length 0) are not
//! supported: a zero payload length means an empty payload.
//!
//! ```text
//!  0                   1                   2                   3
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! |                   Source Address (16 octets)                  |
//! |                Destination Address (16 octets)                |
//! ```

use core::net::Ipv6Addr;

use super::{read_u16, write_u16, AddrPair, IpProtocol};
use crate::DropReason;

mod field {
    use crate::wire::{Field, Rest};

    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
    pub const PAYLOAD: Rest = 40..;
}

/// Fixed header length (RFC 8200 section 3).
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// The version nibble.
pub const VERSION: u8 = 6;
/// Fragment header length, fixed (RFC 8200 section 4.5).
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer and checks version and lengths.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks, in order: 40 bytes present (`Truncated`), version 6
    /// (`BadIpVersion`), payload within the buffer (`BadIpv6PayloadLen`).
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        if self.version() != VERSION {
            return Err(DropReason::BadIpVersion);
        }
        if HEADER_LEN + self.payload_len() as usize > len {
            return Err(DropReason::BadIpv6PayloadLen);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn ver_tc_flow(&self) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    /// Traffic class: DSCP and ECN (RFC 2474, RFC 3168).
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// Flow label, 20 bits (RFC 6437).
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000f_ffff
    }

    /// Payload length: everything after the fixed header, extensions included.
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The first next header, which may be an extension header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        Ipv6Addr::from(a)
    }

    /// Source and destination, for the upper layer's pseudo-header.
    pub fn addrs(&self) -> AddrPair {
        AddrPair::V6 {
            src: self.src_addr(),
            dst: self.dst_addr(),
        }
    }

    /// The payload, extension headers included, bounded by the payload length.
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + self.payload_len() as usize;
        &self.buffer.as_ref()[HEADER_LEN..end]
    }

    /// Walks the extension headers to the upper layer. Offsets in the result
    /// count from the start of the IPv6 header.
    pub fn upper_layer(&self) -> Result<UpperLayer, DropReason> {
        let mut ul = walk_ext_headers(self.next_header(), self.payload())?;
        ul.offset += HEADER_LEN;
        Ok(ul)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_ver_tc_flow(&mut self, value: u32) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the version nibble.
    pub fn set_version(&mut self, version: u8) {
        let v = (self.ver_tc_flow() & 0x0fff_ffff) | ((version as u32 & 0xf) << 28);
        self.set_ver_tc_flow(v);
    }

    /// Sets the traffic class.
    pub fn set_traffic_class(&mut self, tc: u8) {
        let v = (self.ver_tc_flow() & 0xf00f_ffff) | ((tc as u32) << 20);
        self.set_ver_tc_flow(v);
    }

    /// Sets the flow label (low 20 bits kept).
    pub fn set_flow_label(&mut self, label: u32) {
        let v = (self.ver_tc_flow() & 0xfff0_0000) | (label & 0x000f_ffff);
        self.set_ver_tc_flow(v);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the first next header.
    pub fn set_next_header(&mut self, nh: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = nh.0;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hops;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The payload, mutable, bounded by the payload length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + self.payload_len() as usize;
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// What a fragment header says (RFC 8200 section 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// Offset of this piece in the original payload, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Identification, shared by the pieces of one datagram.
    pub ident: u32,
}

impl Fragment {
    /// An atomic fragment (offset 0, no more): the whole datagram (RFC 6946).
    pub const fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more
    }
}

/// Where the upper layer starts after the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// The protocol after the last extension header: TCP, UDP, ICMPv6, or
    /// ESP / no-next-header, which end the walk.
    pub protocol: IpProtocol,
    /// Its offset (from the IPv6 header from [`Packet::upper_layer`], from
    /// the start of the slice from [`walk_ext_headers`]).
    pub offset: usize,
    /// The fragment header, if one was crossed. Unless it is atomic, the
    /// bytes at `offset` are fragment data, not an upper-layer header.
    pub fragment: Option<Fragment>,
}

impl UpperLayer {
    /// The bytes at `offset` are a piece of a fragmented datagram.
    pub fn is_fragment(&self) -> bool {
        matches!(self.fragment, Some(f) if !f.is_atomic())
    }
}

/// Skips the extension headers at the start of `data` (an IPv6 payload whose
/// first header is `first`). Hop-by-hop must come first (RFC 8200 section
/// 4.1); a header that runs off the end is `BadIpv6ExtHeader`. The walk ends
/// at ESP (its contents are encrypted), no-next-header, or any protocol that
/// is not an extension header. Every step moves forward at least 8 bytes,
/// so the loop ends.
pub fn walk_ext_headers(first: IpProtocol, data: &[u8]) -> Result<UpperLayer, DropReason> {
    let mut nh = first;
    let mut offset = 0usize;
    let mut fragment = None;
    loop {
        let len = match nh {
            IpProtocol::HOP_BY_HOP if offset != 0 => return Err(DropReason::BadIpv6ExtHeader),
            IpProtocol::HOP_BY_HOP
            | IpProtocol::IPV6_ROUTE
            | IpProtocol::IPV6_OPTS
            | IpProtocol::MOBILITY
            | IpProtocol::HIP
            | IpProtocol::SHIM6 => {
                // Hdr Ext Len counts 8-octet units after the first 8
                // (RFC 8200 sections 4.3, 4.4, 4.6; RFC 7045 for the rest).
                let units = *data.get(offset + 1).ok_or(DropReason::BadIpv6ExtHeader)?;
                (units as usize + 1) * 8
            }
            IpProtocol::AH => {
                // Payload Len counts 4-octet units, minus 2 (RFC 4302 section 2.2).
                let units = *data.get(offset + 1).ok_or(DropReason::BadIpv6ExtHeader)?;
                (units as usize + 2) * 4
            }
            IpProtocol::IPV6_FRAG => {
                let hdr = data
                    .get(offset..offset + FRAGMENT_HEADER_LEN)
                    .ok_or(DropReason::BadIpv6ExtHeader)?;
                let off_m = u16::from_be_bytes([hdr[2], hdr[3]]);
                fragment = Some(Fragment {
                    offset: off_m & 0xfff8,
                    more: off_m & 0x0001 != 0,
                    ident: u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]),
                });
                FRAGMENT_HEADER_LEN
            }
            _ => {
                return Ok(UpperLayer {
                    protocol: nh,
                    offset,
                    fragment,
                })
            }
        };
        let next = *data.get(offset).ok_or(DropReason::BadIpv6ExtHeader)?;
        if offset + len > data.len() {
            return Err(DropReason::BadIpv6ExtHeader);
        }
        // Past a non-first fragment header the rest is fragment data.
        if matches!(fragment, Some(f) if f.offset != 0) {
            return Ok(UpperLayer {
                protocol: IpProtocol(next),
                offset: offset + len,
                fragment,
            });
        }
        nh = IpProtocol(next);
        offset += len;
    }
}

/// A parsed fixed IPv6 header. Extension headers stay in the payload; find
/// the upper layer with [`Packet::upper_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// The first next header.
    pub next_header: IpProtocol,
    /// Payload length, extension headers included.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label, 20 bits.
    pub flow_label: u32,
}

impl Repr {
    /// Checks version and lengths; IPv6 has no header checksum.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, DropReason> {
        packet.check_len()?;
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.payload_len() as usize,
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Header length this repr emits.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Source and destination, for the upper layer's pseudo-header.
    pub const fn addrs(&self) -> AddrPair {
        AddrPair::V6 {
            src: self.src_addr,
            dst: self.dst_addr,
        }
    }

    /// Writes the fixed header; the packet must hold `buffer_len()` bytes and
    /// `payload_len` must fit 16 bits.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_ver_tc_flow(
            ((VERSION as u32) << 28)
                | ((self.traffic_class as u32) << 20)
                | (self.flow_label & 0x000f_ffff),
        );
        packet.set_payload_len(self.payload_len as u16);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2001:db8::1 -> 2001:db8::2, TC 0xb8 (EF), flow 0x12345, UDP,
    // hop limit 64, 8-byte payload.
    const PACKET: [u8; 48] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x08, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x12,
        0x34, 0x56, 0x78, 0x00, 0x08, 0x00, 0x00,
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: "2001:db8::1".parse().unwrap(),
            dst_addr: "2001:db8::2".parse().unwrap(),
            next_header: IpProtocol::UDP,
            payload_len: 8,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
    }

    /// A packet with the given extension bytes then 8 bytes of UDP.
    fn with_ext(first: u8, ext: &[u8]) -> ([u8; 200], usize) {
        let mut b = [0u8; 200];
        b[..40].copy_from_slice(&PACKET[..40]);
        b[6] = first;
        b[40..40 + ext.len()].copy_from_slice(ext);
        b[40 + ext.len()..48 + ext.len()].copy_from_slice(&PACKET[40..48]);
        let len = 48 + ext.len();
        b[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        (b, len)
    }

    #[test]
    fn parse_fields() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.next_header(), IpProtocol::UDP);
        assert_eq!(p.payload(), &PACKET[40..]);
        assert_eq!(Repr::parse(&p).unwrap(), repr());
        let ul = p.upper_layer().unwrap();
        assert_eq!(ul.protocol, IpProtocol::UDP);
        assert_eq!(ul.offset, 40);
        assert_eq!(ul.fragment, None);
    }

    #[test]
    fn emit_round_trip() {
        let mut buf = [0xffu8; 48];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut p);
        p.payload_mut().copy_from_slice(&PACKET[40..]);
        assert_eq!(buf, PACKET);
        assert_eq!(repr().buffer_len(), 40);
    }

    #[test]
    fn setters() {
        let mut buf = PACKET;
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_traffic_class(0x01);
        p.set_flow_label(0xfffff);
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x01);
        assert_eq!(p.flow_label(), 0xfffff);
        p.set_version(6);
        p.set_hop_limit(1);
        assert_eq!(p.hop_limit(), 1);
    }

    #[test]
    fn payload_excludes_padding() {
        let mut b = [0u8; 64];
        b[..48].copy_from_slice(&PACKET);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn truncated_and_bad_lengths() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&PACKET[..n]).err(),
                Some(DropReason::Truncated)
            );
        }
        assert_eq!(
            Packet::new_checked(&PACKET[..47]).err(),
            Some(DropReason::BadIpv6PayloadLen)
        );
        let mut b = PACKET;
        b[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::BadIpVersion)
        );
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(DropReason::BadIpVersion)
        );
    }

    #[test]
    fn skips_hop_by_hop_routing_dest_opts() {
        // HBH (8 bytes, PadN) -> routing (16 bytes) -> dest opts (8) -> UDP.
        let mut ext = [0u8; 32];
        ext[0] = 43; // next: routing
        ext[1] = 0;
        ext[2..8].copy_from_slice(&[1, 4, 0, 0, 0, 0]);
        ext[8] = 60; // next: dest opts
        ext[9] = 1; // 16 bytes
        ext[24] = 17; // next: UDP
        ext[25] = 0;
        ext[26..32].copy_from_slice(&[1, 4, 0, 0, 0, 0]);
        let (b, len) = with_ext(0, &ext);
        let p = Packet::new_checked(&b[..len]).unwrap();
        let ul = p.upper_layer().unwrap();
        assert_eq!(ul.protocol, IpProtocol::UDP);
        assert_eq!(ul.offset, 40 + 32);
        assert!(!ul.is_fragment());
        assert_eq!(
            &p.as_ref()[ul.offset..ul.offset + 4],
            &[0x12, 0x34, 0x56, 0x78]
        );
    }

    #[test]
    fn skips_ah() {
        // AH with a 16-byte ICV: Payload Len = (12 + 16) / 4 - 2 = 5.
        let mut ext = [0u8; 28];
        ext[0] = 17;
        ext[1] = 5;
        let (b, len) = with_ext(51, &ext);
        let ul = Packet::new_checked(&b[..len])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(ul.protocol, IpProtocol::UDP);
        assert_eq!(ul.offset, 40 + 28);
    }

    #[test]
    fn fragment_header() {
        // First fragment: offset 0, M set, ident 0xdeadbeef.
        let ext = [17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef];
        let (b, len) = with_ext(44, &ext);
        let ul = Packet::new_checked(&b[..len])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(ul.protocol, IpProtocol::UDP);
        assert_eq!(ul.offset, 48);
        assert_eq!(
            ul.fragment,
            Some(Fragment {
                offset: 0,
                more: true,
                ident: 0xdeadbeef
            })
        );
        assert!(ul.is_fragment());

        // Later fragment: offset 1448, no more; the walk stops at the data
        // even if it looks like another extension header.
        let ext = [0, 0, 0x05, 0xa8, 0, 0, 0, 1];
        let (b, len) = with_ext(44, &ext);
        let ul = Packet::new_checked(&b[..len])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(ul.protocol, IpProtocol::HOP_BY_HOP);
        assert_eq!(ul.offset, 48);
        assert_eq!(ul.fragment.map(|f| f.offset), Some(1448));
        assert!(ul.is_fragment());

        // Atomic fragment (RFC 6946) is a whole datagram.
        let ext = [17, 0, 0, 0, 0, 0, 0, 7];
        let (b, len) = with_ext(44, &ext);
        let ul = Packet::new_checked(&b[..len])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert!(!ul.is_fragment());
    }

    #[test]
    fn esp_and_no_next_header_terminate() {
        for nh in [IpProtocol::ESP, IpProtocol::IPV6_NO_NXT, IpProtocol::ICMPV6] {
            let (b, len) = with_ext(nh.0, &[]);
            let ul = Packet::new_checked(&b[..len])
                .unwrap()
                .upper_layer()
                .unwrap();
            assert_eq!(ul.protocol, nh);
            assert_eq!(ul.offset, 40);
        }
    }

    #[test]
    fn chain_running_off_the_end() {
        // Routing header claims 16 bytes but 8 are there (and UDP after).
        let p = {
            let mut b = [0u8; 48];
            b[..40].copy_from_slice(&PACKET[..40]);
            b[6] = 43;
            b[40] = 17;
            b[41] = 1;
            b
        };
        assert_eq!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(DropReason::BadIpv6ExtHeader)
        );
        // Next header says dest opts but the payload is empty.
        let mut b = PACKET;
        b[6] = 60;
        b[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..40]).unwrap().upper_layer(),
            Err(DropReason::BadIpv6ExtHeader)
        );
        // One byte of a header: length octet missing.
        assert_eq!(
            walk_ext_headers(IpProtocol::IPV6_OPTS, &[17]),
            Err(DropReason::BadIpv6ExtHeader)
        );
        // Fragment header cut short.
        assert_eq!(
            walk_ext_headers(IpProtocol::IPV6_FRAG, &[17, 0, 0, 0]),
            Err(DropReason::BadIpv6ExtHeader)
        );
        // AH running past the end.
        assert_eq!(
            walk_ext_headers(IpProtocol::AH, &[17, 4, 0, 0, 0, 0, 0, 0]),
            Err(DropReason::BadIpv6ExtHeader)
        );
        // Bounded by the payload length, not the buffer: a header that fits
        // the buffer but not the payload is still bad.
        let (mut b, len) = with_ext(60, &[17, 0, 0, 0, 0, 0, 0, 0]);
        b[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..len]).unwrap().upper_layer(),
            Err(DropReason::BadIpv6ExtHeader)
        );
    }

    #[test]
    fn hop_by_hop_not_first() {
        // Dest opts -> HBH is invalid (RFC 8200 section 4.1).
        let ext = [0, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0];
        let (b, len) = with_ext(60, &ext);
        assert_eq!(
            Packet::new_checked(&b[..len]).unwrap().upper_layer(),
            Err(DropReason::BadIpv6ExtHeader)
        );
    }
}
