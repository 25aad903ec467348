//! `realloc` of large and huge blocks grown by small steps, as C string
//! builders and vectors do: a block is copied a logarithmic number of
//! times (runs grow in place into free slabs after them; a move takes a
//! quarter more than it needs), never once per slab or page, and a run of
//! one slab holds anything from 16 KiB to 64 KiB without moving.
//!
//! Hardened builds too: there every large block is a guarded mapping that
//! ends at its guard page, so a move gets the quarter more as room to grow
//! in place (inaccessible until grown into), and the block grows where it
//! is with its guard moving along (superslab's huge_guarded.rs tests the
//! guard). Before, every growth moved the block.
//!
//! Other builds grow a huge block by its mapping (`mremap`): its pages
//! move, nothing is copied and no fresh mapping is made.

/// One test at a time: one counts the huge mappings made while it runs.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Grows a block from `from` to `to` bytes by `step`, checking its
/// contents at every step; returns how many times it moved.
fn grow(from: usize, to: usize, step: usize) -> usize {
    let _g = serial();
    let mut p = hakmem::malloc(from);
    assert!(!p.is_null());
    // SAFETY: a live block of `from` bytes.
    unsafe { p.write_bytes(0x5a, from) };
    let (mut n, mut moves) = (from, 0);
    while n < to {
        let m = (n + step).min(to);
        // SAFETY: p is live with n bytes.
        let q = unsafe { hakmem::realloc(p, m) };
        assert!(!q.is_null());
        if q != p {
            moves += 1;
        }
        // SAFETY: q is live with m bytes; the first n were copied.
        unsafe {
            assert_eq!(*q, 0x5a);
            assert_eq!(*q.add(n - 1), 0x5a, "contents lost growing {n} -> {m}");
            q.add(n).write_bytes(0x5a, m - n);
        }
        p = q;
        n = m;
    }
    assert!(hakmem::usable_size(p) >= to);
    // SAFETY: live, given up.
    unsafe { hakmem::free(p) };
    moves
}

#[cfg(not(feature = "secure"))]
#[test]
fn a_one_slab_run_holds_16_to_64_kib_without_moving() {
    // Before: every realloc between 16 and 32 KiB moved the block to a new
    // one-slab run (the "wastes less than half" rule alone).
    let moves = grow(hakmem::SMALL_MAX + 1, 64 << 10, 32);
    assert_eq!(moves, 0);
}

#[test]
fn large_blocks_grown_by_small_steps_move_a_few_times() {
    // 16 KiB -> 1 MiB by 64 B: 16 000 reallocs (before: 513 moves). With
    // a quarter's headroom a move happens at most log(64)/log(1.25) < 19
    // times even if no run could grow in place (other tests' blocks may
    // sit after it); alone in a region it moves about twice.
    let moves = grow(hakmem::SMALL_MAX + 1, hakmem::LARGE_MAX, 64);
    assert!(moves <= 19, "{moves} moves");
}

#[test]
fn huge_blocks_grown_by_pages_move_a_logarithmic_number_of_times() {
    // 1 MiB -> 16 MiB by 4 KiB: a move per page would be 3840.
    let moves = grow(hakmem::LARGE_MAX + 1, 16 << 20, 4096);
    assert!(moves <= 13, "{moves} moves (log(16)/log(1.25) is 12.4)");
}

#[cfg(feature = "secure")]
#[test]
fn a_guarded_block_grown_by_small_steps_moves_a_few_times() {
    // 18 KiB -> 64 KiB by 32 B: 1 500 reallocs, every one a move before;
    // with a quarter's room each time, log(64/18)/log(1.25) < 6 moves.
    let moves = grow(hakmem::SMALL_MAX + 1, 64 << 10, 32);
    assert!(moves <= 6, "{moves} moves");
}

#[cfg(not(feature = "secure"))]
#[test]
fn a_huge_block_grows_by_its_mapping_through_both_reallocs() {
    use std::alloc::{GlobalAlloc, Layout};
    let _g = serial();
    let fresh = || hakmem::stats().superslab.huge_mapped;
    // C's realloc.
    let p = hakmem::malloc(3 << 20);
    // SAFETY: a live block of 3 MiB.
    unsafe { p.write_bytes(0x7e, 3 << 20) };
    let before = fresh();
    // SAFETY: p is live.
    let q = unsafe { hakmem::realloc(p, 64 << 20) };
    assert!(!q.is_null());
    assert_eq!(fresh(), before, "grown, not moved to a fresh mapping");
    // SAFETY: q is live with 64 MiB, its first 3 MiB the old bytes.
    unsafe {
        assert!((0..3 << 20).step_by(4096).all(|i| *q.add(i) == 0x7e));
        assert_eq!(*q.add((3 << 20) - 1), 0x7e);
        q.add((64 << 20) - 1).write(1);
        hakmem::free(q);
    }
    // The global allocator's realloc, at an alignment under a chunk.
    let layout = Layout::from_size_align(3 << 20, 4096).unwrap();
    // SAFETY: a non-zero layout.
    let p = unsafe { hakmem::HakMem.alloc(layout) };
    assert!(!p.is_null());
    // SAFETY: live, 3 MiB.
    unsafe { p.write_bytes(0x11, 3 << 20) };
    let before = fresh();
    // SAFETY: p came from alloc with this layout.
    let q = unsafe { hakmem::HakMem.realloc(p, layout, 48 << 20) };
    assert!(!q.is_null() && (q as usize).is_multiple_of(4096));
    assert_eq!(fresh(), before);
    // SAFETY: live with 48 MiB.
    unsafe {
        assert_eq!(*q.add((3 << 20) - 1), 0x11);
        q.add((48 << 20) - 1).write(1);
        hakmem::HakMem.dealloc(q, Layout::from_size_align(48 << 20, 4096).unwrap());
    }
}
