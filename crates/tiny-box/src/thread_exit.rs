//! The thread-exit hook of the box backend: a pthread-key destructor that
//! abandons the exiting thread's heap (see `superslab::thread_key`).

use hakmem_superslab::thread_key::ThreadExitKey;

use crate::box_backend::{abandon_heap, Heap};

/// The key's value for a thread that has no heap but counted remote frees:
/// at exit only its counters are merged.
const COUNTERS_ONLY: *mut libc::c_void = core::ptr::dangling_mut::<u64>().cast();

extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    if value != COUNTERS_ONLY {
        abandon_heap(value.cast::<Heap>());
    }
    crate::stats::merge_thread();
}

static KEY: ThreadExitKey = ThreadExitKey::new(on_thread_exit);

/// Creates the key now, so that its destructor runs after those of keys
/// created later (glibc runs them in key order).
pub fn init() {
    let _ = KEY.get();
}

/// Arranges for the calling thread's counters to be merged at exit, for a
/// thread without a heap (one that only frees into others' slabs).
#[cold]
pub(crate) fn register_counters_only() {
    // SAFETY: the destructor recognises this marker and only merges counters.
    unsafe { KEY.arm(COUNTERS_ONLY) };
}

/// Arranges for `heap` to be abandoned when the calling thread exits.
pub(crate) fn register(heap: *mut u8) {
    // SAFETY: the destructor takes the heap this thread registered.
    unsafe { KEY.arm(heap.cast()) };
}
