//! TCP MSS clamping for plain-mode tunnels: the MSS option of a TCP SYN
//! (or SYN-ACK) crossing the tunnel, either way, is lowered to what one
//! ESP packet carries, as `iptables ... TCPMSS --clamp-mss-to-pmtu` does
//! on a Linux IPsec gateway. Without it, a LAN host on a 1500-byte
//! Ethernet sends 1460-byte segments that plain mode must cut in two
//! (`tunnel_cut`): a full segment and a 62-byte one, twice the ESP
//! packets for the same bytes. Bundle mode cuts frames itself and carries
//! any MSS efficiently; it does not clamp.
//!
//! The option's value is replaced and the TCP checksum updated
//! incrementally (RFC 1624, equation 3), so a SYN with a bad checksum
//! stays bad. A SYN without an MSS option is left alone: its peer uses
//! the default MSS (536 over IPv4, 1220 over IPv6), which one ESP packet
//! carries on any WAN of 1500 bytes, though not on the smallest MTUs the
//! configuration takes (576, 1280): there such segments are cut
//! (`tunnel_cut`, IPv4 and IPv6).

use braid_tunnel::wire::checksum;

const ETH: usize = 14;
const TCP: u8 = 6;
const SYN: u8 = 0x02;

/// The TCP header of `frame` (Ethernet + IPv4 or IPv6) when it carries a
/// TCP SYN: (offset of the TCP header, IP and TCP header bytes an MSS
/// leaves out: 40 over IPv4, 60 over IPv6).
#[inline]
fn syn_at(frame: &[u8]) -> Option<(usize, usize)> {
    let ip = frame.get(ETH..)?;
    let (l4, overhead) = match (frame.get(12..14)?, ip.first()? >> 4) {
        ([0x08, 0x00], 4) => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            // Not a later fragment: the TCP header is in the first one.
            if ip.len() < 20 || ip[9] != TCP || u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 || ihl < 20 {
                return None;
            }
            (ETH + ihl, 40)
        }
        ([0x86, 0xdd], 6) if ip.len() >= 40 && ip[6] == TCP => (ETH + 40, 60),
        _ => return None,
    };
    (frame.get(l4 + 13)? & SYN != 0).then_some((l4, overhead))
}

/// Lowers the MSS option of a TCP SYN in `frame` to what an IP packet of
/// `mtu` bytes carries; true when it changed. Anything else (not TCP, not
/// a SYN, no MSS option, options that run past the header) is left alone.
pub fn clamp(frame: &mut [u8], mtu: usize) -> bool {
    let Some((l4, overhead)) = syn_at(frame) else { return false };
    let max = mtu.saturating_sub(overhead).min(usize::from(u16::MAX)) as u16;
    if max == 0 {
        return false;
    }
    let doff = usize::from(frame.get(l4 + 12).map_or(0, |b| b >> 4)) * 4;
    let Some(options) = frame.get(l4 + 20..l4 + doff.max(20)) else { return false };
    let mut i = 0;
    let at = loop {
        match options.get(i) {
            None | Some(0) => return false,
            Some(1) => i += 1,
            Some(2) if options.get(i + 1) == Some(&4) && i + 4 <= options.len() => break l4 + 20 + i + 2,
            Some(_) => match options.get(i + 1) {
                Some(&len) if len >= 2 => i += usize::from(len),
                _ => return false,
            },
        }
    };
    let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
    if old <= max {
        return false;
    }
    frame[at..at + 2].copy_from_slice(&max.to_be_bytes());
    // The value sits at an even or odd offset from the TCP header: its
    // bytes are one checksum word or halves of two (RFC 1071's byte-order
    // independence: an odd-placed word counts byte-swapped).
    let (m, m1) = if (at - l4) % 2 == 0 { (old, max) } else { (old.swap_bytes(), max.swap_bytes()) };
    let hc = u16::from_be_bytes([frame[l4 + 16], frame[l4 + 17]]);
    let c = !checksum::combine(&[!hc, !m, m1]);
    frame[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// An Ethernet frame with a TCP segment (flags, options, payload) and
    /// a correct checksum, over IPv4 or IPv6.
    fn segment(v6: bool, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let tcp_len = 20 + options.len() + payload.len();
        let mut f = vec![0u8; ETH];
        let (s4, d4) = (Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(10, 2, 0, 1));
        let (s6, d6): (Ipv6Addr, Ipv6Addr) = ("fd00:1::5".parse().unwrap(), "fd00:2::1".parse().unwrap());
        if v6 {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            ip[6] = TCP;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s6.octets());
            ip[24..40].copy_from_slice(&d6.octets());
            f.extend_from_slice(&ip);
        } else {
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = TCP;
            ip[12..16].copy_from_slice(&s4.octets());
            ip[16..20].copy_from_slice(&d4.octets());
            f.extend_from_slice(&ip);
        }
        let l4 = f.len();
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&443u16.to_be_bytes());
        t[12] = (((20 + options.len()) / 4) << 4) as u8;
        t[13] = flags;
        f.extend_from_slice(&t);
        f.extend_from_slice(options);
        f.extend_from_slice(payload);
        let pseudo = if v6 {
            checksum::pseudo_header_v6(s6, d6, TCP, tcp_len as u32)
        } else {
            checksum::pseudo_header_v4(s4, d4, TCP, tcp_len as u16)
        };
        let c = !checksum::combine(&[pseudo, checksum::sum(&f[l4..])]);
        f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let v6 = f[12..14] == [0x86, 0xdd];
        let l4 = if v6 { ETH + 40 } else { ETH + 20 };
        let len = f.len() - l4;
        let pseudo = if v6 {
            let a = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&f[at..at + 16]).unwrap());
            checksum::pseudo_header_v6(a(ETH + 8), a(ETH + 24), TCP, len as u32)
        } else {
            let a = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
            checksum::pseudo_header_v4(a(ETH + 12), a(ETH + 16), TCP, len as u16)
        };
        checksum::combine(&[pseudo, checksum::sum(&f[l4..])]) == 0xffff
    }

    fn mss_of(f: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    #[test]
    fn a_syn_mss_above_the_tunnel_is_lowered_and_the_checksum_kept() {
        // MSS first (even offset); after NOP, NOP, and after one NOP
        // (odd offset); in a SYN and a SYN-ACK; over IPv4 and IPv6.
        let cases: [(&[u8], usize); 3] = [
            (&[2, 4, 0x05, 0xb4, 1, 3, 3, 7], 2),
            (&[1, 1, 4, 2, 2, 4, 0x05, 0xb4], 6),
            (&[1, 2, 4, 0x05, 0xb4, 1, 1, 0], 3),
        ];
        for v6 in [false, true] {
            for flags in [SYN, SYN | 0x10] {
                for (opts, mss_at) in cases {
                    let mut f = segment(v6, flags, opts, &[]);
                    assert!(tcp_ok(&f));
                    let at = f.len() - opts.len() + mss_at;
                    assert_eq!(mss_of(&f, at), 1460);
                    assert!(clamp(&mut f, 1438));
                    assert_eq!(mss_of(&f, at), if v6 { 1378 } else { 1398 }, "v6 {v6} {opts:?}");
                    assert!(tcp_ok(&f), "v6 {v6} {opts:?}: checksum after clamping");
                    // Already below: unchanged.
                    let before = f.clone();
                    assert!(!clamp(&mut f, 1438));
                    assert_eq!(f, before);
                }
            }
        }
    }

    #[test]
    fn anything_else_is_left_alone() {
        let mss: &[u8] = &[2, 4, 0x05, 0xb4];
        let untouched = |mut f: Vec<u8>| {
            let before = f.clone();
            assert!(!clamp(&mut f, 1000));
            assert_eq!(f, before);
        };
        // Not a SYN (an ACK carrying the option's bytes as data).
        untouched(segment(false, 0x10, &[], mss));
        untouched(segment(false, 0x10, mss, &[]));
        // A SYN without an MSS option; one whose options end early, or
        // run past the header; an MSS option of a wrong length.
        untouched(segment(false, SYN, &[1, 1, 1, 1], &[]));
        untouched(segment(false, SYN, &[0, 2, 4, 5], &[]));
        untouched(segment(false, SYN, &[1, 1, 8, 40], &[]));
        untouched(segment(false, SYN, &[1, 1, 2, 3], &[]));
        untouched(segment(false, SYN, &[1, 1, 9, 0], &[]));
        // A later fragment, UDP, ARP, runts.
        let mut frag = segment(false, SYN, mss, &[]);
        frag[ETH + 7] = 1;
        untouched(frag);
        let mut udp = segment(false, SYN, mss, &[]);
        udp[ETH + 9] = 17;
        untouched(udp);
        let mut arp = segment(false, SYN, mss, &[]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        untouched(arp);
        let f = segment(false, SYN, mss, &[]);
        for n in 0..f.len() {
            let mut short = f[..n].to_vec();
            assert!(!clamp(&mut short, 1000), "a runt of {n} bytes changed");
        }
    }
}
