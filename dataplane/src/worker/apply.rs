//! Applying new tables to a running worker, between two bursts.
//!
//! A bundle whose tunnels did not change (same WAN port, endpoints, SAs,
//! mode, policy and frame size) keeps its whole engine: sequence streams,
//! re-orderer, reassembly, liveness; only its tunnels' weights and rates
//! are updated. Routes and the peer -> bundle map are swapped whole. So a
//! change of weights or routes loses nothing in flight. A bundle whose
//! tunnels changed is rebuilt: its re-orderer first delivers what it held,
//! and ESP packets still in flight for a removed SA are dropped as
//! `unknown_spi` (counted).
//!
//! NAT traversal: a tunnel's remote learned from the peer's packets (its
//! NAT rebound) is kept with a kept engine, and carried into a rebuilt
//! bundle for a tunnel whose port, endpoints and inbound SA did not change.
//! A tunnel whose configured remote changed starts from the new one: the
//! configuration wins.
//!
//! NAT: unchanged rules (and session bound, timeouts) keep the worker's
//! shard, so every session survives. Changed rules build a new, empty
//! shard: the sessions of the old one are lost (braid-nat does not carry
//! sessions over a rule change), so replies to flows translated before the
//! change are dropped (`no_session`) and those flows get new mappings.

use std::net::SocketAddrV4;
use std::sync::Arc;

use braid_tunnel::Nanos;

use braid_nat::NatCounters;

use super::{build_bundle, build_nat, port_set, spi_table, BundleSetup, BundleState, Engine, Worker, WorkerSetup};
use crate::counters::TunnelCounters;

/// Whether `new` can keep the engine built for `old`.
fn same_tunnels(old: &BundleSetup, new: &BundleSetup) -> bool {
    old.mode == new.mode
        && old.policy == new.policy
        && old.max_frame == new.max_frame
        && old.tunnels.len() == new.tunnels.len()
        && old.tunnels.iter().zip(&new.tunnels).all(|(a, b)| {
            a.wan == b.wan
                && a.local == b.local
                && a.remote == b.remote
                && Arc::ptr_eq(&a.out, &b.out)
                && a.inbound.spi == b.inbound.spi
                && a.inbound.salt == b.inbound.salt
                && a.inbound.key.as_bytes() == b.inbound.key.as_bytes()
        })
}

/// A remote learned from the peer (other than the configured one), with
/// what identifies its tunnel: inbound SPI, WAN port, local and configured
/// remote addresses. Sorted by SPI.
type Learned = Vec<(u32, usize, SocketAddrV4, SocketAddrV4, SocketAddrV4)>;

/// The remotes the running bundles learned: usually none, so a rebuilt
/// bundle of thousands of tunnels pays a binary search per tunnel at most.
fn learned_remotes(bundles: &[BundleState]) -> Learned {
    let mut learned: Learned = bundles
        .iter()
        .flat_map(|b| b.spec.tunnels.iter().zip(&b.outer))
        .filter(|(ts, outer)| outer.remote() != ts.remote)
        .map(|(ts, outer)| (ts.inbound.spi.0, ts.wan, ts.local, ts.remote, outer.remote()))
        .collect();
    learned.sort_unstable_by_key(|l| l.0);
    learned
}

/// A rebuilt bundle's tunnels take the remote an old tunnel with the same
/// inbound SPI, port, local and configured remote addresses learned.
fn carry_remotes(st: &mut BundleState, learned: &Learned) {
    if learned.is_empty() {
        return;
    }
    for (ts, outer) in st.spec.tunnels.iter().zip(&mut st.outer) {
        let Ok(i) = learned.binary_search_by_key(&ts.inbound.spi.0, |l| l.0) else { continue };
        let (_, wan, local, configured, remote) = learned[i];
        if (wan, local, configured) == (ts.wan, ts.local, ts.remote) {
            outer.set_remote(remote);
        }
    }
}

/// What [`Worker::apply`] did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Bundles that kept their engine state.
    pub kept: usize,
    /// Bundles built new (new, or their tunnels changed).
    pub rebuilt: usize,
    /// Old engines dropped (bundles removed, or rebuilt because their
    /// tunnels changed); what they held was delivered first.
    pub dropped: usize,
}

/// Adds `b`'s engine counters to `a` (drops are counted by the worker).
fn add_nat(a: &mut NatCounters, b: &NatCounters) {
    a.out_translated += b.out_translated;
    a.out_untouched += b.out_untouched;
    a.in_translated += b.in_translated;
    a.in_untouched += b.in_untouched;
    a.icmp_errors_translated += b.icmp_errors_translated;
    a.sessions_created += b.sessions_created;
    a.sessions_expired += b.sessions_expired;
    a.mappings_created += b.mappings_created;
}

impl Worker {
    /// Takes `setup` (new tables) without stopping: see the module doc.
    /// Ports cannot change here (the caller checks); a setup with another
    /// number of WAN ports is refused and changes nothing.
    pub fn apply(&mut self, mut setup: WorkerSetup, now: Nanos) -> Result<Applied, String> {
        if setup.wans.len() != self.wans.len() {
            return Err(format!("{} WAN ports in the new tables, {} running", setup.wans.len(), self.wans.len()));
        }
        // Rebuilt bundles address the next hops resolved so far.
        for (new, running) in setup.wans.iter_mut().zip(&self.wans) {
            if running.next_hop.is_some() {
                new.next_hop_mac = running.next_hop_mac;
            }
        }
        let options_same = setup.replay_window == self.options.replay_window
            && setup.hold == self.options.hold
            && setup.probes == self.options.probes;
        // Whatever is queued goes out (and is counted per tunnel) under the
        // old numbering.
        self.flush_tx();
        // Build everything that can fail before touching the running state.
        let nat_same = match (&self.nat_spec, &setup.nat) {
            (Some(old), Some(new)) => old.same_rules(new),
            (None, None) => true,
            _ => false,
        };
        let new_nat = if nat_same { None } else { Some(build_nat(&setup)?) };
        let learned = learned_remotes(&self.bundles);
        let mut old: Vec<Option<BundleState>> = std::mem::take(&mut self.bundles).into_iter().map(Some).collect();
        let mut plan = Vec::with_capacity(setup.bundles.len());
        for bs in &setup.bundles {
            let keep = options_same
                .then(|| old.iter().position(|o| o.as_ref().is_some_and(|o| same_tunnels(&o.spec, bs))))
                .flatten();
            match keep {
                Some(i) => plan.push(Ok(i)),
                None => match build_bundle(&setup, bs, now) {
                    Ok(st) => plan.push(Err(st)),
                    Err(e) => {
                        self.bundles = old.into_iter().map(|o| o.expect("untouched")).collect();
                        return Err(e);
                    }
                },
            }
        }
        let mut applied = Applied::default();
        let mut old_counters = std::mem::take(&mut self.counters.tunnels);
        let mut bundles = Vec::with_capacity(plan.len());
        let mut counters = Vec::with_capacity(plan.len());
        for (p, bs) in plan.into_iter().zip(&setup.bundles) {
            match p {
                Ok(i) => {
                    let mut st = old[i].take().expect("kept once");
                    if let Engine::Bundle { tx, .. } = &mut st.engine {
                        for (t, ts) in bs.tunnels.iter().enumerate() {
                            tx.balancer_mut().set_params(t, ts.params);
                        }
                    } else if let Engine::Plain(p) = &mut st.engine {
                        for (t, ts) in bs.tunnels.iter().enumerate() {
                            p.balancer.set_params(t, ts.params);
                        }
                    }
                    if st.keepalive != bs.keepalive {
                        st.keepalive = bs.keepalive;
                        st.next_keepalive = now;
                    }
                    st.spec = bs.clone();
                    bundles.push(st);
                    counters.push(std::mem::take(&mut old_counters[i]));
                    applied.kept += 1;
                }
                Err(mut st) => {
                    carry_remotes(&mut st, &learned);
                    bundles.push(st);
                    counters.push(vec![TunnelCounters::default(); bs.tunnels.len()]);
                    applied.rebuilt += 1;
                }
            }
        }
        // Bundles going away deliver what their re-orderers held.
        for st in old.iter_mut().flatten() {
            if let Engine::Bundle { rx, .. } = &mut st.engine {
                let before = self.lan_out.len();
                rx.flush(&mut self.lan_out);
                self.counters.delivered += (self.lan_out.len() - before) as u64;
            }
            applied.dropped += 1;
        }
        self.bundles = bundles;
        self.counters.tunnels = counters;
        self.spis = spi_table(&setup.bundles);
        self.tunnel_ports = port_set(&setup.bundles);
        self.routes = setup.routes;
        self.peer_bundle = setup.peer_bundle;
        self.options.replay_window = setup.replay_window;
        self.options.hold = setup.hold;
        self.options.probes = setup.probes;
        // What the removed bundles delivered goes out through the old NAT.
        self.flush_tx();
        if let Some(nat) = new_nat {
            if let Some(old) = std::mem::replace(&mut self.nat, nat) {
                add_nat(&mut self.nat_retired, old.counters());
            }
            self.nat_spec = setup.nat;
        }
        Ok(applied)
    }
}
