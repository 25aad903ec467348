//! `mixed SECONDS THREADS SLOTS LARGE_PERMILLE HUGE_PERMILLE REALLOC_PERCENT`
//!
//! Mixed sizes: each thread keeps `SLOTS` live blocks and replaces random
//! ones. A new size is huge (2-16 MiB) with probability
//! `HUGE_PERMILLE`/1000, large (64 KiB-1 MiB) with `LARGE_PERMILLE`/1000,
//! else small (8 B-2 KiB). `REALLOC_PERCENT` of the replacements resize the
//! old block with `realloc` instead of freeing it and allocating anew. The
//! first and last byte of every block are written. One op is one
//! replacement.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hakmem_benches::args::Args;
use hakmem_benches::rng::Rng;
use hakmem_benches::{block, print_result, threads};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

#[derive(Clone, Copy)]
struct Mix {
    large_permille: usize,
    huge_permille: usize,
    realloc_percent: usize,
}

fn draw_size(rng: &mut Rng, mix: Mix) -> usize {
    let r = rng.below(1000);
    if r < mix.huge_permille {
        rng.range(2 * MIB, 16 * MIB)
    } else if r < mix.huge_permille + mix.large_permille {
        rng.range(64 * KIB, MIB)
    } else {
        rng.range(8, 2 * KIB)
    }
}

fn work(seed: u64, slots: usize, mix: Mix, stop: &AtomicBool) -> u64 {
    let mut rng = Rng::new(seed);
    let mut live: Vec<(*mut u8, usize)> = (0..slots)
        .map(|_| {
            let s = draw_size(&mut rng, mix);
            (block::new(s), s)
        })
        .collect();
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let i = rng.below(slots);
        let (p, old) = live[i];
        let size = draw_size(&mut rng, mix);
        live[i] = if rng.below(100) < mix.realloc_percent {
            // SAFETY: slot `i` holds a live block of `old` bytes, given up.
            (unsafe { block::resize(p, old, size) }, size)
        } else {
            // SAFETY: as above; the slot is refilled right away.
            unsafe { block::free(p, old) };
            (block::new(size), size)
        };
        ops += 1;
    }
    for (p, s) in live {
        // SAFETY: every slot holds a live block of its size.
        unsafe { block::free(p, s) };
    }
    ops
}

fn main() {
    let a = Args::parse(
        "mixed SECONDS THREADS SLOTS LARGE_PERMILLE HUGE_PERMILLE REALLOC_PERCENT",
        6,
    );
    let seconds = a.get(0, "SECONDS", 1);
    let nthreads = a.get_usize(1, "THREADS", 1);
    let slots = a.get_usize(2, "SLOTS", 1);
    let mix = Mix {
        large_permille: a.get_usize(3, "LARGE_PERMILLE", 0),
        huge_permille: a.get_usize(4, "HUGE_PERMILLE", 0),
        realloc_percent: a.get_usize(5, "REALLOC_PERCENT", 0).min(100),
    };
    if mix.large_permille + mix.huge_permille > 1000 {
        eprintln!("error: LARGE_PERMILLE + HUGE_PERMILLE must be at most 1000");
        std::process::exit(2);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..nthreads)
        .map(|t| {
            let (stop, ops) = (Arc::clone(&stop), Arc::clone(&ops));
            threads::spawn(move || {
                ops.fetch_add(work(t as u64 + 1, slots, mix, &stop), Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        threads::join(h);
    }
    print_result(
        "mixed",
        ops.load(Ordering::SeqCst),
        start.elapsed(),
        &format!(
            "threads={nthreads} slots={slots} large={}‰ huge={}‰ realloc={}%",
            mix.large_permille, mix.huge_permille, mix.realloc_percent
        ),
    );
}
