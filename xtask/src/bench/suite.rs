//! What `cargo xtask bench` knows about: the workloads (with their default
//! arguments) in two sets, and the allocators of each set.
//!
//! - The Rust set: the binaries of `hakmem-benches`, built once per
//!   allocator; the allocators are cargo features selecting the global
//!   allocator ([`ALLOCATORS`]).
//! - The C set: the C and C++ programs of `benches/c`, compiled once with
//!   `cc`/`c++` and run under `LD_PRELOAD` with each allocator's shared
//!   library ([`PRELOADS`]; glibc's `malloc` is the one without).

/// The two sets of workloads, each with its own allocators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Set {
    /// `hakmem-benches`, one binary per allocator.
    Rust,
    /// `benches/c`, one binary, the allocator preloaded.
    C,
}

impl Set {
    /// Its name in `--workload` and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Set::Rust => "rust",
            Set::C => "c",
        }
    }
}

/// One allocator of the Rust set.
pub struct Allocator {
    /// Its name in tables and JSON.
    pub name: &'static str,
    /// The `hakmem-benches` features that select it (none: the system's).
    pub features: &'static str,
    /// Environment its runs get (options of the same build).
    pub env: &'static [(&'static str, &'static str)],
}

/// Every allocator, in table order: hakmem's four toggle combinations, the
/// default one with the purge thread (`HAKMEM_BACKGROUND_PURGE=1`, the same
/// binary: what the option costs or saves under load), its hardened build
/// (to keep the cost of `secure` in view), then the references, mimalloc's
/// own hardened build (`MI_SECURE`) among them so the two hardened builds'
/// costs are measured side by side.
pub const ALLOCATORS: [Allocator; 10] = [
    Allocator {
        name: "hakmem+box-refactor+fast-path",
        features: "alloc-hakmem,box-refactor,fast-path",
        env: &[],
    },
    Allocator {
        name: "hakmem+box-refactor",
        features: "alloc-hakmem,box-refactor",
        env: &[],
    },
    Allocator {
        name: "hakmem+fast-path",
        features: "alloc-hakmem,fast-path",
        env: &[],
    },
    Allocator {
        name: "hakmem",
        features: "alloc-hakmem",
        env: &[],
    },
    Allocator {
        name: "hakmem+box-refactor+fast-path+bg-purge",
        features: "alloc-hakmem,box-refactor,fast-path",
        env: &[("HAKMEM_BACKGROUND_PURGE", "1")],
    },
    Allocator {
        name: "hakmem+box-refactor+fast-path+secure",
        features: "alloc-hakmem,box-refactor,fast-path,secure",
        env: &[],
    },
    Allocator {
        name: "system",
        features: "",
        env: &[],
    },
    Allocator {
        name: "mimalloc",
        features: "alloc-mimalloc",
        env: &[],
    },
    Allocator {
        name: "mimalloc+secure",
        features: "alloc-mimalloc,mimalloc-secure",
        env: &[],
    },
    Allocator {
        name: "jemalloc",
        features: "alloc-jemalloc",
        env: &[],
    },
];

/// Where the shared library of a C-set allocator comes from.
pub enum Library {
    /// None: glibc's `malloc`, no `LD_PRELOAD`.
    Glibc,
    /// libhakmem.so, `cargo build --release -p hakmem-preload` with these
    /// extra features (none: the default ones).
    Hakmem {
        /// `--features` beyond the defaults (empty for none).
        features: &'static str,
        /// The `build=` name its `hakmem: stats:` lines must show.
        build: &'static str,
    },
    /// mimalloc built from the sources `libmimalloc-sys` ships (the ones
    /// the Rust set's `mimalloc` runs), as a shared library that overrides
    /// `malloc`.
    MimallocCrate,
    /// jemalloc built from the sources `tikv-jemalloc-sys` ships (the Rust
    /// set's `jemalloc`), as a shared library without a symbol prefix.
    JemallocCrate,
    /// A library installed by a Debian package, used when present.
    Installed {
        /// Its path.
        path: &'static str,
        /// The Debian package that installs it.
        package: &'static str,
    },
}

/// One allocator of the C set.
pub struct Preload {
    /// Its name in tables and JSON.
    pub name: &'static str,
    /// Where its library comes from.
    pub library: Library,
}

/// Debian's copy of jemalloc, also the fallback when the crate's sources
/// cannot be built.
pub const DEBIAN_JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// Every allocator of the C set, in table order: hakmem (the baseline), its
/// hardened build, the libraries of the Rust set's peers, glibc, then
/// Debian's packaged allocators.
pub const PRELOADS: [Preload; 8] = [
    Preload {
        name: "hakmem",
        library: Library::Hakmem {
            features: "",
            build: "hakmem+box-refactor+fast-path",
        },
    },
    Preload {
        name: "hakmem+secure",
        library: Library::Hakmem {
            features: "hakmem-preload/secure",
            build: "hakmem+box-refactor+fast-path+secure",
        },
    },
    Preload {
        name: "mimalloc",
        library: Library::MimallocCrate,
    },
    Preload {
        name: "jemalloc",
        library: Library::JemallocCrate,
    },
    Preload {
        name: "glibc",
        library: Library::Glibc,
    },
    Preload {
        name: "mimalloc-debian",
        library: Library::Installed {
            path: "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
            package: "libmimalloc2.0",
        },
    },
    Preload {
        name: "jemalloc-debian",
        library: Library::Installed {
            path: DEBIAN_JEMALLOC,
            package: "libjemalloc2",
        },
    },
    Preload {
        name: "tcmalloc-debian",
        library: Library::Installed {
            path: "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
            package: "libtcmalloc-minimal4",
        },
    },
];

/// The original's "Fix #1": the box path alone. Ratios of the Rust set are
/// taken against it.
pub const BASELINE: &str = "hakmem+box-refactor";
/// The original's "Fix #2": the fast path refilling through the box path.
pub const FAST_PATH: &str = "hakmem+box-refactor+fast-path";
/// The reference allocator of the second ratio column (both sets).
pub const REFERENCE: &str = "mimalloc";
/// The allocator the C set's first ratio column is taken against:
/// libhakmem.so with its default features.
pub const C_BASELINE: &str = "hakmem";
/// The speed-up the original's fast path promised (20-40%); at or above
/// the low end, its decision rule says ship.
pub const SHIP_RATIO: f64 = 1.2;

/// Seconds per run when `--seconds` is not given.
pub const DEFAULT_SECONDS: u64 = 2;

/// The program a workload runs.
pub enum Program {
    /// A binary of `hakmem-benches`, built per allocator.
    Rust(&'static str),
    /// A program of `benches/c`, compiled once and run under `LD_PRELOAD`.
    C {
        /// The binary's name (under `<target>/bench/c/`).
        binary: &'static str,
        /// Its source in `benches/c`; `.cpp` is compiled as C++17.
        source: &'static str,
        /// Compiler flags beyond the common ones.
        flags: &'static [&'static str],
    },
}

/// One workload: a program and how to call it.
pub struct Workload {
    /// Its name in tables, JSON and (Rust set) the copied binary's name.
    pub name: &'static str,
    /// The program that runs it.
    pub program: Program,
    /// One line on what it measures.
    pub what: &'static str,
    /// The arguments for `seconds` and an optional thread count.
    pub args: fn(u64, Option<usize>) -> Vec<String>,
}

impl Workload {
    /// The set it belongs to.
    pub fn set(&self) -> Set {
        match self.program {
            Program::Rust(_) => Set::Rust,
            Program::C { .. } => Set::C,
        }
    }
}

fn strings(v: &[&dyn ToString]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The common flags of the C programs: optimised, threaded, and without
/// the compiler's knowledge of `malloc` and friends, so that no pair of
/// calls is folded away.
pub const C_FLAGS: [&str; 9] = [
    "-O2",
    "-std=gnu11",
    "-pthread",
    "-Wall",
    "-Wextra",
    "-fno-builtin-malloc",
    "-fno-builtin-free",
    "-fno-builtin-calloc",
    "-fno-builtin-realloc",
];
/// The common flags of the C++ programs.
pub const CXX_FLAGS: [&str; 5] = ["-O2", "-std=c++17", "-pthread", "-Wall", "-Wextra"];

/// Every workload, the Rust set first, in table order.
pub const WORKLOADS: [Workload; 17] = [
    Workload {
        name: "larson",
        program: Program::Rust("larson"),
        what: "Larson server simulation, 100 rounds per thread: malloc/free across threads",
        args: |s, t| strings(&[&s, &8, &128, &1024, &100, &12345, &t.unwrap_or(4)]),
    },
    Workload {
        name: "larson-published",
        program: Program::Rust("larson"),
        what:
            "Larson in its published form (8-1000 B, 5000 blocks a thread, 100 rounds, 2 threads)",
        args: |s, t| strings(&[&s, &8, &1000, &5000, &100, &4141, &t.unwrap_or(2)]),
    },
    Workload {
        name: "thread-churn",
        program: Program::Rust("thread-churn"),
        what: "Larson with 1 round per thread (the original's command shape): thread start/exit",
        args: |s, t| strings(&[&s, &8, &128, &1024, &12345, &t.unwrap_or(4)]),
    },
    Workload {
        name: "prodcons",
        program: Program::Rust("prodcons"),
        what: "64 B blocks allocated on one thread, freed on another (batches of 256)",
        args: |s, t| strings(&[&s, &64, &256, &t.map_or(1, |t| (t / 2).max(1))]),
    },
    Workload {
        name: "false-sharing",
        program: Program::Rust("false-sharing"),
        what: "threads allocating 8 B objects and writing each 100 times",
        args: |s, t| strings(&[&s, &8, &t.unwrap_or(2), &100]),
    },
    Workload {
        name: "churn",
        program: Program::Rust("churn"),
        what: "one thread, malloc/free of 8-256 B in a window of 16: the hot path",
        args: |s, _| strings(&[&s, &8, &256, &16]),
    },
    Workload {
        name: "mixed",
        program: Program::Rust("mixed"),
        what: "small, 2% large (64 KiB-1 MiB), 0.2% huge (2-16 MiB), 20% realloc",
        args: |s, t| strings(&[&s, &t.unwrap_or(2), &1000, &20, &2, &20]),
    },
    Workload {
        name: "json",
        program: Program::Rust("json"),
        what: "serde_json: ~350 KB documents serialised, parsed (Value, structs), transformed, dropped; ops = JSON bytes",
        args: |s, t| strings(&[&s, &t.unwrap_or(2), &500]),
    },
    Workload {
        name: "collections",
        program: Program::Rust("collections"),
        what: "std HashMap/BTreeMap/Vec/HashSet/VecDeque, 30000 entries built, queried, dropped (50% on another thread)",
        args: |s, t| strings(&[&s, &t.unwrap_or(2), &30000, &50]),
    },
    Workload {
        name: "c-hot",
        program: Program::C {
            binary: "c-hot",
            source: "c-hot.c",
            flags: &[],
        },
        what: "C, one thread: malloc/free of 8-256 B in a window of 16, the hot path",
        args: |s, _| strings(&[&s, &1, &8, &256, &16]),
    },
    Workload {
        name: "c-hot-mt",
        program: Program::C {
            binary: "c-hot",
            source: "c-hot.c",
            flags: &[],
        },
        what: "C, the hot path in every thread at once (threads share nothing)",
        args: |s, t| strings(&[&s, &t.unwrap_or(4), &8, &256, &16]),
    },
    Workload {
        name: "cxx-larson",
        program: Program::C {
            binary: "cxx-larson",
            source: "cxx-larson.cpp",
            flags: &["-fno-sized-deallocation"],
        },
        what: "C++ Larson through operator new / delete(void*) (-fno-sized-deallocation)",
        args: |s, t| strings(&[&s, &8, &128, &1024, &100, &12345, &t.unwrap_or(4)]),
    },
    Workload {
        name: "cxx-larson-sized",
        program: Program::C {
            binary: "cxx-larson-sized",
            source: "cxx-larson.cpp",
            flags: &["-fsized-deallocation"],
        },
        what: "C++ Larson through operator new / delete(void*, size_t) (-fsized-deallocation)",
        args: |s, t| strings(&[&s, &8, &128, &1024, &100, &12345, &t.unwrap_or(4)]),
    },
    Workload {
        name: "c-xthread",
        program: Program::C {
            binary: "c-xthread",
            source: "c-xthread.c",
            flags: &[],
        },
        what: "C, threads in a ring: batches of 64 blocks (16-512 B) freed by the next thread",
        args: |s, t| strings(&[&s, &t.unwrap_or(4).max(2), &64, &16, &512]),
    },
    Workload {
        name: "c-random",
        program: Program::C {
            binary: "c-random",
            source: "c-random.c",
            flags: &[],
        },
        what: "C, threads replacing random slots of 1000 with log-uniform sizes 8 B-16 KiB",
        args: |s, t| strings(&[&s, &t.unwrap_or(4), &8, &16384, &1000, &777]),
    },
    Workload {
        name: "c-realloc",
        program: Program::C {
            binary: "c-realloc",
            source: "c-realloc.c",
            flags: &[],
        },
        what: "C, realloc growth by 1-64 B of 16 buffers a thread to 1 KiB-1 MiB",
        args: |s, t| strings(&[&s, &t.unwrap_or(2), &16, &1024, &1048576, &64, &99]),
    },
    Workload {
        name: "c-large",
        program: Program::C {
            binary: "c-large",
            source: "c-large.c",
            flags: &[],
        },
        what: "C, one thread, 20 live buffers of 5-25 MiB, a random one replaced and every page of it written",
        args: |s, _| strings(&[&s, &1, &20, &(5usize << 20), &(25usize << 20), &42]),
    },
];

/// The workloads run when `--workload` is not given.
pub const DEFAULT_WORKLOADS: &str = "larson,thread-churn";

/// Resolves `--workload`: names, `rust` (the Rust set), `c` (the C set)
/// and `all` (both), comma-separated, in any mix, in the order given.
pub fn select_workloads(list: &str) -> Result<Vec<&'static Workload>, String> {
    let mut names: Vec<&str> = Vec::new();
    for want in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let set = match want {
            "all" => Some(None),
            "rust" => Some(Some(Set::Rust)),
            "c" => Some(Some(Set::C)),
            _ => None,
        };
        match set {
            Some(set) => names.extend(
                WORKLOADS
                    .iter()
                    .filter(|w| set.is_none_or(|s| w.set() == s))
                    .map(|w| w.name),
            ),
            None => names.push(want),
        }
    }
    select(&names.join(","), &WORKLOADS, |w| w.name)
        .map_err(|e| format!("--workload: {e} (or rust, c)"))
}

/// Resolves `--alloc` against both sets: `all`, or names of either set
/// (`hakmem` and `mimalloc` are in both, as different builds: each set
/// takes its own). Returns
/// the Rust set's and the C set's picks, either possibly empty.
pub fn select_allocators(
    list: &str,
) -> Result<(Vec<&'static Allocator>, Vec<&'static Preload>), String> {
    if list.trim() == "all" {
        return Ok((ALLOCATORS.iter().collect(), PRELOADS.iter().collect()));
    }
    let wants: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    if wants.is_empty() {
        return Err("--alloc: the list is empty".into());
    }
    for w in &wants {
        if !ALLOCATORS.iter().any(|a| a.name == *w) && !PRELOADS.iter().any(|p| p.name == *w) {
            let known: Vec<&str> = ALLOCATORS
                .iter()
                .map(|a| a.name)
                .chain(
                    PRELOADS
                        .iter()
                        .map(|p| p.name)
                        .filter(|n| !ALLOCATORS.iter().any(|a| a.name == *n)),
                )
                .collect();
            return Err(format!(
                "--alloc: unknown name {w:?}; known: {} (or all)",
                known.join(", ")
            ));
        }
    }
    Ok((
        ALLOCATORS
            .iter()
            .filter(|a| wants.contains(&a.name))
            .collect(),
        PRELOADS
            .iter()
            .filter(|p| wants.contains(&p.name))
            .collect(),
    ))
}

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
