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
