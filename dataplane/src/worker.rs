//! One poll-mode worker: owns an RX and a TX queue on the LAN port and on
//! every WAN port, the tunnel engine state of every bundle, and its own
//! counters. Nothing here is shared writable state except the outbound SAs'
//! sequence counters, leased once per burst (see ARCHITECTURE.md).
//!
//! LAN -> WAN per burst: parse, route (longest prefix) to a peer's bundle,
//! then either pack the burst's packets for that bundle into frames
//! (bundle mode: several small packets per ESP packet, a big one cut across
//! several) or seal each packet in place (plain mode), pick a tunnel per ESP
//! packet, stamp the outer headers, TX.
//! WAN -> LAN per burst: classify ESP-in-UDP by SPI, decrypt in place,
//! anti-replay, re-order (bundle mode), write the LAN Ethernet header, TX.

use std::net::SocketAddrV4;
use std::sync::Arc;

use braid_dpdk::mbuf::{TxOffload, TX_IPV4, TX_IP_CKSUM};
use braid_dpdk::{Mbuf, Mempool, RxQueue, TxQueue, BURST};
use braid_tunnel::balancer::{Balancer, PathParams, Policy};
use braid_tunnel::liveness::LivenessConfig;
use braid_tunnel::reorder::{HoldConfig, ReorderConfig};
use braid_tunnel::bundle::pack::{InnerPacket, PackCursor};
use braid_tunnel::bundle::reassembly::ReassemblyConfig;
use braid_tunnel::engine::{esp_area_len, BundleRx, BundleRxConfig, BundleTx, BundleTxConfig};
use braid_tunnel::sa::{InboundSa, InboundSaPair, OutboundSaPair, SaParams, SeqBlock};
use braid_tunnel::wire::udp_encap::{classify, EncapKind};
use braid_tunnel::wire::{esp, FlowKey};
use braid_tunnel::{plain, Nanos};

use crate::counters::{DpDrop, TunnelCounters, WorkerCounters};
use crate::encap::{OuterTemplate, IP_AT, OUTER_LEN};
use crate::route::RouteTable;

pub use crate::config::BundleMode as Mode;

/// One tunnel as a worker needs it.
#[derive(Clone)]
pub struct TunnelSetup {
    /// Index of its WAN port in [`WorkerSetup::wans`].
    pub wan: usize,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// Shared with the other workers: sequence numbers are leased per burst.
    pub out: Arc<OutboundSaPair>,
    /// Inbound SA parameters; the worker that receives the tunnel owns its
    /// replay window.
    pub inbound: SaParams,
    /// Weight and rate for the balancer.
    pub params: PathParams,
}

/// One bundle as a worker needs it.
#[derive(Clone)]
pub struct BundleSetup {
    pub mode: Mode,
    pub policy: Policy,
    /// Largest bundle frame (ESP payload) that keeps outer packets within
    /// the WAN MTU.
    pub max_frame: usize,
    pub tunnels: Vec<TunnelSetup>,
}

/// A port's Ethernet identity.
#[derive(Debug, Clone, Copy)]
pub struct L2 {
    pub mac: [u8; 6],
    pub next_hop_mac: [u8; 6],
    /// The port computes IPv4 header checksums on TX.
    pub ip_csum_offload: bool,
    /// Largest IP packet the port's link carries.
    pub mtu: u16,
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
}

/// Plain mode state: its own balancer, sequence leases and inbound SAs.
struct Plain {
    balancer: Balancer,
    leases: Vec<Option<SeqBlock>>,
    inbound: Vec<InboundSaPair>,
}

enum Engine {
    Bundle { tx: Box<BundleTx>, rx: Box<BundleRx<Mbuf>> },
    Plain(Plain),
}

struct BundleState {
    engine: Engine,
    max_frame: usize,
    outer: Vec<OuterTemplate>,
    out_sas: Vec<Arc<OutboundSaPair>>,
    wan_of: Vec<usize>,
    local_port: Vec<u16>,
}

/// A poll-mode worker. Call [`Worker::poll`] in a loop on its lcore.
pub struct Worker {
    id: u16,
    pool: Arc<Mempool>,
    lan_rx: RxQueue,
    lan_tx: TxQueue,
    wan_rx: Vec<RxQueue>,
    wan_tx: Vec<TxQueue>,
    lan: L2,
    wans: Vec<L2>,
    bundles: Vec<BundleState>,
    routes: Arc<RouteTable>,
    peer_bundle: Vec<usize>,
    /// SPI -> (bundle, tunnel), sorted by SPI for a binary search.
    spis: Vec<(u32, u16, u16)>,
    counters: WorkerCounters,
    ident: u16,
    // Per-burst scratch, allocated once.
    rx_burst: Vec<Mbuf>,
    lan_out: Vec<Mbuf>,
    wan_out: Vec<Vec<Mbuf>>,
}

/// Ethernet header length.
const ETH: usize = 14;

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
        let mut spis = Vec::new();
        let mut bundles = Vec::new();
        for (b, bs) in setup.bundles.iter().enumerate() {
            let n = bs.tunnels.len();
            let mut inbound = Vec::with_capacity(n);
            for t in &bs.tunnels {
                let sa = InboundSa::new(&t.inbound, setup.replay_window).map_err(|e| format!("replay window: {e:?}"))?;
                inbound.push(InboundSaPair::new(sa));
            }
            let out_sas: Vec<_> = bs.tunnels.iter().map(|t| t.out.clone()).collect();
            let engine = match bs.mode {
                Mode::Bundle => {
                    let txc = BundleTxConfig {
                        stream: setup.id,
                        max_frame: bs.max_frame,
                        policy: bs.policy,
                        liveness: setup.probes,
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
                        reorder: ReorderConfig { hold: setup.hold, slots: 8192, per_bucket: 1024, ..base.reorder },
                        reassembly: ReassemblyConfig { slots: 512, ..base.reassembly },
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
                    Engine::Plain(Plain { balancer, leases: (0..n).map(|_| None).collect(), inbound })
                }
            };
            for (i, t) in bs.tunnels.iter().enumerate() {
                spis.push((t.inbound.spi.0, b as u16, i as u16));
                if t.wan >= setup.wans.len() {
                    return Err(format!("bundle {b} tunnel {i}: WAN port {} does not exist", t.wan));
                }
            }
            let outer = bs
                .tunnels
                .iter()
                .map(|t| OuterTemplate::new(setup.wans[t.wan].mac, setup.wans[t.wan].next_hop_mac, t.local, t.remote))
                .collect();
            bundles.push(BundleState {
                engine,
                max_frame: bs.max_frame,
                outer,
                out_sas,
                wan_of: bs.tunnels.iter().map(|t| t.wan).collect(),
                local_port: bs.tunnels.iter().map(|t| t.local.port()).collect(),
            });
        }
        spis.sort_unstable();
        let counters = WorkerCounters {
            tunnels: setup.bundles.iter().map(|b| vec![TunnelCounters::default(); b.tunnels.len()]).collect(),
            ..Default::default()
        };
        let (wan_rx, wan_tx): (Vec<_>, Vec<_>) = wan_queues.into_iter().unzip();
        let nwan = wan_tx.len();
        Ok(Worker {
            id: setup.id,
            pool,
            lan_rx,
            lan_tx,
            wan_rx,
            wan_tx,
            lan: setup.lan,
            wans: setup.wans,
            bundles,
            routes: setup.routes,
            peer_bundle: setup.peer_bundle,
            spis,
            counters,
            ident: 0,
            rx_burst: Vec::with_capacity(BURST),
            lan_out: Vec::with_capacity(4 * BURST),
            wan_out: (0..nwan).map(|_| Vec::with_capacity(4 * BURST)).collect(),
        })
    }

    /// This worker's index.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Counters so far (engine drops gathered from every bundle).
    pub fn counters(&self) -> WorkerCounters {
        let mut c = self.counters.clone();
        for b in &self.bundles {
            if let Engine::Bundle { tx, rx } = &b.engine {
                c.engine.merge(tx.counters());
                c.engine.merge(rx.counters());
            }
        }
        c
    }

    /// Receive-side engine counters of each bundle (frames, re-orderer
    /// held/released/late, reassembly), for reports and debugging.
    pub fn rx_debug(&self) -> Vec<String> {
        self.bundles
            .iter()
            .map(|b| match &b.engine {
                Engine::Bundle { rx, .. } => format!("{:?} stream0 {:?}", rx.stats(), rx.reorderer(0).map(|r| *r.counters())),
                Engine::Plain(_) => String::from("plain"),
            })
            .collect()
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
        let mut work = self.lan_to_wan(now);
        for w in 0..self.wan_rx.len() {
            work += self.wan_to_lan(w, now);
        }
        self.timers(now);
        self.flush_tx();
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
        let n = self.lan_rx.rx_burst(&mut self.rx_burst, BURST);
        if n == 0 {
            return 0;
        }
        // Route every packet: its bundle, or NONE when dropped.
        const NONE: u16 = u16::MAX;
        let mut dest = [NONE; BURST];
        for (i, m) in self.rx_burst.iter().enumerate() {
            self.counters.lan_rx.add(m.pkt_len());
            match route(m, &self.routes, &self.peer_bundle) {
                Ok(b) => dest[i] = b as u16,
                Err(r) => self.counters.drops.add(r),
            }
        }
        let burst = std::mem::take(&mut self.rx_burst);
        // Bundle mode packs from the burst's bytes (they are copied into
        // frames); plain mode seals each packet in its own mbuf.
        for b in 0..self.bundles.len() {
            if matches!(self.bundles[b].engine, Engine::Bundle { .. }) && dest[..n].contains(&(b as u16)) {
                self.send_bundle(b, &burst, &dest[..n], now);
            }
        }
        let mut burst = burst;
        for (i, m) in burst.drain(..).enumerate() {
            let b = dest[i];
            if b != NONE && matches!(self.bundles[b as usize].engine, Engine::Plain(_)) {
                self.send_plain(b as usize, m, now);
            }
        }
        self.rx_burst = burst;
        n
    }

    /// Bundle mode: pack the packets of this burst routed to bundle `b`
    /// into frames, seal each on the tunnel the balancer picks.
    fn send_bundle(&mut self, b: usize, burst: &[Mbuf], dest: &[u16], now: Nanos) {
        let mut inner = [InnerPacket { bytes: &[], flow_hash: 0 }; BURST];
        let mut k = 0;
        for (m, _) in burst.iter().zip(dest).filter(|(_, d)| **d == b as u16) {
            let l3 = &m.data()[ETH..];
            let hash = FlowKey::extract(l3).map(|f| f.hash() as u32).unwrap_or(0);
            inner[k] = InnerPacket { bytes: l3, flow_hash: hash };
            k += 1;
        }
        self.counters.encapsulated += k as u64;
        let st = &mut self.bundles[b];
        let Engine::Bundle { tx, .. } = &mut st.engine else { return };
        let area = esp_area_len(st.max_frame);
        let mut cursor = PackCursor::new();
        loop {
            let Some(mut m) = Mbuf::alloc(&self.pool) else {
                self.counters.drops.add_n(DpDrop::NoMbuf, (k - cursor.consumed().min(k)) as u64);
                return;
            };
            let Some(buf) = m.append(OUTER_LEN + area) else {
                self.counters.drops.add_n(DpDrop::TooBig, k as u64);
                return;
            };
            match tx.next_frame(&inner[..k], &mut cursor, &mut buf[OUTER_LEN..], now) {
                None => return, // all packed; `m` goes back to the pool
                Some(Err(_)) => self.counters.drops.add(DpDrop::Engine),
                Some(Ok(t)) => {
                    let wan = st.wan_of[t.tunnel];
                    m.trim(area - t.esp_len);
                    stamp_outer(&mut m, &st.outer[t.tunnel], t.esp_len, &mut self.ident, self.wans[wan].ip_csum_offload);
                    self.counters.tunnels[b][t.tunnel].tx.add(m.pkt_len());
                    self.wan_out[wan].push(m);
                }
            }
        }
    }

    /// Plain mode: seal one packet in place in its own mbuf: outer headers
    /// and the ESP header go in the headroom (reusing the Ethernet header's
    /// 14 bytes), pad, trailer and ICV in the tailroom.
    fn send_plain(&mut self, b: usize, mut m: Mbuf, now: Nanos) {
        let st = &mut self.bundles[b];
        let Engine::Plain(p) = &mut st.engine else { return };
        let inner_len = m.data_len() - ETH;
        let Some(t) = p.balancer.pick(inner_len, now) else {
            self.counters.drops.add(DpDrop::Engine);
            return;
        };
        // Outer IPv4 + UDP + ESP must fit the WAN MTU: braid does not
        // fragment outer packets.
        let wan = st.wan_of[t];
        if 20 + 8 + esp::packet_len(inner_len) > self.wans[wan].mtu as usize {
            self.counters.drops.add(DpDrop::TooBig);
            return;
        }
        if m.prepend(OUTER_LEN + esp::PAYLOAD_OFFSET - ETH).is_none() || m.append(esp::MAX_TAIL).is_none() {
            self.counters.drops.add(DpDrop::TooBig);
            return;
        }
        let sa = st.out_sas[t].active();
        if p.leases[t].as_ref().is_none_or(|l| l.is_empty() || l.spi() != sa.spi()) {
            match sa.reserve(BURST) {
                Ok(l) => p.leases[t] = Some(l),
                Err(_) => {
                    self.counters.drops.add(DpDrop::Engine);
                    return;
                }
            }
        }
        let lease = p.leases[t].as_mut().expect("leased above");
        let esp_len = match plain::encapsulate(sa, lease, &mut m.data_mut()[OUTER_LEN..], inner_len) {
            Ok(l) => l,
            Err(_) => {
                self.counters.drops.add(DpDrop::Engine);
                return;
            }
        };
        let extra = m.data_len() - OUTER_LEN - esp_len;
        m.trim(extra);
        stamp_outer(&mut m, &st.outer[t], esp_len, &mut self.ident, self.wans[wan].ip_csum_offload);
        self.counters.tunnels[b][t].tx.add(m.pkt_len());
        self.counters.encapsulated += 1;
        self.wan_out[wan].push(m);
    }

    fn wan_to_lan(&mut self, w: usize, now: Nanos) -> usize {
        let n = self.wan_rx[w].rx_burst(&mut self.rx_burst, BURST);
        if n == 0 {
            return 0;
        }
        let mut burst = std::mem::take(&mut self.rx_burst);
        for m in burst.drain(..) {
            self.counters.wan_rx.add(m.pkt_len());
            if let Err(r) = self.receive_esp(m, now) {
                self.counters.drops.add(r);
            }
        }
        self.rx_burst = burst;
        n
    }

    fn receive_esp(&mut self, mut m: Mbuf, now: Nanos) -> Result<(), DpDrop> {
        if !m.is_contiguous() {
            return Err(DpDrop::Multiseg);
        }
        let (spi, dst_port, esp_at, esp_len) = outer_esp(m.data())?;
        let i = self.spis.binary_search_by_key(&spi, |e| e.0).map_err(|_| DpDrop::UnknownSpi)?;
        let (_, b, t) = self.spis[i];
        let (b, t) = (b as usize, t as usize);
        let st = &mut self.bundles[b];
        if st.local_port[t] != dst_port {
            return Err(DpDrop::TunnelMismatch);
        }
        match &mut st.engine {
            Engine::Bundle { rx, .. } => {
                let pool = &self.pool;
                let lan = self.lan;
                let mut dropped_nombuf = 0u64;
                let make = |inner: &[u8]| -> Option<Mbuf> {
                    let r = lan_frame(pool, &lan, inner);
                    if r.is_none() {
                        dropped_nombuf += 1;
                    }
                    r
                };
                let before = self.lan_out.len();
                let r = rx.on_esp(&mut m.data_mut()[esp_at..esp_at + esp_len], now, make, &mut self.lan_out);
                self.counters.delivered += (self.lan_out.len() - before) as u64;
                self.counters.drops.add_n(DpDrop::NoMbuf, dropped_nombuf);
                match r {
                    Ok(_) => {
                        self.counters.tunnels[b][t].rx.add(esp_len);
                        Ok(())
                    }
                    Err(_) => Err(DpDrop::Engine),
                }
            }
            Engine::Plain(p) => {
                let opened = plain::decapsulate(&mut p.inbound[t], &mut m.data_mut()[esp_at..esp_at + esp_len], now)
                    .map_err(|_| DpDrop::Engine)?;
                self.counters.tunnels[b][t].rx.add(esp_len);
                // Strip outer headers down to room for the LAN Ethernet
                // header, and the ESP trailer.
                let inner_at = esp_at + opened.payload.start;
                // The inner IP header's own length, not the ESP payload's
                // (RFC 4303 2.7 TFC padding may follow it).
                let inner_len = inner_ip_len(&m.data()[inner_at..inner_at + opened.payload.len()]).ok_or(DpDrop::BadInnerIp)?;
                let tail = m.data_len() - inner_at - inner_len;
                m.adj(inner_at - ETH);
                m.trim(tail);
                write_eth(m.data_mut(), &self.lan);
                self.counters.delivered += 1;
                self.lan_out.push(m);
                Ok(())
            }
        }
    }

    fn timers(&mut self, now: Nanos) {
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
                let Some(buf) = m.append(OUTER_LEN + area) else { break };
                let esp_buf = &mut buf[OUTER_LEN..];
                let Some(t) = tx.poll(now, esp_buf).or_else(|| rx.poll_transmit(esp_buf)) else { break };
                let wan = st.wan_of[t.tunnel];
                m.trim(area - t.esp_len);
                stamp_outer(&mut m, &st.outer[t.tunnel], t.esp_len, &mut self.ident, self.wans[wan].ip_csum_offload);
                self.counters.tunnels[b][t.tunnel].tx.add(m.pkt_len());
                self.wan_out[wan].push(m);
            }
        }
    }

    fn flush_tx(&mut self) {
        send_all(&mut self.lan_tx, &mut self.lan_out, &mut self.counters.lan_tx, &mut self.counters.drops, DpDrop::LanTxFull);
        for (q, out) in self.wan_tx.iter_mut().zip(self.wan_out.iter_mut()) {
            send_all(q, out, &mut self.counters.wan_tx, &mut self.counters.drops, DpDrop::WanTxFull);
        }
    }
}

/// Sends `out` (retrying briefly while the port makes progress), counts what
/// went and drops what did not, by `reason`.
#[inline]
fn send_all(q: &mut TxQueue, out: &mut Vec<Mbuf>, sent: &mut crate::counters::Flow, drops: &mut crate::counters::DpDrops, reason: DpDrop) {
    if out.is_empty() {
        return;
    }
    for m in out.iter() {
        sent.add(m.pkt_len());
    }
    q.tx_all(out, 8);
    for m in out.drain(..) {
        sent.packets -= 1;
        sent.bytes -= m.pkt_len() as u64;
        drops.add(reason);
    }
}

/// Length of the IP packet at the start of `b` per its own header, if it
/// fits in `b`.
#[inline]
fn inner_ip_len(b: &[u8]) -> Option<usize> {
    let len = match b.first()? >> 4 {
        4 if b.len() >= 20 => u16::from_be_bytes([b[2], b[3]]) as usize,
        6 if b.len() >= 40 => 40 + u16::from_be_bytes([b[4], b[5]]) as usize,
        _ => return None,
    };
    (len <= b.len()).then_some(len)
}

/// Parses a LAN frame enough to route it: Ethernet, IP version and header
/// sanity, destination. Returns the bundle index.
#[inline]
fn route(m: &Mbuf, routes: &RouteTable, peer_bundle: &[usize]) -> Result<usize, DpDrop> {
    if !m.is_contiguous() {
        return Err(DpDrop::Multiseg);
    }
    let d = m.data();
    if d.len() < ETH + 20 {
        return Err(DpDrop::NotIp);
    }
    let ethertype = u16::from_be_bytes([d[12], d[13]]);
    let l3 = &d[ETH..];
    let peer = match (ethertype, l3[0] >> 4) {
        (0x0800, 4) => {
            let ihl = (l3[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([l3[2], l3[3]]) as usize;
            if ihl < 20 || total < ihl || total != l3.len() {
                return Err(DpDrop::BadInnerIp);
            }
            routes.lookup_v4(std::net::Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19]))
        }
        (0x86dd, 6) => {
            if l3.len() < 40 || u16::from_be_bytes([l3[4], l3[5]]) as usize + 40 != l3.len() {
                return Err(DpDrop::BadInnerIp);
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&l3[24..40]);
            routes.lookup_v6(std::net::Ipv6Addr::from(a))
        }
        _ => return Err(DpDrop::NotIp),
    };
    let peer = peer.ok_or(DpDrop::NoRoute)? as usize;
    peer_bundle.get(peer).copied().ok_or(DpDrop::NoRoute)
}

/// Finds the ESP packet in a WAN frame: (SPI, local UDP port, offset,
/// length). Link padding after the IP packet is ignored.
#[inline]
fn outer_esp(d: &[u8]) -> Result<(u32, u16, usize, usize), DpDrop> {
    if d.len() < OUTER_LEN || u16::from_be_bytes([d[12], d[13]]) != 0x0800 {
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
    if braid_tunnel::wire::checksum::sum(&ip[..ihl]) != 0xffff {
        return Err(DpDrop::BadOuterIp);
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err(DpDrop::OuterFragment);
    }
    if ip[9] != 17 {
        return Err(DpDrop::NotTunnel);
    }
    let udp = &ip[ihl..total];
    let ulen = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if ulen < 8 || ulen > udp.len() {
        return Err(DpDrop::NotTunnel);
    }
    let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
    match classify(&udp[8..ulen]) {
        Ok(EncapKind::Esp(e)) => {
            let spi = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            Ok((spi, dst_port, IP_AT + ihl + 8, ulen - 8))
        }
        Ok(EncapKind::Keepalive) => Err(DpDrop::Keepalive),
        Ok(EncapKind::NonEsp(_)) => Err(DpDrop::NonEsp),
        Err(_) => Err(DpDrop::NotTunnel),
    }
}

/// Writes a tunnel's outer headers in front of an ESP packet of `esp_len`
/// bytes and asks the port for the IPv4 checksum when it offers it.
#[inline]
fn stamp_outer(m: &mut Mbuf, outer: &OuterTemplate, esp_len: usize, ident: &mut u16, offload: bool) {
    *ident = ident.wrapping_add(1);
    outer.write(m.data_mut(), esp_len, *ident, offload);
    if offload {
        m.set_tx_offload(TxOffload { flags: TX_IPV4 | TX_IP_CKSUM, l2_len: 14, l3_len: 20, ..Default::default() });
    }
}

/// A new LAN frame holding `inner`, or `None` when the pool is empty or the
/// packet does not fit an mbuf.
#[inline]
fn lan_frame(pool: &Mempool, lan: &L2, inner: &[u8]) -> Option<Mbuf> {
    let mut m = Mbuf::alloc(pool)?;
    let buf = m.append(ETH + inner.len())?;
    buf[ETH..].copy_from_slice(inner);
    write_eth(buf, lan);
    Some(m)
}

#[inline]
fn write_eth(buf: &mut [u8], lan: &L2) {
    let et: u16 = if buf.get(ETH).map(|b| b >> 4) == Some(6) { 0x86dd } else { 0x0800 };
    buf[0..6].copy_from_slice(&lan.next_hop_mac);
    buf[6..12].copy_from_slice(&lan.mac);
    buf[12..14].copy_from_slice(&et.to_be_bytes());
}
