//! What `cargo xtask bench` knows about: the allocators (with the cargo
//! features that select them in `hakmem-benches`) and the workloads (with
//! their default arguments).

/// One allocator of the comparison.
pub struct Allocator {
    /// Its name in tables and JSON.
    pub name: &'static str,
    /// The `hakmem-benches` features that select it (none: the system's).
    pub features: &'static str,
}

/// Every allocator, in table order: hakmem's four toggle combinations, its
/// hardened build (to keep the cost of `secure` in view), then the
/// references, mimalloc's own hardened build (`MI_SECURE`) among them so
/// the two hardened builds' costs are measured side by side.
pub const ALLOCATORS: [Allocator; 9] = [
    Allocator {
        name: "hakmem+box-refactor+fast-path",
        features: "alloc-hakmem,box-refactor,fast-path",
    },
    Allocator {
        name: "hakmem+box-refactor",
        features: "alloc-hakmem,box-refactor",
    },
    Allocator {
        name: "hakmem+fast-path",
        features: "alloc-hakmem,fast-path",
    },
    Allocator {
        name: "hakmem",
        features: "alloc-hakmem",
    },
    Allocator {
        name: "hakmem+box-refactor+fast-path+secure",
        features: "alloc-hakmem,box-refactor,fast-path,secure",
    },
    Allocator {
        name: "system",
        features: "",
    },
    Allocator {
        name: "mimalloc",
        features: "alloc-mimalloc",
    },
    Allocator {
        name: "mimalloc+secure",
        features: "alloc-mimalloc,mimalloc-secure",
    },
    Allocator {
        name: "jemalloc",
        features: "alloc-jemalloc",
    },
];

/// The original's "Fix #1": the box path alone. Ratios are taken against it.
pub const BASELINE: &str = "hakmem+box-refactor";
/// The original's "Fix #2": the fast path refilling through the box path.
pub const FAST_PATH: &str = "hakmem+box-refactor+fast-path";
/// The reference allocator of the second ratio column.
pub const REFERENCE: &str = "mimalloc";
/// The speed-up the original's fast path promised (20-40%); at or above
/// the low end, its decision rule says ship.
pub const SHIP_RATIO: f64 = 1.2;

/// Seconds per run when `--seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 2;

/// One workload: a binary of `hakmem-benches` and how to call it.
pub struct Workload {
    /// Its name in tables, JSON and the copied binary's name.
    pub name: &'static str,
    /// The `hakmem-benches` binary that runs it.
    pub binary: &'static str,
    /// One line on what it measures.
    pub what: &'static str,
    /// The arguments for `seconds` and an optional thread count.
    pub args: fn(u64, Option<usize>) -> Vec<String>,
}

fn strings(v: &[&dyn ToString]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The suite, in table order.
pub const WORKLOADS: [Workload; 7] = [
    Workload {
        name: "larson",
        binary: "larson",
        what: "Larson server simulation, 100 rounds per thread: malloc/free across threads",
        args: |s, t| strings(&[&s, &8, &128, &1024, &100, &12345, &t.unwrap_or(4)]),
    },
    Workload {
        name: "larson-published",
        binary: "larson",
        what:
            "Larson in its published form (8-1000 B, 5000 blocks a thread, 100 rounds, 2 threads)",
        args: |s, t| strings(&[&s, &8, &1000, &5000, &100, &4141, &t.unwrap_or(2)]),
    },
    Workload {
        name: "thread-churn",
        binary: "thread-churn",
        what: "Larson with 1 round per thread (the original's command shape): thread start/exit",
        args: |s, t| strings(&[&s, &8, &128, &1024, &12345, &t.unwrap_or(4)]),
    },
    Workload {
        name: "prodcons",
        binary: "prodcons",
        what: "64 B blocks allocated on one thread, freed on another (batches of 256)",
        args: |s, t| strings(&[&s, &64, &256, &t.map_or(1, |t| (t / 2).max(1))]),
    },
    Workload {
        name: "false-sharing",
        binary: "false-sharing",
        what: "threads allocating 8 B objects and writing each 100 times",
        args: |s, t| strings(&[&s, &8, &t.unwrap_or(2), &100]),
    },
    Workload {
        name: "churn",
        binary: "churn",
        what: "one thread, malloc/free of 8-256 B in a window of 16: the hot path",
        args: |s, _| strings(&[&s, &8, &256, &16]),
    },
    Workload {
        name: "mixed",
        binary: "mixed",
        what: "small, 2% large (64 KiB-1 MiB), 0.2% huge (2-16 MiB), 20% realloc",
        args: |s, t| strings(&[&s, &t.unwrap_or(2), &1000, &20, &2, &20]),
    },
];

/// The workloads run when `--workload` is not given.
pub const DEFAULT_WORKLOADS: &str = "larson,thread-churn";

/// Resolves a comma-separated list against `items` by `name`; `all` picks
/// every item.
pub fn select<'a, T>(
    list: &str,
    items: &'a [T],
    name: impl Fn(&T) -> &str,
) -> Result<Vec<&'a T>, String> {
    if list.trim() == "all" {
        return Ok(items.iter().collect());
    }
    let mut out: Vec<&T> = Vec::new();
    for want in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match items.iter().find(|i| name(i) == want) {
            Some(i) if !out.iter().any(|o| name(o) == want) => out.push(i),
            Some(_) => {}
            None => {
                let known: Vec<&str> = items.iter().map(&name).collect();
                return Err(format!(
                    "unknown name {want:?}; known: {} (or all)",
                    known.join(", ")
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("the list is empty".into());
    }
    Ok(out)
}
