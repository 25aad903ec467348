//! Every tunable of hakmem, in one table, read once from `HAKMEM_*`
//! environment variables on first use.
//!
//! It lives in the bottom layer so that each layer can read the value it
//! needs on its own cold path (the first small allocation goes straight to
//! the per-thread cache and never through the facade). Reading uses
//! `getenv` and a static, so it never allocates. A value that does not
//! parse gets a one-line warning naming the variable and the accepted
//! values, and the default is used. `docs/OPTIONS.md` documents each one;
//! a test keeps the two lists equal.

use core::cell::UnsafeCell;
use core::ffi::CStr;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::text::Line;

/// The options in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `HAKMEM_INVALID_FREE`: `abort` (default) reports an invalid free and
    /// aborts; `ignore` reports it and goes on.
    pub ignore_invalid_free: bool,
    /// `HAKMEM_STATS`: `1` prints a whole-allocator summary at exit.
    pub stats: bool,
    /// `HAKMEM_TINY_FAST_STATS`: `1` prints the per-class fast-cache table
    /// at exit.
    pub fast_stats: bool,
    /// `HAKMEM_FAST_BATCH_BYTES`: bytes one fast-cache refill aims at.
    pub fast_batch_bytes: usize,
    /// `HAKMEM_FAST_MAX_BATCH`: the most blocks in one refill (a list's
    /// first bound is two batches, a grown one at most twice this). 32: a
    /// thread caches at most about 0.5 MiB of the classes up to 1 KiB
    /// (64 blocks held 1.2 MiB more across Larson's two threads of 8-1000 B
    /// blocks, above mimalloc's peak RSS there and on c-xthread), at under
    /// 1% more instructions an operation than 64 (16: 6% on c-xthread).
    pub fast_max_batch: usize,
    /// `HAKMEM_PURGE_THRESHOLD`: the most bytes of free slabs kept
    /// resident at any moment; past it, freed slabs are purged with
    /// `MADV_DONTNEED` at once.
    pub purge_threshold_bytes: usize,
    /// `HAKMEM_PURGE_DELAY_MS`: free slabs and cached huge mappings unused
    /// for between one and two of these periods go back to the OS, on the
    /// allocator's next slow-path call. 0: purge at every such call.
    pub purge_delay_ms: usize,
    /// `HAKMEM_RETAINED_REGIONS`: empty 2 MiB regions always kept mapped
    /// (a bigger heap keeps up to one per four live regions).
    pub retained_regions: usize,
    /// `HAKMEM_BACKGROUND_PURGE`: `1` lets one thread of hakmem's own run
    /// the decay passes, so that memory goes back while the program makes
    /// no call (see [`crate::background`]); `0` (default): passes run on
    /// the allocator's slow paths only.
    pub background_purge: bool,
    /// `HAKMEM_SECURE_POISON` (hardened builds): how much of a freed small
    /// block is poisoned in the quarantine and checked when it leaves.
    pub secure_poison: Poison,
    /// `HAKMEM_THP`: which of hakmem's mappings ask for transparent huge
    /// pages.
    pub thp: Thp,
    /// `HAKMEM_PROF`: `1` turns the sampled heap profiler on (hakmem's
    /// `prof` module, docs/PROFILING.md).
    pub prof: bool,
    /// `HAKMEM_PROF_SAMPLE`: the mean bytes allocated between two samples
    /// (the intervals are drawn from an exponential distribution).
    pub prof_sample: usize,
    /// `HAKMEM_PROF_FILE`: where profiles go (`%p`: the process id, `%n`:
    /// the dump's number in the process); None: the default pattern.
    pub prof_file: Option<&'static CStr>,
    /// `HAKMEM_PROF_SIGNAL`: `1` writes a profile on each `SIGUSR2`.
    pub prof_signal: bool,
}

/// How much of a freed small block hardened builds poison (and check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poison {
    /// None: a read after free sees the old data, a write after free is
    /// not seen.
    Off,
    /// The block's first 64 bytes: the cache line the free writes anyway.
    Line,
    /// The whole block.
    Full,
}

impl Poison {
    /// The most bytes of a block poisoned in this mode.
    pub const fn limit(self) -> usize {
        match self {
            Poison::Off => 0,
            Poison::Line => 64,
            Poison::Full => usize::MAX,
        }
    }
}

/// Which mappings ask the kernel for transparent huge pages (2 MiB pages
/// on x86_64): fewer page faults and TLB misses where the memory is used
/// densely, more resident memory where it is touched sparsely (a whole
/// 2 MiB page is faulted in for one byte). What [`crate::os`] does with it
/// depends on the system's mode as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thp {
    /// No advice: the system's mode decides (in `always` mode every
    /// mapping may get them, in `madvise` mode none does).
    System,
    /// None: in the system's `always` mode, hakmem's mappings are even
    /// advised against them (`MADV_NOHUGEPAGE`).
    Off,
    /// The mappings of huge blocks (above 1 MiB), which programs mostly
    /// fill: advised `MADV_HUGEPAGE` in the system's `madvise` mode.
    Huge,
    /// Slab regions as well, whose 2 MiB are then resident as soon as one
    /// slab of theirs is touched.
    All,
}

/// The defaults, when no variable is set.
pub const DEFAULTS: Options = Options {
    ignore_invalid_free: false,
    stats: false,
    fast_stats: false,
    fast_batch_bytes: 32 << 10,
    fast_max_batch: 32,
    purge_threshold_bytes: 64 << 20,
    purge_delay_ms: 100,
    retained_regions: 2,
    background_purge: false,
    secure_poison: Poison::Full,
    thp: Thp::System,
    prof: false,
    prof_sample: 512 << 10,
    prof_file: None,
    prof_signal: false,
};

const UNREAD: u8 = 0;
const READING: u8 = 1;
const READ: u8 = 2;

struct Slot {
    state: AtomicU8,
    value: UnsafeCell<Options>,
}

// SAFETY: `value` is written once, by the thread that moved `state` from
// UNREAD to READING, and read only after `state` is READ (Acquire).
unsafe impl Sync for Slot {}

static SLOT: Slot = Slot {
    state: AtomicU8::new(UNREAD),
    value: UnsafeCell::new(DEFAULTS),
};

/// The options, read from the environment on first use.
#[inline]
pub fn get() -> &'static Options {
    if SLOT.state.load(Ordering::Acquire) != READ {
        read_once();
    }
    // SAFETY: state is READ: the value is written and never changes again.
    unsafe { &*SLOT.value.get() }
}

/// What [`PURGE_THRESHOLD_NOW`] holds while nothing was set at run time.
const NOT_SET: usize = usize::MAX;

/// `purge_threshold_bytes` as set at run time ([`set_purge_threshold_bytes`],
/// glibc's `mallopt(M_TRIM_THRESHOLD)` under libhakmem.so), or [`NOT_SET`].
static PURGE_THRESHOLD_NOW: AtomicUsize = AtomicUsize::new(NOT_SET);

/// The most bytes of free slabs kept resident now: the value set at run
/// time, else `HAKMEM_PURGE_THRESHOLD`'s. Read on the pool's slow path (a
/// slab or run given back), never per block.
#[inline]
pub fn purge_threshold_bytes() -> usize {
    match PURGE_THRESHOLD_NOW.load(Ordering::Relaxed) {
        NOT_SET => get().purge_threshold_bytes,
        bytes => bytes,
    }
}

/// Sets the purge threshold at run time, over the environment's: from the
/// next slab or run given back on, free slabs beyond `bytes` are purged at
/// once. `usize::MAX` (what glibc's `mallopt` makes of -1) means never.
pub fn set_purge_threshold_bytes(bytes: usize) {
    PURGE_THRESHOLD_NOW.store(bytes.min(NOT_SET - 1), Ordering::Relaxed);
}

#[cold]
fn read_once() {
    if SLOT
        .state
        .compare_exchange(UNREAD, READING, Ordering::Acquire, Ordering::Acquire)
        .is_ok()
    {
        let o = parse();
        // SAFETY: we moved the state to READING: nobody else writes, and
        // nobody reads until READ.
        unsafe { *SLOT.value.get() = o };
        SLOT.state.store(READ, Ordering::Release);
        return;
    }
    while SLOT.state.load(Ordering::Acquire) != READ {
        core::hint::spin_loop();
    }
}

fn env(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv reads the environment without allocating; the name is
    // NUL-terminated.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: getenv returns a NUL-terminated string that lives as long as
    // the environment entry (the process does not change these).
    (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) }.to_bytes())
}

/// The value of `name` as the C string the environment holds, None when
/// unset or empty.
fn env_cstr(name: &CStr) -> Option<&'static CStr> {
    // SAFETY: as in `env`.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: as in `env`.
    let s = (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) })?;
    (!s.is_empty()).then_some(s)
}

fn warn(name: &CStr, accepted: &str) {
    Line::new()
        .str("hakmem: ignoring ")
        .push(name.to_bytes())
        .str(": expected ")
        .str(accepted)
        .str("; using the default\n")
        .write_stderr();
}

fn choice(name: &CStr, no: &[u8], yes: &[u8], default: bool, accepted: &str) -> bool {
    match env(name) {
        None => default,
        Some(v) if v == yes => true,
        Some(v) if v == no => false,
        Some(_) => {
            warn(name, accepted);
            default
        }
    }
}

fn number(name: &CStr, default: usize, min: usize, max: usize, accepted: &str) -> usize {
    let Some(v) = env(name) else {
        return default;
    };
    let mut n: usize = 0;
    let mut ok = !v.is_empty();
    for &c in v {
        match (c.is_ascii_digit(), n.checked_mul(10)) {
            (true, Some(m)) => n = m.saturating_add(usize::from(c - b'0')),
            _ => ok = false,
        }
    }
    if ok && (min..=max).contains(&n) {
        n
    } else {
        warn(name, accepted);
        default
    }
}

fn parse() -> Options {
    let d = DEFAULTS;
    Options {
        ignore_invalid_free: choice(
            c"HAKMEM_INVALID_FREE",
            b"abort",
            b"ignore",
            d.ignore_invalid_free,
            "'abort' or 'ignore'",
        ),
        stats: choice(c"HAKMEM_STATS", b"0", b"1", d.stats, "'0' or '1'"),
        fast_stats: choice(
            c"HAKMEM_TINY_FAST_STATS",
            b"0",
            b"1",
            d.fast_stats,
            "'0' or '1'",
        ),
        fast_batch_bytes: number(
            c"HAKMEM_FAST_BATCH_BYTES",
            d.fast_batch_bytes,
            64,
            1 << 20,
            "a number of bytes from 64 to 1048576",
        ),
        fast_max_batch: number(
            c"HAKMEM_FAST_MAX_BATCH",
            d.fast_max_batch,
            2,
            1024,
            "a number of blocks from 2 to 1024",
        ),
        purge_threshold_bytes: number(
            c"HAKMEM_PURGE_THRESHOLD",
            d.purge_threshold_bytes,
            0,
            1 << 40,
            "a number of bytes",
        ),
        purge_delay_ms: number(
            c"HAKMEM_PURGE_DELAY_MS",
            d.purge_delay_ms,
            0,
            3_600_000,
            "a number of milliseconds from 0 to 3600000",
        ),
        retained_regions: number(
            c"HAKMEM_RETAINED_REGIONS",
            d.retained_regions,
            0,
            1 << 20,
            "a number of regions",
        ),
        background_purge: choice(
            c"HAKMEM_BACKGROUND_PURGE",
            b"0",
            b"1",
            d.background_purge,
            "'0' or '1'",
        ),
        secure_poison: match env(c"HAKMEM_SECURE_POISON") {
            None => d.secure_poison,
            Some(b"off") => Poison::Off,
            Some(b"line") => Poison::Line,
            Some(b"full") => Poison::Full,
            Some(_) => {
                warn(c"HAKMEM_SECURE_POISON", "'off', 'line' or 'full'");
                d.secure_poison
            }
        },
        thp: match env(c"HAKMEM_THP") {
            None => d.thp,
            Some(b"system") => Thp::System,
            Some(b"off") => Thp::Off,
            Some(b"huge") => Thp::Huge,
            Some(b"all") => Thp::All,
            Some(_) => {
                warn(c"HAKMEM_THP", "'system', 'off', 'huge' or 'all'");
                d.thp
            }
        },
        prof: choice(c"HAKMEM_PROF", b"0", b"1", d.prof, "'0' or '1'"),
        prof_sample: number(
            c"HAKMEM_PROF_SAMPLE",
            d.prof_sample,
            1,
            1 << 40,
            "a number of bytes from 1 to 1099511627776",
        ),
        prof_file: env_cstr(c"HAKMEM_PROF_FILE"),
        prof_signal: choice(
            c"HAKMEM_PROF_SIGNAL",
            b"0",
            b"1",
            d.prof_signal,
            "'0' or '1'",
        ),
    }
}
