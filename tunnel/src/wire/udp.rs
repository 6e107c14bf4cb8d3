//! UDP datagrams (RFC 768) and their checksum over the IPv4 or IPv6
//! pseudo-header.
//!
//! Receive rules: over IPv4 a zero checksum means "none" (RFC 768). Over
//! IPv6 a zero checksum is invalid (RFC 8200 section 8.1) unless
//! `ChecksumCaps::udp6_zero_rx` is set, for tunnels that opt in to RFC 6936;
//! this rule holds even when the NIC verifies checksums. Transmit always
//! sends a real checksum: a computed zero goes out as 0xffff (RFC 768).

use super::checksum::{self, ChecksumCaps};
use super::{read_u16, write_u16, AddrPair, IpProtocol};
use crate::DropReason;

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// UDP header length (RFC 768).
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer and checks the lengths.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks 8 bytes are present (`Truncated`) and `8 <= length <= buffer`
    /// (`BadUdpLen`). The buffer should be the IP payload, so that bytes past
    /// the UDP length are IP-level garbage, not link padding.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let udp_len = self.len() as usize;
        if udp_len < HEADER_LEN || udp_len > len {
            return Err(DropReason::BadUdpLen);
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

    /// Length field: header plus payload.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The checksum over the pseudo-header and the datagram verifies. A zero
    /// field is not special here; [`Repr::parse`] applies the zero rules.
    pub fn verify_checksum(&self, addrs: &AddrPair) -> bool {
        let len = self.len();
        let data = &self.buffer.as_ref()[..len as usize];
        let sum = checksum::add(
            addrs.pseudo_header_sum(IpProtocol::UDP, len as u32),
            checksum::sum(data),
        );
        sum == 0xffff
    }

    /// The payload, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.len() as usize]
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

    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Computes and writes the checksum over the pseudo-header, header and
    /// payload (as far as the length field says); zero goes out as 0xffff.
    pub fn fill_checksum(&mut self, addrs: &AddrPair) {
        self.set_checksum(0);
        let len = self.len();
        let sum = checksum::add(
            addrs.pseudo_header_sum(IpProtocol::UDP, len as u32),
            checksum::sum(&self.buffer.as_ref()[..len as usize]),
        );
        self.set_checksum(match !sum {
            0 => 0xffff,
            c => c,
        });
    }

    /// Writes the pseudo-header sum alone, as DPDK's L4 checksum offload
    /// expects before the NIC adds the rest (`rte_ipv4_phdr_cksum`).
    pub fn fill_pseudo_header_checksum(&mut self, addrs: &AddrPair) {
        let len = self.len();
        self.set_checksum(addrs.pseudo_header_sum(IpProtocol::UDP, len as u32));
    }

    /// The payload, mutable, bounded by the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.len() as usize;
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length (length field minus 8).
    pub payload_len: usize,
}

impl Repr {
    /// Checks lengths and the checksum, by the rules in the module doc.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        addrs: &AddrPair,
        caps: &ChecksumCaps,
    ) -> Result<Repr, DropReason> {
        packet.check_len()?;
        let zero = packet.checksum() == 0;
        match addrs {
            // RFC 768: zero means the sender computed none.
            AddrPair::V4 { .. } if zero => {}
            AddrPair::V6 { .. } if zero => {
                if !caps.udp6_zero_rx {
                    return Err(DropReason::UdpZeroChecksum);
                }
            }
            _ => {
                if caps.udp.rx() && !packet.verify_checksum(addrs) {
                    return Err(DropReason::BadUdpChecksum);
                }
            }
        }
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.len() as usize - HEADER_LEN,
        })
    }

    /// Header length this repr emits.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header. The payload must already be in place (the
    /// checksum covers it), the packet must hold `8 + payload_len` bytes and
    /// that must fit 16 bits. When the NIC fills the checksum, the field gets
    /// the pseudo-header sum it expects.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        addrs: &AddrPair,
        caps: &ChecksumCaps,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len((HEADER_LEN + self.payload_len) as u16);
        if caps.udp.tx() {
            packet.fill_checksum(addrs);
        } else {
            packet.fill_pseudo_header_checksum(addrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::Checksum;
    use core::net::{Ipv4Addr, Ipv6Addr};

    fn v4() -> AddrPair {
        AddrPair::V4 {
            src: Ipv4Addr::new(192, 168, 1, 1),
            dst: Ipv4Addr::new(192, 168, 1, 2),
        }
    }

    fn v6() -> AddrPair {
        AddrPair::V6 {
            src: "2001:db8::1".parse::<Ipv6Addr>().unwrap(),
            dst: "2001:db8::2".parse::<Ipv6Addr>().unwrap(),
        }
    }

    // 4500 -> 4500, 4-byte payload "ping", checksum computed by hand:
    // pseudo 0xc0a8+0x0101+0xc0a8+0x0102+0x0011+0x000c = 0x8371 (folded)
    // udp    0x1194+0x1194+0x000c+0x7069+0x6e67 = 0x0205 (folded)
    // sum 0x8576, checksum !sum = 0x7a89.
    const V4_DATAGRAM: [u8; 12] = [
        0x11, 0x94, 0x11, 0x94, 0x00, 0x0c, 0x7a, 0x89, b'p', b'i', b'n', b'g',
    ];

    #[test]
    fn parse_v4_known_checksum() {
        let p = Packet::new_checked(&V4_DATAGRAM[..]).unwrap();
        assert_eq!(p.src_port(), 4500);
        assert_eq!(p.dst_port(), 4500);
        assert_eq!(p.len(), 12);
        assert_eq!(p.payload(), b"ping");
        assert!(p.verify_checksum(&v4()));
        let repr = Repr::parse(&p, &v4(), &ChecksumCaps::default()).unwrap();
        assert_eq!(
            repr,
            Repr {
                src_port: 4500,
                dst_port: 4500,
                payload_len: 4
            }
        );
    }

    #[test]
    fn emit_round_trip_v4_and_v6() {
        let repr = Repr {
            src_port: 4500,
            dst_port: 4500,
            payload_len: 4,
        };
        let mut buf = [0u8; 12];
        buf[8..].copy_from_slice(b"ping");
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut p, &v4(), &ChecksumCaps::default());
        assert_eq!(buf, V4_DATAGRAM);

        let mut buf = [0u8; 13];
        buf[8..].copy_from_slice(b"pong!");
        let repr = Repr {
            src_port: 1,
            dst_port: 2,
            payload_len: 5,
        };
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut p, &v6(), &ChecksumCaps::default());
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(&v6()));
        assert_eq!(Repr::parse(&p, &v6(), &ChecksumCaps::default()), Ok(repr));
        // The same bytes do not verify against other addresses.
        assert!(!p.verify_checksum(&v4()));
    }

    #[test]
    fn computed_zero_goes_out_as_ffff() {
        // Find a payload word that makes the checksum come out zero.
        let repr = Repr {
            src_port: 1,
            dst_port: 2,
            payload_len: 2,
        };
        let mut buf = [0u8; 10];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut p, &v4(), &ChecksumCaps::default());
        // Payload zero; the field now holds !sum. Put that sum's
        // complement in the payload so the whole sums to 0xffff with
        // a zero field.
        let c = p.checksum();
        p.payload_mut().copy_from_slice(&c.to_be_bytes());
        p.fill_checksum(&v4());
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(&v4()));
    }

    #[test]
    fn nic_fills_checksum() {
        let caps = ChecksumCaps {
            udp: Checksum::Rx,
            ..ChecksumCaps::default()
        };
        let repr = Repr {
            src_port: 4500,
            dst_port: 4500,
            payload_len: 4,
        };
        let mut buf = [0u8; 12];
        buf[8..].copy_from_slice(b"ping");
        repr.emit(&mut Packet::new_unchecked(&mut buf[..]), &v4(), &caps);
        // Pseudo-header sum 0x8371, from the hand computation above.
        assert_eq!(&buf[6..8], &[0x83, 0x71]);
    }

    #[test]
    fn truncated_and_bad_len() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&V4_DATAGRAM[..n]).err(),
                Some(DropReason::Truncated)
            );
        }
        // Length past the buffer.
        assert_eq!(
            Packet::new_checked(&V4_DATAGRAM[..11]).err(),
            Some(DropReason::BadUdpLen)
        );
        // Length below the header.
        let mut b = V4_DATAGRAM;
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).err(),
            Some(DropReason::BadUdpLen)
        );
        assert_eq!(
            Repr::parse(
                &Packet::new_unchecked(&b[..]),
                &v4(),
                &ChecksumCaps::default()
            ),
            Err(DropReason::BadUdpLen)
        );
        // Shorter length than the buffer: the rest is not payload.
        b[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap().payload(), b"");
    }

    #[test]
    fn bad_checksum() {
        let mut b = V4_DATAGRAM;
        b[8] = b'P';
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            Repr::parse(&p, &v4(), &ChecksumCaps::default()),
            Err(DropReason::BadUdpChecksum)
        );
        // The NIC verified it: software does not look.
        assert!(Repr::parse(&p, &v4(), &ChecksumCaps::offloaded()).is_ok());
    }

    #[test]
    fn zero_checksum_rules() {
        let mut b = V4_DATAGRAM;
        b[6] = 0;
        b[7] = 0;
        let p = Packet::new_checked(&b[..]).unwrap();
        // IPv4: zero means none.
        assert!(Repr::parse(&p, &v4(), &ChecksumCaps::default()).is_ok());
        // IPv6: invalid, even with offload, unless the caps allow it.
        assert_eq!(
            Repr::parse(&p, &v6(), &ChecksumCaps::default()),
            Err(DropReason::UdpZeroChecksum)
        );
        assert_eq!(
            Repr::parse(&p, &v6(), &ChecksumCaps::offloaded()),
            Err(DropReason::UdpZeroChecksum)
        );
        let caps = ChecksumCaps {
            udp6_zero_rx: true,
            ..ChecksumCaps::default()
        };
        assert!(Repr::parse(&p, &v6(), &caps).is_ok());
    }
}
