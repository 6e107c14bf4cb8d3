//! The dataplane driven over shared memory, as the control process drives
//! it: started without a configuration file it says hello and waits; a bad
//! snapshot is rejected with the reason; a good one starts the ports; a
//! later one is applied live (its generation and its document's hash show
//! in the stats segment, re-created for the new tables), also under the
//! generation that runs when the document differs; one that changes ports is refused and
//! the running tables stay; SIGTERM stops it and removes both segments.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use braid_shm::proto::{doc_hash, push_config, Event};
use braid_shm::stats::StatsReader;
use braid_shm::{Consumer, Producer, Ring, Segment};

const BIN: &str = env!("CARGO_BIN_EXE_braid-dataplane");

fn doc(weight: u32, mtu: u32, extra_route: bool) -> String {
    let key = "00112233445566778899aabbccddeeff";
    let route = if extra_route { r#",{"prefix":"10.9.0.0/16","peer":"p"}"# } else { "" };
    format!(
        r#"{{"ports":[
  {{"name":"lan","device":"net_null0","role":"lan","mac":"02:00:00:00:00:01","next_hop_mac":"02:00:00:00:00:02","mtu":{mtu}}},
  {{"name":"wan","device":"net_null1","role":"wan","mac":"02:00:00:00:01:01","ipv4":"192.0.2.1/24","next_hop_mac":"02:00:00:00:01:02"}}],
 "peers":[{{"name":"p","bundle":"b"}}],
 "bundles":[{{"name":"b","tunnels":[
   {{"wan_port":"wan","local":"192.0.2.1:4500","remote":"192.0.2.2:4500","spi_out":4096,"spi_in":8192,"key_out":"{key}","key_in":"{key}","salt_out":"01020304","salt_in":"05060708","weight":{weight}}},
   {{"wan_port":"wan","local":"192.0.2.1:4501","remote":"192.0.2.2:4501","spi_out":4097,"spi_in":8193,"key_out":"{key}","key_in":"{key}","salt_out":"11121314","salt_in":"15161718"}}]}}],
 "routes":[{{"prefix":"10.2.0.0/16","peer":"p"}}{route}]}}"#
    )
}

/// Ends the dataplane (by pid) and removes what it made, even when the
/// test fails half-way.
struct Dataplane {
    child: Option<Child>,
    prefix: String,
    files: Vec<PathBuf>,
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn next_event(events: &mut Consumer) -> Event {
    let m = wait_for("an event", Duration::from_secs(20), || events.try_pop());
    Event::from_msg(&m).expect("an event message")
}

fn push(p: &mut Producer, generation: u64, doc: &str) {
    push_config(p, generation, doc.as_bytes(), Duration::from_secs(5)).unwrap();
}

fn counter(r: &StatsReader, name: &str) -> u64 {
    let i = r.layout().counter_index(name).unwrap_or_else(|| panic!("no counter {name}"));
    r.snapshot().totals[i]
}

/// The dataplane with `args`, on two net_null ports, EAL files under
/// `prefix`; its stderr piped.
fn spawn(args: &[&str], prefix: &str) -> Child {
    Command::new(BIN)
        .args(args)
        .args(["--idle-us", "200", "--"])
        .args(["--no-pci", "--no-huge", "-m", "256", "-l", "0", "--file-prefix", prefix, "--log-level=*:error"])
        .args(["--vdev=net_null0", "--vdev=net_null1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM to the dataplane: it exits 0, EAL cleaned up whole (nothing
/// leaked, also before an exec: asserted); what it printed on stderr.
fn terminate(dp: &mut Dataplane) -> String {
    let mut child = dp.child.take().unwrap();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = wait_for("exit", Duration::from_secs(20), || child.try_wait().unwrap());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(!err.contains("skipping rte_eal_cleanup"), "{err}");
    err
}

#[test]
fn snapshots_over_shared_memory_start_and_change_the_dataplane() {
    let id = std::process::id();
    let shm = PathBuf::from(format!("/dev/shm/braid-test-{id}.ctl"));
    let stats = PathBuf::from(format!("/dev/shm/braid-test-{id}.stats"));
    let prefix = format!("braid-shmctl-{id}");
    let mut dp = Dataplane { child: None, prefix: prefix.clone(), files: vec![shm.clone(), stats.clone()] };
    dp.child = Some(spawn(&["--shm", shm.to_str().unwrap(), "--stats", stats.to_str().unwrap()], &prefix));
    let seg = wait_for("the segment", Duration::from_secs(20), || Segment::open(&shm).ok());
    let mut commands = seg.producer(Ring::Commands).unwrap();
    let mut events = seg.consumer(Ring::Events).unwrap();
    let Event::Hello { boot_id, generation: 0 } = next_event(&mut events) else { panic!("no hello") };

    // Garbage and an invalid document: rejected with the reason, nothing runs.
    push(&mut commands, 1, "{not json");
    assert!(matches!(next_event(&mut events), Event::Rejected { generation: 1, .. }));
    push(&mut commands, 2, &doc(1, 1500, false).replace("\"weight\":1", "\"weight\":0"));
    let Event::Rejected { generation: 2, reason } = next_event(&mut events) else { panic!() };
    assert!(reason.contains("weight"), "{reason}");
    assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "EAL started on a rejected document");

    // The first good document starts the ports.
    let first = doc(1, 1500, false);
    push(&mut commands, 3, &first);
    assert_eq!(next_event(&mut events), Event::Applied { generation: 3, doc_hash: doc_hash(first.as_bytes()) });
    let r = wait_for("the stats segment", Duration::from_secs(10), || StatsReader::open(&stats).ok());
    let s = r.snapshot();
    assert_eq!((s.boot_id, s.applied_generation, s.applied_doc_hash), (boot_id, 3, doc_hash(first.as_bytes())));
    // net_null's frames are junk: received and dropped, counted live.
    wait_for("LAN frames counted", Duration::from_secs(10), || (counter(&r, "lan/rx_packets") > 0).then_some(()));
    assert!(r.layout().counter_index("tunnel/b/1/tx_packets").is_some());
    assert_eq!(r.layout().gauges, vec!["path/b/0/alive", "path/b/1/alive", "lan/held"]);

    // A live change: weights and routes. Applied; a new stats segment for
    // the new tables, and the counters carry on.
    let before = counter(&r, "lan/rx_packets");
    let second = doc(3, 1500, true);
    let h4 = doc_hash(second.as_bytes());
    push(&mut commands, 4, &second);
    assert_eq!(next_event(&mut events), Event::Applied { generation: 4, doc_hash: h4 });
    assert!(r.is_replaced());
    let r2 = StatsReader::open(&stats).unwrap();
    assert_eq!((r2.snapshot().applied_generation, r2.snapshot().applied_doc_hash), (4, h4));
    wait_for("counters carried over", Duration::from_secs(10), || (counter(&r2, "lan/rx_packets") > before).then_some(()));

    // The same generation again (a control process resyncing): applied, no-op.
    push(&mut commands, 4, &second);
    assert_eq!(next_event(&mut events), Event::Applied { generation: 4, doc_hash: h4 });
    assert!(!r2.is_replaced(), "nothing was rebuilt");

    // The same generation with another document (a control process whose
    // state was wiped numbers from 1 again): applied like a new one, and
    // the workers take it up.
    let other = doc(2, 1500, true);
    push(&mut commands, 4, &other);
    assert_eq!(next_event(&mut events), Event::Applied { generation: 4, doc_hash: doc_hash(other.as_bytes()) });
    assert!(r2.is_replaced(), "the tables were rebuilt");
    let r3 = StatsReader::open(&stats).unwrap();
    assert_eq!((r3.snapshot().applied_generation, r3.snapshot().applied_doc_hash), (4, doc_hash(other.as_bytes())));

    // Ports cannot change while running.
    push(&mut commands, 5, &doc(3, 1400, true));
    let Event::Rejected { generation: 5, reason } = next_event(&mut events) else { panic!() };
    assert!(reason.contains("restart"), "{reason}");
    assert_eq!(StatsReader::open(&stats).unwrap().snapshot().applied_generation, 4);

    // SIGTERM: exit 0, segment removed.
    let err = terminate(&mut dp);
    assert_eq!(err.matches("generation 4 live on worker 0").count(), 2, "both documents of generation 4 reached the worker: {err}");
    assert!(!err.contains("did not pick up"), "{err}");
    assert!(!shm.exists(), "segment left behind");
    assert!(!stats.exists(), "stats segment left behind");
}

/// The control process's first document names a device EAL does not have:
/// rejected with the reason, and the process waits (it used to exit, and the
/// control process sent the restarted one the same document, again and
/// again). A document with the same ports is rejected at once; one with
/// other ports makes the process start again (same pid, a new segment) and
/// the control process's resync of it is applied.
#[test]
fn a_first_document_whose_ports_fail_is_rejected_and_the_next_applied() {
    use std::os::unix::fs::MetadataExt;
    let id = std::process::id();
    let shm = PathBuf::from(format!("/dev/shm/braid-test-{id}-p.ctl"));
    let prefix = format!("braid-shmport-{id}");
    let mut dp = Dataplane { child: None, prefix: prefix.clone(), files: vec![shm.clone()] };
    dp.child = Some(spawn(&["--shm", shm.to_str().unwrap()], &prefix));
    let seg = wait_for("the segment", Duration::from_secs(20), || Segment::open(&shm).ok());
    let inode = std::fs::metadata(&shm).unwrap().ino();
    let mut commands = seg.producer(Ring::Commands).unwrap();
    let mut events = seg.consumer(Ring::Events).unwrap();
    assert!(matches!(next_event(&mut events), Event::Hello { generation: 0, .. }));

    let typo = doc(1, 1500, false).replace("net_null1", "net_null9");
    push(&mut commands, 1, &typo);
    let Event::Rejected { generation: 1, reason } = next_event(&mut events) else { panic!("not rejected") };
    assert!(reason.contains("port \"wan\""), "{reason}");
    assert!(!Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "EAL not cleaned up");
    // Other routes, the same ports: refused with the same reason.
    push(&mut commands, 2, &doc(1, 1500, true).replace("net_null1", "net_null9"));
    let Event::Rejected { generation: 2, reason: again } = next_event(&mut events) else { panic!("not rejected") };
    assert!(again.contains("generation 1") && again.contains("net_null9"), "{again}");
    let child = dp.child.as_mut().unwrap();
    assert!(child.try_wait().unwrap().is_none(), "the dataplane exited");

    // Ports that exist: the process starts again on a new segment.
    let good = doc(1, 1500, false);
    push(&mut commands, 3, &good);
    let seg = wait_for("a new segment", Duration::from_secs(20), || {
        let new = std::fs::metadata(&shm).is_ok_and(|m| m.ino() != inode);
        new.then(|| Segment::open(&shm).ok()).flatten()
    });
    assert!(child.try_wait().unwrap().is_none(), "the dataplane exited");
    let mut commands = seg.producer(Ring::Commands).unwrap();
    let mut events = seg.consumer(Ring::Events).unwrap();
    assert!(matches!(next_event(&mut events), Event::Hello { generation: 0, .. }));
    // The control process resyncs: its latest document.
    push(&mut commands, 3, &good);
    assert_eq!(next_event(&mut events), Event::Applied { generation: 3, doc_hash: doc_hash(good.as_bytes()) });

    let err = terminate(&mut dp);
    assert!(err.contains("starting again"), "{err}");
    assert!(!shm.exists(), "segment left behind");
}
