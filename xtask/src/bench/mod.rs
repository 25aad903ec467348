//! `cargo xtask bench`: the workload suite of `hakmem-benches`, built once
//! per allocator and run side by side.
//!
//! 1. Builds `hakmem-benches` in release once per allocator (the same
//!    profile and flags for each; only the cargo features differ) and
//!    copies every binary to `<target>/release/<workload>-<allocator>`.
//! 2. Runs the chosen workloads `--runs` times for every allocator,
//!    interleaved (A B C ... A B C ...; the order is rotated each round so
//!    that no allocator always runs first), each run a fresh process whose
//!    peak RSS comes from the kernel (`wait4`).
//! 3. Prints per workload the median throughput, median peak RSS, ratios
//!    against `hakmem+box-refactor` (the original's "Fix #1") and mimalloc,
//!    and the original's A/B decision rule; writes `results.md`,
//!    `results.svg` (and JSON with `--json`).
//!
//! Default: `larson` (`larson 2 8 128 1024 100 12345 4`) and
//! `thread-churn` (`thread-churn 2 8 128 1024 12345 4`, the original's
//! command shape), 3 runs each, all seven allocators: 42 runs of about
//! 2 s, plus the builds.

mod child;
mod report;
mod suite;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{cargo, run_step, workspace_root};
use report::{AllocatorResult, Report, WorkloadResult};
use suite::{Allocator, Workload, ALLOCATORS, DEFAULT_SECONDS, DEFAULT_WORKLOADS, WORKLOADS};

/// Options of `cargo xtask bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Workloads, comma-separated, or `all`: larson, thread-churn,
    /// prodcons, false-sharing, churn, mixed.
    #[arg(long, default_value = DEFAULT_WORKLOADS)]
    workload: String,
    /// Seconds per run (each workload's SECONDS argument).
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    seconds: u64,
    /// Runs per allocator and workload (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Thread count for the threaded workloads (default: each workload's
    /// own: 4 for Larson, 2 for the others; prodcons uses N/2 pairs).
    #[arg(long)]
    threads: Option<usize>,
    /// Allocators, comma-separated, or `all`: hakmem+box-refactor+fast-path,
    /// hakmem+box-refactor, hakmem+fast-path, hakmem,
    /// hakmem+box-refactor+fast-path+secure, system, mimalloc,
    /// mimalloc+secure, jemalloc.
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
}

/// Runs the benchmarks; true when every build and run succeeded.
pub fn run(args: &BenchArgs) -> bool {
    match run_inner(args) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("==> bench: {e}");
            false
        }
    }
}

fn run_inner(args: &BenchArgs) -> Result<bool, String> {
    let workloads = suite::select(&args.workload, &WORKLOADS, |w| w.name)?;
    let allocators = suite::select(&args.alloc, &ALLOCATORS, |a| a.name)?;
    if args.runs == 0 || args.seconds == 0 || args.threads == Some(0) {
        return Err("--runs, --seconds and --threads must be at least 1".into());
    }
    let target = target_dir()?;
    let bins = target.join("release");
    if !args.no_build {
        for a in &allocators {
            build(a, &workloads, &target, &bins)?;
        }
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpu_model();
    eprintln!("\n==> machine: {cores} CPU cores ({cpu})");
    let mut results: Vec<WorkloadResult> = workloads
        .iter()
        .map(|w| WorkloadResult {
            workload: w.name.into(),
            what: w.what.into(),
            command: format!(
                "{} {}",
                w.name,
                (w.args)(args.seconds, args.threads).join(" ")
            ),
            allocators: allocators
                .iter()
                .map(|a| AllocatorResult {
                    allocator: a.name.into(),
                    runs: Vec::new(),
                    failures: Vec::new(),
                    median_ops_per_sec: None,
                    median_peak_rss_bytes: None,
                    peak_rss_from_child: false,
                    median_threads_created: None,
                    ratio_vs_box_refactor: None,
                    ratio_vs_mimalloc: None,
                })
                .collect(),
        })
        .collect();

    let total = args.runs * workloads.len() * allocators.len();
    eprintln!(
        "==> {total} runs of about {} s: {} workload(s) x {} allocator(s) x {} run(s), interleaved",
        args.seconds,
        workloads.len(),
        allocators.len(),
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
    let mut ok = true;
    for round in 0..args.runs {
        for (wi, w) in workloads.iter().enumerate() {
            let wargs = (w.args)(args.seconds, args.threads);
            for k in 0..allocators.len() {
                let ai = (k + round) % allocators.len();
                let a = allocators[ai];
                bar.set_message(format!("{} / {}", w.name, a.name));
                let bin = binary_path(&bins, w, a);
                let slot = &mut results[wi].allocators[ai];
                match child::run(&bin, &wargs, timeout) {
                    Ok(s) => slot.runs.push(s),
                    Err(e) => {
                        bar.println(format!("==> FAILED {} / {}: {e}", w.name, a.name));
                        slot.failures.push(e);
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
fn target_dir() -> Result<PathBuf, String> {
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
    let mut binaries: Vec<&str> = workloads.iter().map(|w| w.binary).collect();
    binaries.sort_unstable();
    binaries.dedup();
    for b in binaries {
        cmd.args(["--bin", b]);
    }
    if !run_step(&format!("build the suite for {}", a.name), &mut cmd) {
        return Err(format!("the build for {} failed", a.name));
    }
    for w in workloads {
        let from = bins.join(w.binary);
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
