//! `cargo xtask soak` and `cargo xtask sanitize`: the long and the
//! nightly-only reliability checks, kept out of the quick test command.

use std::process::Command;

use clap::Args;

use crate::{cargo, run_step};

/// Options of `cargo xtask soak`.
#[derive(Args)]
pub struct SoakArgs {
    /// How long the thread-churn soak runs, in seconds (at least 12).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// The thread-churn soak (`crates/hakmem/tests/soak.rs`), in release.
pub fn soak(args: &SoakArgs) -> bool {
    run_step(
        &format!("thread-churn soak, {} s", args.seconds),
        cargo()
            .args(["test", "--release", "-p", "hakmem", "--test", "soak", "--"])
            .args(["--ignored", "--nocapture"])
            .env("HAKMEM_SOAK_SECONDS", args.seconds.to_string()),
    )
}

/// The multi-threaded tests under AddressSanitizer and ThreadSanitizer.
/// Needs a nightly toolchain with `rust-src` (for `-Zbuild-std`, which
/// ThreadSanitizer requires so that std is instrumented too).
pub fn sanitize() -> bool {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        eprintln!("==> no nightly toolchain: `rustup toolchain install nightly` first");
        return false;
    }
    let target = "x86_64-unknown-linux-gnu";
    let root = crate::workspace_root();
    let mut ok = true;
    for (name, flag, build_std) in [
        ("address", "-Zsanitizer=address", false),
        ("thread", "-Zsanitizer=thread", true),
    ] {
        let mut cmd = Command::new("cargo");
        cmd.args(["+nightly", "test", "--target", target])
            .args([
                "-p",
                "hakmem-tiny-box",
                "-p",
                "hakmem-fastcache",
                "-p",
                "hakmem",
            ])
            .args(["--features", "hakmem-tiny-box/box-refactor"])
            .args([
                "--test",
                "threads",
                "--test",
                "cache",
                "--test",
                "global_allocator",
            ])
            .env("RUSTFLAGS", flag)
            .env(
                "CARGO_TARGET_DIR",
                root.join(format!("target/sanitize-{name}")),
            );
        if build_std {
            cmd.arg("-Zbuild-std");
        }
        ok &= run_step(&format!("threaded tests under {name} sanitizer"), &mut cmd);
    }
    ok
}

/// Options of `cargo xtask fuzz`.
#[derive(Args)]
pub struct FuzzArgs {
    /// How long the fuzzer runs, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// The facade fuzz target (`fuzz/fuzz_targets/facade.rs`) for a bounded
/// time. Needs a nightly toolchain and `cargo install cargo-fuzz`. The
/// corpus stays in `fuzz/corpus` (ignored by git), small by construction
/// (`-max_len`).
pub fn fuzz(args: &FuzzArgs) -> bool {
    let have = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("==> needs nightly and cargo-fuzz: `cargo install cargo-fuzz`");
        return false;
    }
    run_step(
        &format!("fuzz the facade for {} s", args.seconds),
        Command::new("cargo")
            .args([
                "+nightly",
                "fuzz",
                "run",
                "--fuzz-dir",
                "fuzz",
                "facade",
                "--",
            ])
            .arg(format!("-max_total_time={}", args.seconds))
            .args(["-max_len=4096", "-rss_limit_mb=4096"]),
    )
}
