//! Detached slabs: box-backend slabs that no thread allocates from, for
//! blocks whose every free must come back to one holder that sees it.
//! hakmem's heap profiler serves its sampled small blocks from them, so
//! that the free of a sampled block is recognised without a test on any
//! other free (see hakmem's `prof` module and docs/PROFILING.md).
//!
//! A detached slab is an ordinary slab of its class (same record, same
//! free mark, same block-start test), whose owner token is
//! [`detached_owner`]: the address of a static that is no thread's heap.
//! So every free of one of its blocks, from any thread and through either
//! door, takes the path of a block of another live thread's slab: the fast
//! cache's outgoing list and then `crate::BoxBackend::drain`, or
//! `crate::BoxBackend::free`, both of which end in a push onto the
//! slab's remote list. Its holder (the caller of this module's functions,
//! under a lock of its own) takes those lists with [`DetachedSlabs::collect`],
//! which shows it each freed block before the block is reused.
//!
//! The slabs are never armed (`remote::arm`), so no freer ever consumes a
//! notification on them and no freer ever reads their owner as a heap
//! (the token's static is heap-shaped anyway: a pending stack at its
//! start). They are on no heap's lists and never abandoned, so nobody but
//! their holder touches their plain fields.
//!
//! Box backend only: the legacy backend has no owners, so its frees cannot
//! tell these blocks from any other.

use core::ptr;
use core::sync::atomic::Ordering;

use hakmem_superslab::OutOfMemory;

use crate::block::Block;
use crate::remote;
use crate::size_class::NUM_CLASSES;
use crate::slab::{self, SlabMeta};

/// Heap-shaped, like `box_backend::Heap`'s first field: a freer that
/// consumed a notification would push onto it (none ever does).
#[repr(C)]
struct DetachedOwner {
    pending: core::sync::atomic::AtomicPtr<SlabMeta>,
}

static OWNER: DetachedOwner = DetachedOwner {
    pending: core::sync::atomic::AtomicPtr::new(ptr::null_mut()),
};

/// The owner token of every detached slab: no thread's
/// ([`crate::SmallBackend::owner_token`] is a heap's address), never null.
pub fn detached_owner() -> *const u8 {
    (&OWNER as *const DetachedOwner).cast()
}

/// One detached slab, on no list yet ([`new_detached_slab`]) or taken off
/// its holder's lists ([`DetachedSlabs::take_empty`]).
#[derive(Debug)]
pub struct DetachedSlab(*mut SlabMeta);

/// A fresh detached slab of `class` from the superslab (takes the pool's
/// lock: call it without holding the lock of the [`DetachedSlabs`] it will
/// join, if that lock may be taken in a signal handler).
pub fn new_detached_slab(class: usize) -> Result<DetachedSlab, OutOfMemory> {
    slab::new_slab(class, detached_owner().cast_mut()).map(DetachedSlab)
}

/// Gives an empty detached slab back to the superslab (takes the pool's
/// lock).
pub fn release_detached_slab(s: DetachedSlab) {
    // SAFETY: an empty slab taken off its holder's lists
    // (`take_empty`: `used == 0` after its remote list was collected, so
    // no block of it is out and no freer can still reach it) or a fresh
    // one that never joined them.
    unsafe { slab::release_slab(s.0) };
}

/// The detached slabs of one holder, per class: a list linked through the
/// records' `next`. The holder serialises every call (a lock of its own);
/// the lists and the slabs' plain fields are its alone.
#[derive(Debug)]
pub struct DetachedSlabs {
    heads: [*mut SlabMeta; NUM_CLASSES],
}

// SAFETY: the slabs' plain fields are touched only through `&mut self`,
// which the holder's lock makes exclusive; other threads touch only the
// records' atomics (`remote`), as for any slab.
unsafe impl Send for DetachedSlabs {}

impl Default for DetachedSlabs {
    fn default() -> Self {
        Self::new()
    }
}

impl DetachedSlabs {
    /// No slabs.
    pub const fn new() -> Self {
        Self {
            heads: [ptr::null_mut(); NUM_CLASSES],
        }
    }

    /// A block of `class` from a slab held here (its free mark is the
    /// caller's to clear), or null when none has a free block left: then
    /// [`Self::add`] a [`new_detached_slab`]. Blocks freed since the last
    /// [`Self::collect`] are not reused before it shows them.
    pub fn take(&mut self, class: usize) -> *mut u8 {
        let mut s = self.heads[class];
        while !s.is_null() {
            // SAFETY: a slab on our list: we are its holder.
            let m = unsafe { &*s };
            let b = m.take_one();
            if !b.is_null() {
                return b.cast();
            }
            s = m.next.get();
        }
        ptr::null_mut()
    }

    /// Adds a slab to the list of its class.
    pub fn add(&mut self, slab: DetachedSlab) {
        let s = slab.0;
        // SAFETY: a slab of ours, on no list.
        let m = unsafe { &*s };
        m.next.set(self.heads[m.class()]);
        self.heads[m.class()] = s;
    }

    /// Calls `freed` on every block freed since the last call (pushed onto
    /// its slab's remote list by whoever freed it), then makes those blocks
    /// free here. Only atomics of the slabs are shared: safe to call from a
    /// signal handler that interrupted no call of this holder's.
    pub fn collect(&mut self, mut freed: impl FnMut(*mut u8)) {
        for &head in self.heads.iter() {
            let mut s = head;
            while !s.is_null() {
                // SAFETY: a slab on our list: we are its holder.
                let m = unsafe { &*s };
                let (first, n) = remote::take_list(m);
                if n > 0 {
                    let mut b = first;
                    let mut tail = first;
                    let mut walked = 0;
                    while !b.is_null() {
                        freed(b.cast());
                        tail = b;
                        walked += 1;
                        // SAFETY: a block of the list just taken: ours, of
                        // this slab.
                        b = unsafe { Block::next_in_slab(b) };
                    }
                    debug_assert_eq!(walked, n, "remote list length vs count");
                    // SAFETY: the blocks belong to this slab, are counted
                    // as used, and were just taken off its remote list.
                    unsafe { m.put_chain(first, tail, walked) };
                }
                s = m.next.get();
            }
        }
    }

    /// Takes an empty slab off the lists (one whose blocks all came back
    /// by the last [`Self::collect`]), keeping the first slab of each
    /// class; None when there is none. Release it with
    /// [`release_detached_slab`].
    pub fn take_empty(&mut self) -> Option<DetachedSlab> {
        for head in self.heads.iter_mut() {
            if head.is_null() {
                continue;
            }
            let mut prev = *head;
            // SAFETY: a slab on our list: we are its holder.
            let mut s = unsafe { &**head }.next.get();
            while !s.is_null() {
                // SAFETY: as above.
                let m = unsafe { &*s };
                let next = m.next.get();
                if m.used.get() == 0 && m.remote.load(Ordering::Acquire) == 0 {
                    // SAFETY: `prev` is on our list.
                    unsafe { &*prev }.next.set(next);
                    m.next.set(ptr::null_mut());
                    return Some(DetachedSlab(s));
                }
                prev = s;
                s = next;
            }
        }
        None
    }

    /// Slabs held, all classes together (for statistics).
    pub fn slabs(&self) -> usize {
        let mut n = 0;
        for &head in self.heads.iter() {
            let mut s = head;
            while !s.is_null() {
                n += 1;
                // SAFETY: a slab on our list: we are its holder.
                s = unsafe { &*s }.next.get();
            }
        }
        n
    }
}
