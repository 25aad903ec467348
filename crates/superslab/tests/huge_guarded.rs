//! Hardened builds (`--features secure`): a huge block ends at a guard
//! page, its slack is checked at free, and a freed mapping is quarantined
//! (inaccessible, not reused) for the next few huge frees; a block laid
//! out with room resizes in place and keeps ending at its guard. Probes that
//! must fault run in a child process (this binary re-executed).
#![cfg(feature = "secure")]

use std::process::Command;

use hakmem_superslab::{huge, lookup, Lookup};

const PROBE_ENV: &str = "HAKMEM_HUGE_PROBE";

/// The tests that allocate in this process take turns: the quarantine and
/// the cache are the process's, and one test's `release_cached` (or frees)
/// empties the quarantine under another's feet (a freed mapping then goes
/// back to the kernel, which may hand its address out again at once).
static IN_PROCESS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn in_process() -> std::sync::MutexGuard<'static, ()> {
    IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner())
}
const SIZE: usize = (3 << 20) + 100;

/// A block of SIZE bytes with room for twice that, resized in place to
/// `to` bytes and written to its new end.
fn resized(to: usize) -> *mut u8 {
    let b = huge::alloc_with_room(SIZE, 2 * SIZE, 16).unwrap().block;
    // SAFETY: live, ours.
    assert!(unsafe { huge::resize(b, to) }, "resized in place");
    // SAFETY: the block now has `to` bytes.
    unsafe { b.ptr().add(to - 1).write(1) };
    b.ptr()
}

fn probe(name: &str) {
    if let Some(to) = name
        .strip_prefix("resized-")
        .and_then(|n| n.split('-').next())
        .and_then(|n| n.parse::<usize>().ok())
    {
        let b = resized(to);
        println!("block ok");
        // SAFETY: each is deliberately out of the resized block.
        unsafe {
            if name.ends_with("-past-the-end-by-1") {
                b.add(to).write(1);
                let _ = huge::free(huge_ref(b));
            } else if name.ends_with("-past-its-last-page") {
                b.add(to + 4096).write(1);
            }
        }
        println!("survived");
        return;
    }
    let b = huge::alloc(SIZE, 16).unwrap().block.ptr();
    // SAFETY: the whole block is ours.
    unsafe {
        b.write(1);
        b.add(SIZE - 1).write(1);
    }
    println!("block ok");
    // SAFETY: each is deliberately out of the block, or after its free.
    unsafe {
        match name {
            "past-the-end-by-32" => b.add(SIZE + 32).write(1),
            "before-its-first-page" => b.sub(b as usize % 4096 + 1).write(1),
            "before-the-start-by-1" => {
                b.sub(1).write(1);
                let _ = huge::free(huge_ref(b));
            }
            "past-the-end-by-1" => {
                b.add(SIZE).write(1);
                let _ = huge::free(huge_ref(b));
            }
            "read-after-free" => {
                let _ = huge::free(huge_ref(b));
                std::hint::black_box(b.read_volatile());
            }
            other => panic!("unknown probe {other}"),
        }
    }
    println!("survived");
}

fn huge_ref(p: *mut u8) -> huge::HugeRef {
    match lookup(p) {
        Lookup::Huge(h) => h,
        other => panic!("{p:p} is {other:?}"),
    }
}

#[test]
fn child() {
    if let Ok(name) = std::env::var(PROBE_ENV) {
        probe(&name);
    }
}

fn stopped(name: &str) -> (Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(PROBE_ENV, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("block ok"), "{name}: {stdout}");
    assert!(!stdout.contains("survived"), "{name} was not stopped");
    (
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn overflow_and_underflow_past_the_page_fault() {
    for name in ["past-the-end-by-32", "before-its-first-page"] {
        assert_eq!(stopped(name).0, Some(libc::SIGSEGV), "{name}");
    }
}

#[test]
fn an_overflow_or_underflow_into_the_slack_is_reported_at_free() {
    for name in ["past-the-end-by-1", "before-the-start-by-1"] {
        let (signal, stderr) = stopped(name);
        assert_eq!(signal, Some(libc::SIGABRT), "{name}");
        assert!(
            stderr.contains("the slack of a huge block was overwritten"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn a_freed_block_is_inaccessible_while_quarantined() {
    assert_eq!(stopped("read-after-free").0, Some(libc::SIGSEGV));
}

#[test]
fn a_freed_mapping_is_not_reused_until_it_leaves_the_quarantine() {
    let _turn = in_process();
    let first = huge::alloc(SIZE, 16).unwrap().block;
    let p = first.ptr();
    // SAFETY: live, freed once.
    unsafe { huge::free(first) }.unwrap();
    assert!(
        !matches!(lookup(p), Lookup::Huge(_)),
        "a freed block is not live"
    );
    // Seven more frees of other blocks: the first still waits.
    for _ in 0..7 {
        let q = huge::alloc(SIZE, 16).unwrap().block;
        assert_ne!(q.ptr(), p, "reused while quarantined");
        // SAFETY: live, freed once.
        unsafe { huge::free(q) }.unwrap();
    }
    // The eighth pushes it out into the cache, where the next block of
    // its size finds it.
    let q = huge::alloc(SIZE, 16).unwrap().block;
    // SAFETY: live, freed once.
    unsafe { huge::free(q) }.unwrap();
    let again = huge::alloc(SIZE, 16).unwrap().block;
    let base = |x: *mut u8| x as usize & !(hakmem_superslab::CHUNK_SIZE - 1);
    assert_eq!(
        base(again.ptr()),
        base(p),
        "out of the quarantine, cached and reused"
    );
    // SAFETY: the reused block is live and writable to its end.
    unsafe { again.ptr().add(SIZE - 1).write(1) };
    // SAFETY: live, freed once.
    unsafe { huge::free(again) }.unwrap();
    huge::release_cached();
}

const GROWN: usize = SIZE + 10_000;
const SHRUNK: usize = SIZE - 10_000;

#[test]
fn a_block_with_room_resizes_in_place_keeping_its_bytes() {
    let _turn = in_process();
    let b = huge::alloc_with_room(SIZE, 2 * SIZE, 16).unwrap().block;
    let p = b.ptr();
    // SAFETY: the block's bytes are ours.
    unsafe { p.write_bytes(0x5a, SIZE) };
    for to in [GROWN, SHRUNK, 2 * SIZE, SIZE] {
        // SAFETY: live, ours.
        assert!(unsafe { huge::resize(b, to) }, "to {to}");
        assert_eq!(b.usable_size(), to);
        // SAFETY: the first SHRUNK bytes were kept; the block has `to`.
        unsafe {
            assert_eq!(p.read(), 0x5a);
            assert_eq!(p.add(SHRUNK - 1).read(), 0x5a);
            p.add(to - 1).write(0x5a);
        }
    }
    // SAFETY: live, ours.
    let past_its_room = unsafe { huge::resize(b, 2 * SIZE + 4096) };
    assert!(!past_its_room, "past its room");
    // SAFETY: live, ours.
    let wasting_over_half = unsafe { huge::resize(b, SIZE / 3) };
    assert!(!wasting_over_half, "wasting over half");
    // SAFETY: live, freed once: its slack checks out.
    unsafe { huge::free(b) }.unwrap();
    huge::release_cached();
}

#[test]
fn a_resized_block_still_ends_at_its_guard() {
    for to in [GROWN, SHRUNK] {
        let past_page = format!("resized-{to}-past-its-last-page");
        assert_eq!(stopped(&past_page).0, Some(libc::SIGSEGV), "{past_page}");
        let by_one = format!("resized-{to}-past-the-end-by-1");
        let (signal, stderr) = stopped(&by_one);
        assert_eq!(signal, Some(libc::SIGABRT), "{by_one}");
        assert!(
            stderr.contains("the slack of a huge block was overwritten"),
            "{by_one}: {stderr}"
        );
    }
}
