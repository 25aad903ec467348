//! A pthread key whose destructor runs at thread exit: how the layers above
//! learn that a thread is going away, without allocating.
//!
//! glibc keeps the first 32 keys' values inside the thread descriptor (no
//! allocation) and runs key destructors after C++ and Rust `thread_local`
//! destructors, in key-creation order; so a layer that must run before
//! another creates its key first.

use core::ffi::c_void;
use core::sync::atomic::{AtomicUsize, Ordering};

/// A lazily created pthread key with a thread-exit destructor.
pub struct ThreadExitKey {
    /// 0: not created yet; otherwise the key plus one.
    key: AtomicUsize,
    on_exit: unsafe extern "C" fn(*mut c_void),
}

impl ThreadExitKey {
    /// A key whose destructor is `on_exit`, usable in a `static`. The
    /// destructor must not unwind.
    pub const fn new(on_exit: unsafe extern "C" fn(*mut c_void)) -> Self {
        Self {
            key: AtomicUsize::new(0),
            on_exit,
        }
    }

    /// The key, created on first use; `None` if the process ran out of keys.
    #[inline]
    pub fn get(&self) -> Option<libc::pthread_key_t> {
        match self.key.load(Ordering::Acquire) {
            0 => self.create(),
            k => Some((k - 1) as libc::pthread_key_t),
        }
    }

    #[cold]
    fn create(&self) -> Option<libc::pthread_key_t> {
        let mut new: libc::pthread_key_t = 0;
        // SAFETY: `new` is a valid out-pointer; the destructor never unwinds.
        if unsafe { libc::pthread_key_create(&mut new, Some(self.on_exit)) } != 0 {
            return None;
        }
        match self
            .key
            .compare_exchange(0, new as usize + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Some(new),
            Err(winner) => {
                // SAFETY: `new` was created above and never used.
                unsafe { libc::pthread_key_delete(new) };
                Some((winner - 1) as libc::pthread_key_t)
            }
        }
    }

    /// Arranges for the destructor to run with `value` when the calling
    /// thread exits (`value` must be non-null for it to run).
    ///
    /// # Safety
    /// The destructor must accept `value` at thread exit.
    pub unsafe fn arm(&self, value: *mut c_void) {
        if let Some(k) = self.get() {
            // SAFETY: the key exists; pthread_setspecific only stores the
            // value, which the caller vouches the destructor accepts.
            unsafe { libc::pthread_setspecific(k, value) };
        }
    }
}
