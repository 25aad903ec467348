//! The thread-exit hook of the box backend, through a pthread key.
//!
//! A pthread key's destructor runs at thread exit without allocating (the
//! first 32 keys live in the thread descriptor) and after Rust's and C++'s
//! `thread_local` destructors, which may still free memory into the heap.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::box_backend::{abandon_heap, Heap};

/// 0: not created yet; otherwise the key plus one.
static KEY: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_thread_exit(heap: *mut libc::c_void) {
    abandon_heap(heap.cast::<Heap>());
}

#[cold]
fn key() -> Option<libc::pthread_key_t> {
    let k = KEY.load(Ordering::Acquire);
    if k != 0 {
        return Some((k - 1) as libc::pthread_key_t);
    }
    let mut new: libc::pthread_key_t = 0;
    // SAFETY: `new` is a valid out-pointer; the destructor is an extern "C"
    // fn that never unwinds.
    if unsafe { libc::pthread_key_create(&mut new, Some(on_thread_exit)) } != 0 {
        return None;
    }
    match KEY.compare_exchange(0, new as usize + 1, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some(new),
        Err(winner) => {
            // SAFETY: `new` was created above and never used.
            unsafe { libc::pthread_key_delete(new) };
            Some((winner - 1) as libc::pthread_key_t)
        }
    }
}

/// Creates the key now, so that its destructor runs after those of keys
/// created later (glibc runs them in key order).
pub fn init() {
    let _ = key();
}

/// Arranges for `heap` to be abandoned when the calling thread exits.
pub(crate) fn register(heap: *mut u8) {
    if let Some(k) = key() {
        // SAFETY: the key exists; the value is only handed back to us.
        unsafe { libc::pthread_setspecific(k, heap.cast()) };
    }
}
