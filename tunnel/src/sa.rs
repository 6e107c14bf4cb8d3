//! Security associations: AES-GCM ESP with 64-bit extended sequence
//! numbers (RFC 4303, RFC 4106), sealed and opened in place on packet bytes.
//!
//! - Nonce: salt (4 octets of key material) followed by the 8-octet IV
//!   (RFC 4106 section 4). braid's IV is the 64-bit sequence number, unique
//!   per key by construction (RFC 4106 section 3.1 allows any unique value).
//! - AAD: SPI, high 32 and low 32 bits of the sequence number, 12 octets:
//!   ESN is always on (RFC 4106 section 5, RFC 4303 section 2.2.1).
//! - An [`OutboundSa`] may be shared by several workers: sequence numbers are
//!   leased in blocks, one atomic add per burst ([`OutboundSa::reserve`]).
//! - An [`InboundSa`] is owned by one worker (`&mut`): its anti-replay check
//!   runs before decryption, its window moves only after the ICV verified.
//! - Rekey: [`InboundSaPair`] accepts the old and the new SA for a grace
//!   period; [`OutboundSaPair`] switches senders with one atomic store.

use core::ops::Range;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::crypto::{Aead, AesGcm, AesGcmKey, NONCE_LEN};
use crate::replay::{BadWindowSize, ReplayWindow};
use crate::wire::esp::{self, Packet, ICV_LEN, IV_LEN, PAYLOAD_OFFSET};
use crate::{DropReason, Nanos};

pub use crate::wire::esp::Spi;

/// Salt: the last 4 octets of the keying material (RFC 4106 section 8.1).
pub const SALT_LEN: usize = 4;
/// Highest packet limit accepted. Keeps the shared counter far from wrapping
/// even when refused leases keep adding to it.
pub const MAX_PACKET_LIMIT: u64 = 1 << 62;
/// Largest block one [`OutboundSa::reserve`] leases.
pub const MAX_RESERVE: usize = 1 << 16;
/// Length of the ESN associated data: SPI, seq high, seq low (RFC 4106 section 5).
pub const AAD_LEN: usize = 12;

/// What the control plane hands over to create one direction of a tunnel.
#[derive(Debug, Clone)]
pub struct SaParams {
    /// SPI the receiver chose (RFC 4303 section 2.1).
    pub spi: Spi,
    /// AES-128 or AES-256 key.
    pub key: AesGcmKey,
    /// Nonce salt (RFC 4106 section 4).
    pub salt: [u8; SALT_LEN],
    /// Sequence numbers the sender may use, 1..=packet_limit; then the SA
    /// must be replaced. Capped at [`MAX_PACKET_LIMIT`].
    pub packet_limit: u64,
}

/// Four bytes then eight, as twelve, written with one 8-byte and one
/// 4-byte store: the loads AES-GCM reads a nonce or a 12-byte AAD with
/// (bytes 0..8 and 8..12). Copied in field by field (4 then 8), a load
/// spanning both stores cannot be forwarded from them and waits for them
/// to reach the cache, twice a packet.
#[inline(always)]
fn join_4_8(a: [u8; 4], b: [u8; 8]) -> [u8; 12] {
    let lo = u64::from(u32::from_le_bytes(a)) | u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) << 32;
    let hi = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let mut out = [0; 12];
    out[..8].copy_from_slice(&lo.to_le_bytes());
    out[8..].copy_from_slice(&hi.to_le_bytes());
    out
}

fn nonce(salt: &[u8; SALT_LEN], iv: &[u8; IV_LEN]) -> [u8; NONCE_LEN] {
    join_4_8(*salt, *iv)
}

fn aad(spi: Spi, seq: u64) -> [u8; AAD_LEN] {
    join_4_8(spi.0.to_be_bytes(), seq.to_be_bytes())
}

/// A run of sequence numbers leased from one [`OutboundSa`]. Not `Clone`:
/// each number is handed out once.
#[derive(Debug)]
pub struct SeqBlock {
    spi: Spi,
    next: u64,
    end: u64,
}

impl SeqBlock {
    /// Numbers left in the block.
    pub fn len(&self) -> usize {
        (self.end - self.next) as usize
    }

    /// True when every number was used.
    pub fn is_empty(&self) -> bool {
        self.next == self.end
    }

    /// SPI of the SA the block belongs to.
    pub fn spi(&self) -> Spi {
        self.spi
    }

    fn take(&mut self) -> Option<u64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
}

/// The shared counter on its own cache line, away from the read-only key.
#[derive(Debug)]
#[repr(align(64))]
struct SeqCounter(AtomicU64);

/// Sending side of an SA. `Sync`: workers share it through `&` and lease
/// sequence numbers with [`reserve`](Self::reserve).
#[derive(Debug)]
pub struct OutboundSa<A = AesGcm> {
    spi: Spi,
    salt: [u8; SALT_LEN],
    limit: u64,
    aead: A,
    next: SeqCounter,
}

impl OutboundSa<AesGcm> {
    /// A new SA whose first packet carries sequence number 1 (RFC 4303 section 3.3.3).
    pub fn new(params: &SaParams) -> OutboundSa<AesGcm> {
        OutboundSa::with_aead(AesGcm::new(&params.key), params, 1)
    }

    /// An SA whose next sequence number is `first_seq`: to resume a persisted
    /// counter, or to test high in the ESN space. Never pass a used number.
    pub fn starting_at(params: &SaParams, first_seq: u64) -> OutboundSa<AesGcm> {
        OutboundSa::with_aead(AesGcm::new(&params.key), params, first_seq)
    }
}

impl<A: Aead> OutboundSa<A> {
    /// An SA over any AEAD engine keyed from `params.key`.
    pub fn with_aead(aead: A, params: &SaParams, first_seq: u64) -> OutboundSa<A> {
        OutboundSa {
            spi: params.spi,
            salt: params.salt,
            limit: params.packet_limit.min(MAX_PACKET_LIMIT),
            aead,
            next: SeqCounter(AtomicU64::new(first_seq.max(1))),
        }
    }

    /// The SPI written in every packet.
    pub fn spi(&self) -> Spi {
        self.spi
    }

    /// The next sequence number a lease would hand out (numbers below it
    /// were leased, used or not): what a sender persists so that a restart
    /// never reuses one.
    pub fn next_seq(&self) -> u64 {
        self.next.0.load(Ordering::Relaxed)
    }

    /// Sequence numbers not leased yet; rekey well before this reaches zero.
    pub fn remaining(&self) -> u64 {
        (self.limit + 1).saturating_sub(self.next.0.load(Ordering::Relaxed))
    }

    /// Leases up to `n` sequence numbers (at most [`MAX_RESERVE`]) with one
    /// atomic add. The block is shorter only at the end of the SA's life;
    /// after that every lease is refused with `SaExhausted`. Numbers leased
    /// and not used are lost, never reused.
    #[inline]
    pub fn reserve(&self, n: usize) -> Result<SeqBlock, DropReason> {
        let n = n.min(MAX_RESERVE) as u64;
        // The load keeps refused leases from growing the counter: each
        // thread can overshoot at most once, so it never wraps.
        if self.next.0.load(Ordering::Relaxed) > self.limit {
            return Err(DropReason::SaExhausted);
        }
        let start = self.next.0.fetch_add(n, Ordering::Relaxed);
        if start > self.limit {
            return Err(DropReason::SaExhausted);
        }
        let end = (start + n).min(self.limit + 1);
        Ok(SeqBlock {
            spi: self.spi,
            next: start,
            end,
        })
    }

    /// Seals one packet in place and returns the ESP length.
    ///
    /// `buf` starts where the ESP header goes: `buf[..16]` is room for header
    /// and IV, the payload is `buf[16..16 + payload_len]`, and after it there
    /// must be room for pad, trailer and ICV ([`esp::MAX_TAIL`] at most).
    /// Takes the next number from `block`; an empty block is `SaExhausted`.
    #[inline]
    pub fn seal(
        &self,
        block: &mut SeqBlock,
        buf: &mut [u8],
        payload_len: usize,
        next_header: u8,
    ) -> Result<usize, DropReason> {
        if block.spi != self.spi {
            return Err(DropReason::EspWrongSeqBlock);
        }
        if payload_len > buf.len() || esp::packet_len(payload_len) > buf.len() {
            return Err(DropReason::EspNoTailroom);
        }
        let seq = block.take().ok_or(DropReason::SaExhausted)?;
        self.seal_seq(seq, buf, payload_len, next_header)
    }

    fn seal_seq(
        &self,
        seq: u64,
        buf: &mut [u8],
        payload_len: usize,
        next_header: u8,
    ) -> Result<usize, DropReason> {
        let total = esp::packet_len(payload_len);
        let buf = &mut buf[..total];
        let iv = seq.to_be_bytes();
        let mut header = Packet::new_unchecked(&mut buf[..PAYLOAD_OFFSET]);
        header.set_spi(self.spi);
        header.set_seq_low(seq as u32);
        header.set_iv(&iv);
        let (_, rest) = buf.split_at_mut(PAYLOAD_OFFSET);
        let (body, icv) = rest.split_at_mut(total - PAYLOAD_OFFSET - ICV_LEN);
        esp::write_trailer(body, payload_len, next_header)?;
        let icv: &mut [u8; ICV_LEN] = icv.try_into().map_err(|_| DropReason::EspNoTailroom)?;
        self.aead
            .seal_in_place(&nonce(&self.salt, &iv), &aad(self.spi, seq), body, icv)
            .map_err(|_| DropReason::EspTooLong)?;
        Ok(total)
    }
}

/// A packet that authenticated and passed anti-replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// SA it arrived on.
    pub spi: Spi,
    /// Full 64-bit sequence number.
    pub seq: u64,
    /// ESP next header (RFC 4303 section 2.6).
    pub next_header: u8,
    /// Decrypted payload inside the buffer given to `open`.
    pub payload: Range<usize>,
    /// The sequence number is above every one this SA accepted before: the
    /// sender's newest packet. Only such a packet may move state that
    /// follows the sender, such as its outer address behind a NAT (as IKEv2
    /// does, RFC 7296 section 2.23); an older one may be a capture replayed
    /// from elsewhere.
    pub newest: bool,
}

/// Anything that opens ESP packets: one SA, or an SA pair during rekey.
pub trait EspReceiver {
    /// Authenticates, checks anti-replay and decrypts `buf` in place.
    fn open(&mut self, buf: &mut [u8], now: Nanos) -> Result<Opened, DropReason>;
}

/// Receiving side of an SA, owned by one worker.
#[derive(Debug)]
pub struct InboundSa<A = AesGcm> {
    spi: Spi,
    salt: [u8; SALT_LEN],
    aead: A,
    window: ReplayWindow,
    last_rx: Nanos,
}

impl InboundSa<AesGcm> {
    /// A new SA with an anti-replay window of `window` sequence numbers.
    pub fn new(params: &SaParams, window: u64) -> Result<InboundSa<AesGcm>, BadWindowSize> {
        Ok(InboundSa::with_aead(
            AesGcm::new(&params.key),
            params,
            ReplayWindow::new(window)?,
        ))
    }

    /// An SA that treats everything up to `last_seq` as received: to resume
    /// a persisted window, or to test high in the ESN space.
    pub fn starting_at(
        params: &SaParams,
        window: u64,
        last_seq: u64,
    ) -> Result<InboundSa<AesGcm>, BadWindowSize> {
        let window = ReplayWindow::starting_at(window, last_seq)?;
        Ok(InboundSa::with_aead(
            AesGcm::new(&params.key),
            params,
            window,
        ))
    }
}

impl<A: Aead> InboundSa<A> {
    /// An SA over any AEAD engine keyed from `params.key`.
    pub fn with_aead(aead: A, params: &SaParams, window: ReplayWindow) -> InboundSa<A> {
        InboundSa {
            spi: params.spi,
            salt: params.salt,
            aead,
            window,
            last_rx: 0,
        }
    }

    /// The SPI this SA accepts.
    pub fn spi(&self) -> Spi {
        self.spi
    }

    /// The anti-replay window.
    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// When the last authentic packet arrived (0: never).
    pub fn last_rx(&self) -> Nanos {
        self.last_rx
    }

    /// Opens one ESP packet in place: `buf` is exactly the ESP packet, from
    /// SPI to ICV. Order: length, SPI, ESN inference and replay check, then
    /// decryption, then the window update, then the trailer.
    #[inline]
    pub fn open(&mut self, buf: &mut [u8], now: Nanos) -> Result<Opened, DropReason> {
        let packet = Packet::new_checked(&*buf)?;
        if packet.spi() != self.spi {
            return Err(DropReason::EspWrongSpi);
        }
        let seq = self.window.infer_seq(packet.seq_low())?;
        self.window.check(seq)?;
        let nonce = nonce(&self.salt, &packet.iv());
        let end = buf.len() - ICV_LEN;
        self.aead
            .open_in_place(&nonce, &aad(self.spi, seq), &mut buf[PAYLOAD_OFFSET..])
            .map_err(|_| DropReason::AuthFailed)?;
        let body = &mut buf[PAYLOAD_OFFSET..end];
        let newest = seq > self.window.top();
        self.window.update(seq);
        self.last_rx = now;
        let (payload_len, next_header) = esp::parse_trailer(body)?;
        Ok(Opened {
            spi: self.spi,
            seq,
            next_header,
            payload: PAYLOAD_OFFSET..PAYLOAD_OFFSET + payload_len,
            newest,
        })
    }
}

impl<A: Aead> EspReceiver for InboundSa<A> {
    fn open(&mut self, buf: &mut [u8], now: Nanos) -> Result<Opened, DropReason> {
        InboundSa::open(self, buf, now)
    }
}

/// The receiver during rekey: the current SA and the one it replaced, the
/// latter accepted until its grace period ends. Owned by one worker; the
/// control thread sends it new SAs to [`install`](Self::install) between bursts.
#[derive(Debug)]
pub struct InboundSaPair<A = AesGcm> {
    current: InboundSa<A>,
    previous: Option<(InboundSa<A>, Nanos)>,
}

impl<A: Aead> InboundSaPair<A> {
    /// A receiver with one SA.
    pub fn new(current: InboundSa<A>) -> InboundSaPair<A> {
        InboundSaPair {
            current,
            previous: None,
        }
    }

    /// Installs `next` as the current SA; the current one is accepted until
    /// `now + grace`. Returns the SA this pushes out, to be freed off the
    /// hot path.
    pub fn install(
        &mut self,
        next: InboundSa<A>,
        now: Nanos,
        grace: Nanos,
    ) -> Option<InboundSa<A>> {
        let old = core::mem::replace(&mut self.current, next);
        self.previous
            .replace((old, now.saturating_add(grace)))
            .map(|(sa, _)| sa)
    }

    /// Removes the previous SA once its grace period is over.
    pub fn retire_expired(&mut self, now: Nanos) -> Option<InboundSa<A>> {
        match self.previous {
            Some((_, until)) if now >= until => self.previous.take().map(|(sa, _)| sa),
            _ => None,
        }
    }

    /// The SA packets are expected on.
    pub fn current(&self) -> &InboundSa<A> {
        &self.current
    }

    /// Makes the current SA, if its SPI is `spi`, refuse every sequence
    /// number up to `seq` (what an earlier window of the same SA accepted);
    /// nothing changes when its window is already past `seq`.
    pub fn raise_floor(&mut self, spi: Spi, seq: u64) {
        if self.current.spi == spi {
            self.current.window.raise_to(seq);
        }
    }

    /// Makes the current SA, if its SPI is `spi`, refuse every sequence
    /// number up to `seq`, also below its window's top
    /// ([`ReplayWindow::seen_through`]): what another window of the same
    /// SA accepted while this one was not in use.
    pub fn refuse_through(&mut self, spi: Spi, seq: u64) {
        if self.current.spi == spi {
            self.current.window.seen_through(seq);
        }
    }

    /// The previous SA's SPI, while it is accepted (rekey grace).
    pub fn previous_spi(&self) -> Option<Spi> {
        self.previous.as_ref().map(|(sa, _)| sa.spi)
    }

    /// The SA with this SPI, if installed (even past its grace period).
    pub fn get(&self, spi: Spi) -> Option<&InboundSa<A>> {
        if self.current.spi == spi {
            return Some(&self.current);
        }
        self.previous
            .as_ref()
            .map(|(sa, _)| sa)
            .filter(|sa| sa.spi == spi)
    }

    /// Opens with the SA named by the packet's SPI. The previous SA is
    /// refused with `SaExpired` once `now` reaches the end of its grace.
    #[inline(always)]
    pub fn open(&mut self, buf: &mut [u8], now: Nanos) -> Result<Opened, DropReason> {
        let spi = Packet::new_checked(&*buf)?.spi();
        if spi == self.current.spi {
            return self.current.open(buf, now);
        }
        match &mut self.previous {
            Some((sa, until)) if sa.spi == spi => {
                if now < *until {
                    sa.open(buf, now)
                } else {
                    Err(DropReason::SaExpired)
                }
            }
            _ => Err(DropReason::EspUnknownSpi),
        }
    }
}

impl<A: Aead> EspReceiver for InboundSaPair<A> {
    fn open(&mut self, buf: &mut [u8], now: Nanos) -> Result<Opened, DropReason> {
        InboundSaPair::open(self, buf, now)
    }
}

/// The sender during rekey: two SAs and an index saying which one seals.
///
/// Lock-free and simple: the pair lives in the immutable table the control
/// thread publishes to the workers. To rekey, the control thread publishes
/// [`with_next`](Self::with_next) (old SA still active, new one beside it;
/// both are `Arc`s so the old SA's counter carries on), waits until the peer
/// has installed the new inbound SA, then calls [`activate`](Self::activate):
/// one atomic store. Workers read [`active`](Self::active) once per burst and
/// seal the whole burst with it; a block leased from the old SA stays valid
/// with the old SA, which the peer still accepts during its grace period.
#[derive(Debug)]
pub struct OutboundSaPair<A = AesGcm> {
    slots: [Arc<OutboundSa<A>>; 2],
    active: AtomicUsize,
}

impl<A: Aead> OutboundSaPair<A> {
    /// A sender with one SA.
    pub fn new(sa: Arc<OutboundSa<A>>) -> OutboundSaPair<A> {
        OutboundSaPair {
            slots: [sa.clone(), sa],
            active: AtomicUsize::new(0),
        }
    }

    /// A copy with the active SA kept active and `next` beside it, replacing
    /// any older inactive SA.
    pub fn with_next(&self, next: Arc<OutboundSa<A>>) -> OutboundSaPair<A> {
        let active = self.active.load(Ordering::Acquire) & 1;
        let mut slots = [self.slots[active].clone(), next];
        slots.rotate_right(active);
        OutboundSaPair {
            slots,
            active: AtomicUsize::new(active),
        }
    }

    /// The SA workers seal with now.
    #[inline]
    pub fn active(&self) -> &OutboundSa<A> {
        &self.slots[self.active.load(Ordering::Acquire) & 1]
    }

    /// Makes the SA with `spi` the active one. Idempotent; false if neither
    /// slot holds that SPI.
    pub fn activate(&self, spi: Spi) -> bool {
        match self.slots.iter().position(|sa| sa.spi == spi) {
            Some(index) => {
                self.active.store(index, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// The SA with this SPI, active or not.
    pub fn get(&self, spi: Spi) -> Option<&OutboundSa<A>> {
        self.slots.iter().find(|sa| sa.spi == spi).map(|sa| &**sa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::esp::{next_header, MAX_TAIL};
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// xorshift64*: deterministic bytes without `rand`.
    pub(crate) struct Prng(u64);
    impl Prng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub(crate) fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next() as u8;
            }
        }
    }

    fn params(spi: u32, key_len: usize) -> SaParams {
        let mut key = vec![0u8; key_len];
        Prng(u64::from(spi) | 1 << 40).fill(&mut key);
        SaParams {
            spi: Spi(spi),
            key: AesGcmKey::from_slice(&key).unwrap(),
            salt: [0xca, 0xfe, 0xba, spi as u8],
            packet_limit: u64::MAX,
        }
    }

    /// Builds an ESP buffer with `payload` at offset 16 and full tailroom.
    fn esp_buf(payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; PAYLOAD_OFFSET + payload.len() + MAX_TAIL];
        buf[PAYLOAD_OFFSET..PAYLOAD_OFFSET + payload.len()].copy_from_slice(payload);
        buf
    }

    fn seal_one(sa: &OutboundSa, payload: &[u8], nh: u8) -> Vec<u8> {
        let mut block = sa.reserve(1).unwrap();
        let mut buf = esp_buf(payload);
        let len = sa.seal(&mut block, &mut buf, payload.len(), nh).unwrap();
        buf.truncate(len);
        buf
    }

    /// Seals an arbitrary plaintext body (payload + trailer as given), so
    /// tests can make authentic packets with a bad trailer.
    fn seal_raw(p: &SaParams, seq: u64, body: &[u8]) -> Vec<u8> {
        let aead = AesGcm::new(&p.key);
        let mut buf = Vec::new();
        buf.extend_from_slice(&p.spi.0.to_be_bytes());
        buf.extend_from_slice(&(seq as u32).to_be_bytes());
        buf.extend_from_slice(&seq.to_be_bytes());
        let mut ct = body.to_vec();
        let mut tag = [0u8; crate::crypto::TAG_LEN];
        aead.seal_in_place(
            &nonce(&p.salt, &seq.to_be_bytes()),
            &aad(p.spi, seq),
            &mut ct,
            &mut tag,
        )
        .unwrap();
        buf.extend_from_slice(&ct);
        buf.extend_from_slice(&tag);
        buf
    }

    #[test]
    fn nonce_and_aad_layout() {
        // RFC 4106 section 4: salt then IV; RFC 4303 section 2.2.1 / 4106
        // section 5: SPI then the 64-bit sequence number, big-endian.
        let n = nonce(&[1, 2, 3, 4], &[5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(n, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let a = aad(Spi(0x0a0b_0c0d), 0x0102_0304_0506_0708);
        assert_eq!(a, [0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn round_trip_all_sizes() {
        for key_len in [16, 32] {
            let p = params(0x100 + key_len as u32, key_len);
            let tx = OutboundSa::new(&p);
            let mut rx = InboundSa::new(&p, 4096).unwrap();
            let mut rng = Prng(7);
            for (i, len) in (0..130).chain([1420, 1500, 9000, 65_000]).enumerate() {
                let mut payload = vec![0u8; len];
                rng.fill(&mut payload);
                let nh = [next_header::IPV4, next_header::IPV6, next_header::BUNDLE][i % 3];
                let mut buf = seal_one(&tx, &payload, nh);
                assert_eq!(buf.len(), esp::packet_len(len));
                assert_eq!((buf.len() - 32) % 4, 0);
                let opened = rx.open(&mut buf, 5).unwrap();
                assert_eq!(opened.seq, i as u64 + 1);
                assert_eq!(opened.next_header, nh);
                assert_eq!(opened.spi, p.spi);
                assert_eq!(&buf[opened.payload], &payload[..]);
            }
            assert_eq!(rx.last_rx(), 5);
        }
    }

    #[test]
    fn wire_layout() {
        let p = params(0x4321, 16);
        let tx = OutboundSa::starting_at(&p, 0x1_0000_0005);
        let buf = seal_one(&tx, &[0x45; 20], next_header::IPV4);
        assert_eq!(&buf[..4], &[0, 0, 0x43, 0x21]);
        assert_eq!(&buf[4..8], &[0, 0, 0, 5]);
        assert_eq!(&buf[8..16], &0x1_0000_0005u64.to_be_bytes());
        assert_eq!(buf.len(), 16 + 20 + 2 + 2 + 16);
    }

    #[test]
    fn no_tailroom() {
        let p = params(1, 32);
        let tx = OutboundSa::new(&p);
        let mut block = tx.reserve(5).unwrap();
        for len in [0, 1, 2, 3, 100] {
            let need = esp::packet_len(len);
            let mut buf = vec![0u8; need - 1];
            assert_eq!(
                tx.seal(&mut block, &mut buf, len, 4),
                Err(DropReason::EspNoTailroom)
            );
            let mut buf = vec![0u8; need];
            assert_eq!(tx.seal(&mut block, &mut buf, len, 4), Ok(need));
        }
        let mut buf = vec![0u8; 10];
        assert_eq!(
            tx.seal(&mut block, &mut buf, usize::MAX, 4),
            Err(DropReason::EspNoTailroom)
        );
    }

    #[test]
    fn block_from_other_sa_refused() {
        let a = OutboundSa::new(&params(1, 16));
        let b = OutboundSa::new(&params(2, 16));
        let mut block = a.reserve(1).unwrap();
        let mut buf = esp_buf(&[0; 8]);
        assert_eq!(
            b.seal(&mut block, &mut buf, 8, 4),
            Err(DropReason::EspWrongSeqBlock)
        );
        assert_eq!(block.len(), 1);
        assert!(a.seal(&mut block, &mut buf, 8, 4).is_ok());
        assert_eq!(
            a.seal(&mut block, &mut buf, 8, 4),
            Err(DropReason::SaExhausted)
        );
    }

    #[test]
    fn malformed_inbound() {
        let p = params(9, 16);
        let tx = OutboundSa::new(&p);
        let mut rx = InboundSa::new(&p, 64).unwrap();
        let good = seal_one(&tx, &[0x45; 40], 4);

        for len in 0..esp::MIN_LEN {
            let mut b = good[..len].to_vec();
            assert_eq!(rx.open(&mut b, 0), Err(DropReason::EspTruncated));
        }
        let mut b = good.clone();
        b[3] ^= 1;
        assert_eq!(rx.open(&mut b, 0), Err(DropReason::EspWrongSpi));
        // Sequence number 1 -> 0 never reaches the cipher.
        let mut b = good.clone();
        b[7] ^= 0x01;
        assert_eq!(rx.open(&mut b, 0), Err(DropReason::EspSeqZero));
        // A sequence number far ahead, IV, ciphertext, ICV: the ICV fails.
        for i in (4..7).chain(8..good.len()) {
            let mut b = good.clone();
            b[i] ^= 0x01;
            assert_eq!(rx.open(&mut b, 0), Err(DropReason::AuthFailed), "byte {i}");
        }
        // Forgeries did not move the window: the genuine packet still opens.
        let mut b = good.clone();
        assert!(rx.open(&mut b, 0).is_ok());
        let mut b = good.clone();
        assert_eq!(rx.open(&mut b, 0), Err(DropReason::Replayed));

        // Authentic packets with broken trailers.
        let mut b = seal_raw(&p, 2, &[0x45, 0, 9, 9, 2, 4]);
        assert_eq!(rx.open(&mut b, 0), Err(DropReason::EspBadPad));
        let mut b = seal_raw(&p, 3, &[0x45, 0, 200, 4]);
        assert_eq!(rx.open(&mut b, 0), Err(DropReason::EspPadTooLong));
        let mut b = seal_raw(&p, 4, &[1, 2, 3, 4]);
        assert_eq!(rx.open(&mut b, 0), Err(DropReason::EspPadTooLong));
        // Longer (but well-formed) padding from another sender is fine.
        let mut b = seal_raw(&p, 5, &[0x45, 1, 2, 3, 4, 5, 5, 4]);
        let opened = rx.open(&mut b, 0).unwrap();
        assert_eq!(opened.payload, 16..17);

        // Too old and seq zero.
        let mut b = seal_raw(&p, 1000, &[0x45, 1, 1, 4]);
        assert!(rx.open(&mut b, 0).is_ok());
        let mut b = seal_raw(&p, 900, &[0x45, 1, 1, 4]);
        assert_eq!(rx.open(&mut b, 0), Err(DropReason::ReplayTooOld));
        let mut rx = InboundSa::new(&p, 64).unwrap();
        let mut b = seal_raw(&p, 0, &[0x45, 1, 1, 4]);
        assert_eq!(rx.open(&mut b, 0), Err(DropReason::EspSeqZero));
    }

    #[test]
    fn newest_only_above_everything_accepted() {
        let p = params(0x31, 16);
        let tx = OutboundSa::new(&p);
        let mut rx = InboundSa::new(&p, 64).unwrap();
        let packets: Vec<Vec<u8>> = (0..6).map(|_| seal_one(&tx, &[0x45; 24], 4)).collect();
        // A fresh window's top is 0: the first packet is the newest.
        assert_eq!(rx.window().top(), 0);
        let first = rx.open(&mut packets[0].clone(), 0).unwrap();
        assert!(first.newest);
        // A gap, then the older packets in the window: authentic, not newest.
        let jump = rx.open(&mut packets[4].clone(), 0).unwrap();
        assert!(jump.newest && jump.seq == 5);
        for i in [2, 1, 3] {
            let older = rx.open(&mut packets[i].clone(), 0).unwrap();
            assert!(!older.newest, "seq {}", older.seq);
        }
        // A replay of the newest is refused, and does not count as newest.
        assert_eq!(
            rx.open(&mut packets[4].clone(), 0),
            Err(DropReason::Replayed)
        );
        // A forged tag on the next packet: an error, and nothing moved.
        let mut forged = packets[5].clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(rx.open(&mut forged, 7), Err(DropReason::AuthFailed));
        assert_eq!((rx.window().top(), rx.last_rx()), (5, 0));
        let next = rx.open(&mut packets[5].clone(), 8).unwrap();
        assert!(next.newest && next.seq == 6);
        // Through a pair as well.
        let mut pair = InboundSaPair::new(InboundSa::new(&p, 64).unwrap());
        assert!(pair.open(&mut packets[1].clone(), 0).unwrap().newest);
        assert!(!pair.open(&mut packets[0].clone(), 0).unwrap().newest);
    }

    #[test]
    fn esn_crosses_2_pow_32() {
        let p = params(0xabcd, 32);
        let start = (1u64 << 32) - 3;
        let tx = OutboundSa::starting_at(&p, start);
        let mut rx = InboundSa::starting_at(&p, 4096, start - 1).unwrap();
        let mut block = tx.reserve(8).unwrap();
        let mut packets = Vec::new();
        for _ in 0..8 {
            let mut buf = esp_buf(&[0x60; 48]);
            let len = tx.seal(&mut block, &mut buf, 48, 41).unwrap();
            buf.truncate(len);
            packets.push(buf);
        }
        // Out of order across the boundary.
        for i in [1usize, 0, 5, 2, 7, 3, 4, 6] {
            let opened = rx.open(&mut packets[i].clone(), 0).unwrap();
            assert_eq!(opened.seq, start + i as u64);
        }
        // The high bits are authenticated: a receiver that guesses the
        // wrong subspace fails the ICV.
        let mut wrong = InboundSa::new(&p, 4096).unwrap();
        assert_eq!(
            wrong.open(&mut packets[7].clone(), 0),
            Err(DropReason::AuthFailed)
        );
    }

    #[test]
    fn packet_limit_refused() {
        let mut p = params(3, 16);
        p.packet_limit = 10;
        let tx = OutboundSa::new(&p);
        assert_eq!(tx.remaining(), 10);
        let a = tx.reserve(4).unwrap();
        assert_eq!(a.len(), 4);
        let b = tx.reserve(100).unwrap();
        assert_eq!(b.len(), 6, "short block at the end of life");
        assert_eq!(tx.remaining(), 0);
        for _ in 0..1000 {
            assert_eq!(
                tx.reserve(MAX_RESERVE).unwrap_err(),
                DropReason::SaExhausted
            );
        }
        let mut p = params(4, 16);
        p.packet_limit = 3;
        let tx = OutboundSa::new(&p);
        let mut block = tx.reserve(100).unwrap();
        let mut buf = esp_buf(&[0; 4]);
        for _ in 0..3 {
            tx.seal(&mut block, &mut buf, 4, 4).unwrap();
        }
        assert_eq!(
            tx.seal(&mut block, &mut buf, 4, 4),
            Err(DropReason::SaExhausted)
        );
        assert_eq!(tx.reserve(1).unwrap_err(), DropReason::SaExhausted);
    }

    #[test]
    fn nonces_unique_across_threads() {
        const THREADS: u64 = 4;
        const LIMIT: u64 = 40_000;
        let mut p = params(0x77, 32);
        p.packet_limit = LIMIT;
        let tx = OutboundSa::new(&p);
        let per_thread: Vec<Vec<[u8; 12]>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let tx = &tx;
                    let p = &p;
                    s.spawn(move || {
                        let mut rng = Prng(t + 1);
                        let mut nonces = Vec::new();
                        let mut buf = esp_buf(&[0x45; 64]);
                        loop {
                            let burst = (rng.next() % 48 + 1) as usize;
                            let mut block = match tx.reserve(burst) {
                                Ok(block) => block,
                                Err(e) => {
                                    assert_eq!(e, DropReason::SaExhausted);
                                    break nonces;
                                }
                            };
                            while !block.is_empty() {
                                tx.seal(&mut block, &mut buf, 64, 4).unwrap();
                                // The nonce on the wire: salt, then the IV.
                                let iv: [u8; 8] = buf[8..16].try_into().unwrap();
                                nonces.push(nonce(&p.salt, &iv));
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: Vec<[u8; 12]> = per_thread.into_iter().flatten().collect();
        assert_eq!(
            all.len() as u64,
            LIMIT,
            "every number used, none beyond the limit"
        );
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "a (key, nonce) pair repeated");
        let seqs: HashSet<u64> = all
            .iter()
            .map(|n| u64::from_be_bytes(n[4..].try_into().unwrap()))
            .collect();
        assert_eq!(seqs, (1..=LIMIT).collect());
    }

    #[test]
    fn rekey_grace_period() {
        let old_p = params(0x1000, 16);
        let new_p = params(0x2000, 32);
        let old_tx = Arc::new(OutboundSa::new(&old_p));
        let new_tx = Arc::new(OutboundSa::new(&new_p));
        let mut rx = InboundSaPair::new(InboundSa::new(&old_p, 128).unwrap());

        let pair = OutboundSaPair::new(old_tx.clone());
        assert_eq!(pair.active().spi(), old_p.spi);
        let mut m = seal_one(pair.active(), &[0x45; 30], 4);
        assert_eq!(rx.open(&mut m, 10).unwrap().spi, old_p.spi);

        // The peer installs the new inbound SA first, then the sender flips.
        let pair = pair.with_next(new_tx.clone());
        assert_eq!(pair.active().spi(), old_p.spi, "with_next does not switch");
        let mut in_flight_old = seal_one(pair.active(), &[0x45; 30], 4);
        assert!(rx
            .install(InboundSa::new(&new_p, 128).unwrap(), 1_000, 500)
            .is_none());
        assert!(pair.activate(new_p.spi));
        assert!(pair.activate(new_p.spi), "idempotent");
        assert!(!pair.activate(Spi(0xdead)));
        assert_eq!(pair.active().spi(), new_p.spi);
        let mut m = seal_one(pair.active(), &[0x45; 30], 4);
        assert_eq!(rx.open(&mut m, 1_100).unwrap().spi, new_p.spi);
        // Old SA still accepted in the grace period, and its counter went on.
        let opened = rx.open(&mut in_flight_old, 1_499).unwrap();
        assert_eq!((opened.spi, opened.seq), (old_p.spi, 2));
        assert!(rx.get(old_p.spi).is_some());
        // After the grace period the old SA is refused.
        let mut late = seal_one(&old_tx, &[0x45; 30], 4);
        assert_eq!(
            rx.open(&mut late.clone(), 1_500),
            Err(DropReason::SaExpired)
        );
        assert_eq!(rx.retire_expired(1_499).map(|sa| sa.spi()), None);
        assert_eq!(rx.retire_expired(1_500).map(|sa| sa.spi()), Some(old_p.spi));
        assert_eq!(rx.open(&mut late, 1_600), Err(DropReason::EspUnknownSpi));
        assert_eq!(rx.current().spi(), new_p.spi);

        // A second rekey pushes the oldest SA out.
        let third = params(0x3000, 16);
        let pair = pair.with_next(Arc::new(OutboundSa::new(&third)));
        assert_eq!(pair.active().spi(), new_p.spi);
        assert!(pair.get(old_p.spi).is_none());
        assert!(pair.activate(third.spi));
        assert!(rx
            .install(InboundSa::new(&third, 128).unwrap(), 2_000, 10)
            .is_none());
        let pushed = rx.install(InboundSa::new(&params(0x4000, 16), 128).unwrap(), 2_001, 10);
        assert_eq!(pushed.map(|sa| sa.spi()), Some(new_p.spi));
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), spi_ok: bool) {
            let p = params(0x55, 16);
            let mut rx = InboundSa::new(&p, 64).unwrap();
            let mut bytes = bytes;
            if spi_ok && bytes.len() >= 8 {
                bytes[..4].copy_from_slice(&p.spi.0.to_be_bytes());
            }
            let r = rx.open(&mut bytes.clone(), 0);
            prop_assert!(r.is_err());
            let mut pair = InboundSaPair::new(rx);
            prop_assert!(pair.open(&mut bytes, 0).is_err());
        }

        #[test]
        fn round_trip_any_payload(payload in proptest::collection::vec(any::<u8>(), 0..600), nh: u8) {
            let p = params(0x66, 32);
            let tx = OutboundSa::new(&p);
            let mut rx = InboundSa::new(&p, 64).unwrap();
            let mut buf = seal_one(&tx, &payload, nh);
            let opened = rx.open(&mut buf, 0).unwrap();
            prop_assert_eq!(opened.next_header, nh);
            prop_assert_eq!(&buf[opened.payload], &payload[..]);
        }
    }
}
