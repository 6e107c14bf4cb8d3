//! Large tables on huge pages without hugetlbfs: a global allocator that
//! asks the kernel for transparent huge pages (`madvise(MADV_HUGEPAGE)`)
//! on every allocation of [`HUGE_MIN`] bytes or more, before the caller
//! first touches it.
//!
//! Per-worker tables that are read at random per packet (NAT sessions and
//! their indexes: tens of MB at 10^6 sessions) otherwise take a TLB miss and
//! a page walk on most lookups with 4 KiB pages. Debian's default THP mode
//! is `madvise`: only advised regions get 2 MiB pages, so the advice is
//! what turns them on. Where THP is `never` the advice is a no-op. Small
//! allocations are untouched (the system allocator's).
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: braid_dpdk::memory::HugeAdvise = braid_dpdk::memory::HugeAdvise;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this many bytes are advised.
pub const HUGE_MIN: usize = 4 << 20;

/// A 2 MiB huge page.
const HUGE_PAGE: usize = 2 << 20;

/// `MADV_HUGEPAGE` (linux/mman.h).
const MADV_HUGEPAGE: i32 = 14;

extern "C" {
    fn madvise(addr: *mut core::ffi::c_void, len: usize, advice: i32) -> i32;
}

/// The system allocator, advising large blocks for huge pages.
pub struct HugeAdvise;

/// Advises the whole 2 MiB pages inside `[p, p + len)`; returns whether
/// there were any and the kernel accepted the advice.
pub fn advise_huge(p: *mut u8, len: usize) -> bool {
    let start = (p as usize).next_multiple_of(HUGE_PAGE);
    let end = (p as usize).saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return false;
    }
    // SAFETY: madvise with MADV_HUGEPAGE only changes how the kernel backs
    // the pages of this range (which the caller's allocation contains); it
    // never changes their contents or mapping, and fails harmlessly
    // (EINVAL) where THP is not available.
    unsafe { madvise(start as *mut core::ffi::c_void, end - start, MADV_HUGEPAGE) == 0 }
}

// SAFETY: every call is forwarded to `System` with the same arguments; the
// advice in between never changes the memory handed out.
unsafe impl GlobalAlloc for HugeAdvise {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; `layout` is the caller's promise.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && layout.size() >= HUGE_MIN {
            advise_huge(p, layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && layout.size() >= HUGE_MIN {
            advise_huge(p, layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` through this allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && new_size >= HUGE_MIN {
            advise_huge(p, new_size);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advises_only_whole_huge_pages_and_keeps_contents() {
        assert!(!advise_huge(std::ptr::null_mut(), HUGE_PAGE - 1), "less than a huge page");
        let a = HugeAdvise;
        let layout = Layout::from_size_align(16 << 20, 64).unwrap();
        // SAFETY: a non-zero layout; freed below with the same layout.
        let p = unsafe { a.alloc_zeroed(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` is 16 MiB of zeroed memory we own.
        let s = unsafe { std::slice::from_raw_parts_mut(p, 16 << 20) };
        assert!(s.iter().all(|&b| b == 0), "zeroed");
        s.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        // Advising again keeps the contents.
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        let advised = advise_huge(p, 16 << 20);
        if thp.contains("[madvise]") || thp.contains("[always]") {
            assert!(advised, "THP is on ({thp:?}): the kernel takes the advice");
        }
        assert!(s.iter().enumerate().all(|(i, &b)| b == i as u8));
        // SAFETY: allocated above with `layout`.
        unsafe { a.dealloc(p, layout) };
    }
}
