//! NAT at the tunnel endpoint: the validated `nat` section of the tables
//! mapped to `braid-nat`'s rules, and the limits a worker's shard is built
//! with.
//!
//! Where it runs (see `worker.rs`): LAN -> WAN after routing and before the
//! balancer or the packer (`NatShard::outbound`, the route's peer is the
//! egress that selects an SNAT rule); WAN -> LAN on the packets the
//! re-orderer released (or plain mode decapsulated), before they go to the
//! LAN TX queue (`NatShard::inbound`). Which tunnel carried a packet never
//! reaches the NAT, so per-packet spraying cannot split a flow's mapping.
//! Tables without NAT rules build no shard: the pipeline skips NAT
//! entirely.
//!
//! Shards and workers: each worker owns one `NatShard` and allocates
//! external ports only from its own slice of each pool, so a reply's
//! destination port names its shard (`NatConfig::owner_of`,
//! `inbound_owner`), and an internal endpoint's packets belong to the hash
//! of that endpoint (`outbound_owner`). With several workers a packet that
//! arrives at another worker must be handed to its owner over an
//! `rte_ring` before NAT; today a gateway runs one worker, which owns
//! everything, so nothing is handed over (`NatSetup::workers` is 1).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use braid_nat::{DnatRule, NatConfig, Npt6Rule, Prefix, Proto, SnatRule, Timeouts};

use crate::config::{Nat, NatProtocol};

/// Session slots a busy poll's expiry sweep examines (on top of the
/// engine's own 2 per packet).
pub const EXPIRE_BUSY: usize = 16;
/// Session slots an idle poll's sweep examines: ~0.3-0.5 us of work (a
/// burst arriving meanwhile waits that long in the RX ring); the 2^21
/// slots of 10^6 sessions' table are all looked at within ~8,200 idle
/// polls.
pub const EXPIRE_IDLE: usize = 256;

/// What a worker's NAT shard is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatSetup {
    /// Rules, bound and timeouts, shared by every worker of the gateway.
    pub config: Arc<NatConfig>,
    /// Workers the pools' port ranges are split between.
    pub workers: u16,
}

impl NatSetup {
    /// Whether a shard built for `self` can serve `other` and keep its
    /// sessions: same NAT44 rules, bound, timeouts and split (the hash
    /// seed may differ). NPTv6 rules are stateless: a kept shard takes
    /// the new ones (`NatShard::set_npt6`), its sessions untouched.
    pub fn same_rules(&self, other: &NatSetup) -> bool {
        let (a, b) = (&*self.config, &*other.config);
        self.workers == other.workers
            && a.snat == b.snat
            && a.dnat == b.dnat
            && a.max_sessions == b.max_sessions
            && a.timeouts == b.timeouts
    }
}

/// A per-process random seed for the session hash: LAN hosts cannot choose
/// tuples that collide in the tables. The same for every worker and every
/// snapshot of this process.
pub fn boot_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| RandomState::new().hash_one(std::process::id()))
}

/// The engine's rules for the validated `nat` section, or `None` when it
/// has no rule (NAT off). The route's peer index is the SNAT (and NPTv6)
/// egress id. IPv6 SNAT or DNAT rules are refused: braid-nat's NAT44
/// translates IPv4 only and an IPv6 rule silently not applied would leak
/// internal addresses (IPv6 is translated by NPTv6 rules). With NPTv6
/// rules only, the shard's session tables are built for one session
/// (NPTv6 keeps no state).
pub fn nat_config(nat: &Nat, max_sessions: usize, timeouts: Timeouts, hash_seed: u64) -> Result<Option<NatConfig>, String> {
    if nat.snat.is_empty() && nat.dnat.is_empty() && nat.nptv6.is_empty() {
        return Ok(None);
    }
    let max_sessions = if nat.snat.is_empty() && nat.dnat.is_empty() { 1 } else { max_sessions };
    let npt6 = nat
        .nptv6
        .iter()
        .map(|r| Npt6Rule {
            internal: Prefix::new(r.internal.addr(), r.internal.prefix_len()),
            external: Prefix::new(r.external.addr(), r.external.prefix_len()),
            egress: r.peer.map(|p| p as u32),
        })
        .collect();
    let mut snat = Vec::with_capacity(nat.snat.len());
    for (i, r) in nat.snat.iter().enumerate() {
        if !r.r#match.addr().is_ipv4() {
            return Err(format!("nat.snat[{i}] ({}): IPv6 NAT is not supported by the dataplane", r.name));
        }
        snat.push(SnatRule {
            match_prefix: Prefix::new(r.r#match.addr(), r.r#match.prefix_len()),
            egress: r.peer.map(|p| p as u32),
            pool: r.pool.clone(),
            ports: r.ports.0..=r.ports.1,
        });
    }
    let mut dnat = Vec::with_capacity(nat.dnat.len());
    for (i, r) in nat.dnat.iter().enumerate() {
        if !r.external.is_ipv4() {
            return Err(format!("nat.dnat[{i}] ({}): IPv6 NAT is not supported by the dataplane", r.name));
        }
        dnat.push(DnatRule {
            external: r.external,
            proto: match r.protocol {
                NatProtocol::Tcp => Proto::Tcp,
                NatProtocol::Udp => Proto::Udp,
            },
            port: r.port,
            internal: r.internal,
            internal_port: r.internal_port,
        });
    }
    let config = NatConfig { snat, dnat, npt6, max_sessions, timeouts, hash_seed };
    // The engine's own checks, once here rather than on every worker.
    braid_nat::NatShard::check(&config).map_err(|e| format!("nat: {e}"))?;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Tables};
    use std::net::IpAddr;

    fn tables(nat: serde_json::Value) -> Tables {
        let mut doc: serde_json::Value =
            serde_json::from_str(&crate::lab::config_json(true, ("net_ring0", "net_ring1"), "bundle", &[1, 1], 16, 1500)).unwrap();
        doc["nat"] = nat;
        Tables::from_config(&Config::from_json_str(&doc.to_string()).unwrap()).unwrap()
    }

    #[test]
    fn no_rules_no_nat() {
        let t = tables(serde_json::json!({}));
        assert_eq!(nat_config(&t.nat, 10, Timeouts::default(), 1).unwrap(), None);
    }

    #[test]
    fn rules_map_field_by_field() {
        let t = tables(serde_json::json!({
            "snat": [
                {"name": "to-b", "match": "10.1.0.0/16", "peer": "peer", "pool": ["100.64.0.1", "100.64.0.2"], "ports": "2000-2999"},
                {"name": "any", "match": "10.9.0.0/24", "pool": ["100.64.0.3"]}
            ],
            "dnat": [{"name": "web", "external": "100.64.0.1", "protocol": "tcp", "port": 80, "internal": "10.1.0.5", "internal_port": 8080}]
        }));
        let c = nat_config(&t.nat, 1234, Timeouts::default(), 7).unwrap().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            c.snat,
            vec![
                SnatRule {
                    match_prefix: Prefix::new(ip("10.1.0.0"), 16),
                    egress: Some(0),
                    pool: vec![ip("100.64.0.1"), ip("100.64.0.2")],
                    ports: 2000..=2999
                },
                SnatRule { match_prefix: Prefix::new(ip("10.9.0.0"), 24), egress: None, pool: vec![ip("100.64.0.3")], ports: 1024..=65535 },
            ]
        );
        assert_eq!(
            c.dnat,
            vec![DnatRule { external: ip("100.64.0.1"), proto: Proto::Tcp, port: 80, internal: ip("10.1.0.5"), internal_port: 8080 }]
        );
        assert_eq!((c.max_sessions, c.hash_seed), (1234, 7));
        let a = NatSetup { config: Arc::new(c.clone()), workers: 1 };
        let b = NatSetup { config: Arc::new(NatConfig { hash_seed: 8, ..c.clone() }), workers: 1 };
        assert!(a.same_rules(&b), "the seed is not a rule");
        let c2 = NatSetup { config: Arc::new(NatConfig { max_sessions: 99, ..c }), workers: 1 };
        assert!(!a.same_rules(&c2));
    }

    #[test]
    fn ipv6_rules_are_refused() {
        // braid-config refuses them first, with the rule's path; nat_config
        // keeps its own check for tables built in code.
        let mut t = tables(serde_json::json!({}));
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        t.nat.dnat.push(crate::config::DnatRule {
            name: "v6".into(),
            external: v6("fd00:64::80"),
            protocol: NatProtocol::Tcp,
            port: 80,
            internal: v6("fd00:1::80"),
            internal_port: 80,
        });
        let e = nat_config(&t.nat, 10, Timeouts::default(), 1).unwrap_err();
        assert!(e.contains("nat.dnat[0]") && e.contains("IPv6"), "{e}");
    }
}
