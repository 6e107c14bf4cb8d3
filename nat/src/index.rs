//! A preallocated open-addressing index from a 64-bit hash to a slot number
//! in a slab: the mappings (sessions live in `table.rs`). Linear probing,
//! load kept at or below one half, backward-shift deletion (no tombstones,
//! so probe lengths do not grow with churn). Each bucket is 8 bytes: the
//! hash's top 32 bits as a tag and the slot number; the caller confirms a
//! candidate against its slab.

/// Empty bucket.
const EMPTY: u64 = 0;

/// The index; never grows after `with_bound`.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    buckets: Vec<u64>,
    mask: usize,
}

#[inline(always)]
const fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

#[inline(always)]
const fn pack(tag: u32, slot: u32) -> u64 {
    ((tag as u64) << 32) | (slot as u64 + 1)
}

impl Index {
    /// Room for `bound` entries at load one half or less.
    pub fn with_bound(bound: usize) -> Index {
        let n = (bound.max(1) * 2).next_power_of_two();
        Index {
            buckets: vec![EMPTY; n],
            mask: n - 1,
        }
    }

    #[inline(always)]
    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask
    }

    /// The slot whose entry has `hash` and satisfies `is`.
    #[inline]
    pub fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(hash);
        let mut i = self.home(t);
        loop {
            let b = self.buckets[i];
            if b == EMPTY {
                return None;
            }
            if (b >> 32) as u32 == t {
                let slot = (b as u32).wrapping_sub(1);
                if is(slot) {
                    return Some(slot);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Adds `slot` under `hash`. The caller keeps the entry count within
    /// the bound and never inserts a slot twice.
    #[inline]
    pub fn insert(&mut self, hash: u64, slot: u32) {
        let t = tag(hash);
        let mut i = self.home(t);
        while self.buckets[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.buckets[i] = pack(t, slot);
    }

    /// Removes `slot`, inserted under `hash`; false when it is not there.
    pub fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let want = pack(tag(hash), slot);
        let mut i = self.home(tag(hash));
        loop {
            match self.buckets[i] {
                EMPTY => return false,
                b if b == want => break,
                _ => i = (i + 1) & self.mask,
            }
        }
        // Backward shift: pull later entries of the cluster into the hole
        // when their home is not between the hole and themselves.
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        loop {
            let b = self.buckets[j];
            if b == EMPTY {
                break;
            }
            let home = self.home((b >> 32) as u32);
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.buckets[hole] = b;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.buckets[hole] = EMPTY;
        true
    }

    /// Bytes held.
    pub fn memory(&self) -> usize {
        self.buckets.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn splitmix(s: &mut u64) -> u64 {
        *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn churn_matches_a_hashmap() {
        // Few distinct tags (heavy clustering) and many: both must agree
        // with a reference map through inserts and removals.
        for tag_bits in [3u32, 32] {
            let mut idx = Index::with_bound(500);
            let mut reference: HashMap<u32, u64> = HashMap::new();
            let mut s = 7u64;
            for step in 0..20_000u32 {
                let r = splitmix(&mut s);
                let slot = (r % 500) as u32;
                let hash = (((r >> 16) as u32 >> (32 - tag_bits)) as u64) << 32 | slot as u64;
                if let Some(h) = reference.remove(&slot) {
                    assert!(idx.remove(h, slot), "step {step}");
                } else {
                    idx.insert(hash, slot);
                    reference.insert(slot, hash);
                }
                if step % 97 == 0 {
                    for (&sl, &h) in &reference {
                        assert_eq!(idx.find(h, |x| x == sl), Some(sl));
                    }
                }
            }
            assert!(!idx.remove(1 << 32, 999));
        }
    }
}
