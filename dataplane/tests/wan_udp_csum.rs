//! UDP checksum offload on a WAN port, for IPv6 tunnels: A's WAN is a DPDK
//! net_tap, which grants `RTE_ETH_TX_OFFLOAD_UDP_CKSUM` (and computes the
//! checksum as a NIC would, from the mbuf's offload flags and lengths). A
//! sends its IPv6 ESP packets with only the pseudo-header sum in the UDP
//! checksum (`stamp_outer_v6`); the kernel side of the tap must receive
//! every one with a correct checksum, which Python verifies over each
//! captured frame (an AF_PACKET socket on the tap). Plain mode with outer
//! fragmentation too: a packet cut into fragments has its checksum
//! computed in software first (no fragment's NIC sees the whole datagram).
//!
//! The test runs in a network namespace of its own (`lab::isolated`), so
//! the tap goes with it. EAL: `--no-pci`, vdevs only.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use braid_dataplane::lab::traffic::{ip_packet, Family, Flow, L4};
use braid_dataplane::lab::{self, Lab, LabOptions};
use braid_dpdk::BURST;

const TAP: &str = "brwan0";
const DEVICE: &str = "net_tap_wan";

/// Captures what the tap's kernel side receives until told "done" on its
/// standard input and nothing more arrived for 0.3 s, and prints, as JSON, how many IPv6 UDP frames to ports 4500-4599 it saw,
/// how many fragments (next header 44), and how many whole datagrams, and
/// datagrams made whole from fragments, have a right, zero or wrong UDP
/// checksum.
const SNIFFER: &str = r#"
import json, select, socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: room for every frame
s.bind((sys.argv[1], 0))
print("ready", flush=True)
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return t
n = {"udp6": 0, "fragments": 0, "good": 0, "zero": 0, "bad": 0, "reassembled_good": 0, "reassembled_bad": 0}
def check(ip, udp, key):
    pseudo = ip[8:40] + struct.pack("!IxxxB", len(udp), 17)
    if udp[6:8] == b"\0\0":
        n["zero"] += 1
    else:
        n[key] += 1 if csum(pseudo + udp) == 0xffff else 0
        n[key.replace("good", "bad")] += 0 if csum(pseudo + udp) == 0xffff else 1
frags = {}
done, deadline = False, time.time() + 120
while time.time() < deadline:
    ready, _, _ = select.select([s] + ([] if done else [sys.stdin]), [], [], 0.3)
    if not ready:
        if done:
            break
        continue
    if sys.stdin in ready:
        sys.stdin.readline()  # "done", or the end of the input
        done = True
        continue
    f, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING or len(f) < 62 or f[12:14] != b"\x86\xdd":
        continue
    ip = f[14:]
    if ip[6] == 44:
        n["fragments"] += 1
        plen = struct.unpack("!H", ip[4:6])[0]
        off, ident = struct.unpack("!HI", ip[42:48])
        frags.setdefault((ip[8:40], ident), []).append((off & ~7, off & 1, ip[48:40 + plen], ip))
        continue
    if ip[6] != 17:
        continue
    plen = struct.unpack("!H", ip[4:6])[0]
    udp = ip[40:40 + plen]
    if not 4500 <= struct.unpack("!H", udp[2:4])[0] < 4600:
        continue
    n["udp6"] += 1
    check(ip, udp, "good")
# The fragmented datagrams, made whole: their checksums too.
for parts in frags.values():
    parts.sort()
    data = b"".join(p[2] for p in parts)
    if parts[-1][1] == 0 and sum(len(p[2]) for p in parts) == parts[-1][0] + len(parts[-1][2]):
        check(parts[0][3], data, "reassembled_good")
print(json.dumps(n), flush=True)
"#;

#[test]
fn ipv6_tunnels_leave_the_udp_checksum_to_the_wan_port() {
    lab::isolated("ipv6_tunnels_leave_the_udp_checksum_to_the_wan_port", || in_own_netns("bundle"));
}

#[test]
fn plain_mode_ipv6_fragments_carry_a_software_checksum() {
    lab::isolated("plain_mode_ipv6_fragments_carry_a_software_checksum", || in_own_netns("plain"));
}

fn in_own_netns(mode: &str) {
    let (_eal, _guard) = braid_dpdk::testing::eal(&[&format!("{DEVICE},iface={TAP}")], 1024);
    let v6 = lab::outer_v6(vec![true, true]);
    let opts = LabOptions {
        edit: Some(Box::new(move |side_a, doc| {
            v6(side_a, doc);
            if doc["bundles"][0]["mode"] == "plain" {
                doc["bundles"][0]["outer_fragmentation"] = true.into();
            }
        })),
        a_wan_device: Some(DEVICE.into()),
        ..Default::default()
    };
    let mut lab = Lab::with(&format!("wcs{mode}"), mode, &[1, 1], 16, 1500, opts);
    assert_eq!(lab.a.wan_tx_offloads(), vec![(true, true)], "net_tap grants IPv4 and UDP checksums");
    let status = |args: &[&str]| Command::new("ip").args(args).status().expect("ip (iproute2)").success();
    assert!(status(&["link", "set", "lo", "up"]) && status(&["link", "set", TAP, "up"]));

    let mut sniffer = Command::new("python3")
        .args(["-c", SNIFFER, TAP])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(sniffer.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let stderr = |sniffer: &mut std::process::Child| {
        let mut e = String::new();
        let _ = sniffer.stderr.take().map(|mut s| s.read_to_string(&mut e));
        e
    };
    assert_eq!(line.trim(), "ready", "the sniffer: {}", stderr(&mut sniffer));

    // Inner packets of many sizes (plain mode: up to 4000 bytes, cut into
    // outer fragments over the 1500-byte WAN).
    let flows: Vec<Flow> = (0..8).map(|i| Flow::a_to_b(i, if i % 2 == 0 { Family::V4 } else { Family::V6 }, L4::Udp)).collect();
    let sizes = [64, 300, 1000, 1400, 2000, 4000];
    let mut sent = 0;
    for round in 0..40u32 {
        let mut burst: Vec<_> = flows.iter().map(|f| lab.frame_to_a(&ip_packet(f, round, sizes[(round as usize + f.id as usize) % sizes.len()]))).collect();
        assert!(burst.len() <= BURST);
        sent += burst.len();
        lab.gen.tx.tx_all(&mut burst, 1000);
        lab.step();
    }
    lab.settle(50);
    let a = lab.counters().0;
    // Everything is sent: the sniffer reads what is left and reports.
    sniffer.stdin.take().unwrap().write_all(b"done\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(sniffer.wait().unwrap().success(), "the sniffer: {}", stderr(&mut sniffer));
    let n: serde_json::Value = serde_json::from_str(line.trim()).expect("the sniffer's counts");
    eprintln!("{mode}: {sent} inner packets, A sent {} ESP ({:?}); the kernel saw {n}", a.wan_tx.packets, a.frags);
    assert_eq!(a.encapsulated, sent as u64, "{:?}", a.drops.named());
    assert_eq!((n["bad"].as_u64(), n["zero"].as_u64()), (Some(0), Some(0)), "{n}");
    // Every frame A sent reached the kernel: the whole ones with a right
    // checksum, the fragments (plain mode) as many as A cut.
    let (good, fragments) = (n["good"].as_u64().unwrap(), n["fragments"].as_u64().unwrap());
    assert_eq!(good + fragments, a.wan_tx.packets, "{n}");
    assert_eq!(fragments, a.frags.sent, "{n}");
    // Each packet cut into fragments, made whole, has a right checksum.
    assert_eq!((n["reassembled_good"].as_u64(), n["reassembled_bad"].as_u64()), (Some(a.frags.fragmented), Some(0)), "{n}");
    if mode == "plain" {
        assert!(a.frags.fragmented > 0, "some packets were cut: {:?}", a.frags);
    }
    lab.close();
}
