//! Counters as JSON: what the process prints on exit and writes to its
//! stats file while it runs (the control plane's stats segment replaces
//! the file later).

use std::fmt::Write;
use std::net::SocketAddr;

use braid_dpdk::PortStats;

use crate::config::Tables;
use crate::counters::{NatFrags, WorkerCounters};

fn flow(f: &crate::counters::Flow) -> String {
    format!("{{\"packets\":{},\"bytes\":{}}}", f.packets, f.bytes)
}

fn frags(f: &NatFrags) -> String {
    format!("{{\"taken\":{},\"reassembled\":{},\"discarded\":{}}}", f.taken, f.reassembled, f.discarded)
}

/// The scalars whose name starts with `prefix`, as one JSON object keyed
/// by the rest of their names (`frag/taken` -> `"taken"`).
fn group(scalars: &[(&str, u64)], prefix: &str) -> String {
    let fields: Vec<String> = scalars.iter().filter_map(|(n, v)| n.strip_prefix(prefix).map(|k| format!("\"{k}\":{v}"))).collect();
    format!("{{{}}}", fields.join(","))
}

/// A name from the configuration as a JSON string (quotes and control
/// characters escaped: names are only checked to be non-empty and unique).
fn quoted(name: &str) -> String {
    serde_json::Value::from(name).to_string()
}

fn named(v: &[(&str, u64)]) -> String {
    let body: Vec<String> = v.iter().map(|(n, c)| format!("\"{n}\":{c}")).collect();
    format!("{{{}}}", body.join(","))
}

/// One JSON object: totals, drops by reason (dataplane and engine), and per
/// bundle per tunnel traffic with its share of the bundle's data packets.
/// `remotes` (per bundle, per tunnel) is where each tunnel sends now
/// (`remote_now`: the configured `remote`, or the peer's NAT mapping learned
/// from its packets); a tunnel missing from it shows the configured one.
///
/// `nic`: each port's own counters (`rte_eth_stats`), in the tables' port
/// order, under `"ports"` by port name; ports missing from it are left out.
pub fn json(tables: &Tables, c: &WorkerCounters, alive: &[Vec<bool>], remotes: &[Vec<SocketAddr>], nic: &[PortStats], seconds: f64) -> String {
    let scalars = c.scalars();
    let mut s = String::new();
    let _ = write!(
        s,
        "{{\"seconds\":{seconds:.3},\"lan_rx\":{},\"lan_tx\":{},\"wan_rx\":{},\"wan_tx\":{},\"encapsulated\":{},\"delivered\":{},\"icmp_sent\":{},\"icmp_tunnelled\":{},\"keepalives_rx\":{},\"keepalives\":{},\"stream_restarts\":{},\"no_live_path\":{},\"mss_clamped\":{},\"outer_fragments\":{},\"lan_cut\":{},\"tunnel_cut\":{},\"drops\":{},\"engine_drops\":{},\"bundles\":[",
        flow(&c.lan_rx),
        flow(&c.lan_tx),
        flow(&c.wan_rx),
        flow(&c.wan_tx),
        c.encapsulated,
        c.delivered,
        c.icmp_sent,
        c.icmp_tunnelled,
        c.keepalives_rx,
        c.keepalives,
        c.stream_restarts,
        c.no_live_path,
        c.mss_clamped,
        group(&scalars, "frag/"),
        group(&scalars, "lan_cut/"),
        group(&scalars, "tunnel_cut/"),
        named(&c.drops.named()),
        named(&c.engine.named()),
    );
    for (b, bundle) in tables.bundles.iter().enumerate() {
        let ts = c.tunnels.get(b).map(Vec::as_slice).unwrap_or(&[]);
        let total: u64 = ts.iter().map(|t| t.tx.packets).sum::<u64>().max(1);
        let tunnels: Vec<String> = ts
            .iter()
            .enumerate()
            .map(|(t, tc)| {
                let up = alive.get(b).and_then(|a| a.get(t)).copied().unwrap_or(true);
                let now = remotes.get(b).and_then(|r| r.get(t)).copied().unwrap_or(bundle.tunnels[t].remote);
                format!(
                    "{{\"local\":\"{}\",\"remote\":\"{}\",\"remote_now\":\"{now}\",\"weight\":{},\"alive\":{up},\"tx\":{},\"rx\":{},\"rejected\":{},\"keepalives_tx\":{},\"remote_changes\":{},\"path_deaths\":{},\"probes_missed\":{},\"late_replies\":{},\"tx_share\":{:.4}}}",
                    bundle.tunnels[t].local,
                    bundle.tunnels[t].remote,
                    bundle.tunnels[t].weight,
                    flow(&tc.tx),
                    flow(&tc.rx),
                    tc.rejected,
                    tc.keepalives_tx,
                    tc.remote_changes,
                    tc.path_deaths,
                    tc.probes_missed,
                    tc.late_replies,
                    tc.tx.packets as f64 / total as f64
                )
            })
            .collect();
        let _ = write!(s, "{}{{\"name\":{},\"tunnels\":[{}]}}", if b > 0 { "," } else { "" }, quoted(&bundle.name), tunnels.join(","));
    }
    let n = &c.nat;
    let _ = write!(
        s,
        "],\"nat\":{{\"out_translated\":{},\"in_translated\":{},\"icmp_errors_translated\":{},\"sessions_created\":{},\"sessions_expired\":{},\"sessions_evicted\":{},\"mappings_created\":{},\"sessions\":{},\"out_frags\":{},\"in_frags\":{},\"out_drops\":{},\"in_drops\":{}}}}}",
        n.out_translated,
        n.in_translated,
        n.icmp_errors_translated,
        n.sessions_created,
        n.sessions_expired,
        n.sessions_evicted,
        n.mappings_created,
        n.sessions,
        frags(&n.out_frags),
        frags(&n.in_frags),
        named(&n.named_drops(true)),
        named(&n.named_drops(false)),
    );
    let l = &c.local;
    s.pop();
    let _ = write!(
        s,
        ",\"local\":{{\"received\":{},\"arp_replies\":{},\"na_replies\":{},\"echo_v4_replies\":{},\"echo_v6_replies\":{},\"lan_replies\":{},\"wan_replies\":{},\"wan_replies_sent\":{},\"learned\":{},\"requests\":{},\"lan_requests\":{},\"mld_queries\":{},\"mld_reports\":{},\"lan_mld_reports\":{},\"unresolved\":{},\"cache_full\":{},\"requests_lost\":{},\"neighbors\":{},\"drops\":{}}}}}",
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
        l.neighbors,
        named(&l.named_drops()),
    );
    s.pop();
    let _ = write!(
        s,
        ",\"kernel\":{},\"handoff\":{},\"reorder\":{},\"lan_held\":{}",
        named(&c.kernel.named()),
        named(&c.handoff.named()),
        named(&crate::counters::reorder_named(&c.reorder)),
        c.lan_held
    );
    let ports: Vec<String> = tables
        .ports
        .iter()
        .zip(nic)
        .map(|(p, n)| {
            format!(
                "{}:{{\"rx_packets\":{},\"rx_bytes\":{},\"tx_packets\":{},\"tx_bytes\":{},\"rx_missed\":{},\"rx_errors\":{},\"rx_nombuf\":{},\"tx_errors\":{}}}",
                quoted(&p.name), n.ipackets, n.ibytes, n.opackets, n.obytes, n.imissed, n.ierrors, n.rx_nombuf, n.oerrors
            )
        })
        .collect();
    let _ = write!(s, ",\"ports\":{{{}}}}}", ports.join(","));
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_is_json_with_nat_counters() {
        let tables = crate::control::tables_from_doc(crate::control::tests::example_doc().as_bytes()).unwrap();
        let mut c = crate::counters::WorkerCounters::default();
        c.nat.out_drops[braid_nat::NatDrop::SessionsFull as usize] = 2;
        c.nat.sessions = 5;
        c.local.echo_v6_replies = 3;
        c.local.drop(crate::counters::LocalDrop::NotForUs);
        c.keepalives_rx = 4;
        c.tunnels = vec![vec![crate::counters::TunnelCounters::default(); tables.bundles[0].tunnels.len()]];
        c.tunnels[0][0].remote_changes = 1;
        c.tunnels[0][0].keepalives_tx = 6;
        c.tunnels[0][0].late_replies = 8;
        c.no_live_path = 9;
        let learned: std::net::SocketAddr = "203.0.113.7:61000".parse().unwrap();
        let lan = braid_dpdk::PortStats { ipackets: 7, imissed: 2, ..Default::default() };
        let v: serde_json::Value = serde_json::from_str(&super::json(&tables, &c, &[], &[vec![learned]], &[lan], 1.0)).unwrap();
        let name = &tables.ports[0].name;
        assert_eq!((&v["ports"][name]["rx_packets"], &v["ports"][name]["rx_missed"]), (&7.into(), &2.into()));
        assert_eq!(v["ports"].as_object().unwrap().len(), 1, "only the ports given");
        // Names are any non-empty strings: escaped.
        let mut odd = tables.clone();
        odd.ports[0].name = "lan \"0\"\\".into();
        odd.bundles[0].name = "b\n\"".into();
        let w: serde_json::Value = serde_json::from_str(&super::json(&odd, &c, &[], &[], &[lan], 1.0)).expect("valid JSON");
        assert_eq!(w["ports"]["lan \"0\"\\"]["rx_packets"], 7);
        assert_eq!(w["bundles"][0]["name"], "b\n\"");
        let t0 = &v["bundles"][0]["tunnels"][0];
        assert_eq!(t0["remote_now"], "203.0.113.7:61000");
        assert_eq!(t0["remote"], tables.bundles[0].tunnels[0].remote.to_string());
        let t1 = &v["bundles"][0]["tunnels"][1];
        assert!(t1["remote"].is_string());
        assert_eq!(t1["remote_now"], t1["remote"], "not learned: the configured one");
        assert_eq!(v["keepalives_rx"], 4);
        assert_eq!(v["bundles"][0]["tunnels"][0]["remote_changes"], 1);
        assert_eq!(v["bundles"][0]["tunnels"][0]["keepalives_tx"], 6);
        assert_eq!(v["bundles"][0]["tunnels"][0]["late_replies"], 8);
        assert_eq!(v["no_live_path"], 9);
        assert_eq!(v["nat"]["sessions"], 5);
        assert_eq!(v["nat"]["out_drops"]["sessions_full"], 2);
        assert_eq!(v["nat"]["in_drops"], serde_json::json!({}));
        assert_eq!(v["local"]["echo_v6_replies"], 3);
        assert_eq!(v["local"]["drops"]["not_for_us"], 1);
    }
}
