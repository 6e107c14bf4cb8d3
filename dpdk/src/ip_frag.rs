//! Reassembly of IPv4 and IPv6 fragments with DPDK's `librte_ip_frag`.
//!
//! One [`Reassembly`] per worker (the table is not thread-safe; it is
//! `Send`, not `Sync`); one table holds both versions' packets.
//! [`Reassembly::push`] (IPv4) and [`Reassembly::push_v6`] take a fragment
//! and give back the whole packet once its last fragment arrived. DPDK's
//! rules, kept here so callers cannot break them:
//! - the mbuf's `l2_len`/`l3_len` must describe the frame (set from the
//!   header before the call);
//! - fragments DPDK refuses (overlaps, too many fragments, table full) go to
//!   a "death row", which this wrapper frees after every call, so it never
//!   overflows and no mbuf leaks;
//! - a reassembled packet is a chain of segments (first fragment's headers,
//!   then the other fragments' payloads); [`Mbuf::linearized`] copies it into
//!   one segment when the pool's data room allows;
//! - the reassembled IPv4 header has its checksum zeroed and
//!   `RTE_MBUF_F_TX_IP_CKSUM` set (DPDK leaves the checksum to TX offload):
//!   check each fragment's header checksum before pushing it;
//! - IPv6: only a Fragment header right after the IPv6 header (DPDK knows
//!   no other extension header); the reassembled packet has it removed
//!   (next header and payload length restored).
//!
//! Incomplete packets expire `timeout` after their first fragment
//! ([`Reassembly::expire`] frees them; `push` also reclaims an expired
//! entry it meets).

use std::ptr::NonNull;
use std::time::Duration;

use crate::mbuf::TxOffload;
use crate::{Error, Mbuf, Mempool};

/// IPv4 and IPv6 fragment table of one worker.
pub struct Reassembly {
    _live: crate::EalObject,
    tbl: NonNull<dpdk_sys::rte_ip_frag_tbl>,
    dr: Box<dpdk_sys::rte_ip_frag_death_row>,
    stats: FragStats,
}

// SAFETY: the table and death row are plain memory owned by this value; DPDK
// keeps no thread affinity for them. Moving the owner to another thread is
// fine; sharing is not (no `Sync`).
unsafe impl Send for Reassembly {}

/// What the table did, as counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FragStats {
    /// Fragments taken.
    pub fragments: u64,
    /// Whole packets given back.
    pub reassembled: u64,
    /// Mbufs DPDK discarded (bad or duplicate fragments, table full,
    /// expired incomplete packets).
    pub discarded: u64,
    /// Frames refused before reaching DPDK (not a fragment of the IP
    /// version pushed, headers outside the first segment).
    pub not_fragment: u64,
}

/// Most fragments of one packet (`RTE_LIBRTE_IP_FRAG_MAX_FRAG`).
pub const MAX_FRAGMENTS: usize = 8;

impl Reassembly {
    /// A table for up to `max_flows` packets being reassembled at once
    /// (rounded up to a multiple of the 16-entry buckets), which drops an
    /// incomplete packet `timeout` after its first fragment. Needs EAL up.
    pub fn new(max_flows: u32, timeout: Duration) -> Result<Reassembly, Error> {
        let cycles = (crate::tsc_hz() as u128 * timeout.as_nanos() / 1_000_000_000).max(1) as u64;
        Self::with_ticks(max_flows, cycles)
    }

    /// The same with time in the caller's own unit (nanoseconds of a
    /// simulated clock, say): DPDK only compares the `now` values passed to
    /// [`push`](Self::push) and [`expire`](Self::expire) with `timeout`.
    pub fn with_ticks(max_flows: u32, timeout: u64) -> Result<Reassembly, Error> {
        const BUCKET_ENTRIES: u32 = 16;
        let buckets = max_flows.div_ceil(BUCKET_ENTRIES).max(1).next_power_of_two();
        let cycles = timeout.max(1);
        // SAFETY: plain constructor; returns NULL (rte_errno set) on failure.
        let tbl = unsafe {
            dpdk_sys::rte_ip_frag_table_create(buckets, BUCKET_ENTRIES, buckets * BUCKET_ENTRIES, cycles, -1)
        };
        let tbl = NonNull::new(tbl).ok_or_else(|| {
            let errno = crate::rte_errno();
            Error::FragTable { flows: max_flows, errno, reason: crate::strerror(errno) }
        })?;
        // SAFETY: the death row is plain data (a count and pointers); all
        // zeroes is an empty row.
        let dr = Box::new(unsafe { std::mem::zeroed::<dpdk_sys::rte_ip_frag_death_row>() });
        Ok(Reassembly { _live: crate::EalObject::new(), tbl, dr, stats: FragStats::default() })
    }

    /// Whether the IPv4 header at `l2_len` in `frame` is a fragment (MF set
    /// or a non-zero offset).
    pub fn is_fragment(frame: &[u8], l2_len: usize) -> bool {
        frame.get(l2_len + 6..l2_len + 8).is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x3fff != 0)
    }

    /// Takes one fragment whose IPv4 header starts `l2_len` bytes into the
    /// frame; `now` is the TSC ([`crate::rdtsc`]) or the unit given to
    /// [`with_ticks`](Self::with_ticks). `Ok(Some)` is the whole
    /// packet (a segment chain), `Ok(None)` means kept (or discarded and
    /// counted), `Err` gives back a frame that is no IPv4 fragment.
    pub fn push(&mut self, mut m: Mbuf, l2_len: usize, now: u64) -> Result<Option<Mbuf>, Mbuf> {
        let d = m.data();
        let ok = l2_len < 128
            && d.len() >= l2_len + 20
            && d[l2_len] >> 4 == 4
            && (d[l2_len] & 0x0f) >= 5
            && d.len() >= l2_len + (d[l2_len] & 0x0f) as usize * 4
            && Self::is_fragment(d, l2_len);
        if !ok {
            self.stats.not_fragment += 1;
            return Err(m);
        }
        let l3_len = (d[l2_len] & 0x0f) as usize * 4;
        m.set_tx_offload(TxOffload { l2_len: l2_len as u8, l3_len: l3_len as u16, ..Default::default() });
        self.stats.fragments += 1;
        let ip = m.data_mut()[l2_len..].as_mut_ptr() as *mut dpdk_sys::rte_ipv4_hdr;
        let raw = m.into_raw();
        // SAFETY: `raw` is a valid mbuf we own and hand to DPDK (kept in the
        // table, returned as part of a packet, or put on the death row);
        // `ip` points at its IPv4 header inside the first segment (checked
        // above), which DPDK reads and, on completion, rewrites in place.
        let out = unsafe { dpdk_sys::rte_ipv4_frag_reassemble_packet(self.tbl.as_ptr(), &mut *self.dr, raw.as_ptr(), now, ip) };
        self.free_death_row();
        // SAFETY: a non-NULL result is a packet DPDK hands back to us.
        Ok(NonNull::new(out).map(|p| {
            self.stats.reassembled += 1;
            unsafe { Mbuf::from_raw(p) }
        }))
    }

    /// Whether the IPv6 header at `l2_len` in `frame` is followed by a
    /// Fragment header.
    pub fn is_fragment_v6(frame: &[u8], l2_len: usize) -> bool {
        frame.get(l2_len).is_some_and(|v| v >> 4 == 6) && frame.get(l2_len + 6) == Some(&44)
    }

    /// [`push`](Self::push) for an IPv6 fragment: its Fragment header
    /// right after the IPv6 header, both in the first segment. The whole
    /// packet comes back without the Fragment header. `Err` gives back a
    /// frame that is not such a fragment.
    pub fn push_v6(&mut self, mut m: Mbuf, l2_len: usize, now: u64) -> Result<Option<Mbuf>, Mbuf> {
        const L3: usize = 40 + 8;
        let d = m.data();
        if l2_len >= 128 || d.len() < l2_len + L3 || !Self::is_fragment_v6(d, l2_len) {
            self.stats.not_fragment += 1;
            return Err(m);
        }
        m.set_tx_offload(TxOffload { l2_len: l2_len as u8, l3_len: L3 as u16, ..Default::default() });
        self.stats.fragments += 1;
        let ip = m.data_mut()[l2_len..].as_mut_ptr();
        let raw = m.into_raw();
        // SAFETY: as in `push`: `raw` is ours to hand to DPDK; `ip` and the
        // Fragment header 40 bytes later lie in its first segment (checked
        // above), which DPDK reads and, on completion, rewrites in place.
        let out = unsafe {
            dpdk_sys::rte_ipv6_frag_reassemble_packet(
                self.tbl.as_ptr(),
                &mut *self.dr,
                raw.as_ptr(),
                now,
                ip.cast::<dpdk_sys::rte_ipv6_hdr>(),
                ip.add(40).cast::<dpdk_sys::rte_ipv6_fragment_ext>(),
            )
        };
        self.free_death_row();
        // SAFETY: a non-NULL result is a packet DPDK hands back to us.
        Ok(NonNull::new(out).map(|p| {
            self.stats.reassembled += 1;
            unsafe { Mbuf::from_raw(p) }
        }))
    }

    /// Frees the incomplete packets whose time ran out.
    pub fn expire(&mut self, now: u64) {
        // DPDK stops when its death row is full: go on while it moves.
        loop {
            // SAFETY: our table and death row (emptied after every call).
            unsafe { dpdk_sys::rte_ip_frag_table_del_expired_entries(self.tbl.as_ptr(), &mut *self.dr, now) };
            let freed = self.dr.cnt;
            self.free_death_row();
            if freed == 0 {
                break;
            }
        }
    }

    pub fn stats(&self) -> FragStats {
        self.stats
    }

    fn free_death_row(&mut self) {
        if self.dr.cnt > 0 {
            self.stats.discarded += self.dr.cnt as u64;
            // SAFETY: every entry of the row is an mbuf DPDK discarded and
            // we own; the call frees them and resets the count.
            unsafe { dpdk_sys::rte_ip_frag_free_death_row(&mut *self.dr, 3) };
        }
    }
}

impl Drop for Reassembly {
    fn drop(&mut self) {
        // Far in the future: every entry is expired and freed first.
        self.expire(u64::MAX / 2);
        // SAFETY: our table; entries freed above; not used after this.
        unsafe { dpdk_sys::rte_ip_frag_table_destroy(self.tbl.as_ptr()) };
    }
}

impl Mbuf {
    /// The packet in one segment: itself if it already is, else a copy into
    /// a new mbuf from `pool` (the chain is freed). `Err(self)` when the
    /// packet is bigger than the pool's data room or the pool is empty.
    pub fn linearized(self, pool: &Mempool) -> Result<Mbuf, Mbuf> {
        if self.is_contiguous() {
            return Ok(self);
        }
        let Some(mut out) = Mbuf::alloc(pool) else { return Err(self) };
        let len = self.pkt_len();
        let Some(buf) = out.append(len) else { return Err(self) };
        let mut at = 0;
        self.for_each_segment(|seg| {
            buf[at..at + seg.len()].copy_from_slice(seg);
            at += seg.len();
        });
        debug_assert_eq!(at, len);
        Ok(out)
    }
}
