//! `cargo xtask bench`: two workload sets run side by side across
//! allocators.
//!
//! - The Rust set, `hakmem-benches`: built in release once per allocator
//!   (the same profile and flags for each; only the cargo features differ),
//!   every binary copied to `<target>/release/<workload>-<allocator>`.
//! - The C set, `benches/c`: C and C++ programs compiled once with
//!   `cc`/`c++` into `<target>/bench/c/` and run under `LD_PRELOAD` with
//!   each allocator's shared library (see `preload.rs`); glibc without.
//!   Every run is checked to have used the library it names.
//!
//! 1. Builds what the chosen workloads and allocators need.
//! 2. Runs the chosen workloads `--runs` times for every allocator of their
//!    set, interleaved (A B C ... A B C ...; the order is rotated each round
//!    so that no allocator always runs first), each run a fresh process.
//! 3. Prints per workload the median throughput, median peak RSS, ratios
//!    against the set's baseline (`hakmem+box-refactor`, the original's
//!    "Fix #1", in the Rust set; libhakmem.so in the C set) and mimalloc,
//!    and the original's A/B decision rule (Rust set) or hakmem against
//!    mimalloc and the fastest of jemalloc, tcmalloc and glibc (C set);
//!    writes `results.md`, `results.svg` (and JSON with `--json`).
//!
//! Default: `larson` (`larson 2 8 128 1024 100 12345 4`) and
//! `thread-churn` (`thread-churn 2 8 128 1024 12345 4`, the original's
//! command shape), 3 runs each, all ten Rust-set allocators: 60 runs of
//! about 2 s, plus the builds. `--workload c` runs the C set.

mod child;
mod preload;
mod report;
mod suite;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{cargo, run_step, workspace_root};
use report::{AllocatorResult, Report, WorkloadResult};
use suite::{
    Allocator, Program, Set, Workload, BASELINE, C_BASELINE, DEFAULT_SECONDS, DEFAULT_WORKLOADS,
    REFERENCE,
};

/// Options of `cargo xtask bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Workloads, comma-separated: names, `rust` (the Rust set: larson,
    /// larson-published, thread-churn, prodcons, false-sharing, churn,
    /// mixed, json, collections), `c` (the C set, run under LD_PRELOAD:
    /// c-hot, c-hot-mt, cxx-larson, cxx-larson-sized, c-xthread, c-random,
    /// c-realloc, c-large) or `all` (both).
    #[arg(long, default_value = DEFAULT_WORKLOADS)]
    workload: String,
    /// Seconds per run (each workload's SECONDS argument).
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    seconds: u64,
    /// Runs per allocator and workload (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Thread count for the threaded workloads (default: each workload's
    /// own: 4 for Larson, 2 for the other Rust ones; prodcons uses N/2
    /// pairs; 4 for the threaded C ones but 2 for c-realloc; c-large runs
    /// one thread).
    #[arg(long)]
    threads: Option<usize>,
    /// Allocators, comma-separated, or `all`. Rust set:
    /// hakmem+box-refactor+fast-path, hakmem+box-refactor,
    /// hakmem+fast-path, hakmem, hakmem+box-refactor+fast-path+bg-purge
    /// (the default build with HAKMEM_BACKGROUND_PURGE=1),
    /// hakmem+box-refactor+fast-path+secure,
    /// system, mimalloc, mimalloc+secure, jemalloc. C set: hakmem
    /// (libhakmem.so), hakmem+secure, mimalloc, jemalloc, glibc,
    /// mimalloc-debian, jemalloc-debian, tcmalloc-debian. Each set takes
    /// the names it has.
    #[arg(long, default_value = "all")]
    alloc: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for results.md and results.svg (default: `<target>/bench`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Reuse the binaries of an earlier build instead of building.
    #[arg(long)]
    no_build: bool,
    /// Only the smoke test of the C set that `cargo xtask test` runs: each
    /// C program for 0.2 s under libhakmem.so, checked.
    #[arg(long)]
    c_smoke: bool,
    /// Only the smoke test of the Rust set that `cargo xtask test` runs:
    /// each workload for 1 s with hakmem (dev profile), checked.
    #[arg(long)]
    rust_smoke: bool,
}

/// Runs the benchmarks; true when every build and run succeeded.
pub fn run(args: &BenchArgs) -> bool {
    if args.c_smoke {
        return c_smoke();
    }
    if args.rust_smoke {
        return rust_smoke();
    }
    match run_inner(args) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("==> bench: {e}");
            false
        }
    }
}

/// One allocator of one workload, ready to run.
struct Entry {
    /// The allocator's name.
    name: &'static str,
    /// The binary to run.
    bin: PathBuf,
    /// Environment added to the run (`LD_PRELOAD`, `HAKMEM_STATS`).
    env: Vec<(&'static str, OsString)>,
    /// For the C set: the library whose use the run must show.
    lib: Option<usize>,
}

fn run_inner(args: &BenchArgs) -> Result<bool, String> {
    let chosen = suite::select_workloads(&args.workload)?;
    let (rust_allocs, c_allocs) = suite::select_allocators(&args.alloc)?;
    if args.runs == 0 || args.seconds == 0 || args.threads == Some(0) {
        return Err("--runs, --seconds and --threads must be at least 1".into());
    }
    let mut notes: Vec<String> = Vec::new();
    let has_allocators = |set: Set| match set {
        Set::Rust => !rust_allocs.is_empty(),
        Set::C => !c_allocs.is_empty(),
    };
    for set in [Set::Rust, Set::C] {
        if !has_allocators(set) && chosen.iter().any(|w| w.set() == set) {
            let msg = format!(
                "the {} set's workloads are skipped: --alloc names none of its allocators",
                set.name()
            );
            eprintln!("==> {msg}");
            notes.push(msg);
        }
    }
    let mut workloads: Vec<&Workload> = chosen
        .into_iter()
        .filter(|w| has_allocators(w.set()))
        .collect();
    if workloads.is_empty() {
        return Err("no workload left to run".into());
    }
    let target = target_dir()?;
    let bins = target.join("release");
    let c_bins = target.join("bench").join("c");
    let rust_set: Vec<&Workload> = workloads
        .iter()
        .copied()
        .filter(|w| w.set() == Set::Rust)
        .collect();
    let c_set: Vec<&Workload> = workloads
        .iter()
        .copied()
        .filter(|w| w.set() == Set::C)
        .collect();
    if !args.no_build && !rust_set.is_empty() {
        for a in &rust_allocs {
            build(a, &rust_set, &target, &bins)?;
        }
    }
    let libs = if c_set.is_empty() {
        Vec::new()
    } else {
        let libs = preload::prepare(&c_allocs, &target, !args.no_build, &mut notes)?;
        if !args.no_build {
            preload::compile(&c_set, &c_bins)?;
        }
        libs
    };
    if !c_set.is_empty() && libs.is_empty() {
        notes.push("the C set's workloads are skipped: none of its allocators is available".into());
        workloads.retain(|w| w.set() != Set::C);
        if workloads.is_empty() {
            return Err("no workload left to run".into());
        }
    }
    let allocator_notes: Vec<String> = libs
        .iter()
        .map(|l| format!("{}: {}", l.name, l.note))
        .collect();

    let plan: Vec<Vec<Entry>> = workloads
        .iter()
        .map(|w| match &w.program {
            Program::Rust(_) => rust_allocs
                .iter()
                .map(|a| Entry {
                    name: a.name,
                    bin: binary_path(&bins, w, a),
                    env: a.env.iter().map(|&(k, v)| (k, OsString::from(v))).collect(),
                    lib: None,
                })
                .collect(),
            Program::C { binary, .. } => libs
                .iter()
                .enumerate()
                .map(|(i, l)| Entry {
                    name: l.name,
                    bin: c_bins.join(binary),
                    env: l.env(),
                    lib: Some(i),
                })
                .collect(),
        })
        .collect();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpu_model();
    eprintln!("\n==> machine: {cores} CPU cores ({cpu})");
    let mut results: Vec<WorkloadResult> = workloads
        .iter()
        .zip(&plan)
        .map(|(w, entries)| WorkloadResult {
            workload: w.name.into(),
            set: w.set().name().into(),
            baseline: match w.set() {
                Set::Rust => BASELINE.into(),
                Set::C => C_BASELINE.into(),
            },
            reference: REFERENCE.into(),
            what: w.what.into(),
            command: format!(
                "{} {}",
                w.name,
                (w.args)(args.seconds, args.threads).join(" ")
            ),
            allocators: entries
                .iter()
                .map(|e| AllocatorResult {
                    allocator: e.name.into(),
                    runs: Vec::new(),
                    failures: Vec::new(),
                    median_ops_per_sec: None,
                    median_peak_rss_bytes: None,
                    peak_rss_from_child: false,
                    median_threads_created: None,
                    ratio_vs_baseline: None,
                    ratio_vs_reference: None,
                })
                .collect(),
        })
        .collect();

    let per_round: usize = plan.iter().map(Vec::len).sum();
    let total = args.runs * per_round;
    eprintln!(
        "==> {total} runs of about {} s: {} workload(s), {per_round} workload-allocator pairs, \
         {} run(s) each, interleaved",
        args.seconds,
        workloads.len(),
        args.runs
    );
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40.cyan/blue} {pos}/{len} [{elapsed_precise}, eta {eta}] {msg}",
        )
        .expect("a valid template"),
    );
    let timeout = Duration::from_secs(args.seconds * 10 + 60);
    let date = date();
    let tree = preload::tree_state();
    let mut ok = true;
    for round in 0..args.runs {
        for (wi, w) in workloads.iter().enumerate() {
            let wargs = (w.args)(args.seconds, args.threads);
            let n = plan[wi].len();
            for k in 0..n {
                let ai = (k + round) % n;
                let e = &plan[wi][ai];
                bar.set_message(format!("{} / {}", w.name, e.name));
                let slot = &mut results[wi].allocators[ai];
                let run = child::run(&e.bin, &wargs, &e.env, timeout).and_then(|(s, stderr)| {
                    if let Some(i) = e.lib {
                        preload::verify(&libs[i], &s.line, &stderr)?;
                    }
                    Ok(s)
                });
                match run {
                    Ok(s) => slot.runs.push(s),
                    Err(err) => {
                        bar.println(format!("==> FAILED {} / {}: {err}", w.name, e.name));
                        slot.failures.push(err);
                        ok = false;
                    }
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_with_message("done");
    for w in &mut results {
        w.finish();
    }

    let report = Report {
        date,
        command: command_line(),
        cores,
        cpu,
        runs: args.runs,
        tree,
        allocator_notes,
        notes,
        rss_floor_bytes: own_peak_rss(),
        workloads: results,
    };
    println!("{}", report.text());
    println!("machine: {} CPU cores ({})", report.cores, report.cpu);

    let out = args.out.clone().unwrap_or_else(|| target.join("bench"));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    write(&out.join("results.md"), &report.markdown())?;
    write(&out.join("results.svg"), &report.svg())?;
    if let Some(json) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        write(json, &text)?;
    }
    Ok(ok)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("==> wrote {}", path.display());
    Ok(())
}

/// The target directory cargo uses here: `CARGO_TARGET_DIR` and config
/// respected, through `cargo metadata`.
pub(crate) fn target_dir() -> Result<PathBuf, String> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata gave no target_directory".into())
}

/// The build name of libhakmem.so with its default features.
const HAKMEM_DEFAULT_BUILD: &str = "hakmem+box-refactor+fast-path";

/// `cargo xtask test`'s smoke test of the C set: every C and C++ program
/// compiled and run for a fifth of a second (two threads where threaded)
/// under libhakmem.so, each run checked as in a bench run (its `malloc`
/// from the library, the library's exit statistics on stderr). The library
/// is the release build that `cargo test -p hakmem-preload` makes for its
/// own tests (`<target>/preload-tests/hakmem+box-refactor+fast-path`), so
/// after the workspace tests this costs the compiles and two seconds of
/// runs. True when all passed.
pub fn c_smoke() -> bool {
    smoke("C", c_smoke_inner)
}

/// Runs a smoke test; true when it passed, else says why.
fn smoke(set: &str, test: impl FnOnce() -> Result<(), String>) -> bool {
    match test() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("==> {set} smoke test: {e}");
            false
        }
    }
}

/// A smoke test's verdict from the names of the workloads that failed.
fn smoke_verdict(failed: &[&str]) -> Result<(), String> {
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {}", failed.join(", ")))
    }
}

/// The `hakmem-benches` binaries the Rust workloads among `workloads` run,
/// each once.
fn rust_binaries<'a>(workloads: impl IntoIterator<Item = &'a Workload>) -> Vec<&'static str> {
    let mut binaries: Vec<&str> = workloads
        .into_iter()
        .filter_map(|w| match w.program {
            Program::Rust(b) => Some(b),
            Program::C { .. } => None,
        })
        .collect();
    binaries.sort_unstable();
    binaries.dedup();
    binaries
}

fn c_smoke_inner() -> Result<(), String> {
    let target = target_dir()?;
    let lib_target = target
        .join("preload-tests")
        .join(format!("{HAKMEM_DEFAULT_BUILD}+initial-exec-tls"));
    let mut cmd = cargo();
    // The same command as crates/hakmem-preload/tests/preload.rs, so that
    // the library its tests built is fresh and reused.
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "hakmem-preload",
        "--no-default-features",
        "--features",
        "box-refactor,fast-path,initial-exec-tls",
        "--release",
    ])
    .arg("--target-dir")
    .arg(&lib_target);
    if !run_step("build libhakmem.so (release, default features)", &mut cmd) {
        return Err("the build of libhakmem.so failed".into());
    }
    let lib = preload::Lib {
        name: C_BASELINE,
        path: Some(lib_target.join("release").join("libhakmem.so")),
        hakmem_build: Some(HAKMEM_DEFAULT_BUILD),
        note: String::new(),
    };
    let workloads: Vec<&Workload> = suite::WORKLOADS
        .iter()
        .filter(|w| w.set() == Set::C)
        .collect();
    let dir = target.join("bench").join("c-smoke");
    preload::compile(&workloads, &dir)?;
    let env = lib.env();
    let mut failed = Vec::new();
    for w in &workloads {
        let Program::C { binary, .. } = w.program else {
            continue;
        };
        let mut wargs = (w.args)(1, Some(2));
        wargs[0] = "0.2".into();
        let run = child::run(&dir.join(binary), &wargs, &env, Duration::from_secs(60))
            .and_then(|(s, stderr)| preload::verify(&lib, &s.line, &stderr).map(|()| s));
        match run {
            Ok(s) => eprintln!("    {}: {}", w.name, s.line),
            Err(e) => {
                eprintln!("==> FAILED {} {}: {e}", w.name, wargs.join(" "));
                failed.push(w.name);
            }
        }
    }
    smoke_verdict(&failed)
}

/// `cargo xtask test`'s smoke test of the Rust set: every workload binary
/// of `hakmem-benches`, built in the dev profile (debug assertions and
/// overflow checks on, and the crates the workspace tests built reused)
/// with hakmem's default build as its global allocator, run for a second
/// with two threads; each must exit 0 and print its result line. (The
/// `mixed` workload once died of a false double-free report that no test
/// ran into.) True when all passed.
pub fn rust_smoke() -> bool {
    smoke("Rust", rust_smoke_inner)
}

fn rust_smoke_inner() -> Result<(), String> {
    let target = target_dir()?;
    let binaries = rust_binaries(&suite::WORKLOADS);
    let mut cmd = cargo();
    cmd.args(["build", "--quiet", "-p", "hakmem-benches"])
        .arg("--target-dir")
        .arg(&target);
    for b in &binaries {
        cmd.args(["--bin", b]);
    }
    if !run_step(
        "build the Rust workloads (dev profile, hakmem's default build)",
        &mut cmd,
    ) {
        return Err("the build of hakmem-benches failed".into());
    }
    let mut failed = Vec::new();
    for w in suite::WORKLOADS.iter() {
        let Program::Rust(binary) = w.program else {
            continue;
        };
        let wargs = (w.args)(1, Some(2));
        let bin = target.join("debug").join(binary);
        match child::run(&bin, &wargs, &[], Duration::from_secs(120)) {
            Ok((s, _)) => eprintln!("    {}: {}", w.name, s.line),
            Err(e) => {
                eprintln!("==> FAILED {} {}: {e}", w.name, wargs.join(" "));
                failed.push(w.name);
            }
        }
    }
    smoke_verdict(&failed)
}

/// Where the copy of workload `w` built for allocator `a` lives.
fn binary_path(bins: &Path, w: &Workload, a: &Allocator) -> PathBuf {
    bins.join(format!("{}-{}", w.name, a.name))
}

/// Builds the suite for one allocator and copies the workloads' binaries
/// to their per-allocator names.
fn build(a: &Allocator, workloads: &[&Workload], target: &Path, bins: &Path) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "hakmem-benches",
        "--no-default-features",
    ])
    .arg("--target-dir")
    .arg(target);
    if !a.features.is_empty() {
        cmd.arg("--features").arg(a.features);
    }
    for b in rust_binaries(workloads.iter().copied()) {
        cmd.args(["--bin", b]);
    }
    if !run_step(&format!("build the suite for {}", a.name), &mut cmd) {
        return Err(format!("the build for {} failed", a.name));
    }
    for w in workloads {
        let Program::Rust(binary) = w.program else {
            continue;
        };
        let from = bins.join(binary);
        let to = binary_path(bins, w, a);
        std::fs::copy(&from, &to)
            .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))?;
    }
    Ok(())
}

/// The high-water mark of this process's own memory in bytes (`VmHWM` of
/// `/proc/self/status`), the floor of its children's `ru_maxrss`. Not
/// `getrusage(RUSAGE_SELF)`: that one starts from cargo's RSS, which
/// exec'd this process.
fn own_peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown date".into())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}
