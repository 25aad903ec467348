//! Memory for bookkeeping that lives for the rest of the process (the
//! tiny-box layer's per-thread heaps). Bump-allocated from mappings of its
//! own, so it never keeps a slab region alive.

use core::ptr::NonNull;

use crate::stats::{self, COUNTERS};
use crate::{lock::RawLock, os, OutOfMemory};

const ARENA_BYTES: usize = 256 << 10;

struct Arena {
    lock: RawLock,
    cursor: core::cell::UnsafeCell<(usize, usize)>,
}

// SAFETY: the cursor is only touched with the lock held.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena {
    lock: RawLock::new(),
    cursor: core::cell::UnsafeCell::new((0, 0)),
};

/// Returns `size` zeroed bytes aligned to `align` (a power of two up to a
/// page) that are never freed.
pub fn alloc_permanent(size: usize, align: usize) -> Result<NonNull<u8>, OutOfMemory> {
    debug_assert!(align.is_power_of_two() && align <= os::page_size());
    if size > ARENA_BYTES {
        return Err(OutOfMemory);
    }
    ARENA.lock.with(|| {
        // SAFETY: lock held: the only reference to the cursor.
        let (next, end) = unsafe { &mut *ARENA.cursor.get() };
        let start = os::align_up(*next, align).ok_or(OutOfMemory)?;
        if *next == 0 || start + size > *end {
            let Some(fresh) = os::map(ARENA_BYTES) else {
                stats::add(&COUNTERS.map_failures, 1);
                return Err(OutOfMemory);
            };
            stats::add(&COUNTERS.metadata_bytes, ARENA_BYTES);
            *next = fresh.as_ptr() as usize;
            *end = *next + ARENA_BYTES;
        }
        let start = os::align_up(*next, align).ok_or(OutOfMemory)?;
        *next = start + size;
        // SAFETY: non-null: inside a fresh mapping.
        Ok(unsafe { NonNull::new_unchecked(start as *mut u8) })
    })
}

pub(crate) fn lock() -> &'static RawLock {
    &ARENA.lock
}
