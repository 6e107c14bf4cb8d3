//! Plain ESP tunnel mode: one inner IPv4 or IPv6 packet per ESP packet,
//! next header 4 or 41 (RFC 4303 section 3.1.2). This is what any standard
//! ESP peer speaks; braid's bundles are the other payload.

use crate::crypto::Aead;
use crate::sa::{EspReceiver, Opened, OutboundSa, SeqBlock};
use crate::wire::esp::{next_header, PAYLOAD_OFFSET};
use crate::{DropReason, Nanos};

/// The next header for an inner packet, from its version nibble.
fn next_header_of(inner: &[u8]) -> Result<u8, DropReason> {
    match inner.first().map(|b| b >> 4) {
        None => Err(DropReason::Truncated),
        Some(4) => Ok(next_header::IPV4),
        Some(6) => Ok(next_header::IPV6),
        Some(_) => Err(DropReason::BadIpVersion),
    }
}

/// Encrypts the inner IP packet at `buf[16..16 + inner_len]` in place and
/// returns the ESP length. `buf[..16]` is headroom for the ESP header and IV;
/// after the inner packet there must be [`MAX_TAIL`](crate::wire::esp::MAX_TAIL)
/// octets of tailroom.
#[inline]
pub fn encapsulate<A: Aead>(
    sa: &OutboundSa<A>,
    block: &mut SeqBlock,
    buf: &mut [u8],
    inner_len: usize,
) -> Result<usize, DropReason> {
    let inner = buf
        .get(PAYLOAD_OFFSET..PAYLOAD_OFFSET.saturating_add(inner_len))
        .ok_or(DropReason::EspNoTailroom)?;
    let next_header = next_header_of(inner)?;
    sa.seal(block, buf, inner_len, next_header)
}

/// Decrypts an ESP packet in place; on success `opened.payload` is the inner
/// IP packet. Refuses next headers other than 4 and 41 and an inner version
/// nibble that disagrees with the next header. TFC padding after the inner
/// packet (RFC 4303 section 2.7) is left for the IP layer to trim.
#[inline(always)]
pub fn decapsulate<R: EspReceiver>(
    rx: &mut R,
    buf: &mut [u8],
    now: Nanos,
) -> Result<Opened, DropReason> {
    let opened = rx.open(buf, now)?;
    if opened.next_header != next_header::IPV4 && opened.next_header != next_header::IPV6 {
        return Err(DropReason::EspBadNextHeader);
    }
    match next_header_of(&buf[opened.payload.clone()]) {
        Ok(nh) if nh == opened.next_header => Ok(opened),
        Err(DropReason::Truncated) => Err(DropReason::Truncated),
        _ => Err(DropReason::EspInnerVersionMismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::AesGcmKey;
    use crate::sa::{InboundSa, InboundSaPair, SaParams, Spi};
    use crate::wire::esp::MAX_TAIL;
    use proptest::prelude::*;

    fn params() -> SaParams {
        SaParams {
            spi: Spi(0x0102_0304),
            key: AesGcmKey::Aes256([0x42; 32]),
            salt: [1, 2, 3, 4],
            packet_limit: u64::MAX,
        }
    }

    fn ipv4(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[9] = 17;
        p
    }

    fn ipv6(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        p[6] = 17;
        p
    }

    fn encap(sa: &OutboundSa, inner: &[u8]) -> Result<Vec<u8>, DropReason> {
        let mut block = sa.reserve(1)?;
        let mut buf = vec![0u8; PAYLOAD_OFFSET + inner.len() + MAX_TAIL];
        buf[PAYLOAD_OFFSET..PAYLOAD_OFFSET + inner.len()].copy_from_slice(inner);
        let len = encapsulate(sa, &mut block, &mut buf, inner.len())?;
        buf.truncate(len);
        Ok(buf)
    }

    #[test]
    fn round_trip_v4_v6() {
        let tx = OutboundSa::new(&params());
        let mut rx = InboundSaPair::new(InboundSa::new(&params(), 64).unwrap());
        for inner in [ipv4(20), ipv4(1400), ipv6(40), ipv6(9000)] {
            let mut esp = encap(&tx, &inner).unwrap();
            let opened = decapsulate(&mut rx, &mut esp, 0).unwrap();
            let want = if inner[0] >> 4 == 4 { 4 } else { 41 };
            assert_eq!(opened.next_header, want);
            assert_eq!(&esp[opened.payload], &inner[..]);
        }
    }

    #[test]
    fn encapsulate_refuses_non_ip() {
        let tx = OutboundSa::new(&params());
        assert_eq!(encap(&tx, &[]), Err(DropReason::Truncated));
        assert_eq!(encap(&tx, &[0x55; 30]), Err(DropReason::BadIpVersion));
        let mut block = tx.reserve(1).unwrap();
        let mut short = vec![0x45u8; 20];
        assert_eq!(
            encapsulate(&tx, &mut block, &mut short, 10),
            Err(DropReason::EspNoTailroom)
        );
        assert_eq!(
            encapsulate(&tx, &mut block, &mut short, usize::MAX),
            Err(DropReason::EspNoTailroom)
        );
    }

    #[test]
    fn decapsulate_checks_next_header() {
        let tx = OutboundSa::new(&params());
        let mut rx = InboundSa::new(&params(), 64).unwrap();
        let cases = [
            (ipv4(20), next_header::BUNDLE, DropReason::EspBadNextHeader),
            (ipv4(20), 17, DropReason::EspBadNextHeader),
            (
                ipv4(20),
                next_header::IPV6,
                DropReason::EspInnerVersionMismatch,
            ),
            (
                ipv6(40),
                next_header::IPV4,
                DropReason::EspInnerVersionMismatch,
            ),
            (
                vec![0x55; 20],
                next_header::IPV4,
                DropReason::EspInnerVersionMismatch,
            ),
            (vec![], next_header::IPV4, DropReason::Truncated),
        ];
        for (inner, nh, reason) in cases {
            let mut block = tx.reserve(1).unwrap();
            let mut buf = vec![0u8; PAYLOAD_OFFSET + inner.len() + MAX_TAIL];
            buf[PAYLOAD_OFFSET..PAYLOAD_OFFSET + inner.len()].copy_from_slice(&inner);
            let len = tx.seal(&mut block, &mut buf, inner.len(), nh).unwrap();
            assert_eq!(decapsulate(&mut rx, &mut buf[..len], 0), Err(reason));
        }
    }

    proptest! {
        #[test]
        fn decapsulate_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut rx = InboundSa::new(&params(), 64).unwrap();
            let mut bytes = bytes;
            if bytes.len() >= 4 {
                bytes[..4].copy_from_slice(&params().spi.0.to_be_bytes());
            }
            prop_assert!(decapsulate(&mut rx, &mut bytes, 0).is_err());
        }
    }
}
