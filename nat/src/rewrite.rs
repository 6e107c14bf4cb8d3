//! Header parsing and in-place rewriting of IPv4 packets: addresses, ports
//! and ICMP query ids, with RFC 1624 incremental checksum updates of the
//! IPv4 header, the TCP/UDP pseudo-header sum and, for ICMP errors, every
//! word changed inside the quoted packet.

use braid_tunnel::wire::checksum::{apply_delta, delta_u16, delta_u32, update_u16, update_u32};
use braid_tunnel::wire::{icmpv4, ipv4, tcp, udp, IpProtocol};

pub(crate) const TCP: u8 = IpProtocol::TCP.0;
pub(crate) const UDP: u8 = IpProtocol::UDP.0;
pub(crate) const ICMP: u8 = IpProtocol::ICMP.0;

const IP_CHECKSUM: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;

#[inline(always)]
fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Which end of a packet a translation rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Source address and port: outbound SNAT, a port forward's reply.
    Src,
    /// Destination address and port: the reverse direction.
    Dst,
}

impl End {
    const fn addr_at(self) -> usize {
        match self {
            End::Src => IP_SRC,
            End::Dst => IP_DST,
        }
    }

    const fn port_at(self) -> usize {
        match self {
            End::Src => 0,
            End::Dst => 2,
        }
    }

    const fn other(self) -> End {
        match self {
            End::Src => End::Dst,
            End::Dst => End::Src,
        }
    }
}

/// What follows the IPv4 header, as far as the NAT cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4 {
    /// TCP with its control bits.
    Tcp(tcp::Flags),
    /// UDP.
    Udp,
    /// An ICMP query (echo, timestamp...): request or reply.
    IcmpQuery { request: bool },
    /// An ICMP error, quoting a packet.
    IcmpError,
    /// Another ICMP type (router advertisement...).
    IcmpOther,
    /// A fragment or another protocol: no ports to read.
    Other,
}

/// Why a packet could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// An IPv6 packet: not translated.
    Ipv6,
    /// Anything else that is not a well-formed IPv4 packet with the L4
    /// header its protocol needs.
    Malformed,
}

/// The fields of an IPv4 packet the NAT reads, checked once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Headers {
    pub ihl: usize,
    pub total: usize,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    pub frag: bool,
    /// Source port, ICMP query id, or 0.
    pub sport: u16,
    /// Destination port, ICMP query id, or 0.
    pub dport: u16,
    pub l4: L4,
}

impl Headers {
    /// Checks the IPv4 header (lengths, not the checksum: the incremental
    /// updates keep a bad one bad) and the L4 header a translation touches.
    #[inline(always)]
    pub fn parse(pkt: &[u8]) -> Result<Headers, ParseError> {
        match pkt.first().map(|b| b >> 4) {
            Some(4) => {}
            Some(6) => return Err(ParseError::Ipv6),
            _ => return Err(ParseError::Malformed),
        }
        let ip = ipv4::Packet::new_checked(pkt).map_err(|_| ParseError::Malformed)?;
        let (ihl, total) = (ip.header_len(), ip.total_len() as usize);
        let mut h = Headers {
            ihl,
            total,
            proto: ip.protocol().0,
            src: u32::from(ip.src_addr()),
            dst: u32::from(ip.dst_addr()),
            frag: ip.is_fragment(),
            sport: 0,
            dport: 0,
            l4: L4::Other,
        };
        if h.frag {
            return Ok(h);
        }
        let l4 = &pkt[ihl..total];
        match h.proto {
            TCP => {
                let t = tcp::Packet::new_checked(l4).map_err(|_| ParseError::Malformed)?;
                (h.sport, h.dport, h.l4) = (t.src_port(), t.dst_port(), L4::Tcp(t.flags()));
            }
            UDP => {
                let u = udp::Packet::new_checked(l4).map_err(|_| ParseError::Malformed)?;
                (h.sport, h.dport, h.l4) = (u.src_port(), u.dst_port(), L4::Udp);
            }
            ICMP => {
                let i = icmpv4::Packet::new_checked(l4).map_err(|_| ParseError::Malformed)?;
                let ty = i.msg_type();
                h.l4 = if icmpv4::is_query(ty) {
                    let id = i.echo_ident();
                    (h.sport, h.dport) = (id, id);
                    L4::IcmpQuery {
                        request: icmpv4::is_query_request(ty),
                    }
                } else if icmpv4::is_error(ty) {
                    L4::IcmpError
                } else {
                    L4::IcmpOther
                };
            }
            _ => {}
        }
        Ok(h)
    }

    /// The destination of the IPv4 header an ICMP error quotes, when at
    /// least that header is there, even if the rest does not make a
    /// `Quote` (a later fragment, a short or unknown L4).
    pub fn icmp_error_quoted_dst(&self, pkt: &[u8]) -> Option<u32> {
        let q = pkt.get(self.ihl + icmpv4::HEADER_LEN..self.total)?;
        (self.l4 == L4::IcmpError && q.len() >= ipv4::HEADER_LEN && q[0] >> 4 == 4).then(|| rd32(q, IP_DST))
    }

    /// The packet quoted by an ICMP error, if this is one and the quote is
    /// an IPv4 TCP, UDP or ICMP query header with at least 8 bytes of it
    /// (RFC 792); `None` for anything else.
    pub fn icmp_error_quote(&self, pkt: &[u8]) -> Option<Quote> {
        if self.l4 != L4::IcmpError {
            return None;
        }
        let off = self.ihl + icmpv4::HEADER_LEN;
        let q = pkt.get(off..self.total)?;
        if q.len() < ipv4::HEADER_LEN || q[0] >> 4 != 4 {
            return None;
        }
        let ihl = ((q[0] & 0x0f) as usize) * 4;
        if ihl < ipv4::HEADER_LEN || q.len() < ihl + 8 || rd16(q, 6) & 0x1fff != 0 {
            return None;
        }
        let proto = q[9];
        let l4 = &q[ihl..];
        let (sport, dport) = match proto {
            TCP | UDP => (rd16(l4, 0), rd16(l4, 2)),
            ICMP if icmpv4::is_query(l4[0]) => (rd16(l4, 4), rd16(l4, 4)),
            _ => return None,
        };
        Some(Quote {
            off,
            ihl,
            len: q.len(),
            proto,
            src: rd32(q, IP_SRC),
            dst: rd32(q, IP_DST),
            sport,
            dport,
        })
    }
}

/// A packet quoted inside an ICMP error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quote {
    /// Offset of the quoted IPv4 header in the outer packet.
    pub off: usize,
    pub ihl: usize,
    /// Quoted bytes (the quote may stop before its own total length).
    pub len: usize,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
}

/// Writes `addr` at `at` in an IPv4 header and patches its checksum.
/// Returns the old address and the change's checksum delta (for a
/// pseudo-header sum that covers the address too).
#[inline(always)]
fn set_ip_addr(pkt: &mut [u8], ip: usize, at: usize, addr: u32) -> (u32, u32) {
    let old = rd32(pkt, ip + at);
    wr32(pkt, ip + at, addr);
    let delta = delta_u32(old, addr);
    let c = rd16(pkt, ip + IP_CHECKSUM);
    wr16(pkt, ip + IP_CHECKSUM, apply_delta(c, delta));
    (old, delta)
}

/// UDP's "no checksum" zero must stay zero; a computed zero is sent as
/// 0xffff (RFC 768).
fn udp_fix(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// Rewrites one end (address and port, or ICMP query id) of a TCP, UDP or
/// ICMP query packet `h` describes, with incremental checksums: the
/// address's delta is summed once and applied to the IPv4 header's
/// checksum and, with the port's, to the TCP/UDP one (pseudo-header).
#[inline]
pub(crate) fn rewrite(pkt: &mut [u8], h: &Headers, end: End, addr: u32, port: u16) {
    let (_, d_addr) = set_ip_addr(pkt, 0, end.addr_at(), addr);
    let l4 = h.ihl;
    match h.proto {
        TCP | UDP => {
            let at = l4 + end.port_at();
            let old_port = rd16(pkt, at);
            wr16(pkt, at, port);
            let ck = l4
                + if h.proto == TCP {
                    tcp::CHECKSUM_OFFSET
                } else {
                    6
                };
            let c = rd16(pkt, ck);
            if h.proto == TCP || c != 0 {
                let n = apply_delta(c, d_addr + delta_u16(old_port, port));
                wr16(pkt, ck, if h.proto == UDP { udp_fix(n) } else { n });
            }
        }
        ICMP => {
            let at = l4 + icmpv4::IDENT_OFFSET;
            let old_id = rd16(pkt, at);
            wr16(pkt, at, port);
            let ck = l4 + icmpv4::CHECKSUM_OFFSET;
            let c = rd16(pkt, ck);
            wr16(pkt, ck, update_u16(c, old_id, port));
        }
        _ => {}
    }
}

/// Rewrites an ICMP error: `outer` end of the outer header gets `addr`;
/// the quoted packet, which travelled the other way, gets `addr:port` at
/// its opposite end. Patches the outer IPv4 checksum, the quoted IPv4 and
/// L4 checksums (when quoted) and the ICMP checksum over all of it.
pub(crate) fn rewrite_icmp_error(
    pkt: &mut [u8],
    h: &Headers,
    q: &Quote,
    outer: End,
    addr: u32,
    port: u16,
) {
    let qend = outer.other();
    let ick_at = h.ihl + icmpv4::CHECKSUM_OFFSET;
    let mut ick = rd16(pkt, ick_at);
    // Quoted address and the quoted header's checksum.
    let qck_old = rd16(pkt, q.off + IP_CHECKSUM);
    let (old_addr, _) = set_ip_addr(pkt, q.off, qend.addr_at(), addr);
    let qck_new = rd16(pkt, q.off + IP_CHECKSUM);
    ick = update_u32(ick, old_addr, addr);
    ick = update_u16(ick, qck_old, qck_new);
    // Quoted port or query id, and the quoted L4 checksum if it is there.
    let l4 = q.off + q.ihl;
    let q_end = q.off + q.len;
    let (port_at, l4ck_at, pseudo) = match q.proto {
        TCP => (l4 + qend.port_at(), l4 + tcp::CHECKSUM_OFFSET, true),
        UDP => (l4 + qend.port_at(), l4 + 6, true),
        _ => (
            l4 + icmpv4::IDENT_OFFSET,
            l4 + icmpv4::CHECKSUM_OFFSET,
            false,
        ),
    };
    let old_port = rd16(pkt, port_at);
    wr16(pkt, port_at, port);
    ick = update_u16(ick, old_port, port);
    if l4ck_at + 2 <= q_end {
        let c = rd16(pkt, l4ck_at);
        if !(q.proto == UDP && c == 0) {
            let mut n = update_u16(c, old_port, port);
            if pseudo {
                n = update_u32(n, old_addr, addr);
            }
            if q.proto == UDP {
                n = udp_fix(n);
            }
            wr16(pkt, l4ck_at, n);
            ick = update_u16(ick, c, n);
        }
    }
    wr16(pkt, ick_at, ick);
    // The outer address: ICMPv4 has no pseudo-header, only the IP checksum.
    set_ip_addr(pkt, 0, outer.addr_at(), addr);
}
