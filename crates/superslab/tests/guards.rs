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
