//! UDP encapsulation of ESP (RFC 3948): telling apart, on the ESP-in-UDP
//! port, a NAT-keepalive, an IKE message behind the non-ESP marker, and ESP.

use crate::DropReason;

/// The IKE NAT-traversal port where ESP-in-UDP is expected (RFC 3948 section 2).
pub const PORT: u16 = 4500;
/// The single octet of a NAT-keepalive packet (RFC 3948 section 2.3).
pub const KEEPALIVE: u8 = 0xff;
/// Length of the zero non-ESP marker before an IKE message (RFC 3948 section 2.2).
pub const NON_ESP_MARKER_LEN: usize = 4;
/// The ESP header a UDP payload must at least hold: SPI and sequence number
/// (RFC 4303 section 2). The ESP module checks the full minimum.
pub const ESP_HEADER_LEN: usize = 8;

/// What a UDP payload on the ESP-in-UDP port carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapKind<'a> {
    /// A NAT-keepalive: nothing to deliver, it only kept a NAT binding alive.
    Keepalive,
    /// An IKE message after the non-ESP marker; not for the dataplane.
    NonEsp(&'a [u8]),
    /// An ESP packet (SPI non-zero, header present), from the SPI on.
    Esp(&'a [u8]),
}

/// Classifies a UDP payload received on the ESP-in-UDP port. A one-octet
/// 0xff is a keepalive; four zero octets are the non-ESP marker (an SPI of
/// zero is reserved, RFC 4303 section 2.1); anything else must hold an ESP
/// header, or it is a `Runt`.
pub fn classify(payload: &[u8]) -> Result<EncapKind<'_>, DropReason> {
    match payload {
        [KEEPALIVE] => Ok(EncapKind::Keepalive),
        [0, 0, 0, 0, ike @ ..] => Ok(EncapKind::NonEsp(ike)),
        esp if esp.len() >= ESP_HEADER_LEN => Ok(EncapKind::Esp(esp)),
        _ => Err(DropReason::Runt),
    }
}

/// Writes a NAT-keepalive payload; returns its length, 1.
pub fn emit_keepalive(buf: &mut [u8]) -> Result<usize, DropReason> {
    let first = buf.first_mut().ok_or(DropReason::Truncated)?;
    *first = KEEPALIVE;
    Ok(1)
}

/// Writes the non-ESP marker; the IKE message goes after it. Returns 4.
pub fn emit_non_esp_marker(buf: &mut [u8]) -> Result<usize, DropReason> {
    let marker = buf
        .get_mut(..NON_ESP_MARKER_LEN)
        .ok_or(DropReason::Truncated)?;
    marker.fill(0);
    Ok(NON_ESP_MARKER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive() {
        assert_eq!(classify(&[0xff]), Ok(EncapKind::Keepalive));
        let mut buf = [0u8; 1];
        assert_eq!(emit_keepalive(&mut buf), Ok(1));
        assert_eq!(classify(&buf), Ok(EncapKind::Keepalive));
        assert_eq!(emit_keepalive(&mut []), Err(DropReason::Truncated));
    }

    #[test]
    fn non_esp_marker() {
        // Marker then the start of an IKE header (initiator SPI).
        let pkt = [0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44];
        assert_eq!(classify(&pkt), Ok(EncapKind::NonEsp(&pkt[4..])));
        assert_eq!(classify(&[0, 0, 0, 0]), Ok(EncapKind::NonEsp(&[])));
        let mut buf = [0xaau8; 6];
        assert_eq!(emit_non_esp_marker(&mut buf), Ok(4));
        assert_eq!(buf, [0, 0, 0, 0, 0xaa, 0xaa]);
        assert_eq!(emit_non_esp_marker(&mut [0; 3]), Err(DropReason::Truncated));
    }

    #[test]
    fn esp() {
        let pkt = [0x00, 0x00, 0x10, 0x01, 0, 0, 0, 1, 0xde, 0xad];
        assert_eq!(classify(&pkt), Ok(EncapKind::Esp(&pkt[..])));
        // A long payload starting 0xff is ESP with a large SPI.
        let pkt = [0xff, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(classify(&pkt), Ok(EncapKind::Esp(&pkt[..])));
    }

    #[test]
    fn runts() {
        assert_eq!(classify(&[]), Err(DropReason::Runt));
        assert_eq!(classify(&[0]), Err(DropReason::Runt));
        assert_eq!(classify(&[0xff, 0xff]), Err(DropReason::Runt));
        assert_eq!(classify(&[0, 0, 0]), Err(DropReason::Runt));
        assert_eq!(classify(&[0, 0, 0, 1, 0, 0, 0]), Err(DropReason::Runt));
    }
}
