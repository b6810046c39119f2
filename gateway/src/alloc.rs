//! The process's global allocator: the system allocator, except that very
//! large allocations are anonymous memory mappings reserved without
//! committing swap (`MAP_NORESERVE`), so their pages cost memory only once
//! they are written.
//!
//! Why: decoders of wire formats (the Kafka protocol crate among them,
//! kafka-protocol-rs PRs #152/#161/#200) reserve `Vec` capacity from a count
//! read off the wire before decoding a single element. A 10-byte request
//! declaring 2^31 elements asks for hundreds of GiB up front; the system
//! allocator refuses, and Rust aborts the whole process, taking every other
//! client's connection with it. Served lazily, such a reservation costs
//! address space only: the decoder fails on the missing elements and the
//! mapping is released untouched. Real allocations this large (a frame near
//! `KAFSCALE_MAX_FRAME_BYTES`) are mappings too, as the system allocator
//! would make them, and cost what they touch.
//!
//! Limits: under `vm.overcommit_memory=2` (strict accounting) the kernel
//! refuses such mappings too; the default heuristic mode and `1` accept
//! them. Decoding is synchronous, so at most one such reservation per
//! runtime thread is alive at a time.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are lazy mappings.
pub const LAZY_THRESHOLD: usize = 64 << 20;

/// Mappings are page aligned; larger alignments go to the system allocator.
const PAGE: usize = 4096;

/// See the module docs.
pub struct LazyLargeAlloc;

fn is_lazy(size: usize, align: usize) -> bool {
    size >= LAZY_THRESHOLD && align <= PAGE
}

// SAFETY: every pointer handed out is valid for `layout.size()` bytes at
// `layout.align()`, and released by the same path that produced it: the
// choice between the system allocator and a mapping depends only on the
// layout, which callers pass back unchanged to `dealloc` and `realloc`.
unsafe impl GlobalAlloc for LazyLargeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's non-zero-size layout.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            // Anonymous mappings are zero-filled.
            map(layout.size())
        } else {
            // SAFETY: as in `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(layout.size(), layout.align()) {
            // SAFETY: `ptr` came from `map(layout.size())`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from the system allocator with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        if !is_lazy(layout.size(), align) && !is_lazy(new_size, align) {
            // SAFETY: both sides are the system allocator's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_size` is non-zero and, with `align` from a valid
        // layout, does not overflow (the caller's contract for realloc).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
        // SAFETY: a fresh block, filled from the old one, which is then
        // released by the path that allocated it.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// A private anonymous mapping of `size` bytes, or null.
fn map(size: usize) -> *mut u8 {
    // SAFETY: a new anonymous mapping touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}
