//! `thread-churn SECONDS MIN_SIZE MAX_SIZE CHUNKS_PER_THREAD SEED THREADS`
//!
//! Larson with one round per thread: each thread does `CHUNKS_PER_THREAD`
//! free/malloc pairs, then hands its array to a new thread. Thread start,
//! thread exit (the allocator's per-thread teardown) and cross-thread
//! frees dominate. This is the shape of the original hakmem's command
//! (`larson 10 8 128 1024 1 12345 4`).

use hakmem_benches::args::Args;
use hakmem_benches::larson::{self, Config};

fn main() {
    let a = Args::parse(
        "thread-churn SECONDS MIN_SIZE MAX_SIZE CHUNKS_PER_THREAD SEED THREADS",
        6,
    );
    let min_size = a.get_usize(1, "MIN_SIZE", 1);
    let config = Config {
        seconds: a.get(0, "SECONDS", 1),
        min_size,
        max_size: a.get_usize(2, "MAX_SIZE", min_size),
        chunks: a.get_usize(3, "CHUNKS_PER_THREAD", 1),
        rounds: 1,
        seed: a.get(4, "SEED", 0),
        threads: a.get_usize(5, "THREADS", 1),
    };
    let outcome = larson::run(config);
    larson::report("thread-churn", &outcome);
}
