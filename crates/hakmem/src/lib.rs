//! # hakmem: the allocator's facade
//!
//! The top layer: what programs call. It owns
//!
//! - **size routing**: a request of at most [`SMALL_MAX`] bytes (with an
//!   alignment some size class satisfies) goes to a size class; anything
//!   else to the large path ([`large`]): runs of slabs up to
//!   [`LARGE_MAX`], one mapping per block above;
//! - **the one fast path**: with the `fast-path` feature, small requests go
//!   through the per-thread cache (`hakmem-fastcache`), which refills only
//!   through tiny-box; without it, straight to tiny-box's selected backend.
//!   There is no second fast path anywhere below;
//! - **[`HakMem`]**, the `GlobalAlloc` for Rust programs, and a C-shaped
//!   API ([`malloc`], [`free`], [`calloc`], [`realloc`],
//!   [`aligned_alloc`], [`usable_size`]) that the C ABI wraps;
//! - **the C ABI** (`src/c_abi/`: `malloc`, `free`, ... with glibc's
//!   semantics, glibc's `<malloc.h>` extensions, C++ `operator new` and
//!   `delete`, and the `hakmem_*` calls of `include/hakmem.h`): exported
//!   from a Rust binary with the `override` feature, so that the C and C++
//!   code linked into it allocates from hakmem too; the same module is
//!   libhakmem.so's and libhakmem.a's (crate `hakmem-preload`);
//! - **bad input**: impossible sizes and alignments give null; a free of a
//!   pointer hakmem does not own is reported ([`report`]) and aborts, or is
//!   ignored with `HAKMEM_INVALID_FREE=ignore`;
//! - **options** ([`options`]) and **statistics** ([`stats()`]).
//!
//! ## Invariants
//! - A block is freed into the class it was allocated from: with a size
//!   known (Rust's `dealloc`) the class is recomputed from the layout, which
//!   `realloc` keeps valid by resizing in place only within one class;
//!   without (C's `free`) it is read from the slab record.
//! - Nothing here allocates through the global allocator or panics.
//!
//! ## May call
//! `hakmem-fastcache`, `hakmem-tiny-box` (the selected backend, size
//! classes and block validation), `hakmem-superslab` (large runs, huge
//! blocks, pointer lookup, trim) and `libc`.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

// The C ABI (feature `override`): the module is shared with libhakmem.so,
// whose name for this crate is `facade`.
#[cfg(feature = "override")]
extern crate self as facade;
#[cfg(feature = "override")]
mod c_abi;
#[cfg(feature = "secure")]
mod hardened;
pub mod large;
mod lifecycle;
pub mod options;
pub mod prof;
pub mod report;
mod stats;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use hakmem_superslab::{self as superslab, HugeRef, Lookup, SlabRef};
#[cfg(not(feature = "fast-path"))]
use hakmem_tiny_box::SelectedBackend;
#[cfg(all(feature = "fast-path", not(feature = "secure")))]
use hakmem_tiny_box::SelectedBackend as SelectedOwner;
use hakmem_tiny_box::{class_for_layout, class_size, free_mark, size_to_class, SmallBackend};

pub use hakmem_superslab::os::page_size;
pub use hakmem_tiny_box::SMALL_MAX;
pub use large::LARGE_MAX;
pub use prof::{dump as prof_dump, dump_default as prof_dump_default, enabled as prof_enabled};
pub use report::InvalidFree;
pub use stats::{fast_cache_stats, stats, FastClassStats, Stats};
pub use stats::{memory_usage, MemoryUsage};

/// The alignment every block of 16 bytes or more has, as C's `malloc`
/// promises (`alignof(max_align_t)`).
pub const MIN_ALIGN: usize = 16;

/// The features this build was compiled with, as named in benchmark tables.
pub const BUILD_NAME: &str = match (
    cfg!(feature = "box-refactor"),
    cfg!(feature = "fast-path"),
    cfg!(feature = "secure"),
) {
    (true, true, false) => "hakmem+box-refactor+fast-path",
    (true, false, false) => "hakmem+box-refactor",
    (false, true, false) => "hakmem+fast-path",
    (false, false, false) => "hakmem",
    (true, true, true) => "hakmem+box-refactor+fast-path+secure",
    (true, false, true) => "hakmem+box-refactor+secure",
    (false, true, true) => "hakmem+fast-path+secure",
    (false, false, true) => "hakmem+secure",
};

/// hakmem as Rust's global allocator:
/// `#[global_allocator] static GLOBAL: hakmem::HakMem = hakmem::HakMem;`
#[derive(Clone, Copy, Debug, Default)]
pub struct HakMem;

#[inline(always)]
fn small_alloc(class: usize) -> *mut u8 {
    #[cfg(feature = "fast-path")]
    let p = hakmem_fastcache::alloc(class);
    // Without the fast cache, the heap profiler counts allocations down
    // here (one load and a branch; the fast cache's refill path does it
    // for free: see `prof`).
    #[cfg(not(feature = "fast-path"))]
    let p = if prof::enabled() {
        prof::small_alloc(class)
    } else {
        SelectedBackend::alloc(class)
    };
    if !p.is_null() {
        // SAFETY: a small block just handed out to us.
        unsafe { free_mark::mark_allocated(p) };
    }
    p
}

/// Bytes every small block keeps past the requested size for its slack
/// canary (hardened builds; see `hardened`).
#[cfg(feature = "secure")]
const TAIL: usize = hardened::TAIL;
#[cfg(not(feature = "secure"))]
const TAIL: usize = 0;

/// The largest request (with an alignment of at most [`MIN_ALIGN`]) that
/// a size class serves: [`SMALL_MAX`], less the slack canary's bytes in
/// hardened builds. Anything bigger is a large block.
pub const SMALL_REQUEST_MAX: usize = SMALL_MAX - TAIL;

/// Frees a small block, refusing (with a report) a block already free.
///
/// # Safety
/// `p` is the start of a small block of class `class` that is live or
/// carries the free mark, given up.
#[inline(always)]
unsafe fn small_free(p: *mut u8, class: usize) {
    // Only the fast cache asks whose slab a block is (and hardened builds
    // ask when the block leaves the quarantine).
    #[cfg(all(feature = "fast-path", not(feature = "secure")))]
    // SAFETY: the caller's contract: a small block, out.
    let owner = unsafe { SelectedOwner::owner_of(p) };
    #[cfg(not(all(feature = "fast-path", not(feature = "secure"))))]
    let owner = ptr::null();
    // SAFETY: the caller's contract; the owner is the block's slab's.
    unsafe { small_free_owned(p, class, owner) }
}

/// [`small_free`] with the block's slab's owner token already read.
///
/// # Safety
/// As for [`small_free`], and `owner` is the token of `p`'s slab.
#[inline(always)]
unsafe fn small_free_owned(p: *mut u8, class: usize, owner: *const u8) {
    #[cfg(feature = "secure")]
    {
        // SAFETY: the start of a small block (caller's contract).
        if unsafe { free_mark::is_marked(p) } {
            return report::invalid_free(p, InvalidFree::DoubleFree);
        }
        // SAFETY: a live small block of this class: stops on an overflow.
        unsafe { hardened::requested(p, class_size(class)) };
    }
    // SAFETY: the start of a small block (caller's contract).
    if !unsafe { free_mark::mark_free(p) } {
        return report::invalid_free(p, InvalidFree::DoubleFree);
    }
    #[cfg(feature = "secure")]
    // SAFETY: marked free and given up; what leaves the quarantine for it
    // is a checked, marked block of its class.
    unsafe {
        let _ = owner;
        if let Some((old, old_class)) = hardened::enter(p, class) {
            release_small(old, old_class);
        }
    }
    #[cfg(not(feature = "secure"))]
    // SAFETY: marked free and given up, of this owner.
    unsafe {
        release_small_owned(p, class, owner)
    }
}

/// Gives a small block, marked free, back to the fast cache or backend.
///
/// # Safety
/// `p` is a small block of class `class`, marked free, given up.
#[cfg(feature = "secure")]
#[inline(always)]
unsafe fn release_small(p: *mut u8, class: usize) {
    #[cfg(feature = "fast-path")]
    // SAFETY: a live block, now marked free and given up.
    unsafe {
        hakmem_fastcache::free(p, class)
    }
    #[cfg(not(feature = "fast-path"))]
    {
        let _ = class;
        // SAFETY: as above.
        unsafe { SelectedBackend::free(p) }
    }
}

/// [`release_small`] with the owner token of the block's slab read.
///
/// # Safety
/// As for [`release_small`], and `owner` is the token of `p`'s slab.
#[cfg(not(feature = "secure"))]
#[inline(always)]
unsafe fn release_small_owned(p: *mut u8, class: usize, owner: *const u8) {
    #[cfg(feature = "fast-path")]
    // SAFETY: a live block, now marked free and given up.
    unsafe {
        hakmem_fastcache::free_owned(p, class, owner)
    }
    #[cfg(not(feature = "fast-path"))]
    {
        let _ = (class, owner);
        // SAFETY: as above.
        unsafe { SelectedBackend::free(p) }
    }
}

/// The small class of a request, on the common path: no alignment beyond
/// what every class gives. The size alone picks the class: every block a
/// request can get is at least 16 bytes and a multiple of 16 (the 8 B
/// class serves no request), so any alignment up to [`MIN_ALIGN`] holds.
#[inline(always)]
fn common_class(size: usize, align: usize) -> Option<usize> {
    (size <= SMALL_MAX - TAIL && align <= MIN_ALIGN).then(|| size_to_class(size + TAIL))
}

/// The small class of any request, or None for the large path.
#[inline]
fn small_class(size: usize, align: usize) -> Option<usize> {
    class_for_layout(size.checked_add(TAIL)?, align)
}

/// The small block at `p` was just handed out for `size` bytes: hardened
/// builds set up its slack canary.
#[inline(always)]
fn handed_out(p: *mut u8, class: usize, size: usize) {
    #[cfg(feature = "secure")]
    // SAFETY: a small block of this class, just handed out to us.
    unsafe {
        hardened::arm(p, class_size(class), size)
    };
    let _ = (p, class, size);
}

/// Allocates `size` bytes aligned to `align` (a power of two). Null when
/// memory cannot be had or the request cannot be represented.
#[inline(always)]
fn alloc_aligned(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    // Hardened builds: a zero-size allocation points at memory that faults.
    #[cfg(feature = "secure")]
    if size == 0 && align <= superslab::zero::STRIDE {
        if let Some(z) = superslab::zero::alloc() {
            return z;
        }
    }
    if let Some(class) = common_class(size, align) {
        let p = small_alloc(class);
        if !p.is_null() {
            handed_out(p, class, size);
            if zeroed {
                // SAFETY: the block has at least `size` bytes.
                unsafe { ptr::write_bytes(p, 0, size) };
            }
        }
        return out_of_memory_if_null(p);
    }
    alloc_uncommon(size, align, zeroed)
}

#[inline(always)]
fn out_of_memory_if_null(p: *mut u8) -> *mut u8 {
    if p.is_null() {
        stats::out_of_memory_cold();
    }
    p
}

#[cold]
fn alloc_uncommon(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    // Every block has at least one usable byte: a zero-size request with a
    // large alignment would otherwise get a huge block that starts at the
    // end of its mapping, which `usable_size` (and so `realloc`) could not
    // tell from a pointer hakmem never handed out.
    let size = size.max(1);
    // Saturating: `align` may be 2^63 (`aligned_alloc(1 << 63, n)` from C,
    // or a valid `Layout` of size 0), more than `isize::MAX`; a plain `-`
    // overflowed (a panic in debug builds).
    if size > (isize::MAX as usize).saturating_sub(align) {
        stats::out_of_memory();
        return ptr::null_mut();
    }
    if let Some(class) = small_class(size, align) {
        let p = small_alloc(class);
        if !p.is_null() {
            handed_out(p, class, size);
            if zeroed {
                // SAFETY: the block has at least `size` bytes.
                unsafe { ptr::write_bytes(p, 0, size) };
            }
        }
        return out_of_memory_if_null(p);
    }
    if prof::enabled() {
        return prof::large_alloc(size, align, zeroed);
    }
    large::alloc(size, align, zeroed)
}

/// Frees by address: finds the owner of `p` through the registry. Invalid
/// pointers are reported (see [`report::invalid_free`]).
///
/// # Safety
/// If `p` is a live hakmem block it is given up. Any other value is safe to
/// pass: it is detected and reported without touching its memory, except a
/// block that was already freed and whose slab is in use again, which only
/// hardened builds detect.
// Always: the C ABI's `free` is this body (a call in between cost an
// instruction a free, under callgrind).
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    // The commonest free first: a block of one of this thread's slabs that
    // its table knows. One entry of the thread's cache gives class and
    // validity; the slab is the thread's, in use (`fastcache::own_block`).
    // Everything else is a tail call, so this stays a leaf function. (The
    // table exists where the fast cache has its initial-exec slot: in
    // libhakmem.so. Elsewhere `OWN_SLABS` is 0 and this folds away.)
    #[cfg(own_slab_table)]
    if hakmem_fastcache::OWN_SLABS > 0 {
        // The free mark's word is the first of the block's a free reads:
        // fetched now, its miss (a block last written by another thread's
        // core: c-xthread 0.82x without it, 0.96x with) overlaps the
        // table's lookup. (The write hint needs PRFCHW, which baseline
        // x86-64 lacks; with it, no faster.) A prefetch never faults,
        // whatever `p` is.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch reads nothing architecturally.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(8).cast::<i8>(),
            )
        };
        if let Some(b) = hakmem_fastcache::own_block(p) {
            // SAFETY: a block start of a live small slab of ours.
            if !unsafe { free_mark::mark_free(p) } {
                return report::invalid_free(p, InvalidFree::DoubleFree);
            }
            // SAFETY: the block `own_block` found, marked free, given up.
            return unsafe { hakmem_fastcache::free_own_block(b, p) };
        }
        // SAFETY: the caller's contract.
        return unsafe { free_unknown(p) };
    }
    // SAFETY: the caller's contract.
    unsafe { free_by_lookup(p) }
}

/// [`free`] of a pointer the thread's table of its own slabs does not
/// know.
///
/// # Safety
/// As for [`free`].
#[cfg(own_slab_table)]
#[inline(never)]
unsafe fn free_unknown(p: *mut u8) {
    // SAFETY: the caller's contract.
    unsafe { free_by_lookup(p) }
}

/// [`free`] through the registry.
///
/// # Safety
/// As for [`free`].
#[inline(always)]
unsafe fn free_by_lookup(p: *mut u8) {
    // The commonest of these first: a small block. One registry byte, the
    // slab's state, and its record give class, owner and validity.
    if let Some(slab) = superslab::small_slab_of(p) {
        let Some((class, owner)) = hakmem_tiny_box::block_of(slab, p) else {
            return report::invalid_free(p, InvalidFree::Interior);
        };
        // The next free of this slab's blocks, if it is ours, finds it in
        // the thread's table.
        #[cfg(own_slab_table)]
        {
            // SAFETY: a block start in a live small slab.
            if !unsafe { free_mark::mark_free(p) } {
                return report::invalid_free(p, InvalidFree::DoubleFree);
            }
            // SAFETY: a block of `slab` (in use, of this owner, class),
            // marked free, given up.
            return unsafe { hakmem_fastcache::free_remembering(p, class, owner, slab) };
        }
        // SAFETY: a block start in a live small slab, of this owner; the
        // caller gives it up.
        #[cfg(not(own_slab_table))]
        return unsafe { small_free_owned(p, class, owner) };
    }
    // SAFETY: the caller's contract.
    unsafe { free_not_small(p) }
}

/// [`free`] of anything but a block of a small slab in use: null, large
/// and huge blocks, zero-size allocations and invalid pointers.
///
/// # Safety
/// As for [`free`].
#[inline(never)]
unsafe fn free_not_small(p: *mut u8) {
    if p.is_null() {
        return;
    }
    match superslab::lookup(p) {
        Lookup::Slab(slab) => {
            // The slab was set up since the first look.
            let Some((class, owner)) = hakmem_tiny_box::block_of(slab, p) else {
                return report::invalid_free(p, InvalidFree::Interior);
            };
            // SAFETY: as in `free`.
            unsafe { small_free_owned(p, class, owner) };
        }
        Lookup::Run(slab) => {
            // Out of the heap profile before the block can be reused.
            if prof::enabled() {
                prof::large_freed(p);
            }
            // SAFETY: the head of a run in use at the lookup; the caller
            // gives it up. A racing second free finds it freed.
            if !unsafe { large::free_run(slab) } {
                report::invalid_free(p, InvalidFree::NotAllocated);
            }
        }
        Lookup::Huge(h) => {
            if prof::enabled() {
                prof::large_freed(p);
            }
            // SAFETY: a huge block that was live at the lookup; the caller
            // gives it up. A racing second free finds it freed.
            if !unsafe { large::free_huge(h) } {
                report::invalid_free(p, InvalidFree::NotAllocated);
            }
        }
        // No bytes to give back.
        Lookup::ZeroSize => {}
        Lookup::NotAllocated => report::invalid_free(p, InvalidFree::NotAllocated),
        Lookup::Foreign => report::invalid_free(p, InvalidFree::Foreign),
    }
}

/// Frees a block whose requested size and alignment the caller knows: C23's
/// `free_sized` / `free_aligned_sized` and C++'s sized `operator delete`.
/// The size picks the class without a lookup, as Rust's `dealloc` does;
/// a zero size or an alignment that is not a power of two falls back to
/// [`free`] (which classifies by address).
///
/// # Safety
/// `p` is null, or a live hakmem block allocated with exactly this size
/// (as requested) and alignment (1 for `malloc`'s), given up.
#[inline(always)]
pub unsafe fn free_sized(p: *mut u8, size: usize, align: usize) {
    // The common case as `dealloc` has it, with no Layout in between.
    // (Hardened builds serve size 0 from the inaccessible area, which has
    // no class: the lookup below knows it.)
    if let Some(class) = common_class(size, align) {
        if !p.is_null() && (size != 0 || !cfg!(feature = "secure")) {
            // SAFETY: the caller's contract: a block allocated with this
            // size and alignment, so a block of this class.
            return unsafe { small_free(p, class) };
        }
    }
    // SAFETY: the caller's contract.
    unsafe { free_sized_uncommon(p, size, align) }
}

/// [`free_sized`] of null, size 0, and large, huge or over-aligned blocks.
///
/// # Safety
/// As for [`free_sized`].
#[cold]
unsafe fn free_sized_uncommon(p: *mut u8, size: usize, align: usize) {
    if p.is_null() {
        return;
    }
    match Layout::from_size_align(size, align.max(1)) {
        // Size 0: hardened builds serve it from the inaccessible area,
        // which only the lookup recognises.
        // SAFETY: the caller's contract is GlobalAlloc::dealloc's.
        Ok(layout) if size != 0 => unsafe { HakMem.dealloc(p, layout) },
        // SAFETY: the caller's contract; anything else is classified there.
        _ => unsafe { free(p) },
    }
}

/// Bytes usable at `p` (a live hakmem block), 0 for null or foreign.
/// Hardened builds answer the size asked for, read from the block's slack
/// canary (and stop the process when the canary shows an overflow).
// Hardened builds read `p`'s own words, but only once the registry and the
// slab record showed that `p` starts a block in a slab of ours (mapped
// memory); any other pointer is answered from metadata alone.
#[cfg_attr(feature = "secure", allow(clippy::not_unsafe_ptr_arg_deref))]
pub fn usable_size(p: *const u8) -> usize {
    if p.is_null() {
        return 0;
    }
    match superslab::lookup(p) {
        Lookup::Slab(slab) if hakmem_tiny_box::is_block_start(slab, p) => {
            let block = class_size(hakmem_tiny_box::slab_class(slab));
            #[cfg(feature = "secure")]
            // SAFETY: a block start in a live small slab of ours: a live
            // block, or a marked free one (a misuse that `free` reports).
            unsafe {
                if !free_mark::is_marked(p) {
                    return hardened::requested(p, block);
                }
            }
            block
        }
        Lookup::Run(slab) => large::run_usable(slab),
        Lookup::Huge(h) => h.usable_size(),
        _ => 0,
    }
}

/// `malloc`: `size` bytes aligned to [`MIN_ALIGN`] (8 for sizes up to 8).
/// `malloc(0)` returns a unique minimal block. Null when memory cannot be had.
#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    alloc_aligned(size, 1, false)
}

/// [`malloc`]'s hit path alone, for the C ABI's `malloc`: a block off the
/// thread's fast-cache list when `size` is a common small request and the
/// list has one, else null (the caller then calls [`malloc`], out of line:
/// a tail call, so that the hit path needs no stack frame). Builds
/// without the fast cache or with `secure` (which does more on every
/// allocation) have no such path: always null.
#[inline(always)]
pub fn malloc_cached(size: usize) -> *mut u8 {
    #[cfg(not(all(feature = "fast-path", not(feature = "secure"))))]
    {
        let _ = size;
        ptr::null_mut()
    }
    #[cfg(all(feature = "fast-path", not(feature = "secure")))]
    malloc_from_fast_cache(size)
}

#[cfg(all(feature = "fast-path", not(feature = "secure")))]
#[inline(always)]
fn malloc_from_fast_cache(size: usize) -> *mut u8 {
    let Some(class) = common_class(size, 1) else {
        return ptr::null_mut();
    };
    let p = hakmem_fastcache::alloc_cached(class);
    if !p.is_null() {
        // SAFETY: a small block just handed out to us.
        unsafe { free_mark::mark_allocated(p) };
        handed_out(p, class, size);
    }
    p
}

/// `calloc`: `n * size` zeroed bytes; null on overflow or lack of memory.
pub fn calloc(n: usize, size: usize) -> *mut u8 {
    match n.checked_mul(size) {
        Some(total) => alloc_aligned(total, 1, true),
        None => {
            stats::out_of_memory();
            ptr::null_mut()
        }
    }
}

/// `aligned_alloc`: `size` bytes aligned to `align`; null when `align` is
/// not a power of two or memory cannot be had.
pub fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    alloc_aligned(size, align, false)
}

/// `realloc` by address: resizes in place when the block's class or
/// mapping allows, else moves. `realloc(null, n)` is `malloc(n)`. A size of
/// zero is served as a minimal block (the caller decides about freeing).
/// Null (and the old block untouched) when memory cannot be had.
///
/// # Safety
/// `p` is null or a live hakmem block.
pub unsafe fn realloc(p: *mut u8, new_size: usize) -> *mut u8 {
    if p.is_null() {
        return malloc(new_size);
    }
    let old_usable = match superslab::lookup(p) {
        Lookup::Slab(slab) if hakmem_tiny_box::is_block_start(slab, p) => {
            // SAFETY: a small block start.
            if unsafe { free_mark::is_marked(p) } {
                report::invalid_free(p, InvalidFree::DoubleFree);
                return ptr::null_mut();
            }
            let class = hakmem_tiny_box::slab_class(slab);
            if common_class(new_size, 1) == Some(class) {
                handed_out(p, class, new_size);
                return p;
            }
            usable_size(p)
        }
        // Nothing to copy, nothing to free.
        Lookup::ZeroSize => return malloc(new_size),
        Lookup::Run(slab) => {
            // SAFETY: a live run of the caller's (its contract).
            return unsafe { realloc_large(p, large::run_usable(slab), Big::Run(slab), new_size) };
        }
        Lookup::Huge(h) => {
            // Hardened builds: a guarded block grows or shrinks where it
            // is when its mapping has room (its guard moves with its end).
            #[cfg(feature = "secure")]
            // SAFETY: a live huge block of the caller's (its contract).
            if new_size > SMALL_REQUEST_MAX && unsafe { large::resize_huge(h, new_size) } {
                return p;
            }
            // SAFETY: a live huge block of the caller's (its contract).
            return unsafe { realloc_large(p, h.usable_size(), Big::Huge(h), new_size) };
        }
        _ => {
            // SAFETY: not a live block: reported (and maybe ignored) by free.
            unsafe { free(p) };
            return ptr::null_mut();
        }
    };
    // SAFETY: the caller's contract.
    unsafe { realloc_move(p, old_usable, new_size) }
}

/// A large block's run, or a huge block.
#[derive(Clone, Copy)]
enum Big {
    Run(SlabRef),
    Huge(HugeRef),
}

/// `realloc` of a large or huge block of `usable` bytes (`big`: what it is).
///
/// # Safety
/// `p` is a live large or huge block of the caller's, with `usable` bytes.
unsafe fn realloc_large(p: *mut u8, usable: usize, big: Big, new_size: usize) -> *mut u8 {
    // Still fits, and wastes less than half (or a new block would be no
    // smaller: a run of one slab holds anything from 16 KiB up): stays.
    // (Hardened builds resized a guarded block in place already where its
    // mapping allowed: its end must stay in its last accessible page.)
    if !cfg!(feature = "secure")
        && new_size > SMALL_REQUEST_MAX
        && new_size <= usable
        && (new_size > usable / 2 || large::fresh_usable(new_size) >= usable)
    {
        return p;
    }
    // A run grows in place into free slabs after it.
    if let Big::Run(slab) = big {
        if !cfg!(feature = "secure")
            && new_size > usable
            && new_size <= LARGE_MAX
            // SAFETY: a live run of the caller's.
            && unsafe { superslab::grow_run(slab, new_size.div_ceil(superslab::SLAB_SIZE)) }
        {
            return p;
        }
    }
    // A huge block stays huge and grows by its mapping, without a copy
    // (`huge::grow` is None in hardened builds). Not while the heap
    // profiler runs: it knows a sampled block by its address, and a move
    // through malloc and free keeps it told.
    if let Big::Huge(h) = big {
        if new_size > usable && !prof::enabled() {
            // SAFETY: a live huge block of the caller's.
            if let Some(grown) = unsafe { superslab::huge::grow(h, new_size) } {
                return grown.ptr();
            }
        }
    }
    // Hardened builds: a growing block moves to a guarded block with room
    // to grow on in place (the same quarter more as below).
    #[cfg(feature = "secure")]
    if new_size > usable && new_size > SMALL_REQUEST_MAX {
        let q = large::alloc_with_room(new_size, usable.saturating_add(usable / 4));
        if !q.is_null() {
            // SAFETY: both blocks are live, distinct, and at least `usable`
            // bytes long; p is given up after the copy.
            unsafe {
                ptr::copy_nonoverlapping(p, q, usable);
                free(p);
            }
        }
        return q;
    }
    // SAFETY: the caller's contract.
    unsafe { realloc_move(p, usable, grown(usable, new_size)) }
}

/// The size a large or huge block of `usable` bytes that must move to hold
/// `new_size` moves to: at least a quarter more than it had (tcmalloc's
/// rule), so that a buffer grown by small steps is copied a logarithmic
/// number of times, not once per slab or page it grows by. The headroom is
/// address space until written (fresh slabs and mappings are not resident).
/// (Hardened builds give the headroom as room to grow in place instead:
/// their blocks end at a guard.)
#[inline]
fn grown(usable: usize, new_size: usize) -> usize {
    if cfg!(feature = "secure") || new_size <= usable {
        return new_size;
    }
    new_size.max(usable.saturating_add(usable / 4))
}

/// `realloc`'s move: a new block of `new_size` bytes, the old one's first
/// `old_usable` bytes (at most) copied, the old one freed. Null, and the
/// old block untouched, when memory cannot be had.
///
/// # Safety
/// `p` is a live hakmem block with at least `old_usable` bytes.
unsafe fn realloc_move(p: *mut u8, old_usable: usize, new_size: usize) -> *mut u8 {
    let q = malloc(new_size);
    if !q.is_null() {
        // SAFETY: both blocks are live and at least this long; distinct.
        unsafe { ptr::copy_nonoverlapping(p, q, old_usable.min(new_size)) };
        // SAFETY: p was live and is given up now.
        unsafe { free(p) };
    }
    q
}

/// Gives back everything hakmem can: the calling thread's cached blocks,
/// every empty slab it can reach, retained regions and cached huge
/// mappings. The `malloc_trim` of hakmem.
pub fn trim() {
    #[cfg(feature = "secure")]
    // SAFETY: each block is a quarantined small block of its class.
    hardened::drain(|p, class| unsafe { release_small(p, class) });
    #[cfg(feature = "fast-path")]
    hakmem_fastcache::flush_thread();
    hakmem_tiny_box::SelectedBackend::trim();
    superslab::trim();
}

/// Sets up thread-exit hooks in the order that keeps exits cheap. Runs from
/// the library's constructor; the layers also set up on first use, so
/// calling it is an optimisation, never a requirement.
pub fn init() {
    #[cfg(feature = "secure")]
    hardened::init();
    #[cfg(feature = "fast-path")]
    hakmem_fastcache::init();
    #[cfg(not(feature = "fast-path"))]
    hakmem_tiny_box::init();
    // The small-object layer's share of the purge thread's passes (the
    // thread itself starts only when memory is left to return, with
    // `HAKMEM_BACKGROUND_PURGE=1`).
    superslab::background::set_sweep(sweep_small);
    let _ = options::get();
}

/// The purge thread's sweep of the small-object layer (see
/// [`SmallBackend::sweep`]).
fn sweep_small() -> bool {
    hakmem_tiny_box::SelectedBackend::sweep()
}

/// Takes every lock of every layer before `fork`: the purge thread's pass
/// lock before the small-object layer's, which a pass takes inside it.
pub fn prefork() {
    // The profiler's lock first: its holder takes no other.
    prof::prefork();
    hakmem_fastcache::prefork();
    superslab::background::prefork();
    hakmem_tiny_box::SelectedBackend::prefork();
    superslab::prefork();
}

/// Releases the locks in the parent after `fork`.
pub fn postfork_parent() {
    superslab::postfork_parent();
    hakmem_tiny_box::SelectedBackend::postfork_parent();
    superslab::background::postfork_parent();
    hakmem_fastcache::postfork_parent();
    prof::postfork_parent();
}

/// Resets the locks in the child after `fork`, where no purge thread runs
/// (one starts again when memory is next left to return).
pub fn postfork_child() {
    superslab::postfork_child();
    hakmem_tiny_box::SelectedBackend::postfork_child();
    superslab::background::postfork_child();
    hakmem_fastcache::postfork_child();
    prof::postfork_child();
}

// SAFETY: every method returns null or a block of at least `layout.size()`
// bytes aligned to `layout.align()` that no other live allocation overlaps;
// dealloc and realloc accept exactly what alloc returned with its layout.
unsafe impl GlobalAlloc for HakMem {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        alloc_aligned(layout.size(), layout.align(), false)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        alloc_aligned(layout.size(), layout.align(), true)
    }

    // Always: with the fast cache's ownership check the body passed
    // LLVM's inlining threshold and every free became a call (churn:
    // 72 -> 100 instructions an operation under callgrind).
    #[inline(always)]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // Hardened builds serve size 0 from the inaccessible area (see
        // `alloc_aligned`), which has no class: the lookup knows it.
        #[cfg(feature = "secure")]
        if layout.size() == 0 {
            // SAFETY: GlobalAlloc's contract: p came from alloc.
            return unsafe { free(p) };
        }
        if let Some(class) = common_class(layout.size(), layout.align()) {
            // SAFETY: GlobalAlloc's contract: p came from alloc with this
            // layout, so it is a block of this class.
            return unsafe { small_free(p, class) };
        }
        // SAFETY: as above.
        unsafe { dealloc_uncommon(p, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        let old = small_class(layout.size(), align);
        if let Some(class) = old.filter(|&c| small_class(new_size, align) == Some(c)) {
            handed_out(p, class, new_size);
            return p;
        }
        // Hardened builds: a guarded large block resizes in place, or moves
        // with room to grow, as through `realloc` (at malloc's alignment,
        // which that serves).
        #[cfg(feature = "secure")]
        if old.is_none() && align <= MIN_ALIGN && small_class(new_size, align).is_none() {
            // SAFETY: a live large block of ours (GlobalAlloc's contract).
            return unsafe { realloc(p, new_size) };
        }
        if !cfg!(feature = "secure") && old.is_none() && small_class(new_size, align).is_none() {
            let usable = usable_size(p);
            if new_size <= usable
                && (new_size > usable / 2 || large::fresh_usable(new_size) >= usable)
            {
                return p;
            }
            // A huge block grows by its mapping, as through `realloc`.
            if new_size > usable && !prof::enabled() {
                if let Lookup::Huge(h) = superslab::lookup(p) {
                    // SAFETY: a live huge block of ours (GlobalAlloc's contract).
                    if let Some(grown) = unsafe { superslab::huge::grow(h, new_size) } {
                        return grown.ptr();
                    }
                }
            }
        }
        let q = alloc_aligned(new_size, align, false);
        if !q.is_null() {
            // SAFETY: both live, distinct, at least min(old, new) long.
            unsafe { ptr::copy_nonoverlapping(p, q, layout.size().min(new_size)) };
            // SAFETY: GlobalAlloc's contract.
            unsafe { self.dealloc(p, layout) };
        }
        q
    }
}

#[cold]
unsafe fn dealloc_uncommon(p: *mut u8, layout: Layout) {
    if let Some(class) = small_class(layout.size(), layout.align()) {
        // SAFETY: caller's contract: a block of this class.
        return unsafe { small_free(p, class) };
    }
    // SAFETY: caller's contract: a live large or huge block.
    unsafe { free(p) }
}
