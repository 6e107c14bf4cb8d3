//! The one place braid-nat leaves safe Rust: a prefetch hint.

/// Asks the CPU to bring the cache line holding `x` towards the core
/// without waiting for it. A plain load would do the same but hold its
/// place in the out-of-order window until the line arrives; 32 lookups'
/// worth of misses then stall the core. A prefetch retires at once, so a
/// burst's misses overlap each other and the work that follows.
/// Elsewhere than x86_64, nothing.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 belongs to SSE, which every x86_64 CPU has (the
    // intrinsic is `unsafe` only for its `#[target_feature]`); it is a hint
    // that reads nothing architecturally and never faults, and `x` is a
    // live reference anyway.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}
