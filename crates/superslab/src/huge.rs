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
//! [`lookup`](crate::lookup), so a second free of a cached block is refused like any other
//! stale pointer. [`free`] leaves the live state with one compare-and-swap,
//! so of two frees of one block, racing or not, exactly one proceeds.
//!
//! Outside hardened builds a mapping is whole 2 MiB chunks, so that each of
//! them can be one transparent huge page (`HAKMEM_THP`, [`os`]'s advice),
//! and a request no cached mapping fits as it is takes one of another
//! length: a longer one is split on a chunk boundary (its tail cached on
//! its own), a shorter one grows by `mremap`, where it lies or moved to a
//! fresh chunk-aligned range, its pages moving along. Freed memory is then
//! reused whatever the sizes, not faulted in and zeroed by the kernel anew.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::registry::{self, ChunkKind};
use crate::stats::{self, COUNTERS};
use crate::{lock::RawLock, os, AlreadyFreed, OutOfMemory, CHUNK_SIZE};

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
/// Freed mappings a hardened build keeps inaccessible before reuse.
const QUARANTINE_SLOTS: usize = if cfg!(feature = "secure") { 8 } else { 0 };
/// The largest alignment hardened builds give the guarded layout.
const GUARDED_MAX_ALIGN: usize = 64 << 10;
/// What a guarded block's slack bytes hold.
#[cfg(feature = "secure")]
const SLACK_BYTE: u8 = 0xce;

/// The kernel's page size.
#[inline]
fn page() -> usize {
    os::page_size()
}

#[repr(C)]
struct HugeHeader {
    /// [`LIVE`], [`CACHED`] or [`GONE`]; written by whoever frees, takes
    /// from the cache or unmaps, and read by any thread's [`lookup`].
    state: AtomicUsize,
    map_len: usize,
    offset: usize,
    /// The size asked for (hardened builds check the slack past it).
    requested: usize,
    /// Whether another block can reuse the mapping ([`Layout::cacheable`]).
    cacheable: bool,
    /// Hardened builds: the block ends at a guard page, and its slack
    /// bytes are checked at free ([`guarded`]).
    guarded: bool,
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

    /// Bytes usable from the block's address: to the end of its mapping,
    /// or (hardened builds, whose blocks end at a guard page and whose
    /// slack is checked) the size asked for.
    pub fn usable_size(self) -> usize {
        // SAFETY: a HugeRef only exists for a live huge block, whose header
        // is mapped and was written at allocation.
        let h = unsafe { &*self.header() };
        if cfg!(feature = "secure") {
            h.requested
        } else {
            h.map_len - h.offset
        }
    }
}

struct Cache {
    slots: [(usize, usize); CACHE_SLOTS],
    total: usize,
    /// Bit i set: slot i was already cached at the last decay pass.
    aged: u32,
    /// Bit i set: slot i was already cached at the last two passes.
    aged2: u32,
    /// Mappings taken out of the cache for reuse, ever (wrapping).
    takes: u32,
    /// `takes` at the purge thread's last pass.
    takes_at_pass: u32,
    /// Hardened builds: freed mappings (base, length), inaccessible, that
    /// wait here before they may be cached or unmapped; a ring.
    quarantine: [(usize, usize); QUARANTINE_SLOTS],
    #[cfg_attr(not(feature = "secure"), allow(dead_code))]
    quarantine_next: usize,
    /// Hardened builds: bit i set: quarantine slot i was there at the last
    /// decay pass (the next purges its pages).
    quarantine_aged: u32,
    /// Hardened builds: bit i set: quarantine slot i's pages are purged.
    quarantine_purged: u32,
}

struct Shared {
    lock: RawLock,
    cache: core::cell::UnsafeCell<Cache>,
}

// SAFETY: the cache is only touched with the lock held.
unsafe impl Sync for Shared {}

static SHARED: Shared = Shared {
    lock: RawLock::new(),
    cache: core::cell::UnsafeCell::new(Cache::EMPTY),
};

impl Cache {
    const EMPTY: Self = Self {
        slots: [(0, 0); CACHE_SLOTS],
        total: 0,
        aged: 0,
        aged2: 0,
        takes: 0,
        takes_at_pass: 0,
        quarantine: [(0, 0); QUARANTINE_SLOTS],
        quarantine_next: 0,
        quarantine_aged: 0,
        quarantine_purged: 0,
    };
}

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

/// Where a huge block goes in its mapping.
#[derive(Clone, Copy)]
struct Layout {
    /// Bytes mapped.
    len: usize,
    /// The block's distance from the mapping's start.
    offset: usize,
    /// The header page and the block at a page (or the guarded layout at
    /// 16 bytes): another block of this layout can reuse the mapping.
    cacheable: bool,
}

fn layout_for(size: usize, align: usize) -> Option<Layout> {
    if cfg!(feature = "secure") && align <= GUARDED_MAX_ALIGN {
        return guarded_layout_for(size, align);
    }
    let offset = if align <= CHUNK_SIZE {
        align.max(page())
    } else {
        CHUNK_SIZE
    };
    // Whole chunks: every 2 MiB of the mapping can be one transparent huge
    // page, the last one too, and a cached mapping grown or cut later (see
    // `cache_take`) ends on a huge page's boundary, never in the
    // middle of one (which would leave that 2 MiB on small pages). The
    // slack is address space until the block's owner writes it.
    let len = os::align_up(size.checked_add(offset)?, CHUNK_SIZE)?;
    Some(Layout {
        len,
        offset,
        cacheable: offset == page(),
    })
}

/// Maps a huge block of at least `size` bytes aligned to `align` (a power of
/// two). Err when the size cannot be represented or the OS refuses.
pub fn alloc(size: usize, align: usize) -> Result<HugeGrant, OutOfMemory> {
    alloc_with_room(size, size, align)
}

/// [`alloc`] with room for the block to grow in place to `room` bytes
/// (`room >= size`; hardened builds, where [`resize`] then grows it: the
/// mapping is laid out for `room`, and the pages past the block's last one
/// stay inaccessible until it grows into them). Other builds lay a huge
/// block out for `room` directly (its usable size is its mapping's).
pub fn alloc_with_room(size: usize, room: usize, align: usize) -> Result<HugeGrant, OutOfMemory> {
    crate::pool::decay();
    let room = room.max(size);
    let Layout {
        len,
        offset,
        cacheable,
    } = layout_for(room, align).ok_or(OutOfMemory)?;
    if cacheable {
        if let Some(base) = cache_take(len) {
            stats::add(&COUNTERS.huge_cache_hits, 1);
            let h = base.cast::<HugeHeader>();
            // SAFETY: the cached mapping is ours, its header intact; taken
            // out of the cache, nobody else can reach it until it is live.
            let offset = unsafe {
                let map_len = (*h).map_len;
                stats::huge_taken(map_len);
                #[cfg(feature = "secure")]
                let offset = match guarded::reuse(base, map_len, size, room) {
                    Some(offset) => offset,
                    None => {
                        // Not reusable after all: unmapped, and a fresh
                        // mapping below.
                        stats::huge_given_back(map_len);
                        unmap(base, map_len);
                        return alloc_with_room(size, room, align);
                    }
                };
                #[cfg(not(feature = "secure"))]
                let _ = map_len;
                (*h).offset = offset;
                (*h).requested = size;
                (*h).state.store(LIVE, Ordering::Release);
                offset
            };
            // SAFETY: as above.
            let p = unsafe { base.add(offset) };
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
    // (The guarded layout's offset is a multiple of its alignment, at most
    // guarded::MAX_ALIGN: the chunk alignment of the base is enough.)
    let (aligned_at, align_to) = if offset.is_multiple_of(page()) {
        (offset, align.max(page()))
    } else {
        (0, page())
    };
    let Some(base) = os::map_aligned(len, CHUNK_SIZE, aligned_at, align_to) else {
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
    // Before the first touch (the header's), so that the first fault can
    // already be a huge page.
    os::advise_huge_pages(base.as_ptr(), len, true);
    let h = base.as_ptr().cast::<HugeHeader>();
    // SAFETY: the mapping is fresh and at least a page long.
    unsafe {
        h.write(HugeHeader {
            state: AtomicUsize::new(LIVE),
            map_len: len,
            offset,
            requested: size,
            cacheable,
            guarded: cfg!(feature = "secure") && align <= GUARDED_MAX_ALIGN,
        })
    };
    #[cfg(feature = "secure")]
    if align <= GUARDED_MAX_ALIGN && !guarded::arm(base.as_ptr(), len, offset, size) {
        unmap(base.as_ptr(), len);
        stats::add(&COUNTERS.map_failures, 1);
        return Err(OutOfMemory);
    }
    stats::add_mapped(len);
    stats::add(&COUNTERS.huge_mapped, 1);
    stats::huge_taken(len);
    // SAFETY: offset < len, inside the mapping.
    let p = unsafe { base.as_ptr().add(offset) };
    // SAFETY: non-null: inside a mapping.
    let block = HugeRef(unsafe { NonNull::new_unchecked(p) });
    Ok(HugeGrant {
        block,
        zeroed: true,
    })
}

/// A cached mapping for a request of `len` bytes, out of the cache, its
/// header's length what the block may use; None when none qualifies or
/// the kernel refused to grow one (it is then unmapped). One pass under
/// the lock picks it:
///
/// - the shortest mapping of at least `len` bytes and at most twice that,
///   taken whole (in hardened builds also short enough that the block,
///   placed at its end, still starts in the header's chunk, where `lookup`
///   looks; their guarded mappings are never resized);
/// - else (other builds) one of another length, made `len` bytes long: the
///   longest shorter one of at least a [`GROW_FROM_PART`] grows, where it
///   lies or moved, its pages moving along, so that only the bytes it grows
///   by are fresh; else the shortest longer one is split, its tail cached
///   on its own ([`split_off`]).
fn cache_take(len: usize) -> Option<*mut u8> {
    let longest = if cfg!(feature = "secure") {
        len.saturating_mul(2).min(len + CHUNK_SIZE - 4 * page())
    } else {
        len.saturating_mul(2)
    };
    let (base, old_len) = with_cache(|c| {
        let mut longer: Option<usize> = None;
        let mut shorter: Option<usize> = None;
        for (i, &(base, l)) in c.slots.iter().enumerate() {
            if base == 0 {
                continue;
            }
            if l >= len && longer.is_none_or(|b| c.slots[b].1 > l) {
                longer = Some(i);
            }
            if l < len && l >= len / GROW_FROM_PART && shorter.is_none_or(|b| c.slots[b].1 < l) {
                shorter = Some(i);
            }
        }
        let fits = longer.filter(|&i| c.slots[i].1 <= longest);
        let i = if cfg!(feature = "secure") {
            fits?
        } else {
            fits.or(shorter).or(longer)?
        };
        let l = c.slots[i].1;
        Some((c.take_slot(i) as *mut u8, l))
    })?;
    if old_len >= len && old_len <= longest {
        return Some(base);
    }
    resize_taken(base, old_len, len)
}

/// Makes the mapping taken out of the cache at `base` (`old_len` bytes,
/// not a fit) `len` bytes long: a longer one split, its tail cached on its
/// own, a shorter one grown. Where it is now, its header's length set;
/// None, and the mapping unmapped, when the kernel refused.
#[cfg(not(feature = "secure"))]
fn resize_taken(base: *mut u8, old_len: usize, len: usize) -> Option<*mut u8> {
    let base = if old_len > len {
        // SAFETY: both lengths are whole chunks: the tail starts on a
        // chunk boundary inside the mapping, and holds no block.
        split_off(unsafe { base.add(len) }, old_len - len);
        base
    } else {
        let moved = grow_mapping(base, old_len, len)?;
        stats::add_mapped(len - old_len);
        moved
    };
    // SAFETY: the mapping is ours, out of the cache, its header mapped.
    unsafe { (*base.cast::<HugeHeader>()).map_len = len };
    Some(base)
}

/// Hardened builds take only mappings that fit (their guarded layouts are
/// never resized): the mapping as it is.
#[cfg(feature = "secure")]
fn resize_taken(base: *mut u8, _old_len: usize, _len: usize) -> Option<*mut u8> {
    Some(base)
}

/// The shortest cached mapping a grown one may start from, as a part of
/// the length asked: less, and moving it saves too few page faults to pay
/// for the two system calls.
const GROW_FROM_PART: usize = 4;

/// Makes the tail cut off a cached mapping (`tail`, chunk-aligned, `len`
/// bytes: whole chunks) a cached mapping of its own, its pages resident
/// for the next request that fits it; unmapped when the cache is full.
#[cfg(not(feature = "secure"))]
fn split_off(tail: *mut u8, len: usize) {
    let h = tail.cast::<HugeHeader>();
    // SAFETY: the tail's first page is ours (out of the cache with the
    // rest) and no block's: it becomes the tail's header page.
    unsafe {
        h.write(HugeHeader {
            state: AtomicUsize::new(CACHED),
            map_len: len,
            offset: page(),
            requested: 0,
            cacheable: true,
            guarded: false,
        })
    };
    if registry::set(tail as usize, ChunkKind::Huge) {
        cache_or_unmap(h, len);
    } else {
        os::unmap(tail, len);
        stats::sub(&COUNTERS.mapped_bytes, len);
    }
}

/// Grows the cached mapping at `base` (out of the cache) from `old_len` to
/// `len` bytes ([`resize_mapping`]); None, the mapping unmapped, when the
/// kernel refuses.
#[cfg(not(feature = "secure"))]
fn grow_mapping(base: *mut u8, old_len: usize, len: usize) -> Option<*mut u8> {
    let grown = resize_mapping(base, old_len, len);
    if grown.is_none() {
        unmap(base, old_len);
    }
    grown
}

/// Makes the mapping at `base` (`old_len` bytes, a header at its start,
/// not in use while this runs) `len` bytes long (`len > old_len`, whole
/// chunks): where it lies when the address space after it is free, else
/// moved with its pages onto a fresh chunk-aligned range, the registry
/// entry following. Returns where it is now; None, and the mapping
/// untouched at `base`, when the kernel refuses.
#[cfg(not(feature = "secure"))]
fn resize_mapping(base: *mut u8, old_len: usize, len: usize) -> Option<*mut u8> {
    if os::remap_in_place(base, old_len, len) {
        return Some(base);
    }
    let target = os::map_aligned(len, CHUNK_SIZE, 0, CHUNK_SIZE)?.as_ptr();
    // The new chunk is registered before anything moves there: a lookup
    // meanwhile finds a zeroed header (state gone), no block; and a range
    // the registry cannot cover is given back before anything leaves
    // `base`.
    if !registry::set(target as usize, ChunkKind::Huge) {
        os::unmap(target, len);
        return None;
    }
    // The old range stops being ours next, as in `unmap`; the state word
    // moves with the header.
    registry::set(base as usize, ChunkKind::Foreign);
    if !os::remap_to(base, old_len, len, target) {
        registry::set(target as usize, ChunkKind::Foreign);
        os::unmap(target, len);
        registry::set(base as usize, ChunkKind::Huge);
        return None;
    }
    Some(target)
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
    let state = unsafe { &(*h).state };
    if state
        .compare_exchange(LIVE, CACHED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(AlreadyFreed);
    }
    // SAFETY: as above.
    let (len, offset) = unsafe { ((*h).map_len, (*h).offset) };
    stats::huge_given_back(len);
    #[cfg(feature = "secure")]
    // SAFETY: the mapping is ours since the claim above.
    let Some((h, len)) = (unsafe { guarded::retire(h, len, offset) }) else {
        // Quarantined; nothing left the quarantine for it.
        crate::pool::decay();
        return Ok(());
    };
    #[cfg(not(feature = "secure"))]
    let _ = offset;
    cache_or_unmap(h, len);
    crate::pool::decay();
    Ok(())
}

/// Hardened builds: resizes a live guarded huge block in place (see
/// [`alloc_with_room`]); false, and nothing changed, when it cannot. Other
/// builds: always false (a huge block's usable size is its mapping's).
///
/// # Safety
/// `block` is a live huge block of the caller's.
pub unsafe fn resize(block: HugeRef, new_size: usize) -> bool {
    #[cfg(feature = "secure")]
    // SAFETY: the caller's contract.
    unsafe {
        guarded::resize(block, new_size)
    }
    #[cfg(not(feature = "secure"))]
    {
        let _ = (block, new_size);
        false
    }
}

/// Other builds: grows a live huge block to hold `size` bytes without
/// copying it: its mapping is resized by `mremap`, where it lies when the
/// address space after it is free, else moved (pages and all) to a fresh
/// chunk-aligned range, the registry entry following. The block then
/// starts at the returned address (its offset, so its alignment, kept);
/// None, and the block untouched where it was, when the kernel refuses,
/// the size cannot be represented or the block is aligned to a chunk or
/// more. Hardened builds: always None (their
/// blocks end at a guard; [`resize`] grows them).
///
/// # Safety
/// `block` is a live huge block of the caller's, not used while this runs.
pub unsafe fn grow(block: HugeRef, size: usize) -> Option<HugeRef> {
    #[cfg(feature = "secure")]
    {
        let _ = (block, size);
        None
    }
    #[cfg(not(feature = "secure"))]
    {
        let h = block.header();
        // SAFETY: a live block's header is mapped and ours (caller's contract).
        let (map_len, offset) = unsafe { ((*h).map_len, (*h).offset) };
        // A block aligned to a chunk or more would need a base aligned
        // further than a chunk to keep its alignment when moved.
        if offset >= CHUNK_SIZE {
            return None;
        }
        let len = os::align_up(size.checked_add(offset)?, CHUNK_SIZE)?;
        if len <= map_len {
            return Some(block);
        }
        let moved = resize_mapping(h.cast(), map_len, len)?;
        // SAFETY: the header moved with the mapping; ours, the block live.
        unsafe { (*moved.cast::<HugeHeader>()).map_len = len };
        stats::add_mapped(len - map_len);
        stats::huge_given_back(map_len);
        stats::huge_taken(len);
        // SAFETY: inside the mapping, non-null.
        Some(HugeRef(unsafe {
            NonNull::new_unchecked(moved.add(offset))
        }))
    }
}

/// Puts a freed mapping into the cache when it fits there, else unmaps it.
fn cache_or_unmap(h: *mut HugeHeader, len: usize) {
    // SAFETY: a freed mapping of ours: its header is mapped.
    let cached = unsafe { (*h).cacheable }
        && len <= CACHE_MAX_MAPPING
        && with_cache(|c| {
            let free_slot = c.slots.iter().position(|s| s.0 == 0);
            match free_slot {
                Some(i) if c.total + len <= CACHE_MAX_TOTAL => {
                    c.put_slot(i, h as usize, len);
                    true
                }
                _ => false,
            }
        });
    if cached {
        // Resident until a decay pass gives it back.
        crate::background::note_pending();
    } else {
        unmap(h.cast(), len);
    }
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

/// The freed mappings this layer still holds: cached for reuse and (in
/// hardened builds) quarantined. Read under the cache's lock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedMappings {
    /// How many.
    pub count: usize,
    /// Their bytes, whole mappings.
    pub bytes: usize,
    /// The shortest one's length (0 when there is none).
    pub smallest: usize,
    /// The longest one's length (0 when there is none).
    pub largest: usize,
}

/// Counts the freed mappings held now (see [`CachedMappings`]); what
/// [`release_cached`] would give back.
pub fn cached_mappings() -> CachedMappings {
    with_cache(|c| {
        let mut out = CachedMappings::default();
        for &(base, len) in c.slots.iter().chain(c.quarantine.iter()) {
            if base != 0 {
                out.smallest = if out.count == 0 {
                    len
                } else {
                    out.smallest.min(len)
                };
                out.largest = out.largest.max(len);
                out.count += 1;
                out.bytes += len;
            }
        }
        out
    })
}

/// Gives every cached (and quarantined) huge mapping back to the OS.
pub fn release_cached() {
    let mut taken = [(0usize, 0usize); QUARANTINE_SLOTS];
    with_cache(|c| {
        taken = c.quarantine;
        c.quarantine = [(0, 0); QUARANTINE_SLOTS];
        c.quarantine_aged = 0;
        c.quarantine_purged = 0;
    });
    for (base, len) in taken {
        if base != 0 {
            unmap(base as *mut u8, len);
        }
    }
    release_where(|_| u32::MAX);
}

/// A decay pass (see [`crate::pool::decay`]): mappings that were already
/// cached at the previous pass go back to the OS; the rest are marked. The
/// purge thread's pass (`thread`) is lazier while the program reuses huge
/// mappings, as it is with slabs (`pool::purge_aged`): when a mapping was
/// taken from the cache since its last pass, only those cached over two
/// passes go (a program that frees and allocates a huge buffer every
/// purge delay or so keeps its mapping instead of a `munmap` and a `mmap`
/// and page faults each time); once no mapping is taken, those of one
/// pass go too. In hardened builds, the pages of quarantined mappings that
/// were there at the previous pass are purged too. True when mappings are
/// left that a later pass gives back (or purges).
pub(crate) fn decay(thread: bool) -> bool {
    #[cfg(feature = "secure")]
    purge_quarantine();
    release_where(|c| c.ripe_slots(thread));
    has_pending()
}

impl Cache {
    /// Empties slot `i` for reuse of its mapping; returns the mapping's base.
    fn take_slot(&mut self, i: usize) -> usize {
        let (base, len) = self.slots[i];
        self.slots[i] = (0, 0);
        self.aged &= !(1 << i);
        self.aged2 &= !(1 << i);
        self.takes = self.takes.wrapping_add(1);
        self.total -= len;
        base
    }

    /// Caches the mapping at `base` (`len` bytes) in the empty slot `i`.
    fn put_slot(&mut self, i: usize, base: usize, len: usize) {
        self.slots[i] = (base, len);
        self.aged &= !(1 << i);
        self.aged2 &= !(1 << i);
        self.total += len;
    }

    /// The slots a decay pass gives back (see [`decay`]), the ages of the
    /// others moved on by the pass.
    fn ripe_slots(&mut self, thread: bool) -> u32 {
        let occupied = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.0 != 0)
            .fold(0u32, |m, (i, _)| m | 1 << i);
        let busy = thread && self.takes != self.takes_at_pass;
        if thread {
            self.takes_at_pass = self.takes;
        }
        let ripe = if busy { self.aged2 } else { self.aged } & occupied;
        self.aged2 = self.aged & occupied & !ripe;
        self.aged = occupied & !ripe;
        ripe
    }
}

/// True when the cache holds a mapping (or, in hardened builds, the
/// quarantine one whose pages are not purged yet): memory a decay pass
/// will give back.
pub(crate) fn has_pending() -> bool {
    with_cache(|c| {
        let quarantined = c
            .quarantine
            .iter()
            .enumerate()
            .any(|(i, q)| q.0 != 0 && c.quarantine_purged & (1 << i) == 0);
        c.total != 0 || quarantined
    })
}

/// Hardened builds' share of a decay pass: purges the pages (all but the
/// header's) of quarantined mappings that were already there at the last
/// pass. Under the lock, so that no mapping leaves the quarantine (to be
/// reused) while its pages are purged; at most [`QUARANTINE_SLOTS`]
/// `madvise` calls.
#[cfg(feature = "secure")]
fn purge_quarantine() {
    with_cache(|c| {
        for (i, &(base, len)) in c.quarantine.iter().enumerate() {
            let bit = 1u32 << i;
            if base == 0 || c.quarantine_purged & bit != 0 {
                continue;
            }
            if c.quarantine_aged & bit != 0 {
                // SAFETY: a quarantined mapping of ours (inaccessible, out
                // of use); its header page stays.
                os::purge(unsafe { (base as *mut u8).add(page()) }, len - page());
                c.quarantine_purged |= bit;
            } else {
                c.quarantine_aged |= bit;
            }
        }
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
        c.aged2 &= !mask;
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

/// Hardened builds' layout: `[header page][guard ...][block][guard page]`.
/// The block ends where the last page's guard begins (rounded down to its
/// alignment), and the pages before its first are inaccessible too, so an
/// overflow or underflow past the bytes of its own page faults. What lies
/// between the block and the guards (less than a page before it, less than
/// its alignment after it) is slack, filled with [`SLACK_BYTE`] and
/// checked at free.
fn guarded_layout_for(size: usize, align: usize) -> Option<Layout> {
    let a = align.max(16);
    let len = os::align_up(size.checked_add(3 * page() + a)?, page())?;
    Some(Layout {
        len,
        offset: guarded_offset(len, size, a),
        cacheable: a == 16,
    })
}

fn guarded_offset(len: usize, size: usize, align: usize) -> usize {
    (len - page() - size) & !(align - 1)
}

#[cfg(feature = "secure")]
mod guarded {
    use super::*;
    use core::ptr;

    fn page_floor(n: usize) -> usize {
        n & !(page() - 1)
    }

    fn page_ceil(n: usize) -> usize {
        page_floor(n + page() - 1)
    }

    /// The two slack ranges of a block at `offset` of `size` bytes: from
    /// its page's start to it, and from its end to the end of its last
    /// page, where the inaccessible pages begin. (start, length) each,
    /// relative to the mapping.
    fn slack(offset: usize, size: usize) -> [(usize, usize); 2] {
        let front = page_floor(offset);
        let end = offset + size;
        [(front, offset - front), (end, page_ceil(end) - end)]
    }

    fn fill(base: *mut u8, (at, n): (usize, usize)) {
        // SAFETY: inside the accessible pages of our mapping.
        unsafe { ptr::write_bytes(base.add(at), SLACK_BYTE, n) };
    }

    /// Stops the process unless the `n` bytes at `at` all hold
    /// [`SLACK_BYTE`]. A word at a time without an early exit (so the loop
    /// vectorises): a slack is up to two pages, checked at every free.
    fn check(base: *mut u8, (at, n): (usize, usize), block: usize) {
        // SAFETY: the accessible pages of a mapping of ours.
        let bytes = unsafe { core::slice::from_raw_parts(base.add(at), n) };
        // SAFETY: any bytes are valid u64s; align_to keeps the words
        // aligned and the edges as bytes.
        let (head, words, tail) = unsafe { bytes.align_to::<u64>() };
        let pattern = u64::from_ne_bytes([SLACK_BYTE; 8]);
        let odd = head.iter().chain(tail).any(|&b| b != SLACK_BYTE);
        if odd || words.iter().fold(0, |acc, &w| acc | (w ^ pattern)) != 0 {
            overflowed(block);
        }
    }

    /// Sets up a fresh mapping's guards and slack for a block of `size`
    /// bytes at `offset`: the pages before the block's first and after its
    /// last are inaccessible (the last page of the mapping, and any room
    /// it was laid out for). False when the kernel refused.
    pub(super) fn arm(base: *mut u8, len: usize, offset: usize, size: usize) -> bool {
        let front = page_floor(offset);
        let back = page_ceil(offset + size);
        // SAFETY: both ranges lie inside the fresh mapping.
        let guards = unsafe {
            (front == page() || os::protect_none(base.add(page()), front - page()))
                && os::protect_none(base.add(back), len - back)
        };
        if guards {
            slack(offset, size).into_iter().for_each(|r| fill(base, r));
        }
        guards
    }

    /// Opens a quarantined-then-cached mapping for a block of `size`
    /// bytes with room to grow to `room`; its offset, or None when the
    /// kernel refused.
    ///
    /// # Safety
    /// `base` is a guarded mapping of `len` bytes taken out of the cache.
    pub(super) unsafe fn reuse(
        base: *mut u8,
        len: usize,
        size: usize,
        room: usize,
    ) -> Option<usize> {
        let offset = guarded_offset(len, room, 16);
        let front = page_floor(offset);
        // SAFETY: the block's pages, inside the mapping.
        if !os::protect_rw(unsafe { base.add(front) }, page_ceil(offset + size) - front) {
            return None;
        }
        slack(offset, size).into_iter().for_each(|r| fill(base, r));
        Some(offset)
    }

    /// Resizes the live guarded block `block` to `new_size` bytes where it
    /// is: its slack checked, pages opened or closed so that the block
    /// still ends in its last accessible page, and the new slack filled.
    /// False (nothing changed) when the mapping has no room for it, it
    /// would waste more than half, or the kernel refused.
    ///
    /// # Safety
    /// `block` is a live huge block of the caller's.
    pub(super) unsafe fn resize(block: HugeRef, new_size: usize) -> bool {
        let h = block.header();
        let base = h.cast::<u8>();
        // SAFETY: a live block's header is mapped; its owner (the caller)
        // alone changes `requested`.
        let header = unsafe { &*h };
        let (guarded, len, offset, size) = (
            header.guarded,
            header.map_len,
            header.offset,
            header.requested,
        );
        let room = len - page() - offset;
        if !guarded || new_size > room || new_size < size / 2 {
            return false;
        }
        let (old_end, end) = (offset + size, offset + new_size);
        let (old_back, new_back) = (page_ceil(old_end), page_ceil(end));
        // The slack the block grows over must be intact (an overflow
        // before the realloc); the rest of it stays slack, checked at free.
        let grown_over = (old_end, end.min(old_back).max(old_end) - old_end);
        check(base, grown_over, block.ptr() as usize);
        if new_back > old_back {
            // SAFETY: pages of the block's own mapping, past its end.
            if !os::protect_rw(unsafe { base.add(old_back) }, new_back - old_back) {
                return false;
            }
        } else if new_back < old_back {
            // SAFETY: as above: pages the block no longer reaches. (A
            // refusal only leaves them open and unchecked: less guarded.)
            os::protect_none(unsafe { base.add(new_back) }, old_back - new_back);
        }
        // Past the new end: what was the block's (shrinking), or the pages
        // just opened (growing); the old slack still holds its bytes.
        let stale = if new_size < size {
            end
        } else {
            end.max(old_back)
        };
        fill(base, (stale, new_back.max(stale) - stale));
        // SAFETY: as above.
        unsafe { (*h).requested = new_size };
        true
    }

    /// A freed guarded block: its slack checked, its pages made
    /// inaccessible (and, when it cannot be cached, purged), and the
    /// mapping quarantined. Returns the mapping that leaves the quarantine
    /// for it (to be cached or unmapped), if any.
    ///
    /// # Safety
    /// `h` heads a mapping of `len` bytes just claimed by a free.
    pub(super) unsafe fn retire(
        h: *mut HugeHeader,
        len: usize,
        offset: usize,
    ) -> Option<(*mut HugeHeader, usize)> {
        let base = h.cast::<u8>();
        // SAFETY: the header is mapped (caller's contract).
        let (guarded, size, cacheable) = unsafe { ((*h).guarded, (*h).requested, (*h).cacheable) };
        if !guarded {
            return Some((h, len));
        }
        for r in slack(offset, size) {
            check(base, r, base as usize + offset);
        }
        let front = page_floor(offset);
        // SAFETY: the block's pages, no longer in use.
        let pages = unsafe { base.add(front) };
        let open = page_ceil(offset + size) - front;
        // Inaccessible is enough to keep a read after free from seeing the
        // block; purging too would cost every reuse its page faults. A
        // mapping the cache will not take goes back to the OS after the
        // quarantine: its pages are released now.
        if !cacheable || len > CACHE_MAX_MAPPING {
            os::purge(pages, open);
        }
        os::protect_none(pages, open);
        let out = with_cache(|c| {
            let i = c.quarantine_next;
            c.quarantine_next = (i + 1) % QUARANTINE_SLOTS;
            c.quarantine_aged &= !(1 << i);
            c.quarantine_purged &= !(1 << i);
            core::mem::replace(&mut c.quarantine[i], (base as usize, len))
        });
        // Resident (its pages are inaccessible, not purged) until a decay
        // pass purges them.
        crate::background::note_pending();
        (out.0 != 0).then_some((out.0 as *mut HugeHeader, out.1))
    }

    #[cold]
    #[inline(never)]
    fn overflowed(block: usize) -> ! {
        let mut line = crate::text::Line::new();
        line.str("hakmem: heap corruption detected: heap overflow or underflow: the slack of a huge block was overwritten (block): ")
            .hex(block)
            .str("; aborting\n")
            .write_stderr();
        // SAFETY: abort has no preconditions and never returns.
        unsafe { libc::abort() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decay pass over `c`: the slots it gives back, emptied as
    /// `release_where` empties them.
    fn pass(c: &mut Cache, thread: bool) -> u32 {
        let ripe = c.ripe_slots(thread);
        for i in 0..CACHE_SLOTS {
            if ripe & 1 << i != 0 {
                c.total -= c.slots[i].1;
                c.slots[i] = (0, 0);
            }
        }
        ripe
    }

    /// The purge thread's pass keeps a cached mapping one pass more while
    /// mappings are taken from the cache; once none is, it goes after one
    /// pass, as the slow paths' passes always do.
    #[test]
    fn the_purge_threads_pass_keeps_cached_mappings_a_pass_more_while_they_are_reused() {
        let mut c = Cache::EMPTY;
        c.put_slot(0, 0x10_0000, 4 << 20);
        c.put_slot(1, 0x20_0000, 6 << 20);
        assert_eq!(pass(&mut c, true), 0, "cached since this pass: kept");
        // A mapping taken between two passes: the pool is busy.
        c.take_slot(0);
        assert_eq!(pass(&mut c, true), 0, "went after one pass while busy");
        c.put_slot(0, 0x10_0000, 4 << 20);
        c.take_slot(0);
        assert_eq!(pass(&mut c, true), 1 << 1, "kept past two passes");
        // Quiet: one pass is enough.
        c.put_slot(0, 0x10_0000, 4 << 20);
        assert_eq!(pass(&mut c, true), 0, "went in the pass it was cached in");
        assert_eq!(pass(&mut c, true), 1 << 0, "kept past a quiet pass");
        assert_eq!(c.total, 0);

        // The slow paths' passes: one pass, busy or not.
        c.put_slot(2, 0x30_0000, 4 << 20);
        c.put_slot(3, 0x40_0000, 4 << 20);
        assert_eq!(pass(&mut c, false), 0);
        c.take_slot(3);
        assert_eq!(pass(&mut c, false), 1 << 2);
    }
}
