//! The purge thread (`HAKMEM_BACKGROUND_PURGE=1`) in every build of the
//! facade (the four toggle combinations and the hardened build; the
//! preload crate's `background_purge` test runs the same scenario as a C
//! program under `LD_PRELOAD`).
//!
//! A child process allocates 512 MiB with `hakmem::malloc` on one thread
//! (small, large and huge blocks, every byte written), frees it all and
//! then only sleeps, reading its RSS from `/proc/self/statm`: with the
//! option on it is back within a few MiB of what it was before the first
//! allocation within two purge delays, and one thread more runs; with it
//! off, no thread is added. (The test's own bookkeeping allocates with the
//! system allocator: hakmem is not its global allocator.)

use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "HAKMEM_IDLE_CHILD";
const DELAY_MS: u64 = 100;
/// "Within a few MiB".
const BOUND: usize = 4 << 20;
/// Scheduling slack on a loaded machine, beyond two purge delays.
const SLACK_MS: u64 = 150;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * hakmem::page_size()
}

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line[8..].trim().parse().unwrap()
}

/// Allocates `bytes` in blocks of `size`, chained through their first
/// word, every byte written; returns the chain's head.
fn allocate(bytes: usize, size: usize, mut chain: *mut u8) -> *mut u8 {
    for _ in 0..bytes / size {
        let p = hakmem::malloc(size);
        assert!(!p.is_null());
        // SAFETY: a live block of `size` bytes (at least a pointer's).
        unsafe {
            std::ptr::write_bytes(p, 0x5a, size);
            p.cast::<*mut u8>().write(chain);
        }
        chain = p;
    }
    chain
}

/// The child: the burst, then only sleep, sampling. Prints
/// `before=B freed=F back_ms=T last=L threads_before=N threads=M`.
#[test]
fn idle_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let threads_before = threads();
    let before = resident_bytes();
    // Huge blocks first, so that they are freed last.
    let mut chain = allocate(64 << 20, 4 << 20, std::ptr::null_mut());
    chain = allocate(192 << 20, 256 << 10, chain);
    chain = allocate(256 << 20, 64, chain);
    let peak = resident_bytes();
    while !chain.is_null() {
        // SAFETY: every block of the chain is live; its first word links on.
        let next = unsafe { chain.cast::<*mut u8>().read() };
        // SAFETY: live, freed once.
        unsafe { hakmem::free(chain) };
        chain = next;
    }
    let freed = resident_bytes();
    let start = Instant::now();
    let mut back_ms = None;
    let mut last = freed;
    while start.elapsed() < Duration::from_millis(4 * DELAY_MS + 200) {
        std::thread::sleep(Duration::from_millis(10));
        last = resident_bytes();
        if back_ms.is_none() && last <= before + BOUND {
            back_ms = Some(start.elapsed().as_millis() as u64);
        }
    }
    println!(
        "before={before} peak={peak} freed={freed} back_ms={} last={last} \
         threads_before={threads_before} threads={}",
        back_ms.map_or(-1, |t| t as i64),
        threads()
    );
}

fn run_child(purge: bool) -> Vec<(String, i64)> {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "idle_child",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_ENV, "1")
    .env("HAKMEM_PURGE_DELAY_MS", DELAY_MS.to_string())
    .env_remove("HAKMEM_BACKGROUND_PURGE");
    if purge {
        cmd.env("HAKMEM_BACKGROUND_PURGE", "1");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // (After libtest's `test idle_child ... `.)
    let line = stdout
        .lines()
        .find_map(|l| l.find("before=").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no figures: {stdout}"));
    eprintln!("{} (option {}): {line}", hakmem::BUILD_NAME, purge as u8);
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

fn get(f: &[(String, i64)], name: &str) -> i64 {
    f.iter().find(|(k, _)| k == name).unwrap().1
}

/// Both cases in one test: the children time themselves, one at a time.
#[test]
fn an_idle_process_gives_its_memory_back_with_the_option_and_has_no_thread_without() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let on = run_child(true);
    let back = get(&on, "back_ms");
    assert!(
        get(&on, "peak") >= get(&on, "before") + (400 << 20),
        "the burst was smaller than meant: {on:?}"
    );
    assert!(
        (0..=(2 * DELAY_MS + SLACK_MS) as i64).contains(&back),
        "RSS not back within {} KiB in two purge delays: {on:?}",
        BOUND >> 10
    );
    assert!(
        get(&on, "last") <= get(&on, "before") + BOUND as i64,
        "{on:?}"
    );
    assert_eq!(
        get(&on, "threads"),
        get(&on, "threads_before") + 1,
        "the purge thread: {on:?}"
    );
    let off = run_child(false);
    assert_eq!(
        get(&off, "threads"),
        get(&off, "threads_before"),
        "a thread without the option: {off:?}"
    );
}
