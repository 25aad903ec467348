//! The atomics that other threads touch in a slab's and a heap's records,
//! and the spin-wait of the remote-free protocol: `core`'s normally, loom's
//! under `--cfg loom`, so that the protocol in `remote.rs` can be model
//! checked (`cargo xtask test` runs the loom models).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicUsize};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicUsize};

/// One step of a wait for another thread: a CPU hint, and under loom a
/// yield so the model checker schedules the thread being waited for.
#[inline]
pub(crate) fn spin_wait() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}
