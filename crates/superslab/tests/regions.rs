//! Scenario and model tests of the superslab layer.
//!
//! Every test takes `SERIAL`: they read process-wide counters, so they must
//! not run concurrently with each other.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hakmem_superslab::{
    self as superslab, huge, lookup, Lookup, SlabRef, SlabState, CHUNK_SIZE, MAX_RUN_SLABS,
    SLAB_SIZE,
};
use proptest::prelude::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits past the purge delay and runs a decay pass (it is due by then).
fn decay_pass() {
    let delay = superslab::options::get().purge_delay_ms as u64;
    std::thread::sleep(std::time::Duration::from_millis(delay + delay / 2 + 5));
    superslab::pool::decay();
}

fn fill(s: SlabRef, n: usize, byte: u8) {
    // SAFETY: the run of n slabs is ours.
    unsafe { std::ptr::write_bytes(s.base(), byte, n * SLAB_SIZE) };
}

fn check(s: SlabRef, n: usize, byte: u8) {
    // SAFETY: the run of n slabs is ours and was filled.
    let bytes = unsafe { std::slice::from_raw_parts(s.base(), n * SLAB_SIZE) };
    assert!(
        bytes.iter().all(|&b| b == byte),
        "run at {:p} corrupted",
        s.base()
    );
}

fn settle() {
    superslab::trim();
}

#[test]
fn exhausting_one_region_maps_another() {
    let _g = serial();
    settle();
    let before = superslab::stats();
    let slabs: Vec<SlabRef> = (0..MAX_RUN_SLABS + 1)
        .map(|_| superslab::alloc_slab().expect("the OS gives memory").slab)
        .collect();
    let mid = superslab::stats();
    assert!(mid.regions_mapped >= before.regions_mapped + 2);
    assert_eq!(mid.slabs_in_use, before.slabs_in_use + MAX_RUN_SLABS + 1);
    for (i, s) in slabs.iter().enumerate() {
        assert_eq!(s.base() as usize % SLAB_SIZE, 0);
        assert_eq!(s.state(), SlabState::IN_USE);
        fill(*s, 1, i as u8);
    }
    for (i, s) in slabs.iter().enumerate() {
        check(*s, 1, i as u8);
        // SAFETY: handed out above, given back once.
        unsafe { superslab::free_run(*s) };
    }
    settle();
    let after = superslab::stats();
    assert_eq!(after.slabs_in_use, before.slabs_in_use);
    assert_eq!(after.regions_live, before.regions_live);
    assert_eq!(after.mapped_bytes, before.mapped_bytes);
}

#[test]
fn ten_regions_of_slabs_and_runs_succeed() {
    let _g = serial();
    settle();
    let before = superslab::stats();
    let mut held = Vec::new();
    for i in 0..10 * MAX_RUN_SLABS + 7 {
        let n = if i % 5 == 0 { 1 + i % 9 } else { 1 };
        let g = if n == 1 && i % 2 == 0 {
            superslab::alloc_slab()
        } else {
            superslab::alloc_run(n)
        }
        .expect("grows on demand");
        fill(g.slab, n, (i % 251) as u8);
        held.push((g.slab, n, (i % 251) as u8));
    }
    assert!(superslab::stats().regions_live >= before.regions_live + 10);
    for (s, n, b) in held {
        check(s, n, b);
        // SAFETY: handed out above, given back once.
        unsafe { superslab::free_run(s) };
    }
    settle();
    let after = superslab::stats();
    assert_eq!(after.regions_live, before.regions_live);
    assert_eq!(after.runs_in_use, before.runs_in_use);
}

#[test]
fn empty_regions_are_kept_up_to_the_retention_limit() {
    let _g = serial();
    settle();
    let base = superslab::stats();
    // Fill several regions completely, then free everything: the empty
    // regions wait one decay pass (they may be wanted again at once), then
    // at most the retention limit stays mapped until trim.
    let slabs: Vec<_> = (0..4 * MAX_RUN_SLABS)
        .map(|_| superslab::alloc_slab().unwrap().slab)
        .collect();
    for s in &slabs {
        // SAFETY: handed out above.
        unsafe { superslab::free_run(*s) };
    }
    // At once: no more empty regions than regions in use (or the
    // retention limit), whatever the decay passes do later.
    let s = superslab::stats();
    let in_use = s.regions_live - s.regions_retained;
    assert!(
        s.regions_retained <= in_use.max(superslab::pool::RETAINED_EMPTY_REGIONS),
        "{} empty regions kept with {in_use} in use",
        s.regions_retained
    );
    decay_pass();
    decay_pass();
    let s = superslab::stats();
    assert!(s.regions_retained <= superslab::pool::RETAINED_EMPTY_REGIONS);
    assert!(s.regions_live <= base.regions_live + superslab::pool::RETAINED_EMPTY_REGIONS);
    assert!(s.regions_released >= base.regions_released + 2);
    // A workload hovering at the boundary reuses the retained region.
    let mapped = s.regions_mapped;
    for _ in 0..100 {
        let g = superslab::alloc_slab().unwrap();
        // SAFETY: handed out just now.
        unsafe { superslab::free_run(g.slab) };
    }
    assert_eq!(
        superslab::stats().regions_mapped,
        mapped,
        "hovering must not thrash"
    );
    settle();
    assert_eq!(superslab::stats().regions_retained, 0);
}

#[test]
fn empty_regions_within_the_burst_limit_go_after_a_whole_decay_pass() {
    let _g = serial();
    settle();
    let base = superslab::stats();
    decay_pass(); // the next pass is due one delay from now
                  // Ten full regions; then six keep one slab each and four are emptied.
    let mut by_region: BTreeMap<usize, Vec<SlabRef>> = BTreeMap::new();
    for _ in 0..10 * MAX_RUN_SLABS {
        let s = superslab::alloc_slab().unwrap().slab;
        by_region
            .entry(s.base() as usize / CHUNK_SIZE)
            .or_default()
            .push(s);
    }
    assert_eq!(by_region.len(), 10);
    let mut kept = Vec::new();
    for (i, slabs) in by_region.values().enumerate() {
        for (k, s) in slabs.iter().enumerate() {
            if i < 6 && k == 0 {
                kept.push(*s);
            } else {
                // SAFETY: handed out above, given back once.
                unsafe { superslab::free_run(*s) };
            }
        }
    }
    let retained = || superslab::stats().regions_retained - base.regions_retained;
    assert_eq!(retained(), 4, "within one per region in use: kept a pass");
    decay_pass();
    assert_eq!(retained(), 4, "empty since the last pass only");
    decay_pass();
    assert_eq!(
        retained(),
        superslab::pool::RETAINED_EMPTY_REGIONS,
        "empty over a whole pass: down to the retention limit"
    );
    for s in kept {
        // SAFETY: handed out above, given back once.
        unsafe { superslab::free_run(s) };
    }
    settle();
}

#[test]
fn lookup_classifies_every_kind_of_pointer() {
    let _g = serial();
    let on_stack = 0u64;
    assert_eq!(
        lookup(&on_stack as *const u64 as *const u8),
        Lookup::Foreign
    );
    assert_eq!(lookup(std::ptr::null()), Lookup::Foreign);
    let from_libc = Box::new(7u64);
    assert_eq!(
        lookup(&*from_libc as *const u64 as *const u8),
        Lookup::Foreign
    );
    assert_eq!(lookup(usize::MAX as *const u8), Lookup::Foreign);

    let slab = superslab::alloc_slab().unwrap().slab;
    // SAFETY: inside the slab.
    let inside = unsafe { slab.base().add(100) };
    assert_eq!(lookup(inside), Lookup::Slab(slab));
    let region = (slab.base() as usize & !(CHUNK_SIZE - 1)) as *const u8;
    assert_eq!(lookup(region), Lookup::NotAllocated, "region metadata");

    let run = superslab::alloc_run(3).unwrap().slab;
    assert_eq!(lookup(run.base()), Lookup::Run(run));
    // SAFETY: inside the run.
    let in_run = unsafe { run.base().add(SLAB_SIZE + 8) };
    assert_eq!(lookup(in_run), Lookup::NotAllocated);

    let h = huge::alloc(3 << 20, 16).unwrap().block;
    assert_eq!(lookup(h.ptr()), Lookup::Huge(h));
    // SAFETY: inside the huge block.
    assert_ne!(lookup(unsafe { h.ptr().add(64) }), Lookup::Huge(h));

    // SAFETY: handed out above, each given back once.
    unsafe {
        superslab::free_run(slab);
        superslab::free_run(run);
        huge::free(h).expect("a live block");
    }
    assert_eq!(
        lookup(inside),
        Lookup::NotAllocated,
        "a freed slab is not allocated"
    );
    settle();
}

#[test]
fn huge_blocks_honour_any_alignment_and_go_back_to_the_os() {
    let _g = serial();
    settle();
    let before = superslab::stats();
    let mut blocks = Vec::new();
    let mut align = 16;
    while align <= 16 << 20 {
        for size in [2, 3 << 20, (5 << 20) + 3] {
            let g = huge::alloc(size, align).expect("the OS gives memory");
            let p = g.block.ptr();
            assert_eq!(p as usize % align, 0, "align {align}");
            assert!(g.block.usable_size() >= size);
            assert!(g.zeroed);
            // SAFETY: the block has at least `size` bytes.
            unsafe {
                *p = 0xAB;
                *p.add(size - 1) = 0xCD;
            }
            assert_eq!(lookup(p), Lookup::Huge(g.block));
            blocks.push((g.block, size));
        }
        align *= 4;
    }
    for (b, size) in blocks {
        // SAFETY: written above.
        unsafe {
            assert_eq!(*b.ptr(), 0xAB);
            assert_eq!(*b.ptr().add(size - 1), 0xCD);
            huge::free(b).expect("a live block");
        }
    }
    settle();
    let after = superslab::stats();
    assert_eq!(after.huge_in_use, before.huge_in_use);
    assert_eq!(after.mapped_bytes, before.mapped_bytes);
}

#[test]
fn impossible_huge_requests_fail_cleanly() {
    let _g = serial();
    assert!(huge::alloc(usize::MAX - 100, 16).is_err());
    assert!(huge::alloc(1 << 62, 16).is_err());
    assert!(huge::alloc(16, 1 << 62).is_err());
    // And the layer still works afterwards.
    let g = huge::alloc(4 << 20, 4096).unwrap();
    // SAFETY: handed out just now.
    unsafe { huge::free(g.block) }.expect("a live block");
}

#[derive(Clone, Debug)]
enum Op {
    /// A run of n slabs (n = 0: one slab for small blocks).
    Take(usize),
    Give(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![Just(0usize), Just(1usize), 1..=MAX_RUN_SLABS].prop_map(Op::Take),
        2 => any::<usize>().prop_map(Op::Give),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A model (address -> run length) beside the real layer: runs never
    /// overlap, lookups agree with the model, counters match, contents stay.
    #[test]
    fn runs_match_a_model(ops in proptest::collection::vec(op(), 1..120)) {
        let _g = serial();
        let before = superslab::stats();
        let mut model: BTreeMap<usize, (SlabRef, usize, u8)> = BTreeMap::new();
        let mut tag = 0u8;
        for o in ops {
            match o {
                Op::Take(k) => {
                    let (g, n) = if k == 0 {
                        (superslab::alloc_slab().unwrap(), 1)
                    } else {
                        (superslab::alloc_run(k).unwrap(), k)
                    };
                    let a = g.slab.base() as usize;
                    let end = a + n * SLAB_SIZE;
                    if let Some((&pa, &(_, pn, _))) = model.range(..end).next_back() {
                        prop_assert!(pa + pn.max(1) * SLAB_SIZE <= a, "overlap");
                    }
                    prop_assert_eq!(a / CHUNK_SIZE, (end - 1) / CHUNK_SIZE, "run crosses a region");
                    tag = tag.wrapping_add(1);
                    // SAFETY: ours.
                    unsafe { *(a as *mut u8) = tag; *((end - 1) as *mut u8) = tag; }
                    model.insert(a, (g.slab, if k == 0 { 0 } else { n }, tag));
                }
                Op::Give(i) => {
                    if model.is_empty() { continue; }
                    let k = *model.keys().nth(i % model.len()).unwrap();
                    let (s, n, t) = model.remove(&k).unwrap();
                    let n = n.max(1);
                    // SAFETY: written at Take.
                    unsafe {
                        prop_assert_eq!(*(k as *const u8), t);
                        prop_assert_eq!(*((k + n * SLAB_SIZE - 1) as *const u8), t);
                        superslab::free_run(s);
                    }
                }
            }
            for (&a, &(s, n, _)) in &model {
                let expect = if n == 0 { Lookup::Slab(s) } else { Lookup::Run(s) };
                prop_assert_eq!(lookup(a as *const u8), expect);
            }
        }
        let mid = superslab::stats();
        let singles = model.values().filter(|v| v.1 == 0).count();
        prop_assert_eq!(mid.slabs_in_use, before.slabs_in_use + singles);
        prop_assert_eq!(mid.runs_in_use, before.runs_in_use + model.len() - singles);
        for (_, (s, _, _)) in model {
            // SAFETY: still held.
            unsafe { superslab::free_run(s) };
        }
        settle();
        prop_assert_eq!(superslab::stats().regions_live, before.regions_live);
    }
}
