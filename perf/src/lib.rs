//! braid's on-box benchmarks and traffic tools. A benchmark reports figures
//! (JSON on stdout); it asserts nothing. `scripts/bench` runs them and keeps
//! results in `perf/results/`.

/// Test frames: Ethernet II with the IEEE local-experimental EtherType, a
/// 64-bit sequence number, then bytes derived from it, so a sink can check
/// order, length and every byte.
pub mod pattern {
    /// IEEE 802 local experimental EtherType 1.
    pub const ETHERTYPE: u16 = 0x88b5;
    const SEQ_AT: usize = 14;
    const BODY_AT: usize = SEQ_AT + 8;
    /// Smallest frame the pattern fits in.
    pub const MIN_LEN: usize = BODY_AT;

    /// Writes frame `seq` into `buf` (its whole length).
    pub fn fill(buf: &mut [u8], seq: u64) {
        buf[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        buf[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        buf[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
        buf[SEQ_AT..BODY_AT].copy_from_slice(&seq.to_le_bytes());
        for (i, b) in buf[BODY_AT..].iter_mut().enumerate() {
            *b = byte(seq, i);
        }
    }

    /// The sequence number of a pattern frame, if it is one.
    pub fn seq(buf: &[u8]) -> Option<u64> {
        if buf.len() < MIN_LEN || buf[12..14] != ETHERTYPE.to_be_bytes() {
            return None;
        }
        Some(u64::from_le_bytes(buf[SEQ_AT..BODY_AT].try_into().ok()?))
    }

    /// True when `buf` is exactly frame `seq` of length `len`.
    pub fn check(buf: &[u8], seq: u64, len: usize) -> bool {
        buf.len() == len
            && self::seq(buf) == Some(seq)
            && buf[BODY_AT..].iter().enumerate().all(|(i, &b)| b == byte(seq, i))
    }

    #[inline]
    fn byte(seq: u64, i: usize) -> u8 {
        (seq as usize).wrapping_mul(31).wrapping_add(i) as u8
    }

    /// Frame length for sequence `seq` cycling through `sizes`.
    pub fn size_of(seq: u64, sizes: &[usize]) -> usize {
        sizes[(seq % sizes.len() as u64) as usize]
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn fill_then_check() {
            let mut b = vec![0u8; 100];
            super::fill(&mut b, 42);
            assert!(super::check(&b, 42, 100));
            assert!(!super::check(&b, 43, 100));
            b[99] ^= 1;
            assert!(!super::check(&b, 42, 100));
            assert_eq!(super::seq(&b[..10]), None);
        }
    }
}
