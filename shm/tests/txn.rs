//! TxnReader's rules, one process: only committed transactions come out.

mod common;

use braid_shm::{Msg, Producer, Ring, Segment, Txn, TxnId, TxnReader, TxnStats};
use common::ShmPath;

fn data(txn: u64, n: u8) -> Msg {
    Msg::data(Msg::KIND_FIRST_DATA, TxnId(txn), &[n]).unwrap()
}

fn setup(name: &str, max_msgs: usize) -> (ShmPath, Segment, Producer, TxnReader) {
    let shm = ShmPath::new(name);
    let segment = Segment::create(shm.path(), 64).unwrap();
    let producer = segment.producer(Ring::Commands).unwrap();
    let reader = TxnReader::new(segment.consumer(Ring::Commands).unwrap(), max_msgs);
    (shm, segment, producer, reader)
}

fn send(producer: &mut Producer, msgs: &[Msg]) {
    for msg in msgs {
        producer.try_push(msg).unwrap();
    }
}

#[test]
fn yields_nothing_until_commit_then_the_whole_transaction() {
    let (_shm, _segment, mut producer, mut reader) = setup("txn-commit", 8);
    send(&mut producer, &[Msg::begin(TxnId(5)), data(5, 1), data(5, 2)]);
    assert_eq!(reader.poll(), None);
    send(&mut producer, &[data(5, 3), Msg::commit(TxnId(5)), Msg::begin(TxnId(6))]);
    assert_eq!(reader.poll(), Some(Txn { id: TxnId(5), msgs: vec![data(5, 1), data(5, 2), data(5, 3)] }));
    assert_eq!(reader.pending(), None, "messages after the commit stay in the ring");
    assert_eq!(reader.poll(), None);
    assert_eq!(reader.pending(), Some((TxnId(6), 0)));
    send(&mut producer, &[Msg::commit(TxnId(6))]);
    assert_eq!(reader.poll(), Some(Txn { id: TxnId(6), msgs: vec![] }));
    assert_eq!(reader.stats().committed, 2);
}

#[test]
fn a_begin_while_open_discards_the_partial_transaction() {
    let (_shm, _segment, mut producer, mut reader) = setup("txn-partial", 8);
    send(&mut producer, &[Msg::begin(TxnId(1)), data(1, 1), Msg::begin(TxnId(2)), data(2, 9), Msg::commit(TxnId(2))]);
    assert_eq!(reader.poll(), Some(Txn { id: TxnId(2), msgs: vec![data(2, 9)] }));
    // A late COMMIT for the discarded transaction is stray, not applied.
    send(&mut producer, &[Msg::commit(TxnId(1))]);
    assert_eq!(reader.poll(), None);
    assert_eq!(reader.stats(), TxnStats { committed: 1, discarded_partial: 1, discarded_oversize: 0, stray: 1 });
}

#[test]
fn an_oversize_transaction_is_discarded_whole_and_the_next_one_still_arrives() {
    let (_shm, _segment, mut producer, mut reader) = setup("txn-oversize", 2);
    send(&mut producer, &[Msg::begin(TxnId(1)), data(1, 1), data(1, 2), data(1, 3), data(1, 4), Msg::commit(TxnId(1))]);
    assert_eq!(reader.poll(), None);
    send(&mut producer, &[Msg::begin(TxnId(2)), data(2, 1), data(2, 2), Msg::commit(TxnId(2))]);
    assert_eq!(reader.poll(), Some(Txn { id: TxnId(2), msgs: vec![data(2, 1), data(2, 2)] }));
    assert_eq!(reader.stats(), TxnStats { committed: 1, discarded_partial: 0, discarded_oversize: 1, stray: 0 });
}

#[test]
fn data_outside_or_across_transactions_is_stray() {
    let (_shm, _segment, mut producer, mut reader) = setup("txn-stray", 8);
    send(&mut producer, &[data(1, 1), Msg::begin(TxnId(2)), data(3, 1), data(2, 1), Msg::commit(TxnId(3)), Msg::commit(TxnId(2))]);
    assert_eq!(reader.poll(), Some(Txn { id: TxnId(2), msgs: vec![data(2, 1)] }));
    assert_eq!(reader.stats(), TxnStats { committed: 1, discarded_partial: 0, discarded_oversize: 0, stray: 3 });
}
