//! Where runs are placed: resident (dirty) free slabs before purged ones,
//! so freed memory is reused instead of purged while clean memory is
//! faulted in. Alone in its test binary: it reasons about the whole pool.

use hakmem_superslab::{
    alloc_run, free_run, pool::DIRTY_SLAB_LIMIT, Grant, CHUNK_SHIFT, MAX_RUN_SLABS,
};

#[test]
fn resident_free_slabs_are_placed_before_purged_ones() {
    let run = MAX_RUN_SLABS / 2;
    // Enough regions that freeing one run of each passes the purge
    // threshold: the first runs freed stay resident, the later ones are
    // purged (clean).
    let regions = 2 * DIRTY_SLAB_LIMIT / run + 2;
    let mut freed: Vec<Grant> = Vec::new();
    let mut kept: Vec<Grant> = Vec::new();
    for _ in 0..regions {
        // Two runs fill a region (but for at most one slab), so each pair
        // shares one; the second keeps the region from becoming empty.
        let a = alloc_run(run).expect("memory");
        let b = alloc_run(run).expect("memory");
        let region_of = |g: &Grant| g.slab.base() as usize >> CHUNK_SHIFT;
        assert_eq!(region_of(&a), region_of(&b), "a pair shares a region");
        // SAFETY: both runs are ours; write one byte so they are resident.
        unsafe {
            a.slab.base().write(1);
            b.slab.base().write(1);
        }
        freed.push(a);
        kept.push(b);
    }
    // Oldest first: regions are listed newest first, so first fit would
    // now find a purged run at the head of the list.
    for g in &freed {
        // SAFETY: the run is ours and holds nothing in use.
        unsafe { free_run(g.slab) };
    }
    let again = alloc_run(run).expect("memory");
    assert!(
        !again.zeroed,
        "a purged run was placed while resident free runs were waiting"
    );
    let resident = DIRTY_SLAB_LIMIT / run;
    assert!(
        freed.iter().take(resident).any(|g| g.slab == again.slab),
        "the run went to one of the first {resident} runs freed (still resident)"
    );
    // SAFETY: every run below is ours, given back once.
    unsafe {
        free_run(again.slab);
        for g in &kept {
            free_run(g.slab);
        }
    }
}
