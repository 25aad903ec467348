//! # hakmem-fastcache: the per-thread fast path
//!
//! One intrusive free list per size class per thread, each with a count and
//! a bound. Allocation pops, free pushes; neither touches an atomic, a lock
//! or another function while the list has a block (on pop) or room (on
//! push). Everything else is `#[cold]` and out of line:
//!
//! - **refill**: an empty list is refilled with one batch through the
//!   tiny-box layer's [`SmallBackend::refill`] — the only refill path there
//!   is. (The C original's regression came from a second one.) Batches
//!   start small and double with each refill of the class up to the full
//!   batch ("slow start"): a thread that lives for a few hundred
//!   allocations does not carve, cache and hand back at exit a full batch
//!   of every class it touched.
//! - **past the bound**: a free into a full list (its bound: two full
//!   batches) goes straight back to its slab through [`SmallBackend::free`],
//!   as on the box path alone; a bulk free then touches each block once
//!   (batched drains walked each drained block a second time, cold). A
//!   list that overflowed and then ran empty between two refills doubles
//!   its bound, up to [`grown_bound_of`] (see `grow_bound`); `trim` and the
//!   thread's exit reset it.
//! - **foreign blocks**: a freed block whose slab another live thread
//!   allocates from (its [`SmallBackend::owner_of`] is neither null nor this
//!   thread's token) is never
//!   handed out by this thread: its neighbours on the cache line are that
//!   thread's, and reusing it here would make both threads write the line
//!   (passive false sharing). It waits on the class's outgoing list and
//!   goes back to its owner with the next batch: one
//!   [`SmallBackend::drain_slab_run`] (a remote push, no walk) when the
//!   batch is all of one slab, else one [`SmallBackend::drain`], which
//!   walks it to group it by slab. Blocks of exited threads' slabs are
//!   reused here.
//! - **thread exit**: a pthread-key destructor, registered on the thread's
//!   first slow path, hands every cached block back; afterwards the thread's
//!   bounds are zero, so a late free (from a later destructor) goes straight
//!   back to tiny-box and nothing is stranded.
//! - **the thread's own slabs** (with `initial-exec-tls` only, where a
//!   `free` without a size is the common one): a table of [`OWN_SLABS`]
//!   entries in the cache, each what a free needs of one slab of the
//!   thread's heap ([`hakmem_tiny_box::OwnSlab`]). [`own_block`] answers
//!   from it alone; [`free_remembering`] fills it on the way back from the
//!   registry; tiny-box's leaving hook ([`init`] sets it) empties an entry
//!   when its slab leaves the heap, and the whole table when the heap is
//!   abandoned.
//!
//! ## Invariants
//! - A list's length (a free list's `count()`, `entered - hits`; an
//!   outgoing list's `count`) is exactly the number of blocks on it.
//! - Allocation pops only the free lists; an outgoing list holds at most
//!   one batch after any free returns.
//! - Every cached block is a block of its list's class, out of its slab
//!   (counted as used there), and owned by no one else.
//! - The cache never allocates through the global allocator: its state is
//!   one `const`-initialised thread-local without a destructor, or (with
//!   `initial-exec-tls`) pooled metadata memory of the superslab's.
//! - An entry of the table of own slabs describes a slab in use of this
//!   thread's heap, of the entry's class (tiny-box's `own_slab` says why
//!   it stays so); an owner-token change empties the table.
//!
//! ## May call
//! `hakmem-tiny-box` (its [`SelectedBackend`]) and, past it, two pieces of
//! `hakmem-superslab`: `thread_key::ThreadExitKey`, the one implementation
//! of a thread-exit hook that both this layer and tiny-box use, and
//! `options`, the one table of tunables (both process-level facilities that
//! the bottom layer owns, like the OS calls).

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate std;

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use hakmem_superslab::thread_key::ThreadExitKey;
use hakmem_superslab::{SlabRef, SLAB_SHIFT};
use hakmem_tiny_box::{class_size, Block, Chain, SelectedBackend, SmallBackend, NUM_CLASSES};
use hakmem_tiny_box::{own_slab, OwnSlab};

/// Bytes one refill batch aims at by default, whatever the class.
pub const DEFAULT_BATCH_BYTES: usize = hakmem_superslab::options::DEFAULTS.fast_batch_bytes;
/// The most blocks in one refill batch by default.
pub const DEFAULT_MAX_BATCH: usize = hakmem_superslab::options::DEFAULTS.fast_max_batch;

/// 24 bytes, so some classes' lists straddle two cache lines (both stay in
/// L1 while the thread allocates). Aligning to 32 was measured and made
/// the 32 B class's hit path slower in the criterion bench (5.5 -> 9 ns),
/// likely 4K aliasing with the block it reuses; see issue 7's notes.
///
/// The list keeps no count of its own: its length is `entered - hits`
/// (modulo 2^32, exact since a list never holds 2^32 blocks). So a pop
/// writes one counter (`hits`, which is also the statistic) and a push one
/// (`entered`): the hit path is bound by stores, and a separate count and
/// hit counter cost a store more on every allocation (churn: 1.12x with one
/// store fewer, measured paired).
#[derive(Clone, Copy)]
#[repr(C)]
struct FreeList {
    head: *mut Block,
    /// Allocations served from the list (the `hits` statistic).
    hits: u64,
    /// Blocks that entered the list (pushed, or brought by a refill), minus
    /// those taken off other than by a pop (drains, flushes), modulo 2^32.
    entered: u32,
    /// More than this many blocks triggers a drain. Zero before the thread
    /// is set up and after it has exited, so every push takes the slow path.
    bound: u32,
}

impl FreeList {
    /// Blocks on the list.
    #[inline(always)]
    fn count(&self) -> u32 {
        self.entered.wrapping_sub(self.hits as u32)
    }

    /// Records that the list now holds `n` blocks (after a cold path took
    /// or put a batch).
    #[inline]
    fn set_count(&mut self, n: u32) {
        self.entered = (self.hits as u32).wrapping_add(n);
    }
}

/// Counters of one size class of the fast cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Allocations served from the list without leaving it.
    pub hits: u64,
    /// Allocations that found the list empty (each leads to a refill).
    pub misses: u64,
    /// Refill batches that brought blocks.
    pub refills: u64,
    /// Blocks brought by those batches.
    pub refill_blocks: u64,
    /// Blocks handed back past a full list: one for each free into a full
    /// list (the block goes straight back), one for each outgoing batch
    /// and each flush by `trim`.
    pub drains: u64,
    /// Blocks handed back by those drains.
    pub drain_blocks: u64,
    /// Blocks handed back when their thread exited.
    pub exit_flushed: u64,
}

impl ClassStats {
    const ZERO: Self = Self {
        hits: 0,
        misses: 0,
        refills: 0,
        refill_blocks: 0,
        drains: 0,
        drain_blocks: 0,
        exit_flushed: 0,
    };

    /// The counters in field order: hits, misses, refills, refill_blocks,
    /// drains, drain_blocks, exit_flushed.
    pub fn as_array(&self) -> [u64; 7] {
        [
            self.hits,
            self.misses,
            self.refills,
            self.refill_blocks,
            self.drains,
            self.drain_blocks,
            self.exit_flushed,
        ]
    }

    /// Counts `n` blocks handed back whole: flushed at exit, or (when
    /// there are any) one drain.
    fn count_handed_back(&mut self, n: usize, at_exit: bool) {
        if at_exit {
            self.exit_flushed += n as u64;
        } else if n > 0 {
            self.drains += 1;
            self.drain_blocks += n as u64;
        }
    }

    /// The inverse of [`Self::as_array`].
    pub fn from_array(a: [u64; 7]) -> Self {
        let [hits, misses, refills, refill_blocks, drains, drain_blocks, exit_flushed] = a;
        Self {
            hits,
            misses,
            refills,
            refill_blocks,
            drains,
            drain_blocks,
            exit_flushed,
        }
    }
}

/// Counters of threads that have exited, merged at their exit.
static EXITED: [[AtomicU64; 7]; NUM_CLASSES] =
    [const { [const { AtomicU64::new(0) }; 7] }; NUM_CLASSES];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Fresh,
    Active,
    Exited,
}

/// Blocks of slabs that other live threads own, freed by this thread and
/// on their way back (never handed out here: see [`free`]). Also the shape
/// of the profiler's `kept` lists, which leave `tail` and `mixed` alone.
#[derive(Clone, Copy)]
struct Outgoing {
    head: *mut Block,
    /// The first block pushed, so the chain's last: meaningful while
    /// `count > 0` on an outgoing list.
    tail: *mut Block,
    count: u32,
    /// Some block lies in another slab than the one pushed before it, so
    /// the list goes back through the walk that groups it by slab; while
    /// false, all its blocks are of one slab and it goes back whole (see
    /// [`free_foreign`]).
    mixed: bool,
}

impl Outgoing {
    const EMPTY: Self = Self {
        head: ptr::null_mut(),
        tail: ptr::null_mut(),
        count: 0,
        mixed: false,
    };
}

// `repr(C)`: the lists first and the fields the hit paths read at fixed
// places, whatever is added at the end (Rust's own field order moved the
// lists when the profiler's fields came, and the churn loop lost a
// register to it: 90 -> 92 instructions an operation).
#[repr(C)]
struct ThreadCache {
    lists: [FreeList; NUM_CLASSES],
    outgoing: [Outgoing; NUM_CLASSES],
    /// Blocks the next refill of each class asks for; 0 before the class's
    /// first refill in this thread. Read on the refill path only.
    next_batch: [u32; NUM_CLASSES],
    /// Cold-path counters (`hits` lives in the lists; frees past a full
    /// list in `full_frees`).
    counters: [ClassStats; NUM_CLASSES],
    phase: Phase,
    /// The thread's owner token in tiny-box ([`SmallBackend::owner_token`]),
    /// copied on each refill (the first one creates it), so that a free
    /// tells its own slabs from other threads' without a second
    /// thread-local. Null before the first refill and after the exit.
    owner: *const u8,
    /// True once an entry was made in `own_slabs` since it was last
    /// emptied: an empty table is not written again (a thread's exit and
    /// its heap's abandonment each empty it).
    own_slabs_dirty: bool,
    // What follows serves heap profiling alone (a `Sampler` set; see
    // `refill_sampled`) and is read on cold paths only.
    /// True once this thread's bounds are 0 for sampling.
    sampling: bool,
    /// Per class, the bytes of allocations left before its next sample
    /// point, less those of the blocks on its list (charged as they enter
    /// it); 0 before the first is drawn.
    until: [usize; NUM_CLASSES],
    /// Per class, blocks of this thread's (or abandoned) slabs freed while
    /// sampling when the list could take no more short of the sample
    /// point: refills take these first.
    kept: [Outgoing; NUM_CLASSES],
    /// The most blocks a list, and `kept`, hold per class while sampling
    /// (two batches, the lists' bound otherwise); beyond, a free goes
    /// straight back to its slab.
    kept_bound: [u32; NUM_CLASSES],
    /// Per class, frees that found the list full (each went straight back
    /// to its slab): a drain of one block each in the statistics. Kept
    /// apart from `counters` so that the free that counts it writes one
    /// counter, and so that a refill can tell the list overflowed since
    /// the class's last refill (see `grow_bound`).
    full_frees: [u64; NUM_CLASSES],
    /// Per class, `full_frees` at the class's last refill.
    full_frees_at_refill: [u64; NUM_CLASSES],
    /// Slabs of this thread's heap, by their slab number modulo
    /// [`OWN_SLABS`]: what lets a free without a size ([`own_block`]) find
    /// class and owner without the registry (see tiny-box's `own_slab` for
    /// why an entry stays true). Entries are made on a free's slow path
    /// ([`remember_own_slab`]) and dropped when tiny-box says the slab
    /// left the heap ([`forget_own_slab`]), or when the owner token
    /// changes. The shared caches' entries are all empty, never written.
    /// Last, so that a fresh cache is set up without writing it (see
    /// `ie_cache::publish_new`).
    own_slabs: [OwnSlab; OWN_SLABS],
}

/// Entries in a thread's table of its own slabs: 32 MiB of slabs, 8 KiB a
/// thread. Only where the cache is reached through the initial-exec slot
/// (`initial-exec-tls`: libhakmem.so, whose `free` has no size): there
/// the caches are memory of this layer's own, while `std::thread_local!`
/// caches are part of every thread's TLS block, which glibc zeroes at each
/// thread's start (thread-churn: 187 -> 210 instructions an operation with
/// a table there), for a table that a Rust program's sized frees never use.
/// A heap's slabs lie in 2 MiB regions that the kernel places apart (c-random's 1000 blocks of 8 B-16 KiB: over 16 MiB of addresses),
/// and a direct-mapped table that covers less misses on about one free in
/// ten (c-random: 128 and 256 entries, 9%; 512, none).
pub const OWN_SLABS: usize = if cfg!(ie_tls) { 512 } else { 0 };

impl ThreadCache {
    /// A cache before its thread's first slow path.
    const FRESH: Self = Self {
        lists: [FreeList {
            head: ptr::null_mut(),
            hits: 0,
            entered: 0,
            bound: 0,
        }; NUM_CLASSES],
        outgoing: [Outgoing::EMPTY; NUM_CLASSES],
        next_batch: [0; NUM_CLASSES],
        counters: [ClassStats::ZERO; NUM_CLASSES],
        phase: Phase::Fresh,
        owner: ptr::null(),
        sampling: false,
        until: [0; NUM_CLASSES],
        kept: [Outgoing::EMPTY; NUM_CLASSES],
        kept_bound: [0; NUM_CLASSES],
        full_frees: [0; NUM_CLASSES],
        full_frees_at_refill: [0; NUM_CLASSES],
        own_slabs_dirty: false,
        own_slabs: [OwnSlab::EMPTY; OWN_SLABS],
    };
}

/// The heap profiler's way into this layer's refill path (hakmem's `prof`
/// module, docs/PROFILING.md), set with [`set_sampler`].
///
/// While a sampler is set, each class of each thread counts down the bytes
/// of its allocations (block sizes) to its next sample point, drawn by
/// `interval` (exponentially distributed, so that every allocation of a
/// class of size *s* is sampled with probability `1 - exp(-s / mean)`,
/// whatever came before it). The count costs the hit paths nothing: a
/// refill puts on the list only as many blocks as the allocations that
/// stay short of the sample point, so the allocation that reaches it
/// misses and comes here, where `take` serves it. A freed block may enter
/// the list too, but only through the out-of-line free (`free_sampling`:
/// while sampling the lists' bounds are 0, so every free reaches it), which
/// charges the countdown for the allocation that will pop it and, past the
/// sample point, keeps the block in `kept` for the refill after the sample
/// instead. So the pops never reach the point, however they interleave
/// with pushes, and the thread still reuses the block it freed last.
#[derive(Debug)]
pub struct Sampler {
    /// Bytes to a class's next sample point (at least 1).
    pub interval: fn() -> usize,
    /// A sampled block of `class`, its allocation recorded; null when none
    /// could be had (the allocation is then served unsampled).
    pub take: fn(usize) -> *mut u8,
}

static SAMPLER: AtomicPtr<Sampler> = AtomicPtr::new(ptr::null_mut());

/// Starts sampling (see [`Sampler`]) for every thread from its next refill
/// on. Set once, before threads allocate much: it is never unset.
pub fn set_sampler(s: &'static Sampler) {
    SAMPLER.store(ptr::from_ref(s).cast_mut(), Ordering::Release);
}

/// The sampler, if one is set (read on cold paths only).
#[inline]
fn sampler() -> Option<&'static Sampler> {
    let s = SAMPLER.load(Ordering::Acquire);
    // SAFETY: only `set_sampler` stores, from a `&'static Sampler`.
    (!s.is_null()).then(|| unsafe { &*s })
}

// Without initial-exec-tls the cache is the thread-local itself. With it,
// the thread-local is one slot (see `ie_slot`) and the cache lives in
// memory of this layer's own (`ie_cache`): the whole TLS segment of
// libhakmem.so must then fit glibc's static surplus when it is
// `dlopen`ed, and 6.5 KiB of lists would not.
#[cfg(not(ie_tls))]
std::thread_local! {
    static CACHE: UnsafeCell<ThreadCache> = const { UnsafeCell::new(ThreadCache::FRESH) };
}

/// Blocks per refill of `class`: `HAKMEM_FAST_BATCH_BYTES` worth (default
/// [`DEFAULT_BATCH_BYTES`]), at least 2 and at most `HAKMEM_FAST_MAX_BATCH`
/// (default [`DEFAULT_MAX_BATCH`]). Read on cold paths only.
#[inline]
pub fn batch_of(class: usize) -> usize {
    let o = hakmem_superslab::options::get();
    (o.fast_batch_bytes / class_size(class)).clamp(2, o.fast_max_batch.max(2))
}

/// Divides the full batch for a thread's first refill of a class. Eight:
/// the original's thread-churn shape (about 110 allocations a class a
/// thread) cached 61 of every 64 blocks it refilled until its exit
/// flushed them; a long-lived thread reaches the full batch on its fourth
/// refill of the class.
const SLOW_START_DIVISOR: usize = 8;

/// Blocks in a thread's first refill of `class`: an eighth of
/// [`batch_of`], at least 2 (and never more than the full batch). Each
/// later refill of the class in that thread doubles, up to [`batch_of`].
#[inline]
pub fn first_batch_of(class: usize) -> usize {
    let full = batch_of(class);
    (full / SLOW_START_DIVISOR).max(2).min(full)
}

/// The bound of `class`'s list when its thread starts: two full batches.
#[inline]
pub fn bound_of(class: usize) -> usize {
    2 * batch_of(class)
}

/// Bytes a class's list may grow to hold (see `grow_bound`): 256 KiB, so
/// sixteen blocks of the 16 KiB class. (c-random in 2 threads, paired:
/// 128 KiB gained 1.1x, 256 KiB 1.35x, 512 KiB no more than 256.)
pub const GROWN_BOUND_BYTES: usize = 256 << 10;

/// The most blocks `class`'s list may grow to hold: [`GROWN_BOUND_BYTES`]
/// worth, at most two batches of `HAKMEM_FAST_MAX_BATCH`, and never less
/// than [`bound_of`].
#[inline]
pub fn grown_bound_of(class: usize) -> usize {
    let most = 2 * hakmem_superslab::options::get().fast_max_batch.max(2);
    (GROWN_BOUND_BYTES / class_size(class))
        .min(most)
        .max(bound_of(class))
}

/// A list that both ran empty (this refill) and overflowed since the
/// class's last refill swings wider than its bound: a thread whose live
/// blocks of the class go up and down by more than the bound (random
/// sizes replaced at random: c-random's 4-16 KiB classes, bound 4-16
/// blocks, refilled on 3-10% of their allocations) pays a refill and a
/// straight free for every swing. Such a list's bound doubles, up to
/// [`grown_bound_of`], and its refills bring half the bound. Only the
/// cold paths see it: the free past a full list counts itself
/// (`full_frees`) and the refill compares. The bound goes back to
/// [`bound_of`] when the thread's cache is flushed (`trim`) and at its exit.
fn grow_bound(c: &mut ThreadCache, class: usize) {
    let overflowed = c.full_frees[class] != c.full_frees_at_refill[class];
    c.full_frees_at_refill[class] = c.full_frees[class];
    let list = &mut c.lists[class];
    if overflowed && list.bound != 0 {
        list.bound = (2 * list.bound).min(grown_bound_of(class) as u32);
    }
}

/// Runs `f` on the calling thread's cache (the cold paths' way in).
#[cfg(not(ie_tls))]
#[inline(always)]
fn with_cache<R>(f: impl FnOnce(&mut ThreadCache) -> R) -> R {
    // SAFETY: this thread's alone; no reference outlives `f`, which never re-enters.
    f(unsafe { &mut *cache_of_thread() })
}

/// Runs `f` on the calling thread's cache (the cold paths' way in): a
/// thread not set up yet gets one now, in phase `Fresh`. After the
/// thread's exit (or when no memory could be had for a cache) `f` runs on
/// a throwaway cache in phase `Exited`: the callers then serve and free
/// directly, and nothing is kept.
#[cfg(ie_tls)]
fn with_cache<R>(f: impl FnOnce(&mut ThreadCache) -> R) -> R {
    let mut c = hot_cache();
    if is_unset(c) {
        c = ie_cache::publish_new();
    }
    if ie_cache::is_exited(c) {
        let mut scratch = ThreadCache {
            phase: Phase::Exited,
            ..ThreadCache::FRESH
        };
        return f(&mut scratch);
    }
    // SAFETY: this thread's own cache (neither shared static); no
    // reference outlives `f`, which never re-enters.
    f(unsafe { &mut *c })
}

/// The calling thread's cache, through `std::thread_local!`.
#[cfg(not(ie_tls))]
#[inline(always)]
fn cache_of_thread() -> *mut ThreadCache {
    // Only the address is taken inside `LocalKey::with`, so that its
    // closure stays trivial and is inlined whatever the caller does next.
    // The cache is a const-initialised thread-local without a destructor,
    // so its address is valid for the thread's whole life.
    CACHE.with(|c| c.get())
}

/// The calling thread's cache on the hit paths. With `initial-exec-tls`,
/// [`UNSET`] until the thread is set up ([`start_thread`] publishes its
/// cache): its lists are empty and its owner token matches no slab, so
/// every call on it takes a cold path, and no test for it sits on the hit
/// paths. Without the feature, the thread-local itself.
#[inline(always)]
fn hot_cache() -> *mut ThreadCache {
    #[cfg(ie_tls)]
    return ie_slot::get();
    #[cfg(not(ie_tls))]
    return cache_of_thread();
}

/// The cache of threads not set up yet, read and never written: its lists
/// are empty (an allocation refills, which sets the thread up) and its
/// owner token is its own address, which no slab has (a free takes the
/// cold path, which sets the thread up). Hit paths reach it only through
/// raw places, never a reference (threads share it).
// Its field is reached through the static's address (`ie_slot::unset`),
// which the compiler does not count as a read; without initial-exec-tls
// the whole of it is unused.
#[allow(dead_code)]
struct Unset(UnsafeCell<ThreadCache>);

// SAFETY: never written; read through raw pointers by any thread.
unsafe impl Sync for Unset {}

#[cfg_attr(not(ie_tls), allow(dead_code))]
static UNSET: Unset = Unset(UnsafeCell::new(ThreadCache {
    owner: &UNSET as *const Unset as *const u8,
    ..ThreadCache::FRESH
}));

/// True when `c` is [`UNSET`]; never without `initial-exec-tls`, where
/// the hit paths use the thread-local itself.
#[inline(always)]
fn is_unset(c: *mut ThreadCache) -> bool {
    #[cfg(ie_tls)]
    return core::ptr::eq(c, ie_slot::unset());
    #[cfg(not(ie_tls))]
    {
        let _ = c;
        false
    }
}

/// The caches of threads under `initial-exec-tls`: memory of this layer's
/// own (permanent metadata, like tiny-box's heaps), handed to a thread on
/// its first slow path and taken back at its exit, when the thread's slot
/// moves to [`ie_cache::EXITED`] for whatever it still does.
#[cfg(ie_tls)]
mod ie_cache {
    use super::{ie_slot, Phase, ThreadCache, Unset, UNSET};
    use core::cell::UnsafeCell;
    use core::ptr;
    use hakmem_superslab::lock::RawLock;

    /// The cache of exited threads (and of a thread whose cache could not
    /// be had): never written, empty lists, bounds 0, and an owner token
    /// (its own address) that no slab has, so every call on it reaches a
    /// cold path, which serves and frees directly.
    pub(super) static EXITED: Unset = Unset(UnsafeCell::new(ThreadCache {
        phase: Phase::Exited,
        owner: &EXITED as *const Unset as *const u8,
        ..ThreadCache::FRESH
    }));

    /// True when `c` is [`EXITED`].
    pub(super) fn is_exited(c: *mut ThreadCache) -> bool {
        ptr::eq(c, EXITED.0.get())
    }

    /// Caches given back by exited threads, linked through their first
    /// list's head (pool lock).
    struct Pool {
        lock: RawLock,
        head: UnsafeCell<*mut ThreadCache>,
    }

    // SAFETY: `head` is touched only with the lock held.
    unsafe impl Sync for Pool {}

    static POOL: Pool = Pool {
        lock: RawLock::new(),
        head: UnsafeCell::new(ptr::null_mut()),
    };

    /// Gives the calling thread a fresh cache and publishes it in its slot;
    /// [`EXITED`]'s address when no memory could be had.
    #[cold]
    pub(super) fn publish_new() -> *mut ThreadCache {
        let reused = POOL.lock.with(|| {
            // SAFETY: lock held: the only access to the pool.
            let head = unsafe { &mut *POOL.head.get() };
            let c = *head;
            if !c.is_null() {
                // SAFETY: a pooled cache, linked through its first head.
                *head = unsafe { (*c).lists[0].head }.cast();
            }
            c
        });
        let c = if reused.is_null() {
            let size = core::mem::size_of::<ThreadCache>();
            match hakmem_superslab::meta::alloc_permanent(size, 64) {
                Ok(p) => p.as_ptr().cast::<ThreadCache>(),
                Err(_) => EXITED.0.get(),
            }
        } else {
            reused
        };
        if !is_exited(c) {
            // Everything but the table of own slabs, which is empty in
            // both cases (zeroed memory, `OwnSlab::EMPTY` being zeros; a
            // pooled cache's was emptied when its thread's owner token
            // went), so that a thread's start does not write its 8 KiB:
            // UNSET is a fresh cache but for its owner token.
            let prefix = core::mem::offset_of!(ThreadCache, own_slabs);
            // SAFETY: memory of ours that no thread uses: a pooled cache or
            // a fresh permanent allocation of the right size and alignment;
            // UNSET is never written, and the two do not overlap.
            unsafe {
                debug_assert!(reused.is_null() || !(*c).own_slabs_dirty);
                ptr::copy_nonoverlapping(UNSET.0.get().cast::<u8>(), c.cast::<u8>(), prefix);
                (*c).owner = ptr::null();
            }
        }
        ie_slot::set(c);
        c
    }

    /// Called last at the thread's exit, once its cache holds nothing:
    /// moves the thread to [`EXITED`] and pools its cache.
    pub(super) fn retire(c: *mut ThreadCache) {
        ie_slot::set(EXITED.0.get());
        if is_exited(c) || ptr::eq(c, ie_slot::unset()) {
            return;
        }
        POOL.lock.with(|| {
            // SAFETY: lock held; `c` is ours, used by no thread from now on.
            unsafe {
                (*c).lists[0].head = (*POOL.head.get()).cast();
                *POOL.head.get() = c;
            }
        });
    }

    /// Takes the pool lock before `fork`.
    pub(super) fn prefork() {
        POOL.lock.lock();
    }

    /// Releases it in the parent after `fork`.
    pub(super) fn postfork_parent() {
        POOL.lock.unlock();
    }

    /// Resets it in the child after `fork`.
    pub(super) fn postfork_child() {
        POOL.lock.reset_after_fork();
    }
}

/// One pointer of initial-exec thread-local storage holding the address of
/// the thread's cache, so that the hit paths of a shared library
/// (libhakmem.so) reach their thread-local with two instructions instead
/// of a call of `__tls_get_addr`: what `-ftls-model=initial-exec` gives
/// mimalloc, written with `asm!` because stable Rust has no TLS-model
/// attribute. The slot is 8 bytes of the static TLS block, which `dlopen`
/// of the library after startup must find free in glibc's surplus (it
/// keeps hundreds of bytes for that; a full surplus fails the `dlopen`
/// with "cannot allocate memory in static TLS block"): see docs/C_ABI.md.
/// In an executable the linker relaxes the access to the local-exec model.
#[cfg(ie_tls)]
mod ie_slot {
    use super::ThreadCache;
    use core::arch::{asm, global_asm};

    global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".globl __hakmem_fastcache_slot",
        ".hidden __hakmem_fastcache_slot",
        ".type __hakmem_fastcache_slot,@object",
        ".size __hakmem_fastcache_slot,8",
        "__hakmem_fastcache_slot:",
        ".zero 8",
        ".popsection",
    );

    /// The slot's offset from the thread pointer, from the GOT entry the
    /// linker makes for it (a constant after relocation).
    #[inline(always)]
    fn offset() -> isize {
        let off: isize;
        // SAFETY: reads the GOT entry of the slot's TLS offset, which the
        // dynamic linker fills before any code of the library runs.
        unsafe {
            asm!(
                "movq __hakmem_fastcache_slot@GOTTPOFF(%rip), {off}",
                off = out(reg) off,
                options(att_syntax, pure, nomem, nostack, preserves_flags),
            )
        };
        off
    }

    /// The thread's cache: [`UNSET`](super::UNSET) plus the slot's value,
    /// which is the distance to the thread's cache once published and zero
    /// (the TLS block's initial value) before. (A distance rather than an
    /// address, so the initial value needs no relocation in the TLS
    /// image.)
    #[inline(always)]
    pub(super) fn get() -> *mut ThreadCache {
        let distance: usize;
        // SAFETY: %fs is the thread pointer; the slot lies at this offset
        // from it in every thread's static TLS block, initialised to zero.
        unsafe {
            asm!(
                "movq %fs:({off}), {v}",
                off = in(reg) offset(),
                v = out(reg) distance,
                options(att_syntax, pure, readonly, nostack, preserves_flags),
            )
        };
        unset().wrapping_byte_add(distance)
    }

    /// [`UNSET`](super::UNSET)'s address, PC-relative: from Rust, code
    /// inlined into another crate of libhakmem.so reaches this crate's
    /// static through a GOT entry (a load more on every call).
    #[inline(always)]
    pub(super) fn unset() -> *mut ThreadCache {
        let a: *mut ThreadCache;
        // SAFETY: computes an address; touches no memory.
        unsafe {
            asm!(
                "leaq {u}(%rip), {a}",
                u = sym super::UNSET,
                a = out(reg) a,
                options(att_syntax, pure, nomem, nostack, preserves_flags),
            )
        };
        a
    }

    /// Publishes the thread's cache.
    pub(super) fn set(cache: *mut ThreadCache) {
        let distance = (cache as usize).wrapping_sub(unset() as usize);
        // SAFETY: as in `get`; the slot is this thread's own.
        unsafe {
            asm!(
                "movq {v}, %fs:({off})",
                off = in(reg) offset(),
                v = in(reg) distance,
                options(att_syntax, nostack, preserves_flags),
            )
        };
    }
}

/// Sets the cache's owner token; a change empties its table of own
/// slabs, whose entries were the old token's.
fn set_owner(c: &mut ThreadCache, token: *const u8) {
    if c.owner != token {
        empty_own_slabs(c);
        c.owner = token;
    }
}

/// Empties the cache's table of its own slabs, unless it is empty.
fn empty_own_slabs(c: &mut ThreadCache) {
    if c.own_slabs_dirty {
        c.own_slabs = [OwnSlab::EMPTY; OWN_SLABS];
        c.own_slabs_dirty = false;
    }
}

/// The table entry for the slab at `base`.
#[inline(always)]
fn own_slab_index(addr: usize) -> usize {
    (addr >> SLAB_SHIFT) & OWN_SLABS.wrapping_sub(1)
}

/// A block that [`own_block`] found in one of the calling thread's slabs.
#[derive(Clone, Copy, Debug)]
pub struct OwnBlock {
    cache: *mut ThreadCache,
    class: usize,
}

impl OwnBlock {
    /// The block's class.
    pub fn class(&self) -> usize {
        self.class
    }
}

/// `p` as a block start of a slab of the calling thread's heap that its
/// table knows, with the block's class: a free without a size then needs
/// no registry lookup, no slab record and no owner test. `None` for
/// anything else (null, a slab the table does not know, an interior
/// pointer), which the caller looks up the long way. Reads no memory but
/// the thread's cache: safe for any value of `p`.
#[inline(always)]
pub fn own_block(p: *const u8) -> Option<OwnBlock> {
    if OWN_SLABS == 0 {
        return None;
    }
    let c = hot_cache();
    let i = own_slab_index(p as usize);
    // SAFETY: this thread's cache or a shared static, read through a raw
    // place; `i < OWN_SLABS`.
    let entry = unsafe {
        ptr::addr_of!((*c).own_slabs)
            .cast::<OwnSlab>()
            .add(i)
            .read()
    };
    let class = entry.class_of_block(p)?;
    Some(OwnBlock { cache: c, class })
}

/// Frees the block `p` that [`own_block`] found as `b`: as [`free_owned`]
/// with the thread's own token.
///
/// # Safety
/// `p` is the block [`own_block`] found as `b` on this thread, marked free
/// since, given up; nothing of this layer ran on the thread in between.
#[inline(always)]
pub unsafe fn free_own_block(b: OwnBlock, p: *mut u8) {
    // SAFETY: the table holds entries of the thread's own cache only (the
    // shared ones are empty), so `b.cache` is that cache.
    let owner = unsafe { (*b.cache).owner };
    // SAFETY: the caller's contract: a block of one of this thread's
    // slabs, of this class, given up.
    unsafe { push_local(b.cache, p, b.class, owner) }
}

/// [`free_owned`] of a block of `slab` found the long way (the free of a
/// pointer [`own_block`] did not know): a block of one of the thread's
/// own slabs also enters the slab in its table, so that the next free of
/// one of its blocks finds it there.
///
/// # Safety
/// As for [`free_owned`], and `slab` is `p`'s slab, in use when `owner`
/// was read from it.
#[inline(always)]
pub unsafe fn free_remembering(p: *mut u8, class: usize, owner: *const u8, slab: SlabRef) {
    let c = hot_cache();
    // Entered before the free, which may give an emptied slab back (and
    // its release then empties the entry again).
    // SAFETY: this thread's cache or UNSET, read through a raw place.
    if !owner.is_null() && owner == unsafe { (*c).owner } {
        // The thread's own slab: the shared caches' tokens are no slab's.
        remember_own_slab(c, slab);
    }
    // SAFETY: the caller's contract; `c` is this thread's cache.
    unsafe { free_owned_in(c, p, class, owner) }
}

/// Enters `slab`, a slab in use of the heap whose owner token is `c`'s,
/// in `c`'s table of its own slabs. The thread set tiny-box's hook when
/// it was set up (its token is a slab's only since), so the slab's
/// release empties the entry again.
#[inline(always)]
fn remember_own_slab(c: *mut ThreadCache, slab: SlabRef) {
    if OWN_SLABS == 0 {
        return;
    }
    let entry = OwnSlab::of(slab);
    // SAFETY: this thread's own cache (above), reached through raw places
    // with no reference to it alive; the index is in range.
    unsafe {
        ptr::addr_of_mut!((*c).own_slabs)
            .cast::<OwnSlab>()
            .add(own_slab_index(entry.base()))
            .write(entry);
        ptr::addr_of_mut!((*c).own_slabs_dirty).write(true);
    }
}

/// Tiny-box's hook: the slab at `base` (null: every slab) is no longer
/// the calling thread's, so its entry goes. Writes only a table with
/// entries, so never the shared caches'.
fn forget_own_slab(base: *const u8) {
    let c = hot_cache();
    // SAFETY: this thread's cache or a shared static, read through a raw
    // place; a shared cache's table is empty, its flag false.
    if OWN_SLABS == 0 || !unsafe { ptr::addr_of!((*c).own_slabs_dirty).read() } {
        return;
    }
    if base.is_null() {
        // SAFETY: a table with entries: this thread's own cache, of which
        // no other reference lives.
        return empty_own_slabs(unsafe { &mut *c });
    }
    // SAFETY: as above; the index is in range.
    let e = unsafe {
        ptr::addr_of_mut!((*c).own_slabs)
            .cast::<OwnSlab>()
            .add(own_slab_index(base as usize))
    };
    // SAFETY: as above.
    if unsafe { e.read() }.base() == base as usize {
        // SAFETY: as above.
        unsafe { e.write(OwnSlab::EMPTY) };
    }
}

/// A block of `class`, or null when memory cannot be had.
#[inline(always)]
pub fn alloc(class: usize) -> *mut u8 {
    let b = alloc_cached(class);
    if !b.is_null() {
        return b;
    }
    refill_and_take(class)
}

/// [`alloc`]'s hit path alone: a block off the thread's list of `class`,
/// or null when the list is empty (then [`alloc`], out of line, serves
/// the allocation: its own look at the list finds it empty and refills).
/// For a caller that does more after a miss than after a hit
/// (the C ABI's `malloc`, which sets `errno` when memory cannot be had) and
/// wants the miss as a tail call, leaving the hit path a leaf function
/// without a stack frame.
#[inline(always)]
pub fn alloc_cached(class: usize) -> *mut u8 {
    let c = hot_cache();
    // SAFETY: this thread's cache or UNSET, read through a raw place.
    let b = unsafe { (*c).lists[class].head };
    if !b.is_null() {
        // Not UNSET (its lists are empty): this thread's own.
        // SAFETY: this thread's cache; no other reference to the list lives.
        let list = unsafe { &mut (*c).lists[class] };
        // SAFETY: b heads this thread's list of free blocks.
        let next = unsafe { Block::next(b) };
        list.head = next;
        list.hits += 1;
        // The next pop reads `next`'s link: a list of blocks that came back
        // from other threads (a slab's remote frees, taken whole) is a
        // chain of cache misses, each found only by the one before; asked
        // for now, the line is on its way while the caller uses `b`
        // (c-xthread 1.27-1.45x; one instruction, on the hit path too).
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults, whatever the address (null
        // included).
        unsafe {
            core::arch::x86_64::_mm_prefetch(next.cast::<i8>(), core::arch::x86_64::_MM_HINT_T0)
        };
        return b.cast();
    }
    ptr::null_mut()
}

/// Frees a block of `class` into this thread's cache.
///
/// # Safety
/// `p` is a block of class `class` handed out by this layer or by
/// [`SelectedBackend`], and is not used again.
#[inline(always)]
pub unsafe fn free(p: *mut u8, class: usize) {
    // SAFETY: the caller's contract: a block of the backend, out.
    let owner = unsafe { SelectedBackend::owner_of(p) };
    // SAFETY: as above; the owner token is its slab's.
    unsafe { free_owned(p, class, owner) }
}

/// [`free`] for a caller that has already read the block's slab record:
/// `owner` is its [`SmallBackend::owner_of`].
///
/// # Safety
/// As for [`free`], and `owner` is the owner token of `p`'s slab.
#[inline(always)]
pub unsafe fn free_owned(p: *mut u8, class: usize, owner: *const u8) {
    // SAFETY: the caller's contract; the calling thread's cache.
    unsafe { free_owned_in(hot_cache(), p, class, owner) }
}

/// [`free_owned`] with the calling thread's cache already at hand.
///
/// # Safety
/// As for [`free_owned`], and `c` is [`hot_cache`]'s answer on this thread.
#[inline(always)]
unsafe fn free_owned_in(c: *mut ThreadCache, p: *mut u8, class: usize, owner: *const u8) {
    // SAFETY: this thread's cache or UNSET, read through a raw place.
    if owner != unsafe { (*c).owner } && (!owner.is_null() || is_unset(c)) {
        // SAFETY: the caller's contract.
        return unsafe { free_not_mine(c, p, class, owner) };
    }
    // `c` is not UNSET (its token is no slab's, and a null token was
    // tested above); an abandoned slab's block is reusable here.
    // SAFETY: the caller's contract; `c` is this thread's or EXITED.
    unsafe { push_local(c, p, class, owner) }
}

/// Pushes a block of one of this thread's slabs (or of an abandoned one)
/// onto its list, or past a full list straight back to its slab.
///
/// # Safety
/// As for [`free`]; `c` is this thread's own cache or (after the thread's
/// exit) the EXITED one, not [`UNSET`]; `owner` is `p`'s slab's token:
/// `c`'s own, or null (an abandoned slab).
#[inline(always)]
unsafe fn push_local(c: *mut ThreadCache, p: *mut u8, class: usize, owner: *const u8) {
    debug_assert!(class < NUM_CLASSES);
    // The bound is read through a raw place first: `c` may be the shared,
    // never-written EXITED cache (bound 0), of which no `&mut` may exist.
    // SAFETY: `c` is this thread's cache or a shared static; `class` is a
    // class (the caller's contract: a block of that class).
    let list = unsafe { ptr::addr_of_mut!((*c).lists).cast::<FreeList>().add(class) };
    // SAFETY: as above; shared reads only.
    if unsafe { (*list).count() >= (*list).bound } {
        // SAFETY: the caller's contract.
        return unsafe { free_full(c, p, class, owner) };
    }
    // A list with room belongs to this thread's own cache (the shared
    // caches' bounds are 0).
    // SAFETY: this thread's own list; no other reference to it lives.
    let list = unsafe { &mut *list };
    // SAFETY: the caller gives the block up to us.
    unsafe { push(&mut list.head, p) };
    list.entered = list.entered.wrapping_add(1);
}

/// A free into a full list: the block goes straight back to its slab, as
/// on the box path alone, rather than onto the list to be handed back
/// with a batch later. A thread that frees in bulk (a collection dropped)
/// then touches each block once; pushed and drained, each was touched
/// again by the drain's walk of the list, cold by then (json, collections:
/// the fast path was 0.77-0.80x the box path alone). A block of this
/// thread's own slab is freed locally without the backend looking its
/// owner and heap up again (out of line: inlined, the backend's free took
/// registers that every free then saved).
///
/// One call out of the inlined free, whatever the case (a second call
/// made `__rust_dealloc` too big to inline into its callers: churn 89 ->
/// 102 instructions an op).
///
/// # Safety
/// As for [`push_local`].
#[inline(never)]
unsafe fn free_full(c: *mut ThreadCache, p: *mut u8, class: usize, owner: *const u8) {
    // SAFETY: `c` is this thread's cache or EXITED: a shared read.
    if unsafe { (*c).lists[class].bound } == 0 {
        // SAFETY: as above (the shared caches never sample).
        if !unsafe { (*c).sampling } {
            // Not set up yet, or past the thread's exit.
            // SAFETY: the caller's contract.
            return unsafe { free_past_bound(p, class) };
        }
        // SAFETY: a cache that samples is this thread's own; the caller's
        // contract.
        if unsafe { free_sampling(c, p, class) } {
            return;
        }
        // No room anywhere: straight back, as into a full list.
    }
    // SAFETY: a bound is non-zero (or sampling set) only in a cache set up
    // and not yet exited: this thread's own, no other reference to it alive.
    unsafe { (*c).full_frees[class] += 1 };
    if owner.is_null() {
        // SAFETY: the caller's contract: a block of an abandoned slab.
        return unsafe { free_full_abandoned(p) };
    }
    // SAFETY: the caller's contract: `owner` is this thread's token.
    unsafe { SelectedBackend::free_own(p, owner) }
}

/// [`free_full`] while heap profiling samples (a [`Sampler`] set: the
/// lists' bounds are 0, so every free of a block of this thread's comes
/// here). The block goes onto its list, as it would without sampling, if
/// the list has room (two batches) and the class's countdown allows one
/// more allocation off the list short of the sample point: the countdown
/// is charged when a block enters the list, by a refill or here, so that
/// however pops and pushes interleave, the allocation that reaches the
/// point finds the list empty. Past the point, the block waits in `kept`
/// for the refill after the sample. False: neither had room (the caller
/// frees it as into a full list).
///
/// # Safety
/// As for [`free_full`], and `c` is this thread's own cache.
#[inline(always)]
unsafe fn free_sampling(c: *mut ThreadCache, p: *mut u8, class: usize) -> bool {
    // SAFETY: the caller's contract: this thread's own cache, no other
    // reference to it alive.
    let c = unsafe { &mut *c };
    let size = class_size(class);
    let list = &mut c.lists[class];
    if list.count() < c.kept_bound[class] && c.until[class] > size {
        c.until[class] -= size;
        // SAFETY: the caller gives the block up to us.
        unsafe { push(&mut list.head, p) };
        list.entered = list.entered.wrapping_add(1);
        return true;
    }
    let k = &mut c.kept[class];
    if k.count < c.kept_bound[class] {
        // SAFETY: as above.
        unsafe { push(&mut k.head, p) };
        k.count += 1;
        return true;
    }
    false
}

/// [`free_full`] of a block of an abandoned slab (apart, so that the
/// common case saves no registers for the backend's general free).
///
/// # Safety
/// As for [`free_full`].
#[cold]
#[inline(never)]
unsafe fn free_full_abandoned(p: *mut u8) {
    // SAFETY: the caller's contract: a block of the backend, out.
    unsafe { SelectedBackend::free(p) }
}

/// A free past a list's bound on a thread whose cache is not set up yet
/// (its bounds are 0), or after its exit.
///
/// # Safety
/// As for [`free`]: a block of this thread's slabs or of an abandoned one.
#[cold]
#[inline(never)]
unsafe fn free_past_bound(p: *mut u8, class: usize) {
    // One visit to the cache: the phase, and the count if it is not fresh.
    let fresh = with_cache(|c| {
        if c.phase == Phase::Fresh {
            return true;
        }
        let k = &mut c.counters[class];
        k.drains += 1;
        k.drain_blocks += 1;
        false
    });
    if fresh {
        start_thread();
        // SAFETY: the caller's contract; the bounds are set now.
        return unsafe { free(p, class) };
    }
    // SAFETY: the caller's contract: a block of the backend, out.
    unsafe { SelectedBackend::free(p) };
}

/// A free of a block that is not this thread's to cache: another live
/// thread's (sent back to it), or any block on a thread not set up yet.
///
/// # Safety
/// As for [`free_owned`]; `c` is [`hot_cache`]'s answer.
#[inline(always)]
unsafe fn free_not_mine(c: *mut ThreadCache, p: *mut u8, class: usize, owner: *const u8) {
    if is_unset(c) {
        // SAFETY: the caller's contract.
        return unsafe { free_unset(p, class, owner) };
    }
    #[cfg(ie_tls)]
    if ie_cache::is_exited(c) {
        // SAFETY: the caller's contract: a block of the backend, out.
        return unsafe { free_after_exit(p) };
    }
    // A block of a slab that another live thread allocates from is not
    // handed out again here: two threads would write one cache line
    // (passive false sharing). It goes back to its owner, in a batch.
    // SAFETY: the caller's contract: a block of the backend, out; `c` is
    // this thread's cache.
    unsafe { free_foreign(c, p, class) }
}

/// A free after the thread's exit: nothing is cached, the block goes
/// straight back (out of line: inlined, the backend's free took registers
/// that every free then saved and restored).
///
/// # Safety
/// As for [`free`].
#[cfg(ie_tls)]
#[cold]
#[inline(never)]
unsafe fn free_after_exit(p: *mut u8) {
    // SAFETY: the caller's contract: a block of the backend, out.
    unsafe { SelectedBackend::free(p) }
}

/// A free on a thread whose cache is not published yet (its first call
/// into hakmem may be a free): sets the thread up, then frees as usual.
///
/// # Safety
/// As for [`free_owned`].
#[cold]
#[inline(never)]
unsafe fn free_unset(p: *mut u8, class: usize, owner: *const u8) {
    // (Under initial-exec-tls, `with_cache` publishes the thread's cache.)
    if with_cache(|c| c.phase) == Phase::Fresh {
        start_thread();
    }
    // SAFETY: the caller's contract; the cache is published now.
    unsafe { free_owned(p, class, owner) }
}

/// Pushes the block at `p` onto the list `head` (its length is the
/// caller's to count).
///
/// # Safety
/// `p` is a block given up to the caller, on no list.
#[inline(always)]
unsafe fn push(head: &mut *mut Block, p: *mut u8) {
    let b = p.cast::<Block>();
    // SAFETY: the caller's contract: the block is ours to link.
    unsafe { Block::set_next(b, *head) };
    *head = b;
}

/// A block of another live thread's slab onto the class's outgoing list,
/// which goes back past half the bound ([`drain_outgoing`]). A list whose
/// blocks are all of one slab (a run: what a thread frees of a batch
/// another thread allocated) goes back with one remote push and no walk;
/// the walk that groups a list by slab reads every link again, cold by
/// then (15% of c-xthread's samples). A list that mixes slabs (frees in
/// random order: Larson's) is walked and grouped as before: sending a run
/// of one block each time the slab changed cost Larson 6% more
/// instructions an operation.
///
/// Inlined: out of line it cost thread-churn, whose threads free many
/// blocks of other live threads, about 9% (9 pairs), for no measurable
/// gain on the hit path.
///
/// # Safety
/// As for [`free`]; `c` is the calling thread's cache.
#[inline(always)]
unsafe fn free_foreign(c: *mut ThreadCache, p: *mut u8, class: usize) {
    // SAFETY: this thread's cache, reached field by field.
    let bound = unsafe { (*c).lists[class].bound };
    // SAFETY: as above; no other reference to the list lives.
    let list = unsafe { &mut (*c).outgoing[class] };
    if list.count == 0 {
        list.tail = p.cast();
    } else if !SelectedBackend::same_slab(list.head.cast(), p) {
        list.mixed = true;
    }
    // SAFETY: the caller gives the block up to us.
    unsafe { push(&mut list.head, p) };
    list.count += 1;
    if list.count > bound / 2 {
        drain_outgoing(class);
    }
}

/// Hands a class's outgoing blocks back to their slabs in one chain.
///
/// While heap profiling samples, the bounds are 0 and every free of
/// another thread's block comes here: the blocks still go back a batch at
/// a time, as without sampling, except when the block just freed is a
/// sampled one (of a detached slab), whose free the profiler must see now.
#[cold]
#[inline(never)]
fn drain_outgoing(class: usize) {
    // One visit to the cache, unless the thread is not set up yet.
    let look = |c: &mut ThreadCache| {
        let o = &c.outgoing[class];
        (
            c.phase,
            c.sampling,
            o.head,
            o.count,
            c.kept_bound[class] / 2,
        )
    };
    let mut seen = with_cache(look);
    if seen.0 == Phase::Fresh {
        start_thread();
        seen = with_cache(look);
    }
    let (_, sampling, head, count, batch) = seen;
    if sampling && count <= batch {
        // SAFETY: `head` was just freed onto the outgoing list: a block of
        // the backend, out (not given back yet), whose slab is live.
        let owner = unsafe { SelectedBackend::owner_of(head.cast()) };
        if owner != hakmem_tiny_box::detached::detached_owner() {
            return;
        }
    }
    return_outgoing(class, false);
}

/// Hands the outgoing list of `class` back to tiny-box, whole (walked
/// only if it mixes slabs), counting its blocks as drained or (at thread
/// exit) as flushed at exit.
fn return_outgoing(class: usize, at_exit: bool) {
    let (chain, tail, mixed) = with_cache(|c| {
        let list = &mut c.outgoing[class];
        let chain = Chain {
            head: list.head,
            len: list.count as usize,
        };
        let (tail, mixed) = (list.tail, list.mixed);
        *list = Outgoing::EMPTY;
        c.counters[class].count_handed_back(chain.len, at_exit);
        (chain, tail, mixed)
    });
    if chain.is_empty() {
        return;
    }
    if mixed {
        // SAFETY: the chain's blocks were freed to us as blocks of this class.
        unsafe { SelectedBackend::drain(chain, class) };
    } else {
        // SAFETY: as above, and all of the head's slab (`free_foreign`),
        // `tail` the last.
        unsafe { SelectedBackend::drain_slab_run(chain, tail, class) };
    }
}

/// How many batches' worth of a slab's whole local free list a refill
/// takes rather than walk the list to cut one batch off: more as the
/// thread's refills of the class go on. A long-lived thread keeps what it
/// takes (c-xthread, whose threads refill from lists that other threads'
/// frees filled: 27 -> 45 M ops/s from 4 batches to 64); a short-lived
/// one would hand it back at its exit, walking it then (thread-churn lost
/// 0.83x with 16 batches from the first refill).
fn whole_factor(refills: u64) -> usize {
    ((refills / 2) as usize).clamp(hakmem_tiny_box::REFILL_WHOLE, MAX_WHOLE_BATCHES)
}

/// The most batches a refill takes whole (see [`whole_factor`]).
const MAX_WHOLE_BATCHES: usize = 64;

#[cold]
#[inline(never)]
fn refill_and_take(class: usize) -> *mut u8 {
    let phase = with_cache(|c| c.phase);
    if phase == Phase::Exited {
        // The thread is exiting: serve directly, cache nothing.
        return SelectedBackend::alloc(class);
    }
    if phase == Phase::Fresh {
        start_thread();
    }
    if let Some(s) = sampler() {
        return refill_sampled(class, s);
    }
    let refills = with_cache(|c| {
        grow_bound(c, class);
        c.counters[class].refills
    });
    let want = next_want(class);
    let whole = want * whole_factor(refills);
    let mut chain = SelectedBackend::refill_whole(class, want, whole);
    let token = SelectedBackend::owner_token();
    with_cache(|c| {
        set_owner(c, token);
        let k = &mut c.counters[class];
        k.misses += 1;
        if chain.len > 0 {
            k.refills += 1;
            k.refill_blocks += chain.len as u64;
        }
    });
    // SAFETY: the chain is ours, freshly handed out.
    let Some(first) = (unsafe { chain.pop() }) else {
        return ptr::null_mut();
    };
    with_cache(|c| {
        let list = &mut c.lists[class];
        debug_assert!(list.head.is_null());
        list.head = chain.head;
        list.set_count(chain.len as u32);
    });
    first.cast()
}

/// Blocks the next refill of `class` asks for: the thread's slow start
/// (see [`first_batch_of`]), doubling up to [`batch_of`].
fn next_want(class: usize) -> usize {
    with_cache(|c| {
        let full = batch_of(class).max(c.lists[class].bound as usize / 2);
        let want = match c.next_batch[class] as usize {
            0 => first_batch_of(class),
            n => n.min(full),
        };
        c.next_batch[class] = (2 * want).min(full) as u32;
        want
    })
}

/// [`refill_and_take`] while a [`Sampler`] is set: counts this allocation
/// against the class's sample point, has the sampler serve it if it
/// reaches the point, and otherwise refills the list with at most the
/// blocks of the allocations that stay short of the next one (taken from
/// `kept` first). Every block on the list is then an allocation to come,
/// so the countdown is charged for them at once.
#[cold]
#[inline(never)]
fn refill_sampled(class: usize, s: &'static Sampler) -> *mut u8 {
    if !with_cache(|c| c.sampling) {
        // Set up before the sampler was: hand the lists back, then take
        // no more frees on them.
        flush(false);
        with_cache(start_sampling);
    }
    let size = class_size(class);
    if with_cache(|c| c.until[class]) == 0 {
        let first = (s.interval)().max(1);
        with_cache(|c| c.until[class] = first);
    }
    let reaches = with_cache(|c| {
        c.counters[class].misses += 1;
        let until = &mut c.until[class];
        if *until <= size {
            return true;
        }
        *until -= size;
        false
    });
    if reaches {
        // The next interval starts after this allocation.
        let next = (s.interval)().max(1);
        with_cache(|c| c.until[class] = next);
        let p = (s.take)(class);
        if !p.is_null() {
            return p;
        }
        // Not sampled after all (the profiler was busy on this thread, or
        // had no memory): served as any other.
    }
    let want = next_want(class);
    // This block and the list's: short of the sample point, and a batch.
    let room = with_cache(|c| (c.until[class] - 1) / size);
    let need = 1 + room.min(want - 1);
    let (mut chain, tail) = with_cache(|c| take_kept(&mut c.kept[class], need));
    if chain.len < need {
        let more = SelectedBackend::refill_whole(class, need - chain.len, need - chain.len);
        with_cache(|c| {
            set_owner(c, SelectedBackend::owner_token());
            if more.len > 0 {
                let k = &mut c.counters[class];
                k.refills += 1;
                k.refill_blocks += more.len as u64;
            }
        });
        if tail.is_null() {
            chain = more;
        } else {
            // SAFETY: `tail` ends the chain taken from `kept`, ours.
            unsafe { Block::set_next(tail, more.head) };
            chain.len += more.len;
        }
    }
    // SAFETY: the chain is ours, freshly handed out.
    let Some(first) = (unsafe { chain.pop() }) else {
        return ptr::null_mut();
    };
    with_cache(|c| {
        let list = &mut c.lists[class];
        debug_assert!(list.head.is_null());
        list.head = chain.head;
        list.set_count(chain.len as u32);
        c.until[class] -= chain.len * size;
    });
    first.cast()
}

/// Makes the cache `c` (of a thread set up, holding no blocks on its
/// lists) take no frees on its lists: every free of its own blocks then
/// reaches [`free_past_bound`], which keeps it in `kept`.
fn start_sampling(c: &mut ThreadCache) {
    for (class, list) in c.lists.iter_mut().enumerate() {
        list.bound = 0;
        c.kept_bound[class] = bound_of(class) as u32;
    }
    c.sampling = true;
}

/// Up to `n` blocks off `kept` as a chain, with its last block (null for
/// none).
fn take_kept(kept: &mut Outgoing, n: usize) -> (Chain, *mut Block) {
    let len = (kept.count as usize).min(n);
    if len == 0 {
        return (Chain::new(), ptr::null_mut());
    }
    let head = kept.head;
    let mut tail = head;
    for _ in 1..len {
        // SAFETY: `kept` holds at least `len` blocks, all ours.
        tail = unsafe { Block::next(tail) };
    }
    // SAFETY: as above.
    kept.head = unsafe { Block::next(tail) };
    kept.count -= len as u32;
    // SAFETY: `tail` is ours, cut off `kept` now.
    unsafe { Block::set_next(tail, ptr::null_mut()) };
    (Chain { head, len }, tail)
}

/// Takes the whole of `list` as a chain: it already ends in null, so
/// nothing is walked (at thread exit a walk was a cache miss a block, 9%
/// of the original's thread-churn shape).
fn take_all(list: &mut FreeList) -> Chain {
    let chain = Chain {
        head: list.head,
        len: list.count() as usize,
    };
    list.head = ptr::null_mut();
    list.set_count(0);
    chain
}

/// Sets up the calling thread on its first slow path, whichever it is (a
/// refill, a drain, an outgoing batch).
fn start_thread() {
    // Our exit key before tiny-box's, so ours runs first at exit.
    init();
    let token = SelectedBackend::owner_token();
    let sampling = sampler().is_some();
    with_cache(|c| {
        for (class, list) in c.lists.iter_mut().enumerate() {
            list.bound = bound_of(class) as u32;
        }
        c.phase = Phase::Active;
        set_owner(c, token);
        if sampling {
            start_sampling(c);
        }
    });
    // SAFETY: the destructor ignores its value; any non-null one makes it run.
    unsafe { KEY.arm(core::ptr::dangling_mut::<libc::c_void>()) };
}

/// Hands every cached block of the calling thread back to tiny-box. The
/// cache stays usable; lists that had grown (see `grow_bound`) start
/// again from their first bound.
pub fn flush_thread() {
    flush(false);
    with_cache(|c| {
        if c.phase == Phase::Active && !c.sampling {
            for (class, list) in c.lists.iter_mut().enumerate() {
                list.bound = bound_of(class) as u32;
            }
            // Overflows before the flush say nothing of the lists after it.
            c.full_frees_at_refill = c.full_frees;
        }
    });
}

/// Hands every cached block back, counting them as drained or (at thread
/// exit) as flushed at exit.
fn flush(at_exit: bool) {
    for class in 0..NUM_CLASSES {
        return_outgoing(class, at_exit);
        let chain = with_cache(|c| {
            let chain = take_all(&mut c.lists[class]);
            c.counters[class].count_handed_back(chain.len, at_exit);
            if c.sampling {
                // The countdown was charged for these blocks' allocations,
                // which will not happen now.
                c.until[class] += chain.len * class_size(class);
            }
            chain
        });
        // SAFETY: cached blocks of this class.
        unsafe { SelectedBackend::drain(chain, class) };
        let kept = with_cache(|c| {
            let k = &mut c.kept[class];
            let chain = Chain {
                head: k.head,
                len: k.count as usize,
            };
            k.head = ptr::null_mut();
            k.count = 0;
            c.counters[class].count_handed_back(chain.len, at_exit);
            chain
        });
        if !kept.is_empty() {
            // SAFETY: blocks of this class freed to us while sampling.
            unsafe { SelectedBackend::drain(kept, class) };
        }
    }
}

/// The calling thread's counters, per class.
fn thread_stats() -> [ClassStats; NUM_CLASSES] {
    with_cache(|c| {
        let mut out = c.counters;
        for ((o, l), &full) in out.iter_mut().zip(c.lists.iter()).zip(c.full_frees.iter()) {
            o.hits = l.hits;
            o.drains += full;
            o.drain_blocks += full;
        }
        out
    })
}

/// Counters per class: every exited thread's, merged when it exited, plus
/// the calling thread's. (Other live threads' counters join when they exit.)
pub fn class_stats() -> [ClassStats; NUM_CLASSES] {
    let mut out = thread_stats();
    for (o, merged) in out.iter_mut().zip(EXITED.iter()) {
        let mine = o.as_array();
        *o = ClassStats::from_array(core::array::from_fn(|i| {
            mine[i] + merged[i].load(Ordering::Relaxed)
        }));
    }
    out
}

/// Blocks cached by the calling thread, per class (on its lists, and
/// while heap profiling samples, kept for its next refills).
pub fn cached_counts() -> [u32; NUM_CLASSES] {
    with_cache(|c| {
        let mut out = [0; NUM_CLASSES];
        for ((o, l), k) in out.iter_mut().zip(c.lists.iter()).zip(c.kept.iter()) {
            *o = l.count() + k.count;
        }
        out
    })
}

/// Blocks of other live threads' slabs the calling thread freed and holds
/// until its next batch goes back to them, per class.
pub fn outgoing_counts() -> [u32; NUM_CLASSES] {
    with_cache(|c| {
        let mut out = [0; NUM_CLASSES];
        for (o, l) in out.iter_mut().zip(c.outgoing.iter()) {
            *o = l.count;
        }
        out
    })
}

/// Blocks the calling thread's cache holds, per class: on its free list
/// and on its outgoing list. Unlike [`cached_counts`], it never sets the
/// thread up (a thread not set up yet, or past its exit, holds none), so
/// a statistics call from a thread that never allocated leaves nothing
/// behind.
pub fn held_counts() -> [u32; NUM_CLASSES] {
    let c = hot_cache();
    core::array::from_fn(|class| {
        // SAFETY: this thread's cache, or a shared one that is never
        // written (UNSET, EXITED): plain reads through raw places.
        let (listed, outgoing, kept) = unsafe {
            (
                (*c).lists[class]
                    .entered
                    .wrapping_sub((*c).lists[class].hits as u32),
                (*c).outgoing[class].count,
                (*c).kept[class].count,
            )
        };
        listed.wrapping_add(outgoing).wrapping_add(kept)
    })
}

extern "C" fn on_thread_exit(_: *mut libc::c_void) {
    flush(true);
    for (class, k) in thread_stats().iter().enumerate() {
        for (slot, v) in EXITED[class].iter().zip(k.as_array()) {
            if v != 0 {
                slot.fetch_add(v, Ordering::Relaxed);
            }
        }
    }
    with_cache(|c| {
        for list in c.lists.iter_mut() {
            list.bound = 0;
            // Zero blocks: detached by the flush above.
            list.hits = 0;
            list.set_count(0);
        }
        c.counters = [ClassStats::ZERO; NUM_CLASSES];
        c.full_frees = [0; NUM_CLASSES];
        c.full_frees_at_refill = [0; NUM_CLASSES];
        c.next_batch = [0; NUM_CLASSES];
        c.phase = Phase::Exited;
        set_owner(c, ptr::null());
        // (`kept` was emptied by the flush.)
        c.sampling = false;
        c.until = [0; NUM_CLASSES];
        c.kept_bound = [0; NUM_CLASSES];
    });
    #[cfg(ie_tls)]
    ie_cache::retire(hot_cache());
}

/// Takes this layer's lock (the cache pool's, under `initial-exec-tls`)
/// before `fork`.
pub fn prefork() {
    #[cfg(ie_tls)]
    ie_cache::prefork();
}

/// Releases it in the parent after `fork`.
pub fn postfork_parent() {
    #[cfg(ie_tls)]
    ie_cache::postfork_parent();
}

/// Resets it in the child after `fork`.
pub fn postfork_child() {
    #[cfg(ie_tls)]
    ie_cache::postfork_child();
}

static KEY: ThreadExitKey = ThreadExitKey::new(on_thread_exit);

/// Creates this layer's thread-exit key, then tiny-box's, so that at thread
/// exit the cache is flushed before tiny-box abandons the thread's heap.
pub fn init() {
    let _ = KEY.get();
    hakmem_tiny_box::init();
    // Before the thread's first entry in its table of own slabs: a thread
    // is set up (here) before its owner token is a slab's.
    // (OWN_SLABS is a constant 0 without `initial-exec-tls`.)
    #[allow(clippy::absurd_extreme_comparisons)]
    if OWN_SLABS > 0 {
        own_slab::set_leaving_hook(forget_own_slab);
    }
}
