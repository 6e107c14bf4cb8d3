//! One worker's NAT state: sessions, endpoint-independent mappings and the
//! worker's slice of every pool's ports. Nothing here is shared; the
//! dataplane gives each worker its own shard and steers packets to the
//! owner (see [`NatConfig::owner_of`]).

use std::collections::{HashMap, HashSet, VecDeque};

use core::net::{Ipv4Addr, SocketAddrV4};

use braid_tunnel::Nanos;

use crate::config::{slice_start, steer_hash, v4, ConfigError, NatConfig, Timeouts};
use crate::counters::{NatCounters, NatDrop, Verdict};
use crate::index::Index;
use crate::npt6::Npt6;
use crate::table::{due, hint, tuple_hash, Key, Session, Table, TcpState};
use crate::rewrite::{
    rewrite, rewrite_icmp_error, End, Headers, ParseError, Quote, ICMP, L4, TCP, UDP,
};

/// Session slots the background sweep should examine per packet
/// translated: with a table of `n` slots (2 to 4 per session of the
/// bound), every session is looked at once per `n / 2` packets. The owner
/// calls [`NatShard::expire`] with this budget per packet, once per burst:
/// a tight loop over consecutive slots (the hardware prefetcher streams
/// it), where one or two slots per packet inside the packet loop took a
/// cache miss each (42% of `outbound`'s time at 10^6 sessions).
/// Correctness does not depend on it: a lookup never uses an expired
/// session; the sweep only gives memory and ports back.
pub const SWEEP_PER_PACKET: usize = 2;
/// Slots examined before a new session is refused for a full table: ~64
/// sessions (the table has 2 to 4 slots per session).
pub const SWEEP_WHEN_FULL: usize = 128;
/// Slots looked at, when the table is still full after that sweep, for a
/// TCP connection not yet established to give its place to the new flow
/// (as Linux's conntrack drops an unassured entry early): a SYN flood
/// fills the table with those, and must not lock out every new flow for
/// `tcp_opening`.
pub const EVICT_SCAN: usize = 64;

const NONE: u32 = u32::MAX;

/// A TCP session not established: opening, answered but not acknowledged,
/// or refused (`TcpState`). A full table evicts these first.
#[inline]
fn half_open(x: &Session) -> bool {
    x.proto == TCP && matches!(x.state, TcpState::Opening | TcpState::Replied | TcpState::Refused)
}

/// `NatShard::tables` by direction.
const OUT: usize = 0;
const IN: usize = 1;

/// Slots `expire` passes with one test when none of them is due.
const SWEEP_CHUNK: usize = 16;

/// Most packets one `prefetch_*` call warms (a DPDK burst).
pub const PREFETCH_BURST: usize = 32;
/// Below this many sessions the tables sit in L1/L2 and warming them costs
/// more than it saves, so `prefetch_*` returns at once. At 10^4 sessions
/// they no longer do once the packets' own traffic shares the cache
/// (braid-perf-gw, bundle 64 B: NAT on ~540 -> ~330 cycles per packet with
/// the prefetch, when it was done in two stages: index bucket, then session).
pub const PREFETCH_MIN_SESSIONS: usize = 1 << 10;

/// An endpoint-independent mapping: internal `addr:port` of one protocol,
/// under one rule, to one external port of one pool address.
#[derive(Debug, Clone, Copy, Default)]
struct Mapping {
    int_addr: u32,
    int_port: u16,
    ext_port: u16,
    /// Indexes of the pool address and the rule: u32, as a gateway may
    /// have more than 65,536 rules or pool addresses (u16 indexes wrapped
    /// there: another rule's egress was checked and the packet left
    /// untranslated; found by review).
    pool: u32,
    rule: u32,
    proto: u8,
    /// Live sessions using it; the port goes back to the pool at zero.
    refs: u32,
}

/// Rule indexes are keyed by small integer tuples from packets (addresses,
/// ports): a multiply-rotate hash (FxHash's) costs a few cycles where
/// SipHash costs tens. The keys are rule tuples, not attacker-chosen
/// session tuples, so flooding one bucket needs the operator's own rules.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(b as u64);
        }
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.add(v as u64);
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.add(v as u64);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.add(v as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;
type FastSet<K> = HashSet<K, std::hash::BuildHasherDefault<FxHasher>>;

/// This worker's free ports of one pool address for one protocol, oldest
/// freed first (a port is reused as late as possible), in a shuffled
/// order (RFC 6056: external ports are not predictable). The list is made
/// on the space's first allocation: 50,000 pool addresses x 3 protocols x
/// 55,000 ports would otherwise take gigabytes up front for addresses most
/// of which are never used (one allocation per space, ever).
#[derive(Debug, Clone)]
struct PortSpace {
    free: VecDeque<u16>,
    start: u32,
    end: u32,
    seed: u64,
    filled: bool,
}

impl PortSpace {
    fn new(start: u32, end: u32, seed: u64) -> PortSpace {
        PortSpace { free: VecDeque::new(), start, end, seed, filled: false }
    }

    /// The next free port (making the shuffled list the first time).
    #[inline]
    fn pop(&mut self) -> Option<u16> {
        if !self.filled {
            let mut rng = self.seed;
            let mut ports: Vec<u16> = (self.start..self.end).map(|p| p as u16).collect();
            for k in (1..ports.len()).rev() {
                let j = (splitmix(&mut rng) % (k as u64 + 1)) as usize;
                ports.swap(k, j);
            }
            self.free = VecDeque::from(ports);
            self.filled = true;
        }
        self.free.pop_front()
    }

    /// A port [`pop`](Self::pop) gave out, free again.
    #[inline]
    fn push(&mut self, port: u16) {
        self.free.push_back(port);
    }
}

#[derive(Debug, Clone)]
struct PoolAddr {
    addr: u32,
    lo: u16,
    hi: u16,
    /// TCP, UDP, ICMP.
    spaces: [PortSpace; 3],
}

#[derive(Debug, Clone)]
struct Snat {
    net: u32,
    mask: u32,
    egress: Option<u32>,
    pools: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Dnat {
    external: u32,
    port: u16,
    internal: u32,
    internal_port: u16,
}

const fn proto_index(proto: u8) -> usize {
    match proto {
        TCP => 0,
        UDP => 1,
        _ => 2,
    }
}

pub(crate) fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The lookup tuple of a TCP/UDP/ICMP-query packet read without full
/// checks, for prefetching only: (proto, our side addr, port, remote addr,
/// remote port) with "our side" the source outbound, the destination inbound.
#[inline(always)]
fn quick_tuple(p: &[u8], inbound: bool) -> Option<Key> {
    let v_ihl = *p.first()?;
    if v_ihl >> 4 != 4 {
        return None;
    }
    let ihl = (v_ihl as usize & 0x0f) * 4;
    let l4 = p.get(ihl..ihl + 8)?;
    let rd32 = |at: usize| {
        p.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (src, dst) = (rd32(12)?, rd32(16)?);
    let proto = *p.get(9)?;
    let (sp, dp) = match proto {
        TCP | UDP => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        ICMP => (u16::from_be_bytes([l4[4], l4[5]]), 0),
        _ => return None,
    };
    Some(if inbound {
        if proto == ICMP {
            (proto, dst, sp, src, 0)
        } else {
            (proto, dst, dp, src, sp)
        }
    } else {
        (proto, src, sp, dst, dp)
    })
}

/// A worker's NAT: sessions and mappings preallocated to
/// `NatConfig::max_sessions`, no allocation per packet.
#[derive(Debug, Clone)]
pub struct NatShard {
    /// IPv6 prefix translation: stateless, the same in every shard.
    npt6: Npt6,
    worker: usize,
    n_workers: usize,
    snat: Vec<Snat>,
    dnat: Vec<Dnat>,
    pools: Vec<PoolAddr>,
    /// Rule indexes, so a packet's lookups cost the same with 1 rule or
    /// 100,000: SNAT rules by (prefix length, network), with the distinct
    /// lengths longest first; DNAT rules by external and by internal
    /// (protocol, address, port); addresses the NAT answers for.
    snat_by_net: FastMap<(u8, u32), Vec<u32>>,
    snat_lens: Vec<u8>,
    dnat_by_ext: FastMap<(u8, u32, u16), u32>,
    dnat_by_int: FastMap<(u8, u32, u16), u32>,
    dnat_int_addrs: FastSet<u32>,
    nat_addrs: FastSet<u32>,
    timeouts: Timeouts,
    seed: u64,
    /// The sessions, each twice: `tables[OUT]` keyed by the internal
    /// tuple, `tables[IN]` by the external one (`table.rs`).
    tables: [Table; 2],
    /// Sessions held (expired ones not yet swept included).
    n_sessions: usize,
    max_sessions: usize,
    mappings: Vec<Mapping>,
    free_mappings: Vec<u32>,
    by_internal: Index,
    hand: usize,
    /// Where the next eviction scan starts (`EVICT_SCAN`).
    evict_hand: usize,
    /// TCP sessions not established (`half_open`): what eviction may take.
    half_open: usize,
    counters: NatCounters,
}

impl NatShard {
    /// Builds worker `worker`'s shard (of `n_workers`) from the rules:
    /// checks them, takes this worker's slice of each pool's port range and
    /// allocates every table to its bound.
    pub fn new(
        config: &NatConfig,
        worker: usize,
        n_workers: usize,
    ) -> Result<NatShard, ConfigError> {
        if n_workers == 0 || worker >= n_workers {
            return Err(ConfigError::Worker(worker, n_workers));
        }
        if config.max_sessions == 0 || config.max_sessions > 1 << 30 {
            return Err(ConfigError::MaxSessions);
        }
        let mut rng = config.hash_seed ^ (worker as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut pools: Vec<PoolAddr> = Vec::new();
        // Pool address -> its index in `pools` (50,000 addresses: no scan).
        let mut pool_of: HashMap<u32, usize> = HashMap::new();
        let mut snat = Vec::with_capacity(config.snat.len());
        for (i, rule) in config.snat.iter().enumerate() {
            let net = v4(rule.match_prefix.addr).ok_or(ConfigError::Ipv6(i))?;
            if rule.match_prefix.len > 32 {
                return Err(ConfigError::BadPrefix(i));
            }
            let mask = if rule.match_prefix.len == 0 {
                0
            } else {
                u32::MAX << (32 - rule.match_prefix.len)
            };
            if rule.pool.is_empty() {
                return Err(ConfigError::EmptyPool(i));
            }
            let (lo, hi) = (*rule.ports.start(), *rule.ports.end());
            if lo > hi {
                return Err(ConfigError::EmptyPorts(i));
            }
            let mut ids = Vec::with_capacity(rule.pool.len());
            for &a in &rule.pool {
                let addr = v4(a).ok_or(ConfigError::Ipv6(i))?;
                let id = match pool_of.get(&addr).copied() {
                    Some(p) if (pools[p].lo, pools[p].hi) != (lo, hi) => {
                        return Err(ConfigError::PoolPortsConflict(i, Ipv4Addr::from(addr)))
                    }
                    Some(p) => p,
                    None => {
                        let start = slice_start(lo, hi, worker, n_workers);
                        let end = slice_start(lo, hi, worker + 1, n_workers);
                        let mut space = || PortSpace::new(start, end, splitmix(&mut rng));
                        pools.push(PoolAddr { addr, lo, hi, spaces: [space(), space(), space()] });
                        pool_of.insert(addr, pools.len() - 1);
                        pools.len() - 1
                    }
                };
                ids.push(id as u32);
            }
            snat.push(Snat {
                net: net & mask,
                mask,
                egress: rule.egress,
                pools: ids,
            });
        }
        let mut dnat: Vec<Dnat> = Vec::with_capacity(config.dnat.len());
        let mut dnat_by_ext = FastMap::with_capacity_and_hasher(config.dnat.len(), Default::default());
        let mut dnat_by_int = FastMap::with_capacity_and_hasher(config.dnat.len(), Default::default());
        for (i, d) in config.dnat.iter().enumerate() {
            let external = v4(d.external).ok_or(ConfigError::Ipv6(i))?;
            let internal = v4(d.internal).ok_or(ConfigError::Ipv6(i))?;
            if pool_of
                .get(&external)
                .is_some_and(|&p| (pools[p].lo..=pools[p].hi).contains(&d.port))
            {
                return Err(ConfigError::DnatInPool(i, Ipv4Addr::from(external), d.port));
            }
            let proto = d.proto.number();
            let n = dnat.len() as u32;
            if dnat_by_ext.insert((proto, external, d.port), n).is_some()
                || dnat_by_int.insert((proto, internal, d.internal_port), n).is_some()
            {
                return Err(ConfigError::DnatDuplicate(i));
            }
            dnat.push(Dnat {
                external,
                port: d.port,
                internal,
                internal_port: d.internal_port,
            });
        }
        let max = config.max_sessions;
        let mut snat_by_net: FastMap<(u8, u32), Vec<u32>> = FastMap::with_capacity_and_hasher(snat.len(), Default::default());
        for (i, r) in snat.iter().enumerate() {
            snat_by_net.entry((r.mask.count_ones() as u8, r.net)).or_default().push(i as u32);
        }
        let mut snat_lens: Vec<u8> = snat_by_net.keys().map(|k| k.0).collect::<HashSet<_>>().into_iter().collect();
        snat_lens.sort_unstable_by(|a, b| b.cmp(a));
        let dnat_int_addrs = dnat.iter().map(|d| d.internal).collect();
        let nat_addrs = pools.iter().map(|p| p.addr).chain(dnat.iter().map(|d| d.external)).collect();
        let npt6 = Npt6::new(&config.npt6)?;
        Ok(NatShard {
            npt6,
            snat_by_net,
            snat_lens,
            dnat_by_ext,
            dnat_by_int,
            dnat_int_addrs,
            nat_addrs,
            worker,
            n_workers,
            snat,
            dnat,
            pools,
            timeouts: config.timeouts,
            seed: config.hash_seed,
            tables: [
                Table::with_bound(max, config.hash_seed, false, true),
                Table::with_bound(max, config.hash_seed, true, false),
            ],
            n_sessions: 0,
            max_sessions: max,
            mappings: vec![Mapping::default(); max],
            free_mappings: (0..max as u32).rev().collect(),
            by_internal: Index::with_bound(max),
            hand: 0,
            evict_hand: 0,
            half_open: 0,
            counters: NatCounters::default(),
        })
    }

    /// Replaces the NPTv6 rules (stateless: nothing else changes).
    pub fn set_npt6(&mut self, npt6: Npt6) {
        self.npt6 = npt6;
    }

    /// Checks that `config` builds into shards (what [`NatShard::new`]
    /// refuses), without allocating its session tables.
    pub fn check(config: &NatConfig) -> Result<(), ConfigError> {
        if config.max_sessions == 0 || config.max_sessions > 1 << 30 {
            return Err(ConfigError::MaxSessions);
        }
        let small = NatConfig {
            max_sessions: 1,
            ..config.clone()
        };
        NatShard::new(&small, 0, 1).map(drop)
    }

    /// This shard's worker index.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Number of workers the ports were split between.
    pub fn n_workers(&self) -> usize {
        self.n_workers
    }

    /// Counters.
    pub fn counters(&self) -> &NatCounters {
        &self.counters
    }

    /// Sessions held (expired ones not yet swept included).
    pub fn sessions(&self) -> usize {
        self.n_sessions
    }

    /// The session bound.
    pub fn capacity(&self) -> usize {
        self.max_sessions
    }

    /// Bytes of preallocated tables (not counting the port lists).
    pub fn memory(&self) -> usize {
        self.tables[OUT].memory()
            + self.tables[IN].memory()
            + self.mappings.len() * core::mem::size_of::<Mapping>()
            + self.by_internal.memory()
    }

    /// The external endpoint of the live session of `proto` (6, 17 or 1)
    /// from `internal` to `remote` (port 0 and the query id as internal
    /// port for ICMP), as of `now`.
    pub fn external_of(
        &self,
        proto: u8,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
        now: Nanos,
    ) -> Option<SocketAddrV4> {
        let k = (proto, u32::from(*internal.ip()), internal.port(), u32::from(*remote.ip()), remote.port());
        let p = self.tables[OUT].find(k)?;
        let x = *self.tables[OUT].get(p);
        (self.expires(OUT, p) > now).then(|| SocketAddrV4::new(Ipv4Addr::from(x.ext_addr), x.ext_port))
    }

    /// Prefetches the session records (a cache line each, found from the
    /// packet's bytes alone) that translating these packets with
    /// [`NatShard::outbound`] will read: called on a burst before
    /// translating it, it lets the cache misses of a large table overlap
    /// one another and the translations. Up to
    /// [`PREFETCH_BURST`] packets; the rest are ignored. Does nothing below
    /// [`PREFETCH_MIN_SESSIONS`]. Changes nothing.
    pub fn prefetch_outbound(&self, pkts: &[&[u8]]) {
        self.prefetch(pkts, false);
    }

    /// [`NatShard::prefetch_outbound`] for [`NatShard::inbound`].
    pub fn prefetch_inbound(&self, pkts: &[&[u8]]) {
        self.prefetch(pkts, true);
    }

    fn prefetch(&self, pkts: &[&[u8]], inbound: bool) {
        if self.sessions() < PREFETCH_MIN_SESSIONS {
            return;
        }
        // One line per packet, whose address the packet's bytes (in cache)
        // give: every miss of the burst is in flight at once.
        let table = &self.tables[if inbound { IN } else { OUT }];
        for pkt in &pkts[..pkts.len().min(PREFETCH_BURST)] {
            if let Some(k) = quick_tuple(pkt, inbound) {
                table.warm(k);
            }
        }
    }

    /// Translates a packet going from the LAN to the WAN by `egress` (the
    /// peer or uplink id the route chose): an IPv4 packet, starting at its
    /// header, rewritten in place. Bytes past the IPv4 total length are
    /// left alone.
    pub fn outbound(&mut self, pkt: &mut [u8], egress: u32, now: Nanos) -> Verdict {
        let v = self.outbound_inner(pkt, egress, now);
        match v {
            Verdict::Translated => self.counters.out_translated += 1,
            Verdict::Untouched => self.counters.out_untouched += 1,
            Verdict::Drop(r) => self.counters.drops[r as usize] += 1,
        }
        v
    }

    /// An ICMP error the gateway itself sends from a LAN-side address
    /// ("fragmentation needed" for a packet from a tunnel too big for the
    /// LAN), on its way out by `egress`: translated like any LAN router's
    /// error about a NATed flow; about a flow no rule covers it leaves as
    /// it is, even when a rule covers the address it is sent from (a LAN
    /// host's error like that is dropped: it would carry the host's
    /// internal address out). Anything else is [`NatShard::outbound`].
    pub fn outbound_own_error(&mut self, pkt: &mut [u8], egress: u32, now: Nanos) -> Verdict {
        let v = match Headers::parse(pkt) {
            Ok(h) if h.l4 == L4::IcmpError && !h.frag => self.icmp_error(pkt, &h, End::Src, egress, true, now),
            _ => return self.outbound(pkt, egress, now),
        };
        match v {
            Verdict::Translated => self.counters.out_translated += 1,
            Verdict::Untouched => self.counters.out_untouched += 1,
            Verdict::Drop(r) => self.counters.drops[r as usize] += 1,
        }
        v
    }

    /// Translates a packet coming from the WAN to the LAN, in place.
    pub fn inbound(&mut self, pkt: &mut [u8], now: Nanos) -> Verdict {
        let v = self.inbound_inner(pkt, now);
        match v {
            Verdict::Translated => self.counters.in_translated += 1,
            Verdict::Untouched => self.counters.in_untouched += 1,
            Verdict::Drop(r) => self.counters.drops[r as usize] += 1,
        }
        v
    }

    /// Whether `pkt` is an IPv4 fragment of traffic this NAT may
    /// translate: from a host an SNAT rule covers for `egress` or from a
    /// port forward's internal host (`egress` given: from the LAN), or to
    /// a pool or forward address (`None`: inbound). The NAT cannot
    /// translate a fragment (the ports are in the first one only), so the
    /// dataplane reassembles such fragments first; other fragments pass
    /// untouched. A forward's internal host's fragments are all taken
    /// (only the ports would tell a reply to the forward from other
    /// traffic).
    pub fn translates_fragment(&self, pkt: &[u8], egress: Option<u32>) -> bool {
        let (Some(&vihl), Some(frag), Some(src), Some(dst)) = (pkt.first(), pkt.get(6..8), pkt.get(12..16), pkt.get(16..20)) else {
            return false;
        };
        if vihl >> 4 != 4 || u16::from_be_bytes([frag[0], frag[1]]) & 0x3fff == 0 {
            return false;
        }
        let addr = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        match egress {
            // The rule for this egress: the same answer on every worker.
            // (A flow whose route moved to an egress without a rule keeps
            // its mapping for its whole packets, but its fragments go
            // untranslated, as the host's new flows to that egress do.
            // Taking every covered host's fragments instead lost their
            // datagrams of over 8 fragments to peers without NAT.)
            Some(egress) => {
                let src = addr(src);
                self.is_dnat_internal(src) || self.snat_rule(src, egress).is_some()
            }
            None => self.is_nat_addr(addr(dst)),
        }
    }

    /// Examines up to `budget` session slots from where the last call
    /// stopped and closes those idle past their timeout; returns how many.
    /// Called with a small budget per packet, and by the worker when idle.
    pub fn expire(&mut self, now: Nanos, budget: usize) -> usize {
        let n = self.tables[OUT].slots();
        let now_h = hint(now);
        let mut closed = 0;
        // The outbound table holds every session once. One turn of it at
        // most: each slot once, plus a second look at each slot where a
        // session was closed.
        let mut left = budget.min(n + self.n_sessions);
        while left > 0 {
            // Up to 16 slots at a time: a run with nothing due (free, or
            // not due by its last known deadline: most of them, most of
            // the time) is passed with one branch-free test the compiler
            // vectorizes; a run with something due is looked at slot by
            // slot.
            let i = self.hand;
            let k = SWEEP_CHUNK.min(left).min(n - i);
            let hints = &self.tables[OUT].hints()[i..i + k];
            let any = match <&[u32; SWEEP_CHUNK]>::try_from(hints) {
                Ok(run) => run.iter().fold(false, |any, &h| any | due(h, now_h)),
                Err(_) => hints.iter().fold(false, |any, &h| any | due(h, now_h)),
            };
            if !any {
                self.hand = (i + k) & (n - 1);
                left -= k;
                continue;
            }
            left -= 1;
            if due(hints[0], now_h) {
                let x = *self.tables[OUT].get(i);
                // A record whose timer ran out is looked up in the inbound
                // table, whose copy may have been refreshed since.
                let t = if x.expires <= now { self.expires(OUT, i) } else { x.expires };
                if t <= now {
                    self.close(OUT, i);
                    self.counters.sessions_expired += 1;
                    closed += 1;
                    // The removal may have pulled a later record of the
                    // cluster into `i`: look at `i` again.
                    continue;
                }
                self.tables[OUT].get_mut(i).expires = t;
                self.tables[OUT].set_hint(i, t);
            }
            self.hand = (i + 1) & (n - 1);
        }
        closed
    }

    /// The first rule (in configuration order) matching `src` for `egress`.
    fn snat_rule(&self, src: u32, egress: u32) -> Option<usize> {
        if self.snat.is_empty() {
            return None;
        }
        let mut best: Option<usize> = None;
        for &len in &self.snat_lens {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let Some(rules) = self.snat_by_net.get(&(len, src & mask)) else { continue };
            for &r in rules {
                let r = r as usize;
                if self.snat[r].egress.is_none_or(|e| e == egress) && best.is_none_or(|b| r < b) {
                    best = Some(r);
                }
            }
        }
        best
    }


    fn is_dnat_internal(&self, src: u32) -> bool {
        self.dnat_int_addrs.contains(&src)
    }

    /// An address the NAT answers for: a pool address or a port forward's.
    fn is_nat_addr(&self, addr: u32) -> bool {
        self.nat_addrs.contains(&addr)
    }

    #[inline]
    fn map_hash(&self, proto: u8, addr: u32, port: u16, rule: u32) -> u64 {
        tuple_hash(!self.seed, proto, addr, port, rule, 0)
    }

    /// The other table's copy of the session at `p` in `tables[d]`.
    fn twin(&self, d: usize, p: usize) -> usize {
        let x = self.tables[d].get(p);
        let other = &self.tables[1 - d];
        other.find(other.key_of(x)).expect("both tables hold every session")
    }

    /// When the session at `p` in `tables[d]` expires: the later of its
    /// two copies' timers.
    fn expires(&self, d: usize, p: usize) -> Nanos {
        let q = self.twin(d, p);
        self.tables[d].get(p).expires.max(self.tables[1 - d].get(q).expires)
    }

    /// The session found at `found` in `tables[d]`, unless it is past its
    /// timeout: then it is closed on the spot and the packet sees no
    /// session.
    #[inline]
    fn live(&mut self, d: usize, found: Option<usize>, now: Nanos) -> Option<usize> {
        let p = found?;
        if self.tables[d].get(p).expires > now {
            return Some(p);
        }
        self.live_cold(d, p, now)
    }

    /// `live` for a copy whose own timer ran out: the other copy may have
    /// been refreshed since.
    #[cold]
    fn live_cold(&mut self, d: usize, p: usize, now: Nanos) -> Option<usize> {
        let later = self.expires(d, p);
        if later > now {
            self.tables[d].get_mut(p).expires = later;
            return Some(p);
        }
        self.close(d, p);
        self.counters.sessions_expired += 1;
        None
    }

    /// Closes the session at `p` in `tables[d]`: both copies, and its
    /// mapping's reference.
    fn close(&mut self, d: usize, p: usize) {
        let q = self.twin(d, p);
        let x = *self.tables[d].get(p);
        self.tables[d].remove_at(p);
        self.tables[1 - d].remove_at(q);
        self.n_sessions -= 1;
        self.half_open -= half_open(&x) as usize;
        if x.mapping != NONE {
            let m = &mut self.mappings[x.mapping as usize];
            m.refs -= 1;
            if m.refs == 0 {
                let m = *m;
                let h = self.map_hash(m.proto, m.int_addr, m.int_port, m.rule);
                self.by_internal.remove(h, x.mapping);
                self.pools[m.pool as usize].spaces[proto_index(m.proto)].push(m.ext_port);
                self.free_mappings.push(x.mapping);
            }
        }
    }

    fn timeout(&self, proto: u8, state: TcpState) -> Nanos {
        match (proto, state) {
            (TCP, TcpState::Opening | TcpState::Replied | TcpState::Refused) => self.timeouts.tcp_opening,
            (TCP, TcpState::Established) => self.timeouts.tcp_established,
            (TCP, TcpState::Closing) => self.timeouts.tcp_transitory,
            (UDP, _) => self.timeouts.udp,
            _ => self.timeouts.icmp,
        }
    }

    /// The TCP state after a packet (`outbound` or not) with `l4`'s flags.
    #[inline(always)]
    fn next_state(x: &Session, l4: L4, outbound: bool) -> TcpState {
        let L4::Tcp(f) = l4 else { return x.state };
        let from_opener = outbound == x.opened_out();
        if f.rst() || f.fin() {
            match x.state {
                TcpState::Established | TcpState::Closing => TcpState::Closing,
                // The handshake's last ACK with a FIN on it.
                TcpState::Replied if from_opener && f.ack() && !f.rst() && !f.syn() => TcpState::Closing,
                _ => TcpState::Refused,
            }
        } else {
            match x.state {
                // A stray FIN or RST before the answer does not stop the
                // connection from getting there.
                TcpState::Opening | TcpState::Refused if !from_opener => TcpState::Replied,
                // The handshake's last ACK, not a retransmitted SYN.
                TcpState::Replied if from_opener && f.ack() && !f.syn() => TcpState::Established,
                TcpState::Closing | TcpState::Refused if f.syn() && !f.ack() && from_opener => TcpState::Opening,
                st => st,
            }
        }
    }

    /// Restarts the idle timer of the session at `p` in `tables[d]` for a
    /// packet in direction `d`, and advances its TCP state: the copy the
    /// lookup found only, unless the state changes (then both copies).
    #[inline]
    fn touch(&mut self, d: usize, p: usize, l4: L4, now: Nanos) {
        let x = *self.tables[d].get(p);
        let state = Self::next_state(&x, l4, d == OUT);
        let expires = now.saturating_add(self.timeout(x.proto, state));
        if state == x.state {
            self.tables[d].get_mut(p).expires = expires;
        } else {
            self.set_state(d, p, state, expires);
        }
    }

    #[cold]
    fn set_state(&mut self, d: usize, p: usize, state: TcpState, expires: Nanos) {
        let x = self.tables[d].get(p);
        let was = half_open(x);
        let is = half_open(&Session { state, ..*x });
        self.half_open = self.half_open + is as usize - was as usize;
        let q = self.twin(d, p);
        for (t, i) in [(d, p), (1 - d, q)] {
            let x = self.tables[t].get_mut(i);
            x.state = state;
            x.expires = expires;
        }
        // A new state may have a shorter timeout (a FIN after 2 hours
        // established): the sweep hint, which must never be later than the
        // deadline, moves with it.
        let out = if d == OUT { p } else { q };
        self.tables[OUT].set_hint(out, expires);
    }

    /// Room for one more session, sweeping a little harder when there is
    /// none.
    fn has_room(&mut self, now: Nanos) -> bool {
        if self.n_sessions >= self.max_sessions {
            self.expire(now, SWEEP_WHEN_FULL);
            if self.n_sessions >= self.max_sessions && self.half_open > 0 {
                self.evict_unestablished(now);
            }
        }
        self.n_sessions < self.max_sessions
    }

    /// Closes one TCP session that is not established (opening, answered
    /// but never followed by its opener, or refused) among the next
    /// `EVICT_SCAN` slots, counted `sessions_evicted` (`sessions_expired`
    /// if its time was up anyway).
    #[cold]
    fn evict_unestablished(&mut self, now: Nanos) {
        let n = self.tables[OUT].slots();
        for _ in 0..EVICT_SCAN.min(n) {
            let i = self.evict_hand;
            self.evict_hand = (i + 1) & (n - 1);
            // Hint 0: a free slot.
            if self.tables[OUT].hints()[i] == 0 {
                continue;
            }
            if half_open(self.tables[OUT].get(i)) {
                let expired = self.expires(OUT, i) <= now;
                self.close(OUT, i);
                match expired {
                    true => self.counters.sessions_expired += 1,
                    false => self.counters.sessions_evicted += 1,
                }
                return;
            }
        }
    }

    /// Stores a new session (its state and timer set for its first packet,
    /// in `x.opened_out()`'s direction) in both tables.
    fn insert_session(&mut self, mut x: Session, l4: L4, now: Nanos) {
        x.state = Self::next_state(&x, l4, x.opened_out());
        x.expires = now.saturating_add(self.timeout(x.proto, x.state));
        self.tables[OUT].insert(x);
        self.tables[IN].insert(x);
        self.n_sessions += 1;
        self.half_open += half_open(&x) as usize;
        self.counters.sessions_created += 1;
    }

    fn outbound_inner(&mut self, pkt: &mut [u8], egress: u32, now: Nanos) -> Verdict {
        let h = match Headers::parse(pkt) {
            Ok(h) => h,
            Err(ParseError::Ipv6) => return self.npt6.outbound(pkt, egress),
            Err(ParseError::Malformed) => return Verdict::Drop(NatDrop::Malformed),
        };
        // A forward's reply port counts as NATed even when no SNAT rule
        // covers its host; other traffic of that host may be routed as is.
        let relevant = |me: &Self| {
            me.snat_rule(h.src, egress).is_some()
                || me.dnat_by_int.contains_key(&(h.proto, h.src, h.sport))
        };
        let passthrough = |me: &Self, reason| {
            if relevant(me) {
                Verdict::Drop(reason)
            } else {
                Verdict::Untouched
            }
        };
        if h.frag {
            return passthrough(self, NatDrop::Fragment);
        }
        let opens = match h.l4 {
            L4::Tcp(f) => !f.rst(),
            L4::Udp => true,
            L4::IcmpQuery { request } => request,
            L4::IcmpError => return self.icmp_error(pkt, &h, End::Src, egress, false, now),
            L4::IcmpOther | L4::Other => return passthrough(self, NatDrop::UnsupportedProtocol),
        };
        let rem_port = if h.proto == ICMP { 0 } else { h.dport };
        let found = self.tables[OUT].find((h.proto, h.src, h.sport, h.dst, rem_port));
        if let Some(p) = self.live(OUT, found, now) {
            self.touch(OUT, p, h.l4, now);
            let x = self.tables[OUT].get(p);
            rewrite(pkt, &h, End::Src, x.ext_addr, x.ext_port);
            return Verdict::Translated;
        }
        let Some(rule) = self.snat_rule(h.src, egress) else {
            return passthrough(self, NatDrop::NoSession);
        };
        if !opens {
            return Verdict::Drop(NatDrop::NoSession);
        }
        if !self.has_room(now) {
            return Verdict::Drop(NatDrop::SessionsFull);
        }
        // The endpoint-independent mapping of this internal endpoint.
        let mh = self.map_hash(h.proto, h.src, h.sport, rule as u32);
        let found = self.by_internal.find(mh, |m| {
            let m = &self.mappings[m as usize];
            m.int_addr == h.src
                && m.int_port == h.sport
                && m.proto == h.proto
                && m.rule == rule as u32
        });
        let m = match found {
            Some(m) => m,
            None => {
                let pools = &self.snat[rule].pools;
                let pool = pools[(steer_hash(h.src, 0, 0) % pools.len() as u64) as usize];
                let space = &mut self.pools[pool as usize].spaces[proto_index(h.proto)];
                let Some(port) = space.pop() else {
                    return Verdict::Drop(NatDrop::PortsExhausted);
                };
                // Never empty: each mapping holds a session slot.
                let m = self.free_mappings.pop().unwrap_or(NONE);
                debug_assert!(m != NONE);
                self.mappings[m as usize] = Mapping {
                    int_addr: h.src,
                    int_port: h.sport,
                    ext_port: port,
                    pool,
                    rule: rule as u32,
                    proto: h.proto,
                    refs: 0,
                };
                self.by_internal.insert(mh, m);
                self.counters.mappings_created += 1;
                m
            }
        };
        let map = &mut self.mappings[m as usize];
        map.refs += 1;
        let x = Session {
            expires: 0,
            int_addr: h.src,
            ext_addr: self.pools[map.pool as usize].addr,
            rem_addr: h.dst,
            mapping: m,
            int_port: h.sport,
            ext_port: map.ext_port,
            rem_port,
            proto: h.proto,
            state: TcpState::Opening,
        };
        self.insert_session(x, h.l4, now);
        rewrite(pkt, &h, End::Src, x.ext_addr, x.ext_port);
        Verdict::Translated
    }

    fn inbound_inner(&mut self, pkt: &mut [u8], now: Nanos) -> Verdict {
        let h = match Headers::parse(pkt) {
            Ok(h) => h,
            Err(ParseError::Ipv6) => return self.npt6.inbound(pkt),
            Err(ParseError::Malformed) => return Verdict::Drop(NatDrop::Malformed),
        };
        let passthrough = |me: &Self, reason| {
            if me.is_nat_addr(h.dst) {
                Verdict::Drop(reason)
            } else {
                Verdict::Untouched
            }
        };
        if h.frag {
            return passthrough(self, NatDrop::Fragment);
        }
        let opens = match h.l4 {
            L4::Tcp(f) => !f.rst(),
            L4::Udp => true,
            L4::IcmpQuery { .. } => false,
            L4::IcmpError => return self.icmp_error(pkt, &h, End::Dst, 0, false, now),
            L4::IcmpOther | L4::Other => return passthrough(self, NatDrop::UnsupportedProtocol),
        };
        let rem_port = if h.proto == ICMP { 0 } else { h.sport };
        let found = self.tables[IN].find((h.proto, h.dst, h.dport, h.src, rem_port));
        if let Some(p) = self.live(IN, found, now) {
            self.touch(IN, p, h.l4, now);
            let x = self.tables[IN].get(p);
            rewrite(pkt, &h, End::Dst, x.int_addr, x.int_port);
            return Verdict::Translated;
        }
        let Some(d) = self.dnat_by_ext.get(&(h.proto, h.dst, h.dport)).map(|&i| self.dnat[i as usize]) else {
            return passthrough(self, NatDrop::NoSession);
        };
        if !opens {
            return Verdict::Drop(NatDrop::NoSession);
        }
        let taken = self.tables[OUT].find((h.proto, d.internal, d.internal_port, h.src, h.sport));
        if self.live(OUT, taken, now).is_some() {
            return Verdict::Drop(NatDrop::Conflict);
        }
        if !self.has_room(now) {
            return Verdict::Drop(NatDrop::SessionsFull);
        }
        let x = Session {
            expires: 0,
            int_addr: d.internal,
            ext_addr: d.external,
            rem_addr: h.src,
            mapping: NONE,
            int_port: d.internal_port,
            ext_port: d.port,
            rem_port: h.sport,
            proto: h.proto,
            state: TcpState::Opening,
        };
        self.insert_session(x, h.l4, now);
        rewrite(pkt, &h, End::Dst, x.int_addr, x.int_port);
        Verdict::Translated
    }

    /// An ICMP error. Inbound (`outer == Dst`) it quotes a packet we sent
    /// out translated (source = external endpoint); outbound (`Src`) it
    /// quotes a packet we delivered (destination = internal endpoint). The
    /// session is not refreshed by errors.
    fn icmp_error(
        &mut self,
        pkt: &mut [u8],
        h: &Headers,
        outer: End,
        egress: u32,
        own: bool,
        now: Nanos,
    ) -> Verdict {
        // Outbound, an error concerns the NAT when the flow it quotes was
        // NATed (its internal end under a rule, or a forward's own port):
        // then whoever sent it, a LAN router outside the rules included,
        // it must be translated or dropped. It also does when an SNAT rule
        // covers its sender (a LAN host must not get its address out in
        // an error about anything; a forward's host sends its other
        // traffic as it is, and so its errors about it), except for the gateway's own errors
        // (`own`), which go out as they are about an un-NATed flow, as
        // Linux sends an error related to an un-NATed connection.
        let quotes_nated = |me: &Self, q: &Quote| {
            me.snat_rule(q.dst, egress).is_some() || me.dnat_by_int.contains_key(&(q.proto, q.dst, q.dport))
        };
        let relevant = |me: &Self, q: Option<&Quote>| match outer {
            End::Dst => me.is_nat_addr(h.dst) || q.is_some_and(|q| me.is_nat_addr(q.src)),
            End::Src => {
                let sender = !own && me.snat_rule(h.src, egress).is_some();
                let quoted = match q {
                    Some(q) => quotes_nated(me, q),
                    // A quote the NAT cannot translate whose header names
                    // a host under a rule: it must not leave as it is.
                    None => h.icmp_error_quoted_dst(pkt).is_some_and(|d| me.snat_rule(d, egress).is_some() || me.is_dnat_internal(d)),
                };
                sender || quoted
            }
        };
        let Some(q) = h.icmp_error_quote(pkt) else {
            return if relevant(self, None) {
                Verdict::Drop(NatDrop::IcmpBadQuote)
            } else {
                Verdict::Untouched
            };
        };
        let (d, key): (usize, Key) = match outer {
            End::Dst => (IN, (q.proto, q.src, q.sport, q.dst, if q.proto == ICMP { 0 } else { q.dport })),
            End::Src => (OUT, (q.proto, q.dst, q.dport, q.src, if q.proto == ICMP { 0 } else { q.sport })),
        };
        let found = self.tables[d].find(key);
        let Some(p) = self.live(d, found, now) else {
            return if relevant(self, Some(&q)) {
                Verdict::Drop(NatDrop::IcmpNoSession)
            } else {
                Verdict::Untouched
            };
        };
        let x = *self.tables[d].get(p);
        match outer {
            End::Dst => rewrite_icmp_error(pkt, h, &q, outer, x.int_addr, x.int_port),
            End::Src => rewrite_icmp_error(pkt, h, &q, outer, x.ext_addr, x.ext_port),
        }
        self.counters.icmp_errors_translated += 1;
        Verdict::Translated
    }
}
