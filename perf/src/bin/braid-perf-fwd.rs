//! Forwarding rate through braid's safe DPDK layer on one lcore: RX a burst on
//! port 0, TX it on port 1 (net_null: no copy, no NIC), for a fixed time.
//! The figure to compare with `dpdk-testpmd --forward-mode=io` on the same
//! vdevs: the cost of the safe layer per packet.
//!
//! usage: braid-perf-fwd [--seconds N] [--size BYTES] -- <EAL args with --no-pci and two ports>

use std::time::{Duration, Instant};

use braid_dpdk::mbuf::DEFAULT_DATA_ROOM;
use braid_dpdk::{Eal, Mbuf, Mempool, Port, PortConfig, BURST};

fn main() {
    if let Err(e) = run() {
        eprintln!("braid-perf-fwd: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").ok_or("usage: braid-perf-fwd [--seconds N] -- <EAL args>")?;
    let (ours, eal_args) = (&args[..split], &args[split + 1..]);
    let mut seconds = 5u64;
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--seconds" => seconds = v.parse()?,
            _ => return Err(format!("unknown option {a}").into()),
        }
    }
    let eal = Eal::init(eal_args)?;
    eal.remove_runtime_dir_at_exit();
    let names = Port::names();
    if names.len() < 2 {
        return Err(format!("need two ports, EAL made {names:?}").into());
    }
    let pool = Mempool::new("fwd_pool", 16383, DEFAULT_DATA_ROOM)?;
    let mut p0 = Port::by_name(&names[0])?;
    let mut p1 = Port::by_name(&names[1])?;
    let cfg = PortConfig { rx_desc: 1024, tx_desc: 1024, ..Default::default() };
    for p in [&mut p0, &mut p1] {
        p.configure(&cfg, &[&pool])?;
        p.start()?;
    }
    let mut rx = p0.rx_queue(0)?;
    let mut tx = p1.tx_queue(0)?;
    let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
    let (mut pkts, mut dropped, mut polls) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(seconds);
    let tsc0 = braid_dpdk::rdtsc();
    'run: loop {
        // Check the clock once every 1024 polls, not per burst.
        for _ in 0..1024 {
            polls += 1;
            if rx.rx_burst(&mut burst, BURST) == 0 {
                continue;
            }
            pkts += tx.tx_burst(&mut burst) as u64;
            dropped += burst.len() as u64;
            burst.clear();
        }
        if Instant::now() >= end {
            break 'run;
        }
    }
    let cycles = braid_dpdk::rdtsc() - tsc0;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"safe-layer-io-fwd\",\"ports\":[\"{}\",\"{}\"],\"seconds\":{secs:.3},\"packets\":{pkts},\"dropped\":{dropped},\"mpps\":{:.2},\"cycles_per_packet\":{:.1},\"polls\":{polls}}}",
        names[0],
        names[1],
        pkts as f64 / secs / 1e6,
        cycles as f64 / pkts.max(1) as f64
    );
    let _ = (rx, tx); // queues go before their ports close
    p0.close();
    p1.close();
    drop(pool);
    eal.cleanup();
    Ok(())
}
