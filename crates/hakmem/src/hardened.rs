//! What only hardened builds (`secure`) do at the facade, where the size a
//! program asked for is known:
//!
//! - **slack canaries**: every small block keeps its last [`TAIL`] bytes
//!   for a canary word that records the requested size, keyed by the
//!   block's address and its region's canary secret; the bytes between the
//!   requested size and the canary are filled with [`SLACK_BYTE`]. A free
//!   (and `usable_size`, and so `realloc`) checks both: a write past the
//!   requested size, by one byte or many, stops the process when the
//!   block is freed, as hardened_malloc's canaries do;
//! - **quarantine**: a freed small block is poisoned ([`POISON`] in every
//!   byte but its second word, which holds the free mark) and waits in a per-thread ring of [`QUARANTINE_SLOTS`] blocks
//!   before it really goes back. A read of a freed block sees poison, not
//!   the old data; the next allocation of its size does not get it back;
//!   a second free while it waits carries the free mark and is refused;
//!   and the poison is checked when the block leaves the ring, so a write
//!   after free is reported then.
//!
//! The ring is emptied at thread exit (a thread-exit key of its own) and
//! by `trim`, and checked at process exit. Nothing here allocates.

extern crate std;

use core::cell::UnsafeCell;
use core::ptr;

use hakmem_superslab::thread_key::ThreadExitKey;
use hakmem_tiny_box::class_size;
use hakmem_tiny_box::hardening::corruption;

/// Bytes at the end of every small block that hold its canary word.
pub(crate) const TAIL: usize = 8;
/// What the bytes between the requested size and the canary hold.
const SLACK_BYTE: u8 = 0xce;
/// What a freed block holds while it waits in the quarantine.
const POISON: u8 = 0xdf;
/// The free mark's word, which poison leaves alone.
const MARK_WORD: core::ops::Range<usize> = 8..16;
/// Blocks a thread's quarantine holds.
pub(crate) const QUARANTINE_SLOTS: usize = 64;

#[inline(always)]
fn tail_key(p: usize) -> usize {
    // SAFETY: p is a small block, inside a live region.
    let secret = unsafe { hakmem_superslab::region_canary_secret(p) };
    secret ^ p.rotate_left(13)
}

/// Sets up the slack canary of the small block at `p` (`block` bytes) just
/// handed out for `size` bytes (`size + TAIL <= block`).
///
/// # Safety
/// `p` is a small block of `block` bytes owned by the caller.
#[inline]
pub(crate) unsafe fn arm(p: *mut u8, block: usize, size: usize) {
    let usable = block - TAIL;
    debug_assert!(size <= usable);
    // SAFETY: [size, block) lies inside the block; the tail is 8-aligned
    // (every class is a multiple of 16).
    unsafe {
        ptr::write_bytes(p.add(size), SLACK_BYTE, usable - size);
        p.add(usable)
            .cast::<usize>()
            .write(tail_key(p as usize) ^ size);
    }
}

/// The size the small block at `p` (`block` bytes, live) was asked for;
/// stops the process when its canary or slack was overwritten.
///
/// # Safety
/// `p` is a live small block of `block` bytes.
#[inline]
pub(crate) unsafe fn requested(p: *const u8, block: usize) -> usize {
    let usable = block - TAIL;
    // SAFETY: the tail word lies inside the block, 8-aligned.
    let size = unsafe { p.add(usable).cast::<usize>().read() } ^ tail_key(p as usize);
    // SAFETY: checked to lie inside the block before the slice is made.
    if size > usable || !all_bytes(unsafe { p.add(size) }, usable - size, SLACK_BYTE) {
        overflowed(p);
    }
    size
}

#[cold]
#[inline(never)]
fn overflowed(p: *const u8) -> ! {
    corruption(
        "heap overflow: the canary past a block's requested size was overwritten (block):",
        p as usize,
        0,
    )
}

/// True when the `len` bytes at `p` all equal `byte`.
fn all_bytes(p: *const u8, len: usize, byte: u8) -> bool {
    // SAFETY: the callers pass ranges inside blocks they hold.
    let bytes = unsafe { core::slice::from_raw_parts(p, len) };
    bytes.iter().all(|&b| b == byte)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Fresh,
    Active,
    Exited,
}

struct Quarantine {
    /// (block, class); null blocks are empty slots.
    slots: [(*mut u8, usize); QUARANTINE_SLOTS],
    next: usize,
    phase: Phase,
}

std::thread_local! {
    static RING: UnsafeCell<Quarantine> = const {
        UnsafeCell::new(Quarantine {
            slots: [(ptr::null_mut(), 0); QUARANTINE_SLOTS],
            next: 0,
            phase: Phase::Fresh,
        })
    };
}

static KEY: ThreadExitKey = ThreadExitKey::new(on_thread_exit);

fn with_ring<R>(f: impl FnOnce(&mut Quarantine) -> R) -> R {
    let ring = RING.with(|r| r.get());
    // SAFETY: this thread's own ring; no reference outlives `f`, which
    // does not re-enter (it frees nothing).
    f(unsafe { &mut *ring })
}

/// Puts the small block at `p` (class `class`, already marked free) into
/// the calling thread's quarantine, poisoned. Returns the block that leaves
/// the ring for it, its poison checked, for the caller to really free; or
/// `p` itself when the thread has no quarantine (it is exiting).
///
/// # Safety
/// `p` is a small block of class `class`, marked free, given up.
pub(crate) unsafe fn enter(p: *mut u8, class: usize) -> Option<(*mut u8, usize)> {
    let block = class_size(class);
    // SAFETY: the block is ours and `block` (at least 16) bytes long.
    unsafe {
        ptr::write_bytes(p, POISON, MARK_WORD.start);
        ptr::write_bytes(p.add(MARK_WORD.end), POISON, block - MARK_WORD.end);
    }
    let phase = with_ring(|r| r.phase);
    if phase == Phase::Exited {
        // SAFETY: as above: poisoned, and going back at once.
        return Some(unsafe { leave(p, class) });
    }
    if phase == Phase::Fresh {
        start();
    }
    let out = with_ring(|r| {
        let i = r.next;
        r.next = (i + 1) % QUARANTINE_SLOTS;
        core::mem::replace(&mut r.slots[i], (p, class))
    });
    // SAFETY: a block that entered the ring, marked free and poisoned.
    (!out.0.is_null()).then(|| unsafe { leave(out.0, out.1) })
}

/// Checks the poison of a block leaving the quarantine.
///
/// # Safety
/// `p` is a small block of `class` that entered the quarantine.
unsafe fn leave(p: *mut u8, class: usize) -> (*mut u8, usize) {
    let block = class_size(class);
    // SAFETY: inside the block.
    let after_mark = unsafe { p.add(MARK_WORD.end) };
    if !all_bytes(p, MARK_WORD.start, POISON)
        || !all_bytes(after_mark, block - MARK_WORD.end, POISON)
    {
        corruption(
            "write after free: a freed block was written to (block):",
            p as usize,
            0,
        );
    }
    (p, class)
}

#[cold]
fn start() {
    let _ = KEY.get();
    // SAFETY: the destructor ignores its value; non-null makes it run.
    unsafe { KEY.arm(core::ptr::dangling_mut::<libc::c_void>()) };
    with_ring(|r| r.phase = Phase::Active);
}

/// Takes every block out of the calling thread's quarantine, checked, and
/// hands each to `free` (the facade's real free).
pub(crate) fn drain(mut free: impl FnMut(*mut u8, usize)) {
    for i in 0..QUARANTINE_SLOTS {
        let (p, class) = with_ring(|r| core::mem::replace(&mut r.slots[i], (ptr::null_mut(), 0)));
        if !p.is_null() {
            // SAFETY: a block that entered the ring.
            let (p, class) = unsafe { leave(p, class) };
            free(p, class);
        }
    }
}

/// Checks the poison of every block in the calling thread's quarantine,
/// leaving them there (at process exit, when no thread exit will).
pub(crate) fn check_quarantine() {
    for i in 0..QUARANTINE_SLOTS {
        let (p, class) = with_ring(|r| r.slots[i]);
        if !p.is_null() {
            // SAFETY: a block that entered the ring.
            unsafe { leave(p, class) };
        }
    }
}

/// Creates the key early (from the facade's `init`), so that at thread
/// exit the quarantine empties into the fast cache before the cache is
/// flushed.
pub(crate) fn init() {
    let _ = KEY.get();
}

extern "C" fn on_thread_exit(_: *mut libc::c_void) {
    with_ring(|r| r.phase = Phase::Exited);
    // SAFETY: each block is a quarantined small block of its class.
    drain(|p, class| unsafe { crate::release_small(p, class) });
}
