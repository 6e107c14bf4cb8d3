//! The AEAD behind every SA, as a small trait so a faster engine (DPDK
//! cryptodev, aws-lc-rs) can replace `aes-gcm` without touching the pipeline.

use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut, Aes128Gcm, Aes256Gcm, KeyInit};

/// GCM nonce: salt (4) and explicit IV (8) (RFC 4106 section 4).
pub const NONCE_LEN: usize = 12;
/// GCM tag length braid uses (RFC 4106 section 6).
pub const TAG_LEN: usize = 16;

/// The AEAD refused: on open, the tag did not verify; on seal, the input
/// exceeds GCM's limits (NIST SP 800-38D section 5.2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AeadError;

/// An authenticated cipher with detached 16-byte tags, working in place.
/// Implementations hold only key material and are shared read-only by workers.
pub trait Aead: Send + Sync {
    /// Encrypts `buf` in place and returns the tag over `aad` and the ciphertext.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError>;

    /// Checks `tag` and decrypts `buf` in place. On failure `buf` must be left
    /// as it was or zeroed, never half-decrypted plaintext the caller could use.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
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

/// AES-GCM from the `aes-gcm` crate, which picks AES-NI/VAES and CLMUL at
/// run time. Build with `-C target-cpu=native` for the fastest GHASH.
pub enum AesGcm {
    /// AES-128-GCM.
    Aes128(Aes128Gcm),
    /// AES-256-GCM.
    Aes256(Aes256Gcm),
}

impl AesGcm {
    /// Expands the key schedule once, at SA set-up.
    pub fn new(key: &AesGcmKey) -> AesGcm {
        match key {
            AesGcmKey::Aes128(k) => AesGcm::Aes128(Aes128Gcm::new(&Array::from(*k))),
            AesGcmKey::Aes256(k) => AesGcm::Aes256(Aes256Gcm::new(&Array::from(*k))),
        }
    }
}

impl core::fmt::Debug for AesGcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AesGcm::Aes128(_) => f.write_str("AesGcm::Aes128"),
            AesGcm::Aes256(_) => f.write_str("AesGcm::Aes256"),
        }
    }
}

impl Aead for AesGcm {
    #[inline]
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        let nonce = Array::from(*nonce);
        let tag = match self {
            AesGcm::Aes128(c) => c.encrypt_inout_detached(&nonce, aad, buf.into()),
            AesGcm::Aes256(c) => c.encrypt_inout_detached(&nonce, aad, buf.into()),
        };
        tag.map(Into::into).map_err(|_| AeadError)
    }

    #[inline]
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        let nonce = Array::from(*nonce);
        let tag = Array::from(*tag);
        let opened = match self {
            AesGcm::Aes128(c) => c.decrypt_inout_detached(&nonce, aad, buf.into(), &tag),
            AesGcm::Aes256(c) => c.decrypt_inout_detached(&nonce, aad, buf.into(), &tag),
        };
        opened.map_err(|_| AeadError)
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

    #[test]
    fn gcm_spec_vectors() {
        for (i, v) in VECTORS.iter().enumerate() {
            let key = AesGcmKey::from_slice(&hex(v.key)).unwrap();
            let aead = AesGcm::new(&key);
            let nonce: [u8; 12] = hex(v.iv).try_into().unwrap();
            let mut buf = hex(v.plain);
            let tag = aead.seal_in_place(&nonce, &hex(v.aad), &mut buf).unwrap();
            assert_eq!(buf, hex(v.cipher), "ciphertext of vector {i}");
            assert_eq!(tag.to_vec(), hex(v.tag), "tag of vector {i}");
            aead.open_in_place(&nonce, &hex(v.aad), &mut buf, &tag)
                .unwrap();
            assert_eq!(buf, hex(v.plain), "plaintext of vector {i}");
        }
    }

    #[test]
    fn open_rejects_any_flipped_bit() {
        let v = &VECTORS[3];
        let aead = AesGcm::new(&AesGcmKey::from_slice(&hex(v.key)).unwrap());
        let nonce: [u8; 12] = hex(v.iv).try_into().unwrap();
        let aad = hex(v.aad);
        let tag: [u8; 16] = hex(v.tag).try_into().unwrap();
        let cipher = hex(v.cipher);
        for bit in 0..cipher.len() * 8 {
            let mut buf = cipher.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                aead.open_in_place(&nonce, &aad, &mut buf, &tag),
                Err(AeadError)
            );
        }
        for bit in 0..128 {
            let mut bad = tag;
            bad[bit / 8] ^= 1 << (bit % 8);
            let mut buf = cipher.clone();
            assert_eq!(
                aead.open_in_place(&nonce, &aad, &mut buf, &bad),
                Err(AeadError)
            );
        }
        let mut bad_aad = aad.clone();
        bad_aad[0] ^= 1;
        let mut buf = cipher.clone();
        assert_eq!(
            aead.open_in_place(&nonce, &bad_aad, &mut buf, &tag),
            Err(AeadError)
        );
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
