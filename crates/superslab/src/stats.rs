//! Counters of what this layer holds from the OS.
//!
//! Updated only on rare paths (a region or huge block mapped or released, a
//! slab handed out or taken back), so plain relaxed atomics cost nothing
//! that matters.

use core::sync::atomic::{AtomicUsize, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        pub(crate) struct Counters { $(pub(crate) $name: AtomicUsize,)* }
        pub(crate) static COUNTERS: Counters = Counters { $($name: AtomicUsize::new(0),)* };

        /// A snapshot of the superslab layer's accounting.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct SuperslabStats { $($(#[$doc])* pub $name: usize,)* }

        /// Reads every counter (each is exact; the set is not one atomic cut).
        pub fn snapshot() -> SuperslabStats {
            SuperslabStats { $($name: COUNTERS.$name.load(Ordering::Relaxed),)* }
        }
    };
}

counters! {
    /// Bytes currently mapped from the OS for regions and huge blocks.
    mapped_bytes,
    /// The highest `mapped_bytes` has been.
    peak_mapped_bytes,
    /// Regions mapped since start.
    regions_mapped,
    /// Regions given back to the OS since start.
    regions_released,
    /// Regions mapped now (in use or kept empty for reuse).
    regions_live,
    /// Empty regions kept mapped for reuse (the hysteresis).
    regions_retained,
    /// Slabs handed to the layer above and not yet given back.
    slabs_in_use,
    /// Large runs (several contiguous slabs) handed out and not given back.
    runs_in_use,
    /// Slabs in those runs (each run's length, as grown in place).
    run_slabs_in_use,
    /// Slabs made non-resident with `MADV_DONTNEED` since start.
    slabs_purged,
    /// Huge blocks handed out and not yet freed.
    huge_in_use,
    /// Bytes of those blocks' mappings (whole mappings: header page and
    /// slack included).
    huge_bytes_in_use,
    /// The most huge blocks live at once.
    peak_huge_in_use,
    /// The highest `huge_bytes_in_use` has been.
    peak_huge_bytes,
    /// Huge blocks mapped since start (cache hits not included).
    huge_mapped,
    /// Huge blocks served from the huge cache since start.
    huge_cache_hits,
    /// Bytes of address space for bookkeeping that lives forever (heaps,
    /// the registry is not counted).
    metadata_bytes,
    /// Times the OS refused a mapping.
    map_failures,
    /// Purge threads started in this process (`HAKMEM_BACKGROUND_PURGE`;
    /// at most one at a time, a `fork` child starts its own).
    purge_threads,
    /// Times starting one failed (`pthread_create` refused: then never
    /// again in this process).
    purge_thread_failures,
    /// Decay passes the purge thread ran.
    purge_passes,
}

pub(crate) fn add(c: &AtomicUsize, n: usize) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn sub(c: &AtomicUsize, n: usize) {
    c.fetch_sub(n, Ordering::Relaxed);
}

/// A huge block of a `len`-byte mapping handed out (fresh or cached).
pub(crate) fn huge_taken(len: usize) {
    let blocks = COUNTERS.huge_in_use.fetch_add(1, Ordering::Relaxed) + 1;
    COUNTERS
        .peak_huge_in_use
        .fetch_max(blocks, Ordering::Relaxed);
    let bytes = COUNTERS.huge_bytes_in_use.fetch_add(len, Ordering::Relaxed) + len;
    COUNTERS.peak_huge_bytes.fetch_max(bytes, Ordering::Relaxed);
}

/// A huge block of a `len`-byte mapping freed (or not handed out after all).
pub(crate) fn huge_given_back(len: usize) {
    sub(&COUNTERS.huge_in_use, 1);
    sub(&COUNTERS.huge_bytes_in_use, len);
}

pub(crate) fn add_mapped(n: usize) {
    let now = COUNTERS.mapped_bytes.fetch_add(n, Ordering::Relaxed) + n;
    COUNTERS.peak_mapped_bytes.fetch_max(now, Ordering::Relaxed);
}
