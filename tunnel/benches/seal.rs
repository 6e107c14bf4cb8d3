//! ESP seal and open per packet, AES-256-GCM plain mode, against the raw
//! `aes-gcm` crate call on the same sizes (the engine before aws-lc, for
//! comparison).
//!
//! braid-gcm picks its kernels at run time (VAES on 512- or 256-bit
//! registers where the CPU has them); the host CPU build is for the rest:
//! `RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target-tunnel \
//!  cargo bench -p braid-tunnel --bench seal -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use braid_tunnel::crypto::AesGcmKey;
use braid_tunnel::sa::{InboundSa, OutboundSa, SaParams, Spi, MAX_RESERVE};
use braid_tunnel::wire::esp::{encrypted_len, next_header, MAX_TAIL, PAYLOAD_OFFSET};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 4] = [64, 512, 1420, 9000];
/// Packets opened per timed chunk; each chunk gets a fresh window.
const CHUNK: usize = 32;

fn params() -> SaParams {
    SaParams {
        spi: Spi(0x0000_b1d0),
        key: AesGcmKey::Aes256([0x5a; 32]),
        salt: [1, 2, 3, 4],
        packet_limit: u64::MAX,
    }
}

fn esp_buf(size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; PAYLOAD_OFFSET + size + MAX_TAIL];
    buf[PAYLOAD_OFFSET] = 0x45;
    buf
}

fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("aes256gcm");
    let p = params();
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));

        let tx = OutboundSa::new(&p);
        let mut block = tx.reserve(MAX_RESERVE).unwrap();
        let mut buf = esp_buf(size);
        group.bench_function(BenchmarkId::new("esp_seal", size), |b| {
            b.iter(|| {
                if block.is_empty() {
                    block = tx.reserve(MAX_RESERVE).unwrap();
                }
                tx.seal(&mut block, black_box(&mut buf), size, next_header::IPV4)
                    .unwrap()
            })
        });

        // Raw `aes-gcm` over the payload size, and over the bytes ESP really
        // encrypts (payload, pad, trailer), both with a 12-byte AAD like ESN.
        let raw = Aes256Gcm::new(&Array::from([0x5au8; 32]));
        for (name, len) in [
            ("raw_aes_gcm_seal", size),
            ("raw_aes_gcm_seal_esp_bytes", encrypted_len(size)),
        ] {
            let mut buf = vec![0x45u8; len];
            let mut seq = 0u64;
            group.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter(|| {
                    seq += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&seq.to_be_bytes());
                    let aad = [0u8; 12];
                    raw.encrypt_inout_detached(
                        &Array::from(nonce),
                        &aad,
                        black_box(&mut buf[..]).into(),
                    )
                    .unwrap()
                })
            });
        }

        // Open decrypts in place, so each chunk is restored from pristine
        // copies outside the timed region; only `open` is timed.
        let pristine: Vec<Vec<u8>> = {
            let tx = OutboundSa::new(&p);
            let mut block = tx.reserve(CHUNK).unwrap();
            (0..CHUNK)
                .map(|_| {
                    let mut buf = esp_buf(size);
                    let len = tx
                        .seal(&mut block, &mut buf, size, next_header::IPV4)
                        .unwrap();
                    buf.truncate(len);
                    buf
                })
                .collect()
        };
        let mut work = pristine.clone();
        group.bench_function(BenchmarkId::new("esp_open", size), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let n = (iters - done).min(CHUNK as u64) as usize;
                    for (w, p) in work.iter_mut().zip(&pristine).take(n) {
                        w.copy_from_slice(p);
                    }
                    // A fresh window per chunk: the chunk is seq 1..=32 again.
                    let mut rx = InboundSa::new(&p, 4096).unwrap();
                    let start = Instant::now();
                    for w in work.iter_mut().take(n) {
                        black_box(rx.open(black_box(w), 0).unwrap());
                    }
                    total += start.elapsed();
                    done += n as u64;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, seal);
criterion_main!(benches);
