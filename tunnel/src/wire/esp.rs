//! ESP packet view (RFC 4303) with the AES-GCM layout of RFC 4106.
//!
//! ```text
//!  0                   1                   2                   3
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               Security Parameters Index (SPI)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Sequence Number (low 32 bits)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  IV (8 octets, RFC 4106 3.1)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~      Payload, Padding, Pad Length, Next Header (encrypted)    ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  ICV (16 octets, RFC 4106 6)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::fmt;

use crate::DropReason;

/// ESP header: SPI and low 32 bits of the sequence number (RFC 4303 section 2).
pub const HEADER_LEN: usize = 8;
/// Explicit IV carried by AES-GCM ESP (RFC 4106 section 3.1).
pub const IV_LEN: usize = 8;
/// Header plus IV: where the encrypted payload starts.
pub const PAYLOAD_OFFSET: usize = HEADER_LEN + IV_LEN;
/// Pad length and next header octets (RFC 4303 sections 2.5, 2.6).
pub const TRAILER_LEN: usize = 2;
/// Full 16-octet ICV; braid never uses the 8 or 12 octet ones (RFC 4106 section 6).
pub const ICV_LEN: usize = 16;
/// Most padding braid adds: 4-octet alignment only, GCM is a stream mode
/// (RFC 4303 section 2.4, RFC 4106 section 3.2).
pub const MAX_PAD: usize = 3;
/// Most bytes a seal writes after the payload: pad, trailer and ICV.
pub const MAX_TAIL: usize = MAX_PAD + TRAILER_LEN + ICV_LEN;
/// Shortest ESP packet that can be valid: empty payload, no padding.
pub const MIN_LEN: usize = PAYLOAD_OFFSET + TRAILER_LEN + ICV_LEN;

/// Next header values braid sends or accepts (IANA protocol numbers, RFC 4303 section 2.6).
pub mod next_header {
    /// IPv4 in tunnel mode.
    pub const IPV4: u8 = 4;
    /// IPv6 in tunnel mode.
    pub const IPV6: u8 = 41;
    /// "No next header": a dummy packet to be dropped (RFC 4303 section 2.6).
    pub const NONE: u8 = 59;
    /// braid's bundle payload. 253 is reserved for experimentation (RFC 3692).
    pub const BUNDLE: u8 = 253;
}

/// Security Parameters Index, the SA's name on the wire (RFC 4303 section 2.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Spi(pub u32);

impl fmt::Debug for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spi({:#010x})", self.0)
    }
}

mod field {
    use core::ops::Range;
    pub const SPI: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const IV: Range<usize> = 8..16;
}

/// Pad length for a payload so that payload plus trailer is a multiple of
/// four octets (RFC 4303 section 2.4).
pub const fn pad_len(payload_len: usize) -> usize {
    (4 - (payload_len + TRAILER_LEN) % 4) % 4
}

/// Length of the encrypted part (payload, padding, trailer) for a payload.
pub const fn encrypted_len(payload_len: usize) -> usize {
    payload_len + pad_len(payload_len) + TRAILER_LEN
}

/// Length of a whole ESP packet carrying `payload_len` octets.
pub const fn packet_len(payload_len: usize) -> usize {
    PAYLOAD_OFFSET + encrypted_len(payload_len) + ICV_LEN
}

/// A read/write view of an ESP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may then panic.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer that holds at least a minimal ESP packet.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, DropReason> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds header, IV, trailer and ICV.
    pub fn check_len(&self) -> Result<(), DropReason> {
        if self.buffer.as_ref().len() < MIN_LEN {
            Err(DropReason::EspTruncated)
        } else {
            Ok(())
        }
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Security Parameters Index.
    pub fn spi(&self) -> Spi {
        Spi(read_u32(&self.buffer.as_ref()[field::SPI]))
    }

    /// Low 32 bits of the sequence number; the high 32 are never sent (RFC 4303 section 2.2.1).
    pub fn seq_low(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SEQ])
    }

    /// The explicit IV.
    pub fn iv(&self) -> [u8; IV_LEN] {
        let mut iv = [0; IV_LEN];
        iv.copy_from_slice(&self.buffer.as_ref()[field::IV]);
        iv
    }

    /// Encrypted payload, padding and trailer.
    pub fn ciphertext(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[PAYLOAD_OFFSET..data.len() - ICV_LEN]
    }

    /// The ICV at the end of the packet.
    pub fn icv(&self) -> [u8; ICV_LEN] {
        let data = self.buffer.as_ref();
        let mut icv = [0; ICV_LEN];
        icv.copy_from_slice(&data[data.len() - ICV_LEN..]);
        icv
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the SPI.
    pub fn set_spi(&mut self, spi: Spi) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&spi.0.to_be_bytes());
    }

    /// Sets the low 32 bits of the sequence number.
    pub fn set_seq_low(&mut self, seq_low: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq_low.to_be_bytes());
    }

    /// Sets the explicit IV.
    pub fn set_iv(&mut self, iv: &[u8; IV_LEN]) {
        self.buffer.as_mut()[field::IV].copy_from_slice(iv);
    }
}

fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Writes padding 1, 2, 3, ... and the trailer after a payload; returns the
/// encrypted length. `plain` starts at the payload and must hold
/// [`encrypted_len`] octets (RFC 4303 sections 2.4 to 2.6).
pub fn write_trailer(
    plain: &mut [u8],
    payload_len: usize,
    next_header: u8,
) -> Result<usize, DropReason> {
    let pad = pad_len(payload_len);
    let total = encrypted_len(payload_len);
    let tail = plain
        .get_mut(payload_len..total)
        .ok_or(DropReason::EspNoTailroom)?;
    for (i, byte) in tail[..pad].iter_mut().enumerate() {
        *byte = i as u8 + 1;
    }
    tail[pad] = pad as u8;
    tail[pad + 1] = next_header;
    Ok(total)
}

/// Reads the trailer of decrypted ESP data; returns the payload length and
/// next header. Checks the pad length and the pad bytes 1, 2, 3, ...
pub fn parse_trailer(plain: &[u8]) -> Result<(usize, u8), DropReason> {
    let [.., pad_len, next_header] = *plain else {
        return Err(DropReason::EspTruncated);
    };
    let pad_len = usize::from(pad_len);
    let payload_len = plain
        .len()
        .checked_sub(TRAILER_LEN + pad_len)
        .ok_or(DropReason::EspPadTooLong)?;
    let pad = &plain[payload_len..payload_len + pad_len];
    if pad.iter().enumerate().any(|(i, &b)| b != (i + 1) as u8) {
        return Err(DropReason::EspBadPad);
    }
    Ok((payload_len, next_header))
}

#[cfg(test)]
mod tests {
    use super::*;

    // SPI 0x00004321, seq 0x0000000a, IV 0x0102030405060708, 2 bytes body, 16 ICV.
    static PACKET: [u8; 36] = [
        0x00, 0x00, 0x43, 0x21, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
        0x08, 0xaa, 0xbb, 0xcc, 0xdd, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19,
        0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
    ];

    #[test]
    fn parse_fields() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.spi(), Spi(0x4321));
        assert_eq!(p.seq_low(), 10);
        assert_eq!(p.iv(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p.ciphertext(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(p.icv()[0], 0x10);
        assert_eq!(format!("{:?}", p.spi()), "Spi(0x00004321)");
    }

    #[test]
    fn emit_fields() {
        let mut buf = [0u8; 36];
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.set_spi(Spi(0x4321));
        p.set_seq_low(10);
        p.set_iv(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&buf[..16], &PACKET[..16]);
    }

    #[test]
    fn truncated() {
        for len in 0..MIN_LEN {
            assert_eq!(
                Packet::new_checked(&PACKET[..len]).unwrap_err(),
                DropReason::EspTruncated
            );
        }
        assert!(Packet::new_checked(&PACKET[..MIN_LEN]).is_ok());
    }

    #[test]
    fn padding_aligns_to_four() {
        for len in 0..64 {
            assert_eq!((len + pad_len(len) + TRAILER_LEN) % 4, 0);
            assert!(pad_len(len) <= MAX_PAD);
            assert_eq!(packet_len(len), 16 + encrypted_len(len) + 16);
        }
        assert_eq!(pad_len(2), 0);
        assert_eq!(pad_len(0), 2);
        assert_eq!(pad_len(1), 1);
        assert_eq!(pad_len(3), 3);
    }

    #[test]
    fn trailer_round_trip() {
        for len in 0..20 {
            let mut buf = [0xeeu8; 32];
            let total = write_trailer(&mut buf, len, next_header::IPV6).unwrap();
            assert_eq!(total, encrypted_len(len));
            assert_eq!(parse_trailer(&buf[..total]), Ok((len, next_header::IPV6)));
        }
    }

    #[test]
    fn trailer_no_room() {
        let mut buf = [0u8; 7];
        // 3 payload octets need 3 pad octets and the trailer: 8.
        assert_eq!(
            write_trailer(&mut buf, 3, 4),
            Err(DropReason::EspNoTailroom)
        );
        assert_eq!(
            write_trailer(&mut buf, 9, 4),
            Err(DropReason::EspNoTailroom)
        );
        assert_eq!(write_trailer(&mut buf, 2, 4), Ok(4));
        assert_eq!(write_trailer(&mut [0u8; 8], 3, 4), Ok(8));
    }

    #[test]
    fn trailer_malformed() {
        assert_eq!(parse_trailer(&[]), Err(DropReason::EspTruncated));
        assert_eq!(parse_trailer(&[4]), Err(DropReason::EspTruncated));
        // Pad length 3 but only 1 byte before the trailer.
        assert_eq!(parse_trailer(&[1, 3, 4]), Err(DropReason::EspPadTooLong));
        // Pad bytes must count 1, 2, 3.
        assert_eq!(parse_trailer(&[9, 1, 3, 3, 4]), Err(DropReason::EspBadPad));
        assert_eq!(parse_trailer(&[9, 0, 2, 2, 4]), Err(DropReason::EspBadPad));
        // Pad covering the whole payload is fine: empty payload.
        assert_eq!(parse_trailer(&[1, 2, 2, 41]), Ok((0, 41)));
        // Padding longer than braid's own is allowed (RFC 4303 2.4, up to 255).
        let mut long = [0u8; 257];
        for (i, b) in long[..255].iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        long[255] = 255;
        long[256] = 4;
        assert_eq!(parse_trailer(&long), Ok((0, 4)));
    }
}
