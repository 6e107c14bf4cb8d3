//! Ethernet ports: discovery, offload negotiation, queue set-up, bursts,
//! stats.

use std::ffi::{CStr, CString};
use std::fmt;

use dpdk_sys::consts::*;

use crate::error::Error;
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;

/// A DPDK port id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);
impl fmt::Debug for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// A queue index on a port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u16);
impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{}", self.0)
    }
}

/// The offloads braid uses, as booleans; negotiated against what the PMD
/// reports, then turned into DPDK's bit masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    pub rx_ipv4_cksum: bool,
    pub rx_udp_cksum: bool,
    pub rx_tcp_cksum: bool,
    pub rx_rss_hash: bool,
    pub rx_scatter: bool,
    pub tx_ipv4_cksum: bool,
    pub tx_udp_cksum: bool,
    pub tx_tcp_cksum: bool,
    pub tx_tcp_tso: bool,
    pub tx_udp_tso: bool,
    pub tx_multi_segs: bool,
}

/// (field, RX?, bit) for each offload in [`Offloads`].
const OFFLOAD_BITS: [(fn(&mut Offloads) -> &mut bool, bool, u64); 11] = [
    (|o| &mut o.rx_ipv4_cksum, true, BRAID_RX_OFFLOAD_IPV4_CKSUM),
    (|o| &mut o.rx_udp_cksum, true, BRAID_RX_OFFLOAD_UDP_CKSUM),
    (|o| &mut o.rx_tcp_cksum, true, BRAID_RX_OFFLOAD_TCP_CKSUM),
    (|o| &mut o.rx_rss_hash, true, BRAID_RX_OFFLOAD_RSS_HASH),
    (|o| &mut o.rx_scatter, true, BRAID_RX_OFFLOAD_SCATTER),
    (|o| &mut o.tx_ipv4_cksum, false, BRAID_TX_OFFLOAD_IPV4_CKSUM),
    (|o| &mut o.tx_udp_cksum, false, BRAID_TX_OFFLOAD_UDP_CKSUM),
    (|o| &mut o.tx_tcp_cksum, false, BRAID_TX_OFFLOAD_TCP_CKSUM),
    (|o| &mut o.tx_tcp_tso, false, BRAID_TX_OFFLOAD_TCP_TSO),
    (|o| &mut o.tx_udp_tso, false, BRAID_TX_OFFLOAD_UDP_TSO),
    (|o| &mut o.tx_multi_segs, false, BRAID_TX_OFFLOAD_MULTI_SEGS),
];

impl Offloads {
    /// Everything braid can use.
    pub const ALL: Offloads = Offloads {
        rx_ipv4_cksum: true,
        rx_udp_cksum: true,
        rx_tcp_cksum: true,
        rx_rss_hash: true,
        rx_scatter: true,
        tx_ipv4_cksum: true,
        tx_udp_cksum: true,
        tx_tcp_cksum: true,
        tx_tcp_tso: true,
        tx_udp_tso: true,
        tx_multi_segs: true,
    };

    /// From DPDK's RX and TX masks.
    pub fn from_masks(rx: u64, tx: u64) -> Offloads {
        let mut o = Offloads::default();
        for (field, is_rx, bit) in OFFLOAD_BITS {
            *field(&mut o) = (if is_rx { rx } else { tx }) & bit != 0;
        }
        o
    }

    /// DPDK's (RX, TX) masks.
    pub fn masks(&self) -> (u64, u64) {
        let mut me = *self;
        let (mut rx, mut tx) = (0, 0);
        for (field, is_rx, bit) in OFFLOAD_BITS {
            if *field(&mut me) {
                if is_rx {
                    rx |= bit
                } else {
                    tx |= bit
                }
            }
        }
        (rx, tx)
    }

    /// What is both wanted and reported by the PMD: the only offloads a port
    /// is ever configured with. Segmentation needs multi-segment TX and the
    /// matching checksum, so it is dropped if those are missing.
    pub fn negotiate(want: Offloads, capa: Offloads) -> Offloads {
        let (wr, wt) = want.masks();
        let (cr, ct) = capa.masks();
        let mut o = Offloads::from_masks(wr & cr, wt & ct);
        if !(o.tx_ipv4_cksum && o.tx_tcp_cksum) {
            o.tx_tcp_tso = false;
        }
        if !(o.tx_ipv4_cksum && o.tx_udp_cksum) {
            o.tx_udp_tso = false;
        }
        o
    }
}

/// What the PMD says about a port.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub id: PortId,
    pub name: String,
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rx_desc_max: u16,
    pub tx_desc_max: u16,
    pub rx_desc_min: u16,
    pub tx_desc_min: u16,
    pub max_rx_pktlen: u32,
    pub min_mtu: u16,
    pub max_mtu: u16,
    /// Offloads the port reports (port-level capabilities).
    pub capa: Offloads,
    /// RSS hash functions the port supports (`RTE_ETH_RSS_*`).
    pub rss_capa: u64,
}

/// How to set a port up.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Offloads wanted; only those the PMD reports are turned on.
    pub offloads: Offloads,
    /// MTU to set, if any. A PMD that refuses `set_mtu` (memif, ring) is
    /// tolerated when it already supports the frame size.
    pub mtu: Option<u16>,
    /// Receive every frame whatever its destination MAC.
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            offloads: Offloads::ALL,
            mtu: None,
            promiscuous: true,
        }
    }
}

/// A port EAL knows. Configure it, then take its queues.
#[derive(Debug)]
pub struct Port {
    info: PortInfo,
    granted: Offloads,
    started: bool,
    rx_queues: u16,
    tx_queues: u16,
}

fn port_names() -> Vec<String> {
    let mut out = Vec::new();
    for id in 0..dpdk_sys::BRAID_MAX_ETHPORTS as u16 {
        // SAFETY: plain query.
        if unsafe { dpdk_sys::rte_eth_dev_is_valid_port(id) } == 1 {
            let mut buf = [0 as std::ffi::c_char; dpdk_sys::BRAID_ETH_NAME_MAX_LEN as usize];
            // SAFETY: buf has RTE_ETH_NAME_MAX_LEN bytes as the API requires.
            if unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) } == 0 {
                // SAFETY: DPDK NUL-terminates the name.
                out.push(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned());
            }
        }
    }
    out
}

impl Port {
    /// Every port EAL created (vdevs, allow-listed devices), by name.
    pub fn names() -> Vec<String> {
        port_names()
    }

    /// Finds a port by its device name (e.g. `net_ring0`, `net_memif`).
    pub fn by_name(name: &str) -> Result<Port, Error> {
        let not_found = || Error::NoSuchPort { name: name.to_owned(), present: port_names() };
        let cname = CString::new(name).map_err(|_| not_found())?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer.
        if unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) } != 0 {
            return Err(not_found());
        }
        Port::by_id(PortId(id), name)
    }

    pub(crate) fn by_id(id: PortId, name: &str) -> Result<Port, Error> {
        let info = port_info(id, name)?;
        Ok(Port { info, granted: Offloads::default(), started: false, rx_queues: 0, tx_queues: 0 })
    }

    /// The port's id.
    pub fn id(&self) -> PortId {
        self.info.id
    }

    /// What the PMD reports.
    pub fn info(&self) -> &PortInfo {
        &self.info
    }

    /// Offloads turned on by [`Port::configure`].
    pub fn offloads(&self) -> Offloads {
        self.granted
    }

    fn fail(&self, op: &'static str, ret: i32) -> Error {
        let errno = if ret < 0 { -ret } else { ret };
        Error::Port { port: self.info.id.0, driver: self.info.driver.clone(), op, ret, reason: crate::strerror(errno) }
    }

    fn limit(&self, what: String) -> Error {
        Error::PortLimit { port: self.info.id.0, driver: self.info.driver.clone(), what }
    }

    /// Configures the port and its queues. `rx_pools[i]` feeds RX queue `i`
    /// (one pool may be given for all). Checks that each pool can fill its
    /// RX ring and still leave mbufs for bursts in flight, so a pool that is
    /// too small is an error here, not a silent stall later.
    pub fn configure(&mut self, cfg: &PortConfig, rx_pools: &[&Mempool]) -> Result<(), Error> {
        let info = &self.info;
        let id = info.id.0;
        if cfg.rx_queues == 0 || cfg.tx_queues == 0 {
            return Err(self.limit("needs at least one RX and one TX queue".into()));
        }
        if cfg.rx_queues > info.max_rx_queues || cfg.tx_queues > info.max_tx_queues {
            return Err(self.limit(format!(
                "asked for {} RX / {} TX queues, the PMD has at most {} / {}",
                cfg.rx_queues, cfg.tx_queues, info.max_rx_queues, info.max_tx_queues
            )));
        }
        if rx_pools.is_empty() {
            return Err(self.limit("no mempool given for RX".into()));
        }
        let rx_desc = cfg.rx_desc.clamp(info.rx_desc_min.max(1), info.rx_desc_max.max(1));
        let tx_desc = cfg.tx_desc.clamp(info.tx_desc_min.max(1), info.tx_desc_max.max(1));
        // Each pool must fill every RX ring it feeds, plus one burst per
        // queue and the per-lcore caches, or RX starves.
        for (p, pool) in rx_pools.iter().enumerate() {
            let queues = if rx_pools.len() == 1 { cfg.rx_queues as u32 } else { 1 };
            let need = queues * (rx_desc as u32 + crate::BURST as u32) + crate::mempool::DEFAULT_CACHE.min(pool.size() / 2);
            if pool.size() < need {
                return Err(Error::PoolTooSmall {
                    pool: pool.name().to_owned(),
                    port: id,
                    have: pool.size(),
                    need,
                    detail: format!("{queues} RX queue(s) x ({rx_desc} descriptors + a burst of {}) + cache; pool #{p}", crate::BURST),
                });
            }
        }

        self.granted = Offloads::negotiate(cfg.offloads, info.capa);
        let (rx_off, tx_off) = self.granted.masks();
        // SAFETY: rte_eth_conf is plain old data; all-zero is DPDK's default.
        let mut conf: dpdk_sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        conf.rxmode.offloads = rx_off;
        conf.txmode.offloads = tx_off;
        if cfg.rx_queues > 1 && info.rss_capa != 0 {
            conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = info.rss_capa & (BRAID_ETH_RSS_IP | BRAID_ETH_RSS_UDP | BRAID_ETH_RSS_TCP);
        }
        if self.started {
            // SAFETY: valid port.
            unsafe { dpdk_sys::rte_eth_dev_stop(id) };
            self.started = false;
        }
        // SAFETY: conf is initialised; DPDK copies it.
        let ret = unsafe { dpdk_sys::rte_eth_dev_configure(id, cfg.rx_queues, cfg.tx_queues, &conf) };
        if ret != 0 {
            return Err(self.fail("rte_eth_dev_configure", ret));
        }
        if let Some(mtu) = cfg.mtu {
            // SAFETY: valid port.
            let ret = unsafe { dpdk_sys::rte_eth_dev_set_mtu(id, mtu) };
            let fits = (mtu as u32 + 18) <= self.info.max_rx_pktlen;
            if ret != 0 && !fits {
                return Err(self.fail("rte_eth_dev_set_mtu", ret));
            }
        }
        let mut dev: dpdk_sys::rte_eth_dev_info = Default::default();
        // SAFETY: out-pointer to a zeroed struct.
        unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut dev) };
        // SAFETY: plain query.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { unsafe { dpdk_sys::rte_socket_id() } } else { socket as u32 };
        for q in 0..cfg.rx_queues {
            let pool = rx_pools.get(q as usize).unwrap_or(&rx_pools[0]);
            let mut rxconf = dev.default_rxconf;
            rxconf.offloads = rx_off;
            // SAFETY: rxconf is a copy of the PMD's defaults; the pool outlives
            // the port by contract of the caller (ports stop before pools drop).
            let ret = unsafe { dpdk_sys::rte_eth_rx_queue_setup(id, q, rx_desc, socket, &rxconf, pool.as_ptr()) };
            if ret != 0 {
                return Err(self.fail("rte_eth_rx_queue_setup", ret));
            }
        }
        for q in 0..cfg.tx_queues {
            let mut txconf = dev.default_txconf;
            txconf.offloads = tx_off;
            // SAFETY: as above.
            let ret = unsafe { dpdk_sys::rte_eth_tx_queue_setup(id, q, tx_desc, socket, &txconf) };
            if ret != 0 {
                return Err(self.fail("rte_eth_tx_queue_setup", ret));
            }
        }
        if cfg.promiscuous {
            // SAFETY: valid port; some PMDs do not support it, which is fine.
            unsafe { dpdk_sys::rte_eth_promiscuous_enable(id) };
        }
        self.rx_queues = cfg.rx_queues;
        self.tx_queues = cfg.tx_queues;
        Ok(())
    }

    /// Starts the port.
    pub fn start(&mut self) -> Result<(), Error> {
        // SAFETY: configured port.
        let ret = unsafe { dpdk_sys::rte_eth_dev_start(self.info.id.0) };
        if ret != 0 {
            return Err(self.fail("rte_eth_dev_start", ret));
        }
        self.started = true;
        Ok(())
    }

    /// Stops the port (RX/TX queues stop; mbufs in rings go back to pools
    /// when the port is closed).
    pub fn stop(&mut self) {
        if self.started {
            // SAFETY: started port.
            unsafe { dpdk_sys::rte_eth_dev_stop(self.info.id.0) };
            self.started = false;
        }
    }

    /// Stops and closes the port, returning every mbuf its rings held.
    pub fn close(mut self) {
        self.stop();
        // SAFETY: stopped port; no queue handle can outlive this call because
        // queues borrow nothing but are documented to be dropped first.
        unsafe { dpdk_sys::rte_eth_dev_close(self.info.id.0) };
    }

    /// Handle to RX queue `q`. One lcore should own it.
    pub fn rx_queue(&self, q: u16) -> Result<RxQueue, Error> {
        if q >= self.rx_queues {
            return Err(self.limit(format!("RX queue {q} was not configured ({} queues)", self.rx_queues)));
        }
        Ok(RxQueue { port: self.info.id, queue: QueueId(q) })
    }

    /// Handle to TX queue `q`. One lcore should own it.
    pub fn tx_queue(&self, q: u16) -> Result<TxQueue, Error> {
        if q >= self.tx_queues {
            return Err(self.limit(format!("TX queue {q} was not configured ({} queues)", self.tx_queues)));
        }
        Ok(TxQueue { port: self.info.id, queue: QueueId(q), prepare: self.granted.tx_tcp_tso || self.granted.tx_udp_tso })
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut a = dpdk_sys::rte_ether_addr::default();
        // SAFETY: out-pointer.
        unsafe { dpdk_sys::rte_eth_macaddr_get(self.info.id.0, &mut a) };
        a.addr_bytes
    }

    /// The offloads the port was actually configured with, read back from
    /// ethdev (`rte_eth_dev_conf_get`).
    pub fn configured_offloads(&self) -> Offloads {
        // SAFETY: rte_eth_conf is plain old data; out-pointer.
        let mut conf: dpdk_sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        // SAFETY: valid port and out-pointer.
        unsafe { dpdk_sys::rte_eth_dev_conf_get(self.info.id.0, &mut conf) };
        Offloads::from_masks(conf.rxmode.offloads, conf.txmode.offloads)
    }

    /// True when the link is up (memif: the peer is connected).
    pub fn link_up(&self) -> bool {
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid port, out-pointer.
        let ret = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.info.id.0, &mut link) };
        ret == 0 && link.link_status() != 0
    }

    /// Basic counters.
    pub fn stats(&self) -> PortStats {
        stats(self.info.id)
    }

    /// Every extended counter the PMD exposes, by name.
    pub fn xstats(&self) -> Vec<(String, u64)> {
        xstats(self.info.id)
    }

    /// Zeroes the basic counters.
    pub fn reset_stats(&self) {
        // SAFETY: valid port.
        unsafe { dpdk_sys::rte_eth_stats_reset(self.info.id.0) };
    }
}

fn port_info(id: PortId, name: &str) -> Result<PortInfo, Error> {
    let mut dev: dpdk_sys::rte_eth_dev_info = Default::default();
    // SAFETY: out-pointer to a zeroed struct.
    let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(id.0, &mut dev) };
    if ret != 0 {
        return Err(Error::Port { port: id.0, driver: "?".into(), op: "rte_eth_dev_info_get", ret, reason: crate::strerror(-ret) });
    }
    let driver = if dev.driver_name.is_null() {
        String::from("?")
    } else {
        // SAFETY: DPDK's static driver name string.
        unsafe { CStr::from_ptr(dev.driver_name) }.to_string_lossy().into_owned()
    };
    Ok(PortInfo {
        id,
        name: name.to_owned(),
        driver,
        max_rx_queues: dev.max_rx_queues,
        max_tx_queues: dev.max_tx_queues,
        rx_desc_max: dev.rx_desc_lim.nb_max,
        tx_desc_max: dev.tx_desc_lim.nb_max,
        rx_desc_min: dev.rx_desc_lim.nb_min,
        tx_desc_min: dev.tx_desc_lim.nb_min,
        max_rx_pktlen: dev.max_rx_pktlen,
        min_mtu: dev.min_mtu,
        max_mtu: dev.max_mtu,
        capa: Offloads::from_masks(dev.rx_offload_capa, dev.tx_offload_capa),
        rss_capa: dev.flow_type_rss_offloads,
    })
}

/// Basic port counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// RX dropped by the NIC for lack of descriptors/mbufs.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

fn stats(id: PortId) -> PortStats {
    let mut s = dpdk_sys::rte_eth_stats::default();
    // SAFETY: out-pointer.
    unsafe { dpdk_sys::rte_eth_stats_get(id.0, &mut s) };
    PortStats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    }
}

fn xstats(id: PortId) -> Vec<(String, u64)> {
    // SAFETY: null/0 asks for the count.
    let n = unsafe { dpdk_sys::rte_eth_xstats_get_names(id.0, std::ptr::null_mut(), 0) };
    if n <= 0 {
        return Vec::new();
    }
    let n = n as usize;
    let mut names = vec![dpdk_sys::rte_eth_xstat_name::default(); n];
    let mut vals = vec![dpdk_sys::rte_eth_xstat::default(); n];
    // SAFETY: both arrays have n elements.
    let got_names = unsafe { dpdk_sys::rte_eth_xstats_get_names(id.0, names.as_mut_ptr(), n as u32) };
    // SAFETY: as above.
    let got = unsafe { dpdk_sys::rte_eth_xstats_get(id.0, vals.as_mut_ptr(), n as u32) };
    if got_names <= 0 || got <= 0 {
        return Vec::new();
    }
    vals.truncate(got as usize);
    vals.iter()
        .filter_map(|v| {
            let nm = names.get(v.id as usize)?;
            // SAFETY: DPDK NUL-terminates xstat names within the array.
            let s = unsafe { CStr::from_ptr(nm.name.as_ptr()) }.to_string_lossy().into_owned();
            Some((s, v.value))
        })
        .collect()
}

/// An RX queue. Owned by one lcore (not `Sync`); `Send` so it can be moved to
/// the lcore that polls it.
#[derive(Debug)]
pub struct RxQueue {
    port: PortId,
    queue: QueueId,
}

/// A TX queue. Owned by one lcore.
#[derive(Debug)]
pub struct TxQueue {
    port: PortId,
    queue: QueueId,
    prepare: bool,
}

impl RxQueue {
    /// Receives up to `max` packets (at most the spare room up to
    /// `out.capacity()` is not assumed: `out` grows if needed) and appends
    /// them to `out`. Returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> usize {
        out.reserve(max);
        let len = out.len();
        let max = max.min(u16::MAX as usize) as u16;
        // SAFETY: `out` has room for `max` more pointers; Mbuf is a
        // repr(transparent) non-null pointer, and DPDK writes `n` owned mbufs.
        unsafe {
            let dst = out.as_mut_ptr().add(len) as *mut *mut dpdk_sys::rte_mbuf;
            let n = dpdk_sys::braid_eth_rx_burst(self.port.0, self.queue.0, dst, max) as usize;
            out.set_len(len + n);
            n
        }
    }

    pub fn port(&self) -> PortId {
        self.port
    }
    pub fn queue(&self) -> QueueId {
        self.queue
    }
}

impl TxQueue {
    /// Sends the packets in `pkts`. Those the NIC took are removed from the
    /// front of `pkts`; those it did not are left in `pkts`, in order, for the
    /// caller to retry or drop (and count). Returns how many were sent.
    #[inline]
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        let n = pkts.len().min(u16::MAX as usize) as u16;
        // SAFETY: pkts holds n owned mbufs laid out as *mut rte_mbuf.
        // tx_prepare only validates/fixes headers in place.
        let sent = unsafe {
            let p = pkts.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf;
            let ok = if self.prepare { dpdk_sys::braid_eth_tx_prepare(self.port.0, self.queue.0, p, n) } else { n };
            dpdk_sys::braid_eth_tx_burst(self.port.0, self.queue.0, p, ok) as usize
        };
        // The first `sent` mbufs now belong to the NIC: forget them without
        // dropping and shift the rest to the front.
        // SAFETY: indices are in bounds; the moved-out prefix is never read again.
        unsafe {
            let len = pkts.len();
            let base = pkts.as_mut_ptr();
            std::ptr::copy(base.add(sent), base, len - sent);
            pkts.set_len(len - sent);
        }
        sent
    }

    /// Sends everything, retrying while the NIC makes progress; what is
    /// still left after `max_spins` fruitless tries stays in `pkts`.
    pub fn tx_all(&mut self, pkts: &mut Vec<Mbuf>, max_spins: u32) -> usize {
        let mut total = 0;
        let mut idle = 0;
        while !pkts.is_empty() && idle < max_spins {
            let n = self.tx_burst(pkts);
            total += n;
            if n == 0 {
                idle += 1;
                // SAFETY: a pause instruction.
                unsafe { dpdk_sys::braid_pause() };
            } else {
                idle = 0;
            }
        }
        total
    }

    pub fn port(&self) -> PortId {
        self.port
    }
    pub fn queue(&self) -> QueueId {
        self.queue
    }
}

#[cfg(test)]
mod tests {
    use super::Offloads;

    #[test]
    fn masks_round_trip() {
        let (rx, tx) = Offloads::ALL.masks();
        assert_eq!(Offloads::from_masks(rx, tx), Offloads::ALL);
        assert_eq!(Offloads::from_masks(0, 0), Offloads::default());
    }

    #[test]
    fn negotiation_never_asks_for_more_than_reported() {
        let capa = Offloads { tx_multi_segs: true, rx_scatter: true, ..Default::default() };
        let got = Offloads::negotiate(Offloads::ALL, capa);
        assert_eq!(got, capa);
        // TSO without the checksums it relies on is not requested.
        let capa = Offloads { tx_tcp_tso: true, tx_multi_segs: true, ..Default::default() };
        assert!(!Offloads::negotiate(Offloads::ALL, capa).tx_tcp_tso);
        // Nothing wanted, nothing granted.
        assert_eq!(Offloads::negotiate(Offloads::default(), Offloads::ALL), Offloads::default());
    }
}
