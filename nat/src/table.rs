//! The session tables: open addressing over 32-byte session records,
//! linear probing, load kept at or below one half, backward-shift deletion
//! (no tombstones, so probe lengths do not grow with churn).
//!
//! A shard keeps two, each with its own copy of every session: one keyed
//! by the internal tuple (outbound lookups), one by the external tuple
//! (inbound). A lookup hashes its key and reads the record where the hash
//! lands, which holds the key to compare, the translation and the timer:
//! one cache line, whose address is known from the packet alone, so a
//! burst's lookups can all be prefetched at once. (An index of slot numbers
//! into one array of sessions costs two dependent misses per lookup at
//! 10^6 sessions: the bucket, then the session it names.)
//!
//! The two copies of a session may disagree on one thing only: `expires`.
//! A packet refreshes the copy its lookup found; the session lives until
//! the later of the two. A TCP state change is written to both copies, with
//! the new timeout, and to the sweep hint (`NatShard::set_state`).

use braid_tunnel::Nanos;

/// TCP connection state as the NAT tracks it (RFC 5382 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpState {
    /// Only the opener's side seen (a SYN with no answer yet).
    Opening,
    /// The other side answered (a SYN-ACK); the opener has not spoken
    /// since. Still transitory: a spoofed SYN that a server behind a port
    /// forward answers never gets further, so it holds its session for
    /// `tcp_opening`, not the two hours of an established connection.
    Replied,
    /// The opener acknowledged the answer (the handshake's last ACK; a
    /// retransmitted SYN does not count): both sides live.
    Established,
    /// A FIN or RST seen after it was established: partially or fully
    /// closed.
    Closing,
    /// A FIN or RST before it was established (or the packet a session
    /// was picked up on): transitory like `Opening`, not held the
    /// `tcp_transitory` minutes of a closing connection.
    Refused,
}

/// One session, as each table stores it: half a cache line, aligned, so a
/// record never straddles two lines.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub(crate) struct Session {
    /// When this copy's idle timer runs out (see the module's doc).
    pub expires: Nanos,
    pub int_addr: u32,
    pub ext_addr: u32,
    pub rem_addr: u32,
    /// Mapping slot, or `NONE` for a port forward (opened inbound).
    pub mapping: u32,
    pub int_port: u16,
    pub ext_port: u16,
    /// Remote port, 0 for ICMP queries.
    pub rem_port: u16,
    /// 0 for an empty record (sessions are TCP, UDP or ICMP).
    pub proto: u8,
    pub state: TcpState,
}

impl Session {
    pub const EMPTY: Session = Session {
        expires: 0,
        int_addr: 0,
        ext_addr: 0,
        rem_addr: 0,
        mapping: u32::MAX,
        int_port: 0,
        ext_port: 0,
        rem_port: 0,
        proto: 0,
        state: TcpState::Opening,
    };

    /// Opened by an outbound packet (SNAT: it has a mapping) rather than
    /// inbound (a port forward).
    #[inline(always)]
    pub fn opened_out(&self) -> bool {
        self.mapping != u32::MAX
    }
}

/// Hash of a (protocol, endpoint a, endpoint b) tuple, seeded.
#[inline(always)]
pub(crate) fn tuple_hash(seed: u64, proto: u8, a: u32, ap: u16, b: u32, bp: u16) -> u64 {
    let w0 = ((a as u64) << 32) | b as u64;
    let w1 = ((ap as u64) << 32) | ((bp as u64) << 16) | proto as u64;
    let mut h = (seed ^ w0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 29) ^ w1).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 32;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 29)
}

/// A lookup key: (protocol, our side's address and port, remote address
/// and port). "Our side" is the internal endpoint in the outbound table,
/// the external one in the inbound table.
pub(crate) type Key = (u8, u32, u16, u32, u16);

/// A deadline in the expiry sweep's units (2^20 ns, about 1 ms; wraps
/// after 52 days, compared with wrapping arithmetic), never 0 (a free slot).
#[inline]
pub(crate) fn hint(t: Nanos) -> u32 {
    ((t >> 20) as u32).max(1)
}

/// Is a slot with sweep hint `h` worth a look at `now_h`: a session that
/// was due by its last known deadline (0 is a free slot). No branch, so a
/// run of them vectorizes.
#[inline(always)]
pub(crate) fn due(h: u32, now_h: u32) -> bool {
    (h != 0) & ((now_h.wrapping_sub(h) as i32) >= 0)
}

/// One session table; never grows after `with_bound`.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    recs: Vec<Session>,
    /// Per slot, in the table the expiry sweep walks (else empty), what
    /// the sweep reads instead of the record: the record's deadline when
    /// stored, last looked at or last given a new TCP state, in [`hint`]
    /// units, or 0 for a free slot. Never later than the session's
    /// deadline: a refresh (which only moves the deadline later) does not
    /// write it, so it may be early, and the sweep then reads the record
    /// and corrects it. Four bytes a slot, 16 to a cache
    /// line: a walk over 32-byte records streams 8 times the memory, and
    /// cost a 10^6-session gateway ~30% of its time at 64 B.
    hints: Vec<u32>,
    mask: usize,
    seed: u64,
    /// Keyed by the external endpoint (else the internal one).
    inbound: bool,
}

impl Table {
    /// Room for `bound` sessions at load one half or less; with sweep
    /// hints when `swept`.
    pub fn with_bound(bound: usize, seed: u64, inbound: bool, swept: bool) -> Table {
        let n = (bound.max(1) * 2).next_power_of_two();
        Table { recs: vec![Session::EMPTY; n], hints: if swept { vec![0; n] } else { Vec::new() }, mask: n - 1, seed, inbound }
    }

    /// A record's key in this table.
    #[inline(always)]
    pub fn key_of(&self, x: &Session) -> Key {
        if self.inbound {
            (x.proto, x.ext_addr, x.ext_port, x.rem_addr, x.rem_port)
        } else {
            (x.proto, x.int_addr, x.int_port, x.rem_addr, x.rem_port)
        }
    }

    /// The first slot of `k`'s probe: from the hash's upper half (its low
    /// bits mix less).
    #[inline(always)]
    fn home(&self, k: Key) -> usize {
        (tuple_hash(self.seed, k.0, k.1, k.2, k.3, k.4) >> 32) as usize & self.mask
    }

    /// Where the session with key `k` is.
    #[inline(always)]
    pub fn find(&self, k: Key) -> Option<usize> {
        let mut i = self.home(k);
        loop {
            let x = &self.recs[i];
            if x.proto == 0 {
                return None;
            }
            if self.key_of(x) == k {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Stores `x`, whose key is not in the table. The caller keeps the
    /// session count within the bound.
    pub fn insert(&mut self, x: Session) -> usize {
        debug_assert!(x.proto != 0 && self.find(self.key_of(&x)).is_none());
        let mut i = self.home(self.key_of(&x));
        while self.recs[i].proto != 0 {
            i = (i + 1) & self.mask;
        }
        self.recs[i] = x;
        if let Some(h) = self.hints.get_mut(i) {
            *h = hint(x.expires);
        }
        i
    }

    /// Removes the record at `i`. Later records of its cluster may move
    /// back, into `i` or after it, never before it.
    pub fn remove_at(&mut self, i: usize) {
        debug_assert!(self.recs[i].proto != 0);
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        loop {
            let x = self.recs[j];
            if x.proto == 0 {
                break;
            }
            let home = self.home(self.key_of(&x));
            // Pull `x` into the hole unless its home lies after the hole
            // (cyclically, up to `x` itself).
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.recs[hole] = x;
                if !self.hints.is_empty() {
                    self.hints[hole] = self.hints[j];
                }
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.recs[hole] = Session::EMPTY;
        if let Some(h) = self.hints.get_mut(hole) {
            *h = 0;
        }
    }

    /// The sweep hints (empty unless built `swept`).
    #[inline(always)]
    pub fn hints(&self) -> &[u32] {
        &self.hints
    }

    /// Sets slot `i`'s sweep hint to the record's deadline `t`.
    #[inline(always)]
    pub fn set_hint(&mut self, i: usize, t: Nanos) {
        self.hints[i] = hint(t);
    }

    #[inline(always)]
    pub fn get(&self, i: usize) -> &Session {
        &self.recs[i]
    }

    #[inline(always)]
    pub fn get_mut(&mut self, i: usize) -> &mut Session {
        &mut self.recs[i]
    }

    /// Record positions (live or empty): what the expiry sweep walks.
    pub fn slots(&self) -> usize {
        self.recs.len()
    }

    /// Prefetches the line where `k`'s probe starts, without waiting.
    #[inline(always)]
    pub fn warm(&self, k: Key) {
        let i = self.home(k);
        crate::hint::prefetch(&self.recs[i]);
        crate::hint::prefetch(&self.recs[(i + 1) & self.mask]);
    }

    /// Bytes held.
    pub fn memory(&self) -> usize {
        self.recs.len() * core::mem::size_of::<Session>() + self.hints.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::splitmix;
    use std::collections::HashMap;

    fn session(n: u32, proto: u8) -> Session {
        Session {
            expires: (n as u64 + 1) << 20,
            int_addr: 0x0a00_0000 | (n % 7),
            int_port: (n / 7) as u16,
            ext_addr: 0xc633_6400 | (n % 5),
            ext_port: (n / 5) as u16,
            rem_addr: 0x0808_0808,
            rem_port: 53,
            mapping: n,
            proto,
            state: TcpState::Opening,
        }
    }

    #[test]
    fn a_record_is_half_a_line() {
        assert_eq!(core::mem::size_of::<Session>(), 32);
        assert_eq!(core::mem::align_of::<Session>(), 32);
    }

    #[test]
    fn churn_matches_a_hashmap() {
        // Both keyings, a table filled to its bound (load one half) through
        // inserts and removals at random, against a reference map; a seed
        // of 0 with few distinct keys' homes clusters heavily too.
        for inbound in [false, true] {
            for bound in [3usize, 500] {
                let mut t = Table::with_bound(bound, 0x1234 ^ bound as u64, inbound, true);
                let mut reference: HashMap<u32, Session> = HashMap::new();
                let mut s = 7u64;
                for step in 0..20_000u32 {
                    let n = (splitmix(&mut s) % (2 * bound as u64)) as u32;
                    let proto = [6, 17, 1][(n % 3) as usize];
                    let x = session(n, proto);
                    if reference.remove(&n).is_some() {
                        let i = t.find(t.key_of(&x)).unwrap_or_else(|| panic!("step {step}: {n} lost"));
                        assert_eq!(t.get(i).mapping, n);
                        t.remove_at(i);
                    } else if reference.len() < bound {
                        t.insert(x);
                        reference.insert(n, x);
                    }
                    if step % 97 == 0 {
                        for (&n, x) in &reference {
                            let i = t.find(t.key_of(x)).unwrap_or_else(|| panic!("step {step}: {n} lost"));
                            assert_eq!(t.get(i).mapping, n);
                        }
                        let live = (0..t.slots()).filter(|&i| t.get(i).proto != 0).count();
                        assert_eq!(live, reference.len());
                        // Each hint moved with its record.
                        for i in 0..t.slots() {
                            let x = t.get(i);
                            let want = if x.proto == 0 { 0 } else { hint(x.expires) };
                            assert_eq!(t.hints()[i], want, "step {step}, slot {i}");
                        }
                    }
                    assert!(t.find(t.key_of(&session(n, 47))).is_none());
                }
            }
        }
    }
}
