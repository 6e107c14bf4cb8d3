//! Anti-replay window over 64-bit extended sequence numbers: the RFC 6479
//! bitmap, a ring of 64-bit blocks where sliding clears whole blocks instead
//! of shifting bits.
//!
//! [`ReplayWindow::check`] is cheap and runs before decryption;
//! [`ReplayWindow::update`] runs only after the ICV verified, so a forged
//! packet can never move the window (RFC 4303 section 3.4.3).

use crate::DropReason;

/// Default window: wide enough for the skew between many paths of one
/// braid tunnel at tens of Gbps (RFC 4303 section 3.4.3 suggests at least 64).
pub const DEFAULT_WINDOW: u64 = 4096;
/// Smallest window: one block (RFC 4303 section 3.4.3 minimum of 32, rounded up).
pub const MIN_WINDOW: u64 = 64;
/// Largest window, 2^20 sequence numbers (a 256 KiB bitmap). Must stay far
/// below 2^31 for ESN inference (RFC 4303 Appendix A).
pub const MAX_WINDOW: u64 = 1 << 20;

const BLOCK_BITS: u64 = u64::BITS as u64;

/// The window size is not a power of two in `MIN_WINDOW..=MAX_WINDOW`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadWindowSize(pub u64);

impl core::fmt::Display for BadWindowSize {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "replay window {} is not a power of two in {MIN_WINDOW}..={MAX_WINDOW}",
            self.0
        )
    }
}

impl std::error::Error for BadWindowSize {}

/// RFC 6479 anti-replay window. Accepts sequence numbers in
/// `top - size + 1 ..= top` not seen yet, and any above `top`.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest authenticated sequence number, 0 before the first packet.
    top: u64,
    /// Window size W, a power of two.
    size: u64,
    /// Ring of blocks; twice W/64 so the block holding `top` never overlaps
    /// the oldest block in the window (RFC 6479 section 2).
    blocks: Box<[u64]>,
}

impl ReplayWindow {
    /// An empty window of `size` sequence numbers.
    pub fn new(size: u64) -> Result<ReplayWindow, BadWindowSize> {
        if !size.is_power_of_two() || !(MIN_WINDOW..=MAX_WINDOW).contains(&size) {
            return Err(BadWindowSize(size));
        }
        let count = (2 * size / BLOCK_BITS) as usize;
        Ok(ReplayWindow {
            top: 0,
            size,
            blocks: vec![0; count].into_boxed_slice(),
        })
    }

    /// A window that considers everything up to `last_seq` already received:
    /// to resume a persisted SA, or to test far into the sequence space.
    pub fn starting_at(size: u64, last_seq: u64) -> Result<ReplayWindow, BadWindowSize> {
        let mut window = ReplayWindow::new(size)?;
        window.seen_up_to(last_seq);
        Ok(window)
    }

    /// Considers everything up to `seq` received, when `seq` is above the
    /// top (a window must not accept what an earlier window of the same SA
    /// accepted); otherwise changes nothing.
    pub fn raise_to(&mut self, seq: u64) {
        if seq > self.top {
            self.seen_up_to(seq);
        }
    }

    /// Considers everything up to `seq` received, also below the top: a
    /// window that took a tunnel over from another one (a worker's)
    /// refuses what the other accepted, even after accepting newer
    /// numbers itself. Numbers up to `seq` not received yet are refused
    /// too; those above it are untouched.
    pub fn seen_through(&mut self, seq: u64) {
        if seq > self.top {
            self.seen_up_to(seq);
            return;
        }
        let mut s = (self.top + 1).saturating_sub(self.size).max(1);
        while s <= seq {
            // The numbers from `s` to the end of its block, at most `seq`.
            let end = (s | (BLOCK_BITS - 1)).min(seq);
            let bits = end - s + 1;
            let mask = if bits == BLOCK_BITS { u64::MAX } else { ((1 << bits) - 1) << (s % BLOCK_BITS) };
            let index = self.index(s);
            self.blocks[index] |= mask;
            s = end + 1;
        }
    }

    fn seen_up_to(&mut self, last_seq: u64) {
        self.top = last_seq;
        self.blocks.fill(u64::MAX);
        let bit = last_seq % BLOCK_BITS;
        let above = if bit == BLOCK_BITS - 1 {
            0
        } else {
            u64::MAX << (bit + 1)
        };
        let index = self.index(last_seq);
        self.blocks[index] &= !above;
    }

    /// Window size W.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Highest sequence number accepted so far (0: none).
    pub fn top(&self) -> u64 {
        self.top
    }

    #[inline]
    fn index(&self, seq: u64) -> usize {
        (seq / BLOCK_BITS) as usize & (self.blocks.len() - 1)
    }

    /// Rebuilds the 64-bit sequence number from the 32 low bits on the
    /// wire (RFC 4303 section 2.2.1, Appendix A): the candidate nearest to
    /// the top of the window, at most 2^31 - 1 ahead or 2^31 behind.
    ///
    /// Appendix A's own rule reads every number left of the window as the
    /// next 2^32 subspace, so a packet just too old costs a decryption and
    /// is counted as `AuthFailed`. Taking the nearer subspace gives the same
    /// answer inside the window and for any jump under 2^31 packets, and
    /// refuses late packets as `ReplayTooOld` before decrypting them.
    #[inline]
    pub fn infer_seq(&self, seq_low: u32) -> Result<u64, DropReason> {
        let delta = seq_low.wrapping_sub(self.top as u32) as i32;
        self.top
            .checked_add_signed(i64::from(delta))
            .ok_or(DropReason::ReplayTooOld)
    }

    /// Cheap pre-decryption test: `Replayed`, `ReplayTooOld`, or `EspSeqZero`.
    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), DropReason> {
        if seq == 0 {
            return Err(DropReason::EspSeqZero);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= self.size {
            return Err(DropReason::ReplayTooOld);
        }
        if self.blocks[self.index(seq)] & (1 << (seq % BLOCK_BITS)) != 0 {
            return Err(DropReason::Replayed);
        }
        Ok(())
    }

    /// Records an authenticated sequence number, sliding the window if it is
    /// new. Ignores sequence numbers [`check`](Self::check) would refuse.
    #[inline]
    pub fn update(&mut self, seq: u64) {
        if self.check(seq).is_err() {
            return;
        }
        if seq > self.top {
            let top_block = self.top / BLOCK_BITS;
            let new_block = seq / BLOCK_BITS;
            let stale = (new_block - top_block).min(self.blocks.len() as u64);
            for i in 1..=stale {
                let index = self.index((top_block + i) * BLOCK_BITS);
                self.blocks[index] = 0;
            }
            self.top = seq;
        }
        let index = self.index(seq);
        self.blocks[index] |= 1 << (seq % BLOCK_BITS);
    }

    /// `check` then `update`: for callers with nothing to verify in between.
    pub fn check_and_update(&mut self, seq: u64) -> Result<(), DropReason> {
        self.check(seq)?;
        self.update(seq);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The obvious model: a set of every accepted number.
    struct Model {
        size: u64,
        top: u64,
        seen: BTreeSet<u64>,
    }

    impl Model {
        fn accept(&mut self, seq: u64) -> Result<(), DropReason> {
            if seq == 0 {
                return Err(DropReason::EspSeqZero);
            }
            if seq <= self.top && self.top - seq >= self.size {
                return Err(DropReason::ReplayTooOld);
            }
            if !self.seen.insert(seq) {
                return Err(DropReason::Replayed);
            }
            self.top = self.top.max(seq);
            Ok(())
        }
    }

    #[test]
    fn raise_to_refuses_what_an_earlier_window_accepted() {
        let mut w = ReplayWindow::new(64).unwrap();
        w.check_and_update(100).unwrap();
        w.raise_to(50);
        assert_eq!(w.top(), 100, "below the top: nothing changes");
        assert_eq!(w.check(99), Ok(()), "99 was never seen");
        w.raise_to(5000);
        assert_eq!(w.top(), 5000);
        for seq in [4999, 5000, 4937] {
            assert_eq!(w.check(seq), Err(DropReason::Replayed), "{seq}");
        }
        assert_eq!(w.check(100), Err(DropReason::ReplayTooOld));
        assert_eq!(w.check_and_update(5001), Ok(()));
        assert_eq!(w.check(5001), Err(DropReason::Replayed));
    }

    /// Below the top, `seen_through` refuses every number up to its
    /// argument that the window still covers, seen or not, and nothing
    /// above it; block edges included.
    #[test]
    fn seen_through_refuses_up_to_a_number_below_the_top() {
        for size in [64u64, 128, 4096] {
            for top in [size / 2, size + 3, 10 * size + 63, 10 * size + 64] {
                for through in [1, top / 3, top.saturating_sub(64).max(1), top.saturating_sub(63).max(1), top - 1, top, top + 5] {
                    let mut w = ReplayWindow::new(size).unwrap();
                    // Every third number accepted, up to `top`.
                    for seq in (1..=top).filter(|s| s % 3 == 0 || *s == top) {
                        w.update(seq);
                    }
                    let before: Vec<_> = (1..=top + 10).map(|s| w.check(s)).collect();
                    w.seen_through(through);
                    for seq in 1..=top + 10 {
                        let was = before[seq as usize - 1];
                        let now = w.check(seq);
                        let want = match () {
                            // Above the top: as `raise_to`.
                            _ if through > top && seq > through => Ok(()),
                            _ if through > top && through - seq >= size => Err(DropReason::ReplayTooOld),
                            _ if through > top => Err(DropReason::Replayed),
                            _ if seq <= through && was == Ok(()) => Err(DropReason::Replayed),
                            _ => was,
                        };
                        assert_eq!(now, want, "size {size} top {top} through {through} seq {seq}");
                    }
                    assert_eq!(w.top(), top.max(through));
                }
            }
        }
    }

    #[test]
    fn sizes() {
        for bad in [0, 1, 32, 63, 65, 100, 4095, MAX_WINDOW * 2] {
            assert_eq!(ReplayWindow::new(bad).unwrap_err(), BadWindowSize(bad));
        }
        for good in [64, 128, 4096, MAX_WINDOW] {
            assert_eq!(ReplayWindow::new(good).unwrap().size(), good);
        }
    }

    #[test]
    fn seq_zero_invalid() {
        let mut w = ReplayWindow::new(64).unwrap();
        assert_eq!(w.check(0), Err(DropReason::EspSeqZero));
        w.update(0);
        assert_eq!(w.top(), 0);
        assert_eq!(w.check_and_update(1), Ok(()));
        assert_eq!(w.check(0), Err(DropReason::EspSeqZero));
    }

    #[test]
    fn in_order_then_replay() {
        let mut w = ReplayWindow::new(DEFAULT_WINDOW).unwrap();
        for seq in 1..10_000 {
            assert_eq!(w.check_and_update(seq), Ok(()));
            assert_eq!(w.check(seq), Err(DropReason::Replayed));
        }
        assert_eq!(w.check(9_999 - 4095), Err(DropReason::Replayed));
        assert_eq!(w.check(9_999 - 4096), Err(DropReason::ReplayTooOld));
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new(64).unwrap();
        assert_eq!(w.check_and_update(1000), Ok(()));
        // 1000 - 63 is the oldest number in a 64 wide window.
        assert_eq!(w.check(937), Ok(()));
        assert_eq!(w.check(936), Err(DropReason::ReplayTooOld));
        assert_eq!(w.check_and_update(937), Ok(()));
        assert_eq!(w.check(937), Err(DropReason::Replayed));
        // Slide by one: 937 falls out.
        assert_eq!(w.check_and_update(1001), Ok(()));
        assert_eq!(w.check(937), Err(DropReason::ReplayTooOld));
        assert_eq!(w.check(938), Ok(()));
        // Out-of-order inside the window is accepted once.
        assert_eq!(w.check_and_update(999), Ok(()));
        assert_eq!(w.check_and_update(999), Err(DropReason::Replayed));
    }

    #[test]
    fn big_jumps_clear_the_ring() {
        let mut w = ReplayWindow::new(128).unwrap();
        for seq in 1..=128 {
            w.check_and_update(seq).unwrap();
        }
        // Jump far beyond the ring: every block must be cleared.
        let far = 1 << 40;
        assert_eq!(w.check_and_update(far), Ok(()));
        for seq in far - 127..far {
            assert_eq!(w.check(seq), Ok(()), "seq {seq}");
        }
        assert_eq!(w.check(far - 128), Err(DropReason::ReplayTooOld));
        assert_eq!(w.check(1), Err(DropReason::ReplayTooOld));
        // A jump of exactly the ring length in blocks (4 blocks of 64).
        let mut w = ReplayWindow::new(128).unwrap();
        for seq in 1..=256 {
            w.check_and_update(seq).unwrap();
        }
        w.check_and_update(256 + 256).unwrap();
        for seq in 512 - 127..512 {
            assert_eq!(w.check(seq), Ok(()), "seq {seq}");
        }
    }

    #[test]
    fn ring_wraps_many_times() {
        let mut w = ReplayWindow::new(64).unwrap();
        // Every other number, far past the 2-block ring, then fill the gaps.
        for seq in (2..100_000).step_by(2) {
            w.check_and_update(seq).unwrap();
            if seq > 2 {
                assert_eq!(w.check(seq - 1), Ok(()));
                assert_eq!(w.check(seq - 2), Err(DropReason::Replayed));
            }
        }
        for seq in (99_998 - 63..99_998).filter(|s| s % 2 == 1) {
            assert_eq!(w.check_and_update(seq), Ok(()));
        }
        for seq in 99_998 - 63..=99_998 {
            assert_eq!(w.check(seq), Err(DropReason::Replayed));
        }
    }

    #[test]
    fn starting_at_refuses_the_past() {
        for last in [1u64, 63, 64, 65, 127, (1 << 32) - 1, 1 << 32, (1 << 32) + 5] {
            let mut w = ReplayWindow::starting_at(64, last).unwrap();
            assert_eq!(w.top(), last);
            for back in 0..64.min(last) {
                assert_eq!(
                    w.check(last - back),
                    Err(DropReason::Replayed),
                    "last {last}"
                );
            }
            for ahead in 1..200 {
                assert_eq!(w.check(last + ahead), Ok(()));
            }
            w.check_and_update(last + 5).unwrap();
            for seq in last + 1..last + 5 {
                assert_eq!(w.check(seq), Ok(()), "last {last} seq {seq}");
            }
        }
    }

    #[test]
    fn esn_inference() {
        // Fresh window: the first 2^31 - 1 numbers; beyond is "before 1".
        let w = ReplayWindow::new(4096).unwrap();
        assert_eq!(w.infer_seq(0), Ok(0));
        assert_eq!(w.infer_seq(1), Ok(1));
        assert_eq!(w.infer_seq(0x7fff_ffff), Ok(0x7fff_ffff));
        assert_eq!(w.infer_seq(0x8000_0000), Err(DropReason::ReplayTooOld));
        assert_eq!(w.infer_seq(0xffff_ffff), Err(DropReason::ReplayTooOld));

        // Window inside one subspace (Appendix A case A).
        let top = (7u64 << 32) + 10_000;
        let w = ReplayWindow::starting_at(4096, top).unwrap();
        assert_eq!(w.infer_seq(10_001), Ok(top + 1));
        assert_eq!(w.infer_seq(10_000 - 4095), Ok(top - 4095));
        // Left of the window: the same subspace, refused before decryption.
        assert_eq!(w.infer_seq(10_000 - 4096), Ok(top - 4096));
        assert_eq!(w.check(top - 4096), Err(DropReason::ReplayTooOld));
        // Far jumps ahead, up to 2^31 - 1, wrap into the next subspace.
        assert_eq!(w.infer_seq(10_000 + 0x7fff_ffff), Ok(top + 0x7fff_ffff));
        let low = (10_000u64 + 0xffff_0000) as u32;
        assert_eq!(w.infer_seq(low), Ok(top - 0x1_0000));
        assert_eq!(
            w.infer_seq(10_000u32.wrapping_add(0x8000_0000)),
            Ok(top - 0x8000_0000)
        );

        // Window spanning subspaces 7 and 8 (Appendix A case B).
        let top = (8u64 << 32) + 5;
        let w = ReplayWindow::starting_at(4096, top).unwrap();
        assert_eq!(w.infer_seq(6), Ok((8 << 32) + 6));
        assert_eq!(w.infer_seq(0), Ok(8 << 32));
        assert_eq!(w.infer_seq(0xffff_ffff), Ok((7 << 32) + 0xffff_ffff));
        assert_eq!(w.infer_seq(0xffff_f006), Ok((7 << 32) + 0xffff_f006));
        assert_eq!(w.infer_seq(0xffff_f005), Ok((7 << 32) + 0xffff_f005));
        assert_eq!(
            w.check((7 << 32) + 0xffff_f005),
            Err(DropReason::ReplayTooOld)
        );

        // Top of the 64-bit space: nothing wraps to small numbers.
        let w = ReplayWindow::starting_at(64, u64::MAX - 2).unwrap();
        assert_eq!(w.infer_seq(u32::MAX), Ok(u64::MAX));
        assert_eq!(w.infer_seq(0), Err(DropReason::ReplayTooOld));

        // Crossing 2^32 packet by packet.
        let mut w = ReplayWindow::starting_at(64, (1 << 32) - 10).unwrap();
        for seq in (1u64 << 32) - 9..(1 << 32) + 10 {
            let inferred = w.infer_seq(seq as u32).unwrap();
            assert_eq!(inferred, seq);
            w.check_and_update(inferred).unwrap();
        }
    }

    proptest! {
        #[test]
        fn matches_model(
            size_log in 6u32..9,
            start in prop_oneof![Just(0u64), 0u64..1 << 40],
            steps in proptest::collection::vec((0u8..4, 0u64..600), 1..400),
        ) {
            let size = 1u64 << size_log;
            let mut w = if start == 0 {
                ReplayWindow::new(size).unwrap()
            } else {
                ReplayWindow::starting_at(size, start).unwrap()
            };
            let mut model = Model { size, top: start, seen: BTreeSet::new() };
            if start > 0 {
                for s in start.saturating_sub(size - 1).max(1)..=start {
                    model.seen.insert(s);
                }
            }
            for (kind, delta) in steps {
                let top = model.top;
                let seq = match kind {
                    0 => top + delta % 4 + 1,
                    1 => top.saturating_sub(delta),
                    2 => top + delta * 97,
                    _ => top.saturating_sub(size - 1 + delta % 3),
                };
                prop_assert_eq!(w.check_and_update(seq), model.accept(seq), "seq {}", seq);
                prop_assert_eq!(w.top(), model.top);
            }
        }
    }
}
