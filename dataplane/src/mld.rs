//! Multicast Listener Discovery for a port's solicited-node groups (RFC
//! 3810, MLDv2; RFC 2710, MLDv1 towards an MLDv1 querier): a switch that
//! snoops MLD forwards a group's frames only to the ports that reported
//! it, so a port that never reports its solicited-node groups stops
//! getting neighbor solicitations for its addresses once the switch has
//! a querier (RFC 4861 section 7.2.1: a node joins them; RFC 3810
//! section 6: and reports them).
//!
//! A port without a kernel tap reports here: its solicited-node groups
//! (of its link-local and its own address), twice when the worker starts
//! (state-change reports, section 6.1), and in answer to every query for
//! them after a random delay within the query's maximum (section 6.2).
//! A port with a kernel tap leaves this to the kernel, whose interface
//! has the same addresses.
//!
//! Pure logic: frames are written into a caller's buffer; the worker
//! sends them from its timers.

use std::net::Ipv6Addr;

use braid_tunnel::wire::checksum;
use braid_tunnel::Nanos;

/// Ethernet + IPv6 + hop-by-hop header.
const ETH: usize = 14;
const IP6: usize = 40;
const HBH: usize = 8;
/// MLDv2 report header; one address record with no source.
const V2_HEADER: usize = 8;
const V2_RECORD: usize = 20;
/// An MLDv1 report (RFC 2710 section 3).
const V1_LEN: usize = 24;

/// Groups a port reports: its link-local and its own address's
/// solicited-node groups.
pub const MAX_GROUPS: usize = 2;
/// The longest frame [`Mld::poll`] writes.
pub const FRAME_MAX: usize = ETH + IP6 + HBH + V2_HEADER + MAX_GROUPS * V2_RECORD;

/// ICMPv6 types (RFC 3810 section 5, RFC 2710 section 3).
const QUERY: u8 = 130;
const V1_REPORT: u8 = 131;
const V2_REPORT: u8 = 143;
/// Address record types (RFC 3810 section 5.2.12).
const MODE_IS_EXCLUDE: u8 = 2;
const CHANGE_TO_EXCLUDE: u8 = 4;

/// State-change reports sent when the worker starts: the Robustness
/// Variable's default (RFC 3810 section 9.1), ...
const UNSOLICITED: u8 = 2;
/// ... at most this far apart (the Unsolicited Report Interval, section
/// 9.11).
const UNSOLICITED_INTERVAL: Nanos = 1_000_000_000;
/// How long an MLDv1 querier keeps this port reporting in MLDv1 after it
/// was heard (Older Version Querier Present Timeout, section 9.12, with
/// the default Robustness Variable and Query Interval).
const V1_PRESENT: Nanos = 260_000_000_000;
/// The longest delay honoured before answering a query (a query may ask
/// for up to ~140 minutes; the answer is sent within this anyway).
const MAX_DELAY: Nanos = 10_000_000_000;

/// The solicited-node multicast group of `a` (RFC 4291 section 2.7.1).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]))
}

/// What became of a frame given to [`Mld::on_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A query this port answers (a report is scheduled).
    Query,
    /// A query for other groups, another listener's report, or not a
    /// valid MLD message: nothing to do.
    Other,
}

/// One port's MLD listener state.
#[derive(Debug, Clone)]
pub struct Mld {
    mac: [u8; 6],
    /// The port's link-local address: every report's source (section 5.2.13).
    src: Ipv6Addr,
    groups: Vec<Ipv6Addr>,
    /// State-change reports still to send.
    unsolicited: u8,
    /// When the next report is due, if one is.
    due: Option<Nanos>,
    /// An MLDv1 querier was heard: reports are MLDv1 until then.
    v1_until: Nanos,
    rng: u64,
}

impl Mld {
    /// The listener of a port with `mac`, link-local address `link_local`
    /// and `addrs` (the link-local's group is always reported).
    pub fn new(mac: [u8; 6], link_local: Ipv6Addr, addrs: &[Ipv6Addr], seed: u64) -> Mld {
        let mut groups: Vec<Ipv6Addr> = Vec::with_capacity(MAX_GROUPS);
        for a in std::iter::once(&link_local).chain(addrs).take(MAX_GROUPS) {
            let g = solicited_node(*a);
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        Mld { mac, src: link_local, groups, unsolicited: 0, due: None, v1_until: 0, rng: seed | 1 }
    }

    /// The groups reported.
    pub fn groups(&self) -> &[Ipv6Addr] {
        &self.groups
    }

    /// Starts listening at `now`: the state-change reports follow.
    pub fn start(&mut self, now: Nanos) {
        self.unsolicited = UNSOLICITED;
        self.due = Some(now);
    }

    /// A random delay in `0..=max` (xorshift: spreading the answers of
    /// several listeners, not secrecy).
    fn delay(&mut self, max: Nanos) -> Nanos {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % (max + 1)
    }

    /// An IPv6 packet (`ip`, from its header on) received on the port: a
    /// query for all groups or for one of ours schedules an answer within
    /// its maximum response delay (an earlier one already due stands).
    /// Only a query from a link-local address with hop limit 1, a router
    /// alert hop-by-hop header and a valid checksum counts (sections 5.1.14
    /// and 6).
    pub fn on_frame(&mut self, ip: &[u8], now: Nanos) -> Heard {
        let Some((version, max_delay, group)) = parse_query(ip) else { return Heard::Other };
        if !group.is_unspecified() && !self.groups.contains(&group) {
            return Heard::Other;
        }
        if version == 1 {
            self.v1_until = now.saturating_add(V1_PRESENT);
        }
        let at = now.saturating_add(self.delay(max_delay.min(MAX_DELAY)));
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
        Heard::Query
    }

    /// Writes the reports due at `now`, one frame at a time, through
    /// `send` (an MLDv2 report of every group; towards an MLDv1 querier,
    /// an MLDv1 report per group). Returns the frames written.
    pub fn poll(&mut self, now: Nanos, mut send: impl FnMut(&[u8])) -> usize {
        if self.due.is_none_or(|d| now < d) {
            return 0;
        }
        let change = self.unsolicited > 0;
        self.unsolicited = self.unsolicited.saturating_sub(1);
        self.due = (self.unsolicited > 0).then(|| now.saturating_add(1 + self.delay(UNSOLICITED_INTERVAL - 1)));
        let mut buf = [0u8; FRAME_MAX];
        if now < self.v1_until {
            for g in &self.groups {
                let n = write_v1(&mut buf, self.mac, self.src, *g);
                send(&buf[..n]);
            }
            return self.groups.len();
        }
        let n = write_v2(&mut buf, self.mac, self.src, &self.groups, if change { CHANGE_TO_EXCLUDE } else { MODE_IS_EXCLUDE });
        send(&buf[..n]);
        1
    }
}

/// An MLD query in `ip`: its version (1 or 2), maximum response delay and
/// multicast address (unspecified: a general query). `None` for anything
/// else, or a query RFC 3810 says to ignore.
pub fn parse_query(ip: &[u8]) -> Option<(u8, Nanos, Ipv6Addr)> {
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(ip.get(8..24)?).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(ip.get(24..40)?).ok()?);
    let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if ip[0] >> 4 != 6 || ip[6] != 0 || ip[7] != 1 || !src.is_unicast_link_local() || ip.len() < IP6 + payload {
        return None;
    }
    // The hop-by-hop header, with a router alert for MLD (RFC 2711).
    let hbh = ip.get(IP6..IP6 + payload)?;
    let hbh_len = (usize::from(*hbh.get(1)?) + 1) * 8;
    if hbh[0] != 58 || !router_alert(hbh.get(2..hbh_len)?) {
        return None;
    }
    let icmp = &hbh[hbh_len..];
    let sum = checksum::combine(&[checksum::pseudo_header_v6(src, dst, 58, icmp.len() as u32), checksum::sum(icmp)]);
    if icmp.len() < V1_LEN || icmp[0] != QUERY || icmp[1] != 0 || sum != 0xffff {
        return None;
    }
    let group = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).ok()?);
    let code = u16::from_be_bytes([icmp[4], icmp[5]]);
    match icmp.len() {
        V1_LEN => Some((1, Nanos::from(code) * 1_000_000, group)),
        n if n >= 28 => {
            // Maximum Response Code (section 5.1.3): milliseconds, or
            // from 32768 on a mantissa and an exponent.
            let ms = match code {
                0..0x8000 => u64::from(code),
                _ => (u64::from(code & 0x0fff) | 0x1000) << ((code >> 12 & 0x7) + 3),
            };
            Some((2, ms * 1_000_000, group))
        }
        _ => None,
    }
}

/// The hop-by-hop options hold a router alert for MLD (value 0).
fn router_alert(mut opts: &[u8]) -> bool {
    while let Some(&kind) = opts.first() {
        if kind == 0 {
            opts = &opts[1..];
            continue;
        }
        let Some(&len) = opts.get(1) else { return false };
        let Some(data) = opts.get(2..2 + usize::from(len)) else { return false };
        if kind == 5 && data == [0, 0] {
            return true;
        }
        opts = &opts[2 + usize::from(len)..];
    }
    false
}

/// Ethernet, IPv6 (hop limit 1, from `src` to `dst`) and the hop-by-hop
/// header with a router alert before an ICMPv6 message of `body` bytes,
/// whose checksum is computed once it is written (`finish`).
fn write_headers(buf: &mut [u8], mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr, body: usize) {
    let d = dst.octets();
    buf[..6].copy_from_slice(&[0x33, 0x33, d[12], d[13], d[14], d[15]]);
    buf[6..12].copy_from_slice(&mac);
    buf[12..14].copy_from_slice(&[0x86, 0xdd]);
    let ip = &mut buf[ETH..ETH + IP6];
    ip[..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&((HBH + body) as u16).to_be_bytes());
    ip[6] = 0; // hop-by-hop options
    ip[7] = 1;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&d);
    // Next header ICMPv6, length 0 (8 bytes); router alert (MLD); PadN.
    buf[ETH + IP6..ETH + IP6 + HBH].copy_from_slice(&[58, 0, 5, 2, 0, 0, 1, 0]);
}

/// The ICMPv6 checksum of the message at `buf[ETH + IP6 + HBH..len]`.
fn finish(buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, len: usize) {
    let icmp = &mut buf[ETH + IP6 + HBH..len];
    icmp[2..4].fill(0);
    let sum = checksum::combine(&[checksum::pseudo_header_v6(src, dst, 58, icmp.len() as u32), checksum::sum(icmp)]);
    icmp[2..4].copy_from_slice(&(!sum).to_be_bytes());
}

/// An MLDv2 report of `groups` (records of `kind`, no sources) to
/// ff02::16; returns its length.
fn write_v2(buf: &mut [u8], mac: [u8; 6], src: Ipv6Addr, groups: &[Ipv6Addr], kind: u8) -> usize {
    let all_routers = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);
    let body = V2_HEADER + groups.len() * V2_RECORD;
    write_headers(buf, mac, src, all_routers, body);
    let icmp = &mut buf[ETH + IP6 + HBH..ETH + IP6 + HBH + body];
    icmp.fill(0);
    icmp[0] = V2_REPORT;
    icmp[6..8].copy_from_slice(&(groups.len() as u16).to_be_bytes());
    for (r, g) in icmp[V2_HEADER..].chunks_exact_mut(V2_RECORD).zip(groups) {
        r[0] = kind;
        r[4..20].copy_from_slice(&g.octets());
    }
    let len = ETH + IP6 + HBH + body;
    finish(buf, src, all_routers, len);
    len
}

/// An MLDv1 report of `group`, sent to the group; returns its length.
fn write_v1(buf: &mut [u8], mac: [u8; 6], src: Ipv6Addr, group: Ipv6Addr) -> usize {
    write_headers(buf, mac, src, group, V1_LEN);
    let icmp = &mut buf[ETH + IP6 + HBH..ETH + IP6 + HBH + V1_LEN];
    icmp.fill(0);
    icmp[0] = V1_REPORT;
    icmp[8..24].copy_from_slice(&group.octets());
    let len = ETH + IP6 + HBH + V1_LEN;
    finish(buf, src, group, len);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MS: Nanos = 1_000_000;

    fn ll() -> Ipv6Addr {
        crate::config::link_local(MAC)
    }

    fn listener() -> Mld {
        Mld::new(MAC, ll(), &["2001:db8::1:2:3".parse().unwrap()], 7)
    }

    /// A query as a querier sends it: from `src` with hop limit 1 and a
    /// router alert; MLDv2 (28 bytes) or MLDv1 (24).
    fn query(src: Ipv6Addr, group: Ipv6Addr, code: u16, v1: bool) -> Vec<u8> {
        let len = if v1 { V1_LEN } else { 28 };
        let dst = if group.is_unspecified() { Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1) } else { group };
        let mut f = vec![0u8; ETH + IP6 + HBH + len];
        write_headers(&mut f, [2, 0, 0, 0, 0, 9], src, dst, len);
        let icmp = &mut f[ETH + IP6 + HBH..];
        icmp[0] = QUERY;
        icmp[4..6].copy_from_slice(&code.to_be_bytes());
        icmp[8..24].copy_from_slice(&group.octets());
        let n = f.len();
        finish(&mut f, src, dst, n);
        f[ETH..].to_vec()
    }

    fn router() -> Ipv6Addr {
        "fe80::1".parse().unwrap()
    }

    /// The frames `poll` writes at `now`.
    fn sent(m: &mut Mld, now: Nanos) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        m.poll(now, |f| v.push(f.to_vec()));
        v
    }

    /// A report as a switch parses it: valid checksum, hop limit 1, router
    /// alert, from the link-local address; its type and records.
    fn parse_report(f: &[u8]) -> (u8, Vec<(u8, Ipv6Addr)>) {
        let ip = &f[ETH..];
        assert_eq!((ip[6], ip[7]), (0, 1));
        assert_eq!(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()), ll());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
        assert_eq!(f[..2], [0x33, 0x33]);
        assert_eq!(f[2..6], dst.octets()[12..]);
        assert!(router_alert(&ip[IP6 + 2..IP6 + HBH]));
        let icmp = &ip[IP6 + HBH..];
        assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), HBH + icmp.len());
        let sum = checksum::combine(&[checksum::pseudo_header_v6(ll(), dst, 58, icmp.len() as u32), checksum::sum(icmp)]);
        assert_eq!(sum, 0xffff, "checksum");
        match icmp[0] {
            V2_REPORT => {
                assert_eq!(dst, "ff02::16".parse::<Ipv6Addr>().unwrap());
                let n = usize::from(u16::from_be_bytes([icmp[6], icmp[7]]));
                let recs = icmp[8..].chunks_exact(V2_RECORD).map(|r| (r[0], Ipv6Addr::from(<[u8; 16]>::try_from(&r[4..20]).unwrap()))).collect::<Vec<_>>();
                assert_eq!(recs.len(), n);
                (V2_REPORT, recs)
            }
            V1_REPORT => {
                let g = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).unwrap());
                assert_eq!(g, dst);
                (V1_REPORT, vec![(0, g)])
            }
            t => panic!("type {t}"),
        }
    }

    #[test]
    fn solicited_node_groups() {
        assert_eq!(solicited_node("2001:db8::1:2:3".parse().unwrap()), "ff02::1:ff02:3".parse::<Ipv6Addr>().unwrap());
        let m = listener();
        assert_eq!(m.groups(), [solicited_node(ll()), "ff02::1:ff02:3".parse().unwrap()]);
        // An address with the link-local's last 24 bits: one group.
        let same = Mld::new(MAC, ll(), &["2001:db8::ff:fe00:1".parse().unwrap()], 7);
        assert_eq!(same.groups(), [solicited_node(ll())]);
    }

    #[test]
    fn start_sends_two_state_change_reports() {
        let mut m = listener();
        assert!(sent(&mut m, 0).is_empty(), "nothing before start");
        m.start(5 * MS);
        let first = sent(&mut m, 5 * MS);
        assert_eq!(first.len(), 1);
        let (t, recs) = parse_report(&first[0]);
        assert_eq!(t, V2_REPORT);
        assert_eq!(recs, m.groups().iter().map(|g| (CHANGE_TO_EXCLUDE, *g)).collect::<Vec<_>>());
        let due = m.due.unwrap();
        assert!(due > 5 * MS && due <= 5 * MS + UNSOLICITED_INTERVAL, "{due}");
        assert!(sent(&mut m, due - 1).is_empty());
        assert_eq!(sent(&mut m, due).len(), 1);
        assert!(sent(&mut m, due + 100 * UNSOLICITED_INTERVAL).is_empty(), "two only");
    }

    #[test]
    fn queries_are_answered_within_their_delay() {
        let mut m = listener();
        let now = 1_000 * MS;
        // General query, 2 s: answered once, with the current state.
        assert_eq!(m.on_frame(&query(router(), Ipv6Addr::UNSPECIFIED, 2000, false), now), Heard::Query);
        let due = m.due.unwrap();
        assert!((now..=now + 2000 * MS).contains(&due), "{due}");
        let f = sent(&mut m, due);
        assert_eq!(f.len(), 1);
        let (t, recs) = parse_report(&f[0]);
        assert_eq!((t, recs.len()), (V2_REPORT, 2));
        assert!(recs.iter().all(|(k, _)| *k == MODE_IS_EXCLUDE));
        assert!(sent(&mut m, due + 10_000 * MS).is_empty(), "once");
        // A query for one of our groups; not for another's.
        assert_eq!(m.on_frame(&query(router(), m.groups()[1], 0, false), now), Heard::Query);
        assert_eq!(sent(&mut m, now).len(), 1, "a zero delay: at once");
        assert_eq!(m.on_frame(&query(router(), "ff02::1:ff99:9999".parse().unwrap(), 0, false), now), Heard::Other);
        assert!(m.due.is_none());
        // Maximum Response Code in floating point (RFC 3810 5.1.3): capped.
        let q = query(router(), Ipv6Addr::UNSPECIFIED, 0xffff, false);
        assert_eq!(parse_query(&q).unwrap().1, ((0xfff | 0x1000) << 10) * MS);
        m.on_frame(&q, now);
        assert!(m.due.unwrap() <= now + MAX_DELAY);
    }

    #[test]
    fn an_mldv1_querier_gets_mldv1_reports() {
        let mut m = listener();
        assert_eq!(m.on_frame(&query(router(), Ipv6Addr::UNSPECIFIED, 0, true), 0), Heard::Query);
        let f = sent(&mut m, 0);
        let got: Vec<_> = f.iter().map(|f| parse_report(f)).collect();
        assert_eq!(got, m.groups().iter().map(|g| (V1_REPORT, vec![(0, *g)])).collect::<Vec<_>>());
        // Until the MLDv1 querier is forgotten.
        m.start(V1_PRESENT - 1);
        assert_eq!(sent(&mut m, V1_PRESENT - 1).len(), 2);
        m.start(V1_PRESENT);
        assert_eq!(sent(&mut m, V1_PRESENT).len(), 1);
    }

    #[test]
    fn invalid_queries_are_ignored() {
        let mut m = listener();
        let good = query(router(), Ipv6Addr::UNSPECIFIED, 0, false);
        assert!(parse_query(&good).is_some());
        let mut bad = Vec::new();
        // Not from a link-local address.
        bad.push(query("2001:db8::9".parse().unwrap(), Ipv6Addr::UNSPECIFIED, 0, false));
        // Hop limit not 1.
        let mut q = good.clone();
        q[7] = 2;
        bad.push(q);
        // No router alert.
        let mut q = good.clone();
        q[IP6 + 2] = 1;
        bad.push(q);
        // Checksum.
        let mut q = good.clone();
        let n = q.len();
        q[n - 1] ^= 1;
        bad.push(q);
        // A report, not a query; cut short; garbage.
        let mut q = good.clone();
        q[IP6 + HBH] = V2_REPORT;
        bad.push(q);
        bad.push(good[..good.len() - 10].to_vec());
        bad.push(vec![0x60; 3]);
        bad.push(Vec::new());
        for (i, q) in bad.iter().enumerate() {
            assert_eq!(m.on_frame(q, 0), Heard::Other, "{i}");
        }
        assert!(m.due.is_none());
    }
}
