//! Reassembly of inner packets cut across frames: a fixed pool of slots set
//! up in advance, each with a buffer of `max_packet` bytes, timed out by `now`.

use super::frame::DataRecord;
use crate::{DropReason, Nanos};

/// Most fragments one inner packet may be cut into: 64 covers 65535 bytes in
/// 1024-byte pieces (engineering choice; the fragment list is a fixed array).
pub const MAX_FRAGMENTS: usize = 64;

/// Reassembly sizing and timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Packets reassembled at once.
    pub slots: usize,
    /// Largest inner packet accepted (bytes); a 9000-byte jumbo frame plus headroom by default.
    pub max_packet: usize,
    /// A packet whose fragments are not all in after this long is dropped.
    pub timeout: Nanos,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            slots: 64,
            max_packet: 9216,
            // Above the re-orderer's default hold ceiling, so a fragment never
            // waits less than the packets around it.
            timeout: 200_000_000,
        }
    }
}

/// Reassembly counters. Conservation: `fragments` = `fragments_completed` +
/// `fragments_dropped` + fragments still pending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyCounters {
    /// Fragments pushed.
    pub fragments: u64,
    /// Fragments that became part of a complete packet.
    pub fragments_completed: u64,
    /// Fragments dropped, alone or with their packet.
    pub fragments_dropped: u64,
    /// Packets completed.
    pub completed: u64,
    /// Fragments dropped as exact duplicates.
    pub duplicate: u64,
    /// Packets dropped for overlapping or contradictory fragments.
    pub overlap: u64,
    /// Packets dropped for being too large or cut too often.
    pub oversize: u64,
    /// Packets dropped incomplete at timeout.
    pub timed_out: u64,
    /// Packets dropped incomplete to free a slot for a newer one (also
    /// `DropReason::FragmentMissing`).
    pub evicted: u64,
    /// Packets dropped incomplete because their sender stream started over
    /// (also `DropReason::FragmentMissing`).
    pub restarted: u64,
}

/// A packet made whole. `packet` borrows the reassembler until dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Reassembled<'r> {
    /// Flow bucket.
    pub bucket: u16,
    /// Flow sequence.
    pub flow_seq: u32,
    /// Lowest stream sequence among the frames that carried it.
    pub stream_seq: u64,
    /// The inner packet.
    pub packet: &'r [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    stream: u16,
    bucket: u16,
    flow_seq: u32,
}

#[derive(Debug, Clone)]
struct Slot {
    key: Option<Key>,
    started: Nanos,
    stream_seq: u64,
    /// Packet length once the last fragment is in.
    total: Option<usize>,
    received: usize,
    frags: usize,
    ranges: [(u32, u32); MAX_FRAGMENTS],
}

impl Slot {
    const FREE: Slot = Slot {
        key: None,
        started: 0,
        stream_seq: 0,
        total: None,
        received: 0,
        frags: 0,
        ranges: [(0, 0); MAX_FRAGMENTS],
    };
}

/// The fragment reassembler of one bundle (all its streams).
#[derive(Debug, Clone)]
pub struct Reassembler {
    cfg: ReassemblyConfig,
    slots: Vec<Slot>,
    buf: Vec<u8>,
    counters: ReassemblyCounters,
    /// Slots holding a packet: `poll` and lookups skip the scan at 0.
    in_use: usize,
    /// No slot times out before this (a lower bound): `poll` is a compare
    /// until then, not a scan of every slot on every burst.
    earliest: Nanos,
}

impl Reassembler {
    /// Allocates every slot and buffer now.
    pub fn new(cfg: ReassemblyConfig) -> Self {
        let cfg = ReassemblyConfig {
            slots: cfg.slots.max(1),
            max_packet: cfg.max_packet.min(super::frame::MAX_INNER_PACKET),
            ..cfg
        };
        Reassembler {
            slots: vec![Slot::FREE; cfg.slots],
            buf: vec![0; cfg.slots * cfg.max_packet],
            counters: ReassemblyCounters::default(),
            in_use: 0,
            earliest: Nanos::MAX,
            cfg,
        }
    }

    /// Counters.
    pub fn counters(&self) -> &ReassemblyCounters {
        &self.counters
    }

    /// Packets being reassembled.
    pub fn pending(&self) -> usize {
        self.in_use
    }

    /// Fragments held in pending packets.
    pub fn pending_fragments(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.key.is_some())
            .map(|s| s.frags)
            .sum()
    }

    /// Drops the packets being reassembled for sender stream `stream`,
    /// which started over: its flow sequences begin again, and a new
    /// packet's pieces must not meet an old one's. Returns how many.
    pub fn discard_stream(&mut self, stream: u16) -> usize {
        let mut n = 0;
        for i in 0..self.slots.len() {
            if self.slots[i].key.is_some_and(|k| k.stream == stream) {
                self.discard(i);
                n += 1;
            }
        }
        self.counters.restarted += n as u64;
        n
    }

    fn discard(&mut self, i: usize) {
        self.counters.fragments_dropped += self.slots[i].frags as u64;
        self.release(i);
    }

    fn release(&mut self, i: usize) {
        if self.slots[i].key.take().is_some() {
            self.in_use -= 1;
        }
    }

    /// Adds a fragment carried by frame `stream`/`stream_seq`. Returns the
    /// packet when it is complete, or why this fragment was dropped.
    pub fn push(
        &mut self,
        stream: u16,
        stream_seq: u64,
        rec: &DataRecord<'_>,
        now: Nanos,
    ) -> Result<Option<Reassembled<'_>>, DropReason> {
        self.counters.fragments += 1;
        let key = Key {
            stream,
            bucket: rec.bucket,
            flow_seq: rec.flow_seq,
        };
        let found = if self.in_use == 0 { None } else { self.slots.iter().position(|s| s.key == Some(key)) };
        let start = usize::from(rec.offset);
        let end = start + rec.data.len();
        if end > self.cfg.max_packet || rec.data.is_empty() {
            self.counters.fragments_dropped += 1;
            self.counters.oversize += 1;
            if let Some(i) = found {
                self.discard(i);
            }
            return Err(DropReason::FragmentOversize);
        }
        let i = match found {
            Some(i) => i,
            None => {
                let i = match self.slots.iter().position(|s| s.key.is_none()) {
                    Some(i) => i,
                    None => {
                        let oldest = (0..self.slots.len())
                            .min_by_key(|&i| self.slots[i].started)
                            .unwrap_or(0);
                        self.counters.evicted += 1;
                        self.discard(oldest);
                        oldest
                    }
                };
                self.in_use += 1;
                self.earliest = self.earliest.min(now.saturating_add(self.cfg.timeout));
                let s = &mut self.slots[i];
                s.key = Some(key);
                s.started = now;
                s.stream_seq = stream_seq;
                s.total = None;
                s.received = 0;
                s.frags = 0;
                i
            }
        };
        let s = &self.slots[i];
        let (start32, end32) = (start as u32, end as u32);
        let mut verdict = Ok(());
        if s.ranges[..s.frags].contains(&(start32, end32)) {
            verdict = Err(DropReason::FragmentDuplicate);
        } else if s.ranges[..s.frags]
            .iter()
            .any(|&(a, b)| start32 < b && a < end32)
            || s.total.is_some_and(|t| end > t || (rec.last && end != t))
            // A last piece that ends before pieces already held.
            || (rec.last && s.ranges[..s.frags].iter().any(|&(_, b)| b > end32))
        {
            verdict = Err(DropReason::FragmentOverlap);
        } else if s.frags == MAX_FRAGMENTS {
            verdict = Err(DropReason::FragmentOversize);
        }
        match verdict {
            Err(DropReason::FragmentDuplicate) => {
                self.counters.fragments_dropped += 1;
                self.counters.duplicate += 1;
                return Err(DropReason::FragmentDuplicate);
            }
            Err(reason) => {
                self.counters.fragments_dropped += 1;
                if reason == DropReason::FragmentOverlap {
                    self.counters.overlap += 1;
                } else {
                    self.counters.oversize += 1;
                }
                self.discard(i);
                return Err(reason);
            }
            Ok(()) => {}
        }
        let base = i * self.cfg.max_packet;
        self.buf[base + start..base + end].copy_from_slice(rec.data);
        let s = &mut self.slots[i];
        s.ranges[s.frags] = (start32, end32);
        s.frags += 1;
        s.received += rec.data.len();
        s.stream_seq = s.stream_seq.min(stream_seq);
        if rec.last {
            s.total = Some(end);
        }
        // Overlaps, and pieces past the end, are refused: `received ==
        // total` means every byte is in.
        let Some(total) = s.total.filter(|&t| t == s.received) else {
            return Ok(None);
        };
        s.key = None;
        self.counters.completed += 1;
        self.counters.fragments_completed += s.frags as u64;
        self.in_use -= 1;
        Ok(Some(Reassembled {
            bucket: key.bucket,
            flow_seq: key.flow_seq,
            stream_seq: s.stream_seq,
            packet: &self.buf[base..base + total],
        }))
    }

    /// Drops packets whose reassembly has timed out (`DropReason::FragmentMissing`,
    /// counted in `timed_out`); returns how many.
    pub fn poll(&mut self, now: Nanos) -> usize {
        if self.in_use == 0 || now < self.earliest {
            return 0;
        }
        let mut n = 0;
        let mut earliest = Nanos::MAX;
        for i in 0..self.slots.len() {
            if self.slots[i].key.is_none() {
                continue;
            }
            let deadline = self.slots[i].started.saturating_add(self.cfg.timeout);
            if now >= deadline {
                self.counters.timed_out += 1;
                self.discard(i);
                n += 1;
            } else {
                earliest = earliest.min(deadline);
            }
        }
        self.earliest = earliest;
        n
    }

    /// When `poll` next has something to do.
    pub fn next_timeout(&self) -> Option<Nanos> {
        self.slots
            .iter()
            .filter(|s| s.key.is_some())
            .map(|s| s.started.saturating_add(self.cfg.timeout))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: u16, last: bool, data: &[u8]) -> DataRecord<'_> {
        DataRecord {
            bucket: 1,
            flow_seq: 9,
            offset,
            first: offset == 0,
            last,
            data,
        }
    }

    fn small() -> Reassembler {
        Reassembler::new(ReassemblyConfig {
            slots: 2,
            max_packet: 100,
            timeout: 1000,
        })
    }

    fn conserved(r: &Reassembler) {
        let c = r.counters();
        assert_eq!(
            c.fragments,
            c.fragments_completed + c.fragments_dropped + r.pending_fragments() as u64
        );
    }

    #[test]
    fn in_any_order() {
        let mut r = small();
        assert_eq!(r.push(0, 5, &rec(4, true, &[5, 6]), 0), Ok(None));
        assert_eq!(r.push(0, 3, &rec(0, false, &[1, 2]), 0), Ok(None));
        let done = r.push(0, 4, &rec(2, false, &[3, 4]), 0).unwrap().unwrap();
        assert_eq!(
            done,
            Reassembled {
                bucket: 1,
                flow_seq: 9,
                stream_seq: 3,
                packet: &[1, 2, 3, 4, 5, 6]
            }
        );
        assert_eq!(r.pending(), 0);
        assert_eq!(r.counters().completed, 1);
        conserved(&r);
    }

    #[test]
    fn duplicate_fragment() {
        let mut r = small();
        r.push(0, 0, &rec(0, false, &[1, 2]), 0).unwrap();
        assert_eq!(
            r.push(0, 0, &rec(0, false, &[1, 2]), 0),
            Err(DropReason::FragmentDuplicate)
        );
        assert_eq!(r.pending(), 1);
        assert_eq!(
            r.push(0, 1, &rec(2, true, &[3]), 0)
                .unwrap()
                .unwrap()
                .packet,
            &[1, 2, 3]
        );
        conserved(&r);
    }

    #[test]
    fn overlap_drops_the_packet() {
        let mut r = small();
        r.push(0, 0, &rec(0, false, &[1, 2, 3]), 0).unwrap();
        assert_eq!(
            r.push(0, 0, &rec(2, true, &[3, 4]), 0),
            Err(DropReason::FragmentOverlap)
        );
        assert_eq!(r.pending(), 0);
        assert_eq!(r.counters().overlap, 1);
        conserved(&r);
    }

    #[test]
    fn data_past_the_end_is_overlap() {
        let mut r = small();
        r.push(0, 0, &rec(4, true, &[5]), 0).unwrap();
        assert_eq!(
            r.push(0, 0, &rec(5, false, &[6]), 0),
            Err(DropReason::FragmentOverlap)
        );
        r.push(0, 0, &rec(4, true, &[5]), 0).unwrap();
        assert_eq!(
            r.push(0, 0, &rec(2, true, &[3]), 0),
            Err(DropReason::FragmentOverlap)
        );
        conserved(&r);
    }

    #[test]
    fn a_restarted_stream_loses_its_pieces_only() {
        let mut r = small();
        r.push(3, 0, &rec(0, false, &[1; 10]), 0).unwrap();
        r.push(4, 0, &rec(0, false, &[2; 10]), 0).unwrap();
        assert_eq!(r.discard_stream(3), 1);
        assert_eq!((r.pending(), r.counters().restarted), (1, 1));
        // Stream 3's new packet of the same flow sequence is its own.
        r.push(3, 0, &rec(0, false, &[5; 10]), 0).unwrap();
        let p = r.push(3, 0, &rec(10, true, &[6; 5]), 0).unwrap().unwrap();
        assert_eq!(p.packet, [[5; 10].as_slice(), &[6; 5]].concat());
        conserved(&r);
    }

    #[test]
    fn an_end_before_pieces_held_is_overlap() {
        // Found by review: 60..70 held, then a last piece 10..50. Bytes
        // 50 of 50 were counted in, but 0..10 were never written (the
        // slot's previous packet would have been delivered in their
        // place) and 60..70 lie past the end.
        let mut r = small();
        r.push(0, 0, &rec(0, false, &[0xee; 10]), 0).unwrap();
        r.push(0, 0, &rec(60, false, &[0xee; 10]), 0).unwrap();
        assert_eq!(r.push(0, 0, &rec(10, true, &[1; 40]), 0), Err(DropReason::FragmentOverlap));
        assert_eq!(r.pending(), 0);
        // The same pieces of a packet whose first 10 bytes were never
        // sent: refused too, and nothing is delivered.
        r.push(0, 0, &rec(60, false, &[2; 10]), 0).unwrap();
        assert_eq!(r.push(0, 0, &rec(10, true, &[2; 40]), 0), Err(DropReason::FragmentOverlap));
        assert_eq!((r.pending(), r.counters().completed, r.counters().overlap), (0, 0, 2));
        conserved(&r);
    }

    #[test]
    fn oversize() {
        let mut r = small();
        r.push(0, 0, &rec(0, false, &[0; 10]), 0).unwrap();
        assert_eq!(
            r.push(0, 0, &rec(95, true, &[0; 10]), 0),
            Err(DropReason::FragmentOversize)
        );
        assert_eq!(r.pending(), 0);
        conserved(&r);
    }

    #[test]
    fn too_many_fragments() {
        let mut r = Reassembler::new(ReassemblyConfig {
            slots: 1,
            max_packet: 1000,
            timeout: 1000,
        });
        for i in 0..MAX_FRAGMENTS as u16 {
            assert_eq!(r.push(0, 0, &rec(i, false, &[0]), 0), Ok(None));
        }
        assert_eq!(
            r.push(0, 0, &rec(MAX_FRAGMENTS as u16, true, &[0]), 0),
            Err(DropReason::FragmentOversize)
        );
        conserved(&r);
    }

    #[test]
    fn timeout_and_missing() {
        let mut r = small();
        r.push(0, 0, &rec(0, false, &[1]), 100).unwrap();
        assert_eq!(r.next_timeout(), Some(1100));
        assert_eq!(r.poll(1099), 0);
        assert_eq!(r.poll(1100), 1);
        assert_eq!(r.counters().timed_out, 1);
        assert_eq!(r.next_timeout(), None);
        conserved(&r);
    }

    #[test]
    fn full_pool_evicts_the_oldest() {
        let mut r = small();
        let a = DataRecord {
            flow_seq: 1,
            ..rec(0, false, &[1])
        };
        let b = DataRecord {
            flow_seq: 2,
            ..rec(0, false, &[1])
        };
        let c = DataRecord {
            flow_seq: 3,
            ..rec(0, false, &[1])
        };
        r.push(0, 0, &a, 10).unwrap();
        r.push(0, 0, &b, 5).unwrap();
        r.push(0, 0, &c, 20).unwrap();
        assert_eq!(r.counters().evicted, 1);
        // b was oldest: its tail now starts a fresh slot, evicting a.
        assert_eq!(
            r.push(
                0,
                0,
                &DataRecord {
                    offset: 1,
                    first: false,
                    last: true,
                    ..b
                },
                30
            ),
            Ok(None)
        );
        assert_eq!(r.counters().evicted, 2);
        assert_eq!(
            r.push(
                0,
                0,
                &DataRecord {
                    offset: 1,
                    first: false,
                    last: true,
                    ..c
                },
                30
            )
            .unwrap()
            .unwrap()
            .packet,
            &[1, 1]
        );
        conserved(&r);
    }

    #[test]
    fn streams_do_not_mix() {
        let mut r = small();
        r.push(0, 0, &rec(0, false, &[1]), 0).unwrap();
        assert_eq!(r.push(1, 0, &rec(1, true, &[2]), 0), Ok(None));
        assert_eq!(r.pending(), 2);
    }
}
