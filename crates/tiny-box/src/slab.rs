//! Per-slab metadata of this layer, kept in the superslab's out-of-band
//! slab record, and the operations both backends share.
//!
//! Which thread may touch the plain (non-atomic) fields depends on the
//! backend: in the box backend the slab's owner heap (or whoever took it off
//! the abandoned list); in the legacy backend whoever holds the class lock.
//! The atomic fields (`owner`, `remote`, `pending_next`) are the only ones
//! other threads touch.
//!
//! ## No `&mut SlabMeta`
//! Other threads CAS a slab's atomics while its holder works on the plain
//! fields, so no `&mut SlabMeta` may exist while the slab is live: a `&mut`
//! claims the whole struct, the atomics included, and another thread's
//! access to any of it while that `&mut` lives is undefined behaviour
//! (whatever the compiler makes of it today). So everyone shares
//! `&SlabMeta`, and the fields the holder changes are [`Cell`]s (the same
//! layout as the bare field, plain loads and stores): only the holder
//! touches them, and each hand-off of the slab from one holder to the next
//! (the owner's `Release` store, the abandoned list's lock, the class lock)
//! orders its accesses before the next holder's. The fields set up by
//! [`new_slab`] before the slab is handed out (`capacity`, `class`, the
//! `fresh_*` order) stay plain: nobody writes them while anyone can reach
//! the slab.

use crate::sync::{AtomicPtr, AtomicUsize};
use core::cell::Cell;
use core::ptr;

use hakmem_superslab::{self as superslab, OutOfMemory, SlabRef};

use crate::block::{Block, Chain};
use crate::size_class::{blocks_per_slab, class_size};

/// Which list of its owner a slab is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SlabList {
    /// On no list (being set up, or abandoned and held by the abandoned list).
    None = 0,
    /// Has (or may have) free blocks: the allocation list.
    Partial = 1,
    /// Every block is out.
    Full = 2,
}

/// What the owner knows of the slab's notification state (box backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Notify {
    /// The remote word carries no NOTIFY bit.
    Idle = 0,
    /// The owner set NOTIFY and has not seen it consumed.
    Armed = 1,
    /// A remote free consumed NOTIFY: the slab is (or is about to be) on
    /// the owner heap's pending stack.
    Queued = 2,
}

/// This layer's record of one slab. Shared as `&SlabMeta`, never borrowed
/// `&mut` while it is live (see the module docs): the holder's fields are
/// `Cell`s.
///
/// Field order: what a free without a size reads (`owner`, the block size
/// and its reciprocal, `capacity`, `class`) comes first, so that it shares
/// the record's first cache line with the superslab's state byte (the
/// record is 128 bytes, two lines; this area starts 16 bytes in). With
/// them in the second line a free took two metadata misses (c-random:
/// 40% of `free`'s samples on those two loads). `remote`, which other
/// threads write, stays off that line.
#[repr(C)]
pub(crate) struct SlabMeta {
    /// The owning heap (box backend), null when abandoned. Written by the
    /// owner or adopter; read by any thread to decide local vs remote free.
    pub(crate) owner: AtomicPtr<u8>,
    /// The class's block size and its reciprocal (`size_class::reciprocal`),
    /// kept beside `class` so that `free` without a size tests a block
    /// start from this one record, with no table of the class.
    pub(crate) block_size: u32,
    pub(crate) block_reciprocal: u32,
    /// Blocks in the slab.
    pub(crate) capacity: u32,
    pub(crate) class: u8,
    pub(crate) list: Cell<SlabList>,
    pub(crate) notify: Cell<Notify>,
    /// Local free list (owner only).
    pub(crate) free: Cell<*mut Block>,
    /// Links in the owner's list (owner only).
    pub(crate) next: Cell<*mut SlabMeta>,
    pub(crate) prev: Cell<*mut SlabMeta>,
    /// Remote free list head plus flag bits (box backend): see `remote.rs`.
    pub(crate) remote: AtomicUsize,
    /// Link in the owner heap's pending stack (box backend).
    pub(crate) pending_next: AtomicPtr<SlabMeta>,
    /// Blocks never handed out yet: the next one is `fresh_next`.
    pub(crate) fresh_next: Cell<u32>,
    /// Blocks out of the slab: in use, in a cache, or on the remote list.
    pub(crate) used: Cell<u32>,
    /// Hardened builds hand fresh blocks out window by window (windows of
    /// `fresh_window` consecutive blocks, about `ORDER_WINDOW_BYTES`),
    /// and within a window of `len` blocks in the order
    /// `(fresh_start + j * stride) % len`, with a stride coprime to `len`:
    /// `fresh_stride` for whole windows, `fresh_stride_last` for a shorter
    /// last one. A permutation chosen at random per slab, that touches the
    /// slab's pages one window at a time (see `window_order`).
    pub(crate) fresh_start: u16,
    pub(crate) fresh_stride: u16,
    pub(crate) fresh_window: u16,
    pub(crate) fresh_stride_last: u16,
    /// Hardened builds start a fresh slab `fresh_color` blocks in (and
    /// wrap around): a random offset per slab, so that the first blocks of
    /// every slab neither sit at a known place nor all fall into the same
    /// sets of the cache, as 64 KiB-aligned slab fronts would.
    pub(crate) fresh_color: u16,
}

// The record's client area starts 16 bytes into its 128 (superslab's
// `SlabRecord`): what a free reads lies in the first 48 bytes of it, the
// remote word past them.
const _: () = {
    assert!(core::mem::offset_of!(SlabMeta, class) < 48);
    assert!(core::mem::offset_of!(SlabMeta, block_reciprocal) + 4 <= 48);
    assert!(core::mem::offset_of!(SlabMeta, remote) >= 48);
};

/// Bytes of a slab whose fresh blocks hardened builds shuffle among
/// themselves before moving on to the next ones. Shuffling the whole slab
/// made every fresh slab touch all its 16 pages at once: on Larson the
/// hardened build's peak RSS was twice the default build's (10.4 against
/// 5.1 MiB). mimalloc's secure mode likewise shuffles each extension of a
/// page's free list, a few KiB at a time.
#[cfg(feature = "secure")]
pub(crate) const ORDER_WINDOW_BYTES: usize = 8192;

/// Blocks in one shuffling window of a slab of `class`: about
/// [`ORDER_WINDOW_BYTES`] worth, at least 4 (and never more than the slab).
#[cfg(feature = "secure")]
pub(crate) fn order_window(class: usize) -> u32 {
    let capacity = blocks_per_slab(class) as u32;
    ((ORDER_WINDOW_BYTES / class_size(class)) as u32)
        .max(4)
        .min(capacity.max(1))
}

/// The position of the `i`-th fresh block: windows of `window` blocks in
/// address order, each shuffled by `(start + j * stride) % len`. A
/// permutation of `0..capacity` when `stride` is coprime to `window` and
/// `stride_last` to the length of a shorter last window.
#[cfg(feature = "secure")]
pub(crate) fn window_order(
    i: u32,
    capacity: u32,
    window: u32,
    start: u32,
    stride: u32,
    stride_last: u32,
) -> u32 {
    let base = i - i % window;
    let len = (capacity - base).min(window);
    let stride = if len == window { stride } else { stride_last };
    base + (start % len + (i - base) * stride) % len
}

impl SlabMeta {
    /// The metadata of the slab holding `p`.
    ///
    /// # Safety
    /// `p` is inside a slab this layer holds.
    #[inline(always)]
    pub(crate) unsafe fn of(p: *const u8) -> *mut SlabMeta {
        // SAFETY: caller's contract.
        unsafe { SlabRef::containing(p) }.client::<SlabMeta>()
    }

    #[inline(always)]
    pub(crate) fn slab(&self) -> SlabRef {
        // SAFETY: every SlabMeta lives in a slab record's client area.
        unsafe { SlabRef::from_client(self as *const SlabMeta as *mut SlabMeta) }
    }

    #[inline(always)]
    pub(crate) fn class(&self) -> usize {
        usize::from(self.class)
    }

    /// True when a block can be taken without looking at remote frees.
    #[inline(always)]
    pub(crate) fn has_local(&self) -> bool {
        !self.free.get().is_null() || self.fresh_next.get() < self.capacity
    }

    /// Takes one block from the local free list or the fresh area. Holder
    /// only.
    #[inline(always)]
    pub(crate) fn take_one(&self) -> *mut Block {
        let b = self.free.get();
        if !b.is_null() {
            // SAFETY: b heads the owner's local free list.
            self.free.set(unsafe { Block::next_in_slab(b) });
            self.used.set(self.used.get() + 1);
            return b;
        }
        let fresh = self.fresh_next.get();
        if fresh < self.capacity {
            let b = self.fresh_block(fresh);
            self.fresh_next.set(fresh + 1);
            self.used.set(self.used.get() + 1);
            return b;
        }
        ptr::null_mut()
    }

    fn fresh_block(&self, index: u32) -> *mut Block {
        #[cfg(feature = "secure")]
        let index = window_order(
            index,
            self.capacity,
            u32::from(self.fresh_window),
            u32::from(self.fresh_start),
            u32::from(self.fresh_stride),
            u32::from(self.fresh_stride_last),
        );
        #[cfg(feature = "secure")]
        let index = match index + u32::from(self.fresh_color) {
            past_end if past_end >= self.capacity => past_end - self.capacity,
            rotated => rotated,
        };
        let offset = index as usize * class_size(self.class());
        // SAFETY: index < capacity, so the block lies inside the slab.
        unsafe { self.slab().base().add(offset) }.cast()
    }

    /// Moves up to `max - out.len` blocks into `out`; returns how many.
    /// Holder only. [`Self::take_into_whole`] with no allowance.
    pub(crate) fn take_into(&self, out: &mut Chain, max: usize) -> usize {
        self.take_into_whole(out, max, max)
    }

    /// Moves up to `max - out.len` blocks into `out`, or the whole local
    /// free list when `out` is empty and the list has at most `whole`
    /// blocks (`whole >= max`); returns how many. Holder only.
    ///
    /// The local free list goes first, and whole when it fits into an empty
    /// `out`: then it is not walked at all. Its blocks often came back from
    /// other threads, so each link is a cache miss; left unwalked, the miss
    /// is taken when the block is handed out, where it overlaps with the
    /// caller's own work. Otherwise the part taken is cut off with one walk
    /// that reads links but writes only the last.
    pub(crate) fn take_into_whole(&self, out: &mut Chain, max: usize, whole: usize) -> usize {
        let mut n = 0;
        // Read once: the link stores below may alias the Cells as far as the
        // compiler knows, and a reload of `used` would cost a load.
        let used = self.used.get();
        let local = (self.fresh_next.get() - used) as usize;
        let room = max.saturating_sub(out.len);
        if local > 0 && room > 0 {
            let head = self.free.get();
            if out.is_empty() && local <= room.max(whole) {
                self.free.set(ptr::null_mut());
                n = local;
            } else {
                n = local.min(room);
                let mut last = head;
                for _ in 1..n {
                    // SAFETY: the local list holds `local` >= n blocks.
                    last = unsafe { Block::next_in_slab(last) };
                }
                // SAFETY: `last` is on the local list.
                self.free.set(unsafe { Block::next_in_slab(last) });
                // SAFETY: the first n blocks are cut off the list: ours.
                unsafe { Block::set_next(last, out.head) };
            }
            out.head = head;
            out.len += n;
            self.used.set(used + n as u32);
        }
        if out.len < max {
            n += self.carve_fresh(out, max - out.len);
        }
        n
    }

    /// Moves up to `want` blocks of the slab's never-used part into `out`;
    /// returns how many. Holder only; the local free list is empty.
    ///
    /// The blocks are consecutive, so they are linked in one pass of plain
    /// stores, lowest address first, and handed out in address order: a
    /// thread building a collection then writes memory front to back (the
    /// prefetcher's case). Taken one at a time through `take_one` the
    /// carve cost 11 instructions a block, the offset multiplied and the
    /// slab's counters stored anew for each.
    #[cfg(not(feature = "secure"))]
    fn carve_fresh(&self, out: &mut Chain, want: usize) -> usize {
        let fresh = self.fresh_next.get();
        let n = (self.capacity - fresh).min(want as u32);
        if n == 0 {
            return 0;
        }
        let size = class_size(self.class());
        let first = self.fresh_block(fresh);
        let mut b = first;
        for _ in 1..n {
            // SAFETY: blocks `fresh..fresh + n` lie inside the slab
            // (`fresh + n <= capacity`), unused: ours to link.
            unsafe {
                let next = b.byte_add(size);
                Block::set_next(b, next);
                b = next;
            }
        }
        // SAFETY: `b` is the last of them.
        unsafe { Block::set_next(b, out.head) };
        out.head = first;
        out.len += n as usize;
        self.fresh_next.set(fresh + n);
        self.used.set(self.used.get() + n);
        n as usize
    }

    /// Hardened builds hand fresh blocks out in a shuffled order
    /// (`fresh_block`'s window and colour), so they are taken one by one.
    #[cfg(feature = "secure")]
    fn carve_fresh(&self, out: &mut Chain, want: usize) -> usize {
        let mut n = 0;
        while n < want {
            let b = self.take_one();
            if b.is_null() {
                break;
            }
            // SAFETY: b was just taken from this slab and belongs to no list.
            unsafe { out.push(b) };
            n += 1;
        }
        n
    }

    /// Returns a block to the local free list. Holder only.
    ///
    /// # Safety
    /// `b` is a block of this slab that is out of it (counted in `used`).
    #[inline(always)]
    pub(crate) unsafe fn put_local(&self, b: *mut Block) {
        // SAFETY: caller's contract.
        unsafe { Block::set_next(b, self.free.get()) };
        self.free.set(b);
        self.used.set(self.used.get() - 1);
    }

    /// Appends a chain of `n` blocks of this slab to the local free list.
    /// Holder only.
    ///
    /// # Safety
    /// The chain's blocks belong to this slab and are counted in `used`.
    pub(crate) unsafe fn put_chain(&self, head: *mut Block, tail: *mut Block, n: usize) {
        // SAFETY: caller's contract.
        unsafe { Block::set_next(tail, self.free.get()) };
        self.free.set(head);
        self.used.set(self.used.get() - n as u32);
    }
}

/// The record of a slab of `capacity` blocks of `class` owned by `owner`
/// (null: abandoned), before any block is handed out.
pub(crate) fn empty_meta(owner: *mut u8, class: usize, capacity: u32) -> SlabMeta {
    SlabMeta {
        free: Cell::new(ptr::null_mut()),
        next: Cell::new(ptr::null_mut()),
        prev: Cell::new(ptr::null_mut()),
        owner: AtomicPtr::new(owner),
        remote: AtomicUsize::new(0),
        pending_next: AtomicPtr::new(ptr::null_mut()),
        fresh_next: Cell::new(0),
        capacity,
        used: Cell::new(0),
        class: class as u8,
        list: Cell::new(SlabList::None),
        notify: Cell::new(Notify::Idle),
        fresh_start: 0,
        fresh_stride: 1,
        fresh_window: 1,
        fresh_stride_last: 1,
        fresh_color: 0,
        block_size: class_size(class) as u32,
        block_reciprocal: crate::size_class::reciprocal(class),
    }
}

/// Takes a fresh slab from the superslab and sets it up for `class`.
pub(crate) fn new_slab(class: usize, owner: *mut u8) -> Result<*mut SlabMeta, OutOfMemory> {
    let grant = superslab::alloc_slab()?;
    let meta = grant.slab.client::<SlabMeta>();
    // SAFETY: the slab was just handed to us; its client area is ours to
    // initialise and nobody else can reach it yet.
    unsafe { meta.write(empty_meta(owner, class, blocks_per_slab(class) as u32)) };
    #[cfg(feature = "secure")]
    {
        // SAFETY: just initialised and not yet handed out: no other thread
        // can reach it, so this `&mut` is the only access to any of it.
        let m = unsafe { &mut *meta };
        let (r, r2) = (superslab::os::random_word(), superslab::os::random_word());
        let window = order_window(class);
        let (start, stride) = random_order(window, r);
        let last = m.capacity % window;
        m.fresh_start = start;
        m.fresh_stride = stride;
        m.fresh_window = window as u16;
        m.fresh_stride_last = match last {
            0 => 1,
            _ => random_order(last, r.rotate_left(21)).1,
        };
        m.fresh_color = (r2 % m.capacity as usize) as u16;
    }
    crate::stats::slab_taken(class);
    Ok(meta)
}

/// A start and a stride coprime to `capacity`, drawn from the random word
/// `r`: together a permutation of `capacity` blocks.
#[cfg(feature = "secure")]
fn random_order(capacity: u32, r: usize) -> (u16, u16) {
    fn gcd(mut a: u32, mut b: u32) -> u32 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    let start = (r as u32) % capacity;
    // A stride near 0 or near `capacity` walks the slab almost in address
    // order (forwards or backwards), so neighbours stay predictable: pick
    // one from the middle half. (Capacities are at least 4.)
    let mut stride = (capacity / 4 + (r >> 32) as u32 % (capacity / 2).max(1)).max(1);
    while gcd(stride, capacity) != 1 {
        stride = stride % (capacity - 1) + 1;
    }
    (start as u16, stride as u16)
}

/// Gives an empty slab back to the superslab.
///
/// # Safety
/// The caller holds the slab exclusively, `used == 0`, it is on no list and
/// no other thread can still reach it (no pending-stack entry).
pub(crate) unsafe fn release_slab(meta: *mut SlabMeta) {
    // SAFETY: caller's contract.
    let m = unsafe { &*meta };
    debug_assert_eq!(m.used.get(), 0);
    debug_assert_eq!(m.list.get(), SlabList::None);
    crate::stats::slab_released(m.class());
    // Out of the calling thread's table of its own slabs before the slab
    // can be unmapped or set up again (see `own_slab`).
    crate::own_slab::leaving(m.slab().base());
    // SAFETY: the slab came from alloc_slab and holds no live block.
    unsafe { superslab::free_run(m.slab()) };
}

/// An intrusive doubly linked list of slabs (owner only).
pub(crate) struct SlabQueue {
    pub(crate) head: *mut SlabMeta,
}

impl SlabQueue {
    pub(crate) const fn new() -> Self {
        Self {
            head: ptr::null_mut(),
        }
    }

    /// # Safety
    /// `s` is held by the caller and on no list.
    pub(crate) unsafe fn push_front(&mut self, s: *mut SlabMeta, list: SlabList) {
        // SAFETY: caller's contract.
        let m = unsafe { &*s };
        m.prev.set(ptr::null_mut());
        m.next.set(self.head);
        if !self.head.is_null() {
            // SAFETY: list members are held slabs.
            unsafe { (*self.head).prev.set(s) };
        }
        self.head = s;
        m.list.set(list);
    }

    /// # Safety
    /// `s` is on this list.
    pub(crate) unsafe fn remove(&mut self, s: *mut SlabMeta) {
        // SAFETY: caller's contract.
        let m = unsafe { &*s };
        let (prev, next) = (m.prev.get(), m.next.get());
        if prev.is_null() {
            self.head = next;
        } else {
            // SAFETY: list members are held slabs.
            unsafe { (*prev).next.set(next) };
        }
        if !next.is_null() {
            // SAFETY: list members are held slabs.
            unsafe { (*next).prev.set(prev) };
        }
        m.next.set(ptr::null_mut());
        m.prev.set(ptr::null_mut());
        m.list.set(SlabList::None);
    }
}

#[cfg(all(test, feature = "secure"))]
mod tests {
    use super::{order_window, random_order, window_order};
    use crate::size_class::{blocks_per_slab, NUM_CLASSES};

    #[test]
    fn window_orders_are_permutations_that_stay_in_their_window() {
        for class in 0..NUM_CLASSES {
            let capacity = blocks_per_slab(class) as u32;
            let window = order_window(class);
            for _ in 0..50 {
                let r = hakmem_superslab::os::random_word();
                let (start, stride) = random_order(window, r);
                let last = capacity % window;
                let stride_last = match last {
                    0 => 1,
                    _ => random_order(last, r.rotate_left(21)).1,
                };
                let mut seen = std::vec![false; capacity as usize];
                for i in 0..capacity {
                    let at = window_order(
                        i,
                        capacity,
                        window,
                        u32::from(start),
                        u32::from(stride),
                        u32::from(stride_last),
                    );
                    assert_eq!(at / window, i / window, "class {class}: left its window");
                    assert!(!seen[at as usize], "class {class}: {at} twice");
                    seen[at as usize] = true;
                }
            }
        }
    }

    #[test]
    fn random_orders_are_permutations_that_do_not_walk_in_address_order() {
        for capacity in [4u32, 5, 7, 16, 341, 1024, 4096] {
            for _ in 0..500 {
                let r = hakmem_superslab::os::random_word();
                let (start, stride) = random_order(capacity, r);
                let (start, stride) = (u32::from(start), u32::from(stride));
                let mut seen = std::vec![false; capacity as usize];
                for i in 0..capacity {
                    seen[((start + i * stride) % capacity) as usize] = true;
                }
                assert!(
                    seen.iter().all(|&s| s),
                    "{capacity}: {start} + i * {stride}"
                );
                if capacity >= 16 {
                    assert!(
                        stride >= capacity / 8 && stride <= capacity - capacity / 8,
                        "{capacity}: stride {stride} walks nearly in address order"
                    );
                }
            }
        }
    }
}
