//! From validated [`Tables`] to running workers: which port plays which
//! role, the outbound SAs every worker shares, and each worker's setup.

use std::sync::Arc;

use braid_tunnel::sa::{OutboundSa, OutboundSaPair};

use crate::config::{NextHop, PortRole, Tables};
use crate::nat::{boot_seed, nat_config, NatSetup};
use crate::worker::{BundleSetup, OnLink, TunnelSetup, WorkerSetup, L2};

/// Where each port of the tables sits in a worker: the LAN port and the
/// WAN ports in order.
#[derive(Debug, Clone)]
pub struct PortPlan {
    /// Index in `tables.ports` of the LAN port.
    pub lan: usize,
    /// Indices in `tables.ports` of the WAN ports; a tunnel's WAN port is
    /// found by its position here.
    pub wans: Vec<usize>,
}

impl PortPlan {
    /// One LAN port (several are not supported yet) and at least one WAN.
    pub fn new(tables: &Tables) -> Result<PortPlan, String> {
        let lans: Vec<usize> = (0..tables.ports.len()).filter(|&i| tables.ports[i].role == PortRole::Lan).collect();
        let wans: Vec<usize> = (0..tables.ports.len()).filter(|&i| tables.ports[i].role == PortRole::Wan).collect();
        match lans.as_slice() {
            [lan] if !wans.is_empty() => Ok(PortPlan { lan: *lan, wans }),
            [] | [_] => Err("need one LAN port and at least one WAN port".into()),
            _ => Err(format!("{} LAN ports: one LAN port per gateway is supported for now", lans.len())),
        }
    }
}

/// What a port does on TX for the workers, from the offloads its PMD
/// granted. `Default`: nothing (checksums and cuts in software).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortTx {
    /// IPv4 header checksums.
    pub ip_csum: bool,
    /// UDP checksums (IPv6 tunnels' ESP-in-UDP).
    pub udp_csum: bool,
    /// TCP segmentation, and how this PMD does it.
    pub tso: Option<braid_dpdk::Tso>,
}

impl PortTx {
    /// What `port`, configured, does.
    pub fn of(port: &braid_dpdk::Port) -> PortTx {
        PortTx { ip_csum: port.offloads().tx_ipv4_cksum, udp_csum: port.offloads().tx_udp_cksum, tso: port.tso() }
    }
}

/// Data room of the mbufs of a gateway's pool: the largest frame any of
/// its ports carries, plus room to grow it by the outer headers and ESP
/// trailer in place; and of its jumbo pool's, if it needs one: a peer
/// whose LAN has a larger MTU than any port here sends inner packets the
/// first cannot hold (to be cut to the LAN's MTU), up to the largest MTU
/// braid takes.
pub fn pool_rooms(tables: &Tables) -> (u16, Option<u16>) {
    let max_mtu = tables.ports.iter().map(|p| p.mtu as usize).max().unwrap_or(1500);
    let room = (128 + 14 + max_mtu + 128).max(braid_dpdk::mbuf::DEFAULT_DATA_ROOM as usize) as u16;
    let max_inner = crate::config::MAX_MTU as usize;
    // Also the room for an outer packet made whole whose inner packet is
    // that large (plain mode's outer fragments): its outer headers and
    // ESP trailer, up to 99 bytes over IPv6, fit the same 128 (found by
    // review: a 9600-byte inner packet reassembled did not fit, `too_big`).
    (room, (max_mtu < max_inner).then_some((128 + 14 + max_inner + 128) as u16))
}

/// The outbound SA of every tunnel, by bundle, shared by all workers
/// (sequence numbers are leased per burst, one atomic add each).
pub fn outbound_sas(tables: &Tables) -> Vec<Vec<Arc<OutboundSaPair>>> {
    tables
        .bundles
        .iter()
        .map(|b| b.tunnels.iter().map(|t| Arc::new(OutboundSaPair::new(Arc::new(OutboundSa::new(&t.sa_out))))).collect())
        .collect()
}

/// The NAT every worker of a gateway with `workers` workers is built with,
/// or `None` when the tables have no NAT rule. The session bound and the
/// timeouts are braid-nat's defaults until the tables carry them.
pub fn nat_setup(tables: &Tables, workers: u16) -> Result<Option<NatSetup>, String> {
    let t = &tables.nat.timeouts;
    let s = |secs: u64| secs * 1_000_000_000;
    let timeouts = braid_nat::Timeouts {
        tcp_established: s(t.tcp_established),
        tcp_transitory: s(t.tcp_transitory),
        tcp_opening: s(t.tcp_opening),
        udp: s(t.udp),
        icmp: s(t.icmp),
    };
    let config = nat_config(&tables.nat, tables.nat.max_sessions as usize, timeouts, boot_seed())?;
    Ok(config.map(|c| NatSetup { config: Arc::new(c), workers }))
}

/// Worker `id`'s setup, its NAT split for a gateway of one worker (several:
/// [`worker_setup_with_nat`] with [`nat_setup`]). `port_tx(port)` says what
/// a port does on TX (IPv4 header checksums, TSO); `probes` makes this
/// worker the one that probes every tunnel.
pub fn worker_setup(
    tables: &Tables,
    plan: &PortPlan,
    sas: &[Vec<Arc<OutboundSaPair>>],
    id: u16,
    probes: bool,
    port_tx: impl Fn(usize) -> PortTx,
) -> Result<WorkerSetup, String> {
    worker_setup_with_nat(tables, plan, sas, nat_setup(tables, 1)?, id, probes, port_tx)
}

/// [`worker_setup`] with the NAT setup already made (by the control
/// thread, once per snapshot: converting 100,000 rules takes tens of
/// milliseconds that must not be spent on a worker).
pub fn worker_setup_with_nat(
    tables: &Tables,
    plan: &PortPlan,
    sas: &[Vec<Arc<OutboundSaPair>>],
    nat: Option<NatSetup>,
    id: u16,
    probes: bool,
    port_tx: impl Fn(usize) -> PortTx,
) -> Result<WorkerSetup, String> {
    let l2 = |i: usize| {
        let p = &tables.ports[i];
        let on_link = |router| Some(OnLink::new(p.ipv4.map(|a| (a.addr, a.prefix_len)), p.ipv6.map(|a| (a.addr, a.prefix_len)), router));
        let (next_hop_mac, next_hop, on_link) = match (p.next_hop, p.role) {
            (NextHop::Mac(m), _) => (m, None, None),
            // Resolved by the worker; nothing leaves before it is.
            (NextHop::Ip(ip), PortRole::Wan) => ([0; 6], Some(ip), None),
            // Each packet to its destination's MAC, or the router's.
            (NextHop::Ip(ip), PortRole::Lan) => ([0; 6], None, on_link(Some(ip))),
            (NextHop::OnLink, _) => ([0; 6], None, on_link(None)),
        };
        L2 {
            mac: p.mac,
            next_hop_mac,
            next_hop,
            ip_csum_offload: port_tx(i).ip_csum,
            udp_csum_offload: port_tx(i).udp_csum,
            tso: port_tx(i).tso,
            mtu: p.mtu,
            ipv4: p.ipv4.map(|a| a.addr),
            ipv6: p.ipv6.map(|a| a.addr),
            on_link,
        }
    };
    let mut bundles = Vec::with_capacity(tables.bundles.len());
    for (b, bundle) in tables.bundles.iter().enumerate() {
        let mut tunnels = Vec::with_capacity(bundle.tunnels.len());
        for (t, tun) in bundle.tunnels.iter().enumerate() {
            let wan = plan
                .wans
                .iter()
                .position(|&p| p == tun.wan_port)
                .ok_or_else(|| format!("bundle {:?} tunnel {t}: port {} is not a WAN port", bundle.name, tun.wan_port))?;
            tunnels.push(TunnelSetup {
                wan,
                local: tun.local,
                remote: tun.remote,
                out: sas[b][t].clone(),
                inbound: tun.sa_in.clone(),
                rx_high: None,
                params: tun.path_params(),
            });
        }
        bundles.push(BundleSetup {
            name: bundle.name.as_str().into(),
            mode: bundle.mode,
            policy: bundle.policy,
            max_frame: bundle.max_frame,
            keepalive: u64::from(bundle.keepalive_secs) * 1_000_000_000,
            outer_fragmentation: bundle.outer_fragmentation,
            tunnels,
        });
    }
    Ok(WorkerSetup {
        id,
        lan: l2(plan.lan),
        wans: plan.wans.iter().map(|&i| l2(i)).collect(),
        bundles,
        routes: Arc::new(tables.routes.clone()),
        peer_bundle: tables.peers.iter().map(|p| p.bundle).collect(),
        replay_window: tables.options.replay_window,
        hold: tables.options.hold,
        probes: probes.then_some(tables.options.liveness),
        nat,
        wan_rss: Vec::new(),
        workers: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_tunnel::wire::esp;

    /// The jumbo pool holds an outer packet made whole (plain mode's
    /// outer fragments, IPv6 tunnels) around the largest inner packet,
    /// behind the mbuf's headroom (found by review: it held the inner
    /// packet's LAN frame only, and such packets were dropped `too_big`).
    #[test]
    fn the_jumbo_pool_holds_the_largest_outer_packet() {
        let tables = crate::control::tables_from_doc(crate::control::tests::example_doc().as_bytes()).unwrap();
        let (room, jumbo) = pool_rooms(&tables);
        let max_inner = crate::config::MAX_MTU as usize;
        let outer_v6 = 14 + 40 + 8 + esp::PAYLOAD_OFFSET + max_inner + esp::MAX_TAIL;
        assert!(usize::from(jumbo.expect("a 1500-byte gateway has a jumbo pool")) >= 128 + outer_v6);
        assert!(usize::from(room) >= 128 + 14 + 1500 + 99, "the ordinary pool grows a LAN frame by the outer headers in place");
    }
}
