//! The lab's WAN next hop: recognises the ARP requests and neighbor
//! solicitations a gateway sends for its next hop, and answers them as a
//! router with a given MAC would.

use braid_tunnel::wire::ethernet::{self, Address, EtherType};
use braid_tunnel::wire::{arp, icmpv6, ipv6, AddrPair, IpProtocol};

/// Whether `frame` is an ARP request or an IPv6 neighbor solicitation.
pub fn is_request(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x06]) => frame.get(20..22) == Some(&[0, 1]),
        Some([0x86, 0xdd]) => frame.get(20) == Some(&58) && frame.get(54) == Some(&icmpv6::kind::NEIGHBOR_SOLICIT),
        _ => false,
    }
}

/// The answer of the asked-for neighbor, whose MAC is `mac`: an ARP reply
/// or a solicited neighbor advertisement (checksum filled), or `None` for
/// anything else.
pub fn answer(frame: &[u8], mac: [u8; 6]) -> Option<Vec<u8>> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    match eth.ethertype() {
        EtherType::ARP => {
            let r = arp::Repr::parse(&arp::Packet::new_checked(eth.payload()).ok()?).ok()??;
            if r.op != arp::Operation::Request {
                return None;
            }
            let mut f = vec![0u8; 60];
            ethernet::Repr { src_addr: Address(mac), dst_addr: r.sender_hw, vlan: None, ethertype: EtherType::ARP }
                .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
            arp::Repr { op: arp::Operation::Reply, sender_hw: Address(mac), sender_ip: r.target_ip, target_hw: r.sender_hw, target_ip: r.sender_ip }
                .emit(&mut arp::Packet::new_unchecked(&mut f[14..]));
            Some(f)
        }
        EtherType::IPV6 => {
            let ip = ipv6::Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::ICMPV6 {
                return None;
            }
            let msg = icmpv6::Packet::new_checked(ip.payload()).ok()?;
            let icmpv6::Repr::NeighborSolicit { target, .. } = icmpv6::Repr::parse(&msg, &ip.addrs(), true).ok()?? else {
                return None;
            };
            let (src, dst) = (target, ip.src_addr());
            let na = icmpv6::Repr::NeighborAdvert {
                flags: icmpv6::NaFlags(icmpv6::NaFlags::ROUTER | icmpv6::NaFlags::SOLICITED | icmpv6::NaFlags::OVERRIDE),
                target,
                target_lladdr: Some(Address(mac)),
            };
            let body = na.buffer_len();
            let mut f = vec![0u8; 14 + ipv6::HEADER_LEN + body];
            ethernet::Repr { src_addr: Address(mac), dst_addr: eth.src_addr(), vlan: None, ethertype: EtherType::IPV6 }
                .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
            ipv6::Repr { src_addr: src, dst_addr: dst, next_header: IpProtocol::ICMPV6, payload_len: body, hop_limit: 255, traffic_class: 0, flow_label: 0 }
                .emit(&mut ipv6::Packet::new_unchecked(&mut f[14..]));
            na.emit(&mut icmpv6::Packet::new_unchecked(&mut f[14 + ipv6::HEADER_LEN..]), &AddrPair::V6 { src, dst });
            Some(f)
        }
        _ => None,
    }
}
