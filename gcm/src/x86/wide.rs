//! The wide kernels, for every buffer on CPUs with VAES, VPCLMULQDQ and
//! AVX-512 (F, BW): four 128-bit blocks per 512-bit register, sixteen
//! blocks per step (the AES rounds of four registers interleaved: a
//! VAESENC's latency needs three chains in flight). Each step's
//! ciphertext is hashed during the next step's rounds (when sealing it
//! exists only once its own rounds are done). Ciphertext blocks are
//! hashed in groups of 64, each block times its power of H (H^66..H^1 are
//! kept with the key), summed unreduced and reduced once per group; the
//! AAD's block rides with the first group and the lengths block with the
//! last, so an ESP packet of up to 1 KiB takes one reduction (with 512-bit
//! operations in flight, the shift-based reduction's vector operations
//! compete with VAESENC for the same two ports). The last step takes what
//! is left (1 to 256 bytes) with byte-masked loads and stores, so no byte
//! past the buffer is touched and a partial last block is hashed
//! zero-padded, as GCM wants.
//!
//! The same GHASH arithmetic as the narrow kernels (byte-reflected
//! blocks, `mul_acc` lane by lane, `reduce`); only the width differs.
//! `open` decrypts while it hashes, in one pass, and if the tag then
//! does not match it applies the same keystream again (CTR only): the
//! caller gets its ciphertext back, as from the narrow `open`.

// SAFETY (for every `unsafe` block below without a line of its own): as
// in the parent module, the helpers are `unsafe fn` only because they
// execute AVX2, AVX-512, VAES and VPCLMULQDQ instructions, reached only from
// `seal` and `open`, which `Keys` calls only when `available()` said the
// CPU has them (checked by `best_kernel` when the `Keys` was made, or by
// `runs_here` in `Keys::on`). Memory is touched only
// by `load`/`store` (64 bytes within a checked slice), `load_part`/
// `store_part` (byte-masked: only the bytes within the slice) and
// `powers` (four entries within `Keys::hw`).
use core::arch::x86_64::*;

use super::{bswap, encrypt, gfmul, j0, load_padded, mul_acc, reduce, same_tag, Acc, Ghash, Keys, WIDE};
use crate::{OpenError, NONCE_LEN, TAG_LEN};

/// Blocks per step: four registers of four.
const STEP: usize = 16;

/// Ciphertext blocks hashed per reduction: four steps.
pub(super) const GROUP: usize = 64;

/// Powers of H kept in `Keys::hw`: a group, the AAD's block before it and
/// the lengths block after it.
pub(super) const POWERS: usize = GROUP + 2;

/// Whether the CPU has what these kernels use, besides the parent's.
pub fn available() -> bool {
    super::available()
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("vaes")
        && std::is_x86_feature_detected!("vpclmulqdq")
}

#[inline(always)]
unsafe fn load(b: &[u8; 64]) -> __m512i {
    // SAFETY: 64 readable bytes; no alignment requirement.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

#[inline(always)]
unsafe fn store(b: &mut [u8; 64], v: __m512i) {
    // SAFETY: 64 writable bytes; no alignment requirement.
    unsafe { _mm512_storeu_si512(b.as_mut_ptr().cast(), v) }
}

/// The byte mask of the first `n` (at most 64) bytes.
#[inline(always)]
fn first(n: usize) -> __mmask64 {
    if n >= 64 {
        !0
    } else {
        (1u64 << n) - 1
    }
}

/// Up to 64 bytes, zero beyond `b.len()`.
#[inline(always)]
unsafe fn load_part(b: &[u8]) -> __m512i {
    // SAFETY: only the first `b.len()` (<= 64) bytes are read; masked-off
    // bytes are neither read nor able to fault.
    unsafe { _mm512_maskz_loadu_epi8(first(b.len()), b.as_ptr().cast()) }
}

/// The first `b.len()` (at most 64) bytes of `v` into `b`.
#[inline(always)]
unsafe fn store_part(b: &mut [u8], v: __m512i) {
    // SAFETY: only the first `b.len()` (<= 64) bytes are written.
    unsafe { _mm512_mask_storeu_epi8(b.as_mut_ptr().cast(), first(b.len()), v) }
}

/// Each 128-bit lane byte-swapped (the narrow `bswap`, four at a time).
#[inline(always)]
unsafe fn bswap4(x: __m512i) -> __m512i {
    let rev = _mm512_broadcast_i32x4(_mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    _mm512_shuffle_epi8(x, rev)
}

/// H^(POWERS - from) .. H^(POWERS - 3 - from), from `Keys::hw`
/// (descending powers, then zeros).
#[inline(always)]
unsafe fn powers(k: &Keys, from: usize) -> __m512i {
    let four: &[__m128i; 4] = k.hw[from..from + 4].try_into().expect("four powers");
    // SAFETY: four `__m128i` in a row are 64 readable bytes.
    unsafe { _mm512_loadu_si512(four.as_ptr().cast()) }
}

/// Encrypts the registers in place (four blocks each), rounds interleaved.
#[inline(always)]
unsafe fn encrypt4<const N: usize>(k: &Keys, x: &mut [__m512i; N]) {
    let key = _mm512_broadcast_i32x4(k.rk[0]);
    for b in x.iter_mut() {
        *b = _mm512_xor_si512(*b, key);
    }
    for r in 1..k.rounds {
        let key = _mm512_broadcast_i32x4(k.rk[r]);
        for b in x.iter_mut() {
            *b = _mm512_aesenc_epi128(*b, key);
        }
    }
    let key = _mm512_broadcast_i32x4(k.rk[k.rounds]);
    for b in x.iter_mut() {
        *b = _mm512_aesenclast_epi128(*b, key);
    }
}

/// The XOR of a register's four 128-bit lanes.
#[inline(always)]
unsafe fn lanes(v: __m512i) -> __m128i {
    let h = _mm256_xor_si256(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
    _mm_xor_si128(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h))
}

/// Counter blocks, four to a register.
struct Counters {
    /// The next four, byte-swapped (the counter in each lane's low 32
    /// bits: inc32 is a lane add, as in the narrow `ctr`).
    ctr: __m512i,
}

impl Counters {
    /// J0 + 1 .. J0 + 4 first.
    #[inline(always)]
    unsafe fn new(j: __m128i) -> Counters {
        let first = _mm512_set_epi32(0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1);
        Counters { ctr: _mm512_add_epi32(_mm512_broadcast_i32x4(unsafe { bswap(j) }), first) }
    }

    /// The next four counter blocks.
    #[inline(always)]
    unsafe fn next(&mut self) -> __m512i {
        let c = unsafe { bswap4(self.ctr) };
        self.ctr = _mm512_add_epi32(self.ctr, _mm512_broadcast_i32x4(_mm_set_epi32(0, 0, 0, 4)));
        c
    }
}

/// Unreduced sum of four lanes' products.
struct Acc4 {
    lo: __m512i,
    mid: __m512i,
    hi: __m512i,
}

impl Acc4 {
    #[inline(always)]
    unsafe fn new() -> Acc4 {
        let z = _mm512_setzero_si512();
        Acc4 { lo: z, mid: z, hi: z }
    }

    /// Adds `a * b` lane by lane (as the narrow `mul_acc`).
    #[inline(always)]
    unsafe fn mul(&mut self, a: __m512i, b: __m512i) {
        self.lo = _mm512_xor_si512(self.lo, _mm512_clmulepi64_epi128(a, b, 0x00));
        self.hi = _mm512_xor_si512(self.hi, _mm512_clmulepi64_epi128(a, b, 0x11));
        let m = _mm512_xor_si512(_mm512_clmulepi64_epi128(a, b, 0x10), _mm512_clmulepi64_epi128(a, b, 0x01));
        self.mid = _mm512_xor_si512(self.mid, m);
    }

    /// The four lanes summed, unreduced.
    #[inline(always)]
    unsafe fn fold(self) -> Acc {
        unsafe { Acc { lo: lanes(self.lo), mid: lanes(self.mid), hi: lanes(self.hi) } }
    }
}

/// Where GHASH stands: the unreduced sum of the current group's products,
/// and the state before the group.
struct Hash {
    acc: Acc4,
    x: __m128i,
    /// Blocks of ciphertext in the whole buffer.
    blocks: usize,
    /// The AAD's one block (an AAD of 1..=16 bytes: ESP's 8 or 12),
    /// hashed with the first group; `None` when there is none or it was
    /// hashed ahead into `x` (a longer one).
    aad: Option<__m128i>,
    /// The lengths block, hashed with the last group.
    len: __m128i,
}

impl Hash {
    /// Hashes the ciphertext registers `c` (four blocks each, the first
    /// at block `b0`, a multiple of [`STEP`]). Ciphertext blocks are
    /// hashed in groups of [`GROUP`] from the buffer's start, the last
    /// group shorter; the first group also takes the AAD's block before
    /// its first block, the last one the lengths block after its last.
    /// Of a group of `t` blocks, its `p`-th (from 0) is multiplied by
    /// H^(t - p) and the state before it by H^t; the sum is reduced once,
    /// when the group's last step is in. So a whole ESP packet of up to
    /// 64 blocks (1024 bytes) is hashed with one reduction.
    #[inline(always)]
    unsafe fn step(&mut self, k: &Keys, c: &[__m512i], b0: usize) {
        let g0 = b0 / GROUP * GROUP;
        let n = GROUP.min(self.blocks - g0);
        let before = usize::from(g0 == 0 && self.aad.is_some());
        let after = usize::from(g0 + n == self.blocks);
        let t = before + n + after;
        for (i, c) in c.iter().enumerate() {
            unsafe { self.acc.mul(bswap4(*c), powers(k, POWERS - t + before + (b0 - g0) + 4 * i)) };
        }
        if (b0 + STEP).min(self.blocks) == g0 + n {
            let mut acc = unsafe { core::mem::replace(&mut self.acc, Acc4::new()).fold() };
            let mut x = self.x;
            if let (1, Some(a)) = (before, self.aad) {
                x = _mm_xor_si128(x, a);
            }
            unsafe { mul_acc(&mut acc, x, k.hw[POWERS - t]) };
            if after == 1 {
                unsafe { mul_acc(&mut acc, self.len, k.hw[POWERS - 1]) };
            }
            self.x = unsafe { reduce(acc) };
        }
    }
}

/// CTR over `buf` from counter J0 + 1 and GHASH over the ciphertext: the
/// bytes written (`OPEN` false: sealing) or read (`OPEN` true: opening),
/// between what [`start`] hashed and the lengths block. Returns the
/// final GHASH state; with `HASH` false, CTR only (and `start.x`).
#[inline(always)]
unsafe fn ctr_ghash<const OPEN: bool, const HASH: bool>(k: &Keys, j: __m128i, start: Start, buf: &mut [u8]) -> __m128i {
    let be = |bytes: usize| ((bytes as u64) * 8).swap_bytes() as i64;
    let len = unsafe { bswap(_mm_set_epi64x(be(buf.len()), be(start.aad_len))) };
    if buf.is_empty() {
        let mut x = start.x;
        if let Some(a) = start.aad {
            x = unsafe { gfmul(_mm_xor_si128(x, a), k.hp[0]) };
        }
        return unsafe { gfmul(_mm_xor_si128(x, len), k.hp[0]) };
    }
    let mut ctr = unsafe { Counters::new(j) };
    let mut hash = Hash { acc: unsafe { Acc4::new() }, x: start.x, blocks: buf.len().div_ceil(16), aad: start.aad, len };
    let mut at = 0;
    // Whole steps while more than one step is left: the last (1..=256
    // bytes) goes below, masked. Each step's ciphertext is hashed during
    // the next step's AES rounds (when sealing, it exists only once its
    // own rounds are done: hashing it at once left the AES unit waiting).
    let mut held: Option<([__m512i; 4], usize)> = None;
    while buf.len() - at > STEP * 16 {
        let mut ks = unsafe { [ctr.next(), ctr.next(), ctr.next(), ctr.next()] };
        unsafe { encrypt4(k, &mut ks) };
        if let (true, Some((c, b0))) = (HASH, held) {
            unsafe { hash.step(k, &c, b0) };
        }
        let step: &mut [u8; STEP * 16] = (&mut buf[at..at + STEP * 16]).try_into().expect("one step");
        let mut c = [_mm512_setzero_si512(); 4];
        for ((chunk, key), c) in step.chunks_exact_mut(64).zip(ks).zip(&mut c) {
            let chunk: &mut [u8; 64] = chunk.try_into().expect("64 bytes");
            let data = unsafe { load(chunk) };
            let out = _mm512_xor_si512(data, key);
            unsafe { store(chunk, out) };
            *c = if OPEN { data } else { out };
        }
        held = Some((c, at / 16));
        at += STEP * 16;
    }
    // The last 1..=16 blocks, in 1..=4 registers.
    let rest = &mut buf[at..];
    let regs = rest.len().div_ceil(64);
    let mut ks = [_mm512_setzero_si512(); 4];
    for key in &mut ks[..regs] {
        *key = unsafe { ctr.next() };
    }
    macro_rules! width {
        ($w:literal) => {{
            let mut v: [__m512i; $w] = ks[..$w].try_into().expect("width");
            unsafe { encrypt4(k, &mut v) };
            ks[..$w].copy_from_slice(&v);
        }};
    }
    match regs {
        1 => width!(1),
        2 => width!(2),
        3 => width!(3),
        _ => width!(4),
    }
    if let (true, Some((c, b0))) = (HASH, held) {
        unsafe { hash.step(k, &c, b0) };
    }
    let mut c = [_mm512_setzero_si512(); 4];
    for ((chunk, key), c) in rest.chunks_mut(64).zip(ks).zip(&mut c) {
        let data = unsafe { load_part(chunk) };
        // Zero past the data (the masked load zeroed the input there; the
        // keystream is not): the partial block is hashed zero-padded.
        let out = _mm512_maskz_mov_epi8(first(chunk.len()), _mm512_xor_si512(data, key));
        unsafe { store_part(chunk, out) };
        *c = if OPEN { data } else { out };
    }
    if HASH {
        unsafe { hash.step(k, &c[..regs], at / 16) };
    }
    hash.x
}

/// What comes before the ciphertext: E(J0) (the tag mask), and the AAD
/// as the GHASH state (an AAD over 16 bytes, hashed ahead) or as one
/// block for the first group to hash.
#[derive(Clone, Copy)]
pub(super) struct Start {
    mask: __m128i,
    pub(super) x: __m128i,
    pub(super) aad: Option<__m128i>,
    pub(super) aad_len: usize,
}

#[inline(always)]
pub(super) unsafe fn start(k: &Keys, j: __m128i, aad: &[u8]) -> Start {
    let mut mask = [j];
    unsafe { encrypt(k, &mut mask) };
    let z = _mm_setzero_si128();
    let (x, block) = match aad.len() {
        0 => (z, None),
        1..=16 => (z, Some(unsafe { bswap(load_padded(aad)) })),
        _ => {
            let mut g = Ghash { hp: &k.hp, x: z, pending: [z; WIDE], n: 0 };
            unsafe { g.bytes(aad) };
            unsafe { g.fold() };
            (g.x, None)
        }
    };
    Start { mask: mask[0], x, aad: block, aad_len: aad.len() }
}

/// The tag: the final GHASH state plus E(J0) (SP 800-38D section 7.1
/// step 6).
#[inline(always)]
pub(super) unsafe fn tag(s: &Start, x: __m128i) -> __m128i {
    _mm_xor_si128(unsafe { bswap(x) }, s.mask)
}

#[target_feature(enable = "avx2,avx512f,avx512bw,vaes,vpclmulqdq,aes,pclmulqdq,ssse3,sse4.1")]
pub(super) unsafe fn seal(k: &Keys, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], out: &mut [u8; TAG_LEN]) {
    let j = unsafe { j0(nonce) };
    let s = unsafe { start(k, j, aad) };
    let x = unsafe { ctr_ghash::<false, true>(k, j, s, buf) };
    // SAFETY: 16 writable bytes; no alignment requirement.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), tag(&s, x)) };
}

#[target_feature(enable = "avx2,avx512f,avx512bw,vaes,vpclmulqdq,aes,pclmulqdq,ssse3,sse4.1")]
pub(super) unsafe fn open(k: &Keys, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &mut [u8]) -> Result<(), OpenError> {
    let (ct, got) = sealed.split_at_mut(sealed.len() - TAG_LEN);
    let j = unsafe { j0(nonce) };
    let s = unsafe { start(k, j, aad) };
    let x = unsafe { ctr_ghash::<true, true>(k, j, s, ct) };
    let mut want = [0u8; TAG_LEN];
    // SAFETY: 16 writable bytes; no alignment requirement.
    unsafe { _mm_storeu_si128(want.as_mut_ptr().cast(), tag(&s, x)) };
    if same_tag(&want, got) {
        return Ok(());
    }
    // The same keystream again gives the ciphertext back.
    let _ = unsafe { ctr_ghash::<false, false>(k, j, s, ct) };
    Err(OpenError)
}
