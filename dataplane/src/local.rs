//! Frames for the gateway itself: ARP requests, IPv6 neighbor solicitations
//! and ICMP/ICMPv6 echo requests addressed to a port's own addresses. Each
//! port has a [`Responder`] around a braid-nat `Resolver` (own addresses
//! from the port's `ipv4`/`ipv6`, its MAC); the reply is written into the
//! request's own mbuf and leaves by the port the request came in on.
//!
//! The same resolver resolves a WAN port's next hop when the tables give
//! it by address ([`Responder::lookup`], from the worker's timers); the
//! answers come back here and are learned (`Handled::Learned`).
//!
//! The per-packet path only calls [`Responder::wants`]: the EtherType, and
//! for IP one protocol byte and the destination address. Everything it
//! does not want (and every echo it cannot answer) keeps the ordinary path.
//! The resolver makes cache entries only for the neighbours it looks up
//! (requests update those, never add one), so ARP/NS floods cannot grow
//! its cache; claims on our own addresses are refused and counted.

use braid_dpdk::Mbuf;
use std::net::IpAddr;

use braid_nat::resolver::{Lookup, Resolver, ResolverConfig, ResolverCounters, FRAME_MAX};
use braid_tunnel::wire::ethernet::Address;
use braid_tunnel::Nanos;

use crate::counters::{LocalDrop, LocalStats};
use crate::mld::{Heard, Mld};
use crate::worker::L2;

/// EtherTypes (IEEE registry).
const ARP: [u8; 2] = [0x08, 0x06];
const IPV4: [u8; 2] = [0x08, 0x00];
const IPV6: [u8; 2] = [0x86, 0xdd];
/// Offsets in an untagged Ethernet frame.
const V4_PROTO: usize = 14 + 9;
const V4_DST: usize = 14 + 16;
const V6_NEXT: usize = 14 + 6;
const V6_DST: usize = 14 + 24;
const ICMPV6_TYPE: usize = 14 + 40;
/// ICMPv6 neighbor solicitation and advertisement (RFC 4861 section 4).
const ND_TYPES: [u8; 2] = [135, 136];

/// Neighbor cache bound of a LAN port that resolves its hosts.
pub const LAN_NEIGHBORS: usize = 4096;

/// What became of a frame given to [`Responder::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The mbuf now holds the reply: send it out of the same port.
    Reply,
    /// Counted (a [`LocalDrop`] reason) and to be freed.
    Dropped,
    /// An answer to one of our requests: the resolver learned (or
    /// refreshed) a next hop from it; to be freed.
    Learned,
    /// Not for the responder after all: the ordinary path takes it.
    Pass,
}

/// One port's responder.
pub struct Responder {
    v4: Option<[u8; 4]>,
    v6: Option<[u8; 16]>,
    /// The port's link-local address, when it has an IPv6 one.
    v6_ll: Option<[u8; 16]>,
    resolver: Resolver,
    /// MLD for the port's solicited-node groups (a port with an IPv6
    /// address and no kernel tap: [`Responder::listen_mld`]).
    mld: Option<Mld>,
}

pub use crate::config::link_local;

impl Responder {
    /// The responder of a port with `l2`'s MAC and addresses. A port with
    /// an IPv6 address also has its link-local one ([`link_local`]): its
    /// solicitations for link-local neighbors come from it (a router on
    /// the link by its link-local address, say; the others come from the
    /// port's address) and it answers for it (routers check their
    /// neighbors at that address).
    pub fn new(l2: &L2) -> Responder {
        let ll = l2.ipv6.map(|_| link_local(l2.mac));
        let cfg = ResolverConfig {
            mac: Address(l2.mac),
            ipv4: l2.ipv4.into_iter().collect(),
            // Solicitations leave from the one of the target's scope.
            ipv6: ll.into_iter().chain(l2.ipv6).collect(),
            // A LAN that resolves its hosts has many neighbors.
            capacity: if l2.on_link.is_some() { LAN_NEIGHBORS } else { ResolverConfig::default().capacity },
            ..Default::default()
        };
        Responder {
            v4: l2.ipv4.map(|a| a.octets()),
            v6: l2.ipv6.map(|a| a.octets()),
            v6_ll: ll.map(|a| a.octets()),
            resolver: Resolver::new(cfg),
            mld: None,
        }
    }

    /// Makes the port report its solicited-node groups by MLD (a port
    /// with an IPv6 address; one with a kernel tap leaves it to the
    /// kernel): queries are answered from now on, and with `announce`
    /// the state-change reports go out first (one worker announces).
    pub fn listen_mld(&mut self, mac: [u8; 6], announce: bool, now: Nanos) {
        let (Some(ll), Some(a)) = (self.v6_ll, self.v6) else { return };
        let mut m = Mld::new(mac, ll.into(), &[a.into()], crate::nat::boot_seed() ^ u64::from(mac[5]));
        if announce {
            m.start(now);
        }
        self.mld = Some(m);
    }

    /// No MLD here: the port's kernel tap reports.
    pub fn stop_mld(&mut self) {
        self.mld = None;
    }

    /// MLD reports due at `now`, each frame given to `send`; the number
    /// written.
    pub fn mld_reports(&mut self, now: Nanos, send: impl FnMut(&[u8])) -> usize {
        self.mld.as_mut().map_or(0, |m| m.poll(now, send))
    }

    /// Whether a received frame may be for the gateway itself: ARP; ICMP
    /// to our IPv4 address; ICMPv6 to our IPv6 address, to our link-local
    /// one or to a multicast group (neighbor solicitations go to the
    /// solicited-node group).
    #[inline]
    pub fn wants(&self, d: &[u8]) -> bool {
        if d.len() < 14 {
            return false;
        }
        match [d[12], d[13]] {
            ARP => true,
            IPV4 => self.v4.is_some_and(|a| d.len() >= V4_DST + 4 && d[V4_PROTO] == 1 && d[V4_DST..V4_DST + 4] == a),
            IPV6 => self.v6.is_some_and(|a| {
                d.len() > ICMPV6_TYPE
                    && (d[V6_NEXT] == 58
                        && (d[V6_DST] == 0xff || d[V6_DST..V6_DST + 16] == a || self.v6_ll.is_some_and(|ll| d[V6_DST..V6_DST + 16] == ll))
                        || d[V6_NEXT] == 0 && d[V6_DST] == 0xff && self.mld.is_some())
            }),
            _ => false,
        }
    }

    /// Whether an IPv4 or IPv6 frame is to the port's own (non
    /// link-local) address, where its tunnels are.
    #[inline]
    pub fn is_own_address(&self, d: &[u8]) -> bool {
        match d.get(12..14) {
            Some(et) if et == IPV4 => self.v4.is_some_and(|a| d.get(V4_DST..V4_DST + 4) == Some(&a[..])),
            Some(et) if et == IPV6 => self.v6.is_some_and(|a| d.get(V6_DST..V6_DST + 16) == Some(&a[..])),
            _ => false,
        }
    }

    /// Whether a frame is for the gateway itself, beyond what the
    /// responder answers: the exception path gives it to the kernel (a
    /// port with `kernel_tap`). Not IP and not ARP (LLDP, say); IPv4 to
    /// the port's address, to the limited broadcast (DHCP) or to a
    /// link-local multicast group (224.0.0.0/24, never forwarded: RFC
    /// 5771); IPv6 to the port's address, to a link-local address
    /// (fe80::/10) or to an interface- or link-local multicast group
    /// (ff01::/16, ff02::/16). Other multicast is not the gateway's (the
    /// LAN path does not route it either: `worker::lan_mac_drop`).
    #[inline]
    pub fn for_gateway(&self, d: &[u8]) -> bool {
        if d.len() < 14 {
            return false;
        }
        match [d[12], d[13]] {
            IPV4 => d.get(V4_DST..V4_DST + 4).is_some_and(|dst| {
                self.v4.is_some_and(|a| dst == a) || dst == [255; 4] || dst[..3] == [224, 0, 0]
            }),
            IPV6 => d.get(V6_DST..V6_DST + 16).is_some_and(|dst| {
                self.v6.is_some_and(|a| dst == a)
                    || (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80)
                    || (dst[0] == 0xff && (1..=2).contains(&(dst[1] & 0x0f)))
            }),
            ARP => false,
            _ => true,
        }
    }

    /// Answers a frame [`wants`](Self::wants) took, in place, counting it
    /// in `stats`. The mbuf must be one segment.
    pub fn handle(&mut self, m: &mut Mbuf, now: Nanos, stats: &mut LocalStats) -> Handled {
        let d = m.data();
        let et = [d[12], d[13]];
        if let (IPV6, 0, Some(mld)) = (et, d[V6_NEXT], self.mld.as_mut()) {
            // Multicast behind a hop-by-hop header: MLD. A query for our
            // groups is answered from the timers; other listeners'
            // reports and the rest take the ordinary path (dropped there,
            // as before MLD).
            if mld.on_frame(&d[14..], now) == Heard::Query {
                stats.received += 1;
                stats.mld_queries += 1;
                return Handled::Learned;
            }
            return Handled::Pass;
        }
        let nd = et == IPV6 && ND_TYPES.contains(&d[ICMPV6_TYPE]);
        if et == ARP || nd {
            stats.received += 1;
            let before = self.resolver.counters().clone();
            let mut out = [0u8; FRAME_MAX];
            let Some(len) = self.resolver.on_frame(d, now, &mut out) else {
                if self.resolver.counters().learned > before.learned {
                    stats.learned += 1;
                    return Handled::Learned;
                }
                stats.drop(why_not(&before, self.resolver.counters()));
                return Handled::Dropped;
            };
            if !resize(m, len) {
                stats.drop(LocalDrop::NoRoom);
                return Handled::Dropped;
            }
            m.data_mut().copy_from_slice(&out[..len]);
            if nd {
                stats.na_replies += 1;
            } else {
                stats.arp_replies += 1;
            }
            return Handled::Reply;
        }
        if !self.resolver.answer_echo(m.data_mut()) {
            // An echo request to one of our addresses the responder
            // declined (a damaged checksum, a source no host has, sent to
            // the link's broadcast): dropped here, not routed on (found by
            // review: with a covering route it went into the tunnels).
            if self.is_own_address(m.data()) && is_echo_request(m.data()) {
                stats.received += 1;
                stats.drop(LocalDrop::Malformed);
                return Handled::Dropped;
            }
            return Handled::Pass;
        }
        stats.received += 1;
        if et == IPV4 {
            stats.echo_v4_replies += 1;
        } else {
            stats.echo_v6_replies += 1;
        }
        Handled::Reply
    }

    /// Where to send to next hop `ip` at `now` (see braid-nat's
    /// `Resolver::lookup`); a request due is written to `out`.
    pub fn lookup(&mut self, ip: IpAddr, now: Nanos, out: &mut [u8; FRAME_MAX]) -> Lookup {
        self.resolver.lookup(ip, now, out)
    }

    /// Neighbor cache entries.
    pub fn neighbors(&self) -> usize {
        self.resolver.len()
    }

    /// The resolver's own counters.
    pub fn resolver_counters(&self) -> &ResolverCounters {
        self.resolver.counters()
    }
}

/// An ARP reply, a gratuitous ARP request (an announcement: sender and
/// target address the same, RFC 5227 section 3; `arping -U`, a host that
/// moved or failed over) or an IPv6 neighbor advertisement: what may
/// teach a resolver of another worker, or the kernel behind a port's tap,
/// a binding (RSS gives every ARP frame to one queue). ARP for Ethernet
/// and IPv4 from a unicast MAC only: anything else no resolver would take,
/// and is not copied around (found by review: an ARP request announcing a
/// new MAC reached one worker only, and any frame with the reply opcode
/// was copied to every worker).
#[inline]
pub fn is_neighbor_answer(d: &[u8]) -> bool {
    match d.get(12..14) {
        Some(et) if et == ARP => {
            let Some(a) = d.get(14..42) else { return false };
            let ethernet_ipv4 = a[..6] == [0, 1, 0x08, 0x00, 6, 4] && a[8] & 1 == 0;
            ethernet_ipv4 && (a[6..8] == [0, 2] || (a[6..8] == [0, 1] && a[14..18] == a[24..28]))
        }
        // Hop limit 255: from the link (RFC 4861 section 7.1.2); the
        // resolvers would refuse anything else, so it is not told to them.
        Some(et) if et == IPV6 => d.len() > ICMPV6_TYPE && d[V6_NEXT] == 58 && d[V6_NEXT + 1] == 255 && d[ICMPV6_TYPE] == 136,
        _ => false,
    }
}

/// An ICMP echo request or ICMPv6 echo request (IPv4 without options
/// looked at where `wants` does; IPv6 with ICMPv6 first).
fn is_echo_request(d: &[u8]) -> bool {
    match d.get(12..14) {
        // Not a fragment: a large ping is the kernel's to reassemble (the
        // exception path), not dropped here (found by review).
        Some(et) if et == IPV4 => {
            d.get(V4_PROTO) == Some(&1)
                && d.get(14).is_some_and(|v| v & 0x0f == 5)
                && d.get(20..22).is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x3fff == 0)
                && d.get(34) == Some(&8)
        }
        Some(et) if et == IPV6 => d.get(V6_NEXT) == Some(&58) && d.get(ICMPV6_TYPE) == Some(&128),
        _ => false,
    }
}

/// Why the resolver wrote no reply, from what its counters did.
fn why_not(before: &ResolverCounters, after: &ResolverCounters) -> LocalDrop {
    if after.own_addr_conflict > before.own_addr_conflict {
        LocalDrop::OwnAddrConflict
    } else if after.unsolicited > before.unsolicited {
        LocalDrop::Unsolicited
    } else if after.ignored > before.ignored {
        LocalDrop::Malformed
    } else {
        LocalDrop::NotForUs
    }
}

/// Makes the mbuf's data exactly `len` bytes long.
fn resize(m: &mut Mbuf, len: usize) -> bool {
    let have = m.data_len();
    if have < len {
        m.append(len - have).is_some()
    } else {
        m.trim(have - len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(v4: Option<&str>, v6: Option<&str>) -> Responder {
        Responder::new(&L2 {
            mac: [2, 0, 0, 0, 0, 1],
            next_hop_mac: [2, 0, 0, 0, 0, 2],
            next_hop: None,
            ip_csum_offload: false,
            udp_csum_offload: false,
            tso: None,
            mtu: 1500,
            ipv4: v4.map(|a| a.parse().unwrap()),
            ipv6: v6.map(|a| a.parse().unwrap()),
            on_link: None,
        })
    }

    fn v4(proto: u8, dst: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 28];
        f[12..14].copy_from_slice(&IPV4);
        f[V4_PROTO] = proto;
        f[V4_DST..V4_DST + 4].copy_from_slice(&dst);
        f
    }

    fn v6(next: u8, dst: &str) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8];
        f[12..14].copy_from_slice(&IPV6);
        f[V6_NEXT] = next;
        f[V6_DST..V6_DST + 16].copy_from_slice(&dst.parse::<core::net::Ipv6Addr>().unwrap().octets());
        f
    }

    #[test]
    fn wants_only_arp_nd_and_icmp_to_us() {
        let r = port(Some("10.1.0.1"), Some("fd00:1::1"));
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&ARP);
        assert!(r.wants(&arp));
        assert!(r.wants(&v4(1, [10, 1, 0, 1])), "ICMP to us");
        assert!(!r.wants(&v4(17, [10, 1, 0, 1])), "UDP to us keeps the ordinary path");
        assert!(!r.wants(&v4(1, [10, 2, 0, 1])), "ICMP to someone else");
        assert!(r.wants(&v6(58, "fd00:1::1")));
        assert!(r.wants(&v6(58, "ff02::1:ff00:1")), "solicited-node group");
        assert!(!r.wants(&v6(17, "fd00:1::1")));
        assert!(!r.wants(&v6(58, "fd00:2::1")));
        // The link-local address 02:00:00:00:00:01 forms (the U/L bit
        // flipped, ff:fe in the middle), and no other.
        assert_eq!(link_local([2, 0, 0, 0, 0, 1]), "fe80::ff:fe00:1".parse::<core::net::Ipv6Addr>().unwrap());
        assert_eq!(link_local([0x52, 0x54, 0, 0x12, 0x34, 0x56]), "fe80::5054:ff:fe12:3456".parse::<core::net::Ipv6Addr>().unwrap());
        assert!(r.wants(&v6(58, "fe80::ff:fe00:1")), "ICMPv6 to our link-local address");
        assert!(!r.wants(&v6(58, "fe80::ff:fe00:2")));
        assert!(!port(Some("10.1.0.1"), None).wants(&v6(58, "fe80::ff:fe00:1")), "no IPv6 on the port, no link-local");
        assert!(!r.wants(&v4(1, [10, 1, 0, 1])[..30]), "truncated");
        assert!(!r.wants(&arp[..13]));
        let bare = port(None, None);
        assert!(bare.wants(&arp), "ARP is the resolver's on every port");
        assert!(!bare.wants(&v4(1, [10, 1, 0, 1])));
        assert!(!bare.wants(&v6(58, "ff02::1")));
    }
    #[test]
    fn for_gateway_takes_what_the_kernel_should_see() {
        let r = port(Some("10.1.0.1"), Some("fd00:1::1"));
        assert!(r.for_gateway(&v4(6, [10, 1, 0, 1])), "TCP to us (SSH, BGP)");
        assert!(r.for_gateway(&v4(17, [255, 255, 255, 255])), "DHCP");
        assert!(r.for_gateway(&v4(2, [224, 0, 0, 22])), "IGMP, link-local group");
        assert!(!r.for_gateway(&v4(17, [239, 1, 2, 3])), "other multicast is not the gateway's");
        assert!(!r.for_gateway(&v4(6, [10, 2, 0, 1])), "transit");
        assert!(r.for_gateway(&v6(6, "fd00:1::1")));
        assert!(r.for_gateway(&v6(6, "fe80::1")), "link-local");
        assert!(r.for_gateway(&v6(58, "ff02::2")), "all routers");
        assert!(!r.for_gateway(&v6(17, "ff0e::1")), "global multicast");
        assert!(!r.for_gateway(&v6(6, "fd00:2::1")));
        let mut lldp = vec![0u8; 60];
        lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
        assert!(r.for_gateway(&lldp), "not IP");
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&ARP);
        assert!(!r.for_gateway(&arp), "ARP is the responder's");
        assert!(!r.for_gateway(&lldp[..13]), "runt");
        assert!(!r.for_gateway(&v4(6, [10, 1, 0, 1])[..30]), "truncated");
        let bare = port(None, None);
        assert!(!bare.for_gateway(&v4(6, [10, 1, 0, 1])), "no address, nothing to us");
    }

    /// The echo requests a declined answer drops: whole IPv4 without
    /// options and ICMPv6; not a fragment (the kernel's to reassemble).
    #[test]
    fn echo_requests_dropped_when_declined_are_whole() {
        let mut e = v4(1, [10, 1, 0, 1]);
        e[14] = 0x45;
        e[34] = 8;
        assert!(is_echo_request(&e));
        let mut first = e.clone();
        first[20] = 0x20; // more fragments
        assert!(!is_echo_request(&first), "a first fragment");
        let mut later = e.clone();
        later[21] = 0xb9; // an offset
        assert!(!is_echo_request(&later), "a later fragment");
        let mut reply = e.clone();
        reply[34] = 0;
        assert!(!is_echo_request(&reply));
        let mut e6 = v6(58, "fd00:1::1");
        e6[ICMPV6_TYPE] = 128;
        assert!(is_echo_request(&e6));
    }

    #[test]
    fn neighbor_answers_are_arp_replies_announcements_and_nas() {
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&ARP);
        arp[14..20].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
        arp[22..28].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        arp[28..32].copy_from_slice(&[10, 1, 0, 9]);
        arp[38..42].copy_from_slice(&[10, 1, 0, 1]);
        arp[21] = 1;
        assert!(!is_neighbor_answer(&arp), "request");
        arp[38..42].copy_from_slice(&[10, 1, 0, 9]);
        assert!(is_neighbor_answer(&arp), "a gratuitous request: an announcement");
        arp[38..42].copy_from_slice(&[10, 1, 0, 1]);
        arp[21] = 2;
        assert!(is_neighbor_answer(&arp));
        let mut group = arp.clone();
        group[22] = 1;
        assert!(!is_neighbor_answer(&group), "from a group MAC");
        let mut not_ipv4 = arp.clone();
        not_ipv4[16..18].copy_from_slice(&[0x86, 0xdd]);
        assert!(!is_neighbor_answer(&not_ipv4), "not Ethernet/IPv4");
        let mut na = v6(58, "fd00:1::1");
        na[ICMPV6_TYPE] = 136;
        na[V6_NEXT + 1] = 64;
        assert!(!is_neighbor_answer(&na), "hop limit not 255: not from the link");
        na[V6_NEXT + 1] = 255;
        assert!(is_neighbor_answer(&na));
        na[ICMPV6_TYPE] = 135;
        assert!(!is_neighbor_answer(&na), "solicitation");
        assert!(!is_neighbor_answer(&arp[..20]));
    }
}
