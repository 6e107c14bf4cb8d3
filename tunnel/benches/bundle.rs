//! The bundle engine per inner packet: pack + seal of 64-byte inner packets
//! into ~1400-byte frames over 4 AES-256-GCM tunnels, the receive path
//! (open + unpack + re-order) of the same frames, and plain-mode 1420-byte
//! seal for reference. Throughput is in inner packets.
//!
//! braid-gcm picks its kernels at run time (VAES on 512- or 256-bit
//! registers where the CPU has them); the host CPU build is for the rest:
//! `RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target-tunnel-native \
//!  cargo bench -p braid-tunnel --bench bundle -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::sync::Arc;

use braid_tunnel::bundle::{InnerPacket, PackCursor};
use braid_tunnel::crypto::AesGcmKey;
use braid_tunnel::engine::{esp_area_len, BundleRx, BundleRxConfig, BundleTx, BundleTxConfig};
use braid_tunnel::plain;
use braid_tunnel::sa::{
    InboundSa, InboundSaPair, OutboundSa, OutboundSaPair, SaParams, Spi, MAX_RESERVE,
};
use braid_tunnel::wire::esp::{MAX_TAIL, PAYLOAD_OFFSET};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const TUNNELS: usize = 4;
const MAX_FRAME: usize = 1400;
/// Inner packets per burst (one DPDK rx burst of small packets, times 8).
const BURST: usize = 256;
const INNER: usize = 64;

fn params(spi: u32) -> SaParams {
    SaParams {
        spi: Spi(spi),
        key: AesGcmKey::Aes256([spi as u8; 32]),
        salt: spi.to_be_bytes(),
        packet_limit: u64::MAX,
    }
}

fn tx() -> BundleTx {
    let sas = (0..TUNNELS)
        .map(|i| {
            Arc::new(OutboundSaPair::new(Arc::new(OutboundSa::new(&params(
                i as u32 + 1,
            )))))
        })
        .collect();
    BundleTx::new(
        BundleTxConfig {
            max_frame: MAX_FRAME,
            liveness: None,
            ..Default::default()
        },
        sas,
        0,
    )
}

fn rx() -> BundleRx<u32> {
    let inbound = (0..TUNNELS)
        .map(|i| InboundSaPair::new(InboundSa::new(&params(i as u32 + 1), 4096).unwrap()))
        .collect();
    let outbound = (0..TUNNELS)
        .map(|i| {
            Arc::new(OutboundSaPair::new(Arc::new(OutboundSa::new(&params(
                i as u32 + 100,
            )))))
        })
        .collect();
    BundleRx::new(BundleRxConfig::default(), inbound, outbound)
}

/// 64-byte IPv4-looking packets over 64 flows.
fn inner() -> Vec<(Vec<u8>, u32)> {
    (0..BURST as u32)
        .map(|i| {
            let mut p = vec![0u8; INNER];
            p[0] = 0x45;
            p[4..8].copy_from_slice(&i.to_be_bytes());
            (p, (i % 64).wrapping_mul(0x9e37_79b9))
        })
        .collect()
}

fn bundle(c: &mut Criterion) {
    let pkts = inner();
    let inner: Vec<InnerPacket<'_>> = pkts
        .iter()
        .map(|(b, h)| InnerPacket {
            bytes: b,
            flow_hash: *h,
        })
        .collect();
    let mut g = c.benchmark_group("bundle_aes256");
    g.throughput(Throughput::Elements(BURST as u64));

    let mut t = tx();
    let mut buf = vec![0u8; esp_area_len(MAX_FRAME)];
    g.bench_function("tx_pack_seal_64B", |b| {
        b.iter(|| {
            let mut cur = PackCursor::new();
            let mut bytes = 0;
            while let Some(r) = t.next_frame(&inner, &mut cur, black_box(&mut buf), 0) {
                bytes += r.unwrap().esp_len;
            }
            bytes
        })
    });

    // Rx: each batch input is one burst's sealed frames, made in order from
    // one sender so sequences keep rising; the timed part opens, unpacks and
    // re-orders them. The handle is the packet length (no copy to an mbuf).
    let mut t = tx();
    let mut r = rx();
    let mut out: Vec<u32> = Vec::with_capacity(BURST);
    g.bench_function("rx_open_unpack_reorder_64B", |b| {
        b.iter_batched(
            || {
                let mut frames = Vec::new();
                let mut cur = PackCursor::new();
                while let Some(res) = t.next_frame(&inner, &mut cur, &mut buf, 0) {
                    frames.push(buf[..res.unwrap().esp_len].to_vec());
                }
                frames
            },
            |mut frames| {
                out.clear();
                for f in &mut frames {
                    r.on_esp(f, 0, |p| Some(p.len() as u32), &mut out).unwrap();
                }
                r.poll(0, &mut out);
                assert_eq!(out.len(), BURST);
                frames
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("plain_aes256");
    g.throughput(Throughput::Elements(1));
    let sa = OutboundSa::new(&params(7));
    let mut block = sa.reserve(MAX_RESERVE).unwrap();
    let mut buf = vec![0u8; PAYLOAD_OFFSET + 1420 + MAX_TAIL];
    buf[PAYLOAD_OFFSET] = 0x45;
    g.bench_function("plain_seal_1420B", |b| {
        b.iter(|| {
            if block.is_empty() {
                block = sa.reserve(MAX_RESERVE).unwrap();
            }
            // Sealing encrypts in place: restore the version nibble.
            buf[PAYLOAD_OFFSET] = 0x45;
            plain::encapsulate(&sa, &mut block, black_box(&mut buf), 1420).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bundle);
criterion_main!(benches);
