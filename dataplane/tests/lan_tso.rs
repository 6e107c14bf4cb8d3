//! A LAN port with TSO: B's LAN is a DPDK net_tap, whose kernel side plays
//! B's host with a real TCP stack. A TCP client behind A (this test,
//! speaking TCP through A's LAN ring) sends 9000-byte segments, as a host
//! on a jumbo LAN does; B takes them whole from the bundle (into its jumbo
//! pool: all its ports are 1500 bytes), and hands each IPv4 one to the
//! tap's TSO whole; IPv6 ones it cuts itself (net_tap's TSO is DPDK
//! 22.11's GSO library: TCP over IPv4 only). The kernel must receive the
//! byte stream intact (it checks every segment's checksums), in frames
//! that fit the LAN: a tap takes giants too, so the test counts the frames
//! the kernel got (each 9000-byte packet must have become at least seven)
//! and reads the largest segment its TCP saw.
//!
//! The test runs in a network namespace of its own: it runs itself again
//! under `unshare --net`, so the tap and its addresses go with that
//! process. EAL: `--no-pci`, vdevs only.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use braid_dataplane::counters::DpDrop;
use braid_dataplane::lab::{self, Lab, LabOptions};
use braid_tunnel::wire::checksum;

const TAP: &str = "brtso0";
const DEVICE: &str = "net_tap_tso";
const KERNEL4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 5);
const KERNEL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 5);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 7);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 7);
/// TCP payload of the client's segments: 9000-byte IPv4 packets.
const SEG: usize = 8960;
const ETH: usize = 14;

#[test]
fn jumbo_tcp_goes_whole_to_the_lan_ports_tso() {
    lab::isolated("jumbo_tcp_goes_whole_to_the_lan_ports_tso", || in_own_netns("bundle"));
}

/// Plain mode, the outer packets fragmented over the 1500-byte WAN
/// (`outer_fragmentation`): B reassembles each 9000-byte ESP packet (into
/// its jumbo pool), and the rest goes as in bundle mode.
#[test]
fn plain_mode_reassembled_jumbo_tcp_goes_to_the_tso_too() {
    lab::isolated("plain_mode_reassembled_jumbo_tcp_goes_to_the_tso_too", || in_own_netns("plain"));
}

/// Frames the kernel received on the tap (what B's LAN port sent).
fn tap_rx_packets() -> u64 {
    let out = Command::new("ip").args(["-s", "-j", "link", "show", "dev", TAP]).output().expect("ip (iproute2)");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    v[0]["stats64"]["rx"]["packets"].as_u64().expect("rx packets")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn in_own_netns(mode: &str) {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[&format!("{DEVICE},iface={TAP}")], 1024);
    // The tap's MAC (from `ip`: /sys shows the namespace it was mounted in).
    let link = Command::new("ip").args(["-o", "link", "show", "dev", TAP]).output().expect("ip (iproute2)");
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    let tap_mac = link.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).expect("the tap's MAC").to_string();
    let opts = LabOptions {
        edit: Some(Box::new(move |side_a, doc| {
            if !side_a {
                doc["ports"][0]["next_hop_mac"] = tap_mac.clone().into();
                doc["ports"][0]["mtu"] = 1500.into();
            }
            if doc["bundles"][0]["mode"] == "plain" {
                doc["bundles"][0]["outer_fragmentation"] = true.into();
            }
        })),
        b_lan_device: Some(DEVICE.into()),
        ..Default::default()
    };
    let mut lab = Lab::with("lantso", mode, &[1, 1], 16, 1500, opts);
    lab.read_a_lan = true;

    // The kernel: B's host, its way back through B.
    let b_lan = lab::B_LAN_MAC;
    ip(&["link", "set", "lo", "up"]);
    ip(&["link", "set", TAP, "up"]);
    ip(&["addr", "add", &format!("{KERNEL4}/24"), "dev", TAP]);
    ip(&["-6", "addr", "add", &format!("{KERNEL6}/64"), "dev", TAP, "nodad"]);
    ip(&["neigh", "replace", "10.2.0.1", "lladdr", b_lan, "dev", TAP, "nud", "permanent"]);
    ip(&["-6", "neigh", "replace", "fd00:2::1", "lladdr", b_lan, "dev", TAP, "nud", "permanent"]);
    ip(&["route", "add", "10.1.0.0/16", "via", "10.2.0.1", "dev", TAP]);
    ip(&["-6", "route", "add", "fd00:1::/64", "via", "fd00:2::1", "dev", TAP]);

    let total = 2_000_000;
    let (v4, v6) = ((IpAddr::V4(CLIENT4), IpAddr::V4(KERNEL4)), (IpAddr::V6(CLIENT6), IpAddr::V6(KERNEL6)));
    // IPv4, IPv6, and IPv4 whose IP and TCP headers carry 40 bytes of
    // options each: 134 bytes of headers, more than net_tap's GSO copies.
    for ((client, kernel), sport, options) in [(v4, 40001, false), (v6, 40002, false), (v4, 40003, true)] {
        let before = lab.counters().1.lan_cut;
        let frames_before = tap_rx_packets();
        let c = Conn { client, kernel, sport, dport: 5201, options };
        let (sent, rcv_mss) = transfer(&mut lab, &c, total);
        let frames = tap_rx_packets() - frames_before;
        let after = lab.counters().1.lan_cut;
        let (tso, tso_segments, segmented) =
            (after.tso - before.tso, after.tso_segments - before.tso_segments, after.segmented - before.segmented);
        eprintln!(
            "{mode} {kernel}: {sent} client segments; B: {tso} to TSO ({tso_segments} segments), {segmented} cut in software; \
             the kernel got {frames} frames, its rcvmss {rcv_mss}"
        );
        // 8960 bytes need 7 segments of at most 1446 (1440, 1380); a few
        // packets the window cut short need fewer.
        let jumbo = (total / SEG) as u64;
        assert!(frames >= 6 * jumbo, "{frames} frames reached the kernel for {jumbo} jumbo packets: giants?");
        // What a 1500-byte link carries after IP and TCP headers (20 + 20,
        // and 14 less as net_tap cuts; 40 + 20 or 60 + 60 in software).
        let tso_expected = kernel.is_ipv4() && !options;
        let mss = match (tso_expected, options) {
            (true, _) => 1500 - 14 - 40,
            (false, false) => 1500 - 60,
            (false, true) => 1500 - 120,
        };
        assert_eq!(rcv_mss, mss, "the largest segment the kernel received on a 1500-byte LAN");
        if tso_expected {
            assert!(tso >= (total / SEG) as u64, "IPv4 jumbo segments handed to the tap's TSO whole: {tso}");
            // At most 8960 bytes (the window may cut a packet short) in
            // segments of 1500 - 14 (net_tap counts the Ethernet header)
            // - 20 - 20 bytes.
            let most = SEG.div_ceil(1500 - 14 - 40) as u64;
            assert!(tso_segments > tso && tso_segments <= tso * most, "{tso_segments} segments for {tso} packets");
            assert_eq!(segmented, 0);
        } else {
            assert_eq!(tso, 0, "net_tap cuts neither IPv6 nor such long headers");
            assert!(segmented >= (total / SEG) as u64, "jumbo segments cut in software: {segmented}");
        }
    }
    let (_, b) = lab.counters();
    eprintln!("B drops: {:?}, engine: {:?}, outer fragments {:?}", b.drops.named(), b.engine.named(), b.frags);
    if mode == "plain" {
        // Each jumbo ESP packet crossed the WAN in fragments.
        assert!(b.frags.reassembled >= 3 * (total / SEG) as u64, "outer packets reassembled: {}", b.frags.reassembled);
    }
    for d in [DpDrop::LanTooBig, DpDrop::LanBadChecksum, DpDrop::LanNoMbuf, DpDrop::LanTxRejected, DpDrop::LanTxFull] {
        assert_eq!(b.drops.get(d), 0, "{d:?}");
    }
    let no_buffer = b.engine.named().iter().find(|(n, _)| *n == "rx_no_buffer").map_or(0, |(_, c)| *c);
    assert_eq!(no_buffer, 0, "inner packets without an mbuf (the jumbo pool)");
    lab.close();
}

/// A TCP connection from `client` (behind A) to the kernel at `kernel`:
/// handshake, then `total` bytes in 9000-byte packets within the kernel's
/// window, resending from the last byte it acknowledged when it stalls.
/// The kernel's socket must read exactly those bytes. Returns how many
/// data segments the client sent, and the largest TCP payload the kernel
/// received in one segment (its `rcvmss`).
fn transfer(lab: &mut Lab, c: &Conn, total: usize) -> (usize, usize) {
    let listener = TcpListener::bind(SocketAddr::new(c.kernel, c.dport)).expect("listen on the kernel's address");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::with_capacity(total);
        let mut buf = vec![0u8; 65536];
        let mut end = None;
        while got.len() < total {
            match s.read(&mut buf) {
                Ok(0) => {
                    end = Some("end of stream".to_string());
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    end = Some(e.to_string());
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        (got, s, end)
    });
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 4099) as u8).collect();
    let iss = 1_000_000u32;
    // SYN with an MSS of 8960: a host on a jumbo LAN.
    let mss = [2, 4, (SEG >> 8) as u8, SEG as u8];
    send(lab, &c.packet(iss, 0, SYN, &mss, &[]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let (irs, mut wnd) = loop {
        assert!(Instant::now() < deadline, "no SYN-ACK from the kernel");
        if let Some(s) = replies(lab, c).into_iter().find(|s| s.flags & (SYN | ACK) == SYN | ACK) {
            break (s.seq, s.window as usize);
        }
    };
    let rcv = irs.wrapping_add(1);
    send(lab, &c.packet(iss.wrapping_add(1), rcv, ACK, &[], &[]));
    let (mut una, mut nxt, mut sent) = (0usize, 0usize, 0usize);
    let mut progress = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while una < total {
        assert!(Instant::now() < deadline, "transfer stalled at {una} of {total} bytes");
        while nxt < total && nxt < una + wnd {
            let len = SEG.min(total - nxt).min(una + wnd - nxt);
            let seq = iss.wrapping_add(1).wrapping_add(nxt as u32);
            send(lab, &c.packet(seq, rcv, ACK | PSH, &[], &data[nxt..nxt + len]));
            nxt += len;
            sent += 1;
        }
        for s in replies(lab, c) {
            let acked = s.ack.wrapping_sub(iss.wrapping_add(1)) as usize;
            if s.flags & ACK != 0 && acked <= total && acked > una {
                una = acked;
                progress = Instant::now();
            }
            wnd = s.window as usize;
        }
        if progress.elapsed() > Duration::from_millis(300) {
            nxt = una;
            progress = Instant::now();
        }
    }
    let (got, socket, end) = reader.join().expect("reader");
    assert_eq!(got.len(), total, "bytes the kernel's socket read ({end:?})");
    assert!(got == data, "the kernel's socket read other bytes than were sent");
    // The largest segment the kernel received (a tap takes giants too):
    // cut to the LAN's MTU, not the client's 8960 bytes.
    let filter = format!("( sport = :{} and dport = :{} )", c.dport, c.sport);
    let ss = Command::new("ss").args(["-tni", "state", "established", &filter]).output().expect("ss (iproute2)");
    let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
    let rcv_mss: usize = ss
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rcvmss:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rcvmss in {ss:?}"));
    drop(socket);
    (sent, rcv_mss)
}

const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

struct Conn {
    client: IpAddr,
    kernel: IpAddr,
    sport: u16,
    dport: u16,
    /// 40 bytes of IPv4 options (NOPs) and, but on the SYN, 40 bytes of
    /// TCP options (NOPs) in every packet.
    options: bool,
}

/// What the kernel sent the client.
struct Seg {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
}

impl Conn {
    /// An IP packet of this connection from the client, checksums filled.
    fn packet(&self, seq: u32, ack: u32, flags: u8, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        let nops = [1u8; 40];
        let opts = if self.options && flags & SYN == 0 { &nops[..] } else { opts };
        let l4 = 20 + opts.len();
        let mut t = vec![0u8; l4 + payload.len()];
        t[0..2].copy_from_slice(&self.sport.to_be_bytes());
        t[2..4].copy_from_slice(&self.dport.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = ((l4 / 4) << 4) as u8;
        t[13] = flags;
        t[14..16].copy_from_slice(&65535u16.to_be_bytes());
        t[20..l4].copy_from_slice(opts);
        t[l4..].copy_from_slice(payload);
        let (mut ip, pseudo) = match (self.client, self.kernel) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = if self.options { 60 } else { 20 };
                let mut h = vec![0x40 | (ihl / 4) as u8, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
                h[2..4].copy_from_slice(&((ihl + t.len()) as u16).to_be_bytes());
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h.resize(ihl, 1);
                let c = !checksum::sum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                (h, checksum::pseudo_header_v4(s, d, 6, t.len() as u16))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut h = vec![0x60, 0, 0, 0, 0, 0, 6, 64];
                h[4..6].copy_from_slice(&(t.len() as u16).to_be_bytes());
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                (h, checksum::pseudo_header_v6(s, d, 6, t.len() as u32))
            }
            _ => unreachable!("one family"),
        };
        let c = !checksum::combine(&[pseudo, checksum::sum(&t)]);
        t[16..18].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&t);
        ip
    }

    /// The TCP header of `frame` (Ethernet) if it is this connection's,
    /// from the kernel to the client.
    fn reply(&self, frame: &[u8]) -> Option<Seg> {
        let ip = frame.get(ETH..)?;
        let (l3, src, dst): (usize, IpAddr, IpAddr) = match ip.first()? >> 4 {
            4 if *ip.get(9)? == 6 => {
                let a: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
                let b: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
                ((ip[0] & 15) as usize * 4, a.into(), b.into())
            }
            6 if *ip.get(6)? == 6 => {
                let a: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
                let b: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
                (40, a.into(), b.into())
            }
            _ => return None,
        };
        let t = ip.get(l3..l3 + 20)?;
        let port = |i: usize| u16::from_be_bytes([t[i], t[i + 1]]);
        if src != self.kernel || dst != self.client || port(0) != self.dport || port(2) != self.sport {
            return None;
        }
        let word = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
        Some(Seg { seq: word(4), ack: word(8), flags: t[13], window: port(14) })
    }
}

/// Hands `ip` to A from its LAN host.
fn send(lab: &mut Lab, ip: &[u8]) {
    let mut burst = vec![lab.frame_to_a(ip)];
    lab.gen.tx.tx_all(&mut burst, 1000);
    assert!(burst.is_empty(), "A's LAN ring full");
}

/// Runs the lab for a moment (the kernel answers in real time) and returns
/// what the kernel sent the client meanwhile.
fn replies(lab: &mut Lab, c: &Conn) -> Vec<Seg> {
    let mut out = Vec::new();
    for _ in 0..50 {
        lab.step();
        out.extend(lab.delivered_a.drain(..).filter_map(|f| c.reply(&f)));
        if !out.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    out
}
