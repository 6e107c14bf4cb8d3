//! ARP for IPv4 over Ethernet (RFC 826): the only hardware and protocol
//! pair a gateway's ports speak. Other pairs are rejected at parse.
//!
//! ```text
//! | HTYPE = 1 (Ethernet)          | PTYPE = 0x0800 (IPv4)         |
//! | HLEN = 6      | PLEN = 4      | OPER (1 request, 2 reply)     |
//! | sender hardware address (6) | sender protocol address (4)     |
//! | target hardware address (6) | target protocol address (4)     |
//! ```

use core::net::Ipv4Addr;

use super::ethernet::{Address, EtherType};
use super::{read_u16, write_u16};
use crate::DropReason;

mod field {
    use crate::wire::Field;

    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;
/// Hardware type Ethernet (IANA "Hardware Types").
pub const HTYPE_ETHERNET: u16 = 1;

/// ARP operation (RFC 826).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Who has the target protocol address?
    Request,
    /// The sender has the sender protocol address.
    Reply,
}

/// A read/write view of an ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn addr4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn mac(b: &[u8]) -> Address {
    let mut a = [0u8; 6];
    a.copy_from_slice(b);
    Address(a)
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer and checks 28 bytes are present (Ethernet padding
    /// after them is allowed).
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let packet = Self::new_unchecked(buffer);
        if packet.buffer.as_ref().len() < PACKET_LEN {
            return Err(DropReason::Truncated);
        }
        Ok(packet)
    }

    /// Hardware type.
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE.start)
    }
    /// Protocol type (an EtherType).
    pub fn protocol_type(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::PTYPE.start))
    }
    /// Hardware address length.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }
    /// Protocol address length.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }
    /// Raw operation code.
    pub fn operation(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::OPER.start)
    }
    /// Sender hardware address.
    pub fn sender_hw(&self) -> Address {
        mac(&self.buffer.as_ref()[field::SHA])
    }
    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        addr4(&self.buffer.as_ref()[field::SPA])
    }
    /// Target hardware address.
    pub fn target_hw(&self) -> Address {
        mac(&self.buffer.as_ref()[field::THA])
    }
    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        addr4(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes the fixed Ethernet/IPv4 header fields and the operation.
    pub fn set_header(&mut self, op: Operation) {
        let b = self.buffer.as_mut();
        write_u16(b, field::HTYPE.start, HTYPE_ETHERNET);
        write_u16(b, field::PTYPE.start, EtherType::IPV4.0);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        let code = match op {
            Operation::Request => 1,
            Operation::Reply => 2,
        };
        write_u16(b, field::OPER.start, code);
    }
    /// Sets the sender addresses.
    pub fn set_sender(&mut self, hw: Address, ip: Ipv4Addr) {
        let b = self.buffer.as_mut();
        b[field::SHA].copy_from_slice(&hw.0);
        b[field::SPA].copy_from_slice(&ip.octets());
    }
    /// Sets the target addresses.
    pub fn set_target(&mut self, hw: Address, ip: Ipv4Addr) {
        let b = self.buffer.as_mut();
        b[field::THA].copy_from_slice(&hw.0);
        b[field::TPA].copy_from_slice(&ip.octets());
    }
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Request or reply.
    pub op: Operation,
    /// Sender MAC.
    pub sender_hw: Address,
    /// Sender IPv4 address.
    pub sender_ip: Ipv4Addr,
    /// Target MAC (zero in a request).
    pub target_hw: Address,
    /// Target IPv4 address.
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// Parses an Ethernet/IPv4 request or reply; `Ok(None)` for other
    /// hardware or protocol types or operations (not ours to answer).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Option<Repr>, DropReason> {
        if packet.buffer.as_ref().len() < PACKET_LEN {
            return Err(DropReason::Truncated);
        }
        if packet.hardware_type() != HTYPE_ETHERNET
            || packet.protocol_type() != EtherType::IPV4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Ok(None);
        }
        let op = match packet.operation() {
            1 => Operation::Request,
            2 => Operation::Reply,
            _ => return Ok(None),
        };
        Ok(Some(Repr {
            op,
            sender_hw: packet.sender_hw(),
            sender_ip: packet.sender_ip(),
            target_hw: packet.target_hw(),
            target_ip: packet.target_ip(),
        }))
    }

    /// Bytes this repr emits.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Gratuitous: the sender announces its own address (RFC 5227 section 3).
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// Writes the packet; the buffer must hold `PACKET_LEN` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_header(self.op);
        packet.set_sender(self.sender_hw, self.sender_ip);
        packet.set_target(self.target_hw, self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 192.168.1.1? Tell 192.168.1.100 (00:0c:29:12:34:56), laid
    // out by hand from RFC 826's packet format.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x00, 0x0c, 0x29, 0x12, 0x34, 0x56, 192,
        168, 1, 100, 0, 0, 0, 0, 0, 0, 192, 168, 1, 1,
    ];

    #[test]
    fn request_parse_emit() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        let r = Repr::parse(&p).unwrap().unwrap();
        assert_eq!(r.op, Operation::Request);
        assert_eq!(r.sender_hw, Address([0x00, 0x0c, 0x29, 0x12, 0x34, 0x56]));
        assert_eq!(r.sender_ip, Ipv4Addr::new(192, 168, 1, 100));
        assert_eq!(r.target_ip, Ipv4Addr::new(192, 168, 1, 1));
        assert!(!r.is_gratuitous());
        let mut b = [0u8; 28];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, REQUEST);
    }

    #[test]
    fn rejects_other_types() {
        for n in 0..PACKET_LEN {
            assert_eq!(
                Packet::new_checked(&REQUEST[..n]).err(),
                Some(DropReason::Truncated)
            );
        }
        let mut b = REQUEST;
        b[1] = 6; // IEEE 802 hardware
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(None));
        let mut b = REQUEST;
        b[7] = 3; // RARP request
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(None));
        let mut b = REQUEST;
        b[5] = 16;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(None));
    }
}
