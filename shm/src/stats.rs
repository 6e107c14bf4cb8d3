//! The stats segment: counters and gauges the dataplane's workers publish and
//! the control process reads without a lock, like VPP's stats segment.
//!
//! A file of its own (e.g. `/dev/shm/braid-stats`, mode 0600), separate from
//! the command rings. The dataplane creates it ([`StatsSegment::create`]) under
//! a temporary name and renames it into place, so a reader never sees a
//! half-written header, and a restart replaces the file without disturbing old
//! mappings (a reader notices with [`StatsReader::is_replaced`]).
//!
//! Each worker owns one block of its own cache lines, guarded by a seqlock:
//! [`StatsWriter::publish`] makes the block's sequence word odd, stores every
//! value, then makes it even again (Release). [`StatsReader::snapshot`] copies
//! a block and keeps the copy only if the sequence word was even and unchanged
//! around it; after [`TORN_AFTER`] of retries it gives up on that block and
//! reports it torn, so a writer that died mid-update never blocks a reader.
//! Names live in the file, so a reader needs nothing but the path.
//!
//! ```text
//! 0     header (64 B), written once before the rename (little-endian):
//!         magic "BRAIDSTA", u32 version, u32 header size (128), u32 name size (64),
//!         u32 workers, u32 counters, u32 gauges, u64 names offset,
//!         u64 blocks offset, u64 block stride, u64 boot id
//! 64    u64 applied generation, u64 heartbeat, u64 applied document hash
//!         (dataplane control thread, Release)
//! 128   name table: (counters + gauges) x 64 B, UTF-8, NUL-padded; counters first
//! ...   worker blocks (64-aligned, stride a multiple of 64), one per worker:
//!         u64 seq, counters x u64, gauges x u64
//! ```
//!
//! Every number in the header is checked before it is used (the file may be
//! hostile or truncated when opened), and the reader maps the file read-only.
//! As with the rings, a file truncated *after* it was mapped makes accesses
//! fault (SIGBUS); braid never truncates one, it renames a new file in.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::{fmt, io};

use memmap2::{MmapOptions, MmapRaw};

/// First eight bytes of every stats segment.
pub const MAGIC: [u8; 8] = *b"BRAIDSTA";
/// Bumped on any change to the layout described in this module.
pub const LAYOUT_VERSION: u32 = 2;
/// Header bytes: the fixed fields, then the applied generation, heartbeat
/// and document hash on a line of their own. Also the offset of the name table.
pub const HEADER_SIZE: usize = 128;
/// Bytes of one name-table entry, so also the longest name.
pub const NAME_SIZE: usize = 64;
/// Most workers a segment may declare.
pub const MAX_WORKERS: u16 = 1024;
/// Most counters a segment may declare.
pub const MAX_COUNTERS: u32 = 1 << 20;
/// Most gauges a segment may declare.
pub const MAX_GAUGES: u32 = 1 << 20;
/// Largest segment file (1 GiB): bounds workers x values together.
pub const MAX_SEGMENT_LEN: u64 = 1 << 30;
/// How long [`StatsReader::snapshot`] retries one worker's block before it
/// reports the block torn. A live writer holds the block odd for one
/// `publish` (microseconds); a writer stuck odd for this long is dead or
/// descheduled.
pub const TORN_AFTER: Duration = Duration::from_millis(2);

const LINE: usize = 64;
const WORD: usize = 8;

/// Byte offsets of the header fields, for tools and for the tests that
/// corrupt segments on purpose.
pub mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const HEADER_SIZE: usize = 12;
    pub const NAME_SIZE: usize = 16;
    pub const WORKERS: usize = 20;
    pub const COUNTERS: usize = 24;
    pub const GAUGES: usize = 28;
    pub const NAMES_OFFSET: usize = 32;
    pub const BLOCKS_OFFSET: usize = 40;
    pub const BLOCK_STRIDE: usize = 48;
    pub const BOOT_ID: usize = 56;
    pub const APPLIED_GENERATION: usize = 64;
    pub const HEARTBEAT: usize = 72;
    /// FNV-1a hash of the applied generation's document
    /// (`proto::doc_hash`), 0 when not known (tables from a file).
    pub const APPLIED_DOC_HASH: usize = 80;
}

/// What a segment holds: how many workers, and the names of the counters
/// (monotonic per worker, summed on read) and gauges (per worker, combined
/// on read as the maximum for what a path is, `path/...`, and as the sum
/// for an amount, such as `nat/sessions`). Names share one namespace, e.g.
/// `port/lan/rx_packets`, `path/b0/t3/rtt_ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsLayout {
    pub workers: u16,
    pub counters: Vec<String>,
    pub gauges: Vec<String>,
}

impl StatsLayout {
    /// Index of the counter called `name`.
    pub fn counter_index(&self, name: &str) -> Option<usize> {
        self.counters.iter().position(|n| n == name)
    }

    /// Index of the gauge called `name`.
    pub fn gauge_index(&self, name: &str) -> Option<usize> {
        self.gauges.iter().position(|n| n == name)
    }
}

/// Why a stats segment could not be created or opened, or a writer taken.
/// Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("{path}: {source}", path = path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: file is {found} bytes, the stats segment needs {needed}", path = path.display())]
    Truncated { path: PathBuf, found: u64, needed: u64 },
    #[error("{path}: bad magic {found:02x?}, not a braid stats segment", path = path.display())]
    BadMagic { path: PathBuf, found: [u8; 8] },
    #[error("{path}: stats layout version {found}, this build speaks version {expected}", path = path.display())]
    Version { path: PathBuf, found: u32, expected: u32 },
    /// A header field that is fixed or follows from the counts has another value.
    #[error("{path}: {field} is {found}, this build expects {expected}", path = path.display())]
    Field { path: PathBuf, field: &'static str, found: u64, expected: u64 },
    #[error("{path}: {what} {found} is outside {min}..={max}", path = path.display())]
    Count { path: PathBuf, what: &'static str, found: u64, min: u64, max: u64 },
    #[error("{path}: the segment would be {len} bytes, more than the {max} allowed", path = path.display())]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("{path}: {kind} name {name:?} is {len} bytes, names hold at most {NAME_SIZE}", path = path.display())]
    NameTooLong { path: PathBuf, kind: &'static str, name: String, len: usize },
    #[error("{path}: {kind} {index} name {name:?} {problem}", path = path.display())]
    BadName { path: PathBuf, kind: &'static str, index: usize, name: String, problem: &'static str },
    #[error("{path}: name {name:?} is used twice", path = path.display())]
    DuplicateName { path: PathBuf, name: String },
    #[error("{path}: no worker {worker}, the segment has {workers}", path = path.display())]
    NoSuchWorker { path: PathBuf, worker: u16, workers: u16 },
    #[error("{path}: the writer of worker {worker} is already taken in this process", path = path.display())]
    WriterTaken { path: PathBuf, worker: u16 },
}

/// Sizes and offsets of a segment, derived from its counts and bounded, so
/// every offset computed from them lies inside `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    workers: usize,
    counters: usize,
    gauges: usize,
    blocks_offset: usize,
    /// Bytes per worker block: a multiple of [`LINE`].
    stride: usize,
    len: usize,
}

impl Geometry {
    /// Checks the counts against the limits and lays the segment out.
    fn new(workers: u64, counters: u64, gauges: u64, path: &Path) -> Result<Geometry, StatsError> {
        let count = |what, found, min, max: u64| {
            if (min..=max).contains(&found) {
                Ok(())
            } else {
                Err(StatsError::Count { path: path.to_path_buf(), what, found, min, max })
            }
        };
        count("workers", workers, 1, MAX_WORKERS as u64)?;
        count("counters", counters, 0, MAX_COUNTERS as u64)?;
        count("gauges", gauges, 0, MAX_GAUGES as u64)?;
        // Bounded above, so none of this overflows a u64.
        let names = (counters + gauges) * NAME_SIZE as u64;
        let blocks_offset = (HEADER_SIZE as u64 + names).next_multiple_of(LINE as u64);
        let stride = ((1 + counters + gauges) * WORD as u64).next_multiple_of(LINE as u64);
        let len = blocks_offset + workers * stride;
        if len > MAX_SEGMENT_LEN {
            return Err(StatsError::TooLarge { path: path.to_path_buf(), len, max: MAX_SEGMENT_LEN });
        }
        // len <= 1 GiB, so every value fits a usize on the 64-bit hosts braid targets.
        Ok(Geometry {
            workers: workers as usize,
            counters: counters as usize,
            gauges: gauges as usize,
            blocks_offset: blocks_offset as usize,
            stride: stride as usize,
            len: len as usize,
        })
    }

    /// Values per worker: counters, then gauges.
    fn values(&self) -> usize {
        self.counters + self.gauges
    }

    fn encode_header(&self, boot_id: u64) -> [u8; HEADER_SIZE] {
        let mut h = [0u8; HEADER_SIZE];
        let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
        put(field::MAGIC, &MAGIC);
        put(field::VERSION, &LAYOUT_VERSION.to_le_bytes());
        put(field::HEADER_SIZE, &(HEADER_SIZE as u32).to_le_bytes());
        put(field::NAME_SIZE, &(NAME_SIZE as u32).to_le_bytes());
        put(field::WORKERS, &(self.workers as u32).to_le_bytes());
        put(field::COUNTERS, &(self.counters as u32).to_le_bytes());
        put(field::GAUGES, &(self.gauges as u32).to_le_bytes());
        put(field::NAMES_OFFSET, &(HEADER_SIZE as u64).to_le_bytes());
        put(field::BLOCKS_OFFSET, &(self.blocks_offset as u64).to_le_bytes());
        put(field::BLOCK_STRIDE, &(self.stride as u64).to_le_bytes());
        put(field::BOOT_ID, &boot_id.to_le_bytes());
        h
    }

    /// Validates a header read from `path`; returns the geometry and boot id.
    fn decode_header(h: &[u8; HEADER_SIZE], path: &Path) -> Result<(Geometry, u64), StatsError> {
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        let magic: [u8; 8] = h[..8].try_into().expect("8 bytes");
        if magic != MAGIC {
            return Err(StatsError::BadMagic { path: path.to_path_buf(), found: magic });
        }
        let version = u32_at(field::VERSION);
        if version != LAYOUT_VERSION {
            return Err(StatsError::Version { path: path.to_path_buf(), found: version, expected: LAYOUT_VERSION });
        }
        let expect = |field, found: u64, expected: u64| {
            if found == expected {
                Ok(())
            } else {
                Err(StatsError::Field { path: path.to_path_buf(), field, found, expected })
            }
        };
        expect("header size", u32_at(field::HEADER_SIZE).into(), HEADER_SIZE as u64)?;
        expect("name size", u32_at(field::NAME_SIZE).into(), NAME_SIZE as u64)?;
        let geometry = Geometry::new(
            u32_at(field::WORKERS).into(),
            u32_at(field::COUNTERS).into(),
            u32_at(field::GAUGES).into(),
            path,
        )?;
        expect("names offset", u64_at(field::NAMES_OFFSET), HEADER_SIZE as u64)?;
        expect("blocks offset", u64_at(field::BLOCKS_OFFSET), geometry.blocks_offset as u64)?;
        expect("block stride", u64_at(field::BLOCK_STRIDE), geometry.stride as u64)?;
        Ok((geometry, u64_at(field::BOOT_ID)))
    }
}

/// Checks names (length, content, uniqueness) and the counts.
fn check_layout(layout: &StatsLayout, path: &Path) -> Result<Geometry, StatsError> {
    let geometry =
        Geometry::new(layout.workers.into(), layout.counters.len() as u64, layout.gauges.len() as u64, path)?;
    let mut seen = HashSet::with_capacity(geometry.values());
    let named = layout.counters.iter().map(|n| ("counter", n)).chain(layout.gauges.iter().map(|n| ("gauge", n)));
    for (index, (kind, name)) in named.enumerate() {
        let index = if kind == "counter" { index } else { index - layout.counters.len() };
        let bad = |problem| StatsError::BadName { path: path.to_path_buf(), kind, index, name: name.clone(), problem };
        if name.len() > NAME_SIZE {
            return Err(StatsError::NameTooLong {
                path: path.to_path_buf(),
                kind,
                name: name.clone(),
                len: name.len(),
            });
        }
        if name.is_empty() {
            return Err(bad("is empty"));
        }
        if name.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        if !seen.insert(name.as_str()) {
            return Err(StatsError::DuplicateName { path: path.to_path_buf(), name: name.clone() });
        }
    }
    Ok(geometry)
}

fn encode_names(layout: &StatsLayout) -> Vec<u8> {
    let mut table = vec![0u8; (layout.counters.len() + layout.gauges.len()) * NAME_SIZE];
    for (entry, name) in table.chunks_exact_mut(NAME_SIZE).zip(layout.counters.iter().chain(&layout.gauges)) {
        entry[..name.len()].copy_from_slice(name.as_bytes());
    }
    table
}

/// One name-table entry: UTF-8, then NUL padding only. Emptiness and
/// uniqueness are left to [`check_layout`].
fn decode_name(entry: &[u8]) -> Result<String, (String, &'static str)> {
    let end = entry.iter().position(|&b| b == 0).unwrap_or(entry.len());
    let lossy = || String::from_utf8_lossy(&entry[..end]).into_owned();
    if entry[end..].iter().any(|&b| b != 0) {
        return Err((lossy(), "has bytes after its NUL padding"));
    }
    String::from_utf8(entry[..end].to_vec()).map_err(|_| (lossy(), "is not UTF-8"))
}

/// A mapping at least `geometry.len` bytes long, page-aligned.
struct Mapped {
    map: MmapRaw,
    geometry: Geometry,
}

impl Mapped {
    fn new(map: MmapRaw, geometry: Geometry, path: &Path) -> Result<Mapped, StatsError> {
        if map.len() < geometry.len {
            let (found, needed) = (map.len() as u64, geometry.len as u64);
            return Err(StatsError::Truncated { path: path.to_path_buf(), found, needed });
        }
        Ok(Mapped { map, geometry })
    }

    /// The word at `offset` in the header's live line.
    fn live(&self, offset: usize) -> &AtomicU64 {
        assert!(matches!(offset, field::APPLIED_GENERATION | field::HEARTBEAT | field::APPLIED_DOC_HASH));
        // SAFETY: the mapping is page-aligned and at least `geometry.len` >=
        // HEADER_SIZE bytes (`Mapped::new`), and `offset` is 64, 72 or 80, so the
        // word is inside it and 8-aligned. Both processes touch these words
        // only through atomics, and any bit pattern is a valid u64, so a
        // shared `&AtomicU64` is sound while the other process stores to it.
        // The reference borrows `self`, which keeps the mapping alive.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast::<u64>()) }
    }

    /// Worker `worker`'s block: the sequence word, counters, then gauges.
    fn block(&self, worker: usize) -> &[AtomicU64] {
        let g = &self.geometry;
        assert!(worker < g.workers, "worker {worker} of {}", g.workers);
        let offset = g.blocks_offset + worker * g.stride;
        // SAFETY: `worker < workers`, so the block's `(1 + values) * 8 <=
        // stride` bytes end at or before `blocks_offset + workers * stride =
        // len <= map.len()` (`Geometry::new`, `Mapped::new`). `blocks_offset`
        // and `stride` are multiples of 64 and the mapping is page-aligned,
        // so the words are 8-aligned. Both processes access block words only
        // through atomics and any bit pattern is a valid u64, so a shared
        // slice of `AtomicU64` is sound while the writer stores to it; it
        // borrows `self`, which keeps the mapping alive.
        unsafe {
            let first = self.map.as_mut_ptr().add(offset).cast::<AtomicU64>();
            std::slice::from_raw_parts(first, 1 + g.values())
        }
    }
}

/// The dataplane's side: creates the segment, hands out one [`StatsWriter`]
/// per worker, and keeps the applied generation and heartbeat.
pub struct StatsSegment {
    shared: Arc<Shared>,
    layout: StatsLayout,
    boot_id: u64,
}

/// What a [`StatsSegment`] and its writers share.
struct Shared {
    mapped: Mapped,
    path: PathBuf,
    /// Which workers' writers this process holds.
    taken: Vec<AtomicBool>,
}

impl StatsSegment {
    /// Creates the segment at `path` (mode 0600) for `layout`, stamped with
    /// `boot_id` (any value telling this dataplane run from the last). The
    /// file is built under a temporary name and renamed into place; an
    /// existing segment at `path` is replaced (its readers see
    /// [`StatsReader::is_replaced`]). Refuses names longer than
    /// [`NAME_SIZE`] bytes, empty, with a NUL, or used twice, and counts
    /// beyond the `MAX_*` limits.
    pub fn create(path: impl AsRef<Path>, layout: &StatsLayout, boot_id: u64) -> Result<StatsSegment, StatsError> {
        let path = path.as_ref().to_path_buf();
        let geometry = check_layout(layout, &path)?;
        let mut tmp = path.clone().into_os_string();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        // A leftover of an earlier run with our pid (a container's pid 1
        // crashing between create and rename) would otherwise block us forever.
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&tmp)?;
            // A fresh file reads as zeros: every sequence word even, every
            // value, the generation and the heartbeat zero.
            file.set_len(geometry.len as u64)?;
            file.write_all_at(&geometry.encode_header(boot_id), 0)?;
            file.write_all_at(&encode_names(layout), HEADER_SIZE as u64)?;
            let map = MmapRaw::map_raw(&file)?;
            fs::rename(&tmp, &path)?;
            Ok(map)
        })();
        let map = result.map_err(|source| {
            let _ = fs::remove_file(&tmp);
            StatsError::Io { path: path.clone(), source }
        })?;
        let mapped = Mapped::new(map, geometry, &path)?;
        let taken = (0..geometry.workers).map(|_| AtomicBool::new(false)).collect();
        Ok(StatsSegment { shared: Arc::new(Shared { mapped, path, taken }), layout: layout.clone(), boot_id })
    }

    /// Takes worker `worker`'s writer: one per worker at a time in this
    /// process (dropping it frees the worker). It may move to the worker's thread.
    pub fn writer(&self, worker: u16) -> Result<StatsWriter, StatsError> {
        let path = || self.shared.path.clone();
        let taken = self.shared.taken.get(worker as usize).ok_or_else(|| StatsError::NoSuchWorker {
            path: path(),
            worker,
            workers: self.layout.workers,
        })?;
        if taken.swap(true, Ordering::AcqRel) {
            return Err(StatsError::WriterTaken { path: path(), worker });
        }
        let seq = self.shared.mapped.block(worker as usize)[0].load(Ordering::Relaxed);
        // Resume an even sequence, whatever an earlier writer of this block left.
        let seq = seq.wrapping_add(seq & 1);
        Ok(StatsWriter { shared: self.shared.clone(), worker, seq })
    }

    /// The configuration the dataplane runs: its generation and the hash
    /// of its document (`proto::doc_hash`; 0 when not known). A reader
    /// that sees the new generation sees its hash: two processes can
    /// number different documents alike (a control process whose state
    /// was wiped starts again from 1), so the generation alone does not
    /// tell what runs.
    ///
    /// The generation is 0 while the hash changes, so a reader that reads
    /// the generation, the hash, then the generation again and sees one
    /// number twice has that generation's hash (`StatsReader::snapshot`).
    pub fn set_applied(&self, generation: u64, doc_hash: u64) {
        let m = &self.shared.mapped;
        m.live(field::APPLIED_GENERATION).store(0, Ordering::Release);
        m.live(field::APPLIED_DOC_HASH).store(doc_hash, Ordering::Release);
        m.live(field::APPLIED_GENERATION).store(generation, Ordering::Release);
    }

    /// Bumped by the dataplane's control thread (e.g. monotonic nanoseconds),
    /// so a reader can tell a dataplane that stopped.
    pub fn set_heartbeat(&self, nanos: u64) {
        self.shared.mapped.live(field::HEARTBEAT).store(nanos, Ordering::Release);
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn layout(&self) -> &StatsLayout {
        &self.layout
    }

    pub fn boot_id(&self) -> u64 {
        self.boot_id
    }
}

impl fmt::Debug for StatsSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.layout;
        write!(
            f,
            "StatsSegment({}, {} workers, {} counters, {} gauges)",
            self.path().display(),
            l.workers,
            l.counters.len(),
            l.gauges.len()
        )
    }
}

/// One worker's writing end. `Send`, not `Clone`.
pub struct StatsWriter {
    shared: Arc<Shared>,
    worker: u16,
    /// The block's sequence word as we last stored it (even).
    seq: u64,
}

impl StatsWriter {
    /// Publishes this worker's current values, in the layout's order:
    /// counters as running totals, gauges as current values. Readers see
    /// all of them or none (seqlock). No allocation, no lock, no system call.
    ///
    /// # Panics
    /// If `counters` or `gauges` does not have the layout's length.
    pub fn publish(&mut self, counters: &[u64], gauges: &[u64]) {
        let g = &self.shared.mapped.geometry;
        assert_eq!(counters.len(), g.counters, "publish: counters");
        assert_eq!(gauges.len(), g.gauges, "publish: gauges");
        let (seq, values) = self.shared.mapped.block(self.worker as usize).split_first().expect("sequence word");
        seq.store(self.seq.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd store before the value stores: a reader that sees
        // any new value then sees the odd (or a later) sequence (it pairs with
        // the reader's Acquire fence after its copy).
        fence(Ordering::Release);
        for (slot, &value) in values.iter().zip(counters.iter().chain(gauges)) {
            slot.store(value, Ordering::Relaxed);
        }
        self.seq = self.seq.wrapping_add(2);
        seq.store(self.seq, Ordering::Release);
    }

    pub fn worker(&self) -> u16 {
        self.worker
    }
}

impl Drop for StatsWriter {
    fn drop(&mut self) {
        self.shared.taken[self.worker as usize].store(false, Ordering::Release);
    }
}

impl fmt::Debug for StatsWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatsWriter({}, worker {})", self.shared.path.display(), self.worker)
    }
}

/// What a reader saw at one moment. Per-worker rows are consistent copies;
/// different workers' rows were copied at slightly different times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub boot_id: u64,
    pub applied_generation: u64,
    /// The applied document's hash, 0 when not known.
    pub applied_doc_hash: u64,
    pub heartbeat: u64,
    /// Per counter, summed over workers (wrapping).
    pub totals: Vec<u64>,
    /// `per_worker[w][c]`: worker `w`'s counter `c`.
    pub per_worker: Vec<Vec<u64>>,
    /// Per gauge over workers: the maximum for `path/...`, else the sum.
    pub gauges: Vec<u64>,
    /// `gauges_per_worker[w][g]`: worker `w`'s gauge `g`.
    pub gauges_per_worker: Vec<Vec<u64>>,
    /// Workers whose block stayed odd or kept changing for [`TORN_AFTER`]:
    /// their rows repeat the last consistent copy this reader took (zeros
    /// if none), so totals never go backwards.
    pub torn_workers: u32,
}

/// The control process's side: maps the segment read-only, takes lock-free
/// snapshots.
pub struct StatsReader {
    mapped: Mapped,
    path: PathBuf,
    layout: StatsLayout,
    boot_id: u64,
    /// Device and inode of the file mapped.
    file_id: (u64, u64),
    /// Each worker's last consistent values, `workers x values`.
    last_good: Mutex<Vec<u64>>,
}

impl StatsReader {
    /// Opens the segment at `path`, checking magic, version, every size and
    /// offset, the names and the file length before mapping it read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<StatsReader, StatsError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| StatsError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        let truncated = |found, needed| StatsError::Truncated { path: path.clone(), found, needed };
        if meta.len() < HEADER_SIZE as u64 {
            return Err(truncated(meta.len(), HEADER_SIZE as u64));
        }
        let mut header = [0u8; HEADER_SIZE];
        file.read_exact_at(&mut header, 0).map_err(io_err)?;
        let (geometry, boot_id) = Geometry::decode_header(&header, &path)?;
        if meta.len() < geometry.len as u64 {
            return Err(truncated(meta.len(), geometry.len as u64));
        }
        let mut table = vec![0u8; geometry.values() * NAME_SIZE];
        file.read_exact_at(&mut table, HEADER_SIZE as u64).map_err(io_err)?;
        let mut names = Vec::with_capacity(geometry.values());
        for (i, entry) in table.chunks_exact(NAME_SIZE).enumerate() {
            let (kind, index) = if i < geometry.counters { ("counter", i) } else { ("gauge", i - geometry.counters) };
            let name = decode_name(entry).map_err(|(name, problem)| StatsError::BadName {
                path: path.clone(),
                kind,
                index,
                name,
                problem,
            })?;
            names.push(name);
        }
        let gauges = names.split_off(geometry.counters);
        let layout = StatsLayout { workers: geometry.workers as u16, counters: names, gauges };
        check_layout(&layout, &path)?;
        // Everything used from here on comes from the checked `geometry`;
        // the mapping's length is checked again, as the file may have shrunk.
        let map = MmapOptions::new().map_raw_read_only(&file).map_err(io_err)?;
        let mapped = Mapped::new(map, geometry, &path)?;
        let last_good = Mutex::new(vec![0; geometry.workers * geometry.values()]);
        Ok(StatsReader { mapped, path, layout, boot_id, file_id: (meta.dev(), meta.ino()), last_good })
    }

    pub fn layout(&self) -> &StatsLayout {
        &self.layout
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies every worker's block (retrying a block caught mid-update for
    /// up to [`TORN_AFTER`]) and the header's live words. Never blocks on a
    /// writer: a block that stays odd is reported in `torn_workers`.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = self.mapped.geometry;
        let n = g.values();
        // Relaxed loads then fences throughout: the reader's mapping is
        // read-only, where plain (Relaxed) atomic loads are the conservative choice.
        // The pair as `set_applied` left it: the same generation before
        // and after the hash (a few tries; a writer holds it for three
        // stores).
        let (applied_generation, applied_doc_hash) = {
            let (g, h) = (self.mapped.live(field::APPLIED_GENERATION), self.mapped.live(field::APPLIED_DOC_HASH));
            let mut pair = (0, 0);
            for _ in 0..100 {
                let g1 = g.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                let hash = h.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if g.load(Ordering::Relaxed) == g1 {
                    pair = (g1, hash);
                    break;
                }
                std::hint::spin_loop();
            }
            pair
        };
        let heartbeat = self.mapped.live(field::HEARTBEAT).load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let mut last = self.last_good.lock().unwrap_or_else(PoisonError::into_inner);
        let mut copy = vec![0u64; n];
        let mut torn_workers = 0;
        let mut snap = StatsSnapshot {
            boot_id: self.boot_id,
            applied_generation,
            applied_doc_hash,
            heartbeat,
            totals: vec![0; g.counters],
            per_worker: Vec::with_capacity(g.workers),
            gauges: vec![0; g.gauges],
            gauges_per_worker: Vec::with_capacity(g.workers),
            torn_workers: 0,
        };
        for worker in 0..g.workers {
            let row = &mut last[worker * n..(worker + 1) * n];
            if read_block(self.mapped.block(worker), &mut copy) {
                row.copy_from_slice(&copy);
            } else {
                torn_workers += 1;
            }
            let (counters, gauges) = row.split_at(g.counters);
            for (total, &v) in snap.totals.iter_mut().zip(counters) {
                *total = total.wrapping_add(v);
            }
            // What a path is (`path/...`: alive, a delay) every worker
            // sees alike: the maximum; an amount (NAT sessions, packets
            // held) is each worker's own: the sum.
            for ((total, &v), name) in snap.gauges.iter_mut().zip(gauges).zip(&self.layout.gauges) {
                *total = if name.starts_with("path/") { (*total).max(v) } else { total.wrapping_add(v) };
            }
            snap.per_worker.push(counters.to_vec());
            snap.gauges_per_worker.push(gauges.to_vec());
        }
        snap.torn_workers = torn_workers;
        snap
    }

    /// Whether the file at the path is no longer the one mapped (removed, or
    /// replaced by a restarted dataplane): time to open it again.
    pub fn is_replaced(&self) -> bool {
        match fs::metadata(&self.path) {
            Ok(meta) => (meta.dev(), meta.ino()) != self.file_id,
            Err(_) => true,
        }
    }
}

impl fmt::Debug for StatsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatsReader({}, boot {:#x})", self.path.display(), self.boot_id)
    }
}

/// Copies a block's values into `out` if its sequence word is even and the
/// same before and after the copy; retries for up to [`TORN_AFTER`] (at
/// least [`MIN_TRIES`] times), spinning, then yielding. `false`: torn, `out`
/// holds garbage.
fn read_block(block: &[AtomicU64], out: &mut [u64]) -> bool {
    const SPINS: u32 = 16;
    let (seq, values) = block.split_first().expect("sequence word");
    let mut start = None;
    let mut attempt = 0u32;
    loop {
        let before = seq.load(Ordering::Relaxed);
        // Acquire: if `before` is the writer's even (Release) store, every
        // value of that publish is visible to the copy.
        fence(Ordering::Acquire);
        if before & 1 == 0 {
            for (o, v) in out.iter_mut().zip(values) {
                *o = v.load(Ordering::Relaxed);
            }
            // If the copy read any value of a later publish, the writer's
            // odd store (fenced before it) is visible to the load below.
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return true;
            }
        }
        attempt = attempt.saturating_add(1);
        if attempt <= SPINS {
            std::hint::spin_loop();
            continue;
        }
        let start = *start.get_or_insert_with(Instant::now);
        if attempt >= MIN_TRIES && start.elapsed() >= TORN_AFTER {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Fewest tries before a block may be called torn, however slow the clock
/// says the retries were (a descheduled reader must still try again).
const MIN_TRIES: u32 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_entries_are_named() {
        let layout =
            StatsLayout { workers: 1, counters: vec!["a".into(), "x".repeat(NAME_SIZE)], gauges: vec!["é/ü".into()] };
        let table = encode_names(&layout);
        assert_eq!(table.len(), 3 * NAME_SIZE);
        let names: Vec<_> = table.chunks_exact(NAME_SIZE).map(|e| decode_name(e).unwrap()).collect();
        assert_eq!(names, ["a", &"x".repeat(NAME_SIZE), "é/ü"]);

        let mut entry = [0u8; NAME_SIZE];
        entry[..2].copy_from_slice(b"ab");
        entry[5] = b'c';
        assert_eq!(decode_name(&entry), Err(("ab".into(), "has bytes after its NUL padding")));
        entry[5] = 0;
        entry[1] = 0xff;
        assert_eq!(decode_name(&entry).unwrap_err().1, "is not UTF-8");
    }

    #[test]
    fn geometry_keeps_blocks_on_their_own_lines() {
        let p = Path::new("/x");
        for (c, g) in [(0u64, 0u64), (1, 0), (7, 0), (7, 1), (100, 3)] {
            let geo = Geometry::new(3, c, g, p).unwrap();
            assert_eq!(geo.blocks_offset % LINE, 0);
            assert_eq!(geo.stride % LINE, 0);
            assert!(geo.stride >= (1 + c as usize + g as usize) * WORD);
            assert!(geo.stride < (1 + c as usize + g as usize) * WORD + LINE);
            assert_eq!(geo.blocks_offset, HEADER_SIZE + (c + g) as usize * NAME_SIZE);
            assert_eq!(geo.len, geo.blocks_offset + 3 * geo.stride);
            let h = geo.encode_header(42);
            assert_eq!(Geometry::decode_header(&h, p).unwrap(), (geo, 42));
        }
        assert!(matches!(Geometry::new(0, 1, 1, p), Err(StatsError::Count { what: "workers", .. })));
        assert!(matches!(
            Geometry::new(1024, 1 << 20, 0, p),
            Err(StatsError::TooLarge { len, .. }) if len > MAX_SEGMENT_LEN
        ));
    }

    #[test]
    fn read_block_sees_even_sequence_and_gives_up_on_odd() {
        let block: Vec<AtomicU64> = (0..4).map(AtomicU64::new).collect();
        block[0].store(2, Ordering::Relaxed);
        let mut out = [0u64; 3];
        assert!(read_block(&block, &mut out));
        assert_eq!(out, [1, 2, 3]);
        block[0].store(3, Ordering::Relaxed);
        let start = Instant::now();
        assert!(!read_block(&block, &mut out));
        assert!(start.elapsed() >= TORN_AFTER);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
