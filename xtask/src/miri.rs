//! `cargo xtask miri`: the allocator crates' unit tests under Miri, which
//! checks every memory access they make against Rust's aliasing model and
//! for data races. Nightly only, and never part of `cargo xtask test`.
//!
//! ## What Miri can run
//! Miri emulates a small part of the kernel. The superslab maps its regions
//! with `MAP_NORESERVE` (Miri's `mmap` takes only
//! `MAP_PRIVATE | MAP_ANONYMOUS`) and trims them with partial `munmap`s,
//! and purges and guards with `madvise` and `mprotect`, none of which Miri
//! has; so no test that takes memory from the superslab can run under it.
//! Those tests carry `#[cfg_attr(miri, ignore)]` with the reason, and show
//! as "ignored" in the output:
//! - tiny-box `remote::counted_stack` and `box_backend::fork_repair` take
//!   slabs from the superslab;
//! - tiny-box `remote::fifo_owner` does too, and also needs CPU affinity and
//!   `SCHED_FIFO`, which Miri does not emulate.
//!
//! The integration tests (`tests/*.rs`) are left out for the same reason:
//! every one of them allocates through the superslab. What runs: the
//! superslab's and tiny-box's pure unit tests, and tiny-box's
//! `remote::threads_on_a_plain_record`, the remote-free protocol with real
//! threads on a slab record in plain memory: the owner's local list work
//! and notification hand-offs racing freers' CASes on the same record
//! (the aliasing question of `slab.rs`, "No `&mut SlabMeta`"). fastcache
//! has no unit tests today; its library is still built and checked under
//! Miri.
//!
//! `-Zmiri-disable-isolation` lets the tests read the clock and the
//! environment (the option table's `getenv`); the sleeps of the protocol's
//! backoff need the clock too. `-Zmiri-permissive-provenance` silences
//! the warning on integer-to-pointer casts, which are by design here: the
//! remote word packs a block address with a count and flag bits
//! (`remote.rs`), and the superslab's slab handles (`SlabRef`) compute a
//! record's address from a block's and back.

use std::process::Command;

use crate::run_step;

/// The flags every run gets (see the module docs).
const MIRIFLAGS: &str = "-Zmiri-disable-isolation -Zmiri-permissive-provenance";

/// Runs the unit tests of superslab, tiny-box (both backends selected) and
/// fastcache under Miri; true when each run is clean. Needs a nightly
/// toolchain with the `miri` and `rust-src` components.
pub fn miri() -> bool {
    let have = Command::new("cargo")
        .args(["+nightly", "miri", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!(
            "==> needs nightly with Miri: \
             `rustup component add --toolchain nightly miri rust-src`"
        );
        return false;
    }
    let flags = match std::env::var("MIRIFLAGS") {
        Ok(extra) if !extra.trim().is_empty() => format!("{MIRIFLAGS} {extra}"),
        _ => MIRIFLAGS.to_string(),
    };
    let target_dir = crate::workspace_root().join("target/miri");
    let mut ok = true;
    for (title, package, features) in [
        ("superslab unit tests", "hakmem-superslab", None),
        (
            "tiny-box unit tests (legacy backend selected)",
            "hakmem-tiny-box",
            None,
        ),
        (
            "tiny-box unit tests (box backend selected)",
            "hakmem-tiny-box",
            Some("box-refactor"),
        ),
        ("fastcache unit tests", "hakmem-fastcache", None),
    ] {
        let mut cmd = Command::new("cargo");
        cmd.args(["+nightly", "miri", "test", "-p", package, "--lib"])
            .env("MIRIFLAGS", &flags)
            .env("CARGO_TARGET_DIR", &target_dir);
        if let Some(features) = features {
            cmd.args(["--features", features]);
        }
        ok &= run_step(&format!("{title} under Miri"), &mut cmd);
    }
    ok
}
