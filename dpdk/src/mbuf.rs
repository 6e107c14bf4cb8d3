//! The owning mbuf handle.

use std::ptr::NonNull;

use crate::mempool::Mempool;

/// Data room of a default mbuf: 2048 B of data after 128 B of headroom
/// (`RTE_MBUF_DEFAULT_BUF_SIZE`).
pub const DEFAULT_DATA_ROOM: u16 = dpdk_sys::BRAID_MBUF_DEFAULT_BUF_SIZE as u16;

/// TX request: the packet is IPv4 (`RTE_MBUF_F_TX_IPV4`).
pub const TX_IPV4: u64 = dpdk_sys::consts::BRAID_MBUF_F_TX_IPV4;
/// TX request: the packet is IPv6 (`RTE_MBUF_F_TX_IPV6`).
pub const TX_IPV6: u64 = dpdk_sys::consts::BRAID_MBUF_F_TX_IPV6;
/// TX request: compute the IPv4 header checksum (`RTE_MBUF_F_TX_IP_CKSUM`).
pub const TX_IP_CKSUM: u64 = dpdk_sys::consts::BRAID_MBUF_F_TX_IP_CKSUM;
/// TX request: compute the UDP checksum (`RTE_MBUF_F_TX_UDP_CKSUM`).
pub const TX_UDP_CKSUM: u64 = dpdk_sys::consts::BRAID_MBUF_F_TX_UDP_CKSUM;
/// TX request: TCP segmentation (`RTE_MBUF_F_TX_TCP_SEG`).
pub const TX_TCP_SEG: u64 = dpdk_sys::consts::BRAID_MBUF_F_TX_TCP_SEG;

/// One packet buffer, owned: no `Clone`, freed (`rte_pktmbuf_free`) on drop,
/// handed to TX with [`Mbuf::into_raw`]. Same layout as `*mut rte_mbuf`, so a
/// slice of `Mbuf` is a burst DPDK can read.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf(NonNull<dpdk_sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one handle; moving it to another thread
// moves the ownership (DPDK hands mbufs between lcores through rings).
unsafe impl Send for Mbuf {}

/// What the TX path asks the NIC to do for this packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOffload {
    /// `RTE_MBUF_F_TX_*` flags.
    pub flags: u64,
    pub l2_len: u8,
    pub l3_len: u16,
    pub l4_len: u8,
    pub tso_segsz: u16,
    /// Outer L2 header length (tunnels), 7 bits.
    pub outer_l2_len: u8,
    /// Outer L3 header length (tunnels), 9 bits.
    pub outer_l3_len: u16,
}

impl Mbuf {
    /// Takes one mbuf from `pool`, or `None` when the pool is empty.
    #[inline]
    pub fn alloc(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: valid pool; returns null or an mbuf we now own.
        NonNull::new(unsafe { dpdk_sys::braid_pktmbuf_alloc(pool.as_ptr()) }).map(Mbuf)
    }

    /// Fills `out` with `n` mbufs at once, or leaves it untouched and returns
    /// false when the pool cannot give all of them.
    ///
    /// `rte_pktmbuf_alloc_bulk` without its stores to the mbufs' second
    /// cache line: each mbuf is reset here ([`reset_fresh`]).
    pub fn alloc_bulk(pool: &Mempool, out: &mut Vec<Mbuf>, n: usize) -> bool {
        let Ok(n32) = u32::try_from(n) else { return false };
        out.reserve(n);
        let len = out.len();
        // SAFETY: spare capacity holds n pointers; Mbuf is repr(transparent)
        // over a non-null pointer. On success the pool wrote n pointers to
        // mbufs of `pool` that nobody owns (a pktmbuf pool holds only
        // mbufs), and each is reset before the Vec counts it.
        unsafe {
            let dst = out.as_mut_ptr().add(len) as *mut *mut dpdk_sys::rte_mbuf;
            if dpdk_sys::braid_mempool_get_bulk(pool.as_ptr(), dst as *mut *mut std::ffi::c_void, n32) != 0 {
                return false;
            }
            for i in 0..n {
                reset_fresh(&mut **dst.add(i));
            }
            out.set_len(len + n);
        }
        true
    }

    /// Frees every mbuf of `v` (all their segments) and empties it, as
    /// `rte_pktmbuf_free_bulk` does: plain mbufs (see `plain`) go back to
    /// their pool with one `rte_mempool_put_bulk` per run of one pool, any
    /// other through `rte_pktmbuf_free`.
    pub fn free_bulk(v: &mut Vec<Mbuf>) {
        let n = v.len();
        // SAFETY: the Vec owns n valid mbufs (repr(transparent) pointers);
        // set_len(0) first so no Drop runs on them. Each goes back to its
        // pool exactly once: a plain one is gathered at the front of the
        // buffer (k <= i, so no pointer not yet read is overwritten) with
        // the others of its pool's run, which go back together when the
        // pool changes or at the end; any other is freed on the spot.
        unsafe {
            v.set_len(0);
            let p = v.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf;
            let mut pool: *mut dpdk_sys::rte_mempool = std::ptr::null_mut();
            let mut k = 0;
            for i in 0..n {
                let m = *p.add(i);
                if !plain(m) {
                    dpdk_sys::braid_pktmbuf_free(m);
                    continue;
                }
                let mp = (*m).pool;
                if mp != pool {
                    if k > 0 {
                        dpdk_sys::braid_mempool_put_bulk(pool, p as *const *mut std::ffi::c_void, k as u32);
                    }
                    (pool, k) = (mp, 0);
                }
                *p.add(k) = m;
                k += 1;
            }
            if k > 0 {
                dpdk_sys::braid_mempool_put_bulk(pool, p as *const *mut std::ffi::c_void, k as u32);
            }
        }
    }

    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `raw` must be a direct mbuf with refcnt 1 in every segment, owned by
    /// nobody else.
    #[inline]
    pub unsafe fn from_raw(raw: NonNull<dpdk_sys::rte_mbuf>) -> Mbuf {
        Mbuf(raw)
    }

    /// Gives up ownership (e.g. to a TX queue or a ring).
    #[inline]
    pub fn into_raw(self) -> NonNull<dpdk_sys::rte_mbuf> {
        let p = self.0;
        std::mem::forget(self);
        p
    }

    #[inline]
    fn m(&self) -> &dpdk_sys::rte_mbuf {
        // SAFETY: we own a valid mbuf.
        unsafe { self.0.as_ref() }
    }

    #[inline]
    fn m_mut(&mut self) -> &mut dpdk_sys::rte_mbuf {
        // SAFETY: we own a valid mbuf, uniquely.
        unsafe { self.0.as_mut() }
    }

    /// Bytes in this segment.
    #[inline]
    pub fn data_len(&self) -> usize {
        self.m().data_len as usize
    }

    /// Bytes in the whole chain.
    #[inline]
    pub fn pkt_len(&self) -> usize {
        self.m().pkt_len as usize
    }

    /// Segments in the chain.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.m().nb_segs
    }

    /// True when the packet is one segment.
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.m().nb_segs == 1
    }

    /// The first segment's data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the buffer
        // DPDK gave this mbuf, which we own.
        unsafe { std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize) }
    }

    /// The first segment's data, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as in data(), and we hold the only handle.
        unsafe { std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(m.data_off as usize), m.data_len as usize) }
    }

    /// Free bytes before the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.m().data_off as usize
    }

    /// Free bytes after the data of the first segment (as
    /// `rte_pktmbuf_tailroom`).
    #[inline]
    pub fn tailroom(&self) -> usize {
        let m = self.m();
        // DPDK keeps data_off + data_len <= buf_len.
        usize::from(m.buf_len).saturating_sub(usize::from(m.data_off) + usize::from(m.data_len))
    }

    /// Grows the data at the end by `len` bytes and returns them, or `None`
    /// when the tailroom is too small (the mbuf is unchanged).
    ///
    /// A one-segment mbuf is grown here, inline (what
    /// `rte_pktmbuf_append` does; the call into the C shim was ~3% of a
    /// bundle-mode 64-byte packet's cycles); a chain goes to DPDK.
    #[inline]
    pub fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        let len16 = u16::try_from(len).ok()?;
        if self.m().nb_segs != 1 {
            // SAFETY: valid mbuf; DPDK checks tailroom and returns null if short.
            let p = unsafe { dpdk_sys::braid_pktmbuf_append(self.0.as_ptr(), len16) } as *mut u8;
            if p.is_null() {
                return None;
            }
            // SAFETY: DPDK reserved len bytes at p inside our buffer.
            return Some(unsafe { std::slice::from_raw_parts_mut(p, len) });
        }
        if len > self.tailroom() {
            return None;
        }
        let m = self.m_mut();
        let at = usize::from(m.data_off) + usize::from(m.data_len);
        m.data_len += len16;
        m.pkt_len += u32::from(len16);
        // SAFETY: at + len <= buf_len (checked above): inside the buffer
        // DPDK gave this mbuf, which we own uniquely.
        Some(unsafe { std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(at), len) })
    }

    /// Grows the data at the front by `len` bytes (into the headroom) and
    /// returns the new front, or `None` when the headroom is too small.
    /// Inline, as `rte_pktmbuf_prepend` (the first segment only, for any
    /// chain).
    #[inline]
    pub fn prepend(&mut self, len: usize) -> Option<&mut [u8]> {
        let len16 = u16::try_from(len).ok()?;
        let m = self.m_mut();
        if len16 > m.data_off {
            return None;
        }
        m.data_off -= len16;
        m.data_len += len16;
        m.pkt_len += u32::from(len16);
        // SAFETY: data_off moved back by len inside the buffer (it was at
        // least len); we own the mbuf uniquely.
        Some(unsafe { std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(usize::from(m.data_off)), len) })
    }

    /// Removes `len` bytes from the front. False when the segment is shorter.
    #[inline]
    pub fn adj(&mut self, len: usize) -> bool {
        // Inline, as `rte_pktmbuf_adj` (the first segment, any chain).
        let Ok(len16) = u16::try_from(len) else { return false };
        let m = self.m_mut();
        if len16 > m.data_len {
            return false;
        }
        m.data_len -= len16;
        m.data_off += len16;
        m.pkt_len -= u32::from(len16);
        true
    }

    /// Removes `len` bytes from the end. False when the last segment is shorter.
    #[inline]
    pub fn trim(&mut self, len: usize) -> bool {
        let Ok(len16) = u16::try_from(len) else { return false };
        if self.m().nb_segs != 1 {
            // SAFETY: valid mbuf; DPDK checks the length.
            return unsafe { dpdk_sys::braid_pktmbuf_trim(self.0.as_ptr(), len16) == 0 };
        }
        // Inline for one segment, as `rte_pktmbuf_trim`.
        let m = self.m_mut();
        if len16 > m.data_len {
            return false;
        }
        m.data_len -= len16;
        m.pkt_len -= u32::from(len16);
        true
    }

    /// Resets the mbuf to an empty one-segment packet with default
    /// headroom. Segments chained after the first are freed first
    /// (`rte_pktmbuf_reset` alone would forget them and leak them).
    #[inline]
    pub fn reset(&mut self) {
        let m = self.m_mut();
        if !m.next.is_null() {
            // SAFETY: the rest of the chain is ours (we own the head); it is
            // unlinked before being freed, so the head never points at it again.
            unsafe { dpdk_sys::braid_pktmbuf_free(m.next) };
            m.next = std::ptr::null_mut();
            m.nb_segs = 1;
        }
        // SAFETY: valid one-segment mbuf we own.
        unsafe { dpdk_sys::braid_pktmbuf_reset(self.0.as_ptr()) }
    }

    /// `RTE_MBUF_F_*` flags (RX results, TX requests).
    #[inline]
    pub fn ol_flags(&self) -> u64 {
        self.m().ol_flags
    }

    /// What the NIC found of the IPv4 header checksum on RX.
    #[inline]
    pub fn rx_ip_cksum(&self) -> RxCksum {
        use dpdk_sys::consts::{BRAID_MBUF_F_RX_IP_CKSUM_BAD as BAD, BRAID_MBUF_F_RX_IP_CKSUM_GOOD as GOOD};
        RxCksum::from_flags(self.ol_flags(), BAD, GOOD)
    }

    /// Sets the IPv4 header checksum verdict as a PMD with RX checksum
    /// offload does (for software ports and tests).
    #[inline]
    pub fn set_rx_ip_cksum(&mut self, v: RxCksum) {
        use dpdk_sys::consts::{BRAID_MBUF_F_RX_IP_CKSUM_BAD as BAD, BRAID_MBUF_F_RX_IP_CKSUM_GOOD as GOOD};
        let bits = match v {
            RxCksum::Unknown => 0,
            RxCksum::Good => GOOD,
            RxCksum::Bad => BAD,
            RxCksum::Valid => GOOD | BAD,
        };
        let m = self.m_mut();
        m.ol_flags = (m.ol_flags & !(GOOD | BAD)) | bits;
    }

    /// What the NIC found of the TCP/UDP checksum on RX.
    #[inline]
    pub fn rx_l4_cksum(&self) -> RxCksum {
        use dpdk_sys::consts::{BRAID_MBUF_F_RX_L4_CKSUM_BAD as BAD, BRAID_MBUF_F_RX_L4_CKSUM_GOOD as GOOD};
        RxCksum::from_flags(self.ol_flags(), BAD, GOOD)
    }

    /// The RSS hash the NIC computed (valid when `RTE_MBUF_F_RX_RSS_HASH`).
    #[inline]
    pub fn rss_hash(&self) -> u32 {
        // SAFETY: reading the `rss` member of a plain-old-data union.
        unsafe { self.m().__bindgen_anon_2.hash.rss }
    }

    /// The port the packet arrived on.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    /// Asks the NIC for checksum / segmentation offloads on TX. Header
    /// lengths go into `tx_offload` per rte_mbuf_core.h's bitfield layout
    /// (l2_len:7, l3_len:9, l4_len:8, tso_segsz:16, outer_l3_len:9,
    /// outer_l2_len:7). `o.flags` must hold only TX request bits
    /// (`RTE_MBUF_F_TX_OFFLOAD_MASK`); other bits are dropped.
    #[inline]
    pub fn set_tx_offload(&mut self, o: TxOffload) {
        debug_assert_eq!(o.flags & !TX_MASK, 0, "non-TX bits in TxOffload::flags: {:#x}", o.flags & !TX_MASK);
        debug_assert!(o.l2_len < 1 << 7, "l2_len {} does not fit 7 bits", o.l2_len);
        debug_assert!(o.l3_len < 1 << 9, "l3_len {} does not fit 9 bits", o.l3_len);
        debug_assert!(o.outer_l2_len < 1 << 7, "outer_l2_len {} does not fit 7 bits", o.outer_l2_len);
        debug_assert!(o.outer_l3_len < 1 << 9, "outer_l3_len {} does not fit 9 bits", o.outer_l3_len);
        let m = self.m_mut();
        m.ol_flags = (m.ol_flags & !TX_MASK) | (o.flags & TX_MASK);
        m.__bindgen_anon_3.tx_offload = pack_tx_offload(&o);
    }

    /// Whether the header lengths of the TX offload asked for (none: yes)
    /// lie in the first segment, and, with TCP segmentation, within
    /// `max_tso_headers`: a PMD reads or copies that many bytes on their
    /// word (net_tap's GSO into mbufs of 128 bytes).
    #[inline]
    pub(crate) fn tx_headers_fit(&self, max_tso_headers: usize) -> bool {
        let m = self.m();
        if m.ol_flags & TX_MASK == 0 {
            return true;
        }
        // SAFETY: reading the `tx_offload` member of a plain-old-data union.
        let t = unsafe { m.__bindgen_anon_3.tx_offload };
        let headers = (t & 0x7f) + ((t >> 7) & 0x1ff) + ((t >> 16) & 0xff);
        headers <= u64::from(m.data_len) && (m.ol_flags & TX_TCP_SEG == 0 || headers <= max_tso_headers as u64)
    }

    /// Appends `tail` to this packet's segment chain. Fails (giving `tail`
    /// back) when the chain would exceed DPDK's segment limit.
    pub fn chain(&mut self, tail: Mbuf) -> Result<(), Mbuf> {
        // SAFETY: both valid and owned; on success DPDK owns tail through head.
        let ret = unsafe { dpdk_sys::braid_pktmbuf_chain(self.0.as_ptr(), tail.0.as_ptr()) };
        if ret == 0 {
            std::mem::forget(tail);
            Ok(())
        } else {
            Err(tail)
        }
    }

    /// Calls `f` with each segment's data, in order.
    pub fn for_each_segment(&self, mut f: impl FnMut(&[u8])) {
        let mut seg = self.0.as_ptr();
        while !seg.is_null() {
            // SAFETY: every segment of a chain we own is a valid mbuf whose
            // data_len bytes from data_off lie inside its buffer.
            unsafe {
                let m = &*seg;
                f(std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize));
                seg = m.next;
            }
        }
    }

    /// The whole packet copied out (all segments), for tests and slow paths.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pkt_len());
        self.for_each_segment(|s| out.extend_from_slice(s));
        out
    }
}

/// What `rte_pktmbuf_reset` does to an mbuf just taken from its pool,
/// writing its first cache line only (one bulk allocation of 32 mbufs was
/// ~10 cycles per mbuf in bundle mode's delivery, most of it the second
/// line). The rest already holds in the pool: an mbuf is put back with
/// `next` NULL, `nb_segs` 1 and `refcnt` 1 (`rte_pktmbuf_prefree_seg`;
/// DPDK's `rte_mbuf_raw_free` contract). `tx_offload` is left as it was:
/// with `ol_flags` clear no PMD reads it, and braid writes it whole with
/// its flags ([`Mbuf::set_tx_offload`]). (A PMD with
/// `RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE` puts segments back without
/// clearing `next`; braid never turns that offload on.)
#[inline(always)]
fn reset_fresh(m: &mut dpdk_sys::rte_mbuf) {
    debug_assert!(m.next.is_null() && m.nb_segs == 1 && m.refcnt == 1, "mbuf in its pool not reset");
    m.data_off = m.buf_len.min(dpdk_sys::BRAID_PKTMBUF_HEADROOM as u16);
    m.nb_segs = 1;
    m.port = u16::MAX; // RTE_MBUF_PORT_INVALID
    m.ol_flags &= dpdk_sys::consts::BRAID_MBUF_F_EXTERNAL;
    m.__bindgen_anon_1.packet_type = 0;
    m.pkt_len = 0;
    m.data_len = 0;
    m.vlan_tci = 0;
    m.vlan_tci_outer = 0;
}

/// An mbuf `rte_pktmbuf_free` would put back into its pool as it is: one
/// segment (for a packet's head, `nb_segs` 1 means `next` is NULL), direct,
/// and ours alone. Reads the first cache line only (`rte_pktmbuf_free_bulk`
/// also reads `next`, on the second, which a PMD's vector RX path never
/// touches).
///
/// # Safety
/// `m` is a valid mbuf, the head of a packet, owned by the caller.
#[inline(always)]
unsafe fn plain(m: *mut dpdk_sys::rte_mbuf) -> bool {
    use dpdk_sys::consts::{BRAID_MBUF_F_EXTERNAL as EXT, BRAID_MBUF_F_INDIRECT as IND};
    // SAFETY (caller): valid mbuf. Fields are read through the pointer, no
    // reference to the whole mbuf is made: refcnt is read atomically, as
    // DPDK's rte_mbuf_refcnt_read does (the holder of a clone, if there
    // were one, may change it).
    unsafe {
        let refcnt = std::sync::atomic::AtomicU16::from_ptr(std::ptr::addr_of_mut!((*m).refcnt))
            .load(std::sync::atomic::Ordering::Relaxed);
        (*m).nb_segs == 1 && refcnt == 1 && (*m).ol_flags & (EXT | IND) == 0
    }
}

/// A per-worker stash of free mbufs, refilled `batch` at a time with one
/// bulk allocation: one FFI call per batch instead of one per packet where
/// a worker makes many mbufs (delivering a bundle frame's inner packets).
pub struct MbufStash {
    stash: Vec<Mbuf>,
    batch: usize,
}

impl MbufStash {
    pub fn new(batch: usize) -> MbufStash {
        MbufStash { stash: Vec::with_capacity(batch.max(1)), batch: batch.max(1) }
    }

    /// A fresh mbuf (reset, empty) from the stash or, when it is empty, from
    /// `pool` (a whole batch, or one when the pool has fewer).
    #[inline]
    pub fn get(&mut self, pool: &Mempool) -> Option<Mbuf> {
        if let Some(m) = self.stash.pop() {
            return Some(m);
        }
        if Mbuf::alloc_bulk(pool, &mut self.stash, self.batch) {
            return self.stash.pop();
        }
        Mbuf::alloc(pool)
    }

    /// Mbufs held (they return to their pool when the stash drops).
    pub fn len(&self) -> usize {
        self.stash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stash.is_empty()
    }
}

/// Drops the first `n` handles of `v` without freeing their mbufs and
/// moves the rest to the front, in order: for bursts C took a prefix of
/// (a NIC's TX queue, a ring).
///
/// # Safety
/// `n <= v.len()`, and C owns the first `n` mbufs now (nothing may free
/// them here).
#[inline]
pub(crate) unsafe fn forget_front(v: &mut Vec<Mbuf>, n: usize) {
    let len = v.len();
    let base = v.as_mut_ptr();
    // SAFETY: in bounds by the caller's contract; the moved-out prefix is
    // never read again (set_len hides it before any drop could run).
    unsafe {
        std::ptr::copy(base.add(n), base, len - n);
        v.set_len(len - n);
    }
}

impl Drop for MbufStash {
    fn drop(&mut self) {
        Mbuf::free_bulk(&mut self.stash);
    }
}

/// An RX checksum verdict (rte_mbuf_core.h: two bits per checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxCksum {
    /// Not checked by the NIC (or no checksum offload): check in software.
    Unknown,
    /// Checked and correct.
    Good,
    /// Checked and wrong.
    Bad,
    /// Not correct in the data, but the header's integrity was verified
    /// (`*_CKSUM_NONE`).
    Valid,
}

impl RxCksum {
    /// The verdict from `ol_flags` and the checksum's BAD and GOOD bits.
    #[inline]
    pub fn from_flags(flags: u64, bad: u64, good: u64) -> RxCksum {
        match (flags & bad != 0, flags & good != 0) {
            (false, false) => RxCksum::Unknown,
            (false, true) => RxCksum::Good,
            (true, false) => RxCksum::Bad,
            (true, true) => RxCksum::Valid,
        }
    }
}

/// Every TX request bit of `ol_flags` (`RTE_MBUF_F_TX_OFFLOAD_MASK`).
const TX_MASK: u64 = dpdk_sys::consts::BRAID_MBUF_F_TX_OFFLOAD_MASK;

/// The `tx_offload` word: l2_len 0..7, l3_len 7..16, l4_len 16..24,
/// tso_segsz 24..40, outer_l3_len 40..49, outer_l2_len 49..56.
fn pack_tx_offload(o: &TxOffload) -> u64 {
    (o.l2_len as u64 & 0x7f)
        | ((o.l3_len as u64 & 0x1ff) << 7)
        | ((o.l4_len as u64) << 16)
        | ((o.tso_segsz as u64) << 24)
        | ((o.outer_l3_len as u64 & 0x1ff) << 40)
        | ((o.outer_l2_len as u64 & 0x7f) << 49)
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (and its chain); freeing returns it to its pool.
        unsafe { dpdk_sys::braid_pktmbuf_free(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rx_checksum_verdicts_follow_the_two_flag_bits() {
        use dpdk_sys::consts::{BRAID_MBUF_F_RX_IP_CKSUM_BAD as BAD, BRAID_MBUF_F_RX_IP_CKSUM_GOOD as GOOD};
        assert_eq!(RxCksum::from_flags(0, BAD, GOOD), RxCksum::Unknown);
        assert_eq!(RxCksum::from_flags(GOOD | 1, BAD, GOOD), RxCksum::Good);
        assert_eq!(RxCksum::from_flags(BAD, BAD, GOOD), RxCksum::Bad);
        assert_eq!(RxCksum::from_flags(BAD | GOOD, BAD, GOOD), RxCksum::Valid);
        // rte_mbuf_core.h: IP BAD is bit 4, GOOD bit 7 (NONE = both).
        assert_eq!((BAD, GOOD), (1 << 4, 1 << 7));
    }

    use super::*;

    /// TX offload header lengths past the first segment, or (TCP
    /// segmentation) past what the PMD copies, are refused before the PMD
    /// reads them (found by review: net_tap's GSO overflowed its 128-byte
    /// header mbufs).
    #[test]
    fn tx_headers_must_fit_the_segment_and_the_pmd() {
        let _g = crate::testing::eal(&[], 256).1;
        let pool = crate::Mempool::new("txfit_pool", 63, crate::mbuf::DEFAULT_DATA_ROOM).unwrap();
        let mut m = Mbuf::alloc(&pool).unwrap();
        m.append(100).unwrap();
        assert!(m.tx_headers_fit(128), "no offload asked");
        let o = |flags, l4| TxOffload { flags, l2_len: 14, l3_len: 60, l4_len: l4, tso_segsz: 500, outer_l2_len: 0, outer_l3_len: 0 };
        m.set_tx_offload(o(TX_IP_CKSUM, 20));
        assert!(m.tx_headers_fit(128), "94 bytes of headers in a 100-byte segment");
        m.set_tx_offload(o(TX_IP_CKSUM, 60));
        assert!(!m.tx_headers_fit(usize::MAX), "134 bytes of headers in a 100-byte segment");
        m.append(100).unwrap();
        m.set_tx_offload(o(TX_IPV4 | TX_IP_CKSUM | TX_TCP_SEG, 60));
        assert!(!m.tx_headers_fit(128), "134 bytes of headers for a PMD that copies 128");
        assert!(m.tx_headers_fit(usize::MAX), "a NIC's TSO");
    }

    #[test]
    fn tx_offload_packing_matches_rte_mbuf_core() {
        let o = TxOffload {
            flags: 0,
            l2_len: 14,
            l3_len: 20,
            l4_len: 8,
            tso_segsz: 1400,
            outer_l2_len: 0x55,
            outer_l3_len: 0x1a3,
        };
        let w = pack_tx_offload(&o);
        assert_eq!(w & 0x7f, 14);
        assert_eq!((w >> 7) & 0x1ff, 20);
        assert_eq!((w >> 16) & 0xff, 8);
        assert_eq!((w >> 24) & 0xffff, 1400);
        assert_eq!((w >> 40) & 0x1ff, 0x1a3);
        assert_eq!((w >> 49) & 0x7f, 0x55);
        assert_eq!(w >> 56, 0);
        assert_eq!(TX_MASK & dpdk_sys::consts::BRAID_MBUF_F_RX_RSS_HASH, 0);
    }
}
