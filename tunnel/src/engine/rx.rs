//! The receiving side of a bundle for one worker: every tunnel, every
//! sender stream.

use std::sync::Arc;

use super::tx::{frame_area, SealLane};
use super::{DropCounters, Ring, Transmit};
use crate::bundle::{
    Frame, FrameBuilder, ProbeReply, Reassembler, ReassemblyConfig, Record, StreamSender,
    NEXT_HEADER_BUNDLE,
};
use crate::crypto::{Aead, AesGcm};
use crate::reorder::{PacketMeta, Pushed, ReorderConfig, ReorderCounters, Reorderer};
use crate::sa::{InboundSa, InboundSaPair, OutboundSaPair, Spi};
use crate::wire::esp::Packet;
use crate::{DropReason, Nanos};

/// Set-up of one [`BundleRx`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleRxConfig {
    /// Sender streams with a re-orderer: stream ids `0..streams`. A frame
    /// carrying data from a higher id is dropped (`BundleStream`).
    pub streams: usize,
    /// Re-orderer sizing per stream; `buckets` must be the senders'.
    /// `paths` is set to the number of tunnels.
    pub reorder: ReorderConfig,
    /// Fragment reassembly, shared by all streams.
    pub reassembly: ReassemblyConfig,
    /// Stream id of the probe-reply frames this worker sends. Must not be a
    /// data stream id of this gateway (the peer would take its frame
    /// sequence for a data stream's).
    pub reply_stream: u16,
    /// Probes waiting for a reply, and replies waiting for the prober.
    pub probe_queue: usize,
    /// Sequence numbers leased at a time for probe replies.
    pub seq_lease: usize,
}

impl Default for BundleRxConfig {
    fn default() -> Self {
        BundleRxConfig {
            streams: 64,
            reorder: ReorderConfig::default(),
            reassembly: ReassemblyConfig::default(),
            reply_stream: u16::MAX,
            probe_queue: 64,
            seq_lease: 8,
        }
    }
}

/// What one accepted ESP packet gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxSummary {
    /// Tunnel it arrived on.
    pub tunnel: usize,
    /// Its SPI.
    pub spi: Spi,
    /// Its 64-bit sequence number.
    pub seq: u64,
    /// The sequence number is the highest its SA accepted so far
    /// ([`Opened::newest`](crate::sa::Opened::newest)).
    pub newest: bool,
    /// Sender stream of the frame.
    pub stream: u16,
    /// Stream sequence of the frame.
    pub stream_seq: u64,
    /// Packets handed to `out` (this frame's and those it unblocked).
    pub delivered: usize,
    /// Packets of this frame now waiting in the re-orderer.
    pub held: usize,
    /// Records of this frame dropped (each counted by reason).
    pub dropped: usize,
    /// Probes queued for a reply.
    pub probes: usize,
    /// Probe replies queued for the prober.
    pub replies: usize,
}

/// An ESP packet [`BundleRx::open`]ed: authenticated, in its replay
/// window, decrypted, a bundle frame whose header parses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedFrame {
    /// Tunnel it arrived on.
    pub tunnel: usize,
    /// Its SPI.
    pub spi: Spi,
    /// Its 64-bit sequence number.
    pub seq: u64,
    /// The sequence number is the highest its SA accepted so far.
    pub newest: bool,
    /// Sender stream of the frame: whose re-orderer takes it.
    pub stream: u16,
    /// The frame inside the buffer given to `open`.
    pub payload: std::ops::Range<usize>,
}

/// A probe reply received, for [`BundleTx::on_probe_reply`](super::BundleTx::on_probe_reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedReply {
    /// Tunnel it arrived on.
    pub tunnel: usize,
    /// The reply.
    pub reply: ProbeReply,
    /// When it arrived.
    pub at: Nanos,
}

/// Counters of a [`BundleRx`] (drops are in [`BundleRx::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxCounters {
    /// ESP packets accepted whole.
    pub frames: u64,
    /// Inner packets (whole or reassembled) given to a re-orderer.
    pub packets: u64,
    /// Inner packets delivered.
    pub delivered: u64,
    /// Probes answered (replies sealed).
    pub probes_answered: u64,
    /// Probe replies received.
    pub replies: u64,
    /// Sender streams that started over (a restarted or re-created peer
    /// engine): their re-orderer delivered what it held and began anew.
    pub stream_restarts: u64,
}

/// Counts what goes through to `out`.
struct Counted<'a, E> {
    out: &'a mut E,
    n: usize,
}

impl<H, E: Extend<H>> Extend<H> for Counted<'_, E> {
    fn extend<I: IntoIterator<Item = H>>(&mut self, iter: I) {
        let n = &mut self.n;
        self.out.extend(iter.into_iter().inspect(|_| *n += 1));
    }
}

/// The receiver of one worker over one bundle. `H` is the caller's handle
/// for a delivered inner packet (an mbuf in the dataplane, `Vec<u8>` in tests).
#[derive(Debug)]
pub struct BundleRx<H, A: Aead = AesGcm> {
    cfg: BundleRxConfig,
    inbound: Vec<InboundSaPair<A>>,
    /// (SPI, tunnel), sorted by SPI.
    spis: Vec<(u32, usize)>,
    outbound: Vec<SealLane<A>>,
    reasm: Reassembler,
    /// One re-orderer per sender stream, made when the stream's first frame
    /// arrives (a bundle with 64 possible streams and 8192 slots each
    /// would cost megabytes and milliseconds to build up front).
    reorderers: Vec<Option<Box<Reorderer<H>>>>,
    /// What a new re-orderer starts from: its config and each path's
    /// liveness and delay as last reported.
    reorder: ReorderConfig,
    paths: Vec<(bool, Option<Nanos>)>,
    to_answer: Ring<(usize, ProbeReply)>,
    replies: Ring<ReceivedReply>,
    reply_sender: StreamSender,
    drops: DropCounters,
    counters: RxCounters,
    /// The counters of re-orderers replaced when their stream restarted.
    retired_reorder: ReorderCounters,
}

impl<H, A: Aead> BundleRx<H, A> {
    /// A receiver for tunnels `0..n`: `inbound[i]` opens tunnel `i`,
    /// `outbound[i]` seals probe replies on it. Allocates everything now
    /// but the re-orderers, made per sender stream on its first frame.
    ///
    /// # Panics
    /// If the two lists differ in length or are empty.
    pub fn new(
        cfg: BundleRxConfig,
        inbound: Vec<InboundSaPair<A>>,
        outbound: Vec<Arc<OutboundSaPair<A>>>,
    ) -> Self {
        assert!(!inbound.is_empty() && inbound.len() == outbound.len());
        let n = inbound.len();
        let reorder = ReorderConfig {
            paths: n,
            ..cfg.reorder
        };
        let mut rx = BundleRx {
            spis: Vec::with_capacity(2 * n + 2),
            inbound,
            outbound: outbound.into_iter().map(SealLane::new).collect(),
            reasm: Reassembler::new(cfg.reassembly),
            reorderers: (0..cfg.streams).map(|_| None).collect(),
            reorder,
            paths: vec![(true, None); n],
            to_answer: Ring::new(cfg.probe_queue),
            replies: Ring::new(cfg.probe_queue),
            reply_sender: StreamSender::new(cfg.reply_stream, 1),
            drops: DropCounters::default(),
            counters: RxCounters::default(),
            retired_reorder: ReorderCounters::default(),
            cfg,
        };
        for t in 0..n {
            let spi = rx.inbound[t].current().spi();
            rx.map_spi(spi, t);
        }
        rx
    }

    /// Takes over from `old`, the receiver this one replaces (its bundle
    /// rebuilt by new tables), so that nothing the peer sent is lost or
    /// held back by the rebuild:
    /// - every sender stream's re-orderer, with what it holds and each
    ///   bucket's next sequence (a fresh one would hold the peer's next
    ///   packets until a hold time, and drop late ones as too late), its
    ///   paths remapped: tunnel `i` is old tunnel `paths[i]` (what is
    ///   known of that path is kept) or a new path. Only when the
    ///   re-orderers' sizing and hold are the same; otherwise `old` keeps
    ///   them, for the caller to [`flush`](Self::flush);
    /// - the fragments being reassembled, when the reassembly settings are
    ///   the same;
    /// - the inbound SA (and so its replay window) of each tunnel whose
    ///   predecessor has `same_inbound`; other tunnels start with a fresh
    ///   window, which accepts any sequence number once.
    ///
    /// Allocates: not for the packet path.
    pub fn continue_from(&mut self, old: &mut BundleRx<H, A>, paths: &[Option<super::Predecessor>]) {
        let from: Vec<Option<usize>> = (0..self.inbound.len())
            .map(|i| paths.get(i).copied().flatten().map(|p| p.tunnel).filter(|&j| j < old.inbound.len()))
            .collect();
        let sizing = |c: &ReorderConfig| ReorderConfig { paths: 0, ..*c };
        if sizing(&self.reorder) == sizing(&old.reorder) {
            for (slot, old_slot) in self.reorderers.iter_mut().zip(old.reorderers.iter_mut()) {
                if let Some(mut r) = old_slot.take() {
                    r.remap_paths(&from);
                    *slot = Some(r);
                }
            }
            for (i, f) in from.iter().enumerate() {
                if let Some(j) = *f {
                    self.paths[i] = old.paths[j];
                }
            }
        }
        if self.cfg.reassembly == old.cfg.reassembly {
            std::mem::swap(&mut self.reasm, &mut old.reasm);
        }
        for (i, p) in paths.iter().enumerate().take(self.inbound.len()) {
            if let (Some(p), Some(j)) = (p, from[i]) {
                if p.same_inbound && self.inbound[i].current().spi() == old.inbound[j].current().spi() {
                    std::mem::swap(&mut self.inbound[i], &mut old.inbound[j]);
                }
            }
        }
        self.spis.clear();
        for t in 0..self.inbound.len() {
            let spi = self.inbound[t].current().spi();
            self.map_spi(spi, t);
            if let Some(spi) = self.inbound[t].previous_spi() {
                self.map_spi(spi, t);
            }
        }
    }

    fn map_spi(&mut self, spi: Spi, tunnel: usize) {
        match self.spis.binary_search_by_key(&spi.0, |e| e.0) {
            Ok(i) => self.spis[i].1 = tunnel,
            Err(i) => self.spis.insert(i, (spi.0, tunnel)),
        }
    }

    fn unmap_retired(&mut self) {
        let inbound = &self.inbound;
        self.spis
            .retain(|&(spi, t)| inbound[t].get(Spi(spi)).is_some());
    }

    /// The tunnel whose SA has this SPI.
    pub fn tunnel_of(&self, spi: Spi) -> Option<usize> {
        self.spis
            .binary_search_by_key(&spi.0, |e| e.0)
            .ok()
            .map(|i| self.spis[i].1)
    }

    /// Number of tunnels.
    pub fn tunnels(&self) -> usize {
        self.inbound.len()
    }

    /// Drops by reason: one per rejected ESP packet, and one per inner
    /// packet, fragment or record dropped inside an accepted one.
    pub fn counters(&self) -> &DropCounters {
        &self.drops
    }

    /// Frame and delivery counters.
    pub fn stats(&self) -> &RxCounters {
        &self.counters
    }

    /// The re-orderers' counters, summed: every stream's, and those of
    /// re-orderers its restarts replaced (those a rebuilt bundle took over
    /// with [`continue_from`](Self::continue_from) count there).
    pub fn reorder_counters(&self) -> ReorderCounters {
        let mut c = self.retired_reorder;
        for r in self.reorderers.iter().flatten() {
            c.merge(r.counters());
        }
        c
    }

    /// Sender streams this receiver takes (`0..streams`).
    pub fn streams(&self) -> usize {
        self.reorderers.len()
    }

    /// The re-orderer of `stream`.
    pub fn reorderer(&self, stream: u16) -> Option<&Reorderer<H>> {
        self.reorderers.get(usize::from(stream))?.as_deref()
    }

    /// The reassembler.
    pub fn reassembler(&self) -> &Reassembler {
        &self.reasm
    }

    /// The inbound SAs of `tunnel`.
    pub fn inbound(&self, tunnel: usize) -> Option<&InboundSaPair<A>> {
        self.inbound.get(tunnel)
    }

    /// Tunnel `tunnel`'s receiver, to raise its floor
    /// ([`InboundSaPair::raise_floor`]).
    pub fn inbound_mut(&mut self, tunnel: usize) -> Option<&mut InboundSaPair<A>> {
        self.inbound.get_mut(tunnel)
    }

    /// Rekey: installs `next` on `tunnel`, the current SA accepted until
    /// `now + grace`. Returns the SA pushed out, to free off the hot path.
    pub fn install_inbound(
        &mut self,
        tunnel: usize,
        next: InboundSa<A>,
        now: Nanos,
        grace: Nanos,
    ) -> Option<InboundSa<A>> {
        let spi = next.spi();
        let old = self.inbound.get_mut(tunnel)?.install(next, now, grace);
        self.map_spi(spi, tunnel);
        self.unmap_retired();
        old
    }

    /// Removes SAs whose grace period is over; returns how many.
    pub fn retire_expired(&mut self, now: Nanos) -> usize {
        let n = self
            .inbound
            .iter_mut()
            .filter_map(|p| p.retire_expired(now))
            .count();
        if n > 0 {
            self.unmap_retired();
        }
        n
    }

    /// Swaps the outbound SA pair used for probe replies on `tunnel`.
    pub fn set_outbound(&mut self, tunnel: usize, sa: Arc<OutboundSaPair<A>>) {
        if let Some(l) = self.outbound.get_mut(tunnel) {
            l.set_sa(sa);
        }
    }

    /// Liveness of `path` (from the probing [`BundleTx`](super::BundleTx)):
    /// dead paths do not hold back gap skipping.
    pub fn set_path_live(&mut self, path: usize, live: bool) {
        if let Some(p) = self.paths.get_mut(path) {
            p.0 = live;
        }
        for r in self.reorderers.iter_mut().flatten() {
            r.set_path_live(path, live);
        }
    }

    /// One-way delay of `path`; the hold time follows the skew.
    pub fn set_path_delay(&mut self, path: usize, delay: Option<Nanos>) {
        if let Some(p) = self.paths.get_mut(path) {
            p.1 = delay;
        }
        for r in self.reorderers.iter_mut().flatten() {
            r.set_path_delay(path, delay);
        }
    }

    /// Takes one ESP packet (`buf`, SPI to ICV, decrypted in place).
    /// `make_handle` turns each inner packet into a handle (copying it out
    /// of `buf`); handles released in order go to `out`. Call
    /// [`poll`](Self::poll) after each burst.
    pub fn on_esp(
        &mut self,
        buf: &mut [u8],
        now: Nanos,
        make_handle: impl FnMut(&[u8]) -> Option<H>,
        out: &mut impl Extend<H>,
    ) -> Result<RxSummary, DropReason> {
        self.on_esp_at(None, buf, now, make_handle, out)
    }

    /// [`on_esp`](Self::on_esp) for a caller that already found the
    /// packet's tunnel by its SPI (the SA still checks the SPI).
    pub fn on_esp_from(
        &mut self,
        tunnel: usize,
        buf: &mut [u8],
        now: Nanos,
        make_handle: impl FnMut(&[u8]) -> Option<H>,
        out: &mut impl Extend<H>,
    ) -> Result<RxSummary, DropReason> {
        self.on_esp_at(Some(tunnel), buf, now, make_handle, out)
    }

    fn on_esp_at(
        &mut self,
        tunnel: Option<usize>,
        buf: &mut [u8],
        now: Nanos,
        make_handle: impl FnMut(&[u8]) -> Option<H>,
        out: &mut impl Extend<H>,
    ) -> Result<RxSummary, DropReason> {
        let r = self.on_esp_inner(tunnel, buf, now, make_handle, out);
        match &r {
            Ok(s) => {
                self.counters.frames += 1;
                self.counters.delivered += s.delivered as u64;
            }
            Err(reason) => self.drops.add(*reason),
        }
        r
    }

    fn on_esp_inner(
        &mut self,
        tunnel: Option<usize>,
        buf: &mut [u8],
        now: Nanos,
        make_handle: impl FnMut(&[u8]) -> Option<H>,
        out: &mut impl Extend<H>,
    ) -> Result<RxSummary, DropReason> {
        let o = self.open_inner(tunnel, buf, now)?;
        let frame = &buf[o.payload.clone()];
        self.frame_inner(&o, frame, now, make_handle, out)
    }

    /// The first half of [`on_esp_from`](Self::on_esp_from), for a
    /// gateway whose workers split a bundle's work: the worker that owns
    /// `tunnel`'s inbound SA (its replay window) authenticates, checks
    /// anti-replay and decrypts `buf` in place, and hands the frame
    /// (`buf[opened.payload]`) to the worker that owns its sender stream
    /// ([`OpenedFrame::stream`]), which calls [`on_opened`](Self::on_opened)
    /// on its own receiver of the same bundle. A rejected packet is counted
    /// here; the frame's records are counted by `on_opened`.
    pub fn open(&mut self, tunnel: usize, buf: &mut [u8], now: Nanos) -> Result<OpenedFrame, DropReason> {
        let r = self.open_inner(Some(tunnel), buf, now);
        if let Err(reason) = &r {
            self.drops.add(*reason);
        }
        r
    }

    /// The second half of [`on_esp_from`](Self::on_esp_from): a frame
    /// opened by [`open`](Self::open), possibly on another worker's
    /// receiver of the same bundle (same tunnels, in the same order).
    pub fn on_opened(
        &mut self,
        opened: &OpenedFrame,
        frame: &[u8],
        now: Nanos,
        make_handle: impl FnMut(&[u8]) -> Option<H>,
        out: &mut impl Extend<H>,
    ) -> Result<RxSummary, DropReason> {
        if opened.tunnel >= self.inbound.len() {
            self.drops.add(DropReason::EspUnknownSpi);
            return Err(DropReason::EspUnknownSpi);
        }
        let r = self.frame_inner(opened, frame, now, make_handle, out);
        match &r {
            Ok(s) => {
                self.counters.frames += 1;
                self.counters.delivered += s.delivered as u64;
            }
            Err(reason) => self.drops.add(*reason),
        }
        r
    }

    fn open_inner(&mut self, tunnel: Option<usize>, buf: &mut [u8], now: Nanos) -> Result<OpenedFrame, DropReason> {
        let spi = Packet::new_checked(&*buf)?.spi();
        let tunnel = match tunnel {
            Some(t) if t < self.inbound.len() => t,
            Some(_) => return Err(DropReason::EspUnknownSpi),
            None => self.tunnel_of(spi).ok_or(DropReason::EspUnknownSpi)?,
        };
        // Anti-replay is checked before and updated after authentication (sa.rs).
        let opened = self.inbound[tunnel].open(buf, now)?;
        if opened.next_header != NEXT_HEADER_BUNDLE {
            return Err(DropReason::EspBadNextHeader);
        }
        let h = Frame::parse(&buf[opened.payload.clone()])?.header();
        Ok(OpenedFrame {
            tunnel,
            spi,
            seq: opened.seq,
            newest: opened.newest,
            stream: h.stream,
            payload: opened.payload,
        })
    }

    fn frame_inner(
        &mut self,
        opened: &OpenedFrame,
        frame: &[u8],
        now: Nanos,
        mut make_handle: impl FnMut(&[u8]) -> Option<H>,
        out: &mut impl Extend<H>,
    ) -> Result<RxSummary, DropReason> {
        let (tunnel, spi) = (opened.tunnel, opened.spi);
        let frame = Frame::parse(frame)?;
        let h = frame.header();
        // A frame is taken whole or dropped whole.
        let has_data = frame.check(usize::from(self.cfg.reorder.buckets.max(1)))?;
        let stream = usize::from(h.stream);
        if has_data && stream >= self.reorderers.len() {
            return Err(DropReason::BundleStream);
        }

        let BundleRx {
            reasm,
            reorderers,
            reorder,
            paths,
            to_answer,
            replies,
            drops,
            counters,
            retired_reorder,
            ..
        } = self;
        let fresh = |reorder: &ReorderConfig, paths: &[(bool, Option<Nanos>)]| {
            let mut r = Reorderer::new(*reorder);
            for (path, &(live, delay)) in paths.iter().enumerate() {
                r.set_path_live(path, live);
                r.set_path_delay(path, delay);
            }
            Box::new(r)
        };
        let mut out = Counted { out, n: 0 };
        // The stream's re-orderer, made on its first frame.
        let mut rord = reorderers.get_mut(stream).map(|slot| slot.get_or_insert_with(|| fresh(reorder, paths)));
        if let Some(r) = rord.as_deref_mut() {
            // On one tunnel a sender's frames carry rising ESP and stream
            // sequence numbers together. The newest ESP packet with a stream
            // sequence below one seen on this tunnel is a sender that
            // started its stream over (restarted, or its bundle re-created
            // under another name): what was held goes out and the stream
            // starts anew, instead of every packet being too late.
            if opened.newest && r.path_high(tunnel).is_some_and(|high| h.stream_seq < high) {
                r.flush(&mut out);
                retired_reorder.merge(r.counters());
                *r = fresh(reorder, paths);
                counters.stream_restarts += 1;
                // Its flow sequences start again: pieces of its old
                // packets would be taken for pieces of new ones.
                drops.add_n(DropReason::FragmentMissing, reasm.discard_stream(h.stream) as u64);
            }
            r.on_frame(tunnel, h.stream_seq);
        }
        let evicted = reasm.counters().evicted;
        let mut s = RxSummary {
            tunnel,
            spi,
            seq: opened.seq,
            newest: opened.newest,
            stream: h.stream,
            stream_seq: h.stream_seq,
            delivered: 0,
            held: 0,
            dropped: 0,
            probes: 0,
            replies: 0,
        };
        for rec in frame.records().map_while(Result::ok) {
            let d = match rec {
                Record::Data(d) => d,
                Record::Probe(p) => {
                    match to_answer.push((tunnel, ProbeReply::answer(&p, now))) {
                        Ok(()) => s.probes += 1,
                        Err(reason) => {
                            drops.add(reason);
                            s.dropped += 1;
                        }
                    }
                    continue;
                }
                Record::ProbeReply(reply) => {
                    let got = ReceivedReply {
                        tunnel,
                        reply,
                        at: now,
                    };
                    match replies.push(got) {
                        Ok(()) => {
                            s.replies += 1;
                            counters.replies += 1;
                        }
                        Err(reason) => {
                            drops.add(reason);
                            s.dropped += 1;
                        }
                    }
                    continue;
                }
            };
            let (meta, handle) = if d.is_whole() {
                let meta = PacketMeta {
                    bucket: d.bucket,
                    flow_seq: d.flow_seq,
                    stream_seq: h.stream_seq,
                };
                (meta, make_handle(d.data))
            } else {
                match reasm.push(h.stream, h.stream_seq, &d, now) {
                    Ok(Some(p)) => {
                        let meta = PacketMeta {
                            bucket: p.bucket,
                            flow_seq: p.flow_seq,
                            stream_seq: p.stream_seq,
                        };
                        (meta, make_handle(p.packet))
                    }
                    Ok(None) => continue,
                    Err(reason) => {
                        drops.add(reason);
                        s.dropped += 1;
                        continue;
                    }
                }
            };
            let Some(handle) = handle else {
                drops.add(DropReason::RxNoBuffer);
                s.dropped += 1;
                continue;
            };
            counters.packets += 1;
            let r = rord.as_deref_mut().expect("data frames have a stream checked above");
            // The frame was noted above (`on_frame`).
            match r.push_in_frame(handle, meta, now, &mut out) {
                Ok(Pushed::Released) => {}
                Ok(Pushed::Held) => s.held += 1,
                Err((_handle, reason)) => {
                    drops.add(reason);
                    s.dropped += 1;
                }
            }
        }
        drops.add_n(
            DropReason::FragmentMissing,
            reasm.counters().evicted - evicted,
        );
        s.delivered = out.n;
        Ok(s)
    }

    /// Skips gaps that are known lost or held too long, and times out
    /// reassembly; released handles go to `out`. Returns how many.
    pub fn poll(&mut self, now: Nanos, out: &mut impl Extend<H>) -> usize {
        let mut out = Counted { out, n: 0 };
        for r in self.reorderers.iter_mut().flatten() {
            r.poll(now, &mut out);
        }
        let missing = self.reasm.poll(now);
        self.drops
            .add_n(DropReason::FragmentMissing, missing as u64);
        self.counters.delivered += out.n as u64;
        out.n
    }

    /// When [`poll`](Self::poll) next has a timer to run.
    pub fn next_timeout(&self) -> Option<Nanos> {
        self.reorderers
            .iter()
            .flatten()
            .filter_map(|r| r.next_timeout())
            .chain(self.reasm.next_timeout())
            .min()
    }

    /// Releases every held packet (shutdown).
    pub fn flush(&mut self, out: &mut impl Extend<H>) -> usize {
        let mut out = Counted { out, n: 0 };
        for r in self.reorderers.iter_mut().flatten() {
            r.flush(&mut out);
        }
        self.counters.delivered += out.n as u64;
        out.n
    }

    /// Seals the next queued probe reply into `buf` (an ESP area, layout in
    /// [`crate::engine`]) for the tunnel its probe came on. Call until `None`
    /// after each burst.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((tunnel, reply)) = self.to_answer.pop() {
            let header = self.reply_sender.next_header();
            let frame_len = frame_area(buf, usize::MAX)
                .and_then(|area| FrameBuilder::new(area, header))
                .and_then(|mut b| b.push_probe_reply(&reply).then(|| b.finish()));
            let Some(frame_len) = frame_len else {
                self.drops.add(DropReason::EspNoTailroom);
                continue;
            };
            let mut leases = 0;
            match self.outbound[tunnel].seal(self.cfg.seq_lease, buf, frame_len, &mut leases) {
                Ok((spi, seq, esp_len)) => {
                    self.counters.probes_answered += 1;
                    return Some(Transmit {
                        tunnel,
                        esp_len,
                        spi,
                        seq,
                    });
                }
                Err(reason) => self.drops.add(reason),
            }
        }
        None
    }

    /// Probe replies waiting to be sent.
    pub fn pending_transmits(&self) -> usize {
        self.to_answer.len()
    }

    /// The next probe reply received, for the probing
    /// [`BundleTx::on_probe_reply`](super::BundleTx::on_probe_reply).
    pub fn poll_probe_reply(&mut self) -> Option<ReceivedReply> {
        self.replies.pop()
    }

    /// The next received probe reply, left in the queue.
    pub fn peek_probe_reply(&self) -> Option<&ReceivedReply> {
        self.replies.front()
    }
}
