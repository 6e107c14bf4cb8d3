//! `braid-dataplane`: the process that owns the NICs. Loads the tables from
//! a JSON file, starts EAL (vdevs with --no-pci, or an -a allow-list), sets
//! the ports up, runs a worker, writes counters to a stats file while it
//! runs and prints them on exit. SIGINT/SIGTERM stop it cleanly: workers
//! stop, held packets are delivered, ports close, exit 0.
//!
//! usage: braid-dataplane --config FILE [--stats-file PATH]
//!            [--stats-interval-ms N] [--idle-us N] [--seconds N] -- <EAL args>

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_dataplane::config::{Config, Tables};
use braid_dataplane::gateway::{outbound_sas, worker_setup, PortPlan};
use braid_dataplane::report;
use braid_dataplane::worker::Worker;
use braid_dpdk::{Eal, Mempool, Port, PortConfig};

struct Args {
    config: String,
    stats_file: Option<String>,
    stats_interval: Duration,
    idle_us: u64,
    seconds: Option<u64>,
    eal: Vec<String>,
}

const USAGE: &str = "usage: braid-dataplane --config FILE [--stats-file PATH] [--stats-interval-ms N] [--idle-us N] [--seconds N] -- <EAL args>";

fn parse_args() -> Result<Args, String> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let split = all.iter().position(|a| a == "--").ok_or(USAGE)?;
    let mut a = Args {
        config: String::new(),
        stats_file: None,
        stats_interval: Duration::from_secs(1),
        idle_us: 50,
        seconds: None,
        eal: all[split + 1..].to_vec(),
    };
    let mut it = all[..split].iter();
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value; {USAGE}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{k}: not a number: {v:?}"));
        match k.as_str() {
            "--config" => a.config = v.clone(),
            "--stats-file" => a.stats_file = Some(v.clone()),
            "--stats-interval-ms" => a.stats_interval = Duration::from_millis(num(v)?),
            "--idle-us" => a.idle_us = num(v)?,
            "--seconds" => a.seconds = Some(num(v)?),
            _ => return Err(format!("unknown option {k}; {USAGE}")),
        }
    }
    if a.config.is_empty() {
        return Err(format!("--config is required; {USAGE}"));
    }
    Ok(a)
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("braid-dataplane: {e}");
            std::process::exit(1);
        }
    }
}

fn write_stats(path: &str, json: &str) {
    let tmp = format!("{path}.tmp");
    if std::fs::write(&tmp, json).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let config = Config::load(&args.config).map_err(|e| format!("{}: {e}", args.config))?;
    let tables = Arc::new(Tables::from_config(&config).map_err(|e| format!("{}: {e}", args.config))?);
    let plan = PortPlan::new(&tables)?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }

    let eal = Eal::init(&args.eal).map_err(|e| e.to_string())?;
    eal.remove_runtime_dir_at_exit();
    // Mbufs big enough for the largest frame any port carries, plus room to
    // grow it by the outer headers and ESP trailer in place.
    let max_mtu = tables.ports.iter().map(|p| p.mtu as usize).max().unwrap_or(1500);
    let data_room = (128 + 14 + max_mtu + 128).max(braid_dpdk::mbuf::DEFAULT_DATA_ROOM as usize) as u16;
    let pool = Arc::new(Mempool::new("braid_pool", 16383, data_room).map_err(|e| e.to_string())?);

    let mut ports = Vec::new();
    for &i in std::iter::once(&plan.lan).chain(plan.wans.iter()) {
        let p = &tables.ports[i];
        let mut port = Port::by_name(&p.device).map_err(|e| format!("port {:?}: {e}", p.name))?;
        let cfg = PortConfig { rx_desc: 1024, tx_desc: 1024, mtu: Some(p.mtu), ..Default::default() };
        port.configure(&cfg, &[&pool]).map_err(|e| format!("port {:?}: {e}", p.name))?;
        port.start().map_err(|e| format!("port {:?}: {e}", p.name))?;
        eprintln!("braid-dataplane: port {} = {} ({}), offloads {:?}", p.name, p.device, port.info().driver, port.offloads());
        ports.push((i, port));
    }
    let offload = |i: usize| ports.iter().any(|(j, p)| *j == i && p.offloads().tx_ipv4_cksum);
    let sas = outbound_sas(&tables);
    let setup = worker_setup(&tables, &plan, &sas, 0, true, offload)?;
    let q = |k: usize| -> Result<_, String> {
        let p = &ports[k].1;
        Ok((p.rx_queue(0).map_err(|e| e.to_string())?, p.tx_queue(0).map_err(|e| e.to_string())?))
    };
    let lan_q = q(0)?;
    let wan_q = (1..ports.len()).map(q).collect::<Result<Vec<_>, _>>()?;
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as u64;
    let mut worker = Worker::new(setup, pool.clone(), lan_q, wan_q, now())?;
    eprintln!("braid-dataplane: running ({} bundle(s), {} tunnel(s))", tables.bundles.len(), tables.bundles.iter().map(|b| b.tunnels.len()).sum::<usize>());

    let deadline = args.seconds.map(|s| t0 + Duration::from_secs(s));
    let mut next_stats = t0 + args.stats_interval;
    let mut idle = 0u32;
    let mut polls = 0u32;
    while !stop.load(Ordering::Relaxed) {
        polls = polls.wrapping_add(1);
        if worker.poll(now()) == 0 {
            // Idle back-off: after 1000 empty polls, sleep between polls; a
            // busy worker never gets here.
            idle = idle.saturating_add(1);
            if idle > 1000 {
                std::thread::sleep(Duration::from_micros(args.idle_us));
            }
        } else {
            idle = 0;
        }
        // Look at the wall clock every 256 polls (or every idle poll).
        if idle > 1000 || polls & 0xff == 0 {
            let t = Instant::now();
            if deadline.is_some_and(|d| t >= d) {
                break;
            }
            if t >= next_stats {
                next_stats = t + args.stats_interval;
                if let Some(path) = &args.stats_file {
                    write_stats(path, &report::json(&tables, &worker.counters(), &worker.paths_alive(), t0.elapsed().as_secs_f64()));
                }
            }
        }
    }
    worker.drain();
    let json = report::json(&tables, &worker.counters(), &worker.paths_alive(), t0.elapsed().as_secs_f64());
    if let Some(path) = &args.stats_file {
        write_stats(path, &json);
    }
    println!("{json}");
    drop(worker);
    for (_, p) in ports {
        p.close();
    }
    drop(pool);
    eal.cleanup();
    Ok(())
}
