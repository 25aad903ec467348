//! `fork` while other threads free remotely at full speed: a freer caught
//! between consuming a slab's NOTIFY and clearing BUSY does not exist in
//! the child, so the child's post-fork handler must finish its work. The
//! child allocates and frees in every small class, frees blocks the
//! parent's threads allocated, and then lets the forking thread exit, so
//! that its heap is abandoned: every slab of it is disarmed and waited for
//! (a stale BUSY, or a slab announced but never queued, hangs that). The
//! parent kills a child that does not finish in a few seconds and fails.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hakmem_tiny_box::{class_size, NUM_CLASSES};

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem;

const SLOTS: usize = 2048;
/// Forks a run (fewer in hardened builds, whose debug-build children
/// poison every block they free).
const FORKS: usize = if cfg!(feature = "secure") { 50 } else { 200 };
const FREERS: usize = 4;
/// Long enough for a slow child on a loaded 2-core machine; a hang (the
/// defect this test is about) never ends.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// Blocks the forking thread allocated, for the freers (and the child).
static MINE: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Blocks the freers allocated, for the forking thread (and the child).
static THEIRS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static STOP: AtomicBool = AtomicBool::new(false);

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Mostly the big classes (a few blocks a slab, so slabs fill, are armed
/// and get their NOTIFY consumed often), some small ones.
fn size_of_draw(r: u64) -> usize {
    let c = match r % 8 {
        0..=5 => NUM_CLASSES - 1 - (r >> 8) as usize % 12,
        _ => 1 + (r >> 8) as usize % (NUM_CLASSES - 1),
    };
    class_size(c)
}

fn malloc_touch(size: usize) -> usize {
    let p = hakmem::malloc(size);
    if p.is_null() {
        return 0;
    }
    // SAFETY: p is a live block of at least one byte.
    unsafe { p.write(0x5A) };
    p as usize
}

fn free(p: usize) {
    if p != 0 {
        // SAFETY: every slot holds a live hakmem block or 0, taken by swap.
        unsafe { hakmem::free(p as *mut u8) };
    }
}

fn freer(seed: u64) {
    let mut r = seed;
    while !STOP.load(Ordering::Relaxed) {
        for _ in 0..64 {
            let i = xorshift(&mut r) as usize % SLOTS;
            free(MINE[i].swap(0, Ordering::AcqRel));
        }
        let j = xorshift(&mut r) as usize % SLOTS;
        if THEIRS[j].load(Ordering::Relaxed) == 0 {
            let p = malloc_touch(size_of_draw(xorshift(&mut r)));
            free(THEIRS[j].swap(p, Ordering::AcqRel));
        }
    }
}

/// In the child: waits for the forking thread to be gone (its heap
/// abandoned), then ends the process.
extern "C" fn reaper(forker: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: the forker is a joinable thread nobody else joins here.
    let rc = unsafe { libc::pthread_join(forker as libc::pthread_t, ptr::null_mut()) };
    // SAFETY: ends the child without running the parent's exit handlers.
    unsafe { libc::_exit(if rc == 0 { 0 } else { 3 }) }
}

/// The child's work, on the forking thread (the child's only thread).
fn child() {
    for slot in MINE.iter().chain(THEIRS.iter()) {
        free(slot.swap(0, Ordering::Relaxed));
    }
    hakmem::trim();
    static HELD: [AtomicUsize; 4096] = [const { AtomicUsize::new(0) }; 4096];
    for class in 1..NUM_CLASSES {
        let size = class_size(class);
        let n = (65536 / size).clamp(8, HELD.len());
        for slot in &HELD[..n] {
            let p = malloc_touch(size);
            if p == 0 {
                // SAFETY: async-signal-safe.
                unsafe { libc::_exit(4) };
            }
            slot.store(p, Ordering::Relaxed);
        }
        for slot in &HELD[..n] {
            free(slot.swap(0, Ordering::Relaxed));
        }
    }
    let mut t: libc::pthread_t = 0;
    // SAFETY: pthread_self has no preconditions; the reaper gets our id.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: a valid out-pointer and a start routine that never returns.
    if unsafe { libc::pthread_create(&mut t, ptr::null(), reaper, me as *mut libc::c_void) } != 0 {
        // SAFETY: async-signal-safe.
        unsafe { libc::_exit(5) };
    }
}

enum Outcome {
    Parent(Result<usize, String>),
    Child,
}

fn wait_child(pid: libc::pid_t) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: pid is our child; status a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                return Ok(());
            }
            return Err(format!("child exited with status {status:#x}"));
        }
        if r < 0 {
            return Err("waitpid failed".into());
        }
        if start.elapsed() > CHILD_TIMEOUT {
            // SAFETY: pid is our child, still running.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return Err(format!("child hung for {CHILD_TIMEOUT:?} and was killed"));
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn forker() -> Outcome {
    let mut r = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..FORKS {
        // A burst: refill every empty slot (the slabs fill and are armed
        // while the freers free into them), return the freers' blocks.
        for _ in 0..4 {
            for (mine, theirs) in MINE.iter().zip(THEIRS.iter()) {
                if mine.load(Ordering::Relaxed) == 0 {
                    let p = malloc_touch(size_of_draw(xorshift(&mut r)));
                    free(mine.swap(p, Ordering::AcqRel));
                }
                free(theirs.swap(0, Ordering::AcqRel));
            }
        }
        // SAFETY: the child runs only hakmem, libc and plain atomics.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            child();
            return Outcome::Child;
        }
        if pid < 0 {
            return Outcome::Parent(Err("fork failed".into()));
        }
        if let Err(e) = wait_child(pid) {
            return Outcome::Parent(Err(format!("fork {round}: {e}")));
        }
    }
    Outcome::Parent(Ok(FORKS))
}

#[test]
fn fork_during_remote_frees_leaves_the_child_consistent() {
    hakmem::init();
    let freers: Vec<_> = (0..FREERS as u64)
        .map(|i| thread::spawn(move || freer(0x1234_5678 + i * 7919)))
        .collect();
    let outcome = thread::spawn(forker).join().expect("forker");
    let result = match outcome {
        Outcome::Parent(r) => r,
        // The child's forker thread returns here only to exit; the reaper
        // ends the child. Never reached in the child's test thread, which
        // does not exist there.
        Outcome::Child => return,
    };
    STOP.store(true, Ordering::Relaxed);
    for f in freers {
        f.join().expect("freer");
    }
    for slot in MINE.iter().chain(THEIRS.iter()) {
        free(slot.swap(0, Ordering::Relaxed));
    }
    assert_eq!(result, Ok(FORKS));
}
