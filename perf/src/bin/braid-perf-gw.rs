//! Per-core cost of braid's dataplane, both directions, in one process:
//! gateway A (LAN -> WAN: route, pack or seal, encrypt, outer headers) and
//! gateway B (WAN -> LAN: classify, decrypt, anti-replay, re-order, unpack)
//! run on one lcore on net_ring ports; the TSC cycles spent inside each
//! gateway's poll are counted separately, so the generator and the sink are
//! not in the figures. Reports JSON: Mpps and Gbps of inner packets per
//! worker core, each direction. Simulated time advances by the slower
//! gateway's busy time each round (`Lab::busy_clock`), as for two
//! saturated workers on their own cores; until 2026-11-24 it advanced
//! 10 us a round, which ran the timers several times as often per packet
//! as a real worker's at these rates (at 64 B ~10 cycles a packet).
//! The figures include every poll, also the
//! lab's polls that find nothing (a saturated worker has none):
//! `idle_cycles_per_packet` says how much of each direction's cost those
//! were.
//!
//! With `--nat-sessions N` gateway A translates its LAN's packets (SNAT of
//! 10.1.0.0/16 to a pool) and gateway B forwards them (DNAT of
//! 10.2.0.1:5201 to 10.2.0.2:5201), over N flows: A's LAN -> WAN figure then
//! includes the outbound NAT with N sessions, B's WAN -> LAN figure the
//! inbound NAT with N sessions. The sessions are opened by a first pass over
//! the flows, which is not measured. `--flows N` without NAT runs the same
//! N flows with NAT off.
//!
//! usage: braid-perf-gw [--mode bundle|plain] [--size FRAME_BYTES]
//!                      [--packets N] [--tunnels N] [--flows N]
//!                      [--nat-sessions N] [--lan static|resolve]
//!                      [--key-bits 128|256] [--l4 udp|tcp]
//!                      [--outer ipv4|ipv6]
//!                      -- <EAL args with --no-pci>
//!
//! `--key-bits`: the SAs' AES-GCM key (default 256).
//!
//! `--l4 tcp`: the flows are TCP (ACK segments) instead of UDP; with NAT,
//! the sessions then follow TCP's state machine.
//!
//! `--outer ipv6`: the tunnels' outer headers are IPv6 (`lab::outer_v6`;
//! the UDP checksum computed and checked in software).
//!
//! `--lan resolve`: B's LAN port has no static next hop and resolves each
//! destination host by ARP (the lab's host answers), so B's WAN -> LAN
//! figure includes the per-packet next-hop lookup.

use braid_dataplane::lab::traffic::{ip_packet, Family, Flow, L4};
use braid_dataplane::lab::{Lab, LabOptions};
use braid_dpdk::{Eal, Mbuf, BURST};

/// Large tables (NAT sessions and indexes) on transparent huge pages.
#[global_allocator]
static ALLOC: braid_dpdk::memory::HugeAdvise = braid_dpdk::memory::HugeAdvise;

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
    let (mut flows, mut nat, mut lan_resolve, mut outer_v6) = (16usize, false, false, false);
    let mut key_bits = 256usize;
    let mut l4 = L4::Udp;
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--mode" => mode = v.clone(),
            "--size" => size = v.parse()?,
            "--packets" => packets = v.parse()?,
            "--tunnels" => tunnels = v.parse()?,
            "--flows" => flows = v.parse()?,
            "--key-bits" => {
                key_bits = v.parse()?;
                if key_bits != 128 && key_bits != 256 {
                    return Err(format!("--key-bits {v}: 128 or 256").into());
                }
            }
            "--l4" => {
                l4 = match v.as_str() {
                    "udp" => L4::Udp,
                    "tcp" => L4::Tcp,
                    _ => return Err(format!("--l4 {v}: udp or tcp").into()),
                }
            }
            "--lan" => {
                lan_resolve = match v.as_str() {
                    "resolve" => true,
                    "static" => false,
                    _ => return Err(format!("--lan {v}: resolve or static").into()),
                }
            }
            "--outer" => {
                outer_v6 = match v.as_str() {
                    "ipv6" => true,
                    "ipv4" => false,
                    _ => return Err(format!("--outer {v}: ipv4 or ipv6").into()),
                }
            }
            "--nat-sessions" => {
                flows = v.parse()?;
                nat = true;
            }
            _ => return Err(format!("unknown option {a}").into()),
        }
    }
    let eal = Eal::init(eal_args)?;
    eal.remove_runtime_dir_at_exit();
    // Plain mode cuts an inner packet bigger than one ESP packet carries
    // (or fragments outer packets, if told): a jumbo WAN carries each
    // whole, so the figure is of whole packets.
    let wan_mtu = if mode == "plain" { 9600 } else { 1500 };
    let weights = vec![1u32; tunnels];
    let mut opts = if nat { nat_options(flows, l4) } else { LabOptions::default() };
    if lan_resolve {
        // B's LAN resolves its hosts (10.2.0.x, one per flow up to 200) by
        // ARP; the lab's host answers.
        then_edit(
            &mut opts,
            Box::new(|side_a, doc| {
                if !side_a {
                    let p = doc["ports"][0].as_object_mut().unwrap();
                    p.remove("next_hop_mac");
                    p.insert("ipv4".into(), "10.2.0.254/24".into());
                }
            }),
        );
    }
    if outer_v6 {
        then_edit(&mut opts, braid_dataplane::lab::outer_v6(vec![true; tunnels]));
    }
    let mut lab = Lab::with("perf", &mode, &weights, key_bits / 8, wan_mtu, opts);
    lab.keep_delivered = false;
    // Time as each gateway's own worker core would see it, saturated:
    // its timers (probes, re-orderer and reassembly timeouts, neighbours)
    // run as often per packet as in a real worker at the measured rate.
    lab.busy_clock = Some(braid_dpdk::tsc_hz());
    if lan_resolve {
        lab.b_lan_answers = Some(braid_dataplane::lab::mac(braid_dataplane::lab::B_HOST_MAC));
    }
    // IPv4 UDP flows from 1000 ports of each host behind A to one server
    // behind B; frames of `size` bytes (Ethernet included).
    let templates: Vec<Vec<u8>> = (0..flows as u32)
        .map(|i| {
            let mut f = Flow::a_to_b(i, Family::V4, l4);
            let h = i / 1000;
            f.src4 = std::net::Ipv4Addr::new(10, 1, (h >> 8) as u8, h as u8);
            f.sport = 20000 + (i % 1000) as u16;
            f.dst4 = std::net::Ipv4Addr::new(10, 2, 0, 1);
            ip_packet(&f, 0, size)
        })
        .collect();
    let inner_len = templates[0].len();
    let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
    let mut run = |lab: &mut Lab, packets: u64, stride: usize| {
        let mut sent = 0u64;
        let mut at = 0usize;
        while sent < packets {
            while burst.len() < BURST && sent < packets {
                burst.push(lab.frame_to_a(&templates[at]));
                at = (at + stride) % flows;
                sent += 1;
            }
            lab.gen.tx.tx_all(&mut burst, 1000);
            burst.clear();
            lab.step();
        }
        lab.settle(50);
    };
    // Open every session first (not measured): one packet per flow.
    let mut base = (Default::default(), Default::default());
    if nat {
        run(&mut lab, flows as u64, 1);
        base = lab.counters();
        lab.cycles_a = 0;
        lab.cycles_b = 0;
        lab.idle_cycles_a = 0;
        lab.idle_cycles_b = 0;
    }
    // Then visit the flows in a scattered order (a stride coprime with
    // their number), as a busy gateway's many flows would.
    let stride = (1..).map(|k| 7919 * k).find(|s| gcd(*s, flows) == 1).unwrap_or(1) % flows.max(1);
    run(&mut lab, packets, stride.max(1));
    let (a, b) = lab.counters();
    let (a0, b0): (braid_dataplane::counters::WorkerCounters, braid_dataplane::counters::WorkerCounters) = base;
    let mut a = a;
    let mut b = b;
    a.encapsulated -= a0.encapsulated;
    b.delivered -= b0.delivered;
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
        "{{\"bench\":\"gateway\",\"mode\":\"{mode}\",\"flows\":{flows},\"nat\":{nat},\"nat_sessions_a\":{},\"nat_sessions_b\":{},\"nat_drops\":{},\"key_bits\":{key_bits},\"aead\":\"{}\",\"l4\":\"{}\",\"frame_bytes\":{size},\"inner_ip_bytes\":{inner_len},\"tunnels\":{tunnels},\"lan_to_wan\":{},\"wan_to_lan\":{},\"esp_packets\":{},\"delivered\":{},\"drops_a\":{},\"drops_b\":{},\"engine_drops_b\":{},\"idle_cycles_per_packet\":[{:.1},{:.1}]}}",
        a.nat.sessions,
        b.nat.sessions,
        a.nat.out_dropped() + a.nat.in_dropped() + b.nat.out_dropped() + b.nat.in_dropped(),
        braid_tunnel::crypto::engines(),
        if matches!(l4, L4::Tcp) { "tcp" } else { "udp" },
        dir(a.encapsulated, lab.cycles_a),
        dir(b.delivered, lab.cycles_b),
        a.wan_tx.packets,
        lab.delivered_count,
        json_counts(&a.drops.named()),
        json_counts(&b.drops.named()),
        json_counts(&b.engine.named()),
        lab.idle_cycles_a as f64 / a.encapsulated.max(1) as f64,
        lab.idle_cycles_b as f64 / b.delivered.max(1) as f64
    );
    lab.close();
    eal.cleanup();
    Ok(())
}

/// Named counters as a JSON object (`{"reason": count, ...}`).
fn json_counts(named: &[(&str, u64)]) -> serde_json::Value {
    serde_json::Value::Object(named.iter().map(|(k, n)| (k.to_string(), (*n).into())).collect())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A: SNAT of 10.1.0.0/16 to 32 pool addresses (paired pooling spreads the
/// hosts, ~64,000 ports each); B: DNAT of 10.2.0.1:5201 (UDP or TCP, as the
/// flows) to 10.2.0.2:5201 and a route back for the pool. Tables sized for
/// `sessions`.
/// Adds `next` after the configuration edit `opts` already has.
fn then_edit(opts: &mut LabOptions, next: braid_dataplane::lab::ConfigEdit) {
    let first = opts.edit.take();
    opts.edit = Some(Box::new(move |side_a, doc| {
        if let Some(e) = &first {
            e(side_a, doc);
        }
        next(side_a, doc);
    }));
}

fn nat_options(sessions: usize, l4: L4) -> LabOptions {
    let proto = if matches!(l4, L4::Tcp) { "tcp" } else { "udp" };
    LabOptions {
        edit: Some(Box::new(move |side_a, doc| {
            if side_a {
                let pool: Vec<String> = (1..=32).map(|i| format!("100.64.0.{i}")).collect();
                doc["nat"] = serde_json::json!({"snat": [{"name": "lan", "match": "10.1.0.0/16", "pool": pool}]});
            } else {
                doc["nat"] = serde_json::json!({"dnat": [{"name": "srv", "external": "10.2.0.1", "protocol": proto, "port": 5201, "internal": "10.2.0.2"}]});
                doc["routes"].as_array_mut().unwrap().push(serde_json::json!({"prefix": "100.64.0.0/24", "peer": "peer"}));
            }
        })),
        nat_max_sessions: Some((sessions + sessions / 8).max(1024)),
        ..Default::default()
    }
}
