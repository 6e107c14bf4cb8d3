//! Two braid gateways in one process, on real net_ring ports and real
//! mbufs: a generator on A's LAN, a checker on B's LAN, and a "WAN middle"
//! between A's and B's WAN ports that can capture, delay and inject frames.
//! Everything runs on the caller's thread with a simulated clock, so runs
//! are exact and take one core. Used by the integration tests and by the
//! on-box benchmark (`braid-perf-gw`); EAL must be up.

pub mod neighbor;
pub mod traffic;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::config::{Config, Tables};
use crate::counters::WorkerCounters;
use crate::gateway::{outbound_sas, pool_rooms, worker_setup, PortPlan, PortTx};
use crate::worker::{KernelTap, Worker};
use braid_dpdk::ring_port::RingPair;
use braid_dpdk::{Mbuf, Mempool, Port, PortConfig, RxQueue, TxQueue, BURST};
use braid_tunnel::sa::{OutboundSa, OutboundSaPair};

use traffic::{ip_packet, tag, Flow};

pub const A_LAN_MAC: &str = "02:aa:00:00:00:01";
pub const A_HOST_MAC: &str = "02:aa:00:00:00:99";
pub const A_WAN_MAC: &str = "02:aa:00:00:01:01";
pub const B_LAN_MAC: &str = "02:bb:00:00:00:01";
pub const B_HOST_MAC: &str = "02:bb:00:00:00:99";
pub const B_WAN_MAC: &str = "02:bb:00:00:01:01";

/// Key material of tunnel `t`, direction A->B (`ab`) or B->A.
pub fn key(t: usize, ab: bool, len: usize) -> String {
    (0..len).map(|i| format!("{:02x}", (i * 7 + t * 13 + if ab { 1 } else { 101 }) as u8)).collect()
}
pub fn salt(t: usize, ab: bool) -> String {
    format!("{:08x}", 0x5a17_0000u32 + (t as u32) * 2 + ab as u32)
}
pub fn spi(t: usize, ab: bool) -> u32 {
    if ab { 0x1000 + t as u32 } else { 0x2000 + t as u32 }
}

/// One gateway's JSON configuration.
pub fn config_json(side_a: bool, devices: (&str, &str), mode: &str, weights: &[u32], key_len: usize, wan_mtu: u32) -> String {
    let (lan_mac, host_mac, wan_mac, peer_wan_mac) =
        if side_a { (A_LAN_MAC, A_HOST_MAC, A_WAN_MAC, B_WAN_MAC) } else { (B_LAN_MAC, B_HOST_MAC, B_WAN_MAC, A_WAN_MAC) };
    let (me, them) = if side_a { ("192.0.2.1", "198.51.100.1") } else { ("198.51.100.1", "192.0.2.1") };
    let tunnels: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(t, w)| {
            let (out_ab, in_ab) = (side_a, !side_a);
            format!(
                r#"{{"wan_port":"wan","local":"{me}:{}","remote":"{them}:{}","spi_out":{},"spi_in":{},"key_out":"{}","key_in":"{}","salt_out":"{}","salt_in":"{}","weight":{w}}}"#,
                4500 + t,
                4500 + t,
                spi(t, out_ab),
                spi(t, in_ab),
                key(t, out_ab, key_len),
                key(t, in_ab, key_len),
                salt(t, out_ab),
                salt(t, in_ab)
            )
        })
        .collect();
    let (routes4, routes6) = if side_a { ("10.2.0.0/16", "fd00:2::/64") } else { ("10.1.0.0/16", "fd00:1::/64") };
    format!(
        r#"{{
  "ports": [
    {{"name":"lan","device":"{}","role":"lan","mac":"{lan_mac}","next_hop_mac":"{host_mac}","mtu":9000}},
    {{"name":"wan","device":"{}","role":"wan","mac":"{wan_mac}","ipv4":"{me}/24","next_hop_mac":"{peer_wan_mac}","mtu":{wan_mtu}}}
  ],
  "peers": [{{"name":"peer","bundle":"b0"}}],
  "bundles": [{{"name":"b0","mode":"{mode}","policy":"weighted","tunnels":[{}]}}],
  "routes": [{{"prefix":"{routes4}","peer":"peer"}},{{"prefix":"{routes6}","peer":"peer"}}]
}}"#,
        devices.0,
        devices.1,
        tunnels.join(",")
    )
}

/// An Ethernet + IPv4 or IPv6 frame cut into IPv4 fragments (RFC 791) or
/// IPv6 ones (RFC 8200, each with an identification of its own) of at
/// most `chunk` payload bytes (a multiple of 8), each a whole frame with
/// its own headers; a frame that fits (or is neither) is returned as is.
pub fn fragment_frame(frame: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    static IDENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let mut out = Vec::new();
    let mut emit = |h: &[u8], p: &[u8]| out.push([h, p].concat());
    let n = if frame.get(12..14) == Some(&[0x86, 0xdd]) {
        let id = IDENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::encap::fragment_ipv6(frame, chunk, id, &mut emit)
    } else {
        crate::encap::fragment_ipv4(frame, chunk, &mut emit)
    };
    if n == 0 {
        return vec![frame.to_vec()];
    }
    out
}

/// Runs test `name`'s `body` in a network namespace of its own: the test
/// binary runs itself again, that test alone, under `unshare --net`; the
/// namespace goes with that process, and any tap made in it. For tests
/// whose DPDK ports are net_tap devices.
pub fn isolated(name: &str, body: impl FnOnce()) {
    const CHILD: &str = "BRAID_TEST_OWN_NETNS";
    // Set to the test's name in the child: only that test runs there.
    if std::env::var(CHILD).is_ok_and(|t| t == name) {
        return body();
    }
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new("unshare")
        .args(["--net", "--"])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .status()
        .expect("unshare (util-linux)");
    assert!(status.success(), "{name} in its own network namespace: {status}");
}

/// An Ethernet + IPv6 frame (no extension headers) as an atomic fragment:
/// a Fragment header (offset 0, M clear, its own identification) after
/// the IPv6 header; `None` for anything else.
pub fn atomic_fragment(frame: &[u8]) -> Option<Vec<u8>> {
    static IDENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    if frame.len() < 54 || frame[12..14] != [0x86, 0xdd] || matches!(frame[20], 0 | 43 | 44 | 60) {
        return None;
    }
    let id = IDENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let plen = u16::from_be_bytes([frame[18], frame[19]]) + 8;
    let mut f = frame[..54].to_vec();
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f[20] = 44;
    f.extend_from_slice(&[frame[20], 0, 0, 0]);
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&frame[54..]);
    Some(f)
}

/// UDP destination port of an IPv4 frame without options or an IPv6 one
/// without extension headers; 0 for anything else (ARP, other protocols,
/// too short), so a rule on tunnel ports never catches those.
fn udp_dport(d: &[u8]) -> u16 {
    let at = match (d.get(12..14), d.get(23), d.get(20)) {
        (Some([0x08, 0x00]), Some(17), _) => 36,
        (Some([0x86, 0xdd]), _, Some(17)) => crate::encap::UDP_AT_V6 + 2,
        _ => return 0,
    };
    d.get(at..at + 2).map_or(0, |p| u16::from_be_bytes([p[0], p[1]]))
}

/// Recomputes the UDP checksum of an Ethernet + IPv6 + UDP `frame` (no
/// extension headers), after a test rewrote its addresses or ports.
pub fn fix_udp6_checksum(frame: &mut [u8]) {
    use braid_tunnel::wire::checksum;
    const UDP: usize = crate::encap::UDP_AT_V6;
    let ulen = u16::from_be_bytes([frame[UDP + 4], frame[UDP + 5]]) as usize;
    frame[UDP + 6..UDP + 8].copy_from_slice(&[0, 0]);
    let (src, dst): ([u8; 16], [u8; 16]) = (frame[22..38].try_into().unwrap(), frame[38..54].try_into().unwrap());
    let pseudo = checksum::pseudo_header_v6(src.into(), dst.into(), 17, ulen as u32);
    let c = !checksum::combine(&[pseudo, checksum::sum(&frame[UDP..UDP + ulen])]);
    frame[UDP + 6..UDP + 8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
}

/// A configuration edit that moves tunnel `i` to outer IPv6 where
/// `v6[i]`: the WAN ports get IPv6 addresses too (2001:db8:a::1 for A,
/// 2001:db8:b::1 for B), the tunnels' local and remote addresses are
/// those, with the same ports.
pub fn outer_v6(v6: Vec<bool>) -> ConfigEdit {
    Box::new(move |side_a, doc| {
        let (me, them) = if side_a { ("2001:db8:a::1", "2001:db8:b::1") } else { ("2001:db8:b::1", "2001:db8:a::1") };
        doc["ports"][1]["ipv6"] = format!("{me}/64").into();
        if let Some(tunnels) = doc["bundles"][0]["tunnels"].as_array_mut() {
            for (i, t) in tunnels.iter_mut().enumerate().filter(|(i, _)| v6.get(*i) == Some(&true)) {
                t["local"] = format!("[{me}]:{}", 4500 + i).into();
                t["remote"] = format!("[{them}]:{}", 4500 + i).into();
            }
        }
    })
}

/// A MAC address from `aa:bb:..` text.
pub fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// Edits a gateway's configuration document (`true`: A) before it is
/// validated: NAT rules, extra routes.
pub type ConfigEdit = Box<dyn Fn(bool, &mut serde_json::Value)>;

/// What a test changes in the lab's two gateways.
#[derive(Default)]
pub struct LabOptions {
    pub edit: Option<ConfigEdit>,
    /// NAT session bound per worker (the tables do not carry one).
    pub nat_max_sessions: Option<usize>,
    /// NAT idle timeouts.
    pub nat_timeouts: Option<braid_nat::Timeouts>,
    /// Give A an exception path: ring ports stand in for the kernel taps
    /// of A's LAN and WAN ports ([`Lab::kernel_a`]).
    pub kernel_taps: bool,
    /// B's LAN port: this DPDK port (a vdev given to EAL, e.g. a net_tap)
    /// instead of a ring pair (`check` then sees nothing), and B's mbufs
    /// sized as the process sizes them (`gateway::pool_rooms`: a jumbo
    /// pool when its ports are smaller than the biggest MTU).
    pub b_lan_device: Option<String>,
    /// A's WAN port: this DPDK port (a vdev given to EAL, e.g. a net_tap)
    /// instead of a ring pair. What A sends there never reaches B (the
    /// test reads it where the device leads).
    pub a_wan_device: Option<String>,
    /// The first sequence number of every outbound SA, and the inbound
    /// windows above the numbers before it (as a restart with
    /// `--seq-state` starts them): near `MAX_PACKET_LIMIT` to exhaust them.
    pub sa_start: Option<u64>,
    /// Ports with an IPv6 address report their solicited-node groups by
    /// MLD (`crate::mld`), as in the process; off unless a test asks, so
    /// that the frames a port sends are the test's own.
    pub mld: bool,
}

/// Which way a WAN frame crosses the middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WanDir {
    AToB,
    BToA,
}

/// Sees (and may rewrite in place) every WAN frame crossing the middle
/// after capture and the other rules; `false` loses the frame. A NAT box
/// in front of B, say.
pub type WanHook = Box<dyn FnMut(WanDir, &mut [u8]) -> bool>;

/// A port on the test's side of a ring pair.
pub struct End {
    pub rx: RxQueue,
    pub tx: TxQueue,
}

/// The lab. Fields are public so tests can inject and inspect.
pub struct Lab {
    pub a: Worker,
    pub b: Worker,
    pub tables_a: Arc<Tables>,
    pub tables_b: Arc<Tables>,
    pub gen: End,
    pub check: End,
    /// Middle ends: A's WAN peer, B's WAN peer.
    pub mid_a: End,
    pub mid_b: End,
    pub pools: Vec<Arc<Mempool>>,
    pub test_pool: Arc<Mempool>,
    pub now: u64,
    /// How simulated time advances per `step`: `None`, by [`TICK`]; with
    /// the TSC's rate, by the busy time of the slower gateway in that step
    /// (each gateway is a worker on its own core, both saturated: their
    /// timers run as often per packet as a real worker's at that rate).
    /// Benchmarks use the latter; tests the fixed tick.
    pub busy_clock: Option<u64>,
    /// Cycles each gateway spent in the current step.
    step_cycles: (u64, u64),
    /// Frames A sent to B, copied, when capturing.
    pub capture: Option<Vec<Vec<u8>>>,
    pub capture_limit: usize,
    /// Extra delay (polls) for A->B frames per tunnel UDP port.
    pub delay_polls: HashMap<u16, u32>,
    /// Tunnel UDP ports whose frames the middle loses, both ways.
    pub drop_ports: HashSet<u16>,
    /// The middle stops reading A's WAN port (its TX ring fills up).
    pub hold_a_wan: bool,
    /// The checker stops reading B's LAN port (its TX ring fills up).
    pub hold_b_lan: bool,
    /// A's outbound SAs (shared with A's worker), by bundle and tunnel.
    pub sas_a: Vec<Vec<Arc<OutboundSaPair>>>,
    /// B's outbound SAs, likewise.
    pub sas_b: Vec<Vec<Arc<OutboundSaPair>>>,
    /// A's ARP requests and neighbor solicitations (A's WAN next hop given
    /// by address): the middle takes them (B never sees them) and, from the
    /// `nh_answer`-th on (1: the first), answers as the next hop with B's
    /// WAN MAC; `None`: the next hop never answers.
    pub nh_answer: Option<u32>,
    /// The requests the middle took from A, in order.
    pub nh_requests: Vec<Vec<u8>>,
    /// Cut A's WAN frames into IPv4 or IPv6 fragments of at most this many
    /// payload bytes (a multiple of 8) on their way to B, last fragment
    /// first.
    pub fragment_wan: Option<usize>,
    /// Give A's IPv6 WAN frames a Fragment header on their way to B, as
    /// atomic fragments (offset 0, no more to come: RFC 6946).
    pub atomic_wan: bool,
    /// Called on every WAN frame the middle passes, both ways (A's next-hop
    /// requests excepted; frames A sends to B after `delay_polls`).
    pub wan_hook: Option<WanHook>,
    held: VecDeque<(u64, Mbuf)>,
    poll_no: u64,
    /// Frames B delivered to its LAN, in order, not yet checked.
    pub delivered: Vec<Vec<u8>>,
    /// Keep delivered frames (tests) or just count and free them (benches).
    pub keep_delivered: bool,
    /// Frames B delivered, in all.
    pub delivered_count: u64,
    /// B's LAN host answers B's ARP requests and neighbor solicitations
    /// with this MAC (a LAN that resolves its hosts); the requests are not
    /// kept in `delivered`.
    pub b_lan_answers: Option<[u8; 6]>,
    /// Read A's LAN output (`gen.rx`) at every step into `delivered_a`;
    /// off, tests read `gen.rx` themselves.
    pub read_a_lan: bool,
    /// Frames A delivered to its LAN (replies coming back), in order, when
    /// `keep_delivered`.
    pub delivered_a: Vec<Vec<u8>>,
    /// Frames A delivered, in all.
    pub delivered_a_count: u64,
    /// TSC cycles spent inside A's and B's polls.
    pub cycles_a: u64,
    pub cycles_b: u64,
    /// Of `cycles_a`/`cycles_b`: spent in polls that found nothing to do.
    pub idle_cycles_a: u64,
    pub idle_cycles_b: u64,
    /// Destination and source MACs of frames from A's host to A.
    to_a_macs: [u8; 12],
    /// With [`LabOptions::kernel_taps`]: the kernel's side of A's LAN tap
    /// and of A's WAN tap.
    pub kernel_a: Option<[End; 2]>,
    /// Last field: dropped last, closes the ports even when a test fails.
    _ports: PortsGuard,
}

/// Closes the lab's ports and frees its rings when dropped.
struct PortsGuard {
    ports: Vec<Port>,
    pairs: Vec<RingPair>,
}

impl Drop for PortsGuard {
    fn drop(&mut self) {
        for p in self.ports.drain(..) {
            p.close();
        }
        self.pairs.clear();
    }
}

/// Nanoseconds of simulated time per lab poll.
pub const TICK: u64 = 10_000;

impl Lab {
    pub fn new(case: &str, mode: &str, weights: &[u32], key_len: usize, wan_mtu: u32) -> Lab {
        Lab::with(case, mode, weights, key_len, wan_mtu, LabOptions::default())
    }

    /// [`Lab::new`] with a test's changes to the gateways.
    pub fn with(case: &str, mode: &str, weights: &[u32], key_len: usize, wan_mtu: u32, opts: LabOptions) -> Lab {
        let test_pool = Arc::new(Mempool::new(&format!("{case}_tp"), 8191, 9900).unwrap());
        let mut pairs = Vec::new();
        let mut ports = Vec::new();
        let mut ends = Vec::new();
        let mut gw_ports = Vec::new();
        for (name, gw_side_is_b) in [("alan", true), ("awan", false), ("bwan", true), ("blan", false)] {
            let n = format!("{case}{name}");
            let (pair, pa, pb) = RingPair::new(&n, 1024).unwrap();
            pairs.push(pair);
            let (gw, mine) = if gw_side_is_b { (pb, pa) } else { (pa, pb) };
            gw_ports.push(gw);
            ends.push(mine);
        }
        // A's kernel taps: ring pairs whose far ends play the kernel.
        let mut taps = Vec::new();
        if opts.kernel_taps {
            for name in ["aklan", "akwan"] {
                let (pair, gw, kernel) = RingPair::new(&format!("{case}{name}"), 1024).unwrap();
                pairs.push(pair);
                ends.push(kernel);
                taps.push(gw);
            }
        }
        let cfg = PortConfig { rx_desc: 512, tx_desc: 512, ..Default::default() };
        for p in ends.iter_mut() {
            p.configure(&cfg, &[&test_pool]).unwrap();
            p.start().unwrap();
        }
        let mk_end = |p: &Port| End { rx: p.rx_queue(0).unwrap(), tx: p.tx_queue(0).unwrap() };
        let gen = mk_end(&ends[0]);
        let mid_a = mk_end(&ends[1]);
        let mid_b = mk_end(&ends[2]);
        let check = mk_end(&ends[3]);
        let kernel_a = opts.kernel_taps.then(|| [mk_end(&ends[4]), mk_end(&ends[5])]);
        let mut names: Vec<String> = gw_ports.iter().map(|p| p.info().name.clone()).collect();
        if let Some(dev) = &opts.b_lan_device {
            names[3] = dev.clone();
        }
        if let Some(dev) = &opts.a_wan_device {
            names[1] = dev.clone();
        }
        type Built = (Worker, Arc<Tables>, Arc<Mempool>, Vec<Port>, Vec<Vec<Arc<OutboundSaPair>>>);
        let build = |side_a: bool, lan: Port, wan: Port, mut taps: Vec<Port>| -> Built {
            let (ln, wn) = if side_a { (&names[0], &names[1]) } else { (&names[3], &names[2]) };
            let mut json = config_json(side_a, (ln, wn), mode, weights, key_len, wan_mtu);
            if let Some(edit) = &opts.edit {
                let mut doc: serde_json::Value = serde_json::from_str(&json).unwrap();
                edit(side_a, &mut doc);
                json = doc.to_string();
            }
            let tables = Arc::new(Tables::from_config(&Config::from_json_str(&json).unwrap()).unwrap());
            let name = format!("{case}_{}", if side_a { "pa" } else { "pb" });
            let (room, jumbo) = match (&opts.b_lan_device, side_a) {
                (Some(_), false) => {
                    let (room, jumbo) = pool_rooms(&tables);
                    (room, jumbo.map(|r| Arc::new(Mempool::new(&format!("{name}j"), 1023, r).unwrap())))
                }
                // At least as the process sizes them (a jumbo LAN).
                _ => (pool_rooms(&tables).0.max(9400), None),
            };
            let pool = Arc::new(Mempool::new(&name, 8191, room).unwrap());
            let mut lan = lan;
            let mut wan = wan;
            // A real device for B's LAN gets its MTU, as the process sets it.
            let lan_cfg = match (&opts.b_lan_device, side_a) {
                (Some(_), false) => PortConfig { mtu: Some(tables.ports[0].mtu), ..cfg.clone() },
                _ => cfg.clone(),
            };
            for (p, c) in [(&mut lan, &lan_cfg), (&mut wan, &cfg)] {
                p.configure(c, &[&pool]).unwrap();
                p.start().unwrap();
            }
            let plan = PortPlan::new(&tables).unwrap();
            let mut sas = outbound_sas(&tables);
            if let Some(start) = opts.sa_start {
                sas = tables
                    .bundles
                    .iter()
                    .map(|b| {
                        let sa = |t: &crate::config::Tunnel| OutboundSa::starting_at(&t.sa_out, start);
                        b.tunnels.iter().map(|t| Arc::new(OutboundSaPair::new(Arc::new(sa(t))))).collect()
                    })
                    .collect();
            }
            let port_tx = [PortTx::of(&lan), PortTx::of(&wan)];
            let mut setup = worker_setup(&tables, &plan, &sas, 0, true, |i| port_tx[i]).unwrap();
            if let Some(start) = opts.sa_start {
                // The peer's SAs start there too: its inbound windows
                // above the numbers before (as a kept high makes them).
                let high = |_: &crate::config::Tunnel| Arc::new(std::sync::atomic::AtomicU64::new(start - 1));
                let highs: Vec<Vec<_>> = tables.bundles.iter().map(|b| b.tunnels.iter().map(high).collect()).collect();
                setup = setup.with_rx_highs(&highs);
            }
            if let Some(nat) = setup.nat.as_mut() {
                let mut c = (*nat.config).clone();
                c.max_sessions = opts.nat_max_sessions.unwrap_or(c.max_sessions);
                c.timeouts = opts.nat_timeouts.unwrap_or(c.timeouts);
                nat.config = Arc::new(c);
            }
            let mut w = Worker::new(
                setup,
                pool.clone(),
                (lan.rx_queue(0).unwrap(), lan.tx_queue(0).unwrap()),
                vec![(wan.rx_queue(0).unwrap(), wan.tx_queue(0).unwrap())],
                0,
            )
            .unwrap();
            if let Some(j) = jumbo {
                w = w.with_jumbo_pool(j);
            }
            if !opts.mld {
                w = w.without_mld();
            }
            if !taps.is_empty() {
                for p in taps.iter_mut() {
                    p.configure(&cfg, &[&pool]).unwrap();
                    p.start().unwrap();
                }
                let q = |p: &Port| Some(KernelTap::new((p.rx_queue(0).unwrap(), p.tx_queue(0).unwrap())));
                w = w.with_kernel_taps(taps.iter().map(q).collect()).unwrap();
            }
            let mut ports = vec![lan, wan];
            ports.append(&mut taps);
            (w, tables, pool, ports, sas)
        };
        let mut gw = gw_ports.into_iter();
        let (alan, mut awan, bwan, mut blan) = (gw.next().unwrap(), gw.next().unwrap(), gw.next().unwrap(), gw.next().unwrap());
        if let Some(dev) = &opts.b_lan_device {
            let ring = std::mem::replace(&mut blan, Port::by_name(dev).unwrap_or_else(|e| panic!("B's LAN port {dev}: {e}")));
            ring.close();
        }
        if let Some(dev) = &opts.a_wan_device {
            let ring = std::mem::replace(&mut awan, Port::by_name(dev).unwrap_or_else(|e| panic!("A's WAN port {dev}: {e}")));
            ring.close();
        }
        let (a, tables_a, pool_a, pa, sas_a) = build(true, alan, awan, taps);
        let (b, tables_b, pool_b, pb, sas_b) = build(false, blan, bwan, Vec::new());
        ports.extend(ends);
        ports.extend(pa);
        ports.extend(pb);
        Lab {
            a,
            b,
            tables_a,
            tables_b,
            gen,
            check,
            mid_a,
            mid_b,
            pools: vec![pool_a, pool_b],
            test_pool,
            now: 0,
            busy_clock: None,
            step_cycles: (0, 0),
            capture: None,
            capture_limit: 0,
            delay_polls: HashMap::new(),
            drop_ports: HashSet::new(),
            hold_a_wan: false,
            hold_b_lan: false,
            sas_a,
            sas_b,
            fragment_wan: None,
            atomic_wan: false,
            wan_hook: None,
            nh_answer: None,
            nh_requests: Vec::new(),
            held: VecDeque::new(),
            poll_no: 0,
            delivered: Vec::new(),
            keep_delivered: true,
            delivered_count: 0,
            read_a_lan: false,
            b_lan_answers: None,
            delivered_a: Vec::new(),
            delivered_a_count: 0,
            cycles_a: 0,
            cycles_b: 0,
            idle_cycles_a: 0,
            idle_cycles_b: 0,
            kernel_a,
            to_a_macs: {
                let mut m = [0u8; 12];
                m[..6].copy_from_slice(&mac(A_LAN_MAC));
                m[6..].copy_from_slice(&mac(A_HOST_MAC));
                m
            },
            _ports: PortsGuard { ports, pairs },
        }
    }

    /// A LAN frame from the host behind A to A, holding `ip`.
    pub fn frame_to_a(&self, ip: &[u8]) -> Mbuf {
        let mut m = Mbuf::alloc(&self.test_pool).expect("test pool");
        let b = m.append(14 + ip.len()).expect("fits");
        b[0..12].copy_from_slice(&self.to_a_macs);
        let et: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        b[12..14].copy_from_slice(&et.to_be_bytes());
        b[14..].copy_from_slice(ip);
        m
    }

    /// A LAN frame from the host behind B to B, holding `ip` (send it with
    /// `check.tx`).
    pub fn frame_to_b(&self, ip: &[u8]) -> Mbuf {
        let mut m = Mbuf::alloc(&self.test_pool).expect("test pool");
        let b = m.append(14 + ip.len()).expect("fits");
        b[0..6].copy_from_slice(&mac(B_LAN_MAC));
        b[6..12].copy_from_slice(&mac(B_HOST_MAC));
        let et: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        b[12..14].copy_from_slice(&et.to_be_bytes());
        b[14..].copy_from_slice(ip);
        m
    }

    /// A raw frame from bytes, in a test mbuf.
    pub fn raw(&self, bytes: &[u8]) -> Mbuf {
        let mut m = Mbuf::alloc(&self.test_pool).expect("test pool");
        m.append(bytes.len()).expect("fits").copy_from_slice(bytes);
        m
    }

    /// One round: A, the WAN middle both ways, B.
    pub fn step(&mut self) {
        self.poll_no += 1;
        let t0 = braid_dpdk::rdtsc();
        let work = self.a.poll(self.now);
        let spent = braid_dpdk::rdtsc() - t0;
        self.cycles_a += spent;
        self.step_cycles = (spent, 0);
        if work == 0 {
            self.idle_cycles_a += spent;
        }
        let mut got = Vec::with_capacity(BURST);
        while self.read_a_lan && self.gen.rx.rx_burst(&mut got, BURST) > 0 {
            self.delivered_a_count += got.len() as u64;
            if self.keep_delivered {
                self.delivered_a.extend(got.drain(..).map(|m| m.to_vec()));
            } else {
                got.clear();
            }
        }
        // A -> B, capturing and delaying per tunnel port.
        let mut burst = Vec::with_capacity(BURST);
        let mut out = Vec::with_capacity(BURST);
        while !self.hold_a_wan && self.mid_a.rx.rx_burst(&mut burst, BURST) > 0 {
            for m in burst.drain(..) {
                if neighbor::is_request(m.data()) {
                    self.nh_requests.push(m.to_vec());
                    let n = self.nh_requests.len() as u32;
                    if self.nh_answer.is_some_and(|k| n >= k) {
                        if let Some(reply) = neighbor::answer(m.data(), mac(B_WAN_MAC)) {
                            let mut v = vec![self.raw(&reply)];
                            self.mid_a.tx.tx_all(&mut v, 1000);
                        }
                    }
                    continue;
                }
                if let Some(c) = self.capture.as_mut() {
                    if c.len() < self.capture_limit {
                        c.push(m.to_vec());
                    }
                }
                let dport = udp_dport(m.data());
                if self.drop_ports.contains(&dport) {
                    continue;
                }
                let delay = self.delay_polls.get(&dport).copied().unwrap_or(0);
                let mut m = m;
                match delay {
                    k if k > 0 => self.held.push_back((self.poll_no + k as u64, m)),
                    _ if !self.pass_hook(WanDir::AToB, &mut m) => {}
                    _ => match (self.fragment_wan, self.atomic_wan.then(|| atomic_fragment(m.data())).flatten()) {
                        (Some(chunk), _) => {
                            let frags = fragment_frame(m.data(), chunk);
                            out.extend(frags.iter().rev().map(|f| self.raw(f)));
                        }
                        (None, Some(f)) => out.push(self.raw(&f)),
                        (None, None) => out.push(m),
                    },
                }
            }
        }
        while self.held.front().is_some_and(|(due, _)| *due <= self.poll_no) {
            let mut m = self.held.pop_front().unwrap().1;
            if self.pass_hook(WanDir::AToB, &mut m) {
                out.push(m);
            }
        }
        // Hand frames to B as fast as B takes them: B polls until the WAN
        // middle is empty (a real NIC would drop instead; the test wants
        // every frame through).
        let mut spins = 0;
        loop {
            self.mid_b.tx.tx_burst(&mut out);
            self.poll_b();
            if out.is_empty() {
                break;
            }
            spins += 1;
            assert!(spins < 100_000, "B stopped taking frames");
        }
        // B -> A (probe replies, probes).
        while self.mid_b.rx.rx_burst(&mut burst, BURST) > 0 {
            burst.retain(|m| !self.drop_ports.contains(&udp_dport(m.data())));
            if self.wan_hook.is_some() {
                let mut kept = Vec::with_capacity(burst.len());
                for mut m in burst.drain(..) {
                    if self.pass_hook(WanDir::BToA, &mut m) {
                        kept.push(m);
                    }
                }
                burst = kept;
            }
            self.mid_a.tx.tx_all(&mut burst, 1000);
            assert!(burst.is_empty());
        }
        self.poll_b();
        self.now += match self.busy_clock {
            Some(hz) => {
                let (a, b) = self.step_cycles;
                ((a.max(b) as u128 * 1_000_000_000 / hz.max(1) as u128) as u64).max(1)
            }
            None => TICK,
        };
    }

    /// Runs `wan_hook` on one frame: whether it goes on.
    fn pass_hook(&mut self, dir: WanDir, m: &mut Mbuf) -> bool {
        match self.wan_hook.as_mut() {
            Some(hook) => hook(dir, m.data_mut()),
            None => true,
        }
    }

    /// Polls B once and moves what it delivered into `delivered`.
    fn poll_b(&mut self) {
        let t0 = braid_dpdk::rdtsc();
        let work = self.b.poll(self.now);
        let spent = braid_dpdk::rdtsc() - t0;
        self.cycles_b += spent;
        self.step_cycles.1 += spent;
        if work == 0 {
            self.idle_cycles_b += spent;
        }
        let mut got = Vec::with_capacity(BURST);
        while !self.hold_b_lan && self.check.rx.rx_burst(&mut got, BURST) > 0 {
            if let Some(mac) = self.b_lan_answers {
                let answers: Vec<Vec<u8>> = got.iter().filter_map(|m| neighbor::answer(m.data(), mac)).collect();
                if !answers.is_empty() {
                    got.retain(|m| !neighbor::is_request(m.data()));
                    let mut v: Vec<Mbuf> = answers.iter().map(|a| self.raw(a)).collect();
                    self.check.tx.tx_all(&mut v, 1000);
                }
            }
            self.delivered_count += got.len() as u64;
            if self.keep_delivered {
                self.delivered.extend(got.drain(..).map(|m| m.to_vec()));
            } else {
                got.clear();
            }
        }
    }

    /// Flushes what is held in the middle and in the re-orderers.
    pub fn settle(&mut self, polls: usize) {
        for _ in 0..polls {
            self.step();
        }
        while let Some((_, mut m)) = self.held.pop_front() {
            if self.pass_hook(WanDir::AToB, &mut m) {
                let mut v = vec![m];
                self.mid_b.tx.tx_all(&mut v, 1000);
            }
        }
        for _ in 0..polls {
            self.step();
        }
    }

    pub fn counters(&self) -> (WorkerCounters, WorkerCounters) {
        (self.a.counters(), self.b.counters())
    }

    /// Closes everything and checks every pool is full again.
    pub fn close(self) {
        let mut pools = self.pools.clone();
        pools.push(self.test_pool.clone());
        drop(self);
        for p in &pools {
            assert_eq!(p.avail(), p.size(), "pool {} leaked {} mbufs", p.name(), p.size() - p.avail());
        }
    }
}

/// The checker: per flow, the next sequence number expected.
#[derive(Default)]
pub struct Checker {
    pub next: HashMap<u32, u32>,
    pub received: u64,
    pub bad: Vec<String>,
}

impl Checker {
    /// Checks one delivered LAN frame against what `flows[id]` sent.
    pub fn check(&mut self, frame: &[u8], flows: &[Flow], size_of: impl Fn(u32, u32) -> usize) {
        self.received += 1;
        if frame.len() < 14 || frame[0..6] != mac(B_HOST_MAC) || frame[6..12] != mac(B_LAN_MAC) {
            self.bad.push("wrong Ethernet addresses".into());
            return;
        }
        let ip = &frame[14..];
        let et = match ip.first().map(|b| b >> 4) {
            Some(6) => [0x86, 0xdd],
            _ => [0x08, 0x00],
        };
        if frame[12..14] != et {
            self.bad.push(format!("EtherType {:02x?} for an IPv{} packet", &frame[12..14], ip.first().map_or(0, |b| b >> 4)));
            return;
        }
        let Some((id, seq)) = tag(ip) else {
            self.bad.push("not a test packet".into());
            return;
        };
        let exp = self.next.entry(id).or_insert(0);
        if seq != *exp {
            self.bad.push(format!("flow {id}: got seq {seq}, expected {exp}"));
        }
        *exp = seq + 1;
        let want = ip_packet(&flows[id as usize], seq, size_of(id, seq));
        if ip != want.as_slice() {
            self.bad.push(format!("flow {id} seq {seq}: bytes differ ({} vs {} B)", ip.len(), want.len()));
        }
    }
}

/// Every packet is counted once (see [`WorkerCounters`]): each one that
/// came in was passed on, dropped with one reason, or taken by the gateway
/// itself (`local`: answered or dropped with a reason), and each one passed
/// on or answered was sent or dropped. `plain`: one ESP packet per inner packet, and only
/// A sends data. Panics with the counters otherwise.
pub fn assert_conserved(c: &WorkerCounters, who: &str, plain: bool) {
    use crate::counters::DpDrop;
    let ts = c.tunnels.iter().flatten().chain(std::iter::once(&c.retired_tunnels));
    let (rx, rejected, tx, ka_tx): (u64, u64, u64, u64) =
        ts.fold((0, 0, 0, 0), |(r, j, t, k), c| (r + c.rx.packets, j + c.rejected, t + c.tx.packets, k + c.keepalives_tx));
    let d = &c.drops;
    let why = format!("{who}: {c:?}");
    // In: LAN frames tunnelled or dropped; WAN frames (and packets
    // reassembled from fragments) accepted, refused by the engine, dropped,
    // or taken as fragments; LAN fragments the NAT needed whole taken,
    // and each packet made of them one more LAN packet.
    // A NAT drop on the way out is an incoming drop of a LAN frame.
    assert_eq!(
        c.lan_rx.packets + c.tunnel_cut.extra_frames() + c.wan_rx.packets + c.frags.reassembled + c.handoff.esp_in + c.handoff.lan_in
            + c.nat.out_frags.reassembled
            + c.icmp_tunnelled,
        c.encapsulated + rx + rejected + c.keepalives_rx + d.total_rx() + c.frags.taken + c.nat.out_dropped() + c.local.received + c.kernel.taken
            + c.nat.out_frags.taken
            + c.handoff.esp_out
            + c.handoff.lan_out,
        "{why}"
    );
    // For the gateway itself: answered (out of the port it came in on) or
    // dropped with a reason.
    let l = &c.local;
    assert_eq!(l.received, l.answered() + l.learned + l.mld_queries + l.total_dropped(), "{why}");
    assert_eq!(l.answered(), l.lan_replies + l.wan_replies, "{why}");
    // For the kernel: taken off the receive path or copied, then the tap
    // took it or it was dropped.
    let k = &c.kernel;
    assert_eq!(
        k.taken + k.copied,
        k.to_kernel + d.get(DpDrop::KernelTxFull) + d.get(DpDrop::KernelTxRejected),
        "{why}"
    );
    // Out: the ports took what they were given or it was dropped (the NAT
    // translates delivered packets just before the LAN TX queue).
    assert_eq!(
        c.delivered + c.icmp_sent + l.lan_replies + k.from_kernel_lan + l.lan_requests + l.lan_mld_reports + c.handoff.deliver_in + c.lan_cut.extra_frames()
            + c.nat.in_frags.reassembled,
        c.lan_tx.packets
            + c.nat.in_frags.taken
            + c.handoff.deliver_out
            + d.get(DpDrop::HandoffDeliverLost)
            + d.get(DpDrop::LanTxFull)
            + d.get(DpDrop::LanTxRejected)
            + c.nat.in_dropped()
            + d.get(DpDrop::LanNextHopUnresolved)
            + d.get(DpDrop::LanNoNextHop)
            + d.get(DpDrop::LanHoldFull)
            + d.get(DpDrop::LanNotForwarded)
            + d.get(DpDrop::LanTooBig)
            + d.get(DpDrop::LanNoMbuf)
            + d.get(DpDrop::LanBadChecksum)
            + c.lan_held,
        "{why}"
    );
    assert_eq!(tx + ka_tx + l.wan_replies_sent, c.wan_tx.packets, "{why}");
    // A keepalive handed to a WAN queue was taken or dropped on the way out.
    assert!(ka_tx <= c.keepalives, "{why}");
    assert!(c.engine.total() >= rejected, "{why}");
    if plain {
        // An ESP packet sent as fragments is that many WAN frames.
        assert_eq!(
            c.encapsulated + (c.frags.sent - c.frags.fragmented) + l.wan_replies + l.requests + l.mld_reports + c.keepalives + k.from_kernel_wan,
            c.wan_tx.packets + d.get(DpDrop::WanTxFull) + d.get(DpDrop::WanTxRejected) + d.get(DpDrop::NextHopUnresolved),
            "{why}"
        );
        assert_eq!(rx, c.delivered, "{why}");
        assert_eq!(c.engine.total(), rejected, "{why}");
    }
}
