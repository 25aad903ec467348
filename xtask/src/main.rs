//! `cargo xtask`: the project's own commands.
//!
//! - `cargo xtask test`: the test command. Runs the workspace tests with the
//!   default features, then the allocator crates' tests in each of the other
//!   three toggle combinations, then clippy and rustfmt checks, then the
//!   packaging of the crates to publish (`package.rs`), then a smoke run of
//!   the C workloads under libhakmem.so.
//! - `cargo xtask bench`: the benchmark suite (see `bench/`): the Rust
//!   workloads built per allocator, and the C and C++ workloads of
//!   `benches/c` run under `LD_PRELOAD` (`--workload c`).
//! - `cargo xtask install --prefix DIR`: libhakmem.so, libhakmem.a,
//!   `include/hakmem.h` and `hakmem.pc` for C programs (see `install.rs`).
//! - `cargo xtask heap-profile FILE [--base EARLIER]`: reads a heap profile
//!   of `HAKMEM_PROF=1` (see `heap_profile.rs`, docs/PROFILING.md).
//! - `cargo xtask soak`: the long thread-churn soak (see `reliability.rs`).
//! - `cargo xtask sanitize`: the threaded tests under ASan and TSan
//!   (nightly toolchain with `rust-src`).
//! - `cargo xtask miri`: the allocator crates' unit tests under Miri
//!   (nightly toolchain with `miri` and `rust-src`; see `miri.rs` for what
//!   Miri cannot run).
//! - `cargo xtask fuzz`: the facade fuzz target for a bounded time
//!   (nightly toolchain and cargo-fuzz).

use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

mod bench;
mod heap_profile;
mod install;
mod miri;
mod package;
mod reliability;
mod test;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "hakmem's build, test and benchmark tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run every test in all four toggle combinations, plus lint checks.
    Test(test::TestArgs),
    /// Build the workload suite once per allocator (Rust set) or under each
    /// allocator's preloaded library (C set, `--workload c`) and compare.
    Bench(bench::BenchArgs),
    /// Build the release libraries and install libhakmem.so, libhakmem.a,
    /// include/hakmem.h and lib/pkgconfig/hakmem.pc under a prefix.
    Install(install::InstallArgs),
    /// Read a heap profile (`HAKMEM_PROF=1`): top sites by live bytes,
    /// folded stacks and SVG flame graphs; `--base` for what grew since an
    /// earlier one (docs/PROFILING.md).
    HeapProfile(heap_profile::HeapProfileArgs),
    /// Run the long thread-churn soak (RSS flat over the run).
    Soak(reliability::SoakArgs),
    /// Run the threaded tests under AddressSanitizer and ThreadSanitizer.
    Sanitize,
    /// Run the unit tests of superslab, tiny-box and fastcache under Miri
    /// (nightly, with the miri component). Tests that take memory from the
    /// superslab are skipped there: Miri lacks its mmap flags, partial
    /// munmap, madvise and mprotect. Integration tests are not run.
    Miri,
    /// Fuzz the facade against a shadow model for a bounded time.
    Fuzz(reliability::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ok = match cli.task {
        Task::Test(args) => test::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Install(args) => install::run(&args),
        Task::HeapProfile(args) => heap_profile::run(&args),
        Task::Soak(args) => reliability::soak(&args),
        Task::Sanitize => reliability::sanitize(),
        Task::Miri => miri::miri(),
        Task::Fuzz(args) => reliability::fuzz(&args),
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The cargo that runs this xtask (or `cargo` from the PATH).
pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs a command from the workspace root, echoing it; true on success.
pub fn run_step(title: &str, cmd: &mut Command) -> bool {
    eprintln!("\n==> {title}\n    $ {cmd:?}");
    let root = workspace_root();
    match cmd.current_dir(&root).status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!("==> FAILED ({s}): {title}");
            false
        }
        Err(e) => {
            eprintln!("==> could not start {title}: {e}");
            false
        }
    }
}

/// The workspace root (the xtask crate's parent directory).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
