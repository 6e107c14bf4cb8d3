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
use crate::rewrite::{
    rewrite, rewrite_icmp_error, End, Headers, ParseError, Quote, ICMP, L4, TCP, UDP,
};

/// Session slots the background sweep should examine per packet
/// translated: with a table of `n` slots, every session is looked at once
/// per `n / 2` packets. The owner calls [`NatShard::expire`] with this
/// budget per packet, once per burst: a tight loop over consecutive slots
/// (the hardware prefetcher streams it), where one or two slots per packet
/// inside the packet loop took a cache miss each (42% of `outbound`'s
/// time at 10^6 sessions). Correctness does not depend on it: a lookup
/// never uses an expired session; the sweep only gives memory and ports
/// back.
pub const SWEEP_PER_PACKET: usize = 2;
/// Slots examined before a new session is refused for a full table.
pub const SWEEP_WHEN_FULL: usize = 64;

const NONE: u32 = u32::MAX;

/// Most packets one `prefetch_*` call warms (a DPDK burst).
pub const PREFETCH_BURST: usize = 32;
/// Below this many sessions the tables sit in L1/L2 and warming them costs
/// more than it saves, so `prefetch_*` returns at once. At 10^4 sessions
/// they no longer do once the packets' own traffic shares the cache
/// (braid-perf-gw, bundle 64 B: NAT on ~540 -> ~330 cycles per packet with
/// the staged prefetch).
pub const PREFETCH_MIN_SESSIONS: usize = 1 << 10;

/// TCP connection state as the NAT tracks it (RFC 5382 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpState {
    /// Only the opener's side seen (a SYN with no answer yet).
    Opening,
    /// Both sides seen.
    Established,
    /// A FIN or RST seen: partially or fully closed.
    Closing,
}

/// One cache line each: a lookup's compare, the translation and the
/// timeout refresh touch one line, never two.
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Session {
    expires: Nanos,
    int_addr: u32,
    ext_addr: u32,
    rem_addr: u32,
    /// Mapping slot, or `NONE` for a port forward.
    mapping: u32,
    int_port: u16,
    ext_port: u16,
    /// Remote port, 0 for ICMP queries.
    rem_port: u16,
    proto: u8,
    state: TcpState,
    /// Opened by an outbound packet (SNAT) rather than inbound (port forward).
    opened_out: bool,
    live: bool,
}

impl Session {
    const DEAD: Session = Session {
        expires: 0,
        int_addr: 0,
        ext_addr: 0,
        rem_addr: 0,
        mapping: NONE,
        int_port: 0,
        ext_port: 0,
        rem_port: 0,
        proto: 0,
        state: TcpState::Opening,
        opened_out: true,
        live: false,
    };
}

/// An endpoint-independent mapping: internal `addr:port` of one protocol,
/// under one rule, to one external port of one pool address.
#[derive(Debug, Clone, Copy, Default)]
struct Mapping {
    int_addr: u32,
    int_port: u16,
    ext_port: u16,
    pool: u16,
    rule: u16,
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
    pools: Vec<u16>,
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

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of a (protocol, endpoint a, endpoint b) tuple, seeded.
#[inline(always)]
fn tuple_hash(seed: u64, proto: u8, a: u32, ap: u16, b: u32, bp: u16) -> u64 {
    let w0 = ((a as u64) << 32) | b as u64;
    let w1 = ((ap as u64) << 32) | ((bp as u64) << 16) | proto as u64;
    let mut h = (seed ^ w0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 29) ^ w1).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 32;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 29)
}

/// The lookup tuple of a TCP/UDP/ICMP-query packet read without full
/// checks, for prefetching only: (proto, our side addr, port, remote addr,
/// remote port) with "our side" the source outbound, the destination inbound.
#[inline(always)]
fn quick_tuple(p: &[u8], inbound: bool) -> Option<(u8, u32, u16, u32, u16)> {
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

/// A deadline in the expiry sweep's units (2^20 ns, about 1 ms; wraps
/// after 52 days, compared with wrapping arithmetic), never 0 (a free slot).
#[inline]
fn hint(t: Nanos) -> u32 {
    ((t >> 20) as u32).max(1)
}

/// Slots `expire` passes with one test when none of them is due.
const SWEEP_CHUNK: usize = 16;

/// Is a slot with sweep hint `h` worth a look at `now_h`: a session that
/// was due by its last known deadline (0 is a free slot). No branch, so a
/// run of them vectorizes.
#[inline(always)]
fn due(h: u32, now_h: u32) -> bool {
    (h != 0) & ((now_h.wrapping_sub(h) as i32) >= 0)
}

/// A worker's NAT: sessions and mappings preallocated to
/// `NatConfig::max_sessions`, no allocation per packet.
#[derive(Debug, Clone)]
pub struct NatShard {
    worker: usize,
    n_workers: usize,
    snat: Vec<Snat>,
    dnat: Vec<Dnat>,
    pools: Vec<PoolAddr>,
    /// Rule indexes, so a packet's lookups cost the same with 1 rule or
    /// 100,000: SNAT rules by (prefix length, network), with the distinct
    /// lengths longest first; DNAT rules by external and by internal
    /// (protocol, address, port); addresses the NAT answers for.
    snat_by_net: FastMap<(u8, u32), Vec<u16>>,
    snat_lens: Vec<u8>,
    dnat_by_ext: FastMap<(u8, u32, u16), u32>,
    dnat_by_int: FastMap<(u8, u32, u16), u32>,
    dnat_int_addrs: FastSet<u32>,
    nat_addrs: FastSet<u32>,
    timeouts: Timeouts,
    seed: u64,
    sessions: Vec<Session>,
    /// Per session slot, what the expiry sweep reads instead of the
    /// session: its deadline when last looked at, in [`hint`] units, or 0
    /// for a free slot. A refresh (`touch`) never writes it, so it is at
    /// most early: the sweep then reads the session and corrects it. Four
    /// bytes a slot, 16 to a cache line: sweeping a live table costs a
    /// line per 16 slots, not one per slot.
    sweep_hint: Vec<u32>,
    free_sessions: Vec<u32>,
    by_out: Index,
    by_in: Index,
    mappings: Vec<Mapping>,
    free_mappings: Vec<u32>,
    by_internal: Index,
    hand: usize,
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
                ids.push(id as u16);
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
        let mut snat_by_net: FastMap<(u8, u32), Vec<u16>> = FastMap::with_capacity_and_hasher(snat.len(), Default::default());
        for (i, r) in snat.iter().enumerate() {
            snat_by_net.entry((r.mask.count_ones() as u8, r.net)).or_default().push(i as u16);
        }
        let mut snat_lens: Vec<u8> = snat_by_net.keys().map(|k| k.0).collect::<HashSet<_>>().into_iter().collect();
        snat_lens.sort_unstable_by(|a, b| b.cmp(a));
        let dnat_int_addrs = dnat.iter().map(|d| d.internal).collect();
        let nat_addrs = pools.iter().map(|p| p.addr).chain(dnat.iter().map(|d| d.external)).collect();
        Ok(NatShard {
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
            sessions: vec![Session::DEAD; max],
            sweep_hint: vec![0; max],
            free_sessions: (0..max as u32).rev().collect(),
            by_out: Index::with_bound(max),
            by_in: Index::with_bound(max),
            mappings: vec![Mapping::default(); max],
            free_mappings: (0..max as u32).rev().collect(),
            by_internal: Index::with_bound(max),
            hand: 0,
            counters: NatCounters::default(),
        })
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
        self.sessions.len() - self.free_sessions.len()
    }

    /// The session bound.
    pub fn capacity(&self) -> usize {
        self.sessions.len()
    }

    /// Bytes of preallocated tables (not counting the port lists).
    pub fn memory(&self) -> usize {
        self.sessions.len() * core::mem::size_of::<Session>()
            + self.sweep_hint.len() * 4
            + self.mappings.len() * core::mem::size_of::<Mapping>()
            + self.by_out.memory()
            + self.by_in.memory()
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
        let s = self.find_out(
            proto,
            u32::from(*internal.ip()),
            internal.port(),
            u32::from(*remote.ip()),
            remote.port(),
        )?;
        let x = &self.sessions[s as usize];
        (x.expires > now).then(|| SocketAddrV4::new(Ipv4Addr::from(x.ext_addr), x.ext_port))
    }

    /// Prefetches the index buckets, then the sessions, that translating
    /// these packets with [`NatShard::outbound`] will read: called on a
    /// burst before translating it, it lets the cache misses of a large
    /// table overlap one another and the translations. Up to
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
        let index = if inbound { &self.by_in } else { &self.by_out };
        // In stages: the hashes (packet bytes, in cache), a prefetch of
        // every first bucket, then a prefetch of the session each bucket's
        // tag points at (reading a bucket waits for its line, which the
        // first stage's prefetches of the others overlap).
        let n = pkts.len().min(PREFETCH_BURST);
        let mut hashes = [0u64; PREFETCH_BURST];
        let mut valid = [false; PREFETCH_BURST];
        for ((h, v), pkt) in hashes.iter_mut().zip(valid.iter_mut()).zip(&pkts[..n]) {
            if let Some((proto, a, ap, r, rp)) = quick_tuple(pkt, inbound) {
                *h = tuple_hash(self.seed, proto, a, ap, r, rp);
                *v = true;
                index.warm(*h);
            }
        }
        // The home bucket often holds another key's: the session is the
        // first whose tag matches.
        for i in 0..n {
            if valid[i] {
                if let Some(x) = index.candidate(hashes[i]).and_then(|s| self.sessions.get(s as usize)) {
                    crate::hint::prefetch(x);
                }
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

    /// Examines up to `budget` session slots from where the last call
    /// stopped and closes those idle past their timeout; returns how many.
    /// Called with a small budget per packet, and by the worker when idle.
    pub fn expire(&mut self, now: Nanos, budget: usize) -> usize {
        let n = self.sessions.len();
        let now_h = hint(now);
        let mut closed = 0;
        let mut left = budget.min(n);
        while left > 0 {
            // Up to 16 slots at a time: a run with nothing due (free, or
            // not due by its last known deadline: most of them, most of
            // the time) is passed with one branch-free test the compiler
            // vectorizes; a run with something due is looked at slot by
            // slot.
            let s = self.hand;
            let k = SWEEP_CHUNK.min(left).min(n - s);
            self.hand = if s + k == n { 0 } else { s + k };
            left -= k;
            let hints = &self.sweep_hint[s..s + k];
            let any = match <&[u32; SWEEP_CHUNK]>::try_from(hints) {
                Ok(run) => run.iter().fold(false, |any, &h| any | due(h, now_h)),
                Err(_) => hints.iter().fold(false, |any, &h| any | due(h, now_h)),
            };
            if !any {
                continue;
            }
            for i in s..s + k {
                if !due(self.sweep_hint[i], now_h) {
                    continue;
                }
                let x = &self.sessions[i];
                if x.live && x.expires <= now {
                    self.close(i as u32);
                    self.counters.sessions_expired += 1;
                    closed += 1;
                } else {
                    self.sweep_hint[i] = if x.live { hint(x.expires) } else { 0 };
                }
            }
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
    fn out_hash(&self, x: &Session) -> u64 {
        tuple_hash(
            self.seed, x.proto, x.int_addr, x.int_port, x.rem_addr, x.rem_port,
        )
    }

    #[inline]
    fn in_hash(&self, x: &Session) -> u64 {
        tuple_hash(
            self.seed, x.proto, x.ext_addr, x.ext_port, x.rem_addr, x.rem_port,
        )
    }

    #[inline]
    fn map_hash(&self, proto: u8, addr: u32, port: u16, rule: u16) -> u64 {
        tuple_hash(!self.seed, proto, addr, port, rule as u32, 0)
    }

    #[inline]
    fn find_out(&self, proto: u8, int: u32, int_port: u16, rem: u32, rem_port: u16) -> Option<u32> {
        let h = tuple_hash(self.seed, proto, int, int_port, rem, rem_port);
        self.by_out.find(h, |s| {
            let x = &self.sessions[s as usize];
            x.int_addr == int
                && x.rem_addr == rem
                && x.int_port == int_port
                && x.rem_port == rem_port
                && x.proto == proto
        })
    }

    #[inline]
    fn find_in(&self, proto: u8, ext: u32, ext_port: u16, rem: u32, rem_port: u16) -> Option<u32> {
        let h = tuple_hash(self.seed, proto, ext, ext_port, rem, rem_port);
        self.by_in.find(h, |s| {
            let x = &self.sessions[s as usize];
            x.ext_addr == ext
                && x.rem_addr == rem
                && x.ext_port == ext_port
                && x.rem_port == rem_port
                && x.proto == proto
        })
    }

    /// A session found by a lookup, unless it is past its timeout: then it
    /// is closed on the spot and the packet sees no session.
    #[inline]
    fn live(&mut self, found: Option<u32>, now: Nanos) -> Option<u32> {
        let s = found?;
        if self.sessions[s as usize].expires <= now {
            self.close(s);
            self.counters.sessions_expired += 1;
            return None;
        }
        Some(s)
    }

    fn close(&mut self, s: u32) {
        let x = self.sessions[s as usize];
        let removed =
            self.by_out.remove(self.out_hash(&x), s) & self.by_in.remove(self.in_hash(&x), s);
        debug_assert!(removed);
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
        self.sessions[s as usize].live = false;
        self.sweep_hint[s as usize] = 0;
        self.free_sessions.push(s);
    }

    fn timeout(&self, x: &Session) -> Nanos {
        match (x.proto, x.state) {
            (TCP, TcpState::Opening) => self.timeouts.tcp_opening,
            (TCP, TcpState::Established) => self.timeouts.tcp_established,
            (TCP, TcpState::Closing) => self.timeouts.tcp_transitory,
            (UDP, _) => self.timeouts.udp,
            _ => self.timeouts.icmp,
        }
    }

    /// Advances the TCP state for a packet and restarts the idle timer.
    #[inline]
    fn touch(&mut self, s: u32, l4: L4, outbound: bool, now: Nanos) {
        let x = &mut self.sessions[s as usize];
        if let L4::Tcp(f) = l4 {
            let from_opener = outbound == x.opened_out;
            x.state = if f.rst() || f.fin() {
                TcpState::Closing
            } else {
                match x.state {
                    TcpState::Opening if !from_opener => TcpState::Established,
                    TcpState::Closing if f.syn() && !f.ack() && from_opener => TcpState::Opening,
                    st => st,
                }
            };
        }
        let x = self.sessions[s as usize];
        self.sessions[s as usize].expires = now.saturating_add(self.timeout(&x));
    }

    /// A free session slot, sweeping a little harder when there is none.
    fn take_session(&mut self, now: Nanos) -> Option<u32> {
        if self.free_sessions.is_empty() {
            self.expire(now, SWEEP_WHEN_FULL);
        }
        self.free_sessions.pop()
    }

    fn insert_session(&mut self, s: u32, x: Session, l4: L4, now: Nanos) {
        self.sessions[s as usize] = x;
        let (oh, ih) = (self.out_hash(&x), self.in_hash(&x));
        debug_assert!(self
            .find_in(x.proto, x.ext_addr, x.ext_port, x.rem_addr, x.rem_port)
            .is_none());
        self.by_out.insert(oh, s);
        self.by_in.insert(ih, s);
        self.counters.sessions_created += 1;
        self.touch(s, l4, x.opened_out, now);
        self.sweep_hint[s as usize] = hint(self.sessions[s as usize].expires);
    }

    fn outbound_inner(&mut self, pkt: &mut [u8], egress: u32, now: Nanos) -> Verdict {
        let h = match Headers::parse(pkt) {
            Ok(h) => h,
            Err(ParseError::Ipv6) => return Verdict::Untouched,
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
            L4::IcmpError => return self.icmp_error(pkt, &h, End::Src, egress, now),
            L4::IcmpOther | L4::Other => return passthrough(self, NatDrop::UnsupportedProtocol),
        };
        let rem_port = if h.proto == ICMP { 0 } else { h.dport };
        let found = self.find_out(h.proto, h.src, h.sport, h.dst, rem_port);
        if let Some(s) = self.live(found, now) {
            self.touch(s, h.l4, true, now);
            let x = &self.sessions[s as usize];
            rewrite(pkt, &h, End::Src, x.ext_addr, x.ext_port);
            return Verdict::Translated;
        }
        let Some(rule) = self.snat_rule(h.src, egress) else {
            return passthrough(self, NatDrop::NoSession);
        };
        if !opens {
            return Verdict::Drop(NatDrop::NoSession);
        }
        let Some(s) = self.take_session(now) else {
            return Verdict::Drop(NatDrop::SessionsFull);
        };
        // The endpoint-independent mapping of this internal endpoint.
        let mh = self.map_hash(h.proto, h.src, h.sport, rule as u16);
        let found = self.by_internal.find(mh, |m| {
            let m = &self.mappings[m as usize];
            m.int_addr == h.src
                && m.int_port == h.sport
                && m.proto == h.proto
                && m.rule == rule as u16
        });
        let m = match found {
            Some(m) => m,
            None => {
                let pools = &self.snat[rule].pools;
                let pool = pools[(steer_hash(h.src, 0, 0) % pools.len() as u64) as usize];
                let space = &mut self.pools[pool as usize].spaces[proto_index(h.proto)];
                let Some(port) = space.pop() else {
                    self.free_sessions.push(s);
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
                    rule: rule as u16,
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
            opened_out: true,
            live: true,
        };
        self.insert_session(s, x, h.l4, now);
        rewrite(pkt, &h, End::Src, x.ext_addr, x.ext_port);
        Verdict::Translated
    }

    fn inbound_inner(&mut self, pkt: &mut [u8], now: Nanos) -> Verdict {
        let h = match Headers::parse(pkt) {
            Ok(h) => h,
            Err(ParseError::Ipv6) => return Verdict::Untouched,
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
            L4::IcmpError => return self.icmp_error(pkt, &h, End::Dst, 0, now),
            L4::IcmpOther | L4::Other => return passthrough(self, NatDrop::UnsupportedProtocol),
        };
        let rem_port = if h.proto == ICMP { 0 } else { h.sport };
        let found = self.find_in(h.proto, h.dst, h.dport, h.src, rem_port);
        if let Some(s) = self.live(found, now) {
            self.touch(s, h.l4, false, now);
            let x = &self.sessions[s as usize];
            rewrite(pkt, &h, End::Dst, x.int_addr, x.int_port);
            return Verdict::Translated;
        }
        let Some(d) = self.dnat_by_ext.get(&(h.proto, h.dst, h.dport)).map(|&i| self.dnat[i as usize]) else {
            return passthrough(self, NatDrop::NoSession);
        };
        if !opens {
            return Verdict::Drop(NatDrop::NoSession);
        }
        let taken = self.find_out(h.proto, d.internal, d.internal_port, h.src, h.sport);
        if self.live(taken, now).is_some() {
            return Verdict::Drop(NatDrop::Conflict);
        }
        let Some(s) = self.take_session(now) else {
            return Verdict::Drop(NatDrop::SessionsFull);
        };
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
            opened_out: false,
            live: true,
        };
        self.insert_session(s, x, h.l4, now);
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
        now: Nanos,
    ) -> Verdict {
        let relevant = |me: &Self, q: Option<&Quote>| match outer {
            End::Dst => me.is_nat_addr(h.dst) || q.is_some_and(|q| me.is_nat_addr(q.src)),
            End::Src => me.snat_rule(h.src, egress).is_some() || me.is_dnat_internal(h.src),
        };
        let Some(q) = h.icmp_error_quote(pkt) else {
            return if relevant(self, None) {
                Verdict::Drop(NatDrop::IcmpBadQuote)
            } else {
                Verdict::Untouched
            };
        };
        let found = match outer {
            End::Dst => {
                let rem_port = if q.proto == ICMP { 0 } else { q.dport };
                self.find_in(q.proto, q.src, q.sport, q.dst, rem_port)
            }
            End::Src => {
                let rem_port = if q.proto == ICMP { 0 } else { q.sport };
                self.find_out(q.proto, q.dst, q.dport, q.src, rem_port)
            }
        };
        let Some(s) = self.live(found, now) else {
            return if relevant(self, Some(&q)) {
                Verdict::Drop(NatDrop::IcmpNoSession)
            } else {
                Verdict::Untouched
            };
        };
        let x = self.sessions[s as usize];
        match outer {
            End::Dst => rewrite_icmp_error(pkt, h, &q, outer, x.int_addr, x.int_port),
            End::Src => rewrite_icmp_error(pkt, h, &q, outer, x.ext_addr, x.ext_port),
        }
        self.counters.icmp_errors_translated += 1;
        Verdict::Translated
    }
}
