//! A writer killed (SIGKILL) mid-transaction leaves nothing half-applied:
//! the next writer's transaction is read whole, the orphan is discarded and
//! counted.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use braid_shm::{Msg, Ring, Segment, TxnId, TxnReader, TxnStats};
use common::{child_role, ChildGuard, ShmPath};

const TEST: &str = "writer_killed_mid_transaction_leaves_nothing_half_applied";
const KIND_ROUTE: u16 = 16;
const KIND_READY: u16 = 17;
/// Signal number of SIGKILL on Linux.
const SIGKILL: i32 = 9;

fn route(txn: u64, n: u8) -> Msg {
    Msg::data(KIND_ROUTE, TxnId(txn), &[n; 16]).unwrap()
}

/// Child: BEGIN(1) and three data messages, no COMMIT; say so, then wait to be killed.
fn doomed_writer(path: &std::path::Path) {
    let segment = Segment::open(path).expect("open segment");
    let mut commands = segment.producer(Ring::Commands).expect("producer");
    commands.try_push(&Msg::begin(TxnId(1))).unwrap();
    for n in 0..3 {
        commands.try_push(&route(1, n)).unwrap();
    }
    let mut events = segment.producer(Ring::Events).expect("events producer");
    events.try_push(&Msg::data(KIND_READY, TxnId(1), &[]).unwrap()).unwrap();
    // The parent kills us; never reach a COMMIT even if it does not.
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(3);
}

#[test]
fn writer_killed_mid_transaction_leaves_nothing_half_applied() {
    if let Some((role, path)) = child_role() {
        assert_eq!(role, "doomed-writer");
        return doomed_writer(&path);
    }
    let shm = ShmPath::new("killed-writer");
    let segment = Segment::create(shm.path(), 16).unwrap();
    let mut events = segment.consumer(Ring::Events).unwrap();
    let mut reader = TxnReader::new(segment.consumer(Ring::Commands).unwrap(), 64);

    let child = ChildGuard::spawn(TEST, "doomed-writer", shm.path());
    let ready = events.pop_blocking(Duration::from_secs(20)).expect("child never got ready");
    assert_eq!(ready.kind(), KIND_READY);
    // The reader has buffered the open transaction but yields nothing.
    assert_eq!(reader.poll(), None);
    assert_eq!(reader.pending(), Some((TxnId(1), 3)));

    let status = child.kill();
    assert_eq!(status.signal(), Some(SIGKILL), "child ended by {status}, not SIGKILL");
    assert_eq!(segment.generation(), 0, "nothing committed");

    // A new writer (this process) sends a whole transaction.
    let mut commands = segment.producer(Ring::Commands).unwrap();
    commands.try_push(&Msg::begin(TxnId(2))).unwrap();
    commands.try_push(&route(2, 10)).unwrap();
    commands.try_push(&route(2, 11)).unwrap();
    commands.try_push(&Msg::commit(TxnId(2))).unwrap();

    let txn = reader.poll().expect("the complete transaction");
    assert_eq!(txn.id, TxnId(2));
    assert_eq!(txn.msgs, vec![route(2, 10), route(2, 11)]);
    assert_eq!(reader.poll(), None);
    assert_eq!(reader.pending(), None);
    assert_eq!(reader.stats(), TxnStats { committed: 1, discarded_partial: 1, discarded_oversize: 0, stray: 0 });
    assert_eq!(segment.generation(), 1);
}
