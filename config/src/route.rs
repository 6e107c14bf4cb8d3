//! Inner-destination route table: longest-prefix match over IPv4 and IPv6
//! prefixes, each naming a peer by index.
//!
//! Built once from the configuration and then only read. One open-addressing
//! hash table per prefix length actually used, probed from the longest
//! length down (the "binary search on prefix lengths" layout of Waldvogel et
//! al., searched linearly): a lookup costs one masked probe per distinct
//! length, touches no lock and allocates nothing.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

/// An IPv4 prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

/// An IPv6 prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

/// An IPv4 or IPv6 prefix, written `10.2.0.0/16` or `fd00:2::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    V4(Ipv4Prefix),
    V6(Ipv6Prefix),
}

/// Why a prefix could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("expected address/length, e.g. 10.2.0.0/16 or fd00:2::/64")]
    MissingLength,
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    BadAddress(String),
    #[error("{0:?} is not a prefix length")]
    BadLength(String),
    #[error("prefix length {len} is longer than {max}")]
    LengthTooLong { len: u8, max: u8 },
    #[error("host bits set: {addr}/{len} (did you mean {network}/{len}?)")]
    HostBits {
        addr: IpAddr,
        len: u8,
        network: IpAddr,
    },
}

impl Ipv4Prefix {
    /// The prefix `addr/len`; host bits must be clear.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 32 {
            return Err(PrefixError::LengthTooLong { len, max: 32 });
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask_v4(len));
        if network != addr {
            return Err(PrefixError::HostBits {
                addr: addr.into(),
                len,
                network: network.into(),
            });
        }
        Ok(Ipv4Prefix { addr, len })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask_v4(self.len) == u32::from(self.addr)
    }
}

impl Ipv6Prefix {
    /// The prefix `addr/len`; host bits must be clear.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 128 {
            return Err(PrefixError::LengthTooLong { len, max: 128 });
        }
        let network = Ipv6Addr::from(u128::from(addr) & mask_v6(len));
        if network != addr {
            return Err(PrefixError::HostBits {
                addr: addr.into(),
                len,
                network: network.into(),
            });
        }
        Ok(Ipv6Prefix { addr, len })
    }

    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask_v6(self.len) == u128::from(self.addr)
    }
}

impl Prefix {
    /// The prefix `addr/len`; host bits must be clear.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        match addr {
            IpAddr::V4(a) => Ipv4Prefix::new(a, len).map(Prefix::V4),
            IpAddr::V6(a) => Ipv6Prefix::new(a, len).map(Prefix::V6),
        }
    }

    pub fn addr(&self) -> IpAddr {
        match self {
            Prefix::V4(p) => p.addr.into(),
            Prefix::V6(p) => p.addr.into(),
        }
    }

    pub fn prefix_len(&self) -> u8 {
        match self {
            Prefix::V4(p) => p.len,
            Prefix::V6(p) => p.len,
        }
    }
}

/// Splits `addr/len` into its parts, without checking host bits: also the
/// syntax of an interface address such as `192.0.2.1/24`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), PrefixError> {
    let (addr, len) = s.split_once('/').ok_or(PrefixError::MissingLength)?;
    let addr = IpAddr::from_str(addr).map_err(|_| PrefixError::BadAddress(addr.to_string()))?;
    // u8::from_str accepts a leading '+'; a prefix length is digits only.
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PrefixError::BadLength(len.to_string()));
    }
    let len = u8::from_str(len).map_err(|_| PrefixError::BadLength(len.to_string()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(PrefixError::LengthTooLong { len, max });
    }
    Ok((addr, len))
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let (addr, len) = parse_cidr(s)?;
        Prefix::new(addr, len)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4(p) => p.fmt(f),
            Prefix::V6(p) => p.fmt(f),
        }
    }
}

const fn mask_v4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

const fn mask_v6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

/// Why a route table could not be built. `index` is the entry's position in
/// the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("prefix {prefix} appears twice (entries {first} and {index})")]
    Duplicate {
        prefix: Prefix,
        first: usize,
        index: usize,
    },
    #[error("value {value} is reserved")]
    ReservedValue { index: usize, value: u32 },
}

/// Value marking an empty slot; no route may carry it.
pub const RESERVED_VALUE: u32 = u32::MAX;

/// Address bits of one family, as the hash tables key them.
trait Key: Copy + Eq + Default {
    fn mask(len: u8) -> Self;
    fn and(self, mask: Self) -> Self;
    /// 64 well-mixed bits; the table uses the top ones.
    fn hash(self) -> u64;
}

/// Fibonacci hashing multiplier, 2^64 / golden ratio (Knuth, TAOCP 6.4).
const PHI: u64 = 0x9e37_79b9_7f4a_7c15;

impl Key for u32 {
    fn mask(len: u8) -> Self {
        mask_v4(len)
    }
    fn and(self, mask: Self) -> Self {
        self & mask
    }
    fn hash(self) -> u64 {
        (self as u64).wrapping_mul(PHI)
    }
}

impl Key for u128 {
    fn mask(len: u8) -> Self {
        mask_v6(len)
    }
    fn and(self, mask: Self) -> Self {
        self & mask
    }
    fn hash(self) -> u64 {
        let hi = (self >> 64) as u64;
        let lo = self as u64;
        (hi.wrapping_mul(PHI) ^ lo).wrapping_mul(PHI)
    }
}

/// The prefixes of one length: an open-addressing table with linear
/// probing, at most half full, keyed by the masked address.
#[derive(Clone)]
struct LengthTable<K> {
    len: u8,
    mask: K,
    /// `64 - log2(slots.len())`: the hash's top bits pick the slot.
    shift: u32,
    slots: Box<[(K, u32)]>,
}

impl<K: Key> LengthTable<K> {
    fn build(len: u8, entries: &[(K, u32)]) -> Self {
        let cap = (entries.len() * 2).next_power_of_two().max(2);
        let mut slots = vec![(K::default(), RESERVED_VALUE); cap].into_boxed_slice();
        let shift = 64 - cap.trailing_zeros();
        for &(key, value) in entries {
            let mut i = (key.hash() >> shift) as usize;
            while slots[i].1 != RESERVED_VALUE {
                i = (i + 1) & (cap - 1);
            }
            slots[i] = (key, value);
        }
        LengthTable {
            len,
            mask: K::mask(len),
            shift,
            slots,
        }
    }

    #[inline]
    fn get(&self, addr: K) -> Option<u32> {
        let key = addr.and(self.mask);
        let last = self.slots.len() - 1;
        let mut i = (key.hash() >> self.shift) as usize;
        loop {
            let (k, v) = self.slots[i];
            if v == RESERVED_VALUE {
                return None;
            }
            if k == key {
                return Some(v);
            }
            i = (i + 1) & last;
        }
    }
}

/// Longest-prefix match for one family: the length tables, longest first.
#[derive(Clone)]
struct Lpm<K> {
    tables: Box<[LengthTable<K>]>,
    routes: usize,
}

impl<K: Key> Lpm<K> {
    /// `entries` holds (length, masked key, value), sorted by length, longest
    /// first, without duplicates.
    fn build(entries: &[(u8, K, u32)]) -> Self {
        let mut tables = Vec::new();
        let mut rest = entries;
        while let Some(&(len, _, _)) = rest.first() {
            let n = rest.iter().take_while(|e| e.0 == len).count();
            let keyed: Vec<(K, u32)> = rest[..n].iter().map(|&(_, k, v)| (k, v)).collect();
            tables.push(LengthTable::build(len, &keyed));
            rest = &rest[n..];
        }
        Lpm {
            tables: tables.into_boxed_slice(),
            routes: entries.len(),
        }
    }

    #[inline]
    fn lookup(&self, addr: K) -> Option<u32> {
        self.tables.iter().find_map(|t| t.get(addr))
    }
}

/// Immutable longest-prefix-match table from inner destination to a peer
/// index. Lookups are allocation-free and cost one hash probe per distinct
/// prefix length present in that family.
#[derive(Clone)]
pub struct RouteTable {
    v4: Lpm<u32>,
    v6: Lpm<u128>,
}

impl RouteTable {
    /// A table without routes: every lookup misses.
    pub fn empty() -> Self {
        RouteTable {
            v4: Lpm::build(&[]),
            v6: Lpm::build(&[]),
        }
    }

    /// Builds the table. Identical prefixes twice are an error; overlapping
    /// prefixes of different lengths are fine (the longest matches).
    /// [`RESERVED_VALUE`] may not be used as a value.
    pub fn new<I>(routes: I) -> Result<Self, RouteError>
    where
        I: IntoIterator<Item = (Prefix, u32)>,
    {
        let mut v4: Vec<(u8, u32, u32, usize)> = Vec::new();
        let mut v6: Vec<(u8, u128, u32, usize)> = Vec::new();
        for (index, (prefix, value)) in routes.into_iter().enumerate() {
            if value == RESERVED_VALUE {
                return Err(RouteError::ReservedValue { index, value });
            }
            match prefix {
                Prefix::V4(p) => v4.push((p.len, p.addr.into(), value, index)),
                Prefix::V6(p) => v6.push((p.len, p.addr.into(), value, index)),
            }
        }
        // Longest first; ties by key, then input order, so duplicates are
        // adjacent and the earlier entry is reported as `first`.
        v4.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.3.cmp(&b.3)));
        v6.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.3.cmp(&b.3)));
        if let Some(w) = v4.windows(2).find(|w| (w[0].0, w[0].1) == (w[1].0, w[1].1)) {
            return Err(RouteError::Duplicate {
                prefix: Prefix::V4(Ipv4Prefix {
                    addr: w[0].1.into(),
                    len: w[0].0,
                }),
                first: w[0].3,
                index: w[1].3,
            });
        }
        if let Some(w) = v6.windows(2).find(|w| (w[0].0, w[0].1) == (w[1].0, w[1].1)) {
            return Err(RouteError::Duplicate {
                prefix: Prefix::V6(Ipv6Prefix {
                    addr: w[0].1.into(),
                    len: w[0].0,
                }),
                first: w[0].3,
                index: w[1].3,
            });
        }
        let v4: Vec<(u8, u32, u32)> = v4.into_iter().map(|(l, k, v, _)| (l, k, v)).collect();
        let v6: Vec<(u8, u128, u32)> = v6.into_iter().map(|(l, k, v, _)| (l, k, v)).collect();
        Ok(RouteTable {
            v4: Lpm::build(&v4),
            v6: Lpm::build(&v6),
        })
    }

    /// The value of the longest IPv4 prefix containing `dst`.
    #[inline]
    pub fn lookup_v4(&self, dst: Ipv4Addr) -> Option<u32> {
        self.v4.lookup(u32::from(dst))
    }

    /// The value of the longest IPv6 prefix containing `dst`.
    #[inline]
    pub fn lookup_v6(&self, dst: Ipv6Addr) -> Option<u32> {
        self.v6.lookup(u128::from(dst))
    }

    /// Lookup by raw destination bytes as found in a header: 4 bytes for
    /// IPv4, 16 for IPv6; any other length misses.
    #[inline]
    pub fn lookup(&self, dst: &[u8]) -> Option<u32> {
        if let Ok(b) = <[u8; 4]>::try_from(dst) {
            self.v4.lookup(u32::from_be_bytes(b))
        } else if let Ok(b) = <[u8; 16]>::try_from(dst) {
            self.v6.lookup(u128::from_be_bytes(b))
        } else {
            None
        }
    }

    /// Number of IPv4 routes.
    pub fn len_v4(&self) -> usize {
        self.v4.routes
    }

    /// Number of IPv6 routes.
    pub fn len_v6(&self) -> usize {
        self.v6.routes
    }

    /// Number of routes of both families.
    pub fn len(&self) -> usize {
        self.v4.routes + self.v6.routes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct IPv4 prefix lengths, longest first: the probes a miss costs.
    pub fn lengths_v4(&self) -> impl Iterator<Item = u8> + '_ {
        self.v4.tables.iter().map(|t| t.len)
    }

    /// Distinct IPv6 prefix lengths, longest first.
    pub fn lengths_v6(&self) -> impl Iterator<Item = u8> + '_ {
        self.v6.tables.iter().map(|t| t.len)
    }
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable::empty()
    }
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("v4", &self.v4.routes)
            .field("v6", &self.v6.routes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn table(routes: &[(&str, u32)]) -> RouteTable {
        RouteTable::new(routes.iter().map(|&(s, v)| (p(s), v))).unwrap()
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_prefixes() {
        assert_eq!(p("10.2.0.0/16").to_string(), "10.2.0.0/16");
        assert_eq!(p("fd00:2::/64").to_string(), "fd00:2::/64");
        assert_eq!(p("0.0.0.0/0").prefix_len(), 0);
        assert_eq!(p("::/0").prefix_len(), 0);
        assert_eq!(p("192.0.2.7/32").prefix_len(), 32);
        assert_eq!(p("2001:db8::1/128").prefix_len(), 128);
    }

    #[test]
    fn rejects_bad_prefixes() {
        let e = |s: &str| s.parse::<Prefix>().unwrap_err();
        assert_eq!(e("10.2.0.0"), PrefixError::MissingLength);
        assert!(matches!(e("10.2.0/16"), PrefixError::BadAddress(_)));
        assert!(matches!(e("10.2.0.0/+16"), PrefixError::BadLength(_)));
        assert!(matches!(e("10.2.0.0/"), PrefixError::BadLength(_)));
        assert!(matches!(e("10.2.0.0/x"), PrefixError::BadLength(_)));
        assert_eq!(
            e("10.2.0.0/33"),
            PrefixError::LengthTooLong { len: 33, max: 32 }
        );
        assert_eq!(
            e("::/129"),
            PrefixError::LengthTooLong { len: 129, max: 128 }
        );
        assert!(matches!(e("10.2.0.1/16"), PrefixError::HostBits { .. }));
        assert!(matches!(e("fd00:2::1/64"), PrefixError::HostBits { .. }));
        assert_eq!(
            e("10.2.3.4/16").to_string(),
            "host bits set: 10.2.3.4/16 (did you mean 10.2.0.0/16?)"
        );
    }

    #[test]
    fn empty_table_misses() {
        let t = RouteTable::empty();
        assert_eq!(t.lookup_v4(v4("10.0.0.1")), None);
        assert_eq!(t.lookup_v6(v6("::1")), None);
        assert!(t.is_empty());
    }

    #[test]
    fn default_routes() {
        let t = table(&[("0.0.0.0/0", 7), ("::/0", 8)]);
        assert_eq!(t.lookup_v4(v4("1.2.3.4")), Some(7));
        assert_eq!(t.lookup_v4(v4("255.255.255.255")), Some(7));
        assert_eq!(t.lookup_v6(v6("2001:db8::1")), Some(8));
        assert_eq!(t.lookup_v6(v6("ffff::")), Some(8));
    }

    #[test]
    fn host_routes() {
        let t = table(&[("10.0.0.1/32", 1), ("fd00::1/128", 2), ("0.0.0.0/0", 3)]);
        assert_eq!(t.lookup_v4(v4("10.0.0.1")), Some(1));
        assert_eq!(t.lookup_v4(v4("10.0.0.2")), Some(3));
        assert_eq!(t.lookup_v6(v6("fd00::1")), Some(2));
        assert_eq!(t.lookup_v6(v6("fd00::2")), None);
    }

    #[test]
    fn longest_of_overlapping_prefixes_wins() {
        let t = table(&[
            ("10.0.0.0/8", 1),
            ("10.2.0.0/16", 2),
            ("10.2.3.0/24", 3),
            ("10.2.3.128/25", 4),
            ("fd00::/16", 5),
            ("fd00:2::/64", 6),
        ]);
        assert_eq!(t.lookup_v4(v4("10.9.9.9")), Some(1));
        assert_eq!(t.lookup_v4(v4("10.2.9.9")), Some(2));
        assert_eq!(t.lookup_v4(v4("10.2.3.9")), Some(3));
        assert_eq!(t.lookup_v4(v4("10.2.3.200")), Some(4));
        assert_eq!(t.lookup_v4(v4("11.0.0.0")), None);
        assert_eq!(t.lookup_v6(v6("fd00:2::9")), Some(6));
        assert_eq!(t.lookup_v6(v6("fd00:3::9")), Some(5));
        assert_eq!(t.lengths_v4().collect::<Vec<_>>(), vec![25, 24, 16, 8]);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn lookup_by_bytes() {
        let t = table(&[("10.2.0.0/16", 1), ("fd00:2::/64", 2)]);
        assert_eq!(t.lookup(&[10, 2, 0, 1]), Some(1));
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0xfd, 0, 0, 2]);
        assert_eq!(t.lookup(&a), Some(2));
        assert_eq!(t.lookup(&[10, 2, 0]), None);
        assert_eq!(t.lookup(&[]), None);
    }

    #[test]
    fn rejects_duplicates_and_reserved_value() {
        let e = RouteTable::new([
            (p("10.2.0.0/16"), 1),
            (p("10.3.0.0/16"), 1),
            (p("10.2.0.0/16"), 2),
        ])
        .unwrap_err();
        assert_eq!(
            e,
            RouteError::Duplicate {
                prefix: p("10.2.0.0/16"),
                first: 0,
                index: 2
            }
        );
        let e = RouteTable::new([(p("::/0"), 1), (p("::/0"), 1)]).unwrap_err();
        assert!(matches!(
            e,
            RouteError::Duplicate {
                first: 0,
                index: 1,
                ..
            }
        ));
        let e = RouteTable::new([(p("::/0"), RESERVED_VALUE)]).unwrap_err();
        assert_eq!(
            e,
            RouteError::ReservedValue {
                index: 0,
                value: RESERVED_VALUE
            }
        );
    }

    #[test]
    fn many_prefixes_of_one_length() {
        let routes: Vec<(Prefix, u32)> = (0..5000u32)
            .map(|i| {
                (
                    Prefix::V4(Ipv4Prefix::new(Ipv4Addr::from(i << 8), 24).unwrap()),
                    i,
                )
            })
            .collect();
        let t = RouteTable::new(routes).unwrap();
        for i in 0..5000u32 {
            assert_eq!(t.lookup_v4(Ipv4Addr::from((i << 8) | 0x55)), Some(i));
        }
        assert_eq!(t.lookup_v4(Ipv4Addr::from(5000u32 << 8)), None);
    }

    /// Naive reference: scan every route, keep the longest that contains.
    fn reference_v4(routes: &[(Ipv4Prefix, u32)], dst: Ipv4Addr) -> Option<u32> {
        routes
            .iter()
            .filter(|(p, _)| p.contains(dst))
            .max_by_key(|(p, _)| p.prefix_len())
            .map(|&(_, v)| v)
    }

    fn reference_v6(routes: &[(Ipv6Prefix, u32)], dst: Ipv6Addr) -> Option<u32> {
        routes
            .iter()
            .filter(|(p, _)| p.contains(dst))
            .max_by_key(|(p, _)| p.prefix_len())
            .map(|&(_, v)| v)
    }

    /// Prefixes drawn from a few "sites" so that they overlap often.
    fn v4_routes() -> impl Strategy<Value = Vec<(Ipv4Prefix, u32)>> {
        let bases = prop::collection::vec(any::<u32>(), 1..4);
        bases.prop_flat_map(|bases| {
            let n = bases.len();
            prop::collection::vec((0..n, 0u8..=32, any::<u32>()), 0..40).prop_map(move |raw| {
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                for (i, (site, len, jitter)) in raw.into_iter().enumerate() {
                    let addr = (bases[site] ^ (jitter & 0xff)) & mask_v4(len);
                    if seen.insert((len, addr)) {
                        out.push((Ipv4Prefix::new(addr.into(), len).unwrap(), i as u32));
                    }
                }
                out
            })
        })
    }

    fn v6_routes() -> impl Strategy<Value = Vec<(Ipv6Prefix, u32)>> {
        let bases = prop::collection::vec(any::<u128>(), 1..4);
        bases.prop_flat_map(|bases| {
            let n = bases.len();
            prop::collection::vec((0..n, 0u8..=128, any::<u128>()), 0..40).prop_map(move |raw| {
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                for (i, (site, len, jitter)) in raw.into_iter().enumerate() {
                    let jitter = jitter & (0xff << 64 | 0xff);
                    let addr = (bases[site] ^ jitter) & mask_v6(len);
                    if seen.insert((len, addr)) {
                        out.push((Ipv6Prefix::new(addr.into(), len).unwrap(), i as u32));
                    }
                }
                out
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn v4_matches_linear_reference(routes in v4_routes(), probes in prop::collection::vec((any::<u32>(), any::<u32>(), any::<usize>()), 64)) {
            let t = RouteTable::new(routes.iter().map(|&(p, v)| (Prefix::V4(p), v))).unwrap();
            prop_assert_eq!(t.len_v4(), routes.len());
            for (random, host, pick) in probes {
                // Half the probes land inside a configured prefix.
                let dst = if routes.is_empty() || pick % 2 == 0 {
                    random
                } else {
                    let (p, _) = routes[pick % routes.len()];
                    u32::from(p.addr()) | (host & !mask_v4(p.prefix_len()))
                };
                let dst = Ipv4Addr::from(dst);
                prop_assert_eq!(t.lookup_v4(dst), reference_v4(&routes, dst));
                prop_assert_eq!(t.lookup(&dst.octets()), reference_v4(&routes, dst));
            }
        }

        #[test]
        fn v6_matches_linear_reference(routes in v6_routes(), probes in prop::collection::vec((any::<u128>(), any::<u128>(), any::<usize>()), 64)) {
            let t = RouteTable::new(routes.iter().map(|&(p, v)| (Prefix::V6(p), v))).unwrap();
            prop_assert_eq!(t.len_v6(), routes.len());
            for (random, host, pick) in probes {
                let dst = if routes.is_empty() || pick % 2 == 0 {
                    random
                } else {
                    let (p, _) = routes[pick % routes.len()];
                    u128::from(p.addr()) | (host & !mask_v6(p.prefix_len()))
                };
                let dst = Ipv6Addr::from(dst);
                prop_assert_eq!(t.lookup_v6(dst), reference_v6(&routes, dst));
                prop_assert_eq!(t.lookup(&dst.octets()), reference_v6(&routes, dst));
            }
        }

        #[test]
        fn parse_display_round_trip(addr in any::<u32>(), len in 0u8..=32) {
            let p = Ipv4Prefix::new((addr & mask_v4(len)).into(), len).unwrap();
            prop_assert_eq!(p.to_string().parse::<Prefix>().unwrap(), Prefix::V4(p));
        }
    }
}
