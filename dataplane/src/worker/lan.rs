//! Delivery to a LAN port that resolves its hosts (no static
//! `next_hop_mac`): each packet about to leave for the LAN goes to its
//! destination's MAC when the destination is in one of the port's subnets,
//! else to the configured router's, found by the port's resolver (ARP /
//! neighbor discovery, braid-nat's `Resolver`).
//!
//! Runs once per TX flush, after the NAT (which may change the
//! destination), over the packets queued for the LAN. Answers are kept in
//! a small direct-mapped cache in front of the resolver for
//! [`CACHE_FOR`], so the resolver (which re-probes stale entries) is still
//! asked about each host every millisecond it is used.
//! A packet whose neighbor has not answered yet waits (at most
//! [`LAN_HOLD_MAX`] per worker and [`LAN_HOLD_PER_NEIGHBOR`] per neighbour,
//! [`LAN_HOLD_TIME`] each, like Linux's unresolved queue) and leaves in
//! order once it answers; one that does not answer drops what waited for
//! it. A multicast destination goes to its group's MAC; a broadcast or a
//! link-scope group is not forwarded. Every packet is counted:
//! `lan_next_hop_unresolved`, `lan_hold_full`, `lan_no_next_hop`,
//! `lan_not_forwarded`, or `lan_held` while it waits.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use braid_dpdk::Mbuf;
use braid_nat::resolver::{Lookup, FRAME_MAX};
use braid_tunnel::Nanos;

use super::{IcmpError, Worker, ETH};
use crate::counters::DpDrop;

/// Packets waiting for a LAN neighbor, per worker.
pub const LAN_HOLD_MAX: usize = 256;
/// Packets waiting for one LAN neighbor (or for the neighbours of one
/// slot of the cache), per worker: a quarter of the hold.
pub const LAN_HOLD_PER_NEIGHBOR: u16 = 64;
/// How long a packet waits for its neighbor (the resolver gives up after
/// 3 requests 1 s apart).
pub const LAN_HOLD_TIME: Nanos = 3_000_000_000;

/// Direct-mapped cache in front of the resolver: slots, and how long a
/// slot is trusted.
const CACHE_SLOTS: usize = 64;
const CACHE_FOR: Nanos = 1_000_000;

/// A LAN port's subnets and router, for delivery by destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnLink {
    /// (network, mask) of the port's IPv4 subnet.
    pub v4: Option<(u32, u32)>,
    /// (network, mask) of the port's IPv6 subnet.
    pub v6: Option<(u128, u128)>,
    /// Where destinations outside the subnets go; `None`: dropped.
    pub router: Option<IpAddr>,
    /// The port's own addresses (never resolved: a packet from the
    /// tunnels to one is for the gateway, not for a LAN neighbor).
    pub own: (Option<u32>, Option<u128>),
}

impl OnLink {
    /// The subnets of a port with these interface addresses.
    pub fn new(v4: Option<(Ipv4Addr, u8)>, v6: Option<(Ipv6Addr, u8)>, router: Option<IpAddr>) -> OnLink {
        let m4 = |len: u8| u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        let m6 = |len: u8| u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        OnLink {
            v4: v4.map(|(a, len)| (u32::from(a) & m4(len), m4(len))),
            v6: v6.map(|(a, len)| (u128::from(a) & m6(len), m6(len))),
            router,
            own: (v4.map(|(a, _)| u32::from(a)), v6.map(|(a, _)| u128::from(a))),
        }
    }

    /// Where a packet to `dst` goes: a multicast group's MAC (RFC 1112
    /// section 6.4, RFC 2464 section 7); nowhere for a link-scope group
    /// (224.0.0.0/24, RFC 5771; IPv6 interface- and link-local scopes) or
    /// a broadcast (a router forwards neither the limited broadcast nor,
    /// by default, a subnet's directed one: RFC 1812 section 5.3.5, RFC
    /// 2644); else the neighbour whose MAC to find.
    #[inline]
    pub fn deliver(&self, dst: IpAddr) -> Result<Result<IpAddr, [u8; 6]>, DpDrop> {
        match dst {
            IpAddr::V4(a) if a.octets()[..3] == [224, 0, 0] => Err(DpDrop::LanNotForwarded),
            IpAddr::V6(a) if a.is_multicast() && a.octets()[1] & 0x0f <= 2 => Err(DpDrop::LanNotForwarded),
            IpAddr::V4(a) if a.is_multicast() => {
                let o = a.octets();
                Ok(Err([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]))
            }
            IpAddr::V6(a) if a.is_multicast() => {
                let o = a.octets();
                Ok(Err([0x33, 0x33, o[12], o[13], o[14], o[15]]))
            }
            IpAddr::V4(a) if a.is_broadcast() => Err(DpDrop::LanNotForwarded),
            // The subnet's broadcast address (not on /31 and /32 links,
            // RFC 3021, whose every address is a host).
            IpAddr::V4(a) if self.v4.is_some_and(|(net, mask)| mask < u32::MAX - 1 && u32::from(a) == net | !mask) => Err(DpDrop::LanNotForwarded),
            // The gateway's own LAN address, from the tunnels (a host
            // behind the peer pinging it, say): not for a neighbor, and
            // asking the LAN who has it only asked ourselves (found by
            // review: held 3 s, then dropped, every 23 s a request).
            IpAddr::V4(a) if self.own.0 == Some(u32::from(a)) => Err(DpDrop::LanNotForwarded),
            IpAddr::V6(a) if self.own.1 == Some(u128::from(a)) => Err(DpDrop::LanNotForwarded),
            _ => self.next_hop(dst).map(Ok).ok_or(DpDrop::LanNoNextHop),
        }
    }

    /// Whose MAC a packet to `dst` goes to.
    #[inline]
    pub fn next_hop(&self, dst: IpAddr) -> Option<IpAddr> {
        let on_link = match dst {
            IpAddr::V4(a) => self.v4.is_some_and(|(net, mask)| u32::from(a) & mask == net),
            IpAddr::V6(a) => self.v6.is_some_and(|(net, mask)| u128::from(a) & mask == net),
        };
        if on_link {
            Some(dst)
        } else {
            self.router
        }
    }
}

/// The inner destination of a frame queued for the LAN.
#[inline]
fn slot_of(ip: IpAddr) -> usize {
    let k = match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v as u64) ^ ((v >> 64) as u64)
        }
    };
    (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % CACHE_SLOTS
}

#[inline]
fn inner_dst(d: &[u8]) -> Option<IpAddr> {
    match d.get(12..14)? {
        [0x08, 0x00] => {
            let a: [u8; 4] = d.get(ETH + 16..ETH + 20)?.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        [0x86, 0xdd] => {
            let a: [u8; 16] = d.get(ETH + 24..ETH + 40)?.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

/// A packet waiting for its LAN neighbor.
pub(super) struct Held {
    ip: IpAddr,
    since: Nanos,
    m: Mbuf,
}

/// What to do with a packet for the LAN.
enum Next {
    Mac([u8; 6]),
    Wait(IpAddr),
    Drop(DpDrop),
}

/// LAN delivery state of a worker.
pub(super) struct LanDelivery {
    pub held: VecDeque<Held>,
    /// Neighbors resolved lately: (address, MAC, when asked).
    pub cache: [Option<(IpAddr, [u8; 6], Nanos)>; CACHE_SLOTS],
    /// Packets in `held` per cache slot of their neighbour: one silent
    /// host cannot take the whole hold (hosts sharing a slot share its
    /// share).
    pub per_slot: [u16; CACHE_SLOTS],
    /// A LAN neighbor answered, or the held packets are due a look.
    pub retry: bool,
    /// Scratch: the packets that leave this flush.
    pub out: Vec<Mbuf>,
}

impl Default for LanDelivery {
    fn default() -> Self {
        LanDelivery { held: VecDeque::new(), cache: [None; CACHE_SLOTS], per_slot: [0; CACHE_SLOTS], retry: false, out: Vec::new() }
    }
}

impl Worker {
    /// Points the packets queued for the LAN (`lan_out`) at their next
    /// hop's MAC, holding those whose neighbor has not answered.
    pub(super) fn resolve_lan(&mut self) {
        let Some(on) = self.lan.on_link else { return };
        if self.lan_out.is_empty() && !self.lan_del.retry {
            return;
        }
        let now = self.now;
        let mut out = std::mem::take(&mut self.lan_del.out);
        // Packets that waited go first: they are older.
        if std::mem::take(&mut self.lan_del.retry) {
            for _ in 0..self.lan_del.held.len() {
                let Some(h) = self.lan_del.held.pop_front() else { break };
                self.lan_del.per_slot[slot_of(h.ip)] -= 1;
                match self.lan_mac(h.ip, now) {
                    Next::Mac(mac) => {
                        let mut m = h.m;
                        m.data_mut()[..6].copy_from_slice(&mac);
                        out.push(m);
                    }
                    Next::Wait(_) if now.saturating_sub(h.since) < LAN_HOLD_TIME => {
                        self.lan_del.per_slot[slot_of(h.ip)] += 1;
                        self.lan_del.held.push_back(h)
                    }
                    Next::Wait(_) => self.lan_drop(h.m, DpDrop::LanNextHopUnresolved),
                    Next::Drop(r) => self.lan_drop(h.m, r),
                }
            }
        }
        let mut queued = std::mem::take(&mut self.lan_out);
        for mut m in queued.drain(..) {
            let next = match inner_dst(m.data()).map(|d| on.deliver(d)) {
                Some(Ok(Ok(ip))) => self.lan_mac(ip, now),
                Some(Ok(Err(group))) => Next::Mac(group),
                Some(Err(r)) => Next::Drop(r),
                None => Next::Drop(DpDrop::LanNoNextHop),
            };
            match next {
                Next::Mac(mac) => {
                    m.data_mut()[..6].copy_from_slice(&mac);
                    out.push(m);
                }
                Next::Wait(ip) if self.lan_del.held.len() < LAN_HOLD_MAX && self.lan_del.per_slot[slot_of(ip)] < LAN_HOLD_PER_NEIGHBOR => {
                    self.lan_del.per_slot[slot_of(ip)] += 1;
                    self.lan_del.held.push_back(Held { ip, since: now, m })
                }
                Next::Wait(_) => self.counters.drops.add(DpDrop::LanHoldFull),
                Next::Drop(r) => self.lan_drop(m, r),
            }
        }
        self.lan_out = out;
        self.lan_del.out = queued;
    }

    /// A packet for the LAN dropped for `r`, counted. One whose host did
    /// not answer address resolution gets its sender an ICMP "host
    /// unreachable" / ICMPv6 "address unreachable" (RFC 1812 section
    /// 4.3.3.1; RFC 4861 section 7.2.2: MUST, rate-limited by RFC 4443).
    fn lan_drop(&mut self, m: Mbuf, r: DpDrop) {
        self.counters.drops.add(r);
        if r == DpDrop::LanNextHopUnresolved {
            self.tunnel_icmp_error(m, IcmpError::Unreachable);
        }
    }

    /// The MAC of LAN neighbor `ip`, asking for it when the resolver says
    /// so (the request leaves with the port's own frames).
    fn lan_mac(&mut self, ip: IpAddr, now: Nanos) -> Next {
        let slot = slot_of(ip);
        if let Some((at, mac, when)) = self.lan_del.cache[slot] {
            if at == ip && now.saturating_sub(when) < CACHE_FOR {
                return Next::Mac(mac);
            }
        }
        let mut frame = [0u8; FRAME_MAX];
        let (next, request) = match self.local[0].lookup(ip, now, &mut frame) {
            Lookup::Resolved { mac, request } => {
                self.lan_del.cache[slot] = Some((ip, mac.0, now));
                (Next::Mac(mac.0), request)
            }
            Lookup::Pending { request } => (Next::Wait(ip), request),
            Lookup::Failed => (Next::Drop(DpDrop::LanNextHopUnresolved), None),
        };
        if let Some(len) = request {
            // No mbuf: the resolver asks again at its next retry.
            match Mbuf::alloc(&self.pool).and_then(|mut r| r.append(len).map(|b| b.copy_from_slice(&frame[..len])).map(|()| r)) {
                Some(r) => {
                    self.counters.local.lan_requests += 1;
                    self.local_out[0].push(r);
                }
                None => self.counters.local.requests_lost += 1,
            }
        }
        next
    }

    /// Packets waiting for a LAN neighbor now.
    pub(super) fn lan_held(&self) -> usize {
        self.lan_del.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_link_destinations_go_to_themselves_others_to_the_router() {
        let router: IpAddr = "10.1.0.254".parse().unwrap();
        let on = OnLink::new(Some(("10.1.0.1".parse().unwrap(), 24)), Some(("fd00:1::1".parse().unwrap(), 64)), Some(router));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(on.next_hop(ip("10.1.0.9")), Some(ip("10.1.0.9")));
        assert_eq!(on.next_hop(ip("10.7.0.9")), Some(router));
        assert_eq!(on.next_hop(ip("fd00:1::9")), Some(ip("fd00:1::9")));
        assert_eq!(on.next_hop(ip("fd00:2::9")), Some(router));
        let bare = OnLink::new(Some(("10.1.0.1".parse().unwrap(), 24)), None, None);
        assert_eq!(bare.next_hop(ip("10.7.0.9")), None);
        assert_eq!(bare.next_hop(ip("fd00:1::9")), None, "no IPv6 subnet");
        let all = OnLink::new(Some(("10.1.0.1".parse().unwrap(), 0)), None, None);
        assert_eq!(all.next_hop(ip("192.0.2.1")), Some(ip("192.0.2.1")), "/0 is everything");
    }

    #[test]
    fn groups_go_to_their_mac_broadcasts_and_link_scopes_nowhere() {
        let on = OnLink::new(Some(("10.1.0.1".parse().unwrap(), 24)), Some(("fd00:1::1".parse().unwrap(), 64)), None);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(on.deliver(ip("239.129.2.3")), Ok(Err([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03])));
        assert_eq!(on.deliver(ip("ff0e::1:2:3")), Ok(Err([0x33, 0x33, 0x00, 0x02, 0x00, 0x03])));
        for not in ["10.1.0.255", "255.255.255.255", "224.0.0.5", "ff02::1", "ff01::2", "10.1.0.1", "fd00:1::1"] {
            assert_eq!(on.deliver(ip(not)), Err(DpDrop::LanNotForwarded), "{not}");
        }
        assert_eq!(on.deliver(ip("10.1.0.9")), Ok(Ok(ip("10.1.0.9"))));
        assert_eq!(on.deliver(ip("10.7.0.9")), Err(DpDrop::LanNoNextHop));
        // On /31 and /32 links every address is a host (RFC 3021).
        let p2p = OnLink::new(Some(("10.9.0.0".parse().unwrap(), 31)), None, None);
        assert_eq!(p2p.deliver(ip("10.9.0.1")), Ok(Ok(ip("10.9.0.1"))));
    }

    #[test]
    fn inner_destination_of_v4_and_v6_frames() {
        let mut f = vec![0u8; 14 + 40];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[30..34].copy_from_slice(&[10, 1, 0, 9]);
        assert_eq!(inner_dst(&f), Some("10.1.0.9".parse().unwrap()));
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[38..54].copy_from_slice(&"fd00:1::9".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(inner_dst(&f), Some("fd00:1::9".parse().unwrap()));
        assert_eq!(inner_dst(&f[..40]), None, "truncated");
        f[12..14].copy_from_slice(&[0x88, 0xcc]);
        assert_eq!(inner_dst(&f), None);
    }
}
