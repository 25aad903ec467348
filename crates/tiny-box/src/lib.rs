//! # hakmem-tiny-box: small objects
//!
//! The layer between the superslab (which hands out 64 KiB slabs) and the
//! per-thread fast cache. It owns:
//!
//! - **size classes** ([`size_class`]): 65 classes from 8 B to
//!   [`SMALL_MAX`] (16 KiB), constant-time size-to-class mapping;
//! - **slab metadata**: per slab, a local free list, a bump pointer over
//!   blocks never handed out, a count of blocks out, and (box backend) an
//!   owner and a lock-free remote free list;
//! - **two backends** behind one trait, [`SmallBackend`]:
//!   [`BoxBackend`] (slabs owned by one thread, remote frees, abandon and
//!   adopt at thread exit) and [`LegacyBackend`] (per-class lists behind a
//!   lock). Both are always compiled and tested; the `box-refactor` feature
//!   picks which one is [`SelectedBackend`], the one the layers above use;
//! - **the free mark** ([`free_mark`]): what makes a freed block
//!   recognisable as free in every build, so the facade can refuse a
//!   second free of it; requests of 8 bytes or less get 16-byte blocks, so
//!   every free block has room for its link and its mark;
//! - **the batch API** for the layer above: [`SmallBackend::refill`] hands
//!   out up to N blocks of a class as one [`Chain`], [`SmallBackend::drain`]
//!   takes a chain back.
//!
//! ## Invariants
//! - A slab's plain fields are touched only by its holder (box: the owning
//!   heap's thread, or whoever took it off the abandoned list; legacy: the
//!   holder of the class lock). Other threads touch only its atomics.
//! - `used` counts every block out of a slab; a slab goes back to the
//!   superslab only at `used == 0`, with no pending-stack entry and no
//!   freer still inside its remote word.
//! - Blocks freed through one backend were allocated through the same one.
//! - No allocation through the global allocator, no panics on any path
//!   reachable from the C ABI, no locks or atomics on the box backend's
//!   owner-local alloc and free.
//!
//! ## Hardened builds (`secure` feature)
//! Free-list links are encoded with the region's secret and checked on
//! every read (cheaply: see `hardening` for which check runs where); the
//! free mark is keyed by the block's address and a region secret
//! ([`free_mark`]); fresh slabs hand their blocks out in a random
//! order, shuffled about 8 KiB at a time from a random start so that a
//! slab only begun stays on its first pages (`slab.rs`).
//!
//! ## May call
//! `hakmem-superslab` (slabs, the lock, permanent metadata) and `libc`
//! (pthread keys, `sched_yield`, `nanosleep`). Never the fast cache above it.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate std;

mod block;
mod box_backend;
pub mod detached;
pub mod free_mark;
#[cfg(feature = "secure")]
pub mod hardening;
mod legacy;
pub mod own_slab;
mod remote;
pub mod size_class;
mod slab;
mod stats;
mod sync;
mod thread_exit;

pub use block::{Block, Chain};
pub use box_backend::{BoxBackend, REFILL_WHOLE};
pub use legacy::LegacyBackend;
pub use own_slab::OwnSlab;
pub use size_class::{class_for_layout, class_size, size_to_class, NUM_CLASSES, SMALL_MAX};
pub use stats::{snapshot as stats, TinyBoxStats};

use core::ptr;

use hakmem_superslab::SlabRef;

/// The backend the layers above use: [`BoxBackend`] with the `box-refactor`
/// feature, [`LegacyBackend`] without.
#[cfg(feature = "box-refactor")]
pub type SelectedBackend = BoxBackend;
/// The backend the layers above use: [`BoxBackend`] with the `box-refactor`
/// feature, [`LegacyBackend`] without.
#[cfg(not(feature = "box-refactor"))]
pub type SelectedBackend = LegacyBackend;

/// What every small-object backend offers the layer above.
pub trait SmallBackend {
    /// A short name for tables and test output.
    const NAME: &'static str;

    /// One block of `class`, or null when memory cannot be had.
    fn alloc(class: usize) -> *mut u8;

    /// Frees one block, from any thread.
    ///
    /// # Safety
    /// `p` was returned by this backend's `alloc` or `refill` and is not
    /// used again.
    unsafe fn free(p: *mut u8);

    /// [`Self::free`] of a block whose slab the caller found to be the
    /// calling thread's own: `owner` is [`Self::owner_of`] `p`, non-null,
    /// and the calling thread's [`Self::owner_token`]. A backend with
    /// owners frees it locally without looking either up again.
    ///
    /// # Safety
    /// As for [`Self::free`], and `owner` is as above.
    #[inline(always)]
    unsafe fn free_own(p: *mut u8, owner: *const u8) {
        let _ = owner;
        // SAFETY: the caller's contract.
        unsafe { Self::free(p) }
    }

    /// The owner token of the slab holding `p`: the token of the live
    /// thread that allocates from it, or null when no live thread does (an
    /// abandoned slab, or a backend without owners). A block whose slab
    /// another live thread owns must not be reused here: its neighbours on
    /// the cache line are that thread's.
    ///
    /// # Safety
    /// `p` is a block this backend handed out, not yet given back.
    #[inline(always)]
    unsafe fn owner_of(p: *const u8) -> *const u8 {
        let _ = p;
        ptr::null()
    }

    /// The calling thread's owner token (what [`Self::owner_of`] answers for
    /// the slabs it allocates from), or null before the thread has any.
    /// It changes only on the backend's slow paths (the first refill
    /// creates it), so a caller may keep it from one of them to the next.
    #[inline(always)]
    fn owner_token() -> *const u8 {
        ptr::null()
    }

    /// `max` blocks of `class` (`max >= 1`) in one chain, fewer only when
    /// memory cannot be had (an empty chain: none at all); or more, up to
    /// [`REFILL_WHOLE`] times `max`, when a slab's whole local free list
    /// comes without a walk (the box backend).
    fn refill(class: usize, max: usize) -> Chain;

    /// [`Self::refill`], with the caller's allowance for a whole local
    /// free list: up to `whole` blocks (`whole >= max`) when a slab's whole
    /// list comes without a walk. A caller that keeps what it gets (a
    /// long-lived thread's cache) asks for more than [`REFILL_WHOLE`]
    /// batches; one that would hand most of it back soon (a short-lived
    /// thread) should not.
    fn refill_whole(class: usize, max: usize, whole: usize) -> Chain {
        let _ = whole;
        Self::refill(class, max)
    }

    /// Takes back a chain of blocks of `class`, from any thread. Hardened
    /// builds check each block's slab against `class` (see
    /// the `hardening` module).
    ///
    /// # Safety
    /// Every block came from this backend, is of class `class`, and is
    /// given up.
    unsafe fn drain(chain: Chain, class: usize);

    /// True when blocks `a` and `b` of this backend lie in one slab, so
    /// that a chain of such blocks can go back with [`Self::drain_slab_run`].
    /// The default (a backend that cannot tell cheaply) answers false.
    #[inline(always)]
    fn same_slab(a: *const u8, b: *const u8) -> bool {
        let _ = (a, b);
        false
    }

    /// [`Self::drain`] of a chain whose blocks all lie in the slab of its
    /// head (each pair passed [`Self::same_slab`]), `tail` its last block.
    /// The box backend pushes it onto that slab's remote list whole,
    /// without walking it (each link a cache miss by then); the default
    /// walks it as [`Self::drain`] does.
    ///
    /// # Safety
    /// As for [`Self::drain`], and the chain is as above.
    unsafe fn drain_slab_run(chain: Chain, tail: *mut Block, class: usize) {
        let _ = tail;
        // SAFETY: the caller's contract.
        unsafe { Self::drain(chain, class) }
    }

    /// Gives back every empty slab this backend can reach: the calling
    /// thread's and the abandoned ones (the `malloc_trim` of this layer).
    fn trim();

    /// Gives back what any thread may while the others run, for the purge
    /// thread (`hakmem_superslab::background`): the box backend's
    /// abandoned slabs whose blocks have all come back; the legacy
    /// backend's empty slabs (its class heads included, as [`Self::trim`]).
    /// Never a live thread's own slabs, whose fields only their owner
    /// touches. True when abandoned slabs with blocks out are left, which
    /// a later sweep may find given back. Takes locks; never allocates.
    fn sweep() -> bool;

    /// Free blocks per class (capacity less `used`) in the slabs whose
    /// counts the calling thread may read without racing their holder: the
    /// box backend's calling thread's own slabs and the abandoned ones
    /// (under their lock); every slab of the legacy backend (under each
    /// class lock). Other live threads' slabs are not counted. Blocks
    /// freed onto a slab's remote list count as out until they are
    /// collected. For statistics: walks slabs, cold.
    fn free_blocks_in_reach() -> [usize; NUM_CLASSES];

    /// Takes this backend's locks before `fork`.
    fn prefork();
    /// Releases them in the parent after `fork`.
    fn postfork_parent();
    /// Resets them in the child after `fork`.
    fn postfork_child();
}

/// The class of the slab `slab` (a slab handed out to this layer).
pub fn slab_class(slab: SlabRef) -> usize {
    // SAFETY: the slab is held by this layer, so its client area holds a
    // SlabMeta written when it was set up.
    usize::from(unsafe { &*slab.client::<slab::SlabMeta>() }.class)
}

/// True when `p` is the start of a block of `slab` (a slab of this layer).
pub fn is_block_start(slab: SlabRef, p: *const u8) -> bool {
    block_of(slab, p).is_some()
}

/// What a free needs to know of the block at `p` in `slab` (a slab of this
/// layer, in use): its class and its slab's owner token (see
/// [`SmallBackend::owner_of`]), or `None` when `p` is not the start of a
/// block. One read of the slab's record; the start test is a multiply by
/// the class's reciprocal ([`size_class::block_index`]), not a division.
#[inline(always)]
pub fn block_of(slab: SlabRef, p: *const u8) -> Option<(usize, *const u8)> {
    // SAFETY: the slab is held by this layer, so its client area holds a
    // SlabMeta written when it was set up.
    let meta = unsafe { &*slab.client::<slab::SlabMeta>() };
    // Slabs are SLAB_SIZE-aligned (in a chunk-aligned region), so the
    // offset is the address's low bits, whatever the slab's index.
    let offset = p as usize & (hakmem_superslab::SLAB_SIZE - 1);
    debug_assert_eq!(offset, p as usize - slab.base() as usize);
    let size = meta.block_size as usize;
    let index = size_class::index_by_reciprocal(offset, meta.block_reciprocal);
    // A block start past the last whole block lies in the slab's tail.
    (index * size == offset && index < meta.capacity as usize).then(|| {
        let owner = meta.owner.load(core::sync::atomic::Ordering::Relaxed);
        (meta.class(), owner.cast_const())
    })
}

/// Prepares the thread-exit hook early, so that it runs after the hooks of
/// layers above that are created later (glibc runs key destructors in
/// creation order).
pub fn init() {
    thread_exit::init();
}
