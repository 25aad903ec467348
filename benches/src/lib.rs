//! # hakmem-benches: the workload suite
//!
//! Small benchmark binaries (`src/bin/`), each built once per allocator by
//! `cargo xtask bench`: the allocator is chosen by a cargo feature (see
//! [`global`]) because `#[global_allocator]` is fixed per binary. Every
//! binary takes positional arguments, runs for a given number of seconds
//! and prints one line holding `<N> ops/s`, which the xtask reads.
//!
//! | binary | what it measures |
//! |---|---|
//! | `larson` | Larson's server simulation: random free/malloc in per-thread arrays handed from thread to thread |
//! | `thread-churn` | Larson with one round per thread: thread start and exit dominate |
//! | `prodcons` | blocks allocated on one thread and freed on another |
//! | `false-sharing` | threads allocating small objects and writing them hard |
//! | `churn` | single-thread malloc/free of mixed small sizes: the hot path alone |
//! | `mixed` | mixed small, large (64 KiB-1 MiB) and huge (2-16 MiB) blocks with `realloc` |
//!
//! Nothing here runs during `cargo test`: the library has no tests that
//! start the workloads, and the binaries only run when started.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod args;
pub mod block;
pub mod global;
pub mod larson;
pub mod rng;
pub mod threads;

pub use global::ALLOCATOR;

/// Prints the result line every binary ends with: the workload, the
/// allocator, `<N> ops/s`, any extra `key=value` figures and the process's
/// peak RSS so far (`peak_rss_kib=`, its `VmHWM`, when Linux gives it).
pub fn print_result(workload: &str, ops: u64, elapsed: std::time::Duration, extra: &str) {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { ops as f64 / secs } else { 0.0 };
    let peak = peak_rss_kib().map_or(String::new(), |k| format!(", peak_rss_kib={k}"));
    println!(
        "{workload}: {}: {rate:.0} ops/s ({ops} ops in {secs:.3} s){}{extra}{peak}",
        ALLOCATOR,
        if extra.is_empty() { "" } else { ", " }
    );
}

/// This process's peak resident set in KiB (`VmHWM` of
/// `/proc/self/status`). Unlike the `ru_maxrss` a parent reads with
/// `wait4`, it starts from zero at `exec`, so it holds no trace of the
/// process that started the benchmark.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
