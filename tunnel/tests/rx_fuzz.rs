//! Fuzzing of `BundleRx::on_esp`, runnable in CI on stable (proptest; set
//! `PROPTEST_CASES` for longer runs):
//! (a) arbitrary bytes never panic and every rejection is a named, counted drop;
//! (b) arbitrary and mutated bundle payloads sealed with the real SA, so they
//!     pass authentication and reach the frame parser, reassembler and
//!     re-orderer, never panic, and every rejected frame has a named reason.

use std::sync::Arc;

use braid_tunnel::bundle::{
    FrameBuilder, FrameHeader, InnerPacket, PackCursor, Probe, ProbeReply, ReassemblyConfig,
    StreamSender, NEXT_HEADER_BUNDLE,
};
use braid_tunnel::crypto::AesGcmKey;
use braid_tunnel::engine::{esp_area_len, BundleRx, BundleRxConfig};
use braid_tunnel::reorder::ReorderConfig;
use braid_tunnel::sa::{InboundSa, InboundSaPair, OutboundSa, OutboundSaPair, SaParams, Spi};
use braid_tunnel::wire::esp::{MAX_TAIL, PAYLOAD_OFFSET};
use braid_tunnel::DropReason;
use proptest::prelude::*;

const TUNNELS: usize = 3;
const BUCKETS: u16 = 16;
const MS: u64 = 1_000_000;

fn params(spi: u32) -> SaParams {
    let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ spi as u8).collect();
    SaParams {
        spi: Spi(spi),
        key: AesGcmKey::from_slice(&key).unwrap(),
        salt: spi.to_be_bytes(),
        packet_limit: u64::MAX,
    }
}

/// A small receiver, so slot exhaustion, eviction and timeouts are reachable.
fn receiver() -> (BundleRx<Vec<u8>>, Vec<OutboundSa>) {
    let inbound = (0..TUNNELS)
        .map(|i| InboundSaPair::new(InboundSa::new(&params(0x100 + i as u32), 64).unwrap()))
        .collect();
    let replies = (0..TUNNELS)
        .map(|i| {
            Arc::new(OutboundSaPair::new(Arc::new(OutboundSa::new(&params(
                0x200 + i as u32,
            )))))
        })
        .collect();
    let cfg = BundleRxConfig {
        streams: 4,
        reorder: ReorderConfig {
            buckets: BUCKETS,
            slots: 32,
            per_bucket: 8,
            ..Default::default()
        },
        reassembly: ReassemblyConfig {
            slots: 4,
            max_packet: 4096,
            timeout: 50 * MS,
        },
        probe_queue: 4,
        ..Default::default()
    };
    let senders = (0..TUNNELS)
        .map(|i| OutboundSa::new(&params(0x100 + i as u32)))
        .collect();
    (BundleRx::new(cfg, inbound, replies), senders)
}

/// Feeds one ESP packet and checks the accounting around it.
fn feed(rx: &mut BundleRx<Vec<u8>>, esp: &mut [u8], now: u64) -> Result<(), DropReason> {
    let before = rx.counters().total();
    let mut out = Vec::new();
    let r = rx.on_esp(
        esp,
        now,
        |p| {
            assert!(!p.is_empty());
            Some(p.to_vec())
        },
        &mut out,
    );
    let after = rx.counters().total();
    match r {
        Ok(s) => {
            assert_eq!(s.delivered, out.len());
            assert!(after - before >= s.dropped as u64);
            Ok(())
        }
        Err(reason) => {
            assert!(!reason.name().is_empty());
            assert_eq!(after - before, 1, "{reason:?} counted once");
            assert!(rx.counters().get(reason) >= 1);
            assert!(out.is_empty());
            Err(reason)
        }
    }
}

/// Seals `payload` on tunnel `tunnel` with sequence `seq`.
fn seal(sa: &OutboundSa, payload: &[u8], next_header: u8) -> Vec<u8> {
    let mut buf = vec![0u8; PAYLOAD_OFFSET + payload.len() + MAX_TAIL];
    buf[PAYLOAD_OFFSET..PAYLOAD_OFFSET + payload.len()].copy_from_slice(payload);
    let mut block = sa.reserve(1).unwrap();
    let n = sa
        .seal(&mut block, &mut buf, payload.len(), next_header)
        .unwrap();
    buf.truncate(n);
    buf
}

/// Valid frames: a burst packed by a real stream sender, or a probe/reply.
fn valid_frame(
    sender: &mut StreamSender,
    sizes: &[(u16, u32)],
    kind: u8,
    max_frame: usize,
) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; max_frame];
    match kind % 4 {
        0 => {
            let mut b = FrameBuilder::new(&mut buf, sender.next_header()).unwrap();
            b.push_probe(&Probe {
                path: (kind / 4) as u16 % 4,
                seq: u32::from(kind),
                tx_time: 1,
            });
            let n = b.finish();
            buf.truncate(n);
            vec![buf]
        }
        1 => {
            let mut b = FrameBuilder::new(
                &mut buf,
                FrameHeader {
                    stream: 1000,
                    stream_seq: u64::from(kind),
                },
            )
            .unwrap();
            b.push_probe_reply(&ProbeReply {
                path: 1,
                seq: 2,
                echo_tx_time: 3,
                peer_time: 4,
            });
            let n = b.finish();
            buf.truncate(n);
            vec![buf]
        }
        _ => {
            let pkts: Vec<Vec<u8>> = sizes
                .iter()
                .map(|&(len, h)| (0..len).map(|i| (i as u32 ^ h) as u8).collect())
                .collect();
            let inner: Vec<InnerPacket<'_>> = pkts
                .iter()
                .zip(sizes)
                .map(|(p, &(_, h))| InnerPacket {
                    bytes: p,
                    flow_hash: h,
                })
                .collect();
            let mut frames = Vec::new();
            let mut cur = PackCursor::new();
            while let Some(n) = sender.pack(&inner, &mut cur, &mut buf) {
                frames.push(buf[..n].to_vec());
            }
            frames
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(u16, u8),
    Truncate(u16),
    Extend(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<u16>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => any::<u16>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..32).prop_map(Mutation::Extend),
    ]
}

fn apply(frame: &mut Vec<u8>, muts: &[Mutation]) {
    for m in muts {
        match m {
            Mutation::Flip(i, x) if !frame.is_empty() => {
                let i = usize::from(*i) % frame.len();
                frame[i] ^= x;
            }
            Mutation::Truncate(n) => frame.truncate(usize::from(*n) % (frame.len() + 1)),
            Mutation::Extend(b) => frame.extend_from_slice(b),
            _ => {}
        }
    }
}

#[derive(Debug, Clone)]
enum Payload {
    /// Random bytes.
    Random(Vec<u8>),
    /// A frame header for a stream in range, then random records.
    Headed(u16, u64, Vec<u8>),
    /// A valid frame, possibly mutated.
    Valid {
        stream: u16,
        sizes: Vec<(u16, u32)>,
        kind: u8,
        max_frame: u16,
        muts: Vec<Mutation>,
    },
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..600).prop_map(Payload::Random),
        2 => (0u16..6, 0u64..64, proptest::collection::vec(any::<u8>(), 0..600))
            .prop_map(|(s, q, r)| Payload::Headed(s, q, r)),
        4 => (
            0u16..5,
            proptest::collection::vec((1u16..3000, any::<u32>()), 1..8),
            any::<u8>(),
            100u16..1500,
            proptest::collection::vec(mutation(), 0..3),
        )
            .prop_map(|(stream, sizes, kind, max_frame, muts)| Payload::Valid {
                stream,
                sizes,
                kind,
                max_frame,
                muts,
            }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        packets in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..400), 0usize..=TUNNELS + 1),
            1..16,
        ),
    ) {
        let (mut rx, _) = receiver();
        for (i, (mut bytes, spi)) in packets.into_iter().enumerate() {
            // Mostly a known SPI, so decryption is attempted.
            if bytes.len() >= 4 && spi < TUNNELS {
                bytes[..4].copy_from_slice(&(0x100 + spi as u32).to_be_bytes());
            }
            let r = feed(&mut rx, &mut bytes, i as u64 * MS);
            prop_assert!(r.is_err());
        }
        let mut out = Vec::new();
        rx.poll(u64::MAX / 2, &mut out);
        prop_assert!(out.is_empty());
    }

    #[test]
    fn authentic_payloads_never_panic(
        frames in proptest::collection::vec(
            (payload(), 0usize..TUNNELS, prop_oneof![9 => Just(NEXT_HEADER_BUNDLE), 1 => any::<u8>()]),
            1..24,
        ),
    ) {
        let (mut rx, sas) = receiver();
        let mut senders: Vec<StreamSender> = (0..6).map(|s| StreamSender::new(s, BUCKETS)).collect();
        let mut now = 0;
        let mut reply_buf = vec![0u8; esp_area_len(64)];
        for (payload, tunnel, nh) in frames {
            let bursts = match payload {
                Payload::Random(b) => vec![b],
                Payload::Headed(stream, seq, rest) => {
                    let mut b = vec![0u8; 12];
                    FrameBuilder::new(&mut b, FrameHeader { stream, stream_seq: seq }).unwrap();
                    b.extend_from_slice(&rest);
                    vec![b]
                }
                Payload::Valid { stream, sizes, kind, max_frame, muts } => {
                    let sender = &mut senders[usize::from(stream)];
                    let mut f = valid_frame(sender, &sizes, kind, usize::from(max_frame));
                    // Mutate one frame of the burst; deliver them out of order.
                    let k = usize::from(kind) % f.len().max(1);
                    if let Some(frame) = f.get_mut(k) {
                        apply(frame, &muts);
                    }
                    if kind & 0x80 != 0 {
                        f.reverse();
                    }
                    f
                }
            };
            for bytes in bursts {
            let mut esp = seal(&sas[tunnel], &bytes, nh);
            match feed(&mut rx, &mut esp, now) {
                Ok(_) => prop_assert_eq!(nh, NEXT_HEADER_BUNDLE),
                // Authentication passed: only bundle-level reasons remain.
                Err(reason) => prop_assert!(!matches!(
                    reason,
                    DropReason::AuthFailed | DropReason::Replayed | DropReason::EspUnknownSpi
                ), "{:?}", reason),
            }
            while let Some(t) = rx.poll_transmit(&mut reply_buf) {
                prop_assert!(t.tunnel < TUNNELS);
            }
            while rx.poll_probe_reply().is_some() {}
            now += MS / 2;
            let mut out = Vec::new();
            rx.poll(now, &mut out);
            }
        }
        let mut out = Vec::new();
        rx.poll(now + 10_000 * MS, &mut out);
        rx.flush(&mut out);
        prop_assert_eq!(rx.reassembler().pending(), 0);
        for s in 0..4 {
            prop_assert_eq!(rx.reorderer(s).map_or(0, |r| r.held()), 0);
        }
    }
}
