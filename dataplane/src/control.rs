//! The dataplane's control thread and the snapshot exchange with workers.
//!
//! One thread (never a worker, never an lcore) drains the commands ring of
//! the shared-memory segment (`braid-shm`): each committed transaction is a
//! whole configuration document ([`braid_shm::proto`]). It is decoded,
//! validated with `braid-config`'s rules (the segment is never trusted),
//! checked against what cannot change while running (the ports), turned
//! into an immutable [`Snapshot`] and published through the [`Exchange`].
//!
//! Workers look at one atomic per poll ([`Exchange::changed`]); when it
//! moved they take the new snapshot (an `ArcSwap` load, no lock), apply it
//! between two bursts and acknowledge. Only when every worker has
//! acknowledged does the control thread drop the previous snapshot (RCU: the
//! old tables are freed on this thread, off the per-packet path) and answer
//! `Applied` on the events ring. A document that fails is answered
//! `Rejected` with the reason and changes nothing.
//!
//! Outbound SAs are kept across snapshots (and restarts) by the
//! [`SaRegistry`] of `sas.rs`: a tunnel whose SA did not change keeps its
//! sequence counter, so a new table never restarts a counter under a key
//! already used (which would repeat GCM nonces).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use braid_shm::proto::{self, Event, MAX_CONFIG_MSGS};
use braid_shm::stats::{StatsLayout, StatsSegment, StatsWriter};
use braid_shm::{Producer, Ring, Segment, TxnReader};
use braid_nat::NatShard;
use braid_tunnel::sa::OutboundSaPair;

use crate::config::{Config, Tables};
use crate::gateway::{worker_setup_with_nat, PortPlan};
use crate::worker::{PrebuiltBundle, WorkerSetup};
use crate::nat::NatSetup;
use crate::stats;

pub use crate::sas::SaRegistry;

/// One immutable generation of tables, as the workers use it.
pub struct Snapshot {
    /// 0 for the tables the process started with (file), else the control
    /// plane's generation.
    pub generation: u64,
    /// The hash of the control plane's document ([`proto::doc_hash`]), 0
    /// for tables from a file. With the generation, what this snapshot
    /// is: two control processes may number different documents alike.
    pub doc_hash: u64,
    /// The exchange's own count of snapshots published (set by
    /// [`Exchange`]): what tells workers a new one is out, as a document
    /// may come again under the generation that runs.
    seq: u64,
    pub tables: Arc<Tables>,
    /// Outbound SA of every tunnel, by bundle (shared by all workers).
    pub sas: Vec<Vec<Arc<OutboundSaPair>>>,
    /// Each tunnel's inbound SA's kept high, by bundle
    /// ([`SaRegistry::inbound_highs`]); empty: none kept.
    pub rx_highs: Vec<Vec<Arc<AtomicU64>>>,
    /// The NAT rules as the workers' shards take them (made here, off the
    /// workers).
    pub nat: Option<NatSetup>,
    /// Stats writers for a new stats segment (its layout follows the
    /// tables), one per worker, taken by each worker when it applies.
    stats: Mutex<Vec<Option<StatsWriter>>>,
    /// When the NAT rules changed: each worker's new shard, built here
    /// (tens of MB at 10^6 sessions), taken by the worker when it applies.
    nat_shards: Mutex<Vec<Option<Box<NatShard>>>>,
    /// Each worker's setup for these tables and the engines of the bundles
    /// it cannot keep (new, or changed), built here so that the worker
    /// only swaps them in ([`Prebuild`]).
    prebuilt: Mutex<Vec<Option<Prebuilt>>>,
}

/// What the control thread needs to build a worker's setup and engines
/// the way the worker would: what the ports do on TX (by port index) and
/// the workers' clock.
#[derive(Clone)]
pub struct Prebuild {
    pub port_tx: Vec<crate::gateway::PortTx>,
    pub clock: Instant,
    /// Each WAN port's RSS (`WorkerSetup::wan_rss`).
    pub wan_rss: Vec<Option<Arc<braid_dpdk::rss::RssSteering>>>,
}

/// One worker's setup for a snapshot, and engines built for it
/// (`bundles[i]` for `setup.bundles[i]`, `None` where the running engine
/// is expected to be kept).
pub struct Prebuilt {
    pub setup: WorkerSetup,
    pub bundles: Vec<Option<PrebuiltBundle>>,
}

impl Snapshot {
    pub fn new(
        generation: u64,
        tables: Arc<Tables>,
        sas: Vec<Vec<Arc<OutboundSaPair>>>,
        nat: Option<NatSetup>,
        writers: Vec<StatsWriter>,
    ) -> Snapshot {
        Snapshot {
            generation,
            doc_hash: 0,
            seq: 0,
            tables,
            sas,
            rx_highs: Vec::new(),
            nat,
            stats: Mutex::new(writers.into_iter().map(Some).collect()),
            nat_shards: Mutex::new(Vec::new()),
            prebuilt: Mutex::new(Vec::new()),
        }
    }

    /// The same snapshot, for the document that hashes to `doc_hash`.
    pub fn with_doc_hash(mut self, doc_hash: u64) -> Snapshot {
        self.doc_hash = doc_hash;
        self
    }

    /// Its place in the exchange's sequence (the first snapshot is 0).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The same snapshot with the tunnels' kept highs.
    pub fn with_rx_highs(mut self, rx_highs: Vec<Vec<Arc<AtomicU64>>>) -> Snapshot {
        self.rx_highs = rx_highs;
        self
    }

    /// Gives the snapshot each worker's prebuilt setup and engines.
    pub fn with_prebuilt(self, p: Vec<Prebuilt>) -> Snapshot {
        *self.prebuilt.lock().unwrap_or_else(|e| e.into_inner()) = p.into_iter().map(Some).collect();
        self
    }

    /// Worker `id`'s prebuilt setup and engines, if the control thread
    /// made them (once).
    pub fn take_prebuilt(&self, id: u16) -> Option<Prebuilt> {
        self.prebuilt.lock().ok()?.get_mut(id as usize)?.take()
    }

    /// Gives the snapshot each worker's NAT shard, built off the workers.
    pub fn with_nat_shards(self, shards: Vec<Box<NatShard>>) -> Snapshot {
        *self.nat_shards.lock().unwrap_or_else(|e| e.into_inner()) = shards.into_iter().map(Some).collect();
        self
    }

    /// Worker `id`'s prebuilt NAT shard, if the control thread built one.
    pub fn take_nat_shard(&self, id: u16) -> Option<Box<NatShard>> {
        self.nat_shards.lock().ok()?.get_mut(id as usize)?.take()
    }

    /// Worker `id`'s stats writer for this snapshot's stats segment (once).
    pub fn take_stats_writer(&self, id: u16) -> Option<StatsWriter> {
        self.stats.lock().ok()?.get_mut(id as usize)?.take()
    }
}

/// A per-worker acknowledgement on its own cache line.
#[repr(align(64))]
struct Seen(AtomicU64);

/// Where the control thread publishes snapshots and workers acknowledge.
pub struct Exchange {
    /// The current snapshot's `seq`.
    seq: AtomicU64,
    current: ArcSwap<Snapshot>,
    seen: Box<[Seen]>,
    /// What workers replaced (an old NAT shard), dropped by the control
    /// thread: freeing tens of MB is not the worker's job.
    graveyard: Mutex<Vec<Box<dyn Send>>>,
}

impl Exchange {
    /// Hands something a worker replaced to the control thread to drop.
    pub fn retire(&self, x: Box<dyn Send>) {
        self.graveyard.lock().unwrap_or_else(|e| e.into_inner()).push(x);
    }

    /// Drops what the workers retired (the control thread, between
    /// snapshots).
    pub fn bury(&self) -> usize {
        let dead = std::mem::take(&mut *self.graveyard.lock().unwrap_or_else(|e| e.into_inner()));
        dead.len()
    }

    pub fn new(mut first: Snapshot, workers: u16) -> Arc<Exchange> {
        first.seq = 0;
        Arc::new(Exchange {
            seq: AtomicU64::new(0),
            current: ArcSwap::from_pointee(first),
            seen: (0..workers.max(1)).map(|_| Seen(AtomicU64::new(0))).collect(),
            graveyard: Mutex::new(Vec::new()),
        })
    }

    /// Whether a snapshot newer than the one whose `seq` is `mine` is
    /// published: one load, cheap enough for every poll.
    #[inline]
    pub fn changed(&self, mine: u64) -> bool {
        self.seq.load(Ordering::Acquire) != mine
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Worker `id` runs the snapshot whose `seq` is `seq` and holds no
    /// older snapshot.
    pub fn ack(&self, id: u16, seq: u64) {
        if let Some(s) = self.seen.get(id as usize) {
            s.0.store(seq, Ordering::Release);
        }
    }

    /// Publishes `snap` (only the control thread does); returns its `seq`
    /// and the previous snapshot, which the caller must keep until
    /// [`all_seen`](Self::all_seen) (workers may still hold it).
    fn publish(&self, mut snap: Snapshot) -> (u64, Arc<Snapshot>) {
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        snap.seq = seq;
        let old = self.current.swap(Arc::new(snap));
        self.seq.store(seq, Ordering::Release);
        (seq, old)
    }

    /// Every worker runs snapshot `seq` (or a later one).
    pub fn all_seen(&self, seq: u64) -> bool {
        self.seen.iter().all(|s| s.0.load(Ordering::Acquire) >= seq)
    }
}

/// How the control thread runs.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The commands/events segment (created here, 0600).
    pub shm: PathBuf,
    /// The stats segment (re-created on every applied snapshot).
    pub stats: Option<PathBuf>,
    /// Ring capacity in messages.
    pub capacity: u32,
    /// New on every start of the process.
    pub boot_id: u64,
    /// How long workers may take to pick a snapshot up before the control
    /// thread reports it applied anyway (a stuck worker is a bug; the
    /// answer must not wait for ever).
    pub ack_timeout: Duration,
}

/// What the control thread counted.
#[derive(Debug, Default)]
pub struct ControlCounters {
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub events_dropped: AtomicU64,
}

/// The running control thread; [`ControlThread::stop`] ends it.
pub struct ControlThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    shm: PathBuf,
    pub counters: Arc<ControlCounters>,
}

impl ControlThread {
    /// Stops the thread and removes the segment file (a control process
    /// then waits for the next dataplane).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.shm);
    }
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What cannot change without restarting the process: the ports (DPDK
/// devices, roles, MACs, MTUs are set up once). Everything else may.
pub fn compatible(running: &Tables, new: &Tables) -> Result<(), String> {
    if running.ports.len() != new.ports.len() {
        return Err(format!("ports: {} configured, {} running; changing ports needs a dataplane restart", new.ports.len(), running.ports.len()));
    }
    for (i, (a, b)) in running.ports.iter().zip(&new.ports).enumerate() {
        if a != b {
            return Err(format!("ports[{i}] ({}): changing a port needs a dataplane restart", b.name));
        }
    }
    Ok(())
}

/// Decodes, parses and validates one snapshot document.
pub fn tables_from_doc(doc: &[u8]) -> Result<Tables, String> {
    let config: Config = serde_json::from_slice(doc).map_err(|e| format!("config: {e}"))?;
    Tables::from_config(&config).map_err(|e| e.to_string())
}

/// Creates a stats segment laid out for `tables` and one writer per worker.
pub fn stats_segment(path: &Path, tables: &Tables, workers: u16, boot_id: u64) -> Result<(StatsSegment, Vec<StatsWriter>), String> {
    let layout: StatsLayout = stats::layout(tables, workers);
    let seg = StatsSegment::create(path, &layout, boot_id).map_err(|e| format!("stats segment {}: {e}", path.display()))?;
    let writers = (0..workers).map(|w| seg.writer(w).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()?;
    Ok((seg, writers))
}

/// The dataplane's end of the segment, before its thread runs.
pub struct Endpoint {
    cfg: ControlConfig,
    reader: TxnReader,
    events: Producer,
    counters: Arc<ControlCounters>,
    seg: Segment,
}

impl Endpoint {
    /// Creates the segment (replacing any old one at the path) and says
    /// hello: a waiting control process pushes its tables.
    pub fn create(cfg: ControlConfig) -> Result<Endpoint, String> {
        let seg = Segment::create(&cfg.shm, cfg.capacity).map_err(|e| format!("segment {}: {e}", cfg.shm.display()))?;
        let reader = TxnReader::new(seg.consumer(Ring::Commands).map_err(|e| e.to_string())?, MAX_CONFIG_MSGS);
        let events = seg.producer(Ring::Events).map_err(|e| e.to_string())?;
        let mut ep = Endpoint { cfg, reader, events, counters: Arc::default(), seg };
        ep.send(Event::Hello { boot_id: ep.cfg.boot_id, generation: 0 });
        Ok(ep)
    }

    pub fn path(&self) -> &Path {
        self.seg.path()
    }

    fn send(&mut self, e: Event) {
        // Never wait on the control process: with none attached the events
        // ring fills and further events are counted, not queued.
        if self.events.try_push(&e.to_msg()).is_err() {
            self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits for the first valid snapshot (a dataplane started without a
    /// configuration file): its generation, its document's hash and its
    /// tables; refuses invalid ones. `None` once `stop` is set.
    /// `check`: what the process can refuse beyond the document's own
    /// rules (outbound SAs that would repeat nonces): a refused first
    /// document is rejected like an invalid one, and the next awaited
    /// (not an exit the control process would answer with the same
    /// document again).
    /// `until`: give up then (`None` as when stopped).
    pub fn wait_first(&mut self, stop: &AtomicBool, until: Option<Instant>, check: impl Fn(&Tables) -> Result<(), String>) -> Option<(u64, u64, Tables)> {
        while !stop.load(Ordering::Relaxed) && until.is_none_or(|u| Instant::now() < u) {
            let Some(txn) = self.reader.poll() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let generation = txn.id.0;
            let first = proto::config_from_txn(&txn)
                .map_err(|e| e.to_string())
                .and_then(|(_, doc)| tables_from_doc(&doc).map(|t| (proto::doc_hash(&doc), t)))
                .and_then(|(h, t)| check(&t).map(|()| (h, t)));
            match first {
                Ok((hash, t)) => return Some((generation, hash, t)),
                Err(reason) => self.reject(generation, reason),
            }
        }
        None
    }

    /// Tells the control process generation `generation` is refused, and why.
    pub fn reject(&mut self, generation: u64, reason: String) {
        eprintln!("braid-dataplane: configuration generation {generation} rejected: {reason}");
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        self.send(Event::Rejected { generation, reason });
    }

    /// Starts the control thread once the workers run `generation` with
    /// its document's hash (from [`wait_first`](Self::wait_first), answered
    /// `Applied` now, or 0 for a file). `stats` is the first snapshot's
    /// stats segment (its writers already handed out).
    pub fn spawn(
        mut self,
        exchange: Arc<Exchange>,
        registry: Arc<Mutex<SaRegistry>>,
        stats: Option<StatsSegment>,
        workers: u16,
        (generation, doc_hash): (u64, u64),
        prebuild: Option<Prebuild>,
    ) -> Result<ControlThread, String> {
        if generation != 0 {
            self.counters.applied.fetch_add(1, Ordering::Relaxed);
            self.send(Event::Applied { generation, doc_hash });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let counters = self.counters.clone();
        let shm = self.cfg.shm.clone();
        let mut ctl = Ctl { ep: self, exchange, registry, stats, workers, prebuild };
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("braid-control".into())
            .spawn(move || ctl.run(&s))
            .map_err(|e| format!("control thread: {e}"))?;
        Ok(ControlThread { stop, handle: Some(handle), shm, counters })
    }
}

struct Ctl {
    ep: Endpoint,
    exchange: Arc<Exchange>,
    registry: Arc<Mutex<SaRegistry>>,
    stats: Option<StatsSegment>,
    workers: u16,
    prebuild: Option<Prebuild>,
}

impl Ctl {
    /// Each worker's setup for `tables`, and the engines of the bundles the
    /// running tables do not have as they are (by name and tunnels).
    fn prebuild(
        &self,
        (running, running_sas): (&Tables, &[Vec<Arc<OutboundSaPair>>]),
        tables: &Tables,
        sas: &[Vec<Arc<OutboundSaPair>>],
        rx_highs: &[Vec<Arc<AtomicU64>>],
        nat: &Option<NatSetup>,
    ) -> Result<Vec<Prebuilt>, String> {
        let Some(pb) = &self.prebuild else { return Ok(Vec::new()) };
        let plan = PortPlan::new(tables)?;
        let offload = |i: usize| pb.port_tx.get(i).copied().unwrap_or_default();
        let mut out = Vec::with_capacity(self.workers as usize);
        for w in 0..self.workers {
            let setup = crate::worker::WorkerSetup {
                workers: self.workers,
                wan_rss: pb.wan_rss.clone(),
                ..worker_setup_with_nat(tables, &plan, sas, nat.clone(), w, w == 0, offload)?
            }
            .with_rx_highs(rx_highs);
            // The running bundles' specs, as the worker holds them (the
            // same SAs: the registry keeps unchanged ones).
            let old = crate::worker::WorkerSetup {
                workers: self.workers,
                wan_rss: pb.wan_rss.clone(),
                ..worker_setup_with_nat(running, &PortPlan::new(running)?, running_sas, None, w, w == 0, offload)?
            };
            let options_same =
                old.replay_window == setup.replay_window && old.hold == setup.hold && old.probes == setup.probes;
            let now = pb.clock.elapsed().as_nanos() as u64;
            let bundles = setup
                .bundles
                .iter()
                .map(|bs| {
                    let kept = options_same && old.bundles.iter().any(|o| crate::worker::keeps_engine(o, bs));
                    if kept { Ok(None) } else { crate::worker::prebuild_bundle(&setup, bs, now).map(Some) }
                })
                .collect::<Result<Vec<_>, String>>()?;
            out.push(Prebuilt { setup, bundles });
        }
        Ok(out)
    }

    fn run(&mut self, stop: &AtomicBool) {
        let t0 = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if let Some(s) = &self.stats {
                s.set_heartbeat(t0.elapsed().as_nanos() as u64);
            }
            self.exchange.bury();
            match self.ep.reader.poll() {
                Some(txn) => {
                    let generation = txn.id.0;
                    let result = proto::config_from_txn(&txn).map_err(|e| e.to_string()).and_then(|(_, doc)| {
                        let doc_hash = proto::doc_hash(&doc);
                        self.apply(generation, doc_hash, &doc).map(|()| doc_hash)
                    });
                    match result {
                        Ok(doc_hash) => {
                            self.ep.counters.applied.fetch_add(1, Ordering::Relaxed);
                            self.ep.send(Event::Applied { generation, doc_hash });
                        }
                        Err(reason) => self.ep.reject(generation, reason),
                    }
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    fn apply(&mut self, generation: u64, doc_hash: u64, doc: &[u8]) -> Result<(), String> {
        let t0 = Instant::now();
        let tables = tables_from_doc(doc)?;
        let running = self.exchange.current();
        compatible(&running.tables, &tables)?;
        if (generation, doc_hash) == (running.generation, running.doc_hash) {
            // A control process re-sending what runs (resync): nothing to
            // do. The same generation with another document (a control
            // process whose state was wiped counts from 1 again) is
            // applied like any new one.
            return Ok(());
        }
        let running_nat = running.nat.clone();
        let running_tables = running.tables.clone();
        let running_sas = running.sas.clone();
        drop(running);
        let nat = crate::gateway::nat_setup(&tables, self.workers)?;
        // New rules: the workers' shards are built here, so a worker only
        // swaps pointers when it applies (and drops the old one here too,
        // `Exchange::retire`).
        let shards = match (&nat, &running_nat) {
            (Some(new), Some(old)) if new.same_rules(old) => Vec::new(),
            (Some(new), _) => (0..self.workers)
                .map(|w| NatShard::new(&new.config, usize::from(w), usize::from(new.workers)).map(Box::new).map_err(|e| format!("nat: {e}")))
                .collect::<Result<Vec<_>, _>>()?,
            (None, _) => Vec::new(),
        };
        let (sas, rx_highs) = {
            let mut registry = self.registry.lock().map_err(|_| "SA registry poisoned".to_string())?;
            (registry.for_tables(&tables)?, registry.inbound_highs(&tables))
        };
        let (seg, writers) = match &self.ep.cfg.stats {
            Some(path) => {
                let (seg, w) = stats_segment(path, &tables, self.workers, self.ep.cfg.boot_id)?;
                (Some(seg), w)
            }
            None => (None, Vec::new()),
        };
        let built = t0.elapsed();
        let prebuilt = self.prebuild((&running_tables, &running_sas), &tables, &sas, &rx_highs, &nat)?;
        let snapshot = Snapshot::new(generation, Arc::new(tables), sas, nat, writers).with_rx_highs(rx_highs).with_doc_hash(doc_hash);
        let (seq, old) = self.exchange.publish(snapshot.with_nat_shards(shards).with_prebuilt(prebuilt));
        let published = Instant::now();
        let deadline = Instant::now() + self.ep.cfg.ack_timeout;
        while !self.exchange.all_seen(seq) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        if !self.exchange.all_seen(seq) {
            eprintln!("braid-dataplane: a worker did not pick up generation {generation} within {:?}", self.ep.cfg.ack_timeout);
        }
        eprintln!(
            "braid-dataplane: generation {generation}: {} bytes parsed, validated and built in {:.1} ms, workers switched in {:.1} ms",
            doc.len(),
            built.as_secs_f64() * 1e3,
            published.elapsed().as_secs_f64() * 1e3
        );
        // The previous tables are freed here, on this thread, once no
        // worker holds them.
        drop(old);
        if let Some(seg) = seg {
            seg.set_applied(generation, doc_hash);
            self.stats = Some(seg);
        } else if let Some(s) = &self.stats {
            s.set_applied(generation, doc_hash);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The example document of docs/config.md.
    pub(crate) fn example_doc() -> String {
        let doc = include_str!("../../docs/config.md");
        let start = doc.find("```json").expect("a json block") + 7;
        let len = doc[start..].find("```").unwrap();
        doc[start..start + len].to_string()
    }

    fn example_tables() -> Tables {
        tables_from_doc(example_doc().as_bytes()).unwrap()
    }

    #[test]
    fn exchange_tells_workers_and_waits_for_every_ack() {
        let tables = Arc::new(example_tables());
        let ex = Exchange::new(Snapshot::new(0, tables.clone(), Vec::new(), None, Vec::new()), 2);
        assert!(!ex.changed(0));
        let (seq, old) = ex.publish(Snapshot::new(5, tables.clone(), Vec::new(), None, Vec::new()));
        assert_eq!((seq, old.generation), (1, 0));
        assert!(ex.changed(0));
        assert_eq!((ex.current().generation, ex.current().seq()), (5, 1));
        assert!(!ex.all_seen(1));
        ex.ack(0, 1);
        assert!(!ex.all_seen(1));
        ex.ack(1, 1);
        assert!(ex.all_seen(1));
        // The same generation again (another document): still news.
        let (seq, _) = ex.publish(Snapshot::new(5, tables, Vec::new(), None, Vec::new()).with_doc_hash(9));
        assert_eq!(seq, 2);
        assert!(ex.changed(1));
        assert!(!ex.all_seen(2));
        // What a worker replaced is dropped by whoever buries it.
        ex.retire(Box::new(vec![0u8; 1 << 20]));
        ex.retire(Box::new(7u32));
        assert_eq!(ex.bury(), 2);
        assert_eq!(ex.bury(), 0);
    }

    #[test]
    fn prebuilt_nat_shards_are_taken_once_per_worker() {
        let tables = Arc::new(example_tables());
        let cfg = braid_nat::NatConfig { max_sessions: 100, ..Default::default() };
        let shards = (0..2).map(|w| Box::new(NatShard::new(&cfg, w, 2).unwrap())).collect();
        let snap = Snapshot::new(1, tables, Vec::new(), None, Vec::new()).with_nat_shards(shards);
        assert_eq!(snap.take_nat_shard(1).map(|s| s.worker()), Some(1));
        assert!(snap.take_nat_shard(1).is_none(), "once");
        assert_eq!(snap.take_nat_shard(0).map(|s| s.worker()), Some(0));
        assert!(snap.take_nat_shard(2).is_none());
    }
}
