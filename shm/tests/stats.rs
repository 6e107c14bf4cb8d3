//! The stats segment in one process: layout round trip, seqlock values,
//! writer ownership, bad files, limits, a writer stuck mid-update, replacement.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::time::{Duration, Instant};

use braid_shm::stats::{field, HEADER_SIZE, LAYOUT_VERSION, MAX_COUNTERS, MAX_WORKERS, NAME_SIZE, TORN_AFTER};
use braid_shm::{StatsError, StatsLayout, StatsReader, StatsSegment, StatsWriter};
use common::ShmPath;

fn layout(workers: u16) -> StatsLayout {
    StatsLayout {
        workers,
        counters: vec!["port/lan/rx_packets".into(), "tunnel/b0/t3/tx_bytes".into(), "drop/bad_inner_ip".into()],
        gauges: vec!["path/b0/t3/rtt_ns".into(), "path/b0/t3/alive".into()],
    }
}

fn read_u64(shm: &ShmPath, offset: usize) -> u64 {
    let mut b = [0u8; 8];
    OpenOptions::new().read(true).open(shm.path()).unwrap().read_exact_at(&mut b, offset as u64).unwrap();
    u64::from_le_bytes(b)
}

fn write_at(shm: &ShmPath, offset: usize, bytes: &[u8]) {
    OpenOptions::new().write(true).open(shm.path()).unwrap().write_all_at(bytes, offset as u64).unwrap();
}

fn open_err(shm: &ShmPath) -> StatsError {
    let err = StatsReader::open(shm.path()).expect_err("open must fail");
    eprintln!("{err}");
    assert!(err.to_string().contains(&shm.path().display().to_string()), "error names the file: {err}");
    err
}

#[test]
fn handles_cross_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<StatsWriter>();
    send::<StatsReader>();
    sync::<StatsReader>();
    send::<StatsSegment>();
    sync::<StatsSegment>();
}

#[test]
fn layout_and_values_round_trip() {
    let shm = ShmPath::new("stats-round-trip");
    let segment = StatsSegment::create(shm.path(), &layout(3), 0xb007).unwrap();
    assert_eq!(segment.path(), shm.path());
    let mode = std::fs::metadata(shm.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let reader = StatsReader::open(shm.path()).unwrap();
    assert_eq!(reader.layout(), &layout(3));
    assert_eq!(reader.layout().counter_index("drop/bad_inner_ip"), Some(2));
    assert_eq!(reader.layout().gauge_index("path/b0/t3/alive"), Some(1));

    // A fresh segment reads as zeros.
    let snap = reader.snapshot();
    assert_eq!(snap.boot_id, 0xb007);
    assert_eq!((snap.applied_generation, snap.heartbeat, snap.torn_workers), (0, 0, 0));
    assert_eq!(snap.applied_doc_hash, 0);
    assert_eq!(snap.totals, [0, 0, 0]);
    assert_eq!(snap.per_worker, vec![vec![0; 3]; 3]);
    assert_eq!(snap.gauges_per_worker, vec![vec![0; 2]; 3]);

    let mut w0 = segment.writer(0).unwrap();
    let mut w2 = segment.writer(2).unwrap();
    w0.publish(&[10, 1000, 1], &[500, 1]);
    w2.publish(&[5, 200, 0], &[700, 0]);
    segment.set_applied(7, 0xfeed_f00d_0000_0007);
    segment.set_heartbeat(123_456);
    let snap = reader.snapshot();
    assert_eq!((snap.applied_generation, snap.heartbeat, snap.torn_workers), (7, 123_456, 0));
    assert_eq!(snap.applied_doc_hash, 0xfeed_f00d_0000_0007);
    assert_eq!(snap.totals, [15, 1200, 1]);
    assert_eq!(snap.per_worker, [vec![10, 1000, 1], vec![0, 0, 0], vec![5, 200, 0]]);
    assert_eq!(snap.gauges, [700, 1], "max over workers");
    assert_eq!(snap.gauges_per_worker, [vec![500, 1], vec![0, 0], vec![700, 0]]);

    // The latest publish wins; each publish advances the sequence by two.
    w0.publish(&[11, 1100, 1], &[400, 1]);
    assert_eq!(reader.snapshot().per_worker[0], [11, 1100, 1]);
    let blocks = read_u64(&shm, field::BLOCKS_OFFSET) as usize;
    assert_eq!(read_u64(&shm, blocks), 4, "worker 0's sequence");
    assert_eq!(read_u64(&shm, field::APPLIED_GENERATION), 7);
    assert_eq!(read_u64(&shm, field::BOOT_ID), 0xb007);
}

#[test]
fn a_layout_without_values_works() {
    let shm = ShmPath::new("stats-empty");
    let empty = StatsLayout { workers: 2, counters: vec![], gauges: vec![] };
    let segment = StatsSegment::create(shm.path(), &empty, 1).unwrap();
    segment.writer(1).unwrap().publish(&[], &[]);
    let snap = StatsReader::open(shm.path()).unwrap().snapshot();
    assert_eq!(snap.per_worker, vec![Vec::<u64>::new(); 2]);
    assert_eq!(snap.torn_workers, 0);
}

#[test]
fn one_writer_per_worker() {
    let shm = ShmPath::new("stats-writers");
    let segment = StatsSegment::create(shm.path(), &layout(2), 1).unwrap();
    let w1 = segment.writer(1).unwrap();
    assert!(matches!(segment.writer(1), Err(StatsError::WriterTaken { worker: 1, .. })));
    assert!(matches!(segment.writer(2), Err(StatsError::NoSuchWorker { worker: 2, workers: 2, .. })));
    let err = segment.writer(1).unwrap_err().to_string();
    assert!(
        err.contains("writer of worker 1 is already taken") && err.contains(&*shm.path().to_string_lossy()),
        "{err}"
    );
    // A writer moves to its worker's thread; dropping it frees the worker.
    std::thread::spawn(move || drop(w1)).join().unwrap();
    let mut again = segment.writer(1).unwrap();
    again.publish(&[1, 2, 3], &[4, 5]);
    assert_eq!(StatsReader::open(shm.path()).unwrap().snapshot().per_worker[1], [1, 2, 3]);
}

#[test]
#[should_panic(expected = "publish: counters")]
fn publish_with_wrong_counter_count_panics() {
    let shm = ShmPath::new("stats-wrong-len");
    let segment = StatsSegment::create(shm.path(), &layout(1), 1).unwrap();
    segment.writer(0).unwrap().publish(&[1, 2], &[4, 5]);
}

#[test]
#[should_panic(expected = "publish: gauges")]
fn publish_with_wrong_gauge_count_panics() {
    let shm = ShmPath::new("stats-wrong-gauges");
    let segment = StatsSegment::create(shm.path(), &layout(1), 1).unwrap();
    segment.writer(0).unwrap().publish(&[1, 2, 3], &[4, 5, 6]);
}

#[test]
fn bad_layouts_are_refused_at_create() {
    let shm = ShmPath::new("stats-bad-layout");
    let create = |l: &StatsLayout| StatsSegment::create(shm.path(), l, 1).expect_err("create must fail");

    let mut long = layout(1);
    long.gauges.push("x".repeat(NAME_SIZE + 1));
    let err = create(&long);
    assert!(matches!(&err, StatsError::NameTooLong { kind: "gauge", len: 65, .. }), "{err:?}");
    assert!(err.to_string().contains("is 65 bytes, names hold at most 64"), "{err}");
    let mut fits = layout(1);
    fits.counters.push("y".repeat(NAME_SIZE));
    StatsSegment::create(shm.path(), &fits, 1).unwrap();

    let mut empty = layout(1);
    empty.counters[1] = String::new();
    assert!(matches!(create(&empty), StatsError::BadName { kind: "counter", index: 1, problem: "is empty", .. }));
    let mut nul = layout(1);
    nul.counters[0] = "a\0b".into();
    assert!(matches!(create(&nul), StatsError::BadName { problem: "contains a NUL byte", .. }));
    let mut dup = layout(1);
    dup.gauges[1] = dup.counters[0].clone();
    assert!(matches!(create(&dup), StatsError::DuplicateName { name, .. } if name == "port/lan/rx_packets"));

    assert!(matches!(create(&layout(0)), StatsError::Count { what: "workers", found: 0, .. }));
    assert!(matches!(create(&layout(MAX_WORKERS + 1)), StatsError::Count { what: "workers", found: 1025, .. }));
    let many =
        StatsLayout { workers: 1, counters: (0..=MAX_COUNTERS).map(|i| format!("c{i}")).collect(), gauges: vec![] };
    assert!(matches!(create(&many), StatsError::Count { what: "counters", .. }));
    let wide = StatsLayout { workers: 600, counters: (0..300_000).map(|i| format!("c{i}")).collect(), gauges: vec![] };
    assert!(matches!(create(&wide), StatsError::TooLarge { .. }));
    // Nothing was left behind under a temporary name.
    let dir = std::fs::read_dir("/dev/shm").unwrap();
    let prefix = shm.path().file_name().unwrap().to_string_lossy().into_owned();
    let leftovers: Vec<_> = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{prefix}.tmp")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A valid 2-worker segment at `shm` (then closed), as a base to corrupt.
fn valid(shm: &ShmPath) -> u64 {
    drop(StatsSegment::create(shm.path(), &layout(2), 9).unwrap());
    StatsReader::open(shm.path()).unwrap();
    std::fs::metadata(shm.path()).unwrap().len()
}

#[test]
fn wrong_magic_and_version() {
    let shm = ShmPath::new("stats-bad-magic");
    valid(&shm);
    write_at(&shm, field::MAGIC, b"BRAIDSHM");
    let err = open_err(&shm);
    assert!(matches!(err, StatsError::BadMagic { found, .. } if &found == b"BRAIDSHM"), "{err:?}");
    assert!(err.to_string().contains("not a braid stats segment"));

    valid(&shm);
    write_at(&shm, field::VERSION, &(LAYOUT_VERSION + 1).to_le_bytes());
    let err = open_err(&shm);
    assert!(err.to_string().contains("stats layout version 3, this build speaks version 2"), "{err}");
}

#[test]
fn wrong_sizes_and_offsets() {
    let shm = ShmPath::new("stats-bad-offsets");
    let cases: [(usize, &[u8], &str); 5] = [
        (field::HEADER_SIZE, &64u32.to_le_bytes(), "header size"),
        (field::NAME_SIZE, &32u32.to_le_bytes(), "name size"),
        (field::NAMES_OFFSET, &0u64.to_le_bytes(), "names offset"),
        (field::BLOCKS_OFFSET, &(1u64 << 40).to_le_bytes(), "blocks offset"),
        (field::BLOCK_STRIDE, &8u64.to_le_bytes(), "block stride"),
    ];
    for (offset, bytes, name) in cases {
        valid(&shm);
        write_at(&shm, offset, bytes);
        let err = open_err(&shm);
        assert!(matches!(err, StatsError::Field { field, .. } if field == name), "{name}: {err:?}");
    }
}

#[test]
fn oversize_counts_in_the_file() {
    let shm = ShmPath::new("stats-oversize");
    let cases: [(usize, u32, &str); 4] = [
        (field::WORKERS, 0, "workers"),
        (field::WORKERS, MAX_WORKERS as u32 + 1, "workers"),
        (field::COUNTERS, u32::MAX, "counters"),
        (field::GAUGES, (1 << 20) + 1, "gauges"),
    ];
    for (offset, value, name) in cases {
        valid(&shm);
        write_at(&shm, offset, &value.to_le_bytes());
        let err = open_err(&shm);
        assert!(
            matches!(err, StatsError::Count { what, found, .. } if what == name && found == value as u64),
            "{err:?}"
        );
    }
    // Counts within their own limits, but together too large a file.
    valid(&shm);
    write_at(&shm, field::WORKERS, &1024u32.to_le_bytes());
    write_at(&shm, field::COUNTERS, &(1u32 << 20).to_le_bytes());
    assert!(matches!(open_err(&shm), StatsError::TooLarge { .. }));
    // Counts that agree with the offsets but not with the file's length.
    valid(&shm);
    write_at(&shm, field::WORKERS, &3u32.to_le_bytes());
    assert!(matches!(open_err(&shm), StatsError::Truncated { .. }));
}

#[test]
fn truncated_files() {
    let shm = ShmPath::new("stats-truncated");
    let full = valid(&shm);
    for len in [0, 7, HEADER_SIZE as u64 - 1, HEADER_SIZE as u64, HEADER_SIZE as u64 + 100, full - 1] {
        valid(&shm);
        OpenOptions::new().write(true).open(shm.path()).unwrap().set_len(len).unwrap();
        let err = open_err(&shm);
        assert!(matches!(err, StatsError::Truncated { found, .. } if found == len), "length {len}: {err:?}");
    }
    valid(&shm);
    OpenOptions::new().write(true).open(shm.path()).unwrap().set_len(full + 4096).unwrap();
    StatsReader::open(shm.path()).expect("longer than needed is fine");
}

#[test]
fn bad_names_in_the_file() {
    let shm = ShmPath::new("stats-bad-names");
    let entry = |i: usize| HEADER_SIZE + i * NAME_SIZE;
    valid(&shm);
    write_at(&shm, entry(1), &[0xff, 0xfe]);
    assert!(matches!(open_err(&shm), StatsError::BadName { kind: "counter", index: 1, problem: "is not UTF-8", .. }));
    valid(&shm);
    write_at(&shm, entry(3) + 40, b"junk");
    assert!(matches!(
        open_err(&shm),
        StatsError::BadName { kind: "gauge", index: 0, problem: "has bytes after its NUL padding", .. }
    ));
    valid(&shm);
    write_at(&shm, entry(4), &[0; NAME_SIZE]);
    assert!(matches!(open_err(&shm), StatsError::BadName { kind: "gauge", index: 1, problem: "is empty", .. }));
    valid(&shm);
    let mut copy = [0u8; NAME_SIZE];
    copy[..19].copy_from_slice(b"port/lan/rx_packets");
    write_at(&shm, entry(2), &copy);
    assert!(matches!(open_err(&shm), StatsError::DuplicateName { .. }));
}

#[test]
fn missing_file() {
    let shm = ShmPath::new("stats-missing");
    assert!(
        matches!(open_err(&shm), StatsError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );
}

#[test]
fn a_block_stuck_odd_is_reported_torn_without_blocking() {
    let shm = ShmPath::new("stats-stuck");
    let segment = StatsSegment::create(shm.path(), &layout(3), 1).unwrap();
    let reader = StatsReader::open(shm.path()).unwrap();
    let mut writers: Vec<_> = (0..3).map(|w| segment.writer(w).unwrap()).collect();
    for (w, writer) in writers.iter_mut().enumerate() {
        let w = w as u64;
        writer.publish(&[w, 2 * w, 3 * w], &[w + 100, 1]);
    }
    assert_eq!(reader.snapshot().totals, [3, 6, 9]);

    // Worker 1 "dies" mid-update: its sequence word odd, one value half-written.
    let blocks = read_u64(&shm, field::BLOCKS_OFFSET) as usize;
    let stride = read_u64(&shm, field::BLOCK_STRIDE) as usize;
    let seq1 = blocks + stride;
    write_at(&shm, seq1, &3u64.to_le_bytes());
    write_at(&shm, seq1 + 8, &999u64.to_le_bytes());
    writers[2].publish(&[20, 40, 60], &[50, 0]);

    let start = Instant::now();
    let snap = reader.snapshot();
    let took = start.elapsed();
    assert_eq!(snap.torn_workers, 1);
    assert!(took >= TORN_AFTER && took < Duration::from_millis(500), "snapshot took {took:?}");
    // The stuck worker's row is its last consistent copy, not the half-written value.
    assert_eq!(snap.per_worker, [vec![0, 0, 0], vec![1, 2, 3], vec![20, 40, 60]]);
    assert_eq!(snap.totals, [21, 42, 63]);
    assert_eq!(snap.gauges, [101, 1]);

    // A reader that never saw worker 1 consistent reports zeros for it.
    let fresh = StatsReader::open(shm.path()).unwrap().snapshot();
    assert_eq!((fresh.torn_workers, &fresh.per_worker[1]), (1, &vec![0, 0, 0]));

    // A new writer for the worker resumes at an even sequence and heals it.
    drop(writers.remove(1));
    segment.writer(1).unwrap().publish(&[7, 14, 21], &[1, 1]);
    assert_eq!(read_u64(&shm, seq1), 6);
    let snap = reader.snapshot();
    assert_eq!((snap.torn_workers, &snap.per_worker[1]), (0, &vec![7, 14, 21]));
}

#[test]
fn a_recreated_segment_is_seen_as_replaced() {
    let shm = ShmPath::new("stats-replaced");
    let first = StatsSegment::create(shm.path(), &layout(1), 1).unwrap();
    first.writer(0).unwrap().publish(&[1, 2, 3], &[4, 5]);
    let reader = StatsReader::open(shm.path()).unwrap();
    assert!(!reader.is_replaced());
    assert!(!StatsReader::open(shm.path()).unwrap().is_replaced());

    // The dataplane restarts with another layout.
    let mut bigger = layout(2);
    bigger.counters.push("drop/no_route".into());
    let second = StatsSegment::create(shm.path(), &bigger, 2).unwrap();
    assert!(reader.is_replaced());
    // The old mapping still reads the old file.
    let old = reader.snapshot();
    assert_eq!((old.boot_id, old.totals.clone()), (1, vec![1, 2, 3]));
    let new = StatsReader::open(shm.path()).unwrap();
    assert!(!new.is_replaced());
    assert_eq!(new.layout(), &bigger);
    assert_eq!(new.snapshot().boot_id, 2);
    drop((first, second));

    std::fs::remove_file(shm.path()).unwrap();
    assert!(new.is_replaced(), "a removed file counts as replaced");
}

/// Gauges that are amounts (each worker's NAT sessions) are summed over the
/// workers; those that describe a path (`path/...`) are the maximum.
#[test]
fn amounts_are_summed_and_path_gauges_are_the_maximum() {
    let shm = ShmPath::new("stats-gauges");
    let layout = StatsLayout { workers: 2, counters: vec!["x".into()], gauges: vec!["nat/sessions".into(), "path/b0/0/alive".into()] };
    let segment = StatsSegment::create(shm.path(), &layout, 1).unwrap();
    let reader = StatsReader::open(shm.path()).unwrap();
    segment.writer(0).unwrap().publish(&[1], &[300, 1]);
    segment.writer(1).unwrap().publish(&[2], &[200, 1]);
    assert_eq!(reader.snapshot().gauges, [500, 1]);
}
