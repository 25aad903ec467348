//! The mark that makes a freed small block recognisable as free, in every
//! build: the facade sets it on free, checks it before, and clears it when
//! the block is handed out again, so a second free of a block that sits in
//! a thread's cache, on a slab's free list or on a remote list is refused
//! instead of putting the block on a list twice (and handing it to two
//! callers).
//!
//! The mark is the block's second word; the first holds the free-list
//! link, which is why no block is smaller than 16 bytes (requests of 8
//! bytes or less get 16-byte blocks, as glibc gives them 24).
//!
//! - Default builds write the complement of the block's address (`!p`).
//!   Keyed by the address because
//!   programs copy marks without knowing: `realloc` copies bytes that were
//!   never written, which hold what the memory held before, such as the
//!   mark of a small block freed there; with one constant for every block
//!   such a copy made a live block look free, and its free was refused
//!   (the `mixed` benchmark died of it). A copy from any other address now
//!   never matches, and a live block's second word equals its own mark
//!   only if the program stored the complement of the block's own address
//!   there. The complement rather than a constant xored in: one
//!   instruction and no 64-bit constant to load, which kept `dealloc`
//!   within LLVM's inlining threshold (with the xor, Rust's
//!   `__rust_dealloc` stopped being inlined: churn 88 -> 100 instructions
//!   an operation). It catches mistakes, not attackers, and costs a
//!   compare and a store on free and a store on allocation.
//! - Hardened builds (`secure`) key the mark by the block's address and a
//!   secret of its region (the region's canary secret, not its link
//!   secret), so that a program can neither forge it nor learn from it a
//!   secret that forges links.

/// The default build's mark of a free block at `p`: `!p` (never the 0 an
/// allocated block's word is set to, since no block lies at `usize::MAX`).
#[cfg(not(feature = "secure"))]
#[inline(always)]
fn mark_of(p: usize) -> usize {
    !p
}

/// `(canary secret ^ address) | 1`: odd, so never the 0 an allocated
/// block's word is set to.
#[cfg(feature = "secure")]
#[inline(always)]
fn mark_of(p: usize) -> usize {
    // SAFETY: p is a block inside a live region.
    let secret = unsafe { hakmem_superslab::region_canary_secret(p) };
    (secret ^ p) | 1
}

/// Marks the small block at `p` free. False, and nothing written, when it
/// already is: a double free.
///
/// # Safety
/// `p` is the start of a small block of this layer (at least 16 bytes).
#[inline(always)]
#[must_use]
pub unsafe fn mark_free(p: *mut u8) -> bool {
    let word = p.cast::<usize>().wrapping_add(1);
    let mark = mark_of(p as usize);
    // SAFETY: the block has at least two words and is 8-aligned.
    if unsafe { word.read() } == mark {
        return false;
    }
    // SAFETY: as above.
    unsafe { word.write(mark) };
    true
}

/// Clears the mark of a block being handed out.
///
/// # Safety
/// `p` is the start of a small block of this layer, now owned by the caller.
#[inline(always)]
pub unsafe fn mark_allocated(p: *mut u8) {
    // SAFETY: the block has at least two words.
    unsafe { p.cast::<usize>().add(1).write(0) };
}

/// True when the small block at `p` carries the free mark.
///
/// # Safety
/// As for [`mark_free`].
#[inline(always)]
pub unsafe fn is_marked(p: *const u8) -> bool {
    // SAFETY: the block has at least two words and is 8-aligned.
    unsafe { p.cast::<usize>().add(1).read() == mark_of(p as usize) }
}
