//! Which RX queue a NIC's RSS gives a flow: the Toeplitz hash (Microsoft's
//! "Receive Side Scaling" specification, which Intel's NICs implement) of
//! the flow's addresses and ports under the port's key, looked up in the
//! port's redirection table. Lets the dataplane make the worker that owns a
//! tunnel the one whose queue the NIC gives the tunnel's packets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What a port's RSS hashes in a UDP packet of one IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpHash {
    /// Addresses and ports (`RTE_ETH_RSS_NONFRAG_IPV4_UDP`, `..._IPV6_UDP`).
    AddrsPorts,
    /// Addresses only (`RTE_ETH_RSS_IPV4`, `..._IPV6`, without the UDP type).
    Addrs,
    /// Nothing: the packets all reach one queue, which is not known here.
    Nothing,
}

/// A port's RSS key, redirection table and hash types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssSteering {
    key: Vec<u8>,
    reta: Vec<u16>,
    /// For UDP over IPv4, over IPv6.
    udp: [UdpHash; 2],
}

impl RssSteering {
    /// `None` unless the key has at least the 4 bytes the hash starts from
    /// (plus one per input byte, else the missing bits count as zero) and
    /// the table is not empty. UDP is taken as hashed over addresses and
    /// ports for both IP versions ([`with_rss_hf`](Self::with_rss_hf) says
    /// otherwise).
    pub fn new(key: Vec<u8>, reta: Vec<u16>) -> Option<RssSteering> {
        (key.len() >= 4 && !reta.is_empty()).then_some(RssSteering { key, reta, udp: [UdpHash::AddrsPorts; 2] })
    }

    /// The hash types the port reports (`rte_eth_rss_conf.rss_hf`): what
    /// it hashes in UDP over each IP version.
    pub fn with_rss_hf(mut self, rss_hf: u64) -> RssSteering {
        let of = |udp: u64, ip: u64| {
            if rss_hf & udp != 0 {
                UdpHash::AddrsPorts
            } else if rss_hf & ip != 0 {
                UdpHash::Addrs
            } else {
                UdpHash::Nothing
            }
        };
        use dpdk_sys::consts::*;
        self.udp = [of(BRAID_ETH_RSS_NONFRAG_IPV4_UDP, BRAID_ETH_RSS_IPV4), of(BRAID_ETH_RSS_NONFRAG_IPV6_UDP, BRAID_ETH_RSS_IPV6)];
        self
    }

    /// What the port hashes in UDP over IPv4 (`false`) or IPv6 (`true`).
    pub fn udp_hash(&self, v6: bool) -> UdpHash {
        self.udp[usize::from(v6)]
    }

    /// The queue of an IPv4 UDP (or TCP) packet `src:sport -> dst:dport`,
    /// hashed over addresses and ports as `RTE_ETH_RSS_NONFRAG_IPV4_UDP`
    /// does. The table is indexed by the hash's low bits.
    pub fn queue_v4(&self, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> u16 {
        self.lookup(src.into(), dst.into(), Some((sport, dport)))
    }

    /// The queue of an IPv6 UDP (or TCP) packet `src:sport -> dst:dport`,
    /// hashed over addresses and ports as `RTE_ETH_RSS_NONFRAG_IPV6_UDP`
    /// does (no extension headers).
    pub fn queue_v6(&self, src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> u16 {
        self.lookup(src.into(), dst.into(), Some((sport, dport)))
    }

    /// The queue of a UDP packet `src -> dst` of either IP version, by
    /// what the port hashes for that version ([`UdpHash`]); `None` when
    /// it hashes nothing of it, or the two are of different versions (no
    /// such packet).
    pub fn queue(&self, src: SocketAddr, dst: SocketAddr) -> Option<u16> {
        if src.is_ipv4() != dst.is_ipv4() {
            return None;
        }
        let ports = match self.udp_hash(src.is_ipv6()) {
            UdpHash::AddrsPorts => Some((src.port(), dst.port())),
            UdpHash::Addrs => None,
            UdpHash::Nothing => return None,
        };
        Some(self.lookup(src.ip(), dst.ip(), ports))
    }

    /// The table entry of the hash of source and destination addresses
    /// (the same version), then the ports if given: the hash input's order
    /// in Microsoft's specification.
    fn lookup(&self, src: IpAddr, dst: IpAddr, ports: Option<(u16, u16)>) -> u16 {
        let mut input = [0u8; 36];
        let mut n = 0;
        let mut put = |b: &[u8]| {
            input[n..n + b.len()].copy_from_slice(b);
            n += b.len();
        };
        for a in [src, dst] {
            match a {
                IpAddr::V4(ip) => put(&ip.octets()),
                IpAddr::V6(ip) => put(&ip.octets()),
            }
        }
        if let Some((sport, dport)) = ports {
            put(&sport.to_be_bytes());
            put(&dport.to_be_bytes());
        }
        let h = toeplitz(&self.key, &input[..n]);
        self.reta[h as usize % self.reta.len()]
    }

    /// The redirection table.
    pub fn reta(&self) -> &[u16] {
        &self.reta
    }
}

/// The Toeplitz hash of `input` under `key`: for each input bit set, the
/// 32 key bits starting at that bit's position are XORed into the result.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let bit = |i: usize| key.get(i / 8).map_or(0, |b| u32::from(b >> (7 - i % 8)) & 1);
    let mut window = (0..32).fold(0u32, |w, i| (w << 1) | bit(i));
    let mut h = 0;
    for (n, byte) in input.iter().enumerate() {
        for b in 0..8 {
            if byte & (0x80 >> b) != 0 {
                h ^= window;
            }
            window = (window << 1) | bit(32 + n * 8 + b);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of Microsoft's verification suite (also DPDK's and many
    /// NICs' default).
    const KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae,
        0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    #[test]
    fn microsoft_verification_suite_ipv4() {
        // (source, destination, IPv4 only, with ports).
        let cases = [
            (([66, 9, 149, 187], 2794), ([161, 142, 100, 80], 1766), 0x323e_8fc2, 0x51cc_c178),
            (([199, 92, 111, 2], 14230), ([65, 69, 140, 83], 4739), 0xd718_262a, 0xc626_b0ea),
            (([24, 19, 198, 95], 12898), ([12, 22, 207, 184], 38024), 0xd2d0_a5de, 0x5c2b_394a),
            (([38, 27, 205, 30], 48228), ([209, 142, 163, 6], 2217), 0x8298_9176, 0xafc7_327f),
            (([153, 39, 163, 191], 44251), ([202, 188, 127, 2], 1303), 0x5d18_09c5, 0x10e8_28a2),
        ];
        for ((s, sp), (d, dp), ip_only, with_ports) in cases {
            let mut input = [s, d].concat();
            assert_eq!(toeplitz(&KEY, &input), ip_only, "{s:?} -> {d:?}");
            input.extend_from_slice(&u16::to_be_bytes(sp));
            input.extend_from_slice(&u16::to_be_bytes(dp));
            assert_eq!(toeplitz(&KEY, &input), with_ports, "{s:?}:{sp} -> {d:?}:{dp}");
        }
    }

    #[test]
    fn microsoft_verification_suite_ipv6() {
        // (source, destination, IPv6 only or None, with ports).
        let cases = [
            (("3ffe:2501:200:1fff::7", 2794), ("3ffe:2501:200:3::1", 1766), Some(0x2cc1_8cd5), 0x4020_7d3d),
            (("3ffe:501:8::260:97ff:fe40:efab", 14230), ("ff02::1", 4739), Some(0x0f0c_461c), 0xdde5_1bbf),
            (("3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251), ("fe80::200:f8ff:fe21:67cf", 38024), Some(0x4b61_e985), 0x02d1_feef),
        ];
        let reta: Vec<u16> = (0..128).collect();
        let s = RssSteering::new(KEY.to_vec(), reta).unwrap();
        for ((src, sp), (dst, dp), ip_only, with_ports) in cases {
            let (src, dst): (Ipv6Addr, Ipv6Addr) = (src.parse().unwrap(), dst.parse().unwrap());
            let mut input = [src.octets(), dst.octets()].concat();
            if let Some(h) = ip_only {
                assert_eq!(toeplitz(&KEY, &input), h, "{src} -> {dst}");
            }
            input.extend_from_slice(&u16::to_be_bytes(sp));
            input.extend_from_slice(&u16::to_be_bytes(dp));
            assert_eq!(toeplitz(&KEY, &input), with_ports, "{src}:{sp} -> {dst}:{dp}");
            // An identity table of 128 gives the hash's low 7 bits.
            assert_eq!(u32::from(s.queue_v6(src, sp, dst, dp)), with_ports & 127);
            let (a, b) = (SocketAddr::new(src.into(), sp), SocketAddr::new(dst.into(), dp));
            assert_eq!(s.queue(a, b), Some(s.queue_v6(src, sp, dst, dp)));
            assert_eq!(s.queue(a, "192.0.2.1:4500".parse().unwrap()), None, "no mixed-version packet");
            // A port that hashes IPv6 addresses only, or nothing of IPv6
            // (IPv4 unchanged).
            use dpdk_sys::consts::*;
            let (v4_udp, v6_ip) = (BRAID_ETH_RSS_NONFRAG_IPV4_UDP, BRAID_ETH_RSS_IPV6);
            let addrs = s.clone().with_rss_hf(v4_udp | v6_ip);
            assert_eq!(addrs.udp_hash(true), UdpHash::Addrs);
            if let Some(h) = ip_only {
                assert_eq!(u32::from(addrs.queue(a, b).unwrap()), h & 127, "addresses only");
            }
            let v4_only = s.clone().with_rss_hf(v4_udp);
            assert_eq!(v4_only.queue(a, b), None, "IPv6 not hashed: queue unknown");
            let (x, y) = ("66.9.149.187:2794".parse().unwrap(), "161.142.100.80:1766".parse().unwrap());
            assert_eq!(v4_only.queue(x, y), s.queue(x, y));
            assert_eq!(u32::from(s.queue(x, y).unwrap()), 0x51cc_c178 & 127);
        }
    }

    #[test]
    fn the_table_picks_the_queue() {
        let reta: Vec<u16> = (0..128).map(|i| i % 4).collect();
        let s = RssSteering::new(KEY.to_vec(), reta).unwrap();
        // 0x51ccc178 & 127 = 0x78 = 120 -> queue 0.
        assert_eq!(s.queue_v4(Ipv4Addr::new(66, 9, 149, 187), 2794, Ipv4Addr::new(161, 142, 100, 80), 1766), 0);
        // 0xc626b0ea & 127 = 0x6a = 106 -> queue 2.
        assert_eq!(s.queue_v4(Ipv4Addr::new(199, 92, 111, 2), 14230, Ipv4Addr::new(65, 69, 140, 83), 4739), 2);
        assert!(RssSteering::new(vec![1, 2], vec![0]).is_none());
        assert!(RssSteering::new(KEY.to_vec(), vec![]).is_none());
    }
}
