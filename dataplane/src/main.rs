//! `braid-dataplane`: the process that owns the NICs. Takes its tables from
//! a JSON file, from the control process over shared memory (`--shm`), or
//! both (the file first, then whatever the control process pushes). Starts
//! EAL (vdevs with --no-pci, or an -a allow-list), sets the ports up with a
//! queue pair per worker, runs `--workers` workers (worker 0 on the main
//! lcore, the others on EAL's worker lcores), publishes counters to a stats segment (`--stats`) and/or a JSON
//! file while it runs and prints them on exit. A first document from the
//! control process whose ports cannot be set up is rejected, and the
//! process waits for one with other ports, then starts itself again (same
//! pid; EAL cannot start twice in one process) to set them up; after 30 s
//! without one, it starts again to try the same ports. SIGINT/SIGTERM stop it
//! cleanly: workers stop, held packets are delivered, ports close, exit 0.
//!
//! usage: braid-dataplane [--config FILE] [--shm PATH] [--stats PATH]
//!            [--seq-state FILE] [--stats-file PATH] [--stats-interval-ms N] [--idle-us N]
//!            [--idle-max-us N] [--workers N] [--seconds N] -- <EAL args>
//!
//! An idle worker backs off: after 1000 empty polls it sleeps `--idle-us`
//! (default 50) between polls, and after 100 ms without user traffic
//! (a live peer's liveness probes and keepalives do not count)
//! `--idle-max-us` (default 500, at least `--idle-us`; both at most
//! 1000000): a quiet gateway
//! takes a few percent of a core, and the first packets after a silence
//! wait at most that long, plus the timer's slack (a 1024-descriptor RX
//! ring holds that much of ~1.8 Mpps).

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_dataplane::config::{Config, Tables};
use braid_dataplane::control::{self, ControlConfig, Exchange, SaRegistry, Snapshot};
use braid_dataplane::gateway::{self, worker_setup_with_nat, PortPlan, PortTx};
use braid_dataplane::counters::WorkerCounters;
use braid_dataplane::worker::{handoff, KernelTap, Worker, WorkerSetup};
use braid_shm::stats::StatsWriter;
use braid_dataplane::idle::{Backoff, Traffic};
use nix::sys::signal;
use braid_dataplane::{report, sas, stats};
use braid_dpdk::{Eal, Mempool, Port, PortConfig, PortId, PortStats};

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
    idle_max_us: u64,
    seconds: Option<u64>,
    workers: u16,
    eal: Vec<String>,
}

const USAGE: &str = "usage: braid-dataplane [--config FILE] [--shm PATH] [--stats PATH] [--seq-state FILE] [--stats-file PATH] [--stats-interval-ms N] [--idle-us N] [--idle-max-us N] [--workers N] [--seconds N] -- <EAL args>";

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
        idle_max_us: 500,
        seconds: None,
        workers: 1,
        eal: all[split + 1..].to_vec(),
    };
    let mut it = all[..split].iter();
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value; {USAGE}"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{k}: not a number: {v:?}"));
        // A worker asleep longer than a second would also be slow to stop.
        let idle = |us: u64| if us <= 1_000_000 { Ok(us) } else { Err(format!("{k}: at most 1000000 (1 s), not {us}")) };
        match k.as_str() {
            "--config" => a.config = Some(v.clone()),
            "--shm" => a.shm = Some(v.into()),
            "--seq-state" => a.seq_state = Some(v.into()),
            "--stats" => a.stats = Some(v.into()),
            "--stats-file" => a.stats_file = Some(v.clone()),
            "--stats-interval-ms" => a.stats_interval = Duration::from_millis(num(v)?),
            "--idle-us" => a.idle_us = idle(num(v)?)?,
            "--idle-max-us" => a.idle_max_us = idle(num(v)?)?,
            "--seconds" => a.seconds = Some(num(v)?),
            "--workers" => {
                a.workers = u16::try_from(num(v)?).ok().filter(|w| (1..=64).contains(w)).ok_or_else(|| format!("--workers: 1 to 64, not {v}"))?
            }
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

/// Runs `ip` (iproute2) with `args`.
fn ip(args: &[String]) -> Result<(), String> {
    let out = std::process::Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e} (is iproute2 installed?)", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// Keeps the kernel from giving a port's tap IPv6 addresses of its own
/// (before the tap comes up): no link-local address by its generation mode
/// (a stable privacy one would differ from the port's), no addresses from
/// router advertisements. The port's own are given by [`give_addresses`].
fn quiet_ipv6(iface: &str, p: &braid_dataplane::config::Port) -> Result<(), String> {
    if p.ipv6.is_none() {
        return Ok(());
    }
    for (knob, value) in [("autoconf", "0"), ("accept_ra", "0")] {
        let path = format!("/proc/sys/net/ipv6/conf/{iface}/{knob}");
        std::fs::write(&path, value).map_err(|e| format!("{path}: {e}"))?;
    }
    ip(&["link", "set", "dev", iface, "addrgenmode", "none"].map(String::from))
}

/// Puts the port's addresses on its kernel tap (with `ip`, iproute2), so
/// the kernel's sockets (sshd, bird, an IKE daemon) answer on them. IPv6
/// without duplicate address detection: the addresses are the port's own.
/// With IPv6, the tap's link-local address is exactly the one the
/// dataplane answers for (`config::link_local` of the port's MAC), and the
/// only one ([`quiet_ipv6`] ran before the tap came up; one made before
/// is flushed anyway).
fn give_addresses(iface: &str, p: &braid_dataplane::config::Port) -> Result<(), String> {
    let args = |s: String| s.split(' ').map(String::from).collect::<Vec<String>>();
    let mut cmds: Vec<Vec<String>> = Vec::new();
    if let Some(a) = &p.ipv4 {
        cmds.push(args(format!("-4 addr replace {}/{} dev {iface}", a.addr, a.prefix_len)));
    }
    if let Some(a) = &p.ipv6 {
        let ll = braid_dataplane::config::link_local(p.mac);
        cmds.push(args(format!("-6 addr flush dev {iface} scope link")));
        cmds.push(args(format!("-6 addr replace {ll}/64 dev {iface} nodad")));
        cmds.push(args(format!("-6 addr replace {}/{} dev {iface} nodad", a.addr, a.prefix_len)));
    }
    cmds.push(args(format!("link set dev {iface} up")));
    cmds.iter().try_for_each(|c| ip(c))
}

fn n_tunnels(t: &Tables) -> usize {
    t.bundles.iter().map(|b| b.tunnels.len()).sum()
}

/// A worker's counters, paths alive and remotes, as of its last stats
/// interval.
type Published = (WorkerCounters, Vec<Vec<bool>>, Vec<Vec<std::net::SocketAddr>>);

/// What every worker's loop shares (read-only, but for `published`).
struct Shared {
    /// Each configured port's DPDK port, in the tables' order (for its
    /// own counters).
    nic: Vec<Option<PortId>>,
    /// The ports' own counters as last read, every 100 ms, by a thread of
    /// their own (on an i40e a read is ~100 register reads: no worker
    /// should stall on it).
    nic_now: Mutex<Vec<PortStats>>,
    stop: Arc<AtomicBool>,
    exchange: Arc<Exchange>,
    plan: PortPlan,
    port_tx: Vec<PortTx>,
    t0: Instant,
    idle_us: u64,
    idle_max_us: u64,
    /// When a worker last saw user traffic (idle polls only).
    traffic: Traffic,
    deadline: Option<Instant>,
    stats_interval: Duration,
    stats_file: Option<String>,
    workers: u16,
    wan_rss: Vec<Option<Arc<braid_dpdk::rss::RssSteering>>>,
    /// Each worker's counters as of its last stats interval, for worker 0's
    /// JSON file (a lock per interval, never per packet).
    published: Mutex<Vec<Option<Published>>>,
}

impl Shared {
    /// The ports' own counters now, in the tables' port order.
    fn nic_stats(&self) -> Vec<PortStats> {
        self.nic.iter().map(|p| p.map(PortId::stats).unwrap_or_default()).collect()
    }
}

/// One worker's loop: new tables between bursts, a poll, idle back-off,
/// its counters to its slot of the stats segment. `mine`: the `seq` of
/// the snapshot it runs. Returns when `stop` is set or the deadline passes.
fn run_worker(mut worker: Worker, mut tables: Arc<Tables>, mut mine: u64, mut writer: Option<StatsWriter>, sh: &Shared) -> (Worker, Arc<Tables>, Option<StatsWriter>) {
    let id = worker.id();
    let t0 = sh.t0;
    let now = || t0.elapsed().as_nanos() as u64;
    let offload = |i: usize| sh.port_tx.get(i).copied().unwrap_or_default();
    let mut next_stats = t0 + sh.stats_interval;
    let mut next_segment = t0;
    let (mut cbuf, mut gbuf) = (Vec::new(), Vec::new());
    let mut nic = Vec::new();
    let mut backoff = Backoff::new(sh.idle_us, sh.idle_max_us, Instant::now());
    let mut settle = false;
    let mut polls = 0u32;
    while !sh.stop.load(Ordering::Relaxed) {
        polls = polls.wrapping_add(1);
        if sh.exchange.changed(mine) {
            // Tunnels the tables before moved here: settled first, if every
            // worker got that far (their windows' tops are published).
            if settle && sh.exchange.all_seen(mine) {
                worker.settle_moved_windows();
                settle = false;
            }
            // New tables from the control thread: applied between bursts.
            let snap = sh.exchange.current();
            let t = Instant::now();
            let prebuilt_nat = snap.take_nat_shard(id);
            let (setup, engines) = match snap.take_prebuilt(id) {
                Some(p) => (Ok(p.setup), p.bundles),
                None => (
                    worker_setup_with_nat(&snap.tables, &sh.plan, &snap.sas, snap.nat.clone(), id, id == 0, offload)
                        .map(|s| WorkerSetup { workers: sh.workers, wan_rss: sh.wan_rss.clone(), ..s }.with_rx_highs(&snap.rx_highs)),
                    Vec::new(),
                ),
            };
            match setup.and_then(|s| worker.apply_with(s, prebuilt_nat, engines, now())) {
                Ok(a) => {
                    if let Some(old) = worker.take_retired_nat() {
                        sh.exchange.retire(old);
                    }
                    eprintln!(
                        "braid-dataplane: generation {} live on worker {id} ({} bundle(s) kept, {} rebuilt, {} tunnel(s); worker paused {:.2} ms)",
                        snap.generation,
                        a.kept,
                        a.rebuilt,
                        n_tunnels(&snap.tables),
                        t.elapsed().as_secs_f64() * 1e3
                    );
                    tables = snap.tables.clone();
                    writer = snap.take_stats_writer(id);
                    settle = true;
                }
                Err(e) => {
                    // Not reachable with tables the control thread checked
                    // (ports unchanged, validated); the old tables keep
                    // running and the stats segment, laid out for the new
                    // ones, is left unwritten.
                    eprintln!("braid-dataplane: generation {} not applied by worker {id}: {e}", snap.generation);
                    writer = None;
                }
            }
            mine = snap.seq();
            drop(snap);
            sh.exchange.ack(id, mine);
            next_segment = Instant::now();
        }
        // Idle back-off (`braid_dataplane::idle`): sleeps between empty
        // polls, longer after a while without user traffic on any worker.
        // A busy worker never sleeps.
        if worker.poll(now()) == 0 {
            if backoff.empty_poll() {
                std::thread::sleep(backoff.sleep_for(worker.data_packets(), &sh.traffic, Instant::now()));
            }
        } else if backoff.sleeping() {
            backoff.woke(worker.data_packets(), &sh.traffic, Instant::now());
        } else {
            backoff.busy();
        }
        // Look at the wall clock every 256 polls (or every idle poll).
        if backoff.sleeping() || polls & 0xff == 0 {
            let t = Instant::now();
            if sh.deadline.is_some_and(|d| t >= d) {
                break;
            }
            // A busy worker's user traffic, for the others' back-off.
            backoff.tick(worker.data_packets(), &sh.traffic, t);
            // Tunnels that came here with new tables: settled once every
            // worker runs them (their previous owners published their
            // windows' tops when they took the tables).
            if settle && sh.exchange.all_seen(mine) {
                worker.settle_moved_windows();
                settle = false;
            }
            if t >= next_segment {
                next_segment = t + SEGMENT_INTERVAL;
                if let Some(w) = &mut writer {
                    // The ports' own counters (read by their own thread)
                    // from worker 0 only.
                    nic.clear();
                    if id == 0 {
                        nic.extend_from_slice(&sh.nic_now.lock().unwrap_or_else(|e| e.into_inner()));
                    }
                    stats::flatten(&tables, &worker.counters(), &worker.paths_alive(), &nic, &mut cbuf, &mut gbuf);
                    w.publish(&cbuf, &gbuf);
                }
            }
            if t >= next_stats {
                next_stats = t + sh.stats_interval;
                if let Some(path) = &sh.stats_file {
                    let mut p = sh.published.lock().unwrap_or_else(|e| e.into_inner());
                    p[usize::from(id)] = Some((worker.counters(), worker.paths_alive(), worker.remotes()));
                    if id == 0 {
                        // Worker 0 writes the sum (tunnel paths and remotes
                        // as it sees them: it probes, and hears every
                        // remote learned).
                        let mut sum = WorkerCounters::default();
                        for (c, _, _) in p.iter().flatten() {
                            sum.merge(c);
                        }
                        if let Some((_, paths, remotes)) = &p[0] {
                            let nic = sh.nic_now.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            write_stats(path, &report::json(&tables, &sum, paths, remotes, &nic, t0.elapsed().as_secs_f64()));
                        }
                    }
                }
            }
        }
    }
    worker.drain();
    (worker, tables, writer)
}

/// The LAN and WAN ports (by index in `Tables::ports`) and each one's
/// kernel tap, if it has one, as [`open_ports`] opens them.
type Opened = (Vec<(usize, Port)>, Vec<Option<Port>>);

/// Opens, configures and starts the LAN and WAN ports, a queue pair per
/// worker each, and their kernel taps. On an error what was opened is
/// closed again (a net_tap's kernel interface goes with it).
fn open_ports(tables: &Tables, plan: &PortPlan, workers: u16, pool: &Mempool) -> Result<Opened, String> {
    let mut opened = (Vec::new(), Vec::new());
    let r = open_ports_into(tables, plan, workers, pool, &mut opened);
    if let Err(e) = r {
        let (ports, taps) = opened;
        ports.into_iter().for_each(|(_, p)| p.close());
        taps.into_iter().flatten().for_each(Port::close);
        return Err(e);
    }
    Ok(opened)
}

fn open_ports_into(tables: &Tables, plan: &PortPlan, workers: u16, pool: &Mempool, (ports, taps): &mut Opened) -> Result<(), String> {
    // A queue pair per worker of `desc` descriptors each; a port that
    // refuses it is closed here.
    let set_up = |mut port: Port, desc: u16, mtu: u16, what: &str| -> Result<Port, String> {
        let cfg = PortConfig {
            rx_queues: workers,
            tx_queues: workers,
            rx_desc: desc,
            tx_desc: desc,
            mtu: Some(mtu),
            steered_queues: true,
            ..Default::default()
        };
        match port.configure(&cfg, &[pool]) {
            Ok(()) => Ok(port),
            Err(e) => {
                port.close();
                Err(format!("{what}: {e}"))
            }
        }
    };
    for &i in std::iter::once(&plan.lan).chain(plan.wans.iter()) {
        let p = &tables.ports[i];
        let what = format!("port {:?}", p.name);
        let port = Port::by_name(&p.device).map_err(|e| format!("{what}: {e}"))?;
        // A queue pair per worker. A NIC spreads frames over the RX queues
        // by RSS; a vdev without RSS (memif, af_packet, tap) by its own
        // means (queue pairs, fanout, the kernel's flow hash).
        let mut port = set_up(port, 1024, p.mtu, &what)?;
        let started = port.start();
        eprintln!("braid-dataplane: port {} = {} ({}), offloads {:?}", p.name, p.device, port.info().driver, port.offloads());
        ports.push((i, port));
        started.map_err(|e| format!("{what}: {e}"))?;
    }
    for &i in std::iter::once(&plan.lan).chain(plan.wans.iter()) {
        let p = &tables.ports[i];
        let Some(name) = &p.kernel_tap else {
            taps.push(None);
            continue;
        };
        let what = format!("port {:?}: kernel tap {name:?}", p.name);
        let tap = Port::by_name(&tap_device(i)).map_err(|e| format!("{what}: {e}"))?;
        let mut tap = set_up(tap, 512, p.mtu, &what)?;
        // Before the tap comes up: the kernel makes no address of its own.
        let quiet = quiet_ipv6(name, p);
        let started = quiet.and_then(|()| tap.start().map_err(|e| e.to_string()));
        taps.push(Some(tap));
        started.and_then(|()| give_addresses(name, p)).map_err(|e| format!("{what}: {e}"))?;
        eprintln!("braid-dataplane: port {} has kernel tap {name} (frames for the gateway the dataplane does not answer)", p.name);
    }
    Ok(())
}

/// After the control process's first document failed at port set-up
/// (`reason`, already told it): waits for a document with other ports
/// and starts this program again with the same arguments to apply it (EAL,
/// already cleaned up, cannot start twice in one process). The new
/// process makes a new control segment, on which the control process
/// sends its latest document. A document with the same ports is rejected
/// at once, with the same reason. Returns when stopped (SIGINT/SIGTERM).
fn restart_for_new_ports(mut ep: control::Endpoint, stop: &AtomicBool, registry: &SaRegistry, failed: &Tables, generation: u64, reason: &str) -> Result<(), String> {
    eprintln!(
        "braid-dataplane: waiting for a document with other ports than generation {generation}'s (trying these again in {} s)",
        PORTS_RETRY.as_secs()
    );
    let check = |t: &Tables| match t.ports == failed.ports {
        true => Err(format!("the same ports as generation {generation}, which failed: {reason}")),
        false => registry.check(t),
    };
    let path = ep.path().to_path_buf();
    let next = ep.wait_first(stop, Some(Instant::now() + PORTS_RETRY), check);
    drop(ep);
    // SIGINT/SIGTERM held from here: one that comes now stays pending
    // across the exec, for the new process's handlers (`run`), instead of
    // setting a flag the exec forgets.
    let _ = signal::sigprocmask(signal::SigmaskHow::SIG_BLOCK, Some(&stop_signals()), None);
    if stop.load(Ordering::Relaxed) {
        // No segment left behind for a control process to find.
        let _ = std::fs::remove_file(&path);
        return Ok(());
    }
    match next {
        Some((next, _, _)) => eprintln!("braid-dataplane: generation {next} has other ports: starting again to set them up"),
        // A device not there yet, say: the control process sends its
        // document again to the new process.
        None => eprintln!("braid-dataplane: starting again to try generation {generation}'s ports again"),
    }
    // DPDK opened files without close-on-exec (EAL's pipes, sockets and
    // lock files): not for the new image.
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|fd| *fd > 2).collect();
        for fd in fds {
            let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        }
    }
    // execv itself, not `Command::exec`: that one clears the signal mask
    // first, delivering a held signal to this image, which then forgets it.
    use std::os::unix::ffi::OsStrExt;
    let argv: Vec<std::ffi::CString> = std::env::args_os().filter_map(|a| std::ffi::CString::new(a.as_bytes()).ok()).collect();
    let e = match nix::unistd::execv(c"/proc/self/exe", &argv) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let _ = std::fs::remove_file(&path);
    let _ = signal::sigprocmask(signal::SigmaskHow::SIG_UNBLOCK, Some(&stop_signals()), None);
    Err(format!("starting again: {e}"))
}

/// How long a first document whose ports failed waits for one with other
/// ports before the process starts again to try the same ports (a device
/// or interface that was not there yet).
const PORTS_RETRY: Duration = Duration::from_secs(30);

/// SIGINT and SIGTERM: what stops the dataplane.
fn stop_signals() -> signal::SigSet {
    let mut s = signal::SigSet::empty();
    s.add(signal::Signal::SIGINT);
    s.add(signal::Signal::SIGTERM);
    s
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("signal handler: {e}"))?;
    }
    // Started again by `restart_for_new_ports`, which held them across the
    // exec: a signal that came meanwhile is delivered now, to the handlers.
    signal::sigprocmask(signal::SigmaskHow::SIG_UNBLOCK, Some(&stop_signals()), None).map_err(|e| format!("signal mask: {e}"))?;
    let boot_id = boot_id();
    let workers = args.workers;

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
    // Outbound sequence numbers: kept on disk so a restart never reuses one
    // (and the peers' replay windows accept the restarted gateway).
    let mut registry = match &args.seq_state {
        Some(path) => SaRegistry::with_state(path)?,
        None => {
            eprintln!(
                "braid-dataplane: warning: no --seq-state: after a restart, sequence numbers start at 1 again under \
                 the same keys (peers drop the packets as replays; change the keys, or give --seq-state), and ESP \
                 captured before the restart is accepted once more"
            );
            SaRegistry::default()
        }
    };
    let (generation, doc_hash, tables) = match (&args.config, &mut endpoint) {
        (Some(path), _) => {
            let config = Config::load(path).map_err(|e| format!("{path}: {e}"))?;
            (0, 0, Tables::from_config(&config).map_err(|e| format!("{path}: {e}"))?)
        }
        (None, Some(ep)) => {
            eprintln!("braid-dataplane: waiting for tables from the control process on {}", ep.path().display());
            match ep.wait_first(&stop, None, |t| registry.check(t)) {
                Some(first) => first,
                None => {
                    // Stopped while waiting: no segment left behind.
                    let _ = std::fs::remove_file(ep.path());
                    return Ok(());
                }
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
    // EAL's threads start with SIGINT/SIGTERM held, so that only this
    // thread takes them: held here too, one stays pending across
    // `restart_for_new_ports`'s exec.
    let _ = signal::sigprocmask(signal::SigmaskHow::SIG_BLOCK, Some(&stop_signals()), None);
    let eal = Eal::init(&eal_args).map_err(|e| e.to_string());
    signal::sigprocmask(signal::SigmaskHow::SIG_UNBLOCK, Some(&stop_signals()), None).map_err(|e| format!("signal mask: {e}"))?;
    let eal = eal?;
    eal.remove_runtime_dir_at_exit();
    // Mbufs big enough for the largest frame any port carries (and a few
    // for the largest inner packet a peer may send, if bigger).
    let (data_room, jumbo_room) = gateway::pool_rooms(&tables);
    // Per worker: an RX ring and a TX ring on every port, a burst or two in
    // flight, and its stash.
    let pool_size = (usize::from(workers) + 1) * 8192 - 1;
    let pool = Arc::new(Mempool::new("braid_pool", pool_size as u32, data_room).map_err(|e| e.to_string())?);
    // Without it (no memory for it), such packets are dropped and counted
    // (`rx_no_buffer`, or `too_big` after outer reassembly or after the
    // NAT's reassembly of a LAN host's fragments; `lan_too_big` of a
    // tunnel's).
    let jumbo = jumbo_room.and_then(|room| {
        let n = (usize::from(workers) + 1) * 1024 - 1;
        match Mempool::new("braid_jumbo", n as u32, room) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                eprintln!(
                    "braid-dataplane: warning: no jumbo pool ({n} mbufs of {room} bytes: {e}): inner packets bigger \
                     than this gateway's MTUs (a peer's jumbo LAN) will be dropped"
                );
                None
            }
        }
    });
    if workers > 1 && eal.worker_lcores().len() + 1 < usize::from(workers) {
        return Err(format!(
            "--workers {workers} needs {workers} lcores, EAL has {} (give -l with one core per worker)",
            eal.worker_lcores().len() + 1
        ));
    }

    let (ports, taps) = match open_ports(&tables, &plan, workers, &pool) {
        Ok(pt) => pt,
        // The control process's first document names a device EAL does not
        // have, or one that refuses its settings: rejected, and the next
        // document awaited, not an exit (the control process would send the
        // same document to the restarted process, again and again).
        Err(reason) if generation != 0 => {
            let Some(mut ep) = endpoint else { unreachable!("generation {generation} came from the control process") };
            drop((pool, jumbo));
            eal.cleanup();
            ep.reject(generation, reason.clone());
            return restart_for_new_ports(ep, &stop, &registry, &tables, generation, &reason);
        }
        Err(e) => return Err(e),
    };
    let offload = |i: usize| ports.iter().find(|(j, _)| *j == i).map(|(_, p)| PortTx::of(p)).unwrap_or_default();
    let sas = registry.for_tables(&tables)?;
    let rx_highs = registry.inbound_highs(&tables);
    let registry = Arc::new(Mutex::new(registry));
    let keeper_stop = Arc::new(AtomicBool::new(false));
    let keeper = match &args.seq_state {
        Some(_) => Some(sas::spawn_keeper(registry.clone(), keeper_stop.clone()).map_err(|e| format!("sequence keeper: {e}"))?),
        None => None,
    };
    let nat = gateway::nat_setup(&tables, workers)?;
    let (stats_seg, writers) = match &args.stats {
        Some(path) => {
            let (seg, w) = control::stats_segment(path, &tables, workers, boot_id)?;
            seg.set_applied(generation, doc_hash);
            (Some(seg), w)
        }
        None => (None, Vec::new()),
    };
    let mut writers: Vec<Option<StatsWriter>> = writers.into_iter().map(Some).collect();
    writers.resize_with(usize::from(workers), || None);
    let exchange = Exchange::new(
        Snapshot::new(generation, tables.clone(), sas.clone(), nat.clone(), Vec::new()).with_rx_highs(rx_highs.clone()).with_doc_hash(doc_hash),
        workers,
    );
    let t0 = Instant::now();
    let now = move || t0.elapsed().as_nanos() as u64;
    // A WAN port that spreads its queues by RSS: each tunnel is owned by
    // the worker whose queue its packets reach (no ESP handed over).
    let wan_rss: Vec<Option<Arc<braid_dpdk::rss::RssSteering>>> = ports[1..].iter().map(|(_, p)| p.rss_steering().map(Arc::new)).collect();
    for ((i, _), rss) in ports[1..].iter().zip(&wan_rss) {
        if workers > 1 {
            let how = if rss.is_some() { "by RSS: each tunnel owned by the worker its packets reach" } else { "by the vdev (no RSS): tunnels owned by local port" };
            eprintln!("braid-dataplane: port {} spreads {workers} queues {how}", tables.ports[*i].name);
        }
    }
    let mut handoffs: Vec<Option<handoff::Handoff>> = handoff::mesh("braid_handoff", workers, 16384)?.into_iter().map(Some).collect();
    let mut built = Vec::with_capacity(usize::from(workers));
    for w in 0..workers {
        let q = |p: &Port| -> Result<_, String> { Ok((p.rx_queue(w).map_err(|e| e.to_string())?, p.tx_queue(w).map_err(|e| e.to_string())?)) };
        let lan_q = q(&ports[0].1)?;
        let wan_q = ports[1..].iter().map(|(_, p)| q(p)).collect::<Result<Vec<_>, _>>()?;
        let tap_queues = taps
            .iter()
            .map(|t| t.as_ref().map(|t| q(t).map(KernelTap::new)).transpose())
            .collect::<Result<Vec<_>, String>>()?;
        let setup = WorkerSetup { workers, wan_rss: wan_rss.clone(), ..worker_setup_with_nat(&tables, &plan, &sas, nat.clone(), w, w == 0, offload)? }
            .with_rx_highs(&rx_highs);
        let mut worker = Worker::new(setup, pool.clone(), lan_q, wan_q, now())?.with_kernel_taps(tap_queues)?;
        if let Some(j) = &jumbo {
            worker = worker.with_jumbo_pool(j.clone());
        }
        if let Some(h) = handoffs[usize::from(w)].take() {
            worker = worker.with_handoff(h)?;
        }
        built.push(worker);
    }
    let port_tx: Vec<PortTx> = (0..tables.ports.len()).map(offload).collect();
    let control = match endpoint {
        Some(ep) => {
            // The control thread builds new tables' setups and engines the
            // way the workers would, so a worker only swaps them in.
            let prebuild = control::Prebuild { port_tx: port_tx.clone(), clock: t0, wan_rss: wan_rss.clone() };
            Some(ep.spawn(exchange.clone(), registry.clone(), stats_seg, workers, (generation, doc_hash), Some(prebuild))?)
        }
        None => None,
    };
    eprintln!(
        "braid-dataplane: running generation {generation} ({} bundle(s), {} tunnel(s), {workers} worker(s)); AES-GCM: {}",
        tables.bundles.len(),
        n_tunnels(&tables),
        braid_tunnel::crypto::engines()
    );

    let shared = Arc::new(Shared {
        stop: stop.clone(),
        exchange: exchange.clone(),
        plan: plan.clone(),
        port_tx,
        t0,
        idle_us: args.idle_us,
        idle_max_us: args.idle_max_us,
        traffic: Traffic::new(t0),
        deadline: args.seconds.map(|s| t0 + Duration::from_secs(s)),
        stats_interval: args.stats_interval,
        stats_file: args.stats_file.clone(),
        workers,
        wan_rss: wan_rss.clone(),
        published: Mutex::new((0..workers).map(|_| None).collect()),
        nic: (0..tables.ports.len()).map(|i| ports.iter().find(|(j, _)| *j == i).map(|(_, p)| p.id())).collect(),
        nic_now: Mutex::new(Vec::new()),
    });
    // The ports' counters, read off the workers' lcores; joined before
    // the last read below (one reader at a time: some PMDs keep offsets
    // or clear on read).
    let nic_reader = {
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("braid-nic-stats".into())
            .spawn(move || {
                while !sh.stop.load(Ordering::Relaxed) {
                    let now = sh.nic_stats();
                    *sh.nic_now.lock().unwrap_or_else(|e| e.into_inner()) = now;
                    std::thread::sleep(SEGMENT_INTERVAL);
                }
            })
            .map_err(|e| format!("NIC stats thread: {e}"))?
    };
    let mut running = Vec::new();
    let mut built = built.into_iter().zip(writers).enumerate();
    let (_, (first, first_writer)) = built.next().expect("one worker at least");
    let lcores = eal.worker_lcores();
    for (w, (worker, writer)) in built {
        let (sh, tables) = (shared.clone(), tables.clone());
        let lcore = lcores[w - 1];
        let h = braid_dpdk::launch(&eal, lcore, move || run_worker(worker, tables, 0, writer, &sh))
            .map_err(|e| format!("worker {w} on lcore {}: {e}", lcore.0))?;
        running.push(h);
    }
    let (worker, tables, mut writer) = run_worker(first, tables, 0, first_writer, &shared);
    // Worker 0 is done (stopped, or its deadline): so are the others.
    stop.store(true, Ordering::Relaxed);
    let mut done = vec![(worker, tables.clone(), writer.take())];
    for h in running {
        done.push(h.join().map_err(|e| format!("worker: {e}"))?);
    }
    let mut counters = WorkerCounters::default();
    let (mut cbuf, mut gbuf) = (Vec::new(), Vec::new());
    let _ = nic_reader.join();
    let nic = shared.nic_stats();
    for (i, (w, t, wr)) in done.iter_mut().enumerate() {
        let c = w.counters();
        if let Some(wr) = wr {
            stats::flatten(t, &c, &w.paths_alive(), if i == 0 { &nic } else { &[] }, &mut cbuf, &mut gbuf);
            wr.publish(&cbuf, &gbuf);
        }
        counters.merge(&c);
    }
    let first = &done[0].0;
    let json = report::json(&tables, &counters, &first.paths_alive(), &first.remotes(), &nic, t0.elapsed().as_secs_f64());
    if let Some(path) = &args.stats_file {
        write_stats(path, &json);
    }
    println!("{json}");
    if let Some(c) = control {
        c.stop();
    }
    // The workers' last replay window tops, for the keeper's last write
    // (those of tunnels not yet settled too).
    for (w, _, _) in &done {
        w.publish_all_rx_highs();
    }
    keeper_stop.store(true, Ordering::Release);
    if let Some(k) = keeper {
        let _ = k.join();
    }
    // A control process reading the stats sees the dataplane gone.
    if let Some(p) = &args.stats {
        let _ = std::fs::remove_file(p);
    }
    drop(done);
    for (_, p) in ports {
        p.close();
    }
    for t in taps.into_iter().flatten() {
        t.close();
    }
    drop((pool, jumbo));
    eal.cleanup();
    Ok(())
}
