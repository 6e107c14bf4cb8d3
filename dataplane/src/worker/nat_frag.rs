//! Inner IPv4 fragments of traffic the NAT translates, made whole before
//! it: only the first fragment carries the ports a session is found by,
//! so a NAT that looked at fragments one by one could translate none of
//! the later ones (Linux's conntrack reassembles for the same reason).
//! One DPDK reassembly table per direction and worker
//! (`braid_dpdk::ip_frag`), apart from the outer fragments' table so that
//! each direction's counters say what happened to its own fragments.
//!
//! A packet made whole goes on as one packet: translated, then carried by
//! the bundle (cut across frames like any big inner packet) or, in plain
//! mode, cut again into fragments that fit the tunnel (`plain_gso`); on
//! the way to the LAN, cut to the LAN's MTU (`fit_lan_mtu`). Fragments of
//! traffic the NAT does not translate pass untouched, as before.
//!
//! With several workers, the fragments of one packet must reach one
//! worker: a LAN NIC's RSS hashes IPv4 fragments by their addresses, and a
//! bundle stream's frames all reach its one owner; in plain mode,
//! fragments that crossed tunnels owned by different workers are not made
//! whole (`discarded` after the timeout).

use braid_dpdk::mbuf::TxOffload;
use braid_dpdk::Mbuf;
use braid_tunnel::wire::checksum;
use braid_tunnel::Nanos;

use super::{is_ipv4, route, Worker, ETH, IP_AT};
use crate::counters::DpDrop;

/// Inner packets being reassembled at once, per worker and direction.
/// DPDK holds at most 7 fragments of a packet (the 8th completes it or
/// is refused): at most 896 mbufs held per direction, of the 8,192 a
/// worker's share of the pool has.
pub(super) const NAT_FRAG_FLOWS: u32 = 128;

/// `Worker::nat_frag` by direction.
pub(super) const OUT: usize = 0;
pub(super) const IN: usize = 1;

/// Whether `frame` (Ethernet + IPv4) is a fragment: MF set or an offset.
#[inline]
pub(super) fn is_ipv4_fragment(frame: &[u8]) -> bool {
    is_ipv4(frame) && frame.get(IP_AT + 6..IP_AT + 8).is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x3fff != 0)
}

/// The IPv4 total length of a fragment whose header checks (version,
/// lengths within the frame, header checksum: DPDK's reassembly trusts
/// each fragment's header and zeroes the whole packet's checksum).
fn checked_ip_len(frame: &[u8]) -> Option<usize> {
    let ip = frame.get(IP_AT..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if ip.len() < 20 || ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    (total >= ihl && total <= ip.len() && checksum::sum(&ip[..ihl]) == 0xffff).then_some(total)
}

impl Worker {
    /// Takes the IPv4 fragments of `v[from..]` that the NAT translates
    /// (from the LAN when `d` is [`OUT`]) into direction `d`'s
    /// reassembly, keeping the order of the rest; each packet made whole,
    /// in one segment with a correct header checksum, takes the place of
    /// its last fragment. A
    /// fragment whose header does not check stays, for routing
    /// (`bad_inner_ip`, from the LAN) or the NAT (`fragment`) to drop. A
    /// whole packet no mbuf holds is dropped: `too_big`
    /// from the LAN, `lan_too_big` from a tunnel.
    pub(super) fn take_nat_fragments(&mut self, v: &mut Vec<Mbuf>, from: usize, d: usize, now: Nanos) {
        let outbound = d == OUT;
        if !v.get(from..).is_some_and(|rest| rest.iter().any(|m| self.nat_wants_whole(m, outbound))) {
            return;
        }
        let mut todo = std::mem::take(&mut self.nat_frag_todo);
        todo.extend(v.drain(from..));
        for mut m in todo.drain(..) {
            let take = self.nat_wants_whole(&m, outbound);
            let total = if take && m.is_contiguous() { checked_ip_len(m.data()) } else { None };
            let Some(total) = total else {
                v.push(m);
                continue;
            };
            // Ethernet pads a short fragment: DPDK takes the mbuf's length.
            let pad = m.data_len() - ETH - total;
            if pad > 0 {
                m.trim(pad);
            }
            let frags = if outbound { &mut self.counters.nat.out_frags } else { &mut self.counters.nat.in_frags };
            frags.taken += 1;
            let made = match self.nat_frag[d].push(m, ETH, now) {
                Ok(Some(w)) => w,
                Ok(None) => continue,
                // Not reached: checked to be an IPv4 fragment above.
                Err(m) => {
                    frags.taken -= 1;
                    v.push(m);
                    continue;
                }
            };
            frags.reassembled += 1;
            let made = match (made.linearized(&self.pool), &self.jumbo) {
                (Err(w), Some(j)) => w.linearized(j),
                (r, _) => r,
            };
            match made {
                Ok(mut w) => {
                    // DPDK left the header checksum to TX offload (zero).
                    w.set_tx_offload(TxOffload::default());
                    let ihl = usize::from(w.data()[IP_AT] & 0x0f) * 4;
                    let ip = &mut w.data_mut()[IP_AT..IP_AT + ihl];
                    ip[10..12].fill(0);
                    let c = !checksum::sum(ip);
                    ip[10..12].copy_from_slice(&c.to_be_bytes());
                    v.push(w);
                }
                Err(_) => self.counters.drops.add(if outbound { DpDrop::TooBig } else { DpDrop::LanTooBig }),
            }
        }
        self.nat_frag_todo = todo;
    }

    /// Whether `m` is an IPv4 fragment the NAT may translate: from the
    /// LAN (`outbound`), for the egress its route gives (unrouted: not
    /// taken, the route drops it); from a tunnel, to a NAT address.
    fn nat_wants_whole(&self, m: &Mbuf, outbound: bool) -> bool {
        let Some(nat) = self.nat.as_deref() else { return false };
        if !is_ipv4_fragment(m.data()) {
            return false;
        }
        let egress = if outbound {
            match route(m, &self.routes, &self.peer_bundle) {
                Ok((peer, _, _)) => Some(peer as u32),
                Err(_) => return false,
            }
        } else {
            None
        };
        nat.translates_fragment(&m.data()[IP_AT..], egress)
    }
}
