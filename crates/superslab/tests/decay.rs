//! Decay: a free slab that stays unused from one decay pass to the next is
//! purged at the second; one taken again in between is not. Cached huge
//! mappings go back to the OS the same way (on the slow paths' passes; the
//! purge thread's waits a pass more while mappings are reused: huge.rs's
//! unit test). Alone in its
//! test binary: it reasons about the whole pool and the pass clock.

use std::time::Duration;

use hakmem_superslab::{alloc_run, free_run, huge, options, pool, stats};

/// Waits past the purge delay and runs a pass (it is due by then).
fn pass() {
    let delay = options::get().purge_delay_ms as u64;
    std::thread::sleep(Duration::from_millis(delay + delay / 2 + 5));
    pool::decay();
}

#[test]
fn free_slabs_unused_for_a_whole_pass_are_purged_and_reused_ones_are_not() {
    const RUN: usize = 3;
    pass(); // the next pass is due one delay from now
    let keep = alloc_run(1).expect("memory"); // keeps the region in use
    let a = alloc_run(RUN).expect("memory");
    let b = alloc_run(RUN).expect("memory");
    // SAFETY: the runs are ours; write a byte to each so they are resident.
    unsafe {
        a.slab.base().write(1);
        b.slab.base().write(1);
        free_run(a.slab);
        free_run(b.slab);
    }
    let purged = || stats().slabs_purged;
    let before = purged();

    pass();
    assert_eq!(
        purged(),
        before,
        "freed after the last pass: not yet purged"
    );
    let again = alloc_run(RUN).expect("memory");
    assert!(!again.zeroed, "a resident free run is taken first");
    let left_free = if again.slab.base() == a.slab.base() {
        b
    } else {
        a
    };
    assert_eq!(
        [a.slab.base(), b.slab.base()]
            .iter()
            .filter(|&&p| p == again.slab.base())
            .count(),
        1
    );

    pass();
    assert_eq!(
        purged(),
        before + RUN,
        "the run left free over a whole pass is purged, the reused one is not"
    );
    // SAFETY: ours, holding nothing in use.
    unsafe { free_run(again.slab) };
    let reused = alloc_run(RUN).expect("memory");
    assert_eq!(
        reused.slab.base(),
        again.slab.base(),
        "still resident: first"
    );
    assert!(!reused.zeroed);
    let clean = alloc_run(RUN).expect("memory");
    assert_eq!(clean.slab.base(), left_free.slab.base());
    assert!(clean.zeroed, "a purged run reads as zero");
    // SAFETY: ours, holding nothing in use.
    unsafe {
        assert_eq!(clean.slab.base().read(), 0);
        free_run(reused.slab);
        free_run(clean.slab);
        free_run(keep.slab);
    }

    // The huge cache: a freed mapping stays cached (mapped) through the
    // next pass and is unmapped at the one after.
    let mapped = || stats().mapped_bytes;
    let m0 = mapped();
    let h = huge::alloc(4 << 20, 8).expect("memory");
    let m1 = mapped();
    assert!(m1 > m0);
    // SAFETY: live, not used again.
    unsafe { huge::free(h.block) }.expect("a live block");
    // Hardened builds quarantine a freed mapping before it may be cached:
    // guards.rs tests that path.
    if cfg!(feature = "secure") {
        return;
    }
    assert_eq!(mapped(), m1, "cached, not unmapped");
    pass();
    assert_eq!(mapped(), m1, "cached since the last pass only");
    pass();
    assert_eq!(mapped(), m0, "unused for a whole pass: unmapped");
}
