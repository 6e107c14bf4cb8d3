//! The NAT's runtime rules, as the dataplane hands them over after the
//! control plane validated its configuration, and the steering helpers
//! that tell which worker's shard owns a packet.

use core::net::{IpAddr, Ipv4Addr};
use core::ops::RangeInclusive;

use braid_tunnel::Nanos;

/// Nanoseconds in a second.
pub const SECOND: Nanos = 1_000_000_000;

/// An IP prefix, `addr/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Network address (host bits are ignored).
    pub addr: IpAddr,
    /// Prefix length, 0..=32 for IPv4.
    pub len: u8,
}

impl Prefix {
    /// `addr/len`.
    pub const fn new(addr: IpAddr, len: u8) -> Self {
        Prefix { addr, len }
    }
}

/// Transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    pub(crate) const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// Source NAT: packets from `match_prefix` leaving by `egress` (any egress
/// when `None`) take an address of `pool` and a port of `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatRule {
    /// Internal sources this rule applies to.
    pub match_prefix: Prefix,
    /// Egress (peer or uplink id) the packet leaves by; `None` for any.
    pub egress: Option<u32>,
    /// External addresses; an internal host always gets the same one
    /// (RFC 4787 REQ-2, "paired" pooling).
    pub pool: Vec<IpAddr>,
    /// External ports (and ICMP query ids), split between workers.
    pub ports: RangeInclusive<u16>,
}

/// Destination NAT: a port forward from `external:port` to
/// `internal:internal_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DnatRule {
    /// Address the outside sends to.
    pub external: IpAddr,
    /// TCP or UDP.
    pub proto: Proto,
    /// Port the outside sends to.
    pub port: u16,
    /// Internal host.
    pub internal: IpAddr,
    /// Port on the internal host.
    pub internal_port: u16,
}

/// Idle timeouts per protocol and TCP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// TCP once established (the opener acknowledged the other side's
    /// answer): 2 h 4 min, the floor of RFC 5382 REQ-5.
    pub tcp_established: Nanos,
    /// TCP after a FIN or RST once established (partially or fully
    /// closed): 4 min, RFC 5382's transitory floor (2 MSL).
    pub tcp_transitory: Nanos,
    /// TCP not established (SYN sent and nothing back, an answer not
    /// acknowledged, or a FIN or RST before that): 30 s. RFC 5382 asks
    /// 4 min for partially open connections; 30 s (Linux's SYN_SENT is
    /// 2 min) bounds what a SYN flood can hold.
    pub tcp_opening: Nanos,
    /// UDP: 2 min, the floor of RFC 4787 REQ-5.
    pub udp: Nanos,
    /// ICMP query (echo) ids: 60 s (RFC 5508 REQ-1).
    pub icmp: Nanos,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: (2 * 3600 + 4 * 60) * SECOND,
            tcp_transitory: 4 * 60 * SECOND,
            tcp_opening: 30 * SECOND,
            udp: 120 * SECOND,
            icmp: 60 * SECOND,
        }
    }
}

/// Everything a shard is built from. Every shard of a gateway gets the same
/// config; the shard keeps its own slice of each pool's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// Source NAT rules, first match wins.
    pub snat: Vec<SnatRule>,
    /// Port forwards.
    pub dnat: Vec<DnatRule>,
    /// IPv6 prefix translations (stateless, RFC 6296).
    pub npt6: Vec<crate::Npt6Rule>,
    /// Session bound per shard (per worker); memory is allocated up front.
    pub max_sessions: usize,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Seed of the session hash: a per-boot random value keeps LAN hosts
    /// from choosing colliding tuples.
    pub hash_seed: u64,
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig {
            snat: Vec::new(),
            dnat: Vec::new(),
            npt6: Vec::new(),
            max_sessions: 65536,
            timeouts: Timeouts::default(),
            hash_seed: 0x6272_6169_645f_6e61,
        }
    }
}

/// Why a config cannot be built into shards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// An IPv6 SNAT or DNAT rule (IPv6 is translated by NPTv6 rules).
    #[error("snat rule {0} / dnat rule: IPv6 addresses are not supported by NAT44 (see npt6)")]
    Ipv6(usize),
    /// A prefix length above 32.
    #[error("snat rule {0}: prefix length above 32")]
    BadPrefix(usize),
    /// A rule with no pool address.
    #[error("snat rule {0}: empty pool")]
    EmptyPool(usize),
    /// An empty port range.
    #[error("snat rule {0}: empty port range")]
    EmptyPorts(usize),
    /// One pool address used with two different port ranges.
    #[error("snat rule {0}: pool address {1} already used with another port range")]
    PoolPortsConflict(usize, Ipv4Addr),
    /// A port forward inside a pool's port range on the same address.
    #[error("dnat rule {0}: {1}:{2} lies inside an snat pool's port range")]
    DnatInPool(usize, Ipv4Addr, u16),
    /// Two port forwards with the same external or internal endpoint.
    #[error("dnat rule {0}: duplicate external or internal endpoint")]
    DnatDuplicate(usize),
    /// `max_sessions` is 0 or above 2^30.
    #[error("max_sessions must be within 1..=2^30")]
    MaxSessions,
    /// An NPTv6 rule that cannot work.
    #[error(transparent)]
    Npt6(#[from] crate::Npt6Error),
    /// `n_workers` is 0 or `worker >= n_workers`.
    #[error("worker {0} of {1}: bad worker index or count")]
    Worker(usize, usize),
}

pub(crate) fn v4(addr: IpAddr) -> Option<u32> {
    match addr {
        IpAddr::V4(a) => Some(u32::from(a)),
        IpAddr::V6(_) => None,
    }
}

/// The first port of `worker`'s slice of `lo..=hi` among `n` workers; the
/// slice ends where the next one starts. Slices differ in size by at most one.
pub(crate) fn slice_start(lo: u16, hi: u16, worker: usize, n: usize) -> u32 {
    let size = hi as u64 - lo as u64 + 1;
    lo as u32 + (size * worker as u64 / n as u64) as u32
}

/// Which worker owns `port` of `lo..=hi`, the inverse of [`slice_start`].
pub(crate) fn slice_owner(lo: u16, hi: u16, port: u16, n: usize) -> usize {
    let size = hi as u64 - lo as u64 + 1;
    let off = (port - lo) as u64;
    (((off + 1) * n as u64 - 1) / size) as usize
}

/// Deterministic 32-bit steering hash of an internal or remote endpoint.
pub(crate) fn steer_hash(addr: u32, port: u16, proto: u8) -> u64 {
    let mut h = ((addr as u64) << 32 | (port as u64) << 8 | proto as u64) ^ 0x9e37_79b9_7f4a_7c15;
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl NatConfig {
    /// The worker whose shard owns external `dst_addr:dst_port` (a port or
    /// ICMP query id of an SNAT pool), or `None` when it is not a pool
    /// port. Each worker allocates only from its own slice of each pool's
    /// range, so a reply's destination port names the shard holding its
    /// session whatever the NIC's RSS did.
    pub fn owner_of(&self, dst_addr: IpAddr, dst_port: u16, n_workers: usize) -> Option<usize> {
        let addr = v4(dst_addr)?;
        if n_workers == 0 {
            return None;
        }
        for rule in &self.snat {
            let (lo, hi) = (*rule.ports.start(), *rule.ports.end());
            if lo <= hi
                && (lo..=hi).contains(&dst_port)
                && rule.pool.iter().any(|&p| v4(p) == Some(addr))
            {
                return Some(slice_owner(lo, hi, dst_port, n_workers));
            }
        }
        None
    }

    /// The worker that must see an inbound (WAN to LAN) IPv4 packet: the
    /// owner of its pool port (for an ICMP error, of the quoted packet's
    /// source port); for a port forward, the hash of the remote endpoint
    /// (the same hash [`NatConfig::outbound_owner`] gives the reply). `None`:
    /// no NAT state involved, any worker will do.
    pub fn inbound_owner(&self, pkt: &[u8], n_workers: usize) -> Option<usize> {
        if n_workers == 0 || (self.snat.is_empty() && self.dnat.is_empty()) {
            // No NAT44 state anywhere (NPTv6 only: stateless).
            return None;
        }
        let h = crate::rewrite::Headers::parse(pkt).ok()?;
        let (dst, dport, src, sport, proto) = match h.icmp_error_quote(pkt) {
            Some(q) => (q.src, q.sport, q.dst, q.dport, q.proto),
            None => (h.dst, h.dport, h.src, h.sport, h.proto),
        };
        if let Some(w) = self.owner_of(IpAddr::V4(dst.into()), dport, n_workers) {
            return Some(w);
        }
        let forwarded = self
            .dnat
            .iter()
            .any(|d| v4(d.external) == Some(dst) && d.port == dport && d.proto.number() == proto);
        forwarded.then(|| (steer_hash(src, sport, proto) % n_workers as u64) as usize)
    }

    /// The worker that must see an outbound (LAN to WAN) IPv4 packet. A
    /// port forward's reply goes to the worker of its remote endpoint;
    /// anything else to the hash of its internal endpoint, so that every
    /// flow of one internal address and port shares one shard and so one
    /// endpoint-independent mapping. `None` for packets the NAT cannot
    /// parse (they are dropped or passed on any worker).
    pub fn outbound_owner(&self, pkt: &[u8], n_workers: usize) -> Option<usize> {
        if n_workers == 0 || (self.snat.is_empty() && self.dnat.is_empty()) {
            // No NAT44 state anywhere (NPTv6 only: stateless).
            return None;
        }
        let h = crate::rewrite::Headers::parse(pkt).ok()?;
        let (src, sport, dst, dport, proto) = match h.icmp_error_quote(pkt) {
            Some(q) => (q.dst, q.dport, q.src, q.sport, q.proto),
            None => (h.src, h.sport, h.dst, h.dport, h.proto),
        };
        let reply = self.dnat.iter().any(|d| {
            v4(d.internal) == Some(src) && d.internal_port == sport && d.proto.number() == proto
        });
        let key = if reply {
            steer_hash(dst, dport, proto)
        } else {
            steer_hash(src, sport, proto)
        };
        Some((key % n_workers as u64) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_partition_the_range() {
        for (lo, hi) in [(1024u16, 65535u16), (0, 0), (10, 12), (1, 65535)] {
            for n in 1..=7 {
                let mut next = lo as u32;
                for w in 0..n {
                    let start = slice_start(lo, hi, w, n);
                    assert_eq!(start, next);
                    let end = slice_start(lo, hi, w + 1, n);
                    for p in start..end {
                        assert_eq!(slice_owner(lo, hi, p as u16, n), w, "{lo}-{hi} n={n} p={p}");
                    }
                    next = end;
                }
                assert_eq!(next, hi as u32 + 1);
            }
        }
    }
}
