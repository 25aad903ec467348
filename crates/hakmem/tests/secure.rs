//! Attacks on a hardened build (`--features secure`), each performed in a
//! child process (this test binary re-executed with `HAKMEM_ATTACK` set)
//! and each caught: the report names the addresses and the process aborts.
#![cfg(feature = "secure")]

use std::process::Command;

const ATTACK_ENV: &str = "HAKMEM_ATTACK";
/// The block size the attacks work in, and the request that gets it (the
/// slack canary takes a block's last 8 bytes).
const CLASS_SIZE: usize = 64;
const REQUEST: usize = CLASS_SIZE - 8;

/// Frees enough blocks of another class that every block freed before
/// leaves the quarantine for the fast cache (and is checked on the way).
fn flush_quarantine() {
    let others: Vec<*mut u8> = (0..256).map(|_| hakmem::malloc(300)).collect();
    for p in others {
        // SAFETY: live blocks, freed once.
        unsafe { hakmem::free(p) };
    }
}

/// Two blocks of one class where the second directly follows the first.
fn adjacent_pair() -> (*mut u8, *mut u8) {
    let blocks: Vec<usize> = (0..512).map(|_| hakmem::malloc(REQUEST) as usize).collect();
    let mut sorted = blocks.clone();
    sorted.sort_unstable();
    let a = sorted
        .windows(2)
        .find(|w| w[1] == w[0] + CLASS_SIZE)
        .map(|w| w[0])
        .expect("some blocks of a slab are adjacent");
    for &p in &blocks {
        if p != a && p != a + CLASS_SIZE {
            // SAFETY: live blocks, freed once.
            unsafe { hakmem::free(p as *mut u8) };
        }
    }
    (a as *mut u8, (a + CLASS_SIZE) as *mut u8)
}

fn attack(name: &str) {
    let target = [0u64; 16];
    let planted = target.as_ptr() as usize;
    match name {
        "overflow-into-freed-neighbour" => {
            let (a, b) = adjacent_pair();
            // The pair's neighbours filled the class's cache list, and a
            // free into a full list goes straight back to its slab: empty
            // the list, so that b, once out of the quarantine, heads it.
            hakmem::trim();
            // SAFETY: b is live; freed once here.
            unsafe { hakmem::free(b) };
            flush_quarantine();
            // A heap overflow out of `a` writes an address into b's link.
            // SAFETY: deliberately out of bounds of `a` (into freed `b`).
            unsafe { a.add(CLASS_SIZE).cast::<usize>().write(planted) };
            // The next allocations of the class pop b and read its link.
            for _ in 0..4 {
                let p = hakmem::malloc(REQUEST);
                println!("got {p:p}");
                if p as usize == planted {
                    println!("attack succeeded");
                }
            }
        }
        "use-after-free-write" => {
            let p = hakmem::malloc(REQUEST);
            // SAFETY: live, freed once.
            unsafe { hakmem::free(p) };
            flush_quarantine();
            // SAFETY: deliberately a use after free, into the link word.
            unsafe { p.cast::<usize>().write(planted) };
            for _ in 0..4 {
                let q = hakmem::malloc(REQUEST);
                if q as usize == planted {
                    println!("attack succeeded");
                }
            }
        }
        "link-into-another-class" => {
            use hakmem_tiny_box::Block;
            let a = hakmem::malloc(REQUEST).cast::<Block>();
            let b = hakmem::malloc(2 * CLASS_SIZE - 8).cast::<Block>();
            // SAFETY: a is live, freed once; b stays live.
            unsafe { hakmem::free(a.cast()) };
            // a leaves the quarantine: the head of its class's cache list.
            flush_quarantine();
            // A link that decodes correctly but leads into a slab of another
            // class (an attacker who learnt the region's secret, or a bug in
            // a layer): b, a live block of the next class, is spliced into
            // the list after a, which gives it out as a 64 B block and would
            // hand it to the 64 B slab's lists on a drain.
            // SAFETY: deliberately corrupting the cache's list.
            unsafe {
                let rest = Block::next(a);
                Block::set_next(b, rest);
                Block::set_next(a, b);
            }
            // Hands the cache's blocks back to their slabs.
            hakmem::trim();
        }
        "double-free-small" => {
            let p = hakmem::malloc(24);
            // SAFETY: live, freed once; the second free is the attack.
            unsafe {
                hakmem::free(p);
                hakmem::free(p);
            }
        }
        "double-free-rust" => {
            use std::alloc::{GlobalAlloc, Layout};
            let l = Layout::from_size_align(100, 8).unwrap();
            // SAFETY: allocated and freed twice on purpose.
            unsafe {
                let p = hakmem::HakMem.alloc(l);
                hakmem::HakMem.dealloc(p, l);
                hakmem::HakMem.dealloc(p, l);
            }
        }
        other => panic!("unknown attack {other}"),
    }
    println!("survived");
}

#[test]
fn child() {
    if let Ok(name) = std::env::var(ATTACK_ENV) {
        attack(&name);
    }
}

fn caught(name: &str, report: &str) {
    use std::os::unix::process::ExitStatusExt;
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(ATTACK_ENV, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stdout.contains("attack succeeded"), "{name}: {stdout}");
    assert!(
        !stdout.contains("survived"),
        "{name} was not stopped: {stdout}"
    );
    assert!(stderr.contains(report), "{name}: no `{report}` in {stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{name}: {:?}",
        out.status
    );
}

#[test]
fn overflow_into_a_freed_neighbour_is_caught() {
    caught(
        "overflow-into-freed-neighbour",
        "hakmem: heap corruption detected: a free-list link was overwritten",
    );
}

#[test]
fn use_after_free_write_into_a_link_is_caught() {
    caught(
        "use-after-free-write",
        "hakmem: heap corruption detected: a free-list link was overwritten",
    );
}

/// The fast cache's lists are checked on every pop only for links that
/// leave our data slabs; a link into a slab of the wrong class is caught
/// where the blocks go back to their slabs.
#[cfg(feature = "fast-path")]
#[test]
fn a_link_into_another_class_is_caught_when_the_blocks_go_back() {
    caught(
        "link-into-another-class",
        "hakmem: heap corruption detected: a free-list link leads out of its class",
    );
}

#[test]
fn double_free_of_a_small_block_is_caught() {
    caught(
        "double-free-small",
        "block is already free (double free); aborting",
    );
}

#[test]
fn double_dealloc_through_global_alloc_is_caught() {
    caught(
        "double-free-rust",
        "block is already free (double free); aborting",
    );
}

#[test]
fn usable_size_is_the_requested_size() {
    // The block behind it is 16 bytes: the link, the free mark and the
    // slack canary share them; usable_size says what the canary allows.
    let p = hakmem::malloc(1);
    assert_eq!(hakmem::usable_size(p), 1);
    // SAFETY: live, freed once.
    unsafe { hakmem::free(p) };
}
