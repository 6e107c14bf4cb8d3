//! braid's safe DPDK layer: EAL start-up, mempools, ports with negotiated
//! offloads, an owning [`Mbuf`], RX/TX bursts that give back what was not
//! sent, closures launched on lcores with panics caught at the FFI edge,
//! port stats and xstats.
//!
//! This crate and `dpdk-sys` are the only places in braid with `unsafe`;
//! every block says why it is sound. It never starts a DPDK process that could
//! probe PCI devices: EAL arguments must carry `--no-pci` or an explicit `-a`
//! allow-list (see [`eal`]).

pub mod eal;
pub mod error;
pub mod ip_frag;
pub mod lcore;
pub mod mbuf;
pub mod mbuf_ring;
pub mod memory;
pub mod mempool;
pub mod port;
pub mod ring_port;
pub mod rss;
pub mod testing;

pub use eal::Eal;
pub use error::Error;
pub use lcore::{launch, LcoreHandle, LcoreId};
pub use mbuf::Mbuf;
pub use mbuf_ring::{MbufRing, RingConsumer, RingProducer};
pub use mempool::Mempool;
pub use port::{Offloads, Port, PortConfig, PortId, PortInfo, PortStats, QueueId, RxQueue, TxQueue, Tso};

/// A burst, as DPDK's examples use: big enough to amortise per-call costs,
/// small enough to stay in L1.
pub const BURST: usize = 32;

/// `rte_strerror` for an errno value DPDK returned.
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string; we copy it out at once.
    unsafe {
        let p = dpdk_sys::rte_strerror(errno);
        if p.is_null() {
            return format!("errno {errno}");
        }
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// The calling thread's `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int through the shim.
    unsafe { dpdk_sys::braid_rte_errno() }
}

/// TSC cycles, for timing on the hot path.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no preconditions.
    unsafe { dpdk_sys::braid_rdtsc() }
}

/// The pseudo-header checksum DPDK's `rte_ipv6_phdr_cksum` makes of the
/// IPv6 header `hdr` (no segmentation): the seed a port's UDP or TCP
/// checksum offload wants in the checksum field, as the two bytes to
/// store there.
pub fn ipv6_phdr_cksum(hdr: &[u8; 40]) -> [u8; 2] {
    // SAFETY: the shim reads the 40 bytes of `hdr` (`rte_ipv6_hdr` is
    // packed: any alignment) and nothing else.
    unsafe { dpdk_sys::braid_ipv6_phdr_cksum(hdr.as_ptr().cast()) }.to_ne_bytes()
}

/// TSC frequency in Hz (needs EAL up).
pub fn tsc_hz() -> u64 {
    // SAFETY: plain getter.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

/// Objects that live in EAL's memory or use its devices besides pools
/// (ports, rte_rings, reassembly tables), alive now: while any is,
/// [`Eal::cleanup`] leaves EAL's memory mapped (their drops would touch
/// it). Each such type holds one [`EalObject`].
static EAL_OBJECTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A count in [`EAL_OBJECTS`] for as long as it lives.
#[derive(Debug)]
pub(crate) struct EalObject(());

impl EalObject {
    pub(crate) fn new() -> EalObject {
        EAL_OBJECTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        EalObject(())
    }
}

impl Drop for EalObject {
    fn drop(&mut self) {
        EAL_OBJECTS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether any [`EalObject`] is alive (or was leaked with `mem::forget`).
pub(crate) fn eal_objects_outstanding() -> bool {
    EAL_OBJECTS.load(std::sync::atomic::Ordering::SeqCst) != 0
}
