//! One ring in one process: capacity, backpressure, order, endpoints, generation.

mod common;

use std::time::{Duration, Instant};

use braid_shm::{End, Full, Msg, Ring, Segment, ShmError, TxnId};
use common::ShmPath;

fn numbered(n: u64) -> Msg {
    Msg::data(Msg::KIND_FIRST_DATA, TxnId(n), &n.to_le_bytes()).unwrap()
}

#[test]
fn full_ring_refuses_exactly_after_capacity_and_frees_one_slot_per_pop() {
    let shm = ShmPath::new("full");
    let segment = Segment::create(shm.path(), 8).unwrap();
    let mut producer = segment.producer(Ring::Commands).unwrap();
    let mut consumer = segment.consumer(Ring::Commands).unwrap();

    for n in 0..8 {
        producer.try_push(&numbered(n)).unwrap_or_else(|_| panic!("push {n} refused"));
    }
    assert_eq!(producer.try_push(&numbered(8)), Err(Full));
    assert_eq!(producer.try_push(&numbered(8)), Err(Full), "a refused push writes nothing");
    assert_eq!(producer.len(), 8);

    assert_eq!(consumer.try_pop(), Some(numbered(0)));
    producer.try_push(&numbered(8)).expect("one slot freed");
    assert_eq!(producer.try_push(&numbered(9)), Err(Full));

    for n in 1..=8 {
        assert_eq!(consumer.try_pop(), Some(numbered(n)), "message {n}");
    }
    assert_eq!(consumer.try_pop(), None);
    assert!(producer.is_empty());
}

#[test]
fn ring_wraps_many_times_in_order() {
    let shm = ShmPath::new("wrap");
    let segment = Segment::create(shm.path(), 4).unwrap();
    let mut producer = segment.producer(Ring::Events).unwrap();
    let mut consumer = segment.consumer(Ring::Events).unwrap();
    let mut next = 0;
    for n in 0..1000 {
        producer.try_push(&numbered(n)).unwrap();
        if n % 3 == 2 {
            while let Some(msg) = consumer.try_pop() {
                assert_eq!(msg, numbered(next));
                next += 1;
            }
        }
    }
    while let Some(msg) = consumer.try_pop() {
        assert_eq!(msg, numbered(next));
        next += 1;
    }
    assert_eq!(next, 1000);
}

#[test]
fn push_blocking_times_out_on_a_full_ring_and_pop_blocking_on_an_empty_one() {
    let shm = ShmPath::new("blocking");
    let segment = Segment::create(shm.path(), 1).unwrap();
    let mut producer = segment.producer(Ring::Commands).unwrap();
    let mut consumer = segment.consumer(Ring::Commands).unwrap();
    producer.push_blocking(&numbered(1), Duration::from_millis(10)).unwrap();
    let start = Instant::now();
    assert_eq!(producer.push_blocking(&numbered(2), Duration::from_millis(30)), Err(Full));
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(consumer.pop_blocking(Duration::from_millis(10)), Some(numbered(1)));
    assert_eq!(consumer.pop_blocking(Duration::from_millis(10)), None);
}

#[test]
fn push_blocking_waits_for_a_consumer_thread() {
    let shm = ShmPath::new("blocking-thread");
    let segment = Segment::create(shm.path(), 2).unwrap();
    let mut producer = segment.producer(Ring::Commands).unwrap();
    let mut consumer = segment.consumer(Ring::Commands).unwrap();
    let reader = std::thread::spawn(move || (0..100).map(|_| consumer.pop_blocking(Duration::from_secs(5))).collect::<Vec<_>>());
    for n in 0..100 {
        producer.push_blocking(&numbered(n), Duration::from_secs(5)).unwrap();
    }
    let got = reader.join().unwrap();
    assert_eq!(got, (0..100).map(|n| Some(numbered(n))).collect::<Vec<_>>());
}

#[test]
fn each_endpoint_is_taken_once_per_process_until_dropped() {
    let shm = ShmPath::new("endpoints");
    let segment = Segment::create(shm.path(), 4).unwrap();
    let producer = segment.producer(Ring::Commands).unwrap();
    assert!(matches!(
        segment.producer(Ring::Commands),
        Err(ShmError::EndpointTaken { ring: Ring::Commands, end: End::Producer })
    ));
    // The other three ends are independent.
    let _c = segment.consumer(Ring::Commands).unwrap();
    let _p = segment.producer(Ring::Events).unwrap();
    let _e = segment.consumer(Ring::Events).unwrap();
    drop(producer);
    segment.producer(Ring::Commands).expect("free again after drop");
    // Per process, not per mapping: a second mapping of the same file
    // does not hand out an end the first one holds (two producers would
    // write one slot).
    let again = Segment::open(shm.path()).unwrap();
    assert!(matches!(again.consumer(Ring::Events), Err(ShmError::EndpointTaken { ring: Ring::Events, end: End::Consumer })));
    drop(_e);
    again.consumer(Ring::Events).expect("free once the first mapping's end is dropped");
}

#[test]
fn a_second_mapping_sees_the_same_rings_and_a_new_producer_resumes_the_tail() {
    let shm = ShmPath::new("remap");
    let writer = Segment::create(shm.path(), 8).unwrap();
    let mut producer = writer.producer(Ring::Commands).unwrap();
    producer.try_push(&numbered(1)).unwrap();
    drop(producer);

    let reader = Segment::open(shm.path()).unwrap();
    assert_eq!(reader.capacity(), 8);
    let mut consumer = reader.consumer(Ring::Commands).unwrap();
    let mut producer = writer.producer(Ring::Commands).unwrap();
    producer.try_push(&numbered(2)).unwrap();
    assert_eq!(consumer.try_pop(), Some(numbered(1)));
    assert_eq!(consumer.try_pop(), Some(numbered(2)));
    assert_eq!(consumer.try_pop(), None);
}

#[test]
fn generation_counts_commits_on_the_commands_ring_only() {
    let shm = ShmPath::new("generation");
    let segment = Segment::create(shm.path(), 8).unwrap();
    let other = Segment::open(shm.path()).unwrap();
    let mut commands = segment.producer(Ring::Commands).unwrap();
    let mut events = segment.producer(Ring::Events).unwrap();
    assert_eq!(other.generation(), 0);
    commands.try_push(&Msg::begin(TxnId(1))).unwrap();
    commands.try_push(&numbered(1)).unwrap();
    assert_eq!(other.generation(), 0);
    commands.try_push(&Msg::commit(TxnId(1))).unwrap();
    assert_eq!(other.generation(), 1);
    events.try_push(&Msg::commit(TxnId(1))).unwrap();
    assert_eq!(other.generation(), 1);
}

#[test]
fn create_makes_a_0600_file_and_replaces_an_old_segment() {
    use std::os::unix::fs::PermissionsExt;
    let shm = ShmPath::new("create");
    let old = Segment::create(shm.path(), 4).unwrap();
    let mut old_producer = old.producer(Ring::Commands).unwrap();
    old_producer.try_push(&numbered(1)).unwrap();
    let new = Segment::create(shm.path(), 16).unwrap();
    let mode = std::fs::metadata(shm.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(Segment::open(shm.path()).unwrap().capacity(), 16);
    assert_eq!(new.consumer(Ring::Commands).unwrap().try_pop(), None, "fresh rings");
    // The old mapping still works (it keeps the unlinked file alive).
    old_producer.try_push(&numbered(2)).unwrap();
}

#[test]
fn messages_reject_long_payloads_and_reserved_kinds() {
    use braid_shm::{MsgError, PAYLOAD_LEN};
    assert_eq!(std::mem::size_of::<Msg>(), 128);
    assert_eq!(Msg::data(16, TxnId(0), &[0; PAYLOAD_LEN + 1]), Err(MsgError::PayloadTooLong { len: PAYLOAD_LEN + 1 }));
    assert_eq!(Msg::data(Msg::KIND_COMMIT, TxnId(0), &[]), Err(MsgError::ReservedKind(Msg::KIND_COMMIT)));
    let msg = Msg::data(20, TxnId(3), b"abc").unwrap().with_flags(5);
    assert_eq!((msg.kind(), msg.flags(), msg.txn(), msg.payload()), (20, 5, TxnId(3), &b"abc"[..]));
}

#[test]
fn layout_offsets_match_the_readme() {
    use braid_shm::layout::{field, segment_len, HEADER_SIZE, MSG_SIZE};
    assert_eq!(
        [field::MAGIC, field::VERSION, field::HEADER_SIZE, field::MSG_SIZE, field::CAPACITY, field::GENERATION],
        [0, 8, 12, 16, 20, 24]
    );
    assert_eq!((HEADER_SIZE, MSG_SIZE), (320, 128));
    assert_eq!(segment_len(1024), 320 + 2 * 1024 * 128);
}
