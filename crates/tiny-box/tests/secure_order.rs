//! Hardened builds (`--features secure`): a fresh slab hands its blocks out
//! in a random order, different from slab to slab.
#![cfg(feature = "secure")]

use hakmem_superslab::SLAB_SIZE;
use hakmem_tiny_box::{class_size, BoxBackend, SmallBackend};

fn one_slab_in_order(class: usize) -> Vec<usize> {
    let per_slab = SLAB_SIZE / class_size(class);
    std::thread::spawn(move || {
        let blocks: Vec<usize> = (0..per_slab)
            .map(|_| BoxBackend::alloc(class) as usize)
            .collect();
        for &p in &blocks {
            // SAFETY: live blocks of this backend, freed once.
            unsafe { BoxBackend::free(p as *mut u8) };
        }
        blocks
    })
    .join()
    .unwrap()
}

#[test]
fn fresh_blocks_come_out_in_a_random_order() {
    let class = 4; // 64 B: 1024 blocks a slab
    let a = one_slab_in_order(class);
    let b = one_slab_in_order(class);
    for order in [&a, &b] {
        let base = order.iter().min().unwrap();
        let mut offsets: Vec<usize> = order
            .iter()
            .map(|p| (p - base) / class_size(class))
            .collect();
        let ascending = order.windows(2).filter(|w| w[1] > w[0]).count();
        assert!(
            ascending < order.len() - 10,
            "blocks came out in address order"
        );
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), order.len(), "a block was handed out twice");
    }
    let pattern = |o: &Vec<usize>| -> Vec<isize> {
        o.windows(2)
            .map(|w| w[1] as isize - w[0] as isize)
            .collect()
    };
    assert_ne!(pattern(&a), pattern(&b), "two slabs used the same order");
}

/// Fresh blocks come out a window of about 8 KiB at a time: each run of a
/// window's worth of blocks a fresh slab hands out fills one stretch of
/// that many consecutive blocks (from a random place in the slab, wrapping
/// around at its end), so a slab that is only begun touches only those
/// pages. Shuffling over the whole slab touched all 16 pages at once and
/// doubled the hardened build's RSS on Larson.
#[test]
fn fresh_blocks_fill_a_slab_a_few_pages_at_a_time() {
    let class = 4; // 64 B: 1024 blocks a slab, windows of 128
    let size = class_size(class);
    let capacity = SLAB_SIZE / size;
    let window = 8192 / size;
    let order = one_slab_in_order(class);
    let base = order.iter().min().unwrap();
    let positions: Vec<usize> = order.iter().map(|p| (p - base) / size).collect();
    for (k, run) in positions.chunks(window).enumerate() {
        let fills_one_stretch = run.iter().any(|&anchor| {
            run.iter()
                .all(|&q| (q + capacity - anchor) % capacity < window)
        });
        assert!(
            fills_one_stretch,
            "run {k} of {window} fresh blocks is scattered over the slab: {run:?}"
        );
    }
    let first = positions[..window].iter().min().unwrap();
    let starts_elsewhere = (0..8).any(|_| {
        let other = one_slab_in_order(class);
        let other_base = other.iter().min().unwrap();
        other[..window]
            .iter()
            .map(|p| (p - other_base) / size)
            .min()
            .unwrap()
            != *first
    });
    assert!(starts_elsewhere, "every slab starts at the same place");
}
