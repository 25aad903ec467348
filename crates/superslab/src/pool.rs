//! Handing out slabs and runs of slabs from regions; growing and shrinking
//! the set of regions.
//!
//! One lock guards every region's free mask and the two region lists. It is
//! taken once per slab (64 KiB of small blocks) or per large block, never
//! per small allocation.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::region::{header_bytes, RegionHeader, SlabRef, SlabState, REGION_MAGIC, USABLE_MASK};
use crate::registry::{self, ChunkKind};
use crate::stats::{self, COUNTERS};
use crate::{lock::RawLock, os, AlreadyFreed, OutOfMemory, CHUNK_SIZE, SLAB_SHIFT, SLAB_SIZE};

/// Empty regions always kept mapped by default (option
/// `HAKMEM_RETAINED_REGIONS`), so that a workload hovering at a region
/// boundary does not map and unmap on every step.
pub const RETAINED_EMPTY_REGIONS: usize = crate::options::DEFAULTS.retained_regions;

/// A bigger heap keeps up to one empty region per this many live regions
/// (25%) for good, so a workload cycling large blocks through many regions
/// does not unmap and map them again all the time. (At 8, the `mixed` bench
/// mapped and unmapped ~600 regions a second; at 4, ~70.) Retained regions
/// cost address space, not memory: their free slabs age and are purged
/// like any other.
pub const RETAINED_PER_LIVE_REGIONS: usize = 4;

/// How many empty regions may stay mapped for good, with `live_regions`
/// mapped.
fn retention_limit_for(live_regions: usize) -> usize {
    crate::options::get()
        .retained_regions
        .max(live_regions / RETAINED_PER_LIVE_REGIONS)
}

/// How many empty regions may stay mapped until the next decay pass: one
/// per region in use. A region that empties beyond the retention limit but
/// within this one waits a pass (it may be wanted again at once: `mixed`
/// emptied and refilled ~170 regions a second); a region beyond it goes
/// back at once.
fn burst_limit(st: &PoolState) -> usize {
    let live = COUNTERS.regions_live.load(Ordering::Relaxed);
    retention_limit_for(live).max(live.saturating_sub(st.empty_count))
}

/// Free resident slabs allowed before freed slabs are purged.
fn dirty_slab_limit() -> usize {
    crate::options::purge_threshold_bytes() / SLAB_SIZE
}

/// Free-but-dirty slabs allowed across all regions at any moment; a slab
/// freed beyond it is purged (made non-resident) at once. 1,024 slabs =
/// 64 MiB. Below it, free slabs age instead: a decay pass (see [`decay`])
/// purges those that stayed free and dirty from one pass to the next, so a
/// workload cycling large blocks reuses resident memory, and a heap that
/// shrank gives it back within two purge delays. This is the default; the
/// option `HAKMEM_PURGE_THRESHOLD` sets it in bytes.
pub const DIRTY_SLAB_LIMIT: usize = crate::options::DEFAULTS.purge_threshold_bytes / SLAB_SIZE;

/// Regions one decay pass purges slabs of; more wait for the next pass.
const DECAY_BATCH: usize = 32;

const LIST_NONE: u8 = 0;
const LIST_PARTIAL: u8 = 1;
const LIST_EMPTY: u8 = 2;

struct Pool {
    lock: RawLock,
    state: core::cell::UnsafeCell<PoolState>,
}

struct PoolState {
    /// Regions with at least one used and one free slab.
    partial: *mut RegionHeader,
    /// Regions with every slab free (kept up to RETAINED_EMPTY_REGIONS).
    empty: *mut RegionHeader,
    empty_count: usize,
    dirty_free_slabs: usize,
    /// The number of the last decay pass (see `RegionHeader::decay_epoch`).
    decay_epoch: u32,
    /// Slabs and runs handed out since start (each `take` and `grow_run`).
    grants: u64,
    /// `grants` at the purge thread's last pass.
    grants_at_pass: u64,
}

// SAFETY: PoolState is only touched with `lock` held.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool {
    lock: RawLock::new(),
    state: core::cell::UnsafeCell::new(PoolState {
        partial: ptr::null_mut(),
        empty: ptr::null_mut(),
        empty_count: 0,
        dirty_free_slabs: 0,
        decay_epoch: 0,
        grants: 0,
        grants_at_pass: 0,
    }),
};

/// A slab or run handed out by [`alloc_run`].
#[derive(Clone, Copy, Debug)]
pub struct Grant {
    /// The slab (or the run's head slab).
    pub slab: SlabRef,
    /// True when every byte of the slab or run reads as zero.
    pub zeroed: bool,
}

fn with_pool<R>(f: impl FnOnce(&mut PoolState) -> R) -> R {
    POOL.lock.with(|| {
        // SAFETY: the pool lock is held, so this is the only reference.
        f(unsafe { &mut *POOL.state.get() })
    })
}

/// First index of `n` consecutive set bits in `mask`.
fn find_run(mask: u32, n: usize) -> Option<usize> {
    let mut m = mask;
    for k in 1..n {
        m &= mask >> k;
    }
    (m != 0).then(|| m.trailing_zeros() as usize)
}

fn run_mask(start: usize, n: usize) -> u32 {
    let ones = if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
    ones << start
}

// SAFETY (for the list helpers): `r` is a live region and the lock is held.
unsafe fn unlink(st: &mut PoolState, r: *mut RegionHeader) {
    // SAFETY: see above.
    let reg = unsafe { &mut *r };
    let head = match reg.list {
        LIST_PARTIAL => &mut st.partial,
        LIST_EMPTY => &mut st.empty,
        _ => return,
    };
    if reg.prev.is_null() {
        *head = reg.next;
    } else {
        // SAFETY: list members are live regions.
        unsafe { (*reg.prev).next = reg.next };
    }
    if !reg.next.is_null() {
        // SAFETY: list members are live regions.
        unsafe { (*reg.next).prev = reg.prev };
    }
    if reg.list == LIST_EMPTY {
        st.empty_count -= 1;
        stats::sub(&COUNTERS.regions_retained, 1);
    }
    reg.next = ptr::null_mut();
    reg.prev = ptr::null_mut();
    reg.list = LIST_NONE;
}

unsafe fn push(st: &mut PoolState, r: *mut RegionHeader, list: u8) {
    // SAFETY: `r` is live and on no list.
    let reg = unsafe { &mut *r };
    let head = if list == LIST_EMPTY {
        st.empty_count += 1;
        stats::add(&COUNTERS.regions_retained, 1);
        &mut st.empty
    } else {
        &mut st.partial
    };
    reg.prev = ptr::null_mut();
    reg.next = *head;
    if !reg.next.is_null() {
        // SAFETY: list members are live regions.
        unsafe { (*reg.next).prev = r };
    }
    *head = r;
    reg.list = list;
}

/// Puts a region on the list its free mask calls for.
unsafe fn relist(st: &mut PoolState, r: *mut RegionHeader) {
    // SAFETY: caller's contract.
    let free = unsafe { (*r).free_mask };
    let want = if free == USABLE_MASK {
        LIST_EMPTY
    } else if free != 0 {
        LIST_PARTIAL
    } else {
        LIST_NONE
    };
    // SAFETY: caller's contract.
    if unsafe { (*r).list } == want {
        return;
    }
    // SAFETY: caller's contract.
    unsafe {
        unlink(st, r);
        if want != LIST_NONE {
            push(st, r, want);
        }
    }
}

fn map_region() -> Result<*mut RegionHeader, OutOfMemory> {
    if !registry::ensure() {
        stats::add(&COUNTERS.map_failures, 1);
        return Err(OutOfMemory);
    }
    let Some(base) = os::map_aligned(CHUNK_SIZE, CHUNK_SIZE, 0, CHUNK_SIZE) else {
        stats::add(&COUNTERS.map_failures, 1);
        return Err(OutOfMemory);
    };
    os::advise_huge_pages(base.as_ptr(), CHUNK_SIZE, false);
    let r = base.as_ptr().cast::<RegionHeader>();
    // SAFETY: the mapping is fresh, zeroed and large enough for the header;
    // zero is a valid bit pattern for every header field.
    unsafe {
        (*r).magic = REGION_MAGIC;
        // Only hardened builds read the secrets; the others skip the
        // getrandom calls.
        if cfg!(feature = "secure") {
            (*r).secret = os::random_word();
            (*r).canary_secret = os::random_word();
        }
        (*r).free_mask = USABLE_MASK;
        (*r).clean_mask = USABLE_MASK;
    }
    if cfg!(feature = "secure") {
        let guards_ok = os::protect_none(
            // SAFETY: inside the fresh region: the header slab's tail.
            unsafe { base.as_ptr().add(header_bytes()) },
            SLAB_SIZE - header_bytes(),
        ) && os::protect_none(
            // SAFETY: inside the fresh region: its last slab.
            unsafe { base.as_ptr().add(CHUNK_SIZE - SLAB_SIZE) },
            SLAB_SIZE,
        );
        if !guards_ok {
            os::unmap(base.as_ptr(), CHUNK_SIZE);
            stats::add(&COUNTERS.map_failures, 1);
            return Err(OutOfMemory);
        }
    }
    if !registry::set(base.as_ptr() as usize, ChunkKind::Region) {
        os::unmap(base.as_ptr(), CHUNK_SIZE);
        stats::add(&COUNTERS.map_failures, 1);
        return Err(OutOfMemory);
    }
    stats::add_mapped(CHUNK_SIZE);
    stats::add(&COUNTERS.regions_mapped, 1);
    stats::add(&COUNTERS.regions_live, 1);
    Ok(r)
}

fn unmap_region(r: *mut RegionHeader) {
    registry::set(r as usize, ChunkKind::Foreign);
    os::unmap(r.cast(), CHUNK_SIZE);
    stats::sub(&COUNTERS.mapped_bytes, CHUNK_SIZE);
    stats::add(&COUNTERS.regions_released, 1);
    stats::sub(&COUNTERS.regions_live, 1);
}

/// What a grant is for: its slab state says so to [`crate::lookup`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// One slab to be cut into small blocks by the layer above.
    Slab,
    /// A large block spanning one or more slabs.
    Run,
}

/// Hands out one slab for the layer above to cut into small blocks.
///
/// Never fails while the OS gives memory: when no region has room, a new
/// one is mapped.
pub fn alloc_slab() -> Result<Grant, OutOfMemory> {
    grant(1, Use::Slab)
}

/// Hands out a run of `n` contiguous slabs (1 <= n <= 31) of one region, as
/// one large block starting at the run's first byte.
///
/// Never fails while the OS gives memory, like [`alloc_slab`].
pub fn alloc_run(n: usize) -> Result<Grant, OutOfMemory> {
    grant(n, Use::Run)
}

fn grant(n: usize, use_: Use) -> Result<Grant, OutOfMemory> {
    debug_assert!((1..=crate::MAX_RUN_SLABS).contains(&n));
    decay();
    let found = with_pool(|st| {
        // Runs go on resident (dirty) free slabs first: reusing them costs
        // nothing, while a clean fit costs page faults now and leaves the
        // dirty slabs to be purged later (`madvise` and a TLB shootdown on
        // every core the process runs on). Single slabs go first fit: they
        // live long and packing them keeps regions free to go back (placed
        // on dirty holes they scattered over many regions and pinned them).
        let dirty_first = n > 1;
        let mut any_fit = None;
        for head in [st.partial, st.empty] {
            let mut r = head;
            while !r.is_null() {
                // SAFETY: list members are live regions; lock held.
                let reg = unsafe { &mut *r };
                let dirty = if dirty_first {
                    !reg.clean_mask
                } else {
                    u32::MAX
                };
                if let Some(start) = find_run(reg.free_mask & dirty, n) {
                    // SAFETY: lock held, region live.
                    return Some(unsafe { take(st, r, start, n, use_) });
                }
                if any_fit.is_none() {
                    any_fit = find_run(reg.free_mask, n).map(|start| (r, start));
                }
                r = reg.next;
            }
        }
        // SAFETY: lock held; the region is still live and listed, and the
        // run still free (nothing changed since it was found).
        any_fit.map(|(r, start)| unsafe { take(st, r, start, n, use_) })
    });
    if let Some(g) = found {
        return Ok(g);
    }
    // Map outside the lock: the syscall may be slow.
    let r = map_region()?;
    // SAFETY: the region is new, so slabs 1..=n are free.
    Ok(with_pool(|st| unsafe { take(st, r, 1, n, use_) }))
}

/// Marks slabs `start..start+n` of `r` used and returns the grant.
unsafe fn take(
    st: &mut PoolState,
    r: *mut RegionHeader,
    start: usize,
    n: usize,
    use_: Use,
) -> Grant {
    let bits = run_mask(start, n);
    // SAFETY: caller's contract: r live, lock held, the bits are free.
    let reg = unsafe { &mut *r };
    debug_assert_eq!(reg.free_mask & bits, bits);
    reg.free_mask &= !bits;
    reg.aged_mask &= !bits;
    reg.aged2_mask &= !bits;
    reg.empty_aged = false;
    st.grants += 1;
    let zeroed = reg.clean_mask & bits == bits;
    let dirty_taken = (!reg.clean_mask & bits).count_ones() as usize;
    st.dirty_free_slabs = st.dirty_free_slabs.saturating_sub(dirty_taken);
    reg.clean_mask &= !bits;
    // SAFETY: start + n <= SLABS_PER_REGION since the bits were in the mask.
    let slab = unsafe { SlabRef::from_parts(r, start) };
    slab.set_run_len(n);
    if use_ == Use::Slab {
        slab.set_state(SlabState::IN_USE);
        stats::add(&COUNTERS.slabs_in_use, 1);
    } else {
        for i in 1..n {
            // SAFETY: in bounds as above.
            unsafe { SlabRef::from_parts(r, start + i) }.set_state(SlabState::RUN_TAIL);
        }
        slab.set_state(SlabState::RUN_HEAD);
        stats::add(&COUNTERS.runs_in_use, 1);
        stats::add(&COUNTERS.run_slabs_in_use, n);
    }
    // SAFETY: lock held, r live.
    unsafe { relist(st, r) };
    Grant { slab, zeroed }
}

/// Grows the run headed by `slab` to `n` slabs in place, when the slabs
/// after it in its region are free: `realloc`'s way to grow a large block
/// without a copy. False (and nothing changed) when they are not.
///
/// # Safety
/// `slab` heads a live run from [`alloc_run`] that the caller owns.
pub unsafe fn grow_run(slab: SlabRef, n: usize) -> bool {
    let old = slab.run_len();
    let start = slab.index();
    if n <= old || start + n > crate::MAX_RUN_SLABS + 1 {
        return false;
    }
    let r = slab.region();
    let bits = run_mask(start + old, n - old);
    with_pool(|st| {
        // SAFETY: the region is live while the caller's run is; lock held.
        let reg = unsafe { &mut *r };
        if reg.free_mask & bits != bits {
            return false;
        }
        reg.free_mask &= !bits;
        reg.aged_mask &= !bits;
        reg.aged2_mask &= !bits;
        reg.empty_aged = false;
        st.grants += 1;
        let dirty_taken = (!reg.clean_mask & bits).count_ones() as usize;
        st.dirty_free_slabs = st.dirty_free_slabs.saturating_sub(dirty_taken);
        reg.clean_mask &= !bits;
        for i in old..n {
            // SAFETY: start + n <= SLABS_PER_REGION (checked above).
            unsafe { SlabRef::from_parts(r, start + i) }.set_state(SlabState::RUN_TAIL);
        }
        slab.set_run_len(n);
        stats::add(&COUNTERS.run_slabs_in_use, n - old);
        // SAFETY: lock held, r live.
        unsafe { relist(st, r) };
        true
    })
}

/// Gives back a slab or run handed out by [`alloc_slab`] or [`alloc_run`].
///
/// # Safety
/// `slab` came from one of them, has not been given back since, and no
/// block in it is in use any more.
pub unsafe fn free_run(slab: SlabRef) {
    let was_slab = slab.state().contains(SlabState::IN_USE);
    // SAFETY: caller's contract.
    unsafe { release_run(slab, was_slab) };
}

/// Gives back a slab or run that a pointer being freed led to: the same as
/// [`free_run`], but the slab's state leaves "in use" with one
/// compare-and-swap first, so that of two frees of one run, racing or not,
/// exactly one gives it back. Err, and nothing done, for the other.
///
/// # Safety
/// `slab` was a slab or run head in use when [`crate::lookup`] found it,
/// and the caller gives up its block.
pub unsafe fn free_run_once(slab: SlabRef) -> Result<(), AlreadyFreed> {
    let was = slab.claim().ok_or(AlreadyFreed)?;
    // SAFETY: the claim made this caller the one that gives the run back.
    unsafe { release_run(slab, was.contains(SlabState::IN_USE)) };
    Ok(())
}

/// # Safety
/// As for [`free_run`]; `was_slab` says whether it was a single slab.
unsafe fn release_run(slab: SlabRef, was_slab: bool) {
    let n = slab.run_len();
    let start = slab.index();
    let r = slab.region();
    // Too much free memory resident already? Then this run goes back to the
    // kernel — *before* it is published as free: once its bits are set in
    // the free mask another thread may take it and write to it, and a purge
    // after that would zero live data.
    let purge = with_pool(|st| st.dirty_free_slabs + n > dirty_slab_limit());
    if purge {
        os::purge(slab.base(), n << SLAB_SHIFT);
        stats::add(&COUNTERS.slabs_purged, n);
    }
    let to_unmap = with_pool(|st| {
        for i in 0..n {
            // SAFETY: the run lies inside the region (it was handed out so).
            unsafe { SlabRef::from_parts(r, start + i) }.set_state(SlabState::empty());
        }
        if was_slab {
            stats::sub(&COUNTERS.slabs_in_use, 1);
        } else {
            stats::sub(&COUNTERS.runs_in_use, 1);
            stats::sub(&COUNTERS.run_slabs_in_use, n);
        }
        if !purge {
            st.dirty_free_slabs += n;
        }
        // SAFETY: lock held; the region is live while any of its slabs is used.
        unsafe { publish_free(st, r, run_mask(start, n), purge) }
    });
    unmap_all(to_unmap);
    decay();
    crate::background::note_pending();
}

/// Sets `bits` of `r` free (and clean, if `clean`), relists the region and,
/// when that left too many empty regions, takes the excess off the lists
/// for the caller to unmap after releasing the lock.
///
/// # Safety
/// The pool lock is held, `r` is live and the slabs of `bits` are out of
/// every hand.
unsafe fn publish_free(
    st: &mut PoolState,
    r: *mut RegionHeader,
    bits: u32,
    clean: bool,
) -> [*mut RegionHeader; 2] {
    let mut to_unmap = [ptr::null_mut(); 2];
    // SAFETY: caller's contract.
    let reg = unsafe { &mut *r };
    reg.free_mask |= bits;
    if clean {
        reg.clean_mask |= bits;
    }
    // SAFETY: caller's contract.
    unsafe { relist(st, r) };
    if reg.list == LIST_EMPTY {
        // The limit follows the heap's size: when the heap has shrunk,
        // regions retained while it was big go too (two a call, which
        // keeps up with one new empty region a call).
        for slot in &mut to_unmap {
            if st.empty_count <= burst_limit(st) {
                break;
            }
            // SAFETY: lock held; the empty list is not empty.
            *slot = unsafe { take_empty(st) };
        }
    }
    to_unmap
}

fn unmap_all(regions: [*mut RegionHeader; 2]) {
    for region in regions {
        if !region.is_null() {
            // Off every list under the lock: nobody can take from it any more.
            unmap_region(region);
        }
    }
}

/// The coarse-clock time (ms) at which the next decay pass is due.
static NEXT_DECAY_MS: AtomicU64 = AtomicU64::new(0);

/// Runs a decay pass if one is due: free slabs that were free and dirty at
/// the previous pass and have not been taken since are purged; the ones
/// free and dirty now are marked to go at the next pass. So a slab goes
/// back to the OS between one and two purge delays after it was freed, if
/// nobody wanted it meanwhile. Passes run on the pool's slow paths (a slab
/// or large block taken or given back) and on the huge cache's, and cost
/// one clock read when none is due; while the purge thread exists
/// ([`crate::background`]) they run there instead, and this costs one
/// load.
pub fn decay() {
    if crate::background::running() {
        return;
    }
    let now = os::now_ms();
    let due = NEXT_DECAY_MS.load(Ordering::Relaxed);
    if now < due {
        return;
    }
    if due == 0 {
        crate::background::first_pass(now);
    }
    let next = now + crate::options::get().purge_delay_ms as u64;
    if NEXT_DECAY_MS
        .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return; // another thread runs this pass
    }
    crate::huge::decay(false);
    purge_aged(false);
}

/// One decay pass over the pool's regions: each region is looked at once
/// (its `decay_epoch` says whether it was). Free dirty slabs that were
/// marked at the last pass are purged, the others marked; empty regions
/// beyond the retention limit that stayed empty since the last pass are
/// unmapped. The work goes in batches of [`DECAY_BATCH`] regions, the
/// purges and unmaps of a batch outside the lock. A slow path's pass
/// (`thread` false), which must stay short, stops after the first batch
/// (the regions beyond it wait for the next pass). The purge thread's pass
/// goes on until every region was looked at, and is lazier while the
/// program works: when the pool handed out slabs since its last pass, it
/// purges only the slabs that stayed free over two passes (reuse is
/// likely, and a purged slab costs page faults when it is taken again);
/// once the pool is quiet, the slabs free over one pass go too, so what a
/// burst left is back within two purge delays of its end. True when
/// memory is left that a later pass gives back.
pub(crate) fn purge_aged(thread: bool) -> bool {
    let (epoch, busy) = with_pool(|st| {
        st.decay_epoch = st.decay_epoch.wrapping_add(1);
        let busy = thread && st.grants != st.grants_at_pass;
        if thread {
            st.grants_at_pass = st.grants;
        }
        (st.decay_epoch, busy)
    });
    loop {
        let mut ripe = [(ptr::null_mut::<RegionHeader>(), 0u32); DECAY_BATCH];
        let mut count = 0;
        let mut idle = [ptr::null_mut::<RegionHeader>(); DECAY_BATCH];
        let batch = Batch {
            epoch,
            busy,
            ripe: &mut ripe,
            count: &mut count,
            idle: &mut idle,
        };
        // SAFETY: lock held inside.
        let more = with_pool(|st| unsafe { decay_batch(st, batch) });
        for r in idle.into_iter().take_while(|r| !r.is_null()) {
            // Off every list under the lock: nobody can take from it any more.
            unmap_region(r);
        }
        for &(r, bits) in &ripe[..count] {
            let mut rest = bits;
            while rest != 0 {
                let start = rest.trailing_zeros();
                let len = (rest >> start).trailing_ones();
                // SAFETY: the slabs lie inside the live region r.
                let base = unsafe { SlabRef::from_parts(r, start as usize) }.base();
                os::purge(base, (len as usize) << SLAB_SHIFT);
                stats::add(&COUNTERS.slabs_purged, len as usize);
                rest &= !run_mask(start as usize, len as usize);
            }
            // SAFETY: lock held inside; r is live (its hidden slabs kept it off
            // the empty list) and the slabs are out of every hand.
            let to_unmap = with_pool(|st| unsafe { publish_free(st, r, bits, true) });
            unmap_all(to_unmap);
        }
        if !more {
            return has_pending();
        }
        if !thread {
            return true;
        }
    }
}

/// What one batch of a decay pass works with.
struct Batch<'a> {
    /// The pass (see `RegionHeader::decay_epoch`).
    epoch: u32,
    /// Only slabs free over two passes are ripe.
    busy: bool,
    /// The regions with ripe slabs, and those slabs, found so far.
    ripe: &'a mut [(*mut RegionHeader, u32); DECAY_BATCH],
    count: &'a mut usize,
    /// Empty regions to unmap.
    idle: &'a mut [*mut RegionHeader; DECAY_BATCH],
}

/// One batch of a decay pass: looks at the regions that its pass has not
/// looked at yet, until `ripe` or `idle` is full (then true: regions are
/// left). Hides the ripe slabs from `grant` and takes the idle regions off
/// the lists, for the caller to purge and unmap after the lock.
///
/// # Safety
/// The pool lock is held.
unsafe fn decay_batch(st: &mut PoolState, b: Batch<'_>) -> bool {
    let Batch {
        epoch,
        busy,
        ripe,
        count,
        idle,
    } = b;
    let live = COUNTERS.regions_live.load(Ordering::Relaxed);
    let mut n_idle = 0;
    let mut more = false;
    // Empty regions first (those that go back are not looked at twice).
    'lists: for list in [LIST_EMPTY, LIST_PARTIAL] {
        let mut r = if list == LIST_EMPTY {
            st.empty
        } else {
            st.partial
        };
        while !r.is_null() {
            if *count == DECAY_BATCH || n_idle == DECAY_BATCH {
                more = true;
                break 'lists;
            }
            // SAFETY: list members are live regions; lock held.
            let reg = unsafe { &mut *r };
            let next = reg.next;
            if reg.decay_epoch == epoch {
                r = next;
                continue;
            }
            reg.decay_epoch = epoch;
            if list == LIST_EMPTY {
                // Beyond the retention limit and empty since the last
                // pass: back to the OS.
                if reg.empty_aged && st.empty_count > retention_limit_for(live - n_idle) {
                    // SAFETY: lock held; r is on the empty list.
                    unsafe { take_off_empty(st, r) };
                    idle[n_idle] = r;
                    n_idle += 1;
                    r = next;
                    continue;
                }
                reg.empty_aged = true;
            }
            let dirty = reg.free_mask & !reg.clean_mask;
            let old = if busy { reg.aged2_mask } else { reg.aged_mask } & dirty;
            reg.aged2_mask = reg.aged_mask & dirty & !old;
            reg.aged_mask = dirty & !old;
            if old != 0 {
                ripe[*count] = (r, old);
                *count += 1;
            }
            r = next;
        }
    }
    // Hide the ripe slabs from `grant` while they are purged outside
    // the lock: a slab taken meanwhile would have live data zeroed.
    for &(r, bits) in &ripe[..*count] {
        // SAFETY: lock held; r was listed, so live.
        let reg = unsafe { &mut *r };
        reg.free_mask &= !bits;
        st.dirty_free_slabs = st
            .dirty_free_slabs
            .saturating_sub(bits.count_ones() as usize);
        // SAFETY: as above. A region losing free slabs is not empty,
        // so it cannot be unmapped until they are published again.
        unsafe { relist(st, r) };
    }
    more
}

/// True when the pool holds memory a decay pass gives back: free slabs
/// not purged, or more empty regions than it keeps for good.
pub(crate) fn has_pending() -> bool {
    with_pool(|st| {
        let live = COUNTERS.regions_live.load(Ordering::Relaxed);
        st.dirty_free_slabs > 0 || st.empty_count > retention_limit_for(live)
    })
}

/// Takes the first region off the empty list, for unmapping.
///
/// # Safety
/// The pool lock is held and the empty list is not empty.
unsafe fn take_empty(st: &mut PoolState) -> *mut RegionHeader {
    let r = st.empty;
    // SAFETY: the caller's contract.
    unsafe { take_off_empty(st, r) };
    r
}

/// Takes `r` off the empty list, for unmapping; its dirty slabs stop
/// counting.
///
/// # Safety
/// The pool lock is held and `r` is on the empty list.
unsafe fn take_off_empty(st: &mut PoolState, r: *mut RegionHeader) {
    // SAFETY: the caller's contract.
    unsafe { unlink(st, r) };
    // SAFETY: as above: r is live.
    let clean = unsafe { (*r).clean_mask };
    st.dirty_free_slabs = st
        .dirty_free_slabs
        .saturating_sub((USABLE_MASK & !clean).count_ones() as usize);
}

/// Unmaps every retained empty region (the `malloc_trim` of this layer).
pub fn release_retained() {
    loop {
        let r = with_pool(|st| {
            if st.empty.is_null() {
                ptr::null_mut()
            } else {
                // SAFETY: lock held, the empty list is not empty.
                unsafe { take_empty(st) }
            }
        });
        if r.is_null() {
            return;
        }
        unmap_region(r);
    }
}

/// Slab bytes: the size of one slab.
pub const fn slab_bytes(n: usize) -> usize {
    n * SLAB_SIZE
}

pub(crate) fn lock() -> &'static RawLock {
    &POOL.lock
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_run_finds_lowest_fit() {
        assert_eq!(find_run(0b1110, 1), Some(1));
        assert_eq!(find_run(0b1110, 3), Some(1));
        assert_eq!(find_run(0b1110, 4), None);
        assert_eq!(find_run(0b1101_1010, 2), Some(3));
        assert_eq!(find_run(USABLE_MASK, crate::MAX_RUN_SLABS), Some(1));
    }

    /// The purge thread's pass: while the pool hands out slabs, a free slab
    /// goes only after two passes free; once it is quiet, after one.
    #[test]
    // Under Miri: maps regions (MAP_NORESERVE, which Miri does not support).
    #[cfg_attr(miri, ignore)]
    fn the_purge_threads_pass_waits_a_pass_more_while_the_pool_hands_out_slabs() {
        let purged = || crate::stats::snapshot().slabs_purged;
        let held = alloc_slab().unwrap();
        // A slab freed before the run, where the next single slab goes
        // (first fit), so that the grant below does not take one of the
        // run's slabs.
        let spacer = alloc_slab().unwrap();
        let a = alloc_run(4).unwrap();
        // SAFETY: ours, given back once, never touched again.
        unsafe {
            free_run(spacer.slab);
            free_run(a.slab);
        }
        // Slabs were handed out since the last pass: marks only.
        let p0 = purged();
        purge_aged(true);
        assert_eq!(purged(), p0, "purged at the first pass");
        // Another slab handed out: the pool is busy, the run free over one
        // pass only stays.
        let busy = alloc_slab().unwrap();
        purge_aged(true);
        assert_eq!(purged(), p0, "purged after one pass while busy");
        // Quiet since: it goes.
        purge_aged(true);
        assert_eq!(purged(), p0 + 4, "not purged once quiet");
        // Quiet all along: free over one pass is enough.
        let b = alloc_run(3).unwrap();
        purge_aged(true);
        // SAFETY: ours, given back once.
        unsafe { free_run(b.slab) };
        let p1 = purged();
        purge_aged(true);
        assert_eq!(purged(), p1, "purged at the pass that saw it free first");
        purge_aged(true);
        assert_eq!(purged(), p1 + 3, "not purged after a quiet pass");
        // SAFETY: ours, given back once.
        unsafe {
            free_run(busy.slab);
            free_run(held.slab);
        }
    }
}
