//! `larson SECONDS MIN_SIZE MAX_SIZE CHUNKS_PER_THREAD ROUNDS SEED THREADS`
//!
//! Larson's server simulation with the C original's seven arguments. The
//! original hakmem ran `larson 10 8 128 1024 1 12345 4`; the common
//! published form is `larson 5 8 1000 5000 100 4141 N`.

use hakmem_benches::args::Args;
use hakmem_benches::larson::{self, Config};

fn main() {
    let a = Args::parse(
        "larson SECONDS MIN_SIZE MAX_SIZE CHUNKS_PER_THREAD ROUNDS SEED THREADS",
        7,
    );
    let min_size = a.get_usize(1, "MIN_SIZE", 1);
    let config = Config {
        seconds: a.get(0, "SECONDS", 1),
        min_size,
        max_size: a.get_usize(2, "MAX_SIZE", min_size),
        chunks: a.get_usize(3, "CHUNKS_PER_THREAD", 1),
        rounds: a.get_usize(4, "ROUNDS", 1),
        seed: a.get(5, "SEED", 0),
        threads: a.get_usize(6, "THREADS", 1),
    };
    let outcome = larson::run(config);
    larson::report("larson", &outcome);
}
