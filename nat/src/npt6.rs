//! NPTv6: stateless IPv6-to-IPv6 network prefix translation (RFC 6296).
//!
//! An internal prefix (e.g. a ULA `fd00:1::/48`) is swapped for an
//! external one of the same length (`2001:db8:1::/48`) in the source of
//! packets leaving through a tunnel, and back in the destination of
//! packets arriving. The mapping is 1:1 and *checksum-neutral*: one 16-bit
//! word of the address below the prefix is adjusted so the address's
//! ones'-complement sum does not change (RFC 6296 section 3.2), so no
//! TCP, UDP or ICMPv6 checksum has to be touched, and no state is kept:
//! any worker translates any packet, fragments included (every fragment
//! carries the addresses; nothing else changes).
//!
//! The adjusted word (section 3.5): for a prefix of /48 or shorter, bits
//! 48..63 (the subnet id); for /49../64, the first of the words in bits
//! 64..127 that is not 0xffff. An address whose word is 0xffff there
//! cannot be mapped (0xffff and 0x0000 are the same in ones'-complement
//! arithmetic; a result of 0xffff is written as 0x0000): the packet is
//! dropped (`NatDrop::NptUnmappable`).
//!
//! ICMPv6 errors (types 1-4) carry the packet they are about: going out
//! (an internal host's error about a packet it got), the quoted
//! destination is translated too; coming in, the quoted source. Both
//! changes are neutral, so the ICMPv6 checksum stays right.

use core::net::{IpAddr, Ipv6Addr};

use crate::config::Prefix;
use crate::counters::{NatDrop, Verdict};

/// A translation between an internal and an external IPv6 prefix of the
/// same length (1..=64), for packets leaving by `egress` (any when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Npt6Rule {
    pub internal: Prefix,
    pub external: Prefix,
    pub egress: Option<u32>,
}

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Npt6Error {
    #[error("nptv6 rule {0}: both prefixes must be IPv6")]
    NotIpv6(usize),
    #[error("nptv6 rule {0}: the prefixes must have the same length, 1 to 64")]
    Length(usize),
    #[error("nptv6 rule {0}: its external prefix overlaps rule {1}'s (an arriving packet could not tell which)")]
    ExternalOverlap(usize, usize),
    #[error("nptv6 rule {0}: its internal prefix overlaps rule {1}'s for the same egress")]
    InternalOverlap(usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Compiled {
    /// Network bits, host bits zero.
    internal: u128,
    external: u128,
    mask: u128,
    /// 48 or less: the word at bits 48..63 is adjusted; else one of 64..127.
    len: u8,
    egress: Option<u32>,
    /// Added (ones' complement) to the adjusted word going out:
    /// sum(internal) - sum(external); coming in, its complement.
    adjust_out: u16,
}

/// Ones'-complement sum of two 16-bit words.
const fn add(a: u16, b: u16) -> u16 {
    let s = a as u32 + b as u32;
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Ones'-complement sum of an address's eight words.
fn sum(a: u128) -> u16 {
    (0..8).fold(0, |acc, i| add(acc, (a >> (16 * i)) as u16))
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

fn v6(p: &Prefix) -> Option<u128> {
    match p.addr {
        IpAddr::V6(a) => Some(u128::from(a)),
        IpAddr::V4(_) => None,
    }
}

/// The rules of a gateway, ready to translate.
#[derive(Debug, Clone, Default)]
pub struct Npt6 {
    rules: Vec<Compiled>,
}

/// Where the IPv6 destination and source start in the header.
const SRC: usize = 8;
const DST: usize = 24;
const HEADER: usize = 40;
const ICMPV6: u8 = 58;

impl Npt6 {
    /// Checks and compiles `rules`.
    pub fn new(rules: &[Npt6Rule]) -> Result<Npt6, Npt6Error> {
        let mut out: Vec<Compiled> = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let (Some(int), Some(ext)) = (v6(&r.internal), v6(&r.external)) else {
                return Err(Npt6Error::NotIpv6(i));
            };
            let len = r.internal.len;
            if len != r.external.len || !(1..=64).contains(&len) {
                return Err(Npt6Error::Length(i));
            }
            let m = mask(len);
            let c = Compiled {
                internal: int & m,
                external: ext & m,
                mask: m,
                len,
                egress: r.egress,
                adjust_out: add(sum(int & m), !sum(ext & m)),
            };
            for (j, o) in out.iter().enumerate() {
                let common = c.mask & o.mask;
                if c.external & common == o.external & common {
                    return Err(Npt6Error::ExternalOverlap(i, j));
                }
                let same_egress = c.egress.is_none() || o.egress.is_none() || c.egress == o.egress;
                if same_egress && c.internal & common == o.internal & common {
                    return Err(Npt6Error::InternalOverlap(i, j));
                }
            }
            out.push(c);
        }
        Ok(Npt6 { rules: out })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Translates an IPv6 packet leaving by `egress`: its source when an
    /// internal prefix for that egress holds it (and, for an ICMPv6
    /// error, the quoted packet's destination: that packet came in to
    /// this host).
    pub fn outbound(&self, pkt: &mut [u8], egress: u32) -> Verdict {
        if self.rules.is_empty() || pkt.len() < HEADER {
            return Verdict::Untouched;
        }
        let src = addr_at(pkt, SRC);
        match self.rules.iter().find(|r| src & r.mask == r.internal && r.egress.is_none_or(|e| e == egress)) {
            Some(r) => swap(pkt, SRC, DST, r, Direction::Out),
            None => Verdict::Untouched,
        }
    }

    /// Translates an IPv6 packet arriving from a tunnel: its destination
    /// when an external prefix holds it (and, for an ICMPv6 error, the
    /// quoted packet's source: that packet left from this host).
    pub fn inbound(&self, pkt: &mut [u8]) -> Verdict {
        if self.rules.is_empty() || pkt.len() < HEADER {
            return Verdict::Untouched;
        }
        let dst = addr_at(pkt, DST);
        match self.rules.iter().find(|r| dst & r.mask == r.external) {
            Some(r) => swap(pkt, DST, SRC, r, Direction::In),
            None => Verdict::Untouched,
        }
    }

    /// Whether `addr` is in an external prefix (the gateway answers for it
    /// on behalf of an internal host).
    pub fn is_external(&self, addr: Ipv6Addr) -> bool {
        let a = u128::from(addr);
        self.rules.iter().any(|r| a & r.mask == r.external)
    }
}

#[derive(Clone, Copy)]
enum Direction {
    /// Internal to external.
    Out,
    /// External to internal.
    In,
}

/// Translates the address at `at` of `pkt` (in `r`'s prefix on the side
/// `dir` leaves) and, in an ICMPv6 error, the quoted packet's address at
/// `quoted` when that prefix holds it.
fn swap(pkt: &mut [u8], at: usize, quoted: usize, r: &Compiled, dir: Direction) -> Verdict {
    let (from, to, adjust) = match dir {
        Direction::Out => (r.internal, r.external, r.adjust_out),
        Direction::In => (r.external, r.internal, !r.adjust_out),
    };
    let Some(new) = translate(addr_at(pkt, at), to, r, adjust) else {
        return Verdict::Drop(NatDrop::NptUnmappable);
    };
    set_addr(pkt, at, new);
    if let Some(q) = icmp_error_quote(pkt) {
        let a = addr_at(pkt, q + quoted);
        if a & r.mask == from {
            if let Some(new) = translate(a, to, r, adjust) {
                set_addr(pkt, q + quoted, new);
            }
        }
    }
    Verdict::Translated
}

fn addr_at(pkt: &[u8], at: usize) -> u128 {
    u128::from_be_bytes(pkt[at..at + 16].try_into().expect("16 bytes"))
}

fn set_addr(pkt: &mut [u8], at: usize, a: u128) {
    pkt[at..at + 16].copy_from_slice(&a.to_be_bytes());
}

/// `a` with its prefix replaced by `to` and the word below the prefix
/// adjusted by `adjust`; `None` when that word cannot be (0xffff).
fn translate(a: u128, to: u128, r: &Compiled, adjust: u16) -> Option<u128> {
    let word = |i: u32| (a >> (112 - 16 * i)) as u16;
    let i = if r.len <= 48 { 3 } else { (4..8).find(|&i| word(i) != 0xffff)? };
    let w = word(i);
    if w == 0xffff {
        return None;
    }
    let mut n = add(w, adjust);
    if n == 0xffff {
        n = 0;
    }
    let shift = 112 - 16 * i;
    let swapped = (a & !r.mask) | to;
    Some((swapped & !(0xffffu128 << shift)) | (u128::from(n) << shift))
}

/// Where the quoted IPv6 header of an ICMPv6 error starts in `pkt` (after
/// the outer header, any hop-by-hop, routing or destination options
/// headers, and the 8-byte ICMPv6 header), when the whole quoted header
/// is there.
fn icmp_error_quote(pkt: &[u8]) -> Option<usize> {
    let mut next = pkt[6];
    let mut at = HEADER;
    // A few extension headers at most (each is 8 bytes or more).
    for _ in 0..8 {
        match next {
            ICMPV6 => {
                let ty = *pkt.get(at)?;
                let quote = at + 8;
                return ((1..=4).contains(&ty) && pkt.len() >= quote + HEADER && pkt[quote] >> 4 == 6).then_some(quote);
            }
            // Hop-by-hop, routing, destination options.
            0 | 43 | 60 => {
                next = *pkt.get(at)?;
                at += (usize::from(*pkt.get(at + 1)?) + 1) * 8;
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(int: &str, ext: &str, len: u8, egress: Option<u32>) -> Npt6Rule {
        Npt6Rule {
            internal: Prefix::new(int.parse().unwrap(), len),
            external: Prefix::new(ext.parse().unwrap(), len),
            egress,
        }
    }

    /// A UDP packet `src` -> `dst` with a correct checksum.
    fn udp(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let payload = b"braid npt";
        let len = 8 + payload.len();
        let mut p = vec![0u8; HEADER + len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = 17;
        p[7] = 64;
        p[SRC..SRC + 16].copy_from_slice(&src.octets());
        p[DST..DST + 16].copy_from_slice(&dst.octets());
        p[40..42].copy_from_slice(&4000u16.to_be_bytes());
        p[42..44].copy_from_slice(&53u16.to_be_bytes());
        p[44..46].copy_from_slice(&(len as u16).to_be_bytes());
        p[48..].copy_from_slice(payload);
        let c = !l4_sum(&p);
        p[46..48].copy_from_slice(&c.to_be_bytes());
        assert!(l4_verifies(&p));
        p
    }

    /// Pseudo-header plus upper layer (no extension headers).
    fn l4_sum(p: &[u8]) -> u16 {
        use braid_tunnel::wire::checksum::{add as cadd, pseudo_header_v6, sum as csum};
        let src = Ipv6Addr::from(addr_at(p, SRC));
        let dst = Ipv6Addr::from(addr_at(p, DST));
        cadd(pseudo_header_v6(src, dst, p[6], (p.len() - HEADER) as u32), csum(&p[HEADER..]))
    }

    fn l4_verifies(p: &[u8]) -> bool {
        l4_sum(p) == 0xffff
    }

    fn ip(p: &[u8], at: usize) -> Ipv6Addr {
        Ipv6Addr::from(addr_at(p, at))
    }

    #[test]
    fn rfc6296_example_mapping() {
        // RFC 6296 section 3.1's example: fd01:0203:0405::/48 <->
        // 2001:db8:0001::/48; internal fd01:203:405:1::1234 maps to
        // 2001:db8:1:d550::1234.
        let n = Npt6::new(&[rule("fd01:203:405::", "2001:db8:1::", 48, None)]).unwrap();
        let mut p = udp("fd01:203:405:1::1234".parse().unwrap(), "2001:db8:ffff::1".parse().unwrap());
        assert_eq!(n.outbound(&mut p, 0), Verdict::Translated);
        assert_eq!(ip(&p, SRC), "2001:db8:1:d550::1234".parse::<Ipv6Addr>().unwrap());
        assert!(l4_verifies(&p), "checksum-neutral");
        assert_eq!(ip(&p, DST), "2001:db8:ffff::1".parse::<Ipv6Addr>().unwrap(), "destination untouched");
    }

    #[test]
    fn round_trips_keep_every_checksum_right() {
        let cases = [
            rule("fd00:1::", "2001:db8:1::", 48, None),
            rule("fd12:3456:7800::", "2001:db8:aa00::", 40, None),
            rule("fdab:cdef:1234:5600::", "2001:db8:9:8800::", 56, None),
            rule("fd00:0:0:1::", "2001:db8:0:2::", 64, None),
            rule("fc00::", "2000::", 7, None),
        ];
        let mut x = 0x1234_5678_9abc_def0_u64;
        for r in cases {
            let n = Npt6::new(&[r]).unwrap();
            let (IpAddr::V6(int), IpAddr::V6(ext)) = (r.internal.addr, r.external.addr) else { unreachable!() };
            let m = mask(r.internal.len);
            for k in 0..2000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let host = (u128::from(x) << 64 | u128::from(x.rotate_left(17))) & !m;
                // Now and then words of ones below the prefix: unmappable
                // at /48 or shorter, the next word adjusted beyond.
                let host = if k % 7 == 0 { (host | 0xffff << 64 | 0xffff << 48) & !m } else { host };
                let inside = Ipv6Addr::from((u128::from(int) & m) | host);
                let remote: Ipv6Addr = "2001:db8:ffff::99".parse().unwrap();
                let mut p = udp(inside, remote);
                match n.outbound(&mut p, 3) {
                    Verdict::Translated => {}
                    Verdict::Drop(NatDrop::NptUnmappable) => continue,
                    v => panic!("{v:?} {r:?} {inside}"),
                }
                let out = ip(&p, SRC);
                assert_eq!(u128::from(out) & m, u128::from(ext) & m, "{r:?} {inside}");
                assert!(l4_verifies(&p), "{r:?} {inside} -> {out}");
                // The reply comes back to the external address.
                let mut reply = udp(remote, out);
                assert_eq!(n.inbound(&mut reply), Verdict::Translated);
                assert_eq!(ip(&reply, DST), inside, "{r:?}");
                assert!(l4_verifies(&reply));
            }
        }
    }

    #[test]
    fn unmappable_words_and_other_traffic() {
        let n = Npt6::new(&[rule("fd00:1::", "2001:db8:1::", 48, Some(2))]).unwrap();
        // Subnet 0xffff: no mapping.
        let mut p = udp("fd00:1:0:ffff::1".parse().unwrap(), "2001:db8:ffff::1".parse().unwrap());
        assert_eq!(n.outbound(&mut p, 2), Verdict::Drop(NatDrop::NptUnmappable));
        // Another egress, another prefix, an IPv4 packet, a runt: untouched.
        let mut p = udp("fd00:1:0:1::1".parse().unwrap(), "2001:db8:ffff::1".parse().unwrap());
        let before = p.clone();
        assert_eq!(n.outbound(&mut p, 1), Verdict::Untouched);
        let mut q = udp("fd00:2::1".parse().unwrap(), "2001:db8:ffff::1".parse().unwrap());
        assert_eq!(n.outbound(&mut q, 2), Verdict::Untouched);
        assert_eq!(p, before);
        let mut runt = vec![0x60; 39];
        assert_eq!(n.outbound(&mut runt, 2), Verdict::Untouched);
        assert_eq!(n.inbound(&mut runt), Verdict::Untouched);
        // Inbound to anything but the external prefix: untouched.
        let mut r = udp("2001:db8:ffff::1".parse().unwrap(), "fd00:1::5".parse().unwrap());
        assert_eq!(n.inbound(&mut r), Verdict::Untouched);
    }

    /// An ICMPv6 error of `ty` from `src` to `dst` quoting `quoted`.
    fn icmp_error(src: Ipv6Addr, dst: Ipv6Addr, quoted: &[u8]) -> Vec<u8> {
        let len = 8 + quoted.len();
        let mut p = vec![0u8; HEADER + len];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = ICMPV6;
        p[7] = 64;
        p[SRC..SRC + 16].copy_from_slice(&src.octets());
        p[DST..DST + 16].copy_from_slice(&dst.octets());
        p[40] = 1; // destination unreachable
        p[41] = 4; // port unreachable
        p[48..].copy_from_slice(quoted);
        let c = !l4_sum(&p);
        p[42..44].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn icmpv6_errors_translate_the_quoted_packet() {
        let n = Npt6::new(&[rule("fd00:1::", "2001:db8:1::", 48, None)]).unwrap();
        let host: Ipv6Addr = "fd00:1:0:7::42".parse().unwrap();
        let remote: Ipv6Addr = "2001:db8:ffff::1".parse().unwrap();
        let mut out = udp(host, remote);
        assert_eq!(n.outbound(&mut out, 0), Verdict::Translated);
        let external = ip(&out, SRC);
        // The remote's error about it comes back quoting the external source.
        let mut err = icmp_error(remote, external, &out);
        assert!(l4_verifies(&err));
        assert_eq!(n.inbound(&mut err), Verdict::Translated);
        assert_eq!(ip(&err, DST), host);
        assert_eq!(ip(&err, 48 + SRC), host, "the quoted source is the host's own address again");
        assert!(l4_verifies(&err), "ICMPv6 checksum still right");
        // The host's error about a packet it got goes out quoting the
        // external destination.
        let mut got = udp(remote, external);
        assert_eq!(n.inbound(&mut got), Verdict::Translated);
        let mut err = icmp_error(host, remote, &got);
        assert_eq!(n.outbound(&mut err, 0), Verdict::Translated);
        assert_eq!(ip(&err, SRC), external);
        assert_eq!(ip(&err, 48 + DST), external);
        assert!(l4_verifies(&err));
        // A truncated quote: the outer addresses only.
        let mut err = icmp_error(remote, external, &out[..30]);
        assert_eq!(n.inbound(&mut err), Verdict::Translated);
        assert_eq!(ip(&err, DST), host);
    }

    #[test]
    fn rules_that_cannot_work_are_refused() {
        let r = |int: &str, ext: &str, len: u8, e: Option<u32>| rule(int, ext, len, e);
        assert_eq!(Npt6::new(&[r("fd00:1::", "2001:db8:1::", 65, None)]).unwrap_err(), Npt6Error::Length(0));
        let mut bad = r("fd00:1::", "2001:db8:1::", 48, None);
        bad.external.len = 56;
        assert_eq!(Npt6::new(&[bad]).unwrap_err(), Npt6Error::Length(0));
        let v4 = Npt6Rule { internal: Prefix::new("10.0.0.0".parse().unwrap(), 8), ..r("fd00::", "2001:db8::", 8, None) };
        assert_eq!(Npt6::new(&[v4]).unwrap_err(), Npt6Error::NotIpv6(0));
        let ext = [r("fd00:1::", "2001:db8:1::", 48, None), r("fd00:2::", "2001:db8::", 32, None)];
        assert_eq!(Npt6::new(&ext).unwrap_err(), Npt6Error::ExternalOverlap(1, 0));
        let int = [r("fd00:1::", "2001:db8:1::", 48, Some(1)), r("fd00:1::", "2001:db8:2::", 48, None)];
        assert_eq!(Npt6::new(&int).unwrap_err(), Npt6Error::InternalOverlap(1, 0));
        // One internal prefix, another external one per egress (multihoming).
        let multi = [r("fd00:1::", "2001:db8:1::", 48, Some(1)), r("fd00:1::", "2001:db8:2::", 48, Some(2))];
        let n = Npt6::new(&multi).unwrap();
        let mut p = udp("fd00:1::5".parse().unwrap(), "2001:db8:ffff::1".parse().unwrap());
        assert_eq!(n.outbound(&mut p, 2), Verdict::Translated);
        assert_eq!(u128::from(ip(&p, SRC)) >> 80, u128::from("2001:db8:2::".parse::<Ipv6Addr>().unwrap()) >> 80);
    }
}
