//! The sampled heap profiler (`HAKMEM_PROF=1`; docs/PROFILING.md).
//!
//! About one allocation per `HAKMEM_PROF_SAMPLE` bytes allocated (512 KiB
//! by default) is sampled: its stack is taken with `_Unwind_Backtrace`
//! (at most [`MAX_DEPTH`] frames) and recorded with the sample's weight,
//! the bytes and allocations it stands for. A profile holds, per unique
//! stack, the estimated bytes and allocations live now and allocated
//! since the start, written as text with raw return addresses and the
//! process's `/proc/self/maps`, so that writing one looks up no symbol
//! (`cargo xtask heap-profile` reads it).
//!
//! ## Where the samples come from, and cost nothing when off
//! - **Small blocks, default build**: the fast cache counts down each
//!   class's bytes to its next sample point on its refill path alone
//!   (`hakmem_fastcache::Sampler`); the allocation that reaches the point
//!   misses its list and `take_small` serves it.
//! - **Small blocks, builds without the fast cache**: `small_alloc` tests
//!   [`enabled`] (one load and a branch per small allocation, in those
//!   builds only) and counts down here (`small_alloc`).
//! - **Large and huge blocks**: their cold path counts down here
//!   (`large_alloc`).
//!
//! A sampled small block is a block of its class on a *detached* slab
//! (`hakmem_tiny_box::detached`): a slab whose owner is no thread, so that
//! its free, from any thread and through either door, takes the path of a
//! block of another thread's slab and lands on the slab's remote list,
//! where the profiler finds it (`State::collect_small`) and takes it out
//! of the live profile. No other free tests anything. Sampled large
//! blocks are recorded by address; the large free's out-of-line path
//! looks them up while any is live (`large_freed`).
//!
//! Box backend only: the legacy backend's slabs have no owners, so its
//! frees could not tell a sampled block from any other (`HAKMEM_PROF=1`
//! is refused there with a warning).
//!
//! ## Locks, signals, re-entrancy
//! One lock (`ProfLock`) guards the tables; whoever holds it takes no
//! other lock of hakmem's and allocates nothing (fresh detached slabs are
//! taken and empty ones given back with it released), so the `SIGUSR2`
//! handler may take it on any thread, except the one holding it: there
//! the dump is left to that thread, which writes it as it lets go. The
//! stack is taken before the lock; should the unwinder allocate, that
//! allocation is not sampled (a per-thread flag).
//!
//! Nothing here allocates through the global allocator or panics: the
//! tables are mappings of their own (`superslab::os::map`), profiles are
//! written with `write(2)` from a stack buffer.

extern crate std;

use core::cell::{Cell, UnsafeCell};
use core::ffi::{c_int, c_void, CStr};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use hakmem_superslab::os;
use hakmem_tiny_box::class_size;
use hakmem_tiny_box::detached::{self, DetachedSlab, DetachedSlabs};

/// The most frames kept of a sample's stack.
pub const MAX_DEPTH: usize = 64;

/// Unique stacks the profile can tell apart; samples of stacks beyond go
/// to one entry with no frames.
const STACK_CAP: usize = 1 << 16;

/// Slots of the stacks' hash index (twice [`STACK_CAP`]: at most half full).
const INDEX_CAP: usize = 2 * STACK_CAP;

/// Slots of the live-sample table at first; it doubles past half full.
const SAMPLES_START: usize = 1 << 12;

/// The most slots of the live-sample table (samples beyond are dropped and
/// counted).
const SAMPLES_MAX: usize = 1 << 24;

/// Sample weights are kept in 1/1024 allocations.
const COUNT_SCALE: f64 = 1024.0;

/// What `HAKMEM_PROF_FILE` is when unset.
pub const DEFAULT_FILE: &str = "hakmem.%p.%n.heap";

/// Whether this build can profile: the box backend (`box-refactor`).
pub const SUPPORTED: bool = cfg!(feature = "box-refactor");

/// The first line of every profile (its format's name and version).
pub const MAGIC: &str = "hakmem-heap-profile 1";

/// True once the profiler is set up and sampling (never unset).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// `HAKMEM_PROF_SAMPLE`: the mean bytes between samples.
static MEAN: AtomicUsize = AtomicUsize::new(1);

/// Profiles written so far (`%n` of the file pattern).
static DUMPS: AtomicU64 = AtomicU64::new(0);

/// A dump asked for by a signal on the thread that held the lock.
static PENDING_DUMP: AtomicBool = AtomicBool::new(false);

/// Sampled large or huge blocks live now (their frees look them up).
static LARGE_LIVE: AtomicUsize = AtomicUsize::new(0);

/// True when the profiler samples (`HAKMEM_PROF=1` in a build that can).
#[inline(always)]
pub fn enabled() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

std::thread_local! {
    /// This thread is inside the profiler (taking a stack, recording).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    /// xorshift64* state of this thread's intervals; 0 before seeding.
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// Bytes of large allocations left before this thread's next large
    /// sample; 0 before the first is drawn.
    static LARGE_UNTIL: Cell<usize> = const { Cell::new(0) };
    /// The same for small allocations, in builds without the fast cache.
    static SMALL_UNTIL: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread inside the profiler for its life; None when
/// it already is (a re-entrant allocation, from the unwinder: not sampled).
struct Inside;

impl Inside {
    fn enter() -> Option<Inside> {
        INSIDE.with(|f| (!f.replace(true)).then_some(Inside))
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.with(|f| f.set(false));
    }
}

// ---------------------------------------------------------------------------
// Intervals and weights

/// The next random word of this thread's generator.
fn next_random() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            x = os::random_word() as u64 | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// Bytes to the next sample point: exponentially distributed with mean
/// `HAKMEM_PROF_SAMPLE`, at least 1 (the fast cache's `Sampler::interval`).
pub(crate) fn interval() -> usize {
    // u in (0, 1]: 53 random bits, plus one so that ln(u) is finite.
    let u = ((next_random() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let mean = MEAN.load(Ordering::Relaxed) as f64;
    // (`f64::ln` and `exp_m1` are std's, libm's `log` and `expm1`: no
    // allocation, no lock.)
    let bytes = -u.ln() * mean;
    // Rounded up: an allocation of s bytes reaches the point when the
    // interval is at most s, which for whole bytes is ceil(x) <= s. (Down,
    // it was x < s + 1: a bias of 1/s, 0.8% on 128 B blocks.)
    (bytes.ceil() as usize).max(1)
}

/// The chance that an allocation of `size` bytes holds a sample point:
/// `1 - exp(-size / mean)`.
fn sample_chance(size: usize) -> f64 {
    let x = size as f64 / MEAN.load(Ordering::Relaxed) as f64;
    -(-x).exp_m1()
}

/// What a sample of `size` bytes stands for: bytes, and allocations in
/// 1/1024ths (each allocation of that size is sampled with
/// [`sample_chance`], so these are unbiased estimates).
fn weights(size: usize) -> (u64, u64) {
    let p = sample_chance(size.max(1));
    ((size as f64 / p) as u64, (COUNT_SCALE / p) as u64)
}

/// Counts an allocation of `size` bytes down on `until`; true when it
/// reaches the sample point (the next interval then starts after it).
fn count_down(until: &Cell<usize>, size: usize) -> bool {
    let mut left = until.get();
    if left == 0 {
        left = interval();
    }
    if left <= size {
        until.set(interval());
        return true;
    }
    until.set(left - size);
    false
}

// ---------------------------------------------------------------------------
// Stacks

#[allow(non_camel_case_types)]
type _Unwind_Trace_Fn = extern "C" fn(*mut c_void, *mut c_void) -> c_int;

extern "C" {
    // libgcc_s's unwinder (linked with `std`).
    fn _Unwind_Backtrace(trace: _Unwind_Trace_Fn, arg: *mut c_void) -> c_int;
    fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
}

/// `_URC_NO_REASON`: go on. Anything else stops the walk.
const URC_NO_REASON: c_int = 0;
const URC_NORMAL_STOP: c_int = 4;

struct Trace {
    frames: [usize; MAX_DEPTH],
    depth: usize,
    skip: usize,
}

extern "C" fn on_frame(ctx: *mut c_void, arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Trace` that `backtrace` passed, alive and
    // touched by nobody else during the walk.
    let t = unsafe { &mut *arg.cast::<Trace>() };
    // SAFETY: `ctx` is the unwinder's context for this frame.
    let ip = unsafe { _Unwind_GetIP(ctx) };
    if ip == 0 {
        return URC_NORMAL_STOP;
    }
    if t.skip > 0 {
        t.skip -= 1;
        return URC_NO_REASON;
    }
    t.frames[t.depth] = ip;
    t.depth += 1;
    if t.depth == MAX_DEPTH {
        URC_NORMAL_STOP
    } else {
        URC_NO_REASON
    }
}

/// The calling thread's stack, innermost first, this function's frame
/// left out: return addresses (each points just after its call).
#[inline(never)]
fn backtrace(t: &mut Trace) {
    t.depth = 0;
    t.skip = 1;
    // SAFETY: `on_frame` is a valid callback that never unwinds; `t`
    // outlives the walk.
    unsafe { _Unwind_Backtrace(on_frame, ptr::from_mut(t).cast()) };
}

// ---------------------------------------------------------------------------
// Tables

/// One unique stack and what its samples stand for.
#[repr(C)]
struct StackEntry {
    hash: u64,
    depth: u32,
    _pad: u32,
    live_bytes: u64,
    /// In 1/1024 allocations.
    live_count: u64,
    alloc_bytes: u64,
    /// In 1/1024 allocations.
    alloc_count: u64,
    live_samples: u64,
    alloc_samples: u64,
    frames: [usize; MAX_DEPTH],
}

/// One live sampled block (slot empty: `addr == 0`).
#[derive(Clone, Copy)]
#[repr(C)]
struct Sample {
    addr: usize,
    size: usize,
    bytes: u64,
    count: u64,
    stack: u32,
    large: u32,
}

const EMPTY: Sample = Sample {
    addr: 0,
    size: 0,
    bytes: 0,
    count: 0,
    stack: 0,
    large: 0,
};

struct State {
    /// `STACK_CAP` entries, the first `nstacks` in use; entry 0 is the
    /// stack-less entry of samples beyond the table.
    stacks: *mut StackEntry,
    nstacks: usize,
    /// `INDEX_CAP` slots: a stack's index plus one, 0 for none.
    index: *mut u32,
    samples: *mut Sample,
    /// Slots of `samples` (a power of two).
    cap: usize,
    live: usize,
    /// Samples not recorded (the live table could not grow).
    dropped: u64,
    small: DetachedSlabs,
}

fn addr_hash(addr: usize, cap: usize) -> usize {
    ((addr >> 4) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) as usize
        >> (usize::BITS - cap.trailing_zeros())
}

fn stack_hash(frames: &[usize]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &f in frames {
        h = (h ^ f as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 29)
}

impl State {
    /// The stack entry at `i`.
    ///
    /// # Safety
    /// `i < self.nstacks`.
    unsafe fn stack(&mut self, i: usize) -> &mut StackEntry {
        // SAFETY: the caller's contract; the table is ours (lock held).
        unsafe { &mut *self.stacks.add(i) }
    }

    /// The index of `frames`'s entry, made if new (entry 0 when the
    /// table is full).
    fn stack_id(&mut self, frames: &[usize]) -> usize {
        let h = stack_hash(frames);
        let mask = INDEX_CAP - 1;
        let mut i = h as usize & mask;
        loop {
            // SAFETY: i < INDEX_CAP; the index is ours (lock held).
            let slot = unsafe { &mut *self.index.add(i) };
            if *slot == 0 {
                if self.nstacks == STACK_CAP {
                    return 0;
                }
                let id = self.nstacks;
                self.nstacks += 1;
                // SAFETY: id < STACK_CAP: inside the table's mapping,
                // zeroed (never used).
                let e = unsafe { &mut *self.stacks.add(id) };
                e.hash = h;
                e.depth = frames.len() as u32;
                e.frames[..frames.len()].copy_from_slice(frames);
                *slot = id as u32 + 1;
                return id;
            }
            let id = *slot as usize - 1;
            // SAFETY: ids in the index are below `nstacks`.
            let e = unsafe { self.stack(id) };
            if e.hash == h && &e.frames[..e.depth as usize] == frames {
                return id;
            }
            i = (i + 1) & mask;
        }
    }

    fn slot(&self, i: usize) -> *mut Sample {
        debug_assert!(i < self.cap);
        // SAFETY: i < cap: inside the table's mapping.
        unsafe { self.samples.add(i) }
    }

    /// Inserts into the live table, which has room.
    fn insert(&mut self, s: Sample) {
        let mask = self.cap - 1;
        let mut i = addr_hash(s.addr, self.cap);
        // SAFETY: slots of our table (lock held).
        while unsafe { (*self.slot(i)).addr } != 0 {
            i = (i + 1) & mask;
        }
        // SAFETY: as above.
        unsafe { *self.slot(i) = s };
        self.live += 1;
    }

    /// Doubles the live table; false when it cannot.
    fn grow(&mut self) -> bool {
        let new_cap = self.cap * 2;
        if new_cap > SAMPLES_MAX {
            return false;
        }
        let Some(p) = os::map(new_cap * core::mem::size_of::<Sample>()) else {
            return false;
        };
        let (old, old_cap) = (self.samples, self.cap);
        self.samples = p.as_ptr().cast();
        self.cap = new_cap;
        self.live = 0;
        for i in 0..old_cap {
            // SAFETY: a slot of the old table, which nobody else reaches.
            let s = unsafe { *old.add(i) };
            if s.addr != 0 {
                self.insert(s);
            }
        }
        os::unmap(old.cast(), old_cap * core::mem::size_of::<Sample>());
        true
    }

    /// Records a sampled block of `size` bytes at `addr` with its stack.
    fn record(&mut self, addr: usize, size: usize, frames: &[usize], large: bool) {
        let (bytes, count) = weights(size);
        let stack = self.stack_id(frames);
        // SAFETY: stack < nstacks.
        let e = unsafe { self.stack(stack) };
        e.alloc_bytes += bytes;
        e.alloc_count += count;
        e.alloc_samples += 1;
        if 2 * (self.live + 1) > self.cap && !self.grow() {
            self.dropped += 1;
            return;
        }
        // SAFETY: as above.
        let e = unsafe { self.stack(stack) };
        e.live_bytes += bytes;
        e.live_count += count;
        e.live_samples += 1;
        self.insert(Sample {
            addr,
            size,
            bytes,
            count,
            stack: stack as u32,
            large: large as u32,
        });
    }

    /// Takes the sample at `addr` out of the live profile; true when there
    /// was one (and it was a large block's, in `large`).
    fn forget(&mut self, addr: usize) -> Option<bool> {
        let mask = self.cap - 1;
        let mut i = addr_hash(addr, self.cap);
        loop {
            // SAFETY: slots of our table (lock held).
            let s = unsafe { *self.slot(i) };
            if s.addr == 0 {
                return None;
            }
            if s.addr == addr {
                break;
            }
            i = (i + 1) & mask;
        }
        // SAFETY: as above.
        let s = unsafe { *self.slot(i) };
        // SAFETY: recorded stacks are below `nstacks`.
        let e = unsafe { self.stack(s.stack as usize) };
        e.live_bytes -= s.bytes;
        e.live_count -= s.count;
        e.live_samples -= 1;
        self.live -= 1;
        // Backward-shift deletion: later slots of the probe run move up
        // unless their home lies (cyclically) after the hole.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            // SAFETY: as above.
            let t = unsafe { *self.slot(j) };
            if t.addr == 0 {
                break;
            }
            let home = addr_hash(t.addr, self.cap);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                // SAFETY: as above.
                unsafe { *self.slot(hole) = t };
                hole = j;
            }
        }
        // SAFETY: as above.
        unsafe { *self.slot(hole) = EMPTY };
        Some(s.large != 0)
    }

    /// Takes the frees of sampled small blocks out of the live profile
    /// (their blocks become free on their detached slabs).
    fn collect_small(&mut self) {
        let mut small = core::mem::take(&mut self.small);
        small.collect(|p| {
            let _ = self.forget(p as usize);
        });
        self.small = small;
    }
}

/// [`State`] behind [`LOCK`].
struct Shared(UnsafeCell<State>);

// SAFETY: the state is touched only by the holder of `LOCK`.
unsafe impl Sync for Shared {}

static STATE: Shared = Shared(UnsafeCell::new(State {
    stacks: ptr::null_mut(),
    nstacks: 0,
    index: ptr::null_mut(),
    samples: ptr::null_mut(),
    cap: 0,
    live: 0,
    dropped: 0,
    small: DetachedSlabs::new(),
}));

/// A spin lock whose word is its holder's thread id, so that a signal
/// handler can tell that its own thread holds it (and not wait for
/// itself). Held briefly: a sample's record, or a profile being written.
struct ProfLock {
    holder: AtomicI32,
}

static LOCK: ProfLock = ProfLock {
    holder: AtomicI32::new(0),
};

fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions (async-signal-safe).
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The state, locked for the guard's life.
struct Guard {
    _private: (),
}

impl ProfLock {
    fn lock(&self) -> Guard {
        let me = thread_id();
        let mut spins = 0u32;
        while self
            .holder
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
        Guard { _private: () }
    }

    fn held_by_me(&self) -> bool {
        self.holder.load(Ordering::Relaxed) == thread_id()
    }
}

impl Guard {
    fn state(&mut self) -> &mut State {
        // SAFETY: the lock is held for the guard's life, and the guard is
        // borrowed mutably: this is the only reference to the state.
        unsafe { &mut *STATE.0.get() }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        LOCK.holder.store(0, Ordering::Release);
    }
}

/// Writes a profile that a signal asked for while this thread held the
/// lock (call with the lock released).
fn after_unlock() {
    if PENDING_DUMP.load(Ordering::Relaxed) && PENDING_DUMP.swap(false, Ordering::AcqRel) {
        dump_default();
    }
}

// ---------------------------------------------------------------------------
// Set-up

/// The fast cache's hooks.
#[cfg(feature = "fast-path")]
static SAMPLER: hakmem_fastcache::Sampler = hakmem_fastcache::Sampler {
    interval,
    take: take_small,
};

/// Sets the profiler up when `HAKMEM_PROF=1` (from the library's
/// constructor: allocations before it are not sampled).
pub(crate) fn init() {
    let o = crate::options::get();
    if !o.prof || enabled() {
        return;
    }
    if !SUPPORTED {
        hakmem_superslab::text::Line::new()
            .str("hakmem: HAKMEM_PROF=1 needs the box backend (feature box-refactor); not profiling\n")
            .write_stderr();
        return;
    }
    let stacks = os::map(STACK_CAP * core::mem::size_of::<StackEntry>());
    let index = os::map(INDEX_CAP * core::mem::size_of::<u32>());
    let samples = os::map(SAMPLES_START * core::mem::size_of::<Sample>());
    let (Some(stacks), Some(index), Some(samples)) = (stacks, index, samples) else {
        hakmem_superslab::text::Line::new()
            .str("hakmem: HAKMEM_PROF: no memory for the tables; not profiling\n")
            .write_stderr();
        return;
    };
    MEAN.store(o.prof_sample.max(1), Ordering::Relaxed);
    {
        let mut g = LOCK.lock();
        let st = g.state();
        st.stacks = stacks.as_ptr().cast();
        // Entry 0: samples of stacks beyond the table (no frames).
        st.nstacks = 1;
        st.index = index.as_ptr().cast();
        st.samples = samples.as_ptr().cast();
        st.cap = SAMPLES_START;
    }
    ACTIVE.store(true, Ordering::Release);
    #[cfg(feature = "fast-path")]
    hakmem_fastcache::set_sampler(&SAMPLER);
    if o.prof_signal {
        install_signal();
    }
}

fn install_signal() {
    // SAFETY: a zeroed sigaction is a valid value to fill in.
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = on_signal as extern "C" fn(c_int) as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: sigemptyset initialises the mask we own.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: installs a handler that only does async-signal-safe work
    // (atomics, open/write/close, no allocation) and never unwinds.
    unsafe { libc::sigaction(libc::SIGUSR2, &sa, ptr::null_mut()) };
}

extern "C" fn on_signal(_: c_int) {
    // SAFETY: this thread's errno slot; restored below.
    let saved = unsafe { *libc::__errno_location() };
    if LOCK.held_by_me() {
        // Interrupted inside the profiler: its thread writes the profile
        // as it lets go of the lock.
        PENDING_DUMP.store(true, Ordering::Release);
    } else {
        dump_default();
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// At exit (the library's destructor): the last profile.
pub(crate) fn at_exit() {
    if enabled() {
        dump_default();
    }
}

/// Before `fork`: takes the lock (so the child's copy is consistent).
pub(crate) fn prefork() {
    if enabled() {
        core::mem::forget(LOCK.lock());
    }
}

/// After `fork`, in the parent.
pub(crate) fn postfork_parent() {
    if enabled() {
        LOCK.holder.store(0, Ordering::Release);
    }
}

/// After `fork`, in the child (whose thread id differs).
pub(crate) fn postfork_child() {
    if enabled() {
        LOCK.holder.store(0, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------
// Sampling

/// A sampled block of `class` from a detached slab, its stack recorded;
/// null when this thread is inside the profiler already, or no slab can
/// be had (the allocation then goes unsampled). The fast cache's
/// `Sampler::take`.
pub(crate) fn take_small(class: usize) -> *mut u8 {
    if !enabled() {
        return ptr::null_mut();
    }
    let Some(_inside) = Inside::enter() else {
        return ptr::null_mut();
    };
    let mut t = Trace {
        frames: [0; MAX_DEPTH],
        depth: 0,
        skip: 0,
    };
    backtrace(&mut t);
    let size = class_size(class);
    let mut fresh: Option<DetachedSlab> = None;
    for _ in 0..3 {
        let mut g = LOCK.lock();
        let st = g.state();
        if let Some(s) = fresh.take() {
            st.small.add(s);
        }
        let mut p = st.small.take(class);
        if p.is_null() {
            // Blocks freed since come back first.
            st.collect_small();
            p = st.small.take(class);
        }
        if !p.is_null() {
            st.record(p as usize, size, &t.frames[..t.depth], false);
            let empty = st.small.take_empty();
            drop(g);
            if let Some(e) = empty {
                detached::release_detached_slab(e);
            }
            after_unlock();
            return p;
        }
        drop(g);
        after_unlock();
        match detached::new_detached_slab(class) {
            Ok(s) => fresh = Some(s),
            Err(_) => return ptr::null_mut(),
        }
    }
    if let Some(s) = fresh {
        detached::release_detached_slab(s);
    }
    ptr::null_mut()
}

/// A small block of `class` in builds without the fast cache, while
/// profiling: counted down here, sampled when it reaches the point.
#[cfg(not(feature = "fast-path"))]
#[cold]
pub(crate) fn small_alloc(class: usize) -> *mut u8 {
    use hakmem_tiny_box::SmallBackend;
    if SMALL_UNTIL.with(|u| count_down(u, class_size(class))) {
        let p = take_small(class);
        if !p.is_null() {
            return p;
        }
    }
    hakmem_tiny_box::SelectedBackend::alloc(class)
}

/// A large or huge block while profiling: counted down, and recorded when
/// it reaches the sample point.
#[cold]
pub(crate) fn large_alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let sampled = LARGE_UNTIL.with(|u| count_down(u, size));
    let p = crate::large::alloc(size, align, zeroed);
    if sampled && !p.is_null() {
        record_large(p, size);
    }
    p
}

#[inline(never)]
fn record_large(p: *mut u8, size: usize) {
    let Some(_inside) = Inside::enter() else {
        return;
    };
    let mut t = Trace {
        frames: [0; MAX_DEPTH],
        depth: 0,
        skip: 0,
    };
    backtrace(&mut t);
    {
        let mut g = LOCK.lock();
        g.state()
            .record(p as usize, size, &t.frames[..t.depth], true);
    }
    LARGE_LIVE.fetch_add(1, Ordering::Relaxed);
    after_unlock();
}

/// A large or huge block at `p` is being freed: out of the live profile
/// if it was sampled (looked up only while sampled large blocks live).
#[cold]
pub(crate) fn large_freed(p: *mut u8) {
    if LARGE_LIVE.load(Ordering::Relaxed) == 0 {
        return;
    }
    let was = {
        let mut g = LOCK.lock();
        g.state().forget(p as usize)
    };
    if was == Some(true) {
        LARGE_LIVE.fetch_sub(1, Ordering::Relaxed);
    }
    after_unlock();
}

// ---------------------------------------------------------------------------
// Writing profiles

/// Buffered writes to a file descriptor, from the stack.
struct Out {
    fd: c_int,
    buf: [u8; 4096],
    len: usize,
    ok: bool,
}

impl Out {
    fn new(fd: c_int) -> Self {
        Self {
            fd,
            buf: [0; 4096],
            len: 0,
            ok: true,
        }
    }

    fn flush(&mut self) {
        let mut done = 0;
        while done < self.len {
            // SAFETY: the buffer is valid for `len` bytes.
            let n = unsafe {
                libc::write(
                    self.fd,
                    self.buf[done..self.len].as_ptr().cast(),
                    self.len - done,
                )
            };
            if n < 0 {
                // SAFETY: this thread's errno.
                if unsafe { *libc::__errno_location() } == libc::EINTR {
                    continue;
                }
                self.ok = false;
                break;
            }
            if n == 0 {
                self.ok = false;
                break;
            }
            done += n as usize;
        }
        self.len = 0;
    }

    fn bytes(&mut self, mut b: &[u8]) -> &mut Self {
        while !b.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = b.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
        }
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    fn dec(&mut self, mut v: u64) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(&tmp[i..])
    }

    fn hex(&mut self, mut v: usize) -> &mut Self {
        let mut tmp = [0u8; 18];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b"0123456789abcdef"[v & 0xf];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        i -= 2;
        tmp[i] = b'0';
        tmp[i + 1] = b'x';
        self.bytes(&tmp[i..])
    }
}

/// Rounds 1/1024ths to whole allocations.
fn whole(count: u64) -> u64 {
    (count + 512) / 1024
}

/// Writes the profile (lock held, frees collected).
fn write_profile(st: &mut State, out: &mut Out, number: u64) {
    let mut tot = [0u64; 4];
    let mut used = 0u64;
    for i in 0..st.nstacks {
        // SAFETY: i < nstacks.
        let e = unsafe { st.stack(i) };
        if e.alloc_samples > 0 {
            used += 1;
            tot[0] += e.live_bytes;
            tot[1] += e.live_count;
            tot[2] += e.alloc_bytes;
            tot[3] += e.alloc_count;
        }
    }
    out.str(MAGIC).str("\n");
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    out.str("pid ").dec(pid).str("\n");
    out.str("build ").str(crate::BUILD_NAME).str("\n");
    out.str("sample_bytes ")
        .dec(MEAN.load(Ordering::Relaxed) as u64)
        .str("\n");
    out.str("max_depth ").dec(MAX_DEPTH as u64).str("\n");
    out.str("dump ").dec(number).str("\n");
    out.str("live_samples ").dec(st.live as u64).str("\n");
    out.str("dropped_samples ").dec(st.dropped).str("\n");
    out.str("live_bytes ").dec(tot[0]).str("\n");
    out.str("live_count ").dec(whole(tot[1])).str("\n");
    out.str("alloc_bytes ").dec(tot[2]).str("\n");
    out.str("alloc_count ").dec(whole(tot[3])).str("\n");
    out.str("stacks ").dec(used).str("\n");
    for i in 0..st.nstacks {
        // SAFETY: i < nstacks.
        let e = unsafe { st.stack(i) };
        if e.alloc_samples == 0 {
            continue;
        }
        out.dec(e.live_bytes)
            .str(" ")
            .dec(whole(e.live_count))
            .str(" ")
            .dec(e.alloc_bytes)
            .str(" ")
            .dec(whole(e.alloc_count))
            .str(" ")
            .dec(e.live_samples)
            .str(" ")
            .dec(e.alloc_samples)
            .str(" |");
        for &f in &e.frames[..e.depth as usize] {
            out.str(" ").hex(f);
        }
        out.str("\n");
    }
    out.str("maps\n");
    copy_maps(out);
    out.str("end\n");
    out.flush();
}

/// Appends `/proc/self/maps` as it is.
fn copy_maps(out: &mut Out) {
    // SAFETY: a NUL-terminated path; open has no other preconditions.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return;
    }
    let mut chunk = [0u8; 1024];
    let mut last = b'\n';
    loop {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 {
            // SAFETY: this thread's errno.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        out.bytes(&chunk[..n as usize]);
        last = chunk[n as usize - 1];
    }
    if last != b'\n' {
        out.str("\n");
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
}

/// Writes a profile to `path` (created or truncated); true when it was
/// written whole. False, writing nothing, when the profiler is off.
/// Safe to call from any thread while others allocate: they wait for the
/// lock while the profile is written, no sample is lost.
pub fn dump(path: &CStr) -> bool {
    if !enabled() {
        return false;
    }
    let number = DUMPS.fetch_add(1, Ordering::Relaxed);
    let ok = {
        let mut g = LOCK.lock();
        let st = g.state();
        st.collect_small();
        // SAFETY: a NUL-terminated path; open has no other preconditions.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            false
        } else {
            let mut out = Out::new(fd);
            write_profile(st, &mut out, number);
            // SAFETY: our descriptor.
            let closed = unsafe { libc::close(fd) } == 0;
            out.ok && closed
        }
    };
    after_unlock();
    ok
}

/// Writes a profile to the path `HAKMEM_PROF_FILE` gives (default
/// [`DEFAULT_FILE`]), `%p` replaced by the process id and `%n` by the
/// profile's number in the process (`%%`: a `%`); true when written.
pub fn dump_default() -> bool {
    if !enabled() {
        return false;
    }
    let pattern = match crate::options::get().prof_file {
        Some(p) => p.to_bytes(),
        None => DEFAULT_FILE.as_bytes(),
    };
    let number = DUMPS.load(Ordering::Relaxed);
    let mut path = [0u8; 4096];
    let Some(len) = expand(pattern, number, &mut path) else {
        return false;
    };
    let Ok(c) = CStr::from_bytes_with_nul(&path[..=len]) else {
        return false;
    };
    dump(c)
}

/// Expands a file pattern into `buf` (NUL-terminated); its length, or
/// None when it does not fit.
fn expand(pattern: &[u8], number: u64, buf: &mut [u8]) -> Option<usize> {
    let mut len = 0;
    let mut put = |b: &[u8], len: &mut usize| -> Option<()> {
        if *len + b.len() >= buf.len() || b.contains(&0) {
            return None;
        }
        buf[*len..*len + b.len()].copy_from_slice(b);
        *len += b.len();
        Some(())
    };
    let mut digits = [0u8; 20];
    let mut i = 0;
    while i < pattern.len() {
        let c = pattern[i];
        if c == b'%' && i + 1 < pattern.len() {
            let v = match pattern[i + 1] {
                // SAFETY: getpid has no preconditions.
                b'p' => Some(unsafe { libc::getpid() } as u64),
                b'n' => Some(number),
                _ => None,
            };
            match (v, pattern[i + 1]) {
                (Some(mut v), _) => {
                    let mut d = digits.len();
                    loop {
                        d -= 1;
                        digits[d] = b'0' + (v % 10) as u8;
                        v /= 10;
                        if v == 0 {
                            break;
                        }
                    }
                    put(&digits[d..], &mut len)?;
                }
                (None, b'%') => put(b"%", &mut len)?,
                (None, other) => put(&[b'%', other], &mut len)?,
            }
            i += 2;
            continue;
        }
        put(&[c], &mut len)?;
        i += 1;
    }
    buf[len] = 0;
    Some(len)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::{expand, sample_chance, stack_hash, weights, MEAN};
    use core::sync::atomic::Ordering;

    #[test]
    fn file_patterns_expand() {
        let mut buf = [0u8; 64];
        let n = expand(b"a.%n.%%.%x", 7, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"a.7.%.%x");
        let n = expand(b"/tmp/p%p", 0, &mut buf).unwrap();
        let want = std::format!("/tmp/p{}", std::process::id());
        assert_eq!(&buf[..n], want.as_bytes());
        assert!(expand(&[b'x'; 64], 0, &mut buf).is_none());
        assert_ne!(stack_hash(&[1, 2]), stack_hash(&[2, 1]));
    }

    #[test]
    fn weights_undo_the_sampling_chance() {
        MEAN.store(1 << 19, Ordering::Relaxed);
        // Small blocks stand for about one interval's bytes, blocks much
        // bigger than the interval for themselves.
        let (bytes, count) = weights(64);
        assert!(
            (bytes as f64 - (1 << 19) as f64 - 32.0).abs() < 2.0,
            "{bytes}"
        );
        assert!((count as f64 / 1024.0 - (1 << 19) as f64 / 64.0).abs() < 2.0);
        let (bytes, count) = weights(64 << 20);
        assert_eq!((bytes, count), (64 << 20, 1024));
        assert!((sample_chance(1 << 19) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
    }
}
