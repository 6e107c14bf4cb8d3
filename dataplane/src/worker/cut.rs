//! Packets bigger than the next link, cut in software: plain mode's TCP
//! segmentation and IPv4 inner fragmentation before sealing (`plain_gso`) and outer IPv4 or IPv6
//! fragments (`send_fragments`, with `outer_fragmentation`), and packets for the
//! LAN cut to its MTU (`fit_lan_mtu`), unless the LAN port's TSO cuts
//! them (`to_tso`). Every piece cut here is a new mbuf, all pieces or
//! none (`cut_into`); see ARCHITECTURE.md.

use braid_dpdk::mbuf::{TxOffload, TX_IPV4, TX_IPV6, TX_IP_CKSUM, TX_TCP_SEG};
use braid_dpdk::{Mbuf, Mempool};
use braid_tunnel::Nanos;

use super::{frag_ident, Engine, Worker, ETH};
use crate::counters::DpDrop;
use crate::encap::{fragment_chunk, fragment_chunk_v6, fragment_ipv4, fragment_ipv4_count, fragment_ipv6, fragment_ipv6_count, IP_AT};
use crate::segment;

impl Worker {
    /// Cuts the frames of `lan_out` bigger than the LAN port's MTU (from a
    /// peer whose LAN has a larger one): TCP into segments
    /// (`segment::segment_tcp`; one whose checksum does not verify is
    /// dropped, `lan_bad_checksum`, rather than given fresh ones), other
    /// IPv4 without DF or options into fragments, each piece a new mbuf
    /// (all or none: `lan_no_mbuf`); the rest is dropped (`lan_too_big`)
    /// rather than handed to the port as a giant, and its sender gets an
    /// ICMP error through the tunnels (`Worker::lan_too_big_error`). A LAN port with TSO
    /// cuts TCP itself (IPv6, or headers longer than its PMD copies, only
    /// if it can): such a packet goes to it whole, checked the same way
    /// (`lan_cut.tso`). One length compare per frame when nothing is too
    /// big.
    pub(super) fn fit_lan_mtu(&mut self) {
        let mtu = usize::from(self.lan.mtu);
        if mtu == 0 || self.lan_out.iter().all(|m| m.data_len() <= ETH + mtu) {
            return;
        }
        let mut queued = std::mem::take(&mut self.lan_out);
        let mut out = std::mem::take(&mut self.lan_fit);
        for mut m in queued.drain(..) {
            if m.data_len() <= ETH + mtu {
                out.push(m);
                continue;
            }
            if let Some(tso) = self.lan.tso {
                match segment::tso_request(m.data(), tso.ip_mtu(mtu)) {
                    Ok(Some(r)) if (tso.ipv6 || !r.v6) && ETH + r.l3 + r.l4 <= tso.max_headers => {
                        to_tso(&mut m, &r);
                        out.push(m);
                        let c = &mut self.counters.lan_cut;
                        (c.tso, c.tso_segments) = (c.tso + 1, c.tso_segments + r.segments as u64);
                        continue;
                    }
                    Err(segment::NoCut::BadChecksum) => {
                        self.counters.drops.add(DpDrop::LanBadChecksum);
                        continue;
                    }
                    // Cut here: what the port does not cut (IPv6, long
                    // headers, SYN or CWR set), or not TCP.
                    _ => {}
                }
            }
            let frame = m.data();
            let df = frame.get(12..14) == Some(&[0x08, 0x00]) && frame.get(ETH + 6).is_some_and(|f| f & 0x40 != 0);
            let chunk = fragment_chunk(mtu);
            let (scratch, pool) = (&mut self.frag_scratch, &self.pool);
            let (cut, tcp, drop) = match segment::tcp_segments(frame, mtu) {
                Ok(n) => (cut_into(pool, scratch, n, &mut out, |e| segment::segment_tcp(frame, mtu, e)), true, DpDrop::LanNoMbuf),
                Err(segment::NoCut::BadChecksum) => (None, true, DpDrop::LanBadChecksum),
                Err(segment::NoCut::NotTcp) => match fragment_ipv4_count(frame, chunk).filter(|_| !df) {
                    Some(n) => (cut_into(pool, scratch, n, &mut out, |e| fragment_ipv4(frame, chunk, e)), false, DpDrop::LanNoMbuf),
                    None => (None, false, DpDrop::LanTooBig),
                },
            };
            let c = &mut self.counters.lan_cut;
            match cut {
                Some(n) if tcp => (c.segmented, c.segments) = (c.segmented + 1, c.segments + n as u64),
                Some(n) => (c.fragmented, c.fragments) = (c.fragmented + 1, c.fragments + n as u64),
                None => {
                    self.counters.drops.add(drop);
                    if drop == DpDrop::LanTooBig {
                        self.lan_too_big_error(m);
                    }
                }
            }
        }
        self.lan_out = out;
        self.lan_fit = queued;
    }

    /// An outer packet bigger than WAN port `wan`'s MTU, sent as IPv4 or
    /// IPv6 fragments, each in a new mbuf; false (nothing sent) without
    /// mbufs for every fragment. The fragments get an identification of
    /// their own from this worker's share of the space (`frag_ident`), so
    /// that two workers' fragments never mix at the peer: IPv4's 16 bits
    /// of it, IPv6's 32 (a Fragment header's).
    #[cold]
    pub(super) fn send_fragments(&mut self, mut m: Mbuf, wan: usize, tag: (u16, u16)) -> bool {
        let (k, workers) = (self.frag_count, self.workers());
        self.frag_count = self.frag_count.wrapping_add(1);
        let mtu = usize::from(self.wans[wan].mtu);
        let out = &mut self.wan_out[wan];
        let made = if m.data().get(12..14) == Some(&[0x86, 0xdd]) {
            let id = frag_ident(self.id, workers, k, 32);
            let chunk = fragment_chunk_v6(mtu);
            let n = fragment_ipv6_count(m.data(), chunk).unwrap_or(0);
            cut_into(&self.pool, &mut self.frag_scratch, n, out, |e| fragment_ipv6(m.data(), chunk, id, e))
        } else {
            let id = frag_ident(self.id, workers, k, 16) as u16;
            if let Some(f) = m.data_mut().get_mut(IP_AT + 4..IP_AT + 6) {
                f.copy_from_slice(&id.to_be_bytes());
            }
            let chunk = fragment_chunk(mtu);
            let n = fragment_ipv4_count(m.data(), chunk).unwrap_or(0);
            cut_into(&self.pool, &mut self.frag_scratch, n, out, |e| fragment_ipv4(m.data(), chunk, e))
        };
        let Some(made) = made else {
            return false;
        };
        self.wan_tags[wan].extend(std::iter::repeat_n(tag, made));
        self.counters.frags.fragmented += 1;
        self.counters.frags.sent += made as u64;
        true
    }

    /// Plain mode: a packet from the LAN too big for bundle `b`'s tunnels,
    /// cut into pieces that fit, each sealed as its own ESP packet on the
    /// tunnel the balancer picks for it: TCP into segments
    /// (`segment::segment_tcp`, as a NIC's TSO would), other IPv4 without
    /// DF or options into fragments (inner fragmentation, RFC 4459
    /// section 3.1: the peer passes them on, the destination reassembles).
    /// All pieces or none (`no_mbuf`); a TCP packet whose checksum does
    /// not verify is dropped (`bad_inner_checksum`). `Err` gives back a
    /// packet that can be neither (too big: IPv6, IPv4 with DF or options).
    /// A sender's own fragment is cut into smaller ones (RFC 791).
    #[cold]
    pub(super) fn plain_gso(&mut self, b: usize, m: Mbuf, now: Nanos) -> Result<(), Mbuf> {
        let Engine::Plain(p) = &self.bundles[b].engine else { return Err(m) };
        // Pieces of one ESP packet each, no outer fragments (`clamp_mtu`,
        // not `inner_mtu`): with outer fragmentation on a small WAN MTU,
        // pieces to `inner_mtu` were bigger than the pool's mbufs and
        // every such packet was lost as `no_mbuf` (found by review).
        let mtu = usize::from(p.clamp_mtu);
        let frame = m.data();
        let df = frame.get(12..14) == Some(&[0x08, 0x00]) && frame.get(ETH + 6).is_some_and(|f| f & 0x40 != 0);
        let chunk = fragment_chunk(mtu);
        let (n, tcp) = match segment::tcp_segments(frame, mtu) {
            Ok(n) => (n, true),
            Err(segment::NoCut::BadChecksum) => {
                self.counters.drops.add(DpDrop::BadInnerChecksum);
                return Ok(());
            }
            Err(segment::NoCut::NotTcp) => match fragment_ipv4_count(frame, chunk).filter(|_| !df && chunk >= 8) {
                Some(n) => (n, false),
                None => return Err(m),
            },
        };
        let mut pieces = std::mem::take(&mut self.gso_pieces);
        let cut = if tcp {
            cut_into(&self.pool, &mut self.frag_scratch, n, &mut pieces, |e| segment::segment_tcp(frame, mtu, e))
        } else {
            cut_into(&self.pool, &mut self.frag_scratch, n, &mut pieces, |e| fragment_ipv4(frame, chunk, e))
        };
        if cut.is_none() {
            self.counters.drops.add(DpDrop::NoMbuf);
            self.gso_pieces = pieces;
            return Ok(());
        }
        let c = &mut self.counters.tunnel_cut;
        if tcp {
            (c.segmented, c.segments) = (c.segmented + 1, c.segments + n as u64);
        } else {
            (c.fragmented, c.fragments) = (c.fragmented + 1, c.fragments + n as u64);
        }
        // A packet's fragments go on one tunnel: a peer that reassembles
        // them (for its NAT) with several workers gets them on one worker.
        // They are one pick of their whole length (`Balancer::stay` would
        // leave the balancer's precomputed schedule for its slower loop
        // until the paths change; found by review). Segments are packets
        // of their own.
        let whole = match &mut self.bundles[b].engine {
            Engine::Plain(p) if !tcp => p.balancer.pick(pieces.iter().map(|m| m.data_len() - ETH).sum(), now),
            _ => None,
        };
        for piece in pieces.drain(..) {
            let Engine::Plain(p) = &mut self.bundles[b].engine else { break };
            let t = if tcp { p.balancer.pick(piece.data_len() - ETH, now) } else { whole };
            match t {
                Some(t) => self.send_plain(b, t, piece),
                None => self.counters.drops.add(DpDrop::NoPath),
            }
        }
        self.gso_pieces = pieces;
        Ok(())
    }
}

/// Hands the TCP packet in `m` (checked: `r`) to the port's TSO whole: its
/// headers readied (`segment::prepare_tso`), padding after the IP packet
/// trimmed, the segmentation request in the mbuf.
fn to_tso(m: &mut Mbuf, r: &segment::TsoRequest) {
    let pad = m.data_len() - (ETH + r.ip_len);
    if pad > 0 {
        m.trim(pad);
    }
    segment::prepare_tso(m.data_mut(), r);
    let flags = TX_TCP_SEG | if r.v6 { TX_IPV6 } else { TX_IPV4 | TX_IP_CKSUM };
    m.set_tx_offload(TxOffload {
        flags,
        l2_len: ETH as u8,
        l3_len: r.l3 as u16,
        l4_len: r.l4 as u8,
        tso_segsz: r.mss as u16,
        ..Default::default()
    });
}

/// Cuts a packet into `n` pieces, each a new mbuf appended to `out`:
/// `cut` is a fragmenter or segmenter that calls the emitter it is given
/// once per piece (headers, then part of the payload) and returns how many.
/// All pieces or none: `None` (nothing added) when the pool cannot give
/// `n` mbufs or a piece does not fit one; else `n`.
fn cut_into(
    pool: &Mempool,
    scratch: &mut Vec<Mbuf>,
    n: usize,
    out: &mut Vec<Mbuf>,
    cut: impl FnOnce(&mut dyn FnMut(&[u8], &[u8])) -> usize,
) -> Option<usize> {
    if n == 0 || !Mbuf::alloc_bulk(pool, scratch, n) {
        return None;
    }
    let (mut k, mut fit) = (0, true);
    let made = cut(&mut |h: &[u8], part: &[u8]| {
        match scratch.get_mut(k).and_then(|p| p.append(h.len() + part.len())) {
            Some(buf) => {
                buf[..h.len()].copy_from_slice(h);
                buf[h.len()..].copy_from_slice(part);
            }
            None => fit = false,
        }
        k += 1;
    });
    if !fit || made != n {
        scratch.clear();
        return None;
    }
    out.append(scratch);
    Some(made)
}
