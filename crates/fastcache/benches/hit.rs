//! fastcache alone: the hit path, one block popped (`alloc(class)`) and
//! pushed back (`free(p, class)`) on a warm per-thread list.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hakmem_fastcache::{alloc, free};
use hakmem_tiny_box::size_to_class;

fn pop_push(c: &mut Criterion) {
    hakmem_fastcache::init();
    let mut g = c.benchmark_group("fastcache/alloc+free (hit)");
    for size in [16, 32, 80, 128, 1024] {
        let class = size_to_class(size);
        // Warm the list: the first alloc refills it from tiny-box.
        let p = alloc(class);
        assert!(!p.is_null(), "out of memory");
        // SAFETY: a block of `class` from this layer, given back.
        unsafe { free(p, class) };
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{size}B")),
            &class,
            |b, &class| {
                b.iter(|| {
                    let p = alloc(black_box(class));
                    // SAFETY: a block of `class` just taken from this layer.
                    unsafe { free(black_box(p), class) };
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, pop_push);
criterion_main!(benches);
