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
//! The top 16 bits count the blocks on the stack: each push adds its chain's
//! length in the same CAS. So the owner learns how many blocks came back
//! from the word alone and can take the stack over as its local free list
//! without walking it. The walk it saves is a chain of cache misses: every
//! link was last written by another core. (User-space addresses on Linux
//! fit in 47 bits unless mmap is asked for higher ones, which hakmem never
//! does; a slab holds at most 8,192 blocks.)
//!
//! Freers only push; the owner takes the whole list with one `fetch_and`
//! that keeps the flags. Pushing and taking-all has no ABA problem.
//!
//! Every wait here (an owner waiting for BUSY to clear) is a
//! [`Backoff`]: a bounded spin, then yields, then sleeps, so that an owner
//! of higher priority leaves the CPU to a freer preempted inside its window
//! (see `sync.rs`).
//!
//! ## Fork
//! The hand-off is lock-free, so `fork` can copy a freer that is inside
//! it; in the child that thread does not exist and never finishes. A freer
//! is in one of these states, seen in the copied memory:
//! 1. before its CAS: nothing of it is visible (its blocks stay out, as
//!    blocks a vanished thread held always do);
//! 2. CAS done without consuming NOTIFY, or BUSY already cleared: done;
//! 3. NOTIFY consumed (BUSY set), the slab not yet on the pending stack;
//! 4. the slab on the pending stack, BUSY still set.
//!
//! The chain it pushed is on the remote list in 3 and 4 alike. What is
//! left undone is the announcement (in 3) and the BUSY clear (3 and 4);
//! [`repair_after_fork`] does both for the slabs of the child's one heap,
//! telling 3 from 4 by the owner's own state and its pending stack: a slab
//! the owner already took off the stack (its `notify` is back to Idle) or
//! one still on it is not pushed again, so a slab is never queued twice.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::sync::{AtomicPtr, Backoff};

use crate::block::Block;
use crate::slab::{Notify, SlabMeta};

pub(crate) const NOTIFY: usize = 1;
pub(crate) const BUSY: usize = 2;
const FLAGS: usize = NOTIFY | BUSY;
const COUNT_SHIFT: u32 = 48;
const ADDRESS: usize = ((1 << COUNT_SHIFT) - 1) & !FLAGS;

static_assertions::const_assert!(
    (hakmem_superslab::SLAB_SIZE / crate::size_class::CLASS_SIZES[0] as usize)
        < (1 << (usize::BITS - COUNT_SHIFT))
);

/// Pushes the chain `head..=tail` of `n` blocks of `slab` onto the slab's
/// remote list, and the slab onto its owner's pending stack if the owner
/// asked to be notified.
///
/// # Safety
/// The blocks belong to `slab`, are out of it, and are given up by the
/// caller. `slab` is live (it is, while it has blocks out).
pub(crate) unsafe fn push(slab: *mut SlabMeta, head: *mut Block, tail: *mut Block, n: usize) {
    // SAFETY: the caller's contract.
    if unsafe { push_chain(slab, head, tail, n) } {
        // SAFETY: we consumed NOTIFY and set BUSY just now.
        unsafe { announce(slab) };
    }
}

/// The first half of [`push`]: the chain onto the remote list, with one
/// CAS. True when that CAS consumed NOTIFY (and set BUSY): then the caller
/// must [`announce`] the slab.
///
/// # Safety
/// As for [`push`].
pub(crate) unsafe fn push_chain(
    slab: *mut SlabMeta,
    head: *mut Block,
    tail: *mut Block,
    n: usize,
) -> bool {
    debug_assert_eq!(head as usize & !ADDRESS, 0, "block address above 48 bits");
    // SAFETY: the slab is live; only atomic fields are touched here.
    let s = unsafe { &*slab };
    let mut old = s.remote.load(Ordering::Relaxed);
    loop {
        // SAFETY: the tail block is ours until the CAS publishes it.
        unsafe { Block::set_next(tail, (old & ADDRESS) as *mut Block) };
        // The count cannot overflow: it never exceeds the slab's capacity.
        let count = (old >> COUNT_SHIFT) + n;
        let mut new = head as usize | count << COUNT_SHIFT | (old & FLAGS);
        if old & NOTIFY != 0 {
            new = (new & !NOTIFY) | BUSY;
        }
        // AcqRel, not just Release: when this CAS consumes NOTIFY it must
        // also acquire the owner's arming CAS, so that the `owner` load in
        // `announce` sees the heap that armed it (loom found a stale owner
        // with Release alone; x86's locked CAS hides the difference).
        match s
            .remote
            .compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => return old & NOTIFY != 0,
            Err(seen) => old = seen,
        }
    }
}

/// The second half of [`push`]: the slab onto its owner heap's pending
/// stack, then BUSY cleared.
///
/// # Safety
/// The caller's [`push_chain`] consumed the slab's NOTIFY and set BUSY.
pub(crate) unsafe fn announce(slab: *mut SlabMeta) {
    // SAFETY: the slab is live (BUSY keeps it from being released).
    let s = unsafe { &*slab };
    // We consumed NOTIFY: the owner cannot change while BUSY is set.
    let heap = s.owner.load(Ordering::Acquire);
    // SAFETY: an armed slab's owner is a live heap (heaps are never
    // freed), and `pending` sits at the heap's start (see box_backend).
    let pending = unsafe { &*heap.cast::<AtomicPtr<SlabMeta>>() };
    push_pending(pending, slab);
    s.remote.fetch_and(!BUSY, Ordering::Release);
}

/// Pushes `slab` onto the pending stack `pending`.
pub(crate) fn push_pending(pending: &AtomicPtr<SlabMeta>, slab: *mut SlabMeta) {
    // SAFETY: the slab is live; `pending_next` is atomic.
    let s = unsafe { &*slab };
    let mut top = pending.load(Ordering::Relaxed);
    loop {
        s.pending_next.store(top, Ordering::Relaxed);
        match pending.compare_exchange_weak(top, slab, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => break,
            Err(seen) => top = seen,
        }
    }
}

/// In the child of `fork`: finishes the work of a freer that was inside the
/// hand-off of `s` when the parent forked (see the module docs). `pending`
/// is the pending stack of `s`'s owner heap, the child's one heap, whose
/// thread is running this; no other thread exists.
pub(crate) fn repair_after_fork(s: &SlabMeta, pending: &AtomicPtr<SlabMeta>) {
    if s.remote.load(Ordering::Acquire) & BUSY == 0 {
        return;
    }
    // BUSY is set only by a freer that consumed NOTIFY, and `arm` waits for
    // BUSY to clear before setting NOTIFY again: so the owner has not armed
    // the slab since. Idle means it took the slab off the pending stack
    // already (state 4 of the module docs, announced and processed).
    if s.notify.get() != Notify::Idle && !on_stack(pending, s) {
        // State 3: announce it as the freer would have. (The stack's users
        // only read and set the slab's atomics and Cells: a pointer from
        // `&SlabMeta` serves.)
        push_pending(pending, ptr::from_ref(s).cast_mut());
    }
    s.remote.fetch_and(!BUSY, Ordering::Release);
}

/// True when `s` is on the pending stack `pending`.
fn on_stack(pending: &AtomicPtr<SlabMeta>, s: &SlabMeta) -> bool {
    let target: *const SlabMeta = s;
    let mut p = pending.load(Ordering::Acquire);
    while !p.is_null() {
        if ptr::eq(p, target) {
            return true;
        }
        // SAFETY: slabs on a pending stack are live: released only off it.
        p = unsafe { &*p }.pending_next.load(Ordering::Relaxed);
    }
    false
}

/// Blocks on the slab's remote list now, read off the word alone (no walk).
/// Any thread: a freer's block is counted by the CAS that publishes it.
pub(crate) fn count(s: &SlabMeta) -> usize {
    s.remote.load(Ordering::Acquire) >> COUNT_SHIFT
}

/// Takes the whole remote list, as its first block and its length (null
/// and 0 when empty), leaving the flags: for a holder that must see every
/// block freed to it (`detached.rs`). Holder only.
pub(crate) fn take_list(s: &SlabMeta) -> (*mut Block, usize) {
    if s.remote.load(Ordering::Relaxed) & ADDRESS == 0 {
        return (ptr::null_mut(), 0);
    }
    let word = s.remote.fetch_and(FLAGS, Ordering::Acquire);
    ((word & ADDRESS) as *mut Block, word >> COUNT_SHIFT)
}

/// Moves every remotely freed block onto the local free list; returns how
/// many there were. Owner only. (`&SlabMeta`, not `&mut`: freers CAS
/// `remote` meanwhile; see `slab.rs`.)
///
/// With the local list empty (the usual case: the owner collects when it
/// has run out) the stack becomes the local list as it is, unwalked.
/// Hardened builds walk it anyway, checking every link and the count.
pub(crate) fn collect(s: &SlabMeta) -> usize {
    if s.remote.load(Ordering::Relaxed) & ADDRESS == 0 {
        return 0;
    }
    let word = s.remote.fetch_and(FLAGS, Ordering::Acquire);
    let head = (word & ADDRESS) as *mut Block;
    let n = word >> COUNT_SHIFT;
    if s.free.get().is_null() && !cfg!(feature = "secure") {
        s.free.set(head);
        s.used.set(s.used.get() - n as u32);
        return n;
    }
    let mut walked = 1;
    let mut tail = head;
    loop {
        // SAFETY: the list was published by Release CASes and is now ours.
        let next = unsafe { Block::next_in_slab(tail) };
        if next.is_null() {
            break;
        }
        tail = next;
        walked += 1;
    }
    #[cfg(feature = "secure")]
    if walked != n {
        crate::hardening::corruption(
            "a remote free list's length differs from its count (block, count):",
            head as usize,
            n,
        );
    }
    debug_assert_eq!(walked, n, "remote free list length vs count");
    // SAFETY: the blocks belong to this slab and were counted as used.
    unsafe { s.put_chain(head, tail, n) };
    n
}

/// Asks to be notified of the next remote free of a full slab. Returns false
/// (and collects what arrived) when blocks came back in the meantime, so
/// the slab is not full after all. Owner only; `s.notify` is Idle or Queued.
pub(crate) fn arm(s: &SlabMeta) -> bool {
    if s.notify.get() == Notify::Queued {
        // Already on the pending stack: it will come back from there.
        return true;
    }
    let mut backoff = Backoff::new();
    loop {
        let w = s.remote.load(Ordering::Acquire);
        if w & ADDRESS != 0 {
            // Blocks came back: the slab is not full after all.
            collect(s);
            return false;
        }
        if w & BUSY != 0 {
            // A freer that consumed an earlier NOTIFY is finishing its push.
            backoff.snooze();
            continue;
        }
        if s.remote
            .compare_exchange(w, w | NOTIFY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            s.notify.set(Notify::Armed);
            return true;
        }
    }
}

/// Withdraws an armed notification. Afterwards `s.notify` is Idle (no freer
/// will touch the owner's pending stack for this slab) or Queued (one did or
/// is about to). Owner only.
pub(crate) fn disarm(s: &SlabMeta) {
    if s.notify.get() != Notify::Armed {
        return;
    }
    let mut w = s.remote.load(Ordering::Relaxed);
    loop {
        if w & NOTIFY == 0 {
            s.notify.set(Notify::Queued);
            return;
        }
        match s
            .remote
            .compare_exchange_weak(w, w & !NOTIFY, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => {
                s.notify.set(Notify::Idle);
                return;
            }
            Err(seen) => w = seen,
        }
    }
}

/// Waits until no freer is between consuming NOTIFY and finishing its push.
pub(crate) fn wait_not_busy(s: &SlabMeta) {
    let mut backoff = Backoff::new();
    while s.remote.load(Ordering::Acquire) & BUSY != 0 {
        backoff.snooze();
    }
}

/// Model checks of the protocol above (`RUSTFLAGS="--cfg loom"`): every
/// interleaving of a few threads, with loom's atomics.
#[cfg(all(test, loom))]
mod loom_models {
    extern crate std;

    use std::boxed::Box;
    use std::vec::Vec;

    use core::cell::Cell;
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
        let m = crate::slab::empty_meta(owner.cast(), 0, 8);
        m.fresh_next.set(8);
        m.used.set(used);
        m.list.set(SlabList::Full);
        Box::into_raw(Box::new(m))
    }

    fn local_free_list(s: &SlabMeta) -> Vec<usize> {
        let mut out = Vec::new();
        let mut b = s.free.get();
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
                        unsafe { push(sh.0, sh.1, sh.2, 1) };
                    })
                })
                .collect();
            // The owner collects while the frees arrive.
            // SAFETY: the owner's view of its slab.
            let first = collect(unsafe { &*s });
            for f in freers {
                f.join().unwrap();
            }
            // SAFETY: as above.
            let m = unsafe { &*s };
            let second = collect(m);
            assert_eq!(first + second, 2);
            assert_eq!(m.used.get(), 0);
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
            assert!(arm(unsafe { &*s }));
            let sh = Shared(s, blk, blk);
            let freer = loom::thread::spawn(move || {
                let sh = sh;
                // SAFETY: the block is this thread's to give up.
                unsafe { push(sh.0, sh.1, sh.2, 1) };
            });
            // Meanwhile the owner gives the slab up, as abandon does:
            // disarm, then take what the pending stack brings.
            // SAFETY: the owner's view of its slab.
            let m = unsafe { &*s };
            disarm(m);
            let mut seen = 0;
            if m.notify.get() == Notify::Queued {
                // A freer consumed NOTIFY: the slab must arrive, once.
                // SAFETY: the fake heap lives for the whole model.
                let pending = unsafe { &(*heap).pending };
                let mut backoff = crate::sync::Backoff::new();
                while seen == 0 {
                    let mut p = pending.swap(ptr::null_mut(), Ordering::Acquire);
                    while !p.is_null() {
                        assert_eq!(p, s);
                        seen += 1;
                        // SAFETY: slabs on the stack are live.
                        p = unsafe { (*p).pending_next.load(Ordering::Relaxed) };
                    }
                    backoff.snooze();
                }
                m.notify.set(Notify::Idle);
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
            assert_eq!(m.used.get(), 0);
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
                unsafe { push(sh.0, sh.1, sh.2, 1) };
            });
            // The adopter takes the slab over, as `adopt` does: owner, then
            // collect; nothing local, so it arms a notification.
            // SAFETY: the adopter holds the slab now.
            let m = unsafe { &*s };
            m.owner.store(heap.cast(), Ordering::Release);
            m.notify.set(Notify::Idle);
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
                m.notify.set(Notify::Idle);
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
            assert_eq!(m.used.get(), 0);
        });
    }
}

/// The protocol with real threads on a slab record in plain memory, with
/// no superslab behind it, so that Miri can run it (`cargo xtask miri`):
/// its aliasing model checks the owner's `&SlabMeta` against the freers'
/// CASes on the same record, and its race detector the hand-offs. Loom
/// explores the interleavings above; this checks the memory accesses of
/// the ones Miri's scheduler picks. (Hardened builds key links with the
/// block's region secret, and these blocks have no region: not there.)
#[cfg(all(test, not(loom), not(feature = "secure")))]
mod threads_on_a_plain_record {
    extern crate std;

    use std::collections::BTreeSet;
    use std::thread;
    use std::vec::Vec;

    use core::ptr;
    use core::sync::atomic::Ordering;

    use super::{arm, collect, disarm, push, wait_not_busy};
    use crate::block::Block;
    use crate::slab::{Notify, SlabList, SlabMeta};
    use crate::sync::{AtomicPtr, Backoff};

    const BLOCKS: usize = 8;

    /// Stands in for a heap: `pending` must be its first field.
    #[repr(C)]
    struct FakeHeap {
        pending: AtomicPtr<SlabMeta>,
    }

    /// A full slab's record, every block out, none fresh: so no block
    /// address is ever computed from the record's place in a region.
    fn record(owner: *const FakeHeap) -> SlabMeta {
        let m = crate::slab::empty_meta(owner.cast_mut().cast(), 1, BLOCKS as u32);
        m.fresh_next.set(BLOCKS as u32);
        m.used.set(BLOCKS as u32);
        m.list.set(SlabList::Full);
        m
    }

    /// The blocks of the record: two words each of `arena`.
    fn blocks(arena: &mut [[usize; 2]; BLOCKS]) -> Vec<*mut Block> {
        let base = arena.as_mut_ptr();
        // SAFETY: i < BLOCKS: inside the arena.
        (0..BLOCKS).map(|i| unsafe { base.add(i) }.cast()).collect()
    }

    /// A freer's share: the record and one of its blocks.
    #[derive(Clone, Copy)]
    struct Shared(*const SlabMeta, *mut Block);
    // SAFETY: each block goes to one freer; freers touch only the record's
    // atomics (and the fake heap's, through its owner pointer).
    unsafe impl Send for Shared {}

    fn free_remotely(x: Shared) {
        // SAFETY: the block is out of the slab and the calling thread's to
        // give up; the record outlives the thread (a scoped one).
        unsafe { push(x.0.cast_mut(), x.1, x.1, 1) };
    }

    #[test]
    fn the_owner_works_its_local_list_while_freers_push() {
        let mut arena = [[0usize; 2]; BLOCKS];
        let blocks = blocks(&mut arena);
        let s = record(ptr::null());
        let mut got = 0;
        thread::scope(|scope| {
            for pair in blocks[..4].chunks(2) {
                let (a, b) = (Shared(&s, pair[0]), Shared(&s, pair[1]));
                scope.spawn(move || {
                    let (a, b) = (a, b);
                    free_remotely(a);
                    free_remotely(b);
                });
            }
            // Meanwhile the owner frees, allocates and collects, locally.
            for &b in &blocks[4..] {
                // SAFETY: out of the slab, and the owner's.
                unsafe { s.put_local(b) };
            }
            for _ in 0..3 {
                let b = s.take_one();
                assert!(!b.is_null());
                assert!(s.has_local() || s.free.get().is_null());
                // SAFETY: just taken: the owner's.
                unsafe { s.put_local(b) };
                got += collect(&s);
            }
        });
        got += collect(&s);
        assert_eq!(got, 4);
        assert_eq!(s.used.get(), 0);
        let mut on_list = BTreeSet::new();
        let mut b = s.free.get();
        while !b.is_null() {
            assert!(on_list.insert(b as usize), "a block twice on the list");
            // SAFETY: the local list, the owner's.
            b = unsafe { Block::next_in_slab(b) };
        }
        assert_eq!(on_list, blocks.iter().map(|&b| b as usize).collect());
    }

    #[test]
    fn an_armed_slab_freed_to_while_its_owner_disarms_is_announced_once_at_most() {
        let heap = FakeHeap {
            pending: AtomicPtr::new(ptr::null_mut()),
        };
        let mut arena = [[0usize; 2]; BLOCKS];
        let blocks = blocks(&mut arena);
        let s = record(&heap);
        // The owner's slab is full: it arms a notification.
        assert!(arm(&s));
        let mut seen = 0;
        thread::scope(|scope| {
            let x = Shared(&s, blocks[0]);
            scope.spawn(move || free_remotely(x));
            // Meanwhile the owner gives the slab up, as abandon does.
            disarm(&s);
            if s.notify.get() == Notify::Queued {
                // A freer consumed NOTIFY: the slab must arrive, once.
                let mut backoff = Backoff::new();
                while seen == 0 {
                    let mut p = heap.pending.swap(ptr::null_mut(), Ordering::Acquire);
                    while !p.is_null() {
                        assert!(ptr::eq(p, &s));
                        seen += 1;
                        // SAFETY: slabs on the stack are live.
                        p = unsafe { &(*p).pending_next }.load(Ordering::Relaxed);
                    }
                    backoff.snooze();
                }
                s.notify.set(Notify::Idle);
            }
            wait_not_busy(&s);
        });
        assert!(
            heap.pending.load(Ordering::Acquire).is_null(),
            "the slab was queued after the owner let go of it"
        );
        assert!(seen <= 1);
        assert_eq!(collect(&s), 1);
        assert_eq!(s.used.get(), BLOCKS as u32 - 1);
        assert_eq!(s.remote.load(Ordering::Relaxed), 0, "NOTIFY or BUSY left");
    }
}

/// The count in the remote word, and the owner's use of it (plain threads;
/// the races are loom's above).
#[cfg(all(test, not(loom)))]
mod counted_stack {
    extern crate std;

    use std::collections::BTreeSet;
    use std::vec::Vec;

    use core::ptr;

    use super::{collect, push};
    use crate::block::{Block, Chain};
    use crate::slab::{new_slab, release_slab, SlabMeta};

    const CLASS: usize = 4; // 64 B blocks, 1,024 a slab

    fn take(m: &SlabMeta, max: usize) -> Vec<*mut Block> {
        let mut out = Chain::new();
        m.take_into(&mut out, max);
        let mut blocks = Vec::new();
        // SAFETY: the chain was just linked by take_into and is ours.
        while let Some(b) = unsafe { out.pop() } {
            blocks.push(b);
        }
        blocks
    }

    /// Pushes `blocks` as one chain, the way a drain does.
    fn push_chain(s: *mut SlabMeta, blocks: &[*mut Block]) {
        for pair in blocks.windows(2) {
            // SAFETY: the blocks are out of the slab and ours.
            unsafe { Block::set_next(pair[0], pair[1]) };
        }
        // SAFETY: as above; they belong to `s`.
        unsafe { push(s, blocks[0], blocks[blocks.len() - 1], blocks.len()) };
    }

    fn set(blocks: &[*mut Block]) -> BTreeSet<usize> {
        blocks.iter().map(|&b| b as usize).collect()
    }

    #[test]
    // Under Miri: takes a slab from the superslab, whose `mmap` flags
    // (MAP_NORESERVE) Miri does not support.
    #[cfg_attr(miri, ignore)]
    fn the_owner_takes_back_exactly_what_was_pushed() {
        let s = new_slab(CLASS, ptr::null_mut()).expect("a slab");
        // SAFETY: the slab is this test's alone.
        let m = unsafe { &*s };
        let out = take(m, 100);
        assert_eq!(out.len(), 100);
        assert_eq!(m.used.get(), 100);

        // Three chains come back from "other threads": 1 + 7 + 30 blocks.
        push_chain(s, &out[0..1]);
        push_chain(s, &out[1..8]);
        push_chain(s, &out[8..38]);
        assert_eq!(collect(m), 38, "the count travels in the word");
        assert_eq!(m.used.get(), 62);
        assert_eq!(collect(m), 0);

        // An empty `out` takes the whole list (38), then fresh blocks.
        let again = take(m, 64);
        assert_eq!(again.len(), 64);
        assert!(set(&again).is_superset(&set(&out[0..38])));
        assert_eq!(m.used.get(), 126);

        // With local blocks left, a collect appends; a small take cuts.
        push_chain(s, &again[0..20]);
        assert_eq!(collect(m), 20);
        push_chain(s, &again[20..30]);
        assert_eq!(collect(m), 10, "collect onto a non-empty local list");
        assert_eq!(m.used.get(), 96);
        let part = take(m, 25);
        assert_eq!(part.len(), 25);
        let rest = take(m, 5);
        assert_eq!(rest.len(), 5);
        assert_eq!(
            set(&part)
                .union(&set(&rest))
                .copied()
                .collect::<BTreeSet<_>>(),
            set(&again[0..30]),
            "the 30 blocks that came back, each once"
        );
        assert!(m.free.get().is_null());
        assert_eq!(m.used.get(), 126);

        // Everything back; the slab is empty again.
        for chunk in [&out[38..], &again[30..], &part[..], &rest[..]] {
            push_chain(s, chunk);
        }
        assert_eq!(collect(m), 126);
        assert_eq!(m.used.get(), 0);
        // SAFETY: empty, on no list, ours.
        unsafe { release_slab(s) };
    }
}

/// An owner of real-time priority waiting on BUSY, with the freer it waits
/// for preempted on the same CPU: the owner must give way. Spinning (or
/// `sched_yield`, which does not let a lower priority run) would hold the
/// CPU until the kernel's real-time throttling, if any, steps in (up to
/// 0.95 s of every second); the watchdog clears BUSY itself after
/// `PATIENCE` and fails the test. Skipped where `SCHED_FIFO` or two CPUs
/// cannot be had.
#[cfg(all(test, not(loom)))]
mod fifo_owner {
    extern crate std;

    use std::eprintln;
    use std::sync::atomic::{AtomicBool, AtomicU8};
    use std::sync::Mutex;
    use std::thread;
    use std::time::{Duration, Instant};

    use core::ptr;
    use core::sync::atomic::Ordering;

    use super::{arm, disarm, wait_not_busy, BUSY};
    use crate::slab::{new_slab, release_slab, SlabMeta};

    const PATIENCE: Duration = Duration::from_millis(300);

    /// One real-time test at a time: they share a CPU.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// The first two CPUs this process may run on.
    fn two_cpus() -> Option<(usize, usize)> {
        // SAFETY: cpu_set_t is plain bits; zeroed is the empty set.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: a valid cpu_set_t of the size passed.
        if unsafe { libc::sched_getaffinity(0, core::mem::size_of_val(&set), &mut set) } != 0 {
            return None;
        }
        let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| {
            // SAFETY: c is below CPU_SETSIZE.
            unsafe { libc::CPU_ISSET(c, &set) }
        });
        Some((cpus.next()?, cpus.next()?))
    }

    /// Pins the calling thread to `cpu`.
    fn pin(cpu: usize) -> bool {
        // SAFETY: as above.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: cpu is below CPU_SETSIZE (it came from the affinity mask).
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: a valid cpu_set_t of the size passed; 0 is this thread.
        unsafe { libc::sched_setaffinity(0, core::mem::size_of_val(&set), &set) == 0 }
    }

    /// Sets the calling thread's policy (priority 1 for SCHED_FIFO).
    fn set_policy(policy: libc::c_int) -> bool {
        let param = libc::sched_param {
            sched_priority: if policy == libc::SCHED_FIFO { 1 } else { 0 },
        };
        // SAFETY: our own thread and a valid sched_param.
        unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) == 0 }
    }

    #[derive(Clone, Copy)]
    struct Slab(*mut SlabMeta);
    // SAFETY: the threads below touch only the slab's atomic `remote` word,
    // except the owner, which holds the slab.
    unsafe impl Send for Slab {}

    /// Runs `wait` as a SCHED_FIFO owner while a preempted freer on the
    /// same CPU holds BUSY. Returns how long the wait took and whether the
    /// watchdog had to end it, or None when the test cannot run here.
    fn fifo_owner_waits(wait: fn(&SlabMeta)) -> Option<(Duration, bool)> {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (shared_cpu, watchdog_cpu) = two_cpus()?;
        if !pin(watchdog_cpu) {
            return None;
        }
        let s = Slab(new_slab(4, ptr::null_mut()).expect("a slab"));
        // A freer inside its window: NOTIFY consumed, BUSY set.
        // SAFETY: the slab is this test's; `remote` is atomic.
        unsafe { &*s.0 }.remote.store(BUSY, Ordering::Relaxed);

        // 0: starting, 1: freer ready, 2: owner could not go real-time,
        // 3: owner real-time, waiting.
        static STAGE: AtomicU8 = AtomicU8::new(0);
        static DONE: AtomicBool = AtomicBool::new(false);
        STAGE.store(0, Ordering::SeqCst);
        DONE.store(false, Ordering::SeqCst);

        let freer = thread::spawn(move || {
            let s = s;
            if !pin(shared_cpu) {
                STAGE.store(2, Ordering::SeqCst);
                return;
            }
            STAGE.store(1, Ordering::SeqCst);
            // Runnable, on the owner's CPU, until the owner is waiting.
            while STAGE.load(Ordering::SeqCst) < 2 {
                core::hint::spin_loop();
            }
            // SAFETY: as above.
            unsafe { &*s.0 }.remote.fetch_and(!BUSY, Ordering::Release);
        });
        let owner = thread::spawn(move || {
            let s = s;
            if !pin(shared_cpu) {
                STAGE.store(2, Ordering::SeqCst);
                return None;
            }
            while STAGE.load(Ordering::SeqCst) == 0 {
                thread::yield_now();
            }
            if STAGE.load(Ordering::SeqCst) != 1 || !set_policy(libc::SCHED_FIFO) {
                STAGE.store(2, Ordering::SeqCst);
                return None;
            }
            let start = Instant::now();
            STAGE.store(3, Ordering::SeqCst);
            // SAFETY: the owner holds the slab.
            wait(unsafe { &*s.0 });
            let took = start.elapsed();
            DONE.store(true, Ordering::SeqCst);
            set_policy(libc::SCHED_OTHER);
            Some(took)
        });
        // The watchdog: if the owner never gives way, end the freer's
        // window ourselves so that the test ends.
        let start = Instant::now();
        let mut rescued = false;
        while !DONE.load(Ordering::SeqCst) && STAGE.load(Ordering::SeqCst) != 2 {
            if start.elapsed() > PATIENCE && !rescued {
                rescued = true;
                // SAFETY: as above.
                unsafe { &*s.0 }.remote.fetch_and(!BUSY, Ordering::Release);
            }
            thread::sleep(Duration::from_millis(1));
        }
        let took = owner.join().expect("owner");
        freer.join().expect("freer");
        // SAFETY: the slab is this test's again, empty, on no list.
        unsafe {
            let m = &*s.0;
            disarm(m);
            m.remote.store(0, Ordering::Relaxed);
            release_slab(s.0);
        }
        took.map(|t| (t, rescued))
    }

    fn check(name: &str, took: Option<(Duration, bool)>) {
        match took {
            None => eprintln!("{name}: skipped (no SCHED_FIFO or fewer than two CPUs)"),
            Some((t, rescued)) => assert!(
                !rescued,
                "{name}: a SCHED_FIFO owner waited {t:?} for a freer preempted on its CPU, \
                 until the watchdog ended the freer's window"
            ),
        }
    }

    #[test]
    // Under Miri: a superslab slab (see `counted_stack`), and CPU affinity
    // and scheduling policies, which Miri does not emulate.
    #[cfg_attr(miri, ignore)]
    fn a_real_time_owner_arming_gives_way_to_a_preempted_freer() {
        let took = fifo_owner_waits(|m| assert!(arm(m)));
        check("arm", took);
    }

    #[test]
    // Under Miri: a superslab slab (see `counted_stack`), and CPU affinity
    // and scheduling policies, which Miri does not emulate.
    #[cfg_attr(miri, ignore)]
    fn a_real_time_owner_waiting_out_busy_gives_way_to_a_preempted_freer() {
        let took = fifo_owner_waits(wait_not_busy);
        check("wait_not_busy", took);
    }
}
