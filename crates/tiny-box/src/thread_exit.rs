//! The thread-exit hook of the box backend: a pthread-key destructor that
//! abandons the exiting thread's heap (see `superslab::thread_key`).

use hakmem_superslab::thread_key::ThreadExitKey;

use crate::box_backend::{abandon_heap, Heap};

extern "C" fn on_thread_exit(heap: *mut libc::c_void) {
    abandon_heap(heap.cast::<Heap>());
}

static KEY: ThreadExitKey = ThreadExitKey::new(on_thread_exit);

/// Creates the key now, so that its destructor runs after those of keys
/// created later (glibc runs them in key order).
pub fn init() {
    let _ = KEY.get();
}

/// Arranges for `heap` to be abandoned when the calling thread exits.
pub(crate) fn register(heap: *mut u8) {
    // SAFETY: the destructor takes the heap this thread registered.
    unsafe { KEY.arm(heap.cast()) };
}
