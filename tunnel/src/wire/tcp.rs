//! TCP segment headers (RFC 9293 section 3.1): ports, sequence numbers,
//! flags and the checksum over the IPv4 or IPv6 pseudo-header. Options are
//! skipped, not parsed: the NAT and the flow key need only what is here.
//!
//! ```text
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! |           Checksum            |         Urgent Pointer        |
//! ```

use super::checksum;
use super::{read_u16, write_u16, AddrPair, IpProtocol};
use crate::DropReason;

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ: Field = 4..8;
    pub const ACK: Field = 8..12;
    pub const OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// TCP header length without options (data offset 5).
pub const HEADER_LEN: usize = field::URGENT.end;
/// Offset of the checksum field, for callers that patch a quoted header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// The TCP control bits (RFC 9293 section 3.1, RFC 3168 for CWR/ECE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;

    /// FIN set.
    pub const fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    /// SYN set.
    pub const fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    /// RST set.
    pub const fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    /// ACK set.
    pub const fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// A read/write view of a TCP segment.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer and checks the header fits.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the fixed header is present and `20 <= data offset * 4 <=
    /// buffer`; a data offset below 5 cannot hold the header and reads as
    /// `Truncated` too. The buffer should be exactly the IP payload.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN || hl > len {
            return Err(DropReason::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        let d = &self.buffer.as_ref()[field::SEQ];
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        let d = &self.buffer.as_ref()[field::ACK];
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    /// Header length in bytes, options included (data offset * 4).
    pub fn header_len(&self) -> usize {
        ((self.buffer.as_ref()[field::OFFSET] >> 4) as usize) * 4
    }

    /// The control bits.
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }

    /// Receive window.
    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW.start)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// The checksum over pseudo-header, header and payload (the whole
    /// buffer) verifies.
    pub fn verify_checksum(&self, addrs: &AddrPair) -> bool {
        let data = self.buffer.as_ref();
        checksum::add(
            addrs.pseudo_header_sum(IpProtocol::TCP, data.len() as u32),
            checksum::sum(data),
        ) == 0xffff
    }

    /// The payload, after the options.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, port);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, ack: u32) {
        self.buffer.as_mut()[field::ACK].copy_from_slice(&ack.to_be_bytes());
    }

    /// Sets the header length in bytes (a multiple of 4, 20..=60).
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::OFFSET];
        *b = (*b & 0x0f) | (((len / 4) as u8) << 4);
    }

    /// Sets the control bits.
    pub fn set_flags(&mut self, flags: Flags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    /// Sets the window.
    pub fn set_window(&mut self, window: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW.start, window);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT.start, value);
    }

    /// Computes and writes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self, addrs: &AddrPair) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let sum = checksum::add(
            addrs.pseudo_header_sum(IpProtocol::TCP, data.len() as u32),
            checksum::sum(data),
        );
        self.set_checksum(!sum);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed TCP header (options are not kept; `emit` writes 20 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Control bits.
    pub flags: Flags,
    /// Window.
    pub window: u16,
    /// Payload length (after the options).
    pub payload_len: usize,
}

impl Repr {
    /// Checks lengths and, when `verify` (`false` when the NIC already
    /// did), the checksum. A checksum that does not verify gives `Ok(None)`:
    /// `DropReason` has no TCP variant, so callers count it themselves.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        addrs: &AddrPair,
        verify: bool,
    ) -> Result<Option<Repr>, DropReason> {
        packet.check_len()?;
        if verify && !packet.verify_checksum(addrs) {
            return Ok(None);
        }
        Ok(Some(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq: packet.seq_number(),
            ack: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window(),
            payload_len: packet.payload().len(),
        }))
    }

    /// Header length this repr emits.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header in front of a payload already in place and
    /// fills the checksum; the packet must be exactly `20 + payload_len`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>, addrs: &AddrPair) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq);
        packet.set_ack_number(self.ack);
        packet.buffer.as_mut()[field::OFFSET] = 0;
        packet.set_header_len(HEADER_LEN);
        packet.set_flags(self.flags);
        packet.set_window(self.window);
        packet.set_urgent(0);
        packet.fill_checksum(addrs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    // A SYN laid out as Linux sends one (written by hand, checksum filled
    // below): 50000 -> 80, MSS 1460, SACK-permitted, timestamps, NOP,
    // window scale 7.
    const SYN: [u8; 40] = [
        0xc3, 0x50, 0x00, 0x50, 0x6a, 0x1e, 0x0b, 0x41, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0x00, 0x00, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01,
        0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    fn addrs() -> AddrPair {
        AddrPair::V4 {
            src: Ipv4Addr::new(192, 168, 1, 1),
            dst: Ipv4Addr::new(192, 168, 1, 2),
        }
    }

    fn syn_with_checksum() -> [u8; 40] {
        let mut b = SYN;
        Packet::new_unchecked(&mut b[..]).fill_checksum(&addrs());
        b
    }

    #[test]
    fn fields() {
        let b = syn_with_checksum();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.src_port(), 50000);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x6a1e0b41);
        assert_eq!(p.header_len(), 40);
        assert!(p.flags().syn() && !p.flags().ack() && !p.flags().fin());
        assert_eq!(p.window(), 64240);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum(&addrs()));
        let r = Repr::parse(&p, &addrs(), true).unwrap().unwrap();
        assert_eq!(r.flags, Flags(Flags::SYN));
        assert_eq!(r.payload_len, 0);
    }

    #[test]
    fn checksum_matches_reference_sum() {
        // Independent computation: pseudo-header bytes + segment, RFC 1071.
        let b = syn_with_checksum();
        let mut all = Vec::new();
        all.extend_from_slice(&[192, 168, 1, 1, 192, 168, 1, 2, 0, 6, 0, 40]);
        all.extend_from_slice(&b);
        assert_eq!(checksum::sum(&all), 0xffff);
    }

    #[test]
    fn emit_round_trip() {
        let r = Repr {
            src_port: 1234,
            dst_port: 443,
            seq: 1,
            ack: 2,
            flags: Flags(Flags::ACK | Flags::PSH),
            window: 1000,
            payload_len: 3,
        };
        let mut b = [0u8; 23];
        b[20..].copy_from_slice(b"abc");
        r.emit(&mut Packet::new_unchecked(&mut b[..]), &addrs());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p, &addrs(), true), Ok(Some(r)));
        b[21] ^= 1;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p, &addrs(), true), Ok(None));
        assert!(Repr::parse(&p, &addrs(), false).unwrap().is_some());
    }

    #[test]
    fn malformed() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&SYN[..n]).err(),
                Some(DropReason::Truncated)
            );
        }
        // Options past the buffer.
        assert_eq!(
            Packet::new_checked(&SYN[..39]).err(),
            Some(DropReason::Truncated)
        );
        // Data offset below 5.
        let mut b = SYN;
        b[12] = 0x40;
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::Truncated)
        );
    }

    #[test]
    fn incremental_port_and_address_update() {
        let mut b = syn_with_checksum();
        let mut p = Packet::new_unchecked(&mut b[..]);
        let c = checksum::update_u16(p.checksum(), 50000, 61000);
        let c = checksum::update_u32(
            c,
            u32::from(Ipv4Addr::new(192, 168, 1, 1)),
            u32::from(Ipv4Addr::new(203, 0, 113, 9)),
        );
        p.set_src_port(61000);
        p.set_checksum(c);
        let new = AddrPair::V4 {
            src: Ipv4Addr::new(203, 0, 113, 9),
            dst: Ipv4Addr::new(192, 168, 1, 2),
        };
        assert!(p.verify_checksum(&new));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = Repr::parse(&p, &addrs(), true);
                let _ = p.payload();
            }
            if let Ok(p) = super::super::arp::Packet::new_checked(&data[..]) {
                let _ = super::super::arp::Repr::parse(&p);
            }
            if let Ok(p) = super::super::icmpv4::Packet::new_checked(&data[..]) {
                let _ = super::super::icmpv4::Repr::parse(&p, true);
            }
        }
    }
}
