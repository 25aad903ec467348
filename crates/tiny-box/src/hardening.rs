//! Checks of hardened builds (`secure` feature): free-list links that do
//! not lead to a block of the same class, and double frees. A failed check
//! reports the addresses on stderr and aborts: the heap is corrupt, and
//! going on would hand an attacker's address out.

use hakmem_superslab::text::Line;
use hakmem_superslab::{lookup, Lookup, SlabRef};

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

/// Checks that the free block `b` links to `next`, a block of its class.
///
/// A link decodes correctly only if it was written by this layer with the
/// region's secret; anything a program wrote over it decodes to an address
/// that is, with overwhelming probability, not 8-aligned inside a small
/// slab of the same class. Checking that costs three loads and no division,
/// so it runs on every pop.
#[inline]
pub(crate) fn check_link(b: *mut crate::Block, next: *mut crate::Block) {
    let next_addr = next as usize;
    let plausible = next_addr.is_multiple_of(8)
        && match lookup(next as *const u8) {
            // SAFETY: b is a live free block, so its slab is held by this
            // layer; `slab` was just found in use by the registry.
            Lookup::Slab(slab) => unsafe {
                crate::slab_class(slab) == crate::slab_class(SlabRef::containing(b as *const u8))
            },
            _ => false,
        };
    if !plausible {
        corruption(
            "a free-list link was overwritten (block, bad link):",
            b as usize,
            next_addr,
        );
    }
}

/// The double-free canary of the block at `p`: keyed by its region's secret
/// so a program cannot forge it by accident or on purpose.
#[inline(always)]
fn canary(p: usize) -> usize {
    // SAFETY: p is a block inside a live region.
    let secret = unsafe { hakmem_superslab::region_secret(p) };
    (secret ^ p).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
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
