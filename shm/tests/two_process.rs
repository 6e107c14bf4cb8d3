//! A producer and a consumer in different processes exchange 2,000,000
//! messages through a 1024-slot ring: every message must arrive once, in
//! order, intact, and the producer must meet backpressure without losing any.

mod common;

use std::time::{Duration, Instant};

use braid_shm::{Full, Msg, Ring, Segment, TxnId, PAYLOAD_LEN};
use common::{child_role, ChildGuard, ShmPath};

const TEST: &str = "two_processes_exchange_two_million_messages";
const MESSAGES: u64 = 2_000_000;
const CAPACITY: u32 = 1024;
const KIND_SEQ: u16 = 100;
const KIND_RESULT: u16 = 101;
const DEADLINE: Duration = Duration::from_secs(50);

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Payload: seq (8 B), 96 pseudo-random bytes seeded by seq, FNV-1a of the first 104 (8 B).
fn payload(seq: u64) -> [u8; PAYLOAD_LEN] {
    let mut p = [0u8; PAYLOAD_LEN];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    let mut state = seq;
    for chunk in p[8..104].chunks_exact_mut(8) {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let sum = fnv1a(&p[..104]);
    p[104..].copy_from_slice(&sum.to_le_bytes());
    p
}

fn intact(msg: &Msg, seq: u64) -> bool {
    let p = msg.payload();
    msg.kind() == KIND_SEQ
        && msg.txn() == TxnId(seq)
        && p.len() == PAYLOAD_LEN
        && p[..8] == seq.to_le_bytes()
        && p[104..] == fnv1a(&p[..104]).to_le_bytes()
}

/// Child: consume every message, then report (received, bad, first bad) on the events ring.
fn consume(path: &std::path::Path) {
    let segment = Segment::open(path).expect("open segment");
    let mut commands = segment.consumer(Ring::Commands).expect("consumer");
    let mut events = segment.producer(Ring::Events).expect("events producer");
    let deadline = Instant::now() + DEADLINE;
    let (mut received, mut bad, mut first_bad) = (0u64, 0u64, u64::MAX);
    while received < MESSAGES && Instant::now() < deadline {
        match commands.pop_blocking(Duration::from_millis(10)) {
            Some(msg) => {
                if !intact(&msg, received) {
                    bad += 1;
                    first_bad = first_bad.min(received);
                }
                received += 1;
                // Stall now and then so the producer is sure to meet a full
                // ring, whatever the two cores' scheduling.
                if received % 200_000 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            None => continue,
        }
    }
    // Nothing may follow the last message.
    if commands.pop_blocking(Duration::from_millis(20)).is_some() {
        bad += 1;
    }
    let mut report = [0u8; 24];
    report[..8].copy_from_slice(&received.to_le_bytes());
    report[8..16].copy_from_slice(&bad.to_le_bytes());
    report[16..].copy_from_slice(&first_bad.to_le_bytes());
    let msg = Msg::data(KIND_RESULT, TxnId(0), &report).unwrap();
    events.push_blocking(&msg, Duration::from_secs(10)).expect("report");
}

#[test]
fn two_processes_exchange_two_million_messages() {
    if let Some((role, path)) = child_role() {
        assert_eq!(role, "consumer");
        return consume(&path);
    }
    // The check itself catches a wrong sequence number and a flipped byte.
    let good = Msg::data(KIND_SEQ, TxnId(7), &payload(7)).unwrap();
    assert!(intact(&good, 7) && !intact(&good, 8));
    let mut flipped = payload(7);
    flipped[50] ^= 1;
    assert!(!intact(&Msg::data(KIND_SEQ, TxnId(7), &flipped).unwrap(), 7));

    let shm = ShmPath::new("two-process");
    let segment = Segment::create(shm.path(), CAPACITY).unwrap();
    let mut producer = segment.producer(Ring::Commands).unwrap();
    let mut events = segment.consumer(Ring::Events).unwrap();
    let mut child = ChildGuard::spawn(TEST, "consumer", shm.path());

    let start = Instant::now();
    let mut full = 0u64;
    for seq in 0..MESSAGES {
        let msg = Msg::data(KIND_SEQ, TxnId(seq), &payload(seq)).unwrap();
        loop {
            match producer.try_push(&msg) {
                Ok(()) => break,
                Err(Full) => {
                    full += 1;
                    if full.is_multiple_of(4096) {
                        assert!(child.exited().is_none(), "consumer exited early at seq {seq}");
                        assert!(start.elapsed() < DEADLINE, "stuck at seq {seq}");
                    }
                    std::thread::yield_now();
                }
            }
        }
    }
    let report = events.pop_blocking(Duration::from_secs(30)).expect("consumer report");
    let elapsed = start.elapsed();
    let status = child.wait(Duration::from_secs(10));
    assert!(status.success(), "consumer failed: {status}");

    let p = report.payload();
    let word = |i: usize| u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!(report.kind(), KIND_RESULT);
    assert_eq!(word(0), MESSAGES, "messages received");
    assert_eq!(word(1), 0, "bad messages (first at seq {})", word(2));
    assert!(full > 100, "producer met backpressure only {full} times");
    eprintln!(
        "two processes: {MESSAGES} messages in {elapsed:.2?} = {:.0} msg/s, producer saw Full {full} times",
        MESSAGES as f64 / elapsed.as_secs_f64()
    );
}
