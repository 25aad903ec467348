//! Counters of this layer, bumped only on slab-level (rare) paths.

use core::sync::atomic::{AtomicUsize, Ordering};

static SLABS_HELD: AtomicUsize = AtomicUsize::new(0);
static SLABS_ABANDONED: AtomicUsize = AtomicUsize::new(0);
static SLABS_ADOPTED: AtomicUsize = AtomicUsize::new(0);
static HEAPS_CREATED: AtomicUsize = AtomicUsize::new(0);

/// A snapshot of the tiny-box layer's accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TinyBoxStats {
    /// Slabs this layer holds now (owned, abandoned, or on a legacy list).
    pub slabs_held: usize,
    /// Slabs left behind by exiting threads, since start.
    pub slabs_abandoned: usize,
    /// Abandoned slabs taken over by another thread, since start.
    pub slabs_adopted: usize,
    /// Per-thread heaps ever created (they are reused, never freed).
    pub heaps_created: usize,
}

/// Reads the counters.
pub fn snapshot() -> TinyBoxStats {
    TinyBoxStats {
        slabs_held: SLABS_HELD.load(Ordering::Relaxed),
        slabs_abandoned: SLABS_ABANDONED.load(Ordering::Relaxed),
        slabs_adopted: SLABS_ADOPTED.load(Ordering::Relaxed),
        heaps_created: HEAPS_CREATED.load(Ordering::Relaxed),
    }
}

pub(crate) fn slab_taken() {
    SLABS_HELD.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn slab_released() {
    SLABS_HELD.fetch_sub(1, Ordering::Relaxed);
}
pub(crate) fn slab_abandoned() {
    SLABS_ABANDONED.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn slab_adopted() {
    SLABS_ADOPTED.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn heap_created() {
    HEAPS_CREATED.fetch_add(1, Ordering::Relaxed);
}
