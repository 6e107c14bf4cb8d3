//! One poll-mode worker: owns an RX and a TX queue on the LAN port and on
//! every WAN port, the tunnel engine state of every bundle, and its own
//! counters. Nothing here is shared writable state except the outbound SAs'
//! sequence counters, leased once per burst (see ARCHITECTURE.md).
//!
//! LAN -> WAN per burst: parse, route (longest prefix) to a peer's bundle,
//! NAT (when the tables have NAT rules; IPv4 fragments it translates made
//! whole first, `worker/nat_frag`), then either pack the burst's
//! packets for that bundle into frames (bundle mode: several small packets
//! per ESP packet, a big one cut across several) or seal each packet in
//! place (plain mode: TCP SYNs' MSS clamped, `crate::mss`; a packet too
//! big for the tunnel cut first, `worker/cut`), pick a tunnel per ESP
//! packet, stamp the outer headers, TX.
//! WAN -> LAN per burst: classify ESP-in-UDP by SPI, decrypt in place,
//! anti-replay, re-order (bundle mode), write the LAN Ethernet header,
//! NAT what the re-orderer released (just before TX), TX. NAT sees inner
//! packets only, never which tunnel carried them (see `crate::nat`).
//! On every port, ARP, neighbor solicitations and echo requests to the
//! port's own addresses leave the pipeline first (one EtherType compare per
//! packet decides) and are answered in their own mbuf out of the same port
//! (`crate::local`).
//! A WAN port whose next hop is given by address resolves it with that
//! port's resolver from the timers (at most every `NEIGHBOR_PERIOD`, at
//! once after an answer): the port's tunnels' outer templates follow the
//! MAC, and until there is one the port's ESP packets are dropped at TX
//! (`next_hop_unresolved`), one test per port per poll.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use braid_dpdk::mbuf::{TxOffload, TX_IPV4, TX_IPV6, TX_IP_CKSUM, TX_UDP_CKSUM};
use braid_dpdk::ip_frag::Reassembly;
use braid_dpdk::mbuf::{MbufStash, RxCksum};
use braid_dpdk::{Mbuf, Mempool, RxQueue, TxQueue, BURST};
use braid_nat::resolver::{Lookup, FRAME_MAX};
use braid_nat::{NatCounters, NatShard, Verdict, SWEEP_PER_PACKET};
use braid_tunnel::balancer::{Balancer, PathParams, Policy};
use braid_tunnel::liveness::LivenessConfig;
use braid_tunnel::reorder::{HoldConfig, ReorderConfig};
use braid_tunnel::bundle::pack::{InnerPacket, PackCursor};
use braid_tunnel::bundle::reassembly::ReassemblyConfig;
use braid_tunnel::engine::{esp_area_len, BundleRx, BundleRxConfig, BundleTx, BundleTxConfig, DropCounters, OpenedFrame};
use braid_tunnel::sa::{InboundSa, InboundSaPair, OutboundSaPair, SaParams, SeqBlock, Spi};
use braid_tunnel::wire::udp_encap::{classify, EncapKind};
use braid_tunnel::wire::{esp, flow_hash};
use braid_tunnel::{plain, Nanos};

use crate::counters::{DpDrop, DpDrops, LocalStats, TunnelCounters, WorkerCounters};
use crate::encap::{fragment_chunk, fragment_chunk_v6, OuterTemplate, IP_AT, OUTER_LEN, OUTER_LEN_V6, UDP_AT_V6};
use crate::local::{Handled, Responder};
use crate::nat::{NatSetup, EXPIRE_BUSY, EXPIRE_IDLE};
use crate::route::RouteTable;

pub use crate::config::BundleMode as Mode;

mod apply;
mod cut;
pub mod handoff;
mod lan;
mod nat_frag;
pub use apply::{keeps_engine, prebuild_bundle, Applied, PrebuiltBundle};
pub use lan::{OnLink, LAN_HOLD_MAX, LAN_HOLD_PER_NEIGHBOR, LAN_HOLD_TIME};

/// One tunnel as a worker needs it.
#[derive(Clone)]
pub struct TunnelSetup {
    /// Index of its WAN port in [`WorkerSetup::wans`].
    pub wan: usize,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Shared with the other workers: sequence numbers are leased per burst.
    pub out: Arc<OutboundSaPair>,
    /// Inbound SA parameters; the worker that receives the tunnel owns its
    /// replay window.
    pub inbound: SaParams,
    /// Where the owner publishes its replay window's top, to be kept
    /// across restarts (`sas::SaRegistry::inbound_highs`); a new window
    /// starts above what it holds. `None`: nothing kept.
    pub rx_high: Option<Arc<AtomicU64>>,
    /// Weight and rate for the balancer.
    pub params: PathParams,
}

/// One bundle as a worker needs it.
#[derive(Clone)]
pub struct BundleSetup {
    /// The bundle's name: what makes a bundle rebuilt by new tables the
    /// same bundle (its streams go on, see `worker::apply`).
    pub name: Arc<str>,
    pub mode: Mode,
    pub policy: Policy,
    /// Largest bundle frame (ESP payload) that keeps outer packets within
    /// the WAN MTU.
    pub max_frame: usize,
    /// A tunnel that sent nothing for this long sends a NAT-keepalive
    /// (RFC 3948 section 2.3); 0: never.
    pub keepalive: Nanos,
    /// Plain mode: ESP packets bigger than their WAN port's MTU leave as
    /// outer IPv4 or IPv6 fragments instead of being cut before sealing
    /// (TCP, IPv4 without DF) or dropped (`too_big`).
    pub outer_fragmentation: bool,
    pub tunnels: Vec<TunnelSetup>,
}

/// A port's Ethernet identity.
#[derive(Debug, Clone, Copy)]
pub struct L2 {
    pub mac: [u8; 6],
    /// Where frames go; for a port with `next_hop`, the last MAC resolved
    /// (zero until then).
    pub next_hop_mac: [u8; 6],
    /// WAN ports: the next hop's address, resolved by the port's resolver
    /// (ARP / ND); `None`: `next_hop_mac` is static.
    pub next_hop: Option<std::net::IpAddr>,
    /// The port computes IPv4 header checksums on TX.
    pub ip_csum_offload: bool,
    /// The port computes UDP checksums on TX: IPv6 tunnels' ESP packets
    /// leave with the pseudo-header sum only (`stamp_outer`).
    pub udp_csum_offload: bool,
    /// The port cuts TCP packets into segments on TX (TSO), and how: the
    /// LAN port's oversized TCP goes to it whole (`Worker::fit_lan_mtu`).
    pub tso: Option<braid_dpdk::Tso>,
    /// Largest IP packet the port's link carries.
    pub mtu: u16,
    /// The port's own addresses: ARP, neighbor solicitations and echo
    /// requests for them are answered (`crate::local`).
    pub ipv4: Option<std::net::Ipv4Addr>,
    pub ipv6: Option<std::net::Ipv6Addr>,
    /// A LAN port that resolves its hosts (no static next hop): its
    /// subnets and router (`worker::lan`).
    pub on_link: Option<OnLink>,
}

/// Everything a worker is built from.
#[derive(Clone)]
pub struct WorkerSetup {
    /// Worker index: its stream id in every bundle (per-worker sequence
    /// spaces, see ARCHITECTURE.md).
    pub id: u16,
    pub lan: L2,
    pub wans: Vec<L2>,
    pub bundles: Vec<BundleSetup>,
    pub routes: Arc<RouteTable>,
    /// Bundle of each peer (route value = peer index).
    pub peer_bundle: Vec<usize>,
    pub replay_window: u64,
    /// How long the re-orderer may hold a gap.
    pub hold: HoldConfig,
    /// Liveness probes from this worker (one worker per bundle should),
    /// with these timers.
    pub probes: Option<LivenessConfig>,
    /// NAT rules; `None`: the tables have none and NAT is skipped.
    pub nat: Option<NatSetup>,
    /// Per WAN port (like `wans`), the RSS key and redirection table its
    /// NIC spreads the workers' RX queues with, if it has RSS: a tunnel is
    /// then owned by the worker whose queue RSS gives its packets, and
    /// none has to be handed over (`tunnel_owner`). Empty unless set.
    pub wan_rss: Vec<Option<Arc<braid_dpdk::rss::RssSteering>>>,
    /// Workers of the gateway (1 unless set): with several, a stream's
    /// frames come from several workers' RX queues, so its re-orderer holds
    /// for the skew between them too (see `build_bundle`).
    pub workers: u16,
}

impl WorkerSetup {
    /// Gives each tunnel its inbound SA's kept high (`rx_highs` by bundle,
    /// as `sas::SaRegistry::inbound_highs` makes them for the same tables).
    pub fn with_rx_highs(mut self, rx_highs: &[Vec<Arc<AtomicU64>>]) -> WorkerSetup {
        for (bs, highs) in self.bundles.iter_mut().zip(rx_highs) {
            for (t, h) in bs.tunnels.iter_mut().zip(highs) {
                t.rx_high = Some(h.clone());
            }
        }
        self
    }
}

/// Plain mode state: its own balancer, sequence leases and inbound SAs.
struct Plain {
    balancer: Balancer,
    /// This burst's sequence lease of each tunnel, of exactly the packets
    /// picked for it; what is left is discarded at the end of the burst
    /// (a lease kept for later would fall behind the other workers' and
    /// out of the peer's replay window).
    leases: Vec<Option<SeqBlock>>,
    /// Packets of this burst picked for each tunnel, not leased yet.
    want: Vec<u32>,
    inbound: Vec<InboundSaPair>,
    /// Largest outer IP packet every WAN of the bundle carries (whole, or
    /// in at most [`MAX_OUTER_FRAGMENTS`] fragments with outer
    /// fragmentation): a packet is checked against it before the balancer
    /// picks (and charges) a tunnel.
    max_outer: usize,
    /// The same in at most [`MAX_OUTER_FRAGMENTS`] fragments, whatever the
    /// bundle says: IPv6 packets of up to 1280 bytes are always carried
    /// (RFC 8200 section 5: a link that cannot carry 1280 bytes fragments
    /// below IPv6, and a sender never goes below 1280 whatever Packet Too
    /// Big says, RFC 8201 section 4).
    max_fragmented: usize,
    /// Largest inner packet that fits `max_outer`: the next-hop MTU of
    /// ICMP "fragmentation needed".
    inner_mtu: u16,
    /// Largest inner packet one ESP packet carries on every tunnel (no
    /// outer fragments): TCP SYNs crossing get their MSS clamped to it.
    clamp_mtu: u16,
    /// Source address of the ICMP errors: the first IPv4 tunnel's local
    /// address, else the LAN port's.
    icmp_src: [u8; 4],
    /// The same for ICMPv6: the first IPv6 tunnel's, else the LAN port's.
    icmp_src6: [u8; 16],
    /// Outer IP and UDP header bytes of the bundle's tunnels, the most
    /// (IPv4 28, IPv6 48): sizes are checked before a tunnel is picked.
    outer_ip_udp: usize,
}

enum Engine {
    Bundle { tx: Box<BundleTx>, rx: Box<BundleRx<Mbuf>> },
    Plain(Plain),
}

struct BundleState {
    /// What it was built from: [`Worker::apply`] keeps the engine of a
    /// bundle whose tunnels did not change.
    spec: BundleSetup,
    engine: Engine,
    max_frame: usize,
    /// Each tunnel's outer headers. The remote in them is the configured
    /// one until an authenticated packet, the newest on its SA, comes from
    /// another source: then that source (the peer's NAT rebound). Learned
    /// per worker (see ARCHITECTURE.md).
    outer: Vec<OuterTemplate>,
    /// The longest of `outer` (IPv4 42 bytes, IPv6 62): room a frame is
    /// built with before its tunnel is known; a shorter header takes the
    /// rest off the front.
    outer_room: usize,
    out_sas: Vec<Arc<OutboundSaPair>>,
    wan_of: Vec<usize>,
    /// Each tunnel's local UDP port, and 1 << 16 for an IPv6 tunnel: what
    /// a received packet of its SPI must have hit (`local_key`).
    local_key: Vec<u32>,
    /// Each path as the receiver's re-orderers last heard of it from the
    /// sender's liveness: (alive, one-way delay).
    rx_paths: Vec<(bool, Option<Nanos>)>,
    /// Each path's missed probes and late replies as its liveness monitor
    /// counted them when last looked at (the prober adds what is new to
    /// `probes_missed` and `late_replies`).
    missed_seen: Vec<(u64, u64)>,
    /// The sender's `no_live_path` when last looked at (what is new goes
    /// to the worker's `no_live_path`).
    no_live_seen: u64,
    /// NAT-keepalive interval (0: off) and when the tunnels' SA counters
    /// are next looked at.
    keepalive: Nanos,
    next_keepalive: Nanos,
    /// Per tunnel: its SA's next sequence number when last looked at, and since
    /// when it has not moved.
    quiet: Vec<(u64, Nanos)>,
    /// The worker that owns each tunnel's inbound SA (`tunnel_owner`).
    owner: Vec<u16>,
}

/// Table options a worker's engines are built with.
struct Options {
    replay_window: u64,
    hold: HoldConfig,
    probes: Option<LivenessConfig>,
}

/// In a `Remote` hand-off message's `x`: the remote is IPv6, its address
/// in the body (IPv4 fits in `x` with the port).
const REMOTE_V6: u64 = 1 << 63;

/// A poll-mode worker. Call [`Worker::poll`] in a loop on its lcore.
pub struct Worker {
    id: u16,
    pool: Arc<Mempool>,
    /// Mbufs for inner packets bigger than `pool`'s (a peer's jumbo LAN),
    /// if the process made some (`with_jumbo_pool`).
    jumbo: Option<Arc<Mempool>>,
    lan_rx: RxQueue,
    lan_tx: TxQueue,
    wan_rx: Vec<RxQueue>,
    wan_tx: Vec<TxQueue>,
    lan: L2,
    wans: Vec<L2>,
    bundles: Vec<BundleState>,
    routes: Arc<RouteTable>,
    peer_bundle: Vec<usize>,
    options: Options,
    /// SPI -> (bundle, tunnel), sorted by SPI for a binary search.
    spis: Vec<(u32, u16, u16)>,
    counters: WorkerCounters,
    /// Drops of the plain ESP engine (bundle engines count their own).
    plain_drops: DropCounters,
    ident: u16,
    /// When timers next run.
    next_timers: Nanos,
    /// Outer IPv4 and IPv6 fragments being reassembled (time in `Nanos`).
    frag: Reassembly,
    /// Inner IPv4 fragments the NAT translates, being reassembled, by
    /// direction (`nat_frag::OUT`, `IN`).
    nat_frag: [Reassembly; 2],
    /// Packets being sorted by `take_nat_fragments` (scratch).
    nat_frag_todo: Vec<Mbuf>,
    /// When the next ICMP error may be sent (rate limit, RFC 1812 4.3.2.8).
    next_icmp: Nanos,
    /// The same for "host/address unreachable" errors: a budget of their
    /// own, so a sweep of dead LAN addresses from behind a peer cannot
    /// hold back the too-big errors path MTU discovery needs.
    next_unreachable: Nanos,
    /// ICMP errors about packets from a tunnel too big for the LAN, to go
    /// back into the tunnels (`lan_too_big_error`).
    icmp_to_wan: Vec<Mbuf>,
    /// This worker's NAT shard, when the tables have NAT rules.
    nat: Option<Box<NatShard>>,
    /// What `nat` was built from ([`Worker::apply`] keeps the shard, and so
    /// its sessions, while the rules stay the same).
    nat_spec: Option<NatSetup>,
    /// Engine counters of the shards a rule change replaced.
    nat_retired: NatCounters,
    /// The shard a rule change replaced, until taken to be dropped
    /// elsewhere ([`Worker::take_retired_nat`]).
    retired_nat: Option<Box<NatShard>>,
    /// The time of the current poll.
    now: Nanos,
    // Per-burst scratch, allocated once.
    rx_burst: Vec<Mbuf>,
    /// Mbufs done with in this burst, freed with one call.
    spent: Vec<Mbuf>,
    /// Mbufs for the pieces of one packet (scratch).
    frag_scratch: Vec<Mbuf>,
    /// `lan_out` being cut to the LAN's MTU (scratch).
    lan_fit: Vec<Mbuf>,
    /// Plain mode GSO: one packet's segments (scratch).
    gso_pieces: Vec<Mbuf>,
    /// Outer packets this worker sent as fragments: their identification
    /// is the next number of this worker's share of the space
    /// ([`frag_ident`]).
    frag_count: u32,
    /// Fresh mbufs for delivered inner packets, allocated in bulk.
    stash: MbufStash,
    lan_out: Vec<Mbuf>,
    wan_out: Vec<Vec<Mbuf>>,
    /// (bundle, tunnel) of each packet of `wan_out`, to count it per tunnel
    /// once the port took it.
    wan_tags: Vec<Vec<(u16, u16)>>,
    /// NAT-keepalives per WAN port, and their (bundle, tunnel).
    keepalive_out: Vec<Vec<Mbuf>>,
    keepalive_tags: Vec<Vec<(u16, u16)>>,
    /// Lengths of a TX burst, read before the port takes the mbufs.
    tx_lens: Vec<u32>,
    /// Which packets of `lan_out[nat_done..]` the NAT kept.
    nat_keep: Vec<bool>,
    /// Packets at the front of `lan_out` the NAT has seen.
    nat_done: usize,
    /// Packets given to the NAT this poll: its expiry sweep's budget.
    nat_translated: usize,
    /// The LAN burst being handled is our own ICMP errors (`icmp_to_wan`):
    /// the NAT takes them as the gateway's (`outbound_own_error`).
    own_errors: bool,
    /// ARP/ND/echo responder of each port: the LAN at 0, WAN `w` at 1 + w.
    local: Vec<Responder>,
    /// Inbound SPIs of tunnels that came to this worker from another with
    /// new tables, their windows not settled yet (`settle_moved_windows`).
    moved_in: Vec<u32>,
    /// Replies of each port's responder waiting for its TX queue (they
    /// skip the NAT), indexed like `local`.
    local_out: Vec<Vec<Mbuf>>,
    /// The LAN burst without the frames the responders took.
    kept: Vec<Mbuf>,
    /// Per WAN port: whether its next hop's MAC is known (always, for a
    /// static one). ESP packets for a port without it are dropped at TX
    /// (`next_hop_unresolved`): one test per port per poll, none per packet.
    nh_ready: Vec<bool>,
    /// When the WAN next hops are next looked up.
    next_neighbors: Nanos,
    /// The exception path: each port's kernel tap, indexed like `local`
    /// (`None`: the port has none).
    kernel: Vec<Option<KernelTap>>,
    /// When the kernel taps are next read.
    next_kernel: Nanos,
    /// UDP ports of the tunnels' local ends (a bit each): UDP to any other
    /// port is not ESP for us, whatever its payload looks like.
    tunnel_ports: Box<[u64; 1024]>,
    /// Delivery to a LAN that resolves its hosts: packets waiting for a
    /// neighbor, the last one resolved.
    lan_del: lan::LanDelivery,
    /// The rings to and from the gateway's other workers (`None`: this is
    /// its only worker), and what came from them this poll.
    handoff: Option<handoff::Handoff>,
    handed: Vec<Mbuf>,
    /// Remotes learned this poll (inbound SPI, new remote), told to the
    /// other workers at the flush.
    remote_news: Vec<(u32, SocketAddr)>,
    /// Path changes seen by the prober this round, told to the others.
    path_news: Vec<handoff::Header>,
    /// LAN frames and packets for the LAN other workers handed this one
    /// (its NAT shard owns their flows), until processed this poll.
    lan_handed: Vec<Mbuf>,
    deliver_handed: Vec<Mbuf>,
    /// `lan_out` packets being sorted by NAT owner (scratch).
    nat_scratch: Vec<Mbuf>,
}

/// A port's kernel tap queues and what waits for its TX queue.
pub struct KernelTap {
    rx: RxQueue,
    tx: TxQueue,
    out: Vec<Mbuf>,
}

impl KernelTap {
    /// A tap's queue pair (one per worker).
    pub fn new((rx, tx): (RxQueue, TxQueue)) -> KernelTap {
        KernelTap { rx, tx, out: Vec::with_capacity(BURST) }
    }
}

/// Ethernet header length.
const ETH: usize = 14;

/// Timers (re-orderer holds, reassembly, probes) run at most this often:
/// every poll would cost a pass over every re-orderer per burst.
const TIMER_PERIOD: Nanos = 10_000;

/// Outer IPv4 and UDP headers.
const OUTER_IP_UDP: usize = 20 + 8;

/// Outer packets being reassembled at once, per worker.
const FRAG_FLOWS: u32 = 1024;
/// Most outer fragments braid cuts a packet into: what DPDK's reassembly
/// (`braid_dpdk::ip_frag::MAX_FRAGMENTS`) takes, on a braid peer too.
const MAX_OUTER_FRAGMENTS: usize = braid_dpdk::ip_frag::MAX_FRAGMENTS;
/// An outer packet still incomplete this long after its first fragment is
/// discarded (DPDK's ip_reassembly example uses 1 s too).
const FRAG_TIMEOUT: Nanos = 1_000_000_000;

/// At most one ICMP error per this long: enough for a sender's path MTU
/// discovery, never a flood (RFC 1812 section 4.3.2.8 asks for a limit).
const ICMP_INTERVAL: Nanos = 1_000_000;

/// The kernel taps are read this often (each read is a system call), and
/// at once again while they have more: management traffic, not line rate.
const KERNEL_PERIOD: Nanos = 100_000;

/// WAN next hops given by address are looked up this often (and at once
/// after an answer arrives): the resolver's own timers are in seconds.
const NEIGHBOR_PERIOD: Nanos = 1_000_000;

/// The tunnels' SA sequence counters are compared for NAT-keepalives at most this
/// often (or at the keepalive interval, if shorter): a pass over a bundle's
/// tunnels, never a cost per packet.
const KEEPALIVE_CHECK: Nanos = 1_000_000_000;

impl Worker {
    /// Builds a worker around its queues. `wan_rx[i]`/`wan_tx[i]` belong to
    /// `setup.wans[i]`.
    pub fn new(
        setup: WorkerSetup,
        pool: Arc<Mempool>,
        (lan_rx, lan_tx): (RxQueue, TxQueue),
        wan_queues: Vec<(RxQueue, TxQueue)>,
        now: Nanos,
    ) -> Result<Worker, String> {
        if wan_queues.len() != setup.wans.len() {
            return Err(format!("{} WAN queue pairs for {} WAN ports", wan_queues.len(), setup.wans.len()));
        }
        let bundles = setup.bundles.iter().map(|bs| build_bundle(&setup, bs, now)).collect::<Result<Vec<_>, _>>()?;
        let spis = spi_table(&setup.bundles);
        let counters = WorkerCounters {
            tunnels: setup.bundles.iter().map(|b| vec![TunnelCounters::default(); b.tunnels.len()]).collect(),
            ..Default::default()
        };
        let nat = build_nat(&setup)?;
        let (wan_rx, wan_tx): (Vec<_>, Vec<_>) = wan_queues.into_iter().unzip();
        let nwan = wan_tx.len();
        let mut local: Vec<Responder> = std::iter::once(&setup.lan).chain(&setup.wans).map(Responder::new).collect();
        // Ports with an IPv6 address report their solicited-node groups
        // (worker 0 announces them); a kernel tap takes that over
        // (`with_kernel_taps`).
        for (r, l2) in local.iter_mut().zip(std::iter::once(&setup.lan).chain(&setup.wans)) {
            r.listen_mld(l2.mac, setup.id == 0, now);
        }
        let nh_ready = setup.wans.iter().map(|w| w.next_hop.is_none()).collect();
        Ok(Worker {
            id: setup.id,
            pool,
            jumbo: None,
            lan_rx,
            lan_tx,
            wan_rx,
            wan_tx,
            lan: setup.lan,
            wans: setup.wans,
            bundles,
            routes: setup.routes,
            peer_bundle: setup.peer_bundle,
            options: Options { replay_window: setup.replay_window, hold: setup.hold, probes: setup.probes },
            spis,
            counters,
            plain_drops: DropCounters::default(),
            ident: 0,
            next_timers: 0,
            frag: Reassembly::with_ticks(FRAG_FLOWS, FRAG_TIMEOUT).map_err(|e| e.to_string())?,
            nat_frag: [
                Reassembly::with_ticks(nat_frag::NAT_FRAG_FLOWS, FRAG_TIMEOUT).map_err(|e| e.to_string())?,
                Reassembly::with_ticks(nat_frag::NAT_FRAG_FLOWS, FRAG_TIMEOUT).map_err(|e| e.to_string())?,
            ],
            nat_frag_todo: Vec::new(),
            next_icmp: 0,
            next_unreachable: 0,
            icmp_to_wan: Vec::new(),
            nat,
            nat_spec: setup.nat,
            nat_retired: NatCounters::default(),
            retired_nat: None,
            now,
            rx_burst: Vec::with_capacity(BURST),
            spent: Vec::with_capacity(BURST),
            frag_scratch: Vec::with_capacity(MAX_OUTER_FRAGMENTS),
            lan_fit: Vec::new(),
            gso_pieces: Vec::new(),
            frag_count: 0,
            stash: MbufStash::new(BURST),
            lan_out: Vec::with_capacity(4 * BURST),
            wan_out: (0..nwan).map(|_| Vec::with_capacity(4 * BURST)).collect(),
            wan_tags: (0..nwan).map(|_| Vec::with_capacity(4 * BURST)).collect(),
            keepalive_out: (0..nwan).map(|_| Vec::new()).collect(),
            keepalive_tags: (0..nwan).map(|_| Vec::new()).collect(),
            tx_lens: Vec::with_capacity(4 * BURST),
            nat_keep: Vec::with_capacity(4 * BURST),
            nat_done: 0,
            nat_translated: 0,
            own_errors: false,
            local_out: (0..=nwan).map(|_| Vec::with_capacity(BURST)).collect(),
            local,
            moved_in: Vec::new(),
            kept: Vec::with_capacity(BURST),
            nh_ready,
            next_neighbors: 0,
            kernel: (0..=nwan).map(|_| None).collect(),
            next_kernel: 0,
            tunnel_ports: port_set(&setup.bundles),
            lan_del: Default::default(),
            handoff: None,
            handed: Vec::with_capacity(32 * BURST),
            remote_news: Vec::new(),
            path_news: Vec::new(),
            lan_handed: Vec::new(),
            deliver_handed: Vec::new(),
            nat_scratch: Vec::new(),
        })
    }

    /// Makes this worker one of several (`h` from [`handoff::mesh`], at
    /// this worker's index): ESP for a tunnel another worker owns, and
    /// frames of a stream another worker owns, are handed to it, and what
    /// it learns that the others need is told to them (see `handoff`).
    pub fn with_handoff(mut self, h: handoff::Handoff) -> Result<Worker, String> {
        if h.id() != self.id {
            return Err(format!("hand-off rings of worker {} given to worker {}", h.id(), self.id));
        }
        if h.workers() > 1 {
            self.handoff = Some(h);
        }
        Ok(self)
    }

    /// Workers of this gateway.
    fn workers(&self) -> u16 {
        self.handoff.as_ref().map_or(1, |h| h.workers())
    }

    /// Gives the worker the exception path: `taps[0]` for the LAN port,
    /// `taps[1 + w]` for WAN port `w`.
    pub fn with_kernel_taps(mut self, taps: Vec<Option<KernelTap>>) -> Result<Worker, String> {
        if taps.len() != self.local.len() {
            return Err(format!("{} kernel taps for {} ports", taps.len(), self.local.len()));
        }
        for (r, _) in self.local.iter_mut().zip(&taps).filter(|(_, t)| t.is_some()) {
            // The kernel, whose interface has the port's addresses, joins
            // and reports their groups itself.
            r.stop_mld();
        }
        self.kernel = taps;
        Ok(self)
    }

    /// No MLD reports from any port (`crate::mld`): for tests that count
    /// every frame a port sends.
    pub fn without_mld(mut self) -> Worker {
        self.local.iter_mut().for_each(Responder::stop_mld);
        self
    }

    /// Gives the worker a pool for inner packets from a tunnel that do not
    /// fit the main pool's mbufs: a peer whose LAN has a larger MTU than
    /// any port of this gateway sends them, to be cut to the LAN's MTU
    /// here. Without it they are the engine's `rx_no_buffer`.
    pub fn with_jumbo_pool(mut self, pool: Arc<Mempool>) -> Worker {
        self.jumbo = Some(pool);
        self
    }

    /// This worker's index.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Counters so far (engine drops gathered from every bundle).
    /// Packets of user traffic so far: taken from the LAN and delivered to
    /// it, and LAN frames and deliveries other workers handed here for NAT
    /// (not liveness probes, keepalives or neighbour messages; ESP handed
    /// on unopened cannot be told from probes and is not counted). Cheap:
    /// four loads.
    pub fn data_packets(&self) -> u64 {
        let h = &self.counters.handoff;
        self.counters.lan_rx.packets + self.counters.delivered + h.lan_in + h.deliver_in
    }

    pub fn counters(&self) -> WorkerCounters {
        let mut c = self.counters.clone();
        c.engine.merge(&self.plain_drops);
        for b in &self.bundles {
            if let Engine::Bundle { tx, rx } = &b.engine {
                c.engine.merge(tx.counters());
                c.engine.merge(rx.counters());
                c.stream_restarts += rx.stats().stream_restarts;
                c.reorder.merge(&rx.reorder_counters());
            }
        }
        c.nat.add_engine(&self.nat_retired);
        c.nat.out_frags.discarded = self.nat_frag[nat_frag::OUT].stats().discarded;
        c.nat.in_frags.discarded = self.nat_frag[nat_frag::IN].stats().discarded;
        if let Some(nat) = &self.nat {
            c.nat.add_engine(nat.counters());
            c.nat.sessions = nat.sessions() as u64;
        }
        c.local.neighbors = self.local.iter().map(|r| r.neighbors() as u64).sum();
        c.local.unresolved = self.local.iter().map(|r| r.resolver_counters().unresolved).sum();
        c.local.cache_full = self.local.iter().map(|r| r.resolver_counters().cache_full).sum();
        c.lan_held = self.lan_held() as u64;
        c
    }

    /// This worker's NAT shard, if the tables have NAT rules.
    pub fn nat(&self) -> Option<&NatShard> {
        self.nat.as_deref()
    }

    /// Receive-side engine counters of each bundle (frames, re-orderer
    /// held/released/late, reassembly), for reports and debugging.
    pub fn rx_debug(&self) -> Vec<String> {
        self.bundles
            .iter()
            .map(|b| match &b.engine {
                Engine::Bundle { rx, .. } => format!("{:?} streams {:?}", rx.stats(), (0..4).filter_map(|s| rx.reorderer(s).map(|r| (s, *r.counters()))).collect::<Vec<_>>()),
                Engine::Plain(_) => String::from("plain"),
            })
            .collect()
    }

    /// The hold time of each re-orderer this worker has (bundle mode:
    /// one per sender stream it owns), all bundles.
    pub fn reorder_holds(&self) -> Vec<Nanos> {
        self.bundles
            .iter()
            .filter_map(|b| match &b.engine {
                Engine::Bundle { rx, .. } => Some(rx),
                Engine::Plain(_) => None,
            })
            .flat_map(|rx| (0..rx.streams()).filter_map(|s| rx.reorderer(u16::try_from(s).ok()?)))
            .map(|r| r.hold_time())
            .collect()
    }

    /// Packets the re-orderers hold, all bundles.
    pub fn held(&self) -> usize {
        self.bundles
            .iter()
            .map(|b| match &b.engine {
                Engine::Bundle { rx, .. } => (0..=u16::MAX).map_while(|s| rx.reorderer(s)).map(|r| r.held()).sum(),
                Engine::Plain(_) => 0,
            })
            .sum()
    }

    /// The checksum offloads each WAN port's TX is asked for: (IPv4 header,
    /// UDP). What the port granted at setup (`PortTx`).
    pub fn wan_tx_offloads(&self) -> Vec<(bool, bool)> {
        self.wans.iter().map(|w| (w.ip_csum_offload, w.udp_csum_offload)).collect()
    }

    /// Where each tunnel of each bundle sends now: its configured remote,
    /// or the source of the peer's newest authenticated packet.
    pub fn remotes(&self) -> Vec<Vec<SocketAddr>> {
        self.bundles.iter().map(|b| b.outer.iter().map(OuterTemplate::remote).collect()).collect()
    }

    /// Tunnels each bundle's balancer considers alive.
    pub fn paths_alive(&self) -> Vec<Vec<bool>> {
        self.bundles
            .iter()
            .map(|b| match &b.engine {
                Engine::Bundle { tx, .. } => (0..b.outer.len()).map(|t| tx.path_alive(t)).collect(),
                Engine::Plain(_) => vec![true; b.outer.len()],
            })
            .collect()
    }

    /// One round: a LAN burst out, a burst from each WAN port in, timers.
    /// Returns the packets handled (0: idle).
    pub fn poll(&mut self, now: Nanos) -> usize {
        self.now = now;
        let mut work = self.lan_to_wan(now);
        for w in 0..self.wan_rx.len() {
            work += self.wan_to_lan(w, now);
        }
        if self.handoff.is_some() {
            work += self.take_handed(now);
            // LAN frames whose NAT flows this worker owns, as LAN bursts.
            while !self.lan_handed.is_empty() && self.rx_burst.is_empty() {
                let k = self.lan_handed.len().min(BURST);
                self.rx_burst.extend(self.lan_handed.drain(..k));
                self.lan_burst(now, true);
            }
        }
        if !self.icmp_to_wan.is_empty() && self.rx_burst.is_empty() {
            // Our own ICMP errors for senders behind the peer, routed and
            // tunnelled like LAN packets (counted `icmp_tunnelled`).
            let k = self.icmp_to_wan.len().min(BURST);
            self.rx_burst.extend(self.icmp_to_wan.drain(..k));
            self.counters.icmp_tunnelled += k as u64;
            self.own_errors = true;
            self.lan_burst(now, true);
            self.own_errors = false;
        }
        if now >= self.next_kernel {
            work += self.read_kernel_taps(now);
        }
        if now >= self.next_timers {
            self.next_timers = now.saturating_add(TIMER_PERIOD);
            self.timers(now);
        }
        self.flush_tx();
        let translated = std::mem::take(&mut self.nat_translated);
        if let Some(nat) = self.nat.as_deref_mut().filter(|n| n.sessions() > 0) {
            // Idle sessions give their slots and ports back a little at a
            // time (braid-nat's budget per packet, in one sweep per poll);
            // lookups never use an expired one anyway.
            nat.expire(now, if work == 0 { EXPIRE_IDLE } else { EXPIRE_BUSY + SWEEP_PER_PACKET * translated });
        }
        if work == 0 {
            self.counters.idle_polls += 1;
        } else {
            self.counters.busy_polls += 1;
        }
        work
    }

    /// Delivers every packet the re-orderers still hold (shutdown).
    pub fn drain(&mut self) {
        let mut out = std::mem::take(&mut self.lan_out);
        for b in &mut self.bundles {
            if let Engine::Bundle { rx, .. } = &mut b.engine {
                rx.flush(&mut out);
            }
        }
        self.counters.delivered += out.len() as u64;
        self.lan_out = out;
        self.flush_tx();
    }

    fn lan_to_wan(&mut self, now: Nanos) -> usize {
        let got = self.lan_rx.rx_burst(&mut self.rx_burst, BURST);
        if got == 0 {
            return 0;
        }
        // ARP, ND and echo requests to the LAN port's own addresses (and,
        // with a kernel tap, whatever else is for the gateway) leave the
        // burst here, and so do frames that are not to the port's MAC (a
        // MAC compare and an EtherType compare per packet otherwise).
        let tap = self.kernel[0].is_some();
        let mac = self.lan.mac;
        let local = &self.local[0];
        if self.rx_burst.iter().any(|m| {
            let d = m.data();
            lan_mac_drop(d, &mac).is_some() || local.wants(d) || (tap && local.for_gateway(d))
        }) {
            self.take_local_lan();
        }
        if self.handoff.is_some() && self.nat.is_some() {
            self.steer_nat_lan(true);
        }
        self.lan_burst(now, false);
        got
    }

    /// With NAT and several workers: the LAN frames of `rx_burst` whose
    /// flow another worker's shard owns go to that worker (counted as
    /// received here when `count`).
    fn steer_nat_lan(&mut self, count: bool) {
        let (Some(spec), Some(h)) = (self.nat_spec.as_ref(), self.handoff.as_mut()) else { return };
        let (cfg, workers) = (spec.config.clone(), h.workers());
        let mut burst = std::mem::take(&mut self.rx_burst);
        let mut kept = std::mem::take(&mut self.kept);
        for mut m in burst.drain(..) {
            let owner = is_ipv4(m.data()).then(|| cfg.outbound_owner(&m.data()[ETH..], usize::from(workers))).flatten();
            match owner {
                Some(o) if o != usize::from(self.id) => {
                    if count {
                        self.counters.lan_rx.add(m.pkt_len());
                    }
                    let hd = handoff::Header { kind: handoff::Kind::Lan, a: 0, b: 0, spi: 0, x: 0 };
                    if hd.push(&mut m) {
                        h.send(o as u16, m);
                    } else {
                        self.counters.drops.add(DpDrop::HandoffFull);
                    }
                }
                _ => kept.push(m),
            }
        }
        self.rx_burst = kept;
        self.kept = burst;
    }

    /// Routes, NATs, tunnels the LAN frames in `rx_burst` (`handed`: by
    /// another worker, which counted them as received).
    fn lan_burst(&mut self, now: Nanos, handed: bool) {
        if self.nat.is_some() && self.rx_burst.iter().any(|m| nat_frag::is_ipv4_fragment(m.data())) {
            self.lan_burst_fragments(now, handed);
        } else {
            self.lan_burst_whole(now, handed);
        }
    }

    /// [`Worker::lan_burst`] for a burst with IPv4 fragments and a NAT:
    /// the fragments the NAT translates are taken to be made whole, each
    /// packet made whole in the place of its last fragment; with several
    /// workers, those go to the worker owning their NAT flow (the rest of
    /// the burst is this worker's already: steering it again keeps it).
    #[cold]
    fn lan_burst_fragments(&mut self, now: Nanos, handed: bool) {
        if !handed {
            for m in &self.rx_burst {
                self.counters.lan_rx.add(m.pkt_len());
            }
        }
        let mut burst = std::mem::take(&mut self.rx_burst);
        self.take_nat_fragments(&mut burst, 0, nat_frag::OUT, now);
        self.rx_burst = burst;
        if self.handoff.is_some() {
            self.steer_nat_lan(false);
        }
        self.lan_burst_whole(now, true);
    }

    /// [`Worker::lan_burst`] for whole packets.
    fn lan_burst_whole(&mut self, now: Nanos, handed: bool) {
        let n = self.rx_burst.len();
        if n == 0 {
            return;
        }
        // Route every packet: its bundle, or NONE when dropped (TOO_BIG:
        // dropped, and may get an ICMP error).
        const NONE: u16 = u16::MAX;
        const TOO_BIG: u16 = u16::MAX - 1;
        let mut dest = [NONE; BURST];
        let mut peer = [0u32; BURST];
        for (i, m) in self.rx_burst.iter_mut().enumerate() {
            if !handed {
                self.counters.lan_rx.add(m.pkt_len());
            }
            match route(m, &self.routes, &self.peer_bundle) {
                Ok((p, b, ip_len)) => {
                    // Ethernet pads short frames (a 40-byte TCP ACK) to 60
                    // bytes: keep the IP packet only.
                    let pad = m.data_len() - ETH - ip_len;
                    if pad > 0 {
                        m.trim(pad);
                    }
                    dest[i] = b as u16;
                    peer[i] = p as u32;
                }
                Err(r) => self.counters.drops.add(r),
            }
        }
        if self.nat.is_some() {
            self.nat_outbound(&mut dest[..n], &peer[..n], now);
        }
        let burst = std::mem::take(&mut self.rx_burst);
        // Bundle mode packs from the burst's bytes (they are copied into
        // frames); plain mode seals each packet in its own mbuf.
        for b in 0..self.bundles.len() {
            if matches!(self.bundles[b].engine, Engine::Bundle { .. }) && dest[..n].contains(&(b as u16)) {
                self.send_bundle(b, &burst, &dest[..n], now);
            }
        }
        if !self.bundles.iter().any(|st| matches!(st.engine, Engine::Plain(_))) {
            // Bundle mode only: every packet was copied into frames or
            // dropped. Freed together, with no pass over the burst.
            let mut burst = burst;
            Mbuf::free_bulk(&mut burst);
            self.rx_burst = burst;
            return;
        }
        // Plain mode: a tunnel for every packet first, so that each tunnel
        // leases exactly the sequence numbers this burst seals with.
        let mut tunnel = [0u16; BURST];
        let mut plain = false;
        let mut burst = burst;
        for (i, m) in burst.iter_mut().enumerate() {
            let b = dest[i];
            let Some(st) = self.bundles.get_mut(b as usize) else { continue };
            let Engine::Plain(p) = &mut st.engine else { continue };
            if crate::mss::clamp(m.data_mut(), usize::from(p.clamp_mtu)) {
                self.counters.mss_clamped += 1;
            }
            let inner_len = m.data_len() - ETH;
            // Size first: a packet no WAN carries must not charge the
            // balancer. braid fragments outer packets only when the
            // bundle says so (`outer_fragmentation`), or for IPv6 of up
            // to 1280 bytes (`max_fragmented`) other than TCP (cut into
            // segments instead: fragments are dropped on many IPv6
            // paths, RFC 7872).
            let outer = p.outer_ip_udp + esp::packet_len(inner_len);
            let v6_min = |d: &[u8]| d[12..14] == [0x86, 0xdd] && d.get(ETH + 6) != Some(&6);
            if outer > p.max_outer && !(inner_len <= IPV6_MIN_MTU && outer <= p.max_fragmented && v6_min(m.data())) {
                dest[i] = TOO_BIG;
                tunnel[i] = b; // the bundle, for the ICMP error
                continue;
            }
            match p.balancer.pick(inner_len, now) {
                Some(t) => {
                    tunnel[i] = t as u16;
                    p.want[t] += 1;
                    plain = true;
                }
                None => {
                    self.counters.drops.add(DpDrop::NoPath);
                    dest[i] = NONE;
                }
            }
        }
        for (i, m) in burst.drain(..).enumerate() {
            let b = dest[i];
            if b == TOO_BIG {
                // TCP is cut into segments the tunnels carry (GSO), IPv4
                // without DF into inner fragments; the rest is too big.
                if let Err(m) = self.plain_gso(tunnel[i] as usize, m, now) {
                    self.counters.drops.add(DpDrop::TooBig);
                    self.too_big(tunnel[i] as usize, m, now);
                }
            } else if b != NONE && matches!(self.bundles[b as usize].engine, Engine::Plain(_)) {
                self.send_plain(b as usize, tunnel[i] as usize, m);
            } else {
                // Copied into bundle frames, or dropped: freed together.
                self.spent.push(m);
            }
        }
        Mbuf::free_bulk(&mut self.spent);
        if plain {
            // Leases never outlive the burst.
            for st in &mut self.bundles {
                if let Engine::Plain(p) = &mut st.engine {
                    p.leases.iter_mut().for_each(|l| *l = None);
                    p.want.fill(0);
                }
            }
        }
        self.rx_burst = burst;
    }

    /// Takes the frames for the gateway itself out of the LAN burst (in
    /// `rx_burst`), keeping the order of the others, and drops those not
    /// to the port's MAC ([`lan_mac_drop`]).
    fn take_local_lan(&mut self) {
        let mut burst = std::mem::take(&mut self.rx_burst);
        let mut kept = std::mem::take(&mut self.kept);
        let tap = self.kernel[0].is_some();
        for m in burst.drain(..) {
            let len = m.pkt_len();
            // Another host's frame (flooded by a switch) is nobody's here,
            // not even the gateway's own responder's or kernel's.
            if let Some(r @ DpDrop::NotOurMac) = lan_mac_drop(m.data(), &self.lan.mac) {
                self.counters.lan_rx.add(len);
                self.counters.drops.add(r);
                continue;
            }
            let m = if self.local[0].wants(m.data()) {
                match self.answer_local(0, m) {
                    Some(m) => m,
                    None => {
                        self.counters.lan_rx.add(len);
                        continue;
                    }
                }
            } else {
                m
            };
            if tap && self.local[0].for_gateway(m.data()) {
                self.counters.lan_rx.add(len);
                self.hand_to_kernel(0, m);
            } else if let Some(r) = lan_mac_drop(m.data(), &self.lan.mac) {
                self.counters.lan_rx.add(len);
                self.counters.drops.add(r);
            } else {
                kept.push(m);
            }
        }
        self.rx_burst = kept;
        self.kept = burst;
    }

    /// A frame [`Responder::wants`] took on port `port` (0: LAN, 1 + w:
    /// WAN w): answered in place and queued on the same port, or counted
    /// and freed. Gives the frame back when the ordinary path should take
    /// it (an ICMP message that is not an echo request, say).
    fn answer_local(&mut self, port: usize, mut m: Mbuf) -> Option<Mbuf> {
        if !m.is_contiguous() {
            return Some(m);
        }
        if (self.kernel[port].is_some() || self.handoff.is_some()) && crate::local::is_neighbor_answer(m.data()) {
            if self.kernel[port].is_some() {
                self.copy_to_kernel(port, &m);
            }
            if self.handoff.is_some() {
                // RSS gives every ARP reply to one queue: every worker's
                // resolver must hear it.
                let h = handoff::Header { kind: handoff::Kind::Neighbor, a: port as u8, b: 0, spi: 0, x: 0 };
                let mut body = [0u8; 256];
                let len = m.data_len().min(body.len());
                body[..len].copy_from_slice(&m.data()[..len]);
                self.tell(h, &body[..len]);
            }
        }
        let learned = self.local[port].resolver_counters().learned;
        let queries = self.counters.local.mld_queries;
        let handled = self.local[port].handle(&mut m, self.now, &mut self.counters.local);
        if self.counters.local.mld_queries > queries {
            // An MLD query: its answer may be due at once.
            self.next_neighbors = 0;
        }
        if self.local[port].resolver_counters().learned > learned {
            // A next hop may have answered (or asked us, which taught us
            // its MAC too: found by review, packets held for it were
            // overtaken by newer ones): look at once.
            self.next_neighbors = 0;
            if port == 0 {
                // A LAN host: what waited for it leaves at this flush.
                self.lan_del.retry = true;
            }
        }
        match handled {
            Handled::Pass => Some(m),
            Handled::Dropped | Handled::Learned => None,
            Handled::Reply => {
                if port == 0 {
                    self.counters.local.lan_replies += 1;
                } else {
                    self.counters.local.wan_replies += 1;
                }
                self.local_out[port].push(m);
                None
            }
        }
    }

    /// Hands a frame for the gateway itself to port `port`'s kernel tap
    /// (the port has one).
    fn hand_to_kernel(&mut self, port: usize, m: Mbuf) {
        if let Some(k) = self.kernel[port].as_mut() {
            self.counters.kernel.taken += 1;
            k.out.push(m);
        }
    }

    /// A copy of a frame the responder takes, for port `port`'s kernel.
    fn copy_to_kernel(&mut self, port: usize, m: &Mbuf) {
        let copy = Mbuf::alloc(&self.pool).and_then(|mut c| {
            c.append(m.data_len())?.copy_from_slice(m.data());
            Some(c)
        });
        match (copy, self.kernel[port].as_mut()) {
            (Some(c), Some(k)) => {
                self.counters.kernel.copied += 1;
                k.out.push(c);
            }
            _ => self.counters.kernel.copy_failed += 1,
        }
    }

    /// What the kernel sent on the taps, queued on their ports like the
    /// gateway's own replies (no NAT, no tunnel).
    fn read_kernel_taps(&mut self, now: Nanos) -> usize {
        let mut n = 0;
        let mut more = false;
        for port in 0..self.kernel.len() {
            let Some(k) = self.kernel[port].as_mut() else { continue };
            let got = k.rx.rx_burst(&mut self.local_out[port], BURST);
            more |= got == BURST;
            n += got;
            if port == 0 {
                self.counters.kernel.from_kernel_lan += got as u64;
            } else {
                self.counters.kernel.from_kernel_wan += got as u64;
            }
        }
        self.next_kernel = if more { now } else { now.saturating_add(KERNEL_PERIOD) };
        n
    }

    /// SNAT (and port forward replies) on the routed packets of the LAN
    /// burst in `rx_burst`, before any tunnel is picked; a packet the NAT
    /// drops leaves the burst (`dest` becomes `NONE`).
    fn nat_outbound(&mut self, dest: &mut [u16], peer: &[u32], now: Nanos) {
        const NONE: u16 = u16::MAX;
        let Some(nat) = self.nat.as_deref_mut() else { return };
        let mut pkts: [&[u8]; BURST] = [&[]; BURST];
        let mut k = 0;
        for (m, _) in self.rx_burst.iter().zip(dest.iter()).filter(|(_, d)| **d != NONE) {
            pkts[k] = &m.data()[ETH..];
            k += 1;
        }
        nat.prefetch_outbound(&pkts[..k]);
        self.nat_translated += k;
        for (i, m) in self.rx_burst.iter_mut().enumerate() {
            if dest[i] == NONE {
                continue;
            }
            let pkt = &mut m.data_mut()[ETH..];
            let v = match self.own_errors {
                true => nat.outbound_own_error(pkt, peer[i], now),
                false => nat.outbound(pkt, peer[i], now),
            };
            if let Verdict::Drop(r) = v {
                self.counters.nat.out_drops[r as usize] += 1;
                // Routed nowhere: freed with the burst like any drop.
                dest[i] = NONE;
            }
        }
    }

    /// Inbound NAT on what is about to go to the LAN (`lan_out`): inner
    /// packets the re-orderer released or plain mode decapsulated, and our
    /// own ICMP errors (which quote a translated packet and go to its
    /// external address, so the NAT takes them back to the internal host).
    /// IPv4 fragments the NAT translates are made whole first
    /// (`nat.in_frags`). Packets the NAT drops are freed and counted.
    /// Called after each WAN burst and before TX; `nat_done` packets of
    /// `lan_out` were seen.
    fn nat_inbound(&mut self) {
        if self.nat.is_none() {
            return;
        }
        let done = self.nat_done.min(self.lan_out.len());
        if self.lan_out[done..].iter().any(|m| nat_frag::is_ipv4_fragment(m.data())) {
            // The NAT's fragments made whole first, each in the place of
            // its last fragment (then steered like any packet).
            let mut out = std::mem::take(&mut self.lan_out);
            self.take_nat_fragments(&mut out, done, nat_frag::IN, self.now);
            self.lan_out = out;
        }
        if self.handoff.is_some() {
            self.steer_nat_deliver();
        }
        let Some(nat) = self.nat.as_deref_mut() else { return };
        let done = self.nat_done.min(self.lan_out.len());
        if done == self.lan_out.len() {
            return;
        }
        self.nat_done = self.lan_out.len();
        let now = self.now;
        self.nat_keep.clear();
        for chunk in self.lan_out[done..].chunks_mut(BURST) {
            let mut pkts: [&[u8]; BURST] = [&[]; BURST];
            for (p, m) in pkts.iter_mut().zip(chunk.iter()) {
                *p = &m.data()[ETH..];
            }
            nat.prefetch_inbound(&pkts[..chunk.len()]);
            self.nat_translated += chunk.len();
            for m in chunk.iter_mut() {
                let keep = match nat.inbound(&mut m.data_mut()[ETH..], now) {
                    Verdict::Drop(r) => {
                        self.counters.nat.in_drops[r as usize] += 1;
                        false
                    }
                    _ => true,
                };
                self.nat_keep.push(keep);
            }
        }
        if self.nat_keep.iter().all(|k| *k) {
            return;
        }
        let mut at = 0;
        let keep = &self.nat_keep;
        self.lan_out.retain(|_| {
            at += 1;
            at <= done || keep[at - 1 - done]
        });
        self.nat_done = self.lan_out.len();
    }

    /// With NAT and several workers: the packets of `lan_out` not seen yet
    /// whose session another worker's shard holds go to that worker.
    fn steer_nat_deliver(&mut self) {
        let (Some(spec), Some(h)) = (self.nat_spec.as_ref(), self.handoff.as_mut()) else { return };
        let done = self.nat_done.min(self.lan_out.len());
        if done == self.lan_out.len() {
            return;
        }
        let (cfg, workers) = (spec.config.clone(), usize::from(h.workers()));
        let mut todo = std::mem::take(&mut self.nat_scratch);
        todo.extend(self.lan_out.drain(done..));
        for mut m in todo.drain(..) {
            let owner = is_ipv4(m.data()).then(|| cfg.inbound_owner(&m.data()[ETH..], workers)).flatten();
            match owner {
                Some(o) if o != usize::from(self.id) => {
                    let hd = handoff::Header { kind: handoff::Kind::Deliver, a: 0, b: 0, spi: 0, x: 0 };
                    if hd.push(&mut m) {
                        h.send(o as u16, m);
                    } else {
                        self.counters.drops.add(DpDrop::HandoffDeliverLost);
                    }
                }
                _ => self.lan_out.push(m),
            }
        }
        self.nat_scratch = todo;
    }

    /// Bundle mode: pack the packets of this burst routed to bundle `b`
    /// into frames, seal each on the tunnel the balancer picks.
    fn send_bundle(&mut self, b: usize, burst: &[Mbuf], dest: &[u16], now: Nanos) {
        let mut inner = [InnerPacket { bytes: &[], flow_hash: 0 }; BURST];
        let mut k = 0;
        for (m, _) in burst.iter().zip(dest).filter(|(_, d)| **d == b as u16) {
            let l3 = &m.data()[ETH..];
            let hash = flow_hash(l3) as u32;
            inner[k] = InnerPacket { bytes: l3, flow_hash: hash };
            k += 1;
        }
        let st = &mut self.bundles[b];
        let Engine::Bundle { tx, .. } = &mut st.engine else { return };
        let area = esp_area_len(st.max_frame);
        let room = st.outer_room;
        let mut cursor = PackCursor::new();
        let mut unsealed = Unsealed::default();
        let lost = loop {
            let Some(mut m) = Mbuf::alloc(&self.pool) else { break Some(DpDrop::NoMbuf) };
            let Some(buf) = m.append(room + area) else { break Some(DpDrop::TooBig) };
            let first = cursor.consumed();
            match tx.next_frame(&inner[..k], &mut cursor, &mut buf[room..], now) {
                None => break None, // all packed; `m` goes back to the pool
                // The frame is lost (the engine counts it by reason), and
                // with it every packet it held whole or in part.
                Some(Err(_)) => unsealed.frame(first, cursor.consumed(), cursor.continues()),
                Some(Ok(t)) => {
                    let wan = st.wan_of[t.tunnel];
                    m.trim(area - t.esp_len);
                    fit_outer(&mut m, room, &st.outer[t.tunnel]);
                    stamp_outer(&mut m, &st.outer[t.tunnel], t.esp_len, &mut self.ident, &self.wans[wan], true);
                    self.wan_out[wan].push(m);
                    self.wan_tags[wan].push((b as u16, t.tunnel as u16));
                }
            }
        };
        // This burst's sequence leases end with it (several workers share
        // each SA; a kept lease would go stale).
        tx.end_burst();
        // Packets the packer took are encapsulated, but for those in lost
        // frames; the rest are dropped.
        let packed = cursor.consumed().min(k);
        let unsealed = unsealed.of_packed(packed);
        self.counters.encapsulated += (packed - unsealed) as u64;
        self.counters.drops.add_n(DpDrop::FrameLost, unsealed as u64);
        // The packer also stops on a packet no frame of this bundle can
        // start (a frame area under its headers; not with validated
        // tables): what it left is dropped, counted.
        if let Some(r) = lost.or((packed < k).then_some(DpDrop::TooBig)) {
            self.counters.drops.add_n(r, (k - packed) as u64);
        }
    }

    /// Plain mode: seal one packet on tunnel `t` in place in its own mbuf:
    /// outer headers and the ESP header go in the headroom (reusing the
    /// Ethernet header's 14 bytes), pad, trailer and ICV in the tailroom.
    ///
    /// Inlined into `lan_burst` (plain mode's per-packet path; with a second
    /// caller, `plain_gso`, LLVM stopped inlining it: +15 cycles per plain
    /// 64-byte packet).
    #[inline(always)]
    fn send_plain(&mut self, b: usize, t: usize, m: Mbuf) {
        // The outer header's length a constant in each.
        match self.bundles[b].outer.get(t).is_some_and(OuterTemplate::is_v6) {
            false => self.seal_plain::<OUTER_LEN>(b, t, m),
            true => self.seal_plain::<OUTER_LEN_V6>(b, t, m),
        }
    }

    /// [`Worker::send_plain`] on a tunnel whose outer headers are `HL`
    /// bytes long.
    #[inline(always)]
    fn seal_plain<const HL: usize>(&mut self, b: usize, t: usize, mut m: Mbuf) {
        let st = &mut self.bundles[b];
        let Engine::Plain(p) = &mut st.engine else { return };
        let inner_len = m.data_len() - ETH;
        let wan = st.wan_of[t];
        let hl = HL;
        if m.prepend(hl + esp::PAYLOAD_OFFSET - ETH).is_none() || m.append(esp::MAX_TAIL).is_none() {
            self.counters.drops.add(DpDrop::TooBig);
            return;
        }
        // One lease per tunnel per burst: the packets picked for it.
        if p.leases[t].as_ref().is_none_or(SeqBlock::is_empty) {
            let n = std::mem::take(&mut p.want[t]).max(1) as usize;
            match st.out_sas[t].active().reserve(n) {
                Ok(l) => p.leases[t] = Some(l),
                Err(r) => {
                    p.leases[t] = None;
                    self.plain_drops.add(r);
                    return;
                }
            }
        }
        let lease = p.leases[t].as_mut().expect("leased above");
        // Seal with the SA the lease is from, even if a rekey switched the
        // active one since.
        let Some(sa) = st.out_sas[t].get(lease.spi()) else {
            self.plain_drops.add(braid_tunnel::DropReason::EspWrongSeqBlock);
            return;
        };
        let esp_len = match plain::encapsulate(sa, lease, &mut m.data_mut()[hl..], inner_len) {
            Ok(l) => l,
            Err(r) => {
                self.plain_drops.add(r);
                return;
            }
        };
        let extra = m.data_len() - hl - esp_len;
        m.trim(extra);
        // A packet cut into fragments has its UDP checksum computed here:
        // it covers the whole datagram, which no fragment's NIC sees.
        let whole = m.data_len() - ETH <= usize::from(self.wans[wan].mtu);
        stamp_outer(&mut m, &st.outer[t], esp_len, &mut self.ident, &self.wans[wan], whole);
        if !whole {
            // With outer fragmentation, or IPv6 of up to 1280 bytes: the
            // size check let it through.
            if self.send_fragments(m, wan, (b as u16, t as u16)) {
                self.counters.encapsulated += 1;
            } else {
                self.counters.drops.add(DpDrop::NoMbuf);
            }
            return;
        }
        self.counters.encapsulated += 1;
        self.wan_out[wan].push(m);
        self.wan_tags[wan].push((b as u16, t as u16));
    }

    /// Plain mode: a packet too big for the WAN (already counted as
    /// `too_big`). An IPv4 packet with DF set gets ICMP "fragmentation
    /// needed" with the next-hop MTU (RFC 792, RFC 1191), an IPv6 one
    /// ICMPv6 "packet too big", rate-limited, in its own mbuf, to the LAN;
    /// the others are just dropped.
    fn too_big(&mut self, b: usize, m: Mbuf, now: Nanos) {
        if now < self.next_icmp {
            return;
        }
        let Engine::Plain(p) = &self.bundles[b].engine else { return };
        let (src, src6, mtu) = (p.icmp_src, p.icmp_src6, p.inner_mtu);
        if let Some(e) = too_big_error(m, src, src6, mtu, &self.lan) {
            self.next_icmp = now.saturating_add(ICMP_INTERVAL);
            self.counters.icmp_sent += 1;
            self.lan_out.push(e);
        }
    }

    /// A packet from a tunnel too big for the LAN that cannot be cut (IPv4
    /// with DF, IPv6 other than TCP; already counted `lan_too_big`): ICMP
    /// "fragmentation needed" or ICMPv6 "packet too big" with the LAN's
    /// MTU, from the LAN port's address, goes back into the tunnels to its
    /// source (RFC 1191, RFC 8201: without it a sender on a jumbo LAN
    /// behind the peer would never learn this LAN's MTU), rate-limited
    /// like the other errors. Queued for the next poll's LAN-to-WAN pass
    /// (`icmp_to_wan`).
    #[cold]
    pub(super) fn lan_too_big_error(&mut self, m: Mbuf) {
        self.tunnel_icmp_error(m, IcmpError::TooBig(self.lan.mtu));
    }

    /// ICMP error `kind` about a packet from the tunnels that the LAN does
    /// not take, from the LAN port's address of its family, back through
    /// the tunnels (`icmp_to_wan`); at most one a millisecond of each
    /// kind.
    pub(super) fn tunnel_icmp_error(&mut self, m: Mbuf, kind: IcmpError) {
        let next = match kind {
            IcmpError::TooBig(_) => &mut self.next_icmp,
            IcmpError::Unreachable => &mut self.next_unreachable,
        };
        if self.now < *next {
            return;
        }
        let src = self.lan.ipv4.map_or([0; 4], |a| a.octets());
        let src6 = self.lan.ipv6.map_or([0; 16], |a| a.octets());
        if let Some(e) = icmp_error(m, src, src6, kind, &self.lan) {
            *next = self.now.saturating_add(ICMP_INTERVAL);
            self.icmp_to_wan.push(e);
        }
    }

    fn wan_to_lan(&mut self, w: usize, now: Nanos) -> usize {
        let n = self.wan_rx[w].rx_burst(&mut self.rx_burst, BURST);
        if n == 0 {
            return 0;
        }
        let mut burst = std::mem::take(&mut self.rx_burst);
        for m in burst.drain(..) {
            self.counters.wan_rx.add(m.pkt_len());
            let m = if self.local[1 + w].wants(m.data()) {
                match self.answer_local(1 + w, m) {
                    Some(m) => m,
                    None => continue,
                }
            } else {
                m
            };
            let r = if is_outer_fragment(m.data()) {
                if !(is_udp_fragment(m.data()) && self.local[1 + w].is_own_address(m.data())) {
                    // Not a tunnel's (not UDP, or not to this port's
                    // address; the port is promiscuous): the reassembly
                    // table is not for it. The kernel reassembles what is
                    // for the gateway.
                    if self.kernel[1 + w].is_some() && self.local[1 + w].for_gateway(m.data()) {
                        self.hand_to_kernel(1 + w, m);
                        continue;
                    }
                    Err(DpDrop::NotTunnel)
                } else {
                    match self.take_fragment(m, now) {
                        // DPDK leaves the reassembled header's checksum to TX
                        // offload (zero); each fragment's was checked.
                        Ok(Some(whole)) => self.receive_esp(w, whole, now, false, 0),
                        Ok(None) => Ok(()),
                        Err(r) => Err(r),
                    }
                }
            } else {
                // The NIC's verdict on the outer IPv4 header checksum, when
                // it checks: a good one is not summed again.
                match m.rx_ip_cksum() {
                    RxCksum::Good | RxCksum::Valid => self.receive_esp(w, m, now, false, 0),
                    RxCksum::Bad => Err(DpDrop::BadOuterIp),
                    RxCksum::Unknown => self.receive_esp(w, m, now, true, 0),
                }
            };
            if let Err(r) = r {
                self.counters.drops.add(r);
            }
        }
        // What this burst released, while it is in cache, in chunks whose
        // lookups overlap (`prefetch_inbound`).
        if self.nat.is_some() {
            self.nat_inbound();
        }
        self.rx_burst = burst;
        n
    }

    /// An outer IPv4 or IPv6 fragment ([`is_outer_fragment`]): checked,
    /// trimmed to its IP length, and given to the reassembly; the whole
    /// packet, in one segment, once complete.
    fn take_fragment(&mut self, mut m: Mbuf, now: Nanos) -> Result<Option<Mbuf>, DpDrop> {
        if !m.is_contiguous() {
            return Err(DpDrop::Multiseg);
        }
        let v6 = !is_ipv4(m.data());
        let total = if v6 { outer_fragment_v6_len(m.data())? } else { outer_ip_len(m.data())? };
        let pad = m.data_len() - ETH - total;
        m.trim(pad);
        if v6 && u16::from_be_bytes([m.data()[IP_AT + 42], m.data()[IP_AT + 43]]) & !6 == 0 {
            // An atomic fragment (offset 0, no more): a whole packet with a
            // Fragment header, processed as such (RFC 8200 section 4.5,
            // RFC 6946), never mixed with fragments of the same id.
            self.counters.frags.atomic += 1;
            return Ok(strip_fragment_header(m));
        }
        self.counters.frags.taken += 1;
        let r = if v6 { self.frag.push_v6(m, ETH, now) } else { self.frag.push(m, ETH, now) };
        self.counters.frags.discarded = self.frag.stats().discarded;
        match r {
            Ok(Some(whole)) => {
                self.counters.frags.reassembled += 1;
                // Bigger than the pool's mbufs (a peer's jumbo LAN): the
                // jumbo pool's, if there is one.
                let whole = match (whole.linearized(&self.pool), &self.jumbo) {
                    (Err(w), Some(j)) => w.linearized(j),
                    (r, _) => r,
                };
                whole.map(Some).map_err(|_| DpDrop::TooBig)
            }
            Ok(None) => Ok(None),
            // Not reached: checked to be a fragment of its version above.
            Err(_) => Err(DpDrop::BadOuterIp),
        }
    }

    /// One WAN frame. Dataplane drops come back as `Err`; an ESP packet the
    /// engine refuses is counted here: in the engine counters by reason,
    /// and in its tunnel's `rejected`. A NAT-keepalive is counted and freed.
    /// Frames for the gateway itself that are not ESP to a tunnel go to
    /// the port's kernel tap when it has one.
    ///
    /// NAT traversal: a packet that authenticated and is the newest its SA
    /// accepted, from another source than the tunnel's remote, moves the
    /// remote there (the peer's NAT rebound). Nothing else does: not an
    /// unauthenticated packet (a forgery), not an older authentic one (a
    /// capture replayed from elsewhere, or a straggler from before).
    /// An ESP-in-UDP frame from WAN port `w` (`handed`: by another worker,
    /// for this one owns its tunnel).
    /// `hops`: how many times workers handed it on (0: from the NIC).
    fn receive_esp(&mut self, w: usize, mut m: Mbuf, now: Nanos, verify_csum: bool, hops: u8) -> Result<(), DpDrop> {
        if !m.is_contiguous() {
            return Err(DpDrop::Multiseg);
        }
        let o = match outer_esp(m.data(), verify_csum, &self.tunnel_ports) {
            Ok(Some(o)) => o,
            Ok(None) => {
                self.counters.keepalives_rx += 1;
                return Ok(());
            }
            Err(DpDrop::NotTunnel | DpDrop::NonEsp) if self.kernel[1 + w].is_some() && self.local[1 + w].for_gateway(m.data()) => {
                self.hand_to_kernel(1 + w, m);
                return Ok(());
            }
            Err(r) => return Err(r),
        };
        let OuterEsp { spi, dst_port, v6, esp_at, esp_len } = o;
        let udp_at = esp_at - 8;
        let i = self.spis.binary_search_by_key(&spi, |e| e.0).map_err(|_| DpDrop::UnknownSpi)?;
        let (_, b, t) = self.spis[i];
        let (b, t) = (b as usize, t as usize);
        let workers = self.workers();
        let st = &mut self.bundles[b];
        if st.local_key[t] != local_key(dst_port, v6) {
            return Err(DpDrop::TunnelMismatch);
        }
        if workers > 1 {
            let owner = st.owner[t];
            if owner != self.id {
                // Handed here by a worker whose tables made this one the
                // owner, and ours no longer do (new tables moved the
                // tunnel): handed on once more to the owner we know, not
                // opened outside its replay window; a second time (both
                // changing their minds), dropped.
                if hops >= 2 {
                    return Err(DpDrop::HandoffStale);
                }
                // Opened only where its replay window is (see `handoff`);
                // not before, so only while the owner keeps up.
                if self.handoff.as_ref().is_some_and(|ho| ho.backlog(owner) >= handoff::ESP_BACKLOG) {
                    return Err(DpDrop::HandoffFull);
                }
                let h = handoff::Header { kind: handoff::Kind::Esp, a: w as u8, b: verify_csum as u8, spi: 0, x: u64::from(hops) + 1 };
                if !h.push(&mut m) {
                    return Err(DpDrop::HandoffFull);
                }
                self.handoff.as_mut().expect("several workers").send(owner, m);
                return Ok(());
            }
        }
        let tc = &mut self.counters.tunnels[b][t];
        match &mut st.engine {
            Engine::Bundle { rx, .. } if workers > 1 => {
                let o = match rx.open(t, &mut m.data_mut()[esp_at..esp_at + esp_len], now) {
                    Ok(o) => o,
                    Err(_) => {
                        tc.rejected += 1;
                        return Ok(());
                    }
                };
                tc.rx.add(esp_len);
                let moved = if o.newest { follow_remote(&mut st.outer[t], m.data(), udp_at, tc) } else { None };
                if let Some(src) = moved {
                    self.remote_news.push((o.spi.0, src));
                }
                let owner = handoff::stream_owner(o.stream, workers);
                if owner == self.id {
                    self.deliver_frame(b, &o, &m.data()[esp_at + o.payload.start..esp_at + o.payload.end], now);
                } else {
                    // Just the frame, behind the hand-off header.
                    let tail = m.data_len() - (esp_at + o.payload.end);
                    m.adj(esp_at + o.payload.start);
                    m.trim(tail);
                    let h = handoff::Header { kind: handoff::Kind::Frame, a: o.newest as u8, b: 0, spi: o.spi.0, x: 0 };
                    if h.push(&mut m) {
                        self.handoff.as_mut().expect("several workers").send(owner, m);
                    } else {
                        self.counters.drops.add(DpDrop::HandoffLost);
                    }
                }
                Ok(())
            }
            Engine::Bundle { rx, .. } => {
                let (pool, jumbo) = (&self.pool, self.jumbo.as_deref());
                let stash = &mut self.stash;
                let lan = self.lan;
                // An inner packet without an mbuf is the engine's
                // `rx_no_buffer`.
                let make = |inner: &[u8]| lan_frame(stash, pool, jumbo, &lan, inner);
                let before = self.lan_out.len();
                let r = rx.on_esp_from(t, &mut m.data_mut()[esp_at..esp_at + esp_len], now, make, &mut self.lan_out);
                self.counters.delivered += (self.lan_out.len() - before) as u64;
                match r {
                    Ok(s) => {
                        tc.rx.add(esp_len);
                        if s.newest {
                            follow_remote(&mut st.outer[t], m.data(), udp_at, tc);
                        }
                    }
                    Err(_) => tc.rejected += 1,
                }
                Ok(())
            }
            Engine::Plain(p) => {
                let opened = match plain::decapsulate(&mut p.inbound[t], &mut m.data_mut()[esp_at..esp_at + esp_len], now) {
                    Ok(o) => o,
                    Err(r) => {
                        self.plain_drops.add(r);
                        tc.rejected += 1;
                        return Ok(());
                    }
                };
                let moved = if opened.newest { follow_remote(&mut st.outer[t], m.data(), udp_at, tc) } else { None };
                if let Some(src) = moved.filter(|_| workers > 1) {
                    self.remote_news.push((p.inbound[t].current().spi().0, src));
                }
                // Strip outer headers down to room for the LAN Ethernet
                // header, and the ESP trailer.
                let inner_at = esp_at + opened.payload.start;
                // The inner IP header's own length, not the ESP payload's
                // (RFC 4303 2.7 TFC padding may follow it).
                let inner_len = inner_ip_len(&m.data()[inner_at..inner_at + opened.payload.len()]).ok_or(DpDrop::BadInnerIp)?;
                tc.rx.add(esp_len);
                let tail = m.data_len() - inner_at - inner_len;
                m.adj(inner_at - ETH);
                m.trim(tail);
                write_eth(m.data_mut(), &self.lan);
                if crate::mss::clamp(m.data_mut(), usize::from(p.clamp_mtu)) {
                    self.counters.mss_clamped += 1;
                }
                self.counters.delivered += 1;
                self.lan_out.push(m);
                Ok(())
            }
        }
    }

    /// Tells the other workers the remotes learned, and hands them what
    /// is theirs.
    fn flush_handoff(&mut self) {
        for (spi, src) in std::mem::take(&mut self.remote_news) {
            // IPv4: address and port in `x`; IPv6: the port and a flag in
            // `x`, the address in the body.
            let (x, body) = match src {
                SocketAddr::V4(a) => ((u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port()), [0u8; 16]),
                SocketAddr::V6(a) => (REMOTE_V6 | u64::from(a.port()), a.ip().octets()),
            };
            let body = if src.is_ipv6() { &body[..] } else { &[] };
            self.tell(handoff::Header { kind: handoff::Kind::Remote, a: 0, b: 0, spi, x }, body);
        }
        let Some(h) = self.handoff.as_mut() else { return };
        let f = h.flush();
        let c = &mut self.counters;
        use handoff::Kind;
        let (esp, frames, lan, deliver) = (f.of(Kind::Esp), f.of(Kind::Frame), f.of(Kind::Lan), f.of(Kind::Deliver));
        (c.handoff.esp_out, c.handoff.frames_out) = (c.handoff.esp_out + esp.0, c.handoff.frames_out + frames.0);
        (c.handoff.lan_out, c.handoff.deliver_out) = (c.handoff.lan_out + lan.0, c.handoff.deliver_out + deliver.0);
        c.drops.add_n(DpDrop::HandoffFull, esp.1 + lan.1);
        c.drops.add_n(DpDrop::HandoffLost, frames.1);
        c.drops.add_n(DpDrop::HandoffDeliverLost, deliver.1);
    }

    /// A frame opened from bundle `b`'s tunnel `o.tunnel` (here or by the
    /// tunnel's owner), to this worker's re-orderer of its stream.
    fn deliver_frame(&mut self, b: usize, o: &OpenedFrame, frame: &[u8], now: Nanos) {
        let Engine::Bundle { rx, .. } = &mut self.bundles[b].engine else {
            // New tables made the bundle a plain one meanwhile.
            self.counters.drops.add(DpDrop::HandoffLost);
            return;
        };
        let (pool, jumbo) = (&self.pool, self.jumbo.as_deref());
        let stash = &mut self.stash;
        let lan = self.lan;
        let make = |inner: &[u8]| lan_frame(stash, pool, jumbo, &lan, inner);
        let before = self.lan_out.len();
        // A refused frame is counted by the engine.
        let _ = rx.on_opened(o, frame, now, make, &mut self.lan_out);
        self.counters.delivered += (self.lan_out.len() - before) as u64;
    }

    /// What the other workers handed this one (see `handoff`).
    fn take_handed(&mut self, now: Nanos) -> usize {
        let Some(h) = self.handoff.as_mut() else { return 0 };
        let mut handed = std::mem::take(&mut self.handed);
        // Everything the others handed since the last poll (up to 16
        // bursts each): a backlog here would hold the re-orderers back.
        let n = h.receive(&mut handed, 16 * BURST);
        for mut m in handed.drain(..) {
            let Some(h) = handoff::Header::pop(&mut m) else {
                // Only workers write these rings, always behind a header.
                self.counters.drops.add(DpDrop::HandoffLost);
                continue;
            };
            let tunnel = |spis: &[(u32, u16, u16)]| {
                spis.binary_search_by_key(&h.spi, |e| e.0).ok().map(|i| (spis[i].1 as usize, spis[i].2 as usize))
            };
            match h.kind {
                handoff::Kind::Esp => {
                    self.counters.handoff.esp_in += 1;
                    if let Err(r) = self.receive_esp(usize::from(h.a), m, now, h.b != 0, h.x.clamp(1, 2) as u8) {
                        self.counters.drops.add(r);
                    }
                }
                handoff::Kind::Frame => {
                    self.counters.handoff.frames_in += 1;
                    let Some((b, t)) = tunnel(&self.spis) else {
                        // New tables removed the tunnel meanwhile.
                        self.counters.drops.add(DpDrop::HandoffLost);
                        continue;
                    };
                    let o = OpenedFrame { tunnel: t, spi: Spi(h.spi), seq: 0, newest: h.a != 0, stream: 0, payload: 0..m.data_len() };
                    self.deliver_frame(b, &o, m.data(), now);
                }
                handoff::Kind::Remote => {
                    self.counters.handoff.messages_in += 1;
                    let remote = if h.x & REMOTE_V6 != 0 {
                        <[u8; 16]>::try_from(m.data()).ok().map(|ip| SocketAddr::new(ip.into(), h.x as u16))
                    } else {
                        Some(SocketAddr::new(std::net::Ipv4Addr::from((h.x >> 16) as u32).into(), h.x as u16))
                    };
                    if let (Some((b, t)), Some(remote)) = (tunnel(&self.spis), remote) {
                        self.bundles[b].outer[t].set_remote(remote);
                    }
                }
                handoff::Kind::Path => {
                    self.counters.handoff.messages_in += 1;
                    if let Some((b, t)) = tunnel(&self.spis) {
                        if let Engine::Bundle { tx, .. } = &mut self.bundles[b].engine {
                            // The timers pass it on to this worker's
                            // re-orderers (`rx_paths`).
                            tx.set_path_alive(t, h.a != 0);
                            match h.x {
                                u64::MAX => tx.forget_path_delay(t),
                                d => tx.set_path_delay(t, d),
                            }
                        }
                    }
                }
                handoff::Kind::Lan => {
                    self.counters.handoff.lan_in += 1;
                    self.lan_handed.push(m);
                }
                handoff::Kind::Deliver => {
                    self.counters.handoff.deliver_in += 1;
                    self.deliver_handed.push(m);
                }
                handoff::Kind::Neighbor => {
                    self.counters.handoff.messages_in += 1;
                    let port = usize::from(h.a);
                    if port < self.local.len() {
                        // Counted where it arrived; here it only teaches.
                        let mut seen = LocalStats::default();
                        if let Handled::Learned = self.local[port].handle(&mut m, now, &mut seen) {
                            self.next_neighbors = 0;
                            if port == 0 {
                                self.lan_del.retry = true;
                            }
                        }
                    }
                }
            }
        }
        self.handed = handed;
        n
    }

    /// Tells the other workers something this one learned: a message of
    /// `len` bytes (copied from `body`) behind header `h`.
    fn tell(&mut self, h: handoff::Header, body: &[u8]) {
        let Some(ho) = self.handoff.as_mut() else { return };
        let pool = &self.pool;
        let made = ho.broadcast(|| {
            let mut m = Mbuf::alloc(pool)?;
            m.append(body.len())?.copy_from_slice(body);
            h.push(&mut m).then_some(m)
        });
        let c = &mut self.counters.handoff;
        c.messages_failed += made as u64;
        c.messages_out += u64::from(ho.workers() - 1) - made as u64;
    }

    /// Publishes the top of each replay window this worker owns into its
    /// SA's kept high (`TunnelSetup::rx_high`): from the timers, once a
    /// millisecond, and by the process after the worker stopped.
    pub fn publish_rx_highs(&self) {
        self.publish_highs(false);
    }

    /// [`publish_rx_highs`](Self::publish_rx_highs), the tunnels not yet
    /// settled included: when this worker's windows are handed over or
    /// go away (new tables, exit), their tops must be kept, even if that
    /// makes a settle to come refuse a few of this window's late packets
    /// (never a replay).
    pub fn publish_all_rx_highs(&self) {
        self.publish_highs(true);
    }

    fn publish_highs(&self, all: bool) {
        for st in &self.bundles {
            for (t, spec) in st.spec.tunnels.iter().enumerate() {
                let Some(high) = &spec.rx_high else { continue };
                // Not a tunnel that came here and is not settled yet: its
                // high says what the previous owner took, which the
                // settle refuses (this window's own top would refuse this
                // window's packets still on their way).
                let unsettled = || self.moved_in.binary_search(&spec.inbound.spi.0).is_ok();
                if st.owner.get(t).is_some_and(|o| *o != self.id) || (!all && unsettled()) {
                    continue;
                }
                let pair = match &st.engine {
                    Engine::Bundle { rx, .. } => rx.inbound(t),
                    Engine::Plain(p) => p.inbound.get(t),
                };
                // Only the SA the high belongs to (not one a rekey is
                // still replacing).
                if let Some(sa) = pair.map(|p| p.current()).filter(|sa| sa.spi() == spec.inbound.spi) {
                    high.fetch_max(sa.window().top(), Ordering::Relaxed);
                }
            }
        }
    }

    /// Tunnels that came to this worker from another at the last new
    /// tables: once every worker runs those tables (`Exchange::all_seen`),
    /// their windows refuse everything up to their SA's kept high, where
    /// the previous owner published its window's top when it applied
    /// them. Until then the previous owner still took the tunnel's
    /// packets, beyond the floor this worker's window started from: a
    /// replay of one of those, handed here later, would have been
    /// accepted once. Returns the windows settled.
    pub fn settle_moved_windows(&mut self) -> usize {
        let mut settled = 0;
        for spi in std::mem::take(&mut self.moved_in) {
            // Still this worker's, under the tables that run now.
            let Ok(i) = self.spis.binary_search_by_key(&spi, |e| e.0) else { continue };
            let (b, t) = (usize::from(self.spis[i].1), usize::from(self.spis[i].2));
            let Some(st) = self.bundles.get_mut(b) else { continue };
            if st.owner.get(t) != Some(&self.id) {
                continue;
            }
            let Some(spec) = st.spec.tunnels.get(t) else { continue };
            let Some(high) = &spec.rx_high else { continue };
            if let Some(pair) = inbound_mut(&mut st.engine, t) {
                pair.refuse_through(spec.inbound.spi, high.load(Ordering::Relaxed));
                settled += 1;
            }
        }
        settled
    }

    /// Raises every window of this worker to its SA's kept high: a window
    /// built for new tables (here, or ahead on the control thread) starts
    /// above what the window it replaces accepted up to the moment the
    /// tables were applied (`apply_with` publishes first).
    pub(crate) fn raise_rx_floors(&mut self) {
        for st in &mut self.bundles {
            for (t, spec) in st.spec.tunnels.iter().enumerate() {
                let Some(high) = &spec.rx_high else { continue };
                if let Some(pair) = inbound_mut(&mut st.engine, t) {
                    pair.raise_floor(spec.inbound.spi, high.load(Ordering::Relaxed));
                }
            }
        }
    }

    fn timers(&mut self, now: Nanos) {
        if now >= self.next_neighbors {
            self.next_neighbors = now.saturating_add(NEIGHBOR_PERIOD);
            self.publish_rx_highs();
            self.resolve_next_hops(now);
            self.send_mld_reports(now);
            if self.lan_held() > 0 {
                self.lan_del.retry = true;
            }
        }
        // Incomplete outer packets past their time are freed.
        self.frag.expire(now);
        self.counters.frags.discarded = self.frag.stats().discarded;
        // Also after new tables removed the NAT: what they hold goes.
        self.nat_frag.iter_mut().for_each(|t| t.expire(now));
        for (b, st) in self.bundles.iter_mut().enumerate() {
            let Engine::Bundle { tx, rx } = &mut st.engine else { continue };
            let before = self.lan_out.len();
            rx.poll(now, &mut self.lan_out);
            self.counters.delivered += (self.lan_out.len() - before) as u64;
            // Probe replies we received feed our sender's liveness.
            while let Some(r) = rx.poll_probe_reply() {
                let _ = tx.on_probe_reply(&r.reply, r.at);
            }
            // Probes due, and replies to the peer's probes.
            let area = esp_area_len(st.max_frame);
            loop {
                let Some(mut m) = Mbuf::alloc(&self.pool) else { break };
                let Some(buf) = m.append(st.outer_room + area) else { break };
                let esp_buf = &mut buf[st.outer_room..];
                let Some(t) = tx.poll(now, esp_buf).or_else(|| rx.poll_transmit(esp_buf)) else { break };
                let wan = st.wan_of[t.tunnel];
                m.trim(area - t.esp_len);
                fit_outer(&mut m, st.outer_room, &st.outer[t.tunnel]);
                stamp_outer(&mut m, &st.outer[t.tunnel], t.esp_len, &mut self.ident, &self.wans[wan], true);
                self.wan_out[wan].push(m);
                self.wan_tags[wan].push((b as u16, t.tunnel as u16));
            }
            tx.end_burst();
            // The re-orderers follow the sender's view of each path: a dead
            // path holds no gap back, and the hold follows the delay skew.
            // The prober tells the other workers (their senders do not
            // probe).
            let prober = self.handoff.is_some() && self.options.probes.is_some();
            if self.options.probes.is_some() {
                // Probes missed and replies come late since the last look;
                // a monitor started afresh (new liveness settings) counts
                // from 0 again.
                let since = |now: u64, seen: u64| now.checked_sub(seen).unwrap_or(now);
                for (path, seen) in st.missed_seen.iter_mut().enumerate() {
                    let (missed, late) = tx.monitor(path).map_or((0, 0), |m| (m.counters().missed, m.counters().late_replies));
                    if let Some(tc) = self.counters.tunnels.get_mut(b).and_then(|v| v.get_mut(path)) {
                        tc.probes_missed += since(missed, seen.0);
                        tc.late_replies += since(late, seen.1);
                    }
                    *seen = (missed, late);
                }
            }
            // Frames sent while no path was alive (bundle mode: on every
            // worker that sends).
            let nl = tx.stats().no_live_path;
            self.counters.no_live_path += nl.checked_sub(st.no_live_seen).unwrap_or(nl);
            st.no_live_seen = nl;
            for (path, seen) in st.rx_paths.iter_mut().enumerate() {
                let view = (tx.path_alive(path), tx.path_delay(path));
                if view.0 != seen.0 {
                    rx.set_path_live(path, view.0);
                    // Counted by the worker that probes (the others only
                    // hear of it).
                    if seen.0 && self.options.probes.is_some() {
                        if let Some(tc) = self.counters.tunnels.get_mut(b).and_then(|v| v.get_mut(path)) {
                            tc.path_deaths += 1;
                        }
                    }
                }
                if view.1 != seen.1 {
                    rx.set_path_delay(path, view.1);
                }
                if prober && view != *seen {
                    let spi = rx.inbound(path).map_or(0, |p| p.current().spi().0);
                    self.path_news.push(handoff::Header { kind: handoff::Kind::Path, a: view.0 as u8, b: 0, spi, x: view.1.unwrap_or(u64::MAX) });
                }
                *seen = view;
            }
        }
        for h in std::mem::take(&mut self.path_news) {
            self.tell(h, &[]);
        }
        self.keepalives(now);
    }

    /// RFC 3948 section 2.3 NAT-keepalives: a tunnel on whose SA no worker
    /// leased a sequence number for its bundle's interval sends one, from
    /// the tunnel's owner (outer headers from its
    /// template, one octet 0xff), so that a NAT on the way keeps the
    /// mapping. Counted per tunnel when the port takes it (`keepalives_tx`).
    fn keepalives(&mut self, now: Nanos) {
        for (b, st) in self.bundles.iter_mut().enumerate() {
            if st.keepalive == 0 || now < st.next_keepalive {
                continue;
            }
            st.next_keepalive = now.saturating_add(st.keepalive.min(KEEPALIVE_CHECK));
            let workers = self.handoff.as_ref().map_or(1, |h| h.workers());
            for (t, (seen, since)) in st.quiet.iter_mut().enumerate() {
                // With several workers, the tunnel's owner keeps its
                // mapping.
                if workers > 1 && st.owner[t] != self.id {
                    continue;
                }
                // Sequence numbers leased on the tunnel's SA, by any
                // worker (probes included): with several workers the
                // owner's own TX count says nothing of the others'.
                let sent = st.out_sas[t].active().next_seq();
                if sent != *seen {
                    (*seen, *since) = (sent, now);
                    continue;
                }
                let wan = st.wan_of[t];
                // Without a next hop there is no mapping to keep: sent once
                // the next hop is resolved.
                if now.saturating_sub(*since) < st.keepalive || !self.nh_ready[wan] {
                    continue;
                }
                // No mbuf: tried again at the next check.
                let Some(mut m) = Mbuf::alloc(&self.pool) else { break };
                let offload = self.wans[wan].ip_csum_offload && !st.outer[t].is_v6();
                let Some(buf) = m.append(st.outer[t].keepalive_len()) else { break };
                self.ident = self.ident.wrapping_add(1);
                st.outer[t].write_keepalive(buf, self.ident, offload);
                if offload {
                    m.set_tx_offload(TxOffload { flags: TX_IPV4 | TX_IP_CKSUM, l2_len: 14, l3_len: 20, ..Default::default() });
                }
                *since = now;
                self.counters.keepalives += 1;
                self.keepalive_out[wan].push(m);
                self.keepalive_tags[wan].push((b as u16, t as u16));
            }
        }
    }

    /// Looks up the next hop of every WAN port given by address: sends
    /// the requests the resolver asks for, and points the port's tunnels at
    /// the MAC it knows (kept while a stale entry is re-confirmed). Without
    /// one the port's ESP packets are dropped at TX.
    fn resolve_next_hops(&mut self, now: Nanos) {
        for w in 0..self.wans.len() {
            let Some(ip) = self.wans[w].next_hop else { continue };
            let mut out = [0u8; FRAME_MAX];
            let (mac, request) = match self.local[1 + w].lookup(ip, now, &mut out) {
                Lookup::Resolved { mac, request } => (Some(mac.0), request),
                Lookup::Pending { request } => (None, request),
                Lookup::Failed => (None, None),
            };
            if let Some(len) = request {
                // No mbuf: the resolver asks again at its next retry.
                match Mbuf::alloc(&self.pool).and_then(|mut m| m.append(len).map(|b| b.copy_from_slice(&out[..len])).map(|()| m)) {
                    Some(m) => {
                        self.counters.local.requests += 1;
                        self.local_out[1 + w].push(m);
                    }
                    None => self.counters.local.requests_lost += 1,
                }
            }
            match mac {
                Some(mac) => {
                    if mac != self.wans[w].next_hop_mac {
                        self.set_next_hop_mac(w, mac);
                    }
                    self.nh_ready[w] = true;
                }
                None => self.nh_ready[w] = false,
            }
        }
    }

    /// The MLD reports due on each port (`crate::mld`), queued with the
    /// port's own replies. No mbuf: that report is not sent (the next
    /// query asks again), counted `requests_lost`.
    fn send_mld_reports(&mut self, now: Nanos) {
        for (p, r) in self.local.iter_mut().enumerate() {
            let (pool, out, c) = (&self.pool, &mut self.local_out[p], &mut self.counters.local);
            r.mld_reports(now, |f| match Mbuf::alloc(pool).and_then(|mut m| m.append(f.len()).map(|b| b.copy_from_slice(f)).map(|()| m)) {
                Some(m) => {
                    out.push(m);
                    *if p == 0 { &mut c.lan_mld_reports } else { &mut c.mld_reports } += 1;
                }
                None => c.requests_lost += 1,
            });
        }
    }

    /// Points every tunnel on WAN port `w` at next hop `mac`.
    fn set_next_hop_mac(&mut self, w: usize, mac: [u8; 6]) {
        self.wans[w].next_hop_mac = mac;
        for st in &mut self.bundles {
            for (t, outer) in st.outer.iter_mut().enumerate() {
                if st.wan_of[t] == w {
                    outer.set_dst_mac(mac);
                }
            }
        }
    }

    fn flush_tx(&mut self) {
        self.nat_inbound();
        if !self.deliver_handed.is_empty() {
            // Handed here for this worker's NAT sessions: translated, never
            // steered again.
            let mut d = std::mem::take(&mut self.deliver_handed);
            let h = self.handoff.take();
            self.lan_out.append(&mut d);
            self.nat_inbound();
            self.handoff = h;
            self.deliver_handed = d;
        }
        if self.handoff.is_some() {
            self.flush_handoff();
        }
        self.nat_done = 0;
        self.resolve_lan();
        self.fit_lan_mtu();
        let c = &mut self.counters;
        for k in self.kernel.iter_mut().flatten() {
            if !k.out.is_empty() {
                let to_kernel = &mut c.kernel.to_kernel;
                send_all(&mut k.tx, &mut k.out, &mut self.tx_lens, |_, _| *to_kernel += 1, &mut c.drops, [DpDrop::KernelTxFull, DpDrop::KernelTxRejected]);
            }
        }
        let lan_tx = &mut c.lan_tx;
        send_all(&mut self.lan_tx, &mut self.lan_out, &mut self.tx_lens, |_, len| lan_tx.add(len), &mut c.drops, [DpDrop::LanTxFull, DpDrop::LanTxRejected]);
        // Our own replies (ARP, NA, echo), each out of the port it came in on.
        let (local_lan, local_wans) = self.local_out.split_first_mut().expect("the LAN's");
        send_all(&mut self.lan_tx, local_lan, &mut self.tx_lens, |_, len| lan_tx.add(len), &mut c.drops, [DpDrop::LanTxFull, DpDrop::LanTxRejected]);
        for (q, out) in self.wan_tx.iter_mut().zip(local_wans.iter_mut()) {
            let (wan_tx, sent) = (&mut c.wan_tx, &mut c.local.wan_replies_sent);
            send_all(q, out, &mut self.tx_lens, |_, len| {
                wan_tx.add(len);
                *sent += 1;
            }, &mut c.drops, [DpDrop::WanTxFull, DpDrop::WanTxRejected]);
        }
        // ESP packets, then NAT-keepalives (rare: a tunnel idle for
        // seconds), each counted on its tunnel once the port took it.
        send_wan(&mut self.wan_tx, &mut self.wan_out, &mut self.wan_tags, &self.nh_ready, &mut self.tx_lens, c, |tc, len| tc.tx.add(len));
        send_wan(&mut self.wan_tx, &mut self.keepalive_out, &mut self.keepalive_tags, &self.nh_ready, &mut self.tx_lens, c, |tc, _| {
            tc.keepalives_tx += 1
        });
    }
}

/// Sends each WAN port's `out` (tagged (bundle, tunnel) per packet) on its
/// TX queue, or drops it all as `next_hop_unresolved` while the port's next
/// hop is not `ready`; `on_tunnel` counts each packet the port took on its
/// tunnel.
fn send_wan(
    queues: &mut [TxQueue],
    outs: &mut [Vec<Mbuf>],
    tags: &mut [Vec<(u16, u16)>],
    ready: &[bool],
    tx_lens: &mut Vec<u32>,
    c: &mut WorkerCounters,
    on_tunnel: impl Fn(&mut TunnelCounters, usize),
) {
    for (((q, out), tags), ready) in queues.iter_mut().zip(outs.iter_mut()).zip(tags.iter_mut()).zip(ready) {
        debug_assert_eq!(out.len(), tags.len());
        if out.is_empty() {
            continue;
        }
        if !ready {
            c.drops.add_n(DpDrop::NextHopUnresolved, out.len() as u64);
            Mbuf::free_bulk(out);
            tags.clear();
            continue;
        }
        let (wan_tx, tunnels) = (&mut c.wan_tx, &mut c.tunnels);
        let sent = |i: usize, len: usize| {
            wan_tx.add(len);
            let (b, t) = tags[i];
            if let Some(tc) = tunnels.get_mut(b as usize).and_then(|ts| ts.get_mut(t as usize)) {
                on_tunnel(tc, len);
            }
        };
        send_all(q, out, tx_lens, sent, &mut c.drops, [DpDrop::WanTxFull, DpDrop::WanTxRejected]);
        tags.clear();
    }
}

/// Builds worker `setup.id`'s NAT shard, if the tables have NAT rules.
fn build_nat(setup: &WorkerSetup) -> Result<Option<Box<NatShard>>, String> {
    let Some(n) = &setup.nat else { return Ok(None) };
    NatShard::new(&n.config, setup.id as usize, n.workers as usize).map(|s| Some(Box::new(s))).map_err(|e| format!("nat: {e}"))
}

/// Builds one bundle's engine state (its SAs, balancer, re-orderer).
fn build_bundle(setup: &WorkerSetup, bs: &BundleSetup, now: Nanos) -> Result<BundleState, String> {
    let n = bs.tunnels.len();
    let mut inbound = Vec::with_capacity(n);
    for t in &bs.tunnels {
        // Above what an earlier window of this SA accepted (before a
        // restart, or before the tunnel left the tables and came back).
        let floor = t.rx_high.as_ref().map_or(0, |h| h.load(Ordering::Relaxed));
        let sa = if floor > 0 {
            InboundSa::starting_at(&t.inbound, setup.replay_window, floor)
        } else {
            InboundSa::new(&t.inbound, setup.replay_window)
        };
        inbound.push(InboundSaPair::new(sa.map_err(|e| format!("replay window: {e:?}"))?));
    }
    let out_sas: Vec<_> = bs.tunnels.iter().map(|t| t.out.clone()).collect();
    let engine = match bs.mode {
        Mode::Bundle => {
            let txc = BundleTxConfig {
                stream: setup.id,
                max_frame: bs.max_frame,
                policy: bs.policy,
                liveness: setup.probes,
                // Thousands of tunnels must not probe in one burst.
                stagger_probes: true,
                ..Default::default()
            };
            let mut tx = BundleTx::new(txc, out_sas.clone(), now);
            for (i, t) in bs.tunnels.iter().enumerate() {
                tx.balancer_mut().set_params(i, t.params);
            }
            // Probe replies go out as a stream no data sender uses.
            // Capacity for the packets in flight across the skew
            // between paths: at 1 Mpps and 2 ms of skew, ~2000
            // packets wait for a gap; big inner packets wait for
            // their fragments.
            let base = BundleRxConfig::default();
            let rxc = BundleRxConfig {
                reply_stream: 0x8000 | setup.id,
                // With several workers, also the skew between their RX
                // queues (up to a ring of frames, at 64 B ~20 packets each;
                // 8192 slots lost packets in braid-perf-workers). A stream's
                // re-orderer is made on its first frame, by its one owner.
                reorder: ReorderConfig {
                    hold: setup.hold,
                    slots: if setup.workers > 1 { 32768 } else { 8192 },
                    per_bucket: if setup.workers > 1 { 4096 } else { 1024 },
                    ..base.reorder
                },
                // Inner packets up to the largest LAN MTU any peer may
                // have (the engine's default is 9216).
                reassembly: ReassemblyConfig { slots: 512, max_packet: crate::config::MAX_MTU as usize, ..base.reassembly },
                // Probe replies are rare: a lease of several sequence
                // numbers would go stale behind the data traffic on
                // the same SA and fall out of the peer's window.
                seq_lease: 1,
                ..base
            };
            let rx = BundleRx::new(rxc, inbound, out_sas.clone());
            Engine::Bundle { tx: Box::new(tx), rx: Box::new(rx) }
        }
        Mode::Plain => {
            let mut balancer = Balancer::new(bs.policy, n);
            for (i, t) in bs.tunnels.iter().enumerate() {
                balancer.set_params(i, t.params);
            }
            let min_mtu = bs.tunnels.iter().map(|t| setup.wans.get(t.wan).map_or(0, |w| w.mtu as usize)).min().unwrap_or(0);
            let v4 = bs.tunnels.iter().any(|t| t.local.is_ipv4());
            let v6 = bs.tunnels.iter().any(|t| t.local.is_ipv6());
            let (outer_ip_udp, max_outer) = plain_outer_limits(min_mtu, bs.outer_fragmentation, v4, v6);
            let max_fragmented = plain_outer_limits(min_mtu, true, v4, v6).1;
            let fits = |max: usize| (0..=u16::MAX).rev().find(|&l| outer_ip_udp + esp::packet_len(l as usize) <= max).unwrap_or(0);
            let (inner_mtu, clamp_mtu) = (fits(max_outer), fits(min_mtu));
            Engine::Plain(Plain {
                balancer,
                leases: (0..n).map(|_| None).collect(),
                want: vec![0; n],
                inbound,
                max_outer,
                max_fragmented,
                inner_mtu,
                clamp_mtu,
                // An IPv4 tunnel's local address, else the LAN port's.
                icmp_src: bs.tunnels.iter().find_map(|t| local_v4(t.local.ip())).or(setup.lan.ipv4).map_or([0; 4], |a| a.octets()),
                icmp_src6: bs.tunnels.iter().find_map(|t| local_v6(t.local.ip())).or(setup.lan.ipv6).map_or([0; 16], |a| a.octets()),
                outer_ip_udp,
            })
        }
    };
    for (i, t) in bs.tunnels.iter().enumerate() {
        if t.wan >= setup.wans.len() {
            return Err(format!("tunnel {i}: WAN port {} does not exist", t.wan));
        }
    }
    let outer: Vec<OuterTemplate> = bs
        .tunnels
        .iter()
        .map(|t| OuterTemplate::new(setup.wans[t.wan].mac, setup.wans[t.wan].next_hop_mac, t.local, t.remote))
        .collect();
    Ok(BundleState {
        spec: bs.clone(),
        engine,
        max_frame: bs.max_frame,
        outer_room: outer.iter().map(OuterTemplate::header_len).max().unwrap_or(OUTER_LEN),
        outer,
        out_sas,
        wan_of: bs.tunnels.iter().map(|t| t.wan).collect(),
        local_key: bs.tunnels.iter().map(|t| local_key(t.local.port(), t.local.is_ipv6())).collect(),
        rx_paths: vec![(true, None); n],
        missed_seen: vec![(0, 0); n],
        no_live_seen: 0,
        keepalive: bs.keepalive,
        next_keepalive: now.saturating_add(bs.keepalive.min(KEEPALIVE_CHECK)),
        quiet: bs.tunnels.iter().map(|t| (t.out.active().next_seq(), now)).collect(),
        owner: bs.tunnels.iter().map(|t| tunnel_owner(setup, t)).collect(),
    })
}

/// The worker that owns tunnel `t`'s inbound SA: the one whose RX queue
/// its WAN port's RSS gives the tunnel's packets (from the configured
/// remote), or, without RSS, `handoff::tunnel_owner` of its local port.
/// Any function would be correct (every worker computes the same); this
/// one spares the hand-off of ESP packets when the NIC spreads by RSS.
fn local_v4(a: std::net::IpAddr) -> Option<std::net::Ipv4Addr> {
    match a {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(_) => None,
    }
}

fn local_v6(a: std::net::IpAddr) -> Option<std::net::Ipv6Addr> {
    match a {
        std::net::IpAddr::V6(a) => Some(a),
        std::net::IpAddr::V4(_) => None,
    }
}

fn tunnel_owner(setup: &WorkerSetup, t: &TunnelSetup) -> u16 {
    if setup.workers <= 1 {
        return 0;
    }
    let by_port = handoff::tunnel_owner(t.local.port(), setup.workers);
    match setup.wan_rss.get(t.wan).and_then(|s| s.as_deref()) {
        // IPv4 or IPv6 alike: RSS hashes the outer addresses and ports.
        Some(rss) => rss.queue(t.remote, t.local).filter(|&q| q < setup.workers).unwrap_or(by_port),
        None => by_port,
    }
}

/// SPI -> (bundle, tunnel), sorted by SPI.
/// The local UDP ports of every tunnel, a bit each.
fn port_set(bundles: &[BundleSetup]) -> Box<[u64; 1024]> {
    let mut set = Box::new([0u64; 1024]);
    for t in bundles.iter().flat_map(|b| &b.tunnels) {
        let p = t.local.port() as usize;
        set[p / 64] |= 1 << (p % 64);
    }
    set
}

fn spi_table(bundles: &[BundleSetup]) -> Vec<(u32, u16, u16)> {
    let mut spis: Vec<(u32, u16, u16)> = bundles
        .iter()
        .enumerate()
        .flat_map(|(b, bs)| bs.tunnels.iter().enumerate().map(move |(i, t)| (t.inbound.spi.0, b as u16, i as u16)))
        .collect();
    spis.sort_unstable();
    spis
}

/// Sends `out`, retrying briefly while the port makes progress. `sent(i,
/// len)` counts each packet the port took (`i`: its index in `out`); what
/// it refused in tx_prepare and what did not fit are dropped and counted
/// as `[full, rejected]`.
#[inline]
fn send_all(q: &mut TxQueue, out: &mut Vec<Mbuf>, lens: &mut Vec<u32>, mut sent: impl FnMut(usize, usize), drops: &mut DpDrops, [full, rejected]: [DpDrop; 2]) {
    if out.is_empty() {
        return;
    }
    lens.clear();
    lens.extend(out.iter().map(|m| m.pkt_len() as u32));
    let mut at = 0;
    let mut idle = 0;
    while !out.is_empty() && idle < 8 {
        let refused = q.rejected();
        let n = q.tx_burst(out);
        for (i, len) in lens[at..at + n].iter().enumerate() {
            sent(at + i, *len as usize);
        }
        at += n;
        if q.rejected() != refused {
            // tx_burst freed the packet after the ones it sent.
            drops.add(rejected);
            at += 1;
            idle = 0;
        } else if n == 0 {
            idle += 1;
            std::hint::spin_loop();
        } else {
            idle = 0;
        }
    }
    drops.add_n(full, out.len() as u64);
    out.clear();
}

/// Length of the IP packet at the start of `b` per its own header, if the
/// header is sane and the packet fits in `b`.
#[inline]
fn inner_ip_len(b: &[u8]) -> Option<usize> {
    let len = match b.first()? >> 4 {
        4 if b.len() >= 20 => {
            let ihl = (b[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([b[2], b[3]]) as usize;
            if ihl < 20 || total < ihl {
                return None;
            }
            total
        }
        6 if b.len() >= 40 => 40 + u16::from_be_bytes([b[4], b[5]]) as usize,
        _ => return None,
    };
    (len <= b.len()).then_some(len)
}

/// Parses a LAN frame enough to route it: Ethernet, IP version and header
/// sanity, destination. Returns the peer index, its bundle index and the IP
/// packet's length (the frame may carry Ethernet padding after it).
#[inline]
fn route(m: &Mbuf, routes: &RouteTable, peer_bundle: &[usize]) -> Result<(usize, usize, usize), DpDrop> {
    if !m.is_contiguous() {
        return Err(DpDrop::Multiseg);
    }
    let d = m.data();
    if d.len() < ETH + 20 {
        return Err(DpDrop::NotIp);
    }
    let ethertype = u16::from_be_bytes([d[12], d[13]]);
    let l3 = &d[ETH..];
    let (peer, len) = match (ethertype, l3[0] >> 4) {
        (0x0800, 4) => {
            let ihl = (l3[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([l3[2], l3[3]]) as usize;
            if ihl < 20 || total < ihl || total > l3.len() {
                return Err(DpDrop::BadInnerIp);
            }
            // The header checksum, as a router must (RFC 1812 5.2.2): the
            // NIC's verdict where it checks, else summed here. Not trusted
            // for a packet that is itself a tunnel (IP in IP, IPv6 in IP,
            // GRE): an X710 parses those, and its verdict is then about
            // the inner header. `Valid` (the NIC checked the packet some
            // other way) says nothing of this header: summed too.
            let verdict = match l3[9] {
                4 | 41 | 47 => RxCksum::Unknown,
                _ => m.rx_ip_cksum(),
            };
            let sum_ok = match verdict {
                RxCksum::Good => true,
                RxCksum::Bad => false,
                RxCksum::Unknown | RxCksum::Valid => ipv4_header_sums(&l3[..ihl]),
            };
            if !sum_ok {
                return Err(DpDrop::BadInnerIp);
            }
            // One branch on the first octets; the precise test is cold.
            let (s0, d0) = (l3[12], l3[16]);
            if (s0 == 0 || s0 == 127 || s0 == 169 || s0 >= 224 || d0 == 0 || d0 == 127 || d0 == 169 || d0 >= 224) && link_scope_v4(l3) {
                return Err(DpDrop::NotForwarded);
            }
            (routes.lookup_v4(std::net::Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19])), total)
        }
        (0x86dd, 6) => {
            if l3.len() < 40 {
                return Err(DpDrop::BadInnerIp);
            }
            let total = u16::from_be_bytes([l3[4], l3[5]]) as usize + 40;
            if total > l3.len() {
                return Err(DpDrop::BadInnerIp);
            }
            let (s0, d0) = (l3[8], l3[24]);
            if (s0 == 0 || s0 == 0xfe || d0 == 0 || d0 >= 0xfe) && link_scope_v6(l3) {
                return Err(DpDrop::NotForwarded);
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&l3[24..40]);
            (routes.lookup_v6(std::net::Ipv6Addr::from(a)), total)
        }
        _ => return Err(DpDrop::NotIp),
    };
    let peer = peer.ok_or(DpDrop::NoRoute)? as usize;
    Ok((peer, peer_bundle.get(peer).copied().ok_or(DpDrop::NoRoute)?, len))
}

/// The packets of a bundle burst lost with frames whose seal failed
/// (`send_bundle`), each counted once, whole or in part in one lost frame
/// or two.
#[derive(Debug, Default)]
struct Unsealed {
    count: usize,
    /// Past the last lost frame's packets (a packet it began included).
    end: usize,
}

impl Unsealed {
    /// A frame whose seal failed held the packets from `first` (the
    /// packer's cursor before it) to `consumed` (after it), and the start
    /// of the next one when it `continues`.
    fn frame(&mut self, first: usize, consumed: usize, continues: bool) {
        let end = consumed + usize::from(continues);
        self.count += end.saturating_sub(first.max(self.end));
        self.end = end;
    }

    /// Those of the `packed` packets the packer finished: a packet a lost
    /// frame began and the burst left unfinished (no mbuf for the next
    /// frame) is dropped with the rest of the burst, not here.
    fn of_packed(&self, packed: usize) -> usize {
        self.count - self.end.saturating_sub(packed).min(self.count)
    }
}

/// Tunnel `t`'s inbound SA pair (its replay window) in a bundle's engine.
fn inbound_mut(engine: &mut Engine, t: usize) -> Option<&mut InboundSaPair> {
    match engine {
        Engine::Bundle { rx, .. } => rx.inbound_mut(t),
        Engine::Plain(p) => p.inbound.get_mut(t),
    }
}

/// Why a LAN frame is not routed, by its destination MAC: another host's
/// unicast MAC (`not_our_mac`: the port is promiscuous, and a switch
/// floods frames for hosts it has not learned), or a group MAC
/// (`not_forwarded`: broadcast and multicast frames the gateway's
/// responder and kernel tap did not take: a router does not forward
/// them, RFC 1812 section 5.3.4; braid routes no multicast). `None`: the
/// port's own MAC, or shorter than an Ethernet header (`route` drops
/// it, `not_ip`).
#[inline(always)]
fn lan_mac_drop(d: &[u8], mac: &[u8; 6]) -> Option<DpDrop> {
    let dst = d.first_chunk::<6>().filter(|_| d.len() >= ETH)?;
    if dst == mac {
        return None;
    }
    Some(if dst[0] & 1 != 0 { DpDrop::NotForwarded } else { DpDrop::NotOurMac })
}

/// An IPv4 packet of link scope, or a martian, which a router does not
/// forward (RFC 1812 section 5.3.7): from 0.0.0.0/8 (this host, RFC 1122),
/// loopback, 169.254.0.0/16 (link-local, RFC 3927 section 7), a multicast
/// address or the limited broadcast; to 0.0.0.0/8, loopback,
/// 169.254.0.0/16, 224.0.0.0/24 (link-local multicast, RFC 5771) or the
/// limited broadcast (RFC 1812 section 5.3.5.1). 240.0.0.0/4 otherwise
/// passes: some networks use it inside (container pod ranges). `l3` is a
/// whole header.
#[cold]
fn link_scope_v4(l3: &[u8]) -> bool {
    let (src, dst) = (&l3[12..16], &l3[16..20]);
    let link_local = |a: &[u8]| a[..2] == [169, 254];
    let this_or_loopback = |a: &[u8]| a[0] == 0 || a[0] == 127;
    let multicast = |a: &[u8]| (224..240).contains(&a[0]);
    this_or_loopback(src) || link_local(src) || multicast(src) || src == [255; 4] || this_or_loopback(dst) || link_local(dst) || dst[..3] == [224, 0, 0] || dst == [255; 4]
}

/// An IPv6 packet of link scope, which a router does not forward (RFC
/// 4291 section 2.5.6, RFC 4443 section 2.4): from the unspecified,
/// loopback or a link-local address; to loopback, a link-local address or
/// an interface- or link-local multicast group (ff00::/16 to ff02::/16).
#[cold]
fn link_scope_v6(l3: &[u8]) -> bool {
    let (src, dst) = (&l3[8..24], &l3[24..40]);
    let link_local = |a: &[u8]| a[0] == 0xfe && a[1] & 0xc0 == 0x80;
    let unspecified_or_loopback = |a: &[u8]| a[..15] == [0; 15] && a[15] <= 1;
    let small_group = dst[0] == 0xff && dst[1] & 0x0f <= 2;
    unspecified_or_loopback(src) || link_local(src) || (dst[..15] == [0; 15] && dst[15] == 1) || link_local(dst) || small_group
}

/// An IPv4 header's checksum verifies. An options-free header (20 bytes)
/// is summed as ten native 16-bit words (a ones'-complement sum in the
/// other byte order is the byte swap of it, and all ones is all ones in
/// both): under 2^20, two folds make it 16 bits. Through the general sum
/// it cost 13-15 cycles a 64-byte packet.
#[inline(always)]
fn ipv4_header_sums(h: &[u8]) -> bool {
    let Some(w) = h.first_chunk::<20>().filter(|_| h.len() == 20) else {
        return braid_tunnel::wire::checksum::sum(h) == 0xffff;
    };
    let word = |i: usize| u32::from(u16::from_ne_bytes([w[2 * i], w[2 * i + 1]]));
    let mut s = ((word(0) + word(1)) + (word(2) + word(3)))
        + ((word(4) + word(5)) + (word(6) + word(7)))
        + (word(8) + word(9));
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s == 0xffff
}

/// Where the ESP packet of a WAN frame is, and who sent it.
#[derive(Debug, Clone, Copy)]
struct OuterEsp {
    spi: u32,
    /// Local UDP port it was sent to.
    dst_port: u16,
    /// Outer IPv6 (else IPv4). The outer source address and UDP port (the
    /// peer as seen here, through whatever NAT is in front of it) are read
    /// from the frame when needed (`follow_remote`).
    v6: bool,
    /// Offset and length of the ESP packet in the frame.
    esp_at: usize,
    esp_len: usize,
}

/// Finds the ESP packet in a WAN frame; `None`: an RFC 3948 NAT-keepalive.
/// Link padding after the IP packet is ignored.
#[inline]
fn outer_esp(d: &[u8], verify_csum: bool, tunnel_ports: &[u64; 1024]) -> Result<Option<OuterEsp>, DpDrop> {
    if d.len() < OUTER_LEN || !is_ipv4(d) {
        if d.len() >= ETH && d[12..14] == [0x86, 0xdd] {
            return outer_esp_v6(d, tunnel_ports);
        }
        return Err(DpDrop::NotTunnel);
    }
    let ip = &d[IP_AT..];
    let ihl = (ip[0] & 0x0f) as usize * 4;
    if ip[0] >> 4 != 4 || ihl < 20 {
        return Err(DpDrop::BadOuterIp);
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if total < ihl + 8 || total > ip.len() {
        return Err(DpDrop::BadOuterIp);
    }
    if verify_csum && braid_tunnel::wire::checksum::sum(&ip[..ihl]) != 0xffff {
        return Err(DpDrop::BadOuterIp);
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        // Fragments go to the reassembly before this.
        return Err(DpDrop::BadOuterIp);
    }
    if ip[9] != 17 {
        return Err(DpDrop::NotTunnel);
    }
    esp_in_udp(&ip[ihl..total], IP_AT + ihl, false, tunnel_ports, |_| Ok(()))
}

/// The UDP datagram `udp` (its header at `udp_at` in the frame) if it is
/// to one of our tunnels' ports: its ESP packet, or `None` for a
/// NAT-keepalive. `checked(udp_len)` checks what the IP version asks
/// (IPv6: the UDP checksum) before the payload is looked at.
#[inline(always)]
fn esp_in_udp(
    udp: &[u8],
    udp_at: usize,
    v6: bool,
    tunnel_ports: &[u64; 1024],
    checked: impl FnOnce(usize) -> Result<(), DpDrop>,
) -> Result<Option<OuterEsp>, DpDrop> {
    if udp.len() < 8 {
        return Err(DpDrop::NotTunnel);
    }
    let ulen = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if ulen < 8 || ulen > udp.len() {
        return Err(DpDrop::NotTunnel);
    }
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    if tunnel_ports[dst_port as usize / 64] & (1 << (dst_port % 64)) == 0 {
        return Err(DpDrop::NotTunnel);
    }
    checked(ulen)?;
    match classify(&udp[8..ulen]) {
        Ok(EncapKind::Esp(e)) => Ok(Some(OuterEsp {
            spi: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            dst_port,
            v6,
            esp_at: udp_at + 8,
            esp_len: ulen - 8,
        })),
        Ok(EncapKind::Keepalive) => Ok(None),
        Ok(EncapKind::NonEsp(_)) => Err(DpDrop::NonEsp),
        Err(_) => Err(DpDrop::NotTunnel),
    }
}

/// [`outer_esp`] over IPv6: no extension headers (a fragment header is
/// `outer_ipv6_fragment`), the UDP checksum verified in software (zero is
/// refused, RFC 8200 section 8.1). Cold, out of the IPv4 path's way: the
/// IPv4 WAN->LAN path measured 1-2 cycles per 64-byte inner packet
/// slower with it laid out in line.
#[cold]
#[inline(never)]
fn outer_esp_v6(d: &[u8], tunnel_ports: &[u64; 1024]) -> Result<Option<OuterEsp>, DpDrop> {
    let ip = &d[IP_AT..];
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Err(DpDrop::BadOuterIp);
    }
    let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if 40 + plen > ip.len() {
        return Err(DpDrop::BadOuterIp);
    }
    match ip[6] {
        17 => {}
        44 => return Err(DpDrop::OuterFragmentV6),
        _ => return Err(DpDrop::NotTunnel),
    }
    let udp = &ip[40..40 + plen];
    let (src, dst): ([u8; 16], [u8; 16]) = (ip[8..24].try_into().expect("16 bytes"), ip[24..40].try_into().expect("16 bytes"));
    esp_in_udp(udp, UDP_AT_V6, true, tunnel_ports, |ulen| {
        use braid_tunnel::wire::checksum;
        let pseudo = checksum::pseudo_header_v6(src.into(), dst.into(), 17, ulen as u32);
        if udp[6..8] == [0, 0] || checksum::combine(&[pseudo, checksum::sum(&udp[..ulen])]) != 0xffff {
            return Err(DpDrop::BadOuterUdp);
        }
        Ok(())
    })
}

/// A tunnel's local UDP port and IP version in one word.
#[inline(always)]
fn local_key(port: u16, v6: bool) -> u32 {
    u32::from(port) | (u32::from(v6) << 16)
}

/// The peer's newest authenticated packet came from the outer source of
/// frame `d` (its UDP header at `udp_at`): the tunnel sends there from now
/// on (a NAT in front of the peer rebound). Returns that source if it
/// moved the tunnel.
#[inline]
fn follow_remote(outer: &mut OuterTemplate, d: &[u8], udp_at: usize, tc: &mut TunnelCounters) -> Option<SocketAddr> {
    // `receive_esp` checked the IP version.
    if outer.is_source_of(d, udp_at) {
        return None;
    }
    let port = u16::from_be_bytes([d[udp_at], d[udp_at + 1]]);
    let src = if outer.is_v6() {
        let ip: [u8; 16] = d[IP_AT + 8..IP_AT + 24].try_into().expect("16 bytes");
        SocketAddr::new(ip.into(), port)
    } else {
        let ip: [u8; 4] = d[IP_AT + 12..IP_AT + 16].try_into().expect("4 bytes");
        SocketAddr::new(ip.into(), port)
    };
    outer.set_remote(src);
    tc.remote_changes += 1;
    Some(src)
}

/// Whether an Ethernet frame carries IPv4.
#[inline]
fn is_ipv4(d: &[u8]) -> bool {
    d.len() >= ETH && u16::from_be_bytes([d[12], d[13]]) == 0x0800
}

/// IPv6's minimum link MTU (RFC 8200 section 5).
const IPV6_MIN_MTU: usize = 1280;

/// Plain mode's size limits for a bundle whose smallest WAN MTU is
/// `min_mtu`, with tunnels over IPv4 (`v4`) and/or IPv6 (`v6`): the outer
/// IP and UDP header bytes of its longest header, and the largest outer
/// IP packet with that header that every tunnel carries: the MTU, or
/// with `fragmentation` what the peer's reassembly takes (DPDK's 8
/// fragments) on each: IPv4 within its 64 KiB total length, IPv6's
/// fragments carrying less each (a 40-byte header and a Fragment header)
/// within 64 KiB of payload.
fn plain_outer_limits(min_mtu: usize, fragmentation: bool, v4: bool, v6: bool) -> (usize, usize) {
    let outer_ip_udp = if v6 { OUTER_LEN_V6 - ETH } else { OUTER_IP_UDP };
    if !fragmentation {
        return (outer_ip_udp, min_mtu);
    }
    let v4_payload = (MAX_OUTER_FRAGMENTS * fragment_chunk(min_mtu)).min(usize::from(u16::MAX) - 20);
    let v6_payload = (MAX_OUTER_FRAGMENTS * fragment_chunk_v6(min_mtu)).min(usize::from(u16::MAX));
    let payload = match (v4, v6) {
        (true, true) => v4_payload.min(v6_payload),
        (_, true) => v6_payload,
        _ => v4_payload,
    };
    // The UDP header is in the fragmented payload.
    (outer_ip_udp, outer_ip_udp - 8 + payload)
}

/// The identification of the `k`-th packet worker `w` of `workers` cuts
/// into fragments, in a space of `bits` bits (IPv4's 16, IPv6's 32):
/// `w`, `w + workers`, `w + 2 workers`... wrapping within the worker's own
/// share, so that two workers' identifications never meet at the peer
/// whatever their number (a counter wrapping at 2^bits would, unless the
/// number of workers divides it).
fn frag_ident(w: u16, workers: u16, k: u32, bits: u32) -> u32 {
    let n = u64::from(workers.max(1));
    let share = (1u64 << bits) / n;
    (u64::from(w) + n * (u64::from(k) % share)) as u32
}

/// Whether WAN frame `d` is an outer IP fragment: IPv4 with MF or an
/// offset, or IPv6 with a Fragment header first.
#[inline(always)]
fn is_outer_fragment(d: &[u8]) -> bool {
    // IPv4's flags and offset first, where an IPv6 frame has its next
    // header and hop limit: the IPv4 path pays one test, as before IPv6.
    let Some(&[b0, b1]) = d.get(IP_AT + 6..IP_AT + 8) else { return false };
    if u16::from_be_bytes([b0, b1]) & 0x3fff == 0 {
        return false;
    }
    match (d[12], d[13]) {
        (0x08, 0x00) => true,
        (0x86, 0xdd) => b0 == 44,
        _ => false,
    }
}

/// An outer fragment ([`is_outer_fragment`]) of UDP: IPv4's protocol, or
/// the next header of IPv6's Fragment header (right after the fixed one).
fn is_udp_fragment(d: &[u8]) -> bool {
    let at = if is_ipv4(d) { IP_AT + 9 } else { IP_AT + 40 };
    d.get(at) == Some(&17)
}

/// The IP length (40 + payload length) of an outer IPv6 fragment whose
/// header and Fragment header are sane: version 6, both within the frame,
/// a non-last fragment's payload a multiple of 8 bytes, and offset plus
/// payload within 65,535 bytes (RFC 8200 section 4.5; the reserved
/// fields are ignored, as it says). Else `outer_ipv6_fragment`.
fn outer_fragment_v6_len(d: &[u8]) -> Result<usize, DpDrop> {
    let ip = d.get(IP_AT..).ok_or(DpDrop::OuterFragmentV6)?;
    if ip.len() < 48 || ip[0] >> 4 != 6 || ip[6] != 44 {
        return Err(DpDrop::OuterFragmentV6);
    }
    let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    let off = u16::from_be_bytes([ip[42], ip[43]]);
    let (offset, more) = (usize::from(off & !7), off & 1 != 0);
    if plen < 8 || 40 + plen > ip.len() || (more && !(plen - 8).is_multiple_of(8)) || offset + plen - 8 > 65535 {
        return Err(DpDrop::OuterFragmentV6);
    }
    Ok(40 + plen)
}

/// An IPv6 frame without its Fragment header (right after the IPv6
/// header): the Ethernet and IPv6 headers move 8 bytes up, the next
/// header and payload length become the fragment's.
fn strip_fragment_header(mut m: Mbuf) -> Option<Mbuf> {
    let d = m.data_mut();
    let next = d[IP_AT + 40];
    let plen = u16::from_be_bytes([d[IP_AT + 4], d[IP_AT + 5]]) - 8;
    d[IP_AT + 4..IP_AT + 6].copy_from_slice(&plen.to_be_bytes());
    d[IP_AT + 6] = next;
    d.copy_within(..IP_AT + 40, 8);
    m.adj(8);
    Some(m)
}

/// The IP length of an outer IPv4 header that is sane (version, header
/// length, total length within the frame, checksum).
fn outer_ip_len(d: &[u8]) -> Result<usize, DpDrop> {
    let ip = d.get(IP_AT..).ok_or(DpDrop::BadOuterIp)?;
    let ihl = (*ip.first().ok_or(DpDrop::BadOuterIp)? & 0x0f) as usize * 4;
    if ip.len() < 20 || ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return Err(DpDrop::BadOuterIp);
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if total < ihl || total > ip.len() || braid_tunnel::wire::checksum::sum(&ip[..ihl]) != 0xffff {
        return Err(DpDrop::BadOuterIp);
    }
    Ok(total)
}

/// A frame built with `room` bytes for outer headers before its tunnel was
/// known: the front that `outer`'s shorter headers leave unused goes (an
/// IPv4 tunnel of a bundle that also has IPv6 ones).
#[inline(always)]
fn fit_outer(m: &mut Mbuf, room: usize, outer: &OuterTemplate) {
    let hl = outer.header_len();
    if hl < room {
        m.adj(room - hl);
    }
}

/// Writes a tunnel's outer headers in front of an ESP packet of `esp_len`
/// bytes and asks the port for the checksums it offers: IPv4's header
/// checksum, or over IPv6 the UDP checksum when the packet leaves `whole`
/// (one cut into outer fragments has its checksum computed here).
#[inline]
fn stamp_outer(m: &mut Mbuf, outer: &OuterTemplate, esp_len: usize, ident: &mut u16, wan: &L2, whole: bool) {
    if outer.is_v6() {
        return stamp_outer_v6(m, outer, esp_len, wan.udp_csum_offload && whole);
    }
    *ident = ident.wrapping_add(1);
    let offload = wan.ip_csum_offload;
    outer.write(m.data_mut(), esp_len, *ident, offload);
    if offload {
        m.set_tx_offload(TxOffload { flags: TX_IPV4 | TX_IP_CKSUM, l2_len: 14, l3_len: 20, ..Default::default() });
    }
}

/// [`stamp_outer`] over IPv6: the UDP checksum left to the port when it
/// computes it (`offload`: the pseudo-header sum in its place), else
/// computed here. Out of line: the IPv4 path stays as it was.
#[inline(never)]
fn stamp_outer_v6(m: &mut Mbuf, outer: &OuterTemplate, esp_len: usize, offload: bool) {
    if offload {
        outer.write_v6_offload(m.data_mut(), esp_len);
        // l4_len: the UDP header. Intel PMDs assume it; net_tap before
        // DPDK 22.11.4 copies only l2 + l3 + l4 bytes of headers to fix
        // the checksum in, and with 0 would send the seed.
        m.set_tx_offload(TxOffload { flags: TX_IPV6 | TX_UDP_CKSUM, l2_len: 14, l3_len: 40, l4_len: 8, ..Default::default() });
    } else {
        outer.write(m.data_mut(), esp_len, 0, false);
    }
}

/// A new LAN frame holding `inner`, or `None` when the pool is empty or the
/// packet does not fit an mbuf (of `pool`, or of `jumbo` if there is one).
#[inline(always)]
fn lan_frame(stash: &mut MbufStash, pool: &Mempool, jumbo: Option<&Mempool>, lan: &L2, inner: &[u8]) -> Option<Mbuf> {
    let mut m = stash.get(pool)?;
    // The EtherType from the source: read back from `buf` right after the
    // copy's vector stores, the IP version waited on them (~4 cycles a
    // packet in bundle mode's delivery).
    let et = ether_type(inner);
    match m.append(ETH + inner.len()) {
        Some(buf) => {
            braid_tunnel::wire::copy_bytes(&mut buf[ETH..], inner);
            write_eth_type(buf, lan, et);
        }
        // Too big for the pool's mbufs (`m` goes back to it).
        None => return jumbo_frame(jumbo?, lan, inner),
    }
    Some(m)
}

/// [`lan_frame`] in an mbuf of the jumbo pool.
#[cold]
fn jumbo_frame(jumbo: &Mempool, lan: &L2, inner: &[u8]) -> Option<Mbuf> {
    let mut m = Mbuf::alloc(jumbo)?;
    let buf = m.append(ETH + inner.len())?;
    buf[ETH..].copy_from_slice(inner);
    write_eth(buf, lan);
    Some(m)
}

/// ICMP "fragmentation needed" (RFC 792, RFC 1191) for the IPv4 packet
/// with DF set in frame `m`, or ICMPv6 "packet too big" (RFC 4443 section
/// 3.2) for an IPv6 one, from `src` / `src6` with `mtu`, built in `m`'s
/// own buffer; `None` when no error is owed: IPv4 without DF, about an
/// ICMP error, a later fragment, from a source that is not one host or
/// (IPv4) to a multicast or broadcast group (RFC 1812 section 4.3.2.7,
/// RFC 4443 section 2.4), or no address to send from.
fn too_big_error(m: Mbuf, src: [u8; 4], src6: [u8; 16], mtu: u16, lan: &L2) -> Option<Mbuf> {
    icmp_error(m, src, src6, IcmpError::TooBig(mtu), lan)
}

/// The ICMP errors the gateway sends about a packet.
#[derive(Debug, Clone, Copy)]
pub(super) enum IcmpError {
    /// "Fragmentation needed" (IPv4 with DF only) / "packet too big",
    /// with the next hop's MTU.
    TooBig(u16),
    /// "Host unreachable" / "address unreachable": the LAN host did not
    /// answer address resolution (RFC 1812 section 4.3.3.1, RFC 4861
    /// section 7.2.2).
    Unreachable,
}

/// ICMP error `kind` about the packet in frame `m`, as [`too_big_error`]
/// (the same refusals: about an ICMP error, a later fragment, from a
/// source that is not one host, an IPv4 group destination; no address).
fn icmp_error(m: Mbuf, src: [u8; 4], src6: [u8; 16], kind: IcmpError, lan: &L2) -> Option<Mbuf> {
    if m.data().get(12..14) == Some(&[0x86, 0xdd]) {
        icmpv6_error(m, src6, kind, lan)
    } else {
        icmpv4_error(m, src, kind, lan)
    }
}

fn icmpv4_error(mut m: Mbuf, src: [u8; 4], kind: IcmpError, lan: &L2) -> Option<Mbuf> {
    let d = m.data();
    let ip = d.get(ETH..).filter(|ip| ip.len() >= 20)?;
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let icmp_error = ip[9] == 1 && ip.get(ihl).is_some_and(|&t| t != 0 && t != 8);
    let later_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0;
    // Multicast or the limited broadcast, either way (240.0.0.0/4 is
    // unicast here: some networks use it inside).
    let group = |a: &[u8]| (224..240).contains(&a[0]) || a == [255; 4];
    let no_df = matches!(kind, IcmpError::TooBig(_)) && ip[6] & 0x40 == 0;
    if u16::from_be_bytes([d[12], d[13]]) != 0x0800 || no_df || icmp_error || later_fragment || ip[12] == 0 || group(&ip[12..16]) || group(&ip[16..20]) {
        return None;
    }
    if src == [0; 4] {
        // No IPv4 address to send from (IPv6 tunnels, a LAN port
        // without ipv4): no error rather than one from 0.0.0.0.
        return None;
    }
    // The offending header and the first 8 octets of its payload.
    let quote_len = (ihl + 8).min(ip.len());
    let mut quote = [0u8; 60 + 8];
    quote[..quote_len].copy_from_slice(&ip[..quote_len]);
    let total = 20 + 8 + quote_len;
    let extra = m.data_len() - ETH - total;
    if !m.trim(extra) {
        return None;
    }
    let f = m.data_mut();
    let orig_src = [quote[12], quote[13], quote[14], quote[15]];
    let ip = &mut f[ETH..ETH + 20];
    ip.copy_from_slice(&[0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&orig_src);
    let c = !braid_tunnel::wire::checksum::sum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut f[ETH + 20..];
    icmp[..8].copy_from_slice(&match kind {
        IcmpError::TooBig(mtu) => [3, 4, 0, 0, 0, 0, (mtu >> 8) as u8, mtu as u8],
        IcmpError::Unreachable => [3, 1, 0, 0, 0, 0, 0, 0],
    });
    icmp[8..].copy_from_slice(&quote[..quote_len]);
    let c = !braid_tunnel::wire::checksum::sum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    write_eth(f, lan);
    Some(m)
}

/// ICMPv6 Packet Too Big (RFC 4443 section 3.2: IPv6 routers do not
/// fragment, so without it the sender would never learn the path's MTU)
/// or Destination Unreachable, code 3 (section 3.1), for the IPv6 packet
/// in `m`, from `src`. As much of the packet as fits a 1280-byte error.
/// Never about an ICMPv6 error, nor to an unspecified or multicast source
/// (section 2.4).
fn icmpv6_error(mut m: Mbuf, src: [u8; 16], kind: IcmpError, lan: &L2) -> Option<Mbuf> {
    const MIN_MTU: usize = IPV6_MIN_MTU;
    let ip = m.data().get(ETH..)?;
    if ip.len() < 40 || src == [0; 16] {
        return None;
    }
    let orig_src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
    let icmp_error = ip[6] == 58 && ip.get(40).is_some_and(|&t| t < 128);
    if orig_src == [0; 16] || orig_src[0] == 0xff || icmp_error {
        return None;
    }
    let quote_len = ip.len().min(MIN_MTU - 48);
    let mut quote = [0u8; MIN_MTU - 48];
    quote[..quote_len].copy_from_slice(&ip[..quote_len]);
    // The error is shorter than the packet, or (a packet under 1232
    // bytes, too big for a tunnel on a 1280-byte WAN) 48 bytes longer.
    let want = ETH + 48 + quote_len;
    let fits = match m.data_len().checked_sub(want) {
        Some(extra) => m.trim(extra),
        None => m.append(want - m.data_len()).is_some(),
    };
    if !fits {
        return None;
    }
    let f = m.data_mut();
    let ip = &mut f[ETH..ETH + 40];
    ip.fill(0);
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&((8 + quote_len) as u16).to_be_bytes());
    ip[6] = 58;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[24..40].copy_from_slice(&orig_src);
    let icmp = &mut f[ETH + 40..];
    icmp[..8].copy_from_slice(&match kind {
        // Never below IPv6's minimum, which a sender would not go under
        // (RFC 8201 section 4): plain mode carries IPv6 packets up to it
        // in outer fragments.
        IcmpError::TooBig(mtu) => {
            let [a, b] = mtu.max(MIN_MTU as u16).to_be_bytes();
            [2, 0, 0, 0, 0, 0, a, b]
        }
        IcmpError::Unreachable => [1, 3, 0, 0, 0, 0, 0, 0],
    });
    icmp[8..].copy_from_slice(&quote[..quote_len]);
    let pseudo = braid_tunnel::wire::checksum::pseudo_header_v6(src.into(), orig_src.into(), 58, (8 + quote_len) as u32);
    let c = !braid_tunnel::wire::checksum::combine(&[pseudo, braid_tunnel::wire::checksum::sum(icmp)]);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    write_eth(f, lan);
    Some(m)
}

/// An Ethernet header to `lan`'s next hop before the IP packet at
/// `buf[ETH..]`.
#[inline]
fn write_eth(buf: &mut [u8], lan: &L2) {
    let et = ether_type(buf.get(ETH..).unwrap_or_default());
    write_eth_type(buf, lan, et);
}

/// The EtherType of an IP packet: by its version, IPv6 or else IPv4.
#[inline(always)]
fn ether_type(ip: &[u8]) -> u16 {
    if ip.first().map(|b| b >> 4) == Some(6) {
        0x86dd
    } else {
        0x0800
    }
}

#[inline(always)]
fn write_eth_type(buf: &mut [u8], lan: &L2, et: u16) {
    buf[0..6].copy_from_slice(&lan.next_hop_mac);
    buf[6..12].copy_from_slice(&lan.mac);
    buf[12..14].copy_from_slice(&et.to_be_bytes());
}

#[cfg(test)]
mod tests {
    /// Lost frames' packets, each once: alone, across two lost frames,
    /// a sealed frame's packet finished in a lost one, and a packet a lost
    /// frame began that the burst never finished (it is the rest of the
    /// burst's drop, not also a lost frame's).
    #[test]
    fn unsealed_frames_count_each_packet_once() {
        use crate::worker::Unsealed;
        let mut u = Unsealed::default();
        u.frame(0, 3, false); // packets 0-2 whole
        assert_eq!(u.of_packed(3), 3);
        // Packet 3 cut across two lost frames, then packet 4 whole in the second.
        u.frame(3, 3, true);
        u.frame(3, 5, false);
        assert_eq!(u.of_packed(5), 5);
        // Sealed frames carry 5-6; a lost one finishes 7 and begins 8.
        u.frame(7, 8, true);
        assert_eq!(u.of_packed(10), 7, "7 and 8 (finished later in a sealed frame)");
        // The burst stops after that lost frame (no mbuf): 8 was never
        // finished, `packed` is 8.
        assert_eq!(u.of_packed(8), 6, "8 is the stopped burst's");
        assert_eq!(Unsealed::default().of_packed(4), 0);
    }

    /// The 20-byte fast path agrees with the general sum on every header
    /// (random ones, ones with a right checksum, and edge words).
    #[test]
    fn ipv4_header_sums_matches_the_general_sum() {
        use crate::worker::ipv4_header_sums;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut right = 0;
        for round in 0..200_000 {
            let mut h = [0u8; 24];
            for b in h.iter_mut() {
                *b = match round % 4 {
                    0 => next() as u8,
                    1 => 0xff,
                    2 => [0, 0xff][(next() & 1) as usize],
                    _ => 0,
                };
            }
            if round % 2 == 0 {
                h[10] = 0;
                h[11] = 0;
                let c = !braid_tunnel::wire::checksum::sum(&h[..20]);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let want = braid_tunnel::wire::checksum::sum(&h[..20]) == 0xffff;
            right += want as u32;
            assert_eq!(ipv4_header_sums(&h[..20]), want, "{:02x?}", &h[..20]);
            // With options (24 bytes): the general sum, right and wrong.
            h[10..12].copy_from_slice(&[0, 0]);
            let c = !braid_tunnel::wire::checksum::sum(&h[..24]);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            assert!(ipv4_header_sums(&h[..24]));
            h[22] ^= 0x10;
            assert!(!ipv4_header_sums(&h[..24]));
        }
        assert!(right > 90_000, "{right} right checksums");
    }

    use super::{frag_ident, inner_ip_len, plain_outer_limits};

    #[test]
    fn plain_mode_limits_with_and_without_outer_fragments() {
        // Whole packets: the MTU, with the longest header.
        assert_eq!(plain_outer_limits(1500, false, true, false), (28, 1500));
        assert_eq!(plain_outer_limits(1500, false, true, true), (48, 1500));
        // 8 fragments of a 1500-byte MTU: IPv4 1480 bytes each, IPv6 1448
        // (a 40-byte header and an 8-byte Fragment header, rounded down to
        // a multiple of 8); a bundle of both takes the smaller.
        assert_eq!(plain_outer_limits(1500, true, true, false), (28, 20 + 8 * 1480));
        assert_eq!(plain_outer_limits(1500, true, false, true), (48, 40 + 8 * 1448));
        assert_eq!(plain_outer_limits(1500, true, true, true), (48, 40 + 8 * 1448));
        // Jumbo MTUs: IPv4's total length and IPv6's payload length cap them.
        assert_eq!(plain_outer_limits(9000, true, true, false), (28, 65535));
        assert_eq!(plain_outer_limits(9000, true, false, true), (48, 40 + 65535));
        assert_eq!(plain_outer_limits(9000, true, true, true), (48, 40 + 65515));
    }

    #[test]
    fn fragment_identifications_of_workers_never_meet() {
        // Three workers (3 does not divide 2^16): each one's IPv4 ids stay
        // in its own residue class however far its count goes, past the
        // wrap.
        for w in 0..3u16 {
            for k in (0..200_000u32).step_by(7) {
                let id = frag_ident(w, 3, k, 16);
                assert!(id < 65536 && id % 3 == u32::from(w), "worker {w}, packet {k}: {id}");
            }
            assert_eq!(frag_ident(w, 3, 21845, 16), u32::from(w), "wraps within the share");
        }
        assert_eq!((frag_ident(0, 1, 65536, 16), frag_ident(0, 1, 65537, 16)), (0, 1));
        assert_eq!(frag_ident(1, 2, u32::MAX, 32), u32::MAX, "IPv6: the whole 32 bits");
        assert_eq!(frag_ident(2, 3, 5, 32), 17);
    }

    fn v4(ihl: u8, total: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x40 | ihl;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p
    }

    #[test]
    fn inner_ip_len_checks_the_header() {
        assert_eq!(inner_ip_len(&v4(5, 40, 44)), Some(40), "TFC padding after the packet");
        assert_eq!(inner_ip_len(&v4(5, 20, 20)), Some(20));
        assert_eq!(inner_ip_len(&v4(5, 19, 40)), None, "total below the header");
        assert_eq!(inner_ip_len(&v4(6, 20, 40)), None, "total below IHL * 4");
        assert_eq!(inner_ip_len(&v4(4, 40, 40)), None, "IHL below 5");
        assert_eq!(inner_ip_len(&v4(5, 41, 40)), None, "past the buffer");
        let mut v6 = vec![0u8; 48];
        v6[0] = 0x60;
        v6[5] = 8;
        assert_eq!(inner_ip_len(&v6), Some(48));
        v6[5] = 9;
        assert_eq!(inner_ip_len(&v6), None);
        assert_eq!(inner_ip_len(&[]), None);
    }
}
