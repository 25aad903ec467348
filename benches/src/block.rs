//! Raw blocks through the global allocator, the way C code uses `malloc`:
//! a pointer and a size, with the layout rebuilt on free.

use std::alloc::{alloc, dealloc, handle_alloc_error, realloc, Layout};
use std::ptr;

/// Alignment asked for every block (`malloc`'s minimum on 64-bit Linux).
pub const ALIGN: usize = 8;

fn layout(size: usize) -> Layout {
    match Layout::from_size_align(size.max(1), ALIGN) {
        Ok(l) => l,
        Err(_) => {
            eprintln!("error: block size {size} is not representable");
            std::process::exit(2);
        }
    }
}

/// A block of `size` bytes (at least 1) whose first and last bytes are
/// written. Aborts with a message if memory cannot be had.
#[inline]
pub fn new(size: usize) -> *mut u8 {
    let l = layout(size);
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc(l) };
    if p.is_null() {
        handle_alloc_error(l);
    }
    // SAFETY: the block has `l.size()` writable bytes.
    unsafe { touch(p, l.size()) };
    p
}

/// Writes the first and last byte of a block (the "touch" of Larson).
///
/// # Safety
/// `p` points to at least `size` (>= 1) writable bytes.
#[inline]
pub unsafe fn touch(p: *mut u8, size: usize) {
    // SAFETY: caller's contract; volatile so the writes are not elided.
    unsafe {
        ptr::write_volatile(p, b'a');
        ptr::write_volatile(p.add(size - 1), b'b');
    }
}

/// Frees a block from [`new`] or [`resize`].
///
/// # Safety
/// `p` came from [`new`] or [`resize`] with this `size` and is not used
/// again.
#[inline]
pub unsafe fn free(p: *mut u8, size: usize) {
    // SAFETY: caller's contract: same layout as at allocation.
    unsafe { dealloc(p, layout(size)) }
}

/// Resizes a block to `new_size` through the global allocator's
/// `realloc`, touching the new last byte.
///
/// # Safety
/// `p` came from [`new`] or [`resize`] with `old_size` and is given up.
pub unsafe fn resize(p: *mut u8, old_size: usize, new_size: usize) -> *mut u8 {
    let new_size = new_size.max(1);
    // SAFETY: caller's contract; `layout(new_size)` checked the size.
    let q = unsafe { realloc(p, layout(old_size), layout(new_size).size()) };
    if q.is_null() {
        handle_alloc_error(layout(new_size));
    }
    // SAFETY: the new block has `new_size` writable bytes.
    unsafe { touch(q, new_size) };
    q
}
