//! AES-GCM (NIST SP 800-38D) on the CPU's AES-NI and PCLMULQDQ
//! instructions, and on VAES and VPCLMULQDQ (with AVX-512, or AVX2 only)
//! where it has them.
//!
//! A general AES-GCM library pays a fixed cost per call (dispatch, IV
//! set-up, one GHASH multiplication and reduction per block) that a 64-byte
//! ESP packet cannot amortise: the `aes-gcm` crate spends ~120 ns sealing
//! 64 bytes here, aws-lc ~120 ns at any size below 256 bytes. This crate
//! does what VPP's and aws-lc's own AES-GCM kernels do, for one buffer:
//! - where the CPU has VAES, VPCLMULQDQ and AVX-512 F and BW (the wide
//!   kernels, `x86/wide.rs`; [`Kernel::Vaes512`]): four blocks per
//!   512-bit register, sixteen
//!   blocks a step (AES rounds of four registers interleaved, the step's
//!   ciphertext hashed during the next step's rounds), the AAD's block,
//!   up to 64 ciphertext blocks and the lengths block summed before one
//!   reduction (powers H..H^66 computed with the key schedule), and the
//!   last step's bytes through byte-masked loads and stores. AES-256:
//!   ~66 cycles for 64 bytes, ~350 for 1448 bytes against ~530 with
//!   aws-lc (whose fixed cost per call is ~250 cycles); at 9000 bytes the
//!   two are even;
//! - where it has VAES and VPCLMULQDQ but no AVX-512 (`x86/ymm.rs`;
//!   [`Kernel::Vaes256`]: AMD Zen 3, Intel client cores from Alder
//!   Lake): the same design at two blocks per 256-bit register, eight
//!   registers a step, for buffers of 128 bytes and more (shorter ones go
//!   to the narrow kernels). AES-256 on Zen 3: ~300 ns for 1420 bytes
//!   against ~620 on the narrow kernels, ~85 ns for 256 bytes against ~150;
//! - elsewhere (the narrow kernels, AES-NI and PCLMULQDQ), the counter
//!   blocks and the tag mask E(J0) encrypted together, up to eight at a
//!   time, and GHASH over up to eight blocks per reduction (powers H..H^8).
//!   ~37 ns for 64 bytes.
//!
//! [`Gcm::new`] returns `None` where the CPU lacks the instructions (or off
//! x86-64), and callers fall back to a portable implementation. All the
//! `unsafe` is in `x86`: SIMD intrinsics behind that run-time check, and
//! unaligned loads and stores within checked slices.

use core::fmt;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Bytes of a GCM nonce (IV) this crate takes: the 96-bit form.
pub const NONCE_LEN: usize = 12;
/// Bytes of the tag.
pub const TAG_LEN: usize = 16;
/// Most bytes sealed or opened under one nonce: 2^32 - 2 blocks.
pub const MAX_LEN: u64 = ((1 << 32) - 2) * 16;

/// An AES-128-GCM or AES-256-GCM key, expanded once.
#[derive(Clone)]
pub struct Gcm {
    #[cfg(target_arch = "x86_64")]
    keys: x86::Keys,
    #[cfg(not(target_arch = "x86_64"))]
    never: core::convert::Infallible,
}

/// Which kernels a key runs on ([`Gcm::kernel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AES-NI and PCLMULQDQ, one block per register: the narrow kernels.
    AesNi,
    /// VAES and VPCLMULQDQ on 256-bit registers (AVX2): AMD Zen 3, Intel
    /// client cores from Alder Lake.
    Vaes256,
    /// VAES and VPCLMULQDQ on 512-bit registers (AVX-512 F and BW): AMD
    /// Zen 4 and later, Intel cores with AVX-512 from Ice Lake.
    Vaes512,
}

/// The tag did not match: the data was left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

impl Gcm {
    /// Expands a 16-byte (AES-128) or 32-byte (AES-256) key; `None` for
    /// another length, or when the CPU has no AES-NI, PCLMULQDQ, SSSE3 and
    /// SSE4.1.
    pub fn new(key: &[u8]) -> Option<Gcm> {
        #[cfg(target_arch = "x86_64")]
        {
            x86::Keys::new(key).map(|keys| Gcm { keys })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = key;
            None
        }
    }

    /// Whether this CPU runs this crate (what [`Gcm::new`] checks).
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            x86::available()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The kernels every key made on this CPU runs on (`None` where
    /// [`Gcm::new`] refuses every key).
    pub fn kernel_here() -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        {
            x86::available().then(x86::best_kernel)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }

    /// Whether this CPU runs one of the VAES kernels, 256 or 512 bits wide
    /// (what [`Gcm::wide`] reports of every key made here).
    pub fn wide_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            x86::wide_available()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Whether this key runs on one of the VAES kernels (256 or 512 bits
    /// wide), which this CPU has: fast at every size.
    pub fn wide(&self) -> bool {
        self.kernel() != Kernel::AesNi
    }

    /// The kernels this key runs on: the widest this CPU has.
    pub fn kernel(&self) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            self.keys.kernel()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            match self.never {}
        }
    }

    /// The kernels that seal or open a buffer of `len` bytes (of plain or
    /// cipher text) with this key: [`Gcm::kernel`], but the 256-bit
    /// kernels leave buffers under 128 bytes to the narrow ones, which
    /// are faster there.
    pub fn kernel_for(&self, len: usize) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            self.keys.kernel_for(len)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = len;
            match self.never {}
        }
    }

    /// The same key on other kernels, if this CPU runs them: what a CPU
    /// without the wider ones runs, for tests and comparisons.
    pub fn on(&self, kernel: Kernel) -> Option<Gcm> {
        #[cfg(target_arch = "x86_64")]
        {
            self.keys.on(kernel).map(|keys| Gcm { keys })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = kernel;
            match self.never {}
        }
    }

    /// The same key on the narrow kernels only (AES-NI and PCLMULQDQ).
    pub fn narrow(&self) -> Gcm {
        self.on(Kernel::AesNi).expect("every CPU that runs this crate runs the narrow kernels")
    }

    /// Encrypts `buf` in place and returns the tag over `aad` and the
    /// ciphertext.
    ///
    /// # Panics
    /// On a buffer longer than GCM allows under one nonce (2^32 - 2
    /// blocks, NIST SP 800-38D section 5.2.1.1): the counter would wrap.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        self.seal_into(nonce, aad, buf, &mut tag);
        tag
    }

    /// [`Gcm::seal`], writing the tag into `tag` (an ESP packet's ICV
    /// field, say) with one 16-byte store. Faster on the per-packet path:
    /// a returned tag went through the stack and was reloaded in pieces,
    /// which stalled on store forwarding.
    ///
    /// # Panics
    /// As [`Gcm::seal`].
    #[inline]
    pub fn seal_into(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &mut [u8; TAG_LEN]) {
        assert!(buf.len() as u64 <= MAX_LEN, "longer than GCM allows under one nonce");
        #[cfg(target_arch = "x86_64")]
        {
            self.keys.seal(nonce, aad, buf, tag)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (nonce, aad, buf, tag);
            match self.never {}
        }
    }

    /// Checks the tag and decrypts in place: `sealed` is the ciphertext
    /// followed by its tag (as ESP lays them out); the plaintext ends up in
    /// its first `sealed.len() - TAG_LEN` bytes. The tag is compared in
    /// constant time. On failure `sealed` is left as it was: the narrow
    /// kernels check the tag before they decrypt; the wide ones decrypt
    /// as they hash and, on a mismatch, apply the keystream again.
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &mut [u8]) -> Result<(), OpenError> {
        if sealed.len() < TAG_LEN || (sealed.len() - TAG_LEN) as u64 > MAX_LEN {
            return Err(OpenError);
        }
        #[cfg(target_arch = "x86_64")]
        {
            self.keys.open(nonce, aad, sealed)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (nonce, aad);
            match self.never {}
        }
    }
}

impl fmt::Debug for Gcm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(target_arch = "x86_64")]
        {
            write!(f, "Gcm(AES-{})", self.keys.key_bits())
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            match self.never {}
        }
    }
}
