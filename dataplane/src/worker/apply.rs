//! Applying new tables to a running worker, between two bursts.
//!
//! A bundle whose tunnels did not change (same WAN port, endpoints, SAs,
//! mode, policy and frame size) keeps its whole engine: sequence streams,
//! re-orderer, reassembly, liveness; only its tunnels' weights and rates
//! are updated. Routes and the peer -> bundle map are swapped whole. So a
//! change of weights or routes loses nothing in flight. A bundle whose
//! tunnels changed (another policy, a tunnel added, removed or with other
//! keys) is rebuilt, and when the old tables had a bundle of the same name
//! the new engine takes over its state, so that the rebuild loses nothing
//! in either direction:
//! - the sender's stream goes on from the old one's stream and flow
//!   sequences (the peer's re-orderer for this worker's stream sees one
//!   unbroken stream; a stream starting over was dropped there as
//!   `reorder_duplicate` / `reorder_too_late` until each bucket caught up);
//! - the receiver keeps its re-orderers (what they hold, each bucket's
//!   next sequence) and the fragments being reassembled;
//! - a tunnel on the same path (WAN port, local and configured remote
//!   addresses) keeps its counters, what the re-orderers know of the path
//!   and, at the same index, its liveness; with the same inbound SA (SPI,
//!   key, salt, replay window size) it keeps that SA and its replay window.
//!
//! ESP packets still in flight for a removed or re-keyed inbound SA are
//! dropped as `not_tunnel` (no tunnel has their UDP port any more),
//! `unknown_spi` or `auth_failed` (counted). Without a bundle
//! of the same name, a rebuilt bundle starts fresh: its re-orderer first
//! delivers what it held. The counters of removed tunnels go to
//! `retired_tunnels`, the drops of replaced engines stay in `engine`.
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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use braid_tunnel::engine::Predecessor;
use braid_tunnel::Nanos;

use braid_nat::{NatCounters, NatShard};

use super::{build_bundle, build_nat, port_set, spi_table, BundleSetup, BundleState, Engine, Worker, WorkerSetup};
use crate::counters::TunnelCounters;

/// Whether a worker running bundle `old` keeps its engine for `new` (when
/// the tables' engine options are unchanged too).
pub fn keeps_engine(old: &BundleSetup, new: &BundleSetup) -> bool {
    same_tunnels(old, new)
}

/// A bundle's engine built ahead of [`Worker::apply_with`], off the worker
/// (the control thread), for the same worker and setup.
pub struct PrebuiltBundle {
    worker: u16,
    st: BundleState,
}

/// Builds bundle `bs`'s engine for worker `setup.id`, as `apply` would.
pub fn prebuild_bundle(setup: &WorkerSetup, bs: &BundleSetup, now: Nanos) -> Result<PrebuiltBundle, String> {
    build_bundle(setup, bs, now).map(|st| PrebuiltBundle { worker: setup.id, st })
}

/// Whether `new` can keep the engine built for `old`.
fn same_tunnels(old: &BundleSetup, new: &BundleSetup) -> bool {
    old.mode == new.mode
        && old.policy == new.policy
        && old.max_frame == new.max_frame
        && old.outer_fragmentation == new.outer_fragmentation
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
type Learned = Vec<(u32, usize, SocketAddr, SocketAddr, SocketAddr)>;

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

/// For each tunnel of `new`, the tunnel of `old` on the same path (WAN
/// port, local and configured remote addresses), and whether its inbound
/// SA is the same (`replay_same`: the replay window size did not change).
fn predecessors(old: &BundleSetup, new: &BundleSetup, replay_same: bool) -> Vec<Option<Predecessor>> {
    let mut by_path: Vec<((usize, SocketAddr, SocketAddr), usize)> =
        old.tunnels.iter().enumerate().map(|(j, t)| ((t.wan, t.local, t.remote), j)).collect();
    by_path.sort_unstable();
    new.tunnels
        .iter()
        .map(|t| {
            let at = by_path.binary_search_by(|e| e.0.cmp(&(t.wan, t.local, t.remote))).ok()?;
            let j = by_path[at].1;
            let o = &old.tunnels[j].inbound;
            let same = o.spi == t.inbound.spi && o.salt == t.inbound.salt && o.key.as_bytes() == t.inbound.key.as_bytes();
            Some(Predecessor { tunnel: j, same_inbound: replay_same && same })
        })
        .collect()
}

/// A rebuilt bundle `st` takes over from `old`, the running bundle of the
/// same name (see the module doc): streams, re-orderers, reassembly, and
/// per tunnel on the same path its counters (moved out of `old_counters`),
/// the re-orderers' view of the path and, same SA, its replay window.
fn take_over(st: &mut BundleState, old: &mut BundleState, counters: &mut [TunnelCounters], old_counters: &mut [TunnelCounters], replay_same: bool) {
    let preds = predecessors(&old.spec, &st.spec, replay_same);
    match (&mut st.engine, &mut old.engine) {
        (Engine::Bundle { tx, rx }, Engine::Bundle { tx: old_tx, rx: old_rx }) => {
            tx.continue_from(old_tx, &preds);
            rx.continue_from(old_rx, &preds);
        }
        (Engine::Plain(p), Engine::Plain(old_p)) => {
            for (i, pred) in preds.iter().enumerate() {
                if let Some(pred) = pred.filter(|p| p.same_inbound) {
                    std::mem::swap(&mut p.inbound[i], &mut old_p.inbound[pred.tunnel]);
                }
            }
        }
        _ => {}
    }
    for (i, pred) in preds.iter().enumerate() {
        let Some(pred) = pred else { continue };
        let j = pred.tunnel;
        if let Some(c) = old_counters.get_mut(j) {
            counters[i] = std::mem::take(c);
        }
        st.rx_paths[i] = old.rx_paths[j];
        st.missed_seen[i] = old.missed_seen[j];
    }
}

/// The inbound SPIs of the tunnels of `bundles` that worker `id` owns
/// and another worker owned before (`old_owner`).
fn moved_in(bundles: &[BundleState], old_owner: &HashMap<u32, u16>, id: u16) -> Vec<u32> {
    let tunnels = bundles.iter().flat_map(|st| st.spec.tunnels.iter().zip(&st.owner));
    tunnels
        .filter(|(spec, owner)| **owner == id && old_owner.get(&spec.inbound.spi.0).is_some_and(|o| *o != id))
        .map(|(spec, _)| spec.inbound.spi.0)
        .collect()
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
    a.sessions_evicted += b.sessions_evicted;
    a.mappings_created += b.mappings_created;
}

impl Worker {
    /// Takes `setup` (new tables) without stopping: see the module doc.
    /// Ports cannot change here (the caller checks); a setup with another
    /// number of WAN ports is refused and changes nothing.
    /// The NAT shard the last new rules replaced, to be dropped off the
    /// worker (its tables are tens of MB: `Exchange::retire`); dropped
    /// with the worker otherwise.
    pub fn take_retired_nat(&mut self) -> Option<Box<NatShard>> {
        self.retired_nat.take()
    }

    pub fn apply(&mut self, setup: WorkerSetup, now: Nanos) -> Result<Applied, String> {
        self.apply_with(setup, None, Vec::new(), now)
    }

    /// [`Worker::apply`] with this worker's NAT shard for the new rules
    /// already built (by the control thread, off the per-packet path:
    /// `Snapshot::take_nat_shard`); one that does not fit the new rules'
    /// worker split is ignored and a shard is built here.
    ///
    /// `prebuilt[i]`, when given, is the engine of `setup.bundles[i]` built
    /// ahead ([`prebuild_bundle`]): used instead of building one here when
    /// the bundle is not kept.
    pub fn apply_with(
        &mut self,
        mut setup: WorkerSetup,
        prebuilt_nat: Option<Box<NatShard>>,
        mut prebuilt: Vec<Option<PrebuiltBundle>>,
        now: Nanos,
    ) -> Result<Applied, String> {
        if setup.wans.len() != self.wans.len() {
            return Err(format!("{} WAN ports in the new tables, {} running", setup.wans.len(), self.wans.len()));
        }
        // Rebuilt bundles address the next hops resolved so far.
        for (new, running) in setup.wans.iter_mut().zip(&self.wans) {
            if running.next_hop.is_some() {
                new.next_hop_mac = running.next_hop_mac;
            }
        }
        // The running windows' tops, for the windows that replace them
        // (also those not settled: this may be their last say).
        self.publish_all_rx_highs();
        let replay_same = setup.replay_window == self.options.replay_window;
        let options_same = replay_same
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
        let prebuilt_nat = prebuilt_nat.filter(|s| {
            setup.nat.as_ref().is_some_and(|n| s.worker() == usize::from(self.id) && s.n_workers() == usize::from(n.workers))
        });
        let new_nat = match (nat_same, prebuilt_nat) {
            (true, _) => None,
            (false, Some(s)) => Some(Some(s)),
            (false, None) => Some(build_nat(&setup)?),
        };
        // A kept shard takes the new NPTv6 rules (stateless).
        let new_npt6 = match (nat_same, &setup.nat) {
            (true, Some(n)) => Some(braid_nat::Npt6::new(&n.config.npt6).map_err(|e| format!("nat: {e}"))?),
            _ => None,
        };
        let learned = learned_remotes(&self.bundles);
        // Each inbound SA's owner before: a tunnel that comes to this
        // worker from another settles its window later
        // (`settle_moved_windows`).
        let old_owner: HashMap<u32, u16> = self
            .bundles
            .iter()
            .flat_map(|st| st.spec.tunnels.iter().zip(&st.owner).map(|(t, o)| (t.inbound.spi.0, *o)))
            .collect();
        let mut old: Vec<Option<BundleState>> = std::mem::take(&mut self.bundles).into_iter().map(Some).collect();
        let mut plan = Vec::with_capacity(setup.bundles.len());
        let mut prebuilt_used = false;
        for (b, bs) in setup.bundles.iter().enumerate() {
            let keep = options_same
                .then(|| old.iter().position(|o| o.as_ref().is_some_and(|o| same_tunnels(&o.spec, bs))))
                .flatten();
            // An engine built ahead for exactly this bundle and worker.
            let ready = prebuilt
                .get_mut(b)
                .and_then(Option::take)
                .filter(|p| p.worker == self.id && same_tunnels(&p.st.spec, bs));
            match (keep, ready) {
                (Some(i), _) => plan.push(Ok(i)),
                (None, Some(p)) => {
                    prebuilt_used = true;
                    plan.push(Err(p.st))
                }
                (None, None) => match build_bundle(&setup, bs, now) {
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
        let mut rebuilt = Vec::new();
        for (p, bs) in plan.into_iter().zip(&setup.bundles) {
            match p {
                Ok(i) => {
                    let mut st = old[i].take().expect("kept once");
                    if let Engine::Bundle { tx, .. } = &mut st.engine {
                        for (t, ts) in bs.tunnels.iter().enumerate() {
                            // The configured weight and rate; the delay
                            // measured so far stays (a worker that does
                            // not probe would otherwise balance on 0 until
                            // the prober's view next changed; found by
                            // review).
                            let delay = tx.balancer().params(t).map_or(ts.params.delay, |p| p.delay);
                            tx.balancer_mut().set_params(t, braid_tunnel::balancer::PathParams { delay, ..ts.params });
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
                    rebuilt.push(bundles.len());
                    bundles.push(st);
                    counters.push(vec![TunnelCounters::default(); bs.tunnels.len()]);
                    applied.rebuilt += 1;
                }
            }
        }
        // Rebuilt bundles take over from the old bundle of the same name
        // (once every kept engine is taken).
        for k in rebuilt {
            let st = &mut bundles[k];
            let Some(i) = old.iter().position(|o| o.as_ref().is_some_and(|o| o.spec.name == st.spec.name)) else { continue };
            let o = old[i].as_mut().expect("found");
            take_over(st, o, &mut counters[k], &mut old_counters[i], replay_same);
        }
        // Bundles going away deliver what their re-orderers held (none
        // when a rebuilt bundle took the re-orderers over); their drops
        // and the counters of tunnels that are gone stay counted.
        for st in old.iter_mut().flatten() {
            if let Engine::Bundle { tx, rx } = &mut st.engine {
                let before = self.lan_out.len();
                rx.flush(&mut self.lan_out);
                self.counters.delivered += (self.lan_out.len() - before) as u64;
                self.counters.engine.merge(tx.counters());
                self.counters.engine.merge(rx.counters());
                self.counters.stream_restarts += rx.stats().stream_restarts;
                self.counters.reorder.merge(&rx.reorder_counters());
            }
            applied.dropped += 1;
        }
        for c in old_counters.iter().flatten() {
            self.counters.retired_tunnels.merge(c);
        }
        self.bundles = bundles;
        self.raise_rx_floors();
        let moved = moved_in(&self.bundles, &old_owner, self.id);
        self.moved_in.extend(moved);
        // Sorted, for `publish_rx_highs`'s lookups every millisecond.
        self.moved_in.sort_unstable();
        self.moved_in.dedup();
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
        if prebuilt_used {
            // Engines built ahead know the WAN next hops' configured MACs,
            // not the ones resolved since.
            for w in 0..self.wans.len() {
                if self.wans[w].next_hop.is_some() {
                    self.set_next_hop_mac(w, self.wans[w].next_hop_mac);
                }
            }
        }
        if let Some(nat) = new_nat {
            if let Some(old) = std::mem::replace(&mut self.nat, nat) {
                add_nat(&mut self.nat_retired, old.counters());
                self.retired_nat = Some(old);
            }
            self.nat_spec = setup.nat;
        } else if let (Some(npt6), Some(shard)) = (new_npt6, self.nat.as_deref_mut()) {
            shard.set_npt6(npt6);
            self.nat_spec = setup.nat;
        }
        Ok(applied)
    }
}
