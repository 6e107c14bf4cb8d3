//! IPv4 headers (RFC 791), options included: the view checks that
//! `20 <= IHL*4 <= total length <= buffer`, so every accessor is in bounds.
//!
//! ```text
//!  0                   1                   2                   3
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |  DSCP   |ECN|          Total Length         |
//! |         Identification        |Flags|     Fragment Offset     |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! |                    Options (IHL > 5)                          |
//! ```

use core::net::Ipv4Addr;

use super::checksum::{self, ChecksumCaps};
use super::{read_u16, write_u16, AddrPair, IpProtocol};
use crate::DropReason;

mod field {
    use crate::wire::Field;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Header length without options, IHL 5 (RFC 791 section 3.1).
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Header length with the most options, IHL 15 (RFC 791 section 3.1).
pub const MAX_HEADER_LEN: usize = 60;
/// The version nibble.
pub const VERSION: u8 = 4;

/// Don't Fragment flag (RFC 791 section 3.1).
const FLAG_DF: u16 = 0x4000;
/// More Fragments flag (RFC 791 section 3.1).
const FLAG_MF: u16 = 0x2000;
/// Fragment offset, in 8-octet units.
const OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet.
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

    /// Checks, in order: 20 bytes present (`Truncated`), version 4
    /// (`BadIpVersion`), IHL >= 5 (`BadIpHeaderLen`), header within the buffer
    /// (`Truncated`), header <= total length <= buffer (`BadIpTotalLen`).
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        if self.version() != VERSION {
            return Err(DropReason::BadIpVersion);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(DropReason::BadIpHeaderLen);
        }
        if header_len > len {
            return Err(DropReason::Truncated);
        }
        let total_len = self.total_len() as usize;
        if total_len < header_len || total_len > len {
            return Err(DropReason::BadIpTotalLen);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes, IHL * 4.
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize) * 4
    }

    /// DSCP and ECN octet (RFC 2474, RFC 3168), for ECN propagation (RFC 6040).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Differentiated services code point, 6 bits.
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// Explicit congestion notification, 2 bits.
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }

    /// Total length: header plus payload.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification, shared by the fragments of one datagram.
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    fn flags_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start)
    }

    /// Don't Fragment.
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    /// More Fragments.
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-octet units).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & OFFSET_MASK) << 3
    }

    /// A piece of a fragmented datagram: MF set or a non-zero offset.
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Upper-layer protocol.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        Ipv4Addr::new(d[12], d[13], d[14], d[15])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        Ipv4Addr::new(d[16], d[17], d[18], d[19])
    }

    /// Source and destination, for the upper layer's pseudo-header.
    pub fn addrs(&self) -> AddrPair {
        AddrPair::V4 {
            src: self.src_addr(),
            dst: self.dst_addr(),
        }
    }

    /// The header checksum verifies (RFC 791 section 3.1).
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(&self.buffer.as_ref()[..self.header_len()])
    }

    /// The options, between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload, bounded by the total length (link padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version nibble.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets IHL from a header length in bytes (a multiple of 4, 20..=60).
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP and ECN octet.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = tos;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT.start, ident);
    }

    fn set_flags_offset(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::FLG_OFF.start, value);
    }

    /// Clears all flags and the fragment offset.
    pub fn clear_flags(&mut self) {
        self.set_flags_offset(0);
    }

    /// Sets or clears Don't Fragment.
    pub fn set_dont_frag(&mut self, value: bool) {
        let v = self.flags_offset() & !FLAG_DF;
        self.set_flags_offset(if value { v | FLAG_DF } else { v });
    }

    /// Sets or clears More Fragments.
    pub fn set_more_frags(&mut self, value: bool) {
        let v = self.flags_offset() & !FLAG_MF;
        self.set_flags_offset(if value { v | FLAG_MF } else { v });
    }

    /// Sets the fragment offset in bytes (rounded down to 8).
    pub fn set_frag_offset(&mut self, offset: u16) {
        let v = self.flags_offset() & !OFFSET_MASK;
        self.set_flags_offset(v | (offset >> 3));
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the upper-layer protocol.
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.0;
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes and writes the header checksum, options included.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::sum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(!sum);
    }

    /// The options, mutable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// The payload, mutable, bounded by the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.total_len() as usize);
        &mut self.buffer.as_mut()[start..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed IPv4 header. Options are accepted on parse but not kept; `emit`
/// writes a 20-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Upper-layer protocol.
    pub protocol: IpProtocol,
    /// Payload length (total length minus header length).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN octet.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
    /// More Fragments.
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
}

impl Repr {
    /// Checks lengths and, unless the NIC verified it, the header checksum.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        caps: &ChecksumCaps,
    ) -> Result<Repr, DropReason> {
        packet.check_len()?;
        if caps.ipv4.rx() && !packet.verify_checksum() {
            return Err(DropReason::BadIpChecksum);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.total_len() as usize - packet.header_len(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// Header length this repr emits.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// A piece of a fragmented datagram.
    pub const fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }

    /// Source and destination, for the upper layer's pseudo-header.
    pub const fn addrs(&self) -> AddrPair {
        AddrPair::V4 {
            src: self.src_addr,
            dst: self.dst_addr,
        }
    }

    /// Writes a 20-byte header; the packet must hold `buffer_len()` bytes and
    /// `payload_len` must fit the 16-bit total length. The checksum is
    /// computed unless the NIC fills it, in which case it is left zero, as
    /// DPDK's IPv4 checksum offload expects.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>, caps: &ChecksumCaps) {
        packet.set_version(VERSION);
        packet.set_header_len(HEADER_LEN);
        packet.set_tos(self.tos);
        packet.set_total_len((HEADER_LEN + self.payload_len) as u16);
        packet.set_ident(self.ident);
        packet.clear_flags();
        packet.set_dont_frag(self.dont_frag);
        packet.set_more_frags(self.more_frags);
        packet.set_frag_offset(self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        if caps.ipv4.tx() {
            packet.fill_checksum();
        } else {
            packet.set_checksum(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::Checksum;

    // 192.168.0.1 -> 192.168.0.199, UDP, DF, TTL 64, ident 0, total 0x73,
    // checksum 0xb861 (a well-known capture). Payload truncated to 4 bytes
    // below, so tests fix up the total length where needed.
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    // 10.0.0.1 -> 10.0.0.2, UDP, TTL 64, ident 0x1234, MF, offset 0,
    // total 24, checksum filled by hand-checked code below.
    fn small_packet() -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..20].copy_from_slice(&[
            0x45, 0x00, 0x00, 0x18, 0x12, 0x34, 0x20, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1,
            10, 0, 0, 2,
        ]);
        b[20..].copy_from_slice(&[1, 2, 3, 4]);
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.fill_checksum();
        b
    }

    fn repr_small() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IpProtocol::UDP,
            payload_len: 4,
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            dont_frag: false,
            more_frags: true,
            frag_offset: 0,
        }
    }

    #[test]
    fn real_header_fields() {
        let mut buf = [0u8; 0x73];
        buf[..20].copy_from_slice(&HDR);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 0x73);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::UDP);
        assert_eq!(p.checksum(), 0xb861);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(p.payload().len(), 0x73 - 20);
        let repr = Repr::parse(&p, &ChecksumCaps::default()).unwrap();
        assert_eq!(repr.payload_len, 0x73 - 20);
        assert!(repr.dont_frag);
    }

    #[test]
    fn emit_round_trip() {
        let expected = small_packet();
        let repr = Repr::parse(
            &Packet::new_checked(&expected[..]).unwrap(),
            &ChecksumCaps::default(),
        )
        .unwrap();
        assert_eq!(repr, repr_small());
        assert!(repr.is_fragment());
        let mut buf = [0xaau8; 24];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut p, &ChecksumCaps::default());
        p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(buf, expected);
        assert_eq!(repr.buffer_len(), 20);
    }

    #[test]
    fn emit_leaves_checksum_to_nic() {
        let caps = ChecksumCaps {
            ipv4: Checksum::Rx,
            ..ChecksumCaps::default()
        };
        let mut buf = [0xaau8; 24];
        repr_small().emit(&mut Packet::new_unchecked(&mut buf[..]), &caps);
        assert_eq!(&buf[10..12], &[0, 0]);
    }

    #[test]
    fn options_are_skipped() {
        // IHL 6 with a 4-byte option (NOP NOP NOP EOL), 2-byte payload.
        let mut b = [0u8; 26];
        b[..20].copy_from_slice(&small_packet()[..20]);
        b[0] = 0x46;
        b[2..4].copy_from_slice(&26u16.to_be_bytes());
        b[20..24].copy_from_slice(&[1, 1, 1, 0]);
        b[24..].copy_from_slice(&[0xca, 0xfe]);
        Packet::new_unchecked(&mut b[..]).fill_checksum();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[0xca, 0xfe]);
        let repr = Repr::parse(&p, &ChecksumCaps::default()).unwrap();
        assert_eq!(repr.payload_len, 2);
    }

    #[test]
    fn payload_excludes_link_padding() {
        let mut b = [0u8; 60];
        b[..24].copy_from_slice(&small_packet());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn fragment_fields() {
        let mut b = small_packet();
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_more_frags(false);
        p.set_frag_offset(1480);
        p.set_dont_frag(true);
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment());
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        p.set_frag_offset(0);
        assert!(!p.is_fragment());
    }

    #[test]
    fn truncated() {
        let b = small_packet();
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&b[..n]).err(),
                Some(DropReason::Truncated)
            );
        }
        // Header with options longer than the buffer.
        let mut b2 = b;
        b2[0] = 0x4f;
        assert_eq!(
            Packet::new_checked(&b2[..]).err(),
            Some(DropReason::Truncated)
        );
    }

    #[test]
    fn bad_version() {
        let mut b = small_packet();
        b[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::BadIpVersion)
        );
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..]), &ChecksumCaps::default()),
            Err(DropReason::BadIpVersion)
        );
    }

    #[test]
    fn bad_ihl() {
        let mut b = small_packet();
        for ihl in 0..5u8 {
            b[0] = 0x40 | ihl;
            assert_eq!(
                Packet::new_checked(&b[..]).err(),
                Some(DropReason::BadIpHeaderLen)
            );
        }
    }

    #[test]
    fn bad_total_len() {
        let mut b = small_packet();
        // Past the buffer.
        b[2..4].copy_from_slice(&25u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::BadIpTotalLen)
        );
        // Below the header length.
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::BadIpTotalLen)
        );
        // Header with options past the total length but within the buffer.
        let mut b = [0u8; 40];
        b[..24].copy_from_slice(&small_packet());
        b[0] = 0x47;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::BadIpTotalLen)
        );
    }

    #[test]
    fn bad_checksum() {
        let mut b = small_packet();
        b[8] = 63; // TTL changed, checksum not updated.
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            Repr::parse(&p, &ChecksumCaps::default()),
            Err(DropReason::BadIpChecksum)
        );
        // The NIC verified it: software does not look.
        let caps = ChecksumCaps {
            ipv4: Checksum::Tx,
            ..ChecksumCaps::default()
        };
        assert!(Repr::parse(&p, &caps).is_ok());
    }

    #[test]
    fn incremental_ttl_update_verifies() {
        let mut b = small_packet();
        let mut p = Packet::new_unchecked(&mut b[..]);
        let old = u16::from_be_bytes([p.ttl(), p.protocol().0]);
        p.set_ttl(p.ttl() - 1);
        let new = u16::from_be_bytes([p.ttl(), p.protocol().0]);
        let c = checksum::update_u16(p.checksum(), old, new);
        p.set_checksum(c);
        assert!(p.verify_checksum());
    }
}
