//! `braid-dataplane`: the process that owns the NICs. Takes its tables from
//! a JSON file, from the control process over shared memory (`--shm`), or
//! both (the file first, then whatever the control process pushes). Starts
//! EAL (vdevs with --no-pci, or an -a allow-list), sets the ports up, runs a
//! worker, publishes counters to a stats segment (`--stats`) and/or a JSON
//! file while it runs and prints them on exit. SIGINT/SIGTERM stop it
//! cleanly: workers stop, held packets are delivered, ports close, exit 0.
//!
//! usage: braid-dataplane [--config FILE] [--shm PATH] [--stats PATH]
//!            [--seq-state FILE] [--stats-file PATH] [--stats-interval-ms N] [--idle-us N]
//!            [--seconds N] -- <EAL args>

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_dataplane::config::{Config, Tables};
use braid_dataplane::control::{self, ControlConfig, Exchange, SaRegistry, Snapshot};
use braid_dataplane::gateway::{self, worker_setup_with_nat, PortPlan};
use braid_dataplane::worker::{KernelTap, Worker};
use braid_dataplane::{report, sas, stats};
use braid_dpdk::{Eal, Mempool, Port, PortConfig};

/// Large tables (NAT sessions and indexes) on transparent huge pages.
#[global_allocator]
static ALLOC: braid_dpdk::memory::HugeAdvise = braid_dpdk::memory::HugeAdvise;

struct Args {
    config: Option<String>,
    seq_state: Option<PathBuf>,
    shm: Option<PathBuf>,
    stats: Option<PathBuf>,
    stats_file: Option<String>,
    stats_interval: Duration,
    idle_us: u64,
    seconds: Option<u64>,
    eal: Vec<String>,
}

const USAGE: &str = "usage: braid-dataplane [--config FILE] [--shm PATH] [--stats PATH] [--seq-state FILE] [--stats-file PATH] [--stats-interval-ms N] [--idle-us N] [--seconds N] -- <EAL args>";

/// How often the worker publishes its counters to the stats segment.
const SEGMENT_INTERVAL: Duration = Duration::from_millis(100);

fn parse_args() -> Result<Args, String> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let split = all.iter().position(|a| a == "--").ok_or(USAGE)?;
    let mut a = Args {
        config: None,
        seq_state: None,
        shm: None,
        stats: None,
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
            "--config" => a.config = Some(v.clone()),
            "--shm" => a.shm = Some(v.into()),
            "--seq-state" => a.seq_state = Some(v.into()),
            "--stats" => a.stats = Some(v.into()),
            "--stats-file" => a.stats_file = Some(v.clone()),
            "--stats-interval-ms" => a.stats_interval = Duration::from_millis(num(v)?),
            "--idle-us" => a.idle_us = num(v)?,
            "--seconds" => a.seconds = Some(num(v)?),
            _ => return Err(format!("unknown option {k}; {USAGE}")),
        }
    }
    if a.config.is_none() && a.shm.is_none() {
        return Err(format!("--config or --shm is required; {USAGE}"));
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

/// New on every start: lets the control process tell a restarted dataplane
/// from the one it pushed to.
fn boot_id() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok() {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
}

/// The DPDK device name of port `i`'s kernel tap.
fn tap_device(i: usize) -> String {
    format!("net_tap_braid{i}")
}

fn mac_string(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Puts the port's addresses on its kernel tap (with `ip`, iproute2), so
/// the kernel's sockets (sshd, bird, an IKE daemon) answer on them. IPv6
/// without duplicate address detection: the address is the port's own.
fn give_addresses(iface: &str, p: &braid_dataplane::config::Port) -> Result<(), String> {
    let mut cmds: Vec<Vec<String>> = Vec::new();
    if let Some(a) = &p.ipv4 {
        cmds.push(vec!["-4".into(), "addr".into(), "replace".into(), format!("{}/{}", a.addr, a.prefix_len), "dev".into(), iface.into()]);
    }
    if let Some(a) = &p.ipv6 {
        cmds.push(vec!["-6".into(), "addr".into(), "replace".into(), format!("{}/{}", a.addr, a.prefix_len), "dev".into(), iface.into(), "nodad".into()]);
    }
    cmds.push(vec!["link".into(), "set".into(), "dev".into(), iface.into(), "up".into()]);
    for c in cmds {
        let out = std::process::Command::new("ip").args(&c).output().map_err(|e| format!("ip {}: {e} (is iproute2 installed?)", c.join(" ")))?;
        if !out.status.success() {
            return Err(format!("ip {}: {}", c.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    Ok(())
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }
    let boot_id = boot_id();
    const WORKERS: u16 = 1;

    // The control endpoint first: without a file, the first tables come
    // from the control process.
    let mut endpoint = match &args.shm {
        Some(shm) => Some(control::Endpoint::create(ControlConfig {
            shm: shm.clone(),
            stats: args.stats.clone(),
            capacity: 1 << 16,
            boot_id,
            ack_timeout: Duration::from_secs(5),
        })?),
        None => None,
    };
    let (generation, tables) = match (&args.config, &mut endpoint) {
        (Some(path), _) => {
            let config = Config::load(path).map_err(|e| format!("{path}: {e}"))?;
            (0, Tables::from_config(&config).map_err(|e| format!("{path}: {e}"))?)
        }
        (None, Some(ep)) => {
            eprintln!("braid-dataplane: waiting for tables from the control process on {}", ep.path().display());
            match ep.wait_first(&stop) {
                Some(first) => first,
                None => return Ok(()), // stopped while waiting
            }
        }
        (None, None) => unreachable!("checked by parse_args"),
    };
    let tables = Arc::new(tables);
    let plan = PortPlan::new(&tables)?;

    // Exception path: one DPDK net_tap per port with `kernel_tap`, the
    // kernel interface named as configured and carrying the port's MAC.
    let mut eal_args = args.eal.clone();
    for (i, p) in tables.ports.iter().enumerate() {
        if let Some(name) = &p.kernel_tap {
            eal_args.push(format!("--vdev={},iface={name},mac={}", tap_device(i), mac_string(&p.mac)));
        }
    }
    let eal = Eal::init(&eal_args).map_err(|e| e.to_string())?;
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
    let mut taps = Vec::new();
    for &i in std::iter::once(&plan.lan).chain(plan.wans.iter()) {
        let p = &tables.ports[i];
        let Some(name) = &p.kernel_tap else {
            taps.push(None);
            continue;
        };
        let what = format!("port {:?}: kernel tap {name:?}", p.name);
        let mut tap = Port::by_name(&tap_device(i)).map_err(|e| format!("{what}: {e}"))?;
        let cfg = PortConfig { rx_desc: 512, tx_desc: 512, mtu: Some(p.mtu), ..Default::default() };
        tap.configure(&cfg, &[&pool]).map_err(|e| format!("{what}: {e}"))?;
        tap.start().map_err(|e| format!("{what}: {e}"))?;
        give_addresses(name, p).map_err(|e| format!("{what}: {e}"))?;
        eprintln!("braid-dataplane: port {} has kernel tap {name} (frames for the gateway the dataplane does not answer)", p.name);
        taps.push(Some(tap));
    }
    let offload = |i: usize| ports.iter().any(|(j, p)| *j == i && p.offloads().tx_ipv4_cksum);
    // Outbound sequence numbers: kept on disk so a restart never reuses one
    // (and the peers' replay windows accept the restarted gateway).
    let mut registry = match &args.seq_state {
        Some(path) => SaRegistry::with_state(path)?,
        None => {
            eprintln!(
                "braid-dataplane: warning: no --seq-state: after a restart, sequence numbers start at 1 again under \
                 the same keys (peers drop the packets as replays; change the keys, or give --seq-state)"
            );
            SaRegistry::default()
        }
    };
    let sas = registry.for_tables(&tables)?;
    let registry = Arc::new(Mutex::new(registry));
    let keeper_stop = Arc::new(AtomicBool::new(false));
    let keeper = match &args.seq_state {
        Some(_) => Some(sas::spawn_keeper(registry.clone(), keeper_stop.clone()).map_err(|e| format!("sequence keeper: {e}"))?),
        None => None,
    };
    let nat = gateway::nat_setup(&tables, WORKERS)?;
    let setup = worker_setup_with_nat(&tables, &plan, &sas, nat.clone(), 0, true, offload)?;
    let (stats_seg, mut writers) = match &args.stats {
        Some(path) => {
            let (seg, w) = control::stats_segment(path, &tables, WORKERS, boot_id)?;
            seg.set_applied_generation(generation);
            (Some(seg), w)
        }
        None => (None, Vec::new()),
    };
    let mut writer = writers.pop();
    let exchange = Exchange::new(Snapshot::new(generation, tables.clone(), sas, nat, Vec::new()), WORKERS);
    let q = |k: usize| -> Result<_, String> {
        let p = &ports[k].1;
        Ok((p.rx_queue(0).map_err(|e| e.to_string())?, p.tx_queue(0).map_err(|e| e.to_string())?))
    };
    let lan_q = q(0)?;
    let wan_q = (1..ports.len()).map(q).collect::<Result<Vec<_>, _>>()?;
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as u64;
    let tap_queues = taps
        .iter()
        .map(|t| match t {
            Some(t) => Ok(Some(KernelTap::new((t.rx_queue(0).map_err(|e| e.to_string())?, t.tx_queue(0).map_err(|e| e.to_string())?)))),
            None => Ok(None),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut worker = Worker::new(setup, pool.clone(), lan_q, wan_q, now())?.with_kernel_taps(tap_queues)?;
    let control = match endpoint {
        Some(ep) => {
            // The control thread builds new tables' setups and engines the
            // way the worker would, so the worker only swaps them in.
            let prebuild = control::Prebuild { ip_csum_offload: (0..tables.ports.len()).map(offload).collect(), clock: t0 };
            Some(ep.spawn(exchange.clone(), registry.clone(), stats_seg, WORKERS, generation, Some(prebuild))?)
        }
        None => None,
    };
    let n_tunnels = |t: &Tables| t.bundles.iter().map(|b| b.tunnels.len()).sum::<usize>();
    eprintln!("braid-dataplane: running generation {generation} ({} bundle(s), {} tunnel(s))", tables.bundles.len(), n_tunnels(&tables));

    let mut tables = tables;
    let mut mine = generation;
    let deadline = args.seconds.map(|s| t0 + Duration::from_secs(s));
    let mut next_stats = t0 + args.stats_interval;
    let mut next_segment = t0;
    let (mut cbuf, mut gbuf) = (Vec::new(), Vec::new());
    let mut idle = 0u32;
    let mut polls = 0u32;
    while !stop.load(Ordering::Relaxed) {
        polls = polls.wrapping_add(1);
        if exchange.changed(mine) {
            // New tables from the control thread: applied between bursts.
            let snap = exchange.current();
            let t = Instant::now();
            let prebuilt_nat = snap.take_nat_shard(0);
            let (setup, engines) = match snap.take_prebuilt(0) {
                Some(p) => (Ok(p.setup), p.bundles),
                None => (worker_setup_with_nat(&snap.tables, &plan, &snap.sas, snap.nat.clone(), 0, true, offload), Vec::new()),
            };
            match setup.and_then(|s| worker.apply_with(s, prebuilt_nat, engines, now())) {
                Ok(a) => {
                    if let Some(old) = worker.take_retired_nat() {
                        exchange.retire(old);
                    }
                    eprintln!(
                        "braid-dataplane: generation {} live ({} bundle(s) kept, {} rebuilt, {} tunnel(s); worker paused {:.2} ms)",
                        snap.generation,
                        a.kept,
                        a.rebuilt,
                        n_tunnels(&snap.tables),
                        t.elapsed().as_secs_f64() * 1e3
                    );
                    tables = snap.tables.clone();
                    writer = snap.take_stats_writer(0);
                }
                Err(e) => {
                    // Not reachable with tables the control thread checked
                    // (ports unchanged, validated); the old tables keep
                    // running and the stats segment, laid out for the new
                    // ones, is left unwritten.
                    eprintln!("braid-dataplane: generation {} not applied by worker 0: {e}", snap.generation);
                    writer = None;
                }
            }
            mine = snap.generation;
            drop(snap);
            exchange.ack(0, mine);
            next_segment = Instant::now();
        }
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
            if t >= next_segment {
                next_segment = t + SEGMENT_INTERVAL;
                if let Some(w) = &mut writer {
                    stats::flatten(&tables, &worker.counters(), &worker.paths_alive(), &mut cbuf, &mut gbuf);
                    w.publish(&cbuf, &gbuf);
                }
            }
            if t >= next_stats {
                next_stats = t + args.stats_interval;
                if let Some(path) = &args.stats_file {
                    write_stats(path, &report::json(&tables, &worker.counters(), &worker.paths_alive(), &worker.remotes(), t0.elapsed().as_secs_f64()));
                }
            }
        }
    }
    worker.drain();
    let counters = worker.counters();
    if let Some(w) = &mut writer {
        stats::flatten(&tables, &counters, &worker.paths_alive(), &mut cbuf, &mut gbuf);
        w.publish(&cbuf, &gbuf);
    }
    let json = report::json(&tables, &counters, &worker.paths_alive(), &worker.remotes(), t0.elapsed().as_secs_f64());
    if let Some(path) = &args.stats_file {
        write_stats(path, &json);
    }
    println!("{json}");
    if let Some(c) = control {
        c.stop();
    }
    keeper_stop.store(true, Ordering::Relaxed);
    if let Some(k) = keeper {
        let _ = k.join();
    }
    // A control process reading the stats sees the dataplane gone.
    if let Some(p) = &args.stats {
        let _ = std::fs::remove_file(p);
    }
    drop(worker);
    for (_, p) in ports {
        p.close();
    }
    for t in taps.into_iter().flatten() {
        t.close();
    }
    drop(pool);
    eal.cleanup();
    Ok(())
}
