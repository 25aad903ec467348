//! Counters of this layer: slab-level ones (rare paths) as shared atomics,
//! remote frees per thread (merged when the thread's heap is abandoned).

use core::cell::Cell;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::size_class::NUM_CLASSES;

static SLABS_HELD: AtomicUsize = AtomicUsize::new(0);
static SLABS_BY_CLASS: [AtomicUsize; NUM_CLASSES] = [const { AtomicUsize::new(0) }; NUM_CLASSES];
static SLABS_ABANDONED: AtomicUsize = AtomicUsize::new(0);
static SLABS_ADOPTED: AtomicUsize = AtomicUsize::new(0);
static HEAPS_CREATED: AtomicUsize = AtomicUsize::new(0);
static REMOTE_FREES_EXITED: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// Blocks this thread freed into other threads' (or abandoned) slabs.
    static REMOTE_FREES: Cell<usize> = const { Cell::new(0) };
}

/// A snapshot of the tiny-box layer's accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TinyBoxStats {
    /// Slabs this layer holds now (owned, abandoned, or on a legacy list).
    pub slabs_held: usize,
    /// The same, per size class.
    pub slabs_by_class: [usize; NUM_CLASSES],
    /// Slabs left behind by exiting threads, since start.
    pub slabs_abandoned: usize,
    /// Abandoned slabs taken over by another thread, since start.
    pub slabs_adopted: usize,
    /// Per-thread heaps ever created (they are reused, never freed).
    pub heaps_created: usize,
    /// Blocks freed by a thread into a slab it did not own (box backend),
    /// since start: exited threads' counts plus the calling thread's.
    pub remote_frees: usize,
}

impl Default for TinyBoxStats {
    fn default() -> Self {
        Self {
            slabs_held: 0,
            slabs_by_class: [0; NUM_CLASSES],
            slabs_abandoned: 0,
            slabs_adopted: 0,
            heaps_created: 0,
            remote_frees: 0,
        }
    }
}

/// Reads the counters.
pub fn snapshot() -> TinyBoxStats {
    TinyBoxStats {
        slabs_held: SLABS_HELD.load(Ordering::Relaxed),
        slabs_by_class: core::array::from_fn(|c| SLABS_BY_CLASS[c].load(Ordering::Relaxed)),
        slabs_abandoned: SLABS_ABANDONED.load(Ordering::Relaxed),
        slabs_adopted: SLABS_ADOPTED.load(Ordering::Relaxed),
        heaps_created: HEAPS_CREATED.load(Ordering::Relaxed),
        remote_frees: REMOTE_FREES_EXITED.load(Ordering::Relaxed) + REMOTE_FREES.with(Cell::get),
    }
}

pub(crate) fn slab_taken(class: usize) {
    SLABS_HELD.fetch_add(1, Ordering::Relaxed);
    SLABS_BY_CLASS[class].fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn slab_released(class: usize) {
    SLABS_HELD.fetch_sub(1, Ordering::Relaxed);
    SLABS_BY_CLASS[class].fetch_sub(1, Ordering::Relaxed);
}
pub(crate) fn slabs_abandoned(n: usize) {
    SLABS_ABANDONED.fetch_add(n, Ordering::Relaxed);
}
pub(crate) fn slab_adopted() {
    SLABS_ADOPTED.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn heap_created() {
    HEAPS_CREATED.fetch_add(1, Ordering::Relaxed);
}

/// Counts `n` remote frees of the calling thread (a thread-local add);
/// true when these are the thread's first since its counters were merged.
#[inline]
pub(crate) fn remote_frees(n: usize) -> bool {
    REMOTE_FREES.with(|c| {
        let before = c.get();
        c.set(before + n);
        before == 0
    })
}

/// Moves the calling thread's remote-free count into the shared total (at
/// thread exit).
pub(crate) fn merge_thread() {
    let n = REMOTE_FREES.with(|c| c.replace(0));
    if n != 0 {
        REMOTE_FREES_EXITED.fetch_add(n, Ordering::Relaxed);
    }
}
