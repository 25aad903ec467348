//! Checks of hardened builds (`secure` feature): free-list links that do
//! not lead to a block of the same class, and double frees. A failed check
//! reports the addresses on stderr and aborts: the heap is corrupt, and
//! going on would hand an attacker's address out.

use hakmem_superslab::text::Line;
use hakmem_superslab::{lookup, Lookup, SLAB_SHIFT};

/// Stops the process: `what` happened at `a` (and `b`, if non-zero).
#[cold]
#[inline(never)]
pub fn corruption(what: &str, a: usize, b: usize) -> ! {
    let mut line = Line::new();
    line.str("hakmem: heap corruption detected: ").str(what);
    for v in [a, b] {
        if v != 0 {
            line.str(" ").hex(v);
        }
    }
    line.str("; aborting\n").write_stderr();
    // SAFETY: abort has no preconditions and never returns.
    unsafe { libc::abort() }
}

/// Checks a link of a list that may span slabs (the fast cache's lists and
/// the chains that move between layers): `next` must be 8-aligned and lie
/// in a data slab of a live region.
///
/// A link decodes correctly only if it was written by this layer with the
/// region's secret. A whole word a program wrote over it decodes to an
/// address that is random in the address space, which this test rejects
/// unless it happens to fall into one of our regions' data slabs (a chance
/// of the order of the heap's size over 2^47, and 1 in 8 of that again for
/// the alignment). The test costs one load of a registry byte that every
/// pop of the same region shares, so it runs on every pop. (Testing first
/// whether the link stays in `b`'s region, which needs no load, was tried:
/// with several threads' blocks on one list the branch is unpredictable
/// and it made Larson slower.) What it does not see, a link that points
/// into the wrong class's slab, is looked for where the blocks cross back
/// into their slabs ([`check_drained_class`]).
#[inline(always)]
pub(crate) fn check_link(b: *mut crate::Block, next: *mut crate::Block) {
    let next_addr = next as usize;
    if !(next_addr.is_multiple_of(8) && hakmem_superslab::in_data_slab(next_addr)) {
        bad_link(b, next);
    }
}

/// Checks a link of one slab's own list (its local free list, its remote
/// stack): `next` must be 8-aligned and in the same slab as `b`. Arithmetic
/// only.
#[inline(always)]
pub(crate) fn check_link_in_slab(b: *mut crate::Block, next: *mut crate::Block) {
    let (b_addr, next_addr) = (b as usize, next as usize);
    if !(next_addr.is_multiple_of(8) && (b_addr ^ next_addr) >> SLAB_SHIFT == 0) {
        bad_link(b, next);
    }
}

/// Checks that a block coming back from a cross-slab list (a drained chain)
/// belongs to a slab of the chain's class: a link that decoded into a data
/// slab of another class would otherwise put a block on the wrong slab's
/// list.
#[inline]
pub(crate) fn check_drained_class(b: *mut crate::Block, class: usize) {
    let of_class = match lookup(b as *const u8) {
        // An in-use single slab is one of this layer's, so its client area
        // holds a SlabMeta.
        Lookup::Slab(slab) => crate::slab_class(slab) == class,
        _ => false,
    };
    if !of_class {
        corruption(
            "a free-list link leads out of its class (block, class):",
            b as usize,
            class,
        );
    }
}

#[cold]
#[inline(never)]
fn bad_link(b: *mut crate::Block, next: *mut crate::Block) -> ! {
    corruption(
        "a free-list link was overwritten (block, bad link):",
        b as usize,
        next as usize,
    )
}

/// The double-free canary of the block at `p`: keyed by its region's
/// canary secret so a program cannot forge it by accident or on purpose
/// (and odd, so it is never the 0 an allocated block's word is set to).
/// The canary secret is not the link secret: a canary read through a
/// use-after-free does not help forge a link.
#[inline(always)]
fn canary(p: usize) -> usize {
    // SAFETY: p is a block inside a live region.
    let secret = unsafe { hakmem_superslab::region_canary_secret(p) };
    (secret ^ p) | 1
}

/// Marks the small block at `p` free, stopping the process if it already
/// is (a double free). Blocks are at least 16 bytes in hardened builds; the
/// canary sits in the second word, the first holds the free-list link.
///
/// # Safety
/// `p` is the start of a small block of this layer.
#[inline]
pub unsafe fn mark_free(p: *mut u8) {
    let word = p.cast::<usize>().wrapping_add(1);
    let c = canary(p as usize);
    // SAFETY: the block has at least two words.
    if unsafe { word.read() } == c {
        corruption("double free of", p as usize, 0);
    }
    // SAFETY: as above.
    unsafe { word.write(c) };
}

/// Clears the canary of a block being handed out.
///
/// # Safety
/// `p` is the start of a small block of this layer, now owned by the caller.
#[inline]
pub unsafe fn mark_allocated(p: *mut u8) {
    // SAFETY: the block has at least two words.
    unsafe { p.cast::<usize>().add(1).write(0) };
}
