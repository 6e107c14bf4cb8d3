//! Pairs of ethdev ports joined back to back by two `rte_ring`s, made in
//! process with `rte_eth_from_rings` (the net_ring PMD): what one port sends,
//! the other receives. For tests and on-box benchmarks.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::error::Error;
use crate::port::{Port, PortId};

/// The rings and the two ports built on them (one ring per queue per
/// direction). Close the ports, then drop this to free the rings (and any
/// mbuf still inside them). Dropped while either port is still open, it
/// leaks the rings instead (a port could still use them).
#[derive(Debug)]
pub struct RingPair {
    _live: crate::EalObject,
    rings: Vec<NonNull<dpdk_sys::rte_ring>>,
    ports: [Option<PortId>; 2],
}

// SAFETY: the rings are only touched by DPDK's thread-safe ring API or by
// Drop, which has exclusive access.
unsafe impl Send for RingPair {}

/// Creates a single-producer/single-consumer ring of `size` slots (a power
/// of two) on the calling lcore's socket.
pub(crate) fn create_ring(name: &str, size: u32) -> Result<NonNull<dpdk_sys::rte_ring>, Error> {
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
    /// Creates ports `<name>_a` and `<name>_b` with one queue each; `size`
    /// is each ring's capacity (a power of two). Same as
    /// [`RingPair::with_queues`] with one queue.
    pub fn new(name: &str, size: u32) -> Result<(RingPair, Port, Port), Error> {
        RingPair::with_queues(name, size, 1)
    }

    /// Creates ports `<name>_a` and `<name>_b` with `queues` RX and TX
    /// queues each: what A sends on its TX queue `q` arrives on B's RX
    /// queue `q`, and back. Nothing hashes frames over queues; configure
    /// the ports with [`PortConfig::steered_queues`](crate::PortConfig)
    /// to use more than one. Rings are `<name>_ab<q>`/`<name>_ba<q>`
    /// (`<name>_ab`/`<name>_ba` with one queue), `size` slots each (a
    /// power of two).
    pub fn with_queues(name: &str, size: u32, queues: u16) -> Result<(RingPair, Port, Port), Error> {
        if queues == 0 {
            return Err(Error::Ring { name: name.into(), reason: "a ring pair needs at least one queue".into() });
        }
        let q = queues as usize;
        // Dropped on an early return, the pair frees the rings made so far,
        // having closed (or never made) the ports that use them.
        let mut pair = RingPair { _live: crate::EalObject::new(), rings: Vec::with_capacity(2 * q), ports: [None, None] };
        for dir in ["ab", "ba"] {
            for i in 0..q {
                let ring_name = if q == 1 { format!("{name}_{dir}") } else { format!("{name}_{dir}{i}") };
                pair.rings.push(create_ring(&ring_name, size)?);
            }
        }
        let (ab, ba) = pair.rings.split_at(q);
        let (ab, ba) = (ab.to_vec(), ba.to_vec());
        let a = make_port(&format!("{name}_a"), &ba, &ab)?;
        pair.ports[0] = Some(a.id());
        let b = match make_port(&format!("{name}_b"), &ab, &ba) {
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

/// A net_ring port whose RX queue `q` reads `rx[q]` and TX queue `q`
/// writes `tx[q]`.
fn make_port(
    name: &str,
    rx: &[NonNull<dpdk_sys::rte_ring>],
    tx: &[NonNull<dpdk_sys::rte_ring>],
) -> Result<Port, Error> {
    let c = CString::new(name).map_err(|_| Error::Ring { name: name.into(), reason: "NUL in name".into() })?;
    let rxs: Vec<*mut dpdk_sys::rte_ring> = rx.iter().map(|r| r.as_ptr()).collect();
    let txs: Vec<*mut dpdk_sys::rte_ring> = tx.iter().map(|r| r.as_ptr()).collect();
    // SAFETY: arrays of valid rings with the lengths given; DPDK copies the
    // pointers.
    let id = unsafe {
        dpdk_sys::rte_eth_from_rings(
            c.as_ptr(),
            rxs.as_ptr(),
            rxs.len() as u32,
            txs.as_ptr(),
            txs.len() as u32,
            dpdk_sys::rte_socket_id(),
        )
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
        for &r in &self.rings {
            // SAFETY: we own the ring and its ports are closed; it holds
            // only mbufs the ports put there, which we now own and free.
            unsafe { crate::mbuf_ring::drain(r) };
            // SAFETY: empty ring we created; ports using it are closed.
            unsafe { dpdk_sys::rte_ring_free(r.as_ptr()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbuf::DEFAULT_DATA_ROOM;
    use crate::{Mbuf, Mempool, PortConfig};

    /// Frames `first..first + n`, each its sequence number then zeros (60 B).
    fn frames(pool: &Mempool, first: u64, n: u64) -> Vec<Mbuf> {
        (first..first + n)
            .map(|s| {
                let mut m = Mbuf::alloc(pool).unwrap();
                let d = m.append(60).unwrap();
                d.fill(0);
                d[..8].copy_from_slice(&s.to_le_bytes());
                m
            })
            .collect()
    }

    fn seqs(v: &[Mbuf]) -> Vec<u64> {
        v.iter().map(|m| u64::from_le_bytes(m.data()[..8].try_into().unwrap())).collect()
    }

    #[test]
    fn queue_q_of_a_reaches_queue_q_of_b_and_back() {
        let _g = crate::testing::eal(&[], 512).1;
        let pool = Mempool::new("rp2q_pool", 2047, DEFAULT_DATA_ROOM).unwrap();
        let initial = pool.avail();
        let (pair, mut a, mut b) = RingPair::with_queues("rp2q", 256, 2).unwrap();
        assert_eq!((a.info().max_rx_queues, a.info().max_tx_queues), (2, 2));
        let cfg = PortConfig { rx_queues: 2, tx_queues: 2, rx_desc: 128, tx_desc: 128, ..Default::default() };
        // net_ring has no RSS: two RX queues only when the caller steers.
        assert!(matches!(a.configure(&cfg, &[&pool]), Err(crate::Error::PortLimit { .. })));
        let cfg = PortConfig { steered_queues: true, ..cfg };
        a.configure(&cfg, &[&pool]).unwrap();
        b.configure(&cfg, &[&pool]).unwrap();
        a.start().unwrap();
        b.start().unwrap();
        let (mut a_tx0, mut a_tx1) = (a.tx_queue(0).unwrap(), a.tx_queue(1).unwrap());
        let (mut b_tx0, mut b_tx1) = (b.tx_queue(0).unwrap(), b.tx_queue(1).unwrap());
        let (mut a_rx0, mut a_rx1) = (a.rx_queue(0).unwrap(), a.rx_queue(1).unwrap());
        let (mut b_rx0, mut b_rx1) = (b.rx_queue(0).unwrap(), b.rx_queue(1).unwrap());

        let mut pkts = frames(&pool, 0, 10);
        assert_eq!(a_tx1.tx_burst(&mut pkts), 10);
        let mut got = Vec::new();
        assert_eq!(b_rx0.rx_burst(&mut got, 32), 0);
        assert_eq!(b_rx1.rx_burst(&mut got, 32), 10);
        assert_eq!(seqs(&got), (0..10).collect::<Vec<_>>());
        got.clear();

        let mut pkts = frames(&pool, 100, 3);
        assert_eq!(a_tx0.tx_burst(&mut pkts), 3);
        assert_eq!(b_rx1.rx_burst(&mut got, 32), 0);
        assert_eq!(b_rx0.rx_burst(&mut got, 32), 3);
        assert_eq!(seqs(&got), vec![100, 101, 102]);
        got.clear();

        // And back, B to A, queue for queue.
        let mut pkts = frames(&pool, 200, 4);
        assert_eq!(b_tx1.tx_burst(&mut pkts), 4);
        let mut pkts = frames(&pool, 300, 2);
        assert_eq!(b_tx0.tx_burst(&mut pkts), 2);
        assert_eq!(a_rx1.rx_burst(&mut got, 32), 4);
        assert_eq!(seqs(&got), vec![200, 201, 202, 203]);
        got.clear();
        assert_eq!(a_rx0.rx_burst(&mut got, 32), 2);
        assert_eq!(seqs(&got), vec![300, 301]);
        got.clear();

        // Frames left in the rings go back to the pool with the pair.
        let mut pkts = frames(&pool, 400, 5);
        assert_eq!(a_tx1.tx_burst(&mut pkts), 5);
        // A port does not close while a queue handle of it lives.
        drop((a_tx0, a_tx1, b_tx0, b_tx1, a_rx0, a_rx1, b_rx0, b_rx1));
        a.close();
        b.close();
        drop(pair);
        assert_eq!(pool.avail(), initial);
    }

    #[test]
    fn one_queue_keeps_its_ring_names() {
        let _g = crate::testing::eal(&[], 512).1;
        let (pair, a, b) = RingPair::new("rp1q", 64).unwrap();
        for n in ["rp1q_ab", "rp1q_ba"] {
            let c = CString::new(n).unwrap();
            // SAFETY: valid C string; a lookup only.
            assert!(!unsafe { dpdk_sys::rte_ring_lookup(c.as_ptr()) }.is_null(), "{n}");
        }
        assert_eq!((a.info().max_rx_queues, b.info().max_tx_queues), (1, 1));
        a.close();
        b.close();
        drop(pair);
        let c = CString::new("rp1q_ab").unwrap();
        // SAFETY: as above.
        assert!(unsafe { dpdk_sys::rte_ring_lookup(c.as_ptr()) }.is_null());
        assert!(RingPair::with_queues("rp0q", 64, 0).is_err());
    }
}
