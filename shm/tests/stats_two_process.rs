//! The stats segment across processes: a child (this test binary
//! re-executed) creates the segment and publishes millions of times values
//! that satisfy an invariant; the parent snapshots all the while and must
//! never see a torn row. A writer killed with SIGKILL mid-update must not
//! hang the reader: its block is reported torn.

mod common;

use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use braid_shm::stats::field;
use braid_shm::{StatsError, StatsLayout, StatsReader, StatsSegment, StatsSnapshot};
use common::{child_role, ChildGuard, ShmPath};

const STRESS: &str = "readers_never_see_a_torn_publish";
const KILLED: &str = "a_writer_killed_mid_run_does_not_hang_the_reader";
const BOOT_ID: u64 = 0x5eed_b007;
/// Applied generation while publishing, and once done.
const RUNNING: u64 = 1;
const DONE: u64 = 2;
/// Worker 0 publishes every step; worker 1 every fourth. The writer goes on
/// past `STEPS` until the reader, having seen `MIN_CHANGES` fresh snapshots,
/// creates the stop file: on a loaded machine the two processes may share a core.
const STEPS: u64 = 3_000_000;
const MIN_CHANGES: u64 = 200;
/// Checked by the writer every this many steps (a multiple of 4, so both
/// workers end on the same step).
const STOP_EVERY: u64 = 1 << 16;
/// Enough values that a block spans several cache lines (35 words).
const COUNTERS: usize = 30;
const GAUGES: usize = 4;
const DEADLINE: Duration = Duration::from_secs(30);
const SIGKILL: i32 = 9;

fn layout() -> StatsLayout {
    StatsLayout {
        workers: 2,
        counters: (0..COUNTERS).map(|i| format!("test/counter{i}")).collect(),
        gauges: (0..GAUGES).map(|i| format!("path/test/gauge{i}")).collect(),
    }
}

/// Worker `w` at step `s`: counter `i` is `(w + 1) * (i + 1) * s`, every gauge is `s`.
fn values(w: u64, s: u64) -> ([u64; COUNTERS], [u64; GAUGES]) {
    (std::array::from_fn(|i| (w + 1) * (i as u64 + 1) * s), [s; GAUGES])
}

/// Checks the invariant on every row, the totals and the combined gauges,
/// and that no worker's step went backwards; returns each worker's step.
fn check(snap: &StatsSnapshot, previous: &[u64]) -> Result<Vec<u64>, String> {
    if snap.boot_id != BOOT_ID {
        return Err(format!("boot id {:#x}", snap.boot_id));
    }
    let steps: Vec<u64> = snap.gauges_per_worker.iter().map(|g| g[0]).collect();
    for (w, &s) in steps.iter().enumerate() {
        let (counters, gauges) = values(w as u64, s);
        if snap.per_worker[w] != counters || snap.gauges_per_worker[w] != gauges {
            return Err(format!("torn row of worker {w}: {snap:?}"));
        }
        if s < previous[w] {
            return Err(format!("worker {w} went back from step {} to {s}", previous[w]));
        }
    }
    for (i, &total) in snap.totals.iter().enumerate() {
        if total != (i as u64 + 1) * snap.totals[0] {
            return Err(format!("torn total of counter {i}: {snap:?}"));
        }
    }
    if snap.gauges != [*steps.iter().max().unwrap(); GAUGES] {
        return Err(format!("combined gauges: {snap:?}"));
    }
    Ok(steps)
}

/// Waits for the child to create the segment. The rename means the file is
/// either absent or whole: any other error fails the test.
fn open_when_created(path: &Path, child: &mut ChildGuard) -> StatsReader {
    let start = Instant::now();
    loop {
        match StatsReader::open(path) {
            Ok(reader) => return reader,
            Err(StatsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("half-made segment visible: {err}"),
        }
        assert!(child.exited().is_none(), "writer exited before creating the segment");
        assert!(start.elapsed() < DEADLINE, "no segment after {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The file whose existence tells the writer to stop.
fn stop_file(path: &Path) -> PathBuf {
    let mut stop = path.as_os_str().to_owned();
    stop.push(".stop");
    PathBuf::from(stop)
}

/// Removes the stop file on drop.
struct StopFile(PathBuf);

impl Drop for StopFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Child: create the segment and publish, at least `STEPS` steps then until
/// the stop file appears (`stop`), or until killed.
fn write(path: &Path, stop: bool) {
    let segment = StatsSegment::create(path, &layout(), BOOT_ID).expect("create stats segment");
    let (mut w0, mut w1) = (segment.writer(0).unwrap(), segment.writer(1).unwrap());
    segment.set_applied(RUNNING, 0);
    let stop_file = stop_file(path);
    for s in 1.. {
        let (counters, gauges) = values(0, s);
        w0.publish(&counters, &gauges);
        if s % 4 == 0 {
            let (counters, gauges) = values(1, s);
            w1.publish(&counters, &gauges);
        }
        if s % 1024 == 0 {
            segment.set_heartbeat(s);
        }
        if stop && s % STOP_EVERY == 0 && s >= STEPS && stop_file.exists() {
            break;
        }
    }
    segment.set_heartbeat(u64::MAX);
    segment.set_applied(DONE, 0);
}

#[test]
fn readers_never_see_a_torn_publish() {
    if let Some((role, path)) = child_role() {
        assert_eq!(role, "stats-writer");
        return write(&path, true);
    }
    // The check catches a torn row, a torn total and a step going backwards.
    let good = |s0: u64, s1: u64| {
        let rows = [values(0, s0), values(1, s1)];
        StatsSnapshot {
            boot_id: BOOT_ID,
            applied_generation: RUNNING,
            applied_doc_hash: 0,
            heartbeat: 0,
            totals: (0..COUNTERS).map(|i| rows[0].0[i] + rows[1].0[i]).collect(),
            per_worker: rows.iter().map(|r| r.0.to_vec()).collect(),
            gauges: vec![s0.max(s1); GAUGES],
            gauges_per_worker: rows.iter().map(|r| r.1.to_vec()).collect(),
            torn_workers: 0,
        }
    };
    assert_eq!(check(&good(9, 4), &[8, 4]), Ok(vec![9, 4]));
    let mut torn = good(9, 4);
    torn.per_worker[1][20] = values(1, 8).0[20];
    assert!(check(&torn, &[0, 0]).is_err());
    let mut torn = good(9, 4);
    torn.gauges_per_worker[0][3] = 10;
    assert!(check(&torn, &[0, 0]).is_err());
    let mut torn = good(9, 4);
    torn.totals[29] += 1;
    assert!(check(&torn, &[0, 0]).is_err());
    assert!(check(&good(9, 4), &[10, 0]).is_err());

    let shm = ShmPath::new("stats-two-process");
    let mut child = ChildGuard::spawn(STRESS, "stats-writer", shm.path());
    let reader = open_when_created(shm.path(), &mut child);
    assert_eq!(reader.layout(), &layout());

    let stop = StopFile(stop_file(shm.path()));
    let start = Instant::now();
    let (mut snapshots, mut torn, mut changes) = (0u64, 0u64, 0u64);
    let mut steps = vec![0, 0];
    'read: loop {
        // Bursts of back-to-back snapshots (racing the writer), with a pause
        // between them so a writer sharing our core moves on.
        for _ in 0..32 {
            let snap = reader.snapshot();
            let now = check(&snap, &steps).unwrap();
            snapshots += 1;
            torn += snap.torn_workers as u64;
            changes += (now != steps) as u64;
            steps = now;
            if snap.applied_generation == DONE {
                // Everything published before DONE is visible now.
                let last = reader.snapshot();
                let end = check(&last, &steps).unwrap();
                assert!(end[0] == end[1] && end[0] >= STEPS && end[0].is_multiple_of(STOP_EVERY), "last steps {end:?}");
                assert_eq!((last.heartbeat, last.torn_workers), (u64::MAX, 0));
                steps = end;
                break 'read;
            }
        }
        if changes >= MIN_CHANGES && steps[0] >= STEPS && !stop.0.exists() {
            std::fs::write(&stop.0, b"").unwrap();
        }
        assert!(start.elapsed() < DEADLINE, "writer not done after {DEADLINE:?} (step {steps:?}, {changes} changes)");
        std::thread::sleep(Duration::from_micros(50));
    }
    let status = child.wait(Duration::from_secs(10));
    assert!(status.success(), "writer failed: {status}");
    eprintln!(
        "stats: {} publishes in {:.2?}; {snapshots} snapshots, {changes} saw new values, {torn} torn blocks",
        steps[0] + steps[1] / 4,
        start.elapsed()
    );
}

#[test]
fn a_writer_killed_mid_run_does_not_hang_the_reader() {
    if let Some((role, path)) = child_role() {
        assert_eq!(role, "stats-doomed");
        return write(&path, false);
    }
    let shm = ShmPath::new("stats-killed");
    let mut child = ChildGuard::spawn(KILLED, "stats-doomed", shm.path());
    let reader = open_when_created(shm.path(), &mut child);
    let start = Instant::now();
    let mut steps = vec![0, 0];
    while steps[1] < 20_000 {
        steps = check(&reader.snapshot(), &steps).unwrap();
        assert!(start.elapsed() < DEADLINE, "writer made no progress: {steps:?}");
    }

    let file = std::fs::File::open(shm.path()).unwrap();
    let word = |at: u64| {
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, at).unwrap();
        u64::from_le_bytes(b)
    };
    let blocks = word(field::BLOCKS_OFFSET as u64);
    let stride = word(field::BLOCK_STRIDE as u64);
    let odd_blocks = || (0..2).filter(|w| word(blocks + w * stride) % 2 == 1).count() as u32;
    // Freeze the writer (SIGSTOP) until it is caught mid-update, then kill it
    // (SIGKILL): its block stays odd for good.
    let pid = child.id();
    let mut tries = 0;
    while tries < 1000 {
        tries += 1;
        signal(pid, "-STOP");
        wait_stopped(pid);
        if odd_blocks() > 0 {
            break;
        }
        signal(pid, "-CONT");
        std::thread::sleep(Duration::from_micros(200));
    }
    let status = child.kill();
    assert_eq!(status.signal(), Some(SIGKILL), "writer ended by {status}, not SIGKILL");
    let odd = odd_blocks();
    assert!(odd > 0, "writer never caught mid-update in {tries} tries");

    for _ in 0..3 {
        let t = Instant::now();
        let snap = reader.snapshot();
        let took = t.elapsed();
        assert!(took < Duration::from_millis(500), "snapshot took {took:?}");
        assert_eq!(snap.torn_workers, odd, "blocks left odd by the dead writer");
        steps = check(&snap, &steps).unwrap();
        assert!(snap.heartbeat > 0 && snap.heartbeat < u64::MAX, "heartbeat {}", snap.heartbeat);
        assert_eq!(snap.applied_generation, RUNNING);
    }
    eprintln!("killed writer: {odd} block(s) left mid-update after {tries} stop(s), last steps {steps:?}");
}

/// Sends `sig` to our child `pid` with kill(1).
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill {sig} {pid}: {status}");
}

/// Waits until `pid` shows state T (stopped) in /proc.
fn wait_stopped(pid: u32) {
    let start = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("child's /proc stat");
        // "pid (comm) S ...": the state follows the last ')'.
        if stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T')) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "child {pid} did not stop: {stat}");
        std::thread::yield_now();
    }
}
