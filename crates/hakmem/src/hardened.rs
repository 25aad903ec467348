//! What only hardened builds (`secure`) do at the facade, where the size a
//! program asked for is known:
//!
//! - **slack canaries**: every small block keeps its last [`TAIL`] bytes
//!   for a word that records the requested size, keyed by the block's
//!   address and its region's canary secret, and the 8 bytes right after
//!   the requested size (as far as they lie before that word) hold
//!   [`SLACK_BYTE`]s. A free (and `usable_size`, and so `realloc`) checks
//!   both: a write past the requested size, by one byte or many, changes
//!   one or the other and stops the process when the block is freed.
//!   (Filling and checking the whole slack instead cost a loop and a
//!   `memset` an operation: 0.29x the default build on Larson.)
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
#[inline(always)]
pub(crate) unsafe fn arm(p: *mut u8, block: usize, size: usize) {
    let usable = block - TAIL;
    debug_assert!(size <= usable);
    // The canary goes first: where it overlaps the tail word, the tail
    // word wins. (The tail is 8-aligned: every class is a multiple of 16.)
    // SAFETY: [size, size + 8) and the tail word lie inside the block.
    unsafe {
        p.add(size)
            .cast::<u64>()
            .write_unaligned(u64::from_ne_bytes([SLACK_BYTE; 8]));
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
#[inline(always)]
pub(crate) unsafe fn requested(p: *const u8, block: usize) -> usize {
    let usable = block - TAIL;
    // SAFETY: the tail word lies inside the block, 8-aligned.
    let size = unsafe { p.add(usable).cast::<usize>().read() } ^ tail_key(p as usize);
    if size > usable {
        overflowed(p);
    }
    // SAFETY: [size, size + 8) lies inside the block (size <= usable).
    let canary = u64::from_le(unsafe { p.add(size).cast::<u64>().read_unaligned() });
    // Only the canary's bytes before the tail word (little-endian: the
    // low ones) are its own.
    let own = match usable - size {
        slack if slack >= 8 => u64::MAX,
        slack => (1u64 << (8 * slack)) - 1,
    };
    if (canary ^ u64::from_ne_bytes([SLACK_BYTE; 8])) & own != 0 {
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

/// True when the `words` 8-byte words at `p` (8-aligned) all hold `byte`
/// in every byte. No early exit, so the loop vectorises: a byte-at-a-time
/// check of the poison made hardened Larson 0.13x the default build.
fn all_words(p: *const u8, words: usize, byte: u8) -> bool {
    let pattern = u64::from_ne_bytes([byte; 8]);
    // SAFETY: the callers pass 8-aligned ranges inside blocks they hold.
    let w = unsafe { core::slice::from_raw_parts(p.cast::<u64>(), words) };
    w.iter().fold(0, |acc, &x| acc | (x ^ pattern)) == 0
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
    /// The most bytes of a block poisoned (`HAKMEM_SECURE_POISON`), read
    /// when the thread starts.
    poison_limit: usize,
}

std::thread_local! {
    static RING: UnsafeCell<Quarantine> = const {
        UnsafeCell::new(Quarantine {
            slots: [(ptr::null_mut(), 0); QUARANTINE_SLOTS],
            next: 0,
            phase: Phase::Fresh,
            poison_limit: 0,
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
    // One access to the thread-local a free (in libhakmem.so each is a
    // `__tls_get_addr` call): poisoning and checking touch blocks only.
    with_ring(|r| {
        match r.phase {
            Phase::Active => {}
            // Going back at once: nothing to poison or check.
            Phase::Exited => return Some((p, class)),
            Phase::Fresh => start(r),
        }
        // SAFETY: the block is ours, 16-aligned and at least this many (a
        // multiple of 16) bytes long.
        unsafe { poison(p, poisoned_span(class, r.poison_limit)) };
        let i = r.next;
        r.next = (i + 1) % QUARANTINE_SLOTS;
        let (out, out_class) = core::mem::replace(&mut r.slots[i], (p, class));
        // SAFETY: a block that entered the ring, marked free and poisoned.
        (!out.is_null()).then(|| unsafe { leave(out, out_class, r.poison_limit) })
    })
}

/// Bytes of a block of `class` that the quarantine poisons and checks,
/// with the thread's `poison_limit`.
#[inline(always)]
fn poisoned_span(class: usize, limit: usize) -> usize {
    class_size(class).min(limit)
}

/// Fills the first `block` bytes at `p` but the free-mark word with
/// [`POISON`], a word at a time (plain stores, no `memset` call).
///
/// # Safety
/// `p` is an 8-aligned block of at least `block` bytes (a multiple of 8)
/// owned by the caller.
#[inline(always)]
unsafe fn poison(p: *mut u8, block: usize) {
    if block == 0 {
        return;
    }
    let pattern = u64::from_ne_bytes([POISON; 8]);
    // SAFETY: the first word lies inside the block (caller's contract).
    unsafe { p.cast::<u64>().write_volatile(pattern) };
    // 16 bytes a store from the third word on (blocks are 16-aligned and
    // a multiple of 16 long). Volatile, so the loop stays a loop of plain
    // stores rather than a call of `memset`.
    let chunks = p.cast::<[u64; 2]>();
    for i in 1..block / 16 {
        // SAFETY: chunk i lies inside the block (caller's contract).
        unsafe { chunks.add(i).write_volatile([pattern; 2]) };
    }
}

/// Checks the poison of a block leaving the quarantine (poisoned under
/// `limit`).
///
/// # Safety
/// `p` is a small block of `class` that entered the quarantine.
unsafe fn leave(p: *mut u8, class: usize, limit: usize) -> (*mut u8, usize) {
    let block = poisoned_span(class, limit);
    // SAFETY: inside the block.
    let after_mark = unsafe { p.add(MARK_WORD.end) };
    if block > 0
        && (!all_words(p, MARK_WORD.start / 8, POISON)
            || !all_words(after_mark, (block - MARK_WORD.end) / 8, POISON))
    {
        corruption(
            "write after free: a freed block was written to (block):",
            p as usize,
            0,
        );
    }
    (p, class)
}

/// The thread's first quarantined free: the exit key armed, the poison
/// option read.
#[cold]
fn start(r: &mut Quarantine) {
    let _ = KEY.get();
    // SAFETY: the destructor ignores its value; non-null makes it run.
    unsafe { KEY.arm(core::ptr::dangling_mut::<libc::c_void>()) };
    r.poison_limit = hakmem_superslab::options::get().secure_poison.limit();
    r.phase = Phase::Active;
}

/// Takes every block out of the calling thread's quarantine, checked, and
/// hands each to `free` (the facade's real free).
pub(crate) fn drain(mut free: impl FnMut(*mut u8, usize)) {
    for i in 0..QUARANTINE_SLOTS {
        let ((p, class), limit) = with_ring(|r| {
            let slot = core::mem::replace(&mut r.slots[i], (ptr::null_mut(), 0));
            (slot, r.poison_limit)
        });
        if !p.is_null() {
            // SAFETY: a block that entered the ring.
            let (p, class) = unsafe { leave(p, class, limit) };
            free(p, class);
        }
    }
}

/// Checks the poison of every block in the calling thread's quarantine,
/// leaving them there (at process exit, when no thread exit will).
pub(crate) fn check_quarantine() {
    for i in 0..QUARANTINE_SLOTS {
        let ((p, class), limit) = with_ring(|r| (r.slots[i], r.poison_limit));
        if !p.is_null() {
            // SAFETY: a block that entered the ring.
            unsafe { leave(p, class, limit) };
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
