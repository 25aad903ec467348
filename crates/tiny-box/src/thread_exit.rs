//! The thread-exit hook of the box backend: a pthread-key destructor that
//! abandons the exiting thread's heap (see `superslab::thread_key`).
//!
//! ## Allocations after the hook
//! glibc runs key destructors in rounds, at most four
//! (`PTHREAD_DESTRUCTOR_ITERATIONS`): a round calls the destructor of every
//! key whose value is set, and another round follows only if a destructor
//! set a value again. A program's own key, created after ours, may
//! allocate in its destructor after our hook ran, in any round, the last
//! one included. Re-attaching a heap and re-arming our key then would work
//! in every round but the last, which has no next: that heap, and the slabs
//! it holds, would belong to a dead thread for good (one of each per such
//! thread: the `late_destructor` test of the facade saw one heap created
//! per thread). We cannot tell which round is the last.
//!
//! So the hook marks the thread as exited first (a `const` thread-local
//! without a destructor, readable until the thread is gone), and from then
//! on the backend serves the thread one call at a time: an allocation or a
//! refill takes a heap from the pool, runs, and abandons the heap again
//! before it returns (`box_backend::with_heap`); its slabs go onto the
//! abandoned lists like any exiting thread's, for the next caller to adopt.
//! A free needs no heap: it is a remote free, as from any thread without
//! one, and its count is merged at once instead of at a later round. A late
//! allocation costs a few lock round-trips; nothing is left behind, in
//! whichever round it comes, and our key is never re-armed, so we never add
//! a round of our own.
//!
//! What this cannot catch: a thread whose very first use of this layer
//! comes in the last round (it never had a heap, so the hook never ran and
//! the thread is not marked). Its heap stays with it. Every thread that
//! allocated before its destructors began is covered.

use core::cell::Cell;

use hakmem_superslab::thread_key::ThreadExitKey;

use crate::box_backend::{abandon_heap, Heap};

/// The key's value for a thread that has no heap but counted remote frees:
/// at exit only its counters are merged.
const COUNTERS_ONLY: *mut libc::c_void = core::ptr::dangling_mut::<u64>().cast();

std::thread_local! {
    /// Set when the calling thread's exit hook has run.
    static EXITED: Cell<bool> = const { Cell::new(false) };
}

extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    // First: whatever allocates from here on gets a heap for one call only.
    EXITED.with(|e| e.set(true));
    if value != COUNTERS_ONLY {
        abandon_heap(value.cast::<Heap>());
    }
    crate::stats::merge_thread();
    // The heap is given up and no lock held (the layers above exited
    // before us): the empty slabs it released may have asked for the
    // purge thread.
    hakmem_superslab::background::start_if_wanted();
}

static KEY: ThreadExitKey = ThreadExitKey::new(on_thread_exit);

/// Creates the key now, so that its destructor runs after those of keys
/// created later (glibc runs them in key order).
pub fn init() {
    let _ = KEY.get();
}

/// True once the calling thread's exit hook has run.
#[inline]
pub(crate) fn exited() -> bool {
    EXITED.with(Cell::get)
}

/// Arranges for the calling thread's counters to be merged at exit, for a
/// thread without a heap (one that only frees into others' slabs); after
/// the exit hook ran, merges them now.
#[cold]
pub(crate) fn register_counters_only() {
    if exited() {
        crate::stats::merge_thread();
        return;
    }
    // SAFETY: the destructor recognises this marker and only merges counters.
    unsafe { KEY.arm(COUNTERS_ONLY) };
}

/// Arranges for `heap` to be abandoned when the calling thread exits.
pub(crate) fn register(heap: *mut u8) {
    // SAFETY: the destructor takes the heap this thread registered.
    unsafe { KEY.arm(heap.cast()) };
}
