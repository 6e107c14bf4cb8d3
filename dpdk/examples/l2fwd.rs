//! `l2fwd`: the smallest real braid-dpdk program. Forwards every frame
//! between the first two ports (port 0 <-> port 1) in bursts on one lcore,
//! counts what it forwards and what it drops, backs off when idle so a small
//! box is not pinned at 100%, and shuts down cleanly on SIGINT/SIGTERM.
//! `scripts/demo` runs it between two network namespaces over net_af_packet.
//!
//! usage: l2fwd [--seconds N] [--idle-us N] -- <EAL args with --no-pci>

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_dpdk::mbuf::DEFAULT_DATA_ROOM;
use braid_dpdk::{Eal, Mbuf, Mempool, Port, PortConfig, BURST};

#[derive(Default, Debug)]
struct Counters {
    rx: [u64; 2],
    tx: [u64; 2],
    tx_full: [u64; 2],
    bytes: [u64; 2],
}

fn main() {
    if let Err(e) = run() {
        eprintln!("l2fwd: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").ok_or("usage: l2fwd [--seconds N] [--idle-us N] -- <EAL args>")?;
    let (ours, eal_args) = (&args[..split], &args[split + 1..]);
    let mut seconds = None;
    let mut idle_us = 100u64;
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--seconds" => seconds = Some(v.parse::<u64>()?),
            "--idle-us" => idle_us = v.parse()?,
            _ => return Err(format!("unknown option {a}").into()),
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    let eal = Eal::init(eal_args)?;
    eal.remove_runtime_dir_at_exit();
    let names = Port::names();
    if names.len() < 2 {
        return Err(format!("need two ports, EAL made {names:?} (add two --vdev)").into());
    }
    let pool = Mempool::new("l2fwd_pool", 8191, DEFAULT_DATA_ROOM)?;
    let mut ports = [Port::by_name(&names[0])?, Port::by_name(&names[1])?];
    let cfg = PortConfig { rx_desc: 1024, tx_desc: 1024, ..Default::default() };
    for p in ports.iter_mut() {
        p.configure(&cfg, &[&pool])?;
        p.start()?;
        eprintln!("l2fwd: {} ({}) offloads {:?}", p.info().name, p.info().driver, p.offloads());
    }
    let mut rxq = [ports[0].rx_queue(0)?, ports[1].rx_queue(0)?];
    let mut txq = [ports[0].tx_queue(0)?, ports[1].tx_queue(0)?];
    eprintln!("l2fwd: forwarding {} <-> {}", names[0], names[1]);

    let mut c = Counters::default();
    let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut idle_polls = 0u32;
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let mut moved = 0;
        for from in 0..2 {
            let n = rxq[from].rx_burst(&mut burst, BURST);
            if n == 0 {
                continue;
            }
            moved += n;
            c.rx[from] += n as u64;
            c.bytes[from] += burst.iter().map(|m| m.pkt_len() as u64).sum::<u64>();
            let sent = txq[1 - from].tx_all(&mut burst, 64);
            c.tx[1 - from] += sent as u64;
            c.tx_full[1 - from] += burst.len() as u64;
            burst.clear(); // frees what the port would not take (counted above)
        }
        // Idle back-off: after ~1000 empty polls, sleep between polls. A busy
        // port never reaches this branch.
        if moved == 0 {
            idle_polls = idle_polls.saturating_add(1);
            if idle_polls > 1000 {
                std::thread::sleep(Duration::from_micros(idle_us));
            }
        } else {
            idle_polls = 0;
        }
    }
    let stats = [ports[0].stats(), ports[1].stats()];
    println!(
        "{{\"rx\":[{},{}],\"tx\":[{},{}],\"dropped_tx_full\":[{},{}],\"rx_bytes\":[{},{}],\"port_imissed\":[{},{}]}}",
        c.rx[0], c.rx[1], c.tx[0], c.tx[1], c.tx_full[0], c.tx_full[1], c.bytes[0], c.bytes[1],
        stats[0].imissed, stats[1].imissed
    );
    let _ = (rxq, txq); // queues go before their ports close
    for p in ports {
        p.close();
    }
    drop(pool);
    eal.cleanup();
    Ok(())
}
