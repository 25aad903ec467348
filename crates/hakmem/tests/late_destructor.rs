//! Allocations from a program's own pthread-key destructors that run after
//! tiny-box's thread-exit hook: glibc runs key destructors in up to four
//! rounds (`PTHREAD_DESTRUCTOR_ITERATIONS`), and a destructor that re-arms
//! its key runs again in every round, after ours. Whatever such a late
//! allocation takes must not stay with the dead thread: over thousands of
//! threads the heaps created and the bytes mapped stay flat.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem;

/// glibc's `PTHREAD_DESTRUCTOR_ITERATIONS`.
const ROUNDS: usize = 4;

/// Our key plus one (0: not created yet).
static KEY: AtomicUsize = AtomicUsize::new(0);
/// Destructor calls, all threads together.
static CALLS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Rounds of our destructor this thread has run.
    static ROUND: Cell<usize> = const { Cell::new(0) };
    /// The block kept from one round to the next.
    static KEPT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
}

fn key() -> libc::pthread_key_t {
    (KEY.load(Ordering::Acquire) - 1) as libc::pthread_key_t
}

fn touch(p: *mut u8, size: usize) {
    assert!(!p.is_null(), "hakmem gave null");
    // SAFETY: p is a live block of at least `size` bytes.
    unsafe { ptr::write_bytes(p, 0xA5, size) };
}

/// Every round: frees the block kept from the round before, allocates and
/// frees a few blocks, keeps one (except in the last round) and re-arms
/// the key so that it runs again in the next round.
extern "C" fn late(_: *mut libc::c_void) {
    CALLS.fetch_add(1, Ordering::Relaxed);
    let round = ROUND.with(|r| {
        r.set(r.get() + 1);
        r.get()
    });
    let kept = KEPT.with(|k| k.replace(ptr::null_mut()));
    if !kept.is_null() {
        // SAFETY: the block kept last round, freed once.
        unsafe { hakmem::free(kept) };
    }
    for size in [24, 100, 700, 3000] {
        let p = hakmem::malloc(size);
        touch(p, size);
        // SAFETY: a live block of ours, freed once.
        unsafe { hakmem::free(p) };
    }
    if round < ROUNDS {
        let p = hakmem::malloc(200);
        touch(p, 200);
        KEPT.with(|k| k.set(p));
    }
    // SAFETY: the key exists; any non-null value makes the destructor run.
    unsafe { libc::pthread_setspecific(key(), ptr::dangling::<u8>().cast()) };
}

fn create_key() {
    let mut k: libc::pthread_key_t = 0;
    // SAFETY: a valid out-pointer and a destructor that never unwinds.
    assert_eq!(unsafe { libc::pthread_key_create(&mut k, Some(late)) }, 0);
    KEY.store(k as usize + 1, Ordering::Release);
}

fn one_thread(i: usize) {
    // A little work of the thread's own, then our key armed.
    let size = 16 + i % 512;
    let p = hakmem::malloc(size);
    touch(p, size);
    // SAFETY: a live block of ours, freed once.
    unsafe { hakmem::free(p) };
    // SAFETY: the key exists; the value is never dereferenced.
    unsafe { libc::pthread_setspecific(key(), ptr::dangling::<u8>().cast()) };
}

fn run_threads(n: usize, first: usize) {
    const AT_ONCE: usize = 4;
    let mut i = first;
    while i < first + n {
        let batch: Vec<_> = (i..(i + AT_ONCE).min(first + n))
            .map(|j| thread::spawn(move || one_thread(j)))
            .collect();
        for t in batch {
            t.join().expect("thread");
        }
        i += AT_ONCE;
    }
}

#[test]
fn late_destructor_allocations_leave_no_heap_behind() {
    hakmem::init();
    create_key();
    // Warm up: the pool of heaps and the slabs settle.
    run_threads(500, 0);
    let calls_before = CALLS.load(Ordering::Relaxed);
    let before = hakmem::stats();
    const THREADS: usize = 10_000;
    const STEP: usize = 1_000;
    for step in 0..THREADS / STEP {
        run_threads(STEP, 500 + step * STEP);
        let now = hakmem::stats();
        let heaps = now.tiny_box.heaps_created - before.tiny_box.heaps_created;
        let mapped = now
            .superslab
            .mapped_bytes
            .saturating_sub(before.superslab.mapped_bytes);
        assert!(
            heaps <= 16,
            "{heaps} heaps created over {} threads whose destructors allocate late",
            (step + 1) * STEP
        );
        assert!(
            mapped <= 8 << 20,
            "{} KiB more mapped over {} threads whose destructors allocate late",
            mapped >> 10,
            (step + 1) * STEP
        );
    }
    // Every thread ran our destructor in every round glibc gives.
    assert_eq!(
        CALLS.load(Ordering::Relaxed) - calls_before,
        THREADS * ROUNDS
    );
}
