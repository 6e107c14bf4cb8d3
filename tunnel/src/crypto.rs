//! The AEAD behind every SA, as a small trait so another engine (DPDK
//! cryptodev, QAT) can replace it without touching the pipeline.
//!
//! [`AesGcm`] seals and opens with `braid-gcm` at every size where the
//! CPU has VAES and VPCLMULQDQ (its wide kernels: sixteen blocks a step,
//! the AAD, up to 64 blocks and the lengths under one reduction; on
//! 512-bit registers with AVX-512, on 256-bit ones with AVX2 only). With
//! AVX-512, AES-256 ~66 cycles for 64 bytes, ~350 for a 1448-byte ESP
//! payload against ~530 with aws-lc, whose fixed cost per call is ~250
//! cycles; even at 9000 bytes. On Zen 3 (AVX2), where aws-lc 0.47 has no
//! VAES code for GCM, braid-gcm's 256-bit kernels seal a 1420-byte packet
//! in ~300 ns against ~620 ns on AES-NI. Elsewhere, packets of [`SMALL`] bytes or
//! more go to aws-lc's AES-GCM (through `aws-lc-rs`: stitched
//! AES-NI/VAES + (V)PCLMULQDQ assembly picked at run time from CPUID,
//! twice as fast as the `aes-gcm` crate at 1420 bytes), and smaller ones
//! to `braid-gcm`'s narrow kernels (AES-NI + PCLMULQDQ, ~3 times as fast
//! as the `aes-gcm` crate at 64 bytes), or to the `aes-gcm` crate on a
//! CPU without those instructions (ARCHITECTURE.md, "Decisions").

use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut, Aes128Gcm, Aes256Gcm, KeyInit};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

/// GCM nonce: salt (4) and explicit IV (8) (RFC 4106 section 4).
pub const NONCE_LEN: usize = 12;
/// GCM tag length braid uses (RFC 4106 section 6).
pub const TAG_LEN: usize = 16;

/// The AEAD refused: on open, the tag did not verify; on seal, the input
/// exceeds GCM's limits (NIST SP 800-38D section 5.2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AeadError;

/// An authenticated cipher with 16-byte tags, working in place.
/// Implementations hold only key material and are shared read-only by workers.
pub trait Aead: Send + Sync {
    /// Encrypts `buf` in place and writes the tag over `aad` and the
    /// ciphertext into `tag` (ESP's ICV field: written in place, not
    /// returned, which cost a store-forwarding stall per packet).
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), AeadError>;

    /// Checks the tag and decrypts in place: `sealed` is the ciphertext
    /// followed by its [`TAG_LEN`]-byte tag (as ESP lays them out), and the
    /// plaintext ends up in its first `sealed.len() - TAG_LEN` bytes. On
    /// failure the ciphertext must be left as it was or zeroed, never
    /// half-decrypted plaintext the caller could use.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &mut [u8],
    ) -> Result<(), AeadError>;
}

/// AES-GCM key, 128 or 256 bits (RFC 4106 section 8.1 key lengths).
#[derive(Clone)]
pub enum AesGcmKey {
    /// AES-128-GCM.
    Aes128([u8; 16]),
    /// AES-256-GCM.
    Aes256([u8; 32]),
}

impl AesGcmKey {
    /// A key from 16 or 32 bytes; `None` for any other length.
    pub fn from_slice(key: &[u8]) -> Option<AesGcmKey> {
        match key.len() {
            16 => key.try_into().ok().map(AesGcmKey::Aes128),
            32 => key.try_into().ok().map(AesGcmKey::Aes256),
            _ => None,
        }
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            AesGcmKey::Aes128(k) => k,
            AesGcmKey::Aes256(k) => k,
        }
    }
}

impl core::fmt::Debug for AesGcmKey {
    /// Never prints key bytes.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AesGcmKey::Aes128(_) => f.write_str("AesGcmKey::Aes128(..)"),
            AesGcmKey::Aes256(_) => f.write_str("AesGcmKey::Aes256(..)"),
        }
    }
}

impl Drop for AesGcmKey {
    /// Best-effort wipe of our copy of the key (no `unsafe`, no `zeroize`).
    fn drop(&mut self) {
        match self {
            AesGcmKey::Aes128(k) => k.fill(0),
            AesGcmKey::Aes256(k) => k.fill(0),
        }
        core::hint::black_box(&self);
    }
}

/// Below this many bytes of ciphertext [`AesGcm`] uses `braid-gcm` (or the
/// `aes-gcm` crate), from it up aws-lc, unless `braid-gcm` has its wide
/// (VAES) kernels on this CPU (then it takes every size). aws-lc's fixed cost
/// per call (its one-block GHASH of the AAD and lengths, IV set-up) made plain-mode 64-byte packets ~30%
/// dearer per packet (braid-perf-gw: 285-314 -> 395 cycles LAN->WAN); at
/// 1420 bytes it is ~30% cheaper per packet for the whole gateway.
pub const SMALL: usize = 256;

/// AES-GCM (128 or 256 by the key's length): `braid-gcm` at every size
/// where the CPU has its wide kernels (VAES, VPCLMULQDQ; AVX-512 or AVX2);
/// elsewhere aws-lc for packets of [`SMALL`] bytes and more and, below,
/// `braid-gcm` where the CPU has AES-NI and PCLMULQDQ, else the `aes-gcm`
/// crate. All are the same standard GCM
/// (tested against each other byte for byte), so which one sealed a
/// packet never matters to the receiver. Key schedules and GHASH
/// tables are computed once, at SA set-up.
pub struct AesGcm {
    large: LessSafeKey,
    small: Small,
    /// `small` is braid-gcm with its wide kernels: it takes every size.
    wide: bool,
}

// One per SA, built once: the variants' sizes (braid-gcm's key holds
// H..H^66) cost nothing, a box would cost a pointer chase per packet.
#[allow(clippy::large_enum_variant)]
enum Small {
    /// braid-gcm, where the CPU has AES-NI + PCLMULQDQ (and its wide
    /// kernels where it has VAES and VPCLMULQDQ).
    Hw(braid_gcm::Gcm),
    Aes128(Aes128Gcm),
    Aes256(Aes256Gcm),
}

impl AesGcm {
    /// Expands the key schedules once, at SA set-up.
    pub fn new(key: &AesGcmKey) -> AesGcm {
        let mut aead = AesGcm::portable(key);
        if let Some(hw) = braid_gcm::Gcm::new(key.as_bytes()) {
            aead.wide = hw.wide();
            aead.small = Small::Hw(hw);
        }
        aead
    }

    /// As [`AesGcm::new`], but short packets always go to the `aes-gcm`
    /// crate and the others to aws-lc: what a CPU without AES-NI and
    /// PCLMULQDQ gets, and what tests compare the kernels with.
    pub fn portable(key: &AesGcmKey) -> AesGcm {
        let (alg, small) = match key {
            AesGcmKey::Aes128(k) => (&AES_128_GCM, Small::Aes128(Aes128Gcm::new(&Array::from(*k)))),
            AesGcmKey::Aes256(k) => (&AES_256_GCM, Small::Aes256(Aes256Gcm::new(&Array::from(*k)))),
        };
        // Infallible: the key's length is the algorithm's by construction.
        let unbound = UnboundKey::new(alg, key.as_bytes()).expect("AES-GCM key length");
        AesGcm { large: LessSafeKey::new(unbound), small, wide: false }
    }
}

/// Which AES-GCM implementations [`AesGcm`] uses on this CPU, for the
/// operator's log: a CPU without AES-NI and PCLMULQDQ seals short packets
/// several times slower.
pub fn engines() -> &'static str {
    match braid_gcm::Gcm::kernel_here() {
        Some(braid_gcm::Kernel::Vaes512) => "braid-gcm at every size (its VAES + VPCLMULQDQ kernels, 512-bit, AVX-512)",
        Some(braid_gcm::Kernel::Vaes256) => "braid-gcm at every size (its VAES + VPCLMULQDQ kernels, 256-bit, AVX2)",
        Some(braid_gcm::Kernel::AesNi) => "aws-lc from 256 bytes, braid-gcm (AES-NI + PCLMULQDQ) below",
        None => "aws-lc from 256 bytes, the portable aes-gcm crate below (no AES-NI/PCLMULQDQ on this CPU: short packets are slow)",
    }
}

impl core::fmt::Debug for AesGcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let bits = match self.large.algorithm() {
            a if *a == AES_128_GCM => 128,
            _ => 256,
        };
        let small = match self.small {
            Small::Hw(_) if self.wide => "vaes",
            Small::Hw(_) => "aes-ni",
            _ => "portable",
        };
        write!(f, "AesGcm::Aes{bits}({small})")
    }
}

impl Aead for AesGcm {
    #[inline]
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        if buf.len() < SMALL || self.wide {
            let nonce = match &self.small {
                Small::Hw(g) => {
                    g.seal_into(nonce, aad, buf, tag);
                    return Ok(());
                }
                _ => Array::from(*nonce),
            };
            let t = match &self.small {
                Small::Hw(_) => unreachable!("sealed above"),
                Small::Aes128(c) => c.encrypt_inout_detached(&nonce, aad, buf.into()),
                Small::Aes256(c) => c.encrypt_inout_detached(&nonce, aad, buf.into()),
            };
            tag.copy_from_slice(&t.map_err(|_| AeadError)?);
            return Ok(());
        }
        let nonce = Nonce::assume_unique_for_key(*nonce);
        // The tag straight into `tag` (no extra plaintext): returned as a
        // `Tag`, it went through the stack.
        self.large
            .seal_in_place_scatter(nonce, Aad::from(aad), buf, &[], tag)
            .map_err(|_| AeadError)
    }

    #[inline]
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        sealed: &mut [u8],
    ) -> Result<(), AeadError> {
        let Some(end) = sealed.len().checked_sub(TAG_LEN) else {
            return Err(AeadError);
        };
        if end < SMALL || self.wide {
            // A refused packet is left as it was: the aes-gcm crate and
            // braid-gcm's narrow kernels check the tag before they
            // decrypt, its wide ones apply the keystream again.
            if let Small::Hw(g) = &self.small {
                return g.open(nonce, aad, sealed).map_err(|_| AeadError);
            }
            let (body, tag) = sealed.split_at_mut(end);
            let tag = Array::from(<[u8; TAG_LEN]>::try_from(&*tag).map_err(|_| AeadError)?);
            let nonce = Array::from(*nonce);
            let opened = match &self.small {
                Small::Hw(_) => unreachable!("opened above"),
                Small::Aes128(c) => c.decrypt_inout_detached(&nonce, aad, body.into(), &tag),
                Small::Aes256(c) => c.decrypt_inout_detached(&nonce, aad, body.into(), &tag),
            };
            return opened.map_err(|_| AeadError);
        }
        let nonce = Nonce::assume_unique_for_key(*nonce);
        // With the tag apart: `open_in_place` moves the plaintext to the
        // front of its buffer afterwards, a memmove of the whole packet
        // onto itself here.
        let (body, tag) = sealed.split_at_mut(end);
        match self.large.open_in_place_separate_tag(nonce, Aad::from(aad), tag, body) {
            Ok(_) => Ok(()),
            Err(_) => {
                // aws-lc may leave anything in the buffer on failure: make
                // sure no plaintext is left (the cost is nothing next to
                // the decryption the forged packet already took).
                body.fill(0);
                Err(AeadError)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    struct Vector {
        key: &'static str,
        iv: &'static str,
        aad: &'static str,
        plain: &'static str,
        cipher: &'static str,
        tag: &'static str,
    }

    // McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases
    // 3, 4 (AES-128) and 15, 16 (AES-256).
    const P64: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                       1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    const P60: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                       1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
    const VECTORS: [Vector; 4] = [
        Vector {
            key: "feffe9928665731c6d6a8f9467308308",
            iv: "cafebabefacedbaddecaf888",
            aad: "",
            plain: P64,
            cipher: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
                     21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
            tag: "4d5c2af327cd64a62cf35abd2ba6fab4",
        },
        Vector {
            key: "feffe9928665731c6d6a8f9467308308",
            iv: "cafebabefacedbaddecaf888",
            aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            plain: P60,
            cipher: "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
                     21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
            tag: "5bc94fbc3221a5db94fae95ae7121a47",
        },
        Vector {
            key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            iv: "cafebabefacedbaddecaf888",
            aad: "",
            plain: P64,
            cipher: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                     8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
            tag: "b094dac5d93471bdec1a502270e3cc6c",
        },
        Vector {
            key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
            iv: "cafebabefacedbaddecaf888",
            aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            plain: P60,
            cipher: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                     8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
            tag: "76fc6ece0f4e1768cddf8853bb2d551b",
        },
    ];

    /// `plain` sealed: ciphertext followed by the tag.
    fn sealed(aead: &AesGcm, nonce: &[u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        let mut tag = [0u8; TAG_LEN];
        aead.seal_in_place(nonce, aad, &mut buf, &mut tag).unwrap();
        buf.extend_from_slice(&tag);
        buf
    }

    #[test]
    fn gcm_spec_vectors() {
        for (i, v) in VECTORS.iter().enumerate() {
            let key = AesGcmKey::from_slice(&hex(v.key)).unwrap();
            let aead = AesGcm::new(&key);
            let nonce: [u8; 12] = hex(v.iv).try_into().unwrap();
            let mut buf = sealed(&aead, &nonce, &hex(v.aad), &hex(v.plain));
            let n = buf.len() - TAG_LEN;
            assert_eq!(buf[..n], hex(v.cipher), "ciphertext of vector {i}");
            assert_eq!(buf[n..], hex(v.tag), "tag of vector {i}");
            aead.open_in_place(&nonce, &hex(v.aad), &mut buf).unwrap();
            assert_eq!(buf[..n], hex(v.plain), "plaintext of vector {i}");
        }
    }

    /// A refused open leaves the ciphertext as it was or zeroed.
    fn refused(aead: &AesGcm, nonce: &[u8; 12], aad: &[u8], mut buf: Vec<u8>) {
        let before = buf.clone();
        assert_eq!(aead.open_in_place(nonce, aad, &mut buf), Err(AeadError));
        let n = buf.len().saturating_sub(TAG_LEN);
        assert!(
            buf[..n] == before[..n] || buf[..n].iter().all(|b| *b == 0),
            "plaintext left behind by a refused open"
        );
    }

    /// What a CPU with AES-NI and PCLMULQDQ but without braid-gcm's wide
    /// kernels runs: braid-gcm's narrow kernels below `SMALL`, aws-lc from
    /// it up (`None` on a CPU without AES-NI).
    fn narrow(key: &AesGcmKey) -> Option<AesGcm> {
        let g = braid_gcm::Gcm::new(key.as_bytes())?;
        Some(AesGcm { small: Small::Hw(g.narrow()), wide: false, ..AesGcm::portable(key) })
    }

    /// On every engine: `AesGcm::new`'s (braid-gcm here), the narrow
    /// kernels with aws-lc, and `AesGcm::portable`'s (the `aes-gcm` crate
    /// below `SMALL`, aws-lc from it up).
    #[test]
    fn open_rejects_any_flipped_bit() {
        let v = &VECTORS[3];
        let key = AesGcmKey::from_slice(&hex(v.key)).unwrap();
        for aead in [Some(AesGcm::new(&key)), narrow(&key), Some(AesGcm::portable(&key))].into_iter().flatten() {
            rejects_any_flipped_bit(&aead);
        }
    }

    fn rejects_any_flipped_bit(aead: &AesGcm) {
        let v = &VECTORS[3];
        let nonce: [u8; 12] = hex(v.iv).try_into().unwrap();
        let aad = hex(v.aad);
        let good = sealed(aead, &nonce, &aad, &hex(v.plain));
        // Every bit of the ciphertext and of the tag.
        for bit in 0..good.len() * 8 {
            let mut buf = good.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            refused(aead, &nonce, &aad, buf);
        }
        let mut bad_aad = aad.clone();
        bad_aad[0] ^= 1;
        refused(aead, &nonce, &bad_aad, good.clone());
        let mut bad_nonce = nonce;
        bad_nonce[11] ^= 1;
        refused(aead, &bad_nonce, &aad, good.clone());
        // Shorter than a tag, and a tag alone that is not the empty text's.
        refused(aead, &nonce, &aad, good[..TAG_LEN - 1].to_vec());
        refused(aead, &nonce, &aad, good[good.len() - TAG_LEN..].to_vec());
        // The same for a packet long enough for aws-lc (`portable`) and
        // for more than one step of braid-gcm's wide kernels: a failed
        // open must not leave plaintext either.
        let plain = vec![0x45u8; SMALL * 4];
        let good = sealed(aead, &nonce, &aad, &plain);
        for bit in (0..good.len() * 8).step_by(61) {
            let mut buf = good.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            refused(aead, &nonce, &aad, buf);
        }
        refused(aead, &nonce, &bad_aad, good.clone());
    }

    /// The `aes-gcm` crate (RustCrypto, written independently of aws-lc)
    /// opens what we seal and we open what it seals, for both key sizes,
    /// every length from 0 to 1100 bytes and a jumbo frame, with and
    /// without an ESN-sized AAD: `braid-gcm` (`AesGcm::new` where the CPU
    /// has the instructions: its wide kernels at every size where it has
    /// those) and, with `AesGcm::portable`, aws-lc from [`SMALL`] up and
    /// the switch to that crate below (the GCM spec
    /// vectors and `tests/interop.rs` check that crate).
    #[test]
    fn agrees_with_an_independent_implementation() {
        let k128 = [0x11u8; 16];
        let k256 = [0x22u8; 32];
        let (k128, k256) = (AesGcmKey::Aes128(k128), AesGcmKey::Aes256(k256));
        // Index 0, 2: AES-128; the kernels where the CPU has them, then
        // the portable path.
        let mut ours = vec![AesGcm::new(&k128), AesGcm::new(&k256), AesGcm::portable(&k128), AesGcm::portable(&k256)];
        // The narrow kernels with aws-lc, where the CPU has AES-NI.
        if let (Some(a), Some(b)) = (narrow(&k128), narrow(&k256)) {
            ours.extend([a, b]);
        }
        assert_eq!(format!("{:?}", ours[2]), "AesGcm::Aes128(portable)");
        let hw = match (braid_gcm::Gcm::wide_available(), braid_gcm::Gcm::available()) {
            (true, _) => "vaes",
            (false, true) => "aes-ni",
            _ => "portable",
        };
        assert_eq!(format!("{:?}", ours[1]), format!("AesGcm::Aes256({hw})"));
        let (k128, k256) = ([0x11u8; 16], [0x22u8; 32]);
        let r128 = Aes128Gcm::new(&Array::from(k128));
        let r256 = Aes256Gcm::new(&Array::from(k256));
        let lens = (0..=1100).chain([1420, 9000]);
        for len in lens {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let nonce = [len as u8; 12];
            let aad: &[u8] = if len % 2 == 0 { &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] } else { &[9; 8] };
            for (which, aead) in ours.iter().enumerate() {
                let ct = sealed(aead, &nonce, aad, &plain);
                let (body, tag) = ct.split_at(len);
                let mut theirs = body.to_vec();
                let tag = Array::from(<[u8; 16]>::try_from(tag).unwrap());
                let n = Array::from(nonce);
                let opened = match which % 2 {
                    0 => r128.decrypt_inout_detached(&n, aad, theirs.as_mut_slice().into(), &tag),
                    _ => r256.decrypt_inout_detached(&n, aad, theirs.as_mut_slice().into(), &tag),
                };
                assert!(opened.is_ok() && theirs == plain, "theirs opens ours, {len} B");
                let mut back = plain.clone();
                let tag = match which % 2 {
                    0 => r128.encrypt_inout_detached(&n, aad, back.as_mut_slice().into()),
                    _ => r256.encrypt_inout_detached(&n, aad, back.as_mut_slice().into()),
                }
                .unwrap();
                back.extend_from_slice(&tag);
                assert_eq!(back, ct, "same ciphertext and tag, {len} B");
                aead.open_in_place(&nonce, aad, &mut back).unwrap();
                assert_eq!(back[..len], plain[..], "ours opens theirs, {len} B");
            }
        }
    }

    #[test]
    fn engines_name_what_runs() {
        let want = if braid_gcm::Gcm::wide_available() {
            "every size"
        } else if braid_gcm::Gcm::available() {
            "braid-gcm"
        } else {
            "portable"
        };
        assert!(engines().contains(want), "{}", engines());
    }

    #[test]
    fn key_lengths() {
        assert!(AesGcmKey::from_slice(&[0; 16]).is_some());
        assert!(AesGcmKey::from_slice(&[0; 32]).is_some());
        for len in [0, 15, 17, 24, 31, 33] {
            assert!(AesGcmKey::from_slice(&vec![0; len]).is_none());
        }
        assert_eq!(
            format!("{:?}", AesGcmKey::Aes128([7; 16])),
            "AesGcmKey::Aes128(..)"
        );
    }
}
