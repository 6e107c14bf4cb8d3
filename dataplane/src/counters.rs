//! Counters the workers keep: per worker, per port role and per tunnel, and
//! a named counter for every drop (VPP's `foreach_*_error`). Each worker owns
//! its counters (no sharing on the per-packet path); readers sum snapshots.

use braid_nat::{NatCounters, NatDrop};
use braid_tunnel::engine::DropCounters;
use braid_tunnel::reorder::ReorderCounters;

macro_rules! drops {
    ($($(#[$m:meta])* $v:ident => $n:literal,)*) => {
        /// Why the dataplane (not the tunnel engine) dropped a packet.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DpDrop { $($(#[$m])* $v,)* }
        impl DpDrop {
            /// Every reason, in counter order.
            pub const ALL: &'static [DpDrop] = &[$(DpDrop::$v,)*];
            /// Stable snake_case name for reports.
            pub const fn name(self) -> &'static str { match self { $(DpDrop::$v => $n,)* } }
        }
    };
}

drops! {
    /// Frame shorter than an Ethernet header, or not IPv4/IPv6.
    NotIp => "not_ip",
    /// Inner IP header malformed (version, lengths, checksum).
    BadInnerIp => "bad_inner_ip",
    /// No route for the inner destination.
    NoRoute => "no_route",
    /// A LAN frame to another host's unicast MAC (the port is
    /// promiscuous; a switch floods frames for hosts it has not learned):
    /// not routed.
    NotOurMac => "not_our_mac",
    /// A LAN packet a router does not forward: to a broadcast or multicast
    /// MAC (what the gateway's responder and kernel tap did not take), or
    /// of link scope by its addresses (IPv4 from 0.0.0.0/8, loopback or
    /// 169.254.0.0/16, to loopback, 169.254.0.0/16, 224.0.0.0/24 or
    /// 255.255.255.255, and martians: from multicast or 255.255.255.255,
    /// to 0.0.0.0/8; IPv6 from ::, ::1 or fe80::/10, to ::1,
    /// fe80::/10 or a multicast group of scope 0 to 2), whatever the
    /// routes say.
    NotForwarded => "not_forwarded",
    /// Frame spans several mbuf segments (not supported on this path yet).
    Multiseg => "multiseg",
    /// Inner packet too big for the mbuf (also one made whole from
    /// `nat.out_frags`), the bundle (> 65535 B), or (plain mode) the WAN
    /// MTU when it can be neither segmented (TCP) nor fragmented (IPv4
    /// without DF or options).
    TooBig => "too_big",
    /// The mempool was empty (packing a LAN burst into frames).
    NoMbuf => "no_mbuf",
    /// Bundle mode: inner packets packed (whole or in part) into a frame
    /// whose seal failed, e.g. its tunnel's SA out of sequence numbers
    /// (the engine counts the frame itself by reason, `sa_exhausted`).
    FrameLost => "frame_lost",
    /// Plain mode: the balancer had no tunnel for the packet.
    NoPath => "no_path",
    /// LAN TX queue full: the NIC did not take the packet.
    LanTxFull => "lan_tx_full",
    /// WAN TX queue full.
    WanTxFull => "wan_tx_full",
    /// The LAN port refused the packet in tx_prepare.
    LanTxRejected => "lan_tx_rejected",
    /// A WAN port refused the packet in tx_prepare.
    WanTxRejected => "wan_tx_rejected",
    /// WAN frame not IPv4 or IPv6 UDP to one of our tunnel endpoints.
    NotTunnel => "not_tunnel",
    /// Outer IPv4 or IPv6 header malformed.
    BadOuterIp => "bad_outer_ip",
    /// Outer IPv6: the UDP checksum is zero or does not verify (it covers
    /// the addresses a tunnel's remote follows; IPv6 has no header
    /// checksum).
    BadOuterUdp => "bad_outer_udp",
    /// An outer IPv6 fragment braid cannot reassemble: its Fragment
    /// header cut short, a payload length under 8 or past the frame, a
    /// non-last fragment not a multiple of 8 bytes, one ending past
    /// 65,535 bytes, or a fragment inside a reassembled packet.
    OuterFragmentV6 => "outer_ipv6_fragment",
    /// UDP payload with the non-ESP marker (IKE): no IKE here.
    NonEsp => "non_esp",
    /// ESP packet whose SPI no tunnel uses.
    UnknownSpi => "unknown_spi",
    /// SPI of a tunnel whose local UDP port (or IP version) is not the one
    /// the packet hit.
    TunnelMismatch => "tunnel_mismatch",
    /// ESP packet (data, probe or probe reply) for a WAN port whose next
    /// hop is not resolved (yet, or no longer): dropped, never queued.
    NextHopUnresolved => "next_hop_unresolved",
    /// A port's kernel tap did not take a frame for the kernel (the kernel
    /// is not reading it fast enough).
    KernelTxFull => "kernel_tx_full",
    /// A kernel tap refused the frame in tx_prepare.
    KernelTxRejected => "kernel_tx_rejected",
    /// A LAN that resolves its hosts: the packet's neighbor did not answer
    /// (in time).
    LanNextHopUnresolved => "lan_next_hop_unresolved",
    /// A LAN that resolves its hosts: the destination is outside the port's
    /// subnets and no router is configured.
    LanNoNextHop => "lan_no_next_hop",
    /// A LAN that resolves its hosts: too many packets already wait for
    /// their neighbors, or for this one.
    LanHoldFull => "lan_hold_full",
    /// A LAN that resolves its hosts: a packet to the limited broadcast
    /// address, the LAN subnet's, or a link-scope multicast group, which a
    /// router does not forward, or from the tunnels to the LAN port's own
    /// address (the gateway is reached on the port one comes in on).
    LanNotForwarded => "lan_not_forwarded",
    /// Several workers: an ESP packet for a tunnel another worker owns,
    /// dropped because the ring to that worker was full.
    HandoffFull => "handoff_full",
    /// Several workers: an ESP packet handed on twice and still not at
    /// its tunnel's owner (new tables moving the tunnel while it was on
    /// its way): dropped rather than opened outside the owner's replay
    /// window.
    HandoffStale => "handoff_stale",
    /// Several workers: a frame opened by its tunnel's owner that did not
    /// reach the owner of its stream (the ring was full, or new tables
    /// removed the tunnel or made its bundle a plain one in between), or
    /// a hand-off without its header. Its ESP packet was counted as
    /// received.
    HandoffLost => "handoff_lost",
    /// Several workers with NAT: a packet for the LAN that did not reach
    /// the worker holding its NAT session (the ring was full).
    HandoffDeliverLost => "handoff_deliver_lost",
    /// A packet for the LAN bigger than the LAN port's MTU that can be
    /// neither segmented (not TCP, or TCP behind IPv6 extension headers)
    /// nor fragmented (IPv6, or IPv4 with DF or with options), or a
    /// packet made whole from `nat.in_frags` that no mbuf holds.
    LanTooBig => "lan_too_big",
    /// A packet for the LAN to be cut to its MTU, with no mbufs for all
    /// its pieces.
    LanNoMbuf => "lan_no_mbuf",
    /// A TCP packet for the LAN to be cut to its MTU whose checksum does
    /// not verify (cutting would give its pieces good ones).
    LanBadChecksum => "lan_bad_checksum",
    /// Plain mode: a TCP packet from the LAN to be cut for the tunnels
    /// whose checksum does not verify.
    BadInnerChecksum => "bad_inner_checksum",
}

impl DpDrop {
    /// A drop on the way out (a TX queue full or refusing), of a packet
    /// counted as received, encapsulated or delivered before; the other
    /// reasons drop packets as they come in.
    pub const fn is_tx(self) -> bool {
        matches!(
            self,
            DpDrop::LanTxFull
                | DpDrop::WanTxFull
                | DpDrop::LanTxRejected
                | DpDrop::WanTxRejected
                | DpDrop::NextHopUnresolved
                | DpDrop::KernelTxFull
                | DpDrop::KernelTxRejected
                | DpDrop::LanNextHopUnresolved
                | DpDrop::LanNoNextHop
                | DpDrop::LanHoldFull
                | DpDrop::LanNotForwarded
                | DpDrop::HandoffLost
                | DpDrop::HandoffDeliverLost
                | DpDrop::LanTooBig
                | DpDrop::LanNoMbuf
                | DpDrop::LanBadChecksum
        )
    }
}

/// Drops by reason, indexed by `DpDrop as usize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpDrops([u64; 40]);

impl Default for DpDrops {
    fn default() -> DpDrops {
        DpDrops([0; 40])
    }
}

impl DpDrops {
    /// Counts one drop.
    #[inline]
    pub fn add(&mut self, r: DpDrop) {
        self.0[r as usize] += 1;
    }
    /// Counts `n` drops.
    #[inline]
    pub fn add_n(&mut self, r: DpDrop, n: u64) {
        self.0[r as usize] += n;
    }
    /// Drops for one reason.
    pub fn get(&self, r: DpDrop) -> u64 {
        self.0[r as usize]
    }
    /// Adds another set (summing workers).
    pub fn merge(&mut self, o: &DpDrops) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }
    /// Every drop counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// Drops of incoming packets (every reason but [`DpDrop::is_tx`]).
    pub fn total_rx(&self) -> u64 {
        DpDrop::ALL.iter().filter(|r| !r.is_tx()).map(|r| self.get(*r)).sum()
    }
    /// Non-zero counters by name.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        DpDrop::ALL.iter().filter(|r| self.get(**r) > 0).map(|r| (r.name(), self.get(*r))).collect()
    }
}

const _: () = assert!(DpDrop::ALL.len() <= 40);

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub packets: u64,
    pub bytes: u64,
}

impl Flow {
    #[inline]
    pub fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
    pub fn merge(&mut self, o: &Flow) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// One tunnel's traffic, as seen by one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelCounters {
    /// ESP packets the WAN port took (data, probes, probe replies).
    pub tx: Flow,
    /// ESP packets accepted.
    pub rx: Flow,
    /// ESP packets the tunnel engine refused (their reasons are in
    /// [`WorkerCounters::engine`]).
    pub rejected: u64,
    /// RFC 3948 NAT-keepalives the WAN port took (sent when the tunnel
    /// sent nothing else for the bundle's `keepalive_secs`; not in `tx`).
    pub keepalives_tx: u64,
    /// Times the peer's outer address or port changed: an authenticated
    /// packet, newer than any before on its SA, came from another source
    /// than the tunnel's current remote (a NAT in front of the peer
    /// rebound), and the tunnel now sends there.
    pub remote_changes: u64,
    /// Times the path went dead (probes missed in a row, bundle mode);
    /// its `path/.../alive` gauge shows whether it is now.
    pub path_deaths: u64,
    /// Liveness probes on this path whose reply did not come in time
    /// (bundle mode, counted by the probing worker): the path's loss, or
    /// its delay past the probe timeout, as the sender sees it.
    pub probes_missed: u64,
    /// Replies to this path's probes that came after the probe was counted
    /// missed: a delay past the probe timeout rather than a loss (bundle
    /// mode, counted by the probing worker).
    pub late_replies: u64,
}

impl TunnelCounters {
    /// Adds another worker's.
    pub fn merge(&mut self, o: &TunnelCounters) {
        self.tx.merge(&o.tx);
        self.rx.merge(&o.rx);
        self.rejected += o.rejected;
        self.keepalives_tx += o.keepalives_tx;
        self.remote_changes += o.remote_changes;
        self.path_deaths += o.path_deaths;
        self.probes_missed += o.probes_missed;
        self.late_replies += o.late_replies;
    }
}

/// Outer IPv4 and IPv6 fragments (a peer or a path that fragments
/// ESP-in-UDP). Fragments taken are neither received packets nor drops
/// until their packet is whole: `reassembled` packets then go through the
/// receive path like any frame, and `discarded` counts fragments the
/// reassembly threw away (overlaps, duplicates, more than 8 fragments, a
/// full table, or incomplete after the timeout). An IPv6 `atomic`
/// fragment (offset 0, no more to come: a whole packet with a Fragment
/// header) is not taken: it goes through the receive path at once, its
/// Fragment header removed. On the way out (plain mode with
/// `outer_fragmentation`), `fragmented` ESP packets left as `sent`
/// fragments, each a WAN frame (and a tunnel `tx` packet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragCounters {
    pub taken: u64,
    pub reassembled: u64,
    pub discarded: u64,
    pub atomic: u64,
    pub fragmented: u64,
    pub sent: u64,
}

/// Packets cut in software: for the LAN, bigger than its MTU (TCP into
/// `segments`, IPv4 without DF into `fragments`, each a LAN frame); for a
/// plain-mode tunnel, TCP bigger than it carries, into `segments`, and
/// other IPv4 without DF into `fragments`, each sealed as its own ESP
/// packet. And for a LAN port
/// with TSO, TCP handed to it whole (`tso`, one frame each to `lan_tx`)
/// for it to cut into `tso_segments`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutCounters {
    pub segmented: u64,
    pub segments: u64,
    pub fragmented: u64,
    pub fragments: u64,
    pub tso: u64,
    pub tso_segments: u64,
}

impl CutCounters {
    /// Packets the cuts added (pieces beyond the one packet each).
    pub fn extra_frames(&self) -> u64 {
        (self.segments - self.segmented) + (self.fragments - self.fragmented)
    }
}

/// The NAT of one worker: what its shards did (summed over the shards a
/// rule change replaced) and its drops by reason and direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatStats {
    /// LAN -> WAN packets translated.
    pub out_translated: u64,
    /// WAN -> LAN packets translated.
    pub in_translated: u64,
    /// ICMP errors translated (also in `*_translated`).
    pub icmp_errors_translated: u64,
    pub sessions_created: u64,
    pub sessions_expired: u64,
    /// TCP sessions not yet established closed to make room in a full
    /// table (a SYN flood's, most likely).
    pub sessions_evicted: u64,
    pub mappings_created: u64,
    /// Sessions held now (a gauge).
    pub sessions: u64,
    /// LAN -> WAN drops by [`NatDrop`] reason: incoming drops of LAN
    /// frames (instead of being encapsulated).
    pub out_drops: [u64; NatDrop::COUNT],
    /// WAN -> LAN drops by reason: inner packets counted `delivered` that
    /// never reach the LAN TX queue.
    pub in_drops: [u64; NatDrop::COUNT],
    /// IPv4 fragments of translated traffic from the LAN, reassembled
    /// before the NAT (it needs the ports, which only the first carries).
    pub out_frags: NatFrags,
    /// The same for inner packets from the tunnels.
    pub in_frags: NatFrags,
}

/// Inner IPv4 fragments the NAT must see whole, one direction: `taken`
/// fragments are neither passed on nor dropped until their packet is
/// whole; each whole packet (`reassembled`) then goes on as one packet
/// (or is dropped, counted, if no mbuf holds it: `too_big` from the LAN,
/// `lan_too_big` from a tunnel). `discarded`:
/// fragments the reassembly threw away (overlaps, duplicates, more than
/// 8 fragments, a full table, or incomplete after the timeout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatFrags {
    pub taken: u64,
    pub reassembled: u64,
    pub discarded: u64,
}

impl NatFrags {
    fn merge(&mut self, o: &NatFrags) {
        self.taken += o.taken;
        self.reassembled += o.reassembled;
        self.discarded += o.discarded;
    }
}

impl NatStats {
    /// Adds a shard's engine counters (its drops are counted here by
    /// direction instead).
    pub fn add_engine(&mut self, c: &NatCounters) {
        self.out_translated += c.out_translated;
        self.in_translated += c.in_translated;
        self.icmp_errors_translated += c.icmp_errors_translated;
        self.sessions_created += c.sessions_created;
        self.sessions_expired += c.sessions_expired;
        self.sessions_evicted += c.sessions_evicted;
        self.mappings_created += c.mappings_created;
    }

    /// Adds another worker's.
    pub fn merge(&mut self, o: &NatStats) {
        self.out_translated += o.out_translated;
        self.in_translated += o.in_translated;
        self.icmp_errors_translated += o.icmp_errors_translated;
        self.sessions_created += o.sessions_created;
        self.sessions_expired += o.sessions_expired;
        self.sessions_evicted += o.sessions_evicted;
        self.mappings_created += o.mappings_created;
        self.sessions += o.sessions;
        self.out_frags.merge(&o.out_frags);
        self.in_frags.merge(&o.in_frags);
        for (a, b) in self.out_drops.iter_mut().zip(&o.out_drops) {
            *a += b;
        }
        for (a, b) in self.in_drops.iter_mut().zip(&o.in_drops) {
            *a += b;
        }
    }

    /// Drops on the way out (LAN -> WAN), all reasons.
    pub fn out_dropped(&self) -> u64 {
        self.out_drops.iter().sum()
    }

    /// Drops on the way in (WAN -> LAN), all reasons.
    pub fn in_dropped(&self) -> u64 {
        self.in_drops.iter().sum()
    }

    /// One reason, one direction.
    pub fn drop_count(&self, outbound: bool, r: NatDrop) -> u64 {
        if outbound { self.out_drops[r as usize] } else { self.in_drops[r as usize] }
    }

    /// Non-zero drop counters of one direction by name.
    pub fn named_drops(&self, outbound: bool) -> Vec<(&'static str, u64)> {
        NatDrop::ALL.iter().map(|&r| (r.name(), self.drop_count(outbound, r))).filter(|(_, v)| *v > 0).collect()
    }
}

macro_rules! local_drops {
    ($($(#[$m:meta])* $v:ident => $n:literal,)*) => {
        /// Why a frame for the gateway itself (ARP, neighbor discovery) got
        /// no answer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum LocalDrop { $($(#[$m])* $v,)* }
        impl LocalDrop {
            /// Every reason, in counter order.
            pub const ALL: &'static [LocalDrop] = &[$(LocalDrop::$v,)*];
            /// How many reasons there are.
            pub const COUNT: usize = LocalDrop::ALL.len();
            /// Stable snake_case name for reports.
            pub const fn name(self) -> &'static str { match self { $(LocalDrop::$v => $n,)* } }
        }
    };
}

local_drops! {
    /// ARP or ND about another address (a request for someone else, an
    /// answer to a question we did not ask about an address we track, DAD
    /// for another address).
    NotForUs => "not_for_us",
    /// Another host claims one of the port's own addresses (gratuitous ARP,
    /// NA, an ARP or NS from our address): refused, never learned.
    OwnAddrConflict => "own_addr_conflict",
    /// An ARP reply or NA nobody asked for.
    Unsolicited => "unsolicited",
    /// Not understood: truncated, another hardware type, ND hop limit not
    /// 255, bad ICMPv6 checksum, a request from a non-unicast MAC.
    Malformed => "malformed",
    /// The reply did not fit the frame's mbuf.
    NoRoom => "no_room",
}

/// Frames for the gateway itself, all ports: what was answered (the reply
/// reuses the request's mbuf and leaves by the port it came in on) and
/// what was not, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalStats {
    /// Frames taken off the per-packet path for the gateway itself:
    /// answered, learned from, or dropped with a [`LocalDrop`] reason.
    pub received: u64,
    /// ARP requests for one of our addresses answered.
    pub arp_replies: u64,
    /// Neighbor solicitations for one of our addresses answered (NA).
    pub na_replies: u64,
    /// ICMP echo requests to one of our addresses answered.
    pub echo_v4_replies: u64,
    /// ICMPv6 echo requests to one of our addresses answered.
    pub echo_v6_replies: u64,
    /// Replies handed to the LAN TX queue / to a WAN TX queue.
    pub lan_replies: u64,
    pub wan_replies: u64,
    /// Our own frames a WAN port took: replies, next-hop requests and the
    /// kernel's frames (in `wan_tx`, in no tunnel's `tx`).
    pub wan_replies_sent: u64,
    /// ARP replies / neighbor advertisements that resolved or refreshed a
    /// WAN next hop (taken, not answered, not dropped).
    pub learned: u64,
    /// ARP requests / neighbor solicitations for WAN next hops (retries and
    /// re-confirmations included) handed to a WAN TX queue.
    pub requests: u64,
    /// The same for LAN hosts (a LAN that resolves its hosts), handed to
    /// the LAN TX queue.
    pub lan_requests: u64,
    /// MLD queries for a port's solicited-node groups heard (taken, not
    /// answered in place: the reports follow from the timers), on ports
    /// without a kernel tap (`crate::mld`).
    pub mld_queries: u64,
    /// MLD reports handed to a WAN TX queue / to the LAN TX queue.
    pub mld_reports: u64,
    pub lan_mld_reports: u64,
    /// ARP requests / neighbor solicitations not sent for want of an mbuf
    /// (the resolver asks again at its next retry).
    pub requests_lost: u64,
    /// WAN next hops that did not answer their requests (each time one
    /// turned unreachable).
    pub unresolved: u64,
    /// Lookups of a new neighbor (a next hop, a LAN host) refused because
    /// its port's neighbor cache was full of entries it could not free:
    /// a sweep of addresses from behind a peer, say; the packets are
    /// `lan_next_hop_unresolved` drops.
    pub cache_full: u64,
    /// Not answered, by [`LocalDrop`] reason.
    pub dropped: [u64; LocalDrop::COUNT],
    /// Neighbor cache entries, all ports (a gauge: requests from others
    /// are never learned, so a flood cannot grow it).
    pub neighbors: u64,
}

impl LocalStats {
    /// Counts one frame not answered.
    pub fn drop(&mut self, r: LocalDrop) {
        self.dropped[r as usize] += 1;
    }
    /// Frames not answered for one reason.
    pub fn get(&self, r: LocalDrop) -> u64 {
        self.dropped[r as usize]
    }
    /// Replies, all kinds.
    pub fn answered(&self) -> u64 {
        self.arp_replies + self.na_replies + self.echo_v4_replies + self.echo_v6_replies
    }
    /// Frames not answered, all reasons.
    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().sum()
    }
    /// Non-zero drop counters by name.
    pub fn named_drops(&self) -> Vec<(&'static str, u64)> {
        LocalDrop::ALL.iter().map(|&r| (r.name(), self.get(r))).filter(|(_, v)| *v > 0).collect()
    }
    /// Adds another worker's.
    pub fn merge(&mut self, o: &LocalStats) {
        self.received += o.received;
        self.arp_replies += o.arp_replies;
        self.na_replies += o.na_replies;
        self.echo_v4_replies += o.echo_v4_replies;
        self.echo_v6_replies += o.echo_v6_replies;
        self.lan_replies += o.lan_replies;
        self.wan_replies += o.wan_replies;
        self.wan_replies_sent += o.wan_replies_sent;
        self.learned += o.learned;
        self.requests += o.requests;
        self.lan_requests += o.lan_requests;
        self.mld_queries += o.mld_queries;
        self.mld_reports += o.mld_reports;
        self.lan_mld_reports += o.lan_mld_reports;
        self.requests_lost += o.requests_lost;
        self.unresolved += o.unresolved;
        self.cache_full += o.cache_full;
        for (a, b) in self.dropped.iter_mut().zip(&o.dropped) {
            *a += b;
        }
        self.neighbors += o.neighbors;
    }
}

/// The exception path: frames between the ports and their kernel tap
/// interfaces (ports with `kernel_tap`).
///
/// `taken + copied` is `to_kernel` plus the `kernel_tx_full` and
/// `kernel_tx_rejected` drops. What the kernel sends leaves by its port
/// like the gateway's own replies (`lan_tx`, or `wan_tx` and
/// `local.wan_replies_sent`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames for the gateway itself that the dataplane does not answer,
    /// taken off a port's receive path for the kernel.
    pub taken: u64,
    /// ARP replies and neighbor advertisements: the responder saw them and
    /// a copy went to the kernel (which may have asked).
    pub copied: u64,
    /// Copies not made: the mempool was empty.
    pub copy_failed: u64,
    /// Frames the taps took.
    pub to_kernel: u64,
    /// Frames the kernel sent, handed to the LAN / a WAN TX queue.
    pub from_kernel_lan: u64,
    pub from_kernel_wan: u64,
}

impl KernelStats {
    /// Every counter by name, in one order for the report and the stats
    /// segment.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("taken", self.taken),
            ("copied", self.copied),
            ("copy_failed", self.copy_failed),
            ("to_kernel", self.to_kernel),
            ("from_kernel_lan", self.from_kernel_lan),
            ("from_kernel_wan", self.from_kernel_wan),
        ]
    }

    /// Adds another worker's.
    pub fn merge(&mut self, o: &KernelStats) {
        self.taken += o.taken;
        self.copied += o.copied;
        self.copy_failed += o.copy_failed;
        self.to_kernel += o.to_kernel;
        self.from_kernel_lan += o.from_kernel_lan;
        self.from_kernel_wan += o.from_kernel_wan;
    }
}

/// The re-orderers' counters by name, in one order for the report and the
/// stats segment: packets that waited for a gap, released after a gap given
/// up at the hold time / known lost (every path past it) / for want of
/// slots, flow sequences given up, and times a late packet raised the
/// learned hold.
pub fn reorder_named(r: &ReorderCounters) -> [(&'static str, u64); 6] {
    [
        ("held", r.held),
        ("released_late", r.released_late),
        ("released_passed", r.released_passed),
        ("released_forced", r.released_forced),
        ("skipped", r.skipped),
        ("hold_raised", r.hold_raised),
    ]
}

/// What the workers of one gateway handed each other (all zero with one
/// worker). Summed over the workers, each `_out` = its `_in` once the rings
/// are empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// ESP packets received for a tunnel another worker owns, handed on
    /// unopened / taken from another worker.
    pub esp_out: u64,
    pub esp_in: u64,
    /// Frames opened here for the owner of their sender stream / taken
    /// from the owner of their tunnel.
    pub frames_out: u64,
    pub frames_in: u64,
    /// Remotes learned, path changes and neighbor answers told to the
    /// other workers (one per worker) / heard from them.
    pub messages_out: u64,
    pub messages_in: u64,
    /// Messages not made: the mempool was empty.
    pub messages_failed: u64,
    /// LAN frames handed to / taken from the worker whose NAT shard owns
    /// their flow.
    pub lan_out: u64,
    pub lan_in: u64,
    /// Packets for the LAN handed to / taken from the worker holding their
    /// NAT session.
    pub deliver_out: u64,
    pub deliver_in: u64,
}

impl HandoffStats {
    /// Every counter by name, in one order for the report and the stats
    /// segment.
    pub fn named(&self) -> [(&'static str, u64); 11] {
        [
            ("esp_out", self.esp_out),
            ("esp_in", self.esp_in),
            ("frames_out", self.frames_out),
            ("frames_in", self.frames_in),
            ("messages_out", self.messages_out),
            ("messages_in", self.messages_in),
            ("messages_failed", self.messages_failed),
            ("lan_out", self.lan_out),
            ("lan_in", self.lan_in),
            ("deliver_out", self.deliver_out),
            ("deliver_in", self.deliver_in),
        ]
    }

    /// Adds another worker's.
    pub fn merge(&mut self, o: &HandoffStats) {
        self.esp_out += o.esp_out;
        self.esp_in += o.esp_in;
        self.frames_out += o.frames_out;
        self.frames_in += o.frames_in;
        self.messages_out += o.messages_out;
        self.messages_in += o.messages_in;
        self.messages_failed += o.messages_failed;
        self.lan_out += o.lan_out;
        self.lan_in += o.lan_in;
        self.deliver_out += o.deliver_out;
        self.deliver_in += o.deliver_in;
    }
}

/// Everything one worker counts.
#[derive(Debug, Clone, Default)]
pub struct WorkerCounters {
    /// Frames received on / sent to the LAN (sent: taken by the port).
    ///
    /// Conservation, each packet counted once:
    /// - `lan_rx` (plus the pieces `tunnel_cut` added, and the packets
    ///   made whole from `nat.out_frags`) is `encapsulated`
    ///   plus the LAN side's incoming drops
    ///   (NAT's `out_drops` included; and plain mode's engine drops when
    ///   sealing) plus the LAN frames for the gateway itself, plus the
    ///   fragments `nat.out_frags` took (our own `icmp_tunnelled` errors
    ///   come in beside `lan_rx`);
    /// - `wan_rx` plus `frags.reassembled` is `frags.taken`, the tunnels'
    ///   `rx` and `rejected`, `keepalives_rx`, the WAN side's incoming
    ///   drops and the WAN frames for the gateway itself (`local.received` counts both
    ///   sides: each is answered, learned from, or dropped with a
    ///   `LocalDrop` reason);
    /// - `delivered`, `icmp_sent` and `local.lan_replies` (and the packets
    ///   made whole from `nat.in_frags`, less the fragments it took) are `lan_tx`
    ///   plus `lan_tx_full`, `lan_tx_rejected` and NAT's `in_drops` (the
    ///   NAT translates what the re-orderer delivered, just before the LAN
    ///   TX queue; our own replies and the kernel's frames skip it; the
    ///   kernel's are `kernel.from_kernel_lan`); a packet cut to the LAN's
    ///   MTU is as many frames as it has pieces (`lan_cut`; one frame
    ///   when the port's TSO cuts it, `lan_cut.tso`), or one
    ///   `lan_too_big`, `lan_no_mbuf` or `lan_bad_checksum` drop;
    /// - the tunnels' `tx` and `keepalives_tx` and `local.wan_replies_sent`
    ///   (which counts the kernel's frames too) sum to `wan_tx`; ESP
    ///   packets (and keepalives) for a WAN port whose next hop is
    ///   unresolved are dropped on the way out (`next_hop_unresolved`, a
    ///   TX-side drop);
    /// - `keepalives` (handed to a WAN TX queue) are the tunnels'
    ///   `keepalives_tx` or a TX-side drop;
    /// - frames for the kernel (`kernel.taken`) are, like `local.received`,
    ///   a way in: see [`KernelStats`].
    pub lan_rx: Flow,
    pub lan_tx: Flow,
    /// Frames received on / sent to the WAN ports.
    pub wan_rx: Flow,
    pub wan_tx: Flow,
    /// Inner packets taken from the LAN into a tunnel: sealed (plain mode)
    /// or packed into frames that were sealed (bundle mode; the packets of
    /// a frame whose seal failed are `frame_lost` drops, the frame an
    /// engine drop).
    pub encapsulated: u64,
    /// Inner packets from a tunnel handed to the LAN TX queue.
    pub delivered: u64,
    /// ICMP errors handed to the LAN TX queue (plain mode: "fragmentation
    /// needed" for a packet with DF set too big for the WAN).
    pub icmp_sent: u64,
    /// ICMP errors sent back into the tunnels: "fragmentation needed" or
    /// ICMPv6 "packet too big" for a packet from a tunnel too big for the
    /// LAN (`lan_too_big`), "host unreachable" / "address unreachable"
    /// for one whose LAN host did not answer (`lan_next_hop_unresolved`). Routed and tunnelled like LAN packets (they
    /// are in `encapsulated`, not in `lan_rx`).
    pub icmp_tunnelled: u64,
    /// RFC 3948 NAT-keepalives received on a WAN port (not an error: the
    /// peer keeps a NAT mapping open; they change nothing).
    pub keepalives_rx: u64,
    /// NAT-keepalives handed to a WAN TX queue, all tunnels (those the
    /// port took are the tunnels' `keepalives_tx`).
    pub keepalives: u64,
    /// Peer sender streams that started over (a restarted peer, a renamed
    /// bundle): their re-orderer delivered what it held and began anew.
    pub stream_restarts: u64,
    /// Bundle frames sent while the sender's liveness had every path of
    /// their bundle dead (round robin over all of them: liveness may be
    /// wrong; all paths down is an outage).
    pub no_live_path: u64,
    /// Dataplane drops by reason.
    pub drops: DpDrops,
    /// Tunnel engine drops by reason (all bundles, and the engines new
    /// tables replaced).
    pub engine: DropCounters,
    /// Per bundle, per tunnel.
    pub tunnels: Vec<Vec<TunnelCounters>>,
    /// Tunnels new tables removed (or whose path changed), summed: the
    /// sums above still hold across new tables. A tunnel that stays (same
    /// port and addresses) keeps its own counters, even in a rebuilt bundle.
    pub retired_tunnels: TunnelCounters,
    /// Outer IPv4 fragments.
    pub frags: FragCounters,
    /// Packets for the LAN cut to its MTU.
    pub lan_cut: CutCounters,
    /// Plain mode: packets from the LAN too big for the tunnels, cut
    /// before sealing: TCP into segments (GSO), other IPv4 without DF
    /// into fragments.
    pub tunnel_cut: CutCounters,
    /// Plain mode: TCP SYNs crossing a tunnel, either way, whose MSS was
    /// lowered to what one ESP packet carries (`mss::clamp`; on the way
    /// out, before the size and path checks that may still drop them).
    pub mss_clamped: u64,
    /// Polls that found no work, and bursts that found some.
    pub idle_polls: u64,
    pub busy_polls: u64,
    /// NAT (all zero when the tables have no NAT rule).
    pub nat: NatStats,
    /// ARP, ND and echo requests for the gateway itself.
    pub local: LocalStats,
    /// The exception path to and from the kernel.
    pub kernel: KernelStats,
    /// Work handed between workers.
    pub handoff: HandoffStats,
    /// The bundle re-orderers' work (their drops are in `engine`).
    pub reorder: ReorderCounters,
    /// Packets delivered to the LAN that wait for their neighbor to answer
    /// (a gauge; `lan_next_hop_unresolved` or `lan_tx` later).
    pub lan_held: u64,
}

impl WorkerCounters {
    /// The counters that are one number each, named as the stats segment
    /// names them, in its order (the JSON report groups them by prefix).
    pub fn scalars(&self) -> [(&'static str, u64); 27] {
        [
            ("encapsulated", self.encapsulated),
            ("delivered", self.delivered),
            ("icmp_sent", self.icmp_sent),
            ("icmp_tunnelled", self.icmp_tunnelled),
            ("keepalives_rx", self.keepalives_rx),
            ("keepalives", self.keepalives),
            ("stream_restarts", self.stream_restarts),
            ("no_live_path", self.no_live_path),
            ("frag/taken", self.frags.taken),
            ("frag/reassembled", self.frags.reassembled),
            ("frag/discarded", self.frags.discarded),
            ("frag/atomic", self.frags.atomic),
            ("frag/fragmented", self.frags.fragmented),
            ("frag/sent", self.frags.sent),
            ("lan_cut/segmented", self.lan_cut.segmented),
            ("lan_cut/segments", self.lan_cut.segments),
            ("lan_cut/fragmented", self.lan_cut.fragmented),
            ("lan_cut/fragments", self.lan_cut.fragments),
            ("lan_cut/tso", self.lan_cut.tso),
            ("lan_cut/tso_segments", self.lan_cut.tso_segments),
            ("tunnel_cut/segmented", self.tunnel_cut.segmented),
            ("tunnel_cut/segments", self.tunnel_cut.segments),
            ("tunnel_cut/fragmented", self.tunnel_cut.fragmented),
            ("tunnel_cut/fragments", self.tunnel_cut.fragments),
            ("mss_clamped", self.mss_clamped),
            ("idle_polls", self.idle_polls),
            ("busy_polls", self.busy_polls),
        ]
    }

    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &WorkerCounters) {
        self.lan_rx.merge(&o.lan_rx);
        self.lan_tx.merge(&o.lan_tx);
        self.wan_rx.merge(&o.wan_rx);
        self.wan_tx.merge(&o.wan_tx);
        self.encapsulated += o.encapsulated;
        self.delivered += o.delivered;
        self.icmp_sent += o.icmp_sent;
        self.icmp_tunnelled += o.icmp_tunnelled;
        self.keepalives_rx += o.keepalives_rx;
        self.stream_restarts += o.stream_restarts;
        self.no_live_path += o.no_live_path;
        self.reorder.merge(&o.reorder);
        self.keepalives += o.keepalives;
        self.frags.taken += o.frags.taken;
        self.frags.reassembled += o.frags.reassembled;
        self.frags.discarded += o.frags.discarded;
        self.frags.atomic += o.frags.atomic;
        self.frags.fragmented += o.frags.fragmented;
        self.frags.sent += o.frags.sent;
        self.lan_cut.segmented += o.lan_cut.segmented;
        self.lan_cut.segments += o.lan_cut.segments;
        self.lan_cut.fragmented += o.lan_cut.fragmented;
        self.lan_cut.fragments += o.lan_cut.fragments;
        self.lan_cut.tso += o.lan_cut.tso;
        self.lan_cut.tso_segments += o.lan_cut.tso_segments;
        self.tunnel_cut.segmented += o.tunnel_cut.segmented;
        self.tunnel_cut.segments += o.tunnel_cut.segments;
        self.tunnel_cut.fragmented += o.tunnel_cut.fragmented;
        self.tunnel_cut.fragments += o.tunnel_cut.fragments;
        self.drops.merge(&o.drops);
        self.engine.merge(&o.engine);
        if self.tunnels.len() < o.tunnels.len() {
            self.tunnels.resize(o.tunnels.len(), Vec::new());
        }
        for (b, ts) in o.tunnels.iter().enumerate() {
            if self.tunnels[b].len() < ts.len() {
                self.tunnels[b].resize(ts.len(), TunnelCounters::default());
            }
            for (t, c) in ts.iter().enumerate() {
                self.tunnels[b][t].merge(c);
            }
        }
        self.retired_tunnels.merge(&o.retired_tunnels);
        self.mss_clamped += o.mss_clamped;
        self.idle_polls += o.idle_polls;
        self.busy_polls += o.busy_polls;
        self.nat.merge(&o.nat);
        self.local.merge(&o.local);
        self.kernel.merge(&o.kernel);
        self.handoff.merge(&o.handoff);
        self.lan_held += o.lan_held;
    }
}
