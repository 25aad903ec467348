//! The box backend: slabs owned by one thread's heap.
//!
//! Each thread that allocates gets a [`Heap`]: per class, a list of partial
//! slabs (the first is the one allocation takes from) and a list of full
//! ones. The owner allocates and frees without atomics. Another thread's
//! free goes onto the slab's remote list (`remote.rs`); the owner collects
//! it when it next needs blocks, or, for a full slab it armed, when the slab
//! arrives on the heap's pending stack.
//!
//! When a thread exits its heap is abandoned: empty slabs go back to the
//! superslab, the others onto a global per-class abandoned list, and the
//! heap struct onto a pool for the next thread. Threads that need a slab of
//! a class adopt an abandoned one before asking the superslab for more.
//! Remote frees to an abandoned slab land on its remote list as usual and
//! are collected by whoever adopts it (or by [`BoxBackend::trim`]).
//!
//! A thread whose exit hook already ran (a later pthread-key destructor
//! allocating) gets a heap for one call at a time, abandoned again before
//! the call returns (`with_heap`; why, in `thread_exit.rs`).
//!
//! In the child of `fork`, [`SmallBackend::postfork_child`] finishes the
//! hand-offs of freers that `fork` left behind in the child's one heap
//! (`remote.rs`, "Fork").

use core::cell::{Cell, UnsafeCell};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::{AtomicPtr, Backoff};

use hakmem_superslab::{lock::RawLock, meta};

use crate::block::{Block, Chain};
use crate::remote;
use crate::size_class::NUM_CLASSES;
use crate::slab::{self, new_slab, Notify, SlabList, SlabMeta, SlabQueue};
use crate::{stats, SmallBackend};

/// A thread's slabs. Never freed: parked in a pool when its thread exits.
///
/// Freers push onto `pending` while the owner works on the lists, so the
/// owner never borrows the whole heap (`&Heap` or `&mut Heap`): it reaches
/// each field through the raw pointer (`(*heap).partial[class]`, a borrow of
/// that list alone), and `pending` as `&(*heap).pending`.
#[repr(C)]
pub(crate) struct Heap {
    /// Slabs with remote frees the heap asked to hear about. Must stay the
    /// first field: `remote::push` reaches it through the owner pointer.
    pending: AtomicPtr<SlabMeta>,
    pool_next: *mut Heap,
    partial: [SlabQueue; NUM_CLASSES],
    full: [SlabQueue; NUM_CLASSES],
}

std::thread_local! {
    static HEAP: Cell<*mut Heap> = const { Cell::new(ptr::null_mut()) };
}

/// The thread-box backend (the `box-refactor` feature's backend).
pub struct BoxBackend;

#[inline(always)]
fn current_heap() -> *mut Heap {
    HEAP.with(|h| h.get())
}

#[inline(always)]
fn owner_id(h: *mut Heap) -> *mut u8 {
    h.cast()
}

impl SmallBackend for BoxBackend {
    const NAME: &'static str = "box";

    #[inline]
    fn alloc(class: usize) -> *mut u8 {
        let heap = current_heap();
        if !heap.is_null() {
            // SAFETY: the heap is this thread's own.
            let s = unsafe { (*heap).partial[class].head };
            if !s.is_null() {
                // SAFETY: a partial slab of our own heap.
                let b = unsafe { (*s).take_one() };
                if !b.is_null() {
                    return b.cast();
                }
            }
        }
        alloc_slow(class)
    }

    #[inline]
    unsafe fn free(p: *mut u8) {
        // SAFETY: the caller hands us a block of a slab of this backend.
        let s = unsafe { SlabMeta::of(p) };
        let heap = current_heap();
        // SAFETY: the slab is live while it has this block out.
        if !heap.is_null() && unsafe { &*s }.owner.load(Ordering::Relaxed) == owner_id(heap) {
            // SAFETY: our own slab and heap.
            unsafe { free_local(heap, s, p.cast()) };
        } else {
            // SAFETY: the block is given up by the caller.
            unsafe { remote::push(s, p.cast(), p.cast(), 1) };
            count_remote_frees(heap, 1);
        }
    }

    #[inline(always)]
    unsafe fn free_own(p: *mut u8, owner: *const u8) {
        // SAFETY: the caller's contract: `owner` is the calling thread's
        // token, which is its heap (`owner_id`), and `p`'s slab is that
        // heap's: what `free` finds before it frees locally.
        unsafe { free_local(owner.cast_mut().cast(), SlabMeta::of(p), p.cast()) }
    }

    #[inline(always)]
    unsafe fn owner_of(p: *const u8) -> *const u8 {
        // SAFETY: the caller's contract: a block of this backend, out.
        unsafe { &*SlabMeta::of(p) }
            .owner
            .load(Ordering::Relaxed)
            .cast_const()
    }

    #[inline(always)]
    fn owner_token() -> *const u8 {
        owner_id(current_heap()).cast_const()
    }

    fn refill(class: usize, max: usize) -> Chain {
        Self::refill_whole(class, max, REFILL_WHOLE * max)
    }

    fn refill_whole(class: usize, max: usize, whole: usize) -> Chain {
        with_heap(Chain::new(), |heap| {
            // SAFETY: the heap is this thread's for the call.
            unsafe { refill_from(heap, class, max, whole.max(max)) }
        })
    }

    unsafe fn drain(chain: Chain, class: usize) {
        let heap = current_heap();
        let me = owner_id(heap);
        let mut group: *mut SlabMeta = ptr::null_mut();
        let (mut g_head, mut g_tail) = (ptr::null_mut::<Block>(), ptr::null_mut::<Block>());
        let mut g_len = 0;
        let mut remote_blocks = 0;
        let mut b = chain.head;
        while !b.is_null() {
            // SAFETY: the chain is the caller's, properly linked.
            let next = unsafe { Block::next(b) };
            #[cfg(feature = "secure")]
            crate::hardening::check_drained_class(b, class);
            // SAFETY: b is a block of this backend.
            let s = unsafe { SlabMeta::of(b.cast()) };
            // SAFETY: the slab is live while it has b out.
            debug_assert_eq!(unsafe { &*s }.class(), class);
            // SAFETY: as above.
            if !heap.is_null() && unsafe { &*s }.owner.load(Ordering::Relaxed) == me {
                // SAFETY: our own slab.
                unsafe { free_local_in_batch(heap, s, b) };
            } else if s == group {
                remote_blocks += 1;
                g_len += 1;
                // SAFETY: b is ours to link; the group is being built.
                unsafe { Block::set_next(g_tail, b) };
                g_tail = b;
            } else {
                if !group.is_null() {
                    // SAFETY: the group's blocks belong to `group`.
                    unsafe { remote::push(group, g_head, g_tail, g_len) };
                }
                group = s;
                g_head = b;
                g_tail = b;
                g_len = 1;
                remote_blocks += 1;
            }
            b = next;
        }
        if !group.is_null() {
            // SAFETY: as above.
            unsafe { remote::push(group, g_head, g_tail, g_len) };
        }
        if remote_blocks > 0 {
            count_remote_frees(heap, remote_blocks);
        }
    }

    /// Slabs are the `SLAB_SIZE`-aligned `SLAB_SIZE` bytes of their
    /// region, and small blocks live in single slabs: two addresses share
    /// one exactly when they differ only below `SLAB_SHIFT`.
    #[inline(always)]
    fn same_slab(a: *const u8, b: *const u8) -> bool {
        (a as usize ^ b as usize) < hakmem_superslab::SLAB_SIZE
    }

    /// One remote push for the whole run, unless the slab is the calling
    /// thread's own by now (it adopted it): then the blocks go back as in
    /// [`Self::drain`]. Hardened builds walk the run there too, checking
    /// each block's class.
    unsafe fn drain_slab_run(chain: Chain, tail: *mut Block, class: usize) {
        if chain.is_empty() {
            return;
        }
        let heap = current_heap();
        // SAFETY: the caller's contract: a block of this backend, out.
        let s = unsafe { SlabMeta::of(chain.head.cast()) };
        // SAFETY: the slab is live while it has the run's blocks out.
        let own = !heap.is_null() && unsafe { &*s }.owner.load(Ordering::Relaxed) == owner_id(heap);
        if cfg!(feature = "secure") || own {
            // SAFETY: the caller's contract.
            return unsafe { Self::drain(chain, class) };
        }
        // SAFETY: the caller's contract: `head..=tail` are `len` blocks of
        // `s`, out of it and given up; `s` is another heap's or abandoned.
        unsafe { remote::push(s, chain.head, tail, chain.len) };
        count_remote_frees(heap, chain.len);
    }

    fn trim() {
        let heap = current_heap();
        if !heap.is_null() {
            // SAFETY: our own heap.
            unsafe { trim_heap(heap) };
        }
        sweep_abandoned();
    }

    fn sweep() -> bool {
        release_returned_abandoned()
    }

    fn free_blocks_in_reach() -> [usize; NUM_CLASSES] {
        let mut free = [0usize; NUM_CLASSES];
        let heap = current_heap();
        if !heap.is_null() {
            for (class, n) in free.iter_mut().enumerate() {
                // SAFETY: our own heap's list heads.
                let heads = unsafe { [(*heap).partial[class].head, (*heap).full[class].head] };
                for s in heads {
                    // SAFETY: slabs on our own lists: we are their holder.
                    *n += unsafe { free_in_chain(s) };
                }
            }
        }
        ABANDONED.lock.with(|| {
            // SAFETY: lock held: the abandoned lists and their slabs, whose
            // holder the list is while they are on it.
            let heads = unsafe { &*ABANDONED.heads.get() };
            for (n, &s) in free.iter_mut().zip(heads.iter()) {
                // SAFETY: as above.
                *n += unsafe { free_in_chain(s) };
            }
        });
        free
    }

    fn prefork() {
        ABANDONED.lock.lock();
        HEAP_POOL.lock.lock();
    }

    fn postfork_parent() {
        HEAP_POOL.lock.unlock();
        ABANDONED.lock.unlock();
    }

    fn postfork_child() {
        HEAP_POOL.lock.reset_after_fork();
        ABANDONED.lock.reset_after_fork();
        let heap = current_heap();
        if !heap.is_null() {
            // SAFETY: the heap of the calling thread, the child's only one.
            unsafe { repair_after_fork(heap) };
        }
    }
}

/// How many batches' worth a refill takes whole from a slab's local list
/// rather than walking it to cut off one batch.
pub const REFILL_WHOLE: usize = 4;

/// Up to `max` blocks of `class` from `heap` (more, up to `whole`, when a
/// slab's whole local list comes at no walk).
///
/// # Safety
/// `heap` is the calling thread's (for this call, if a late one).
unsafe fn refill_from(heap: *mut Heap, class: usize, max: usize, whole: usize) -> Chain {
    let mut out = Chain::new();
    while out.len < max {
        // SAFETY: our own heap.
        let mut s = unsafe { (*heap).partial[class].head };
        if s.is_null() {
            // SAFETY: our own heap.
            s = unsafe { find_slab(heap, class) };
            if s.is_null() {
                break;
            }
        }
        // A local list of up to `whole` blocks goes whole: cutting it at
        // `max` walks blocks that other threads freed, a cache miss a
        // block (c-xthread spent 41% of its time in that walk).
        // SAFETY: a partial slab of our own heap.
        unsafe { &*s }.take_into_whole(&mut out, max, whole);
        if out.len < max {
            // SAFETY: s is the exhausted head of our partial list.
            unsafe { retire(heap, s) };
        }
    }
    out
}

/// In the child of `fork`: finishes, for every slab of `heap`, the
/// hand-off of a freer that `fork` left inside it (`remote.rs`, "Fork").
/// Only the calling thread's heap needs it: the parent's other threads'
/// heaps have no thread in the child, and no abandoned slab is ever BUSY
/// (`abandon_heap` waits BUSY out before it lets a slab go).
///
/// # Safety
/// `heap` is the calling thread's, and the calling thread the only one.
#[cold]
unsafe fn repair_after_fork(heap: *mut Heap) {
    // SAFETY: caller's contract.
    let pending = unsafe { &(*heap).pending };
    for class in 0..NUM_CLASSES {
        // SAFETY: caller's contract; the list heads are ours to read.
        let heads = unsafe { [(*heap).partial[class].head, (*heap).full[class].head] };
        for mut s in heads {
            while !s.is_null() {
                // SAFETY: slabs on our lists are ours.
                let m = unsafe { &*s };
                remote::repair_after_fork(m, pending);
                s = m.next.get();
            }
        }
    }
}

/// Free blocks (capacity less `used`) of the slabs linked through `next`
/// from `s`.
///
/// # Safety
/// The caller is the holder of every slab on the chain (the owner of the
/// heap whose list it is, or the holder of the abandoned lists' lock).
unsafe fn free_in_chain(mut s: *mut SlabMeta) -> usize {
    let mut free = 0;
    while !s.is_null() {
        // SAFETY: the caller's contract: a slab we hold.
        let m = unsafe { &*s };
        free += (m.capacity - m.used.get()) as usize;
        s = m.next.get();
    }
    free
}

/// Counts remote frees of the calling thread; a thread without a heap gets
/// its exit hook armed once so the count is merged when it exits.
#[inline]
fn count_remote_frees(heap: *mut Heap, n: usize) {
    if stats::remote_frees(n) && heap.is_null() {
        crate::thread_exit::register_counters_only();
    }
}

#[cold]
#[inline(never)]
fn alloc_slow(class: usize) -> *mut u8 {
    with_heap(ptr::null_mut(), |heap| {
        // SAFETY: the heap is this thread's for the call.
        unsafe { alloc_from(heap, class) }
    })
}

/// One block of `class` from `heap`; null when out of memory.
///
/// # Safety
/// `heap` is the calling thread's (for this call, if a late one).
unsafe fn alloc_from(heap: *mut Heap, class: usize) -> *mut u8 {
    loop {
        // SAFETY: our own heap.
        let mut s = unsafe { (*heap).partial[class].head };
        if s.is_null() {
            // SAFETY: our own heap.
            s = unsafe { find_slab(heap, class) };
            if s.is_null() {
                return ptr::null_mut();
            }
        }
        // SAFETY: a partial slab of ours.
        let b = unsafe { (*s).take_one() };
        if !b.is_null() {
            return b.cast();
        }
        // SAFETY: s is the exhausted head of our partial list.
        unsafe { retire(heap, s) };
    }
}

/// Local free: the slab belongs to `heap`, the calling thread's heap.
///
/// # Safety
/// `s` is a slab of `heap`, `b` one of its blocks that is out.
#[inline]
unsafe fn free_local(heap: *mut Heap, s: *mut SlabMeta, b: *mut Block) {
    // SAFETY: caller's contract.
    let m = unsafe { &*s };
    // SAFETY: caller's contract.
    unsafe { m.put_local(b) };
    if m.list.get() == SlabList::Full || m.used.get() == 0 {
        // SAFETY: caller's contract.
        unsafe { free_local_transition::<true>(heap, s) };
    }
}

/// [`free_local`] of a block of a batch ([`BoxBackend::drain`]): the same,
/// but not a point to start the purge thread at (the batch's caller may
/// be half-way through its own work: a thread's exit flush).
///
/// # Safety
/// As for [`free_local`].
#[inline]
unsafe fn free_local_in_batch(heap: *mut Heap, s: *mut SlabMeta, b: *mut Block) {
    // SAFETY: caller's contract.
    let m = unsafe { &*s };
    // SAFETY: caller's contract.
    unsafe { m.put_local(b) };
    if m.list.get() == SlabList::Full || m.used.get() == 0 {
        // SAFETY: caller's contract.
        unsafe { free_local_transition::<false>(heap, s) };
    }
}

/// `SAFE_POINT`: the free is a whole call of the layer above's (one block
/// given back, nothing of the caller's half done), where the purge thread
/// may be started when the release below asked for it.
#[cold]
unsafe fn free_local_transition<const SAFE_POINT: bool>(heap: *mut Heap, s: *mut SlabMeta) {
    // SAFETY: caller's contract (free_local).
    let m = unsafe { &*s };
    let class = m.class();
    if m.list.get() == SlabList::Full {
        remote::disarm(m);
        // SAFETY: our own heap (caller's contract).
        let displaced = unsafe { (*heap).partial[class].head };
        // SAFETY: s is on our full list; the lists are the owner's.
        unsafe {
            (*heap).full[class].remove(s);
            (*heap).partial[class].push_front(s, SlabList::Partial);
        }
        // The head it displaces is no longer the slab allocation takes
        // from: empty, it goes back like any other empty slab. (Kept, a
        // bulk free in the reverse of allocation order kept every slab:
        // each emptied while it was the head, and was displaced by the
        // next one's first free.)
        // SAFETY: a slab on our partial list, when not null.
        if !displaced.is_null() && unsafe { &*displaced }.used.get() == 0 {
            // SAFETY: as above.
            if unsafe { &*displaced }.notify.get() != Notify::Queued {
                // SAFETY: on our partial list, empty, not queued.
                unsafe {
                    (*heap).partial[class].remove(displaced);
                    release(displaced);
                }
                if SAFE_POINT {
                    // As below.
                    hakmem_superslab::background::start_if_wanted();
                }
            }
        }
    } else if m.used.get() == 0
        // SAFETY: our own heap (caller's contract).
        && unsafe { (*heap).partial[class].head } != s
        && m.notify.get() != Notify::Queued
    {
        // Empty and not the slab we allocate from: give it back. The head
        // stays, so a workload hovering at a slab boundary does not thrash.
        // SAFETY: s is on our partial list and holds no block.
        unsafe {
            (*heap).partial[class].remove(s);
            release(s);
        }
        if SAFE_POINT {
            // The heap's lists are whole again and no lock is held: a
            // `malloc` from `pthread_create` may come in here.
            hakmem_superslab::background::start_if_wanted();
        }
    }
}

/// # Safety
/// `s` is held exclusively, empty, on no list, not Queued.
unsafe fn release(s: *mut SlabMeta) {
    // SAFETY: caller's contract.
    let m = unsafe { &*s };
    // A freer that queued this slab may still be clearing BUSY in its record.
    remote::wait_not_busy(m);
    // SAFETY: caller's contract.
    unsafe { slab::release_slab(s) };
}

/// The head slab of `class` has nothing left locally: collect its remote
/// frees, or move it to the full list with a notification armed.
///
/// # Safety
/// `s` is the head of `heap`'s partial list for its class.
unsafe fn retire(heap: *mut Heap, s: *mut SlabMeta) {
    // SAFETY: caller's contract.
    let m = unsafe { &*s };
    if remote::collect(m) > 0 {
        return;
    }
    if remote::arm(m) {
        let class = m.class();
        // SAFETY: s is on our partial list; the lists are the owner's.
        unsafe {
            (*heap).partial[class].remove(s);
            (*heap).full[class].push_front(s, SlabList::Full);
        }
    }
}

/// Finds a slab of `class` with blocks to give: from the pending stack, the
/// partial list, the abandoned list, or a fresh one from the superslab.
/// Leaves it at the head of the partial list. Null when out of memory.
///
/// # Safety
/// `heap` is the calling thread's heap.
#[cold]
unsafe fn find_slab(heap: *mut Heap, class: usize) -> *mut SlabMeta {
    // SAFETY: caller's contract.
    unsafe { process_pending(heap) };
    loop {
        // SAFETY: caller's contract.
        let s = unsafe { (*heap).partial[class].head };
        if s.is_null() {
            break;
        }
        // SAFETY: a slab of our own.
        let m = unsafe { &*s };
        if m.has_local() || remote::collect(m) > 0 {
            return s;
        }
        // SAFETY: s heads our partial list and is exhausted.
        unsafe { retire(heap, s) };
        // SAFETY: caller's contract.
        if unsafe { (*heap).partial[class].head } == s {
            // Blocks came back while arming.
            return s;
        }
    }
    if let Some(s) = adopt(heap, class) {
        return s;
    }
    match new_slab(class, owner_id(heap)) {
        Ok(s) => {
            // SAFETY: the slab is new and ours; the list is the owner's.
            unsafe { (*heap).partial[class].push_front(s, SlabList::Partial) };
            s
        }
        Err(_) => ptr::null_mut(),
    }
}

/// Takes every slab off the pending stack: they had remote frees while full.
///
/// # Safety
/// `heap` is the calling thread's heap (or one being abandoned by it).
unsafe fn process_pending(heap: *mut Heap) {
    // SAFETY: caller's contract; `pending` is atomic.
    let pending = unsafe { &(*heap).pending };
    let mut s = pending.swap(ptr::null_mut(), Ordering::Acquire);
    while !s.is_null() {
        // SAFETY: slabs on our pending stack are ours.
        let m = unsafe { &*s };
        let next = m.pending_next.load(Ordering::Relaxed);
        m.notify.set(Notify::Idle);
        remote::collect(m);
        let class = m.class();
        if m.list.get() == SlabList::Full {
            // SAFETY: s is on our full list; the lists are the owner's.
            unsafe {
                (*heap).full[class].remove(s);
                (*heap).partial[class].push_front(s, SlabList::Partial);
            }
        } else if m.used.get() == 0
            // SAFETY: our own heap (caller's contract).
            && unsafe { (*heap).partial[class].head } != s
        {
            // SAFETY: s is on our partial list and empty.
            unsafe {
                (*heap).partial[class].remove(s);
                release(s);
            }
        }
        s = next;
    }
}

/// Runs `f` with the calling thread's heap, attaching one on the thread's
/// first use; `none` when no heap can be had. A thread whose exit hook ran
/// already gets a heap for this call only: it is abandoned again before
/// this returns, so nothing stays with a thread that no hook will visit
/// again (see `thread_exit.rs`).
#[inline]
fn with_heap<R>(none: R, f: impl FnOnce(*mut Heap) -> R) -> R {
    let h = current_heap();
    if h.is_null() {
        with_new_heap(none, f)
    } else {
        f(h)
    }
}

#[cold]
#[inline(never)]
fn with_new_heap<R>(none: R, f: impl FnOnce(*mut Heap) -> R) -> R {
    let Some(heap) = take_heap() else {
        return none;
    };
    if crate::thread_exit::exited() {
        let r = f(heap);
        abandon_heap(heap);
        return r;
    }
    HEAP.with(|h| h.set(heap));
    crate::thread_exit::register(heap.cast());
    f(heap)
}

/// A pooled heap, or a new one.
fn take_heap() -> Option<*mut Heap> {
    HEAP_POOL.take().or_else(|| {
        let p = meta::alloc_permanent(core::mem::size_of::<Heap>(), 64).ok()?;
        stats::heap_created();
        // Zeroed memory is a valid empty heap: null lists, null pending.
        Some(p.as_ptr().cast::<Heap>())
    })
}

/// Gives up the heap of an exiting thread. Called from the thread-exit hook
/// with the heap that thread registered.
pub(crate) fn abandon_heap(heap: *mut Heap) {
    if heap.is_null() {
        return;
    }
    HEAP.with(|h| {
        if h.get() == heap {
            h.set(ptr::null_mut());
        }
    });
    // None of the heap's slabs is the thread's any more: out of its table
    // of its own slabs, before any can be adopted (see `own_slab`).
    crate::own_slab::leaving(ptr::null());
    // The exiting thread owned this heap; no one else can, but freers may
    // still push onto `pending` until step 2 is done: the heap is reached
    // field by field, never borrowed whole (see `Heap`).
    // SAFETY: `pending` is atomic; heaps are never freed.
    let pending = unsafe { &(*heap).pending };
    // 1. No slab may stay armed: afterwards no freer will touch `pending`.
    let mut queued = 0usize;
    for class in 0..NUM_CLASSES {
        // SAFETY: our heap's list heads.
        let heads = unsafe { [(*heap).partial[class].head, (*heap).full[class].head] };
        for mut s in heads {
            while !s.is_null() {
                // SAFETY: slabs on our lists are ours.
                let m = unsafe { &*s };
                remote::disarm(m);
                if m.notify.get() == Notify::Queued {
                    queued += 1;
                }
                s = m.next.get();
            }
        }
    }
    // 2. Wait for the slabs already queued to arrive, and take them off.
    let mut backoff = Backoff::new();
    while queued > 0 {
        let mut s = pending.swap(ptr::null_mut(), Ordering::Acquire);
        if s.is_null() {
            backoff.snooze();
        }
        while !s.is_null() {
            // SAFETY: slabs on our pending stack are ours.
            let m = unsafe { &*s };
            s = m.pending_next.load(Ordering::Relaxed);
            m.notify.set(Notify::Idle);
            queued -= 1;
        }
    }
    // 3. Release what is empty; gather the rest, per class, and hand it to
    //    the abandoned lists in one lock round-trip. The partial slabs go
    //    last, so they head the chain: adopters (which look at a few slabs
    //    only) meet slabs with room first, not full ones.
    let mut left: [(*mut SlabMeta, *mut SlabMeta); NUM_CLASSES] =
        [(ptr::null_mut(), ptr::null_mut()); NUM_CLASSES];
    let mut abandoned = 0;
    for (class, kept) in left.iter_mut().enumerate() {
        // SAFETY: our heap's lists, two disjoint borrows (not of the heap).
        let lists = unsafe { [&mut (*heap).full[class], &mut (*heap).partial[class]] };
        for list in lists {
            loop {
                let s = list.head;
                if s.is_null() {
                    break;
                }
                // SAFETY: our slab, on this list.
                unsafe { list.remove(s) };
                // SAFETY: our slab.
                let m = unsafe { &*s };
                remote::wait_not_busy(m);
                remote::collect(m);
                if m.used.get() == 0 {
                    // SAFETY: empty, off every list, not queued.
                    unsafe { slab::release_slab(s) };
                } else {
                    m.owner.store(ptr::null_mut(), Ordering::Release);
                    m.list.set(SlabList::None);
                    m.next.set(kept.0);
                    if kept.1.is_null() {
                        kept.1 = s;
                    }
                    kept.0 = s;
                    abandoned += 1;
                }
            }
        }
    }
    if abandoned > 0 {
        ABANDONED.push_chains(&left, abandoned);
    }
    HEAP_POOL.put(heap);
}

/// Takes an abandoned slab of `class` that has free blocks; puts it at the
/// head of the partial list. Full ones met on the way go to the full list.
#[cold]
fn adopt(heap: *mut Heap, class: usize) -> Option<*mut SlabMeta> {
    // The heap is the calling thread's own; its lists are reached through
    // `heap` one at a time (see `Heap`).
    for _ in 0..8 {
        let s = ABANDONED.pop(class)?;
        // SAFETY: popped from the abandoned list: ours now.
        let m = unsafe { &*s };
        m.owner.store(owner_id(heap), Ordering::Release);
        m.notify.set(Notify::Idle);
        stats::slab_adopted();
        remote::collect(m);
        if m.has_local() {
            // SAFETY: ours, on no list; our heap.
            unsafe { (*heap).partial[class].push_front(s, SlabList::Partial) };
            return Some(s);
        }
        if remote::arm(m) {
            // SAFETY: ours, on no list; our heap.
            unsafe { (*heap).full[class].push_front(s, SlabList::Full) };
        } else {
            // SAFETY: ours, on no list; blocks came back while arming.
            unsafe { (*heap).partial[class].push_front(s, SlabList::Partial) };
            return Some(s);
        }
    }
    None
}

/// Collects every slab of the heap and releases the empty ones, the
/// allocation heads included.
unsafe fn trim_heap(heap: *mut Heap) {
    // SAFETY: caller's contract.
    unsafe { process_pending(heap) };
    for class in 0..NUM_CLASSES {
        // SAFETY: caller's contract.
        let mut s = unsafe { (*heap).partial[class].head };
        while !s.is_null() {
            // SAFETY: our slab.
            let m = unsafe { &*s };
            let next = m.next.get();
            remote::collect(m);
            if m.used.get() == 0 && m.notify.get() != Notify::Queued {
                // SAFETY: our slab, on this list, empty; our heap.
                unsafe {
                    (*heap).partial[class].remove(s);
                    release(s);
                }
            }
            s = next;
        }
    }
}

/// Releases every abandoned slab whose blocks have all come back.
fn sweep_abandoned() {
    for class in 0..NUM_CLASSES {
        let mut s = ABANDONED.take_all(class);
        while !s.is_null() {
            // SAFETY: taken off the abandoned list: ours now.
            let m = unsafe { &*s };
            let next = m.next.get();
            m.next.set(ptr::null_mut());
            remote::collect(m);
            if m.used.get() == 0 {
                // SAFETY: empty, off every list.
                unsafe { slab::release_slab(s) };
            } else {
                ABANDONED.push(class, s);
            }
            s = next;
        }
    }
}

/// The purge thread's sweep: releases every abandoned slab whose blocks
/// have all come back onto its remote list. Under the lists' lock it only
/// reads each slab's `used` and the count in its remote word (no walk, no
/// write to a slab that stays); the slabs found are collected and released
/// after the lock. True when abandoned slabs (with blocks out) are left.
fn release_returned_abandoned() -> bool {
    if ABANDONED.count.load(Ordering::Relaxed) == 0 {
        return false;
    }
    for class in 0..NUM_CLASSES {
        let mut done: *mut SlabMeta = ptr::null_mut();
        let n = ABANDONED.lock.with(|| {
            // SAFETY: lock held: the lists, and the slabs on them, are the
            // lock holder's.
            let heads = unsafe { &mut *ABANDONED.heads.get() };
            let mut n = 0;
            let mut prev: *mut SlabMeta = ptr::null_mut();
            let mut s = heads[class];
            while !s.is_null() {
                // SAFETY: an abandoned slab, held by the list.
                let m = unsafe { &*s };
                let next = m.next.get();
                // Every block out is on the remote list (a freer's block
                // counts there from the CAS that gives it back; none can
                // come after the last): the slab is free.
                if remote::count(m) == m.used.get() as usize {
                    if prev.is_null() {
                        heads[class] = next;
                    } else {
                        // SAFETY: `prev` is on the list, before `s`.
                        unsafe { (*prev).next.set(next) };
                    }
                    m.next.set(done);
                    done = s;
                    n += 1;
                } else {
                    prev = s;
                }
                s = next;
            }
            n
        });
        if n == 0 {
            continue;
        }
        ABANDONED.count.fetch_sub(n, Ordering::Relaxed);
        while !done.is_null() {
            // SAFETY: taken off the abandoned list: ours now.
            let m = unsafe { &*done };
            let next = m.next.get();
            m.next.set(ptr::null_mut());
            remote::collect(m);
            debug_assert_eq!(m.used.get(), 0);
            // SAFETY: empty, off every list; abandoned slabs are disarmed,
            // so no freer holds BUSY in it.
            unsafe { slab::release_slab(done) };
            done = next;
        }
    }
    ABANDONED.count.load(Ordering::Relaxed) > 0
}

/// Abandoned slabs per class, linked through `next`.
struct AbandonedLists {
    lock: RawLock,
    heads: UnsafeCell<[*mut SlabMeta; NUM_CLASSES]>,
    count: AtomicUsize,
}

// SAFETY: `heads` is only touched with `lock` held.
unsafe impl Sync for AbandonedLists {}

static ABANDONED: AbandonedLists = AbandonedLists {
    lock: RawLock::new(),
    heads: UnsafeCell::new([ptr::null_mut(); NUM_CLASSES]),
    count: AtomicUsize::new(0),
};

impl AbandonedLists {
    fn push(&self, class: usize, s: *mut SlabMeta) {
        self.lock.with(|| {
            // SAFETY: lock held; s is held by the caller.
            unsafe {
                let heads = &mut *self.heads.get();
                (*s).next.set(heads[class]);
                (*s).list.set(SlabList::None);
                heads[class] = s;
            }
        });
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Pushes, per class, a chain `(head, tail)` linked through `next`
    /// (`n` slabs in all), with one lock round-trip.
    fn push_chains(&self, chains: &[(*mut SlabMeta, *mut SlabMeta); NUM_CLASSES], n: usize) {
        self.lock.with(|| {
            // SAFETY: lock held.
            let heads = unsafe { &mut *self.heads.get() };
            for (head, &(first, last)) in heads.iter_mut().zip(chains.iter()) {
                if !first.is_null() {
                    // SAFETY: the chain's slabs are the caller's until now.
                    unsafe { (*last).next.set(*head) };
                    *head = first;
                }
            }
        });
        self.count.fetch_add(n, Ordering::Relaxed);
        stats::slabs_abandoned(n);
    }

    fn pop(&self, class: usize) -> Option<*mut SlabMeta> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let s = self.lock.with(|| {
            // SAFETY: lock held.
            let heads = unsafe { &mut *self.heads.get() };
            let s = heads[class];
            if !s.is_null() {
                // SAFETY: list members are abandoned slabs held by the list.
                heads[class] = unsafe { (*s).next.get() };
            }
            s
        });
        if s.is_null() {
            return None;
        }
        self.count.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: ours now.
        unsafe { (*s).next.set(ptr::null_mut()) };
        Some(s)
    }

    fn take_all(&self, class: usize) -> *mut SlabMeta {
        let s = self.lock.with(|| {
            // SAFETY: lock held.
            let heads = unsafe { &mut *self.heads.get() };
            core::mem::replace(&mut heads[class], ptr::null_mut())
        });
        let mut n = 0;
        let mut p = s;
        while !p.is_null() {
            n += 1;
            // SAFETY: the taken list is ours.
            p = unsafe { (*p).next.get() };
        }
        self.count.fetch_sub(n, Ordering::Relaxed);
        s
    }
}

/// Heaps of exited threads, waiting for new threads.
struct HeapPool {
    lock: RawLock,
    head: UnsafeCell<*mut Heap>,
}

// SAFETY: `head` is only touched with `lock` held.
unsafe impl Sync for HeapPool {}

static HEAP_POOL: HeapPool = HeapPool {
    lock: RawLock::new(),
    head: UnsafeCell::new(ptr::null_mut()),
};

impl HeapPool {
    fn take(&self) -> Option<*mut Heap> {
        self.lock.with(|| {
            // SAFETY: lock held.
            let head = unsafe { &mut *self.head.get() };
            let h = *head;
            if h.is_null() {
                return None;
            }
            // SAFETY: pooled heaps are live and unused.
            *head = unsafe { (*h).pool_next };
            Some(h)
        })
    }

    fn put(&self, h: *mut Heap) {
        self.lock.with(|| {
            // SAFETY: lock held; h is an abandoned, emptied heap.
            unsafe {
                (*h).pool_next = *self.head.get();
                *self.head.get() = h;
            }
        });
    }
}

/// The child's repair of hand-offs that `fork` cut short (`remote.rs`,
/// "Fork"), without forking: a freer's state at the fork is built by hand
/// on a real heap, then the repair runs and the heap's thread goes on and
/// abandons the heap as its exit hook would (which disarms and waits out
/// every slab: a stale BUSY, or a slab announced but never queued, hangs
/// there). The abandon runs before the thread's end, not in its exit hook,
/// so that a hang is seen: `JoinHandle::is_finished` turns true before
/// pthread-key destructors run.
#[cfg(all(test, not(loom)))]
mod fork_repair {
    extern crate std;

    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use core::ptr;
    use core::sync::atomic::Ordering;

    use super::{abandon_heap, current_heap, process_pending, repair_after_fork, BoxBackend, Heap};
    use crate::remote::{self, BUSY};
    use crate::size_class::{blocks_per_slab, NUM_CLASSES};
    use crate::slab::{Notify, SlabList, SlabMeta};
    use crate::SmallBackend;

    const CLASS: usize = NUM_CLASSES - 1;

    /// Where the vanished freer was when the parent forked.
    #[derive(Clone, Copy)]
    enum Cut {
        /// NOTIFY consumed, the slab not yet on the pending stack.
        BeforeAnnounce,
        /// On the pending stack, BUSY not yet cleared.
        BeforeBusyClear,
        /// As above, and the owner has taken the slab off the stack since.
        AfterOwnerTookIt,
    }

    fn times_on_pending(h: *mut Heap, s: *mut SlabMeta) -> usize {
        let mut n = 0;
        // SAFETY: the heap is the calling thread's.
        let mut p = unsafe { &(*h).pending }.load(Ordering::Acquire);
        while !p.is_null() {
            n += usize::from(p == s);
            // SAFETY: slabs on a pending stack are live.
            p = unsafe { &*p }.pending_next.load(Ordering::Relaxed);
        }
        n
    }

    /// Runs the scenario on a thread of its own; fails if that thread does
    /// not finish (its heap abandoned) within a few seconds.
    fn run(cut: Cut) {
        let (tx, rx) = mpsc::channel();
        let t = thread::spawn(move || {
            let n = blocks_per_slab(CLASS);
            let mut blocks = [ptr::null_mut::<u8>(); 16];
            // One slab's worth and one more: the first slab is armed.
            for b in blocks.iter_mut().take(n + 1) {
                *b = BoxBackend::alloc(CLASS);
                assert!(!b.is_null());
            }
            let heap = current_heap();
            // SAFETY: blocks[0] is a block of ours, out.
            let s = unsafe { SlabMeta::of(blocks[0]) };
            {
                // SAFETY: our own slab.
                let m = unsafe { &*s };
                assert_eq!(
                    (m.list.get(), m.notify.get()),
                    (SlabList::Full, Notify::Armed)
                );
            }
            // The freer that `fork` leaves behind frees blocks[0].
            // SAFETY: blocks[0] is given up (to the vanished freer).
            let consumed = unsafe { remote::push_chain(s, blocks[0].cast(), blocks[0].cast(), 1) };
            assert!(consumed, "the armed slab's NOTIFY was consumed");
            // SAFETY: the heap is ours.
            let pending = unsafe { &(*heap).pending };
            match cut {
                Cut::BeforeAnnounce => {}
                Cut::BeforeBusyClear => remote::push_pending(pending, s),
                Cut::AfterOwnerTookIt => {
                    remote::push_pending(pending, s);
                    // SAFETY: our own heap.
                    unsafe { process_pending(heap) };
                }
            }
            // The child's post-fork handler.
            // SAFETY: our heap; no other thread touches it.
            unsafe { repair_after_fork(heap) };
            // SAFETY: our own slab.
            let m = unsafe { &*s };
            assert_eq!(m.remote.load(Ordering::Relaxed) & BUSY, 0, "BUSY left set");
            let queued = times_on_pending(heap, s);
            match cut {
                Cut::AfterOwnerTookIt => assert_eq!(queued, 0, "queued again"),
                _ => assert_eq!(queued, 1, "the slab must be queued exactly once"),
            }
            // The thread goes on: everything back, a few slabs' worth of
            // allocation through the slab, then exit.
            for &b in &blocks[1..=n] {
                // SAFETY: our blocks, out, freed once.
                unsafe { BoxBackend::free(b) };
            }
            for _ in 0..4 {
                for b in blocks.iter_mut().take(n) {
                    *b = BoxBackend::alloc(CLASS);
                    assert!(!b.is_null());
                }
                for &b in &blocks[..n] {
                    // SAFETY: as above.
                    unsafe { BoxBackend::free(b) };
                }
            }
            tx.send(()).expect("send");
            // What the exit hook does; then the hook only merges counters.
            abandon_heap(heap);
            crate::thread_exit::register_counters_only();
            tx.send(()).expect("send");
        });
        let wait = |what: &str| match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(()) => {}
            // The scenario's asserts fail with a disconnect, at once.
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the scenario failed {what}"),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the thread hung {what}"),
        };
        wait("before giving up its heap");
        wait("abandoning its heap");
        t.join().expect("the scenario's asserts");
    }

    #[test]
    // Under Miri: takes slabs from the superslab, whose `mmap` flags
    // (MAP_NORESERVE) Miri does not support.
    #[cfg_attr(miri, ignore)]
    fn a_freer_cut_off_before_announcing_is_announced_by_the_child() {
        run(Cut::BeforeAnnounce);
    }

    #[test]
    // Under Miri: takes slabs from the superslab, whose `mmap` flags
    // (MAP_NORESERVE) Miri does not support.
    #[cfg_attr(miri, ignore)]
    fn a_freer_cut_off_before_clearing_busy_has_busy_cleared_by_the_child() {
        run(Cut::BeforeBusyClear);
    }

    #[test]
    // Under Miri: takes slabs from the superslab, whose `mmap` flags
    // (MAP_NORESERVE) Miri does not support.
    #[cfg_attr(miri, ignore)]
    fn a_slab_the_owner_already_took_is_not_queued_again() {
        run(Cut::AfterOwnerTookIt);
    }
}
