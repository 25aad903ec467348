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

use core::sync::atomic::{AtomicPtr, Ordering};

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
        match s
            .remote
            .compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed)
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
        let next = unsafe { Block::next(tail) };
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
            core::hint::spin_loop();
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
        core::hint::spin_loop();
        // SAFETY: sched_yield has no preconditions; the freer we wait for
        // may be preempted on an oversubscribed machine.
        unsafe { libc::sched_yield() };
    }
}
