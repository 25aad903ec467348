//! hakmem's own C calls, declared in `include/hakmem.h`: the statistics
//! as a struct (`hakmem_stats`), `hakmem_trim`, the exit summary on demand
//! (`hakmem_print_stats`), the options in force (`hakmem_option_get`) and
//! the build's name (`hakmem_build`).
//!
//! `struct hakmem_stats` grows only at its end, and a caller says how many
//! bytes of it it knows: a program compiled against an older header gets
//! the fields it knows, one compiled against a newer header gets zeros in
//! the fields this library does not have, and the return value (the size
//! of this library's struct) tells which.

use core::ffi::{c_char, CStr};
use core::mem::size_of;
use core::ptr;

use libc::{c_int, size_t};

/// `struct hakmem_stats` (include/hakmem.h): every field a `size_t`, in
/// this order; new fields are only ever appended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HakmemStats {
    /// Bytes mapped from the OS now, for regions and huge blocks.
    pub mapped_bytes: size_t,
    /// The most bytes mapped at once.
    pub peak_mapped_bytes: size_t,
    /// Bytes in use by the program: small, large and huge blocks.
    pub in_use_bytes: size_t,
    /// Of those, small blocks (at their size class's block size).
    pub small_in_use_bytes: size_t,
    /// Of those, large blocks (whole runs of 64 KiB slabs).
    pub large_in_use_bytes: size_t,
    /// Of those, huge blocks (their whole mappings).
    pub huge_in_use_bytes: size_t,
    /// Free bytes held: free slabs, counted free small blocks, cached huge
    /// mappings (`mallinfo2`'s `fordblks`).
    pub free_bytes: size_t,
    /// Bytes `hakmem_trim` would give back to the OS now (`keepcost`).
    pub releasable_bytes: size_t,
    /// Permanent metadata (per-thread heaps and caches).
    pub metadata_bytes: size_t,
    /// 2 MiB regions mapped now.
    pub regions_live: size_t,
    /// Regions mapped since start.
    pub regions_mapped: size_t,
    /// Regions given back to the OS since start.
    pub regions_released: size_t,
    /// Slabs of small blocks in use.
    pub slabs_in_use: size_t,
    /// Large blocks in use.
    pub large_blocks: size_t,
    /// Huge blocks in use.
    pub huge_blocks: size_t,
    /// The most huge blocks live at once.
    pub peak_huge_blocks: size_t,
    /// Huge blocks mapped since start.
    pub huge_mapped: size_t,
    /// Slabs purged (`MADV_DONTNEED`) since start.
    pub slabs_purged: size_t,
    /// Per-thread heaps created since start.
    pub heaps_created: size_t,
    /// Slabs abandoned by exiting threads since start.
    pub slabs_abandoned: size_t,
    /// Abandoned slabs adopted by other threads since start.
    pub slabs_adopted: size_t,
    /// Blocks freed by a thread other than their slab's owner.
    pub remote_frees: size_t,
    /// Invalid frees reported since start.
    pub invalid_frees: size_t,
    /// Allocations that returned null for lack of memory since start.
    pub out_of_memory: size_t,
}

/// The figures now: [`facade::memory_usage`] and [`facade::stats`].
fn snapshot() -> HakmemStats {
    let u = facade::memory_usage();
    let s = facade::stats();
    let ss = s.superslab;
    HakmemStats {
        mapped_bytes: ss.mapped_bytes,
        peak_mapped_bytes: ss.peak_mapped_bytes,
        in_use_bytes: u.in_use_bytes(),
        small_in_use_bytes: u.small_in_use_bytes,
        large_in_use_bytes: u.large_bytes,
        huge_in_use_bytes: u.huge_bytes,
        free_bytes: u.free_bytes(),
        releasable_bytes: u.releasable_bytes(),
        metadata_bytes: ss.metadata_bytes,
        regions_live: ss.regions_live,
        regions_mapped: ss.regions_mapped,
        regions_released: ss.regions_released,
        slabs_in_use: ss.slabs_in_use,
        large_blocks: u.large_blocks,
        huge_blocks: u.huge_blocks,
        peak_huge_blocks: ss.peak_huge_in_use,
        huge_mapped: ss.huge_mapped,
        slabs_purged: ss.slabs_purged,
        heaps_created: s.tiny_box.heaps_created,
        slabs_abandoned: s.tiny_box.slabs_abandoned,
        slabs_adopted: s.tiny_box.slabs_adopted,
        remote_frees: s.tiny_box.remote_frees,
        invalid_frees: s.invalid_frees,
        out_of_memory: s.out_of_memory,
    }
}

/// `hakmem_stats(out, size)`: fills the first `size` bytes at `out` with
/// the statistics now (the fields this library knows; any bytes past them
/// zeroed) and returns `sizeof(struct hakmem_stats)` as this library has
/// it. A null `out` only returns that size. Cold: it walks the calling
/// thread's slabs (see `mallinfo2`).
///
/// # Safety
/// `out` is null or valid for writes of `size` bytes (any alignment).
#[no_mangle]
pub unsafe extern "C" fn hakmem_stats(out: *mut HakmemStats, size: size_t) -> size_t {
    let known = size_of::<HakmemStats>();
    if out.is_null() {
        return known;
    }
    let s = snapshot();
    let n = size.min(known);
    let out = out.cast::<u8>();
    // SAFETY: `s` is `known` >= `n` bytes; the caller's contract gives
    // `size` >= `n` writable bytes at `out`, which is not `s`.
    unsafe { ptr::copy_nonoverlapping(ptr::from_ref(&s).cast::<u8>(), out, n) };
    // SAFETY: the caller's contract: the `size - n` bytes after them are
    // writable too.
    unsafe { ptr::write_bytes(out.add(n), 0, size - n) };
    known
}

/// `hakmem_trim()`: gives back everything hakmem can reach (the calling
/// thread's cached blocks, empty slabs, retained regions, cached huge
/// mappings), as `malloc_trim`.
#[no_mangle]
pub extern "C" fn hakmem_trim() {
    facade::trim();
}

/// `hakmem_prof_dump(path)`: writes a heap profile (docs/PROFILING.md) to
/// `path`, or, for a null `path`, to `HAKMEM_PROF_FILE`'s next name.
/// Returns 0 when it was written whole, -1 when the profiler is off
/// (`HAKMEM_PROF` unset) or the file could not be written.
///
/// # Safety
/// `path` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn hakmem_prof_dump(path: *const c_char) -> c_int {
    let written = if path.is_null() {
        facade::prof::dump_default()
    } else {
        // SAFETY: the caller's contract: a NUL-terminated string.
        facade::prof::dump(unsafe { CStr::from_ptr(path) })
    };
    if written {
        0
    } else {
        -1
    }
}

/// `hakmem_print_stats(fd)`: writes the `hakmem: stats:` summary that
/// `HAKMEM_STATS=1` prints at exit to file descriptor `fd` (a failed write
/// is ignored).
#[no_mangle]
pub extern "C" fn hakmem_print_stats(fd: c_int) {
    facade::report::print_stats_summary(fd);
}

/// The value in force of the option named `name`, as `hakmem_option_get`
/// reports it: numbers as they are, `0`/`1` for the switches, and the
/// position of the value among those accepted for the three others
/// (`HAKMEM_INVALID_FREE`: 0 `abort`, 1 `ignore`; `HAKMEM_SECURE_POISON`:
/// 0 `off`, 1 `line`, 2 `full`; `HAKMEM_THP`: 0 `system`, 1 `off`, 2
/// `huge`, 3 `all`), and for `HAKMEM_PROF_FILE` (a path
/// pattern) 1 when one was set, 0 for the default.
fn option_value(name: &[u8]) -> Option<usize> {
    use facade::options::{Poison, Thp};
    let o = facade::options::get();
    Some(match name {
        b"HAKMEM_INVALID_FREE" => usize::from(o.ignore_invalid_free),
        b"HAKMEM_STATS" => usize::from(o.stats),
        b"HAKMEM_TINY_FAST_STATS" => usize::from(o.fast_stats),
        b"HAKMEM_FAST_BATCH_BYTES" => o.fast_batch_bytes,
        b"HAKMEM_FAST_MAX_BATCH" => o.fast_max_batch,
        // As set at run time (mallopt's M_TRIM_THRESHOLD), else the
        // environment's.
        b"HAKMEM_PURGE_THRESHOLD" => facade::options::purge_threshold_bytes(),
        b"HAKMEM_PURGE_DELAY_MS" => o.purge_delay_ms,
        b"HAKMEM_RETAINED_REGIONS" => o.retained_regions,
        b"HAKMEM_BACKGROUND_PURGE" => usize::from(o.background_purge),
        b"HAKMEM_PROF" => usize::from(o.prof),
        b"HAKMEM_PROF_SAMPLE" => o.prof_sample,
        // A path pattern is no number: whether one was set (1) or the
        // default pattern is in force (0).
        b"HAKMEM_PROF_FILE" => usize::from(o.prof_file.is_some()),
        b"HAKMEM_PROF_SIGNAL" => usize::from(o.prof_signal),
        b"HAKMEM_SECURE_POISON" => match o.secure_poison {
            Poison::Off => 0,
            Poison::Line => 1,
            Poison::Full => 2,
        },
        b"HAKMEM_THP" => match o.thp {
            Thp::System => 0,
            Thp::Off => 1,
            Thp::Huge => 2,
            Thp::All => 3,
        },
        _ => return None,
    })
}

/// `hakmem_option_get(name, value)`: stores the value in force of the
/// option `name` (`"HAKMEM_PURGE_DELAY_MS"`, ...; docs/OPTIONS.md) in
/// `*value` and returns 0; -1 with `EINVAL` for a name hakmem does not
/// have, or a null argument (`*value` untouched).
///
/// # Safety
/// `name` is null or a NUL-terminated string; `value` is null or valid
/// for a write of a `size_t`.
#[no_mangle]
pub unsafe extern "C" fn hakmem_option_get(name: *const c_char, value: *mut size_t) -> c_int {
    if name.is_null() || value.is_null() {
        super::set_errno(libc::EINVAL);
        return -1;
    }
    // SAFETY: the caller's contract: a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(name) };
    match option_value(name.to_bytes()) {
        Some(v) => {
            // SAFETY: the caller's contract.
            unsafe { value.write_unaligned(v) };
            0
        }
        None => {
            super::set_errno(libc::EINVAL);
            -1
        }
    }
}

/// [`facade::BUILD_NAME`], NUL-terminated.
static BUILD_NAME: [u8; facade::BUILD_NAME.len() + 1] = {
    let name = facade::BUILD_NAME.as_bytes();
    let mut out = [0; facade::BUILD_NAME.len() + 1];
    let mut i = 0;
    while i < name.len() {
        out[i] = name[i];
        i += 1;
    }
    out
};

/// `hakmem_build()`: the name of the build's feature combination, as the
/// exit statistics' `build=` shows it (`"hakmem+box-refactor+fast-path"`
/// by default); a static string.
#[no_mangle]
pub extern "C" fn hakmem_build() -> *const c_char {
    BUILD_NAME.as_ptr().cast()
}
