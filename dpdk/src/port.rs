//! Ethernet ports: discovery, offload negotiation, queue set-up, bursts,
//! stats.

use std::ffi::{CStr, CString};
use std::fmt;
use std::sync::{Arc, Mutex};

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
/// Accessor of one [`Offloads`] field.
type Field = fn(&mut Offloads) -> &mut bool;

const OFFLOAD_BITS: [(Field, bool, u64); 11] = [
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
    /// is ever configured with. Segmentation needs the checksums it relies
    /// on (IPv4 plus TCP or UDP), so it is dropped if those are missing;
    /// it does not need `tx_multi_segs` (a TSO packet may be one segment).
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

/// How a port cuts a packet it was asked to segment (`TX_TCP_SEG`): what
/// a caller must know beyond the offload bit, per PMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tso {
    /// The PMD checks `l2_len + l3_len + l4_len + tso_segsz` (the
    /// segment's Ethernet frame, not its IP packet) against the MTU, and
    /// refuses a larger request: a segment then carries 14 bytes less.
    /// net_tap in DPDK 22.11 (`pmd_tx_burst`, its GSO size).
    pub counts_l2: bool,
    /// The PMD cuts TCP over IPv6 too. net_tap cuts with DPDK 22.11's GSO
    /// library, which cuts TCP over IPv4 only (and sends anything else
    /// whole, as a giant).
    pub ipv6: bool,
    /// Most header bytes (Ethernet, IP and TCP, with options) a packet
    /// may have for the PMD to cut it. net_tap's GSO copies the headers
    /// into mbufs of its own with 128 bytes of room and checks nothing
    /// (`TAP_GSO_MBUF_SEG_SIZE`): IPv4 and TCP options can reach 134.
    pub max_headers: usize,
}

impl Tso {
    /// A NIC's TSO: segments sized by their IP packet, IPv4 and IPv6.
    pub const NIC: Tso = Tso { counts_l2: false, ipv6: true, max_headers: usize::MAX };

    /// What the PMD named `driver` does, given that it offers TCP TSO.
    /// A NIC's PMD checks what it cannot cut in `tx_prepare` (the packet
    /// is then dropped and counted, never sent wrong).
    pub fn of_driver(driver: &str) -> Tso {
        match driver {
            "net_tap" => Tso { counts_l2: true, ipv6: false, max_headers: 128 },
            _ => Tso::NIC,
        }
    }

    /// The largest IP packet a segment may be asked to carry on a link of
    /// `mtu` bytes (IP), as this PMD takes the request.
    pub fn ip_mtu(&self, mtu: usize) -> usize {
        mtu.saturating_sub(if self.counts_l2 { 14 } else { 0 })
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
    /// MTU to set, if any. A PMD without `set_mtu` (memif, ring: `-ENOTSUP`)
    /// is tolerated when it already supports the frame size; any other
    /// failure is an error.
    pub mtu: Option<u16>,
    /// Receive every frame whatever its destination MAC.
    pub promiscuous: bool,
    /// Several RX queues on a port without RSS: the caller knows how frames
    /// reach each queue (net_ring, memif queue pairs).
    pub steered_queues: bool,
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
            steered_queues: false,
        }
    }
}

/// Devices a [`Port`] holds in this process (by port id).
static HELD: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A port EAL knows. Configure it, then take its queues (each queue once
/// per [`Port::configure`]).
///
/// One `Port` per device in the process ([`Port::by_name`] refuses a
/// device another `Port` holds). While a [`RxQueue`] or [`TxQueue`] of it
/// lives (an lcore may be polling it), `configure` is refused and `stop`
/// and `close` leave the device running (`close` then leaks it, still
/// held). A mempool given to `configure` and dropped while the port is
/// open is leaked, not freed (see [`Mempool`]).
#[derive(Debug)]
pub struct Port {
    /// Its count of objects in EAL's memory ([`crate::Eal::cleanup`]).
    _live: crate::EalObject,
    /// Cloned into every queue handle: more than one strong count means a
    /// handle is alive.
    handles: Arc<()>,
    /// The pools `configure` gave the RX queues (addresses), pinned until
    /// `close`.
    pools: Vec<usize>,
    /// `rte_eth_dev_close` ran.
    closed: bool,
    info: PortInfo,
    granted: Offloads,
    started: bool,
    rx_queues: u16,
    tx_queues: u16,
    /// RSS spreads the RX queues (set by `configure`).
    rss: bool,
    /// Which RX / TX queue handles were handed out since `configure`.
    taken: Mutex<(Vec<bool>, Vec<bool>)>,
}

/// What [`Port::configure`] asks ethdev for in `rte_eth_conf`; a pure
/// function of the config, the port's capabilities and the granted
/// offloads, so it can be unit-tested without a PMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EthConf {
    pub rx_offloads: u64,
    pub tx_offloads: u64,
    /// `rxmode.mq_mode = RTE_ETH_MQ_RX_RSS`.
    pub rss: bool,
    /// `rx_adv_conf.rss_conf.rss_hf`.
    pub rss_hf: u64,
}

/// RSS is on whenever the RSS-hash offload is granted (ethdev refuses the
/// offload without RSS mode) or several RX queues must share traffic; the
/// latter needs IP, UDP or TCP hashing from the port, unless the caller
/// steers frames to the queues itself (`steered_queues`), in which case a
/// port without RSS gets several queues and no RSS.
pub(crate) fn eth_conf(cfg: &PortConfig, info: &PortInfo, granted: Offloads) -> Result<EthConf, String> {
    let (rx_offloads, tx_offloads) = granted.masks();
    let rss_hf = info.rss_capa & (BRAID_ETH_RSS_IP | BRAID_ETH_RSS_UDP | BRAID_ETH_RSS_TCP);
    if cfg.rx_queues > 1 && rss_hf == 0 && !cfg.steered_queues {
        return Err(format!(
            "{} RX queues need RSS over IP/UDP/TCP, but the port's RSS capabilities are {:#x} \
             (set steered_queues if frames reach each queue another way)",
            cfg.rx_queues, info.rss_capa
        ));
    }
    let rss = granted.rx_rss_hash || (cfg.rx_queues > 1 && rss_hf != 0);
    Ok(EthConf { rx_offloads, tx_offloads, rss, rss_hf: if rss { rss_hf } else { 0 } })
}

impl EthConf {
    fn to_raw(self) -> dpdk_sys::rte_eth_conf {
        // SAFETY: rte_eth_conf is plain old data; all-zero is DPDK's default.
        let mut conf: dpdk_sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        conf.rxmode.offloads = self.rx_offloads;
        conf.txmode.offloads = self.tx_offloads;
        if self.rss {
            conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = self.rss_hf;
        }
        conf
    }
}

/// `want` fitted into the PMD's [min, max] descriptor range; never panics
/// (a PMD reporting min > max gets min; ethdev adjusts further).
fn fit_desc(want: u16, min: u16, max: u16) -> u16 {
    let max = if max == 0 { u16::MAX } else { max };
    want.min(max).max(min.max(1))
}

/// ENOTSUP on Linux: what ethdev returns for an op the PMD lacks.
const ENOTSUP: i32 = 95;

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

/// Stops and closes every device EAL probed that no [`Port`] holds: a
/// vdev given to EAL and never opened (or one a failed set-up let go)
/// keeps its kernel interface (`net_tap`) or sockets (`net_af_packet`)
/// otherwise, which `rte_eal_cleanup` (DPDK 22.11) does not close, and
/// which would outlive the process image across an `exec`. Returns how
/// many it closed.
pub(crate) fn close_unheld() -> usize {
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let mut closed = 0;
    // As `RTE_ETH_FOREACH_DEV`: devices no other device owns (a failsafe
    // or netvsc parent closes its sub-devices itself).
    let next = |from: u64| -> Option<u16> {
        // SAFETY: plain query; it returns RTE_MAX_ETHPORTS past the last.
        let id = unsafe { dpdk_sys::rte_eth_find_next_owned_by(from as u16, u64::from(dpdk_sys::RTE_ETH_DEV_NO_OWNER)) };
        ((id as usize) < dpdk_sys::BRAID_MAX_ETHPORTS as usize).then_some(id as u16)
    };
    let mut at = next(0);
    while let Some(id) = at {
        at = next(u64::from(id) + 1);
        if held.contains(&id) {
            continue;
        }
        // SAFETY: a valid device no `Port` holds: no queue handle of
        // this process can use it.
        unsafe {
            dpdk_sys::rte_eth_dev_stop(id);
            if dpdk_sys::rte_eth_dev_close(id) == 0 {
                closed += 1;
            }
        }
    }
    closed
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
        {
            let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
            if held.contains(&id.0) {
                return Err(Error::PortLimit {
                    port: id.0,
                    driver: info.driver.clone(),
                    what: format!("{name} is already held by another Port in this process"),
                });
            }
            held.push(id.0);
        }
        Ok(Port {
            _live: crate::EalObject::new(),
            handles: Arc::new(()),
            pools: Vec::new(),
            closed: false,
            info,
            granted: Offloads::default(),
            started: false,
            rx_queues: 0,
            tx_queues: 0,
            rss: false,
            taken: Mutex::new((Vec::new(), Vec::new())),
        })
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

    /// TCP segmentation on TX, if [`Port::configure`] turned it on, and
    /// how this PMD does it.
    pub fn tso(&self) -> Option<Tso> {
        self.granted.tx_tcp_tso.then(|| Tso::of_driver(&self.info.driver))
    }

    fn fail(&self, op: &'static str, ret: i32) -> Error {
        let errno = if ret < 0 { -ret } else { ret };
        Error::Port { port: self.info.id.0, driver: self.info.driver.clone(), op, ret, reason: crate::strerror(errno) }
    }

    fn limit(&self, what: String) -> Error {
        Error::PortLimit { port: self.info.id.0, driver: self.info.driver.clone(), what }
    }

    /// Configures the port and its queues. `rx_pools` is either one pool
    /// for every RX queue or one pool per RX queue (`rx_pools[i]` feeds
    /// queue `i`); the pools must outlive the port (see [`Port`]).
    ///
    /// Checks that each pool is big enough, so a pool that is too small is
    /// an error here, not a silent stall later. `need` counts, per pool:
    /// every RX descriptor of the queues it feeds plus one burst per queue,
    /// the per-lcore cache, and — when one pool is given for the whole port,
    /// so it also supplies the packets sent — every TX descriptor (TX rings
    /// hold sent mbufs until the NIC frees them). Descriptor counts are the
    /// ones ethdev settles on (`rte_eth_dev_adjust_nb_rx_tx_desc`).
    pub fn configure(&mut self, cfg: &PortConfig, rx_pools: &[&Mempool]) -> Result<(), Error> {
        if self.handles_alive() {
            return Err(self.limit("a queue handle of the last configuration is still alive".into()));
        }
        // Until this succeeds, no queue may be taken.
        self.rx_queues = 0;
        self.tx_queues = 0;
        *self.taken.lock().unwrap_or_else(|e| e.into_inner()) = (Vec::new(), Vec::new());
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
        if rx_pools.len() != 1 && rx_pools.len() != cfg.rx_queues as usize {
            return Err(self.limit(format!(
                "{} mempools given for {} RX queues: give one for all, or one per queue",
                rx_pools.len(),
                cfg.rx_queues
            )));
        }
        let mut rx_desc = fit_desc(cfg.rx_desc, info.rx_desc_min, info.rx_desc_max);
        let mut tx_desc = fit_desc(cfg.tx_desc, info.tx_desc_min, info.tx_desc_max);
        // Before touching the port, with the descriptor counts as fitted...
        self.check_pools(cfg, rx_pools, rx_desc, tx_desc)?;

        let granted = Offloads::negotiate(cfg.offloads, info.capa);
        let ec = eth_conf(cfg, info, granted).map_err(|w| self.limit(w))?;
        let conf = ec.to_raw();
        self.granted = granted;
        self.rss = ec.rss;
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
        // SAFETY: configured port, valid out-pointers.
        let ret = unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rx_desc, &mut tx_desc) };
        if ret != 0 {
            return Err(self.fail("rte_eth_dev_adjust_nb_rx_tx_desc", ret));
        }
        // ...and again with what ethdev will really use.
        self.check_pools(cfg, rx_pools, rx_desc, tx_desc)?;
        if let Some(mtu) = cfg.mtu {
            // SAFETY: valid port.
            let ret = unsafe { dpdk_sys::rte_eth_dev_set_mtu(id, mtu) };
            let fits = (mtu as u32 + 18) <= self.info.max_rx_pktlen;
            if ret != 0 && !(ret == -ENOTSUP && fits) {
                return Err(self.fail("rte_eth_dev_set_mtu", ret));
            }
        }
        let mut dev: dpdk_sys::rte_eth_dev_info = Default::default();
        // SAFETY: out-pointer to a zeroed struct.
        let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut dev) };
        if ret != 0 {
            return Err(self.fail("rte_eth_dev_info_get", ret));
        }
        // SAFETY: plain query.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
        // SAFETY: plain query.
        let socket = if socket < 0 { unsafe { dpdk_sys::rte_socket_id() } } else { socket as u32 };
        for q in 0..cfg.rx_queues {
            let pool = rx_pools.get(q as usize).unwrap_or(&rx_pools[0]);
            let mut rxconf = dev.default_rxconf;
            rxconf.offloads = ec.rx_offloads;
            // Pinned until `close`: dropped before, the pool is leaked.
            crate::mempool::pin(pool.as_ptr());
            self.pools.push(pool.as_ptr() as usize);
            // SAFETY: rxconf is a copy of the PMD's defaults; the pool
            // stays allocated while the port is open (pinned above).
            let ret = unsafe { dpdk_sys::rte_eth_rx_queue_setup(id, q, rx_desc, socket, &rxconf, pool.as_ptr()) };
            if ret != 0 {
                return Err(self.fail("rte_eth_rx_queue_setup", ret));
            }
        }
        for q in 0..cfg.tx_queues {
            let mut txconf = dev.default_txconf;
            txconf.offloads = ec.tx_offloads;
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
        *self.taken.lock().unwrap_or_else(|e| e.into_inner()) =
            (vec![false; cfg.rx_queues as usize], vec![false; cfg.tx_queues as usize]);
        Ok(())
    }

    /// The pool-size rule of [`Port::configure`].
    fn check_pools(&self, cfg: &PortConfig, rx_pools: &[&Mempool], rx_desc: u16, tx_desc: u16) -> Result<(), Error> {
        let shared = rx_pools.len() == 1;
        for (p, pool) in rx_pools.iter().enumerate() {
            let queues = if shared { cfg.rx_queues as u32 } else { 1 };
            let tx = if shared { cfg.tx_queues as u32 * tx_desc as u32 } else { 0 };
            let cache = crate::mempool::DEFAULT_CACHE.min(pool.size() / 2);
            let need = queues * (rx_desc as u32 + crate::BURST as u32) + tx + cache;
            if pool.size() < need {
                return Err(Error::PoolTooSmall {
                    pool: pool.name().to_owned(),
                    port: self.info.id.0,
                    have: pool.size(),
                    need,
                    detail: format!(
                        "{queues} RX queue(s) x ({rx_desc} descriptors + a burst of {}) + {tx} TX descriptors + cache {cache}; pool #{p}",
                        crate::BURST
                    ),
                });
            }
        }
        Ok(())
    }

    /// The RSS key and redirection table the port spreads its RX queues
    /// with: `None` unless it was configured with several RX queues and RSS
    /// (a vdev without RSS, say), or when the PMD does not report them.
    pub fn rss_steering(&self) -> Option<crate::rss::RssSteering> {
        if !self.rss || self.rx_queues < 2 {
            return None;
        }
        let id = self.info.id.0;
        let mut dev: dpdk_sys::rte_eth_dev_info = Default::default();
        // SAFETY: out-pointer to a zeroed struct.
        if unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut dev) } != 0 || dev.reta_size == 0 {
            return None;
        }
        let mut key = vec![0u8; usize::from(dev.hash_key_size).max(40)];
        // SAFETY: rte_eth_rss_conf is plain old data.
        let mut conf: dpdk_sys::rte_eth_rss_conf = unsafe { std::mem::zeroed() };
        conf.rss_key = key.as_mut_ptr();
        conf.rss_key_len = key.len().min(255) as u8;
        // SAFETY: `rss_key` points to `rss_key_len` writable bytes that
        // outlive the call.
        if unsafe { dpdk_sys::rte_eth_dev_rss_hash_conf_get(id, &mut conf) } != 0 {
            return None;
        }
        key.truncate(usize::from(conf.rss_key_len).min(key.len()));
        let size = usize::from(dev.reta_size);
        let mut entries: Vec<dpdk_sys::rte_eth_rss_reta_entry64> =
            (0..size.div_ceil(64)).map(|_| dpdk_sys::rte_eth_rss_reta_entry64 { mask: u64::MAX, reta: [0; 64] }).collect();
        // SAFETY: `entries` holds `reta_size` entries (64 per element), all
        // asked for by their masks.
        if unsafe { dpdk_sys::rte_eth_dev_rss_reta_query(id, entries.as_mut_ptr(), dev.reta_size) } != 0 {
            return None;
        }
        let reta = entries.iter().flat_map(|e| e.reta).take(size).collect();
        crate::rss::RssSteering::new(key, reta).map(|s| s.with_rss_hf(conf.rss_hf))
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
    /// when the port is closed). Not while a queue handle lives (an lcore
    /// may be in a burst): the port is left running.
    pub fn stop(&mut self) {
        if self.started && !self.handles_alive() {
            // SAFETY: started port, and no queue handle is left to use it.
            if unsafe { dpdk_sys::rte_eth_dev_stop(self.info.id.0) } == 0 {
                self.started = false;
            }
        }
    }

    /// Stops and closes the port, returning every mbuf its rings held.
    /// While a queue handle lives, nothing is closed: the device stays
    /// running and held by this process (leaked).
    pub fn close(mut self) {
        if self.handles_alive() {
            eprintln!("braid-dpdk: port {} closed while a queue handle is alive; leaving it open", self.info.id.0);
            return;
        }
        self.stop();
        if self.started {
            return; // the PMD would not stop it: left open, pools pinned
        }
        // The id is let go under the same lock as the close: a device
        // created meanwhile that gets the id back finds it free.
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: stopped port, and no queue handle is left to use it.
        if unsafe { dpdk_sys::rte_eth_dev_close(self.info.id.0) } == 0 {
            self.closed = true;
            held.retain(|&id| id != self.info.id.0);
        }
    }

    /// A queue handle lives. `Arc::get_mut` (an Acquire load of the
    /// counts, where `strong_count` is Relaxed): a handle dropped on
    /// another lcore after its last burst has its queue's writes visible
    /// here before the port is stopped or closed.
    fn handles_alive(&mut self) -> bool {
        Arc::get_mut(&mut self.handles).is_none()
    }
}

impl Drop for Port {
    /// Stops the device (not closed: a vdev would be gone) and lets another
    /// `Port` take it, and unpins the pools of a closed one; unless a
    /// queue handle still lives (then all stays: the device may be in
    /// use). A device not closed keeps its pools pinned (its rings hold
    /// their mbufs).
    fn drop(&mut self) {
        if self.handles_alive() {
            return;
        }
        self.stop();
        if self.closed {
            for p in self.pools.drain(..) {
                crate::mempool::unpin(p as *mut dpdk_sys::rte_mempool);
            }
        }
        HELD.lock().unwrap_or_else(|e| e.into_inner()).retain(|&id| id != self.info.id.0);
    }
}

impl Port {

    /// Marks queue `q` taken; false when it already was (or does not exist).
    fn take(&self, tx: bool, q: u16) -> bool {
        let mut t = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let v = if tx { &mut t.1 } else { &mut t.0 };
        match v.get_mut(q as usize) {
            Some(b) if !*b => {
                *b = true;
                true
            }
            _ => false,
        }
    }

    /// Handle to RX queue `q`: the only one until the next `configure`, so
    /// one lcore owns the queue. Err when `q` is not configured or taken.
    pub fn rx_queue(&self, q: u16) -> Result<RxQueue, Error> {
        if q >= self.rx_queues {
            return Err(self.limit(format!("RX queue {q} was not configured ({} queues)", self.rx_queues)));
        }
        if !self.take(false, q) {
            return Err(self.limit(format!("RX queue {q} was already taken")));
        }
        Ok(RxQueue { port: self.info.id, queue: QueueId(q), _port: self.handles.clone() })
    }

    /// Handle to TX queue `q`: the only one until the next `configure`, so
    /// one lcore owns the queue. Err when `q` is not configured or taken.
    pub fn tx_queue(&self, q: u16) -> Result<TxQueue, Error> {
        if q >= self.tx_queues {
            return Err(self.limit(format!("TX queue {q} was not configured ({} queues)", self.tx_queues)));
        }
        if !self.take(true, q) {
            return Err(self.limit(format!("TX queue {q} was already taken")));
        }
        let (_, tx_off) = self.granted.masks();
        // What the PMD copies whenever a packet asks it to segment, granted
        // or not (net_tap's GSO looks at the packet's flag alone).
        let max_tso_headers = Tso::of_driver(&self.info.driver).max_headers;
        Ok(TxQueue { port: self.info.id, queue: QueueId(q), prepare: tx_off != 0, rejected: 0, max_tso_headers, _port: self.handles.clone() })
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

impl PortId {
    /// The port's basic counters (`rte_eth_stats_get`; all zero for a port
    /// that does not exist). Any thread may ask while others run bursts,
    /// but one at a time: some PMDs keep offsets or clear on read.
    pub fn stats(self) -> PortStats {
        stats(self)
    }
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
    let mut n = unsafe { dpdk_sys::rte_eth_xstats_get_names(id.0, std::ptr::null_mut(), 0) };
    // The count can grow between calls (a PMD adding queues): retry once
    // with the size DPDK asked for.
    for _ in 0..2 {
        if n <= 0 {
            return Vec::new();
        }
        let cap = n as usize;
        let mut names = vec![dpdk_sys::rte_eth_xstat_name::default(); cap];
        let mut vals = vec![dpdk_sys::rte_eth_xstat::default(); cap];
        // SAFETY: both arrays have `cap` elements.
        let got_names = unsafe { dpdk_sys::rte_eth_xstats_get_names(id.0, names.as_mut_ptr(), cap as u32) };
        // SAFETY: as above.
        let got = unsafe { dpdk_sys::rte_eth_xstats_get(id.0, vals.as_mut_ptr(), cap as u32) };
        if got_names <= 0 || got <= 0 {
            return Vec::new();
        }
        if got_names as usize > cap || got as usize > cap {
            n = got_names.max(got);
            continue;
        }
        names.truncate(got_names as usize);
        vals.truncate(got as usize);
        return vals
            .iter()
            .filter_map(|v| {
                // Ids out of range (no such name) are ignored.
                let nm = names.get(usize::try_from(v.id).ok()?)?;
                let bytes: Vec<u8> = nm.name.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
                Some((String::from_utf8_lossy(&bytes).into_owned(), v.value))
            })
            .collect();
    }
    Vec::new()
}

/// An RX queue. [`Port::rx_queue`] hands out one handle per queue; it is
/// `Send` so it can move to the lcore that polls it, and bursts take
/// `&mut self`, so only its owner can poll.
#[derive(Debug)]
pub struct RxQueue {
    port: PortId,
    queue: QueueId,
    /// Keeps its port from being configured again, stopped or closed.
    _port: Arc<()>,
}

/// A TX queue. [`Port::tx_queue`] hands out one handle per queue; it is
/// `Send`, and bursts take `&mut self`, so only its owner can send.
#[derive(Debug)]
pub struct TxQueue {
    port: PortId,
    queue: QueueId,
    /// Run `rte_eth_tx_prepare` first (any TX offload is on).
    prepare: bool,
    /// Packets `tx_prepare` refused, freed by `tx_burst`.
    rejected: u64,
    /// Most header bytes the PMD's TCP segmentation takes (`Tso`).
    max_tso_headers: usize,
    /// Keeps its port from being configured again, stopped or closed.
    _port: Arc<()>,
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
    ///
    /// With TX offloads on, packets go through `rte_eth_tx_prepare` first;
    /// a packet it refuses (bad headers for the offload) is removed, freed
    /// and counted in [`TxQueue::rejected`] once everything before it was
    /// sent, so one bad packet never blocks the queue.
    #[inline]
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        let mut n = pkts.len().min(u16::MAX as usize) as u16;
        let mut bad = false;
        // Header lengths the PMD would read or copy on the packet's word
        // (net_tap's GSO copies them into 128-byte mbufs, whatever offloads
        // the port was given): a packet whose don't fit is refused like one
        // tx_prepare refuses. One flags test a packet that asks nothing.
        if let Some(i) = pkts[..n as usize].iter().position(|m| !m.tx_headers_fit(self.max_tso_headers)) {
            (n, bad) = (i as u16, true);
        }
        // SAFETY: pkts holds n owned mbufs laid out as *mut rte_mbuf.
        // tx_prepare only validates/fixes headers in place.
        let (ok, sent) = unsafe {
            let p = pkts.as_mut_ptr() as *mut *mut dpdk_sys::rte_mbuf;
            let ok = if self.prepare { dpdk_sys::braid_eth_tx_prepare(self.port.0, self.queue.0, p, n) } else { n };
            (ok as usize, dpdk_sys::braid_eth_tx_burst(self.port.0, self.queue.0, p, ok) as usize)
        };
        // The first `sent` mbufs now belong to the NIC: forget them without
        // dropping and shift the rest to the front.
        // SAFETY: the burst call took at most all of them.
        unsafe { crate::mbuf::forget_front(pkts, sent) };
        if (ok < n as usize || bad) && sent == ok {
            // pkts[ok] (now at the front) is the one tx_prepare refused.
            drop(pkts.remove(0));
            self.rejected += 1;
        }
        sent
    }

    /// Packets `rte_eth_tx_prepare` refused and `tx_burst` freed.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Sends everything, retrying while the NIC makes progress; what is
    /// still left after `max_spins` fruitless tries stays in `pkts`.
    pub fn tx_all(&mut self, pkts: &mut Vec<Mbuf>, max_spins: u32) -> usize {
        let mut total = 0;
        let mut idle = 0;
        while !pkts.is_empty() && idle < max_spins {
            let before = pkts.len();
            let n = self.tx_burst(pkts);
            total += n;
            if pkts.len() == before {
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
    use super::*;

    fn fake_info(capa: Offloads, rss_capa: u64) -> PortInfo {
        PortInfo {
            id: PortId(0),
            name: "fake0".into(),
            driver: "fake".into(),
            max_rx_queues: 8,
            max_tx_queues: 8,
            rx_desc_max: 4096,
            tx_desc_max: 4096,
            rx_desc_min: 64,
            tx_desc_min: 64,
            max_rx_pktlen: 9018,
            min_mtu: 68,
            max_mtu: 9000,
            capa,
            rss_capa,
        }
    }

    #[test]
    fn rss_hash_offload_turns_rss_on_even_with_one_queue() {
        let capa = Offloads { rx_rss_hash: true, ..Default::default() };
        let info = fake_info(capa, BRAID_ETH_RSS_IP | BRAID_ETH_RSS_UDP);
        let cfg = PortConfig { rx_queues: 1, ..Default::default() };
        let granted = Offloads::negotiate(cfg.offloads, info.capa);
        assert!(granted.rx_rss_hash);
        let ec = eth_conf(&cfg, &info, granted).unwrap();
        assert!(ec.rss, "{ec:?}");
        assert_eq!(ec.rss_hf, BRAID_ETH_RSS_IP | BRAID_ETH_RSS_UDP);
        assert_ne!(ec.rx_offloads & BRAID_RX_OFFLOAD_RSS_HASH, 0);
        let raw = ec.to_raw();
        assert_eq!(raw.rxmode.mq_mode, dpdk_sys::RTE_ETH_MQ_RX_RSS);
        // Without the offload, one queue needs no RSS.
        let ec = eth_conf(&cfg, &info, Offloads::default()).unwrap();
        assert!(!ec.rss);
        assert_eq!(ec.to_raw().rxmode.mq_mode, 0);
    }

    #[test]
    fn several_queues_need_rss_over_ip_udp_or_tcp() {
        let info = fake_info(Offloads::default(), 0);
        let cfg = PortConfig { rx_queues: 4, ..Default::default() };
        let e = eth_conf(&cfg, &info, Offloads::default()).unwrap_err();
        assert!(e.contains("RSS"), "{e}");
        let info = fake_info(Offloads::default(), BRAID_ETH_RSS_TCP);
        let ec = eth_conf(&cfg, &info, Offloads::default()).unwrap();
        assert!(ec.rss);
        assert_eq!(ec.rss_hf, BRAID_ETH_RSS_TCP);
    }

    #[test]
    fn steered_queues_need_no_rss() {
        let info = fake_info(Offloads::default(), 0);
        let cfg = PortConfig { rx_queues: 2, tx_queues: 2, steered_queues: true, ..Default::default() };
        let ec = eth_conf(&cfg, &info, Offloads::default()).unwrap();
        assert!(!ec.rss, "{ec:?}");
        assert_eq!(ec.rss_hf, 0);
        assert_eq!(ec.to_raw().rxmode.mq_mode, 0);
        // A port that has RSS keeps it for its queues.
        let info = fake_info(Offloads::default(), BRAID_ETH_RSS_UDP);
        let ec = eth_conf(&cfg, &info, Offloads::default()).unwrap();
        assert!(ec.rss);
        assert_eq!(ec.rss_hf, BRAID_ETH_RSS_UDP);
    }

    #[test]
    fn descriptor_fit_never_panics() {
        assert_eq!(fit_desc(1024, 64, 4096), 1024);
        assert_eq!(fit_desc(8, 64, 4096), 64);
        assert_eq!(fit_desc(9000, 64, 4096), 4096);
        assert_eq!(fit_desc(1024, 512, 256), 512);
        assert_eq!(fit_desc(0, 0, 0), 1);
    }

    #[test]
    fn tso_needs_the_checksums_not_multi_segs() {
        let capa = Offloads { tx_ipv4_cksum: true, tx_tcp_cksum: true, tx_tcp_tso: true, ..Default::default() };
        let got = Offloads::negotiate(Offloads::ALL, capa);
        assert!(got.tx_tcp_tso && !got.tx_multi_segs, "{got:?}");
        let capa = Offloads { tx_ipv4_cksum: true, tx_udp_tso: true, tx_multi_segs: true, ..Default::default() };
        assert!(!Offloads::negotiate(Offloads::ALL, capa).tx_udp_tso);
    }

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

    #[test]
    fn tso_per_pmd() {
        let tap = Tso::of_driver("net_tap");
        assert_eq!(tap, Tso { counts_l2: true, ipv6: false, max_headers: 128 });
        assert_eq!(tap.ip_mtu(1500), 1486);
        assert_eq!(Tso::of_driver("net_i40e"), Tso::NIC);
        assert_eq!(Tso::NIC.ip_mtu(1500), 1500);
    }
}
