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

/// Resizes the mapping at `p` from `old_len` to `new_len` bytes where it
/// lies (`mremap` without moving): its pages stay, those it grows by read
/// as zero. False, and nothing changed, when the address space after it is
/// taken (or the kernel refuses).
pub fn remap_in_place(p: *mut u8, old_len: usize, new_len: usize) -> bool {
    let q = keeping_errno(|| {
        // SAFETY: `p` is one of our own mappings of `old_len` bytes, which
        // the caller does not use while it is resized; without
        // MREMAP_MAYMOVE the kernel either resizes it where it is or
        // changes nothing.
        unsafe { libc::mremap(p.cast(), old_len, new_len, 0) }
    });
    q == p.cast()
}

/// Runs `f` (system calls that may fail on a path that succeeds: an
/// attempt with a fallback, advice, a probe) with the caller's `errno`
/// kept: a `malloc` that succeeds leaves `errno` as it found it.
fn keeping_errno<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: __errno_location returns this thread's errno slot.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: as above; the slot lives as long as the thread.
    let saved = unsafe { *slot };
    let r = f();
    // SAFETY: as above.
    unsafe { *slot = saved };
    r
}

/// Moves the mapping at `p` (`old_len` bytes) onto the range at `to`,
/// which becomes `new_len` bytes of it (`mremap` to a fixed address): the
/// pages move with their contents, without a copy; the old range is gone.
/// `to` is a mapping of ours of `new_len` bytes, distinct from `p`'s,
/// which this replaces. False, and nothing changed, when the kernel
/// refuses.
pub fn remap_to(p: *mut u8, old_len: usize, new_len: usize, to: *mut u8) -> bool {
    // (A refusal is followed by a fresh mapping: errno kept.)
    // SAFETY: both ranges are our own, unused mappings (caller's contract);
    // MREMAP_FIXED replaces exactly the `new_len` bytes at `to`.
    let q = keeping_errno(|| unsafe {
        libc::mremap(
            p.cast(),
            old_len,
            new_len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            to.cast::<libc::c_void>(),
        )
    });
    q == to.cast()
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

/// What the system does about transparent huge pages
/// (`/sys/kernel/mm/transparent_hugepage/enabled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemThp {
    /// Every suitably aligned anonymous range may get huge pages.
    Always,
    /// Only ranges advised `MADV_HUGEPAGE` do (most distributions' default).
    Madvise,
    /// None; also a kernel without the file, or one it cannot be read from.
    Never,
}

/// What to tell the kernel about a fresh mapping's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugeAdvice {
    /// `MADV_HUGEPAGE`.
    Want,
    /// `MADV_NOHUGEPAGE`.
    Refuse,
}

/// The mode named in the kernel file's text: the bracketed word of
/// `always [madvise] never`.
pub fn system_thp_of(text: &[u8]) -> SystemThp {
    let Some(open) = text.iter().position(|&c| c == b'[') else {
        return SystemThp::Never;
    };
    let word = &text[open + 1..];
    if word.starts_with(b"always]") {
        SystemThp::Always
    } else if word.starts_with(b"madvise]") {
        SystemThp::Madvise
    } else {
        SystemThp::Never
    }
}

/// The advice, if any, for a fresh mapping under `option` in the system's
/// `mode` (`huge`: the mapping of a huge block, else a slab region). Only
/// what the system would not do by itself is asked: in `madvise` mode the
/// wanted mappings are advised, in `always` mode only `HAKMEM_THP=off`
/// refuses; with `never` nothing can be had; `system` never advises.
pub fn huge_advice(option: crate::options::Thp, mode: SystemThp, huge: bool) -> Option<HugeAdvice> {
    use crate::options::Thp;
    let wanted = match option {
        Thp::System => return None,
        Thp::Off => false,
        Thp::Huge => huge,
        Thp::All => true,
    };
    match (mode, wanted, option) {
        (SystemThp::Madvise, true, _) => Some(HugeAdvice::Want),
        (SystemThp::Always, _, Thp::Off) => Some(HugeAdvice::Refuse),
        _ => None,
    }
}

const THP_UNREAD: u8 = 0;
const THP_ALWAYS: u8 = 1;
const THP_MADVISE: u8 = 2;
const THP_NEVER: u8 = 3;

/// The system's mode, read once (the file on first use; a race reads it
/// twice, to the same answer).
static SYSTEM_THP: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(THP_UNREAD);

/// The system's transparent-huge-page mode.
pub fn system_thp() -> SystemThp {
    match SYSTEM_THP.load(Ordering::Relaxed) {
        THP_ALWAYS => SystemThp::Always,
        THP_MADVISE => SystemThp::Madvise,
        THP_NEVER => SystemThp::Never,
        _ => read_system_thp(),
    }
}

#[cold]
fn read_system_thp() -> SystemThp {
    let mut buf = [0u8; 64];
    // SAFETY: a NUL-terminated path; open, read into a stack buffer of
    // its length and close have no other preconditions.
    let n = keeping_errno(|| unsafe {
        let fd = libc::open(
            c"/sys/kernel/mm/transparent_hugepage/enabled".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            -1
        } else {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            n
        }
    });
    let mode = match usize::try_from(n) {
        Ok(n) => system_thp_of(&buf[..n.min(buf.len())]),
        Err(_) => SystemThp::Never,
    };
    let code = match mode {
        SystemThp::Always => THP_ALWAYS,
        SystemThp::Madvise => THP_MADVISE,
        SystemThp::Never => THP_NEVER,
    };
    SYSTEM_THP.store(code, Ordering::Relaxed);
    mode
}

/// Gives a fresh mapping (`huge`: a huge block's, else a slab region's)
/// the transparent-huge-page advice that `HAKMEM_THP` and the system's
/// mode call for, if any. Advice is only a hint: a failure changes
/// nothing but the page size.
pub fn advise_huge_pages(p: *mut u8, len: usize, huge: bool) {
    let Some(advice) = huge_advice(crate::options::get().thp, system_thp(), huge) else {
        return;
    };
    let flag = match advice {
        HugeAdvice::Want => libc::MADV_HUGEPAGE,
        HugeAdvice::Refuse => libc::MADV_NOHUGEPAGE,
    };
    // SAFETY: the range is one of our own fresh private anonymous
    // mappings; this advice changes how it is backed, never its contents.
    keeping_errno(|| unsafe { libc::madvise(p.cast(), len, flag) });
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::options::Thp;

    #[test]
    fn the_system_mode_is_the_bracketed_word() {
        assert_eq!(
            system_thp_of(b"always [madvise] never\n"),
            SystemThp::Madvise
        );
        assert_eq!(
            system_thp_of(b"[always] madvise never\n"),
            SystemThp::Always
        );
        assert_eq!(system_thp_of(b"always madvise [never]\n"), SystemThp::Never);
        assert_eq!(system_thp_of(b""), SystemThp::Never);
        assert_eq!(system_thp_of(b"always madvise never"), SystemThp::Never);
        assert_eq!(system_thp_of(b"[alw"), SystemThp::Never);
    }

    #[test]
    fn advice_asks_only_what_the_system_would_not_do() {
        use HugeAdvice::{Refuse, Want};
        use SystemThp::{Always, Madvise, Never};
        // (option, mode, huge) -> advice
        let table = [
            (Thp::Huge, Madvise, true, Some(Want)),
            (Thp::Huge, Madvise, false, None),
            (Thp::All, Madvise, false, Some(Want)),
            (Thp::All, Madvise, true, Some(Want)),
            (Thp::Off, Madvise, true, None),
            (Thp::Off, Always, true, Some(Refuse)),
            (Thp::Off, Always, false, Some(Refuse)),
            (Thp::Huge, Always, true, None),
            (Thp::Huge, Always, false, None),
            (Thp::All, Always, false, None),
            (Thp::Off, Never, true, None),
            (Thp::Huge, Never, true, None),
            (Thp::All, Never, false, None),
            (Thp::System, Madvise, true, None),
            (Thp::System, Always, false, None),
            (Thp::System, Never, true, None),
        ];
        for (option, mode, huge, want) in table {
            assert_eq!(
                huge_advice(option, mode, huge),
                want,
                "{option:?} {mode:?} huge={huge}"
            );
        }
    }

    #[test]
    fn the_system_mode_read_here_is_the_files() {
        let text = std::fs::read("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        assert_eq!(system_thp(), system_thp_of(&text));
    }
}
