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
