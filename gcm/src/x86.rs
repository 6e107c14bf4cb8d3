//! The x86-64 kernels. Blocks are kept byte-reflected for GHASH (the
//! representation of Intel's carry-less multiplication white paper, Gueron
//! and Kounavis, 2014 revision, algorithm 5): each 16-byte block is byte
//! swapped before it is multiplied, and the 256-bit product is shifted left
//! by one bit and reduced modulo x^128 + x^7 + x^2 + x + 1. Shift and
//! reduction are linear, so up to eight products are summed first and
//! reduced once (aggregated reduction, the same paper's section on
//! "aggregated reduction").
//!
//! The entry points (`expand`, `seal`, `open`, and the VAES kernels'
//! `wide::seal`, `wide::open`, `ymm::seal`, `ymm::open`) are
//! `#[target_feature]`; every helper is `#[inline(always)]` into them, so
//! it is compiled with their features and no vector crosses a call. The
//! only way in is through [`Keys`], which exists only once [`available`]
//! said yes, and which goes to the VAES kernels only where
//! `wide::available()` or `ymm::available()` also said yes.

// SAFETY (for every `unsafe` block below without a line of its own): the
// helpers are `unsafe fn` only because they execute AES-NI, PCLMULQDQ,
// SSSE3 and SSE4.1 instructions. They are reached only from `expand`,
// `seal` and `open`, which are reached only through a `Keys`, and a
// `Keys` is made only after `available()` found those instructions on
// this CPU. Memory is touched only by `load16`, `store16` (16-byte arrays
// borrowed from checked slices) and safe slice code.
use core::arch::x86_64::*;

use crate::{Kernel, OpenError, NONCE_LEN, TAG_LEN};

mod wide;
mod ymm;

/// Whether the CPU has every instruction used here.
pub fn available() -> bool {
    std::is_x86_feature_detected!("aes")
        && std::is_x86_feature_detected!("pclmulqdq")
        && std::is_x86_feature_detected!("ssse3")
        && std::is_x86_feature_detected!("sse4.1")
}

/// Whether the CPU runs one of the VAES kernels (`wide` or `ymm`).
pub fn wide_available() -> bool {
    best_kernel() != Kernel::AesNi
}

/// The widest kernels this CPU runs (given `available()`).
pub fn best_kernel() -> Kernel {
    if wide::available() {
        Kernel::Vaes512
    } else if ymm::available() {
        Kernel::Vaes256
    } else {
        Kernel::AesNi
    }
}

/// Whether this CPU runs `kernel` (given `available()`).
pub fn runs_here(kernel: Kernel) -> bool {
    match kernel {
        Kernel::AesNi => true,
        Kernel::Vaes256 => ymm::available(),
        Kernel::Vaes512 => wide::available(),
    }
}

/// Most blocks encrypted, and GHASH products summed, at once.
const WIDE: usize = 8;

/// Round keys and the GHASH key's powers.
#[derive(Clone, Copy)]
pub struct Keys {
    rk: [__m128i; 15],
    /// 10 (AES-128) or 14 (AES-256).
    rounds: usize,
    /// H^1..H^8, byte-reflected.
    hp: [__m128i; WIDE],
    /// H^66 down to H^1 (`wide::POWERS`), byte-reflected, then four
    /// zeros: the 512-bit kernels load four consecutive powers from any of
    /// the first 66, the 256-bit ones two.
    hw: [__m128i; wide::POWERS + 4],
    /// The kernels in use, which the CPU runs (`runs_here`).
    kernel: Kernel,
}

impl Keys {
    pub fn new(key: &[u8]) -> Option<Keys> {
        if !(key.len() == 16 || key.len() == 32) || !available() {
            return None;
        }
        // SAFETY: the CPU has the instructions (checked just above); the
        // key is 16 or 32 bytes.
        Some(unsafe { expand(key) })
    }

    pub fn key_bits(&self) -> usize {
        if self.rounds == 10 {
            128
        } else {
            256
        }
    }

    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &mut [u8; TAG_LEN]) {
        // SAFETY: `kernel` is only ever one that `runs_here`, and a
        // `Keys` exists only where `available()` said yes.
        match self.kernel_for(buf.len()) {
            Kernel::Vaes512 => unsafe { wide::seal(self, nonce, aad, buf, tag) },
            Kernel::Vaes256 => unsafe { ymm::seal(self, nonce, aad, buf, tag) },
            Kernel::AesNi => unsafe { seal(self, nonce, aad, buf, tag) },
        }
    }

    /// `sealed` holds at least `TAG_LEN` bytes (checked by the caller).
    pub fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &mut [u8]) -> Result<(), OpenError> {
        // SAFETY: as in `seal`.
        match self.kernel_for(sealed.len() - TAG_LEN) {
            Kernel::Vaes512 => unsafe { wide::open(self, nonce, aad, sealed) },
            Kernel::Vaes256 => unsafe { ymm::open(self, nonce, aad, sealed) },
            Kernel::AesNi => unsafe { open(self, nonce, aad, sealed) },
        }
    }

    /// The kernels in use.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The kernels that seal or open `len` bytes: the 256-bit ones leave
    /// buffers under `ymm::SHORT` to the narrow ones.
    #[inline(always)]
    pub fn kernel_for(&self, len: usize) -> Kernel {
        match self.kernel {
            Kernel::Vaes256 if len < ymm::SHORT => Kernel::AesNi,
            k => k,
        }
    }

    /// The same key on other kernels, if this CPU runs them.
    pub fn on(&self, kernel: Kernel) -> Option<Keys> {
        runs_here(kernel).then_some(Keys { kernel, ..*self })
    }
}

/// Loads 16 bytes.
#[inline(always)]
unsafe fn load16(b: &[u8; 16]) -> __m128i {
    // SAFETY: 16 readable bytes; loadu has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

/// Stores 16 bytes.
#[inline(always)]
unsafe fn store16(b: &mut [u8; 16], v: __m128i) {
    // SAFETY: 16 writable bytes; storeu has no alignment requirement.
    unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
}

/// Up to 16 bytes, zero-padded, through general registers: a copy into a
/// stack block cost a `memcpy` call and a stalled load of what it stored
/// (a third of sealing 52 bytes).
#[inline(always)]
unsafe fn load_padded(b: &[u8]) -> __m128i {
    if let Ok(full) = <&[u8; 16]>::try_from(b) {
        return unsafe { load16(full) };
    }
    let (lo, hi) = b.split_at(b.len().min(8));
    _mm_set_epi64x(read_le(hi) as i64, read_le(lo) as i64)
}

/// Up to 8 bytes as a little-endian integer, in at most three loads
/// (two overlapping ones from 4 bytes up).
#[inline(always)]
fn read_le(b: &[u8]) -> u64 {
    let n = b.len();
    match n {
        0 => 0,
        1..=3 => u64::from(b[0]) | u64::from(b[n / 2]) << (8 * (n / 2)) | u64::from(b[n - 1]) << (8 * (n - 1)),
        4..=7 => {
            let first = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
            let last = u32::from_le_bytes(b[n - 4..].try_into().expect("4 bytes"));
            u64::from(first) | u64::from(last) << (8 * (n - 4))
        }
        _ => u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
    }
}

/// The low `b.len()` (up to 8) bytes of `v` into `b`, the reverse of
/// [`read_le`]: overlapping stores write the same bytes twice.
#[inline(always)]
fn write_le(b: &mut [u8], v: u64) {
    let n = b.len();
    match n {
        0 => {}
        1..=3 => {
            b[0] = v as u8;
            b[n / 2] = (v >> (8 * (n / 2))) as u8;
            b[n - 1] = (v >> (8 * (n - 1))) as u8;
        }
        4..=7 => {
            b[..4].copy_from_slice(&(v as u32).to_le_bytes());
            b[n - 4..].copy_from_slice(&((v >> (8 * (n - 4))) as u32).to_le_bytes());
        }
        _ => b[..8].copy_from_slice(&v.to_le_bytes()),
    }
}

/// The first `b.len()` (at most 16) bytes of `v` into `b`.
#[inline(always)]
unsafe fn store_partial(b: &mut [u8], v: __m128i) {
    let (lo, hi) = b.split_at_mut(b.len().min(8));
    write_le(lo, _mm_cvtsi128_si64(v) as u64);
    write_le(hi, _mm_extract_epi64::<1>(v) as u64);
}

#[inline(always)]
unsafe fn bswap(x: __m128i) -> __m128i {
    _mm_shuffle_epi8(x, _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
}

/// AES-128 key expansion step (FIPS 197 section 5.2, with AESKEYGENASSIST).
#[inline(always)]
unsafe fn step128<const RCON: i32>(t1: __m128i) -> __m128i {
    let t2 = _mm_shuffle_epi32(_mm_aeskeygenassist_si128(t1, RCON), 0xff);
    spread(t1, t2)
}

/// `t ^ t<<32 ^ t<<64 ^ t<<96 ^ w`: a key expansion step's running XOR.
#[inline(always)]
unsafe fn spread(mut t: __m128i, w: __m128i) -> __m128i {
    let mut s = _mm_slli_si128(t, 4);
    t = _mm_xor_si128(t, s);
    s = _mm_slli_si128(s, 4);
    t = _mm_xor_si128(t, s);
    s = _mm_slli_si128(s, 4);
    t = _mm_xor_si128(t, s);
    _mm_xor_si128(t, w)
}

/// AES-256 key expansion: the even round key of step `RCON`.
#[inline(always)]
unsafe fn step256_even<const RCON: i32>(t1: __m128i, t3: __m128i) -> __m128i {
    spread(t1, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(t3, RCON), 0xff))
}

/// AES-256 key expansion: the odd round key (SubWord without rotation).
#[inline(always)]
unsafe fn step256_odd(t1: __m128i, t3: __m128i) -> __m128i {
    spread(t3, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(t1, 0), 0xaa))
}

#[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
unsafe fn expand(key: &[u8]) -> Keys {
    let z = _mm_setzero_si128();
    let mut rk = [z; 15];
    let rounds = if key.len() == 16 {
        let k: &[u8; 16] = key.try_into().expect("16 bytes");
        rk[0] = unsafe { load16(k) };
        rk[1] = unsafe { step128::<0x01>(rk[0]) };
        rk[2] = unsafe { step128::<0x02>(rk[1]) };
        rk[3] = unsafe { step128::<0x04>(rk[2]) };
        rk[4] = unsafe { step128::<0x08>(rk[3]) };
        rk[5] = unsafe { step128::<0x10>(rk[4]) };
        rk[6] = unsafe { step128::<0x20>(rk[5]) };
        rk[7] = unsafe { step128::<0x40>(rk[6]) };
        rk[8] = unsafe { step128::<0x80>(rk[7]) };
        rk[9] = unsafe { step128::<0x1b>(rk[8]) };
        rk[10] = unsafe { step128::<0x36>(rk[9]) };
        10
    } else {
        let (a, b) = key.split_at(16);
        rk[0] = unsafe { load16(a.try_into().expect("16 bytes")) };
        rk[1] = unsafe { load16(b.try_into().expect("16 bytes")) };
        rk[2] = unsafe { step256_even::<0x01>(rk[0], rk[1]) };
        rk[3] = unsafe { step256_odd(rk[2], rk[1]) };
        rk[4] = unsafe { step256_even::<0x02>(rk[2], rk[3]) };
        rk[5] = unsafe { step256_odd(rk[4], rk[3]) };
        rk[6] = unsafe { step256_even::<0x04>(rk[4], rk[5]) };
        rk[7] = unsafe { step256_odd(rk[6], rk[5]) };
        rk[8] = unsafe { step256_even::<0x08>(rk[6], rk[7]) };
        rk[9] = unsafe { step256_odd(rk[8], rk[7]) };
        rk[10] = unsafe { step256_even::<0x10>(rk[8], rk[9]) };
        rk[11] = unsafe { step256_odd(rk[10], rk[9]) };
        rk[12] = unsafe { step256_even::<0x20>(rk[10], rk[11]) };
        rk[13] = unsafe { step256_odd(rk[12], rk[11]) };
        rk[14] = unsafe { step256_even::<0x40>(rk[12], rk[13]) };
        14
    };
    let mut k = Keys { rk, rounds, hp: [z; WIDE], hw: [z; wide::POWERS + 4], kernel: best_kernel() };
    let mut h = [z];
    unsafe { encrypt(&k, &mut h) };
    let h = unsafe { bswap(h[0]) };
    let mut p = h;
    for i in 0..wide::POWERS {
        if i < WIDE {
            k.hp[i] = p;
        }
        k.hw[wide::POWERS - 1 - i] = p;
        p = unsafe { gfmul(p, h) };
    }
    k
}

/// Encrypts the blocks in place, interleaved (independent AESENC chains
/// keep the AES unit busy).
#[inline(always)]
unsafe fn encrypt<const N: usize>(k: &Keys, x: &mut [__m128i; N]) {
    for b in x.iter_mut() {
        *b = _mm_xor_si128(*b, k.rk[0]);
    }
    for r in 1..k.rounds {
        let key = k.rk[r];
        for b in x.iter_mut() {
            *b = _mm_aesenc_si128(*b, key);
        }
    }
    let last = k.rk[k.rounds];
    for b in x.iter_mut() {
        *b = _mm_aesenclast_si128(*b, last);
    }
}

/// Unreduced sum of carry-less products (low, middle and high 128 bits).
#[derive(Clone, Copy)]
struct Acc {
    lo: __m128i,
    mid: __m128i,
    hi: __m128i,
}

#[inline(always)]
unsafe fn mul_acc(acc: &mut Acc, a: __m128i, b: __m128i) {
    acc.lo = _mm_xor_si128(acc.lo, _mm_clmulepi64_si128(a, b, 0x00));
    acc.hi = _mm_xor_si128(acc.hi, _mm_clmulepi64_si128(a, b, 0x11));
    let m = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10), _mm_clmulepi64_si128(a, b, 0x01));
    acc.mid = _mm_xor_si128(acc.mid, m);
}

/// Shift left by one bit and reduction of a sum of products (the white
/// paper's algorithm 5, after its multiplication).
#[inline(always)]
unsafe fn reduce(acc: Acc) -> __m128i {
    let mut lo = _mm_xor_si128(acc.lo, _mm_slli_si128(acc.mid, 8));
    let mut hi = _mm_xor_si128(acc.hi, _mm_srli_si128(acc.mid, 8));
    // The 256-bit hi:lo shifted left by one.
    let mut c_lo = _mm_srli_epi32(lo, 31);
    let mut c_hi = _mm_srli_epi32(hi, 31);
    lo = _mm_slli_epi32(lo, 1);
    hi = _mm_slli_epi32(hi, 1);
    let carry = _mm_srli_si128(c_lo, 12);
    c_hi = _mm_slli_si128(c_hi, 4);
    c_lo = _mm_slli_si128(c_lo, 4);
    lo = _mm_or_si128(lo, c_lo);
    hi = _mm_or_si128(hi, c_hi);
    hi = _mm_or_si128(hi, carry);
    // First phase of the reduction.
    let mut a = _mm_slli_epi32(lo, 31);
    a = _mm_xor_si128(a, _mm_slli_epi32(lo, 30));
    a = _mm_xor_si128(a, _mm_slli_epi32(lo, 25));
    let b = _mm_srli_si128(a, 4);
    a = _mm_slli_si128(a, 12);
    lo = _mm_xor_si128(lo, a);
    // Second phase.
    let mut c = _mm_srli_epi32(lo, 1);
    c = _mm_xor_si128(c, _mm_srli_epi32(lo, 2));
    c = _mm_xor_si128(c, _mm_srli_epi32(lo, 7));
    c = _mm_xor_si128(c, b);
    lo = _mm_xor_si128(lo, c);
    _mm_xor_si128(hi, lo)
}

#[inline(always)]
unsafe fn gfmul(a: __m128i, b: __m128i) -> __m128i {
    let z = _mm_setzero_si128();
    let mut acc = Acc { lo: z, mid: z, hi: z };
    unsafe { mul_acc(&mut acc, a, b) };
    unsafe { reduce(acc) }
}

/// GHASH over blocks pushed one at a time, multiplied and reduced up to
/// [`WIDE`] at a time: X = (X + B1)H^n + B2 H^(n-1) + ... + Bn H.
struct Ghash<'a> {
    hp: &'a [__m128i; WIDE],
    x: __m128i,
    pending: [__m128i; WIDE],
    n: usize,
}

impl Ghash<'_> {
    #[inline(always)]
    unsafe fn push(&mut self, block: __m128i) {
        self.pending[self.n] = unsafe { bswap(block) };
        self.n += 1;
        if self.n == WIDE {
            unsafe { self.fold() };
        }
    }

    #[inline(always)]
    unsafe fn fold(&mut self) {
        let n = self.n;
        if n == 0 {
            return;
        }
        let z = _mm_setzero_si128();
        let mut acc = Acc { lo: z, mid: z, hi: z };
        unsafe { mul_acc(&mut acc, _mm_xor_si128(self.x, self.pending[0]), self.hp[n - 1]) };
        for i in 1..n {
            unsafe { mul_acc(&mut acc, self.pending[i], self.hp[n - 1 - i]) };
        }
        self.x = unsafe { reduce(acc) };
        self.n = 0;
    }

    /// `b` as blocks, the last zero-padded.
    #[inline(always)]
    unsafe fn bytes(&mut self, b: &[u8]) {
        let mut blocks = b.chunks_exact(16);
        for blk in &mut blocks {
            unsafe { self.push(load16(blk.try_into().expect("16 bytes"))) };
        }
        let rest = blocks.remainder();
        if !rest.is_empty() {
            unsafe { self.push(load_padded(rest)) };
        }
    }
}

/// J0 = nonce || 1 (SP 800-38D section 7.1, 96-bit IV).
#[inline(always)]
unsafe fn j0(nonce: &[u8; NONCE_LEN]) -> __m128i {
    // Through general registers (bytes 0..8, then 8..12 and the counter's
    // big-endian 1 in byte 15): a copy into a 16-byte block and a vector
    // load of it stalled on store forwarding.
    let lo = u64::from_le_bytes(nonce[..8].try_into().expect("8 bytes"));
    let hi = u64::from(u32::from_le_bytes(nonce[8..].try_into().expect("4 bytes"))) | 1 << 56;
    _mm_set_epi64x(hi as i64, lo as i64)
}

/// Encrypts the first `n` of `ks` (`n` <= WIDE) in the narrowest width that
/// holds them.
#[inline(always)]
unsafe fn encrypt_some(k: &Keys, ks: &mut [__m128i; WIDE], n: usize) {
    macro_rules! width {
        ($w:literal) => {{
            let mut v: [__m128i; $w] = ks[..$w].try_into().expect("width");
            unsafe { encrypt(k, &mut v) };
            ks[..$w].copy_from_slice(&v);
        }};
    }
    match n {
        0..=2 => width!(2),
        3..=4 => width!(4),
        5..=6 => width!(6),
        _ => width!(8),
    }
}

/// XORs the CTR keystream (counter blocks from J0 + 1, SP 800-38D section
/// 7.1 step 3) into `buf`; with `with_j0`, also encrypts J0 alongside the
/// first blocks and returns E(J0), the tag mask.
#[inline(always)]
unsafe fn ctr(k: &Keys, nonce: &[u8; NONCE_LEN], buf: &mut [u8], with_j0: bool) -> __m128i {
    let j = unsafe { j0(nonce) };
    // The counter as the low 32-bit lane of the byte-swapped block:
    // incremented by a lane add (inc32 wraps modulo 2^32, as it should).
    let mut counter = unsafe { bswap(j) };
    let one = _mm_set_epi32(0, 0, 0, 1);
    let mut mask = _mm_setzero_si128();
    let mut first = with_j0;
    let mut at = 0;
    while at < buf.len() || first {
        let mut ks = [_mm_setzero_si128(); WIDE];
        let from = usize::from(first);
        if first {
            ks[0] = j;
        }
        let take = (buf.len() - at).div_ceil(16).min(WIDE - from);
        for key in &mut ks[from..from + take] {
            counter = _mm_add_epi32(counter, one);
            *key = unsafe { bswap(counter) };
        }
        unsafe { encrypt_some(k, &mut ks, from + take) };
        if first {
            mask = ks[0];
            first = false;
        }
        at = unsafe { xor_keys(buf, at, &ks[from..from + take]) };
    }
    mask
}

/// XORs keystream blocks into `buf` from `at`; returns where they ended.
#[inline(always)]
unsafe fn xor_keys(buf: &mut [u8], mut at: usize, keys: &[__m128i]) -> usize {
    for key in keys {
        let rest = &mut buf[at..];
        if let Some(full) = rest.first_chunk_mut::<16>() {
            let v = _mm_xor_si128(unsafe { load16(full) }, *key);
            unsafe { store16(full, v) };
            at += 16;
        } else {
            let v = _mm_xor_si128(unsafe { load_padded(rest) }, *key);
            unsafe { store_partial(rest, v) };
            at = buf.len();
        }
    }
    at
}

/// The counter blocks J0, J0 + 1, ... J0 + n - 1 into `ks[..n]`.
#[inline(always)]
unsafe fn counters(nonce: &[u8; NONCE_LEN], ks: &mut [__m128i; WIDE], n: usize) {
    let j = unsafe { j0(nonce) };
    let mut counter = unsafe { bswap(j) };
    let one = _mm_set_epi32(0, 0, 0, 1);
    ks[0] = j;
    for key in &mut ks[1..n] {
        counter = _mm_add_epi32(counter, one);
        *key = unsafe { bswap(counter) };
    }
}

/// The tag: GHASH(aad, ct, lengths) XOR E(J0) (SP 800-38D section 7.1
/// steps 5 and 6).
#[inline(always)]
unsafe fn tag(k: &Keys, aad: &[u8], ct: &[u8], mask: __m128i) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    unsafe { tag_into(k, aad, ct, mask, &mut out) };
    out
}

/// [`tag`], stored straight into `out` (one 16-byte store: a tag returned
/// by value was copied through the stack and reloaded in pieces, which
/// stalled on store forwarding).
#[inline(always)]
unsafe fn tag_into(k: &Keys, aad: &[u8], ct: &[u8], mask: __m128i, out: &mut [u8; TAG_LEN]) {
    let z = _mm_setzero_si128();
    let mut g = Ghash { hp: &k.hp, x: z, pending: [z; WIDE], n: 0 };
    unsafe { g.bytes(aad) };
    unsafe { g.bytes(ct) };
    // As bytes: the AAD's bit length, big-endian, then the ciphertext's.
    let be = |bytes: usize| ((bytes as u64) * 8).swap_bytes() as i64;
    unsafe { g.push(_mm_set_epi64x(be(ct.len()), be(aad.len()))) };
    unsafe { g.fold() };
    unsafe { store16(out, _mm_xor_si128(bswap(g.x), mask)) };
}

#[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
unsafe fn seal(k: &Keys, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &mut [u8; TAG_LEN]) {
    let mask = unsafe { ctr(k, nonce, buf, true) };
    unsafe { tag_into(k, aad, buf, mask, tag) }
}

#[target_feature(enable = "aes,pclmulqdq,ssse3,sse4.1")]
unsafe fn open(k: &Keys, nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &mut [u8]) -> Result<(), OpenError> {
    let (ct, got) = sealed.split_at_mut(sealed.len() - TAG_LEN);
    let blocks = ct.len().div_ceil(16);
    if blocks < WIDE {
        // Short: E(J0) and the whole keystream in one batch, which the CPU
        // runs alongside the GHASH of the ciphertext; the keystream is
        // applied only once the tag matched.
        let mut ks = [_mm_setzero_si128(); WIDE];
        unsafe { counters(nonce, &mut ks, blocks + 1) };
        unsafe { encrypt_some(k, &mut ks, blocks + 1) };
        let want = unsafe { tag(k, aad, ct, ks[0]) };
        if !same_tag(&want, got) {
            return Err(OpenError);
        }
        unsafe { xor_keys(ct, 0, &ks[1..=blocks]) };
        return Ok(());
    }
    let mut j = [unsafe { j0(nonce) }];
    unsafe { encrypt(k, &mut j) };
    let want = unsafe { tag(k, aad, ct, j[0]) };
    if !same_tag(&want, got) {
        return Err(OpenError);
    }
    unsafe { ctr(k, nonce, ct, false) };
    Ok(())
}

/// Constant time: every byte compared, no early exit.
#[inline(always)]
fn same_tag(want: &[u8; TAG_LEN], got: &[u8]) -> bool {
    let diff = want.iter().zip(got.iter()).fold(0u8, |d, (a, b)| d | (a ^ b));
    core::hint::black_box(diff) == 0
}
