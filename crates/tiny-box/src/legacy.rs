//! The legacy backend: per-class slab lists behind one lock per class.
//!
//! Simple and obviously correct: every operation on a class takes that
//! class's lock, whichever thread it comes from; there is no ownership, no
//! remote list, nothing to do at thread exit. It is the baseline of the A/B
//! table and the reference the box backend is tested against.

use core::cell::UnsafeCell;
use core::ptr;

use hakmem_superslab::lock::RawLock;

use crate::block::{Block, Chain};
use crate::size_class::NUM_CLASSES;
use crate::slab::{self, new_slab, SlabList, SlabMeta, SlabQueue};
use crate::SmallBackend;

struct ClassPool {
    lock: RawLock,
    /// Slabs with free blocks; full slabs are on no list.
    partial: UnsafeCell<SlabQueue>,
}

// SAFETY: `partial` and every slab on it are only touched with `lock` held.
unsafe impl Sync for ClassPool {}

static CLASSES: [ClassPool; NUM_CLASSES] = [const {
    ClassPool {
        lock: RawLock::new(),
        partial: UnsafeCell::new(SlabQueue::new()),
    }
}; NUM_CLASSES];

/// The legacy, globally locked backend.
pub struct LegacyBackend;

fn with_class<R>(class: usize, f: impl FnOnce(&mut SlabQueue) -> R) -> R {
    let pool = &CLASSES[class];
    pool.lock.with(|| {
        // SAFETY: the class lock is held.
        f(unsafe { &mut *pool.partial.get() })
    })
}

/// Takes up to `max` blocks into `out` with the class lock held.
fn take_locked(q: &mut SlabQueue, class: usize, out: &mut Chain, max: usize) {
    while out.len < max {
        let mut s = q.head;
        if s.is_null() {
            match new_slab(class, ptr::null_mut()) {
                // SAFETY: a new slab, ours.
                Ok(n) => unsafe { q.push_front(n, SlabList::Partial) },
                Err(_) => return,
            }
            s = q.head;
        }
        // SAFETY: slabs on the list are guarded by the held lock.
        let m = unsafe { &*s };
        m.take_into(out, max);
        if !m.has_local() {
            // SAFETY: s is on this list.
            unsafe { q.remove(s) };
        }
    }
}

/// Returns one block with the class lock held; true when that emptied its
/// slab and the slab went back to the superslab.
///
/// # Safety
/// `b` is a block of class `class` that is out of its slab.
unsafe fn put_locked(q: &mut SlabQueue, b: *mut Block) -> bool {
    // SAFETY: caller's contract.
    let s = unsafe { SlabMeta::of(b.cast()) };
    // SAFETY: guarded by the held lock.
    let m = unsafe { &*s };
    // SAFETY: caller's contract.
    unsafe { m.put_local(b) };
    if m.list.get() == SlabList::None {
        let displaced = q.head;
        // SAFETY: a full slab is on no list.
        unsafe { q.push_front(s, SlabList::Partial) };
        // The head it displaces, empty, goes back like any empty slab that
        // is not the head (kept, a bulk free in the reverse of allocation
        // order kept every slab: each emptied while it was the head).
        // SAFETY: guarded by the held lock; on this list when not null.
        if !displaced.is_null() && unsafe { &*displaced }.used.get() == 0 {
            // SAFETY: on this list, empty.
            unsafe {
                q.remove(displaced);
                slab::release_slab(displaced);
            }
            return true;
        }
    } else if m.used.get() == 0 && q.head != s {
        // SAFETY: on this list, empty.
        unsafe {
            q.remove(s);
            slab::release_slab(s);
        }
        return true;
    }
    false
}

impl SmallBackend for LegacyBackend {
    const NAME: &'static str = "legacy";

    fn alloc(class: usize) -> *mut u8 {
        let mut out = Chain::new();
        with_class(class, |q| take_locked(q, class, &mut out, 1));
        out.head.cast()
    }

    unsafe fn free(p: *mut u8) {
        // SAFETY: caller's contract: a block of this backend.
        let class = unsafe { &*SlabMeta::of(p) }.class();
        // SAFETY: caller's contract.
        if with_class(class, |q| unsafe { put_locked(q, p.cast()) }) {
            // The class lock is released and the free whole: a point to
            // start the purge thread at, if the release asked for it.
            hakmem_superslab::background::start_if_wanted();
        }
    }

    fn refill(class: usize, max: usize) -> Chain {
        let mut out = Chain::new();
        with_class(class, |q| take_locked(q, class, &mut out, max));
        out
    }

    unsafe fn drain(chain: Chain, class: usize) {
        if chain.is_empty() {
            return;
        }
        with_class(class, |q| {
            let mut b = chain.head;
            while !b.is_null() {
                // SAFETY: the chain is the caller's, properly linked.
                let next = unsafe { Block::next(b) };
                #[cfg(feature = "secure")]
                crate::hardening::check_drained_class(b, class);
                // SAFETY: caller's contract.
                unsafe { put_locked(q, b) };
                b = next;
            }
        });
    }

    fn trim() {
        for class in 0..NUM_CLASSES {
            with_class(class, |q| {
                let mut s = q.head;
                while !s.is_null() {
                    // SAFETY: guarded by the held lock.
                    let m = unsafe { &*s };
                    let next = m.next.get();
                    if m.used.get() == 0 {
                        // SAFETY: on this list, empty.
                        unsafe {
                            q.remove(s);
                            slab::release_slab(s);
                        }
                    }
                    s = next;
                }
            });
        }
    }

    fn sweep() -> bool {
        // Under each class lock, as from any thread; nothing here waits on
        // another thread's blocks.
        Self::trim();
        false
    }

    fn free_blocks_in_reach() -> [usize; NUM_CLASSES] {
        // Full slabs are on no list and have no free block.
        core::array::from_fn(|class| {
            with_class(class, |q| {
                let mut free = 0;
                let mut s = q.head;
                while !s.is_null() {
                    // SAFETY: on the class's list, guarded by the held lock.
                    let m = unsafe { &*s };
                    free += (m.capacity - m.used.get()) as usize;
                    s = m.next.get();
                }
                free
            })
        })
    }

    fn prefork() {
        for c in &CLASSES {
            c.lock.lock();
        }
    }

    fn postfork_parent() {
        for c in CLASSES.iter().rev() {
            c.lock.unlock();
        }
    }

    fn postfork_child() {
        for c in &CLASSES {
            c.lock.reset_after_fork();
        }
    }
}
