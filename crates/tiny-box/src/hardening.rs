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
