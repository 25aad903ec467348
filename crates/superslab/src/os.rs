//! The only place in hakmem that talks to the kernel about memory.
//!
//! Every mapping hakmem owns is made here, with `mmap`, and goes back here,
//! with `munmap` or `madvise`. Nothing in this module allocates, locks or
//! panics; failures come back as `None` and the caller decides.

use core::ptr::{self, NonNull};

use core::sync::atomic::{AtomicUsize, Ordering};

/// The kernel's page size, 0 until first asked.
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The kernel's page size (`sysconf(_SC_PAGESIZE)`: 4 KiB on x86_64, 4,
/// 16 or 64 KiB on aarch64 kernels), read once. Every page-granular
/// decision (huge blocks' offsets and lengths, guards, trims) uses it.
#[inline]
pub fn page_size() -> usize {
    match PAGE_SIZE.load(Ordering::Relaxed) {
        0 => read_page_size(),
        n => n,
    }
}

#[cold]
fn read_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // A page size that is not a power of two from 4 KiB to one slab cannot
    // be: keep 4 KiB rather than build on it.
    let n = match usize::try_from(n) {
        Ok(n) if n.is_power_of_two() && (4096..=crate::SLAB_SIZE).contains(&n) => n,
        _ => 4096,
    };
    PAGE_SIZE.store(n, Ordering::Relaxed);
    n
}

/// Rounds `n` up to a multiple of `align` (a power of two); `None` on overflow.
#[inline]
pub const fn align_up(n: usize, align: usize) -> Option<usize> {
    match n.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Maps `len` bytes of fresh, zeroed, private read/write memory.
pub fn map(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with a null hint has no
    // preconditions; the kernel picks an address that overlaps nothing.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Maps `len` bytes such that `base` is a multiple of `base_align` and
/// `base + offset` is a multiple of `offset_align`. Both alignments are
/// powers of two of at least a page; `offset` is a multiple of a page.
///
/// Over-reserves and trims, so the result costs no more than `len` bytes of
/// address space once it returns.
pub fn map_aligned(
    len: usize,
    base_align: usize,
    offset: usize,
    offset_align: usize,
) -> Option<NonNull<u8>> {
    let slack = base_align.max(offset_align);
    let reserve = len.checked_add(slack)?;
    let raw = map(reserve)?.as_ptr() as usize;
    let base = if offset_align <= base_align && offset.is_multiple_of(offset_align) {
        align_up(raw, base_align)?
    } else {
        // Find the first base >= raw, aligned to base_align, with base +
        // offset aligned to offset_align (offset_align > base_align here).
        let user = align_up(raw.checked_add(offset)?, offset_align)?;
        let b = user - offset;
        if !b.is_multiple_of(base_align) || b < raw {
            unmap(raw as *mut u8, reserve);
            return None;
        }
        b
    };
    let head = base - raw;
    let tail = reserve - head - len;
    if head > 0 {
        unmap(raw as *mut u8, head);
    }
    if tail > 0 {
        unmap((base + len) as *mut u8, tail);
    }
    NonNull::new(base as *mut u8)
}

/// Gives a mapping back to the kernel. A failure (which only a bad argument
/// can cause) is ignored: the memory then stays mapped, which is safe.
pub fn unmap(p: *mut u8, len: usize) {
    // SAFETY: callers pass a range they mapped with `map` and no longer use;
    // munmap of such a range cannot affect memory anyone else owns.
    unsafe {
        libc::munmap(p.cast(), len);
    }
}

/// Tells the kernel the contents of a range are no longer needed: the pages
/// are dropped from RSS now and read back as zero on next touch.
pub fn purge(p: *mut u8, len: usize) {
    // SAFETY: the range lies inside one of our own private anonymous
    // mappings and holds no live data; MADV_DONTNEED only discards contents.
    unsafe {
        libc::madvise(p.cast(), len, libc::MADV_DONTNEED);
    }
}

/// Milliseconds on a coarse monotonic clock (a few ms of resolution; read
/// from the vDSO, no system call): enough to age free memory by.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Turns a range into an inaccessible guard (used by hardened builds).
pub fn protect_none(p: *mut u8, len: usize) -> bool {
    // SAFETY: the range is a page-aligned part of one of our own mappings
    // that holds no live data.
    unsafe { libc::mprotect(p.cast(), len, libc::PROT_NONE) == 0 }
}

/// Makes a guarded range readable and writable again (hardened builds).
pub fn protect_rw(p: *mut u8, len: usize) -> bool {
    // SAFETY: the range is a page-aligned part of one of our own mappings
    // that the caller is about to hand out.
    unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

/// A random word from the kernel (`getrandom`), or, if that fails, one
/// mixed from the clock and an address (hardened builds then lose
/// unpredictability, not correctness).
pub fn random_word() -> usize {
    let mut w: usize = 0;
    // SAFETY: getrandom writes at most the given length into `w`.
    let n = unsafe {
        libc::getrandom(
            (&mut w as *mut usize).cast(),
            core::mem::size_of::<usize>(),
            libc::GRND_NONBLOCK,
        )
    };
    if n == core::mem::size_of::<usize>() as isize {
        return w;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let x = (ts.tv_nsec as usize) ^ ((ts.tv_sec as usize) << 32) ^ (&w as *const usize as usize);
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
