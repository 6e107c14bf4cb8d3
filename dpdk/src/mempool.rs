//! Packet mempools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::Error;

/// Pools alive now; [`crate::Eal::cleanup`] leaves EAL's memory mapped while
/// this is not zero.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Set once a pool was dropped with mbufs still out (and so leaked).
static LEAKED: AtomicBool = AtomicBool::new(false);

/// True when a pool is alive or was leaked: EAL's memory must stay mapped.
pub(crate) fn pools_outstanding() -> bool {
    LIVE.load(Ordering::SeqCst) != 0 || LEAKED.load(Ordering::SeqCst)
}

/// Pools a configured port takes mbufs from (by address, with a count per
/// port using it): such a pool dropped before its port is closed is leaked,
/// never freed, as the port keeps allocating from it.
static PINNED: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// A port now takes mbufs from `pool`.
pub(crate) fn pin(pool: *mut dpdk_sys::rte_mempool) {
    let mut p = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    match p.iter_mut().find(|(a, _)| *a == pool as usize) {
        Some((_, n)) => *n += 1,
        None => p.push((pool as usize, 1)),
    }
}

/// A port no longer takes mbufs from `pool` (it was closed).
pub(crate) fn unpin(pool: *mut dpdk_sys::rte_mempool) {
    let mut p = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = p.iter().position(|(a, _)| *a == pool as usize) {
        p[i].1 -= 1;
        if p[i].1 == 0 {
            p.swap_remove(i);
        }
    }
}

fn pinned(pool: *mut dpdk_sys::rte_mempool) -> bool {
    PINNED.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|(a, _)| *a == pool as usize)
}

/// An mbuf pool. Freed when dropped if every mbuf is back and no port that
/// was configured with it is still open; otherwise it is leaked (with one
/// line on stderr) so an mbuf still held somewhere, or a port's next
/// allocation, never points into freed memory.
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    name: String,
    size: u32,
}

// SAFETY: a DPDK mempool is a multi-producer/multi-consumer object designed to
// be used from every lcore at once; the handle is just its address.
unsafe impl Send for Mempool {}
// SAFETY: as above: all operations through &Mempool are thread-safe in DPDK.
unsafe impl Sync for Mempool {}

/// Per-lcore cache DPDK's examples use (must be <= 512 and <= n/1.5).
pub const DEFAULT_CACHE: u32 = 256;

impl Mempool {
    /// Creates a pool of `n` mbufs with `data_room` bytes each (headroom
    /// included; `RTE_MBUF_DEFAULT_BUF_SIZE` = 2176 fits a 2048-byte frame).
    pub fn new(name: &str, n: u32, data_room: u16) -> Result<Mempool, Error> {
        let cache = DEFAULT_CACHE.min(n / 2).min(512);
        Self::with_cache(name, n, cache, data_room)
    }

    /// As [`Mempool::new`] with an explicit per-lcore cache size.
    pub fn with_cache(name: &str, n: u32, cache: u32, data_room: u16) -> Result<Mempool, Error> {
        let err = |errno: i32, reason: String| Error::PoolCreate {
            name: name.to_owned(),
            n,
            data_room,
            errno,
            reason,
        };
        if n == 0 {
            return Err(err(libc_einval(), "a pool needs at least one mbuf".into()));
        }
        if (data_room as u32) < dpdk_sys::BRAID_PKTMBUF_HEADROOM as u32 {
            return Err(err(libc_einval(), "data room is smaller than the mbuf headroom (128 B)".into()));
        }
        let cname = CString::new(name).map_err(|_| err(libc_einval(), "name contains NUL".into()))?;
        // SAFETY: valid C string; DPDK copies the name. Memory comes from the
        // calling lcore's NUMA socket (rte_socket_id()).
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, dpdk_sys::rte_socket_id() as i32)
        };
        match NonNull::new(raw) {
            Some(raw) => {
                LIVE.fetch_add(1, Ordering::SeqCst);
                Ok(Mempool { raw, name: name.to_owned(), size: n })
            }
            None => {
                let errno = crate::rte_errno();
                Err(err(errno, crate::strerror(errno)))
            }
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Total mbufs in the pool.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Mbufs free in the pool (including per-lcore caches).
    pub fn avail(&self) -> u32 {
        // SAFETY: valid pool.
        unsafe { dpdk_sys::braid_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs currently handed out.
    pub fn in_use(&self) -> u32 {
        self.size - self.avail()
    }

    /// Bytes of data room per mbuf (headroom included).
    pub fn data_room(&self) -> u16 {
        // SAFETY: valid pktmbuf pool.
        unsafe { dpdk_sys::braid_pktmbuf_data_room_size(self.raw.as_ptr()) }
    }

    /// The raw pool, for the rest of this crate.
    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        let avail = self.avail();
        if pinned(self.raw.as_ptr()) {
            // A port still open allocates from it (its RX rings, or a PMD
            // that allocates on every receive: af_packet, memif).
            LEAKED.store(true, Ordering::SeqCst);
            eprintln!("braid-dpdk: mempool {:?} dropped while a port configured with it is open; leaking it", self.name);
        } else if avail != self.size {
            // Some mbuf is still out (a queue, a ring, a leaked handle):
            // freeing now would leave it dangling. Leak the pool instead.
            LEAKED.store(true, Ordering::SeqCst);
            eprintln!(
                "braid-dpdk: mempool {:?} dropped with {} of {} mbufs still in use; leaking it",
                self.name,
                self.size.saturating_sub(avail),
                self.size
            );
        } else {
            // SAFETY: we own the pool and every mbuf is back in it.
            unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) }
        }
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

fn libc_einval() -> i32 {
    22
}
