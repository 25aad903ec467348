//! Out of memory: the original's failure. A child process under
//! `RLIMIT_AS` allocates blocks of every size class, large and huge, from
//! several threads until allocation fails. Every failure must be a null
//! return, never a crash, abort or hang; then half is freed, allocation
//! succeeds again, every surviving block keeps its contents, and everything
//! is freed. The test binary re-executes itself with `HAKMEM_OOM_CHILD` set.

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;

const CHILD_ENV: &str = "HAKMEM_OOM_CHILD";
const THREADS: usize = 4;
/// Address space allowed beyond what the child has mapped when it starts.
const HEADROOM: u64 = 384 << 20;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn draw_size(r: u64) -> usize {
    match r % 20 {
        0 => (1 << 20) + (r as usize >> 8) % (7 << 20),
        1..=3 => 16385 + (r as usize >> 8) % (1 << 20),
        _ => 1 + (r as usize >> 8) % 16384,
    }
}

fn mapped_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

#[derive(Clone, Copy)]
struct Blk(usize, usize, u8);

fn fill(b: Blk) {
    // SAFETY: ours, b.1 bytes. Ends and a stride keep the test fast while
    // still touching (and so committing) every page.
    unsafe {
        let p = b.0 as *mut u8;
        let mut i = 0;
        while i < b.1 {
            *p.add(i) = b.2;
            i += 509;
        }
        *p.add(b.1 - 1) = b.2;
    }
}

fn check(b: Blk) -> bool {
    // SAFETY: filled by `fill`.
    unsafe {
        let p = b.0 as *const u8;
        let mut i = 0;
        while i < b.1 {
            if *p.add(i) != b.2 {
                return false;
            }
            i += 509;
        }
        *p.add(b.1 - 1) == b.2
    }
}

/// One thread's part: fill memory until allocation keeps failing.
fn exhaust(seed: u64, out: &mut Vec<Blk>) -> (usize, usize) {
    let mut s = seed;
    let (mut ok, mut failed, mut failed_in_a_row) = (0, 0, 0);
    while failed_in_a_row < 200 && out.len() < out.capacity() {
        let r = xorshift(&mut s);
        // After the first failures, insist on small sizes too: the fast
        // path must give null when its refill fails.
        let size = if failed > 0 && r.is_multiple_of(2) {
            1 + r as usize % 512
        } else {
            draw_size(r)
        };
        let p = hakmem::malloc(size);
        if p.is_null() {
            failed += 1;
            failed_in_a_row += 1;
            continue;
        }
        failed_in_a_row = 0;
        ok += 1;
        let b = Blk(p as usize, size, (r >> 32) as u8);
        fill(b);
        out.push(b);
    }
    (ok, failed)
}

fn child() {
    // Touch hakmem before lowering the limit so its one-time reservations
    // (the registry) are made, and reserve all bookkeeping up front: the
    // test's own Vecs come from the system allocator, which will fail too.
    // SAFETY: a live block, freed once.
    unsafe { hakmem::free(hakmem::malloc(1)) };
    // `start` includes the main thread, which lowers the limit first;
    // `phase` is the workers' alone.
    let start = Arc::new(Barrier::new(THREADS + 1));
    let phase = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (start, phase) = (Arc::clone(&start), Arc::clone(&phase));
            let mut blocks: Vec<Blk> = Vec::with_capacity(400_000);
            thread::spawn(move || {
                start.wait();
                let (ok, failed) = exhaust(t as u64 * 7 + 1, &mut blocks);
                phase.wait(); // everyone is out of memory now
                              // Free every other block, then allocate again.
                let mut kept = Vec::with_capacity(blocks.len());
                for (i, b) in blocks.drain(..).enumerate() {
                    assert!(check(b), "block corrupted before free");
                    if i % 2 == 0 {
                        // SAFETY: live, freed once.
                        unsafe { hakmem::free(b.0 as *mut u8) };
                    } else {
                        kept.push(b);
                    }
                }
                phase.wait();
                let mut again = Vec::with_capacity(400_000);
                let (ok_again, _) = exhaust(t as u64 * 13 + 5, &mut again);
                for b in kept.iter().chain(again.iter()) {
                    assert!(check(*b), "surviving block corrupted");
                    // SAFETY: live, freed once.
                    unsafe { hakmem::free(b.0 as *mut u8) };
                }
                (ok, failed, ok_again)
            })
        })
        .collect();
    let limit = mapped_bytes() + HEADROOM;
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit on this process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    start.wait();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    hakmem::trim();
    let s = hakmem::stats();
    let (ok, failed, again): (usize, usize, usize) = results
        .iter()
        .fold((0, 0, 0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
    println!(
        "oom-child {} ok={ok} failed={failed} again={again} oom={} live-slabs={} live-huge={}",
        hakmem::BUILD_NAME,
        s.out_of_memory,
        s.superslab.slabs_in_use,
        s.superslab.huge_in_use
    );
}

#[test]
fn out_of_memory_gives_null_and_recovers() {
    if std::env::var(CHILD_ENV).is_ok() {
        return child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "out_of_memory_gives_null_and_recovers",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child died: {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split("oom-child ").nth(1))
        .unwrap_or_else(|| panic!("no report: {stdout}\n{stderr}"));
    let field = |name: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(field("ok") > 1000, "{line}");
    assert!(field("failed") >= THREADS, "memory never ran out: {line}");
    assert!(
        field("again") > 0,
        "nothing could be allocated after freeing half: {line}"
    );
    assert!(field("oom") >= field("failed"), "{line}");
    assert_eq!(field("live-slabs"), 0, "{line}");
    assert_eq!(field("live-huge"), 0, "{line}");
    eprintln!("{line}");
}
