//! superslab alone: one slab handed out and given back
//! (`alloc_run(1)` / `free_run`), the cost the layers above pay per slab.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use hakmem_superslab::{alloc_run, free_run};

fn slab_get_put(c: &mut Criterion) {
    // Keep one slab out so that the region stays mapped between
    // iterations: the measurement is the pool's bookkeeping, not mmap.
    let keep = alloc_run(1).expect("the OS gives a region");
    c.bench_function("superslab/alloc_run(1)+free_run", |b| {
        b.iter(|| {
            let g = alloc_run(black_box(1)).expect("the OS gives a region");
            // SAFETY: the slab was just handed out and nothing uses it.
            unsafe { free_run(black_box(g.slab)) };
        })
    });
    // SAFETY: handed out above, unused.
    unsafe { free_run(keep.slab) };
}

criterion_group!(benches, slab_get_put);
criterion_main!(benches);
