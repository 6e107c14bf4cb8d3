//! The 256-bit kernels, for buffers of [`SHORT`] bytes and more on CPUs
//! with VAES and VPCLMULQDQ but no AVX-512 (AMD Zen 3, Intel client cores from Alder Lake): two
//! 128-bit blocks per 256-bit register, sixteen blocks per step in eight
//! registers (Zen 3 runs two 256-bit VAESENCs a cycle at a latency of 4:
//! eight chains keep it busy). Otherwise the wide kernels' design
//! (`wide.rs`), of which this is the same arithmetic at half the width:
//! each step's ciphertext hashed during the next step's rounds, groups of
//! 64 blocks summed unreduced against the powers H^66..H^1 and reduced
//! once, the AAD's block with the first group and the lengths block with
//! the last. AVX2 has no byte-masked loads and stores: the last step's
//! partial register goes through the narrow kernels' `load_padded` and
//! `store_partial` (general registers, no byte past the buffer touched).

// SAFETY (for every `unsafe` block below without a line of its own): as
// in the parent module, the helpers are `unsafe fn` only because they
// execute AVX, AVX2, VAES and VPCLMULQDQ instructions, reached only from
// `seal` and `open`, which `Keys` calls only when `available()` said the
// CPU has them (checked by `best_kernel` when the `Keys` was made, or by
// `runs_here` in `Keys::on`). Memory is touched only
// by `load`/`store` (32 bytes within a checked slice), the parent's
// `load16`/`store16`/`load_padded`/`store_partial` (within checked
// slices) and `powers` (two entries within `Keys::hw`).
use core::arch::x86_64::*;

use super::wide::{start, tag, Start, GROUP, POWERS};
use super::{bswap, gfmul, j0, load_padded, mul_acc, reduce, same_tag, store16, store_partial, Acc, Keys};
use crate::{OpenError, NONCE_LEN, TAG_LEN};

/// Registers per step.
const REGS: usize = 8;

/// Blocks per step.
const STEP: usize = 2 * REGS;

/// Shorter buffers go to the narrow kernels, which encrypt E(J0) in the
/// same batch as the counter blocks: on Zen 3, AES-256, 64 bytes sealed in
/// ~53 ns there against ~70 here, 128 bytes in ~100 against ~85.
pub(super) const SHORT: usize = 128;

/// Whether the CPU has what these kernels use, besides the parent's.
pub fn available() -> bool {
    super::available()
        && std::is_x86_feature_detected!("avx")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("vaes")
        && std::is_x86_feature_detected!("vpclmulqdq")
}

#[inline(always)]
unsafe fn load(b: &[u8; 32]) -> __m256i {
    // SAFETY: 32 readable bytes; no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[inline(always)]
unsafe fn store(b: &mut [u8; 32], v: __m256i) {
    // SAFETY: 32 writable bytes; no alignment requirement.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

/// Up to 32 bytes, zero beyond `b.len()`.
#[inline(always)]
unsafe fn load_part(b: &[u8]) -> __m256i {
    if let Ok(full) = <&[u8; 32]>::try_from(b) {
        return unsafe { load(full) };
    }
    let (lo, hi) = b.split_at(b.len().min(16));
    unsafe { _mm256_set_m128i(load_padded(hi), load_padded(lo)) }
}

/// The first `b.len()` (at most 32) bytes of `v` into `b`.
#[inline(always)]
unsafe fn store_part(b: &mut [u8], v: __m256i) {
    if let Ok(full) = <&mut [u8; 32]>::try_from(&mut *b) {
        return unsafe { store(full, v) };
    }
    let lo = _mm256_castsi256_si128(v);
    if b.len() <= 16 {
        return unsafe { store_partial(b, lo) };
    }
    let (first, rest) = b.split_at_mut(16);
    unsafe { store16(first.try_into().expect("16 bytes"), lo) };
    unsafe { store_partial(rest, _mm256_extracti128_si256::<1>(v)) };
}

/// `v` with its first `n` (at most 32) bytes kept and the rest zeroed.
#[inline(always)]
unsafe fn keep_first(v: __m256i, n: usize) -> __m256i {
    /// 32 bytes of ones, then 32 of zeros: the 32 from `32 - n` on are
    /// `n` ones and then zeros.
    static ONES: [u8; 64] = {
        let mut b = [0u8; 64];
        let mut i = 0;
        while i < 32 {
            b[i] = 0xff;
            i += 1;
        }
        b
    };
    let n = n.min(32);
    let mask: &[u8; 32] = ONES[32 - n..64 - n].try_into().expect("32 bytes");
    _mm256_and_si256(v, unsafe { load(mask) })
}

/// Each 128-bit lane byte-swapped.
#[inline(always)]
unsafe fn bswap2(x: __m256i) -> __m256i {
    let rev = _mm256_broadcastsi128_si256(_mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    _mm256_shuffle_epi8(x, rev)
}

/// H^(POWERS - from) and H^(POWERS - 1 - from), from `Keys::hw`.
#[inline(always)]
unsafe fn powers(k: &Keys, from: usize) -> __m256i {
    let two: &[__m128i; 2] = k.hw[from..from + 2].try_into().expect("two powers");
    // SAFETY: two `__m128i` in a row are 32 readable bytes.
    unsafe { _mm256_loadu_si256(two.as_ptr().cast()) }
}

/// Encrypts the registers in place (two blocks each), rounds interleaved.
#[inline(always)]
unsafe fn encrypt2<const N: usize>(k: &Keys, x: &mut [__m256i; N]) {
    let key = _mm256_broadcastsi128_si256(k.rk[0]);
    for b in x.iter_mut() {
        *b = _mm256_xor_si256(*b, key);
    }
    for r in 1..k.rounds {
        let key = _mm256_broadcastsi128_si256(k.rk[r]);
        for b in x.iter_mut() {
            *b = _mm256_aesenc_epi128(*b, key);
        }
    }
    let key = _mm256_broadcastsi128_si256(k.rk[k.rounds]);
    for b in x.iter_mut() {
        *b = _mm256_aesenclast_epi128(*b, key);
    }
}

/// The XOR of a register's two 128-bit lanes.
#[inline(always)]
unsafe fn lanes(v: __m256i) -> __m128i {
    _mm_xor_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v))
}

/// Counter blocks, two to a register.
struct Counters {
    /// The next two, byte-swapped (the counter in each lane's low 32
    /// bits: inc32 is a lane add).
    ctr: __m256i,
}

impl Counters {
    /// J0 + 1 and J0 + 2 first.
    #[inline(always)]
    unsafe fn new(j: __m128i) -> Counters {
        let first = _mm256_set_epi32(0, 0, 0, 2, 0, 0, 0, 1);
        Counters { ctr: _mm256_add_epi32(_mm256_broadcastsi128_si256(unsafe { bswap(j) }), first) }
    }

    /// The next two counter blocks.
    #[inline(always)]
    unsafe fn next(&mut self) -> __m256i {
        let c = unsafe { bswap2(self.ctr) };
        self.ctr = _mm256_add_epi32(self.ctr, _mm256_set_epi32(0, 0, 0, 2, 0, 0, 0, 2));
        c
    }
}

/// Unreduced sum of two lanes' products.
struct Acc2 {
    lo: __m256i,
    mid: __m256i,
    hi: __m256i,
}

impl Acc2 {
    #[inline(always)]
    unsafe fn new() -> Acc2 {
        let z = _mm256_setzero_si256();
        Acc2 { lo: z, mid: z, hi: z }
    }

    /// Adds `a * b` lane by lane (as the narrow `mul_acc`).
    #[inline(always)]
    unsafe fn mul(&mut self, a: __m256i, b: __m256i) {
        self.lo = _mm256_xor_si256(self.lo, _mm256_clmulepi64_epi128(a, b, 0x00));
        self.hi = _mm256_xor_si256(self.hi, _mm256_clmulepi64_epi128(a, b, 0x11));
        let m = _mm256_xor_si256(_mm256_clmulepi64_epi128(a, b, 0x10), _mm256_clmulepi64_epi128(a, b, 0x01));
        self.mid = _mm256_xor_si256(self.mid, m);
    }

    /// The two lanes summed, unreduced.
    #[inline(always)]
    unsafe fn fold(self) -> Acc {
        unsafe { Acc { lo: lanes(self.lo), mid: lanes(self.mid), hi: lanes(self.hi) } }
    }
}

/// Where GHASH stands (as the wide kernels' `Hash`).
struct Hash {
    acc: Acc2,
    x: __m128i,
    blocks: usize,
    aad: Option<__m128i>,
    len: __m128i,
}

impl Hash {
    /// Hashes the ciphertext registers `c` (two blocks each, the first at
    /// block `b0`, a multiple of [`STEP`]), as the wide kernels'
    /// `Hash::step`: groups of [`GROUP`] blocks, each block times its
    /// power, one reduction per group.
    #[inline(always)]
    unsafe fn step(&mut self, k: &Keys, c: &[__m256i], b0: usize) {
        let g0 = b0 / GROUP * GROUP;
        let n = GROUP.min(self.blocks - g0);
        let before = usize::from(g0 == 0 && self.aad.is_some());
        let after = usize::from(g0 + n == self.blocks);
        let t = before + n + after;
        for (i, c) in c.iter().enumerate() {
            unsafe { self.acc.mul(bswap2(*c), powers(k, POWERS - t + before + (b0 - g0) + 2 * i)) };
        }
        if (b0 + STEP).min(self.blocks) == g0 + n {
            let mut acc = unsafe { core::mem::replace(&mut self.acc, Acc2::new()).fold() };
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

/// CTR over `buf` from counter J0 + 1 and GHASH over the ciphertext, as
/// the wide kernels' `ctr_ghash`.
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
    let mut hash = Hash { acc: unsafe { Acc2::new() }, x: start.x, blocks: buf.len().div_ceil(16), aad: start.aad, len };
    let mut at = 0;
    let mut held: Option<([__m256i; REGS], usize)> = None;
    while buf.len() - at > STEP * 16 {
        let mut ks = [_mm256_setzero_si256(); REGS];
        for key in &mut ks {
            *key = unsafe { ctr.next() };
        }
        unsafe { encrypt2(k, &mut ks) };
        if let (true, Some((c, b0))) = (HASH, held) {
            unsafe { hash.step(k, &c, b0) };
        }
        let step: &mut [u8; STEP * 16] = (&mut buf[at..at + STEP * 16]).try_into().expect("one step");
        let mut c = [_mm256_setzero_si256(); REGS];
        for ((chunk, key), c) in step.chunks_exact_mut(32).zip(ks).zip(&mut c) {
            let chunk: &mut [u8; 32] = chunk.try_into().expect("32 bytes");
            let data = unsafe { load(chunk) };
            let out = _mm256_xor_si256(data, key);
            unsafe { store(chunk, out) };
            *c = if OPEN { data } else { out };
        }
        held = Some((c, at / 16));
        at += STEP * 16;
    }
    // The last 1..=16 blocks, in 1..=8 registers.
    let rest = &mut buf[at..];
    let regs = rest.len().div_ceil(32);
    let mut ks = [_mm256_setzero_si256(); REGS];
    for key in &mut ks[..regs] {
        *key = unsafe { ctr.next() };
    }
    macro_rules! width {
        ($w:literal) => {{
            let mut v: [__m256i; $w] = ks[..$w].try_into().expect("width");
            unsafe { encrypt2(k, &mut v) };
            ks[..$w].copy_from_slice(&v);
        }};
    }
    match regs {
        1 => width!(1),
        2 => width!(2),
        3..=4 => width!(4),
        5..=6 => width!(6),
        _ => width!(8),
    }
    if let (true, Some((c, b0))) = (HASH, held) {
        unsafe { hash.step(k, &c, b0) };
    }
    let mut c = [_mm256_setzero_si256(); REGS];
    for ((chunk, key), c) in rest.chunks_mut(32).zip(ks).zip(&mut c) {
        let data = unsafe { load_part(chunk) };
        // Zero past the data (the partial load zeroed the input there;
        // the keystream is not): the partial block is hashed zero-padded.
        let out = unsafe { keep_first(_mm256_xor_si256(data, key), chunk.len()) };
        unsafe { store_part(chunk, out) };
        *c = if OPEN { data } else { out };
    }
    if HASH {
        unsafe { hash.step(k, &c[..regs], at / 16) };
    }
    hash.x
}

#[target_feature(enable = "avx,avx2,vaes,vpclmulqdq,aes,pclmulqdq,ssse3,sse4.1")]
pub(super) unsafe fn seal(k: &Keys, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], out: &mut [u8; TAG_LEN]) {
    let j = unsafe { j0(nonce) };
    let s = unsafe { start(k, j, aad) };
    let x = unsafe { ctr_ghash::<false, true>(k, j, s, buf) };
    unsafe { store16(out, tag(&s, x)) };
}

#[target_feature(enable = "avx,avx2,vaes,vpclmulqdq,aes,pclmulqdq,ssse3,sse4.1")]
pub(super) unsafe fn open(k: &Keys, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &mut [u8]) -> Result<(), OpenError> {
    let (ct, got) = sealed.split_at_mut(sealed.len() - TAG_LEN);
    let j = unsafe { j0(nonce) };
    let s = unsafe { start(k, j, aad) };
    let x = unsafe { ctr_ghash::<true, true>(k, j, s, ct) };
    let mut want = [0u8; TAG_LEN];
    unsafe { store16(&mut want, tag(&s, x)) };
    if same_tag(&want, got) {
        return Ok(());
    }
    // The same keystream again gives the ciphertext back.
    let _ = unsafe { ctr_ghash::<false, false>(k, j, s, ct) };
    Err(OpenError)
}
