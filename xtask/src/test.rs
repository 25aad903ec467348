//! `cargo xtask test`: the whole test suite, in every toggle combination,
//! plus the hardened (`secure`) build, the `override` feature (C code in a
//! Rust binary), lint checks, the packaging of the crates to publish,
//! `cargo xtask install` and a C program linked against what it installs,
//! and a smoke run of the C workloads of `cargo xtask bench` under
//! libhakmem.so and of its Rust workloads with hakmem.

use std::process::Command;

use clap::Args;

use crate::{cargo, run_step};

/// Options of `cargo xtask test`.
#[derive(Args)]
pub struct TestArgs {
    /// Skip the clippy and rustfmt checks.
    #[arg(long)]
    no_lint: bool,
}

/// The four toggle combinations: (name, features of the `hakmem` crate).
pub const COMBINATIONS: [(&str, &str); 4] = [
    ("hakmem+box-refactor+fast-path", "box-refactor fast-path"),
    ("hakmem+box-refactor", "box-refactor"),
    ("hakmem+fast-path", "fast-path"),
    ("hakmem", ""),
];

/// Runs the suite; true when every step passed.
pub fn run(args: &TestArgs) -> bool {
    let mut failed = Vec::new();
    let mut step = |title: String, cmd: &mut Command| {
        if !run_step(&title, cmd) {
            failed.push(title);
        }
    };
    // Without the override test's package: its `hakmem/override` would be
    // unified into every test binary of the build (see below).
    step(
        "workspace tests, default features (hakmem+box-refactor+fast-path)".into(),
        cargo().args(["test", "--workspace", "--exclude", "hakmem-override-test"]),
    );
    step(
        "override feature: C and C++ code in a Rust binary allocate from hakmem".into(),
        cargo().args(["test", "-p", "hakmem-override-test"]),
    );
    for (name, features) in &COMBINATIONS[1..] {
        let mut feats: Vec<String> = features
            .split_whitespace()
            .map(|f| format!("hakmem/{f}"))
            .collect();
        if features.contains("box-refactor") {
            feats.push("hakmem-tiny-box/box-refactor".into());
        }
        step(
            format!("allocator tests, {name}"),
            cargo()
                .args([
                    "test",
                    "-p",
                    "hakmem",
                    "-p",
                    "hakmem-fastcache",
                    "--no-default-features",
                ])
                .arg(format!("--features={}", feats.join(","))),
        );
    }
    step(
        "allocator tests, hardened (hakmem+box-refactor+fast-path+secure)".into(),
        cargo().args([
            "test",
            "-p",
            "hakmem-superslab",
            "-p",
            "hakmem-tiny-box",
            "-p",
            "hakmem-fastcache",
            "-p",
            "hakmem",
            "-p",
            "hakmem-preload",
            "--features=hakmem/secure,hakmem-preload/secure",
        ]),
    );
    step(
        "loom models of the remote-free protocol (tiny-box, --cfg loom)".into(),
        cargo()
            .args([
                "test",
                "-p",
                "hakmem-tiny-box",
                "--features=box-refactor",
                "--lib",
                "loom",
            ])
            .env("RUSTFLAGS", "--cfg loom")
            .env("CARGO_TARGET_DIR", loom_target_dir()),
    );
    if !args.no_lint {
        step(
            "clippy, all targets, warnings denied".into(),
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        );
        step(
            "clippy, hardened and legacy builds".into(),
            cargo().args([
                "clippy",
                "-p",
                "hakmem",
                "-p",
                "hakmem-tiny-box",
                "-p",
                "hakmem-superslab",
                "--all-targets",
                "--no-default-features",
                "--features=hakmem/secure,hakmem/override",
                "--",
                "-D",
                "warnings",
            ]),
        );
        step(
            "rustdoc, warnings denied".into(),
            cargo()
                .args(["doc", "--no-deps", "--workspace", "--quiet"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        );
        step(
            "rustfmt check".into(),
            cargo().args(["fmt", "--all", "--check"]),
        );
    }
    // The crates `cargo publish` would upload, packaged and built from their
    // .crate files, and their contents checked (see package.rs).
    if !crate::package::check() {
        failed.push("packaging of the crates to publish".into());
    }
    // The release libraries, header and hakmem.pc installed, and a C
    // program built against them statically and shared (see install.rs).
    eprintln!("\n==> cargo xtask install, and a C program linked with pkg-config's flags");
    if !crate::install::check() {
        failed.push("install, and a C program linked against it".into());
    }
    // After the workspace tests, which built the library it loads.
    eprintln!("\n==> the C workloads of `cargo xtask bench` under libhakmem.so (smoke)");
    if !crate::bench::c_smoke() {
        failed.push("C workloads under libhakmem.so (smoke)".into());
    }
    eprintln!("\n==> the Rust workloads of `cargo xtask bench` with hakmem (smoke)");
    if !crate::bench::rust_smoke() {
        failed.push("Rust workloads with hakmem (smoke)".into());
    }
    if failed.is_empty() {
        eprintln!("\n==> all test steps passed");
        true
    } else {
        eprintln!("\n==> {} step(s) failed:", failed.len());
        for f in &failed {
            eprintln!("    - {f}");
        }
        false
    }
}

/// The loom models' own target directory (its `--cfg loom` build would
/// otherwise rebuild everything the other steps share): `loom` in the
/// target directory in use, which `CARGO_TARGET_DIR` may move.
fn loom_target_dir() -> std::path::PathBuf {
    crate::bench::target_dir()
        .unwrap_or_else(|_| crate::workspace_root().join("target"))
        .join("loom")
}
