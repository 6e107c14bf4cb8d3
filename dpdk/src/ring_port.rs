//! Pairs of ethdev ports joined back to back by two `rte_ring`s, made in
//! process with `rte_eth_from_rings` (the net_ring PMD): what one port sends,
//! the other receives. For tests and on-box benchmarks.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::error::Error;
use crate::mbuf::Mbuf;
use crate::port::{Port, PortId};

/// Two rings and the two ports built on them. Close the ports, then drop
/// this to free the rings (and any mbuf still inside them). Dropped while
/// either port is still open, it leaks the rings instead (a port could
/// still use them).
#[derive(Debug)]
pub struct RingPair {
    rings: [NonNull<dpdk_sys::rte_ring>; 2],
    ports: [Option<PortId>; 2],
}

// SAFETY: the rings are only touched by DPDK's thread-safe ring API or by
// Drop, which has exclusive access.
unsafe impl Send for RingPair {}

fn create_ring(name: &str, size: u32) -> Result<NonNull<dpdk_sys::rte_ring>, Error> {
    let c = CString::new(name).map_err(|_| Error::Ring { name: name.into(), reason: "NUL in name".into() })?;
    let flags = dpdk_sys::BRAID_RING_F_SP_ENQ | dpdk_sys::BRAID_RING_F_SC_DEQ;
    // SAFETY: valid C string; DPDK copies it.
    let r = unsafe { dpdk_sys::rte_ring_create(c.as_ptr(), size, dpdk_sys::rte_socket_id() as i32, flags as u32) };
    NonNull::new(r).ok_or_else(|| {
        let e = crate::rte_errno();
        Error::Ring { name: name.into(), reason: crate::strerror(e) }
    })
}

impl RingPair {
    /// Creates ports `<name>_a` and `<name>_b`; `size` is each ring's
    /// capacity (a power of two).
    pub fn new(name: &str, size: u32) -> Result<(RingPair, Port, Port), Error> {
        let ab = create_ring(&format!("{name}_ab"), size)?;
        let ba = match create_ring(&format!("{name}_ba"), size) {
            Ok(r) => r,
            Err(e) => {
                // SAFETY: created above, unused.
                unsafe { dpdk_sys::rte_ring_free(ab.as_ptr()) };
                return Err(e);
            }
        };
        // Dropped on an early return, the pair frees the rings, having
        // closed (or never made) the ports that use them.
        let mut pair = RingPair { rings: [ab, ba], ports: [None, None] };
        let a = make_port(&format!("{name}_a"), ba, ab)?;
        pair.ports[0] = Some(a.id());
        let b = match make_port(&format!("{name}_b"), ab, ba) {
            Ok(b) => b,
            Err(e) => {
                a.close();
                return Err(e);
            }
        };
        pair.ports[1] = Some(b.id());
        Ok((pair, a, b))
    }
}

fn make_port(name: &str, rx: NonNull<dpdk_sys::rte_ring>, tx: NonNull<dpdk_sys::rte_ring>) -> Result<Port, Error> {
    let c = CString::new(name).map_err(|_| Error::Ring { name: name.into(), reason: "NUL in name".into() })?;
    let rxs = [rx.as_ptr()];
    let txs = [tx.as_ptr()];
    // SAFETY: arrays of one valid ring each; DPDK copies the pointers.
    let id = unsafe {
        dpdk_sys::rte_eth_from_rings(c.as_ptr(), rxs.as_ptr(), 1, txs.as_ptr(), 1, dpdk_sys::rte_socket_id())
    };
    if id < 0 {
        let e = crate::rte_errno();
        return Err(Error::Ring { name: name.into(), reason: format!("rte_eth_from_rings: {}", crate::strerror(e)) });
    }
    let id = id as u16;
    Port::by_id(PortId(id), name).inspect_err(|_| {
        // SAFETY: the port was just made and nothing else holds it.
        unsafe { dpdk_sys::rte_eth_dev_close(id) };
    })
}

impl Drop for RingPair {
    fn drop(&mut self) {
        // SAFETY: plain queries.
        let open = self.ports.iter().flatten().any(|p| unsafe { dpdk_sys::rte_eth_dev_is_valid_port(p.0) } == 1);
        if open {
            eprintln!("braid-dpdk: RingPair dropped while one of its ports is open; leaking its rings");
            return;
        }
        for r in self.rings {
            let mut objs = [std::ptr::null_mut::<std::ffi::c_void>(); 32];
            loop {
                // SAFETY: we own the ring; dequeued objects are mbufs the
                // ports put there, which we now own and free.
                let n = unsafe { dpdk_sys::braid_ring_dequeue_burst(r.as_ptr(), objs.as_mut_ptr(), 32, std::ptr::null_mut()) };
                if n == 0 {
                    break;
                }
                for &o in &objs[..n as usize] {
                    if let Some(m) = NonNull::new(o as *mut dpdk_sys::rte_mbuf) {
                        // SAFETY: see above.
                        drop(unsafe { Mbuf::from_raw(m) });
                    }
                }
            }
            // SAFETY: empty ring we created; ports using it are closed.
            unsafe { dpdk_sys::rte_ring_free(r.as_ptr()) };
        }
    }
}
