//! The fast cache in front of whichever backend the features select.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::thread;

use hakmem_fastcache::{
    batch_of, bound_of, cached_counts, first_batch_of, flush_thread, grown_bound_of,
    outgoing_counts,
};
use hakmem_tiny_box::{class_size, SelectedBackend, SmallBackend, NUM_CLASSES};
use proptest::prelude::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn held() -> usize {
    hakmem_tiny_box::stats().slabs_held
}

/// Slabs held once everything reachable was given back: the baseline.
fn settled_held() -> usize {
    give_back_everything();
    held()
}

fn give_back_everything() {
    flush_thread();
    SelectedBackend::trim();
    hakmem_superslab::trim();
}

#[test]
fn first_allocation_refills_one_small_batch_through_tiny_box() {
    let _g = serial();
    thread::spawn(|| {
        for class in [0, 7, 30, NUM_CLASSES - 1] {
            let p = hakmem_fastcache::alloc(class);
            assert!(!p.is_null());
            // One refill of the first (slow-start) batch: the rest of it
            // is now cached.
            let first = first_batch_of(class);
            assert!(first <= batch_of(class));
            assert_eq!(cached_counts()[class] as usize, first - 1);
            // SAFETY: a live block of this class.
            unsafe { hakmem_fastcache::free(p, class) };
            assert_eq!(cached_counts()[class] as usize, first);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn refills_double_from_the_first_batch_up_to_the_full_batch() {
    let _g = serial();
    thread::spawn(|| {
        let class = 4; // 64 B: a full batch of 64, a first batch of 8
        assert!(first_batch_of(class) < batch_of(class));
        let mut blocks = Vec::new();
        let mut want = first_batch_of(class);
        let mut sizes = Vec::new();
        for _ in 0..6 {
            // Empty the list, then one allocation refills it.
            while cached_counts()[class] > 0 {
                blocks.push(hakmem_fastcache::alloc(class));
            }
            blocks.push(hakmem_fastcache::alloc(class));
            let got = cached_counts()[class] as usize + 1;
            sizes.push(got);
            assert_eq!(got, want, "refill sizes so far: {sizes:?}");
            want = (2 * want).min(batch_of(class));
        }
        assert_eq!(*sizes.last().unwrap(), batch_of(class));
        for p in blocks {
            // SAFETY: live blocks of this class, freed once.
            unsafe { hakmem_fastcache::free(p, class) };
        }
    })
    .join()
    .unwrap();
}

#[test]
fn a_list_past_its_bound_drains_down_to_one_batch() {
    let _g = serial();
    thread::spawn(|| {
        let class = 3;
        let bound = bound_of(class);
        let blocks: Vec<*mut u8> = (0..bound + 1 + batch_of(class))
            .map(|_| hakmem_fastcache::alloc(class))
            .collect();
        flush_thread();
        assert_eq!(cached_counts()[class], 0);
        for (i, p) in blocks.into_iter().enumerate() {
            // SAFETY: live blocks of this class, freed once.
            unsafe { hakmem_fastcache::free(p, class) };
            let c = cached_counts()[class] as usize;
            assert!(
                c <= bound,
                "count {c} passed the bound {bound} after {i} frees"
            );
        }
        assert!(cached_counts()[class] as usize >= batch_of(class));
    })
    .join()
    .unwrap();
}

/// Allocates `n` blocks of `class`, then frees them all; returns the
/// blocks the list holds afterwards.
fn swing(class: usize, n: usize) -> usize {
    let blocks: Vec<*mut u8> = (0..n).map(|_| hakmem_fastcache::alloc(class)).collect();
    assert!(blocks.iter().all(|p| !p.is_null()));
    for p in blocks {
        // SAFETY: live blocks of this class, freed once.
        unsafe { hakmem_fastcache::free(p, class) };
    }
    cached_counts()[class] as usize
}

#[test]
fn a_list_that_swings_past_its_bound_grows_to_its_cap_and_trim_resets_it() {
    let _g = serial();
    thread::spawn(|| {
        let class = NUM_CLASSES - 1; // the largest class: a bound of 4 blocks
        let (bound, cap) = (bound_of(class), grown_bound_of(class));
        assert!(bound < cap, "{bound} {cap}");
        // Each swing empties the list (refills) and overflows it (frees
        // straight back): the bound doubles at the refill after each.
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(swing(class, cap + bound));
        }
        assert_eq!(held[0], bound, "grew before any overflow: {held:?}");
        assert_eq!(
            *held.last().unwrap(),
            cap,
            "never reached the cap: {held:?}"
        );
        assert!(held.iter().all(|&h| h <= cap), "past the cap: {held:?}");
        // trim: the list is emptied and starts from its first bound again.
        flush_thread();
        assert_eq!(cached_counts()[class], 0);
        assert_eq!(swing(class, cap), bound);

        // A list that swings within its bound keeps it.
        let small = 3;
        for _ in 0..8 {
            assert!(swing(small, bound_of(small) / 2) <= bound_of(small));
        }
        flush_thread();
        for _ in 0..4 {
            swing(small, bound_of(small) / 2);
        }
        assert!(swing(small, bound_of(small) + 1) <= bound_of(small));
    })
    .join()
    .unwrap();
}

#[test]
fn exiting_threads_hand_every_cached_block_back() {
    let _g = serial();
    let before = settled_held();
    for round in 0..50 {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                thread::spawn(move || {
                    // Leave blocks of many classes in the cache at exit.
                    for class in (round + t) % 5..NUM_CLASSES {
                        let ps: Vec<_> = (0..3).map(|_| hakmem_fastcache::alloc(class)).collect();
                        for p in ps {
                            // SAFETY: live blocks, freed once.
                            unsafe { hakmem_fastcache::free(p, class) };
                        }
                    }
                    assert!(cached_counts().iter().any(|&c| c > 0));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
    give_back_everything();
    assert_eq!(
        held(),
        before,
        "blocks cached by exited threads were stranded"
    );
}

/// The box backend's slabs belong to a thread; the legacy backend's to no
/// one, so every block may be reused anywhere there.
fn slabs_have_owners() -> bool {
    SelectedBackend::NAME == "box"
}

/// Passive false sharing: a block of a slab that another live thread
/// allocates from, freed here, must not be handed out here (its cache
/// line is shared with that thread's blocks). It waits on the outgoing
/// list, goes back to its owner with the batch, and the owner gets it again.
#[test]
fn a_live_threads_block_freed_here_is_not_handed_out_here() {
    let _g = serial();
    let class = 4;
    let (to_owner, from_owner) = std::sync::mpsc::channel::<usize>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let owner = thread::spawn(move || {
        let p = hakmem_fastcache::alloc(class) as usize;
        to_owner.send(p).unwrap();
        // Stay alive (and the slab's owner) until the other thread is done.
        done_rx.recv().unwrap();
    });
    let p = from_owner.recv().unwrap();
    thread::spawn(move || {
        // Set the thread up first: its very first free, with no bounds
        // yet, hands anything foreign back at once.
        let mine = hakmem_fastcache::alloc(class) as usize;
        // SAFETY: a live block of this class, handed over, freed once.
        unsafe { hakmem_fastcache::free(p as *mut u8, class) };
        let q = hakmem_fastcache::alloc(class) as usize;
        if slabs_have_owners() {
            assert_ne!(q, p, "another live thread's block was handed out here");
            assert_eq!(outgoing_counts()[class], 1);
            assert_eq!(cached_counts()[class] as usize, first_batch_of(class) - 2);
        } else {
            assert_eq!(q, p, "the legacy backend's blocks are anyone's");
        }
        for b in [mine, q] {
            // SAFETY: our own blocks, freed once.
            unsafe { hakmem_fastcache::free(b as *mut u8, class) };
        }
    })
    .join()
    .unwrap();
    done_tx.send(()).unwrap();
    owner.join().unwrap();
}

/// A block of an exited thread's slab (abandoned: no owner now) is reused
/// where it is freed: nobody else writes its neighbours.
#[test]
fn an_exited_threads_block_freed_here_is_reused_here() {
    let _g = serial();
    let class = 5;
    let p = thread::spawn(move || hakmem_fastcache::alloc(class) as usize)
        .join()
        .unwrap();
    thread::spawn(move || {
        // SAFETY: a live block of this class whose thread exited; freed once.
        unsafe { hakmem_fastcache::free(p as *mut u8, class) };
        assert_eq!(outgoing_counts()[class], 0);
        let q = hakmem_fastcache::alloc(class) as usize;
        assert_eq!(q, p, "an abandoned slab's block was not reused");
        // SAFETY: ours, freed once.
        unsafe { hakmem_fastcache::free(q as *mut u8, class) };
    })
    .join()
    .unwrap();
}

/// Foreign frees go back in batches: the outgoing list never holds more
/// than a batch, and a thread's exit hands what it holds back.
#[test]
fn foreign_frees_go_back_in_batches_and_at_exit() {
    let _g = serial();
    let before = settled_held();
    let class = 3;
    let n = 3 * batch_of(class) + 5;
    let (blocks_tx, blocks_rx) = std::sync::mpsc::channel::<Vec<usize>>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let owner = thread::spawn(move || {
        let ps: Vec<usize> = (0..n)
            .map(|_| hakmem_fastcache::alloc(class) as usize)
            .collect();
        blocks_tx.send(ps).unwrap();
        done_rx.recv().unwrap();
    });
    let ps = blocks_rx.recv().unwrap();
    thread::spawn(move || {
        for p in ps {
            // SAFETY: live blocks of this class, handed over, freed once.
            unsafe { hakmem_fastcache::free(p as *mut u8, class) };
            assert!(outgoing_counts()[class] as usize <= batch_of(class));
        }
        if slabs_have_owners() {
            assert!(outgoing_counts()[class] > 0);
        }
    })
    .join()
    .unwrap();
    done_tx.send(()).unwrap();
    owner.join().unwrap();
    give_back_everything();
    assert_eq!(held(), before, "foreign frees were stranded");
}

/// Foreign frees alternating between two owners' slabs (a list that
/// goes back through the walk grouping it by slab) and a run of one
/// slab's blocks (a list that goes back whole, unwalked): each list grows
/// by one a free up to the batch and goes back whole past it, and every
/// block reaches its slab.
#[test]
fn foreign_frees_of_one_slab_and_of_two_go_back_whole() {
    let _g = serial();
    let before = settled_held();
    let class = 3;
    let n = 4 * batch_of(class);
    let (blocks_tx, blocks_rx) = std::sync::mpsc::channel::<Vec<usize>>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let done_rx = std::sync::Arc::new(Mutex::new(done_rx));
    let owners: Vec<_> = (0..2)
        .map(|_| {
            let tx = blocks_tx.clone();
            let done = done_rx.clone();
            thread::spawn(move || {
                // Only blocks of this thread's own slabs: a block that an
                // earlier test's exited thread left (an abandoned slab's)
                // may come first, and is anyone's.
                let blocks: Vec<usize> = (0..n)
                    .map(|_| hakmem_fastcache::alloc(class) as usize)
                    .collect();
                // (The thread's token exists once it has refilled.)
                let me = SelectedBackend::owner_token();
                let (ps, others): (Vec<usize>, Vec<usize>) = blocks
                    .into_iter()
                    // SAFETY: live blocks of the backend.
                    .partition(|&p| unsafe { SelectedBackend::owner_of(p as *const u8) } == me);
                for p in others {
                    // SAFETY: ours, freed once.
                    unsafe { hakmem_fastcache::free(p as *mut u8, class) };
                }
                tx.send(ps).unwrap();
                // Stay alive (the slabs' owner) until the freer is done.
                let _ = done.lock().unwrap().recv();
            })
        })
        .collect();
    let a = blocks_rx.recv().unwrap();
    let b = blocks_rx.recv().unwrap();
    thread::spawn(move || {
        // Set the thread up first (its very first free has no bounds yet).
        let mine = hakmem_fastcache::alloc(class);
        let slab = |p: usize| p >> hakmem_superslab::SLAB_SHIFT;
        let sa: std::collections::BTreeSet<_> = a.iter().map(|&p| slab(p)).collect();
        let sb: std::collections::BTreeSet<_> = b.iter().map(|&p| slab(p)).collect();
        if slabs_have_owners() {
            assert!(sa.is_disjoint(&sb), "two live threads' blocks share a slab");
        }
        assert!(!slabs_have_owners() || a.len().min(b.len()) > 2 * batch_of(class));
        let (a_head, a_rest) = a.split_at(batch_of(class).min(a.len()));
        for (&p, &q) in a_head.iter().zip(&b) {
            for x in [p, q] {
                // SAFETY: live blocks of this class, handed over, freed once.
                unsafe { hakmem_fastcache::free(x as *mut u8, class) };
                assert!(outgoing_counts()[class] as usize <= batch_of(class));
            }
        }
        let mut longest = 0;
        let (mut last, mut before) = (usize::MAX, outgoing_counts()[class] as usize);
        for &p in a_rest {
            // SAFETY: as above.
            unsafe { hakmem_fastcache::free(p as *mut u8, class) };
            let count = outgoing_counts()[class] as usize;
            assert!(count <= batch_of(class));
            if slabs_have_owners() && slab(p) == last {
                // Longer by one, or sent back whole past the batch.
                let expected = if before == batch_of(class) {
                    0
                } else {
                    before + 1
                };
                assert_eq!(count, expected, "the outgoing list went back early");
            }
            longest = longest.max(count);
            (last, before) = (slab(p), count);
        }
        if slabs_have_owners() {
            assert!(longest > 1);
        }
        for &q in &b[a_head.len().min(b.len())..] {
            // SAFETY: as above.
            unsafe { hakmem_fastcache::free(q as *mut u8, class) };
        }
        // SAFETY: our own block, freed once.
        unsafe { hakmem_fastcache::free(mine, class) };
    })
    .join()
    .unwrap();
    for _ in 0..2 {
        done_tx.send(()).unwrap();
    }
    for o in owners {
        o.join().unwrap();
    }
    give_back_everything();
    assert_eq!(held(), before, "foreign frees were stranded");
}

#[derive(Clone, Debug)]
enum Op {
    Alloc(usize),
    Free(usize),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop_oneof![0..8usize, 0..NUM_CLASSES].prop_map(Op::Alloc),
        5 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Blocks from the cache never overlap, keep their contents, and all
    /// come back; lists never pass their (grown) bounds.
    #[test]
    fn cache_matches_a_model(ops in proptest::collection::vec(op(), 1..500)) {
        let _g = serial();
        let before = settled_held();
        let mut live: BTreeMap<usize, (usize, u8)> = BTreeMap::new();
        let mut tag = 0u8;
        for o in ops {
            match o {
                Op::Alloc(c) => {
                    let p = hakmem_fastcache::alloc(c);
                    prop_assert!(!p.is_null());
                    let a = p as usize;
                    let size = class_size(c);
                    if let Some((&b, &(bc, _))) = live.range(..a + size).next_back() {
                        prop_assert!(b + class_size(bc) <= a, "overlap");
                    }
                    tag = tag.wrapping_add(1);
                    // SAFETY: the block is ours, class_size bytes.
                    unsafe { std::ptr::write_bytes(p, tag, size) };
                    live.insert(a, (c, tag));
                }
                Op::Free(i) => {
                    if live.is_empty() { continue; }
                    let a = *live.keys().nth(i % live.len()).unwrap();
                    let (c, t) = live.remove(&a).unwrap();
                    // SAFETY: written at Alloc.
                    let bytes = unsafe { std::slice::from_raw_parts(a as *const u8, class_size(c)) };
                    prop_assert!(bytes.iter().all(|&b| b == t), "contents changed");
                    // SAFETY: live, freed once.
                    unsafe { hakmem_fastcache::free(a as *mut u8, c) };
                }
                Op::Flush => flush_thread(),
            }
            // A list's bound starts at `bound_of` and may grow (a list
            // that overflows and runs empty between refills), never past
            // `grown_bound_of`.
            for (c, &n) in cached_counts().iter().enumerate() {
                prop_assert!(n as usize <= grown_bound_of(c));
            }
        }
        for (a, (c, _)) in live {
            // SAFETY: live, freed once.
            unsafe { hakmem_fastcache::free(a as *mut u8, c) };
        }
        give_back_everything();
        prop_assert_eq!(held(), before);
    }
}

fn delta(
    before: &[hakmem_fastcache::ClassStats],
    after: &[hakmem_fastcache::ClassStats],
    class: usize,
) -> [u64; 7] {
    let (a, b) = (before[class].as_array(), after[class].as_array());
    core::array::from_fn(|i| b[i] - a[i])
}

#[test]
fn fast_stats_count_a_known_workload_including_exited_threads() {
    let _g = serial();
    let class = 4; // 64 B
    let batch = batch_of(class);
    let bound = bound_of(class);
    assert_eq!(bound, 2 * batch);
    let n = 3 * batch;
    // The model: refills from the first batch, doubling up to `batch`,
    // until n blocks were handed out; then n frees, each into a full list
    // (at the bound) going straight back to its slab, counted as a drain
    // of one block; what is left is flushed when the thread exits.
    let (mut misses, mut refilled, mut want) = (0, 0, first_batch_of(class));
    while refilled < n {
        misses += 1;
        refilled += want;
        want = (2 * want).min(batch);
    }
    assert_eq!(want, batch, "the model assumes the ramp is over");
    let (mut cached, mut drains, mut drained) = (refilled - n, 0, 0);
    for _ in 0..n {
        if cached >= bound {
            drains += 1;
            drained += 1;
        } else {
            cached += 1;
        }
    }
    let before = hakmem_fastcache::class_stats();
    thread::spawn(move || {
        let blocks: Vec<*mut u8> = (0..3 * batch)
            .map(|_| hakmem_fastcache::alloc(class))
            .collect();
        for p in blocks {
            // SAFETY: live blocks of this class, freed once.
            unsafe { hakmem_fastcache::free(p, class) };
        }
    })
    .join()
    .unwrap();
    let after = hakmem_fastcache::class_stats();
    let n = n as u64;
    let (misses, refilled) = (misses as u64, refilled as u64);
    let (drains, drained) = (drains as u64, drained as u64);
    assert_eq!(
        delta(&before, &after, class),
        [
            n - misses,
            misses,
            misses,
            refilled,
            drains,
            drained,
            refilled - drained
        ],
        "[hits, misses, refills, refill_blocks, drains, drain_blocks, exit_flushed]"
    );
}
