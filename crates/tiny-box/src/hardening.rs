//! Checks of hardened builds (`secure` feature): free-list links that do
//! not lead to a block of the same class, and double frees. A failed check
//! reports the addresses on stderr and aborts: the heap is corrupt, and
//! going on would hand an attacker's address out.

use hakmem_superslab::{lookup, Lookup, SlabRef};

/// Stops the process: `what` happened at `a` (and `b`, if non-zero).
#[cold]
#[inline(never)]
pub fn corruption(what: &str, a: usize, b: usize) -> ! {
    let mut buf = [0u8; 200];
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        let n = bytes.len().min(buf.len() - len);
        buf[len..len + n].copy_from_slice(&bytes[..n]);
        len += n;
    };
    push(b"hakmem: heap corruption detected: ");
    push(what.as_bytes());
    for v in [a, b] {
        if v == 0 {
            continue;
        }
        let mut hex = *b" 0x0000000000000000";
        for (i, d) in hex[3..].iter_mut().enumerate() {
            *d = b"0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
        }
        push(&hex);
    }
    push(b"; aborting\n");
    // SAFETY: writes our own buffer to stderr; abort never returns.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), len);
        libc::abort()
    }
}

/// The class of the small block at `p`, if `p` is the start of a block in
/// a slab of this layer.
fn block_class(p: usize) -> Option<usize> {
    match lookup(p as *const u8) {
        Lookup::Slab(slab) if crate::is_block_start(slab, p as *const u8) => {
            Some(crate::slab_class(slab))
        }
        _ => None,
    }
}

/// Checks that the free block `b` links to `next`, a block of its class.
#[inline]
pub(crate) fn check_link(b: *mut crate::Block, next: *mut crate::Block) {
    let (b, next) = (b as usize, next as usize);
    // SAFETY: b is a live free block, so its slab is held by this layer.
    let class = crate::slab_class(unsafe { SlabRef::containing(b as *const u8) });
    if block_class(next) != Some(class) {
        corruption(
            "a free-list link was overwritten (block, bad link):",
            b,
            next,
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
