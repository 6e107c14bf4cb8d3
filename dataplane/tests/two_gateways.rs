//! Two braid gateways joined by a WAN of 1, 4 and 16 tunnels, on net_ring
//! vdev ports (no PCI), with real mbufs: a generator behind A sends IPv4
//! and IPv6, UDP and TCP, 64..9000-byte packets to hosts behind B; a
//! checker behind B sees every packet once, in order per flow, byte for
//! byte. Tunnel shares follow the weights; the WAN frames are real ESP in
//! UDP that an independent implementation decrypts; bad input is dropped
//! with its counter and the pools end full.

use std::process::Command;

use braid_dataplane::counters::{DpDrop, WorkerCounters};
use braid_dataplane::lab::traffic::{ip_packet, write_pcap, Family, Flow, L4};
use braid_dataplane::lab::{self, Checker, Lab};
use braid_dpdk::{Mbuf, BURST};

/// Ethernet frame sizes (a packet too short for its headers is made the
/// shortest its IP version and L4 allow); 9014 is a 9000-byte IP packet,
/// the LAN MTU.
const SIZES: [usize; 8] = [64, 100, 512, 1400, 1500, 2000, 4000, 9014];

fn size_of(id: u32, seq: u32) -> usize {
    SIZES[(id as usize * 3 + seq as usize) % SIZES.len()]
}

fn flows(n: u32) -> Vec<Flow> {
    (0..n)
        .map(|id| {
            let family = if id % 2 == 0 { Family::V4 } else { Family::V6 };
            let l4 = if id % 4 < 2 { L4::Udp } else { L4::Tcp };
            Flow::a_to_b(id, family, l4)
        })
        .collect()
}

fn start(case: &str, mode: &str, weights: &[u32], key_len: usize, wan_mtu: u32) -> (Lab, std::sync::MutexGuard<'static, ()>) {
    let (_eal, guard) = braid_dpdk::testing::eal(&[], 1536);
    (Lab::new(case, mode, weights, key_len, wan_mtu), guard)
}

/// Sends `per_flow` packets on every flow through A and checks what B
/// delivers. Returns the checker.
fn run(lab: &mut Lab, flows: &[Flow], per_flow: u32) -> Checker {
    let total = flows.len() as u64 * per_flow as u64;
    let mut sent = 0u64;
    let mut next = vec![0u32; flows.len()];
    let mut checker = Checker::default();
    let mut idle = 0;
    let mut f = 0usize;
    while checker.received < total && idle < 20_000 {
        // Generator: one burst per round, round-robin over flows.
        let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
        while burst.len() < BURST && sent < total {
            if next[f] < per_flow {
                let seq = next[f];
                let ip = ip_packet(&flows[f], seq, size_of(f as u32, seq));
                burst.push(lab.frame_to_a(&ip));
                next[f] += 1;
                sent += 1;
            }
            f = (f + 1) % flows.len();
        }
        lab.gen.tx.tx_all(&mut burst, 1000);
        assert!(burst.is_empty(), "A's LAN ring full");
        lab.step();
        let before = checker.received;
        for frame in std::mem::take(&mut lab.delivered) {
            checker.check(&frame, flows, size_of);
        }
        idle = if checker.received == before && sent == total { idle + 1 } else { 0 };
    }
    checker
}

fn assert_clean(lab: &Lab, checker: &Checker, total: u64) {
    let (a, b) = lab.counters();
    let plain = lab.tables_a.bundles[0].mode == braid_dataplane::worker::Mode::Plain;
    lab::assert_conserved(&a, "A", plain);
    lab::assert_conserved(&b, "B", plain);
    eprintln!("B rx: {:?}\nB engine drops: {:?}", lab.b.rx_debug(), b.engine.named());
    assert!(checker.bad.is_empty(), "{} bad deliveries, first: {:?}", checker.bad.len(), &checker.bad[..checker.bad.len().min(5)]);
    assert_eq!(checker.received, total, "A: {:?}\nB: {:?}", a.drops.named(), b.drops.named());
    assert_eq!(a.drops.named(), vec![], "A dropped");
    assert_eq!(b.drops.named(), vec![], "B dropped");
    assert_eq!(b.engine.named(), vec![], "B's engine dropped");
    assert_eq!(a.encapsulated, total);
    assert_eq!(b.delivered, total);
}

/// Each tunnel's share of A's ESP packets is within 5% of its weight's.
fn assert_shares(lab: &Lab, weights: &[u32]) {
    let (a, _) = lab.counters();
    let tx: Vec<u64> = a.tunnels[0].iter().map(|t| t.tx.packets).collect();
    assert_eq!(tx.len(), weights.len(), "a counter per tunnel");
    let sum: u64 = tx.iter().sum();
    let wsum: u32 = weights.iter().sum();
    for (t, (&n, &w)) in tx.iter().zip(weights).enumerate() {
        let share = n as f64 / sum as f64;
        let want = w as f64 / wsum as f64;
        assert!((share - want).abs() <= 0.05 * want, "tunnel {t}: share {share:.4}, weight share {want:.4} (tx {tx:?})");
    }
    eprintln!("tunnel packets {tx:?} for weights {weights:?}");
}

/// Decrypts captured WAN frames with Python's `cryptography` (an ESP
/// implementation independent of braid's) and returns its JSON summary.
fn decrypt_independently(case: &str, frames: &[Vec<u8>], tunnels: usize, key_len: usize) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("braid-{case}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("wan.pcap");
    write_pcap(&pcap, frames);
    let keys: Vec<String> = (0..tunnels)
        .map(|t| format!("\"{}\":[\"{}\",\"{}\"]", lab::spi(t, true), lab::key(t, true, key_len), lab::salt(t, true)))
        .collect();
    let keys_path = dir.join("keys.json");
    std::fs::write(&keys_path, format!("{{{}}}", keys.join(","))).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/esp_pcap.py");
    let out = Command::new("python3").arg(script).arg(&pcap).arg(&keys_path).output().expect("python3");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "esp_pcap.py failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).expect("esp_pcap.py prints JSON")
}

#[test]
fn bundle_mode_one_tunnel_every_packet_once_in_order() {
    let (mut lab, _g) = start("b1", "bundle", &[1], 16, 1500);
    let fl = flows(8);
    let c = run(&mut lab, &fl, 200);
    assert_clean(&lab, &c, 1600);
    lab.close();
}

/// A path that fragments the outer packets (last fragment first): B
/// reassembles them (librte_ip_frag) and delivers every packet once, in
/// order; nothing is discarded or dropped.
fn outer_fragments(mode: &str) {
    outer_fragments_over(mode, &[false, false]);
}

/// [`outer_fragments`] over tunnels of either IP version (`v6[t]`: tunnel
/// `t` over IPv6, whose fragments carry a Fragment header).
fn outer_fragments_over(mode: &str, v6: &[bool]) {
    // Plain ESP needs a jumbo WAN for the jumbo inner packets; DPDK takes
    // at most 8 fragments per packet.
    let (wan_mtu, chunk) = if mode == "plain" { (9600, 1480) } else { (1500, 512) };
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let case = format!("fr{}{}", &mode[..2], v6.iter().map(|&x| if x { '6' } else { '4' }).collect::<String>());
    let edit = v6.iter().any(|&x| x).then(|| lab::outer_v6(v6.to_vec()));
    let mut lab = Lab::with(&case, mode, &[1, 1], 16, wan_mtu, lab::LabOptions { edit, ..Default::default() });
    lab.fragment_wan = Some(chunk);
    lab.capture = Some(Vec::new());
    lab.capture_limit = 1_000_000;
    let fl = flows(8);
    let c = run(&mut lab, &fl, 150);
    assert_clean(&lab, &c, 1200);
    let (_, b) = lab.counters();
    eprintln!("{mode} {v6:?}: B outer fragments {:?}", b.frags);
    // Every frame the path cut (A's, as captured before the cut) was made
    // whole again, of each IP version the bundle's tunnels use.
    let cut: Vec<Vec<u8>> = lab.capture.take().unwrap().into_iter().filter(|f| lab::fragment_frame(f, chunk).len() > 1).collect();
    let cut_v6 = cut.iter().filter(|f| f[12..14] == [0x86, 0xdd]).count();
    assert_eq!((cut_v6 > 0, cut_v6 < cut.len()), (v6.contains(&true), v6.contains(&false)), "{cut_v6} of {} over IPv6", cut.len());
    assert_eq!(b.frags.reassembled, cut.len() as u64, "{:?}", b.frags);
    assert!(b.frags.reassembled > 100, "{:?}", b.frags);
    assert!(b.frags.taken >= 2 * b.frags.reassembled);
    assert_eq!(b.frags.discarded, 0);
    lab.close();
}

/// Plain mode over a 1500-byte WAN with `outer_fragmentation`: inner
/// packets of 64..9000 bytes that do not fit leave A as outer fragments
/// (up to 7, for 9000 bytes), every WAN frame within the MTU; B
/// reassembles them and delivers every packet once, in order, byte for
/// byte; nothing is dropped as too big.
#[test]
fn plain_mode_outer_fragmentation_carries_jumbo_packets_over_a_1500_wan() {
    plain_outer_fragmentation("ofrag", &[false, false]);
}

/// The same over IPv6 tunnels and over a bundle of both versions: A cuts
/// with Fragment headers (1448 bytes of payload each over a 1500-byte
/// MTU, the same counts of fragments as IPv4's 1480 here).
#[test]
fn plain_mode_outer_fragmentation_over_ipv6() {
    plain_outer_fragmentation("ofrag6", &[true, true]);
    plain_outer_fragmentation("ofrag46", &[false, true]);
}

/// [`plain_mode_outer_fragmentation_carries_jumbo_packets_over_a_1500_wan`]
/// over tunnels of IP versions `v6`.
fn plain_outer_fragmentation(case: &str, v6: &[bool]) {
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let v6_edit = v6.contains(&true).then(|| lab::outer_v6(v6.to_vec()));
    let edit: lab::ConfigEdit = Box::new(move |side_a, doc| {
        if let Some(e) = &v6_edit {
            e(side_a, doc);
        }
        doc["bundles"][0]["outer_fragmentation"] = serde_json::json!(true);
    });
    let mut lab = Lab::with(case, "plain", &[1, 1], 16, 1500, lab::LabOptions { edit: Some(edit), ..Default::default() });
    lab.capture = Some(Vec::new());
    lab.capture_limit = 100_000;
    let fl = flows(8);
    let c = run(&mut lab, &fl, 120);
    assert_clean(&lab, &c, 960);
    let (a, b) = lab.counters();
    eprintln!("{v6:?}: A outer fragments {:?}, B {:?}", a.frags, b.frags);
    // 1500, 2000, 4000 and 9000 bytes do not fit: half the packets, in
    // 2, 2, 3 and 7 fragments.
    assert_eq!(a.frags.fragmented, 480, "{:?}", a.frags);
    assert_eq!(a.frags.sent, 120 * (2 + 2 + 3 + 7), "{:?}", a.frags);
    assert_eq!(b.frags.taken, a.frags.sent);
    assert_eq!(b.frags.reassembled, a.frags.fragmented);
    assert_eq!(b.frags.discarded, 0);
    let frames = lab.capture.take().unwrap();
    let is_v6 = |f: &&Vec<u8>| f[12..14] == [0x86, 0xdd];
    let from_a = |f: &&Vec<u8>| if is_v6(f) { f[22..26] == [0x20, 0x01, 0x0d, 0xb8] && f[26..28] == [0, 0x0a] } else { f[26..30] == [192, 0, 2, 1] };
    let ab: Vec<&Vec<u8>> = frames.iter().filter(|f| f.len() > 54).filter(from_a).collect();
    assert!(ab.iter().all(|f| f.len() <= 14 + 1500), "a WAN frame above the MTU");
    let v4_frags: Vec<&&Vec<u8>> = ab.iter().filter(|f| !is_v6(f) && u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0).collect();
    let v6_frags: Vec<&&Vec<u8>> = ab.iter().filter(|f| is_v6(f) && f[20] == 44).collect();
    assert_eq!((v4_frags.len() + v6_frags.len()) as u64, a.frags.sent, "every fragment on the wire");
    assert_eq!((v4_frags.is_empty(), v6_frags.is_empty()), (!v6.contains(&false), !v6.contains(&true)), "fragments of the tunnels' versions");
    assert!(v4_frags.iter().all(|f| f[20] & 0x40 == 0), "DF on a fragment");
    // Each IPv6 fragment: UDP after the Fragment header, reserved bits
    // zero, a payload of a multiple of 8 unless it is the last.
    for f in &v6_frags {
        let (plen, off) = (u16::from_be_bytes([f[18], f[19]]) as usize, u16::from_be_bytes([f[56], f[57]]));
        assert_eq!((f[54], f[55], off & 6), (17, 0, 0));
        assert!(off & 1 == 0 || (plen - 8) % 8 == 0, "a non-last fragment of {} bytes", plen - 8);
    }
    lab.close();
}

#[test]
fn bundle_mode_outer_fragments_are_reassembled() {
    outer_fragments("bundle");
}

/// Outer IPv6 fragments (a peer or a path that fragments at the source):
/// B reassembles them as it does IPv4's, over IPv6 tunnels and over a
/// bundle of both versions.
#[test]
fn outer_ipv6_fragments_are_reassembled() {
    outer_fragments_over("bundle", &[true, true]);
    outer_fragments_over("plain", &[true, true]);
    outer_fragments_over("bundle", &[false, true]);
}

/// Atomic IPv6 fragments (a Fragment header with offset 0 and no more to
/// come, RFC 6946: some paths add one): B takes each as the whole packet it
/// is, never through the reassembly; every packet arrives once, in order.
#[test]
fn atomic_ipv6_fragments_are_whole_packets() {
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let opts = lab::LabOptions { edit: Some(lab::outer_v6(vec![true, true])), ..Default::default() };
    let mut lab = Lab::with("atom6", "bundle", &[1, 1], 16, 1500, opts);
    lab.atomic_wan = true;
    let fl = flows(8);
    let c = run(&mut lab, &fl, 100);
    assert_clean(&lab, &c, 800);
    let (_, b) = lab.counters();
    assert_eq!(b.frags.atomic, b.wan_rx.packets, "every frame B received was an atomic fragment: {:?}", b.frags);
    assert_eq!((b.frags.taken, b.frags.reassembled, b.frags.discarded), (0, 0, 0));
    lab.close();
}

#[test]
fn plain_mode_outer_fragments_are_reassembled() {
    outer_fragments("plain");
}

#[test]
fn bundle_mode_four_weighted_tunnels_and_independent_decryption() {
    let weights = [1, 2, 3, 4];
    let (mut lab, _g) = start("b4", "bundle", &weights, 32, 1500);
    lab.capture = Some(Vec::new());
    lab.capture_limit = 400;
    let fl = flows(16);
    let c = run(&mut lab, &fl, 300);
    assert_clean(&lab, &c, 4800);
    assert_shares(&lab, &weights);
    let frames = lab.capture.take().unwrap();
    assert_eq!(frames.len(), 400, "the capture is full");
    let summary = decrypt_independently("b4", &frames, weights.len(), 32);
    eprintln!("independent decryption: {summary}");
    assert_eq!(summary["decrypted"], frames.len(), "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["next_header_253"], frames.len(), "{summary}");
    // Whole inner packets found in the frames, each one of the test's
    // (the script checks every whole data record).
    assert!(summary["inner_test_packets"].as_u64().unwrap() >= 100, "{summary}");
    lab.close();
}

#[test]
fn bundle_mode_sixteen_tunnels() {
    let weights = [1; 16];
    let (mut lab, _g) = start("b16", "bundle", &weights, 16, 1500);
    let fl = flows(16);
    let c = run(&mut lab, &fl, 300);
    assert_clean(&lab, &c, 4800);
    assert_shares(&lab, &weights);
    lab.close();
}

#[test]
fn bundle_mode_restores_order_when_one_tunnel_is_slower() {
    let (mut lab, _g) = start("bro", "bundle", &[1, 1, 1, 1], 16, 1500);
    // Tunnel 0 (UDP port 4500) is 10 polls (100 us) slower than the others.
    lab.delay_polls.insert(4500, 10);
    let fl = flows(8);
    let c = run(&mut lab, &fl, 300);
    lab.settle(100);
    assert_clean(&lab, &c, 2400);
    let held = lab.b.counters();
    eprintln!("B engine drops {:?}", held.engine.named());
    lab.close();
}

#[test]
fn plain_mode_four_tunnels_interoperable_esp() {
    let weights = [1, 1, 2, 4];
    // Plain ESP carries one inner packet per outer packet and braid never
    // fragments outer packets: jumbo inner packets need a jumbo WAN.
    let (mut lab, _g) = start("p4", "plain", &weights, 16, 9600);
    lab.capture = Some(Vec::new());
    lab.capture_limit = 300;
    let fl = flows(16);
    let c = run(&mut lab, &fl, 300);
    assert_clean(&lab, &c, 4800);
    assert_shares(&lab, &weights);
    let frames = lab.capture.take().unwrap();
    assert_eq!(frames.len(), 300, "the capture is full");
    let summary = decrypt_independently("p4", &frames, weights.len(), 16);
    eprintln!("independent decryption: {summary}");
    assert_eq!(summary["decrypted"], frames.len(), "{summary}");
    assert_eq!(summary["inner_test_packets"], frames.len(), "{summary}");
    lab.close();
}

/// Tunnels over IPv6 (`lab::outer_v6`), `mode`, one weight per tunnel,
/// `v6[i]` for tunnel `i`; every packet once and in order, the weights,
/// and WAN frames that Python decrypts, their IPv6 UDP checksums
/// verified. Returns the decryption summary.
fn over_ipv6(case: &str, mode: &str, weights: &[u32], v6: &[bool], wan_mtu: u32) -> serde_json::Value {
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let opts = lab::LabOptions { edit: Some(lab::outer_v6(v6.to_vec())), ..Default::default() };
    let mut lab = Lab::with(case, mode, weights, 16, wan_mtu, opts);
    lab.capture = Some(Vec::new());
    lab.capture_limit = 400;
    let fl = flows(16);
    let c = run(&mut lab, &fl, 300);
    assert_clean(&lab, &c, 4800);
    assert_shares(&lab, weights);
    let frames = lab.capture.take().unwrap();
    assert_eq!(frames.len(), 400, "the capture is full");
    assert!(frames.iter().all(|f| f.len() <= 14 + wan_mtu as usize), "a WAN frame above the MTU");
    let summary = decrypt_independently(case, &frames, weights.len(), 16);
    eprintln!("{mode} over IPv6 {v6:?}: {summary}");
    assert_eq!(summary["decrypted"], frames.len(), "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    // Test packets inside: one per ESP packet in plain mode; in bundle
    // mode whole ones (the rest of the frames' bytes are pieces of the
    // big ones), every whole one checked by the script.
    let whole = summary["inner_test_packets"].as_u64().unwrap();
    assert!(if mode == "plain" { whole == frames.len() as u64 } else { whole >= 100 }, "{summary}");
    lab.close();
    summary
}

#[test]
fn bundle_mode_over_ipv6_tunnels() {
    let s = over_ipv6("b6", "bundle", &[1, 2, 3, 4], &[true; 4], 1500);
    assert_eq!(s["outer_ipv6"], s["frames"], "{s}");
    assert_eq!(s["next_header_253"], s["frames"], "{s}");
}

#[test]
fn plain_mode_over_ipv6_tunnels() {
    let s = over_ipv6("p6", "plain", &[1, 1, 2, 4], &[true; 4], 9600);
    assert_eq!(s["outer_ipv6"], s["frames"], "{s}");
    assert_eq!(s["inner_test_packets"], s["frames"], "{s}");
}

/// One bundle over an IPv4 tunnel and an IPv6 one (two uplinks of two
/// families, say): both carry their share, frames of both families.
#[test]
fn bundle_and_plain_mode_over_an_ipv4_and_an_ipv6_tunnel() {
    for (case, mode, mtu) in [("bm6", "bundle", 1500), ("pm6", "plain", 9600)] {
        let s = over_ipv6(case, mode, &[1, 1], &[false, true], mtu);
        let (frames, v6) = (s["frames"].as_u64().unwrap(), s["outer_ipv6"].as_u64().unwrap());
        assert!(v6 > frames / 3 && v6 < frames * 2 / 3, "{mode}: {v6} of {frames} frames over IPv6");
    }
}

/// Bad input on IPv6 tunnels, towards B: a zero or wrong UDP checksum
/// (IPv6 has no header checksum; the UDP one guards the addresses), outer
/// IPv6 fragments cut short, with a payload shorter than the Fragment
/// header, not a multiple of 8 bytes though more follow, or past 64 KiB,
/// and fragments of a packet that is a fragment itself, a payload length
/// past the frame, and a tunnel's ESP over the other IP
/// version: each dropped and counted; a flood of lone first fragments is
/// held by the reassembly and freed when its time is up; a NAT-keepalive
/// over IPv6 is counted as one; B still delivers afterwards.
#[test]
fn bad_input_on_ipv6_tunnels_is_dropped_and_counted() {
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let opts = lab::LabOptions { edit: Some(lab::outer_v6(vec![true, true])), ..Default::default() };
    let mut lab = Lab::with("bad6", "bundle", &[1, 1], 16, 1500, opts);
    lab.capture = Some(Vec::new());
    lab.capture_limit = 8;
    let fl = flows(2);
    assert_eq!(run(&mut lab, &fl, 4).received, 8);
    let good = lab.capture.take().unwrap();
    let esp = good.iter().find(|f| f.len() > 200 && f[12..14] == [0x86, 0xdd]).unwrap().clone();
    const UDP: usize = 54;
    let mut bad: Vec<Vec<u8>> = Vec::new();
    let mut v = esp.clone();
    v[UDP + 6..UDP + 8].copy_from_slice(&[0, 0]);
    bad.push(v);
    let mut v = esp.clone();
    let n = v.len();
    v[n - 1] ^= 1;
    bad.push(v);
    let first = lab::fragment_frame(&esp, 64)[0].clone();
    let mut v = first[..14 + 40 + 4].to_vec(); // a Fragment header cut short
    v[18..20].copy_from_slice(&4u16.to_be_bytes());
    bad.push(v);
    let mut v = first.clone();
    v[18..20].copy_from_slice(&4u16.to_be_bytes()); // payload shorter than the Fragment header
    bad.push(v);
    let mut v = first.clone();
    v.truncate(v.len() - 3); // 61 bytes, and more to come
    v[18..20].copy_from_slice(&(8u16 + 61).to_be_bytes());
    bad.push(v);
    let mut v = first.clone();
    v[56..58].copy_from_slice(&(65528u16 | 1).to_be_bytes()); // past 65,535 bytes
    bad.push(v);
    // Fragments whose packet, made whole, is a fragment again.
    let mut inner = lab::atomic_fragment(&esp).unwrap();
    inner[20] = 17; // let it be cut
    for mut f in lab::fragment_frame(&inner, 256) {
        f[54] = 44;
        bad.push(f);
    }
    // A flood of lone first fragments, each of its own packet.
    for _ in 0..300 {
        bad.push(lab::fragment_frame(&esp, 64)[0].clone());
    }
    let mut v = esp.clone();
    v[14 + 4..14 + 6].copy_from_slice(&4000u16.to_be_bytes());
    bad.push(v);
    // The same ESP packet over IPv4 to the same port of B: the SPI's
    // tunnel is IPv6.
    let port = u16::from_be_bytes([esp[UDP + 2], esp[UDP + 3]]);
    let over = |local: &str, remote: &str| {
        braid_dataplane::encap::OuterTemplate::new(
            lab::mac(lab::A_WAN_MAC),
            lab::mac(lab::B_WAN_MAC),
            format!("{local}:{port}").parse().unwrap(),
            format!("{remote}:{port}").parse().unwrap(),
        )
    };
    let esp_bytes = &esp[UDP + 8..];
    let mut v = vec![0u8; braid_dataplane::encap::OUTER_LEN + esp_bytes.len()];
    v[braid_dataplane::encap::OUTER_LEN..].copy_from_slice(esp_bytes);
    over("192.0.2.1", "198.51.100.1").write(&mut v, esp_bytes.len(), 1, false);
    bad.push(v);
    // A NAT-keepalive over IPv6 (its UDP checksum right): counted.
    let t6 = over("[2001:db8:a::1]", "[2001:db8:b::1]");
    let mut v = vec![0u8; t6.keepalive_len()];
    t6.write_keepalive(&mut v, 0, false);
    bad.push(v);
    let keepalives = lab.counters().1.keepalives_rx;
    for chunk in bad.chunks(BURST) {
        let mut burst: Vec<Mbuf> = chunk.iter().map(|b| lab.raw(b)).collect();
        lab.mid_b.tx.tx_all(&mut burst, 1000);
        lab.step();
    }
    lab.settle(5);
    let (_, b) = lab.counters();
    eprintln!("B drops {:?}, engine {:?}", b.drops.named(), b.engine.named());
    assert_eq!(b.keepalives_rx, keepalives + 1, "the IPv6 keepalive");
    assert_eq!(b.drops.get(DpDrop::BadOuterUdp), 2, "zero and wrong UDP checksums");
    assert_eq!(b.drops.get(DpDrop::OuterFragmentV6), 4, "short, shorter than its header, not a multiple of 8, past 64 KiB");
    assert_eq!(b.drops.get(DpDrop::BadOuterIp), 1, "payload length past the frame");
    assert_eq!(b.drops.get(DpDrop::TunnelMismatch), 1, "ESP of an IPv6 tunnel over IPv4");
    assert_eq!(b.engine.named(), vec![], "nothing reached the engine");
    // Fragments of a fragment carry no UDP: not a tunnel's, not taken.
    let nested = lab::fragment_frame(&esp, 256).len() as u64;
    assert_eq!(b.drops.get(DpDrop::NotTunnel), nested, "nested");
    assert_eq!((b.frags.taken, b.frags.reassembled), (300, 0), "the flood is held by the reassembly");
    lab::assert_conserved(&b, "B", false);
    lab.now += 2_000_000_000;
    lab.step();
    assert_eq!(lab.counters().1.frags.discarded, 300, "and freed when its time is up");
    // Still working.
    let c = run(&mut lab, &fl, 4);
    assert_eq!(c.received, 8);
    lab.close();
}

/// A NAT66 box in front of A: A's IPv6 WAN frames leave with the source
/// `to`, and what B sends to `to` comes back to A. Each UDP checksum made
/// right again.
fn nat66(to: std::net::Ipv6Addr) -> lab::WanHook {
    let real: std::net::Ipv6Addr = "2001:db8:a::1".parse().unwrap();
    Box::new(move |dir, f| {
        if f.len() < 62 || f[12..14] != [0x86, 0xdd] || f[20] != 17 {
            return true;
        }
        let (at, want, from) = match dir {
            lab::WanDir::AToB => (22, to, real),
            lab::WanDir::BToA => (38, real, to),
        };
        if f[at..at + 16] != from.octets() {
            return true;
        }
        f[at..at + 16].copy_from_slice(&want.octets());
        lab::fix_udp6_checksum(f);
        true
    })
}

/// A peer over IPv6 whose address changes (a NAT66 rebinds it): B follows
/// it from its first authenticated packets, each tunnel once, and the
/// traffic goes on.
#[test]
fn an_ipv6_peer_that_moves_is_followed() {
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let opts = lab::LabOptions { edit: Some(lab::outer_v6(vec![true, true])), ..Default::default() };
    let mut lab = Lab::with("mv6", "bundle", &[1, 1], 16, 1500, opts);
    let fl = flows(4);
    assert_eq!(run(&mut lab, &fl, 50).received, 200);
    let real: Vec<std::net::SocketAddr> = (0..2).map(|t| format!("[2001:db8:a::1]:{}", 4500 + t).parse().unwrap()).collect();
    assert_eq!(lab.b.remotes(), vec![real]);
    let moved: std::net::Ipv6Addr = "2001:db8:c::7".parse().unwrap();
    lab.wan_hook = Some(nat66(moved));
    let c = run(&mut lab, &fl, 100);
    assert!(c.bad.is_empty() && c.received == 400, "{} received, {} bad", c.received, c.bad.len());
    let want: Vec<std::net::SocketAddr> = (0..2).map(|t| std::net::SocketAddr::new(moved.into(), 4500 + t as u16)).collect();
    assert_eq!(lab.b.remotes(), vec![want]);
    let (_, b) = lab.counters();
    assert_eq!(b.drops.named(), vec![], "B dropped");
    assert_eq!(b.tunnels[0].iter().map(|t| t.remote_changes).collect::<Vec<_>>(), vec![1, 1]);
    lab.close();
}

/// Plain mode sizes a packet for its tunnel's outer headers before the
/// balancer picks: over an IPv6 tunnel, 20 bytes fewer than over IPv4. A
/// 1430-byte inner packet with DF fits a 1500-byte WAN over IPv4 (1494
/// bytes), not over IPv6 (1514): dropped as too big, never sent above the
/// MTU.
#[test]
fn plain_mode_over_ipv6_leaves_room_for_the_longer_header() {
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    for (v6, fits) in [(false, true), (true, false)] {
        let opts = lab::LabOptions { edit: Some(lab::outer_v6(vec![v6])), ..Default::default() };
        let mut lab = Lab::with(&format!("pm{}", v6 as u8), "plain", &[1], 16, 1500, opts);
        lab.capture = Some(Vec::new());
        lab.capture_limit = 10;
        let f = Flow::a_to_b(0, Family::V4, L4::Udp);
        let mut burst = vec![lab.frame_to_a(&ip_packet(&f, 0, 1400)), lab.frame_to_a(&with_df(ip_packet(&f, 1, 14 + 1430)))];
        lab.gen.tx.tx_all(&mut burst, 100);
        lab.settle(5);
        let (a, _) = lab.counters();
        let frames = lab.capture.take().unwrap();
        assert!(frames.iter().all(|f| f.len() <= 14 + 1500), "v6 {v6}: a WAN frame above the MTU");
        assert_eq!(a.drops.get(DpDrop::TooBig), u64::from(!fits), "v6 {v6}");
        assert_eq!(lab.delivered.len(), 1 + usize::from(fits), "v6 {v6}");
        lab.close();
    }
}

/// `ip` (IPv4) with DF set and its header checksum made again.
fn with_df(mut ip: Vec<u8>) -> Vec<u8> {
    ip[6] |= 0x40;
    ip[10..12].fill(0);
    let c = !braid_tunnel::wire::checksum::sum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

/// Plain mode over a 1500-byte WAN: a 3000-byte packet with DF is too
/// big (dropped, its sender told); without DF it is cut into three inner
/// fragments that fit, each its own ESP packet; a sender's own 1500-byte
/// fragments of a datagram are cut again (RFC 791), offsets and MF kept,
/// and B delivers pieces that reassemble to the datagram.
#[test]
fn plain_mode_drops_what_the_wan_mtu_cannot_carry() {
    let (mut lab, _g) = start("pmtu", "plain", &[1], 16, 1500);
    let f = Flow::a_to_b(0, Family::V4, L4::Udp);
    let mut burst =
        vec![lab.frame_to_a(&ip_packet(&f, 0, 1400)), lab.frame_to_a(&with_df(ip_packet(&f, 1, 3000))), lab.frame_to_a(&ip_packet(&f, 2, 3000))];
    lab.gen.tx.tx_all(&mut burst, 100);
    for _ in 0..5 {
        lab.step();
    }
    let (a, b) = lab.counters();
    assert_eq!(a.drops.get(braid_dataplane::counters::DpDrop::TooBig), 1);
    assert_eq!((a.tunnel_cut.fragmented, a.tunnel_cut.fragments), (1, 3));
    assert_eq!(a.encapsulated, 1 + 3);
    assert_eq!(lab.delivered.len(), 1 + 3);
    let is_fragment = |fr: &[u8]| u16::from_be_bytes([fr[14 + 6], fr[14 + 7]]) & 0x3fff != 0;
    assert!(lab.delivered[1..].iter().all(|fr| fr.len() <= 14 + 1500 - 62 && is_fragment(fr)));
    lab::assert_conserved(&a, "A", true);
    lab::assert_conserved(&b, "B", true);

    // A sender's fragments (1500, 1500 and 26 bytes) of a 2986-byte datagram.
    let dgram = ip_packet(&f, 3, 3000);
    let frame = [&[0u8; 12][..], &[0x08, 0x00], &dgram].concat();
    let mut frags = Vec::new();
    assert_eq!(braid_dataplane::encap::fragment_ipv4(&frame, 1480, |h, p| frags.push([&h[14..], p].concat())), 3);
    let mut burst: Vec<Mbuf> = frags.iter().map(|p| lab.frame_to_a(p)).collect();
    lab.delivered.clear();
    lab.gen.tx.tx_all(&mut burst, 100);
    for _ in 0..5 {
        lab.step();
    }
    let (a, b) = lab.counters();
    assert_eq!((a.tunnel_cut.fragmented, a.tunnel_cut.fragments), (1 + 2, 3 + 4), "each 1500-byte fragment cut in two");
    assert_eq!(lab.delivered.len(), 5);
    // All pieces but the last have MF; they reassemble (header checksums
    // right, contiguous, the last ending it) to the datagram.
    assert_eq!(lab.delivered.iter().filter(|fr| fr[14 + 6] & 0x20 != 0).count(), 4);
    assert_eq!(braid_dataplane::lab::traffic::reassembled_v4(&lab.delivered), vec![dgram], "the datagram, byte for byte");
    lab::assert_conserved(&a, "A", true);
    lab::assert_conserved(&b, "B", true);
    lab.close();
}

#[test]
fn bad_input_on_either_side_is_dropped_and_counted() {
    let (mut lab, _g) = start("bad", "bundle", &[1, 1], 16, 1500);
    // A few good packets, captured, so we can replay and forge them.
    lab.capture = Some(Vec::new());
    lab.capture_limit = 8;
    let fl = flows(2);
    let c = run(&mut lab, &fl, 4);
    assert_eq!(c.received, 8);
    let good = lab.capture.take().unwrap();
    let esp_frame = good.iter().find(|f| f.len() > 200).unwrap().clone();

    // WAN side, injected towards B.
    let mut bad: Vec<Vec<u8>> = Vec::new();
    bad.push(vec![0u8; 10]); // runt
    let mut v = esp_frame.clone();
    v[14] = 0x43; // IHL 3
    bad.push(v);
    let mut v = esp_frame.clone();
    v[24] ^= 0xff; // IPv4 checksum
    bad.push(v);
    let mut v = esp_frame.clone();
    v[42..46].copy_from_slice(&0xdead_beefu32.to_be_bytes()); // unknown SPI
    bad.push(v);
    let mut v = esp_frame.clone();
    let n = v.len();
    v[n - 1] ^= 1; // forged tag, on a sequence number not seen yet
    let seq = u32::from_be_bytes([v[46], v[47], v[48], v[49]]) + 1000;
    v[46..50].copy_from_slice(&seq.to_be_bytes());
    bad.push(v);
    bad.push(esp_frame.clone()); // replay
    let mut v = esp_frame.clone();
    v[42..46].copy_from_slice(&[0, 0, 0, 0]); // non-ESP marker (IKE)
    bad.push(v);
    let mut v = esp_frame[..43].to_vec(); // NAT keepalive: UDP payload 0xff
    v[42] = 0xff;
    v[16..18].copy_from_slice(&29u16.to_be_bytes());
    v[38..40].copy_from_slice(&9u16.to_be_bytes());
    let c = !braid_tunnel::wire::checksum::sum(&{
        let mut h = v[14..34].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    v[24..26].copy_from_slice(&c.to_be_bytes());
    bad.push(v);
    for i in 0..1000u16 {
        // A flood of outer fragments.
        let mut v = esp_frame.clone();
        v[20] = 0x20; // MF
        v[18..20].copy_from_slice(&i.to_be_bytes());
        v[24] = 0;
        v[25] = 0;
        let c = !braid_tunnel::wire::checksum::sum(&v[14..34]);
        v[24..26].copy_from_slice(&c.to_be_bytes());
        bad.push(v);
    }
    for chunk in bad.chunks(BURST) {
        let mut burst: Vec<Mbuf> = chunk.iter().map(|b| lab.raw(b)).collect();
        lab.mid_b.tx.tx_all(&mut burst, 1000);
        lab.step();
    }
    // A frame spread over two mbufs.
    let mut head = lab.raw(&esp_frame[..100]);
    head.chain(lab.raw(&esp_frame[100..])).map_err(|_| ()).unwrap();
    let mut v = vec![head];
    lab.mid_b.tx.tx_all(&mut v, 100);
    lab.step();

    // LAN side, towards A: runt, ARP, bad IHL, bad header checksum (summed
    // in software: net_ring gives no verdict), a header the "NIC" found
    // bad (net_ring keeps the mbuf's flags), no route.
    let f = Flow::a_to_b(0, Family::V4, L4::Udp);
    let mut ip = ip_packet(&f, 99, 200);
    let mut lan_bad = vec![lab.raw(&[0u8; 12])];
    let mut arp = vec![0u8; 60];
    arp[..6].fill(0xff); // broadcast, as ARP requests go
    arp[12] = 0x08;
    arp[13] = 0x06;
    lan_bad.push(lab.raw(&arp));
    let mut v = ip.clone();
    v[0] = 0x44;
    lan_bad.push(lab.frame_to_a(&v));
    let mut v = ip.clone();
    v[10] ^= 0x5a;
    lan_bad.push(lab.frame_to_a(&v));
    let mut m = lab.frame_to_a(&ip);
    m.set_rx_ip_cksum(braid_dpdk::mbuf::RxCksum::Bad);
    lan_bad.push(m);
    // A bad header the "NIC" called good, in a packet that is itself a
    // tunnel (GRE: an X710's verdict would be about the inner header), and
    // one it called valid: both summed here, both dropped.
    let mut gre = ip.clone();
    gre[9] = 47;
    gre[10] ^= 0x5a;
    let mut m = lab.frame_to_a(&gre);
    m.set_rx_ip_cksum(braid_dpdk::mbuf::RxCksum::Good);
    lan_bad.push(m);
    let mut v = ip.clone();
    v[10] ^= 0x5a;
    let mut m = lab.frame_to_a(&v);
    m.set_rx_ip_cksum(braid_dpdk::mbuf::RxCksum::Valid);
    lan_bad.push(m);
    ip[16..20].copy_from_slice(&[203, 0, 113, 9]); // no route
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = !braid_tunnel::wire::checksum::sum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    lan_bad.push(lab.frame_to_a(&ip));
    // A LAN frame spread over two mbufs.
    let whole = lab.frame_to_a(&ip_packet(&f, 97, 300)).to_vec();
    let mut head = lab.raw(&whole[..100]);
    head.chain(lab.raw(&whole[100..])).map_err(|_| ()).unwrap();
    lan_bad.push(head);
    lab.gen.tx.tx_all(&mut lan_bad, 100);
    for _ in 0..10 {
        lab.step();
    }

    let (a, b) = lab.counters();
    eprintln!("A drops {:?}\nB drops {:?}\nB engine {:?}", a.drops.named(), b.drops.named(), b.engine.named());
    assert_eq!(b.drops.get(DpDrop::NotTunnel), 1, "runt");
    assert_eq!(b.drops.get(DpDrop::BadOuterIp), 2, "bad IHL + bad checksum");
    assert_eq!(b.drops.get(DpDrop::UnknownSpi), 1);
    assert_eq!(b.drops.get(DpDrop::NonEsp), 1);
    assert_eq!(b.keepalives_rx, 1, "a NAT-keepalive is counted, not dropped");
    assert_eq!(b.frags.taken, 1000, "the fragment flood is held by the reassembly");
    assert_eq!(b.drops.get(DpDrop::Multiseg), 1);
    assert_eq!(b.engine.get(braid_tunnel::DropReason::AuthFailed), 1, "forged");
    assert_eq!(b.engine.get(braid_tunnel::DropReason::Replayed), 1, "replayed");
    assert_eq!(a.drops.get(DpDrop::NotIp), 1, "runt");
    assert_eq!(a.local.get(braid_dataplane::counters::LocalDrop::Malformed), 1, "ARP of no known hardware type");
    assert_eq!(a.drops.get(DpDrop::BadInnerIp), 5, "bad IHL, bad checksum, found bad by the NIC, GRE, 'valid'");
    assert_eq!(a.drops.get(DpDrop::NoRoute), 1);
    assert_eq!(a.drops.get(DpDrop::Multiseg), 1, "a chained LAN frame");
    // Engine drops are counted once, in the engine counters.
    assert_eq!(b.tunnels[0].iter().map(|t| t.rejected).sum::<u64>(), 2, "forged + replayed");
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    // Nothing bad reached B's LAN.
    assert!(lab.delivered.is_empty(), "{} frames leaked to B's LAN", lab.delivered.len());
    // The flood's fragments are freed once their time is up.
    lab.now += 2_000_000_000;
    lab.step();
    assert_eq!(lab.counters().1.frags.discarded, 1000);
    lab.close();
}

/// Shutdown: `Worker::drain`, which the process runs on SIGINT/SIGTERM
/// after its workers stop, gives the LAN what B's re-orderer still holds.
/// Tunnel 0's frames are held back by the network (they never arrive), so
/// B holds the packets that came on tunnel 1 behind them; drain delivers
/// them, each once and in order per flow with what came before.
#[test]
fn drain_at_shutdown_delivers_what_the_reorderer_holds() {
    let (mut lab, _g) = start("drn", "bundle", &[1, 1], 16, 1500);
    lab.delay_polls.insert(4500, u32::MAX);
    let fl = flows(4);
    for seq in 0..6 {
        let mut burst: Vec<Mbuf> = fl.iter().map(|f| lab.frame_to_a(&ip_packet(f, seq, 200))).collect();
        lab.gen.tx.tx_all(&mut burst, 1000);
        lab.step();
    }
    // A few polls, far less than the re-orderer's hold.
    for _ in 0..5 {
        lab.step();
    }
    let before: Vec<Vec<u8>> = std::mem::take(&mut lab.delivered);
    lab.b.drain();
    let mut drained = Vec::new();
    let mut got = Vec::new();
    while lab.check.rx.rx_burst(&mut got, BURST) > 0 {
        drained.extend(got.drain(..).map(|m| m.to_vec()));
    }
    eprintln!("{} delivered before, {} by drain", before.len(), drained.len());
    // Six bursts of 4 packets, each one frame, alternate over the two
    // tunnels: the 3 frames of tunnel 1 (12 packets) wait behind tunnel 0's.
    assert_eq!((before.len(), drained.len()), (0, 12), "drain delivered all that was held");
    assert_eq!(lab.b.counters().delivered, 12, "and counted it");
    let mut next: std::collections::HashMap<u32, u32> = Default::default();
    for f in before.iter().chain(&drained) {
        let (id, seq) = braid_dataplane::lab::traffic::tag(&f[14..]).expect("a test packet");
        let n = next.entry(id).or_insert(0);
        assert!(seq >= *n, "flow {id}: {seq} after {n} (a packet twice or out of order)");
        *n = seq + 1;
    }
    // Tunnel 0's frames, still held by the network, are freed with the lab.
    lab.close();
}

/// An outer fragment flood as big as the reassembly table takes: 1,100
/// packet ids (the table holds 1,024) of 7 fragments each (DPDK keeps at
/// most 8 of one packet), none ever complete. The table fills and refuses
/// the rest (counted as discarded), what it holds stays within B's pool,
/// and tunnel traffic goes on during the flood; when their time is up every
/// held fragment is freed and the pools are whole again.
/// B's WAN address in the lab.
const B_WAN: [u8; 4] = [198, 51, 100, 1];

/// An outer IPv4 fragment from A's WAN to `dst` on B's: 64 bytes of
/// payload at offset 64 * k, more fragments always to come.
fn outer_fragment(id: u16, k: u16, proto: u8, dst: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 64];
    f[0..6].copy_from_slice(&lab::mac(lab::B_WAN_MAC));
    f[6..12].copy_from_slice(&lab::mac(lab::A_WAN_MAC));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&84u16.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&(0x2000 | (k * 8)).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&[192, 0, 2, 1]);
    ip[16..20].copy_from_slice(&dst);
    let c = !braid_tunnel::wire::checksum::sum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f
}

/// Found by review: every outer fragment entered the reassembly table,
/// whatever it carried and whoever it was for (the WAN port is
/// promiscuous), so other traffic's fragments could crowd out the
/// tunnels'. Only UDP fragments to the port's own address are taken.
#[test]
fn only_udp_fragments_to_the_gateway_enter_the_reassembly_table() {
    let (mut lab, _g) = start("fnot", "bundle", &[1, 1], 16, 1500);
    let mut v: Vec<Mbuf> = [(1, B_WAN), (6, B_WAN), (17, [192, 0, 2, 77]), (50, [192, 0, 2, 99])]
        .iter()
        .enumerate()
        .map(|(i, (proto, dst))| lab.raw(&outer_fragment(i as u16, 1, *proto, *dst)))
        .collect();
    lab.mid_b.tx.tx_all(&mut v, 100);
    lab.settle(5);
    let (_, b) = lab.counters();
    assert_eq!(b.frags.taken, 0, "{:?}", b.frags);
    assert_eq!(b.drops.get(DpDrop::NotTunnel), 4);
    let mut v = vec![lab.raw(&outer_fragment(9, 1, 17, B_WAN))];
    lab.mid_b.tx.tx_all(&mut v, 100);
    lab.settle(5);
    assert_eq!(lab.counters().1.frags.taken, 1, "a tunnel's may be");
    lab.close();
}

#[test]
fn a_fragment_flood_fills_the_table_not_the_pool() {
    let (mut lab, _g) = start("ffl", "bundle", &[1, 1], 16, 1500);
    let fl = flows(2);
    assert_eq!(run(&mut lab, &fl, 4).received, 8);
    let frag = |id: u16, k: u16| outer_fragment(id, k, 17, B_WAN);
    let (ids, per_id) = (1100u16, 7u16);
    let pool_b = lab.pools[1].clone();
    let mut least = pool_b.avail();
    // From B's own pool, as B's WAN port would have received them.
    let from_b = |bytes: &[u8]| {
        let mut m = Mbuf::alloc(&pool_b).expect("B's pool");
        m.append(bytes.len()).unwrap().copy_from_slice(bytes);
        m
    };
    for id in 0..ids {
        let mut burst: Vec<Mbuf> = (0..per_id).map(|k| from_b(&frag(id, k))).collect();
        lab.mid_b.tx.tx_all(&mut burst, 1000);
        assert!(burst.is_empty());
        lab.step();
        least = least.min(pool_b.avail());
        if id % 100 == 99 {
            // Tunnel traffic during the flood.
            let c = run(&mut lab, &fl, 2);
            assert_eq!((c.received, c.bad.len()), (4, 0), "traffic during the flood");
        }
    }
    let b = lab.counters().1;
    eprintln!("held at most {} of B's {} mbufs; frag {:?}", pool_b.size() - least, pool_b.size(), b.frags);
    assert_eq!(b.frags.taken, u64::from(ids) * u64::from(per_id));
    assert_eq!(b.frags.reassembled, 0);
    // The table's 1,024 packets of 7 fragments at most; the rest refused.
    let held = b.frags.taken - b.frags.discarded;
    assert!(held <= 1024 * 7 && b.frags.discarded >= 76 * 7, "held {held}, discarded {}", b.frags.discarded);
    assert!(pool_b.size() - least <= 1024 * 7 + 512, "B's pool went down to {least}");
    // Their time is up: every fragment freed, nothing else lost.
    lab.now += 2_000_000_000;
    lab.settle(3);
    assert_eq!(lab.counters().1.frags.discarded, b.frags.taken);
    let c = run(&mut lab, &fl, 4);
    assert_eq!((c.received, c.bad.len()), (8, 0));
    lab::assert_conserved(&lab.counters().1, "B", false);
    lab.close();
}

/// Fuzzing both gateways with real frames: random bytes of random lengths
/// and mutations of valid LAN and WAN frames, into A's LAN and B's WAN.
/// Nothing may panic, every frame is forwarded or dropped with a reason, and
/// the pools end full. Rounds from PROPTEST_CASES (default 256).
#[test]
fn random_and_mutated_frames_never_crash_a_gateway() {
    fuzz("fz", false);
}

/// The same over IPv6 tunnels, the WAN frames mutated including outer
/// IPv6 fragments and atomic fragments of them.
#[test]
fn random_and_mutated_frames_never_crash_a_gateway_over_ipv6() {
    fuzz("fz6", true);
}

fn fuzz(case: &str, v6: bool) {
    let rounds: usize = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let (_eal, _g) = braid_dpdk::testing::eal(&[], 1536);
    let edit = v6.then(|| lab::outer_v6(vec![true, true]));
    let mut lab = Lab::with(case, "bundle", &[1, 2], 16, 1500, lab::LabOptions { edit, ..Default::default() });
    lab.capture = Some(Vec::new());
    lab.capture_limit = 64;
    let fl = flows(4);
    let c = run(&mut lab, &fl, 16);
    assert_eq!(c.received, 64);
    let mut wan_frames = lab.capture.take().unwrap();
    if v6 {
        assert!(wan_frames.iter().all(|f| f[12..14] == [0x86, 0xdd]));
        let extra: Vec<Vec<u8>> = wan_frames
            .iter()
            .flat_map(|f| lab::fragment_frame(f, 256).into_iter().chain(lab::atomic_fragment(f)))
            .collect();
        wan_frames.extend(extra);
    }
    let lan_ips: Vec<Vec<u8>> = (0..8).map(|i| ip_packet(&fl[i % 4], 100 + i as u32, SIZES[i])).collect();
    // A small deterministic PRNG (xorshift64*).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let (a0, b0) = lab.counters();
    let mut lan_in = 0u64;
    let mut wan_in = 0u64;
    for _ in 0..rounds {
        let mut to_a = Vec::new();
        let mut to_b = Vec::new();
        for _ in 0..8 {
            let r = rnd();
            // LAN: random bytes, or a valid frame with a few bytes changed
            // or cut short.
            let mut f = if r % 3 == 0 {
                (0..(rnd() % 2000) as usize).map(|_| rnd() as u8).collect::<Vec<u8>>()
            } else {
                lab.frame_to_a(&lan_ips[(r as usize >> 8) % lan_ips.len()]).to_vec()
            };
            for _ in 0..(r >> 20) % 4 {
                if !f.is_empty() {
                    let i = (rnd() as usize) % f.len();
                    f[i] ^= rnd() as u8 | 1;
                }
            }
            if r & 0x40 != 0 && !f.is_empty() {
                let n = (rnd() as usize) % f.len();
                f.truncate(n);
            }
            if !f.is_empty() {
                to_a.push(lab.raw(&f));
            }
            // WAN: a captured ESP frame mutated or cut, or random bytes.
            let mut w = if r % 5 == 0 {
                (0..(rnd() % 1600) as usize).map(|_| rnd() as u8).collect::<Vec<u8>>()
            } else {
                wan_frames[(r as usize >> 12) % wan_frames.len()].clone()
            };
            for _ in 0..(r >> 24) % 4 {
                if !w.is_empty() {
                    let i = (rnd() as usize) % w.len();
                    w[i] ^= rnd() as u8 | 1;
                }
            }
            if r & 0x80 != 0 && !w.is_empty() {
                let n = (rnd() as usize) % w.len();
                w.truncate(n);
            }
            if !w.is_empty() {
                to_b.push(lab.raw(&w));
            }
        }
        lan_in += to_a.len() as u64;
        wan_in += to_b.len() as u64;
        lab.gen.tx.tx_all(&mut to_a, 1000);
        lab.mid_b.tx.tx_all(&mut to_b, 1000);
        assert!(to_a.is_empty() && to_b.is_empty());
        lab.step();
    }
    lab.settle(50);
    let (a, b) = lab.counters();
    // Every LAN frame A took was tunnelled or dropped with a reason.
    let a_drops: u64 = a.drops.named().iter().map(|(_, v)| v).sum::<u64>() - a0.drops.named().iter().map(|(_, v)| v).sum::<u64>();
    assert_eq!(a.lan_rx.packets - a0.lan_rx.packets, lan_in);
    assert_eq!(a.encapsulated - a0.encapsulated + a_drops, lan_in, "A: {:?}", a.drops.named());
    // Every WAN frame B took (the injected ones plus A's real ones) was
    // accepted by a tunnel or dropped with a reason.
    let b_rx = b.wan_rx.packets - b0.wan_rx.packets;
    assert!(b_rx >= wan_in);
    let seen = |c: &WorkerCounters| c.tunnels[0].iter().map(|t| t.rx.packets + t.rejected).sum::<u64>();
    let accepted = seen(&b) - seen(&b0);
    let b_drops = b.drops.total_rx() - b0.drops.total_rx();
    // Fragments taken are counted when their packet is whole (or in
    // `frags.discarded` when it never is).
    let (taken, whole) = (b.frags.taken - b0.frags.taken, b.frags.reassembled - b0.frags.reassembled);
    assert_eq!(accepted + b_drops + taken, b_rx + whole, "B: {:?} engine {:?} frags {:?}", b.drops.named(), b.engine.named(), b.frags);
    if v6 {
        assert!(taken > 0 && b.frags.atomic > 0, "fragments reached B: {:?}", b.frags);
    }
    lab::assert_conserved(&a, "A", false);
    lab::assert_conserved(&b, "B", false);
    eprintln!("fuzz: {lan_in} LAN frames, {wan_in} WAN frames; A drops {:?}; B drops {:?}; B engine {:?}; B frags {:?}", a.drops.named(), b.drops.named(), b.engine.named(), b.frags);
    lab.close();
}
