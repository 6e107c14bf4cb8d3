//! The dataplane's counters as the stats segment lays them out.
//!
//! Names are `/`-separated paths the control process turns into Prometheus
//! metrics and JSON: `lan/rx_packets`, `drop/no_route`,
//! `engine_drop/replayed`, `tunnel/<bundle>/<i>/tx_packets` (and
//! `keepalives_tx`, `remote_changes`, `path_deaths`, `probes_missed`,
//! `late_replies`),
//! `keepalives_rx`; gauges
//! `path/<bundle>/<i>/alive`; with NAT rules in the tables, `nat/<counter>`,
//! drops by direction `nat_out_drop/<reason>` and `nat_in_drop/<reason>`,
//! gauge `nat/sessions`; packets waiting for a LAN neighbor, gauge
//! `lan/held`; frames for the gateway itself (ARP, ND, echo)
//! `local/<counter>` (WAN next-hop resolution included: `local/learned`,
//! `local/requests`, `local/unresolved`, `local/cache_full`) and `local_drop/<reason>` (the
//! neighbor cache gauge is in the report); the exception path
//! `kernel/<counter>`, `handoff/<counter>`, `reorder/<counter>`.
//! The order of [`layout`] and [`flatten`] is
//! the same by construction (both walk [`Names`]).

use braid_dpdk::port::PortStats;
use braid_nat::NatDrop;
use braid_shm::stats::StatsLayout;
use braid_tunnel::drop::DropReason;

use crate::config::Tables;
use crate::counters::{reorder_named, DpDrop, Flow, HandoffStats, KernelStats, LocalDrop, WorkerCounters};

const FLOWS: [&str; 4] = ["lan/rx", "lan/tx", "wan/rx", "wan/tx"];
const NAT: [&str; 13] = [
    "nat/out_translated",
    "nat/in_translated",
    "nat/icmp_errors_translated",
    "nat/sessions_created",
    "nat/sessions_expired",
    "nat/sessions_evicted",
    "nat/mappings_created",
    "nat/out_frags_taken",
    "nat/out_frags_reassembled",
    "nat/out_frags_discarded",
    "nat/in_frags_taken",
    "nat/in_frags_reassembled",
    "nat/in_frags_discarded",
];
const LOCAL: [&str; 17] = [
    "local/received",
    "local/arp_replies",
    "local/na_replies",
    "local/echo_v4_replies",
    "local/echo_v6_replies",
    "local/lan_replies",
    "local/wan_replies",
    "local/wan_replies_sent",
    "local/learned",
    "local/requests",
    "local/lan_requests",
    "local/mld_queries",
    "local/mld_reports",
    "local/lan_mld_reports",
    "local/unresolved",
    "local/cache_full",
    "local/requests_lost",
];
const TUNNEL: [&str; 10] = ["tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "rejected", "keepalives_tx", "remote_changes", "path_deaths", "probes_missed", "late_replies"];
/// Each port's own counters, as its PMD keeps them (`rte_eth_stats`):
/// `rx_missed` is what the NIC dropped for want of RX descriptors (the
/// worker too slow), `rx_nombuf` for want of mbufs.
const PORT: [&str; 8] = ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_missed", "rx_errors", "rx_nombuf", "tx_errors"];

/// Whether the tables have NAT rules (and so NAT counters).
fn has_nat(tables: &Tables) -> bool {
    !tables.nat.snat.is_empty() || !tables.nat.dnat.is_empty()
}

/// The stats segment's layout for `tables`.
pub fn layout(tables: &Tables, workers: u16) -> StatsLayout {
    let mut counters = Vec::new();
    for f in FLOWS {
        counters.push(format!("{f}_packets"));
        counters.push(format!("{f}_bytes"));
    }
    counters.extend(WorkerCounters::default().scalars().iter().map(|(n, _)| n.to_string()));
    counters.extend(DpDrop::ALL.iter().map(|d| format!("drop/{}", d.name())));
    counters.extend(DropReason::ALL.iter().map(|d| format!("engine_drop/{}", d.name())));
    counters.extend(LOCAL.iter().map(|s| s.to_string()));
    counters.extend(LocalDrop::ALL.iter().map(|d| format!("local_drop/{}", d.name())));
    counters.extend(KernelStats::default().named().iter().map(|(n, _)| format!("kernel/{n}")));
    counters.extend(HandoffStats::default().named().iter().map(|(n, _)| format!("handoff/{n}")));
    counters.extend(reorder_named(&Default::default()).iter().map(|(n, _)| format!("reorder/{n}")));
    if has_nat(tables) {
        counters.extend(NAT.iter().map(|s| s.to_string()));
        counters.extend(NatDrop::ALL.iter().map(|d| format!("nat_out_drop/{}", d.name())));
        counters.extend(NatDrop::ALL.iter().map(|d| format!("nat_in_drop/{}", d.name())));
    }
    let mut gauges = Vec::new();
    for b in &tables.bundles {
        for t in 0..b.tunnels.len() {
            counters.extend(TUNNEL.iter().map(|c| format!("tunnel/{}/{t}/{c}", b.name)));
            gauges.push(format!("path/{}/{t}/alive", b.name));
        }
    }
    for p in &tables.ports {
        counters.extend(PORT.iter().map(|c| format!("port/{}/{c}", p.name)));
    }
    if has_nat(tables) {
        gauges.push("nat/sessions".to_string());
    }
    gauges.push("lan/held".to_string());
    StatsLayout { workers, counters, gauges }
}

/// Writes one worker's counters and gauges in [`layout`]'s order into the
/// two buffers (cleared first; no allocation once they have grown). `nic`:
/// the ports' own counters, in the tables' port order, from one worker
/// only (the others give none: zeros, so the segment's sum is the ports').
pub fn flatten(tables: &Tables, c: &WorkerCounters, alive: &[Vec<bool>], nic: &[PortStats], counters: &mut Vec<u64>, gauges: &mut Vec<u64>) {
    counters.clear();
    gauges.clear();
    for f in [&c.lan_rx, &c.lan_tx, &c.wan_rx, &c.wan_tx] {
        let Flow { packets, bytes } = *f;
        counters.extend([packets, bytes]);
    }
    counters.extend(c.scalars().iter().map(|(_, v)| *v));
    counters.extend(DpDrop::ALL.iter().map(|d| c.drops.get(*d)));
    counters.extend(DropReason::ALL.iter().map(|d| c.engine.get(*d)));
    let l = &c.local;
    counters.extend([
        l.received,
        l.arp_replies,
        l.na_replies,
        l.echo_v4_replies,
        l.echo_v6_replies,
        l.lan_replies,
        l.wan_replies,
        l.wan_replies_sent,
        l.learned,
        l.requests,
        l.lan_requests,
        l.mld_queries,
        l.mld_reports,
        l.lan_mld_reports,
        l.unresolved,
        l.cache_full,
        l.requests_lost,
    ]);
    counters.extend(l.dropped);
    counters.extend(c.kernel.named().map(|(_, v)| v));
    counters.extend(c.handoff.named().map(|(_, v)| v));
    counters.extend(reorder_named(&c.reorder).map(|(_, v)| v));
    let n = &c.nat;
    let nat = has_nat(tables);
    if nat {
        counters.extend([
            n.out_translated,
            n.in_translated,
            n.icmp_errors_translated,
            n.sessions_created,
            n.sessions_expired,
            n.sessions_evicted,
            n.mappings_created,
            n.out_frags.taken,
            n.out_frags.reassembled,
            n.out_frags.discarded,
            n.in_frags.taken,
            n.in_frags.reassembled,
            n.in_frags.discarded,
        ]);
        counters.extend(n.out_drops);
        counters.extend(n.in_drops);
    }
    for (b, bundle) in tables.bundles.iter().enumerate() {
        for t in 0..bundle.tunnels.len() {
            let tc = c.tunnels.get(b).and_then(|v| v.get(t)).copied().unwrap_or_default();
            counters.extend([tc.tx.packets, tc.tx.bytes, tc.rx.packets, tc.rx.bytes, tc.rejected, tc.keepalives_tx, tc.remote_changes, tc.path_deaths, tc.probes_missed, tc.late_replies]);
            let up = alive.get(b).and_then(|v| v.get(t)).copied().unwrap_or(false);
            gauges.push(up as u64);
        }
    }
    for i in 0..tables.ports.len() {
        let s = nic.get(i).copied().unwrap_or_default();
        counters.extend([s.ipackets, s.ibytes, s.opackets, s.obytes, s.imissed, s.ierrors, s.rx_nombuf, s.oerrors]);
    }
    if nat {
        gauges.push(n.sessions);
    }
    gauges.push(c.lan_held);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::TunnelCounters;

    #[test]
    fn flatten_follows_the_layout() {
        let plain = crate::control::tables_from_doc(crate::control::tests::example_doc().as_bytes()).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(&crate::control::tests::example_doc()).unwrap();
        doc["nat"] = serde_json::json!({"dnat": [{"name": "w", "external": "100.64.0.1", "protocol": "tcp", "port": 80, "internal": "10.1.0.5"}]});
        let tables = crate::control::tables_from_doc(doc.to_string().as_bytes()).unwrap();
        let no_nat = layout(&plain, 1);
        // The longest names the configuration takes fit the segment's
        // names, with hundreds of tunnels.
        let longest = "n".repeat(braid_config::tables::MAX_NAME_LEN);
        let mut wide = plain.clone();
        wide.bundles[0].name = longest.clone();
        wide.ports[0].name = longest;
        let t = wide.bundles[0].tunnels[0].clone();
        wide.bundles[0].tunnels = vec![t; 1000];
        let l = layout(&wide, 1);
        let too_long: Vec<_> = l.counters.iter().chain(&l.gauges).filter(|n| n.len() > braid_shm::stats::NAME_SIZE).collect();
        assert!(too_long.is_empty(), "{too_long:?}");
        assert!(!no_nat.counters.iter().chain(&no_nat.gauges).any(|n| n.starts_with("nat")), "no NAT rule, no NAT counters");
        let l = layout(&tables, 1);
        let mut c = WorkerCounters::default();
        c.lan_rx.add(100);
        c.drops.add(DpDrop::NoRoute);
        c.tunnels = tables.bundles.iter().map(|b| vec![TunnelCounters::default(); b.tunnels.len()]).collect();
        c.tunnels[0][1].tx.add(1000);
        c.tunnels[0][1].remote_changes = 2;
        c.tunnels[0][1].late_replies = 13;
        c.no_live_path = 14;
        c.keepalives_rx = 5;
        c.nat.in_drops[NatDrop::NoSession as usize] = 3;
        c.nat.sessions = 9;
        c.local.arp_replies = 4;
        c.local.drop(LocalDrop::OwnAddrConflict);
        c.local.requests = 3;
        c.local.unresolved = 1;
        c.local.cache_full = 15;
        c.local.requests_lost = 16;
        c.drops.add_n(DpDrop::NextHopUnresolved, 7);
        c.local.lan_requests = 6;
        c.lan_held = 11;
        c.kernel.from_kernel_wan = 12;

        let (mut cs, mut gs) = (Vec::new(), Vec::new());
        let wan = PortStats { ipackets: 21, ibytes: 2100, imissed: 3, rx_nombuf: 4, oerrors: 5, ..Default::default() };
        let nic: Vec<PortStats> = (0..tables.ports.len()).map(|i| if i == 1 { wan } else { PortStats::default() }).collect();
        flatten(&tables, &c, &[vec![true, false]], &nic, &mut cs, &mut gs);
        assert_eq!(cs.len(), l.counters.len());
        assert_eq!(gs.len(), l.gauges.len());
        let at = |name: &str| cs[l.counters.iter().position(|n| n == name).unwrap_or_else(|| panic!("{name}"))];
        let w = &tables.ports[1].name;
        assert_eq!(at(&format!("port/{w}/rx_packets")), 21);
        assert_eq!(at(&format!("port/{w}/rx_bytes")), 2100);
        assert_eq!(at(&format!("port/{w}/rx_missed")), 3);
        assert_eq!(at(&format!("port/{w}/rx_nombuf")), 4);
        assert_eq!(at(&format!("port/{w}/tx_errors")), 5);
        assert_eq!(at(&format!("port/{}/rx_packets", tables.ports[0].name)), 0);
        assert_eq!(at(&format!("tunnel/{}/1/late_replies", tables.bundles[0].name)), 13);
        assert_eq!(at("no_live_path"), 14);
        // A worker that gives no port counters writes zeros (the segment's
        // sum is the one that does).
        let (mut cs2, mut gs2) = (Vec::new(), Vec::new());
        flatten(&tables, &c, &[vec![true, false]], &[], &mut cs2, &mut gs2);
        assert_eq!(cs2.len(), l.counters.len());
        let p0 = l.counters.iter().position(|n| n.starts_with("port/")).unwrap();
        assert!(cs2[p0..].iter().all(|&v| v == 0) && cs2[..p0] == cs[..p0]);
        assert_eq!(at("lan/rx_packets"), 1);
        assert_eq!(at("lan/rx_bytes"), 100);
        assert_eq!(at("drop/no_route"), 1);
        let b = &tables.bundles[0].name;
        assert_eq!(at(&format!("tunnel/{b}/1/tx_bytes")), 1000);
        assert_eq!(at(&format!("tunnel/{b}/0/tx_bytes")), 0);
        assert_eq!(at(&format!("tunnel/{b}/1/remote_changes")), 2);
        assert_eq!(at("keepalives_rx"), 5);
        assert_eq!(at("nat_in_drop/no_session"), 3);
        assert_eq!(at("nat_out_drop/no_session"), 0);
        assert_eq!(at("local/arp_replies"), 4);
        assert_eq!(at("local_drop/own_addr_conflict"), 1);
        assert_eq!((at("local/requests"), at("local/unresolved"), at("local/learned")), (3, 1, 0));
        assert_eq!(at("drop/next_hop_unresolved"), 7);
        assert_eq!(at("local/cache_full"), 15);
        assert_eq!(at("local/requests_lost"), 16);
        assert_eq!(at("local_drop/not_for_us"), 0);
        assert_eq!(at("local/lan_requests"), 6);
        assert_eq!(at("kernel/from_kernel_wan"), 12);
        assert_eq!(gs[0], 1);
        let gauge = |name: &str| gs[l.gauges.iter().position(|n| n == name).unwrap_or_else(|| panic!("{name}"))];
        assert_eq!(gauge("nat/sessions"), 9);
        assert_eq!(gauge("lan/held"), 11);
    }
}
