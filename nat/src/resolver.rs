//! ARP (RFC 826) and IPv6 neighbor discovery (RFC 4861) for one port: a
//! bounded cache of next-hop MAC addresses with retries and expiry, answers
//! to ARP requests and neighbor solicitations for the port's own addresses,
//! and an in-place ICMP/ICMPv6 echo responder.
//!
//! Packets waiting for a resolution are not queued here: `lookup` says
//! `Pending` and the dataplane drops the packet (counted there) or holds it
//! itself. A gateway resolves a handful of next hops that answer within a
//! millisecond; a queue would only matter for the first packets of a flow.
//!
//! Only [`Resolver::lookup`] creates entries (the gateway's own next hops).
//! Requests from others are answered and update an entry that exists,
//! never add one, so an ARP or NS flood cannot fill the cache; replies for
//! addresses nobody asked about
//! are counted (`unsolicited`) and ignored. Nothing, gratuitous or not,
//! can bind one of the port's own addresses to another MAC
//! (`own_addr_conflict`). Untagged Ethernet only.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use braid_tunnel::wire::checksum;
use braid_tunnel::wire::ethernet::{self, Address, EtherType};
use braid_tunnel::wire::{arp, icmpv4, icmpv6, ipv4, ipv6, AddrPair, IpProtocol};
use braid_tunnel::Nanos;

use crate::config::SECOND;

/// Longest frame the resolver writes: Ethernet + IPv6 + NS/NA with a
/// link-layer option (14 + 40 + 32). `out` buffers must be this long.
pub const FRAME_MAX: usize =
    ethernet::HEADER_LEN + ipv6::HEADER_LEN + icmpv6::ND_LEN + icmpv6::LLADDR_OPT_LEN;
/// Minimum Ethernet frame without FCS; ARP frames are padded to it.
const ETH_MIN: usize = 60;
/// Hop limit ND messages must carry (RFC 4861 section 7.1).
const ND_HOP_LIMIT: u8 = 255;
/// TTL / hop limit of echo replies.
const ECHO_TTL: u8 = 64;

/// A port's addresses and the resolver's timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// The port's MAC.
    pub mac: Address,
    /// The port's IPv4 addresses; the first is the ARP sender address.
    pub ipv4: Vec<Ipv4Addr>,
    /// The port's IPv6 addresses. Solicitations leave from the first of
    /// the target's scope: a link-local one for a link-local target, else
    /// a wider one (RFC 4861 section 7.2.2 asks for the address the
    /// prompting packet came from, which is the port's own address, where
    /// there is one), else the first.
    pub ipv6: Vec<Ipv6Addr>,
    /// Cache bound (next hops of this port).
    pub capacity: usize,
    /// Requests sent before a neighbor is declared unreachable.
    pub retries: u8,
    /// Between requests: 1 s (RFC 4861 RETRANS_TIMER).
    pub retry_interval: Nanos,
    /// How long an answer is trusted: 30 s (RFC 4861 REACHABLE_TIME).
    /// After it the entry is stale: still used, and re-probed by unicast.
    pub reachable: Nanos,
    /// How long an unreachable neighbor is not asked again: lookups fail
    /// fast meanwhile instead of sending a request per packet.
    pub failed_hold: Nanos,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            mac: Address::default(),
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            capacity: 256,
            retries: 3,
            retry_interval: SECOND,
            reachable: 30 * SECOND,
            failed_hold: 20 * SECOND,
        }
    }
}

/// The answer to a next-hop lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Send to `mac`. `request`: a unicast re-probe of a stale entry was
    /// written to `out`, this many bytes, to send as well.
    Resolved {
        /// The neighbor's MAC.
        mac: Address,
        /// Length of a probe frame written to `out`, if any.
        request: Option<usize>,
    },
    /// Not resolved yet. `request`: a request frame of this many bytes was
    /// written to `out`; send it.
    Pending {
        /// Length of a request frame written to `out`, if any.
        request: Option<usize>,
    },
    /// The neighbor did not answer its requests; drop the packet.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Requests sent, no answer yet.
    Incomplete { sent: u8, next: Nanos },
    /// Answered; trusted until then.
    Reachable { until: Nanos },
    /// Old answer in use while unicast probes confirm it.
    Probe { sent: u8, next: Nanos },
    /// No answer to `retries` requests; not asked again before then.
    Failed { until: Nanos },
}

/// The kind of message a MAC was heard in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    /// ARP request, or neighbor solicitation with a source address option.
    Request,
    /// ARP reply.
    Reply,
    /// Neighbor advertisement, with its Solicited and Override flags.
    Advert { solicited: bool, overrides: bool },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: Address,
    state: State,
}

/// Resolver counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverCounters {
    /// ARP requests and neighbor solicitations sent (retries included).
    pub requests_sent: u64,
    /// ARP replies and neighbor advertisements for our addresses written
    /// to the caller's buffer (the caller may still fail to send one: the
    /// dataplane counts those as its `local/no_room` drops).
    pub replies_sent: u64,
    /// Echo requests answered.
    pub echo_replies: u64,
    /// Entries that reached `Incomplete`/`Probe` -> `Failed`.
    pub unresolved: u64,
    /// Lookups answered `Failed`.
    pub lookups_failed: u64,
    /// Answers that resolved or refreshed an entry.
    pub learned: u64,
    /// Lookups of a new neighbor refused because the cache is full.
    pub cache_full: u64,
    /// ARP or ND from another host claiming one of our addresses.
    pub own_addr_conflict: u64,
    /// Replies or advertisements for addresses nobody asked about.
    pub unsolicited: u64,
    /// Frames not for the resolver or not understood (other EtherTypes,
    /// VLAN tags, bad checksums, hop limit not 255, truncated).
    pub ignored: u64,
}

/// FNV-1a from a per-process random start: fast on an address, and a
/// remote party choosing the addresses looked up (a sweep of the LAN's
/// subnet from behind a peer) cannot work out colliding ones offline.
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Builds [`Fnv`] hashers from one random start.
#[derive(Debug, Clone)]
struct FnvSeeded(u64);

impl FnvSeeded {
    fn random() -> FnvSeeded {
        // std's own per-process random keys.
        FnvSeeded(0xcbf2_9ce4_8422_2325 ^ RandomState::new().hash_one(0x0062_7261_6964_u64))
    }
}

impl BuildHasher for FnvSeeded {
    type Hasher = Fnv;
    fn build_hasher(&self) -> Fnv {
        Fnv(self.0)
    }
}

/// Shortest time between two scans of a full cache that found nothing to
/// free: a flood of lookups of new addresses costs one scan per interval,
/// not one per packet.
pub const EVICT_SCAN_INTERVAL: Nanos = 1_000_000;

/// One port's neighbor cache and responder.
#[derive(Debug, Clone)]
pub struct Resolver {
    cfg: ResolverConfig,
    cache: HashMap<IpAddr, Entry, FnvSeeded>,
    counters: ResolverCounters,
    /// When an address was last defended against duplicate address
    /// detection: at most one advertisement to all nodes per
    /// [`DEFENCE_INTERVAL`], however many solicitations ask.
    defended_at: Option<Nanos>,
    /// A full cache is not scanned for an entry to free before this
    /// (after a scan that found none).
    next_evict_scan: Nanos,
}

/// Shortest time between two defences of our addresses (each an
/// advertisement to every node of the link).
pub const DEFENCE_INTERVAL: Nanos = 100_000_000;

impl Resolver {
    /// A resolver with its cache allocated to `config.capacity`.
    pub fn new(config: ResolverConfig) -> Resolver {
        let cap = config.capacity.max(1);
        Resolver {
            cache: HashMap::with_capacity_and_hasher(cap, FnvSeeded::random()),
            cfg: ResolverConfig {
                capacity: cap,
                ..config
            },
            counters: ResolverCounters::default(),
            defended_at: None,
            next_evict_scan: 0,
        }
    }

    /// Counters.
    pub fn counters(&self) -> &ResolverCounters {
        &self.counters
    }

    /// Entries in the cache.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// True when the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The cache bound.
    pub fn capacity(&self) -> usize {
        self.cfg.capacity
    }

    /// The MAC to send to next hop `ip` at `now`. `out` (at least
    /// [`FRAME_MAX`] bytes) receives a request frame when one is due.
    pub fn lookup(&mut self, ip: IpAddr, now: Nanos, out: &mut [u8]) -> Lookup {
        let cfg = &self.cfg;
        let Some(e) = self.cache.get_mut(&ip) else {
            if self.cache.len() >= cfg.capacity && !self.evict_one(now) {
                self.counters.cache_full += 1;
                self.counters.lookups_failed += 1;
                return Lookup::Failed;
            }
            self.cache.insert(
                ip,
                Entry {
                    mac: Address::BROADCAST,
                    state: State::Incomplete {
                        sent: 1,
                        next: now.saturating_add(self.cfg.retry_interval),
                    },
                },
            );
            let request = self.request(ip, None, out);
            return Lookup::Pending { request };
        };
        match e.state {
            State::Reachable { until } if now < until => Lookup::Resolved {
                mac: e.mac,
                request: None,
            },
            State::Reachable { .. } => {
                e.state = State::Probe {
                    sent: 1,
                    next: now.saturating_add(cfg.retry_interval),
                };
                let mac = e.mac;
                let request = self.request(ip, Some(mac), out);
                Lookup::Resolved { mac, request }
            }
            // Unicast probes of a known address unanswered: the MAC is
            // forgotten and the address resolved anew, by broadcast or
            // multicast (RFC 4861 section 7.3.3, RFC 1122 section
            // 2.3.2.1), not held failed like one that never answered.
            State::Probe { sent, next } if now >= next && sent >= cfg.retries => {
                e.mac = Address::BROADCAST;
                e.state = State::Incomplete {
                    sent: 1,
                    next: now.saturating_add(cfg.retry_interval),
                };
                let request = self.request(ip, None, out);
                Lookup::Pending { request }
            }
            State::Probe { sent, next } | State::Incomplete { sent, next } if now >= next => {
                let probing = matches!(e.state, State::Probe { .. });
                if sent >= cfg.retries {
                    e.state = State::Failed {
                        until: now.saturating_add(cfg.failed_hold),
                    };
                    self.counters.unresolved += 1;
                    self.counters.lookups_failed += 1;
                    return Lookup::Failed;
                }
                let next = now.saturating_add(cfg.retry_interval);
                let sent = sent + 1;
                let mac = e.mac;
                if probing {
                    e.state = State::Probe { sent, next };
                    let request = self.request(ip, Some(mac), out);
                    Lookup::Resolved { mac, request }
                } else {
                    e.state = State::Incomplete { sent, next };
                    let request = self.request(ip, None, out);
                    Lookup::Pending { request }
                }
            }
            State::Probe { .. } => Lookup::Resolved {
                mac: e.mac,
                request: None,
            },
            State::Incomplete { .. } => Lookup::Pending { request: None },
            State::Failed { until } if now >= until => {
                e.state = State::Incomplete {
                    sent: 1,
                    next: now.saturating_add(cfg.retry_interval),
                };
                let request = self.request(ip, None, out);
                Lookup::Pending { request }
            }
            State::Failed { .. } => {
                self.counters.lookups_failed += 1;
                Lookup::Failed
            }
        }
    }

    /// Frees one entry of a full cache: a failed one, or requests whose
    /// time is up (nobody looked them up again: what a sweep of addresses
    /// leaves), else a stale answer, but that only while fewer than half
    /// the entries wait for answers (a sweep of new addresses does not
    /// push out the neighbours known). One scan of at most `capacity`;
    /// after a scan that freed nothing, none for [`EVICT_SCAN_INTERVAL`]
    /// (lookups of new addresses then fail, counted `cache_full`): a flood
    /// of new addresses costs a scan per interval, not one per packet.
    fn evict_one(&mut self, now: Nanos) -> bool {
        if now < self.next_evict_scan {
            return false;
        }
        let mut waiting = 0;
        let mut stale = None;
        let mut victim = None;
        for (ip, e) in &self.cache {
            match e.state {
                State::Failed { .. } => {
                    victim = Some(*ip);
                    break;
                }
                State::Incomplete { next, .. } if next <= now => {
                    victim = Some(*ip);
                    break;
                }
                State::Incomplete { .. } => waiting += 1,
                State::Probe { next: t, .. } | State::Reachable { until: t } if t <= now => {
                    stale.get_or_insert(*ip);
                }
                _ => {}
            }
        }
        match victim.or(stale.filter(|_| 2 * waiting < self.cfg.capacity)) {
            Some(ip) => {
                self.cache.remove(&ip);
                true
            }
            None => {
                self.next_evict_scan = now.saturating_add(EVICT_SCAN_INTERVAL);
                false
            }
        }
    }

    /// Writes an ARP request or neighbor solicitation for `ip` to `out`:
    /// broadcast / solicited-node multicast, or unicast to `unicast`.
    fn request(&mut self, ip: IpAddr, unicast: Option<Address>, out: &mut [u8]) -> Option<usize> {
        if out.len() < FRAME_MAX {
            return None;
        }
        let len = match ip {
            IpAddr::V4(target) => {
                let src = *self.cfg.ipv4.first()?;
                let dst_mac = unicast.unwrap_or(Address::BROADCAST);
                write_arp(
                    out,
                    self.cfg.mac,
                    dst_mac,
                    arp::Repr {
                        op: arp::Operation::Request,
                        sender_hw: self.cfg.mac,
                        sender_ip: src,
                        target_hw: Address::default(),
                        target_ip: target,
                    },
                )
            }
            IpAddr::V6(target) => {
                let link_local = |a: &Ipv6Addr| a.segments()[0] & 0xffc0 == 0xfe80;
                let same_scope = self.cfg.ipv6.iter().find(|a| link_local(a) == link_local(&target));
                let src = *same_scope.or(self.cfg.ipv6.first())?;
                let (dst, dst_mac) = match unicast {
                    Some(m) => (target, m),
                    None => {
                        let g = icmpv6::solicited_node(target);
                        (g, icmpv6::multicast_mac(g))
                    }
                };
                let nd = icmpv6::Repr::NeighborSolicit {
                    target,
                    source_lladdr: Some(self.cfg.mac),
                };
                write_nd(out, self.cfg.mac, dst_mac, src, dst, nd)
            }
        };
        self.counters.requests_sent += 1;
        Some(len)
    }

    /// What a message tells of `ip`'s MAC, for an entry that exists
    /// (entries are made by lookups only, so nobody fills the cache by
    /// talking). A MAC that is not unicast is never taken. RFC 4861
    /// section 7.2.5 for advertisements. An ARP reply sets the MAC,
    /// confirmed. An ARP request or a solicitation with a source address
    /// option sets it too (RFC 826's merge): confirmed when none was known
    /// (incomplete or failed), to be probed on next use when it changed,
    /// the entry left as it was otherwise.
    fn learn(&mut self, ip: IpAddr, mac: Option<Address>, now: Nanos, heard: Heard) {
        if mac.is_some_and(|m| !m.is_unicast() || m.0 == [0; 6]) {
            self.counters.ignored += 1;
            return;
        }
        let Some(e) = self.cache.get_mut(&ip) else {
            if matches!(heard, Heard::Reply | Heard::Advert { solicited: true, .. }) {
                self.counters.unsolicited += 1;
            }
            return;
        };
        let confirmed = State::Reachable { until: now.saturating_add(self.cfg.reachable) };
        // Known but to be confirmed by a unicast probe on its next use.
        let stale = State::Reachable { until: now };
        // A failed entry has no address worth keeping either (RFC 4861
        // gives it none): anything that brings a MAC revives it.
        let incomplete = matches!(e.state, State::Incomplete { .. } | State::Failed { .. });
        let learned = match (heard, mac) {
            (Heard::Reply, Some(m)) => {
                (e.mac, e.state) = (m, confirmed);
                true
            }
            (Heard::Request, Some(m)) => {
                let same = m == e.mac && !incomplete;
                e.mac = m;
                if incomplete || !same {
                    e.state = if incomplete { confirmed } else { stale };
                }
                true
            }
            // An answer to a unicast probe may leave its option out
            // (RFC 4861 section 4.4): it confirms the MAC we have.
            (Heard::Advert { solicited: true, .. }, None) if !incomplete => {
                e.state = confirmed;
                true
            }
            (Heard::Advert { solicited, .. }, Some(m)) if incomplete => {
                e.mac = m;
                e.state = if solicited { confirmed } else { stale };
                true
            }
            // Without Override, another MAC does not replace a known one.
            (Heard::Advert { overrides: false, .. }, Some(m)) if m != e.mac => {
                if matches!(e.state, State::Reachable { .. }) {
                    e.state = stale;
                }
                false
            }
            (Heard::Advert { solicited, .. }, Some(m)) => {
                let changed = m != e.mac;
                e.mac = m;
                if solicited {
                    e.state = confirmed;
                } else if changed {
                    e.state = stale;
                }
                true
            }
            _ => false,
        };
        if learned {
            self.counters.learned += 1;
        } else {
            self.counters.ignored += 1;
        }
    }

    /// Handles a received Ethernet frame carrying ARP or ICMPv6 ND. Returns
    /// the length of a reply written to `out` (at least [`FRAME_MAX`]
    /// bytes), if one is due. Other frames are counted as `ignored`.
    pub fn on_frame(&mut self, frame: &[u8], now: Nanos, out: &mut [u8]) -> Option<usize> {
        let Ok(eth) = ethernet::Frame::new_checked(frame) else {
            self.counters.ignored += 1;
            return None;
        };
        match eth.ethertype() {
            EtherType::ARP => self.on_arp(eth.payload(), now, out),
            EtherType::IPV6 => self.on_nd(eth.src_addr(), eth.payload(), now, out),
            _ => {
                self.counters.ignored += 1;
                None
            }
        }
    }

    fn on_arp(&mut self, payload: &[u8], now: Nanos, out: &mut [u8]) -> Option<usize> {
        let repr = arp::Packet::new_checked(payload)
            .ok()
            .and_then(|p| arp::Repr::parse(&p).ok().flatten());
        let Some(r) = repr else {
            self.counters.ignored += 1;
            return None;
        };
        if self.cfg.ipv4.contains(&r.sender_ip) {
            // Someone else claims our address (gratuitous ARP, a conflict
            // or a spoof): never learned, counted.
            self.counters.own_addr_conflict += 1;
            return None;
        }
        let heard = if r.op == arp::Operation::Reply { Heard::Reply } else { Heard::Request };
        self.learn(r.sender_ip.into(), Some(r.sender_hw), now, heard);
        if r.op != arp::Operation::Request || !self.cfg.ipv4.contains(&r.target_ip) {
            return None;
        }
        if out.len() < FRAME_MAX || !r.sender_hw.is_unicast() {
            self.counters.ignored += 1;
            return None;
        }
        self.counters.replies_sent += 1;
        Some(write_arp(
            out,
            self.cfg.mac,
            r.sender_hw,
            arp::Repr {
                op: arp::Operation::Reply,
                sender_hw: self.cfg.mac,
                sender_ip: r.target_ip,
                target_hw: r.sender_hw,
                target_ip: r.sender_ip,
            },
        ))
    }

    fn on_nd(
        &mut self,
        eth_src: Address,
        payload: &[u8],
        now: Nanos,
        out: &mut [u8],
    ) -> Option<usize> {
        let parsed = ipv6::Packet::new_checked(payload).ok().and_then(|ip| {
            if ip.next_header() != IpProtocol::ICMPV6 || ip.hop_limit() != ND_HOP_LIMIT {
                return None;
            }
            let addrs = ip.addrs();
            let msg = icmpv6::Packet::new_checked(ip.payload()).ok()?;
            // RFC 4861 sections 7.1.1 and 7.1.2: code 0; no multicast
            // source.
            if msg.msg_code() != 0 || ip.src_addr().is_multicast() {
                return None;
            }
            let repr = icmpv6::Repr::parse(&msg, &addrs, true).ok().flatten()?;
            Some((ip.src_addr(), ip.dst_addr(), repr))
        });
        // The target is never multicast; a solicitation for duplicate
        // address detection goes to a solicited-node group and carries no
        // source link-layer option; an advertisement to a multicast group
        // is never solicited (RFC 4861 sections 7.1.1, 7.1.2).
        let parsed = parsed.filter(|(src, dst, repr)| match repr {
            icmpv6::Repr::NeighborSolicit { target, source_lladdr } => {
                !target.is_multicast() && (!src.is_unspecified() || (source_lladdr.is_none() && dst.segments()[..6] == [0xff02, 0, 0, 0, 0, 1] && dst.segments()[6] >> 8 == 0xff))
            }
            icmpv6::Repr::NeighborAdvert { flags, target, .. } => !(target.is_multicast() || dst.is_multicast() && flags.solicited()),
            _ => true,
        });
        let Some((src, _, repr)) = parsed else {
            self.counters.ignored += 1;
            return None;
        };
        match repr {
            icmpv6::Repr::NeighborSolicit {
                target,
                source_lladdr,
            } => {
                if src.is_unspecified() {
                    // Duplicate address detection (RFC 4862 section 5.4):
                    // someone wants an address; ours is not for taking.
                    // Defended as RFC 4861 section 7.2.4 says: an
                    // advertisement to all nodes, not solicited.
                    if !self.cfg.ipv6.contains(&target) {
                        return None;
                    }
                    self.counters.own_addr_conflict += 1;
                    if out.len() < FRAME_MAX || self.defended_at.is_some_and(|t| now < t.saturating_add(DEFENCE_INTERVAL)) {
                        return None;
                    }
                    self.defended_at = Some(now);
                    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                    let na = icmpv6::Repr::NeighborAdvert {
                        flags: icmpv6::NaFlags(icmpv6::NaFlags::ROUTER | icmpv6::NaFlags::OVERRIDE),
                        target,
                        target_lladdr: Some(self.cfg.mac),
                    };
                    self.counters.replies_sent += 1;
                    return Some(write_nd(out, self.cfg.mac, Address([0x33, 0x33, 0, 0, 0, 1]), target, all_nodes, na));
                }
                if self.cfg.ipv6.contains(&src) {
                    self.counters.own_addr_conflict += 1;
                    return None;
                }
                // Not for one of our addresses: discarded, nothing learned
                // (RFC 4861 section 7.2.3).
                if !self.cfg.ipv6.contains(&target) {
                    return None;
                }
                if source_lladdr.is_some() {
                    self.learn(src.into(), source_lladdr, now, Heard::Request);
                }
                let dst_mac = source_lladdr.unwrap_or(eth_src);
                if out.len() < FRAME_MAX || !dst_mac.is_unicast() {
                    return None;
                }
                let na = icmpv6::Repr::NeighborAdvert {
                    flags: icmpv6::NaFlags(
                        icmpv6::NaFlags::ROUTER
                            | icmpv6::NaFlags::SOLICITED
                            | icmpv6::NaFlags::OVERRIDE,
                    ),
                    target,
                    target_lladdr: Some(self.cfg.mac),
                };
                self.counters.replies_sent += 1;
                Some(write_nd(out, self.cfg.mac, dst_mac, target, src, na))
            }
            icmpv6::Repr::NeighborAdvert {
                flags,
                target,
                target_lladdr,
            } => {
                if self.cfg.ipv6.contains(&target) {
                    self.counters.own_addr_conflict += 1;
                    return None;
                }
                let heard = Heard::Advert { solicited: flags.solicited(), overrides: flags.override_() };
                self.learn(target.into(), target_lladdr, now, heard);
                None
            }
            _ => {
                self.counters.ignored += 1;
                None
            }
        }
    }

    /// Turns an Ethernet frame holding an ICMP or ICMPv6 echo request to
    /// one of our addresses into its reply, in place (MACs and addresses
    /// swapped, TTL/hop limit reset, type changed, checksums updated).
    /// Returns false, frame unchanged, for anything else.
    pub fn answer_echo(&mut self, frame: &mut [u8]) -> bool {
        let Ok(eth) = ethernet::Frame::new_checked(&*frame) else {
            return false;
        };
        let (ethertype, src_mac) = (eth.ethertype(), eth.src_addr());
        // Unicast both ways: a request sent to the link's broadcast is not
        // answered (RFC 1122 section 3.3.6), nor one from a group MAC.
        if !src_mac.is_unicast() || !eth.dst_addr().is_unicast() {
            return false;
        }
        let l3 = ethernet::HEADER_LEN;
        let done = match ethertype {
            EtherType::IPV4 => self.echo_v4(&mut frame[l3..]),
            EtherType::IPV6 => self.echo_v6(&mut frame[l3..]),
            _ => false,
        };
        if done {
            let mut eth = ethernet::Frame::new_unchecked(&mut *frame);
            eth.set_dst_addr(src_mac);
            eth.set_src_addr(self.cfg.mac);
            self.counters.echo_replies += 1;
        }
        done
    }

    fn echo_v4(&mut self, l3: &mut [u8]) -> bool {
        let Ok(mut ip) = ipv4::Packet::new_checked(&mut *l3) else {
            return false;
        };
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        // A damaged header, or a source no host has (this network, loopback,
        // multicast, the limited broadcast, ourselves): not answered (RFC
        // 1122 sections 3.2.1.2 and 3.2.1.3). 240.0.0.0/4 is answered: some
        // networks use it inside.
        let o = src.octets();
        if ip.protocol() != IpProtocol::ICMP
            || ip.is_fragment()
            || !ip.verify_checksum()
            || !self.cfg.ipv4.contains(&dst)
            || o[0] == 0
            || o[0] == 127
            || (224..240).contains(&o[0])
            || o == [255; 4]
            || self.cfg.ipv4.contains(&src)
        {
            return false;
        }
        let Ok(mut icmp) = icmpv4::Packet::new_checked(ip.payload_mut()) else {
            return false;
        };
        if icmp.msg_type() != icmpv4::kind::ECHO_REQUEST || icmp.msg_code() != 0 || !icmp.verify_checksum() {
            return false;
        }
        let c = icmp.checksum();
        icmp.set_msg_type(icmpv4::kind::ECHO_REPLY);
        icmp.set_checksum(checksum::update_u16(
            c,
            (icmpv4::kind::ECHO_REQUEST as u16) << 8,
            0,
        ));
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_ttl(ECHO_TTL);
        ip.fill_checksum();
        true
    }

    fn echo_v6(&mut self, l3: &mut [u8]) -> bool {
        let Ok(mut ip) = ipv6::Packet::new_checked(&mut *l3) else {
            return false;
        };
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if ip.next_header() != IpProtocol::ICMPV6
            || !self.cfg.ipv6.contains(&dst)
            || src.is_multicast()
            || src.is_unspecified()
            || src.is_loopback()
            || self.cfg.ipv6.contains(&src)
        {
            return false;
        }
        let addrs = ip.addrs();
        let Ok(mut icmp) = icmpv6::Packet::new_checked(ip.payload_mut()) else {
            return false;
        };
        if icmp.msg_type() != icmpv6::kind::ECHO_REQUEST || icmp.msg_code() != 0 || !icmp.verify_checksum(&addrs) {
            return false;
        }
        // Swapping source and destination leaves the pseudo-header sum alone.
        let c = icmp.checksum();
        icmp.set_msg_type(icmpv6::kind::ECHO_REPLY);
        icmp.set_checksum(checksum::update_u16(
            c,
            (icmpv6::kind::ECHO_REQUEST as u16) << 8,
            (icmpv6::kind::ECHO_REPLY as u16) << 8,
        ));
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_hop_limit(ECHO_TTL);
        true
    }
}

fn write_arp(out: &mut [u8], src: Address, dst: Address, repr: arp::Repr) -> usize {
    let frame = &mut out[..ETH_MIN];
    frame.fill(0);
    ethernet::Repr {
        src_addr: src,
        dst_addr: dst,
        vlan: None,
        ethertype: EtherType::ARP,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut *frame));
    repr.emit(&mut arp::Packet::new_unchecked(
        &mut frame[ethernet::HEADER_LEN..],
    ));
    ETH_MIN
}

fn write_nd(
    out: &mut [u8],
    src_mac: Address,
    dst_mac: Address,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    nd: icmpv6::Repr,
) -> usize {
    let body = nd.buffer_len();
    let len = ethernet::HEADER_LEN + ipv6::HEADER_LEN + body;
    let frame = &mut out[..len];
    frame.fill(0);
    ethernet::Repr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        vlan: None,
        ethertype: EtherType::IPV6,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut *frame));
    let l3 = &mut frame[ethernet::HEADER_LEN..];
    ipv6::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: body,
        hop_limit: ND_HOP_LIMIT,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut *l3));
    let addrs = AddrPair::V6 { src, dst };
    nd.emit(
        &mut icmpv6::Packet::new_unchecked(&mut l3[ipv6::HEADER_LEN..]),
        &addrs,
    );
    len
}
