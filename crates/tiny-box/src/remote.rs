//! The lock-free remote free list of a slab (box backend).
//!
//! Each slab has one atomic word: the head of a stack of blocks freed by
//! threads other than the owner, plus two flag bits in the low bits (blocks
//! are 8-aligned, so those bits of a block address are always zero):
//!
//! - `NOTIFY`: set by the owner when the slab is full, so that it learns of
//!   the slab again without polling. The first remote free that finds it
//!   clears it and, in the same CAS, sets `BUSY`; that freer then pushes the
//!   slab onto the owner heap's pending stack and clears `BUSY`.
//! - `BUSY`: a freer is between consuming `NOTIFY` and finishing that push.
//!   The owner waits it out before it gives the slab away (abandon) or arms
//!   it again, so the pending stack never holds a slab the heap lost.
//!
//! Freers only push; the owner takes the whole list with one `fetch_and`
//! that keeps the flags. Pushing and taking-all has no ABA problem.

use core::sync::atomic::Ordering;

use crate::sync::{spin_wait, AtomicPtr};

use crate::block::Block;
use crate::slab::{Notify, SlabMeta};

pub(crate) const NOTIFY: usize = 1;
pub(crate) const BUSY: usize = 2;
const FLAGS: usize = NOTIFY | BUSY;

/// Pushes the chain `head..=tail` (blocks of `slab`) onto the slab's remote
/// list, and the slab onto its owner's pending stack if the owner asked to be
/// notified.
///
/// # Safety
/// The blocks belong to `slab`, are out of it, and are given up by the
/// caller. `slab` is live (it is, while it has blocks out).
pub(crate) unsafe fn push(slab: *mut SlabMeta, head: *mut Block, tail: *mut Block) {
    // SAFETY: the slab is live; only atomic fields are touched here.
    let s = unsafe { &*slab };
    let mut old = s.remote.load(Ordering::Relaxed);
    loop {
        // SAFETY: the tail block is ours until the CAS publishes it.
        unsafe { Block::set_next(tail, (old & !FLAGS) as *mut Block) };
        let mut new = head as usize | (old & FLAGS);
        if old & NOTIFY != 0 {
            new = (new & !NOTIFY) | BUSY;
        }
        // AcqRel, not just Release: when this CAS consumes NOTIFY it must
        // also acquire the owner's arming CAS, so that the `owner` load
        // below sees the heap that armed it (loom found a stale owner with
        // Release alone; x86's locked CAS hides the difference).
        match s
            .remote
            .compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(seen) => old = seen,
        }
    }
    if old & NOTIFY != 0 {
        // We consumed NOTIFY: the owner cannot change while BUSY is set.
        let heap = s.owner.load(Ordering::Acquire);
        // SAFETY: an armed slab's owner is a live heap (heaps are never
        // freed), and `pending` sits at the heap's start (see box_backend).
        let pending = unsafe { &*heap.cast::<AtomicPtr<SlabMeta>>() };
        let mut top = pending.load(Ordering::Relaxed);
        loop {
            s.pending_next.store(top, Ordering::Relaxed);
            match pending.compare_exchange_weak(top, slab, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(seen) => top = seen,
            }
        }
        s.remote.fetch_and(!BUSY, Ordering::Release);
    }
}

/// Moves every remotely freed block onto the local free list; returns how
/// many there were. Owner only.
pub(crate) fn collect(s: &mut SlabMeta) -> usize {
    if s.remote.load(Ordering::Relaxed) & !FLAGS == 0 {
        return 0;
    }
    let head = (s.remote.fetch_and(FLAGS, Ordering::Acquire) & !FLAGS) as *mut Block;
    let mut n = 1;
    let mut tail = head;
    loop {
        // SAFETY: the list was published by Release CASes and is now ours.
        let next = unsafe { Block::next_in_slab(tail) };
        if next.is_null() {
            break;
        }
        tail = next;
        n += 1;
    }
    // SAFETY: the blocks belong to this slab and were counted as used.
    unsafe { s.put_chain(head, tail, n) };
    n
}

/// Asks to be notified of the next remote free of a full slab. Returns false
/// (and collects what arrived) when blocks came back in the meantime, so
/// the slab is not full after all. Owner only; `s.notify` is Idle or Queued.
pub(crate) fn arm(s: &mut SlabMeta) -> bool {
    if s.notify == Notify::Queued {
        // Already on the pending stack: it will come back from there.
        return true;
    }
    loop {
        let w = s.remote.load(Ordering::Acquire);
        if w & !FLAGS != 0 {
            // Blocks came back: the slab is not full after all.
            collect(s);
            return false;
        }
        if w & BUSY != 0 {
            // A freer that consumed an earlier NOTIFY is finishing its push.
            spin_wait();
            continue;
        }
        if s.remote
            .compare_exchange(w, w | NOTIFY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            s.notify = Notify::Armed;
            return true;
        }
    }
}

/// Withdraws an armed notification. Afterwards `s.notify` is Idle (no freer
/// will touch the owner's pending stack for this slab) or Queued (one did or
/// is about to). Owner only.
pub(crate) fn disarm(s: &mut SlabMeta) {
    if s.notify != Notify::Armed {
        return;
    }
    let mut w = s.remote.load(Ordering::Relaxed);
    loop {
        if w & NOTIFY == 0 {
            s.notify = Notify::Queued;
            return;
        }
        match s
            .remote
            .compare_exchange_weak(w, w & !NOTIFY, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => {
                s.notify = Notify::Idle;
                return;
            }
            Err(seen) => w = seen,
        }
    }
}

/// Waits until no freer is between consuming NOTIFY and finishing its push.
pub(crate) fn wait_not_busy(s: &SlabMeta) {
    while s.remote.load(Ordering::Acquire) & BUSY != 0 {
        spin_wait();
        #[cfg(not(loom))]
        // SAFETY: sched_yield has no preconditions; the freer we wait for
        // may be preempted on an oversubscribed machine.
        unsafe {
            libc::sched_yield()
        };
    }
}

/// Model checks of the protocol above (`RUSTFLAGS="--cfg loom"`): every
/// interleaving of a few threads, with loom's atomics.
#[cfg(all(test, loom))]
mod loom_models {
    extern crate std;

    use std::boxed::Box;
    use std::vec::Vec;

    use core::ptr;
    use core::sync::atomic::Ordering;

    use super::{arm, collect, disarm, push, wait_not_busy, NOTIFY};
    use crate::block::Block;
    use crate::slab::{Notify, SlabList, SlabMeta};
    use crate::sync::{AtomicPtr, AtomicUsize};

    /// Stands in for a heap: `pending` must be its first field.
    #[repr(C)]
    struct FakeHeap {
        pending: AtomicPtr<SlabMeta>,
    }

    #[derive(Clone, Copy)]
    struct Shared(*mut SlabMeta, *mut Block, *mut Block);
    // SAFETY: the model hands each block to exactly one freer thread; the
    // slab's shared parts are atomics.
    unsafe impl Send for Shared {}

    fn block() -> *mut Block {
        Box::into_raw(Box::new([0u64; 2])).cast()
    }

    fn slab(owner: *mut FakeHeap, used: u32) -> *mut SlabMeta {
        Box::into_raw(Box::new(SlabMeta {
            free: ptr::null_mut(),
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            owner: AtomicPtr::new(owner.cast()),
            remote: AtomicUsize::new(0),
            pending_next: AtomicPtr::new(ptr::null_mut()),
            fresh_next: 8,
            capacity: 8,
            used,
            class: 0,
            list: SlabList::Full,
            notify: Notify::Idle,
            fresh_start: 0,
            fresh_stride: 1,
        }))
    }

    fn local_free_list(s: &SlabMeta) -> Vec<usize> {
        let mut out = Vec::new();
        let mut b = s.free;
        while !b.is_null() {
            out.push(b as usize);
            // SAFETY: the list is the owner's, built by collect.
            b = unsafe { Block::next_in_slab(b) };
        }
        out
    }

    #[test]
    fn remote_pushes_racing_a_collect_lose_nothing() {
        loom::model(|| {
            let heap = Box::into_raw(Box::new(FakeHeap {
                pending: AtomicPtr::new(ptr::null_mut()),
            }));
            let s = slab(heap, 2);
            let (a, b) = (block(), block());
            let freers: Vec<_> = [a, b]
                .into_iter()
                .map(|blk| {
                    let sh = Shared(s, blk, blk);
                    loom::thread::spawn(move || {
                        let sh = sh;
                        // SAFETY: the block is this thread's to give up.
                        unsafe { push(sh.0, sh.1, sh.2) };
                    })
                })
                .collect();
            // The owner collects while the frees arrive.
            // SAFETY: the owner's view of its slab.
            let first = collect(unsafe { &mut *s });
            for f in freers {
                f.join().unwrap();
            }
            // SAFETY: as above.
            let m = unsafe { &mut *s };
            let second = collect(m);
            assert_eq!(first + second, 2);
            assert_eq!(m.used, 0);
            let mut got = local_free_list(m);
            got.sort_unstable();
            let mut want = [a as usize, b as usize];
            want.sort_unstable();
            assert_eq!(got, want);
            assert_eq!(m.remote.load(Ordering::Relaxed), 0);
        });
    }

    #[test]
    fn notification_racing_a_disarm_is_seen_exactly_once() {
        loom::model(|| {
            let heap = Box::into_raw(Box::new(FakeHeap {
                pending: AtomicPtr::new(ptr::null_mut()),
            }));
            let s = slab(heap, 1);
            let blk = block();
            // The owner's slab is full: it arms a notification.
            // SAFETY: the owner's view of its slab.
            assert!(arm(unsafe { &mut *s }));
            let sh = Shared(s, blk, blk);
            let freer = loom::thread::spawn(move || {
                let sh = sh;
                // SAFETY: the block is this thread's to give up.
                unsafe { push(sh.0, sh.1, sh.2) };
            });
            // Meanwhile the owner gives the slab up, as abandon does:
            // disarm, then take what the pending stack brings.
            // SAFETY: the owner's view of its slab.
            let m = unsafe { &mut *s };
            disarm(m);
            let mut seen = 0;
            if m.notify == Notify::Queued {
                // A freer consumed NOTIFY: the slab must arrive, once.
                // SAFETY: the fake heap lives for the whole model.
                let pending = unsafe { &(*heap).pending };
                while seen == 0 {
                    let mut p = pending.swap(ptr::null_mut(), Ordering::Acquire);
                    while !p.is_null() {
                        assert_eq!(p, s);
                        seen += 1;
                        // SAFETY: slabs on the stack are live.
                        p = unsafe { (*p).pending_next.load(Ordering::Relaxed) };
                    }
                    crate::sync::spin_wait();
                }
                m.notify = Notify::Idle;
            }
            wait_not_busy(m);
            freer.join().unwrap();
            // SAFETY: the fake heap lives for the whole model.
            let left = unsafe { &(*heap).pending }.load(Ordering::Acquire);
            assert!(
                left.is_null(),
                "the slab was queued after the owner let go of it"
            );
            assert!(seen <= 1);
            assert_eq!(collect(m), 1);
            assert_eq!(m.used, 0);
            assert_eq!(
                m.remote.load(Ordering::Relaxed),
                0,
                "NOTIFY or BUSY left set"
            );
        });
    }

    #[test]
    fn adoption_racing_a_remote_free_loses_nothing() {
        loom::model(|| {
            let heap = Box::into_raw(Box::new(FakeHeap {
                pending: AtomicPtr::new(ptr::null_mut()),
            }));
            // An abandoned slab (no owner) with its one block out.
            let s = slab(ptr::null_mut(), 1);
            let blk = block();
            let sh = Shared(s, blk, blk);
            let freer = loom::thread::spawn(move || {
                let sh = sh;
                // SAFETY: the block is this thread's to give up.
                unsafe { push(sh.0, sh.1, sh.2) };
            });
            // The adopter takes the slab over, as `adopt` does: owner, then
            // collect; nothing local, so it arms a notification.
            // SAFETY: the adopter holds the slab now.
            let m = unsafe { &mut *s };
            m.owner.store(heap.cast(), Ordering::Release);
            m.notify = Notify::Idle;
            let mut got = collect(m);
            if got == 0 && !arm(m) {
                got = 1; // arm found the block and collected it
            }
            freer.join().unwrap();
            // SAFETY: the fake heap lives for the whole model.
            let pending = unsafe { &(*heap).pending };
            let queued = pending.swap(ptr::null_mut(), Ordering::Acquire);
            if got == 0 {
                // Armed before the free: the freer must have announced the
                // slab on the adopter's pending stack, once.
                assert_eq!(queued, s, "an armed slab's remote free went unannounced");
                // SAFETY: the slab is live.
                assert!(unsafe { (*s).pending_next.load(Ordering::Relaxed) }.is_null());
                m.notify = Notify::Idle;
                wait_not_busy(m);
                got = collect(m);
            } else {
                assert!(
                    queued.is_null(),
                    "a slab was announced although its block was collected"
                );
                // NOTIFY may be left armed only if nothing was collected.
                assert_eq!(m.remote.load(Ordering::Relaxed) & NOTIFY, 0);
            }
            assert_eq!(got, 1);
            assert_eq!(m.used, 0);
        });
    }
}
