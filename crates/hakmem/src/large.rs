//! Blocks above the small-object limit.
//!
//! - **large** (up to [`LARGE_MAX`], alignment up to a slab): a run of
//!   contiguous 64 KiB slabs from one region, straight from the superslab.
//! - **huge** (anything bigger, or aligned beyond a slab, and in hardened
//!   builds every large block): one mapping per block through the
//!   superslab's huge path, cached or returned to the OS on free.
//!
//! This reaches past tiny-box to the superslab on purpose: large blocks are
//! not size-classed, so tiny-box has nothing to add; the superslab already
//! owns runs of slabs and huge mappings.

use core::ptr;

use hakmem_superslab::{self as superslab, huge, HugeRef, SlabRef, SLAB_SIZE};

/// The largest block served by a run of slabs (16 slabs).
pub const LARGE_MAX: usize = 16 * SLAB_SIZE;

/// A large or huge block of `size` bytes aligned to `align`; null when the
/// OS refuses. `zeroed` asks for zeroed memory (memset only when the memory
/// is not known to be fresh from the OS).
#[cold]
pub(crate) fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    // Hardened builds give every large block a mapping of its own, between
    // guard pages, with its slack checked at free and a quarantine before
    // reuse (see superslab's huge module): a run of slabs has neighbours
    // an overflow reaches without a fault.
    let (p, fresh) = if !cfg!(feature = "secure") && size <= LARGE_MAX && align <= SLAB_SIZE {
        let slabs = size.div_ceil(SLAB_SIZE).max(1);
        match superslab::alloc_run(slabs) {
            Ok(g) => (g.slab.base(), g.zeroed),
            Err(_) => (ptr::null_mut(), false),
        }
    } else {
        match huge::alloc(size, align) {
            Ok(g) => (g.block.ptr(), g.zeroed),
            Err(_) => (ptr::null_mut(), false),
        }
    };
    if p.is_null() {
        crate::stats::out_of_memory();
    } else if zeroed && !fresh {
        // SAFETY: the block is ours and at least `size` bytes long.
        unsafe { ptr::write_bytes(p, 0, size) };
    } else if !fresh {
        // A run starts at a slab's start, where a small block may have
        // been freed: its second word may still hold that block's free
        // mark, the complement of this very address. Bytes the program
        // never writes are copied by `realloc` all the same, and a copy
        // of this word into a later small block at this address (a run
        // grown into a huge block, shrunk back into a small block where
        // the run was) made that block look free: its free was refused
        // (`mixed`, 1 run in 20 without the fast cache). One store, on a
        // line the program's first write touches anyway. (Huge blocks
        // are mappings no small block ever lived in.)
        // SAFETY: the block is ours, at least a slab long.
        unsafe { hakmem_tiny_box::free_mark::mark_allocated(p) };
    }
    p
}

/// Hardened builds: a guarded block of `size` bytes (above the small
/// limit) laid out with room to grow in place to `room` (see
/// [`resize_huge`]); null when the OS refuses. The room is address space:
/// its pages stay inaccessible, and not resident, until the block grows
/// into them.
#[cfg(feature = "secure")]
#[cold]
pub(crate) fn alloc_with_room(size: usize, room: usize) -> *mut u8 {
    match huge::alloc_with_room(size, room, 16) {
        Ok(g) => g.block.ptr(),
        Err(_) => {
            crate::stats::out_of_memory();
            ptr::null_mut()
        }
    }
}

/// Hardened builds: resizes the huge block `h` to `new_size` bytes where
/// it is (its slack checked, its guard moved to its new end); false when
/// its mapping has no room for that.
///
/// # Safety
/// `h` is a live huge block of the caller's.
#[cfg(feature = "secure")]
pub(crate) unsafe fn resize_huge(h: HugeRef, new_size: usize) -> bool {
    // SAFETY: caller's contract.
    unsafe { huge::resize(h, new_size) }
}

/// Bytes a fresh large or huge block for `size` bytes (above the small
/// limit, alignment at most a slab) would have: what `realloc` weighs a
/// move to a smaller block against.
pub(crate) fn fresh_usable(size: usize) -> usize {
    if !cfg!(feature = "secure") && size <= LARGE_MAX {
        size.div_ceil(SLAB_SIZE).max(1) * SLAB_SIZE
    } else if cfg!(feature = "secure") {
        size.next_multiple_of(superslab::os::page_size())
    } else {
        // A huge block's mapping is whole chunks, its header page first.
        let page = superslab::os::page_size();
        (size + page).next_multiple_of(superslab::CHUNK_SIZE) - page
    }
}

/// Bytes usable in a run that starts at `slab`.
pub(crate) fn run_usable(slab: SlabRef) -> usize {
    slab.run_len() * SLAB_SIZE
}

/// Frees a run; false when it was no longer in use (a second free that
/// raced the first past the lookup).
///
/// # Safety
/// `slab` headed a live run at the lookup of the pointer being freed.
pub(crate) unsafe fn free_run(slab: SlabRef) -> bool {
    // SAFETY: caller's contract.
    let freed = unsafe { superslab::free_run_once(slab) }.is_ok();
    // Nothing of hakmem's is held or half done here.
    superslab::background::start_if_wanted();
    freed
}

/// Frees a huge block; false when it was no longer live (a second free
/// that raced the first past the lookup).
///
/// # Safety
/// `h` came from the lookup of a pointer being freed.
pub(crate) unsafe fn free_huge(h: HugeRef) -> bool {
    // SAFETY: caller's contract.
    let freed = unsafe { huge::free(h) }.is_ok();
    // Nothing of hakmem's is held or half done here.
    superslab::background::start_if_wanted();
    freed
}
