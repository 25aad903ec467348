//! Hardened builds: `HAKMEM_SECURE_POISON` sets how much of a freed small
//! block the quarantine poisons. Each mode runs in a child process (this
//! binary re-executed), which frees a written block and reads it back.
#![cfg(feature = "secure")]

use std::process::Command;

const MODE_ENV: &str = "HAKMEM_SECURE_POISON";
const SIZE: usize = 1000;
const WRITTEN: u8 = 0x5a;

/// Bytes of the freed block still showing what was written: in its first
/// 64 bytes (past the link and mark words) and beyond.
fn stale_after_free() -> (usize, usize) {
    let p = hakmem::malloc(SIZE);
    // SAFETY: a live block of SIZE bytes.
    unsafe { p.write_bytes(WRITTEN, SIZE) };
    // SAFETY: live, freed once; it waits in the quarantine, still mapped.
    unsafe { hakmem::free(p) };
    // SAFETY: deliberately a read after free of memory hakmem keeps
    // mapped and unused while the block is quarantined.
    let bytes = unsafe { std::slice::from_raw_parts(p, SIZE) };
    let stale = |r: std::ops::Range<usize>| bytes[r].iter().filter(|&&b| b == WRITTEN).count();
    (stale(16..64), stale(64..SIZE))
}

#[test]
fn child() {
    if std::env::var_os("HAKMEM_POISON_CHILD").is_some() {
        let (first_line, rest) = stale_after_free();
        println!("stale {first_line} {rest}");
    }
}

fn stale_in(mode: &str) -> (usize, usize) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env("HAKMEM_POISON_CHILD", "1")
        .env(MODE_ENV, mode)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split("stale ").nth(1))
        .unwrap_or_else(|| panic!("{mode}: {stdout}"));
    let mut n = line.split(' ').map(|x| x.parse::<usize>().unwrap());
    (n.next().unwrap(), n.next().unwrap())
}

#[test]
fn full_poisons_the_whole_block() {
    assert_eq!(stale_in("full"), (0, 0));
}

#[test]
fn line_poisons_the_first_64_bytes_only() {
    let (first, rest) = stale_in("line");
    assert_eq!(first, 0);
    assert_eq!(rest, SIZE - 64);
}

#[test]
fn off_poisons_nothing() {
    assert_eq!(stale_in("off"), (48, SIZE - 64));
}
