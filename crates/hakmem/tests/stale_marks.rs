//! A live block whose second word holds another block's free mark is not
//! a freed block. Programs put such values there without knowing: a
//! `realloc` copies a block's bytes whether or not they were ever written,
//! and bytes never written hold whatever the memory held before, such as
//! the mark of a small block that lived there (the `mixed` benchmark died
//! of it: a large run over a former small-block slab, shrunk by `realloc`
//! into a small block, copied a stale mark into the new block's second
//! word, and its free was refused as a double free). The mark is keyed by
//! the block's address, so a copy from anywhere else never matches.

use std::process::Command;

const CHILD_ENV: &str = "HAKMEM_STALE_MARK_CHILD";

fn copied_mark_then_free() {
    let a = hakmem::malloc(48);
    let b = hakmem::malloc(48);
    assert!(!a.is_null() && !b.is_null());
    // SAFETY: both live; a is freed once.
    unsafe { hakmem::free(a) };
    // The read of a's second word is what a realloc's copy of stale bytes
    // does (volatile: the value must really be copied).
    // SAFETY: a's memory stays mapped (its slab holds the live b).
    let stale = unsafe { a.cast::<usize>().add(1).read_volatile() };
    // SAFETY: b is live and 48 bytes long.
    unsafe { b.cast::<usize>().add(1).write_volatile(stale) };
    // SAFETY: b is live, freed once.
    unsafe { hakmem::free(b) };
    println!("freed");
}

#[test]
fn child() {
    if std::env::var_os(CHILD_ENV).is_some() {
        copied_mark_then_free();
    }
}

#[test]
fn a_copied_free_mark_does_not_make_a_live_block_free() {
    // In a child: before the fix the free was reported and aborted.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("freed"),
        "a live block with another block's mark was refused: {:?}\n{stderr}",
        out.status
    );
}
