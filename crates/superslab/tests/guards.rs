//! Hardened builds (`--features secure`): the guard slabs around every
//! region's data slabs fault on a linear overflow or underflow. Each probe
//! runs in a child process (this binary re-executed with `HAKMEM_PROBE`).
#![cfg(feature = "secure")]

use std::process::Command;

use hakmem_superslab::{self as superslab, MAX_RUN_SLABS, SLAB_SIZE};

const PROBE_ENV: &str = "HAKMEM_PROBE";

fn probe(name: &str) {
    // A run of every usable slab fills a fresh region: slabs 1..=30.
    let run = superslab::alloc_run(MAX_RUN_SLABS).unwrap().slab;
    let base = run.base();
    // SAFETY: the whole run is ours.
    unsafe {
        base.write(1);
        base.add(MAX_RUN_SLABS * SLAB_SIZE - 1).write(1);
    }
    println!("run ok");
    match name {
        // SAFETY: deliberately one byte past the last usable slab.
        "overflow" => unsafe { base.add(MAX_RUN_SLABS * SLAB_SIZE).write(1) },
        // SAFETY: deliberately one byte before the first usable slab.
        "underflow" => unsafe { base.sub(1).write(1) },
        other => panic!("unknown probe {other}"),
    }
    println!("survived");
}

#[test]
fn child() {
    if let Ok(name) = std::env::var(PROBE_ENV) {
        probe(&name);
    }
}

fn faults(name: &str) {
    use std::os::unix::process::ExitStatusExt;
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(PROBE_ENV, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("run ok"), "{name}: {stdout}");
    assert!(
        !stdout.contains("survived"),
        "{name}: the guard did not fault"
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSEGV),
        "{name}: {:?}",
        out.status
    );
}

#[test]
fn overflow_past_the_last_slab_faults() {
    faults("overflow");
}

#[test]
fn underflow_into_the_header_slab_faults() {
    faults("underflow");
}

/// The link secret and the canary secret of a region are drawn apart (a
/// canary read through a use-after-free must not give the link secret
/// away), are not zero (an unkeyed encoding), and differ between regions.
#[test]
fn each_region_has_two_distinct_random_secrets() {
    let a = superslab::alloc_run(MAX_RUN_SLABS).unwrap().slab;
    let b = superslab::alloc_run(MAX_RUN_SLABS).unwrap().slab;
    let (pa, pb) = (a.base() as usize, b.base() as usize);
    // SAFETY: both addresses are inside live regions (the runs are ours).
    let (la, ca, lb, cb) = unsafe {
        (
            superslab::region_secret(pa),
            superslab::region_canary_secret(pa),
            superslab::region_secret(pb),
            superslab::region_canary_secret(pb),
        )
    };
    assert_ne!(pa >> superslab::CHUNK_SHIFT, pb >> superslab::CHUNK_SHIFT);
    assert!(la != 0 && ca != 0 && lb != 0 && cb != 0);
    assert_ne!(la, ca);
    assert_ne!(lb, cb);
    assert_ne!(la, lb);
    assert_ne!(ca, cb);
    // SAFETY: the runs are ours and no longer used.
    unsafe {
        superslab::free_run(a);
        superslab::free_run(b);
    }
}
