//! Multi-threaded scenarios: cross-thread frees, thread churn, abandoned
//! slabs adopted, full slabs hearing of remote frees.

mod common;

use std::sync::mpsc;
use std::thread;

use common::{fill, serial, verify};
use hakmem_superslab::SLAB_SIZE;
use hakmem_tiny_box::{class_size, BoxBackend, LegacyBackend, SmallBackend, NUM_CLASSES};

/// A block address that can cross threads in a test.
#[derive(Clone, Copy)]
struct Blk(usize, usize, u64);

fn alloc_blk<B: SmallBackend>(class: usize, tag: u64) -> Blk {
    let p = B::alloc(class);
    assert!(!p.is_null());
    fill(p, class, tag);
    Blk(p as usize, class, tag)
}

fn free_blk<B: SmallBackend>(b: Blk) {
    verify(b.0 as *mut u8, b.1, b.2);
    // SAFETY: a live block of backend B, given up once.
    unsafe { B::free(b.0 as *mut u8) };
}

fn producer_consumer<B: SmallBackend>() {
    let _g = serial();
    let held = common::settled_held::<B>();
    let (tx, rx) = mpsc::sync_channel::<Vec<Blk>>(8);
    let producer = thread::spawn(move || {
        let mut tag = 0;
        for round in 0..200 {
            let batch: Vec<Blk> = (0..64)
                .map(|i| {
                    tag += 1;
                    alloc_blk::<B>((round + i) % 24, tag)
                })
                .collect();
            tx.send(batch).unwrap();
        }
    });
    let consumer = thread::spawn(move || {
        let mut n = 0;
        for batch in rx {
            for b in batch {
                free_blk::<B>(b);
                n += 1;
            }
        }
        n
    });
    producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), 200 * 64);
    common::assert_all_returned::<B>(held);
}

#[test]
fn box_cross_thread_frees_all_come_back() {
    producer_consumer::<BoxBackend>();
}

#[test]
fn legacy_cross_thread_frees_all_come_back() {
    producer_consumer::<LegacyBackend>();
}

fn thread_churn<B: SmallBackend>(threads: usize) {
    let _g = serial();
    common::settled_held::<B>();
    let before = hakmem_tiny_box::stats();
    // Each thread frees what the previous one handed it (remote frees into
    // slabs of an exited thread), allocates a new set, frees half of it
    // itself, and hands the rest on.
    let mut handed: Vec<Blk> = Vec::new();
    for t in 0..threads {
        let incoming = std::mem::take(&mut handed);
        handed = thread::spawn(move || {
            for b in incoming {
                free_blk::<B>(b);
            }
            let mut mine: Vec<Blk> = (0..40)
                .map(|i| alloc_blk::<B>((t * 7 + i * 3) % NUM_CLASSES, (t * 100 + i) as u64))
                .collect();
            let keep = mine.split_off(20);
            for b in mine {
                free_blk::<B>(b);
            }
            keep
        })
        .join()
        .unwrap();
    }
    for b in handed {
        free_blk::<B>(b);
    }
    let after = hakmem_tiny_box::stats();
    assert!(
        after.heaps_created <= before.heaps_created + 2,
        "exited threads' heaps must be reused ({} new)",
        after.heaps_created - before.heaps_created
    );
    common::assert_all_returned::<B>(before.slabs_held);
}

#[test]
fn box_thread_churn_loses_nothing() {
    thread_churn::<BoxBackend>(2000);
}

#[test]
fn legacy_thread_churn_loses_nothing() {
    thread_churn::<LegacyBackend>(500);
}

#[test]
fn remote_free_to_abandoned_slab_is_kept() {
    let _g = serial();
    let class = 6; // 96 B
    let per_slab = SLAB_SIZE / class_size(class);
    let before = hakmem_tiny_box::stats();
    // A thread fills two slabs and exits: they are abandoned, blocks out.
    let blocks = thread::spawn(move || {
        (0..2 * per_slab)
            .map(|i| alloc_blk::<BoxBackend>(class, i as u64))
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    let mid = hakmem_tiny_box::stats();
    assert!(mid.slabs_abandoned >= before.slabs_abandoned + 2);
    // Another thread frees every block of the abandoned slabs (remote frees
    // into slabs with no owner), then exits.
    thread::spawn(move || blocks.into_iter().for_each(free_blk::<BoxBackend>))
        .join()
        .unwrap();
    let held_now = hakmem_tiny_box::stats().slabs_held;
    // A third thread allocates the same amount: it adopts those slabs and
    // finds every block there, so no new slab is needed.
    let reused = thread::spawn(move || {
        let blocks: Vec<Blk> = (0..2 * per_slab)
            .map(|i| alloc_blk::<BoxBackend>(class, i as u64))
            .collect();
        let held_during = hakmem_tiny_box::stats().slabs_held;
        blocks.into_iter().for_each(free_blk::<BoxBackend>);
        held_during
    })
    .join()
    .unwrap();
    let after = hakmem_tiny_box::stats();
    assert!(
        after.slabs_adopted >= mid.slabs_adopted + 2,
        "abandoned slabs adopted"
    );
    assert!(
        reused <= held_now,
        "remotely freed blocks of abandoned slabs were reused"
    );
    common::assert_all_returned::<BoxBackend>(before.slabs_held);
}

#[test]
fn full_slab_learns_of_remote_frees() {
    let _g = serial();
    common::settled_held::<BoxBackend>();
    let before = hakmem_tiny_box::stats();
    let class = 10; // 160 B
    let n = 4 * (SLAB_SIZE / class_size(class));
    let (to_owner, from_freer) = mpsc::channel::<()>();
    let (to_freer, blocks_rx) = mpsc::channel::<Vec<Blk>>();
    let owner = thread::spawn(move || {
        // Fill four slabs completely: they move to the full list, armed.
        let first: Vec<Blk> = (0..n)
            .map(|i| alloc_blk::<BoxBackend>(class, i as u64))
            .collect();
        let held_full = hakmem_tiny_box::stats().slabs_held;
        to_freer.send(first).unwrap();
        from_freer.recv().unwrap();
        // Every block came back remotely: allocating as many again must
        // reuse them (the slabs arrive on the pending stack), not take more.
        let second: Vec<Blk> = (0..n)
            .map(|i| alloc_blk::<BoxBackend>(class, i as u64))
            .collect();
        let held_again = hakmem_tiny_box::stats().slabs_held;
        second.into_iter().for_each(free_blk::<BoxBackend>);
        (held_full, held_again)
    });
    let freer = thread::spawn(move || {
        let blocks = blocks_rx.recv().unwrap();
        blocks.into_iter().for_each(free_blk::<BoxBackend>);
        to_owner.send(()).unwrap();
    });
    freer.join().unwrap();
    let (held_full, held_again) = owner.join().unwrap();
    assert!(
        held_again <= held_full,
        "{held_again} slabs held vs {held_full}"
    );
    common::assert_all_returned::<BoxBackend>(before.slabs_held);
}

fn all_classes_at_once<B: SmallBackend>() {
    let _g = serial();
    let held = common::settled_held::<B>();
    let threads = 4;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel::<Vec<Blk>>()).unzip();
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let txs = txs.clone();
            thread::spawn(move || {
                for round in 0..20 {
                    let blocks: Vec<Blk> = (0..NUM_CLASSES)
                        .map(|c| alloc_blk::<B>(c, (t * 1_000_000 + round * 1000 + c) as u64))
                        .collect();
                    // Send to the next thread, which frees them remotely.
                    txs[(t + 1) % threads].send(blocks).unwrap();
                    while let Ok(theirs) = rx.try_recv() {
                        theirs.into_iter().for_each(free_blk::<B>);
                    }
                }
                drop(txs);
                rx
            })
        })
        .collect();
    drop(txs);
    let rxs: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for rx in rxs {
        for theirs in rx.try_iter() {
            theirs.into_iter().for_each(free_blk::<B>);
        }
    }
    common::assert_all_returned::<B>(held);
}

#[test]
fn box_all_classes_at_once_across_threads() {
    all_classes_at_once::<BoxBackend>();
}

#[test]
fn legacy_all_classes_at_once_across_threads() {
    all_classes_at_once::<LegacyBackend>();
}

#[test]
fn remote_frees_are_counted_even_from_threads_without_a_heap() {
    let _g = serial();
    let before = hakmem_tiny_box::stats().remote_frees;
    let blocks = thread::spawn(|| {
        (0..100)
            .map(|i| alloc_blk::<BoxBackend>(3, i))
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    // This thread never allocates: every free is remote, into abandoned
    // slabs, and its count is merged when it exits.
    thread::spawn(move || blocks.into_iter().for_each(free_blk::<BoxBackend>))
        .join()
        .unwrap();
    assert_eq!(hakmem_tiny_box::stats().remote_frees - before, 100);
    common::settled_held::<BoxBackend>();
}

#[test]
fn slab_counts_by_class_follow_a_known_workload() {
    let _g = serial();
    let class = hakmem_tiny_box::NUM_CLASSES - 1; // the largest class
    let per_slab = SLAB_SIZE / class_size(class); // 16 KiB: four
    let before = common::settled_held::<LegacyBackend>();
    let by_class = hakmem_tiny_box::stats().slabs_by_class[class];
    let blocks: Vec<Blk> = (0..10 * per_slab)
        .map(|i| alloc_blk::<LegacyBackend>(class, i as u64))
        .collect();
    let s = hakmem_tiny_box::stats();
    assert_eq!(s.slabs_by_class[class] - by_class, 10);
    assert_eq!(s.slabs_held - before, 10);
    blocks.into_iter().for_each(free_blk::<LegacyBackend>);
    common::assert_all_returned::<LegacyBackend>(before);
    assert_eq!(hakmem_tiny_box::stats().slabs_by_class[class], by_class);
}
