//! Creating, opening and validating a segment file.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::{fmt, io};

use memmap2::MmapRaw;

use crate::layout::{self, Header, Meta, HEADER_SIZE, LAYOUT_VERSION, MAGIC, MAX_CAPACITY, MSG_SIZE};
use crate::ring::{Consumer, Producer};

/// The two rings of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    /// Control process -> dataplane.
    Commands,
    /// Dataplane -> control process.
    Events,
}

impl Ring {
    pub(crate) fn index(self) -> usize {
        match self {
            Ring::Commands => 0,
            Ring::Events => 1,
        }
    }
}

/// One end of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Producer,
    Consumer,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            End::Producer => "producer",
            End::Consumer => "consumer",
        })
    }
}

/// Why a segment could not be created or opened, or an endpoint taken.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("{path}: {source}", path = path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: file is {found} bytes, the segment needs {needed}", path = path.display())]
    Truncated { path: PathBuf, found: u64, needed: u64 },
    #[error("{path}: bad magic {found:02x?}, not a braid shared-memory segment", path = path.display())]
    BadMagic { path: PathBuf, found: [u8; 8] },
    #[error("{path}: layout version {found}, this build speaks version {expected}", path = path.display())]
    Version { path: PathBuf, found: u32, expected: u32 },
    #[error("{path}: header size {found}, this build expects {expected}", path = path.display())]
    HeaderSize { path: PathBuf, found: u32, expected: u32 },
    #[error("{path}: message size {found}, this build expects {expected}", path = path.display())]
    MsgSize { path: PathBuf, found: u32, expected: u32 },
    #[error("{path}: ring capacity {found} is not a power of two in 1..={MAX_CAPACITY}", path = path.display())]
    Capacity { path: PathBuf, found: u32 },
    #[error("the {ring:?} {end} of this segment is already taken in this process")]
    EndpointTaken { ring: Ring, end: End },
}

/// The ring endpoints this process holds, by segment file (device, inode)
/// and slot (commands P, commands C, events P, events C): per process, not
/// per mapping, so two `Segment`s of one file never hand out one end twice
/// (found by review: each mapping kept its own list).
static TAKEN: Mutex<Vec<((u64, u64), usize)>> = Mutex::new(Vec::new());

/// The mapping shared by a [`Segment`] and the endpoints taken from it.
pub(crate) struct Mapping {
    map: MmapRaw,
    capacity: u32,
    /// The file's (device, inode): the key of its endpoints in `TAKEN`.
    id: (u64, u64),
}

impl Mapping {
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_SIZE bytes (checked before
        // construction) and page-aligned, so it holds an aligned `Header`.
        // Only atomics in it are written after creation, and all writes to
        // them go through `&AtomicU64`, so a shared reference is sound even
        // while the other process updates them.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    pub(crate) fn capacity(&self) -> u32 {
        self.capacity
    }

    /// First slot of `ring`.
    pub(crate) fn slots(&self, ring: Ring) -> NonNull<crate::Msg> {
        let offset = layout::slots_offset(self.capacity, ring.index());
        // SAFETY: the mapping is `segment_len(capacity)` bytes (checked before
        // construction), so the slots of both rings lie inside it; `offset`
        // is a multiple of 64, so the pointer is aligned for `Msg`.
        unsafe { NonNull::new_unchecked(self.map.as_mut_ptr().add(offset) as *mut crate::Msg) }
    }

    pub(crate) fn release(&self, ring: Ring, end: End) {
        let key = (self.id, slot_of(ring, end));
        TAKEN.lock().unwrap_or_else(|e| e.into_inner()).retain(|k| *k != key);
    }
}

fn slot_of(ring: Ring, end: End) -> usize {
    ring.index() * 2 + matches!(end, End::Consumer) as usize
}

/// A mapped segment. Endpoints taken from it keep the mapping alive.
pub struct Segment {
    map: Arc<Mapping>,
    path: PathBuf,
}

impl Segment {
    /// Creates a segment at `path` (mode 0600) with two rings of `capacity`
    /// slots. The file is built under a temporary name and renamed into
    /// place, so [`Segment::open`] never sees a half-written header; an
    /// existing segment at `path` is replaced (its mappings stay valid).
    pub fn create(path: impl AsRef<Path>, capacity: u32) -> Result<Segment, ShmError> {
        let path = path.as_ref().to_path_buf();
        if !layout::valid_capacity(capacity) {
            return Err(ShmError::Capacity { path, found: capacity });
        }
        let mut tmp = path.clone().into_os_string();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        // A leftover of an earlier process with our pid that died before
        // its rename (containers reuse pids): ours to replace.
        let _ = fs::remove_file(&tmp);
        let io_err = |source| ShmError::Io { path: path.clone(), source };
        let result = (|| {
            let file = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.set_len(layout::segment_len(capacity))?;
            let map = MmapRaw::map_raw(&file)?;
            let meta = map.as_mut_ptr() as *mut Meta;
            // SAFETY: the file is `segment_len(capacity)` >= HEADER_SIZE bytes,
            // the mapping is page-aligned, and no other process can have it
            // mapped yet (it is under a fresh temporary name), so these plain
            // writes race with nothing. Zeroed file = zero generation and
            // zero head/tail positions.
            unsafe {
                (*meta).version = LAYOUT_VERSION;
                (*meta).header_size = HEADER_SIZE as u32;
                (*meta).msg_size = MSG_SIZE as u32;
                (*meta).capacity = capacity;
                (*meta).magic = MAGIC;
            }
            let m = file.metadata()?;
            fs::rename(&tmp, &path)?;
            Ok((map, (m.dev(), m.ino())))
        })();
        match result {
            Ok((map, id)) => Ok(Segment::from_map(map, capacity, path, id)),
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                Err(io_err(source))
            }
        }
    }

    /// Maps an existing segment, checking magic, version and sizes first.
    pub fn open(path: impl AsRef<Path>) -> Result<Segment, ShmError> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| ShmError::Io { path: path.clone(), source };
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err)?;
        let found = file.metadata().map_err(io_err)?.len();
        if found < HEADER_SIZE as u64 {
            return Err(ShmError::Truncated { path, found, needed: HEADER_SIZE as u64 });
        }
        let map = MmapRaw::map_raw(&file).map_err(io_err)?;
        let capacity = check_header(&map, &path)?;
        let needed = layout::segment_len(capacity);
        // Re-read the length: the mapping covers what the file held then.
        if (map.len() as u64) < needed {
            return Err(ShmError::Truncated { path, found: map.len() as u64, needed });
        }
        let m = file.metadata().map_err(io_err)?;
        Ok(Segment::from_map(map, capacity, path, (m.dev(), m.ino())))
    }

    fn from_map(map: MmapRaw, capacity: u32, path: PathBuf, id: (u64, u64)) -> Segment {
        Segment { map: Arc::new(Mapping { map, capacity, id }), path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Slots per ring.
    pub fn capacity(&self) -> u32 {
        self.map.capacity()
    }

    /// Transactions committed on the commands ring since the segment was created.
    pub fn generation(&self) -> u64 {
        self.map.header().meta.generation.load(Ordering::Acquire)
    }

    /// Takes the producing end of `ring`. One per process at a time; across
    /// processes the protocol (one writer per ring) is the caller's to keep.
    pub fn producer(&self, ring: Ring) -> Result<Producer, ShmError> {
        self.take(ring, End::Producer)?;
        Ok(Producer::new(self.map.clone(), ring))
    }

    /// Takes the consuming end of `ring`, with the same rule as [`Segment::producer`].
    pub fn consumer(&self, ring: Ring) -> Result<Consumer, ShmError> {
        self.take(ring, End::Consumer)?;
        Ok(Consumer::new(self.map.clone(), ring))
    }

    fn take(&self, ring: Ring, end: End) -> Result<(), ShmError> {
        let key = (self.map.id, slot_of(ring, end));
        let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if taken.contains(&key) {
            return Err(ShmError::EndpointTaken { ring, end });
        }
        taken.push(key);
        Ok(())
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Segment({}, {} slots)", self.path.display(), self.capacity())
    }
}

/// Validates the header of a mapping at least HEADER_SIZE long; returns the capacity.
fn check_header(map: &MmapRaw, path: &Path) -> Result<u32, ShmError> {
    let meta = map.as_ptr() as *const Meta;
    // SAFETY: the caller checked the mapping holds HEADER_SIZE bytes and it
    // is page-aligned. These fields are written only before the segment is
    // renamed into place, so nothing writes them concurrently; volatile reads
    // because the bytes live outside this process's control.
    let (magic, version, header_size, msg_size, capacity) = unsafe {
        (
            std::ptr::read_volatile(&raw const (*meta).magic),
            std::ptr::read_volatile(&raw const (*meta).version),
            std::ptr::read_volatile(&raw const (*meta).header_size),
            std::ptr::read_volatile(&raw const (*meta).msg_size),
            std::ptr::read_volatile(&raw const (*meta).capacity),
        )
    };
    let path = path.to_path_buf();
    if magic != MAGIC {
        return Err(ShmError::BadMagic { path, found: magic });
    }
    if version != LAYOUT_VERSION {
        return Err(ShmError::Version { path, found: version, expected: LAYOUT_VERSION });
    }
    if header_size != HEADER_SIZE as u32 {
        return Err(ShmError::HeaderSize { path, found: header_size, expected: HEADER_SIZE as u32 });
    }
    if msg_size != MSG_SIZE as u32 {
        return Err(ShmError::MsgSize { path, found: msg_size, expected: MSG_SIZE as u32 });
    }
    if !layout::valid_capacity(capacity) {
        return Err(ShmError::Capacity { path, found: capacity });
    }
    Ok(capacity)
}
