//! `hakmem::memory_usage()` (the figures of libhakmem.so's `mallinfo2`)
//! against blocks of known sizes, allocated and freed by one thread (the
//! only one of this binary that calls hakmem, so every slab involved is
//! its own and the small-block figure is exact): in use by the blocks'
//! usable sizes, large and huge bytes by their runs and mappings, and back
//! when they are freed; after `trim`, nothing left to release.

use hakmem::{free, malloc, memory_usage, trim, usable_size, MemoryUsage};

/// Hardened builds: every large block is a huge mapping, and a small
/// block's usable size is the size asked for (its block is up to 1/9 and
/// 8 bytes more).
const SECURE: bool = cfg!(feature = "secure");

fn grew(after: usize, before: usize) -> usize {
    after
        .checked_sub(before)
        .expect("the figure did not shrink")
}

fn check_consistent(u: &MemoryUsage) {
    assert!(u.small_in_use_bytes + u.small_free_bytes <= u.small_block_bytes);
    assert!(u.small_block_bytes <= u.small_slab_bytes);
    assert!(u.cache_bytes <= u.small_free_bytes);
    assert!(u.arena_in_use_bytes() + u.free_bytes() <= u.arena_bytes());
    assert!(u.releasable_bytes() <= u.arena_bytes());
    assert!(u.huge_blocks <= u.peak_huge_blocks && u.huge_bytes <= u.peak_huge_bytes);
}

#[test]
fn memory_usage_follows_live_blocks() {
    let before = memory_usage();
    check_consistent(&before);
    let mut blocks = Vec::new();
    let (mut small, mut large, mut huge) = (0, 0, 0);
    for i in 0..5000 {
        let p = malloc(24 + i % 1000);
        assert!(!p.is_null());
        small += usable_size(p);
        blocks.push(p);
    }
    for _ in 0..10 {
        let p = malloc(300 << 10);
        assert!(!p.is_null());
        large += usable_size(p);
        blocks.push(p);
    }
    for _ in 0..3 {
        let p = malloc(5 << 20);
        assert!(!p.is_null());
        huge += usable_size(p);
        blocks.push(p);
    }
    let live = memory_usage();
    check_consistent(&live);
    let page = hakmem::page_size();
    if SECURE {
        let got = grew(live.small_in_use_bytes, before.small_in_use_bytes);
        assert!(
            got >= small && got <= small + small / 8 + 8 * 5000,
            "{got} {small}"
        );
        assert_eq!(grew(live.huge_blocks, before.huge_blocks), 13);
        assert!(grew(live.huge_bytes, before.huge_bytes) >= large + huge);
    } else {
        assert_eq!(
            grew(live.small_in_use_bytes, before.small_in_use_bytes),
            small
        );
        assert_eq!(grew(live.large_bytes, before.large_bytes), large);
        assert_eq!(grew(live.large_blocks, before.large_blocks), 10);
        assert_eq!(grew(live.huge_blocks, before.huge_blocks), 3);
        // Each mapping: the block and its header page.
        assert_eq!(grew(live.huge_bytes, before.huge_bytes), huge + 3 * page);
        assert_eq!(
            grew(live.arena_in_use_bytes(), before.arena_in_use_bytes()),
            small + large
        );
    }

    for p in blocks {
        // SAFETY: each is a live block of hakmem's, freed once.
        unsafe { free(p) };
    }
    let freed = memory_usage();
    check_consistent(&freed);
    assert_eq!(freed.large_bytes, before.large_bytes);
    assert_eq!(freed.huge_blocks, before.huge_blocks);
    assert_eq!(freed.huge_bytes, before.huge_bytes);
    if !SECURE {
        // (Hardened builds keep the last freed small blocks in the
        // quarantine, in use as far as their slabs know.)
        assert_eq!(freed.small_in_use_bytes, before.small_in_use_bytes);
    }

    trim();
    let trimmed = memory_usage();
    check_consistent(&trimmed);
    assert_eq!(trimmed.cached_huge, 0);
    assert_eq!(trimmed.releasable_bytes(), 0);
    assert_eq!(trimmed.small_in_use_bytes, before.small_in_use_bytes);
}
