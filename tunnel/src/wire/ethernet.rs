//! Ethernet II frames (IEEE 802.3 clause 3.2.6) with at most one IEEE 802.1Q
//! VLAN tag. A second (QinQ) tag is not skipped: such a frame's payload
//! EtherType reads as `VLAN` and callers treat it as not IP.

use core::fmt;

use super::{read_u16, write_u16};
use crate::DropReason;

/// The 16-bit type of an Ethernet payload (IEEE EtherType registry).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4 (RFC 894).
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP (RFC 826).
    pub const ARP: EtherType = EtherType(0x0806);
    /// IEEE 802.1Q customer VLAN tag protocol identifier.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IPv6 (RFC 2464).
    pub const IPV6: EtherType = EtherType(0x86dd);
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EtherType::IPV4 => f.write_str("IPv4"),
            EtherType::ARP => f.write_str("ARP"),
            EtherType::VLAN => f.write_str("VLAN"),
            EtherType::IPV6 => f.write_str("IPv6"),
            EtherType(t) => write!(f, "EtherType({t:#06x})"),
        }
    }
}

/// A 48-bit IEEE MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Address(pub [u8; 6]);

impl Address {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Address = Address([0xff; 6]);

    /// The all-ones broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group bit set (IEEE 802 section 8.2): multicast or broadcast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Neither multicast nor broadcast.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The six octets.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// An 802.1Q tag control information field: priority, drop eligible, VLAN id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct VlanTag {
    /// Priority code point (IEEE 802.1p), 3 bits.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 12 bits; 0 means priority-tagged only.
    pub vid: u16,
}

impl VlanTag {
    /// Splits a 16-bit TCI.
    pub const fn from_tci(tci: u16) -> Self {
        VlanTag {
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }

    /// Packs into a 16-bit TCI; out-of-range bits are masked off.
    pub const fn tci(&self) -> u16 {
        ((self.pcp as u16 & 0x7) << 13) | ((self.dei as u16) << 12) | (self.vid & 0x0fff)
    }
}

mod field {
    use crate::wire::{Field, Rest};

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    /// The EtherType, or the tag protocol identifier of a tagged frame.
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
    /// 802.1Q tag control information, after a `VLAN` TPID.
    pub const VLAN_TCI: Field = 14..16;
    /// The payload's EtherType in a tagged frame.
    pub const VLAN_ETHERTYPE: Field = 16..18;
    pub const VLAN_PAYLOAD: Rest = 18..;
}

/// Untagged Ethernet II header length.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// Header length with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = field::VLAN_PAYLOAD.start;

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps a buffer and checks it holds the whole header, tag included.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Ensures every accessor is in bounds.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len() {
            return Err(DropReason::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// 14, or 18 with a VLAN tag. Reads the EtherType only if it is present.
    pub fn header_len(&self) -> usize {
        let data = self.buffer.as_ref();
        if data.len() >= HEADER_LEN && self.has_vlan() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Destination MAC address.
    pub fn dst_addr(&self) -> Address {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        Address(a)
    }

    /// Source MAC address.
    pub fn src_addr(&self) -> Address {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        Address(a)
    }

    /// The raw EtherType field: the TPID when the frame is tagged.
    pub fn ethertype(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::ETHERTYPE.start))
    }

    /// The frame carries an 802.1Q tag.
    pub fn has_vlan(&self) -> bool {
        self.ethertype() == EtherType::VLAN
    }

    /// The 802.1Q tag, if any.
    pub fn vlan(&self) -> Option<VlanTag> {
        if self.has_vlan() {
            Some(VlanTag::from_tci(read_u16(
                self.buffer.as_ref(),
                field::VLAN_TCI.start,
            )))
        } else {
            None
        }
    }

    /// The payload's EtherType, after the tag if there is one.
    pub fn payload_ethertype(&self) -> EtherType {
        if self.has_vlan() {
            EtherType(read_u16(self.buffer.as_ref(), field::VLAN_ETHERTYPE.start))
        } else {
            self.ethertype()
        }
    }

    /// The payload, after the tag if there is one (trailing padding included).
    pub fn payload(&self) -> &[u8] {
        let start = self.header_len();
        &self.buffer.as_ref()[start..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the raw EtherType field (write `VLAN` to tag the frame).
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE.start, ethertype.0);
    }

    /// Sets the tag control information; the frame must be tagged.
    pub fn set_vlan(&mut self, tag: VlanTag) {
        write_u16(self.buffer.as_mut(), field::VLAN_TCI.start, tag.tci());
    }

    /// Sets the payload's EtherType, after the tag if there is one.
    pub fn set_payload_ethertype(&mut self, ethertype: EtherType) {
        let at = if self.has_vlan() {
            field::VLAN_ETHERTYPE.start
        } else {
            field::ETHERTYPE.start
        };
        write_u16(self.buffer.as_mut(), at, ethertype.0);
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source MAC address.
    pub src_addr: Address,
    /// Destination MAC address.
    pub dst_addr: Address,
    /// The 802.1Q tag, if any.
    pub vlan: Option<VlanTag>,
    /// The payload's EtherType (after the tag).
    pub ethertype: EtherType,
}

impl Repr {
    /// Reads the header of a frame; Ethernet has no checksum to verify here
    /// (the NIC strips and checks the FCS).
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr, DropReason> {
        frame.check_len()?;
        Ok(Repr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            vlan: frame.vlan(),
            ethertype: frame.payload_ethertype(),
        })
    }

    /// Header length this repr emits.
    pub const fn buffer_len(&self) -> usize {
        if self.vlan.is_some() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes the header; the frame must hold at least `buffer_len()` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        match self.vlan {
            Some(tag) => {
                frame.set_ethertype(EtherType::VLAN);
                frame.set_vlan(tag);
                frame.set_payload_ethertype(self.ethertype);
            }
            // Written directly: stale bytes must not be read as a tag.
            None => frame.set_ethertype(self.ethertype),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // dst 00:1b:21:aa:bb:cc, src 02:00:00:00:00:01, IPv4, 4 payload bytes.
    const UNTAGGED: [u8; 18] = [
        0x00, 0x1b, 0x21, 0xaa, 0xbb, 0xcc, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0xde,
        0xad, 0xbe, 0xef,
    ];

    // Same, tagged with PCP 5, DEI 0, VID 100, IPv6 payload.
    const TAGGED: [u8; 20] = [
        0x00, 0x1b, 0x21, 0xaa, 0xbb, 0xcc, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0xa0,
        0x64, 0x86, 0xdd, 0x60, 0x00,
    ];

    fn repr_untagged() -> Repr {
        Repr {
            dst_addr: Address([0x00, 0x1b, 0x21, 0xaa, 0xbb, 0xcc]),
            src_addr: Address([0x02, 0, 0, 0, 0, 0x01]),
            vlan: None,
            ethertype: EtherType::IPV4,
        }
    }

    #[test]
    fn parse_untagged() {
        let frame = Frame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(frame.header_len(), 14);
        assert_eq!(frame.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(frame.dst_addr().is_unicast());
        assert_eq!(Repr::parse(&frame).unwrap(), repr_untagged());
    }

    #[test]
    fn parse_tagged() {
        let frame = Frame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(frame.header_len(), 18);
        assert_eq!(frame.ethertype(), EtherType::VLAN);
        assert_eq!(frame.payload_ethertype(), EtherType::IPV6);
        assert_eq!(
            frame.vlan(),
            Some(VlanTag {
                pcp: 5,
                dei: false,
                vid: 100
            })
        );
        assert_eq!(frame.payload(), &[0x60, 0x00]);
        let repr = Repr::parse(&frame).unwrap();
        assert_eq!(repr.ethertype, EtherType::IPV6);
        assert_eq!(repr.buffer_len(), 18);
    }

    #[test]
    fn emit_round_trip() {
        let mut buf = [0u8; 18];
        let repr = repr_untagged();
        let mut frame = Frame::new_unchecked(&mut buf[..]);
        repr.emit(&mut frame);
        frame
            .payload_mut()
            .copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(buf, UNTAGGED);

        let mut buf = [0u8; 20];
        let repr = Repr::parse(&Frame::new_checked(&TAGGED[..]).unwrap()).unwrap();
        let mut frame = Frame::new_unchecked(&mut buf[..]);
        repr.emit(&mut frame);
        frame.payload_mut().copy_from_slice(&[0x60, 0x00]);
        assert_eq!(buf, TAGGED);
    }

    #[test]
    fn emit_untagged_over_stale_tag() {
        let mut buf = TAGGED;
        let mut frame = Frame::new_unchecked(&mut buf[..]);
        repr_untagged().emit(&mut frame);
        assert_eq!(&buf[..14], &UNTAGGED[..14]);
    }

    #[test]
    fn truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Frame::new_checked(&UNTAGGED[..n]).err(),
                Some(DropReason::Truncated)
            );
        }
        // Tag announced but cut short.
        for n in HEADER_LEN..VLAN_HEADER_LEN {
            assert_eq!(
                Frame::new_checked(&TAGGED[..n]).err(),
                Some(DropReason::Truncated)
            );
            assert_eq!(
                Repr::parse(&Frame::new_unchecked(&TAGGED[..n])),
                Err(DropReason::Truncated)
            );
        }
        assert!(Frame::new_checked(&TAGGED[..VLAN_HEADER_LEN]).is_ok());
    }

    #[test]
    fn addresses_and_tags() {
        assert!(Address::BROADCAST.is_broadcast());
        assert!(Address::BROADCAST.is_multicast());
        assert!(Address([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert_eq!(
            format!("{}", Address([0xde, 0xad, 0, 1, 2, 0xff])),
            "de:ad:00:01:02:ff"
        );
        let tag = VlanTag {
            pcp: 7,
            dei: true,
            vid: 4095,
        };
        assert_eq!(tag.tci(), 0xffff);
        assert_eq!(VlanTag::from_tci(0xffff), tag);
        assert_eq!(format!("{:?}", EtherType(0x88a8)), "EtherType(0x88a8)");
    }
}
