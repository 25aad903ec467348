//! Huge blocks: one `mmap` each, with a small cache of recently freed ones.
//!
//! Layout: the mapping starts on a 2 MiB boundary with a `HugeHeader`; the
//! user's block starts `offset` bytes later (a page, or the alignment asked
//! for), so the header is always found at `chunk_floor(p - 1)`. The registry
//! marks the header's chunk as [`ChunkKind::Huge`].
//!
//! A mapping is in one of three states, kept in its header's `state` word:
//! live (handed out), cached (freed, kept for reuse; its registry entry
//! stays) or gone (being unmapped). Only a live mapping is a block to
//! [`lookup`], so a second free of a cached block is refused like any other
//! stale pointer. [`free`] leaves the live state with one compare-and-swap,
//! so of two frees of one block, racing or not, exactly one proceeds.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::registry::{self, ChunkKind};
use crate::stats::{self, COUNTERS};
use crate::{lock::RawLock, os, AlreadyFreed, OutOfMemory, CHUNK_SIZE};
use os::PAGE_SIZE;

/// `state` of a mapping handed out: "hakmHUGE".
const LIVE: usize = 0x6861_6b6d_4855_4745;
/// `state` of a freed mapping kept in the cache: "hakmFREE".
const CACHED: usize = 0x6861_6b6d_4652_4545;
/// `state` of a mapping on its way back to the OS.
const GONE: usize = 0;

/// Freed huge mappings kept for reuse.
const CACHE_SLOTS: usize = 32;
/// A mapping larger than this is never cached.
const CACHE_MAX_MAPPING: usize = 32 << 20;
/// Total bytes the cache may hold.
const CACHE_MAX_TOTAL: usize = 256 << 20;

#[repr(C)]
struct HugeHeader {
    /// [`LIVE`], [`CACHED`] or [`GONE`]; written by whoever frees, takes
    /// from the cache or unmaps, and read by any thread's [`lookup`].
    state: AtomicUsize,
    map_len: usize,
    offset: usize,
}

/// A live huge block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugeRef(NonNull<u8>);

impl HugeRef {
    fn header(self) -> *mut HugeHeader {
        ((self.0.as_ptr() as usize - 1) & !(CHUNK_SIZE - 1)) as *mut HugeHeader
    }

    /// The block's address.
    pub fn ptr(self) -> *mut u8 {
        self.0.as_ptr()
    }

    /// Bytes usable from the block's address to the end of its mapping.
    pub fn usable_size(self) -> usize {
        // SAFETY: a HugeRef only exists for a live huge block, whose header
        // is mapped and was written at allocation.
        let h = unsafe { &*self.header() };
        h.map_len - h.offset
    }
}

struct Cache {
    slots: [(usize, usize); CACHE_SLOTS],
    total: usize,
    /// Bit i set: slot i was already cached at the last decay pass.
    aged: u32,
}

struct Shared {
    lock: RawLock,
    cache: core::cell::UnsafeCell<Cache>,
}

// SAFETY: the cache is only touched with the lock held.
unsafe impl Sync for Shared {}

static SHARED: Shared = Shared {
    lock: RawLock::new(),
    cache: core::cell::UnsafeCell::new(Cache {
        slots: [(0, 0); CACHE_SLOTS],
        total: 0,
        aged: 0,
    }),
};

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    SHARED.lock.with(|| {
        // SAFETY: lock held: the only reference.
        f(unsafe { &mut *SHARED.cache.get() })
    })
}

/// A huge block handed out by [`alloc`].
#[derive(Clone, Copy, Debug)]
pub struct HugeGrant {
    /// The block.
    pub block: HugeRef,
    /// True when the block reads as zero (fresh from the OS).
    pub zeroed: bool,
}

fn layout_for(size: usize, align: usize) -> Option<(usize, usize)> {
    let offset = if align <= CHUNK_SIZE {
        align.max(PAGE_SIZE)
    } else {
        CHUNK_SIZE
    };
    let len = os::align_up(size.checked_add(offset)?, PAGE_SIZE)?;
    Some((offset, len))
}

/// Maps a huge block of at least `size` bytes aligned to `align` (a power of
/// two). Err when the size cannot be represented or the OS refuses.
pub fn alloc(size: usize, align: usize) -> Result<HugeGrant, OutOfMemory> {
    crate::pool::decay();
    let (offset, len) = layout_for(size, align).ok_or(OutOfMemory)?;
    if offset == PAGE_SIZE {
        if let Some(base) = cache_take(len) {
            stats::add(&COUNTERS.huge_cache_hits, 1);
            stats::add(&COUNTERS.huge_in_use, 1);
            // SAFETY: the cached mapping is ours, its header intact; taken
            // out of the cache, nobody else can reach it until it is live.
            unsafe {
                (*base.cast::<HugeHeader>())
                    .state
                    .store(LIVE, Ordering::Release)
            };
            // SAFETY: as above.
            let p = unsafe { base.add(PAGE_SIZE) };
            // SAFETY: non-null: derived from a mapping address.
            let block = HugeRef(unsafe { NonNull::new_unchecked(p) });
            return Ok(HugeGrant {
                block,
                zeroed: false,
            });
        }
    }
    if !registry::ensure() {
        stats::add(&COUNTERS.map_failures, 1);
        return Err(OutOfMemory);
    }
    // The header's chunk is 2 MiB aligned; the block, `offset` further on,
    // is aligned to `align` (automatically so when align <= 2 MiB, since
    // offset is then a multiple of align).
    let Some(base) = os::map_aligned(len, CHUNK_SIZE, offset, align.max(PAGE_SIZE)) else {
        stats::add(&COUNTERS.map_failures, 1);
        return Err(OutOfMemory);
    };
    if !registry::set(base.as_ptr() as usize, ChunkKind::Huge) {
        // Beyond what the registry covers: not ours to hand out, and not
        // to be kept either.
        os::unmap(base.as_ptr(), len);
        stats::add(&COUNTERS.map_failures, 1);
        return Err(OutOfMemory);
    }
    let h = base.as_ptr().cast::<HugeHeader>();
    // SAFETY: the mapping is fresh and at least a page long.
    unsafe {
        h.write(HugeHeader {
            state: AtomicUsize::new(LIVE),
            map_len: len,
            offset,
        })
    };
    stats::add_mapped(len);
    stats::add(&COUNTERS.huge_mapped, 1);
    stats::add(&COUNTERS.huge_in_use, 1);
    // SAFETY: offset < len, inside the mapping.
    let p = unsafe { base.as_ptr().add(offset) };
    // SAFETY: non-null: inside a mapping.
    let block = HugeRef(unsafe { NonNull::new_unchecked(p) });
    Ok(HugeGrant {
        block,
        zeroed: true,
    })
}

fn cache_take(len: usize) -> Option<*mut u8> {
    with_cache(|c| {
        let mut best: Option<usize> = None;
        for (i, &(base, l)) in c.slots.iter().enumerate() {
            if base != 0
                && l >= len
                && l <= len.saturating_mul(2)
                && best.is_none_or(|b| c.slots[b].1 > l)
            {
                best = Some(i);
            }
        }
        best.map(|i| {
            let (base, l) = c.slots[i];
            c.slots[i] = (0, 0);
            c.aged &= !(1 << i);
            c.total -= l;
            base as *mut u8
        })
    })
}

/// Finds the live huge block that starts exactly at `p`, if there is one
/// (a cached mapping is not a block).
pub(crate) fn lookup(p: usize) -> Option<HugeRef> {
    let header = (p.wrapping_sub(1)) & !(CHUNK_SIZE - 1);
    if registry::kind_of(header) != ChunkKind::Huge {
        return None;
    }
    // SAFETY: the registry says a huge mapping of ours starts at `header`
    // (live or cached: both keep their header mapped).
    let h = unsafe { &*(header as *const HugeHeader) };
    (h.state.load(Ordering::Acquire) == LIVE && header + h.offset == p).then(|| {
        // SAFETY: p is non-null (it is above a mapped header).
        HugeRef(unsafe { NonNull::new_unchecked(p as *mut u8) })
    })
}

/// Frees a huge block: into the cache when it fits there, else to the OS.
/// Err, and nothing done, when the block is no longer live: a double free
/// that [`crate::lookup`] let through because it raced this one.
///
/// # Safety
/// `block` came from [`crate::lookup`] or [`alloc`], its mapping has not
/// been unmapped, and the caller gives it up.
pub unsafe fn free(block: HugeRef) -> Result<(), AlreadyFreed> {
    let h = block.header();
    // SAFETY: the mapping is still ours (caller's contract): the header is
    // mapped. Whoever moves the state off LIVE owns the mapping from here.
    let claimed =
        unsafe { &(*h).state }.compare_exchange(LIVE, CACHED, Ordering::AcqRel, Ordering::Acquire);
    if claimed.is_err() {
        return Err(AlreadyFreed);
    }
    // SAFETY: as above.
    let (len, offset) = unsafe { ((*h).map_len, (*h).offset) };
    stats::sub(&COUNTERS.huge_in_use, 1);
    let cached = offset == PAGE_SIZE
        && len <= CACHE_MAX_MAPPING
        && with_cache(|c| {
            let free_slot = c.slots.iter().position(|s| s.0 == 0);
            match free_slot {
                Some(i) if c.total + len <= CACHE_MAX_TOTAL => {
                    c.slots[i] = (h as usize, len);
                    c.aged &= !(1 << i);
                    c.total += len;
                    true
                }
                _ => false,
            }
        });
    if !cached {
        unmap(h.cast(), len);
    }
    crate::pool::decay();
    Ok(())
}

fn unmap(base: *mut u8, len: usize) {
    // SAFETY: `base` is the start of one of our huge mappings, which the
    // caller took out of use (freed or out of the cache); marking it gone
    // first means a later stale lookup cannot match it.
    unsafe {
        (*base.cast::<HugeHeader>())
            .state
            .store(GONE, Ordering::Release)
    };
    registry::set(base as usize, ChunkKind::Foreign);
    os::unmap(base, len);
    stats::sub(&COUNTERS.mapped_bytes, len);
}

/// Gives every cached huge mapping back to the OS.
pub fn release_cached() {
    release_where(|_| u32::MAX);
}

/// A decay pass (see [`crate::pool::decay`]): mappings that were already
/// cached at the previous pass go back to the OS; the rest are marked.
pub(crate) fn decay() {
    release_where(|c| {
        let occupied = c
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.0 != 0)
            .fold(0u32, |m, (i, _)| m | 1 << i);
        let old = c.aged & occupied;
        c.aged = occupied & !old;
        old
    });
}

/// Takes the slots `pick` names (a mask, or all) out of the cache under the
/// lock and unmaps them after it.
fn release_where(pick: impl FnOnce(&mut Cache) -> u32) {
    let mut taken = [(0usize, 0usize); CACHE_SLOTS];
    with_cache(|c| {
        let mask = pick(c);
        for (i, slot) in c.slots.iter_mut().enumerate() {
            if mask & 1 << i != 0 && slot.0 != 0 {
                taken[i] = *slot;
                c.total -= slot.1;
                *slot = (0, 0);
            }
        }
        c.aged &= !mask;
    });
    for (base, len) in taken {
        if base != 0 {
            unmap(base as *mut u8, len);
        }
    }
}

pub(crate) fn lock() -> &'static RawLock {
    &SHARED.lock
}
