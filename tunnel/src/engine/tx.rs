//! The sending side of a bundle for one worker (one stream).

use std::sync::Arc;

use super::{DropCounters, Transmit, ESP_HEADROOM, ESP_TAILROOM};
use crate::balancer::{Balancer, Policy};
use crate::bundle::NEXT_HEADER_BUNDLE;
use crate::bundle::{FrameBuilder, InnerPacket, PackCursor, ProbeReply, StreamSender};
use crate::crypto::{Aead, AesGcm};
use crate::liveness::{LivenessConfig, PathMonitor};
use crate::sa::{OutboundSaPair, SeqBlock};
use crate::wire::esp::{self, Packet};
use crate::{DropReason, Nanos};

/// Set-up of one [`BundleTx`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleTxConfig {
    /// Stream id: unique per sender worker of the bundle, below the
    /// receiver's stream table size.
    pub stream: u16,
    /// Flow buckets; the receiver's re-orderers must use the same.
    pub buckets: u16,
    /// Largest bundle frame (the ESP payload): path MTU less outer IP, UDP,
    /// ESP header, IV and [`ESP_TAILROOM`].
    pub max_frame: usize,
    /// Sequence numbers leased per tunnel at a time (one atomic add each).
    pub seq_lease: usize,
    /// How frames are spread over the tunnels.
    pub policy: Policy,
    /// `Some`: this stream probes every tunnel and drives liveness. One
    /// stream per bundle should; the others get liveness via
    /// [`BundleTx::set_path_alive`] / [`BundleTx::set_path_delay`].
    pub liveness: Option<LivenessConfig>,
    /// Start each tunnel's probes at its own phase of the probe interval
    /// (from its SPI), so that thousands of tunnels never probe in one
    /// burst. Off: every tunnel probes at once, at creation (tests).
    pub stagger_probes: bool,
}

impl Default for BundleTxConfig {
    /// 1400-byte frames fit a 1500-byte path MTU under outer IPv6 (40) + UDP
    /// (8) + ESP (16 + up to 21). Lease 32: one DPDK burst.
    fn default() -> Self {
        BundleTxConfig {
            stream: 0,
            buckets: 256,
            max_frame: 1400,
            seq_lease: 32,
            policy: Policy::RoundRobin,
            liveness: Some(LivenessConfig::default()),
            stagger_probes: false,
        }
    }
}

/// Counters of a [`BundleTx`] (drops are in [`BundleTx::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxCounters {
    /// Data frames sealed.
    pub frames: u64,
    /// Probe frames sealed.
    pub probes: u64,
    /// Frames sent on a dead path because no path was alive.
    pub no_live_path: u64,
    /// Sequence leases taken (atomic adds on shared SAs).
    pub leases: u64,
}

/// One tunnel's outbound SA and the sequence block this worker holds on it.
#[derive(Debug)]
pub(super) struct SealLane<A: Aead> {
    sa: Arc<OutboundSaPair<A>>,
    block: Option<SeqBlock>,
    /// Frames sealed since the last [`end_burst`](Self::end_burst), and
    /// in the burst before: the next burst's lease is sized from it.
    used: u32,
    hint: u32,
}

impl<A: Aead> SealLane<A> {
    pub(super) fn new(sa: Arc<OutboundSaPair<A>>) -> Self {
        SealLane { sa, block: None, used: 0, hint: 1 }
    }

    /// Discards what is left of the lease. A lease kept for a later burst
    /// falls behind the numbers other workers use on the same SA meanwhile,
    /// and out of the peer's replay window.
    pub(super) fn end_burst(&mut self) {
        self.block = None;
        if self.used > 0 {
            self.hint = self.used;
        }
        self.used = 0;
    }

    /// Replaces the SA pair; the held block survives if the new pair still
    /// has its SA.
    pub(super) fn set_sa(&mut self, sa: Arc<OutboundSaPair<A>>) {
        if let Some(b) = &self.block {
            if sa.get(b.spi()).is_none() {
                self.block = None;
            }
        }
        self.sa = sa;
    }

    /// Seals the frame at `buf[16..16 + frame_len]` in place. A new block is
    /// leased from the active SA when the held one is used up or belongs to
    /// an SA that is no longer active (a rekey takes effect at once).
    pub(super) fn seal(
        &mut self,
        lease: usize,
        buf: &mut [u8],
        frame_len: usize,
        leases: &mut u64,
    ) -> Result<(crate::sa::Spi, u64, usize), DropReason> {
        let active = self.sa.active();
        if self.block.as_ref().is_none_or(|b| b.is_empty() || b.spi() != active.spi()) {
            // As many as the last burst used (what this one probably
            // needs), at most `lease`: few numbers wasted at end_burst.
            let n = (self.hint.saturating_sub(self.used) as usize).clamp(1, lease.max(1));
            self.block = None;
            self.block = Some(active.reserve(n)?);
            *leases += 1;
        }
        self.used = self.used.saturating_add(1);
        let Some(block) = self.block.as_mut() else {
            return Err(DropReason::SaExhausted);
        };
        let spi = block.spi();
        let sa = self.sa.get(spi).ok_or(DropReason::EspWrongSeqBlock)?;
        let len = sa.seal(block, buf, frame_len, NEXT_HEADER_BUNDLE)?;
        // braid's IV is the 64-bit sequence number (sa.rs).
        let seq = u64::from_be_bytes(Packet::new_unchecked(&buf[..len]).iv());
        Ok((spi, seq, len))
    }
}

/// The frame area of an ESP buffer: after header and IV, before tailroom.
pub(super) fn frame_area(buf: &mut [u8], max_frame: usize) -> Option<&mut [u8]> {
    let end = buf
        .len()
        .saturating_sub(ESP_TAILROOM)
        .min(ESP_HEADROOM.saturating_add(max_frame));
    buf.get_mut(ESP_HEADROOM..end)
}

/// The sender of one worker over one bundle: packs, balances, seals.
#[derive(Debug)]
pub struct BundleTx<A: Aead = AesGcm> {
    cfg: BundleTxConfig,
    lanes: Vec<SealLane<A>>,
    monitors: Vec<PathMonitor>,
    /// Without monitors (a stream that does not probe): each path's delay
    /// as the probing stream told it (`set_path_delay`).
    told: Vec<Option<Nanos>>,
    sender: StreamSender,
    balancer: Balancer,
    fallback: usize,
    /// Tunnel of the last frame (a frame continuing its packet follows it).
    last_tunnel: Option<usize>,
    drops: DropCounters,
    counters: TxCounters,
}

impl<A: Aead> BundleTx<A> {
    /// A sender over `sas`, tunnel `i` being `sas[i]`, all alive at `now`.
    ///
    /// # Panics
    /// With no tunnel, or more than `u16::MAX`.
    pub fn new(cfg: BundleTxConfig, sas: Vec<Arc<OutboundSaPair<A>>>, now: Nanos) -> Self {
        assert!(!sas.is_empty() && sas.len() <= usize::from(u16::MAX));
        let n = sas.len();
        let monitors = match cfg.liveness {
            // With `stagger_probes`, each tunnel's probes start at its own
            // phase of the interval.
            Some(l) => (0..n)
                .map(|i| {
                    let spi = sas[i].active().spi().0;
                    let phase = match cfg.stagger_probes {
                        true => l.interval / 1024 * u64::from(spi.wrapping_mul(0x9e37_79b1) >> 22),
                        false => 0,
                    };
                    PathMonitor::new(i as u16, l, now.saturating_add(phase))
                })
                .collect(),
            None => Vec::new(),
        };
        BundleTx {
            lanes: sas.into_iter().map(SealLane::new).collect(),
            monitors,
            told: vec![None; n],
            sender: StreamSender::new(cfg.stream, cfg.buckets),
            balancer: Balancer::new(cfg.policy, n),
            fallback: 0,
            last_tunnel: None,
            drops: DropCounters::default(),
            counters: TxCounters::default(),
            cfg,
        }
    }

    /// Takes over from `old`, the sender this one replaces (its bundle
    /// rebuilt by new tables): the stream goes on from `old`'s stream and
    /// flow sequences ([`StreamSender::continue_from`]), so the peer's
    /// re-orderer loses and holds nothing; without that the peer would drop
    /// every packet as a duplicate or too late until each bucket caught up.
    /// Tunnel `i` with `paths[i]` naming old tunnel `i` (same index, same
    /// path) keeps its liveness monitor (alive or dead, RTT, probes in
    /// flight) when the liveness settings are the same; other tunnels start
    /// alive. Returns whether the stream was continued (`false`: another
    /// stream id or bucket count, and nothing is changed).
    pub fn continue_from(&mut self, old: &BundleTx<A>, paths: &[Option<super::Predecessor>]) -> bool {
        if !self.sender.continue_from(&old.sender) {
            return false;
        }
        if self.cfg.liveness == old.cfg.liveness {
            for (i, p) in paths.iter().enumerate().take(self.monitors.len()) {
                if p.is_some_and(|p| p.tunnel == i) && i < old.monitors.len() {
                    self.monitors[i] = old.monitors[i].clone();
                    let m = &self.monitors[i];
                    let (alive, delay) = (m.is_alive(), m.one_way_delay());
                    self.balancer.set_alive(i, alive);
                    if let Some(d) = delay {
                        self.balancer.set_delay(i, d);
                    }
                }
            }
        }
        // A stream that does not probe keeps what the prober told it of
        // each path that goes on (the prober tells only changes).
        if self.monitors.is_empty() {
            for (i, p) in paths.iter().enumerate().take(self.told.len()) {
                let Some(j) = p.map(|p| p.tunnel).filter(|&j| j < old.told.len()) else { continue };
                self.told[i] = old.told[j];
                self.balancer.set_alive(i, old.balancer.is_alive(j));
                if let Some(d) = old.told[j] {
                    self.balancer.set_delay(i, d);
                }
            }
        }
        true
    }

    /// The configuration.
    pub fn config(&self) -> &BundleTxConfig {
        &self.cfg
    }

    /// Number of tunnels.
    pub fn tunnels(&self) -> usize {
        self.lanes.len()
    }

    /// The stream packer (bucket of a flow hash, packing counters).
    pub fn stream_sender(&self) -> &StreamSender {
        &self.sender
    }

    /// The balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The balancer, to set weights and rates.
    pub fn balancer_mut(&mut self) -> &mut Balancer {
        &mut self.balancer
    }

    /// The liveness monitor of `path`, on the probing stream.
    pub fn monitor(&self, path: usize) -> Option<&PathMonitor> {
        self.monitors.get(path)
    }

    /// Drops, one per lost frame, by reason.
    pub fn counters(&self) -> &DropCounters {
        &self.drops
    }

    /// Frame and lease counters.
    pub fn stats(&self) -> &TxCounters {
        &self.counters
    }

    /// Whether `path` is in the rotation.
    pub fn path_alive(&self, path: usize) -> bool {
        self.balancer.is_alive(path)
    }

    /// The measured one-way delay of `path` (RTT/2) on the probing
    /// stream; on another, what it was told (`set_path_delay`).
    pub fn path_delay(&self, path: usize) -> Option<Nanos> {
        match self.monitors.is_empty() {
            true => self.told.get(path).copied().flatten(),
            false => self.monitors.get(path).and_then(PathMonitor::one_way_delay),
        }
    }

    /// Puts `path` in or out of the rotation (liveness from the probing stream).
    pub fn set_path_alive(&mut self, path: usize, alive: bool) {
        self.balancer.set_alive(path, alive);
    }

    /// Sets `path`'s one-way delay for `EarliestArrival` (and, on a
    /// stream that does not probe, for [`path_delay`](Self::path_delay)).
    pub fn set_path_delay(&mut self, path: usize, delay: Nanos) {
        self.balancer.set_delay(path, delay);
        if let Some(t) = self.told.get_mut(path) {
            *t = Some(delay);
        }
    }

    /// On a stream that does not probe: `path`'s delay is no longer known
    /// (the probing stream lost it): 0 for the balancer, as the prober's.
    pub fn forget_path_delay(&mut self, path: usize) {
        if let Some(t) = self.told.get_mut(path) {
            *t = None;
        }
        self.balancer.set_delay(path, 0);
    }

    /// Swaps tunnel `tunnel`'s SA pair (rekey published by the control plane).
    pub fn set_sa(&mut self, tunnel: usize, sa: Arc<OutboundSaPair<A>>) {
        if let Some(l) = self.lanes.get_mut(tunnel) {
            l.set_sa(sa);
        }
    }

    /// Packs the next frame of `pkts[cursor..]` into `buf`, the ESP area of
    /// an output buffer (layout in [`crate::engine`]; size it with
    /// [`esp_area_len`](super::esp_area_len)`(max_frame)`, a shorter one
    /// gets smaller frames), picks its tunnel and seals it in place.
    ///
    /// `None` once every packet is packed: it never waits for more. An
    /// `Err` means the frame and the packets in it are lost (counted).
    pub fn next_frame(
        &mut self,
        pkts: &[InnerPacket<'_>],
        cursor: &mut PackCursor,
        buf: &mut [u8],
        now: Nanos,
    ) -> Option<Result<Transmit, DropReason>> {
        let area = frame_area(buf, self.cfg.max_frame)?;
        // A frame that carries the rest of a packet the previous frame
        // began goes on the same tunnel (while it is alive): the receiver
        // gets the pieces one after the other from one path, and with
        // several workers the same worker opens them, so reassembly waits
        // for no other path.
        let continues = cursor.continues();
        let frame_len = self.sender.pack(pkts, cursor, area)?;
        let len = esp::packet_len(frame_len);
        let tunnel = match self.last_tunnel {
            Some(t) if continues && self.balancer.stay(t, len, now) => t,
            _ => self.pick(len, now),
        };
        self.last_tunnel = Some(tunnel);
        let r = self.seal_on(tunnel, buf, frame_len);
        if r.is_ok() {
            self.counters.frames += 1;
        }
        Some(r)
    }

    fn pick(&mut self, len: usize, now: Nanos) -> usize {
        if let Some(i) = self.balancer.pick(len, now) {
            return i;
        }
        // No path alive: keep sending round-robin; liveness may be wrong.
        self.counters.no_live_path += 1;
        self.fallback = (self.fallback + 1) % self.lanes.len();
        self.fallback
    }

    fn seal_on(
        &mut self,
        tunnel: usize,
        buf: &mut [u8],
        frame_len: usize,
    ) -> Result<Transmit, DropReason> {
        let r = self.lanes[tunnel].seal(
            self.cfg.seq_lease,
            buf,
            frame_len,
            &mut self.counters.leases,
        );
        match r {
            Ok((spi, seq, esp_len)) => Ok(Transmit {
                tunnel,
                esp_len,
                spi,
                seq,
            }),
            Err(reason) => {
                self.drops.add(reason);
                Err(reason)
            }
        }
    }

    /// Ends a burst: every tunnel drops what is left of its sequence lease
    /// (see `SealLane::end_burst`). Call after each burst of
    /// [`next_frame`](Self::next_frame) and [`poll`](Self::poll) calls when
    /// several senders share the SAs.
    pub fn end_burst(&mut self) {
        for lane in &mut self.lanes {
            lane.end_burst();
        }
    }

    /// Runs liveness timers and returns the next due probe, sealed in `buf`
    /// (an ESP area) for its tunnel. Call until `None` after each burst, or
    /// at [`next_timeout`](Self::next_timeout).
    pub fn poll(&mut self, now: Nanos, buf: &mut [u8]) -> Option<Transmit> {
        for path in 0..self.monitors.len() {
            let probe = self.monitors[path].poll(now);
            self.sync_path(path);
            let Some(p) = probe else { continue };
            let header = self.sender.next_header();
            let frame_len = frame_area(buf, self.cfg.max_frame)
                .and_then(|area| FrameBuilder::new(area, header))
                .and_then(|mut b| b.push_probe(&p.probe).then(|| b.finish()));
            let Some(frame_len) = frame_len else {
                self.drops.add(DropReason::EspNoTailroom);
                continue;
            };
            if let Ok(t) = self.seal_on(path, buf, frame_len) {
                self.counters.probes += 1;
                return Some(t);
            }
        }
        None
    }

    /// Takes a probe reply that arrived at `at` (from [`BundleRx`](super::BundleRx)).
    pub fn on_probe_reply(&mut self, reply: &ProbeReply, at: Nanos) -> Result<(), DropReason> {
        let path = usize::from(reply.path);
        let r = match self.monitors.get_mut(path) {
            Some(m) => m.on_probe_reply(reply, at),
            None => Err(DropReason::ProbeUnmatched),
        };
        if path < self.monitors.len() {
            self.sync_path(path);
        }
        if let Err(reason) = r {
            self.drops.add(reason);
        }
        r
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub fn next_timeout(&self) -> Option<Nanos> {
        self.monitors.iter().map(PathMonitor::next_timeout).min()
    }

    fn sync_path(&mut self, path: usize) {
        let m = &mut self.monitors[path];
        if let Some(alive) = m.take_change() {
            self.balancer.set_alive(path, alive);
        }
        if let Some(d) = m.one_way_delay() {
            self.balancer.set_delay(path, d);
        }
    }
}
