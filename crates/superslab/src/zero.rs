//! Addresses for zero-size allocations that fault when used.
//!
//! Hardened builds answer `malloc(0)` with an address in one reservation
//! of [`AREA_BYTES`] that is mapped `PROT_NONE` and never made accessible:
//! a read or write through it is a `SIGSEGV` at the misuse, as in
//! hardened_malloc. Each call gets the next address, [`STRIDE`] bytes on,
//! so live zero-size allocations differ until the area wraps around after
//! `AREA_BYTES / STRIDE` (4 Mi) of them. The registry marks the area's
//! chunks, so `free` recognises these addresses and does nothing. The
//! reservation costs address space only (no memory, no commit charge).

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::registry::{self, ChunkKind};
use crate::{os, CHUNK_SIZE};

/// Bytes of address space reserved for zero-size allocations.
pub const AREA_BYTES: usize = 64 << 20;
/// Distance between two zero-size allocations (their alignment).
pub const STRIDE: usize = 16;

/// The area's base, 0 before the first zero-size allocation.
static BASE: AtomicUsize = AtomicUsize::new(0);
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh zero-size allocation, or None when the area cannot be reserved.
pub fn alloc() -> Option<*mut u8> {
    let base = match BASE.load(Ordering::Acquire) {
        0 => reserve()?,
        b => b,
    };
    let offset = NEXT.fetch_add(STRIDE, Ordering::Relaxed) % AREA_BYTES;
    Some((base + offset) as *mut u8)
}

#[cold]
fn reserve() -> Option<usize> {
    if !registry::ensure() {
        return None;
    }
    let area = os::map_aligned(AREA_BYTES, CHUNK_SIZE, 0, os::page_size())?;
    let base = area.as_ptr() as usize;
    if !os::protect_none(area.as_ptr(), AREA_BYTES) {
        os::unmap(area.as_ptr(), AREA_BYTES);
        return None;
    }
    // Marked before published: no address of the area is handed out
    // before `free` can recognise it.
    let chunks = (base..base + AREA_BYTES).step_by(CHUNK_SIZE);
    if !chunks
        .clone()
        .all(|c| registry::set(c, ChunkKind::ZeroSize))
    {
        return give_back(base);
    }
    match BASE.compare_exchange(0, base, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(base),
        Err(winner) => {
            give_back(base);
            Some(winner)
        }
    }
}

/// Unmarks and unmaps an area that was not published.
fn give_back(base: usize) -> Option<usize> {
    for chunk in (base..base + AREA_BYTES).step_by(CHUNK_SIZE) {
        registry::set(chunk, ChunkKind::Foreign);
    }
    os::unmap(base as *mut u8, AREA_BYTES);
    None
}
