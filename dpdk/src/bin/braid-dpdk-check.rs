//! `braid-dpdk-check`: starts EAL with the given arguments (vdevs only, or an
//! explicit -a allow-list), lists the ports it created with what each PMD
//! reports, and optionally sets a port up with a pool of a given size.
//! Exit 0 when everything asked for worked, 1 with a one-line error if not.
//!
//! usage: braid-dpdk-check [--port NAME] [--pool MBUFS] -- <EAL args>

use braid_dpdk::{Eal, Mempool, Port, PortConfig};

fn run() -> Result<(), braid_dpdk::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let (ours, eal_args) = (&args[..split], args.get(split + 1..).unwrap_or(&[]));
    let mut port_name = None;
    let mut pool_size = 4096u32;
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => port_name = it.next().cloned(),
            "--pool" => pool_size = it.next().and_then(|v| v.parse().ok()).unwrap_or(pool_size),
            other => {
                eprintln!("unknown option {other:?}; usage: braid-dpdk-check [--port NAME] [--pool MBUFS] -- <EAL args>");
                std::process::exit(2);
            }
        }
    }
    let eal = Eal::init(eal_args)?;
    eal.remove_runtime_dir_at_exit();
    for name in Port::names() {
        let p = Port::by_name(&name)?;
        let i = p.info();
        println!(
            "{name}: driver={} rxq<={} txq<={} max_rx_pktlen={} offloads={:?}",
            i.driver, i.max_rx_queues, i.max_tx_queues, i.max_rx_pktlen, i.capa
        );
    }
    if let Some(name) = port_name {
        let mut port = Port::by_name(&name)?;
        let pool = Mempool::new("check_pool", pool_size, braid_dpdk::mbuf::DEFAULT_DATA_ROOM)?;
        port.configure(&PortConfig::default(), &[&pool])?;
        port.start()?;
        println!("{name}: configured with {:?}", port.offloads());
        port.close();
        drop(pool);
    }
    eal.cleanup();
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("braid-dpdk-check: {e}");
        std::process::exit(1);
    }
}
