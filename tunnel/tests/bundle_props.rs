//! Properties of the bundle layer as a whole: a discrete-event simulation of
//! a sender and a receiver joined by 2–16 lossy, duplicating, re-ordering
//! paths, and fuzzing of the receive side with arbitrary bytes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use braid_tunnel::balancer::{Balancer, PathParams, Policy};
use braid_tunnel::bundle::{
    DataRecord, Frame, FrameBuilder, FrameHeader, InnerPacket, PackCursor, Probe, ProbeReply,
    Reassembler, ReassemblyConfig, Record, StreamSender,
};
use braid_tunnel::liveness::{LivenessConfig, PathMonitor};
use braid_tunnel::reorder::{HoldConfig, PacketMeta, ReorderConfig, Reorderer};
use braid_tunnel::{DropReason, Nanos};
use proptest::prelude::*;

mod common;
use common::Rng;

const MS: Nanos = 1_000_000;
const US: Nanos = 1_000;


#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    paths: usize,
    streams: u16,
    buckets: u16,
    flows: u32,
    bursts: usize,
    max_frame: usize,
    loss_pct: u32,
    dup_pct: u32,
    swap_pct: u32,
    blackout: bool,
    policy: Policy,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        2usize..=16,
        1u16..=3,
        1u16..=64,
        1u32..=40,
        50usize..=400,
        200usize..=1500,
        prop_oneof![Just(0u32), 0u32..=20],
        prop_oneof![Just(0u32), 0u32..=10],
        prop_oneof![Just(0u32), 0u32..=3],
        any::<bool>(),
        prop_oneof![
            Just(Policy::RoundRobin),
            Just(Policy::Weighted),
            Just(Policy::EarliestArrival)
        ],
    )
        .prop_map(
            |(
                seed,
                paths,
                streams,
                buckets,
                flows,
                bursts,
                max_frame,
                loss_pct,
                dup_pct,
                swap_pct,
                blackout,
                policy,
            )| {
                Scenario {
                    seed,
                    paths,
                    streams,
                    buckets,
                    flows,
                    bursts,
                    max_frame,
                    loss_pct,
                    dup_pct,
                    swap_pct,
                    blackout,
                    policy,
                }
            },
        )
}

/// Things that happen at a time; ties broken by insertion order.
enum Event {
    /// A sender tick: a burst of inner packets, probes, timers.
    Tick,
    /// A frame reaches the receiver.
    Frame { path: usize, bytes: Vec<u8> },
    /// A probe reply reaches the prober.
    Reply { path: usize, reply: ProbeReply },
}

struct Queue {
    heap: BinaryHeap<Reverse<(Nanos, u64)>>,
    events: HashMap<u64, Event>,
    order: u64,
}

impl Queue {
    fn push(&mut self, at: Nanos, e: Event) {
        self.order += 1;
        self.heap.push(Reverse((at, self.order)));
        self.events.insert(self.order, e);
    }
    fn pop(&mut self) -> Option<(Nanos, Event)> {
        let Reverse((at, id)) = self.heap.pop()?;
        Some((at, self.events.remove(&id).unwrap()))
    }
}

/// Inner packet identity, written in its first 8 bytes; the rest is a
/// pattern derived from it so corruption is seen.
fn make_packet(flow: u32, idx: u32, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&flow.to_be_bytes());
    p.extend_from_slice(&idx.to_be_bytes());
    p.extend((8..len).map(|i| (i as u32 ^ flow ^ idx.rotate_left(8)) as u8));
    p
}

fn check_packet(p: &[u8], sent_len: &HashMap<(u32, u32), usize>) -> (u32, u32) {
    assert!(p.len() >= 8);
    let flow = u32::from_be_bytes(p[0..4].try_into().unwrap());
    let idx = u32::from_be_bytes(p[4..8].try_into().unwrap());
    assert_eq!(
        make_packet(flow, idx, p.len()),
        p,
        "payload of {flow}/{idx} corrupted"
    );
    assert_eq!(sent_len.get(&(flow, idx)), Some(&p.len()));
    (flow, idx)
}

fn flow_hash(flow: u32) -> u32 {
    flow.wrapping_mul(0x9e37_79b9).rotate_left(13) ^ 0x5bd1_e995
}

struct PathModel {
    delay: Nanos,
    last_arrival: Nanos,
    blackout: Option<(Nanos, Nanos)>,
}

/// What a simulation saw, for scenario-specific checks.
#[derive(Debug, Default)]
struct Outcome {
    sent: u64,
    delivered: u64,
    skipped: u64,
    released_passed: u64,
    released_late: u64,
    duplicates: u64,
    too_late: u64,
    fragments_dropped: u64,
    deaths: u64,
    picks_dead: u64,
}

fn simulate(s: &Scenario) -> Outcome {
    let mut rng = Rng(s.seed);
    let tick = MS;
    let n = s.paths;

    // Paths: delays 1..40 ms, weights 1..4, rates 5..50 MB/s.
    let mut models: Vec<PathModel> = (0..n)
        .map(|_| PathModel {
            delay: (1 + rng.below(40)) * MS,
            last_arrival: 0,
            blackout: None,
        })
        .collect();
    let traffic_end = s.bursts as Nanos * tick;
    if s.blackout {
        let start = traffic_end / 5;
        models[0].blackout = Some((start, start + 600 * MS));
    }
    let params: Vec<PathParams> = (0..n)
        .map(|i| PathParams {
            weight: 1 + rng.below(4) as u32,
            rate: (5 + rng.below(45)) * 1_000_000,
            delay: models[i].delay,
        })
        .collect();

    // Sender side: one balancer and sender per stream (worker), monitors on stream 0.
    let mut senders: Vec<StreamSender> = (0..s.streams)
        .map(|i| StreamSender::new(i, s.buckets))
        .collect();
    let mut balancers: Vec<Balancer> = (0..s.streams)
        .map(|_| {
            let mut b = Balancer::new(s.policy, n);
            for (i, p) in params.iter().enumerate() {
                b.set_params(i, *p);
            }
            b
        })
        .collect();
    let mut monitors: Vec<PathMonitor> = (0..n)
        .map(|i| PathMonitor::new(i as u16, LivenessConfig::default(), 0))
        .collect();

    // Receiver side.
    let mut reorderers: Vec<Reorderer<(u32, u32)>> = (0..s.streams)
        .map(|_| {
            Reorderer::new(ReorderConfig {
                buckets: s.buckets,
                paths: n,
                slots: 8192,
                per_bucket: 1024,
                hold: HoldConfig::default(),
            })
        })
        .collect();
    let mut reasm = Reassembler::new(ReassemblyConfig {
        slots: 512,
        max_packet: 9216,
        timeout: 200 * MS,
    });

    // Book-keeping.
    let mut sent: Vec<(u32, u32, u16, u16, u32)> = Vec::new(); // flow, idx, stream, bucket, flow_seq
    let mut sent_len: HashMap<(u32, u32), usize> = HashMap::new();
    let mut next_idx = vec![0u32; s.flows as usize];
    let mut bucket_seq: HashMap<(u16, u16), u32> = HashMap::new();
    let mut pushed: HashSet<(u32, u32)> = HashSet::new();
    let mut delivered: HashSet<(u32, u32)> = HashSet::new();
    let mut last_idx: HashMap<u32, u32> = HashMap::new();
    let mut lossless = s.loss_pct == 0 && s.dup_pct == 0 && s.swap_pct == 0 && !s.blackout;

    let mut q = Queue {
        heap: BinaryHeap::new(),
        events: HashMap::new(),
        order: 0,
    };
    q.push(0, Event::Tick);
    let mut ticks = 0usize;
    let mut picks_dead = 0u64;
    let mut buf = vec![0u8; s.max_frame];
    let mut out: Vec<(u32, u32)> = Vec::new();

    // Sends one frame on `path`, through its impairments.
    let send = |q: &mut Queue,
                rng: &mut Rng,
                models: &mut [PathModel],
                path: usize,
                bytes: &[u8],
                now: Nanos| {
        let m = &mut models[path];
        if m.blackout.is_some_and(|(a, b)| now >= a && now < b) || rng.chance(s.loss_pct) {
            return;
        }
        let jitter = rng.below(US * 500);
        let mut at = now + m.delay + jitter;
        if rng.chance(s.swap_pct) {
            // Overtakes what is in flight on this path (not FIFO).
            at = at.saturating_sub(rng.below(5 * MS)).max(now);
        } else {
            at = at.max(m.last_arrival);
            m.last_arrival = at;
        }
        q.push(
            at,
            Event::Frame {
                path,
                bytes: bytes.to_vec(),
            },
        );
        if rng.chance(s.dup_pct) {
            q.push(
                at + rng.below(US * 200),
                Event::Frame {
                    path,
                    bytes: bytes.to_vec(),
                },
            );
        }
    };

    let mut now = 0;
    while let Some((at, ev)) = q.pop() {
        assert!(at >= now);
        now = at;
        match ev {
            Event::Tick => {
                ticks += 1;
                // Liveness: probes on stream 0's sequence, state to balancers and re-orderers.
                for (i, m) in monitors.iter_mut().enumerate() {
                    if let Some(p) = m.poll(now) {
                        let h = senders[0].next_header();
                        let mut b = FrameBuilder::new(&mut buf, h).unwrap();
                        assert!(b.push_probe(&p.probe));
                        let len = b.finish();
                        let frame = buf[..len].to_vec();
                        send(&mut q, &mut rng, &mut models, i, &frame, now);
                    }
                    if let Some(alive) = m.take_change() {
                        for b in &mut balancers {
                            b.set_alive(i, alive);
                        }
                        for r in &mut reorderers {
                            r.set_path_live(i, alive);
                        }
                    }
                    if let Some(d) = m.one_way_delay() {
                        for b in &mut balancers {
                            b.set_delay(i, d);
                        }
                        for r in &mut reorderers {
                            r.set_path_delay(i, Some(d));
                        }
                    }
                }
                if ticks <= s.bursts {
                    // A burst per stream: mostly small packets, some MTU-sized, some jumbo.
                    for st in 0..s.streams {
                        let count = 1 + rng.below(12) as usize;
                        let mut burst: Vec<(Vec<u8>, u32)> = Vec::new();
                        for _ in 0..count {
                            let flow = rng.below(u64::from(s.flows)) as u32;
                            if flow % u32::from(s.streams) != u32::from(st) {
                                continue; // RSS pins each flow to one worker
                            }
                            let len = match rng.below(10) {
                                0..=5 => 20 + rng.below(200) as usize,
                                6..=8 => 500 + rng.below(1000) as usize,
                                _ => 1500 + rng.below(7500) as usize,
                            };
                            let idx = next_idx[flow as usize];
                            next_idx[flow as usize] += 1;
                            let p = make_packet(flow, idx, len);
                            let bucket = senders[usize::from(st)].bucket_of(flow_hash(flow));
                            let seq = bucket_seq.entry((st, bucket)).or_insert(0);
                            sent.push((flow, idx, st, bucket, *seq));
                            *seq += 1;
                            sent_len.insert((flow, idx), len);
                            burst.push((p, flow_hash(flow)));
                        }
                        let inner: Vec<InnerPacket<'_>> = burst
                            .iter()
                            .map(|(b, h)| InnerPacket {
                                bytes: b,
                                flow_hash: *h,
                            })
                            .collect();
                        let mut cur = PackCursor::new();
                        while let Some(len) =
                            senders[usize::from(st)].pack(&inner, &mut cur, &mut buf)
                        {
                            assert!(len <= s.max_frame);
                            let frame = buf[..len].to_vec();
                            if let Some(path) = balancers[usize::from(st)].pick(len, now) {
                                picks_dead += u64::from(!monitors[path].is_alive());
                                send(&mut q, &mut rng, &mut models, path, &frame, now);
                            } else {
                                lossless = false; // every path dead: nowhere to send
                            }
                        }
                    }
                }
                // Receiver timers.
                for r in &mut reorderers {
                    r.poll(now, &mut out);
                }
                reasm.poll(now);
                if ticks <= s.bursts || !q.heap.is_empty() {
                    q.push(now + tick, Event::Tick);
                }
            }
            Event::Reply { path, reply } => {
                // A duplicated probe is answered twice; the second reply is refused.
                if let Err(e) = monitors[path].on_probe_reply(&reply, now) {
                    assert_eq!(e, DropReason::ProbeUnmatched);
                }
            }
            Event::Frame { path, bytes } => {
                let frame = Frame::parse(&bytes).unwrap();
                let h = frame.header();
                let st = usize::from(h.stream);
                reorderers[st].on_frame(path, h.stream_seq);
                for rec in frame.records() {
                    match rec.unwrap() {
                        Record::Probe(p) => {
                            // The peer answers on the reverse path: same delay, no loss.
                            let reply = ProbeReply::answer(&p, now);
                            q.push(
                                now + models[path].delay,
                                Event::Reply {
                                    path: usize::from(p.path),
                                    reply,
                                },
                            );
                        }
                        Record::ProbeReply(_) => unreachable!(),
                        Record::Data(d) => {
                            let (id, meta) = if d.is_whole() {
                                let id = check_packet(d.data, &sent_len);
                                (
                                    id,
                                    PacketMeta {
                                        bucket: d.bucket,
                                        flow_seq: d.flow_seq,
                                        stream_seq: h.stream_seq,
                                    },
                                )
                            } else {
                                match reasm.push(h.stream, h.stream_seq, &d, now) {
                                    Ok(Some(p)) => {
                                        let id = check_packet(p.packet, &sent_len);
                                        let meta = PacketMeta {
                                            bucket: p.bucket,
                                            flow_seq: p.flow_seq,
                                            stream_seq: p.stream_seq,
                                        };
                                        (id, meta)
                                    }
                                    Ok(None) => continue,
                                    Err(_) => continue, // counted by the reassembler
                                }
                            };
                            pushed.insert(id);
                            // Dropped handles come back with a reason; counted by the re-orderer.
                            let _ = reorderers[st].push(id, meta, path, now, &mut out);
                        }
                    }
                }
                reorderers[st].poll(now, &mut out);
            }
        }
        for id in out.drain(..) {
            assert!(delivered.insert(id), "{id:?} delivered twice");
            let (flow, idx) = id;
            if let Some(&prev) = last_idx.get(&flow) {
                assert!(idx > prev, "flow {flow}: {idx} after {prev}");
            }
            last_idx.insert(flow, idx);
        }
    }

    // Drain: every hold and reassembly times out.
    now += 10_000 * MS;
    reasm.poll(now);
    for r in &mut reorderers {
        r.poll(now, &mut out);
        assert_eq!(r.held(), 0);
        assert_eq!(r.next_timeout(), None);
    }
    for id in out.drain(..) {
        assert!(delivered.insert(id));
        let (flow, idx) = id;
        assert!(last_idx.get(&flow).is_none_or(|&p| idx > p));
        last_idx.insert(flow, idx);
    }

    // The re-orderers' counters add up.
    let mut skipped = 0u64;
    let mut released = 0u64;
    for (st, r) in reorderers.iter().enumerate() {
        let c = r.counters();
        let rel = c.released_in_order + c.released_late + c.released_passed + c.released_forced;
        assert_eq!(
            c.pushed,
            rel + c.duplicates + c.dropped_too_late + c.overflow + c.bad_bucket,
            "stream {st}: {c:?}"
        );
        assert_eq!(c.overflow + c.bad_bucket, 0);
        let next_sum: u64 = (0..s.buckets)
            .map(|b| u64::from(r.next_expected(b).unwrap()))
            .sum();
        assert_eq!(
            next_sum,
            rel + c.skipped,
            "stream {st}: every sequence is released or skipped"
        );
        skipped += c.skipped;
        released += rel;
    }
    assert_eq!(released, delivered.len() as u64);

    // The reassembler's counters add up.
    let rc = reasm.counters();
    assert_eq!(reasm.pending(), 0);
    assert_eq!(
        rc.fragments,
        rc.fragments_completed + rc.fragments_dropped,
        "{rc:?}"
    );

    // Every inner packet sent was delivered once, or skipped (counted), or is
    // past the last sequence the receiver released (a lost tail) and never
    // reached the re-orderer.
    let mut tail = 0u64;
    let mut not_delivered_before_next = 0u64;
    for &(flow, idx, st, bucket, seq) in &sent {
        let next = reorderers[usize::from(st)].next_expected(bucket).unwrap();
        let got = delivered.contains(&(flow, idx));
        if seq >= next {
            assert!(
                !got && !pushed.contains(&(flow, idx)),
                "{flow}/{idx} beyond next {next}"
            );
            tail += 1;
        } else if !got {
            not_delivered_before_next += 1;
        }
    }
    assert_eq!(not_delivered_before_next, skipped);
    assert_eq!(sent.len() as u64, delivered.len() as u64 + skipped + tail);

    let mut o = Outcome {
        sent: sent.len() as u64,
        delivered: delivered.len() as u64,
        skipped,
        fragments_dropped: rc.fragments_dropped,
        deaths: monitors.iter().map(|m| m.counters().deaths).sum(),
        picks_dead,
        ..Outcome::default()
    };
    for r in &reorderers {
        let c = r.counters();
        o.released_passed += c.released_passed;
        o.released_late += c.released_late;
        o.duplicates += c.duplicates;
        o.too_late += c.dropped_too_late;
    }
    if lossless {
        assert_eq!(
            delivered.len(),
            sent.len(),
            "lossless paths lose nothing: {s:?}"
        );
        assert_eq!(skipped, 0);
    }
    o
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn delivered_once_in_order_or_counted(s in scenario()) {
        let o = simulate(&s);
        prop_assert_eq!(o.picks_dead, 0);
    }
}

#[test]
fn simulation_without_impairment_delivers_everything() {
    for (i, policy) in [
        Policy::RoundRobin,
        Policy::Weighted,
        Policy::EarliestArrival,
    ]
    .into_iter()
    .enumerate()
    {
        let o = simulate(&Scenario {
            seed: 7 + i as u64,
            paths: 8,
            streams: 2,
            buckets: 16,
            flows: 30,
            bursts: 300,
            max_frame: 1400,
            loss_pct: 0,
            dup_pct: 0,
            swap_pct: 0,
            blackout: false,
            policy,
        });
        assert_eq!((o.delivered, o.skipped, o.deaths), (o.sent, 0, 0));
    }
}

#[test]
fn simulation_with_heavy_impairment() {
    for policy in [Policy::RoundRobin, Policy::EarliestArrival] {
        let o = simulate(&Scenario {
            seed: 99,
            paths: 6,
            streams: 3,
            buckets: 4,
            flows: 40,
            bursts: 1200,
            max_frame: 600,
            loss_pct: 10,
            dup_pct: 10,
            swap_pct: 3,
            blackout: true,
            policy,
        });
        // The blacked-out path died and was never picked while dead; losses
        // were skipped, duplicates refused, fragments of lost pieces dropped.
        assert!(o.deaths >= 1, "{o:?}");
        assert_eq!(o.picks_dead, 0);
        assert!(
            o.duplicates > 0 && o.skipped > 0 && o.fragments_dropped > 0,
            "{o:?}"
        );
        // EEA puts most traffic on the fastest path; if the blackout hits it,
        // what was sent before the path was declared dead is lost.
        assert!(o.delivered > o.sent / 3, "{o:?}");
        assert!(o.released_late > 0, "{o:?}");
        if policy == Policy::RoundRobin {
            // Every path carries traffic, so some gaps are skipped as soon as
            // every live path is past them, before the hold time.
            assert!(o.released_passed > 0, "{o:?}");
        }
    }
}

/// Feeds every record of `bytes` through the receive side with tiny pools.
fn receive_arbitrary(
    bytes: &[u8],
    now: Nanos,
    reasm: &mut Reassembler,
    reorder: &mut Reorderer<usize>,
    out: &mut Vec<usize>,
) {
    let Ok(frame) = Frame::parse(bytes) else {
        return;
    };
    let h = frame.header();
    let path = usize::from(h.stream % 4);
    let _ = frame.check_records();
    for (i, rec) in frame.records().enumerate() {
        let Ok(rec) = rec else { break };
        if let Record::Data(d) = rec {
            let meta = if d.is_whole() {
                Some(PacketMeta {
                    bucket: d.bucket,
                    flow_seq: d.flow_seq,
                    stream_seq: h.stream_seq,
                })
            } else {
                match reasm.push(h.stream, h.stream_seq, &d, now) {
                    Ok(Some(p)) => {
                        assert!(!p.packet.is_empty());
                        Some(PacketMeta {
                            bucket: p.bucket,
                            flow_seq: p.flow_seq,
                            stream_seq: p.stream_seq,
                        })
                    }
                    _ => None,
                }
            };
            if let Some(meta) = meta {
                let _ = reorder.push(i, meta, path, now, out);
            }
        }
    }
    reorder.poll(now, out);
    reasm.poll(now);
}

fn small_receiver() -> (Reassembler, Reorderer<usize>) {
    (
        Reassembler::new(ReassemblyConfig {
            slots: 3,
            max_packet: 2000,
            timeout: 10 * MS,
        }),
        Reorderer::new(ReorderConfig {
            buckets: 8,
            paths: 4,
            slots: 6,
            per_bucket: 3,
            hold: HoldConfig {
                floor: MS,
                ceiling: 5 * MS,
                margin: 0,
            },
        }),
    )
}

fn arbitrary_record() -> impl Strategy<Value = (u8, u8, u16, u16, u32, Vec<u8>)> {
    (
        prop_oneof![Just(1u8), 0u8..=4],
        prop_oneof![Just(0xc0u8), Just(0x80), Just(0x40), Just(0), any::<u8>()],
        0u16..8,
        prop_oneof![0u16..3, 0u16..3000, any::<u16>()],
        0u32..8,
        proptest::collection::vec(any::<u8>(), 0..40),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder, reassembler or re-orderer.
    #[test]
    fn arbitrary_bytes_never_panic(frames in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..200), 0u64..20), 1..12)) {
        let (mut reasm, mut reorder) = small_receiver();
        let mut out = Vec::new();
        let mut now = 0;
        for (mut bytes, dt) in frames {
            if bytes.len() > 1 && bytes[0] & 1 == 0 {
                bytes[0] = 0x10; // a valid version half the time, to reach the records
            }
            now += dt * MS / 4;
            receive_arbitrary(&bytes, now, &mut reasm, &mut reorder, &mut out);
        }
        let c = reorder.counters();
        prop_assert_eq!(c.pushed, c.released_in_order + c.released_late + c.released_passed + c.released_forced
            + c.duplicates + c.dropped_too_late + c.overflow + c.bad_bucket + reorder.held() as u64);
        let rc = reasm.counters();
        prop_assert_eq!(rc.fragments, rc.fragments_completed + rc.fragments_dropped + reasm.pending_fragments() as u64);
    }

    /// Near-valid frames (records with arbitrary fields, then a few flipped
    /// bytes) reach deep into reassembly and re-ordering; nothing panics.
    #[test]
    fn mutated_frames_never_panic(
        frames in proptest::collection::vec((0u16..4, 0u64..50, proptest::collection::vec(arbitrary_record(), 0..6),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3), 0u64..20), 1..16)
    ) {
        let (mut reasm, mut reorder) = small_receiver();
        let mut out = Vec::new();
        let mut now = 0;
        for (stream, stream_seq, records, flips, dt) in frames {
            let mut bytes = vec![0x10, 0];
            bytes.extend_from_slice(&stream.to_be_bytes());
            bytes.extend_from_slice(&stream_seq.to_be_bytes());
            for (kind, flags, bucket, offset, seq, data) in records {
                bytes.push(kind);
                bytes.push(flags);
                let len = if kind == 1 { 8 + data.len() } else { data.len() };
                bytes.extend_from_slice(&(len as u16).to_be_bytes());
                if kind == 1 {
                    bytes.extend_from_slice(&bucket.to_be_bytes());
                    bytes.extend_from_slice(&offset.to_be_bytes());
                    bytes.extend_from_slice(&seq.to_be_bytes());
                }
                bytes.extend_from_slice(&data);
            }
            for (at, v) in flips {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] ^= v;
                }
            }
            now += dt * MS / 4;
            receive_arbitrary(&bytes, now, &mut reasm, &mut reorder, &mut out);
        }
        reorder.flush(&mut out);
        prop_assert_eq!(reorder.held(), 0);
    }

    /// Whatever the builder writes, the decoder reads back the same records.
    #[test]
    fn build_then_parse_round_trips(
        header in (any::<u16>(), any::<u64>()),
        max in 12usize..600,
        items in proptest::collection::vec((0u8..3, any::<u16>(), any::<u32>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 1..80)), 0..10)
    ) {
        let mut buf = vec![0u8; max];
        let mut b = FrameBuilder::new(&mut buf, FrameHeader { stream: header.0, stream_seq: header.1 }).unwrap();
        let mut want = Vec::new();
        for (kind, a, c, off, data) in &items {
            match kind {
                0 => {
                    let first = *off == 0;
                    let d = DataRecord { bucket: *a, flow_seq: *c, offset: *off, first, last: c % 2 == 0, data };
                    if b.push_data(&d) { want.push(Record::Data(d)); }
                }
                1 => {
                    let p = Probe { path: *a, seq: *c, tx_time: u64::from(*off) << 20 };
                    if b.push_probe(&p) { want.push(Record::Probe(p)); }
                }
                _ => {
                    let r = ProbeReply { path: *a, seq: *c, echo_tx_time: u64::from(*off), peer_time: u64::from(*c) << 7 };
                    if b.push_probe_reply(&r) { want.push(Record::ProbeReply(r)); }
                }
            }
        }
        let n = b.finish();
        prop_assert!(n <= max);
        let frame = Frame::parse(&buf[..n]).unwrap();
        prop_assert_eq!(frame.header(), FrameHeader { stream: header.0, stream_seq: header.1 });
        let got: Vec<_> = frame.records().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got, want);
    }
}
