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

/// 16-byte chunks with SSE2, which every x86_64 has (no detection). A span
/// of up to 64 bytes is two or four chunks that may overlap (no loop); a
/// longer one is a loop of four chunks and four that end where it ends.
/// The stores are volatile so that LLVM does not make them calls to
/// `memset`: two calls a free (the main part and the rest) were more than
/// the stores themselves. (Poison and its check were three quarters of a
/// hardened free when they went 8 bytes at a time through a volatile loop:
/// 186 instructions an op in `enter` on churn, callgrind.)
#[cfg(target_arch = "x86_64")]
mod chunks {
    use core::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_load_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        _mm_setzero_si128, _mm_xor_si128,
    };

    /// Fills `len` bytes at `p` with `byte`.
    ///
    /// # Safety
    /// `p` is 16-aligned, `len` a multiple of 16, and the range the
    /// caller's to write.
    #[inline(always)]
    pub(super) unsafe fn fill(p: *mut u8, len: usize, byte: u8) {
        // SAFETY: SSE2 is part of every x86_64; every chunk starts at a
        // multiple of 16 from `p` and ends by `p + len` (caller's contract;
        // `at(i)` is only called with `i + 16 <= len`).
        unsafe {
            let v = _mm_set1_epi8(byte as i8);
            let at = |i: usize| p.add(i).cast::<__m128i>().write_volatile(v);
            match len {
                0 => {}
                16..=32 => {
                    at(0);
                    at(len - 16);
                }
                48..=64 => {
                    at(0);
                    at(16);
                    at(len - 32);
                    at(len - 16);
                }
                _ => {
                    let mut i = 0;
                    while i + 64 < len {
                        at(i);
                        at(i + 16);
                        at(i + 32);
                        at(i + 48);
                        i += 64;
                    }
                    at(len - 64);
                    at(len - 48);
                    at(len - 32);
                    at(len - 16);
                }
            }
        }
    }

    /// True when every one of the `len` bytes at `p` is `byte`. No early
    /// exit: the answer is almost always yes.
    ///
    /// # Safety
    /// `p` is 16-aligned, `len` a multiple of 16, and the range readable.
    #[inline(always)]
    pub(super) unsafe fn all(p: *const u8, len: usize, byte: u8) -> bool {
        // SAFETY: SSE2 is part of every x86_64; every chunk lies inside the
        // range as in `fill` (caller's contract).
        unsafe {
            let v = _mm_set1_epi8(byte as i8);
            let at = |i: usize| _mm_xor_si128(_mm_load_si128(p.add(i).cast::<__m128i>()), v);
            let two = |i: usize, j: usize| _mm_or_si128(at(i), at(j));
            let diff = match len {
                0 => _mm_setzero_si128(),
                16..=32 => two(0, len - 16),
                48..=64 => _mm_or_si128(two(0, 16), two(len - 32, len - 16)),
                _ => {
                    let mut diff = _mm_setzero_si128();
                    let mut i = 0;
                    while i + 64 < len {
                        diff =
                            _mm_or_si128(diff, _mm_or_si128(two(i, i + 16), two(i + 32, i + 48)));
                        i += 64;
                    }
                    _mm_or_si128(
                        diff,
                        _mm_or_si128(two(len - 64, len - 48), two(len - 32, len - 16)),
                    )
                }
            };
            _mm_movemask_epi8(_mm_cmpeq_epi8(diff, _mm_setzero_si128())) == 0xffff
        }
    }
}

/// The same a word at a time, for other targets.
#[cfg(not(target_arch = "x86_64"))]
mod chunks {
    /// # Safety
    /// As x86_64's: `p` 16-aligned, `len` a multiple of 16, ours to write.
    #[inline(always)]
    pub(super) unsafe fn fill(p: *mut u8, len: usize, byte: u8) {
        let pattern = u64::from_ne_bytes([byte; 8]);
        for i in 0..len / 8 {
            // SAFETY: word i lies inside the range (caller's contract).
            unsafe { p.cast::<u64>().add(i).write(pattern) };
        }
    }

    /// # Safety
    /// As x86_64's: `p` 16-aligned, `len` a multiple of 16, readable.
    #[inline(always)]
    pub(super) unsafe fn all(p: *const u8, len: usize, byte: u8) -> bool {
        let pattern = u64::from_ne_bytes([byte; 8]);
        // SAFETY: the caller's range, 8-aligned.
        let w = unsafe { core::slice::from_raw_parts(p.cast::<u64>(), len / 8) };
        w.iter().fold(0, |acc, &x| acc | (x ^ pattern)) == 0
    }
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

/// Fills the first `span` bytes at `p` but the free-mark word with
/// [`POISON`].
///
/// # Safety
/// `p` is a 16-aligned block of at least `span` bytes (a multiple of 16)
/// owned by the caller.
#[inline(always)]
unsafe fn poison(p: *mut u8, span: usize) {
    if span == 0 {
        return;
    }
    // SAFETY: the first word and [16, span) lie inside the block, 16-aligned
    // (caller's contract).
    unsafe {
        p.cast::<u64>().write(u64::from_ne_bytes([POISON; 8]));
        chunks::fill(p.add(MARK_WORD.end), span - MARK_WORD.end, POISON);
    }
}

/// True when the first `span` bytes at `p` but the free-mark word still
/// hold [`POISON`].
///
/// # Safety
/// As for [`poison`], the block readable.
#[inline(always)]
unsafe fn still_poisoned(p: *const u8, span: usize) -> bool {
    if span == 0 {
        return true;
    }
    // SAFETY: as for `poison`.
    unsafe {
        p.cast::<u64>().read() == u64::from_ne_bytes([POISON; 8])
            && chunks::all(p.add(MARK_WORD.end), span - MARK_WORD.end, POISON)
    }
}

/// Checks the poison of a block leaving the quarantine (poisoned under
/// `limit`).
///
/// # Safety
/// `p` is a small block of `class` that entered the quarantine.
unsafe fn leave(p: *mut u8, class: usize, limit: usize) -> (*mut u8, usize) {
    // SAFETY: a quarantined block of `class`, poisoned over this span.
    if !unsafe { still_poisoned(p, poisoned_span(class, limit)) } {
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

#[cfg(test)]
mod tests {
    use super::chunks;

    /// A 16-aligned buffer with room on both sides of the span under test.
    #[repr(align(16))]
    struct Buf([u8; 640]);

    const GUARD: u8 = 0x11;
    const AT: usize = 64;

    #[test]
    fn fill_writes_exactly_its_span_and_all_sees_every_byte_of_it() {
        for len in (0..=512).step_by(16) {
            let mut b = Buf([GUARD; 640]);
            // SAFETY: [AT, AT + len) lies inside the buffer, 16-aligned.
            unsafe { chunks::fill(b.0.as_mut_ptr().add(AT), len, 0xdf) };
            for (i, &byte) in b.0.iter().enumerate() {
                let inside = (AT..AT + len).contains(&i);
                assert_eq!(
                    byte,
                    if inside { 0xdf } else { GUARD },
                    "len {len}, byte {i}"
                );
            }
            // SAFETY: as above.
            assert!(unsafe { chunks::all(b.0.as_ptr().add(AT), len, 0xdf) });
            for i in AT..AT + len {
                b.0[i] ^= 0x40;
                // SAFETY: as above.
                let clean = unsafe { chunks::all(b.0.as_ptr().add(AT), len, 0xdf) };
                assert!(!clean, "len {len}: a change at byte {} went unseen", i - AT);
                b.0[i] ^= 0x40;
            }
        }
    }
}
