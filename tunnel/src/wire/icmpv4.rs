//! ICMP for IPv4 (RFC 792): echo queries and the error messages that quote
//! the IP header and first bytes of the packet that caused them.
//!
//! ```text
//! |     Type      |     Code      |          Checksum             |
//! |     Identifier (echo) / unused / MTU (RFC 1191)               |
//! |     data, or the quoted IP header + at least 8 bytes (RFC 792)|
//! ```

use super::checksum;
use super::{read_u16, write_u16};
use crate::DropReason;

mod field {
    use crate::wire::{Field, Rest};

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ: Field = 6..8;
    pub const DATA: Rest = 8..;
}

/// ICMP header length: type, code, checksum and the 4-byte rest of header.
pub const HEADER_LEN: usize = field::DATA.start;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;
/// Offset of the echo identifier.
pub const IDENT_OFFSET: usize = field::ECHO_IDENT.start;

/// ICMP message types used here (IANA "ICMP Type Numbers").
pub mod kind {
    /// Echo reply (RFC 792).
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (RFC 792).
    pub const DST_UNREACHABLE: u8 = 3;
    /// Source quench, deprecated (RFC 6633) but still an error quoting a packet.
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect (RFC 792).
    pub const REDIRECT: u8 = 5;
    /// Echo request (RFC 792).
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (RFC 792).
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem (RFC 792).
    pub const PARAM_PROBLEM: u8 = 12;
    /// Timestamp request (RFC 792).
    pub const TIMESTAMP: u8 = 13;
    /// Timestamp reply (RFC 792).
    pub const TIMESTAMP_REPLY: u8 = 14;
}

/// An error message: its data quotes the packet that caused it.
pub const fn is_error(ty: u8) -> bool {
    matches!(
        ty,
        kind::DST_UNREACHABLE
            | kind::SOURCE_QUENCH
            | kind::REDIRECT
            | kind::TIME_EXCEEDED
            | kind::PARAM_PROBLEM
    )
}

/// A query with an identifier in bytes 4..6 (echo, timestamp, information,
/// address mask: RFC 792, RFC 950), which a NAT maps like a port.
pub const fn is_query(ty: u8) -> bool {
    matches!(ty, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
}

/// A query request (as opposed to its reply).
pub const fn is_query_request(ty: u8) -> bool {
    matches!(ty, 8 | 13 | 15 | 17)
}

/// A read/write view of an ICMP message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer and checks the 8-byte header is present.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the 8-byte header is present. The buffer should be exactly the
    /// IP payload: the checksum covers all of it.
    pub fn check_len(&self) -> Result<(), DropReason> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Query identifier (echo and other queries).
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Query sequence number.
    pub fn echo_seq(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQ.start)
    }

    /// Next-hop MTU of a "fragmentation needed" (RFC 1191 section 4).
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQ.start)
    }

    /// The checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(self.buffer.as_ref())
    }

    /// Echo data, or an error's quoted packet.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the type.
    pub fn set_msg_type(&mut self, ty: u8) {
        self.buffer.as_mut()[field::TYPE] = ty;
    }

    /// Sets the code.
    pub fn set_msg_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets the query identifier.
    pub fn set_echo_ident(&mut self, id: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT.start, id);
    }

    /// Sets the query sequence number.
    pub fn set_echo_seq(&mut self, seq: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQ.start, seq);
    }

    /// Sets the 4 bytes after the checksum (zero for most errors).
    pub fn set_rest_of_header(&mut self, rest: [u8; 4]) {
        self.buffer.as_mut()[4..8].copy_from_slice(&rest);
    }

    /// Computes and writes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::sum(self.buffer.as_ref());
        self.set_checksum(!sum);
    }

    /// Echo data or quoted packet, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed ICMP message header; data stays in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr {
    /// Echo request (8) or reply (0) with its identifier and sequence.
    Echo {
        /// Request, or reply.
        request: bool,
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Data length.
        data_len: usize,
    },
    /// An error message quoting `data_len` bytes of the offending packet.
    Error {
        /// Type (3, 4, 5, 11 or 12).
        ty: u8,
        /// Code.
        code: u8,
        /// The 4 bytes after the checksum (unused, MTU, pointer, gateway).
        rest: [u8; 4],
        /// Quoted bytes.
        data_len: usize,
    },
    /// Any other type, not interpreted.
    Other {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
    },
}

impl Repr {
    /// Checks the length and, when `verify`, the checksum; `Ok(None)` when it
    /// does not verify (`DropReason` has no ICMP variant; callers count it).
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        verify: bool,
    ) -> Result<Option<Repr>, DropReason> {
        packet.check_len()?;
        if verify && !packet.verify_checksum() {
            return Ok(None);
        }
        let data_len = packet.data().len();
        let ty = packet.msg_type();
        Ok(Some(match ty {
            kind::ECHO_REQUEST | kind::ECHO_REPLY => Repr::Echo {
                request: ty == kind::ECHO_REQUEST,
                ident: packet.echo_ident(),
                seq: packet.echo_seq(),
                data_len,
            },
            t if is_error(t) => {
                let b = packet.buffer.as_ref();
                Repr::Error {
                    ty,
                    code: packet.msg_code(),
                    rest: [b[4], b[5], b[6], b[7]],
                    data_len,
                }
            }
            _ => Repr::Other {
                ty,
                code: packet.msg_code(),
            },
        }))
    }

    /// Header length this repr emits.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header over data already in place and fills the checksum.
    /// `Other` writes type and code with a zero rest of header.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        match *self {
            Repr::Echo {
                request,
                ident,
                seq,
                ..
            } => {
                packet.set_msg_type(if request {
                    kind::ECHO_REQUEST
                } else {
                    kind::ECHO_REPLY
                });
                packet.set_msg_code(0);
                packet.set_echo_ident(ident);
                packet.set_echo_seq(seq);
            }
            Repr::Error { ty, code, rest, .. } => {
                packet.set_msg_type(ty);
                packet.set_msg_code(code);
                packet.set_rest_of_header(rest);
            }
            Repr::Other { ty, code } => {
                packet.set_msg_type(ty);
                packet.set_msg_code(code);
                packet.set_rest_of_header([0; 4]);
            }
        }
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `ping -p 61 -s 8` style echo request: id 0x1234, seq 1, data
    // "aaaaaaaa", checksum field zero (filled by the tests).
    const ECHO: [u8; 16] = [
        0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x00, 0x01, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61,
        0x61,
    ];

    #[test]
    fn echo_round_trip() {
        let mut b = ECHO;
        Packet::new_unchecked(&mut b[..]).fill_checksum();
        let p = Packet::new_checked(&b[..]).unwrap();
        // By hand: 0x0800 + 0x1234 + 0x0001 + 4 * 0x6161 = 0x19fb9,
        // folded 0x9fba, complemented 0x6045.
        assert_eq!(p.checksum(), 0x6045);
        assert!(p.verify_checksum());
        let r = Repr::parse(&p, true).unwrap().unwrap();
        assert_eq!(
            r,
            Repr::Echo {
                request: true,
                ident: 0x1234,
                seq: 1,
                data_len: 8
            }
        );
        let mut c = ECHO;
        r.emit(&mut Packet::new_unchecked(&mut c[..]));
        assert_eq!(b, c);
        c[9] = 0;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&c[..]), true), Ok(None));
    }

    #[test]
    fn error_quotes_packet() {
        // Port unreachable quoting a 20-byte IPv4 header + 8 UDP bytes.
        let mut b = [0u8; 36];
        b[0] = kind::DST_UNREACHABLE;
        b[1] = 3;
        b[8] = 0x45;
        Packet::new_unchecked(&mut b[..]).fill_checksum();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.data().len(), 28);
        assert_eq!(p.data()[0], 0x45);
        assert!(matches!(
            Repr::parse(&p, true),
            Ok(Some(Repr::Error {
                ty: 3,
                code: 3,
                data_len: 28,
                ..
            }))
        ));
        assert!(is_error(3) && is_error(11) && !is_error(8) && !is_error(0));
        assert!(is_query(8) && is_query(0) && !is_query(3));
    }

    #[test]
    fn truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&ECHO[..n]).err(),
                Some(DropReason::Truncated)
            );
        }
    }
}
