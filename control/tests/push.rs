//! The push to the dataplane, with this test playing the dataplane on a
//! real `braid-shm` segment: snapshots arrive whole with their generation,
//! a dataplane restart gets a full resync, and a control process killed
//! with SIGKILL and restarted resends nothing twice and never goes back.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use braid_config::Config;
use braid_shm::proto::{self, Event, MAX_CONFIG_MSGS};
use braid_shm::stats::{StatsLayout, StatsSegment};
use braid_shm::{Producer, Ring, Segment, TxnReader};
use common::{example, Server, TempDir};
use serde_json::{json, Value};

/// The dataplane's end of a segment.
struct FakeDataplane {
    _seg: Segment,
    reader: TxnReader,
    events: Producer,
    /// The hash of each generation's document received.
    hashes: std::collections::HashMap<u64, u64>,
}

impl FakeDataplane {
    /// Creates (or replaces) the segment and says hello.
    fn start(path: &Path, boot_id: u64, generation: u64) -> FakeDataplane {
        let seg = Segment::create(path, 256).unwrap();
        let reader = TxnReader::new(seg.consumer(Ring::Commands).unwrap(), MAX_CONFIG_MSGS);
        let mut events = seg.producer(Ring::Events).unwrap();
        events.try_push(&Event::Hello { boot_id, generation }.to_msg()).unwrap();
        FakeDataplane { _seg: seg, reader, events, hashes: Default::default() }
    }

    /// The next snapshot within `timeout`: generation and document.
    fn next(&mut self, timeout: Duration) -> Option<(u64, Config)> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(txn) = self.reader.poll() {
                let (g, doc) = proto::config_from_txn(&txn).expect("a whole snapshot");
                self.hashes.insert(g, proto::doc_hash(&doc));
                return Some((g, serde_json::from_slice(&doc).expect("the document parses")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    /// Every snapshot that arrives within `window`.
    fn all(&mut self, window: Duration) -> Vec<u64> {
        let mut out = Vec::new();
        let deadline = Instant::now() + window;
        while let Some((g, _)) = self.next(deadline.saturating_duration_since(Instant::now())) {
            out.push(g);
        }
        out
    }

    fn say(&mut self, e: Event) {
        self.events.try_push(&e.to_msg()).unwrap();
    }

    /// The hash of the document received as `generation`.
    fn hash_of(&self, generation: u64) -> u64 {
        *self.hashes.get(&generation).unwrap_or_else(|| panic!("generation {generation} never arrived"))
    }

    /// Answers `Applied` for the document received as `generation`.
    fn applied(&mut self, generation: u64) {
        let doc_hash = self.hash_of(generation);
        self.say(Event::Applied { generation, doc_hash });
    }
}

fn config(v: &Value) -> Config {
    serde_json::from_value(v.clone()).unwrap()
}

fn status(s: &Server) -> Value {
    s.req("GET", "/v1/status", None).1
}

/// Polls the status until `f` holds.
#[track_caller]
fn wait_status(s: &Server, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = status(s);
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "waiting for {what}: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const T: Duration = Duration::from_secs(10);

#[test]
fn snapshots_arrive_with_their_generation_and_a_restarted_dataplane_is_resynced() {
    let dir = TempDir::new("push");
    let shm = dir.path().join("shm");
    let s = Server::start(dir.path(), &["--shm", shm.to_str().unwrap()]);
    // No dataplane yet: the API works, the status says so.
    assert_eq!(s.req("PUT", "/v1/config", Some(&example())).0, 200);
    let st = status(&s);
    assert_eq!(st["dataplane"]["attached"], false, "{st}");
    assert_eq!(st["dataplane"]["in_sync"], false);

    // The dataplane starts (generation 0 from its file): it gets generation 1, keys included.
    let mut dp = FakeDataplane::start(&shm, 0xa, 0);
    let (g, doc) = dp.next(T).expect("a snapshot after attaching");
    assert_eq!(g, 1);
    assert_eq!(doc, config(&example()));
    dp.applied(1);
    let st = wait_status(&s, "in sync", |v| v["dataplane"]["in_sync"] == true);
    assert_eq!(st["dataplane"]["boot_id"], 0xa);
    assert_eq!(st["dataplane"]["attached"], true);

    // Each change arrives once, whole, with the next generation.
    let (st, _) = s.req("PUT", "/v1/bundles/to-site-b/tunnels/2/weight", Some(&json!({ "weight": 4 })));
    assert_eq!(st, 200);
    let (g, doc) = dp.next(T).expect("generation 2");
    assert_eq!((g, doc.bundles[0].tunnels[2].weight), (2, 4));
    assert_eq!(s.req("POST", "/v1/routes", Some(&json!({ "prefix": "10.9.0.0/16", "peer": "site-b" }))).0, 201);
    let (g, doc) = dp.next(T).expect("generation 3");
    assert_eq!((g, doc.routes.len()), (3, 4));
    // A refused change sends nothing.
    assert_eq!(s.req("POST", "/v1/routes", Some(&json!({ "prefix": "10.9.0.0/16", "peer": "nobody" }))).0, 409);
    assert_eq!(dp.all(Duration::from_millis(300)), Vec::<u64>::new());
    dp.applied(3);
    wait_status(&s, "applied 3", |v| v["dataplane"]["applied_generation"] == 3);

    // A rejection is reported.
    dp.say(Event::Rejected { generation: 3, reason: "ports[0] (lan0): changing a port needs a dataplane restart".into() });
    let st = wait_status(&s, "rejection", |v| !v["dataplane"]["last_rejected"].is_null());
    assert_eq!(st["dataplane"]["last_rejected"]["generation"], 3);

    // A Hello of the same dataplane running an older generation: resync.
    dp.say(Event::Hello { boot_id: 0xa, generation: 2 });
    assert_eq!(dp.next(T).map(|(g, _)| g), Some(3));

    // The dataplane restarts: a new segment under the same name, a new boot id.
    let resyncs = status(&s)["dataplane"]["resyncs"].as_u64().unwrap();
    drop(dp);
    let mut dp = FakeDataplane::start(&shm, 0xb, 0);
    let (g, doc) = dp.next(T).expect("a full resync after the dataplane restarted");
    assert_eq!(g, 3);
    assert_eq!(doc.routes.len(), 4);
    assert_eq!(doc.bundles[0].tunnels[2].weight, 4);
    dp.applied(3);
    let st = wait_status(&s, "resynced", |v| v["dataplane"]["boot_id"] == 0xb && v["dataplane"]["in_sync"] == true);
    assert!(st["dataplane"]["resyncs"].as_u64().unwrap() > resyncs, "{st}");
    // Sent once only.
    assert_eq!(dp.all(Duration::from_millis(500)), Vec::<u64>::new());

    // The dataplane goes away (segment removed): detached, and the API still works.
    drop(dp);
    std::fs::remove_file(&shm).unwrap();
    wait_status(&s, "detached", |v| v["dataplane"]["attached"] == false);
    assert_eq!(s.req("DELETE", "/v1/routes/10.9.0.0%2F16", None).0, 200);
    let mut dp = FakeDataplane::start(&shm, 0xc, 3);
    assert_eq!(dp.next(T).map(|(g, d)| (g, d.routes.len())), Some((4, 3)));
}

#[test]
fn a_control_process_killed_and_restarted_resends_nothing_twice() {
    let dir = TempDir::new("kill9");
    let shm = dir.path().join("shm");
    let args = ["--shm", shm.to_str().unwrap()];
    let mut dp = FakeDataplane::start(&shm, 0x1, 0);
    let mut s = Server::start(dir.path(), &args);
    assert_eq!(s.req("PUT", "/v1/config", Some(&example())).0, 200);
    assert_eq!(dp.next(T).map(|(g, _)| g), Some(1));
    dp.applied(1);
    assert_eq!(s.req("PUT", "/v1/bundles/to-site-b/tunnels/0/weight", Some(&json!({ "weight": 3 }))).0, 200);
    assert_eq!(dp.next(T).map(|(g, _)| g), Some(2));
    dp.applied(2);
    wait_status(&s, "in sync", |v| v["dataplane"]["in_sync"] == true);

    s.kill9();
    // While it is gone the dataplane keeps its tables; then a new control
    // process attaches. Without a stats segment it cannot know what the
    // dataplane runs, so it sends its generation once: the same one, not
    // a new one.
    let s = Server::start(dir.path(), &args);
    assert_eq!(s.generation(), 2);
    assert_eq!(dp.all(Duration::from_millis(1500)), vec![2]);
    dp.applied(2);
    wait_status(&s, "in sync again", |v| v["dataplane"]["in_sync"] == true);
    // The next change continues the sequence.
    assert_eq!(s.req("PUT", "/v1/bundles/to-site-b/tunnels/0/weight", Some(&json!({ "weight": 5 }))).1["generation"], 3);
    let (g, doc) = dp.next(T).unwrap();
    assert_eq!((g, doc.bundles[0].tunnels[0].weight), (3, 5));
    assert_eq!(dp.all(Duration::from_millis(300)), Vec::<u64>::new());
}

/// A dataplane started with `--stats` (boot id 0x7) and a control
/// process that pushed it generation 1, which it applied.
struct WithStats {
    dir: TempDir,
    shm: std::path::PathBuf,
    stats: std::path::PathBuf,
    seg: StatsSegment,
    dp: FakeDataplane,
}

impl WithStats {
    fn args(&self) -> [&str; 4] {
        ["--shm", self.shm.to_str().unwrap(), "--stats", self.stats.to_str().unwrap()]
    }

    fn in_sync(name: &str) -> (WithStats, Server) {
        let dir = TempDir::new(name);
        let (shm, stats) = (dir.path().join("shm"), dir.path().join("stats"));
        let layout = StatsLayout { workers: 1, counters: vec!["lan/rx_packets".into()], gauges: vec![] };
        let seg = StatsSegment::create(&stats, &layout, 0x7).unwrap();
        let dp = FakeDataplane::start(&shm, 0x7, 0);
        let mut w = WithStats { dir, shm, stats, seg, dp };
        let s = Server::start(w.dir.path(), &w.args());
        assert_eq!(s.req("PUT", "/v1/config", Some(&example())).0, 200);
        assert_eq!(w.dp.next(T).map(|(g, _)| g), Some(1));
        w.dp.applied(1);
        w.seg.set_applied(1, w.dp.hash_of(1));
        wait_status(&s, "in sync", |v| v["dataplane"]["in_sync"] == true);
        (w, s)
    }
}

#[test]
fn with_the_stats_segment_a_restarted_control_process_resends_nothing() {
    let (mut w, mut s) = WithStats::in_sync("kill9stats");
    s.kill9();

    let s = Server::start(w.dir.path(), &w.args());
    let dp = &mut w.dp;
    let st = wait_status(&s, "attached", |v| v["dataplane"]["attached"] == true);
    assert_eq!(st["dataplane"]["applied_generation"], 1, "{st}");
    assert_eq!(st["dataplane"]["in_sync"], true, "{st}");
    assert_eq!(dp.all(Duration::from_millis(1500)), Vec::<u64>::new(), "the dataplane already runs generation 1");
    assert_eq!(s.req("POST", "/v1/routes", Some(&json!({ "prefix": "10.9.0.0/16", "peer": "site-b" }))).1["generation"], 2);
    assert_eq!(dp.all(Duration::from_millis(1000)), vec![2]);
}

#[test]
fn a_dataplane_that_crashed_and_left_its_stats_file_is_configured_again() {
    let (mut w, s) = WithStats::in_sync("crashstats");
    // SIGKILL: its stats file stays (applied generation 1); the new
    // process makes a new ring segment and says hello with nothing.
    std::thread::sleep(Duration::from_millis(50));
    w.dp = FakeDataplane::start(&w.shm, 0x8, 0);
    let dp = &mut w.dp;
    assert_eq!(dp.next(T).map(|(g, _)| g), Some(1), "the new dataplane gets the configuration");
    dp.applied(1);
    wait_status(&s, "in sync with the new dataplane", |v| v["dataplane"]["in_sync"] == true && v["dataplane"]["boot_id"] == 0x8);
}

#[test]
fn a_wiped_state_numbering_from_1_again_replaces_the_document_that_runs() {
    // The dataplane runs generation 1 (the example) from a control process
    // whose state directory is then wiped; the new one starts from another
    // file, also as generation 1. Same number, other document: it must
    // be sent, and the status must not say in sync until it is applied.
    let (mut w, mut s) = WithStats::in_sync("wiped");
    s.kill9();
    std::fs::remove_dir_all(w.dir.path().join("state")).unwrap();
    let mut other = example();
    other["bundles"][0]["tunnels"][0]["weight"] = json!(7);
    let file = w.dir.path().join("other.json");
    std::fs::write(&file, serde_json::to_vec(&other).unwrap()).unwrap();
    let mut args = w.args().map(str::to_string).to_vec();
    args.extend(["--init-config".to_string(), file.to_str().unwrap().to_string()]);
    let s = Server::start(w.dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(s.generation(), 1);
    let old_hash = w.dp.hash_of(1);
    let (g, doc) = w.dp.next(T).expect("the new document, though its generation runs");
    assert_eq!((g, doc.bundles[0].tunnels[0].weight), (1, 7));
    assert_ne!(w.dp.hash_of(1), old_hash);
    // A late answer about the old document changes nothing: not in sync,
    // and ours is not sent twice.
    w.dp.say(Event::Applied { generation: 1, doc_hash: old_hash });
    let st = wait_status(&s, "attached", |v| v["dataplane"]["applied_doc_hash"] == format!("{old_hash:016x}"));
    assert_eq!(st["dataplane"]["in_sync"], false, "{st}");
    assert_eq!(w.dp.all(Duration::from_millis(500)), Vec::<u64>::new());
    w.dp.applied(1);
    w.seg.set_applied(1, w.dp.hash_of(1));
    wait_status(&s, "in sync with the new document", |v| v["dataplane"]["in_sync"] == true);
}

#[test]
fn a_killed_push_leaves_nothing_half_applied() {
    // A control process killed in the middle of a transaction: the reader
    // drops the open transaction at the next BEGIN, so what arrives is the
    // next control process's whole snapshot.
    let dir = TempDir::new("halfpush");
    let shm = dir.path().join("shm");
    let mut dp = FakeDataplane::start(&shm, 0x9, 0);
    {
        // A writer that stops half way (as a killed process would).
        let seg = Segment::open(&shm).unwrap();
        let mut p = seg.producer(Ring::Commands).unwrap();
        let doc = serde_json::to_vec(&example()).unwrap();
        for m in proto::config_msgs(7, &doc).unwrap().take(5) {
            p.try_push(&m).unwrap();
        }
    }
    let s = Server::start(dir.path(), &["--shm", shm.to_str().unwrap()]);
    assert_eq!(s.req("PUT", "/v1/config", Some(&example())).0, 200);
    assert_eq!(dp.all(Duration::from_millis(1500)), vec![1]);
    assert_eq!(dp.reader.stats().discarded_partial, 1);
}
