//! `churn SECONDS MIN_SIZE MAX_SIZE WINDOW`
//!
//! Single-thread churn: one thread keeps `WINDOW` live blocks and, round
//! robin, frees the oldest and allocates a new one of a random size in
//! `MIN_SIZE..=MAX_SIZE` (sizes drawn in advance, so the loop is malloc and
//! free alone). With `WINDOW` 1 it is malloc/free pairs. No other thread
//! runs: this is the allocator's hot path. One op is one free plus one
//! malloc.

use std::time::{Duration, Instant};

use hakmem_benches::args::Args;
use hakmem_benches::rng::Rng;
use hakmem_benches::{block, print_result};

/// Number of sizes drawn in advance (a power of two).
const SIZES: usize = 1 << 14;
/// Iterations between looks at the clock.
const CHECK_EVERY: u64 = 4096;

fn main() {
    let a = Args::parse("churn SECONDS MIN_SIZE MAX_SIZE WINDOW", 4);
    let seconds = a.get(0, "SECONDS", 1);
    let min_size = a.get_usize(1, "MIN_SIZE", 1);
    let max_size = a.get_usize(2, "MAX_SIZE", min_size);
    let window = a.get_usize(3, "WINDOW", 1);

    let mut rng = Rng::new(0x5eed);
    let sizes: Vec<usize> = (0..SIZES).map(|_| rng.range(min_size, max_size)).collect();
    let mut live: Vec<(*mut u8, usize)> = (0..window)
        .map(|i| (block::new(sizes[i % SIZES]), sizes[i % SIZES]))
        .collect();

    let deadline = Duration::from_secs(seconds);
    let start = Instant::now();
    let mut ops = 0u64;
    let mut slot = 0;
    loop {
        for _ in 0..CHECK_EVERY {
            let (p, s) = live[slot];
            // SAFETY: the slot holds a live block of size `s`, replaced now.
            unsafe { block::free(p, s) };
            let size = sizes[ops as usize % SIZES];
            live[slot] = (block::new(size), size);
            slot = if slot + 1 == window { 0 } else { slot + 1 };
            ops += 1;
        }
        if start.elapsed() >= deadline {
            break;
        }
    }
    let elapsed = start.elapsed();
    for (p, s) in live {
        // SAFETY: every slot holds a live block of its size.
        unsafe { block::free(p, s) };
    }
    print_result(
        "churn",
        ops,
        elapsed,
        &format!("sizes={min_size}..={max_size} window={window}"),
    );
}
