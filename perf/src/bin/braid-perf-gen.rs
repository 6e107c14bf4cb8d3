//! Packet generator and sink on a DPDK port, for on-box runs across
//! processes (e.g. over net_memif). The generator sends `--count` pattern
//! frames cycling through `--sizes`, retrying what the port does not take (no
//! loss at the sender); the sink checks order, length and every byte and
//! prints JSON. Exit 0 only when the sink saw every frame intact and in order.
//!
//! usage: braid-perf-gen --role tx|rx [--count N] [--sizes 64,512,1500]
//!                       [--timeout SECS] -- <EAL args with --no-pci>

use std::time::{Duration, Instant};

use braid_dpdk::mbuf::DEFAULT_DATA_ROOM;
use braid_dpdk::{Eal, Mbuf, Mempool, Port, PortConfig, BURST};
use braid_perf::pattern;

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("braid-perf-gen: {e}");
            std::process::exit(2);
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").ok_or("missing -- before EAL args")?;
    let (ours, eal_args) = (&args[..split], &args[split + 1..]);
    let (mut role, mut count, mut timeout) = (String::new(), 1_000_000u64, 30u64);
    let mut sizes = vec![64usize, 512, 1500];
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--role" => role = v.clone(),
            "--count" => count = v.parse()?,
            "--timeout" => timeout = v.parse()?,
            "--sizes" => sizes = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            _ => return Err(format!("unknown option {a}").into()),
        }
    }
    if sizes.iter().any(|&s| !(pattern::MIN_LEN..=2048).contains(&s)) {
        return Err(format!("sizes must be {}..=2048 bytes", pattern::MIN_LEN).into());
    }
    let eal = Eal::init(eal_args)?;
    eal.remove_runtime_dir_at_exit();
    let name = Port::names().into_iter().next().ok_or("no port (add a --vdev)")?;
    let pool = Mempool::new("gen_pool", 8191, DEFAULT_DATA_ROOM)?;
    let mut port = Port::by_name(&name)?;
    port.configure(&PortConfig { rx_desc: 1024, tx_desc: 1024, ..Default::default() }, &[&pool])?;
    port.start()?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while !port.link_up() {
        if Instant::now() > deadline {
            return Err(format!("{name}: link did not come up in {timeout}s").into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let ok = match role.as_str() {
        "tx" => generate(&port, &pool, count, &sizes, deadline)?,
        "rx" => sink(&port, count, &sizes, timeout)?,
        _ => return Err("--role must be tx or rx".into()),
    };
    port.close();
    drop(pool);
    eal.cleanup();
    Ok(ok)
}

fn generate(port: &Port, pool: &Mempool, count: u64, sizes: &[usize], deadline: Instant) -> Result<bool, Box<dyn std::error::Error>> {
    let mut tx = port.tx_queue(0)?;
    let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
    let (mut seq, mut retries) = (0u64, 0u64);
    let t0 = Instant::now();
    while seq < count || !burst.is_empty() {
        while burst.len() < BURST && seq < count {
            let Some(mut m) = Mbuf::alloc(pool) else { break };
            let len = pattern::size_of(seq, sizes);
            pattern::fill(m.append(len).ok_or("mbuf too small")?, seq);
            burst.push(m);
            seq += 1;
        }
        if tx.tx_burst(&mut burst) == 0 {
            retries += 1;
            if Instant::now() > deadline {
                return Err(format!("sender stuck at {seq}/{count}: peer not draining").into());
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    // Frames the port took may still sit in a shared ring (memif): closing
    // now would tear it down under the peer. Linger until the peer closes
    // the link (the sink is done) or a few seconds pass.
    let linger = Instant::now() + Duration::from_secs(5);
    while port.link_up() && Instant::now() < linger {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("{{\"role\":\"tx\",\"sent\":{count},\"seconds\":{secs:.3},\"mpps\":{:.3},\"full_retries\":{retries}}}", count as f64 / secs / 1e6);
    Ok(true)
}

fn sink(port: &Port, count: u64, sizes: &[usize], timeout: u64) -> Result<bool, Box<dyn std::error::Error>> {
    let mut rx = port.rx_queue(0)?;
    let mut burst: Vec<Mbuf> = Vec::with_capacity(BURST);
    let (mut next, mut bad, mut bytes) = (0u64, 0u64, 0u64);
    let mut t0 = None;
    let mut last = Instant::now();
    while next < count && last.elapsed() < Duration::from_secs(timeout) {
        if rx.rx_burst(&mut burst, BURST) == 0 {
            continue;
        }
        t0.get_or_insert_with(Instant::now);
        last = Instant::now();
        for m in burst.drain(..) {
            if !(m.is_contiguous() && pattern::check(m.data(), next, pattern::size_of(next, sizes))) {
                bad += 1;
            }
            bytes += m.pkt_len() as u64;
            next += 1;
        }
    }
    let secs = t0.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
    let ok = next == count && bad == 0;
    println!(
        "{{\"role\":\"rx\",\"received\":{next},\"expected\":{count},\"bad\":{bad},\"bytes\":{bytes},\"seconds\":{secs:.3},\"mpps\":{:.3},\"ok\":{ok}}}",
        next as f64 / secs.max(1e-9) / 1e6
    );
    Ok(ok)
}
