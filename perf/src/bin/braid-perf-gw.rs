//! Per-core cost of braid's dataplane, both directions, in one process:
//! gateway A (LAN -> WAN: route, pack or seal, encrypt, outer headers) and
//! gateway B (WAN -> LAN: classify, decrypt, anti-replay, re-order, unpack)
//! run on one lcore on net_ring ports; the TSC cycles spent inside each
//! gateway's poll are counted separately, so the generator and the sink are
//! not in the figures. Reports JSON: Mpps and Gbps of inner packets per
//! worker core, each direction.
//!
//! usage: braid-perf-gw [--mode bundle|plain] [--size FRAME_BYTES]
//!                      [--packets N] [--tunnels N] -- <EAL args with --no-pci>

use braid_dataplane::lab::traffic::{ip_packet, Family, Flow, L4};
use braid_dataplane::lab::Lab;
use braid_dpdk::{Eal, Mbuf, BURST};

fn main() {
    if let Err(e) = run() {
        eprintln!("braid-perf-gw: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").ok_or("missing -- before EAL args")?;
    let (ours, eal_args) = (&args[..split], &args[split + 1..]);
    let (mut mode, mut size, mut packets, mut tunnels) = ("bundle".to_string(), 64usize, 2_000_000u64, 4usize);
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--mode" => mode = v.clone(),
            "--size" => size = v.parse()?,
            "--packets" => packets = v.parse()?,
            "--tunnels" => tunnels = v.parse()?,
            _ => return Err(format!("unknown option {a}").into()),
        }
    }
    let eal = Eal::init(eal_args)?;
    eal.remove_runtime_dir_at_exit();
    // Plain mode never fragments outer packets: give it a jumbo WAN.
    let wan_mtu = if mode == "plain" { 9600 } else { 1500 };
    let weights = vec![1u32; tunnels];
    let mut lab = Lab::new("perf", &mode, &weights, 32, wan_mtu);
    lab.keep_delivered = false;
    // 16 IPv4 UDP flows; frames of `size` bytes (Ethernet included).
    let templates: Vec<Vec<u8>> = (0..16).map(|f| ip_packet(&Flow::a_to_b(f, Family::V4, L4::Udp), 0, size)).collect();
    let inner_len = templates[0].len();
    let mut sent = 0u64;
    let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
    while sent < packets {
        while burst.len() < BURST && sent < packets {
            burst.push(lab.frame_to_a(&templates[(sent % 16) as usize]));
            sent += 1;
        }
        lab.gen.tx.tx_all(&mut burst, 1000);
        burst.clear();
        lab.step();
    }
    lab.settle(50);
    let (a, b) = lab.counters();
    let hz = braid_dpdk::tsc_hz() as f64;
    let dir = |pkts: u64, cycles: u64| {
        let secs = cycles as f64 / hz;
        format!(
            "{{\"packets\":{pkts},\"seconds\":{secs:.4},\"mpps\":{:.3},\"gbps_inner\":{:.3},\"cycles_per_packet\":{:.1}}}",
            pkts as f64 / secs / 1e6,
            pkts as f64 * inner_len as f64 * 8.0 / secs / 1e9,
            cycles as f64 / pkts.max(1) as f64
        )
    };
    println!(
        "{{\"bench\":\"gateway\",\"mode\":\"{mode}\",\"frame_bytes\":{size},\"inner_ip_bytes\":{inner_len},\"tunnels\":{tunnels},\"lan_to_wan\":{},\"wan_to_lan\":{},\"esp_packets\":{},\"delivered\":{},\"drops_a\":{:?},\"drops_b\":{:?},\"engine_drops_b\":{:?}}}",
        dir(a.encapsulated, lab.cycles_a),
        dir(b.delivered, lab.cycles_b),
        a.wan_tx.packets,
        lab.delivered_count,
        a.drops.named(),
        b.drops.named(),
        b.engine.named()
    );
    lab.close();
    eal.cleanup();
    Ok(())
}
