//! A single-producer/single-consumer `rte_ring` of mbufs, for handing
//! packets from one worker lcore to another. [`MbufRing::split`] gives one
//! [`RingProducer`] and one [`RingConsumer`]; neither is `Clone`, so the
//! type system keeps the ring's single-producer/single-consumer contract.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::Error;
use crate::mbuf::Mbuf;
use crate::ring_port::create_ring;

/// Owns the ring: frees every mbuf still inside, then the ring, on drop.
#[derive(Debug)]
struct RingOwner {
    _live: crate::EalObject,
    ring: NonNull<dpdk_sys::rte_ring>,
    name: String,
    capacity: usize,
}

// SAFETY: the ring pointer is shared by one RingProducer (the only one to
// enqueue, through &mut self: RING_F_SP_ENQ holds) and one RingConsumer (the
// only one to dequeue, through &mut self: RING_F_SC_DEQ holds); through a
// shared RingOwner they only read the count (thread-safe in DPDK) and the
// capacity. Drop runs once, on whichever thread drops the last half, with
// exclusive access.
unsafe impl Send for RingOwner {}
// SAFETY: as above.
unsafe impl Sync for RingOwner {}

impl RingOwner {
    #[inline]
    fn len(&self) -> usize {
        // SAFETY: valid ring; rte_ring_count only reads the head/tail
        // indexes, safe against a concurrent producer and consumer.
        unsafe { dpdk_sys::braid_ring_count(self.ring.as_ptr()) as usize }
    }
}

/// Dequeues up to `max` mbufs from `ring` and appends them to `out`, as
/// [`RxQueue::rx_burst`](crate::RxQueue::rx_burst) does from a NIC queue.
///
/// # Safety
/// `ring` must be a valid ring holding only owned mbufs (direct, refcnt 1,
/// owned by nobody else), and the caller must be its only consumer.
#[inline]
pub(crate) unsafe fn dequeue_into(ring: NonNull<dpdk_sys::rte_ring>, out: &mut Vec<Mbuf>, max: usize) -> usize {
    out.reserve(max);
    let len = out.len();
    let max = max.min(u32::MAX as usize) as u32;
    // SAFETY: `out` has room for `max` more pointers; Mbuf is a
    // repr(transparent) non-null pointer, and the ring writes `n` of the
    // owned mbufs it held (caller's contract), which `out` now owns.
    unsafe {
        let dst = out.as_mut_ptr().add(len) as *mut *mut c_void;
        let n = dpdk_sys::braid_ring_dequeue_burst(ring.as_ptr(), dst, max, std::ptr::null_mut()) as usize;
        out.set_len(len + n);
        n
    }
}

/// Dequeues and frees every mbuf in `ring`.
///
/// # Safety
/// As [`dequeue_into`].
pub(crate) unsafe fn drain(ring: NonNull<dpdk_sys::rte_ring>) {
    let mut burst = Vec::with_capacity(crate::BURST);
    // SAFETY: the caller's contract.
    while unsafe { dequeue_into(ring, &mut burst, crate::BURST) } != 0 {
        Mbuf::free_bulk(&mut burst);
    }
}

impl Drop for RingOwner {
    fn drop(&mut self) {
        // SAFETY: the last reference to the ring is going away, so nobody
        // else enqueues or dequeues; it holds only mbufs a producer handed
        // over with into_raw, which we now own and free.
        unsafe { drain(self.ring) };
        // SAFETY: an empty ring we created; nothing refers to it any more.
        unsafe { dpdk_sys::rte_ring_free(self.ring.as_ptr()) };
    }
}

/// A ring of mbufs, before it is split into its two halves.
#[derive(Debug)]
pub struct MbufRing {
    owner: RingOwner,
}

impl MbufRing {
    /// Creates ring `name` of `size` slots (a power of two; it holds
    /// `size - 1` mbufs), single producer, single consumer.
    pub fn new(name: &str, size: u32) -> Result<MbufRing, Error> {
        let ring = create_ring(name, size)?;
        // SAFETY: a ring DPDK just made; reading its capacity field.
        let capacity = unsafe { ring.as_ref().capacity } as usize;
        Ok(MbufRing { owner: RingOwner { _live: crate::EalObject::new(), ring, name: name.to_owned(), capacity } })
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        &self.owner.name
    }

    /// How many mbufs the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.owner.capacity
    }

    /// The producer and the consumer half. The ring (and any mbuf still in
    /// it) is freed when both are dropped.
    pub fn split(self) -> (RingProducer, RingConsumer) {
        let owner = Arc::new(self.owner);
        (RingProducer { owner: owner.clone() }, RingConsumer { owner })
    }
}

/// The enqueuing half of an [`MbufRing`]: the ring's only producer.
#[derive(Debug)]
pub struct RingProducer {
    owner: Arc<RingOwner>,
}

impl RingProducer {
    /// Enqueues as many of `pkts` as fit. Those taken are removed from the
    /// front of `pkts`; the rest stay in `pkts`, in order, for the caller
    /// to retry or drop. Returns how many were enqueued.
    #[inline]
    pub fn enqueue(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        let n = pkts.len().min(u32::MAX as usize) as u32;
        // SAFETY: pkts holds n owned mbufs laid out as pointers (Mbuf is
        // repr(transparent)); we are the ring's only producer.
        let sent = unsafe {
            let p = pkts.as_ptr() as *const *mut c_void;
            dpdk_sys::braid_ring_enqueue_burst(self.owner.ring.as_ptr(), p, n, std::ptr::null_mut()) as usize
        };
        // The first `sent` mbufs now belong to the ring: forget them without
        // dropping and shift the rest to the front.
        // SAFETY: the burst call took at most all of them.
        unsafe { crate::mbuf::forget_front(pkts, sent) };
        sent
    }

}

/// The dequeuing half of an [`MbufRing`]: the ring's only consumer.
#[derive(Debug)]
pub struct RingConsumer {
    owner: Arc<RingOwner>,
}

impl RingConsumer {
    /// Dequeues up to `max` mbufs and appends them to `out` (which grows if
    /// needed). Returns how many arrived.
    #[inline]
    pub fn dequeue(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        // SAFETY: the ring holds only mbufs RingProducer::enqueue handed
        // over with their ownership, and we are its only consumer.
        unsafe { dequeue_into(self.owner.ring, out, max) }
    }

}

/// What either half can tell about the ring.
macro_rules! ring_queries {
    ($($half:ty),*) => {$(
        impl $half {
            /// Mbufs in the ring now.
            pub fn len(&self) -> usize {
                self.owner.len()
            }

            /// True when the ring holds no mbuf now.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// How many mbufs the ring holds at most.
            pub fn capacity(&self) -> usize {
                self.owner.capacity
            }
        }
    )*};
}
ring_queries!(RingProducer, RingConsumer);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbuf::DEFAULT_DATA_ROOM;
    use crate::Mempool;

    fn eal() -> std::sync::MutexGuard<'static, ()> {
        crate::testing::eal(&[], 512).1
    }

    /// `n` mbufs from `pool`, each carrying its sequence number from `first`.
    fn numbered(pool: &Mempool, first: u64, n: usize) -> Vec<Mbuf> {
        (0..n as u64)
            .map(|i| {
                let mut m = Mbuf::alloc(pool).expect("pool has room");
                m.append(8).unwrap().copy_from_slice(&(first + i).to_le_bytes());
                m
            })
            .collect()
    }

    fn seq(m: &Mbuf) -> u64 {
        u64::from_le_bytes(m.data()[..8].try_into().unwrap())
    }

    #[test]
    fn halves_are_send() {
        fn send<T: Send>() {}
        send::<MbufRing>();
        send::<RingProducer>();
        send::<RingConsumer>();
    }

    #[test]
    fn enqueue_then_dequeue_keeps_order() {
        let _g = eal();
        let pool = Mempool::new("mr_order_pool", 1023, DEFAULT_DATA_ROOM).unwrap();
        let ring = MbufRing::new("mr_order", 64).unwrap();
        assert_eq!(ring.name(), "mr_order");
        let (mut tx, mut rx) = ring.split();
        assert_eq!(tx.capacity(), 63);
        assert_eq!(rx.capacity(), 63);
        let mut pkts = numbered(&pool, 0, 20);
        assert_eq!(tx.enqueue(&mut pkts), 20);
        assert!(pkts.is_empty());
        assert_eq!((tx.len(), rx.len()), (20, 20));
        let mut out = Vec::new();
        assert_eq!(rx.dequeue(&mut out, 8), 8);
        assert_eq!(rx.dequeue(&mut out, 100), 12);
        assert_eq!(rx.dequeue(&mut out, 100), 0);
        assert!(rx.is_empty());
        assert_eq!(out.iter().map(seq).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
        // Nothing to enqueue, nothing done.
        assert_eq!(tx.enqueue(&mut Vec::new()), 0);
        drop(out);
        drop((tx, rx));
        assert_eq!(pool.avail(), pool.size());
    }

    #[test]
    fn a_full_ring_leaves_the_rest_in_order_and_nothing_leaks() {
        let _g = eal();
        let pool = Mempool::new("mr_full_pool", 1023, DEFAULT_DATA_ROOM).unwrap();
        let initial = pool.avail();
        let (mut tx, mut rx) = MbufRing::new("mr_full", 16).unwrap().split();
        let cap = tx.capacity();
        assert_eq!(cap, 15);
        let mut pkts = numbered(&pool, 0, 40);
        assert_eq!(tx.enqueue(&mut pkts), cap);
        assert_eq!(pkts.iter().map(seq).collect::<Vec<_>>(), (cap as u64..40).collect::<Vec<_>>());
        // Full: nothing more goes in and the rest is untouched.
        assert_eq!(tx.enqueue(&mut pkts), 0);
        assert_eq!(pkts.len(), 40 - cap);
        // Make room for 5, then the next 5 go in, in order.
        let mut out = Vec::new();
        assert_eq!(rx.dequeue(&mut out, 5), 5);
        assert_eq!(tx.enqueue(&mut pkts), 5);
        assert_eq!(pkts.first().map(seq), Some(cap as u64 + 5));
        let mut all = Vec::new();
        while rx.dequeue(&mut all, 7) != 0 {}
        out.append(&mut all);
        assert_eq!(out.iter().map(seq).collect::<Vec<_>>(), (0..cap as u64 + 5).collect::<Vec<_>>());
        drop(out);
        drop(pkts);
        assert_eq!(pool.avail(), initial);

        // A ring dropped with mbufs inside frees them, whichever half goes last.
        let (mut tx, rx) = MbufRing::new("mr_full2", 16).unwrap().split();
        let mut pkts = numbered(&pool, 0, 10);
        assert_eq!(tx.enqueue(&mut pkts), 10);
        assert_eq!(pool.avail(), initial - 10);
        drop(tx);
        assert_eq!(rx.len(), 10);
        drop(rx);
        assert_eq!(pool.avail(), initial);
        // Unsplit, too.
        let ring = MbufRing::new("mr_full3", 16).unwrap();
        drop(ring);
        // The names are free again.
        drop(MbufRing::new("mr_full2", 16).unwrap());
        assert_eq!(pool.avail(), initial);
    }

    #[test]
    fn bad_sizes_and_names_are_errors() {
        let _g = eal();
        assert!(matches!(MbufRing::new("mr_bad", 100), Err(Error::Ring { .. })));
        assert!(matches!(MbufRing::new("mr\0bad", 64), Err(Error::Ring { .. })));
        let _a = MbufRing::new("mr_dup", 64).unwrap();
        assert!(matches!(MbufRing::new("mr_dup", 64), Err(Error::Ring { .. })));
    }

    #[test]
    fn hundred_thousand_mbufs_from_one_thread_to_another() {
        const TOTAL: u64 = 100_000;
        let _g = eal();
        let pool = Mempool::new("mr_thr_pool", 4095, DEFAULT_DATA_ROOM).unwrap();
        let initial = pool.avail();
        let (mut tx, mut rx) = MbufRing::new("mr_thr", 512).unwrap().split();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let (received, bad) = std::thread::scope(|s| {
            let pool = &pool;
            s.spawn(move || {
                let mut burst: Vec<Mbuf> = Vec::with_capacity(crate::BURST);
                let mut next = 0u64;
                while (next < TOTAL || !burst.is_empty()) && std::time::Instant::now() < deadline {
                    while burst.len() < crate::BURST && next < TOTAL {
                        let Some(mut m) = Mbuf::alloc(pool) else { break };
                        let len = 8 + (next % 200) as usize;
                        let d = m.append(len).unwrap();
                        d[..8].copy_from_slice(&next.to_le_bytes());
                        d[8..].fill(next as u8);
                        burst.push(m);
                        next += 1;
                    }
                    if tx.enqueue(&mut burst) == 0 {
                        std::hint::spin_loop();
                    }
                }
                // tx dropped here: the consumer still drains the ring.
            });
            let consumer = s.spawn(move || {
                let mut burst = Vec::with_capacity(crate::BURST);
                let (mut next, mut bad) = (0u64, 0u64);
                while next < TOTAL && std::time::Instant::now() < deadline {
                    if rx.dequeue(&mut burst, crate::BURST) == 0 {
                        std::hint::spin_loop();
                    }
                    for m in burst.drain(..) {
                        let d = m.data();
                        let ok = d.len() == 8 + (next % 200) as usize
                            && d[..8] == next.to_le_bytes()
                            && d[8..].iter().all(|&b| b == next as u8);
                        bad += u64::from(!ok);
                        next += 1;
                    }
                }
                (next, bad)
            });
            consumer.join().unwrap()
        });
        assert_eq!((received, bad), (TOTAL, 0));
        assert_eq!(pool.avail(), initial);
    }
}
