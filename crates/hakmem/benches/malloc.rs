//! The facade: a malloc/free pair of hakmem (its C-shaped API and its
//! `GlobalAlloc`) against the system allocator and mimalloc, for a few
//! small sizes and one large one. hakmem is built with whatever toggles
//! the bench was compiled with (default: box-refactor + fast-path).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hakmem::HakMem;
use mimalloc::MiMalloc;

const SIZES: [usize; 4] = [16, 128, 1024, 64 << 10];

fn pair<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: a non-zero-size layout.
    let p = unsafe { a.alloc(black_box(layout)) };
    assert!(!p.is_null(), "out of memory");
    // SAFETY: the block has at least one byte; it is freed with its layout.
    unsafe {
        p.write_volatile(1);
        a.dealloc(black_box(p), layout);
    }
}

fn malloc_free(c: &mut Criterion) {
    hakmem::init();
    let mut g = c.benchmark_group("malloc+free");
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).expect("a valid layout");
        let id = |name: &str| BenchmarkId::new(name, format!("{size}B"));
        g.bench_function(id(hakmem::BUILD_NAME), |b| {
            b.iter(|| {
                let p = hakmem::malloc(black_box(size));
                assert!(!p.is_null(), "out of memory");
                // SAFETY: a live hakmem block, written once and freed.
                unsafe {
                    p.write_volatile(1);
                    hakmem::free(black_box(p));
                }
            })
        });
        g.bench_function(id(&format!("{} (GlobalAlloc)", hakmem::BUILD_NAME)), |b| {
            b.iter(|| pair(&HakMem, layout))
        });
        g.bench_function(id("system"), |b| b.iter(|| pair(&System, layout)));
        g.bench_function(id("mimalloc"), |b| b.iter(|| pair(&MiMalloc, layout)));
    }
    g.finish();
}

criterion_group!(benches, malloc_free);
criterion_main!(benches);
