//! The exception path, on net_ring ports: ring ports stand in for the
//! kernel taps of A's LAN and WAN ports. Frames for the gateway itself
//! that the dataplane does not answer (TCP/UDP to the port's address, DHCP
//! broadcasts, IPv6 link-local, LLDP, IKE on a tunnel port, UDP to a port
//! no tunnel uses) reach the kernel byte for byte; ARP requests and pings
//! stay in the dataplane; ARP replies are also copied to the kernel; what
//! the kernel sends leaves by its port unchanged; tunnel traffic goes on
//! meanwhile; a kernel that stops reading is counted, never blocks. The
//! real kernel (net_tap, namespaces, an HTTP server) is in
//! scripts/e2e-exception.

use braid_dataplane::counters::{DpDrop, LocalDrop};
use braid_dataplane::lab::traffic::{ip_packet, Family, Flow, L4};
use braid_dataplane::lab::{self, Checker, Lab, LabOptions};
use braid_dpdk::{Mbuf, BURST};
use braid_tunnel::wire::checksum;

const A_LAN4: [u8; 4] = [10, 1, 0, 1];
const HOST4: [u8; 4] = [10, 1, 0, 2];
const A_WAN4: [u8; 4] = [192, 0, 2, 1];
const FAR4: [u8; 4] = [203, 0, 113, 9];
const FAR_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 9];

fn start(case: &str, mode: &str, taps: bool) -> (Lab, std::sync::MutexGuard<'static, ()>) {
    let (_eal, guard) = braid_dpdk::testing::eal(&[], 1536);
    let opts = LabOptions {
        edit: Some(Box::new(|side_a, doc| {
            if side_a {
                doc["ports"][0]["ipv4"] = "10.1.0.1/24".into();
                doc["ports"][0]["ipv6"] = "fd00:1::1/64".into();
            }
        })),
        kernel_taps: taps,
        ..Default::default()
    };
    let mut lab = Lab::with(case, mode, &[1, 1], 16, 1500, opts);
    lab.read_a_lan = true;
    (lab, guard)
}

fn host_mac() -> [u8; 6] {
    lab::mac(lab::A_HOST_MAC)
}
fn lan_mac() -> [u8; 6] {
    lab::mac(lab::A_LAN_MAC)
}
fn wan_mac() -> [u8; 6] {
    lab::mac(lab::A_WAN_MAC)
}

/// Ethernet + IPv4 (header checksum filled) around `l4` bytes.
fn v4_frame(eth: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut f = vec![0u8; 14 + total];
    f[..6].copy_from_slice(&eth.1);
    f[6..12].copy_from_slice(&eth.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip.copy_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = !checksum::sum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f[34..].copy_from_slice(l4);
    f
}

/// A UDP header and payload (checksum zero: allowed over IPv4).
fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A TCP SYN (checksum not computed: nothing on the path checks it).
fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t
}

/// Ethernet + IPv6 around `l4` bytes.
fn v6_frame(eth: ([u8; 6], [u8; 6]), src: &str, dst: &str, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40 + l4.len()];
    f[..6].copy_from_slice(&eth.1);
    f[6..12].copy_from_slice(&eth.0);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f[14] = 0x60;
    f[18..20].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    f[20] = next;
    f[21] = 64;
    f[22..38].copy_from_slice(&src.parse::<std::net::Ipv6Addr>().unwrap().octets());
    f[38..54].copy_from_slice(&dst.parse::<std::net::Ipv6Addr>().unwrap().octets());
    f[54..].copy_from_slice(l4);
    f
}

fn arp(op: u8, eth_dst: [u8; 6], sender: ([u8; 6], [u8; 4]), target: ([u8; 6], [u8; 4])) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    f[..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&sender.0);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, op]);
    f[22..28].copy_from_slice(&sender.0);
    f[28..32].copy_from_slice(&sender.1);
    f[32..38].copy_from_slice(&target.0);
    f[38..42].copy_from_slice(&target.1);
    f
}

fn echo_request(eth: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0xbe, 0xef, 0, 1, 1, 2, 3, 4];
    let c = !checksum::sum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    v4_frame(eth, src, dst, 1, &icmp)
}

fn send(lab: &mut Lab, lan: bool, frames: &[Vec<u8>]) {
    let mut v: Vec<Mbuf> = frames.iter().map(|f| lab.raw(f)).collect();
    if lan {
        lab.gen.tx.tx_all(&mut v, 1000);
    } else {
        lab.mid_a.tx.tx_all(&mut v, 1000);
    }
    assert!(v.is_empty(), "ring full");
}

/// Everything the kernel side of A's LAN (0) or WAN (1) tap got so far.
fn kernel_got(lab: &mut Lab, port: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut out = Vec::new();
    let k = lab.kernel_a.as_mut().expect("taps");
    while k[port].rx.rx_burst(&mut out, BURST) > 0 {
        got.extend(out.drain(..).map(|m| m.to_vec()));
    }
    got
}

fn kernel_sends(lab: &mut Lab, port: usize, frames: &[Vec<u8>]) {
    let mut v: Vec<Mbuf> = frames.iter().map(|f| lab.raw(f)).collect();
    lab.kernel_a.as_mut().expect("taps")[port].tx.tx_all(&mut v, 1000);
    assert!(v.is_empty());
}

/// Tunnel traffic A -> B: `n` UDP packets of one flow, checked at B.
fn tunnel_traffic(lab: &mut Lab, flow: &Flow, from: u32, n: u32) {
    let mut v: Vec<Mbuf> = (from..from + n).map(|s| lab.frame_to_a(&ip_packet(flow, s, 200))).collect();
    lab.gen.tx.tx_all(&mut v, 1000);
    assert!(v.is_empty());
}

#[test]
fn frames_for_the_gateway_reach_the_kernel_and_back() {
    for mode in ["bundle", "plain"] {
        let (mut lab, _g) = start(&format!("exc{}", &mode[..1]), mode, true);
        lab.capture = Some(Vec::new());
        lab.capture_limit = 1 << 20;
        let flow = Flow::a_to_b(0, Family::V4, L4::Udp);
        tunnel_traffic(&mut lab, &flow, 0, 50);

        let lan = (host_mac(), lan_mac());
        // For the kernel, from the LAN.
        let ssh = v4_frame(lan, HOST4, A_LAN4, 6, &tcp_syn(40000, 22));
        let dhcp = v4_frame(lan, [0; 4], [255; 4], 17, &udp(68, 67, &[1; 240]));
        let igmp = v4_frame(lan, HOST4, [224, 0, 0, 22], 2, &[0x22, 0, 0, 0, 0, 0, 0, 0]);
        let ll6 = v6_frame(lan, "fe80::2", "fe80::1", 6, &tcp_syn(40001, 22));
        let to6 = v6_frame(lan, "fd00:1::2", "fd00:1::1", 17, &udp(5000, 53, &[7; 20]));
        let mut lldp = vec![0u8; 60];
        lldp[..6].copy_from_slice(&[0x01, 0x80, 0xc2, 0, 0, 0x0e]);
        lldp[6..12].copy_from_slice(&host_mac());
        lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
        // The kernel asked for the host's MAC: the reply is copied to it.
        let arp_reply = arp(2, lan_mac(), (host_mac(), HOST4), (lan_mac(), A_LAN4));
        // The dataplane's own: an ARP request and a ping for A's address.
        let arp_request = arp(1, [0xff; 6], (host_mac(), HOST4), ([0; 6], A_LAN4));
        let ping = echo_request(lan, HOST4, A_LAN4);
        let to_kernel_lan = [ssh.clone(), dhcp.clone(), igmp.clone(), ll6.clone(), to6.clone(), lldp.clone()];
        send(&mut lab, true, &[ssh, arp_request, dhcp, ping, igmp, ll6, arp_reply.clone(), to6, lldp]);

        // For the kernel, from the WAN: DNS to a port no tunnel uses (its
        // payload looks like ESP), BGP, IKE on a tunnel port.
        let wan = (FAR_MAC, wan_mac());
        let dns = v4_frame(wan, FAR4, A_WAN4, 17, &udp(53, 33000, &[0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1, 9, 9, 9, 9]));
        let bgp = v4_frame(wan, FAR4, A_WAN4, 6, &tcp_syn(40002, 179));
        let ike = v4_frame(wan, FAR4, A_WAN4, 17, &udp(4500, 4500, &[0, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 1, 2, 3, 4]));
        // Not for the kernel: a keepalive on a tunnel port, an unknown SPI
        // on a tunnel port, UDP to an address that is not A's.
        let keepalive = v4_frame(wan, FAR4, A_WAN4, 17, &udp(4500, 4500, &[0xff]));
        let unknown_spi = v4_frame(wan, FAR4, A_WAN4, 17, &udp(4500, 4501, &[0xde, 0xad, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]));
        let elsewhere = v4_frame(wan, FAR4, [192, 0, 2, 77], 17, &udp(53, 33000, &[1; 12]));
        let to_kernel_wan = [dns.clone(), bgp.clone(), ike.clone()];
        send(&mut lab, false, &[dns, keepalive, bgp, unknown_spi, ike, elsewhere]);
        for _ in 0..5 {
            lab.step();
        }

        // In arrival order, the copy of the ARP reply among them.
        let [ssh, dhcp, igmp, ll6, to6, lldp] = to_kernel_lan;
        let want_lan = vec![ssh, dhcp, igmp, ll6, arp_reply, to6, lldp];
        assert_eq!(kernel_got(&mut lab, 0), want_lan, "{mode}: LAN frames for the kernel, byte for byte, in order");
        assert_eq!(kernel_got(&mut lab, 1), to_kernel_wan.to_vec(), "{mode}: WAN frames for the kernel");
        // The dataplane answered the ARP request and the ping itself.
        let replies = std::mem::take(&mut lab.delivered_a);
        assert_eq!(replies.len(), 2, "{mode}: ARP reply and echo reply from the dataplane");
        assert_eq!(replies[0][12..14], [0x08, 0x06]);
        assert_eq!(replies[1][34], 0, "echo reply");

        // The kernel answers: a SYN-ACK to the host, a SYN-ACK to the BGP
        // peer. They leave by their ports as the kernel wrote them.
        let mut syn_ack = tcp_syn(22, 40000);
        syn_ack[13] = 0x12;
        let from_kernel_lan = v4_frame((lan_mac(), host_mac()), A_LAN4, HOST4, 6, &syn_ack);
        let mut bgp_ack = tcp_syn(179, 40002);
        bgp_ack[13] = 0x12;
        let from_kernel_wan = v4_frame((wan_mac(), FAR_MAC), A_WAN4, FAR4, 6, &bgp_ack);
        kernel_sends(&mut lab, 0, std::slice::from_ref(&from_kernel_lan));
        kernel_sends(&mut lab, 1, std::slice::from_ref(&from_kernel_wan));
        tunnel_traffic(&mut lab, &flow, 50, 50);
        lab.settle(30);
        assert_eq!(std::mem::take(&mut lab.delivered_a), vec![from_kernel_lan], "{mode}: the kernel's frame on the LAN");
        let cap = lab.capture.take().unwrap();
        let from_a: Vec<&Vec<u8>> = cap.iter().filter(|f| f[23] == 6).collect();
        assert_eq!(from_a, vec![&from_kernel_wan], "{mode}: the kernel's frame on the WAN");

        // Tunnel traffic went on: all 100 delivered once, in order.
        let mut checker = Checker::default();
        let delivered = std::mem::take(&mut lab.delivered);
        for f in &delivered {
            checker.check(f, std::slice::from_ref(&flow), |_, _| 200);
        }
        assert_eq!(delivered.len(), 100, "{mode}");
        assert!(checker.bad.is_empty(), "{mode}: {:?}", checker.bad);

        let (a, b) = lab.counters();
        let k = a.kernel;
        assert_eq!((k.taken, k.copied, k.to_kernel), (9, 1, 10), "{mode}: {k:?}");
        assert_eq!((k.from_kernel_lan, k.from_kernel_wan), (1, 1), "{mode}: {k:?}");
        assert_eq!(a.keepalives_rx, 1, "{mode}: a keepalive is not a drop");
        assert_eq!(a.drops.get(DpDrop::UnknownSpi), 1, "{mode}");
        assert_eq!(a.drops.get(DpDrop::NotTunnel), 1, "{mode}: UDP to another address");
        assert_eq!(a.local.arp_replies + a.local.echo_v4_replies, 2, "{mode}");
        assert_eq!(a.local.get(LocalDrop::Unsolicited), 1, "{mode}: the responder did not ask");
        lab::assert_conserved(&a, "A", mode == "plain");
        lab::assert_conserved(&b, "B", mode == "plain");
        lab.close();
    }
}

/// Without a tap the same frames are dropped and counted, as before.
#[test]
fn without_a_tap_frames_for_the_gateway_are_dropped_and_counted() {
    let (mut lab, _g) = start("excn", "bundle", false);
    let lan = (host_mac(), lan_mac());
    send(&mut lab, true, &[v4_frame(lan, HOST4, A_LAN4, 6, &tcp_syn(40000, 22))]);
    let wan = (FAR_MAC, wan_mac());
    send(&mut lab, false, &[v4_frame(wan, FAR4, A_WAN4, 6, &tcp_syn(40002, 179))]);
    lab.settle(5);
    let (a, b) = lab.counters();
    assert_eq!(a.kernel.taken, 0);
    assert_eq!(a.drops.get(DpDrop::NoRoute), 1, "TCP to A's LAN address");
    assert_eq!(a.drops.get(DpDrop::NotTunnel), 1, "TCP to A's WAN address");
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    lab.close();
}

/// A kernel that stops reading its tap: frames for it are dropped and
/// counted once the tap is full; tunnel traffic is not held up.
#[test]
fn a_kernel_that_stops_reading_is_counted_not_blocking() {
    let (mut lab, _g) = start("excf", "bundle", true);
    let lan = (host_mac(), lan_mac());
    let flow = Flow::a_to_b(1, Family::V4, L4::Udp);
    let mut seq = 0;
    for round in 0..40u16 {
        let frames: Vec<Vec<u8>> = (0..100u16).map(|i| v4_frame(lan, HOST4, A_LAN4, 17, &udp(round * 100 + i, 514, &[0; 64]))).collect();
        send(&mut lab, true, &frames);
        tunnel_traffic(&mut lab, &flow, seq, 20);
        seq += 20;
        for _ in 0..6 {
            lab.step();
        }
    }
    lab.settle(30);
    let (a, b) = lab.counters();
    let k = a.kernel;
    assert_eq!(k.taken, 4000);
    assert!(k.to_kernel >= 1000 && k.to_kernel < 4000, "the tap's ring holds about 1024: {k:?}");
    assert_eq!(k.to_kernel + a.drops.get(DpDrop::KernelTxFull), 4000);
    assert_eq!(lab.delivered.len(), 800, "tunnel traffic unaffected");
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    // The kernel reads again: what it holds is there, nothing leaked.
    assert_eq!(kernel_got(&mut lab, 0).len() as u64, k.to_kernel);
    lab.close();
}
