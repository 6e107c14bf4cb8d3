//! braid-gcm against the GCM specification's test vectors and, byte for
//! byte, against the `aes-gcm` crate (an independent implementation).

use aes_gcm::aead::array::Array;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use braid_gcm::{Gcm, Kernel, OpenError, TAG_LEN};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn gcm(key: &[u8]) -> Gcm {
    Gcm::new(key).expect("this machine has AES-NI and PCLMULQDQ")
}

/// The key on each set of kernels this CPU runs: the narrow ones and,
/// where it has them, the 256-bit and 512-bit VAES ones (an AVX-512 CPU
/// runs all three, so its tests test all three).
fn kernels(key: &[u8]) -> Vec<Gcm> {
    let g = gcm(key);
    [Kernel::AesNi, Kernel::Vaes256, Kernel::Vaes512].into_iter().filter_map(|k| g.on(k)).collect()
}

/// What the `aes-gcm` crate makes of the same input: ciphertext and tag.
fn reference(key: &[u8], nonce: &[u8; 12], aad: &[u8], pt: &[u8]) -> (Vec<u8>, [u8; 16]) {
    let mut ct = pt.to_vec();
    let n = Array::from(*nonce);
    let tag = match key.len() {
        16 => Aes128Gcm::new(key.try_into().unwrap()).encrypt_inout_detached(&n, aad, ct.as_mut_slice().into()),
        _ => Aes256Gcm::new(key.try_into().unwrap()).encrypt_inout_detached(&n, aad, ct.as_mut_slice().into()),
    }
    .unwrap();
    (ct, tag.into())
}

/// McGrew and Viega, "The Galois/Counter Mode of Operation", test cases
/// 1-4 (AES-128) and 13-16 (AES-256), 96-bit IVs.
#[test]
fn spec_vectors() {
    let k128 = "feffe9928665731c6d6a8f9467308308";
    let k256 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    let iv = "cafebabefacedbaddecaf888";
    let pt4 = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
               1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    let pt = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
              1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
    let aad = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
    let cases: [(&str, &str, &str, &str, &str, &str); 8] = [
        ("00000000000000000000000000000000", "000000000000000000000000", "", "", "", "58e2fccefa7e3061367f1d57a4e7455a"),
        (
            "00000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "00000000000000000000000000000000",
            "0388dace60b6a392f328c2b971b2fe78",
            "ab6e47d42cec13bdf53a67b21257bddf",
        ),
        (
            k128,
            iv,
            "",
            pt4,
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
             21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
            "4d5c2af327cd64a62cf35abd2ba6fab4",
        ),
        (
            k128,
            iv,
            aad,
            pt,
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
             21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
            "5bc94fbc3221a5db94fae95ae7121a47",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "",
            "",
            "530f8afbc74536b9a963b4f1c4cb738b",
        ),
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "00000000000000000000000000000000",
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919",
        ),
        (
            k256,
            iv,
            "",
            pt4,
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
            "b094dac5d93471bdec1a502270e3cc6c",
        ),
        (
            k256,
            iv,
            aad,
            pt,
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];
    for (i, (key, iv, aad, pt, ct, tag)) in cases.iter().enumerate() {
        for g in kernels(&hex(key)) {
            let nonce: [u8; 12] = hex(iv).try_into().unwrap();
            let mut buf = hex(pt);
            let got = g.seal(&nonce, &hex(aad), &mut buf);
            assert_eq!(buf, hex(ct), "case {i}: ciphertext");
            assert_eq!(got.to_vec(), hex(tag), "case {i}: tag");
            buf.extend_from_slice(&got);
            g.open(&nonce, &hex(aad), &mut buf).unwrap();
            assert_eq!(&buf[..buf.len() - TAG_LEN], hex(pt).as_slice(), "case {i}: opened");
        }
    }
}

/// Every length from 0 to 2300 bytes (every way a buffer ends within the
/// narrow kernels' eight-block groups, the wide kernels' 64-byte
/// registers, 256-byte steps and 64-block groups, and the last partial
/// block; a later group of every size), AAD lengths around a block and
/// longer, both key sizes, on each set of kernels: the same bytes and tag
/// as aes-gcm, open gives the plaintext back, and the bytes on either
/// side of the buffer are never touched.
#[test]
fn every_length_against_aes_gcm() {
    const GUARD: usize = 64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u8
    };
    for key_len in [16, 32] {
        for len in 0..=2300 {
            for aad_len in [0, 8, 12, 15, 16, 17, 33, 64, 100] {
                let key: Vec<u8> = (0..key_len).map(|_| rnd()).collect();
                let nonce: [u8; 12] = core::array::from_fn(|_| rnd());
                let aad: Vec<u8> = (0..aad_len).map(|_| rnd()).collect();
                let pt: Vec<u8> = (0..len).map(|_| rnd()).collect();
                let (ct, tag) = reference(&key, &nonce, &aad, &pt);
                for g in kernels(&key) {
                    let w = g.kernel();
                    let what = format!("key {key_len} len {len} aad {aad_len} {w:?}");
                    // [guard | text | tag | guard]
                    let mut buf = vec![0xa5u8; GUARD + len + TAG_LEN + GUARD];
                    buf[GUARD..GUARD + len].copy_from_slice(&pt);
                    let got = g.seal(&nonce, &aad, &mut buf[GUARD..GUARD + len]);
                    assert_eq!(got, tag, "tag: {what}");
                    assert_eq!(&buf[GUARD..GUARD + len], ct.as_slice(), "ciphertext: {what}");
                    buf[GUARD + len..GUARD + len + TAG_LEN].copy_from_slice(&tag);
                    g.open(&nonce, &aad, &mut buf[GUARD..GUARD + len + TAG_LEN]).unwrap();
                    assert_eq!(&buf[GUARD..GUARD + len], pt.as_slice(), "opened: {what}");
                    let outside = buf[..GUARD].iter().chain(&buf[GUARD + len + TAG_LEN..]);
                    assert!(outside.into_iter().all(|b| *b == 0xa5), "a byte outside the buffer changed: {what}");
                }
            }
        }
    }
}

/// Packet sizes (an ESP payload of 1420 bytes, a jumbo frame) and the
/// largest inner packet, both key sizes: sealed as aes-gcm seals, opened
/// back.
#[test]
fn large_buffers_against_aes_gcm() {
    for key_len in [16, 32] {
        for len in [1420, 1448, 4096, 9000, 9001, 65535] {
            let key: Vec<u8> = (0..key_len).map(|i| (i * 7 + 1) as u8).collect();
            let nonce = [7u8; 12];
            let pt: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let (ct, tag) = reference(&key, &nonce, b"spi+seq!", &pt);
            for g in kernels(&key) {
                let w = g.kernel();
                let mut buf = pt.clone();
                assert_eq!(g.seal(&nonce, b"spi+seq!", &mut buf), tag, "key {key_len} len {len} {w:?}");
                assert_eq!(buf, ct, "key {key_len} len {len} {w:?}");
                buf.extend_from_slice(&tag);
                g.open(&nonce, b"spi+seq!", &mut buf).unwrap();
                assert_eq!(&buf[..len], pt.as_slice(), "key {key_len} len {len} {w:?}");
            }
        }
    }
}

/// The widest kernels the CPU has run by default (so the tests above test
/// every set such a CPU has), `on` offers exactly those the CPU has, and
/// `narrow` turns the VAES ones off.
#[test]
fn the_widest_kernels_the_cpu_has() {
    let vaes = std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("vaes")
        && std::is_x86_feature_detected!("vpclmulqdq");
    let zmm = vaes && std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw");
    let g = gcm(&[1; 32]);
    let want = if zmm {
        Kernel::Vaes512
    } else if vaes {
        Kernel::Vaes256
    } else {
        Kernel::AesNi
    };
    assert_eq!(g.kernel(), want);
    assert_eq!(g.wide(), vaes);
    assert_eq!(g.on(Kernel::Vaes256).is_some(), vaes);
    assert_eq!(g.on(Kernel::Vaes512).is_some(), zmm);
    assert_eq!(g.narrow().kernel(), Kernel::AesNi);
    assert!(!g.narrow().wide());
    // Which kernels take which lengths: the 256-bit ones from 128 bytes
    // (the tests above cover 0..=2300 bytes, so both sides of the switch).
    for len in [0, 64, 127, 128, 1420, 9000] {
        let want = |k: Kernel| if k == Kernel::Vaes256 && len < 128 { Kernel::AesNi } else { k };
        for k in kernels(&[1; 32]) {
            assert_eq!(k.kernel_for(len), want(k.kernel()), "{len} B on {:?}", k.kernel());
        }
    }
    if vaes {
        let ymm = g.on(Kernel::Vaes256).expect("a VAES CPU runs the 256-bit kernels");
        assert_eq!(ymm.kernel_for(128), Kernel::Vaes256);
    }
    eprintln!("kernels on this CPU: {want:?}");
}

#[test]
fn other_key_lengths_and_short_input_are_refused() {
    assert!(Gcm::new(&[0; 24]).is_none(), "AES-192 is not offered");
    assert!(Gcm::new(&[0; 15]).is_none());
    let g = gcm(&[1; 16]);
    let mut short = [0u8; TAG_LEN - 1];
    assert_eq!(g.open(&[0; 12], b"", &mut short), Err(OpenError));
    assert_eq!(format!("{g:?}"), "Gcm(AES-128)", "the key never printed");
}

proptest! {
    /// Any one bit flipped in the ciphertext, the tag or the AAD, either
    /// key size, every set of kernels the CPU runs: refused, and the buffer
    /// left exactly as it was (the narrow kernels decrypt nothing; the VAES
    /// ones apply their keystream again).
    #[test]
    fn tampering_is_refused_and_the_buffer_left_as_it_was(
        key in prop_oneof![proptest::collection::vec(any::<u8>(), 16), proptest::collection::vec(any::<u8>(), 32)],
        pt in proptest::collection::vec(any::<u8>(), 0..1200),
        aad in proptest::collection::vec(any::<u8>(), 0..20),
        flip in any::<usize>(),
        bit in 0u8..8,
    ) {
      for g in kernels(&key) {
        let nonce = [3u8; 12];
        let mut sealed = pt.clone();
        let tag = g.seal(&nonce, &aad, &mut sealed);
        sealed.extend_from_slice(&tag);
        let total = sealed.len() + aad.len();
        let at = flip % total;
        let mut aad2 = aad.clone();
        let mut bad = sealed.clone();
        if at < sealed.len() {
            bad[at] ^= 1 << bit;
        } else {
            aad2[at - sealed.len()] ^= 1 << bit;
        }
        let before = bad.clone();
        prop_assert_eq!(g.open(&nonce, &aad2, &mut bad), Err(OpenError));
        prop_assert_eq!(bad, before);
        let mut wrong_nonce = sealed.clone();
        prop_assert_eq!(g.open(&[4u8; 12], &aad, &mut wrong_nonce), Err(OpenError));
        prop_assert_eq!(wrong_nonce, sealed);
      }
    }
}
