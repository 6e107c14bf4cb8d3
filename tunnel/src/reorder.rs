//! Receive-side re-ordering per inner flow bucket, across the tunnels of a
//! bundle. One `Reorderer` serves one sender stream.
//!
//! Packets that arrive ahead of their bucket's next sequence wait in a fixed
//! pool of slots that store only the caller's handle (an mbuf index, say) and
//! a little metadata: no packet is copied. A gap is skipped when every live
//! path has already delivered a later frame of the stream (paths are FIFO, so
//! the missing packet is lost), or after `hold_time`, or when the slots run
//! out.
//!
//! The hold time is the larger of two estimates of how long a packet may
//! trail the ones sent after it: the delay skew between live paths that
//! probes measure, and the reordering this re-orderer has seen itself. The
//! probes' skew is a smoothed average; paths whose queues fill and drain
//! (narrow links under TCP) reorder by far more at their peaks. So every
//! gap filled late is a sample (how long the packets behind it waited), and
//! a packet that arrives after its gap was given up at the hold time proves
//! the hold too short by its lateness (as RACK's reordering window grows on
//! spurious retransmissions, RFC 8985 section 6.2): it trailed the
//! packets behind its gap by `now - gap_since`, as exactly as a gap filled
//! in time. The largest sample, plus the margin, is held until it decays
//! (a quarter a second).

use crate::{DropReason, Nanos};

const NIL: u32 = u32::MAX;

/// Sequence metadata of one inner packet, from its data record(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    /// Flow bucket.
    pub bucket: u16,
    /// Sequence within the bucket.
    pub flow_seq: u32,
    /// Stream sequence of the frame that carried it (lowest, if fragmented).
    pub stream_seq: u64,
}

/// Bounds of the hold time: `clamp(skew + margin, floor, ceiling)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldConfig {
    /// Shortest hold.
    pub floor: Nanos,
    /// Longest hold: the most latency a lost packet adds to its flow.
    pub ceiling: Nanos,
    /// Added to the measured skew for jitter.
    pub margin: Nanos,
}

impl Default for HoldConfig {
    /// Engineering choices: 1 ms floor and 2 ms margin absorb WAN queueing
    /// jitter; 100 ms ceiling bounds the stall a loss can cause.
    fn default() -> Self {
        HoldConfig {
            floor: 1_000_000,
            ceiling: 100_000_000,
            margin: 2_000_000,
        }
    }
}

/// Sizing of a re-orderer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorderConfig {
    /// Flow buckets of the stream (as the sender's).
    pub buckets: u16,
    /// Tunnels of the bundle.
    pub paths: usize,
    /// Hold slots in total.
    pub slots: usize,
    /// Hold slots one bucket may take.
    pub per_bucket: usize,
    /// Hold time bounds.
    pub hold: HoldConfig,
}

impl Default for ReorderConfig {
    fn default() -> Self {
        ReorderConfig {
            buckets: 256,
            paths: 1,
            slots: 1024,
            per_bucket: 64,
            hold: HoldConfig::default(),
        }
    }
}

/// Re-orderer counters. Conservation: `pushed` = `released_in_order` +
/// `released_late` + `released_passed` + `released_forced` + `duplicates` +
/// `dropped_too_late` + `overflow` + `bad_bucket` + packets still held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReorderCounters {
    /// Packets pushed.
    pub pushed: u64,
    /// Packets that had to wait in a slot.
    pub held: u64,
    /// Released with no gap skipped before them.
    pub released_in_order: u64,
    /// Released after a gap was skipped at `hold_time`.
    pub released_late: u64,
    /// Released after a gap was skipped because every live path was past it.
    pub released_passed: u64,
    /// Released after a gap was skipped for want of slots (or by `flush`).
    pub released_forced: u64,
    /// Flow sequences skipped (presumed lost).
    pub skipped: u64,
    /// Dropped: already delivered or already held.
    pub duplicates: u64,
    /// Dropped: their sequence had been skipped.
    pub dropped_too_late: u64,
    /// Dropped: no slot free and nothing of their bucket to release.
    pub overflow: u64,
    /// Dropped: bucket beyond this re-orderer's configuration.
    pub bad_bucket: u64,
    /// Times a late packet raised the learned reordering (the hold time).
    pub hold_raised: u64,
}

impl ReorderCounters {
    /// Adds another re-orderer's.
    pub fn merge(&mut self, o: &ReorderCounters) {
        self.pushed += o.pushed;
        self.held += o.held;
        self.released_in_order += o.released_in_order;
        self.released_late += o.released_late;
        self.released_passed += o.released_passed;
        self.released_forced += o.released_forced;
        self.skipped += o.skipped;
        self.duplicates += o.duplicates;
        self.dropped_too_late += o.dropped_too_late;
        self.overflow += o.overflow;
        self.bad_bucket += o.bad_bucket;
        self.hold_raised += o.hold_raised;
    }
}

/// What became of a pushed packet that was not dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Released to `out` at once (with any held packets it unblocked).
    Released,
    /// Waiting for the packets before it.
    Held,
}

#[derive(Debug, Clone, Copy)]
enum Release {
    InOrder,
    Late,
    Passed,
    Forced,
}

#[derive(Debug)]
struct Slot<H> {
    handle: Option<H>,
    seq: u32,
    stream_seq: u64,
    arrival: Nanos,
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    next_seq: u32,
    /// Bit i: `next_seq - 1 - i` was released (duplicate detection).
    released: u64,
    head: u32,
    /// Last of the sorted list: a packet above it (the usual case, even
    /// with many held) is appended without walking the list.
    tail: u32,
    len: usize,
    gap_since: Nanos,
    active_at: u32,
    /// The gap of this bucket last given up at the hold time: its flow
    /// sequences `late_from..late_to` and when the packets behind it began
    /// to wait (`late_since`; 0: none since the last other skip). A packet
    /// of it that comes after all trailed its successors by
    /// `now - late_since`.
    late_since: Nanos,
    late_from: u32,
    late_to: u32,
}

#[derive(Debug, Clone, Copy)]
struct PathView {
    live: bool,
    high: Option<u64>,
    delay: Option<Nanos>,
}

/// Held packets looked at for the age of a bucket's next gap.
const GAP_SCAN: usize = 16;

/// The learned reordering loses a quarter of itself this often.
const DECAY_PERIOD: Nanos = 1_000_000_000;

fn serial_diff(a: u32, b: u32) -> i32 {
    // RFC 1982 serial number arithmetic.
    a.wrapping_sub(b) as i32
}

/// The re-orderer of one sender stream. `H` is the caller's packet handle.
#[derive(Debug)]
pub struct Reorderer<H> {
    cfg: ReorderConfig,
    slots: Vec<Slot<H>>,
    free: Vec<u32>,
    buckets: Vec<Bucket>,
    active: Vec<u16>,
    paths: Vec<PathView>,
    /// The hold time: the larger of `skew_hold` and `learned` + margin,
    /// within the configured bounds.
    hold: Nanos,
    /// From the paths' measured delays.
    skew_hold: Nanos,
    /// The longest a packet trailed its successors lately (decaying).
    learned: Nanos,
    /// When `learned` next decays.
    decay_at: Nanos,
    counters: ReorderCounters,
}

impl<H> Reorderer<H> {
    /// Allocates every slot now. All paths start live; flow sequences at 0.
    pub fn new(cfg: ReorderConfig) -> Self {
        let cfg = ReorderConfig {
            buckets: cfg.buckets.max(1),
            slots: cfg.slots.clamp(1, NIL as usize - 1),
            per_bucket: cfg.per_bucket.max(1),
            hold: HoldConfig {
                ceiling: cfg.hold.ceiling.max(cfg.hold.floor),
                ..cfg.hold
            },
            ..cfg
        };
        let mut r = Reorderer {
            slots: (0..cfg.slots)
                .map(|_| Slot {
                    handle: None,
                    seq: 0,
                    stream_seq: 0,
                    arrival: 0,
                    next: NIL,
                })
                .collect(),
            free: (0..cfg.slots as u32).rev().collect(),
            buckets: vec![
                Bucket {
                    next_seq: 0,
                    released: 0,
                    head: NIL,
                    tail: NIL,
                    len: 0,
                    gap_since: 0,
                    active_at: NIL,
                    late_since: 0,
                    late_from: 0,
                    late_to: 0,
                };
                usize::from(cfg.buckets)
            ],
            active: Vec::with_capacity(usize::from(cfg.buckets)),
            paths: vec![
                PathView {
                    live: true,
                    high: None,
                    delay: None
                };
                cfg.paths
            ],
            hold: cfg.hold.ceiling,
            skew_hold: cfg.hold.ceiling,
            learned: 0,
            decay_at: 0,
            counters: ReorderCounters::default(),
            cfg,
        };
        r.update_hold();
        r
    }

    /// Counters.
    pub fn counters(&self) -> &ReorderCounters {
        &self.counters
    }

    /// Packets waiting in slots.
    pub fn held(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The next flow sequence `bucket` will release.
    pub fn next_expected(&self, bucket: u16) -> Option<u32> {
        self.buckets.get(usize::from(bucket)).map(|b| b.next_seq)
    }

    /// The current hold time.
    pub fn hold_time(&self) -> Nanos {
        self.hold
    }

    /// The reordering learned from late packets (see the module's
    /// documentation), before the margin.
    pub fn learned_reordering(&self) -> Nanos {
        self.learned
    }

    /// Marks a path live or dead (from liveness); dead paths do not block
    /// the every-path-is-past rule.
    pub fn set_path_live(&mut self, path: usize, live: bool) {
        if let Some(p) = self.paths.get_mut(path) {
            p.live = live;
        }
        self.update_hold();
    }

    /// Sets a path's measured one-way delay (RTT/2 will do); the hold time
    /// follows the skew between live paths.
    pub fn set_path_delay(&mut self, path: usize, delay: Option<Nanos>) {
        if let Some(p) = self.paths.get_mut(path) {
            p.delay = delay;
        }
        self.update_hold();
    }

    fn update_hold(&mut self) {
        // A live path of unknown delay could be the slowest: hold the ceiling.
        let live = self.paths.iter().filter(|p| p.live);
        let unknown = live.clone().any(|p| p.delay.is_none());
        let (lo, hi) = live
            .filter_map(|p| p.delay)
            .fold((Nanos::MAX, 0), |(lo, hi), d| (lo.min(d), hi.max(d)));
        let h = &self.cfg.hold;
        self.skew_hold = if unknown || lo > hi {
            h.ceiling
        } else {
            (hi - lo).saturating_add(h.margin).clamp(h.floor, h.ceiling)
        };
        self.refresh_hold();
    }

    fn refresh_hold(&mut self) {
        let h = &self.cfg.hold;
        let learned = self.learned.saturating_add(h.margin).clamp(h.floor, h.ceiling);
        self.hold = self.skew_hold.max(learned);
    }

    /// A packet trailed its successors by `sample`: the hold time covers
    /// it from now on (up to the ceiling).
    #[cold]
    fn learn(&mut self, sample: Nanos, late: bool) {
        let sample = sample.min(self.cfg.hold.ceiling);
        if sample > self.learned {
            self.learned = sample;
            self.refresh_hold();
            if late {
                self.counters.hold_raised += 1;
            }
        }
    }

    /// The paths change (the bundle was rebuilt with other tunnels): new
    /// path `i` is old path `from[i]`, keeping what is known of it
    /// (liveness, delay, the highest stream sequence it carried; a path is
    /// FIFO, so that stays true), or a new path (live, nothing heard yet)
    /// for `None` or an index out of range. Held packets and every
    /// bucket's sequence stay as they are. Allocates: not for the packet
    /// path.
    pub fn remap_paths(&mut self, from: &[Option<usize>]) {
        let fresh = PathView {
            live: true,
            high: None,
            delay: None,
        };
        self.paths = from
            .iter()
            .map(|f| f.and_then(|j| self.paths.get(j).copied()).unwrap_or(fresh))
            .collect();
        self.cfg.paths = self.paths.len();
        self.update_hold();
    }

    /// Sizing (with `paths` as it is now).
    pub fn config(&self) -> &ReorderConfig {
        &self.cfg
    }

    /// Notes a frame of this stream arriving on `path`: call it for every
    /// frame, data or not (`push` does it too).
    pub fn on_frame(&mut self, path: usize, stream_seq: u64) {
        if let Some(p) = self.paths.get_mut(path) {
            p.high = Some(p.high.map_or(stream_seq, |h| h.max(stream_seq)));
        }
    }

    /// The highest stream sequence seen on `path`.
    pub fn path_high(&self, path: usize) -> Option<u64> {
        self.paths.get(path).and_then(|p| p.high)
    }

    fn min_live_high(&self) -> Option<u64> {
        let mut min = None;
        for p in self.paths.iter().filter(|p| p.live) {
            let h = p.high?;
            min = Some(min.map_or(h, |m: u64| m.min(h)));
        }
        min
    }

    /// Takes a packet that arrived on `path`. In-order packets, and the held
    /// ones they unblock, go to `out` at once; a packet that is dropped comes
    /// back with its reason so the caller can free it.
    #[inline(always)]
    pub fn push(
        &mut self,
        handle: H,
        meta: PacketMeta,
        path: usize,
        now: Nanos,
        out: &mut impl Extend<H>,
    ) -> Result<Pushed, (H, DropReason)> {
        self.on_frame(path, meta.stream_seq);
        self.push_in_frame(handle, meta, now, out)
    }

    /// [`push`](Self::push) for a packet of a frame already noted with
    /// [`on_frame`](Self::on_frame) (the engine notes each frame once,
    /// not once per packet in it).
    #[inline(always)]
    pub fn push_in_frame(
        &mut self,
        handle: H,
        meta: PacketMeta,
        now: Nanos,
        out: &mut impl Extend<H>,
    ) -> Result<Pushed, (H, DropReason)> {
        self.counters.pushed += 1;
        let b = usize::from(meta.bucket);
        if b >= self.buckets.len() {
            self.counters.bad_bucket += 1;
            return Err((handle, DropReason::BundleBucket));
        }
        let seq = meta.flow_seq;
        let mut forced = false;
        loop {
            let bucket = self.buckets[b];
            let d = serial_diff(seq, bucket.next_seq);
            if d < 0 {
                let back = bucket.next_seq.wrapping_sub(seq).wrapping_sub(1);
                return if back < 64 && bucket.released & (1 << back) != 0 {
                    self.counters.duplicates += 1;
                    Err((handle, DropReason::ReorderDuplicate))
                } else {
                    self.counters.dropped_too_late += 1;
                    // Of the gap last given up at the hold time: it
                    // trailed the packets behind it by `now - since`.
                    let since = bucket.late_since;
                    let of_gap = serial_diff(seq, bucket.late_from) >= 0 && serial_diff(seq, bucket.late_to) < 0;
                    if since != 0 && of_gap && now >= since {
                        self.learn(now - since, true);
                    }
                    Err((handle, DropReason::ReorderTooLate))
                };
            }
            if d == 0 {
                let kind = if forced {
                    Release::Forced
                } else {
                    Release::InOrder
                };
                self.count(kind);
                out.extend(Some(handle));
                self.advance(b);
                // Nothing held in the bucket (the usual case): nothing for
                // `release_run` to release or tidy.
                let after = &self.buckets[b];
                if after.head != NIL || after.tail != NIL || after.active_at != NIL {
                    if bucket.len > 0 && !forced {
                        // It fills the gap that the packets behind it
                        // waited on since `gap_since`.
                        let waited = now.saturating_sub(bucket.gap_since);
                        if waited > self.learned {
                            self.learn(waited, false);
                        }
                    }
                    self.release_run(b, kind, out);
                }
                return Ok(Pushed::Released);
            }
            // Ahead: find its place in the bucket's sorted list (after
            // the tail, most of the time).
            let (mut prev, mut cur) = (NIL, bucket.head);
            if bucket.tail != NIL && serial_diff(self.slots[bucket.tail as usize].seq, seq) < 0 {
                prev = bucket.tail;
                cur = NIL;
            }
            while cur != NIL && serial_diff(self.slots[cur as usize].seq, seq) < 0 {
                prev = cur;
                cur = self.slots[cur as usize].next;
            }
            if cur != NIL && self.slots[cur as usize].seq == seq {
                self.counters.duplicates += 1;
                return Err((handle, DropReason::ReorderDuplicate));
            }
            if bucket.len >= self.cfg.per_bucket || self.free.is_empty() {
                if bucket.head == NIL {
                    self.counters.overflow += 1;
                    return Err((handle, DropReason::ReorderOverflow));
                }
                // Give up on the first gap to make room.
                forced = true;
                self.buckets[b].late_since = 0;
                let head_seq = self.slots[bucket.head as usize].seq;
                if serial_diff(seq, head_seq) < 0 {
                    self.skip_to(b, seq);
                } else {
                    self.skip_to(b, head_seq);
                    self.release_run(b, Release::Forced, out);
                }
                continue;
            }
            let Some(i) = self.free.pop() else {
                self.counters.overflow += 1;
                return Err((handle, DropReason::ReorderOverflow));
            };
            self.slots[i as usize] = Slot {
                handle: Some(handle),
                seq,
                stream_seq: meta.stream_seq,
                arrival: now,
                next: cur,
            };
            if prev == NIL {
                self.buckets[b].head = i;
            } else {
                self.slots[prev as usize].next = i;
            }
            if cur == NIL {
                self.buckets[b].tail = i;
            }
            let bucket = &mut self.buckets[b];
            if bucket.len == 0 {
                bucket.gap_since = now;
                bucket.active_at = self.active.len() as u32;
                self.active.push(meta.bucket);
            }
            bucket.len += 1;
            self.counters.held += 1;
            return Ok(Pushed::Held);
        }
    }

    /// Skips the gaps that every live path is past or that waited
    /// `hold_time`, releasing what follows them in order. Call after each
    /// burst of pushes and at `next_timeout`.
    pub fn poll(&mut self, now: Nanos, out: &mut impl Extend<H>) {
        if now >= self.decay_at {
            if self.learned > 0 {
                self.learned -= self.learned / 4;
                self.refresh_hold();
            }
            self.decay_at = now.saturating_add(DECAY_PERIOD);
        }
        let passed = self.min_live_high();
        let mut i = 0;
        while i < self.active.len() {
            let b = usize::from(self.active[i]);
            loop {
                let bucket = self.buckets[b];
                if bucket.head == NIL {
                    break;
                }
                let head = &self.slots[bucket.head as usize];
                let kind = if passed.is_some_and(|p| p >= head.stream_seq) {
                    Release::Passed
                } else if now >= bucket.gap_since.saturating_add(self.hold) {
                    Release::Late
                } else {
                    break;
                };
                let late = &mut self.buckets[b];
                (late.late_since, late.late_from, late.late_to) = match kind {
                    Release::Late => (bucket.gap_since.max(1), bucket.next_seq, head.seq),
                    _ => (0, 0, 0),
                };
                self.skip_to(b, head.seq);
                self.release_run(b, kind, out);
            }
            if self.active.get(i).is_some_and(|&a| usize::from(a) == b) {
                i += 1;
            }
        }
    }

    /// When `poll` must next run for a hold to expire (gaps that every path
    /// is past are found by the `poll` after each burst).
    pub fn next_timeout(&self) -> Option<Nanos> {
        self.active
            .iter()
            .map(|&b| {
                self.buckets[usize::from(b)]
                    .gap_since
                    .saturating_add(self.hold)
            })
            .min()
    }

    /// Releases every held packet, skipping all gaps (shutdown, stream reset).
    pub fn flush(&mut self, out: &mut impl Extend<H>) {
        while let Some(&b) = self.active.last() {
            let b = usize::from(b);
            let head = self.buckets[b].head;
            self.buckets[b].late_since = 0;
            self.skip_to(b, self.slots[head as usize].seq);
            self.release_run(b, Release::Forced, out);
        }
    }

    fn count(&mut self, kind: Release) {
        let c = &mut self.counters;
        match kind {
            Release::InOrder => c.released_in_order += 1,
            Release::Late => c.released_late += 1,
            Release::Passed => c.released_passed += 1,
            Release::Forced => c.released_forced += 1,
        }
    }

    fn advance(&mut self, b: usize) {
        let bucket = &mut self.buckets[b];
        bucket.released = (bucket.released << 1) | 1;
        bucket.next_seq = bucket.next_seq.wrapping_add(1);
    }

    fn skip_to(&mut self, b: usize, seq: u32) {
        let bucket = &mut self.buckets[b];
        let k = seq.wrapping_sub(bucket.next_seq);
        bucket.released = if k >= 64 { 0 } else { bucket.released << k };
        bucket.next_seq = seq;
        self.counters.skipped += u64::from(k);
    }

    /// Releases the held packets that are now in order.
    fn release_run(&mut self, b: usize, kind: Release, out: &mut impl Extend<H>) {
        loop {
            let head = self.buckets[b].head;
            if head == NIL || self.slots[head as usize].seq != self.buckets[b].next_seq {
                break;
            }
            let slot = &mut self.slots[head as usize];
            if let Some(h) = slot.handle.take() {
                out.extend(Some(h));
            }
            self.buckets[b].head = slot.next;
            self.buckets[b].len -= 1;
            self.free.push(head);
            self.count(kind);
            self.advance(b);
        }
        let bucket = self.buckets[b];
        if bucket.head == NIL {
            self.buckets[b].tail = NIL;
            if bucket.active_at != NIL {
                let at = bucket.active_at as usize;
                self.active.swap_remove(at);
                if let Some(&moved) = self.active.get(at) {
                    self.buckets[usize::from(moved)].active_at = at as u32;
                }
                self.buckets[b].active_at = NIL;
            }
        } else {
            // The next gap dates from the earliest arrival behind it,
            // looked for among the first `GAP_SCAN` held packets (exact
            // unless more are held; then at worst later, so a gap is never
            // skipped early): a walk of every held packet on every release
            // made a bucket with hundreds held quadratic.
            let mut since = Nanos::MAX;
            let mut cur = bucket.head;
            let mut n = 0;
            while cur != NIL && n < GAP_SCAN {
                since = since.min(self.slots[cur as usize].arrival);
                cur = self.slots[cur as usize].next;
                n += 1;
            }
            self.buckets[b].gap_since = since;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    fn meta(bucket: u16, flow_seq: u32, stream_seq: u64) -> PacketMeta {
        PacketMeta {
            bucket,
            flow_seq,
            stream_seq,
        }
    }

    fn reorderer(paths: usize) -> Reorderer<u32> {
        Reorderer::new(ReorderConfig {
            buckets: 4,
            paths,
            slots: 8,
            per_bucket: 4,
            hold: HoldConfig {
                floor: 10 * MS,
                ceiling: 50 * MS,
                margin: 0,
            },
        })
    }

    fn conserved(r: &Reorderer<u32>) {
        let c = r.counters();
        assert_eq!(
            c.pushed,
            c.released_in_order
                + c.released_late
                + c.released_passed
                + c.released_forced
                + c.duplicates
                + c.dropped_too_late
                + c.overflow
                + c.bad_bucket
                + r.held() as u64
        );
    }

    #[test]
    fn in_order_passes_straight_through() {
        let mut r = reorderer(1);
        let mut out = Vec::new();
        for s in 0..5 {
            assert_eq!(
                r.push(s, meta(0, s, u64::from(s)), 0, 0, &mut out),
                Ok(Pushed::Released)
            );
        }
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
        assert_eq!(r.counters().released_in_order, 5);
        conserved(&r);
    }

    #[test]
    fn held_until_the_gap_fills() {
        let mut r = reorderer(2);
        let mut out = Vec::new();
        assert_eq!(r.push(2, meta(1, 2, 2), 0, 0, &mut out), Ok(Pushed::Held));
        assert_eq!(r.push(1, meta(1, 1, 1), 0, 0, &mut out), Ok(Pushed::Held));
        assert!(out.is_empty());
        assert_eq!(
            r.push(0, meta(1, 0, 0), 1, 0, &mut out),
            Ok(Pushed::Released)
        );
        assert_eq!(out, vec![0, 1, 2]);
        assert_eq!(r.held(), 0);
        assert_eq!(r.next_timeout(), None);
        conserved(&r);
    }

    #[test]
    fn buckets_are_independent() {
        let mut r = reorderer(2);
        let mut out = Vec::new();
        r.push(1, meta(0, 1, 5), 0, 0, &mut out).unwrap();
        r.push(10, meta(1, 0, 6), 0, 0, &mut out).unwrap();
        assert_eq!(out, vec![10]);
    }

    #[test]
    fn gap_released_after_hold_time() {
        let mut r = reorderer(2);
        let mut out = Vec::new();
        r.push(1, meta(0, 1, 1), 0, 100, &mut out).unwrap();
        r.push(3, meta(0, 3, 3), 0, 105, &mut out).unwrap();
        assert_eq!(r.hold_time(), 50 * MS);
        assert_eq!(r.next_timeout(), Some(100 + 50 * MS));
        r.poll(100 + 50 * MS - 1, &mut out);
        assert!(out.is_empty());
        r.poll(100 + 50 * MS, &mut out);
        // 0 skipped, 1 released; 3 waits for 2, its gap dating from its own arrival (105).
        assert_eq!(out, vec![1]);
        assert_eq!(r.next_timeout(), Some(105 + 50 * MS));
        r.poll(105 + 50 * MS, &mut out);
        assert_eq!(out, vec![1, 3]);
        assert_eq!(r.counters().skipped, 2);
        assert_eq!(r.counters().released_late, 2);
        assert_eq!(r.next_timeout(), None);
        // 0 and 2 arrive too late.
        assert_eq!(
            r.push(0, meta(0, 0, 0), 1, 0, &mut out),
            Err((0, DropReason::ReorderTooLate))
        );
        assert_eq!(
            r.push(2, meta(0, 2, 2), 1, 0, &mut out),
            Err((2, DropReason::ReorderTooLate))
        );
        conserved(&r);
    }

    #[test]
    fn gap_released_when_every_path_is_past_it() {
        let mut r = reorderer(3);
        let mut out = Vec::new();
        r.push(1, meta(0, 1, 10), 0, 0, &mut out).unwrap();
        r.on_frame(1, 11);
        r.poll(1, &mut out);
        assert!(out.is_empty(), "path 2 has said nothing yet");
        r.on_frame(2, 9);
        r.poll(1, &mut out);
        assert!(out.is_empty(), "path 2 may still carry the gap");
        r.on_frame(2, 10);
        r.poll(1, &mut out);
        assert_eq!(out, vec![1]);
        assert_eq!(r.counters().released_passed, 1);
        conserved(&r);
    }

    #[test]
    fn dead_paths_do_not_block() {
        let mut r = reorderer(2);
        let mut out = Vec::new();
        r.push(1, meta(0, 1, 4), 0, 0, &mut out).unwrap();
        r.poll(1, &mut out);
        assert!(out.is_empty());
        r.set_path_live(1, false);
        r.poll(1, &mut out);
        assert_eq!(out, vec![1]);
    }

    #[test]
    fn duplicates() {
        let mut r = reorderer(1);
        let mut out = Vec::new();
        r.push(0, meta(0, 0, 0), 0, 0, &mut out).unwrap();
        assert_eq!(
            r.push(0, meta(0, 0, 0), 0, 0, &mut out),
            Err((0, DropReason::ReorderDuplicate))
        );
        r.push(2, meta(0, 2, 2), 0, 0, &mut out).unwrap();
        assert_eq!(
            r.push(2, meta(0, 2, 2), 0, 0, &mut out),
            Err((2, DropReason::ReorderDuplicate))
        );
        assert_eq!(r.counters().duplicates, 2);
        conserved(&r);
    }

    #[test]
    fn full_bucket_forces_the_gap() {
        let mut r = reorderer(1);
        let mut out = Vec::new();
        for s in 2..6 {
            assert_eq!(r.push(s, meta(0, s, 0), 0, 0, &mut out), Ok(Pushed::Held));
        }
        // Bucket full (4): 7 forces 0..1 skipped, 2..5 out, then 7 is held behind 6.
        assert_eq!(r.push(7, meta(0, 7, 0), 0, 0, &mut out), Ok(Pushed::Held));
        assert_eq!(out, vec![2, 3, 4, 5]);
        assert_eq!(r.counters().released_forced, 4);
        // An arrival before the head is released at once when forced.
        let mut r = reorderer(1);
        out.clear();
        for s in 3..7 {
            r.push(s, meta(0, s, 0), 0, 0, &mut out).unwrap();
        }
        assert_eq!(
            r.push(1, meta(0, 1, 0), 0, 0, &mut out),
            Ok(Pushed::Released)
        );
        assert_eq!(out, vec![1]);
        conserved(&r);
    }

    #[test]
    fn pool_overflow() {
        let mut r = reorderer(1);
        let mut out = Vec::new();
        for b in 0..2 {
            for s in 1..5 {
                r.push(s, meta(b, s, 0), 0, 0, &mut out).unwrap();
            }
        }
        assert_eq!(r.held(), 8);
        assert_eq!(
            r.push(9, meta(2, 9, 0), 0, 0, &mut out),
            Err((9, DropReason::ReorderOverflow))
        );
        assert_eq!(
            r.push(9, meta(9, 9, 0), 0, 0, &mut out),
            Err((9, DropReason::BundleBucket))
        );
        conserved(&r);
        r.flush(&mut out);
        assert_eq!(out.len(), 8);
        assert_eq!(r.held(), 0);
        conserved(&r);
    }

    /// Two paths whose delays measured equal (the hold is the 10 ms
    /// floor), and packet 1 of bucket 0 held at 1 ms, waiting for 0.
    fn one_ahead_on_even_paths() -> (Reorderer<u32>, Vec<u32>) {
        let mut r = reorderer(2);
        r.set_path_delay(0, Some(5 * MS));
        r.set_path_delay(1, Some(5 * MS));
        let mut out = Vec::new();
        r.push(1, meta(0, 1, 2), 0, MS, &mut out).unwrap();
        (r, out)
    }

    #[test]
    fn a_late_packet_teaches_the_hold() {
        let (mut r, mut out) = one_ahead_on_even_paths();
        assert_eq!(r.hold_time(), 10 * MS);
        // 0 is late by 25 ms behind 1: given up at 10 ms, dropped at 25.
        r.poll(11 * MS, &mut out);
        assert_eq!(out, vec![1]);
        assert_eq!(r.push(0, meta(0, 0, 1), 1, 26 * MS, &mut out), Err((0, DropReason::ReorderTooLate)));
        assert_eq!(r.counters().hold_raised, 1);
        // It waited 10 ms and came 15 ms after the gap was given up.
        assert_eq!(r.learned_reordering(), 25 * MS);
        assert_eq!(r.hold_time(), 25 * MS);
        // The same lateness again is now waited for.
        r.push(3, meta(0, 3, 4), 0, 30 * MS, &mut out).unwrap();
        r.poll(54 * MS, &mut out);
        assert_eq!(out, vec![1]);
        r.push(2, meta(0, 2, 3), 1, 54 * MS, &mut out).unwrap();
        assert_eq!(out, vec![1, 2, 3]);
        assert_eq!(r.counters().dropped_too_late, 1);
        // The gap it filled (24 ms) keeps what was learned; with no more
        // reordering it decays by a quarter a second, down to the skew.
        assert_eq!(r.learned_reordering(), 25 * MS);
        r.poll(2_000 * MS, &mut out);
        assert_eq!(r.learned_reordering(), 25 * MS * 3 / 4);
        for s in 3..20 {
            r.poll(s * 1_000 * MS, &mut out);
        }
        assert_eq!(r.hold_time(), 10 * MS);
        // Never past the ceiling.
        r.push(5, meta(0, 5, 6), 0, 20_000 * MS, &mut out).unwrap();
        r.poll(20_010 * MS, &mut out);
        assert_eq!(r.push(4, meta(0, 4, 5), 1, 20_060 * MS, &mut out), Err((4, DropReason::ReorderTooLate)));
        assert_eq!(r.hold_time(), 50 * MS);
        conserved(&r);
    }

    #[test]
    fn late_packets_of_one_gap_do_not_add_up() {
        // Found by review: 0 and 1 both missing behind 2, given up at
        // 11 ms; each comes ~25 ms after 2 was held, and that is what is
        // learned, not the sum of their latenesses.
        let mut r = reorderer(2);
        r.set_path_delay(0, Some(5 * MS));
        r.set_path_delay(1, Some(5 * MS));
        let mut out = Vec::new();
        r.push(2, meta(0, 2, 3), 0, MS, &mut out).unwrap();
        r.poll(11 * MS, &mut out);
        assert_eq!(out, vec![2]);
        assert!(r.push(0, meta(0, 0, 1), 1, 26 * MS, &mut out).is_err());
        assert!(r.push(1, meta(0, 1, 2), 1, 26 * MS + 100_000, &mut out).is_err());
        assert_eq!(r.learned_reordering(), 25 * MS + 100_000);
        // A sequence outside that gap (a duplicate of one long released)
        // teaches nothing.
        for s in 3..100 {
            r.push(s, meta(0, s, u64::from(s) + 1), 0, 30 * MS, &mut out).unwrap();
        }
        assert!(r.push(2, meta(0, 2, 3), 1, 90 * MS, &mut out).is_err());
        assert_eq!(r.learned_reordering(), 25 * MS + 100_000);
        assert_eq!(r.counters().hold_raised, 2);
        conserved(&r);
    }

    #[test]
    fn only_gaps_given_up_at_the_hold_time_teach_it() {
        // A gap skipped because every path was past it, then a packet of
        // it after all (a path that was not FIFO): no lesson for the hold.
        let (mut r, mut out) = one_ahead_on_even_paths();
        r.on_frame(1, 3);
        r.poll(2 * MS, &mut out);
        assert_eq!(r.counters().released_passed, 1);
        assert_eq!(r.push(0, meta(0, 0, 1), 1, 20 * MS, &mut out), Err((0, DropReason::ReorderTooLate)));
        assert_eq!((r.counters().hold_raised, r.hold_time()), (0, 10 * MS));
        conserved(&r);
    }

    #[test]
    fn hold_follows_skew() {
        let mut r = Reorderer::<u32>::new(ReorderConfig {
            paths: 3,
            ..ReorderConfig::default()
        });
        assert_eq!(r.hold_time(), HoldConfig::default().ceiling);
        r.set_path_delay(0, Some(10 * MS));
        r.set_path_delay(1, Some(30 * MS));
        assert_eq!(r.hold_time(), 100 * MS, "path 2's delay is unknown");
        r.set_path_live(2, false);
        assert_eq!(r.hold_time(), 22 * MS);
        r.set_path_live(2, true);
        r.set_path_delay(2, Some(500 * MS));
        assert_eq!(r.hold_time(), 100 * MS);
        r.set_path_live(2, false);
        assert_eq!(r.hold_time(), 22 * MS);
        r.set_path_delay(1, Some(10 * MS));
        assert_eq!(r.hold_time(), 2 * MS);
    }

    #[test]
    fn remapped_paths_keep_sequences_and_what_is_known_of_each_path() {
        let mut r = reorderer(2);
        let mut out = Vec::new();
        for s in 0..3 {
            r.push(s, meta(0, s, u64::from(s)), 0, 0, &mut out).unwrap();
        }
        r.push(5, meta(0, 5, 7), 1, 0, &mut out).unwrap();
        r.set_path_delay(0, Some(10 * MS));
        r.set_path_delay(1, Some(12 * MS));
        assert_eq!(out, vec![0, 1, 2]);
        // Path 0 goes, path 1 becomes 0, a new path 1 comes.
        r.remap_paths(&[Some(1), None]);
        assert_eq!(r.config().paths, 2);
        assert_eq!(r.held(), 1, "5 still waits for 3 and 4");
        assert_eq!(r.next_expected(0), Some(3));
        assert_eq!(r.hold_time(), 50 * MS, "the new path's delay is unknown");
        // The new path has carried nothing: the gap is not passed yet.
        r.poll(1, &mut out);
        assert_eq!(out, vec![0, 1, 2]);
        r.on_frame(1, 7);
        r.poll(1, &mut out);
        assert_eq!(out, vec![0, 1, 2, 5], "both paths past stream sequence 7");
        // Duplicates of what was released before the remap are still caught.
        assert_eq!(r.push(2, meta(0, 2, 2), 0, 0, &mut out), Err((2, DropReason::ReorderDuplicate)));
        conserved(&r);
    }

    #[test]
    fn sequences_wrap() {
        let mut r = reorderer(1);
        let mut out = Vec::new();
        // Walk bucket 0 up to u32::MAX in two half-space skips (RFC 1982).
        for s in [0x7fff_ffff, 0xffff_fffe] {
            r.push(9, meta(0, s, 0), 0, 0, &mut out).unwrap();
            r.flush(&mut out);
        }
        out.clear();
        assert_eq!(r.push(2, meta(0, 0, 0), 0, 0, &mut out), Ok(Pushed::Held));
        assert_eq!(
            r.push(1, meta(0, u32::MAX, 0), 0, 0, &mut out),
            Ok(Pushed::Released)
        );
        assert_eq!(out, vec![1, 2]);
        assert_eq!(
            r.push(1, meta(0, u32::MAX, 0), 0, 0, &mut out),
            Err((1, DropReason::ReorderDuplicate))
        );
    }
}
