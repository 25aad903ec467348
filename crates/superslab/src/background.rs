//! The purge thread (option `HAKMEM_BACKGROUND_PURGE=1`): decay passes
//! that run while the program makes no call into the allocator.
//!
//! Without it, decay passes ([`crate::pool::decay`]) run on the
//! allocator's own slow paths, so what the retention rules keep after a
//! burst (free slabs under the dirty cap, empty regions kept for reuse,
//! cached huge mappings) stays resident for as long as the program makes
//! no further call. With it, one thread of hakmem's own runs the passes,
//! one purge delay apart, and the slow paths run none (they only wake the
//! thread): what a burst left goes back within two purge delays whatever
//! the program does next.
//!
//! ## The thread's life
//! - **Lazy.** No thread until memory is left for decay to return (a slab
//!   or run given back resident, a huge mapping cached) in a process that
//!   has used the allocator for at least one purge delay; a program that
//!   runs for less, or never gives anything back, never has one.
//! - **Created at a safe point only.** The wish to start is recorded where
//!   memory is given back, deep in the layers; the thread is created by
//!   [`start_if_wanted`], which the layers above call where no lock of
//!   hakmem's is held and their state is whole, because `pthread_create`
//!   allocates (glibc's `calloc` of the new thread's TLS vector, which
//!   under `LD_PRELOAD` is hakmem's).
//! - **Idle when nothing is left.** After a pass that left nothing to
//!   return the thread waits on a futex without a timeout, and the next
//!   slab given back wakes it. Slabs of exited threads that still have
//!   blocks out are looked at again at growing intervals (up to 64 purge
//!   delays) in case their blocks come back.
//! - **Never a lock across a sleep.** A pass holds `PASS` (and, inside
//!   it, the pool's and the huge cache's locks, each briefly); every wait
//!   is outside all of them.
//! - **Quiet.** It blocks every signal (no handler of the program's runs
//!   on it), is named `hakmem-purge`, is detached, and has a 256 KiB stack.
//! - **Fork.** A pass runs under `PASS`, which the `fork` handlers take
//!   first, so no pass is cut in half by a fork; the child has no thread
//!   ([`postfork_child`] forgets it) and starts its own lazily.
//! - **Fails softly.** If `pthread_create` fails (a seccomp filter that
//!   answers `clone` with an error, a thread limit), the process goes on
//!   as without the option, and never tries again.
//!
//! ## What the thread can return, and what it cannot
//! It returns what no thread owns: the pool's free slabs and empty
//! regions, the huge cache (and in hardened builds the huge quarantine's
//! pages), and through the hook of the layer above ([`set_sweep`]) the
//! slabs of exited threads whose blocks have all come back. It never
//! touches a live thread's own caches or slabs (their fields belong to
//! their owner, without atomics): blocks a sleeping thread keeps in its
//! fast cache, and the slabs they keep, stay until that thread's next slow
//! path (docs/OPTIONS.md says how much that is).

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::lock::RawLock;
use crate::stats::{self, COUNTERS};
use crate::{huge, os, pool};

/// No thread, and none wanted yet.
const NONE: u32 = 0;
/// Memory is left to return: the next safe point starts the thread.
const WANTED: u32 = 1;
/// A caller won [`WANTED`] and is creating the thread.
const STARTING: u32 = 2;
/// The thread runs passes one purge delay apart.
const TIMED: u32 = 3;
/// The thread waits on [`STATE`] for memory to return (with a timeout
/// only while exited threads' slabs might still come back).
const IDLE: u32 = 4;
/// Creating it failed: passes run on the slow paths, as without the
/// option, for the rest of the process.
const FAILED: u32 = 5;

/// Where the thread stands; also the futex word it waits on when idle.
static STATE: AtomicU32 = AtomicU32::new(NONE);

/// Held for the whole of a pass of the thread, never across a wait; the
/// `fork` handlers take it before every other lock of hakmem's, so that a
/// fork never copies a pass half done (slabs hidden for a purge, regions
/// taken off the lists to unmap).
static PASS: RawLock = RawLock::new();

/// The layer above's sweep ([`set_sweep`]), as an address; 0 for none.
static SWEEP: AtomicUsize = AtomicUsize::new(0);

/// When the first decay pass ran (coarse ms); 0 before it.
static FIRST_PASS_MS: AtomicU64 = AtomicU64::new(0);

/// The thread's stack.
const STACK_BYTES: usize = 256 << 10;
/// The longest wait for exited threads' slabs to come back, in purge
/// delays.
const MAX_BACKOFF: u64 = 64;

/// Registers the layer above's share of a pass: a function that gives back
/// what any thread may give back there (tiny-box: the slabs of exited
/// threads whose blocks have all come back) and answers whether something
/// it looked at may still come back later. It runs on the purge thread,
/// with no lock held; it must not allocate.
pub fn set_sweep(f: fn() -> bool) {
    SWEEP.store(f as usize, Ordering::Release);
}

/// True while a purge thread exists (or is being created): the slow paths
/// then run no decay pass of their own.
#[inline]
pub(crate) fn running() -> bool {
    matches!(STATE.load(Ordering::Relaxed), STARTING | TIMED | IDLE)
}

/// True while a purge thread exists in this process (or is being
/// created): for statistics and tests.
pub fn thread_exists() -> bool {
    running()
}

/// Notes the time of the process's first decay pass (the pool's `decay`).
pub(crate) fn first_pass(now: u64) {
    let _ = FIRST_PASS_MS.compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed);
}

/// Memory was just left for decay to return (a slab or run given back
/// without a purge, a huge mapping cached): wakes an idle thread; with the
/// option on and the allocator in use for a purge delay already, asks for
/// one to be started at the next safe point. Called on the pool's and the
/// huge cache's slow paths, after their lock is released.
pub(crate) fn note_pending() {
    match STATE.load(Ordering::Relaxed) {
        NONE => {
            let o = crate::options::get();
            if !o.background_purge || o.purge_delay_ms == 0 {
                return;
            }
            let first = FIRST_PASS_MS.load(Ordering::Relaxed);
            if first != 0 && os::now_ms() >= first + o.purge_delay_ms as u64 {
                let _ = STATE.compare_exchange(NONE, WANTED, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        IDLE => wake(),
        _ => {}
    }
}

/// Moves an idle thread back to timed passes and wakes it.
#[cold]
fn wake() {
    // The thread stored IDLE before it looked (under the pool's and the
    // huge cache's locks) for memory to return, and this caller left
    // memory under one of those locks before it read IDLE: of the two,
    // one sees the other (see `wait_idle`).
    if STATE
        .compare_exchange(IDLE, TIMED, Ordering::SeqCst, Ordering::Relaxed)
        .is_ok()
    {
        futex_wake(&STATE);
    }
}

/// Starts the purge thread if one is wanted. Call only where a `malloc`
/// on the calling thread could run safely: no lock of hakmem's held, and
/// every structure of the caller's layer (and of the layers above it on
/// the stack) whole. One load when no thread is wanted.
#[inline]
pub fn start_if_wanted() {
    if STATE.load(Ordering::Relaxed) == WANTED {
        start();
    }
}

#[cold]
#[inline(never)]
fn start() {
    if STATE
        .compare_exchange(WANTED, STARTING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    if spawn() {
        stats::add(&COUNTERS.purge_threads, 1);
        // Only the creator leaves STARTING (the thread cannot go idle
        // before this store: its move to IDLE expects TIMED).
        STATE.store(TIMED, Ordering::Release);
    } else {
        stats::add(&COUNTERS.purge_thread_failures, 1);
        STATE.store(FAILED, Ordering::Release);
    }
}

/// Creates the thread, every signal blocked in it; false when refused.
fn spawn() -> bool {
    // SAFETY: sigset_t and pthread_attr_t are plain C data that their init
    // functions below fill in; all-zero is a valid starting value.
    let (mut all, mut old, mut attr) = unsafe {
        (
            core::mem::zeroed::<libc::sigset_t>(),
            core::mem::zeroed::<libc::sigset_t>(),
            core::mem::zeroed::<libc::pthread_attr_t>(),
        )
    };
    // SAFETY: the pointers are to the locals above; these calls only write
    // them (and the calling thread's signal mask, restored below).
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let mut created = false;
    // Our small stack first; a process whose static TLS does not fit in
    // it (glibc puts TLS on the stack) gets the default size instead.
    for stack in [STACK_BYTES, 0] {
        // SAFETY: `attr` is initialised before use and destroyed after;
        // `purge_main` is an `extern "C"` function that never returns nor
        // unwinds, and takes no argument.
        let rc = unsafe {
            if libc::pthread_attr_init(&mut attr) != 0 {
                break;
            }
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            if stack != 0 {
                libc::pthread_attr_setstacksize(&mut attr, stack);
            }
            let mut tid: libc::pthread_t = 0;
            let rc = libc::pthread_create(&mut tid, &attr, purge_main, ptr::null_mut());
            libc::pthread_attr_destroy(&mut attr);
            rc
        };
        if rc == 0 {
            created = true;
            break;
        }
        if rc != libc::EINVAL {
            break;
        }
    }
    // SAFETY: restores the calling thread's own mask, saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
    created
}

/// The purge delay the thread works with (at least 1 ms).
fn delay_ms() -> u64 {
    (crate::options::get().purge_delay_ms as u64).max(1)
}

extern "C" fn purge_main(_: *mut c_void) -> *mut c_void {
    // SAFETY: PR_SET_NAME copies a NUL-terminated name of at most 16 bytes
    // into the calling thread's own task.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"hakmem-purge".as_ptr()) };
    let mut backoff = 1;
    loop {
        let left = pass();
        let delay = delay_ms();
        if left.decay {
            backoff = 1;
            sleep_ms(delay);
            continue;
        }
        // Nothing the next pass would give back. Exited threads' slabs
        // with blocks out may still come back: look again later, at
        // growing intervals; else wait to be woken.
        let timeout = left.swept.then(|| {
            let t = backoff * delay;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            t
        });
        if wait_idle(timeout, delay) {
            backoff = 1;
        }
    }
}

/// What a pass leaves for later.
struct Left {
    /// Free slabs, empty regions or huge mappings the next passes return.
    decay: bool,
    /// Slabs of exited threads with blocks out, which may come back.
    swept: bool,
}

/// One pass of the thread: the layer above's sweep first (what it gives
/// back ages in the pool like any free slab), then the huge cache and the
/// pool, all of the pool's regions in batches.
fn pass() -> Left {
    PASS.lock();
    let sweep = SWEEP.load(Ordering::Acquire);
    let swept = sweep != 0 && {
        // SAFETY: a nonzero value is the address of a `fn() -> bool`
        // stored by `set_sweep`.
        let f = unsafe { core::mem::transmute::<usize, fn() -> bool>(sweep) };
        f()
    };
    let huge_left = huge::decay(true);
    let pool_left = pool::purge_aged(true);
    PASS.unlock();
    stats::add(&COUNTERS.purge_passes, 1);
    Left {
        decay: huge_left || pool_left,
        swept,
    }
}

/// Waits in [`IDLE`] until memory is given back (true) or `timeout` ms
/// pass (false); `None`: no timeout.
fn wait_idle(timeout: Option<u64>, delay: u64) -> bool {
    if STATE
        .compare_exchange(TIMED, IDLE, Ordering::SeqCst, Ordering::Relaxed)
        .is_err()
    {
        // Still STARTING: the creator has not stored TIMED yet.
        sleep_ms(delay);
        return false;
    }
    // Memory given back between the pass and the store above was given
    // back by a caller that read TIMED and woke no one: it is seen here
    // (its lock was released before we take it).
    if pool::has_pending() || huge::has_pending() {
        let _ = STATE.compare_exchange(IDLE, TIMED, Ordering::SeqCst, Ordering::Relaxed);
        return true;
    }
    let deadline = timeout.map(|t| os::now_ms() + t);
    loop {
        if STATE.load(Ordering::SeqCst) != IDLE {
            // A waker moved it to TIMED.
            return true;
        }
        let rest = match deadline {
            None => None,
            Some(d) => {
                let now = os::now_ms();
                if now >= d {
                    break;
                }
                Some(d - now)
            }
        };
        futex_wait(&STATE, IDLE, rest);
    }
    // Timed out: back to timed passes, unless a waker did it just now
    // (then it counts as woken).
    STATE
        .compare_exchange(IDLE, TIMED, Ordering::SeqCst, Ordering::Relaxed)
        .is_err()
}

/// Sleeps `ms` milliseconds on the monotonic clock, holding nothing.
fn sleep_ms(ms: u64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let nsec = ts.tv_nsec as u64 + (ms % 1000) * 1_000_000;
    ts.tv_sec += (ms / 1000 + nsec / 1_000_000_000) as libc::time_t;
    ts.tv_nsec = (nsec % 1_000_000_000) as _;
    // An absolute deadline: a wake-up early (a signal cannot come, all
    // are blocked) sleeps the rest.
    // SAFETY: clock_nanosleep reads the timespec; no remainder is asked
    // for with TIMER_ABSTIME.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

fn futex_wait(word: &AtomicU32, expected: u32, timeout_ms: Option<u64>) {
    let ts = timeout_ms.map(|ms| libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as _,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT reads the u32 behind a valid pointer and sleeps
    // only while it still equals `expected`; the timeout, when given, is a
    // valid relative timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts_ptr,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// Takes `PASS` before `fork` (first of hakmem's locks: a pass takes the
/// others inside it).
pub fn prefork() {
    PASS.lock();
}

/// Releases `PASS` in the parent after `fork`.
pub fn postfork_parent() {
    PASS.unlock();
}

/// In the child after `fork`: there is no purge thread here. The child
/// starts its own when memory is next left to return (unless starting one
/// failed before the fork: then never).
pub fn postfork_child() {
    PASS.reset_after_fork();
    let s = STATE.load(Ordering::Relaxed);
    if matches!(s, STARTING | TIMED | IDLE) {
        STATE.store(NONE, Ordering::Relaxed);
    }
}
