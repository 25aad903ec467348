//! The allocator-wide statistics snapshot.

use core::sync::atomic::{AtomicUsize, Ordering};

pub use hakmem_fastcache::ClassStats as FastClassStats;
use hakmem_superslab::SuperslabStats;
use hakmem_tiny_box::TinyBoxStats;

static INVALID_FREES: AtomicUsize = AtomicUsize::new(0);
static OUT_OF_MEMORY: AtomicUsize = AtomicUsize::new(0);

/// A plain snapshot of hakmem's accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// What the superslab layer holds from the OS.
    pub superslab: SuperslabStats,
    /// What the tiny-box layer holds.
    pub tiny_box: TinyBoxStats,
    /// Invalid frees reported since start.
    pub invalid_frees: usize,
    /// Allocations that returned null for lack of memory since start.
    pub out_of_memory: usize,
}

/// Per-class counters of the fast cache (exited threads merged, plus the
/// calling thread's); all zero in builds without the `fast-path` feature.
pub fn fast_cache_stats() -> [FastClassStats; hakmem_tiny_box::NUM_CLASSES] {
    #[cfg(feature = "fast-path")]
    {
        hakmem_fastcache::class_stats()
    }
    #[cfg(not(feature = "fast-path"))]
    {
        [FastClassStats::default(); hakmem_tiny_box::NUM_CLASSES]
    }
}

/// Reads every counter of every layer.
pub fn stats() -> Stats {
    Stats {
        superslab: hakmem_superslab::stats(),
        tiny_box: hakmem_tiny_box::stats(),
        invalid_frees: INVALID_FREES.load(Ordering::Relaxed),
        out_of_memory: OUT_OF_MEMORY.load(Ordering::Relaxed),
    }
}

pub(crate) fn invalid_free_caught() {
    INVALID_FREES.fetch_add(1, Ordering::Relaxed);
}

#[cold]
pub(crate) fn out_of_memory_cold() {
    out_of_memory();
}

pub(crate) fn out_of_memory() {
    OUT_OF_MEMORY.fetch_add(1, Ordering::Relaxed);
}

/// What hakmem holds and what the program uses, in bytes: the figures of
/// glibc's `mallinfo2`, `malloc_stats` and `malloc_info` (libhakmem.so),
/// derived from [`stats()`] and a few cold reads. Not one atomic cut:
/// other threads allocating meanwhile move the figures a little.
///
/// Exact: large runs, huge blocks, free slabs, cached huge mappings,
/// regions. Small blocks in use ([`Self::small_in_use_bytes`]) are the
/// blocks of the small slabs held, less the free ones the calling thread
/// can count without racing another thread: its own slabs' free blocks,
/// the abandoned slabs' (those of exited threads), every slab's in builds
/// without `box-refactor`, and the blocks in its own fast cache. So it is
/// exact for a program whose other threads hold no slabs (one thread, or
/// threads that exited), and otherwise an upper bound: other live
/// threads' slabs count free blocks as in use, and so do blocks in their
/// fast caches (at most two refill batches, 64 KiB, per class and
/// thread), blocks freed by one thread into another's slab until their
/// owner collects them, and in hardened builds blocks in the quarantine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Bytes of the 2 MiB regions mapped now (in use or kept empty).
    pub region_bytes: usize,
    /// Of those, the regions' header slabs (and hardened builds' guard
    /// slabs): metadata, never handed out.
    pub region_overhead_bytes: usize,
    /// Empty regions kept mapped for reuse: what `trim` unmaps of them.
    pub retained_region_bytes: usize,
    /// Slabs of small blocks held by tiny-box (64 KiB each).
    pub small_slab_bytes: usize,
    /// Bytes of the blocks of those slabs (the slabs less their tails).
    pub small_block_bytes: usize,
    /// Bytes of small blocks in use by the program (see the type's docs).
    pub small_in_use_bytes: usize,
    /// Free small blocks counted (the rest of `small_block_bytes` is in
    /// use, or free in another live thread's hands).
    pub small_free_blocks: usize,
    /// The same per size class (`hakmem_tiny_box::class_size` gives each
    /// class's block size).
    pub small_free_by_class: [usize; hakmem_tiny_box::NUM_CLASSES],
    /// Their bytes.
    pub small_free_bytes: usize,
    /// Of those, blocks in the calling thread's fast cache.
    pub cache_blocks: usize,
    /// Their bytes.
    pub cache_bytes: usize,
    /// Large blocks (runs of slabs) in use.
    pub large_blocks: usize,
    /// Their bytes (whole runs of 64 KiB slabs).
    pub large_bytes: usize,
    /// Free slabs in the regions (resident or purged).
    pub free_slabs: usize,
    /// Their bytes.
    pub free_slab_bytes: usize,
    /// Huge blocks (one mapping each) in use.
    pub huge_blocks: usize,
    /// Their mappings' bytes.
    pub huge_bytes: usize,
    /// The most huge blocks live at once.
    pub peak_huge_blocks: usize,
    /// The most bytes of huge blocks' mappings live at once.
    pub peak_huge_bytes: usize,
    /// Freed huge mappings kept for reuse (and quarantined, in hardened
    /// builds): how many.
    pub cached_huge: usize,
    /// Their bytes.
    pub cached_huge_bytes: usize,
    /// The shortest and the longest of them (0 when there is none).
    pub cached_huge_smallest: usize,
    /// See `cached_huge_smallest`.
    pub cached_huge_largest: usize,
    /// Permanent metadata (per-thread heaps and caches).
    pub metadata_bytes: usize,
    /// The most bytes hakmem had mapped at once (regions and huge
    /// mappings; metadata not included).
    pub peak_mapped_bytes: usize,
}

impl Default for MemoryUsage {
    fn default() -> Self {
        Self {
            region_bytes: 0,
            region_overhead_bytes: 0,
            retained_region_bytes: 0,
            small_slab_bytes: 0,
            small_block_bytes: 0,
            small_in_use_bytes: 0,
            small_free_blocks: 0,
            small_free_by_class: [0; hakmem_tiny_box::NUM_CLASSES],
            small_free_bytes: 0,
            cache_blocks: 0,
            cache_bytes: 0,
            large_blocks: 0,
            large_bytes: 0,
            free_slabs: 0,
            free_slab_bytes: 0,
            huge_blocks: 0,
            huge_bytes: 0,
            peak_huge_blocks: 0,
            peak_huge_bytes: 0,
            cached_huge: 0,
            cached_huge_bytes: 0,
            cached_huge_smallest: 0,
            cached_huge_largest: 0,
            metadata_bytes: 0,
            peak_mapped_bytes: 0,
        }
    }
}

impl MemoryUsage {
    /// Bytes in a slab (the unit of `free_slabs`).
    pub const SLAB_BYTES: usize = hakmem_superslab::SLAB_SIZE;

    /// The block size of size class `class` (an index of
    /// `small_free_by_class`).
    pub fn class_size(class: usize) -> usize {
        hakmem_tiny_box::class_size(class)
    }

    /// Bytes in use by the program outside huge blocks: small and large
    /// blocks (glibc's `uordblks`).
    pub fn arena_in_use_bytes(&self) -> usize {
        self.small_in_use_bytes + self.large_bytes
    }

    /// Bytes in use by the program, huge blocks included.
    pub fn in_use_bytes(&self) -> usize {
        self.arena_in_use_bytes() + self.huge_bytes
    }

    /// Bytes taken from the OS other than live huge blocks: regions,
    /// cached huge mappings, metadata (glibc's `arena`).
    pub fn arena_bytes(&self) -> usize {
        self.region_bytes + self.cached_huge_bytes + self.metadata_bytes
    }

    /// Free bytes held: free slabs, the free small blocks counted, cached
    /// huge mappings (glibc's `fordblks`). `arena_bytes` is this, plus
    /// `arena_in_use_bytes`, plus hakmem's own overhead (region headers,
    /// slab tails, metadata) and free small blocks it cannot count.
    pub fn free_bytes(&self) -> usize {
        self.free_slab_bytes + self.small_free_bytes + self.cached_huge_bytes
    }

    /// Bytes `trim` would give back to the OS now: retained empty regions
    /// and cached huge mappings (glibc's `keepcost`; empty slabs that
    /// `trim` also frees inside regions in use are not counted).
    pub fn releasable_bytes(&self) -> usize {
        self.retained_region_bytes + self.cached_huge_bytes
    }
}

/// Computes [`MemoryUsage`]: [`stats()`], the free blocks of the slabs the
/// calling thread can read (a walk of them, under the abandoned lists' or
/// the class locks), its fast cache's counts, and the huge cache (under
/// its lock). Cold: for statistics calls, never on an allocation path.
pub fn memory_usage() -> MemoryUsage {
    use hakmem_superslab::{huge, CHUNK_SIZE, MAX_RUN_SLABS, SLABS_PER_REGION, SLAB_SIZE};
    use hakmem_tiny_box::size_class::blocks_per_slab;
    use hakmem_tiny_box::{class_size, SelectedBackend, SmallBackend, NUM_CLASSES};

    let s = stats();
    let ss = s.superslab;
    let in_slabs = SelectedBackend::free_blocks_in_reach();
    #[cfg(feature = "fast-path")]
    let cached = hakmem_fastcache::held_counts();
    #[cfg(not(feature = "fast-path"))]
    let cached = [0u32; NUM_CLASSES];
    let mut u = MemoryUsage::default();
    for class in 0..NUM_CLASSES {
        let size = class_size(class);
        let slabs = s.tiny_box.slabs_by_class[class];
        u.small_block_bytes += slabs * blocks_per_slab(class) * size;
        let cache = cached[class] as usize;
        u.cache_blocks += cache;
        u.cache_bytes += cache * size;
        u.small_free_by_class[class] = in_slabs[class] + cache;
        u.small_free_blocks += in_slabs[class] + cache;
        u.small_free_bytes += (in_slabs[class] + cache) * size;
    }
    u.small_slab_bytes = ss.slabs_in_use * SLAB_SIZE;
    // The figures are read one after the other: keep them consistent.
    u.small_free_bytes = u.small_free_bytes.min(u.small_block_bytes);
    u.small_in_use_bytes = u.small_block_bytes - u.small_free_bytes;
    u.large_blocks = ss.runs_in_use;
    u.large_bytes = ss.run_slabs_in_use * SLAB_SIZE;
    u.region_bytes = ss.regions_live * CHUNK_SIZE;
    u.region_overhead_bytes = ss.regions_live * (SLABS_PER_REGION - MAX_RUN_SLABS) * SLAB_SIZE;
    u.retained_region_bytes = ss.regions_retained * CHUNK_SIZE;
    u.free_slabs =
        (ss.regions_live * MAX_RUN_SLABS).saturating_sub(ss.slabs_in_use + ss.run_slabs_in_use);
    u.free_slab_bytes = u.free_slabs * SLAB_SIZE;
    u.huge_blocks = ss.huge_in_use;
    u.huge_bytes = ss.huge_bytes_in_use;
    u.peak_huge_blocks = ss.peak_huge_in_use;
    u.peak_huge_bytes = ss.peak_huge_bytes;
    let c = huge::cached_mappings();
    u.cached_huge = c.count;
    u.cached_huge_bytes = c.bytes;
    u.cached_huge_smallest = c.smallest;
    u.cached_huge_largest = c.largest;
    u.metadata_bytes = ss.metadata_bytes;
    u.peak_mapped_bytes = ss.peak_mapped_bytes;
    u
}
