//! The process's allocator: jemalloc, except that a buffer of a few pages shrunk and
//! grown again stays where it is.
//!
//! rustls's TLS receive buffer (`DeframerVecBuffer::prepare_read`) is shrunk to 4 KB
//! each time it empties and grown back, 4 KB → 8 KB → 16 KB → 32 KB, for every
//! request larger than a TLS record (a 24 KB Pod review). glibc's `realloc` mostly does
//! that in place; jemalloc moves the block at each step (its size classes cannot be
//! split or extended in place) and its thread-cache garbage collection, paced by
//! bytes allocated, runs several times per request: measured at ~40,000 of
//! konsumer's ~380,000 instructions per `pod-create-large` review (BENCHMARKS.md).
//!
//! So a `realloc` of a block whose real size is between [`LARGE_MIN`] and
//! [`LARGE_MAX`], to a size between [`PAGE`] and that real size, returns the block
//! unchanged: the shrink keeps its pages and the growth back finds them. The owner
//! sees the size it asked for, and the block is freed by jemalloc's unsized free,
//! which looks its real size up (a sized free with the smaller size would be wrong).
//! At most `LARGE_MAX - PAGE` bytes stay behind per such block, only for blocks shrunk
//! to at least a page; a smaller shrink, and any block above `LARGE_MAX`, is
//! jemalloc's as before.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_int, c_void};

use tikv_jemallocator::Jemalloc;

/// Below this (the requested size), `realloc` and `dealloc` are plain jemalloc.
pub const PAGE: usize = 4096;
/// jemalloc's smallest large size class: smaller blocks shrink for real.
pub const LARGE_MIN: usize = 16 * 1024;
/// Blocks larger than this (a 64 KB TLS handshake buffer, big collections) shrink
/// for real.
pub const LARGE_MAX: usize = 64 * 1024;

/// jemalloc with buffers of a few pages kept in place across shrink and growth.
#[derive(Debug, Default, Clone, Copy)]
pub struct Allocator;

/// The flags tikv-jemallocator passes: an alignment only when malloc's own does not
/// cover it.
fn flags(layout: &Layout) -> c_int {
    // `_Alignof(max_align_t)` on the 64-bit targets konsumer ships for.
    const MAX_ALIGN: usize = 16;
    if layout.align() <= MAX_ALIGN && layout.align() <= layout.size() {
        0
    } else {
        tikv_jemalloc_sys::MALLOCX_ALIGN(layout.align())
    }
}

/// Whether a block handed out with `size` may be larger than `size` because a
/// `realloc` kept it in place: those are freed unsized.
fn maybe_kept(size: usize) -> bool {
    (PAGE..=LARGE_MAX).contains(&size)
}

// SAFETY: every block comes from jemalloc and goes back to it; a block kept in
// place by `realloc` really holds the size returned for it (`sallocx` is its real
// usable size), and is freed with `dallocx`, which does not trust the caller's size.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `GlobalAlloc::alloc`'s.
        unsafe { Jemalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { Jemalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if maybe_kept(layout.size()) {
            // SAFETY: `ptr` is a live jemalloc block (the caller's contract).
            unsafe { tikv_jemalloc_sys::dallocx(ptr.cast::<c_void>(), flags(&layout)) }
        } else {
            // SAFETY: below a page no block was kept in place, so `layout.size()`
            // is in the block's size class, as `sdallocx` needs; above
            // `LARGE_MAX` likewise.
            unsafe { Jemalloc.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if maybe_kept(layout.size()) && new_size >= PAGE {
            // SAFETY: `ptr` is a live jemalloc block (the caller's contract).
            let real = unsafe { tikv_jemalloc_sys::sallocx(ptr.cast::<c_void>(), 0) };
            if (LARGE_MIN..=LARGE_MAX).contains(&real) && new_size <= real {
                return ptr;
            }
        }
        // SAFETY: `rallocx` finds the block's real size itself.
        unsafe { Jemalloc.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 1).unwrap()
    }

    /// What rustls's receive buffer does for every large request: grown by doubling,
    /// emptied and shrunk to 4 KB, grown again.
    #[test]
    fn a_buffer_shrunk_to_a_page_and_grown_back_stays_in_place_with_its_contents() {
        let a = Allocator;
        unsafe {
            let mut size = PAGE;
            let mut p = a.alloc_zeroed(layout(size));
            assert!(!p.is_null());
            for next in [2 * PAGE, 4 * PAGE, 8 * PAGE] {
                p = a.realloc(p, layout(size), next);
                size = next;
            }
            // 32 KB now: its last byte is written, then it is shrunk to a page.
            *p.add(size - 1) = 7;
            *p = 42;
            let kept = p;
            p = a.realloc(p, layout(size), PAGE);
            assert_eq!(p, kept, "the shrink keeps the block");
            assert_eq!(*p, 42);
            size = PAGE;
            for next in [2 * PAGE, 4 * PAGE, 8 * PAGE] {
                p = a.realloc(p, layout(size), next);
                assert_eq!(p, kept, "growth within the block stays in place");
                size = next;
            }
            assert_eq!(*p, 42);
            assert_eq!(*p.add(size - 1), 7);
            a.dealloc(p, layout(size));
        }
    }

    #[test]
    fn a_block_shrunk_below_a_page_or_larger_than_64_kb_is_moved_as_jemalloc_does() {
        let a = Allocator;
        unsafe {
            let p = a.alloc(layout(32 * 1024));
            *p = 9;
            let small = a.realloc(p, layout(32 * 1024), 100);
            assert_eq!(*small, 9);
            assert!(tikv_jemalloc_sys::sallocx(small.cast(), 0) < PAGE);
            a.dealloc(small, layout(100));

            let big = a.alloc(layout(256 * 1024));
            let shrunk = a.realloc(big, layout(256 * 1024), 8 * PAGE);
            assert!(tikv_jemalloc_sys::sallocx(shrunk.cast(), 0) <= 8 * PAGE);
            a.dealloc(shrunk, layout(8 * PAGE));
        }
    }

    #[test]
    fn a_block_kept_in_place_then_moved_below_a_page_keeps_its_contents() {
        let a = Allocator;
        unsafe {
            let p = a.alloc(layout(32 * 1024));
            for i in 0..PAGE {
                *p.add(i) = (i % 251) as u8;
            }
            let kept = a.realloc(p, layout(32 * 1024), PAGE);
            assert_eq!(kept, p);
            let moved = a.realloc(kept, layout(PAGE), 1000);
            for i in 0..1000 {
                assert_eq!(*moved.add(i), (i % 251) as u8);
            }
            a.dealloc(moved, layout(1000));
        }
    }

    #[test]
    fn aligned_blocks_round_trip() {
        let a = Allocator;
        unsafe {
            let l = Layout::from_size_align(20 * 1024, 4096).unwrap();
            let p = a.alloc(l);
            assert_eq!(p as usize % 4096, 0);
            let q = a.realloc(p, l, PAGE);
            assert_eq!(q as usize % 4096, 0);
            a.dealloc(q, Layout::from_size_align(PAGE, 4096).unwrap());
        }
    }
}
