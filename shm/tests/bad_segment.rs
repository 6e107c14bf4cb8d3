//! Opening anything that is not a valid segment gives a clear error, no panic.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use braid_shm::layout::{field, segment_len, HEADER_SIZE, LAYOUT_VERSION};
use braid_shm::{Segment, ShmError};
use common::ShmPath;

/// Creates a valid 8-slot segment, then overwrites `bytes` at `offset`.
fn corrupt(shm: &ShmPath, offset: usize, bytes: &[u8]) {
    drop(Segment::create(shm.path(), 8).unwrap());
    let file = OpenOptions::new().write(true).open(shm.path()).unwrap();
    file.write_all_at(bytes, offset as u64).unwrap();
}

fn truncate(shm: &ShmPath, len: u64) {
    drop(Segment::create(shm.path(), 8).unwrap());
    OpenOptions::new().write(true).open(shm.path()).unwrap().set_len(len).unwrap();
}

fn open_err(shm: &ShmPath) -> ShmError {
    let err = Segment::open(shm.path()).expect_err("open must fail");
    eprintln!("{err}");
    assert!(err.to_string().contains(&shm.path().display().to_string()), "error names the file: {err}");
    err
}

#[test]
fn wrong_magic() {
    let shm = ShmPath::new("bad-magic");
    corrupt(&shm, field::MAGIC, b"NOTBRAID");
    let err = open_err(&shm);
    assert!(matches!(err, ShmError::BadMagic { found, .. } if &found == b"NOTBRAID"), "{err:?}");
    assert!(err.to_string().contains("not a braid shared-memory segment"));
}

#[test]
fn wrong_version() {
    let shm = ShmPath::new("bad-version");
    corrupt(&shm, field::VERSION, &(LAYOUT_VERSION + 1).to_le_bytes());
    let err = open_err(&shm);
    assert!(matches!(err, ShmError::Version { found, expected, .. } if found == LAYOUT_VERSION + 1 && expected == LAYOUT_VERSION));
    assert!(err.to_string().contains("layout version 2, this build speaks version 1"), "{err}");
}

#[test]
fn wrong_header_and_message_sizes() {
    let shm = ShmPath::new("bad-sizes");
    corrupt(&shm, field::HEADER_SIZE, &64u32.to_le_bytes());
    assert!(matches!(open_err(&shm), ShmError::HeaderSize { found: 64, .. }));
    corrupt(&shm, field::MSG_SIZE, &256u32.to_le_bytes());
    assert!(matches!(open_err(&shm), ShmError::MsgSize { found: 256, expected: 128, .. }));
}

#[test]
fn bad_capacity_in_file_or_at_create() {
    let shm = ShmPath::new("bad-capacity");
    for bad in [0u32, 6, 1 << 31] {
        corrupt(&shm, field::CAPACITY, &bad.to_le_bytes());
        assert!(matches!(open_err(&shm), ShmError::Capacity { found, .. } if found == bad));
        assert!(matches!(Segment::create(shm.path(), bad), Err(ShmError::Capacity { found, .. }) if found == bad));
    }
}

#[test]
fn truncated_files() {
    let shm = ShmPath::new("truncated");
    for len in [0, 7, HEADER_SIZE as u64 - 1, HEADER_SIZE as u64, segment_len(8) - 1] {
        truncate(&shm, len);
        let err = open_err(&shm);
        assert!(
            matches!(err, ShmError::Truncated { found, .. } if found == len),
            "length {len}: {err:?}"
        );
    }
    // Longer than needed is fine.
    truncate(&shm, segment_len(8) + 4096);
    Segment::open(shm.path()).unwrap();
}

#[test]
fn missing_file() {
    let shm = ShmPath::new("missing");
    assert!(matches!(open_err(&shm), ShmError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound));
}
