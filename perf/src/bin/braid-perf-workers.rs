//! How gateway B's receive side (WAN -> LAN: classify, hand-off to the
//! tunnel's owner, decrypt, anti-replay, hand-off to the stream's owner,
//! re-order, unpack) scales with its workers, on real lcores in parallel.
//!
//! Gateway A (`--sender-workers` workers, one sender stream each) first
//! turns `--packets` inner packets of `--size` bytes into ESP frames, on one
//! thread; the frames are stored, in mbufs, per WAN RX queue of B (the
//! queue of each frame is what a NIC's RSS over the outer UDP ports would
//! pick, or with `--steer owner` the queue of the tunnel's owner, as an
//! `rte_flow` rule per tunnel port would). Gateway B (`--workers` workers,
//! each on its own lcore) then runs. The NIC is emulated by whichever worker
//! takes its lock before a poll: it releases the next frames in their
//! order of arrival into their queues' RX rings (net_ring, `--rx-ring`
//! frames each) until a ring is full, so the frames arrive at the pace the
//! workers together sustain and no queue runs ahead of the others (a lock
//! and a ring enqueue per frame are the emulation's cost, counted). B
//! delivers to a `net_null` LAN port that frees what it is given. Reported:
//! wall-clock time from the start of B's workers until the last one has
//! nothing left, inner packets delivered per second, and what was handed
//! between B's workers. Needs `-l` with `--workers` lcores.
//!
//! usage: braid-perf-workers [--workers N] [--sender-workers N] [--size FRAME_BYTES]
//!                           [--packets N] [--tunnels N] [--steer rss|owner] [--rx-ring N]
//!                           [--nat on|off]
//!
//! `--nat on`: B forwards the flows' destination port to a host behind it
//! (DNAT), so every packet goes through the inbound NAT on the worker whose
//! shard holds its session, handed there when another worker delivered it.
//!                           -- <EAL args with --no-pci>

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_dataplane::config::{Config, Tables};
use braid_dataplane::counters::WorkerCounters;
use braid_dataplane::gateway::{outbound_sas, PortPlan};
use braid_dataplane::lab::traffic::{ip_packet, Family, Flow, L4};
use braid_dataplane::lab::{self, TICK};
use braid_dataplane::worker::{handoff, Worker, WorkerSetup};
use braid_dpdk::ring_port::RingPair;
use braid_dpdk::{Eal, Mbuf, Mempool, Port, PortConfig, BURST};

fn main() {
    if let Err(e) = run() {
        eprintln!("braid-perf-workers: {e}");
        std::process::exit(1);
    }
}

/// The RSS queue of a WAN frame: a hash of the outer UDP ports.
fn rss_queue(f: &[u8], queues: usize) -> usize {
    if f.len() < 38 {
        return 0;
    }
    let (sp, dp) = (u16::from_be_bytes([f[34], f[35]]) as u32, u16::from_be_bytes([f[36], f[37]]) as u32);
    (((sp.wrapping_mul(31) ^ dp.wrapping_mul(7)).wrapping_mul(2_654_435_761)) >> 16) as usize % queues
}

struct Side {
    workers: Vec<Worker>,
    tables: Tables,
}

/// A gateway of `n` workers on `lan` and `wan` (configured here).
#[allow(clippy::too_many_arguments)]
fn gateway(side_a: bool, n: u16, lan: &mut Port, wan: &mut Port, pool: &Arc<Mempool>, tunnels: usize, tag: &str, nat: bool) -> Result<Side, String> {
    let json = lab::config_json(side_a, (&lan.info().name, &wan.info().name), "bundle", &vec![1; tunnels], 32, 1500);
    let mut doc: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    if nat && !side_a {
        // B forwards the server's port to a host behind it: every packet
        // delivered goes through the inbound NAT, on the worker that owns
        // its session (the hash of its remote endpoint).
        doc["nat"] = serde_json::json!({"dnat": [{"name": "srv", "external": "10.2.0.1", "protocol": "udp", "port": 5201, "internal": "10.2.0.2"}]});
    }
    let tables = Tables::from_config(&Config::from_json_str(&doc.to_string()).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let cfg = PortConfig { rx_queues: n, tx_queues: n, rx_desc: 1024, tx_desc: 1024, steered_queues: true, ..Default::default() };
    for p in [&mut *lan, &mut *wan] {
        p.configure(&cfg, &[pool]).map_err(|e| e.to_string())?;
        p.start().map_err(|e| e.to_string())?;
    }
    let plan = PortPlan::new(&tables)?;
    let sas = outbound_sas(&tables);
    let mut workers = Vec::new();
    for (id, h) in handoff::mesh(tag, n, 16384)?.into_iter().enumerate() {
        let id = id as u16;
        // B's probes would go unanswered here (A is gone) and its paths be
        // declared dead: no prober on B, every path stays alive.
        let nat = braid_dataplane::gateway::nat_setup(&tables, n)?;
        let setup = WorkerSetup {
            workers: n,
            ..braid_dataplane::gateway::worker_setup_with_nat(&tables, &plan, &sas, nat, id, id == 0 && side_a, |_| Default::default())?
        };
        let q = |p: &Port| -> Result<_, String> { Ok((p.rx_queue(id).map_err(|e| e.to_string())?, p.tx_queue(id).map_err(|e| e.to_string())?)) };
        let w = Worker::new(setup, pool.clone(), q(lan)?, vec![q(wan)?], 0)?.with_handoff(h)?;
        workers.push(w);
    }
    Ok(Side { workers, tables })
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").ok_or("missing -- before EAL args")?;
    let (ours, eal_args) = (&args[..split], &args[split + 1..]);
    let (mut workers, mut senders, mut size, mut packets, mut tunnels, mut owner_steer) = (2u16, 0u16, 64usize, 1_000_000u64, 4usize, false);
    let mut rx_ring = 1024usize;
    let mut nat = false;
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--workers" => workers = v.parse()?,
            "--sender-workers" => senders = v.parse()?,
            "--size" => size = v.parse()?,
            "--packets" => packets = v.parse()?,
            "--tunnels" => tunnels = v.parse()?,
            "--steer" => owner_steer = v == "owner",
            "--rx-ring" => rx_ring = v.parse()?,
            "--nat" => nat = v == "on",
            _ => return Err(format!("unknown option {a}").into()),
        }
    }
    let senders = if senders == 0 { workers } else { senders };
    let mut eal_args = eal_args.to_vec();
    eal_args.push("--vdev=net_null0,no-rx=1".into());
    let eal = Eal::init(&eal_args)?;
    eal.remove_runtime_dir_at_exit();
    if eal.worker_lcores().len() + 1 < usize::from(workers) {
        return Err(format!("--workers {workers} needs {workers} lcores (-l)").into());
    }

    // A: the frames.
    let pool_a = Arc::new(Mempool::new("pw_a", 65535, 9400)?);
    let (pair_alan, mut gen, mut alan) = RingPair::with_queues("pw_alan", 4096, senders)?;
    let (pair_awan, mut awan, mut mid) = RingPair::with_queues("pw_awan", 4096, senders)?;
    let mut a = gateway(true, senders, &mut alan, &mut awan, &pool_a, tunnels, "pw_ha", false)?;
    let cfg = PortConfig { rx_queues: senders, tx_queues: senders, rx_desc: 1024, tx_desc: 1024, steered_queues: true, ..Default::default() };
    for p in [&mut gen, &mut mid] {
        p.configure(&cfg, &[&pool_a])?;
        p.start()?;
    }
    // 64 UDP flows to one server behind B (10.2.0.1:5201).
    let flows: Vec<Flow> = (0..64u32)
        .map(|i| Flow { dst4: std::net::Ipv4Addr::new(10, 2, 0, 1), ..Flow::a_to_b(i, Family::V4, L4::Udp) })
        .collect();
    let templates: Vec<Vec<u8>> = flows.iter().map(|f| ip_packet(f, 0, size)).collect();
    let inner_len = templates[0].len();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let (mut sent, mut now, mut v) = (0u64, 0u64, Vec::with_capacity(BURST));
    let gen_q: Vec<_> = (0..senders).map(|q| gen.tx_queue(q)).collect::<Result<_, _>>()?;
    let mid_q: Vec<_> = (0..senders).map(|q| mid.rx_queue(q)).collect::<Result<_, _>>()?;
    let (mut gen_q, mut mid_q) = (gen_q, mid_q);
    let mut idle = 0;
    let mut per_queue = vec![0usize; usize::from(senders)];
    while idle < 100 {
        for (q, tx) in gen_q.iter_mut().enumerate() {
            for _ in 0..BURST {
                if sent >= packets {
                    break;
                }
                // RSS on the inner flow: flow i to A's queue i mod senders.
                // Each of A's queues sends its flows (q, q + senders, ...) in turn.
                per_queue[q] += 1;
                let f = (per_queue[q] * usize::from(senders) + q) % flows.len();
                let mut m = Mbuf::alloc(&pool_a).ok_or("pool A empty")?;
                let b = m.append(14 + templates[f % flows.len()].len()).ok_or("mbuf")?;
                b[0..6].copy_from_slice(&lab::mac(lab::A_LAN_MAC));
                b[6..12].copy_from_slice(&lab::mac(lab::A_HOST_MAC));
                b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                b[14..].copy_from_slice(&templates[f % flows.len()]);
                v.push(m);
                sent += 1;
            }
            tx.tx_all(&mut v, 1000);
            v.clear();
        }
        now += TICK;
        for w in &mut a.workers {
            w.poll(now);
        }
        let before = frames.len();
        for rx in &mut mid_q {
            while rx.rx_burst(&mut v, BURST) > 0 {
                frames.extend(v.drain(..).map(|m| m.data().to_vec()));
            }
        }
        idle = if frames.len() == before && sent >= packets { idle + 1 } else { 0 };
    }
    let encapsulated: u64 = a.workers.iter().map(|w| w.counters().encapsulated).sum();
    drop(gen_q);
    drop(mid_q);
    drop(a);
    for p in [gen, alan, awan, mid] {
        p.close();
    }
    drop((pair_alan, pair_awan));

    // B: the receiver under test.
    let pool_b = Arc::new(Mempool::new("pw_b", (frames.len() as u32 + 65536).next_power_of_two() - 1, 2176 + 128)?);
    let (pair_bwan, mut feed, mut bwan) = RingPair::with_queues("pw_bwan", (rx_ring as u32 + 1).next_power_of_two(), workers)?;
    let mut blan = Port::by_name("net_null0")?;
    let b = gateway(false, workers, &mut blan, &mut bwan, &pool_b, tunnels, "pw_hb", nat)?;
    let cfg = PortConfig { rx_queues: workers, tx_queues: workers, rx_desc: 1024, tx_desc: 1024, steered_queues: true, ..Default::default() };
    feed.configure(&cfg, &[&pool_b])?;
    feed.start()?;
    let mut arrivals: std::collections::VecDeque<(usize, Mbuf)> = Default::default();
    let mut handed_to_owner = 0u64;
    for f in &frames {
        let owner = usize::from(handoff::tunnel_owner(u16::from_be_bytes([f[36], f[37]]), workers));
        let q = if owner_steer { owner } else { rss_queue(f, usize::from(workers)) };
        handed_to_owner += u64::from(q != owner);
        let mut m = Mbuf::alloc(&pool_b).ok_or("pool B empty")?;
        m.append(f.len()).ok_or("mbuf")?.copy_from_slice(f);
        arrivals.push_back((q, m));
    }
    let feeds: Vec<_> = (0..workers).map(|q| feed.tx_queue(q)).collect::<Result<_, _>>()?;
    let nic = Arc::new(std::sync::Mutex::new((arrivals, feeds)));

    // B's workers in parallel: each polls until it and the rings are idle.
    let go = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    type Nic = Arc<std::sync::Mutex<(std::collections::VecDeque<(usize, Mbuf)>, Vec<braid_dpdk::TxQueue>)>>;
    let body = move |mut w: Worker, nic: Nic, go: Arc<AtomicBool>| {
        let mut v: Vec<Mbuf> = Vec::with_capacity(1);
        while !go.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let start = Instant::now();
        let clock = Instant::now();
        let (mut idle, mut last_work) = (0u32, start);
        while idle < 200_000 {
            // The NIC: the next frames, in order, until a ring is full.
            if let Ok(mut g) = nic.try_lock() {
                let (arrivals, queues) = &mut *g;
                while let Some((q, m)) = arrivals.pop_front() {
                    v.push(m);
                    queues[q].tx_burst(&mut v);
                    if let Some(m) = v.pop() {
                        arrivals.push_front((q, m));
                        break;
                    }
                }
            }
            let n = w.poll(clock.elapsed().as_nanos() as u64 + 1);
            if n == 0 {
                idle += 1;
            } else {
                idle = 0;
                last_work = Instant::now();
            }
        }
        w.drain();
        (w, start, last_work)
    };
    let mut b_workers = b.workers.into_iter();
    let first = b_workers.next().expect("one worker");
    let lcores = eal.worker_lcores();
    let mut handles = Vec::new();
    for (i, w) in b_workers.enumerate() {
        let (g, n) = (go.clone(), nic.clone());
        handles.push(braid_dpdk::launch(&eal, lcores[i], move || body(w, n, g))?);
    }
    std::thread::sleep(Duration::from_millis(20));
    go.store(true, Ordering::Release);
    let mut done = vec![body(first, nic.clone(), go.clone())];
    for h in handles {
        done.push(h.join()?);
    }
    let _ = t0;
    let start = done.iter().map(|d| d.1).min().expect("one");
    let end = done.iter().map(|d| d.2).max().expect("one");
    let secs = end.duration_since(start).as_secs_f64();
    let mut c = WorkerCounters::default();
    for (w, _, _) in &done {
        c.merge(&w.counters());
    }
    let per_worker: Vec<u64> = done.iter().map(|(w, _, _)| w.counters().delivered).collect();
    if std::env::var_os("BRAID_PERF_DEBUG").is_some() {
        for (w, st, end) in &done {
            eprintln!("worker {}: {:?} busy {:.4}s {:?}", w.id(), w.rx_debug(), end.duration_since(*st).as_secs_f64(), w.counters().handoff);
        }
    }
    println!(
        "{{\"bench\":\"workers\",\"workers\":{workers},\"sender_workers\":{senders},\"steer\":\"{}\",\"nat\":{nat},\"frame_bytes\":{size},\"inner_ip_bytes\":{inner_len},\"tunnels\":{tunnels},\"packets\":{encapsulated},\"esp_frames\":{},\"frames_not_at_owner\":{handed_to_owner},\"delivered\":{},\"per_worker_delivered\":{per_worker:?},\"seconds\":{secs:.4},\"mpps\":{:.3},\"gbps_inner\":{:.3},\"handoff\":{{\"esp\":{},\"frames\":{},\"deliver\":{}}},\"nat_sessions\":{},\"nat_drops\":{},\"drops\":{},\"engine_drops\":{}}}",
        if owner_steer { "owner" } else { "rss" },
        frames.len(),
        c.delivered,
        c.delivered as f64 / secs / 1e6,
        c.delivered as f64 * inner_len as f64 * 8.0 / secs / 1e9,
        c.handoff.esp_out,
        c.handoff.frames_out,
        c.handoff.deliver_out,
        c.nat.sessions,
        c.nat.in_dropped() + c.nat.out_dropped(),
        named(&c.drops.named()),
        named(&c.engine.named()),
    );
    let _ = b.tables;
    drop(done);
    drop(nic);
    for p in [feed, bwan, blan] {
        p.close();
    }
    drop(pair_bwan);
    drop((pool_a, pool_b));
    eal.cleanup();
    Ok(())
}

/// Counters by name as a JSON object.
fn named(v: &[(&str, u64)]) -> String {
    let fields: Vec<String> = v.iter().map(|(n, c)| format!("\"{n}\":{c}")).collect();
    format!("{{{}}}", fields.join(","))
}
