//! Thread churn soak: memory stays flat however many threads come and go.
//!
//! Four chains of short-lived threads: each thread frees the blocks the
//! previous one handed it (remote frees into slabs of an exited thread),
//! allocates its own, frees some, hands the rest on and exits. hakmem is
//! the global allocator of this whole binary, so the process RSS is
//! hakmem's doing. RSS and hakmem's mapped bytes are sampled after 10 s and
//! at the end; both must differ by under 10%.
//!
//! Long: `#[ignore]`d, run by `cargo xtask soak` (default 60 s; set
//! `HAKMEM_SOAK_SECONDS` to change). Its figures go in docs/RELIABILITY.md.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

fn link(seed: u64, incoming: Vec<Box<[u8]>>) -> Vec<Box<[u8]>> {
    for b in &incoming {
        assert!(
            b.iter().all(|&x| x == b[0]),
            "a handed-over block was corrupted"
        );
    }
    drop(incoming);
    let mut s = seed | 1;
    let mut mine: Vec<Box<[u8]>> = (0..64)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let len = 1 + (s % 1500) as usize;
            vec![(s >> 40) as u8; len].into_boxed_slice()
        })
        .collect();
    mine.truncate(40);
    mine
}

#[test]
#[ignore = "long: run by `cargo xtask soak`"]
fn thread_churn_keeps_memory_flat() {
    let seconds: u64 = std::env::var("HAKMEM_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
        .max(12);
    let stop = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let chains: Vec<_> = (0..4u64)
        .map(|c| {
            let (stop, churned) = (Arc::clone(&stop), Arc::clone(&churned));
            thread::spawn(move || {
                let mut handed = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let seed = c << 48 | n;
                    handed = thread::spawn(move || link(seed, handed)).join().unwrap();
                    churned.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    thread::sleep(Duration::from_secs(10));
    let (rss_10, mapped_10) = (resident_bytes(), hakmem::stats().superslab.mapped_bytes);
    let threads_10 = churned.load(Ordering::Relaxed);
    thread::sleep(Duration::from_secs(seconds - 10));
    let (rss_end, mapped_end) = (resident_bytes(), hakmem::stats().superslab.mapped_bytes);
    stop.store(true, Ordering::Relaxed);
    for c in chains {
        c.join().unwrap();
    }
    let threads = churned.load(Ordering::Relaxed);
    let s = hakmem::stats();
    println!(
        "soak: {threads} threads churned in {:.0} s ({threads_10} in the first 10 s); \
         RSS {} KiB at 10 s, {} KiB at the end ({:+.1}%); hakmem mapped {} KiB at 10 s, \
         {} KiB at the end; peak mapped {} KiB; heaps created {}; slabs abandoned {}, adopted {}",
        start.elapsed().as_secs_f64(),
        rss_10 >> 10,
        rss_end >> 10,
        (rss_end as f64 / rss_10 as f64 - 1.0) * 100.0,
        mapped_10 >> 10,
        mapped_end >> 10,
        s.superslab.peak_mapped_bytes >> 10,
        s.tiny_box.heaps_created,
        s.tiny_box.slabs_abandoned,
        s.tiny_box.slabs_adopted,
    );
    assert!(threads > 10_000, "too few threads churned to mean anything");
    assert!(rss_end * 10 <= rss_10 * 11, "RSS grew by 10% or more");
    assert!(
        mapped_end * 10 <= mapped_10 * 11,
        "mapped memory grew by 10% or more"
    );
}
