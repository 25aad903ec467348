//! glibc's extension API of `<malloc.h>`: `mallinfo2`, `mallinfo`,
//! `malloc_stats`, `malloc_info` and `mallopt`, with hakmem's figures.
//!
//! Every figure comes from the facade's [`facade::memory_usage`] (itself
//! [`facade::stats`] plus a few cold reads); which hakmem figure fills
//! which glibc field is in docs/C_ABI.md ("glibc's extension API").
//! Text goes out through the C library's own stdio (`fputs` on the
//! caller's `FILE`, `stderr` for `malloc_stats`), composed line by line in
//! a stack buffer: nothing here allocates (stdio may, through `malloc`,
//! which is hakmem's, when a stream first needs its buffer; no lock of
//! hakmem's is held then).

use core::ffi::c_char;

use libc::{c_int, size_t, FILE};

use facade::MemoryUsage;

/// glibc's `struct mallinfo2` (`<malloc.h>`, glibc 2.33 on): ten `size_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo2 {
    /// Bytes taken from the OS other than live huge blocks.
    pub arena: size_t,
    /// Free chunks: free slabs, cached huge mappings, counted free small
    /// blocks outside the calling thread's cache.
    pub ordblks: size_t,
    /// Blocks in the calling thread's fast cache (glibc's fastbins).
    pub smblks: size_t,
    /// Live huge blocks (one mapping each).
    pub hblks: size_t,
    /// Bytes of their mappings.
    pub hblkhd: size_t,
    /// Always 0, as in glibc.
    pub usmblks: size_t,
    /// Bytes of the blocks counted in `smblks`.
    pub fsmblks: size_t,
    /// Bytes in use by the program outside huge blocks.
    pub uordblks: size_t,
    /// Free bytes held (outside live huge blocks).
    pub fordblks: size_t,
    /// Bytes `malloc_trim` would unmap now.
    pub keepcost: size_t,
}

/// glibc's `struct mallinfo`: the same fields as `int`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo {
    /// See [`Mallinfo2::arena`].
    pub arena: c_int,
    /// See [`Mallinfo2::ordblks`].
    pub ordblks: c_int,
    /// See [`Mallinfo2::smblks`].
    pub smblks: c_int,
    /// See [`Mallinfo2::hblks`].
    pub hblks: c_int,
    /// See [`Mallinfo2::hblkhd`].
    pub hblkhd: c_int,
    /// See [`Mallinfo2::usmblks`].
    pub usmblks: c_int,
    /// See [`Mallinfo2::fsmblks`].
    pub fsmblks: c_int,
    /// See [`Mallinfo2::uordblks`].
    pub uordblks: c_int,
    /// See [`Mallinfo2::fordblks`].
    pub fordblks: c_int,
    /// See [`Mallinfo2::keepcost`].
    pub keepcost: c_int,
}

// The layouts glibc's <malloc.h> has on LP64 and ILP32 alike.
const _: () = {
    assert!(core::mem::size_of::<Mallinfo2>() == 10 * core::mem::size_of::<size_t>());
    assert!(core::mem::size_of::<Mallinfo>() == 10 * core::mem::size_of::<c_int>());
    assert!(core::mem::offset_of!(Mallinfo2, uordblks) == 7 * core::mem::size_of::<size_t>());
    assert!(core::mem::offset_of!(Mallinfo, keepcost) == 9 * core::mem::size_of::<c_int>());
};

/// `mallopt` parameters (glibc's `<malloc.h>` numbers).
const M_MXFAST: c_int = 1;
const M_TRIM_THRESHOLD: c_int = -1;
const M_TOP_PAD: c_int = -2;
const M_MMAP_THRESHOLD: c_int = -3;
const M_MMAP_MAX: c_int = -4;
const M_CHECK_ACTION: c_int = -5;
const M_PERTURB: c_int = -6;
const M_ARENA_TEST: c_int = -7;
const M_ARENA_MAX: c_int = -8;

/// glibc's largest `M_MXFAST` (`80 * sizeof(size_t) / 4`); it refuses
/// more.
const MXFAST_MAX: usize = 80 * core::mem::size_of::<size_t>() / 4;

extern "C" {
    /// The C library's standard error stream.
    static mut stderr: *mut FILE;
    fn flockfile(f: *mut FILE);
    fn funlockfile(f: *mut FILE);
}

/// The fields of `mallinfo2` from one reading of hakmem's figures.
fn mallinfo_of(u: &MemoryUsage) -> Mallinfo2 {
    Mallinfo2 {
        arena: u.arena_bytes(),
        ordblks: rest_count(u),
        smblks: u.cache_blocks,
        hblks: u.huge_blocks,
        hblkhd: u.huge_bytes,
        usmblks: 0,
        fsmblks: u.cache_bytes,
        uordblks: u.arena_in_use_bytes(),
        fordblks: u.free_bytes(),
        keepcost: u.releasable_bytes(),
    }
}

/// Free chunks other than the calling thread's cached blocks: free slabs,
/// cached huge mappings, and the other counted free small blocks.
fn rest_count(u: &MemoryUsage) -> usize {
    u.free_slabs + u.cached_huge + u.small_free_blocks.saturating_sub(u.cache_blocks)
}

/// `mallinfo2(3)`: hakmem's figures in glibc's fields (docs/C_ABI.md).
#[no_mangle]
pub extern "C" fn mallinfo2() -> Mallinfo2 {
    mallinfo_of(&facade::memory_usage())
}

/// An `int` field of `mallinfo`: glibc's conversion wraps modulo 2^32;
/// hakmem saturates at `INT_MAX`, so a figure past 2 GiB never reads as
/// small or negative.
fn clamp(v: size_t) -> c_int {
    c_int::try_from(v).unwrap_or(c_int::MAX)
}

/// `mallinfo(3)`: [`mallinfo2`]'s figures as `int`, each at most `INT_MAX`.
#[no_mangle]
pub extern "C" fn mallinfo() -> Mallinfo {
    let m = mallinfo2();
    Mallinfo {
        arena: clamp(m.arena),
        ordblks: clamp(m.ordblks),
        smblks: clamp(m.smblks),
        hblks: clamp(m.hblks),
        hblkhd: clamp(m.hblkhd),
        usmblks: clamp(m.usmblks),
        fsmblks: clamp(m.fsmblks),
        uordblks: clamp(m.uordblks),
        fordblks: clamp(m.fordblks),
        keepcost: clamp(m.keepcost),
    }
}

/// One line of text in a stack buffer, written to a `FILE` with `fputs`.
/// Longer lines are cut (none here comes near the buffer's size).
struct Text {
    buf: [u8; 256],
    len: usize,
}

impl Text {
    fn new() -> Self {
        Self {
            buf: [0; 256],
            len: 0,
        }
    }

    /// Appends `s`, keeping the last byte for the terminating NUL.
    fn str(&mut self, s: &str) -> &mut Self {
        let room = self.buf.len() - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        self
    }

    /// Appends `v` in decimal, right-aligned in `width` characters.
    fn num_width(&mut self, mut v: usize, width: usize) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for _ in digits.len() - i..width {
            self.str(" ");
        }
        // Digits only: ASCII.
        self.str(core::str::from_utf8(&digits[i..]).unwrap_or("?"))
    }

    /// Appends `v` in decimal.
    fn num(&mut self, v: usize) -> &mut Self {
        self.num_width(v, 0)
    }

    /// Appends ` name="v"`.
    fn attr(&mut self, name: &str, v: usize) -> &mut Self {
        self.str(" ").str(name).str("=\"").num(v).str("\"")
    }

    /// Writes the line to `fp` and empties it.
    fn put(&mut self, fp: *mut FILE) {
        self.buf[self.len] = 0;
        // SAFETY: the buffer is NUL-terminated at `len` (the room for it
        // is kept by every append); `fp` is a stream the caller vouched
        // for (or stderr).
        unsafe { libc::fputs(self.buf.as_ptr().cast::<c_char>(), fp) };
        self.len = 0;
    }
}

/// Writes `line` and a newline to `fp`.
fn put_line(fp: *mut FILE, line: &str) {
    Text::new().str(line).str("\n").put(fp);
}

/// `name = value`, glibc's `malloc_stats` row ("%10u", without its
/// truncation to 32 bits).
fn stats_row(fp: *mut FILE, name: &str, v: usize) {
    Text::new()
        .str(name)
        .str(" = ")
        .num_width(v, 10)
        .str("\n")
        .put(fp);
}

/// `malloc_stats(3)`: glibc's summary on `stderr` with hakmem's figures,
/// one arena (hakmem's regions are shared by every thread):
///
/// ```text
/// Arena 0:
/// system bytes     =    4194304      (mallinfo2's arena)
/// in use bytes     =     123456      (uordblks)
/// Total (incl. mmap):
/// system bytes     =   46137344      (arena + hblkhd)
/// in use bytes     =   42065920      (uordblks + hblkhd)
/// max mmap regions =          2      (the most huge blocks live at once)
/// max mmap bytes   =   41943040      (the most bytes of them)
/// ```
#[no_mangle]
pub extern "C" fn malloc_stats() {
    let u = facade::memory_usage();
    let m = mallinfo_of(&u);
    // SAFETY: reads the C library's `stderr` pointer (a plain load; the
    // program may have assigned it, which is why it is read each time).
    let fp = unsafe { stderr };
    if fp.is_null() {
        return;
    }
    // SAFETY: a valid stream; the lock keeps other threads' output from
    // interleaving with the summary (stdio locks are recursive).
    unsafe { flockfile(fp) };
    put_line(fp, "Arena 0:");
    stats_row(fp, "system bytes    ", m.arena);
    stats_row(fp, "in use bytes    ", m.uordblks);
    put_line(fp, "Total (incl. mmap):");
    stats_row(fp, "system bytes    ", m.arena + m.hblkhd);
    stats_row(fp, "in use bytes    ", m.uordblks + m.hblkhd);
    stats_row(fp, "max mmap regions", u.peak_huge_blocks);
    stats_row(fp, "max mmap bytes  ", u.peak_huge_bytes);
    // SAFETY: locked above by this thread.
    unsafe { funlockfile(fp) };
}

/// Writes the `<total type="fast" .../>` and `<total type="rest" .../>`
/// lines.
fn totals(fp: *mut FILE, m: &Mallinfo2) {
    Text::new()
        .str("<total type=\"fast\"")
        .attr("count", m.smblks)
        .attr("size", m.fsmblks)
        .str("/>\n")
        .put(fp);
    Text::new()
        .str("<total type=\"rest\"")
        .attr("count", m.ordblks)
        .attr("size", m.fordblks.saturating_sub(m.fsmblks))
        .str("/>\n")
        .put(fp);
}

/// Writes the `<system .../>` and `<aspace .../>` lines.
fn system(fp: *mut FILE, u: &MemoryUsage, m: &Mallinfo2) {
    let max = u.peak_mapped_bytes.max(m.arena);
    for (tag, kind, v) in [
        ("system", "current", m.arena),
        ("system", "max", max),
        ("aspace", "total", m.arena),
        ("aspace", "mprotect", m.arena),
    ] {
        Text::new()
            .str("<")
            .str(tag)
            .str(" type=\"")
            .str(kind)
            .str("\"")
            .attr("size", v)
            .str("/>\n")
            .put(fp);
    }
}

/// One `<size from=.. to=.. total=.. count=../>` line.
fn size_line(fp: *mut FILE, from: usize, to: usize, count: usize, total: usize) {
    Text::new()
        .str("  <size")
        .attr("from", from)
        .attr("to", to)
        .attr("total", total)
        .attr("count", count)
        .str("/>\n")
        .put(fp);
}

/// `malloc_info(3)`: glibc's XML (`<malloc version="1">`, one
/// `<heap nr="0">`, the totals) with hakmem's figures. `<sizes>` lists the
/// free blocks counted, per size class (from the class below's size + 1
/// to the class's), then free slabs (64 KiB) and cached huge mappings
/// (from the shortest to the longest). `options` other than 0: -1 with
/// `EINVAL`, as glibc; a null `fp` too (glibc would crash). Returns 0.
///
/// # Safety
/// `fp` is null or an open `FILE` stream.
#[no_mangle]
pub unsafe extern "C" fn malloc_info(options: c_int, fp: *mut FILE) -> c_int {
    if options != 0 || fp.is_null() {
        super::set_errno(libc::EINVAL);
        return -1;
    }
    let u = facade::memory_usage();
    let m = mallinfo_of(&u);
    // SAFETY: the caller's contract: an open stream; the lock keeps the
    // document in one piece (stdio locks are recursive).
    unsafe { flockfile(fp) };
    put_line(fp, "<malloc version=\"1\">");
    put_line(fp, "<heap nr=\"0\">");
    put_line(fp, "<sizes>");
    let mut from = 1;
    for (class, &count) in u.small_free_by_class.iter().enumerate() {
        let size = MemoryUsage::class_size(class);
        if count > 0 {
            size_line(fp, from, size, count, count * size);
        }
        from = size + 1;
    }
    if u.free_slabs > 0 {
        let slab = MemoryUsage::SLAB_BYTES;
        size_line(fp, slab, slab, u.free_slabs, u.free_slab_bytes);
    }
    if u.cached_huge > 0 {
        size_line(
            fp,
            u.cached_huge_smallest,
            u.cached_huge_largest,
            u.cached_huge,
            u.cached_huge_bytes,
        );
    }
    put_line(fp, "</sizes>");
    totals(fp, &m);
    system(fp, &u, &m);
    put_line(fp, "</heap>");
    totals(fp, &m);
    Text::new()
        .str("<total type=\"mmap\"")
        .attr("count", m.hblks)
        .attr("size", m.hblkhd)
        .str("/>\n")
        .put(fp);
    system(fp, &u, &m);
    put_line(fp, "</malloc>");
    // SAFETY: locked above by this thread.
    unsafe { funlockfile(fp) };
    0
}

/// `mallopt(3)`: 1 for a parameter hakmem knows, 0 for another one (glibc
/// returns 1 for those) or for a value glibc refuses (`M_MXFAST` past
/// 160). `M_TRIM_THRESHOLD` applies at once, as the purge
/// threshold (`HAKMEM_PURGE_THRESHOLD`: the most bytes of free slabs kept
/// resident; -1 is never); the others have no counterpart in hakmem and
/// are accepted and ignored (docs/C_ABI.md says why, one by one).
#[no_mangle]
pub extern "C" fn mallopt(param: c_int, value: c_int) -> c_int {
    // glibc converts the value to size_t: -1 is SIZE_MAX.
    let bytes = value as isize as usize;
    match param {
        M_TRIM_THRESHOLD => {
            facade::options::set_purge_threshold_bytes(bytes);
            1
        }
        M_MXFAST => c_int::from(bytes <= MXFAST_MAX),
        M_MMAP_THRESHOLD | M_TOP_PAD | M_MMAP_MAX | M_CHECK_ACTION | M_PERTURB | M_ARENA_TEST
        | M_ARENA_MAX => 1,
        _ => 0,
    }
}
